"""Care for drivers over real gRPC (SQLite + PostgreSQL): a complaint about a served, settled order is filed by
its driver, reviewed by the order's operator and refunded to the wallet the order was paid from; the order's
history (GetOrder, WatchOrder) and the wallet show it; no double refund; tenant rules hold."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from voltcloud.api.v1 import common_pb2, ordering_pb2, ordering_pb2_grpc, settlement_pb2, settlement_pb2_grpc
from voltcloud.server import Platform

from .care_support import journal_balanced, operator_md, served_charge_order
from .conftest import channel_to, serving
from .powerup_support import account_state, driver_md

DRIVER, OTHER_DRIVER = "drv-care", "drv-nosy"
OPEN, ACCEPTED = ordering_pb2.COMPLAINT_STATE_OPEN, ordering_pb2.COMPLAINT_STATE_ACCEPTED


@pytest.fixture
async def platform(tmp_path: Path, database_url: str) -> AsyncIterator[Platform]:
    async with serving(tmp_path, database_url, reoptimize_interval_s=0) as running:
        yield running


@pytest.fixture
async def channel(platform: Platform) -> AsyncIterator[grpc.aio.Channel]:
    async with channel_to(platform) as ch:
        yield ch


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value.code()


async def test_complaint_filed_reviewed_refunded_and_shown(platform: Platform, channel: grpc.aio.Channel) -> None:
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    wallets = settlement_pb2_grpc.SettlementServiceStub(channel)
    served = await served_charge_order(platform, channel, DRIVER, minutes=120)
    order = served.order
    assert order.state == common_pb2.ORDER_STATE_COMPLETED
    paid = order.final_price.amount_minor
    assert paid > 300
    md, ops = driver_md(platform, DRIVER), operator_md(platform, served.operator_id)
    balance_before, _ = await account_state(platform, served.account_id)

    # Only the order's own driver (or its fleet's manager) complains; a bad URI names its field.
    assert (
        await _code(
            ordering.FileComplaint(
                ordering_pb2.FileComplaintRequest(idempotency_key="c0", order_id=order.order_id, reason="x"),
                metadata=driver_md(platform, OTHER_DRIVER),
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await ordering.FileComplaint(
            ordering_pb2.FileComplaintRequest(
                idempotency_key="c1", order_id=order.order_id, reason="x", evidence_uris=["not a uri"]
            ),
            metadata=md,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "evidence_uris[0]" in bad.value.details()

    request = ordering_pb2.FileComplaintRequest(
        idempotency_key="c2",
        order_id=order.order_id,
        reason="the charger stopped at 60 % and restarted twice",
        evidence_uris=["https://photos.example.com/receipt.jpg"],
    )
    filed = (await ordering.FileComplaint(request, metadata=md)).complaint
    assert filed.state == OPEN and filed.operator_id == served.operator_id
    assert (await ordering.FileComplaint(request, metadata=md)).complaint.complaint_id == filed.complaint_id  # replay
    again = ordering_pb2.FileComplaintRequest(idempotency_key="c3", order_id=order.order_id, reason="again")
    assert await _code(ordering.FileComplaint(again, metadata=md)) == grpc.StatusCode.ALREADY_EXISTS

    # The operator sees it; another operator cannot see or review it; the driver cannot review.
    listed = await ordering.ListComplaints(ordering_pb2.ListComplaintsRequest(states=[OPEN]), metadata=ops)
    assert [c.complaint_id for c in listed.complaints] == [filed.complaint_id]
    other_ops = operator_md(platform, "op-0002" if served.operator_id != "op-0002" else "op-0001")
    empty = await ordering.ListComplaints(ordering_pb2.ListComplaintsRequest(), metadata=other_ops)
    assert not empty.complaints
    refund = common_pb2.Money(amount_minor=300, currency="CNY")
    review = ordering_pb2.ReviewComplaintRequest(
        idempotency_key="r1", complaint_id=filed.complaint_id, accept=True, refund=refund, reason="verified"
    )
    assert await _code(ordering.ReviewComplaint(review, metadata=other_ops)) == grpc.StatusCode.NOT_FOUND
    assert await _code(ordering.ReviewComplaint(review, metadata=md)) == grpc.StatusCode.PERMISSION_DENIED
    too_much = ordering_pb2.ReviewComplaintRequest(
        idempotency_key="r0",
        complaint_id=filed.complaint_id,
        accept=True,
        refund=common_pb2.Money(amount_minor=paid + 1, currency="CNY"),
    )
    assert await _code(ordering.ReviewComplaint(too_much, metadata=ops)) == grpc.StatusCode.FAILED_PRECONDITION
    reject = ordering_pb2.ReviewComplaintRequest(idempotency_key="r9", complaint_id=filed.complaint_id)
    assert await _code(ordering.ReviewComplaint(reject, metadata=ops)) == grpc.StatusCode.INVALID_ARGUMENT

    reviewed = await ordering.ReviewComplaint(review, metadata=ops)
    assert reviewed.complaint.state == ACCEPTED
    assert reviewed.complaint.refund.amount_minor == 300 and reviewed.complaint.refund_entry_id
    # The driver's app resuming WatchOrder from the last event it had gets the refund as a new event.
    watch = ordering.WatchOrder(
        ordering_pb2.WatchOrderRequest(order_id=order.order_id, after_event_seq=order.last_event_seq), metadata=md
    )
    events = [r.event async for r in watch]
    assert len(events) == 1
    event = events[0]
    assert event.amount.amount_minor == 300 and filed.complaint_id in event.reason
    assert event.to_state == common_pb2.ORDER_STATE_COMPLETED

    got = (await ordering.GetOrder(ordering_pb2.GetOrderRequest(order_id=order.order_id), metadata=md)).order
    assert got.events[-1].amount.amount_minor == 300
    wallet = await wallets.GetAccount(settlement_pb2.GetAccountRequest(account_id=served.account_id), metadata=md)
    assert wallet.account.balance.amount_minor == balance_before + 300
    assert await journal_balanced(platform)

    # No double refund: the replay returns the same review, a second review is refused, money unchanged.
    replay = await ordering.ReviewComplaint(review, metadata=ops)
    assert replay.complaint.refund_entry_id == reviewed.complaint.refund_entry_id
    second = ordering_pb2.ReviewComplaintRequest(
        idempotency_key="r2", complaint_id=filed.complaint_id, accept=True, refund=refund
    )
    assert await _code(ordering.ReviewComplaint(second, metadata=ops)) == grpc.StatusCode.FAILED_PRECONDITION
    assert (await account_state(platform, served.account_id))[0] == balance_before + 300

    # A new complaint may be filed now; the refund is capped by what was paid and not yet refunded.
    later = ordering_pb2.FileComplaintRequest(idempotency_key="c4", order_id=order.order_id, reason="still wrong")
    filed2 = (await ordering.FileComplaint(later, metadata=md)).complaint
    rest = ordering_pb2.ReviewComplaintRequest(
        idempotency_key="r3",
        complaint_id=filed2.complaint_id,
        accept=True,
        refund=common_pb2.Money(amount_minor=paid - 300 + 1, currency="CNY"),
    )
    assert await _code(ordering.ReviewComplaint(rest, metadata=ops)) == grpc.StatusCode.FAILED_PRECONDITION
    rejected = await ordering.ReviewComplaint(
        ordering_pb2.ReviewComplaintRequest(
            idempotency_key="r4", complaint_id=filed2.complaint_id, accept=False, reason="the session log is normal"
        ),
        metadata=ops,
    )
    assert rejected.complaint.state == ordering_pb2.COMPLAINT_STATE_REJECTED
    assert "rejected" in rejected.order.events[-1].reason if rejected.order.events else True
    assert (await account_state(platform, served.account_id))[0] == balance_before + 300
    mine = await ordering.ListComplaints(ordering_pb2.ListComplaintsRequest(order_id=order.order_id), metadata=md)
    assert [c.complaint_id for c in mine.complaints] == [filed2.complaint_id, filed.complaint_id]
    nosy = await ordering.ListComplaints(
        ordering_pb2.ListComplaintsRequest(), metadata=driver_md(platform, OTHER_DRIVER)
    )
    assert not nosy.complaints
    assert await journal_balanced(platform)


async def test_feedback_reaches_the_stations_operator(platform: Platform, channel: grpc.aio.Channel) -> None:
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    served = await served_charge_order(platform, channel, DRIVER, minutes=120)
    md = driver_md(platform, DRIVER)
    sent = await ordering.SubmitFeedback(
        ordering_pb2.SubmitFeedbackRequest(
            idempotency_key="f1", order_id=served.order.order_id, category="station", rating=4, text="clean, fast"
        ),
        metadata=md,
    )
    assert sent.feedback.operator_id == served.operator_id and sent.feedback.station_id == ""
    bad = ordering_pb2.SubmitFeedbackRequest(idempotency_key="f2", text="x", rating=6)
    assert await _code(ordering.SubmitFeedback(bad, metadata=md)) == grpc.StatusCode.INVALID_ARGUMENT
    nowhere = ordering_pb2.SubmitFeedbackRequest(idempotency_key="f3", text="x", station_id="st-nope")
    assert await _code(ordering.SubmitFeedback(nowhere, metadata=md)) == grpc.StatusCode.NOT_FOUND
    general = ordering_pb2.SubmitFeedbackRequest(idempotency_key="f4", text="dark mode please", category="app")
    await ordering.SubmitFeedback(general, metadata=md)
    ops = operator_md(platform, served.operator_id)
    seen = await ordering.ListFeedback(ordering_pb2.ListFeedbackRequest(), metadata=ops)
    assert [f.feedback_id for f in seen.feedback] == [sent.feedback.feedback_id]
    own = await ordering.ListFeedback(ordering_pb2.ListFeedbackRequest(page_size=1), metadata=md)
    assert len(own.feedback) == 1 and own.next_page_token
    rest = await ordering.ListFeedback(
        ordering_pb2.ListFeedbackRequest(page_size=1, page_token=own.next_page_token), metadata=md
    )
    assert [f.text for f in [*own.feedback, *rest.feedback]] == ["dark mode please", "clean, fast"]
    other = await ordering.ListFeedback(ordering_pb2.ListFeedbackRequest(), metadata=driver_md(platform, OTHER_DRIVER))
    assert not other.feedback
