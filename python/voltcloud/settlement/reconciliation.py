"""Reconciliation: import a provider's statement (CSV) and match it against the payments in the journal.

CSV header: reference,amount_minor,currency,value_time,description (amount signed: positive = money in).
A line matches the payment of that provider with the same provider reference; the payment's signed amount
(top-ups in, withdrawals/refunds/payouts out) must equal the line's. Repeated references are DUPLICATE; the
provider's succeeded payments within the statement's period that no line names are MISSING_IN_STATEMENT.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform import idempotency
from voltcloud.platform.clock import Clock
from voltcloud.platform.errors import InvalidArgument, NotFound
from voltcloud.platform.ids import new_id
from voltcloud.settlement.holds import SYSTEM_CLOCK
from voltcloud.settlement.models import Payment, Statement, StatementLine
from voltcloud.settlement.money import MatchStatus, PaymentState

HEADER = ["reference", "amount_minor", "currency", "value_time", "description"]


@dataclass(frozen=True)
class Imported:
    statement: Statement
    errors: dict[int, str]


@dataclass(frozen=True)
class Reconciled:
    statement: Statement
    lines: tuple[StatementLine, ...]
    matched: int
    unmatched: int


def _parse_time(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("value_time needs a UTC offset")
    return value.astimezone(dt.UTC)


async def import_statement(
    session: AsyncSession,
    *,
    provider: str,
    csv_bytes: bytes,
    period_start: dt.datetime | None,
    period_end: dt.datetime | None,
    idempotency_key: str,
    clock: Clock = SYSTEM_CLOCK,
) -> Imported:
    now = clock.now()
    if not provider:
        raise InvalidArgument.for_field("provider", "is required")
    try:
        text = csv_bytes.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidArgument.for_field("csv", "must be UTF-8") from None
    request = {
        "provider": provider,
        "csv": idempotency.fingerprint({"csv": text}),
        "period": [period_start, period_end],
    }
    claim = await idempotency.claim(session, "import_statement", idempotency_key, request, now=now)
    if claim.is_replay:
        found = await session.get(Statement, claim.replay_of or "")
        if found is None:  # pragma: no cover
            raise NotFound("statement not found")
        return Imported(found, {})
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header] != HEADER:
        raise InvalidArgument.for_field("csv", f"the header row must be {','.join(HEADER)}")
    statement = Statement(
        id=new_id("stm"), provider=provider, period_start=period_start, period_end=period_end, imported_at=now
    )
    session.add(statement)
    await session.flush()
    errors: dict[int, str] = {}
    lines: list[StatementLine] = []
    for number, row in enumerate(reader, start=1):
        if not any(cell.strip() for cell in row):
            continue
        try:
            if len(row) < 4:
                raise ValueError("expected at least 4 columns")
            reference, amount, currency = row[0].strip(), int(row[1]), row[2].strip().upper()
            if not reference:
                raise ValueError("empty reference")
            lines.append(
                StatementLine(
                    statement_id=statement.id,
                    line_number=number,
                    provider_reference=reference,
                    amount_minor=amount,
                    currency=currency,
                    value_time=_parse_time(row[3]),
                    description=(row[4] if len(row) > 4 else "")[:300],
                )
            )
        except ValueError as exc:
            errors[number] = str(exc)
    statement.line_count = len(lines)
    session.add_all([statement, *lines])
    await session.flush()
    await idempotency.complete(session, claim, statement.id)
    return Imported(statement, errors)


async def reconcile(session: AsyncSession, *, statement_id: str) -> Reconciled:
    """Matches every line (idempotent: running it again recomputes the same outcome)."""
    statement = await session.get(Statement, statement_id)
    if statement is None:
        raise NotFound(f"statement {statement_id} not found")
    lines = list(
        await session.exec(
            select(StatementLine)
            .where(StatementLine.statement_id == statement_id)
            .order_by(col(StatementLine.line_number))
        )
    )
    references = {line.provider_reference for line in lines}
    payments = {
        p.provider_reference: p
        for p in await session.exec(
            select(Payment).where(
                Payment.provider == statement.provider, col(Payment.provider_reference).in_(references)
            )
        )
    }
    seen: set[str] = set()
    matched = unmatched = 0
    for line in lines:
        payment = payments.get(line.provider_reference)
        if line.provider_reference in seen:
            status = MatchStatus.DUPLICATE
        elif payment is None or payment.state != PaymentState.SUCCEEDED:
            status = MatchStatus.MISSING_IN_LEDGER
        elif payment.direction * payment.amount_minor == line.amount_minor and payment.currency == line.currency:
            status = MatchStatus.MATCHED
        else:
            status = MatchStatus.AMOUNT_MISMATCH
        seen.add(line.provider_reference)
        line.match_status = int(status)
        line.payment_id = payment.id if payment is not None else ""
        matched += status is MatchStatus.MATCHED
        unmatched += status is not MatchStatus.MATCHED
        session.add(line)
    pseudo: list[StatementLine] = []
    if statement.period_start is not None and statement.period_end is not None:
        missing = await session.exec(
            select(Payment)
            .where(
                Payment.provider == statement.provider,
                Payment.state == int(PaymentState.SUCCEEDED),
                col(Payment.created_at) >= statement.period_start,
                col(Payment.created_at) < statement.period_end,
                col(Payment.provider_reference).not_in(references),
            )
            .order_by(col(Payment.id))
        )
        for p in missing:
            pseudo.append(
                StatementLine(
                    statement_id=statement.id,
                    line_number=0,
                    provider_reference=p.provider_reference,
                    amount_minor=p.direction * p.amount_minor,
                    currency=p.currency,
                    value_time=p.created_at,
                    description=f"{p.purpose} in the ledger, not on the statement",
                    match_status=int(MatchStatus.MISSING_IN_STATEMENT),
                    payment_id=p.id,
                )
            )
            unmatched += 1
    statement.reconciled = True
    session.add(statement)
    await session.flush()
    return Reconciled(statement, (*lines, *pseudo), matched, unmatched)
