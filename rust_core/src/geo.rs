//! Coordinates, geodesic distances and spatial cells.

use crate::errors::{finite, CoreError, CoreResult};
use crate::limits::{MAX_LAT_DEG, MAX_LNG_DEG};
use pyo3::prelude::*;

pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatLng {
    pub lat: f64,
    pub lng: f64,
}

impl LatLng {
    pub fn new(lat: f64, lng: f64) -> CoreResult<Self> {
        let lat = finite("lat", lat)?;
        let lng = finite("lng", lng)?;
        if !(-MAX_LAT_DEG..=MAX_LAT_DEG).contains(&lat) {
            return Err(CoreError::invalid(
                "lat",
                format!("must be within [-90, 90], got {lat}"),
            ));
        }
        if !(-MAX_LNG_DEG..=MAX_LNG_DEG).contains(&lng) {
            return Err(CoreError::invalid(
                "lng",
                format!("must be within [-180, 180], got {lng}"),
            ));
        }
        Ok(LatLng { lat, lng })
    }
}

/// Great-circle distance in metres (haversine on the mean Earth radius; < 0.5 % from the ellipsoid).
pub fn haversine_m(a: LatLng, b: LatLng) -> f64 {
    let (phi1, phi2) = (a.lat.to_radians(), b.lat.to_radians());
    let dphi = phi2 - phi1;
    let dlambda = (b.lng - a.lng).to_radians();
    let h = (dphi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (dlambda / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

/// A square-ish grid cell: latitude rows of `size_m`, longitude columns of the same width at the
/// equator. Cells are cheap keys for the spatial index and the road-condition overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cell {
    pub row: i32,
    pub col: i32,
}

pub fn cell_degrees(size_m: f64) -> f64 {
    size_m / (EARTH_RADIUS_M * std::f64::consts::PI / 180.0)
}

pub fn cell_of(p: LatLng, size_m: f64) -> Cell {
    let deg = cell_degrees(size_m);
    Cell {
        row: (p.lat / deg).floor() as i32,
        col: (p.lng / deg).floor() as i32,
    }
}

/// Packs a cell into one u64 so Python can use it as a dictionary key or a database column.
pub fn cell_id(cell: Cell) -> u64 {
    ((cell.row as u32 as u64) << 32) | (cell.col as u32 as u64)
}

pub fn cell_from_id(id: u64) -> Cell {
    Cell {
        row: (id >> 32) as u32 as i32,
        col: id as u32 as i32,
    }
}

fn validate_cell_size(size_m: f64) -> CoreResult<f64> {
    let size_m = finite("cell_size_m", size_m)?;
    if !(10.0..=1_000_000.0).contains(&size_m) {
        return Err(CoreError::invalid(
            "cell_size_m",
            format!("must be within [10, 1e6] metres, got {size_m}"),
        ));
    }
    Ok(size_m)
}

/// Distance in metres between two WGS84 points.
#[pyfunction]
pub fn distance_m(lat1: f64, lng1: f64, lat2: f64, lng2: f64) -> PyResult<f64> {
    Ok(haversine_m(LatLng::new(lat1, lng1)?, LatLng::new(lat2, lng2)?))
}

/// The id of the grid cell of side `cell_size_m` that holds the point.
#[pyfunction]
pub fn cell_index(lat: f64, lng: f64, cell_size_m: f64) -> PyResult<u64> {
    let size_m = validate_cell_size(cell_size_m)?;
    Ok(cell_id(cell_of(LatLng::new(lat, lng)?, size_m)))
}

/// The south-west corner of a cell, the inverse of `cell_index` up to the cell size.
#[pyfunction]
pub fn cell_origin(cell: u64, cell_size_m: f64) -> PyResult<(f64, f64)> {
    let size_m = validate_cell_size(cell_size_m)?;
    let deg = cell_degrees(size_m);
    let c = cell_from_id(cell);
    Ok((c.row as f64 * deg, c.col as f64 * deg))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(distance_m, m)?)?;
    m.add_function(wrap_pyfunction!(cell_index, m)?)?;
    m.add_function(wrap_pyfunction!(cell_origin, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shanghai_to_beijing_is_about_1067_km() {
        let sh = LatLng::new(31.2304, 121.4737).unwrap();
        let bj = LatLng::new(39.9042, 116.4074).unwrap();
        let d = haversine_m(sh, bj);
        assert!((d - 1_067_000.0).abs() < 5_000.0, "{d}");
    }

    #[test]
    fn rejects_nan_and_out_of_range() {
        assert!(LatLng::new(f64::NAN, 0.0).is_err());
        assert!(LatLng::new(91.0, 0.0).is_err());
        assert!(LatLng::new(0.0, 181.0).is_err());
    }

    proptest! {
        #[test]
        fn distance_is_symmetric_and_non_negative(
            a in -89.0f64..89.0, b in -179.0f64..179.0, c in -89.0f64..89.0, d in -179.0f64..179.0
        ) {
            let p = LatLng::new(a, b).unwrap();
            let q = LatLng::new(c, d).unwrap();
            let pq = haversine_m(p, q);
            prop_assert!(pq >= 0.0);
            prop_assert!((pq - haversine_m(q, p)).abs() < 1e-6);
            prop_assert!(pq <= std::f64::consts::PI * EARTH_RADIUS_M + 1.0);
        }

        #[test]
        fn cell_id_round_trips(a in -89.0f64..89.0, b in -179.0f64..179.0, size in 10.0f64..100_000.0) {
            let cell = cell_of(LatLng::new(a, b).unwrap(), size);
            prop_assert_eq!(cell_from_id(cell_id(cell)), cell);
        }
    }
}
