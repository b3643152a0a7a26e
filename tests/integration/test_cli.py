"""`authsvc` administration commands, run as a console user would (exit codes, messages, effects)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from authsvc.cli import main
from authsvc.database import unit_of_work
from authsvc.registry import repository
from authsvc.runtime import Runtime


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_enrol_issue_and_report_lost(cli_env: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "cardholder", "add", "--ssn", "110105199003072813", "--name", "张伟")
    assert code == 0 and "110105********2813" in out and "110105199003072813" not in out
    card = tmp_path / "card.json"
    code, out, _ = run(
        capsys,
        "card",
        "issue",
        "--ssn",
        "110105199003072813",
        "--generation",
        "3",
        "--pin",
        "123456",
        "--out",
        str(card),
    )
    assert code == 0 and card.exists()
    number = json.loads(card.read_text())["identification"]["card_number"]
    code, out, _ = run(capsys, "card", "set-status", number, "reported_lost")
    assert code == 0 and "reported_lost" in out and number not in out
    with unit_of_work(cli_env.sessions) as session:
        assert repository.card_by_number(session, number).status == "reported_lost"  # type: ignore[union-attr]
    code, _, err = run(capsys, "card", "set-status", number, "active")
    assert code == 1 and "can only be cancelled" in err


def test_refusals_exit_1_with_a_one_line_reason(cli_env: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "cardholder", "add", "--ssn", "110105199003072812", "--name", "张伟")
    assert code == 1 and err.startswith("authsvc: social security number: check character") and err.count("\n") == 1


def test_csv_import_reports_lines(cli_env: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "people.csv"
    csv.write_text("ssn,name\n110105199003072813,张伟\nbad,李四\n", encoding="utf-8")
    code, out, err = run(capsys, "cardholder", "import", str(csv))
    assert code == 1 and "added 1 cardholder(s), 1 row(s) refused" in out and f"{csv}:3:" in err
    code, _, err = run(capsys, "cardholder", "import", str(tmp_path / "missing.csv"))
    assert code == 1 and "cannot read" in err


def test_terminals_and_keys(cli_env: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "terminal", "add", "--id", "kiosk-9", "--out", str(tmp_path / "k.json"))
    assert code == 0 and (tmp_path / "k.json").exists()
    assert run(capsys, "terminal", "set-status", "kiosk-9", "disabled")[0] == 0
    code, _, err = run(capsys, "keys", "rotate")
    assert code == 1 and "published for less than" in err
    code, out, _ = run(capsys, "keys", "rotate", "--force")
    assert code == 0 and "active signing key" in out
    code, out, _ = run(capsys, "keys", "list")
    states = sorted(k["state"] for k in json.loads(out) if k["purpose"] == "signing")
    assert code == 0 and states == ["active", "next", "retired"] and "PRIVATE" not in out


def test_bad_configuration_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SSCARD_ISSUER", "not a url")
    code, _, err = run(capsys, "keys", "init")
    assert code == 2 and "SSCARD_ISSUER" in err


def test_commands_insist_on_migrations(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SSCARD_DATABASE_URL", f"sqlite:///{tmp_path / 'fresh.db'}")
    monkeypatch.setenv("SSCARD_HOME", str(tmp_path))
    code, _, err = run(capsys, "keys", "init")
    assert code == 1 and "authsvc db upgrade" in err
    assert run(capsys, "db", "upgrade")[0] == 0
    assert run(capsys, "keys", "init")[0] == 0


def test_a_card_reported_lost_signs_its_holder_out_everywhere(
    cli_env: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sqlalchemy import select

    from authsvc.audit.models import AuditEvent
    from authsvc.oauth import grants
    from authsvc.oauth.models import OAuthGrant
    from authsvc.sessions import service as sessions
    from authsvc.sessions.models import LogoutDelivery, SsoSession
    from authsvc.tokens.issuing import Authentication
    from tests.fixtures.oidc import register_client
    from tests.fixtures.service import issue

    mine, theirs = issue(cli_env, tmp_path, generation=3), issue(cli_env, tmp_path, generation=2)
    portal = register_client(cli_env, backchannel_logout_uri="https://portal.example/bcl")
    with unit_of_work(cli_env.sessions) as db:
        me, them = (repository.holder_by_ssn(db, c.ssn).subject for c in (mine, theirs))  # type: ignore[union-attr]
        for subject in (me, me, them):
            auth = Authentication(subject=subject, auth_time=0, acr="urn:sscard:acr:low", amr=["sc"])
            session, _cookie = sessions.start(db, cli_env, auth)
            sessions.signed_in(db, session, portal.client_id)
        for subject in (me, them):  # an app's sign-in outside any live session
            grants.create(
                db,
                client_id=portal.client_id,
                subject=subject,
                sid=None,
                scope=["openid"],
                acr="urn:sscard:acr:low",
                amr=["sc"],
                auth_time=0,
                ttl=3600,
            )

    # Frozen is not lost: nobody is signed out.
    code, out, _ = run(capsys, "card", "set-status", mine.card_number, "frozen")
    assert code == 0 and "signed out" not in out
    code, out, _ = run(capsys, "card", "set-status", mine.card_number, "reported_lost")
    assert code == 0 and "2 SSO session(s) ended" in out
    with unit_of_work(cli_env.sessions) as db:
        ended = sorted((s.subject == me, s.ended_at is not None) for s in db.scalars(select(SsoSession)))
        assert ended == [(False, False), (True, True), (True, True)]  # both of mine, none of theirs
        assert len(db.scalars(select(LogoutDelivery)).all()) == 2  # the portal hears of both sessions
        live = {g.subject: g.revoked_at is None for g in db.scalars(select(OAuthGrant))}
        assert live == {me: False, them: True}
        reasons = db.scalars(select(AuditEvent.reason).where(AuditEvent.event == sessions.EVENT_END)).all()
        assert reasons == ["card_reported_lost", "card_reported_lost"]
    code, out, _ = run(capsys, "card", "set-status", mine.card_number, "cancelled")  # nothing live is left
    assert code == 0 and "signed out" not in out
