"""The `voltcloud` command: serve | up | db | token | seed | solve-vrptw."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voltcloud.config import Settings

if TYPE_CHECKING:
    from voltcloud.startup import ServeHere


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides: dict[str, Any] = {k: v for k, v in extra.items() if v is not None}
    for name in ("listen", "data_dir", "database_url"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="data directory (default ./data or VOLTCLOUD_DATA_DIR)")
    parser.add_argument("--database-url", help="SQLAlchemy async URL (default: SQLite in the data directory)")


def _platform() -> ServeHere:
    """The platform, imported only by a command that serves it (a supervisor imports it once for its workers)."""
    from voltcloud.server import serve_here

    return serve_here


def _cmd_serve(args: argparse.Namespace, *, newcomer: bool = False) -> int:
    from voltcloud.platform.auth import Role, Tenant
    from voltcloud.startup import Serving, configure_logging, serve_workers

    settings = _settings(args, seed_demo=True if newcomer or args.seed_demo else None, workers=args.workers)

    def ready(platform: Serving) -> None:
        host = settings.listen.rpartition(":")[0]
        pids = ", ".join(str(pid) for pid in platform.worker_pids)
        print(
            f"VoltCloud serving gRPC on {host}:{platform.port} (database: {platform.dialect}, "
            f"{len(platform.worker_pids)} worker(s), pid {pids})"
        )
        if newcomer:
            from voltcloud.world import generate_world

            world = generate_world("demo", seed=settings.demo_seed)
            operator = Tenant("operator", world.operators[0].id)
            fleet = Tenant("fleet", next(f.id for f in world.fleets if f.parent_idx < 0))
            tokens = {
                "platform_admin": platform.tokens.mint("dev-admin", Role.PLATFORM_ADMIN),
                f"operator ({operator})": platform.tokens.mint("dev-operator", Role.OPERATOR, operator),
                f"fleet_manager ({fleet})": platform.tokens.mint("dev-fleet", Role.FLEET_MANAGER, fleet),
                f"driver ({world.drivers.id[0]})": platform.tokens.mint(world.drivers.id[0], Role.DRIVER),
            }
            for label, token in tokens.items():
                print(f"dev token, {label}:\n  {token}")
            print(f"try:  grpcurl -plaintext -H 'authorization: Bearer <token>' {host}:{platform.port} list")
            print("Ctrl-C stops.")
        sys.stdout.flush()

    configure_logging(settings)
    return serve_workers(settings, _platform, on_ready=ready)


def _cmd_db(args: argparse.Namespace) -> int:
    from voltcloud.platform.db import upgrade_database

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.resolved_database_url(), args.revision)
    print(f"database at {args.revision}: {settings.resolved_database_url()}")
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    from voltcloud.platform.auth import Role, Tenant
    from voltcloud.startup import token_service

    tokens = token_service(_settings(args))
    ttl = dt.timedelta(seconds=args.ttl_s) if args.ttl_s else None
    print(tokens.mint(args.subject, Role.parse(args.role), Tenant.parse(args.tenant or ""), ttl=ttl))
    return 0


def _cmd_seed(args: argparse.Namespace) -> int:
    from voltcloud.platform.db import Database, upgrade_database
    from voltcloud.seed import seed_world
    from voltcloud.world import generate_world

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url()
    upgrade_database(url)

    async def run() -> dict[str, int]:
        db = Database(url)
        try:
            return await seed_world(db, generate_world(args.scale, seed=args.seed))
        finally:
            await db.dispose()

    for table, count in asyncio.run(run()).items():
        print(f"{table:12s} {count}")
    return 0


def _cmd_solve_vrptw(args: argparse.Namespace) -> int:
    from voltcloud.routing_cli import solve_and_format

    print(solve_and_format(args.file, time_limit_ms=args.time_limit_ms, seed=args.seed))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from voltcloud.demo import run

    return asyncio.run(run(_settings(args)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voltcloud", description="VoltCloud energy-replenishment platform")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC platform")
    serve.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:50051)")
    serve.add_argument("--seed-demo", action="store_true", help="seed the demo city when the database is empty")
    serve.add_argument("--workers", type=int, help="server processes sharing the port (default: one per CPU)")
    _add_common(serve)
    serve.set_defaults(run=_cmd_serve)

    up = commands.add_parser("up", help="newcomer mode: serve on SQLite with demo data and print dev tokens")
    up.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:50051)")
    up.add_argument("--workers", type=int, help="server processes sharing the port (default: one per CPU)")
    _add_common(up)
    up.set_defaults(run=lambda a: _cmd_serve(a, newcomer=True))

    db = commands.add_parser("db", help="database administration")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="apply migrations")
    upgrade.add_argument("revision", nargs="?", default="heads")
    _add_common(upgrade)
    upgrade.set_defaults(run=_cmd_db)

    token = commands.add_parser("token", help="dev tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="mint a signed token with the configured key")
    create.add_argument("--role", required=True, help="platform_admin, operator, fleet_manager, driver, ...")
    create.add_argument("--tenant", help="operator:<id> or fleet:<id>")
    create.add_argument("--subject", default="dev", help="principal id (user, gateway, specialist)")
    create.add_argument("--ttl-s", type=int, help="lifetime in seconds")
    _add_common(create)
    create.set_defaults(run=_cmd_token)

    seed = commands.add_parser("seed", help="seed a generated world into the database")
    seed.add_argument("--scale", default="demo", choices=["demo", "city", "country"])
    seed.add_argument("--seed", type=int, default=7)
    _add_common(seed)
    seed.set_defaults(run=_cmd_seed)

    demo = commands.add_parser("demo", help="one whole one-click power-up over real gRPC on the embedded default")
    _add_common(demo)
    demo.set_defaults(run=_cmd_demo)

    vrptw = commands.add_parser("solve-vrptw", help="solve a Solomon VRPTW instance file")
    vrptw.add_argument("file", type=Path)
    vrptw.add_argument("--time-limit-ms", type=int, default=300)
    vrptw.add_argument("--seed", type=int, default=1)
    vrptw.set_defaults(run=_cmd_solve_vrptw)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from voltcloud.platform.errors import DomainError

    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except DomainError as error:
        print(f"voltcloud: {error.message}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
