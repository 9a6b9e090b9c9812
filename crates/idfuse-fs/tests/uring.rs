//! FUSE over io_uring on real mounts: the ring carries the traffic (memfs;
//! the passthrough with FUSE passthrough, through an idmapped view), and an
//! abort, an unmount or a SIGKILL with requests in flight ends in ENOTCONN
//! for the clients, no hang, and nothing left mounted.
//!
//! These need `/sys/module/fuse/parameters/enable_uring` = Y, which
//! `scripts/test.sh` sets for its io_uring part (with IDFUSE_IO_URING=on,
//! which makes a machine that cannot do it a failure, not a skip).

mod common;

use common::as_user;
use common::Tmpfs;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idfuse::{
    Attr, AttrReply, Context, Entry, Errno, Filesystem, IoUringMode, MountOptions, Opened, Session,
    SessionConfig, Transport,
};
use idfuse_fs::memfs::{MemFs, MemFsOptions};
use idfuse_fs::passthrough::{Passthrough, PassthroughOptions};

/// True when this machine can run the ring; a skip says why, unless the
/// run asked for io_uring (IDFUSE_IO_URING=on), where that is a failure.
fn ring_or_skip() -> bool {
    match idfuse::uring::preflight() {
        Ok(()) => true,
        Err(why) if IoUringMode::from_env() == IoUringMode::On => {
            panic!("IDFUSE_IO_URING=on, but: {why}")
        }
        Err(why) => {
            eprintln!("skipped: {why}");
            false
        }
    }
}

fn ring_config() -> SessionConfig {
    SessionConfig {
        io_uring: IoUringMode::On,
        threads: 2,
        ..SessionConfig::default()
    }
}

fn is_mounted(path: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let p = path.to_string_lossy().to_string();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

fn assert_on_ring<F: Filesystem>(s: &Session<F>, at_least: u64) {
    let st = s.transport_stats();
    assert!(
        matches!(st.transport, Transport::IoUring { .. }),
        "transport: {}",
        st.transport
    );
    assert!(
        st.ring_total() >= at_least,
        "the ring carried {} requests, the workload alone makes {at_least}: {st:?}",
        st.ring_total()
    );
    assert_eq!(
        st.dev_besides_ring_exempt(),
        0,
        "/dev/fuse saw only INIT, FORGET and INTERRUPT: {st:?}"
    );
}

#[test]
fn memfs_workload_goes_over_the_ring() {
    if !ring_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(MemFs::new(MemFsOptions::default()));
    let s = Session::mount(fs, dir.path(), MountOptions::default(), ring_config()).expect("mount");
    let n = 100;
    for i in 0..n {
        let p = dir.path().join(format!("f{i}"));
        fs::write(&p, vec![i as u8; 5000 + i]).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().len(), 5000 + i as u64);
    }
    // A write larger than the in-place threshold, read back.
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    fs::write(dir.path().join("big"), &big).unwrap();
    std::fs::write("/proc/sys/vm/drop_caches", "1").unwrap();
    assert!(fs::read(dir.path().join("big")).unwrap() == big, "big file");
    for i in 0..n {
        let d = fs::read(dir.path().join(format!("f{i}"))).unwrap();
        assert_eq!(d.len(), 5000 + i);
        assert!(d.iter().all(|&b| b == i as u8));
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), n + 1);
    for i in 0..n {
        fs::remove_file(dir.path().join(format!("f{i}"))).unwrap();
    }
    // Each file: at least create, write, release, unlink.
    assert_on_ring(&s, 4 * n as u64);
}

#[test]
fn passthrough_through_an_idmapped_view_goes_over_the_ring() {
    if !ring_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, mnt, view) = (
        dir.path().join("src"),
        dir.path().join("mnt"),
        dir.path().join("view"),
    );
    for d in [&src, &mnt, &view] {
        fs::create_dir(d).unwrap();
    }
    let _tmpfs = Tmpfs::mount(&src, c"mode=0755");
    fs::create_dir(src.join("home")).unwrap();
    std::os::unix::fs::chown(src.join("home"), Some(123), Some(123)).unwrap();
    let pt = Arc::new(Passthrough::new(&src, PassthroughOptions::default()).expect("passthrough"));
    let cfg = SessionConfig {
        passthrough: true,
        ..ring_config()
    };
    let s = Session::mount(pt, &mnt, MountOptions::default(), cfg).expect("mount");
    let ns = idfuse_idmap::UserNamespace::create(&"b:0:100000:65536".parse().unwrap()).unwrap();
    let g = idfuse_idmap::idmap_mount(&mnt, &view, &ns, idfuse_idmap::IdmapOptions::default())
        .expect("idmap the mirror");
    let home = view.join("home");
    let n = 50;
    let code = as_user(100123, 100123, &[], 0o022, || {
        for i in 0..n {
            let p = home.join(format!("f{i}"));
            if fs::write(&p, format!("file {i}")).is_err() {
                return 1;
            }
            if fs::read_to_string(&p).ok() != Some(format!("file {i}")) {
                return 2;
            }
        }
        if fs::create_dir(home.join("d")).is_err() {
            return 3;
        }
        0
    });
    assert_eq!(code, 0, "workload as uid 100123 through the view");
    // Stored with the filesystem's ids: the idmap worked over the ring.
    let m = fs::metadata(src.join("home/f7")).unwrap();
    assert_eq!((m.uid(), m.gid()), (123, 123));
    let m = fs::metadata(src.join("home/d")).unwrap();
    assert_eq!((m.uid(), m.gid()), (123, 123));
    assert_eq!(fs::read_to_string(src.join("home/f9")).unwrap(), "file 9");
    drop(g);
    // Creates with FUSE passthrough: create, lookup, release at least.
    assert_on_ring(&s, 3 * n as u64);
    assert!(
        s.negotiated()
            .is_some_and(|n| n.flags.contains(idfuse::InitFlags::PASSTHROUGH)),
        "FUSE passthrough negotiated alongside the ring"
    );
}

/// Root with `stall`, whose lookups block until `release` (or 20 s), and
/// `data`, 4 KiB.
#[derive(Default)]
struct Stall {
    release: AtomicBool,
    in_read: AtomicUsize,
}

const STALL: u64 = 2;
const DATA: u64 = 3;

fn attr(ino: u64) -> Attr {
    Attr {
        ino,
        mode: if ino == 1 {
            libc::S_IFDIR | 0o755
        } else {
            libc::S_IFREG | 0o644
        },
        size: if ino == 1 { 0 } else { 4096 },
        nlink: 1,
        blksize: 4096,
        ..Attr::default()
    }
}

impl Filesystem for Stall {
    fn lookup(&self, _: &Context<'_>, _: u64, name: &OsStr) -> idfuse::Result<Entry> {
        let ino = match name.to_str() {
            Some("stall") => {
                self.in_read.fetch_add(1, Ordering::SeqCst);
                let t = Instant::now();
                while !self.release.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(20)
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                self.in_read.fetch_sub(1, Ordering::SeqCst);
                STALL
            }
            Some("data") => DATA,
            _ => return Err(Errno::NOENT),
        };
        Ok(Entry {
            ino,
            generation: 0,
            attr: attr(ino),
            entry_timeout: Duration::ZERO,
            attr_timeout: Duration::ZERO,
        })
    }
    fn getattr(&self, _: &Context<'_>, ino: u64, _: Option<u64>) -> idfuse::Result<AttrReply> {
        Ok(AttrReply {
            attr: attr(ino),
            timeout: Duration::ZERO,
        })
    }
    fn open(&self, _: &Context<'_>, _: u64, _: u32, _: bool) -> idfuse::Result<Opened> {
        Ok(Opened {
            flags: idfuse::OpenOutFlags::DIRECT_IO,
            ..Opened::default()
        })
    }
    fn read(
        &self,
        _: &Context<'_>,
        ino: u64,
        _: u64,
        offset: u64,
        size: u32,
        buf: &mut Vec<u8>,
    ) -> idfuse::Result<()> {
        let _ = ino;
        let end = (offset + size as u64).min(4096);
        buf.resize(end.saturating_sub(offset) as usize, b's');
        Ok(())
    }
}

/// Clients looking `stall` up, each on its own thread: their results
/// arrive on the channel. Each looks it up relative to the mount's root,
/// opened here (`O_PATH`, no request), so that a thread that only gets to
/// its lookup after the mount is gone still asks the dead connection, not
/// the directory under the mountpoint.
fn stalled_readers(mnt: &Path, n: usize) -> std::sync::mpsc::Receiver<std::io::Result<u64>> {
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..n {
        let root = rustix::fs::open(
            mnt,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .expect("the mount's root");
        let tx = tx.clone();
        std::thread::spawn(move || {
            let r = rustix::fs::statat(&root, "stall", rustix::fs::AtFlags::empty())
                .map(|st| st.st_ino)
                .map_err(std::io::Error::from);
            let _ = tx.send(r);
        });
    }
    rx
}

fn wait_for(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The client's view of a connection that went away under it.
/// How a client's request ends when the daemon is gone: ENOTCONN once the
/// connection is aborted, ECONNABORTED for a request the ring's teardown
/// found in an entry, and ECANCELED for one the kernel was handing to the
/// dead daemon's task when it exited (the ring cancels that task work).
fn gone(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTCONN) | Some(libc::ECONNABORTED) | Some(libc::ECANCELED)
    )
}

fn fusectl() {
    let have = fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(2) == Some("fusectl"));
    if !have {
        let _ = rustix::mount::mount(
            "fusectl",
            "/sys/fs/fuse/connections",
            "fusectl",
            rustix::mount::MountFlags::empty(),
            None,
        );
    }
}

#[test]
fn abort_with_requests_in_flight_gives_enotconn() {
    if !ring_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(Stall::default());
    let mut s = Session::mount(
        fs.clone(),
        dir.path(),
        MountOptions::default(),
        ring_config(),
    )
    .unwrap();
    assert_eq!(fs::read(dir.path().join("data")).unwrap().len(), 4096);
    // Before the stall: with every ring thread stalled, a stat of the root
    // would wait in its queue too.
    let minor = rustix::fs::minor(fs::metadata(dir.path()).unwrap().dev());
    fusectl();
    let readers = stalled_readers(dir.path(), 4);
    wait_for(
        "a lookup reaches the filesystem",
        Duration::from_secs(5),
        || fs.in_read.load(Ordering::SeqCst) >= 1,
    );
    fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1").expect("abort");
    for _ in 0..4 {
        let r = readers
            .recv_timeout(Duration::from_secs(5))
            .expect("a reader hung after the abort");
        let e = r.expect_err("a lookup on an aborted connection");
        assert!(gone(&e), "reader: {e}");
    }
    let e = fs::metadata(dir.path().join("data")).expect_err("aborted");
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    fs.release.store(true, Ordering::SeqCst);
    wait_for("the ring threads stop", Duration::from_secs(5), || {
        s.running_workers() == 0
    });
    s.unmount().expect("unmount");
    assert!(!is_mounted(dir.path()), "nothing left mounted");
}

#[test]
fn unmount_with_requests_in_flight_gives_enotconn() {
    if !ring_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(Stall::default());
    let s = Session::mount(
        fs.clone(),
        dir.path(),
        MountOptions::default(),
        ring_config(),
    )
    .unwrap();
    let readers = stalled_readers(dir.path(), 4);
    wait_for(
        "a lookup reaches the filesystem",
        Duration::from_secs(5),
        || fs.in_read.load(Ordering::SeqCst) >= 1,
    );
    // The daemon goes away while one request is in its hands and others
    // wait in the kernel's queues; the stalled one finishes a bit later.
    let fs2 = fs.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        fs2.release.store(true, Ordering::SeqCst);
    });
    let t = Instant::now();
    drop(s);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "unmount took {:?}",
        t.elapsed()
    );
    for _ in 0..4 {
        let r = readers
            .recv_timeout(Duration::from_secs(5))
            .expect("a reader hung after the unmount");
        // The one lookup the daemon held may have been answered; the
        // others find the connection gone.
        if let Err(e) = r {
            assert!(gone(&e), "reader: {e}");
        }
    }
    assert!(!is_mounted(dir.path()), "nothing left mounted");
}

/// SIGKILL of a daemon that serves over the ring, mid-workload: clients
/// get ENOTCONN, nothing hangs, and the mount can be detached.
#[test]
fn sigkill_mid_workload_gives_enotconn() {
    if !ring_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The daemon is this test binary again, running only the test below.
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "daemon_for_the_sigkill_test", "--nocapture"])
        .env("IDFUSE_URING_DAEMON", dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the daemon");
    wait_for("the daemon's mount", Duration::from_secs(10), || {
        is_mounted(dir.path())
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    for w in 0..3 {
        let (stop, tx, d) = (stop.clone(), tx.clone(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            let mut i = 0u64;
            let end = loop {
                let p = d.join(format!("w{w}-{}", i % 20));
                if let Err(e) = fs::write(&p, vec![b'x'; 64 << 10]).and_then(|_| fs::metadata(&p)) {
                    break Some(e);
                }
                i += 1;
                if stop.load(Ordering::SeqCst) {
                    break None;
                }
            };
            let _ = tx.send((i, end));
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().expect("SIGKILL the daemon");
    let _ = child.wait();
    for _ in 0..3 {
        let (ops, end) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a client hung after SIGKILL");
        let e = end.expect("the workload was still running");
        assert!(ops > 0, "the workload made progress first");
        assert!(gone(&e), "client: {e}");
    }
    stop.store(true, Ordering::SeqCst);
    let e = fs::metadata(dir.path().join("anything")).expect_err("dead daemon");
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    rustix::mount::unmount(dir.path(), rustix::mount::UnmountFlags::DETACH).expect("detach");
    assert!(!is_mounted(dir.path()), "nothing left mounted");
}

/// The daemon of the SIGKILL test: does nothing unless that test runs it.
#[test]
fn daemon_for_the_sigkill_test() {
    let Some(mnt) = std::env::var_os("IDFUSE_URING_DAEMON") else {
        return;
    };
    let fs = Arc::new(MemFs::new(MemFsOptions::default()));
    let mut s = Session::mount(fs, Path::new(&mnt), MountOptions::default(), ring_config())
        .expect("daemon mount");
    s.keep_mounted();
    std::thread::sleep(Duration::from_secs(60));
}
