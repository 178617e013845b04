"""Who sees which alarms and work orders: the platform admin sees all; an operator's staff (operator and engineer
roles, with an operator tenant) see their operator's. Another tenant's object is reported as missing, so ids
cannot be probed; naming another operator in a filter is refused."""

from __future__ import annotations

from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.errors import NotFound, PermissionDenied


def own_operator(principal: Principal) -> str | None:
    """None for the platform admin (every operator); the caller's operator otherwise."""
    if principal.is_admin:
        return None
    if principal.role in (Role.OPERATOR, Role.ENGINEER) and principal.tenant and principal.tenant.kind == "operator":
        return principal.tenant.id
    raise PermissionDenied(f"{principal.subject} acts for no operator")


def operator_filter(principal: Principal, requested: str) -> str | None:
    """The operator a list is limited to: the requested one for the admin, the caller's own for staff."""
    own = own_operator(principal)
    if own is None:
        return requested or None
    if requested and requested != own:
        raise PermissionDenied(f"{principal.subject} may not see operator {requested}")
    return own


def require_visible(principal: Principal, operator_id: str | None, what: str) -> None:
    own = own_operator(principal)
    if own is not None and operator_id != own:
        raise NotFound(f"{what} not found")


def require_operator_or_admin(principal: Principal, action: str) -> None:
    """Verifying, reopening and policies are the operator's (or the admin's), not the engineer's."""
    if not (principal.is_admin or principal.role is Role.OPERATOR):
        raise PermissionDenied(f"only the operator or the platform admin may {action}")
