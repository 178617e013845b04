"""The work order's state machine: which state may follow which (pure; `workorders.transition` applies it).

OPEN → ASSIGNED → ACCEPTED → ON_SITE → DIAGNOSED → RESOLVED → CLOSED, with ASSIGNED → OPEN (declined or timed
out: dispatch again), ON_SITE → RESOLVED (a fix needing no separate diagnosis), any open state → ON_HOLD → back
to the state it left, any open state → CANCELLED, and RESOLVED/CLOSED → OPEN (reopen). IN_PROGRESS is the
legacy name of ON_SITE: asked for, it means ON_SITE; stored rows never hold it."""

from __future__ import annotations

from voltcloud.platform.enums import WorkOrderState as S

OPEN_STATES = frozenset({S.OPEN, S.ASSIGNED, S.ACCEPTED, S.ON_SITE, S.IN_PROGRESS, S.DIAGNOSED, S.ON_HOLD})
FINAL_STATES = frozenset({S.RESOLVED, S.CLOSED, S.CANCELLED})
# A work order that still needs someone (its linked alarms keep pointing at it; a repeat fault joins it).
ACTIVE_STATES = OPEN_STATES

_NEXT: dict[S, frozenset[S]] = {
    S.OPEN: frozenset({S.ASSIGNED, S.ON_HOLD, S.CANCELLED}),
    S.ASSIGNED: frozenset({S.ASSIGNED, S.ACCEPTED, S.OPEN, S.ON_HOLD, S.CANCELLED}),
    S.ACCEPTED: frozenset({S.ON_SITE, S.ON_HOLD, S.CANCELLED}),
    S.ON_SITE: frozenset({S.DIAGNOSED, S.RESOLVED, S.ON_HOLD, S.CANCELLED}),
    S.DIAGNOSED: frozenset({S.RESOLVED, S.ON_HOLD, S.CANCELLED}),
    S.RESOLVED: frozenset({S.CLOSED, S.OPEN}),
    S.CLOSED: frozenset({S.OPEN}),
    S.CANCELLED: frozenset(),
}


def normalize(state: int) -> S:
    """The stored meaning of a state number (IN_PROGRESS → ON_SITE)."""
    value = S(state)
    return S.ON_SITE if value == S.IN_PROGRESS else value


def allowed(current: int, target: int, *, held_from: int | None = None) -> bool:
    """Whether `current` may move to `target`. From ON_HOLD only back to `held_from` (or to CANCELLED)."""
    now, to = normalize(current), normalize(target)
    if now == S.ON_HOLD:
        return to == S.CANCELLED or (held_from is not None and to == normalize(held_from))
    return to in _NEXT[now]


def is_reopen(current: int, target: int) -> bool:
    return normalize(current) in (S.RESOLVED, S.CLOSED) and normalize(target) == S.OPEN
