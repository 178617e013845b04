"""The RPC fuzzer, longer than CI runs it: every served unary RPC over real gRPC with Hypothesis-generated
requests (tests/security/fuzzkit.py) as the platform admin and as an operator, against a fresh demo platform
(embedded SQLite by default, or --database-url). Prints the count of answers by status, by method for the
forbidden ones (UNKNOWN, INTERNAL, UNIMPLEMENTED outside the services not built yet), and whether the server
still answered Health afterwards. Exits 1 if anything forbidden was seen.

    python bench/fuzz_rpcs.py --examples 5000
    python bench/fuzz_rpcs.py --examples 3000 --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/fuzz
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import grpc
import hypothesis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for tests.security

from tests.security import fuzzkit
from voltcloud.config import Settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=3000)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary directory")
    parser.add_argument("--seed", type=int, default=None, help="Hypothesis seed (default: random)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Settings(
            listen="127.0.0.1:0",
            data_dir=Path(tmp),
            database_url=args.database_url,
            jwt_key="fuzz-bench-key-0123456789abcdef0123456789",
            seed_demo=True,
        )
        with fuzzkit.ThreadedPlatform(config) as server:
            return run(server, args.examples, args.seed)


def run(server: fuzzkit.ThreadedPlatform, examples: int, seed: int | None) -> int:
    by_status: collections.Counter[str] = collections.Counter()
    forbidden: collections.Counter[tuple[str, str]] = collections.Counter()
    started = time.monotonic()
    with grpc.insecure_channel(server.target) as channel:

        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(call=fuzzkit.calls())
        def one(call: fuzzkit.Call) -> None:
            code = fuzzkit.send(channel, server, call)
            by_status[code.name] += 1
            if not fuzzkit.allowed(call.method, code):
                forbidden[call.method.path, code.name] += 1

        if seed is not None:
            one = hypothesis.seed(seed)(one)
        one()
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    elapsed = time.monotonic() - started
    total = sum(by_status.values())
    print(f"{total} calls over {len(fuzzkit.unary_methods())} unary RPCs in {elapsed:.1f}s")
    for name, n in by_status.most_common():
        print(f"  {name:20s} {n:6d}")
    for (path, name), n in forbidden.most_common():
        print(f"  FORBIDDEN {name} x{n}: {path}")
    serving = health.status == health_pb2.HealthCheckResponse.SERVING
    print(f"health afterwards: {health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)}")
    return 0 if serving and not forbidden else 1


if __name__ == "__main__":
    raise SystemExit(main())
