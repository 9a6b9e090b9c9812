//! Long runs on real mounts.
//!
//! * An fsx-style exerciser: one file, a seeded random sequence of writes,
//!   reads, truncates, fallocates, mmap reads and writes, copy_file_range,
//!   reopens and fsyncs, every result checked against an in-memory model.
//!   Runs on memfs and on passthrough with and without FUSE passthrough.
//!   `IDFUSE_FSX_OPS` sets the number of operations, `IDFUSE_FSX_SEED` the
//!   seed (decimal or 0x-hex).
//! * Two threads mutating one small namespace at once (create, rename,
//!   link, unlink, mkdir, rmdir), then a check that the tree is consistent
//!   and that removing it frees every inode. `IDFUSE_STRESS_OPS` sets the
//!   number of operations per thread.
//! * Both also run on `overlay` over two lower layers with the test's files
//!   and directories already in them, so that copy-ups, whiteouts and
//!   opaque directories happen in the middle of the run; what the overlay
//!   wrote in its upper layer is then read back through kernel overlayfs.
//! * With `--features cephfs-tests`, both also run on `idfuse-cephfs` over a
//!   single-node Ceph cluster (scripts/ceph-cluster.sh), with fewer
//!   operations by default (20,000 and 5,000; the same variables set them).

mod common;

use common::Tmpfs;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use idfuse::{MountOptions, Session, SessionConfig};
use idfuse_fs::memfs::{MemFs, MemFsOptions};
use idfuse_fs::overlay::{Layout, Overlay, OverlayOptions};
use idfuse_fs::passthrough::{InodeHandles, Passthrough, PassthroughOptions};
use rustix::fs::{RenameFlags, CWD};

// ---------------------------------------------------------------------
// Mounts

/// A kernel overlayfs mount, unmounted on drop.
struct KernelOverlay(PathBuf);

impl Drop for KernelOverlay {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

enum Fs {
    Mem(Session<MemFs>),
    Pt(Session<Passthrough>),
    Ov(Session<Overlay>),
    #[cfg(feature = "cephfs-tests")]
    Ceph(Session<idfuse_cephfs::CephFs>),
    /// memfs served by a forked child process (pid).
    Child(i32),
}

#[derive(Clone, Copy, Debug)]
enum Target {
    Memfs,
    /// memfs with the kernel's writeback cache, its daemon in a child
    /// process. In one process a MAP_SHARED writer deadlocks with its own
    /// daemon: munmap holds the mmap lock while the kernel writes the dirty
    /// pages back, and the worker that must receive that WRITE needs the
    /// same lock to grow its heap. Real daemons are other processes.
    MemfsWritebackChild,
    /// Passthrough; `true`: with FUSE passthrough (kernel backing files).
    Passthrough(bool),
    /// Overlay over two lower layers the test fills first (see
    /// [`Mount::overlay`]); `true`: with FUSE passthrough.
    Overlay(bool),
    /// idfuse-cephfs on a single-node cluster started for the test.
    #[cfg(feature = "cephfs-tests")]
    Cephfs,
}

/// A single-node Ceph cluster (scripts/ceph-cluster.sh), stopped on drop.
#[cfg(feature = "cephfs-tests")]
struct CephCluster(tempfile::TempDir);

#[cfg(feature = "cephfs-tests")]
impl CephCluster {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ceph-cluster.sh")
    }
    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("idfuse-ceph.")
            .tempdir()
            .expect("tempdir");
        let ok = std::process::Command::new("bash")
            .arg(Self::script())
            .arg("start")
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        let c = Self(dir);
        assert!(ok, "ceph-cluster.sh start failed (setup.sh installs Ceph)");
        c
    }
}

#[cfg(feature = "cephfs-tests")]
impl Drop for CephCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(Self::script())
            .arg("stop")
            .arg(self.0.path())
            .status();
    }
}

/// A mounted filesystem; unmounted on drop (also while unwinding), the
/// FUSE mount before the tmpfs under it.
struct Mount {
    fs: Option<Fs>,
    mnt: PathBuf,
    /// The backing directory of a passthrough mount.
    backing: Option<PathBuf>,
    /// The tmpfs holding an overlay's layers: `l1` (top), `l2`, `upper`,
    /// `work`.
    layers: Option<PathBuf>,
    threads: usize,
    /// The FUSE connection's number under /sys/fs/fuse/connections.
    conn: u32,
    _tmpfs: Option<Tmpfs>,
    _dir: tempfile::TempDir,
    /// Dropped after the mount (fields drop in order).
    #[cfg(feature = "cephfs-tests")]
    _ceph: Option<CephCluster>,
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(Fs::Child(pid)) = self.fs.take() {
            let _ = rustix::mount::unmount(&self.mnt, rustix::mount::UnmountFlags::empty());
            let start = Instant::now();
            loop {
                let mut st = 0;
                // SAFETY: reaping our own child by pid.
                if unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) } != 0 {
                    break;
                }
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = rustix::mount::unmount(&self.mnt, rustix::mount::UnmountFlags::DETACH);
                    // SAFETY: our own child, by pid.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                        libc::waitpid(pid, &mut st, 0);
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Mount {
    fn new(target: Target) -> Mount {
        let dir = tempfile::tempdir().expect("tempdir");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).expect("mkdir mnt");
        let cfg = SessionConfig {
            passthrough: matches!(target, Target::Passthrough(true) | Target::Overlay(true)),
            ..SessionConfig::default()
        };
        let threads = cfg.threads;
        match target {
            Target::MemfsWritebackChild => {
                let (r, w) = rustix::pipe::pipe().expect("pipe");
                // SAFETY: the child mounts, serves until unmounted and
                // leaves with _exit; it never returns into the test harness.
                let pid = unsafe { libc::fork() };
                assert!(pid >= 0, "fork");
                if pid == 0 {
                    drop(r);
                    // SAFETY: prctl on the child itself.
                    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                    let memfs = Arc::new(MemFs::new(MemFsOptions {
                        root_mode: 0o777,
                        ..MemFsOptions::default()
                    }));
                    let cfg = SessionConfig {
                        writeback_cache: true,
                        ..SessionConfig::default()
                    };
                    if let Ok(mut s) = Session::mount(memfs, &mnt, MountOptions::default(), cfg) {
                        let _ = rustix::io::write(&w, b"1");
                        drop(w);
                        s.wait();
                    }
                    // SAFETY: leave without running the test's destructors.
                    unsafe { libc::_exit(0) };
                }
                drop(w);
                let mut b = [0u8; 1];
                let ready = rustix::io::read(&r, &mut b).unwrap_or(0) == 1;
                let m = Mount {
                    fs: Some(Fs::Child(pid)),
                    conn: if ready { conn_of(&mnt) } else { 0 },
                    mnt,
                    backing: None,
                    layers: None,
                    threads,
                    _tmpfs: None,
                    _dir: dir,
                    #[cfg(feature = "cephfs-tests")]
                    _ceph: None,
                };
                assert!(ready, "the daemon child did not mount");
                m
            }
            Target::Memfs => {
                let memfs = Arc::new(MemFs::new(MemFsOptions {
                    root_mode: 0o777,
                    ..MemFsOptions::default()
                }));
                let s =
                    Session::mount(memfs, &mnt, MountOptions::default(), cfg).expect("mount memfs");
                let conn = conn_of(&mnt);
                Mount {
                    fs: Some(Fs::Mem(s)),
                    mnt,
                    backing: None,
                    layers: None,
                    threads,
                    conn,
                    _tmpfs: None,
                    _dir: dir,
                    #[cfg(feature = "cephfs-tests")]
                    _ceph: None,
                }
            }
            Target::Passthrough(_) => {
                let src = dir.path().join("src");
                fs::create_dir(&src).expect("mkdir src");
                let tmpfs = Tmpfs::mount(&src, c"mode=0777,size=1g");
                // IDFUSE_INODE_HANDLES=always: hold inodes by file handle.
                let opts = PassthroughOptions {
                    inode_handles: match std::env::var("IDFUSE_INODE_HANDLES").as_deref() {
                        Ok("always") => InodeHandles::Always,
                        Ok("never") => InodeHandles::Never,
                        _ => InodeHandles::Auto,
                    },
                    ..PassthroughOptions::default()
                };
                let pt = Arc::new(Passthrough::new(&src, opts).expect("passthrough"));
                let s = Session::mount(pt, &mnt, MountOptions::default(), cfg)
                    .expect("mount passthrough");
                let conn = conn_of(&mnt);
                Mount {
                    fs: Some(Fs::Pt(s)),
                    mnt,
                    conn,
                    backing: Some(src),
                    layers: None,
                    threads,
                    _tmpfs: Some(tmpfs),
                    _dir: dir,
                    #[cfg(feature = "cephfs-tests")]
                    _ceph: None,
                }
            }
            Target::Overlay(_) => Mount::overlay(target, |_| {}),
            #[cfg(feature = "cephfs-tests")]
            Target::Cephfs => {
                let cluster = CephCluster::start();
                let opts = idfuse_cephfs::CephOptions {
                    conf: Some(cluster.0.path().join("ceph.conf")),
                    ..idfuse_cephfs::CephOptions::default()
                };
                let fs = Arc::new(idfuse_cephfs::CephFs::connect(&opts).expect("connect to Ceph"));
                let s =
                    Session::mount(fs, &mnt, MountOptions::default(), cfg).expect("mount cephfs");
                let _ =
                    fs::set_permissions(&mnt, std::os::unix::fs::PermissionsExt::from_mode(0o777));
                let conn = conn_of(&mnt);
                Mount {
                    fs: Some(Fs::Ceph(s)),
                    mnt,
                    backing: None,
                    layers: None,
                    threads,
                    conn,
                    _tmpfs: None,
                    _dir: dir,
                    _ceph: Some(cluster),
                }
            }
        }
    }

    /// An overlay over layers on a fresh tmpfs: `l1` on top of `l2`,
    /// `upper` and `work`, filled by `fill` (given the tmpfs root) before
    /// the overlay is mounted.
    fn overlay(target: Target, fill: impl FnOnce(&Path)) -> Mount {
        let Target::Overlay(pt) = target else {
            panic!("Mount::overlay for {target:?}");
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let mnt = dir.path().join("mnt");
        let root = dir.path().join("layers");
        for d in [&mnt, &root] {
            fs::create_dir(d).expect("mkdir");
        }
        let tmpfs = Tmpfs::mount(&root, c"mode=0755,size=1g");
        for d in ["l1", "l2", "upper", "work"] {
            fs::create_dir(root.join(d)).expect("mkdir layer");
        }
        fs::set_permissions(
            root.join("upper"),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("chmod upper");
        fill(&root);
        let layout = Layout {
            lowers: vec![root.join("l1"), root.join("l2")],
            upper: Some(root.join("upper")),
            work: Some(root.join("work")),
        };
        let opts = OverlayOptions {
            passthrough_io: pt,
            ..OverlayOptions::default()
        };
        let ov = Arc::new(Overlay::new(layout, opts).expect("overlay"));
        let cfg = SessionConfig {
            passthrough: pt,
            ..SessionConfig::default()
        };
        let threads = cfg.threads;
        let s = Session::mount(ov, &mnt, MountOptions::default(), cfg).expect("mount overlay");
        let conn = conn_of(&mnt);
        Mount {
            fs: Some(Fs::Ov(s)),
            mnt,
            backing: None,
            layers: Some(root),
            threads,
            conn,
            _tmpfs: Some(tmpfs),
            _dir: dir,
            #[cfg(feature = "cephfs-tests")]
            _ceph: None,
        }
    }

    /// Kernel overlayfs, read-only, over this overlay's layers with its
    /// upper as the top lower layer: what the upper holds, read by the
    /// reference implementation of the format. Unmounted on drop.
    fn kernel_view(&self) -> KernelOverlay {
        let root = self.layers.as_ref().expect("an overlay's layers");
        let mnt = root.join("kernel-view");
        fs::create_dir_all(&mnt).expect("mkdir kernel-view");
        let data = format!(
            "lowerdir={}:{}:{}",
            root.join("upper").display(),
            root.join("l1").display(),
            root.join("l2").display()
        );
        let data = std::ffi::CString::new(data).expect("no NUL in the paths");
        rustix::mount::mount(
            "overlay",
            &mnt,
            "overlay",
            rustix::mount::MountFlags::RDONLY,
            Some(data.as_c_str()),
        )
        .unwrap_or_else(|e| panic!("mount kernel overlayfs over the layers: {e}"));
        KernelOverlay(mnt)
    }

    /// Abort the FUSE connection: a request the daemon never answers
    /// otherwise keeps its caller in uninterruptible sleep, and the test
    /// process could not even exit.
    fn abort(&self) {
        let dir = Path::new("/sys/fs/fuse/connections");
        if fs::read_dir(dir).map_or(true, |mut d| d.next().is_none()) {
            let _ = rustix::mount::mount(
                "fusectl",
                dir,
                "fusectl",
                rustix::mount::MountFlags::empty(),
                None::<&std::ffi::CStr>,
            );
        }
        let _ = fs::write(dir.join(self.conn.to_string()).join("abort"), "1");
    }

    /// What this process's Ceph client is waiting for (the MDS requests
    /// and OSD operations in flight, from its admin socket), for the
    /// report of a hang; empty for other targets.
    fn client_requests(&self) -> String {
        #[cfg(feature = "cephfs-tests")]
        if let Some(c) = &self._ceph {
            let me = format!(".{}.asok", std::process::id());
            let socks = fs::read_dir(c.0.path().join("run"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(&me));
            let mut out = String::new();
            // The end of this client's log (verbose with
            // CEPH_CLUSTER_CLIENT_DEBUG=20 in the cluster script).
            let log =
                c.0.path()
                    .join("log")
                    .join(format!("client.admin.{}.log", std::process::id()));
            if let Ok(keep) = std::env::var("IDFUSE_HANG_KEEP") {
                let _ = fs::copy(
                    &log,
                    Path::new(&keep).join(log.file_name().unwrap_or_default()),
                );
            }
            let tail = fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = tail.lines().collect();
            out.push_str(&format!(
                "  end of {}:\n{}\n",
                log.display(),
                lines[lines.len().saturating_sub(60)..].join("\n")
            ));
            for sock in socks {
                for cmd in ["mds_requests", "objecter_requests"] {
                    let o = std::process::Command::new("timeout")
                        .args(["10", "ceph", "--admin-daemon"])
                        .arg(&sock)
                        .arg(cmd)
                        .stdin(std::process::Stdio::null())
                        .output();
                    let text = match o {
                        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into(),
                        Ok(o) => format!(
                            "failed ({}): {}",
                            o.status,
                            String::from_utf8_lossy(&o.stderr)
                        ),
                        Err(e) => format!("failed: {e}"),
                    };
                    out.push_str(&format!("  {cmd}: {}\n", text.trim()));
                }
            }
            return out;
        }
        String::new()
    }

    fn inode_count(&self) -> usize {
        match self.fs.as_ref().expect("mounted") {
            Fs::Mem(s) => s.filesystem().inode_count(),
            Fs::Pt(s) => s.filesystem().inode_count(),
            Fs::Ov(s) => s.filesystem().inode_count(),
            #[cfg(feature = "cephfs-tests")]
            Fs::Ceph(s) => s.filesystem().inode_count(),
            Fs::Child(_) => panic!("the inode table of a child daemon is not visible"),
        }
    }

    /// Workers a healthy session runs: over io_uring, one /dev/fuse worker
    /// beside the ring threads.
    fn expected_workers(&self) -> usize {
        let t = match self.fs.as_ref().expect("mounted") {
            Fs::Mem(s) => s.transport(),
            Fs::Pt(s) => s.transport(),
            Fs::Ov(s) => s.transport(),
            #[cfg(feature = "cephfs-tests")]
            Fs::Ceph(s) => s.transport(),
            Fs::Child(_) => idfuse::Transport::DevFuse,
        };
        match t {
            idfuse::Transport::IoUring { threads, .. } => 1 + threads,
            idfuse::Transport::DevFuse => self.threads,
        }
    }

    fn running_workers(&self) -> usize {
        match self.fs.as_ref().expect("mounted") {
            Fs::Mem(s) => s.running_workers(),
            Fs::Pt(s) => s.running_workers(),
            Fs::Ov(s) => s.running_workers(),
            #[cfg(feature = "cephfs-tests")]
            Fs::Ceph(s) => s.running_workers(),
            // Its workers are counted by the child; it is alive or not.
            Fs::Child(pid) => {
                let mut st = 0;
                // SAFETY: polling our own child by pid.
                if unsafe { libc::waitpid(*pid, &mut st, libc::WNOHANG) } == 0 {
                    self.threads
                } else {
                    0
                }
            }
        }
    }

    fn passthrough_active(&self) -> bool {
        match self.fs.as_ref().expect("mounted") {
            Fs::Mem(_) | Fs::Child(_) => false,
            #[cfg(feature = "cephfs-tests")]
            Fs::Ceph(_) => false,
            Fs::Pt(s) => s.filesystem().passthrough_active(),
            Fs::Ov(s) => s.filesystem().passthrough_active(),
        }
    }
}

fn conn_of(mnt: &Path) -> u32 {
    rustix::fs::minor(fs::metadata(mnt).expect("stat the mount").dev())
}

/// Join `h`, failing the test if it has not finished by `deadline`; the
/// FUSE connection of `m` is then aborted, which ends whatever the thread
/// waits for.
fn join_by<T>(h: JoinHandle<T>, deadline: Instant, m: &Mount, what: &str) -> T {
    while !h.is_finished() {
        if Instant::now() >= deadline {
            let threads = thread_dump(m);
            m.abort();
            let threads = threads + &backtraces();
            panic!(
                "{what}: still running at the deadline (a hang?); connection aborted.\n\
                 Where this process's threads waited:\n{threads}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match h.join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Where each thread of this process waits: name, kernel wait channel and
/// the top of its kernel stack (root can read it). The daemon's workers
/// and libcephfs's threads live in this process, so a hang shows who holds
/// up whom. (Not gdb: attaching waits for every thread to stop, and a
/// thread blocked in a FUSE request this process should answer never does.)
fn thread_dump(m: &Mount) -> String {
    let mut out = String::new();
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return "(no /proc/self/task)".into();
    };
    for t in tasks.flatten() {
        let p = t.path();
        let read = |f: &str| fs::read_to_string(p.join(f)).unwrap_or_default();
        let stack: Vec<String> = read("stack")
            .lines()
            .take(5)
            .map(|l| l.split_whitespace().nth(1).unwrap_or(l).to_string())
            .collect();
        out.push_str(&format!(
            "  {} {}: {}\n",
            t.file_name().to_string_lossy(),
            read("comm").trim(),
            stack.join(" < ")
        ));
    }
    out.push_str(&m.client_requests());
    out
}

/// With `IDFUSE_HANG_GDB=FILE`: every thread's user-space backtrace, by
/// gdb, into FILE. Only after the connection is aborted: gdb waits for
/// every thread to stop, and one in a FUSE request that this process
/// should answer would not before.
fn backtraces() -> String {
    let Ok(file) = std::env::var("IDFUSE_HANG_GDB") else {
        return String::new();
    };
    let r = std::process::Command::new("timeout")
        .args(["60", "gdb", "-p", &std::process::id().to_string(), "-batch"])
        .args(["-ex", "thread apply all bt"])
        .stdin(std::process::Stdio::null())
        .output();
    match r {
        Ok(o) => match fs::write(&file, &o.stdout) {
            Ok(()) => format!("  gdb backtraces in {file}\n"),
            Err(e) => format!("  gdb backtraces: {file}: {e}\n"),
        },
        Err(e) => format!("  gdb: {e}\n"),
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim().replace('_', "");
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{name}={v}: {e}"))
        }
        Err(_) => default,
    }
}

/// splitmix64: small, seedable, good enough to pick operations.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 for n == 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn below_usize(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// Index chosen by weight.
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut r = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if r < u64::from(w) {
                return i;
            }
            r -= u64::from(w);
        }
        unreachable!("weights sum to {total}")
    }
}

// ---------------------------------------------------------------------
// The file exerciser

/// Largest file size the exerciser makes.
const FSX_MAX_SIZE: usize = 512 << 10;
/// Largest length of one read, write, map or copy.
const FSX_MAX_LEN: usize = 64 << 10;
/// Full-file compare every this many operations.
const FSX_COMPARE_EVERY: u64 = 1000;
/// Ops remembered to tell which last changed a byte that differs.
const FSX_RECENT: usize = 10_000;
const FSX_DEFAULT_SEED: u64 = 0x1df0_5e00_f5c0_ffee;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Falloc {
    Plain,
    KeepSize,
    PunchHole,
    ZeroRange,
    ZeroRangeKeepSize,
}

impl Falloc {
    fn mode(self) -> i32 {
        match self {
            Falloc::Plain => 0,
            Falloc::KeepSize => libc::FALLOC_FL_KEEP_SIZE,
            Falloc::PunchHole => libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            Falloc::ZeroRange => libc::FALLOC_FL_ZERO_RANGE,
            Falloc::ZeroRangeKeepSize => libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Write {
        off: usize,
        len: usize,
    },
    Read {
        off: usize,
        len: usize,
    },
    MapRead {
        off: usize,
        len: usize,
    },
    MapWrite {
        off: usize,
        len: usize,
    },
    Truncate {
        size: usize,
    },
    Fallocate {
        mode: Falloc,
        off: usize,
        len: usize,
    },
    CopyRange {
        from: usize,
        to: usize,
        len: usize,
    },
    Fsync {
        data_only: bool,
    },
    Reopen,
    Stat,
    Compare,
}

/// Operation kinds, for weights, counts and disabling.
const KINDS: [&str; 11] = [
    "write",
    "read",
    "mapread",
    "mapwrite",
    "truncate",
    "fallocate",
    "copy_file_range",
    "fsync",
    "reopen",
    "stat",
    "compare",
];
const WEIGHTS: [u32; 11] = [24, 20, 8, 8, 6, 10, 8, 3, 3, 4, 0];

impl Op {
    /// True if this op may have changed byte `at` of the file.
    fn changes(&self, at: usize) -> bool {
        let within = |off: usize, len: usize| off <= at && at < off + len;
        match *self {
            Op::Write { off, len } | Op::MapWrite { off, len } => within(off, len),
            Op::Fallocate { mode, off, len } => mode != Falloc::KeepSize && within(off, len),
            Op::CopyRange { to, len, .. } => within(to, len),
            Op::Truncate { size } => size <= at,
            _ => false,
        }
    }

    /// True for the ops that change the file (and so need it open for
    /// writing).
    fn mutates(&self) -> bool {
        matches!(
            self,
            Op::Write { .. }
                | Op::MapWrite { .. }
                | Op::Truncate { .. }
                | Op::Fallocate { .. }
                | Op::CopyRange { .. }
        )
    }

    fn kind(&self) -> usize {
        match self {
            Op::Write { .. } => 0,
            Op::Read { .. } => 1,
            Op::MapRead { .. } => 2,
            Op::MapWrite { .. } => 3,
            Op::Truncate { .. } => 4,
            Op::Fallocate { .. } => 5,
            Op::CopyRange { .. } => 6,
            Op::Fsync { .. } => 7,
            Op::Reopen => 8,
            Op::Stat => 9,
            Op::Compare => 10,
        }
    }
}

pub(crate) struct Fsx {
    name: String,
    path: PathBuf,
    file: Option<File>,
    model: Vec<u8>,
    rng: Rng,
    seed: u64,
    opno: u64,
    history: VecDeque<(u64, Op, String)>,
    /// A longer memory of the ops, to tell which last touched an offset.
    recent: VecDeque<(u64, Op)>,
    pub(crate) counts: [u64; KINDS.len()],
    /// Fallocate modes the filesystem refused with EOPNOTSUPP.
    falloc_off: Vec<Falloc>,
    copy_off: bool,
    short_copies: u64,
    page: usize,
    buf: Vec<u8>,
    /// Whether `file` is open for writing. A file that starts in an
    /// overlay's lower layer is opened read-only first, so that its
    /// copy-up happens at the first change, in the middle of the run.
    writable: bool,
    /// Until this op, only ops that do not change the file are picked.
    readonly_until: u64,
    /// The op at which the file was first opened for writing, and its
    /// number.
    copied_up_at: Option<(u64, Op)>,
    /// Compare the whole file after the current op.
    compare_next: bool,
    /// Keep the read-only open of an existing file when it is reopened for
    /// writing, and read and fstat through it on every other op.
    keep_reader: bool,
    /// That read-only open, once the file is open for writing.
    reader: Option<File>,
}

pub(crate) struct FsxReport {
    pub(crate) counts: [u64; KINDS.len()],
    falloc_off: Vec<Falloc>,
    copy_off: bool,
    short_copies: u64,
    model: Vec<u8>,
    copied_up_at: Option<(u64, Op)>,
}

impl Fsx {
    pub(crate) fn new(name: &str, path: PathBuf, seed: u64) -> Fsx {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{name}: create {}: {e}", path.display()));
        Fsx::new_with(name, path, seed, file)
    }

    fn new_with(name: &str, path: PathBuf, seed: u64, file: File) -> Fsx {
        // SAFETY: sysconf has no memory effects.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        Fsx {
            name: name.to_string(),
            path,
            file: Some(file),
            model: Vec::new(),
            rng: Rng(seed),
            seed,
            opno: 0,
            history: VecDeque::new(),
            recent: VecDeque::new(),
            counts: [0; KINDS.len()],
            falloc_off: Vec::new(),
            copy_off: false,
            short_copies: 0,
            page,
            buf: Vec::new(),
            writable: true,
            readonly_until: 0,
            copied_up_at: None,
            compare_next: false,
            keep_reader: false,
            reader: None,
        }
    }

    /// An exerciser of the existing file `path`, whose content is
    /// `initial` (in an overlay: a file of a lower layer). It is opened
    /// read-only, and the first op that changes it (after a read-only
    /// phase of a few hundred to two thousand ops, chosen by the seed)
    /// reopens it for writing, which copies it up: a truncate does so by
    /// path (truncate(2), a SETATTR that copies the data up), any other op
    /// with an open for writing. The whole file is compared right after.
    /// With `keep_reader`, the read-only open stays, and every other read
    /// and fstat goes through it: it must see the copy and every change
    /// made to it (as on kernel overlayfs).
    pub(crate) fn on_existing(
        name: &str,
        path: PathBuf,
        seed: u64,
        initial: Vec<u8>,
        keep_reader: bool,
    ) -> Fsx {
        let file = File::open(&path)
            .unwrap_or_else(|e| panic!("{name}: open {} read-only: {e}", path.display()));
        let mut f = Fsx::new_with(name, path, seed, file);
        f.model = initial;
        f.writable = false;
        f.keep_reader = keep_reader;
        f.readonly_until = 500 + Rng(seed ^ 0x0ead_0417).below(1500);
        f
    }

    fn file(&self) -> &File {
        self.file.as_ref().expect("file open")
    }

    /// Fail with the context to reproduce and read the failure.
    fn fail(&self, what: &str) -> ! {
        let mut hist = String::new();
        for (n, op, note) in &self.history {
            hist.push_str(&format!("\n  #{n}: {op:?} {note}"));
        }
        panic!(
            "fsx on {}: op #{} failed: {what}\nmodel size {}; seed {:#x} \
             (IDFUSE_FSX_SEED={:#x} IDFUSE_FSX_OPS={} reproduces it)\nlast {} ops:{hist}",
            self.name,
            self.opno,
            self.model.len(),
            self.seed,
            self.seed,
            self.opno,
            self.history.len(),
        )
    }

    /// The last few ops (of the last `FSX_RECENT`) that changed byte `at`.
    fn touched(&self, at: usize) -> String {
        let hits: Vec<String> = self
            .recent
            .iter()
            .rev()
            .filter(|(_, op)| op.changes(at))
            .take(5)
            .map(|(n, op)| format!("#{n}: {op:?}"))
            .collect();
        if hits.is_empty() {
            format!("none in the last {} ops", self.recent.len())
        } else {
            hits.join("; ")
        }
    }

    fn io_fail(&self, what: &str, e: std::io::Error) -> ! {
        self.fail(&format!("{what}: {e}"))
    }

    /// Compare `actual` with the model's bytes at `off..off + expected.len()`.
    fn check(&self, what: &str, off: usize, expected: &[u8], actual: &[u8]) {
        if expected == actual {
            return;
        }
        let i = expected
            .iter()
            .zip(actual)
            .position(|(a, b)| a != b)
            .unwrap_or(expected.len().min(actual.len()));
        let at = |b: &[u8]| format!("{:02x?}", &b[i.min(b.len())..(i + 16).min(b.len())]);
        let bad = expected.iter().zip(actual).filter(|(a, b)| a != b).count();
        let last = expected
            .iter()
            .zip(actual)
            .rposition(|(a, b)| a != b)
            .map_or(i, |j| j);
        self.fail(&format!(
            "{what}: {} bytes expected, {} got; first difference at offset {} \
             (op offset {off} + {i}): expected {} actual {}; {bad} bytes differ, the last at \
             offset {}\nlast ops that changed that byte (newest first): {}\nread again: {}",
            expected.len(),
            actual.len(),
            off + i,
            at(expected),
            at(actual),
            off + last,
            self.touched(off + i),
            self.second_look(off, expected),
        ));
    }

    /// After a mismatch: reads the range again through the open file (the
    /// kernel's page cache) and through a fresh O_DIRECT descriptor (the
    /// filesystem itself), to tell a stale cache from stale data.
    fn second_look(&self, off: usize, expected: &[u8]) -> String {
        let verdict = |got: std::io::Result<Vec<u8>>| match got {
            Ok(g) if g == expected => "correct".to_string(),
            Ok(g) => match expected.iter().zip(&g).position(|(a, b)| a != b) {
                Some(j) => format!("wrong from offset {}", off + j),
                None => format!("{} bytes of {}", g.len(), expected.len()),
            },
            Err(e) => format!("failed: {e}"),
        };
        let read_all = |f: &File, buf: &mut [u8], at: u64| -> std::io::Result<usize> {
            let mut got = 0;
            while got < buf.len() {
                match f.read_at(&mut buf[got..], at + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(got)
        };
        let cached = {
            let mut b = vec![0u8; expected.len()];
            read_all(self.file(), &mut b, off as u64).map(|n| {
                b.truncate(n);
                b
            })
        };
        // O_DIRECT wants aligned offsets, lengths and memory.
        let direct = (|| {
            use std::os::unix::fs::OpenOptionsExt;
            let f = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&self.path)?;
            let a = 4096;
            let start = off - off % a;
            let end = (off + expected.len()).div_ceil(a) * a;
            let mut raw = vec![0u8; end - start + a];
            let skip = raw.as_ptr().align_offset(a);
            let buf = &mut raw[skip..skip + end - start];
            let n = read_all(&f, buf, start as u64)?;
            let from = off - start;
            Ok(buf[from.min(n)..(from + expected.len()).min(n)].to_vec())
        })();
        format!(
            "through the page cache {}; with O_DIRECT (from the filesystem) {}",
            verdict(cached),
            verdict(direct)
        )
    }

    /// The open to read through for this op: the kept read-only one on
    /// every other op, if any.
    fn read_file(&self) -> &File {
        match &self.reader {
            Some(r) if self.opno.is_multiple_of(2) => r,
            _ => self.file(),
        }
    }

    fn check_size(&self, what: &str) {
        let size = match self.read_file().metadata() {
            Ok(m) => m.len(),
            Err(e) => self.io_fail("fstat", e),
        };
        if size != self.model.len() as u64 {
            self.fail(&format!(
                "{what}: fstat size {size}, model {}",
                self.model.len()
            ));
        }
    }

    fn pick(&mut self) -> Op {
        loop {
            let kind = self.rng.weighted(&WEIGHTS);
            // write, mapwrite, truncate, fallocate, copy_file_range.
            if self.opno < self.readonly_until && matches!(kind, 0 | 3..=6) {
                continue;
            }
            let size = self.model.len();
            let op = match kind {
                0 => {
                    let off = self.rng.below_usize(FSX_MAX_SIZE);
                    let len = 1 + self.rng.below_usize(FSX_MAX_LEN.min(FSX_MAX_SIZE - off));
                    Op::Write { off, len }
                }
                1 => {
                    // Now and then past EOF, to see short reads.
                    let off = self.rng.below_usize(size + size / 8 + 1);
                    Op::Read {
                        off,
                        len: 1 + self.rng.below_usize(FSX_MAX_LEN),
                    }
                }
                2 | 3 => {
                    if size == 0 {
                        continue;
                    }
                    let off = self.rng.below_usize(size);
                    let len = 1 + self.rng.below_usize(FSX_MAX_LEN.min(size - off));
                    if kind == 2 {
                        Op::MapRead { off, len }
                    } else {
                        Op::MapWrite { off, len }
                    }
                }
                4 => {
                    // Half the time near the current size.
                    let size = if self.rng.below(2) == 0 {
                        self.rng.below_usize(FSX_MAX_SIZE + 1)
                    } else {
                        let delta = self.rng.below_usize(2 * FSX_MAX_LEN);
                        (size + delta).saturating_sub(FSX_MAX_LEN).min(FSX_MAX_SIZE)
                    };
                    Op::Truncate { size }
                }
                5 => {
                    let modes = [
                        Falloc::Plain,
                        Falloc::KeepSize,
                        Falloc::PunchHole,
                        Falloc::ZeroRange,
                        Falloc::ZeroRangeKeepSize,
                    ];
                    let mode = modes[self.rng.below_usize(modes.len())];
                    if self.falloc_off.contains(&mode) {
                        continue;
                    }
                    let off = self.rng.below_usize(FSX_MAX_SIZE);
                    let len = 1 + self.rng.below_usize(FSX_MAX_LEN.min(FSX_MAX_SIZE - off));
                    Op::Fallocate { mode, off, len }
                }
                6 => {
                    if self.copy_off || size == 0 {
                        continue;
                    }
                    let len = 1 + self.rng.below_usize(FSX_MAX_LEN.min(size));
                    // Source now and then partly past EOF (a short copy).
                    let from = self.rng.below_usize(size);
                    // A destination that does not overlap the source.
                    let to = self.rng.below_usize(FSX_MAX_SIZE - len + 1);
                    if to + len > from && to < from + len {
                        continue;
                    }
                    Op::CopyRange { from, to, len }
                }
                7 => Op::Fsync {
                    data_only: self.rng.below(2) == 0,
                },
                8 => Op::Reopen,
                9 => Op::Stat,
                _ => unreachable!("kind {kind}"),
            };
            return op;
        }
    }

    fn zero_model(&mut self, off: usize, end: usize) {
        let end = end.min(self.model.len());
        if off < end {
            self.model[off..end].fill(0);
        }
    }

    /// Open the file for writing before the first op that changes it
    /// (see [`Fsx::on_existing`]); returns a note for the history.
    fn open_for_writing(&mut self, op: Op) -> String {
        let mut note = String::from("first change: ");
        // Closed first unless kept: a file the kernel reads through a
        // lower backing file (FUSE passthrough) can be neither opened for
        // writing nor truncated meanwhile (ETXTBSY).
        let ro = self.file.take();
        if self.keep_reader {
            self.reader = ro;
        } else {
            drop(ro);
        }
        if let Op::Truncate { size } = op {
            let path = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(
                self.path.as_os_str(),
            ))
            .expect("no NUL in the path");
            // SAFETY: truncate(2) with a NUL-terminated path that outlives
            // the call.
            if unsafe { libc::truncate(path.as_ptr(), size as libc::off_t) } != 0 {
                self.io_fail("truncate(2) by path", std::io::Error::last_os_error());
            }
            note.push_str("truncate(2) by path, then ");
        }
        match OpenOptions::new().read(true).write(true).open(&self.path) {
            Ok(f) => self.file = Some(f),
            Err(e) => self.io_fail("open for writing", e),
        }
        self.writable = true;
        self.copied_up_at = Some((self.opno, op));
        self.compare_next = true;
        note.push_str("reopened for writing; ");
        note
    }

    /// Run one operation and check it; returns a note for the history.
    fn apply(&mut self, op: Op) -> String {
        if !self.writable && op.mutates() {
            let note = self.open_for_writing(op);
            return note + &self.apply_op(op);
        }
        self.apply_op(op)
    }

    fn apply_op(&mut self, op: Op) -> String {
        match op {
            Op::Write { off, len } => {
                let mut data = std::mem::take(&mut self.buf);
                data.resize(len, 0);
                self.rng.fill(&mut data);
                if let Err(e) = self.file().write_all_at(&data, off as u64) {
                    self.io_fail("pwrite", e);
                }
                if self.model.len() < off + len {
                    self.model.resize(off + len, 0);
                }
                self.model[off..off + len].copy_from_slice(&data);
                self.buf = data;
                String::new()
            }
            Op::Read { off, len } => {
                let mut data = std::mem::take(&mut self.buf);
                data.resize(len, 0);
                let mut got = 0;
                while got < len {
                    match self
                        .read_file()
                        .read_at(&mut data[got..], (off + got) as u64)
                    {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => self.io_fail("pread", e),
                    }
                }
                let end = (off + len).min(self.model.len()).max(off);
                let want = self.model.get(off..end).unwrap_or(&[]);
                self.check("pread", off, want, &data[..got]);
                self.buf = data;
                format!("-> {got}")
            }
            Op::MapRead { off, len } | Op::MapWrite { off, len } => {
                // A size the model does not expect would end in SIGBUS.
                self.check_size("before mmap");
                let write = matches!(op, Op::MapWrite { .. });
                let start = off - off % self.page;
                let maplen = off + len - start;
                let prot = if write {
                    libc::PROT_READ | libc::PROT_WRITE
                } else {
                    libc::PROT_READ
                };
                // SAFETY: a fresh mapping of our own file; nothing else
                // refers to the address range it returns.
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        maplen,
                        prot,
                        libc::MAP_SHARED,
                        self.file().as_raw_fd(),
                        start as libc::off_t,
                    )
                };
                if p == libc::MAP_FAILED {
                    self.io_fail("mmap", std::io::Error::last_os_error());
                }
                // SAFETY: the mapping covers `maplen` bytes from `p`, all
                // inside the file (off + len <= size, checked above), and
                // lives until the munmap below; no other reference to it.
                let mapped =
                    unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>().add(off - start), len) };
                if write {
                    self.rng.fill(mapped);
                    self.model[off..off + len].copy_from_slice(mapped);
                    // SAFETY: msync on the mapping made above.
                    if unsafe { libc::msync(p, maplen, libc::MS_SYNC) } != 0 {
                        self.io_fail("msync", std::io::Error::last_os_error());
                    }
                } else {
                    let want = &self.model[off..off + len];
                    if want != &mapped[..] {
                        let copy = mapped.to_vec();
                        // SAFETY: unmapping our own mapping; `mapped` is
                        // not used after this.
                        unsafe { libc::munmap(p, maplen) };
                        self.check("mmap read", off, want, &copy);
                    }
                }
                // SAFETY: unmapping our own mapping; `mapped` is not used
                // after this.
                if unsafe { libc::munmap(p, maplen) } != 0 {
                    self.io_fail("munmap", std::io::Error::last_os_error());
                }
                String::new()
            }
            Op::Truncate { size } => {
                if let Err(e) = self.file().set_len(size as u64) {
                    self.io_fail("ftruncate", e);
                }
                self.model.resize(size, 0);
                String::new()
            }
            Op::Fallocate { mode, off, len } => {
                // SAFETY: fallocate on our own open fd.
                let r = unsafe {
                    libc::fallocate(
                        self.file().as_raw_fd(),
                        mode.mode(),
                        off as libc::off_t,
                        len as libc::off_t,
                    )
                };
                if r != 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                        self.falloc_off.push(mode);
                        return "EOPNOTSUPP: mode off for this run".into();
                    }
                    self.io_fail("fallocate", e);
                }
                let end = off + len;
                match mode {
                    Falloc::Plain => {
                        if self.model.len() < end {
                            self.model.resize(end, 0);
                        }
                    }
                    Falloc::KeepSize => {}
                    Falloc::PunchHole | Falloc::ZeroRangeKeepSize => self.zero_model(off, end),
                    Falloc::ZeroRange => {
                        self.zero_model(off, end);
                        if self.model.len() < end {
                            self.model.resize(end, 0);
                        }
                    }
                }
                String::new()
            }
            Op::CopyRange { from, to, len } => {
                let fd = self.file().as_raw_fd();
                let (mut off_in, mut off_out) = (from as libc::loff_t, to as libc::loff_t);
                // SAFETY: both offsets point at live locals; fd is ours.
                let r = unsafe { libc::copy_file_range(fd, &mut off_in, fd, &mut off_out, len, 0) };
                if r < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                        self.copy_off = true;
                        return "EOPNOTSUPP: copy_file_range off for this run".into();
                    }
                    self.io_fail("copy_file_range", e);
                }
                let n = r as usize;
                let avail = len.min(self.model.len().saturating_sub(from));
                if n > avail || (n == 0 && avail > 0) {
                    self.fail(&format!("copy_file_range copied {n}, expected {avail}"));
                }
                if n < avail {
                    self.short_copies += 1;
                }
                if (off_in, off_out) != ((from + n) as libc::loff_t, (to + n) as libc::loff_t) {
                    self.fail(&format!(
                        "copy_file_range left offsets at {off_in}/{off_out} after {n} bytes"
                    ));
                }
                let data = self.model[from..from + n].to_vec();
                if self.model.len() < to + n {
                    self.model.resize(to + n, 0);
                }
                self.model[to..to + n].copy_from_slice(&data);
                format!("-> {n}")
            }
            Op::Fsync { data_only } => {
                let r = if data_only {
                    self.file().sync_data()
                } else {
                    self.file().sync_all()
                };
                if let Err(e) = r {
                    self.io_fail("fsync", e);
                }
                String::new()
            }
            Op::Reopen => {
                self.file = None;
                match OpenOptions::new()
                    .read(true)
                    .write(self.writable)
                    .open(&self.path)
                {
                    Ok(f) => self.file = Some(f),
                    Err(e) => self.io_fail("reopen", e),
                }
                String::new()
            }
            Op::Stat => {
                self.check_size("fstat");
                String::new()
            }
            Op::Compare => {
                self.check_size("full compare");
                let mut data = vec![0u8; self.model.len() + 1];
                let mut got = 0;
                loop {
                    match self.file().read_at(&mut data[got..], got as u64) {
                        Ok(0) => break,
                        Ok(n) => {
                            got += n;
                            if got == data.len() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => self.io_fail("pread (full compare)", e),
                    }
                }
                self.check("full compare", 0, &self.model, &data[..got]);
                String::new()
            }
        }
    }

    fn step(&mut self, op: Op) {
        self.opno += 1;
        if self.history.len() == 20 {
            self.history.pop_front();
        }
        self.history.push_back((self.opno, op, String::new()));
        if self.recent.len() == FSX_RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((self.opno, op));
        let note = self.apply(op);
        self.counts[op.kind()] += 1;
        if let Some(last) = self.history.back_mut() {
            last.2 = format!("{note} (size {})", self.model.len());
        }
        if std::mem::take(&mut self.compare_next) {
            self.step(Op::Compare);
        }
    }

    pub(crate) fn run(mut self, ops: u64) -> FsxReport {
        for i in 0..ops {
            let op = self.pick();
            self.step(op);
            if (i + 1) % FSX_COMPARE_EVERY == 0 {
                self.step(Op::Compare);
            }
        }
        self.step(Op::Compare);
        self.file = None;
        self.reader = None;
        FsxReport {
            counts: self.counts,
            falloc_off: self.falloc_off,
            copy_off: self.copy_off,
            short_copies: self.short_copies,
            model: self.model,
            copied_up_at: self.copied_up_at,
        }
    }
}

fn fsx_on(target: Target) {
    let ops = env_u64("IDFUSE_FSX_OPS", default_ops(target, 100_000, 20_000));
    let seed = env_u64("IDFUSE_FSX_SEED", FSX_DEFAULT_SEED);
    let name = format!("{target:?}");
    println!("fsx on {name}: seed {seed:#x}, {ops} ops");
    // On overlay the file starts in the lower layer, with content.
    let lower = matches!(target, Target::Overlay(_)).then(|| fsx_lower_content(seed));
    let (m, path) = match &lower {
        Some(initial) => {
            let m = Mount::overlay(target, |root| fsx_fill_layers(root, initial));
            let path = m.mnt.join("merged/fsx.file");
            (m, path)
        }
        None => {
            let m = Mount::new(target);
            let path = m.mnt.join("fsx.file");
            (m, path)
        }
    };
    let start = Instant::now();
    let h = {
        let (name, path, lower) = (name.clone(), path.clone(), lower.clone());
        std::thread::spawn(move || match lower {
            // Without FUSE passthrough, a reader open since before the
            // copy-up stays (with it, the kernel reads such an open through
            // the lower file itself, and the copy-up's open waits for it).
            Some(initial) => {
                let keep_reader = matches!(target, Target::Overlay(false));
                Fsx::on_existing(&name, path, seed, initial, keep_reader).run(ops)
            }
            None => Fsx::new(&name, path, seed).run(ops),
        })
    };
    let deadline = start + Duration::from_secs(60) + Duration::from_millis(5 * ops);
    let report = join_by(h, deadline, &m, &format!("fsx on {name}"));
    let secs = start.elapsed().as_secs_f64();
    let counts: Vec<String> = KINDS
        .iter()
        .zip(report.counts)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!(
        "fsx on {name}: {ops} ops in {secs:.2} s, {:.0} ops/s; {}; short copies {}; \
         fallocate modes refused: {:?}; copy_file_range refused: {}",
        ops as f64 / secs,
        counts.join(", "),
        report.short_copies,
        report.falloc_off,
        report.copy_off,
    );
    match target {
        Target::Passthrough(kernel) => {
            assert_eq!(
                m.passthrough_active(),
                kernel,
                "FUSE passthrough in use iff asked for"
            );
            let backing = m.backing.as_ref().expect("backing").join("fsx.file");
            let data = fs::read(&backing).expect("read the backing file");
            assert_eq!(data.len(), report.model.len(), "backing file size");
            if let Some(i) = data.iter().zip(&report.model).position(|(a, b)| a != b) {
                panic!(
                    "backing file differs from the model at {i}: expected {:02x?} actual {:02x?}",
                    &report.model[i..(i + 16).min(data.len())],
                    &data[i..(i + 16).min(data.len())],
                );
            }
        }
        Target::Overlay(kernel) => {
            assert_eq!(
                m.passthrough_active(),
                kernel,
                "FUSE passthrough in use iff asked for"
            );
            // Refused are exactly the modes its upper (a tmpfs) refuses.
            let layers = m.layers.as_ref().expect("layers");
            let upper_refuses = falloc_refused_in(layers);
            assert!(
                report.falloc_off.iter().all(|f| upper_refuses.contains(f))
                    && upper_refuses.iter().all(|f| report.falloc_off.contains(f)),
                "overlay refused {:?}, its upper refuses {upper_refuses:?}",
                report.falloc_off
            );
            let (at, first) = report
                .copied_up_at
                .expect("the file was never opened for writing");
            assert!(at > 1, "the copy-up came after a read-only phase");
            let initial = lower.as_ref().expect("lower content");
            same_bytes(
                "the upper layer's copy",
                &fs::read(layers.join("upper/merged/fsx.file")).expect("read the upper copy"),
                &report.model,
            );
            same_bytes(
                "the lower layer's file",
                &fs::read(layers.join("l2/merged/fsx.file")).expect("read the lower file"),
                initial,
            );
            assert_eq!(
                fs::read(m.mnt.join("merged/from-l1")).expect("read merged/from-l1"),
                b"l1",
                "the copied-up directory still merges the top lower layer"
            );
            let k = m.kernel_view();
            same_bytes(
                "the file through kernel overlayfs over the layers",
                &fs::read(k.0.join("merged/fsx.file")).expect("read through kernel overlayfs"),
                &report.model,
            );
            println!("fsx on {name}: copied up at op {at}, by {first:?}");
        }
        Target::Memfs | Target::MemfsWritebackChild => {
            // No falloc mode may be refused by memfs: it implements them all.
            assert!(
                report.falloc_off.is_empty(),
                "memfs refused {:?}",
                report.falloc_off
            );
        }
        // Ceph implements only some fallocate modes; the fsx records which.
        #[cfg(feature = "cephfs-tests")]
        Target::Cephfs => {}
    }
    assert!(!report.copy_off, "copy_file_range refused");
    assert_eq!(m.running_workers(), m.expected_workers(), "no worker died");
}

/// What the fsx file holds in the lower layer of an overlay: 3/4 of the
/// largest size, not page-aligned, random but for a zeroed stretch.
fn fsx_lower_content(seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; FSX_MAX_SIZE * 3 / 4 + 123];
    Rng(seed ^ 0x10e5_da7a).fill(&mut data);
    data[100_000..170_000].fill(0);
    data
}

/// Overlay layers for the fsx: `merged/` in both lowers (so the copy-up
/// copies a merged directory up first), the file in the bottom one.
fn fsx_fill_layers(root: &Path, initial: &[u8]) {
    for l in ["l1", "l2"] {
        fs::create_dir(root.join(l).join("merged")).expect("mkdir merged");
    }
    fs::write(root.join("l1/merged/from-l1"), b"l1").expect("write from-l1");
    let f = root.join("l2/merged/fsx.file");
    fs::write(&f, initial).expect("write the lower fsx file");
    fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod the lower fsx file");
}

/// The fallocate modes the filesystem of `dir` refuses with EOPNOTSUPP.
fn falloc_refused_in(dir: &Path) -> Vec<Falloc> {
    let path = dir.join("falloc-probe");
    let f = File::create(&path).expect("create the fallocate probe");
    let refused = [
        Falloc::Plain,
        Falloc::KeepSize,
        Falloc::PunchHole,
        Falloc::ZeroRange,
        Falloc::ZeroRangeKeepSize,
    ]
    .into_iter()
    .filter(|m| {
        // SAFETY: fallocate on our own open fd.
        let r = unsafe { libc::fallocate(f.as_raw_fd(), m.mode(), 0, 4096) };
        r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EOPNOTSUPP)
    })
    .collect();
    drop(f);
    fs::remove_file(&path).expect("remove the fallocate probe");
    refused
}

/// Fail with the first difference if `data` is not `want`.
fn same_bytes(what: &str, data: &[u8], want: &[u8]) {
    assert_eq!(data.len(), want.len(), "{what}: size");
    if let Some(i) = data.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what} differs at {i}: expected {:02x?} actual {:02x?}",
            &want[i..(i + 16).min(want.len())],
            &data[i..(i + 16).min(data.len())],
        );
    }
}

/// Operations by default: `ceph` on CephFS (every metadata operation and
/// fsync is a round trip to the MDS or the OSD), `local` elsewhere.
fn default_ops(target: Target, local: u64, ceph: u64) -> u64 {
    #[cfg(feature = "cephfs-tests")]
    if matches!(target, Target::Cephfs) {
        return ceph;
    }
    let _ = (target, ceph);
    local
}

#[cfg(feature = "cephfs-tests")]
#[test]
fn fsx_cephfs() {
    fsx_on(Target::Cephfs);
}

#[cfg(feature = "cephfs-tests")]
#[test]
fn stress_metadata_cephfs() {
    stress_on(Target::Cephfs);
}

#[test]
fn fsx_memfs() {
    fsx_on(Target::Memfs);
}

/// The writeback cache changes when and how data reaches the daemon
/// (WRITEs of dirty pages, some only at munmap or close).
#[test]
fn fsx_memfs_writeback_cache() {
    fsx_on(Target::MemfsWritebackChild);
}

#[test]
fn fsx_passthrough_with_kernel_passthrough() {
    fsx_on(Target::Passthrough(true));
}

#[test]
fn fsx_passthrough_through_the_daemon() {
    fsx_on(Target::Passthrough(false));
}

/// The file starts in a lower layer and is copied up mid-run.
#[test]
fn fsx_overlay() {
    fsx_on(Target::Overlay(true));
}

#[test]
fn fsx_overlay_through_the_daemon() {
    fsx_on(Target::Overlay(false));
}

// ---------------------------------------------------------------------
// Concurrent metadata stress

const STRESS_NAMES: usize = 64;
/// Parents that are fixed directories (first two) or names of the
/// namespace that may or may not be directories at the moment.
pub(crate) const STRESS_PARENTS: [&str; 6] = ["a", "b", "a/n00", "a/n01", "b/n00", "b/n01"];

fn stress_path(rng: &mut Rng) -> String {
    // Mostly directly under a/ and b/.
    let parent = if rng.below(8) == 0 {
        STRESS_PARENTS[2 + rng.below_usize(STRESS_PARENTS.len() - 2)]
    } else {
        STRESS_PARENTS[rng.below_usize(2)]
    };
    format!("{parent}/n{:02}", rng.below_usize(STRESS_NAMES))
}

#[derive(Default)]
pub(crate) struct StressStats {
    pub(crate) ok: BTreeMap<&'static str, u64>,
    pub(crate) errors: BTreeMap<String, u64>,
}

fn errno_name(e: i32) -> String {
    match e {
        libc::ENOENT => "ENOENT".into(),
        libc::EEXIST => "EEXIST".into(),
        libc::ENOTEMPTY => "ENOTEMPTY".into(),
        libc::ENOTDIR => "ENOTDIR".into(),
        libc::EISDIR => "EISDIR".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::EPERM => "EPERM".into(),
        libc::EXDEV => "EXDEV".into(),
        e => format!("errno {e}"),
    }
}

/// One stressing thread: `ops` random operations on the namespace under
/// `root`. Errors the operations can meet in a racing namespace are
/// counted; any other error stops every thread and fails.
// The soak worker's entry point; the tests here name their expected
// errors with `stress_thread_with`.
#[allow(dead_code)]
pub(crate) fn stress_thread(
    root: &Path,
    seed: u64,
    ops: u64,
    stop: &AtomicBool,
) -> Result<StressStats, String> {
    stress_thread_with(root, seed, ops, stop, &[])
}

/// [`stress_thread`] that also counts the errors `also` as expected, for
/// the operation they name.
fn stress_thread_with(
    root: &Path,
    seed: u64,
    ops: u64,
    stop: &AtomicBool,
    also: &[(&str, i32)],
) -> Result<StressStats, String> {
    const EXPECTED: [i32; 7] = [
        libc::ENOENT,
        libc::EEXIST,
        libc::ENOTEMPTY,
        libc::ENOTDIR,
        libc::EISDIR,
        libc::EINVAL,
        // link() of a directory.
        libc::EPERM,
    ];
    let mut rng = Rng(seed);
    let mut st = StressStats::default();
    // Files held open across the other thread's unlinks and renames.
    let mut held: Vec<(File, PathBuf)> = Vec::new();
    let weights = [20, 25, 12, 18, 10, 10, 3, 2, 4, 4];
    for i in 0..ops {
        if stop.load(Ordering::Relaxed) {
            return Err("stopped: the other thread failed".into());
        }
        let p = root.join(stress_path(&mut rng));
        let q = root.join(stress_path(&mut rng));
        let kind = rng.weighted(&weights);
        let (name, desc, r): (&'static str, String, std::io::Result<()>) = match kind {
            0 => {
                let excl = rng.below(2) == 0;
                let mut o = OpenOptions::new();
                o.write(true);
                if excl {
                    o.create_new(true);
                } else {
                    o.create(true);
                }
                let len = rng.below_usize(32);
                let r = o
                    .open(&p)
                    .and_then(|f| f.write_all_at(&[b'x'; 32][..len], 0));
                ("create", format!("create(excl={excl}) {}", p.display()), r)
            }
            1 => {
                let flags = match rng.below(8) {
                    0 => RenameFlags::NOREPLACE,
                    1 => RenameFlags::EXCHANGE,
                    _ => RenameFlags::empty(),
                };
                let r = rustix::fs::renameat_with(CWD, &p, CWD, &q, flags).map_err(Into::into);
                (
                    "rename",
                    format!("rename({flags:?}) {} -> {}", p.display(), q.display()),
                    r,
                )
            }
            2 => (
                "link",
                format!("link {} -> {}", p.display(), q.display()),
                fs::hard_link(&p, &q),
            ),
            3 => (
                "unlink",
                format!("unlink {}", p.display()),
                fs::remove_file(&p),
            ),
            4 => (
                "mkdir",
                format!("mkdir {}", p.display()),
                fs::create_dir(&p),
            ),
            5 => (
                "rmdir",
                format!("rmdir {}", p.display()),
                fs::remove_dir(&p),
            ),
            6 => (
                "stat",
                format!("stat {}", p.display()),
                fs::symlink_metadata(&p).map(drop),
            ),
            8 => {
                let r = OpenOptions::new().read(true).write(true).open(&p);
                let r = r.map(|f| {
                    if held.len() == 8 {
                        held.swap_remove(rng.below_usize(held.len()));
                    }
                    held.push((f, p.clone()));
                });
                ("hold", format!("open {}", p.display()), r)
            }
            9 => {
                if held.is_empty() {
                    continue;
                }
                // An open file works whatever happened to its names since:
                // no error is expected here.
                let (f, opened) = held.swap_remove(rng.below_usize(held.len()));
                let desc = format!("write and fstat a file opened as {}", opened.display());
                let r = f.write_all_at(b"held", 64).and_then(|()| f.metadata());
                match r {
                    Ok(md) if md.len() >= 68 => {}
                    Ok(md) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(format!("op {i}: {desc}: size {} after the write", md.len()));
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(format!("op {i}: {desc}: {e}"));
                    }
                }
                ("use held", desc, Ok(()))
            }
            _ => {
                let dir = root.join(STRESS_PARENTS[rng.below_usize(STRESS_PARENTS.len())]);
                let r = fs::read_dir(&dir).and_then(|rd| {
                    for e in rd {
                        e?;
                    }
                    Ok(())
                });
                ("readdir", format!("readdir {}", dir.display()), r)
            }
        };
        match r {
            Ok(()) => *st.ok.entry(name).or_default() += 1,
            Err(e) => match e.raw_os_error() {
                Some(code) if EXPECTED.contains(&code) || also.contains(&(name, code)) => {
                    *st.errors
                        .entry(format!("{name} {}", errno_name(code)))
                        .or_default() += 1;
                }
                _ => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(format!("op {i}: {desc}: unexpected error {e}"));
                }
            },
        }
    }
    Ok(st)
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
                .file_name()
                .into_string()
                .expect("utf-8 name")
        })
        .collect();
    v.sort();
    v
}

/// Walk `rel` under the mount (and the backing directory, if any) and
/// check that both agree; collect regular files by inode.
fn check_tree(m: &Mount, rel: &Path, files: &mut HashMap<u64, (u64, Vec<PathBuf>)>) {
    let here = m.mnt.join(rel);
    let listed = names(&here);
    if let Some(b) = &m.backing {
        assert_eq!(
            listed,
            names(&b.join(rel)),
            "readdir of {} through the mount and in the backing tmpfs",
            rel.display()
        );
    }
    let mut subdirs = 0;
    for n in &listed {
        let relp = rel.join(n);
        let md = fs::symlink_metadata(m.mnt.join(&relp))
            .unwrap_or_else(|e| panic!("lstat {} (listed): {e}", relp.display()));
        if let Some(b) = &m.backing {
            let bmd = fs::symlink_metadata(b.join(&relp)).expect("lstat backing");
            assert_eq!(
                (md.mode(), md.nlink(), md.size()),
                (bmd.mode(), bmd.nlink(), bmd.size()),
                "mode, nlink and size of {} through the mount and in the backing tmpfs",
                relp.display()
            );
        }
        if md.is_dir() {
            subdirs += 1;
            check_tree(m, &relp, files);
        } else {
            assert!(
                md.is_file(),
                "{}: only files and dirs are made",
                relp.display()
            );
            let e = files.entry(md.ino()).or_insert((md.nlink(), Vec::new()));
            assert_eq!(
                e.0,
                md.nlink(),
                "nlink of {} (ino {})",
                relp.display(),
                md.ino()
            );
            e.1.push(relp);
        }
    }
    let md = fs::metadata(&here).expect("stat dir");
    // The overlay reports 1 for a directory merged from several layers
    // (its count is not known without listing them all; find(1) takes 1
    // as "do not count on it"), as kernel overlayfs does.
    let merged = m.layers.is_some() && md.nlink() == 1;
    assert!(
        merged || md.nlink() == 2 + subdirs,
        "nlink of directory {} with {subdirs} subdirectories: {}",
        rel.display(),
        md.nlink()
    );
}

fn stress_on(target: Target) {
    let ops = env_u64("IDFUSE_STRESS_OPS", default_ops(target, 20_000, 5_000));
    let seed = env_u64("IDFUSE_FSX_SEED", FSX_DEFAULT_SEED);
    let overlay = matches!(target, Target::Overlay(_));
    let m = if overlay {
        // The namespace starts in the lower layers.
        Mount::overlay(target, stress_fill_layers)
    } else {
        Mount::new(target)
    };
    let base = m.inode_count();
    let root = m.mnt.join("stress");
    if !overlay {
        fs::create_dir(&root).expect("mkdir stress");
        fs::create_dir(root.join("a")).expect("mkdir a");
        fs::create_dir(root.join("b")).expect("mkdir b");
    }
    // Renaming a directory that has lower layers (which the namespace
    // starts with, and which a copy-up keeps) fails with EXDEV on overlay,
    // as on kernel overlayfs without redirect_dir; mv(1) then copies. The
    // stressor's other expectations hold as they are.
    let also: &'static [(&'static str, i32)] = if overlay {
        &[("rename", libc::EXDEV)]
    } else {
        &[]
    };
    println!("stress on {target:?}: seed {seed:#x}, {ops} ops per thread");
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..2u64)
        .map(|t| {
            let (root, stop) = (root.clone(), stop.clone());
            let seed = seed ^ (t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            std::thread::spawn(move || stress_thread_with(&root, seed, ops, &stop, also))
        })
        .collect();
    let deadline = start + Duration::from_secs(60) + Duration::from_millis(2 * ops);
    let results: Vec<_> = handles
        .into_iter()
        .enumerate()
        .map(|(t, h)| join_by(h, deadline, &m, &format!("stress thread {t} on {target:?}")))
        .collect();
    let secs = start.elapsed().as_secs_f64();
    for (t, r) in results.iter().enumerate() {
        match r {
            Ok(st) => println!(
                "stress on {target:?}, thread {t}: {ops} ops in {secs:.2} s; {} done {:?}; \
                 {} expected errors {:?}",
                st.ok.values().sum::<u64>(),
                st.ok,
                st.errors.values().sum::<u64>(),
                st.errors
            ),
            Err(e) => panic!("stress on {target:?}, thread {t}: {e}"),
        }
    }

    // The tree as the mount shows it: consistent with itself, with the
    // backing directory, and with lookups of every name in the namespace.
    let mut files = HashMap::new();
    check_tree(&m, Path::new("stress"), &mut files);
    for (ino, (nlink, paths)) in &files {
        if *nlink == paths.len() as u64 {
            continue;
        }
        // Tell a listing that lacks a name from a stale link count: look
        // every name of the namespace up, and ask again for the count.
        let by_lookup: Vec<String> = STRESS_PARENTS
            .iter()
            .flat_map(|p| (0..STRESS_NAMES).map(move |i| format!("stress/{p}/n{i:02}")))
            .filter(|p| fs::symlink_metadata(m.mnt.join(p)).is_ok_and(|md| md.ino() == *ino))
            .collect();
        let again = paths
            .first()
            .and_then(|p| fs::symlink_metadata(m.mnt.join(p)).ok())
            .map(|md| md.nlink());
        let fresh: Option<Vec<(String, u64)>> = fresh_client_view(&m).map(|v| {
            v.into_iter()
                .filter(|(_, (i, _))| i == ino)
                .map(|(p, (_, n))| (p, n))
                .collect()
        });
        assert_eq!(
            *nlink,
            paths.len() as u64,
            "nlink of inode {ino}, found at {paths:?} by listing, at {by_lookup:?} by \
             lookup; nlink on a second lstat: {again:?}; a fresh client (ceph-fuse) \
             finds it at (path, nlink): {fresh:?}"
        );
    }
    for parent in STRESS_PARENTS {
        let listed = fs::read_dir(root.join(parent))
            .map(|rd| {
                rd.map(|e| {
                    e.expect("readdir")
                        .file_name()
                        .into_string()
                        .expect("utf-8")
                })
                .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for i in 0..STRESS_NAMES {
            let n = format!("n{i:02}");
            let p = root.join(parent).join(&n);
            assert_eq!(
                fs::symlink_metadata(&p).is_ok(),
                listed.contains(&n),
                "lookup of {} agrees with readdir",
                p.display()
            );
        }
    }
    println!(
        "stress on {target:?}: {} files with {} names at the end",
        files.len(),
        files.values().map(|(_, p)| p.len()).sum::<usize>()
    );
    if overlay {
        // Kernel overlayfs reads the layers (the upper with its whiteouts
        // and opaque directories as the top lower layer) as ours shows
        // them.
        let ours = tree_view(&root);
        let k = m.kernel_view();
        let kernel = tree_view(&k.0.join("stress"));
        drop(k);
        let diffs: Vec<String> = ours
            .iter()
            .filter(|(p, v)| kernel.get(*p) != Some(v))
            .map(|(p, v)| format!("{p}: {v} / {:?}", kernel.get(p)))
            .chain(
                kernel
                    .iter()
                    .filter(|(p, _)| !ours.contains_key(*p))
                    .map(|(p, v)| format!("{p}: missing / {v}")),
            )
            .collect();
        assert!(
            diffs.is_empty(),
            "the tree through the overlay / through kernel overlayfs over its layers:\n  {}",
            diffs.join("\n  ")
        );
        // The run did reach the lower objects: it left whiteouts and
        // opaque directories in the upper layer.
        let (whiteouts, opaque) =
            overlay_marks(&m.layers.as_ref().expect("layers").join("upper/stress"));
        assert!(
            whiteouts > 0 && opaque > 0,
            "{whiteouts} whiteouts and {opaque} opaque directories in the upper"
        );
        println!(
            "stress on {target:?}: {} paths agree with kernel overlayfs; the upper holds \
             {whiteouts} whiteouts and {opaque} opaque directories",
            ours.len(),
        );
    }

    // Remove everything: the inode table goes back to where it started.
    let removed = fs::remove_dir_all(&root);
    if let Err(e) = removed {
        panic!(
            "remove the tree: {e}; what is left:\n{}a fresh client (ceph-fuse) lists: {:?}",
            leftover_report(&root),
            fresh_client_view(&m).map(|v| v.into_keys().collect::<Vec<_>>())
        );
    }
    if let Some(b) = &m.backing {
        assert!(names(b).is_empty(), "backing directory empty");
    }
    assert!(names(&m.mnt).is_empty(), "mount empty");
    fs::write("/proc/sys/vm/drop_caches", "2").expect("drop caches");
    let t = Instant::now();
    while m.inode_count() != base && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(m.inode_count(), base, "inode table back at its baseline");
    assert_eq!(m.running_workers(), m.expected_workers(), "no worker died");
}

/// The stress tree as a fresh Ceph client sees it (ceph-fuse, mounted for
/// the moment): path → (inode, link count). A fresh client has no cache, so
/// this is what the MDS holds; None when the mount is not CephFS or
/// ceph-fuse cannot mount.
#[cfg(feature = "cephfs-tests")]
fn fresh_client_view(m: &Mount) -> Option<BTreeMap<String, (u64, u64)>> {
    let cluster = m._ceph.as_ref()?;
    let dir = tempfile::tempdir().ok()?;
    let mut child = std::process::Command::new("ceph-fuse")
        .arg("-f")
        .arg("-c")
        .arg(cluster.0.path().join("ceph.conf"))
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let start = Instant::now();
    let mut view = None;
    while start.elapsed() < Duration::from_secs(20) {
        let dev = |p: &Path| fs::metadata(p).map(|md| md.dev()).ok();
        if dev(dir.path()).is_some() && dev(dir.path()) != dir.path().parent().and_then(dev) {
            let mut v = BTreeMap::new();
            let mut dirs = vec![PathBuf::from("stress")];
            while let Some(d) = dirs.pop() {
                for e in fs::read_dir(dir.path().join(&d))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let rel = d.join(e.file_name());
                    if let Ok(md) = fs::symlink_metadata(dir.path().join(&rel)) {
                        if md.is_dir() {
                            dirs.push(rel.clone());
                        }
                        v.insert(rel.display().to_string(), (md.ino(), md.nlink()));
                    }
                }
            }
            view = Some(v);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A plain unmount lets ceph-fuse end its MDS session. Killed, it would
    // keep its capabilities on the tree until the MDS times the session
    // out, and the mount under test would wait for them (minutes).
    let _ = rustix::mount::unmount(dir.path(), rustix::mount::UnmountFlags::empty());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if child.try_wait().is_ok_and(|s| s.is_some()) {
            return view;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = rustix::mount::unmount(dir.path(), rustix::mount::UnmountFlags::DETACH);
    let _ = child.kill();
    let _ = child.wait();
    view
}

#[cfg(not(feature = "cephfs-tests"))]
fn fresh_client_view(_m: &Mount) -> Option<BTreeMap<String, (u64, u64)>> {
    None
}

/// Every directory left under `root`, with the names its listing shows
/// and, on CephFS, what the MDS counts in it (`ceph.dir.*`): a count above
/// the listing means the MDS still holds an entry no listing returns.
fn leftover_report(root: &Path) -> String {
    let mut out = String::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let listed: Vec<String> = fs::read_dir(&d)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| {
                        if e.file_type().is_ok_and(|t| t.is_dir()) {
                            dirs.push(e.path());
                        }
                        e.file_name().to_string_lossy().into_owned()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let counts: Vec<String> = ["ceph.dir.entries", "ceph.dir.files", "ceph.dir.subdirs"]
            .iter()
            .filter_map(|a| {
                let mut v = [0u8; 64];
                let n = rustix::fs::lgetxattr(&d, *a, &mut v).ok()?;
                Some(format!("{a}={}", String::from_utf8_lossy(&v[..n])))
            })
            .collect();
        out += &format!(
            "  {}: listed {listed:?} {}\n",
            d.display(),
            counts.join(" ")
        );
    }
    out
}

#[test]
fn stress_metadata_memfs() {
    stress_on(Target::Memfs);
}

#[test]
fn stress_metadata_passthrough() {
    stress_on(Target::Passthrough(true));
}

/// The namespace starts in two lower layers: renames, links and unlinks
/// of lower objects copy up, white out and make opaque directories.
#[test]
fn stress_metadata_overlay() {
    stress_on(Target::Overlay(true));
}

/// The stressor's namespace in an overlay's lower layers: `stress/a` and
/// `stress/b` merged from both, and under them, by name, files in either
/// layer, lower-only directories, merged directories (with entries, so
/// rmdir meets ENOTEMPTY), a bottom file whited out by the top layer and a
/// bottom directory hidden by an opaque one on top. `a/n00` and `a/n01`,
/// parents in the stressor, are merged directories with entries (which
/// cannot be renamed); `b/n00` and `b/n01` are not in the lowers, so that
/// the stressor makes, moves and removes them in the upper as on memfs.
fn stress_fill_layers(root: &Path) {
    let l = |layer: &str, rel: String| root.join(layer).join("stress").join(rel);
    let file = |p: PathBuf, what: &str| {
        fs::write(&p, what).unwrap_or_else(|e| panic!("write {}: {e}", p.display()))
    };
    let dir = |p: PathBuf| {
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()))
    };
    for (pi, parent) in STRESS_PARENTS[..2].iter().enumerate() {
        for layer in ["l1", "l2"] {
            dir(l(layer, parent.to_string()));
        }
        for i in 0..STRESS_NAMES {
            let n = format!("{parent}/n{i:02}");
            let case = match (i, pi) {
                (0 | 1, 0) => 4,
                (0 | 1, _) => 7,
                _ => (i + 3 * pi) % 8,
            };
            match case {
                0 | 1 => file(l("l2", n.clone()), "l2"),
                2 => file(l("l1", n.clone()), "l1"),
                3 => dir(l("l2", n.clone())),
                4 => {
                    dir(l("l1", n.clone()));
                    dir(l("l2", n.clone()));
                    file(l("l2", format!("{n}/n02")), "l2");
                    file(l("l1", format!("{n}/n03")), "l1");
                }
                5 => {
                    file(l("l2", n.clone()), "l2, whited out");
                    rustix::fs::mknodat(
                        CWD,
                        l("l1", n.clone()),
                        rustix::fs::FileType::CharacterDevice,
                        rustix::fs::Mode::empty(),
                        0,
                    )
                    .expect("mknod a whiteout");
                }
                6 => {
                    dir(l("l2", n.clone()));
                    file(l("l2", format!("{n}/n04")), "l2, hidden");
                    dir(l("l1", n.clone()));
                    rustix::fs::setxattr(
                        l("l1", n.clone()),
                        "trusted.overlay.opaque",
                        b"y",
                        rustix::fs::XattrFlags::empty(),
                    )
                    .expect("set opaque");
                }
                _ => {}
            }
        }
    }
}

/// Whiteouts (char 0/0) and opaque directories under `dir`.
fn overlay_marks(dir: &Path) -> (usize, usize) {
    let (mut whiteouts, mut opaque) = (0, 0);
    for n in names(dir) {
        let p = dir.join(n);
        let md = fs::symlink_metadata(&p).expect("lstat in the upper");
        if md.file_type().is_char_device() && md.rdev() == 0 {
            whiteouts += 1;
        } else if md.is_dir() {
            let mut v = [0u8; 4];
            if rustix::fs::lgetxattr(&p, "trusted.overlay.opaque", &mut v)
                .is_ok_and(|n| v[..n] == *b"y")
            {
                opaque += 1;
            }
            let (w, o) = overlay_marks(&p);
            whiteouts += w;
            opaque += o;
        }
    }
    (whiteouts, opaque)
}

/// Every path under `root` (relative) with its type, mode, and a file's
/// size and FNV-1a of its bytes.
fn tree_view(root: &Path) -> BTreeMap<String, String> {
    fn go(root: &Path, rel: &Path, out: &mut BTreeMap<String, String>) {
        for n in names(&root.join(rel)) {
            let relp = rel.join(&n);
            let p = root.join(&relp);
            let md =
                fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
            let what = if md.is_dir() {
                "dir".to_string()
            } else if md.is_file() {
                let data = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
                let sum = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
                });
                format!("file {} {sum:016x}", data.len())
            } else {
                format!("type {:o}", md.mode() & libc::S_IFMT)
            };
            out.insert(
                relp.display().to_string(),
                format!("{what} {:o}", md.mode() & 0o7777),
            );
            if md.is_dir() {
                go(root, &relp, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    go(root, Path::new(""), &mut out);
    out
}
