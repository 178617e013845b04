"""The `ChargingTokens` port fleet needs (`fleet.api.ChargingTokens`): FleetService issues, blocks, expires and
lists a fleet's tokens through stations' own token rules (`tokens`), so a token issued either way is the same
row the OCPP gateways authorise against."""

from __future__ import annotations

import datetime as dt

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.api import TokenIssue, TokenView
from voltcloud.platform.auth import Principal
from voltcloud.platform.errors import NotFound
from voltcloud.stations import tokens
from voltcloud.stations.ports import Settlement
from voltcloud.stations.token_models import ChargingToken


def view(token: ChargingToken, now: dt.datetime) -> TokenView:
    return TokenView(
        token_id=token.id,
        id_tag=token.id_tag,
        operator_id=token.operator_id,
        fleet_id=token.owner_id,
        sub_fleet_id=token.sub_fleet_id or "",
        vehicle_id=token.vehicle_id,
        account_id=token.account_id,
        status=int(tokens.verdict(token, now)),
        expires_at=token.expires_at,
    )


class FleetTokens:
    def __init__(self, settlement: Settlement) -> None:
        self._settlement = settlement

    async def issue(self, session: AsyncSession, principal: Principal, now: dt.datetime, new: TokenIssue) -> TokenView:
        inp = tokens.TokenInput(
            id_tag=new.id_tag,
            operator_id=new.operator_id,
            owner_kind="fleet",
            owner_id=new.fleet_id,
            sub_fleet_id=new.sub_fleet_id,
            vehicle_id=new.vehicle_id,
            expires_at=new.expires_at,
        )
        token = await tokens.register(session, principal, now, inp, self._settlement)
        # Whose card it is: authorisation refuses it once that driver leaves the fleet (fleet.api.holder_refusal).
        token.driver_id = new.driver_id or None
        session.add(token)
        await session.flush()
        return view(token, now)

    async def set_blocked(
        self, session: AsyncSession, principal: Principal, now: dt.datetime, fleet_id: str, token_id: str, blocked: bool
    ) -> TokenView:
        await _fleets_token(session, fleet_id, token_id)
        return view(await tokens.set_blocked(session, principal, now, token_id, blocked), now)

    async def set_expiry(
        self,
        session: AsyncSession,
        principal: Principal,
        now: dt.datetime,
        fleet_id: str,
        token_id: str,
        expires_at: dt.datetime | None,
    ) -> TokenView:
        await _fleets_token(session, fleet_id, token_id)
        return view(await tokens.set_expiry(session, principal, now, token_id, expires_at), now)

    async def list_tokens(
        self,
        session: AsyncSession,
        now: dt.datetime,
        fleet_id: str,
        sub_fleet_id: str,
        *,
        after: str | None,
        limit: int,
    ) -> list[TokenView]:
        rows = await tokens.fleet_tokens(session, fleet_id, sub_fleet_id, after=after, limit=limit)
        return [view(t, now) for t in rows]


async def _fleets_token(session: AsyncSession, fleet_id: str, token_id: str) -> None:
    """NOT_FOUND unless the token is the fleet's: a driver's own token is not the fleet's to manage."""
    token = await session.get(ChargingToken, token_id) if token_id else None
    if token is None or token.owner_kind != "fleet" or token.owner_id != fleet_id:
        raise NotFound(f"charging token {token_id} not found in fleet {fleet_id}")
