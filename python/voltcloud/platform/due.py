"""A background task that does one round of due work, then sleeps until its next due time or a wake-up.

One loop for every "fire what is due, then sleep until the earliest deadline" worker (the SLA timer, the
notification sender), so each gets the same shutdown rule: Python 3.11's `asyncio.wait_for` can swallow a
cancellation that arrives as the wake-up event fires, so `stop` also sets a flag the loop checks, and a
stop never waits on a loop that missed its cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

RETRY_AFTER_FAILURE_S = 5.0


class DueWorker:
    """Runs `do_round()`, then waits `next_due_s()` seconds (None: until woken); `wake()` cuts the wait short."""

    def __init__(
        self,
        name: str,
        do_round: Callable[[], Awaitable[object]],
        next_due_s: Callable[[], Awaitable[float | None]],
    ) -> None:
        self.name = name
        self._do_round, self._next_due_s = do_round, next_due_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            self._wake.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self._do_round()
                wait = await self._next_due_s()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: round failed", self.name)
                wait = RETRY_AFTER_FAILURE_S
            if self._stopping:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
