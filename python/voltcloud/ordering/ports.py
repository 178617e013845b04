"""What ordering needs from dispatch, as a port: dispatch sits above ordering in the room graph (it moves orders
through `ordering.api`), so ordering cannot import it. The runtime (`voltcloud/runtime.py`) wires
`dispatch.api.OrderTasks` in."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.ordering.lifecycle import Effects
from voltcloud.ordering.models import Order
from voltcloud.ordering.states import Mode


@dataclass(frozen=True)
class Place:
    """A stop of an order's task: where the vehicle is, or the station it is driven to."""

    lat: float
    lng: float
    station_id: str | None = None


class TaskRef(Protocol):
    @property
    def id(self) -> str: ...


class Dispatcher(Protocol):
    """Tasks for valet and mobile-van orders, in the order's transaction; workers are told after commit."""

    async def create_for_order(
        self,
        session: AsyncSession,
        effects: Effects,
        *,
        order: Order,
        mode: Mode,
        unit_id: str,
        operator_id: str,
        vehicle: Place,
        station: Place | None,
        back: Place,
        eta: dt.datetime,
        service_s: int,
        energy_wh: int,
        now: dt.datetime,
        offer_timeout_s: float,
    ) -> TaskRef: ...

    async def cancel_for_order(
        self, session: AsyncSession, effects: Effects, order: Order, reason: str, now: dt.datetime
    ) -> None: ...
