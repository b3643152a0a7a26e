"""The assurance policy: checks → level and amr; which methods a login still needs."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authsvc.tokens import assurance
from authsvc.tokens.assurance import HIGH, LOW, SUBSTANTIAL


@pytest.mark.parametrize(
    ("generation", "pin", "acr", "amr"),
    [
        (3, True, SUBSTANTIAL, ["sc", "hwk", "pin", "mfa"]),
        (3, False, LOW, ["sc", "hwk"]),
        (2, True, SUBSTANTIAL, ["sc", "pin", "mfa"]),
        (2, False, LOW, ["sc"]),
    ],
)
def test_card_login_assurance(generation: int, pin: bool, acr: str, amr: list[str]) -> None:
    assert assurance.card_login(generation=generation, pin_verified=pin) == (acr, amr)


@pytest.mark.parametrize(
    ("amr", "level", "reported"),
    [
        (["sc"], LOW, ["sc"]),  # a card without its PIN: possession only
        (["hwk"], LOW, ["hwk"]),  # an e-card
        (["sc", "pin"], SUBSTANTIAL, ["sc", "pin", "mfa"]),
        (["sc", "face"], SUBSTANTIAL, ["sc", "face", "mfa"]),
        (["hwk", "face"], SUBSTANTIAL, ["hwk", "face", "mfa"]),  # e-card + face
        (["hwk", "face", "mfa"], SUBSTANTIAL, ["hwk", "face", "mfa"]),  # a claimed mfa is recomputed, not trusted
        (["sc", "hwk", "pin", "face"], HIGH, ["sc", "hwk", "pin", "face", "mfa"]),
        (["sc", "pin", "face", "mfa"], HIGH, ["sc", "pin", "face", "mfa"]),
        (["hwk", "pin", "face"], SUBSTANTIAL, ["hwk", "face", "mfa"]),  # only a card can attest a PIN
        (["hwk", "pin"], LOW, ["hwk"]),
        (["face"], None, ["face"]),  # a face alone identifies nobody
        (["pin"], None, []),
        ([], None, []),
        (["otp", "sms"], None, []),  # unknown methods count for nothing
    ],
)
def test_checks_reach_a_level(amr: list[str], level: str | None, reported: list[str]) -> None:
    assert assurance.grade(amr) == (level, reported)


def test_levels_are_ordered() -> None:
    assert assurance.satisfies(SUBSTANTIAL, LOW) and assurance.satisfies(HIGH, SUBSTANTIAL)
    assert not assurance.satisfies(LOW, SUBSTANTIAL)
    assert assurance.satisfies(SUBSTANTIAL, SUBSTANTIAL)
    assert not assurance.satisfies("urn:other", LOW) and not assurance.satisfies(None, LOW)
    assert not assurance.satisfies(HIGH, "urn:other")


@pytest.mark.parametrize(
    ("have", "wanted", "offered"),
    [
        ([], LOW, ["card", "ecard"]),
        ([], SUBSTANTIAL, ["card", "ecard"]),  # card + PIN at once, or the e-card then a face
        ([], HIGH, ["card"]),  # an e-card cannot lead to the highest level: only a card attests a PIN
        (["sc"], SUBSTANTIAL, ["card", "face"]),  # again with the PIN, or a face
        (["sc", "pin"], HIGH, ["face"]),  # step-up: only the missing check
        (["sc", "hwk", "pin", "mfa"], HIGH, ["face"]),
        (["hwk"], SUBSTANTIAL, ["card", "face"]),  # a face, or the card with its PIN
        (["hwk"], HIGH, ["card", "face"]),
        (["hwk", "face"], HIGH, ["card"]),
        (["sc", "face"], HIGH, ["card"]),
        (["sc", "pin"], SUBSTANTIAL, []),
        (["sc", "pin", "face"], HIGH, []),
        (["face"], HIGH, ["card"]),
    ],
)
def test_only_the_missing_checks_are_offered(have: list[str], wanted: str, offered: list[str]) -> None:
    assert assurance.missing(have, wanted) == offered


@pytest.mark.parametrize(
    ("have", "wanted", "offered"),
    [
        ([], LOW, ["card", "ecard"]),
        ([], SUBSTANTIAL, ["card"]),  # the e-card needs a face to get there, which this deployment lacks
        (["hwk"], SUBSTANTIAL, ["card"]),
        ([], HIGH, []),  # out of reach here: nothing is worth starting
        (["sc", "pin"], HIGH, []),
    ],
)
def test_only_methods_the_deployment_has_are_counted(have: list[str], wanted: str, offered: list[str]) -> None:
    # Without a face check: the smallest sets are chosen among the methods there are, so no method is offered
    # that leads nowhere here, and a level out of reach offers none.
    assert assurance.missing(have, wanted, among={"card", "ecard"}) == offered


@given(st.lists(st.sampled_from(["sc", "hwk", "pin", "face", "mfa", "otp"])), st.sampled_from(assurance.LEVELS))
def test_every_offered_method_leads_towards_the_level(have: list[str], wanted: str) -> None:
    offered = assurance.missing(have, wanted)
    if assurance.satisfies(assurance.grade(have)[0], wanted):
        assert offered == []
        return
    assert offered  # every level is reachable from anywhere
    for method in offered:
        after = [*have, *assurance.METHOD_CHECKS[method]]
        # it adds a check, and the level stays reachable through what is offered next
        assert not assurance.METHOD_CHECKS[method] <= set(have)
        assert assurance.satisfies(assurance.grade(after)[0], wanted) or assurance.missing(after, wanted)
