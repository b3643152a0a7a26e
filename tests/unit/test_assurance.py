import pytest

from authsvc.tokens import assurance


@pytest.mark.parametrize(
    ("generation", "pin", "acr", "amr"),
    [
        (3, True, assurance.ACR_CARD_PIN, ["sc", "hwk", "pin", "mfa"]),
        (3, False, assurance.ACR_CARD, ["sc", "hwk"]),
        (2, True, assurance.ACR_CARD_PIN, ["sc", "pin", "mfa"]),
        (2, False, assurance.ACR_CARD, ["sc"]),
    ],
)
def test_card_login_assurance(generation: int, pin: bool, acr: str, amr: list[str]) -> None:
    assert assurance.card_login(generation=generation, pin_verified=pin) == (acr, amr)


def test_levels_are_ordered() -> None:
    assert assurance.satisfies(assurance.ACR_CARD_PIN, assurance.ACR_CARD)
    assert not assurance.satisfies(assurance.ACR_CARD, assurance.ACR_CARD_PIN)
    assert assurance.satisfies(assurance.ACR_CARD_PIN, assurance.ACR_CARD_PIN)
    assert not assurance.satisfies("urn:other", assurance.ACR_CARD)
