//! Faults on real mounts of `idfuse mount passthrough`: the daemon killed
//! during heavy writes (with and without FUSE passthrough, through a plain
//! and an idmapped view), SOURCE made unreadable, lazily unmounted, renamed
//! away and removed under a live mount, and symlinks (plain and magic)
//! swapped in and out of SOURCE while clients work through the mount.
//!
//! Every mount made here is detached by a guard on drop (also on panic);
//! every daemon is a child of the test, killed by its pid in that guard.

use std::ffi::{CStr, CString};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, ResolveFlags, StatxFlags, CWD};
use rustix::io::Errno;

const BIN: &str = env!("CARGO_BIN_EXE_idfuse");

fn is_mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let p = path.to_string_lossy().to_string();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

/// Run `f` on its own thread and fail the test if it does not return
/// within `limit` (a hang through the mount, not just slowness).
fn within<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {limit:?} (hung?)"),
    }
}

/// A mount made by the test: a tmpfs, an idmapped view or a FUSE mount
/// with its foreground daemon. On drop it is detached (lazily, so a dead
/// or hung daemon cannot hang the test) and the daemon killed by pid.
struct Mounted {
    path: PathBuf,
    child: Option<Child>,
    log: Option<PathBuf>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.path) {
            let _ = rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH);
        }
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Mounted {
    fn daemon(&mut self) -> &mut Child {
        self.child.as_mut().expect("a daemon")
    }

    fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// The daemon survived whatever was done to it.
    fn assert_alive(&mut self, after: &str) {
        if let Some(st) = self.daemon().try_wait().unwrap() {
            panic!(
                "the daemon died ({st}) after {after}; its log:\n{}",
                self.log()
            );
        }
    }

    /// `umount` (not lazy) succeeds and the daemon then ends by itself.
    fn umount_and_wait_exit(&mut self) {
        let st = Command::new("umount").arg(&self.path).status().unwrap();
        assert!(st.success(), "umount {}", self.path.display());
        assert!(!is_mounted(&self.path));
        let start = Instant::now();
        let status = loop {
            if let Some(st) = self.daemon().try_wait().unwrap() {
                break st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the daemon did not exit after its mount went away"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "daemon exit: {status}; log:\n{}",
            self.log()
        );
    }
}

/// A fresh tmpfs at `path` (created if missing).
fn tmpfs(path: &Path) -> Mounted {
    std::fs::create_dir_all(path).unwrap();
    rustix::mount::mount(
        "idfuse-faults",
        path,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        c"size=1g,mode=755",
    )
    .expect("mount tmpfs");
    Mounted {
        path: path.to_path_buf(),
        child: None,
        log: None,
    }
}

/// `idfuse mount passthrough SRC MNT ARGS --foreground`, its stderr in
/// `log`; returns once MNT is mounted. `tweak` adjusts the command.
fn passthrough_with(
    src: &Path,
    mnt: &Path,
    args: &[&str],
    log: &Path,
    tweak: impl FnOnce(&mut Command),
) -> Mounted {
    std::fs::create_dir_all(mnt).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["mount", "passthrough"])
        .arg(src)
        .arg(mnt)
        .args(args)
        .arg("--foreground")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    tweak(&mut cmd);
    let child = cmd.spawn().expect("spawn idfuse");
    let mut m = Mounted {
        path: mnt.to_path_buf(),
        child: Some(child),
        log: Some(log.to_path_buf()),
    };
    let start = Instant::now();
    while !is_mounted(mnt) {
        if let Some(st) = m.daemon().try_wait().unwrap() {
            panic!("the daemon exited ({st}) before mounting:\n{}", m.log());
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no mount");
        std::thread::sleep(Duration::from_millis(20));
    }
    m
}

fn passthrough(src: &Path, mnt: &Path, args: &[&str], log: &Path) -> Mounted {
    passthrough_with(src, mnt, args, log, |_| {})
}

/// A scratch directory that other users may traverse.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw_os_error(e.raw_os_error().unwrap_or(0))
}

/// Sets the flag on drop, so helper threads stop when the test panics.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------
// 1. SIGKILL during heavy writes
// ---------------------------------------------------------------------

const REC: usize = 64 * 1024;
const HDR: usize = 24;
const MAGIC: &[u8; 4] = b"IDFR";
/// Each writer stops appending here (it keeps fsyncing), to bound memory.
const CAP: u64 = 96 << 20;

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Record `seq` of writer `id`: magic, writer id, sequence number, FNV-1a
/// of the payload, then a payload that depends on both.
fn record(id: u32, seq: u64) -> Vec<u8> {
    let mut r = vec![0u8; REC];
    let mut s = (u64::from(id) << 40) ^ seq ^ 0x9e37_79b9_7f4a_7c15;
    for chunk in r[HDR..].chunks_mut(8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        chunk.copy_from_slice(&s.to_le_bytes()[..chunk.len()]);
    }
    let sum = fnv1a(&r[HDR..]);
    r[0..4].copy_from_slice(MAGIC);
    r[4..8].copy_from_slice(&id.to_le_bytes());
    r[8..16].copy_from_slice(&seq.to_le_bytes());
    r[16..24].copy_from_slice(&sum.to_le_bytes());
    r
}

/// Check the records of writer `id` in `data`: every complete record has
/// its header and checksum right and is the next in sequence; a partial
/// tail is a prefix of the record that was being written.
fn check_records(data: &[u8], id: u32) -> Result<(), String> {
    for (i, rec) in data.chunks(REC).enumerate() {
        let seq = i as u64;
        if rec.len() < REC {
            if rec != &record(id, seq)[..rec.len()] {
                return Err(format!(
                    "partial tail record {seq} ({} bytes) is garbage",
                    rec.len()
                ));
            }
            continue;
        }
        let sum = u64::from_le_bytes(rec[16..24].try_into().unwrap());
        let ok = &rec[0..4] == MAGIC
            && rec[4..8] == id.to_le_bytes()
            && rec[8..16] == seq.to_le_bytes()
            && sum == fnv1a(&rec[HDR..]);
        if !ok {
            return Err(format!("record {seq} at byte {} is wrong", i * REC));
        }
    }
    Ok(())
}

struct WriterEnd {
    written: u64,
    error: Option<std::io::Error>,
}

/// Append records to `path` (opened with O_APPEND), fsync every 4 of them
/// and publish the fsync'ed length in `durable`, until an error or `stop`.
fn writer(path: PathBuf, id: u32, durable: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> WriterEnd {
    let mut f = match std::fs::OpenOptions::new().append(true).open(&path) {
        Ok(f) => f,
        Err(e) => {
            return WriterEnd {
                written: 0,
                error: Some(e),
            }
        }
    };
    let (mut written, mut seq) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        if written < CAP {
            if let Err(e) = f.write_all(&record(id, seq)) {
                return WriterEnd {
                    written,
                    error: Some(e),
                };
            }
            written += REC as u64;
            seq += 1;
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
        if seq % 4 == 0 || written >= CAP {
            if let Err(e) = f.sync_all() {
                return WriterEnd {
                    written,
                    error: Some(e),
                };
            }
            durable.store(written, Ordering::Relaxed);
        }
    }
    WriterEnd {
        written,
        error: None,
    }
}

fn sigkill_during_heavy_writes(fuse_passthrough: bool) {
    let dir = scratch();
    let t = dir.path().join("t");
    let _tmp = tmpfs(&t);
    let src = t.join("src");
    std::fs::create_dir(&src).unwrap();
    let (mnt, view) = (dir.path().join("mnt"), dir.path().join("view"));
    std::fs::create_dir(&view).unwrap();
    let pt = if fuse_passthrough { "true" } else { "false" };
    let mut m = passthrough(
        &src,
        &mnt,
        &["--passthrough", pt],
        &dir.path().join("daemon.log"),
    );
    // The idmapped view: a second mount of the same FUSE superblock.
    let o = Command::new(BIN)
        .args(["idmap", "--map", "b:0:100000:65536"])
        .arg(&mnt)
        .arg(&view)
        .output()
        .unwrap();
    let _view = Mounted {
        path: view.clone(),
        child: None,
        log: None,
    };
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(is_mounted(&view));

    // Four writers through the mount, a fifth through the view. Host root
    // has no id in the view, so it cannot create there: the view's file
    // is made through the mount and opened through the view.
    let mut paths: Vec<PathBuf> = (0..4).map(|i| mnt.join(format!("w{i}"))).collect();
    for p in &paths {
        std::fs::File::create(p).unwrap();
    }
    std::fs::File::create(mnt.join("w4")).unwrap();
    std::fs::set_permissions(mnt.join("w4"), std::fs::Permissions::from_mode(0o666)).unwrap();
    paths.push(view.join("w4"));
    assert_eq!(std::fs::metadata(view.join("w4")).unwrap().uid(), 100000);
    // A probe opened before the kill and written after it.
    let mut probe = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(mnt.join("probe"))
        .unwrap();
    probe.write_all(b"before\n").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(stop.clone());
    let writers: Vec<_> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let durable = Arc::new(AtomicU64::new(0));
            let (p, d, s) = (p.clone(), durable.clone(), stop.clone());
            let h = std::thread::spawn(move || writer(p, i as u32, d, s));
            (h, durable)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let pid = m.daemon().id();
    // SAFETY: SIGKILL to our own child, by pid; it is not reaped yet, so
    // the pid cannot have been reused.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let st = m.daemon().wait().unwrap();
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{st}");

    // Every writer ends with an error, none hangs.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ends = Vec::new();
    for (i, (h, durable)) in writers.into_iter().enumerate() {
        while !h.is_finished() {
            assert!(
                Instant::now() < deadline,
                "writer {i} still blocked 10 s after the daemon was killed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let end = h.join().expect("writer thread");
        let durable = durable.load(Ordering::Relaxed);
        let e = end
            .error
            .as_ref()
            .unwrap_or_else(|| panic!("writer {i} ({}) saw no error", paths[i].display()));
        // Over io_uring, a request caught in the ring's teardown (the
        // kernel cancels the dead daemon's commands asynchronously) may end
        // with ECANCELED instead.
        assert!(
            matches!(
                errno_of(e),
                Errno::NOTCONN | Errno::CONNABORTED | Errno::CANCELED
            ),
            "writer {i}: {e}"
        );
        assert!(durable > 0, "writer {i} never completed an fsync in 1.5 s");
        ends.push((end.written, durable));
    }
    // A write on a file opened before the kill: with FUSE passthrough the
    // kernel writes the backing file itself, so it still succeeds; through
    // the daemon it cannot.
    let late = probe.write_all(b"after\n");
    if fuse_passthrough {
        late.expect("a write to a passthrough backing file after the kill");
    } else {
        let e = late.expect_err("a write through the dead daemon");
        assert_eq!(errno_of(&e), Errno::NOTCONN, "{e}");
    }
    drop(probe);

    // Both mounts are dead: uncached operations fail with ENOTCONN.
    for p in [&mnt, &view] {
        let r = rustix::fs::statx(
            CWD,
            p.as_path(),
            AtFlags::STATX_FORCE_SYNC,
            StatxFlags::BASIC_STATS,
        );
        assert_eq!(r.err(), Some(Errno::NOTCONN), "statx {}", p.display());
        let r = rustix::fs::statfs(p.as_path());
        assert_eq!(r.err(), Some(Errno::NOTCONN), "statfs {}", p.display());
        let r = std::fs::symlink_metadata(p.join("never-looked-up"));
        assert_eq!(r.map_err(|e| errno_of(&e)).err(), Some(Errno::NOTCONN));
    }
    for p in [&mnt, &view] {
        let st = Command::new("umount").arg(p).status().unwrap();
        assert!(st.success(), "umount {}", p.display());
        assert!(!is_mounted(p), "{} detached", p.display());
    }

    // What was fsync'ed is in SOURCE, record for record.
    for (i, (written, durable)) in ends.iter().enumerate() {
        let data = std::fs::read(src.join(format!("w{i}"))).unwrap();
        assert!(
            data.len() as u64 >= *durable,
            "writer {i}: {} bytes in SOURCE, {durable} were fsync'ed",
            data.len()
        );
        assert!(*written >= *durable);
        check_records(&data, i as u32).unwrap_or_else(|e| panic!("writer {i}: {e}"));
        if i == 0 {
            // The checker notices a flipped byte, a record from another
            // writer and a garbage tail.
            let mut bad = data[..REC * 2].to_vec();
            bad[REC + 100] ^= 1;
            assert!(check_records(&bad, 0).is_err());
            assert!(check_records(&data[..REC], 1).is_err());
            let mut tail = data[..REC + 10].to_vec();
            tail[REC + 9] ^= 0xff;
            assert!(check_records(&tail, 0).is_err());
        }
    }
    let total: u64 = ends.iter().map(|e| e.1).sum();
    eprintln!(
        "passthrough={fuse_passthrough}: {} MiB fsync'ed by 5 writers before SIGKILL",
        total >> 20
    );
}

#[test]
fn sigkill_during_heavy_writes_with_fuse_passthrough() {
    sigkill_during_heavy_writes(true);
}

#[test]
fn sigkill_during_heavy_writes_through_the_daemon() {
    sigkill_during_heavy_writes(false);
}

// ---------------------------------------------------------------------
// 2. SOURCE made unreadable, unmounted, renamed or removed under a mount
// ---------------------------------------------------------------------

/// errno of `open(path, flags)` (0 on success), without allocating: safe
/// to call in a forked child.
fn try_open(path: &CStr, flags: i32) -> i32 {
    // SAFETY: open/close with a NUL-terminated path; errno read right after.
    unsafe {
        let fd = libc::open(path.as_ptr(), flags | libc::O_CLOEXEC);
        if fd < 0 {
            return *libc::__errno_location();
        }
        libc::close(fd);
    }
    0
}

/// Run `f` in a forked child with uid and gid `id` and no supplementary
/// groups; `f` returns 0 or an errno, which comes back here. `f` must not
/// allocate (the parent has other threads).
fn as_user(id: u32, f: impl Fn() -> i32) -> i32 {
    // SAFETY: after fork the child calls only raw syscalls (which change
    // this one thread, the only one it has) and `f`, which does not
    // allocate, then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: as above; nothing returns from this branch.
        unsafe {
            let id = id as libc::c_long;
            let code = if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>())
                != 0
                || libc::syscall(libc::SYS_setresgid, id, id, id) != 0
                || libc::syscall(libc::SYS_setresuid, id, id, id) != 0
            {
                255
            } else {
                f()
            };
            libc::_exit(code);
        }
    }
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            assert!(libc::WIFEXITED(status), "child status {status:#x}");
            let code = libc::WEXITSTATUS(status);
            assert_ne!(code, 255, "could not become uid {id}");
            return code;
        }
        if start.elapsed() > Duration::from_secs(10) {
            // SAFETY: our own child, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("the child acting as uid {id} hung");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

#[test]
fn source_subdirectory_made_unreadable_denies_others_after_attr_timeout() {
    let dir = scratch();
    let t = dir.path().join("t");
    let _tmp = tmpfs(&t);
    let src = t.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/f"), b"data").unwrap();
    for p in [&src, &src.join("sub")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(src.join("sub/f"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let mnt = dir.path().join("mnt");
    let mut m = passthrough(
        &src,
        &mnt,
        &["-o", "attr_timeout=0.3,entry_timeout=0.3"],
        &dir.path().join("daemon.log"),
    );
    let (f, sub) = (cpath(&mnt.join("sub/f")), cpath(&mnt.join("sub")));
    // Before: uid 1234 reads the file and lists the directory.
    assert_eq!(as_user(1234, || try_open(&f, libc::O_RDONLY)), 0);
    assert_eq!(
        as_user(1234, || try_open(&sub, libc::O_RDONLY | libc::O_DIRECTORY)),
        0
    );

    // Directly in SOURCE: nobody but root may enter `sub` any more.
    std::fs::set_permissions(src.join("sub"), std::fs::Permissions::from_mode(0o000)).unwrap();
    std::os::unix::fs::chown(src.join("sub"), Some(4321), Some(4321)).unwrap();
    std::thread::sleep(Duration::from_millis(700));

    // The kernel decides (default_permissions) with the fresh attributes;
    // the daemon, running as root, would have served the file.
    let meta = std::fs::metadata(mnt.join("sub")).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.uid()), (0, 4321));
    assert_eq!(
        as_user(1234, || try_open(&f, libc::O_RDONLY)),
        libc::EACCES,
        "uid 1234 opens a file in a mode-000 directory"
    );
    assert_eq!(
        as_user(1234, || try_open(&sub, libc::O_RDONLY | libc::O_DIRECTORY)),
        libc::EACCES,
        "uid 1234 lists a mode-000 directory"
    );
    // Root still goes everywhere.
    assert_eq!(std::fs::read(mnt.join("sub/f")).unwrap(), b"data");
    assert_eq!(names(&mnt.join("sub")), ["f"]);
    std::fs::write(mnt.join("sub/g"), b"root").unwrap();
    assert_eq!(std::fs::read(src.join("sub/g")).unwrap(), b"root");
    m.assert_alive("SOURCE's subdirectory was made unreadable");
    m.umount_and_wait_exit();
}

#[test]
fn backing_tmpfs_lazily_unmounted_under_a_live_mount() {
    let dir = scratch();
    let t = dir.path().join("t");
    std::fs::create_dir(&t).unwrap();
    // What SOURCE's path shows once the tmpfs is gone from it.
    std::fs::write(t.join("UNDER"), b"the directory under the tmpfs").unwrap();
    let _tmp = tmpfs(&t);
    std::fs::create_dir(t.join("a")).unwrap();
    std::fs::write(t.join("a/f"), b"tree").unwrap();
    let mnt = dir.path().join("mnt");
    let mut m = passthrough(
        &t,
        &mnt,
        &["-o", "timeout=0"],
        &dir.path().join("daemon.log"),
    );
    assert_eq!(names(&mnt), ["a"]);

    let st = Command::new("umount").arg("-l").arg(&t).status().unwrap();
    assert!(st.success());
    assert_eq!(names(&t), ["UNDER"], "the tmpfs is detached");

    // The daemon's fds keep the detached tmpfs alive: the mount goes on
    // serving that tree (never the directory now at SOURCE's path), and
    // nothing hangs.
    let limit = Duration::from_secs(5);
    let mm = mnt.clone();
    assert_eq!(within("readdir", limit, move || names(&mm)), ["a"]);
    let mm = mnt.clone();
    let data = within("read", limit, move || std::fs::read(mm.join("a/f")));
    assert_eq!(data.unwrap(), b"tree");
    let mm = mnt.clone();
    let r = within("create", limit, move || {
        std::fs::write(mm.join("new"), b"n")
    });
    r.unwrap();
    assert!(
        !t.join("new").exists(),
        "a create reached SOURCE's new path"
    );
    let mm = mnt.clone();
    let r = within("statfs", limit, move || rustix::fs::statfs(mm.as_path()));
    r.unwrap();
    let mm = mnt.clone();
    let r = within("lookup of UNDER", limit, move || {
        std::fs::symlink_metadata(mm.join("UNDER"))
    });
    assert_eq!(r.map_err(|e| errno_of(&e)).err(), Some(Errno::NOENT));
    m.assert_alive("SOURCE's tmpfs was lazily unmounted");
    m.umount_and_wait_exit();
}

#[test]
fn source_renamed_away_then_removed_under_a_live_mount() {
    let dir = scratch();
    let t = dir.path().join("t");
    let _tmp = tmpfs(&t);
    let src = t.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("old"), b"old tree").unwrap();
    let mnt = dir.path().join("mnt");
    let mut m = passthrough(
        &src,
        &mnt,
        &["-o", "timeout=0"],
        &dir.path().join("daemon.log"),
    );
    assert_eq!(names(&mnt), ["old"]);

    // SOURCE renamed away, an empty directory (with a decoy) in its place:
    // the mirror holds the old tree by its fds and goes on serving it.
    std::fs::rename(&src, t.join("gone")).unwrap();
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("decoy"), b"decoy").unwrap();
    let limit = Duration::from_secs(5);
    let mm = mnt.clone();
    assert_eq!(within("readdir", limit, move || names(&mm)), ["old"]);
    assert_eq!(std::fs::read(mnt.join("old")).unwrap(), b"old tree");
    std::fs::write(mnt.join("new"), b"new").unwrap();
    assert_eq!(std::fs::read(t.join("gone/new")).unwrap(), b"new");
    assert!(!src.join("new").exists());
    assert!(std::fs::symlink_metadata(mnt.join("decoy")).is_err());
    m.assert_alive("SOURCE was renamed away");

    // Now the old tree is removed: the mount's root is a deleted directory.
    std::fs::remove_dir_all(t.join("gone")).unwrap();
    let mm = mnt.clone();
    let r = within("readdir of a deleted root", limit, move || {
        std::fs::read_dir(&mm).map(|d| d.count())
    });
    assert_eq!(r.unwrap(), 0, "a deleted directory is empty");
    let mm = mnt.clone();
    let r = within("create in a deleted root", limit, move || {
        std::fs::write(mm.join("x"), b"x")
    });
    assert_eq!(r.map_err(|e| errno_of(&e)).err(), Some(Errno::NOENT));
    let mm = mnt.clone();
    let r = within("lookup in a deleted root", limit, move || {
        std::fs::symlink_metadata(mm.join("old"))
    });
    assert_eq!(r.map_err(|e| errno_of(&e)).err(), Some(Errno::NOENT));
    assert_eq!(names(&src), ["decoy"], "nothing reached the new SOURCE");
    m.assert_alive("SOURCE was removed");
    m.umount_and_wait_exit();
}

// ---------------------------------------------------------------------
// 3. Symlink races and magic links
// ---------------------------------------------------------------------

const MARKER: &[u8] = b"OUTSIDE-MARKER: the daemon followed a symlink out of SOURCE";

/// A directory outside SOURCE holding only the marker file.
fn outside(dir: &Path) -> PathBuf {
    let o = dir.join("outside");
    std::fs::create_dir(&o).unwrap();
    std::fs::write(o.join("passwd"), MARKER).unwrap();
    o
}

fn assert_outside_untouched(o: &Path) {
    assert_eq!(
        names(o),
        ["passwd"],
        "something was created in {}",
        o.display()
    );
    assert_eq!(std::fs::read(o.join("passwd")).unwrap(), MARKER);
}

/// Open relative to the mount without the client following any symlink:
/// whatever lies outside SOURCE can then only be reached by the daemon.
fn open_nofollow(mnt: &OwnedFd, path: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
    rustix::fs::openat2(
        mnt,
        path,
        flags | OFlags::CLOEXEC,
        // openat2 refuses a mode without O_CREAT.
        if flags.contains(OFlags::CREATE) {
            Mode::from_raw_mode(0o644)
        } else {
            Mode::empty()
        },
        ResolveFlags::NO_SYMLINKS,
    )
}

#[derive(Default, Debug)]
struct RaceCounts {
    reads_inside: u64,
    eloop: u64,
    creates: u64,
    renames: u64,
    leaf_creates: u64,
    leaf_eexist: u64,
}

#[test]
fn symlink_swaps_in_source_never_lead_the_daemon_outside() {
    let dir = scratch();
    let out = outside(dir.path());
    let t = dir.path().join("t");
    let _tmp = tmpfs(&t);
    let src = t.join("src");
    std::fs::create_dir_all(src.join("name")).unwrap();
    std::fs::write(src.join("name/passwd"), b"inside").unwrap();
    std::fs::write(src.join("name/a"), b"a").unwrap();
    std::fs::write(src.join("r"), b"r").unwrap();
    std::fs::create_dir(src.join("leafdir")).unwrap();
    std::os::unix::fs::symlink(&out, src.join("name.alt")).unwrap();
    let mnt = dir.path().join("mnt");
    // No caching: every walk makes the kernel look the name up again.
    let mut m = passthrough(
        &src,
        &mnt,
        &["-o", "timeout=0"],
        &dir.path().join("daemon.log"),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(stop.clone());
    // Directly in SOURCE: `name` flips between the real directory and a
    // symlink to `outside`; `leafdir/leaf` between absent and a dangling
    // symlink into `outside`.
    let swapper = {
        let (src, stop) = (src.clone(), stop.clone());
        std::thread::spawn(move || {
            let d =
                rustix::fs::open(&src, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
            let leaf_target = src
                .parent()
                .unwrap()
                .parent()
                .unwrap()
                .join("outside/created");
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                rustix::fs::renameat_with(&d, "name", &d, "name.alt", RenameFlags::EXCHANGE)
                    .unwrap();
                let _ = rustix::fs::symlinkat(&leaf_target, &d, "leafdir/leaf");
                swaps += 1;
                std::thread::yield_now();
                let _ = rustix::fs::unlinkat(&d, "leafdir/leaf", AtFlags::empty());
            }
            swaps
        })
    };
    let client = {
        let (mnt, stop) = (mnt.clone(), stop.clone());
        std::thread::spawn(move || {
            let mfd =
                rustix::fs::open(&mnt, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
            let target = out_bytes(&mnt);
            let mut c = RaceCounts::default();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match open_nofollow(&mfd, "name/passwd", OFlags::RDONLY) {
                    Ok(fd) => {
                        let mut s = Vec::new();
                        std::fs::File::from(fd).read_to_end(&mut s).unwrap();
                        assert_ne!(s, MARKER, "read the outside file through the mount");
                        assert_eq!(s, b"inside");
                        c.reads_inside += 1;
                    }
                    Err(Errno::LOOP) => c.eloop += 1,
                    Err(_) => {}
                }
                if open_nofollow(
                    &mfd,
                    &format!("name/x-{i}"),
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
                )
                .is_ok()
                {
                    c.creates += 1;
                }
                if let Ok(d) = open_nofollow(&mfd, "name", OFlags::PATH | OFlags::DIRECTORY) {
                    let _ = rustix::fs::mkdirat(&d, format!("m-{i}"), Mode::from_raw_mode(0o755));
                    if rustix::fs::renameat(&d, "a", &d, "b").is_ok() {
                        c.renames += 1;
                        rustix::fs::renameat(&d, "b", &d, "a").unwrap();
                    }
                    if rustix::fs::renameat(&mfd, "r", &d, "r").is_ok() {
                        c.renames += 1;
                        rustix::fs::renameat(&d, "r", &mfd, "r").unwrap();
                    }
                    if let Ok(st) = rustix::fs::statat(&d, "passwd", AtFlags::SYMLINK_NOFOLLOW) {
                        assert_eq!(st.st_size, 6, "stat of the outside file through the mount");
                    }
                }
                match open_nofollow(&mfd, "leafdir/leaf", OFlags::WRONLY | OFlags::CREATE) {
                    Ok(_) => {
                        c.leaf_creates += 1;
                        let _ = rustix::fs::unlinkat(&mfd, "leafdir/leaf", AtFlags::empty());
                    }
                    Err(Errno::EXIST) => c.leaf_eexist += 1,
                    Err(_) => {}
                }
                if let Ok(l) = rustix::fs::readlinkat(&mfd, "name", Vec::new()) {
                    assert_eq!(l.as_bytes(), target, "symlink target as stored");
                }
            }
            c
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let c = within("the client to stop", Duration::from_secs(10), move || {
        client.join()
    })
    .expect("client thread");
    let swaps = swapper.join().expect("swapper thread");
    eprintln!("{swaps} swaps, {c:?}");

    assert_outside_untouched(&out);
    // Both states of `name` were seen through the mount, so the race ran.
    assert!(swaps > 100, "{swaps} swaps");
    assert!(c.reads_inside > 0 && c.eloop > 0, "{c:?}");
    assert!(
        c.creates > 0 && c.renames > 0 && c.leaf_creates > 0,
        "{c:?}"
    );
    // Every file the client created is in SOURCE's real directory.
    let real = if src.join("name").is_symlink() {
        src.join("name.alt")
    } else {
        src.join("name")
    };
    let made = names(&real).iter().filter(|n| n.starts_with("x-")).count() as u64;
    assert_eq!(made, c.creates, "creates through the mount found in SOURCE");
    assert_eq!(std::fs::read(real.join("a")).unwrap(), b"a");
    assert_eq!(std::fs::read(src.join("r")).unwrap(), b"r");
    m.assert_alive("the symlink races");
}

/// The target of `name.alt`: `outside`, a sibling of the mountpoint.
fn out_bytes(mnt: &Path) -> Vec<u8> {
    mnt.parent()
        .unwrap()
        .join("outside")
        .as_os_str()
        .as_bytes()
        .to_vec()
}

/// The fd number at which the daemon inherits a directory fd of `outside`.
const DAEMON_OUTSIDE_FD: i32 = 60;

#[test]
fn magic_links_in_source_are_never_resolved_by_the_daemon() {
    let dir = scratch();
    let out = outside(dir.path());
    let t = dir.path().join("t");
    let _tmp = tmpfs(&t);
    let src = t.join("src");
    std::fs::create_dir(&src).unwrap();
    // Each resolves to `outside` if the daemon follows it: its root, its
    // cwd (set to `outside`) and an fd it inherits.
    let links = [
        ("root", format!("/proc/self/root{}", out.display())),
        ("cwd", "/proc/self/cwd".to_string()),
        ("fd", format!("/proc/self/fd/{DAEMON_OUTSIDE_FD}")),
        (
            "thread-fd",
            format!("/proc/thread-self/fd/{DAEMON_OUTSIDE_FD}"),
        ),
    ];
    for (name, target) in &links {
        std::os::unix::fs::symlink(target, src.join(name)).unwrap();
    }
    let out_dir =
        rustix::fs::open(&out, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    let out_raw = out_dir.as_raw_fd();
    let mnt = dir.path().join("mnt");
    let mut m = passthrough_with(
        &src,
        &mnt,
        &["-o", "timeout=0"],
        &dir.path().join("daemon.log"),
        |cmd| {
            cmd.current_dir(&out);
            // SAFETY: between fork and exec only dup2/fcntl, which are
            // async-signal-safe; the fd stays open in the parent meanwhile.
            unsafe {
                cmd.pre_exec(move || {
                    if out_raw == DAEMON_OUTSIDE_FD {
                        libc::fcntl(out_raw, libc::F_SETFD, 0);
                    } else if libc::dup2(out_raw, DAEMON_OUTSIDE_FD) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
    );
    // The daemon really holds `outside` at that number.
    let pid = m.daemon().id();
    let held = std::fs::read_link(format!("/proc/{pid}/fd/{DAEMON_OUTSIDE_FD}")).unwrap();
    assert_eq!(held, out);
    let out_meta = std::fs::metadata(&out).unwrap();

    let mfd = rustix::fs::open(&mnt, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
    let stamp = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 0,
        },
    };
    for (name, target) in &links {
        let p = mnt.join(name);
        // Looked up as the symlink it is, its target text verbatim.
        let meta = std::fs::symlink_metadata(&p).unwrap();
        assert!(
            meta.file_type().is_symlink(),
            "{name}: {:?}",
            meta.file_type()
        );
        assert_eq!(std::fs::read_link(&p).unwrap(), Path::new(target), "{name}");
        // Without the client following symlinks, nothing lies behind it.
        let below = format!("{name}/passwd");
        assert_eq!(
            open_nofollow(&mfd, &below, OFlags::RDONLY).err(),
            Some(Errno::LOOP),
            "{below}"
        );
        let r = rustix::fs::openat2(
            &mfd,
            below.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH,
        );
        assert_eq!(r.err(), Some(Errno::XDEV), "{below} beneath the mount");
        // Operations on the link itself act on the link in SOURCE.
        rustix::fs::chownat(
            CWD,
            p.as_path(),
            Some(rustix::fs::Uid::from_raw(4242)),
            Some(rustix::fs::Gid::from_raw(4242)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
        rustix::fs::utimensat(CWD, p.as_path(), &stamp, AtFlags::SYMLINK_NOFOLLOW).unwrap();
        rustix::fs::lsetxattr(
            p.as_path(),
            "trusted.idfuse-faults",
            b"1",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let hard = format!("{name}.hard");
        rustix::fs::linkat(&mfd, *name, &mfd, hard.as_str(), AtFlags::empty()).unwrap();
        let s = std::fs::symlink_metadata(src.join(name)).unwrap();
        assert!(s.file_type().is_symlink());
        assert_eq!(
            (s.uid(), s.gid(), s.mtime(), s.nlink()),
            (4242, 4242, 1_000_000_000, 2),
            "{name} in SOURCE"
        );
        let mut v = [0u8; 8];
        let n = rustix::fs::lgetxattr(src.join(name), "trusted.idfuse-faults", &mut v[..]).unwrap();
        assert_eq!(&v[..n], b"1");
        assert_eq!(
            std::fs::read_link(src.join(&hard)).unwrap(),
            Path::new(target)
        );
    }
    // `outside` is as it was: same owner, times, names, no xattr.
    let now = std::fs::metadata(&out).unwrap();
    assert_eq!(
        (
            now.uid(),
            now.gid(),
            now.mtime(),
            now.mtime_nsec(),
            now.nlink()
        ),
        (
            out_meta.uid(),
            out_meta.gid(),
            out_meta.mtime(),
            out_meta.mtime_nsec(),
            out_meta.nlink()
        )
    );
    let mut v = [0u8; 8];
    assert_eq!(
        rustix::fs::lgetxattr(&out, "trusted.idfuse-faults", &mut v[..]).err(),
        Some(Errno::NODATA)
    );
    assert_outside_untouched(&out);
    drop(out_dir);
    m.assert_alive("the magic links");
}
