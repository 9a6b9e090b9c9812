//! idfuse-idmap
