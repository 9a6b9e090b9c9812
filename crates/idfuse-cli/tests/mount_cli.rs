//! `idfuse mount` as a user meets it: bad input is explained, the daemon
//! detaches and ends on unmount, signals unmount cleanly, `--idmap` makes
//! the view atomically, and an unprivileged user mounts via fusermount3.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_idfuse");

fn idfuse(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run idfuse")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn is_mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let p = path.to_string_lossy().to_string();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unmounts on drop (lazily, so a hung daemon cannot hang the test) and
/// kills the foreground daemon we started, by pid.
struct Mounted {
    path: PathBuf,
    child: Option<Child>,
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

fn foreground(args: &[&str], mnt: &Path) -> Mounted {
    let child = Command::new(BIN)
        .args(args)
        .arg("--foreground")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn idfuse");
    let m = Mounted {
        path: mnt.to_path_buf(),
        child: Some(child),
    };
    wait_until("the mount", Duration::from_secs(10), || is_mounted(mnt));
    m
}

#[test]
fn missing_mountpoint_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let o = idfuse(&["mount", "memfs", dir.path().join("nope").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
}

#[test]
fn file_as_mountpoint_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b"").unwrap();
    let o = idfuse(&["mount", "memfs", f.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a directory"), "{}", stderr(&o));
}

#[test]
fn unknown_option_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let o = idfuse(&[
        "mount",
        "memfs",
        dir.path().to_str().unwrap(),
        "-o",
        "ro,bogus=1",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("unknown mount option `bogus=1`") && e.contains("known options"),
        "{e}"
    );
    assert!(!is_mounted(dir.path()));
}

#[test]
fn idmap_without_default_permissions_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = idfuse(&[
        "mount",
        "memfs",
        dir.path().to_str().unwrap(),
        "-o",
        "nodefault_permissions",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("default_permissions") && e.contains("ECONNREFUSED"),
        "{e}"
    );
    assert!(!is_mounted(dir.path()));
}

#[test]
fn machine_without_dev_fuse_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    // A private mount namespace whose /dev lacks the fuse device.
    let script = format!(
        "mount -t tmpfs none /dev && exec {BIN} mount memfs {} --foreground",
        dir.path().display()
    );
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("/dev/fuse") && e.contains("modprobe fuse"),
        "{e}"
    );
}

#[test]
fn malformed_idmap_spec_is_explained_before_mounting() {
    let dir = tempfile::tempdir().unwrap();
    let o = idfuse(&[
        "mount",
        "memfs",
        dir.path().to_str().unwrap(),
        "--idmap",
        "b:0:100000",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--idmap b:0:100000"), "{}", stderr(&o));
    assert!(!is_mounted(dir.path()));
}

#[test]
fn daemon_detaches_and_ends_on_unmount() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path();
    let o = idfuse(&["mount", "memfs", mnt.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _guard = Mounted {
        path: mnt.to_path_buf(),
        child: None,
    };
    assert!(is_mounted(mnt), "mounted when the command returns");
    let fstype = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(mnt.to_str().unwrap()))
        .map(|l| {
            l.split(" - ")
                .nth(1)
                .unwrap_or("")
                .split(' ')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap();
    assert_eq!(fstype, "fuse.idfuse");
    std::fs::write(mnt.join("f"), b"data").unwrap();
    assert_eq!(std::fs::read(mnt.join("f")).unwrap(), b"data");
    let daemon = find_daemon(mnt).expect("the daemon process");
    let st = Command::new("umount").arg(mnt).status().unwrap();
    assert!(st.success());
    wait_until("the daemon to exit", Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{daemon}")).exists()
            || std::fs::read_to_string(format!("/proc/{daemon}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
    });
}

/// The pid of the detached daemon serving `mnt` (ours: its command line
/// names the mountpoint).
fn find_daemon(mnt: &Path) -> Option<u32> {
    let want = mnt.to_string_lossy().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        (args.first().is_some_and(|a| a.ends_with("idfuse")) && args.contains(&want)).then_some(pid)
    })
}

#[test]
fn sigterm_and_sigint_unmount_and_exit_zero() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let mut m = foreground(
            &["mount", "memfs", dir.path().to_str().unwrap()],
            dir.path(),
        );
        let child = m.child.as_mut().unwrap();
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(child.id() as i32, sig) };
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "daemon did not exit on signal {sig}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "exit status after signal {sig}: {status}");
        assert!(!is_mounted(dir.path()), "unmounted after signal {sig}");
    }
}

#[test]
fn idmap_option_makes_the_view_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let _m = foreground(
        &[
            "mount",
            "memfs",
            dir.path().to_str().unwrap(),
            "--idmap",
            "b:0:100000:65536",
        ],
        dir.path(),
    );
    // memfs's root is owned by 0:0 in the filesystem: 100000 through the view.
    let meta = std::fs::metadata(dir.path()).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (100000, 100000));
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(dir.path().to_str().unwrap()))
        .unwrap();
    assert!(line.contains("idmapped"), "{line}");
    // Host root has no mapping in this view, so it cannot create anything
    // (EOVERFLOW); the container's root (host 100000) can.
    assert!(std::fs::create_dir(dir.path().join("by-host-root")).is_err());
    let home = dir.path().join("home");
    let st = Command::new("setpriv")
        .args([
            "--reuid=100000",
            "--regid=100000",
            "--clear-groups",
            "mkdir",
            "-m",
            "777",
        ])
        .arg(&home)
        .status()
        .unwrap();
    assert!(st.success());
    let meta = std::fs::metadata(&home).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (100000, 100000),
        "container root's directory"
    );
    let st = Command::new("setpriv")
        .args([
            "--reuid=100123",
            "--regid=100123",
            "--clear-groups",
            "touch",
        ])
        .arg(home.join("f"))
        .status()
        .unwrap();
    assert!(st.success());
    let meta = std::fs::metadata(home.join("f")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (100123, 100123),
        "seen through the view"
    );
    // A caller with no mapping cannot create anything (the VFS says EOVERFLOW).
    let out = Command::new("setpriv")
        .args(["--reuid=5000", "--regid=5000", "--clear-groups", "touch"])
        .arg(dir.path().join("unmapped"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Value too large"),
        "an unmapped caller's create through the view: expected EOVERFLOW, got {} / {err}",
        out.status
    );
}

#[test]
fn unprivileged_user_mounts_through_fusermount3() {
    if Command::new("fusermount3").arg("-V").output().is_err() {
        panic!("fusermount3 is missing: the setup script installs the Debian package fuse3");
    }
    let _dev = DevFuseOpen::widen();
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::os::unix::fs::chown(&mnt, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut child = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "mount",
            "memfs",
        ])
        .arg(&mnt)
        .args(["-o", "noallow_other", "--foreground"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _m = Mounted {
        path: mnt.clone(),
        child: None,
    };
    let start = Instant::now();
    while !is_mounted(&mnt) {
        if let Some(st) = child.try_wait().unwrap() {
            let mut e = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut e).unwrap();
            panic!("unprivileged mount failed ({st}): {e}");
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no mount");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The mounting user can use it; unmount as that user with fusermount3.
    let st = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(format!(
            "echo hi > {0}/f && cat {0}/f && fusermount3 -u {0}",
            mnt.display()
        ))
        .output()
        .unwrap();
    assert!(
        st.status.success() && String::from_utf8_lossy(&st.stdout).trim() == "hi",
        "the mounting user writes, reads back and unmounts: {} / {} / {}",
        st.status,
        String::from_utf8_lossy(&st.stdout),
        String::from_utf8_lossy(&st.stderr)
    );
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "daemon did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

/// /dev/fuse is 0600 on this machine while distributions ship it 0666,
/// which unprivileged mounts (fusermount3 opens it as the user) need. Widen
/// it for the test and restore the original mode afterwards.
///
/// Other test runs on this machine (a second test command, the conformance
/// suite's J scenarios) widen it too. All take turns under the conformance
/// suite's machine lock, and the first to widen records the original mode
/// beside it, so a run killed while the device was open is repaired by the
/// next one instead of taking 0666 for the original.
struct DevFuseOpen {
    mode: u32,
    _turn: std::fs::File,
}

const MACHINE_LOCK: &str = "/run/lock/idfuse-conformance.lock";
const ORIGINAL_MODE: &str = "/run/lock/idfuse-conformance.dev-fuse-mode.orig";

impl DevFuseOpen {
    fn widen() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let turn = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(MACHINE_LOCK)
            .expect("open the machine lock");
        rustix::fs::flock(&turn, rustix::fs::FlockOperation::LockExclusive)
            .expect("take the machine lock");
        let now = std::fs::metadata("/dev/fuse")
            .expect("stat /dev/fuse")
            .permissions()
            .mode()
            & 0o7777;
        let mode = match std::fs::read_to_string(ORIGINAL_MODE) {
            Ok(saved) => u32::from_str_radix(saved.trim(), 8).unwrap_or(now),
            Err(_) => {
                std::fs::write(ORIGINAL_MODE, format!("{now:o}")).expect("record /dev/fuse's mode");
                now
            }
        };
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666))
            .expect("widen /dev/fuse to 0666");
        Self { mode, _turn: turn }
    }
}

impl Drop for DevFuseOpen {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(self.mode)).is_ok()
        {
            let _ = std::fs::remove_file(ORIGINAL_MODE);
        }
    }
}

#[test]
fn unprivileged_user_runs_passthrough_in_its_own_user_namespace() {
    let _dev = DevFuseOpen::widen();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (src, mnt) = (dir.path().join("src"), dir.path().join("mnt"));
    for d in [&src, &mnt] {
        std::fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(65534), Some(65534)).unwrap();
    }
    let script = format!(
        "unshare -Ur -m sh -c '{BIN} mount passthrough {s} {m} && echo hi > {m}/f && mkdir {m}/d && cat {m}/f && umount {m}'",
        s = src.display(),
        m = mnt.display()
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    let so = String::from_utf8_lossy(&out.stdout);
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {so}\nstderr: {se}");
    assert_eq!(so.trim(), "hi");
    // Files belong to the user on the host; passthrough I/O needs
    // CAP_SYS_ADMIN in the initial namespace, so the daemon said it falls back.
    for n in ["f", "d"] {
        let m = std::fs::metadata(src.join(n)).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534), "{n}");
    }
    assert!(!is_mounted(&mnt));
}
