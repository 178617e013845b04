//! Route solver: VRPTW with pickup-and-delivery pairs, skills and shifts; batch ruin-and-recreate
//! search, online cheapest insertion and the Solomon benchmark reader. Python surface below.
//!
//! Times given by Python (matrix, windows, shifts, service) are floats in one unit of the caller's
//! choice (seconds, or Solomon distance); the engine works in integer thousandths of that unit.

pub mod model;
pub mod online;
pub mod search;
pub mod solomon;
pub mod solution;

use crate::errors::{CoreError, CoreResult};
use crate::gil;
use model::{from_units, to_units, Matrix, Problem, Role};
use numpy::{PyReadonlyArrayDyn, PyUntypedArrayMethods};
use parking_lot::RwLock;
use pyo3::prelude::*;
use search::{solve, Params};

/// Longest accepted time budget, one hour.
const MAX_TIME_LIMIT_MS: u64 = 3_600_000;

#[pyclass(module = "voltcloud._core", frozen, get_all, from_py_object)]
#[derive(Debug, Clone)]
pub struct Vehicle {
    pub id: i64,
    pub start: usize,
    pub end: usize,
    pub shift_start: f64,
    pub shift_end: f64,
    pub capacity: i64,
    pub skills: u64,
}

#[pymethods]
impl Vehicle {
    #[new]
    #[pyo3(signature = (id, start, end=None, shift_start=0.0, shift_end=1e9, capacity=1_099_511_627_776, skills=0))]
    fn new(
        id: i64,
        start: usize,
        end: Option<usize>,
        shift_start: f64,
        shift_end: f64,
        capacity: i64,
        skills: u64,
    ) -> PyResult<Self> {
        let v = Vehicle {
            id,
            start,
            end: end.unwrap_or(start),
            shift_start,
            shift_end,
            capacity,
            skills,
        };
        v.to_model()?;
        Ok(v)
    }

    fn __repr__(&self) -> String {
        format!(
            "Vehicle(id={}, start={}, end={}, shift_start={}, shift_end={}, capacity={}, skills={})",
            self.id, self.start, self.end, self.shift_start, self.shift_end, self.capacity, self.skills
        )
    }
}

impl Vehicle {
    fn to_model(&self) -> CoreResult<model::Vehicle> {
        let v = model::Vehicle {
            id: self.id,
            start_loc: self.start,
            end_loc: self.end,
            shift_start: to_units("shift_start", self.shift_start)?,
            shift_end: to_units("shift_end", self.shift_end)?,
            capacity: self.capacity,
            skills: self.skills,
        };
        model::validate_vehicle(&v, usize::MAX)?;
        Ok(v)
    }
}

#[pyclass(module = "voltcloud._core", frozen, get_all, from_py_object)]
#[derive(Debug, Clone)]
pub struct Task {
    pub id: i64,
    pub location: usize,
    pub ready: f64,
    pub due: f64,
    pub service: f64,
    pub demand: i64,
    pub skills: u64,
}

#[pymethods]
impl Task {
    #[new]
    #[pyo3(signature = (id, location, ready=0.0, due=1e9, service=0.0, demand=0, skills=0))]
    fn new(
        id: i64,
        location: usize,
        ready: f64,
        due: f64,
        service: f64,
        demand: i64,
        skills: u64,
    ) -> PyResult<Self> {
        let t = Task {
            id,
            location,
            ready,
            due,
            service,
            demand,
            skills,
        };
        t.to_model()?;
        Ok(t)
    }

    fn __repr__(&self) -> String {
        format!(
            "Task(id={}, location={}, ready={}, due={}, service={}, demand={}, skills={})",
            self.id, self.location, self.ready, self.due, self.service, self.demand, self.skills
        )
    }
}

impl Task {
    fn to_model(&self) -> CoreResult<model::Task> {
        let t = model::Task {
            id: self.id,
            loc: self.location,
            ready: to_units("ready", self.ready)?,
            due: to_units("due", self.due)?,
            service: to_units("service", self.service)?,
            demand: self.demand,
            skills: self.skills,
            role: Role::Single,
        };
        model::validate_task(&t, usize::MAX)?;
        Ok(t)
    }
}

/// Where `RoutePlanner.insert` put a task. `added_cost` is in matrix units; `eta` is the service start.
#[pyclass(module = "voltcloud._core", frozen, get_all)]
#[derive(Debug, Clone)]
pub struct Insertion {
    pub task_id: i64,
    pub vehicle_id: i64,
    pub position: usize,
    pub added_cost: f64,
    pub eta: f64,
}

#[pymethods]
impl Insertion {
    fn __repr__(&self) -> String {
        format!(
            "Insertion(task_id={}, vehicle_id={}, position={}, added_cost={}, eta={})",
            self.task_id, self.vehicle_id, self.position, self.added_cost, self.eta
        )
    }
}

impl From<online::Placed> for Insertion {
    fn from(p: online::Placed) -> Self {
        Insertion {
            task_id: p.task_id,
            vehicle_id: p.vehicle_id,
            position: p.position,
            added_cost: from_units(p.added_cost),
            eta: from_units(p.eta),
        }
    }
}

/// One vehicle's plan: task ids in visiting order and their planned service starts.
#[pyclass(module = "voltcloud._core", frozen, get_all)]
#[derive(Debug, Clone)]
pub struct PlannedRoute {
    pub vehicle_id: i64,
    pub task_ids: Vec<i64>,
    pub etas: Vec<f64>,
    /// Planned return time at the vehicle's end location.
    pub end_time: f64,
    pub cost: f64,
}

#[pymethods]
impl PlannedRoute {
    fn __repr__(&self) -> String {
        format!(
            "PlannedRoute(vehicle_id={}, task_ids={:?}, cost={})",
            self.vehicle_id, self.task_ids, self.cost
        )
    }
}

fn planned_routes(p: &Problem, sol: &solution::Solution) -> Vec<PlannedRoute> {
    sol.routes
        .iter()
        .map(|r| PlannedRoute {
            vehicle_id: p.vehicles[r.vehicle].id,
            task_ids: r.tasks.iter().map(|&t| p.tasks[t].id).collect(),
            etas: r.start[1..=r.len()].iter().map(|&s| from_units(s)).collect(),
            end_time: from_units(r.start[r.len() + 1]),
            cost: from_units(r.cost),
        })
        .collect()
}

/// Result of `solve_routes`: one route per vehicle (possibly empty) and the ids nobody could serve.
#[pyclass(module = "voltcloud._core", frozen, get_all)]
#[derive(Debug, Clone)]
pub struct RoutingSolution {
    pub routes: Vec<PlannedRoute>,
    pub unassigned: Vec<i64>,
    pub cost: f64,
    pub iterations: u64,
    pub elapsed_ms: f64,
}

#[pymethods]
impl RoutingSolution {
    fn __repr__(&self) -> String {
        format!(
            "RoutingSolution(cost={}, routes={}, unassigned={:?})",
            self.cost,
            self.routes.iter().filter(|r| !r.task_ids.is_empty()).count(),
            self.unassigned
        )
    }
}

/// Result of a Solomon solve: routes as customer numbers (depot omitted), float total distance.
#[pyclass(module = "voltcloud._core", frozen, get_all)]
#[derive(Debug, Clone)]
pub struct VrptwSolution {
    pub name: String,
    pub routes: Vec<Vec<i64>>,
    pub cost: f64,
    pub vehicles: usize,
    pub max_vehicles: usize,
    pub iterations: u64,
    pub elapsed_ms: f64,
}

#[pymethods]
impl VrptwSolution {
    fn __repr__(&self) -> String {
        format!(
            "VrptwSolution(name={:?}, cost={:.2}, vehicles={})",
            self.name, self.cost, self.vehicles
        )
    }
}

/// Result of `RoutePlanner.reoptimize`.
#[pyclass(module = "voltcloud._core", frozen, get_all)]
#[derive(Debug, Clone)]
pub struct Reoptimization {
    pub applied: bool,
    pub cost_before: f64,
    pub cost_after: f64,
    pub iterations: u64,
}

#[pymethods]
impl Reoptimization {
    fn __repr__(&self) -> String {
        format!(
            "Reoptimization(applied={}, cost_before={}, cost_after={}, iterations={})",
            self.applied, self.cost_before, self.cost_after, self.iterations
        )
    }
}

/// Reads a square matrix from a 2-D (n, n) or flat (n*n) numpy array of float64 or int64.
fn matrix_values(field: &str, obj: &Bound<'_, PyAny>) -> CoreResult<Vec<f64>> {
    // Contiguous arrays are copied as slices; iterating a dynamic-dimension view is much slower.
    let (shape, values): (Vec<usize>, Vec<f64>) = if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, f64>>()
    {
        let values = match a.as_slice() {
            Ok(s) => s.to_vec(),
            Err(_) => a.as_array().iter().copied().collect(),
        };
        (a.shape().to_vec(), values)
    } else if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, i64>>() {
        let values = match a.as_slice() {
            Ok(s) => s.iter().map(|&v| v as f64).collect(),
            Err(_) => a.as_array().iter().map(|&v| v as f64).collect(),
        };
        (a.shape().to_vec(), values)
    } else {
        return Err(CoreError::invalid(
            field,
            "must be a numpy array of float64 or int64",
        ));
    };
    match shape.as_slice() {
        [_] => Ok(values),
        [a, b] if a == b => Ok(values),
        _ => Err(CoreError::invalid(
            field,
            format!("must be flat (n*n,) or square (n, n), got shape {shape:?}"),
        )),
    }
}

/// Copies the arrays with the GIL, then validates and converts them without it (large matrices).
fn read_matrix(
    py: Python<'_>,
    matrix: &Bound<'_, PyAny>,
    cost_matrix: Option<&Bound<'_, PyAny>>,
) -> CoreResult<Matrix> {
    let time = matrix_values("matrix", matrix)?;
    let cost = cost_matrix.map(|c| matrix_values("cost_matrix", c)).transpose()?;
    gil::without_gil(py, || Matrix::from_f64(&time, cost.as_deref()))
}

fn check_budget(time_limit_ms: u64, max_iterations: Option<u64>) -> CoreResult<Params> {
    if time_limit_ms > MAX_TIME_LIMIT_MS {
        return Err(CoreError::invalid(
            "time_limit_ms",
            format!("must be <= {MAX_TIME_LIMIT_MS}, got {time_limit_ms}"),
        ));
    }
    Ok(Params::new(time_limit_ms, 0, max_iterations))
}

/// Solves a batch VRPTW / pickup-and-delivery problem. Every task not served is listed in `unassigned`.
#[pyfunction]
#[pyo3(signature = (vehicles, tasks, matrix, *, pairs=Vec::new(), cost_matrix=None, time_limit_ms=1000, seed=0, max_iterations=None))]
#[allow(clippy::too_many_arguments)]
pub fn solve_routes(
    py: Python<'_>,
    vehicles: Vec<Vehicle>,
    tasks: Vec<Task>,
    matrix: &Bound<'_, PyAny>,
    pairs: Vec<(i64, i64)>,
    cost_matrix: Option<&Bound<'_, PyAny>>,
    time_limit_ms: u64,
    seed: u64,
    max_iterations: Option<u64>,
) -> PyResult<RoutingSolution> {
    let mut params = check_budget(time_limit_ms, max_iterations)?;
    params.seed = seed;
    let matrix = read_matrix(py, matrix, cost_matrix)?;
    let vehicles = vehicles
        .iter()
        .map(Vehicle::to_model)
        .collect::<CoreResult<Vec<_>>>()?;
    let tasks = tasks.iter().map(Task::to_model).collect::<CoreResult<Vec<_>>>()?;
    let (problem, sol, stats) = gil::without_gil(py, || -> CoreResult<_> {
        let problem = Problem::new(matrix, vehicles, tasks, &pairs)?;
        let (sol, stats) = solve(&problem, None, &params);
        Ok((problem, sol, stats))
    })?;
    let mut unassigned: Vec<i64> = Vec::new();
    for &h in &sol.unassigned {
        unassigned.push(problem.tasks[h].id);
        if let Role::Pickup(d) = problem.tasks[h].role {
            unassigned.push(problem.tasks[d].id);
        }
    }
    unassigned.sort_unstable();
    Ok(RoutingSolution {
        routes: planned_routes(&problem, &sol),
        unassigned,
        cost: from_units(sol.cost),
        iterations: stats.iterations,
        elapsed_ms: stats.elapsed_ms,
    })
}

/// Solves a Solomon instance given as text. Raises InfeasibleError if some customer cannot be served
/// with the file's vehicles.
pub fn solve_solomon(text: &str, params: &Params) -> CoreResult<VrptwSolution> {
    let inst = solomon::parse(text)?;
    let problem = inst.to_problem()?;
    let (sol, stats) = solve(&problem, None, params);
    if !sol.unassigned.is_empty() || !sol.is_feasible() {
        return Err(CoreError::Infeasible(format!(
            "{}: {} customers could not be served with {} vehicles",
            inst.name,
            sol.unassigned.len(),
            inst.vehicles
        )));
    }
    let routes: Vec<Vec<i64>> = sol
        .routes
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| r.tasks.iter().map(|&t| problem.tasks[t].id).collect())
        .collect();
    Ok(VrptwSolution {
        name: inst.name.clone(),
        cost: inst.routes_cost(&routes),
        vehicles: routes.len(),
        max_vehicles: inst.vehicles,
        routes,
        iterations: stats.iterations,
        elapsed_ms: stats.elapsed_ms,
    })
}

/// Solves a Solomon VRPTW instance (text) minimising total distance with at most the file's vehicles.
#[pyfunction]
#[pyo3(signature = (text, time_limit_ms=300, seed=1, max_iterations=None))]
pub fn solve_vrptw_text(
    py: Python<'_>,
    text: &str,
    time_limit_ms: u64,
    seed: u64,
    max_iterations: Option<u64>,
) -> PyResult<VrptwSolution> {
    let mut params = check_budget(time_limit_ms, max_iterations)?;
    params.seed = seed;
    Ok(gil::without_gil(py, || solve_solomon(text, &params))?)
}

/// Reads a Solomon file and solves it like `solve_vrptw_text`.
#[pyfunction]
#[pyo3(signature = (path, time_limit_ms=300, seed=1, max_iterations=None))]
pub fn solve_vrptw_file(
    py: Python<'_>,
    path: std::path::PathBuf,
    time_limit_ms: u64,
    seed: u64,
    max_iterations: Option<u64>,
) -> PyResult<VrptwSolution> {
    let text = std::fs::read_to_string(&path)
        .map_err(|e| CoreError::invalid("path", format!("cannot read {}: {e}", path.display())))?;
    solve_vrptw_text(py, &text, time_limit_ms, seed, max_iterations)
}

/// A live plan for a fleet: insert tasks one at a time, remove them, re-optimise in the background.
/// Thread-safe; `reoptimize` runs without the GIL on a snapshot and is applied only if nothing
/// changed meanwhile.
#[pyclass(module = "voltcloud._core", frozen)]
pub struct RoutePlanner {
    inner: RwLock<online::Planner>,
}

#[pymethods]
impl RoutePlanner {
    #[new]
    #[pyo3(signature = (vehicles, matrix, *, cost_matrix=None))]
    fn new(
        vehicles: Vec<Vehicle>,
        matrix: &Bound<'_, PyAny>,
        cost_matrix: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let py = matrix.py();
        let matrix = read_matrix(py, matrix, cost_matrix)?;
        let vehicles = vehicles
            .iter()
            .map(Vehicle::to_model)
            .collect::<CoreResult<Vec<_>>>()?;
        Ok(RoutePlanner {
            inner: RwLock::new(online::Planner::new(matrix, vehicles)?),
        })
    }

    /// Inserts a task at its cheapest feasible position. Raises InfeasibleError (plan unchanged) if
    /// no vehicle can take it, ConflictError if the id is already planned.
    fn insert(&self, task: &Task) -> PyResult<Insertion> {
        let t = task.to_model()?;
        Ok(self.inner.write().insert(t)?.into())
    }

    /// Inserts a pickup and its delivery on one vehicle, pickup first.
    fn insert_pair(&self, pickup: &Task, delivery: &Task) -> PyResult<(Insertion, Insertion)> {
        let (p, d) = (pickup.to_model()?, delivery.to_model()?);
        let (a, b) = self.inner.write().insert_pair(p, d)?;
        Ok((a.into(), b.into()))
    }

    /// Replaces a vehicle's route by `tasks` in order (the plan already dispatched).
    #[pyo3(signature = (vehicle_id, tasks, pairs=Vec::new()))]
    fn set_route(&self, vehicle_id: i64, tasks: Vec<Task>, pairs: Vec<(i64, i64)>) -> PyResult<()> {
        let tasks = tasks.iter().map(Task::to_model).collect::<CoreResult<Vec<_>>>()?;
        Ok(self.inner.write().set_route(vehicle_id, tasks, &pairs)?)
    }

    /// Removes a task (and its pickup/delivery partner). Raises NotFoundError for unknown ids.
    fn remove(&self, task_id: i64) -> PyResult<()> {
        Ok(self.inner.write().remove(task_id)?)
    }

    /// Improves the whole plan for up to `time_limit_ms`.
    #[pyo3(signature = (time_limit_ms=100, seed=0, max_iterations=None))]
    fn reoptimize(
        &self,
        py: Python<'_>,
        time_limit_ms: u64,
        seed: u64,
        max_iterations: Option<u64>,
    ) -> PyResult<Reoptimization> {
        let mut params = check_budget(time_limit_ms, max_iterations)?;
        params.seed = seed;
        let inner = &self.inner;
        Ok(gil::without_gil(py, || {
            let mut snapshot = inner.read().clone();
            let before = snapshot.sol.cost;
            let (better, stats) = snapshot.reoptimize(&params);
            let mut live = inner.write();
            let applied = better && live.version + 1 == snapshot.version;
            if applied {
                *live = snapshot;
            }
            Reoptimization {
                applied,
                cost_before: from_units(before),
                cost_after: from_units(live.sol.cost),
                iterations: stats.iterations,
            }
        }))
    }

    /// Every vehicle's route, in vehicle order (empty routes included).
    fn routes(&self) -> Vec<PlannedRoute> {
        let inner = self.inner.read();
        planned_routes(&inner.problem, &inner.sol)
    }

    /// Total cost of the plan in matrix units.
    #[getter]
    fn cost(&self) -> f64 {
        from_units(self.inner.read().sol.cost)
    }

    fn __len__(&self) -> usize {
        self.inner.read().len()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Vehicle>()?;
    m.add_class::<Task>()?;
    m.add_class::<Insertion>()?;
    m.add_class::<PlannedRoute>()?;
    m.add_class::<RoutingSolution>()?;
    m.add_class::<VrptwSolution>()?;
    m.add_class::<Reoptimization>()?;
    m.add_class::<RoutePlanner>()?;
    m.add_function(wrap_pyfunction!(solve_routes, m)?)?;
    m.add_function(wrap_pyfunction!(solve_vrptw_text, m)?)?;
    m.add_function(wrap_pyfunction!(solve_vrptw_file, m)?)?;
    Ok(())
}
