"""The e-card in a real browser (headless Debian Chromium), through the scenario of authsvc/ecard/demo.py that
`authsvc demo` shares:

- sign-in: a portal sends the browser to the login page, which shows the QR code; it is read from the screen as a
  phone's camera would (zxing-cpp on a screenshot), and the reference e-card client (`sscard ecard login ... --yes`,
  a subprocess) approves; the page continues to the portal by itself, and the portal's ID token says level low
  with amr ["hwk"].
- enrolment: `sscard ecard enrol --client-id ...` prints the authorization URL (RFC 8252 native app, loopback
  redirect); the browser signs in there with the card and PIN (pcscd + vpcd + `sscard helper`) and a live face (the
  liveness sandbox), lands on the client's loopback listener, and the client enrols its device key."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import select

from authsvc import demo_browser
from authsvc.database import unit_of_work
from authsvc.ecard import demo
from authsvc.ecard import service as ecards
from authsvc.liveness.sandbox import LivenessSandbox
from authsvc.registry.models import Cardholder
from authsvc.tokens import assurance
from tests.e2e.browser import Portal, chromium_page, demo_portal
from tests.fixtures.service import PIN, LiveServer, free_port, issue
from tests.integration.ecard.support import app_client, citizen, token
from tests.integration.liveness.support import harness


@pytest.fixture
def service(live_server_factory: Callable[..., LiveServer]) -> LiveServer:
    return live_server_factory()


@pytest.fixture
def portal(service: LiveServer) -> Iterator[Portal]:
    with demo_portal(service.runtime, service.url, "社保查询 Portal A", acr_values=list(assurance.LEVELS)) as p:
        yield p


@pytest.fixture
def phone(service: LiveServer, tmp_path: Path) -> Path:
    """A citizen's enrolled e-card: the device key file of the reference client (the HIGH token from the fixtures;
    the browser enrolment is the last test)."""
    rt = service.runtime
    holder = citizen(rt, tmp_path, generation=3)
    key = tmp_path / "phone" / "device.pem"
    access = token(rt, app_client(rt), holder.subject)
    enrolled = demo.sscard("ecard", "enrol", "--issuer", service.url, "--key", str(key), "--access-token", access)
    assert enrolled.returncode == 0, enrolled.stderr
    return key


def test_a_citizen_signs_in_by_scanning_the_login_pages_qr_code(
    service: LiveServer, portal: Portal, phone: Path
) -> None:
    steps: list[str] = []
    signed_in, app_said = demo.sign_in(service.url, portal.base, phone, report=steps.append)
    assert signed_in.acr == assurance.LOW and signed_in.amr == ["hwk"] and signed_in.sid
    assert f"「{portal.name}」" in app_said  # the app showed the portal's name before signing
    assert f"{service.url}/ecard/scan?" in steps[0] and len(steps) == 3


def test_a_refused_approval_is_shown_and_a_fresh_qr_code_replaces_the_spent_one(
    service: LiveServer, portal: Portal, phone: Path
) -> None:
    from playwright.sync_api import expect

    with chromium_page() as page:
        page.goto(f"{portal.base}/login?acr={assurance.LOW}")
        page.wait_for_url(f"{service.url}/login/*")
        link = page.locator("#ecard-link")
        expect(link).to_have_attribute("href", re.compile(r"/ecard/scan\?"))
        scanned = link.get_attribute("href")
        with unit_of_work(service.runtime.sessions) as db:  # the citizen revoked this phone from another device
            subject = db.scalars(select(Cardholder.subject)).one()
            [ecard] = ecards.of_person(db, subject)
            ecards.revoke_own(db, subject, ecard.public_id)
        refused = demo.sscard("ecard", "login", str(scanned), "--key", str(phone), "--yes")
        assert refused.returncode != 0 and "ecard_revoked" in refused.stderr
        expect(page.locator("#status")).to_contain_text("ecard_revoked", timeout=30_000)
        expect(link).not_to_have_attribute("href", str(scanned), timeout=10_000)  # a new code, not the spent one
        assert "/login/" in page.url  # nobody signed in


def test_a_qr_code_copied_to_a_phishing_page_is_refused_by_the_app(service: LiveServer, phone: Path) -> None:
    relayed = f"http://127.0.0.1:{free_port()}/ecard/scan?l={'x' * 32}&t={'y' * 32}"
    refused = demo.sscard("ecard", "login", relayed, "--key", str(phone), "--yes")
    assert refused.returncode == 4 and "qr_foreign" in refused.stderr


@pytest.mark.pcsc
def test_enrolment_after_card_pin_and_face_in_the_browser(
    live_server_factory: Callable[..., LiveServer],
    pcscd: str,
    emulator,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    helper_port = free_port()
    for faces in harness(live_server_factory, helper_url=f"http://127.0.0.1:{helper_port}"):
        rt, url = faces.runtime, faces.service.url
        card = issue(rt, tmp_path, generation=3)  # the holder whose reference photo the sandbox knows

        # The phone's camera at the vendor's capture page: the sandbox sees the right person.
        camera = partial(_capture, faces.sandbox)
        with demo_browser.card_helper(url, port=helper_port, reader=pcscd, pin=PIN), emulator(card.path):
            enrolled = demo.enrol(url, app_client(rt).client_id, tmp_path / "device.pem", capture=camera)
        assert enrolled["status"] == "active" and enrolled["card"][-3:] == card.card_number[-3:]


def _capture(sandbox: LivenessSandbox, capture_url: str) -> None:
    sandbox.capture(capture_url.rsplit("/", 1)[1], "right_person")


def test_a_picture_without_a_qr_code_reads_as_nothing() -> None:
    import io

    from PIL import Image

    blank = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(blank, format="PNG")
    assert demo.read_qr(blank.getvalue()) == []
