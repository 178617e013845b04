"""A database held by another writer past the busy timeout is a lost race (ABORTED, retry), never UNKNOWN."""

from __future__ import annotations

import asyncio
import sqlite3

import grpc
import pytest
import sqlalchemy as sa

from voltcloud.api.v1 import stations_pb2, stations_pb2_grpc
from voltcloud.platform.auth import Role

from .conftest import RunningPlatform


async def test_a_write_blocked_by_another_writer_answers_aborted_and_succeeds_on_retry(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    db = running.platform.db
    if db.dialect != "sqlite":
        pytest.skip("the file lock is SQLite's; PostgreSQL's lost races are covered by the order race tests")
    stub = stations_pb2_grpc.StationServiceStub(channel)
    request = stations_pb2.CreateOperatorRequest(idempotency_key="busy-1", name="Busy Ops", country="CN")
    md = running.metadata(Role.PLATFORM_ADMIN)
    holder = sqlite3.connect(str(sa.engine.make_url(db.url).database), isolation_level=None, check_same_thread=False)
    # Another process's writer, holding the file past the busy timeout. Taken in a thread: blocking the event
    # loop in SQLite's busy handler would stall a platform write transaction already under way (a background
    # loop's), which then holds the lock until the holder gives up.
    await asyncio.to_thread(holder.execute, "BEGIN EXCLUSIVE")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateOperator(request, metadata=md, timeout=30)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert refused.value.code() is grpc.StatusCode.ABORTED, refused.value.details()
    assert "retry" in (refused.value.details() or "")
    created = await stub.CreateOperator(request, metadata=md, timeout=30)
    assert created.operator.name == "Busy Ops"
