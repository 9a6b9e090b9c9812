//! Session lifecycle on real mounts: INTERRUPT reaches a blocked request,
//! notifications are accepted by the kernel, FORGET arrives, several
//! workers serve at once, and an unmount by someone else ends the workers.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idfuse::{
    Attr, AttrReply, Context, Entry, Errno, Filesystem, ForgetOne, MountOptions, Opened, Session,
    SessionConfig,
};

/// Root with one file, `slow`, whose reads block until interrupted, and
/// `data`, a 4 KiB file of 'd'.
#[derive(Default)]
struct Slow {
    interrupted: AtomicBool,
    forgets: AtomicU64,
    reads: AtomicUsize,
    in_read: AtomicUsize,
    max_parallel: AtomicUsize,
}

const SLOW: u64 = 2;
const DATA: u64 = 3;

fn attr(ino: u64) -> Attr {
    let (mode, size) = match ino {
        1 => (libc::S_IFDIR | 0o755, 0),
        SLOW => (libc::S_IFREG | 0o644, 1 << 20),
        _ => (libc::S_IFREG | 0o644, 4096),
    };
    Attr {
        ino,
        mode,
        size,
        nlink: 1,
        blksize: 4096,
        ..Attr::default()
    }
}

impl Filesystem for Slow {
    fn lookup(&self, _ctx: &Context<'_>, _parent: u64, name: &OsStr) -> idfuse::Result<Entry> {
        let ino = match name.to_str() {
            Some("slow") => SLOW,
            Some("data") => DATA,
            _ => return Err(Errno::NOENT),
        };
        Ok(Entry {
            ino,
            generation: 0,
            attr: attr(ino),
            entry_timeout: Duration::from_secs(60),
            attr_timeout: Duration::from_secs(60),
        })
    }
    fn forget(&self, _ino: u64, nlookup: u64) {
        self.forgets.fetch_add(nlookup, Ordering::SeqCst);
    }
    fn batch_forget(&self, nodes: &mut dyn Iterator<Item = ForgetOne>) {
        for n in nodes {
            self.forgets.fetch_add(n.nlookup, Ordering::SeqCst);
        }
    }
    fn getattr(&self, _ctx: &Context<'_>, ino: u64, _fh: Option<u64>) -> idfuse::Result<AttrReply> {
        Ok(AttrReply {
            attr: attr(ino),
            timeout: Duration::from_secs(60),
        })
    }
    fn open(
        &self,
        _ctx: &Context<'_>,
        _ino: u64,
        _flags: u32,
        _kill: bool,
    ) -> idfuse::Result<Opened> {
        // Direct I/O so every read reaches us.
        Ok(Opened {
            flags: idfuse::OpenOutFlags::DIRECT_IO,
            ..Opened::default()
        })
    }
    fn read(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        _fh: u64,
        offset: u64,
        size: u32,
        buf: &mut Vec<u8>,
    ) -> idfuse::Result<()> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let now = self.in_read.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_parallel.fetch_max(now, Ordering::SeqCst);
        let res = if ino == SLOW {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if ctx.is_interrupted() {
                    self.interrupted.store(true, Ordering::SeqCst);
                    break Err(Errno::INTR);
                }
                if Instant::now() > deadline {
                    break Err(Errno::TIMEDOUT);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        } else {
            std::thread::sleep(Duration::from_millis(50));
            let end = (offset + size as u64).min(4096);
            buf.resize(end.saturating_sub(offset) as usize, b'd');
            Ok(())
        };
        self.in_read.fetch_sub(1, Ordering::SeqCst);
        res
    }
}

fn mount(dir: &Path, threads: usize) -> (Arc<Slow>, Session<Slow>) {
    let fs = Arc::new(Slow::default());
    let cfg = SessionConfig {
        threads,
        ..SessionConfig::default()
    };
    let s = Session::mount(fs.clone(), dir, MountOptions::default(), cfg).expect("mount");
    (fs, s)
}

extern "C" fn on_usr1(_: libc::c_int) {}

#[test]
fn a_signal_interrupts_a_blocked_read() {
    let dir = tempfile::tempdir().expect("a temporary mountpoint");
    let (fs, _session) = mount(dir.path(), 2);
    let path = std::ffi::CString::new(dir.path().join("slow").to_str().unwrap()).unwrap();
    // SAFETY: the child installs a handler and reads; it only makes syscalls
    // and exits with the read's errno.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above; no allocation or locking in the child.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_usr1 as *const () as usize;
            libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
            if fd < 0 {
                libc::_exit(100);
            }
            let mut b = [0u8; 4096];
            let n = libc::read(fd, b.as_mut_ptr().cast(), b.len());
            let code = if n < 0 { *libc::__errno_location() } else { 0 };
            libc::_exit(code);
        }
    }
    assert!(pid > 0, "fork");
    let start = Instant::now();
    while fs.reads.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        fs.reads.load(Ordering::SeqCst),
        1,
        "the read reached the filesystem"
    );
    // SAFETY: signalling and reaping our own child.
    let status = unsafe {
        libc::kill(pid, libc::SIGUSR1);
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
        st
    };
    assert!(
        fs.interrupted.load(Ordering::SeqCst),
        "the filesystem saw the INTERRUPT"
    );
    assert_eq!(
        libc::WEXITSTATUS(status),
        libc::EINTR,
        "read(2) returned EINTR"
    );
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "interrupted well before the 10 s timeout"
    );
}

#[test]
fn workers_serve_requests_in_parallel() {
    let dir = tempfile::tempdir().expect("a temporary mountpoint");
    let (fs, _session) = mount(dir.path(), 4);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let p = dir.path().join("data");
            std::thread::spawn(move || std::fs::read(p).map(|v| v.len()))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().unwrap(), 4096);
    }
    assert!(
        fs.max_parallel.load(Ordering::SeqCst) >= 2,
        "reads overlapped across workers"
    );
}

#[test]
fn notifications_reach_the_kernel() {
    let dir = tempfile::tempdir().expect("a temporary mountpoint");
    let (_fs, session) = mount(dir.path(), 2);
    // An open file pins the inode in the kernel's cache.
    let file = std::fs::File::open(dir.path().join("data")).unwrap();
    let ino = file.metadata().unwrap().ino();
    let n = session.notifier();
    n.inval_inode(ino, 0, -1).expect("inval_inode");
    n.store(ino, 0, b"stored")
        .expect("store into the page cache");
    n.retrieve(77, ino, 0, 6).expect("retrieve");
    n.inval_entry(1, OsStr::new("data"))
        .expect("inval_entry of a cached name");
    drop(file);
    n.prune(&[ino]).expect("prune");
    // Deleting a name the kernel does not have is ENOENT, not a failure of
    // the session.
    match n.delete(1, 999, OsStr::new("nope")) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => panic!("delete notification: {e}"),
    }
}

#[test]
fn dropping_caches_sends_forgets() {
    let dir = tempfile::tempdir().expect("a temporary mountpoint");
    let (fs, _session) = mount(dir.path(), 2);
    std::fs::metadata(dir.path().join("data")).unwrap();
    std::fs::metadata(dir.path().join("slow")).unwrap();
    std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    let start = Instant::now();
    while fs.forgets.load(Ordering::SeqCst) < 2 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        fs.forgets.load(Ordering::SeqCst) >= 2,
        "both lookups were forgotten"
    );
}

#[test]
fn an_external_unmount_stops_the_workers() {
    let dir = tempfile::tempdir().expect("a temporary mountpoint");
    let (_fs, mut session) = mount(dir.path(), 3);
    // Over io_uring, one /dev/fuse worker stays beside the ring threads.
    let expected = match session.transport() {
        idfuse::Transport::IoUring { threads, .. } => 1 + threads,
        idfuse::Transport::DevFuse => 3,
    };
    assert_eq!(session.running_workers(), expected);
    // Another test's forked child may briefly hold a copy of our mount fd
    // (fork copies the fd table), which makes a plain umount EBUSY.
    let start = Instant::now();
    loop {
        match rustix::mount::unmount(dir.path(), rustix::mount::UnmountFlags::empty()) {
            Err(Errno::BUSY) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => break other.expect("umount"),
        }
    }
    let start = Instant::now();
    while session.running_workers() > 0 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        session.running_workers(),
        0,
        "workers saw ENODEV and stopped"
    );
    session
        .unmount()
        .expect("unmount after the fact is not an error");
}

/// Mounts fusectl at /sys/fs/fuse/connections for the test if nobody has,
/// and unmounts it again afterwards.
struct Fusectl {
    mounted_here: bool,
}

impl Fusectl {
    fn ensure() -> Self {
        let have = std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(2) == Some("fusectl"));
        if have {
            return Self {
                mounted_here: false,
            };
        }
        rustix::mount::mount(
            "fusectl",
            "/sys/fs/fuse/connections",
            "fusectl",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .expect("mount fusectl");
        Self { mounted_here: true }
    }
}

impl Drop for Fusectl {
    fn drop(&mut self) {
        if self.mounted_here {
            let _ = rustix::mount::unmount(
                "/sys/fs/fuse/connections",
                rustix::mount::UnmountFlags::DETACH,
            );
        }
    }
}

#[test]
fn aborting_the_connection_gives_enotconn_and_stops_workers() {
    let dir = tempfile::tempdir().expect("a temporary mountpoint");
    let (_fs, mut session) = mount(dir.path(), 2);
    let _ctl = Fusectl::ensure();
    let dev = std::fs::metadata(dir.path()).unwrap().dev();
    let minor = rustix::fs::minor(dev);
    std::fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1").expect("abort");
    let err = std::fs::metadata(dir.path().join("data")).expect_err("aborted connection");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    let start = Instant::now();
    while session.running_workers() > 0 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        session.running_workers(),
        0,
        "workers stopped after the abort"
    );
    session.unmount().expect("unmount of an aborted connection");
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !info.contains(dir.path().to_str().unwrap()),
        "nothing left mounted"
    );
}

/// The superblock outlives a lazy unmount while a file in it is open, so
/// the kernel does not end the connection and no worker sees ENODEV: the
/// session must wake the workers blocked in read(/dev/fuse) itself.
#[test]
fn unmounting_while_the_mount_is_in_use_stops_the_workers() {
    let dir = tempfile::tempdir().expect("a temporary mountpoint");
    let (_fs, mut session) = mount(dir.path(), 3);
    let held = rustix::fs::open(
        dir.path(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .expect("open the mount's root");
    // Let every worker reach its read.
    std::thread::sleep(Duration::from_millis(50));
    session.unmount().expect("lazy unmount");
    assert_eq!(
        session.running_workers(),
        0,
        "unmount returned with every worker stopped, not left blocked"
    );
    drop(session);
    // With the session gone, the connection is over for the open file.
    let err = rustix::fs::fstatfs(&held).expect_err("connection ended");
    assert_eq!(err, Errno::NOTCONN);
}

/// The mount's readahead, as its backing device shows it.
fn readahead_kib(dir: &Path) -> u64 {
    let st = rustix::fs::statx(
        rustix::fs::CWD,
        dir,
        rustix::fs::AtFlags::STATX_DONT_SYNC,
        rustix::fs::StatxFlags::empty(),
    )
    .expect("statx of the mount");
    let p = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        st.stx_dev_major, st.stx_dev_minor
    );
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{p}: {e}"))
        .trim()
        .parse()
        .expect("a number")
}

/// `max_readahead` above the kernel's 128 KiB is set on the mount's device
/// (the tests run as root); below it, INIT lowers it.
#[test]
fn max_readahead_sets_the_mounts_readahead() {
    for (bytes, kib) in [(None, 128), (Some(8 << 20), 8192), (Some(64 << 10), 64)] {
        let dir = tempfile::tempdir().expect("a temporary mountpoint");
        let cfg = SessionConfig {
            threads: 1,
            max_readahead: bytes,
            ..SessionConfig::default()
        };
        let s = Session::mount(
            Arc::new(Slow::default()),
            dir.path(),
            MountOptions::default(),
            cfg,
        )
        .expect("mount");
        assert_eq!(readahead_kib(dir.path()), kib, "max_readahead={bytes:?}");
        drop(s);
    }
}
