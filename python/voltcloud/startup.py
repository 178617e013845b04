"""Start-up of `voltcloud serve`: logging, the database prepared once (migrations, demo seed), the signing key,
and the supervisor of worker processes (`serve_workers`).

Kept apart from the composition root (`server.py`) and light to import: the commands that do not serve (token,
seed, db) never import the platform, and a supervisor imports it only once the database is prepared, then forks
its workers from that one import (a second or more of CPU each that no worker pays again). `server.py` builds
on this module, never the other way round: what runs the platform is handed in by the command (`cli.py`) as a
function that imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime as dt
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from voltcloud.config import Settings
from voltcloud.platform.auth import TokenService, load_or_create_dev_key
from voltcloud.platform.db import Database, upgrade_database_async

log = logging.getLogger(__name__)


def token_service(settings: Settings) -> TokenService:
    key = settings.jwt_key or load_or_create_dev_key(settings.data_dir)
    return TokenService(key, settings.jwt_issuer, dt.timedelta(seconds=settings.token_ttl_s))


async def prepare_database(settings: Settings, db: Database) -> None:
    """Migrations, then the demo seed when asked for and the database is empty: once per start of a server."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await upgrade_database_async(db.url)
    if settings.seed_demo:
        from voltcloud.seed import seed_demo_if_empty

        await seed_demo_if_empty(db, settings.demo_seed)


@dataclass(frozen=True)
class Serving:
    """What a started server tells the command that started it."""

    port: int
    dialect: str
    tokens: TokenService
    worker_pids: list[int] = field(default_factory=list)


LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s %(message)s"


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format=LOG_FORMAT)


# Serves the platform from this process until SIGTERM or SIGINT: (settings, on_ready, worker name or None).
ServeHere = Callable[[Settings, Callable[[Serving], None] | None, str | None], None]


def serve_workers(
    settings: Settings, platform: Callable[[], ServeHere], on_ready: Callable[[Serving], None] | None = None
) -> int:
    """Serves with `settings.resolved_workers()` processes: one in this process, or several under a supervisor
    (this process). `platform` imports the platform and returns its `ServeHere` (`server.serve_here`). Returns
    the exit code."""
    if settings.resolved_workers() == 1:
        platform()(settings, on_ready, None)
        return 0
    return Supervisor(settings, platform).run(on_ready)


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host, int(port)


def _reserve_port(host: str) -> socket.socket:
    """A socket bound (not listening) to a free port with SO_REUSEPORT: it fixes the port every worker binds,
    also across restarts of workers, and receives no connection itself (only listening sockets do)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host.strip("[]"), 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def _die_with_parent(parent: int) -> None:
    """A worker ends when its supervisor is gone, even if the supervisor was killed without a word."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            pr_set_pdeathsig = 1
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:
        raise SystemExit(0)


def _worker_main(serve_here: ServeHere, settings: Settings, index: int, parent: int, ready: Any) -> None:
    """The body of a worker process, forked from the supervisor with the platform already imported (copy on
    write: no worker imports it again); each builds its own engine, database pool and gRPC server."""
    # The supervisor's handlers are not the worker's: a fresh interpreter's until `serve` installs its own.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _die_with_parent(parent)
    log.info("worker %d (pid %d) starting", index, os.getpid())
    serve_here(settings, lambda _: ready.put((index, os.getpid())), str(os.getpid()))


@dataclass
class _Slot:
    index: int
    process: Any = None  # multiprocessing.process.BaseProcess
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None


class Supervisor:
    """Migrates and seeds once, imports the platform, then forks N workers that each build their own `Platform`
    and bind the same port (SO_REUSEPORT: the kernel spreads connections over them). SIGTERM/SIGINT stop every worker
    gracefully; a worker that dies is logged and restarted, after a backoff that doubles while it keeps dying
    young. A worker that dies before all have started fails the start: that is a configuration problem."""

    RESTART_BASE_S = 0.5
    RESTART_MAX_S = 30.0
    HEALTHY_AFTER_S = 30.0  # a worker that lived this long starts over with the shortest backoff

    def __init__(self, settings: Settings, platform: Callable[[], ServeHere]) -> None:
        self.platform = platform
        self.count = settings.resolved_workers()
        self.settings = settings
        # Forked, not spawned: the platform is imported once, here, instead of once per worker (each import is a
        # second or more of CPU). Nothing of gRPC, the database or the engine exists yet when a worker is forked.
        self._context = multiprocessing.get_context("fork")
        self._ready: Any = self._context.Queue()
        self._serve_here: ServeHere | None = None
        self._slots = [_Slot(i) for i in range(self.count)]
        self._stopping = False

    def run(self, on_ready: Callable[[Serving], None] | None = None) -> int:
        settings, holder = self._prepared()
        try:
            self._serve_here = self.platform()
            for slot in self._slots:
                self._start(slot)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._stop)
            if not self._await_ready():
                self._stop_all()
                return 1
            pids = [slot.process.pid for slot in self._slots]
            log.info("serving on %s with %d workers %s", settings.listen, self.count, pids)
            if on_ready:
                dialect = sa.engine.make_url(settings.resolved_database_url()).get_backend_name()
                on_ready(Serving(split_listen(settings.listen)[1], dialect, token_service(settings), pids))
            while not self._stopping:
                self._watch()
            self._stop_all()
            return 0
        except BaseException:
            self._stop_all()
            raise
        finally:
            if holder is not None:
                holder.close()

    def _prepared(self) -> tuple[Settings, socket.socket | None]:
        """Settings every worker shares: the database migrated (and seeded), the signing key and the port fixed."""
        settings = self.settings
        db = Database(settings.resolved_database_url())

        async def prepare() -> None:
            try:
                await prepare_database(settings, db)
            finally:
                await db.dispose()

        asyncio.run(prepare())
        host, port = split_listen(settings.listen)
        holder = _reserve_port(host) if port == 0 else None
        if holder is not None:
            port = holder.getsockname()[1]
        key = settings.jwt_key or load_or_create_dev_key(settings.data_dir)  # one dev key, created once
        update = {"listen": f"{host}:{port}", "jwt_key": key, "seed_demo": False, "workers": self.count}
        self.settings = settings.model_copy(update=update)
        return self.settings, holder

    def _start(self, slot: _Slot) -> None:
        assert self._serve_here is not None
        slot.process = self._context.Process(
            target=_worker_main,
            args=(self._serve_here, self.settings, slot.index, os.getpid(), self._ready),
            name=f"voltcloud-worker-{slot.index}",
        )
        slot.process.start()
        slot.started_at, slot.restart_at = time.monotonic(), None
        log.info("worker %d started (pid %d)", slot.index, slot.process.pid)

    def _await_ready(self) -> bool:
        waiting = {slot.index for slot in self._slots}
        while waiting and not self._stopping:
            with contextlib.suppress(Exception):  # queue.Empty, or EINTR on a signal
                index, pid = self._ready.get(timeout=0.2)
                waiting.discard(index)
                log.info("worker %d (pid %d) serving", index, pid)
            dead = [slot for slot in self._slots if slot.index in waiting and not slot.process.is_alive()]
            if dead:
                log.error("worker %d exited with %s before serving", dead[0].index, dead[0].process.exitcode)
                return False
        return not waiting

    def _watch(self) -> None:
        sentinels = [slot.process.sentinel for slot in self._slots if slot.restart_at is None]
        with contextlib.suppress(InterruptedError):
            multiprocessing.connection.wait(sentinels, timeout=0.2)
        now = time.monotonic()
        for slot in self._slots:
            if self._stopping:
                return
            if slot.restart_at is None and not slot.process.is_alive():
                self._schedule_restart(slot, now)
            elif slot.restart_at is not None and now >= slot.restart_at:
                self._start(slot)

    def _schedule_restart(self, slot: _Slot, now: float) -> None:
        if now - slot.started_at >= self.HEALTHY_AFTER_S:
            slot.failures = 0
        delay = min(self.RESTART_BASE_S * 2**slot.failures, self.RESTART_MAX_S)
        slot.failures += 1
        slot.restart_at = now + delay
        code = slot.process.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        log.warning("worker %d (pid %d) died (%s); restarting in %.1f s", slot.index, slot.process.pid, how, delay)

    def _stop(self, signum: int, _frame: Any) -> None:
        self._stopping = True

    def _stop_all(self) -> None:
        """SIGTERM to every worker (each drains and finishes its calls within the grace period), then waits."""
        live = [slot.process for slot in self._slots if slot.process is not None and slot.process.is_alive()]
        log.info("stopping %d workers", len(live))
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
        give_up = time.monotonic() + self.settings.grace_period_s + 5.0
        for process in live:
            process.join(max(0.0, give_up - time.monotonic()))
            if process.is_alive():
                log.warning("worker pid %d did not stop in time; killed", process.pid)
                process.kill()
                process.join()
