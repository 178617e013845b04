"""Sortable identifiers (UUIDv7), so ids order by creation time in indexes and listings."""

from __future__ import annotations

import os
import time
import uuid


def new_id(prefix: str = "") -> str:
    """A UUIDv7 string, optionally prefixed (`ord_...`) so an id says what it names."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= ((rand >> 68) & 0xFFF) << 64
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)
    text = str(uuid.UUID(int=value))
    return f"{prefix}_{text}" if prefix else text
