"""`authsvc cardholder set-photo` (both backends) and `authsvc sandbox liveness` run on its own, as an operator or a
developer would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from authsvc.audit.models import AuditEvent
from authsvc.cli import main
from authsvc.database import unit_of_work
from authsvc.liveness import wire
from authsvc.liveness.generic import GenericConfig, GenericVendor
from authsvc.liveness.vendor import SessionRequest, VendorDeclined
from authsvc.registry import repository
from authsvc.runtime import Runtime
from tests.fixtures.service import free_port

SSN = "110105199003072813"
ROOT = Path(__file__).resolve().parents[3]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def photo_of(runtime: Runtime) -> str | None:
    with unit_of_work(runtime.sessions) as db:
        holder = repository.holder_by_ssn(db, SSN)
        assert holder is not None
        return holder.photo_ref


def test_set_photo_sets_and_clears_the_reference_and_never_prints_it(
    cli_env: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "cardholder", "add", "--ssn", SSN, "--name", "张伟")[0] == 0
    code, out, _ = run(capsys, "cardholder", "set-photo", SSN, "gallery:110105-0001")
    assert code == 0 and "gallery:110105-0001" not in out and SSN not in out and "ga" in out
    assert photo_of(cli_env) == "gallery:110105-0001"
    code, out, _ = run(capsys, "cardholder", "set-photo", SSN, "--clear")
    assert code == 0 and "cleared" in out and photo_of(cli_env) is None
    with unit_of_work(cli_env.sessions) as db:
        events = db.scalars(select(AuditEvent).where(AuditEvent.event == "reference_photo_set")).all()
        assert len(events) == 2 and "gallery:110105-0001" not in json.dumps([e.detail for e in events])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["110105199003072812", "p1"], "check character"),
        (["11010519491231002X", "p1"], "no cardholder"),
        ([SSN, "bad photo id"], "photo reference"),
        ([SSN], "either a photo reference or --clear"),
        ([SSN, "p1", "--clear"], "either a photo reference or --clear"),
    ],
)
def test_set_photo_refusals_exit_1_and_change_nothing(
    cli_env: Runtime, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert run(capsys, "cardholder", "add", "--ssn", SSN, "--name", "张伟")[0] == 0
    code, _, err = run(capsys, "cardholder", "set-photo", *argv)
    assert code == 1 and message in err and err.count("\n") == 1
    assert photo_of(cli_env) is None


def test_the_sandbox_runs_on_its_own() -> None:
    port = free_port()
    command = [sys.executable, "-m", "authsvc", "sandbox", "liveness", "--port", str(port), "--reference", "g:1"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT, text=True)
    try:
        assert proc.stdout is not None
        described = json.loads(proc.stdout.readline())
        base = described["base_url"]
        ours = serialization.load_pem_private_key(described["client_private_pem"].encode(), password=None)
        vendor_keys = wire.KeyRing.of(*((kid, pem.encode()) for kid, pem in described["vendor_keys"].items()))
        signing = wire.SigningKey(described["client_key_id"], ours)  # type: ignore[arg-type]
        config = GenericConfig("sandbox", described["app_id"], signing, vendor_keys, 300, 5)
        import time

        with httpx.Client(base_url=base, trust_env=False) as http:
            for _ in range(100):  # it prints before it listens
                try:
                    http.get("/sandbox/state")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            adapter = GenericVendor(config, http, clock=time.time)
            opened = adapter.open_session(SessionRequest("b" * 32, "g:1", "http://127.0.0.1:9/cb", 60))
            page = http.get(opened.capture_url.removeprefix(base))
            assert page.status_code == 200 and page.text.count("<button") == 3 and "<script" not in page.text
            assert "default-src 'none'" in page.headers["content-security-policy"]
            with pytest.raises(VendorDeclined):
                adapter.open_session(SessionRequest("c" * 32, "g:unknown", "http://127.0.0.1:9/cb", 60))
            assert http.post("/sandbox/faults", json={"callback": "never"}).json()["callback"] == "never"
            assert http.post("/sandbox/faults", json={"callback": "bogus"}).status_code == 400
    finally:
        proc.terminate()
        proc.wait(timeout=10)
