//! The routing model: vehicles, tasks and the travel-time matrix, all in integer units.
//!
//! Every time and cost is an `i64` in thousandths of the caller's unit (seconds, or Solomon distance
//! units): `UNIT` converts at the boundary so the search never compares floats.

use crate::errors::{finite, CoreError, CoreResult};
use std::collections::HashMap;
use std::sync::Arc;

/// Internal integer units per caller unit.
pub const UNIT: f64 = 1000.0;
/// Largest magnitude accepted for a time or duration, in caller units (~31 years of seconds): with
/// internal units of 1/1000, sums over a million arcs stay far inside i64.
pub const MAX_TIME: f64 = 1e9;
/// Largest demand of one task and largest vehicle capacity, so that load sums cannot overflow.
pub const MAX_DEMAND: i64 = 1_000_000_000;
pub const MAX_CAPACITY: i64 = 1 << 50;

/// Converts a caller value (seconds, distance) to internal units, rounding to the nearest unit.
pub fn to_units(field: &str, value: f64) -> CoreResult<i64> {
    let value = finite(field, value)?;
    if value.abs() > MAX_TIME {
        return Err(CoreError::invalid(
            field,
            format!("must be within ±{MAX_TIME:e}, got {value}"),
        ));
    }
    Ok((value * UNIT).round() as i64)
}

pub fn from_units(value: i64) -> f64 {
    value as f64 / UNIT
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vehicle {
    pub id: i64,
    pub start_loc: usize,
    pub end_loc: usize,
    pub shift_start: i64,
    pub shift_end: i64,
    pub capacity: i64,
    pub skills: u64,
}

/// How a task relates to another: a pickup must precede its delivery on the same vehicle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Single,
    /// Holds the index of the delivery task.
    Pickup(usize),
    /// Holds the index of the pickup task.
    Delivery(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: i64,
    pub loc: usize,
    pub ready: i64,
    pub due: i64,
    pub service: i64,
    /// Single task: capacity used for the whole route. Pickup: load carried until its delivery.
    pub demand: i64,
    pub skills: u64,
    pub role: Role,
}

/// Square travel-time and cost matrices over locations, row-major. `cost` is often a copy of `time`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub n: usize,
    pub time: Vec<i64>,
    pub cost: Vec<i64>,
}

impl Matrix {
    /// Builds from caller values (row-major, `n * n`); `cost` defaults to the travel times.
    pub fn from_f64(time: &[f64], cost: Option<&[f64]>) -> CoreResult<Self> {
        let n = square_side("matrix", time.len())?;
        let time = convert_matrix("matrix", time)?;
        let cost = match cost {
            Some(c) => {
                if c.len() != time.len() {
                    return Err(CoreError::invalid(
                        "cost_matrix",
                        format!(
                            "must have the same shape as matrix ({} values), got {}",
                            time.len(),
                            c.len()
                        ),
                    ));
                }
                convert_matrix("cost_matrix", c)?
            }
            None => time.clone(),
        };
        Ok(Matrix { n, time, cost })
    }

    #[inline(always)]
    pub fn t(&self, a: usize, b: usize) -> i64 {
        self.time[a * self.n + b]
    }

    #[inline(always)]
    pub fn c(&self, a: usize, b: usize) -> i64 {
        self.cost[a * self.n + b]
    }
}

fn square_side(field: &str, len: usize) -> CoreResult<usize> {
    let n = (len as f64).sqrt().round() as usize;
    if n == 0 || n * n != len {
        return Err(CoreError::invalid(
            field,
            format!("must be a non-empty square n*n matrix, got {len} values"),
        ));
    }
    Ok(n)
}

fn convert_matrix(field: &str, values: &[f64]) -> CoreResult<Vec<i64>> {
    let mut out = Vec::with_capacity(values.len());
    for &v in values {
        // One comparison pair rejects NaN, negatives and out-of-range values; the error path explains.
        if !(0.0..=MAX_TIME).contains(&v) {
            to_units(field, v)?;
            return Err(CoreError::invalid(
                field,
                format!("travel times must be >= 0, got {v}"),
            ));
        }
        // Non-negative, so adding 0.5 and truncating is round-half-up, like `f64::round`.
        out.push((v * UNIT + 0.5) as i64);
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct Problem {
    /// Shared, so cloning a problem (e.g. a planner snapshot) does not copy the matrix.
    pub matrix: Arc<Matrix>,
    pub vehicles: Vec<Vehicle>,
    pub tasks: Vec<Task>,
}

impl Problem {
    /// Validates and links a problem. `pairs` holds (pickup id, delivery id); tasks named in a pair must
    /// be distinct and appear in at most one pair.
    pub fn new(
        matrix: Matrix,
        vehicles: Vec<Vehicle>,
        mut tasks: Vec<Task>,
        pairs: &[(i64, i64)],
    ) -> CoreResult<Self> {
        if vehicles.is_empty() {
            return Err(CoreError::invalid("vehicles", "at least one vehicle is required"));
        }
        let mut seen = HashMap::new();
        for v in &vehicles {
            validate_vehicle(v, matrix.n)?;
            if seen.insert(v.id, ()).is_some() {
                return Err(CoreError::invalid(
                    "vehicles",
                    format!("duplicate vehicle id {}", v.id),
                ));
            }
        }
        let mut index = HashMap::with_capacity(tasks.len());
        for (i, t) in tasks.iter_mut().enumerate() {
            t.role = Role::Single;
            validate_task(t, matrix.n)?;
            if index.insert(t.id, i).is_some() {
                return Err(CoreError::invalid("tasks", format!("duplicate task id {}", t.id)));
            }
        }
        for &(p, d) in pairs {
            let (&pi, &di) = match (index.get(&p), index.get(&d)) {
                (Some(a), Some(b)) => (a, b),
                _ => {
                    return Err(CoreError::invalid(
                        "pairs",
                        format!("pair ({p}, {d}) names an unknown task"),
                    ))
                }
            };
            if pi == di || tasks[pi].role != Role::Single || tasks[di].role != Role::Single {
                return Err(CoreError::invalid(
                    "pairs",
                    format!("pair ({p}, {d}): a task can appear in one pair only, as pickup or delivery"),
                ));
            }
            link_pair(&mut tasks, pi, di)?;
        }
        Ok(Problem {
            matrix: Arc::new(matrix),
            vehicles,
            tasks,
        })
    }

    #[inline(always)]
    pub fn can_serve(&self, v: usize, t: usize) -> bool {
        let need = self.tasks[t].skills;
        self.vehicles[v].skills & need == need
    }

    /// The task that stands for a request: itself, or the pickup of a delivery.
    #[inline]
    pub fn head(&self, t: usize) -> usize {
        match self.tasks[t].role {
            Role::Delivery(p) => p,
            _ => t,
        }
    }
}

/// Marks `pi` as the pickup of `di`. The delivery's demand must be 0 or equal to the pickup's.
pub fn link_pair(tasks: &mut [Task], pi: usize, di: usize) -> CoreResult<()> {
    let (p, d) = (tasks[pi].demand, tasks[di].demand);
    if d != 0 && d != p {
        return Err(CoreError::invalid(
            "pairs",
            format!(
                "delivery {} demand must be 0 or equal to its pickup's ({p}), got {d}",
                tasks[di].id
            ),
        ));
    }
    tasks[pi].role = Role::Pickup(di);
    tasks[di].role = Role::Delivery(pi);
    tasks[di].demand = 0;
    Ok(())
}

pub fn validate_vehicle(v: &Vehicle, n_locs: usize) -> CoreResult<()> {
    let who = format!("vehicle {}", v.id);
    if v.start_loc >= n_locs || v.end_loc >= n_locs {
        return Err(CoreError::invalid(
            who,
            format!(
                "start/end location must be < {n_locs} (matrix size), got {}/{}",
                v.start_loc, v.end_loc
            ),
        ));
    }
    if v.shift_start > v.shift_end {
        return Err(CoreError::invalid(who, "shift_start must be <= shift_end"));
    }
    if !(0..=MAX_CAPACITY).contains(&v.capacity) {
        return Err(CoreError::invalid(
            who,
            format!("capacity must be within [0, 2^50], got {}", v.capacity),
        ));
    }
    Ok(())
}

pub fn validate_task(t: &Task, n_locs: usize) -> CoreResult<()> {
    let who = format!("task {}", t.id);
    if t.loc >= n_locs {
        return Err(CoreError::invalid(
            who,
            format!("location must be < {n_locs} (matrix size), got {}", t.loc),
        ));
    }
    if t.ready > t.due {
        return Err(CoreError::invalid(who, "ready must be <= due"));
    }
    if t.service < 0 {
        return Err(CoreError::invalid(who, "service must be >= 0"));
    }
    if !(0..=MAX_DEMAND).contains(&t.demand) {
        return Err(CoreError::invalid(
            who,
            format!("demand must be within [0, 1e9], got {}", t.demand),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: i64, loc: usize) -> Task {
        Task {
            id,
            loc,
            ready: 0,
            due: 100,
            service: 0,
            demand: 1,
            skills: 0,
            role: Role::Single,
        }
    }

    fn vehicle(id: i64) -> Vehicle {
        Vehicle {
            id,
            start_loc: 0,
            end_loc: 0,
            shift_start: 0,
            shift_end: 100,
            capacity: 5,
            skills: 0,
        }
    }

    #[test]
    fn matrix_rejects_bad_shapes_and_values() {
        assert!(Matrix::from_f64(&[0.0, 1.0, 1.0], None).is_err());
        assert!(Matrix::from_f64(&[], None).is_err());
        assert!(Matrix::from_f64(&[0.0, -1.0, 1.0, 0.0], None).is_err());
        assert!(Matrix::from_f64(&[0.0, f64::NAN, 1.0, 0.0], None).is_err());
        assert!(Matrix::from_f64(&[0.0, 1.0, 1.0, 0.0], Some(&[0.0])).is_err());
        let m = Matrix::from_f64(&[0.0, 1.5, 2.0, 0.0], None).unwrap();
        assert_eq!((m.n, m.t(0, 1), m.c(1, 0)), (2, 1500, 2000));
    }

    #[test]
    fn problem_validates_ids_locations_and_pairs() {
        let m = || Matrix::from_f64(&[0.0; 9], None).unwrap();
        assert!(Problem::new(m(), vec![], vec![], &[]).is_err());
        assert!(Problem::new(m(), vec![vehicle(1), vehicle(1)], vec![], &[]).is_err());
        assert!(Problem::new(m(), vec![vehicle(1)], vec![task(1, 3)], &[]).is_err());
        assert!(Problem::new(m(), vec![vehicle(1)], vec![task(1, 1), task(1, 2)], &[]).is_err());
        assert!(Problem::new(m(), vec![vehicle(1)], vec![task(1, 1), task(2, 2)], &[(1, 3)]).is_err());
        assert!(Problem::new(m(), vec![vehicle(1)], vec![task(1, 1), task(2, 2)], &[(1, 1)]).is_err());
        let p = Problem::new(m(), vec![vehicle(1)], vec![task(1, 1), task(2, 2)], &[(1, 2)]).unwrap();
        assert_eq!(p.tasks[0].role, Role::Pickup(1));
        assert_eq!(p.tasks[1].role, Role::Delivery(0));
        assert_eq!(p.head(1), 0);
        let mut bad = task(3, 1);
        bad.ready = 200;
        assert!(Problem::new(m(), vec![vehicle(1)], vec![bad], &[]).is_err());
    }
}
