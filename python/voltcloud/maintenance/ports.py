"""What maintenance needs from rooms above it, as ports the composition root (server.py) fills in.

Maintenance sits below stations, the engine and dispatch in the room layers (stations imports maintenance's
api to raise alarms), so it reads stations' rows, withdraws packs, commands stations and asks the engine's
travel model and route solver only through these Protocols: the station registry's equipment (a scanned code
names a station, connector, lane or pack; a station's operator), stations' sites and packs (maint-field), and
the engine's travel times and route solver (maint-field)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlmodel.ext.asyncio.session import AsyncSession


@dataclass(frozen=True)
class Site:
    """A station as maintenance sees it."""

    station_id: str
    operator_id: str
    lat: float
    lng: float


@dataclass(frozen=True)
class PackFacts:
    pack_id: str
    operator_id: str
    station_id: str | None
    state: int  # PackState
    soh_permille: int
    cycles: int
    capacity_wh: int


@dataclass(frozen=True)
class PackSample:
    """One entry of a pack's flow history, as battery health reads it."""

    seq: int  # increasing per pack (the page key)
    at: dt.datetime
    soh_permille: int
    cycles: int
    temperature_milli_c: int
    power_w: int


class Stations(Protocol):
    async def site(self, session: AsyncSession, station_id: str) -> Site | None: ...

    async def pack(self, session: AsyncSession, pack_id: str) -> PackFacts | None: ...

    async def pack_samples(
        self,
        session: AsyncSession,
        pack_id: str,
        *,
        start: dt.datetime | None,
        end: dt.datetime | None,
        after_seq: int,
        limit: int,
    ) -> list[PackSample]:
        """Oldest first, only entries that carry a SOH reading."""
        ...

    async def packs_sampled_after(self, session: AsyncSession, after_seq: int, *, limit: int) -> list[tuple[int, str]]:
        """(seq, pack id) of the flow-history entries carrying a SOH after `after_seq`, oldest first (the risk
        sweep's cursor: which packs' SOH fit may have moved)."""
        ...

    async def withdraw_pack(
        self, session: AsyncSession, pack_id: str, *, now: dt.datetime, actor: str, actor_role: int, reason: str
    ) -> PackFacts:
        """Pack -> WITHDRAWN (sticky), a flow-history entry, the change on the feed for every engine."""
        ...

    async def send_withdraw(self, station_id: str, pack_id: str, reason: str, answer_within: dt.timedelta) -> str:
        """The withdraw command down the station's gateway; returns the outcome's name (ACCEPTED, OFFLINE, ...)."""
        ...


class Travel(Protocol):
    def durations(
        self, origins: Sequence[tuple[float, float]], targets: Sequence[tuple[float, float]], at: dt.datetime
    ) -> list[list[float]]:
        """Road travel seconds from each origin to each target departing at `at` (the engine's travel model)."""
        ...

    def assign(
        self, cost: Sequence[Sequence[float]], allowed: Sequence[Sequence[bool]], time_limit_ms: int
    ) -> dict[int, int]:
        """Target j -> origin i, each origin at most once, minimising total cost over allowed pairs (the
        engine's route solver)."""
        ...


@dataclass(frozen=True)
class Equipment:
    kind: str  # "station", "connector", "lane", "pack"
    operator_id: str
    station_id: str | None
    resource_id: str | None = None  # the connector id or "<station>/lane/<n>"
    pack_id: str | None = None


class EquipmentDirectory(Protocol):
    async def resolve(self, session: AsyncSession, code: str) -> Equipment | None:
        """The equipment a scanned code names; None when it names nothing registered. May raise
        InvalidArgument (field `equipment_code`) for a code of the wrong shape."""
        ...

    async def station_operator(self, session: AsyncSession, station_id: str) -> str | None:
        """The operator of a station; None for an unknown station."""
        ...
