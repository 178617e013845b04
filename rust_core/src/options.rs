//! Power-up options for one request: SWAP at a reachable station with a ready compatible pack, CHARGE at
//! a free compatible connector, VALET (a specialist drives the car to a station and back) and MOBILE_VAN
//! (a van with enough energy comes to the car). Ranked by finish time, then a cost proxy.
//!
//! The station search walks rings of grid cells outwards from the car and stops when (a) the ring is
//! beyond the car's remaining range, or (b) every wanted list holds its candidates and no station in the
//! next ring can finish earlier (straight-line lower bound / fastest speed + shortest service), or (c) the
//! candidate budget `MAX_STATION_CANDIDATES` is spent. Reachability is always checked on the travel
//! model's road distance, so an unreachable station is never returned.

use crate::errors::{finite, CoreError, CoreResult};
use crate::geo::LatLng;
use crate::gil::without_gil;
use crate::index::small;
use crate::index::{
    IndexState, ResourceIndex, Station, Visibility, CONN_AVAILABLE, PACK_READY, STATION_CHARGING,
    STATION_SWAP, UNIT_AVAILABLE, UNIT_SPECIALIST, UNIT_VAN,
};
use crate::traffic::{TrafficState, TravelModel};
use pyo3::prelude::*;

pub const MODE_SWAP: u8 = 1;
pub const MODE_CHARGE: u8 = 2;
pub const MODE_VALET: u8 = 3;
pub const MODE_MOBILE_VAN: u8 = 4;
const MODES_MASK_ALL: u32 = 0b1_1110;

/// Stations evaluated per query (each costs one travel-model call); bounds the query time.
pub const MAX_STATION_CANDIDATES: usize = 600;
/// Rings of fine cells searched before switching to the coarse grid (cells 16× larger).
pub const FINE_RINGS: i32 = 10;
/// Vans / specialists evaluated per query, nearest first.
pub const MAX_UNIT_CANDIDATES: usize = 16;
/// Vans and specialists farther than this (straight line) are not considered.
pub const UNIT_RADIUS_M: f64 = 40_000.0;
/// Cost proxy: metres driven + this many metres per second of staff labour.
const LABOUR_M_PER_S: f64 = 10.0;

#[derive(Debug, Clone)]
pub struct Request {
    pub pos: LatLng,
    pub soc: u16,
    pub capacity_wh: f64,
    pub consumption_wh_per_km: f64,
    pub pack_type: u16,
    pub connector_mask: u32,
    pub target_soc: u16,
    pub modes_mask: u32,
    pub deadline: i64,
    pub now: i64,
    pub vis: Visibility,
    pub margin_permille: u16,
    pub max_charge_power_w: f64,
    pub top_n: usize,
}

impl Request {
    pub fn validate(&self) -> CoreResult<()> {
        if self.soc > 1000 {
            return Err(CoreError::invalid(
                "soc_permille",
                format!("{} is outside [0, 1000]", self.soc),
            ));
        }
        if self.target_soc == 0 || self.target_soc > 1000 {
            return Err(CoreError::invalid(
                "target_soc_permille",
                format!("{} is outside [1, 1000]", self.target_soc),
            ));
        }
        let cap = finite("usable_capacity_wh", self.capacity_wh)?;
        if !(1_000.0..=1_000_000.0).contains(&cap) {
            return Err(CoreError::invalid(
                "usable_capacity_wh",
                format!("{cap} is outside [1e3, 1e6] Wh"),
            ));
        }
        let c = finite("consumption_wh_per_km", self.consumption_wh_per_km)?;
        if !(10.0..=2_000.0).contains(&c) {
            return Err(CoreError::invalid(
                "consumption_wh_per_km",
                format!("{c} is outside [10, 2000]"),
            ));
        }
        let p = finite("max_charge_power_w", self.max_charge_power_w)?;
        if !(1_000.0..=2_000_000.0).contains(&p) {
            return Err(CoreError::invalid(
                "max_charge_power_w",
                format!("{p} is outside [1e3, 2e6] W"),
            ));
        }
        if self.modes_mask == 0 || self.modes_mask & !MODES_MASK_ALL != 0 {
            return Err(CoreError::invalid(
                "modes_mask",
                "must be a non-empty mask of 1<<mode, mode in 1..=4",
            ));
        }
        if self.connector_mask & !0b11_1110 != 0 {
            return Err(CoreError::invalid("connector_mask", "bits outside 1<<1..1<<5"));
        }
        if self.margin_permille > 1000 {
            return Err(CoreError::invalid(
                "safety_margin_permille",
                "must be within [0, 1000]",
            ));
        }
        if self.deadline < self.now {
            return Err(CoreError::invalid("deadline", "is before now"));
        }
        if self.top_n == 0 || self.top_n > 50 {
            return Err(CoreError::invalid("top_n", "must be within [1, 50]"));
        }
        Ok(())
    }
    fn wants(&self, mode: u8) -> bool {
        self.modes_mask & (1 << mode) != 0
    }
    /// Energy available for driving before the safety margin is touched.
    pub fn drive_budget_wh(&self) -> f64 {
        (self.soc as f64 - self.margin_permille as f64) * self.capacity_wh / 1000.0
    }
    pub fn reachable(&self, road_m: f64) -> bool {
        road_m / 1000.0 * self.consumption_wh_per_km <= self.drive_budget_wh()
    }
    fn arrival_soc(&self, road_m: f64) -> f64 {
        self.soc as f64 - road_m / 1000.0 * self.consumption_wh_per_km * 1000.0 / self.capacity_wh
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PowerUp {
    pub mode: u8,
    pub service_mode: u8,
    pub station: Option<u32>,
    pub connector: Option<u32>,
    pub pack: Option<u32>,
    pub unit: Option<u32>,
    pub eta_s: f64,
    pub wait_s: f64,
    pub service_s: f64,
    pub finish_at: f64,
    pub energy_wh: f64,
    pub distance_m: f64,
    pub cost_proxy: f64,
    /// Version of the pack / connector to pass to `reserve_*` (0 when none).
    pub resource_version: u64,
    /// Version of the unit to pass to `reserve_unit` (0 when none).
    pub unit_version: u64,
}

/// Seconds to charge from `from` to `to` permille: constant power up to 80 %, then a linear taper to
/// 10 % of the power at 100 %.
pub fn charge_time_s(capacity_wh: f64, from: f64, to: f64, power_w: f64) -> f64 {
    let (f, t) = (from.clamp(0.0, 1000.0) / 1000.0, to.clamp(0.0, 1000.0) / 1000.0);
    if t <= f || power_w <= 0.0 {
        return 0.0;
    }
    let k = capacity_wh / power_w * 3600.0;
    let cc_end = t.min(0.8);
    let mut s = if cc_end > f { (cc_end - f) * k } else { 0.0 };
    let a = f.max(0.8);
    if t > a {
        let g = |x: f64| 1.0 - 4.5 * (x - 0.8);
        s += k / 4.5 * (g(a) / g(t)).ln();
    }
    s
}

/// Keeps the `cap` best items by finish time.
fn push_top(list: &mut Vec<PowerUp>, o: PowerUp, cap: usize) {
    let pos = list.partition_point(|x| (x.finish_at, x.cost_proxy) <= (o.finish_at, o.cost_proxy));
    if pos < cap {
        list.insert(pos, o);
        list.truncate(cap);
    }
}

fn worst_finish(list: &[PowerUp], cap: usize) -> f64 {
    if list.len() < cap {
        f64::INFINITY
    } else {
        list[cap - 1].finish_at
    }
}

fn on_shift(start: i64, end: i64, from: f64, to: f64) -> bool {
    start as f64 <= from && to <= end as f64
}

pub fn compute_options(idx: &IndexState, tr: &TrafficState, req: &Request) -> CoreResult<Vec<PowerUp>> {
    req.validate()?;
    let s = Search::new(idx, tr, req);
    let (swaps, charges) = s.stations();
    let mut out: Vec<PowerUp> = Vec::new();
    if req.wants(MODE_SWAP) {
        out.extend(swaps.iter().take(req.top_n).cloned());
    }
    if req.wants(MODE_CHARGE) {
        out.extend(charges.iter().take(req.top_n).cloned());
    }
    if req.wants(MODE_MOBILE_VAN) {
        out.extend(s.vans());
    }
    if s.want_valet && !(swaps.is_empty() && charges.is_empty()) {
        out.extend(s.valets(&swaps, &charges));
    }
    out.sort_by(|a, b| {
        a.finish_at
            .total_cmp(&b.finish_at)
            .then(a.cost_proxy.total_cmp(&b.cost_proxy))
    });
    Ok(out)
}

/// One query's search: one searcher per mode (stations for SWAP and CHARGE, vans, valets built on the
/// station candidates), sharing the request and the clock.
struct Search<'a> {
    idx: &'a IndexState,
    tr: &'a TrafficState,
    req: &'a Request,
    now: f64,
    deadline: f64,
    want_valet: bool,
    want_swap: bool,
    want_charge: bool,
    /// Station candidates kept per list: VALET combines them with specialists, so it needs more.
    keep: usize,
}

/// The ring walk's state: candidates so far and how many stations cost a travel call.
struct StationLists {
    swaps: Vec<PowerUp>,
    charges: Vec<PowerUp>,
    examined: usize,
}

impl<'a> Search<'a> {
    fn new(idx: &'a IndexState, tr: &'a TrafficState, req: &'a Request) -> Self {
        let want_valet = req.wants(MODE_VALET);
        Search {
            idx,
            tr,
            req,
            now: req.now as f64,
            deadline: req.deadline as f64,
            want_valet,
            want_swap: req.wants(MODE_SWAP) || want_valet,
            want_charge: req.wants(MODE_CHARGE) || want_valet,
            keep: if want_valet { req.top_n * 2 } else { req.top_n },
        }
    }

    /// SWAP and CHARGE candidates (best first), walking fine rings then coarse rings outwards.
    fn stations(&self) -> (Vec<PowerUp>, Vec<PowerUp>) {
        let mut l = StationLists {
            swaps: Vec::new(),
            charges: Vec::new(),
            examined: 0,
        };
        let budget = self.req.drive_budget_wh();
        if (self.want_swap || self.want_charge) && budget >= 0.0 {
            let range_m = budget / self.req.consumption_wh_per_km * 1000.0;
            let bounds = self.service_lower_bounds();
            if !self.fine_rings(&mut l, range_m, bounds) {
                self.coarse_rings(&mut l, range_m, bounds);
            }
        }
        (l.swaps, l.charges)
    }

    /// The shortest swap and the fastest charge any station could offer (for the stopping rule).
    fn service_lower_bounds(&self) -> (f64, f64) {
        let (idx, req) = (self.idx, self.req);
        let min_swap = if idx.min_swap_time_s == u32::MAX {
            0.0
        } else {
            idx.min_swap_time_s as f64
        };
        // Charging can't be faster than from the current SOC at the highest power any connector has.
        let p_max = (idx.max_connector_power_w as f64).min(req.max_charge_power_w);
        let min_charge = charge_time_s(req.capacity_wh, req.soc as f64, req.target_soc as f64, p_max);
        (min_swap, min_charge)
    }

    /// (swap search done, charge search done) once nothing at distance >= lb can beat the lists.
    fn done(&self, lb: f64, l: &StationLists, (min_swap, min_charge): (f64, f64)) -> (bool, bool) {
        let req = self.req;
        let no_ready_pack = self.idx.ready_per_type[req.pack_type as usize] == 0;
        let eta_lb = self.now + self.tr.time_lower_bound(req.pos, lb, req.now);
        (
            !self.want_swap
                || no_ready_pack
                || eta_lb + min_swap > worst_finish(&l.swaps, self.keep).min(self.deadline),
            !self.want_charge || eta_lb + min_charge > worst_finish(&l.charges, self.keep).min(self.deadline),
        )
    }

    /// Phase 1: fine rings up to FINE_RINGS. True when the search finished before running out of rings.
    fn fine_rings(&self, l: &mut StationLists, range_m: f64, bounds: (f64, f64)) -> bool {
        let grid = &self.idx.station_grid;
        let center = grid.cell(self.req.pos);
        let max_r = grid.rings_for(center, self.req.pos.lat, range_m).min(FINE_RINGS);
        for r in 0..=max_r {
            let lb = grid.ring_lower_bound_m(self.req.pos.lat, r);
            let (sd, cd) = self.done(lb, l, bounds);
            if lb > range_m || l.examined >= MAX_STATION_CANDIDATES || (sd && cd) {
                return true;
            }
            grid.for_ring(center, r, |si| self.visit(si, l, sd, cd));
        }
        // Fewer rings than FINE_RINGS cover the whole range: the coarse phase has nothing to add.
        max_r < FINE_RINGS
    }

    /// Phase 2: coarse rings, skipping stations the fine rings already covered.
    fn coarse_rings(&self, l: &mut StationLists, range_m: f64, bounds: (f64, f64)) {
        let (grid, coarse, pos) = (&self.idx.station_grid, &self.idx.station_coarse, self.req.pos);
        let center = grid.cell(pos);
        let fine_lb = grid.ring_lower_bound_m(pos.lat, FINE_RINGS + 1);
        let c_center = coarse.cell(pos);
        let max_cr = coarse.rings_for(c_center, pos.lat, range_m);
        for r in 0..=max_cr {
            let lb = coarse.ring_lower_bound_m(pos.lat, r).max(fine_lb);
            let (sd, cd) = self.done(lb, l, bounds);
            if lb > range_m || l.examined >= MAX_STATION_CANDIDATES || (sd && cd) {
                break;
            }
            coarse.for_ring(c_center, r, |si| {
                let fc = grid.cell(self.idx.stations[si as usize].pos);
                if (fc.row - center.row).abs() <= FINE_RINGS && (fc.col - center.col).abs() <= FINE_RINGS {
                    return;
                }
                self.visit(si, l, sd, cd)
            });
        }
    }

    /// Visits one station: a resource check first (no travel call without a usable pack / connector).
    fn visit(&self, si: u32, l: &mut StationLists, swap_done: bool, charge_done: bool) {
        let st = &self.idx.stations[si as usize];
        if !self.req.vis.allows(st.operator) {
            return;
        }
        if st.kind == STATION_SWAP {
            if !swap_done {
                if let Some(o) = self.swap_at(si, &mut l.examined) {
                    push_top(&mut l.swaps, o, self.keep);
                }
            }
        } else if !charge_done && st.kind == STATION_CHARGING {
            if let Some(o) = self.charge_at(si, &mut l.examined) {
                push_top(&mut l.charges, o, self.keep);
            }
        }
    }

    /// The ready compatible pack with the highest (SOC, SOH) at a swap station.
    fn best_pack(&self, st: &Station) -> Option<u32> {
        let mut best: Option<u32> = None;
        for &pi in &st.packs {
            let p = &self.idx.packs[pi as usize];
            if p.state != PACK_READY || p.pack_type != self.req.pack_type || p.soc < self.req.target_soc {
                continue;
            }
            let better = match best {
                None => true,
                Some(b) => {
                    let q = &self.idx.packs[b as usize];
                    (p.soc, p.soh) > (q.soc, q.soh)
                }
            };
            if better {
                best = Some(pi);
            }
        }
        best
    }

    fn swap_at(&self, si: u32, examined: &mut usize) -> Option<PowerUp> {
        let (req, st) = (self.req, &self.idx.stations[si as usize]);
        let pi = self.best_pack(st)?;
        let p = &self.idx.packs[pi as usize];
        *examined += 1;
        let travel = self.tr.travel(req.pos, st.pos, req.now);
        if !req.reachable(travel.distance_m) {
            return None;
        }
        let arrival_soc = req.arrival_soc(travel.distance_m);
        let wait = (st.queue as f64 * st.swap_time_s as f64 / st.lanes.max(1) as f64).ceil();
        let service = st.swap_time_s as f64;
        let finish = self.now + travel.duration_s + wait + service;
        (finish <= self.deadline).then(|| PowerUp {
            mode: MODE_SWAP,
            service_mode: MODE_SWAP,
            station: Some(si),
            connector: None,
            pack: Some(pi),
            unit: None,
            eta_s: travel.duration_s,
            wait_s: wait,
            service_s: service,
            finish_at: finish,
            energy_wh: ((p.soc as f64 - arrival_soc).max(0.0)) * req.capacity_wh / 1000.0,
            distance_m: travel.distance_m,
            cost_proxy: travel.distance_m,
            resource_version: p.version,
            unit_version: 0,
        })
    }

    /// The available compatible connector with the highest power at a charging station.
    fn best_connector(&self, st: &Station) -> Option<u32> {
        let mut best: Option<u32> = None;
        for &ci in &st.connectors {
            let c = &self.idx.connectors[ci as usize];
            if c.status != CONN_AVAILABLE || self.req.connector_mask & (1u32 << c.standard) == 0 {
                continue;
            }
            if best.is_none_or(|b| c.max_power_w > self.idx.connectors[b as usize].max_power_w) {
                best = Some(ci);
            }
        }
        best
    }

    fn charge_at(&self, si: u32, examined: &mut usize) -> Option<PowerUp> {
        let (req, st) = (self.req, &self.idx.stations[si as usize]);
        let ci = self.best_connector(st)?;
        let c = &self.idx.connectors[ci as usize];
        *examined += 1;
        let travel = self.tr.travel(req.pos, st.pos, req.now);
        if !req.reachable(travel.distance_m) {
            return None;
        }
        let arrival_soc = req.arrival_soc(travel.distance_m);
        let power = (c.max_power_w as f64).min(req.max_charge_power_w);
        let target = req.target_soc as f64;
        let service = charge_time_s(req.capacity_wh, arrival_soc, target, power);
        let finish = self.now + travel.duration_s + service;
        (finish <= self.deadline).then(|| PowerUp {
            mode: MODE_CHARGE,
            service_mode: MODE_CHARGE,
            station: Some(si),
            connector: Some(ci),
            pack: None,
            unit: None,
            eta_s: travel.duration_s,
            wait_s: 0.0,
            service_s: service,
            finish_at: finish,
            energy_wh: (target - arrival_soc).max(0.0) * req.capacity_wh / 1000.0,
            distance_m: travel.distance_m,
            cost_proxy: travel.distance_m,
            resource_version: c.version,
            unit_version: 0,
        })
    }

    /// MOBILE_VAN: the nearest available vans with enough energy and a matching connector.
    fn vans(&self) -> Vec<PowerUp> {
        let req = self.req;
        let needed_wh = (req.target_soc as f64 - req.soc as f64).max(0.0) * req.capacity_wh / 1000.0;
        let mut list = Vec::new();
        if needed_wh <= 0.0 {
            return list;
        }
        let vans = self.idx.nearest_units(
            req.pos,
            MAX_UNIT_CANDIDATES,
            UNIT_RADIUS_M,
            Some(UNIT_VAN),
            Some(UNIT_AVAILABLE),
            &req.vis,
        );
        for (ui, _) in vans {
            let u = &self.idx.units[ui as usize];
            if u.connector_mask & req.connector_mask == 0
                || (u.energy_wh as f64) < needed_wh
                || u.power_w == 0
            {
                continue;
            }
            let start = self.now.max(u.busy_until as f64);
            let travel = self.tr.travel(u.pos, req.pos, start as i64);
            let power = (u.power_w as f64).min(req.max_charge_power_w);
            let service = charge_time_s(req.capacity_wh, req.soc as f64, req.target_soc as f64, power);
            let finish = start + travel.duration_s + service;
            if finish > self.deadline || !on_shift(u.shift_start, u.shift_end, start, finish) {
                continue;
            }
            let o = PowerUp {
                mode: MODE_MOBILE_VAN,
                service_mode: MODE_MOBILE_VAN,
                station: None,
                connector: None,
                pack: None,
                unit: Some(ui),
                eta_s: travel.duration_s,
                wait_s: start - self.now,
                service_s: service,
                finish_at: finish,
                energy_wh: needed_wh,
                distance_m: travel.distance_m,
                cost_proxy: travel.distance_m + LABOUR_M_PER_S * (travel.duration_s + service),
                resource_version: 0,
                unit_version: u.version,
            };
            push_top(&mut list, o, req.top_n);
        }
        list
    }

    /// Specialists on shift by their arrival at the car: (arrival, unit, travel s, travel m), best three.
    fn specialist_arrivals(&self) -> Vec<(f64, u32, f64, f64)> {
        let req = self.req;
        let specs = self.idx.nearest_units(
            req.pos,
            MAX_UNIT_CANDIDATES,
            UNIT_RADIUS_M,
            Some(UNIT_SPECIALIST),
            Some(UNIT_AVAILABLE),
            &req.vis,
        );
        let mut arrivals: Vec<(f64, u32, f64, f64)> = Vec::new();
        for (ui, _) in specs {
            let u = &self.idx.units[ui as usize];
            let start = self.now.max(u.busy_until as f64);
            if !on_shift(u.shift_start, u.shift_end, start, start) {
                continue;
            }
            let t = self.tr.travel(u.pos, req.pos, start as i64);
            arrivals.push((start + t.duration_s, ui, t.duration_s, t.distance_m));
        }
        arrivals.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        arrivals.truncate(3);
        arrivals
    }

    /// VALET: the earliest specialists combined with every station candidate, one option per station.
    fn valets(&self, swaps: &[PowerUp], charges: &[PowerUp]) -> Vec<PowerUp> {
        let mut list: Vec<PowerUp> = Vec::new();
        for (at_car, ui, spec_s, spec_m) in self.specialist_arrivals() {
            for c in swaps.iter().chain(charges.iter()) {
                if let Some(o) = self.valet(c, at_car, ui, spec_s, spec_m) {
                    if !list.iter().any(|x| x.station == o.station) {
                        push_top(&mut list, o, self.req.top_n);
                    }
                }
            }
        }
        list
    }

    /// Specialist `ui` reaches the car at `at_car`, drives it through station candidate `c` and back.
    fn valet(&self, c: &PowerUp, at_car: f64, ui: u32, spec_s: f64, spec_m: f64) -> Option<PowerUp> {
        let u = &self.idx.units[ui as usize];
        let st = &self.idx.stations[c.station.unwrap_or(0) as usize];
        let done_at = at_car + c.eta_s + c.wait_s + c.service_s;
        let back = self.tr.travel(st.pos, self.req.pos, done_at as i64);
        let finish = done_at + back.duration_s;
        if finish > self.deadline || !on_shift(u.shift_start, u.shift_end, at_car - spec_s, finish) {
            return None;
        }
        let labour = finish - (at_car - spec_s);
        Some(PowerUp {
            mode: MODE_VALET,
            service_mode: c.mode,
            station: c.station,
            connector: c.connector,
            pack: c.pack,
            unit: Some(ui),
            eta_s: spec_s,
            wait_s: (at_car - spec_s - self.now) + c.wait_s,
            service_s: c.eta_s + c.service_s + back.duration_s,
            finish_at: finish,
            energy_wh: c.energy_wh,
            distance_m: spec_m + c.distance_m + back.distance_m,
            cost_proxy: spec_m + c.distance_m + back.distance_m + LABOUR_M_PER_S * labour,
            resource_version: c.resource_version,
            unit_version: u.version,
        })
    }
}

// --- Python surface -------------------------------------------------------------------------------

fn opt_idx(v: Option<u32>) -> i64 {
    v.map(i64::from).unwrap_or(-1)
}

/// One ranked option (indices are -1 when not applicable).
#[pyclass(module = "voltcloud._core", frozen, get_all)]
#[derive(Clone)]
pub struct PowerUpOption {
    pub mode: u8,
    pub service_mode: u8,
    pub station: i64,
    pub connector: i64,
    pub pack: i64,
    pub unit: i64,
    pub eta_s: f64,
    pub wait_s: f64,
    pub service_s: f64,
    pub finish_at: f64,
    pub energy_wh: f64,
    pub distance_m: f64,
    pub cost_proxy: f64,
    pub resource_version: u64,
    pub unit_version: u64,
}

impl From<PowerUp> for PowerUpOption {
    fn from(o: PowerUp) -> Self {
        PowerUpOption {
            mode: o.mode,
            service_mode: o.service_mode,
            station: opt_idx(o.station),
            connector: opt_idx(o.connector),
            pack: opt_idx(o.pack),
            unit: opt_idx(o.unit),
            eta_s: o.eta_s,
            wait_s: o.wait_s,
            service_s: o.service_s,
            finish_at: o.finish_at,
            energy_wh: o.energy_wh,
            distance_m: o.distance_m,
            cost_proxy: o.cost_proxy,
            resource_version: o.resource_version,
            unit_version: o.unit_version,
        }
    }
}

#[pymethods]
impl PowerUpOption {
    fn __repr__(&self) -> String {
        format!(
            "PowerUpOption(mode={}, service_mode={}, station={}, connector={}, pack={}, unit={}, eta_s={:.0}, \
             wait_s={:.0}, service_s={:.0}, finish_at={:.0}, energy_wh={:.0}, distance_m={:.0})",
            self.mode,
            self.service_mode,
            self.station,
            self.connector,
            self.pack,
            self.unit,
            self.eta_s,
            self.wait_s,
            self.service_s,
            self.finish_at,
            self.energy_wh,
            self.distance_m
        )
    }
}

/// Answers power-up requests against a ResourceIndex and a TravelModel.
#[pyclass(module = "voltcloud._core", frozen)]
pub struct Options {
    index: Py<ResourceIndex>,
    traffic: Py<TravelModel>,
}

#[pymethods]
impl Options {
    #[new]
    fn py_new(index: Py<ResourceIndex>, traffic: Py<TravelModel>) -> Self {
        Options { index, traffic }
    }

    #[getter]
    fn index(&self, py: Python<'_>) -> Py<ResourceIndex> {
        self.index.clone_ref(py)
    }

    #[getter]
    fn traffic(&self, py: Python<'_>) -> Py<TravelModel> {
        self.traffic.clone_ref(py)
    }

    #[pyo3(signature = (lat, lng, soc_permille, usable_capacity_wh, consumption_wh_per_km, pack_type,
        connector_mask, target_soc_permille, modes_mask, deadline, now, operators = None,
        safety_margin_permille = 50, max_charge_power_w = 150_000.0, top_n = 3))]
    #[allow(clippy::too_many_arguments)]
    fn query(
        &self,
        py: Python<'_>,
        lat: f64,
        lng: f64,
        soc_permille: i64,
        usable_capacity_wh: f64,
        consumption_wh_per_km: f64,
        pack_type: i64,
        connector_mask: i64,
        target_soc_permille: i64,
        modes_mask: i64,
        deadline: i64,
        now: i64,
        operators: Option<Vec<i64>>,
        safety_margin_permille: i64,
        max_charge_power_w: f64,
        top_n: i64,
    ) -> PyResult<Vec<PowerUpOption>> {
        let operators = match operators {
            None => None,
            Some(v) => Some(
                v.into_iter()
                    .map(|o| small::<u32>(o, "operators"))
                    .collect::<CoreResult<Vec<u32>>>()?,
            ),
        };
        let req = Request {
            pos: LatLng::new(lat, lng)?,
            soc: small(soc_permille, "soc_permille")?,
            capacity_wh: usable_capacity_wh,
            consumption_wh_per_km,
            pack_type: small(pack_type, "pack_type")?,
            connector_mask: small(connector_mask, "connector_mask")?,
            target_soc: small(target_soc_permille, "target_soc_permille")?,
            modes_mask: small(modes_mask, "modes_mask")?,
            deadline,
            now,
            vis: Visibility::from_option(operators),
            margin_permille: small(safety_margin_permille, "safety_margin_permille")?,
            max_charge_power_w,
            top_n: small(top_n, "top_n")?,
        };
        let index = self.index.get();
        let traffic = self.traffic.get();
        let out = without_gil(py, || {
            let idx = index.state.read();
            let tr = traffic.state.read();
            compute_options(&idx, &tr, &req)
        })?;
        Ok(out.into_iter().map(PowerUpOption::from).collect())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PowerUpOption>()?;
    m.add_class::<Options>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::haversine_m;
    use crate::index::tests::small_world;
    use crate::index::UnitRows;
    use proptest::prelude::*;

    const NOW: i64 = 1_795_240_800; // 2026-11-21 06:00 UTC (14:00 Shanghai)

    fn req(lat: f64, lng: f64, soc: u16) -> Request {
        Request {
            pos: LatLng::new(lat, lng).unwrap(),
            soc,
            capacity_wh: 75_000.0,
            consumption_wh_per_km: 180.0,
            pack_type: 7,
            connector_mask: 1 << 3 | 1 << 1,
            target_soc: 900,
            modes_mask: MODES_MASK_ALL,
            deadline: NOW + 6 * 3600,
            now: NOW,
            vis: Visibility::All,
            margin_permille: 50,
            max_charge_power_w: 150_000.0,
            top_n: 3,
        }
    }

    fn traffic() -> TrafficState {
        TrafficState::new(1000.0, 1.3, 8 * 3600, 1000.0).unwrap()
    }

    #[test]
    fn charge_curve_is_monotone_and_tapers() {
        let a = charge_time_s(75_000.0, 200.0, 800.0, 100_000.0);
        assert!((a - 0.6 * 75_000.0 / 100_000.0 * 3600.0).abs() < 1e-6);
        let b = charge_time_s(75_000.0, 800.0, 900.0, 100_000.0);
        assert!(b > 0.1 * 75_000.0 / 100_000.0 * 3600.0, "taper is slower than CC");
        assert_eq!(charge_time_s(75_000.0, 900.0, 800.0, 100_000.0), 0.0);
        assert!(charge_time_s(75_000.0, 0.0, 1000.0, 100_000.0).is_finite());
    }

    #[test]
    fn all_modes_are_offered_in_shanghai() {
        let idx = small_world();
        let tr = traffic();
        let out = compute_options(&idx, &tr, &req(31.231, 121.471, 300)).unwrap();
        let modes: std::collections::BTreeSet<u8> = out.iter().map(|o| o.mode).collect();
        assert_eq!(
            modes.into_iter().collect::<Vec<_>>(),
            vec![1, 2, 3, 4],
            "{out:#?}"
        );
        for w in out.windows(2) {
            assert!(w[0].finish_at <= w[1].finish_at);
        }
        let swap = out.iter().find(|o| o.mode == MODE_SWAP).unwrap();
        assert_eq!(swap.pack, Some(1), "highest-SOC ready pack of type 7");
        let charge = out.iter().find(|o| o.mode == MODE_CHARGE).unwrap();
        assert_eq!(
            charge.connector,
            Some(0),
            "the occupied 250 kW connector is not offered"
        );
        // Visibility: operator 2 only sees station 1 (its only pack is quarantined) and station 3 (occupied).
        let mut r = req(31.231, 121.471, 300);
        r.vis = Visibility::from_option(Some(vec![2]));
        r.modes_mask = 1 << MODE_SWAP | 1 << MODE_CHARGE;
        assert!(compute_options(&idx, &tr, &r).unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_requests() {
        let idx = small_world();
        let tr = traffic();
        for f in [
            |r: &mut Request| r.soc = 1001,
            |r: &mut Request| r.capacity_wh = f64::NAN,
            |r: &mut Request| r.consumption_wh_per_km = -1.0,
            |r: &mut Request| r.modes_mask = 1,
            |r: &mut Request| r.deadline = r.now - 1,
            |r: &mut Request| r.top_n = 0,
        ] {
            let mut r = req(31.2, 121.4, 500);
            f(&mut r);
            assert!(matches!(
                compute_options(&idx, &tr, &r),
                Err(CoreError::InvalidInput { .. })
            ));
        }
    }

    #[test]
    fn empty_battery_gets_only_a_van() {
        let idx = small_world();
        let mut r = req(31.231, 121.471, 40);
        r.target_soc = 800; // 57 kWh: the van carries 60 kWh
        let out = compute_options(&idx, &traffic(), &r).unwrap();
        assert!(out.iter().all(|o| o.mode == MODE_MOBILE_VAN), "{out:#?}");
        assert_eq!(out.len(), 1);
    }

    fn random_world(seed: &[(f64, f64, u8, u16, u8)]) -> IndexState {
        let mut s = IndexState::new(2000.0).unwrap();
        let n = seed.len();
        let kinds: Vec<u8> = seed.iter().map(|x| x.2).collect();
        s.load_stations(
            &(0..n as u64).collect::<Vec<_>>(),
            &kinds,
            &vec![1; n],
            &seed.iter().map(|x| x.0).collect::<Vec<_>>(),
            &seed.iter().map(|x| x.1).collect::<Vec<_>>(),
            &vec![2; n],
            &seed.iter().map(|x| 120 + x.3 as u32 % 300).collect::<Vec<_>>(),
        )
        .unwrap();
        for (i, x) in seed.iter().enumerate() {
            if x.2 == STATION_SWAP {
                s.load_packs(
                    &[i as i64, i as i64],
                    &[7, 7],
                    &[x.3 % 1001, 1000],
                    &[900, 900],
                    &[10, 10],
                    &[x.4, 3],
                )
                .unwrap();
            } else {
                s.load_connectors(
                    &[i as u32],
                    &[1 + x.4 % 5],
                    &[50_000 + x.3 as u32 * 100],
                    &[1 + x.4 % 3],
                )
                .unwrap();
            }
        }
        s.load_mobile(&UnitRows {
            ids: vec![1, 2],
            kind: vec![UNIT_VAN, UNIT_SPECIALIST],
            operator: vec![1, 1],
            lat: vec![31.0, 31.1],
            lng: vec![121.0, 121.1],
            status: vec![1, 1],
            energy_wh: vec![30_000, 0],
            power_w: vec![30_000, 0],
            connector_mask: vec![1 << 3, 0],
            skills: vec![0, 0],
            shift_start: vec![i64::MIN; 2],
            shift_end: vec![i64::MAX; 2],
        })
        .unwrap();
        s
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn options_are_reachable_compatible_and_optimal(
            seed in proptest::collection::vec((30.0f64..32.0, 120.0f64..122.0, 1u8..3, 0u16..1001, 1u8..8), 1..120),
            car in (30.0f64..32.0, 120.0f64..122.0),
            soc in 0u16..1001,
            target in 500u16..1001,
            cons in 100.0f64..400.0,
        ) {
            let idx = random_world(&seed);
            let tr = traffic();
            let mut r = req(car.0, car.1, soc);
            r.target_soc = target;
            r.consumption_wh_per_km = cons;
            r.deadline = NOW + 48 * 3600;
            let out = compute_options(&idx, &tr, &r).unwrap();
            for o in &out {
                if let Some(s) = o.station {
                    let st = &idx.stations[s as usize];
                    let t = tr.travel(r.pos, st.pos, r.now);
                    prop_assert!(r.reachable(t.distance_m), "unreachable station {s}: {o:?}");
                    prop_assert!(t.distance_m / 1000.0 * cons <= (soc as f64 - 50.0) * 75.0 + 1e-6);
                }
                if let Some(p) = o.pack {
                    let p = &idx.packs[p as usize];
                    prop_assert!(p.state == PACK_READY && p.pack_type == 7 && p.soc >= target);
                }
                if let Some(c) = o.connector {
                    let c = &idx.connectors[c as usize];
                    prop_assert!(c.status == CONN_AVAILABLE && r.connector_mask & (1 << c.standard) != 0);
                }
                if o.mode == MODE_MOBILE_VAN {
                    let u = &idx.units[o.unit.unwrap() as usize];
                    prop_assert!(u.energy_wh as f64 >= o.energy_wh);
                }
                prop_assert!(o.finish_at <= r.deadline as f64);
            }
            // The ring search finds the same best swap as a full scan.
            let best_scan = idx.stations.iter().enumerate().filter(|(_, st)| st.kind == STATION_SWAP).filter_map(|(_, st)| {
                let t = tr.travel(r.pos, st.pos, r.now);
                if !r.reachable(t.distance_m) { return None; }
                let ok = st.packs.iter().any(|&p| { let p = &idx.packs[p as usize]; p.state == PACK_READY && p.pack_type == 7 && p.soc >= target });
                if !ok { return None; }
                Some(r.now as f64 + t.duration_s + (st.queue as f64 * st.swap_time_s as f64 / st.lanes as f64).ceil() + st.swap_time_s as f64)
            }).fold(f64::INFINITY, f64::min);
            let best_found = out.iter().filter(|o| o.mode == MODE_SWAP).map(|o| o.finish_at).fold(f64::INFINITY, f64::min);
            prop_assert!((best_scan - best_found).abs() < 1e-6 || (best_scan.is_infinite() && best_found.is_infinite()),
                "scan {best_scan} vs ring {best_found}");
            let _ = haversine_m;
        }
    }
}
