"""Idempotency of mutating StationService RPCs: the first response is stored under (method, caller, key)."""

from __future__ import annotations

import datetime as dt
import hashlib

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform.auth import Principal
from voltcloud.platform.errors import AlreadyExists
from voltcloud.stations.models import StationIdempotency


def key_of(method: str, principal: Principal, idempotency_key: str) -> str | None:
    if not idempotency_key:
        return None
    return f"{method}:{principal.subject}:{idempotency_key}"[:300]


def fingerprint(request: bytes) -> str:
    return hashlib.sha256(request).hexdigest()


async def lookup(session: AsyncSession, key: str | None, request_hash: str) -> bytes | None:
    """The stored response for a retry, None for a first call; ALREADY_EXISTS when the key was used for a
    different request."""
    if key is None:
        return None
    row = await session.get(StationIdempotency, key)
    if row is None:
        return None
    if row.request_hash != request_hash:
        raise AlreadyExists("idempotency_key was already used for a different request")
    return row.response


def store(session: AsyncSession, key: str | None, request_hash: str, response: bytes, now: dt.datetime) -> None:
    if key is not None:
        session.add(StationIdempotency(key=key, request_hash=request_hash, response=response, created_at=now))
