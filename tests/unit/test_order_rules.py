"""Ordering rules without I/O: what a quote request must satisfy, the hold on a price, the QR a driver scans,
and who may see an order."""

from __future__ import annotations

import dataclasses
import datetime as dt
from types import SimpleNamespace
from typing import cast

import pytest

from voltcloud.ordering.models import Order
from voltcloud.ordering.orders import may_see
from voltcloud.ordering.quoting import MAX_OPTIONS, QuoteInput, hold_amount, validate
from voltcloud.ordering.scan import ScanTarget, parse_qr
from voltcloud.ordering.states import Mode
from voltcloud.platform.auth import Principal, Role, Tenant
from voltcloud.platform.errors import InvalidArgument

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
GOOD = QuoteInput(vehicle_id="v-1", lat=31.0, lng=121.0, soc_permille=200, target_soc_permille=800)


def _refused_fields(inp: QuoteInput) -> list[str]:
    with pytest.raises(InvalidArgument) as error:
        validate(inp, NOW)
    return [v.field for v in error.value.violations]


def test_a_sound_quote_request_passes() -> None:
    validate(dataclasses.replace(GOOD, modes=frozenset(int(m) for m in Mode), max_options=MAX_OPTIONS), NOW)


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"vehicle_id": ""}, ["vehicle_id"]),
        ({"soc_permille": 1001}, ["soc_permille"]),
        ({"target_soc_permille": -1}, ["target_soc_permille"]),
        ({"target_soc_permille": 200}, ["target_soc_permille"]),  # not above the current charge
        ({"modes": frozenset({int(Mode.SWAP), 99})}, ["allowed_modes"]),
        ({"deadline": NOW}, ["deadline"]),
        ({"max_options": MAX_OPTIONS + 1}, ["max_options"]),
        ({"vehicle_id": "", "deadline": NOW - dt.timedelta(seconds=1)}, ["vehicle_id", "deadline"]),
    ],
)
def test_a_bad_quote_request_names_every_bad_field(change: dict[str, object], fields: list[str]) -> None:
    assert _refused_fields(dataclasses.replace(GOOD, **change)) == fields  # type: ignore[arg-type]


def test_a_quote_requests_positions_are_checked() -> None:
    assert _refused_fields(dataclasses.replace(GOOD, lat=91.0))[0].startswith("position")
    assert _refused_fields(dataclasses.replace(GOOD, return_lat=0.0, return_lng=181.0))[0].startswith("return_position")


def test_the_hold_is_the_price_plus_the_margin_rounded_up_and_never_zero() -> None:
    assert hold_amount(1000, 1200) == 1200
    assert hold_amount(1001, 1200) == 1202  # 1201.2 rounded up
    assert hold_amount(0, 1200) == 1


def test_a_qr_names_a_connector_or_a_lane() -> None:
    assert parse_qr("voltcloud://c/st-1/st-1-c1-2") == ScanTarget("st-1", connector_id="st-1-c1-2")
    assert parse_qr("  voltcloud://l/st-1/3 \n") == ScanTarget("st-1", lane=3)


@pytest.mark.parametrize(
    "payload", ["", "voltcloud://x/st-1/1", "https://c/st-1/1", "voltcloud://l/st-1/0", "voltcloud://l/st-1/65",
                "voltcloud://l/st-1/a", "voltcloud://c/st 1/c1"],
)  # fmt: skip
def test_any_other_qr_is_refused_on_its_field(payload: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        parse_qr(payload)
    assert [v.field for v in error.value.violations] == ["qr_payload"]


ORDER = cast(Order, SimpleNamespace(created_by="drv-1", fleet_id="fl-1", operator_id="op-1", unit_id="u-1"))


@pytest.mark.parametrize(
    ("principal", "visible"),
    [
        (Principal("admin", Role.PLATFORM_ADMIN, None), True),
        (Principal("drv-1", Role.DRIVER, None), True),
        (Principal("drv-2", Role.DRIVER, Tenant("fleet", "fl-1")), False),
        (Principal("mgr", Role.FLEET_MANAGER, Tenant("fleet", "fl-1")), True),
        (Principal("mgr", Role.FLEET_MANAGER, Tenant("fleet", "fl-2")), False),
        (Principal("mgr", Role.FLEET_MANAGER, Tenant("operator", "fl-1")), False),
        (Principal("ops", Role.OPERATOR, Tenant("operator", "op-1")), True),
        (Principal("ops", Role.OPERATOR, Tenant("fleet", "op-1")), False),
        (Principal("u-1", Role.SPECIALIST, Tenant("operator", "op-1")), True),
        (Principal("u-2", Role.SPECIALIST, Tenant("operator", "op-1")), False),
    ],
)
def test_an_order_is_seen_by_its_creator_fleet_operator_unit_and_the_admin(principal: Principal, visible: bool) -> None:
    assert may_see(principal, ORDER) is visible
