"""The reference e-card client (`sscard ecard ...`, card/ecard.py) against the live service on both backends: the
RFC 8252 native-app sign-in (public client, loopback redirect on a port of its own), enrolment, a QR sign-in,
listing, revoking, and a card reported lost with `authsvc card set-status`."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from authsvc.cli import main as authsvc_main
from authsvc.database import unit_of_work
from authsvc.oauth.models import OAuthGrant
from authsvc.runtime import Runtime
from authsvc.tokens import assurance
from card import cryptogram
from card import ecard as client
from card.cli import main as sscard
from card.kiosk import EXIT_OK, EXIT_REFUSED
from tests.fixtures.oidc import register_client
from tests.integration.ecard.support import app_client, citizen, token
from tests.integration.sso import card_body, request_for

LEVELS = [assurance.LOW, assurance.SUBSTANTIAL, assurance.HIGH]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = sscard(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _browser_signs_in_with_the_card(base: str, url: str, card_path: Path, done: list[str]) -> None:
    """What the citizen does with the printed URL: opens it, signs in with the card, is sent back to the app."""
    with httpx.Client(base_url=base) as browser:
        located = browser.get(url).headers["location"]
        login_id = httpx.URL(located).path.removeprefix("/login/")
        context = cryptogram.web_context(cryptogram.web_origin(base))
        body = card_body(browser, login_id, card_path, context=context)  # type: ignore[arg-type]
        assert browser.post(f"/login/{login_id}/card", json=body).status_code == 200
        back = browser.get(f"/login/{login_id}/continue").headers["location"]
        done.append(back)
        httpx.get(back)  # the app's loopback listener


def test_native_sign_in_then_the_whole_life_of_an_ecard(
    live_server_factory, cli_env: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    server = live_server_factory()
    rt = server.runtime
    zhang = citizen(rt, tmp_path, generation=3)
    app = app_client(rt)
    # RFC 8252: the app listens on 127.0.0.1 on whatever port it gets; the registered URI has none.
    done: list[str] = []

    def open_in_browser(url: str) -> None:
        threading.Thread(
            target=_browser_signs_in_with_the_card, args=(server.url, url, zhang.card.path, done), daemon=True
        ).start()

    access = client.native_sign_in(
        server.url, app.client_id, show_url=open_in_browser, acr=assurance.LOW, max_age=None, timeout=30
    )
    assert done and httpx.URL(done[0]).port not in (None, 80)
    assert client.list_ecards(server.url, access) == []
    key = tmp_path / "phone" / "device.pem"
    # A card + PIN sign-in (substantial) is not enough to enrol: the service asks for a step-up (RFC 9470).
    code, _, err = _run(capsys, "ecard", "enrol", "--issuer", server.url, "--key", str(key), "--access-token", access)
    assert code == EXIT_REFUSED and "insufficient_user_authentication" in err
    high = token(rt, app, zhang.subject)
    code, out, _ = _run(
        capsys,
        "ecard",
        "enrol",
        "--issuer",
        server.url,
        "--key",
        str(key),
        "--access-token",
        high,
        "--device-name",
        "手机",
    )
    assert code == EXIT_OK, out
    ecard_id = json.loads(out)["id"]
    assert client.load_state(key).ecard_id == ecard_id

    portal = register_client(rt, name="社保查询", acr_values=LEVELS)
    with httpx.Client(base_url=server.url) as browser:
        located = browser.get("/authorize", params=request_for(portal, acr_values=assurance.LOW).params)
        login_id = httpx.URL(located.headers["location"]).path.removeprefix("/login/")
        qr_url = browser.get(f"/login/{login_id}/ecard").json()["url"]
        code, out, err = _run(capsys, "ecard", "login", qr_url, "--key", str(key), "--yes")
        assert code == EXIT_OK and json.loads(out)["status"] == "done", err
        assert "「社保查询」" in err
        assert browser.get(f"/login/{login_id}/status").json() == {"status": "done"}

    code, out, _ = _run(capsys, "ecard", "list", "--key", str(key), "--access-token", access)
    assert code == EXIT_OK and [e["id"] for e in json.loads(out)] == [ecard_id]

    # The card is reported lost at the counter: the e-card goes with it, and signs in nowhere any more; the holder
    # is signed out everywhere, so the app's own sign-in (made in a browser session) is gone too.
    assert authsvc_main(["card", "set-status", zhang.card.card_number, "reported_lost"]) == 0
    capsys.readouterr()
    with unit_of_work(rt.sessions) as db:
        assert all(
            g.revoked_at is not None
            for g in db.scalars(select(OAuthGrant).where(OAuthGrant.client_id == app.client_id))
        )
    if rt.settings.redis_url.startswith("redis"):  # the command and the service share the store of revocations
        code, _, err = _run(capsys, "ecard", "list", "--key", str(key), "--access-token", access)
        assert code == EXIT_REFUSED and "grant was revoked" in err, err
    again = token(rt, app, zhang.subject, acr=assurance.LOW)  # the citizen signs in to the app again
    code, out, _ = _run(capsys, "ecard", "list", "--key", str(key), "--access-token", again)
    assert [(e["status"], e["revoked_reason"]) for e in json.loads(out)] == [("revoked", "card_reported_lost")]
    with httpx.Client(base_url=server.url) as browser:
        located = browser.get("/authorize", params=request_for(portal, acr_values=assurance.LOW).params)
        login_id = httpx.URL(located.headers["location"]).path.removeprefix("/login/")
        qr_url = browser.get(f"/login/{login_id}/ecard").json()["url"]
        code, _, err = _run(capsys, "ecard", "login", qr_url, "--key", str(key), "--yes")
        assert code == EXIT_REFUSED and "ecard_revoked" in err


def test_list_and_revoke_from_the_command_line(
    live_server_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    server = live_server_factory()
    rt = server.runtime
    zhang = citizen(rt, tmp_path, generation=2)
    access = token(rt, app_client(rt), zhang.subject)
    key = tmp_path / "device.pem"
    assert _run(capsys, "ecard", "enrol", "--issuer", server.url, "--key", str(key), "--access-token", access)[0] == 0
    ecard_id = client.load_state(key).ecard_id
    code, out, _ = _run(capsys, "ecard", "revoke", ecard_id, "--key", str(key), "--access-token", access)
    assert code == EXIT_OK and json.loads(out)["status"] == "revoked"
    code, _, err = _run(capsys, "ecard", "revoke", "X" * 22, "--key", str(key), "--access-token", access)
    assert code == EXIT_REFUSED and "ecard_unknown" in err
    code, _, err = _run(capsys, "ecard", "list", "--key", str(key))
    assert code == 2 and "--access-token" in err
    code, _, err = _run(
        capsys, "ecard", "login", "https://phish.example/ecard/scan?l=x&t=y", "--key", str(key), "--yes"
    )
    assert code == EXIT_REFUSED and "qr_foreign" in err


def test_the_public_client_cannot_use_a_port_on_another_path_or_host(
    live_server_factory,
) -> None:  # type: ignore[no-untyped-def]
    server = live_server_factory()
    app = app_client(server.runtime)
    params = {**request_for(app, acr_values=assurance.LOW, scope="openid ecard").params}
    with httpx.Client(base_url=server.url) as browser:
        for uri, ok in [
            ("http://127.0.0.1:50123/callback", True),
            ("http://127.0.0.1:50123/elsewhere", False),
            ("http://localhost:50123/callback", False),
        ]:
            answer = browser.get("/authorize", params={**params, "redirect_uri": uri})
            assert (answer.status_code == 303) is ok, (uri, answer.status_code)
        # Without a secret, only the public client may name itself at the token endpoint.
        refused = browser.post("/token", data={"grant_type": "authorization_code", "code": "x", "client_id": "nobody"})
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"


def test_the_operator_registers_the_app_as_a_public_client(
    cli_env: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["client", "add", "--name", "电子社保卡", "--auth-method", "none", "--scope", "openid ecard"]
    levels = ["--acr", assurance.HIGH, "--acr", assurance.LOW]
    assert authsvc_main([*common, "--redirect-uri", "http://127.0.0.1/callback", *levels]) == 0
    registration = json.loads(capsys.readouterr().out)
    assert registration["token_endpoint_auth_method"] == "none" and "client_secret" not in registration
    assert registration["redirect_uris"] == ["http://127.0.0.1/callback"]
    assert authsvc_main([*common, "--redirect-uri", "http://127.0.0.1:8080/callback", *levels]) == 1
    assert "RFC 8252" in capsys.readouterr().err
