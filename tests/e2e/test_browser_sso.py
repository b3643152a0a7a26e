"""THE browser test: headless Debian Chromium (Playwright) signs in at portal A with the software card through
pcscd + vpcd and a running `sscard helper`, gets into portal B silently, and logging out at A reaches the back
channels of both portals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from authsvc.app import create_app
from authsvc.cli import prepare
from authsvc.clients.models import AuthMethod
from authsvc.demo_portal import PortalConfig, create_portal, serve_in_thread
from authsvc.runtime import Runtime
from tests.fixtures.oidc import register_client
from tests.fixtures.service import PIN, free_port, issue

pytestmark = pytest.mark.pcsc
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Service:
    url: str
    runtime: Runtime
    helper_port: int


@pytest.fixture
def service(settings_factory) -> Iterator[Service]:  # type: ignore[no-untyped-def]
    port, helper_port = free_port(), free_port()
    settings = settings_factory(
        issuer=f"http://127.0.0.1:{port}", helper_url=f"http://127.0.0.1:{helper_port}", logout_retry_base=1
    )
    rt = Runtime(settings)
    prepare(rt, migrate=False)
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime=rt), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the service did not start")
        time.sleep(0.02)
    yield Service(settings.issuer, rt, helper_port)
    server.should_exit = True
    thread.join(timeout=10)
    rt.close()


def _portal(service: Service, name: str) -> tuple[str, uvicorn.Server]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    registered = register_client(
        service.runtime,
        name=name,
        auth_method=AuthMethod.CLIENT_SECRET_BASIC,
        redirect_uris=[f"{base}/callback"],
        post_logout_redirect_uris=[f"{base}/"],
        backchannel_logout_uri=f"{base}/backchannel",
    )
    assert registered.secret is not None
    config = PortalConfig(name, base, service.url, registered.client_id, registered.secret)
    return base, serve_in_thread(create_portal(config), port)


@pytest.fixture
def helper(service: Service, tmp_path: Path, pcscd: str) -> Iterator[subprocess.Popen[str]]:
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "card", "helper", "--service", service.url, "--port", str(service.helper_port),
            "--reader", pcscd, "--pin-file", str(pin_file),
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stderr is not None
    assert "listening on" in proc.stderr.readline()
    yield proc
    proc.terminate()
    proc.wait(timeout=10)


def _events(base: str) -> dict[str, object]:
    return httpx.get(f"{base}/events", timeout=5).json()


def test_a_citizen_signs_in_with_the_card_then_sso_then_logout_everywhere(
    service: Service, helper: subprocess.Popen[str], emulator, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    portal_a, server_a = _portal(service, "社保查询 Portal A")
    portal_b, server_b = _portal(service, "医保服务 Portal B")
    card = issue(service.runtime, tmp_path, generation=3)
    try:
        with emulator(card.path), sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_context(locale="en-US").new_page()

            page.goto(f"{portal_a}/")
            page.click("#sign-in")
            page.wait_for_url(f"{service.url}/login/*")
            expect(page.locator("h1")).to_contain_text("社保查询 Portal A")
            expect(page.locator("html")).to_have_attribute("lang", "en")
            page.get_by_role("button", name="Sign in with the card").click()  # the helper signs, the page goes on
            page.wait_for_url(f"{portal_a}/", timeout=60_000)
            who = page.locator("#who")
            expect(who).to_contain_text("Signed in as")
            subject = who.locator("code").first.inner_text()

            page.goto(f"{portal_b}/")
            page.click("#sign-in")  # no login page: the SSO session signs the browser in
            page.wait_for_url(f"{portal_b}/")
            expect(page.locator("#who")).to_contain_text(subject)

            page.goto(f"{portal_a}/")
            page.click("#sign-out")
            page.wait_for_url(f"{portal_a}/?state=bye")
            browser.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            events = [_events(portal_a), _events(portal_b)]
            if all(e["logouts"] for e in events):
                break
            time.sleep(0.2)
        assert [len(e["logouts"]) for e in events] == [1, 1], json.dumps(events)
        assert events[0]["logouts"] == events[1]["logouts"]  # the same session's sid
        assert [e["sessions"] for e in events] == [0, 0]  # both portals ended their local sessions
    finally:
        server_a.should_exit = server_b.should_exit = True
