import contextlib
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authsvc.registry import ssn

VALID = ["110105199003072813", "330106198511124520", "11010519491231002X"]


@pytest.mark.parametrize("number", VALID)
def test_valid_numbers_are_accepted(number: str) -> None:
    assert ssn.normalize(number) == number


def test_lower_case_x_is_normalised() -> None:
    assert ssn.normalize("11010519491231002x") == "11010519491231002X"


@pytest.mark.parametrize(
    ("number", "why"),
    [
        ("110105199003072812", "check character"),
        ("11010519900307281", "17 digits"),
        ("1101051990030728133", "17 digits"),
        ("010105199003072813", "17 digits"),  # region cannot start with 0
        ("11010519901307281X", "check"),  # month 13 is checked after the check character
        ("A10105199003072813", "17 digits"),
        ("", "17 digits"),
    ],
)
def test_invalid_numbers_are_refused_with_a_reason(number: str, why: str) -> None:
    with pytest.raises(ssn.InvalidSSN, match=why):
        ssn.normalize(number)


def _with_check(first17: str) -> str:
    return first17 + ssn.check_character(first17)


def test_impossible_birth_date_is_refused_even_with_a_right_check_character() -> None:
    with pytest.raises(ssn.InvalidSSN, match="not a date"):
        ssn.normalize(_with_check("11010519900230281"))  # 30 February
    with pytest.raises(ssn.InvalidSSN, match="out of range"):
        ssn.normalize(_with_check("11010520990101281"), today=date(2026, 1, 1))


valid_numbers = st.builds(
    lambda region, born, seq: _with_check(f"{region}{born:%Y%m%d}{seq:03d}"),
    st.integers(100000, 999999),
    st.dates(date(1900, 1, 1), date(2020, 12, 31)),
    st.integers(0, 999),
)


@given(valid_numbers)
def test_generated_numbers_round_trip_and_any_one_digit_change_is_caught(number: str) -> None:
    assert ssn.normalize(number) == number
    for i in range(17):
        changed = number[:i] + str((int(number[i]) + 1) % 10) + number[i + 1 :]
        with pytest.raises(ssn.InvalidSSN):
            ssn.normalize(changed)


@given(st.text(max_size=40))
def test_arbitrary_text_raises_only_invalid_ssn(text: str) -> None:
    with contextlib.suppress(ssn.InvalidSSN):
        ssn.normalize(text)


@given(valid_numbers)
def test_masking_hides_the_birth_date_and_sequence(number: str) -> None:
    masked = ssn.mask(number)
    assert masked[:6] == number[:6] and masked[-4:] == number[-4:]
    assert masked[6:14] == "*" * 8
    assert ssn.sex(number) == ("1" if int(number[16]) % 2 else "2")
