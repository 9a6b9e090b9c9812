//! `idfuse mount memfs|passthrough|overlay`: option handling, daemonizing, the
//! idmap-before-attach sequence and signal handling. The mechanics live in
//! the libraries.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _};
use idfuse::{Caller, Filesystem, MountOptions, Session, SessionConfig};
use idfuse_fs::memfs::{Fault, MemFs, MemFsOptions};
use idfuse_fs::overlay::{Layout, LowerOptions, Overlay, OverlayOptions};
use idfuse_fs::passthrough::{Passthrough, PassthroughOptions};

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  idfuse mount memfs /mnt/mem\n  idfuse mount passthrough /srv/data /mnt/view --idmap b:0:100000:65536\n  idfuse mount passthrough /srv/data /mnt/view -o entry_timeout=0.1,attr_timeout=0.1 --foreground\n  idfuse mount overlay /mnt/root -o lowerdir=/img/l1:/img/l0,upperdir=/c1/upper,workdir=/c1/work --idmap b:0:100000:65536\n\nThrough mount(8), fstab and systemd (SOURCE memfs or passthrough:DIR; idmap=SPEC and threads=N as options; mount-only options such as nofail, _netdev, noauto, x-systemd.* are ignored):\n  mount -t fuse.idfuse passthrough:/srv/data /mnt/view -o idmap=b:0:100000:65536\n  umount /mnt/view"
)]
pub struct Args {
    #[command(subcommand)]
    fs: FsKind,
}

#[derive(clap::Subcommand)]
enum FsKind {
    /// An in-memory filesystem.
    Memfs {
        /// Where to mount it (an existing directory).
        mountpoint: PathBuf,
        #[command(flatten)]
        common: Common,
        /// Switch on one deliberate bug, to check that the conformance suite
        /// catches it: daemon-owner, ignore-dont-mask, no-setgid-inherit,
        /// drop-acl-xattrs, deny-absent-caller.
        #[arg(long, hide = true)]
        fault: Option<Fault>,
    },
    /// Mirror SOURCE at MOUNTPOINT.
    #[command(mut_arg("options", |a| a.help(PASSTHROUGH_OPTIONS_HELP)))]
    Passthrough {
        /// The directory to mirror.
        source: PathBuf,
        /// Where to mount the mirror (an existing directory outside SOURCE).
        mountpoint: PathBuf,
        #[command(flatten)]
        common: Common,
        /// Use FUSE passthrough (kernel-to-kernel I/O on backing files) when
        /// the daemon has the privilege for it.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        passthrough: bool,
    },
    /// Layers LOWERDIRs (leftmost on top) under UPPERDIR as kernel overlayfs
    /// does: -o lowerdir=L1:L2[,upperdir=U,workdir=W] or
    /// -o lowerdir+=L1,lowerdir+=L2[,upperdir=U,workdir=W] (without upperdir
    /// and workdir, read-only).
    #[command(mut_arg("options", |a| a.help(OVERLAY_OPTIONS_HELP)))]
    Overlay {
        /// Where to mount the overlay (an existing directory outside the
        /// layers).
        mountpoint: PathBuf,
        #[command(flatten)]
        common: Common,
        /// Use FUSE passthrough (kernel-to-kernel I/O on backing files) when
        /// the daemon has the privilege for it.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        passthrough: bool,
    },
    /// Mount a CephFS as a Ceph client (libcephfs), idmappable:
    /// -o conf=PATH[,name=client.NAME][,keyring=PATH][,fs=NAME][,path=/sub/dir]
    /// (also timeout=SECS for the kernel's name/attribute cache,
    /// mount_timeout=SECS to give up on an unreachable cluster, default 15,
    /// and max_readahead=BYTES, default 8 MiB as the kernel client's rasize).
    #[cfg(feature = "cephfs")]
    Cephfs {
        /// Where to mount it (an existing directory).
        mountpoint: PathBuf,
        #[command(flatten)]
        common: Common,
    },
}

/// The `-o` options every filesystem takes, as mount(8) and libfuse spell
/// them (writeback_cache aside: overlay and cephfs refuse it).
macro_rules! common_options {
    () => {
        "default_permissions, allow_other, ro, nosuid, nodev, noexec, noatime, max_read=N, max_readahead=BYTES (the kernel's readahead; above 128 KiB it is set on the mount's device, as root), fsname=NAME, subtype=NAME"
    };
}

/// `-o` of `idfuse mount passthrough`.
const PASSTHROUGH_OPTIONS_HELP: &str = concat!(
    "Mount options, comma-separated, as mount(8) and libfuse spell them: ",
    common_options!(),
    ", writeback_cache (with --passthrough false); also cache=auto|always|never (auto, the default: cache names, attributes and listings for a day where a fanotify watch on SOURCE invalidates them on change, else for timeout=SECS; always: for a SOURCE nobody else changes; never: no caching), entry_timeout=SECS, attr_timeout=SECS, timeout=SECS (default 1; given, they apply to every inode) and inode_handles=auto|never|always (hold cached inodes by file handle rather than open fd; auto: past half the open-file limit)"
);

/// `-o` of `idfuse mount overlay`: only what the overlay takes.
const OVERLAY_OPTIONS_HELP: &str = concat!(
    "Mount options, comma-separated. The layers: lowerdir=DIR[:DIR...] (leftmost on top; \\: for a colon in a name) or lowerdir+=DIR once per layer (kernel 6.8's form: each appends a layer below the ones before, the path taken as it is; not mixed with lowerdir=), upperdir=DIR and workdir=DIR (both, on one filesystem, for a writable overlay); userxattr (keep whiteout and opaque marks in user.overlay.* xattrs, for a daemon in a user namespace); entry_timeout=SECS, attr_timeout=SECS, timeout=SECS (for upper objects, default 1; lower-only ones are cached for a day: lowers are immutable); and, as mount(8) and libfuse spell them: ",
    common_options!(),
    ". Passthrough's cache= and inode_handles=, and writeback_cache, are refused"
);

#[derive(clap::Args)]
struct Common {
    /// Mount options, comma-separated, as mount(8) and libfuse spell them:
    /// default_permissions, allow_other, ro, nosuid, nodev, noexec, noatime,
    /// max_read=N, max_readahead=BYTES, fsname=NAME, subtype=NAME,
    /// writeback_cache.
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Stay in the foreground (otherwise the daemon detaches once mounted).
    #[arg(short = 'f', long)]
    foreground: bool,
    /// Worker threads (default: number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Mount even where MOUNTPOINT is already a mountpoint, on top of (and
    /// hiding) what is mounted there. Without it, idfuse refuses.
    #[arg(long)]
    stack: bool,
    /// Carry requests over io_uring (FUSE_OVER_IO_URING, Linux 6.14+):
    /// auto uses it where the kernel offers it and otherwise logs why not;
    /// on refuses to mount without it; off always uses /dev/fuse. The
    /// kernel offers it only once root ran
    /// `echo Y > /sys/module/fuse/parameters/enable_uring`.
    /// Default: auto, or the IDFUSE_IO_URING environment variable.
    #[arg(long, value_name = "auto|on|off")]
    io_uring: Option<idfuse::IoUringMode>,
    /// Ring entries per kernel queue per ring thread (requests one ring
    /// thread can have in hand on one queue).
    #[arg(long, value_name = "N", default_value_t = 1)]
    uring_depth: u32,
    /// Ring threads. The kernel has one queue per possible CPU and routes
    /// each request to the queue of the caller's CPU; each thread serves
    /// some queues (or shares one). Default: --threads or the number of
    /// CPUs, whichever is larger.
    #[arg(long, value_name = "N")]
    uring_threads: Option<usize>,
    /// Negotiate FUSE_ALLOW_IDMAP so the mount can be idmapped. It needs
    /// default_permissions, which is then the default, as is allow_other.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    idmap_support: bool,
    /// Idmap the mount before it becomes visible: SPEC in util-linux syntax
    /// (e.g. b:0:100000:65536: fs id 0 shows as 100000), or a user
    /// namespace file (/proc/PID/ns/user).
    #[arg(long, value_name = "SPEC")]
    idmap: Option<String>,
    /// Append one line per request to FILE: OPCODE UID GID ('-' for ids
    /// the kernel withheld).
    #[arg(long, value_name = "FILE", hide = true)]
    record_requests: Option<PathBuf>,
    /// Save the raw bytes of the first 5000 requests as files in DIR (seeds
    /// for the fuzzers).
    #[arg(long, value_name = "DIR", hide = true)]
    capture_requests: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.fs {
        FsKind::Memfs {
            mountpoint,
            common,
            fault,
        } => {
            let (mount, session) = settings(&common, &mut |_, _| Ok(false), &[])?;
            idfuse::check_mountpoint(&mountpoint)?;
            refuse_stacking(&mountpoint, common.stack)?;
            // The mounting user owns the root, as with a tmpfs it mounts.
            let make = || {
                Ok(MemFs::new(MemFsOptions {
                    fault,
                    root_uid: rustix::process::geteuid().as_raw(),
                    root_gid: rustix::process::getegid().as_raw(),
                    ..MemFsOptions::default()
                }))
            };
            let stats = |fs: &MemFs| {
                format!(
                    "inodes={} looked_up={}",
                    fs.inode_count(),
                    fs.looked_up_count()
                )
            };
            serve(make, stats, &mountpoint, &common, mount, session)
        }
        FsKind::Passthrough {
            source,
            mountpoint,
            common,
            passthrough,
        } => {
            let mut popts = PassthroughOptions {
                passthrough_io: passthrough,
                ..PassthroughOptions::default()
            };
            let (mount, mut session) = settings(
                &common,
                &mut |k, v| popts.parse_option(k, v),
                &PassthroughOptions::known_options(),
            )?;
            popts.writeback_cache = session.writeback_cache;
            if session.writeback_cache && popts.passthrough_io {
                bail!("`writeback_cache` cannot be combined with FUSE passthrough: the kernel refuses backing files on a writeback-cache connection. Add --passthrough false to use writeback_cache");
            }
            session.passthrough = popts.passthrough_io;
            idfuse::check_mountpoint(&mountpoint)?;
            refuse_stacking(&mountpoint, common.stack)?;
            Passthrough::check_mountpoint(&source, &mountpoint)?;
            // Fail early on a bad source, before detaching; the filesystem
            // itself is built in the daemon, after the fork, because it
            // keeps /proc/self/fd open.
            // (Without the watch, which the daemon sets up and reports.)
            drop(Passthrough::new(
                &source,
                PassthroughOptions {
                    cache: idfuse_fs::passthrough::CacheMode::Never,
                    ..popts.clone()
                },
            )?);
            let make = || Ok(Passthrough::new(&source, popts)?);
            let stats = |fs: &Passthrough| {
                format!(
                    "inodes={} inode_fds={}",
                    fs.inode_count(),
                    fs.inode_fd_count()
                )
            };
            serve(make, stats, &mountpoint, &common, mount, session)
        }
        FsKind::Overlay {
            mountpoint,
            common,
            passthrough,
        } => {
            let mut oopts = OverlayOptions {
                passthrough_io: passthrough,
                ..OverlayOptions::default()
            };
            let mut lower = LowerOptions::default();
            let (mut upper, mut work) = (None, None);
            let mut known = vec![
                "lowerdir=DIR[:DIR…]".to_string(),
                "lowerdir+=DIR".to_string(),
                "upperdir=DIR".to_string(),
                "workdir=DIR".to_string(),
            ];
            known.extend(OverlayOptions::known_options());
            let (mut mount, mut session) = settings(
                &common,
                &mut |k, v| {
                    if lower.take(k, v).map_err(|e| e.to_string())? {
                        return Ok(true);
                    }
                    if passthrough_only(k) {
                        return Err(format!(
                            "`{k}` is an option of `idfuse mount passthrough`, not of overlay: \
                             the overlay caches lower-only objects for a day (lowers do not \
                             change) and upper ones for entry_timeout/attr_timeout/timeout=SECS; \
                             drop `{k}`"
                        ));
                    }
                    let slot = match k {
                        "upperdir" => &mut upper,
                        "workdir" => &mut work,
                        _ => return oopts.parse_option(k, v),
                    };
                    match v {
                        Some(v) if !v.is_empty() => {
                            *slot = Some(v.to_string());
                            Ok(true)
                        }
                        _ => Err(format!("`{k}` needs a directory: {k}=DIR")),
                    }
                },
                &known,
            )?;
            if session.writeback_cache {
                bail!("writeback_cache is not available for overlay: it keeps files on FUSE passthrough and copies them up underneath the kernel's cache. Drop writeback_cache");
            }
            session.passthrough = oopts.passthrough_io;
            if lower.is_empty() {
                bail!("overlay needs its layers: -o lowerdir=DIR[:DIR…] (leftmost on top) or lowerdir+=DIR once per layer (top first), and upperdir=DIR,workdir=DIR for a writable overlay");
            }
            if mount.fsname.is_empty() || mount.fsname == MountOptions::default().fsname {
                mount.fsname = "overlay".into();
            }
            idfuse::check_mountpoint(&mountpoint)?;
            refuse_stacking(&mountpoint, common.stack)?;
            let layout = Layout::from_layers(
                &lower.layers()?,
                upper.as_deref().map(Path::new),
                work.as_deref().map(Path::new),
                &mountpoint,
            )?;
            // Fail early on unusable layers, before detaching; the daemon
            // opens them again after the fork.
            drop(Overlay::new(layout.clone(), oopts.clone()).context("cannot set up the overlay")?);
            let make = || Overlay::new(layout, oopts).context("cannot set up the overlay");
            let stats = |fs: &Overlay| format!("inodes={}", fs.inode_count());
            serve(make, stats, &mountpoint, &common, mount, session)
        }
        #[cfg(feature = "cephfs")]
        FsKind::Cephfs { mountpoint, common } => {
            let mut copts = idfuse_cephfs::CephOptions::default();
            let (mut mount, mut session) = settings(
                &common,
                &mut |k, v| copts.parse_option(k, v),
                &idfuse_cephfs::CephOptions::known_options(),
            )?;
            // Sequential reads fetch whole objects (4 MiB by default) from
            // the OSDs: a kernel readahead of two of them keeps requests in
            // flight, as the kernel's own CephFS client does (its `rasize`,
            // 8 MiB). Measured on the test cluster: cold 1 MiB reads of a
            // 128 MiB file at 1.9–2.0 GB/s with the kernel's 128 KiB,
            // 2.6–3.4 GB/s with 4–16 MiB.
            session.max_readahead.get_or_insert(8 << 20);
            if session.writeback_cache {
                bail!("writeback_cache is not available for cephfs: the kernel would place appends and keep file sizes itself while other hosts change them (see docs/cephfs.md). Drop writeback_cache");
            }
            if copts.conf.is_none() {
                bail!("cephfs needs -o conf=PATH: the cluster's ceph.conf, which names its monitors (mon host)");
            }
            if mount.fsname.is_empty() || mount.fsname == MountOptions::default().fsname {
                mount.fsname = format!("cephfs:{}", copts.path);
            }
            idfuse::check_mountpoint(&mountpoint)?;
            // libcephfs starts threads: connect in the daemon, after the
            // fork; a failure reaches the waiting parent through the pipe.
            let make = || Ok(idfuse_cephfs::CephFs::connect(&copts)?);
            let stats = |fs: &idfuse_cephfs::CephFs| format!("inodes={}", fs.inode_count());
            serve(make, stats, &mountpoint, &common, mount, session)
        }
    }
}

/// True for the `-o` options of passthrough that overlay does not take
/// (cache=, inode_handles=): refused by name rather than as unknown.
fn passthrough_only(key: &str) -> bool {
    let name = |o: &String| o.split('=').next().unwrap_or_default().to_string();
    PassthroughOptions::known_options()
        .iter()
        .map(name)
        .any(|n| n == key)
        && !OverlayOptions::known_options()
            .iter()
            .map(name)
            .any(|n| n == key)
}

/// A second mount on a mountpoint hides the first, which is rarely what a
/// user meant (a repeated command, a stale fstab line): refuse unless asked.
fn refuse_stacking(path: &Path, stack: bool) -> anyhow::Result<()> {
    use rustix::fs::{AtFlags, StatxAttributes, StatxFlags, CWD};
    if stack {
        return Ok(());
    }
    // Errors (an old kernel, a dead FUSE mount) leave the decision to the
    // mount itself.
    let Ok(st) = rustix::fs::statx(CWD, path, AtFlags::NO_AUTOMOUNT, StatxFlags::empty()) else {
        return Ok(());
    };
    if !(st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
        && st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
    {
        return Ok(());
    }
    let what = mounted_at(path)
        .map(|(fstype, source)| format!(" ({fstype} from {source})"))
        .unwrap_or_default();
    bail!(
        "{} is already a mountpoint{what}; a new mount there would hide it. Unmount it first (umount {}), choose another directory, or pass --stack (mount(8): -o stack) to mount on top of it on purpose",
        path.display(),
        path.display()
    )
}

/// The fs type and source of the topmost mount at `path`, from mountinfo.
fn mounted_at(path: &Path) -> Option<(String, String)> {
    let want = std::fs::canonicalize(path).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        let target = f.get(4)?.replace("\\040", " ");
        if Path::new(&target) != want {
            return None;
        }
        Some((f.get(sep + 1)?.to_string(), f.get(sep + 2)?.to_string()))
    })
}

type Extra<'a> = dyn FnMut(&str, Option<&str>) -> Result<bool, String> + 'a;

fn settings(
    common: &Common,
    extra: &mut Extra<'_>,
    extra_known: &[String],
) -> anyhow::Result<(MountOptions, SessionConfig)> {
    let mut mount = MountOptions::default();
    let mut session = SessionConfig {
        idmap: common.idmap_support,
        ..SessionConfig::default()
    };
    if !common.idmap_support {
        // Without idmap support we follow libfuse: both are opt-in.
        mount.default_permissions = false;
        mount.allow_other = false;
    }
    if let Some(n) = common.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        session.threads = n;
    }
    if let Some(m) = common.io_uring {
        session.io_uring = m;
    }
    if common.uring_depth == 0 {
        bail!("--uring-depth must be at least 1");
    }
    session.uring_depth = common.uring_depth;
    if let Some(n) = common.uring_threads {
        if n == 0 {
            bail!("--uring-threads must be at least 1");
        }
        session.uring_threads = n;
    }
    for o in &common.options {
        idfuse::parse_options(o, &mut mount, &mut session, extra, extra_known)?;
    }
    if session.idmap && !mount.default_permissions {
        // Even where FUSE_POSIX_ACL would make the kernel check permissions
        // anyway, the user asked for something we would not honour.
        return Err(idfuse::Error::IdmapNeedsDefaultPermissions.into());
    }
    if let Some(path) = &common.record_requests {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open --record-requests file {}", path.display()))?;
        let file = Mutex::new(file);
        session.observer = Some(Arc::new(move |op: &str, caller: Option<Caller>| {
            let line = match caller {
                Some(c) => format!("{op} {} {}\n", c.uid, c.gid),
                None => format!("{op} - -\n"),
            };
            if let Ok(mut f) = file.lock() {
                let _ = f.write_all(line.as_bytes());
            }
        }));
    }
    if let Some(dir) = &common.capture_requests {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir.clone();
        let count = std::sync::atomic::AtomicUsize::new(0);
        session.raw_observer = Some(Arc::new(move |raw: &[u8]| {
            let n = count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n < 5000 {
                let _ = std::fs::write(dir.join(format!("req-{n:05}")), raw);
            }
        }));
    }
    Ok((mount, session))
}

/// Mount `fs`, idmapping it first if asked, then serve until unmounted or
/// signalled.
fn serve<F: Filesystem>(
    make: impl FnOnce() -> anyhow::Result<F>,
    stats: fn(&F) -> String,
    mountpoint: &Path,
    common: &Common,
    mount: MountOptions,
    session: SessionConfig,
) -> anyhow::Result<ExitCode> {
    let map = match &common.idmap {
        Some(spec) => Some(
            spec.parse::<idfuse_idmap::MapSource>()
                .map_err(|e| anyhow::anyhow!("--idmap {spec}: {e}"))?,
        ),
        None => None,
    };
    if map.is_some() && !session.idmap {
        bail!("--idmap needs idmap support; drop --idmap-support false");
    }
    // Detach before any thread exists; the parent reports the outcome.
    let notify = if common.foreground {
        None
    } else {
        match daemonize()? {
            Daemon::Parent(code) => return Ok(code),
            Daemon::Child(pipe) => Some(pipe),
        }
    };
    let signals = block_signals()?;
    raise_fd_limit();
    let result = (|| -> anyhow::Result<Session<F>> {
        let fs = Arc::new(make()?);
        match &map {
            None => Ok(Session::mount(fs, mountpoint, mount, session)?),
            Some(source) => {
                let mut s = Session::mount_detached(fs, mount, session, mountpoint)?;
                if !s.negotiated().is_some_and(|n| n.idmap) {
                    bail!(
                        "this kernel ({}) did not offer FUSE_ALLOW_IDMAP: idmapped FUSE mounts need Linux 6.12 or newer",
                        kernel_release()
                    );
                }
                let ns = idfuse_idmap::UserNamespace::from_source(source)?;
                let Some(fd) = s.mount_fd() else {
                    bail!("this kernel lacks the new mount API, so the mount cannot be idmapped before it is attached");
                };
                idfuse_idmap::set_idmap(fd, &ns, false)?;
                s.attach(mountpoint)?;
                Ok(s)
            }
        }
    })();
    let mut session = match result {
        Ok(s) => s,
        Err(e) => match notify {
            // The waiting parent prints it; the child stays quiet so the
            // user reads it once.
            Some(n) => {
                n.fail(&format!("{e:#}"));
                return Ok(ExitCode::FAILURE);
            }
            None => return Err(e),
        },
    };
    tracing::info!(target = %mountpoint.display(), "mounted");
    if let Some(n) = notify {
        n.ready();
    }
    wait_for_end(&mut session, &signals, stats);
    session.unmount()?;
    Ok(ExitCode::SUCCESS)
}

/// A mirror holds one O_PATH fd per inode the kernel remembers; lift the
/// soft fd limit to the hard one, as passthrough daemons do.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    // The mirror keeps one O_PATH fd per inode the kernel caches, so a
    // large tree needs far more than the usual 1,024 or even a container's
    // hard limit. With CAP_SYS_RESOURCE the hard limit itself can go up to
    // fs.nr_open; without it, the soft limit goes up to the hard one.
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1 << 20);
    let want = nr_open.min(1 << 20);
    let lim = getrlimit(Resource::Nofile);
    if lim.current.is_some_and(|c| c >= want) {
        return;
    }
    let all = Rlimit {
        current: Some(want),
        maximum: Some(want.max(lim.maximum.unwrap_or(0))),
    };
    if setrlimit(Resource::Nofile, all).is_ok() {
        tracing::debug!("open-file limit raised to {want}");
        return;
    }
    if let Some(max) = lim.maximum {
        if lim.current.is_some_and(|c| c < max) {
            let raised = Rlimit {
                current: Some(max),
                maximum: Some(max),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => tracing::info!(
                    "open-file limit is {max} (no CAP_SYS_RESOURCE to go higher): the mirror caches at most about that many inodes"
                ),
                Err(e) => tracing::warn!("cannot raise the open-file limit to {max}: {e}"),
            }
        }
    }
}

fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// Block SIGINT/SIGTERM/SIGHUP and SIGUSR1 in this and every later thread,
/// and return a signalfd that reports them.
fn block_signals() -> anyhow::Result<OwnedFd> {
    // SAFETY: sigset manipulation on a local, then a process-wide mask
    // change before any worker thread exists; signalfd returns a new fd we
    // own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            bail!("cannot block termination signals");
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
        if fd < 0 {
            bail!("signalfd: {}", std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Return when a termination signal arrives or the mount went away. SIGUSR1
/// logs the daemon's figures (at info level: `IDFUSE_LOG=info`), as dd
/// reports its progress, for soak runs and for users watching a daemon.
fn wait_for_end<F: Filesystem>(
    session: &mut Session<F>,
    signals: &OwnedFd,
    stats: fn(&F) -> String,
) {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    // glibc keeps freed heap in its arenas; a memfs whose files were
    // deleted would otherwise hold on to their memory for good (a soak
    // saw 1.1 GB stay after every file was gone). Hand it back now and then.
    let mut last_trim = std::time::Instant::now();
    loop {
        if last_trim.elapsed() >= std::time::Duration::from_secs(10) {
            // SAFETY: malloc_trim only releases free memory of the heap.
            unsafe { libc::malloc_trim(0) };
            last_trim = std::time::Instant::now();
        }
        let mut fds = [PollFd::new(signals, PollFlags::IN)];
        let tick = Timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        let _ = poll(&mut fds, Some(&tick));
        if !fds[0].revents().is_empty() {
            // One struct signalfd_siginfo, whose first field is the signal.
            let mut buf = [0u8; 128];
            let n = rustix::io::read(signals, &mut buf).unwrap_or(0);
            let signo = (n >= 4).then(|| u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]));
            if signo == Some(libc::SIGUSR1 as u32) {
                tracing::info!(
                    "stats: {} workers={}",
                    stats(session.filesystem()),
                    session.running_workers()
                );
                continue;
            }
            tracing::info!("signal received; unmounting");
            return;
        }
        if session.running_workers() == 0 {
            tracing::info!("mount is gone; exiting");
            return;
        }
    }
}

/// The child's end of the pipe to the waiting parent.
struct ReadyPipe(std::fs::File);

impl ReadyPipe {
    fn ready(mut self) {
        let _ = self.0.write_all(b"ok\n");
        redirect_stdio();
    }
    fn fail(mut self, msg: &str) {
        let _ = self.0.write_all(msg.as_bytes());
    }
}

fn redirect_stdio() {
    if let Ok(null) = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors, which we own.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

enum Daemon {
    Parent(ExitCode),
    Child(ReadyPipe),
}

/// Fork: the parent waits for the child's verdict and returns the exit
/// code; the child carries on in a new session with the pipe to report on.
fn daemonize() -> anyhow::Result<Daemon> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).context("pipe")?;
    // SAFETY: no threads exist yet (signal handling and workers start
    // after this), so the child may continue running Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid > 0 {
        drop(w);
        let mut msg = String::new();
        let _ = std::fs::File::from(r).read_to_string(&mut msg);
        if msg.trim() == "ok" {
            return Ok(Daemon::Parent(ExitCode::SUCCESS));
        }
        if msg.is_empty() {
            msg = "the daemon exited before mounting".into();
        }
        eprintln!("idfuse: {}", msg.trim());
        return Ok(Daemon::Parent(ExitCode::FAILURE));
    }
    drop(r);
    let _ = rustix::process::setsid();
    Ok(Daemon::Child(ReadyPipe(std::fs::File::from(w))))
}
