"""Liveness verdict callbacks the service verifies and applies per second, beside two baselines measured in the same
run. Prints figures; asserts nothing about time.

- callbacks: the service runs as in production (`authsvc serve --workers 2` on PostgreSQL and Redis, a scratch
  database, the liveness vendor configured through its settings and the sealed keys of keys/channel_keys/). N pending
  logins that a card + PIN identified, each with an open liveness session, are prepared; then N distinct verdict
  callbacks signed by the vendor's ECDSA P-256 key (authsvc/liveness/wire.py, as the sandbox signs them) are posted
  with --concurrency in flight (httpx, asyncio, on the same machine and cores). Each one is verified, its nonce spent
  in Redis, the session row claimed by its conditional UPDATE, the login completed in Redis, the audit row written,
  and committed, before the 200. The figure is sessions passed (counted in the database afterwards) over the wall time.
- insert: PostgreSQL's own one-row INSERT + COMMIT rate in the same run (pgbench if installed, as bench/payments.py).
- verify: one ECDSA P-256 signature verification alone, in this process, on one core: the floor of the
  cryptography each callback needs.

    python bench/liveness_callbacks.py                      # 3000 callbacks, 16 in flight, 2 workers
    python bench/liveness_callbacks.py --callbacks 1000 --insert-seconds 5

Needs PostgreSQL (127.0.0.1:5432, database `test`, trust auth) and Redis (127.0.0.1:6379).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from authsvc.cli import prepare  # noqa: E402
from authsvc.database import unit_of_work  # noqa: E402
from authsvc.liveness import wire  # noqa: E402
from authsvc.liveness.models import LivenessSession  # noqa: E402
from authsvc.login import pending  # noqa: E402
from authsvc.registry import service as registry  # noqa: E402
from authsvc.runtime import Runtime  # noqa: E402
from authsvc.tokens import assurance  # noqa: E402
from bench.harness import (  # noqa: E402
    create_database,
    drop_database,
    pg_url,
    scratch_settings,
    server_env,
    start_server,
    timed_posts,
)
from bench.payments import bench_insert  # noqa: E402
from keys.channel_keys import import_key  # noqa: E402
from keys.signed_messages import signed_message  # noqa: E402

PORT = 18150  # this bench's range: 18150-18159
APP_ID = "sscard-bench"
VENDOR = "bench"
CALLBACK_PATH = f"/v1/liveness/callbacks/{VENDOR}"
SSN, NAME = "110105199003072813", "张伟"


def setup_service(home: Path, count: int) -> tuple[dict[str, str], str, str, wire.SigningKey, list[tuple[str, str]]]:
    """A scratch database with the vendor configured as an operator would (settings plus imported keys), a
    cardholder, and `count` pending logins each waiting for its face verdict: their (vendor session id, biz_ref)."""
    url, dbname = create_database()
    liveness = {"liveness_vendor": VENDOR, "liveness_base_url": "http://127.0.0.1:9", "liveness_app_id": APP_ID}
    settings = scratch_settings(home, url, PORT, **liveness)
    runtime = Runtime(settings)
    prepare(runtime, migrate=True)
    vendor_key, ours = wire.SigningKey.generate("vendor-1"), wire.SigningKey.generate("sscard-1")
    sessions: list[tuple[str, str]] = []
    expires = datetime.now(UTC) + timedelta(hours=1)
    with unit_of_work(runtime.sessions) as db:
        holder = registry.add_cardholder(db, ssn=SSN, name=NAME)
        holder.photo_ref = "gallery:bench"
        for kind, data, serial in (
            ("liveness-api-key", ours.private_pem(), ours.key_id),
            ("liveness-vendor-key", vendor_key.public_pem(), vendor_key.key_id),
        ):
            import_key(db, runtime.sealer, channel="liveness", kind=kind, data=data, serial=serial)
        request = pending.LoginRequest(
            client_id="bench-portal",
            client_name="bench",
            redirect_uri="http://127.0.0.1:9/cb",
            scope=["openid"],
            code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            acr=assurance.HIGH,
            locale="en",
        )
        for n in range(count):
            login = pending.create(runtime.store, request, pending.new_browser_secret(), 3600)
            pending.complete(
                runtime.store, login.login_id, subject=holder.subject, amr=["sc", "hwk", "pin"], method="card"
            )
            session_id, biz_ref = f"LV{n:020d}", secrets.token_urlsafe(24)
            db.add(
                LivenessSession(
                    biz_ref=biz_ref,
                    vendor=VENDOR,
                    vendor_session_id=session_id,
                    login_id=login.login_id,
                    subject=holder.subject,
                    reference_id="gallery:bench",
                    expires_at=expires,
                )
            )
            sessions.append((session_id, biz_ref))
    runtime.close()
    return server_env(settings, **liveness), url, dbname, vendor_key, sessions


def signed(vendor_key: wire.SigningKey, session_id: str, biz_ref: str) -> tuple[dict[str, str], bytes]:
    now = time.time()
    body = wire.callback_body(session_id, biz_ref, live=True, score=96.5, event_time=datetime.fromtimestamp(now, UTC))
    return {
        **wire.sign_headers(vendor_key, wire.CALLBACK, APP_ID, body, now=now),
        "Content-Type": "application/json",
    }, body


def bench_callbacks(args: argparse.Namespace, home: Path) -> tuple[dict[str, Any], str, str]:
    warmup = 100
    env, url, dbname, vendor_key, sessions = setup_service(home, args.callbacks + warmup)
    # Signed just before sending: each stays inside the 5-minute past-only window for the whole run.
    warmup_deliveries = [signed(vendor_key, *s) for s in sessions[:warmup]]
    deliveries = [signed(vendor_key, *s) for s in sessions[warmup:]]
    server = start_server(env, PORT, args.workers)
    run = timed_posts(server, PORT, url, dbname, CALLBACK_PATH, warmup_deliveries, deliveries, args.concurrency)
    with psycopg.connect(pg_url(url)) as conn:
        passed = conn.execute("SELECT count(*) FROM liveness_sessions WHERE state = 'passed'").fetchone()[0]  # type: ignore[index]
        audited = conn.execute(
            "SELECT count(*) FROM audit_events WHERE event = 'liveness_verdict' AND outcome = 'success'"
        ).fetchone()[0]  # type: ignore[index]
    applied = passed - warmup
    return (
        {
            "callbacks_sent": len(deliveries),
            "http_statuses": run.statuses,
            "sessions_passed": applied,
            "logins_completed_audited": audited - warmup,
            **run.figures(applied),
            "machine_load_average": os.getloadavg()[0],
            "workers": args.workers,
            "concurrency": args.concurrency,
        },
        url,
        dbname,
    )


def bench_verify(rounds: int) -> dict[str, Any]:
    key = wire.SigningKey.generate("vendor-1")
    ring = wire.KeyRing.of((key.key_id, key.private_key.public_key()))
    message = signed_message(wire.CALLBACK, APP_ID, "1796000000", "n" * 32, b"x" * 160)
    signature = key.sign(message)
    started = time.perf_counter()
    for _ in range(rounds):
        wire.SCHEME.verify_signature(ring, key.key_id, message, signature)
    each = (time.perf_counter() - started) / rounds
    return {"rounds": rounds, "us_per_verification": round(each * 1e6, 1), "per_second_one_core": round(1 / each)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callbacks", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--insert-seconds", type=int, default=10)
    parser.add_argument("--verify-rounds", type=int, default=5000)
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sscard-bench-liveness-") as tmp:
        dbname = None
        try:
            figures["callbacks"], url, dbname = bench_callbacks(args, Path(tmp))
            figures["insert"] = bench_insert(url, args.concurrency, args.insert_seconds)
        finally:
            if dbname is not None:
                drop_database(dbname)
    figures["verify"] = bench_verify(args.verify_rounds)
    applied = figures["callbacks"]["applied_per_second"]
    figures["callbacks_to_insert_ratio"] = round(applied / figures["insert"]["inserts_per_second"], 3)
    figures["callbacks_to_one_core_verifications_ratio"] = round(applied / figures["verify"]["per_second_one_core"], 3)
    figures["when"] = datetime.now(UTC).isoformat(timespec="seconds")
    print(json.dumps(figures, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
