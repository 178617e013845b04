"""SettlementService servicer: each RPC converts its request (`convert`), asks the settlement modules (which
hold every rule, including who may touch which account) and converts their answer back. No rules here."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.api.v1 import settlement_pb2, settlement_pb2_grpc
from voltcloud.platform import idempotency
from voltcloud.platform.clock import Clock, SystemClock
from voltcloud.platform.db import Database
from voltcloud.platform.errors import Aborted, InvalidArgument
from voltcloud.platform.limits import optional_datetime, to_timedelta
from voltcloud.platform.paging import next_page_token, parse_page
from voltcloud.platform.rpc import current_principal
from voltcloud.settlement import (
    abnormal,
    accounts,
    billing,
    convert,
    coupons,
    holds,
    ledger,
    payments,
    payouts,
    rates,
    reconciliation,
    trace,
)
from voltcloud.settlement.providers import DEFAULT_PROVIDERS, ProviderRegistry
from voltcloud.settlement.sql import is_lost_race

R = TypeVar("R", bound=idempotency.Response)


# --- the servicer --------------------------------------------------------------------------------------------


class SettlementServicer(settlement_pb2_grpc.SettlementServiceServicer):
    def __init__(
        self, db: Database, clock: Clock | None = None, providers: ProviderRegistry = DEFAULT_PROVIDERS
    ) -> None:
        self._db = db
        self._clock: Clock = clock or SystemClock()
        self._providers = providers

    async def _once(
        self, session: AsyncSession, operation: str, request: Any, response_type: Any, work: Callable[[], Awaitable[R]]
    ) -> R:
        """The keyed RPCs whose domain operation is not keyed itself (a retry of a release or a reconciliation
        would be harmless, but every mutating RPC answers a reused key the same way)."""
        caller = current_principal().subject
        return await idempotency.once(
            session, operation, caller, request, response_type.FromString, work, now=self._clock.now()
        )

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
        plan = accounts.plan_account(
            principal,
            request.kind,
            request.owner_id,
            request.currency,
            sets_credit_limit=request.HasField("credit_limit"),
        )
        credit = (
            convert.parse_amount(request, "credit_limit", allow_zero=True)[0] if request.HasField("credit_limit") else 0
        )
        async with self._tx("create_account") as session:
            await accounts.check_may_create(session, principal, plan)

            async def create() -> settlement_pb2.CreateAccountResponse:
                account = await accounts.ensure_account(
                    session,
                    kind=plan.kind,
                    owner_kind=plan.owner_kind,
                    owner_id=plan.owner_id,
                    currency=plan.currency,
                    now=self._clock.now(),
                    name=request.name,
                    tenant=plan.tenant,
                    credit_limit_minor=credit,
                )
                view = await accounts.view(session, account)
                return settlement_pb2.CreateAccountResponse(account=convert.account_message(view))

            return await self._once(session, "CreateAccount", request, settlement_pb2.CreateAccountResponse, create)

    async def GetAccount(
        self, request: settlement_pb2.GetAccountRequest, context: Any
    ) -> settlement_pb2.GetAccountResponse:
        async with self._tx("get_account") as session:
            account = await accounts.visible(session, current_principal(), request.account_id)
            view = await accounts.view(session, account)
        return settlement_pb2.GetAccountResponse(account=convert.account_message(view))

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
            accounts=[convert.account_message(v) for v in views],
            next_page_token=next_page_token(rows[-1].id if rows else None, len(rows), page),
        )

    # money in and out -----------------------------------------------------------------------------------------

    async def TopUp(self, request: settlement_pb2.TopUpRequest, context: Any) -> settlement_pb2.TopUpResponse:
        principal = current_principal()
        amount, currency = convert.parse_amount(request, "amount")
        key = convert.scoped_key(principal, request.idempotency_key)
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
                actor=convert.actor_of(principal),
                providers=self._providers,
            )
            view = await accounts.view(session, await accounts.load(session, request.account_id))
        return settlement_pb2.TopUpResponse(
            payment=convert.payment_message(payment), account=convert.account_message(view)
        )

    async def Withdraw(self, request: settlement_pb2.WithdrawRequest, context: Any) -> settlement_pb2.WithdrawResponse:
        principal = current_principal()
        amount, currency = convert.parse_amount(request, "amount")
        key = convert.scoped_key(principal, request.idempotency_key)
        async with self._tx("withdraw") as session:
            await accounts.withdrawable(session, principal, request.account_id)
            payment = await payments.withdraw(
                session,
                account_id=request.account_id,
                amount_minor=amount,
                currency=currency,
                provider=request.provider,
                destination=request.destination,
                idempotency_key=key,
                clock=self._clock,
                actor=convert.actor_of(principal),
                providers=self._providers,
            )
            view = await accounts.view(session, await accounts.load(session, request.account_id))
        return settlement_pb2.WithdrawResponse(
            payment=convert.payment_message(payment), account=convert.account_message(view)
        )

    async def Refund(self, request: settlement_pb2.RefundRequest, context: Any) -> settlement_pb2.RefundResponse:
        principal = current_principal()
        amount = convert.parse_amount(request, "amount")[0] if request.HasField("amount") else None
        key = convert.scoped_key(principal, request.idempotency_key)
        async with self._tx("refund") as session:
            await payments.check_may_refund(session, principal, request.order_id, payment_id=request.payment_id)
            result = await payments.refund(
                session,
                order_id=request.order_id,
                payment_id=request.payment_id,
                amount_minor=amount,
                reason=request.reason,
                idempotency_key=key,
                clock=self._clock,
                actor=convert.actor_of(principal),
                providers=self._providers,
            )
        return settlement_pb2.RefundResponse(
            refund_id=result.refund_id,
            entry=convert.entry_message(result.entry),
            amount=convert.money_message(result.amount_minor, result.currency),
        )

    # holds ----------------------------------------------------------------------------------------------------

    async def PlaceHold(
        self, request: settlement_pb2.PlaceHoldRequest, context: Any
    ) -> settlement_pb2.PlaceHoldResponse:
        principal = current_principal()
        amount, currency = convert.parse_amount(request, "amount")
        ttl = to_timedelta(request.ttl, "ttl") if request.HasField("ttl") else None
        expires_at = holds.expiry(self._clock.now(), ttl)
        key = convert.scoped_key(principal, request.idempotency_key)
        async with self._tx("place_hold") as session:
            hold = await holds.place_hold(
                session,
                account_id=request.account_id,
                amount_minor=amount,
                currency=currency,
                reference=request.order_id,
                idempotency_key=key,
                expires_at=expires_at,
                clock=self._clock,
            )
        return settlement_pb2.PlaceHoldResponse(hold=convert.hold_message(hold))

    async def CaptureHold(
        self, request: settlement_pb2.CaptureHoldRequest, context: Any
    ) -> settlement_pb2.CaptureHoldResponse:
        principal = current_principal()
        amount, _ = convert.parse_amount(request, "amount", allow_zero=True)
        breakdown = holds.fee_breakdown(amount, request.platform_fee_basis_points)
        key = convert.scoped_key(principal, request.idempotency_key)
        async with self._tx("capture_hold") as session:
            operator = await accounts.operator_account(
                session, request.operator_account_id, field="operator_account_id"
            )
            entry = await holds.capture_hold(
                session,
                hold_id=request.hold_id,
                amount_minor=amount,
                operator_id=operator.owner_id,
                breakdown=breakdown,
                idempotency_key=key,
                clock=self._clock,
                actor=convert.actor_of(principal),
                description=request.description,
            )
            hold = holds.hold_view(await holds.get_hold(session, request.hold_id))
        return settlement_pb2.CaptureHoldResponse(hold=convert.hold_message(hold), entry=convert.entry_message(entry))

    async def ReleaseHold(
        self, request: settlement_pb2.ReleaseHoldRequest, context: Any
    ) -> settlement_pb2.ReleaseHoldResponse:
        async with self._tx("release_hold") as session:

            async def release() -> settlement_pb2.ReleaseHoldResponse:
                await holds.release_hold(session, hold_id=request.hold_id, reason=request.reason, clock=self._clock)
                hold = holds.hold_view(await holds.get_hold(session, request.hold_id))
                return settlement_pb2.ReleaseHoldResponse(hold=convert.hold_message(hold))

            return await self._once(session, "ReleaseHold", request, settlement_pb2.ReleaseHoldResponse, release)

    # journal --------------------------------------------------------------------------------------------------

    async def GetJournalEntry(
        self, request: settlement_pb2.GetJournalEntryRequest, context: Any
    ) -> settlement_pb2.GetJournalEntryResponse:
        if not request.entry_id:
            raise InvalidArgument.for_field("entry_id", "is required")
        async with self._tx("get_journal_entry") as session:
            entry = await ledger.load_entry(session, request.entry_id)
            posted_to = {p.account_id for p in entry.postings}
            await accounts.check_sees_entry(session, current_principal(), request.entry_id, posted_to)
        return settlement_pb2.GetJournalEntryResponse(entry=convert.entry_message(entry))

    async def ListJournalEntries(
        self, request: settlement_pb2.ListJournalEntriesRequest, context: Any
    ) -> settlement_pb2.ListJournalEntriesResponse:
        page = parse_page(request.page_size, request.page_token)
        principal = current_principal()
        async with self._tx("list_journal_entries") as session:
            scope = await accounts.scope(session, principal, request.account_id)
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
            entries=[convert.entry_message(e) for e in entries],
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
        operator_id = rates.pricing_operator(principal, model.operator_id, platform_default=request.platform_default)
        spec = rates.RateModelSpec(
            rate_model_id=model.rate_model_id,
            operator_id=operator_id,
            name=model.name,
            tariff=convert.parse_tariff(model),
            valid_from=optional_datetime(model, "valid_from", "rate_model.valid_from"),
            valid_to=optional_datetime(model, "valid_to", "rate_model.valid_to"),
            display_text=model.display_text,
        )
        async with self._tx("create_rate_model") as session:
            view = await rates.create_rate_model(
                session,
                spec,
                idempotency_key=convert.scoped_key(principal, request.idempotency_key),
                operator_default=request.operator_default,
                platform_default=request.platform_default,
                clock=self._clock,
            )
        return settlement_pb2.CreateRateModelResponse(rate_model=convert.rate_model_message(view))

    async def ListRateModels(
        self, request: settlement_pb2.ListRateModelsRequest, context: Any
    ) -> settlement_pb2.ListRateModelsResponse:
        principal = current_principal()
        page = parse_page(request.page_size, request.page_token)
        operator_ids = rates.visible_operators(principal, request.operator_id)
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
            rate_models=[convert.rate_model_message(v) for v in views],
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
            discount = await coupons.estimate_discount(
                session,
                request.coupon_code,
                amount_minor=quote.amount_minor,
                at=start,
                mode=request.mode,
                currency=quote.currency,
            )
        return convert.price_estimate_response(quote, discount)

    async def CreateCoupon(
        self, request: settlement_pb2.CreateCouponRequest, context: Any
    ) -> settlement_pb2.CreateCouponResponse:
        principal = current_principal()
        spec = convert.coupon_spec(request.coupon)
        async with self._tx("create_coupon") as session:
            operator_id, funding = await coupons.issuer(
                session, principal, spec.operator_id, spec.funding_account_id, spec.currency, self._clock.now()
            )
            spec = dataclasses.replace(spec, operator_id=operator_id, funding_account_id=funding)
            row = await coupons.create_coupon(
                session, spec, idempotency_key=convert.scoped_key(principal, request.idempotency_key), clock=self._clock
            )
        return settlement_pb2.CreateCouponResponse(coupon=convert.coupon_message(row))

    # bills, payouts, reconciliation, tracing ------------------------------------------------------------------

    async def GenerateBill(
        self, request: settlement_pb2.GenerateBillRequest, context: Any
    ) -> settlement_pb2.GenerateBillResponse:
        principal = current_principal()
        start, end = convert.parse_window(request, "period")
        async with self._tx("generate_bill") as session:
            await accounts.visible(session, principal, request.account_id)
            view = await billing.generate_bill(
                session,
                account_id=request.account_id,
                period_start=start,
                period_end=end,
                order_id=request.order_id,
                idempotency_key=convert.scoped_key(principal, request.idempotency_key),
                clock=self._clock,
            )
        return settlement_pb2.GenerateBillResponse(bill=convert.bill_message(view))

    async def GetBill(self, request: settlement_pb2.GetBillRequest, context: Any) -> settlement_pb2.GetBillResponse:
        async with self._tx("get_bill") as session:
            view = await billing.visible_bill(session, current_principal(), request.bill_id)
        return settlement_pb2.GetBillResponse(bill=convert.bill_message(view))

    async def ListBills(
        self, request: settlement_pb2.ListBillsRequest, context: Any
    ) -> settlement_pb2.ListBillsResponse:
        principal = current_principal()
        page = parse_page(request.page_size, request.page_token)
        async with self._tx("list_bills") as session:
            scope = await accounts.scope(session, principal, request.account_id)
            views = await billing.list_bills(
                session,
                account_ids=scope,
                states=list(request.states),
                issued_from=optional_datetime(request, "issue_time_from"),
                issued_to=optional_datetime(request, "issue_time_to"),
                page=page,
            )
        return settlement_pb2.ListBillsResponse(
            bills=[convert.bill_message(v) for v in views],
            next_page_token=next_page_token(views[-1].bill.id if views else None, len(views), page),
        )

    async def ImportStatement(
        self, request: settlement_pb2.ImportStatementRequest, context: Any
    ) -> settlement_pb2.ImportStatementResponse:
        principal = current_principal()
        start, end = convert.parse_window(request, "period")
        async with self._tx("import_statement") as session:
            imported = await reconciliation.import_statement(
                session,
                provider=request.provider,
                csv_bytes=request.csv,
                period_start=start,
                period_end=end,
                idempotency_key=convert.scoped_key(principal, request.idempotency_key),
                clock=self._clock,
            )
        return settlement_pb2.ImportStatementResponse(
            statement=convert.statement_message(imported.statement), errors=imported.errors
        )

    async def ReconcileStatement(
        self, request: settlement_pb2.ReconcileStatementRequest, context: Any
    ) -> settlement_pb2.ReconcileStatementResponse:
        if not request.statement_id:
            raise InvalidArgument.for_field("statement_id", "is required")
        async with self._tx("reconcile_statement") as session:

            async def reconcile() -> settlement_pb2.ReconcileStatementResponse:
                result = await reconciliation.reconcile(session, statement_id=request.statement_id)
                return settlement_pb2.ReconcileStatementResponse(
                    statement=convert.statement_message(result.statement),
                    lines=[convert.statement_line_message(line) for line in result.lines],
                    matched=result.matched,
                    unmatched=result.unmatched,
                )

            response_type = settlement_pb2.ReconcileStatementResponse
            return await self._once(session, "ReconcileStatement", request, response_type, reconcile)

    async def ListPayouts(
        self, request: settlement_pb2.ListPayoutsRequest, context: Any
    ) -> settlement_pb2.ListPayoutsResponse:
        principal = current_principal()
        page = parse_page(request.page_size, request.page_token)
        async with self._tx("list_payouts") as session:
            scope = await accounts.scope(session, principal, request.account_id)
            rows = await payouts.list_payouts(
                session,
                account_ids=scope,
                states=list(request.states),
                created_from=optional_datetime(request, "create_time_from"),
                created_to=optional_datetime(request, "create_time_to"),
                page=page,
            )
        return settlement_pb2.ListPayoutsResponse(
            payouts=[convert.payout_message(p) for p in rows],
            next_page_token=next_page_token(rows[-1].id if rows else None, len(rows), page),
        )

    async def RunPayouts(
        self, request: settlement_pb2.RunPayoutsRequest, context: Any
    ) -> settlement_pb2.RunPayoutsResponse:
        principal = current_principal()
        async with self._tx("run_payouts") as session:
            rows = await payouts.run_payouts(
                session,
                idempotency_key=convert.scoped_key(principal, request.idempotency_key),
                provider=request.provider or "simulated",
                account_id=request.account_id,
                clock=self._clock,
                actor=convert.actor_of(principal),
                providers=self._providers,
            )
        return settlement_pb2.RunPayoutsResponse(payouts=[convert.payout_message(p) for p in rows])

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
                window=convert.parse_window(request, "window"),
                page=page,
            )
        return settlement_pb2.TraceFundsResponse(
            flows=[convert.flow_message(f) for f in flows], next_page_token=next_page_token(last, returned, page)
        )

    # abnormal orders, offline payments ---------------------------------------------------------------------

    async def DetectAbnormalOrder(
        self, request: settlement_pb2.DetectAbnormalOrderRequest, context: Any
    ) -> settlement_pb2.DetectAbnormalOrderResponse:
        principal = current_principal()
        facts = convert.session_facts(request)
        async with self._tx("detect_abnormal_order") as session:
            report = await abnormal.inspect_order(
                session, principal, facts, account_id=request.account_id, clock=self._clock
            )
        return convert.abnormal_response(report)

    async def RefundOrderDifference(
        self, request: settlement_pb2.RefundOrderDifferenceRequest, context: Any
    ) -> settlement_pb2.RefundOrderDifferenceResponse:
        principal = current_principal()
        key = convert.scoped_key(principal, request.idempotency_key)
        async with self._tx("refund_order_difference") as session:
            await payments.check_may_refund(session, principal, request.order_id)
            result = await abnormal.refund_difference(
                session,
                order_id=request.order_id,
                idempotency_key=key,
                reason=request.reason,
                clock=self._clock,
                actor=convert.actor_of(principal),
            )
        response = settlement_pb2.RefundOrderDifferenceResponse(
            amount=convert.money_message(result.amount_minor, result.currency)
        )
        if result.entry is not None:
            response.entry.CopyFrom(convert.entry_message(result.entry))
        return response

    async def VerifyOfflinePayment(
        self, request: settlement_pb2.VerifyOfflinePaymentRequest, context: Any
    ) -> settlement_pb2.VerifyOfflinePaymentResponse:
        principal = current_principal()
        key = convert.scoped_key(principal, request.idempotency_key)
        async with self._tx("verify_offline_payment") as session:
            await payments.visible_payment(session, principal, request.payment_id)
            payment = await payments.verify_offline_payment(
                session,
                payment_id=request.payment_id,
                approve=not request.reject,
                note=request.note,
                idempotency_key=key,
                clock=self._clock,
                actor=convert.actor_of(principal),
            )
            view = await accounts.view(session, await accounts.load(session, payment.account_id))
        return settlement_pb2.VerifyOfflinePaymentResponse(
            payment=convert.payment_message(payment), account=convert.account_message(view)
        )
