//! Ruin-and-recreate search: SISR (Christiaens & Vanden Berghe, 2020) string removals, greedy
//! insertion with blinks, simulated-annealing acceptance, and a 2-opt* descent on every new best.
//!
//! Deterministic for a seed when bounded by `max_iterations`; a pure time budget stops after however
//! many iterations fit, which depends on the machine.

use super::model::Problem;
use super::solution::{Blink, NoBlink, Solution, NONE};
use std::time::{Duration, Instant};

/// Small, fast, seedable PRNG (xorshift64* seeded through splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    #[inline(always)]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    #[inline(always)]
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n); n must be > 0.
    #[inline(always)]
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// Skips each candidate position independently with probability `p`, drawing the gaps between skips
/// from the geometric distribution: one random number per skip instead of one per position.
struct RandomBlink<'a> {
    rng: &'a mut Rng,
    ln_keep: f64,
    left: u64,
}

impl<'a> RandomBlink<'a> {
    fn new(rng: &'a mut Rng, p: f64) -> Self {
        let ln_keep = (1.0 - p.clamp(0.0, 0.999_999)).ln();
        let mut b = RandomBlink {
            rng,
            ln_keep,
            left: 0,
        };
        b.left = b.gap();
        b
    }

    fn gap(&mut self) -> u64 {
        if self.ln_keep == 0.0 {
            return u64::MAX;
        }
        let u = self.rng.f64().max(1e-300);
        (u.ln() / self.ln_keep).min(1e18) as u64
    }
}

impl Blink for RandomBlink<'_> {
    #[inline(always)]
    fn skip(&mut self) -> bool {
        if self.left == 0 {
            self.left = self.gap();
            true
        } else {
            self.left -= 1;
            false
        }
    }
}

#[derive(Debug, Clone)]
pub struct Params {
    /// The budget runs from here (when the request arrived), so parsing and setup count against it.
    pub started: Instant,
    pub time_limit: Duration,
    pub max_iterations: Option<u64>,
    pub seed: u64,
    /// Mean number of customers removed per ruin.
    pub c_bar: f64,
    /// Longest removed string.
    pub l_max: f64,
    /// Probability of skipping a candidate position during insertion.
    pub blink: f64,
    /// Start and end temperature, as fractions of the initial solution's mean arc cost.
    pub t0: f64,
    pub tf: f64,
    /// Run the 2-opt* descent on every new best solution.
    pub local_search: bool,
}

impl Params {
    pub fn new(time_limit_ms: u64, seed: u64, max_iterations: Option<u64>) -> Self {
        Params {
            started: Instant::now(),
            time_limit: Duration::from_millis(time_limit_ms),
            max_iterations,
            seed,
            c_bar: 10.0,
            l_max: 10.0,
            blink: 0.01,
            t0: 4.0,
            tf: 0.01,
            local_search: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    pub iterations: u64,
    pub elapsed_ms: f64,
}

/// Greedy insertion of every unassigned request, in a fixed order, without blinks.
pub fn construct(p: &Problem, sol: &mut Solution) {
    let mut heads = std::mem::take(&mut sol.unassigned);
    let depot = p.vehicles[0].start_loc;
    // Far-from-depot first, then by tighter due: a classic seed order for time windows.
    heads.sort_by_key(|&t| {
        (
            std::cmp::Reverse(p.matrix.c(depot, p.tasks[t].loc)),
            p.tasks[t].due,
            t,
        )
    });
    for h in heads {
        match sol.best_insertion(p, h, &mut NoBlink) {
            Some(ins) => sol.apply(p, h, ins),
            None => sol.unassigned.push(h),
        }
    }
}

struct Sisr<'a> {
    p: &'a Problem,
    params: &'a Params,
    rng: Rng,
    adj: Vec<Vec<u32>>,
    depot_cost: Vec<i64>,
}

impl<'a> Sisr<'a> {
    fn new(p: &'a Problem, params: &'a Params) -> Self {
        let adj = neighbours(p, 128);
        let depot = p.vehicles[0].start_loc;
        let depot_cost = p.tasks.iter().map(|t| p.matrix.c(depot, t.loc)).collect();
        Sisr {
            p,
            params,
            rng: Rng::new(params.seed),
            adj,
            depot_cost,
        }
    }

    fn ruin(&mut self, sol: &mut Solution) {
        let p = self.p;
        let n = p.tasks.len();
        let assigned = sol.route_of.iter().filter(|&&r| r != NONE).count();
        let used = sol.vehicles_used();
        if assigned == 0 || used == 0 {
            return;
        }
        let ls_max = self.params.l_max.min(assigned as f64 / used as f64);
        let ks_max = 4.0 * self.params.c_bar / (1.0 + ls_max) - 1.0;
        let ks = ((1.0 + self.rng.f64() * ks_max) as usize).max(1);
        let mut seed = self.rng.below(n);
        while sol.route_of[seed] == NONE {
            seed = (seed + 1) % n;
        }
        let mut ruined: Vec<u32> = Vec::with_capacity(ks);
        let mut removed: Vec<usize> = Vec::with_capacity(32);
        for idx in 0..self.adj[seed].len() {
            if ruined.len() >= ks {
                break;
            }
            let c = self.adj[seed][idx] as usize;
            let r = sol.route_of[c];
            if r == NONE || ruined.contains(&r) {
                continue;
            }
            ruined.push(r);
            let tasks = &sol.routes[r as usize].tasks;
            let card = tasks.len();
            let l_max_t = (card as f64).min(ls_max);
            let l = ((1.0 + self.rng.f64() * l_max_t) as usize).clamp(1, card);
            let at = tasks.iter().position(|&t| t == c).unwrap_or(0);
            removed.clear();
            if l == card || self.rng.f64() < 0.5 {
                let s = self.window_start(at, l, card);
                removed.extend_from_slice(&tasks[s..s + l]);
            } else {
                let mut m = 1;
                while l + m < card && self.rng.f64() < 0.5 {
                    m += 1;
                }
                let w = l + m;
                let s = self.window_start(at, w, card);
                let keep_at = s + self.rng.below(l + 1);
                removed.extend(
                    tasks[s..s + w]
                        .iter()
                        .enumerate()
                        .filter(|&(o, _)| s + o < keep_at || s + o >= keep_at + m)
                        .map(|(_, &t)| t),
                );
            }
            sol.remove(p, &removed);
        }
    }

    /// A uniformly random start of a window of `w` positions inside `card` that covers `at`.
    fn window_start(&mut self, at: usize, w: usize, card: usize) -> usize {
        let lo = (at + 1).saturating_sub(w);
        let hi = at.min(card - w);
        lo + self.rng.below(hi - lo + 1)
    }

    fn recreate(&mut self, sol: &mut Solution) {
        let p = self.p;
        let mut heads = std::mem::take(&mut sol.unassigned);
        // Shuffle first so that ties in the sort keys below are broken at random.
        for i in (1..heads.len()).rev() {
            let j = self.rng.below(i + 1);
            heads.swap(i, j);
        }
        match self.rng.below(13) {
            0..=3 => {}
            4..=7 => heads.sort_by_key(|&t| std::cmp::Reverse(p.tasks[t].demand)),
            8..=9 => heads.sort_by_key(|&t| std::cmp::Reverse(self.depot_cost[t])),
            10 => heads.sort_by_key(|&t| self.depot_cost[t]),
            _ => heads.sort_by_key(|&t| p.tasks[t].due - p.tasks[t].ready),
        }
        let mut blink = RandomBlink::new(&mut self.rng, self.params.blink);
        for h in heads {
            let found = sol.best_insertion(p, h, &mut blink);
            match found {
                Some(ins) => sol.apply(p, h, ins),
                None => sol.unassigned.push(h),
            }
        }
    }
}

/// From this many tasks on, the descent uses granular 2-opt* (nearest neighbours only).
pub const GRANULAR_FROM: usize = 256;
/// Neighbours per task considered by granular 2-opt*.
pub const GRANULAR_K: usize = 16;
/// Passes per descent on large plans: later passes find little and cost as much as the first.
pub const GRANULAR_PASSES: usize = 2;

/// Local descent on a solution: 2-opt* passes until none improves, or the deadline. Large plans with
/// neighbour lists use the granular variant. (A relocate descent was tried here too and measured no
/// better: the ruin-and-recreate already relocates.)
pub fn descend(p: &Problem, sol: &mut Solution, adj: Option<&[Vec<u32>]>, deadline: Option<Instant>) {
    let passes = if adj.is_some() && p.tasks.len() >= GRANULAR_FROM {
        GRANULAR_PASSES
    } else {
        50
    };
    for _ in 0..passes {
        let improved = match adj {
            Some(adj) if p.tasks.len() >= GRANULAR_FROM => {
                sol.two_opt_star_granular(p, adj, GRANULAR_K, deadline)
            }
            _ => sol.two_opt_star(p, deadline),
        };
        if !improved || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
}

/// Task indices sorted by cost from each task's location, itself first, truncated to `keep`.
pub fn neighbours(p: &Problem, keep: usize) -> Vec<Vec<u32>> {
    let n = p.tasks.len();
    let keep = keep.min(n);
    (0..n)
        .map(|a| {
            let la = p.tasks[a].loc;
            let mut v: Vec<u32> = (0..n as u32).collect();
            let key = |&b: &u32| {
                (
                    if b as usize == a {
                        -1
                    } else {
                        p.matrix.c(la, p.tasks[b as usize].loc)
                    },
                    b,
                )
            };
            if keep < n && keep > 0 {
                v.select_nth_unstable_by_key(keep - 1, key);
                v.truncate(keep);
            }
            v.sort_unstable_by_key(key);
            v
        })
        .collect()
}

/// Improves `initial` (or a greedy construction) within the budget and returns the best found.
pub fn solve(p: &Problem, initial: Option<Solution>, params: &Params) -> (Solution, Stats) {
    let started = params.started;
    // A budget too large for the clock still ends, a year on.
    let deadline = started
        .checked_add(params.time_limit)
        .unwrap_or_else(|| started + Duration::from_secs(365 * 86_400));
    let mut cur = initial.unwrap_or_else(|| Solution::empty(p));
    construct(p, &mut cur);
    let mut best = cur.clone();
    let n = p.tasks.len();
    let mut iterations = 0u64;
    if n > 0 && params.max_iterations != Some(0) {
        let mut sisr = Sisr::new(p, params);
        let arcs = (n - cur.unassigned.len() + cur.vehicles_used()).max(1) as f64;
        let mean_arc = (cur.cost as f64 / arcs).max(1.0);
        let (t0, tf) = (params.t0 * mean_arc, params.tf * mean_arc);
        let limit = params.time_limit.as_secs_f64().max(1e-9);
        let mut next = cur.clone();
        loop {
            let frac = match params.max_iterations {
                Some(max) => {
                    if iterations >= max {
                        break;
                    }
                    iterations as f64 / max as f64
                }
                None => 0.0,
            };
            let elapsed = started.elapsed().as_secs_f64();
            if elapsed >= limit {
                break;
            }
            let frac = if params.max_iterations.is_some() {
                frac
            } else {
                elapsed / limit
            };
            let temperature = t0 * (tf / t0).powf(frac);
            next.clone_from(&cur);
            sisr.ruin(&mut next);
            sisr.recreate(&mut next);
            iterations += 1;
            let accept = match next.unassigned.len().cmp(&cur.unassigned.len()) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Greater => false,
                std::cmp::Ordering::Equal => {
                    let threshold = cur.cost as f64 - temperature * sisr.rng.f64().max(1e-300).ln();
                    (next.cost as f64) < threshold
                }
            };
            if accept {
                if next.objective() < best.objective() {
                    if params.local_search {
                        descend(p, &mut next, Some(&sisr.adj), Some(deadline));
                    }
                    best.clone_from(&next);
                }
                std::mem::swap(&mut cur, &mut next);
            }
        }
    }
    let stats = Stats {
        iterations,
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    };
    (best, stats)
}

#[cfg(test)]
pub mod tests {
    use super::Rng;
    use super::*;
    use crate::routing::model::{Matrix, Role, Task, Vehicle};
    use proptest::prelude::*;

    /// Independent re-check of a solution: recomputes schedules, loads and costs from scratch.
    pub fn verify(p: &Problem, sol: &Solution) -> Result<(), String> {
        let mut seen = vec![0u32; p.tasks.len()];
        let mut total = 0i64;
        if sol.routes.len() != p.vehicles.len() {
            return Err("one route per vehicle".into());
        }
        for (ri, r) in sol.routes.iter().enumerate() {
            let v = &p.vehicles[r.vehicle];
            if r.vehicle != ri {
                return Err(format!("route {ri} holds vehicle {}", r.vehicle));
            }
            let (mut time, mut loc, mut stat, mut on, mut max_on, mut cost) =
                (v.shift_start, v.start_loc, 0, 0, 0, 0);
            for (i, &t) in r.tasks.iter().enumerate() {
                let task = &p.tasks[t];
                seen[t] += 1;
                if sol.route_of[t] != ri as u32 {
                    return Err(format!(
                        "route_of[{t}] = {} but task is on route {ri}",
                        sol.route_of[t]
                    ));
                }
                if !p.can_serve(ri, t) {
                    return Err(format!("vehicle {ri} lacks skills for task {t}"));
                }
                time = (time + p.matrix.t(loc, task.loc)).max(task.ready);
                if time > task.due {
                    return Err(format!("task {t} starts at {time} after due {}", task.due));
                }
                if time != r.start[i + 1] {
                    return Err(format!(
                        "cached start of task {t} is {} not {time}",
                        r.start[i + 1]
                    ));
                }
                time += task.service;
                cost += p.matrix.c(loc, task.loc);
                loc = task.loc;
                match task.role {
                    Role::Single => stat += task.demand,
                    Role::Pickup(d) => {
                        on += task.demand;
                        if !r.tasks[i + 1..].contains(&d) {
                            return Err(format!("pickup {t} without its delivery {d} later on route {ri}"));
                        }
                    }
                    Role::Delivery(pk) => on -= p.tasks[pk].demand,
                }
                max_on = max_on.max(on);
            }
            time += p.matrix.t(loc, v.end_loc);
            cost += p.matrix.c(loc, v.end_loc);
            if time > v.shift_end {
                return Err(format!(
                    "route {ri} ends at {time} after shift end {}",
                    v.shift_end
                ));
            }
            if stat + max_on > v.capacity {
                return Err(format!(
                    "route {ri} load {} > capacity {}",
                    stat + max_on,
                    v.capacity
                ));
            }
            let cost = if r.tasks.is_empty() { 0 } else { cost };
            if cost != r.cost {
                return Err(format!("route {ri} cost {} != recomputed {cost}", r.cost));
            }
            total += cost;
        }
        if total != sol.cost {
            return Err(format!("solution cost {} != recomputed {total}", sol.cost));
        }
        for &h in &sol.unassigned {
            seen[h] += 1;
            if let Role::Pickup(d) = p.tasks[h].role {
                seen[d] += 1;
            }
            if p.head(h) != h {
                return Err(format!("unassigned list holds delivery {h}"));
            }
        }
        if let Some(t) = seen.iter().position(|&c| c != 1) {
            return Err(format!(
                "task {t} appears {} times (routes + unassigned)",
                seen[t]
            ));
        }
        Ok(())
    }

    pub fn random_problem(seed: u64, n: usize, vehicles: usize, pairs: usize) -> Problem {
        let mut rng = Rng::new(seed);
        let pts: Vec<(f64, f64)> = (0..=n).map(|_| (rng.f64() * 100.0, rng.f64() * 100.0)).collect();
        let mut m = Vec::new();
        for a in &pts {
            for b in &pts {
                m.push((a.0 - b.0).hypot(a.1 - b.1));
            }
        }
        let matrix = Matrix::from_f64(&m, None).unwrap();
        let vs = (0..vehicles)
            .map(|k| Vehicle {
                id: k as i64,
                start_loc: 0,
                end_loc: if k % 4 == 3 { 1 } else { 0 },
                shift_start: (rng.below(50) * 1000) as i64,
                shift_end: if k % 2 == 0 {
                    1_000_000
                } else {
                    ((300 + rng.below(700)) * 1000) as i64
                },
                capacity: 5 + rng.below(30) as i64,
                skills: rng.below(4) as u64,
            })
            .collect();
        let n_pairs = pairs.min(n / 2);
        let tasks = (0..n)
            .map(|i| {
                let ready = rng.below(600) as i64 * 1000;
                Task {
                    id: 1000 + i as i64,
                    loc: 1 + i,
                    ready,
                    due: ready + (10 + rng.below(300)) as i64 * 1000,
                    service: rng.below(10) as i64 * 1000,
                    demand: if i < 2 * n_pairs && i % 2 == 1 {
                        0
                    } else {
                        rng.below(6) as i64
                    },
                    skills: if rng.below(4) == 0 {
                        1 + rng.below(2) as u64
                    } else {
                        0
                    },
                    role: Role::Single,
                }
            })
            .collect();
        let pairs: Vec<(i64, i64)> = (0..n_pairs)
            .map(|k| (1000 + 2 * k as i64, 1001 + 2 * k as i64))
            .collect();
        Problem::new(matrix, vs, tasks, &pairs).unwrap()
    }

    fn assignment(sol: &Solution) -> Vec<Vec<usize>> {
        sol.routes.iter().map(|r| r.tasks.clone()).collect()
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let x = a.f64();
            assert!((0.0..1.0).contains(&x));
            assert_eq!(x, b.f64());
            assert!(a.below(5) < 5 && b.below(5) < 5);
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn blinks_skip_at_the_requested_rate() {
        let mut rng = Rng::new(3);
        let mut b = RandomBlink::new(&mut rng, 0.1);
        let skipped = (0..100_000).filter(|_| b.skip()).count();
        assert!((9_000..11_000).contains(&skipped), "{skipped}");
        let mut rng = Rng::new(3);
        let mut never = RandomBlink::new(&mut rng, 0.0);
        assert!(!(0..1000).any(|_| never.skip()));
    }

    #[test]
    fn search_improves_on_construction() {
        let p = random_problem(5, 40, 4, 0);
        let mut start = Solution::empty(&p);
        construct(&p, &mut start);
        let (best, stats) = solve(&p, None, &Params::new(10_000, 1, Some(500)));
        verify(&p, &best).unwrap();
        assert_eq!(stats.iterations, 500);
        assert!(best.objective() <= start.objective());
    }

    #[test]
    fn empty_problem_and_zero_budget() {
        let p = random_problem(1, 0, 2, 0);
        let (sol, _) = solve(&p, None, &Params::new(50, 1, None));
        assert_eq!((sol.cost, sol.unassigned.len()), (0, 0));
        let p = random_problem(1, 10, 2, 2);
        let (sol, stats) = solve(&p, None, &Params::new(0, 1, None));
        verify(&p, &sol).unwrap();
        assert_eq!(stats.iterations, 0);
    }

    #[test]
    fn descent_finds_improvements() {
        let improved = (0..40u64)
            .filter(|&seed| {
                let p = random_problem(seed, 30, 6, 2);
                let mut sol = Solution::empty(&p);
                construct(&p, &mut sol);
                let before = sol.objective();
                descend(&p, &mut sol, None, None);
                verify(&p, &sol).unwrap();
                sol.objective() < before
            })
            .count();
        assert!(
            improved >= 5,
            "descent improved only {improved} of 40 constructions"
        );
    }

    #[test]
    fn two_opt_star_alone_finds_improvements() {
        let improved = (0..40u64)
            .filter(|&seed| {
                let p = random_problem(seed, 30, 6, 2);
                let mut sol = Solution::empty(&p);
                construct(&p, &mut sol);
                let improved = sol.two_opt_star(&p, None);
                verify(&p, &sol).unwrap();
                improved
            })
            .count();
        assert!(
            improved >= 3,
            "2-opt* improved only {improved} of 40 constructions"
        );
    }

    #[test]
    fn granular_two_opt_star_is_feasible_and_improves_large_plans() {
        let p = random_problem(11, 300, 12, 10);
        let adj = neighbours(&p, 128);
        assert_eq!(adj[5][0], 5);
        assert!(adj[5]
            .windows(2)
            .all(|w| p.matrix.c(p.tasks[5].loc, p.tasks[w[0] as usize].loc)
                <= p.matrix.c(p.tasks[5].loc, p.tasks[w[1] as usize].loc)
                || w[0] == 5));
        let mut sol = Solution::empty(&p);
        construct(&p, &mut sol);
        let before = sol.objective();
        let mut improved = 0;
        while sol.two_opt_star_granular(&p, &adj, GRANULAR_K, None) {
            improved += 1;
            verify(&p, &sol).unwrap();
        }
        assert!(improved > 0 && sol.objective() < before);
        let (best, _) = solve(&p, None, &Params::new(10_000, 2, Some(30)));
        verify(&p, &best).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn solutions_respect_every_constraint(
            seed in 0u64..10_000, n in 1usize..30, vehicles in 1usize..5, pairs in 0usize..6
        ) {
            let p = random_problem(seed, n, vehicles, pairs);
            let (sol, _) = solve(&p, None, &Params::new(10_000, seed, Some(60)));
            if let Err(e) = verify(&p, &sol) {
                prop_assert!(false, "{}", e);
            }
        }

        #[test]
        fn same_seed_same_plan(seed in 0u64..10_000, n in 5usize..25) {
            let p = random_problem(seed, n, 3, 2);
            let params = Params::new(10_000, seed, Some(40));
            let (a, _) = solve(&p, None, &params);
            let (b, _) = solve(&p, None, &params);
            prop_assert_eq!(assignment(&a), assignment(&b));
            prop_assert_eq!(a.cost, b.cost);
        }

        #[test]
        fn descent_keeps_feasibility_and_never_worsens(
            seed in 0u64..10_000, n in 2usize..40, vehicles in 2usize..6, pairs in 0usize..5
        ) {
            let p = random_problem(seed, n, vehicles, pairs);
            let mut sol = Solution::empty(&p);
            construct(&p, &mut sol);
            let before = sol.objective();
            let mut granular = sol.clone();
            descend(&p, &mut sol, None, None);
            let adj = neighbours(&p, 8);
            while granular.two_opt_star_granular(&p, &adj, 4, None) {}
            if let Err(e) = verify(&p, &granular) {
                prop_assert!(false, "granular: {}", e);
            }
            prop_assert!(granular.objective() <= before);
            if let Err(e) = verify(&p, &sol) {
                prop_assert!(false, "{}", e);
            }
            prop_assert!(sol.objective() <= before);
            prop_assert_eq!(sol.unassigned.len(), {
                let mut s2 = Solution::empty(&p);
                construct(&p, &mut s2);
                s2.unassigned.len()
            });
        }

        #[test]
        fn removal_then_insertion_keeps_caches_exact(seed in 0u64..10_000, n in 2usize..25) {
            let p = random_problem(seed, n, 3, 3);
            let mut sol = Solution::empty(&p);
            construct(&p, &mut sol);
            let victims: Vec<usize> = (0..n).filter(|t| t % 3 == (seed % 3) as usize).collect();
            sol.remove(&p, &victims);
            if let Err(e) = verify(&p, &sol) {
                prop_assert!(false, "after removal: {}", e);
            }
            let before = sol.objective();
            construct(&p, &mut sol);
            if let Err(e) = verify(&p, &sol) {
                prop_assert!(false, "after reinsertion: {}", e);
            }
            prop_assert!(sol.objective() <= before);
        }
    }
}
