"""Cross-cutting platform pieces: database, auth, errors, tracing, ids and the clock."""
