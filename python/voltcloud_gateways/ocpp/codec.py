"""Sans-IO OCPP-J 1.6 codec: text frames in, typed frames (or the CALLERROR to answer) out. No sockets.

Payloads are validated against the JSON schemas the `ocpp` package ships. Error codes follow OCPP-J 1.6
and the `ocpp` library's mapping: invalid JSON -> FormationViolation; not an array / missing elements ->
ProtocolError; unknown message type -> PropertyConstraintViolation; unknown action -> NotImplemented; an
action this central system does not take -> NotSupported; schema: type/maxLength -> TypeConstraintViolation,
required -> ProtocolError (the payload is incomplete), additionalProperties and other structure ->
FormationViolation, enum/format/range -> PropertyConstraintViolation.
"""

from __future__ import annotations

import decimal
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError

CALL, CALLRESULT, CALLERROR = 2, 3, 4
UNKNOWN_ID = "-1"
MAX_UNIQUE_ID = 36
DEFAULT_MAX_FRAME_BYTES = 64 * 1024

# OCPP 1.6 CALLERROR codes.
NOT_IMPLEMENTED = "NotImplemented"
NOT_SUPPORTED = "NotSupported"
INTERNAL_ERROR = "InternalError"
PROTOCOL_ERROR = "ProtocolError"
SECURITY_ERROR = "SecurityError"
FORMATION_VIOLATION = "FormationViolation"
PROPERTY_CONSTRAINT_VIOLATION = "PropertyConstraintViolation"
OCCURENCE_CONSTRAINT_VIOLATION = "OccurenceConstraintViolation"
TYPE_CONSTRAINT_VIOLATION = "TypeConstraintViolation"
GENERIC_ERROR = "GenericError"
ERROR_CODES = frozenset(
    {
        NOT_IMPLEMENTED,
        NOT_SUPPORTED,
        INTERNAL_ERROR,
        PROTOCOL_ERROR,
        SECURITY_ERROR,
        FORMATION_VIOLATION,
        PROPERTY_CONSTRAINT_VIOLATION,
        OCCURENCE_CONSTRAINT_VIOLATION,
        "OccurrenceConstraintViolation",
        TYPE_CONSTRAINT_VIOLATION,
        GENERIC_ERROR,
        "FormatViolation",
    }
)

# Actions a charge point sends to the central system (Core, FirmwareManagement; security extension ones are
# known but not supported here).
CHARGE_POINT_ACTIONS = frozenset(
    {
        "Authorize",
        "BootNotification",
        "DataTransfer",
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "Heartbeat",
        "MeterValues",
        "StartTransaction",
        "StatusNotification",
        "StopTransaction",
    }
)
# Schemas of these need decimals (multipleOf 0.1), as in the ocpp library.
_DECIMAL_ACTIONS = frozenset({"SetChargingProfile", "RemoteStartTransaction", "GetCompositeScheduleResponse"})


def _schema_names() -> frozenset[str]:
    folder = resources.files("ocpp") / "v16" / "schemas"
    return frozenset(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


SCHEMAS = _schema_names()
KNOWN_ACTIONS = frozenset(n for n in SCHEMAS if not n.endswith("Response"))
_validators: dict[str, Draft4Validator] = {}


def validator(schema_name: str) -> Draft4Validator:
    found = _validators.get(schema_name)
    if found is None:
        text = (resources.files("ocpp") / "v16" / "schemas" / f"{schema_name}.json").read_text(encoding="utf-8-sig")
        parse_float: Any = decimal.Decimal if schema_name in _DECIMAL_ACTIONS else float
        found = _validators[schema_name] = Draft4Validator(json.loads(text, parse_float=parse_float))
    return found


@dataclass(frozen=True)
class Call:
    unique_id: str
    action: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class CallResult:
    unique_id: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class CallError:
    unique_id: str
    code: str
    description: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FrameError:
    """A frame that must be answered with this CALLERROR (unique id "-1" when it could not be read)."""

    unique_id: str
    code: str
    description: str

    def encode(self) -> str:
        return encode_error(self.unique_id, self.code, self.description)


Frame = Call | CallResult | CallError | FrameError


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def schema_violation(schema_name: str, payload: Any) -> tuple[str, str] | None:
    """(code, description) of the first schema violation, or None when the payload is valid."""
    if schema_name in _DECIMAL_ACTIONS:
        payload = json.loads(json.dumps(payload), parse_float=decimal.Decimal)
    try:
        error = next(iter(sorted(validator(schema_name).iter_errors(payload), key=lambda e: e.path)), None)
    except RecursionError:
        return FORMATION_VIOLATION, "payload nested too deeply"
    if error is None:
        return None
    return _code_for(error), _describe(error)


def _describe(error: ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "payload"
    return f"{where}: {error.message}"[:500]


def _code_for(error: ValidationError) -> str:
    kind = error.validator
    if kind in ("type", "maxLength"):
        return TYPE_CONSTRAINT_VIOLATION
    if kind == "required":
        return PROTOCOL_ERROR
    if kind in ("enum", "format", "minimum", "maximum", "multipleOf", "pattern", "minLength"):
        return PROPERTY_CONSTRAINT_VIOLATION
    if kind in ("minItems", "maxItems", "uniqueItems"):
        return OCCURENCE_CONSTRAINT_VIOLATION
    return FORMATION_VIOLATION


class Codec:
    """Parses frames received by the central system and encodes the frames it sends."""

    def __init__(
        self, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, supported: frozenset[str] | None = None
    ) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.supported = CHARGE_POINT_ACTIONS if supported is None else supported

    def parse(self, data: str | bytes) -> Frame:
        size = len(data)
        if size > self.max_frame_bytes:
            return FrameError(UNKNOWN_ID, FORMATION_VIOLATION, f"frame of {size} bytes exceeds {self.max_frame_bytes}")
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError:
                return FrameError(UNKNOWN_ID, FORMATION_VIOLATION, "frame is not UTF-8 text")
        try:
            message = json.loads(data, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as error:
            return FrameError(UNKNOWN_ID, FORMATION_VIOLATION, f"invalid JSON: {str(error)[:200]}")
        if not isinstance(message, list) or len(message) < 3:
            return FrameError(UNKNOWN_ID, PROTOCOL_ERROR, "a frame is a JSON array [type, uniqueId, ...]")
        kind, unique_id = message[0], message[1]
        if not isinstance(unique_id, str) or not unique_id or len(unique_id) > MAX_UNIQUE_ID:
            return FrameError(UNKNOWN_ID, PROTOCOL_ERROR, "uniqueId must be a string of 1..36 characters")
        if kind == CALL:
            return self._call(unique_id, message)
        if kind == CALLRESULT:
            if len(message) != 3 or not isinstance(message[2], dict):
                return FrameError(unique_id, PROTOCOL_ERROR, "CALLRESULT is [3, uniqueId, {payload}]")
            return CallResult(unique_id, message[2])
        if kind == CALLERROR:
            if len(message) != 5 or not isinstance(message[2], str) or not isinstance(message[3], str):
                return FrameError(unique_id, PROTOCOL_ERROR, "CALLERROR is [4, uniqueId, code, description, {}]")
            details = message[4] if isinstance(message[4], dict) else {}
            return CallError(unique_id, message[2], message[3], details)
        if isinstance(kind, int) and not isinstance(kind, bool):
            return FrameError(unique_id, PROPERTY_CONSTRAINT_VIOLATION, f"unknown message type {kind}")
        return FrameError(unique_id, TYPE_CONSTRAINT_VIOLATION, "message type must be an integer")

    def _call(self, unique_id: str, message: list[Any]) -> Frame:
        if len(message) != 4:
            return FrameError(unique_id, PROTOCOL_ERROR, "CALL is [2, uniqueId, action, {payload}]")
        action, payload = message[2], message[3]
        if not isinstance(action, str):
            return FrameError(unique_id, TYPE_CONSTRAINT_VIOLATION, "action must be a string")
        if action not in KNOWN_ACTIONS:
            return FrameError(unique_id, NOT_IMPLEMENTED, f"unknown action {action[:64]!r}")
        if action not in self.supported:
            return FrameError(unique_id, NOT_SUPPORTED, f"action {action} is not supported by this central system")
        if not isinstance(payload, dict):
            return FrameError(unique_id, FORMATION_VIOLATION, "payload must be a JSON object")
        violation = schema_violation(action, payload)
        if violation is not None:
            return FrameError(unique_id, *violation)
        return Call(unique_id, action, payload)

    def validate_result(self, action: str, payload: dict[str, Any]) -> tuple[str, str] | None:
        """Checks a charge point's CALLRESULT to one of our CALLs."""
        return schema_violation(f"{action}Response", payload)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_call(unique_id: str, action: str, payload: dict[str, Any]) -> str:
    """Encodes a CALL from the central system; raises ValueError when the payload breaks the schema."""
    violation = schema_violation(action, payload)
    if violation is not None:
        raise ValueError(f"{action}: {violation[0]}: {violation[1]}")
    return _dumps([CALL, unique_id, action, payload])


def encode_result(unique_id: str, payload: dict[str, Any]) -> str:
    return _dumps([CALLRESULT, unique_id, payload])


def encode_error(unique_id: str, code: str, description: str, details: dict[str, Any] | None = None) -> str:
    return _dumps([CALLERROR, unique_id, code, description[:255], details or {}])
