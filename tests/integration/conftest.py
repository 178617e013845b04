"""A real platform on an ephemeral port, called over real gRPC channels."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from voltcloud.config import Settings
from voltcloud.platform.auth import Role, Tenant
from voltcloud.server import Platform

JWT_KEY = "integration-test-key-0123456789abcdef0123456789"


@dataclass
class RunningPlatform:
    platform: Platform
    target: str

    def token(self, role: Role, tenant: Tenant | None = None, subject: str = "tester") -> str:
        return self.platform.tokens.mint(subject, role, tenant)

    def metadata(self, role: Role, tenant: Tenant | None = None) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token(role, tenant)}"),)


def platform_settings(tmp_path: Path, database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "jwt_key": JWT_KEY,
        "seed_demo": True,
        "grace_period_s": 5.0,
        # gRPC drops a call that waited 1 s in its intake queue (overload shedding, docs/operations.md); tests
        # that fire bursts on a shared, loaded machine must not lose calls to it, so it is gRPC's default here.
        "rpc_max_unrequested_s": 30,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def serving(tmp_path: Path, database_url: str, **overrides: object) -> AsyncIterator[Platform]:
    """A started platform on an ephemeral port, stopped (without grace) on exit."""
    platform = Platform(platform_settings(tmp_path, database_url, **overrides))
    await platform.start()
    try:
        yield platform
    finally:
        await platform.stop(grace=0)


@asynccontextmanager
async def channel_to(platform: Platform) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{platform.port}") as ch:
        yield ch


@pytest.fixture
async def running(tmp_path: Path, database_url: str) -> AsyncIterator[RunningPlatform]:
    async with serving(tmp_path, database_url) as platform:
        yield RunningPlatform(platform, f"127.0.0.1:{platform.port}")


@pytest.fixture
async def channel(running: RunningPlatform) -> AsyncIterator[grpc.aio.Channel]:
    async with channel_to(running.platform) as ch:
        yield ch


@pytest.fixture
def now() -> Callable[[], dt.datetime]:
    return lambda: dt.datetime.now(dt.UTC)


def field_violations(err: grpc.aio.AioRpcError) -> list[str]:
    """The fields a refused call's `google.rpc.BadRequest` detail names."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    fields: list[str] = []
    for detail in status.details if status else []:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return fields
