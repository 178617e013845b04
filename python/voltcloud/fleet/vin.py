"""Vehicle identification numbers: the structure of ISO 3779 and the check digit of GB 16735.

ISO 3779 fixes the structure: 17 characters, digits and capital Latin letters without I, O and Q (they read
as 1 and 0). GB 16735-2019 (China; the same rule as the USA's 49 CFR 565.15) makes the 9th character a check
digit: each character is transliterated to a number (letters by the table below, digits as themselves),
multiplied by its position's weight, the products summed, and the sum taken mod 11; a remainder of 10 is
written 'X'. The 9th position's weight is 0, so the check digit does not check itself.
"""

from __future__ import annotations

from voltcloud.platform.errors import InvalidArgument

VIN_LENGTH = 17
CHECK_POSITION = 8  # zero-based: the 9th character
WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
TRANSLITERATION: dict[str, int] = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}


def check_digit(vin: str) -> str:
    """The check digit a 17-character VIN of allowed characters must carry in its 9th position."""
    remainder = sum(TRANSLITERATION[ch] * w for ch, w in zip(vin, WEIGHTS, strict=True)) % 11
    return "X" if remainder == 10 else str(remainder)


def normalise_vin(text: str, field: str = "vehicle.vin") -> str:
    """The VIN in capitals if it is well formed and its check digit is right; INVALID_ARGUMENT naming `field`
    and saying which rule it breaks otherwise."""
    vin = text.strip().upper()
    if len(vin) != VIN_LENGTH:
        raise InvalidArgument.for_field(field, f"must be {VIN_LENGTH} characters, got {len(vin)}")
    bad = sorted({ch for ch in vin if ch not in TRANSLITERATION})
    if bad:
        raise InvalidArgument.for_field(
            field, f"may hold only digits and capital letters other than I, O and Q; found {''.join(bad)!r}"
        )
    expected = check_digit(vin)
    if vin[CHECK_POSITION] != expected:
        raise InvalidArgument.for_field(
            field, f"check digit (9th character) is {vin[CHECK_POSITION]!r}, GB 16735 gives {expected!r}"
        )
    return vin
