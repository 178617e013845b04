"""Dispatch's public surface: the adapter that serves ordering's `Dispatcher` port, and the hub and batch
re-optimisation the runtime (`voltcloud/runtime.py`) runs."""

from __future__ import annotations

import datetime as dt

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.dispatch import planning
from voltcloud.dispatch.hub import DispatchHub
from voltcloud.dispatch.models import Task
from voltcloud.dispatch.tasks import DISPATCH_TOPIC, Notifier, TaskKind, cancel_for_order, create_for_order
from voltcloud.ordering.api import Effects, Mode, Order, Place

__all__ = ["DISPATCH_TOPIC", "DispatchHub", "OrderTasks", "planning"]


class OrderTasks:
    """Ordering's `Dispatcher`: tasks for valet and van orders, their workers told through `notifier`."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

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
    ) -> Task:
        return await create_for_order(
            session,
            effects,
            self._notifier,
            order=order,
            kind=TaskKind.VALET if mode is Mode.VALET else TaskKind.MOBILE_CHARGE,
            unit_id=unit_id,
            operator_id=operator_id,
            vehicle=vehicle,
            station=station,
            back=back,
            eta=eta,
            service_s=service_s,
            energy_wh=energy_wh,
            now=now,
            offer_timeout_s=offer_timeout_s,
        )

    async def cancel_for_order(
        self, session: AsyncSession, effects: Effects, order: Order, reason: str, now: dt.datetime
    ) -> None:
        await cancel_for_order(session, effects, self._notifier, order, reason, now)
