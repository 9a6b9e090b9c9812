//! `passthrough`: mirror a directory through FUSE, correct on idmapped
//! mounts. Inodes are keyed by `(st_dev, st_ino)` and held by `O_PATH` fds
//! or, past a number of them, by file handles ([`InodeHandles`]); every name
//! resolves relative to its parent's fd and never follows a symlink or `..`
//! out of the source. New inodes are created with the worker thread's fs
//! credentials switched to the kernel's `Owner` and the caller's umask, so
//! setgid directories, default ACLs and the umask behave exactly as on the
//! backing filesystem. The daemon decides no permission itself. Regular
//! files are handed to the kernel as backing files (`FUSE_PASSTHROUGH`)
//! where the daemon has the privilege, for kernel-to-kernel I/O.
//!
//! Locks: `FUSE_POSIX_LOCKS` and `FUSE_FLOCK_LOCKS` are not negotiated, so
//! the kernel keeps POSIX locks and flocks itself, per mount superblock.
//! They are exact between processes using the mirror (plain and idmapped
//! views share the superblock) and invisible to processes working on the
//! source directly. Forwarding them would need one open file description
//! per lock owner (the daemon is a single process: its own POSIX locks
//! would merge across callers) and a blocked worker per SETLKW.
//!
//! Setid files do their I/O through the daemon: a backing file writes with
//! the daemon's CAP_FSETID and would keep bits a write must clear. An inode
//! keeps the I/O mode of its first open until all its opens are released
//! (the kernel fails an open in the other mode with EIO), so a file made
//! setid while open through a backing file shares it until then.
//!
//! `st_ino` is the backing file's, so stat and readdir agree with SOURCE;
//! the kernel identifies inodes by node id, so a filesystem mounted inside
//! SOURCE with clashing inode numbers confuses only tools that compare them.

mod handles;
mod inodes;
#[cfg(test)]
mod tests;
mod watch;

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use idfuse::{
    AttrReply, BackingId, Context, CreateMode, DirBuf, DirPlusBuf, Entry, Errno, Filesystem,
    InitFlags, Kstatfs, Negotiated, OpenOutFlags, Opened, Owner, SetAttr, SetxattrFlags, Statx,
    Xattr,
};
use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};

use crate::backing::{
    check_name, creds, key_of, open_child, rdev_from_fuse, statx_fd, statx_reply, to_attr,
    write_clears_setid, AsOwner, BackingFiles, Handles, ProcFd, BENEATH,
};
use handles::{FdCache, FileHandle, Mounts};
use inodes::{Held, Inode, InodeTable, ROOT};

/// How the passthrough holds the backing inodes the kernel has looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InodeHandles {
    /// Always by an `O_PATH` fd: the open-file limit caps the inodes the
    /// kernel may cache.
    Never,
    /// By an `O_PATH` fd while fewer than [`PassthroughOptions::inode_fds_max`]
    /// inodes are, by file handle beyond, if the daemon may open handles
    /// (CAP_DAC_READ_SEARCH) and the filesystem has them; else by fds.
    #[default]
    Auto,
    /// By file handle wherever the filesystem has them (fds elsewhere);
    /// refused at start when the source's cannot be opened.
    Always,
}

/// How long the kernel may cache what the mirror tells it (virtiofsd's
/// `--cache` modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// Long timeouts, directory listings and file pages kept, where a watch
    /// on SOURCE reports changes made behind the mirror (fanotify, with
    /// CAP_SYS_ADMIN); elsewhere the short timeouts of
    /// [`PassthroughOptions::entry_timeout`] and `attr_timeout`.
    #[default]
    Auto,
    /// Long timeouts everywhere, no watch: for a source nobody else touches.
    Always,
    /// No caching: every name and attribute is asked for again, listings
    /// and file pages are not kept between opens.
    Never,
}

/// How long names and attributes are cached where they are kept true by a
/// watch, or with `cache=always`.
pub const LONG_TIMEOUT: Duration = Duration::from_secs(86_400);

/// The open flags that decide whether an open file may serve as the
/// inode's backing file as it is: read-write, and none of the flags that
/// would change every other open's I/O through it.
const BACKING_AS_IS: OFlags = OFlags::ACCMODE
    .union(OFlags::APPEND)
    .union(OFlags::DIRECT)
    .union(OFlags::SYNC)
    .union(OFlags::DSYNC)
    .union(OFlags::NOATIME);

/// Open files of handle-held inodes kept between operations.
const FD_CACHE: usize = 64;

/// How to run a [`Passthrough`].
#[derive(Debug, Clone)]
pub struct PassthroughOptions {
    /// How long the kernel may cache names (and the absence of names)
    /// where no watch keeps them true (see [`CacheMode`]).
    pub entry_timeout: Duration,
    /// How long the kernel may cache attributes where no watch keeps them
    /// true.
    pub attr_timeout: Duration,
    /// Set the timeouts above for every inode, watched or not, whatever
    /// `cache` says (the `-o` timeout options set it).
    pub timeouts_set: bool,
    /// What the kernel may cache.
    pub cache: CacheMode,
    /// Hand regular files to the kernel as backing files (`FUSE_PASSTHROUGH`).
    pub passthrough_io: bool,
    /// The kernel caches writes (`writeback_cache`); not with passthrough.
    pub writeback_cache: bool,
    /// Hold inodes by file handle instead of an open fd.
    pub inode_handles: InodeHandles,
    /// With [`InodeHandles::Auto`], how many inodes may be held by fds;
    /// `None`: half the soft `RLIMIT_NOFILE` at start.
    pub inode_fds_max: Option<usize>,
}

impl Default for PassthroughOptions {
    fn default() -> Self {
        Self {
            entry_timeout: Duration::from_secs(1),
            attr_timeout: Duration::from_secs(1),
            timeouts_set: false,
            cache: CacheMode::Auto,
            passthrough_io: true,
            writeback_cache: false,
            inode_handles: InodeHandles::Auto,
            inode_fds_max: None,
        }
    }
}

/// Sets one passthrough option from its key and value.
type Setter = fn(&mut PassthroughOptions, &str, Option<&str>) -> Result<(), String>;

/// The passthrough's own `-o` options: (name, value shape, setter). The
/// parser and the list of known options in errors are both this table.
static OPTIONS: &[(&str, &str, Setter)] = &[
    ("entry_timeout", "SECS", |o, k, v| {
        o.entry_timeout = seconds(k, v)?;
        o.timeouts_set = true;
        Ok(())
    }),
    ("attr_timeout", "SECS", |o, k, v| {
        o.attr_timeout = seconds(k, v)?;
        o.timeouts_set = true;
        Ok(())
    }),
    ("timeout", "SECS", |o, k, v| {
        let t = seconds(k, v)?;
        o.entry_timeout = t;
        o.attr_timeout = t;
        o.timeouts_set = true;
        Ok(())
    }),
    ("cache", "auto|always|never", |o, _, v| {
        o.cache = match v {
            Some("auto") => CacheMode::Auto,
            Some("always") => CacheMode::Always,
            Some("never") => CacheMode::Never,
            v => {
                return Err(format!(
                    "`cache{}`: expected cache=auto (long caches kept true by a watch on SOURCE where possible), always (SOURCE changes only through the mirror) or never",
                    v.map(|v| format!("={v}")).unwrap_or_default()
                ))
            }
        };
        Ok(())
    }),
    ("inode_handles", "auto|never|always", |o, _, v| {
        o.inode_handles = match v {
            Some("auto") => InodeHandles::Auto,
            Some("never") => InodeHandles::Never,
            Some("always") => InodeHandles::Always,
            v => {
                return Err(format!(
                    "`inode_handles{}`: expected inode_handles=auto, never or always",
                    v.map(|v| format!("={v}")).unwrap_or_default()
                ))
            }
        };
        Ok(())
    }),
];

fn seconds(key: &str, value: Option<&str>) -> Result<Duration, String> {
    let v = value
        .ok_or_else(|| format!("`{key}` needs a value in seconds, e.g. {key}=1 or {key}=0.5"))?;
    v.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0 && *v < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("`{key}={v}`: expected seconds (a number ≥ 0, e.g. 1 or 0.5)"))
}

impl PassthroughOptions {
    /// Take an `-o` option the framework does not know: `entry_timeout=S`,
    /// `attr_timeout=S`, `timeout=S` (seconds, fractions allowed; they
    /// then apply to every inode, watched or not),
    /// `inode_handles=auto|never|always`, `cache=auto|always|never`. `Ok(false)` when the option is
    /// not ours.
    pub fn parse_option(&mut self, key: &str, value: Option<&str>) -> Result<bool, String> {
        match OPTIONS.iter().find(|(name, _, _)| *name == key) {
            Some((_, _, set)) => set(self, key, value).map(|()| true),
            None => Ok(false),
        }
    }

    /// The options [`PassthroughOptions::parse_option`] takes, as
    /// `name=VALUE`, for messages that list what is known.
    pub fn known_options() -> Vec<String> {
        OPTIONS
            .iter()
            .map(|(name, value, _)| format!("{name}={value}"))
            .collect()
    }
}

/// Why a passthrough cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SOURCE does not exist.
    #[error("source {0} does not exist; create it or give the directory to mirror")]
    SourceMissing(PathBuf),
    /// SOURCE is not a directory.
    #[error("source {0} is not a directory; passthrough mirrors a directory, give its parent or another directory")]
    SourceNotDir(PathBuf),
    /// MOUNTPOINT lies inside SOURCE, which would make a loop.
    #[error("mountpoint {mountpoint} is inside the source {source_dir} (or is the source): the mirror would contain itself. Choose a mountpoint outside {source_dir}")]
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

/// An inode's `O_PATH` fd for one operation: its own, or one opened from
/// its handle (closed when the last user drops it).
enum InodeFd<'a> {
    Held(BorrowedFd<'a>),
    Opened(Arc<OwnedFd>),
}

impl AsFd for InodeFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            InodeFd::Held(fd) => *fd,
            InodeFd::Opened(fd) => fd.as_fd(),
        }
    }
}

/// The passthrough filesystem.
pub struct Passthrough {
    inodes: Arc<RwLock<InodeTable>>,
    /// The watch on SOURCE, until the session hands us a notifier.
    watch: Mutex<Option<watch::Watch>>,
    /// Stops the watcher thread when the mirror goes.
    watching: Mutex<Option<watch::Running>>,
    /// `st_dev` of the watched filesystem (`cache=auto` with a watch).
    watched_dev: Option<u64>,
    /// Mount fds to open handles with.
    mounts: Mounts,
    fd_cache: FdCache,
    /// New inodes may be held by handles (the probe at start worked).
    handles_ok: bool,
    /// Hold new inodes by handle once this many are held by fds.
    fds_max: usize,
    /// Open files and directories.
    handles: Handles<Inode, rustix::fs::Dir>,
    /// `/proc/self/fd`, to reopen `O_PATH` fds with real access modes.
    proc: ProcFd,
    /// The source, readable, for syncfs.
    root_dir: OwnedFd,
    opts: PassthroughOptions,
    backing: BackingFiles,
}

fn io_err(what: String) -> impl FnOnce(rustix::io::Errno) -> Error {
    move |e| Error::Io {
        what,
        source: e.into(),
    }
}

/// Make `path` absolute and resolve what of it exists.
fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Ok(p);
    }
    let abs = std::path::absolute(path)?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => Ok(resolve(parent)?.join(name)),
        _ => Ok(abs),
    }
}

impl Passthrough {
    /// Mirror `source`.
    pub fn new(source: &Path, opts: PassthroughOptions) -> Result<Self, Error> {
        crate::backing::reserve_fd_table();
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
        let root_dir = rustix::fs::openat(
            rustix::fs::CWD,
            source,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err(format!(
            "opening source {} for reading",
            source.display()
        )))?;
        let proc = ProcFd::open().map_err(io_err(
            "opening /proc/self/fd (passthrough reopens files through it; mount /proc)".into(),
        ))?;
        let st = statx_fd(root.as_fd()).map_err(io_err(format!("stat {}", source.display())))?;
        let watch = match opts.cache {
            CacheMode::Auto => match watch::Watch::new(root_dir.as_fd(), key_of(&st).0) {
                Ok(w) => {
                    tracing::info!(
                        "cache=auto: watching SOURCE's filesystem with fanotify; names and attributes are cached for {}s and invalidated on change",
                        LONG_TIMEOUT.as_secs()
                    );
                    Some(w)
                }
                Err(why) => {
                    tracing::info!(
                        "cache=auto: no watch on SOURCE ({why}); names and attributes are cached for {:?} and {:?}",
                        opts.entry_timeout,
                        opts.attr_timeout
                    );
                    None
                }
            },
            CacheMode::Always | CacheMode::Never => None,
        };
        let mounts = Mounts::default();
        let handles_ok = match opts.inode_handles {
            InodeHandles::Never => false,
            InodeHandles::Auto => mounts.probe(root.as_fd(), &root_dir).is_ok(),
            InodeHandles::Always => {
                mounts.probe(root.as_fd(), &root_dir).map_err(io_err(format!(
                    "inode_handles=always: cannot open file handles of {} (it needs CAP_DAC_READ_SEARCH in the initial user namespace and a filesystem with file handles); use inode_handles=auto",
                    source.display()
                )))?;
                true
            }
        };
        let fds_max = match opts.inode_handles {
            InodeHandles::Always => 0,
            _ => opts.inode_fds_max.unwrap_or_else(|| {
                rustix::process::getrlimit(rustix::process::Resource::Nofile)
                    .current
                    .map_or(usize::MAX, |n| usize::try_from(n / 2).unwrap_or(usize::MAX))
            }),
        };
        Ok(Self {
            watched_dev: watch.as_ref().map(|w| w.dev),
            watch: Mutex::new(watch),
            watching: Mutex::new(None),
            inodes: Arc::new(RwLock::new(InodeTable::new(root, key_of(&st)))),
            mounts,
            fd_cache: FdCache::new(FD_CACHE),
            handles_ok,
            fds_max,
            handles: Handles::new(),
            proc,
            root_dir,
            backing: BackingFiles::new(opts.passthrough_io),
            opts,
        })
    }

    /// Refuse a mountpoint inside (or equal to) the source, comparing
    /// canonical paths.
    pub fn check_mountpoint(source: &Path, mountpoint: &Path) -> Result<(), Error> {
        let src = std::fs::canonicalize(source).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::SourceMissing(source.to_path_buf())
            } else {
                Error::Io {
                    what: format!("cannot resolve source {}", source.display()),
                    source: e,
                }
            }
        })?;
        let mnt = resolve(mountpoint).map_err(|e| Error::Io {
            what: format!("cannot resolve mountpoint {}", mountpoint.display()),
            source: e,
        })?;
        if mnt.starts_with(&src) {
            return Err(Error::MountpointInsideSource {
                mountpoint: mountpoint.to_path_buf(),
                source_dir: source.to_path_buf(),
            });
        }
        Ok(())
    }

    /// Inodes the kernel holds lookups on, plus the root.
    pub fn inode_count(&self) -> usize {
        self.inodes.read().map_or(0, |i| i.len())
    }

    /// Of [`Passthrough::inode_count`], the inodes held by an open fd.
    pub fn inode_fd_count(&self) -> usize {
        self.inodes.read().map_or(0, |i| i.fd_count())
    }

    /// The inode's `O_PATH` fd, opened from its handle if it has no fd.
    fn fd<'a>(&self, i: &'a Inode) -> Result<InodeFd<'a>, Errno> {
        match &i.held {
            Held::Fd(fd) => Ok(InodeFd::Held(fd.as_fd())),
            Held::Handle(h) => {
                if let Some(fd) = self.fd_cache.get(i.id) {
                    return Ok(InodeFd::Opened(fd));
                }
                let fd = Arc::new(self.mounts.open(h)?);
                self.fd_cache.put(i.id, fd.clone());
                Ok(InodeFd::Opened(fd))
            }
        }
    }

    /// True once `FUSE_PASSTHROUGH` was negotiated and a file was handed to
    /// the kernel as a backing file.
    pub fn passthrough_active(&self) -> bool {
        self.backing.active()
    }

    fn inode(&self, ino: u64) -> Result<Arc<Inode>, Errno> {
        let inodes = self.inodes.read().map_err(|_| Errno::IO)?;
        inodes.get(ino).ok_or(Errno::STALE)
    }

    /// Reopen an inode's `O_PATH` fd with real access flags.
    fn reopen(&self, fd: BorrowedFd<'_>, flags: OFlags) -> Result<OwnedFd, Errno> {
        self.proc.reopen(fd, flags)
    }

    /// Count a lookup of the inode behind `fd` (an `O_PATH` fd of a new or
    /// looked-up inode, found in the directory `parent`) and describe it
    /// to the kernel.
    fn register(&self, parent: BorrowedFd<'_>, fd: OwnedFd) -> Result<Entry, Errno> {
        creds::searching()?;
        let st = statx_fd(fd.as_fd())?;
        let handle = if self.handles_ok
            && self.inodes.read().map_err(|_| Errno::IO)?.fd_count() >= self.fds_max
        {
            // Only ever from our own fd, resolved below SOURCE.
            self.mounts.handle_for(fd.as_fd(), &st, parent, |d| {
                self.reopen(d, OFlags::RDONLY | OFlags::DIRECTORY)
            })
        } else {
            None
        };
        let mut inodes = self.inodes.write().map_err(|_| Errno::IO)?;
        let same = |held: &FileHandle| match &handle {
            Some(h) => h.same_inode(held),
            None => FileHandle::of(fd.as_fd()).is_ok_and(|h| h.same_inode(held)),
        };
        let key = key_of(&st);
        if let Some(ino) = inodes.count_existing(key, same) {
            return Ok(self.entry(ino, &st));
        }
        let held = match handle {
            Some(h) => Held::Handle(h),
            None => Held::Fd(fd),
        };
        let ino = inodes.lookup(key, held, |_| true);
        Ok(self.entry(ino, &st))
    }

    fn entry(&self, ino: u64, st: &rustix::fs::Statx) -> Entry {
        let dev = key_of(st).0;
        Entry {
            ino,
            generation: 0,
            attr: to_attr(st),
            entry_timeout: self.entry_ttl(dev),
            attr_timeout: self.attr_ttl(dev),
        }
    }

    /// True when the kernel may keep names, attributes, listings and pages
    /// of inodes on `dev` for long: `cache=always`, or a watch reports
    /// their changes.
    fn long_cache(&self, dev: u64) -> bool {
        match self.opts.cache {
            CacheMode::Always => true,
            CacheMode::Never => false,
            CacheMode::Auto => self.watched_dev == Some(dev),
        }
    }

    fn entry_ttl(&self, dev: u64) -> Duration {
        if self.opts.timeouts_set {
            self.opts.entry_timeout
        } else if self.opts.cache == CacheMode::Never {
            Duration::ZERO
        } else if self.long_cache(dev) {
            LONG_TIMEOUT
        } else {
            self.opts.entry_timeout
        }
    }

    fn attr_ttl(&self, dev: u64) -> Duration {
        if self.opts.timeouts_set {
            self.opts.attr_timeout
        } else if self.opts.cache == CacheMode::Never {
            Duration::ZERO
        } else if self.long_cache(dev) {
            LONG_TIMEOUT
        } else {
            self.opts.attr_timeout
        }
    }

    /// Whether a watch on SOURCE keeps the kernel's caches true (it runs
    /// once the session has started).
    pub fn watching(&self) -> bool {
        self.watching.lock().is_ok_and(|w| w.is_some())
    }

    fn lookup_name(&self, parent: u64, name: &OsStr) -> Result<Entry, Errno> {
        creds::searching()?;
        let p = self.inode(parent)?;
        let pfd = self.fd(&p)?;
        let fd = open_child(pfd.as_fd(), name)?;
        self.register(pfd.as_fd(), fd)
    }

    /// `.` and `..`, which the kernel sends only for NFS export: `.` is the
    /// directory itself; `..` of the root is the root, and any other `..`
    /// must be a directory the table already knows (every known inode was
    /// reached from the root by single names), so it never leaves SOURCE.
    fn lookup_dots(&self, parent: u64, name: &OsStr) -> Result<Entry, Errno> {
        let p = self.inode(parent)?;
        let pfd = self.fd(&p)?;
        let fd = if name == "." || parent == ROOT {
            self.reopen(pfd.as_fd(), OFlags::PATH)?
        } else {
            rustix::fs::openat(
                &pfd,
                "..",
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?
        };
        let st = statx_fd(fd.as_fd())?;
        let ino = self
            .inodes
            .write()
            .map_err(|_| Errno::IO)?
            .count_existing(key_of(&st), |held| {
                FileHandle::of(fd.as_fd()).is_ok_and(|h| h.same_inode(held))
            })
            .ok_or(Errno::ACCESS)?;
        Ok(self.entry(ino, &st))
    }

    fn attr_of(&self, ino: u64) -> Result<AttrReply, Errno> {
        let i = self.inode(ino)?;
        let ifd = self.fd(&i)?;
        let st = statx_fd(ifd.as_fd())?;
        Ok(AttrReply {
            attr: to_attr(&st),
            timeout: self.attr_ttl(key_of(&st).0),
        })
    }

    /// Open flags for a file of this handle.
    fn open_flags(&self, flags: u32) -> OFlags {
        let mut f = OFlags::from_bits_retain(flags)
            & !(OFlags::CREATE | OFlags::EXCL | OFlags::NOCTTY | OFlags::PATH);
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

    /// Register a backing file for `inode` (BACKING_OPEN), if passthrough
    /// is wanted, negotiated and permitted. `file` serves as it is when it
    /// is open read-write without O_APPEND (`rw`), else it is reopened so.
    fn open_backing(&self, ctx: &Context<'_>, file: BorrowedFd<'_>, rw: bool) -> Option<BackingId> {
        if !self.backing.wanted(ctx) {
            return None;
        }
        // BACKING_OPEN keeps the opener's credentials for the kernel's I/O
        // on the file: the daemon's, never a creating owner's.
        creds::daemon().ok()?;
        // One backing file serves every open of the inode, whatever its
        // access mode, so it is read-write (and not appending); where the
        // source refuses that, the inode does its I/O through the daemon.
        let reopened = if rw {
            None
        } else {
            Some(self.reopen(file, OFlags::RDWR).ok()?)
        };
        let backing = reopened.as_ref().map_or(file, |f| f.as_fd());
        self.backing.open(ctx, backing)
    }

    /// See [`write_clears_setid`]; `mode`: the file's, when known already
    /// (an unknown mode counts as setid).
    fn must_lose_setid_on_write(file: BorrowedFd<'_>, mode: Option<u32>) -> bool {
        mode.or_else(|| statx_fd(file).ok().map(|st| u32::from(st.stx_mode)))
            .is_none_or(write_clears_setid)
    }

    /// Make a handle for `file`, an open of the regular file `inode` with
    /// `flags`, in the I/O mode the inode is in (or the best one, if it is
    /// idle). `mode`: the file's mode, when just read.
    fn opened(
        &self,
        ctx: &Context<'_>,
        inode: &Arc<Inode>,
        file: OwnedFd,
        flags: OFlags,
        mode: Option<u32>,
    ) -> Result<Opened, Errno> {
        let backing = inode.io.lock().map_err(|_| Errno::IO)?.join((), || {
            Ok(if Self::must_lose_setid_on_write(file.as_fd(), mode) {
                None
            } else {
                let rw = flags & BACKING_AS_IS == OFlags::RDWR;
                self.open_backing(ctx, file.as_fd(), rw)
            })
        })?;
        let fh = self.handles.add_file(ctx, inode, (), file)?;
        Ok(Opened {
            fh,
            // `flush` has nothing to do (locks are the kernel's, and a
            // local backing fs reports no errors at close): the kernel may
            // skip the round trip on every close. Pages of a file doing
            // its I/O through the daemon stay cached between opens where a
            // watch drops them on a change made in SOURCE.
            flags: if backing.is_none() && self.long_cache(inode.dev) {
                OpenOutFlags::NOFLUSH | OpenOutFlags::KEEP_CACHE
            } else {
                OpenOutFlags::NOFLUSH
            },
            backing_id: backing,
        })
    }

    /// A new file of `parent` was opened as `file`: count its lookup and
    /// open it for the kernel.
    fn created(
        &self,
        ctx: &Context<'_>,
        parent: BorrowedFd<'_>,
        file: OwnedFd,
        flags: OFlags,
        kill_suidgid: bool,
    ) -> Result<(Entry, Opened), Errno> {
        if kill_suidgid {
            // A chmod, if any, puts the daemon's credentials back.
            self.proc.kill_suidgid(file.as_fd())?;
        }
        // O_PATH: no access check, whoever's credentials are in effect.
        let path = self.reopen(file.as_fd(), OFlags::PATH)?;
        let entry = self.register(parent, path)?;
        let inode = self.inode(entry.ino)?;
        // The mode was read by `register` just now: no second statx.
        match self.opened(ctx, &inode, file, flags, Some(entry.attr.mode)) {
            Ok(opened) => Ok((entry, opened)),
            Err(e) => {
                // The kernel will not learn of this entry: undo its lookup.
                self.forget(entry.ino, 1);
                Err(e)
            }
        }
    }
}

impl Filesystem for Passthrough {
    crate::backing::handle_requests!();

    fn capabilities(&self) -> InitFlags {
        crate::backing::INIT_FLAGS
    }

    fn init(&self, n: &Negotiated) {
        if self.opts.passthrough_io && !n.flags.contains(InitFlags::PASSTHROUGH) {
            tracing::warn!(
                "the kernel did not grant FUSE_PASSTHROUGH (not asked for, writeback_cache on, or kernel older than 6.9); reads and writes go through the daemon"
            );
        }
    }

    fn notifier(&self, n: &Negotiated, notifier: idfuse::Notifier) {
        let Some(w) = self.watch.lock().ok().and_then(|mut w| w.take()) else {
            return;
        };
        match w.start(self.inodes.clone(), notifier, n.minor >= 44) {
            Ok(running) => {
                if let Ok(mut r) = self.watching.lock() {
                    *r = Some(running);
                }
            }
            // Not expected (thread or pipe creation failed), and the long
            // timeouts are promised already: say so loudly.
            Err(e) => tracing::error!(
                "cannot start the watch on SOURCE ({e}): changes made in SOURCE outside the mirror show only after {}s; remount with -o cache=never or cache=auto with timeouts",
                LONG_TIMEOUT.as_secs()
            ),
        }
    }

    fn lookup(&self, _ctx: &Context<'_>, parent: u64, name: &OsStr) -> idfuse::Result<Entry> {
        creds::searching()?;
        if name == "." || name == ".." {
            return self.lookup_dots(parent, name);
        }
        match self.lookup_name(parent, name) {
            // The kernel may cache the absence for as long as a name.
            Err(Errno::NOENT) => {
                let ttl = self.entry_ttl(self.inode(parent)?.dev);
                if ttl.is_zero() {
                    Err(Errno::NOENT)
                } else {
                    Ok(Entry::negative(ttl))
                }
            }
            r => r,
        }
    }

    fn forget(&self, ino: u64, nlookup: u64) {
        let gone = self
            .inodes
            .write()
            .is_ok_and(|mut inodes| inodes.forget(ino, nlookup));
        if gone {
            self.fd_cache.remove(ino);
        }
    }

    fn batch_forget(&self, nodes: &mut dyn Iterator<Item = idfuse::ForgetOne>) {
        let mut gone = Vec::new();
        if let Ok(mut inodes) = self.inodes.write() {
            for n in nodes {
                if inodes.forget(n.nodeid, n.nlookup) {
                    gone.push(n.nodeid);
                }
            }
        }
        for ino in gone {
            self.fd_cache.remove(ino);
        }
    }

    fn getattr(&self, _ctx: &Context<'_>, ino: u64, fh: Option<u64>) -> idfuse::Result<AttrReply> {
        creds::searching()?;
        if let Some(h) = fh.and_then(|fh| self.handles.get(fh).ok()) {
            let st = statx_fd(h.file()?)?;
            return Ok(AttrReply {
                attr: to_attr(&st),
                timeout: self.attr_ttl(key_of(&st).0),
            });
        }
        self.attr_of(ino)
    }

    fn statx(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        fh: Option<u64>,
        _flags: u32,
        mask: u32,
    ) -> idfuse::Result<(Statx, Duration)> {
        creds::searching()?;
        let want = StatxFlags::from_bits_retain(mask) | StatxFlags::BASIC_STATS;
        let h = fh.and_then(|fh| self.handles.get(fh).ok());
        let i = self.inode(ino)?;
        let ifd = match &h {
            Some(_) => None,
            None => Some(self.fd(&i)?),
        };
        let fd = match (&h, &ifd) {
            (Some(h), _) => h.file()?,
            (None, Some(fd)) => fd.as_fd(),
            (None, None) => return Err(Errno::IO),
        };
        let (_, out) = statx_reply(fd, want)?;
        Ok((out, self.attr_ttl(i.dev)))
    }

    fn setattr(&self, _ctx: &Context<'_>, ino: u64, a: &SetAttr) -> idfuse::Result<AttrReply> {
        creds::daemon()?;
        let i = self.inode(ino)?;
        let ifd = self.fd(&i)?;
        // A truncate through an open file of the inode, if the kernel named one.
        let h = a.size.and(a.fh).and_then(|fh| self.handles.get(fh).ok());
        let open = match &h {
            Some(h) => Some(h.file()?),
            None => None,
        };
        self.proc.set_attr(ifd.as_fd(), open, a)?;
        self.attr_of(ino)
    }

    fn readlink(&self, _ctx: &Context<'_>, ino: u64) -> idfuse::Result<Vec<u8>> {
        creds::daemon()?;
        let i = self.inode(ino)?;
        let ifd = self.fd(&i)?;
        let t = rustix::fs::readlinkat(&ifd, "", Vec::new())?;
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
        creds::searching()?;
        check_name(name)?;
        let p = self.inode(parent)?;
        let pfd = self.fd(&p)?;
        let kind = if mode.mode & libc::S_IFMT == 0 {
            rustix::fs::FileType::RegularFile
        } else {
            rustix::fs::FileType::from_raw_mode(mode.mode)
        };
        {
            creds::owner(owner, mode.umask)?;
            rustix::fs::mknodat(
                &pfd,
                name,
                kind,
                Mode::from_raw_mode(mode.mode & 0o7777),
                rdev_from_fuse(rdev),
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
        creds::searching()?;
        check_name(name)?;
        let p = self.inode(parent)?;
        let pfd = self.fd(&p)?;
        {
            creds::owner(owner, mode.umask)?;
            rustix::fs::mkdirat(&pfd, name, Mode::from_raw_mode(mode.mode & 0o7777))?;
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
        creds::searching()?;
        check_name(name)?;
        let p = self.inode(parent)?;
        let pfd = self.fd(&p)?;
        {
            creds::owner(owner, 0)?;
            // The target is stored, never resolved by the daemon.
            rustix::fs::symlinkat(target, &pfd, name)?;
        }
        self.lookup_name(parent, name)
    }

    fn unlink(&self, _ctx: &Context<'_>, parent: u64, name: &OsStr) -> idfuse::Result<()> {
        creds::daemon()?;
        check_name(name)?;
        let p = self.inode(parent)?;
        let pfd = self.fd(&p)?;
        rustix::fs::unlinkat(&pfd, name, AtFlags::empty())
    }

    fn rmdir(&self, _ctx: &Context<'_>, parent: u64, name: &OsStr) -> idfuse::Result<()> {
        creds::daemon()?;
        check_name(name)?;
        let p = self.inode(parent)?;
        let pfd = self.fd(&p)?;
        rustix::fs::unlinkat(&pfd, name, AtFlags::REMOVEDIR)
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
        creds::daemon()?;
        check_name(name)?;
        check_name(newname)?;
        let p = self.inode(parent)?;
        let pfd = self.fd(&p)?;
        let np = self.inode(newparent)?;
        let npfd = self.fd(&np)?;
        let flags = rustix::fs::RenameFlags::from_bits(flags).ok_or(Errno::INVAL)?;
        // The whiteout is a new inode: create it as its owner.
        let _as = match whiteout_owner {
            Some(o) if flags.contains(rustix::fs::RenameFlags::WHITEOUT) => {
                Some(AsOwner::new(o, 0)?)
            }
            _ => None,
        };
        rustix::fs::renameat_with(&pfd, name, &npfd, newname, flags)
    }

    fn link(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
    ) -> idfuse::Result<Entry> {
        creds::daemon()?;
        check_name(newname)?;
        let i = self.inode(ino)?;
        let ifd = self.fd(&i)?;
        let np = self.inode(newparent)?;
        let npfd = self.fd(&np)?;
        // The documented O_PATH idiom; unlike AT_EMPTY_PATH it needs no
        // CAP_DAC_READ_SEARCH, so it works in a user namespace too. The
        // magic link lands on the inode, a symlink included.
        self.proc.link(ifd.as_fd(), npfd.as_fd(), newname)?;
        self.lookup_name(newparent, newname)
    }

    fn open(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        flags: u32,
        kill_suidgid: bool,
    ) -> idfuse::Result<Opened> {
        creds::daemon()?;
        let i = self.inode(ino)?;
        let ifd = self.fd(&i)?;
        let oflags = self.open_flags(flags);
        let file = self.reopen(ifd.as_fd(), oflags)?;
        if kill_suidgid {
            self.proc.kill_suidgid(file.as_fd())?;
        }
        self.opened(ctx, &i, file, oflags, None)
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
        creds::searching()?;
        check_name(name)?;
        let p = self.inode(parent)?;
        let pfd = self.fd(&p)?;
        let mut oflags = self.open_flags(flags);
        if oflags & BACKING_AS_IS == OFlags::WRONLY && self.backing.wanted(ctx) {
            // A file this open creates may be opened read-write whatever
            // its mode (the VFS checks no permission on a file the open
            // created), and then serves as the backing file too: no
            // second open.
            oflags = (oflags & !OFlags::WRONLY) | OFlags::RDWR;
        }
        let file = {
            creds::owner(owner, mode.umask)?;
            // Always O_EXCL: the kernel treats the file as created by the
            // caller and skips its permission check on it, so a file that
            // appeared in the source meanwhile must not be opened here.
            rustix::fs::openat2(
                &pfd,
                name,
                oflags | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode.mode & 0o7777),
                BENEATH,
            )?
        };
        self.created(ctx, pfd.as_fd(), file, oflags, kill_suidgid)
    }

    fn tmpfile(
        &self,
        ctx: &Context<'_>,
        parent: u64,
        owner: &Owner,
        mode: CreateMode,
        flags: u32,
    ) -> idfuse::Result<(Entry, Opened)> {
        creds::searching()?;
        let p = self.inode(parent)?;
        let pfd = self.fd(&p)?;
        let mut f = (self.open_flags(flags) & !OFlags::DIRECTORY) | OFlags::TMPFILE;
        if !f.intersects(OFlags::WRONLY | OFlags::RDWR) {
            f |= OFlags::RDWR;
        }
        let file = {
            creds::owner(owner, mode.umask)?;
            rustix::fs::openat(
                self.proc.dir(),
                ProcFd::name(pfd.as_fd()).as_c_str(),
                f | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode.mode & 0o7777),
            )?
        };
        self.created(ctx, pfd.as_fd(), file, f, false)
    }

    fn opendir(&self, _ctx: &Context<'_>, ino: u64, _flags: u32) -> idfuse::Result<Opened> {
        creds::daemon()?;
        let i = self.inode(ino)?;
        let ifd = self.fd(&i)?;
        let file = self.reopen(ifd.as_fd(), OFlags::RDONLY | OFlags::DIRECTORY)?;
        let dir = rustix::fs::Dir::read_from(&file)?;
        let fh = self.handles.add_dir(Some(file), dir)?;
        // A listing the kernel keeps is dropped with the directory's pages
        // when the watch reports a change in it.
        let flags = if self.long_cache(i.dev) {
            OpenOutFlags::CACHE_DIR | OpenOutFlags::KEEP_CACHE
        } else {
            OpenOutFlags::empty()
        };
        Ok(Opened {
            fh,
            flags,
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
        creds::daemon()?;
        let h = self.handles.get(fh)?;
        let mut dir = h
            .dir
            .as_ref()
            .ok_or(Errno::NOTDIR)?
            .lock()
            .map_err(|_| Errno::IO)?;
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
        creds::daemon()?;
        let h = self.handles.get(fh)?;
        let mut dir = h
            .dir
            .as_ref()
            .ok_or(Errno::NOTDIR)?
            .lock()
            .map_err(|_| Errno::IO)?;
        dir.seek(offset as i64)?;
        while let Some(e) = dir.read() {
            let e = e?;
            let name = OsStr::from_bytes(e.file_name().to_bytes());
            let typ = (e.file_type().as_raw_mode() & libc::S_IFMT) >> 12;
            let off = e.offset() as u64;
            if name == "." || name == ".." {
                if !out.push(&crate::backing::dots_entry(e.ino()), off, typ, name) {
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

    fn statfs(&self, _ctx: &Context<'_>, ino: u64) -> idfuse::Result<Kstatfs> {
        creds::daemon()?;
        let i = self.inode(ino)?;
        let ifd = self.fd(&i)?;
        crate::backing::statfs(ifd.as_fd())
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
        creds::daemon()?;
        let i = self.inode(ino)?;
        let ifd = self.fd(&i)?;
        // Verbatim: ACLs and capabilities arrive in the filesystem's ids.
        self.proc
            .setxattr_request(ifd.as_fd(), name, value, flags, sf)
    }

    fn getxattr(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
    ) -> idfuse::Result<Xattr> {
        creds::searching()?;
        let i = self.inode(ino)?;
        let ifd = self.fd(&i)?;
        crate::backing::get_xattr(ifd.as_fd(), name, size)
    }

    fn listxattr(&self, _ctx: &Context<'_>, ino: u64, size: u32) -> idfuse::Result<Xattr> {
        creds::searching()?;
        let i = self.inode(ino)?;
        let ifd = self.fd(&i)?;
        crate::backing::list_xattr(ifd.as_fd(), size)
    }

    fn removexattr(&self, _ctx: &Context<'_>, ino: u64, name: &OsStr) -> idfuse::Result<()> {
        creds::daemon()?;
        let i = self.inode(ino)?;
        let ifd = self.fd(&i)?;
        crate::backing::remove_xattr(ifd.as_fd(), name)
    }

    fn syncfs(&self, _ctx: &Context<'_>, _ino: u64) -> idfuse::Result<()> {
        creds::daemon()?;
        rustix::fs::syncfs(&self.root_dir)
    }
}
