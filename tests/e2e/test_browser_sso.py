"""THE browser test: headless Debian Chromium (Playwright) signs in at portal A with the software card through
pcscd + vpcd and a running `sscard helper`, gets into portal B silently, and logging out at A reaches the back
channels of both portals.

The scenario itself is authsvc/demo_browser.py, shared with `authsvc demo`: it fails on the first step that goes
wrong; this test then checks every step's outcome."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from authsvc import demo_browser
from authsvc.tokens.assurance import SUBSTANTIAL
from tests.e2e.browser import demo_portal
from tests.fixtures.service import PIN, LiveServer, free_port, issue

pytestmark = pytest.mark.pcsc


@pytest.fixture
def helper_port() -> int:
    return free_port()


@pytest.fixture
def service(live_server_factory: Callable[..., LiveServer], helper_port: int) -> LiveServer:
    # The login page names the helper's URL (CSP connect-src and the page's fetch); a 1 s retry base keeps a
    # back-channel delivery that failed once within the scenario's wait.
    return live_server_factory(helper_url=f"http://127.0.0.1:{helper_port}", logout_retry_base=1)


@pytest.fixture
def helper(service: LiveServer, helper_port: int, pcscd: str) -> Iterator[demo_browser.Helper]:
    with demo_browser.card_helper(service.url, port=helper_port, reader=pcscd, pin=PIN) as running:
        yield running


@pytest.fixture
def portals(service: LiveServer) -> Iterator[list[str]]:
    with (
        demo_portal(service.runtime, service.url, "社保查询 Portal A", backchannel=True) as a,
        demo_portal(service.runtime, service.url, "医保服务 Portal B", backchannel=True) as b,
    ):
        yield [a.base, b.base]


def test_a_citizen_signs_in_with_the_card_then_sso_then_logout_everywhere(
    service: LiveServer,
    helper: demo_browser.Helper,
    portals: list[str],
    emulator,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    card = issue(service.runtime, tmp_path, generation=3)
    steps: list[str] = []
    with emulator(card.path):
        outcome = demo_browser.run(service.url, *portals, report=steps.append)

    # Portal A: the card signed in, at the level of card + PIN.
    assert outcome.a.sub and outcome.a.sid
    assert outcome.a.acr == SUBSTANTIAL and "pin" in outcome.a.amr
    # Portal B: the same session and the same (public) subject, without the login page or the card again.
    assert outcome.provider_pages_at_b == []
    assert (outcome.b.sid, outcome.b.sub, outcome.b.acr) == (outcome.a.sid, outcome.a.sub, outcome.a.acr)
    signings = [line for line in helper.lines if "asks you to sign in" in line]
    assert len(signings) == 1 and "社保查询 Portal A" in signings[0], helper.lines
    # Logout: one verified logout token for the session at each portal, and both ended their local sessions.
    assert [e["logouts"] for e in outcome.events] == [[outcome.a.sid], [outcome.a.sid]]
    assert [e["sessions"] for e in outcome.events] == [0, 0]
    assert [s.split(":")[0] for s in steps] == ["browser", "portal A", "portal A", "portal B", "logout", "logout"]
