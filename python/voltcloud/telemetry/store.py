"""Applies a batch of vehicle readings in the caller's transaction: remediation, the history (one row per
frame, one bulk write: `frames.py`), the live state (forward in reading time only), the alerts, and one
"vehicle_state" feed change carrying every changed vehicle's state (`states_change`; one outbox row and one
JSON document per batch: one per vehicle was a fifth of the batch).

Reissued and out-of-order readings merge by their own timestamps: all go to the history (a reading already
stored, same vehicle, time and metric, is kept as it was), only readings newer than the live state move it.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.api import Driver, Vehicle
from voltcloud.platform import feed
from voltcloud.platform.db import UtcDateTime, dialect
from voltcloud.platform.enums import DriverStatus, Metric, VehicleAlertKind
from voltcloud.platform.limits import TIMESTAMP_MIN
from voltcloud.telemetry import alerts, frames
from voltcloud.telemetry.models import VehicleLiveState
from voltcloud.telemetry.ports import PowerUpFinder
from voltcloud.telemetry.remediation import Cleaned, Prior, Raw, Thresholds, clean_frame, remediate

STATE_TOPIC = "vehicle_state"

_FIELD_OF: dict[int, str] = {
    int(Metric.SOC_PERMILLE): "soc_permille",
    int(Metric.SPEED_M_PER_H): "speed_m_per_h",
    int(Metric.ODOMETER_M): "odometer_m",
    int(Metric.VOLTAGE_MV): "voltage_mv",
    int(Metric.CURRENT_MA): "current_ma",
    int(Metric.TEMPERATURE_MAX_MILLI_C): "max_temperature_milli_c",
    int(Metric.TEMPERATURE_MILLI_C): "max_temperature_milli_c",
    int(Metric.INSULATION_KOHM): "insulation_kohm",
    int(Metric.LATITUDE_MICRODEG): "lat_microdeg",
    int(Metric.LONGITUDE_MICRODEG): "lng_microdeg",
}
# by metric: where two metrics fill one field (the temperatures), the higher-numbered reading of a frame wins,
# as it did when readings were applied one by one in (time, metric) order
_FIELDS = sorted(_FIELD_OF.items())
_SPEED = int(Metric.SPEED_M_PER_H)
# reading_at of a state that has seen no reading yet (only a GB/T alarm): never later than a real reading, so
# the first readings are not taken for reissued data (the column is NOT NULL).
NO_READING = TIMESTAMP_MIN
_SOC = int(Metric.SOC_PERMILLE)
_Rows = tuple[list[frames.Row], list[frames.Row]]


_STATE = VehicleLiveState.__table__  # type: ignore[attr-defined]
_STATE_COLUMNS = tuple(c.name for c in _STATE.columns)
_STATE_ROW = operator.attrgetter(*_STATE_COLUMNS)  # a State as a row tuple, in column order


@dataclass(slots=True)
class State:
    """A live state row as plain values: a batch reads and writes hundreds with one statement each (the ORM's
    per-object cost would be most of the batch)."""

    vehicle_id: str
    reading_at: dt.datetime
    updated_at: dt.datetime
    version: int = 0
    lat_microdeg: int | None = None
    lng_microdeg: int | None = None
    position_at: dt.datetime | None = None
    speed_m_per_h: int = 0
    soc_permille: int | None = None
    soc_at: dt.datetime | None = None
    odometer_m: int | None = None
    odometer_changed_at: dt.datetime | None = None
    voltage_mv: int | None = None
    current_ma: int | None = None
    max_temperature_milli_c: int | None = None
    insulation_kohm: int | None = None
    charging: bool = False
    alarm_level: int = 0
    alarm_codes: str = ""
    driver_id: str | None = None
    driving_since: dt.datetime | None = None
    stopped_since: dt.datetime | None = None
    suspect_soc: int | None = None
    suspect_lat: int | None = None
    suspect_lng: int | None = None


@dataclass(frozen=True)
class VehicleInfo:
    """The registered vehicle a source names: whose it is and who drives it now."""

    vehicle: Vehicle
    driver_id: str | None

    @property
    def id(self) -> str:
        return self.vehicle.id


@dataclass(frozen=True)
class Rules:
    thresholds: Thresholds
    limits: alerts.Limits


@dataclass
class Applied:
    readings: int = 0
    states: int = 0
    alerts: int = 0


async def vehicle_infos(session: AsyncSession, vehicle_ids: Sequence[str]) -> dict[str, VehicleInfo]:
    ids = list(dict.fromkeys(vehicle_ids))
    if not ids:
        return {}
    vehicles = {v.id: v for v in await session.exec(select(Vehicle).where(col(Vehicle.id).in_(ids)))}
    drivers = await session.exec(
        select(Driver.id, Driver.vehicle_id).where(
            col(Driver.vehicle_id).in_(ids), Driver.status == int(DriverStatus.APPROVED)
        )
    )
    driver_of = {vehicle_id: driver_id for driver_id, vehicle_id in drivers}
    return {vid: VehicleInfo(v, driver_of.get(vid) or v.owner_driver_id) for vid, v in vehicles.items()}


async def apply_readings(
    session: AsyncSession,
    rules: Rules,
    finder: PowerUpFinder,
    infos: Mapping[str, VehicleInfo],
    readings: Mapping[str, list[Raw]],
    now: dt.datetime,
) -> Applied:
    """One batch: every vehicle of `readings` must be in `infos` (the caller checked the scope)."""
    ids = sorted(readings)
    states = await _locked_states(session, ids)
    opened = await alerts.open_alerts(session, ids)
    fleet_limits = await alerts.limits_of(
        session, sorted({i.vehicle.fleet_id for i in infos.values() if i.vehicle.fleet_id}), rules.limits
    )
    fresh: list[frames.Row] = []
    maybe_stored: list[frames.Row] = []
    applied = Applied()
    changed: list[State] = []
    published: list[list[Any]] = []
    for vehicle_id in ids:
        info = infos[vehicle_id]
        state = states.get(vehicle_id)
        prior = _prior(state)
        raws = readings[vehicle_id]
        applied.readings += len(raws)
        seen = state.reading_at if state is not None else None
        values = clean_frame(prior, raws, rules.thresholds)
        if values is not None:  # the common case: one frame no rule touched
            time = raws[0].time
            (maybe_stored if seen is not None and time <= seen else fresh).append(
                frames.encode_clean(vehicle_id, time, now, values)
            )
            accepted = [(time, values)]
        else:
            cleaned = remediate(prior, raws, rules.thresholds)
            new, old = _frames(vehicle_id, cleaned, seen, now)
            fresh.extend(new)
            maybe_stored.extend(old)
            accepted = _accepted(cleaned)
        if not accepted:
            continue
        if state is None:
            state = State(vehicle_id, accepted[0][0], now)
        changed.append(state)
        speeds = _advance(state, prior, accepted, info, rules, fleet_limits, now)
        limits = fleet_limits.get(info.vehicle.fleet_id or "", rules.limits)
        soc_read = any(_SOC in frame for _, frame in accepted)
        driving = alerts.Driving(speeds, state.reading_at, state.driving_since, state.soc_permille, soc_read)
        actions = alerts.decide(driving, limits)
        hint = await _hint(session, finder, actions, info, state, now, opened)
        subject = alerts.Subject(vehicle_id, info.vehicle.fleet_id, state.driver_id)
        applied.alerts += len(await alerts.apply(session, subject, actions, opened, hint))
        published.append(state_row(state, info))
    await _write_states(session, changed)
    if published:
        await feed.publish(session, STATE_TOPIC, _batch_key(ids), states_change(published))
    await frames.write(await session.connection(), fresh, maybe_stored)
    applied.states = len(published)
    return applied


async def _locked_states(session: AsyncSession, ids: list[str]) -> dict[str, State]:
    """The batch's live states, locked on PostgreSQL (two streams of one vehicle serialise on its row)."""
    # untyped columns: the rows come as the driver gives them, and each distinct time is converted once (a
    # batch's states share most of theirs; SQLAlchemy's per-value processing was a tenth of the batch)
    columns: list[sa.ColumnClause[Any]] = [sa.column(name) for name in _STATE_COLUMNS]
    query = sa.select(*columns).select_from(_STATE).where(_STATE.c.vehicle_id.in_(ids))
    if dialect(session) == "postgresql":
        query = query.with_for_update()
    connection = await session.connection()
    engine_dialect = connection.dialect
    to_py = _STATE.c.reading_at.type.dialect_impl(engine_dialect).result_processor(engine_dialect, None)
    times: dict[Any, dt.datetime] = {}
    states = [_state(row, to_py, times) for row in await connection.execute(query)]
    return {state.vehicle_id: state for state in states}


def _state(row: Sequence[Any], to_py: Any, times: dict[Any, dt.datetime]) -> State:
    values = list(row)
    for i in _STATE_TIMES:
        raw = values[i]
        if raw is not None:
            values[i] = times[raw] if raw in times else times.setdefault(raw, to_py(raw) if to_py else raw)
    for i in _STATE_BOOLS:
        values[i] = bool(values[i])
    return State(**dict(zip(_STATE_COLUMNS, values, strict=True)))


async def _write_states(session: AsyncSession, states: list[State]) -> None:
    """The batch's new and changed states in one upsert (each row's version was raised by `_advance`; PostgreSQL
    holds the existing rows' locks since `_locked_states`). Plain tuples through the driver: SQLAlchemy's
    per-parameter processing of the rows' eight times was most of the write's cost."""
    if not states:
        return
    connection = await session.connection()
    rows = list(map(_STATE_ROW, states))
    names = ", ".join(_STATE_COLUMNS)
    assign = ", ".join(f"{name} = excluded.{name}" for name in _STATE_COLUMNS if name != "vehicle_id")
    upsert = f"ON CONFLICT (vehicle_id) DO UPDATE SET {assign}"
    if connection.dialect.name == "postgresql":
        arrays = ", ".join(f"$%d::{kind}[]" % (i + 1) for i, kind in enumerate(_PG_TYPES))
        sql = f"INSERT INTO {_STATE.name} ({names}) SELECT * FROM unnest({arrays}) {upsert}"
        await connection.exec_driver_sql(sql, tuple(list(column) for column in zip(*rows, strict=True)))
        return
    rows = _times_for_sqlite(connection.dialect, rows)
    sql = f"INSERT INTO {_STATE.name} ({names}) VALUES ({', '.join('?' * len(_STATE_COLUMNS))}) {upsert}"
    await connection.exec_driver_sql(sql, rows)


def _pg_type(column: sa.Column[Any]) -> str:
    kind = column.type
    if isinstance(kind, UtcDateTime):
        return "timestamptz"
    if isinstance(kind, sa.Boolean):
        return "boolean"
    if isinstance(kind, sa.BigInteger):
        return "bigint"
    if isinstance(kind, sa.Integer):
        return "integer"
    return "text"


_PG_TYPES = tuple(_pg_type(c) for c in _STATE.columns)
_STATE_TIMES = tuple(i for i, c in enumerate(_STATE.columns) if isinstance(c.type, UtcDateTime))
_STATE_BOOLS = tuple(i for i, c in enumerate(_STATE.columns) if isinstance(c.type, sa.Boolean))


def _times_for_sqlite(dialect: Any, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows' times in the text SQLAlchemy stores on SQLite (its type's own processor; each distinct time
    converted once: a batch's states share most of theirs)."""
    to_db = _STATE.c.reading_at.type.dialect_impl(dialect).bind_processor(dialect)
    if to_db is None:
        return rows
    converted: dict[dt.datetime, Any] = {}
    out = []
    for row in rows:
        values = list(row)
        for i in _STATE_TIMES:
            t = values[i]
            if t is not None:
                values[i] = converted[t] if t in converted else converted.setdefault(t, to_db(t))
        out.append(tuple(values))
    return out


def _prior(state: State | None) -> Prior:
    if state is None:
        return Prior()
    return Prior(
        reading_at=None if state.reading_at <= NO_READING else state.reading_at,
        soc=state.soc_permille,
        soc_at=state.soc_at,
        lat=state.lat_microdeg,
        lng=state.lng_microdeg,
        position_at=state.position_at,
        odometer=state.odometer_m,
        odometer_changed_at=state.odometer_changed_at,
        speed=state.speed_m_per_h,
        suspect_soc=state.suspect_soc,
        suspect_lat=state.suspect_lat,
        suspect_lng=state.suspect_lng,
    )


def _accepted(cleaned: list[Cleaned]) -> list[tuple[dt.datetime, dict[int, int]]]:
    """The readings that may move the live state, as (time, values by metric) per frame in time order."""
    out: list[tuple[dt.datetime, dict[int, int]]] = []
    for c in cleaned:
        if c.value is None or not c.accepted:
            continue
        if not out or out[-1][0] != c.time:
            out.append((c.time, {}))
        out[-1][1][c.metric] = c.value
    return out


def _advance(
    state: State,
    prior: Prior,
    accepted: list[tuple[dt.datetime, dict[int, int]]],
    info: VehicleInfo,
    rules: Rules,
    fleet_limits: Mapping[str, alerts.Limits],
    now: dt.datetime,
) -> list[tuple[dt.datetime, int]]:
    """Moves the live state forward through the accepted frames (in time order); returns the speeds."""
    rest = fleet_limits.get(info.vehicle.fleet_id or "", rules.limits).fatigue_rest
    speeds: list[tuple[dt.datetime, int]] = []
    for time, values in accepted:
        for metric, name in _FIELDS:
            if metric in values:
                setattr(state, name, values[metric])
        speed = values.get(_SPEED)
        if speed is not None:
            speeds.append((time, speed))
            state.driving_since, state.stopped_since = alerts.track_driving(
                state.driving_since, state.stopped_since, time, speed, rest
            )
    state.reading_at = max(state.reading_at, accepted[-1][0])
    state.soc_at, state.position_at = prior.soc_at, prior.position_at
    state.odometer_changed_at = prior.odometer_changed_at
    state.suspect_soc, state.suspect_lat, state.suspect_lng = prior.suspect_soc, prior.suspect_lat, prior.suspect_lng
    state.charging = (state.current_ma or 0) > 0 and state.speed_m_per_h < alerts.MOVING_M_PER_H
    state.driver_id = info.driver_id
    state.updated_at = now
    state.version += 1
    return speeds


async def _hint(
    session: AsyncSession,
    finder: PowerUpFinder,
    actions: Sequence[alerts.Action],
    info: VehicleInfo,
    state: State,
    now: dt.datetime,
    opened: Mapping[str, Any],
) -> Any:
    """The nearest option, asked of the engine only when a low-battery alert is about to open."""
    wants = any(
        isinstance(a, alerts.Open)
        and a.kind is VehicleAlertKind.LOW_BATTERY
        and alerts.open_key(info.id, a.kind) not in opened
        for a in actions
    )
    if not wants or state.lat_microdeg is None or state.lng_microdeg is None or state.soc_permille is None:
        return None
    return await finder.nearest(
        session, info.vehicle, state.lat_microdeg / 1e6, state.lng_microdeg / 1e6, state.soc_permille, now
    )


def _frames(vehicle_id: str, cleaned: list[Cleaned], seen: dt.datetime | None, now: dt.datetime) -> _Rows:
    """The vehicle's history rows, one per frame (`cleaned` is in time order), as (fresh, maybe stored): a
    frame at or before what the live state had seen may be stored already (reissued data, a replayed batch)."""
    fresh: list[frames.Row] = []
    old: list[frames.Row] = []
    start = 0
    for i in range(1, len(cleaned) + 1):
        if i < len(cleaned) and cleaned[i].time == cleaned[start].time:
            continue
        time = cleaned[start].time
        row = frames.encode(vehicle_id, time, now, cleaned[start:i])
        (old if seen is not None and time <= seen else fresh).append(row)
        start = i
    return fresh, old


async def publish_state(session: AsyncSession, state: VehicleLiveState, info: VehicleInfo) -> None:
    await feed.publish(session, STATE_TOPIC, state.vehicle_id, states_change([state_row(state, info)]))


# The live state as published on the feed (and read back by WatchVehicles), in `state_row`'s order; fleet and
# sub-fleet ride along so a watcher filters without reading a table.
STATE_FIELDS = (
    "vehicle_id", "fleet_id", "sub_fleet_id", "owner_driver_id", "driver_id", "reading_at", "lat", "lng", "speed",
    "soc", "odometer", "voltage", "current", "max_temp", "insulation", "charging", "alarm_level", "alarm_codes",
    "version",
)  # fmt: skip


def state_row(state: VehicleLiveState | State, info: VehicleInfo | None = None) -> list[Any]:
    vehicle = info.vehicle if info is not None else None
    return [
        state.vehicle_id,
        vehicle.fleet_id if vehicle else None,
        vehicle.sub_fleet_id if vehicle else None,
        vehicle.owner_driver_id if vehicle else None,
        state.driver_id,
        None if state.reading_at <= NO_READING else state.reading_at,
        state.lat_microdeg,
        state.lng_microdeg,
        state.speed_m_per_h,
        state.soc_permille,
        state.odometer_m,
        state.voltage_mv,
        state.current_ma,
        state.max_temperature_milli_c,
        state.insulation_kohm,
        state.charging,
        state.alarm_level,
        state.alarm_codes,
        state.version,
    ]


def state_payload(state: VehicleLiveState | State, info: VehicleInfo | None = None) -> dict[str, Any]:
    """One vehicle's live state by field name (`STATE_FIELDS`), as answered and as streamed."""
    return dict(zip(STATE_FIELDS, state_row(state, info), strict=True))


def states_change(rows: list[list[Any]]) -> dict[str, Any]:
    """One "vehicle_state" change for many vehicles: a row per vehicle under the field names (the names once per
    change, not once per vehicle)."""
    return {"fields": STATE_FIELDS, "states": rows}


def unpack_states(payload: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The vehicle states of one "vehicle_state" change, one `state_payload` each."""
    rows = payload.get("states")
    if rows is None:  # one vehicle's payload, as published before changes carried a batch (a rolling upgrade)
        yield dict(payload)
        return
    fields = payload["fields"]
    for row in rows:
        yield dict(zip(fields, row, strict=True))


def _batch_key(ids: Sequence[str]) -> str:
    """The change's key (for whoever reads the outbox): the vehicle, or the batch's first and last (sorted)."""
    return ids[0] if len(ids) == 1 else f"{ids[0]}..{ids[-1]}"[:200]


async def ensure_partitions(session: AsyncSession, around: dt.datetime, months_ahead: int = 3) -> int:
    """PostgreSQL: creates the monthly partitions of vehicle_frame from `around`'s month to `months_ahead`
    later that do not exist yet (readings outside every month land in the default partition, never lost).
    Returns how many were created; a no-op on SQLite."""
    if dialect(session) != "postgresql":
        return 0
    connection = await session.connection()
    created = 0
    year, month = around.year, around.month
    for _ in range(months_ahead + 1):
        name = f"vehicle_frame_{year:04d}{month:02d}"
        nxt = (year + (month == 12), month % 12 + 1)
        exists = (await connection.execute(sa.text("SELECT to_regclass(:n)"), {"n": name})).scalar_one_or_none()
        if exists is None:
            await connection.execute(
                sa.text(
                    f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF vehicle_frame "
                    f"FOR VALUES FROM ('{year:04d}-{month:02d}-01') TO ('{nxt[0]:04d}-{nxt[1]:02d}-01')"
                )
            )
            created += 1
        year, month = nxt
    return created
