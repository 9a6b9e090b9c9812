//! Flag words of the protocol as `bitflags` types. Constant names are the
//! kernel's without their prefix (`FUSE_`, `FOPEN_`, `FATTR_`...).

use bitflags::bitflags;

bitflags! {
    /// INIT flags, bits 0..=63 (`flags | flags2 << 32`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct InitFlags: u64 {
        /// Reads may be sent in parallel and out of order.
        const ASYNC_READ = 1 << 0;
        /// The server implements POSIX locks (GETLK/SETLK).
        const POSIX_LOCKS = 1 << 1;
        /// Reserved (file operations on handles).
        const FILE_OPS = 1 << 2;
        /// OPEN handles `O_TRUNC` itself.
        const ATOMIC_O_TRUNC = 1 << 3;
        /// Lookups of `.` and `..` are answered (NFS export).
        const EXPORT_SUPPORT = 1 << 4;
        /// Writes larger than 4 KiB.
        const BIG_WRITES = 1 << 5;
        /// The kernel does not apply the umask; the server gets it.
        const DONT_MASK = 1 << 6;
        /// Replies may be spliced into `/dev/fuse`.
        const SPLICE_WRITE = 1 << 7;
        /// Spliced pages may be moved.
        const SPLICE_MOVE = 1 << 8;
        /// Requests may be spliced out of `/dev/fuse`.
        const SPLICE_READ = 1 << 9;
        /// The server implements BSD `flock` locks.
        const FLOCK_LOCKS = 1 << 10;
        /// ioctl on directories.
        const HAS_IOCTL_DIR = 1 << 11;
        /// Drop cached data when the mtime or size changes.
        const AUTO_INVAL_DATA = 1 << 12;
        /// READDIRPLUS is supported.
        const DO_READDIRPLUS = 1 << 13;
        /// The kernel chooses between READDIR and READDIRPLUS.
        const READDIRPLUS_AUTO = 1 << 14;
        /// Asynchronous direct I/O.
        const ASYNC_DIO = 1 << 15;
        /// Writes are cached by the kernel and written back later.
        const WRITEBACK_CACHE = 1 << 16;
        /// OPEN may be answered `ENOSYS` and is not sent again.
        const NO_OPEN_SUPPORT = 1 << 17;
        /// Lookups and readdirs in one directory may run in parallel.
        const PARALLEL_DIROPS = 1 << 18;
        /// The server clears setuid/setgid on write, chown and truncate.
        const HANDLE_KILLPRIV = 1 << 19;
        /// The kernel enforces POSIX ACLs (implies default permissions).
        const POSIX_ACL = 1 << 20;
        /// Reads of an aborted connection fail with `ECONNABORTED`.
        const ABORT_ERROR = 1 << 21;
        /// `max_pages` in the INIT reply is honoured.
        const MAX_PAGES = 1 << 22;
        /// Symlink targets are cached.
        const CACHE_SYMLINKS = 1 << 23;
        /// OPENDIR may be answered `ENOSYS` and is not sent again.
        const NO_OPENDIR_SUPPORT = 1 << 24;
        /// Cached data is dropped only on explicit notification.
        const EXPLICIT_INVAL_DATA = 1 << 25;
        /// `map_alignment` in the INIT reply is valid (DAX).
        const MAP_ALIGNMENT = 1 << 26;
        /// Inodes may be marked as submount points.
        const SUBMOUNTS = 1 << 27;
        /// The server clears setuid/setgid, told when by `KILL_SUIDGID` flags.
        const HANDLE_KILLPRIV_V2 = 1 << 28;
        /// SETXATTR carries the extended 16-byte argument.
        const SETXATTR_EXT = 1 << 29;
        /// The INIT argument and reply carry `flags2` (bits 32..63).
        const INIT_EXT = 1 << 30;
        /// Reserved.
        const INIT_RESERVED = 1 << 31;
        /// Creating requests carry the new inode's security context.
        const SECURITY_CTX = 1 << 32;
        /// Per-inode DAX.
        const HAS_INODE_DAX = 1 << 33;
        /// Creating requests carry the parent's group when the caller is in it.
        const CREATE_SUPP_GROUP = 1 << 34;
        /// INVAL_ENTRY accepts `EXPIRE_ONLY`.
        const HAS_EXPIRE_ONLY = 1 << 35;
        /// Shared mmap on files opened with `DIRECT_IO`.
        const DIRECT_IO_ALLOW_MMAP = 1 << 36;
        /// Reads and writes may go straight to a backing file.
        const PASSTHROUGH = 1 << 37;
        /// The filesystem refuses NFS export.
        const NO_EXPORT_SUPPORT = 1 << 38;
        /// The kernel accepts the RESEND notification.
        const HAS_RESEND = 1 << 39;
        /// The mount may be idmapped; caller ids are withheld except on creates.
        const ALLOW_IDMAP = 1 << 40;
        /// Requests may be served over io_uring.
        const OVER_IO_URING = 1 << 41;
        /// The INIT reply's `request_timeout` is honoured.
        const REQUEST_TIMEOUT = 1 << 42;
    }

    /// `fuse_setattr_in.valid`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct SetattrValid: u32 {
        /// `mode` is set.
        const MODE = 1 << 0;
        /// `uid` is set.
        const UID = 1 << 1;
        /// `gid` is set.
        const GID = 1 << 2;
        /// `size` is set.
        const SIZE = 1 << 3;
        /// `atime` is set.
        const ATIME = 1 << 4;
        /// `mtime` is set.
        const MTIME = 1 << 5;
        /// `fh` is set.
        const FH = 1 << 6;
        /// Set atime to now.
        const ATIME_NOW = 1 << 7;
        /// Set mtime to now.
        const MTIME_NOW = 1 << 8;
        /// `lock_owner` is set.
        const LOCKOWNER = 1 << 9;
        /// `ctime` is set.
        const CTIME = 1 << 10;
        /// Clear setuid/setgid bits.
        const KILL_SUIDGID = 1 << 11;
    }

    /// `fuse_open_out.open_flags` (FOPEN_*).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct OpenOutFlags: u32 {
        /// Bypass the page cache for this open file.
        const DIRECT_IO = 1 << 0;
        /// Keep cached data from earlier opens.
        const KEEP_CACHE = 1 << 1;
        /// The file cannot seek.
        const NONSEEKABLE = 1 << 2;
        /// Cache the directory listing.
        const CACHE_DIR = 1 << 3;
        /// A stream: no file position.
        const STREAM = 1 << 4;
        /// Do not send FLUSH on close.
        const NOFLUSH = 1 << 5;
        /// Direct writes to this file may run in parallel.
        const PARALLEL_DIRECT_WRITES = 1 << 6;
        /// I/O goes to the backing file given in `backing_id`.
        const PASSTHROUGH = 1 << 7;
    }

    /// `fuse_write_in.write_flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct WriteFlags: u32 {
        /// A delayed write from the page cache (writeback).
        const CACHE = 1 << 0;
        /// `lock_owner` is valid.
        const LOCKOWNER = 1 << 1;
        /// Clear setuid/setgid bits (killpriv v2).
        const KILL_SUIDGID = 1 << 2;
    }

    /// `fuse_open_in.open_flags` / `fuse_create_in.open_flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct OpenInFlags: u32 {
        /// Clear setuid/setgid bits (`O_TRUNC` by a caller without CAP_FSETID).
        const KILL_SUIDGID = 1 << 0;
    }

    /// `fuse_setxattr_in.setxattr_flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct SetxattrFlags: u32 {
        /// Clear setgid when setting a POSIX ACL.
        const ACL_KILL_SGID = 1 << 0;
    }

    /// `fuse_release_in.release_flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct ReleaseFlags: u32 {
        /// Flush before releasing.
        const FLUSH = 1 << 0;
        /// Release the `flock` locks of this owner.
        const FLOCK_UNLOCK = 1 << 1;
    }

    /// `fuse_attr.flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct AttrFlags: u32 {
        /// The inode is the root of a submount.
        const SUBMOUNT = 1 << 0;
        /// Use DAX for this inode.
        const DAX = 1 << 1;
    }

    /// `fuse_ioctl_in.flags` / `fuse_ioctl_out.flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct IoctlFlags: u32 {
        /// A 32-bit compat ioctl.
        const COMPAT = 1 << 0;
        /// Not restricted to well-formed ioctls.
        const UNRESTRICTED = 1 << 1;
        /// Retry with new iovecs.
        const RETRY = 1 << 2;
        /// 32-bit ioctl.
        const BIT32 = 1 << 3;
        /// On a directory.
        const DIR = 1 << 4;
        /// An x32 compat ioctl.
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
