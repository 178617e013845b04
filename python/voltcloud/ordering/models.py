"""Tables of the ordering domain: quotes, orders with their event history, reservations, customer profiles.

Enum-like columns hold the protobuf numbers (OrderState, PowerUpMode, ResourceKind, ReservationState).
Structured values that are only ever read whole (a quote's options, an order's chosen option) are JSON text.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from voltcloud.platform.db import utc_column
from voltcloud.platform.enums import ReservationState


class Quote(SQLModel, table=True):
    """One QuotePowerUp answer: the ranked options, valid until `expires_at`."""

    id: str = Field(primary_key=True, max_length=64)
    requested_by: str = Field(index=True, max_length=128, description="Principal subject")
    vehicle_id: str = Field(foreign_key="vehicle.id", index=True, max_length=64)
    fleet_id: str | None = Field(default=None, max_length=64)
    lat: float
    lng: float
    soc_permille: int
    target_soc_permille: int
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    expires_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    options_json: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))


# Optimistic concurrency: SQLAlchemy adds `AND version = :v` to every UPDATE of an order and bumps it;
# a lost race raises StaleDataError, which the domain turns into ABORTED.
_order_version = sa.Column("version", sa.Integer, nullable=False)


class Order(SQLModel, table=True):
    """A power-up order. `state` moves only through `ordering.states`; every move writes an OrderEvent."""

    __tablename__ = "powerup_order"
    __mapper_args__: ClassVar[Any] = {"version_id_col": _order_version}
    __table_args__ = (sa.UniqueConstraint("created_by", "idempotency_key", name="uq_order_idempotency"),)

    id: str = Field(primary_key=True, max_length=64)
    quote_id: str = Field(foreign_key="quote.id", index=True, max_length=64)
    option_id: str = Field(max_length=32)
    option_json: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    created_by: str = Field(max_length=128)
    creator_role: int = Field(default=0)
    creator_tenant: str = Field(default="", max_length=128)
    idempotency_key: str = Field(max_length=128)
    request_hash: str = Field(max_length=64)
    mode: int = Field(description="PowerUpMode")
    state: int = Field(index=True, description="OrderState")
    vehicle_id: str = Field(foreign_key="vehicle.id", index=True, max_length=64)
    driver_id: str | None = Field(default=None, index=True, max_length=64)
    fleet_id: str | None = Field(default=None, index=True, max_length=64)
    operator_id: str | None = Field(default=None, index=True, max_length=64)
    station_id: str | None = Field(default=None, index=True, max_length=64)
    connector_id: str | None = Field(default=None, max_length=64)
    pack_id: str | None = Field(default=None, max_length=64)
    unit_id: str | None = Field(default=None, index=True, max_length=64)
    payer_account_id: str = Field(max_length=64)
    hold_id: str = Field(max_length=64)
    hold_amount_minor: int
    currency: str = Field(max_length=3)
    rate_model_id: str = Field(default="", max_length=64)
    rate_model_version: int = 0
    reservation_id: str | None = Field(default=None, max_length=64)
    task_id: str | None = Field(default=None, max_length=64)
    energy_wh: int = 0
    final_amount_minor: int | None = None
    cancellation_fee_minor: int = 0
    journal_entry_id: str | None = Field(default=None, max_length=64)
    pack_out_id: str | None = Field(default=None, max_length=64)
    pack_in_id: str | None = Field(default=None, max_length=64)
    started_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    service_by: dt.datetime = Field(
        sa_column=utc_column(nullable=False), description="Service must start by then or the order expires"
    )
    reason: str = Field(default="", max_length=500)
    cancel_key: str | None = Field(default=None, max_length=128)
    last_event_seq: int = 0
    coupon_code: str | None = Field(default=None, max_length=64, description="Validated at order, redeemed at capture")
    version: int = Field(default=1, sa_column=_order_version)
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False, index=True))
    updated_at: dt.datetime = Field(sa_column=utc_column(nullable=False))


class OrderEvent(SQLModel, table=True):
    """One row per transition or progress fact: the order's audit trail (gap-free `seq` from 1)."""

    __tablename__ = "order_event"

    order_id: str = Field(foreign_key="powerup_order.id", primary_key=True, max_length=64)
    seq: int = Field(primary_key=True)
    time: dt.datetime = Field(sa_column=utc_column(nullable=False))
    from_state: int
    to_state: int
    actor_subject: str = Field(max_length=128)
    actor_role: int
    actor_tenant: str = Field(default="", max_length=128)
    lat: float | None = None
    lng: float | None = None
    energy_wh: int = 0
    amount_minor: int | None = None
    currency: str = Field(default="", max_length=3)
    reason: str = Field(default="", max_length=500)
    eta_time: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


# Reservation.state values (plain ints for the column).
RESERVATION_ACTIVE = int(ReservationState.ACTIVE)
RESERVATION_USED = int(ReservationState.USED)
RESERVATION_CANCELLED = int(ReservationState.CANCELLED)
RESERVATION_EXPIRED = int(ReservationState.EXPIRED)


class Reservation(SQLModel, table=True):
    """A connector or swap lane (and maybe a pack) held for [start, end)."""

    __table_args__ = (sa.UniqueConstraint("created_by", "idempotency_key", name="uq_reservation_idempotency"),)

    id: str = Field(primary_key=True, max_length=64)
    station_id: str = Field(foreign_key="station.id", index=True, max_length=64)
    connector_id: str | None = Field(default=None, index=True, max_length=64)
    lane: int = 0
    pack_id: str | None = Field(default=None, max_length=64)
    vehicle_id: str = Field(foreign_key="vehicle.id", index=True, max_length=64)
    order_id: str | None = Field(default=None, max_length=64)
    starts_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    ends_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    state: int = Field(index=True, description="ReservationState")
    holds_resource: bool = Field(default=False, description="The connector/pack status was set RESERVED for it")
    fee_minor: int = 0
    currency: str = Field(default="CNY", max_length=3)
    created_by: str = Field(max_length=128)
    idempotency_key: str = Field(max_length=128)
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    version: int = 1


class CustomerProfile(SQLModel, table=True):
    """What a customer told us they like; their order history is read from `order`."""

    subject: str = Field(primary_key=True, max_length=128)
    favourite_station_ids: str = Field(default="[]", sa_column=sa.Column(sa.Text(), nullable=False))
    preferred_modes: str = Field(default="[]", sa_column=sa.Column(sa.Text(), nullable=False))
    price_sensitivity_permille: int = Field(
        default=500, ge=0, le=1000, description="0 = only time matters, 1000 = only price matters"
    )
    # Reminder settings: stored here for the telemetry ingest to raise (0 = no reminder).
    low_battery_reminder_permille: int = Field(default=0, ge=0, le=1000)
    fatigue_limit_minutes: int = Field(default=0, ge=0, le=1440)


class RoadConditionBatch(SQLModel, table=True):
    """A PushRoadConditions batch, kept so every replica's engine sync applies it (retries: platform idempotency)."""

    key: str = Field(primary_key=True, max_length=200)
    applied: int
    rejected: int
    cells_json: str = Field(
        default="[]", sa_column=sa.Column(sa.Text(), nullable=False), description="[[cell, factor, expires_unix]]"
    )
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False, index=True))


class Complaint(SQLModel, table=True):
    """A customer's complaint about one order; reviewed once by the order's operator (ComplaintState)."""

    id: str = Field(primary_key=True, max_length=64)
    order_id: str = Field(foreign_key="powerup_order.id", index=True, max_length=64)
    filed_by: str = Field(index=True, max_length=128, description="Principal subject")
    fleet_id: str | None = Field(default=None, index=True, max_length=64)
    operator_id: str | None = Field(default=None, index=True, max_length=64)
    state: int = Field(index=True, description="ComplaintState")
    reason: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    evidence_uris: str = Field(default="[]", sa_column=sa.Column(sa.Text(), nullable=False), description="JSON list")
    refund_minor: int = 0
    currency: str = Field(default="CNY", max_length=3)
    refund_entry_id: str | None = Field(default=None, max_length=64)
    review_reason: str = Field(default="", max_length=500)
    reviewed_by: str | None = Field(default=None, max_length=128)
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    reviewed_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    version: int = 1


class Feedback(SQLModel, table=True):
    """A suggestion or feedback, optionally about a station or order (then its operator reads it)."""

    id: str = Field(primary_key=True, max_length=64)
    submitted_by: str = Field(index=True, max_length=128, description="Principal subject")
    operator_id: str | None = Field(default=None, index=True, max_length=64)
    station_id: str | None = Field(default=None, max_length=64)
    order_id: str | None = Field(default=None, max_length=64)
    category: str = Field(default="", max_length=100)
    rating: int = Field(default=0, ge=0, le=5)
    text: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
