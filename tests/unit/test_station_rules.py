"""Stations rules without I/O: rows checked against the engine's limits (naming the API field), the slots a pack
may sit in, and a charging token's verdict."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from voltcloud import _core
from voltcloud.platform.enums import ConnectorStandard, StationKind, TagStatus
from voltcloud.platform.errors import InvalidArgument
from voltcloud.stations import packs, registry, tokens
from voltcloud.stations.models import Station
from voltcloud.stations.registry import ConnectorSpec
from voltcloud.stations.token_models import ChargingToken

LIMITS = _core.LIMITS  # read from the engine, not from the module under test
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _station(**overrides: Any) -> Station:
    row: dict[str, Any] = dict(
        id="st-1", operator_id="op-1", kind=int(StationKind.SWAP), name="s", lat=31.0, lng=121.0,
        power_cap_w=500_000, lanes=2, swap_time_s=300, slot_count=20,
    )  # fmt: skip
    return Station(**(row | overrides))


def _fields(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in error.value.violations]


def test_a_station_within_the_limits_passes() -> None:
    registry.check_engine_limits(_station())
    registry.check_engine_limits(_station(kind=int(StationKind.CHARGING), lanes=0, swap_time_s=0, slot_count=0))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"lanes": 0}, "station.swap.lane_count"),
        ({"lanes": LIMITS["max_lanes"] + 1}, "station.swap.lane_count"),
        ({"swap_time_s": LIMITS["max_swap_time_s"] + 1}, "station.swap.swap_duration"),
        ({"slot_count": LIMITS["max_slots"] + 1}, "station.swap.slot_count"),
        ({"lat": 91.0}, "station.position.lat"),
        ({"lng": float("nan")}, "station.position.lng"),
        ({"power_cap_w": LIMITS["max_station_power_w"] + 1}, "station.swap.charging_power_cap_w"),
        ({"kind": int(StationKind.CHARGING), "lanes": 0, "swap_time_s": 0, "power_cap_w": -1},
         "station.charging.site_power_cap_w"),
        ({"kind": LIMITS["station_kind_max"] + 1}, "station.kind"),
    ],
)  # fmt: skip
def test_a_station_outside_the_limits_is_refused_naming_the_api_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        registry.check_engine_limits(_station(**overrides))
    assert _fields(error) == [field]


def _connector(charger: int, connector: int, index: int = 0, power_w: int = 60_000) -> ConnectorSpec:
    return ConnectorSpec(charger, connector, int(ConnectorStandard.GBT_DC), power_w, index)


def test_connectors_within_the_limits_pass() -> None:
    registry.check_connector_limits((_connector(1, 1), _connector(1, 2, 1), _connector(2, 1)))


def test_a_connector_is_refused_by_its_own_path() -> None:
    bad_power = _connector(2, 1, 0, power_w=LIMITS["max_connector_power_w"] + 1)
    bad_number = _connector(1, LIMITS["max_connectors_per_charger"] + 1, 1)
    with pytest.raises(InvalidArgument) as error:
        registry.check_connector_limits((_connector(1, 1), bad_number, bad_power))
    assert _fields(error) == [
        "station.charging.chargers[0].connectors[1].ocpp_connector_number",
        "station.charging.chargers[1].connectors[0].max_power_w",
    ]


def test_too_many_connectors_on_one_charger_are_refused() -> None:
    many = tuple(_connector(1, n, n - 1) for n in range(1, LIMITS["max_connectors_per_charger"] + 2))
    with pytest.raises(InvalidArgument) as error:
        registry.check_connector_limits(many)
    assert "station.charging.chargers[0].connectors" in _fields(error)


def test_pack_values_are_checked_naming_the_pack_field() -> None:
    packs.check_engine_limits(pack_type_id=1, soc=1000, soh=0, cycles=0)
    with pytest.raises(InvalidArgument) as error:
        packs.check_engine_limits(pack_type_id=-1, soc=LIMITS["max_permille"] + 1, soh=-1, cycles=-1)
    assert _fields(error) == ["pack.pack_type_id", "pack.soc_permille", "pack.soh_permille", "pack.cycle_count"]


def test_a_pack_sits_only_in_a_swap_stations_slots() -> None:
    packs._check_slot(_station(slot_count=20), 20)
    packs._check_slot(_station(slot_count=20), None)
    with pytest.raises(InvalidArgument, match="within \\[1, 20\\]"):
        packs._check_slot(_station(slot_count=20), 21)
    with pytest.raises(InvalidArgument, match="not a swap station"):
        packs._check_slot(_station(kind=int(StationKind.CHARGING)), 1)


def test_a_station_without_a_slot_count_allows_the_engines_slots() -> None:
    packs._check_slot(_station(slot_count=0), LIMITS["max_slots"])
    with pytest.raises(InvalidArgument):
        packs._check_slot(_station(slot_count=0), LIMITS["max_slots"] + 1)
    with pytest.raises(InvalidArgument):
        packs._check_slot(_station(slot_count=0), 0)


def _token(status: TagStatus = TagStatus.ACCEPTED, expires_at: dt.datetime | None = None) -> ChargingToken:
    return ChargingToken(
        id="ct-1", id_tag="TAG1", operator_id="op-1", owner_kind="driver", owner_id="d-1", vehicle_id="v-1",
        account_id="acc-1", status=int(status), expires_at=expires_at, issued_by="ops", created_at=NOW,
        updated_at=NOW,
    )  # fmt: skip


def test_a_tokens_verdict() -> None:
    assert tokens.verdict(None, NOW) is TagStatus.INVALID
    assert tokens.verdict(_token(), NOW) is TagStatus.ACCEPTED
    assert tokens.verdict(_token(expires_at=NOW + dt.timedelta(seconds=1)), NOW) is TagStatus.ACCEPTED
    # Expiry is a time, not a status: the token expires at that instant, without a write.
    assert tokens.verdict(_token(expires_at=NOW), NOW) is TagStatus.EXPIRED
    # A blocked token says BLOCKED even when it has also expired.
    assert tokens.verdict(_token(TagStatus.BLOCKED, expires_at=NOW), NOW) is TagStatus.BLOCKED


@pytest.mark.parametrize("tag", ["A", "abc.DEF_1:2-3", "x" * 20])
def test_ocpp_id_tags_are_accepted(tag: str) -> None:
    assert tokens.check_id_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", "x" * 21, "with space", "ümlaut", "a/b"])
def test_other_id_tags_are_refused_naming_the_field(tag: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        tokens.check_id_tag(tag, "token.id_tag")
    assert _fields(error) == ["token.id_tag"]


def test_an_unpaid_sessions_reason_names_why_no_order_was_made() -> None:
    assert tokens._reason(None) == "NO_TAG"
    assert tokens._reason(TagStatus.INVALID) == "UNKNOWN_TAG"
    assert tokens._reason(TagStatus.BLOCKED) == "BLOCKED_TAG"
    assert tokens._reason(TagStatus.EXPIRED) == "EXPIRED_TAG"
    assert tokens._reason(TagStatus.ACCEPTED) == "NO_ORDER"
