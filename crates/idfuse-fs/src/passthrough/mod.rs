//! Passthrough mirror (being written).
