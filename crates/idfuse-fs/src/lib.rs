//! Filesystems built on idfuse: [`memfs`], a complete in-memory
//! filesystem, [`passthrough`], a mirror of a directory that is correct
//! on idmapped mounts, and [`overlay`], layers as kernel overlayfs stacks
//! them. All opt in to idmap: they store the [`idfuse::Owner`]
//! the kernel sends on creates and leave permission checks to the kernel.
//!
//! Mounting a mirror of `/srv/data` at `/mnt/data` (as root):
//!
//! ```no_run
//! use std::path::Path;
//! use std::sync::Arc;
//!
//! use idfuse::{MountOptions, Session, SessionConfig};
//! use idfuse_fs::passthrough::{Passthrough, PassthroughOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let fs = Passthrough::new(Path::new("/srv/data"), PassthroughOptions::default())?;
//! let mut session = Session::mount(
//!     Arc::new(fs),
//!     Path::new("/mnt/data"),
//!     MountOptions::default(),
//!     SessionConfig::default(),
//! )?;
//! session.wait();
//! # Ok(())
//! # }
//! ```
//!
//! [`memfs::MemFs::new`] with [`memfs::MemFsOptions::default`] mounts the same
//! way.
#![warn(missing_docs)]

mod backing;
pub mod memfs;
pub mod overlay;
pub mod passthrough;
