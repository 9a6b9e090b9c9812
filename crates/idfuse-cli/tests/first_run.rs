//! What a new user meets on a first run: errors printed once and naming
//! the real cause, no silent stacking on a mountpoint, option lists that
//! match the parser, and `du` that tells the truth about memfs.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_idfuse");

fn idfuse(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run idfuse")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mounts_at(path: &Path) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let p = path.to_string_lossy();
    info.lines()
        .filter(|l| l.split(' ').nth(4) == Some(&*p))
        .count()
}

/// Detaches the daemons' mounts at `path` on drop (lazily, so a hung
/// daemon cannot hang the test); a detached daemon exits once its mount
/// is gone.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        for _ in 0..4 {
            if mounts_at(&self.0) == 0 {
                break;
            }
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

#[test]
fn detach_failure_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().to_str().unwrap();
    let o = idfuse(&["mount", "memfs", mnt, "--idmap", "/proc/1/ns/nosuch"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(
        err.matches("/proc/1/ns/nosuch").count(),
        1,
        "the error should be printed once:\n{err}"
    );
    assert_eq!(mounts_at(dir.path()), 0);
}

#[test]
fn dev_fuse_permissions_are_named_not_allow_other() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mnt = dir.path().join("m");
    std::fs::create_dir(&mnt).unwrap();
    rustix::fs::chown(&mnt, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
    // A /dev/fuse at mode 0600, in a mount namespace of the command's own,
    // whatever mode the machine's device has.
    let node = dir.path().join("fuse");
    let script = format!(
        "mknod {node} c 10 229 && chmod 0600 {node} && mount --bind {node} /dev/fuse && \
         exec setpriv --reuid=65534 --regid=65534 --clear-groups {BIN} mount memfs {mnt} -o noallow_other",
        node = node.display(),
        mnt = mnt.display()
    );
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let _guard = Unmount(mnt.clone());
    assert!(!o.status.success(), "mounted anyway: {}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("/dev/fuse is mode 0600") && err.contains("chmod 0666 /dev/fuse"),
        "the error should name /dev/fuse's permissions and the fix:\n{err}"
    );
    assert!(
        !err.contains("user_allow_other"),
        "the error blames allow_other:\n{err}"
    );
}

#[test]
fn mountpoint_in_use_is_refused_unless_stacking_on_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("m");
    std::fs::create_dir(&mnt).unwrap();
    let m = mnt.to_str().unwrap();
    let _guard = Unmount(mnt.clone());
    let o = idfuse(&["mount", "memfs", m]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(mnt.join("first"), b"x").unwrap();

    let o = idfuse(&["mount", "memfs", m]);
    assert!(!o.status.success(), "stacked a second mount silently");
    let err = stderr(&o);
    assert!(
        err.contains("already a mountpoint") && err.contains("--stack"),
        "the refusal should say why and how to stack on purpose:\n{err}"
    );
    assert_eq!(mounts_at(&mnt), 1);
    assert!(mnt.join("first").exists(), "the first mount was hidden");

    let o = idfuse(&["mount", "memfs", m, "--stack"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(mounts_at(&mnt), 2);
    assert!(!mnt.join("first").exists(), "--stack did not mount on top");
}

#[test]
fn unknown_option_lists_every_option_the_parser_takes() {
    let dir = tempfile::tempdir().unwrap();
    let (src, mnt) = (dir.path().join("s"), dir.path().join("m"));
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let o = idfuse(&[
        "mount",
        "passthrough",
        src.to_str().unwrap(),
        mnt.to_str().unwrap(),
        "-o",
        "nosuchoption",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    let listed = err
        .split("known options: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no list of known options:\n{err}"));
    let listed: Vec<&str> = listed.trim().split(", ").collect();
    // Every listed option is accepted: each one mounts (and is unmounted).
    for opt in &listed {
        let example = opt
            .replace("=SECS", "=0.5")
            .replace("=N", "=131072")
            .replace("=NAME", "=x")
            .replace("=auto|never|always", "=auto");
        // Options that cannot mount with the defaults are still parsed;
        // what must not come back is "unknown mount option".
        let o = idfuse(&[
            "mount",
            "passthrough",
            src.to_str().unwrap(),
            mnt.to_str().unwrap(),
            "-o",
            &example,
            "--idmap-support",
            "false",
        ]);
        let _guard = Unmount(mnt.clone());
        assert!(
            !stderr(&o).contains("unknown mount option"),
            "-o {example} is listed but refused: {}",
            stderr(&o)
        );
        drop(_guard);
        let start = Instant::now();
        while mounts_at(&mnt) > 0 && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for want in [
        "entry_timeout=SECS",
        "attr_timeout=SECS",
        "timeout=SECS",
        "inode_handles=auto|never|always",
        "suid",
        "dev",
    ] {
        assert!(listed.contains(&want), "`{want}` missing from {listed:?}");
    }
}

#[test]
fn memfs_blocks_are_the_pages_held_as_on_tmpfs() {
    let dir = tempfile::tempdir().unwrap();
    let (mem, tmp) = (dir.path().join("mem"), dir.path().join("tmp"));
    std::fs::create_dir(&mem).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    let _g1 = Unmount(mem.clone());
    let _g2 = Unmount(tmp.clone());
    let o = idfuse(&["mount", "memfs", mem.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    rustix::mount::mount(
        "tmpfs",
        &tmp,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .expect("mount tmpfs");
    let mut seen = Vec::new();
    for root in [&mem, &tmp] {
        std::fs::write(root.join("three"), b"abc").unwrap();
        std::fs::write(root.join("hundred-k"), vec![7u8; 100 * 1024]).unwrap();
        let f = std::fs::File::create(root.join("sparse")).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"x", 1 << 20).unwrap();
        drop(f);
        std::os::unix::fs::symlink("short", root.join("short-link")).unwrap();
        std::os::unix::fs::symlink("l".repeat(300), root.join("long-link")).unwrap();
        let blocks = |n: &str| std::fs::symlink_metadata(root.join(n)).unwrap().blocks();
        seen.push([
            blocks("three"),
            blocks("hundred-k"),
            blocks("sparse"),
            blocks("short-link"),
            blocks("long-link"),
        ]);
    }
    assert_eq!(
        seen[0],
        [8, 200, 8, 0, 8],
        "memfs st_blocks (three, hundred-k, sparse, short-link, long-link)"
    );
    assert_eq!(seen[0], seen[1], "memfs vs tmpfs st_blocks");
}
