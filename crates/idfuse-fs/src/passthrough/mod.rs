//! `passthrough`: mirror a directory through FUSE, correct on idmapped
//! mounts. Inodes are `O_PATH` fds keyed by `(st_dev, st_ino)`; every name
//! resolves relative to its parent's fd and never follows a symlink or `..`
//! out of the source. New inodes are created with the worker thread's fs
//! credentials switched to the kernel's `Owner` and the caller's umask, so
//! setgid directories, default ACLs and the umask behave exactly as on the
//! backing filesystem. The daemon decides no permission itself. Regular
//! files are handed to the kernel as backing files (`FUSE_PASSTHROUGH`)
//! where the daemon has the privilege, for kernel-to-kernel I/O.

mod creds;

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use idfuse::{
    Attr, AttrReply, BackingId, Context, CreateMode, DirBuf, DirPlusBuf, Entry, Errno, Filesystem,
    InitFlags, Kstatfs, Negotiated, OpenOutFlags, Opened, Owner, SetAttr, SetTime, SetxattrFlags,
    Statx, WriteFlags, Xattr,
};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, StatxFlags};

use creds::AsOwner;

/// How to run a [`Passthrough`].
#[derive(Debug, Clone)]
pub struct PassthroughOptions {
    /// How long the kernel may cache names.
    pub entry_timeout: Duration,
    /// How long the kernel may cache attributes.
    pub attr_timeout: Duration,
    /// Hand regular files to the kernel as backing files (`FUSE_PASSTHROUGH`).
    pub passthrough_io: bool,
    /// The kernel caches writes (`writeback_cache`); not with passthrough.
    pub writeback_cache: bool,
}

impl Default for PassthroughOptions {
    fn default() -> Self {
        Self {
            entry_timeout: Duration::from_secs(1),
            attr_timeout: Duration::from_secs(1),
            passthrough_io: true,
            writeback_cache: false,
        }
    }
}

impl PassthroughOptions {
    /// Take an `-o` option the framework does not know: `entry_timeout=S`,
    /// `attr_timeout=S`, `timeout=S` (seconds, fractions allowed).
    /// `Ok(false)` when the option is not ours.
    pub fn parse_option(&mut self, key: &str, value: Option<&str>) -> Result<bool, String> {
        let secs = || -> Result<Duration, String> {
            value
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0 && *v < 1e9)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| "expects seconds, e.g. 1 or 0.5".to_string())
        };
        match key {
            "entry_timeout" => self.entry_timeout = secs()?,
            "attr_timeout" => self.attr_timeout = secs()?,
            "timeout" => {
                let t = secs()?;
                self.entry_timeout = t;
                self.attr_timeout = t;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Why a passthrough cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SOURCE does not exist.
    #[error("source {0} does not exist")]
    SourceMissing(PathBuf),
    /// SOURCE is not a directory.
    #[error("source {0} is not a directory; passthrough mirrors a directory")]
    SourceNotDir(PathBuf),
    /// MOUNTPOINT lies inside SOURCE, which would make a loop.
    #[error("mountpoint {mountpoint} is inside the source {source_dir}: the mirror would contain itself. Choose a mountpoint outside {source_dir}")]
    MountpointInsideSource {
        /// the mountpoint
        mountpoint: PathBuf,
        /// the source
        source_dir: PathBuf,
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

struct Inode {
    fd: OwnedFd,
    key: (u64, u64),
    refs: AtomicU64,
    /// The kernel allows one backing file per inode: shared by every open
    /// file of it, with a count of those.
    backing: Mutex<Option<(BackingId, u32)>>,
}

#[derive(Default)]
struct Inodes {
    by_id: HashMap<u64, Arc<Inode>>,
    by_key: HashMap<(u64, u64), u64>,
    next: u64,
}

struct Handle {
    file: OwnedFd,
    /// The inode whose backing file this handle shares, if any.
    backing: Option<Arc<Inode>>,
    dir: Mutex<Option<rustix::fs::Dir>>,
}

/// The passthrough filesystem.
pub struct Passthrough {
    inodes: RwLock<Inodes>,
    handles: RwLock<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    proc_self_fd: OwnedFd,
    root_dir: OwnedFd,
    opts: PassthroughOptions,
    pt_active: AtomicBool,
    pt_refused: AtomicBool,
}

fn io_err(what: String) -> impl FnOnce(rustix::io::Errno) -> Error {
    move |e| Error::Io {
        what,
        source: e.into(),
    }
}

/// A name the kernel gave us: one component, never `.`/`..`.
fn check_name(name: &OsStr) -> Result<(), Errno> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(Errno::INVAL);
    }
    if b.len() > 255 {
        return Err(Errno::NAMETOOLONG);
    }
    Ok(())
}

fn statx_fd(fd: BorrowedFd<'_>) -> Result<rustix::fs::Statx, Errno> {
    rustix::fs::statx(
        fd,
        "",
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS | StatxFlags::BTIME,
    )
}

fn to_attr(ino: u64, st: &rustix::fs::Statx) -> Attr {
    Attr {
        ino,
        size: st.stx_size,
        blocks: st.stx_blocks,
        atime: st.stx_atime.tv_sec as u64,
        mtime: st.stx_mtime.tv_sec as u64,
        ctime: st.stx_ctime.tv_sec as u64,
        atimensec: st.stx_atime.tv_nsec,
        mtimensec: st.stx_mtime.tv_nsec,
        ctimensec: st.stx_ctime.tv_nsec,
        mode: u32::from(st.stx_mode),
        nlink: st.stx_nlink,
        uid: st.stx_uid,
        gid: st.stx_gid,
        rdev: libc::makedev(st.stx_rdev_major, st.stx_rdev_minor) as u32,
        blksize: st.stx_blksize,
        flags: 0,
    }
}

fn sx(t: rustix::fs::StatxTimestamp) -> idfuse::abi::SxTime {
    idfuse::abi::SxTime {
        tv_sec: t.tv_sec,
        tv_nsec: t.tv_nsec,
        __reserved: 0,
    }
}

impl Passthrough {
    /// Mirror `source`.
    pub fn new(source: &Path, opts: PassthroughOptions) -> Result<Self, Error> {
        match std::fs::metadata(source) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(Error::SourceNotDir(source.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::SourceMissing(source.to_path_buf()))
            }
            Err(e) => {
                return Err(Error::Io {
                    what: format!("cannot use source {}", source.display()),
                    source: e,
                })
            }
        }
        let root = rustix::fs::open(
            source,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err(format!("opening source {}", source.display())))?;
        let root_dir = rustix::fs::open(
            source,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err(format!("opening source {}", source.display())))?;
        let proc_self_fd = rustix::fs::open(
            "/proc/self/fd",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err("opening /proc/self/fd (is /proc mounted?)".into()))?;
        let st = statx_fd(root.as_fd()).map_err(io_err(format!("stat {}", source.display())))?;
        let key = (
            libc::makedev(st.stx_dev_major, st.stx_dev_minor),
            st.stx_ino,
        );
        let mut inodes = Inodes {
            next: 2,
            ..Inodes::default()
        };
        inodes.by_id.insert(
            1,
            Arc::new(Inode {
                fd: root,
                key,
                refs: AtomicU64::new(1),
                backing: Mutex::new(None),
            }),
        );
        inodes.by_key.insert(key, 1);
        Ok(Self {
            inodes: RwLock::new(inodes),
            handles: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            proc_self_fd,
            root_dir,
            opts,
            pt_active: AtomicBool::new(false),
            pt_refused: AtomicBool::new(false),
        })
    }

    /// Refuse a mountpoint inside (or equal to) the source.
    pub fn check_mountpoint(source: &Path, mountpoint: &Path) -> Result<(), Error> {
        let src = std::fs::canonicalize(source).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::SourceMissing(source.to_path_buf())
            } else {
                Error::Io {
                    what: format!("cannot resolve {}", source.display()),
                    source: e,
                }
            }
        })?;
        let mnt = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
        if mnt.starts_with(&src) {
            return Err(Error::MountpointInsideSource {
                mountpoint: mountpoint.to_path_buf(),
                source_dir: source.to_path_buf(),
            });
        }
        Ok(())
    }

    /// Inodes the kernel holds lookups on (plus the root).
    pub fn inode_count(&self) -> usize {
        self.inodes.read().map_or(0, |i| i.by_id.len())
    }

    /// True once a file was handed to the kernel as a backing file.
    pub fn passthrough_active(&self) -> bool {
        self.pt_active.load(Ordering::Relaxed)
    }

    fn inode(&self, ino: u64) -> Result<Arc<Inode>, Errno> {
        let inodes = self.inodes.read().map_err(|_| Errno::IO)?;
        inodes.by_id.get(&ino).cloned().ok_or(Errno::STALE)
    }

    fn handle(&self, fh: u64) -> Result<Arc<Handle>, Errno> {
        let h = self.handles.read().map_err(|_| Errno::IO)?;
        h.get(&fh).cloned().ok_or(Errno::BADF)
    }

    fn proc_name(fd: BorrowedFd<'_>) -> CString {
        // A decimal number never holds a NUL.
        CString::new(fd.as_raw_fd().to_string()).unwrap_or_default()
    }

    /// Reopen an inode's O_PATH fd with real access flags.
    fn reopen(&self, fd: BorrowedFd<'_>, flags: OFlags) -> Result<OwnedFd, Errno> {
        rustix::fs::openat(
            &self.proc_self_fd,
            Self::proc_name(fd).as_c_str(),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
        )
    }

    /// The path of an inode through /proc, for the calls that take no fd.
    fn proc_path(fd: BorrowedFd<'_>) -> CString {
        CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
    }

    /// Register `fd` (an O_PATH fd of a new or looked-up inode) and count a
    /// lookup.
    fn entry_for(&self, fd: OwnedFd) -> Result<Entry, Errno> {
        let st = statx_fd(fd.as_fd())?;
        let key = (
            libc::makedev(st.stx_dev_major, st.stx_dev_minor),
            st.stx_ino,
        );
        let mut inodes = self.inodes.write().map_err(|_| Errno::IO)?;
        let ino = match inodes.by_key.get(&key).copied() {
            Some(ino) => {
                if let Some(i) = inodes.by_id.get(&ino) {
                    i.refs.fetch_add(1, Ordering::Relaxed);
                }
                ino
            }
            None => {
                let ino = inodes.next;
                inodes.next += 1;
                inodes.by_id.insert(
                    ino,
                    Arc::new(Inode {
                        fd,
                        key,
                        refs: AtomicU64::new(1),
                        backing: Mutex::new(None),
                    }),
                );
                inodes.by_key.insert(key, ino);
                ino
            }
        };
        Ok(Entry {
            ino,
            generation: 0,
            attr: to_attr(ino, &st),
            entry_timeout: self.opts.entry_timeout,
            attr_timeout: self.opts.attr_timeout,
        })
    }

    /// Open `name` in `parent` as O_PATH without following anything out of
    /// the parent: no symlink at the end, no `..`, no absolute path.
    fn open_child(parent: &Inode, name: &OsStr) -> Result<OwnedFd, Errno> {
        check_name(name)?;
        rustix::fs::openat2(
            &parent.fd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_SYMLINKS,
        )
    }

    fn lookup_name(&self, parent: u64, name: &OsStr) -> Result<Entry, Errno> {
        let p = self.inode(parent)?;
        let fd = Self::open_child(&p, name)?;
        self.entry_for(fd)
    }

    fn attr_of(&self, ino: u64) -> Result<AttrReply, Errno> {
        let i = self.inode(ino)?;
        let st = statx_fd(i.fd.as_fd())?;
        Ok(AttrReply {
            attr: to_attr(ino, &st),
            timeout: self.opts.attr_timeout,
        })
    }

    /// Clear S_ISUID, and S_ISGID if group-executable (killpriv v2: the
    /// daemon runs with CAP_FSETID, so the backing fs will not do it).
    fn kill_suidgid(&self, fd: BorrowedFd<'_>) -> Result<(), Errno> {
        let st = statx_fd(fd)?;
        let mode = u32::from(st.stx_mode);
        let mut m = mode & !libc::S_ISUID;
        if m & libc::S_IXGRP != 0 {
            m &= !libc::S_ISGID;
        }
        if m != mode {
            self.chmod(fd, m & 0o7777)?;
        }
        Ok(())
    }

    fn chmod(&self, fd: BorrowedFd<'_>, mode: u32) -> Result<(), Errno> {
        rustix::fs::chmodat(
            &self.proc_self_fd,
            Self::proc_name(fd).as_c_str(),
            Mode::from_raw_mode(mode),
            AtFlags::empty(),
        )
    }

    fn new_handle(
        &self,
        file: OwnedFd,
        backing: Option<Arc<Inode>>,
        dir: bool,
    ) -> Result<u64, Errno> {
        let dir = if dir {
            Some(rustix::fs::Dir::read_from(&file)?)
        } else {
            None
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let h = Arc::new(Handle {
            file,
            backing,
            dir: Mutex::new(dir),
        });
        self.handles.write().map_err(|_| Errno::IO)?.insert(fh, h);
        Ok(fh)
    }

    /// Open flags for the backing file.
    fn backing_flags(&self, flags: u32) -> OFlags {
        let mut f =
            OFlags::from_bits_retain(flags) & !(OFlags::CREATE | OFlags::EXCL | OFlags::NOCTTY);
        if self.opts.writeback_cache {
            // The kernel may read to fill pages of a write-only file and
            // does appends itself.
            if f.contains(OFlags::WRONLY) {
                f = (f & !OFlags::WRONLY) | OFlags::RDWR;
            }
            f.remove(OFlags::APPEND);
        }
        f
    }

    /// Try to give `inode` a backing file for passthrough I/O, or share the
    /// one it has.
    fn backing_for(
        &self,
        ctx: &Context<'_>,
        inode: &Arc<Inode>,
        file: BorrowedFd<'_>,
    ) -> Option<BackingId> {
        if !self.opts.passthrough_io
            || !ctx.passthrough()
            || self.pt_refused.load(Ordering::Relaxed)
        {
            return None;
        }
        // A setid file must lose its bits when others write to it; backing
        // files write with the daemon's credentials and would keep them.
        if statx_fd(file)
            .is_ok_and(|s| u32::from(s.stx_mode) & (libc::S_ISUID | libc::S_ISGID) != 0)
        {
            return None;
        }
        let mut slot = inode.backing.lock().ok()?;
        if let Some((id, n)) = slot.as_mut() {
            *n += 1;
            return Some(*id);
        }
        // One backing file serves every later open of the inode, whatever
        // its access mode: open it read-write where the source allows.
        let rw = self.reopen(inode.fd.as_fd(), OFlags::RDWR);
        let fd = match &rw {
            Ok(f) => f.as_fd(),
            Err(_) => file,
        };
        match ctx.open_backing(fd) {
            Ok(id) => {
                self.pt_active.store(true, Ordering::Relaxed);
                *slot = Some((id, 1));
                Some(id)
            }
            Err(e) => {
                if !self.pt_refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "FUSE passthrough unavailable ({e}): it needs CAP_SYS_ADMIN in the initial user namespace; reads and writes go through the daemon"
                    );
                }
                None
            }
        }
    }

    fn opened(
        &self,
        ctx: &Context<'_>,
        inode: &Arc<Inode>,
        file: OwnedFd,
    ) -> Result<Opened, Errno> {
        let backing = self.backing_for(ctx, inode, file.as_fd());
        let fh = self.new_handle(file, backing.map(|_| inode.clone()), false)?;
        Ok(Opened {
            fh,
            flags: OpenOutFlags::empty(),
            backing_id: backing,
        })
    }

    /// Drop one user of the inode's backing file; close it with the last.
    fn put_backing(ctx: &Context<'_>, inode: &Inode) {
        let Ok(mut slot) = inode.backing.lock() else {
            return;
        };
        if let Some((id, n)) = slot.as_mut() {
            *n -= 1;
            if *n == 0 {
                let _ = ctx.close_backing(*id);
                *slot = None;
            }
        }
    }

    fn xattr_result(buf: Vec<u8>, n: usize, size: u32) -> Xattr {
        if size == 0 {
            Xattr::Size(n as u32)
        } else {
            let mut buf = buf;
            buf.truncate(n);
            Xattr::Data(buf)
        }
    }
}

impl Filesystem for Passthrough {
    fn capabilities(&self) -> InitFlags {
        InitFlags::POSIX_ACL
            | InitFlags::DONT_MASK
            | InitFlags::HANDLE_KILLPRIV_V2
            | InitFlags::DO_READDIRPLUS
            | InitFlags::READDIRPLUS_AUTO
            | InitFlags::SETXATTR_EXT
            | InitFlags::CREATE_SUPP_GROUP
            | InitFlags::CACHE_SYMLINKS
            | InitFlags::PARALLEL_DIROPS
            | InitFlags::AUTO_INVAL_DATA
            | InitFlags::SPLICE_READ
            | InitFlags::SPLICE_WRITE
    }

    fn init(&self, n: &Negotiated) {
        if self.opts.passthrough_io && !n.flags.contains(InitFlags::PASSTHROUGH) {
            tracing::warn!(
                "the kernel did not grant FUSE_PASSTHROUGH; reads and writes go through the daemon"
            );
        }
    }

    fn lookup(&self, _ctx: &Context<'_>, parent: u64, name: &OsStr) -> idfuse::Result<Entry> {
        self.lookup_name(parent, name)
    }

    fn forget(&self, ino: u64, nlookup: u64) {
        if ino == 1 {
            return;
        }
        let Ok(mut inodes) = self.inodes.write() else {
            return;
        };
        let gone = inodes.by_id.get(&ino).is_some_and(|i| {
            let before = i.refs.fetch_sub(
                nlookup.min(i.refs.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            before <= nlookup
        });
        if gone {
            if let Some(i) = inodes.by_id.remove(&ino) {
                inodes.by_key.remove(&i.key);
            }
        }
    }

    fn getattr(&self, _ctx: &Context<'_>, ino: u64, fh: Option<u64>) -> idfuse::Result<AttrReply> {
        if let Some(fh) = fh {
            if let Ok(h) = self.handle(fh) {
                let st = statx_fd(h.file.as_fd())?;
                return Ok(AttrReply {
                    attr: to_attr(ino, &st),
                    timeout: self.opts.attr_timeout,
                });
            }
        }
        self.attr_of(ino)
    }

    fn statx(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        _fh: Option<u64>,
        _flags: u32,
        mask: u32,
    ) -> idfuse::Result<(Statx, Duration)> {
        let i = self.inode(ino)?;
        let want = StatxFlags::from_bits_retain(mask) | StatxFlags::BASIC_STATS;
        let st = rustix::fs::statx(
            &i.fd,
            "",
            AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
            want,
        )?;
        let out = Statx {
            mask: st.stx_mask,
            blksize: st.stx_blksize,
            attributes: st.stx_attributes.bits(),
            nlink: st.stx_nlink,
            uid: st.stx_uid,
            gid: st.stx_gid,
            mode: st.stx_mode,
            ino,
            size: st.stx_size,
            blocks: st.stx_blocks,
            attributes_mask: st.stx_attributes_mask.bits(),
            atime: sx(st.stx_atime),
            btime: sx(st.stx_btime),
            ctime: sx(st.stx_ctime),
            mtime: sx(st.stx_mtime),
            rdev_major: st.stx_rdev_major,
            rdev_minor: st.stx_rdev_minor,
            dev_major: st.stx_dev_major,
            dev_minor: st.stx_dev_minor,
            ..Statx::default()
        };
        Ok((out, self.opts.attr_timeout))
    }

    fn setattr(&self, _ctx: &Context<'_>, ino: u64, a: &SetAttr) -> idfuse::Result<AttrReply> {
        let i = self.inode(ino)?;
        let fd = i.fd.as_fd();
        if let Some(size) = a.size {
            let h = a.fh.and_then(|fh| self.handle(fh).ok());
            match h {
                Some(h) => rustix::fs::ftruncate(&h.file, size)?,
                None => {
                    let f = self.reopen(fd, OFlags::WRONLY)?;
                    rustix::fs::ftruncate(&f, size)?;
                }
            }
        }
        if a.uid.is_some() || a.gid.is_some() {
            let uid = a.uid.map(rustix::fs::Uid::from_raw);
            let gid = a.gid.map(rustix::fs::Gid::from_raw);
            rustix::fs::chownat(
                fd,
                "",
                uid,
                gid,
                AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        if let Some(mode) = a.mode {
            self.chmod(fd, mode & 0o7777)?;
        }
        if a.kill_suidgid {
            self.kill_suidgid(fd)?;
        }
        if a.atime.is_some() || a.mtime.is_some() {
            let ts = |t: Option<SetTime>| match t {
                None => rustix::fs::Timespec {
                    tv_sec: 0,
                    tv_nsec: rustix::fs::UTIME_OMIT,
                },
                Some(SetTime::Now) => rustix::fs::Timespec {
                    tv_sec: 0,
                    tv_nsec: rustix::fs::UTIME_NOW,
                },
                Some(SetTime::At { sec, nsec }) => rustix::fs::Timespec {
                    tv_sec: sec,
                    tv_nsec: i64::from(nsec),
                },
            };
            let times = rustix::fs::Timestamps {
                last_access: ts(a.atime),
                last_modification: ts(a.mtime),
            };
            rustix::fs::utimensat(
                &self.proc_self_fd,
                Self::proc_name(fd).as_c_str(),
                &times,
                AtFlags::empty(),
            )?;
        }
        self.attr_of(ino)
    }

    fn readlink(&self, _ctx: &Context<'_>, ino: u64) -> idfuse::Result<Vec<u8>> {
        let i = self.inode(ino)?;
        let t = rustix::fs::readlinkat(&i.fd, "", Vec::new())?;
        Ok(t.into_bytes())
    }

    fn mknod(
        &self,
        _ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        owner: &Owner,
        mode: CreateMode,
        rdev: u32,
    ) -> idfuse::Result<Entry> {
        check_name(name)?;
        let p = self.inode(parent)?;
        {
            let _as = AsOwner::new(owner, mode.umask)?;
            let kind = rustix::fs::FileType::from_raw_mode(mode.mode);
            let kind = if mode.mode & libc::S_IFMT == 0 {
                rustix::fs::FileType::RegularFile
            } else {
                kind
            };
            rustix::fs::mknodat(
                &p.fd,
                name,
                kind,
                Mode::from_raw_mode(mode.mode & 0o7777),
                u64::from(rdev),
            )?;
        }
        self.lookup_name(parent, name)
    }

    fn mkdir(
        &self,
        _ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        owner: &Owner,
        mode: CreateMode,
    ) -> idfuse::Result<Entry> {
        check_name(name)?;
        let p = self.inode(parent)?;
        {
            let _as = AsOwner::new(owner, mode.umask)?;
            rustix::fs::mkdirat(&p.fd, name, Mode::from_raw_mode(mode.mode & 0o7777))?;
        }
        self.lookup_name(parent, name)
    }

    fn symlink(
        &self,
        _ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        owner: &Owner,
        target: &OsStr,
    ) -> idfuse::Result<Entry> {
        check_name(name)?;
        let p = self.inode(parent)?;
        {
            let _as = AsOwner::new(owner, 0)?;
            rustix::fs::symlinkat(target, &p.fd, name)?;
        }
        self.lookup_name(parent, name)
    }

    fn unlink(&self, _ctx: &Context<'_>, parent: u64, name: &OsStr) -> idfuse::Result<()> {
        check_name(name)?;
        let p = self.inode(parent)?;
        rustix::fs::unlinkat(&p.fd, name, AtFlags::empty())
    }

    fn rmdir(&self, _ctx: &Context<'_>, parent: u64, name: &OsStr) -> idfuse::Result<()> {
        check_name(name)?;
        let p = self.inode(parent)?;
        rustix::fs::unlinkat(&p.fd, name, AtFlags::REMOVEDIR)
    }

    fn rename(
        &self,
        _ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        whiteout_owner: Option<&Owner>,
    ) -> idfuse::Result<()> {
        check_name(name)?;
        check_name(newname)?;
        let p = self.inode(parent)?;
        let np = self.inode(newparent)?;
        let flags = rustix::fs::RenameFlags::from_bits(flags).ok_or(Errno::INVAL)?;
        // The whiteout is a new inode: create it as its owner.
        let _as = match whiteout_owner {
            Some(o) => Some(AsOwner::new(o, 0)?),
            None => None,
        };
        rustix::fs::renameat_with(&p.fd, name, &np.fd, newname, flags)
    }

    fn link(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
    ) -> idfuse::Result<Entry> {
        check_name(newname)?;
        let i = self.inode(ino)?;
        let np = self.inode(newparent)?;
        rustix::fs::linkat(&i.fd, "", &np.fd, newname, AtFlags::EMPTY_PATH)?;
        self.lookup_name(newparent, newname)
    }

    fn open(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        flags: u32,
        kill_suidgid: bool,
    ) -> idfuse::Result<Opened> {
        let i = self.inode(ino)?;
        let file = self.reopen(i.fd.as_fd(), self.backing_flags(flags))?;
        if kill_suidgid {
            self.kill_suidgid(file.as_fd())?;
        }
        self.opened(ctx, &i, file)
    }

    fn create(
        &self,
        ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        owner: &Owner,
        mode: CreateMode,
        flags: u32,
        kill_suidgid: bool,
    ) -> idfuse::Result<(Entry, Opened)> {
        check_name(name)?;
        let p = self.inode(parent)?;
        let file = {
            let _as = AsOwner::new(owner, mode.umask)?;
            rustix::fs::openat2(
                &p.fd,
                name,
                self.backing_flags(flags) | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode.mode & 0o7777),
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_SYMLINKS,
            )?
        };
        if kill_suidgid {
            self.kill_suidgid(file.as_fd())?;
        }
        let path = self.reopen(file.as_fd(), OFlags::PATH)?;
        let entry = self.entry_for(path)?;
        let inode = self.inode(entry.ino)?;
        let opened = self.opened(ctx, &inode, file)?;
        Ok((entry, opened))
    }

    fn tmpfile(
        &self,
        ctx: &Context<'_>,
        parent: u64,
        owner: &Owner,
        mode: CreateMode,
        flags: u32,
    ) -> idfuse::Result<(Entry, Opened)> {
        let p = self.inode(parent)?;
        let file = {
            let _as = AsOwner::new(owner, mode.umask)?;
            let f = (self.backing_flags(flags) & !OFlags::DIRECTORY)
                | OFlags::TMPFILE
                | OFlags::CLOEXEC;
            let f = if f.contains(OFlags::WRONLY) || f.contains(OFlags::RDWR) {
                f
            } else {
                f | OFlags::RDWR
            };
            rustix::fs::openat(
                &self.proc_self_fd,
                Self::proc_name(p.fd.as_fd()).as_c_str(),
                f,
                Mode::from_raw_mode(mode.mode & 0o7777),
            )?
        };
        let path = self.reopen(file.as_fd(), OFlags::PATH)?;
        let entry = self.entry_for(path)?;
        let inode = self.inode(entry.ino)?;
        let opened = self.opened(ctx, &inode, file)?;
        Ok((entry, opened))
    }

    fn read(
        &self,
        _ctx: &Context<'_>,
        _ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
        buf: &mut Vec<u8>,
    ) -> idfuse::Result<()> {
        let h = self.handle(fh)?;
        buf.reserve(size as usize);
        let n = rustix::io::pread(
            &h.file,
            buf.spare_capacity_mut()
                .get_mut(..size as usize)
                .ok_or(Errno::NOMEM)?,
            offset,
        )?
        .0
        .len();
        // SAFETY: pread initialised the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(n) };
        Ok(())
    }

    fn write(
        &self,
        _ctx: &Context<'_>,
        _ino: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        wf: WriteFlags,
        _flags: u32,
    ) -> idfuse::Result<u32> {
        let h = self.handle(fh)?;
        let n = rustix::io::pwrite(&h.file, data, offset)?;
        if wf.contains(WriteFlags::KILL_SUIDGID) {
            self.kill_suidgid(h.file.as_fd())?;
        }
        Ok(n as u32)
    }

    fn flush(
        &self,
        _ctx: &Context<'_>,
        _ino: u64,
        _fh: u64,
        _lock_owner: u64,
    ) -> idfuse::Result<()> {
        Ok(())
    }

    fn release(
        &self,
        ctx: &Context<'_>,
        _ino: u64,
        fh: u64,
        _flags: u32,
        _lo: Option<u64>,
        _flush: bool,
    ) -> idfuse::Result<()> {
        let h = self.handles.write().map_err(|_| Errno::IO)?.remove(&fh);
        if let Some(inode) = h.as_ref().and_then(|h| h.backing.as_ref()) {
            Self::put_backing(ctx, inode);
        }
        Ok(())
    }

    fn fsync(&self, _ctx: &Context<'_>, _ino: u64, fh: u64, datasync: bool) -> idfuse::Result<()> {
        let h = self.handle(fh)?;
        if datasync {
            rustix::fs::fdatasync(&h.file)
        } else {
            rustix::fs::fsync(&h.file)
        }
    }

    fn opendir(&self, _ctx: &Context<'_>, ino: u64, _flags: u32) -> idfuse::Result<Opened> {
        let i = self.inode(ino)?;
        let file = self.reopen(i.fd.as_fd(), OFlags::RDONLY | OFlags::DIRECTORY)?;
        let fh = self.new_handle(file, None, true)?;
        Ok(Opened {
            fh,
            ..Opened::default()
        })
    }

    fn readdir(
        &self,
        _ctx: &Context<'_>,
        _ino: u64,
        fh: u64,
        offset: u64,
        out: &mut DirBuf,
    ) -> idfuse::Result<()> {
        let h = self.handle(fh)?;
        let mut guard = h.dir.lock().map_err(|_| Errno::IO)?;
        let dir = guard.as_mut().ok_or(Errno::NOTDIR)?;
        dir.seek(offset as i64)?;
        while let Some(e) = dir.read() {
            let e = e?;
            let typ = (e.file_type().as_raw_mode() & libc::S_IFMT) >> 12;
            if !out.push(e.ino(), e.offset() as u64, typ, e.file_name().to_bytes()) {
                break;
            }
        }
        Ok(())
    }

    fn readdirplus(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        fh: u64,
        offset: u64,
        out: &mut DirPlusBuf<'_>,
    ) -> idfuse::Result<()> {
        let h = self.handle(fh)?;
        let mut guard = h.dir.lock().map_err(|_| Errno::IO)?;
        let dir = guard.as_mut().ok_or(Errno::NOTDIR)?;
        dir.seek(offset as i64)?;
        while let Some(e) = dir.read() {
            let e = e?;
            let name = OsStr::from_bytes(e.file_name().to_bytes());
            let typ = (e.file_type().as_raw_mode() & libc::S_IFMT) >> 12;
            let off = e.offset() as u64;
            if name == "." || name == ".." {
                // The kernel ignores these; they carry no lookup.
                let entry = Entry {
                    ino: 0,
                    generation: 0,
                    attr: Attr {
                        ino: e.ino(),
                        mode: libc::S_IFDIR,
                        ..Attr::default()
                    },
                    entry_timeout: Duration::ZERO,
                    attr_timeout: Duration::ZERO,
                };
                if !out.push(&entry, off, typ, name) {
                    break;
                }
                continue;
            }
            let entry = match self.lookup_name(ino, name) {
                Ok(en) => en,
                // Gone since getdents: skip it.
                Err(_) => continue,
            };
            if !out.push(&entry, off, typ, name) {
                // Not sent: undo the lookup it counted.
                self.forget(entry.ino, 1);
                break;
            }
        }
        Ok(())
    }

    fn releasedir(
        &self,
        _ctx: &Context<'_>,
        _ino: u64,
        fh: u64,
        _flags: u32,
    ) -> idfuse::Result<()> {
        self.handles.write().map_err(|_| Errno::IO)?.remove(&fh);
        Ok(())
    }

    fn fsyncdir(
        &self,
        _ctx: &Context<'_>,
        _ino: u64,
        fh: u64,
        datasync: bool,
    ) -> idfuse::Result<()> {
        self.fsync(_ctx, _ino, fh, datasync)
    }

    fn statfs(&self, _ctx: &Context<'_>, ino: u64) -> idfuse::Result<Kstatfs> {
        let i = self.inode(ino)?;
        let st = rustix::fs::fstatvfs(&i.fd)?;
        Ok(Kstatfs {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: st.f_bsize as u32,
            namelen: st.f_namemax as u32,
            frsize: st.f_frsize as u32,
            ..Kstatfs::default()
        })
    }

    fn setxattr(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: u32,
        sf: SetxattrFlags,
    ) -> idfuse::Result<()> {
        let i = self.inode(ino)?;
        let path = Self::proc_path(i.fd.as_fd());
        let flags = rustix::fs::XattrFlags::from_bits(flags).ok_or(Errno::INVAL)?;
        rustix::fs::setxattr(path.as_c_str(), name, value, flags)?;
        if sf.contains(SetxattrFlags::ACL_KILL_SGID) {
            let st = statx_fd(i.fd.as_fd())?;
            let mode = u32::from(st.stx_mode);
            if mode & libc::S_ISGID != 0 {
                self.chmod(i.fd.as_fd(), mode & 0o7777 & !libc::S_ISGID)?;
            }
        }
        Ok(())
    }

    fn getxattr(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
    ) -> idfuse::Result<Xattr> {
        let i = self.inode(ino)?;
        let path = Self::proc_path(i.fd.as_fd());
        let mut buf = vec![0u8; size as usize];
        let n = rustix::fs::getxattr(path.as_c_str(), name, &mut buf[..])?;
        Ok(Self::xattr_result(buf, n, size))
    }

    fn listxattr(&self, _ctx: &Context<'_>, ino: u64, size: u32) -> idfuse::Result<Xattr> {
        let i = self.inode(ino)?;
        let path = Self::proc_path(i.fd.as_fd());
        let mut buf = vec![0u8; size as usize];
        let n = rustix::fs::listxattr(path.as_c_str(), &mut buf[..])?;
        Ok(Self::xattr_result(buf, n, size))
    }

    fn removexattr(&self, _ctx: &Context<'_>, ino: u64, name: &OsStr) -> idfuse::Result<()> {
        let i = self.inode(ino)?;
        let path = Self::proc_path(i.fd.as_fd());
        rustix::fs::removexattr(path.as_c_str(), name)
    }

    fn fallocate(
        &self,
        _ctx: &Context<'_>,
        _ino: u64,
        fh: u64,
        offset: u64,
        length: u64,
        mode: u32,
    ) -> idfuse::Result<()> {
        let h = self.handle(fh)?;
        let flags = rustix::fs::FallocateFlags::from_bits(mode).ok_or(Errno::OPNOTSUPP)?;
        rustix::fs::fallocate(&h.file, flags, offset, length)
    }

    fn lseek(
        &self,
        _ctx: &Context<'_>,
        _ino: u64,
        fh: u64,
        offset: u64,
        whence: u32,
    ) -> idfuse::Result<u64> {
        let h = self.handle(fh)?;
        let off = offset as i64;
        let from = match whence as i32 {
            libc::SEEK_SET => rustix::fs::SeekFrom::Start(offset),
            libc::SEEK_CUR => rustix::fs::SeekFrom::Current(off),
            libc::SEEK_END => rustix::fs::SeekFrom::End(off),
            libc::SEEK_DATA => rustix::fs::SeekFrom::Data(offset),
            libc::SEEK_HOLE => rustix::fs::SeekFrom::Hole(offset),
            _ => return Err(Errno::INVAL),
        };
        rustix::fs::seek(&h.file, from)
    }

    fn copy_file_range(
        &self,
        _ctx: &Context<'_>,
        _ino_in: u64,
        fh_in: u64,
        off_in: u64,
        _ino_out: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
        _flags: u64,
    ) -> idfuse::Result<u64> {
        let a = self.handle(fh_in)?;
        let b = self.handle(fh_out)?;
        let (mut oi, mut oo) = (off_in, off_out);
        let n = rustix::fs::copy_file_range(
            &a.file,
            Some(&mut oi),
            &b.file,
            Some(&mut oo),
            len.min(usize::MAX as u64) as usize,
        )?;
        Ok(n as u64)
    }

    fn syncfs(&self, _ctx: &Context<'_>, _ino: u64) -> idfuse::Result<()> {
        rustix::fs::syncfs(&self.root_dir)
    }
}
