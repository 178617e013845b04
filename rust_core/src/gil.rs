//! The one helper that releases the GIL around engine work, so the asyncio loop keeps serving.

use pyo3::Python;

/// Runs `work` without the GIL. Use it for anything that can take more than ~100 µs.
pub fn without_gil<T, F>(py: Python<'_>, work: F) -> T
where
    F: Send + FnOnce() -> T,
    T: Send,
{
    py.detach(work)
}
