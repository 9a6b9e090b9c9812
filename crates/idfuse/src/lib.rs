//! idfuse: a FUSE server framework that works on Linux idmapped mounts.
//!
//! A [`Filesystem`] answers requests; a [`Session`] negotiates INIT with the
//! kernel, mounts, and runs worker threads. Once `FUSE_ALLOW_IDMAP` is
//! negotiated the kernel makes every permission decision and withholds
//! caller ids except on inode creation, where they arrive as an [`Owner`];
//! the types make it impossible to ask for a caller id that does not exist.
//!
//! A read-only filesystem with one file, mounted until someone unmounts it
//! (`examples/hello.rs` is the complete version, with a directory listing):
//!
//! ```no_run
//! use std::ffi::OsStr;
//! use std::path::Path;
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use idfuse::{
//!     Attr, AttrReply, Context, Entry, Errno, FileType, Filesystem, MountOptions, Result,
//!     Session, SessionConfig,
//! };
//!
//! struct Hello;
//!
//! const TEXT: &[u8] = b"Hello!\n";
//!
//! fn attr(ino: u64) -> Result<Attr> {
//!     let (mode, size) = match ino {
//!         1 => (FileType::Directory.mode() | 0o555, 0),
//!         2 => (FileType::RegularFile.mode() | 0o444, TEXT.len() as u64),
//!         _ => return Err(Errno::NOENT),
//!     };
//!     Ok(Attr { ino, mode, size, nlink: 1, ..Attr::default() })
//! }
//!
//! impl Filesystem for Hello {
//!     fn lookup(&self, _ctx: &Context<'_>, parent: u64, name: &OsStr) -> Result<Entry> {
//!         if parent != 1 || name != "hello" {
//!             return Err(Errno::NOENT);
//!         }
//!         Ok(Entry::new(attr(2)?, Duration::from_secs(60)))
//!     }
//!     fn getattr(&self, _ctx: &Context<'_>, ino: u64, _fh: Option<u64>) -> Result<AttrReply> {
//!         Ok(AttrReply::new(attr(ino)?, Duration::from_secs(60)))
//!     }
//!     fn read(
//!         &self,
//!         _ctx: &Context<'_>,
//!         _ino: u64,
//!         _fh: u64,
//!         offset: u64,
//!         size: u32,
//!         buf: &mut Vec<u8>,
//!     ) -> Result<()> {
//!         let rest = TEXT.get(offset as usize..).unwrap_or_default();
//!         buf.extend_from_slice(&rest[..rest.len().min(size as usize)]);
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> std::result::Result<(), idfuse::Error> {
//! let options = MountOptions { read_only: true, ..MountOptions::default() };
//! let mut session =
//!     Session::mount(Arc::new(Hello), Path::new("/mnt/hello"), options, SessionConfig::default())?;
//! session.wait(); // until `umount /mnt/hello`
//! # Ok(())
//! # }
//! ```
//!
//! The session offers idmap support by default (`SessionConfig::idmap`, with
//! `default_permissions` on the mount), so the mount above can be idmapped
//! with `idfuse idmap --map b:0:100000:65536 /mnt/hello /mnt/view` or the
//! `idfuse-idmap` crate. `examples/notes.rs` shows a writable filesystem that
//! stores the [`Owner`] of each new file, `examples/clock.rs` the
//! [`Notifier`]; `docs/porting-from-fuser.md` in the repository maps fuser's
//! API onto this one.
//!
//! Workers block in `read(2)` on `/dev/fuse`. To wake them when the session
//! stops while the mount is still in use elsewhere (a lazy unmount with
//! open files, where no ENODEV comes), the first session installs a handler
//! that does nothing for one real-time signal, `SIGRTMAX - 4`, and sends
//! it to its own worker threads only. If the program already handles that
//! signal, idfuse leaves it alone and its workers poll instead, which costs
//! a little speed.
#![warn(missing_docs)]

pub mod fs;
pub mod mount;
pub mod session;
pub mod uring;

use std::path::PathBuf;

pub use fs::*;
pub use idfuse_abi as abi;
pub use idfuse_abi::InitFlags;
pub use mount::{
    check_mountpoint, known_options, parse_options, MountMethod, MountOptions, Session,
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
    #[error("unknown mount option `{option}`; known options: {known}")]
    UnknownOption {
        /// the option as given
        option: String,
        /// every option the parser took, comma-separated
        known: String,
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

fn device_hint(e: Errno) -> String {
    match e {
        Errno::NOENT => "this machine has no FUSE device: load the module (modprobe fuse), or pass /dev/fuse into the container".into(),
        Errno::NODEV | Errno::NXIO => "the kernel has no FUSE support (CONFIG_FUSE_FS); load the fuse module".into(),
        Errno::ACCESS | Errno::PERM => {
            let mode = rustix::fs::stat("/dev/fuse")
                .map(|st| format!("/dev/fuse is mode {:04o}, owned by uid {} gid {}", st.st_mode & 0o7777, st.st_uid, st.st_gid))
                .unwrap_or_else(|_| "/dev/fuse is not open to this user".into());
            format!("{mode}, and an unprivileged mount needs to open it (fusermount3 opens it as the calling user, too). Mount as root, or open the device to users as distributions ship it: `chmod 0666 /dev/fuse` as root (to keep it across reboots, a udev rule: KERNEL==\"fuse\", MODE=\"0666\")")
        }
        _ => "check that /dev/fuse is the FUSE character device (10, 229)".into(),
    }
}
