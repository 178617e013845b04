"""The GB/T 32960.3 frame: its codes, and the Rust framer (header checks, BCC, a `FrameReader` that cuts a TCP
byte stream into frames) under the codec's names.

Layout (big-endian): start (2: `##` 2016 edition, `$$` 2025 edition), command (1), response flag (1),
VIN (17), encryption (1), data unit length N (2), data unit (N), BCC (1) = XOR of bytes 2 .. 24+N-1.
"""

from __future__ import annotations

import enum
from typing import Final, TypeAlias

from voltcloud import _core

HEADER_LEN: Final = 24
MAX_DATA_LEN: Final = 65_535
VIN_LEN: Final = 17


class Edition(enum.IntEnum):
    V2016 = 2016
    V2025 = 2025


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


# The framing is Rust (rust_core/src/gbt32960.rs): these are its types and functions under the codec's names.
# FrameError.reason is a `Reason` value (a str); Frame.edition is 2016 or 2025 (compare with `Edition`).
Frame: TypeAlias = _core.Gbt32960Frame
FrameError: TypeAlias = _core.Gbt32960FrameError
# Sans-IO framer: `feed(chunk)` returns the complete frames and the errors found so far. Memory is bounded:
# the buffer holds at most one frame (24 + max_data_len + 1 bytes) plus the chunk being fed. Garbage before a
# start marker is reported once per run and dropped; a declared length above `max_data_len` or a bad BCC/VIN
# drops the first start byte and resynchronises on the next one. `finish()` reports an incomplete frame.
FrameReader: TypeAlias = _core.Gbt32960Reader
decode_frame = _core.gbt32960_decode_frame  # one whole frame (trailing bytes are a LENGTH_MISMATCH)
bcc = _core.gbt32960_bcc  # XOR of the bytes
encode_frame = _core.gbt32960_encode_frame  # (edition, command, flag, vin, data, encryption=NONE) -> frame
