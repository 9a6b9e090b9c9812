//! Filesystems built on idfuse: `memfs`, a complete in-memory filesystem,
//! and `passthrough`, a mirror of a directory that is correct on idmapped
//! mounts.
#![warn(missing_docs)]

pub mod memfs;
pub mod passthrough;
