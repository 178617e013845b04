"""Edge limits: every request message is range- and size-checked here, by its descriptor, before a servicer runs.

The interceptor (`platform/rpc.py`) calls `check_message` on every decoded request (and on every message of a
client stream), so servicers and domain code only ever see:

- timestamps in [2000-01-01, 2100-01-01) UTC with nanos in 0..999,999,999 (the all-zero timestamp, proto3's
  default, is let through: several clients send it for "unset");
- durations in [0, 366 days] with nanos in 0..999,999,999 (no duration of this API is negative);
- 64-bit integers within what PostgreSQL BIGINT stores and sums safely (see `_integer_bounds`), unsigned 32-bit
  integers within INTEGER, finite floats and doubles, enum numbers the enum defines;
- strings (counted in characters, like VARCHAR) and bytes no longer than their limit and without NUL (PostgreSQL
  text cannot hold U+0000); repeated fields with at most `DEFAULT_MAX_ITEMS` elements.

Limits come from the field's kind and name (`_string_limit`), overridden per field in `OVERRIDES` (keyed by the
field's full proto name). The same limits are documented in proto/voltcloud/v1/common.proto's header and in
the comments of the overridden fields; keep the three in step.

The conversions at the end (`to_datetime`, `optional_datetime`, `to_timedelta` in; `to_timestamp`, `to_duration`
out) are the one conversion of well-known types for servicers: they apply the same bounds, so a servicer never
raises on a value the edge let through.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cache
from typing import Literal, overload

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from voltcloud.platform.errors import FieldViolation, InvalidArgument

TIMESTAMP_MIN = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
TIMESTAMP_MAX = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)  # exclusive
_TS_MIN_S = int(TIMESTAMP_MIN.timestamp())
_TS_MAX_S = int(TIMESTAMP_MAX.timestamp())
MAX_DURATION = dt.timedelta(days=366)
_MAX_NANOS = 999_999_999

BIGINT_MAX = 2**63 - 1
INTEGER_MAX = 2**31 - 1
MONEY_MAX_MINOR = 10**12  # 10 billion in major units: a million of them still sum inside BIGINT
QUANTITY_MAX = 10**12  # energy (Wh), power (W) and other measured int64 quantities, either sign

ID_MAX_CHARS = 64  # the width of every id column
KEY_MAX_CHARS = 128  # idempotency keys (stored as "<operation>:<scope>:<key>" in 300 characters)
PAGE_TOKEN_MAX_CHARS = 256
NAME_MAX_CHARS = 200
ADDRESS_MAX_CHARS = 300
TEXT_MAX_CHARS = 200  # reasons, notes, descriptions, messages unless a field says more
URI_MAX_CHARS = 2048
OTHER_MAX_CHARS = 100  # codes, currencies, versions, VINs, time zones, providers, ...
BYTES_MAX = 64 * 1024
DEFAULT_MAX_ITEMS = 100
MAX_VIOLATIONS = 20  # reported per request; the rest are cut so an error stays small

_TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR.full_name
_DURATION = duration_pb2.Duration.DESCRIPTOR.full_name
_TEXT_NAMES = frozenset(
    {"note", "notes", "reason", "description", "message", "detail", "info", "resolution", "failure_reason"}
)
_SEQUENCE_NAMES = frozenset({"seq", "version", "expected_version", "after_revision", "after_event_seq"})


@dataclass(frozen=True)
class FieldLimit:
    """Bounds of one field. `check_values=False` checks only a repeated field's count: for bulk columns whose
    every value the domain accepts, where a per-value walk would cost more than the work itself."""

    max_chars: int | None = None  # strings (characters) and bytes (bytes)
    max_items: int = DEFAULT_MAX_ITEMS  # repeated fields
    lo: int | None = None  # integers
    hi: int | None = None
    max_duration: dt.timedelta = MAX_DURATION
    check_values: bool = True


# Per-field overrides of the defaults below. Document each in the field's proto comment.
_TELEMETRY_READINGS = 200_000
OVERRIDES: dict[str, FieldLimit] = {
    "voltcloud.v1.ImportStatementRequest.csv": FieldLimit(max_chars=4 * 1024 * 1024),
    "voltcloud.v1.CreateWorkOrderRequest.description": FieldLimit(max_chars=2000),
    "voltcloud.v1.ReportInspectionRequest.notes": FieldLimit(max_chars=2000),
    "voltcloud.v1.InspectionDefect.notes": FieldLimit(max_chars=500),
    "voltcloud.v1.RateModel.display_text": FieldLimit(max_chars=500),
    "voltcloud.v1.ReportInspectionRequest.attachment_uris": FieldLimit(max_chars=URI_MAX_CHARS, max_items=20),
    "voltcloud.v1.StepUpdate.photo_uris": FieldLimit(max_chars=URI_MAX_CHARS, max_items=20),
    "voltcloud.v1.UpdateWorkOrderProgressRequest.photo_uris": FieldLimit(max_chars=URI_MAX_CHARS, max_items=20),
    "voltcloud.v1.TopUpRequest.provider_token": FieldLimit(max_chars=512),
    "voltcloud.v1.UpdateWorkOrderProgressRequest.note": FieldLimit(max_chars=2000),
    "voltcloud.v1.UpdateWorkOrderProgressRequest.conclusion": FieldLimit(max_chars=2000),
    "voltcloud.v1.CloseWorkOrderRequest.resolution": FieldLimit(max_chars=2000),
    "voltcloud.v1.ReportFaultRequest.equipment_code": FieldLimit(max_chars=512),
    "voltcloud.v1.ReportFaultRequest.description": FieldLimit(max_chars=2000),
    "voltcloud.v1.ReportFaultRequest.photo_uris": FieldLimit(max_chars=URI_MAX_CHARS, max_items=20),
    "voltcloud.v1.WatchAlarmsRequest.sources": FieldLimit(max_items=4),
    "voltcloud.v1.SetSlaPolicyRequest.rules": FieldLimit(max_items=40),
    "voltcloud.v1.NotificationPreferences.webhook_url": FieldLimit(max_chars=URI_MAX_CHARS),
    "voltcloud.v1.FileComplaintRequest.reason": FieldLimit(max_chars=2000),
    "voltcloud.v1.FileComplaintRequest.evidence_uris": FieldLimit(max_chars=URI_MAX_CHARS, max_items=20),
    "voltcloud.v1.ReviewComplaintRequest.reason": FieldLimit(max_chars=500),
    "voltcloud.v1.SubmitFeedbackRequest.text": FieldLimit(max_chars=2000),
    "voltcloud.v1.DriverPreferences.favourite_station_ids": FieldLimit(max_chars=ID_MAX_CHARS, max_items=20),
    "voltcloud.v1.DriverPreferences.preferred_modes": FieldLimit(max_items=6),
    "voltcloud.v1.StartByScanRequest.qr_payload": FieldLimit(max_chars=512),
    "voltcloud.v1.MobileUnit.regions": FieldLimit(max_chars=32, max_items=20),
    "voltcloud.v1.Station.opening_hours": FieldLimit(max_items=28),
    "voltcloud.v1.Hello.station_ids": FieldLimit(max_chars=ID_MAX_CHARS, max_items=10_000),
    "voltcloud.v1.PushRoadConditionsRequest.conditions": FieldLimit(max_items=10_000),
    "voltcloud.v1.PushTelemetryRequest.events": FieldLimit(max_items=1_000),
    "voltcloud.v1.TelemetryBatch.sources": FieldLimit(max_items=10_000),
    # Row readings are walked one by one (~5 µs each); large batches use the columns below.
    "voltcloud.v1.TelemetryBatch.readings": FieldLimit(max_items=10_000),
    # Columnar telemetry: only the latest value per (source, metric) reaches the in-memory twin; offsets are
    # not used, unknown sources and metrics are skipped there. A per-value walk would halve ingest throughput.
    "voltcloud.v1.TelemetryBatch.col_source_index": FieldLimit(max_items=_TELEMETRY_READINGS, check_values=False),
    "voltcloud.v1.TelemetryBatch.col_metric": FieldLimit(max_items=_TELEMETRY_READINGS, check_values=False),
    "voltcloud.v1.TelemetryBatch.col_offset_ms": FieldLimit(max_items=_TELEMETRY_READINGS, check_values=False),
    "voltcloud.v1.TelemetryBatch.col_int_value": FieldLimit(max_items=_TELEMETRY_READINGS, check_values=False),
    # maint-field (issue 14): checklists, incidents, dispatch plans.
    "voltcloud.v1.PlanDispatchRequest.work_order_ids": FieldLimit(max_chars=ID_MAX_CHARS, max_items=100),
    "voltcloud.v1.SubmitSiteInspectionRequest.items": FieldLimit(max_items=50),
    "voltcloud.v1.InspectionItem.photo_uris": FieldLimit(max_chars=URI_MAX_CHARS, max_items=10),
    "voltcloud.v1.SafetyIncident.description": FieldLimit(max_chars=2000),
    "voltcloud.v1.SafetyIncident.people": FieldLimit(max_chars=100, max_items=20),
    "voltcloud.v1.SafetyIncident.actions": FieldLimit(max_chars=500, max_items=20),
    "voltcloud.v1.SafetyIncident.photo_uris": FieldLimit(max_chars=URI_MAX_CHARS, max_items=10),
    "voltcloud.v1.CloseSafetyIncidentRequest.resolution": FieldLimit(max_chars=2000),
    "voltcloud.v1.Reading.offset_ms": FieldLimit(lo=-(2**63), hi=BIGINT_MAX),
    "voltcloud.v1.ResolveVehiclesRequest.vins": FieldLimit(max_chars=OTHER_MAX_CHARS, max_items=1_000),
    "voltcloud.v1.GetVehicleTrackRequest.metrics": FieldLimit(max_items=20),
    "voltcloud.v1.Reading.int_value": FieldLimit(lo=-(2**63), hi=BIGINT_MAX),
}


def _string_limit(name: str) -> int:
    if name == "idempotency_key":
        return KEY_MAX_CHARS
    if name == "page_token":
        return PAGE_TOKEN_MAX_CHARS
    if name.endswith(("_id", "_ids")) or name == "id_tag":
        return ID_MAX_CHARS
    if name.endswith(("_uri", "_uris")):
        return URI_MAX_CHARS
    if name in ("name", "title"):
        return NAME_MAX_CHARS
    if name == "address":
        return ADDRESS_MAX_CHARS
    if name in _TEXT_NAMES:
        return TEXT_MAX_CHARS
    return OTHER_MAX_CHARS


def _integer_bounds(field: FieldDescriptor) -> tuple[int | None, int | None]:
    t = field.type
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return 0, BIGINT_MAX
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return 0, INTEGER_MAX
    if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        if field.name in _SEQUENCE_NAMES:
            return 0, BIGINT_MAX
        if field.name == "amount_minor":
            return -MONEY_MAX_MINOR, MONEY_MAX_MINOR
        return -QUANTITY_MAX, QUANTITY_MAX
    return None, None  # 32-bit signed: INTEGER holds them; engine ranges are checked by the servicers


@cache
def limit_of(field: FieldDescriptor) -> FieldLimit:
    """The bounds of a field: its override, else the defaults for its kind and name."""
    lo, hi = _integer_bounds(field)
    default = FieldLimit(lo=lo, hi=hi)
    if field.type == FieldDescriptor.TYPE_STRING:
        default = replace(default, max_chars=_string_limit(field.name))
    elif field.type == FieldDescriptor.TYPE_BYTES:
        default = replace(default, max_chars=BYTES_MAX)
    override = OVERRIDES.get(field.full_name)
    if override is None:
        return default
    return replace(
        override,
        max_chars=override.max_chars if override.max_chars is not None else default.max_chars,
        lo=override.lo if override.lo is not None else default.lo,
        hi=override.hi if override.hi is not None else default.hi,
    )


# ---- the walk ----

_MESSAGE, _TIMESTAMP_KIND, _DURATION_KIND, _TEXT, _FLOAT, _ENUM, _INT, _OTHER = range(8)


@dataclass(frozen=True)
class _Plan:
    """How to check one field, computed once per field descriptor (the walk runs on every request)."""

    kind: int
    limit: FieldLimit
    repeated: bool
    is_map: bool


_plans: dict[FieldDescriptor, _Plan] = {}


def _plan(field: FieldDescriptor) -> _Plan:
    plan = _plans.get(field)
    if plan is None:
        plan = _plans[field] = _Plan(_kind(field), limit_of(field), field.is_repeated, _is_map(field))
    return plan


def _kind(field: FieldDescriptor) -> int:
    t = field.type
    if field.message_type is not None:
        name = field.message_type.full_name
        return _TIMESTAMP_KIND if name == _TIMESTAMP else _DURATION_KIND if name == _DURATION else _MESSAGE
    if t in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        return _TEXT
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _FLOAT
    if t == FieldDescriptor.TYPE_ENUM:
        return _ENUM
    if t == FieldDescriptor.TYPE_BOOL:
        return _OTHER
    return _INT


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def check_message(message: Message) -> None:
    """Raises InvalidArgument naming every out-of-limit field (up to MAX_VIOLATIONS) of `message`."""
    violations: list[FieldViolation] = []
    _walk(message, "", violations)
    if violations:
        raise InvalidArgument.for_fields(violations[:MAX_VIOLATIONS])


def _walk(message: Message, prefix: str, out: list[FieldViolation]) -> None:
    for field, value in message.ListFields():
        if len(out) >= MAX_VIOLATIONS:
            return
        plan = _plan(field)
        if not plan.repeated:
            _check_value(field, plan, value, f"{prefix}{field.name}", out)
            continue
        if len(value) > plan.limit.max_items:
            out.append(
                FieldViolation(
                    f"{prefix}{field.name}", f"has {len(value)} elements, at most {plan.limit.max_items} allowed"
                )
            )
        elif plan.limit.check_values and not plan.is_map:
            for i, item in enumerate(value):
                _check_value(field, plan, item, f"{prefix}{field.name}[{i}]", out)


def _check_value(field: FieldDescriptor, plan: _Plan, value: object, path: str, out: list[FieldViolation]) -> None:
    kind, limit = plan.kind, plan.limit
    if kind == _MESSAGE:
        assert isinstance(value, Message)
        _walk(value, f"{path}.", out)
    elif kind == _INT:
        assert isinstance(value, int)
        if (limit.lo is not None and value < limit.lo) or (limit.hi is not None and value > limit.hi):
            out.append(FieldViolation(path, f"must be within [{limit.lo}, {limit.hi}], got {value}"))
    elif kind == _TEXT:
        assert isinstance(value, str | bytes)
        if limit.max_chars is not None and len(value) > limit.max_chars:
            out.append(FieldViolation(path, f"is {len(value)} long, at most {limit.max_chars} allowed"))
        elif isinstance(value, str) and "\x00" in value:
            out.append(FieldViolation(path, "must not contain NUL characters"))
    elif kind == _FLOAT:
        assert isinstance(value, float)
        if not math.isfinite(value):
            out.append(FieldViolation(path, f"must be a finite number, got {value}"))
    elif kind == _ENUM and field.enum_type is not None:
        if field.enum_type.values_by_number.get(value) is None:  # type: ignore[call-overload]
            out.append(FieldViolation(path, f"{value} is not a {field.enum_type.name} value"))
    elif kind == _TIMESTAMP_KIND:
        assert isinstance(value, Message)
        out.extend(_check_timestamp(value, path))
    elif kind == _DURATION_KIND:
        assert isinstance(value, Message)
        out.extend(_check_duration(value, limit.max_duration, path))


def _check_timestamp(value: Message, path: str) -> Iterator[FieldViolation]:
    seconds: int = value.seconds  # type: ignore[attr-defined]
    nanos: int = value.nanos  # type: ignore[attr-defined]
    if not 0 <= nanos <= _MAX_NANOS:
        yield FieldViolation(f"{path}.nanos", f"must be within [0, {_MAX_NANOS}], got {nanos}")
    elif (seconds or nanos) and not _TS_MIN_S <= seconds < _TS_MAX_S:
        yield FieldViolation(path, f"must be within [{TIMESTAMP_MIN:%Y-%m-%d}, {TIMESTAMP_MAX:%Y-%m-%d}) UTC")


def _check_duration(value: Message, max_duration: dt.timedelta, path: str) -> Iterator[FieldViolation]:
    seconds: int = value.seconds  # type: ignore[attr-defined]
    nanos: int = value.nanos  # type: ignore[attr-defined]
    if not 0 <= nanos <= _MAX_NANOS:
        yield FieldViolation(f"{path}.nanos", f"must be within [0, {_MAX_NANOS}], got {nanos}")
    elif not 0 <= seconds <= max_duration.total_seconds():
        yield FieldViolation(path, f"must be within [0s, {int(max_duration.total_seconds())}s], got {seconds}s")


# ---- the one conversion for servicers ----

# What an all-zero timestamp (proto3's default, which the edge lets through) means to the caller: the epoch (a
# plain value), no time at all (clients that send it for "unset"), or a mistake (a time the request needs).
ZeroTimestamp = Literal["epoch", "unset", "invalid"]


def to_datetime(value: timestamp_pb2.Timestamp, field: str) -> dt.datetime:
    """An aware UTC datetime; InvalidArgument naming `field` outside the edge's window (a servicer calling this
    on an already-checked request never raises)."""
    for violation in _check_timestamp(value, field):
        raise InvalidArgument.for_fields([violation])
    return value.ToDatetime(tzinfo=dt.UTC)


def optional_datetime(
    message: Message, name: str, path: str | None = None, *, zero: ZeroTimestamp = "epoch"
) -> dt.datetime | None:
    """`message.<name>` as by `to_datetime`, None when the field is unset; `path` names it in errors (default
    `name`). `zero` says what the all-zero timestamp means."""
    if not message.HasField(name):
        return None
    value: timestamp_pb2.Timestamp = getattr(message, name)
    if zero != "epoch" and not (value.seconds or value.nanos):
        if zero == "invalid":
            raise InvalidArgument.for_field(path or name, "must be a valid time")
        return None
    return to_datetime(value, path or name)


def to_timedelta(value: duration_pb2.Duration, field: str, max_duration: dt.timedelta = MAX_DURATION) -> dt.timedelta:
    """A non-negative timedelta of at most `max_duration`; InvalidArgument naming `field` otherwise."""
    for violation in _check_duration(value, max_duration, field):
        raise InvalidArgument.for_fields([violation])
    return value.ToTimedelta()


@overload
def to_timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp: ...


@overload
def to_timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None: ...


def to_timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    """The Timestamp of an aware datetime, None for None (an unset field). Naive datetimes are refused: every
    time here is UTC-aware, and a naive one would be read in whatever zone the process runs in."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value.astimezone(dt.UTC))
    return out


def to_duration(seconds: float) -> duration_pb2.Duration:
    """The Duration of a domain's seconds, truncated to whole seconds (every duration this API sends is)."""
    return duration_pb2.Duration(seconds=int(seconds))
