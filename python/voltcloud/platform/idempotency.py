"""The one idempotency of every mutating RPC: claim a key, do the work, complete it, all in one transaction.

A key is scoped by (operation, caller), so two callers, or a hold and a capture, never collide. The request's
fingerprint is a hash of its deterministic serialisation. A retry with the same request gets the first result;
the same key with a different request is INVALID_ARGUMENT naming `idempotency_key` (keys are for retrying the
same request, as Stripe puts it).

Race safety comes from the claim being an INSERT in the caller's transaction: on PostgreSQL a concurrent
duplicate's INSERT waits for the first transaction, then either inserts (the first rolled back, so it does the
work itself) or reads the committed row and replays its result. SQLite serialises writers, so the same holds.

Two ways in. A servicer whose work runs in one transaction it opens calls `once` (or `claim_request` /
`replayed` / `complete`) and stores the response message. A domain operation whose work runs in a unit of
work (an order, a reservation, a hold) claims inside it and stores the id of what it made. Settlement's
operations are also called by other domains with internal keys ("order-hold:<subject>:<key>"), so they take
keys already scoped by their caller (its servicer passes "<subject>|<key>") and leave `caller` empty.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform.db import insert_ignore, utc_column
from voltcloud.platform.errors import Aborted, InvalidArgument

MAX_KEY_LENGTH = 300  # client keys are limited to 128 characters; internal keys add a caller or order prefix


class IdempotencyEntry(SQLModel, table=True):
    """The first result of a keyed request, written in the same transaction as its effects."""

    __tablename__ = "idempotency"

    operation: str = Field(primary_key=True, max_length=64)
    caller: str = Field(primary_key=True, max_length=200)
    key: str = Field(primary_key=True, max_length=MAX_KEY_LENGTH)
    request_hash: str = Field(max_length=64)
    # NULL until completed: normally in the claiming transaction, after the station's answer for station commands
    response: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))


def fingerprint(request: bytes | Mapping[str, Any]) -> str:
    """SHA-256 of a message's deterministic serialisation, or of a domain request's canonical JSON."""
    if isinstance(request, bytes):
        return hashlib.sha256(request).hexdigest()

    def default(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.UTC).isoformat()
        raise TypeError(f"cannot fingerprint {type(value).__name__}")

    blob = json.dumps(request, sort_keys=True, separators=(",", ":"), default=default)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Claim:
    """A claimed key: `replay` holds the first call's result when this call is a retry. A claim without a key
    (an optional key left empty) guards nothing and `complete` ignores it."""

    operation: str
    caller: str
    key: str
    replay: bytes | None = None

    @property
    def is_replay(self) -> bool:
        return self.replay is not None

    @property
    def replay_of(self) -> str | None:
        """The first result as text (domain operations store the id of what they created)."""
        return None if self.replay is None else self.replay.decode()


async def claim(
    session: AsyncSession,
    operation: str,
    key: str,
    request: bytes | Mapping[str, Any],
    *,
    now: dt.datetime,
    caller: str = "",
    required: bool = True,
    result: str | None = None,
) -> Claim:
    """Claims `key` for this request in the session's transaction, or returns the first call's result.

    `result`: the answer, when the caller knows it before the work (the id of what it will create): stored
    with the claim, so no `complete` is needed; the transaction commits it with the work or not at all."""
    if not key:
        if required:
            raise InvalidArgument.for_field("idempotency_key", "is required")
        return Claim(operation, caller, "")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidArgument.for_field("idempotency_key", f"must be at most {MAX_KEY_LENGTH} characters")
    digest = fingerprint(request)
    values: dict[str, Any] = {"operation": operation, "caller": caller, "key": key, "request_hash": digest}
    values.update(created_at=now, response=None if result is None else result.encode())
    if await insert_ignore(session, IdempotencyEntry, values):
        return Claim(operation, caller, key)
    # The INSERT waited for a concurrent first call; its row is committed (or gone, if it rolled back).
    existing = await session.get(IdempotencyEntry, (operation, caller, key), populate_existing=True)
    if existing is None or _same_request(existing, digest).response is None:
        # Not completed: the first call is still running in a later transaction (SendStationCommand waits for
        # the station), or it rolled back after our INSERT looked. Either way a retry will get an answer.
        raise Aborted(f"idempotency key {key!r} is in use by a call still running; retry")
    return Claim(operation, caller, key, existing.response)


async def lookup(
    session: AsyncSession, operation: str, key: str, request: bytes | Mapping[str, Any], *, caller: str = ""
) -> bytes | None:
    """The first call's result, read before any work (a retry must not fail on a precondition the first call
    has since changed, like an expired quote); None when the key is new. Claim it in the working transaction."""
    if not key:
        return None
    row = await session.get(IdempotencyEntry, (operation, caller, key))
    if row is None:
        return None
    return _same_request(row, fingerprint(request)).response


def _same_request(row: IdempotencyEntry, digest: str) -> IdempotencyEntry:
    if row.request_hash != digest:
        raise InvalidArgument.for_field("idempotency_key", f"{row.key!r} was already used for a different request")
    return row


async def complete(session: AsyncSession, claim_: Claim, result: bytes | str) -> None:
    """Stores the result the retries of this claim will get, in the transaction that did the work."""
    if not claim_.key:
        return
    data = result.encode() if isinstance(result, str) else result
    table: Any = IdempotencyEntry.__table__  # type: ignore[attr-defined]
    await (await session.connection()).execute(sa.update(table).where(*_row(table, claim_)).values(response=data))


async def abandon(session: AsyncSession, claim_: Claim) -> None:
    """Frees a key claimed in an earlier, committed transaction whose call then failed before completing it."""
    if not claim_.key:
        return
    table: Any = IdempotencyEntry.__table__  # type: ignore[attr-defined]
    await (await session.connection()).execute(sa.delete(table).where(*_row(table, claim_), table.c.response.is_(None)))


def _row(table: Any, claim_: Claim) -> tuple[Any, ...]:
    return (table.c.operation == claim_.operation, table.c.caller == claim_.caller, table.c.key == claim_.key)


class KeyedRequest(Protocol):
    """A request message that carries an idempotency key (every mutating RPC's request)."""

    @property
    def idempotency_key(self) -> str: ...

    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


class Response(Protocol):
    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


R = TypeVar("R")
M = TypeVar("M", bound=Response)


async def claim_request(
    session: AsyncSession,
    operation: str,
    caller: str,
    request: KeyedRequest,
    *,
    now: dt.datetime,
    required: bool = False,
) -> Claim:
    """`claim` for a servicer: the key and the fingerprint come from the request message itself (a servicer whose
    key is mandatory checks that before any work)."""
    serialised = request.SerializeToString(deterministic=True)
    return await claim(
        session, operation, request.idempotency_key, serialised, now=now, caller=caller, required=required
    )


def replayed(claim_: Claim, parse: Callable[[bytes], R]) -> R | None:
    """The first call's response (parsed by e.g. `Response.FromString`) for a retry, None for a first call."""
    return None if claim_.replay is None else parse(claim_.replay)


async def once(
    session: AsyncSession,
    operation: str,
    caller: str,
    request: KeyedRequest,
    parse: Callable[[bytes], M],
    work: Callable[[], Awaitable[M]],
    *,
    now: dt.datetime,
) -> M:
    """A servicer's keyed call in one: the first call's response for a retry, else `work()`'s, stored."""
    claim_ = await claim_request(session, operation, caller, request, now=now)
    if claim_.replay is not None:
        return parse(claim_.replay)
    response = await work()
    await complete(session, claim_, response.SerializeToString())
    return response


__all__ = [
    "Claim",
    "IdempotencyEntry",
    "abandon",
    "claim",
    "claim_request",
    "complete",
    "fingerprint",
    "lookup",
    "once",
    "replayed",
]
