"""The RPC fuzzer's parts, shared by tests/security/test_fuzz.py and bench/fuzz_rpcs.py: Hypothesis strategies
built from the request descriptors of every served unary RPC (plus raw bytes), the statuses allowed, and a
platform served from a thread of its own so a synchronous Hypothesis test can drive it over real gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from voltcloud.api.v1 import (
    dispatch_pb2,
    fleet_pb2,
    ingest_pb2,
    maintenance_pb2,
    ordering_pb2,
    settlement_pb2,
    stations_pb2,
)
from voltcloud.config import Settings
from voltcloud.platform.auth import Role, Tenant
from voltcloud.server import Platform

SERVICE_MODULES: list[ModuleType] = [
    stations_pb2,
    ordering_pb2,
    dispatch_pb2,
    settlement_pb2,
    fleet_pb2,
    maintenance_pb2,
    ingest_pb2,
]
# Every RPC is built: UNIMPLEMENTED is a failure for all of them.
NOT_BUILT: frozenset[str] = frozenset()
NEVER = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})

# Real ids of the demo world, so generated requests also get past the lookups into the servicers' rules.
KNOWN_IDS = [
    "op-0001",
    "op-0002",
    "st-000001",
    "st-000013",
    "cn-0000001",
    "vh-000001",
    "dr-000001",
    "fl-0001",
    "pk-000001",
]
_INT_EXTREMES = {
    FieldDescriptor.TYPE_INT32: [0, 1, -1, 2**31 - 1, -(2**31)],
    FieldDescriptor.TYPE_SINT32: [0, 1, -1, 2**31 - 1, -(2**31)],
    FieldDescriptor.TYPE_SFIXED32: [0, -1, 2**31 - 1, -(2**31)],
    FieldDescriptor.TYPE_UINT32: [0, 1, 2**31, 2**32 - 1],
    FieldDescriptor.TYPE_FIXED32: [0, 2**32 - 1],
    FieldDescriptor.TYPE_INT64: [0, 1, -1, 2**53, 2**63 - 1, -(2**63)],
    FieldDescriptor.TYPE_SINT64: [0, -1, 2**63 - 1, -(2**63)],
    FieldDescriptor.TYPE_SFIXED64: [0, -1, 2**63 - 1, -(2**63)],
    FieldDescriptor.TYPE_UINT64: [0, 1, 2**63, 2**64 - 1],
    FieldDescriptor.TYPE_FIXED64: [0, 2**64 - 1],
}
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_SECONDS = [0, 1, -1, 946_684_800, 1_800_000_000, 4_102_444_800, 253_402_300_799, -62_135_596_800, 2**62, -(2**62)]
_NANOS = [0, 1, -1, 999_999_999, 1_000_000_000, 2**31 - 1, -(2**31)]
MAX_DEPTH = 3


@dataclass(frozen=True)
class Method:
    service: str
    name: str
    input: Descriptor

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def stream_methods() -> list[Method]:
    """Server-streaming methods (one request, a stream of answers)."""
    return [
        Method(service.full_name, m.name, m.input_type)
        for module in SERVICE_MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
        for m in service.methods
        if m.server_streaming and not m.client_streaming
    ]


def unary_methods() -> list[Method]:
    methods = []
    for module in SERVICE_MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                if not m.client_streaming and not m.server_streaming:
                    methods.append(Method(service.full_name, m.name, m.input_type))
    return methods


def allowed(method: Method, code: grpc.StatusCode) -> bool:
    """UNKNOWN and INTERNAL never; UNIMPLEMENTED only from the services not built yet."""
    if code in NEVER:
        return False
    return code is not grpc.StatusCode.UNIMPLEMENTED or method.path.lstrip("/") in NOT_BUILT


# ---- strategies ----


def _strings() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(KNOWN_IDS),
        st.text(max_size=24),
        st.sampled_from(["", "\x00", "a\x00b", "x" * 65, "é" * 300, "x" * 70_000, "CNY", "https://x/y.jpg"]),
    )


def _scalar(field: FieldDescriptor, mild: bool) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return st.one_of(st.sampled_from(KNOWN_IDS), st.text("abcxyz-_01", max_size=12)) if mild else _strings()
    if t == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.just(b"x" * 70_000), st.just(b"a,b\n1,2\n"))
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        if mild:
            return st.floats(-180, 180)
        return st.one_of(st.floats(), st.sampled_from([0.0, 31.23, 121.47, -91.0, 181.0, 1e300]))
    if t == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        numbers = [v.number for v in field.enum_type.values]
        return st.sampled_from(numbers if mild else [*numbers, -1, 999])
    if mild:
        return st.integers(0, 100_000)
    lo, hi = _INT_RANGES[t]
    return st.one_of(st.sampled_from(_INT_EXTREMES[t]), st.integers(lo, hi), st.integers(0, 100))


def _well_known(descriptor: Descriptor, mild: bool) -> st.SearchStrategy[Message] | None:
    if descriptor.full_name not in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        return None
    cls = message_factory.GetMessageClass(descriptor)
    if mild:
        low = 1_700_000_000 if descriptor.full_name == "google.protobuf.Timestamp" else 0
        return st.builds(
            lambda s, n: cls(seconds=s, nanos=n), st.integers(low, low + 200_000_000), st.integers(0, 10**9 - 1)
        )
    seconds = st.one_of(st.sampled_from(_SECONDS), st.integers(-(2**63), 2**63 - 1))
    nanos = st.one_of(st.sampled_from(_NANOS), st.integers(-(2**31), 2**31 - 1))
    return st.builds(lambda s, n: cls(seconds=s, nanos=n), seconds, nanos)


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0, mild: bool = False) -> Message:
    """A message of `descriptor` with a random subset of its fields set: to edge-heavy values, or (`mild`) to
    values within the edge limits, which get deeper into the servicers and the domain."""
    well_known = _well_known(descriptor, mild)
    if well_known is not None:
        return draw(well_known)
    message = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if field.message_type is not None:
            if depth >= MAX_DEPTH or field.message_type.GetOptions().map_entry:
                continue
            element: st.SearchStrategy[Any] = messages(field.message_type, depth + 1, mild)
        else:
            element = _scalar(field, mild)
        # A value Python protobuf itself refuses to set never reaches the wire.
        with contextlib.suppress(ValueError, TypeError, OverflowError):
            _assign(draw, message, field, element, mild)
    return message


def _assign(
    draw: st.DrawFn, message: Message, field: FieldDescriptor, element: st.SearchStrategy[Any], mild: bool
) -> None:
    target = getattr(message, field.name)
    if field.is_repeated:
        if not mild and draw(st.integers(0, 19)) == 0:  # now and then a long list of one value: the count limits
            values = [draw(element)] * draw(st.integers(101, 1200))
        else:
            values = draw(st.lists(element, max_size=3))
        for value in values:
            if field.message_type is not None:
                target.add().CopyFrom(value)
            else:
                target.append(value)
    elif field.message_type is not None:
        target.CopyFrom(draw(element))
    else:
        setattr(message, field.name, draw(element))


@dataclass(frozen=True)
class Call:
    method: Method
    body: bytes
    role: str  # "admin", "operator", "fleet" (manager of fl-0001), "driver" (dr-000001) or "engineer" (op-0001)

    def __repr__(self) -> str:  # a falsifying example names what was sent, not megabytes of it
        return f"Call({self.method.path}, {self.role}, {len(self.body)} bytes: {self.body[:200]!r})"


@st.composite
def calls(draw: st.DrawFn, methods: list[Method] | None = None) -> Call:
    method = draw(st.sampled_from(methods or unary_methods()))
    if draw(st.integers(0, 9)) == 0:
        body = draw(st.binary(max_size=200))  # raw bytes, mostly undecodable
    else:
        body = draw(messages(method.input, mild=draw(st.booleans()))).SerializeToString()
    return Call(method, body, draw(st.sampled_from(["admin", "operator"])))


# ---- a platform in a thread of its own ----


class ThreadedPlatform:
    """A started platform on its own event loop in a daemon thread, for synchronous callers."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fuzzed-platform")
        self.platform: Platform | None = None

    def __enter__(self) -> ThreadedPlatform:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=120)
        return self

    async def _start(self) -> None:
        self.platform = Platform(self._settings)
        await self.platform.start()

    def __exit__(self, *exc: object) -> None:
        if self.platform is not None:
            asyncio.run_coroutine_threadsafe(self.platform.stop(grace=0), self._loop).result(timeout=60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    @property
    def target(self) -> str:
        assert self.platform is not None
        return f"127.0.0.1:{self.platform.port}"

    def metadata(self, role: str) -> tuple[tuple[str, str], ...]:
        assert self.platform is not None
        tokens = self.platform.tokens
        token = {
            "admin": lambda: tokens.mint("fuzz-admin", Role.PLATFORM_ADMIN, None),
            "operator": lambda: tokens.mint("fuzz-op", Role.OPERATOR, Tenant("operator", "op-0001")),
            "fleet": lambda: tokens.mint("fuzz-fleet", Role.FLEET_MANAGER, Tenant("fleet", "fl-0001")),
            "driver": lambda: tokens.mint("dr-000001", Role.DRIVER, None),
            "engineer": lambda: tokens.mint("fuzz-eng", Role.ENGINEER, Tenant("operator", "op-0001")),
        }[role]()
        return (("authorization", f"Bearer {token}"),)


def send(channel: grpc.Channel, server: ThreadedPlatform, call: Call, timeout: float = 20.0) -> grpc.StatusCode:
    """Sends one fuzzed call (identity serializers: the bytes go out as drawn) and returns its status."""
    stub = channel.unary_unary(call.method.path)
    try:
        stub(call.body, metadata=server.metadata(call.role), timeout=timeout)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


def send_stream(channel: grpc.Channel, server: ThreadedPlatform, call: Call, first_s: float = 5.0) -> grpc.StatusCode:
    """Sends one fuzzed server-streaming call; reads its first answer (OK) or its status, then cancels."""
    stream = channel.unary_stream(call.method.path)(call.body, metadata=server.metadata(call.role), timeout=first_s)
    try:
        next(iter(stream))
    except StopIteration:
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    finally:
        stream.cancel()
    return grpc.StatusCode.OK
