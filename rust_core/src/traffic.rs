//! Travel-time model: road classes with 96 × 15-minute speed profiles, a detour factor from straight
//! line to road distance, a road class per grid cell (default urban), a live congestion overlay per cell
//! with expiry, and an optional road graph answered by bidirectional Dijkstra (see docs/engine.md for the
//! edge-list format and why not contraction hierarchies). Without a graph, or when a point is farther than
//! `snap_radius_m` from any node, the geometric model answers.
//!
//! Invariant used by the option search: every travel time is at least
//! `straight_line_m / max_speed_mps(depart)`, and every road distance is at least the straight line.

use crate::columns::{column, same_len};
use crate::errors::{finite, CoreError, CoreResult};
use crate::geo::{cell_from_id, cell_id, haversine_m, Cell, LatLng};
use crate::gil::without_gil;
use crate::index::{FastMap, Grid, IndexState};
use numpy::PyArray1;
use parking_lot::RwLock;
use pyo3::prelude::*;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

pub const ROAD_CLASSES: usize = 4;
pub const SLOTS: usize = 96;
pub const CLASS_MOTORWAY: u8 = 0;
pub const CLASS_ARTERIAL: u8 = 1;
pub const CLASS_URBAN: u8 = 2;
/// Length of the first and last legs driven on the road class of the origin / destination cell.
const ACCESS_LEG_M: f64 = 2_000.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Travel {
    pub distance_m: f64,
    pub duration_s: f64,
    pub via_graph: bool,
}

#[derive(Debug, Clone)]
pub struct RoadGraph {
    pub node_pos: Vec<LatLng>,
    pub e_from: Vec<u32>,
    pub e_to: Vec<u32>,
    pub e_len: Vec<f64>,
    pub e_class: Vec<u8>,
    /// Congestion cell of each edge (the cell of its tail node).
    pub e_cell: Vec<Cell>,
    fwd_off: Vec<u32>,
    fwd: Vec<u32>,
    bwd_off: Vec<u32>,
    bwd: Vec<u32>,
    node_grid: Grid,
}

#[derive(Debug, Clone)]
pub struct TrafficState {
    pub cell_size_m: f64,
    pub detour: f64,
    pub utc_offset_s: i64,
    pub snap_radius_m: f64,
    /// km/h per road class and 15-minute slot of the local day.
    pub profiles: [[f64; SLOTS]; ROAD_CLASSES],
    pub cell_class: FastMap<Cell, u8>,
    pub congestion: FastMap<Cell, (f64, i64)>,
    pub graph: Option<RoadGraph>,
}

fn default_profile(free_kmh: f64, rush: f64) -> [f64; SLOTS] {
    let mut p = [free_kmh; SLOTS];
    for (slot, v) in p.iter_mut().enumerate() {
        let h = slot as f64 / 4.0;
        if (7.0..9.5).contains(&h) || (17.0..19.5).contains(&h) {
            *v = free_kmh * rush;
        } else if !(6.0..22.0).contains(&h) {
            *v = free_kmh * 1.1;
        }
    }
    p
}

#[derive(Copy, Clone, PartialEq)]
struct HeapItem(f64, u32);
impl Eq for HeapItem {}
impl Ord for HeapItem {
    fn cmp(&self, o: &Self) -> Ordering {
        o.0.total_cmp(&self.0).then(o.1.cmp(&self.1))
    }
}
impl PartialOrd for HeapItem {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl TrafficState {
    pub fn new(cell_size_m: f64, detour: f64, utc_offset_s: i64, snap_radius_m: f64) -> CoreResult<Self> {
        let cell_size_m = finite("cell_size_m", cell_size_m)?;
        if !(100.0..=100_000.0).contains(&cell_size_m) {
            return Err(CoreError::invalid("cell_size_m", "must be within [100, 100000]"));
        }
        let detour = finite("detour_factor", detour)?;
        if !(1.0..=5.0).contains(&detour) {
            return Err(CoreError::invalid("detour_factor", "must be within [1, 5]"));
        }
        if !(-14 * 3600..=14 * 3600).contains(&utc_offset_s) {
            return Err(CoreError::invalid("utc_offset_s", "must be within ±14 h"));
        }
        let snap = finite("snap_radius_m", snap_radius_m)?;
        if !(0.0..=50_000.0).contains(&snap) {
            return Err(CoreError::invalid("snap_radius_m", "must be within [0, 50000]"));
        }
        Ok(TrafficState {
            cell_size_m,
            detour,
            utc_offset_s,
            snap_radius_m: snap,
            profiles: [
                default_profile(100.0, 0.6),
                default_profile(50.0, 0.55),
                default_profile(30.0, 0.5),
                default_profile(20.0, 0.6),
            ],
            cell_class: FastMap::default(),
            congestion: FastMap::default(),
            graph: None,
        })
    }

    pub fn cell(&self, p: LatLng) -> Cell {
        crate::geo::cell_of(p, self.cell_size_m)
    }

    pub fn slot(&self, t: i64) -> usize {
        ((t.saturating_add(self.utc_offset_s)).rem_euclid(86_400) / 900) as usize
    }

    #[inline]
    pub fn speed_mps(&self, class: u8, slot: usize) -> f64 {
        self.profiles[(class as usize).min(ROAD_CLASSES - 1)][slot] / 3.6
    }

    /// The fastest speed any segment can have when departing at `t` (congestion only slows down).
    pub fn max_speed_mps(&self, t: i64) -> f64 {
        let slot = self.slot(t);
        (0..ROAD_CLASSES as u8)
            .map(|c| self.speed_mps(c, slot))
            .fold(0.0, f64::max)
    }

    /// A lower bound of `travel(origin, x, depart).duration_s` for every `x` at least `straight_m` away
    /// (great-circle): the first access leg at the origin cell's speed, the rest at the fastest speed,
    /// both over the detour-stretched distance (without a graph; with one, the plain straight line).
    pub fn time_lower_bound(&self, origin: LatLng, straight_m: f64, depart: i64) -> f64 {
        let vmax = self.max_speed_mps(depart);
        if self.graph.is_some() {
            return straight_m / vmax;
        }
        let d = straight_m * self.detour;
        let near = (d / 2.0).min(ACCESS_LEG_M);
        let c = self.cell(origin);
        let slot = self.slot(depart);
        near / self.speed_mps(self.class_at(c), slot) * self.congestion_at(c, depart) + (d - near) / vmax
    }

    pub fn class_at(&self, c: Cell) -> u8 {
        *self.cell_class.get(&c).unwrap_or(&CLASS_URBAN)
    }

    /// Travel-time multiplier (≥ 1) in a cell at time `t`; expired entries count as 1.
    pub fn congestion_at(&self, c: Cell, t: i64) -> f64 {
        match self.congestion.get(&c) {
            Some(&(f, exp)) if exp > t => f,
            _ => 1.0,
        }
    }

    pub fn set_speed_profile(&mut self, class: u8, kmh: &[f64]) -> CoreResult<()> {
        if class as usize >= ROAD_CLASSES {
            return Err(CoreError::invalid(
                "road_class",
                format!("{class} is not a road class (0..=3)"),
            ));
        }
        if kmh.len() != 24 && kmh.len() != SLOTS {
            return Err(CoreError::invalid(
                "speeds_kmh",
                format!("needs 24 or 96 values, got {}", kmh.len()),
            ));
        }
        for (i, v) in kmh.iter().enumerate() {
            let v = finite("speeds_kmh", *v)?;
            if !(1.0..=200.0).contains(&v) {
                return Err(CoreError::invalid(
                    "speeds_kmh",
                    format!("[{i}] = {v} is outside [1, 200] km/h"),
                ));
            }
        }
        let per = SLOTS / kmh.len();
        for s in 0..SLOTS {
            self.profiles[class as usize][s] = kmh[s / per];
        }
        Ok(())
    }

    pub fn set_cell_classes(&mut self, cells: &[u64], classes: &[u8]) -> CoreResult<()> {
        same_len(&[("cells", cells.len()), ("classes", classes.len())])?;
        if let Some(i) = classes.iter().position(|&c| c as usize >= ROAD_CLASSES) {
            return Err(CoreError::invalid(
                "classes",
                format!("[{i}] = {} is not a road class", classes[i]),
            ));
        }
        for (&c, &k) in cells.iter().zip(classes) {
            self.cell_class.insert(cell_from_id(c), k);
        }
        Ok(())
    }

    pub fn set_congestion(&mut self, cells: &[u64], factors: &[f64], expires_at: i64) -> CoreResult<()> {
        same_len(&[("cells", cells.len()), ("factors", factors.len())])?;
        for (i, f) in factors.iter().enumerate() {
            if !f.is_finite() || !(1.0..=20.0).contains(f) {
                return Err(CoreError::invalid(
                    "factors",
                    format!("[{i}] = {f} is outside [1, 20]"),
                ));
            }
        }
        for (&c, &f) in cells.iter().zip(factors) {
            self.congestion.insert(cell_from_id(c), (f, expires_at));
        }
        Ok(())
    }

    pub fn purge_expired(&mut self, now: i64) -> usize {
        let before = self.congestion.len();
        self.congestion.retain(|_, v| v.1 > now);
        before - self.congestion.len()
    }

    /// The straight-line model: road distance = detour × great-circle; the first and last
    /// `ACCESS_LEG_M` at the road class of the end cells, the middle on motorway (> 30 km),
    /// arterial (> 8 km) or the class of the midpoint cell; each leg slowed by its cell's congestion.
    pub fn geometric(&self, a: LatLng, b: LatLng, depart: i64) -> Travel {
        let d = haversine_m(a, b) * self.detour;
        let slot = self.slot(depart);
        let near = (d / 2.0).min(ACCESS_LEG_M);
        let mid = d - 2.0 * near;
        let (ca, cb) = (self.cell(a), self.cell(b));
        let mut t = near / self.speed_mps(self.class_at(ca), slot) * self.congestion_at(ca, depart)
            + near / self.speed_mps(self.class_at(cb), slot) * self.congestion_at(cb, depart);
        if mid > 0.0 {
            let m = LatLng {
                lat: (a.lat + b.lat) / 2.0,
                lng: (a.lng + b.lng) / 2.0,
            };
            let cm = self.cell(m);
            let class = if d > 30_000.0 {
                CLASS_MOTORWAY
            } else if d > 8_000.0 {
                CLASS_ARTERIAL
            } else {
                self.class_at(cm)
            };
            t += mid / self.speed_mps(class, slot) * self.congestion_at(cm, depart);
        }
        Travel {
            distance_m: d,
            duration_s: t,
            via_graph: false,
        }
    }

    /// Graph answer when both ends snap to the graph, the geometric one otherwise.
    pub fn travel(&self, a: LatLng, b: LatLng, depart: i64) -> Travel {
        if let Some(g) = &self.graph {
            if let (Some((na, da)), Some((nb, db))) =
                (g.snap(a, self.snap_radius_m), g.snap(b, self.snap_radius_m))
            {
                if let Some((t, m)) = g.shortest(self, na, nb, depart) {
                    let la = self.geometric(a, g.node_pos[na as usize], depart);
                    let lb = self.geometric(g.node_pos[nb as usize], b, depart);
                    let _ = (da, db);
                    return Travel {
                        distance_m: m + la.distance_m + lb.distance_m,
                        duration_s: t + la.duration_s + lb.duration_s,
                        via_graph: true,
                    };
                }
            }
        }
        self.geometric(a, b, depart)
    }

    pub fn load_graph(
        &mut self,
        lat: &[f64],
        lng: &[f64],
        from: &[u32],
        to: &[u32],
        length_m: &[f64],
        class: &[u8],
    ) -> CoreResult<usize> {
        let n = same_len(&[("node_lat", lat.len()), ("node_lng", lng.len())])?;
        let m = same_len(&[
            ("from_node", from.len()),
            ("to_node", to.len()),
            ("length_m", length_m.len()),
            ("road_class", class.len()),
        ])?;
        if n == 0 || n > u32::MAX as usize - 1 {
            return Err(CoreError::invalid("node_lat", "a graph needs at least one node"));
        }
        let node_pos: Vec<LatLng> = lat
            .iter()
            .zip(lng)
            .enumerate()
            .map(|(i, (&a, &b))| {
                LatLng::new(a, b).map_err(|e| CoreError::invalid(format!("node[{i}]"), e.to_string()))
            })
            .collect::<CoreResult<_>>()?;
        let mut lengths = length_m.to_vec();
        for i in 0..m {
            let (f, t) = (from[i] as usize, to[i] as usize);
            if f >= n || t >= n {
                return Err(CoreError::invalid(
                    "from_node",
                    format!("edge [{i}] refers to a node >= {n}"),
                ));
            }
            if class[i] as usize >= ROAD_CLASSES {
                return Err(CoreError::invalid(
                    "road_class",
                    format!("edge [{i}] has class {}", class[i]),
                ));
            }
            let len = finite("length_m", length_m[i])?;
            let straight = haversine_m(node_pos[f], node_pos[t]);
            if !(0.0..=1.0e7).contains(&len) || len + 1.0 < straight * 0.999 {
                return Err(CoreError::invalid(
                    "length_m",
                    format!(
                        "edge [{i}] is {len} m, shorter than the {straight:.0} m straight line or negative"
                    ),
                ));
            }
            // Rounding in the source data: lift to the straight line so road >= great-circle holds.
            lengths[i] = len.max(straight);
        }
        let csr = |key: &[u32]| -> (Vec<u32>, Vec<u32>) {
            let mut off = vec![0u32; n + 1];
            for &k in key {
                off[k as usize + 1] += 1;
            }
            for i in 0..n {
                off[i + 1] += off[i];
            }
            let mut pos = off.clone();
            let mut ids = vec![0u32; key.len()];
            for (e, &k) in key.iter().enumerate() {
                ids[pos[k as usize] as usize] = e as u32;
                pos[k as usize] += 1;
            }
            (off, ids)
        };
        let (fwd_off, fwd) = csr(from);
        let (bwd_off, bwd) = csr(to);
        let mut node_grid = Grid::new(self.snap_radius_m.max(200.0));
        for (i, p) in node_pos.iter().enumerate() {
            let c = node_grid.cell(*p);
            node_grid.insert(c, i as u32);
        }
        let e_cell = from.iter().map(|&f| self.cell(node_pos[f as usize])).collect();
        self.graph = Some(RoadGraph {
            node_pos,
            e_from: from.to_vec(),
            e_to: to.to_vec(),
            e_len: lengths,
            e_class: class.to_vec(),
            e_cell,
            fwd_off,
            fwd,
            bwd_off,
            bwd,
            node_grid,
        });
        Ok(m)
    }
}

impl RoadGraph {
    pub fn snap(&self, p: LatLng, radius_m: f64) -> Option<(u32, f64)> {
        IndexState::nearest_in(
            &self.node_grid,
            |i| self.node_pos[i as usize],
            p,
            1,
            radius_m,
            |_| true,
        )
        .first()
        .copied()
    }

    fn edge_time(&self, t: &TrafficState, e: usize, slot: usize, depart: i64) -> f64 {
        self.e_len[e] / t.speed_mps(self.e_class[e], slot) * t.congestion_at(self.e_cell[e], depart)
    }

    /// Bidirectional Dijkstra on travel time at the departure slot; returns (seconds, metres).
    pub fn shortest(&self, t: &TrafficState, s: u32, g: u32, depart: i64) -> Option<(f64, f64)> {
        if s == g {
            return Some((0.0, 0.0));
        }
        let slot = t.slot(depart);
        // (time, metres, settled)
        let mut dist: [FastMap<u32, (f64, f64, bool)>; 2] = [FastMap::default(), FastMap::default()];
        let mut heap: [BinaryHeap<HeapItem>; 2] = [BinaryHeap::new(), BinaryHeap::new()];
        dist[0].insert(s, (0.0, 0.0, false));
        dist[1].insert(g, (0.0, 0.0, false));
        heap[0].push(HeapItem(0.0, s));
        heap[1].push(HeapItem(0.0, g));
        let mut best = (f64::INFINITY, f64::INFINITY);
        loop {
            let top = |h: &BinaryHeap<HeapItem>| h.peek().map(|x| x.0).unwrap_or(f64::INFINITY);
            let (tf, tb) = (top(&heap[0]), top(&heap[1]));
            if tf + tb >= best.0 || (tf.is_infinite() && tb.is_infinite()) {
                break;
            }
            let side = if tf <= tb { 0 } else { 1 };
            let HeapItem(d, u) = heap[side].pop()?;
            let entry = dist[side].get_mut(&u)?;
            if entry.2 || d > entry.0 {
                continue;
            }
            entry.2 = true;
            let um = entry.1;
            let (off, ids) = if side == 0 {
                (&self.fwd_off, &self.fwd)
            } else {
                (&self.bwd_off, &self.bwd)
            };
            for &e in &ids[off[u as usize] as usize..off[u as usize + 1] as usize] {
                let e = e as usize;
                let v = if side == 0 { self.e_to[e] } else { self.e_from[e] };
                let nd = d + self.edge_time(t, e, slot, depart);
                let nm = um + self.e_len[e];
                let slot_v = dist[side].entry(v).or_insert((f64::INFINITY, 0.0, false));
                if nd < slot_v.0 && !slot_v.2 {
                    *slot_v = (nd, nm, false);
                    heap[side].push(HeapItem(nd, v));
                }
                if let Some(o) = dist[1 - side].get(&v) {
                    if nd + o.0 < best.0 {
                        best = (nd + o.0, nm + o.1);
                    }
                }
            }
        }
        if best.0.is_finite() {
            Some(best)
        } else {
            None
        }
    }
}

type ArrayPair<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>);

// --- Python surface -------------------------------------------------------------------------------

/// Travel-time model with speed profiles, congestion overlay and an optional road graph.
#[pyclass(module = "voltcloud._core", frozen)]
pub struct TravelModel {
    pub state: RwLock<TrafficState>,
}

#[pymethods]
impl TravelModel {
    #[new]
    #[pyo3(signature = (cell_size_m = 1000.0, detour_factor = 1.3, utc_offset_s = 28_800, snap_radius_m = 1000.0))]
    fn py_new(cell_size_m: f64, detour_factor: f64, utc_offset_s: i64, snap_radius_m: f64) -> PyResult<Self> {
        Ok(TravelModel {
            state: RwLock::new(TrafficState::new(
                cell_size_m,
                detour_factor,
                utc_offset_s,
                snap_radius_m,
            )?),
        })
    }

    #[getter]
    fn cell_size_m(&self) -> f64 {
        self.state.read().cell_size_m
    }

    #[getter]
    fn has_graph(&self) -> bool {
        self.state.read().graph.is_some()
    }

    /// The congestion/road-class cell id of a point (same as `cell_index(lat, lng, cell_size_m)`).
    fn cell_of(&self, lat: f64, lng: f64) -> PyResult<u64> {
        let p = LatLng::new(lat, lng)?;
        Ok(cell_id(self.state.read().cell(p)))
    }

    fn set_speed_profile(&self, road_class: u8, speeds_kmh: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = column::<f64>(speeds_kmh, "speeds_kmh")?;
        Ok(self.state.write().set_speed_profile(road_class, &v)?)
    }

    fn speed_profile<'py>(&self, py: Python<'py>, road_class: u8) -> PyResult<Bound<'py, PyArray1<f64>>> {
        if road_class as usize >= ROAD_CLASSES {
            return Err(CoreError::invalid("road_class", format!("{road_class} is not a road class")).into());
        }
        Ok(PyArray1::from_slice(
            py,
            &self.state.read().profiles[road_class as usize],
        ))
    }

    fn set_cell_classes(&self, cells: &Bound<'_, PyAny>, classes: &Bound<'_, PyAny>) -> PyResult<()> {
        let c = column::<u64>(cells, "cells")?;
        let k = column::<u8>(classes, "classes")?;
        Ok(self.state.write().set_cell_classes(&c, &k)?)
    }

    fn set_congestion(
        &self,
        cells: &Bound<'_, PyAny>,
        factors: &Bound<'_, PyAny>,
        expires_at: i64,
    ) -> PyResult<()> {
        let c = column::<u64>(cells, "cells")?;
        let f = column::<f64>(factors, "factors")?;
        Ok(self.state.write().set_congestion(&c, &f, expires_at)?)
    }

    fn purge_expired(&self, now: i64) -> usize {
        self.state.write().purge_expired(now)
    }

    fn congestion_at(&self, lat: f64, lng: f64, at: i64) -> PyResult<f64> {
        let p = LatLng::new(lat, lng)?;
        let s = self.state.read();
        Ok(s.congestion_at(s.cell(p), at))
    }

    #[allow(clippy::too_many_arguments)]
    fn load_graph(
        &self,
        py: Python<'_>,
        node_lat: &Bound<'_, PyAny>,
        node_lng: &Bound<'_, PyAny>,
        from_node: &Bound<'_, PyAny>,
        to_node: &Bound<'_, PyAny>,
        length_m: &Bound<'_, PyAny>,
        road_class: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let lat = column::<f64>(node_lat, "node_lat")?;
        let lng = column::<f64>(node_lng, "node_lng")?;
        let f = column::<u32>(from_node, "from_node")?;
        let t = column::<u32>(to_node, "to_node")?;
        let l = column::<f64>(length_m, "length_m")?;
        let c = column::<u8>(road_class, "road_class")?;
        Ok(without_gil(py, || {
            self.state.write().load_graph(&lat, &lng, &f, &t, &l, &c)
        })?)
    }

    fn clear_graph(&self) {
        self.state.write().graph = None;
    }

    /// (road distance m, duration s, answered by the graph) from one point to another.
    fn travel(
        &self,
        py: Python<'_>,
        lat1: f64,
        lng1: f64,
        lat2: f64,
        lng2: f64,
        depart_at: i64,
    ) -> PyResult<(f64, f64, bool)> {
        let (a, b) = (LatLng::new(lat1, lng1)?, LatLng::new(lat2, lng2)?);
        let t = without_gil(py, || self.state.read().travel(a, b, depart_at));
        Ok((t.distance_m, t.duration_s, t.via_graph))
    }

    /// Element-wise travel for arrays of origins and destinations: (distances m, durations s).
    #[allow(clippy::too_many_arguments)]
    fn travel_many<'py>(
        &self,
        py: Python<'py>,
        lat1: &Bound<'py, PyAny>,
        lng1: &Bound<'py, PyAny>,
        lat2: &Bound<'py, PyAny>,
        lng2: &Bound<'py, PyAny>,
        depart_at: i64,
    ) -> PyResult<ArrayPair<'py>> {
        let a1 = column::<f64>(lat1, "lat1")?;
        let o1 = column::<f64>(lng1, "lng1")?;
        let a2 = column::<f64>(lat2, "lat2")?;
        let o2 = column::<f64>(lng2, "lng2")?;
        let n = same_len(&[
            ("lat1", a1.len()),
            ("lng1", o1.len()),
            ("lat2", a2.len()),
            ("lng2", o2.len()),
        ])?;
        let mut pts = Vec::with_capacity(n);
        for i in 0..n {
            let a = LatLng::new(a1[i], o1[i])
                .map_err(|e| CoreError::invalid(format!("origin[{i}]"), e.to_string()))?;
            let b = LatLng::new(a2[i], o2[i])
                .map_err(|e| CoreError::invalid(format!("destination[{i}]"), e.to_string()))?;
            pts.push((a, b));
        }
        let (d, t): (Vec<f64>, Vec<f64>) = without_gil(py, || {
            let s = self.state.read();
            pts.iter()
                .map(|&(a, b)| {
                    let r = s.travel(a, b, depart_at);
                    (r.distance_m, r.duration_s)
                })
                .unzip()
        });
        Ok((PyArray1::from_vec(py, d), PyArray1::from_vec(py, t)))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TravelModel>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn model() -> TrafficState {
        TrafficState::new(1000.0, 1.3, 8 * 3600, 1000.0).unwrap()
    }

    #[test]
    fn rush_hour_is_slower_and_congestion_expires() {
        let mut m = model();
        let a = LatLng::new(31.20, 121.40).unwrap();
        let b = LatLng::new(31.25, 121.50).unwrap();
        // 2026-11-21 00:00 UTC = 08:00 Shanghai (rush); 06:00 UTC = 14:00.
        let rush = 1_795_219_200;
        let noon = rush + 6 * 3600;
        assert!(m.geometric(a, b, rush).duration_s > m.geometric(a, b, noon).duration_s);
        let before = m.geometric(a, b, noon).duration_s;
        let ca = cell_id(m.cell(a));
        m.set_congestion(&[ca], &[3.0], noon + 600).unwrap();
        assert!(m.geometric(a, b, noon).duration_s > before);
        assert!((m.geometric(a, b, noon + 600).duration_s - before).abs() < 1e-9);
        assert!(m.set_congestion(&[ca], &[f64::NAN], 0).is_err());
        assert!(m.set_congestion(&[ca], &[0.5], 0).is_err());
        assert!(m.set_congestion(&[ca, 1], &[2.0], 0).is_err());
        assert_eq!(m.purge_expired(noon + 601), 1);
    }

    fn grid_graph(m: &mut TrafficState, k: usize) {
        // k × k grid, 0.01° apart, bidirectional edges, class by row.
        let (mut lat, mut lng, mut f, mut t, mut l, mut c) = (vec![], vec![], vec![], vec![], vec![], vec![]);
        for i in 0..k {
            for j in 0..k {
                lat.push(31.0 + i as f64 * 0.01);
                lng.push(121.0 + j as f64 * 0.01);
            }
        }
        let pos: Vec<LatLng> = lat
            .iter()
            .zip(&lng)
            .map(|(&a, &b)| LatLng::new(a, b).unwrap())
            .collect();
        for i in 0..k {
            for j in 0..k {
                let u = (i * k + j) as u32;
                for (di, dj) in [(0, 1), (1, 0)] {
                    if i + di < k && j + dj < k {
                        let v = ((i + di) * k + j + dj) as u32;
                        let d = haversine_m(pos[u as usize], pos[v as usize]) * 1.1;
                        for (x, y) in [(u, v), (v, u)] {
                            f.push(x);
                            t.push(y);
                            l.push(d);
                            c.push((i % 4) as u8);
                        }
                    }
                }
            }
        }
        m.load_graph(&lat, &lng, &f, &t, &l, &c).unwrap();
    }

    #[test]
    fn graph_rejects_bad_edges() {
        let mut m = model();
        assert!(m
            .load_graph(&[31.0, 31.1], &[121.0, 121.0], &[0], &[2], &[20000.0], &[1])
            .is_err());
        assert!(
            m.load_graph(&[31.0, 31.1], &[121.0, 121.0], &[0], &[1], &[10.0], &[1])
                .is_err(),
            "shorter than straight"
        );
        assert!(m
            .load_graph(&[31.0, 31.1], &[121.0, 121.0], &[0], &[1], &[12000.0], &[9])
            .is_err());
        assert!(m
            .load_graph(&[31.0, 31.1], &[121.0, 121.0], &[0], &[1], &[12000.0], &[1])
            .is_ok());
    }

    proptest! {
        #[test]
        fn bidirectional_matches_plain_dijkstra(s in 0u32..64, g in 0u32..64, hour in 0i64..24) {
            let mut m = model();
            grid_graph(&mut m, 8);
            let depart = 1_795_219_200 + hour * 3600;
            let gr = m.graph.clone().unwrap();
            let (t, _) = gr.shortest(&m, s, g, depart).unwrap();
            // Plain Dijkstra.
            let slot = m.slot(depart);
            let n = gr.node_pos.len();
            let mut d = vec![f64::INFINITY; n];
            d[s as usize] = 0.0;
            let mut done = vec![false; n];
            for _ in 0..n {
                let u = (0..n).filter(|&i| !done[i]).min_by(|&a, &b| d[a].total_cmp(&d[b])).unwrap();
                done[u] = true;
                for e in 0..gr.e_from.len() {
                    if gr.e_from[e] as usize == u {
                        let v = gr.e_to[e] as usize;
                        d[v] = d[v].min(d[u] + gr.edge_time(&m, e, slot, depart));
                    }
                }
            }
            prop_assert!((t - d[g as usize]).abs() < 1e-6, "{} vs {}", t, d[g as usize]);
        }

        #[test]
        fn travel_respects_the_lower_bound(
            a in (30.9f64..31.2, 120.9f64..121.2), b in (30.9f64..31.2, 120.9f64..121.2),
            hour in 0i64..24, graph in proptest::bool::ANY,
        ) {
            let mut m = model();
            if graph { grid_graph(&mut m, 8); }
            let (a, b) = (LatLng::new(a.0, a.1).unwrap(), LatLng::new(b.0, b.1).unwrap());
            let depart = 1_795_219_200 + hour * 3600;
            let tr = m.travel(a, b, depart);
            let straight = haversine_m(a, b);
            prop_assert!(tr.distance_m + 1e-6 >= straight);
            prop_assert!(tr.duration_s + 1e-6 >= straight / m.max_speed_mps(depart));
            prop_assert!(tr.duration_s + 1e-6 >= m.time_lower_bound(a, straight, depart));
            // Monotone in the distance, so a ring bound covers every farther point.
            prop_assert!(m.time_lower_bound(a, straight * 0.5, depart) <= m.time_lower_bound(a, straight, depart) + 1e-9);
        }
    }
}
