"""What fleet needs from rooms above it, as ports the composition root (`server.py`) wires.

Fleet sits at the bottom of the room graph (settlement and stations read its rows through `fleet.api`), so it
cannot import them: a new fleet or sub-fleet needs its settlement account, an allocation is a journal entry, a
credit limit lives on the account, and whether a pack type exists is stations' to say. `settlement.api` (the
module itself) is the `Ledger`; `server.py` gives the `PackTypes` check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from sqlmodel.ext.asyncio.session import AsyncSession


class Ledger(Protocol):
    """Settlement's side of fleets. Every call joins the caller's transaction and never commits."""

    async def ensure_customer_account(
        self, session: AsyncSession, *, owner_kind: str, owner_id: str, currency: str = ...
    ) -> str: ...

    async def ensure_sub_fleet_account(
        self, session: AsyncSession, *, fleet_id: str, sub_fleet_id: str, currency: str, credit_limit_minor: int
    ) -> str: ...

    async def move_balance(
        self,
        session: AsyncSession,
        *,
        from_account_id: str,
        to_account_id: str,
        amount_minor: int,
        idempotency_key: str,
        actor_subject: str,
    ) -> tuple[str, int, int]:
        """Posts one balanced entry; (entry id, source balance after, target balance after)."""
        ...

    async def set_credit_limit(self, session: AsyncSession, *, account_id: str, credit_limit_minor: int) -> None: ...


PackTypes = Callable[[AsyncSession, int], Awaitable[bool]]  # whether a pack type id exists
