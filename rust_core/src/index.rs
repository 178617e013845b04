//! ResourceIndex: swap and charging stations, packs, connectors and mobile units (vans, specialists,
//! engineers) in memory, with a uniform grid of cells for nearest-k and radius queries, single-field
//! updates in microseconds and per-resource version counters for optimistic reservations.
//!
//! Handles are dense `u32` indices in load order (stations, packs, connectors and units each have their
//! own space). Loads append; nothing is ever removed, a retired resource is set OFFLINE / WITHDRAWN.

use crate::columns::{column, opt_column, same_len};
use crate::errors::{finite, CoreError, CoreResult};
use crate::geo::{cell_degrees, cell_of, haversine_m, Cell, LatLng};
use crate::gil::without_gil;
use crate::limits::{
    MAX_CONNECTOR_POWER_W, MAX_LANES, MAX_PACK_CYCLES, MAX_PERMILLE, MAX_SWAP_TIME_S, MIN_CONNECTOR_POWER_W,
    MIN_SWAP_LANES, MIN_SWAP_TIME_S, UNIT_CONNECTOR_MASK,
};
use numpy::PyArray1;
use parking_lot::RwLock;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

pub const STATION_SWAP: u8 = 1;
pub const STATION_CHARGING: u8 = 2;

// Enum numbers: the proto's (common.proto PackState, ConnectorStatus, ConnectorStandard, StationKind) where
// it has the enum; `_core.ENUM_NUMBERS` exports them and tests/unit/test_enum_numbers.py pins them.
pub const PACK_IN_VEHICLE: u8 = 1;
/// `Pack::station` of a pack that is not in a station (in a vehicle or in transit).
pub const NO_STATION: u32 = u32::MAX;
pub const PACK_CHARGING: u8 = 2;
pub const PACK_READY: u8 = 3;
pub const PACK_RESERVED: u8 = 4;
pub const PACK_QUARANTINED: u8 = 5;
pub const PACK_WITHDRAWN: u8 = 6;
pub const PACK_IN_TRANSIT: u8 = 7;
pub const PACK_STATE_MAX: u8 = PACK_IN_TRANSIT;

pub const CONN_AVAILABLE: u8 = 1;
pub const CONN_OCCUPIED: u8 = 2;
pub const CONN_RESERVED: u8 = 3;
pub const CONN_FAULTED: u8 = 4;
pub const CONN_UNAVAILABLE: u8 = 5;
pub const CONN_OFFLINE: u8 = 6;
pub const CONN_STATUS_MAX: u8 = CONN_OFFLINE;
pub const STANDARD_GBT_DC: u8 = 1;
pub const STANDARD_GBT_AC: u8 = 2;
pub const STANDARD_CCS2: u8 = 3;
pub const STANDARD_CHADEMO: u8 = 4;
pub const STANDARD_TYPE2: u8 = 5;
pub const STANDARD_MAX: u8 = STANDARD_TYPE2;

// The engine's own unit enums (no proto has them): the database's unit status has no RESERVED or OFFLINE,
// so the engine maps it by name (engine.py).
pub const UNIT_VAN: u8 = 1;
pub const UNIT_SPECIALIST: u8 = 2;
pub const UNIT_ENGINEER: u8 = 3;
pub const UNIT_AVAILABLE: u8 = 1;
pub const UNIT_BUSY: u8 = 2;
pub const UNIT_OFF_SHIFT: u8 = 3;
pub const UNIT_RESERVED: u8 = 4;
pub const UNIT_OFFLINE: u8 = 5;
pub const UNIT_STATUS_MAX: u8 = UNIT_OFFLINE;

/// A fast hasher for cell ids and external ids (a 64-bit finaliser; the keys are not attacker-chosen
/// strings, and SipHash costs more than the rest of a ring lookup).
#[derive(Default, Clone, Copy)]
pub struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0 ^ i).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i.rotate_left(29);
    }
}

pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<MixHasher>>;

/// Which operators' resources a query may see.
#[derive(Debug, Clone, PartialEq)]
pub enum Visibility {
    All,
    Only(Vec<u32>),
}

impl Visibility {
    pub fn from_option(ops: Option<Vec<u32>>) -> Self {
        match ops {
            None => Visibility::All,
            Some(mut v) => {
                v.sort_unstable();
                v.dedup();
                Visibility::Only(v)
            }
        }
    }
    #[inline]
    pub fn allows(&self, op: u32) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Only(v) => v.binary_search(&op).is_ok(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Station {
    pub id: u64,
    pub kind: u8,
    pub operator: u32,
    pub pos: LatLng,
    pub lanes: u16,
    pub swap_time_s: u32,
    pub queue: u16,
    pub version: u64,
    pub packs: Vec<u32>,
    pub connectors: Vec<u32>,
}

#[derive(Debug, Clone, Copy)]
pub struct Pack {
    pub station: u32,
    pub pack_type: u16,
    pub soc: u16,
    pub soh: u16,
    pub cycles: u32,
    pub state: u8,
    pub version: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Connector {
    pub station: u32,
    pub standard: u8,
    pub max_power_w: u32,
    pub status: u8,
    pub version: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Unit {
    pub id: u64,
    pub kind: u8,
    pub operator: u32,
    pub pos: LatLng,
    pub cell: Cell,
    pub slot: u32,
    pub status: u8,
    pub energy_wh: u64,
    pub power_w: u32,
    pub connector_mask: u32,
    pub skills: u64,
    pub shift_start: i64,
    pub shift_end: i64,
    pub busy_until: i64,
    pub version: u64,
}

/// A uniform grid of square-ish cells (see `geo::cell_of`) holding resource handles per cell.
#[derive(Debug, Clone)]
pub struct Grid {
    pub size_m: f64,
    deg: f64,
    cells: FastMap<Cell, Vec<u32>>,
    /// Bounding box (min row, max row, min col, max col) of every cell ever used; rings beyond it are empty.
    bbox: (i32, i32, i32, i32),
}

impl Grid {
    pub fn new(size_m: f64) -> Self {
        Grid {
            size_m,
            deg: cell_degrees(size_m),
            cells: FastMap::default(),
            bbox: (i32::MAX, i32::MIN, i32::MAX, i32::MIN),
        }
    }
    pub fn cell(&self, p: LatLng) -> Cell {
        cell_of(p, self.size_m)
    }
    /// Inserts and returns the slot of the handle inside its cell.
    pub fn insert(&mut self, c: Cell, idx: u32) -> u32 {
        self.bbox = (
            self.bbox.0.min(c.row),
            self.bbox.1.max(c.row),
            self.bbox.2.min(c.col),
            self.bbox.3.max(c.col),
        );
        let v = self.cells.entry(c).or_default();
        v.push(idx);
        (v.len() - 1) as u32
    }
    /// Removes the handle at `slot`; returns the handle that moved into the slot, if any.
    pub fn remove(&mut self, c: Cell, slot: u32) -> Option<u32> {
        let v = self.cells.get_mut(&c)?;
        v.swap_remove(slot as usize);
        v.get(slot as usize).copied()
    }
    pub fn get(&self, c: Cell) -> &[u32] {
        self.cells.get(&c).map(|v| v.as_slice()).unwrap_or(&[])
    }
    /// Visits the handles of every cell at Chebyshev distance exactly `r` from `center`.
    pub fn for_ring(&self, center: Cell, r: i32, mut f: impl FnMut(u32)) {
        let mut visit = |row: i32, col: i32| {
            for &i in self.get(Cell { row, col }) {
                f(i);
            }
        };
        if r == 0 {
            visit(center.row, center.col);
            return;
        }
        for col in center.col - r..=center.col + r {
            visit(center.row - r, col);
            visit(center.row + r, col);
        }
        for row in center.row - r + 1..=center.row + r - 1 {
            visit(row, center.col - r);
            visit(row, center.col + r);
        }
    }
    /// A lower bound of the distance from a point of the centre cell to any point of ring `r`.
    pub fn ring_lower_bound_m(&self, lat: f64, r: i32) -> f64 {
        if r <= 1 {
            return 0.0;
        }
        let worst_lat = (lat.abs() + (r as f64 + 1.0) * self.deg).min(89.9);
        // Rows are size_m tall; columns shrink with cos(lat). Haversine along the sphere is at least
        // the smaller of the two gaps (with a small margin for the spherical approximation).
        (r as f64 - 1.0) * self.size_m * worst_lat.to_radians().cos() * 0.995
    }
    /// The last ring that can hold anything: beyond it every ring is outside the bounding box.
    pub fn last_ring(&self, center: Cell) -> i32 {
        if self.bbox.0 > self.bbox.1 {
            return -1;
        }
        let (r0, r1, c0, c1) = self.bbox;
        let d = [center.row - r0, r1 - center.row, center.col - c0, c1 - center.col];
        d.iter().map(|x| x.abs()).max().unwrap_or(0)
    }
    /// Rings needed so that every point within `radius_m` of `center` is covered (capped by the data).
    pub fn rings_for(&self, center: Cell, lat: f64, radius_m: f64) -> i32 {
        let last = self.last_ring(center);
        let mut r = 0;
        while r < last && self.ring_lower_bound_m(lat, r + 1) <= radius_m {
            r += 1;
        }
        r
    }
}

/// One optimistic reserve/release step of a resource's status: `from` → `to`, refused (Conflict) when the
/// caller's version is stale or the resource is not in `from`. `want` and `field` word the refusal.
pub struct Transition {
    kind: &'static str,
    field: &'static str,
    from: u8,
    want: &'static str,
    to: u8,
}

const RESERVE_CONNECTOR: Transition = Transition {
    kind: "connector",
    field: "status",
    from: CONN_AVAILABLE,
    want: "available",
    to: CONN_RESERVED,
};
const RELEASE_CONNECTOR: Transition = Transition {
    kind: "connector",
    field: "status",
    from: CONN_RESERVED,
    want: "reserved",
    to: CONN_AVAILABLE,
};
const RESERVE_PACK: Transition = Transition {
    kind: "pack",
    field: "state",
    from: PACK_READY,
    want: "READY",
    to: PACK_RESERVED,
};
const RELEASE_PACK: Transition = Transition {
    kind: "pack",
    field: "state",
    from: PACK_RESERVED,
    want: "RESERVED",
    to: PACK_READY,
};
const RESERVE_UNIT: Transition = Transition {
    kind: "unit",
    field: "status",
    from: UNIT_AVAILABLE,
    want: "AVAILABLE",
    to: UNIT_RESERVED,
};
const RELEASE_UNIT: Transition = Transition {
    kind: "unit",
    field: "status",
    from: UNIT_RESERVED,
    want: "RESERVED",
    to: UNIT_AVAILABLE,
};

impl Transition {
    fn apply(&self, idx: u32, status: &mut u8, version: &mut u64, expected: Option<u64>) -> CoreResult<u64> {
        IndexState::check_version(self.kind, idx, *version, expected)?;
        if *status != self.from {
            return Err(CoreError::Conflict(format!(
                "{} {idx} is not {} ({} {status})",
                self.kind, self.want, self.field
            )));
        }
        *status = self.to;
        *version += 1;
        Ok(*version)
    }
}

#[derive(Debug, Clone)]
pub struct IndexState {
    pub stations: Vec<Station>,
    pub packs: Vec<Pack>,
    pub connectors: Vec<Connector>,
    pub units: Vec<Unit>,
    pub station_grid: Grid,
    /// The same stations in cells 16× larger, for the far rings of long-range searches.
    pub station_coarse: Grid,
    pub unit_grid: Grid,
    pub station_ids: FastMap<u64, u32>,
    pub unit_ids: FastMap<u64, u32>,
    /// Shortest swap time over all swap stations (a lower bound used to stop ring searches).
    pub min_swap_time_s: u32,
    /// Highest connector power ever loaded (an upper bound used to stop ring searches).
    pub max_connector_power_w: u32,
    /// READY packs per pack type (indexed by type), so a search for a type nobody stocks stops at once.
    pub ready_per_type: Vec<u32>,
}

fn not_found(kind: &'static str, idx: u32) -> CoreError {
    CoreError::NotFound {
        kind,
        id: idx.to_string(),
    }
}

fn check_range<T: PartialOrd + Copy + std::fmt::Display>(
    field: &str,
    v: &[T],
    lo: T,
    hi: T,
) -> CoreResult<()> {
    for (i, x) in v.iter().enumerate() {
        if *x < lo || *x > hi {
            return Err(CoreError::invalid(
                field,
                format!("[{i}] = {x} is outside [{lo}, {hi}]"),
            ));
        }
    }
    Ok(())
}

fn check_positions(lat: &[f64], lng: &[f64]) -> CoreResult<Vec<LatLng>> {
    lat.iter()
        .zip(lng)
        .enumerate()
        .map(|(i, (&a, &b))| {
            LatLng::new(a, b).map_err(|e| match e {
                CoreError::InvalidInput { field, reason } => {
                    CoreError::invalid(format!("{field}[{i}]"), reason)
                }
                other => other,
            })
        })
        .collect()
}

/// Plain-data rows for `load_mobile`.
pub struct UnitRows {
    pub ids: Vec<u64>,
    pub kind: Vec<u8>,
    pub operator: Vec<u32>,
    pub lat: Vec<f64>,
    pub lng: Vec<f64>,
    pub status: Vec<u8>,
    pub energy_wh: Vec<u64>,
    pub power_w: Vec<u32>,
    pub connector_mask: Vec<u32>,
    pub skills: Vec<u64>,
    pub shift_start: Vec<i64>,
    pub shift_end: Vec<i64>,
}

impl IndexState {
    pub fn new(cell_size_m: f64) -> CoreResult<Self> {
        let size = finite("cell_size_m", cell_size_m)?;
        if !(100.0..=100_000.0).contains(&size) {
            return Err(CoreError::invalid(
                "cell_size_m",
                format!("must be within [100, 100000], got {size}"),
            ));
        }
        Ok(IndexState {
            stations: Vec::new(),
            packs: Vec::new(),
            connectors: Vec::new(),
            units: Vec::new(),
            station_grid: Grid::new(size),
            station_coarse: Grid::new(size * 16.0),
            unit_grid: Grid::new(size),
            station_ids: FastMap::default(),
            unit_ids: FastMap::default(),
            min_swap_time_s: u32::MAX,
            max_connector_power_w: 0,
            ready_per_type: vec![0; 1 << 16],
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn load_stations(
        &mut self,
        ids: &[u64],
        kind: &[u8],
        operator: &[u32],
        lat: &[f64],
        lng: &[f64],
        lanes: &[u16],
        swap_time_s: &[u32],
    ) -> CoreResult<Vec<u32>> {
        let n = same_len(&[
            ("ids", ids.len()),
            ("kind", kind.len()),
            ("operator", operator.len()),
            ("lat", lat.len()),
            ("lng", lng.len()),
            ("lanes", lanes.len()),
            ("swap_time_s", swap_time_s.len()),
        ])?;
        check_range("kind", kind, STATION_SWAP, STATION_CHARGING)?;
        check_range("swap_time_s", swap_time_s, 0, MAX_SWAP_TIME_S)?;
        check_range("lanes", lanes, 0, MAX_LANES)?;
        let pos = check_positions(lat, lng)?;
        let mut seen = FastMap::default();
        for (i, id) in ids.iter().enumerate() {
            if self.station_ids.contains_key(id) || seen.insert(*id, i).is_some() {
                return Err(CoreError::invalid(
                    "ids",
                    format!("[{i}] = {id} is a duplicate station id"),
                ));
            }
            if kind[i] == STATION_SWAP && (lanes[i] < MIN_SWAP_LANES || swap_time_s[i] < MIN_SWAP_TIME_S) {
                return Err(CoreError::invalid(
                    "lanes",
                    format!(
                        "[{i}]: a swap station needs lanes >= {MIN_SWAP_LANES} and swap_time_s >= {MIN_SWAP_TIME_S}"
                    ),
                ));
            }
        }
        if self.stations.len() + n > u32::MAX as usize {
            return Err(CoreError::invalid("ids", "too many stations"));
        }
        let first = self.stations.len() as u32;
        self.stations.reserve(n);
        self.station_ids.reserve(n);
        for i in 0..n {
            let idx = first + i as u32;
            self.stations.push(Station {
                id: ids[i],
                kind: kind[i],
                operator: operator[i],
                pos: pos[i],
                lanes: lanes[i],
                swap_time_s: swap_time_s[i],
                queue: 0,
                version: 1,
                packs: Vec::new(),
                connectors: Vec::new(),
            });
            self.station_ids.insert(ids[i], idx);
            let c = self.station_grid.cell(pos[i]);
            self.station_grid.insert(c, idx);
            let cc = self.station_coarse.cell(pos[i]);
            self.station_coarse.insert(cc, idx);
            if kind[i] == STATION_SWAP {
                self.min_swap_time_s = self.min_swap_time_s.min(swap_time_s[i]);
            }
        }
        Ok((first..first + n as u32).collect())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn load_packs(
        &mut self,
        station: &[i64],
        pack_type: &[u16],
        soc: &[u16],
        soh: &[u16],
        cycles: &[u32],
        state: &[u8],
    ) -> CoreResult<Vec<u32>> {
        let n = same_len(&[
            ("station_idx", station.len()),
            ("pack_type", pack_type.len()),
            ("soc", soc.len()),
            ("soh", soh.len()),
            ("cycles", cycles.len()),
            ("state", state.len()),
        ])?;
        check_range("soc", soc, 0, MAX_PERMILLE)?;
        check_range("soh", soh, 0, MAX_PERMILLE)?;
        check_range("cycles", cycles, 0, MAX_PACK_CYCLES)?;
        check_range("state", state, 1, PACK_STATE_MAX)?;
        let mut station_u32 = Vec::with_capacity(n);
        for &s in station {
            if s == -1 {
                station_u32.push(NO_STATION);
                continue;
            }
            let si = u32::try_from(s)
                .map_err(|_| CoreError::invalid("station_idx", format!("{s} is neither -1 nor a handle")))?;
            let st = self
                .stations
                .get(si as usize)
                .ok_or_else(|| not_found("station", si))?;
            if st.kind != STATION_SWAP {
                return Err(CoreError::invalid(
                    "station_idx",
                    format!("station {s} is not a swap station"),
                ));
            }
            station_u32.push(si);
        }
        let station = &station_u32;
        let first = self.packs.len() as u32;
        for i in 0..n {
            let idx = first + i as u32;
            self.packs.push(Pack {
                station: station[i],
                pack_type: pack_type[i],
                soc: soc[i],
                soh: soh[i],
                cycles: cycles[i],
                state: state[i],
                version: 1,
            });
            if state[i] == PACK_READY && station[i] != NO_STATION {
                self.ready_per_type[pack_type[i] as usize] += 1;
            }
            if station[i] != NO_STATION {
                self.stations[station[i] as usize].packs.push(idx);
            }
        }
        Ok((first..first + n as u32).collect())
    }

    pub fn load_connectors(
        &mut self,
        station: &[u32],
        standard: &[u8],
        max_power_w: &[u32],
        status: &[u8],
    ) -> CoreResult<Vec<u32>> {
        let n = same_len(&[
            ("station_idx", station.len()),
            ("standard", standard.len()),
            ("max_power_w", max_power_w.len()),
            ("status", status.len()),
        ])?;
        check_range("standard", standard, 1, STANDARD_MAX)?;
        check_range("status", status, 1, CONN_STATUS_MAX)?;
        check_range(
            "max_power_w",
            max_power_w,
            MIN_CONNECTOR_POWER_W,
            MAX_CONNECTOR_POWER_W,
        )?;
        for &s in station {
            let st = self
                .stations
                .get(s as usize)
                .ok_or_else(|| not_found("station", s))?;
            if st.kind != STATION_CHARGING {
                return Err(CoreError::invalid(
                    "station_idx",
                    format!("station {s} is not a charging station"),
                ));
            }
        }
        let first = self.connectors.len() as u32;
        for i in 0..n {
            let idx = first + i as u32;
            self.connectors.push(Connector {
                station: station[i],
                standard: standard[i],
                max_power_w: max_power_w[i],
                status: status[i],
                version: 1,
            });
            self.stations[station[i] as usize].connectors.push(idx);
            self.max_connector_power_w = self.max_connector_power_w.max(max_power_w[i]);
        }
        Ok((first..first + n as u32).collect())
    }

    pub fn load_mobile(&mut self, r: &UnitRows) -> CoreResult<Vec<u32>> {
        let n = same_len(&[
            ("ids", r.ids.len()),
            ("kind", r.kind.len()),
            ("operator", r.operator.len()),
            ("lat", r.lat.len()),
            ("lng", r.lng.len()),
            ("status", r.status.len()),
            ("energy_wh", r.energy_wh.len()),
            ("power_w", r.power_w.len()),
            ("connector_mask", r.connector_mask.len()),
            ("skills", r.skills.len()),
            ("shift_start", r.shift_start.len()),
            ("shift_end", r.shift_end.len()),
        ])?;
        check_range("kind", &r.kind, UNIT_VAN, UNIT_ENGINEER)?;
        check_range("status", &r.status, 1, UNIT_STATUS_MAX)?;
        let pos = check_positions(&r.lat, &r.lng)?;
        let mut seen = FastMap::default();
        for (i, id) in r.ids.iter().enumerate() {
            if self.unit_ids.contains_key(id) || seen.insert(*id, i).is_some() {
                return Err(CoreError::invalid(
                    "ids",
                    format!("[{i}] = {id} is a duplicate unit id"),
                ));
            }
            if r.shift_end[i] < r.shift_start[i] {
                return Err(CoreError::invalid(
                    "shift_end",
                    format!("[{i}] ends before its shift starts"),
                ));
            }
            if r.connector_mask[i] & !UNIT_CONNECTOR_MASK != 0 {
                return Err(CoreError::invalid(
                    "connector_mask",
                    format!("[{i}] has bits outside 1<<1..1<<5"),
                ));
            }
        }
        let first = self.units.len() as u32;
        for (i, &p) in pos.iter().enumerate() {
            let idx = first + i as u32;
            let cell = self.unit_grid.cell(p);
            let slot = self.unit_grid.insert(cell, idx);
            self.units.push(Unit {
                id: r.ids[i],
                kind: r.kind[i],
                operator: r.operator[i],
                pos: p,
                cell,
                slot,
                status: r.status[i],
                energy_wh: r.energy_wh[i],
                power_w: r.power_w[i],
                connector_mask: r.connector_mask[i],
                skills: r.skills[i],
                shift_start: r.shift_start[i],
                shift_end: r.shift_end[i],
                busy_until: i64::MIN,
                version: 1,
            });
            self.unit_ids.insert(r.ids[i], idx);
        }
        Ok((first..first + n as u32).collect())
    }

    // --- single updates -------------------------------------------------------------------------

    pub fn station_mut(&mut self, idx: u32) -> CoreResult<&mut Station> {
        self.stations
            .get_mut(idx as usize)
            .ok_or_else(|| not_found("station", idx))
    }
    pub fn pack_mut(&mut self, idx: u32) -> CoreResult<&mut Pack> {
        self.packs
            .get_mut(idx as usize)
            .ok_or_else(|| not_found("pack", idx))
    }
    pub fn connector_mut(&mut self, idx: u32) -> CoreResult<&mut Connector> {
        self.connectors
            .get_mut(idx as usize)
            .ok_or_else(|| not_found("connector", idx))
    }
    pub fn unit_mut(&mut self, idx: u32) -> CoreResult<&mut Unit> {
        self.units
            .get_mut(idx as usize)
            .ok_or_else(|| not_found("unit", idx))
    }

    pub fn set_connector_status(&mut self, idx: u32, status: u8) -> CoreResult<u64> {
        if !(1..=CONN_STATUS_MAX).contains(&status) {
            return Err(CoreError::invalid(
                "status",
                format!("{status} is not a ConnectorStatus (1..=6)"),
            ));
        }
        let c = self.connector_mut(idx)?;
        c.status = status;
        c.version += 1;
        Ok(c.version)
    }

    pub fn set_pack(&mut self, idx: u32, soc: u16, soh: u16, state: u8) -> CoreResult<u64> {
        if soc > MAX_PERMILLE || soh > MAX_PERMILLE {
            return Err(CoreError::invalid(
                "soc",
                "soc and soh are permille within [0, 1000]",
            ));
        }
        if !(1..=PACK_STATE_MAX).contains(&state) {
            return Err(CoreError::invalid(
                "state",
                format!("{state} is not a PackState (1..=7)"),
            ));
        }
        let p = self.pack_mut(idx)?;
        p.soc = soc;
        p.soh = soh;
        let (was_ready, t, in_station) = (
            p.state == PACK_READY,
            p.pack_type as usize,
            p.station != NO_STATION,
        );
        p.state = state;
        p.version += 1;
        let v = p.version;
        self.count_ready(t, in_station, was_ready, state == PACK_READY);
        Ok(v)
    }

    fn count_ready(&mut self, pack_type: usize, in_station: bool, was: bool, is: bool) {
        if in_station && was != is {
            let c = &mut self.ready_per_type[pack_type];
            *c = if is { *c + 1 } else { c.saturating_sub(1) };
        }
    }

    pub fn set_queue(&mut self, idx: u32, queue: u16) -> CoreResult<u64> {
        let s = self.station_mut(idx)?;
        s.queue = queue;
        s.version += 1;
        Ok(s.version)
    }

    /// Bulk `set_queue`: all-or-nothing.
    pub fn set_queues(&mut self, station: &[u32], queue: &[u16]) -> CoreResult<()> {
        same_len(&[("station_idx", station.len()), ("queue", queue.len())])?;
        if let Some(&bad) = station.iter().find(|&&s| s as usize >= self.stations.len()) {
            return Err(not_found("station", bad));
        }
        for (&s, &q) in station.iter().zip(queue) {
            let st = &mut self.stations[s as usize];
            st.queue = q;
            st.version += 1;
        }
        Ok(())
    }

    /// Moves a unit; does not bump its version (positions stream every few seconds and must not
    /// invalidate a reservation in flight).
    pub fn move_unit(&mut self, idx: u32, pos: LatLng) -> CoreResult<()> {
        let u = *self
            .units
            .get(idx as usize)
            .ok_or_else(|| not_found("unit", idx))?;
        let cell = self.unit_grid.cell(pos);
        if cell != u.cell {
            if let Some(moved) = self.unit_grid.remove(u.cell, u.slot) {
                self.units[moved as usize].slot = u.slot;
            }
            let slot = self.unit_grid.insert(cell, idx);
            let unit = &mut self.units[idx as usize];
            unit.cell = cell;
            unit.slot = slot;
        }
        self.units[idx as usize].pos = pos;
        Ok(())
    }

    pub fn set_unit_status(&mut self, idx: u32, status: u8, busy_until: Option<i64>) -> CoreResult<u64> {
        if !(1..=UNIT_STATUS_MAX).contains(&status) {
            return Err(CoreError::invalid(
                "status",
                format!("{status} is not a UnitStatus (1..=5)"),
            ));
        }
        let u = self.unit_mut(idx)?;
        u.status = status;
        if let Some(b) = busy_until {
            u.busy_until = b;
        }
        u.version += 1;
        Ok(u.version)
    }

    pub fn set_van_energy(&mut self, idx: u32, energy_wh: u64) -> CoreResult<u64> {
        let u = self.unit_mut(idx)?;
        if u.kind != UNIT_VAN {
            return Err(CoreError::invalid("idx", format!("unit {idx} is not a van")));
        }
        u.energy_wh = energy_wh;
        u.version += 1;
        Ok(u.version)
    }

    // --- optimistic reservations ----------------------------------------------------------------

    fn check_version(kind: &str, idx: u32, have: u64, expected: Option<u64>) -> CoreResult<()> {
        match expected {
            Some(e) if e != have => Err(CoreError::Conflict(format!(
                "{kind} {idx} is at version {have}, expected {e} (stale)"
            ))),
            _ => Ok(()),
        }
    }

    pub fn reserve_connector(&mut self, idx: u32, expected: Option<u64>) -> CoreResult<u64> {
        let c = self.connector_mut(idx)?;
        RESERVE_CONNECTOR.apply(idx, &mut c.status, &mut c.version, expected)
    }

    pub fn release_connector(&mut self, idx: u32, expected: Option<u64>) -> CoreResult<u64> {
        let c = self.connector_mut(idx)?;
        RELEASE_CONNECTOR.apply(idx, &mut c.status, &mut c.version, expected)
    }

    pub fn reserve_pack(&mut self, idx: u32, expected: Option<u64>) -> CoreResult<u64> {
        self.pack_transition(&RESERVE_PACK, idx, expected)
    }

    pub fn release_pack(&mut self, idx: u32, expected: Option<u64>) -> CoreResult<u64> {
        self.pack_transition(&RELEASE_PACK, idx, expected)
    }

    /// A pack step also moves the pack between the READY counts.
    fn pack_transition(&mut self, step: &Transition, idx: u32, expected: Option<u64>) -> CoreResult<u64> {
        let p = self.pack_mut(idx)?;
        let v = step.apply(idx, &mut p.state, &mut p.version, expected)?;
        let (t, in_station) = (p.pack_type as usize, p.station != NO_STATION);
        self.count_ready(t, in_station, step.from == PACK_READY, step.to == PACK_READY);
        Ok(v)
    }

    pub fn reserve_unit(&mut self, idx: u32, expected: Option<u64>) -> CoreResult<u64> {
        let u = self.unit_mut(idx)?;
        RESERVE_UNIT.apply(idx, &mut u.status, &mut u.version, expected)
    }

    pub fn release_unit(&mut self, idx: u32, expected: Option<u64>) -> CoreResult<u64> {
        let u = self.unit_mut(idx)?;
        RELEASE_UNIT.apply(idx, &mut u.status, &mut u.version, expected)
    }

    // --- spatial queries ------------------------------------------------------------------------

    /// The k nearest handles from `grid` accepted by `keep`, by great-circle distance, within
    /// `max_radius_m`. Rings stop as soon as the k-th best is closer than the next ring can be.
    pub fn nearest_in(
        grid: &Grid,
        pos_of: impl Fn(u32) -> LatLng,
        center: LatLng,
        k: usize,
        max_radius_m: f64,
        keep: impl Fn(u32) -> bool,
    ) -> Vec<(u32, f64)> {
        let c = grid.cell(center);
        let mut best: Vec<(u32, f64)> = Vec::new();
        if k == 0 {
            return best;
        }
        let max_r = grid.rings_for(c, center.lat, max_radius_m);
        for r in 0..=max_r {
            let lb = grid.ring_lower_bound_m(center.lat, r);
            if lb > max_radius_m || (best.len() >= k && lb > best[k - 1].1) {
                break;
            }
            grid.for_ring(c, r, |i| {
                if !keep(i) {
                    return;
                }
                let d = haversine_m(center, pos_of(i));
                if d <= max_radius_m {
                    best.push((i, d));
                }
            });
            if best.len() >= k {
                best.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
                best.truncate(k);
            }
        }
        best.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        best.truncate(k);
        best
    }

    pub fn nearest_stations(
        &self,
        center: LatLng,
        k: usize,
        radius_m: f64,
        kind: Option<u8>,
        vis: &Visibility,
    ) -> Vec<(u32, f64)> {
        Self::nearest_in(
            &self.station_grid,
            |i| self.stations[i as usize].pos,
            center,
            k,
            radius_m,
            |i| {
                let s = &self.stations[i as usize];
                kind.is_none_or(|k| s.kind == k) && vis.allows(s.operator)
            },
        )
    }

    pub fn nearest_units(
        &self,
        center: LatLng,
        k: usize,
        radius_m: f64,
        kind: Option<u8>,
        status: Option<u8>,
        vis: &Visibility,
    ) -> Vec<(u32, f64)> {
        Self::nearest_in(
            &self.unit_grid,
            |i| self.units[i as usize].pos,
            center,
            k,
            radius_m,
            |i| {
                let u = &self.units[i as usize];
                kind.is_none_or(|k| u.kind == k)
                    && status.is_none_or(|s| u.status == s)
                    && vis.allows(u.operator)
            },
        )
    }
}

// --- Python surface -------------------------------------------------------------------------------

/// In-memory index of stations, packs, connectors and mobile units.
#[pyclass(module = "voltcloud._core", frozen)]
pub struct ResourceIndex {
    pub state: RwLock<IndexState>,
}

fn vec_u32<'py>(py: Python<'py>, v: Vec<u32>) -> Bound<'py, PyArray1<u32>> {
    PyArray1::from_vec(py, v)
}

/// A handle from Python: negative or too large is simply not found.
fn handle(idx: i64, kind: &'static str) -> CoreResult<u32> {
    u32::try_from(idx).map_err(|_| CoreError::NotFound {
        kind,
        id: idx.to_string(),
    })
}

/// A small integer from Python, range-checked into its column type.
pub(crate) fn small<T: TryFrom<i64>>(v: i64, field: &str) -> CoreResult<T> {
    T::try_from(v).map_err(|_| CoreError::invalid(field, format!("{v} is out of range")))
}

fn radius_arg(radius_m: Option<f64>) -> CoreResult<f64> {
    match radius_m {
        None => Ok(f64::INFINITY),
        Some(r) => {
            let r = finite("radius_m", r)?;
            if r < 0.0 {
                return Err(CoreError::invalid("radius_m", "must be >= 0"));
            }
            Ok(r)
        }
    }
}

type NearestResult<'py> = (Bound<'py, PyArray1<u32>>, Bound<'py, PyArray1<f64>>);

fn split_nearest(py: Python<'_>, v: Vec<(u32, f64)>) -> NearestResult<'_> {
    let (i, d): (Vec<u32>, Vec<f64>) = v.into_iter().unzip();
    (PyArray1::from_vec(py, i), PyArray1::from_vec(py, d))
}

#[pymethods]
impl ResourceIndex {
    #[new]
    #[pyo3(signature = (cell_size_m = 2000.0))]
    fn py_new(cell_size_m: f64) -> PyResult<Self> {
        Ok(ResourceIndex {
            state: RwLock::new(IndexState::new(cell_size_m)?),
        })
    }

    #[getter]
    fn cell_size_m(&self) -> f64 {
        self.state.read().station_grid.size_m
    }

    /// Counts per kind of resource.
    fn counts(&self) -> (usize, usize, usize, usize) {
        let s = self.state.read();
        (s.stations.len(), s.packs.len(), s.connectors.len(), s.units.len())
    }

    #[allow(clippy::too_many_arguments)]
    fn load_stations<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
        kind: &Bound<'py, PyAny>,
        operator: &Bound<'py, PyAny>,
        lat: &Bound<'py, PyAny>,
        lng: &Bound<'py, PyAny>,
        lanes: &Bound<'py, PyAny>,
        swap_time_s: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<u32>>> {
        let ids = column::<u64>(ids, "ids")?;
        let kind = column::<u8>(kind, "kind")?;
        let operator = column::<u32>(operator, "operator")?;
        let lat = column::<f64>(lat, "lat")?;
        let lng = column::<f64>(lng, "lng")?;
        let lanes = column::<u16>(lanes, "lanes")?;
        let swap = column::<u32>(swap_time_s, "swap_time_s")?;
        let out = without_gil(py, || {
            self.state
                .write()
                .load_stations(&ids, &kind, &operator, &lat, &lng, &lanes, &swap)
        })?;
        Ok(vec_u32(py, out))
    }

    #[allow(clippy::too_many_arguments)]
    fn load_packs<'py>(
        &self,
        py: Python<'py>,
        station_idx: &Bound<'py, PyAny>,
        pack_type: &Bound<'py, PyAny>,
        soc: &Bound<'py, PyAny>,
        soh: &Bound<'py, PyAny>,
        cycles: &Bound<'py, PyAny>,
        state: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<u32>>> {
        let st = column::<i64>(station_idx, "station_idx")?;
        let pt = column::<u16>(pack_type, "pack_type")?;
        let soc = column::<u16>(soc, "soc")?;
        let soh = column::<u16>(soh, "soh")?;
        let cy = column::<u32>(cycles, "cycles")?;
        let stt = column::<u8>(state, "state")?;
        let out = without_gil(py, || {
            self.state.write().load_packs(&st, &pt, &soc, &soh, &cy, &stt)
        })?;
        Ok(vec_u32(py, out))
    }

    fn load_connectors<'py>(
        &self,
        py: Python<'py>,
        station_idx: &Bound<'py, PyAny>,
        standard: &Bound<'py, PyAny>,
        max_power_w: &Bound<'py, PyAny>,
        status: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<u32>>> {
        let st = column::<u32>(station_idx, "station_idx")?;
        let sd = column::<u8>(standard, "standard")?;
        let mp = column::<u32>(max_power_w, "max_power_w")?;
        let ss = column::<u8>(status, "status")?;
        let out = without_gil(py, || self.state.write().load_connectors(&st, &sd, &mp, &ss))?;
        Ok(vec_u32(py, out))
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (ids, kind, operator, lat, lng, status, energy_wh = None, power_w = None,
        connector_mask = None, skills = None, shift_start = None, shift_end = None))]
    fn load_mobile<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
        kind: &Bound<'py, PyAny>,
        operator: &Bound<'py, PyAny>,
        lat: &Bound<'py, PyAny>,
        lng: &Bound<'py, PyAny>,
        status: &Bound<'py, PyAny>,
        energy_wh: Option<&Bound<'py, PyAny>>,
        power_w: Option<&Bound<'py, PyAny>>,
        connector_mask: Option<&Bound<'py, PyAny>>,
        skills: Option<&Bound<'py, PyAny>>,
        shift_start: Option<&Bound<'py, PyAny>>,
        shift_end: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray1<u32>>> {
        let ids = column::<u64>(ids, "ids")?;
        let n = ids.len();
        let rows = UnitRows {
            ids,
            kind: column::<u8>(kind, "kind")?,
            operator: column::<u32>(operator, "operator")?,
            lat: column::<f64>(lat, "lat")?,
            lng: column::<f64>(lng, "lng")?,
            status: column::<u8>(status, "status")?,
            energy_wh: opt_column::<u64>(energy_wh, "energy_wh", n, 0)?,
            power_w: opt_column::<u32>(power_w, "power_w", n, 0)?,
            connector_mask: opt_column::<u32>(connector_mask, "connector_mask", n, 0)?,
            skills: opt_column::<u64>(skills, "skills", n, 0)?,
            shift_start: opt_column::<i64>(shift_start, "shift_start", n, i64::MIN)?,
            shift_end: opt_column::<i64>(shift_end, "shift_end", n, i64::MAX)?,
        };
        let out = without_gil(py, || self.state.write().load_mobile(&rows))?;
        Ok(vec_u32(py, out))
    }

    fn station_index(&self, station_id: u64) -> PyResult<u32> {
        let s = self.state.read();
        Ok(*s.station_ids.get(&station_id).ok_or(CoreError::NotFound {
            kind: "station id",
            id: station_id.to_string(),
        })?)
    }

    fn unit_index(&self, unit_id: u64) -> PyResult<u32> {
        let s = self.state.read();
        Ok(*s.unit_ids.get(&unit_id).ok_or(CoreError::NotFound {
            kind: "unit id",
            id: unit_id.to_string(),
        })?)
    }

    fn station<'py>(&self, py: Python<'py>, idx: i64) -> PyResult<Bound<'py, PyDict>> {
        let idx = handle(idx, "station")?;
        let s = self.state.read();
        let st = s
            .stations
            .get(idx as usize)
            .ok_or_else(|| not_found("station", idx))?;
        let d = PyDict::new(py);
        d.set_item("id", st.id)?;
        d.set_item("kind", st.kind)?;
        d.set_item("operator", st.operator)?;
        d.set_item("lat", st.pos.lat)?;
        d.set_item("lng", st.pos.lng)?;
        d.set_item("lanes", st.lanes)?;
        d.set_item("swap_time_s", st.swap_time_s)?;
        d.set_item("queue", st.queue)?;
        d.set_item("version", st.version)?;
        d.set_item("packs", PyArray1::from_slice(py, &st.packs))?;
        d.set_item("connectors", PyArray1::from_slice(py, &st.connectors))?;
        Ok(d)
    }

    fn pack<'py>(&self, py: Python<'py>, idx: i64) -> PyResult<Bound<'py, PyDict>> {
        let idx = handle(idx, "pack")?;
        let s = self.state.read();
        let p = s.packs.get(idx as usize).ok_or_else(|| not_found("pack", idx))?;
        let d = PyDict::new(py);
        d.set_item(
            "station",
            if p.station == NO_STATION {
                -1
            } else {
                i64::from(p.station)
            },
        )?;
        d.set_item("pack_type", p.pack_type)?;
        d.set_item("soc", p.soc)?;
        d.set_item("soh", p.soh)?;
        d.set_item("cycles", p.cycles)?;
        d.set_item("state", p.state)?;
        d.set_item("version", p.version)?;
        Ok(d)
    }

    fn connector<'py>(&self, py: Python<'py>, idx: i64) -> PyResult<Bound<'py, PyDict>> {
        let idx = handle(idx, "connector")?;
        let s = self.state.read();
        let c = s
            .connectors
            .get(idx as usize)
            .ok_or_else(|| not_found("connector", idx))?;
        let d = PyDict::new(py);
        d.set_item("station", c.station)?;
        d.set_item("standard", c.standard)?;
        d.set_item("max_power_w", c.max_power_w)?;
        d.set_item("status", c.status)?;
        d.set_item("version", c.version)?;
        Ok(d)
    }

    fn unit<'py>(&self, py: Python<'py>, idx: i64) -> PyResult<Bound<'py, PyDict>> {
        let idx = handle(idx, "unit")?;
        let s = self.state.read();
        let u = s.units.get(idx as usize).ok_or_else(|| not_found("unit", idx))?;
        let d = PyDict::new(py);
        d.set_item("id", u.id)?;
        d.set_item("kind", u.kind)?;
        d.set_item("operator", u.operator)?;
        d.set_item("lat", u.pos.lat)?;
        d.set_item("lng", u.pos.lng)?;
        d.set_item("status", u.status)?;
        d.set_item("energy_wh", u.energy_wh)?;
        d.set_item("power_w", u.power_w)?;
        d.set_item("connector_mask", u.connector_mask)?;
        d.set_item("skills", u.skills)?;
        d.set_item("shift_start", u.shift_start)?;
        d.set_item("shift_end", u.shift_end)?;
        d.set_item(
            "busy_until",
            if u.busy_until == i64::MIN {
                None
            } else {
                Some(u.busy_until)
            },
        )?;
        d.set_item("version", u.version)?;
        Ok(d)
    }

    fn set_connector_status(&self, idx: i64, status: i64) -> PyResult<u64> {
        let (idx, status) = (handle(idx, "connector")?, small(status, "status")?);
        Ok(self.state.write().set_connector_status(idx, status)?)
    }

    fn set_pack(&self, idx: i64, soc: i64, soh: i64, state: i64) -> PyResult<u64> {
        let idx = handle(idx, "pack")?;
        let (soc, soh, state) = (small(soc, "soc")?, small(soh, "soh")?, small(state, "state")?);
        Ok(self.state.write().set_pack(idx, soc, soh, state)?)
    }

    fn set_queue(&self, station_idx: i64, queue: i64) -> PyResult<u64> {
        let (station_idx, queue) = (handle(station_idx, "station")?, small(queue, "queue")?);
        Ok(self.state.write().set_queue(station_idx, queue)?)
    }

    fn set_queues(&self, station_idx: &Bound<'_, PyAny>, queue: &Bound<'_, PyAny>) -> PyResult<()> {
        let st = column::<u32>(station_idx, "station_idx")?;
        let q = column::<u16>(queue, "queue")?;
        Ok(self.state.write().set_queues(&st, &q)?)
    }

    fn move_unit(&self, idx: i64, lat: f64, lng: f64) -> PyResult<()> {
        let idx = handle(idx, "unit")?;
        let p = LatLng::new(lat, lng)?;
        Ok(self.state.write().move_unit(idx, p)?)
    }

    #[pyo3(signature = (idx, status, busy_until = None))]
    fn set_unit_status(&self, idx: i64, status: i64, busy_until: Option<i64>) -> PyResult<u64> {
        let (idx, status) = (handle(idx, "unit")?, small(status, "status")?);
        Ok(self.state.write().set_unit_status(idx, status, busy_until)?)
    }

    fn set_van_energy(&self, idx: i64, energy_wh: i64) -> PyResult<u64> {
        let (idx, energy_wh) = (handle(idx, "unit")?, small(energy_wh, "energy_wh")?);
        Ok(self.state.write().set_van_energy(idx, energy_wh)?)
    }

    #[pyo3(signature = (idx, expected_version = None))]
    fn reserve_connector(&self, idx: i64, expected_version: Option<u64>) -> PyResult<u64> {
        let idx = handle(idx, "connector")?;
        Ok(self.state.write().reserve_connector(idx, expected_version)?)
    }

    #[pyo3(signature = (idx, expected_version = None))]
    fn release_connector(&self, idx: i64, expected_version: Option<u64>) -> PyResult<u64> {
        let idx = handle(idx, "connector")?;
        Ok(self.state.write().release_connector(idx, expected_version)?)
    }

    #[pyo3(signature = (idx, expected_version = None))]
    fn reserve_pack(&self, idx: i64, expected_version: Option<u64>) -> PyResult<u64> {
        let idx = handle(idx, "pack")?;
        Ok(self.state.write().reserve_pack(idx, expected_version)?)
    }

    #[pyo3(signature = (idx, expected_version = None))]
    fn release_pack(&self, idx: i64, expected_version: Option<u64>) -> PyResult<u64> {
        let idx = handle(idx, "pack")?;
        Ok(self.state.write().release_pack(idx, expected_version)?)
    }

    #[pyo3(signature = (idx, expected_version = None))]
    fn reserve_unit(&self, idx: i64, expected_version: Option<u64>) -> PyResult<u64> {
        let idx = handle(idx, "unit")?;
        Ok(self.state.write().reserve_unit(idx, expected_version)?)
    }

    #[pyo3(signature = (idx, expected_version = None))]
    fn release_unit(&self, idx: i64, expected_version: Option<u64>) -> PyResult<u64> {
        let idx = handle(idx, "unit")?;
        Ok(self.state.write().release_unit(idx, expected_version)?)
    }

    /// k nearest stations: (indices, distances in metres), closest first.
    #[pyo3(signature = (lat, lng, k, kind = None, operators = None, max_radius_m = None))]
    #[allow(clippy::too_many_arguments)]
    fn nearest_stations<'py>(
        &self,
        py: Python<'py>,
        lat: f64,
        lng: f64,
        k: usize,
        kind: Option<u8>,
        operators: Option<Vec<u32>>,
        max_radius_m: Option<f64>,
    ) -> PyResult<NearestResult<'py>> {
        let p = LatLng::new(lat, lng)?;
        let r = radius_arg(max_radius_m)?;
        let vis = Visibility::from_option(operators);
        let v = without_gil(py, || self.state.read().nearest_stations(p, k, r, kind, &vis));
        Ok(split_nearest(py, v))
    }

    /// Every station within `radius_m`: (indices, distances), closest first.
    #[pyo3(signature = (lat, lng, radius_m, kind = None, operators = None))]
    fn stations_within<'py>(
        &self,
        py: Python<'py>,
        lat: f64,
        lng: f64,
        radius_m: f64,
        kind: Option<u8>,
        operators: Option<Vec<u32>>,
    ) -> PyResult<NearestResult<'py>> {
        let p = LatLng::new(lat, lng)?;
        let r = radius_arg(Some(radius_m))?;
        let vis = Visibility::from_option(operators);
        let v = without_gil(py, || {
            self.state.read().nearest_stations(p, usize::MAX, r, kind, &vis)
        });
        Ok(split_nearest(py, v))
    }

    /// k nearest mobile units: (indices, distances in metres), closest first.
    #[pyo3(signature = (lat, lng, k, kind = None, status = None, operators = None, max_radius_m = None))]
    #[allow(clippy::too_many_arguments)]
    fn nearest_units<'py>(
        &self,
        py: Python<'py>,
        lat: f64,
        lng: f64,
        k: usize,
        kind: Option<u8>,
        status: Option<u8>,
        operators: Option<Vec<u32>>,
        max_radius_m: Option<f64>,
    ) -> PyResult<NearestResult<'py>> {
        let p = LatLng::new(lat, lng)?;
        let r = radius_arg(max_radius_m)?;
        let vis = Visibility::from_option(operators);
        let v = without_gil(py, || {
            self.state.read().nearest_units(p, k, r, kind, status, &vis)
        });
        Ok(split_nearest(py, v))
    }

    /// Every unit within `radius_m`: (indices, distances), closest first.
    #[pyo3(signature = (lat, lng, radius_m, kind = None, status = None, operators = None))]
    #[allow(clippy::too_many_arguments)]
    fn units_within<'py>(
        &self,
        py: Python<'py>,
        lat: f64,
        lng: f64,
        radius_m: f64,
        kind: Option<u8>,
        status: Option<u8>,
        operators: Option<Vec<u32>>,
    ) -> PyResult<NearestResult<'py>> {
        let p = LatLng::new(lat, lng)?;
        let r = radius_arg(Some(radius_m))?;
        let vis = Visibility::from_option(operators);
        let v = without_gil(py, || {
            self.state
                .read()
                .nearest_units(p, usize::MAX, r, kind, status, &vis)
        });
        Ok(split_nearest(py, v))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ResourceIndex>()?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn small_world() -> IndexState {
        let mut s = IndexState::new(2000.0).unwrap();
        // Two swap stations, two charging stations around Shanghai.
        s.load_stations(
            &[10, 11, 20, 21],
            &[1, 1, 2, 2],
            &[1, 2, 1, 2],
            &[31.23, 31.30, 31.24, 31.10],
            &[121.47, 121.50, 121.48, 121.40],
            &[2, 1, 0, 0],
            &[180, 240, 0, 0],
        )
        .unwrap();
        s.load_packs(
            &[0, 0, 0, 1],
            &[7, 7, 8, 7],
            &[950, 990, 1000, 900],
            &[980, 900, 990, 950],
            &[100, 900, 5, 50],
            &[3, 3, 3, 5],
        )
        .unwrap();
        s.load_connectors(&[2, 2, 3], &[3, 1, 3], &[120_000, 60_000, 250_000], &[1, 1, 2])
            .unwrap();
        s.load_mobile(&UnitRows {
            ids: vec![100, 101, 102],
            kind: vec![UNIT_VAN, UNIT_SPECIALIST, UNIT_ENGINEER],
            operator: vec![1, 1, 2],
            lat: vec![31.22, 31.231, 31.25],
            lng: vec![121.46, 121.471, 121.45],
            status: vec![1, 1, 1],
            energy_wh: vec![60_000, 0, 0],
            power_w: vec![40_000, 0, 0],
            connector_mask: vec![1 << 3 | 1 << 1, 0, 0],
            skills: vec![0, 0, 3],
            shift_start: vec![i64::MIN; 3],
            shift_end: vec![i64::MAX; 3],
        })
        .unwrap();
        s
    }

    #[test]
    fn loads_and_finds_nearest() {
        let s = small_world();
        let p = LatLng::new(31.231, 121.471).unwrap();
        let near = s.nearest_stations(p, 2, f64::INFINITY, Some(STATION_SWAP), &Visibility::All);
        assert_eq!(near.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 1]);
        let vis = Visibility::from_option(Some(vec![2]));
        let near = s.nearest_stations(p, 5, f64::INFINITY, None, &vis);
        assert_eq!(near.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 3]);
        let within = s.nearest_stations(p, usize::MAX, 3000.0, None, &Visibility::All);
        assert!(within.iter().all(|x| x.1 <= 3000.0));
        assert_eq!(within.len(), 2);
    }

    #[test]
    fn rejects_bad_loads_atomically() {
        let mut s = small_world();
        let before = s.stations.len();
        assert!(matches!(
            s.load_stations(&[1], &[3], &[0], &[0.0], &[0.0], &[1], &[1]),
            Err(CoreError::InvalidInput { .. })
        ));
        assert!(s
            .load_stations(&[1, 2], &[1], &[0], &[0.0], &[0.0], &[1], &[1])
            .is_err());
        assert!(s
            .load_stations(&[1], &[1], &[0], &[f64::NAN], &[0.0], &[1], &[1])
            .is_err());
        assert!(s
            .load_stations(&[10], &[1], &[0], &[0.0], &[0.0], &[1], &[1])
            .is_err());
        assert_eq!(s.stations.len(), before);
        assert!(matches!(
            s.load_packs(&[99], &[1], &[1], &[1], &[1], &[3]),
            Err(CoreError::NotFound { .. })
        ));
        assert!(
            s.load_packs(&[2], &[1], &[1], &[1], &[1], &[3]).is_err(),
            "pack at a charging station"
        );
        assert!(s.load_packs(&[0], &[1], &[1001], &[1], &[1], &[3]).is_err());
        assert!(
            s.load_connectors(&[0], &[1], &[1000], &[1]).is_err(),
            "connector at a swap station"
        );
        assert!(s.load_connectors(&[2], &[9], &[1000], &[1]).is_err());
    }

    #[test]
    fn packs_outside_stations_and_bulk_queues() {
        let mut s = small_world();
        let p = s
            .load_packs(&[-1], &[7], &[500], &[990], &[10], &[PACK_IN_VEHICLE])
            .unwrap();
        assert_eq!(s.packs[p[0] as usize].station, NO_STATION);
        assert!(s.load_packs(&[-2], &[7], &[500], &[990], &[10], &[1]).is_err());
        s.set_queues(&[0, 1], &[3, 4]).unwrap();
        assert_eq!((s.stations[0].queue, s.stations[1].queue), (3, 4));
        assert!(matches!(
            s.set_queues(&[0, 9], &[1, 1]),
            Err(CoreError::NotFound { .. })
        ));
        assert!(s.set_queues(&[0], &[1, 1]).is_err());
        assert_eq!(s.stations[0].queue, 3, "failed bulk update changes nothing");
    }

    #[test]
    fn reservations_check_versions_and_state() {
        let mut s = small_world();
        let v = s.connectors[0].version;
        assert!(matches!(
            s.reserve_connector(0, Some(v + 1)),
            Err(CoreError::Conflict(_))
        ));
        let v2 = s.reserve_connector(0, Some(v)).unwrap();
        assert!(matches!(
            s.reserve_connector(0, Some(v2)),
            Err(CoreError::Conflict(_))
        ));
        assert!(s.release_connector(0, Some(v2)).is_ok());
        assert!(
            matches!(s.reserve_pack(3, None), Err(CoreError::Conflict(_))),
            "quarantined pack"
        );
        s.reserve_pack(0, None).unwrap();
        assert!(s.reserve_pack(0, None).is_err());
        s.reserve_unit(1, None).unwrap();
        assert!(s.reserve_unit(1, None).is_err());
        assert!(matches!(
            s.reserve_unit(99, None),
            Err(CoreError::NotFound { .. })
        ));
        assert!(s.set_van_energy(1, 5).is_err());
    }

    #[test]
    fn moving_units_keeps_the_grid_consistent() {
        let mut s = small_world();
        s.move_unit(0, LatLng::new(39.9, 116.4).unwrap()).unwrap();
        s.move_unit(2, LatLng::new(39.91, 116.41).unwrap()).unwrap();
        let p = LatLng::new(39.9, 116.4).unwrap();
        let near = s.nearest_units(p, 5, 50_000.0, None, None, &Visibility::All);
        assert_eq!(near.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 2]);
        for (i, u) in s.units.iter().enumerate() {
            assert_eq!(s.unit_grid.get(u.cell)[u.slot as usize], i as u32);
        }
    }

    proptest! {
        #[test]
        fn nearest_matches_brute_force(
            pts in proptest::collection::vec((30.0f64..31.0, 120.0f64..121.0), 1..80),
            q in (29.9f64..31.1, 119.9f64..121.1),
            k in 1usize..10,
            radius in 1000.0f64..150_000.0,
        ) {
            let mut s = IndexState::new(3000.0).unwrap();
            let n = pts.len();
            let lat: Vec<f64> = pts.iter().map(|p| p.0).collect();
            let lng: Vec<f64> = pts.iter().map(|p| p.1).collect();
            s.load_stations(&(0..n as u64).collect::<Vec<_>>(), &vec![2; n], &vec![0; n], &lat, &lng, &vec![0; n], &vec![0; n]).unwrap();
            let c = LatLng::new(q.0, q.1).unwrap();
            let got = s.nearest_stations(c, k, radius, None, &Visibility::All);
            let mut all: Vec<(u32, f64)> = (0..n).map(|i| (i as u32, haversine_m(c, s.stations[i].pos)))
                .filter(|x| x.1 <= radius).collect();
            all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            all.truncate(k);
            prop_assert_eq!(got, all);
        }

        #[test]
        fn nothing_is_reserved_twice(ops in proptest::collection::vec((0u8..7, 0u32..4, proptest::bool::ANY), 1..200)) {
            let mut s = small_world();
            let mut held_conn = std::collections::HashSet::new();
            let mut held_pack = std::collections::HashSet::new();
            let mut held_unit = std::collections::HashSet::new();
            for (op, idx, stale) in ops {
                let conn_v = s.connectors.get(idx as usize).map(|c| c.version).unwrap_or(0);
                let pack_v = s.packs.get(idx as usize).map(|c| c.version).unwrap_or(0);
                let unit_v = s.units.get(idx as usize).map(|c| c.version).unwrap_or(0);
                let ev = |v: u64| if stale { Some(v + 7) } else { Some(v) };
                match op {
                    0 => if s.reserve_connector(idx, ev(conn_v)).is_ok() { prop_assert!(held_conn.insert(idx)); },
                    1 => if s.release_connector(idx, ev(conn_v)).is_ok() { prop_assert!(held_conn.remove(&idx)); },
                    2 => if s.reserve_pack(idx, ev(pack_v)).is_ok() { prop_assert!(held_pack.insert(idx)); },
                    3 => if s.release_pack(idx, ev(pack_v)).is_ok() { prop_assert!(held_pack.remove(&idx)); },
                    4 => if s.reserve_unit(idx, ev(unit_v)).is_ok() { prop_assert!(held_unit.insert(idx)); },
                    6 => {
                        if s.set_pack(idx, 950, 990, if stale { 3 } else { 2 }).is_ok() {
                            held_pack.remove(&idx);
                        }
                    }
                    _ => if s.release_unit(idx, ev(unit_v)).is_ok() { prop_assert!(held_unit.remove(&idx)); },
                }
            }
            let mut ready = [0u32; 16];
            for p in &s.packs {
                if p.state == PACK_READY && p.station != NO_STATION {
                    ready[p.pack_type as usize] += 1;
                }
            }
            prop_assert_eq!(&s.ready_per_type[..16], &ready[..]);
        }
    }
}
