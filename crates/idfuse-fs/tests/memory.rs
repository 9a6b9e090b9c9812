//! Memory per cached inode: N files (`IDFUSE_LOOKUP_FILES`, default
//! 100,000) in directories of 1,000, every one stat'ed through the mount,
//! then the kernel's dentries dropped until its FORGETs have emptied the
//! inode table again. The kernel may forget dentries at any time (memory
//! pressure, another process dropping caches), so what the tests require is
//! counted on the daemon's side: every file reached the daemon as a LOOKUP,
//! and the table is back at its baseline at the end; the table's peak is
//! only reported. Prints the table's peak, the process RSS per cached
//! inode and the wall times. The passthrough holds its inodes the way
//! `IDFUSE_INODE_HANDLES` says (`always`, the default, `auto` or `never`:
//! with `never`, a million files exhaust the open-file limit).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Tmpfs;
use idfuse::{MountOptions, Session, SessionConfig};
use idfuse_fs::memfs::{MemFs, MemFsOptions};
use idfuse_fs::passthrough::{InodeHandles, Passthrough, PassthroughOptions};

const PER_DIR: usize = 1000;

fn files() -> usize {
    std::env::var("IDFUSE_LOOKUP_FILES")
        .ok()
        .map(|v| v.parse().expect("IDFUSE_LOOKUP_FILES: a number of files"))
        .unwrap_or(100_000)
}

fn path_of(root: &Path, i: usize) -> PathBuf {
    root.join(format!("d{}", i / PER_DIR))
        .join(format!("f{}", i % PER_DIR))
}

/// RSS is the whole process's: one test at a time.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Resident set size of this process (daemon and test), in bytes, after
/// handing freed heap back to the system (else what another test freed
/// would hide new allocations).
fn rss() -> u64 {
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    let statm = fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("resident pages in /proc/self/statm");
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).expect("page size")
}

/// A FUSE mount, unmounted before the tmpfs behind it.
struct Mounted<F: idfuse::Filesystem> {
    session: Option<Session<F>>,
    _backing: Option<Tmpfs>,
}

impl<F: idfuse::Filesystem> Mounted<F> {
    fn fs(&self) -> &Arc<F> {
        self.session.as_ref().expect("mounted").filesystem()
    }
}

impl<F: idfuse::Filesystem> Drop for Mounted<F> {
    fn drop(&mut self) {
        self.session.take();
    }
}

/// A session config that counts the LOOKUP requests the daemon receives.
fn counting_lookups() -> (SessionConfig, Arc<AtomicUsize>) {
    let lookups = Arc::new(AtomicUsize::new(0));
    let seen = lookups.clone();
    let config = SessionConfig {
        observer: Some(Arc::new(move |op: &str, _| {
            if op == "LOOKUP" {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        })),
        ..SessionConfig::default()
    };
    (config, lookups)
}

/// Every one of `n` stats needed the daemon: the kernel held none of these
/// names before, and one it dropped meanwhile is looked up again, so at
/// least `n` LOOKUPs arrived whatever the kernel reclaimed.
fn assert_all_looked_up(what: &str, lookups: usize, n: usize) {
    assert!(
        lookups >= n,
        "{what}: every stat of {n} uncached files reaches the daemon as a LOOKUP, but it saw {lookups}"
    );
}

fn stat_all(mnt: &Path, n: usize) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        let p = path_of(mnt, i);
        fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    }
    start.elapsed()
}

/// Drop the kernel's dentries until `count` is back at `base` (FORGETs
/// arrive asynchronously); the time it took.
fn drop_until(count: impl Fn() -> usize, base: usize) -> Duration {
    let start = Instant::now();
    while count() > base && start.elapsed() < Duration::from_secs(120) {
        fs::write("/proc/sys/vm/drop_caches", "2").expect("drop caches");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(count(), base, "inode table back at its baseline");
    start.elapsed()
}

fn per(bytes: u64, inodes: usize) -> i64 {
    (bytes as i64) / (inodes.max(1) as i64)
}

#[test]
fn passthrough_inodes_cost_little_and_are_forgotten() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let n = files();
    let handles = match std::env::var("IDFUSE_INODE_HANDLES").as_deref() {
        Ok("never") => InodeHandles::Never,
        Ok("auto") => InodeHandles::Auto,
        Ok("always") | Err(_) => InodeHandles::Always,
        Ok(v) => panic!("IDFUSE_INODE_HANDLES={v}: expected always, auto or never"),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&src).expect("mkdir for tmpfs");
    // Empty files take no blocks; inodes are unlimited.
    let tmpfs = Tmpfs::mount(&src, c"mode=0777,size=1g,nr_inodes=0");
    fs::create_dir(&mnt).expect("mkdir mnt");
    let start = Instant::now();
    for d in 0..n.div_ceil(PER_DIR) {
        fs::create_dir(src.join(format!("d{d}"))).expect("mkdir");
    }
    for i in 0..n {
        fs::File::create(path_of(&src, i)).expect("create in the backing tmpfs");
    }
    let created = start.elapsed();
    let opts = PassthroughOptions {
        inode_handles: handles,
        ..PassthroughOptions::default()
    };
    let pt = Arc::new(Passthrough::new(&src, opts).expect("passthrough"));
    let (config, lookups) = counting_lookups();
    let session =
        Session::mount(pt, &mnt, MountOptions::default(), config).expect("mount passthrough");
    let m = Mounted {
        session: Some(session),
        _backing: Some(tmpfs),
    };
    let pt = m.fs().clone();
    let base = pt.inode_count();
    let rss0 = rss();
    let looked0 = lookups.load(Ordering::Relaxed);
    let stat = stat_all(&mnt, n);
    let peak = pt.inode_count();
    let fds = pt.inode_fd_count();
    let rss1 = rss();
    let looked = lookups.load(Ordering::Relaxed) - looked0;
    assert_all_looked_up("passthrough", looked, n);
    let forgot = drop_until(|| pt.inode_count(), base);
    let rss2 = rss();
    println!(
        "passthrough ({handles:?}), {n} files: created in the backing tmpfs in {:.1} s; stat through the mount {:.1} s ({:.1} µs each, {looked} LOOKUPs); inode table {base} -> {peak} ({fds} held by fds) -> {} after {:.1} s of drop_caches; RSS {} -> {} -> {} KiB: {} bytes per cached inode",
        created.as_secs_f64(),
        stat.as_secs_f64(),
        stat.as_secs_f64() * 1e6 / n as f64,
        pt.inode_count(),
        forgot.as_secs_f64(),
        rss0 / 1024,
        rss1 / 1024,
        rss2 / 1024,
        per(rss1.saturating_sub(rss0), peak.saturating_sub(base)),
    );
}

#[test]
fn memfs_inodes_cost_little_and_are_forgotten() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let n = files();
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().to_path_buf();
    let fs = Arc::new(MemFs::new(MemFsOptions {
        root_mode: 0o777,
        ..MemFsOptions::default()
    }));
    let (config, lookups) = counting_lookups();
    let session = Session::mount(fs, &mnt, MountOptions::default(), config).expect("mount memfs");
    let m: Mounted<MemFs> = Mounted {
        session: Some(session),
        _backing: None,
    };
    let memfs = m.fs().clone();
    let base = memfs.looked_up_count();
    let rss_empty = rss();
    let start = Instant::now();
    for d in 0..n.div_ceil(PER_DIR) {
        fs::create_dir(mnt.join(format!("d{d}"))).expect("mkdir");
    }
    for i in 0..n {
        fs::File::create(path_of(&mnt, i)).expect("create through the mount");
    }
    let created = start.elapsed();
    // The creates left lookups behind: start from none.
    drop_until(|| memfs.looked_up_count(), base);
    let stored = memfs.inode_count();
    let rss0 = rss();
    let looked0 = lookups.load(Ordering::Relaxed);
    let stat = stat_all(&mnt, n);
    let peak = memfs.looked_up_count();
    let rss1 = rss();
    let looked = lookups.load(Ordering::Relaxed) - looked0;
    assert_all_looked_up("memfs", looked, n);
    let forgot = drop_until(|| memfs.looked_up_count(), base);
    assert_eq!(memfs.inode_count(), stored, "the files themselves stay");
    println!(
        "memfs, {n} files: created through the mount in {:.1} s ({} bytes of RSS per file stored); stat {:.1} s ({:.1} µs each, {looked} LOOKUPs); looked-up inodes {base} -> {peak} -> {} after {:.1} s of drop_caches; RSS {} -> {} KiB: {} bytes per cached inode",
        created.as_secs_f64(),
        per(rss0.saturating_sub(rss_empty), stored),
        stat.as_secs_f64(),
        stat.as_secs_f64() * 1e6 / n as f64,
        memfs.looked_up_count(),
        forgot.as_secs_f64(),
        rss0 / 1024,
        rss1 / 1024,
        per(rss1.saturating_sub(rss0), peak.saturating_sub(base)),
    );
}
