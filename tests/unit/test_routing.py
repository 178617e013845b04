"""The route solver through the real extension: Solomon solves verified independently, the batch and
online APIs, and input validation."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest

from voltcloud import _core
from voltcloud.routing_cli import format_solution, solve_and_format

DATA = Path(__file__).resolve().parents[1] / "data" / "vrptw"
SMALL = DATA / "R101_25.txt"


def read_solomon(path: Path) -> tuple[int, float, list[list[float]]]:
    lines = [ln.split() for ln in path.read_text().splitlines()]
    vi = next(i for i, ln in enumerate(lines) if ln and ln[0] == "VEHICLE")
    number, capacity = next(ln for ln in lines[vi + 1 :] if ln and ln[0].isdigit())
    ci = next(i for i, ln in enumerate(lines) if ln and ln[0] == "CUSTOMER")
    rows = [[float(x) for x in ln] for ln in lines[ci + 1 :] if ln and ln[0].isdigit()]
    return int(number), float(capacity), rows


def verify_solomon(path: Path, routes: list[list[int]], reported: float, tol: float = 1e-9) -> float:
    """Checks the plan from the file alone; returns the recomputed float distance."""
    max_vehicles, capacity, rows = read_solomon(path)
    depot = rows[0]

    def dist(a: list[float], b: list[float]) -> float:
        return math.hypot(a[1] - b[1], a[2] - b[2])

    assert sorted(c for r in routes for c in r) == list(range(1, len(rows)))
    assert 0 < len(routes) <= max_vehicles
    total = 0.0
    for route in routes:
        assert route
        assert sum(rows[c][3] for c in route) <= capacity
        t, prev = depot[4], depot
        for c in route:
            t = max(t + prev[6] + dist(prev, rows[c]), rows[c][4])
            assert t <= rows[c][5] + 1e-9, f"customer {c} late"
            total += dist(prev, rows[c])
            prev = rows[c]
        assert t + prev[6] + dist(prev, depot) <= depot[5] + 1e-9
        total += dist(prev, depot)
    assert reported == pytest.approx(total, rel=1e-12, abs=tol)
    return total


# --- Solomon ----------------------------------------------------------------------------------------


def test_small_solomon_instance_is_feasible_and_cost_is_exact() -> None:
    sol = _core.solve_vrptw_file(str(SMALL), time_limit_ms=200, seed=1)
    cost = verify_solomon(SMALL, sol.routes, sol.cost)
    assert sol.vehicles == len(sol.routes)
    assert sol.max_vehicles == 25
    assert sol.iterations > 0
    assert cost < 640.0  # R101 with 25 customers: best known 617.1


def test_c101_reaches_the_best_known_distance() -> None:
    path = DATA / "C101.txt"
    sol = _core.solve_vrptw_file(path, time_limit_ms=300, seed=1)
    cost = verify_solomon(path, sol.routes, sol.cost)
    assert cost <= 828.94 * 1.01


def test_same_seed_and_iteration_budget_gives_the_same_routes() -> None:
    text = SMALL.read_text()
    a = _core.solve_vrptw_text(text, time_limit_ms=10_000, seed=7, max_iterations=300)
    b = _core.solve_vrptw_text(text, time_limit_ms=10_000, seed=7, max_iterations=300)
    assert a.routes == b.routes and a.cost == b.cost
    assert a.iterations == 300


def test_format_solution_matches_the_cli_format() -> None:
    text = solve_and_format(SMALL, time_limit_ms=50, seed=1)
    lines = text.splitlines()
    assert lines[-1].startswith("Cost ")
    routes = []
    for k, line in enumerate(lines[:-1], start=1):
        head, _, body = line.partition(": ")
        assert head == f"Route #{k}"
        routes.append([int(c) for c in body.split()])
    cost = verify_solomon(SMALL, routes, float(lines[-1].split()[1]), tol=0.005)
    assert lines[-1] == f"Cost {cost:.2f}"


def test_format_solution_text() -> None:
    class Sol:
        routes = [[1, 2], [], [3]]
        cost = 12.3456

    assert format_solution(Sol()) == "Route #1: 1 2\nRoute #2: 3\nCost 12.35"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "missing VEHICLE"),
        ("X\nVEHICLE\n2 20\n", "missing CUSTOMER"),
        ("X\nVEHICLE\n2 20\nCUSTOMER\n0 0 0 0 0 10 0\n1 1 1 1 0 10\n", "7 columns"),
        ("X\nVEHICLE\n2 20\nCUSTOMER\n0 0 0 0 0 10 0\n1 1 zz 1 0 10 0\n", "expected a number"),
        ("X\nVEHICLE\n2 20\nCUSTOMER\n0 0 0 0 0 10 0\n1 1 1 1 20 10 0\n", "after due date"),
    ],
)
def test_malformed_solomon_text_raises_invalid_input(text: str, message: str) -> None:
    with pytest.raises(_core.InvalidInputError, match=message):
        _core.solve_vrptw_text(text, time_limit_ms=10, seed=1)


def test_missing_file_and_bad_budget_raise_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(_core.InvalidInputError, match="cannot read"):
        _core.solve_vrptw_file(str(tmp_path / "nope.txt"))
    with pytest.raises(_core.InvalidInputError, match="time_limit_ms"):
        _core.solve_vrptw_file(str(SMALL), time_limit_ms=10**9)
    with pytest.raises(OverflowError):
        _core.solve_vrptw_file(str(SMALL), time_limit_ms=-1)


def test_unservable_customer_raises_infeasible() -> None:
    text = "X\nVEHICLE\n1 10\nCUSTOMER\n0 0 0 0 0 100 0\n1 3 4 50 0 100 0\n"
    with pytest.raises(_core.InfeasibleError, match="could not be served"):
        _core.solve_vrptw_text(text, time_limit_ms=10)
    assert issubclass(_core.InfeasibleError, _core.VoltcloudCoreError)


# --- batch solve with the general model --------------------------------------------------------------


def grid_matrix(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0, 600, size=(n, 2))  # seconds of driving
    return np.hypot(*(pts[:, None, :] - pts[None, :, :]).transpose(2, 0, 1)), pts


def check_plan(
    sol: _core.RoutingSolution,
    vehicles: list[_core.Vehicle],
    tasks: list[_core.Task],
    matrix: np.ndarray,
    pairs: list[tuple[int, int]],
) -> None:
    by_id = {t.id: t for t in tasks}
    by_vehicle = {v.id: v for v in vehicles}
    pickup_of = {d: p for p, d in pairs}
    deliveries = {p: d for p, d in pairs}
    seen = [tid for r in sol.routes for tid in r.task_ids] + sol.unassigned
    assert sorted(seen) == sorted(by_id)
    total = 0.0
    for r in sol.routes:
        v = by_vehicle[r.vehicle_id]
        # Single demands ride the whole route; a pickup's demand rides until its delivery.
        t, loc, static, onboard, max_onboard = v.shift_start, v.start, 0, 0, 0
        for tid, eta in zip(r.task_ids, r.etas, strict=True):
            task = by_id[tid]
            assert task.skills & v.skills == task.skills
            t = max(t + matrix[loc, task.location], task.ready)
            assert eta == pytest.approx(t, abs=0.01)
            assert t <= task.due + 1e-3
            t += task.service
            total += matrix[loc, task.location] if r.task_ids else 0.0
            loc = task.location
            if tid in deliveries:
                onboard += task.demand
            elif tid in pickup_of:
                onboard -= by_id[pickup_of[tid]].demand
            else:
                static += task.demand
            max_onboard = max(max_onboard, onboard)
        if r.task_ids:
            total += matrix[loc, v.end]
            assert t + matrix[loc, v.end] <= v.shift_end + 1e-3
        assert static + max_onboard <= v.capacity
    for p, d in pairs:
        where = {tid: (r.vehicle_id, r.task_ids.index(tid)) for r in sol.routes for tid in r.task_ids}
        if p in where or d in where:
            assert where[p][0] == where[d][0] and where[p][1] < where[d][1]
    assert sol.cost == pytest.approx(total, abs=0.01 * max(1, len(tasks)))


def test_solve_routes_respects_windows_skills_capacity_and_pairs() -> None:
    matrix, _ = grid_matrix(31)
    vehicles = [
        _core.Vehicle(10, 0, shift_end=20_000, capacity=12, skills=0b01),
        _core.Vehicle(11, 0, end=1, shift_end=20_000, capacity=12, skills=0b11),
        _core.Vehicle(12, 0, shift_start=600, shift_end=15_000, capacity=8),
    ]
    tasks = [
        _core.Task(
            100 + i,
            i,
            ready=300.0 * (i % 10),
            due=300.0 * (i % 10) + 3_000,
            service=60.0,
            demand=1,
            skills=0b10 if i % 7 == 0 else 0,
        )
        for i in range(1, 31)
    ]
    pairs = [(101, 102), (105, 103)]
    sol = _core.solve_routes(vehicles, tasks, matrix, pairs=pairs, time_limit_ms=200, seed=4)
    check_plan(sol, vehicles, tasks, matrix, pairs)
    assert len(sol.routes) == 3 and sol.iterations > 0
    flat = _core.solve_routes(
        vehicles,
        tasks,
        matrix.round().ravel().astype(np.int64),
        pairs=pairs,
        time_limit_ms=10_000,
        seed=4,
        max_iterations=50,
    )
    check_plan(flat, vehicles, tasks, matrix.round(), pairs)


def test_solve_routes_reports_unservable_tasks() -> None:
    matrix, _ = grid_matrix(4)
    vehicles = [_core.Vehicle(1, 0, capacity=2)]
    tasks = [_core.Task(1, 1, demand=2), _core.Task(2, 2, demand=2), _core.Task(3, 3, skills=4)]
    sol = _core.solve_routes(vehicles, tasks, matrix, time_limit_ms=20)
    assert len(sol.unassigned) == 2 and 3 in sol.unassigned


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"matrix": np.zeros((2, 3))}, "matrix"),
        ({"matrix": np.zeros(5)}, "square"),
        ({"matrix": np.array([[0.0, -1.0], [1.0, 0.0]])}, ">= 0"),
        ({"matrix": np.array([[0.0, np.nan], [1.0, 0.0]])}, "finite"),
        ({"matrix": [[0.0, 1.0], [1.0, 0.0]]}, "numpy array"),
        ({"tasks": [_core.Task(1, 5)]}, "location"),
        ({"tasks": [_core.Task(1, 1), _core.Task(1, 1)]}, "duplicate task"),
        ({"vehicles": []}, "at least one vehicle"),
        ({"vehicles": [_core.Vehicle(1, 3)]}, "location"),
        ({"pairs": [(1, 9)]}, "unknown task"),
        ({"cost_matrix": np.zeros((3, 3))}, "same shape"),
    ],
)
def test_solve_routes_rejects_bad_input(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "vehicles": [_core.Vehicle(1, 0)],
        "tasks": [_core.Task(1, 1)],
        "matrix": np.array([[0.0, 1.0], [1.0, 0.0]]),
    }
    args.update(kwargs)
    with pytest.raises(_core.InvalidInputError, match=message):
        _core.solve_routes(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make",
    [
        lambda: _core.Task(1, 0, ready=5.0, due=1.0),
        lambda: _core.Task(1, 0, service=-1.0),
        lambda: _core.Task(1, 0, demand=-1),
        lambda: _core.Task(1, 0, due=math.inf),
        lambda: _core.Vehicle(1, 0, shift_start=10.0, shift_end=5.0),
        lambda: _core.Vehicle(1, 0, capacity=-1),
        lambda: _core.Vehicle(1, 0, shift_end=math.nan),
        lambda: _core.Vehicle(1, 0, capacity=2**51),
        lambda: _core.Task(1, 0, demand=10**10),
        lambda: _core.Task(1, 0, due=1e10),
    ],
)
def test_constructors_validate(make: object) -> None:
    with pytest.raises(_core.InvalidInputError):
        make()  # type: ignore[operator]


# --- online planner ----------------------------------------------------------------------------------


def line_planner(n: int = 12, vehicles: int = 2) -> _core.RoutePlanner:
    x = np.arange(n, dtype=np.float64)
    matrix = np.abs(x[:, None] - x[None, :]) * 60.0  # one minute per step
    fleet = [_core.Vehicle(100 + k, 0, shift_end=10_000.0, capacity=4) for k in range(vehicles)]
    return _core.RoutePlanner(fleet, matrix)


def test_planner_inserts_at_cheapest_position_and_reports_eta() -> None:
    pl = line_planner()
    a = pl.insert(_core.Task(1, 6))
    assert (a.vehicle_id, a.position, a.added_cost, a.eta) == (100, 0, 720.0, 360.0)
    b = pl.insert(_core.Task(2, 3, service=30.0))
    assert (b.vehicle_id, b.position, b.added_cost, b.eta) == (100, 0, 0.0, 180.0)
    routes = pl.routes()
    assert routes[0].task_ids == [2, 1] and routes[0].etas == [180.0, 390.0]
    assert routes[1].task_ids == [] and pl.cost == 720.0 and len(pl) == 2


def test_planner_errors_leave_the_plan_unchanged() -> None:
    pl = line_planner(vehicles=1)
    pl.insert(_core.Task(1, 4))
    with pytest.raises(_core.ConflictError):
        pl.insert(_core.Task(1, 5))
    with pytest.raises(_core.InfeasibleError):
        pl.insert(_core.Task(2, 11, due=60.0))
    with pytest.raises(_core.InvalidInputError):
        pl.insert(_core.Task(3, 99))
    with pytest.raises(_core.NotFoundError):
        pl.remove(42)
    with pytest.raises(_core.NotFoundError):
        pl.set_route(7, [])
    with pytest.raises(_core.InfeasibleError):
        pl.set_route(100, [_core.Task(5, 11, due=1.0)])
    assert [r.task_ids for r in pl.routes()] == [[1]] and len(pl) == 1


def test_planner_pairs_remove_and_reoptimize() -> None:
    pl = line_planner(vehicles=2)
    pl.set_route(100, [_core.Task(1, 9), _core.Task(2, 1), _core.Task(3, 8)])
    pl.set_route(101, [_core.Task(4, 2), _core.Task(5, 10)], pairs=[(4, 5)])
    p, d = pl.insert_pair(_core.Task(6, 7, demand=1), _core.Task(7, 3))
    assert p.vehicle_id == d.vehicle_id and p.position < d.position and p.eta < d.eta
    before = pl.cost
    result = pl.reoptimize(time_limit_ms=5_000, seed=1, max_iterations=300)
    assert result.applied and result.cost_after < before == result.cost_before
    assert sorted(t for r in pl.routes() for t in r.task_ids) == [1, 2, 3, 4, 5, 6, 7]
    pl.remove(7)  # takes its pickup along
    assert sorted(t for r in pl.routes() for t in r.task_ids) == [1, 2, 3, 4, 5]
    for r in pl.routes():
        if 4 in r.task_ids:
            assert r.task_ids.index(4) < r.task_ids.index(5)


def test_planner_is_usable_from_threads() -> None:
    pl = line_planner(n=40, vehicles=4)
    errors: list[BaseException] = []

    def worker(base: int) -> None:
        try:
            for i in range(20):
                pl.insert(_core.Task(base + i, 1 + (base + i) % 39))
        except _core.InfeasibleError:
            pass
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(1000 * k,)) for k in range(3)]
    for t in threads:
        t.start()
    pl.reoptimize(time_limit_ms=50, seed=2)
    for t in threads:
        t.join()
    assert not errors
    ids = [t for r in pl.routes() for t in r.task_ids]
    assert len(ids) == len(set(ids)) == len(pl)
