"""The login rules of authsvc/kiosk/verification.py, without I/O."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from authsvc.kiosk.verification import ReadCard, Refused, check_registry
from authsvc.registry.models import Card, Cardholder
from card.records import CardIdentification, HolderData

TODAY = date(2026, 11, 28)


def _registered(**changes: object) -> Card:
    holder = Cardholder(
        subject="s" * 32,
        ssn="110105199003072813",
        name="张伟",
        sex="1",
        birth_date=date(1990, 3, 7),
        region_code="110105",
    )
    card = Card(
        card_number="A12345678",
        identification_code="110105D1560000050123456789ABCDEF",
        generation=3,
        status="active",
        issued_on=TODAY - timedelta(days=10),
        expires_on=TODAY + timedelta(days=3650),
    )
    card.holder = holder
    for name, value in changes.items():
        setattr(holder if hasattr(holder, name) and not hasattr(card, name) else card, name, value)
    return card


def _read(**changes: object) -> ReadCard:
    ident = dict(
        identification_code="110105D1560000050123456789ABCDEF",
        card_type="1",
        spec_version="3.00",
        issuer_org="110105",
        issued_on=TODAY - timedelta(days=10),
        expires_on=TODAY + timedelta(days=3650),
        card_number="A12345678",
    )
    holder = dict(ssn="110105199003072813", name="张伟", sex="1", nation=None, birth_date=date(1990, 3, 7))
    for name, value in changes.items():
        (ident if name in ident else holder)[name] = value
    return ReadCard(CardIdentification(**ident), HolderData(**holder), flags=1, cryptogram=b"")  # type: ignore[arg-type]


def test_a_matching_card_passes() -> None:
    check_registry(_registered(), _read(), today=TODAY)


@pytest.mark.parametrize(
    ("registered", "read", "reason"),
    [
        ({"generation": 2}, {}, "card_unknown"),
        ({"identification_code": "110105D156000005FFFFFFFFFFFFFFFF"}, {}, "card_unknown"),
        ({}, {"name": "张卫"}, "holder_mismatch"),
        ({}, {"sex": "2"}, "holder_mismatch"),
        ({}, {"birth_date": date(1990, 3, 8)}, "holder_mismatch"),
        ({}, {"ssn": "330106198511124520"}, "holder_mismatch"),
        ({}, {"ssn": "110105199003072812"}, "card_data_invalid"),
        ({"expires_on": TODAY - timedelta(days=1)}, {}, "card_expired"),
        ({}, {"expires_on": TODAY - timedelta(days=1), "issued_on": TODAY - timedelta(days=900)}, "card_expired"),
        ({"status": "reported_lost"}, {}, "card_lost"),
        ({"status": "frozen"}, {}, "card_frozen"),
        ({"status": "cancelled"}, {}, "card_cancelled"),
    ],
)
def test_each_rule_refuses_with_its_reason(registered: dict, read: dict, reason: str) -> None:
    with pytest.raises(Refused) as refused:
        check_registry(_registered(**registered), _read(**read), today=TODAY)
    assert refused.value.reason == reason
