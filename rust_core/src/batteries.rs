//! Battery matching at a swap station (min-cost assignment, Hungarian algorithm) and the station's
//! 96 × 15-minute charging schedule under a power cap with time-of-use prices and forecast demand.

use crate::columns::{column, same_len};
use crate::errors::{finite, CoreError, CoreResult};
use crate::gil::without_gil;
use crate::index::{PACK_READY, PACK_STATE_MAX};
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;

pub const SLOTS: usize = 96;
const SLOT_H: f64 = 0.25;
/// Cost of a forbidden pair: larger than any sum of feasible costs (each ≤ 2) for up to 1,000 vehicles.
const FORBIDDEN: f64 = 1.0e7;
const MAX_MATCH: usize = 1_000;
/// Cycle count at which a pack counts as fully worn for the strength score.
pub const CYCLE_REF: f64 = 3_000.0;
/// Trip length (km) that needs the strongest pack.
pub const TRIP_REF_KM: f64 = 400.0;

#[derive(Debug, Clone)]
pub struct PackRow {
    pub pack_type: u16,
    pub soc: u16,
    pub soh: u16,
    pub cycles: u32,
    pub state: u8,
}

#[derive(Debug, Clone)]
pub struct VehicleRow {
    pub pack_type: u16,
    pub need_soc: u16,
    pub trip_km: f64,
}

/// Strength of a pack in [0, 1]: half state of health, half remaining cycle life.
pub fn strength(p: &PackRow) -> f64 {
    0.5 * (p.soh as f64 / 1000.0) + 0.5 * (1.0 - (p.cycles as f64).min(CYCLE_REF) / CYCLE_REF)
}

pub fn compatible(p: &PackRow, v: &VehicleRow) -> bool {
    p.state == PACK_READY && p.pack_type == v.pack_type && p.soc >= v.need_soc
}

/// Stress-balancing cost: long trips want strong packs, short trips weak ones, so wear spreads over the
/// pool ((strength − trip demand)², rearrangement inequality: the sum is minimal when both are sorted
/// alike), plus a small term that prefers low-cycle packs when some packs stay in the station.
pub fn pair_cost(p: &PackRow, v: &VehicleRow) -> f64 {
    let t = (v.trip_km / TRIP_REF_KM).clamp(0.0, 1.0);
    let s = strength(p);
    (s - t).powi(2) + 0.2 * (p.cycles as f64).min(CYCLE_REF) / CYCLE_REF
}

/// Min-cost assignment of rows to distinct columns (rows ≤ columns), O(rows² · columns).
pub fn hungarian(cost: &[Vec<f64>]) -> Vec<usize> {
    let n = cost.len();
    if n == 0 {
        return Vec::new();
    }
    let m = cost[0].len();
    debug_assert!(n <= m);
    let inf = f64::INFINITY;
    let (mut u, mut v) = (vec![0.0; n + 1], vec![0.0; m + 1]);
    let (mut p, mut way) = (vec![0usize; m + 1], vec![0usize; m + 1]);
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![inf; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = inf;
            let mut j1 = 0;
            for j in 1..=m {
                if !used[j] {
                    let cur = cost[i0 - 1][j - 1] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut ans = vec![0usize; n];
    for j in 1..=m {
        if p[j] != 0 {
            ans[p[j] - 1] = j - 1;
        }
    }
    ans
}

/// For each vehicle, the pack it gets (or None), and the total cost of the matched pairs. Maximises the
/// number of served vehicles first, then minimises the stress-balancing cost.
pub fn match_packs(packs: &[PackRow], vehicles: &[VehicleRow]) -> CoreResult<(Vec<Option<usize>>, f64)> {
    if packs.len() > MAX_MATCH || vehicles.len() > MAX_MATCH {
        return Err(CoreError::invalid(
            "packs",
            format!("at most {MAX_MATCH} packs and vehicles per match"),
        ));
    }
    for (i, p) in packs.iter().enumerate() {
        if p.soc > 1000 || p.soh > 1000 {
            return Err(CoreError::invalid(
                "soc",
                format!("pack [{i}] soc/soh outside [0, 1000]"),
            ));
        }
        if p.state == 0 || p.state > PACK_STATE_MAX {
            return Err(CoreError::invalid(
                "state",
                format!("pack [{i}] state {} is not a PackState", p.state),
            ));
        }
    }
    for (i, v) in vehicles.iter().enumerate() {
        if v.need_soc > 1000 {
            return Err(CoreError::invalid(
                "vehicle_need_soc",
                format!("[{i}] outside [0, 1000]"),
            ));
        }
        let t = finite("vehicle_trip_km", v.trip_km)?;
        if t < 0.0 {
            return Err(CoreError::invalid(
                "vehicle_trip_km",
                format!("[{i}] is negative"),
            ));
        }
    }
    let mut out = vec![None; vehicles.len()];
    if packs.is_empty() || vehicles.is_empty() {
        return Ok((out, 0.0));
    }
    let c = |vi: usize, pi: usize| {
        if compatible(&packs[pi], &vehicles[vi]) {
            pair_cost(&packs[pi], &vehicles[vi])
        } else {
            FORBIDDEN
        }
    };
    let mut total = 0.0;
    if vehicles.len() <= packs.len() {
        let m: Vec<Vec<f64>> = (0..vehicles.len())
            .map(|v| (0..packs.len()).map(|p| c(v, p)).collect())
            .collect();
        for (v, p) in hungarian(&m).into_iter().enumerate() {
            if m[v][p] < FORBIDDEN {
                out[v] = Some(p);
                total += m[v][p];
            }
        }
    } else {
        let m: Vec<Vec<f64>> = (0..packs.len())
            .map(|p| (0..vehicles.len()).map(|v| c(v, p)).collect())
            .collect();
        for (p, v) in hungarian(&m).into_iter().enumerate() {
            if m[p][v] < FORBIDDEN {
                out[v] = Some(p);
                total += m[p][v];
            }
        }
    }
    Ok((out, total))
}

// --- charging schedule ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct ScheduleInput {
    pub soc: Vec<u16>,
    pub capacity_wh: Vec<u32>,
    pub target_soc: Vec<u16>,
    /// Slot (0..=96) by whose start the pack must be at its target, or -1.
    pub ready_by: Vec<i32>,
    pub power_cap_w: f64,
    pub charger_power_w: f64,
    pub prices: Vec<i64>,
    pub demand: Vec<u32>,
    pub fill_remaining: bool,
    /// SOC of the depleted pack each served swap brings back (None: returns are not modelled).
    pub returned_soc: Option<u16>,
}

#[derive(Debug, Clone, Default)]
pub struct Schedule {
    /// n × 96, row-major: 1 when the pack charges in the slot.
    pub charging: Vec<u8>,
    pub slot_packs: Vec<u32>,
    pub slot_power_w: Vec<f64>,
    pub energy_wh: Vec<f64>,
    pub ready_slot: Vec<i32>,
    pub serves_slot: Vec<i32>,
    /// -1 for an input pack; for a returned pack, the demand slot whose swap brought it back.
    pub origin_slot: Vec<i32>,
    pub unmet_demand: Vec<u32>,
    pub missed_ready_by: Vec<u32>,
    pub cost_micros: i64,
}

impl ScheduleInput {
    fn validate(&self) -> CoreResult<usize> {
        let n = same_len(&[
            ("soc", self.soc.len()),
            ("capacity_wh", self.capacity_wh.len()),
            ("target_soc", self.target_soc.len()),
            ("ready_by_slot", self.ready_by.len()),
        ])?;
        if n > 10_000 {
            return Err(CoreError::invalid(
                "soc",
                "at most 10,000 packs per station schedule",
            ));
        }
        if self.prices.len() != SLOTS {
            return Err(CoreError::invalid(
                "prices_micros_per_kwh",
                format!("needs {SLOTS} slots, got {}", self.prices.len()),
            ));
        }
        if let Some(i) = self.demand.iter().position(|&d| d > 10_000) {
            return Err(CoreError::invalid(
                "demand",
                format!("[{i}] above 10,000 packs per slot"),
            ));
        }
        if self.returned_soc.is_some_and(|r| r > 1000) {
            return Err(CoreError::invalid(
                "returned_soc_permille",
                "must be within [0, 1000]",
            ));
        }
        if self.demand.len() != SLOTS {
            return Err(CoreError::invalid(
                "demand",
                format!("needs {SLOTS} slots, got {}", self.demand.len()),
            ));
        }
        if let Some(i) = self
            .prices
            .iter()
            .position(|&p| !(0..=1_000_000_000_000).contains(&p))
        {
            return Err(CoreError::invalid(
                "prices_micros_per_kwh",
                format!("[{i}] outside [0, 1e12]"),
            ));
        }
        for i in 0..n {
            if self.soc[i] > 1000 || self.target_soc[i] > 1000 {
                return Err(CoreError::invalid(
                    "soc",
                    format!("[{i}] soc/target outside [0, 1000]"),
                ));
            }
            if self.capacity_wh[i] == 0 {
                return Err(CoreError::invalid("capacity_wh", format!("[{i}] must be > 0")));
            }
            if !(-1..=SLOTS as i32).contains(&self.ready_by[i]) {
                return Err(CoreError::invalid(
                    "ready_by_slot",
                    format!("[{i}] outside [-1, 96]"),
                ));
            }
        }
        let cap = finite("power_cap_w", self.power_cap_w)?;
        let ch = finite("charger_power_w", self.charger_power_w)?;
        if cap < 0.0 || ch <= 0.0 {
            return Err(CoreError::invalid(
                "charger_power_w",
                "power cap must be >= 0 and charger power > 0",
            ));
        }
        Ok(n)
    }
}

struct Planner<'a> {
    inp: &'a ScheduleInput,
    per_slot: u32,
    slot_energy_wh: f64,
    /// Pack rows: the input packs, then packs returned by served swaps.
    soc: Vec<u16>,
    capacity_wh: Vec<u32>,
    target: Vec<u16>,
    release: Vec<usize>,
    s: Schedule,
}

impl Planner<'_> {
    fn need_wh(&self, j: usize) -> f64 {
        (self.target[j] as f64 - self.soc[j] as f64).max(0.0) * self.capacity_wh[j] as f64 / 1000.0
    }
    fn slots_needed(&self, j: usize) -> usize {
        (self.need_wh(j) / self.slot_energy_wh - 1e-9).ceil().max(0.0) as usize
    }
    fn add_pack(&mut self, soc: u16, capacity_wh: u32, target: u16, release: usize, origin: i32) -> usize {
        self.soc.push(soc);
        self.capacity_wh.push(capacity_wh);
        self.target.push(target);
        self.release.push(release);
        self.s.charging.extend_from_slice(&[0; SLOTS]);
        self.s.energy_wh.push(0.0);
        self.s.ready_slot.push(-1);
        self.s.serves_slot.push(-1);
        self.s.origin_slot.push(origin);
        self.soc.len() - 1
    }
    /// Charges pack `j` in its cheapest free slots in [release, deadline); false (and nothing changed)
    /// when not enough slots are left under the cap.
    fn schedule(&mut self, j: usize, deadline: usize) -> bool {
        let k = self.slots_needed(j);
        let release = self.release[j];
        if k == 0 {
            if release > deadline {
                return false;
            }
            self.s.ready_slot[j] = release as i32;
            return true;
        }
        let mut free: Vec<usize> = (release.min(deadline)..deadline)
            .filter(|&t| self.s.slot_packs[t] < self.per_slot)
            .collect();
        if free.len() < k {
            return false;
        }
        free.sort_by_key(|&t| (self.inp.prices[t], t));
        free.truncate(k);
        // The partial last slot's energy goes to the dearest chosen slot.
        let need = self.need_wh(j);
        let dearest = *free
            .iter()
            .max_by_key(|&&t| (self.inp.prices[t], t))
            .unwrap_or(&0);
        let mut cost = 0.0;
        for &t in &free {
            let e = if t == dearest {
                need - self.slot_energy_wh * (k - 1) as f64
            } else {
                self.slot_energy_wh
            };
            cost += self.inp.prices[t] as f64 * e / 1000.0;
            self.s.slot_packs[t] += 1;
            self.s.charging[j * SLOTS + t] = 1;
        }
        self.s.cost_micros += cost.round() as i64;
        self.s.energy_wh[j] = need;
        self.s.ready_slot[j] = *free.iter().max().unwrap_or(&0) as i32 + 1;
        true
    }
}

/// Earliest-deadline-first over jobs (packs with a ready-by slot, and one job per unit of forecast demand
/// served by the free pack needing the fewest slots that can still make it), each job taking the cheapest
/// free slots before its deadline under the per-slot cap. With `returned_soc` set, every served swap
/// brings back a depleted pack (the served pack's capacity and target) that can charge from the next
/// slot on and serve later demand. Optimal when every pack needs at most one slot and nothing is returned:
/// every job's feasible slots are a prefix of the day, so exchanging slots between an earlier-deadline job
/// and a later one never breaks feasibility, and taking the cheapest free prefix slot is never worse (see
/// docs/engine.md). A heuristic otherwise.
pub fn schedule_charging(inp: &ScheduleInput) -> CoreResult<Schedule> {
    let n = inp.validate()?;
    let per_slot = (inp.power_cap_w / inp.charger_power_w)
        .floor()
        .min(u32::MAX as f64) as u32;
    let mut pl = Planner {
        inp,
        per_slot,
        slot_energy_wh: inp.charger_power_w * SLOT_H,
        soc: inp.soc.clone(),
        capacity_wh: inp.capacity_wh.clone(),
        target: inp.target_soc.clone(),
        release: vec![0; n],
        s: Schedule {
            charging: vec![0; n * SLOTS],
            slot_packs: vec![0; SLOTS],
            slot_power_w: vec![0.0; SLOTS],
            energy_wh: vec![0.0; n],
            ready_slot: vec![-1; n],
            serves_slot: vec![-1; n],
            origin_slot: vec![-1; n],
            unmet_demand: vec![0; SLOTS],
            missed_ready_by: Vec::new(),
            cost_micros: 0,
        },
    };
    // Jobs: (deadline, 0 = ready-by pack / 1 = demand unit, pack or slot).
    let mut jobs: Vec<(usize, u8, usize)> = Vec::new();
    for j in 0..n {
        if inp.ready_by[j] >= 0 {
            jobs.push((inp.ready_by[j] as usize, 0, j));
        }
    }
    for (t, &d) in inp.demand.iter().enumerate() {
        for _ in 0..d {
            jobs.push((t, 1, t));
        }
    }
    jobs.sort();
    let mut free: Vec<usize> = (0..n).filter(|&j| inp.ready_by[j] < 0).collect();
    let mut missed = Vec::new();
    for (deadline, kind, x) in jobs {
        if kind == 0 {
            if !pl.schedule(x, deadline) {
                missed.push(x);
            }
            continue;
        }
        // Free packs by fewest slots needed; the first that can be full by the deadline serves.
        free.sort_by_key(|&j| (pl.slots_needed(j), pl.release[j], std::cmp::Reverse(pl.soc[j]), j));
        let mut served = None;
        for (pos, &j) in free.iter().enumerate() {
            if pl.schedule(j, deadline) {
                served = Some(pos);
                break;
            }
        }
        match served {
            Some(pos) => {
                let j = free.remove(pos);
                pl.s.serves_slot[j] = x as i32;
                if let Some(rs) = inp.returned_soc {
                    let (cap, target) = (pl.capacity_wh[j], pl.target[j]);
                    let r = pl.add_pack(rs, cap, target, x + 1, x as i32);
                    free.push(r);
                }
            }
            None => pl.s.unmet_demand[x] += 1,
        }
    }
    if inp.fill_remaining {
        let mut rest: Vec<usize> = free;
        rest.extend(missed.iter().copied());
        rest.sort_by_key(|&j| (pl.slots_needed(j), j));
        for j in rest {
            if pl.s.ready_slot[j] < 0 {
                pl.schedule(j, SLOTS);
            }
        }
    }
    pl.s.missed_ready_by = missed.into_iter().map(|j| j as u32).collect();
    for t in 0..SLOTS {
        pl.s.slot_power_w[t] = pl.s.slot_packs[t] as f64 * inp.charger_power_w;
    }
    Ok(pl.s)
}

// --- Python surface -------------------------------------------------------------------------------

/// Result of `match_packs`.
#[pyclass(module = "voltcloud._core", frozen)]
pub struct PackMatching {
    vehicle_pack: Vec<i64>,
    vehicle_pack_id: Vec<u64>,
    #[pyo3(get)]
    total_cost: f64,
}

#[pymethods]
impl PackMatching {
    /// Pack row per vehicle (-1 when unserved).
    #[getter]
    fn vehicle_pack<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        PyArray1::from_slice(py, &self.vehicle_pack)
    }
    /// Pack id per vehicle (0 when unserved).
    #[getter]
    fn vehicle_pack_id<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u64>> {
        PyArray1::from_slice(py, &self.vehicle_pack_id)
    }
    /// Vehicles without a compatible pack.
    #[getter]
    fn unmatched<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        let v: Vec<i64> = (0..self.vehicle_pack.len() as i64)
            .filter(|&i| self.vehicle_pack[i as usize] < 0)
            .collect();
        PyArray1::from_vec(py, v)
    }
}

#[pyfunction]
#[pyo3(signature = (pack_ids, pack_type, soc, soh, cycles, state, vehicle_pack_type, vehicle_need_soc, vehicle_trip_km))]
#[allow(clippy::too_many_arguments)]
fn py_match_packs(
    py: Python<'_>,
    pack_ids: &Bound<'_, PyAny>,
    pack_type: &Bound<'_, PyAny>,
    soc: &Bound<'_, PyAny>,
    soh: &Bound<'_, PyAny>,
    cycles: &Bound<'_, PyAny>,
    state: &Bound<'_, PyAny>,
    vehicle_pack_type: &Bound<'_, PyAny>,
    vehicle_need_soc: &Bound<'_, PyAny>,
    vehicle_trip_km: &Bound<'_, PyAny>,
) -> PyResult<PackMatching> {
    let ids = column::<u64>(pack_ids, "pack_ids")?;
    let pt = column::<u16>(pack_type, "pack_type")?;
    let so = column::<u16>(soc, "soc")?;
    let sh = column::<u16>(soh, "soh")?;
    let cy = column::<u32>(cycles, "cycles")?;
    let st = column::<u8>(state, "state")?;
    let n = same_len(&[
        ("pack_ids", ids.len()),
        ("pack_type", pt.len()),
        ("soc", so.len()),
        ("soh", sh.len()),
        ("cycles", cy.len()),
        ("state", st.len()),
    ])?;
    let vt = column::<u16>(vehicle_pack_type, "vehicle_pack_type")?;
    let vn = column::<u16>(vehicle_need_soc, "vehicle_need_soc")?;
    let vk = column::<f64>(vehicle_trip_km, "vehicle_trip_km")?;
    let m = same_len(&[
        ("vehicle_pack_type", vt.len()),
        ("vehicle_need_soc", vn.len()),
        ("vehicle_trip_km", vk.len()),
    ])?;
    let packs: Vec<PackRow> = (0..n)
        .map(|i| PackRow {
            pack_type: pt[i],
            soc: so[i],
            soh: sh[i],
            cycles: cy[i],
            state: st[i],
        })
        .collect();
    let vehicles: Vec<VehicleRow> = (0..m)
        .map(|i| VehicleRow {
            pack_type: vt[i],
            need_soc: vn[i],
            trip_km: vk[i],
        })
        .collect();
    let (assign, total) = without_gil(py, || match_packs(&packs, &vehicles))?;
    Ok(PackMatching {
        vehicle_pack: assign.iter().map(|a| a.map(|p| p as i64).unwrap_or(-1)).collect(),
        vehicle_pack_id: assign.iter().map(|a| a.map(|p| ids[p]).unwrap_or(0)).collect(),
        total_cost: total,
    })
}

/// Result of `schedule_charging`.
#[pyclass(module = "voltcloud._core", frozen)]
pub struct ChargingPlan {
    s: Schedule,
    n: usize,
}

#[pymethods]
impl ChargingPlan {
    /// uint8 array (packs × 96): 1 when the pack charges in the slot.
    #[getter]
    fn charging<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<u8>>> {
        PyArray1::from_slice(py, &self.s.charging).reshape([self.n, SLOTS])
    }
    #[getter]
    fn slot_packs<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u32>> {
        PyArray1::from_slice(py, &self.s.slot_packs)
    }
    #[getter]
    fn slot_power_w<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        PyArray1::from_slice(py, &self.s.slot_power_w)
    }
    #[getter]
    fn energy_wh<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        PyArray1::from_slice(py, &self.s.energy_wh)
    }
    /// Slot at whose start the pack reaches its target (0 = already there, -1 = never).
    #[getter]
    fn ready_slot<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i32>> {
        PyArray1::from_slice(py, &self.s.ready_slot)
    }
    /// Demand slot the pack is set aside for (-1 = none).
    #[getter]
    fn serves_slot<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i32>> {
        PyArray1::from_slice(py, &self.s.serves_slot)
    }
    /// -1 for an input pack; for a pack returned by a served swap (rows after the input packs), the slot.
    #[getter]
    fn origin_slot<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i32>> {
        PyArray1::from_slice(py, &self.s.origin_slot)
    }
    /// Full packs short per slot.
    #[getter]
    fn unmet_demand<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u32>> {
        PyArray1::from_slice(py, &self.s.unmet_demand)
    }
    /// Packs whose ready-by slot cannot be met.
    #[getter]
    fn missed_ready_by<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u32>> {
        PyArray1::from_slice(py, &self.s.missed_ready_by)
    }
    #[getter]
    fn cost_micros(&self) -> i64 {
        self.s.cost_micros
    }
    #[getter]
    fn total_unmet(&self) -> u64 {
        self.s.unmet_demand.iter().map(|&x| x as u64).sum()
    }
}

#[pyfunction]
#[pyo3(signature = (soc, capacity_wh, target_soc, ready_by_slot, power_cap_w, charger_power_w,
    prices_micros_per_kwh, demand, fill_remaining = true, returned_soc_permille = None))]
#[allow(clippy::too_many_arguments)]
fn py_schedule_charging(
    py: Python<'_>,
    soc: &Bound<'_, PyAny>,
    capacity_wh: &Bound<'_, PyAny>,
    target_soc: &Bound<'_, PyAny>,
    ready_by_slot: &Bound<'_, PyAny>,
    power_cap_w: f64,
    charger_power_w: f64,
    prices_micros_per_kwh: &Bound<'_, PyAny>,
    demand: &Bound<'_, PyAny>,
    fill_remaining: bool,
    returned_soc_permille: Option<i64>,
) -> PyResult<ChargingPlan> {
    let returned_soc = match returned_soc_permille {
        None => None,
        Some(v) => Some(crate::index::small::<u16>(v, "returned_soc_permille")?),
    };
    let inp = ScheduleInput {
        soc: column(soc, "soc")?,
        capacity_wh: column(capacity_wh, "capacity_wh")?,
        target_soc: column(target_soc, "target_soc")?,
        ready_by: column(ready_by_slot, "ready_by_slot")?,
        power_cap_w,
        charger_power_w,
        prices: column(prices_micros_per_kwh, "prices_micros_per_kwh")?,
        demand: column(demand, "demand")?,
        fill_remaining,
        returned_soc,
    };
    let s = without_gil(py, || schedule_charging(&inp))?;
    let n = s.energy_wh.len();
    Ok(ChargingPlan { s, n })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PackMatching>()?;
    m.add_class::<ChargingPlan>()?;
    let f = wrap_pyfunction!(py_match_packs, m)?;
    m.add("match_packs", f)?;
    let g = wrap_pyfunction!(py_schedule_charging, m)?;
    m.add("schedule_charging", g)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn brute_min(cost: &[Vec<f64>]) -> f64 {
        fn go(i: usize, used: &mut Vec<bool>, cost: &[Vec<f64>]) -> f64 {
            if i == cost.len() {
                return 0.0;
            }
            let mut best = f64::INFINITY;
            for j in 0..cost[0].len() {
                if !used[j] {
                    used[j] = true;
                    best = best.min(cost[i][j] + go(i + 1, used, cost));
                    used[j] = false;
                }
            }
            best
        }
        go(0, &mut vec![false; cost[0].len()], cost)
    }

    #[test]
    fn long_trips_get_strong_packs() {
        let packs = vec![
            PackRow {
                pack_type: 1,
                soc: 950,
                soh: 990,
                cycles: 50,
                state: 3,
            },
            PackRow {
                pack_type: 1,
                soc: 950,
                soh: 820,
                cycles: 2500,
                state: 3,
            },
            PackRow {
                pack_type: 1,
                soc: 1000,
                soh: 1000,
                cycles: 0,
                state: 5,
            },
            PackRow {
                pack_type: 2,
                soc: 1000,
                soh: 1000,
                cycles: 0,
                state: 3,
            },
        ];
        let vehicles = vec![
            VehicleRow {
                pack_type: 1,
                need_soc: 900,
                trip_km: 15.0,
            },
            VehicleRow {
                pack_type: 1,
                need_soc: 900,
                trip_km: 380.0,
            },
            VehicleRow {
                pack_type: 3,
                need_soc: 100,
                trip_km: 10.0,
            },
        ];
        let (a, _) = match_packs(&packs, &vehicles).unwrap();
        assert_eq!(a, vec![Some(1), Some(0), None]);
    }

    #[test]
    fn schedule_prefers_cheap_slots_and_reports_unmet() {
        let mut prices = vec![1_000_000i64; SLOTS];
        for p in prices.iter_mut().take(28) {
            *p = 300_000; // night tariff 00:00–07:00
        }
        let mut demand = vec![0u32; SLOTS];
        demand[40] = 2;
        demand[2] = 3;
        let inp = ScheduleInput {
            soc: vec![500, 500, 990, 200],
            capacity_wh: vec![70_000; 4],
            target_soc: vec![950; 4],
            ready_by: vec![-1; 4],
            power_cap_w: 120_000.0,
            charger_power_w: 60_000.0,
            prices,
            demand,
            fill_remaining: true,
            returned_soc: None,
        };
        let s = schedule_charging(&inp).unwrap();
        assert!(s.slot_packs.iter().all(|&k| k <= 2));
        // Slot 2 needs 3 full packs: only pack 2 is full, two packs need 3 slots each (31.5 kWh / 15 kWh)
        // and cannot make slots 0..2 → 2 unmet.
        assert_eq!(s.unmet_demand[2], 2);
        assert_eq!(s.serves_slot[2], 2);
        assert_eq!(s.unmet_demand[40], 0);
        for j in 0..4 {
            for t in 28..SLOTS {
                assert_eq!(s.charging[j * SLOTS + t], 0, "charging in a dear slot");
            }
        }
        assert!(s.cost_micros > 0);
    }

    #[test]
    fn returned_packs_are_recharged_for_later_demand() {
        let mut demand = vec![0u32; SLOTS];
        demand[10] = 1;
        demand[30] = 1;
        demand[50] = 1;
        let mut inp = ScheduleInput {
            soc: vec![950, 950],
            capacity_wh: vec![70_000; 2],
            target_soc: vec![950; 2],
            ready_by: vec![-1; 2],
            power_cap_w: 60_000.0,
            charger_power_w: 60_000.0,
            prices: vec![500_000; SLOTS],
            demand,
            fill_remaining: false,
            returned_soc: None,
        };
        assert_eq!(schedule_charging(&inp).unwrap().unmet_demand[50], 1);
        inp.returned_soc = Some(200);
        let s = schedule_charging(&inp).unwrap();
        assert_eq!(s.unmet_demand.iter().sum::<u32>(), 0);
        assert_eq!(s.origin_slot, vec![-1, -1, 10, 30, 50]);
        assert_eq!(s.serves_slot[2], 50);
        assert!(s.ready_slot[2] > 11 && s.ready_slot[2] <= 50);
        assert_eq!(s.energy_wh[2], 52_500.0);
    }

    #[test]
    fn schedule_rejects_bad_input() {
        let ok = ScheduleInput {
            soc: vec![500],
            capacity_wh: vec![70_000],
            target_soc: vec![900],
            ready_by: vec![-1],
            power_cap_w: 1e5,
            charger_power_w: 5e4,
            prices: vec![1; SLOTS],
            demand: vec![0; SLOTS],
            fill_remaining: true,
            returned_soc: None,
        };
        let mut b = ok.clone();
        b.prices.pop();
        assert!(schedule_charging(&b).is_err());
        let mut b = ok.clone();
        b.charger_power_w = f64::NAN;
        assert!(schedule_charging(&b).is_err());
        let mut b = ok.clone();
        b.soc.push(1);
        assert!(schedule_charging(&b).is_err());
        let mut b = ok;
        b.ready_by[0] = 97;
        assert!(schedule_charging(&b).is_err());
    }

    fn pack_strategy() -> impl Strategy<Value = PackRow> {
        (1u16..3, 0u16..1001, 600u16..1001, 0u32..4000, 1u8..8).prop_map(
            |(pack_type, soc, soh, cycles, state)| PackRow {
                pack_type,
                soc,
                soh,
                cycles,
                state,
            },
        )
    }

    proptest! {
        #[test]
        fn matching_is_valid_and_optimal(
            packs in proptest::collection::vec(pack_strategy(), 1..7),
            vehicles in proptest::collection::vec((1u16..3, 0u16..1001, 0.0f64..500.0)
                .prop_map(|(pack_type, need_soc, trip_km)| VehicleRow { pack_type, need_soc, trip_km }), 1..7),
        ) {
            let (a, total) = match_packs(&packs, &vehicles).unwrap();
            let mut used = std::collections::HashSet::new();
            let mut served = 0;
            for (v, p) in a.iter().enumerate() {
                if let Some(p) = *p {
                    prop_assert!(used.insert(p), "pack {} used twice", p);
                    prop_assert!(compatible(&packs[p], &vehicles[v]));
                    prop_assert!(packs[p].state == PACK_READY);
                    served += 1;
                }
            }
            // Brute force over the same cost matrix (forbidden pairs cost FORBIDDEN).
            let c = |v: usize, p: usize| if compatible(&packs[p], &vehicles[v]) { pair_cost(&packs[p], &vehicles[v]) } else { FORBIDDEN };
            let best = if vehicles.len() <= packs.len() {
                brute_min(&(0..vehicles.len()).map(|v| (0..packs.len()).map(|p| c(v, p)).collect::<Vec<_>>()).collect::<Vec<_>>())
            } else {
                brute_min(&(0..packs.len()).map(|p| (0..vehicles.len()).map(|v| c(v, p)).collect::<Vec<_>>()).collect::<Vec<_>>())
            };
            let unserved_forbidden = (vehicles.len().min(packs.len()) - served) as f64 * FORBIDDEN;
            prop_assert!((total + unserved_forbidden - best).abs() < 1e-6, "{} vs {}", total + unserved_forbidden, best);
        }

        #[test]
        fn schedule_respects_the_cap_and_deadlines(
            packs in proptest::collection::vec((0u16..1001, 20_000u32..100_000, 0u16..1001, -1i32..97), 0..25),
            cap in 0.0f64..500_000.0,
            charger in 7_000.0f64..150_000.0,
            prices in proptest::collection::vec(0i64..2_000_000, SLOTS),
            demand in proptest::collection::vec(0u32..3, SLOTS),
            returned in proptest::option::of(0u16..400),
        ) {
            let inp = ScheduleInput {
                soc: packs.iter().map(|p| p.0).collect(),
                capacity_wh: packs.iter().map(|p| p.1).collect(),
                target_soc: packs.iter().map(|p| p.2).collect(),
                ready_by: packs.iter().map(|p| p.3).collect(),
                power_cap_w: cap,
                charger_power_w: charger,
                prices,
                demand: demand.clone(),
                fill_remaining: true,
                returned_soc: returned,
            };
            let s = schedule_charging(&inp).unwrap();
            let rows = s.energy_wh.len();
            prop_assert_eq!(s.charging.len(), rows * SLOTS);
            for j in packs.len()..rows {
                // A returned pack only charges after the swap that brought it back.
                let origin = s.origin_slot[j];
                prop_assert!(returned.is_some() && origin >= 0);
                for t in 0..=origin as usize {
                    prop_assert_eq!(s.charging[j * SLOTS + t], 0);
                }
            }
            for t in 0..SLOTS {
                let k: u32 = (0..rows).map(|j| s.charging[j * SLOTS + t] as u32).sum();
                prop_assert_eq!(k, s.slot_packs[t]);
                prop_assert!(k as f64 * charger <= cap + 1e-6, "slot {} over the cap", t);
            }
            let mut served = vec![0u32; SLOTS];
            for j in 0..rows {
                if s.serves_slot[j] >= 0 {
                    let t = s.serves_slot[j];
                    prop_assert!(s.ready_slot[j] >= 0 && s.ready_slot[j] <= t);
                    prop_assert!(j >= packs.len() || inp.ready_by[j] < 0);
                    served[t as usize] += 1;
                }
                if j < packs.len() && inp.ready_by[j] >= 0 && !s.missed_ready_by.contains(&(j as u32)) {
                    prop_assert!(s.ready_slot[j] >= 0 && s.ready_slot[j] <= inp.ready_by[j]);
                }
            }
            for t in 0..SLOTS {
                prop_assert_eq!(served[t] + s.unmet_demand[t], demand[t]);
            }
        }

        #[test]
        fn unit_energy_schedule_is_cost_optimal(
            prices in proptest::collection::vec(0i64..100, 8),
            deadlines in proptest::collection::vec(1usize..9, 1..6),
        ) {
            // Every pack needs exactly one slot (15 kWh at 60 kW); one charger. Compare with brute force
            // over slot choices for the ready-by jobs restricted to the first 8 slots.
            let n = deadlines.len();
            let mut p = vec![1_000_000i64; SLOTS];
            p[..8].copy_from_slice(&prices);
            let inp = ScheduleInput {
                soc: vec![0; n],
                capacity_wh: vec![15_000; n],
                target_soc: vec![1000; n],
                ready_by: deadlines.iter().map(|&d| d as i32).collect(),
                power_cap_w: 60_000.0,
                charger_power_w: 60_000.0,
                prices: p,
                demand: vec![0; SLOTS],
                fill_remaining: false,
                returned_soc: None,
            };
            let s = schedule_charging(&inp).unwrap();
            fn brute(j: usize, d: &[usize], used: &mut [bool; 8], pr: &[i64]) -> (usize, i64) {
                if j == d.len() { return (0, 0); }
                let mut best = brute(j + 1, d, used, pr); // job j missed
                for t in 0..d[j] {
                    if !used[t] {
                        used[t] = true;
                        let (k, c) = brute(j + 1, d, used, pr);
                        used[t] = false;
                        let cand = (k + 1, c + pr[t] * 15);
                        if cand.0 > best.0 || (cand.0 == best.0 && cand.1 < best.1) { best = cand; }
                    }
                }
                best
            }
            let (k, c) = brute(0, &deadlines, &mut [false; 8], &prices);
            prop_assert_eq!(n - s.missed_ready_by.len(), k);
            prop_assert_eq!(s.cost_micros, c);
        }
    }
}
