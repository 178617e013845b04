"""OrderingService servicer: parses requests, calls the ordering domain, builds responses. No rules here."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

from voltcloud.api.v1 import common_pb2, ordering_pb2, ordering_pb2_grpc
from voltcloud.config import Settings
from voltcloud.ordering import orders, quoting, recommendations, reservations, roads, scan
from voltcloud.ordering.lifecycle import OrderFeed, UnitOfWork, events_after
from voltcloud.ordering.models import Order, OrderEvent, Reservation
from voltcloud.ordering.states import TERMINAL, OrderState
from voltcloud.platform.clock import Clock
from voltcloud.platform.db import Database
from voltcloud.platform.errors import InvalidArgument
from voltcloud.platform.limits import optional_datetime, to_duration, to_timestamp
from voltcloud.platform.paging import next_page_token, parse_page
from voltcloud.platform.rpc import current_principal
from voltcloud.stations.api import MobileUnit, StationCommands

WATCH_POLL_S = 1.0


def option_message(o: quoting.QuotedOption) -> ordering_pb2.PowerUpOption:
    return ordering_pb2.PowerUpOption(
        option_id=o.option_id,
        mode=o.mode,  # type: ignore[arg-type]
        station_id=o.station_id or "",
        resource_kind=o.resource_kind,  # type: ignore[arg-type]
        resource_id=o.resource_id,
        pack_id=o.pack_id or "",
        eta=to_duration(o.eta_s),
        wait=to_duration(o.wait_s),
        service_duration=to_duration(o.service_s),
        finish_time=to_timestamp(o.finish_time),
        energy_wh=o.energy_wh,
        price_estimate=common_pb2.Money(amount_minor=o.price_minor, currency=o.currency),
        rank=o.rank,
        rank_reason=o.rank_reason,  # type: ignore[arg-type]
        rate_model_id=o.rate_model_id,
        rate_model_version=o.rate_model_version,
        service_position=common_pb2.LatLng(lat=o.service_lat, lng=o.service_lng),
        distance_m=o.distance_m,
        arrival_soc_permille=o.arrival_soc_permille,
    )


def event_message(e: OrderEvent) -> ordering_pb2.OrderEvent:
    message = ordering_pb2.OrderEvent(
        order_id=e.order_id,
        seq=e.seq,
        time=to_timestamp(e.time),
        from_state=e.from_state,  # type: ignore[arg-type]
        to_state=e.to_state,  # type: ignore[arg-type]
        actor=common_pb2.Actor(subject_id=e.actor_subject, role=e.actor_role, tenant_id=e.actor_tenant),  # type: ignore[arg-type]
        energy_wh=e.energy_wh,
        reason=e.reason,
    )
    if e.lat is not None and e.lng is not None:
        message.position.CopyFrom(common_pb2.LatLng(lat=e.lat, lng=e.lng))
    if e.amount_minor is not None:
        message.amount.CopyFrom(common_pb2.Money(amount_minor=e.amount_minor, currency=e.currency))
    if e.eta_time is not None:
        message.eta_time.CopyFrom(to_timestamp(e.eta_time))
    return message


def order_message(o: Order, events: list[OrderEvent] | None = None) -> ordering_pb2.Order:
    option = quoting.QuotedOption(**json.loads(o.option_json))
    message = ordering_pb2.Order(
        order_id=o.id,
        quote_id=o.quote_id,
        option=option_message(option),
        state=o.state,  # type: ignore[arg-type]
        vehicle_id=o.vehicle_id,
        driver_id=o.driver_id or "",
        fleet_id=o.fleet_id or "",
        payer=common_pb2.Payer(account_id=o.payer_account_id, fleet_id=o.fleet_id or "", driver_id=o.driver_id or ""),
        hold_id=o.hold_id,
        reservation_id=o.reservation_id or "",
        task_id=o.task_id or "",
        energy_wh=o.energy_wh,
        pack_out_id=o.pack_out_id or "",
        pack_in_id=o.pack_in_id or "",
        last_event_seq=o.last_event_seq,
        version=o.version,
        create_time=to_timestamp(o.created_at),
        update_time=to_timestamp(o.updated_at),
        reason=o.reason,
        events=[event_message(e) for e in events or []],
    )
    if o.final_amount_minor is not None:
        message.final_price.CopyFrom(common_pb2.Money(amount_minor=o.final_amount_minor, currency=o.currency))
    return message


def reservation_message(r: Reservation) -> ordering_pb2.Reservation:
    return ordering_pb2.Reservation(
        reservation_id=r.id,
        station_id=r.station_id,
        connector_id=r.connector_id or "",
        lane=r.lane,
        pack_id=r.pack_id or "",
        vehicle_id=r.vehicle_id,
        order_id=r.order_id or "",
        window=common_pb2.TimeWindow(start=to_timestamp(r.starts_at), end=to_timestamp(r.ends_at)),
        state=r.state,  # type: ignore[arg-type]
        fee=common_pb2.Money(amount_minor=r.fee_minor, currency=r.currency),
        create_time=to_timestamp(r.created_at),
    )


class OrderingRuntime(Protocol):
    """What the servicer uses of the running power-up (`voltcloud.runtime.PowerUp`, built by server.py)."""

    @property
    def db(self) -> Database: ...

    @property
    def deps(self) -> orders.OrderingDeps: ...

    @property
    def feed(self) -> OrderFeed: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def uow(self) -> UnitOfWork: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def station_commands(self) -> StationCommands | None: ...


class OrderingServicer(ordering_pb2_grpc.OrderingServiceServicer):
    def __init__(self, powerup: OrderingRuntime) -> None:
        self._p = powerup

    async def QuotePowerUp(
        self, request: ordering_pb2.QuotePowerUpRequest, context: Any
    ) -> ordering_pb2.QuotePowerUpResponse:
        if not request.HasField("position"):
            raise InvalidArgument.for_field("position", "is required")
        inp = quoting.QuoteInput(
            vehicle_id=request.vehicle_id,
            lat=request.position.lat,
            lng=request.position.lng,
            soc_permille=request.soc_permille,
            target_soc_permille=request.target_soc_permille or 800,
            modes=frozenset(int(m) for m in request.allowed_modes),
            deadline=optional_datetime(request, "deadline"),
            max_options=request.max_options,
            return_lat=request.return_position.lat if request.HasField("return_position") else None,
            return_lng=request.return_position.lng if request.HasField("return_position") else None,
            station_ids=frozenset(request.station_ids),
        )
        p = self._p
        result = await quoting.quote_power_up(p.uow, p.clock, p.settings, current_principal(), inp)
        return ordering_pb2.QuotePowerUpResponse(
            quote_id=result.quote_id,
            expires_at=to_timestamp(result.expires_at),
            options=[option_message(o) for o in result.options],
        )

    async def CreateOrder(
        self, request: ordering_pb2.CreateOrderRequest, context: Any
    ) -> ordering_pb2.CreateOrderResponse:
        order = await orders.create_order(
            self._p.deps,
            current_principal(),
            orders.CreateInput(
                quote_id=request.quote_id,
                option_id=request.option_id,
                idempotency_key=request.idempotency_key,
                allow_fallback=request.allow_fallback,
                payer_account_id=request.payer.account_id if request.HasField("payer") else "",
            ),
        )
        return ordering_pb2.CreateOrderResponse(order=order_message(order))

    async def GetOrder(self, request: ordering_pb2.GetOrderRequest, context: Any) -> ordering_pb2.GetOrderResponse:
        if not request.order_id:
            raise InvalidArgument.for_field("order_id", "is required")
        async with self._p.db.transaction("ordering.get") as session:
            view = await orders.get_order(session, current_principal(), request.order_id)
        return ordering_pb2.GetOrderResponse(order=order_message(view.order, view.events))

    async def ListOrders(
        self, request: ordering_pb2.ListOrdersRequest, context: Any
    ) -> ordering_pb2.ListOrdersResponse:
        page = parse_page(request.page_size, request.page_token)
        filters = orders.OrderFilter(
            vehicle_id=request.vehicle_id or None,
            driver_id=request.driver_id or None,
            fleet_id=request.fleet_id or None,
            station_id=request.station_id or None,
            operator_id=request.operator_id or None,
            states=frozenset(int(s) for s in request.states),
            modes=frozenset(int(m) for m in request.modes),
            created_from=optional_datetime(request, "create_time_from"),
            created_to=optional_datetime(request, "create_time_to"),
        )
        async with self._p.db.transaction("ordering.list") as session:
            found = await orders.list_orders(session, current_principal(), filters, page)
        last = found[-1].id if found else None
        return ordering_pb2.ListOrdersResponse(
            orders=[order_message(o) for o in found], next_page_token=next_page_token(last, len(found), page)
        )

    async def WatchOrder(
        self, request: ordering_pb2.WatchOrderRequest, context: Any
    ) -> AsyncIterator[ordering_pb2.WatchOrderResponse]:
        """Every event after `after_event_seq`, then live ones until the order is final. Positions of the
        specialist/van come as events with seq 0 (not part of the history; not a resume point)."""
        if not request.order_id:
            raise InvalidArgument.for_field("order_id", "is required")
        if request.after_event_seq < 0:
            raise InvalidArgument.for_field("after_event_seq", "must not be negative")
        principal = current_principal()
        db, feed = self._p.db, self._p.feed
        async with db.transaction("ordering.watch.check") as session:
            await orders.get_order(session, principal, request.order_id, events=False)
        after = request.after_event_seq
        last_position: tuple[float, float] | None = None
        condition = feed.condition(request.order_id)
        try:
            while True:
                async with db.transaction("ordering.watch.read") as session:
                    order = await session.get(Order, request.order_id, populate_existing=True)
                    assert order is not None
                    new = await events_after(session, order.id, after)
                    position = None
                    if order.unit_id and order.state in (
                        OrderState.ASSIGNED,
                        OrderState.EN_ROUTE,
                        OrderState.IN_SERVICE,
                    ):
                        unit = await session.get(MobileUnit, order.unit_id, populate_existing=True)
                        position = (unit.lat, unit.lng) if unit else None
                snapshot = order_message(order)
                for event in new:
                    after = event.seq
                    yield ordering_pb2.WatchOrderResponse(event=event_message(event), order=snapshot)
                if position is not None and position != last_position:
                    last_position = position
                    live = ordering_pb2.OrderEvent(
                        order_id=order.id,
                        seq=0,
                        time=to_timestamp(self._p.clock.now()),
                        from_state=order.state,  # type: ignore[arg-type]
                        to_state=order.state,  # type: ignore[arg-type]
                        position=common_pb2.LatLng(lat=position[0], lng=position[1]),
                        reason="position",
                    )
                    yield ordering_pb2.WatchOrderResponse(event=live, order=snapshot)
                if OrderState(order.state) in TERMINAL and after >= order.last_event_seq:
                    return
                async with condition:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(condition.wait(), WATCH_POLL_S)
        finally:
            feed.forget(request.order_id)

    async def CancelOrder(
        self, request: ordering_pb2.CancelOrderRequest, context: Any
    ) -> ordering_pb2.CancelOrderResponse:
        if not request.order_id:
            raise InvalidArgument.for_field("order_id", "is required")
        result = await orders.cancel_order(
            self._p.deps,
            current_principal(),
            order_id=request.order_id,
            idempotency_key=request.idempotency_key,
            reason=request.reason,
        )
        return ordering_pb2.CancelOrderResponse(
            order=order_message(result.order),
            cancellation_fee=common_pb2.Money(amount_minor=result.fee_minor, currency=result.order.currency),
        )

    async def StartByScan(
        self, request: ordering_pb2.StartByScanRequest, context: Any
    ) -> ordering_pb2.StartByScanResponse:
        order = await scan.start_by_scan(
            self._p.deps,
            self._p.station_commands,
            current_principal(),
            scan.ScanInput(
                idempotency_key=request.idempotency_key,
                qr_payload=request.qr_payload,
                vehicle_id=request.vehicle_id,
                target_soc_permille=request.target_soc_permille,
                payer_account_id=request.payer.account_id if request.HasField("payer") else "",
            ),
        )
        return ordering_pb2.StartByScanResponse(order=order_message(order))

    async def CreateReservation(
        self, request: ordering_pb2.CreateReservationRequest, context: Any
    ) -> ordering_pb2.CreateReservationResponse:
        if not request.station_id:
            raise InvalidArgument.for_field("station_id", "is required")
        if not request.vehicle_id:
            raise InvalidArgument.for_field("vehicle_id", "is required")
        window = request.window
        inp = reservations.ReservationInput(
            idempotency_key=request.idempotency_key,
            station_id=request.station_id,
            vehicle_id=request.vehicle_id,
            start=optional_datetime(window, "start", "window.start"),
            end=optional_datetime(window, "end", "window.end"),
            connector_id=request.connector_id,
            lane=request.lane,
        )
        reservation = await reservations.create_reservation(self._p.uow, self._p.clock, current_principal(), inp)
        return ordering_pb2.CreateReservationResponse(reservation=reservation_message(reservation))

    async def CancelReservation(
        self, request: ordering_pb2.CancelReservationRequest, context: Any
    ) -> ordering_pb2.CancelReservationResponse:
        if not request.reservation_id:
            raise InvalidArgument.for_field("reservation_id", "is required")
        reservation = await reservations.cancel_reservation(
            self._p.uow, self._p.clock, current_principal(), request.reservation_id
        )
        return ordering_pb2.CancelReservationResponse(reservation=reservation_message(reservation))

    async def ListReservations(
        self, request: ordering_pb2.ListReservationsRequest, context: Any
    ) -> ordering_pb2.ListReservationsResponse:
        page = parse_page(request.page_size, request.page_token)
        overlaps = request.overlaps if request.HasField("overlaps") else None
        filters = reservations.ReservationFilter(
            station_id=request.station_id or None,
            vehicle_id=request.vehicle_id or None,
            states=frozenset(int(s) for s in request.states),
            overlaps_start=optional_datetime(overlaps, "start", "overlaps.start") if overlaps else None,
            overlaps_end=optional_datetime(overlaps, "end", "overlaps.end") if overlaps else None,
        )
        async with self._p.db.transaction("ordering.reservations.list") as session:
            found = await reservations.list_reservations(session, current_principal(), filters, page)
        last = found[-1].id if found else None
        return ordering_pb2.ListReservationsResponse(
            reservations=[reservation_message(r) for r in found],
            next_page_token=next_page_token(last, len(found), page),
        )

    async def ListRecommendations(
        self, request: ordering_pb2.ListRecommendationsRequest, context: Any
    ) -> ordering_pb2.ListRecommendationsResponse:
        if not request.HasField("position"):
            raise InvalidArgument.for_field("position", "is required")
        page = parse_page(request.page_size, request.page_token)
        inp = recommendations.RecommendationInput(
            lat=request.position.lat,
            lng=request.position.lng,
            radius_m=int(request.radius_m),
            vehicle_id=request.vehicle_id,
            modes=frozenset(int(m) for m in request.modes),
            standards=frozenset(int(s) for s in request.connector_standards),
            min_power_w=int(request.min_power_w),
        )
        p = self._p
        found, next_offset = await recommendations.recommend(p.uow, p.clock, p.settings, current_principal(), inp, page)
        token = next_page_token(str(next_offset), page.size, page) if next_offset else ""
        return ordering_pb2.ListRecommendationsResponse(
            recommendations=[
                ordering_pb2.Recommendation(
                    mode=r.mode,  # type: ignore[arg-type]
                    station_id=r.station_id,
                    name=r.name,
                    position=common_pb2.LatLng(lat=r.lat, lng=r.lng),
                    distance_m=r.distance_m,
                    eta=to_duration(r.eta_s),
                    available_connectors=r.available_connectors,
                    ready_packs=r.ready_packs,
                    wait=to_duration(r.wait_s),
                    energy_price_micros_per_kwh=r.energy_price_micros_per_kwh,
                    currency=r.currency,
                    max_power_w=r.max_power_w,
                    resource_id=r.resource_id,
                )
                for r in found
            ],
            next_page_token=token,
        )

    async def PushRoadConditions(
        self, request: ordering_pb2.PushRoadConditionsRequest, context: Any
    ) -> ordering_pb2.PushRoadConditionsResponse:
        conditions = []
        for c in request.conditions:
            has_from, has_to = c.HasField("from"), c.HasField("to")
            conditions.append(
                roads.Condition(
                    cell_id=c.cell_id,
                    segment_id=c.segment_id,
                    factor_permille=c.congestion_factor_permille,
                    expires_at=optional_datetime(c, "expire_time", "conditions.expire_time"),
                    from_lat=getattr(c, "from").lat if has_from else None,
                    from_lng=getattr(c, "from").lng if has_from else None,
                    to_lat=c.to.lat if has_to else None,
                    to_lng=c.to.lng if has_to else None,
                )
            )
        result = await roads.push(
            self._p.uow,
            self._p.clock,
            current_principal(),
            source=request.source or "feed",
            idempotency_key=request.idempotency_key,
            conditions=conditions,
        )
        return ordering_pb2.PushRoadConditionsResponse(applied=result.applied, rejected=result.rejected)
