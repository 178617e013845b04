"""The stations domain's public command path for other domains: what a command to a station answered.

The live implementation is the gateway hub (`ingest.hub.Hub`, which sends the command down the station's
gateway uplink stream); the composition root hands it to the domains that need it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.errors import InvalidArgument, NotFound
from voltcloud.stations import registry
from voltcloud.stations.models import Pack, StationCommandRecord, StationSession


@dataclass(frozen=True)
class CommandOutcome:
    accepted: bool
    status: str  # accepted / rejected / offline / timeout / failed / not_supported
    detail: str = ""


@dataclass(frozen=True)
class CommandResult:
    """A station's answer to a command, or the platform's when none came (offline, timeout)."""

    command_id: str
    status: int  # platform.enums.CommandStatus
    detail: str = ""
    result_time: dt.datetime | None = None  # None: not reported


class StationCommands(Protocol):
    async def remote_start(
        self, station_id: str, connector_id: str, order_id: str, id_tag: str, answer_within: dt.timedelta
    ) -> CommandOutcome:
        """Asks the station to start a charging session for `order_id` on `connector_id`."""
        ...

    async def reserve_swap(
        self, station_id: str, lane: int, pack_id: str, reservation_id: str, answer_within: dt.timedelta
    ) -> CommandOutcome:
        """Tells a swap station to hand out `pack_id` on `lane` for `reservation_id` (a scanned swap)."""
        ...

    async def cancel_swap(self, station_id: str, lane: int, reservation_id: str, answer_within: dt.timedelta) -> None:
        """Voids `reservation_id` at the station and frees its lane (best effort)."""
        ...


@dataclass(frozen=True)
class CommandRequest:
    """A command an operator sends to a station, as far as the platform checks and records it."""

    station_id: str
    kind: str
    payload: bytes  # the command as sent, kept for the audit trail
    connector_id: str = ""
    connector_field: str = ""  # the API field naming the connector, for the error
    stop_session_id: str = ""
    withdraw_pack_id: str = ""


async def record_command(
    session: AsyncSession, principal: Principal, now: dt.datetime, command_id: str, request: CommandRequest
) -> str | None:
    """Checks `request` against the station and records it. Returns the station's own (OCPP transaction) id of
    the session a remote_stop names when that is one of the platform's sessions on this station, else None:
    the platform names its own sessions, the gateway knows the station's."""
    view = await registry.get_station(session, principal, request.station_id)
    # Drivers and fleets may see a station but only its operator (or the platform) may command it.
    if principal.role is not Role.PLATFORM_ADMIN:
        principal.require_tenant("operator", view.station.operator_id)
    if request.connector_id and request.connector_id not in {c.id for c in view.connectors}:
        raise InvalidArgument.for_field(
            f"command.{request.connector_field}",
            f"connector {request.connector_id} is not on station {request.station_id}",
        )
    external_id = None
    if request.kind == "remote_stop":
        running = await session.get(StationSession, request.stop_session_id)
        if running is not None and running.station_id == request.station_id:
            external_id = running.external_id
    if request.kind == "withdraw_pack" and await session.get(Pack, request.withdraw_pack_id) is None:
        raise NotFound(f"pack {request.withdraw_pack_id} not found")
    session.add(
        StationCommandRecord(
            id=command_id,
            station_id=request.station_id,
            kind=request.kind,
            payload=request.payload,
            requested_by=principal.subject,
            created_at=now,
        )
    )
    return external_id


async def record_result(session: AsyncSession, command_id: str, status: int, detail: str, now: dt.datetime) -> None:
    record = await session.get(StationCommandRecord, command_id)
    if record is not None:
        record.status = status
        record.detail = detail[:500]
        record.result_at = now
        session.add(record)
