"""StartByScan: a QR code on a charger's connector names station and connector; the driver scans it, the
platform creates the order through CreateOrder's machinery (a one-option quote for that connector, hold and
connector reservation in one transaction) and sends the remote start down the station's gateway stream.

QR payloads (docs/ordering.md): `voltcloud://c/<station_id>/<connector_id>` (a charger connector) and
`voltcloud://l/<station_id>/<lane>` (a swap lane; parsed, not startable yet).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import asdict, dataclass

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.api import Vehicle
from voltcloud.ordering import orders, payments
from voltcloud.ordering.lifecycle import SYSTEM, Effects, finish
from voltcloud.ordering.models import Order, Quote
from voltcloud.ordering.quoting import QuotedOption, vehicle_for
from voltcloud.ordering.states import ACTIVE, Mode, OrderState, ResourceKind
from voltcloud.platform.auth import Principal
from voltcloud.platform.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from voltcloud.platform.ids import new_id
from voltcloud.stations.api import CONNECTOR_AVAILABLE, CommandOutcome, Connector, StationCommands

_QR = re.compile(r"^voltcloud://(?P<kind>[cl])/(?P<station>[A-Za-z0-9_.:-]{1,64})/(?P<target>[A-Za-z0-9_.:-]{1,64})$")
REMOTE_START_TIMEOUT = dt.timedelta(seconds=20)


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
        raise FailedPrecondition("scan to start is available on charger connectors only; swap lanes start on arrival")
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
    reason = f"station {station.id} did not start connector {connector.id}: {outcome.status}" + (
        f" ({outcome.detail})" if outcome.detail else ""
    )
    await _fail(deps, order.id, reason)
    if outcome.status in ("offline", "timeout"):
        raise Unavailable(f"{reason}; order {order.id} failed and its hold was released")
    raise FailedPrecondition(f"{reason}; order {order.id} failed and its hold was released")


async def _fail(deps: orders.OrderingDeps, order_id: str, reason: str) -> None:
    async def work(session: AsyncSession, effects: Effects) -> None:
        order = await session.get(Order, order_id)
        if order is None or order.state not in ACTIVE or order.state == OrderState.IN_SERVICE:
            return  # the session already started (or the order ended) meanwhile
        await finish(
            session, effects, order, OrderState.FAILED, SYSTEM, deps.clock.now(), reason=reason, clock=deps.clock
        )

    await deps.uow.run("ordering.scan.fail", work)
