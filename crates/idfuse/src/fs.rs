//! The `Filesystem` trait and the values it trades with the session.
//!
//! The idmap contract lives in these types: operations that create an inode
//! receive an explicit [`Owner`]; every other operation sees the caller only
//! through [`Context::caller`], which is `None` on a session that negotiated
//! `FUSE_ALLOW_IDMAP` (the kernel withholds the ids and has already decided
//! permissions).

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use idfuse_abi::reply::DirBuf;
pub use idfuse_abi::{
    Attr, FileLock, ForgetOne, InitFlags, Kstatfs, OpenOutFlags, SetxattrFlags, Statx, WriteFlags,
};

use crate::session::Device;
use crate::Result;

/// A caller's ids, as the kernel reported them in the request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// fsuid of the calling process, in the filesystem's id space.
    pub uid: u32,
    /// fsgid of the calling process, in the filesystem's id space.
    pub gid: u32,
}

/// The owner of an inode about to be created: the caller's fsuid/fsgid as
/// the kernel mapped them back through the mount's idmap (if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Owner uid for the new inode (before setgid-directory rules).
    pub uid: u32,
    /// Owner gid for the new inode, unless the parent is setgid.
    pub gid: u32,
    /// The parent's gid from `FUSE_EXT_GROUPS`, sent when the caller is a
    /// member of it but it is not the caller's fsgid. A server that switches
    /// credentials adds it to its supplementary groups for the create.
    pub supp_group: Option<u32>,
}

/// Per-request context.
pub struct Context<'a> {
    pub(crate) unique: u64,
    pub(crate) pid: u32,
    pub(crate) caller: Option<Caller>,
    pub(crate) interrupted: Option<&'a AtomicBool>,
    pub(crate) device: &'a Device,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("unique", &self.unique)
            .field("pid", &self.pid)
            .field("caller", &self.caller)
            .field("interrupted", &self.is_interrupted())
            .finish()
    }
}

impl<'a> Context<'a> {
    /// The request id.
    pub fn unique(&self) -> u64 {
        self.unique
    }
    /// The caller's pid in the server's pid namespace (0 when unknown).
    pub fn pid(&self) -> u32 {
        self.pid
    }
    /// The caller's ids. Always `None` on an idmap-enabled session: the kernel
    /// withholds them and has already made every permission decision, so a
    /// filesystem must not make one of its own.
    pub fn caller(&self) -> Option<Caller> {
        self.caller
    }
    /// True once the kernel sent INTERRUPT for this request (tracked for the
    /// requests that may block: locks, I/O, fsync, fallocate, copy ranges).
    pub fn is_interrupted(&self) -> bool {
        self.interrupted.is_some_and(|f| f.load(Ordering::Relaxed))
    }
    /// Register `fd` as a backing file for `FUSE_PASSTHROUGH`
    /// (`FUSE_DEV_IOC_BACKING_OPEN`; needs CAP_SYS_ADMIN in the initial user
    /// namespace).
    pub fn open_backing(&self, fd: BorrowedFd<'_>) -> Result<BackingId> {
        self.device.open_backing(fd)
    }
    /// Release a backing id (`FUSE_DEV_IOC_BACKING_CLOSE`). Files already
    /// opened with it keep their backing file.
    pub fn close_backing(&self, id: BackingId) -> Result<()> {
        self.device.close_backing(id)
    }
    /// True when `FUSE_PASSTHROUGH` was negotiated on this session.
    pub fn passthrough(&self) -> bool {
        self.device.passthrough()
    }
}

/// A kernel backing-file id for `FUSE_PASSTHROUGH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackingId(pub i32);

/// A looked-up or created inode, as the kernel should cache it.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// The node id the kernel will use (also `attr.ino` unless you differ).
    pub ino: u64,
    /// Generation number, for NFS export.
    pub generation: u64,
    /// Attributes.
    pub attr: Attr,
    /// How long the name may stay cached.
    pub entry_timeout: Duration,
    /// How long the attributes may stay cached.
    pub attr_timeout: Duration,
}

impl Entry {
    /// A negative entry: "no such name", cached for `timeout`.
    pub fn negative(timeout: Duration) -> Self {
        Self {
            ino: 0,
            generation: 0,
            attr: Attr::default(),
            entry_timeout: timeout,
            attr_timeout: Duration::ZERO,
        }
    }

    pub(crate) fn to_out(self) -> idfuse_abi::EntryOut {
        idfuse_abi::EntryOut {
            nodeid: self.ino,
            generation: self.generation,
            entry_valid: self.entry_timeout.as_secs(),
            attr_valid: self.attr_timeout.as_secs(),
            entry_valid_nsec: self.entry_timeout.subsec_nanos(),
            attr_valid_nsec: self.attr_timeout.subsec_nanos(),
            attr: self.attr,
        }
    }
}

impl Entry {
    /// An entry for `attr.ino` with generation 0, whose name and attributes
    /// may both stay cached for `timeout`.
    pub fn new(attr: Attr, timeout: Duration) -> Self {
        Self {
            ino: attr.ino,
            generation: 0,
            attr,
            entry_timeout: timeout,
            attr_timeout: timeout,
        }
    }
}

/// The type of an inode: the `S_IFMT` bits of its mode, and the `DT_*`
/// value directory listings carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// `S_IFREG`
    RegularFile,
    /// `S_IFDIR`
    Directory,
    /// `S_IFLNK`
    Symlink,
    /// `S_IFCHR`
    CharDevice,
    /// `S_IFBLK`
    BlockDevice,
    /// `S_IFIFO`
    NamedPipe,
    /// `S_IFSOCK`
    Socket,
}

impl FileType {
    /// The `S_IFMT` bits, to combine with permission bits in [`Attr::mode`].
    pub const fn mode(self) -> u32 {
        match self {
            Self::RegularFile => libc::S_IFREG,
            Self::Directory => libc::S_IFDIR,
            Self::Symlink => libc::S_IFLNK,
            Self::CharDevice => libc::S_IFCHR,
            Self::BlockDevice => libc::S_IFBLK,
            Self::NamedPipe => libc::S_IFIFO,
            Self::Socket => libc::S_IFSOCK,
        }
    }
    /// The `DT_*` value for [`DirBuf::push`] and [`DirPlusBuf::push`]
    /// (`S_IFMT >> 12`, as the kernel defines both).
    pub const fn dirent_type(self) -> u32 {
        self.mode() >> 12
    }
    /// The type a mode says, `None` when its `S_IFMT` bits name none.
    pub const fn from_mode(mode: u32) -> Option<Self> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => Self::RegularFile,
            libc::S_IFDIR => Self::Directory,
            libc::S_IFLNK => Self::Symlink,
            libc::S_IFCHR => Self::CharDevice,
            libc::S_IFBLK => Self::BlockDevice,
            libc::S_IFIFO => Self::NamedPipe,
            libc::S_IFSOCK => Self::Socket,
            _ => return None,
        })
    }
}

/// Attributes with their cache lifetime.
#[derive(Debug, Clone, Copy)]
pub struct AttrReply {
    /// Attributes.
    pub attr: Attr,
    /// How long they may stay cached.
    pub timeout: Duration,
}

impl AttrReply {
    /// Attributes that may stay cached for `timeout`.
    pub fn new(attr: Attr, timeout: Duration) -> Self {
        Self { attr, timeout }
    }
}

/// An opened file or directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct Opened {
    /// The handle the kernel passes back on every later request.
    pub fh: u64,
    /// `FOPEN_*` flags.
    pub flags: OpenOutFlags,
    /// A backing file for `FUSE_PASSTHROUGH` (also set `FOPEN_PASSTHROUGH`;
    /// the session does it for you when this is `Some`).
    pub backing_id: Option<BackingId>,
}

/// The answer to GETXATTR/LISTXATTR: the size when the kernel asked for it
/// (`size == 0`), the bytes otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Xattr {
    /// The size of the value or list.
    Size(u32),
    /// The value or NUL-separated list, whole: the session answers the
    /// size protocol for it (a size query with its length, a buffer too
    /// small with ERANGE), so a filesystem that has the value at hand need
    /// not look at `size`.
    Data(Vec<u8>),
}

/// A time to set in SETATTR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    /// The current time.
    Now,
    /// A given time.
    At {
        /// Seconds since the epoch.
        sec: i64,
        /// Nanoseconds.
        nsec: u32,
    },
}

/// The changes a SETATTR asks for. Ids are already in the filesystem's id
/// space (the kernel mapped them back through the mount's idmap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New permission bits (with setid/sticky).
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (truncate).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SetTime>,
    /// New modification time.
    pub mtime: Option<SetTime>,
    /// New change time.
    pub ctime: Option<SetTime>,
    /// The open file, when the change came through one (ftruncate, fchmod).
    pub fh: Option<u64>,
    /// The lock owner.
    pub lock_owner: Option<u64>,
    /// `FATTR_KILL_SUIDGID`: clear S_ISUID, and S_ISGID if group-executable
    /// (killpriv v2; sent on chown of non-directories and on truncate by a
    /// caller without CAP_FSETID).
    pub kill_suidgid: bool,
}

/// A POSIX record lock or flock.
pub type Lock = FileLock;

/// How an inode-creating request wants the new inode's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateMode {
    /// File type and permission bits as the caller passed them (setgid
    /// already stripped by the kernel where it must be).
    pub mode: u32,
    /// The caller's umask to apply unless the parent has a default ACL.
    /// 0 when the session did not negotiate `FUSE_DONT_MASK` (the kernel
    /// applied it already).
    pub umask: u32,
}

impl CreateMode {
    /// The permission bits (with setid and sticky) to give the new inode
    /// when the parent has no default ACL: `mode & 0o7777 & !umask`.
    pub fn permissions(&self) -> u32 {
        self.mode & 0o7777 & !self.umask
    }
}

/// Receives entries for READDIRPLUS.
#[derive(Debug)]
pub struct DirPlusBuf<'a>(pub(crate) &'a mut DirBuf);

impl DirPlusBuf<'_> {
    /// Append an entry; `off` is the offset of the next one. Returns false
    /// when it does not fit: then the kernel did not get it, so do not count
    /// a lookup for it. Entries named `.` and `..` are ignored by the kernel
    /// and take no lookup count either.
    pub fn push(&mut self, entry: &Entry, off: u64, typ: u32, name: &OsStr) -> bool {
        use std::os::unix::ffi::OsStrExt;
        self.0.push_plus(&entry.to_out(), off, typ, name.as_bytes())
    }
}

/// Helper for `DirBuf::push` with an `OsStr`.
pub fn push_dirent(buf: &mut DirBuf, ino: u64, off: u64, typ: u32, name: &OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    buf.push(ino, off, typ, name.as_bytes())
}

/// What the session negotiated with the kernel, handed to `init`.
#[derive(Debug, Clone, Copy)]
pub struct Negotiated {
    /// Protocol minor version in use.
    pub minor: u32,
    /// Flags both sides agreed on.
    pub flags: InitFlags,
    /// True when caller ids are withheld (`FUSE_ALLOW_IDMAP` negotiated).
    pub idmap: bool,
    /// Largest WRITE the kernel will send.
    pub max_write: u32,
}

/// A FUSE filesystem. Every method may be called from several worker
/// threads at once. Inode numbers are the kernel's node ids (1 is the root).
///
/// Methods not overridden answer `ENOSYS`, which the kernel reads as "not
/// supported" and remembers where the protocol says so (e.g. for ACCESS,
/// STATX, FALLOCATE, LSEEK, COPY_FILE_RANGE it falls back or stops asking).
#[allow(unused_variables)]
pub trait Filesystem: Send + Sync + 'static {
    /// INIT flags the filesystem supports; the session grants their
    /// intersection with the kernel's offer and the configuration.
    fn capabilities(&self) -> InitFlags {
        InitFlags::empty()
    }
    /// Called once after INIT was answered.
    fn init(&self, negotiated: &Negotiated) {}
    /// Called once right after [`Filesystem::init`], with a handle for
    /// sending the kernel notifications (cache invalidations) from any
    /// thread. A filesystem that watches for changes made behind its back
    /// keeps it. Never send a notification about a directory from inside a
    /// request on that directory: the kernel may hold its lock meanwhile.
    fn notifier(&self, negotiated: &Negotiated, notifier: crate::Notifier) {}
    /// Called on DESTROY.
    fn destroy(&self) {}
    /// Hands the filesystem a [`Notifier`](crate::Notifier) for the
    /// session, once, right before [`init`](Self::init): for filesystems
    /// whose backend reports changes made elsewhere (network clients).
    fn set_notifier(&self, notifier: crate::Notifier) {}

    /// Look `name` up in `parent`; a success counts one lookup.
    fn lookup(&self, ctx: &Context<'_>, parent: u64, name: &OsStr) -> Result<Entry>;
    /// Drop `nlookup` lookups of `ino`.
    fn forget(&self, ino: u64, nlookup: u64) {}
    /// Drop lookups of several inodes.
    fn batch_forget(&self, nodes: &mut dyn Iterator<Item = ForgetOne>) {
        for n in nodes {
            self.forget(n.nodeid, n.nlookup);
        }
    }
    /// Attributes of `ino`.
    fn getattr(&self, ctx: &Context<'_>, ino: u64, fh: Option<u64>) -> Result<AttrReply>;
    /// Change attributes.
    fn setattr(&self, ctx: &Context<'_>, ino: u64, attr: &SetAttr) -> Result<AttrReply> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// The target of a symlink.
    fn readlink(&self, ctx: &Context<'_>, ino: u64) -> Result<Vec<u8>> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// Create a regular file, device, fifo or socket.
    fn mknod(
        &self,
        ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        owner: &Owner,
        mode: CreateMode,
        rdev: u32,
    ) -> Result<Entry> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// Create a directory.
    fn mkdir(
        &self,
        ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        owner: &Owner,
        mode: CreateMode,
    ) -> Result<Entry> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// Create a symlink.
    fn symlink(
        &self,
        ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        owner: &Owner,
        target: &OsStr,
    ) -> Result<Entry> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// Remove a non-directory.
    fn unlink(&self, ctx: &Context<'_>, parent: u64, name: &OsStr) -> Result<()> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// Remove an empty directory.
    fn rmdir(&self, ctx: &Context<'_>, parent: u64, name: &OsStr) -> Result<()> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// Rename. `flags` are `RENAME_NOREPLACE`/`EXCHANGE`/`WHITEOUT`; with
    /// WHITEOUT, `whiteout_owner` is the owner of the whiteout to leave.
    #[allow(clippy::too_many_arguments)]
    fn rename(
        &self,
        ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        whiteout_owner: Option<&Owner>,
    ) -> Result<()> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// Make a hard link; a success counts one lookup of `ino`.
    fn link(&self, ctx: &Context<'_>, ino: u64, newparent: u64, newname: &OsStr) -> Result<Entry> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// Open a file. `flags` are the open(2) flags; `kill_suidgid` is
    /// `FUSE_OPEN_KILL_SUIDGID` (O_TRUNC by a caller without CAP_FSETID).
    fn open(&self, ctx: &Context<'_>, ino: u64, flags: u32, kill_suidgid: bool) -> Result<Opened> {
        Ok(Opened::default())
    }
    /// Read up to `size` bytes at `offset` into `buf` (empty on entry).
    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// Write `data` at `offset`; returns the bytes written.
    /// `WriteFlags::KILL_SUIDGID`: clear setid bits (killpriv v2).
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: u32,
    ) -> Result<u32> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// Called on each close(2) of a file descriptor.
    fn flush(&self, ctx: &Context<'_>, ino: u64, fh: u64, lock_owner: u64) -> Result<()> {
        Ok(())
    }
    /// The last reference to an open file is gone.
    fn release(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        fh: u64,
        flags: u32,
        lock_owner: Option<u64>,
        flush: bool,
    ) -> Result<()> {
        Ok(())
    }
    /// fsync/fdatasync.
    fn fsync(&self, ctx: &Context<'_>, ino: u64, fh: u64, datasync: bool) -> Result<()> {
        Ok(())
    }
    /// Open a directory.
    fn opendir(&self, ctx: &Context<'_>, ino: u64, flags: u32) -> Result<Opened> {
        Ok(Opened::default())
    }
    /// List entries starting after `offset`.
    fn readdir(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        fh: u64,
        offset: u64,
        out: &mut DirBuf,
    ) -> Result<()> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// List entries with attributes; each entry that fits counts a lookup.
    fn readdirplus(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        fh: u64,
        offset: u64,
        out: &mut DirPlusBuf<'_>,
    ) -> Result<()> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// Close a directory.
    fn releasedir(&self, ctx: &Context<'_>, ino: u64, fh: u64, flags: u32) -> Result<()> {
        Ok(())
    }
    /// fsync on a directory.
    fn fsyncdir(&self, ctx: &Context<'_>, ino: u64, fh: u64, datasync: bool) -> Result<()> {
        Ok(())
    }
    /// Filesystem statistics.
    fn statfs(&self, ctx: &Context<'_>, ino: u64) -> Result<Kstatfs> {
        Ok(Kstatfs {
            bsize: 4096,
            frsize: 4096,
            namelen: 255,
            ..Kstatfs::default()
        })
    }
    /// Set an xattr (`flags`: XATTR_CREATE/REPLACE). ACL and capability
    /// xattrs arrive already translated into the filesystem's id space.
    fn setxattr(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: u32,
        setxattr_flags: SetxattrFlags,
    ) -> Result<()> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// Get an xattr; `size == 0` asks for the size only.
    fn getxattr(&self, ctx: &Context<'_>, ino: u64, name: &OsStr, size: u32) -> Result<Xattr> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// List xattr names; `size == 0` asks for the size only.
    fn listxattr(&self, ctx: &Context<'_>, ino: u64, size: u32) -> Result<Xattr> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// Remove an xattr.
    fn removexattr(&self, ctx: &Context<'_>, ino: u64, name: &OsStr) -> Result<()> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// ACCESS is never sent with `default_permissions`; `ENOSYS` makes the
    /// kernel treat every later access(2) as allowed.
    fn access(&self, ctx: &Context<'_>, ino: u64, mask: u32) -> Result<()> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// Create and open a regular file. `ENOSYS` makes the kernel fall back
    /// to MKNOD + OPEN.
    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        owner: &Owner,
        mode: CreateMode,
        flags: u32,
        kill_suidgid: bool,
    ) -> Result<(Entry, Opened)> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// Create an unnamed file in `parent` (O_TMPFILE).
    fn tmpfile(
        &self,
        ctx: &Context<'_>,
        parent: u64,
        owner: &Owner,
        mode: CreateMode,
        flags: u32,
    ) -> Result<(Entry, Opened)> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// Test for a POSIX lock.
    fn getlk(&self, ctx: &Context<'_>, ino: u64, fh: u64, owner: u64, lock: &Lock) -> Result<Lock> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// Acquire or release a POSIX lock (`flock`: a BSD flock); `sleep`: wait.
    /// `ENOSYS` makes the kernel handle locks locally.
    #[allow(clippy::too_many_arguments)]
    fn setlk(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        fh: u64,
        owner: u64,
        lock: &Lock,
        sleep: bool,
        flock: bool,
    ) -> Result<()> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// Block mapping: only meaningful for `fuseblk` filesystems.
    fn bmap(&self, ctx: &Context<'_>, ino: u64, blocksize: u32, block: u64) -> Result<u64> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// ioctl; the default knows none.
    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        fh: u64,
        flags: u32,
        cmd: u32,
        arg: u64,
        input: &[u8],
        out_size: u32,
    ) -> Result<(i32, Vec<u8>)> {
        Err(rustix::io::Errno::NOTTY)
    }
    /// poll; `ENOSYS` makes the kernel treat the file as always ready.
    fn poll(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        fh: u64,
        kh: u64,
        flags: u32,
        events: u32,
    ) -> Result<u32> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// fallocate.
    fn fallocate(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        fh: u64,
        offset: u64,
        length: u64,
        mode: u32,
    ) -> Result<()> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// lseek for SEEK_DATA/SEEK_HOLE (the kernel handles the others).
    fn lseek(&self, ctx: &Context<'_>, ino: u64, fh: u64, offset: u64, whence: u32) -> Result<u64> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// copy_file_range; returns bytes copied.
    #[allow(clippy::too_many_arguments)]
    fn copy_file_range(
        &self,
        ctx: &Context<'_>,
        ino_in: u64,
        fh_in: u64,
        off_in: u64,
        ino_out: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
        flags: u64,
    ) -> Result<u64> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// statx; `ENOSYS` makes the kernel fall back to GETATTR.
    fn statx(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        fh: Option<u64>,
        flags: u32,
        mask: u32,
    ) -> Result<(Statx, Duration)> {
        Err(rustix::io::Errno::NOSYS)
    }
    /// The kernel's answer to [`Notifier::retrieve`](crate::Notifier::retrieve):
    /// `data` cached for `ino` at `offset`; `cookie` is the retrieve's.
    fn retrieve_reply(&self, cookie: u64, ino: u64, offset: u64, data: &[u8]) {}
    /// syncfs.
    fn syncfs(&self, ctx: &Context<'_>, ino: u64) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::FileType;

    #[test]
    fn file_types_match_the_kernel_constants() {
        let all = [
            (FileType::RegularFile, libc::DT_REG),
            (FileType::Directory, libc::DT_DIR),
            (FileType::Symlink, libc::DT_LNK),
            (FileType::CharDevice, libc::DT_CHR),
            (FileType::BlockDevice, libc::DT_BLK),
            (FileType::NamedPipe, libc::DT_FIFO),
            (FileType::Socket, libc::DT_SOCK),
        ];
        for (t, dt) in all {
            assert_eq!(t.dirent_type(), u32::from(dt), "{t:?}");
            assert_eq!(FileType::from_mode(t.mode() | 0o644), Some(t), "{t:?}");
        }
        assert_eq!(FileType::from_mode(0o644), None, "no type bits");
    }
}
