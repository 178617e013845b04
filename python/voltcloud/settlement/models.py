"""Tables of settlement: accounts, the double-entry journal, holds, payments, tariffs, coupons, bills,
payouts and imported statements. Money columns are BigInteger minor units; enum-like columns use the protobuf
numbers of proto/voltcloud/v1/settlement.proto.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from voltcloud.platform.db import utc_column


def _money(**kwargs: object) -> sa.Column[int]:
    return sa.Column(sa.BigInteger(), nullable=False, server_default="0", **kwargs)  # type: ignore[arg-type]


class LedgerAccount(SQLModel, table=True):
    """An account of the ledger, in one currency.

    `balance_minor` is the sum of the account's postings, kept on the row for the accounts whose balance is
    checked against a limit (wallets, fleets, operators, specialists, arrears). System accounts that every
    entry touches (platform revenue, provider clearing, promotions) have `tracks_balance` false: their
    balance is summed from postings, so they are never a hot row that serialises every settlement.
    """

    __tablename__ = "ledger_account"
    __table_args__ = (
        sa.UniqueConstraint("owner_kind", "owner_id", "kind", "currency", name="uq_ledger_account_owner"),
    )

    id: str = Field(primary_key=True, max_length=64)
    kind: int = Field(description="AccountKind")
    owner_kind: str = Field(max_length=16, description="driver|fleet|subfleet|operator|specialist|platform|provider")
    owner_id: str = Field(max_length=64, index=True)
    tenant: str = Field(default="", max_length=80, index=True, description="operator:<id>|fleet:<id>|'' (platform)")
    name: str = Field(default="", max_length=200)
    currency: str = Field(max_length=3)
    balance_minor: int = Field(default=0, sa_column=_money())
    held_minor: int = Field(default=0, sa_column=_money())
    credit_limit_minor: int = Field(default=0, sa_column=_money())
    enforce_limit: bool = Field(default=True, description="balance - held + credit_limit may never go below 0")
    tracks_balance: bool = Field(default=True)
    frozen: bool = Field(default=False)
    version: int = Field(default=1)
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))


class JournalEntry(SQLModel, table=True):
    """A balanced, immutable set of postings. Corrections are new entries with `reverses_entry_id`."""

    __tablename__ = "journal_entry"

    id: str = Field(primary_key=True, max_length=64)
    kind: int = Field(index=True, description="JournalEntryKind")
    order_id: str | None = Field(default=None, index=True, max_length=64)
    hold_id: str | None = Field(default=None, index=True, max_length=64)
    payment_id: str | None = Field(default=None, index=True, max_length=64)
    reverses_entry_id: str | None = Field(default=None, max_length=64)
    description: str = Field(default="", max_length=500)
    posted_at: dt.datetime = Field(sa_column=utc_column(nullable=False, index=True))
    actor_subject: str = Field(default="", max_length=120)
    actor_role: int = Field(default=0)
    actor_tenant: str = Field(default="", max_length=80)
    idempotency_key: str | None = Field(default=None, max_length=200)


class Posting(SQLModel, table=True):
    """One leg of an entry: a signed amount on one account (positive increases its balance)."""

    __tablename__ = "posting"

    id: int | None = Field(default=None, primary_key=True)
    entry_id: str = Field(foreign_key="journal_entry.id", index=True, max_length=64)
    account_id: str = Field(foreign_key="ledger_account.id", index=True, max_length=64)
    amount_minor: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    currency: str = Field(max_length=3)
    memo: str = Field(default="", max_length=200)


class LedgerHold(SQLModel, table=True):
    """An amount reserved on an account's available balance (not a posting: holds move no money)."""

    __tablename__ = "ledger_hold"

    id: str = Field(primary_key=True, max_length=64)
    account_id: str = Field(foreign_key="ledger_account.id", index=True, max_length=64)
    amount_minor: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    captured_minor: int = Field(default=0, sa_column=_money())
    currency: str = Field(max_length=3)
    state: int = Field(default=1, index=True, description="HoldState")
    reference: str = Field(default="", max_length=64, index=True, description="Order id")
    expires_at: dt.datetime = Field(sa_column=utc_column(nullable=False, index=True))
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    closed_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    entry_id: str | None = Field(default=None, max_length=64, description="Capture entry")
    close_reason: str = Field(default="", max_length=200)
    version: int = Field(default=1)


class Payment(SQLModel, table=True):
    """A money movement through an external provider: top-up, withdrawal, refund to source, payout."""

    __tablename__ = "payment"

    id: str = Field(primary_key=True, max_length=64)
    account_id: str = Field(foreign_key="ledger_account.id", index=True, max_length=64)
    direction: int = Field(description="+1 money in (top-up), -1 money out (withdrawal, refund, payout)")
    purpose: str = Field(max_length=16, description="top_up|withdrawal|refund|payout")
    amount_minor: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    refunded_minor: int = Field(default=0, sa_column=_money())
    currency: str = Field(max_length=3)
    state: int = Field(description="PaymentState")
    provider: str = Field(max_length=40, index=True)
    provider_reference: str = Field(default="", max_length=120, index=True)
    source_payment_id: str | None = Field(default=None, max_length=64)
    entry_id: str | None = Field(default=None, max_length=64)
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False, index=True))
    # Offline payments (provider "offline") are recorded PENDING and posted only when verified by someone else.
    recorded_by: str = Field(default="", max_length=120, sa_column_kwargs={"server_default": ""})
    verified_by: str = Field(default="", max_length=120, sa_column_kwargs={"server_default": ""})
    verified_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    note: str = Field(default="", max_length=300, sa_column_kwargs={"server_default": ""})


class OrderCheck(SQLModel, table=True):
    """The facts of a completed order's session as settlement last checked them, and what was found.

    One row per order (re-checking updates it). Duplicates are found among these rows: the same vehicle or
    connector in overlapping sessions, the same station session (external id) charged on two orders."""

    __tablename__ = "order_check"

    order_id: str = Field(primary_key=True, max_length=64)
    station_id: str = Field(max_length=64)
    connector_id: str = Field(default="", max_length=64, index=True)
    vehicle_id: str = Field(default="", max_length=64, index=True)
    external_session_id: str = Field(default="", max_length=64, index=True)
    started_at: dt.datetime = Field(sa_column=utc_column(nullable=False, index=True))
    ended_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    energy_wh: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    charged_minor: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    expected_minor: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    fair_minor: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    currency: str = Field(max_length=3)
    rate_model_id: str = Field(default="", max_length=64)
    rate_model_version: int = Field(default=0)
    flags: str = Field(default="", max_length=300, description="Comma-separated AbnormalFlag names; '' = normal")
    detail: str = Field(default="", max_length=1000)
    checked_at: dt.datetime = Field(sa_column=utc_column(nullable=False))


class RateModelVersion(SQLModel, table=True):
    """One version of a tariff; `elements_json` holds the OCPI-shaped elements (see tariff.py)."""

    __tablename__ = "rate_model_version"

    rate_model_id: str = Field(primary_key=True, max_length=64)
    version: int = Field(primary_key=True)
    operator_id: str = Field(default="", max_length=64, index=True, description="'' = platform tariff")
    name: str = Field(max_length=200)
    currency: str = Field(max_length=3)
    elements_json: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    time_zone: str = Field(default="Asia/Shanghai", max_length=64)
    valid_from: dt.datetime = Field(sa_column=utc_column(nullable=False))
    valid_to: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    min_price_minor: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger(), nullable=True))
    max_price_minor: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger(), nullable=True))
    display_text: str = Field(default="", max_length=500)
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))


class RateAssignment(SQLModel, table=True):
    """Which rate model applies where, from when. Resolution: customer → station → operator → platform."""

    __tablename__ = "rate_assignment"

    id: str = Field(primary_key=True, max_length=64)
    rate_model_id: str = Field(max_length=64, index=True)
    scope: str = Field(max_length=16, description="customer|station|operator|platform")
    station_id: str = Field(default="", max_length=64, index=True)
    operator_id: str = Field(default="", max_length=64, index=True)
    customer_account_id: str = Field(default="", max_length=64, index=True)
    fleet_id: str = Field(default="", max_length=64, index=True)
    effective_from: dt.datetime = Field(sa_column=utc_column(nullable=False))
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))


class Coupon(SQLModel, table=True):
    __tablename__ = "coupon"

    id: str = Field(primary_key=True, max_length=64)
    code: str = Field(max_length=64, unique=True)
    currency: str = Field(max_length=3)
    amount_off_minor: int = Field(default=0, sa_column=_money())
    percent_off_bp: int = Field(default=0)
    max_discount_minor: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger(), nullable=True))
    min_order_minor: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger(), nullable=True))
    valid_from: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    valid_to: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    max_redemptions: int = Field(default=0)
    max_redemptions_per_account: int = Field(default=0)
    redemptions: int = Field(default=0)
    modes: str = Field(default="", max_length=40, description="Comma-separated PowerUpMode numbers; '' = any")
    operator_id: str = Field(default="", max_length=64)
    funding_account_id: str = Field(foreign_key="ledger_account.id", max_length=64)
    version: int = Field(default=1)
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))


class CouponRedemption(SQLModel, table=True):
    __tablename__ = "coupon_redemption"

    id: str = Field(primary_key=True, max_length=64)
    coupon_id: str = Field(foreign_key="coupon.id", index=True, max_length=64)
    account_id: str = Field(foreign_key="ledger_account.id", index=True, max_length=64)
    order_id: str = Field(default="", max_length=64)
    amount_minor: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    entry_id: str = Field(max_length=64)
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))


class Bill(SQLModel, table=True):
    __tablename__ = "bill"

    id: str = Field(primary_key=True, max_length=64)
    account_id: str = Field(foreign_key="ledger_account.id", index=True, max_length=64)
    currency: str = Field(max_length=3)
    period_start: dt.datetime = Field(sa_column=utc_column(nullable=False))
    period_end: dt.datetime = Field(sa_column=utc_column(nullable=False))
    order_id: str = Field(default="", max_length=64)
    subtotal_minor: int = Field(default=0, sa_column=_money())
    vat_minor: int = Field(default=0, sa_column=_money())
    discount_minor: int = Field(default=0, sa_column=_money())
    total_minor: int = Field(default=0, sa_column=_money())
    state: int = Field(description="BillState")
    due_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    issued_at: dt.datetime = Field(sa_column=utc_column(nullable=False, index=True))


class BillLine(SQLModel, table=True):
    __tablename__ = "bill_line"

    id: int | None = Field(default=None, primary_key=True)
    bill_id: str = Field(foreign_key="bill.id", index=True, max_length=64)
    line_no: int
    order_id: str = Field(default="", max_length=64)
    description: str = Field(default="", max_length=300)
    label: str = Field(default="", max_length=40)
    component: int = Field(default=0)
    quantity: int = Field(default=0, sa_column=_money())
    unit_price_micros: int = Field(default=0, sa_column=_money())
    amount_minor: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    vat_minor: int = Field(default=0, sa_column=_money())
    entry_id: str = Field(default="", max_length=64)


class Payout(SQLModel, table=True):
    __tablename__ = "payout"

    id: str = Field(primary_key=True, max_length=64)
    account_id: str = Field(foreign_key="ledger_account.id", index=True, max_length=64)
    amount_minor: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    currency: str = Field(max_length=3)
    period_start: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    period_end: dt.datetime = Field(sa_column=utc_column(nullable=False))
    state: int = Field(description="PaymentState")
    payment_id: str = Field(max_length=64)
    provider_reference: str = Field(default="", max_length=120)
    entry_id: str = Field(default="", max_length=64)
    batch: str = Field(default="", max_length=200, index=True, description="Idempotency key of the run")
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False, index=True))


class Statement(SQLModel, table=True):
    __tablename__ = "statement"

    id: str = Field(primary_key=True, max_length=64)
    provider: str = Field(max_length=40)
    period_start: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    period_end: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    line_count: int = Field(default=0)
    imported_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    reconciled: bool = Field(default=False)


class StatementLine(SQLModel, table=True):
    __tablename__ = "statement_line"

    id: int | None = Field(default=None, primary_key=True)
    statement_id: str = Field(foreign_key="statement.id", index=True, max_length=64)
    line_number: int
    provider_reference: str = Field(max_length=120)
    amount_minor: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    currency: str = Field(max_length=3)
    value_time: dt.datetime = Field(sa_column=utc_column(nullable=False))
    description: str = Field(default="", max_length=300)
    match_status: int = Field(default=0)
    payment_id: str = Field(default="", max_length=64)
