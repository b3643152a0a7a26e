"""`sscard` argument handling and input errors (the PC/SC paths are in test_reader_pcsc.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from card.cli import main


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for line in (
        "2  usage error",
        "3  card or PIN problem",
        "4  refused by the service",
        "5  reader problem",
        "6  service unreachable",
    ):
        assert line in out
    assert main(["login", "--help"]) == 0
    assert "exit codes" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["login"], ["emulate"], ["emulate", "x.json", "--port", "x"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_emulate_refuses_a_bad_card_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "card.json"
    path.write_text("{}")
    assert main(["emulate", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"sscard emulate: {path}: not a software card file")


def test_emulate_refuses_a_nonsense_pull_after(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.card.factories import gen2_card

    path = tmp_path / "card.json"
    gen2_card().save(path)
    assert main(["emulate", str(path), "--pull-after", "0"]) == 2
    assert "--pull-after" in capsys.readouterr().err


def test_login_refuses_a_bad_kiosk_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "kiosk.json"
    path.write_text(json.dumps({"format": "nope"}))
    assert main(["login", "--service", "http://x", "--terminal", str(path), "--pin", "1234"]) == 2
    assert "not a kiosk file" in capsys.readouterr().err


def test_login_needs_a_service(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = (
        Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    path = tmp_path / "kiosk.json"
    path.write_text(json.dumps({"format": "sscard-kiosk/1", "terminal_id": "k1", "private_key_pem": pem}))
    assert main(["login", "--terminal", str(path), "--pin", "1234"]) == 2
    assert "no --service" in capsys.readouterr().err
    assert main(["login", "--terminal", str(path), "--pin", "1234", "--service", "ftp://x"]) == 2
    assert "http(s)" in capsys.readouterr().err
    assert main(["login", "--terminal", str(path), "--pin", "12x4", "--service", "http://x"]) == 2
    assert capsys.readouterr().err == "sscard login: a PIN is 4 to 12 digits\n"


def test_the_pin_can_come_from_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("12y4\n"))
    path = tmp_path / "kiosk.json"
    test_login_needs_a_service(tmp_path, capsys)
    assert main(["login", "--terminal", str(path), "--pin", "-", "--service", "http://x"]) == 2
    assert capsys.readouterr().err == "sscard login: a PIN is 4 to 12 digits\n"
