//! The `voltcloud._core` extension module. This file only registers what the modules export.

pub mod batteries;
pub mod columns;
pub mod enums;
pub mod errors;
pub mod gbt32960;
pub mod geo;
pub mod gil;
pub mod index;
pub mod limits;
pub mod options;
pub mod routing;
pub mod traffic;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("VoltcloudCoreError", py.get_type::<errors::VoltcloudCoreError>())?;
    m.add("InvalidInputError", py.get_type::<errors::InvalidInputError>())?;
    m.add("NotFoundError", py.get_type::<errors::NotFoundError>())?;
    m.add("ConflictError", py.get_type::<errors::ConflictError>())?;
    m.add("InfeasibleError", py.get_type::<errors::InfeasibleError>())?;
    enums::register(m)?;
    geo::register(m)?;
    index::register(m)?;
    limits::register(m)?;
    traffic::register(m)?;
    options::register(m)?;
    batteries::register(m)?;
    routing::register(m)?;
    gbt32960::register(m)?;
    Ok(())
}
