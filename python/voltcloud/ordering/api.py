"""Ordering's public surface for the rooms above it (dispatch) and the composition root.

Dispatch moves orders only through these: the unit of work and its after-commit effects, `record` / `finish` /
`complete` for transitions (each writes its event row), and the order row and states it reads.
"""

from __future__ import annotations

from voltcloud.ordering import lifecycle
from voltcloud.ordering.lifecycle import SYSTEM, Actor, Effects, Facts, OrderFeed, UnitOfWork, record
from voltcloud.ordering.models import Order
from voltcloud.ordering.ports import Dispatcher, Place
from voltcloud.ordering.states import Mode, OrderState

__all__ = [
    "SYSTEM",
    "Actor",
    "Dispatcher",
    "Effects",
    "Facts",
    "Mode",
    "Order",
    "OrderFeed",
    "OrderState",
    "Place",
    "UnitOfWork",
    "lifecycle",
    "record",
]
