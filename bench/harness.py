"""What every benchmark needs: a scratch PostgreSQL database and the service started as in production."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


def scratch_settings(home: Path, database_url: str, port: int, **extra: Any) -> Any:
    """The service's settings for a bench: its scratch database, the local Redis under a key prefix of its own, a new
    KEK, and `extra` settings."""
    from cryptography.fernet import Fernet

    from authsvc.config import Settings

    values: dict[str, Any] = {
        "home": home,
        "database_url": database_url,
        "redis_url": REDIS_URL,
        "kek": Fernet.generate_key().decode(),
        "issuer": f"http://127.0.0.1:{port}",
        "redis_prefix": f"sscard-bench:{secrets.token_hex(4)}:",
    }
    return Settings(**{**values, **extra})


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of `values`; 0 for none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def ssn_for(i: int) -> str:
    """The i-th of a thousand distinct valid social security numbers (GB 11643 check character)."""
    from authsvc.registry.ssn import check_character

    first17 = f"110105{1960 + i % 40}0101{i % 1000:03d}"
    return first17 + check_character(first17)


def server_env(settings: Any, **extra: str) -> dict[str, str]:
    """The environment `authsvc serve` needs to run on the bench's settings (its database, store, KEK and issuer),
    plus `extra` settings as SSCARD_<NAME>."""
    return {
        **os.environ,
        "SSCARD_HOME": str(settings.home),
        "SSCARD_DATABASE_URL": settings.database_url,
        "SSCARD_REDIS_URL": settings.redis_url,
        "SSCARD_REDIS_PREFIX": settings.redis_prefix,
        "SSCARD_KEK": settings.kek or "",
        "SSCARD_ISSUER": settings.issuer,
        **{f"SSCARD_{name.upper()}": value for name, value in extra.items()},
    }


def create_database() -> tuple[str, str]:
    """A new, empty database on the local PostgreSQL: (its URL, its name)."""
    name = f"sscard_bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name, name


def drop_database(name: str) -> None:
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def start_server(env: dict[str, str], port: int, workers: int, cpus: str | None = None) -> subprocess.Popen[bytes]:
    """`authsvc serve` with `workers` processes (pinned to `cpus` with taskset), once it answers /healthz."""
    pin = ["taskset", "-c", cpus] if cpus else []
    command = [sys.executable, "-m", "authsvc", "serve", "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen([*pin, *command, "--log-level", "warning"], env=env, cwd=ROOT)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the service did not start")


def pg_url(sqlalchemy_url: str) -> str:
    """The psycopg form of a SQLAlchemy PostgreSQL URL."""
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://")


def children(pid: int) -> set[int]:
    """The server's worker processes (uvicorn spawns them from its master)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def pg_backends(url: str, dbname: str) -> set[int]:
    with psycopg.connect(pg_url(url)) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,)
        ).fetchall()
    return {row[0] for row in rows}


def cpu_seconds(pids: set[int]) -> float:
    """User + system CPU of the processes still alive (from /proc/<pid>/stat)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the whole line)
    return ticks / os.sysconf("SC_CLK_TCK")


async def post_all(
    port: int, path: str, deliveries: list[tuple[dict[str, str], bytes]], concurrency: int
) -> dict[int, int]:
    """POST every (headers, body) to `path`, `concurrency` at a time; the count of each HTTP status."""
    statuses: dict[int, int] = {}
    queue = iter(deliveries)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60) as client:

        async def worker() -> None:
            for headers, body in queue:
                response = await client.post(path, headers=headers, content=body)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


@dataclass(frozen=True)
class TimedRun:
    statuses: dict[int, int]
    seconds: float
    service_cpu: float  # seconds, the service's workers
    database_cpu: float  # seconds, the PostgreSQL backends serving them

    def figures(self, applied: int) -> dict[str, float]:
        """Per applied message, whatever else the machine is doing (a backend that came and went during the run is
        not counted)."""
        return {
            "seconds": round(self.seconds, 2),
            "applied_per_second": round(applied / self.seconds, 1),
            "service_cpu_ms_per_callback": round(self.service_cpu / applied * 1000, 2),
            "postgresql_cpu_ms_per_callback": round(self.database_cpu / applied * 1000, 2),
        }


def timed_posts(
    server: subprocess.Popen[bytes],
    port: int,
    url: str,
    dbname: str,
    path: str,
    warmup: list[tuple[dict[str, str], bytes]],
    deliveries: list[tuple[dict[str, str], bytes]],
    concurrency: int,
) -> TimedRun:
    """Against a started `authsvc serve` (stopped afterwards): the warm-up messages, then `deliveries` timed, with
    the CPU the service's workers and their PostgreSQL backends spent on them."""
    try:
        asyncio.run(post_all(port, path, warmup, concurrency))
        workers, backends = children(server.pid), pg_backends(url, dbname)
        cpu_before = cpu_seconds(workers), cpu_seconds(backends)
        started = time.perf_counter()
        statuses = asyncio.run(post_all(port, path, deliveries, concurrency))
        elapsed = time.perf_counter() - started
        backends = pg_backends(url, dbname) | backends  # the pools may have grown
        return TimedRun(statuses, elapsed, cpu_seconds(workers) - cpu_before[0], cpu_seconds(backends) - cpu_before[1])
    finally:
        server.terminate()
        server.wait(timeout=30)
