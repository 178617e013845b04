"""The one wrapper around every RPC: authenticate, authorize, trace, and map errors to statuses.

Installed as a grpc.aio server interceptor that wraps each method handler, so servicers only parse,
call the domain and build responses. The principal of the call is available through `current_principal()`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from opentelemetry.trace import Status, StatusCode

from voltcloud.platform.auth import Principal, TokenService
from voltcloud.platform.errors import DomainError, PermissionDenied, Unimplemented, to_status
from voltcloud.platform.permissions import PUBLIC_METHOD_PREFIXES, required_roles
from voltcloud.platform.tracing import tracer

log = logging.getLogger(__name__)

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("voltcloud_principal")


def current_principal() -> Principal:
    """The authenticated caller of the RPC being served."""
    try:
        return _principal.get()
    except LookupError:
        raise RuntimeError("current_principal() called outside an authenticated RPC") from None


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: DomainError) -> None:
    status = to_status(error)
    await context.abort(
        error.code,
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


class PlatformInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, tokens: TokenService) -> None:
        self._tokens = tokens
        self.activity = CallActivity()

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
        return _wrap(handler, method, self._tokens, self.activity)


def _authorize(tokens: TokenService, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
    metadata = dict(context.invocation_metadata() or ())
    authorization = metadata.get("authorization")
    principal = tokens.authenticate(authorization if isinstance(authorization, str) else None)
    roles = required_roles(method)
    if principal.role not in roles:
        raise PermissionDenied(f"role {principal.role.name.lower()} may not call {method}")
    return principal


def _wrap(
    handler: grpc.RpcMethodHandler, method: str, tokens: TokenService, activity: CallActivity
) -> grpc.RpcMethodHandler:
    def start(context: grpc.aio.ServicerContext[Any, Any]) -> None:
        _principal.set(_authorize(tokens, method, context))

    async def guard(context: grpc.aio.ServicerContext[Any, Any], error: BaseException) -> None:
        if isinstance(error, DomainError):
            await abort_with(context, error)
        elif isinstance(error, NotImplementedError):
            await abort_with(context, Unimplemented(f"{method} is not implemented yet"))
        else:
            raise error

    def span(name: str) -> Any:
        return tracer.start_as_current_span(
            name, attributes={"rpc.system": "grpc", "rpc.method": method}, record_exception=False
        )

    if handler.unary_unary or handler.stream_unary:
        inner = handler.unary_unary or handler.stream_unary

        async def unary_response(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            activity.in_flight += 1
            with span(method) as current:
                try:
                    start(context)
                    return await inner(request, context)
                except (DomainError, NotImplementedError) as error:
                    current.set_status(Status(StatusCode.ERROR, str(error)))
                    await guard(context, error)
                    raise  # unreachable: abort raises
                finally:
                    activity.in_flight -= 1

        factory = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
        return factory(
            unary_response,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    inner_stream = handler.unary_stream or handler.stream_stream

    async def stream_response(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        with span(method) as current:
            try:
                start(context)
                result = inner_stream(request, context)
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        yield item
                else:
                    await result
            except (DomainError, NotImplementedError) as error:
                current.set_status(Status(StatusCode.ERROR, str(error)))
                await guard(context, error)

    factory = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
    return factory(
        stream_response,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
