"""One domain error hierarchy with platform-neutral codes.

Domain code raises these. They know nothing of grpc, so no domain depends on the transport: the one mapping
from `ErrorCode` to `grpc.StatusCode` and the rich status lives in the interceptor (`platform/rpc.py`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class ErrorCode(enum.Enum):
    """What kind of failure, named as the API documents it; the transport chooses its own number."""

    INTERNAL = "INTERNAL"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """Base of every error a domain module raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """Bad input. Carries the offending fields for `google.rpc.BadRequest`."""

    code = ErrorCode.INVALID_ARGUMENT

    def __init__(self, message: str, violations: Sequence[FieldViolation] = ()) -> None:
        super().__init__(message)
        self.violations = tuple(violations)

    @classmethod
    def for_field(cls, field: str, description: str) -> InvalidArgument:
        return cls(f"{field}: {description}", [FieldViolation(field, description)])

    @classmethod
    def for_fields(cls, violations: Iterable[FieldViolation]) -> InvalidArgument:
        found = tuple(violations)
        message = "; ".join(f"{v.field}: {v.description}" for v in found)
        return cls(message, found)


class NotFound(DomainError):
    code = ErrorCode.NOT_FOUND


class AlreadyExists(DomainError):
    code = ErrorCode.ALREADY_EXISTS


class FailedPrecondition(DomainError):
    """The target is in the wrong state for this operation (an illegal transition, short funds)."""

    code = ErrorCode.FAILED_PRECONDITION


class Aborted(DomainError):
    """A concurrent writer won the race (optimistic version check failed); the caller may retry."""

    code = ErrorCode.ABORTED


class ResourceExhausted(DomainError):
    code = ErrorCode.RESOURCE_EXHAUSTED


class Unauthenticated(DomainError):
    code = ErrorCode.UNAUTHENTICATED


class PermissionDenied(DomainError):
    code = ErrorCode.PERMISSION_DENIED


class Unimplemented(DomainError):
    code = ErrorCode.UNIMPLEMENTED


class DeadlineExceeded(DomainError):
    code = ErrorCode.DEADLINE_EXCEEDED


class Unavailable(DomainError):
    code = ErrorCode.UNAVAILABLE
