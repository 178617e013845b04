"""OrderingService servicer: parses requests, calls the ordering domain, builds responses. No rules here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.api.v1 import ordering_pb2, ordering_pb2_grpc
from voltcloud.config import Settings
from voltcloud.ordering import care, orders, preferences, quoting, recommendations, reservations, roads, scan
from voltcloud.ordering.convert import (
    complaint_input,
    complaint_message,
    create_input,
    event_message,
    feedback_input,
    feedback_message,
    option_message,
    order_filter,
    order_message,
    position_event,
    preferences_input,
    preferences_message,
    quote_input,
    recommendation_input,
    recommendation_message,
    reservation_filter,
    reservation_input,
    reservation_message,
    review_input,
    road_conditions,
    scan_input,
)
from voltcloud.ordering.lifecycle import Effects, OrderFeed, UnitOfWork, events_after
from voltcloud.ordering.models import Order
from voltcloud.ordering.states import TERMINAL, OrderState
from voltcloud.platform.clock import Clock
from voltcloud.platform.convert import money_message
from voltcloud.platform.db import Database
from voltcloud.platform.errors import InvalidArgument
from voltcloud.platform.limits import to_timestamp
from voltcloud.platform.paging import next_page_token, parse_page
from voltcloud.platform.rpc import current_principal
from voltcloud.stations.api import MobileUnit, StationCommands


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
        p = self._p
        result = await quoting.quote_power_up(
            p.uow, p.clock, p.settings, current_principal(), quote_input(request), p.deps.quote_path
        )
        return ordering_pb2.QuotePowerUpResponse(
            quote_id=result.quote_id,
            expires_at=to_timestamp(result.expires_at),
            options=[option_message(o) for o in result.options],
        )

    async def CreateOrder(
        self, request: ordering_pb2.CreateOrderRequest, context: Any
    ) -> ordering_pb2.CreateOrderResponse:
        order = await orders.create_order(self._p.deps, current_principal(), create_input(request))
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
        filters = order_filter(request)
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
        seen = feed.watch(request.order_id)  # before the first read: news from then on is not missed
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
                    live = position_event(order, self._p.clock.now(), position)
                    yield ordering_pb2.WatchOrderResponse(event=live, order=snapshot)
                if OrderState(order.state) in TERMINAL and after >= order.last_event_seq:
                    return
                seen = await feed.changed(request.order_id, seen)  # pushed by the change feed; no timer
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
            cancellation_fee=money_message(result.fee_minor, result.order.currency),
        )

    async def StartByScan(
        self, request: ordering_pb2.StartByScanRequest, context: Any
    ) -> ordering_pb2.StartByScanResponse:
        p = self._p
        order = await scan.start_by_scan(p.deps, p.station_commands, current_principal(), scan_input(request))
        return ordering_pb2.StartByScanResponse(order=order_message(order))

    async def CreateReservation(
        self, request: ordering_pb2.CreateReservationRequest, context: Any
    ) -> ordering_pb2.CreateReservationResponse:
        inp = reservation_input(request)
        reservation = await reservations.create_reservation(self._p.uow, self._p.clock, current_principal(), inp)
        return ordering_pb2.CreateReservationResponse(reservation=reservation_message(reservation))

    async def CancelReservation(
        self, request: ordering_pb2.CancelReservationRequest, context: Any
    ) -> ordering_pb2.CancelReservationResponse:
        if not request.reservation_id:
            raise InvalidArgument.for_field("reservation_id", "is required")
        reservation = await reservations.cancel_reservation(
            self._p.uow, self._p.clock, current_principal(), request.reservation_id, request.idempotency_key
        )
        return ordering_pb2.CancelReservationResponse(reservation=reservation_message(reservation))

    async def ListReservations(
        self, request: ordering_pb2.ListReservationsRequest, context: Any
    ) -> ordering_pb2.ListReservationsResponse:
        page = parse_page(request.page_size, request.page_token)
        filters = reservation_filter(request)
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
        inp = recommendation_input(request)  # before the page: a missing position is reported first
        page = parse_page(request.page_size, request.page_token)
        p = self._p
        found, next_offset = await recommendations.recommend(p.uow, p.clock, p.settings, current_principal(), inp, page)
        token = next_page_token(str(next_offset), page.size, page) if next_offset else ""
        return ordering_pb2.ListRecommendationsResponse(
            recommendations=[recommendation_message(r) for r in found], next_page_token=token
        )

    async def PushRoadConditions(
        self, request: ordering_pb2.PushRoadConditionsRequest, context: Any
    ) -> ordering_pb2.PushRoadConditionsResponse:
        conditions = road_conditions(request)
        result = await roads.push(
            self._p.uow,
            self._p.clock,
            current_principal(),
            source=request.source or "feed",
            idempotency_key=request.idempotency_key,
            conditions=conditions,
        )
        return ordering_pb2.PushRoadConditionsResponse(applied=result.applied, rejected=result.rejected)

    # ---- care for drivers -----------------------------------------------------------------------------------

    async def FileComplaint(
        self, request: ordering_pb2.FileComplaintRequest, context: Any
    ) -> ordering_pb2.FileComplaintResponse:
        principal, now = current_principal(), self._p.clock.now()
        async with self._p.db.transaction("ordering.complaint.file") as session:
            row = await care.file_complaint(session, principal, complaint_input(request), now=now)
            message = complaint_message(row)
        return ordering_pb2.FileComplaintResponse(complaint=message)

    async def ListComplaints(
        self, request: ordering_pb2.ListComplaintsRequest, context: Any
    ) -> ordering_pb2.ListComplaintsResponse:
        page = parse_page(request.page_size, request.page_token)
        states = frozenset(int(s) for s in request.states)
        async with self._p.db.transaction("ordering.complaint.list") as session:
            found = await care.list_complaints(
                session, current_principal(), order_id=request.order_id, states=states, page=page
            )
            messages = [complaint_message(c) for c in found]
        last = found[-1].id if found else None
        return ordering_pb2.ListComplaintsResponse(
            complaints=messages, next_page_token=next_page_token(last, len(found), page)
        )

    async def ReviewComplaint(
        self, request: ordering_pb2.ReviewComplaintRequest, context: Any
    ) -> ordering_pb2.ReviewComplaintResponse:
        principal, review = current_principal(), review_input(request)
        now = self._p.clock.now()

        async def work(session: AsyncSession, effects: Effects) -> ordering_pb2.ReviewComplaintResponse:
            complaint, order = await care.review_complaint(session, effects, principal, review, now=now)
            return ordering_pb2.ReviewComplaintResponse(
                complaint=complaint_message(complaint), order=order_message(order)
            )

        return await self._p.uow.run("ordering.complaint.review", work)

    async def SubmitFeedback(
        self, request: ordering_pb2.SubmitFeedbackRequest, context: Any
    ) -> ordering_pb2.SubmitFeedbackResponse:
        principal, now = current_principal(), self._p.clock.now()
        async with self._p.db.transaction("ordering.feedback.submit") as session:
            row = await care.submit_feedback(session, principal, feedback_input(request), now=now)
            message = feedback_message(row)
        return ordering_pb2.SubmitFeedbackResponse(feedback=message)

    async def ListFeedback(
        self, request: ordering_pb2.ListFeedbackRequest, context: Any
    ) -> ordering_pb2.ListFeedbackResponse:
        page = parse_page(request.page_size, request.page_token)
        async with self._p.db.transaction("ordering.feedback.list") as session:
            found = await care.list_feedback(session, current_principal(), station_id=request.station_id, page=page)
            messages = [feedback_message(f) for f in found]
        last = found[-1].id if found else None
        return ordering_pb2.ListFeedbackResponse(
            feedback=messages, next_page_token=next_page_token(last, len(found), page)
        )

    async def GetPreferences(
        self, request: ordering_pb2.GetPreferencesRequest, context: Any
    ) -> ordering_pb2.GetPreferencesResponse:
        async with self._p.db.transaction("ordering.preferences.get") as session:
            view = await preferences.get_preferences(session, current_principal())
        return ordering_pb2.GetPreferencesResponse(preferences=preferences_message(view))

    async def SetPreferences(
        self, request: ordering_pb2.SetPreferencesRequest, context: Any
    ) -> ordering_pb2.SetPreferencesResponse:
        wanted = preferences_input(request.preferences)
        async with self._p.db.transaction("ordering.preferences.set") as session:
            view = await preferences.set_preferences(session, current_principal(), wanted)
        return ordering_pb2.SetPreferencesResponse(preferences=preferences_message(view))
