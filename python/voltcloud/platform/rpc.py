"""The one wrapper around every RPC: admit, authenticate, authorize, decode and check, trace, and map errors.

Installed as a grpc.aio server interceptor that wraps each method handler, so servicers only parse,
call the domain and build responses. The wrapper decodes requests itself (undecodable bytes and values outside
the edge limits of `platform/limits.py` are INVALID_ARGUMENT before any servicer runs) and admits unary calls
through `Admission` (a call whose deadline passed is not started; beyond a bounded queue, or when the queue
would hold it past its deadline, RESOURCE_EXHAUSTED at once).
The principal of the call is available through `current_principal()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.trace import Status, StatusCode
from sqlalchemy import exc as sa_exc

from voltcloud.platform.auth import Principal, TokenService
from voltcloud.platform.db import contention
from voltcloud.platform.errors import (
    DeadlineExceeded,
    DomainError,
    ErrorCode,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unimplemented,
)
from voltcloud.platform.limits import check_message
from voltcloud.platform.permissions import PUBLIC_METHOD_PREFIXES, required_roles
from voltcloud.platform.tracing import span as traced

log = logging.getLogger(__name__)

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("voltcloud_principal")


def current_principal() -> Principal:
    """The authenticated caller of the RPC being served."""
    try:
        return _principal.get()
    except LookupError:
        raise RuntimeError("current_principal() called outside an authenticated RPC") from None


def status_code(code: ErrorCode) -> grpc.StatusCode:
    """The one mapping from a domain error's neutral code to gRPC's: the names are the API's own."""
    return grpc.StatusCode[code.name]


def to_status(error: DomainError) -> status_pb2.Status:
    """The rich `google.rpc.Status` for a domain error, with BadRequest details for validation errors."""
    numeric_code: int = status_code(error.code).value[0]
    status = status_pb2.Status(code=numeric_code, message=error.message)
    if isinstance(error, InvalidArgument) and error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in error.violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        status.details.append(detail)
    return status


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: DomainError) -> None:
    status = to_status(error)
    await context.abort(
        status_code(error.code),
        error.message,
        trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
    )


class CallActivity:
    """When calls were last dispatched and how many unary calls are running, so shutdown can wait until
    calls already on the wire have been served: gRPC core cancels calls that arrived but were not yet
    dispatched when `server.stop()` begins, and a busy event loop dispatches them late."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.last_dispatch = time.monotonic()

    async def wait_quiet(self, quiet_s: float, limit_s: float) -> None:
        """Returns once nothing is running and nothing was dispatched for `quiet_s`, or after `limit_s`."""
        give_up = time.monotonic() + limit_s
        while time.monotonic() < give_up:
            if self.in_flight == 0 and time.monotonic() - self.last_dispatch >= quiet_s:
                return
            await asyncio.sleep(min(0.02, quiet_s))


class _Gate:
    """The bounds of one method: at most `max_running` of its calls run, at most `max_queued` wait, and a call
    is refused at once when waiting and running would outlast its deadline (the queue's length in time)."""

    SMOOTHING = 0.2  # weight of the latest call in the moving average of how long a call holds its slot

    def __init__(self, max_running: int, max_queued: int) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self.running = 0
        self.queued = 0
        self.hold_s = 0.0  # moving average of a call's time in its slot (0: none has finished yet)
        self._slot = asyncio.Semaphore(max_running)

    def expected_wait(self) -> float:
        """Seconds a call arriving now can expect to wait for a slot: the calls ahead of it, served
        `max_running` at a time, each for the average hold time (Little's law; 0 while a slot is free)."""
        if self.running < self.max_running and not self.queued:
            return 0.0
        return (self.queued + 1) * self.hold_s / self.max_running

    def _refuse_or_queue(self, method: str, time_remaining: float | None) -> None:
        if self.queued >= self.max_queued:
            raise ResourceExhausted(
                f"server busy: {self.running} {method} calls running, {self.queued} queued; retry with backoff"
            )
        wait = self.expected_wait()
        if time_remaining is not None and wait + self.hold_s >= time_remaining:
            # It would wait and run past its deadline: say so now, while the caller can still retry (another
            # replica, or later), instead of letting it time out; the queue stays for calls that can finish.
            raise ResourceExhausted(
                f"server busy: a {method} call would wait ~{wait:.2f} s for a slot and run ~{self.hold_s:.2f} s, "
                f"past its deadline ({time_remaining:.2f} s left); retry with backoff"
            )

    async def enter(self, method: str, time_remaining: float | None) -> float:
        """Takes a slot (waiting for one, or refused); returns when it was taken, for `leave`."""
        if self.running >= self.max_running or self.queued:
            self._refuse_or_queue(method, time_remaining)
            self.queued += 1
            try:
                await asyncio.wait_for(self._slot.acquire(), time_remaining)
            except TimeoutError:
                raise DeadlineExceeded(f"deadline passed while {method} waited for a slot") from None
            finally:
                self.queued -= 1
        else:
            await self._slot.acquire()  # a free slot: returns without yielding to the loop
        self.running += 1
        return time.monotonic()

    def leave(self, started: float) -> None:
        held = time.monotonic() - started
        self.hold_s = held if not self.hold_s else self.hold_s + self.SMOOTHING * (held - self.hold_s)
        self.running -= 1
        self._slot.release()

    @contextlib.asynccontextmanager
    async def slot(self, method: str, time_remaining: float | None) -> AsyncIterator[None]:
        started = await self.enter(method, time_remaining)
        try:
            yield
        finally:
            self.leave(started)


class Admission:
    """Bounds the unary calls being served, per method: at most `max_running` calls of a method run, at most
    `max_queued` wait for a slot, and beyond that, or when the wait it can expect (the calls ahead of it times
    the method's average slot time) and its own run would outlast its deadline, a call is refused at once
    (RESOURCE_EXHAUSTED) instead of joining a queue it would time out in. A waiting call whose deadline passes
    leaves the queue without running.
    Without this, a burst makes every call slow, most finish after their client gave up, and goodput collapses.

    Each method has its own bounds (the defaults, or `overrides` keyed by the method's name or full path), so a
    flood of one RPC fills only its own queue: the others are still served."""

    def __init__(
        self, max_running: int = 32, max_queued: int = 64, overrides: Mapping[str, tuple[int, int]] | None = None
    ) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self._overrides = dict(overrides or {})
        self._gates: dict[str, _Gate] = {}

    def gate(self, method: str) -> _Gate:
        gate = self._gates.get(method)
        if gate is None:
            bounds = self._overrides.get(method) or self._overrides.get(method.rpartition("/")[2])
            gate = self._gates[method] = _Gate(*(bounds or (self.max_running, self.max_queued)))
        return gate

    def slot(self, method: str, time_remaining: float | None) -> contextlib.AbstractAsyncContextManager[None]:
        return self.gate(method).slot(method, time_remaining)


WORKER_METADATA_KEY = "voltcloud-worker"


class PlatformInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        tokens: TokenService,
        admission: Admission | None = None,
        deadline_floor_s: float = 0.0,
        worker: str | None = None,
    ) -> None:
        self._tokens = tokens
        self.activity = CallActivity()
        self.admission = admission or Admission()
        self.deadline_floor_s = deadline_floor_s
        # Several worker processes share one port; the answering one names itself (trailing metadata of a
        # unary call) so an operator, a test or a benchmark can tell which served a call.
        self.worker_metadata = ((WORKER_METADATA_KEY, worker),) if worker else None
        # method -> (the registered handler, its wrapper): gRPC hands the same handler for every call of a
        # method, so it is wrapped once, not on each call (part of what every call, even a refused one, costs).
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        self.activity.last_dispatch = time.monotonic()
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(PUBLIC_METHOD_PREFIXES):
            return handler
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, _wrap(handler, method, self))
        return cached[1]


def _authorize(tokens: TokenService, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
    metadata = dict(context.invocation_metadata() or ())
    authorization = metadata.get("authorization")
    principal = tokens.authenticate(authorization if isinstance(authorization, str) else None)
    roles = required_roles(method)
    if principal.role not in roles:
        raise PermissionDenied(f"role {principal.role.name.lower()} may not call {method}")
    return principal


def _decode(parse: Callable[[bytes], Message], raw: bytes) -> Message:
    """The request message, decoded here rather than by gRPC (which answers undecodable bytes with UNKNOWN
    or INTERNAL), and checked against the edge limits before any servicer sees it."""
    try:
        message = parse(raw)
    except (DecodeError, ValueError, RecursionError):
        raise InvalidArgument("the request body is not a valid protobuf message of this method's type") from None
    check_message(message)
    return message


class _DecodedStream:
    """A client stream's messages, each decoded and checked. The first bad message ends the input, as a
    half-close would (servicers need no error path of their own for it), and the call then ends with its
    INVALID_ARGUMENT."""

    def __init__(self, parse: Callable[[bytes], Message], requests: AsyncIterator[bytes]) -> None:
        self._parse = parse
        self._requests = requests
        self.error: InvalidArgument | None = None

    async def __aiter__(self) -> AsyncIterator[Message]:
        async for raw in self._requests:
            try:
                message = _decode(self._parse, raw)
            except InvalidArgument as error:
                self.error = error
                return
            yield message


def _time_left(context: grpc.aio.ServicerContext[Any, Any], method: str, floor_s: float) -> float | None:
    """Seconds until the call's deadline (None without one); DEADLINE_EXCEEDED when it is already (nearly)
    past, so no work starts whose answer nobody will read."""
    remaining: float | None = context.time_remaining()
    if remaining is not None and remaining <= floor_s:
        raise DeadlineExceeded(f"the deadline of {method} passed before it started")
    return remaining


def _wrap(handler: grpc.RpcMethodHandler, method: str, owner: PlatformInterceptor) -> grpc.RpcMethodHandler:
    tokens, activity, admission, floor_s = owner._tokens, owner.activity, owner.admission, owner.deadline_floor_s
    worker_metadata = owner.worker_metadata
    parse: Callable[[bytes], Message] | None = handler.request_deserializer

    def start(context: grpc.aio.ServicerContext[Any, Any]) -> None:
        _principal.set(_authorize(tokens, method, context))

    async def guard(context: grpc.aio.ServicerContext[Any, Any], error: BaseException) -> None:
        if isinstance(error, DomainError):
            await abort_with(context, error)
        elif isinstance(error, NotImplementedError):
            await abort_with(context, Unimplemented(f"{method} is not implemented yet"))
        else:
            raise error

    attributes: dict[str, str | int | float | bool] = {"rpc.system": "grpc", "rpc.method": method}

    def span(name: str) -> Any:
        return traced(name, attributes)

    def request_of(raw: Any) -> Any:
        if parse is None:  # a handler registered without a deserializer takes bytes as they came
            return raw
        return _DecodedStream(parse, raw) if handler.stream_unary or handler.stream_stream else _decode(parse, raw)

    def raise_stream_error(request: Any) -> None:
        if isinstance(request, _DecodedStream) and request.error is not None:
            raise request.error

    if handler.unary_unary or handler.stream_unary:
        inner = handler.unary_unary or handler.stream_unary

        # The gate is looked up once per method, and entered without a context manager: this runs on every call.
        gate = admission.gate(method)

        async def unary_response(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            activity.in_flight += 1
            with span(method) as current:
                try:
                    slot_taken = await gate.enter(method, _time_left(context, method, floor_s))
                    try:
                        _time_left(context, method, floor_s)  # it may have passed while the call waited
                        start(context)
                        request = request_of(raw)
                        response = await inner(request, context)
                        raise_stream_error(request)
                        if worker_metadata:
                            context.set_trailing_metadata(worker_metadata)
                        return response
                    finally:
                        gate.leave(slot_taken)
                except (DomainError, NotImplementedError) as error:
                    current.set_status(Status(StatusCode.ERROR, str(error)))
                    await guard(context, error)
                    raise  # unreachable: abort raises
                except sa_exc.DBAPIError as error:
                    lost_race = contention(error)
                    if lost_race is None:
                        raise
                    current.set_status(Status(StatusCode.ERROR, str(lost_race)))
                    await guard(context, lost_race)
                    raise  # unreachable: abort raises
                finally:
                    activity.in_flight -= 1

        factory = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
        return factory(unary_response, request_deserializer=None, response_serializer=handler.response_serializer)

    inner_stream = handler.unary_stream or handler.stream_stream

    # Streams are long-lived (watches, gateway and app connections): they are not admitted through the slots.
    async def stream_response(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        with span(method) as current:
            try:
                start(context)
                request = request_of(raw)
                result = inner_stream(request, context)
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        yield item
                else:
                    await result
                raise_stream_error(request)
            except (DomainError, NotImplementedError) as error:
                current.set_status(Status(StatusCode.ERROR, str(error)))
                await guard(context, error)
            except sa_exc.DBAPIError as error:
                lost_race = contention(error)
                if lost_race is None:
                    raise
                current.set_status(Status(StatusCode.ERROR, str(lost_race)))
                await guard(context, lost_race)

    factory = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
    return factory(stream_response, request_deserializer=None, response_serializer=handler.response_serializer)
