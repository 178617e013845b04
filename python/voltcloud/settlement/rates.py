"""Rate models: versioned, scheduled tariffs, where they apply, and pricing a usage for a customer at a station.

Resolution for (station, customer, time): the customer's assignment (by account, or by fleet) → the station's
→ the station operator's default → the platform default → the built-in default tariff (tariff.BUILTIN_DEFAULT,
id "builtin-default", version 0). At each level the assignment with the latest `effective_from` not after the
time wins, and of its model the highest version whose validity covers the time. New versions may not start in
the past, so the version in force at an order's start never changes afterwards; ordering may also pin it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform import feed, idempotency
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.clock import Clock
from voltcloud.platform.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from voltcloud.platform.ids import new_id
from voltcloud.platform.paging import Page
from voltcloud.settlement.holds import SYSTEM_CLOCK
from voltcloud.settlement.models import LedgerAccount, RateAssignment, RateModelVersion
from voltcloud.settlement.sql import insert_ignore
from voltcloud.settlement.tariff import (
    BUILTIN_DEFAULT,
    PriceLine,
    Tariff,
    Usage,
    elements_from_json,
    elements_to_json,
    price,
    validate,
)
from voltcloud.stations.api import Station  # read-only: a station's operator and time zone

BUILTIN_ID = "builtin-default"
TOPIC = "rate_model"  # the change feed's topic for a model's new version or assignment (key: the model id)
SCOPES = ("customer", "station", "operator", "platform")


@dataclass(frozen=True)
class RateModelSpec:
    rate_model_id: str
    operator_id: str
    name: str
    tariff: Tariff
    valid_from: dt.datetime | None = None
    valid_to: dt.datetime | None = None
    display_text: str = ""


@dataclass(frozen=True)
class RateModelView:
    rate_model_id: str
    version: int
    operator_id: str
    name: str
    tariff: Tariff
    valid_from: dt.datetime
    valid_to: dt.datetime | None
    display_text: str
    created_at: dt.datetime


@dataclass(frozen=True)
class PriceQuote:
    amount_minor: int
    currency: str
    rate_model_id: str
    rate_model_version: int
    lines: tuple[PriceLine, ...]
    subtotal_minor: int = 0
    vat_minor: int = 0
    adjustment_minor: int = 0
    discount_minor: int = 0


def model_view(row: RateModelVersion) -> RateModelView:
    return RateModelView(
        rate_model_id=row.rate_model_id,
        version=row.version,
        operator_id=row.operator_id,
        name=row.name,
        tariff=Tariff(
            currency=row.currency,
            elements=elements_from_json(row.elements_json),
            time_zone=row.time_zone,
            min_price_minor=row.min_price_minor,
            max_price_minor=row.max_price_minor,
        ),
        valid_from=row.valid_from,
        valid_to=row.valid_to,
        display_text=row.display_text,
        created_at=row.created_at,
    )


def pricing_operator(principal: Principal, operator_id: str, *, platform_default: bool) -> str:
    """The operator a new rate model prices for: an operator prices for itself only (an empty id means
    itself) and never sets the platform default; the platform admin prices for anyone."""
    if principal.is_admin:
        return operator_id
    own = principal.tenant.id if principal.tenant else ""
    if operator_id and operator_id != own:
        raise PermissionDenied(f"{principal.subject} may not price for operator {operator_id}")
    if platform_default:
        raise PermissionDenied("only the platform admin sets the platform default")
    return own


def visible_operators(principal: Principal, operator_id: str) -> list[str] | None:
    """Whose rate models a listing shows (None: all): an operator sees its own and the platform's ("")
    models, and nothing when it asks for another operator's."""
    if principal.role is not Role.OPERATOR:
        return [operator_id] if operator_id else None
    own = principal.tenant.id if principal.tenant else ""
    if operator_id and operator_id != own:
        return []
    return [own] if operator_id == own else [own, ""]


async def create_rate_model(
    session: AsyncSession,
    spec: RateModelSpec,
    *,
    idempotency_key: str,
    operator_default: bool = False,
    platform_default: bool = False,
    clock: Clock = SYSTEM_CLOCK,
) -> RateModelView:
    """A new model (empty id) or a new version of one. Versions activate at `valid_from` (default now)."""
    now = clock.now()
    validate(spec.tariff)
    if not spec.name:
        raise InvalidArgument.for_field("rate_model.name", "is required")
    valid_from = spec.valid_from or now
    if valid_from < now - dt.timedelta(seconds=60):
        raise InvalidArgument.for_field(
            "rate_model.valid_from", "must not be in the past: priced orders keep their version"
        )
    if spec.valid_to is not None and spec.valid_to <= valid_from:
        raise InvalidArgument.for_field("rate_model.valid_to", "must be after valid_from")
    if platform_default and spec.operator_id:
        raise InvalidArgument.for_field("platform_default", "a platform default has no operator_id")
    if operator_default and not spec.operator_id:
        raise InvalidArgument.for_field("operator_default", "needs rate_model.operator_id")
    request = {
        "id": spec.rate_model_id,
        "operator": spec.operator_id,
        "name": spec.name,
        "elements": elements_to_json(spec.tariff.elements),
        "currency": spec.tariff.currency,
        "tz": spec.tariff.time_zone,
        "min": spec.tariff.min_price_minor,
        "max": spec.tariff.max_price_minor,
        "from": spec.valid_from,
        "to": spec.valid_to,
        "defaults": [operator_default, platform_default],
    }
    claim = await idempotency.claim(session, "create_rate_model", idempotency_key, request, now=now)
    if claim.is_replay:
        replay_id, _, replay_version = (claim.replay_of or "").rpartition("@")
        return await get_version(session, replay_id, int(replay_version))
    model_id = spec.rate_model_id or new_id("rm")
    latest = (
        await session.exec(
            select(RateModelVersion)
            .where(RateModelVersion.rate_model_id == model_id)
            .order_by(col(RateModelVersion.version).desc())
            .limit(1)
        )
    ).first()
    if spec.rate_model_id and latest is None:
        raise NotFound(f"rate model {spec.rate_model_id} not found")
    if latest is not None and latest.operator_id != spec.operator_id:
        raise FailedPrecondition(f"rate model {model_id} belongs to operator {latest.operator_id or '(platform)'}")
    version = (latest.version + 1) if latest is not None else 1
    values = {
        "rate_model_id": model_id,
        "version": version,
        "operator_id": spec.operator_id,
        "name": spec.name[:200],
        "currency": spec.tariff.currency,
        "elements_json": elements_to_json(spec.tariff.elements),
        "time_zone": spec.tariff.time_zone,
        "valid_from": valid_from,
        "valid_to": spec.valid_to,
        "min_price_minor": spec.tariff.min_price_minor,
        "max_price_minor": spec.tariff.max_price_minor,
        "display_text": spec.display_text[:500],
        "created_at": now,
    }
    if not await insert_ignore(session, RateModelVersion, values):
        raise Aborted(f"another version of rate model {model_id} was created concurrently; retry")
    await feed.publish(session, TOPIC, model_id, {"version": version})  # every replica's price book recompiles
    if operator_default:
        await assign_rate_model(
            session, rate_model_id=model_id, operator_id=spec.operator_id, effective_from=valid_from, clock=clock
        )
    if platform_default:
        await assign_rate_model(session, rate_model_id=model_id, effective_from=valid_from, clock=clock)
    await idempotency.complete(session, claim, f"{model_id}@{version}")
    return await get_version(session, model_id, version)


async def get_version(session: AsyncSession, rate_model_id: str, version: int) -> RateModelView:
    row = await session.get(RateModelVersion, (rate_model_id, version))
    if row is None:
        raise NotFound(f"rate model {rate_model_id} version {version} not found")
    return model_view(row)


async def assign_rate_model(
    session: AsyncSession,
    *,
    rate_model_id: str,
    station_id: str = "",
    operator_id: str = "",
    customer_account_id: str = "",
    fleet_id: str = "",
    effective_from: dt.datetime | None = None,
    clock: Clock = SYSTEM_CLOCK,
    station_operator_id: str | None = None,
) -> str:
    """Applies a rate model to a customer (account or fleet, optionally at one station), a station, an
    operator's stations, or the whole platform (no scope given). Returns the assignment id.

    `station_operator_id` names the operator whose station gets the model: only that operator's own models
    and platform tariffs may price its stations (another operator's model is NOT_FOUND, so ids cannot be probed).
    """
    owner = (
        await session.exec(
            select(RateModelVersion.operator_id).where(RateModelVersion.rate_model_id == rate_model_id).limit(1)
        )
    ).first()
    if owner is None or (station_operator_id is not None and owner not in ("", station_operator_id)):
        raise NotFound(f"rate model {rate_model_id} not found")
    if customer_account_id or fleet_id:
        scope = "customer"
    elif station_id:
        scope = "station"
    elif operator_id:
        scope = "operator"
    else:
        scope = "platform"
    now = clock.now()
    row = RateAssignment(
        id=new_id("ra"),
        rate_model_id=rate_model_id,
        scope=scope,
        station_id=station_id,
        operator_id=operator_id,
        customer_account_id=customer_account_id,
        fleet_id=fleet_id,
        effective_from=effective_from or now,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    await feed.publish(session, TOPIC, rate_model_id, {"assignment": row.id, "scope": scope})
    return row.id


async def _in_force(session: AsyncSession, rate_model_id: str, at: dt.datetime) -> RateModelVersion | None:
    query = (
        select(RateModelVersion)
        .where(
            RateModelVersion.rate_model_id == rate_model_id,
            col(RateModelVersion.valid_from) <= at,
            sa.or_(col(RateModelVersion.valid_to).is_(None), col(RateModelVersion.valid_to) > at),
        )
        .order_by(col(RateModelVersion.version).desc())
        .limit(1)
    )
    return (await session.exec(query)).first()


async def resolve(
    session: AsyncSession, *, station: Station, customer_kind: str, customer_id: str, at: dt.datetime
) -> RateModelVersion | None:
    """The rate model version that prices this customer at this station at `at`; None = built-in default."""
    base = select(RateAssignment).where(col(RateAssignment.effective_from) <= at)
    levels = []
    if customer_id:
        account_ids = list(
            await session.exec(
                select(LedgerAccount.id).where(
                    LedgerAccount.owner_kind == customer_kind, LedgerAccount.owner_id == customer_id
                )
            )
        )
        who: list[sa.ColumnElement[bool]] = (
            [col(RateAssignment.customer_account_id).in_(account_ids)] if account_ids else []
        )
        if customer_kind == "fleet":
            who.append(col(RateAssignment.fleet_id) == customer_id)
        if who:
            levels.append(
                base.where(
                    RateAssignment.scope == "customer",
                    sa.or_(*who),
                    sa.or_(col(RateAssignment.station_id) == station.id, col(RateAssignment.station_id) == ""),
                    sa.or_(
                        col(RateAssignment.operator_id) == station.operator_id, col(RateAssignment.operator_id) == ""
                    ),
                ).order_by(
                    col(RateAssignment.station_id).desc(),
                    col(RateAssignment.effective_from).desc(),
                    col(RateAssignment.id).desc(),
                )
            )
    levels.append(
        base.where(RateAssignment.scope == "station", RateAssignment.station_id == station.id).order_by(
            col(RateAssignment.effective_from).desc(), col(RateAssignment.id).desc()
        )
    )
    levels.append(
        base.where(RateAssignment.scope == "operator", RateAssignment.operator_id == station.operator_id).order_by(
            col(RateAssignment.effective_from).desc(), col(RateAssignment.id).desc()
        )
    )
    levels.append(
        base.where(RateAssignment.scope == "platform").order_by(
            col(RateAssignment.effective_from).desc(), col(RateAssignment.id).desc()
        )
    )
    for query in levels:
        for assignment in await session.exec(query.limit(5)):
            version = await _in_force(session, assignment.rate_model_id, at)
            if version is not None:
                return version
    return None


async def price_estimate(
    session: AsyncSession,
    *,
    station_id: str,
    customer_kind: str,
    customer_id: str,
    start: dt.datetime,
    energy_wh: int,
    duration_s: int,
    parking_s: int = 0,
    sessions: int = 1,
    power_w: int = 0,
    rate_model_id: str | None = None,
    rate_model_version: int | None = None,
) -> PriceQuote:
    """Prices a (planned or actual) usage. Pass `rate_model_id`/`rate_model_version` to reprice with the
    version fixed at order start."""
    problems = [
        (name, value)
        for name, value in (
            ("energy_wh", energy_wh),
            ("duration_s", duration_s),
            ("parking_s", parking_s),
            ("sessions", sessions),
            ("power_w", power_w),
        )
        if value < 0
    ]
    if problems:
        raise InvalidArgument.for_field(problems[0][0], f"must not be negative, got {problems[0][1]}")
    if not station_id:
        raise InvalidArgument.for_field("station_id", "is required")
    if start.tzinfo is None:
        raise InvalidArgument.for_field("start", "must be timezone-aware")
    station = await session.get(Station, station_id)
    if station is None:
        raise NotFound(f"station {station_id} not found")
    if rate_model_id is not None and rate_model_version is not None:
        row: RateModelVersion | None = None
        if rate_model_id != BUILTIN_ID:
            row = await session.get(RateModelVersion, (rate_model_id, rate_model_version))
            if row is None:
                raise NotFound(f"rate model {rate_model_id} version {rate_model_version} not found")
    else:
        row = await resolve(session, station=station, customer_kind=customer_kind, customer_id=customer_id, at=start)
    if row is None:
        tariff, model_id, version = BUILTIN_DEFAULT, BUILTIN_ID, 0
    else:
        tariff, model_id, version = model_view(row).tariff, row.rate_model_id, row.version
    tariff = dataclasses.replace(tariff, time_zone=station.timezone or tariff.time_zone)
    priced = price(tariff, Usage(start, energy_wh, duration_s, parking_s, power_w, sessions))
    return PriceQuote(
        amount_minor=priced.total_minor,
        currency=priced.currency,
        rate_model_id=model_id,
        rate_model_version=version,
        lines=priced.lines,
        subtotal_minor=priced.subtotal_minor,
        vat_minor=priced.vat_minor,
        adjustment_minor=priced.adjustment_minor,
    )


async def list_rate_models(
    session: AsyncSession,
    *,
    operator_ids: Sequence[str] | None,
    rate_model_id: str | None,
    in_force_at: dt.datetime | None,
    page: Page,
) -> list[RateModelView]:
    """Versions ordered by (model id, version); the page token is "<model id>@<version>"."""
    query = (
        select(RateModelVersion)
        .order_by(col(RateModelVersion.rate_model_id), col(RateModelVersion.version))
        .limit(page.size)
    )
    if operator_ids is not None:
        query = query.where(col(RateModelVersion.operator_id).in_(list(operator_ids)))
    if rate_model_id:
        query = query.where(RateModelVersion.rate_model_id == rate_model_id)
    if in_force_at is not None:
        query = query.where(
            col(RateModelVersion.valid_from) <= in_force_at,
            sa.or_(col(RateModelVersion.valid_to).is_(None), col(RateModelVersion.valid_to) > in_force_at),
        )
    if page.after is not None:
        after_id, _, after_version = page.after.rpartition("@")
        if not after_version.isdigit():
            raise InvalidArgument.for_field("page_token", "is not a token this server issued")
        query = query.where(
            sa.or_(
                col(RateModelVersion.rate_model_id) > after_id,
                sa.and_(
                    col(RateModelVersion.rate_model_id) == after_id, col(RateModelVersion.version) > int(after_version)
                ),
            )
        )
    return [model_view(r) for r in await session.exec(query)]
