"""The order state machine: the only transitions an order may take, as data.

created → assigned → en route → in service → completed, with cancelled / failed / expired branches.
A valet or van order whose specialist declines goes back from assigned to created (re-dispatch).
Numbers are the protobuf `OrderState` values.
"""

from __future__ import annotations

# Re-exported: ordering's modules import the order enums from here.
from voltcloud.platform.enums import OrderState as OrderState
from voltcloud.platform.enums import PowerUpMode
from voltcloud.platform.enums import ResourceKind as ResourceKind
from voltcloud.platform.errors import FailedPrecondition

Mode = PowerUpMode  # ordering's name for it


S = OrderState

TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    S.CREATED: frozenset({S.ASSIGNED, S.CANCELLED, S.FAILED, S.EXPIRED}),
    S.ASSIGNED: frozenset({S.CREATED, S.EN_ROUTE, S.CANCELLED, S.FAILED, S.EXPIRED}),
    S.EN_ROUTE: frozenset({S.IN_SERVICE, S.CANCELLED, S.FAILED, S.EXPIRED}),
    S.IN_SERVICE: frozenset({S.COMPLETED, S.FAILED}),
    S.COMPLETED: frozenset(),
    S.CANCELLED: frozenset(),
    S.FAILED: frozenset(),
    S.EXPIRED: frozenset(),
}

TERMINAL = frozenset(s for s, targets in TRANSITIONS.items() if not targets)
# States in which the order still holds resources and money.
ACTIVE = frozenset(OrderState) - TERMINAL
# Before anyone moved for the order: cancelling is free.
BEFORE_DISPATCH = frozenset({S.CREATED, S.ASSIGNED})


def check_transition(current: int, target: OrderState) -> OrderState:
    """The current state when `current → target` is allowed; FailedPrecondition otherwise."""
    try:
        state = OrderState(current)
    except ValueError:
        raise FailedPrecondition(f"order is in an unknown state {current}") from None
    if target not in TRANSITIONS[state]:
        allowed = ", ".join(sorted(t.label for t in TRANSITIONS[state])) or "none (final state)"
        raise FailedPrecondition(f"an order {state.label} cannot become {target.label}; allowed: {allowed}")
    return state
