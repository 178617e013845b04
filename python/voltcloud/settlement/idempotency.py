"""Idempotency keys, stored in the same transaction as the effects they guard.

A replay (same key, same request) returns the first result. The same key with a different request is refused
with INVALID_ARGUMENT naming `idempotency_key` (like Stripe's "keys are for retrying the same request").
Keys are namespaced by operation, so a hold and a capture may share a client key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform.errors import Aborted, InvalidArgument
from voltcloud.settlement.models import IdempotencyRecord
from voltcloud.settlement.sql import insert_ignore

MAX_KEY_LENGTH = 200


def request_hash(request: Mapping[str, Any]) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.UTC).isoformat()
        raise TypeError(f"cannot hash {type(value).__name__}")

    blob = json.dumps(request, sort_keys=True, separators=(",", ":"), default=default)
    return hashlib.sha256(blob.encode()).hexdigest()


class Claim:
    """The outcome of claiming a key: either a replay (`result_id` set) or a fresh claim to complete."""

    def __init__(self, record_key: str, replay_of: str | None) -> None:
        self.record_key = record_key
        self.replay_of = replay_of

    @property
    def is_replay(self) -> bool:
        return self.replay_of is not None


async def claim(
    session: AsyncSession, operation: str, key: str, request: Mapping[str, Any], *, now: dt.datetime
) -> Claim:
    if not key:
        raise InvalidArgument.for_field("idempotency_key", "is required for money operations")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidArgument.for_field("idempotency_key", f"must be at most {MAX_KEY_LENGTH} characters")
    record_key = f"{operation}:{key}"
    digest = request_hash(request)
    inserted = await insert_ignore(
        session, IdempotencyRecord, {"key": record_key, "request_hash": digest, "result_id": "", "created_at": now}
    )
    if inserted:
        return Claim(record_key, None)
    existing = (await session.exec(select(IdempotencyRecord).where(IdempotencyRecord.key == record_key))).one_or_none()
    if existing is None:  # the conflicting writer rolled back between our insert and select
        raise Aborted(f"idempotency key {key!r} is being used concurrently; retry")
    if existing.request_hash != digest:
        raise InvalidArgument.for_field(
            "idempotency_key", f"{key!r} was already used for a different {operation} request"
        )
    return Claim(record_key, existing.result_id)


async def complete(session: AsyncSession, claim_: Claim, result_id: str) -> None:
    record = await session.get(IdempotencyRecord, claim_.record_key)
    if record is None:  # pragma: no cover - inserted in this transaction
        raise RuntimeError("idempotency record vanished")
    record.result_id = result_id
    session.add(record)
