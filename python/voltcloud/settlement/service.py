"""SettlementService servicer: parses requests, checks who may touch which account, calls the settlement
modules and builds responses. No money rules here."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.api.v1 import common_pb2, settlement_pb2, settlement_pb2_grpc
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.clock import Clock, SystemClock
from voltcloud.platform.db import Database
from voltcloud.platform.errors import Aborted, InvalidArgument, NotFound, PermissionDenied
from voltcloud.platform.limits import optional_datetime, to_timedelta, to_timestamp
from voltcloud.platform.paging import next_page_token, parse_page
from voltcloud.platform.rpc import current_principal
from voltcloud.settlement import (
    abnormal,
    accounts,
    billing,
    coupons,
    holds,
    ledger,
    payments,
    payouts,
    rates,
    reconciliation,
    trace,
)
from voltcloud.settlement.models import Coupon, Payout, StatementLine
from voltcloud.settlement.money import AccountKind, check_amount, check_currency
from voltcloud.settlement.providers import DEFAULT_PROVIDERS, ProviderRegistry
from voltcloud.settlement.sql import is_lost_race
from voltcloud.settlement.tariff import Dimension, PriceComponent, Restrictions, Tariff, TariffElement
from voltcloud.stations.api import Station  # read-only: which operator runs a station

DEFAULT_HOLD_TTL = dt.timedelta(minutes=30)


# --- conversions ---------------------------------------------------------------------------------------------


def _money(amount: int, currency: str) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency=currency)


def _amount(message: Any, name: str, *, allow_zero: bool = False) -> tuple[int, str]:
    if not message.HasField(name):
        raise InvalidArgument.for_field(name, "is required")
    money = getattr(message, name)
    check_amount(name, money.amount_minor, allow_zero=allow_zero)
    check_currency(f"{name}.currency", money.currency)
    return int(money.amount_minor), str(money.currency)


def _actor(principal: Principal) -> ledger.Actor:
    return ledger.Actor(principal.subject, int(principal.role), str(principal.tenant or ""))


def _key(principal: Principal, key: str) -> str:
    """Client keys are scoped to the caller, so two callers never collide."""
    if not key:
        raise InvalidArgument.for_field("idempotency_key", "is required for money operations")
    return f"{principal.subject}|{key}"


def _account_message(v: accounts.AccountView) -> settlement_pb2.Account:
    return settlement_pb2.Account(
        account_id=v.id,
        kind=int(v.kind),  # type: ignore[arg-type]
        owner_id=v.owner_id,
        name=v.name,
        currency=v.currency,
        balance=_money(v.balance_minor, v.currency),
        held=_money(v.held_minor, v.currency),
        available=_money(v.available_minor, v.currency),
        credit_limit=_money(v.credit_limit_minor, v.currency),
        frozen=v.frozen,
        version=v.version,
        create_time=to_timestamp(v.created_at),
    )


def _entry_message(e: ledger.JournalEntryRef) -> settlement_pb2.JournalEntry:
    return settlement_pb2.JournalEntry(
        entry_id=e.entry_id,
        kind=int(e.kind),  # type: ignore[arg-type]
        postings=[
            settlement_pb2.Posting(account_id=p.account_id, amount=_money(p.amount_minor, p.currency), memo=p.memo)
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


def _hold_message(h: holds.Hold) -> settlement_pb2.Hold:
    return settlement_pb2.Hold(
        hold_id=h.hold_id,
        account_id=h.account_id,
        amount=_money(h.amount_minor, h.currency),
        captured=_money(h.captured_minor, h.currency),
        state=int(h.state),  # type: ignore[arg-type]
        order_id=h.reference,
        expire_time=to_timestamp(h.expires_at),
        create_time=to_timestamp(h.created_at),
    )


def _payment_message(p: payments.PaymentView) -> settlement_pb2.Payment:
    return settlement_pb2.Payment(
        payment_id=p.payment_id,
        account_id=p.account_id,
        amount=_money(p.amount_minor, p.currency),
        state=int(p.state),  # type: ignore[arg-type]
        provider=p.provider,
        provider_reference=p.provider_reference,
        entry_id=p.entry_id or "",
        create_time=to_timestamp(p.created_at),
    )


def _tariff(message: common_pb2.RateModel) -> Tariff:
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
        time_zone=message.time_zone or "Asia/Shanghai",
        min_price_minor=message.min_price.amount_minor if message.HasField("min_price") else None,
        max_price_minor=message.max_price.amount_minor if message.HasField("max_price") else None,
    )


def _rate_model_message(v: rates.RateModelView) -> common_pb2.RateModel:
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
        message.min_price.CopyFrom(_money(t.min_price_minor, t.currency))
    if t.max_price_minor is not None:
        message.max_price.CopyFrom(_money(t.max_price_minor, t.currency))
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


def _coupon_message(c: Coupon) -> settlement_pb2.Coupon:
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
        message.amount_off.CopyFrom(_money(c.amount_off_minor, c.currency))
    if c.max_discount_minor is not None:
        message.max_discount.CopyFrom(_money(c.max_discount_minor, c.currency))
    if c.min_order_minor is not None:
        message.min_order_amount.CopyFrom(_money(c.min_order_minor, c.currency))
    if c.valid_from is not None:
        message.valid.start.CopyFrom(to_timestamp(c.valid_from))
    if c.valid_to is not None:
        message.valid.end.CopyFrom(to_timestamp(c.valid_to))
    return message


def _bill_message(v: billing.BillView) -> settlement_pb2.Bill:
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
                amount=_money(line.amount_minor, b.currency),
                vat=_money(line.vat_minor, b.currency),
                label=line.label,
            )
            for line in v.lines
        ],
        subtotal=_money(b.subtotal_minor, b.currency),
        vat=_money(b.vat_minor, b.currency),
        discount=_money(b.discount_minor, b.currency),
        total=_money(b.total_minor, b.currency),
        state=b.state,  # type: ignore[arg-type]
        due_time=to_timestamp(b.due_at),
        issue_time=to_timestamp(b.issued_at),
    )


def _payout_message(p: Payout) -> settlement_pb2.Payout:
    return settlement_pb2.Payout(
        payout_id=p.id,
        account_id=p.account_id,
        amount=_money(p.amount_minor, p.currency),
        period=common_pb2.TimeWindow(start=to_timestamp(p.period_start), end=to_timestamp(p.period_end)),
        state=p.state,  # type: ignore[arg-type]
        provider_reference=p.provider_reference,
        entry_id=p.entry_id,
        create_time=to_timestamp(p.created_at),
    )


def _statement_line_message(line: StatementLine) -> settlement_pb2.StatementLine:
    return settlement_pb2.StatementLine(
        line_number=line.line_number,
        provider_reference=line.provider_reference,
        amount=_money(line.amount_minor, line.currency),
        value_time=to_timestamp(line.value_time),
        description=line.description,
        match_status=line.match_status,  # type: ignore[arg-type]
        payment_id=line.payment_id,
    )


def _statement_message(s: Any) -> settlement_pb2.Statement:
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


def _window(message: Any, name: str) -> tuple[dt.datetime | None, dt.datetime | None]:
    if not message.HasField(name):
        return None, None
    window = getattr(message, name)
    return optional_datetime(window, "start", f"{name}.start"), optional_datetime(window, "end", f"{name}.end")


# --- the servicer --------------------------------------------------------------------------------------------


class SettlementServicer(settlement_pb2_grpc.SettlementServiceServicer):
    def __init__(
        self, db: Database, clock: Clock | None = None, providers: ProviderRegistry = DEFAULT_PROVIDERS
    ) -> None:
        self._db = db
        self._clock: Clock = clock or SystemClock()
        self._providers = providers

    @asynccontextmanager
    async def _tx(self, name: str) -> AsyncIterator[AsyncSession]:
        """A transaction whose lost races (deadlock, serialization failure, SQLite busy) answer ABORTED."""
        try:
            async with self._db.transaction(f"settlement.{name}") as session:
                yield session
        except sa.exc.DBAPIError as exc:
            if is_lost_race(exc):
                raise Aborted(f"{name}: a concurrent request won; retry") from exc
            raise

    # accounts -------------------------------------------------------------------------------------------------

    async def CreateAccount(
        self, request: settlement_pb2.CreateAccountRequest, context: Any
    ) -> settlement_pb2.CreateAccountResponse:
        principal = current_principal()
        check_currency("currency", request.currency or "CNY")
        try:
            kind = AccountKind(request.kind)
        except ValueError:
            raise InvalidArgument.for_field("kind", f"unknown account kind {request.kind}") from None
        tenant_id = principal.tenant.id if principal.tenant else ""
        owner_id = request.owner_id or tenant_id
        tenant: str | None = None
        if kind is AccountKind.CUSTOMER:
            owner_kind = "driver"
        elif kind is AccountKind.FLEET:
            owner_kind = "fleet" if principal.is_admin or owner_id == tenant_id else "subfleet"
            tenant = f"fleet:{tenant_id}" if owner_kind == "subfleet" else None
        elif kind is AccountKind.OPERATOR:
            owner_kind = "operator"
        elif kind is AccountKind.SPECIALIST:
            owner_kind = "specialist"
            tenant = f"operator:{tenant_id}" if tenant_id else ""
        elif kind is AccountKind.PROVIDER_CLEARING:
            owner_kind = "provider"
        elif kind in (AccountKind.PLATFORM_REVENUE, AccountKind.PROMOTIONS):
            owner_kind, owner_id = "platform", owner_id or "platform"
        else:
            raise InvalidArgument.for_field("kind", f"{kind.name.lower()} accounts are created by the ledger itself")
        allowed = principal.is_admin or (
            (principal.role is Role.OPERATOR and kind in (AccountKind.OPERATOR, AccountKind.SPECIALIST))
            or (principal.role is Role.FLEET_MANAGER and kind is AccountKind.FLEET)
        )
        if not allowed:
            raise PermissionDenied(f"{principal.subject} may not create a {kind.name.lower()} account for {owner_id}")
        credit = 0
        if request.HasField("credit_limit"):
            if not principal.is_admin:
                raise PermissionDenied("only the platform admin sets credit limits")
            credit, _ = _amount(request, "credit_limit", allow_zero=True)
        async with self._tx("create_account") as session:
            if not await accounts.may_create_for(session, principal, owner_kind, owner_id):
                raise PermissionDenied(
                    f"{principal.subject} may not create a {kind.name.lower()} account for {owner_kind} {owner_id}"
                )
            account = await accounts.ensure_account(
                session,
                kind=kind,
                owner_kind=owner_kind,
                owner_id=owner_id,
                currency=request.currency or "CNY",
                now=self._clock.now(),
                name=request.name,
                tenant=tenant,
                credit_limit_minor=credit,
            )
            view = await accounts.view(session, account)
        return settlement_pb2.CreateAccountResponse(account=_account_message(view))

    async def GetAccount(
        self, request: settlement_pb2.GetAccountRequest, context: Any
    ) -> settlement_pb2.GetAccountResponse:
        async with self._tx("get_account") as session:
            account = await accounts.visible(session, current_principal(), request.account_id)
            view = await accounts.view(session, account)
        return settlement_pb2.GetAccountResponse(account=_account_message(view))

    async def ListAccounts(
        self, request: settlement_pb2.ListAccountsRequest, context: Any
    ) -> settlement_pb2.ListAccountsResponse:
        page = parse_page(request.page_size, request.page_token)
        async with self._tx("list_accounts") as session:
            rows = await accounts.list_accounts(
                session,
                current_principal(),
                owner_id=request.owner_id or None,
                kinds=list(request.kinds),
                currency=request.currency or None,
                page=page,
            )
            views = [await accounts.view(session, a) for a in rows]
        return settlement_pb2.ListAccountsResponse(
            accounts=[_account_message(v) for v in views],
            next_page_token=next_page_token(rows[-1].id if rows else None, len(rows), page),
        )

    # money in and out -----------------------------------------------------------------------------------------

    async def TopUp(self, request: settlement_pb2.TopUpRequest, context: Any) -> settlement_pb2.TopUpResponse:
        principal = current_principal()
        amount, currency = _amount(request, "amount")
        key = _key(principal, request.idempotency_key)
        async with self._tx("top_up") as session:
            await accounts.visible(session, principal, request.account_id)
            payment = await payments.top_up(
                session,
                account_id=request.account_id,
                amount_minor=amount,
                currency=currency,
                provider=request.provider,
                provider_token=request.provider_token,
                idempotency_key=key,
                clock=self._clock,
                actor=_actor(principal),
                providers=self._providers,
            )
            view = await accounts.view(session, await accounts.load(session, request.account_id))
        return settlement_pb2.TopUpResponse(payment=_payment_message(payment), account=_account_message(view))

    async def Withdraw(self, request: settlement_pb2.WithdrawRequest, context: Any) -> settlement_pb2.WithdrawResponse:
        principal = current_principal()
        amount, currency = _amount(request, "amount")
        key = _key(principal, request.idempotency_key)
        async with self._tx("withdraw") as session:
            # Withdrawing spends the account: seeing it (an operator sees its specialists' accounts) is not enough.
            account = await accounts.visible(session, principal, request.account_id)
            own = accounts.own_payable(principal, account)
            if not own and not await accounts.may_spend(session, principal, account):
                raise PermissionDenied(f"{principal.subject} may not withdraw from account {request.account_id}")
            payment = await payments.withdraw(
                session,
                account_id=request.account_id,
                amount_minor=amount,
                currency=currency,
                provider=request.provider,
                destination=request.destination,
                idempotency_key=key,
                clock=self._clock,
                actor=_actor(principal),
                providers=self._providers,
            )
            view = await accounts.view(session, await accounts.load(session, request.account_id))
        return settlement_pb2.WithdrawResponse(payment=_payment_message(payment), account=_account_message(view))

    async def Refund(self, request: settlement_pb2.RefundRequest, context: Any) -> settlement_pb2.RefundResponse:
        principal = current_principal()
        amount = _amount(request, "amount")[0] if request.HasField("amount") else None
        key = _key(principal, request.idempotency_key)
        async with self._tx("refund") as session:
            if not principal.is_admin:
                if request.payment_id:
                    raise PermissionDenied("only the platform admin refunds payments to their payment method")
                if str(principal.tenant) not in await payments.order_tenants(session, request.order_id):
                    raise NotFound(f"no settled payment for order {request.order_id}")
            result = await payments.refund(
                session,
                order_id=request.order_id,
                payment_id=request.payment_id,
                amount_minor=amount,
                reason=request.reason,
                idempotency_key=key,
                clock=self._clock,
                actor=_actor(principal),
                providers=self._providers,
            )
        return settlement_pb2.RefundResponse(
            refund_id=result.refund_id,
            entry=_entry_message(result.entry),
            amount=_money(result.amount_minor, result.currency),
        )

    # holds ----------------------------------------------------------------------------------------------------

    async def PlaceHold(
        self, request: settlement_pb2.PlaceHoldRequest, context: Any
    ) -> settlement_pb2.PlaceHoldResponse:
        principal = current_principal()
        amount, currency = _amount(request, "amount")
        ttl = to_timedelta(request.ttl, "ttl") if request.HasField("ttl") else DEFAULT_HOLD_TTL
        if ttl <= dt.timedelta(0):
            raise InvalidArgument.for_field("ttl", "must be positive")
        key = _key(principal, request.idempotency_key)
        async with self._tx("place_hold") as session:
            hold = await holds.place_hold(
                session,
                account_id=request.account_id,
                amount_minor=amount,
                currency=currency,
                reference=request.order_id,
                idempotency_key=key,
                expires_at=self._clock.now() + ttl,
                clock=self._clock,
            )
        return settlement_pb2.PlaceHoldResponse(hold=_hold_message(hold))

    async def CaptureHold(
        self, request: settlement_pb2.CaptureHoldRequest, context: Any
    ) -> settlement_pb2.CaptureHoldResponse:
        principal = current_principal()
        amount, _ = _amount(request, "amount", allow_zero=True)
        if not 0 <= request.platform_fee_basis_points <= 10_000:
            raise InvalidArgument.for_field("platform_fee_basis_points", "must be within [0, 10000]")
        key = _key(principal, request.idempotency_key)
        async with self._tx("capture_hold") as session:
            operator = await accounts.load(session, request.operator_account_id, field="operator_account_id")
            if operator.kind != AccountKind.OPERATOR:
                raise InvalidArgument.for_field("operator_account_id", "is not an operator account")
            breakdown = None
            if request.platform_fee_basis_points:
                from voltcloud.settlement.money import round_half_up

                fee = round_half_up(amount * request.platform_fee_basis_points, 10_000)
                breakdown = {holds.PLATFORM_FEE_KEY: fee, "order revenue": amount - fee}
            entry = await holds.capture_hold(
                session,
                hold_id=request.hold_id,
                amount_minor=amount,
                operator_id=operator.owner_id,
                breakdown=breakdown,
                idempotency_key=key,
                clock=self._clock,
                actor=_actor(principal),
                description=request.description,
            )
            hold = holds.hold_view(await holds.get_hold(session, request.hold_id))
        return settlement_pb2.CaptureHoldResponse(hold=_hold_message(hold), entry=_entry_message(entry))

    async def ReleaseHold(
        self, request: settlement_pb2.ReleaseHoldRequest, context: Any
    ) -> settlement_pb2.ReleaseHoldResponse:
        async with self._tx("release_hold") as session:
            await holds.release_hold(session, hold_id=request.hold_id, reason=request.reason, clock=self._clock)
            hold = holds.hold_view(await holds.get_hold(session, request.hold_id))
        return settlement_pb2.ReleaseHoldResponse(hold=_hold_message(hold))

    # journal --------------------------------------------------------------------------------------------------

    async def GetJournalEntry(
        self, request: settlement_pb2.GetJournalEntryRequest, context: Any
    ) -> settlement_pb2.GetJournalEntryResponse:
        if not request.entry_id:
            raise InvalidArgument.for_field("entry_id", "is required")
        async with self._tx("get_journal_entry") as session:
            entry = await ledger.load_entry(session, request.entry_id)
            visible = await accounts.tenant_account_ids(session, current_principal())
            if visible is not None and not {p.account_id for p in entry.postings} & set(visible):
                raise NotFound(f"journal entry {request.entry_id} not found")
        return settlement_pb2.GetJournalEntryResponse(entry=_entry_message(entry))

    async def ListJournalEntries(
        self, request: settlement_pb2.ListJournalEntriesRequest, context: Any
    ) -> settlement_pb2.ListJournalEntriesResponse:
        page = parse_page(request.page_size, request.page_token)
        principal = current_principal()
        async with self._tx("list_journal_entries") as session:
            if request.account_id:
                await accounts.visible(session, principal, request.account_id)
                scope: list[str] | None = [request.account_id]
            else:
                scope = await accounts.tenant_account_ids(session, principal)
            entries = await ledger.list_entries(
                session,
                account_ids=scope,
                order_id=request.order_id or None,
                kinds=list(request.kinds),
                posted_from=optional_datetime(request, "post_time_from"),
                posted_to=optional_datetime(request, "post_time_to"),
                limit=page.size,
                after=page.after,
            )
        return settlement_pb2.ListJournalEntriesResponse(
            entries=[_entry_message(e) for e in entries],
            next_page_token=next_page_token(entries[-1].entry_id if entries else None, len(entries), page),
        )

    # rate models, pricing, coupons ----------------------------------------------------------------------------

    async def CreateRateModel(
        self, request: settlement_pb2.CreateRateModelRequest, context: Any
    ) -> settlement_pb2.CreateRateModelResponse:
        principal = current_principal()
        if not request.HasField("rate_model"):
            raise InvalidArgument.for_field("rate_model", "is required")
        model = request.rate_model
        operator_id = model.operator_id
        if not principal.is_admin:
            own = principal.tenant.id if principal.tenant else ""
            if operator_id and operator_id != own:
                raise PermissionDenied(f"{principal.subject} may not price for operator {operator_id}")
            operator_id = own
            if request.platform_default:
                raise PermissionDenied("only the platform admin sets the platform default")
        spec = rates.RateModelSpec(
            rate_model_id=model.rate_model_id,
            operator_id=operator_id,
            name=model.name,
            tariff=_tariff(model),
            valid_from=optional_datetime(model, "valid_from", "rate_model.valid_from"),
            valid_to=optional_datetime(model, "valid_to", "rate_model.valid_to"),
            display_text=model.display_text,
        )
        async with self._tx("create_rate_model") as session:
            view = await rates.create_rate_model(
                session,
                spec,
                idempotency_key=_key(principal, request.idempotency_key),
                operator_default=request.operator_default,
                platform_default=request.platform_default,
                clock=self._clock,
            )
        return settlement_pb2.CreateRateModelResponse(rate_model=_rate_model_message(view))

    async def ListRateModels(
        self, request: settlement_pb2.ListRateModelsRequest, context: Any
    ) -> settlement_pb2.ListRateModelsResponse:
        principal = current_principal()
        page = parse_page(request.page_size, request.page_token)
        operator_ids: list[str] | None = [request.operator_id] if request.operator_id else None
        if principal.role is Role.OPERATOR:
            own = principal.tenant.id if principal.tenant else ""
            operator_ids = [own] if request.operator_id == own else [own, ""]
            if request.operator_id and request.operator_id != own:
                operator_ids = []
        async with self._tx("list_rate_models") as session:
            views = await rates.list_rate_models(
                session,
                operator_ids=operator_ids,
                rate_model_id=request.rate_model_id or None,
                in_force_at=optional_datetime(request, "in_force_at"),
                page=page,
            )
        last = f"{views[-1].rate_model_id}@{views[-1].version}" if views else None
        return settlement_pb2.ListRateModelsResponse(
            rate_models=[_rate_model_message(v) for v in views],
            next_page_token=next_page_token(last, len(views), page),
        )

    async def PriceEstimate(
        self, request: settlement_pb2.PriceEstimateRequest, context: Any
    ) -> settlement_pb2.PriceEstimateResponse:
        principal = current_principal()
        start = optional_datetime(request, "start_time") or self._clock.now()
        async with self._tx("price_estimate") as session:
            customer_kind = customer_id = ""
            if request.account_id:
                account = await accounts.visible(session, principal, request.account_id)
                customer_kind, customer_id = account.owner_kind, account.owner_id
            quote = await rates.price_estimate(
                session,
                station_id=request.station_id,
                customer_kind=customer_kind,
                customer_id=customer_id,
                start=start,
                energy_wh=request.energy_wh,
                duration_s=request.duration.seconds,
                parking_s=request.parking_duration.seconds,
                power_w=request.power_w,
            )
            discount = 0
            if request.coupon_code:
                coupon = await coupons.find(session, request.coupon_code)
                discount = coupons.discount_for(
                    coupon, amount_minor=quote.amount_minor, at=start, mode=request.mode, currency=quote.currency
                )
        cur = quote.currency
        return settlement_pb2.PriceEstimateResponse(
            total=_money(quote.amount_minor - discount, cur),
            lines=[
                settlement_pb2.BillLine(
                    description=line.description,
                    component=int(line.component),  # type: ignore[arg-type]
                    quantity=line.quantity,
                    unit_price_micros=line.unit_price_micros,
                    amount=_money(line.amount_minor, cur),
                    vat=_money(line.vat_minor, cur),
                    label=line.label,
                )
                for line in quote.lines
            ],
            discount=_money(discount, cur),
            rate_model_id=quote.rate_model_id,
            rate_model_version=quote.rate_model_version,
        )

    async def CreateCoupon(
        self, request: settlement_pb2.CreateCouponRequest, context: Any
    ) -> settlement_pb2.CreateCouponResponse:
        principal = current_principal()
        c = request.coupon
        operator_id = c.operator_id
        amount_off = c.amount_off.amount_minor if c.HasField("amount_off") else 0
        currency = (
            (c.amount_off.currency if c.HasField("amount_off") else "")
            or (c.max_discount.currency if c.HasField("max_discount") else "")
            or "CNY"
        )
        async with self._tx("create_coupon") as session:
            funding = c.funding_account_id
            if not principal.is_admin:
                own = principal.tenant.id if principal.tenant else ""
                if operator_id and operator_id != own:
                    raise PermissionDenied(f"{principal.subject} may not issue coupons for operator {operator_id}")
                operator_id = own
                # Operators fund their own coupons from their payable account, never from a specialist's.
                if funding:
                    account = await accounts.visible(session, principal, funding, field="coupon.funding_account_id")
                    if not accounts.own_payable(principal, account):
                        raise PermissionDenied(f"coupons of {own} are funded from {own}'s operator account only")
                else:
                    funding = (await accounts.operator_payable(session, own, currency, self._clock.now())).id
            window = _window(c, "valid")
            spec = coupons.CouponSpec(
                code=c.code,
                currency=currency,
                amount_off_minor=amount_off,
                percent_off_bp=c.percent_off_basis_points,
                max_discount_minor=c.max_discount.amount_minor if c.HasField("max_discount") else None,
                min_order_minor=c.min_order_amount.amount_minor if c.HasField("min_order_amount") else None,
                valid_from=window[0],
                valid_to=window[1],
                max_redemptions=c.max_redemptions,
                max_redemptions_per_account=c.max_redemptions_per_account,
                modes=tuple(int(m) for m in c.modes),
                operator_id=operator_id,
                funding_account_id=funding,
            )
            row = await coupons.create_coupon(
                session, spec, idempotency_key=_key(principal, request.idempotency_key), clock=self._clock
            )
        return settlement_pb2.CreateCouponResponse(coupon=_coupon_message(row))

    # bills, payouts, reconciliation, tracing ------------------------------------------------------------------

    async def GenerateBill(
        self, request: settlement_pb2.GenerateBillRequest, context: Any
    ) -> settlement_pb2.GenerateBillResponse:
        principal = current_principal()
        start, end = _window(request, "period")
        async with self._tx("generate_bill") as session:
            await accounts.visible(session, principal, request.account_id)
            view = await billing.generate_bill(
                session,
                account_id=request.account_id,
                period_start=start,
                period_end=end,
                order_id=request.order_id,
                idempotency_key=_key(principal, request.idempotency_key),
                clock=self._clock,
            )
        return settlement_pb2.GenerateBillResponse(bill=_bill_message(view))

    async def GetBill(self, request: settlement_pb2.GetBillRequest, context: Any) -> settlement_pb2.GetBillResponse:
        if not request.bill_id:
            raise InvalidArgument.for_field("bill_id", "is required")
        async with self._tx("get_bill") as session:
            view = await billing.get_bill(session, request.bill_id)
            account = await accounts.load(session, view.bill.account_id)
            if not accounts.can_see(current_principal(), account):
                raise NotFound(f"bill {request.bill_id} not found")
        return settlement_pb2.GetBillResponse(bill=_bill_message(view))

    async def ListBills(
        self, request: settlement_pb2.ListBillsRequest, context: Any
    ) -> settlement_pb2.ListBillsResponse:
        principal = current_principal()
        page = parse_page(request.page_size, request.page_token)
        async with self._tx("list_bills") as session:
            if request.account_id:
                await accounts.visible(session, principal, request.account_id)
                scope: list[str] | None = [request.account_id]
            else:
                scope = await accounts.tenant_account_ids(session, principal)
            views = await billing.list_bills(
                session,
                account_ids=scope,
                states=list(request.states),
                issued_from=optional_datetime(request, "issue_time_from"),
                issued_to=optional_datetime(request, "issue_time_to"),
                page=page,
            )
        return settlement_pb2.ListBillsResponse(
            bills=[_bill_message(v) for v in views],
            next_page_token=next_page_token(views[-1].bill.id if views else None, len(views), page),
        )

    async def ImportStatement(
        self, request: settlement_pb2.ImportStatementRequest, context: Any
    ) -> settlement_pb2.ImportStatementResponse:
        principal = current_principal()
        start, end = _window(request, "period")
        async with self._tx("import_statement") as session:
            imported = await reconciliation.import_statement(
                session,
                provider=request.provider,
                csv_bytes=request.csv,
                period_start=start,
                period_end=end,
                idempotency_key=_key(principal, request.idempotency_key),
                clock=self._clock,
            )
        return settlement_pb2.ImportStatementResponse(
            statement=_statement_message(imported.statement), errors=imported.errors
        )

    async def ReconcileStatement(
        self, request: settlement_pb2.ReconcileStatementRequest, context: Any
    ) -> settlement_pb2.ReconcileStatementResponse:
        if not request.statement_id:
            raise InvalidArgument.for_field("statement_id", "is required")
        async with self._tx("reconcile_statement") as session:
            result = await reconciliation.reconcile(session, statement_id=request.statement_id)
        return settlement_pb2.ReconcileStatementResponse(
            statement=_statement_message(result.statement),
            lines=[_statement_line_message(line) for line in result.lines],
            matched=result.matched,
            unmatched=result.unmatched,
        )

    async def ListPayouts(
        self, request: settlement_pb2.ListPayoutsRequest, context: Any
    ) -> settlement_pb2.ListPayoutsResponse:
        principal = current_principal()
        page = parse_page(request.page_size, request.page_token)
        async with self._tx("list_payouts") as session:
            if request.account_id:
                await accounts.visible(session, principal, request.account_id)
                scope: list[str] | None = [request.account_id]
            else:
                scope = await accounts.tenant_account_ids(session, principal)
            rows = await payouts.list_payouts(
                session,
                account_ids=scope,
                states=list(request.states),
                created_from=optional_datetime(request, "create_time_from"),
                created_to=optional_datetime(request, "create_time_to"),
                page=page,
            )
        return settlement_pb2.ListPayoutsResponse(
            payouts=[_payout_message(p) for p in rows],
            next_page_token=next_page_token(rows[-1].id if rows else None, len(rows), page),
        )

    async def RunPayouts(
        self, request: settlement_pb2.RunPayoutsRequest, context: Any
    ) -> settlement_pb2.RunPayoutsResponse:
        principal = current_principal()
        async with self._tx("run_payouts") as session:
            rows = await payouts.run_payouts(
                session,
                idempotency_key=_key(principal, request.idempotency_key),
                provider=request.provider or "simulated",
                account_id=request.account_id,
                clock=self._clock,
                actor=_actor(principal),
                providers=self._providers,
            )
        return settlement_pb2.RunPayoutsResponse(payouts=[_payout_message(p) for p in rows])

    async def TraceFunds(
        self, request: settlement_pb2.TraceFundsRequest, context: Any
    ) -> settlement_pb2.TraceFundsResponse:
        page = parse_page(request.page_size, request.page_token)
        subject = request.WhichOneof("subject")
        async with self._tx("trace_funds") as session:
            flows, last, returned = await trace.trace(
                session,
                order_id=request.order_id if subject == "order_id" else "",
                payment_id=request.payment_id if subject == "payment_id" else "",
                account_id=request.account_id if subject == "account_id" else "",
                window=_window(request, "window"),
                page=page,
            )
        return settlement_pb2.TraceFundsResponse(
            flows=[
                settlement_pb2.FundsFlow(
                    entry_id=f.entry_id,
                    kind=int(f.kind),  # type: ignore[arg-type]
                    from_account_id=f.from_account_id,
                    to_account_id=f.to_account_id,
                    amount=_money(f.amount_minor, f.currency),
                    post_time=to_timestamp(f.posted_at),
                    order_id=f.order_id,
                    payment_id=f.payment_id,
                )
                for f in flows
            ],
            next_page_token=next_page_token(last, returned, page),
        )

    # abnormal orders, offline payments ---------------------------------------------------------------------

    async def DetectAbnormalOrder(
        self, request: settlement_pb2.DetectAbnormalOrderRequest, context: Any
    ) -> settlement_pb2.DetectAbnormalOrderResponse:
        principal = current_principal()
        start, end = optional_datetime(request, "start_time"), optional_datetime(request, "end_time")
        if start is None:
            raise InvalidArgument.for_field("start_time", "is required")
        if end is None:
            raise InvalidArgument.for_field("end_time", "is required")
        amount, currency = _amount(request, "amount", allow_zero=True)
        discount = request.discount.amount_minor if request.HasField("discount") else 0
        async with self._tx("detect_abnormal_order") as session:
            station = await session.get(Station, request.station_id) if request.station_id else None
            own = principal.tenant.id if principal.tenant else ""
            if station is not None and not principal.is_admin and station.operator_id != own:
                raise NotFound(f"station {request.station_id} not found")
            customer_kind = customer_id = ""
            if request.account_id:
                account = await accounts.load(session, request.account_id)
                customer_kind, customer_id = account.owner_kind, account.owner_id
            report = await abnormal.detect_abnormal(
                session,
                abnormal.SessionFacts(
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
                    customer_kind=customer_kind,
                    customer_id=customer_id,
                    vehicle_id=request.vehicle_id,
                    connector_id=request.connector_id,
                    external_session_id=request.external_session_id,
                    parking_s=request.parking_duration.seconds,
                    discount_minor=discount,
                ),
                clock=self._clock,
            )
        cur = report.currency
        return settlement_pb2.DetectAbnormalOrderResponse(
            flags=[int(f) for f in report.flags],  # type: ignore[misc]
            charged=_money(report.charged_minor, cur),
            expected=_money(report.expected_minor, cur),
            fair=_money(report.fair_minor, cur),
            details=list(report.details),
            related_order_ids=list(report.related_order_ids),
        )

    async def RefundOrderDifference(
        self, request: settlement_pb2.RefundOrderDifferenceRequest, context: Any
    ) -> settlement_pb2.RefundOrderDifferenceResponse:
        principal = current_principal()
        key = _key(principal, request.idempotency_key)
        async with self._tx("refund_order_difference") as session:
            if not principal.is_admin and str(principal.tenant) not in await payments.order_tenants(
                session, request.order_id
            ):
                raise NotFound(f"no settled payment for order {request.order_id}")
            result = await abnormal.refund_difference(
                session,
                order_id=request.order_id,
                idempotency_key=key,
                reason=request.reason,
                clock=self._clock,
                actor=_actor(principal),
            )
        response = settlement_pb2.RefundOrderDifferenceResponse(amount=_money(result.amount_minor, result.currency))
        if result.entry is not None:
            response.entry.CopyFrom(_entry_message(result.entry))
        return response

    async def VerifyOfflinePayment(
        self, request: settlement_pb2.VerifyOfflinePaymentRequest, context: Any
    ) -> settlement_pb2.VerifyOfflinePaymentResponse:
        principal = current_principal()
        key = _key(principal, request.idempotency_key)
        async with self._tx("verify_offline_payment") as session:
            if not request.payment_id:
                raise InvalidArgument.for_field("payment_id", "is required")
            pending = await payments.get_payment(session, request.payment_id)
            await accounts.visible(session, principal, pending.account_id, field="payment_id")
            payment = await payments.verify_offline_payment(
                session,
                payment_id=request.payment_id,
                approve=not request.reject,
                note=request.note,
                idempotency_key=key,
                clock=self._clock,
                actor=_actor(principal),
            )
            view = await accounts.view(session, await accounts.load(session, payment.account_id))
        return settlement_pb2.VerifyOfflinePaymentResponse(
            payment=_payment_message(payment), account=_account_message(view)
        )
