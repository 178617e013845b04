"""Mobile units onboarded by their operator: charging vans and valet specialists created, updated, retired
and listed (DispatchService's workforce RPCs; engineers are MaintenanceService's).

The engine learns of a new unit, or a changed description, from the feed topic "unit" (`engine.follow_units`:
a new unit is loaded, a known one's change rebuilds the index); of a retirement from the inventory change
(status RETIRED, which the engine maps to OFFLINE: a retired unit is never offered work). Regions are stored
for the operator's planning; the engine does not read them yet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.engine_limits import LIMITS, position_problems
from voltcloud.platform import feed
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.enums import ConnectorStandard, UnitKind, UnitStatus
from voltcloud.platform.errors import FailedPrecondition, InvalidArgument, NotFound
from voltcloud.platform.ids import new_id
from voltcloud.platform.paging import Page
from voltcloud.stations import inventory
from voltcloud.stations.models import MobileUnit, Operator

UNIT_TOPIC = "unit"
MANAGED = (int(UnitKind.VAN), int(UnitKind.SPECIALIST))
MAX_VAN_ENERGY_WH = 10_000_000  # 10 MWh: far beyond any van's battery; the engine's column holds any int64
MAX_REGIONS = 20
DAY_S = 86_400
UPDATABLE = (
    "name", "home", "energy_on_board_wh", "connector_standards", "skills", "regions", "shift_start_s", "shift_end_s",
)  # fmt: skip
_REGION = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@dataclass(frozen=True)
class UnitSpec:
    """A unit's description as the API states it (the `unit` message's fields)."""

    operator_id: str
    kind: int
    name: str
    home: tuple[float, float] | None
    energy_wh: int
    connector_standards: tuple[int, ...]
    skills: int
    regions: tuple[str, ...]
    shift_start_s: int
    shift_end_s: int


def _bad(field: str, why: str) -> InvalidArgument:
    return InvalidArgument.for_field(f"unit.{field}", why)


def _connector_mask(spec: UnitSpec) -> int:
    """A van charges at least one standard; a specialist brings no energy and no inlet."""
    if spec.kind == UnitKind.SPECIALIST:
        if spec.energy_wh or spec.connector_standards:
            raise _bad("energy_on_board_wh", "a specialist carries no energy and no connectors")
        return 0
    if not 1 <= spec.energy_wh <= MAX_VAN_ENERGY_WH:
        raise _bad("energy_on_board_wh", f"a van's must be in [1, {MAX_VAN_ENERGY_WH}], got {spec.energy_wh}")
    if not spec.connector_standards:
        raise _bad("connector_standards", "a van needs at least one connector standard")
    mask = 0
    for standard in spec.connector_standards:
        if standard not in ConnectorStandard._value2member_map_ or not (1 << standard) & LIMITS.unit_connector_mask:
            raise _bad("connector_standards", f"unknown standard {standard}")
        mask |= 1 << standard
    return mask


def check(spec: UnitSpec) -> int:
    """The unit's connector mask, once every field is within its rule (INVALID_ARGUMENT naming the field)."""
    if spec.kind not in MANAGED:
        raise _bad("kind", "must be VAN or SPECIALIST (engineers are registered by MaintenanceService)")
    if not spec.name.strip():
        raise _bad("name", "is required")
    if spec.home is None:
        raise _bad("home", "is required")
    problems = position_problems(*spec.home)
    if problems:
        raise _bad("home", "; ".join(f"{column} {why}" for column, why in problems))
    if len(spec.regions) > MAX_REGIONS or len(set(spec.regions)) != len(spec.regions):
        raise _bad("regions", f"at most {MAX_REGIONS} distinct codes")
    for region in spec.regions:
        if not _REGION.match(region):
            raise _bad("regions", f"{region[:40]!r} is not a region code (letters, digits, '-', '_', 1..32)")
    if not 0 <= spec.shift_start_s <= DAY_S:
        raise _bad("shift_start_s", f"must be in [0, {DAY_S}], got {spec.shift_start_s}")
    if not spec.shift_start_s < spec.shift_end_s <= 2 * DAY_S:
        raise _bad("shift_end_s", f"must be after shift_start_s and at most {2 * DAY_S}, got {spec.shift_end_s}")
    return _connector_mask(spec)


def _scope(principal: Principal) -> str | None:
    """The operator whose units the caller manages; None for the platform admin (all)."""
    if principal.is_admin:
        return None
    return principal.tenant.id if principal.role is Role.OPERATOR and principal.tenant else ""


async def managed_unit(session: AsyncSession, principal: Principal, unit_id: str) -> MobileUnit:
    """A van or specialist of the caller's operator; NOT_FOUND for another operator's (ids cannot be probed)."""
    if not unit_id:
        raise InvalidArgument.for_field("unit_id", "is required")
    unit = await session.get(MobileUnit, unit_id)
    scope = _scope(principal)
    if unit is None or unit.kind not in MANAGED or (scope is not None and unit.operator_id != scope):
        raise NotFound(f"unit {unit_id} not found")
    return unit


async def _announce(session: AsyncSession, unit: MobileUnit, change: str) -> None:
    await feed.publish(session, UNIT_TOPIC, unit.id, {"id": unit.id, "change": change, "version": unit.version})


async def create_unit(session: AsyncSession, principal: Principal, spec: UnitSpec) -> MobileUnit:
    operator_id = spec.operator_id or (_scope(principal) or "")
    if not operator_id:
        raise _bad("operator_id", "is required")
    principal.require_tenant("operator", operator_id)
    mask = check(spec)
    if await session.get(Operator, operator_id) is None:
        raise _bad("operator_id", f"unknown operator {operator_id}")
    assert spec.home is not None  # checked
    unit = MobileUnit(
        id=new_id("unit"), operator_id=operator_id, kind=spec.kind, name=spec.name.strip(),
        lat=spec.home[0], lng=spec.home[1], home_lat=spec.home[0], home_lng=spec.home[1],
        energy_wh=spec.energy_wh, connector_mask=mask, skills=spec.skills, regions=",".join(spec.regions),
        shift_start_s=spec.shift_start_s, shift_end_s=spec.shift_end_s, status=int(UnitStatus.OFF_SHIFT),
    )  # fmt: skip
    session.add(unit)
    await session.flush()
    await _announce(session, unit, "created")
    return unit


def _current(unit: MobileUnit) -> UnitSpec:
    home = (unit.home_lat, unit.home_lng) if unit.home_lat is not None and unit.home_lng is not None else None
    return UnitSpec(
        operator_id=unit.operator_id, kind=unit.kind, name=unit.name, home=home or (unit.lat, unit.lng),
        energy_wh=unit.energy_wh, connector_standards=tuple(s for s in range(32) if unit.connector_mask & (1 << s)),
        skills=unit.skills, regions=tuple(r for r in unit.regions.split(",") if r),
        shift_start_s=unit.shift_start_s, shift_end_s=unit.shift_end_s,
    )  # fmt: skip


_ATTRS = {"energy_on_board_wh": "energy_wh"}  # API field -> UnitSpec attribute where they differ


async def update_unit(
    session: AsyncSession, principal: Principal, unit_id: str, changes: UnitSpec, fields: tuple[str, ...]
) -> MobileUnit:
    """Changes the named fields, checked on the merged description. The home base is where the unit starts;
    its live position stays its app's."""
    if not fields or set(fields) - set(UPDATABLE):
        raise InvalidArgument.for_field("update_fields", f"name one or more of {', '.join(UPDATABLE)}")
    unit = await managed_unit(session, principal, unit_id)
    if unit.status == UnitStatus.RETIRED:
        raise FailedPrecondition(f"unit {unit.id} is retired")
    values = {_ATTRS.get(f, f): getattr(changes, _ATTRS.get(f, f)) for f in fields}
    merged = replace(_current(unit), **values)
    mask = check(merged)
    assert merged.home is not None  # checked
    unit.name, (unit.home_lat, unit.home_lng) = merged.name.strip(), merged.home
    unit.energy_wh, unit.connector_mask, unit.skills = merged.energy_wh, mask, merged.skills
    unit.regions, unit.shift_start_s, unit.shift_end_s = (
        ",".join(merged.regions),
        merged.shift_start_s,
        merged.shift_end_s,
    )
    unit.version += 1  # the engine's copy is stale until its rebuild: a reservation against it must lose
    session.add(unit)
    await session.flush()
    await _announce(session, unit, "updated")
    return unit


async def retire_unit(session: AsyncSession, principal: Principal, unit_id: str) -> MobileUnit:
    """Never offered work again (FAILED_PRECONDITION while it serves a task); its rows and history stay."""
    unit = await managed_unit(session, principal, unit_id)
    await inventory.retire_unit(session, unit.id)
    await session.refresh(unit)
    return unit


@dataclass(frozen=True)
class UnitFilter:
    operator_id: str
    kind: int
    status: int


async def list_units(session: AsyncSession, principal: Principal, where: UnitFilter, page: Page) -> list[MobileUnit]:
    """An operator's units by id (an operator's own by default; the admin all); retired ones only on request."""
    scope = _scope(principal)
    operator_id = where.operator_id or scope or ""
    if operator_id:
        principal.require_tenant("operator", operator_id)
    query = select(MobileUnit).order_by(col(MobileUnit.id)).limit(page.size)
    if operator_id:
        query = query.where(MobileUnit.operator_id == operator_id)
    if where.kind:
        query = query.where(MobileUnit.kind == where.kind)
    if where.status:
        query = query.where(MobileUnit.status == where.status)
    else:
        query = query.where(MobileUnit.status != int(UnitStatus.RETIRED))
    if page.after is not None:
        query = query.where(col(MobileUnit.id) > page.after)
    return list(await session.exec(query))
