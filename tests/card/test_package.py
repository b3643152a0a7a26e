"""The card package is what a kiosk installs: it must not pull in the server or its dependencies."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import card

FORBIDDEN = (
    "fastapi",
    "sqlalchemy",
    "redis",
    "jwt",
    "pydantic",
    "starlette",
    "alembic",
    "psycopg",
    "authsvc",
    "keys",
    "uvicorn",
)
ROOT = Path(__file__).resolve().parents[2]


def test_card_modules_import_without_server_packages() -> None:
    modules = [f"card.{m.name}" for m in pkgutil.iter_modules(card.__path__) if m.name != "__main__"]
    script = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {FORBIDDEN!r}:
            raise ImportError("kiosk install has no " + name)
sys.meta_path.insert(0, Block())
for name in {modules!r}:
    __import__(name)
print(len({modules!r}))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 12
