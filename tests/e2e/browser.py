"""What the browser tests share: headless Debian Chromium (one English page, the browser closed afterwards) and a
demo portal (authsvc/demo_portal.py) registered with the service under test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from authsvc import demo_browser
from authsvc.clients.models import AuthMethod
from authsvc.demo_portal import PortalConfig, create_portal, serve_in_thread
from authsvc.runtime import Runtime
from tests.fixtures.oidc import register_client
from tests.fixtures.service import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Page


@contextlib.contextmanager
def chromium_page() -> Iterator[Page]:
    reason = demo_browser.unavailable()
    if reason is not None:
        pytest.fail(reason)  # never downloaded: the suite needs the system's Chromium
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=demo_browser.CHROMIUM, args=demo_browser.CHROMIUM_ARGS)
        try:
            yield browser.new_context(locale="en-US").new_page()
        finally:
            browser.close()


@dataclass(frozen=True)
class Portal:
    base: str
    name: str


@contextlib.contextmanager
def demo_portal(
    runtime: Runtime, issuer: str, name: str, *, backchannel: bool = False, **registration: Any
) -> Iterator[Portal]:
    """A demo portal on a free port, registered as a confidential client (`registration`: more of its registration,
    e.g. acr_values; `backchannel`: with its back-channel logout URI), stopped afterwards."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    if backchannel:
        registration["backchannel_logout_uri"] = f"{base}/backchannel"
    registered = register_client(
        runtime,
        name=name,
        auth_method=AuthMethod.CLIENT_SECRET_BASIC,
        redirect_uris=[f"{base}/callback"],
        post_logout_redirect_uris=[f"{base}/"],
        **registration,
    )
    assert registered.secret is not None
    config = PortalConfig(name, base, issuer, registered.client_id, registered.secret)
    server = serve_in_thread(create_portal(config), port)
    try:
        yield Portal(base, name)
    finally:
        server.should_exit = True
