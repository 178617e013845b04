"""The price book: every rate model, assignment and station's pricing terms held in memory, so a quote's
options are priced in one pass without a database round trip.

It answers exactly what `rates.price_estimate` answers from the database (same resolution order, same
"first five assignments per level" rule, same pinning of one station's model within a quote, same tariff
arithmetic: `tariff.price`, or for a tariff without restrictions a compiled sum that gives the same integers).
`tests/unit/test_pricebook.py` compares both over random cases.

Kept current by the change feed: `rates.create_rate_model` and `rates.assign_rate_model` publish topic
`rate_model` (key: the model id) in their transaction; `on_changes` re-reads the named models' versions and
assignments and recompiles them. What the book does not hold (a station created after it loaded, a pinned
version it never saw) is a `Miss`: the caller prices that quote from the database instead.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform.db import Database
from voltcloud.platform.feed import Change, ChangeFeed
from voltcloud.settlement.models import LedgerAccount, RateAssignment, RateModelVersion
from voltcloud.settlement.money import micros_per_minor, round_half_up
from voltcloud.settlement.rates import BUILTIN_ID, TOPIC, model_view
from voltcloud.settlement.tariff import BUILTIN_DEFAULT, Dimension, Tariff, Usage, price
from voltcloud.stations.api import Station

STATION_TOPIC = "station"
_LEVEL_LIMIT = 5  # rates.resolve looks at the first five assignments of each level
_DENOMINATOR = {Dimension.ENERGY: 1000, Dimension.TIME: 3600, Dimension.PARKING_TIME: 3600, Dimension.FLAT: 1}


class Miss(Exception):
    """The book does not hold what this price needs; ask the database."""


@dataclass(frozen=True)
class PriceRequest:
    station_id: str
    start: dt.datetime
    energy_wh: int
    duration_s: int


@dataclass(frozen=True)
class BookPrice:
    amount_minor: int
    currency: str
    rate_model_id: str
    rate_model_version: int


@dataclass(frozen=True)
class _Version:
    rate_model_id: str
    version: int
    valid_from: dt.datetime
    valid_to: dt.datetime | None
    tariff: Tariff

    def covers(self, at: dt.datetime) -> bool:
        return self.valid_from <= at and (self.valid_to is None or self.valid_to > at)


@dataclass(frozen=True)
class _Assignment:
    id: str
    rate_model_id: str
    scope: str
    station_id: str
    operator_id: str
    customer_account_id: str
    fleet_id: str
    effective_from: dt.datetime


@dataclass(frozen=True)
class _Terms:
    operator_id: str
    timezone: str


_BUILTIN = _Version(BUILTIN_ID, 0, dt.datetime.min.replace(tzinfo=dt.UTC), None, BUILTIN_DEFAULT)
Pricer = Callable[[Usage], tuple[int, str]]


def compile_tariff(tariff: Tariff) -> Pricer:
    """A function usage → (total_minor, currency) equal to `tariff.price`. A tariff without restrictions
    bills each (type, label) once, by its first component, over the whole usage: that sum is computed directly;
    any other tariff goes through `tariff.price` (cut points, time of use, thresholds)."""
    if any(element.restrictions is not None for element in tariff.elements):
        return lambda usage: (price(tariff, usage).total_minor, tariff.currency)
    first: dict[tuple[Dimension, str], tuple[Dimension, int, int, int]] = {}
    for element in tariff.elements:
        for c in element.components:
            first.setdefault(c.key, (c.type, c.unit_price_micros, c.vat_bp, max(c.step_size, 1)))
    per_minor = micros_per_minor(tariff.currency)
    lines = [(dim, unit, vat_bp, step, _DENOMINATOR[dim] * per_minor) for dim, unit, vat_bp, step in first.values()]
    low, high, currency = tariff.min_price_minor, tariff.max_price_minor, tariff.currency

    def priced(usage: Usage) -> tuple[int, str]:
        quantities = {
            Dimension.FLAT: max(usage.sessions, 0),
            Dimension.ENERGY: usage.energy_wh,
            Dimension.TIME: usage.duration_s,
            Dimension.PARKING_TIME: usage.parking_s,
        }
        total = 0
        for dim, unit, vat_bp, step, denominator in lines:
            qty = quantities[dim]
            if qty <= 0:
                continue
            amount = round_half_up(-(-qty // step) * step * unit, denominator)
            total += amount + round_half_up(amount * vat_bp, 10_000)
        if low is not None:
            total = max(total, low)
        if high is not None:
            total = min(total, high)
        return total, currency

    return priced


class PriceBook:
    """Rate models, assignments and stations' pricing terms, compiled once; kept current by `on_changes`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._versions: dict[str, list[_Version]] = {}  # model id → versions, highest first
        self._assignments: dict[str, _Assignment] = {}
        self._owners: dict[str, tuple[str, str]] = {}  # account id → (owner kind, owner id), for assignments
        self._stations: dict[str, _Terms] = {}
        self._pricers: dict[tuple[str, int, str], Pricer] = {}
        self._customer: dict[tuple[str, str], list[_Assignment]] = {}
        self._station: dict[str, list[_Assignment]] = {}
        self._operator: dict[str, list[_Assignment]] = {}
        self._platform: list[_Assignment] = []
        self.loaded = False

    # --- loading ---------------------------------------------------------------------------------------

    async def load(self) -> None:
        """Everything, from the tables (at start, or after the feed was lost for longer than it keeps)."""
        async with self.db.transaction("settlement.pricebook.load") as session:
            versions = list(await session.exec(select(RateModelVersion)))
            assignments = list(await session.exec(select(RateAssignment)))
            owners = await _owners(session, {a.customer_account_id for a in assignments if a.customer_account_id})
            stations = (await session.exec(select(Station.id, Station.operator_id, Station.timezone))).all()
        self._versions = {}
        self._add_versions(versions)
        self._assignments = {a.id: _assignment(a) for a in assignments}
        self._owners = owners
        self._stations = {sid: _Terms(op, tz) for sid, op, tz in stations}
        self._pricers.clear()
        self._index()
        self.loaded = True

    async def reload_models(self, model_ids: Iterable[str]) -> None:
        """Re-reads the versions and assignments of these models (a new version, a new assignment)."""
        ids = sorted(set(model_ids))
        if not ids:
            return
        async with self.db.transaction("settlement.pricebook.reload") as session:
            versions = list(
                await session.exec(select(RateModelVersion).where(col(RateModelVersion.rate_model_id).in_(ids)))
            )
            assignments = list(
                await session.exec(select(RateAssignment).where(col(RateAssignment.rate_model_id).in_(ids)))
            )
            unknown = {a.customer_account_id for a in assignments} - set(self._owners) - {""}
            owners = await _owners(session, unknown)
        for model_id in ids:
            self._versions.pop(model_id, None)
        self._add_versions(versions)
        kept = {k: a for k, a in self._assignments.items() if a.rate_model_id not in ids}
        kept.update((a.id, _assignment(a)) for a in assignments)
        self._assignments = kept
        self._owners.update(owners)
        self._pricers = {k: p for k, p in self._pricers.items() if k[0] not in ids}
        self._index()

    async def ensure_stations(self, station_ids: Iterable[str]) -> None:
        """Reads the terms of stations the book does not hold yet (created since it loaded, or invalidated)."""
        missing = sorted({s for s in station_ids if s not in self._stations})
        if not missing:
            return
        async with self.db.transaction("settlement.pricebook.stations") as session:
            rows = (
                await session.exec(
                    select(Station.id, Station.operator_id, Station.timezone).where(col(Station.id).in_(missing))
                )
            ).all()
        self._stations.update((sid, _Terms(op, tz)) for sid, op, tz in rows)

    def invalidate_station(self, station_id: str) -> None:
        """A station's operator or time zone changed: read it again when next needed."""
        self._stations.pop(station_id, None)

    async def on_changes(self, changes: Sequence[Change]) -> None:
        """Change-feed handler for topic `rate_model`: the key names the model whose rows changed. Idempotent:
        it re-reads the current rows, so a change delivered twice (or late) recompiles to the same state."""
        await self.reload_models(c.key for c in changes)

    def on_station_changes(self, changes: Sequence[Change]) -> None:
        for change in changes:
            self.invalidate_station(change.key)

    def subscribe(self, changes: ChangeFeed) -> None:
        changes.subscribe(TOPIC, self.on_changes)
        # A station's time zone prices its time-of-use windows: forget it when the station changes.
        changes.subscribe(STATION_TOPIC, self.on_station_changes)

    def has_stations(self, station_ids: Iterable[str]) -> bool:
        return all(s in self._stations for s in station_ids)

    def _add_versions(self, rows: Iterable[RateModelVersion]) -> None:
        for row in rows:
            view = model_view(row)
            self._versions.setdefault(row.rate_model_id, []).append(
                _Version(row.rate_model_id, row.version, row.valid_from, row.valid_to, view.tariff)
            )
        for versions in self._versions.values():
            versions.sort(key=lambda v: v.version, reverse=True)

    def _index(self) -> None:
        customer: dict[tuple[str, str], dict[str, _Assignment]] = {}
        station: dict[str, list[_Assignment]] = {}
        operator: dict[str, list[_Assignment]] = {}
        platform: list[_Assignment] = []
        for a in self._assignments.values():
            if a.scope == "customer":
                owner = self._owners.get(a.customer_account_id) if a.customer_account_id else None
                if owner is not None:
                    customer.setdefault(owner, {})[a.id] = a
                if a.fleet_id:
                    customer.setdefault(("fleet", a.fleet_id), {})[a.id] = a
            elif a.scope == "station":
                station.setdefault(a.station_id, []).append(a)
            elif a.scope == "operator":
                operator.setdefault(a.operator_id, []).append(a)
            elif a.scope == "platform":
                platform.append(a)
        newest_first = lambda a: (a.effective_from, a.id)  # noqa: E731
        self._customer = {
            k: sorted(v.values(), key=lambda a: (a.station_id, a.effective_from, a.id), reverse=True)
            for k, v in customer.items()
        }
        self._station = {k: sorted(v, key=newest_first, reverse=True) for k, v in station.items()}
        self._operator = {k: sorted(v, key=newest_first, reverse=True) for k, v in operator.items()}
        self._platform = sorted(platform, key=newest_first, reverse=True)

    # --- pricing ---------------------------------------------------------------------------------------

    def resolve(self, station_id: str, customer_kind: str, customer_id: str, at: dt.datetime) -> _Version:
        """The version `rates.resolve` would pick (the built-in default when none applies)."""
        terms = self._terms(station_id)
        levels: list[Iterable[_Assignment]] = []
        if customer_id:
            levels.append(
                a
                for a in self._customer.get((customer_kind, customer_id), ())
                if a.station_id in (station_id, "") and a.operator_id in (terms.operator_id, "")
            )
        levels.append(self._station.get(station_id, ()))
        levels.append(self._operator.get(terms.operator_id, ()))
        levels.append(self._platform)
        for level in levels:
            seen = 0
            for assignment in level:
                if assignment.effective_from > at:
                    continue
                version = next((v for v in self._versions.get(assignment.rate_model_id, ()) if v.covers(at)), None)
                if version is not None:
                    return version
                seen += 1
                if seen == _LEVEL_LIMIT:
                    break
        return _BUILTIN

    def pinned(self, rate_model_id: str, version: int) -> _Version:
        if rate_model_id == BUILTIN_ID:
            return _BUILTIN
        found = next((v for v in self._versions.get(rate_model_id, ()) if v.version == version), None)
        if found is None:
            raise Miss(f"rate model {rate_model_id} version {version}")
        return found

    def price(self, station_id: str, version: _Version, request: PriceRequest) -> BookPrice:
        terms = self._terms(station_id)
        tz = terms.timezone or version.tariff.time_zone
        key = (version.rate_model_id, version.version, tz)
        pricer = self._pricers.get(key)
        if pricer is None:
            pricer = self._pricers[key] = compile_tariff(dataclasses.replace(version.tariff, time_zone=tz))
        usage = Usage(request.start, max(request.energy_wh, 0), max(request.duration_s, 0))
        amount, currency = pricer(usage)
        return BookPrice(amount, currency, version.rate_model_id, version.version)

    def quote(self, customer_kind: str, customer_id: str, requests: Sequence[PriceRequest]) -> list[BookPrice]:
        """Every option of one quote in one pass. As the database path does, the first option at a station
        resolves its model and the quote's later options there are priced with that same version."""
        chosen: dict[str, _Version] = {}
        out: list[BookPrice] = []
        for request in requests:
            version = chosen.get(request.station_id)
            if version is None:
                version = chosen[request.station_id] = self.resolve(
                    request.station_id, customer_kind, customer_id, request.start
                )
            out.append(self.price(request.station_id, version, request))
        return out

    def _terms(self, station_id: str) -> _Terms:
        terms = self._stations.get(station_id)
        if terms is None:
            raise Miss(f"station {station_id}")
        return terms


def _assignment(row: RateAssignment) -> _Assignment:
    return _Assignment(
        row.id,
        row.rate_model_id,
        row.scope,
        row.station_id,
        row.operator_id,
        row.customer_account_id,
        row.fleet_id,
        row.effective_from,
    )


async def _owners(session: AsyncSession, account_ids: set[str]) -> dict[str, tuple[str, str]]:
    if not account_ids:
        return {}
    rows = await session.exec(
        select(LedgerAccount.id, LedgerAccount.owner_kind, LedgerAccount.owner_id).where(
            col(LedgerAccount.id).in_(sorted(account_ids))
        )
    )
    return {account_id: (kind, owner) for account_id, kind, owner in rows}


__all__ = ["TOPIC", "BookPrice", "Miss", "PriceBook", "PriceRequest", "compile_tariff"]
