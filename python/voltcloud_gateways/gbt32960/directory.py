"""VIN -> vehicle id from the platform (`IngestService.ResolveVehicles`), the gateway's `VehicleDirectory`.

Answers are cached per VIN: a registered vehicle for `ttl_s` (a minute: a vehicle moved to another fleet or
removed stops being reported that fast), an unknown VIN for `negative_ttl_s` (seconds: a VIN registered just
after its terminal was refused gets in on the terminal's next login). Concurrent lookups are gathered for
`window_s` into one RPC of up to 1,000 VINs (the RPC's limit): after a gateway restart thousands of terminals
log in within seconds, and one round trip per VIN would be the platform's load, not theirs. Lookups of the same
VIN in flight share one answer.

When the platform cannot answer (down, slow, refusing), the last known vehicle id is used even if expired (a
running fleet keeps reporting through a platform restart); a VIN never seen is unknown (the terminal gets the
error flag and logs in again later) and that miss is not cached. `overrides` (the config's `vehicles`) are
answered without asking: for bench rigs and for VINs the platform must not be asked about.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from voltcloud.api.v1 import ingest_pb2, ingest_pb2_grpc

log = logging.getLogger(__name__)

MAX_BATCH = 1_000  # ResolveVehiclesRequest.vins limit
MAX_CACHED = 200_000
VIN_LEN = 17
Metadata = Callable[[], tuple[tuple[str, str], ...]]


class PlatformDirectory:
    def __init__(
        self,
        target: str,
        metadata: Metadata,
        gateway_id: str,
        *,
        overrides: dict[str, str] | None = None,
        ttl_s: float = 60.0,
        negative_ttl_s: float = 5.0,
        window_s: float = 0.005,
        timeout_s: float = 3.0,
    ) -> None:
        self.target = target
        self.metadata = metadata
        self.gateway_id = gateway_id
        self.overrides = {vin.upper(): vid for vin, vid in (overrides or {}).items()}
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.window_s = window_s
        self.timeout_s = timeout_s
        self._cache: dict[str, tuple[str, float]] = {}  # VIN -> (vehicle id or "", valid until, loop time)
        self._known: dict[str, str] = {}  # VIN -> last vehicle id the platform named (offline fallback)
        self._waiting: dict[str, asyncio.Future[str | None]] = {}  # VINs of the next RPC
        self._flush: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._channel: grpc.aio.Channel | None = None
        self.asked = 0  # RPCs made (tests and metrics)
        self.failures = 0

    async def resolve(self, vin: str) -> str | None:
        vin = vin.strip().upper()
        if vin in self.overrides:
            return self.overrides[vin]
        if len(vin) != VIN_LEN:
            return None  # the platform would refuse the whole batch for it
        loop = asyncio.get_running_loop()
        cached = self._cache.get(vin)
        if cached is not None and cached[1] > loop.time():
            return cached[0] or None
        waiter = self._waiting.get(vin)
        if waiter is None:
            waiter = self._waiting[vin] = loop.create_future()
            if len(self._waiting) >= MAX_BATCH:
                self._send()
            elif self._flush is None:
                self._flush = loop.call_later(self.window_s, self._send)
        return await asyncio.shield(waiter)

    def _send(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        batch, self._waiting = self._waiting, {}
        if batch:
            task = asyncio.create_task(self._ask(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _ask(self, batch: dict[str, asyncio.Future[str | None]]) -> None:
        vins = list(batch)
        try:
            answers = await self._rpc(vins)
        except grpc.aio.AioRpcError as error:
            self.failures += 1
            log.warning("gbt32960: ResolveVehicles failed (%s: %s)", error.code().name, error.details())
            answers = [self._known.get(vin, "") for vin in vins]
            self._settle(batch, answers, cache=False)
            return
        except Exception as error:  # never leave a terminal's login hanging
            self.failures += 1
            log.exception("gbt32960: ResolveVehicles failed")
            for waiter in batch.values():
                if not waiter.done():
                    waiter.set_exception(error)
            return
        self._settle(batch, answers, cache=True)

    async def _rpc(self, vins: list[str]) -> list[str]:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target)
        stub = ingest_pb2_grpc.IngestServiceStub(self._channel)
        self.asked += 1
        reply = await stub.ResolveVehicles(
            ingest_pb2.ResolveVehiclesRequest(gateway_id=self.gateway_id, vins=vins),
            metadata=self.metadata(),
            timeout=self.timeout_s,
        )
        if len(reply.vehicles) != len(vins):
            raise ValueError(f"ResolveVehicles answered {len(reply.vehicles)} VINs for {len(vins)}")
        return [entry.vehicle_id for entry in reply.vehicles]

    def _settle(self, batch: dict[str, asyncio.Future[str | None]], answers: list[str], *, cache: bool) -> None:
        now = asyncio.get_running_loop().time()
        if cache and len(self._cache) + len(batch) > MAX_CACHED:  # random VINs must not grow memory unbounded
            self._cache = {vin: entry for vin, entry in self._cache.items() if entry[1] > now}
            if len(self._cache) + len(batch) > MAX_CACHED:
                self._cache.clear()
        for (vin, waiter), vehicle_id in zip(batch.items(), answers, strict=True):
            if cache:
                self._cache[vin] = (vehicle_id, now + (self.ttl_s if vehicle_id else self.negative_ttl_s))
                if vehicle_id:
                    self._known[vin] = vehicle_id
                else:
                    self._known.pop(vin, None)  # removed or moved away: no offline fallback either
            if not waiter.done():
                waiter.set_result(vehicle_id or None)

    def forget(self, vin: str | None = None) -> None:
        """Drops cached answers (one VIN, or all): the next lookup asks the platform."""
        if vin is None:
            self._cache.clear()
        else:
            self._cache.pop(vin.strip().upper(), None)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
