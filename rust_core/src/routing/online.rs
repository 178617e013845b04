//! A live plan that takes one task at a time: cheapest feasible insertion, removal, re-optimisation.

use super::model::{link_pair, validate_task, Matrix, Problem, Role, Task, Vehicle};
use super::search::{solve, Params, Stats};
use super::solution::{NoBlink, Solution, NONE};
use crate::errors::{CoreError, CoreResult};
use std::collections::HashMap;

/// Where a task landed: the vehicle, its index in that vehicle's route, the cost added by the insertion
/// (for a pair, the whole pair's cost on both entries) and the planned service start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    pub task_id: i64,
    pub vehicle_id: i64,
    pub position: usize,
    pub added_cost: i64,
    pub eta: i64,
}

#[derive(Debug, Clone)]
pub struct Planner {
    pub problem: Problem,
    pub sol: Solution,
    index: HashMap<i64, usize>,
    /// Bumped on every change, so a re-optimisation computed on a snapshot is not applied over edits.
    pub version: u64,
}

impl Planner {
    pub fn new(matrix: Matrix, vehicles: Vec<Vehicle>) -> CoreResult<Self> {
        let problem = Problem::new(matrix, vehicles, Vec::new(), &[])?;
        let sol = Solution::empty(&problem);
        Ok(Planner {
            problem,
            sol,
            index: HashMap::new(),
            version: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.problem.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.problem.tasks.is_empty()
    }

    fn vehicle_index(&self, vehicle_id: i64) -> CoreResult<usize> {
        self.problem
            .vehicles
            .iter()
            .position(|v| v.id == vehicle_id)
            .ok_or_else(|| CoreError::NotFound {
                kind: "vehicle",
                id: vehicle_id.to_string(),
            })
    }

    fn add_task(&mut self, mut task: Task) -> CoreResult<usize> {
        task.role = Role::Single;
        validate_task(&task, self.problem.matrix.n)?;
        if self.index.contains_key(&task.id) {
            return Err(CoreError::Conflict(format!(
                "task {} is already planned",
                task.id
            )));
        }
        let i = self.problem.tasks.len();
        self.index.insert(task.id, i);
        self.problem.tasks.push(task);
        self.sol.route_of.push(NONE);
        Ok(i)
    }

    /// Drops the most recently added tasks (which must be unassigned), undoing `add_task`.
    fn truncate_tasks(&mut self, keep: usize) {
        for t in self.problem.tasks.drain(keep..) {
            self.index.remove(&t.id);
        }
        self.sol.route_of.truncate(keep);
        self.sol.unassigned.retain(|&h| h < keep);
    }

    fn placed(&self, t: usize, added_cost: i64) -> Placed {
        let r = self.sol.route_of[t] as usize;
        let route = &self.sol.routes[r];
        let position = route.tasks.iter().position(|&x| x == t).unwrap_or(0);
        Placed {
            task_id: self.problem.tasks[t].id,
            vehicle_id: self.problem.vehicles[route.vehicle].id,
            position,
            added_cost,
            eta: route.start[position + 1],
        }
    }

    fn place(&mut self, head: usize) -> CoreResult<i64> {
        match self.sol.best_insertion(&self.problem, head, &mut NoBlink) {
            Some(ins) => {
                self.sol.apply(&self.problem, head, ins);
                self.version += 1;
                Ok(ins.delta)
            }
            None => Err(CoreError::Infeasible(format!(
                "no vehicle can serve task {} within its window, capacity and skills",
                self.problem.tasks[head].id
            ))),
        }
    }

    /// Inserts one task at its cheapest feasible position; on failure the plan is unchanged.
    pub fn insert(&mut self, task: Task) -> CoreResult<Placed> {
        let keep = self.problem.tasks.len();
        let t = self.add_task(task)?;
        match self.place(t) {
            Ok(delta) => Ok(self.placed(t, delta)),
            Err(e) => {
                self.truncate_tasks(keep);
                Err(e)
            }
        }
    }

    /// Inserts a pickup and its delivery on the same vehicle, pickup first.
    pub fn insert_pair(&mut self, pickup: Task, delivery: Task) -> CoreResult<(Placed, Placed)> {
        if pickup.id == delivery.id {
            return Err(CoreError::invalid("delivery", "must differ from the pickup"));
        }
        let keep = self.problem.tasks.len();
        let result = (|| {
            let p = self.add_task(pickup)?;
            let d = self.add_task(delivery)?;
            link_pair(&mut self.problem.tasks, p, d)?;
            let delta = self.place(p)?;
            Ok((self.placed(p, delta), self.placed(d, delta)))
        })();
        if result.is_err() {
            self.truncate_tasks(keep);
        }
        result
    }

    /// Replaces a vehicle's route with `tasks` in this order (e.g. the plan already dispatched).
    /// `pairs` links (pickup id, delivery id) among them. Fails without change if infeasible.
    pub fn set_route(&mut self, vehicle_id: i64, tasks: Vec<Task>, pairs: &[(i64, i64)]) -> CoreResult<()> {
        let v = self.vehicle_index(vehicle_id)?;
        let backup = self.clone();
        let result = (|| {
            let old: Vec<usize> = self.sol.routes[v].tasks.clone();
            let old_ids: Vec<i64> = old.iter().map(|&t| self.problem.tasks[t].id).collect();
            for id in old_ids {
                self.remove(id)?;
            }
            let mut added = Vec::with_capacity(tasks.len());
            for t in tasks {
                added.push(self.add_task(t)?);
            }
            for &(p, d) in pairs {
                let (pi, di) = match (self.index.get(&p), self.index.get(&d)) {
                    (Some(&a), Some(&b)) if added.contains(&a) && added.contains(&b) && a != b => (a, b),
                    _ => {
                        return Err(CoreError::invalid(
                            "pairs",
                            format!("pair ({p}, {d}) must name two of the tasks"),
                        ))
                    }
                };
                if self.problem.tasks[pi].role != Role::Single || self.problem.tasks[di].role != Role::Single
                {
                    return Err(CoreError::invalid(
                        "pairs",
                        format!("task in pair ({p}, {d}) is already paired"),
                    ));
                }
                link_pair(&mut self.problem.tasks, pi, di)?;
            }
            for &t in &added {
                self.sol.route_of[t] = v as u32;
            }
            self.sol.routes[v].tasks = added;
            let old_cost = self.sol.routes[v].cost;
            self.sol.routes[v].rebuild(&self.problem);
            self.sol.cost += self.sol.routes[v].cost - old_cost;
            if !self.sol.routes[v].feasible {
                return Err(CoreError::Infeasible(format!(
                    "route for vehicle {vehicle_id} breaks a time window, capacity, skill or pair order"
                )));
            }
            if let Some(&t) = self.sol.routes[v]
                .tasks
                .iter()
                .find(|&&t| !self.problem.can_serve(v, t))
            {
                return Err(CoreError::Infeasible(format!(
                    "vehicle {vehicle_id} lacks the skills of task {}",
                    self.problem.tasks[t].id
                )));
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.version += 1;
                Ok(())
            }
            Err(e) => {
                *self = backup;
                Err(e)
            }
        }
    }

    /// Removes a task (and its partner, if paired) from the plan.
    pub fn remove(&mut self, task_id: i64) -> CoreResult<()> {
        let &t = self.index.get(&task_id).ok_or_else(|| CoreError::NotFound {
            kind: "task",
            id: task_id.to_string(),
        })?;
        self.sol.remove(&self.problem, &[t]);
        self.sol.unassigned.clear();
        let mut gone = vec![t];
        match self.problem.tasks[t].role {
            Role::Pickup(o) | Role::Delivery(o) => gone.push(o),
            Role::Single => {}
        }
        gone.sort_unstable();
        for &g in gone.iter().rev() {
            self.swap_remove(g);
        }
        self.version += 1;
        Ok(())
    }

    /// Deletes unassigned task `g`, moving the last task into its slot and fixing every reference.
    fn swap_remove(&mut self, g: usize) {
        let last = self.problem.tasks.len() - 1;
        let removed = self.problem.tasks.swap_remove(g);
        self.index.remove(&removed.id);
        self.sol.route_of.swap_remove(g);
        if g == last {
            return;
        }
        let moved = &self.problem.tasks[g];
        self.index.insert(moved.id, g);
        match moved.role {
            Role::Pickup(d) => self.problem.tasks[d].role = Role::Delivery(g),
            Role::Delivery(p) => self.problem.tasks[p].role = Role::Pickup(g),
            Role::Single => {}
        }
        let r = self.sol.route_of[g];
        if r != NONE {
            for x in self.sol.routes[r as usize].tasks.iter_mut() {
                if *x == last {
                    *x = g;
                }
            }
        }
    }

    /// Runs the batch search from the current plan; applies the result if it is cheaper.
    pub fn reoptimize(&mut self, params: &Params) -> (bool, Stats) {
        let (best, stats) = solve(&self.problem, Some(self.sol.clone()), params);
        let better = best.objective() < self.sol.objective();
        if better {
            self.sol = best;
            self.version += 1;
        }
        (better, stats)
    }

    pub fn task_ids(&self, route: usize) -> Vec<i64> {
        self.sol.routes[route]
            .tasks
            .iter()
            .map(|&t| self.problem.tasks[t].id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Locations on a line: 0 is the depot, travel time = |a - b| seconds.
    fn line_planner(n: usize, vehicles: usize) -> Planner {
        let mut m = Vec::new();
        for a in 0..n {
            for b in 0..n {
                m.push((a as f64 - b as f64).abs());
            }
        }
        let vs = (0..vehicles)
            .map(|k| Vehicle {
                id: 100 + k as i64,
                start_loc: 0,
                end_loc: 0,
                shift_start: 0,
                shift_end: 1_000_000,
                capacity: 3,
                skills: 0,
            })
            .collect();
        Planner::new(Matrix::from_f64(&m, None).unwrap(), vs).unwrap()
    }

    fn task(id: i64, loc: usize) -> Task {
        Task {
            id,
            loc,
            ready: 0,
            due: 1_000_000,
            service: 0,
            demand: 1,
            skills: 0,
            role: Role::Single,
        }
    }

    #[test]
    fn inserts_cheapest_and_removes() {
        let mut pl = line_planner(10, 2);
        let a = pl.insert(task(1, 5)).unwrap();
        assert_eq!(
            (a.vehicle_id, a.position, a.added_cost, a.eta),
            (100, 0, 10_000, 5_000)
        );
        let b = pl.insert(task(2, 3)).unwrap();
        assert_eq!((b.vehicle_id, b.position, b.added_cost), (100, 0, 0));
        assert!(matches!(pl.insert(task(2, 4)), Err(CoreError::Conflict(_))));
        assert!(matches!(
            pl.insert(task(3, 40)),
            Err(CoreError::InvalidInput { .. })
        ));
        pl.remove(2).unwrap();
        assert!(matches!(pl.remove(2), Err(CoreError::NotFound { .. })));
        assert_eq!(pl.task_ids(0), vec![1]);
        assert_eq!(pl.sol.cost, 10_000);
    }

    #[test]
    fn infeasible_insert_leaves_plan_unchanged() {
        let mut pl = line_planner(10, 1);
        let mut late = task(7, 9);
        late.due = 1_000; // 1 s, but the trip takes 9 s
        assert!(matches!(pl.insert(late), Err(CoreError::Infeasible(_))));
        assert!(pl.is_empty());
        for id in 0..3 {
            pl.insert(task(id, 2)).unwrap();
        }
        assert!(matches!(pl.insert(task(9, 2)), Err(CoreError::Infeasible(_)))); // capacity 3
        assert_eq!(pl.len(), 3);
    }

    #[test]
    fn pairs_stay_together_and_ordered() {
        let mut pl = line_planner(10, 2);
        pl.insert(task(1, 4)).unwrap();
        let (p, d) = pl.insert_pair(task(10, 8), task(11, 2)).unwrap();
        assert_eq!(p.vehicle_id, d.vehicle_id);
        assert!(p.position < d.position);
        assert!(p.eta <= d.eta);
        pl.remove(11).unwrap();
        assert_eq!(pl.len(), 1);
        assert_eq!(pl.task_ids(0), vec![1]);
    }

    #[test]
    fn set_route_checks_feasibility_and_reoptimize_keeps_everything() {
        let mut pl = line_planner(10, 2);
        let mut t = task(1, 9);
        t.due = 1_000;
        assert!(matches!(
            pl.set_route(100, vec![t], &[]),
            Err(CoreError::Infeasible(_))
        ));
        assert!(pl.is_empty());
        assert!(matches!(
            pl.set_route(5, vec![], &[]),
            Err(CoreError::NotFound { .. })
        ));
        pl.set_route(100, vec![task(1, 9), task(2, 1), task(3, 8)], &[])
            .unwrap();
        pl.set_route(101, vec![task(4, 2), task(5, 7)], &[(4, 5)])
            .unwrap();
        let before = pl.sol.cost;
        let (applied, _) = pl.reoptimize(&Params::new(1_000, 3, Some(200)));
        assert!(applied && pl.sol.cost < before);
        assert_eq!(pl.len(), 5);
        assert!(pl.sol.unassigned.is_empty() && pl.sol.is_feasible());
        let r4 = pl.sol.route_of[pl.index[&4]];
        assert_eq!(r4, pl.sol.route_of[pl.index[&5]]);
    }
}
