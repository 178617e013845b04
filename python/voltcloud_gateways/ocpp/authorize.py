"""idTag authorization for the OCPP central system: the platform decides (`IngestService.AuthorizeIdTag`).

Answers are cached in memory until the platform's `cache_until` (about a minute: a block takes effect that
fast) and the last answer per idTag is kept in the gateway's SQLite state. When the platform cannot be asked
(unreachable, slow, refusing), the fallback is, in turn: the last platform answer for that idTag if it has not
expired since; the entry of the charger's local authorization list the gateway sent (`send_local_list`); else
Invalid. A tag accepted offline that the platform does not accept still cannot charge for free: the platform
flags the session as abnormal when it ends.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from voltcloud.api.v1 import ingest_pb2, ingest_pb2_grpc
from voltcloud_gateways.ocpp.central import OcppState, iso

log = logging.getLogger(__name__)

STATUS_NAMES = {
    ingest_pb2.ID_TAG_STATUS_ACCEPTED: "Accepted",
    ingest_pb2.ID_TAG_STATUS_INVALID: "Invalid",
    ingest_pb2.ID_TAG_STATUS_BLOCKED: "Blocked",
    ingest_pb2.ID_TAG_STATUS_EXPIRED: "Expired",
}
# The platform could not answer (down, overloaded, too slow): the offline fallback applies.
OFFLINE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
MAX_CACHED = 10_000
Metadata = Callable[[], tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class IdTagInfo:
    """OCPP 1.6 idTagInfo: an AuthorizationStatus and the tag's expiry, if any."""

    status: str
    expiry: dt.datetime | None = None

    @property
    def accepted(self) -> bool:
        return self.status == "Accepted"

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status}
        if self.expiry is not None:
            body["expiryDate"] = iso(self.expiry)
        return body


ACCEPTED = IdTagInfo("Accepted")
INVALID = IdTagInfo("Invalid")


class Authorizer:
    def __init__(
        self,
        target: str,
        metadata: Metadata,
        gateway_id: str,
        state: OcppState,
        *,
        timeout_s: float = 2.0,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.target = target
        self.metadata = metadata
        self.gateway_id = gateway_id
        self.state = state
        self.timeout_s = timeout_s
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._cache: dict[str, tuple[IdTagInfo, dt.datetime]] = {}  # idTag -> (answer, reuse until)
        self._channel: grpc.aio.Channel | None = None
        self.asked = 0  # platform round trips (tests and metrics)
        self.offline_answers = 0

    async def check(self, cp_id: str, station_id: str, id_tag: str) -> IdTagInfo:
        now = self.clock()
        cached = self._cache.get(id_tag)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            info, until = await self._ask(station_id, id_tag)
        except grpc.aio.AioRpcError as error:
            if error.code() not in OFFLINE_CODES:  # the platform answered and refused: never a fallback
                log.error("idTag %s: platform refused: %s", id_tag, _why(error))
                return INVALID
            self.offline_answers += 1
            info = self._offline(cp_id, id_tag, now)
            log.warning("idTag %s: platform not asked (%s); offline answer %s", id_tag, _why(error), info.status)
            return info
        if len(self._cache) >= MAX_CACHED:  # a charger sending random tags must not grow memory without bound
            self._cache = {tag: entry for tag, entry in self._cache.items() if entry[1] > now}
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
        self._cache[id_tag] = (info, until)
        # Invalid is the offline default anyway: kept only to overrule an older answer or a local-list entry.
        if info.status != "Invalid" or self.state.known_tag(id_tag):
            self.state.remember_auth(id_tag, info.status, info.expiry, now)
        return info

    async def _ask(self, station_id: str, id_tag: str) -> tuple[IdTagInfo, dt.datetime]:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target)
        stub = ingest_pb2_grpc.IngestServiceStub(self._channel)
        self.asked += 1
        reply = await stub.AuthorizeIdTag(
            ingest_pb2.AuthorizeIdTagRequest(gateway_id=self.gateway_id, station_id=station_id, id_tag=id_tag),
            metadata=self.metadata(),
            timeout=self.timeout_s,
        )
        expiry = reply.expiry_time.ToDatetime(tzinfo=dt.UTC) if reply.HasField("expiry_time") else None
        until = reply.cache_until.ToDatetime(tzinfo=dt.UTC) if reply.HasField("cache_until") else self.clock()
        return IdTagInfo(STATUS_NAMES.get(reply.status, "Invalid"), expiry), until

    def _offline(self, cp_id: str, id_tag: str, now: dt.datetime) -> IdTagInfo:
        for status, expiry in (self.state.last_auth(id_tag), self.state.local_auth(cp_id, id_tag)):
            if status is None:
                continue
            if status == "Accepted" and expiry is not None and expiry <= now:
                return IdTagInfo("Expired", expiry)
            return IdTagInfo(status, expiry)
        return INVALID

    def forget(self, id_tag: str | None = None) -> None:
        """Drops cached answers (one tag, or all): the next check asks the platform."""
        if id_tag is None:
            self._cache.clear()
        else:
            self._cache.pop(id_tag, None)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


def _why(error: grpc.aio.AioRpcError) -> str:
    return f"{error.code().name}: {error.details()}"
