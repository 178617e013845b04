"""The central system's OCPP 1.6 behaviour, without I/O: answers to charge point CALLs, the uplink messages
they produce, and the translation of platform commands into CSMS-initiated CALLs and back.

Transaction ids are allocated from a small SQLite store keyed by (charge point, connector, idTag,
meterStart, timestamp), so an offline transaction the charger replays gets the same id and is forwarded
once; a repeated StopTransaction is accepted and not forwarded again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from google.protobuf import timestamp_pb2

from voltcloud.api.v1 import common_pb2, ingest_pb2, stations_pb2

Uplink = ingest_pb2.StationEvent | ingest_pb2.TelemetryBatch

STATUS_MAP = {
    "Available": common_pb2.CONNECTOR_STATUS_AVAILABLE,
    "Preparing": common_pb2.CONNECTOR_STATUS_OCCUPIED,
    "Charging": common_pb2.CONNECTOR_STATUS_OCCUPIED,
    "SuspendedEVSE": common_pb2.CONNECTOR_STATUS_OCCUPIED,
    "SuspendedEV": common_pb2.CONNECTOR_STATUS_OCCUPIED,
    "Finishing": common_pb2.CONNECTOR_STATUS_OCCUPIED,
    "Reserved": common_pb2.CONNECTOR_STATUS_RESERVED,
    "Unavailable": common_pb2.CONNECTOR_STATUS_UNAVAILABLE,
    "Faulted": common_pb2.CONNECTOR_STATUS_FAULTED,
}
# measurand -> (metric, {unit: factor})
MEASURANDS: dict[str, tuple[int, dict[str, float]]] = {
    "Energy.Active.Import.Register": (common_pb2.METRIC_ENERGY_WH, {"Wh": 1.0, "kWh": 1000.0}),
    "Power.Active.Import": (common_pb2.METRIC_POWER_W, {"W": 1.0, "kW": 1000.0}),
    "SoC": (common_pb2.METRIC_SOC_PERMILLE, {"Percent": 10.0}),
    "Temperature": (common_pb2.METRIC_TEMPERATURE_MILLI_C, {"Celsius": 1000.0}),
    "Voltage": (common_pb2.METRIC_VOLTAGE_MV, {"V": 1000.0}),
    "Current.Import": (common_pb2.METRIC_CURRENT_MA, {"A": 1000.0}),
}
DEFAULT_UNITS = {
    "Energy.Active.Import.Register": "Wh",
    "Power.Active.Import": "W",
    "SoC": "Percent",
    "Temperature": "Celsius",
    "Voltage": "V",
    "Current.Import": "A",
}


def hash_password(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


@dataclass(frozen=True)
class ChargePointConfig:
    """One charger: its OCPP identity, the station it belongs to, its Basic-auth password (SHA-256 hex) and
    the platform connector id of each OCPP connectorId."""

    charge_point_id: str
    station_id: str
    password_sha256: str
    connectors: dict[int, str]

    def check_password(self, password: str) -> bool:
        return hmac.compare_digest(hash_password(password), self.password_sha256)

    @classmethod
    def from_dict(cls, cp_id: str, data: dict[str, Any]) -> ChargePointConfig:
        password = data.get("password_sha256") or hash_password(str(data["password"]))
        return cls(
            cp_id,
            str(data["station_id"]),
            str(password),
            {int(k): str(v) for k, v in dict(data.get("connectors", {})).items()},
        )


def _stamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def parse_time(text: str) -> dt.datetime | None:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class OcppState:
    """Durable gateway state: transaction ids and reservation ids (OCPP needs integers)."""

    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS tx (id INTEGER PRIMARY KEY AUTOINCREMENT, cp TEXT NOT NULL, connector INTEGER,"
            " id_tag TEXT, meter_start INTEGER, ts TEXT, order_id TEXT, stopped INTEGER NOT NULL DEFAULT 0,"
            " UNIQUE (cp, connector, id_tag, meter_start, ts))"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS reservation (id INTEGER PRIMARY KEY AUTOINCREMENT, platform_id TEXT UNIQUE,"
            " cp TEXT NOT NULL DEFAULT '')"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS local_list (cp TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        # What the gateway answers idTags with when the platform cannot be asked: the platform's last answer per
        # tag, and the entries of each charger's local authorization list as the gateway sent them.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS auth_cache (id_tag TEXT PRIMARY KEY, status TEXT NOT NULL, expiry TEXT,"
            " answered_at TEXT NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS local_auth (cp TEXT NOT NULL, id_tag TEXT NOT NULL, status TEXT NOT NULL,"
            " expiry TEXT, PRIMARY KEY (cp, id_tag))"
        )

    def start(self, cp: str, connector: int, id_tag: str, meter_start: int, ts: str, order_id: str) -> tuple[int, bool]:
        """(transaction id, whether it is new)."""
        row = self._db.execute(
            "SELECT id FROM tx WHERE cp=? AND connector=? AND id_tag=? AND meter_start=? AND ts=?",
            (cp, connector, id_tag, meter_start, ts),
        ).fetchone()
        if row:
            return int(row[0]), False
        cur = self._db.execute(
            "INSERT INTO tx (cp, connector, id_tag, meter_start, ts, order_id) VALUES (?, ?, ?, ?, ?, ?)",
            (cp, connector, id_tag, meter_start, ts, order_id),
        )
        return int(cur.lastrowid or 0), True

    def transaction(self, tx_id: int) -> tuple[str, int, int, bool] | None:
        """(charge point, connector, meter start, stopped) of a transaction."""
        row = self._db.execute("SELECT cp, connector, meter_start, stopped FROM tx WHERE id=?", (tx_id,)).fetchone()
        return (str(row[0]), int(row[1]), int(row[2]), bool(row[3])) if row else None

    def stop(self, tx_id: int) -> bool:
        """Marks the transaction stopped; False when it already was."""
        cur = self._db.execute("UPDATE tx SET stopped=1 WHERE id=? AND stopped=0", (tx_id,))
        if cur.rowcount:
            return True
        if self.transaction(tx_id) is None:
            self._db.execute("INSERT OR IGNORE INTO tx (id, cp, stopped) VALUES (?, '', 1)", (tx_id,))
            return True
        return False

    def reservation_id(self, platform_id: str, cp: str = "") -> int:
        self._db.execute("INSERT OR IGNORE INTO reservation (platform_id, cp) VALUES (?, ?)", (platform_id, cp))
        if cp:
            self._db.execute("UPDATE reservation SET cp=? WHERE platform_id=?", (cp, platform_id))
        row = self._db.execute("SELECT id FROM reservation WHERE platform_id=?", (platform_id,)).fetchone()
        return int(row[0])

    def reservation_charger(self, platform_id: str) -> str:
        row = self._db.execute("SELECT cp FROM reservation WHERE platform_id=?", (platform_id,)).fetchone()
        return str(row[0]) if row else ""

    def platform_reservation(self, ocpp_id: int) -> str:
        row = self._db.execute("SELECT platform_id FROM reservation WHERE id=?", (ocpp_id,)).fetchone()
        return str(row[0]) if row else ""

    def local_list_version(self, cp: str) -> int:
        """The local authorization list version the charge point last accepted from us (0: none)."""
        row = self._db.execute("SELECT version FROM local_list WHERE cp=?", (cp,)).fetchone()
        return int(row[0]) if row else 0

    def set_local_list_version(self, cp: str, version: int) -> None:
        self._db.execute(
            "INSERT INTO local_list (cp, version) VALUES (?, ?) ON CONFLICT(cp) DO UPDATE SET version=excluded.version",
            (cp, version),
        )

    def remember_auth(self, id_tag: str, status: str, expiry: dt.datetime | None, at: dt.datetime) -> None:
        self._db.execute(
            "INSERT INTO auth_cache (id_tag, status, expiry, answered_at) VALUES (?, ?, ?, ?) ON CONFLICT(id_tag)"
            " DO UPDATE SET status=excluded.status, expiry=excluded.expiry, answered_at=excluded.answered_at",
            (id_tag, status, iso(expiry) if expiry else None, iso(at)),
        )

    def last_auth(self, id_tag: str) -> tuple[str | None, dt.datetime | None]:
        """(status, expiry) of the platform's last answer for the tag ((None, None): never asked)."""
        row = self._db.execute("SELECT status, expiry FROM auth_cache WHERE id_tag=?", (id_tag,)).fetchone()
        return (str(row[0]), parse_time(row[1]) if row[1] else None) if row else (None, None)

    def known_tag(self, id_tag: str) -> bool:
        """Whether an offline answer for the tag exists (a remembered platform answer or a local-list entry)."""
        row = self._db.execute(
            "SELECT 1 FROM auth_cache WHERE id_tag=? UNION ALL SELECT 1 FROM local_auth WHERE id_tag=? LIMIT 1",
            (id_tag, id_tag),
        ).fetchone()
        return row is not None

    def store_local_list(self, cp: str, entries: dict[str, LocalAuth | None], *, full: bool) -> None:
        """Mirrors a local list the charge point accepted (a full list replaces, a differential one patches)."""
        if full:
            self._db.execute("DELETE FROM local_auth WHERE cp=?", (cp,))
        for id_tag, auth in entries.items():
            if auth is None:
                self._db.execute("DELETE FROM local_auth WHERE cp=? AND id_tag=?", (cp, id_tag))
                continue
            self._db.execute(
                "INSERT INTO local_auth (cp, id_tag, status, expiry) VALUES (?, ?, ?, ?) ON CONFLICT(cp, id_tag)"
                " DO UPDATE SET status=excluded.status, expiry=excluded.expiry",
                (cp, id_tag, auth.status, iso(auth.expiry) if auth.expiry else None),
            )

    def local_auth(self, cp: str, id_tag: str) -> tuple[str | None, dt.datetime | None]:
        """(status, expiry) of the tag in the charger's local list ((None, None): not listed)."""
        row = self._db.execute("SELECT status, expiry FROM local_auth WHERE cp=? AND id_tag=?", (cp, id_tag)).fetchone()
        return (str(row[0]), parse_time(row[1]) if row[1] else None) if row else (None, None)

    def close(self) -> None:
        self._db.close()


AUTHORIZED_ACTIONS = frozenset({"Authorize", "StartTransaction"})


class IdTagInfoLike(Protocol):
    """What `authorize.IdTagInfo` offers the handlers (kept a protocol so this module stays I/O-free)."""

    def payload(self) -> dict[str, Any]: ...


def _tag_info(auth: IdTagInfoLike | None) -> dict[str, Any]:
    # Fail closed: no verdict from the platform (or its fallback) is no authorization.
    return auth.payload() if auth is not None else {"status": "Invalid"}


@dataclass
class Answer:
    """What to send back to the charge point and what to forward to the platform."""

    payload: dict[str, Any]
    uplink: list[Uplink] = field(default_factory=list)


class ChargePointSession:
    """The central system's side of one charge point connection."""

    def __init__(
        self,
        config: ChargePointConfig,
        state: OcppState,
        *,
        heartbeat_interval_s: int = 60,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.config = config
        self.state = state
        self.heartbeat_interval_s = heartbeat_interval_s
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.pending_remote: dict[str, str] = {}  # idTag -> order id of a remote start
        self.boot: dict[str, Any] = {}

    def _event(self, when: dt.datetime | None = None, **kind: Any) -> ingest_pb2.StationEvent:
        return ingest_pb2.StationEvent(station_id=self.config.station_id, time=_stamp(when or self.clock()), **kind)

    def connector_id(self, number: int) -> str:
        return self.config.connectors.get(number, "")

    def tag_to_authorize(self, action: str, payload: dict[str, Any]) -> str | None:
        """The idTag the platform must judge before `action` is answered (None: nothing to ask). A start the
        platform itself asked for (RemoteStartTransaction for an order) is authorized by that order."""
        if action not in AUTHORIZED_ACTIONS:
            return None
        id_tag = str(payload.get("idTag", ""))
        return None if id_tag in self.pending_remote else id_tag

    def handle(self, action: str, payload: dict[str, Any], auth: IdTagInfoLike | None = None) -> Answer:
        handler = getattr(self, f"on_{action}")
        answer: Answer = handler(payload, auth) if action in AUTHORIZED_ACTIONS else handler(payload)
        return answer

    # ---- Core ----

    def on_BootNotification(self, p: dict[str, Any]) -> Answer:
        self.boot = p
        return Answer(
            {"status": "Accepted", "currentTime": iso(self.clock()), "interval": self.heartbeat_interval_s},
            [self._event(heartbeat=ingest_pb2.Heartbeat())],
        )

    def on_Heartbeat(self, p: dict[str, Any]) -> Answer:
        return Answer({"currentTime": iso(self.clock())}, [self._event(heartbeat=ingest_pb2.Heartbeat())])

    def on_Authorize(self, p: dict[str, Any], auth: IdTagInfoLike | None = None) -> Answer:
        return Answer({"idTagInfo": _tag_info(auth)})

    def on_StatusNotification(self, p: dict[str, Any]) -> Answer:
        connector = self.connector_id(int(p["connectorId"]))
        events: list[Uplink] = []
        when = parse_time(str(p.get("timestamp", ""))) or self.clock()
        if connector:
            events.append(
                self._event(
                    when,
                    connector_status=ingest_pb2.ConnectorStatusChanged(
                        connector_id=connector,
                        status=STATUS_MAP.get(str(p["status"]), common_pb2.CONNECTOR_STATUS_UNSPECIFIED),
                        error_code="" if p.get("errorCode") == "NoError" else str(p.get("errorCode", "")),
                        info=str(p.get("info", "")),
                    ),
                )
            )
        elif p["status"] == "Faulted":
            events.append(
                self._event(
                    when,
                    alarm=ingest_pb2.AlarmReport(
                        resource_id=self.config.charge_point_id,
                        code=str(p.get("errorCode", "")),
                        level=common_pb2.ALARM_LEVEL_MAJOR,
                        message=str(p.get("info", "charger faulted")),
                    ),
                )
            )
        return Answer({}, events)

    def on_StartTransaction(self, p: dict[str, Any], auth: IdTagInfoLike | None = None) -> Answer:
        """A transaction id always (OCPP 1.6), with the platform's verdict: a charge point told anything but
        Accepted must stop. The start is forwarded either way, so energy it delivers regardless is flagged."""
        number, id_tag, meter = int(p["connectorId"]), str(p["idTag"]), int(p["meterStart"])
        order_id = self.pending_remote.get(id_tag, "")
        tx_id, new = self.state.start(self.config.charge_point_id, number, id_tag, meter, str(p["timestamp"]), order_id)
        events: list[Uplink] = []
        if new:
            self.pending_remote.pop(id_tag, None)
            reservation = p.get("reservationId")
            events.append(
                self._event(
                    parse_time(str(p["timestamp"])),
                    session_started=ingest_pb2.SessionStarted(
                        session_id=str(tx_id),
                        connector_id=self.connector_id(number) or f"{self.config.charge_point_id}#{number}",
                        meter_start_wh=meter,
                        id_tag=id_tag,
                        reservation_id=self.state.platform_reservation(int(reservation)) if reservation else "",
                        order_id=order_id,
                    ),
                )
            )
        return Answer({"transactionId": tx_id, "idTagInfo": _tag_info(auth)}, events)

    def on_StopTransaction(self, p: dict[str, Any]) -> Answer:
        tx_id, meter_stop = int(p["transactionId"]), int(p["meterStop"])
        known = self.state.transaction(tx_id)
        events: list[Uplink] = []
        if self.state.stop(tx_id):
            connector = self.connector_id(known[1]) if known and known[0] else ""
            if p.get("transactionData"):
                batch = self._meter_batch(known[1] if known else 0, p["transactionData"])
                if batch is not None:
                    events.append(batch)
            energy = meter_stop - known[2] if known and known[0] else 0
            events.append(
                self._event(
                    parse_time(str(p["timestamp"])),
                    session_stopped=ingest_pb2.SessionStopped(
                        session_id=str(tx_id),
                        connector_id=connector,
                        meter_stop_wh=meter_stop,
                        energy_wh=max(energy, 0),
                        reason=str(p.get("reason", "Local")),
                        id_tag=str(p.get("idTag", "")),
                    ),
                )
            )
        return Answer({"idTagInfo": {"status": "Accepted"}}, events)

    def on_MeterValues(self, p: dict[str, Any]) -> Answer:
        batch = self._meter_batch(int(p["connectorId"]), p["meterValue"])
        return Answer({}, [batch] if batch is not None else [])

    def _meter_batch(self, connector_no: int, meter_values: list[dict[str, Any]]) -> ingest_pb2.TelemetryBatch | None:
        connector = self.connector_id(connector_no)
        base = self.clock()
        batch = ingest_pb2.TelemetryBatch(
            base_time=_stamp(base),
            sources=[ingest_pb2.TelemetrySource(station_id=self.config.station_id, resource_id=connector)],
        )
        for mv in meter_values:
            when = parse_time(str(mv.get("timestamp", ""))) or base
            offset = int((when - base).total_seconds() * 1000)
            for sv in mv.get("sampledValue", []):
                measurand = str(sv.get("measurand", "Energy.Active.Import.Register"))
                known = MEASURANDS.get(measurand)
                if known is None or sv.get("phase"):
                    continue
                metric, units = known
                factor = units.get(str(sv.get("unit", DEFAULT_UNITS[measurand])))
                try:
                    value = float(sv["value"])
                except (ValueError, TypeError):
                    continue
                if factor is None or value != value or value in (float("inf"), float("-inf")):
                    continue
                batch.readings.append(
                    ingest_pb2.Reading(
                        source_index=0,
                        metric=metric,  # type: ignore[arg-type]
                        offset_ms=offset,
                        int_value=round(value * factor),
                    )
                )
        return batch if batch.readings else None

    def on_DataTransfer(self, p: dict[str, Any]) -> Answer:
        return Answer({"status": "UnknownVendorId"})

    def on_DiagnosticsStatusNotification(self, p: dict[str, Any]) -> Answer:
        return Answer({})

    def on_FirmwareStatusNotification(self, p: dict[str, Any]) -> Answer:
        return Answer({})


# ---- platform commands -> CSMS-initiated CALLs ----


@dataclass(frozen=True)
class OutgoingCall:
    charge_point_id: str
    action: str
    payload: dict[str, Any]


def _profile(profile: stations_pb2.ChargingProfile, purpose: str) -> dict[str, Any]:
    schedule: dict[str, Any] = {
        "chargingRateUnit": "W",
        "chargingSchedulePeriod": [
            {"startPeriod": int(p.start_offset.ToTimedelta().total_seconds()), "limit": float(p.limit_w)}
            for p in profile.periods
        ],
    }
    if profile.HasField("duration"):
        schedule["duration"] = int(profile.duration.ToTimedelta().total_seconds())
    body: dict[str, Any] = {
        "chargingProfileId": profile.profile_id or 1,
        "stackLevel": profile.stack_level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute" if profile.HasField("start_time") else "Relative",
        "chargingSchedule": schedule,
    }
    if profile.HasField("start_time"):
        schedule["startSchedule"] = iso(profile.start_time.ToDatetime(tzinfo=dt.UTC))
    return body


class CommandError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def command_calls(
    command: ingest_pb2.Command,
    chargers: list[ChargePointConfig],
    state: OcppState,
    sessions: dict[str, ChargePointSession],
) -> list[OutgoingCall]:
    """The OCPP CALLs that carry out a platform command at a charging station."""
    kind = command.command.WhichOneof("command")
    body: Any = getattr(command.command, kind) if kind else None

    def by_connector(connector_id: str) -> tuple[ChargePointConfig, int]:
        for cp in chargers:
            for number, cid in cp.connectors.items():
                if cid == connector_id:
                    return cp, number
        raise CommandError(stations_pb2.COMMAND_STATUS_REJECTED, f"unknown connector {connector_id}")

    if kind == "remote_start":
        cp, number = by_connector(body.connector_id)
        payload: dict[str, Any] = {"connectorId": number, "idTag": body.id_tag}
        if body.HasField("charging_profile"):
            payload["chargingProfile"] = _profile(body.charging_profile, "TxProfile")
        session = sessions.get(cp.charge_point_id)
        if session is not None and body.order_id:
            session.pending_remote[body.id_tag] = body.order_id
        return [OutgoingCall(cp.charge_point_id, "RemoteStartTransaction", payload)]
    if kind == "remote_stop":
        try:
            tx_id = int(body.session_id)
        except ValueError:
            raise CommandError(stations_pb2.COMMAND_STATUS_REJECTED, f"unknown transaction {body.session_id}") from None
        known = state.transaction(tx_id)
        if known is None or not known[0]:
            raise CommandError(stations_pb2.COMMAND_STATUS_REJECTED, f"unknown transaction {tx_id}")
        return [OutgoingCall(known[0], "RemoteStopTransaction", {"transactionId": tx_id})]
    if kind == "reserve":
        if not body.connector_id:
            raise CommandError(stations_pb2.COMMAND_STATUS_NOT_SUPPORTED, "reserve needs a connector_id")
        cp, number = by_connector(body.connector_id)
        expiry = (
            body.expire_time.ToDatetime(tzinfo=dt.UTC)
            if body.HasField("expire_time")
            else (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=15))
        )
        return [
            OutgoingCall(
                cp.charge_point_id,
                "ReserveNow",
                {
                    "connectorId": number,
                    "expiryDate": iso(expiry),
                    "idTag": body.id_tag or "RESERVED",
                    "reservationId": state.reservation_id(body.reservation_id, cp.charge_point_id),
                },
            )
        ]
    if kind == "cancel_reservation":
        holder = state.reservation_charger(body.reservation_id)
        if not holder:
            raise CommandError(stations_pb2.COMMAND_STATUS_REJECTED, f"unknown reservation {body.reservation_id}")
        ocpp_id = state.reservation_id(body.reservation_id)
        return [OutgoingCall(holder, "CancelReservation", {"reservationId": ocpp_id})]
    if kind == "unlock_connector":
        cp, number = by_connector(body.connector_id)
        return [OutgoingCall(cp.charge_point_id, "UnlockConnector", {"connectorId": number})]
    if kind == "change_availability":
        kind_text = "Operative" if body.available else "Inoperative"
        if body.connector_id:
            cp, number = by_connector(body.connector_id)
            return [OutgoingCall(cp.charge_point_id, "ChangeAvailability", {"connectorId": number, "type": kind_text})]
        return [
            OutgoingCall(cp.charge_point_id, "ChangeAvailability", {"connectorId": 0, "type": kind_text})
            for cp in chargers
        ]
    if kind == "set_charging_profile":
        purpose = "TxDefaultProfile" if body.connector_id else "ChargePointMaxProfile"
        profile = _profile(body.profile, purpose)
        if body.connector_id:
            cp, number = by_connector(body.connector_id)
            targets = [(cp, number)]
        else:
            targets = [(cp, 0) for cp in chargers]
        return [
            OutgoingCall(cp.charge_point_id, "SetChargingProfile", {"connectorId": n, "csChargingProfiles": profile})
            for cp, n in targets
        ]
    raise CommandError(stations_pb2.COMMAND_STATUS_NOT_SUPPORTED, f"{kind} is not an OCPP 1.6 command")


# ---- RemoteTrigger, LocalAuthListManagement, Core configuration/reset (gateway operations; the platform's
# StationCommand has no kind for them yet) ----

TRIGGERABLE = frozenset(
    {
        "BootNotification",
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "Heartbeat",
        "MeterValues",
        "StatusNotification",
    }
)
AUTH_STATUSES = frozenset({"Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"})


def trigger_message(requested: str, connector_id: int | None = None) -> dict[str, Any]:
    """TriggerMessage payload; raises CommandError for a message the charge point cannot be asked for."""
    if requested not in TRIGGERABLE:
        raise CommandError(stations_pb2.COMMAND_STATUS_REJECTED, f"{requested} cannot be triggered")
    payload: dict[str, Any] = {"requestedMessage": requested}
    if connector_id is not None:
        if connector_id <= 0:
            raise CommandError(stations_pb2.COMMAND_STATUS_REJECTED, "connectorId must be > 0 (omit for the whole CP)")
        payload["connectorId"] = connector_id
    return payload


@dataclass(frozen=True)
class LocalAuth:
    """One idTag's entry in a charge point's local authorization list."""

    status: str = "Accepted"
    expiry: dt.datetime | None = None
    parent_id_tag: str = ""


def send_local_list(version: int, entries: dict[str, LocalAuth | None], *, full: bool) -> dict[str, Any]:
    """SendLocalList payload. `None` removes the idTag (differential updates only)."""
    if version <= 0:
        raise CommandError(stations_pb2.COMMAND_STATUS_REJECTED, "listVersion must be > 0")
    items: list[dict[str, Any]] = []
    for id_tag, auth in sorted(entries.items()):
        if not id_tag or len(id_tag) > 20:
            raise CommandError(stations_pb2.COMMAND_STATUS_REJECTED, f"idTag {id_tag[:32]!r} must be 1..20 chars")
        item: dict[str, Any] = {"idTag": id_tag}
        if auth is None:
            if full:
                raise CommandError(stations_pb2.COMMAND_STATUS_REJECTED, "a full list cannot remove idTags")
        else:
            if auth.status not in AUTH_STATUSES:
                raise CommandError(stations_pb2.COMMAND_STATUS_REJECTED, f"unknown authorization {auth.status}")
            info: dict[str, Any] = {"status": auth.status}
            if auth.expiry is not None:
                info["expiryDate"] = iso(auth.expiry)
            if auth.parent_id_tag:
                if len(auth.parent_id_tag) > 20:
                    raise CommandError(stations_pb2.COMMAND_STATUS_REJECTED, "parentIdTag must be at most 20 chars")
                info["parentIdTag"] = auth.parent_id_tag
            item["idTagInfo"] = info
        items.append(item)
    return {"listVersion": version, "updateType": "Full" if full else "Differential", "localAuthorizationList": items}


ACCEPTED_STATUSES = frozenset({"Accepted", "Unlocked", "RebootRequired"})


def result_status(payload: dict[str, Any]) -> tuple[int, str]:
    status = str(payload.get("status", ""))
    if status in ACCEPTED_STATUSES:
        return stations_pb2.COMMAND_STATUS_ACCEPTED, status
    if status in ("NotSupported", "NotImplemented"):
        return stations_pb2.COMMAND_STATUS_NOT_SUPPORTED, status
    if status in ("Scheduled",):
        return stations_pb2.COMMAND_STATUS_ACCEPTED, status
    return stations_pb2.COMMAND_STATUS_REJECTED, status or "no status"
