//! Routes with cached forward/backward time slack, so that inserting a task is checked in O(1).
//!
//! A route of `k` tasks has `k + 2` positions: 0 is the vehicle's start, `k + 1` its end. For every
//! position we cache the earliest service start (`start`, forward pass) and the latest service start
//! that keeps the rest of the route on time (`latest`, backward pass). Inserting `u` between positions
//! `i` and `i + 1` is feasible iff `u` can start by its due time and we still reach `i + 1` by
//! `latest[i + 1]`.
//!
//! Capacity is conservative: single tasks' demand counts for the whole route (a van loaded at the
//! depot), and a pickup's load is carried until its delivery, so a route needs
//! `static_load + max_onboard <= capacity`.

use super::model::{Problem, Role};
use std::time::Instant;

pub const NONE: u32 = u32::MAX;

#[derive(Debug)]
pub struct Route {
    pub vehicle: usize,
    pub tasks: Vec<usize>,
    loc: Vec<usize>,
    svc: Vec<i64>,
    ready: Vec<i64>,
    due: Vec<i64>,
    /// Earliest service start per position.
    pub start: Vec<i64>,
    /// Latest service start per position that keeps the remainder feasible.
    latest: Vec<i64>,
    /// Pickup-and-delivery load on board after serving each position.
    onboard: Vec<i64>,
    pub static_load: i64,
    pub max_onboard: i64,
    pub cost: i64,
    pub feasible: bool,
}

impl Route {
    pub fn new(p: &Problem, vehicle: usize, tasks: Vec<usize>) -> Self {
        let mut r = Route {
            vehicle,
            tasks,
            loc: Vec::new(),
            svc: Vec::new(),
            ready: Vec::new(),
            due: Vec::new(),
            start: Vec::new(),
            latest: Vec::new(),
            onboard: Vec::new(),
            static_load: 0,
            max_onboard: 0,
            cost: 0,
            feasible: true,
        };
        r.rebuild(p);
        r
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Recomputes every cache from `tasks` in O(k).
    pub fn rebuild(&mut self, p: &Problem) {
        let v = &p.vehicles[self.vehicle];
        let m = &p.matrix;
        let k = self.tasks.len();
        self.loc.clear();
        self.svc.clear();
        self.ready.clear();
        self.loc.push(v.start_loc);
        self.svc.push(0);
        self.ready.push(v.shift_start);
        self.due.clear();
        self.due.push(v.shift_end);
        self.onboard.clear();
        self.onboard.push(0);
        let (mut stat, mut on, mut max_on) = (0i64, 0i64, 0i64);
        for &t in &self.tasks {
            let task = &p.tasks[t];
            self.loc.push(task.loc);
            self.svc.push(task.service);
            self.ready.push(task.ready);
            self.due.push(task.due);
            match task.role {
                Role::Single => stat += task.demand,
                Role::Pickup(_) => on += task.demand,
                Role::Delivery(pk) => on -= p.tasks[pk].demand,
            }
            max_on = max_on.max(on);
            self.onboard.push(on);
        }
        self.loc.push(v.end_loc);
        self.svc.push(0);
        self.ready.push(v.shift_start);
        self.due.push(v.shift_end);
        self.onboard.push(on);
        self.static_load = stat;
        self.max_onboard = max_on;

        self.start.clear();
        self.start.push(v.shift_start);
        let mut feasible = v.shift_start <= v.shift_end;
        let mut cost = 0;
        for i in 1..k + 2 {
            let arrive = self.start[i - 1] + self.svc[i - 1] + m.t(self.loc[i - 1], self.loc[i]);
            let s = arrive.max(self.ready[i]);
            feasible &= s <= self.due[i];
            self.start.push(s);
            cost += m.c(self.loc[i - 1], self.loc[i]);
        }
        self.cost = if k == 0 { 0 } else { cost };
        self.latest.clear();
        self.latest.resize(k + 2, 0);
        self.latest[k + 1] = v.shift_end;
        for i in (0..k + 1).rev() {
            self.latest[i] =
                self.due[i].min(self.latest[i + 1] - m.t(self.loc[i], self.loc[i + 1]) - self.svc[i]);
        }
        feasible &= on == 0 && stat + max_on <= v.capacity && self.pairs_ordered(p);
        self.feasible = feasible;
    }

    /// Every delivery on this route follows its pickup on this route, and vice versa.
    fn pairs_ordered(&self, p: &Problem) -> bool {
        self.tasks
            .iter()
            .enumerate()
            .all(|(i, &t)| match p.tasks[t].role {
                Role::Single => true,
                Role::Pickup(d) => self.tasks[i + 1..].contains(&d),
                Role::Delivery(pk) => self.tasks[..i].contains(&pk),
            })
    }

    #[inline(always)]
    fn removed_arc(&self, p: &Problem, i: usize) -> i64 {
        if self.tasks.is_empty() {
            0
        } else {
            p.matrix.c(self.loc[i], self.loc[i + 1])
        }
    }
}

// Hand-written so that `clone_from` reuses the buffers: the search copies solutions every iteration.
impl Clone for Route {
    fn clone(&self) -> Self {
        Route {
            vehicle: self.vehicle,
            tasks: self.tasks.clone(),
            loc: self.loc.clone(),
            svc: self.svc.clone(),
            ready: self.ready.clone(),
            due: self.due.clone(),
            start: self.start.clone(),
            latest: self.latest.clone(),
            onboard: self.onboard.clone(),
            static_load: self.static_load,
            max_onboard: self.max_onboard,
            cost: self.cost,
            feasible: self.feasible,
        }
    }

    fn clone_from(&mut self, src: &Self) {
        self.vehicle = src.vehicle;
        self.tasks.clone_from(&src.tasks);
        self.loc.clone_from(&src.loc);
        self.svc.clone_from(&src.svc);
        self.ready.clone_from(&src.ready);
        self.due.clone_from(&src.due);
        self.start.clone_from(&src.start);
        self.latest.clone_from(&src.latest);
        self.onboard.clone_from(&src.onboard);
        self.static_load = src.static_load;
        self.max_onboard = src.max_onboard;
        self.cost = src.cost;
        self.feasible = src.feasible;
    }
}

/// Where and at what cost a request fits: `pos` is the index in `tasks` the task takes; for a pair,
/// `pos2` is the delivery's index after the pickup was inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insertion {
    pub route: usize,
    pub pos: usize,
    pub pos2: usize,
    pub delta: i64,
}

/// Skips candidate positions at random ("blinks"), which diversifies greedy insertion.
pub trait Blink {
    fn skip(&mut self) -> bool;
}

pub struct NoBlink;

impl Blink for NoBlink {
    #[inline(always)]
    fn skip(&mut self) -> bool {
        false
    }
}

#[derive(Debug)]
pub struct Solution {
    pub routes: Vec<Route>,
    /// Route of each task, `NONE` when unassigned.
    pub route_of: Vec<u32>,
    /// Unassigned requests, by head task (single or pickup).
    pub unassigned: Vec<usize>,
    pub cost: i64,
}

impl Clone for Solution {
    fn clone(&self) -> Self {
        Solution {
            routes: self.routes.clone(),
            route_of: self.route_of.clone(),
            unassigned: self.unassigned.clone(),
            cost: self.cost,
        }
    }

    fn clone_from(&mut self, src: &Self) {
        self.routes.clone_from(&src.routes);
        self.route_of.clone_from(&src.route_of);
        self.unassigned.clone_from(&src.unassigned);
        self.cost = src.cost;
    }
}

impl Solution {
    pub fn empty(p: &Problem) -> Self {
        let routes = (0..p.vehicles.len())
            .map(|v| Route::new(p, v, Vec::new()))
            .collect();
        let unassigned = (0..p.tasks.len()).filter(|&t| p.head(t) == t).collect();
        Solution {
            routes,
            route_of: vec![NONE; p.tasks.len()],
            unassigned,
            cost: 0,
        }
    }

    /// Builds from one task list per vehicle; tasks not listed are unassigned.
    pub fn from_routes(p: &Problem, lists: Vec<Vec<usize>>) -> Self {
        let mut route_of = vec![NONE; p.tasks.len()];
        let routes: Vec<Route> = lists
            .into_iter()
            .enumerate()
            .map(|(v, tasks)| {
                for &t in &tasks {
                    route_of[t] = v as u32;
                }
                Route::new(p, v, tasks)
            })
            .collect();
        let unassigned = (0..p.tasks.len())
            .filter(|&t| p.head(t) == t && route_of[t] == NONE)
            .collect();
        let cost = routes.iter().map(|r| r.cost).sum();
        Solution {
            routes,
            route_of,
            unassigned,
            cost,
        }
    }

    /// Lexicographic: fewer unserved requests first, then lower cost.
    pub fn objective(&self) -> (usize, i64) {
        (self.unassigned.len(), self.cost)
    }

    pub fn is_feasible(&self) -> bool {
        self.routes.iter().all(|r| r.feasible)
    }

    pub fn vehicles_used(&self) -> usize {
        self.routes.iter().filter(|r| !r.is_empty()).count()
    }

    fn refresh(&mut self, p: &Problem, r: usize) {
        self.cost -= self.routes[r].cost;
        self.routes[r].rebuild(p);
        self.cost += self.routes[r].cost;
    }

    /// Cheapest feasible insertion of request `head` over all routes (ties: first found).
    pub fn best_insertion<B: Blink>(&self, p: &Problem, head: usize, blink: &mut B) -> Option<Insertion> {
        let mut best: Option<Insertion> = None;
        for (ri, r) in self.routes.iter().enumerate() {
            let found = match p.tasks[head].role {
                Role::Pickup(d) => eval_pair(p, r, head, d, blink),
                _ => eval_single(p, r, head, blink),
            };
            if let Some((pos, pos2, delta)) = found {
                if best.is_none_or(|b| delta < b.delta) {
                    best = Some(Insertion {
                        route: ri,
                        pos,
                        pos2,
                        delta,
                    });
                }
            }
        }
        best
    }

    /// Applies an insertion found by `best_insertion` for `head` (and its delivery, if a pickup).
    pub fn apply(&mut self, p: &Problem, head: usize, ins: Insertion) {
        let r = ins.route;
        self.routes[r].tasks.insert(ins.pos, head);
        self.route_of[head] = r as u32;
        if let Role::Pickup(d) = p.tasks[head].role {
            self.routes[r].tasks.insert(ins.pos2, d);
            self.route_of[d] = r as u32;
        }
        self.refresh(p, r);
    }

    /// Removes the requests of `tasks` (a pickup takes its delivery along) and records them as
    /// unassigned. Tasks already unassigned are ignored.
    pub fn remove(&mut self, p: &Problem, tasks: &[usize]) {
        let mut touched: Vec<usize> = Vec::new();
        for &t in tasks {
            let h = p.head(t);
            if self.route_of[h] == NONE {
                continue;
            }
            let r = self.route_of[h] as usize;
            self.route_of[h] = NONE;
            if let Role::Pickup(d) = p.tasks[h].role {
                self.route_of[d] = NONE;
            }
            self.unassigned.push(h);
            if !touched.contains(&r) {
                touched.push(r);
            }
        }
        for r in touched {
            let route_of = &self.route_of;
            self.routes[r].tasks.retain(|&t| route_of[t] != NONE);
            self.refresh(p, r);
        }
    }
}

/// Per-route prefix data for tail exchanges, indexed by position (0 = start, k + 1 = end).
#[derive(Default)]
struct Tails {
    /// Sum of arc costs from position 0 up to position p.
    cum_cost: Vec<i64>,
    /// Static demand of tasks at positions 1..=p.
    cum_static: Vec<i64>,
    /// Max pickup load on board at positions 0..=p and p..=k+1.
    max_on_prefix: Vec<i64>,
    max_on_suffix: Vec<i64>,
    /// OR of required skills of tasks at positions p..=k.
    skills_suffix: Vec<u64>,
    /// Whether a pickup-and-delivery pair is open after position p (its load may be 0).
    open: Vec<bool>,
}

impl Tails {
    fn of(p: &Problem, r: &Route) -> Self {
        let n = r.loc.len();
        let mut t = Tails {
            cum_cost: vec![0; n],
            cum_static: vec![0; n],
            max_on_prefix: vec![0; n],
            max_on_suffix: vec![0; n],
            skills_suffix: vec![0; n + 1],
            open: vec![false; n],
        };
        let mut open = 0i32;
        for i in 1..n {
            match r.tasks.get(i - 1).map(|&x| p.tasks[x].role) {
                Some(Role::Pickup(_)) => open += 1,
                Some(Role::Delivery(_)) => open -= 1,
                _ => {}
            }
            t.open[i] = open != 0;
            t.cum_cost[i] = t.cum_cost[i - 1] + p.matrix.c(r.loc[i - 1], r.loc[i]);
            let stat = match r.tasks.get(i - 1).map(|&x| &p.tasks[x]) {
                Some(task) if task.role == Role::Single => task.demand,
                _ => 0,
            };
            t.cum_static[i] = t.cum_static[i - 1] + stat;
            t.max_on_prefix[i] = t.max_on_prefix[i - 1].max(r.onboard[i]);
        }
        for i in (0..n).rev() {
            t.max_on_suffix[i] = r.onboard[i].max(if i + 1 < n { t.max_on_suffix[i + 1] } else { 0 });
            let sk = if (1..n - 1).contains(&i) {
                p.tasks[r.tasks[i - 1]].skills
            } else {
                0
            };
            t.skills_suffix[i] = t.skills_suffix[i + 1] | sk;
        }
        t
    }
}

impl Solution {
    /// Whether exchanging tails after position `i` of route `a` and `j` of route `b` is feasible and
    /// strictly cheaper: new A = A[..=i] + B[j+1..], new B = B[..=j] + A[i+1..]. O(1) with `Tails`.
    fn tail_exchange_improves(
        &self,
        p: &Problem,
        tails: &[Tails],
        a: usize,
        b: usize,
        i: usize,
        j: usize,
    ) -> bool {
        let m = &p.matrix;
        let (ra, rb) = (&self.routes[a], &self.routes[b]);
        let (ta, tb) = (&tails[a], &tails[b]);
        let (ka, kb) = (ra.len(), rb.len());
        if (i == ka && j == kb) || (i == 0 && j == 0) || ta.open[i] || tb.open[j] {
            return false;
        }
        let (va, vb) = (&p.vehicles[ra.vehicle], &p.vehicles[rb.vehicle]);
        if va.end_loc != vb.end_loc || va.shift_end != vb.shift_end {
            return false;
        }
        let (an, bn) = (ra.loc[i], rb.loc[j]);
        let (a_next, b_next) = (ra.loc[i + 1], rb.loc[j + 1]);
        let cost_a = if i == 0 && j == kb {
            0
        } else {
            ta.cum_cost[i] + m.c(an, b_next) + tb.cum_cost[kb + 1] - tb.cum_cost[j + 1]
        };
        let cost_b = if j == 0 && i == ka {
            0
        } else {
            tb.cum_cost[j] + m.c(bn, a_next) + ta.cum_cost[ka + 1] - ta.cum_cost[i + 1]
        };
        if cost_a + cost_b >= ra.cost + rb.cost {
            return false;
        }
        let (need_a, need_b) = (tb.skills_suffix[j + 1], ta.skills_suffix[i + 1]);
        if need_a & va.skills != need_a || need_b & vb.skills != need_b {
            return false;
        }
        if ra.start[i] + ra.svc[i] + m.t(an, b_next) > rb.latest[j + 1]
            || rb.start[j] + rb.svc[j] + m.t(bn, a_next) > ra.latest[i + 1]
        {
            return false;
        }
        let stat_a = ta.cum_static[i] + tb.cum_static[kb + 1] - tb.cum_static[j];
        let stat_b = tb.cum_static[j] + ta.cum_static[ka + 1] - ta.cum_static[i];
        let on_a = ta.max_on_prefix[i].max(tb.max_on_suffix[j + 1]);
        let on_b = tb.max_on_prefix[j].max(ta.max_on_suffix[i + 1]);
        stat_a + on_a <= va.capacity && stat_b + on_b <= vb.capacity
    }

    fn apply_tail_exchange(
        &mut self,
        p: &Problem,
        tails: &mut [Tails],
        a: usize,
        b: usize,
        i: usize,
        j: usize,
    ) {
        let tail_a = self.routes[a].tasks.split_off(i);
        let tail_b = self.routes[b].tasks.split_off(j);
        self.routes[a].tasks.extend(tail_b);
        self.routes[b].tasks.extend(tail_a);
        for r in [a, b] {
            for &t in &self.routes[r].tasks {
                self.route_of[t] = r as u32;
            }
            self.refresh(p, r);
            tails[r] = Tails::of(p, &self.routes[r]);
        }
    }

    /// One pass of 2-opt* (exchange the tails of two routes), first improvement, over every pair of
    /// routes and cut: O(n²). Only vehicles that end at the same place and time, and cuts with no
    /// pickup-and-delivery pair open. Stops early at `deadline`. Returns whether the solution improved.
    pub fn two_opt_star(&mut self, p: &Problem, deadline: Option<Instant>) -> bool {
        let mut improved = false;
        let nr = self.routes.len();
        let mut tails: Vec<Tails> = self.routes.iter().map(|r| Tails::of(p, r)).collect();
        for a in 0..nr {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            for b in a + 1..nr {
                if self.routes[a].is_empty() && self.routes[b].is_empty() {
                    continue;
                }
                let (ka, kb) = (self.routes[a].len(), self.routes[b].len());
                let found = (0..=ka)
                    .flat_map(|i| (0..=kb).map(move |j| (i, j)))
                    .find(|&(i, j)| self.tail_exchange_improves(p, &tails, a, b, i, j));
                if let Some((i, j)) = found {
                    self.apply_tail_exchange(p, &mut tails, a, b, i, j);
                    improved = true;
                }
            }
        }
        improved
    }

    /// Granular 2-opt*: only the cuts that create an arc from a task to one of its `k` nearest
    /// neighbours (`adj[t]`, nearest first) in another route: O(n k) per pass, for large plans.
    pub fn two_opt_star_granular(
        &mut self,
        p: &Problem,
        adj: &[Vec<u32>],
        k: usize,
        deadline: Option<Instant>,
    ) -> bool {
        let mut improved = false;
        let mut tails: Vec<Tails> = self.routes.iter().map(|r| Tails::of(p, r)).collect();
        for (x, near) in adj.iter().enumerate().take(p.tasks.len()) {
            if x % 64 == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            for &y in near.iter().take(k + 1) {
                let (y, rx, ry) = (y as usize, self.route_of[x], self.route_of[y as usize]);
                if rx == NONE || ry == NONE || rx == ry {
                    continue;
                }
                let (a, b) = (rx as usize, ry as usize);
                // New arc x -> y: cut A after x (position i) and B before y (position j + 1).
                let Some(px) = self.routes[a].tasks.iter().position(|&t| t == x) else {
                    continue;
                };
                let Some(py) = self.routes[b].tasks.iter().position(|&t| t == y) else {
                    continue;
                };
                let (i, j) = (px + 1, py);
                if self.tail_exchange_improves(p, &tails, a, b, i, j) {
                    self.apply_tail_exchange(p, &mut tails, a, b, i, j);
                    improved = true;
                }
            }
        }
        improved
    }
}

#[inline]
fn eval_single<B: Blink>(p: &Problem, r: &Route, u: usize, blink: &mut B) -> Option<(usize, usize, i64)> {
    let task = &p.tasks[u];
    let v = &p.vehicles[r.vehicle];
    if !p.can_serve(r.vehicle, u) || r.static_load + task.demand + r.max_onboard > v.capacity {
        return None;
    }
    let m = &p.matrix;
    let mut best: Option<(usize, usize, i64)> = None;
    for i in 0..=r.tasks.len() {
        if blink.skip() {
            continue;
        }
        let (a, b) = (r.loc[i], r.loc[i + 1]);
        let s = (r.start[i] + r.svc[i] + m.t(a, task.loc)).max(task.ready);
        if s > task.due || s + task.service + m.t(task.loc, b) > r.latest[i + 1] {
            continue;
        }
        let delta = m.c(a, task.loc) + m.c(task.loc, b) - r.removed_arc(p, i);
        if best.is_none_or(|x| delta < x.2) {
            best = Some((i, 0, delta));
        }
    }
    best
}

#[inline]
fn eval_pair<B: Blink>(
    p: &Problem,
    r: &Route,
    pu: usize,
    du: usize,
    blink: &mut B,
) -> Option<(usize, usize, i64)> {
    let (pt, dt) = (&p.tasks[pu], &p.tasks[du]);
    let v = &p.vehicles[r.vehicle];
    if !p.can_serve(r.vehicle, pu) || !p.can_serve(r.vehicle, du) {
        return None;
    }
    let cap_left = v.capacity - r.static_load - pt.demand;
    let m = &p.matrix;
    let k = r.tasks.len();
    let mut best: Option<(usize, usize, i64)> = None;
    for i in 0..=k {
        if blink.skip() {
            continue;
        }
        let (a, b) = (r.loc[i], r.loc[i + 1]);
        let sp = (r.start[i] + r.svc[i] + m.t(a, pt.loc)).max(pt.ready);
        if sp > pt.due || r.onboard[i] > cap_left {
            continue;
        }
        // Delivery right after the pickup.
        let sd = (sp + pt.service + m.t(pt.loc, dt.loc)).max(dt.ready);
        if sd <= dt.due && sd + dt.service + m.t(dt.loc, b) <= r.latest[i + 1] {
            let delta = m.c(a, pt.loc) + m.c(pt.loc, dt.loc) + m.c(dt.loc, b) - r.removed_arc(p, i);
            if best.is_none_or(|x| delta < x.2) {
                best = Some((i, i + 1, delta));
            }
        }
        if i == k {
            continue;
        }
        let base = m.c(a, pt.loc) + m.c(pt.loc, b) - m.c(a, b);
        let mut cur = (sp + pt.service + m.t(pt.loc, b)).max(r.ready[i + 1]);
        let mut max_load = r.onboard[i];
        for j in i + 1..=k {
            // `cur` is the service start at position j with the pickup inserted.
            if cur > r.latest[j] {
                break;
            }
            max_load = max_load.max(r.onboard[j]);
            if max_load > cap_left {
                break;
            }
            let (x, y) = (r.loc[j], r.loc[j + 1]);
            let sd = (cur + r.svc[j] + m.t(x, dt.loc)).max(dt.ready);
            if sd <= dt.due && sd + dt.service + m.t(dt.loc, y) <= r.latest[j + 1] {
                let delta = base + m.c(x, dt.loc) + m.c(dt.loc, y) - m.c(x, y);
                if best.is_none_or(|b| delta < b.2) {
                    best = Some((i, j + 1, delta));
                }
            }
            cur = (cur + r.svc[j] + m.t(x, y)).max(r.ready[j + 1]);
        }
    }
    best
}
