//! idfuse-conformance
