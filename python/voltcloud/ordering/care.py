"""Care for drivers: complaints about orders (reviewed by the order's operator, refunded through settlement to
the original payment method) and suggestions/feedback.

Who sees what:
- a complaint is filed by the order's driver (its `created_by` or `driver_id`) or its fleet's manager, and
  only about an order that was paid (a capture: completed, or a cancellation fee); one open complaint per order;
- it is reviewed once, by the operator that served the order (or the platform admin); another operator reads
  NOT_FOUND, so complaints cannot be probed. Accepting refunds at most what was paid and not yet refunded
  (settlement's rule: refunds of an order are serialised on its hold row and capped by the capture), and the
  complaint row is locked while it is reviewed, so two reviewers can never both refund;
- the review leaves an event on the order (the refund's amount and reason), so GetOrder and WatchOrder show it
  at commit, and the refund is on the wallet the order was paid from (the settlement's debited account).
Feedback is kept with the operator it concerns (of its station or order), who reads it with ListFeedback.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy.sql.expression import ColumnElement
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.ordering.abnormal_orders import journal_reference
from voltcloud.ordering.lifecycle import Actor, Effects, Facts, record
from voltcloud.ordering.models import Complaint, Feedback, Order
from voltcloud.ordering.orders import may_see
from voltcloud.platform import idempotency
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.enums import ComplaintState
from voltcloud.platform.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from voltcloud.platform.ids import new_id
from voltcloud.platform.paging import Page
from voltcloud.settlement import api as settlement
from voltcloud.stations.api import Station


@dataclass(frozen=True)
class ComplaintInput:
    order_id: str
    reason: str
    evidence_uris: tuple[str, ...]
    idempotency_key: str


@dataclass(frozen=True)
class Review:
    complaint_id: str
    accept: bool
    refund_minor: int
    currency: str
    reason: str
    idempotency_key: str


@dataclass(frozen=True)
class FeedbackInput:
    station_id: str
    order_id: str
    category: str
    rating: int
    text: str
    idempotency_key: str


def _check_uris(uris: tuple[str, ...]) -> None:
    for i, uri in enumerate(uris):
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https", "s3", "oss") or not parts.netloc:
            raise InvalidArgument.for_field(f"evidence_uris[{i}]", "must be an absolute http(s), s3 or oss URI")


def may_complain(principal: Principal, order: Order) -> bool:
    """The order's own driver, or the manager of its fleet (and the admin)."""
    if principal.is_admin:
        return True
    if principal.role is Role.DRIVER:
        return principal.subject in (order.created_by, order.driver_id)
    tenant = principal.tenant
    return (
        principal.role is Role.FLEET_MANAGER
        and tenant is not None
        and tenant.kind == "fleet"
        and (order.fleet_id == tenant.id)
    )


def _reviews(principal: Principal, complaint: Complaint) -> bool:
    tenant = principal.tenant
    if principal.is_admin:
        return True
    return (
        principal.role is Role.OPERATOR
        and tenant is not None
        and tenant.kind == "operator"
        and complaint.operator_id == tenant.id
    )


async def file_complaint(
    session: AsyncSession, principal: Principal, inp: ComplaintInput, *, now: dt.datetime
) -> Complaint:
    if not inp.order_id:
        raise InvalidArgument.for_field("order_id", "is required")
    reason = inp.reason.strip()
    if not reason:
        raise InvalidArgument.for_field("reason", "is required: say what went wrong")
    _check_uris(inp.evidence_uris)
    request = {"order": inp.order_id, "reason": reason, "evidence": list(inp.evidence_uris)}
    claim = await idempotency.claim(
        session, "file_complaint", inp.idempotency_key, request, now=now, caller=principal.subject
    )
    if claim.is_replay:
        return await _load(session, claim.replay_of or "")
    order = await session.get(Order, inp.order_id)
    if order is None or not may_complain(principal, order):
        raise NotFound(f"order {inp.order_id} not found")
    if not order.journal_entry_id:
        raise FailedPrecondition(f"order {order.id} was not paid (nothing captured): there is nothing to refund")
    open_one = await session.exec(
        select(Complaint.id).where(Complaint.order_id == order.id, Complaint.state == int(ComplaintState.OPEN))
    )
    if open_one.first() is not None:
        raise AlreadyExists(f"order {order.id} already has an open complaint")
    row = Complaint(
        id=new_id("cmp"),
        order_id=order.id,
        filed_by=principal.subject,
        fleet_id=order.fleet_id,
        operator_id=order.operator_id,
        state=int(ComplaintState.OPEN),
        reason=reason,
        evidence_uris=json.dumps(list(inp.evidence_uris)),
        currency=order.currency,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    await idempotency.complete(session, claim, row.id)
    return row


async def _load(session: AsyncSession, complaint_id: str, *, lock: bool = False) -> Complaint:
    query = select(Complaint).where(Complaint.id == complaint_id)
    if lock:  # one reviewer at a time (PostgreSQL); SQLite serialises writers anyway
        query = query.with_for_update().execution_options(populate_existing=True)
    row = (await session.exec(query)).one_or_none()
    if row is None:
        raise NotFound(f"complaint {complaint_id} not found")
    return row


def _check_review(review: Review) -> None:
    if not review.complaint_id:
        raise InvalidArgument.for_field("complaint_id", "is required")
    if review.accept:
        if review.refund_minor < 0:
            raise InvalidArgument.for_field("refund.amount_minor", "must not be negative")
    elif not review.reason.strip():
        raise InvalidArgument.for_field("reason", "is required to reject a complaint")
    elif review.refund_minor:
        raise InvalidArgument.for_field("refund", "a rejection refunds nothing")


async def review_complaint(
    session: AsyncSession, effects: Effects, principal: Principal, review: Review, *, now: dt.datetime
) -> tuple[Complaint, Order]:
    """Accepts (refunding `refund_minor` to the order's payment method) or rejects an OPEN complaint."""
    _check_review(review)
    request = {"id": review.complaint_id, "accept": review.accept, "refund": review.refund_minor, "why": review.reason}
    claim = await idempotency.claim(
        session, "review_complaint", review.idempotency_key, request, now=now, caller=principal.subject
    )
    complaint = await _load(session, review.complaint_id, lock=not claim.is_replay)
    if not _reviews(principal, complaint):
        raise NotFound(f"complaint {review.complaint_id} not found")
    order = await session.get(Order, complaint.order_id)
    assert order is not None  # foreign key
    if claim.is_replay:
        return complaint, order
    if complaint.state != ComplaintState.OPEN:
        raise FailedPrecondition(f"complaint {complaint.id} was already {ComplaintState(complaint.state).name.lower()}")
    actor = Actor.of(principal)
    if review.accept and review.refund_minor:
        if review.currency and review.currency != order.currency:
            raise InvalidArgument.for_field("refund.currency", f"the order was paid in {order.currency}")
        refund = await settlement.refund(
            session,
            order_id=journal_reference(order.id),
            amount_minor=review.refund_minor,
            reason=f"complaint {complaint.id}",
            idempotency_key=f"complaint:{complaint.id}",
            actor=settlement.Actor(actor.subject, actor.role, actor.tenant),
        )
        complaint.refund_minor = refund.amount_minor
        complaint.refund_entry_id = refund.entry.entry_id
    complaint.state = int(ComplaintState.ACCEPTED if review.accept else ComplaintState.REJECTED)
    complaint.review_reason = review.reason.strip()[:500]
    complaint.reviewed_by = principal.subject
    complaint.reviewed_at = now
    complaint.version += 1
    session.add(complaint)
    await record(session, effects, order, None, actor, now, _review_facts(complaint))
    await session.flush()
    await idempotency.complete(session, claim, complaint.id)
    return complaint, order


def _review_facts(complaint: Complaint) -> Facts:
    if complaint.state == ComplaintState.REJECTED:
        return Facts(reason=f"complaint {complaint.id} rejected: {complaint.review_reason}")
    if not complaint.refund_minor:
        return Facts(reason=f"complaint {complaint.id} accepted without a refund: {complaint.review_reason}")
    return Facts(
        reason=f"complaint {complaint.id} accepted: {complaint.refund_minor / 100:.2f} {complaint.currency} "
        f"refunded to the original payment method",
        amount_minor=complaint.refund_minor,
        currency=complaint.currency,
    )


def _complaint_scope(principal: Principal) -> ColumnElement[bool] | None:
    tenant = principal.tenant
    if principal.is_admin:
        return None
    if principal.role is Role.OPERATOR and tenant is not None:
        return col(Complaint.operator_id) == tenant.id
    if principal.role is Role.FLEET_MANAGER and tenant is not None:
        return col(Complaint.fleet_id) == tenant.id
    return col(Complaint.filed_by) == principal.subject


async def list_complaints(
    session: AsyncSession, principal: Principal, *, order_id: str, states: frozenset[int], page: Page
) -> list[Complaint]:
    """Newest first (ids are UUIDv7); only what the caller may see."""
    query = select(Complaint).order_by(col(Complaint.id).desc()).limit(page.size)
    scope = _complaint_scope(principal)
    if scope is not None:
        query = query.where(scope)
    if order_id:
        query = query.where(Complaint.order_id == order_id)
    if states:
        query = query.where(col(Complaint.state).in_(sorted(states)))
    if page.after:
        query = query.where(col(Complaint.id) < page.after)
    return list(await session.exec(query))


def evidence_of(complaint: Complaint) -> list[str]:
    uris: list[str] = json.loads(complaint.evidence_uris)
    return uris


# ---- feedback ----------------------------------------------------------------------------------------------


async def _feedback_operator(session: AsyncSession, principal: Principal, inp: FeedbackInput) -> str | None:
    """The operator the feedback concerns: its order's, else its station's; unknown/unseen ids are NOT_FOUND."""
    operator_id: str | None = None
    if inp.order_id:
        order = await session.get(Order, inp.order_id)
        if order is None or not may_see(principal, order):
            raise NotFound(f"order {inp.order_id} not found")
        operator_id = order.operator_id
        if inp.station_id and order.station_id != inp.station_id:
            raise InvalidArgument.for_field("station_id", f"is not the station of order {order.id}")
    if inp.station_id and operator_id is None:
        station = await session.get(Station, inp.station_id)
        if station is None:
            raise NotFound(f"station {inp.station_id} not found")
        operator_id = station.operator_id
    return operator_id


async def submit_feedback(
    session: AsyncSession, principal: Principal, inp: FeedbackInput, *, now: dt.datetime
) -> Feedback:
    text = inp.text.strip()
    if not text:
        raise InvalidArgument.for_field("text", "is required")
    if not 0 <= inp.rating <= 5:
        raise InvalidArgument.for_field("rating", f"must be 1..5 stars, or 0 for none; got {inp.rating}")
    request = {"station": inp.station_id, "order": inp.order_id, "cat": inp.category, "r": inp.rating, "t": text}
    claim = await idempotency.claim(
        session, "submit_feedback", inp.idempotency_key, request, now=now, caller=principal.subject
    )
    if claim.is_replay:
        found = await session.get(Feedback, claim.replay_of or "")
        assert found is not None
        return found
    operator_id = await _feedback_operator(session, principal, inp)
    row = Feedback(
        id=new_id("fbk"),
        submitted_by=principal.subject,
        operator_id=operator_id,
        station_id=inp.station_id or None,
        order_id=inp.order_id or None,
        category=inp.category.strip(),
        rating=inp.rating,
        text=text,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    await idempotency.complete(session, claim, row.id)
    return row


async def list_feedback(session: AsyncSession, principal: Principal, *, station_id: str, page: Page) -> list[Feedback]:
    """The admin reads all; an operator what concerns it; anyone else what they sent. Newest first."""
    query = select(Feedback).order_by(col(Feedback.id).desc()).limit(page.size)
    tenant = principal.tenant
    if not principal.is_admin:
        if principal.role is Role.OPERATOR and tenant is not None:
            query = query.where(Feedback.operator_id == tenant.id)
        else:
            query = query.where(Feedback.submitted_by == principal.subject)
    if station_id:
        query = query.where(Feedback.station_id == station_id)
    if page.after:
        query = query.where(col(Feedback.id) < page.after)
    return list(await session.exec(query))
