"""The VIN rule: ISO 3779's structure and GB 16735's check digit, on real VINs."""

from __future__ import annotations

import pytest

from voltcloud.fleet.vin import TRANSLITERATION, check_digit, normalise_vin
from voltcloud.platform.errors import InvalidArgument

# Real VINs whose 9th character is the GB 16735 / 49 CFR 565.15 check digit.
VALID = [
    "1M8GDM9AXKP042788",  # the textbook example: remainder 10, written 'X'
    "1HGCM82633A004352",  # Honda Accord
    "11111111111111111",  # all ones: 1 * sum(weights) = 89, 89 mod 11 = 1
]


@pytest.mark.parametrize("vin", VALID)
def test_real_vins_pass(vin: str) -> None:
    assert normalise_vin(vin) == vin
    assert normalise_vin(vin.lower()) == vin  # case is normalised, not refused


@pytest.mark.parametrize("vin", VALID)
@pytest.mark.parametrize("position", [0, 3, 8, 10, 16])
def test_changing_one_character_is_caught(vin: str, position: int) -> None:
    # Every single substitution to a character with a different value changes the weighted sum by
    # (delta * weight) mod 11 != 0, except at position 9 (weight 0) where the check digit itself changes.
    replacement = next(ch for ch in "0123456789ABCDEFGH" if TRANSLITERATION[ch] != TRANSLITERATION[vin[position]])
    flipped = vin[:position] + replacement + vin[position + 1 :]
    with pytest.raises(InvalidArgument) as err:
        normalise_vin(flipped)
    assert err.value.violations[0].field == "vehicle.vin"
    assert "check digit" in err.value.message


def test_the_check_digit_is_computed_by_the_table() -> None:
    # 1M8GDM9A?KP042788: 1*8 + 4*7 + 8*6 + 7*5 + 4*4 + 4*3 + 9*2 + 1*10 + 2*9 + 7*8 + 0 + 4*6 + 2*5 + 7*4
    #   + 8*3 + 8*2 = 351 = 31*11 + 10 -> 'X'
    assert check_digit("1M8GDM9A0KP042788") == "X"


@pytest.mark.parametrize(
    ("vin", "words"),
    [
        ("1M8GDM9AXKP04278", "17 characters"),
        ("1M8GDM9AXKP0427888", "17 characters"),
        ("1M8GDM9AXKP0O2788", "other than I, O and Q"),  # the letter O for a zero
        ("IM8GDM9AXKP042788", "other than I, O and Q"),
        ("1M8GDM9AXKP04278-", "other than I, O and Q"),
    ],
)
def test_malformed_vins_say_why(vin: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        normalise_vin(vin)
    assert words in err.value.message
    assert err.value.violations[0].field == "vehicle.vin"
