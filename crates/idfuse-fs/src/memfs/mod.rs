//! In-memory filesystem (being written).
