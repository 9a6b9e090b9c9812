//! Flag words of the protocol as `bitflags` types.
#![allow(missing_docs)]

use bitflags::bitflags;

bitflags! {
    /// INIT flags, bits 0..=63 (`flags | flags2 << 32`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct InitFlags: u64 {
        const ASYNC_READ = 1 << 0;
        const POSIX_LOCKS = 1 << 1;
        const FILE_OPS = 1 << 2;
        const ATOMIC_O_TRUNC = 1 << 3;
        const EXPORT_SUPPORT = 1 << 4;
        const BIG_WRITES = 1 << 5;
        const DONT_MASK = 1 << 6;
        const SPLICE_WRITE = 1 << 7;
        const SPLICE_MOVE = 1 << 8;
        const SPLICE_READ = 1 << 9;
        const FLOCK_LOCKS = 1 << 10;
        const HAS_IOCTL_DIR = 1 << 11;
        const AUTO_INVAL_DATA = 1 << 12;
        const DO_READDIRPLUS = 1 << 13;
        const READDIRPLUS_AUTO = 1 << 14;
        const ASYNC_DIO = 1 << 15;
        const WRITEBACK_CACHE = 1 << 16;
        const NO_OPEN_SUPPORT = 1 << 17;
        const PARALLEL_DIROPS = 1 << 18;
        const HANDLE_KILLPRIV = 1 << 19;
        const POSIX_ACL = 1 << 20;
        const ABORT_ERROR = 1 << 21;
        const MAX_PAGES = 1 << 22;
        const CACHE_SYMLINKS = 1 << 23;
        const NO_OPENDIR_SUPPORT = 1 << 24;
        const EXPLICIT_INVAL_DATA = 1 << 25;
        const MAP_ALIGNMENT = 1 << 26;
        const SUBMOUNTS = 1 << 27;
        const HANDLE_KILLPRIV_V2 = 1 << 28;
        const SETXATTR_EXT = 1 << 29;
        const INIT_EXT = 1 << 30;
        const INIT_RESERVED = 1 << 31;
        const SECURITY_CTX = 1 << 32;
        const HAS_INODE_DAX = 1 << 33;
        const CREATE_SUPP_GROUP = 1 << 34;
        const HAS_EXPIRE_ONLY = 1 << 35;
        const DIRECT_IO_ALLOW_MMAP = 1 << 36;
        const PASSTHROUGH = 1 << 37;
        const NO_EXPORT_SUPPORT = 1 << 38;
        const HAS_RESEND = 1 << 39;
        const ALLOW_IDMAP = 1 << 40;
        const OVER_IO_URING = 1 << 41;
        const REQUEST_TIMEOUT = 1 << 42;
    }

    /// `fuse_setattr_in.valid`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct SetattrValid: u32 {
        const MODE = 1 << 0;
        const UID = 1 << 1;
        const GID = 1 << 2;
        const SIZE = 1 << 3;
        const ATIME = 1 << 4;
        const MTIME = 1 << 5;
        const FH = 1 << 6;
        const ATIME_NOW = 1 << 7;
        const MTIME_NOW = 1 << 8;
        const LOCKOWNER = 1 << 9;
        const CTIME = 1 << 10;
        const KILL_SUIDGID = 1 << 11;
    }

    /// `fuse_open_out.open_flags` (FOPEN_*).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct OpenOutFlags: u32 {
        const DIRECT_IO = 1 << 0;
        const KEEP_CACHE = 1 << 1;
        const NONSEEKABLE = 1 << 2;
        const CACHE_DIR = 1 << 3;
        const STREAM = 1 << 4;
        const NOFLUSH = 1 << 5;
        const PARALLEL_DIRECT_WRITES = 1 << 6;
        const PASSTHROUGH = 1 << 7;
    }

    /// `fuse_write_in.write_flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct WriteFlags: u32 {
        const CACHE = 1 << 0;
        const LOCKOWNER = 1 << 1;
        const KILL_SUIDGID = 1 << 2;
    }

    /// `fuse_open_in.open_flags` / `fuse_create_in.open_flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct OpenInFlags: u32 {
        const KILL_SUIDGID = 1 << 0;
    }

    /// `fuse_setxattr_in.setxattr_flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct SetxattrFlags: u32 {
        const ACL_KILL_SGID = 1 << 0;
    }

    /// `fuse_release_in.release_flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct ReleaseFlags: u32 {
        const FLUSH = 1 << 0;
        const FLOCK_UNLOCK = 1 << 1;
    }

    /// `fuse_attr.flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct AttrFlags: u32 {
        const SUBMOUNT = 1 << 0;
        const DAX = 1 << 1;
    }

    /// `fuse_ioctl_in.flags` / `fuse_ioctl_out.flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct IoctlFlags: u32 {
        const COMPAT = 1 << 0;
        const UNRESTRICTED = 1 << 1;
        const RETRY = 1 << 2;
        const BIT32 = 1 << 3;
        const DIR = 1 << 4;
        const COMPAT_X32 = 1 << 5;
    }
}

/// `FUSE_GETATTR_FH`
pub const GETATTR_FH: u32 = 1 << 0;
/// `FUSE_LK_FLOCK`
pub const LK_FLOCK: u32 = 1 << 0;
/// `FUSE_READ_LOCKOWNER`
pub const READ_LOCKOWNER: u32 = 1 << 1;
/// `FUSE_FSYNC_FDATASYNC`
pub const FSYNC_FDATASYNC: u32 = 1 << 0;
/// `FUSE_POLL_SCHEDULE_NOTIFY`
pub const POLL_SCHEDULE_NOTIFY: u32 = 1 << 0;
/// `FUSE_EXPIRE_ONLY` (in `notify_inval_entry_out.flags`)
pub const EXPIRE_ONLY: u32 = 1 << 0;
/// `RENAME_NOREPLACE`
pub const RENAME_NOREPLACE: u32 = 1 << 0;
/// `RENAME_EXCHANGE`
pub const RENAME_EXCHANGE: u32 = 1 << 1;
/// `RENAME_WHITEOUT`
pub const RENAME_WHITEOUT: u32 = 1 << 2;
