//! idfuse-fs
