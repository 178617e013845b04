"""Charging tokens (OCPP idTags) and the no-free-energy rule.

A token is valid at one operator's chargers, belongs to a driver or a fleet (optionally a sub-fleet), names the
vehicle its sessions are ordered for and the account they are charged to. Gateways ask `authorize` before a
charger may start; ordering opens an order for every session started with an accepted token. A charge session
that delivered energy and ended without a settled order (unknown, blocked or expired tag, a charger that
started offline from a stale local list, a payer without funds) becomes an `AbnormalSession` with an alarm,
which the operator resolves: energy is never silently free.

Tenant rules: a fleet manager registers tokens for its own fleet, a driver for himself, the admin for anyone.
A token may be blocked by its owner, by the operator it is valid at, or by the admin; a token blocked by the
operator or the admin can only be re-activated by them (a customer cannot lift a fraud block).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.api import Driver, SubFleet, Vehicle, holder_refusal
from voltcloud.maintenance import api as workorders
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.enums import AlarmLevel, TagStatus
from voltcloud.platform.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from voltcloud.platform.ids import new_id
from voltcloud.stations.models import Operator, Station, StationSession
from voltcloud.stations.ports import Settlement
from voltcloud.stations.token_models import AbnormalSession, ChargingToken

ID_TAG = re.compile(r"^[A-Za-z0-9._:-]{1,20}$")  # OCPP 1.6 IdToken: CiString20
CACHE_TTL = dt.timedelta(seconds=60)  # how long a gateway may reuse an answer: a block takes effect this fast
ALARM_LEVEL_MAJOR = int(AlarmLevel.MAJOR)  # an unpaid session needs an operator (opens a work order)
# AbnormalSession.state: no proto has an enum for it (the API never shows the state), so it is defined here, once.
OPEN, RESOLVED = 1, 2


@dataclass(frozen=True)
class Authorization:
    status: TagStatus
    token: ChargingToken | None
    expires_at: dt.datetime | None
    cache_until: dt.datetime


@dataclass(frozen=True)
class TokenInput:
    id_tag: str
    operator_id: str
    owner_kind: str
    owner_id: str
    sub_fleet_id: str
    vehicle_id: str
    expires_at: dt.datetime | None


def check_id_tag(value: str, field: str = "id_tag") -> str:
    if not ID_TAG.match(value):
        raise InvalidArgument.for_field(field, "must be 1..20 characters of [A-Za-z0-9._:-]")
    return value


def verdict(token: ChargingToken | None, at: dt.datetime) -> TagStatus:
    if token is None:
        return TagStatus.INVALID
    if token.status == TagStatus.BLOCKED:
        return TagStatus.BLOCKED
    if token.expires_at is not None and token.expires_at <= at:
        return TagStatus.EXPIRED
    return TagStatus.ACCEPTED


async def standing(session: AsyncSession, token: ChargingToken) -> TagStatus:
    """ACCEPTED unless the token's holder may no longer charge: its driver left the fleet, or its vehicle was
    retired (fleet's rule, checked at every authorisation, so no event has to reach every token)."""
    fleet_id = token.owner_id if token.owner_kind == "fleet" else None
    driver_id = token.driver_id if token.owner_kind == "fleet" else token.owner_id
    refusal = await holder_refusal(session, fleet_id=fleet_id, vehicle_id=token.vehicle_id, driver_id=driver_id)
    return refusal or TagStatus.ACCEPTED


async def find(session: AsyncSession, operator_id: str, id_tag: str) -> ChargingToken | None:
    query = select(ChargingToken).where(ChargingToken.operator_id == operator_id, ChargingToken.id_tag == id_tag)
    return (await session.exec(query)).first()


async def authorize(session: AsyncSession, operator_id: str, id_tag: str, at: dt.datetime) -> Authorization:
    """The verdict for `id_tag` at `operator_id`'s chargers at time `at` (tokens of other operators: INVALID)."""
    token = await find(session, operator_id, id_tag) if ID_TAG.match(id_tag) else None
    status = verdict(token, at)
    if token is not None and status is TagStatus.ACCEPTED:
        status = await standing(session, token)
    expires = token.expires_at if token is not None else None
    until = at + CACHE_TTL
    if status is TagStatus.ACCEPTED and expires is not None:
        until = min(until, expires)
    return Authorization(status, token if status is TagStatus.ACCEPTED else None, expires, until)


async def station_operator(session: AsyncSession, principal: Principal, station_id: str) -> str:
    """The operator of a station the caller (a gateway of that operator, or the admin) serves."""
    station = await session.get(Station, station_id) if station_id else None
    if station is None:
        raise NotFound(f"station {station_id} not found")
    if not principal.is_admin:
        tenant = principal.tenant
        if tenant is None or tenant.kind != "operator" or tenant.id != station.operator_id:
            raise NotFound(f"station {station_id} not found")
    return station.operator_id


# ---- registration and blocking ----


async def register(
    session: AsyncSession, principal: Principal, now: dt.datetime, inp: TokenInput, settlement: Settlement
) -> ChargingToken:
    check_id_tag(inp.id_tag)
    if inp.expires_at is not None and inp.expires_at <= now:
        raise InvalidArgument.for_field("expiry_time", "must be in the future")
    owner_kind, owner_id = _owner(principal, inp)
    operator = await session.get(Operator, inp.operator_id) if inp.operator_id else None
    if operator is None:
        raise NotFound(f"operator {inp.operator_id} not found")
    sub_account_id = None
    if inp.sub_fleet_id:
        sub = await session.get(SubFleet, inp.sub_fleet_id)
        if owner_kind != "fleet" or sub is None or sub.fleet_id != owner_id:
            raise NotFound(f"sub-fleet {inp.sub_fleet_id} not found")
        sub_account_id = sub.account_id
    vehicle_id = await _vehicle(session, owner_kind, owner_id, inp.vehicle_id)
    if await find(session, operator.id, inp.id_tag) is not None:
        raise FailedPrecondition(f"id_tag {inp.id_tag} is already registered at operator {operator.id}")
    # A sub-fleet's token spends its allocation (the limit its manager set), like its drivers' app orders.
    account_id = sub_account_id or await settlement.ensure_customer_account(
        session, owner_kind=owner_kind, owner_id=owner_id, currency=operator.currency
    )
    token = ChargingToken(
        id=new_id("tok"),
        id_tag=inp.id_tag,
        operator_id=operator.id,
        owner_kind=owner_kind,
        owner_id=owner_id,
        sub_fleet_id=inp.sub_fleet_id or None,
        vehicle_id=vehicle_id,
        account_id=account_id,
        expires_at=inp.expires_at,
        issued_by=principal.subject,
        issuer_tenant=str(principal.tenant or ""),
        created_at=now,
        updated_at=now,
    )
    session.add(token)
    await session.flush()
    return token


def _owner(principal: Principal, inp: TokenInput) -> tuple[str, str]:
    """Whose token it is: the caller's own (driver), the caller's fleet (fleet manager), anyone's (admin)."""
    tenant = principal.tenant
    if principal.role is Role.DRIVER:
        if inp.owner_kind not in ("", "driver") or inp.owner_id not in ("", principal.subject):
            raise PermissionDenied("a driver registers tokens for himself only")
        return "driver", principal.subject
    if principal.role is Role.FLEET_MANAGER:
        if tenant is None or tenant.kind != "fleet":
            raise PermissionDenied("a fleet manager needs a fleet tenant")
        if inp.owner_kind not in ("", "fleet") or inp.owner_id not in ("", tenant.id):
            raise PermissionDenied("a fleet manager registers tokens for his own fleet only")
        return "fleet", tenant.id
    if principal.is_admin:
        if inp.owner_kind not in ("driver", "fleet"):
            raise InvalidArgument.for_field("owner_kind", "must be 'driver' or 'fleet'")
        if not inp.owner_id:
            raise InvalidArgument.for_field("owner_id", "is required")
        return inp.owner_kind, inp.owner_id
    raise PermissionDenied(f"role {principal.role.name.lower()} may not register charging tokens")


async def _vehicle(session: AsyncSession, owner_kind: str, owner_id: str, vehicle_id: str) -> str:
    """The vehicle the token's sessions are ordered for: one of the fleet's, or the driver's own (his assigned
    vehicle, or one of his fleet's). NOT_FOUND for anything else, so ids cannot be probed."""
    driver = await session.get(Driver, owner_id) if owner_kind == "driver" else None
    if not vehicle_id and driver is not None and driver.vehicle_id:
        vehicle_id = driver.vehicle_id
    if not vehicle_id:
        raise InvalidArgument.for_field("vehicle_id", "is required (the owner has no assigned vehicle)")
    vehicle = await session.get(Vehicle, vehicle_id)
    if vehicle is not None:
        if owner_kind == "fleet" and vehicle.fleet_id == owner_id:
            return vehicle.id
        if driver is not None and (
            driver.vehicle_id == vehicle.id or (vehicle.fleet_id is not None and vehicle.fleet_id == driver.fleet_id)
        ):
            return vehicle.id
    raise NotFound(f"vehicle {vehicle_id} not found")


def _party(principal: Principal) -> str:
    return "admin" if principal.is_admin else f"{principal.role.name.lower()}:{principal.tenant or principal.subject}"


def _may_manage(principal: Principal, token: ChargingToken) -> bool:
    tenant = principal.tenant
    if principal.is_admin:
        return True
    if principal.role is Role.OPERATOR:
        return tenant is not None and tenant.kind == "operator" and tenant.id == token.operator_id
    if principal.role is Role.FLEET_MANAGER:
        return tenant is not None and token.owner_kind == "fleet" and tenant.id == token.owner_id
    if principal.role is Role.DRIVER:
        return token.owner_kind == "driver" and token.owner_id == principal.subject
    return False


async def set_blocked(
    session: AsyncSession, principal: Principal, now: dt.datetime, token_id: str, blocked: bool
) -> ChargingToken:
    token = await session.get(ChargingToken, token_id) if token_id else None
    if token is None or not _may_manage(principal, token):
        raise NotFound(f"charging token {token_id} not found")
    party = _party(principal)
    if blocked and token.status != TagStatus.BLOCKED:
        token.status = int(TagStatus.BLOCKED)
        token.blocked_by = party
    elif not blocked and token.status == TagStatus.BLOCKED:
        if not principal.is_admin and token.blocked_by not in (None, party):
            raise PermissionDenied(f"token {token_id} was blocked by {token.blocked_by}; only they may lift it")
        token.status = int(TagStatus.ACCEPTED)
        token.blocked_by = None
    else:
        return token
    token.updated_at = now
    token.version += 1
    session.add(token)
    await session.flush()
    return token


async def set_expiry(
    session: AsyncSession, principal: Principal, now: dt.datetime, token_id: str, expires_at: dt.datetime | None
) -> ChargingToken:
    """Sets (None: clears) a token's expiry; a past time expires it at once (expiry is a time, not a status)."""
    token = await session.get(ChargingToken, token_id) if token_id else None
    if token is None or not _may_manage(principal, token):
        raise NotFound(f"charging token {token_id} not found")
    if token.expires_at != expires_at:
        token.expires_at = expires_at
        token.updated_at = now
        token.version += 1
        session.add(token)
        await session.flush()
    return token


async def fleet_tokens(
    session: AsyncSession, fleet_id: str, sub_fleet_id: str, *, after: str | None, limit: int
) -> list[ChargingToken]:
    """A fleet's tokens (only a sub-fleet's, if named), by id, after the id `after`."""
    query = select(ChargingToken).where(ChargingToken.owner_kind == "fleet", ChargingToken.owner_id == fleet_id)
    if sub_fleet_id:
        query = query.where(ChargingToken.sub_fleet_id == sub_fleet_id)
    if after:
        query = query.where(ChargingToken.id > after)
    return list((await session.exec(query.order_by(ChargingToken.id).limit(limit))).all())


# ---- the no-free-energy rule ----


def _reason(status: TagStatus | None) -> str:
    if status is None:
        return "NO_TAG"
    return {
        TagStatus.INVALID: "UNKNOWN_TAG",
        TagStatus.BLOCKED: "BLOCKED_TAG",
        TagStatus.EXPIRED: "EXPIRED_TAG",
    }.get(status, "NO_ORDER")


async def flag_unpaid(session: AsyncSession, now: dt.datetime, row: StationSession, detail: str = "") -> None:
    """Records a charge session that delivered energy and settled no order, with an alarm (and a work order)
    for the station's operator. Once per session."""
    existing = (await session.exec(select(AbnormalSession).where(AbnormalSession.session_id == row.id))).first()
    if existing is not None:
        return
    station = await session.get(Station, row.station_id)
    operator_id = station.operator_id if station else None
    status = None
    if row.id_tag:
        token = await find(session, operator_id, row.id_tag) if operator_id else None
        status = verdict(token, row.started_at)
        if token is not None and status is TagStatus.ACCEPTED:
            status = await standing(session, token)  # a suspended driver's card: BLOCKED_TAG, not NO_ORDER
    reason = _reason(status)
    message = (
        f"session {row.external_id} at {row.connector_id or row.station_id} delivered {row.energy_wh} Wh "
        f"with idTag {row.id_tag or '-'} and no settled order ({reason}{': ' + detail if detail else ''})"
    )
    opened = await workorders.raise_alarm(
        session,
        now=now,
        source=workorders.ALARM_SOURCE_STATION,
        level=ALARM_LEVEL_MAJOR,
        code="UNPAID_SESSION",
        message=message,
        operator_id=operator_id,
        station_id=row.station_id,
        resource_id=row.connector_id,
    )
    session.add(
        AbnormalSession(
            id=new_id("abs"),
            session_id=row.id,
            operator_id=operator_id,
            station_id=row.station_id,
            connector_id=row.connector_id,
            id_tag=row.id_tag,
            energy_wh=row.energy_wh,
            reason=reason,
            detail=message[:500],
            alarm_id=opened.alarm_id,
            created_at=now,
        )
    )
