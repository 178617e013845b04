//! Numpy columns in, numpy columns out: the one place engine inputs cross the boundary as arrays.
//!
//! Inputs are accepted as any 1-D array-like. An array of the exact dtype is read without conversion;
//! anything else goes through `numpy.asarray` and is range-checked value by value, so a float where an
//! integer is expected, a negative id or an out-of-range SOC is an `InvalidInputError`, never a wrap.

use crate::errors::{CoreError, CoreResult};
use numpy::{Element, PyReadonlyArray1};
use pyo3::prelude::*;

/// A numpy element type an engine column can have.
pub trait Column: Element + Copy {
    const FLOAT: bool;
    fn from_i64(v: i64) -> Option<Self>;
    fn from_f64(v: f64) -> Option<Self>;
    fn from_u64(v: u64) -> Option<Self> {
        i64::try_from(v).ok().and_then(Self::from_i64)
    }
}

macro_rules! int_column {
    ($($t:ty),*) => {$(
        impl Column for $t {
            const FLOAT: bool = false;
            fn from_i64(v: i64) -> Option<Self> { <$t>::try_from(v).ok() }
            fn from_f64(_: f64) -> Option<Self> { None }
        }
    )*};
}
int_column!(u8, u16, u32, i32, i64);

impl Column for u64 {
    const FLOAT: bool = false;
    fn from_i64(v: i64) -> Option<Self> {
        u64::try_from(v).ok()
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_u64(v: u64) -> Option<Self> {
        Some(v)
    }
}

impl Column for f64 {
    const FLOAT: bool = true;
    fn from_i64(v: i64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_f64(v: f64) -> Option<Self> {
        Some(v)
    }
}

/// Reads a 1-D column into a vector, converting and range-checking when the dtype is not exact.
pub fn column<T: Column>(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<Vec<T>> {
    if let Ok(arr) = obj.extract::<PyReadonlyArray1<'_, T>>() {
        return Ok(match arr.as_slice() {
            Ok(s) => s.to_vec(),
            Err(_) => arr.as_array().iter().copied().collect(),
        });
    }
    let py = obj.py();
    let np = py.import("numpy")?;
    let arr = np
        .call_method1("asarray", (obj,))
        .map_err(|e| CoreError::invalid(field, format!("is not array-like: {e}")))?;
    let ndim: usize = arr.getattr("ndim")?.extract()?;
    if ndim != 1 {
        return Err(
            CoreError::invalid(field, format!("must be 1-dimensional, got {ndim} dimensions")).into(),
        );
    }
    let kind: String = arr.getattr("dtype")?.getattr("kind")?.extract()?;
    let len: usize = arr.len()?;
    if len == 0 {
        return Ok(Vec::new());
    }
    match kind.as_str() {
        "b" | "i" | "u" => {
            // uint64 beyond i64::MAX only makes sense for u64 columns.
            if kind == "u" && !T::FLOAT {
                if let Ok(a) = arr.extract::<PyReadonlyArray1<'_, u64>>() {
                    return a
                        .as_array()
                        .iter()
                        .map(|&v| T::from_u64(v).ok_or_else(|| out_of_range(field, v)))
                        .collect::<CoreResult<Vec<T>>>()
                        .map_err(Into::into);
                }
            }
            let a64 = arr.call_method1("astype", ("int64",))?;
            let a = a64.extract::<PyReadonlyArray1<'_, i64>>()?;
            a.as_array()
                .iter()
                .map(|&v| T::from_i64(v).ok_or_else(|| out_of_range(field, v)))
                .collect::<CoreResult<Vec<T>>>()
                .map_err(Into::into)
        }
        "f" if T::FLOAT => {
            let a64 = arr.call_method1("astype", ("float64",))?;
            let a = a64.extract::<PyReadonlyArray1<'_, f64>>()?;
            Ok(a.as_array()
                .iter()
                .map(|&v| T::from_f64(v).expect("float column"))
                .collect())
        }
        _ => Err(CoreError::invalid(
            field,
            format!(
                "has dtype kind '{kind}', expected {}",
                if T::FLOAT { "a number" } else { "an integer" }
            ),
        )
        .into()),
    }
}

fn out_of_range(field: &str, v: impl std::fmt::Display) -> CoreError {
    CoreError::invalid(field, format!("value {v} is out of range for this column"))
}

/// Checks that every column has the length of the first one.
pub fn same_len(columns: &[(&str, usize)]) -> CoreResult<usize> {
    let n = columns.first().map(|c| c.1).unwrap_or(0);
    for (name, len) in columns {
        if *len != n {
            return Err(CoreError::invalid(
                *name,
                format!("has length {len}, expected {n} (the length of {})", columns[0].0),
            ));
        }
    }
    Ok(n)
}

/// An optional column: `None` is `default` repeated `n` times.
pub fn opt_column<T: Column>(
    obj: Option<&Bound<'_, PyAny>>,
    field: &str,
    n: usize,
    default: T,
) -> PyResult<Vec<T>> {
    match obj {
        Some(o) if !o.is_none() => column(o, field),
        _ => Ok(vec![default; n]),
    }
}
