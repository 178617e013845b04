"""Live road conditions from a traffic feed → the engine's congestion overlay.

A condition names an engine cell (`cell_id`, decimal) or a road segment (`segment_id` with its end points:
every cell the straight segment crosses gets the factor). Each batch is published on the change feed
("road_condition") in its transaction, so every replica's engine applies it on commit; batches are also stored,
so a replica that starts (or reconciles) replays the recent ones; retries go through the platform's idempotency.

Scope (issue 9, finding 5): the platform admin is the traffic feed and pushes city-wide. An operator pushes
only for its own stations' surroundings: for every cell a condition touches, the station nearest to the
cell's centre must be one of the operator's and lie within SCOPE_RADIUS_M; otherwise the whole call is
PERMISSION_DENIED and nothing is applied (a half-applied batch would hide the refusal). Malformed or expired
conditions are still just counted in `rejected`. Idempotency keys are the caller's own, so nobody can
pre-empt another caller's batch by reusing its key.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud import _core
from voltcloud.engine import Engine
from voltcloud.ordering.lifecycle import Effects, UnitOfWork
from voltcloud.ordering.models import RoadConditionBatch
from voltcloud.platform import feed, idempotency
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.clock import Clock
from voltcloud.platform.errors import InvalidArgument, PermissionDenied
from voltcloud.platform.ids import new_id

CLOSED_FACTOR = 50.0  # a closed road: travel through the cell takes 50x as long (the engine needs a finite factor)
MAX_CONDITIONS = 10_000
SCOPE_RADIUS_M = 3_000.0  # an operator's conditions must lie this close to one of its stations
ROAD_CONDITION_TOPIC = "road_condition"


@dataclass(frozen=True)
class Condition:
    cell_id: str = ""
    segment_id: str = ""
    factor_permille: int = 1000
    expires_at: dt.datetime | None = None
    from_lat: float | None = None
    from_lng: float | None = None
    to_lat: float | None = None
    to_lng: float | None = None


@dataclass(frozen=True)
class Applied:
    applied: int
    rejected: int


def _cells(engine: Engine, c: Condition) -> list[int]:
    if c.cell_id:
        return [int(c.cell_id)] if c.cell_id.isdigit() else []
    if None in (c.from_lat, c.from_lng, c.to_lat, c.to_lng):
        return []
    assert c.from_lat is not None and c.from_lng is not None and c.to_lat is not None and c.to_lng is not None
    length_m = math.hypot((c.to_lat - c.from_lat) * 111_000, (c.to_lng - c.from_lng) * 111_000 * 0.85)
    steps = max(1, math.ceil(length_m / (engine.travel_model.cell_size_m / 2)))
    cells = {
        engine.cell_of(
            c.from_lat + (c.to_lat - c.from_lat) * i / steps, c.from_lng + (c.to_lng - c.from_lng) * i / steps
        )
        for i in range(steps + 1)
    }
    return sorted(cells)


class Scope:
    """Where a caller may push conditions: everywhere (the admin's feed, `operator_id` None) or the cells an
    operator's station serves: the station nearest to the cell's centre is the operator's and lies within
    SCOPE_RADIUS_M. Where stations of several operators mix, a cell belongs to whoever is nearest, so nobody
    jams the roads right around a competitor's station."""

    def __init__(self, engine: Engine, operator_id: str | None) -> None:
        self._engine = engine
        self._operator_id = operator_id
        self._size_m = engine.travel_model.cell_size_m
        self._half = _core.cell_origin((1 << 32) | 1, self._size_m)[0] / 2  # half a cell's side, in degrees

    def covers(self, cells: list[int]) -> bool:
        return self._operator_id is None or all(self._serves(cell) for cell in cells)

    def _serves(self, cell: int) -> bool:
        lat, lng = _core.cell_origin(cell, self._size_m)
        nearest = self._engine.nearest_stations(lat + self._half, lng + self._half, k=1, radius_m=SCOPE_RADIUS_M)
        return bool(nearest) and nearest[0][0].operator_id == self._operator_id


def scope_of(engine: Engine, principal: Principal) -> Scope:
    if principal.is_admin:
        return Scope(engine, None)
    tenant = principal.tenant
    if principal.role is not Role.OPERATOR or tenant is None or tenant.kind != "operator":
        raise PermissionDenied(f"{principal.subject} may not push road conditions")
    return Scope(engine, tenant.id)


async def push(
    uow: UnitOfWork,
    clock: Clock,
    principal: Principal,
    *,
    source: str,
    idempotency_key: str,
    conditions: list[Condition],
) -> Applied:
    if not idempotency_key:
        raise InvalidArgument.for_field("idempotency_key", "is required")
    if len(conditions) > MAX_CONDITIONS:
        raise InvalidArgument.for_field("conditions", f"at most {MAX_CONDITIONS} per call")
    now = clock.now()
    scope = scope_of(uow.engine, principal)
    caller = f"{principal.tenant or 'platform'}|{principal.subject}"
    request = {"source": source, "conditions": [asdict(c) for c in conditions]}
    cells: list[tuple[int, float, int]] = []
    rejected = 0
    for i, c in enumerate(conditions):
        if c.factor_permille < 0:
            raise InvalidArgument.for_field(f"conditions[{i}].congestion_factor_permille", "must not be negative")
        found = _cells(uow.engine, c)
        if found and not scope.covers(found):
            raise PermissionDenied(
                f"conditions[{i}] lies outside {SCOPE_RADIUS_M / 1000:.0f} km of every station of "
                f"{principal.tenant}; only the platform's traffic feed pushes there"
            )
        if not found or c.expires_at is None or c.expires_at <= now:
            rejected += 1
            continue
        factor = CLOSED_FACTOR if c.factor_permille == 0 else max(c.factor_permille / 1000, 0.1)
        cells += [(cell, factor, int(c.expires_at.timestamp())) for cell in found]

    async def work(session: AsyncSession, effects: Effects) -> Applied:
        claim = await idempotency.claim(session, "PushRoadConditions", idempotency_key, request, now=now, caller=caller)
        if claim.replay_of is not None:
            applied, _, rejected_before = claim.replay_of.partition("/")
            return Applied(int(applied), int(rejected_before))
        result = Applied(len(conditions) - rejected, rejected)
        key = new_id("road")
        session.add(
            RoadConditionBatch(
                key=key, applied=result.applied, rejected=result.rejected, cells_json=json.dumps(cells), created_at=now
            )
        )
        await feed.publish(session, ROAD_CONDITION_TOPIC, key, {"key": key, "cells": cells})
        await idempotency.complete(session, claim, f"{result.applied}/{result.rejected}")
        effects.callbacks.append(lambda: apply_cells(uow.engine, cells))
        return result

    return await uow.run("ordering.road_conditions", work)


def apply_cells(engine: Engine, cells: list[tuple[int, float, int]]) -> None:
    by_expiry: dict[int, tuple[list[int], list[float]]] = {}
    for cell, factor, expires in cells:
        ids, factors = by_expiry.setdefault(int(expires), ([], []))
        ids.append(int(cell))
        factors.append(float(factor))
    for expires, (ids, factors) in by_expiry.items():
        engine.set_congestion(ids, factors, dt.datetime.fromtimestamp(expires, dt.UTC))


def apply_published(engine: Engine, seen: set[str], payload: dict[str, object]) -> bool:
    """Applies a batch announced on the feed unless this engine has it already; True when applied."""
    key = str(payload["key"])
    if key in seen:
        return False
    seen.add(key)
    cells = payload["cells"]
    assert isinstance(cells, list)
    apply_cells(engine, [(int(c), float(f), int(e)) for c, f, e in cells])
    return True


async def replay_new(session: AsyncSession, engine: Engine, seen: set[str], since: dt.datetime) -> int:
    """Applies stored batches this engine has not seen (at start and on reconciliation; the feed brings the
    rest as they commit)."""
    rows = await session.exec(select(RoadConditionBatch).where(col(RoadConditionBatch.created_at) >= since))
    applied = 0
    for batch in rows:
        if batch.key in seen:
            continue
        seen.add(batch.key)
        apply_cells(engine, [(int(c), float(f), int(e)) for c, f, e in json.loads(batch.cells_json)])
        applied += 1
    return applied
