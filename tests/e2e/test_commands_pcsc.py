"""The console commands as an operator runs them: `sscard emulate` + `sscard login` against the service,
`authsvc serve` with several workers on PostgreSQL + Redis, and the README's `authsvc demo`."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from authsvc.config import Settings
from tests.fixtures.backends import REDIS_URL, empty_tables
from tests.fixtures.pcsc import vpcd_slot
from tests.fixtures.service import PIN, LiveServer, add_kiosk, free_port, issue

pytestmark = pytest.mark.pcsc
ROOT = Path(__file__).resolve().parents[2]
# How each step line of the demo's browser sign-on begins (the rest names subjects, sids and ports).
DEMO_BROWSER_STEPS = [
    "browser: headless Chromium opens portal A",
    "portal A: sent to the login page",
    "portal A: signed in as sub=",
    "portal B: signed in without a second card login (same sid",
    "logout: portal A sent the browser through the provider's logout and back",
    "logout: back-channel logout token received by A and B",
]


def _sscard_login(url: str, kiosk: Path, reader: str, pin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "card",
            "login",
            "--service",
            url,
            "--terminal",
            str(kiosk),
            "--reader",
            reader,
            "--pin",
            pin,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_sscard_login_prints_one_json_object_or_one_line_reason(
    live_server: LiveServer,
    emulator,
    pcscd: str,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    kiosk = add_kiosk(live_server.runtime, tmp_path)
    card = issue(live_server.runtime, tmp_path, generation=3)
    with emulator(card.path):
        wrong = _sscard_login(live_server.url, kiosk, pcscd, "111111")
        ok = _sscard_login(live_server.url, kiosk, pcscd, PIN)
    assert wrong.returncode == 3 and wrong.stdout == ""
    assert wrong.stderr.strip() == "sscard login: wrong PIN, 2 tries left"
    assert ok.returncode == 0, ok.stderr
    answer = json.loads(ok.stdout)
    assert answer["token_type"] == "Bearer" and answer["apdus"] == 7
    assert card.ssn not in ok.stdout and answer["identity"]["ssn"].count("*") == 8
    missing = _sscard_login(live_server.url, kiosk, "Nope 00 00", PIN)
    assert missing.returncode == 5 and missing.stderr.count("\n") == 1


def test_serve_with_several_workers_shares_state_through_postgresql_and_redis(
    pg_database: str,
    kek: str,
    pcscd: str,
    emulator,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    port = free_port()
    empty_tables(pg_database)
    settings = Settings(
        home=tmp_path,
        database_url=pg_database,
        redis_url=REDIS_URL,
        kek=kek,
        redis_prefix=f"sscard-test:{secrets.token_hex(6)}:",
        issuer=f"http://127.0.0.1:{port}",
    )
    from authsvc.cli import prepare
    from authsvc.runtime import Runtime

    rt = Runtime(settings)
    prepare(rt, migrate=False)
    kiosk = add_kiosk(rt, tmp_path)
    card = issue(rt, tmp_path, generation=2)
    env = {
        **os.environ,
        "SSCARD_DATABASE_URL": settings.database_url,
        "SSCARD_REDIS_URL": settings.redis_url,
        "SSCARD_REDIS_PREFIX": settings.redis_prefix,
        "SSCARD_KEK": settings.kek or "",
        "SSCARD_ISSUER": settings.issuer,
        "SSCARD_HOME": str(tmp_path),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "authsvc", "serve", "--port", str(port), "--workers", "2", "--log-level", "warning"],
        env=env,
        cwd=ROOT,
    )
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{settings.issuer}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with emulator(card.path):
            results = [_sscard_login(settings.issuer, kiosk, pcscd, PIN) for _ in range(4)]
    finally:
        server.terminate()
        server.wait(timeout=20)
        rt.close()
    assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]


def test_serve_refuses_workers_on_embedded(tmp_path: Path) -> None:
    env = {**os.environ, "SSCARD_HOME": str(tmp_path)}
    env.pop("SSCARD_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "authsvc", "serve", "--workers", "2"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "runs one worker" in result.stderr


def test_the_readme_demo_runs_on_the_embedded_default(pcscd: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSCARD_")}
    env["SSCARD_HOME"] = str(tmp_path / "var")
    port = free_port()
    demo = [sys.executable, "-m", "authsvc", "demo", "--exit", "--port", str(port)]
    with vpcd_slot():
        first, again = (
            subprocess.run(demo, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300) for _ in range(2)
        )
    for run in (first, again):  # the second run reuses its cards, kiosk, portals and keys
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.count("ID token verified") == 2
        assert "acr=urn:sscard:acr:substantial" in run.stdout and "(7 APDUs)" in run.stdout
        # The browser part (authsvc/demo_browser.py, whose outcome test_browser_sso.py asserts) ran to its end.
        steps = [
            line.removeprefix("==> ")
            for line in run.stdout.splitlines()
            if line.startswith(("==> browser:", "==> portal A:", "==> portal B:", "==> logout:"))
        ]
        assert len(steps) == len(DEMO_BROWSER_STEPS), run.stdout
        assert all(step.startswith(expected) for step, expected in zip(steps, DEMO_BROWSER_STEPS, strict=True)), steps
        assert "acr=urn:sscard:acr:substantial, amr=['sc', 'hwk', 'pin', 'mfa']" in steps[2]
        # The payments part (authsvc/demo_payments.py): paid through both sandboxes, reconciled, ledger agreeing.
        assert "paid, paid by charged; linked account balance 1000.00 → 700.00 yuan" in run.stdout
        assert "callback delivered, order paid" in run.stdout
        assert "'channel_only': 0, 'ours_only': 0, 'amount_mismatch': 0} → resolved" in run.stdout
        assert '"ok": true' in run.stdout and '"order_disagreements"' in run.stdout
        # The real person and the e-card (authsvc/ecard/demo.py, asserted in detail by test_browser_ecard.py): card +
        # PIN, then only the face, the app enrolled, a QR sign-in at portal B, the lost card taking its e-card along.
        assert "card + PIN done in the browser (sscard helper); the page asks for the face" in run.stdout
        assert "live face passed" in run.stdout and "e-card: enrolled " in run.stdout
        assert "acr=urn:sscard:acr:low, amr=['hwk']" in run.stdout
        assert "e-cards enrolled with it: 1 revoked (card_reported_lost)" in run.stdout
        assert "its holder is signed out everywhere: 2 SSO session(s) ended" in run.stdout  # enrolment's and B's
        assert "==> done: kiosk logins with both card generations, contributions paid" in run.stdout
        assert "an e-card enrolled, signed in by QR code and revoked with its lost card" in run.stdout
    assert (tmp_path / "var" / "sscard.db").exists() and (tmp_path / "var" / "keys" / "kek").exists()
