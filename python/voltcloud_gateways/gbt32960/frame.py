"""The GB/T 32960.3 frame: header checks, BCC, and a `FrameReader` that cuts a TCP byte stream into frames.

Layout (big-endian): start (2: `##` 2016 edition, `$$` 2025 edition), command (1), response flag (1),
VIN (17), encryption (1), data unit length N (2), data unit (N), BCC (1) = XOR of bytes 2 .. 24+N-1.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

HEADER_LEN: Final = 24
MAX_DATA_LEN: Final = 65_535
VIN_LEN: Final = 17


class Edition(enum.IntEnum):
    V2016 = 2016
    V2025 = 2025


START: Final = {Edition.V2016: b"##", Edition.V2025: b"$$"}
EDITION_OF: Final = {b"##": Edition.V2016, b"$$": Edition.V2025}
_START: Final = re.compile(rb"##|\$\$")


class Command(enum.IntEnum):
    VEHICLE_LOGIN = 0x01
    REALTIME = 0x02
    REISSUE = 0x03
    VEHICLE_LOGOUT = 0x04
    PLATFORM_LOGIN = 0x05
    PLATFORM_LOGOUT = 0x06
    HEARTBEAT = 0x07
    TIME_SYNC = 0x08
    ACTIVATION = 0x09  # 2025
    ACTIVATION_RESULT = 0x0A  # 2025
    KEY_EXCHANGE = 0x0B  # 2025
    PARAM_QUERY = 0x80
    PARAM_SET = 0x81
    TERMINAL_CONTROL = 0x82


class Flag(enum.IntEnum):
    """Response flag (byte 3)."""

    SUCCESS = 0x01
    ERROR = 0x02
    VIN_DUPLICATE = 0x03
    SIGNATURE_ERROR = 0x05  # 2025
    STRUCTURE_ERROR = 0x06  # 2025
    DECRYPTION_ERROR = 0x07  # 2025
    COMMAND = 0xFE


class Encryption(enum.IntEnum):
    NONE = 0x01
    RSA = 0x02
    AES128 = 0x03
    SM2 = 0x04  # 2025
    SM4 = 0x05  # 2025
    ABNORMAL = 0xFE
    INVALID = 0xFF


class Reason(enum.StrEnum):
    """Why bytes were refused. Stable codes: logged, counted and tested."""

    GARBAGE = "garbage"  # bytes before a start marker
    SHORT_FRAME = "short_frame"  # fewer bytes than a header + BCC, or than the declared length
    LENGTH_MISMATCH = "length_mismatch"  # a whole buffer whose size disagrees with the declared length
    LENGTH_TOO_LARGE = "length_too_large"  # declared data length above the configured maximum
    BAD_BCC = "bad_bcc"
    BAD_VIN = "bad_vin"
    TRUNCATED = "truncated"  # the data unit ended inside a field
    TRAILING_BYTES = "trailing_bytes"  # bytes left after a fixed-size data unit
    UNKNOWN_INFO_TYPE = "unknown_info_type"  # real-time type whose length cannot be known: decoding stops
    UNSUPPORTED = "unsupported"  # a command the gateway does not take (parameters, control, activation)
    ENCRYPTED = "encrypted"  # data unit is encrypted; kept opaque
    BAD_TIME = "bad_time"  # a real-time data unit whose time is not a calendar time


@dataclass(frozen=True, slots=True)
class FrameError:
    """Refused bytes. `offset` is within the frame (or the stream chunk for GARBAGE)."""

    reason: Reason
    message: str
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Frame:
    edition: Edition
    command: int  # a `Command` value, or an unknown id kept as is
    flag: int  # a `Flag` value, or an unknown flag kept as is
    vin: str  # ASCII, trailing 0x00 padding removed
    encryption: int
    data: bytes  # the data unit (opaque if encrypted)

    @property
    def encrypted(self) -> bool:
        return self.encryption != Encryption.NONE


def bcc(data: bytes | bytearray | memoryview) -> int:
    value = 0
    for b in data:
        value ^= b
    return value


def _bcc_fast(buf: bytes | bytearray, start: int, end: int) -> int:
    # XOR of a byte range by folding one big integer in halves: O(log n) big-int steps instead of a
    # Python-level loop per byte (the reader's hottest path).
    n = int.from_bytes(buf[start:end], "big")
    size = end - start
    while size > 1:
        half = size // 2
        n = (n >> (8 * half)) ^ (n & ((1 << (8 * half)) - 1))
        size -= half
    return n


def _parse_vin(raw: bytes) -> str | None:
    text = raw.rstrip(b"\x00")
    # all-zero is allowed: relay platforms may send their own commands (0x05/0x06) without a vehicle
    if any(b < 0x20 or b > 0x7E for b in text):
        return None
    return text.decode("ascii")


def _decode_at(buf: bytes | bytearray, start: int, data_len: int) -> Frame | FrameError:
    """Checks and builds the frame at buf[start : start + 24 + data_len + 1] (bounds already checked)."""
    end = start + HEADER_LEN + data_len
    if _bcc_fast(buf, start + 2, end) != buf[end]:
        return FrameError(Reason.BAD_BCC, f"BCC {buf[end]:02X} does not match the frame", end - start)
    vin = _parse_vin(bytes(buf[start + 4 : start + 21]))
    if vin is None:
        return FrameError(Reason.BAD_VIN, "VIN is not printable ASCII", 4)
    return Frame(
        edition=EDITION_OF[bytes(buf[start : start + 2])],
        command=buf[start + 2],
        flag=buf[start + 3],
        vin=vin,
        encryption=buf[start + 21],
        data=bytes(buf[start + HEADER_LEN : end]),
    )


def decode_frame(raw: bytes, max_data_len: int = MAX_DATA_LEN) -> Frame | FrameError:
    """One whole frame in `raw` (exactly: trailing bytes are a LENGTH_MISMATCH)."""
    if len(raw) < 2 or bytes(raw[:2]) not in EDITION_OF:
        return FrameError(Reason.GARBAGE, "no start marker ('##' or '$$')")
    if len(raw) < HEADER_LEN + 1:
        return FrameError(Reason.SHORT_FRAME, f"short frame ({len(raw)} bytes)")
    data_len = int.from_bytes(raw[22:24], "big")
    if data_len > max_data_len:
        return FrameError(Reason.LENGTH_TOO_LARGE, f"data length {data_len} above the limit {max_data_len}", 22)
    have = len(raw) - HEADER_LEN - 1
    if have != data_len:
        return FrameError(
            Reason.LENGTH_MISMATCH, f"length mismatch: header says {data_len}, frame has {have} data bytes", 22
        )
    return _decode_at(raw, 0, data_len)


def encode_frame(
    edition: Edition, command: int, flag: int, vin: str, data: bytes, encryption: int = Encryption.NONE
) -> bytes:
    vin_bytes = vin.encode("ascii")
    if len(vin_bytes) > VIN_LEN or len(data) > MAX_DATA_LEN:
        raise ValueError("VIN longer than 17 bytes or data unit longer than 65535 bytes")
    body = (
        bytes((command, flag))
        + vin_bytes.ljust(VIN_LEN, b"\x00")
        + bytes((encryption,))
        + len(data).to_bytes(2, "big")
        + data
    )
    return START[edition] + body + bytes((bcc(body),))


class FrameReader:
    """Sans-IO framer: `feed(chunk)` returns the complete frames and the errors found so far.

    Memory is bounded: the buffer holds at most one frame (24 + max_data_len + 1 bytes) plus the chunk
    being fed. Garbage before a start marker is reported once per run and dropped; a declared length above
    `max_data_len` or a bad BCC drops the first start byte and resynchronises on the next one.
    """

    def __init__(self, max_data_len: int = MAX_DATA_LEN) -> None:
        if not 0 <= max_data_len <= MAX_DATA_LEN:
            raise ValueError("max_data_len must be within 0..65535")
        self.max_data_len = max_data_len
        self._buf = bytearray()
        self._suppress = False
        self.dropped = 0  # bytes dropped as garbage so far (a connection's junk budget is checked on it)

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[Frame | FrameError]:
        self._buf += chunk
        out: list[Frame | FrameError] = []
        buf = self._buf
        pos = 0
        while True:
            start = self._find_start(buf, pos, out)
            if start < 0:
                # keep a trailing '#'/'$' that may be the first half of a marker
                keep = 1 if buf and buf[-1] in (0x23, 0x24) else 0
                pos = len(buf) - keep
                break
            pos = start
            if len(buf) - pos < HEADER_LEN:
                break
            data_len = (buf[pos + 22] << 8) | buf[pos + 23]
            if data_len > self.max_data_len:
                out.append(FrameError(Reason.LENGTH_TOO_LARGE, f"data length {data_len} above the limit", 22))
                pos += 1
                self._suppress = True
                continue
            total = HEADER_LEN + data_len + 1
            if len(buf) - pos < total:
                break
            item = _decode_at(buf, pos, data_len)
            out.append(item)
            if isinstance(item, FrameError):
                pos += 1  # resync inside: the length may be what was corrupted
                self._suppress = True
            else:
                pos += total
                self._suppress = False
        del buf[:pos]
        return out

    def _find_start(self, buf: bytearray, pos: int, out: list[Frame | FrameError]) -> int:
        if len(buf) - pos > 2 and buf[pos] in (0x23, 0x24) and buf[pos + 1] == buf[pos] != buf[pos + 2]:
            return pos  # the common case: the next frame starts right here
        match = _START.search(buf, pos)
        if match is not None:
            start = match.start()
            # '###': no command id is 0x23/0x24, so the marker is the last two of the run
            while start + 2 < len(buf) and buf[start + 2] == buf[start]:
                start += 1
            self._drop(start - pos, out)
            return start
        end = len(buf) - 1 if buf and buf[-1] in (0x23, 0x24) else len(buf)
        self._drop(end - pos, out)
        return -1

    def _drop(self, count: int, out: list[Frame | FrameError]) -> None:
        # One GARBAGE error per run of junk, even across feeds; none right after an error that explains it.
        self.dropped += max(count, 0)
        if count > 0 and not self._suppress:
            out.append(FrameError(Reason.GARBAGE, f"{count} bytes before a start marker"))
            self._suppress = True

    def finish(self) -> list[FrameError]:
        """End of stream: whatever is buffered is an incomplete frame."""
        if not self._buf:
            return []
        left = len(self._buf)
        self._buf.clear()
        return [FrameError(Reason.SHORT_FRAME, f"stream ended inside a frame ({left} bytes buffered)")]
