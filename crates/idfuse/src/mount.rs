//! Mounting: mount options as mount(8) and libfuse spell them, the new mount
//! API (fsopen/fsconfig/fsmount/move_mount) with synchronous INIT, the
//! legacy mount(2) fallback, fusermount3 for unprivileged users, and the
//! guard that unmounts.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::thread::JoinHandleExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, UnmountFlags};

use crate::session::{spawn_worker, Device, Shared};
use crate::uring::{IoUringMode, Transport, TransportStats};
use crate::{Error, Filesystem, InitFlags, Negotiated, Notifier, SessionConfig};

/// Options of the FUSE mount itself.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Shown as the mount's source (`fsname=`).
    pub fsname: String,
    /// Shown as `fuse.SUBTYPE` (`subtype=`).
    pub subtype: String,
    /// Let the kernel check permissions (`default_permissions`). Required
    /// for idmapped mounts.
    pub default_permissions: bool,
    /// Let users other than the mounter in (`allow_other`).
    pub allow_other: bool,
    /// `ro`
    pub read_only: bool,
    /// `nosuid`
    pub nosuid: bool,
    /// `nodev`
    pub nodev: bool,
    /// `noexec`
    pub noexec: bool,
    /// `noatime`
    pub noatime: bool,
    /// `max_read=N`
    pub max_read: Option<u32>,
    /// The mounting user (`user_id=`); defaults to the caller's euid.
    pub user_id: u32,
    /// The mounting group (`group_id=`); defaults to the caller's egid.
    pub group_id: u32,
    /// Mount with mount(2) instead of the new mount API
    /// (fsopen/fsconfig/fsmount/move_mount). Kernels without the new API
    /// (before 5.2) get mount(2) by themselves; this is for sandboxes whose
    /// seccomp filter answers the new calls with EPERM rather than ENOSYS,
    /// where nothing can tell the two apart (`-o legacy_mount`). The mount
    /// behaves the same;
    /// an idmapped view of it still needs `mount_setattr` (Linux 5.12+).
    pub force_legacy: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            fsname: "idfuse".into(),
            subtype: "idfuse".into(),
            default_permissions: true,
            allow_other: true,
            read_only: false,
            nosuid: false,
            nodev: false,
            noexec: false,
            noatime: false,
            max_read: None,
            user_id: rustix::process::geteuid().as_raw(),
            group_id: rustix::process::getegid().as_raw(),
            force_legacy: false,
        }
    }
}

/// One `-o` option idfuse itself understands: its spellings (the first is
/// the one shown), the shape of its value, and what it sets. Both the
/// parser and the list of known options in errors are this table.
struct CoreOption {
    names: &'static [&'static str],
    value: Option<&'static str>,
    apply: fn(&mut MountOptions, &mut SessionConfig, Option<&str>) -> Result<(), String>,
}

fn number(v: Option<&str>) -> Result<u32, String> {
    v.and_then(|v| v.parse().ok())
        .ok_or_else(|| "expects a whole number, e.g. 131072".to_string())
}

fn name(v: Option<&str>) -> Result<String, String> {
    match v {
        Some(v) if !v.is_empty() && !v.contains(',') => Ok(v.to_string()),
        _ => Err("expects a name, e.g. fsname=data".into()),
    }
}

macro_rules! flag {
    ($names:expr, |$m:ident, $s:ident| $body:expr) => {
        CoreOption {
            names: $names,
            value: None,
            apply: |$m, $s, _| {
                $body;
                Ok(())
            },
        }
    };
}

#[rustfmt::skip]
static CORE_OPTIONS: &[CoreOption] = &[
    flag!(&["default_permissions"], |m, _s| m.default_permissions = true),
    flag!(&["nodefault_permissions", "no_default_permissions"], |m, _s| m.default_permissions = false),
    flag!(&["allow_other"], |m, _s| m.allow_other = true),
    flag!(&["noallow_other", "no_allow_other"], |m, _s| m.allow_other = false),
    flag!(&["ro"], |m, _s| m.read_only = true),
    flag!(&["rw"], |m, _s| m.read_only = false),
    flag!(&["suid"], |m, _s| m.nosuid = false),
    flag!(&["nosuid"], |m, _s| m.nosuid = true),
    flag!(&["dev"], |m, _s| m.nodev = false),
    flag!(&["nodev"], |m, _s| m.nodev = true),
    flag!(&["exec"], |m, _s| m.noexec = false),
    flag!(&["noexec"], |m, _s| m.noexec = true),
    flag!(&["atime", "relatime"], |m, _s| m.noatime = false),
    flag!(&["noatime"], |m, _s| m.noatime = true),
    flag!(&["writeback_cache"], |_m, s| s.writeback_cache = true),
    flag!(&["nowriteback_cache", "no_writeback_cache"], |_m, s| s.writeback_cache = false),
    flag!(&["legacy_mount"], |m, _s| m.force_legacy = true),
    CoreOption { names: &["max_read"], value: Some("N"), apply: |m, _, v| { m.max_read = Some(number(v)?.max(4096)); Ok(()) } },
    CoreOption { names: &["max_write"], value: Some("N"), apply: |_, s, v| { s.max_write = number(v)?.clamp(4096, 1 << 24); Ok(()) } },
    CoreOption { names: &["max_readahead"], value: Some("N"), apply: |_, s, v| { s.max_readahead = Some(number(v)?); Ok(()) } },
    CoreOption { names: &["fsname"], value: Some("NAME"), apply: |m, _, v| { m.fsname = name(v)?; Ok(()) } },
    CoreOption { names: &["subtype"], value: Some("NAME"), apply: |m, _, v| { m.subtype = name(v)?; Ok(()) } },
    CoreOption { names: &["user_id"], value: Some("N"), apply: |m, _, v| { m.user_id = number(v)?; Ok(()) } },
    CoreOption { names: &["group_id"], value: Some("N"), apply: |m, _, v| { m.group_id = number(v)?; Ok(()) } },
];

/// The `-o` options idfuse itself understands, as the parser knows them
/// (`max_read=N`, …); filesystems may add theirs.
pub fn known_options() -> Vec<String> {
    CORE_OPTIONS
        .iter()
        .map(|o| match o.value {
            Some(v) => format!("{}={v}", o.names[0]),
            None => o.names[0].to_string(),
        })
        .collect()
}

/// A filesystem's handler for `-o` options idfuse does not know: returns
/// true when it consumed the option, an error text when the value is bad.
pub type ExtraOption<'a> = dyn FnMut(&str, Option<&str>) -> Result<bool, String> + 'a;

/// Parse a comma-separated `-o` string into `mount` and `session`.
/// `extra` sees each option idfuse does not know first-hand and returns
/// true when it consumed it; `extra_known` names those options (as
/// `name=VALUE`) for the error that lists what is known.
pub fn parse_options(
    s: &str,
    mount: &mut MountOptions,
    session: &mut SessionConfig,
    extra: &mut ExtraOption<'_>,
    extra_known: &[String],
) -> Result<(), Error> {
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (item, None),
        };
        let bad = |why: String| Error::BadOption {
            option: item.to_string(),
            why,
        };
        match CORE_OPTIONS.iter().find(|o| o.names.contains(&key)) {
            Some(o) => (o.apply)(mount, session, value).map_err(bad)?,
            None => match extra(key, value) {
                Ok(true) => {}
                Ok(false) => {
                    let mut known = known_options();
                    known.extend(extra_known.iter().cloned());
                    return Err(Error::UnknownOption {
                        option: item.to_string(),
                        known: known.join(", "),
                    });
                }
                Err(why) => return Err(bad(why)),
            },
        }
    }
    Ok(())
}

/// Check that `path` is an existing directory we can mount on.
pub fn check_mountpoint(path: &Path) -> Result<(), Error> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::NotADirectory(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::MountpointMissing(path.to_path_buf()))
        }
        Err(e) => Err(Error::Io {
            what: format!("cannot use mountpoint {}", path.display()),
            source: e,
        }),
    }
}

/// Open `/dev/fuse`, explaining the usual failures.
pub fn open_device() -> Result<OwnedFd, Error> {
    match rustix::fs::open(
        "/dev/fuse",
        OFlags::RDWR | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(fd),
        Err(e) => Err(Error::NoDevice(e)),
    }
}

fn clone_device(master: BorrowedFd<'_>) -> Result<OwnedFd, Error> {
    let fd = open_device()?;
    let src: u32 = master.as_raw_fd() as u32;
    // SAFETY: FUSE_DEV_IOC_CLONE reads a u32 fd number from the pointer,
    // which points at a live local.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            idfuse_abi::ioctl::CLONE as _,
            &src as *const u32,
        )
    };
    if r < 0 {
        return Err(Error::Mount {
            step: "FUSE_DEV_IOC_CLONE",
            source: last_errno(),
            hint: "cloning /dev/fuse for an extra worker failed; try --threads 1".into(),
        });
    }
    Ok(fd)
}

fn last_errno() -> Errno {
    Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO)
}

/// Ask for synchronous INIT (6.18+): INIT is answered while the superblock
/// is set up, before the mount exists anywhere. False on older kernels.
fn request_sync_init(dev: BorrowedFd<'_>) -> bool {
    // SAFETY: FUSE_DEV_IOC_SYNC_INIT takes no argument.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), idfuse_abi::ioctl::SYNC_INIT as _) };
    r == 0
}

/// How the mount was made, which decides how it is unmounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountMethod {
    /// fsopen/fsconfig/fsmount, attached with move_mount.
    NewApi,
    /// mount(2).
    Legacy,
    /// fusermount3 (unprivileged); unmounted with `fusermount3 -u`.
    Fusermount,
}

/// A mounted (or detached, not yet attached) FUSE session.
pub struct Session<F: Filesystem> {
    shared: Arc<Shared<F>>,
    workers: Vec<JoinHandle<()>>,
    shutdown: Arc<OwnedFd>,
    mount_fd: Option<OwnedFd>,
    target: Option<PathBuf>,
    method: MountMethod,
    options: MountOptions,
    keep: bool,
}

impl<F: Filesystem> std::fmt::Debug for Session<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("target", &self.target)
            .field("method", &self.method)
            .finish()
    }
}

/// Refuse configurations the kernel would accept only to break later.
pub fn validate(
    caps: InitFlags,
    mount: &MountOptions,
    session: &SessionConfig,
) -> Result<(), Error> {
    if session.idmap && !mount.default_permissions && !caps.contains(InitFlags::POSIX_ACL) {
        return Err(Error::IdmapNeedsDefaultPermissions);
    }
    if session.passthrough && session.writeback_cache {
        return Err(Error::PassthroughWithWriteback);
    }
    if session.threads == 0 {
        return Err(Error::BadOption {
            option: "threads=0".into(),
            why: "at least one worker thread is needed".into(),
        });
    }
    Ok(())
}

impl<F: Filesystem> Session<F> {
    /// Mount `fs` at `target` and start the workers. Returns once INIT was
    /// answered and the mount is visible.
    pub fn mount(
        fs: Arc<F>,
        target: &Path,
        mount: MountOptions,
        session: SessionConfig,
    ) -> Result<Self, Error> {
        check_mountpoint(target)?;
        let mut s = Self::create(fs, mount, session, Some(target))?;
        if s.mount_fd.is_some() {
            s.attach(target)?;
        }
        Ok(s)
    }

    /// Create the FUSE mount detached (new mount API), with INIT answered,
    /// so the caller can idmap it ([`Session::mount_fd`]) before
    /// [`Session::attach`]. On kernels without the new API this mounts at
    /// `fallback_target` directly.
    pub fn mount_detached(
        fs: Arc<F>,
        mount: MountOptions,
        session: SessionConfig,
        fallback_target: &Path,
    ) -> Result<Self, Error> {
        check_mountpoint(fallback_target)?;
        Self::create(fs, mount, session, Some(fallback_target))
    }

    fn create(
        fs: Arc<F>,
        mount: MountOptions,
        session: SessionConfig,
        target: Option<&Path>,
    ) -> Result<Self, Error> {
        validate(fs.capabilities(), &mount, &session)?;
        let root = rustix::process::geteuid().is_root();
        // Pick the route before touching the device: an unprivileged caller
        // outside a user namespace it owns mounts through fusermount3.
        let context = if mount.force_legacy {
            Err(MountErr::NoNewApi)
        } else {
            fs_context(&mount)
        };
        let context = match context {
            Err(MountErr::Perm) if !root => {
                let Some(target) = target else {
                    return Err(Error::Mount {
                        step: "fsopen",
                        source: Errno::PERM,
                        hint: "an unprivileged mount goes through fusermount3, which attaches it at once; it cannot be made detached".into(),
                    });
                };
                return fusermount_session(fs, target, mount, session);
            }
            Err(MountErr::Perm) => {
                return Err(Error::Mount {
                    step: "fsopen",
                    source: Errno::PERM,
                    hint: "mounting needs CAP_SYS_ADMIN in the user namespace that owns the mount namespace; if this process has it, a seccomp filter may refuse the new mount API (fsopen): mount with mount(2) instead: -o legacy_mount (MountOptions::force_legacy)".into(),
                })
            }
            Err(MountErr::Failed { step, source, log }) => {
                return Err(Error::Mount {
                    step,
                    source,
                    hint: log,
                })
            }
            Err(MountErr::NoNewApi) => None,
            Ok(fsfd) => Some(fsfd),
        };
        let dev = match open_device() {
            Ok(dev) => dev,
            // Distributions ship /dev/fuse 0666; where it is not, an
            // unprivileged user can still mount through the setuid helper.
            Err(Error::NoDevice(Errno::ACCESS | Errno::PERM)) if !root && target.is_some() => {
                let target = target.unwrap_or(Path::new("/"));
                return fusermount_session(fs, target, mount, session);
            }
            Err(e) => return Err(e),
        };
        let session = resolve_io_uring(session)?;
        let shutdown = Arc::new(
            rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).map_err(|e| {
                Error::Io {
                    what: "eventfd".into(),
                    source: e.into(),
                }
            })?,
        );
        let master = Arc::new(dev.try_clone().map_err(|e| Error::Io {
            what: "dup /dev/fuse".into(),
            source: e,
        })?);
        let shared = Arc::new(Shared::new(
            fs,
            session.clone(),
            Device::new(dev),
            mount.default_permissions,
            shutdown.clone(),
        ));
        let mut this = Self {
            shared: shared.clone(),
            workers: Vec::new(),
            shutdown,
            mount_fd: None,
            target: None,
            method: MountMethod::NewApi,
            options: mount.clone(),
            keep: false,
        };
        let spawn0 = |this: &mut Self| -> Result<(), Error> {
            let h = spawn_worker(shared.clone(), master.clone(), 0).map_err(|e| Error::Io {
                what: "spawning a worker thread".into(),
                source: e,
            })?;
            this.workers.push(h);
            Ok(())
        };
        match context {
            Some(fsfd) => {
                // With synchronous INIT (6.18) the kernel answers INIT while
                // creating the superblock, so a worker must be reading by
                // then, and the mount is complete before it exists anywhere.
                let sync = request_sync_init(master.as_fd());
                if sync {
                    spawn0(&mut this)?;
                }
                let fd = fs_create(fsfd.as_fd(), master.as_fd(), &mount).map_err(|e| match e {
                    MountErr::Failed { step, source, log } => Error::Mount {
                        step,
                        source,
                        hint: log,
                    },
                    _ => Error::Mount {
                        step: "fsconfig",
                        source: Errno::PERM,
                        hint: String::new(),
                    },
                })?;
                this.mount_fd = Some(fd);
                if !sync {
                    spawn0(&mut this)?;
                }
            }
            None => {
                let Some(target) = target else {
                    return Err(Error::Mount {
                        step: "fsopen",
                        source: Errno::NOSYS,
                        hint: "this kernel lacks the new mount API (5.2+), so the mount cannot be made detached".into(),
                    });
                };
                match legacy_mount(master.as_fd(), target, &mount) {
                    Ok(()) => {
                        this.method = MountMethod::Legacy;
                        this.target = Some(target.to_path_buf());
                    }
                    Err(Errno::PERM) if !root => {
                        drop(this);
                        return fusermount_session(shared_fs(&shared), target, mount, session);
                    }
                    Err(e) => {
                        return Err(Error::Mount {
                            step: "mount(2)",
                            source: e,
                            hint: String::new(),
                        })
                    }
                }
                spawn0(&mut this)?;
            }
        }
        shared
            .wait_init(Duration::from_secs(30))
            .map_err(Error::Init)?;
        this.start_transport(&master)?;
        if let Some(bytes) = shared.config.max_readahead {
            this.raise_readahead(bytes);
        }
        Ok(this)
    }

    /// Give the mount `bytes` of readahead where that is more than INIT
    /// could grant (128 KiB): through its backing device's
    /// `read_ahead_kb`. The device number comes from a statx that may not
    /// ask the daemon (`AT_STATX_DONT_SYNC`). Failing (no root, a
    /// read-only /sys) only costs speed, so it is logged, not fatal.
    fn raise_readahead(&self, bytes: u32) {
        let kib = bytes / 1024;
        if kib <= 128 {
            return;
        }
        let flags = rustix::fs::AtFlags::STATX_DONT_SYNC;
        let st = match (&self.mount_fd, &self.target) {
            (Some(fd), _) => rustix::fs::statx(
                fd,
                "",
                flags | rustix::fs::AtFlags::EMPTY_PATH,
                rustix::fs::StatxFlags::empty(),
            ),
            (None, Some(t)) => {
                rustix::fs::statx(rustix::fs::CWD, t, flags, rustix::fs::StatxFlags::empty())
            }
            (None, None) => return,
        };
        let path = match st {
            Ok(st) => format!(
                "/sys/class/bdi/{}:{}/read_ahead_kb",
                st.stx_dev_major, st.stx_dev_minor
            ),
            Err(e) => {
                tracing::warn!("max_readahead={bytes}: cannot find the mount's device ({e}); readahead stays at the kernel's 128 KiB");
                return;
            }
        };
        match std::fs::write(&path, kib.to_string()) {
            Ok(()) => tracing::debug!("readahead {kib} KiB ({path})"),
            Err(e) => tracing::warn!(
                "max_readahead={bytes}: cannot write {path} ({e}; it needs root); readahead stays at the kernel's 128 KiB"
            ),
        }
    }

    /// After INIT: bring up the ring if INIT granted it, otherwise (or if
    /// that fails under `auto`) the remaining `/dev/fuse` workers.
    fn start_transport(&mut self, master: &Arc<OwnedFd>) -> Result<(), Error> {
        let mode = self.shared.config.io_uring;
        let granted = self
            .shared
            .negotiated
            .get()
            .is_some_and(|n| n.flags.contains(InitFlags::OVER_IO_URING));
        if granted {
            let started = crate::uring::start(&self.shared);
            self.workers.extend(started.handles);
            match started.result {
                Ok(t) => {
                    tracing::info!("transport: {t}");
                    *self
                        .shared
                        .transport
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = t;
                    return Ok(());
                }
                Err(why) if mode == IoUringMode::On => return Err(Error::IoUring(why)),
                Err(why) => tracing::info!("io_uring not used: {why}; falling back to /dev/fuse"),
            }
        } else if mode == IoUringMode::On {
            return Err(Error::IoUring(format!(
                "the kernel did not offer FUSE_OVER_IO_URING in INIT (is {} still Y?)",
                "/sys/module/fuse/parameters/enable_uring"
            )));
        } else if mode == IoUringMode::Auto {
            tracing::info!(
                "io_uring not used: the kernel did not offer FUSE_OVER_IO_URING in INIT"
            );
        }
        self.spawn_rest(master)?;
        tracing::info!(
            "transport: /dev/fuse ({} workers)",
            self.shared.config.threads
        );
        Ok(())
    }

    fn spawn_rest(&mut self, master: &Arc<OwnedFd>) -> Result<(), Error> {
        for i in 1..self.shared.config.threads {
            let fd = match clone_device(master.as_fd()) {
                Ok(fd) => fd,
                Err(e) => {
                    tracing::warn!("{e}; running with {i} worker(s)");
                    break;
                }
            };
            let h = spawn_worker(self.shared.clone(), Arc::new(fd), i).map_err(|e| Error::Io {
                what: "spawning a worker thread".into(),
                source: e,
            })?;
            self.workers.push(h);
        }
        Ok(())
    }

    /// The detached mount, for idmapping before [`Session::attach`]. `None`
    /// once attached or when the mount was made with mount(2)/fusermount3.
    pub fn mount_fd(&self) -> Option<BorrowedFd<'_>> {
        self.mount_fd.as_ref().map(|f| f.as_fd())
    }

    /// Attach the detached mount at `target` (move_mount).
    pub fn attach(&mut self, target: &Path) -> Result<(), Error> {
        check_mountpoint(target)?;
        let Some(fd) = self.mount_fd.take() else {
            return Ok(());
        };
        rustix::mount::move_mount(
            fd.as_fd(),
            "",
            rustix::fs::CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| Error::Mount {
            step: "move_mount",
            source: e,
            hint: format!("could not attach the mount at {}", target.display()),
        })?;
        self.target = Some(target.to_path_buf());
        Ok(())
    }

    /// Where the mount is attached.
    pub fn target(&self) -> Option<&Path> {
        self.target.as_deref()
    }

    /// What INIT negotiated.
    pub fn negotiated(&self) -> Option<Negotiated> {
        self.shared.negotiated.get().copied()
    }

    /// The transport carrying this session's requests.
    pub fn transport(&self) -> Transport {
        self.transport_stats().transport
    }

    /// Requests received so far, per transport and opcode.
    pub fn transport_stats(&self) -> TransportStats {
        self.shared.stats()
    }

    /// A handle for notifications.
    pub fn notifier(&self) -> Notifier {
        Notifier(self.shared.device.clone())
    }

    /// The filesystem.
    pub fn filesystem(&self) -> &Arc<F> {
        &self.shared.fs
    }

    /// How the mount was made.
    pub fn method(&self) -> MountMethod {
        self.method
    }

    /// Leave the mount in place when this value is dropped (the workers
    /// still stop, so the mount will answer ENOTCONN).
    pub fn keep_mounted(&mut self) {
        self.keep = true;
    }

    /// Number of workers still running.
    pub fn running_workers(&self) -> usize {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// Block until the mount goes away (unmounted by anyone) and the workers
    /// have stopped.
    pub fn wait(&mut self) {
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }

    /// Unmount, stop the workers and wait for them. Idempotent.
    pub fn unmount(&mut self) -> Result<(), Error> {
        let res = self.detach_mount();
        self.stop_workers();
        res
    }

    fn detach_mount(&mut self) -> Result<(), Error> {
        self.mount_fd = None;
        let Some(target) = self.target.take() else {
            return Ok(());
        };
        if self.keep {
            return Ok(());
        }
        match self.method {
            // Unmounted already (by `fusermount3 -u`, say): nothing to do.
            MountMethod::Fusermount if !is_mount_point(&target) => Ok(()),
            MountMethod::Fusermount => {
                let status = std::process::Command::new("fusermount3")
                    .arg("-u")
                    .arg("-z")
                    .arg("--")
                    .arg(&target)
                    .status();
                match status {
                    Ok(s) if s.success() => Ok(()),
                    Ok(s) => Err(Error::Unmount {
                        target,
                        why: format!("fusermount3 -u exited with {s}"),
                    }),
                    Err(e) => Err(Error::Unmount {
                        target,
                        why: format!("cannot run fusermount3: {e}"),
                    }),
                }
            }
            _ => match rustix::mount::unmount(&target, UnmountFlags::DETACH) {
                // EINVAL: not a mount point any more (someone unmounted it).
                Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(Error::Unmount {
                    target,
                    why: e.to_string(),
                }),
            },
        }
    }

    fn stop_workers(&mut self) {
        if !self.workers.is_empty() {
            let st = self.shared.stats();
            tracing::info!(
                "served {} requests over the ring, {} over /dev/fuse (transport: {})",
                st.ring_total(),
                st.dev_total(),
                st.transport
            );
        }
        self.shared.stopping.store(true, Ordering::Release);
        let one: u64 = 1;
        let _ = rustix::io::write(&*self.shutdown, &one.to_ne_bytes());
        // A worker blocked in read(/dev/fuse) returns EINTR on the wake
        // signal. It is sent again until the worker is gone: one that was
        // between its check of `stopping` and its read when the signal came
        // blocks after all. At worst a worker is in a filesystem call.
        let signal = crate::session::wake_signal();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut pause = Duration::from_millis(1);
        while Instant::now() < deadline {
            let mut left = 0;
            for h in self.workers.iter().filter(|h| !h.is_finished()) {
                left += 1;
                if let Some(sig) = signal {
                    // SAFETY: the thread is not joined (its JoinHandle is
                    // here), so its pthread_t is valid even if it has just
                    // ended; the signal's handler does nothing.
                    unsafe {
                        libc::pthread_kill(h.as_pthread_t(), sig);
                    }
                }
            }
            if left == 0 {
                break;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        for h in self.workers.drain(..) {
            if h.is_finished() {
                let _ = h.join();
            } else {
                tracing::warn!("a worker did not stop within 10 s; leaving it");
            }
        }
    }
}

/// Decide on io_uring before INIT: `on` refuses to go on when the machine
/// cannot do it; `auto` falls back, saying why in one line.
fn resolve_io_uring(mut session: SessionConfig) -> Result<SessionConfig, Error> {
    if session.io_uring == IoUringMode::Off {
        return Ok(session);
    }
    if let Err(why) = crate::uring::preflight() {
        if session.io_uring == IoUringMode::On {
            return Err(Error::IoUring(why));
        }
        tracing::info!("io_uring not used: {why}; requests go through /dev/fuse");
        session.io_uring = IoUringMode::Off;
    }
    Ok(session)
}

fn shared_fs<F: Filesystem>(shared: &Arc<Shared<F>>) -> Arc<F> {
    shared.fs.clone()
}

impl<F: Filesystem> Drop for Session<F> {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            tracing::warn!("{e}");
        }
    }
}

enum MountErr {
    NoNewApi,
    Perm,
    Failed {
        step: &'static str,
        source: Errno,
        log: String,
    },
}

/// True when `path` is a mount point in our mount namespace.
fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return true;
    };
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Drain the fs context's message log (what fsconfig would have printed).
fn read_fs_log(fsfd: BorrowedFd<'_>) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = rustix::io::read(fsfd, &mut buf) {
        if n == 0 {
            break;
        }
        out.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
    }
    out.join("; ")
}

/// `fsopen("fuse")` with every parameter but the device set.
fn fs_context(o: &MountOptions) -> Result<OwnedFd, MountErr> {
    let fsfd = match rustix::mount::fsopen("fuse", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(fd) => fd,
        Err(Errno::NOSYS) => return Err(MountErr::NoNewApi),
        Err(Errno::PERM) => return Err(MountErr::Perm),
        Err(e) => {
            return Err(MountErr::Failed {
                step: "fsopen(\"fuse\")",
                source: e,
                log: "is the fuse module loaded? (modprobe fuse)".into(),
            })
        }
    };
    let fail = |step: &'static str, e: Errno| MountErr::Failed {
        step,
        source: e,
        log: read_fs_log(fsfd.as_fd()),
    };
    let set = |k: &str, v: &str| {
        rustix::mount::fsconfig_set_string(fsfd.as_fd(), k, v).map_err(|e| fail("fsconfig", e))
    };
    set("source", &o.fsname)?;
    set("subtype", &o.subtype)?;
    set("rootmode", "40000")?;
    set("user_id", &o.user_id.to_string())?;
    set("group_id", &o.group_id.to_string())?;
    if let Some(m) = o.max_read {
        set("max_read", &m.to_string())?;
    }
    let flag = |k: &str| {
        rustix::mount::fsconfig_set_flag(fsfd.as_fd(), k).map_err(|e| fail("fsconfig", e))
    };
    if o.default_permissions {
        flag("default_permissions")?;
    }
    if o.allow_other {
        flag("allow_other")?;
    }
    if o.read_only {
        flag("ro")?;
    }
    Ok(fsfd)
}

/// Give the context its device, create the superblock and a detached mount.
fn fs_create(
    fsfd: BorrowedFd<'_>,
    dev: BorrowedFd<'_>,
    o: &MountOptions,
) -> Result<OwnedFd, MountErr> {
    let fail = |step: &'static str, e: Errno| MountErr::Failed {
        step,
        source: e,
        log: read_fs_log(fsfd),
    };
    rustix::mount::fsconfig_set_string(fsfd, "fd", dev.as_raw_fd().to_string())
        .map_err(|e| fail("fsconfig(fd)", e))?;
    rustix::mount::fsconfig_create(fsfd).map_err(|e| fail("fsconfig(FSCONFIG_CMD_CREATE)", e))?;
    let mut attr = MountAttrFlags::empty();
    if o.read_only {
        attr |= MountAttrFlags::MOUNT_ATTR_RDONLY;
    }
    if o.nosuid {
        attr |= MountAttrFlags::MOUNT_ATTR_NOSUID;
    }
    if o.nodev {
        attr |= MountAttrFlags::MOUNT_ATTR_NODEV;
    }
    if o.noexec {
        attr |= MountAttrFlags::MOUNT_ATTR_NOEXEC;
    }
    if o.noatime {
        attr |= MountAttrFlags::MOUNT_ATTR_NOATIME;
    }
    rustix::mount::fsmount(fsfd, FsMountFlags::FSMOUNT_CLOEXEC, attr)
        .map_err(|e| fail("fsmount", e))
}

fn legacy_mount(dev: BorrowedFd<'_>, target: &Path, o: &MountOptions) -> Result<(), Errno> {
    let mut data = format!(
        "fd={},rootmode=40000,user_id={},group_id={}",
        dev.as_raw_fd(),
        o.user_id,
        o.group_id
    );
    if o.default_permissions {
        data.push_str(",default_permissions");
    }
    if o.allow_other {
        data.push_str(",allow_other");
    }
    if let Some(m) = o.max_read {
        data.push_str(&format!(",max_read={m}"));
    }
    let mut flags = rustix::mount::MountFlags::empty();
    if o.read_only {
        flags |= rustix::mount::MountFlags::RDONLY;
    }
    if o.nosuid {
        flags |= rustix::mount::MountFlags::NOSUID;
    }
    if o.nodev {
        flags |= rustix::mount::MountFlags::NODEV;
    }
    if o.noexec {
        flags |= rustix::mount::MountFlags::NOEXEC;
    }
    let fstype = format!("fuse.{}", o.subtype);
    let data = CString::new(data).map_err(|_| Errno::INVAL)?;
    rustix::mount::mount(
        o.fsname.as_str(),
        target,
        fstype.as_str(),
        flags,
        data.as_c_str(),
    )
}

/// Mount through the setuid helper `fusermount3`, which hands back the
/// `/dev/fuse` fd over a unix socket (`_FUSE_COMMFD`).
fn fusermount_session<F: Filesystem>(
    fs: Arc<F>,
    target: &Path,
    mount: MountOptions,
    session: SessionConfig,
) -> Result<Session<F>, Error> {
    use rustix::net::{
        recvmsg, socketpair, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags,
        SocketFlags, SocketType,
    };
    // fusermount3 opens /dev/fuse with the caller's ids; when those cannot,
    // say so, rather than let its exit status look like an option problem.
    if let Err(e @ (Errno::ACCESS | Errno::PERM)) = rustix::fs::access(
        "/dev/fuse",
        rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK,
    ) {
        return Err(Error::NoDevice(e));
    }
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| Error::Io {
        what: "socketpair for fusermount3".into(),
        source: e.into(),
    })?;
    // The helper must inherit its end: clear CLOEXEC on a dup.
    let theirs_raw = rustix::io::dup(&theirs).map_err(|e| Error::Io {
        what: "dup".into(),
        source: e.into(),
    })?;
    let mut opts = vec![
        format!("fsname={}", mount.fsname),
        format!("subtype={}", mount.subtype),
    ];
    if mount.default_permissions {
        opts.push("default_permissions".into());
    }
    if mount.allow_other {
        opts.push("allow_other".into());
    }
    if mount.read_only {
        opts.push("ro".into());
    }
    if mount.nosuid {
        opts.push("nosuid".into());
    }
    if mount.nodev {
        opts.push("nodev".into());
    }
    if mount.noexec {
        opts.push("noexec".into());
    }
    if let Some(m) = mount.max_read {
        opts.push(format!("max_read={m}"));
    }
    let status = std::process::Command::new("fusermount3")
        .arg("-o")
        .arg(opts.join(","))
        .arg("--")
        .arg(target)
        .env("_FUSE_COMMFD", theirs_raw.as_raw_fd().to_string())
        .status()
        .map_err(|e| Error::Mount {
            step: "fusermount3",
            source: Errno::NOENT,
            hint: format!("cannot run fusermount3 ({e}); install the Debian package fuse3"),
        })?;
    drop(theirs_raw);
    drop(theirs);
    if !status.success() {
        return Err(Error::Mount {
            step: "fusermount3",
            source: Errno::PERM,
            hint: format!(
                "fusermount3 exited with {status} (its message is above); if it names allow_other: that needs `user_allow_other` in /etc/fuse.conf, or mount with -o noallow_other"
            ),
        });
    }
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    recvmsg(
        &ours,
        &mut [std::io::IoSliceMut::new(&mut byte)],
        &mut anc,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| Error::Io {
        what: "receiving the /dev/fuse fd from fusermount3".into(),
        source: e.into(),
    })?;
    let mut dev = None;
    for msg in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
            dev = fds.next();
        }
    }
    let dev = dev.ok_or_else(|| Error::Mount {
        step: "fusermount3",
        source: Errno::IO,
        hint: "fusermount3 did not pass back a /dev/fuse fd".into(),
    })?;
    let _ = rustix::fs::fcntl_setfl(&dev, OFlags::NONBLOCK | OFlags::RDWR);
    let session = resolve_io_uring(session)?;
    let shutdown = Arc::new(
        rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).map_err(|e| Error::Io {
            what: "eventfd".into(),
            source: e.into(),
        })?,
    );
    let master = Arc::new(dev.try_clone().map_err(|e| Error::Io {
        what: "dup /dev/fuse".into(),
        source: e,
    })?);
    let shared = Arc::new(Shared::new(
        fs,
        session,
        Device::new(dev),
        mount.default_permissions,
        shutdown.clone(),
    ));
    let mut this = Session {
        shared: shared.clone(),
        workers: Vec::new(),
        shutdown,
        mount_fd: None,
        target: Some(target.to_path_buf()),
        method: MountMethod::Fusermount,
        options: mount,
        keep: false,
    };
    let h = spawn_worker(shared.clone(), master.clone(), 0).map_err(|e| Error::Io {
        what: "spawning a worker thread".into(),
        source: e,
    })?;
    this.workers.push(h);
    shared
        .wait_init(Duration::from_secs(30))
        .map_err(Error::Init)?;
    this.start_transport(&master)?;
    Ok(this)
}

// Keep the unused-field lint honest: options are kept for diagnostics.
impl<F: Filesystem> Session<F> {
    /// The options the mount was made with.
    pub fn options(&self) -> &MountOptions {
        &self.options
    }
}
