"""The stations domain's public command path for other domains: what a command to a station answered.

The live implementation is the gateway hub (`ingest.hub.Hub`, which sends the command down the station's
gateway uplink stream); the composition root hands it to the domains that need it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol


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
