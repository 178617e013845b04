"""Tables of the uplink: each gateway's applied sequence number and the log of persisted station events."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from voltcloud.platform.db import utc_column


class GatewayCursor(SQLModel, table=True):
    """The highest contiguous uplink seq the platform applied for a gateway: replays at or below it are
    dropped, across platform restarts too. Updated with a compare-and-set on `last_seq`."""

    gateway_id: str = Field(primary_key=True, max_length=64)
    last_seq: int = Field(default=0, sa_type=sa.BigInteger)
    updated_at: dt.datetime = Field(sa_column=utc_column(nullable=False))


class StationEventLog(SQLModel, table=True):
    """Every persisted uplink event, raw. (gateway_id, seq) is unique: an event is applied at most once."""

    __table_args__ = (sa.UniqueConstraint("gateway_id", "seq", name="uq_stationeventlog_gateway_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    gateway_id: str = Field(max_length=64)
    seq: int = Field(sa_type=sa.BigInteger)
    station_id: str = Field(default="", index=True, max_length=64)
    kind: str = Field(max_length=40)
    event_time: dt.datetime = Field(sa_column=utc_column(nullable=False))
    received_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    payload: bytes = Field(sa_type=sa.LargeBinary)
