"""Browser single sign-on, end to end, as a citizen meets it, in headless Debian Chromium driven by Playwright.

Portal A sends the browser to the login page; `sscard helper` signs the pending login with the software card in
vpcd; the browser lands back on portal A signed in. Portal B then signs in silently (same SSO session, no login
page). Logging out at A ends the session, and both portals' back channels receive a logout token they verified.

The scenario exists once, here: `authsvc demo` runs it and prints each step; tests/e2e/test_browser_sso.py runs it
and asserts the outcome. `run` raises `ScenarioFailed` naming the first step that did not do what it should, so a
caller cannot mistake a half-run scenario for a working one.

Playwright is imported only inside `run`: it is a test and demo dependency (the `test` extra), never the service's.
No browser is ever downloaded: Debian's /usr/bin/chromium is used.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from playwright.sync_api import Frame, Page, Response

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # runs as root in containers, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SIGN_IN_TIMEOUT = 60.0  # the helper waits for the card, the card computes, the page polls its status every second
LOGOUT_TIMEOUT = 30.0  # back-channel deliveries start right after the logout; this only bounds a broken run
_ROOT = Path(__file__).resolve().parents[1]


class ScenarioFailed(Exception):
    """A step of the scenario did not do what it should; the message names the step."""


class BrowserUnavailable(ScenarioFailed):
    """Playwright or Chromium is missing, or Chromium would not start: nothing was tried."""


@dataclass(frozen=True)
class SignedIn:
    """What a portal shows about its signed-in citizen (the claims of the ID token it verified)."""

    sub: str
    acr: str
    amr: list[str]
    sid: str


@dataclass(frozen=True)
class Outcome:
    a: SignedIn
    b: SignedIn
    provider_pages_at_b: list[str]  # provider URLs the browser displayed while portal B signed in (none: silent)
    events: list[dict[str, Any]]  # each portal's /events after the logout: verified logout tokens' sids, sessions


def unavailable(chromium: str = CHROMIUM) -> str | None:
    """Why the browser scenario cannot run here, or None when it can be tried."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[test]'; ./dev demo does)"
    if not os.access(chromium, os.X_OK):
        return f"Chromium is not installed at {chromium} (apt-get install chromium; ./dev demo does)"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Turn whatever went wrong inside a step (a Playwright expectation, a timeout, HTTP) into ScenarioFailed."""
    from playwright.sync_api import Error as PlaywrightError

    try:
        yield
    except ScenarioFailed:
        raise
    except (AssertionError, PlaywrightError, httpx.HTTPError, ValueError) as exc:
        raise ScenarioFailed(f"{name}: {_first_line(exc)}") from exc


def signed_in(page: Page) -> SignedIn:
    from playwright.sync_api import expect

    expect(page.locator("#who")).to_contain_text("Signed in as")
    return SignedIn(
        sub=page.locator("#sub").inner_text(),
        acr=page.locator("#acr").inner_text(),
        amr=page.locator("#amr").inner_text().split(),
        sid=page.locator("#sid").inner_text(),
    )


def _events(base: str) -> dict[str, Any]:
    answer = httpx.get(f"{base}/events", timeout=5)
    answer.raise_for_status()
    return answer.json()


def run(
    issuer: str,
    portal_a: str,
    portal_b: str,
    *,
    report: Callable[[str], None] = lambda _text: None,
    chromium: str = CHROMIUM,
) -> Outcome:
    """Run the scenario against a service at `issuer` and two demo portals (authsvc/demo_portal.py) signed up to
    it with back-channel logout; `sscard helper` must listen at the service's helper URL with a card in reader.

    `report` gets one line per step as it happens. Raises BrowserUnavailable or ScenarioFailed."""
    reason = unavailable(chromium)
    if reason is not None:
        raise BrowserUnavailable(reason)
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright

    portal_a, portal_b = portal_a.rstrip("/"), portal_b.rstrip("/")
    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        except PlaywrightError as exc:
            raise BrowserUnavailable(f"Chromium ({chromium}) cannot start: {_first_line(exc)}") from exc
        try:
            # English, so that the steps below can find the login page's button by its English name.
            page = browser.new_context(locale="en-US").new_page()

            with step("portal A: to the login page"):
                page.goto(f"{portal_a}/")
                portal_name = page.locator("h1").inner_text()
                report(f"browser: headless Chromium opens portal A ({portal_a}/) and presses Sign in")
                page.click("#sign-in")
                page.wait_for_url(f"{issuer}/login/*")
                expect(page.locator("h1")).to_contain_text(portal_name)  # the citizen sees who asks
                expect(page.locator("html")).to_have_attribute("lang", "en")
                report(f"portal A: sent to the login page of {issuer} for 「{portal_name}」; it asks sscard helper")

            with step("portal A: sign in with the card through sscard helper"):
                # The helper answers the page once the card has signed (or failed to): a refusal ends the step
                # at once, with the helper's reason, instead of at the timeout.
                def helper_answer(response: Response) -> bool:
                    return response.url.endswith("/sign") and response.request.method == "POST"

                with page.expect_response(helper_answer, timeout=SIGN_IN_TIMEOUT * 1000) as answered:
                    page.get_by_role("button", name="Sign in with the card").click()
                helper_said = answered.value.json()
                if helper_said.get("status") != "ok":
                    refusal = helper_said.get("message") or helper_said.get("error")
                    raise ScenarioFailed(f"portal A: sscard helper answered the login page: {refusal}")
                try:
                    page.wait_for_url(f"{portal_a}/", timeout=SIGN_IN_TIMEOUT * 1000)
                except PlaywrightError as exc:
                    # Still on the login page: its status line says what the helper or the service answered.
                    status = page.locator("#status").all_inner_texts() if "/login/" in page.url else []
                    raise ScenarioFailed(
                        f"portal A: not back from the login page ({page.url}): {' '.join(status) or _first_line(exc)}"
                    ) from exc
                a = signed_in(page)
                if not a.sid:  # without it, neither SSO nor back-channel logout could be told apart
                    raise ScenarioFailed("portal A: the ID token carries no sid")
                report(f"portal A: signed in as sub={a.sub}, acr={a.acr}, amr={a.amr}")

            with step("portal B: single sign-on"):
                page.goto(f"{portal_b}/")
                shown: list[str] = []  # pages the browser displayed; redirects through the provider are not pages

                def displayed(frame: Frame) -> None:
                    if frame == page.main_frame:
                        shown.append(frame.url)

                page.on("framenavigated", displayed)
                # The next page shown ends the wait, either one: a login page means no single sign-on, said at once.
                # (Not wait_for_url: portal B's page is already at the URL it comes back to.)
                with page.expect_navigation(
                    url=lambda url: url == f"{portal_b}/" or url.startswith(f"{issuer}/login/")
                ):
                    page.click("#sign-in")
                page.remove_listener("framenavigated", displayed)
                provider_pages = [url for url in shown if url.startswith(f"{issuer}/")]
                if provider_pages:
                    raise ScenarioFailed(f"portal B: the provider showed {provider_pages[0]}: no single sign-on")
                b = signed_in(page)
                if b.sid != a.sid:
                    raise ScenarioFailed(f"portal B: signed in under another session (sid {b.sid} ≠ {a.sid})")
                report(f"portal B: signed in without a second card login (same sid {b.sid[:8]}…)")

            with step("logout at portal A"):
                page.goto(f"{portal_a}/")
                page.click("#sign-out")
                page.wait_for_url(f"{portal_a}/?state=bye")
                expect(page.locator("#sign-in")).to_be_visible()
                report("logout: portal A sent the browser through the provider's logout and back (state=bye)")

            with step("logout: back channels"):
                events = _wait_for_logout_tokens([portal_a, portal_b], a.sid)
                page.goto(f"{portal_b}/")  # B's cookie is still in the browser; B ended its session on the token
                expect(page.locator("#sign-in")).to_be_visible()
                report("logout: back-channel logout token received by A and B (verified); portal B is signed out too")
        finally:
            browser.close()
    return Outcome(a, b, provider_pages, events)


def _wait_for_logout_tokens(portals: list[str], sid: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + LOGOUT_TIMEOUT
    while True:
        events = [_events(base) for base in portals]
        if all(sid in e["logouts"] for e in events):
            return events
        if time.monotonic() > deadline:
            missing = [base for base, e in zip(portals, events, strict=True) if sid not in e["logouts"]]
            raise ScenarioFailed(f"logout: no logout token for sid {sid} reached {', '.join(missing)}")
        time.sleep(0.2)


@dataclass
class Helper:
    """A running `sscard helper`; `lines` collects what it printed after it started listening."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)


@contextlib.contextmanager
def card_helper(
    service: str, *, port: int, reader: str, pin: str, on_line: Callable[[str], None] = lambda _line: None
) -> Iterator[Helper]:
    """`sscard helper --service SERVICE --port PORT --reader READER`, the PIN from $SSCARD_PIN (its automation
    source), as a subprocess; yields once it listens, stops it on exit. Raises ScenarioFailed if it cannot start."""
    from card.helper import PIN_ENV

    # `card` sits next to `authsvc`: the child finds it even when the project is not installed.
    pythonpath = os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath, PIN_ENV: pin}
    command = [sys.executable, "-m", "card", "helper", "--service", service, "--port", str(port), "--reader", reader]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)  # noqa: S603
    assert process.stderr is not None
    helper = Helper(process)
    try:
        first = process.stderr.readline()
        if "listening on" not in first:
            process.wait(timeout=10)
            raise ScenarioFailed(f"sscard helper did not start: {(first + process.stderr.read()).strip()}")

        def follow() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                helper.lines.append(line.rstrip("\n"))
                on_line(line.rstrip("\n"))

        reader_thread = threading.Thread(target=follow, daemon=True, name="sscard-helper-stderr")
        reader_thread.start()
        yield helper
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
