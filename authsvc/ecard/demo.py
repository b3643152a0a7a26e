"""The e-card as a citizen meets it, in headless Debian Chromium (Playwright) with the reference app (`sscard ecard`,
a subprocess standing in for the phone). Shared by `authsvc demo` and tests/e2e/test_browser_ecard.py, like
authsvc/demo_browser.py: each function raises demo_browser.ScenarioFailed naming the first step that went wrong.

- `enrol`: `sscard ecard enrol --client-id ...` prints the authorization URL (RFC 8252 native app); the browser opens
  it and signs in at the highest level: the card and PIN through `sscard helper` (which must listen at the service's
  helper URL, a card in the reader), then a live face, captured by `capture(capture_url)` (the phone's camera: the
  liveness sandbox in the demo and tests); the browser lands on the app's loopback listener and the app enrols.
- `sign_in`: a portal sends the browser to the login page; the QR code is read from the screen as a phone's camera
  reads it (zxing-cpp on a screenshot); `sscard ecard login <url> --yes` approves; the page continues by itself.

Playwright, Pillow and zxing-cpp are imported only inside: test and demo dependencies (the `test` extra), never the
service's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from authsvc import demo_browser
from authsvc.demo_browser import ScenarioFailed, SignedIn
from authsvc.tokens import assurance

_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0  # seconds: the card computes, the vendor calls back, the page polls its status every second


def sscard(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`sscard ARGV` as a subprocess (the reference app), from this checkout."""
    return subprocess.run(  # noqa: S603 - our own command line
        [sys.executable, "-m", "card", *argv], capture_output=True, text=True, timeout=timeout, env=_env(), check=False
    )


def _env() -> dict[str, str]:
    # `card` sits next to `authsvc`: the child finds it even when the project is not installed.
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}


def enrol(
    issuer: str,
    client_id: str,
    key: Path,
    *,
    capture: Callable[[str], None],
    device_name: str = "demo phone",
    report: Callable[[str], None] = lambda _text: None,
    chromium: str = demo_browser.CHROMIUM,
) -> dict[str, Any]:
    """Enrol the device key in `key` as an e-card after a highest-level sign-in in the browser; the new e-card."""
    _available(chromium)
    from playwright.sync_api import expect, sync_playwright

    command = ["ecard", "enrol", "--issuer", issuer, "--key", str(key), "--client-id", client_id]
    app = subprocess.Popen(  # noqa: S603 - our own command line
        [sys.executable, "-m", "card", *command, "--timeout", str(int(TIMEOUT)), "--device-name", device_name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert app.stderr is not None
        with demo_browser.step("e-card enrolment: the app's sign-in"):
            printed = [app.stderr.readline() for _ in range(2)]
            url = printed[1].strip()
            if not url.startswith(f"{issuer}/authorize?"):
                raise ScenarioFailed(f"e-card enrolment: sscard ecard enrol did not print a sign-in URL: {printed}")
            report("e-card: the app (sscard ecard enrol) asks the citizen to sign in at the highest level")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=demo_browser.CHROMIUM_ARGS)
            try:
                page = browser.new_context(locale="en-US").new_page()
                with demo_browser.step("e-card enrolment: card and PIN"):
                    page.goto(url)
                    page.wait_for_url(f"{issuer}/login/*")
                    page.click("#card-button")
                    expect(page.locator("#method-face")).to_be_visible(timeout=TIMEOUT * 1000)
                    report("e-card: card + PIN done in the browser (sscard helper); the page asks for the face")
                with demo_browser.step("e-card enrolment: the face"):
                    page.click("#face-button")
                    link = page.locator("#face-link")
                    expect(link).to_be_visible(timeout=TIMEOUT * 1000)
                    capture(link.get_attribute("href") or "")
                    page.wait_for_url("http://127.0.0.1:*/callback?*", timeout=TIMEOUT * 1000)
                    report("e-card: live face passed; the browser is back at the app's loopback listener")
            finally:
                browser.close()
        with demo_browser.step("e-card enrolment: the device key"):
            out, err = app.communicate(timeout=TIMEOUT)
            if app.returncode != 0:
                raise ScenarioFailed(f"e-card enrolment: sscard ecard enrol failed: {err.strip()}")
            enrolled: dict[str, Any] = json.loads(out)
            report(f"e-card: enrolled {enrolled['id']} ({enrolled['device_name']}), bound to card {enrolled['card']}")
            return enrolled
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()


def sign_in(
    issuer: str,
    portal: str,
    key: Path,
    *,
    acr: str = assurance.LOW,
    report: Callable[[str], None] = lambda _text: None,
    chromium: str = demo_browser.CHROMIUM,
) -> tuple[SignedIn, str]:
    """Sign in at a demo portal (authsvc/demo_portal.py) by the login page's QR code and the e-card in `key`; what
    the portal shows, and what the app printed (the portal's name it showed before signing)."""
    _available(chromium)
    from playwright.sync_api import expect, sync_playwright

    portal = portal.rstrip("/")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=demo_browser.CHROMIUM_ARGS)
        try:
            page = browser.new_context(locale="en-US").new_page()
            with demo_browser.step("e-card sign-in: the login page's QR code"):
                page.goto(f"{portal}/login?acr={acr}")
                page.wait_for_url(f"{issuer}/login/*")
                expect(page.locator("#ecard-qr svg")).to_be_visible(timeout=TIMEOUT * 1000)
                texts = read_qr(page.locator("#ecard-qr").screenshot())
                if len(texts) != 1:
                    raise ScenarioFailed(f"e-card sign-in: the page's QR code did not read ({texts})")
                report(f"e-card: the phone's camera reads the login page's QR code: {texts[0][:48]}…")
            with demo_browser.step("e-card sign-in: the app approves"):
                approved = sscard("ecard", "login", texts[0], "--key", str(key), "--yes")
                if approved.returncode != 0:
                    raise ScenarioFailed(f"e-card sign-in: sscard ecard login failed: {approved.stderr.strip()}")
                report("e-card: " + approved.stderr.strip().splitlines()[0].removeprefix("sscard ecard: "))
            with demo_browser.step("e-card sign-in: the page continues"):
                page.wait_for_url(f"{portal}/", timeout=TIMEOUT * 1000)
                signed_in = demo_browser.signed_in(page)
                report(f"e-card: the portal signed in sub={signed_in.sub}, acr={signed_in.acr}, amr={signed_in.amr}")
                return signed_in, approved.stderr
        finally:
            browser.close()


def _available(chromium: str) -> None:
    reason = demo_browser.unavailable(chromium)
    if reason is not None:
        raise demo_browser.BrowserUnavailable(reason)


# -- reading a QR code from a screenshot, as a phone's camera app does ------------------------------------------


def read_qr(png: bytes) -> list[str]:
    """The texts of the QR codes in a screenshot (Pillow decodes the PNG, zxing-cpp finds the codes)."""
    import io

    import zxingcpp
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        grey = image.convert("L")
    return [found.text for found in zxingcpp.read_barcodes(grey, formats=zxingcpp.BarcodeFormat.QRCode)]
