"""/authorize through the TestClient: every refusal rule, sign-in with the card, silent SSO, max_age, step-up."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from authsvc.clients import service as clients
from authsvc.database import unit_of_work
from authsvc.login import pending
from authsvc.oauth import codes, par
from authsvc.runtime import Runtime
from authsvc.sessions.models import SsoSession
from authsvc.tokens.assurance import HIGH, SUBSTANTIAL
from authsvc.tokens.issuing import Authentication
from tests.fixtures.oidc import RegisteredClient, register_client
from tests.fixtures.service import issue
from tests.integration.sso import ISSUER, authorize, login_id_of, query_of, request_for, sign_with_card

REDIRECT = "http://127.0.0.1:9/cb"


@pytest.fixture
def portal(runtime: Runtime) -> RegisteredClient:
    return register_client(runtime, name="社保查询 Benefits", redirect_uris=[REDIRECT])


@pytest.fixture
def helper(client: TestClient) -> TestClient:
    """`sscard helper`'s side: no browser cookies."""
    return TestClient(client.app)


def _page(response, status: int = 400) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "location" not in response.headers
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    return response.text


def _error(response, error: str, state: str | None) -> dict[str, str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 303, response.text
    assert response.headers["location"].startswith(REDIRECT + "?")
    query = query_of(response.headers["location"])
    assert query["error"] == error and query["iss"] == ISSUER and query.get("state") == state
    assert "code" not in query
    return query


def _sign_in(client: TestClient, helper: TestClient, request, card_path: Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    login_id = login_id_of(authorize(client, request))
    assert sign_with_card(helper, login_id, card_path).status_code == 200
    done = client.get(f"/login/{login_id}/continue", follow_redirects=False)
    assert done.status_code == 303, done.text
    return query_of(done.headers["location"])


# -- before the redirect URI is trusted: an error page, never a redirect ------------------------------------


def test_unknown_client_gets_an_error_page(client: TestClient, portal: RegisteredClient) -> None:
    assert "invalid_client" in _page(authorize(client, request_for(portal, client_id="nobody-such-client")))
    assert "invalid_request" in _page(authorize(client, request_for(portal, client_id=None)))


def test_disabled_client_gets_an_error_page(client: TestClient, runtime: Runtime, portal: RegisteredClient) -> None:
    with unit_of_work(runtime.sessions) as db:
        clients.set_status(db, portal.client_id, "disabled", actor="test")
    assert "invalid_client" in _page(authorize(client, request_for(portal)))


@pytest.mark.parametrize("uri", [None, "http://127.0.0.1:9/cb/", "http://127.0.0.1:9/CB", "https://evil.example/cb"])
def test_an_unregistered_redirect_uri_gets_an_error_page(
    client: TestClient, portal: RegisteredClient, uri: str | None
) -> None:
    _page(authorize(client, request_for(portal, redirect_uri=uri)))


def test_a_repeated_redirect_uri_gets_an_error_page(client: TestClient, portal: RegisteredClient) -> None:
    params = [*request_for(portal).params.items(), ("redirect_uri", "https://evil.example/cb")]
    _page(client.get("/authorize", params=params, follow_redirects=False))


# -- after: errors go back to the portal with state and iss --------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "too-short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "invalid_request"),
        ({"response_mode": "fragment"}, "invalid_request"),
        ({"scope": "openid ssn"}, "invalid_scope"),
        ({"scope": None}, "invalid_scope"),
        ({"acr_values": HIGH}, "invalid_request"),
        ({"prompt": "consent"}, "invalid_request"),
        ({"prompt": "none login"}, "invalid_request"),
        ({"max_age": "-1"}, "invalid_request"),
        ({"dpop_jkt": "not-a-thumbprint"}, "invalid_request"),
        ({"request": "eyJhbGciOiJub25lIn0.e30."}, "request_not_supported"),
        ({"prompt": "none"}, "login_required"),
    ],
)
def test_refusals_are_redirected_with_state_and_iss(
    client: TestClient, runtime: Runtime, portal: RegisteredClient, overrides: dict[str, str | None], error: str
) -> None:
    request = request_for(portal, **overrides)
    _error(authorize(client, request), error, request.params["state"])
    assert client.cookies.get(pending.BROWSER_COOKIE) is None  # no pending login was made


def test_a_fapi_client_must_push_its_request(client: TestClient, runtime: Runtime) -> None:
    fapi = register_client(runtime, redirect_uris=[REDIRECT], fapi=True)
    request = request_for(fapi)
    _error(authorize(client, request), "invalid_request", request.params["state"])
    with unit_of_work(runtime.sessions) as db:
        registered = clients.get(db, fapi.client_id)
        assert registered is not None
        pushed = {k: v for k, v in request.params.items() if k != "client_id"}
        request_uri = par.push(runtime.store, registered, pushed, ttl=60, dpop_jkt=None)
    by_reference = {"client_id": fapi.client_id, "request_uri": request_uri}
    assert authorize(client, by_reference).headers["location"].startswith("/login/")
    assert "invalid_request_uri" in _page(authorize(client, by_reference))  # single use
    unknown = {"client_id": fapi.client_id, "request_uri": "urn:ietf:params:oauth:request_uri:expired-or-never"}
    assert "invalid_request_uri" in _page(authorize(client, unknown))


def test_pushed_parameters_replace_the_query(client: TestClient, runtime: Runtime, portal: RegisteredClient) -> None:
    request = request_for(portal)
    with unit_of_work(runtime.sessions) as db:
        registered = clients.get(db, portal.client_id)
        assert registered is not None
        pushed = {k: v for k, v in request.params.items() if k != "client_id"}
        request_uri = par.push(runtime.store, registered, pushed, ttl=60, dpop_jkt=None)
    # A query redirect_uri that is not registered is ignored: only the pushed one counts.
    response = authorize(
        client, {"client_id": portal.client_id, "request_uri": request_uri, "redirect_uri": "https://evil.example/"}
    )
    login = pending.get(runtime.store, login_id_of(response))
    assert login is not None and login.request.redirect_uri == REDIRECT
    assert login.request.state == request.params["state"]


# -- signing in, and signing in again -----------------------------------------------------------------------


def test_a_browser_without_a_session_goes_to_the_login_page(
    client: TestClient, runtime: Runtime, portal: RegisteredClient
) -> None:
    login_id = login_id_of(authorize(client, request_for(portal, ui_locales="en-GB zh-CN")))
    page = client.get(f"/login/{login_id}")
    html = _page(page, 200)
    assert '<html lang="en">' in html and "社保查询 Benefits" in html and 'aria-live="polite"' in html
    assert "http://127.0.0.1:24727" in page.headers["content-security-policy"]
    assert '<html lang="zh-CN">' in client.get(f"/login/{login_id}?lang=zh-CN").text
    assert client.get(f"/login/{login_id}/status").json() == {
        "status": "pending",
        "reached": None,
        "missing": ["card"],  # substantial; the e-card would need a face check, which this deployment lacks
    }
    stranger = TestClient(client.app)  # another browser, without the login cookie
    assert stranger.get(f"/login/{login_id}/status").status_code == 404
    assert stranger.get(f"/login/{login_id}").status_code == 404


def test_card_sign_in_then_silent_sso_into_a_second_portal(
    client: TestClient, helper: TestClient, runtime: Runtime, portal: RegisteredClient, tmp_path: Path
) -> None:
    card = issue(runtime, tmp_path, generation=3)
    request = request_for(portal)
    answer = _sign_in(client, helper, request, card.path)
    assert answer["state"] == request.params["state"] and answer["iss"] == ISSUER
    first = codes.redeem(runtime.store, answer["code"])
    assert first is not None and first.client_id == portal.client_id and first.nonce == request.params["nonce"]
    assert first.acr == SUBSTANTIAL and first.amr == ["sc", "hwk", "pin", "mfa"]

    other = register_client(runtime, name="医保 Health", redirect_uris=["http://127.0.0.1:9/other"])
    silent = authorize(client, request_for(other, prompt="none"))
    assert silent.status_code == 303 and silent.headers["location"].startswith("http://127.0.0.1:9/other?")
    second = codes.redeem(runtime.store, query_of(silent.headers["location"])["code"])
    assert second is not None and (second.sid, second.subject) == (first.sid, first.subject)
    with unit_of_work(runtime.sessions) as db:
        session = db.scalars(select(SsoSession)).one()
        assert [c.client_id for c in session.clients] == [portal.client_id, other.client_id]
        assert session.cookie_digest not in client.cookies.get("sscard_session", "")


def test_prompt_login_and_max_age_ask_again(
    client: TestClient, helper: TestClient, runtime: Runtime, portal: RegisteredClient, tmp_path: Path
) -> None:
    card = issue(runtime, tmp_path, generation=2)
    _sign_in(client, helper, request_for(portal), card.path)
    with unit_of_work(runtime.sessions) as db:
        session = db.scalars(select(SsoSession)).one()
        session.auth_time -= timedelta(seconds=100)
    assert authorize(client, request_for(portal, prompt="login")).headers["location"].startswith("/login/")
    assert authorize(client, request_for(portal, max_age="10")).headers["location"].startswith("/login/")
    assert authorize(client, request_for(portal, max_age="1000")).headers["location"].startswith(REDIRECT)
    _error(authorize(client, request_for(portal, max_age="10", prompt="none", state="s")), "login_required", "s")


def test_step_up_asks_only_the_missing_factor_of_the_same_person(
    client: TestClient, helper: TestClient, runtime: Runtime, tmp_path: Path
) -> None:
    portal = register_client(runtime, redirect_uris=[REDIRECT], acr_values=[SUBSTANTIAL, HIGH])
    mine, someone_else = issue(runtime, tmp_path, generation=3), issue(runtime, tmp_path, generation=2)
    first = codes.redeem(runtime.store, _sign_in(client, helper, request_for(portal), mine.path)["code"])
    assert first is not None and first.acr == SUBSTANTIAL

    login_id = login_id_of(authorize(client, request_for(portal, acr_values=HIGH)))
    login = pending.get(runtime.store, login_id)
    assert login is not None and login.request.step_up and login.request.subject == first.subject
    assert 'id="method-card" hidden' in client.get(f"/login/{login_id}").text  # the card has nothing to add
    assert pending.status(runtime.store, login)["missing"] == ["face"]
    wrong = sign_with_card(helper, login_id, someone_else.path)
    assert (wrong.status_code, wrong.json()["reason"]) == (422, "subject_mismatch")
    same = sign_with_card(helper, login_id, mine.path)  # accepted, but it adds nothing: still short of the level
    assert same.status_code == 200 and same.json()["status"] == "partial" and same.json()["acr"] == SUBSTANTIAL
    status = client.get(f"/login/{login_id}/status").json()
    assert status["status"] == "pending" and status["reached"] == SUBSTANTIAL

    # The face check (authsvc/login/face.py, on the vendor's verdict) completes the same login through the same call.
    with pytest.raises(pending.CompletionRefused):
        pending.complete(runtime.store, login_id, subject="x" * 32, amr=["face"], method="face")
    pending.complete(runtime.store, login_id, subject=first.subject, amr=["face"], method="face")
    with pytest.raises(pending.CompletionRefused):  # single use
        pending.complete(runtime.store, login_id, subject=first.subject, amr=["face"], method="face")
    done = client.get(f"/login/{login_id}/continue", follow_redirects=False)
    stepped = codes.redeem(runtime.store, query_of(done.headers["location"])["code"])
    assert stepped is not None and stepped.sid == first.sid and stepped.acr == HIGH
    assert stepped.amr == ["sc", "hwk", "pin", "face", "mfa"]
    assert client.get(f"/login/{login_id}/continue", follow_redirects=False).status_code == 404  # used


def test_cancel_goes_back_with_access_denied(client: TestClient, portal: RegisteredClient) -> None:
    request = request_for(portal)
    login_id = login_id_of(authorize(client, request))
    _error(client.get(f"/login/{login_id}/cancel", follow_redirects=False), "access_denied", request.params["state"])
    assert client.get(f"/login/{login_id}/status").status_code == 404


# -- what a hostile browser sends ------------------------------------------------------------------------------


def test_a_nul_or_non_ascii_client_id_is_an_error_page(client: TestClient, portal: RegisteredClient) -> None:
    for client_id in ("\x00", portal.client_id + "\x00", "客户端"):
        assert "invalid_client" in _page(authorize(client, request_for(portal, client_id=client_id)))


def test_a_malformed_session_cookie_is_no_session(client: TestClient, portal: RegisteredClient) -> None:
    # A quoted cookie value may carry octal escapes; "\000" would reach the database as a NUL.
    cookie = 'sscard_session="\\000aaaaaaaaaaaaaaaaaaaa.secret"'
    answer = client.get(
        "/authorize", params=request_for(portal).params, headers={"cookie": cookie}, follow_redirects=False
    )
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login/")


@pytest.mark.parametrize("max_age", ["²", "١٢", "1e3", " 10"])
def test_max_age_is_ascii_digits(client: TestClient, portal: RegisteredClient, max_age: str) -> None:
    request = request_for(portal, max_age=max_age)
    _error(authorize(client, request), "invalid_request", request.params["state"])


@pytest.mark.parametrize("state", ["s" * 1025, "line\r\nbreak"])
def test_a_state_no_client_sends_in_good_faith_is_refused_without_echo(
    client: TestClient, portal: RegisteredClient, state: str
) -> None:
    _error(authorize(client, request_for(portal, state=state)), "invalid_request", None)
    assert client.cookies.get(pending.BROWSER_COOKIE) is None  # no pending login was made


def test_a_repeated_parameter_is_named_within_the_error_description_charset(
    client: TestClient, portal: RegisteredClient
) -> None:
    request = request_for(portal)
    params = [*request.params.items(), ('x"\\é', "1"), ('x"\\é', "2")]
    answer = client.get("/authorize", params=params, follow_redirects=False)
    query = _error(answer, "invalid_request", request.params["state"])
    assert all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in query["error_description"])


def test_two_logins_pending_in_one_browser_both_stay_bound_to_it(
    client: TestClient, helper: TestClient, runtime: Runtime, portal: RegisteredClient, tmp_path: Path
) -> None:
    # Two tabs: the second authorization request must not unbind the first tab's login.
    first = login_id_of(authorize(client, request_for(portal)))
    second = login_id_of(authorize(client, request_for(portal)))
    assert client.get(f"/login/{first}/status").json()["status"] == "pending"
    card = issue(runtime, tmp_path, generation=3)
    assert sign_with_card(helper, first, card.path).status_code == 200
    assert client.get(f"/login/{first}/continue", follow_redirects=False).status_code == 303
    assert client.get(f"/login/{second}/status").json()["status"] == "pending"  # still this browser's


def test_signing_in_again_rotates_the_cookie_and_reports_only_what_was_proven(
    client: TestClient, helper: TestClient, runtime: Runtime, tmp_path: Path
) -> None:
    portal = register_client(runtime, redirect_uris=[REDIRECT], acr_values=[SUBSTANTIAL, HIGH])
    card = issue(runtime, tmp_path, generation=3)
    _sign_in(client, helper, request_for(portal), card.path)
    before = client.cookies.get("sscard_session")
    with unit_of_work(runtime.sessions) as db:  # a face check two hours ago (a later issue's method)
        session = db.scalars(select(SsoSession)).one()
        session.acr, session.amr = HIGH, [*session.amr, "face"]
        session.auth_time -= timedelta(hours=2)
    answer = _sign_in(client, helper, request_for(portal, prompt="login"), card.path)
    again = codes.redeem(runtime.store, answer["code"])
    # Only the card was proven now: the face check of two hours ago must not pass for a fresh one.
    assert again is not None and again.acr == SUBSTANTIAL and "face" not in again.amr
    fresh_face = request_for(portal, acr_values=HIGH, max_age="600", prompt="none")
    _error(authorize(client, fresh_face), "login_required", fresh_face.params["state"])
    after = client.cookies.get("sscard_session")
    assert after and before and after != before and after.split(".")[0] == before.split(".")[0]  # same sid
    fixed = TestClient(client.app, cookies={"sscard_session": before})  # the cookie from before the login
    assert authorize(fixed, request_for(portal)).headers["location"].startswith("/login/")


def test_on_https_the_login_cookie_is_host_only(settings_factory) -> None:  # type: ignore[no-untyped-def]
    from authsvc.app import create_app
    from authsvc.cli import prepare

    rt = Runtime(settings_factory(issuer="https://testserver"))
    prepare(rt, migrate=False)
    try:
        portal = register_client(rt, redirect_uris=[REDIRECT])
        browser = TestClient(create_app(runtime=rt), base_url="https://testserver")
        login_id = login_id_of(authorize(browser, request_for(portal)))
        assert browser.cookies.get("__Host-sscard_login") and browser.cookies.get("sscard_login") is None
        assert browser.get(f"/login/{login_id}/status").json()["status"] == "pending"
    finally:
        rt.close()


# -- the request by POST, late continuation, stale step-up ----------------------------------------------------


def test_a_posted_request_is_the_same_request_as_a_get(client: TestClient, portal: RegisteredClient) -> None:
    request = request_for(portal)
    posted = client.post("/authorize", data=request.params, follow_redirects=False)
    assert posted.status_code == 303
    location = posted.headers["location"]
    assert location.startswith("/authorize?") and query_of(location) == request.params
    login_id_of(client.get(location, follow_redirects=False))
    bad = client.post("/authorize", content=b'{"client_id": "x"}', headers={"content-type": "application/json"})
    assert "invalid_request" in _page(bad)


def test_a_login_completed_in_its_last_seconds_still_continues(
    client: TestClient, helper: TestClient, runtime: Runtime, portal: RegisteredClient, tmp_path: Path
) -> None:
    card = issue(runtime, tmp_path, generation=3)
    login_id = login_id_of(authorize(client, request_for(portal)))
    assert sign_with_card(helper, login_id, card.path).status_code == 200
    runtime.store.take(f"pending:req:{login_id}")  # the request's own key expires before the browser continues
    done = client.get(f"/login/{login_id}/continue", follow_redirects=False)
    assert done.status_code == 303 and "code" in query_of(done.headers["location"])


def test_a_login_cancelled_after_the_card_signed_cannot_continue(
    client: TestClient, helper: TestClient, runtime: Runtime, portal: RegisteredClient, tmp_path: Path
) -> None:
    card = issue(runtime, tmp_path, generation=3)
    login_id = login_id_of(authorize(client, request_for(portal)))
    assert sign_with_card(helper, login_id, card.path).status_code == 200
    assert client.get(f"/login/{login_id}/cancel", follow_redirects=False).status_code == 303
    done = client.get(f"/login/{login_id}/continue", follow_redirects=False)
    assert "location" not in done.headers or "code" not in query_of(done.headers["location"])


def test_a_step_up_whose_session_ended_meanwhile_does_not_continue(
    client: TestClient, helper: TestClient, runtime: Runtime, tmp_path: Path
) -> None:
    portal = register_client(runtime, redirect_uris=[REDIRECT], acr_values=[SUBSTANTIAL, HIGH])
    mine = issue(runtime, tmp_path, generation=3)
    first = codes.redeem(runtime.store, _sign_in(client, helper, request_for(portal), mine.path)["code"])
    assert first is not None
    login_id = login_id_of(authorize(client, request_for(portal, acr_values=HIGH)))
    with unit_of_work(runtime.sessions) as db:  # the citizen signs out in another tab
        from authsvc.sessions import service as sessions

        session = db.scalars(select(SsoSession).where(SsoSession.sid == first.sid)).one()
        sessions.end(db, runtime, session, why="logout")
    pending.complete(runtime.store, login_id, subject=first.subject, amr=["face"], method="face")
    done = client.get(f"/login/{login_id}/continue", follow_redirects=False)
    assert "location" not in done.headers or "code" not in query_of(done.headers["location"])


def test_id_token_hint_names_whom_the_portal_expects(
    client: TestClient, helper: TestClient, runtime: Runtime, portal: RegisteredClient, tmp_path: Path
) -> None:
    from authsvc.tokens import issuing

    card = issue(runtime, tmp_path, generation=3)
    first = codes.redeem(runtime.store, _sign_in(client, helper, request_for(portal), card.path)["code"])
    assert first is not None

    def hint(subject: str, audience: str = portal.client_id) -> str:
        auth = Authentication(subject, first.auth_time, first.acr, first.amr)
        return issuing.id_token(
            runtime.keyring,
            issuer=ISSUER,
            client_id=audience,
            subject=subject,
            auth=auth,
            ttl=-60,  # expired is fine
        )

    same = authorize(client, request_for(portal, prompt="none", id_token_hint=hint(first.subject)))
    assert "code" in query_of(same.headers["location"])
    other = request_for(portal, prompt="none", id_token_hint=hint("f" * 32))
    _error(authorize(client, other), "login_required", other.params["state"])
    for bad in ("not-a-jwt", hint(first.subject, audience="another-portal")):
        request = request_for(portal, id_token_hint=bad)
        _error(authorize(client, request), "invalid_request", request.params["state"])
