"""RP-initiated logout and back-channel logout deliveries, with a portal that is down first and up later."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from authsvc.app import create_app
from authsvc.cli import prepare
from authsvc.database import unit_of_work, utcnow
from authsvc.oauth import codes
from authsvc.oidc import backchannel
from authsvc.runtime import Runtime
from authsvc.sessions.models import DeliveryStatus, LogoutDelivery, SsoSession
from tests.fixtures.oidc import RegisteredClient, register_client
from tests.fixtures.service import free_port, issue
from tests.integration.sso import ISSUER, authorize, login_id_of, query_of, request_for, sign_with_card

RETRY_BASE = 3600  # the delivery loop runs every RETRY_BASE seconds: never during a test; passes are explicit


class Portal:
    """A portal's back-channel logout endpoint, on a real port, that can be down or up."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[str] = []
        self._server: HTTPServer | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/backchannel"

    def up(self) -> None:
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                received.append(parse_qs(body)["logout_token"][0])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = HTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def runtime(settings_factory) -> Iterator[Runtime]:  # type: ignore[no-untyped-def]
    rt = Runtime(settings_factory(logout_retry_base=RETRY_BASE, logout_max_attempts=3))
    prepare(rt, migrate=False)
    yield rt
    rt.close()


@pytest.fixture
def portals() -> Iterator[list[Portal]]:
    made = [Portal(), Portal()]
    yield made
    for portal in made:
        portal.down()


@pytest.fixture
def signed_in(client: TestClient, runtime: Runtime, portals: list[Portal], tmp_path: Path) -> dict[str, object]:
    """A browser signed in to portal A (card) and then B (silently); both have back-channel logout URIs."""
    a = register_client(
        runtime,
        name="A",
        redirect_uris=["http://127.0.0.1:9/a"],
        post_logout_redirect_uris=["http://127.0.0.1:9/a/bye"],
        backchannel_logout_uri=portals[0].uri,
    )
    b = register_client(
        runtime, name="B", redirect_uris=["http://127.0.0.1:9/b"], backchannel_logout_uri=portals[1].uri,
        subject_type="pairwise",
    )
    card = issue(runtime, tmp_path, generation=3)
    login_id = login_id_of(authorize(client, request_for(a)))
    assert sign_with_card(TestClient(client.app), login_id, card.path).status_code == 200
    code = query_of(client.get(f"/login/{login_id}/continue", follow_redirects=False).headers["location"])["code"]
    granted = codes.redeem(runtime.store, code)
    assert granted is not None
    assert authorize(client, request_for(b, prompt="none")).headers["location"].startswith("http://127.0.0.1:9/b?")
    return {"a": a, "b": b, "sid": granted.sid, "subject": granted.subject}


def _hint(runtime: Runtime, client: RegisteredClient, sid: str, subject: str) -> str:
    """An ID token as the token endpoint makes it, long expired: a hint is accepted expired."""
    now = int(time.time()) - 7200
    claims = {"iss": ISSUER, "sub": subject, "aud": client.client_id, "iat": now, "exp": now + 300, "sid": sid}
    return runtime.keyring.sign(claims)


def _deliveries(runtime: Runtime) -> list[LogoutDelivery]:
    with unit_of_work(runtime.sessions) as db:
        return backchannel.deliveries(db)


def _ended(runtime: Runtime) -> bool:
    with unit_of_work(runtime.sessions) as db:
        return db.scalars(select(SsoSession)).one().ended_at is not None


def test_logout_with_a_hint_reaches_both_portals_after_they_come_up(
    client: TestClient, runtime: Runtime, portals: list[Portal], signed_in: dict
) -> None:
    a, b = signed_in["a"], signed_in["b"]
    params = {
        "id_token_hint": _hint(runtime, a, signed_in["sid"], signed_in["subject"]),
        "post_logout_redirect_uri": "http://127.0.0.1:9/a/bye",
        "state": "st8",
    }
    answer = client.get("/logout", params=params, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "http://127.0.0.1:9/a/bye?state=st8"
    assert _ended(runtime)
    assert authorize(client, request_for(a, prompt="none", state="x")).headers["location"].count("login_required")
    # The first attempt (right after the logout) found both portals down.
    rows = _deliveries(runtime)
    assert [(r.client_id, r.status, r.attempts) for r in rows] == [
        (a.client_id, DeliveryStatus.PENDING, 1),
        (b.client_id, DeliveryStatus.PENDING, 1),
    ]
    assert all(r.last_error and r.next_attempt_at > utcnow() for r in rows)
    assert backchannel.deliver_due(runtime).delivered == 0  # not due yet

    portals[0].up()
    later = utcnow() + timedelta(seconds=RETRY_BASE)
    report = backchannel.deliver_due(runtime, now=later)
    assert (report.delivered, report.retrying) == (1, 1)
    portals[1].up()
    assert backchannel.deliver_due(runtime, now=later + timedelta(seconds=2 * RETRY_BASE)).delivered == 1
    assert [r.status for r in _deliveries(runtime)] == [DeliveryStatus.DELIVERED] * 2

    keys = {k["kid"]: jwt.PyJWK(k) for k in client.get("/jwks.json").json()["keys"]}
    for portal, registered in zip(portals, (a, b), strict=True):
        (token,) = portal.received
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(
            token, keys[header["kid"]].key, algorithms=["ES256"], audience=registered.client_id, issuer=ISSUER,
            options={"verify_iat": False},
        )
        assert header["typ"] == "logout+jwt" and "nonce" not in claims
        assert claims["sid"] == signed_in["sid"] and set(claims["events"]) == {backchannel.EVENT}
    pairwise_sub = jwt.decode(portals[1].received[0], options={"verify_signature": False})["sub"]
    assert pairwise_sub != signed_in["subject"]  # B is a pairwise client


def test_a_portal_that_stays_down_is_given_up(
    client: TestClient, runtime: Runtime, signed_in: dict
) -> None:
    hint = _hint(runtime, signed_in["a"], signed_in["sid"], signed_in["subject"])
    assert client.get("/logout", params={"id_token_hint": hint}).status_code == 200
    now = utcnow()
    for attempt in (2, 3):
        now += timedelta(seconds=RETRY_BASE * 2 ** (attempt - 1))
        backchannel.deliver_due(runtime, now=now)
    rows = _deliveries(runtime)
    assert [(r.status, r.attempts) for r in rows] == [(DeliveryStatus.FAILED, 3)] * 2


def test_without_a_hint_the_citizen_confirms_with_a_csrf_token(
    client: TestClient, runtime: Runtime, signed_in: dict
) -> None:
    page = client.get("/logout", params={"client_id": signed_in["a"].client_id, "ui_locales": "en"})
    assert page.status_code == 200 and 'name="csrf"' in page.text and '<html lang="en">' in page.text
    assert '<form method="post" action="/logout">' in page.text
    assert not _ended(runtime)
    form = {"confirm": "yes", "client_id": signed_in["a"].client_id, "csrf": "forged"}
    assert client.post("/logout", data=form).status_code == 400  # another site cannot sign the citizen out
    assert not _ended(runtime)
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    kept = client.post("/logout", data={**form, "csrf": csrf, "confirm": "no"})
    assert kept.status_code == 200 and not _ended(runtime)
    done = client.post(
        "/logout", data={**form, "csrf": csrf, "post_logout_redirect_uri": "http://127.0.0.1:9/a/bye"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == "http://127.0.0.1:9/a/bye"  # no empty query
    assert _ended(runtime)


def test_a_hint_for_another_session_asks_for_confirmation(
    client: TestClient, runtime: Runtime, signed_in: dict
) -> None:
    hint = _hint(runtime, signed_in["a"], "another-session-sid-000000", signed_in["subject"])
    assert 'name="csrf"' in client.get("/logout", params={"id_token_hint": hint}).text
    assert not _ended(runtime)


@pytest.mark.parametrize(
    "params",
    [
        {"post_logout_redirect_uri": "http://127.0.0.1:9/a/bye"},  # no client to check it against
        {"client_id": "CLIENT_A", "post_logout_redirect_uri": "https://evil.example/"},
        {"id_token_hint": "not.a.token"},
        {"client_id": "nobody-such-client"},
    ],
)
def test_bad_logout_requests_get_an_error_page(
    client: TestClient, runtime: Runtime, signed_in: dict, params: dict[str, str]
) -> None:
    params = {k: v.replace("CLIENT_A", signed_in["a"].client_id) for k, v in params.items()}
    answer = client.get("/logout", params=params, follow_redirects=False)
    assert answer.status_code == 400 and "location" not in answer.headers
    assert not _ended(runtime)


def test_a_portal_may_post_its_logout_request(client: TestClient, runtime: Runtime, signed_in: dict) -> None:
    hint = _hint(runtime, signed_in["a"], signed_in["sid"], signed_in["subject"])
    answer = client.post("/logout", data={"id_token_hint": hint}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/logout?id_token_hint=")
    assert client.get(answer.headers["location"]).status_code == 200
    assert _ended(runtime)


def test_the_delivery_loop_runs_in_the_app(settings_factory) -> None:  # type: ignore[no-untyped-def]
    rt = Runtime(settings_factory(logout_retry_base=RETRY_BASE))
    prepare(rt, migrate=False)
    with TestClient(create_app(runtime=rt)):
        pass  # the lifespan starts and stops the loop cleanly
    rt.close()


def _log_out(client: TestClient, runtime: Runtime, signed_in: dict) -> None:
    """Ends the session; the first attempt right after it finds both portals down."""
    hint = _hint(runtime, signed_in["a"], signed_in["sid"], signed_in["subject"])
    assert client.get("/logout", params={"id_token_hint": hint}).status_code == 200
    assert [r.attempts for r in _deliveries(runtime)] == [1, 1]


class _Clock:
    """Stands in for the pass's monotonic clock: each post to a portal takes `per_post` seconds."""

    def __init__(self, per_post: float) -> None:
        self.value, self.per_post = 1000.0, per_post

    def __call__(self) -> float:
        return self.value


def test_a_slow_pass_signs_each_logout_token_when_it_is_posted(
    client: TestClient, runtime: Runtime, signed_in: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    _log_out(client, runtime, signed_in)
    clock = _Clock(per_post=50)  # a slow portal: by the second post, a token signed at the start is near its end
    monkeypatch.setattr(backchannel, "_clock", clock)
    now = utcnow() + timedelta(seconds=RETRY_BASE)
    posted: list[tuple[float, dict]] = []

    def portal(request: httpx.Request) -> httpx.Response:
        token = parse_qs(request.content.decode())["logout_token"][0]
        posted.append((now.timestamp() + clock.value - 1000.0, jwt.decode(token, options={"verify_signature": False})))
        clock.value += clock.per_post
        return httpx.Response(200)

    with httpx.Client(transport=httpx.MockTransport(portal)) as http:
        assert backchannel.deliver_due(runtime, http=http, now=now).delivered == 2
    for posted_at, claims in posted:
        assert claims["iat"] >= int(posted_at) and claims["exp"] > posted_at + 60


def test_a_pass_that_outlasts_its_lease_neither_posts_twice_nor_overwrites_another_workers_outcome(
    client: TestClient, runtime: Runtime, signed_in: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    _log_out(client, runtime, signed_in)
    clock = _Clock(per_post=0)
    monkeypatch.setattr(backchannel, "_clock", clock)
    now = utcnow() + timedelta(seconds=RETRY_BASE)
    first: list[str] = []

    def delivered(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)

    def stuck(request: httpx.Request) -> httpx.Response:
        # This portal hangs past the lease; meanwhile another worker claims both rows again and delivers them.
        first.append(request.url.host)
        clock.value += backchannel.LEASE.total_seconds() + 1
        with httpx.Client(transport=httpx.MockTransport(delivered)) as other_worker:
            assert backchannel.deliver_due(runtime, http=other_worker, now=now + backchannel.LEASE).delivered == 2
        return httpx.Response(503)

    with httpx.Client(transport=httpx.MockTransport(stuck)) as http:
        report = backchannel.deliver_due(runtime, http=http, now=now)
    assert len(first) == 1  # the second row was not posted again after the lease ran out
    assert (report.delivered, report.retrying, report.failed) == (0, 0, 0)
    rows = _deliveries(runtime)
    assert [(r.status, r.last_error) for r in rows] == [(DeliveryStatus.DELIVERED, None)] * 2


def test_a_pass_gives_back_what_it_had_no_time_to_post(
    client: TestClient, runtime: Runtime, signed_in: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    _log_out(client, runtime, signed_in)
    clock = _Clock(per_post=backchannel.LEASE.total_seconds())
    monkeypatch.setattr(backchannel, "_clock", clock)
    now = utcnow() + timedelta(seconds=RETRY_BASE)

    def slow(_request: httpx.Request) -> httpx.Response:
        clock.value += clock.per_post
        return httpx.Response(200)

    with httpx.Client(transport=httpx.MockTransport(slow)) as http:
        assert backchannel.deliver_due(runtime, http=http, now=now).delivered == 1
        rows = _deliveries(runtime)
        assert [(r.status, r.attempts) for r in rows] == [(DeliveryStatus.DELIVERED, 2), (DeliveryStatus.PENDING, 1)]
        assert backchannel.deliver_due(runtime, http=http, now=now + backchannel.LEASE).delivered == 1


def test_two_logouts_of_one_session_queue_its_logout_tokens_once(runtime: Runtime, signed_in: dict) -> None:
    from authsvc.sessions import service as sessions

    # Two requests (two tabs) loaded the live session before either ended it.
    with unit_of_work(runtime.sessions) as first_db, unit_of_work(runtime.sessions) as second_db:
        first = first_db.scalars(select(SsoSession)).one()
        second = second_db.scalars(select(SsoSession)).one()
        first_db.commit()
        second_db.commit()
        sessions.end(first_db, runtime, first, why="logout")
        first_db.commit()
        sessions.end(second_db, runtime, second, why="logout")
    assert len(_deliveries(runtime)) == 2  # one per portal, not two
