"""The face check in a real browser: headless Debian Chromium signs in at a portal with the card + PIN (substantial),
then the portal asks for the highest level; the login page offers only the missing check, the face; the test opens
the page's capture link as the citizen's phone would, presses "Look into the camera" at the sandbox vendor, the
vendor's signed verdict arrives at the service, and the login page continues to the portal by itself: the ID token
says `acr=urn:sscard:acr:high` with `face` in `amr`. Then the vendor's faults as the citizen meets them: a verdict
that never arrives (the page says it timed out and a new attempt works), one that arrives after that (acknowledged,
completes nothing), a forged one (refused; the login stays pending), duplicated and replayed ones (once).

The card's answer is posted as `sscard helper` posts it (tests/integration/sso.py), with the software card: the
helper itself through PC/SC is tests/e2e/test_browser_sso.py's subject."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from authsvc.login import pending
from authsvc.tokens import assurance
from card import cryptogram
from card.request_signing import b64url_decode
from tests.e2e.browser import Portal, chromium_page, demo_portal
from tests.fixtures.service import PIN, LiveServer, issue
from tests.fixtures.softcard import evidence, open_card
from tests.integration.liveness.support import FaceHarness, harness

if TYPE_CHECKING:
    from playwright.sync_api import Page

TIMEOUT = 30_000  # ms: the page polls its status every second


@pytest.fixture
def faces(live_server_factory: Callable[..., LiveServer]) -> Iterator[FaceHarness]:
    yield from harness(live_server_factory)


@pytest.fixture
def portal(faces: FaceHarness) -> Iterator[Portal]:
    with demo_portal(faces.runtime, faces.service.url, "社保查询 Portal A", acr_values=list(assurance.LEVELS)) as p:
        yield p


@pytest.fixture
def page(faces: FaceHarness) -> Iterator[Page]:
    with chromium_page() as opened:
        yield opened


def _login_id(page: Page) -> str:
    return page.url.split("/login/", 1)[1].split("?", 1)[0]


def _sign_in_with_the_card(faces: FaceHarness, portal: Portal, page: Page, card: Path) -> None:
    """At substantial: the card + PIN answer the login page's challenge, as sscard helper posts it."""
    from playwright.sync_api import expect

    service = faces.service.url
    page.goto(f"{portal.base}/login?acr={assurance.SUBSTANTIAL}")
    page.wait_for_url(f"{service}/login/*")
    login_id = _login_id(page)
    with httpx.Client(base_url=service, trust_env=False) as helper:
        challenge = b64url_decode(helper.get(f"/login/{login_id}/card").json()["challenge"])
        context = cryptogram.web_context(cryptogram.web_origin(service))
        body = evidence(open_card(card), challenge, "", PIN, context=context)
        assert helper.post(f"/login/{login_id}/card", json=body).status_code == 200
    page.wait_for_url(f"{portal.base}/", timeout=TIMEOUT)
    expect(page.locator("#acr")).to_have_text(assurance.SUBSTANTIAL)


def _step_up(faces: FaceHarness, portal: Portal, page: Page) -> str:
    """The portal asks for high: only the face check is offered. Returns the pending login's id."""
    from playwright.sync_api import expect

    page.goto(f"{portal.base}/login?acr={assurance.HIGH}")
    page.wait_for_url(f"{faces.service.url}/login/*")
    expect(page.locator("#method-face")).to_be_visible()
    expect(page.locator("#method-card")).to_be_hidden()
    expect(page.locator("#method-ecard")).to_be_hidden()
    return _login_id(page)


def _capture(page: Page, button: str = "Look into the camera") -> None:
    """Start the face check on the login page, then do the capture on the "phone" (a second page)."""
    from playwright.sync_api import expect

    link = page.locator("#face-link")
    before = link.get_attribute("href")
    page.locator("#face-button").click()
    expect(page.locator("#face-qr svg")).to_be_visible(timeout=TIMEOUT)
    expect(link).not_to_have_attribute("href", before or "#", timeout=TIMEOUT)  # this attempt's, not the last one's
    capture_url = link.get_attribute("href")
    assert capture_url is not None
    phone = page.context.new_page()
    try:
        phone.goto(capture_url)
        phone.get_by_role("button", name=button).click()
        expect(phone.locator("h1")).to_have_text("Face check done")  # the vendor has posted its verdict
    finally:
        phone.close()


def _pending(faces: FaceHarness, login_id: str) -> dict[str, object]:
    login = pending.get(faces.runtime.store, login_id)
    assert login is not None
    return pending.status(faces.runtime.store, login)


def test_step_up_from_card_and_pin_to_high_with_the_face(
    faces: FaceHarness, portal: Portal, page: Page, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    card = issue(faces.runtime, tmp_path, generation=3)
    _sign_in_with_the_card(faces, portal, page, card.path)
    _step_up(faces, portal, page)
    _capture(page)
    page.wait_for_url(f"{portal.base}/", timeout=TIMEOUT)  # the login page continued by itself
    expect(page.locator("#acr")).to_have_text(assurance.HIGH)
    amr = page.locator("#amr").inner_text().split()
    assert {"sc", "pin", "face", "mfa"} <= set(amr), amr
    assert [d.status for d in faces.sandbox.sent] == [200]
    assert faces.verdict_events() == [("success", None)]


def test_a_verdict_that_never_arrives_times_out_on_the_page_and_a_new_attempt_works(
    faces: FaceHarness, portal: Portal, page: Page, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    card = issue(faces.runtime, tmp_path, generation=3)
    _sign_in_with_the_card(faces, portal, page, card.path)
    login_id = _step_up(faces, portal, page)
    faces.sandbox.faults.callback = "never"
    _capture(page)
    assert faces.sandbox.sent == []
    faces.move_clock(faces.runtime.settings.liveness_session_ttl + 1)
    expect(page.locator("#status")).to_contain_text("did not arrive in time", timeout=TIMEOUT)
    expect(page.locator("#face-button")).to_be_enabled()
    assert _pending(faces, login_id)["status"] == "pending"

    faces.sandbox.faults.callback = None
    faces.move_clock(0)
    _capture(page)
    page.wait_for_url(f"{portal.base}/", timeout=TIMEOUT)
    expect(page.locator("#acr")).to_have_text(assurance.HIGH)


def test_a_forged_verdict_is_refused_and_the_login_is_not_completed(
    faces: FaceHarness, portal: Portal, page: Page, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    card = issue(faces.runtime, tmp_path, generation=3)
    _sign_in_with_the_card(faces, portal, page, card.path)
    login_id = _step_up(faces, portal, page)
    faces.sandbox.faults.callback = "wrong_key"
    _capture(page)
    [forged] = faces.sandbox.sent
    assert forged.status == 403
    assert _pending(faces, login_id)["status"] == "pending"
    expect(page.locator("#status")).to_contain_text("Waiting for the face check", timeout=TIMEOUT)
    assert "/login/" in page.url and faces.verdict_events() == []


def test_a_late_verdict_after_the_page_timed_out_does_not_complete_the_login(
    faces: FaceHarness, portal: Portal, page: Page, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    card = issue(faces.runtime, tmp_path, generation=3)
    _sign_in_with_the_card(faces, portal, page, card.path)
    login_id = _step_up(faces, portal, page)
    faces.sandbox.faults.callback = "late"
    _capture(page)
    faces.move_clock(faces.runtime.settings.liveness_session_ttl + 1)
    expect(page.locator("#status")).to_contain_text("did not arrive in time", timeout=TIMEOUT)
    [late] = faces.sandbox.release()
    assert late.status == 200  # acknowledged, so the vendor stops retrying ...
    assert _pending(faces, login_id)["status"] == "pending"  # ... and it completed nothing
    assert faces.verdict_events() == [("failure", "verdict_late")]
    assert "/login/" in page.url


@pytest.mark.parametrize(("fault", "answers"), [("duplicate", [200, 200]), ("replay", [200, 409])])
def test_duplicated_and_replayed_verdicts_complete_the_login_once(
    faces: FaceHarness, portal: Portal, page: Page, tmp_path: Path, fault: str, answers: list[int]
) -> None:
    from playwright.sync_api import expect

    card = issue(faces.runtime, tmp_path, generation=3)
    _sign_in_with_the_card(faces, portal, page, card.path)
    _step_up(faces, portal, page)
    faces.sandbox.faults.callback = fault
    _capture(page)
    page.wait_for_url(f"{portal.base}/", timeout=TIMEOUT)
    expect(page.locator("#acr")).to_have_text(assurance.HIGH)
    assert [d.status for d in faces.sandbox.sent] == answers
    assert faces.verdict_events() == [("success", None)]
