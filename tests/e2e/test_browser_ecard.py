"""The e-card in a real browser (headless Debian Chromium):

- sign-in: a portal sends the browser to the login page, which shows the QR code; the test reads it from the screen
  as a phone's camera would (zxing-cpp on a screenshot), and the reference e-card client (`sscard ecard login ...
  --yes`, a subprocess) approves; the page continues to the portal by itself, and the portal's ID token says level
  low with amr ["hwk"].
- enrolment: `sscard ecard enrol --client-id ...` prints the authorization URL (RFC 8252 native app, loopback
  redirect); the browser signs in there with the card and PIN (pcscd + vpcd + `sscard helper`) and a live face (the
  liveness sandbox), lands on the client's loopback listener, and the client enrols its device key."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from authsvc import demo_browser
from authsvc.clients.models import AuthMethod
from authsvc.demo_portal import PortalConfig, create_portal, serve_in_thread
from authsvc.tokens import assurance
from tests.e2e import qr
from tests.fixtures.oidc import register_client
from tests.fixtures.service import PIN, LiveServer, free_port, issue
from tests.integration.ecard.support import app_client, citizen, token
from tests.integration.liveness.support import harness

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30_000  # ms: the page polls its status every second


@dataclass
class Portal:
    base: str
    name: str


@pytest.fixture
def service(live_server_factory: Callable[..., LiveServer]) -> LiveServer:
    return live_server_factory()


@pytest.fixture
def portal(service: LiveServer) -> Iterator[Portal]:
    port = free_port()
    base, name = f"http://127.0.0.1:{port}", "社保查询 Portal A"
    registered = register_client(
        service.runtime,
        name=name,
        auth_method=AuthMethod.CLIENT_SECRET_BASIC,
        redirect_uris=[f"{base}/callback"],
        post_logout_redirect_uris=[f"{base}/"],
        acr_values=list(assurance.LEVELS),
    )
    assert registered.secret is not None
    server: uvicorn.Server = serve_in_thread(
        create_portal(PortalConfig(name, base, service.url, registered.client_id, registered.secret)), port
    )
    yield Portal(base, name)
    server.should_exit = True


def _sscard(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "card", *argv], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )


@pytest.fixture
def phone(service: LiveServer, tmp_path: Path) -> Path:
    """A citizen's enrolled e-card: the device key file of the reference client."""
    rt = service.runtime
    holder = citizen(rt, tmp_path, generation=3)
    key = tmp_path / "phone" / "device.pem"
    enrolled = _sscard(
        "ecard",
        "enrol",
        "--issuer",
        service.url,
        "--key",
        str(key),
        "--access-token",
        token(rt, app_client(rt), holder.subject),
    )
    assert enrolled.returncode == 0, enrolled.stderr
    return key


def test_a_citizen_signs_in_by_scanning_the_login_pages_qr_code(
    service: LiveServer, portal: Portal, phone: Path
) -> None:
    reason = demo_browser.unavailable()
    if reason is not None:
        pytest.fail(reason)
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=demo_browser.CHROMIUM, args=demo_browser.CHROMIUM_ARGS)
        try:
            page = browser.new_context(locale="en-US").new_page()
            page.goto(f"{portal.base}/login?acr={assurance.LOW}")
            page.wait_for_url(f"{service.url}/login/*")
            code = page.locator("#ecard-qr svg")
            expect(code).to_be_visible(timeout=TIMEOUT)
            # What the phone's camera sees: the rendered code, decoded from pixels.
            texts = qr.decode(page.locator("#ecard-qr").screenshot())
            assert len(texts) == 1 and texts[0].startswith(f"{service.url}/ecard/scan?"), texts
            approved = _sscard("ecard", "login", texts[0], "--key", str(phone), "--yes")
            assert approved.returncode == 0, approved.stderr
            assert json.loads(approved.stdout)["status"] == "done"
            assert f"「{portal.name}」" in approved.stderr  # the app showed the portal's name before signing
            page.wait_for_url(f"{portal.base}/", timeout=TIMEOUT)  # the page continued by itself
            expect(page.locator("#who")).to_contain_text("Signed in as")
            assert page.locator("#acr").inner_text() == assurance.LOW
            assert page.locator("#amr").inner_text().split() == ["hwk"]
        finally:
            browser.close()


@pytest.mark.pcsc
def test_enrolment_after_card_pin_and_face_in_the_browser(
    live_server_factory: Callable[..., LiveServer],
    pcscd: str,
    emulator,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    reason = demo_browser.unavailable()
    if reason is not None:
        pytest.fail(reason)
    from playwright.sync_api import expect, sync_playwright

    helper_port = free_port()
    for faces in harness(live_server_factory, helper_url=f"http://127.0.0.1:{helper_port}"):
        rt, url = faces.runtime, faces.service.url
        card = issue(rt, tmp_path, generation=3)  # the holder whose reference photo the sandbox knows
        app = app_client(rt)
        key = tmp_path / "phone" / "device.pem"
        command = ["ecard", "enrol", "--issuer", url, "--key", str(key), "--client-id", app.client_id]
        enrolling = subprocess.Popen(
            [sys.executable, "-m", "card", *command, "--timeout", "90", "--device-name", "张伟的手机"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            assert enrolling.stderr is not None
            printed = [enrolling.stderr.readline() for _ in range(2)]
            authorization_url = printed[1].strip()
            assert authorization_url.startswith(f"{url}/authorize?"), printed
            with (
                demo_browser.card_helper(url, port=helper_port, reader=pcscd, pin=PIN),
                emulator(card.path),
                sync_playwright() as pw,
            ):
                browser = pw.chromium.launch(executable_path=demo_browser.CHROMIUM, args=demo_browser.CHROMIUM_ARGS)
                try:
                    page = browser.new_context(locale="en-US").new_page()
                    page.goto(authorization_url)
                    page.wait_for_url(f"{url}/login/*")
                    page.click("#card-button")
                    expect(page.locator("#method-face")).to_be_visible(timeout=TIMEOUT)  # card + PIN done
                    page.click("#face-button")
                    link = page.locator("#face-link")
                    expect(link).to_be_visible(timeout=TIMEOUT)
                    capture_url = link.get_attribute("href") or ""
                    faces.sandbox.capture(capture_url.rsplit("/", 1)[1], "right_person")  # the phone's camera
                    page.wait_for_url("http://127.0.0.1:*/callback?*", timeout=TIMEOUT)  # the app's listener
                finally:
                    browser.close()
            out, err = enrolling.communicate(timeout=60)
        finally:
            if enrolling.poll() is None:
                enrolling.kill()
                enrolling.wait()
        assert enrolling.returncode == 0, err
        enrolled = json.loads(out)
        assert enrolled["status"] == "active" and enrolled["device_name"] == "张伟的手机"


def test_a_qr_code_copied_to_a_phishing_page_is_refused_by_the_app(service: LiveServer, phone: Path) -> None:
    relayed = f"http://127.0.0.1:{free_port()}/ecard/scan?l={'x' * 32}&t={'y' * 32}"
    refused = _sscard("ecard", "login", relayed, "--key", str(phone), "--yes")
    assert refused.returncode == 4 and "qr_foreign" in refused.stderr
