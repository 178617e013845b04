//! The engine's limits: one home for the range of every value a station, connector, pack or unit row
//! may carry into the index. The index enforces them on load; Python gets them as `_core.LIMITS` so the
//! API refuses an out-of-range value before it is stored (a stored row the index refuses would otherwise
//! stop every rebuild), and the platform can check rows read from the database before building arrays.
//!
//! Entries marked "platform" are not stored in the index but bound per-station structures the platform
//! builds from the same rows (one twin entry per lane and slot, one connector row per OCPP connector).

use crate::index::{
    CONN_STATUS_MAX, PACK_STATE_MAX, STANDARD_MAX, STATION_CHARGING, STATION_SWAP, UNIT_ENGINEER,
    UNIT_STATUS_MAX, UNIT_VAN,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Swap lanes of a swap station (a charging station has 0). Stored as u16; a real robot has 1-4.
pub const MIN_SWAP_LANES: u16 = 1;
pub const MAX_LANES: u16 = 32;
/// Duration of one swap, s (a swap station needs at least 1).
pub const MIN_SWAP_TIME_S: u32 = 1;
pub const MAX_SWAP_TIME_S: u32 = 86_400;
/// Platform: pack slots in a swap station's racks.
pub const MAX_SLOTS: u32 = 1_024;
/// Platform: grid-connection cap of a station, W (100 MW; fits the 32-bit column).
pub const MAX_STATION_POWER_W: u32 = 100_000_000;
/// Power of one connector, W.
pub const MIN_CONNECTOR_POWER_W: u32 = 1;
pub const MAX_CONNECTOR_POWER_W: u32 = 2_000_000;
/// Platform: chargers per charging station, OCPP connectors per charger, connectors per station.
pub const MAX_CHARGERS: u32 = 128;
pub const MAX_CONNECTORS_PER_CHARGER: u32 = 8;
pub const MAX_CONNECTORS_PER_STATION: u32 = 512;
/// Pack type ids index a per-type table of 2^16 entries.
pub const MAX_PACK_TYPE_ID: u16 = u16::MAX;
/// SOC and SOH, permille.
pub const MAX_PERMILLE: u16 = 1_000;
/// Full cycles of one pack (no pack survives a million).
pub const MAX_PACK_CYCLES: u32 = 1_000_000;
/// Connector-standard bits a mobile unit may carry (1 << standard for each standard).
pub const UNIT_CONNECTOR_MASK: u32 = 0b11_1110;
/// WGS84 degrees.
pub const MAX_LAT_DEG: f64 = 90.0;
pub const MAX_LNG_DEG: f64 = 180.0;

/// (name, value) of every integer limit, in the order `_core.LIMITS` lists them.
pub fn table() -> Vec<(&'static str, i64)> {
    vec![
        ("station_kind_min", i64::from(STATION_SWAP)),
        ("station_kind_max", i64::from(STATION_CHARGING)),
        ("min_swap_lanes", i64::from(MIN_SWAP_LANES)),
        ("max_lanes", i64::from(MAX_LANES)),
        ("min_swap_time_s", i64::from(MIN_SWAP_TIME_S)),
        ("max_swap_time_s", i64::from(MAX_SWAP_TIME_S)),
        ("max_slots", i64::from(MAX_SLOTS)),
        ("max_station_power_w", i64::from(MAX_STATION_POWER_W)),
        ("min_connector_power_w", i64::from(MIN_CONNECTOR_POWER_W)),
        ("max_connector_power_w", i64::from(MAX_CONNECTOR_POWER_W)),
        ("max_chargers", i64::from(MAX_CHARGERS)),
        (
            "max_connectors_per_charger",
            i64::from(MAX_CONNECTORS_PER_CHARGER),
        ),
        (
            "max_connectors_per_station",
            i64::from(MAX_CONNECTORS_PER_STATION),
        ),
        ("connector_standard_max", i64::from(STANDARD_MAX)),
        ("connector_status_max", i64::from(CONN_STATUS_MAX)),
        ("max_pack_type_id", i64::from(MAX_PACK_TYPE_ID)),
        ("max_permille", i64::from(MAX_PERMILLE)),
        ("max_pack_cycles", i64::from(MAX_PACK_CYCLES)),
        ("pack_state_max", i64::from(PACK_STATE_MAX)),
        ("unit_kind_min", i64::from(UNIT_VAN)),
        ("unit_kind_max", i64::from(UNIT_ENGINEER)),
        ("unit_status_max", i64::from(UNIT_STATUS_MAX)),
        ("unit_connector_mask", i64::from(UNIT_CONNECTOR_MASK)),
        ("max_lat_deg", MAX_LAT_DEG as i64),
        ("max_lng_deg", MAX_LNG_DEG as i64),
    ]
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let limits = PyDict::new(m.py());
    for (name, value) in table() {
        limits.set_item(name, value)?;
    }
    m.add("LIMITS", limits)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::CoreError;
    use crate::index::{IndexState, UnitRows};

    fn swap_station(s: &mut IndexState, id: u64, lanes: u16, swap_time_s: u32) -> Result<(), CoreError> {
        s.load_stations(
            &[id],
            &[STATION_SWAP],
            &[1],
            &[31.2],
            &[121.4],
            &[lanes],
            &[swap_time_s],
        )
        .map(|_| ())
    }

    fn field_of(err: CoreError) -> String {
        match err {
            CoreError::InvalidInput { field, .. } => field,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn the_table_lists_every_limit_once() {
        let t = table();
        let mut names: Vec<_> = t.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), t.len());
    }

    #[test]
    fn lanes_are_enforced_at_exactly_the_exported_bounds() {
        let mut s = IndexState::new(2000.0).unwrap();
        swap_station(&mut s, 1, MIN_SWAP_LANES, 180).unwrap();
        swap_station(&mut s, 2, MAX_LANES, 180).unwrap();
        assert_eq!(
            field_of(swap_station(&mut s, 3, MAX_LANES + 1, 180).unwrap_err()),
            "lanes"
        );
        assert_eq!(
            field_of(swap_station(&mut s, 4, MIN_SWAP_LANES - 1, 180).unwrap_err()),
            "lanes"
        );
        assert_eq!(
            field_of(swap_station(&mut s, 5, u16::MAX, 180).unwrap_err()),
            "lanes"
        );
        // A charging station has no lanes, but may not smuggle in more than the bound either.
        let charging = |s: &mut IndexState, id: u64, lanes: u16| {
            s.load_stations(
                &[id],
                &[STATION_CHARGING],
                &[1],
                &[31.2],
                &[121.4],
                &[lanes],
                &[0],
            )
        };
        charging(&mut s, 6, 0).unwrap();
        assert_eq!(field_of(charging(&mut s, 7, MAX_LANES + 1).unwrap_err()), "lanes");
        assert_eq!(s.stations.len(), 3, "a refused row leaves the index unchanged");
    }

    #[test]
    fn swap_time_is_enforced_at_exactly_the_exported_bounds() {
        let mut s = IndexState::new(2000.0).unwrap();
        swap_station(&mut s, 1, 1, MIN_SWAP_TIME_S).unwrap();
        swap_station(&mut s, 2, 1, MAX_SWAP_TIME_S).unwrap();
        assert_eq!(
            field_of(swap_station(&mut s, 3, 1, MAX_SWAP_TIME_S + 1).unwrap_err()),
            "swap_time_s"
        );
        assert!(swap_station(&mut s, 4, 1, MIN_SWAP_TIME_S - 1).is_err());
    }

    #[test]
    fn positions_are_enforced_at_exactly_the_exported_bounds() {
        let mut s = IndexState::new(2000.0).unwrap();
        let at = |s: &mut IndexState, id: u64, lat: f64, lng: f64| {
            s.load_stations(&[id], &[STATION_CHARGING], &[1], &[lat], &[lng], &[0], &[0])
        };
        at(&mut s, 1, MAX_LAT_DEG, MAX_LNG_DEG).unwrap();
        at(&mut s, 2, -MAX_LAT_DEG, -MAX_LNG_DEG).unwrap();
        assert!(at(&mut s, 3, MAX_LAT_DEG + 1e-9, 0.0).is_err());
        assert!(at(&mut s, 4, 0.0, MAX_LNG_DEG + 1e-9).is_err());
    }

    #[test]
    fn connector_power_and_codes_are_enforced_at_exactly_the_exported_bounds() {
        let mut s = IndexState::new(2000.0).unwrap();
        s.load_stations(&[1], &[STATION_CHARGING], &[1], &[31.2], &[121.4], &[0], &[0])
            .unwrap();
        let conn = |s: &mut IndexState, standard: u8, power: u32, status: u8| {
            s.load_connectors(&[0], &[standard], &[power], &[status])
        };
        conn(&mut s, 1, MIN_CONNECTOR_POWER_W, 1).unwrap();
        conn(&mut s, STANDARD_MAX, MAX_CONNECTOR_POWER_W, CONN_STATUS_MAX).unwrap();
        assert_eq!(
            field_of(conn(&mut s, 1, MAX_CONNECTOR_POWER_W + 1, 1).unwrap_err()),
            "max_power_w"
        );
        assert_eq!(
            field_of(conn(&mut s, 1, MIN_CONNECTOR_POWER_W - 1, 1).unwrap_err()),
            "max_power_w"
        );
        assert_eq!(
            field_of(conn(&mut s, STANDARD_MAX + 1, 1000, 1).unwrap_err()),
            "standard"
        );
        assert_eq!(
            field_of(conn(&mut s, 1, 1000, CONN_STATUS_MAX + 1).unwrap_err()),
            "status"
        );
    }

    #[test]
    fn packs_are_enforced_at_exactly_the_exported_bounds() {
        let mut s = IndexState::new(2000.0).unwrap();
        swap_station(&mut s, 1, 1, 180).unwrap();
        let pack = |s: &mut IndexState, soc: u16, soh: u16, cycles: u32, state: u8| {
            s.load_packs(&[0], &[MAX_PACK_TYPE_ID], &[soc], &[soh], &[cycles], &[state])
        };
        pack(
            &mut s,
            MAX_PERMILLE,
            MAX_PERMILLE,
            MAX_PACK_CYCLES,
            PACK_STATE_MAX,
        )
        .unwrap();
        assert_eq!(
            field_of(pack(&mut s, MAX_PERMILLE + 1, 900, 1, 3).unwrap_err()),
            "soc"
        );
        assert_eq!(
            field_of(pack(&mut s, 900, MAX_PERMILLE + 1, 1, 3).unwrap_err()),
            "soh"
        );
        assert_eq!(
            field_of(pack(&mut s, 900, 900, MAX_PACK_CYCLES + 1, 3).unwrap_err()),
            "cycles"
        );
        assert_eq!(
            field_of(pack(&mut s, 900, 900, 1, PACK_STATE_MAX + 1).unwrap_err()),
            "state"
        );
    }

    #[test]
    fn unit_codes_are_enforced_at_exactly_the_exported_bounds() {
        let unit = |kind: u8, status: u8, mask: u32| UnitRows {
            ids: vec![1],
            kind: vec![kind],
            operator: vec![1],
            lat: vec![31.2],
            lng: vec![121.4],
            status: vec![status],
            energy_wh: vec![0],
            power_w: vec![0],
            connector_mask: vec![mask],
            skills: vec![0],
            shift_start: vec![0],
            shift_end: vec![1],
        };
        let mut s = IndexState::new(2000.0).unwrap();
        s.load_mobile(&unit(UNIT_ENGINEER, UNIT_STATUS_MAX, UNIT_CONNECTOR_MASK))
            .unwrap();
        let mut s = IndexState::new(2000.0).unwrap();
        assert_eq!(
            field_of(s.load_mobile(&unit(UNIT_ENGINEER + 1, 1, 0)).unwrap_err()),
            "kind"
        );
        assert_eq!(
            field_of(s.load_mobile(&unit(1, UNIT_STATUS_MAX + 1, 0)).unwrap_err()),
            "status"
        );
        assert_eq!(
            field_of(s.load_mobile(&unit(1, 1, UNIT_CONNECTOR_MASK + 1)).unwrap_err()),
            "connector_mask"
        );
    }
}
