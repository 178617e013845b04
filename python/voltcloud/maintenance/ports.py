"""What maintenance needs from rooms above it, filled in by the composition root (server.py): the station
registry's equipment, so a scanned code names a station, connector, lane or pack, and a station's operator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlmodel.ext.asyncio.session import AsyncSession


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
