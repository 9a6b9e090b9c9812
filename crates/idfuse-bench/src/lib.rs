//! idfuse-bench (being written).
