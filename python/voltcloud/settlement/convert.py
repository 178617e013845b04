"""Settlement's converters: request messages → domain values and domain views → response messages. No rules
here: what a value may be is checked by the domain (money.check_amount, check_currency) or by the servicer's
callee; this module only moves fields between the generated messages and the settlement modules' types."""

from __future__ import annotations

import datetime as dt
from typing import Any

from voltcloud.api.v1 import common_pb2, settlement_pb2
from voltcloud.platform.auth import Principal
from voltcloud.platform.convert import money_message as money_message  # re-exported: settlement.service uses it
from voltcloud.platform.convert import money_value
from voltcloud.platform.errors import InvalidArgument
from voltcloud.platform.limits import optional_datetime, to_timestamp
from voltcloud.settlement import abnormal, accounts, billing, coupons, holds, ledger, payments, rates, trace
from voltcloud.settlement.models import Coupon, Payout, StatementLine
from voltcloud.settlement.money import DEFAULT_CURRENCY, check_amount, check_currency
from voltcloud.settlement.tariff import (
    DEFAULT_TIME_ZONE,
    Dimension,
    PriceComponent,
    Restrictions,
    Tariff,
    TariffElement,
)


def parse_amount(message: Any, name: str, *, allow_zero: bool = False) -> tuple[int, str]:
    if not message.HasField(name):
        raise InvalidArgument.for_field(name, "is required")
    amount, currency = money_value(getattr(message, name))
    check_amount(name, amount, allow_zero=allow_zero)
    check_currency(f"{name}.currency", currency)
    return amount, currency


def actor_of(principal: Principal) -> ledger.Actor:
    return ledger.Actor(principal.subject, int(principal.role), str(principal.tenant or ""))


def scoped_key(principal: Principal, key: str) -> str:
    """Client keys are scoped to the caller, so two callers never collide."""
    if not key:
        raise InvalidArgument.for_field("idempotency_key", "is required for money operations")
    return f"{principal.subject}|{key}"


def account_message(v: accounts.AccountView) -> settlement_pb2.Account:
    return settlement_pb2.Account(
        account_id=v.id,
        kind=int(v.kind),  # type: ignore[arg-type]
        owner_id=v.owner_id,
        name=v.name,
        currency=v.currency,
        balance=money_message(v.balance_minor, v.currency),
        held=money_message(v.held_minor, v.currency),
        available=money_message(v.available_minor, v.currency),
        credit_limit=money_message(v.credit_limit_minor, v.currency),
        frozen=v.frozen,
        version=v.version,
        create_time=to_timestamp(v.created_at),
    )


def entry_message(e: ledger.JournalEntryRef) -> settlement_pb2.JournalEntry:
    return settlement_pb2.JournalEntry(
        entry_id=e.entry_id,
        kind=int(e.kind),  # type: ignore[arg-type]
        postings=[
            settlement_pb2.Posting(
                account_id=p.account_id, amount=money_message(p.amount_minor, p.currency), memo=p.memo
            )
            for p in e.postings
        ],
        order_id=e.order_id or "",
        hold_id=e.hold_id or "",
        payment_id=e.payment_id or "",
        reverses_entry_id=e.reverses_entry_id or "",
        description=e.description,
        post_time=to_timestamp(e.posted_at),
        actor=common_pb2.Actor(subject_id=e.actor.subject, role=e.actor.role, tenant_id=e.actor.tenant),  # type: ignore[arg-type]
        idempotency_key=(e.idempotency_key or "").partition("|")[2] or (e.idempotency_key or ""),
    )


def hold_message(h: holds.Hold) -> settlement_pb2.Hold:
    return settlement_pb2.Hold(
        hold_id=h.hold_id,
        account_id=h.account_id,
        amount=money_message(h.amount_minor, h.currency),
        captured=money_message(h.captured_minor, h.currency),
        state=int(h.state),  # type: ignore[arg-type]
        order_id=h.reference,
        expire_time=to_timestamp(h.expires_at),
        create_time=to_timestamp(h.created_at),
    )


def payment_message(p: payments.PaymentView) -> settlement_pb2.Payment:
    return settlement_pb2.Payment(
        payment_id=p.payment_id,
        account_id=p.account_id,
        amount=money_message(p.amount_minor, p.currency),
        state=int(p.state),  # type: ignore[arg-type]
        provider=p.provider,
        provider_reference=p.provider_reference,
        entry_id=p.entry_id or "",
        create_time=to_timestamp(p.created_at),
    )


def parse_tariff(message: common_pb2.RateModel) -> Tariff:
    elements = []
    for i, e in enumerate(message.elements):
        components = []
        for j, c in enumerate(e.price_components):
            if c.type not in {d.value for d in Dimension}:
                raise InvalidArgument.for_field(f"rate_model.elements[{i}].price_components[{j}].type", "unknown type")
            components.append(
                PriceComponent(Dimension(c.type), c.unit_price_micros, c.vat_basis_points, c.step_size or 1, c.label)
            )
        restrictions = None
        if e.HasField("restrictions"):
            r = e.restrictions
            restrictions = Restrictions(
                start_time=r.start_time,
                end_time=r.end_time,
                start_date=r.start_date,
                end_date=r.end_date,
                min_energy_wh=r.min_energy_wh,
                max_energy_wh=r.max_energy_wh,
                min_power_w=r.min_power_w,
                max_power_w=r.max_power_w,
                min_duration_s=r.min_duration.seconds if r.HasField("min_duration") else None,
                max_duration_s=r.max_duration.seconds if r.HasField("max_duration") else None,
                days_of_week=frozenset(int(d) for d in r.days_of_week),
            )
        elements.append(TariffElement(tuple(components), restrictions))
    return Tariff(
        currency=message.currency,
        elements=tuple(elements),
        time_zone=message.time_zone or DEFAULT_TIME_ZONE,
        min_price_minor=message.min_price.amount_minor if message.HasField("min_price") else None,
        max_price_minor=message.max_price.amount_minor if message.HasField("max_price") else None,
    )


def rate_model_message(v: rates.RateModelView) -> common_pb2.RateModel:
    t = v.tariff
    message = common_pb2.RateModel(
        rate_model_id=v.rate_model_id,
        version=v.version,
        operator_id=v.operator_id,
        name=v.name,
        currency=t.currency,
        valid_from=to_timestamp(v.valid_from),
        valid_to=to_timestamp(v.valid_to),
        time_zone=t.time_zone,
        display_text=v.display_text,
        create_time=to_timestamp(v.created_at),
    )
    if t.min_price_minor is not None:
        message.min_price.CopyFrom(money_message(t.min_price_minor, t.currency))
    if t.max_price_minor is not None:
        message.max_price.CopyFrom(money_message(t.max_price_minor, t.currency))
    for e in t.elements:
        element = message.elements.add()
        for c in e.components:
            element.price_components.add(
                type=int(c.type),
                unit_price_micros=c.unit_price_micros,
                vat_basis_points=c.vat_bp,
                step_size=c.step_size,
                label=c.label,
            )
        r = e.restrictions
        if r is not None:
            element.restrictions.CopyFrom(
                common_pb2.TariffRestrictions(
                    start_time=r.start_time,
                    end_time=r.end_time,
                    start_date=r.start_date,
                    end_date=r.end_date,
                    min_energy_wh=r.min_energy_wh,
                    max_energy_wh=r.max_energy_wh,
                    min_power_w=r.min_power_w,
                    max_power_w=r.max_power_w,
                    days_of_week=sorted(r.days_of_week),  # type: ignore[arg-type]
                )
            )
            if r.min_duration_s is not None:
                element.restrictions.min_duration.seconds = r.min_duration_s
            if r.max_duration_s is not None:
                element.restrictions.max_duration.seconds = r.max_duration_s
    return message


def coupon_message(c: Coupon) -> settlement_pb2.Coupon:
    message = settlement_pb2.Coupon(
        coupon_id=c.id,
        code=c.code,
        percent_off_basis_points=c.percent_off_bp,
        max_redemptions=c.max_redemptions,
        max_redemptions_per_account=c.max_redemptions_per_account,
        redemptions=c.redemptions,
        modes=[int(m) for m in c.modes.split(",") if m],  # type: ignore[misc]
        operator_id=c.operator_id,
        funding_account_id=c.funding_account_id,
    )
    if c.amount_off_minor:
        message.amount_off.CopyFrom(money_message(c.amount_off_minor, c.currency))
    if c.max_discount_minor is not None:
        message.max_discount.CopyFrom(money_message(c.max_discount_minor, c.currency))
    if c.min_order_minor is not None:
        message.min_order_amount.CopyFrom(money_message(c.min_order_minor, c.currency))
    if c.valid_from is not None:
        message.valid.start.CopyFrom(to_timestamp(c.valid_from))
    if c.valid_to is not None:
        message.valid.end.CopyFrom(to_timestamp(c.valid_to))
    return message


def bill_message(v: billing.BillView) -> settlement_pb2.Bill:
    b = v.bill
    return settlement_pb2.Bill(
        bill_id=b.id,
        account_id=b.account_id,
        period=common_pb2.TimeWindow(start=to_timestamp(b.period_start), end=to_timestamp(b.period_end)),
        lines=[
            settlement_pb2.BillLine(
                order_id=line.order_id,
                description=line.description,
                component=line.component,  # type: ignore[arg-type]
                quantity=line.quantity,
                unit_price_micros=line.unit_price_micros,
                amount=money_message(line.amount_minor, b.currency),
                vat=money_message(line.vat_minor, b.currency),
                label=line.label,
            )
            for line in v.lines
        ],
        subtotal=money_message(b.subtotal_minor, b.currency),
        vat=money_message(b.vat_minor, b.currency),
        discount=money_message(b.discount_minor, b.currency),
        total=money_message(b.total_minor, b.currency),
        state=b.state,  # type: ignore[arg-type]
        due_time=to_timestamp(b.due_at),
        issue_time=to_timestamp(b.issued_at),
    )


def payout_message(p: Payout) -> settlement_pb2.Payout:
    return settlement_pb2.Payout(
        payout_id=p.id,
        account_id=p.account_id,
        amount=money_message(p.amount_minor, p.currency),
        period=common_pb2.TimeWindow(start=to_timestamp(p.period_start), end=to_timestamp(p.period_end)),
        state=p.state,  # type: ignore[arg-type]
        provider_reference=p.provider_reference,
        entry_id=p.entry_id,
        create_time=to_timestamp(p.created_at),
    )


def statement_line_message(line: StatementLine) -> settlement_pb2.StatementLine:
    return settlement_pb2.StatementLine(
        line_number=line.line_number,
        provider_reference=line.provider_reference,
        amount=money_message(line.amount_minor, line.currency),
        value_time=to_timestamp(line.value_time),
        description=line.description,
        match_status=line.match_status,  # type: ignore[arg-type]
        payment_id=line.payment_id,
    )


def statement_message(s: Any) -> settlement_pb2.Statement:
    message = settlement_pb2.Statement(
        statement_id=s.id,
        provider=s.provider,
        line_count=s.line_count,
        import_time=to_timestamp(s.imported_at),
        reconciled=s.reconciled,
    )
    if s.period_start is not None or s.period_end is not None:
        message.period.CopyFrom(
            common_pb2.TimeWindow(start=to_timestamp(s.period_start), end=to_timestamp(s.period_end))
        )
    return message


def parse_window(message: Any, name: str) -> tuple[dt.datetime | None, dt.datetime | None]:
    if not message.HasField(name):
        return None, None
    window = getattr(message, name)
    return optional_datetime(window, "start", f"{name}.start"), optional_datetime(window, "end", f"{name}.end")


def coupon_spec(c: settlement_pb2.Coupon) -> coupons.CouponSpec:
    """The coupon as asked for; who issues and funds it is decided by `coupons.issuer`."""
    currency = (
        (c.amount_off.currency if c.HasField("amount_off") else "")
        or (c.max_discount.currency if c.HasField("max_discount") else "")
        or DEFAULT_CURRENCY
    )
    valid_from, valid_to = parse_window(c, "valid")
    return coupons.CouponSpec(
        code=c.code,
        currency=currency,
        amount_off_minor=c.amount_off.amount_minor if c.HasField("amount_off") else 0,
        percent_off_bp=c.percent_off_basis_points,
        max_discount_minor=c.max_discount.amount_minor if c.HasField("max_discount") else None,
        min_order_minor=c.min_order_amount.amount_minor if c.HasField("min_order_amount") else None,
        valid_from=valid_from,
        valid_to=valid_to,
        max_redemptions=c.max_redemptions,
        max_redemptions_per_account=c.max_redemptions_per_account,
        modes=tuple(int(m) for m in c.modes),
        operator_id=c.operator_id,
        funding_account_id=c.funding_account_id,
    )


def flow_message(f: trace.Flow) -> settlement_pb2.FundsFlow:
    return settlement_pb2.FundsFlow(
        entry_id=f.entry_id,
        kind=int(f.kind),  # type: ignore[arg-type]
        from_account_id=f.from_account_id,
        to_account_id=f.to_account_id,
        amount=money_message(f.amount_minor, f.currency),
        post_time=to_timestamp(f.posted_at),
        order_id=f.order_id,
        payment_id=f.payment_id,
    )


def price_estimate_response(quote: rates.PriceQuote, discount_minor: int) -> settlement_pb2.PriceEstimateResponse:
    cur = quote.currency
    return settlement_pb2.PriceEstimateResponse(
        total=money_message(quote.amount_minor - discount_minor, cur),
        lines=[
            settlement_pb2.BillLine(
                description=line.description,
                component=int(line.component),  # type: ignore[arg-type]
                quantity=line.quantity,
                unit_price_micros=line.unit_price_micros,
                amount=money_message(line.amount_minor, cur),
                vat=money_message(line.vat_minor, cur),
                label=line.label,
            )
            for line in quote.lines
        ],
        discount=money_message(discount_minor, cur),
        rate_model_id=quote.rate_model_id,
        rate_model_version=quote.rate_model_version,
    )


def abnormal_response(report: abnormal.AbnormalReport) -> settlement_pb2.DetectAbnormalOrderResponse:
    cur = report.currency
    return settlement_pb2.DetectAbnormalOrderResponse(
        flags=[int(f) for f in report.flags],  # type: ignore[misc]
        charged=money_message(report.charged_minor, cur),
        expected=money_message(report.expected_minor, cur),
        fair=money_message(report.fair_minor, cur),
        details=list(report.details),
        related_order_ids=list(report.related_order_ids),
    )


def session_facts(request: settlement_pb2.DetectAbnormalOrderRequest) -> abnormal.SessionFacts:
    """The session to inspect, as reported; the customer is filled in from the paying account by the domain."""
    start, end = optional_datetime(request, "start_time"), optional_datetime(request, "end_time")
    if start is None:
        raise InvalidArgument.for_field("start_time", "is required")
    if end is None:
        raise InvalidArgument.for_field("end_time", "is required")
    amount, currency = parse_amount(request, "amount", allow_zero=True)
    return abnormal.SessionFacts(
        order_id=request.order_id,
        station_id=request.station_id,
        started_at=start,
        ended_at=end,
        energy_wh=request.energy_wh,
        amount_minor=amount,
        currency=currency,
        max_power_w=request.max_power_w,
        capacity_wh=request.capacity_wh,
        rate_model_id=request.rate_model_id,
        rate_model_version=request.rate_model_version,
        vehicle_id=request.vehicle_id,
        connector_id=request.connector_id,
        external_session_id=request.external_session_id,
        parking_s=request.parking_duration.seconds,
        discount_minor=request.discount.amount_minor if request.HasField("discount") else 0,
    )
