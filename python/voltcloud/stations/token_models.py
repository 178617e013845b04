"""Tables of charging tokens (OCPP idTags) and of abnormal sessions (energy delivered without a settled order).

Status columns hold the protobuf numbers (`IdTagStatus`: 1 accepted = active, 3 blocked; expiry is a time, not
a status, so a token expires without a write).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from voltcloud.platform.db import utc_column
from voltcloud.platform.enums import TagStatus


class ChargingToken(SQLModel, table=True):
    """An idTag one operator's chargers accept, and whose sessions are ordered and charged to `account_id`."""

    __tablename__ = "charging_token"
    __table_args__ = (sa.UniqueConstraint("operator_id", "id_tag", name="uq_charging_token_operator_tag"),)

    id: str = Field(primary_key=True, max_length=64)
    id_tag: str = Field(max_length=20)
    operator_id: str = Field(foreign_key="operator.id", index=True, max_length=64)
    owner_kind: str = Field(max_length=8, description="driver | fleet")
    owner_id: str = Field(index=True, max_length=64)
    sub_fleet_id: str | None = Field(default=None, max_length=64)
    vehicle_id: str = Field(foreign_key="vehicle.id", max_length=64)
    # The fleet driver a fleet card was issued to: the card works only while he is an approved member (issue 12).
    driver_id: str | None = Field(default=None, max_length=64)
    account_id: str = Field(max_length=64)
    status: int = Field(default=int(TagStatus.ACCEPTED), description="IdTagStatus: 1 accepted (active), 3 blocked")
    blocked_by: str | None = Field(default=None, max_length=160, description="Who blocked it: only they may lift it")
    expires_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    issued_by: str = Field(max_length=128, description="Subject that registered it")
    issuer_tenant: str = Field(default="", max_length=128)
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    updated_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    version: int = Field(default=1)


class AbnormalSession(SQLModel, table=True):
    """A station session that delivered energy and ended in no settled order: an operator must resolve it
    (bill the customer out of band, write it off, block the tag). One row per station session."""

    __tablename__ = "abnormal_session"

    id: str = Field(primary_key=True, max_length=64)
    session_id: str = Field(unique=True, max_length=64, description="StationSession id")
    operator_id: str | None = Field(default=None, index=True, max_length=64)
    station_id: str = Field(index=True, max_length=64)
    connector_id: str | None = Field(default=None, max_length=64)
    id_tag: str | None = Field(default=None, max_length=64)
    energy_wh: int = Field(default=0, sa_type=sa.BigInteger)
    reason: str = Field(max_length=40, description="UNKNOWN_TAG, BLOCKED_TAG, EXPIRED_TAG, NO_TAG, NO_ORDER")
    detail: str = Field(default="", max_length=500)
    state: int = Field(default=1, description="1 open, 2 resolved")
    alarm_id: str | None = Field(default=None, max_length=64)
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    resolved_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    resolved_by: str | None = Field(default=None, max_length=128)
