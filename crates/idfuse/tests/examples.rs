//! The examples in `examples/`, mounted for real: each runs as a child
//! process serving a fresh mountpoint, as a user would start it, and must
//! exit cleanly once unmounted. `notes` is also idmapped.
//!
//! `cargo test` builds the examples before it runs any test; when naming
//! only this test, build them first:
//! `cargo build --release -p idfuse --examples && cargo test --release -p idfuse --test examples`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use idfuse_idmap::{idmap_mount, IdMap, IdmapOptions, UserNamespace};

/// Hang detection only: nothing here is expected to take more than a
/// fraction of this, even on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// The binary cargo built for `examples/NAME.rs`, next to this test's own
/// directory (`target/PROFILE/deps/` → `target/PROFILE/examples/`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/PROFILE/deps");
    let bin = profile_dir.join("examples").join(name);
    assert!(
        bin.is_file(),
        "example `{name}` is not built at {}: run `cargo build -p idfuse --examples` with this \
         test's profile first (cargo test does it unless a single --test is named)",
        bin.display()
    );
    bin
}

fn is_mount_point(path: &Path) -> bool {
    let (Ok(dir), Some(parent)) = (std::fs::metadata(path), path.parent()) else {
        return false;
    };
    std::fs::metadata(parent).is_ok_and(|p| p.dev() != dir.dev())
}

/// An example serving a mountpoint of its own. Dropping it (also on a
/// failed assertion) detaches the mount and kills the child by pid.
struct Daemon {
    name: &'static str,
    child: Child,
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(name: &'static str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("idfuse-example-")
            .tempdir()
            .expect("temporary directory");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mountpoint");
        let child = Command::new(example(name))
            .arg(&mnt)
            .spawn()
            .expect("start the example");
        let mut daemon = Self {
            name,
            child,
            mnt,
            _dir: dir,
        };
        let start = Instant::now();
        while !is_mount_point(&daemon.mnt) {
            if let Some(status) = daemon.child.try_wait().expect("child status") {
                panic!("example `{name}` exited before mounting: {status}");
            }
            assert!(
                start.elapsed() < DEADLINE,
                "example `{name}` did not mount within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    fn path(&self, name: &str) -> PathBuf {
        self.mnt.join(name)
    }

    /// Unmount as a user would, and collect the child's exit status: a
    /// server must stop by itself once its mount is gone.
    fn stop(mut self) -> ExitStatus {
        rustix::mount::unmount(&self.mnt, rustix::mount::UnmountFlags::empty())
            .unwrap_or_else(|e| panic!("umount {}: {e}", self.mnt.display()));
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "example `{}` still runs {DEADLINE:?} after its unmount",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.mnt, rustix::mount::UnmountFlags::DETACH);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `sh -c script` as uid/gid with no supplementary groups; returns
/// whether it succeeded.
fn sh_as(uid: u32, gid: u32, script: &str, arg: &Path) -> bool {
    Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".into(),
            "sh".into(),
            "-c".into(),
            script.into(),
            "sh".into(),
        ])
        .arg(arg)
        .status()
        .expect("setpriv (util-linux)")
        .success()
}

#[test]
fn hello_serves_one_read_only_file() {
    let d = Daemon::start("hello");
    let names: Vec<String> = std::fs::read_dir(&d.mnt)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["hello"], "listing of the hello mount");
    let text = std::fs::read_to_string(d.path("hello")).expect("read hello");
    assert_eq!(text, "Hello from idfuse!\n");
    let md = std::fs::metadata(d.path("hello")).expect("stat hello");
    assert!(md.is_file(), "hello is a regular file: {md:?}");
    assert_eq!(md.permissions().mode() & 0o7777, 0o444);
    assert_eq!(md.len(), text.len() as u64, "size agrees with the content");
    let err = std::fs::write(d.mnt.join("other"), b"x").expect_err("a read-only mount");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "creating: {err}");
    assert!(
        std::fs::metadata(d.path("missing")).is_err(),
        "a name that does not exist"
    );
    let status = d.stop();
    assert!(status.success(), "hello after unmount: {status}");
}

#[test]
fn notes_idmapped_new_files_belong_to_the_mapped_owner() {
    let d = Daemon::start("notes");
    let work = tempfile::Builder::new()
        .prefix("idfuse-example-view-")
        .tempdir()
        .expect("temporary directory");
    let view = work.path().join("view");
    std::fs::create_dir(&view).expect("view directory");
    // uid/gid N on the filesystem shows as 100000 + N through the view.
    let map: IdMap = "b:0:100000:65536".parse().expect("map spec");
    let ns = UserNamespace::create(&map).expect("user namespace");
    let guard = idmap_mount(&d.mnt, &view, &ns, IdmapOptions::default())
        .expect("notes opts in to idmap, so its mount can be idmapped");

    // A process running as 100042:100043 creates and writes a note through
    // the view: the kernel maps its ids back and sends them as the Owner.
    assert!(
        sh_as(
            100042,
            100043,
            r#"printf 'buy milk' > "$1""#,
            &view.join("todo")
        ),
        "uid 100042 creating a note through the view"
    );
    let plain = std::fs::metadata(d.path("todo")).expect("stat through the plain mount");
    assert_eq!(
        (plain.uid(), plain.gid()),
        (42, 43),
        "owner stored by notes, seen through the plain mount"
    );
    let mapped = std::fs::metadata(view.join("todo")).expect("stat through the view");
    assert_eq!(
        (mapped.uid(), mapped.gid()),
        (100042, 100043),
        "owner seen through the view"
    );
    assert_eq!(
        std::fs::read_to_string(d.path("todo")).expect("read the note"),
        "buy milk"
    );

    // The kernel checks permissions with the mapped ids: the owner may
    // append, another mapped user may read (0644 after umask 022) but not
    // write, and an unmapped user cannot create through the view at all.
    assert!(sh_as(
        100042,
        100043,
        r#"printf ', eggs' >> "$1""#,
        &view.join("todo")
    ));
    assert_eq!(
        std::fs::read_to_string(d.path("todo")).expect("read the note"),
        "buy milk, eggs"
    );
    assert!(sh_as(
        100050,
        100050,
        r#"cat "$1" >/dev/null"#,
        &view.join("todo")
    ));
    assert!(
        !sh_as(100050, 100050, r#"printf x >> "$1""#, &view.join("todo")),
        "another user writing someone else's 0644 note through the view"
    );
    assert!(
        !sh_as(1, 1, r#"printf x > "$1""#, &view.join("stranger")),
        "uid 1 has no mapping in the view; the kernel refuses (EOVERFLOW)"
    );
    assert!(!d.path("stranger").exists());

    // Root on the plain mount creates as 0:0, shown as 100000 in the view.
    std::fs::write(d.path("from-root"), b"x").expect("create through the plain mount");
    let mapped = std::fs::metadata(view.join("from-root")).expect("stat through the view");
    assert_eq!((mapped.uid(), mapped.gid()), (100000, 100000));

    // chown through the view stores the filesystem's ids.
    std::os::unix::fs::chown(view.join("from-root"), Some(100007), Some(100008))
        .expect("chown through the view");
    let plain = std::fs::metadata(d.path("from-root")).expect("stat");
    assert_eq!(
        (plain.uid(), plain.gid()),
        (7, 8),
        "ids after chown via the view"
    );

    std::fs::remove_file(view.join("from-root")).expect("unlink through the view");
    assert!(!d.path("from-root").exists());

    drop(guard); // the view keeps the FUSE superblock alive
    let status = d.stop();
    assert!(status.success(), "notes after unmount: {status}");
}

#[test]
fn clock_readers_see_new_data_after_the_invalidation() {
    let d = Daemon::start("clock");
    let first = std::fs::read_to_string(d.path("tick")).expect("read tick");
    assert!(first.starts_with("tick "), "content: {first:?}");
    // The kernel caches the file for an hour and keeps its pages across
    // opens; only the example's notification lets a new value through.
    let start = Instant::now();
    let later = loop {
        let now = std::fs::read_to_string(d.path("tick")).expect("read tick");
        if now != first {
            break now;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "still {first:?} after {DEADLINE:?}: the cache was never invalidated"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let tick = |text: &str| -> u64 {
        let n = text.trim().strip_prefix("tick ");
        n.and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a tick: {text:?}"))
    };
    assert!(
        tick(&later) > tick(&first),
        "ticks only move forward: {first:?} then {later:?}"
    );
    let status = d.stop();
    assert!(status.success(), "clock after unmount: {status}");
}
