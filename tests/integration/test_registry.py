from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from sqlalchemy import func, select

from authsvc.database import unit_of_work
from authsvc.registry import repository
from authsvc.registry import service as registry
from authsvc.registry.models import Card, Cardholder
from authsvc.registry.service import RegistryError
from authsvc.runtime import Runtime
from card.cardfile import CardFile
from tests.fixtures.service import issue


def _count(runtime: Runtime, model: type) -> int:
    with unit_of_work(runtime.sessions) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_add_cardholder_derives_sex_birth_date_and_region(runtime: Runtime) -> None:
    with unit_of_work(runtime.sessions) as session:
        holder = registry.add_cardholder(session, ssn="11010519491231002x", name=" 王芳 ")
    assert (holder.ssn, holder.name, holder.sex, holder.region_code) == ("11010519491231002X", "王芳", "2", "110105")
    assert str(holder.birth_date) == "1949-12-31"
    assert len(holder.subject) == 32 and holder.ssn not in holder.subject


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"ssn": "110105199003072812", "name": "张伟"}, "invalid_ssn"),
        ({"ssn": "110105199003072813", "name": ""}, "invalid_name"),
        ({"ssn": "110105199003072813", "name": "张" * 16}, "invalid_name"),
        ({"ssn": "110105199003072813", "name": "张\n伟"}, "invalid_name"),
        ({"ssn": "110105199003072813", "name": "张伟", "sex": "3"}, "invalid_sex"),
        ({"ssn": "110105199003072813", "name": "张伟", "region_code": "0101"}, "invalid_region"),
    ],
)
def test_bad_cardholders_are_refused_and_nothing_is_written(runtime: Runtime, kwargs: dict, reason: str) -> None:
    with pytest.raises(RegistryError) as caught, unit_of_work(runtime.sessions) as session:
        registry.add_cardholder(session, **kwargs)
    assert caught.value.reason == reason
    assert _count(runtime, Cardholder) == 0


def test_duplicate_cardholder_is_refused(runtime: Runtime) -> None:
    with unit_of_work(runtime.sessions) as session:
        registry.add_cardholder(session, ssn="110105199003072813", name="张伟")
    with pytest.raises(RegistryError, match=r"110105\*{8}2813 is already"), unit_of_work(runtime.sessions) as s:
        registry.add_cardholder(s, ssn="110105199003072813", name="张伟")


def test_csv_import_keeps_good_rows_and_reports_bad_ones_by_line(runtime: Runtime) -> None:
    with unit_of_work(runtime.sessions) as session:
        registry.add_cardholder(session, ssn="440305197806230078", name="赵敏")
    text = (
        "ssn,name,sex,region_code\n"
        "110105199003072813,张伟,,\n"
        "110105199003072812,坏号,,\n"
        "330106198511124520,李娜,2,330106\n"
        "110105199003072813,张伟,,\n"
        "440305197806230078,赵敏,,\n"
        "11010519491231002X,,,\n"
    )
    with unit_of_work(runtime.sessions) as session:
        report = registry.import_csv(session, text)
    assert report.added == 2
    assert [line for line, _ in report.errors] == [3, 5, 6, 7]
    assert "check character" in report.errors[0][1] and "duplicate of line 2" in report.errors[1][1]
    assert _count(runtime, Cardholder) == 3


def test_csv_without_header_is_refused_whole(runtime: Runtime) -> None:
    with pytest.raises(RegistryError, match="header"), unit_of_work(runtime.sessions) as session:
        registry.import_csv(session, "110105199003072813,张伟\n")


@pytest.mark.parametrize(("generation", "algorithm"), [(3, "3des"), (2, "3des"), (2, "sm4")])
def test_issue_card_writes_a_private_card_file_bound_in_the_registry(
    runtime: Runtime, tmp_path: Path, generation: int, algorithm: str
) -> None:
    issued = issue(runtime, tmp_path, generation=generation, algorithm=algorithm)
    assert stat.S_IMODE(issued.path.stat().st_mode) == 0o600
    cardfile = CardFile.load(issued.path)
    assert cardfile.identification.card_number == issued.card_number
    assert cardfile.identification.generation == generation
    assert cardfile.holder.ssn == issued.ssn and cardfile.check_pin("123456") and not cardfile.check_pin("123457")
    text = issued.path.read_text()
    assert "123456" not in json.loads(text)["pin"].values()
    with unit_of_work(runtime.sessions) as session:
        card = repository.card_by_number(session, issued.card_number)
        assert card is not None and card.status == "active" and card.generation == generation
        assert card.identification_code == cardfile.identification.identification_code
        assert card.identification_code.startswith(card.holder.region_code + "D156000005")
        if generation == 3:
            assert card.certificate_sha256 and card.key_ref is None
        else:
            assert card.key_ref and card.key_ref.startswith(f"mk-{algorithm}-") and card.certificate_sha256 is None


def test_a_holder_gets_a_second_card_only_after_the_first_is_lost_or_cancelled(
    runtime: Runtime, tmp_path: Path
) -> None:
    first = issue(runtime, tmp_path, generation=3)
    with pytest.raises(RegistryError, match="already has card"):
        issue(runtime, tmp_path / "x", generation=3)
    assert _count(runtime, Card) == 1
    with unit_of_work(runtime.sessions) as session:
        registry.set_card_status(session, first.card_number, "reported_lost")
    second = issue(runtime, tmp_path, generation=3, pin="9876")
    assert second.card_number != first.card_number


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"ssn": "440305197806230078"}, "not_found"),
        ({"pin": "12a456"}, "invalid_pin"),
        ({"pin": "123"}, "invalid_pin"),
        ({"generation": 4}, "invalid_generation"),
        ({"ssn": "1"}, "invalid_ssn"),
    ],
)
def test_bad_issue_requests_are_refused(runtime: Runtime, tmp_path: Path, kwargs: dict, reason: str) -> None:
    with unit_of_work(runtime.sessions) as session:
        registry.add_cardholder(session, ssn="110105199003072813", name="张伟")
    args = {"ssn": "110105199003072813", "generation": 3, "pin": "123456", "out": tmp_path / "c.json", **kwargs}
    with pytest.raises(RegistryError) as caught, unit_of_work(runtime.sessions) as session:
        registry.issue_card(session, runtime.sealer, **args)
    assert caught.value.reason == reason
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        (["frozen", "active"], True),
        (["reported_lost", "active"], False),
        (["cancelled", "frozen"], False),
        (["reported_lost", "cancelled"], True),
        (["lost"], False),
    ],
)
def test_card_status_transitions(runtime: Runtime, tmp_path: Path, path: list[str], ok: bool) -> None:
    issued = issue(runtime, tmp_path, generation=2)
    try:
        for status in path:
            with unit_of_work(runtime.sessions) as session:
                registry.set_card_status(session, issued.card_number, status)
    except RegistryError:
        assert not ok
    else:
        assert ok


def test_status_changes_are_audited(runtime: Runtime, tmp_path: Path) -> None:
    from authsvc.audit.models import AuditEvent

    issued = issue(runtime, tmp_path, generation=2)
    with unit_of_work(runtime.sessions) as session:
        registry.set_card_status(session, issued.card_number, "frozen")
        registry.add_terminal(session, terminal_id="k-1", region_code="110000", out=tmp_path / "k.json", service=None)
        registry.set_terminal_status(session, "k-1", "disabled")
    with unit_of_work(runtime.sessions) as session:
        events = [(e.event, e.detail) for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert events == [
        ("card_status", {"from": "active", "to": "frozen"}),
        ("terminal_added", None),
        ("terminal_status", {"from": "active", "to": "disabled"}),
    ]


def test_terminal_registration_writes_only_the_kiosk_its_private_key(runtime: Runtime, tmp_path: Path) -> None:
    out = tmp_path / "kiosk.json"
    with unit_of_work(runtime.sessions) as session:
        row = registry.add_terminal(session, terminal_id="k-1", region_code="110000", out=out, service="http://x")
    doc = json.loads(out.read_text())
    assert doc["terminal_id"] == "k-1" and "PRIVATE KEY" in doc["private_key_pem"] and doc["service"] == "http://x"
    assert "PRIVATE" not in row.public_key_pem
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with pytest.raises(RegistryError, match="already registered"), unit_of_work(runtime.sessions) as session:
        registry.add_terminal(session, terminal_id="k-1", region_code="110000", out=tmp_path / "b.json", service=None)
    with pytest.raises(RegistryError, match="terminal id"), unit_of_work(runtime.sessions) as session:
        registry.add_terminal(session, terminal_id="k 1", region_code="110000", out=tmp_path / "c.json", service=None)
