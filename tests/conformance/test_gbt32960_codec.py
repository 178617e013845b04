"""GB/T 32960.3 codec against the shared conformance frames (tests/data/gbt32960/frames.txt): every valid
frame decodes to the values its summary states, every INVALID one is refused with its reason, byte-by-byte
feeding gives the same frames, and frames built with the encoders round-trip (both editions)."""

from __future__ import annotations

import ast
import datetime as dt
import re

import pytest

from tests.conformance.gbt32960_vectors import VIN, T, Vector, blocks_2016, blocks_2025, load_vectors
from voltcloud_gateways.gbt32960 import realtime as rt
from voltcloud_gateways.gbt32960.codec import (
    Command,
    Edition,
    Encrypted,
    Flag,
    Frame,
    FrameError,
    FrameReader,
    Heartbeat,
    Logout,
    Opaque,
    PlatformLogin,
    Reason,
    TimeSync,
    VehicleLogin,
    build_empty,
    build_logout,
    build_platform_login,
    build_vehicle_login,
    decode_frame,
    decode_message,
    encode_frame,
    encode_response,
)
from voltcloud_gateways.gbt32960.fields import GbTime, Marker, Value
from voltcloud_gateways.gbt32960.frame import bcc

VECTORS = load_vectors()
VALID = [v for v in VECTORS if v.valid]
INVALID = [v for v in VECTORS if not v.valid]
ENC = {"none": 0x01, "RSA": 0x02, "AES128": 0x03}


def test_the_file_has_both_kinds() -> None:
    assert (len(VECTORS), len(VALID), len(INVALID)) == (34, 27, 7)


# ---- summary comparison helpers ----


def num(text: str, factor: int) -> Value:
    """'57.9' in the summary's unit -> integer in ours; 'INVALID'/'ABNORMAL' -> the marker."""
    if text == "INVALID":
        return Marker.INVALID
    if text == "ABNORMAL":
        return Marker.ABNORMAL
    return round(float(text) * factor)


def code(value: Value) -> int:
    """Enumerations print as hex codes in the summary; ours are markers for FE/FF."""
    if isinstance(value, Marker):
        return 0xFF if value is Marker.INVALID else 0xFE
    return value


def kv(text: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", text))


def check_vehicle(block: rt.Vehicle, text: str) -> None:
    f = kv(text)
    assert code(block.state) == int(f["state"], 16)
    assert code(block.charge_state) == int(f["charge"], 16)
    assert code(block.mode) == int(f["mode"], 16)
    assert block.speed_m_per_h == num(f["speed"], 1000)
    assert block.odometer_m == num(f["odo"], 1000)
    assert block.voltage_mv == num(f["V"], 1000)
    assert block.current_ma == num(f["I"], 1000)
    assert block.soc_permille == num(f["SOC"].rstrip("%"), 10)
    assert code(block.dcdc_state) == int(f["DCDC"], 16)
    assert block.gear == int(f["gear"], 16)
    assert block.insulation_kohm == num(f["R"], 1)
    assert block.accelerator_pct == num(f["accel"], 1)
    assert block.brake_pct == num(f["brake"], 1)


def check_motors(block: rt.Motors, text: str) -> None:
    count = int(re.search(r"motors\((\d+)\)", text).group(1))  # type: ignore[union-attr]
    assert len(block.motors) == count
    for motor, part in zip(block.motors, re.findall(r"#\d+ [^#]+", text), strict=True):
        f = kv(part)
        assert motor.number == int(part[1 : part.index(" ")])
        assert code(motor.state) == int(f["st"], 16)
        assert motor.controller_temp_mc == num(f["ctrlT"], 1000)
        assert motor.speed_rpm == num(f["rpm"], 1)
        assert motor.torque_dnm == num(f["torque"], 10)
        assert motor.temp_mc == num(f["T"], 1000)
        assert motor.controller_voltage_mv == num(f["Vin"], 1000)
        assert motor.dc_current_ma == num(f["Idc"], 1000)


def check_position(block: rt.Position, text: str) -> None:
    m = re.search(r"status=([0-9A-F]{2})\(valid=(\w+),([NS]),([EW])\) lng=(\S+) lat=(\S+)", text)
    assert m is not None
    assert block.status == int(m.group(1), 16)
    assert block.fix_valid == (m.group(2) == "yes")
    assert block.longitude_udeg == num(m.group(5), 1_000_000) * (-1 if m.group(4) == "W" else 1)  # type: ignore[operator]
    assert block.latitude_udeg == num(m.group(6), 1_000_000) * (-1 if m.group(3) == "S" else 1)  # type: ignore[operator]


def check_extremes(block: rt.Extremes, text: str) -> None:
    v = r"sys(\d+) cell(\d+) (\S+) V"
    t = r"sys(\d+) probe(\d+) (\S+) C"
    m = re.search(rf"maxV {v}; minV {v}; maxT {t}; minT {t}", text)
    assert m is not None
    g = m.groups()
    assert (block.max_v_subsystem, block.max_v_cell, block.max_cell_mv) == (int(g[0]), int(g[1]), num(g[2], 1000))
    assert (block.min_v_subsystem, block.min_v_cell, block.min_cell_mv) == (int(g[3]), int(g[4]), num(g[5], 1000))
    assert (block.max_t_subsystem, block.max_t_probe, block.max_temp_mc) == (int(g[6]), int(g[7]), num(g[8], 1000))
    assert (block.min_t_subsystem, block.min_t_probe, block.min_temp_mc) == (int(g[9]), int(g[10]), num(g[11], 1000))


def check_oem(block: rt.Oem, text: str) -> None:
    assert len(block.body) == int(kv(text)["len"])


CHECKS = {
    "vehicle": (rt.Vehicle, check_vehicle),
    "motors": (rt.Motors, check_motors),
    "position": (rt.Position, check_position),
    "extremes": (rt.Extremes, check_extremes),
    "fuel_cell": (rt.FuelCell, None),
    "oem_defined": (rt.Oem, check_oem),
}


def check_header(frame: Frame, header: str) -> None:
    m = re.match(
        r"(\d{4}) cmd=([0-9A-F]{2})\(\w+\) ack=([0-9A-F]{2})\(\w+\) vin='(\w*)' enc=(\w+) len=(\d+) bcc=", header
    )
    assert m is not None, header
    assert frame.edition == int(m.group(1))
    assert frame.command == int(m.group(2), 16)
    assert frame.flag == int(m.group(3), 16)
    assert frame.vin == m.group(4)
    assert frame.encryption == ENC[m.group(5)]
    assert len(frame.data) == int(m.group(6))


def check_time(message: object, details: list[str]) -> None:
    line = next((d for d in details if d.startswith("time ")), None)
    if line is not None:
        assert str(message.time) == line[5:24]  # type: ignore[attr-defined]


def check_login(message: VehicleLogin, line: str) -> None:
    m = re.search(r"seq=(\d+) iccid=('.*') ess_count=(\d+) code_len=(\d+) codes=(\[.*\])", line)
    assert m is not None
    assert message.serial == int(m.group(1))
    assert message.iccid == ast.literal_eval(m.group(2)).rstrip("\x00")
    assert len(message.codes) == int(m.group(3))
    assert all(len(c) == int(m.group(4)) for c in message.codes)
    assert list(message.codes) == ast.literal_eval(m.group(5))


def check_platform_login(message: PlatformLogin, line: str) -> None:
    m = re.search(r"seq=(\d+) user\(12B\)=(\w+) pass\(20B\)=(\w+) enc=(\w+)", line)
    assert m is not None
    assert message.serial == int(m.group(1))
    assert message.username_raw == bytes.fromhex(m.group(2))
    assert message.password_raw == bytes.fromhex(m.group(3))
    assert message.encryption_rule == int(m.group(4), 16)


def check_realtime(message: rt.RealtimeData, details: list[str]) -> None:
    lines = [d for d in details if re.match(r"[0-9A-F]{2} ", d)]
    stated = [d for d in lines if "UNKNOWN" not in d]
    stops = any(d.startswith("!!") for d in details) or any("UNKNOWN" in d for d in lines)
    if stops:
        # the summary's decoder overran or stopped: ours must refuse the unit, keeping what decoded before
        assert message.error is not None
        assert len(stated) - 1 <= len(message.blocks) <= len(stated)
    elif stated:
        assert message.error is None and len(message.blocks) == len(stated)
    for block, line in zip(message.blocks, stated, strict=False):
        name = line[3:].split(":")[0].split("(")[0]
        kind, check = CHECKS[name]
        assert isinstance(block, kind), (block, line)
        if check is not None:
            check(block, line)  # type: ignore[operator]


# ---- the vectors ----


@pytest.mark.parametrize("vector", VALID, ids=lambda v: f"frame{v.number}")
def test_valid_frame_decodes_to_its_summary(vector: Vector) -> None:
    frame = decode_frame(vector.raw)
    assert isinstance(frame, Frame), frame
    check_header(frame, vector.header)
    message = decode_message(frame)
    assert not isinstance(message, FrameError), message
    check_time(message, vector.details)
    summary = " ".join(vector.details)
    if isinstance(message, VehicleLogin):
        check_login(message, summary)
    elif isinstance(message, PlatformLogin):
        check_platform_login(message, summary)
    elif isinstance(message, Logout):
        assert message.serial == int(kv(summary)["seq"])
        assert message.platform == (frame.command == Command.PLATFORM_LOGOUT)
    elif isinstance(message, rt.RealtimeData):
        check_realtime(message, vector.details)
    elif isinstance(message, Encrypted):
        assert "encrypted/opaque" in summary and message.data == frame.data
    elif isinstance(message, (Heartbeat, TimeSync)):
        assert frame.data == b""
    else:
        assert isinstance(message, Opaque) and frame.command >= 0x80
        if m := re.search(r"\+ (\d+) more bytes", summary):
            assert len(message.rest) == int(m.group(1))


INVALID_REASONS = {
    "short frame": Reason.SHORT_FRAME,
    "length mismatch": Reason.LENGTH_MISMATCH,
    "index out of range": Reason.TRUNCATED,
}


@pytest.mark.parametrize("vector", INVALID, ids=lambda v: f"frame{v.number}")
def test_invalid_frame_is_refused_with_its_reason(vector: Vector) -> None:
    expected = next(r for text, r in INVALID_REASONS.items() if vector.invalid_reason.startswith(text))
    result = decode_frame(vector.raw)
    if isinstance(result, Frame):
        result = decode_message(result)  # type: ignore[assignment]
    assert isinstance(result, FrameError), result
    assert result.reason == expected
    if expected is Reason.LENGTH_MISMATCH:
        assert result.message == vector.invalid_reason


def test_an_impossible_time_is_kept_raw_and_has_no_utc() -> None:
    message = decode_message(decode_frame(VECTORS[24].raw))  # type: ignore[arg-type]
    assert isinstance(message, VehicleLogin)
    assert (message.time.hour, str(message.time)) == (55, "2006-07-18 55:02:00")
    assert message.time.utc() is None


def test_gb18030_username_is_text() -> None:
    message = decode_message(decode_frame(VECTORS[33].raw))  # type: ignore[arg-type]
    assert isinstance(message, PlatformLogin)
    assert message.username == "威海广泰空港"


# ---- streaming ----


def feed_all(chunks: list[bytes]) -> list[Frame | FrameError]:
    reader = FrameReader()
    out: list[Frame | FrameError] = []
    for chunk in chunks:
        out += reader.feed(chunk)
        assert reader.buffered <= 24 + 65_535 + 1 + len(chunk)
    return out + reader.finish()


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"frame{v.number}")
def test_byte_by_byte_feeding_gives_the_same_result(vector: Vector) -> None:
    items = feed_all([vector.raw[i : i + 1] for i in range(len(vector.raw))])
    frames = [i for i in items if isinstance(i, Frame)]
    whole = decode_frame(vector.raw)
    if isinstance(whole, Frame):
        assert frames == [whole] and len(items) == 1
    else:
        assert frames == [] and items and all(isinstance(i, FrameError) for i in items)


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_the_whole_file_as_one_stream_with_garbage(chunk: int) -> None:
    garbage = b"\x00GARBAGE#$\x23"
    stream = b"".join(garbage + v.raw for v in VECTORS) + garbage
    items = feed_all([stream[i : i + chunk] for i in range(0, len(stream), chunk)])
    frames = [i for i in items if isinstance(i, Frame)]
    # frames whose data unit is bad ("index out of range") are still frames: decode_message refuses them
    expected = [f for f in (decode_frame(v.raw) for v in VECTORS) if isinstance(f, Frame)]
    assert len(expected) == len(VALID) + 2
    assert frames == expected
    assert any(isinstance(i, FrameError) and i.reason == Reason.GARBAGE for i in items)


def test_declared_length_above_the_limit_is_refused_and_resynced() -> None:
    good = VALID[0].raw
    big = encode_frame(Edition.V2016, 2, Flag.COMMAND, "VIN1", bytes(300))
    items = FrameReader(max_data_len=256).feed(big + good)
    assert isinstance(items[0], FrameError) and items[0].reason == Reason.LENGTH_TOO_LARGE
    assert [i for i in items if isinstance(i, Frame)] == [decode_frame(good)]


def test_bad_bcc_is_refused() -> None:
    raw = bytearray(VALID[0].raw)
    raw[-1] ^= 0x55
    result = decode_frame(bytes(raw))
    assert isinstance(result, FrameError) and result.reason == Reason.BAD_BCC


# ---- round trips ----


@pytest.mark.parametrize("edition", list(Edition))
def test_realtime_round_trip(edition: Edition) -> None:
    blocks = blocks_2016() if edition is Edition.V2016 else blocks_2025()
    signature = rt.Signature(1, b"\x01" * 32, b"\x02" * 32) if edition is Edition.V2025 else None
    data = rt.encode_realtime(T, blocks, edition, signature)
    raw = encode_frame(edition, Command.REISSUE, Flag.COMMAND, VIN, data)
    message = decode_message(decode_frame(raw))  # type: ignore[arg-type]
    assert message == rt.RealtimeData(T, tuple(blocks), signature)
    assert isinstance(message, rt.RealtimeData)
    assert rt.encode_realtime(message.time, list(message.blocks), edition, signature) == data
    position = message.first(rt.Position)
    assert position is not None and position.fix_valid
    if edition is Edition.V2016:
        assert (position.latitude_udeg, position.longitude_udeg) == (-39_916_527, -116_397_128)


def test_blocks_of_one_edition_do_not_encode_in_the_other() -> None:
    with pytest.raises(ValueError):
        rt.encode_block(rt.Extremes(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), Edition.V2025)


def test_reserved_2025_type_stops_decoding() -> None:
    data = T.encode() + rt.encode_block(rt.Engine(crank_rpm=5), Edition.V2025) + b"\x09\x00\x00"
    message = rt.decode_realtime(data, Edition.V2025)
    assert isinstance(message, rt.RealtimeData) and message.error is not None
    assert message.error.reason == Reason.UNKNOWN_INFO_TYPE and message.blocks == (rt.Engine(crank_rpm=5),)


def test_bytes_after_the_signature_are_refused() -> None:
    sig = rt.Signature(1, b"r", b"s")
    data = rt.encode_realtime(T, [], Edition.V2025, sig) + b"\x01"
    message = rt.decode_realtime(data, Edition.V2025)
    assert isinstance(message, rt.RealtimeData) and message.error is not None
    assert message.error.reason == Reason.TRAILING_BYTES


@pytest.mark.parametrize("edition", list(Edition))
def test_command_round_trips(edition: Edition) -> None:
    codes = ["PACK-A", "PACK-B"]
    login = decode_message(decode_frame(build_vehicle_login(edition, VIN, T, 7, "8986" * 5, codes)))  # type: ignore[arg-type]
    assert isinstance(login, VehicleLogin)
    assert (login.serial, login.iccid, login.codes) == (7, "8986" * 5, tuple(codes))
    assert login.packs_per_bms == (None if edition is Edition.V2016 else (2,))
    logout = decode_message(decode_frame(build_logout(edition, VIN, T, 7)))  # type: ignore[arg-type]
    assert logout == Logout(T, 7, platform=False)
    raw = build_platform_login(edition, VIN, T, 9, "威海广泰", "秘密pass")
    platform = decode_message(decode_frame(raw))  # type: ignore[arg-type]
    assert isinstance(platform, PlatformLogin)
    assert (platform.username, platform.password, platform.serial) == ("威海广泰", "秘密pass", 9)
    assert decode_message(decode_frame(build_empty(edition, Command.HEARTBEAT, VIN))) == Heartbeat()  # type: ignore[arg-type]
    assert decode_message(decode_frame(build_empty(edition, Command.TIME_SYNC, VIN))) == TimeSync()  # type: ignore[arg-type]


def test_responses_echo_the_command_in_beijing_time() -> None:
    frame = decode_frame(build_logout(Edition.V2025, VIN, T, 7))
    assert isinstance(frame, Frame)
    now = dt.datetime(2026, 12, 3, 16, 30, 5, tzinfo=dt.UTC)
    request = decode_frame(build_empty(Edition.V2016, Command.TIME_SYNC, VIN))
    assert isinstance(request, Frame)
    sync = decode_frame(encode_response(request, Flag.SUCCESS, now))
    assert isinstance(sync, Frame) and decode_message(sync) == TimeSync(GbTime(26, 12, 4, 0, 30, 5))
    reply = decode_frame(encode_response(frame, Flag.SUCCESS, now))
    assert isinstance(reply, Frame)
    assert (reply.edition, reply.command, reply.flag, reply.vin) == (Edition.V2025, 0x04, 0x01, VIN)
    assert reply.data == bytes((26, 12, 4, 0, 30, 5))  # 16:30 UTC is 00:30 next day in Beijing
    beat = decode_frame(build_empty(Edition.V2016, Command.HEARTBEAT, VIN))
    assert isinstance(beat, Frame)
    assert decode_frame(encode_response(beat, Flag.ERROR, now)) == Frame(Edition.V2016, 7, 2, VIN, 1, b"")


def test_trailing_bytes_after_a_fixed_unit_are_refused() -> None:
    raw = encode_frame(Edition.V2016, Command.VEHICLE_LOGOUT, Flag.COMMAND, VIN, T.encode() + b"\x00\x01\x99")
    result = decode_message(decode_frame(raw))  # type: ignore[arg-type]
    assert isinstance(result, FrameError) and result.reason == Reason.TRAILING_BYTES


def test_vin_must_be_printable_but_may_be_empty() -> None:
    raw = bytearray(build_empty(Edition.V2016, Command.HEARTBEAT, VIN))
    raw[5] = 0x07
    raw[-1] = bcc(bytes(raw[2:-1]))
    result = decode_frame(bytes(raw))
    assert isinstance(result, FrameError) and result.reason == Reason.BAD_VIN
    empty = decode_frame(build_empty(Edition.V2025, Command.HEARTBEAT, ""))
    assert isinstance(empty, Frame) and empty.vin == ""
