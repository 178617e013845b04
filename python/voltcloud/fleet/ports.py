"""What fleet needs from rooms above it, as ports the composition root (`server.py`) wires.

Fleet sits at the bottom of the room graph (settlement and stations read its rows through `fleet.api`), so it
cannot import them: a new fleet or sub-fleet needs its settlement account, an allocation is a journal entry, a
credit limit lives on the account, and whether a pack type exists is stations' to say. `settlement.api` (the
module itself) is the `Ledger`; `server.py` gives the `PackTypes` check. Charging tokens are stations' rows
(the OCPP gateways authorise against them): `stations.api.FleetTokens` is the `ChargingTokens` port.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform.auth import Principal


@dataclass(frozen=True)
class StatementEntry:
    posting_id: int
    entry_id: str
    posted_at: dt.datetime
    kind: str  # the journal entry kind, lower case
    description: str
    order_id: str
    account_id: str
    amount_minor: int  # positive: into the account
    balance_after_minor: int  # of all the statement's accounts together


@dataclass(frozen=True)
class AccountStatement:
    currency: str
    opening_minor: int
    closing_minor: int
    credits_minor: int
    debits_minor: int  # positive
    order_spend: Mapping[str, tuple[int, int]]  # account id -> (orders, net amount paid for them)
    entries: Sequence[StatementEntry]  # this page


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

    async def account_statement(
        self,
        session: AsyncSession,
        *,
        account_ids: Sequence[str],
        start: dt.datetime,
        end: dt.datetime,
        after: int | None,
        limit: int,
    ) -> AccountStatement:
        """The postings on these accounts in [start, end), paged by posting id, with the period's totals."""
        ...


PackTypes = Callable[[AsyncSession, int], Awaitable[bool]]  # whether a pack type id exists


@dataclass(frozen=True)
class TokenIssue:
    """A token to issue for a fleet, after fleet has checked the fleet, sub-fleet and vehicle are the caller's."""

    fleet_id: str
    sub_fleet_id: str
    vehicle_id: str
    id_tag: str
    operator_id: str
    expires_at: dt.datetime | None
    driver_id: str = ""  # the driver the card is handed to: it stops working when he leaves the fleet


@dataclass(frozen=True)
class TokenView:
    token_id: str
    id_tag: str
    operator_id: str
    fleet_id: str
    sub_fleet_id: str
    vehicle_id: str
    account_id: str
    status: int  # IdTagStatus: the verdict now (ACCEPTED, BLOCKED, EXPIRED)
    expires_at: dt.datetime | None


class ChargingTokens(Protocol):
    """Stations' side of a fleet's charging tokens; joins the caller's transaction. A token id that is not the
    named fleet's is NOT_FOUND."""

    async def issue(
        self, session: AsyncSession, principal: Principal, now: dt.datetime, new: TokenIssue
    ) -> TokenView: ...

    async def set_blocked(
        self, session: AsyncSession, principal: Principal, now: dt.datetime, fleet_id: str, token_id: str, blocked: bool
    ) -> TokenView: ...

    async def set_expiry(
        self,
        session: AsyncSession,
        principal: Principal,
        now: dt.datetime,
        fleet_id: str,
        token_id: str,
        expires_at: dt.datetime | None,
    ) -> TokenView: ...

    async def list_tokens(
        self,
        session: AsyncSession,
        now: dt.datetime,
        fleet_id: str,
        sub_fleet_id: str,
        *,
        after: str | None,
        limit: int,
    ) -> list[TokenView]: ...


@dataclass(frozen=True)
class VehicleDay:
    """A vehicle's orders created in a window: ordering's facts for fleet's daily report."""

    vehicle_id: str
    orders: int
    completed: int
    swap_energy_wh: int
    charge_energy_wh: int
    cost_minor: int
    currency: str


class OrderFacts(Protocol):
    """Ordering's side of fleet reports (`ordering.fleet_reports`); joins the caller's transaction."""

    async def vehicle_days(
        self, session: AsyncSession, *, fleet_id: str, vehicle_ids: Sequence[str], start: dt.datetime, end: dt.datetime
    ) -> list[VehicleDay]: ...


@dataclass(frozen=True)
class DrivingDay:
    """A vehicle's telemetry figures in a window: telemetry's facts for fleet's daily report."""

    vehicle_id: str
    distance_m: int
    driving_s: int


class DrivingFacts(Protocol):
    """Telemetry's side of fleet reports (`telemetry.api.VehicleTelemetry`); joins the caller's transaction."""

    async def driving_days(
        self, session: AsyncSession, *, vehicle_ids: Sequence[str], start: dt.datetime, end: dt.datetime
    ) -> list[DrivingDay]: ...


class NoDriving:
    """Where no telemetry room is wired (tests of fleet alone): no figures."""

    async def driving_days(
        self, session: AsyncSession, *, vehicle_ids: Sequence[str], start: dt.datetime, end: dt.datetime
    ) -> list[DrivingDay]:
        return []
