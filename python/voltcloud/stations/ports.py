"""What stations needs from settlement, as a port the composition root (`server.py`) wires.

Stations sits below settlement in the room graph (settlement reads stations' rows through `stations.api`), so
it cannot import it: registering a charging token needs the owner's wallet, and assigning a rate model is
settlement's rule. `settlement.api` (the module itself) is the `Settlement`.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from sqlmodel.ext.asyncio.session import AsyncSession


class Settlement(Protocol):
    async def ensure_customer_account(
        self, session: AsyncSession, *, owner_kind: str, owner_id: str, currency: str = ...
    ) -> str: ...

    async def assign_rate_model(
        self,
        session: AsyncSession,
        *,
        rate_model_id: str,
        station_id: str = ...,
        customer_account_id: str = ...,
        fleet_id: str = ...,
        effective_from: dt.datetime | None = ...,
        station_operator_id: str | None = ...,
    ) -> str: ...
