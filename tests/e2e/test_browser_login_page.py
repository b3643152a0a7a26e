"""The login page in a real browser (headless Debian Chromium) where the deployment lacks a method the level needs:
a service without a face-liveness vendor, a portal asking for the highest level."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from authsvc.tokens import assurance
from tests.e2e.browser import chromium_page
from tests.fixtures.oidc import register_client
from tests.fixtures.service import LiveServer
from tests.integration.sso import request_for

if TYPE_CHECKING:
    from playwright.sync_api import Page

TIMEOUT = 30_000  # ms


@pytest.fixture
def page() -> Iterator[Page]:
    with chromium_page() as opened:
        yield opened


def test_the_page_says_the_level_needs_a_method_this_deployment_lacks(
    live_server_factory: Callable[..., LiveServer], page: Page
) -> None:
    from playwright.sync_api import expect

    service = live_server_factory()  # no liveness vendor: no face check here, so the highest level is out of reach
    portal = register_client(service.runtime, name="养老金领取", acr_values=list(assurance.LEVELS))
    request = request_for(portal, acr_values=assurance.HIGH)
    page.goto(f"{service.url}/authorize?{httpx.QueryParams(request.params)}")
    page.wait_for_url(f"{service.url}/login/*")
    login_id = page.url.split("/login/", 1)[1].split("?", 1)[0]
    # No method is offered (the card would lead nowhere), and the page says why, also after its status polls.
    for _ in range(2):
        with page.expect_response(lambda r: r.url.endswith(f"/login/{login_id}/status"), timeout=TIMEOUT):
            pass
        expect(page.locator("#unavailable")).to_be_visible()
        for method in ("card", "ecard", "face"):
            expect(page.locator(f"#method-{method}")).to_be_hidden()
