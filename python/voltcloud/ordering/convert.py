"""Ordering's converters: request messages → domain inputs and domain objects → response messages. No rules
here: the domain modules (quoting, orders, reservations, recommendations, roads, scan) check the values; this
module only moves fields between the generated messages and their types."""

from __future__ import annotations

import datetime as dt
import json

from voltcloud.api.v1 import common_pb2, ordering_pb2
from voltcloud.ordering import care, orders, preferences, quoting, recommendations, reservations, roads, scan
from voltcloud.ordering.models import Complaint, Feedback, Order, OrderEvent, Reservation
from voltcloud.platform.convert import lat_lng_message, money_message
from voltcloud.platform.errors import InvalidArgument
from voltcloud.platform.limits import optional_datetime, to_duration, to_timestamp


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
        price_estimate=money_message(o.price_minor, o.currency),
        rank=o.rank,
        rank_reason=o.rank_reason,  # type: ignore[arg-type]
        rate_model_id=o.rate_model_id,
        rate_model_version=o.rate_model_version,
        service_position=lat_lng_message(o.service_lat, o.service_lng),
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
        message.position.CopyFrom(lat_lng_message(e.lat, e.lng))
    if e.amount_minor is not None:
        message.amount.CopyFrom(money_message(e.amount_minor, e.currency))
    if e.eta_time is not None:
        message.eta_time.CopyFrom(to_timestamp(e.eta_time))
    return message


def position_event(order: Order, now: dt.datetime, position: tuple[float, float]) -> ordering_pb2.OrderEvent:
    """A live position of the specialist/van: seq 0, not part of the history and not a resume point."""
    return ordering_pb2.OrderEvent(
        order_id=order.id,
        seq=0,
        time=to_timestamp(now),
        from_state=order.state,  # type: ignore[arg-type]
        to_state=order.state,  # type: ignore[arg-type]
        position=lat_lng_message(*position),
        reason="position",
    )


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
        message.final_price.CopyFrom(money_message(o.final_amount_minor, o.currency))
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
        fee=money_message(r.fee_minor, r.currency),
        create_time=to_timestamp(r.created_at),
    )


def recommendation_message(r: recommendations.Recommendation) -> ordering_pb2.Recommendation:
    return ordering_pb2.Recommendation(
        mode=r.mode,  # type: ignore[arg-type]
        station_id=r.station_id,
        name=r.name,
        position=lat_lng_message(r.lat, r.lng),
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


def payer_account(request: ordering_pb2.CreateOrderRequest | ordering_pb2.StartByScanRequest) -> str:
    return request.payer.account_id if request.HasField("payer") else ""


def quote_input(request: ordering_pb2.QuotePowerUpRequest) -> quoting.QuoteInput:
    if not request.HasField("position"):
        raise InvalidArgument.for_field("position", "is required")
    has_return = request.HasField("return_position")
    return quoting.QuoteInput(
        vehicle_id=request.vehicle_id,
        lat=request.position.lat,
        lng=request.position.lng,
        soc_permille=request.soc_permille,
        target_soc_permille=request.target_soc_permille or 800,
        modes=frozenset(int(m) for m in request.allowed_modes),
        deadline=optional_datetime(request, "deadline"),
        max_options=request.max_options,
        return_lat=request.return_position.lat if has_return else None,
        return_lng=request.return_position.lng if has_return else None,
        station_ids=frozenset(request.station_ids),
    )


def create_input(request: ordering_pb2.CreateOrderRequest) -> orders.CreateInput:
    return orders.CreateInput(
        quote_id=request.quote_id,
        option_id=request.option_id,
        idempotency_key=request.idempotency_key,
        allow_fallback=request.allow_fallback,
        payer_account_id=payer_account(request),
        coupon_code=request.coupon_code.strip(),
    )


def scan_input(request: ordering_pb2.StartByScanRequest) -> scan.ScanInput:
    return scan.ScanInput(
        idempotency_key=request.idempotency_key,
        qr_payload=request.qr_payload,
        vehicle_id=request.vehicle_id,
        target_soc_permille=request.target_soc_permille,
        payer_account_id=payer_account(request),
    )


def order_filter(request: ordering_pb2.ListOrdersRequest) -> orders.OrderFilter:
    return orders.OrderFilter(
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


def reservation_input(request: ordering_pb2.CreateReservationRequest) -> reservations.ReservationInput:
    if not request.station_id:
        raise InvalidArgument.for_field("station_id", "is required")
    if not request.vehicle_id:
        raise InvalidArgument.for_field("vehicle_id", "is required")
    window = request.window
    return reservations.ReservationInput(
        idempotency_key=request.idempotency_key,
        station_id=request.station_id,
        vehicle_id=request.vehicle_id,
        start=optional_datetime(window, "start", "window.start"),
        end=optional_datetime(window, "end", "window.end"),
        connector_id=request.connector_id,
        lane=request.lane,
    )


def reservation_filter(request: ordering_pb2.ListReservationsRequest) -> reservations.ReservationFilter:
    overlaps = request.overlaps if request.HasField("overlaps") else None
    return reservations.ReservationFilter(
        station_id=request.station_id or None,
        vehicle_id=request.vehicle_id or None,
        states=frozenset(int(s) for s in request.states),
        overlaps_start=optional_datetime(overlaps, "start", "overlaps.start") if overlaps else None,
        overlaps_end=optional_datetime(overlaps, "end", "overlaps.end") if overlaps else None,
    )


def recommendation_input(request: ordering_pb2.ListRecommendationsRequest) -> recommendations.RecommendationInput:
    if not request.HasField("position"):
        raise InvalidArgument.for_field("position", "is required")
    return recommendations.RecommendationInput(
        lat=request.position.lat,
        lng=request.position.lng,
        radius_m=int(request.radius_m),
        vehicle_id=request.vehicle_id,
        modes=frozenset(int(m) for m in request.modes),
        standards=frozenset(int(s) for s in request.connector_standards),
        min_power_w=int(request.min_power_w),
    )


def road_conditions(request: ordering_pb2.PushRoadConditionsRequest) -> list[roads.Condition]:
    conditions = []
    for c in request.conditions:
        has_from, has_to = c.HasField("from"), c.HasField("to")
        start = getattr(c, "from")  # `from` is a Python keyword
        conditions.append(
            roads.Condition(
                cell_id=c.cell_id,
                segment_id=c.segment_id,
                factor_permille=c.congestion_factor_permille,
                expires_at=optional_datetime(c, "expire_time", "conditions.expire_time"),
                from_lat=start.lat if has_from else None,
                from_lng=start.lng if has_from else None,
                to_lat=c.to.lat if has_to else None,
                to_lng=c.to.lng if has_to else None,
            )
        )
    return conditions


# ---- care for drivers ---------------------------------------------------------------------------------------


def complaint_message(c: Complaint) -> ordering_pb2.Complaint:
    return ordering_pb2.Complaint(
        complaint_id=c.id,
        order_id=c.order_id,
        filed_by=c.filed_by,
        fleet_id=c.fleet_id or "",
        operator_id=c.operator_id or "",
        state=c.state,  # type: ignore[arg-type]
        reason=c.reason,
        evidence_uris=care.evidence_of(c),
        refund=money_message(c.refund_minor, c.currency) if c.refund_minor else None,
        refund_entry_id=c.refund_entry_id or "",
        review_reason=c.review_reason,
        reviewed_by=c.reviewed_by or "",
        create_time=to_timestamp(c.created_at),
        review_time=to_timestamp(c.reviewed_at) if c.reviewed_at else None,
    )


def complaint_input(request: ordering_pb2.FileComplaintRequest) -> care.ComplaintInput:
    return care.ComplaintInput(
        order_id=request.order_id,
        reason=request.reason,
        evidence_uris=tuple(request.evidence_uris),
        idempotency_key=request.idempotency_key,
    )


def review_input(request: ordering_pb2.ReviewComplaintRequest) -> care.Review:
    return care.Review(
        complaint_id=request.complaint_id,
        accept=request.accept,
        refund_minor=request.refund.amount_minor if request.HasField("refund") else 0,
        currency=request.refund.currency if request.HasField("refund") else "",
        reason=request.reason,
        idempotency_key=request.idempotency_key,
    )


def feedback_input(request: ordering_pb2.SubmitFeedbackRequest) -> care.FeedbackInput:
    return care.FeedbackInput(
        station_id=request.station_id,
        order_id=request.order_id,
        category=request.category,
        rating=request.rating,
        text=request.text,
        idempotency_key=request.idempotency_key,
    )


def feedback_message(f: Feedback) -> ordering_pb2.Feedback:
    return ordering_pb2.Feedback(
        feedback_id=f.id,
        submitted_by=f.submitted_by,
        operator_id=f.operator_id or "",
        station_id=f.station_id or "",
        order_id=f.order_id or "",
        category=f.category,
        rating=f.rating,
        text=f.text,
        create_time=to_timestamp(f.created_at),
    )


def preferences_input(message: ordering_pb2.DriverPreferences) -> preferences.PreferencesView:
    return preferences.PreferencesView(
        favourite_station_ids=tuple(message.favourite_station_ids),
        price_sensitivity_permille=message.price_sensitivity_permille,
        preferred_modes=tuple(int(m) for m in message.preferred_modes),
        low_battery_reminder_permille=message.low_battery_reminder_permille,
        fatigue_limit_minutes=message.fatigue_limit_minutes,
    )


def preferences_message(p: preferences.PreferencesView) -> ordering_pb2.DriverPreferences:
    return ordering_pb2.DriverPreferences(
        favourite_station_ids=list(p.favourite_station_ids),
        price_sensitivity_permille=p.price_sensitivity_permille,
        preferred_modes=list(p.preferred_modes),  # type: ignore[arg-type]
        low_battery_reminder_permille=p.low_battery_reminder_permille,
        fatigue_limit_minutes=p.fatigue_limit_minutes,
    )
