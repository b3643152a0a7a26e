"""Headless Debian Chromium for the browser tests: one English page, the browser closed afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from authsvc import demo_browser

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
