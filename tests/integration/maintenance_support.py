"""Real parts for the maintenance tests: a platform on a clock the test moves, a real local SMTP server
(aiosmtpd) and a real HTTP server receiving webhooks."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import grpc
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from voltcloud.api.v1 import maintenance_pb2_grpc
from voltcloud.platform.auth import Role, Tenant
from voltcloud.platform.clock import FrozenClock
from voltcloud.server import Platform

from .conftest import platform_settings

Metadata = tuple[tuple[str, str], ...]
OP1, OP2 = "op-0001", "op-0002"


def md(platform: Platform, subject: str, role: Role, operator: str | None = None) -> Metadata:
    tenant = Tenant("operator", operator) if operator else None
    return (("authorization", f"Bearer {platform.tokens.mint(subject, role, tenant)}"),)


@dataclass
class Callers:
    admin: Metadata
    operator: Metadata
    engineer: Metadata
    other_operator: Metadata


def callers(platform: Platform) -> Callers:
    return Callers(
        md(platform, "admin", Role.PLATFORM_ADMIN),
        md(platform, "alice", Role.OPERATOR, OP1),
        md(platform, "eng-1", Role.ENGINEER, OP1),
        md(platform, "bob", Role.OPERATOR, OP2),
    )


@asynccontextmanager
async def maintenance_platform(
    tmp_path: Path, database_url: str, clock: FrozenClock | None = None, **overrides: object
) -> AsyncIterator[tuple[Platform, maintenance_pb2_grpc.MaintenanceServiceStub]]:
    platform = Platform(platform_settings(tmp_path, database_url, **overrides), clock=clock)
    await platform.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{platform.port}") as channel:
            yield platform, maintenance_pb2_grpc.MaintenanceServiceStub(channel)
    finally:
        await platform.stop(grace=0)


# ---- a real SMTP server (aiosmtpd) ---------------------------------------------------------------------------


class _AnyPortController(Controller):
    """aiosmtpd's threaded Controller on a port the OS picks: the stock one connects to `self.port` to start the
    server, which would be 0; learning the bound port first lets parallel tests never collide on a fixed one."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


@dataclass
class SmtpServer:
    """The messages aiosmtpd accepted, in order. aiosmtpd runs its own loop on a thread; each accepted message is
    handed over to the test's loop so `wait_for` can await it there."""

    loop: asyncio.AbstractEventLoop
    messages: list[EmailMessage] = field(default_factory=list)
    port: int = 0
    received: asyncio.Event = field(default_factory=asyncio.Event)

    # aiosmtpd calls its hooks by name (handle_DATA: one whole message, after the client's final dot).
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        self.loop.call_soon_threadsafe(self._arrived, parsed)
        return "250 Message accepted for delivery"

    def _arrived(self, message: EmailMessage) -> None:
        self.messages.append(message)
        self.received.set()

    async def wait_for(self, count: int, timeout_s: float = 20.0) -> list[EmailMessage]:
        async with asyncio.timeout(timeout_s):
            while len(self.messages) < count:
                self.received.clear()
                await self.received.wait()
        return self.messages

    async def wait_until(self, matches: Callable[[EmailMessage], bool], timeout_s: float = 20.0) -> EmailMessage:
        """The first message `matches` accepts, waiting for it: for tests where other mail (reminders, offers)
        arrives in an order the test does not fix."""
        async with asyncio.timeout(timeout_s):
            while True:
                found = next((x for x in self.messages if matches(x)), None)
                if found is not None:
                    return found
                self.received.clear()
                await self.received.wait()


@asynccontextmanager
async def smtp_server() -> AsyncIterator[SmtpServer]:
    server = SmtpServer(asyncio.get_running_loop())
    controller = _AnyPortController(server, hostname="127.0.0.1", port=0)
    await asyncio.to_thread(controller.start)  # start and stop wait on the server's thread
    server.port = controller.port
    try:
        yield server
    finally:
        await asyncio.to_thread(controller.stop)


# ---- a real HTTP server for webhooks -----------------------------------------------------------------------


@dataclass
class WebhookServer:
    fail_first: int = 0  # answer 503 to this many requests first
    posts: list[dict[str, object]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    attempts: int = 0
    port: int = 0
    received: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n")[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.attempts += 1
        if self.attempts <= self.fail_first:
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        else:
            self.posts.append(json.loads(body))
            self.keys.append(headers.get("idempotency-key", ""))
            writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            self.received.set()
        await writer.drain()
        writer.close()

    async def wait_for(self, count: int, timeout_s: float = 20.0) -> list[dict[str, object]]:
        async with asyncio.timeout(timeout_s):
            while len(self.posts) < count:
                self.received.clear()
                await self.received.wait()
        return self.posts


@asynccontextmanager
async def webhook_server(fail_first: int = 0) -> AsyncIterator[WebhookServer]:
    server = WebhookServer(fail_first=fail_first)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()


def frozen_now() -> FrozenClock:
    """A test clock starting just ahead of the real now: rows other rooms write (an alarm from the uplink) carry
    the real time, and must not sort after what the test does next on this clock."""
    return FrozenClock(dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=3))


def catch_up(clock: FrozenClock) -> None:
    """Moves the test clock ahead of the real now again (starting a platform takes a while on a loaded machine)."""
    ahead = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=30)
    if ahead > clock.now():
        clock.advance(ahead - clock.now())


# ---- an SMS provider for the SMS interface (no provider is reachable here; this one records) -----------------

SMS_SENT: list[tuple[str, str, str]] = []


class RecordingSms:
    """A `notify.SmsProvider` plugged in through the `sms_provider` setting, as a real one would be."""

    def __init__(self, settings: object) -> None:
        self.settings = settings

    async def send_sms(self, phone: str, text: str, *, key: str) -> None:
        SMS_SENT.append((phone, text, key))
