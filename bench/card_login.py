"""Kiosk card logins, measured.

Part 1 runs logins the way a kiosk does: the software card in vpcd, pcscd, pyscard, the kiosk client, HTTP to the
service. It prints APDUs per login, the client's p50/p95 per login, one APDU's round trip through PC/SC (the unit
a login is made of; measured in the same run), and the server's own time per completion (its Server-Timing header).

Part 2 loads the service with concurrent kiosks (cards driven in process, PIN verified once per card session as a
real card keeps it) and prints the logins per second the service sustains and the server time under load.

    python bench/card_login.py                          # PostgreSQL + Redis, 2 workers (production shape)
    python bench/card_login.py --backend embedded       # SQLite + in-process store, 1 worker
    python bench/card_login.py --logins 200 --load-seconds 20 --clients 4

Needs pcscd with vpcd (./dev installs them), and for the default backend PostgreSQL and Redis on 127.0.0.1.
The load generator runs on the same 2 cores as the service, so part 2 understates what the service does alone.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from authsvc.cli import prepare  # noqa: E402
from authsvc.config import Settings  # noqa: E402
from authsvc.database import unit_of_work  # noqa: E402
from authsvc.registry import service as registry  # noqa: E402
from authsvc.runtime import Runtime  # noqa: E402
from bench.harness import (  # noqa: E402
    REDIS_URL,
    create_database,
    drop_database,
    pct,
    scratch_settings,
    server_env,
    ssn_for,
    start_server,
)
from card import kiosk as kiosk_client  # noqa: E402
from card.apdu import CommandAPDU  # noqa: E402
from card.application import SoftCard  # noqa: E402
from card.cardfile import CardFile  # noqa: E402
from card.reader import connect  # noqa: E402
from card.request_signing import b64url, b64url_decode  # noqa: E402
from tests.fixtures.pcsc import READER, ensure_pcscd, insert_soft_card  # noqa: E402
from tests.fixtures.softcard import evidence, transmit  # noqa: E402

PIN = "123456"
TARGET_APDUS = 8
TARGET_SERVER_MS = 5.0


class ServerTiming(httpx.HTTPTransport):
    """Keeps the service's own time for each completion (the Server-Timing header)."""

    def __init__(self) -> None:
        super().__init__()
        self.samples: list[float] = []
        self.cpu: list[float] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path.endswith("/complete"):
            wall, cpu = server_timing(response)
            self.samples.append(wall)
            self.cpu.append(cpu)
        return response


def server_timing(response: httpx.Response) -> tuple[float, float]:
    """(wall ms, CPU ms) from `Server-Timing: app;dur=W, cpu;dur=C`."""
    parts = dict(item.strip().split(";dur=") for item in response.headers["server-timing"].split(","))
    return float(parts["app"]), float(parts["cpu"])


def setup(backend: str, home: Path, port: int, cards: int) -> tuple[Settings, dict[str, str], list[Path], Path, str]:

    dbname = ""
    if backend == "postgresql":
        url, dbname = create_database()
        redis_url = REDIS_URL
    else:
        url, redis_url = f"sqlite:///{home / 'sscard.db'}", "memory://"
    settings = scratch_settings(
        home,
        url,
        port,
        redis_url=redis_url,
        # A benchmark hammers one card from one kiosk on purpose; throttling is for failures only.
        throttle_terminal_failures=100000,
    )
    runtime = Runtime(settings)
    prepare(runtime, migrate=True)
    paths = []
    with unit_of_work(runtime.sessions) as session:
        registry.add_terminal(
            session, terminal_id="bench-kiosk", region_code="110000", out=home / "kiosk.json", service=None
        )
        for i in range(cards):
            ssn = ssn_for(i)
            registry.add_cardholder(session, ssn=ssn, name=f"测试{i}")
            path = home / f"card-{i}.json"
            registry.issue_card(
                session, runtime.sealer, ssn=ssn, generation=3 if i % 2 == 0 else 2, pin=PIN, out=path, algorithm="sm4"
            )
            paths.append(path)
    runtime.close()
    env = server_env(settings, throttle_terminal_failures="100000")
    return settings, env, paths, home / "kiosk.json", dbname


def apdu_round_trip(n: int) -> list[float]:
    reader = connect(READER, timeout=10)
    select = CommandAPDU(0x00, 0xA4, 0x04, 0x0C, bytes.fromhex("7378312E73682EC9E7BBE1B1A3D5CF"))
    samples = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            reader.transmit(select)
            samples.append((time.perf_counter() - t) * 1000)
    finally:
        reader.close()
    return samples


def part1(url: str, kiosk_path: Path, card_path: Path, logins: int) -> dict[str, float]:
    kiosk = kiosk_client.load_kiosk(kiosk_path)
    timing = ServerTiming()
    wall, apdus = [], []
    with insert_soft_card(CardFile.load(card_path)):
        rtt = apdu_round_trip(200)
        kiosk_client.login(url, kiosk, READER, PIN, transport=timing)  # warm-up
        timing.samples.clear()
        timing.cpu.clear()
        for _ in range(logins):
            t = time.perf_counter()
            answer = kiosk_client.login(url, kiosk, READER, PIN, transport=timing)
            wall.append((time.perf_counter() - t) * 1000)
            apdus.append(answer["apdus"])
    return {
        "apdus": statistics.mean(apdus),
        "p50": pct(wall, 0.5),
        "p95": pct(wall, 0.95),
        "rtt_p50": pct(rtt, 0.5),
        "server_p50": pct(timing.samples, 0.5),
        "server_p95": pct(timing.samples, 0.95),
        "server_cpu_p50": pct(timing.cpu, 0.5),
    }


def _load_client(url: str, kiosk_path: str, card_path: str, seconds: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    kiosk = kiosk_client.load_kiosk(kiosk_path)
    card = SoftCard(CardFile.load(card_path))
    card.power_on()
    body_template = evidence(card, secrets.token_bytes(32), kiosk.terminal_id, PIN)  # PIN verified once
    from card import cryptogram

    context = cryptogram.kiosk_context(kiosk.terminal_id)
    done, server = 0, []
    with kiosk_client.kiosk_client(url, kiosk, timeout=30) as client:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = client.post("/v1/kiosk/logins", json={}).json()
            challenge = b64url_decode(started["challenge"])
            data = challenge + context
            response, sw = transmit(card, bytes([0x00, 0x88, 0x00, 0x00, len(data)]) + data + b"\x00")
            assert sw == 0x9000
            body = {**body_template, "response": b64url(response)}
            answer = client.post(f"/v1/kiosk/logins/{started['login_id']}/complete", json=body)
            if answer.status_code != 200:
                raise SystemExit(f"load login failed: {answer.text}")
            server.append(server_timing(answer)[0])
            done += 1
    out.put((done, server))


def part2(url: str, kiosk_path: Path, cards: list[Path], clients: int, seconds: float) -> dict[str, float]:
    queue: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    procs = [
        mp.Process(target=_load_client, args=(url, str(kiosk_path), str(cards[i % len(cards)]), seconds, queue))
        for i in range(clients)
    ]
    t = time.perf_counter()
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t
    total = sum(r[0] for r in results)
    server = [s for r in results for s in r[1]]
    return {
        "logins": total,
        "per_second": total / elapsed,
        "server_p50": pct(server, 0.5),
        "server_p95": pct(server, 0.95),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["postgresql", "embedded"], default="postgresql")
    parser.add_argument("--workers", type=int, default=None, help="service workers (default 2, embedded 1)")
    parser.add_argument("--logins", type=int, default=100, help="logins through PC/SC per card generation")
    parser.add_argument("--clients", type=int, default=4, help="concurrent kiosks in the load part")
    parser.add_argument("--load-seconds", type=float, default=15)
    parser.add_argument(
        "--split-cpus",
        action="store_true",
        help="pin the service to CPU 0 and the load generator to CPU 1, so that part 2 measures "
        "what one core of service sustains",
    )
    args = parser.parse_args()
    workers = args.workers or (1 if args.backend == "embedded" else 2)
    ensure_pcscd()
    port = 18000 + secrets.randbelow(1000)
    with tempfile.TemporaryDirectory(prefix="sscard-bench-") as tmp:
        settings, env, cards, kiosk, dbname = setup(args.backend, Path(tmp), port, max(2, args.clients))
        server = start_server(env, port, workers, "0" if args.split_cpus else None)
        if args.split_cpus:
            os.sched_setaffinity(0, {1})  # this process and the load generators it starts
        report: dict[str, object] = {"backend": args.backend, "workers": workers, "cpus": os.cpu_count()}
        try:
            print(f"service: {args.backend}, {workers} worker(s), {os.cpu_count()} CPUs")
            for generation, path in ((3, cards[0]), (2, cards[1])):
                r = part1(settings.issuer, kiosk, path, args.logins)
                report[f"pcsc_gen{generation}"] = r
                print(f"generation {generation}, {args.logins} logins through pcscd + vpcd + pyscard:")
                print(f"  APDUs per login       {r['apdus']:.0f}   (target <= {TARGET_APDUS})")
                print(f"  client per login      p50 {r['p50']:.1f} ms  p95 {r['p95']:.1f} ms")
                print(
                    f"  one APDU round trip   p50 {r['rtt_p50']:.3f} ms  (login p50 = {r['p50'] / r['rtt_p50']:.0f}x)"
                )
                print(
                    f"  server per completion p50 {r['server_p50']:.2f} ms  p95 {r['server_p95']:.2f} ms wall, "
                    f"p50 {r['server_cpu_p50']:.2f} ms CPU  (target < {TARGET_SERVER_MS} ms)"
                )
            r = part2(settings.issuer, kiosk, cards, args.clients, args.load_seconds)
            report["load"] = r
            where = "service on CPU 0, kiosks on CPU 1" if args.split_cpus else "service and kiosks share the CPUs"
            print(f"load: {args.clients} concurrent kiosks for {args.load_seconds:.0f} s ({where})")
            print(f"  {r['logins']} logins, {r['per_second']:.0f} logins/s sustained")
            print(f"  server per completion p50 {r['server_p50']:.2f} ms  p95 {r['server_p95']:.2f} ms")
        finally:
            server.terminate()
            server.wait(timeout=30)
            if dbname:
                drop_database(dbname)
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
