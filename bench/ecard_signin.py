"""E-card sign-ins per second, end to end, against `authsvc serve --workers 2` on PostgreSQL + Redis.

One sign-in is what a browser and a phone do together (docs/ecard.md): the portal's /authorize starts the pending
login, the page fetches its QR code (`GET /login/{id}/ecard`), the app scans it (`POST /v1/ecard/sign-ins/scan`),
signs and approves (`POST /v1/ecard/sign-ins/{id}`), and the page sees `/status` done. Five requests, one ES256
signature made by the client and one verified by the service.

Baselines from the same run, so that the ratio means something on whatever machine runs it:
- `healthz`: the same load generator doing bare `GET /healthz` round trips (one database and one store ping each):
  what this HTTP stack, these workers and this client can do at all; a sign-in is five requests.
- `es256_verify_per_s`: one core verifying ES256 signatures with `cryptography`, the one heavy step of an approval.

    python bench/ecard_signin.py                    # 4 clients, 10 s each part
    python bench/ecard_signin.py --clients 8 --seconds 20

The load generator shares the machine with the service, so the figures understate the service alone.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import multiprocessing as mp
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from authsvc.cli import prepare  # noqa: E402
from authsvc.clients import service as clients  # noqa: E402
from authsvc.clients.models import AuthMethod  # noqa: E402
from authsvc.config import Settings  # noqa: E402
from authsvc.database import unit_of_work  # noqa: E402
from authsvc.ecard import repository as ecards  # noqa: E402
from authsvc.ecard.models import Ecard  # noqa: E402
from authsvc.registry import repository as cards  # noqa: E402
from authsvc.registry import service as registry  # noqa: E402
from authsvc.runtime import Runtime  # noqa: E402
from authsvc.tokens import assurance  # noqa: E402
from bench.harness import (  # noqa: E402
    create_database,
    drop_database,
    pct,
    scratch_settings,
    server_env,
    ssn_for,
    start_server,
)
from card import ecard_protocol as protocol  # noqa: E402

PIN = "123456"


def setup(home: Path, port: int, people: int) -> tuple[Settings, str, str, list[tuple[str, str]]]:
    """A scratch database with `people` cardholders, each with a card and an enrolled e-card, and a portal.
    Returns the settings, the database name, the portal's client_id and (e-card id, private key PEM) pairs."""

    url, dbname = create_database()
    settings = scratch_settings(home, url, port)
    runtime = Runtime(settings)
    prepare(runtime, migrate=True)
    devices = []
    with unit_of_work(runtime.sessions) as db:
        portal, _ = clients.register(
            db,
            runtime.hmac_keys,
            clients.ClientSpec(
                name="压测门户 Bench portal",
                auth_method=AuthMethod.CLIENT_SECRET_BASIC,
                redirect_uris=["http://127.0.0.1:9/cb"],
                acr_values=[assurance.LOW],
            ),
            actor="bench",
        )
        for i in range(people):
            ssn = ssn_for(i)
            holder = registry.add_cardholder(db, ssn=ssn, name=f"测试{i}")
            issued = registry.issue_card(
                db, runtime.sealer, ssn=ssn, generation=3, pin=PIN, out=home / f"card-{i}.json"
            )
            card_row = cards.card_by_number(db, issued.card_number)
            assert card_row is not None
            # Enrolled as /v1/ecards would (its rules have their own tests): this bench is about signing in.
            key = ec.generate_private_key(ec.SECP256R1())
            jwk = protocol.public_jwk(key.public_key())
            row = Ecard(
                public_id=secrets.token_urlsafe(16),
                cardholder_id=holder.id,
                card_id=card_row.id,
                public_jwk=jwk,
                jkt=protocol.thumbprint(jwk),
                device_name="bench",
            )
            ecards.add(db, row)
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode()
            devices.append((row.public_id, pem))
        client_id = portal.client_id
    runtime.close()
    return settings, dbname, client_id, devices


def _sign_in(http: httpx.Client, base: str, client_id: str, ecard_id: str, key: Any) -> dict[str, float]:
    """One sign-in; the server's time (Server-Timing app;dur) of each step, in ms."""
    times: dict[str, float] = {}

    def timed(name: str, answer: httpx.Response, expect: int = 200) -> httpx.Response:
        if answer.status_code != expect:
            raise RuntimeError(f"{name}: {answer.status_code} {answer.text[:200]}")
        times[name] = float(answer.headers["server-timing"].split(";dur=")[1].split(",")[0])
        return answer

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": "http://127.0.0.1:9/cb",
        "scope": "openid",
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "acr_values": assurance.LOW,
    }
    located = timed("authorize", http.get(f"{base}/authorize", params=params), 303).headers["location"]
    login_id = urlsplit(located).path.removeprefix("/login/")
    qr_url = timed("qr", http.get(f"{base}/login/{login_id}/ecard")).json()["url"]
    token = parse_qs(urlsplit(qr_url).query)["t"][0]
    scanned = timed(
        "scan", http.post(f"{base}/v1/ecard/sign-ins/scan", json={"login_id": login_id, "qr_token": token})
    ).json()
    message = protocol.signin_message(
        origin=base,
        login_id=login_id,
        client_id=scanned["client_id"],
        challenge=scanned["challenge"],
        ecard_id=ecard_id,
    )
    body = {"ecard_id": ecard_id, "signature": protocol.sign(key, message)}
    timed("approve", http.post(f"{base}/v1/ecard/sign-ins/{login_id}", json=body))
    status = timed("status", http.get(f"{base}/login/{login_id}/status")).json()
    if status.get("status") != "done":
        raise RuntimeError(f"status: {status}")
    return times


def _signin_client(base: str, client_id: str, device: tuple[str, str], seconds: float, out: Any) -> None:
    ecard_id, pem = device
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    done, latencies, server = 0, [], []
    with httpx.Client(timeout=30) as http:  # one browser (its login cookie) and one phone, taking turns
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            server.append(_sign_in(http, base, client_id, ecard_id, key))
            latencies.append((time.perf_counter() - started) * 1000)
            done += 1
    out.put({"done": done, "latencies": latencies, "server": server})


def _healthz_client(base: str, seconds: float, out: Any) -> None:
    done = 0
    with httpx.Client(timeout=30) as http:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            http.get(f"{base}/healthz").raise_for_status()
            done += 1
    out.put({"done": done})


def _run(target: Any, args_for: Any, clients_n: int, seconds: float) -> tuple[float, list[dict[str, Any]]]:
    queue: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    procs = [mp.Process(target=target, args=(*args_for(i), seconds, queue)) for i in range(clients_n)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    return time.perf_counter() - started, results


def es256_verifies_per_second(seconds: float = 2.0) -> float:
    key = ec.generate_private_key(ec.SECP256R1())
    message = protocol.signin_message(origin="http://a", login_id="l" * 32, client_id="c", challenge="x", ecard_id="e")
    signature = protocol.sign(key, message)
    public, n = key.public_key(), 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        assert protocol.verify(public, message, signature)
        n += 1
    return n / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4, help="concurrent browser+phone pairs")
    parser.add_argument("--seconds", type=float, default=10, help="length of each measured part")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8790)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings, dbname, client_id, devices = setup(Path(tmp), args.port, args.clients)
        proc = start_server(server_env(settings), args.port, args.workers)
        base = settings.issuer
        try:
            # A short warm-up: every worker's caches (client rows, keys) loaded before measuring.
            with httpx.Client(timeout=30) as http:
                key = serialization.load_pem_private_key(devices[0][1].encode(), password=None)
                for _ in range(10):
                    _sign_in(http, base, client_id, devices[0][0], key)
            elapsed, results = _run(_signin_client, lambda i: (base, client_id, devices[i]), args.clients, args.seconds)
            signins = sum(r["done"] for r in results)
            latencies = [v for r in results for v in r["latencies"]]
            steps = [s for r in results for s in r["server"]]
            h_elapsed, h_results = _run(_healthz_client, lambda i: (base,), args.clients, args.seconds)
            healthz = sum(r["done"] for r in h_results) / h_elapsed
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            drop_database(dbname)
    per_s = signins / elapsed
    verify = es256_verifies_per_second()
    figures = {
        "backend": "postgresql+redis",
        "workers": args.workers,
        "clients": args.clients,
        "signins": signins,
        "signins_per_s": round(per_s, 1),
        "requests_per_s": round(per_s * 5, 1),
        "signin_ms_p50": round(statistics.median(latencies), 1),
        "signin_ms_p95": round(pct(latencies, 0.95), 1),
        "server_ms_p50_by_step": {name: round(statistics.median(s[name] for s in steps), 2) for name in steps[0]},
        "baseline_healthz_per_s": round(healthz, 1),
        "ratio_signin_requests_to_healthz": round(per_s * 5 / healthz, 2),
        "baseline_es256_verify_per_s_one_core": round(verify),
    }
    print(json.dumps(figures, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
