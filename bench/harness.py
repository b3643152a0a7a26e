"""What every benchmark needs: a scratch PostgreSQL database and the service started as in production."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
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
