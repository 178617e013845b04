"""The GB/T 32960 codec fuzzer, longer than the suite runs it (tests/conformance/gbt32960_fuzz.py): random
bytes, truncations and bit flips of the conformance frames and of built frames of both editions, through
`decode_frame`/`decode_message` and a chunked `FrameReader`. Prints inputs, crashes, inputs/s and the
message kinds reached. Exits 1 on any crash (the first one is printed with its input).

    python bench/fuzz_gbt32960.py --inputs 1000000 --seed 32960
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for tests.conformance

from tests.conformance.gbt32960_fuzz import run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=32960)
    args = parser.parse_args()
    started = time.perf_counter()
    outcome = run(args.inputs, args.seed)
    elapsed = time.perf_counter() - started
    print(
        f"inputs {outcome.inputs}  crashes {outcome.crashes}  elapsed {elapsed:.1f} s  "
        f"{outcome.inputs / elapsed:,.0f} inputs/s  frames through the reader {outcome.frames}"
    )
    print("messages from whole-buffer decoding:", dict(outcome.messages.most_common()))
    if outcome.crashes:
        print("first crash:", outcome.first_crash)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
