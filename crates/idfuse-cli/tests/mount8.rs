//! idfuse as mount(8), fstab and systemd meet it: `mount -t fuse.idfuse`,
//! an fstab line mounted by its mountpoint, and a transient unit from
//! `systemd-mount`; `umount` ends the daemon each time.
//!
//! Each test runs in a private mount namespace of its own thread, where an
//! overlay on /usr/sbin holds `mount.fuse.idfuse` → the binary under test,
//! so neither the machine's helper (if installed) nor /etc/fstab is used
//! or changed.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_idfuse");

/// The mount namespace of this test's thread, with our helper in /usr/sbin.
/// Dropping it unmounts what the test left (lazily) and removes the scratch
/// directory; the namespace dies with the thread.
struct Private {
    dir: tempfile::TempDir,
    mounts: Vec<PathBuf>,
}

impl Private {
    fn new() -> Private {
        common::private_mount_namespace();
        let dir = tempfile::Builder::new()
            .prefix("idfuse-mount8.")
            .tempdir()
            .unwrap();
        let (upper, work) = (dir.path().join("upper"), dir.path().join("work"));
        std::fs::create_dir(&upper).unwrap();
        std::fs::create_dir(&work).unwrap();
        let sbin = std::fs::canonicalize("/usr/sbin").unwrap();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            sbin.display(),
            upper.display(),
            work.display()
        );
        run_ok(
            Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", &opts])
                .arg(&sbin),
        );
        let p = Private {
            dir,
            mounts: vec![sbin.clone()],
        };
        let helper = sbin.join("mount.fuse.idfuse");
        let _ = std::fs::remove_file(&helper);
        std::os::unix::fs::symlink(BIN, &helper).unwrap();
        p
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        let info = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap_or_default();
        let root = self.dir.path().to_string_lossy().into_owned();
        for line in info.lines().rev() {
            if let Some(target) = line.split(' ').nth(4) {
                if target.starts_with(&root) {
                    let _ = rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH);
                }
            }
        }
        for m in self.mounts.iter().rev() {
            let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn run_ok(cmd: &mut Command) -> Output {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// The source and fs type of the mount at `path`, from mountinfo.
fn mount_at(path: &Path) -> Option<(String, String, String)> {
    let info = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap_or_default();
    let p = path.to_string_lossy().into_owned();
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (f.get(4) == Some(&p.as_str())).then(|| {
            (
                f.get(sep + 2).unwrap_or(&"").to_string(),
                f.get(sep + 1).unwrap_or(&"").to_string(),
                f.get(5).unwrap_or(&"").to_string(),
            )
        })
    })
}

/// Pids of idfuse daemons serving `mnt` (their command line names it).
fn daemons_for(mnt: &Path) -> Vec<u32> {
    let want = mnt.as_os_str().as_encoded_bytes().to_vec();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_ours = args
            .first()
            .is_some_and(|a0| a0.ends_with(b"idfuse") || a0.ends_with(b"mount.fuse.idfuse"));
        if is_ours && args.contains(&want.as_slice()) {
            pids.push(pid);
        }
    }
    pids
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    // Hang detection only: a busy machine may take its time.
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `umount` ends the daemon, and nothing stays mounted.
fn umount_stops_daemon(mnt: &Path) {
    assert!(
        !daemons_for(mnt).is_empty(),
        "no idfuse daemon serves {}",
        mnt.display()
    );
    run_ok(Command::new("umount").arg(mnt));
    assert!(
        mount_at(mnt).is_none(),
        "{} still mounted after umount",
        mnt.display()
    );
    wait_until("the daemon to exit after umount", || {
        daemons_for(mnt).is_empty()
    });
}

#[test]
fn mount_t_fuse_idfuse_memfs_and_passthrough_with_idmap() {
    let p = Private::new();
    let mnt = p.mkdir("mem");
    run_ok(
        Command::new("mount")
            .args(["-t", "fuse.idfuse", "memfs"])
            .arg(&mnt)
            .args([
                "-o",
                "defaults,nofail,_netdev,noauto,x-systemd.automount,x-systemd.device-timeout=5",
            ]),
    );
    let (source, fstype, _) = mount_at(&mnt).expect("memfs mounted");
    assert_eq!((source.as_str(), fstype.as_str()), ("memfs", "fuse.idfuse"));
    std::fs::write(mnt.join("f"), b"abc").unwrap();
    assert_eq!(std::fs::read(mnt.join("f")).unwrap(), b"abc");
    umount_stops_daemon(&mnt);

    // passthrough:DIR with an idmap in the same step.
    let src = p.mkdir("src");
    std::fs::write(src.join("by-root"), b"x").unwrap();
    std::fs::write(src.join("by-1000"), b"x").unwrap();
    rustix::fs::chown(
        src.join("by-1000"),
        Some(rustix::fs::Uid::from_raw(1000)),
        Some(rustix::fs::Gid::from_raw(1000)),
    )
    .unwrap();
    let view = p.mkdir("view");
    let source = format!("passthrough:{}", src.display());
    run_ok(
        Command::new("mount")
            .args(["-t", "fuse.idfuse", "-o", "idmap=b:0:100000:65536", &source])
            .arg(&view),
    );
    let (shown, _, opts) = mount_at(&view).expect("passthrough mounted");
    assert_eq!(shown, source);
    assert!(
        opts.contains("idmapped"),
        "mount options {opts}: not idmapped"
    );
    let m = std::fs::metadata(view.join("by-root")).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (100000, 100000),
        "by-root through the view"
    );
    let m = std::fs::metadata(view.join("by-1000")).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (101000, 101000),
        "by-1000 through the view"
    );
    umount_stops_daemon(&view);
}

#[test]
fn fstab_line_mounts_by_mountpoint() {
    let p = Private::new();
    let src = p.mkdir("data");
    std::fs::write(src.join("f"), b"x").unwrap();
    let mnt = p.mkdir("fstab-view");
    // A private fstab (mount -T), so /etc/fstab is neither read nor changed.
    let fstab = p.path("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# as in /etc/fstab\npassthrough:{} {} fuse.idfuse idmap=b:0:100000:65536,nofail,_netdev,x-systemd.requires=local-fs.target 0 0\n",
            src.display(),
            mnt.display()
        ),
    )
    .unwrap();
    run_ok(Command::new("mount").arg("-T").arg(&fstab).arg(&mnt));
    let (source, fstype, opts) = mount_at(&mnt).expect("fstab line mounted");
    assert_eq!(source, format!("passthrough:{}", src.display()));
    assert_eq!(fstype, "fuse.idfuse");
    assert!(
        opts.contains("idmapped"),
        "mount options {opts}: not idmapped"
    );
    assert_eq!(std::fs::metadata(mnt.join("f")).unwrap().uid(), 100000);
    // mount -a recognises the line as mounted and does not stack another.
    run_ok(Command::new("mount").arg("-T").arg(&fstab).arg("-a"));
    let stacked = std::fs::read_to_string("/proc/thread-self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(&*mnt.to_string_lossy()))
        .count();
    assert_eq!(stacked, 1, "mount -a mounted the fstab line a second time");
    umount_stops_daemon(&mnt);
}

#[test]
fn systemd_mount_transient_unit() {
    let pid1 = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    if pid1.trim() != "systemd" {
        println!(
            "skipped: systemd-mount needs systemd as PID 1, and PID 1 here is `{}`",
            pid1.trim()
        );
        return;
    }
    // systemd mounts in the host's namespace, where our private helper is
    // not visible: the installed one must be this build.
    let helper = Path::new("/usr/sbin/mount.fuse.idfuse");
    let same = std::fs::metadata(helper)
        .ok()
        .zip(std::fs::metadata(BIN).ok())
        .is_some_and(|(a, b)| (a.dev(), a.ino()) == (b.dev(), b.ino()));
    if !same {
        println!(
            "skipped: systemd mounts through {} and that is not this build ({BIN}); run scripts/setup.sh first",
            helper.display()
        );
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("idfuse-sdmount.")
        .tempdir()
        .unwrap();
    let mnt = dir.path().join("m");
    std::fs::create_dir(&mnt).unwrap();
    struct Stop(PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("systemd-mount")
                .arg("--umount")
                .arg(&self.0)
                .output();
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
    let _stop = Stop(mnt.clone());
    run_ok(
        Command::new("systemd-mount")
            .args([
                "--no-block=no",
                "-t",
                "fuse.idfuse",
                "-o",
                "idmap=b:0:100000:65536",
                "memfs",
            ])
            .arg(&mnt),
    );
    let (source, fstype, opts) = mount_at(&mnt).expect("systemd-mount mounted");
    assert_eq!((source.as_str(), fstype.as_str()), ("memfs", "fuse.idfuse"));
    assert!(
        opts.contains("idmapped"),
        "mount options {opts}: not idmapped"
    );
    run_ok(Command::new("systemd-mount").arg("--umount").arg(&mnt));
    assert!(
        mount_at(&mnt).is_none(),
        "still mounted after systemd-mount --umount"
    );
    wait_until("the daemon to exit", || daemons_for(&mnt).is_empty());
}

#[test]
fn bad_source_is_explained_through_mount() {
    let p = Private::new();
    let mnt = p.mkdir("m");
    let o = run(Command::new("mount")
        .args(["-t", "fuse.idfuse", "nosuch"])
        .arg(&mnt));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("memfs or passthrough:DIR"),
        "mount said: {err}"
    );
    assert!(mount_at(&mnt).is_none());
}
