"""Text output of the Solomon VRPTW solver, for `voltcloud solve-vrptw FILE --time-limit-ms N --seed S`.

The format is the one used by the DIMACS/CVRPLIB tooling::

    Route #1: 5 3 7
    Route #2: 2 9
    Cost 828.94
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

from voltcloud import _core


class _SolutionLike(Protocol):
    @property
    def routes(self) -> Sequence[Sequence[int]]: ...

    @property
    def cost(self) -> float: ...


def format_solution(solution: _SolutionLike) -> str:
    """`Route #k: c1 c2 ...` per non-empty route (customer numbers, depot omitted), then `Cost <total>`
    (two decimals). No trailing newline: `print()` it."""
    lines = [
        f"Route #{k}: {' '.join(str(c) for c in route)}"
        for k, route in enumerate((r for r in solution.routes if r), start=1)
    ]
    lines.append(f"Cost {solution.cost:.2f}")
    return "\n".join(lines)


def solve_and_format(path: str | os.PathLike[str], time_limit_ms: int = 300, seed: int = 1) -> str:
    """Solves a Solomon file and returns `format_solution` text. Raises `_core.InvalidInputError` for an
    unreadable or malformed file or a bad budget, `_core.InfeasibleError` if the file's vehicles cannot
    serve every customer."""
    return format_solution(_core.solve_vrptw_file(path, time_limit_ms=time_limit_ms, seed=seed))
