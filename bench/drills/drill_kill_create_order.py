"""Drill: kill -9 of a `voltcloud serve` process during CreateOrder load on PostgreSQL, then restart.

A fresh PostgreSQL database is seeded with the "city" world and N drivers, each with a funded wallet, a private
car and a one-option quote (a free connector or a ready pack; `bench_create_order.prepare`). A server process
(`python -m voltcloud.cli serve`) is started on it and `--clients` concurrent gRPC clients send one CreateOrder
per driver (key `drill-<i>`). Once `--kill-at` orders have been acknowledged the server gets SIGKILL, with
calls in flight. The server is restarted on the same database and every call that did not get an answer is retried with
its key. Then the database is checked:

1. every CreateOrder acknowledged before the kill exists, and its retry-free answer names the same order;
   every key made at most one order, and the retry of an unanswered call got an order (replayed or new);
2. no reservation leaked: an active reservation belongs to a live order, a live charge/swap order has its
   active reservation, and every drill resource is reserved (connector RESERVED / pack RESERVED) iff a live
   order holds it;
3. every journal entry is balanced (its postings sum to zero per currency);
4. every hold is active (its order live), captured (with its entry) or released (nothing captured, no entry),
   never both; every order's hold exists and every hold names an existing order; each wallet's held amount is
   the sum of its active holds.

Prints the counts and the violations (exit status 1 if any). Also run (small) by
tests/integration/test_drill_kill.py.

    python bench/drills/drill_kill_create_order.py                  # 300 drivers, 16 clients, kill at 100 acks
    python bench/drills/drill_kill_create_order.py --drivers 120 --kill-at 40 --json /tmp/drill.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
import sqlalchemy as sa
from bench_create_order import prepare  # type: ignore[import-not-found]
from sqlalchemy.ext.asyncio import create_async_engine

from voltcloud.api.v1 import ordering_pb2, ordering_pb2_grpc
from voltcloud.config import Settings
from voltcloud.platform.auth import Role
from voltcloud.server import token_service

JWT_KEY = "kill-drill-key-0123456789abcdef0123456789abcdef"
POSTGRES_URL = os.environ.get("VOLTCLOUD_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")


@dataclass
class Report:
    drivers: int = 0
    acknowledged_before_kill: int = 0
    in_flight_at_kill: int = 0  # clients waiting for an answer when the server was killed
    committed_unanswered_at_kill: int = 0  # of those, orders already committed (their retry is a replay)
    refused_before_kill: dict[str, int] = field(default_factory=dict)
    retried_after_restart: int = 0
    orders: int = 0
    live_orders: int = 0
    active_reservations: int = 0
    journal_entries: int = 0
    holds_by_state: dict[str, int] = field(default_factory=dict)
    kill_to_ready_s: float = 0.0
    violations: list[str] = field(default_factory=list)


async def start_server(url: str, data_dir: Path) -> tuple[asyncio.subprocess.Process, str]:
    env = {
        **os.environ,
        "VOLTCLOUD_DATA_DIR": str(data_dir),
        "VOLTCLOUD_DATABASE_URL": url,
        "VOLTCLOUD_JWT_KEY": JWT_KEY,
        "VOLTCLOUD_REOPTIMIZE_INTERVAL_S": "0",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voltcloud.cli", "serve", "--listen", "127.0.0.1:0",
        env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 120)).decode()
    port = re.search(r":(\d+) ", line)
    if not port:
        process.kill()
        raise RuntimeError(f"the server did not report its port: {line!r}")
    return process, f"127.0.0.1:{port.group(1)}"


async def load(
    target: str,
    calls: list[tuple[str, str, str]],
    clients: int,
    kill_at: int | None = None,
    kill: Any = None,
) -> dict[str, Any]:
    """Sends the calls (driver, quote, key) from `clients` tasks until all are done, or until `kill_at` calls
    have been acknowledged, when `kill()` runs with calls still in flight (the clients stop then). Returns the
    order id of each acknowledged key and the status of each refused one (before the kill)."""
    tokens = token_service(Settings(jwt_key=JWT_KEY))  # type: ignore[call-arg]
    answered: dict[str, str] = {}
    refused: dict[str, str] = {}
    queue: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
    for call in calls:
        queue.put_nowait(call)
    killed = False
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ordering_pb2_grpc.OrderingServiceStub(channel)

        async def client() -> None:
            while not queue.empty() and not killed:
                driver, quote_id, key = queue.get_nowait()
                md = (("authorization", f"Bearer {tokens.mint(driver, Role.DRIVER)}"),)
                request = ordering_pb2.CreateOrderRequest(idempotency_key=key, quote_id=quote_id, option_id="o1")
                try:
                    order_id = (await stub.CreateOrder(request, metadata=md, timeout=60)).order.order_id
                except grpc.aio.AioRpcError as error:
                    if not killed:
                        refused[key] = error.code().name
                else:
                    if not killed:  # an answer after the kill cannot come; nothing is counted then
                        answered[key] = order_id

        tasks = [asyncio.create_task(client()) for _ in range(clients)]
        pending = set(tasks)
        while pending and (kill_at is None or len(answered) < kill_at):
            _, pending = await asyncio.wait(pending, timeout=0.005)
        if pending and kill is not None:
            killed = True
            await kill()
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"answered": answered, "refused": refused, "in_flight_at_kill": len(pending)}


async def count_orders(url: str) -> int:
    engine = create_async_engine(url)
    async with engine.connect() as c:
        count = int((await c.execute(sa.text("SELECT count(*) FROM powerup_order"))).scalar_one())
    await engine.dispose()
    return count


async def check(url: str, calls: list[tuple[str, str, str]], acked: dict[str, str], final: dict[str, str]) -> Report:
    """The database's invariants after the drill; `acked`: answers before the kill, `final`: every key's order."""
    report = Report(drivers=len(calls))
    engine = create_async_engine(url)
    bad = report.violations
    async with engine.connect() as c:

        async def rows(sql: str) -> list[Any]:
            return list((await c.execute(sa.text(sql))).all())

        from voltcloud.ordering.states import ACTIVE, Mode
        from voltcloud.platform.enums import ConnectorStatus, PackState

        orders = {r.id: r for r in await rows("SELECT * FROM powerup_order")}
        report.orders, report.live_orders = len(orders), sum(1 for o in orders.values() if o.state in ACTIVE)
        by_key: dict[tuple[str, str], list[str]] = {}
        for o in orders.values():
            by_key.setdefault((o.created_by, o.idempotency_key), []).append(o.id)
        bad += [f"key {k} made {len(v)} orders" for k, v in by_key.items() if len(v) > 1]
        bad += [f"acknowledged order {o} ({k}) does not exist" for k, o in acked.items() if o not in orders]
        bad += [
            f"key {k}: acknowledged {o}, retry answered {final.get(k)}" for k, o in acked.items() if final.get(k) != o
        ]
        bad += [f"key {k} got no order after the restart" for _, _, k in calls if k not in final]

        active = await rows("SELECT id, order_id FROM reservation WHERE state = 1")
        report.active_reservations = len(active)
        for r in active:
            order = orders.get(r.order_id)
            if order is None or order.state not in ACTIVE:
                bad.append(f"reservation {r.id} active without a live order ({r.order_id})")
        reserved_by = {r.order_id for r in active}
        for o in orders.values():
            if o.state in ACTIVE and Mode(o.mode) in (Mode.SWAP, Mode.CHARGE) and o.id not in reserved_by:
                bad.append(f"live order {o.id} has no active reservation")
        held_connectors = {o.connector_id for o in orders.values() if o.state in ACTIVE and o.connector_id}
        held_packs = {o.pack_id for o in orders.values() if o.state in ACTIVE and o.pack_id}
        mine = await rows(f"SELECT options_json FROM quote WHERE id IN ({','.join(repr(q) for _, q, _ in calls)})")
        options = [json.loads(m.options_json)[0] for m in mine]
        drill_connectors = {o["connector_id"] for o in options if o.get("connector_id")}
        drill_packs = {o["pack_id"] for o in options if o.get("pack_id")}
        for r in await rows("SELECT id, status FROM connector"):
            if r.id in drill_connectors and (r.status == int(ConnectorStatus.RESERVED)) != (r.id in held_connectors):
                bad.append(f"connector {r.id} status {r.status} but held by a live order: {r.id in held_connectors}")
        for r in await rows("SELECT id, state FROM pack"):
            if r.id in drill_packs and (r.state == int(PackState.RESERVED)) != (r.id in held_packs):
                bad.append(f"pack {r.id} state {r.state} but held by a live order: {r.id in held_packs}")

        sums = await rows(
            "SELECT e.id, p.currency, COALESCE(SUM(p.amount_minor), 0) AS total, COUNT(p.id) AS legs "
            "FROM journal_entry e LEFT JOIN posting p ON p.entry_id = e.id GROUP BY e.id, p.currency"
        )
        report.journal_entries = len({s.id for s in sums})
        bad += [f"journal entry {s.id} {s.currency}: postings sum to {s.total}" for s in sums if s.total != 0]
        bad += [f"journal entry {s.id} has no postings" for s in sums if s.legs == 0]

        holds = {h.id: h for h in await rows("SELECT * FROM ledger_hold")}
        names = {1: "active", 2: "captured", 3: "released", 4: "expired"}
        for h in holds.values():
            report.holds_by_state[names.get(h.state, str(h.state))] = (
                report.holds_by_state.get(names.get(h.state, ""), 0) + 1
            )
        by_hold = {o.hold_id: o for o in orders.values()}
        for h in holds.values():
            order = by_hold.get(h.id)
            if order is None:
                bad.append(f"hold {h.id} ({h.reference}) names no existing order")
            elif h.state == 1 and order.state not in ACTIVE:
                bad.append(f"hold {h.id} still active for final order {order.id}")
            elif h.state != 1 and order.state in ACTIVE:
                bad.append(f"hold {h.id} closed ({names.get(h.state)}) while order {order.id} is live")
            if h.state == 2 and (h.captured_minor <= 0 or not h.entry_id):
                bad.append(f"hold {h.id} captured without an amount or entry")
            if h.state in (3, 4) and (h.captured_minor != 0 or h.entry_id):
                bad.append(f"hold {h.id} released and captured")
        bad += [
            f"order {o.id} names hold {o.hold_id}, which does not exist"
            for o in orders.values()
            if o.hold_id not in holds
        ]
        for a in await rows(
            "SELECT a.id, a.held_minor, "
            "COALESCE(SUM(h.amount_minor - h.captured_minor) FILTER (WHERE h.state = 1), 0) AS active "
            "FROM ledger_account a LEFT JOIN ledger_hold h ON h.account_id = a.id GROUP BY a.id, a.held_minor"
        ):
            if a.held_minor != a.active:
                bad.append(f"account {a.id} holds {a.held_minor} but its active holds sum to {a.active}")
    await engine.dispose()
    return report


async def drill(drivers: int, clients: int, kill_at: int, base_url: str = POSTGRES_URL) -> Report:
    base = sa.engine.make_url(base_url)
    name = f"drill_kill_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(base, isolation_level="AUTOCOMMIT")
    async with admin.connect() as c:
        await c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    process: asyncio.subprocess.Process | None = None
    try:
        pairs = await prepare(url, drivers)
        calls = [(p.subject, q, f"drill-{i}") for i, (p, q) in enumerate(pairs)]
        with tempfile.TemporaryDirectory(prefix="drill-kill-") as tmp:
            process, target = await start_server(url, Path(tmp))
            server = process

            async def kill() -> None:
                server.send_signal(signal.SIGKILL)
                await server.wait()

            first = await load(target, calls, clients, kill_at, kill)
            killed_at = time.perf_counter()
            acked = dict(first["answered"])
            at_kill = await count_orders(url)
            process, target = await start_server(url, Path(tmp))
            ready_s = time.perf_counter() - killed_at
            retry = [c for c in calls if c[2] not in acked]
            again = await load(target, retry, clients)
            final = {**acked, **again["answered"]}
            # The acknowledged ones asked again: the same order, even after the kill and restart.
            confirm = await load(target, [c for c in calls if c[2] in acked], clients)
            for key, order_id in confirm["answered"].items():
                if order_id != acked[key]:
                    final[key] = order_id
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 60)
            process = None
        report = await check(url, calls, acked, final)
        report.acknowledged_before_kill = len(acked)
        report.in_flight_at_kill = first["in_flight_at_kill"]
        report.committed_unanswered_at_kill = at_kill - len(acked)
        refused: dict[str, int] = {}
        for code in first["refused"].values():
            refused[code] = refused.get(code, 0) + 1
        report.refused_before_kill = refused
        report.retried_after_restart = len(retry)
        report.kill_to_ready_s = round(ready_s, 2)
        return report
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        async with admin.connect() as c:
            await c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drivers", type=int, default=300)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--kill-at", type=int, default=100, help="SIGKILL once this many orders were acknowledged")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = asyncio.run(drill(args.drivers, args.clients, args.kill_at))
    print(json.dumps(asdict(report), indent=1))
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=1))
    sys.exit(1 if report.violations else 0)


if __name__ == "__main__":
    main()
