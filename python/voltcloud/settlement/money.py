"""Money arithmetic: integer minor units, the one rounding rule, currencies, and the domain's enums.

Rounding rule (the only one): **half-up on the absolute value** ("round half away from zero"), applied once per
bill line when a unit price in micros times a quantity becomes minor units. Everything else is exact integer
arithmetic; no float ever touches money.
"""

from __future__ import annotations

import enum
import re

from voltcloud.platform.errors import InvalidArgument

MICROS_PER_MAJOR = 1_000_000
# The currency of an account or coupon whose request names none: the platform's home market.
DEFAULT_CURRENCY = "CNY"

# ISO 4217 minor-unit exponents that differ from 2.
_EXPONENTS = {"JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3, "TND": 3}
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def round_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded to the nearest integer, halves away from zero. Exact for any ints."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    sign = -1 if numerator < 0 else 1
    quotient, remainder = divmod(abs(numerator), denominator)
    if 2 * remainder >= denominator:
        quotient += 1
    return sign * quotient


def exponent(currency: str) -> int:
    return _EXPONENTS.get(currency, 2)


def micros_per_minor(currency: str) -> int:
    """How many micros (millionths of the major unit) one minor unit is: 10_000 for CNY (1 fen)."""
    divisor: int = 10 ** exponent(currency)
    return MICROS_PER_MAJOR // divisor


def check_currency(field: str, currency: str) -> str:
    if not _CURRENCY.match(currency):
        raise InvalidArgument.for_field(field, f"must be an ISO 4217 code like 'CNY', got {currency!r}")
    return currency


def check_amount(field: str, amount: int, *, allow_zero: bool = False) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidArgument.for_field(field, "must be an integer amount in minor units")
    if amount < 0 or (amount == 0 and not allow_zero):
        raise InvalidArgument.for_field(field, f"must be {'non-negative' if allow_zero else 'positive'}, got {amount}")
    return amount


class AccountKind(enum.IntEnum):
    """Same numbers as voltcloud.v1.AccountKind."""

    CUSTOMER = 1
    FLEET = 2
    OPERATOR = 3
    PLATFORM_REVENUE = 4
    PROVIDER_CLEARING = 5
    SPECIALIST = 6
    PROMOTIONS = 7
    ARREARS = 8


class EntryKind(enum.IntEnum):
    """Same numbers as voltcloud.v1.JournalEntryKind."""

    TOP_UP = 1
    WITHDRAWAL = 2
    ORDER_SETTLEMENT = 3
    REFUND = 4
    ALLOCATION = 5
    PAYOUT = 6
    COUPON = 7
    ADJUSTMENT = 8
    CANCELLATION_FEE = 9


class HoldState(enum.IntEnum):
    ACTIVE = 1
    CAPTURED = 2
    RELEASED = 3
    EXPIRED = 4


class PaymentState(enum.IntEnum):
    PENDING = 1
    SUCCEEDED = 2
    FAILED = 3


class BillState(enum.IntEnum):
    DRAFT = 1
    ISSUED = 2
    PAID = 3
    OVERDUE = 4
    VOID = 5


class MatchStatus(enum.IntEnum):
    MATCHED = 1
    AMOUNT_MISMATCH = 2
    MISSING_IN_LEDGER = 3
    MISSING_IN_STATEMENT = 4
    DUPLICATE = 5
