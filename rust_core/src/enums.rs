//! `_core.ENUM_NUMBERS`: every enum number the engine uses, by enum and member name, so Python maps its
//! enums to the engine's by name and tests/unit/test_enum_numbers.py pins them to the proto.

use crate::index::*;
use crate::options::{MODE_CHARGE, MODE_MOBILE_VAN, MODE_SWAP, MODE_VALET};
use pyo3::prelude::*;
use pyo3::types::PyDict;

type Members = &'static [(&'static str, u8)];

/// (enum, members): enums named as in the proto where the proto has them (members without the prefix).
pub const ENUM_NUMBERS: &[(&str, Members)] = &[
    (
        "StationKind",
        &[("SWAP", STATION_SWAP), ("CHARGING", STATION_CHARGING)],
    ),
    (
        "PackState",
        &[
            ("IN_VEHICLE", PACK_IN_VEHICLE),
            ("CHARGING", PACK_CHARGING),
            ("READY", PACK_READY),
            ("RESERVED", PACK_RESERVED),
            ("QUARANTINED", PACK_QUARANTINED),
            ("WITHDRAWN", PACK_WITHDRAWN),
            ("IN_TRANSIT", PACK_IN_TRANSIT),
        ],
    ),
    (
        "ConnectorStatus",
        &[
            ("AVAILABLE", CONN_AVAILABLE),
            ("OCCUPIED", CONN_OCCUPIED),
            ("RESERVED", CONN_RESERVED),
            ("FAULTED", CONN_FAULTED),
            ("UNAVAILABLE", CONN_UNAVAILABLE),
            ("OFFLINE", CONN_OFFLINE),
        ],
    ),
    (
        "ConnectorStandard",
        &[
            ("GBT_DC", STANDARD_GBT_DC),
            ("GBT_AC", STANDARD_GBT_AC),
            ("CCS2", STANDARD_CCS2),
            ("CHADEMO", STANDARD_CHADEMO),
            ("TYPE2", STANDARD_TYPE2),
        ],
    ),
    (
        "PowerUpMode",
        &[
            ("SWAP", MODE_SWAP),
            ("CHARGE", MODE_CHARGE),
            ("VALET", MODE_VALET),
            ("MOBILE_VAN", MODE_MOBILE_VAN),
        ],
    ),
    (
        "UnitKind",
        &[
            ("VAN", UNIT_VAN),
            ("SPECIALIST", UNIT_SPECIALIST),
            ("ENGINEER", UNIT_ENGINEER),
        ],
    ),
    (
        "EngineUnitStatus",
        &[
            ("AVAILABLE", UNIT_AVAILABLE),
            ("BUSY", UNIT_BUSY),
            ("OFF_SHIFT", UNIT_OFF_SHIFT),
            ("RESERVED", UNIT_RESERVED),
            ("OFFLINE", UNIT_OFFLINE),
        ],
    ),
];

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let out = PyDict::new(py);
    for (name, members) in ENUM_NUMBERS {
        let d = PyDict::new(py);
        for (member, number) in members.iter() {
            d.set_item(member, number)?;
        }
        out.set_item(name, d)?;
    }
    m.add("ENUM_NUMBERS", out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_checks_cover_every_member() {
        let max = |name: &str| {
            let (_, members) = ENUM_NUMBERS.iter().find(|(n, _)| *n == name).unwrap();
            members.iter().map(|m| m.1).max().unwrap()
        };
        assert_eq!(max("PackState"), PACK_STATE_MAX);
        assert_eq!(max("ConnectorStatus"), CONN_STATUS_MAX);
        assert_eq!(max("ConnectorStandard"), STANDARD_MAX);
        assert_eq!(max("EngineUnitStatus"), UNIT_STATUS_MAX);
    }
}
