"""The shared gateway uplink: one bidirectional gRPC stream per gateway to `IngestService.Uplink`.

Every message gets the next sequence number and is written to a bounded on-disk outbox (SQLite) *before*
it is sent, so nothing accepted is lost while the platform is unreachable or restarts. The platform acks the
highest contiguous seq it applied; acked rows are deleted. On (re)connect the client sends a Hello, the
platform answers with its ack, and everything after it is replayed; the platform drops duplicates.
Reconnects back off exponentially (with jitter). Commands arriving on the stream are handed to the
gateway's handler; their results travel back as sequenced messages too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
from google.protobuf import timestamp_pb2

from voltcloud.api.v1 import ingest_pb2, ingest_pb2_grpc, stations_pb2

log = logging.getLogger(__name__)

CommandHandler = Callable[[ingest_pb2.Command], Awaitable[stations_pb2.StationCommandResult]]


class BufferFull(Exception):
    """The outbox holds `max_messages` unacknowledged messages; the caller must refuse or drop new input."""


class Outbox:
    """Append-only SQLite outbox of unacknowledged uplink messages, plus the seq counter (never reused)."""

    def __init__(self, path: Path | str, max_messages: int = 200_000) -> None:
        self.path = str(path)
        self.max_messages = max_messages
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
        self.last_seq = self._meta("last_seq")
        self.acked = self._meta("acked")
        self.count = int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        self.fresh = self.last_seq == 0 and self.count == 0

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set(self, key: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v", (key, value)
        )

    def append(self, message: ingest_pb2.GatewayToPlatform) -> int:
        if self.count >= self.max_messages:
            raise BufferFull(f"uplink outbox full ({self.count} unacknowledged messages)")
        seq = self.last_seq + 1
        message.seq = seq
        self._db.execute("BEGIN")
        try:
            self._db.execute("INSERT INTO outbox (seq, payload) VALUES (?, ?)", (seq, message.SerializeToString()))
            self._set("last_seq", seq)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self.last_seq = seq
        self.count += 1
        self.fresh = False
        return seq

    def ack(self, seq: int) -> None:
        if seq <= self.acked:
            return
        self._db.execute("BEGIN")
        self._db.execute("DELETE FROM outbox WHERE seq <= ?", (seq,))
        self._set("acked", seq)
        self._db.execute("COMMIT")
        self.acked = seq
        self.count = int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def adopt(self, platform_ack: int) -> None:
        """The platform has applied more than this outbox ever numbered (the gateway lost its state): move
        our counter, and any pending messages, past the platform's cursor so they are not taken as replays."""
        if platform_ack <= self.last_seq:
            return
        offset = platform_ack - self.acked
        rows = self._db.execute("SELECT seq, payload FROM outbox ORDER BY seq").fetchall()
        self._db.execute("BEGIN")
        self._db.execute("DELETE FROM outbox")
        for seq, payload in rows:
            message = ingest_pb2.GatewayToPlatform.FromString(payload)
            message.seq = seq + offset
            self._db.execute(
                "INSERT INTO outbox (seq, payload) VALUES (?, ?)", (message.seq, message.SerializeToString())
            )
        self.last_seq = max(self.last_seq + offset, platform_ack)
        self.acked = platform_ack
        self._set("last_seq", self.last_seq)
        self._set("acked", platform_ack)
        self._db.execute("COMMIT")
        log.warning("uplink outbox renumbered by %d to follow the platform's cursor %d", offset, platform_ack)

    def pending(self, after: int, limit: int = 256) -> list[tuple[int, bytes]]:
        rows = self._db.execute(
            "SELECT seq, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        ).fetchall()
        return [(int(seq), bytes(payload)) for seq, payload in rows]

    def close(self) -> None:
        self._db.close()


def now_timestamp() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(dt.datetime.now(dt.UTC))
    return stamp


class UplinkClient:
    def __init__(
        self,
        target: str,
        *,
        gateway_id: str,
        kind: int,
        token: str | Callable[[], str],
        station_ids: list[str],
        outbox_path: Path | str,
        max_buffered: int = 200_000,
        on_command: CommandHandler | None = None,
        version: str = "voltcloud-gateways/0.1",
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
    ) -> None:
        self.target = target
        self.gateway_id = gateway_id
        self.kind = kind
        self._token = token
        self.station_ids = list(station_ids)
        self.outbox = Outbox(outbox_path, max_buffered)
        self.on_command = on_command
        self.version = version
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.connected = asyncio.Event()
        self.rejections: list[ingest_pb2.UplinkRejection] = []
        self.last_error: str = ""
        self._wake = asyncio.Event()
        self._acked = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._command_tasks: set[asyncio.Task[None]] = set()

    # ---- producer side ----

    def _append(self, message: ingest_pb2.GatewayToPlatform) -> int:
        seq = self.outbox.append(message)
        self._wake.set()
        return seq

    def publish_event(self, event: ingest_pb2.StationEvent) -> int:
        """Persists the event in the outbox (raises BufferFull when full) and returns its seq."""
        if not event.HasField("time"):
            event.time.CopyFrom(now_timestamp())
        return self._append(ingest_pb2.GatewayToPlatform(event=event))

    def publish_telemetry(self, batch: ingest_pb2.TelemetryBatch) -> int:
        return self._append(ingest_pb2.GatewayToPlatform(telemetry=batch))

    def publish_command_result(self, station_id: str, result: stations_pb2.StationCommandResult) -> int:
        return self._append(
            ingest_pb2.GatewayToPlatform(command_result=ingest_pb2.CommandResult(station_id=station_id, result=result))
        )

    @property
    def acked_seq(self) -> int:
        return self.outbox.acked

    def unacked(self) -> int:
        """Messages written but not yet acknowledged by the platform (how far behind it is)."""
        return self.outbox.last_seq - self.outbox.acked

    async def wait_acked(self, seq: int, wait_s: float = 10.0) -> None:
        async def wait() -> None:
            async with self._acked:
                await self._acked.wait_for(lambda: self.outbox.acked >= seq)

        await asyncio.wait_for(wait(), wait_s)

    # ---- lifecycle ----

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"uplink-{self.gateway_id}")
        return self._task

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        for task in list(self._command_tasks):
            task.cancel()
        if self._command_tasks:
            await asyncio.wait(list(self._command_tasks), timeout=1.0)
        self.outbox.close()

    async def run(self) -> None:
        delay = self.backoff_initial_s
        current = asyncio.current_task()
        while not self._stopping:
            try:
                await self._session()
                delay = self.backoff_initial_s
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as error:
                if self._stopping or (current is not None and current.cancelling()):
                    # gRPC reports our own cancellation as a CANCELLED call: honour it, do not reconnect.
                    raise asyncio.CancelledError from None
                self.last_error = f"{error.code().name}: {error.details()}"
                log.warning("uplink %s: stream ended: %s", self.gateway_id, self.last_error)
                if self._was_connected:
                    delay = self.backoff_initial_s
            except Exception as error:
                self.last_error = repr(error)
                log.exception("uplink %s: stream failed", self.gateway_id)
            self.connected.clear()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.backoff_max_s)

    _was_connected = False
    _stopping = False

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        token = self._token() if callable(self._token) else self._token
        return (("authorization", f"Bearer {token}"),)

    async def _session(self) -> None:
        self._was_connected = False
        hello_acked = asyncio.Event()
        async with grpc.aio.insecure_channel(
            self.target, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        ) as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            call = stub.Uplink(self._requests(hello_acked), metadata=self._metadata())
            async for response in call:
                kind = response.WhichOneof("msg")
                if kind == "ack":
                    await self._on_ack(response.ack.acked_seq, first=not hello_acked.is_set())
                    if not hello_acked.is_set():
                        hello_acked.set()
                        self._was_connected = True
                        self.connected.set()
                        log.info("uplink %s connected, platform ack %d", self.gateway_id, response.ack.acked_seq)
                elif kind == "command":
                    self._spawn_command(response.command)
                elif kind == "rejection":
                    r = response.rejection
                    log.error("uplink %s: seq %d rejected: %s: %s", self.gateway_id, r.seq, r.field, r.description)
                    self.rejections.append(r)

    async def _on_ack(self, seq: int, *, first: bool) -> None:
        if first and seq > self.outbox.last_seq:
            self.outbox.adopt(seq)
        elif seq > self.outbox.last_seq:
            seq = self.outbox.last_seq
        self.outbox.ack(seq)
        async with self._acked:
            self._acked.notify_all()

    async def _requests(self, hello_acked: asyncio.Event) -> AsyncIterator[ingest_pb2.GatewayToPlatform]:
        yield ingest_pb2.GatewayToPlatform(
            seq=self.outbox.last_seq,
            hello=ingest_pb2.Hello(
                gateway_id=self.gateway_id,
                kind=self.kind,  # type: ignore[arg-type]
                last_acked_seq=self.outbox.acked,
                version=self.version,
                station_ids=self.station_ids,
            ),
        )
        await hello_acked.wait()
        cursor = self.outbox.acked
        while True:
            rows = self.outbox.pending(cursor)
            if not rows:
                self._wake.clear()
                rows = self.outbox.pending(cursor)
                if not rows:
                    await self._wake.wait()
                    continue
            for seq, payload in rows:
                yield ingest_pb2.GatewayToPlatform.FromString(payload)
                cursor = seq

    def _spawn_command(self, command: ingest_pb2.Command) -> None:
        task = asyncio.create_task(self._run_command(command))
        self._command_tasks.add(task)
        task.add_done_callback(self._command_tasks.discard)

    async def _run_command(self, command: ingest_pb2.Command) -> None:
        if self.on_command is None:
            result = stations_pb2.StationCommandResult(
                command_id=command.command_id,
                status=stations_pb2.COMMAND_STATUS_NOT_SUPPORTED,
                detail="this gateway takes no commands",
            )
        else:
            try:
                result = await self.on_command(command)
            except Exception as error:
                log.exception("command %s failed", command.command_id)
                result = stations_pb2.StationCommandResult(
                    command_id=command.command_id, status=stations_pb2.COMMAND_STATUS_FAILED, detail=repr(error)[:400]
                )
        result.command_id = command.command_id
        if not result.HasField("result_time"):
            result.result_time.CopyFrom(now_timestamp())
        try:
            self.publish_command_result(command.station_id, result)
        except BufferFull:
            log.error("command %s result dropped: outbox full", command.command_id)
