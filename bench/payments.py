"""Payments figures: callbacks applied per second beside PostgreSQL's own single-row insert rate, and reconciliation
rows per second on a million-line statement. Prints figures; asserts nothing about time.

- callbacks: the service runs as in production (`authsvc serve --workers 2` on PostgreSQL and Redis, a scratch
  database, WeChat Pay configured through its settings and the sealed keys of keys/channel_keys/). N pending orders
  are inserted, then N distinct, properly signed WeChat Pay payment callbacks (SHA256-RSA over
  `timestamp\\nnonce\\nbody\\n`, the resource under AES-256-GCM with the APIv3 key, built as
  tests/integration/payments/test_callbacks.py builds them) are posted with --concurrency in flight (httpx, asyncio,
  on the same machine and cores as the service). Each one is verified, its nonce spent in Redis, recorded in the
  inbox, the order locked and paid and its ledger entry posted, and committed, before the 204. The figure is applied
  rows (counted in the database afterwards) over the wall time.
- insert: the raw single-row insert rate of the same PostgreSQL in the same run: pgbench (if installed) running
  `INSERT INTO bench_rows (v) VALUES (...)`, one row per transaction, with the same number of clients; otherwise an
  equivalent psycopg loop per client. The ratio callbacks/insert says how much of the database's durable-commit budget
  a callback costs.
- reconciliation: a million-line WeChat Pay trade bill (payments/channels/wechatpay_bill.render) against a database
  holding the million matching paid orders (inserted with COPY), a few discrepancies planted. Parse rate (the bill
  parser alone, no database), then the full `reconcile`: stage (parse + COPY into the staging table), match
  (set-based SQL) and resolve, each timed; peak RSS of the process shows the memory stays bounded.

    python bench/payments.py                              # everything, 5000 callbacks, 1,000,000 lines
    python bench/payments.py --parts callbacks,insert --callbacks 10000 --concurrency 32
    python bench/payments.py --parts reconciliation --lines 200000

Needs PostgreSQL (127.0.0.1:5432, database `test`, trust auth) and Redis (127.0.0.1:6379); pgbench is optional.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from authsvc.cli import prepare  # noqa: E402
from authsvc.database import unit_of_work  # noqa: E402
from authsvc.runtime import Runtime  # noqa: E402
from bench.harness import (  # noqa: E402
    create_database,
    drop_database,
    pg_url,
    scratch_settings,
    server_env,
    start_server,
    timed_posts,
)
from payments.channels.wechatpay_bill import BillRow, parse, render  # noqa: E402
from payments.reconciliation.matching import CHINA  # noqa: E402
from payments.reconciliation.service import StatementSource, reconcile, report  # noqa: E402
from tests.unit.payments_channels.test_wechatpay import APIV3_KEY, PUB_KEY_ID, TRANSACTION, encrypt  # noqa: E402
from tests.unit.payments_channels.test_wechatpay import headers as wx_headers  # noqa: E402

PORT = 18140  # this bench's range: 18140-18149
CALLBACK_PATH = "/v1/payments/callbacks/wechatpay"
MCHID, APPID = TRANSACTION["mchid"], TRANSACTION["appid"]
MERCHANT_SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
AMOUNT = 30000
DAY = date(2026, 11, 27)
ON_DAY = datetime(2026, 11, 27, 10, 0, tzinfo=CHINA)
ORDER_COLUMNS = (
    "order_no, payer_kind, payer, insured_ssn, insurance_type, periods, amount_fen, region, channel, state, "
    "refund_reserved_fen, refunded_fen, created_at, updated_at, paid_at"
)


def copy_orders(url: str, count: int, *, state: str, paid_at: datetime | None, prefix: str = "SO") -> list[str]:
    """`count` orders inserted with one COPY; returns their numbers only when few (the callbacks part needs them)."""
    numbers: list[str] = []
    now = datetime.now(CHINA)
    with psycopg.connect(pg_url(url)) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY payment_orders ({ORDER_COLUMNS}) FROM STDIN") as copy:
            for i in range(count):
                order_no = f"{prefix}{i:024d}"
                if count <= 100_000:
                    numbers.append(order_no)
                copy.write_row(
                    (
                        order_no, "citizen", "bench", "110105199003072813", "pension", '["2025"]', AMOUNT, "110000",
                        "wechatpay", state, 0, 0, now, now, paid_at,
                    )
                )  # fmt: skip
        conn.commit()
    return numbers


# --- (a) callbacks ---------------------------------------------------------------------------------------------------


def pem_private(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem_public(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def setup_service(home: Path) -> tuple[dict[str, str], str, str, rsa.RSAPrivateKey]:
    """A scratch database with WeChat Pay configured as an operator would: settings plus imported keys."""
    from keys import channel_keys

    url, dbname = create_database()
    channel_settings = {"payment_channels": "wechatpay", "wechatpay_mchid": MCHID, "wechatpay_appid": APPID}
    settings = scratch_settings(home, url, PORT, **channel_settings)
    runtime = Runtime(settings)
    prepare(runtime, migrate=True)
    platform = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    merchant = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with unit_of_work(runtime.sessions) as session:
        for kind, data, serial in (
            ("merchant-key", pem_private(merchant), MERCHANT_SERIAL),
            ("platform-public-key", pem_public(platform), PUB_KEY_ID),
            ("apiv3-key", APIV3_KEY, None),
        ):
            channel_keys.import_key(session, runtime.sealer, channel="wechatpay", kind=kind, data=data, serial=serial)
    runtime.close()
    env = server_env(settings, **channel_settings)
    return env, url, dbname, platform


def delivery(platform: rsa.RSAPrivateKey, order_no: str, n: int) -> tuple[dict[str, str], bytes]:
    tx: dict[str, Any] = {
        **TRANSACTION,
        "out_trade_no": order_no,
        "transaction_id": f"4200{n:024d}",
        "trade_state": "SUCCESS",
        "success_time": "2026-11-27T10:00:00+08:00",
        "amount": {"total": AMOUNT, "payer_total": AMOUNT, "currency": "CNY", "payer_currency": "CNY"},
    }
    body = {
        "id": f"EV-{n}",
        "create_time": "2026-11-27T10:00:00+08:00",
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS",
        "summary": "支付成功",
        "resource": encrypt(json.dumps(tx, ensure_ascii=False).encode()),
    }
    raw = json.dumps(body, ensure_ascii=False).encode()
    return wx_headers(platform, PUB_KEY_ID, raw, ts=int(time.time()), nonce=secrets.token_hex(16).upper()), raw


def bench_callbacks(args: argparse.Namespace, home: Path) -> tuple[dict[str, Any], str, str]:
    env, url, dbname, platform = setup_service(home)
    orders = copy_orders(url, args.callbacks, state="pending", paid_at=None)
    # Signed just before sending: each stays inside the 5-minute past-only window for the whole run.
    deliveries = [delivery(platform, order_no, n) for n, order_no in enumerate(orders)]
    warmup = copy_orders(url, 200, state="pending", paid_at=None, prefix="WU")
    warmup_deliveries = [delivery(platform, no, 10**9 + n) for n, no in enumerate(warmup)]
    server = start_server(env, PORT, args.workers)
    run = timed_posts(server, PORT, url, dbname, CALLBACK_PATH, warmup_deliveries, deliveries, args.concurrency)
    with psycopg.connect(pg_url(url)) as conn:
        applied, paid, entries = (
            conn.execute(query).fetchone()[0]  # type: ignore[index]
            for query in (
                "SELECT count(*) FROM payment_callbacks WHERE outcome = 'applied' AND order_ref LIKE 'SO%'",
                "SELECT count(*) FROM payment_orders WHERE state = 'paid' AND order_no LIKE 'SO%'",
                "SELECT count(*) FROM ledger_entries WHERE key LIKE 'order:SO%:paid'",
            )
        )
    return (
        {
            "callbacks_sent": len(deliveries),
            "http_statuses": run.statuses,
            "applied_rows": applied,
            "orders_paid": paid,
            "paid_entries": entries,
            **run.figures(applied),
            "machine_load_average": os.getloadavg()[0],
            "workers": args.workers,
            "concurrency": args.concurrency,
        },
        url,
        dbname,
    )


# --- (b) the raw insert rate -----------------------------------------------------------------------------------------


def bench_insert(url: str, clients: int, seconds: int) -> dict[str, Any]:
    with psycopg.connect(pg_url(url), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_rows (id bigserial PRIMARY KEY, v bigint NOT NULL)")
    pgbench = shutil.which("pgbench")
    if pgbench:
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
            script.write("INSERT INTO bench_rows (v) VALUES (:client_id);\n")
        db = url.rsplit("/", 1)[1]
        out = subprocess.run(
            [pgbench, "-h", "127.0.0.1", "-U", "postgres", "-n", "-f", script.name, "-c", str(clients), "-j",
             str(min(clients, 2)), "-T", str(seconds), db],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        os.unlink(script.name)
        tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))  # type: ignore[union-attr]
        return {"tool": "pgbench", "clients": clients, "seconds": seconds, "inserts_per_second": round(tps, 1)}
    # Without pgbench: one thread per client, each a one-row INSERT and its COMMIT per transaction.
    import threading

    done = [0] * clients
    stop = time.perf_counter() + seconds

    def client(i: int) -> None:
        with psycopg.connect(pg_url(url)) as conn:
            while time.perf_counter() < stop:
                conn.execute("INSERT INTO bench_rows (v) VALUES (%s)", (i,))
                conn.commit()
                done[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"tool": "psycopg loop", "clients": clients, "seconds": seconds, "inserts_per_second": sum(done) / seconds}


# --- (c) reconciliation ----------------------------------------------------------------------------------------------


def bill_rows(lines: int, skip: set[int], mismatch: set[int], extra: int) -> Iterator[BillRow]:
    for i in range(lines - extra):
        if i in skip:
            continue
        amount = AMOUNT + 1 if i in mismatch else AMOUNT
        yield BillRow(ON_DAY, f"4200{i:024d}", f"SO{i:024d}", amount)
    for j in range(extra + len(skip)):  # the channel's own: charges we never heard of
        yield BillRow(ON_DAY, f"4300{j:024d}", f"SX{j:024d}", AMOUNT)


def bench_reconciliation(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    url, dbname = create_database()
    try:
        settings = scratch_settings(home, url, PORT)
        runtime = Runtime(settings)
        prepare(runtime, migrate=True)
        n, planted = args.lines, 10
        started = time.perf_counter()
        copy_orders(url, n - planted, state="paid", paid_at=ON_DAY)
        with psycopg.connect(pg_url(url), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE payment_orders")
        orders_seconds = time.perf_counter() - started
        skip, mismatch = set(range(5, 5 + planted)), set(range(100, 100 + planted))
        path = home / "bill.csv"
        started = time.perf_counter()
        with path.open("wb") as out:
            for line in render(bill_rows(n, skip, mismatch, planted)):
                out.write(line)
        render_seconds = time.perf_counter() - started
        size = path.stat().st_size
        started = time.perf_counter()
        with path.open("rb") as data:
            parsed = sum(1 for _ in parse(data))
        parse_seconds = time.perf_counter() - started
        source = StatementSource("wechatpay", parse)  # no query: the planted discrepancies are parked
        with path.open("rb") as data:
            done = reconcile(runtime.sessions, source, DAY, data)
        with unit_of_work(runtime.sessions) as db:
            result = report(db, done.run_id, limit=0) or {}
        runtime.close()
        total = done.stage_seconds + done.match_seconds + done.resolve_seconds
        return {
            "lines": parsed,
            "file_mb": round(size / 2**20, 1),
            "orders_copied_per_second": round((n - planted) / orders_seconds),
            "render_lines_per_second": round(parsed / render_seconds),
            "parse_lines_per_second": round(parsed / parse_seconds),
            "stage_lines_per_second": round(done.lines / done.stage_seconds),
            "match_lines_per_second": round(done.lines / done.match_seconds),
            "stage_seconds": round(done.stage_seconds, 2),
            "match_seconds": round(done.match_seconds, 2),
            "resolve_seconds": round(done.resolve_seconds, 2),
            "reconcile_lines_per_second": round(done.lines / total),
            "totals": result.get("totals"),
            "resolutions": result.get("resolutions"),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }
    finally:
        drop_database(dbname)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="callbacks,insert,reconciliation")
    parser.add_argument("--callbacks", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--insert-seconds", type=int, default=15)
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sscard-bench-pay-") as tmp:
        home = Path(tmp)
        for sub in ("svc", "recon"):
            (home / sub).mkdir()
        dbname = None
        try:
            if "callbacks" in parts:
                figures["callbacks"], url, dbname = bench_callbacks(args, home / "svc")
            if "insert" in parts:
                if dbname is None:
                    url, dbname = create_database()
                figures["insert"] = bench_insert(url, args.concurrency, args.insert_seconds)
            if "callbacks" in figures and "insert" in figures:
                figures["callbacks_to_insert_ratio"] = round(
                    figures["callbacks"]["applied_per_second"] / figures["insert"]["inserts_per_second"], 3
                )
        finally:
            if dbname is not None:
                drop_database(dbname)
        if "reconciliation" in parts:
            figures["reconciliation"] = bench_reconciliation(args, home / "recon")
    figures["when"] = datetime.now(CHINA).isoformat(timespec="seconds")
    print(json.dumps(figures, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
