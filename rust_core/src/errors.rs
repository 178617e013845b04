//! One error enum for the engine and the one place it becomes a Python exception.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::PyErr;

create_exception!(
    _core,
    VoltcloudCoreError,
    PyException,
    "Base of every error raised by the VoltCloud engine."
);
create_exception!(
    _core,
    InvalidInputError,
    VoltcloudCoreError,
    "An argument is out of range, malformed or inconsistent."
);
create_exception!(
    _core,
    NotFoundError,
    VoltcloudCoreError,
    "A resource id is not known to the engine."
);
create_exception!(
    _core,
    ConflictError,
    VoltcloudCoreError,
    "The resource is taken or its version changed."
);
create_exception!(
    _core,
    InfeasibleError,
    VoltcloudCoreError,
    "No solution satisfies the constraints."
);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CoreError {
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: String, reason: String },
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("infeasible: {0}")]
    Infeasible(String),
}

impl CoreError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        CoreError::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

pub type CoreResult<T> = Result<T, CoreError>;

impl From<CoreError> for PyErr {
    fn from(err: CoreError) -> PyErr {
        let message = err.to_string();
        match err {
            CoreError::InvalidInput { .. } => InvalidInputError::new_err(message),
            CoreError::NotFound { .. } => NotFoundError::new_err(message),
            CoreError::Conflict(_) => ConflictError::new_err(message),
            CoreError::Infeasible(_) => InfeasibleError::new_err(message),
        }
    }
}

/// Rejects NaN and infinities, which would otherwise poison every comparison downstream.
pub fn finite(field: &str, value: f64) -> CoreResult<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(CoreError::invalid(
            field,
            format!("must be a finite number, got {value}"),
        ))
    }
}
