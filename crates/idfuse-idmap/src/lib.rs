//! Idmapped mounts and user namespaces from util-linux map specs, and a
//! probe that says in words why a mount cannot be idmapped. This crate
//! knows nothing of FUSE beyond recognising its mounts in explanations.
//!
//! A spec such as `b:0:100000:65536` maps ids on the filesystem (FROM) to ids
//! seen through the mount (TO). Parsing checks the ranges once; the parsed
//! [`IdMap`] then maps ids both ways:
//!
//! ```
//! use idfuse_idmap::IdMap;
//!
//! let map: IdMap = "b:0:100000:65536".parse().expect("a valid spec");
//! assert_eq!(map.map_uid_to_mount(123), Some(100123)); // owner 123 shows as 100123
//! assert_eq!(map.map_uid_to_fs(100042), Some(42)); // created by 100042, stored as 42
//! assert_eq!(map.map_uid_to_fs(7), None); // unmapped: the kernel refuses the create
//! assert!("b:0:100000:10 b:5:200000:10".parse::<IdMap>().is_err()); // overlapping
//! ```
//!
//! Making the view needs CAP_SYS_ADMIN, so this one only compiles here:
//!
//! ```no_run
//! use std::path::Path;
//! use idfuse_idmap::{can_idmap, idmap_mount, IdMap, IdmapOptions, UserNamespace, Verdict};
//!
//! # fn main() -> Result<(), idfuse_idmap::Error> {
//! let map: IdMap = "b:0:100000:65536".parse()?;
//! let ns = UserNamespace::create(&map)?;
//! if let Verdict::Unsupported(reason) = can_idmap(Path::new("/srv/data")) {
//!     eprintln!("{reason}"); // e.g. a FUSE server that did not opt in
//! }
//! let view = idmap_mount(Path::new("/srv/data"), Path::new("/mnt/view"), &ns, IdmapOptions::default())?;
//! // ... the view is detached when `view` is dropped.
//! # drop(view);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod mount;
pub mod probe;
mod show;
mod spec;
mod userns;

use std::path::PathBuf;

pub use mount::{attach, clone_tree, idmap_mount, set_idmap, IdmapOptions, MountGuard};
pub use probe::{can_idmap, Reason, Verdict};
pub use show::show;
pub use spec::{IdKind, IdMap, IdRange, MapSource, SpecError, MAX_RANGES};
pub use userns::UserNamespace;

/// What went wrong, in words.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed map spec.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A user namespace could not be made or opened.
    #[error("user namespace: {0}")]
    Userns(String),
    /// A mount step failed.
    #[error("{step} on {}: {why}", path.display())]
    Mount {
        /// the syscall
        step: &'static str,
        /// the path
        path: PathBuf,
        /// why
        why: String,
    },
    /// The kernel refused the idmap; the reason says why.
    #[error("cannot idmap this mount: {0}")]
    Idmap(Reason),
    /// The idmap of a mount could not be read.
    #[error("cannot show the idmap: {0}")]
    Show(String),
}
