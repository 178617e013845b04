"""Maintenance engineers and the staff certificate registry: who may be sent where, with what.

An engineer belongs to one operator; operators (and the platform admin) register, update and retire them,
engineers of the same operator may read them. Rows of another operator are reported NOT_FOUND so ids cannot
be probed. A certificate is lapsed from its expiry on; a work order that requires a kind of certificate never
goes to an engineer whose certificate of that kind has lapsed (`qualified`)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.maintenance import access
from voltcloud.maintenance.field_models import Engineer, EngineerCertificate
from voltcloud.maintenance.models import NotificationPreference
from voltcloud.platform import feed
from voltcloud.platform.auth import Principal
from voltcloud.platform.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from voltcloud.platform.geo import Box
from voltcloud.platform.ids import new_id
from voltcloud.platform.paging import Page

ENGINEER_TOPIC = "engineer"  # followed by each replica's engineer hub (a retired engineer's stream is closed)
EQUIPMENT_KINDS = frozenset({"station", "charger", "connector", "lane", "pack", "robot", "vehicle"})
MAX_SHIFTS = 100


@dataclass(frozen=True)
class Shift:
    start: dt.datetime
    end: dt.datetime


@dataclass(frozen=True)
class Profile:
    """An engineer's editable profile, parsed by the servicer."""

    name: str
    phone: str = ""
    email: str = ""
    skills: tuple[str, ...] = ()
    equipment_kinds: tuple[str, ...] = ()
    regions: tuple[Box, ...] = ()
    shifts: tuple[Shift, ...] = ()
    home_lat: float = 0.0
    home_lng: float = 0.0


@dataclass(frozen=True)
class EngineerView:
    engineer: Engineer
    certificates: list[EngineerCertificate] = field(default_factory=list)

    @cached_property
    def skills(self) -> list[str]:
        return list(json.loads(self.engineer.skills))

    @cached_property
    def equipment_kinds(self) -> list[str]:
        return list(json.loads(self.engineer.equipment_kinds))

    @cached_property
    def regions(self) -> list[Box]:
        return [Box(*r) for r in json.loads(self.engineer.regions)]

    @cached_property
    def shifts(self) -> list[Shift]:
        return [
            Shift(dt.datetime.fromisoformat(a), dt.datetime.fromisoformat(b))
            for a, b in json.loads(self.engineer.shifts)
        ]


def operator_scope(principal: Principal) -> str | None:
    """The operator whose rows the caller sees; None for the platform admin (all). One rule: `access`."""
    return access.own_operator(principal)


def require_operator(principal: Principal, operator_id: str, what: str) -> None:
    """Another operator's row is NOT_FOUND, so ids cannot be probed."""
    access.require_visible(principal, operator_id, what)


def check_profile(profile: Profile) -> None:
    if not profile.name.strip():
        raise InvalidArgument.for_field("engineer.name", "is required")
    for i, kind in enumerate(profile.equipment_kinds):
        if kind not in EQUIPMENT_KINDS:
            raise InvalidArgument.for_field(
                f"engineer.equipment_kinds[{i}]", f"unknown kind {kind!r}; one of {sorted(EQUIPMENT_KINDS)}"
            )
    for i, skill in enumerate(profile.skills):
        if not skill.strip():
            raise InvalidArgument.for_field(f"engineer.skills[{i}]", "must not be empty")
    for i, shift in enumerate(profile.shifts):
        if shift.end <= shift.start:
            raise InvalidArgument.for_field(f"engineer.shifts[{i}].end", "must be after start")


def _write_profile(row: Engineer, profile: Profile) -> None:
    row.name = profile.name.strip()
    row.phone, row.email = profile.phone, profile.email
    row.skills = json.dumps(sorted(set(profile.skills)))
    row.equipment_kinds = json.dumps(sorted(set(profile.equipment_kinds)))
    row.regions = json.dumps([[b.south, b.west, b.north, b.east] for b in profile.regions])
    row.shifts = json.dumps(
        [[s.start.isoformat(), s.end.isoformat()] for s in sorted(profile.shifts, key=lambda s: s.start)]
    )
    row.home_lat, row.home_lng = profile.home_lat, profile.home_lng


async def publish(session: AsyncSession, row: Engineer) -> None:
    payload = {
        "id": row.id,
        "operator_id": row.operator_id,
        "retired": row.retired_at is not None,
        "version": row.version,
    }
    await feed.publish(session, ENGINEER_TOPIC, row.id, payload)


async def register(
    session: AsyncSession, principal: Principal, *, operator_id: str, profile: Profile, now: dt.datetime
) -> EngineerView:
    if not operator_id:
        raise InvalidArgument.for_field("engineer.operator_id", "is required")
    require_operator(principal, operator_id, f"operator {operator_id}")
    check_profile(profile)
    row = Engineer(id=new_id("eng"), operator_id=operator_id, name="", created_at=now)
    _write_profile(row, profile)
    session.add(row)
    await publish(session, row)
    await _default_contact(session, row, now)
    return EngineerView(row)


async def _default_contact(session: AsyncSession, row: Engineer, now: dt.datetime) -> None:
    """The profile's email and phone become the engineer's notification addresses (offers, certificate
    reminders) unless preferences were set for them already (SetNotificationPreferences wins)."""
    if (row.email or row.phone) and await session.get(NotificationPreference, ("engineer", row.id)) is None:
        session.add(
            NotificationPreference(
                recipient_kind="engineer", recipient_id=row.id, operator_id=row.operator_id, email=row.email,
                phone=row.phone, updated_at=now,
            )
        )  # fmt: skip


async def load(session: AsyncSession, principal: Principal, engineer_id: str, *, lock: bool = False) -> Engineer:
    if not engineer_id:
        raise InvalidArgument.for_field("engineer_id", "is required")
    query = select(Engineer).where(Engineer.id == engineer_id)
    row = (await session.exec(query.with_for_update() if lock else query)).first()
    if row is None:
        raise NotFound(f"engineer {engineer_id} not found")
    require_operator(principal, row.operator_id, f"engineer {engineer_id}")
    return row


async def view(session: AsyncSession, row: Engineer) -> EngineerView:
    certs = await session.exec(
        select(EngineerCertificate)
        .where(EngineerCertificate.engineer_id == row.id)
        .order_by(col(EngineerCertificate.id))
    )
    return EngineerView(row, list(certs))


async def get(session: AsyncSession, principal: Principal, engineer_id: str) -> EngineerView:
    return await view(session, await load(session, principal, engineer_id))


async def update(
    session: AsyncSession,
    principal: Principal,
    engineer_id: str,
    profile: Profile,
    *,
    expected_version: int,
    now: dt.datetime,
) -> EngineerView:
    row = await load(session, principal, engineer_id, lock=True)
    if expected_version and expected_version != row.version:
        raise Aborted(f"engineer {engineer_id} is at version {row.version}, not {expected_version}")
    if row.retired_at is not None:
        raise FailedPrecondition(f"engineer {engineer_id} is retired")
    check_profile(profile)
    _write_profile(row, profile)
    row.version += 1
    session.add(row)
    await publish(session, row)
    await _default_contact(session, row, now)
    return await view(session, row)


async def retire(
    session: AsyncSession, principal: Principal, engineer_id: str, *, reason: str, now: dt.datetime
) -> EngineerView:
    """Retired engineers are never dispatched again; their pending offers are withdrawn by the caller."""
    row = await load(session, principal, engineer_id, lock=True)
    if row.retired_at is None:
        row.retired_at, row.retire_reason, row.available = now, reason[:200], False
        row.version += 1
        session.add(row)
        await publish(session, row)
    return await view(session, row)


async def list_engineers(
    session: AsyncSession, principal: Principal, *, operator_id: str, skill: str, include_retired: bool, page: Page
) -> list[EngineerView]:
    scope = operator_scope(principal)
    if operator_id and scope is not None and operator_id != scope:
        return []
    query = select(Engineer).order_by(col(Engineer.id))
    if scope is not None or operator_id:
        query = query.where(Engineer.operator_id == (operator_id or scope))
    if not include_retired:
        query = query.where(col(Engineer.retired_at).is_(None))
    if page.after:
        query = query.where(col(Engineer.id) > page.after)
    rows = list(await session.exec(query.limit(page.size if not skill else 10 * page.size)))
    if skill:  # skills are a JSON list: filtered here, the page stays keyset-ordered
        rows = [r for r in rows if skill in json.loads(r.skills)][: page.size]
    return [await view(session, r) for r in rows]


# ---- certificates -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewCertificate:
    engineer_id: str
    kind: str
    number: str
    issued_at: dt.datetime
    expires_at: dt.datetime


async def add_certificate(
    session: AsyncSession, principal: Principal, new: NewCertificate, now: dt.datetime
) -> EngineerCertificate:
    if not new.kind.strip():
        raise InvalidArgument.for_field("certificate.kind", "is required")
    if not new.number.strip():
        raise InvalidArgument.for_field("certificate.number", "is required")
    if new.expires_at <= new.issued_at:
        raise InvalidArgument.for_field("certificate.expire_time", "must be after issue_time")
    engineer = await load(session, principal, new.engineer_id)
    row = EngineerCertificate(
        id=new_id("cert"),
        engineer_id=engineer.id,
        operator_id=engineer.operator_id,
        kind=new.kind.strip()[:64],
        number=new.number.strip(),
        issued_at=new.issued_at,
        expires_at=new.expires_at,
        created_at=now,
    )
    session.add(row)
    await publish(session, engineer)  # its reminders may fall due sooner than any the sweep waits for
    return row


async def list_certificates(
    session: AsyncSession,
    principal: Principal,
    *,
    operator_id: str,
    engineer_id: str,
    expires_before: dt.datetime | None,
    page: Page,
) -> list[EngineerCertificate]:
    scope = operator_scope(principal)
    if operator_id and scope is not None and operator_id != scope:
        return []
    query = select(EngineerCertificate).order_by(col(EngineerCertificate.id))
    if scope is not None or operator_id:
        query = query.where(EngineerCertificate.operator_id == (operator_id or scope))
    if engineer_id:
        query = query.where(EngineerCertificate.engineer_id == engineer_id)
    if expires_before is not None:
        query = query.where(col(EngineerCertificate.expires_at) < expires_before)
    if page.after:
        query = query.where(col(EngineerCertificate.id) > page.after)
    return list(await session.exec(query.limit(page.size)))


def holds_valid(certificates: Sequence[EngineerCertificate], kind: str, at: dt.datetime) -> bool:
    """Whether one certificate of `kind` is valid at `at` (issued, not yet expired)."""
    return any(c.kind == kind and c.issued_at <= at < c.expires_at for c in certificates)
