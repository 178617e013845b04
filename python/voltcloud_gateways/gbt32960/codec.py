"""Sans-IO GB/T 32960.3 codec (2016 `##` and 2025 `$$` editions): bytes in, typed messages out.

    reader = FrameReader(max_data_len)
    for item in reader.feed(chunk):          # Frame | FrameError
        message = decode_message(item)       # a message dataclass | FrameError (never raises on bad bytes)
    reply = encode_response(frame, Flag.SUCCESS, now_utc)

Framing is Rust (frame.py). The gateway takes real-time and reissued frames straight to the Rust telemetry
decoder (`_core.Gbt32960Telemetry`); `decode_message` decodes them into typed blocks in Python, for tools,
simulators and tests (tests/conformance/test_gbt32960_rust.py keeps the two in agreement).

Encrypted data units (RSA, AES128, SM2, SM4) are kept opaque (`Encrypted`). Builders at the bottom make
terminal frames for tests and simulators.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TypeAlias

from voltcloud_gateways.gbt32960.fields import GbTime, Reader, Short
from voltcloud_gateways.gbt32960.frame import (
    Command,
    Edition,
    Encryption,
    Flag,
    Frame,
    FrameError,
    FrameReader,
    Reason,
    decode_frame,
    encode_frame,
)
from voltcloud_gateways.gbt32960.realtime import RealtimeData, decode_realtime

__all__ = [
    "Command",
    "Edition",
    "Encrypted",
    "Encryption",
    "Flag",
    "Frame",
    "FrameError",
    "FrameReader",
    "Heartbeat",
    "Logout",
    "Message",
    "Opaque",
    "PlatformLogin",
    "RealtimeData",
    "Reason",
    "TimeSync",
    "VehicleLogin",
    "build_empty",
    "build_logout",
    "build_platform_login",
    "build_vehicle_login",
    "decode_frame",
    "decode_message",
    "encode_frame",
    "encode_response",
]

ICCID_LEN = 20
PACK_CODE_LEN_2025 = 24
USERNAME_LEN = 12
PASSWORD_LEN = 20


@dataclass(frozen=True, slots=True)
class VehicleLogin:
    """0x01. 2016: n subsystems with codes of one length; 2025: packs per BMS with 24-byte pack codes."""

    time: GbTime
    serial: int
    iccid: str  # trailing 0x00 removed
    codes: tuple[str, ...]
    packs_per_bms: tuple[int, ...] | None = None  # 2025 only


@dataclass(frozen=True, slots=True)
class Logout:
    """0x04 vehicle logout, 0x06 platform logout (`platform` tells which)."""

    time: GbTime
    serial: int
    platform: bool = False


@dataclass(frozen=True, slots=True)
class PlatformLogin:
    """0x05. Username and password are GB18030 text padded with 0x00 in the wild; raw bytes are kept."""

    time: GbTime
    serial: int
    username_raw: bytes
    password_raw: bytes
    encryption_rule: int

    @property
    def username(self) -> str:
        return _text(self.username_raw)

    @property
    def password(self) -> str:
        return _text(self.password_raw)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    pass


@dataclass(frozen=True, slots=True)
class TimeSync:
    """0x08: empty from the terminal; the platform's answer carries its (Beijing) time."""

    time: GbTime | None = None


@dataclass(frozen=True, slots=True)
class Opaque:
    """Commands the gateway only acknowledges (parameter query/set, terminal control, 2025 activation and
    key exchange, unknown ids): the leading time if there is one, the rest as bytes."""

    time: GbTime | None
    rest: bytes


@dataclass(frozen=True, slots=True)
class Encrypted:
    encryption: int
    data: bytes


Message: TypeAlias = VehicleLogin | Logout | PlatformLogin | Heartbeat | TimeSync | RealtimeData | Opaque | Encrypted


def _text(raw: bytes) -> str:
    return raw.strip(b"\x00").decode("gb18030", errors="replace")


def _ascii(raw: bytes) -> str:
    return raw.rstrip(b"\x00").decode("ascii", errors="replace")


def _login(r: Reader, edition: Edition) -> VehicleLogin:
    time, serial, iccid = GbTime.read(r), r.u16(), _ascii(r.take(ICCID_LEN))
    count = r.u8()
    if edition == Edition.V2016:
        size = r.u8()
        return VehicleLogin(time, serial, iccid, tuple(_ascii(r.take(size)) for _ in range(count)))
    per_bms = tuple(r.take(count))
    codes = tuple(_ascii(r.take(PACK_CODE_LEN_2025)) for _ in range(sum(per_bms)))
    return VehicleLogin(time, serial, iccid, codes, per_bms)


def _platform_login(r: Reader) -> PlatformLogin:
    time, serial = GbTime.read(r), r.u16()
    return PlatformLogin(time, serial, r.take(USERNAME_LEN), r.take(PASSWORD_LEN), r.u8())


def _opaque(r: Reader) -> Opaque:
    time = GbTime.read(r) if r.left() >= 6 else None
    return Opaque(time, r.take(r.left()))


def decode_message(frame: Frame) -> Message | FrameError:
    """Decodes a frame's data unit by its command. Never raises for bad bytes."""
    if frame.encryption != Encryption.NONE:
        return Encrypted(frame.encryption, frame.data)
    command = frame.command
    if command in (Command.REALTIME, Command.REISSUE):
        return decode_realtime(frame.data, Edition(frame.edition))
    r = Reader(frame.data)
    try:
        message: Message
        if command == Command.VEHICLE_LOGIN:
            message = _login(r, Edition(frame.edition))
        elif command in (Command.VEHICLE_LOGOUT, Command.PLATFORM_LOGOUT):
            message = Logout(GbTime.read(r), r.u16(), platform=command == Command.PLATFORM_LOGOUT)
        elif command == Command.PLATFORM_LOGIN:
            message = _platform_login(r)
        elif command == Command.HEARTBEAT:
            message = Heartbeat()
        elif command == Command.TIME_SYNC:
            message = TimeSync(GbTime.read(r) if r.left() else None)
        else:
            return _opaque(r)
    except Short as short:
        return FrameError(Reason.TRUNCATED, f"command 0x{command:02X}: {short}", r.pos)
    if r.left() and command != Command.PLATFORM_LOGOUT:
        # platform logout: terminals in the conformance set repeat the login body after the serial
        return FrameError(Reason.TRAILING_BYTES, f"{r.left()} bytes after the command 0x{command:02X} data", r.pos)
    return message


def encode_response(frame: Frame, flag: Flag, now: dt.datetime) -> bytes:
    """The platform's answer: the command echoed with `flag`; data = Beijing time (empty for heartbeats)."""
    data = b"" if frame.command == Command.HEARTBEAT else GbTime.from_utc(now).encode()
    return frame.answer(flag, data)


# ---- builders (terminal side: tests, simulators) ----


def build_vehicle_login(
    edition: Edition,
    vin: str,
    time: GbTime,
    serial: int,
    iccid: str,
    codes: list[str],
    per_bms: list[int] | None = None,
) -> bytes:
    data = time.encode() + serial.to_bytes(2, "big") + iccid.encode("ascii").ljust(ICCID_LEN, b"\x00")
    if edition == Edition.V2016:
        size = max((len(c) for c in codes), default=0)
        data += bytes((len(codes), size)) + b"".join(c.encode("ascii").ljust(size, b"\x00") for c in codes)
    else:
        per = per_bms if per_bms is not None else [len(codes)]
        data += bytes((len(per), *per))
        data += b"".join(c.encode("ascii").ljust(PACK_CODE_LEN_2025, b"\x00") for c in codes)
    return encode_frame(edition, Command.VEHICLE_LOGIN, Flag.COMMAND, vin, data)


def build_logout(edition: Edition, vin: str, time: GbTime, serial: int, *, platform: bool = False) -> bytes:
    command = Command.PLATFORM_LOGOUT if platform else Command.VEHICLE_LOGOUT
    return encode_frame(edition, command, Flag.COMMAND, vin, time.encode() + serial.to_bytes(2, "big"))


def build_platform_login(
    edition: Edition, vin: str, time: GbTime, serial: int, username: str, password: str, rule: int = 1
) -> bytes:
    user = username.encode("gb18030").ljust(USERNAME_LEN, b"\x00")
    secret = password.encode("gb18030").ljust(PASSWORD_LEN, b"\x00")
    if len(user) > USERNAME_LEN or len(secret) > PASSWORD_LEN:
        raise ValueError("username or password too long")
    data = time.encode() + serial.to_bytes(2, "big") + user + secret + bytes((rule,))
    return encode_frame(edition, Command.PLATFORM_LOGIN, Flag.COMMAND, vin, data)


def build_empty(edition: Edition, command: Command, vin: str) -> bytes:
    """Heartbeat (0x07) or terminal time sync (0x08)."""
    return encode_frame(edition, command, Flag.COMMAND, vin, b"")
