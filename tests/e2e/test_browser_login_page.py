"""The login page in a real browser (headless Debian Chromium) where the deployment lacks a method the level needs:
a service without a face-liveness vendor, a portal asking for the highest level. The card + PIN is posted as
`sscard helper` posts it, with the software card (tests/e2e/test_browser_sso.py drives the helper itself)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from authsvc import demo_browser
from authsvc.tokens import assurance
from card import cryptogram
from card.request_signing import b64url_decode
from tests.fixtures.oidc import register_client
from tests.fixtures.service import PIN, LiveServer, issue
from tests.fixtures.softcard import evidence, open_card
from tests.integration.sso import request_for

if TYPE_CHECKING:
    from playwright.sync_api import Page

TIMEOUT = 30_000  # ms


@pytest.fixture
def page() -> Iterator[Page]:
    reason = demo_browser.unavailable()
    if reason is not None:
        pytest.fail(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=demo_browser.CHROMIUM, args=demo_browser.CHROMIUM_ARGS)
        try:
            yield browser.new_context(locale="en-US").new_page()
        finally:
            browser.close()


def test_the_page_keeps_saying_a_needed_method_is_unavailable(
    live_server_factory: Callable[..., LiveServer], page: Page, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    service = live_server_factory()  # no liveness vendor: no face check here
    portal = register_client(service.runtime, name="养老金领取", acr_values=list(assurance.LEVELS))
    card = issue(service.runtime, tmp_path, generation=3)
    request = request_for(portal, acr_values=assurance.HIGH)
    page.goto(f"{service.url}/authorize?{httpx.QueryParams(request.params)}")
    page.wait_for_url(f"{service.url}/login/*")
    expect(page.locator("#method-card")).to_be_visible()
    expect(page.locator("#unavailable")).to_be_hidden()
    login_id = page.url.split("/login/", 1)[1].split("?", 1)[0]
    with httpx.Client(base_url=service.url, trust_env=False) as helper:
        challenge = b64url_decode(helper.get(f"/login/{login_id}/card").json()["challenge"])
        context = cryptogram.web_context(cryptogram.web_origin(service.url))
        body = evidence(open_card(card.path), challenge, "", PIN, context=context)
        answer = helper.post(f"/login/{login_id}/card", json=body)
    # Card + PIN reached substantial; high needs the face too, which this deployment cannot check.
    assert answer.json()["status"] == "partial" and answer.json()["missing"] == []
    expect(page.locator("#method-card")).to_be_hidden(timeout=TIMEOUT)
    # The page polls its status every second: after further polls it still says why nothing is offered.
    for _ in range(2):
        with page.expect_response(lambda r: r.url.endswith(f"/login/{login_id}/status"), timeout=TIMEOUT):
            pass
        expect(page.locator("#unavailable")).to_be_visible()
    expect(page.locator("#method-face")).to_be_hidden()
    expect(page.locator("#method-ecard")).to_be_hidden()
