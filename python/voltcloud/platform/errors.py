"""One domain error hierarchy, and the one place it becomes a gRPC status.

Domain code raises these; it never imports grpc. `to_status` is used by the servicer decorator and the
interceptor, so every RPC answers with the same codes and details for the same kind of failure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """Base of every error a domain module raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """Bad input. Carries the offending fields for `google.rpc.BadRequest`."""

    code = grpc.StatusCode.INVALID_ARGUMENT

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
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(DomainError):
    """The target is in the wrong state for this operation (an illegal transition, short funds)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(DomainError):
    """A concurrent writer won the race (optimistic version check failed); the caller may retry."""

    code = grpc.StatusCode.ABORTED


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unimplemented(DomainError):
    code = grpc.StatusCode.UNIMPLEMENTED


class DeadlineExceeded(DomainError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE


def to_status(error: DomainError) -> status_pb2.Status:
    """The rich `google.rpc.Status` for a domain error, with BadRequest details for validation errors."""
    numeric_code: int = error.code.value[0]
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
