"""StartByScan: a QR code on a charger's connector names station and connector; the driver scans it, the
platform creates the order through CreateOrder's machinery (a one-option quote for that connector, hold and
connector reservation in one transaction) and sends the remote start down the station's gateway stream.

QR payloads (docs/ordering.md): `voltcloud://c/<station_id>/<connector_id>` (a charger connector) and
`voltcloud://l/<station_id>/<lane>` (a swap lane). A lane's scan starts a swap order: the battery matcher
(`stations.packs.choose_swap_pack`, VehicleArrived's rule) picks the pack, CreateOrder reserves it, books the
station's window and holds the money, and a ReserveCommand tells the station which pack to hand out on that
lane; the station's SwapStarted/SwapCompleted then move the order (`station_sessions`), a failed swap fails it
and releases hold, pack and lane.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import asdict, dataclass
from typing import NoReturn

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.engine import STATION_SWAP, StationInfo
from voltcloud.fleet.api import Vehicle
from voltcloud.ordering import orders, payments
from voltcloud.ordering.lifecycle import SYSTEM, Effects, finish
from voltcloud.ordering.models import Order, Quote
from voltcloud.ordering.quoting import QuotedOption, vehicle_for
from voltcloud.ordering.states import ACTIVE, Mode, OrderState, ResourceKind
from voltcloud.platform.auth import Principal
from voltcloud.platform.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from voltcloud.platform.ids import new_id
from voltcloud.stations.api import CONNECTOR_AVAILABLE, CommandOutcome, Connector, StationCommands, packs

_QR = re.compile(r"^voltcloud://(?P<kind>[cl])/(?P<station>[A-Za-z0-9_.:-]{1,64})/(?P<target>[A-Za-z0-9_.:-]{1,64})$")
REMOTE_START_TIMEOUT = dt.timedelta(seconds=20)
SWAP_RESERVE_TIMEOUT = dt.timedelta(seconds=20)
SWAP_PICK_ATTEMPTS = 3  # a pack chosen here may be reserved by a concurrent arrival before the order takes it


@dataclass(frozen=True)
class ScanTarget:
    station_id: str
    connector_id: str = ""
    lane: int = 0


@dataclass(frozen=True)
class ChargePlace:
    """Where a walk-up charge happens: the station (engine view or row) and the connector."""

    station_id: str
    operator_id: str
    lat: float
    lng: float
    connector_id: str | None
    connector_power_w: int


async def walk_up_charge(
    session: AsyncSession,
    place: ChargePlace,
    vehicle: Vehicle,
    *,
    target_soc_permille: int,
    customer: tuple[str, str],
    start: dt.datetime,
) -> QuotedOption:
    """The one option of a charge started at the connector (a scan, or a charger's idTag): the vehicle charged to
    `target_soc_permille` of its capacity at the slower of connector and car, priced at the rate in force at `start`."""
    energy = max(vehicle.usable_capacity_wh * target_soc_permille // 1000, 1000)
    power = max(min(place.connector_power_w, vehicle.max_dc_power_w), 1000)
    service_s = max(energy * 3600 // power, 60)
    customer_kind, customer_id = customer
    price = await payments.estimate(
        session,
        station_id=place.station_id,
        customer_kind=customer_kind,
        customer_id=customer_id,
        start=start,
        energy_wh=energy,
        duration_s=service_s,
    )
    return QuotedOption(
        option_id="o1", rank=1, rank_reason=0, mode=int(Mode.CHARGE),
        resource_kind=int(ResourceKind.CONNECTOR), resource_id=place.connector_id or "",
        operator_id=place.operator_id, station_id=place.station_id, connector_id=place.connector_id, pack_id=None,
        unit_id=None, eta_s=0, wait_s=0, service_s=service_s,
        finish_at=(start + dt.timedelta(seconds=service_s)).isoformat(), energy_wh=energy, distance_m=0,
        arrival_soc_permille=0, service_lat=place.lat, service_lng=place.lng, price_minor=price.amount_minor,
        currency=price.currency, rate_model_id=price.rate_model_id, rate_model_version=price.rate_model_version,
        pricing_station_id=place.station_id,
    )  # fmt: skip


@dataclass(frozen=True)
class ScanInput:
    idempotency_key: str
    qr_payload: str
    vehicle_id: str
    target_soc_permille: int = 0
    payer_account_id: str = ""


def parse_qr(payload: str) -> ScanTarget:
    """The station and connector (or lane) a QR payload names; INVALID_ARGUMENT on `qr_payload` otherwise."""
    match = _QR.match(payload.strip())
    if match is None:
        raise InvalidArgument.for_field(
            "qr_payload",
            "expected voltcloud://c/<station_id>/<connector_id> or voltcloud://l/<station_id>/<lane>, "
            f"got {payload[:100]!r}",
        )
    station, target = match["station"], match["target"]
    if match["kind"] == "c":
        return ScanTarget(station, connector_id=target)
    if not target.isdigit() or not 1 <= int(target) <= 64:
        raise InvalidArgument.for_field("qr_payload", f"lane must be 1..64, got {target!r}")
    return ScanTarget(station, lane=int(target))


def _request(inp: ScanInput) -> dict[str, object]:
    """What the key stands for: the scan, not the one-option quote made for it (new on every call)."""
    fields = asdict(inp)
    del fields["idempotency_key"]
    return {"scan": fields}


async def start_by_scan(
    deps: orders.OrderingDeps, commands: StationCommands | None, principal: Principal, inp: ScanInput
) -> Order:
    if not inp.idempotency_key:
        raise InvalidArgument.for_field("idempotency_key", "is required")
    if not inp.vehicle_id:
        raise InvalidArgument.for_field("vehicle_id", "is required")
    if not 0 <= inp.target_soc_permille <= 1000:
        raise InvalidArgument.for_field("target_soc_permille", "must be 0..1000")
    target = parse_qr(inp.qr_payload)
    if not target.connector_id:
        return await start_swap_by_scan(deps, commands, principal, inp, target)
    engine = deps.uow.engine
    station = engine.station(target.station_id)
    if station is None:
        raise NotFound(f"station {target.station_id} not found")
    now = deps.clock.now()
    async with deps.uow.db.transaction("ordering.scan.quote") as session:
        existing = await orders.replayed_order(session, principal, inp.idempotency_key, _request(inp))
        if existing is not None:
            return existing  # a retry: the first answer (the start was sent then)
        if inp.payer_account_id:  # refused before anything (even the one-option quote) is written
            await payments.payer_named(session, principal, inp.payer_account_id)
        vehicle = await vehicle_for(session, principal, inp.vehicle_id)
        connector = await session.get(Connector, target.connector_id)
        if connector is None or connector.station_id != target.station_id:
            raise NotFound(f"connector {target.connector_id} not found at station {target.station_id}")
        if not vehicle.connector_mask & (1 << connector.standard):
            raise FailedPrecondition(f"connector {connector.id} does not fit vehicle {vehicle.id}")
        if connector.status != CONNECTOR_AVAILABLE:
            raise FailedPrecondition(f"connector {connector.id} is not available (status {connector.status})")
        customer_kind, customer_id = ("fleet", vehicle.fleet_id) if vehicle.fleet_id else ("driver", principal.subject)
        option = await walk_up_charge(
            session,
            ChargePlace(station.id, station.operator_id, station.lat, station.lng, connector.id, connector.max_power_w),
            vehicle,
            target_soc_permille=inp.target_soc_permille or 1000,
            customer=(customer_kind, customer_id),
            start=now,
        )
        quote_id = new_id("qt")
        session.add(
            Quote(
                id=quote_id, requested_by=principal.subject, vehicle_id=vehicle.id, fleet_id=vehicle.fleet_id,
                lat=station.lat, lng=station.lng, soc_permille=0, target_soc_permille=inp.target_soc_permille or 1000,
                created_at=now, expires_at=now + dt.timedelta(seconds=deps.settings.quote_ttl_s),
                options_json=json.dumps([asdict(option)]),
            )
        )  # fmt: skip
    create = orders.CreateInput(
        quote_id=quote_id,
        option_id="o1",
        idempotency_key=inp.idempotency_key,
        payer_account_id=inp.payer_account_id,
        request=_request(inp),
    )
    order = await orders.create_order(deps, principal, create)
    outcome = (
        await commands.remote_start(station.id, connector.id, order.id, principal.subject, REMOTE_START_TIMEOUT)
        if commands is not None
        else CommandOutcome(False, "offline", "no station command path")
    )
    if outcome.accepted:
        return order
    what = f"station {station.id} did not start connector {connector.id}"
    await _refused_by_station(deps, order.id, what, outcome, " and its hold was released")


async def _fail(deps: orders.OrderingDeps, order_id: str, reason: str) -> None:
    async def work(session: AsyncSession, effects: Effects) -> None:
        order = await session.get(Order, order_id)
        if order is None or order.state not in ACTIVE or order.state == OrderState.IN_SERVICE:
            return  # the session already started (or the order ended) meanwhile
        await finish(
            session, effects, order, OrderState.FAILED, SYSTEM, deps.clock.now(), reason=reason, clock=deps.clock
        )

    await deps.uow.run("ordering.scan.fail", work)


# ---- swap lanes ----


async def start_swap_by_scan(
    deps: orders.OrderingDeps,
    commands: StationCommands | None,
    principal: Principal,
    inp: ScanInput,
    target: ScanTarget,
) -> Order:
    """A swap lane's scan: the order (pack reserved, window booked, money held), then the station told which
    pack to hand out on the lane. A station that does not take the reservation fails the order at once."""
    station = deps.uow.engine.station(target.station_id)
    if station is None:
        raise NotFound(f"station {target.station_id} not found")
    if station.kind != STATION_SWAP:
        raise FailedPrecondition(f"station {station.id} has no swap lanes")
    if target.lane > station.lanes:
        raise NotFound(f"lane {target.lane} not found at station {station.id} ({station.lanes} lanes)")
    order, replayed = await _swap_order(deps, principal, inp, station, target.lane)
    if replayed or order.pack_id is None or order.reservation_id is None:
        return order  # a retry: the first answer (the station was told then)
    outcome = (
        await commands.reserve_swap(station.id, target.lane, order.pack_id, order.reservation_id, SWAP_RESERVE_TIMEOUT)
        if commands is not None
        else CommandOutcome(False, "offline", "no station command path")
    )
    if outcome.accepted:
        return order
    what = f"station {station.id} did not reserve pack {order.pack_id} on lane {target.lane}"
    await _refused_by_station(deps, order.id, what, outcome, ", its hold and pack were released")


async def _swap_order(
    deps: orders.OrderingDeps, principal: Principal, inp: ScanInput, station: StationInfo, lane: int
) -> tuple[Order, bool]:
    """The order for the pack the matcher picks now (picks again when another writer reserved it first), and
    whether it is the first call's order replayed."""
    lost: list[str] = []
    for _ in range(SWAP_PICK_ATTEMPTS):
        quote_id = await _swap_quote(deps, principal, inp, station, lane)
        if isinstance(quote_id, Order):
            return quote_id, True
        create = orders.CreateInput(
            quote_id=quote_id,
            option_id="o1",
            idempotency_key=inp.idempotency_key,
            payer_account_id=inp.payer_account_id,
            request=_request(inp),
        )
        try:
            order = await orders.create_order(deps, principal, create)
        except Aborted as race:
            lost.append(race.message)
            continue
        return order, order.quote_id != quote_id  # a concurrent duplicate's order was made from its own quote
    raise Aborted("the chosen packs were taken meanwhile: " + "; ".join(lost) + ". Scan again.")


async def _swap_quote(
    deps: orders.OrderingDeps, principal: Principal, inp: ScanInput, station: StationInfo, lane: int
) -> str | Order:
    """Writes the one-option quote of a swap on `lane` with the pack the battery matcher chooses; the first
    order instead when the key was used already."""
    now = deps.clock.now()
    async with deps.uow.db.transaction("ordering.scan.swap_quote") as session:
        existing = await orders.replayed_order(session, principal, inp.idempotency_key, _request(inp))
        if existing is not None:
            return existing
        if inp.payer_account_id:
            await payments.payer_named(session, principal, inp.payer_account_id)
        vehicle = await vehicle_for(session, principal, inp.vehicle_id)
        if vehicle.pack_type_id is None:
            raise FailedPrecondition(f"vehicle {vehicle.id} has a fixed battery: it cannot swap")
        if await _lane_taken(session, station.id, lane):
            raise FailedPrecondition(f"lane {lane} of station {station.id} is serving another order")
        pack = await packs.choose_swap_pack(session, station.id, vehicle.pack_type_id)
        if pack is None:
            raise FailedPrecondition(f"station {station.id} has no ready pack of type {vehicle.pack_type_id}")
        customer = ("fleet", vehicle.fleet_id) if vehicle.fleet_id else ("driver", principal.subject)
        option = await _swap_option(session, station, lane, vehicle, (pack.id, pack.soc_permille), customer, now)
        quote_id = new_id("qt")
        session.add(
            Quote(
                id=quote_id, requested_by=principal.subject, vehicle_id=vehicle.id, fleet_id=vehicle.fleet_id,
                lat=station.lat, lng=station.lng, soc_permille=0, target_soc_permille=pack.soc_permille,
                created_at=now, expires_at=now + dt.timedelta(seconds=deps.settings.quote_ttl_s),
                options_json=json.dumps([asdict(option)]),
            )
        )  # fmt: skip
    return quote_id


async def _lane_taken(session: AsyncSession, station_id: str, lane: int) -> bool:
    """Whether an active swap order holds this lane (its option's resource is the lane number)."""
    rows = await session.exec(
        select(Order.option_json).where(
            Order.station_id == station_id,
            Order.mode == int(Mode.SWAP),
            col(Order.state).in_(sorted(int(s) for s in ACTIVE)),
        )
    )
    return any(json.loads(raw).get("resource_id") == str(lane) for raw in rows)


async def _swap_option(
    session: AsyncSession,
    station: StationInfo,
    lane: int,
    vehicle: Vehicle,
    pack: tuple[str, int],
    customer: tuple[str, str],
    start: dt.datetime,
) -> QuotedOption:
    """The one option of a scanned swap: at most the chosen pack's charge (`pack` is its id and SOC) is
    delivered, priced at the rate in force now; the station's reported energy reprices it at completion."""
    pack_id, soc_permille = pack
    energy = max(vehicle.usable_capacity_wh * soc_permille // 1000, 1000)
    service_s = max(station.swap_time_s, 60)
    price = await payments.estimate(
        session, station_id=station.id, customer_kind=customer[0], customer_id=customer[1], start=start,
        energy_wh=energy, duration_s=service_s,
    )  # fmt: skip
    return QuotedOption(
        option_id="o1", rank=1, rank_reason=0, mode=int(Mode.SWAP), resource_kind=int(ResourceKind.SWAP_LANE),
        resource_id=str(lane), operator_id=station.operator_id, station_id=station.id, connector_id=None,
        pack_id=pack_id, unit_id=None, eta_s=0, wait_s=0, service_s=service_s,
        finish_at=(start + dt.timedelta(seconds=service_s)).isoformat(), energy_wh=energy, distance_m=0,
        arrival_soc_permille=0, service_lat=station.lat, service_lng=station.lng, price_minor=price.amount_minor,
        currency=price.currency, rate_model_id=price.rate_model_id, rate_model_version=price.rate_model_version,
        pricing_station_id=station.id,
    )  # fmt: skip


async def _refused_by_station(
    deps: orders.OrderingDeps, order_id: str, what: str, outcome: CommandOutcome, released: str
) -> NoReturn:
    """The station refused or never answered the order's command: the order fails (releasing what it held)
    and the caller learns why; offline or timed out is UNAVAILABLE (try again), a refusal FAILED_PRECONDITION."""
    reason = f"{what}: {outcome.status}" + (f" ({outcome.detail})" if outcome.detail else "")
    await _fail(deps, order_id, reason)
    if outcome.status in ("offline", "timeout"):
        raise Unavailable(f"{reason}; order {order_id} failed{released}")
    raise FailedPrecondition(f"{reason}; order {order_id} failed{released}")
