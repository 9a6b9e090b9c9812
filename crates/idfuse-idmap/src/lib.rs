//! Idmapped mounts and user namespaces from util-linux map specs, and a
//! probe that says in words why a mount cannot be idmapped. This crate
//! knows nothing of FUSE beyond recognising its mounts in explanations.
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
