//! idfuse: a FUSE server framework that works on Linux idmapped mounts.
//!
//! A [`Filesystem`] answers requests; a [`Session`] negotiates INIT with the
//! kernel, mounts, and runs worker threads. Once `FUSE_ALLOW_IDMAP` is
//! negotiated the kernel makes every permission decision and withholds
//! caller ids except on inode creation, where they arrive as an [`Owner`];
//! the types make it impossible to ask for a caller id that does not exist.

pub mod fs;
pub mod mount;
pub mod session;
pub mod uring;

use std::path::PathBuf;

pub use fs::*;
pub use idfuse_abi as abi;
pub use idfuse_abi::InitFlags;
pub use mount::{
    check_mountpoint, parse_options, MountMethod, MountOptions, Session, KNOWN_OPTIONS,
};
pub use rustix::io::Errno;
pub use session::{Device, Loopback, Notifier, Observer, RawObserver, SessionConfig};
pub use uring::{IoUringMode, Transport, TransportStats};

/// The result of a filesystem operation: an errno is the answer the caller
/// of the syscall sees.
pub type Result<T> = std::result::Result<T, Errno>;

/// Why a session could not be set up. Every message says what, why and
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/dev/fuse` cannot be opened.
    #[error("cannot open /dev/fuse: {0}; {hint}", hint = device_hint(*.0))]
    NoDevice(Errno),
    /// The mountpoint does not exist.
    #[error("mountpoint {0} does not exist; create it with mkdir first")]
    MountpointMissing(PathBuf),
    /// The mountpoint is not a directory.
    #[error("mountpoint {0} is not a directory; FUSE mounts here need a directory")]
    NotADirectory(PathBuf),
    /// An `-o` option nobody knows.
    #[error("unknown mount option `{option}`; known options: {known}", known = KNOWN_OPTIONS)]
    UnknownOption {
        /// the option as given
        option: String,
    },
    /// An `-o` option with a bad value.
    #[error("mount option `{option}`: {why}")]
    BadOption {
        /// the option as given
        option: String,
        /// what is wrong
        why: String,
    },
    /// Idmap support asked for without `default_permissions`.
    #[error("FUSE_ALLOW_IDMAP needs the `default_permissions` mount option: without it the kernel refuses every request with ECONNREFUSED. Drop `nodefault_permissions`, or turn idmap support off (--idmap-support false)")]
    IdmapNeedsDefaultPermissions,
    /// Passthrough and writeback cache together.
    #[error("`writeback_cache` cannot be combined with FUSE passthrough: the kernel refuses passthrough backing files on a writeback-cache connection. Turn passthrough off (--passthrough false) or drop writeback_cache")]
    PassthroughWithWriteback,
    /// A mount step failed.
    #[error("mounting failed at {step}: {source}{sep}{hint}", sep = if hint.is_empty() { "" } else { "; " })]
    Mount {
        /// the syscall or helper that failed
        step: &'static str,
        /// its error
        source: Errno,
        /// what the kernel logged or what to do
        hint: String,
    },
    /// INIT failed.
    #[error("FUSE INIT failed: {0}")]
    Init(String),
    /// io_uring was asked for (`--io-uring on`) and cannot be used.
    #[error("FUSE over io_uring cannot be used: {0}. Or mount with --io-uring auto (use it where it works) or off")]
    IoUring(String),
    /// Unmounting failed.
    #[error("unmounting {target} failed: {why}")]
    Unmount {
        /// the mountpoint
        target: PathBuf,
        /// why
        why: String,
    },
    /// Another I/O error.
    #[error("{what}: {source}")]
    Io {
        /// what was being done
        what: String,
        /// the error
        source: std::io::Error,
    },
}

fn device_hint(e: Errno) -> &'static str {
    match e {
        Errno::NOENT => "this machine has no FUSE device: load the module (modprobe fuse), or pass /dev/fuse into the container",
        Errno::NODEV | Errno::NXIO => "the kernel has no FUSE support (CONFIG_FUSE_FS); load the fuse module",
        Errno::ACCESS | Errno::PERM => "permission denied: run as root, or make /dev/fuse accessible (distributions ship it mode 0666)",
        _ => "check that /dev/fuse is the FUSE character device (10, 229)",
    }
}
