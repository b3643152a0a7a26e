"""An e-card sign-in at a portal whose level needs a live face too: the app gets the vendor's capture URL (the
phone does the capture), and the vendor's verdict completes the login. Over HTTP against the liveness sandbox, on
both backends."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from authsvc.tokens import assurance
from card.cli import main as sscard
from tests.fixtures.service import LiveServer, issue
from tests.integration.ecard.support import app_client, approve, enrol, scan, signature, token
from tests.integration.liveness.support import OK, harness, problem


def test_an_ecard_and_a_live_face_reach_substantial(
    live_server_factory: Callable[..., LiveServer], tmp_path: Path
) -> None:
    for faces in harness(live_server_factory):
        rt, url = faces.runtime, faces.service.url
        issue(rt, tmp_path, generation=3)  # the holder with the reference photo gets a card, then an e-card
        with httpx.Client(base_url=url) as app:
            phone = enrol(app, token(rt, app_client(rt), faces.subject), issuer=url)
            login = faces.login(acr=assurance.SUBSTANTIAL, amr=[])
            scanned = scan(app, login.browser, login.login_id)
            answer = approve(app, phone, login.login_id, signature(phone, login.login_id, scanned, origin=url))
        assert answer.status_code == 200, answer.text
        partial = answer.json()
        assert partial["status"] == "partial" and "face" in partial["missing"]
        capture_url = partial["face"]["capture_url"]
        assert capture_url.startswith(faces.sandbox.public_url + "/capture/") and partial["face"]["expires_in"] > 0
        assert faces.status(login)["reached"] == assurance.LOW
        [delivery] = faces.sandbox.capture(capture_url.rsplit("/", 1)[1], "right_person")
        assert problem(delivery) == OK
        assert faces.status(login)["status"] == "done"
        auth = faces.finish(login)
        assert auth is not None and auth.acr == assurance.SUBSTANTIAL and auth.amr == ["hwk", "face", "mfa"]


def test_the_reference_client_hands_the_capture_over(
    live_server_factory: Callable[..., LiveServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for faces in harness(live_server_factory):
        rt, url = faces.runtime, faces.service.url
        issue(rt, tmp_path, generation=3)
        key = tmp_path / "device.pem"
        access = token(rt, app_client(rt), faces.subject)
        assert sscard(["ecard", "enrol", "--issuer", url, "--key", str(key), "--access-token", access]) == 0
        capsys.readouterr()
        login = faces.login(acr=assurance.SUBSTANTIAL, amr=[])
        qr_url = login.browser.get(f"/login/{login.login_id}/ecard").json()["url"]
        assert sscard(["ecard", "login", qr_url, "--key", str(key), "--yes"]) == 0
        out, err = capsys.readouterr()
        capture_url = json.loads(out)["face"]["capture_url"]
        assert f"face check; capture at:\n{capture_url}" in err
        [delivery] = faces.sandbox.capture(capture_url.rsplit("/", 1)[1], "someone_else")
        assert problem(delivery) == OK
        assert faces.status(login)["last_failure"] == {"reason": "face_failed", "why": "low_score"}
