"""CreateOrder's rules that need no database: the order's times, the reservation window check, its new row."""

from __future__ import annotations

import dataclasses
import datetime as dt

from voltcloud.ordering.models import Quote
from voltcloud.ordering.orders import CreateInput, _new_order, _request_hash, order_times, window_clash
from voltcloud.ordering.quoting import QuotedOption
from voltcloud.ordering.states import Mode, OrderState
from voltcloud.platform.auth import Principal, Role

NOW = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
OPTION = QuotedOption(
    option_id="opt-1", rank=1, rank_reason=1, mode=int(Mode.CHARGE), resource_kind=1, resource_id="cn-1",
    operator_id="op-1", station_id="st-1", connector_id="cn-1", pack_id=None, unit_id=None, eta_s=600, wait_s=120,
    service_s=1800, finish_at="2026-01-05T08:42:00Z", energy_wh=20_000, distance_m=4000, arrival_soc_permille=200,
    service_lat=1.0, service_lng=2.0, price_minor=1500, currency="EUR", rate_model_id="rm-1", rate_model_version=3,
)  # fmt: skip


def reservation(rid: str) -> str:
    return rid  # `overlapping` returns the ids of the booked reservations


def test_eta_and_service_deadline_follow_the_option_and_the_grace() -> None:
    times = order_times(OPTION, NOW, grace_s=300)
    assert times.eta == NOW + dt.timedelta(seconds=600)
    assert times.service_by == NOW + dt.timedelta(seconds=600 + 120 + 300)


def test_a_connector_takes_one_booking_and_a_swap_station_one_per_lane() -> None:
    assert window_clash(Mode.CHARGE, OPTION, [], lanes=1) is None
    reason = window_clash(Mode.CHARGE, OPTION, [reservation("rsv-9")], lanes=4)
    assert reason == "connector cn-1 is booked by reservation rsv-9"
    swap = dataclasses.replace(OPTION, mode=int(Mode.SWAP), connector_id=None)
    assert window_clash(Mode.SWAP, swap, [reservation("a")], lanes=2) is None
    assert window_clash(Mode.SWAP, swap, [reservation("a"), reservation("b")], lanes=2) == (
        "every lane of station st-1 is booked in that window"
    )


def test_the_new_order_row_is_built_from_option_request_and_vehicle() -> None:
    principal = Principal("drv-1", Role.DRIVER, None)
    quote = Quote(id="q-1", vehicle_id="veh-1")
    inp = CreateInput(quote_id="q-1", option_id="opt-1", idempotency_key="k-1")
    times = order_times(OPTION, NOW, grace_s=0)
    order = _new_order("ord_1", principal, quote, OPTION, inp, ("veh-1", "fl-1"), times, NOW)
    assert order.id == "ord_1" and order.state == int(OrderState.CREATED) and order.mode == int(Mode.CHARGE)
    assert (order.vehicle_id, order.fleet_id, order.driver_id) == ("veh-1", "fl-1", "drv-1")
    assert (order.station_id, order.connector_id, order.pack_id) == ("st-1", "cn-1", None)
    assert order.service_by == times.service_by and order.request_hash == _request_hash(inp)
    assert (order.hold_id, order.hold_amount_minor, order.payer_account_id) == ("", 0, "")
    van = dataclasses.replace(OPTION, station_id=None, pricing_station_id="st-7")
    fleet_manager = Principal("mgr-1", Role.FLEET_MANAGER, None)
    other = _new_order("ord_2", fleet_manager, quote, van, inp, ("veh-1", None), times, NOW)
    assert other.station_id == "st-7" and other.driver_id is None and other.fleet_id is None
