//! `idfuse mount overlay` with real mounts: bad layouts are refused by name,
//! an upper written by idfuse mounts under kernel overlayfs with the same
//! view and the reverse (metadata in trusted.overlay.* and, with
//! `userxattr`, in user.overlay.*), two containers share one image through two
//! idmapped overlays, an overlay without an upper is read-only, and a
//! daemon killed during the copy-up of a 256 MiB file leaves the file
//! wholly old or wholly new.
//!
//! Each test runs in a private mount namespace of its own thread, with its
//! layers on a tmpfs in a temp directory (kernel overlayfs keeps
//! `trusted.overlay.*` xattrs on the upper, which tmpfs stores for root).
//! Daemons run in the foreground and get SIGKILL when the test's thread
//! ends; everything mounted is detached and the directory removed on drop.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_idfuse");

/// Hang detection only: a busy machine may take its time.
const PATIENCE: Duration = Duration::from_secs(120);

/// A private mount namespace for this test's thread and a scratch directory
/// with a tmpfs for the layers. Drop detaches every mount under it, kills
/// the daemons still running and removes the directory.
struct Scratch {
    _dir: tempfile::TempDir,
    /// `dir`, canonical: the refusals name canonical paths.
    root: PathBuf,
    daemons: Vec<Child>,
}

impl Scratch {
    fn new() -> Scratch {
        common::private_mount_namespace();
        let dir = tempfile::Builder::new()
            .prefix("idfuse-overlay.")
            .tempdir()
            .expect("temp dir");
        // Callers with mapped uids walk down to the mount points.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod scratch");
        let root = std::fs::canonicalize(dir.path()).expect("canonical temp dir");
        let s = Scratch {
            _dir: dir,
            root,
            daemons: Vec::new(),
        };
        s.tmpfs("fs");
        s
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// A directory (with its parents) under the scratch directory.
    fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }

    /// A fresh tmpfs at `rel`.
    fn tmpfs(&self, rel: &str) -> PathBuf {
        self.tmpfs_with(rel, c"mode=0755")
    }

    /// A fresh tmpfs at `rel` with these mount options.
    fn tmpfs_with(&self, rel: &str, opts: &std::ffi::CStr) -> PathBuf {
        let p = self.mkdir(rel);
        rustix::mount::mount(
            "tmpfs",
            &p,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            Some(opts),
        )
        .unwrap_or_else(|e| panic!("mount tmpfs at {}: {e}", p.display()));
        p
    }

    /// Start `idfuse mount overlay MNT -o OPTS [extra]` in the foreground
    /// and wait until MNT is mounted; the daemon's stderr goes to a file
    /// that is shown if it ends early.
    fn overlay(&mut self, mnt: &Path, opts: &str, extra: &[&str]) {
        let log = self.path(&format!(
            "daemon-{}.log",
            mnt.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let err = File::create(&log).expect("daemon log");
        let mut cmd = Command::new(BIN);
        cmd.args(["mount", "overlay"])
            .arg(mnt)
            .args(["-o", opts])
            .args(extra)
            .arg("--foreground")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        // SAFETY: prctl in the child before exec is async-signal-safe; the
        // daemon dies with the thread that started it (this test).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn idfuse mount overlay");
        let start = Instant::now();
        while !is_mounted(mnt) {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "idfuse mount overlay {} -o {opts} {extra:?} ended ({st}) before mounting: {}",
                    mnt.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{} was not mounted",
                mnt.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.daemons.push(child);
    }

    /// Unmount `mnt` and wait for its daemon to end with status 0.
    fn unmount(&mut self, mnt: &Path) {
        run_ok(Command::new("umount").arg(mnt));
        assert!(
            !is_mounted(mnt),
            "{} still mounted after umount",
            mnt.display()
        );
        let want = mnt.as_os_str().as_encoded_bytes();
        let Some(i) = self.daemons.iter().position(|c| {
            std::fs::read(format!("/proc/{}/cmdline", c.id()))
                .is_ok_and(|cmd| cmd.split(|b| *b == 0).any(|a| a == want))
        }) else {
            return;
        };
        let mut child = self.daemons.remove(i);
        let start = Instant::now();
        let st = loop {
            if let Some(st) = child.try_wait().expect("wait for the daemon") {
                break st;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the daemon of {} did not end",
                mnt.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            st.success(),
            "the daemon of {} ended with {st}",
            mnt.display()
        );
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let info = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap_or_default();
        let root = self.root.to_string_lossy().into_owned();
        for line in info.lines().rev() {
            if let Some(target) = line.split(' ').nth(4) {
                if target.starts_with(&root) {
                    let _ = rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH);
                }
            }
        }
        for c in &mut self.daemons {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn is_mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap_or_default();
    let p = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*p))
}

fn run_ok(cmd: &mut Command) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Run a shell command as `uid:gid` (no supplementary groups).
fn sh_as(uid: u32, gid: u32, script: &str) -> Output {
    run_ok(
        Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .args(["--clear-groups", "sh", "-c", script]),
    )
}

fn write(p: &Path, data: &str, mode: u32, uid: u32, gid: u32) {
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
    }
    std::fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    own(p, mode, uid, gid);
}

fn dir(p: &Path, mode: u32, uid: u32, gid: u32) {
    std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    own(p, mode, uid, gid);
}

/// Give `p` this mode and owner.
fn own(p: &Path, mode: u32, uid: u32, gid: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}

/// What a tree shows: for every path (relative, "." for the root), its
/// type, mode, owner and content (file bytes, link target, device).
fn walk(root: &Path) -> BTreeMap<String, String> {
    fn go(root: &Path, rel: &Path, out: &mut BTreeMap<String, String>) {
        let p = root.join(rel);
        let m =
            std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
        let ft = m.file_type();
        let what = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_file() {
            format!(
                "file {:?}",
                String::from_utf8_lossy(
                    &std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
                )
            )
        } else if ft.is_symlink() {
            format!(
                "symlink -> {}",
                std::fs::read_link(&p)
                    .unwrap_or_else(|e| panic!("readlink {}: {e}", p.display()))
                    .display()
            )
        } else if ft.is_char_device() {
            format!("chr {:x}", m.rdev())
        } else {
            "other".to_string()
        };
        let key = if rel.as_os_str().is_empty() {
            ".".to_string()
        } else {
            rel.display().to_string()
        };
        out.insert(
            key,
            format!("{what} {:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid()),
        );
        if ft.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&p)
                .unwrap_or_else(|e| panic!("readdir {}: {e}", p.display()))
                .map(|e| e.expect("readdir entry").file_name())
                .collect();
            names.sort();
            for n in names {
                go(root, &rel.join(n), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    go(root, Path::new(""), &mut out);
    out
}

fn assert_same_view(what: &str, a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) {
    let mut diffs = Vec::new();
    for (k, va) in a {
        match b.get(k) {
            Some(vb) if vb == va => {}
            Some(vb) => diffs.push(format!("{k}: {va} / {vb}")),
            None => diffs.push(format!("{k}: {va} / missing")),
        }
    }
    for (k, vb) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
        diffs.push(format!("{k}: missing / {vb}"));
    }
    assert!(diffs.is_empty(), "{what}:\n  {}", diffs.join("\n  "));
}

/// Two lower layers (top first) with a file shadowed by the top, files and
/// a directory merged from both, odd owners and modes.
fn image(s: &Scratch) -> (PathBuf, PathBuf) {
    let (l1, l2) = (s.mkdir("fs/l1"), s.mkdir("fs/l2"));
    write(&l2.join("base"), "base from l2\n", 0o644, 0, 0);
    write(&l2.join("shadowed"), "from l2\n", 0o644, 0, 0);
    dir(&l2.join("dir"), 0o755, 1000, 1000);
    write(&l2.join("dir/a"), "a\n", 0o600, 1000, 1000);
    write(&l2.join("dir/b"), "b\n", 0o600, 1000, 1000);
    dir(&l2.join("tree/deep"), 0o750, 7, 8);
    write(&l2.join("tree/deep/leaf"), "leaf\n", 0o640, 7, 8);
    write(&l1.join("shadowed"), "from l1\n", 0o644, 0, 0);
    write(&l1.join("mod"), "original\n", 0o640, 1234, 5678);
    write(&l1.join("gone"), "to be deleted\n", 0o644, 0, 0);
    dir(&l1.join("dir"), 0o755, 1000, 1000);
    write(&l1.join("dir/x"), "x\n", 0o644, 1000, 1000);
    std::os::unix::fs::symlink("base", l1.join("link-to-base")).expect("symlink in l1");
    (l1, l2)
}

/// Changes a container makes: new files, a copy-up of data and one of
/// metadata, a deleted lower file (whiteout), a lower directory removed and
/// made again (opaque), a symlink.
fn change(mnt: &Path) {
    let p = |n: &str| mnt.join(n);
    write(&p("new"), "new file\n", 0o600, 42, 43);
    dir(&p("newdir"), 0o700, 42, 43);
    write(&p("newdir/inner"), "inner\n", 0o644, 42, 43);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(p("mod"))
        .expect("open a lower file for append");
    f.write_all(b"appended\n").expect("append");
    drop(f);
    std::fs::set_permissions(p("base"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod a lower file");
    std::fs::remove_file(p("gone")).expect("unlink a lower file");
    for n in ["x", "a", "b"] {
        std::fs::remove_file(p("dir").join(n)).expect("empty the merged dir");
    }
    std::fs::remove_dir(p("dir")).expect("rmdir the merged dir");
    dir(&p("dir"), 0o770, 5, 6);
    write(&p("dir/fresh"), "fresh\n", 0o644, 5, 6);
    std::os::unix::fs::symlink("new", p("link-to-new")).expect("symlink");
}

/// The view `change` leaves, spelled out: the test's own statement of what
/// both overlays must show (and a check that `walk` sees what it should).
fn check_changed(what: &str, v: &BTreeMap<String, String>) {
    let want = [
        ("base", "file \"base from l2\\n\" 600 0:0"),
        ("shadowed", "file \"from l1\\n\" 644 0:0"),
        ("mod", "file \"original\\nappended\\n\" 640 1234:5678"),
        ("new", "file \"new file\\n\" 600 42:43"),
        ("newdir", "dir 700 42:43"),
        ("newdir/inner", "file \"inner\\n\" 644 42:43"),
        ("dir", "dir 770 5:6"),
        ("dir/fresh", "file \"fresh\\n\" 644 5:6"),
        ("tree/deep", "dir 750 7:8"),
        ("tree/deep/leaf", "file \"leaf\\n\" 640 7:8"),
        ("link-to-new", "symlink -> new 777 0:0"),
        ("link-to-base", "symlink -> base 777 0:0"),
    ];
    for (k, w) in want {
        assert_eq!(v.get(k).map(String::as_str), Some(w), "{what}: {k}");
    }
    for gone in ["gone", "dir/x", "dir/a", "dir/b"] {
        assert!(
            !v.contains_key(gone),
            "{what}: {gone} is still listed: {v:?}"
        );
    }
}

/// Where an overlay keeps its own metadata: `trusted.overlay.*` (the
/// default), or `user.overlay.*` with the `userxattr` option (kernel
/// overlayfs's form for unprivileged mounts, which idfuse takes too).
#[derive(Debug, Clone, Copy)]
enum Xattrs {
    Trusted,
    User,
}

impl Xattrs {
    fn opaque(self) -> &'static str {
        match self {
            Xattrs::Trusted => "trusted.overlay.opaque",
            Xattrs::User => "user.overlay.opaque",
        }
    }
    fn other(self) -> Xattrs {
        match self {
            Xattrs::Trusted => Xattrs::User,
            Xattrs::User => Xattrs::Trusted,
        }
    }
    /// The mount option, for idfuse and the kernel alike.
    fn option(self) -> &'static str {
        match self {
            Xattrs::Trusted => "",
            Xattrs::User => ",userxattr",
        }
    }
}

/// The on-disk form kernel overlayfs uses: a whiteout is a char device 0/0,
/// an opaque directory has OVERLAY.opaque = "y" in the chosen namespace
/// (and nothing in the other), a copy-up keeps the lower owner and mode.
fn check_upper_format(what: &str, upper: &Path, x: Xattrs) {
    let m = std::fs::symlink_metadata(upper.join("gone"))
        .unwrap_or_else(|e| panic!("{what}: no whiteout for gone in the upper: {e}"));
    assert!(
        m.file_type().is_char_device() && m.rdev() == 0,
        "{what}: upper/gone should be a char device 0/0, is mode {:o} rdev {:x}",
        m.mode(),
        m.rdev()
    );
    let mut buf = [0u8; 8];
    let n = rustix::fs::lgetxattr(upper.join("dir"), x.opaque(), &mut buf)
        .unwrap_or_else(|e| panic!("{what}: upper/dir has no {}: {e}", x.opaque()));
    assert_eq!(&buf[..n], b"y", "{what}: {} of upper/dir", x.opaque());
    let other = rustix::fs::lgetxattr(upper.join("dir"), x.other().opaque(), &mut buf);
    assert_eq!(
        other.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(rustix::io::Errno::NODATA),
        "{what}: upper/dir should have no {}",
        x.other().opaque()
    );
    let m = std::fs::metadata(upper.join("mod")).expect("copied-up mod in the upper");
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (1234, 5678, 0o640),
        "{what}: upper/mod"
    );
}

/// Kernel overlayfs on the same layers. metacopy stays off: a metadata-only
/// copy-up is a kernel format idfuse does not read.
fn kernel_overlay(lowers: &[&Path], upper: &Path, work: &Path, mnt: &Path, x: Xattrs) {
    let lowerdir: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},metacopy=off,index=off{}",
        lowerdir.join(":"),
        upper.display(),
        work.display(),
        x.option()
    );
    run_ok(
        Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(mnt),
    );
}

fn idfuse_opts(lowers: &[&Path], upper: &Path, work: &Path) -> String {
    let lowerdir: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir.join(":"),
        upper.display(),
        work.display()
    )
}

/// Layers and an upper written through idfuse, then mounted by kernel
/// overlayfs: the same listing, contents, owners and modes.
fn idfuse_then_kernel(x: Xattrs) {
    let mut s = Scratch::new();
    let (l1, l2) = image(&s);
    let (upper, work) = (s.mkdir("fs/upper"), s.mkdir("fs/work"));
    let mnt = s.mkdir("mnt");
    let opts = idfuse_opts(&[&l1, &l2], &upper, &work) + x.option();
    s.overlay(&mnt, &opts, &[]);
    change(&mnt);
    let ours = walk(&mnt);
    check_changed("idfuse overlay", &ours);
    s.unmount(&mnt);
    check_upper_format("upper written by idfuse", &upper, x);
    assert_eq!(
        std::fs::read_to_string(l1.join("mod")).expect("read l1/mod"),
        "original\n",
        "the lower file is untouched"
    );

    kernel_overlay(&[&l1, &l2], &upper, &work, &mnt, x);
    let kernel = walk(&mnt);
    run_ok(Command::new("umount").arg(&mnt));
    assert_same_view(
        "idfuse's view / kernel overlayfs's view of it",
        &ours,
        &kernel,
    );
}

/// The reverse: an upper written by kernel overlayfs, mounted by idfuse.
fn kernel_then_idfuse(x: Xattrs) {
    let mut s = Scratch::new();
    let (l1, l2) = image(&s);
    let (upper, work) = (s.mkdir("fs/upper"), s.mkdir("fs/work"));
    let mnt = s.mkdir("mnt");
    kernel_overlay(&[&l1, &l2], &upper, &work, &mnt, x);
    change(&mnt);
    let kernel = walk(&mnt);
    check_changed("kernel overlayfs", &kernel);
    run_ok(Command::new("umount").arg(&mnt));
    check_upper_format("upper written by kernel overlayfs", &upper, x);

    let opts = idfuse_opts(&[&l1, &l2], &upper, &work) + x.option();
    s.overlay(&mnt, &opts, &[]);
    let ours = walk(&mnt);
    s.unmount(&mnt);
    assert_same_view(
        "kernel overlayfs's view / idfuse's view of it",
        &kernel,
        &ours,
    );
}

#[test]
fn an_upper_written_by_idfuse_mounts_under_kernel_overlayfs() {
    idfuse_then_kernel(Xattrs::Trusted);
}

#[test]
fn an_upper_written_by_kernel_overlayfs_mounts_under_idfuse() {
    kernel_then_idfuse(Xattrs::Trusted);
}

#[test]
fn with_userxattr_an_upper_written_by_idfuse_mounts_under_kernel_overlayfs() {
    idfuse_then_kernel(Xattrs::User);
}

#[test]
fn with_userxattr_an_upper_written_by_kernel_overlayfs_mounts_under_idfuse() {
    kernel_then_idfuse(Xattrs::User);
}

#[test]
fn two_containers_share_one_image_each_with_its_own_idmap() {
    let mut s = Scratch::new();
    let image = s.mkdir("fs/image");
    dir(&image, 0o755, 0, 0);
    write(&image.join("etc/os-release"), "image\n", 0o644, 0, 0);
    dir(&image.join("etc"), 0o755, 0, 0);
    dir(&image.join("home/user"), 0o755, 1000, 1000);
    write(
        &image.join("home/user/profile"),
        "profile\n",
        0o644,
        1000,
        1000,
    );
    dir(&image.join("tmp"), 0o1777, 0, 0);

    let containers = [("a", 100000u32), ("b", 200000u32)];
    let mut mnts = Vec::new();
    for (name, base) in containers {
        let upper = s.mkdir(&format!("fs/upper-{name}"));
        let work = s.mkdir(&format!("fs/work-{name}"));
        let mnt = s.mkdir(&format!("mnt-{name}"));
        s.overlay(
            &mnt,
            &idfuse_opts(&[&image], &upper, &work),
            &["--idmap", &format!("b:0:{base}:65536")],
        );
        mnts.push((name, base, mnt, upper));
    }

    // Both at once: each shows the image with its own ids.
    for (name, base, mnt, _) in &mnts {
        for (rel, uid) in [
            (".", 0),
            ("etc/os-release", 0),
            ("home/user", 1000),
            ("home/user/profile", 1000),
        ] {
            let m = std::fs::symlink_metadata(mnt.join(rel))
                .unwrap_or_else(|e| panic!("stat {rel} through the overlay: {e}"));
            assert_eq!(
                (m.uid(), m.gid()),
                (base + uid, base + uid),
                "container {name}: owner of {rel} through its view"
            );
        }
    }

    // Each container's root and user write through their own view.
    for (name, base, mnt, _) in &mnts {
        let m = mnt.display();
        sh_as(
            *base,
            *base,
            &format!(
                "umask 022 && echo {name} > {m}/etc/hostname && echo {name} >> {m}/etc/os-release && mkdir {m}/root-of-{name}"
            ),
        );
        sh_as(
            base + 1000,
            base + 1000,
            &format!("umask 022 && echo {name} > {m}/home/user/notes && echo {name} >> {m}/home/user/profile"),
        );
    }

    for (name, base, mnt, upper) in &mnts {
        let other = if *name == "a" { "b" } else { "a" };
        // Through the view: its own changes with its own ids.
        let v = walk(mnt);
        let own = |uid: u32| format!("{}:{}", base + uid, base + uid);
        for (rel, want) in [
            ("etc/hostname", format!("file \"{name}\\n\" 644 {}", own(0))),
            (
                "etc/os-release",
                format!("file \"image\\n{name}\\n\" 644 {}", own(0)),
            ),
            (
                &format!("root-of-{name}") as &str,
                format!("dir 755 {}", own(0)),
            ),
            (
                "home/user/notes",
                format!("file \"{name}\\n\" 644 {}", own(1000)),
            ),
            (
                "home/user/profile",
                format!("file \"profile\\n{name}\\n\" 644 {}", own(1000)),
            ),
        ] {
            assert_eq!(
                v.get(rel),
                Some(&want),
                "container {name}: {rel} through its view"
            );
        }
        assert!(
            !v.contains_key(&format!("root-of-{other}")),
            "container {name} sees container {other}'s directory: {v:?}"
        );
        // In its upper: fs ids, copy-ups with the image's owners.
        let u = walk(upper);
        for (rel, want) in [
            ("etc/hostname", format!("file \"{name}\\n\" 644 0:0")),
            (
                "etc/os-release",
                format!("file \"image\\n{name}\\n\" 644 0:0"),
            ),
            (
                &format!("root-of-{name}") as &str,
                "dir 755 0:0".to_string(),
            ),
            (
                "home/user/notes",
                format!("file \"{name}\\n\" 644 1000:1000"),
            ),
            (
                "home/user/profile",
                format!("file \"profile\\n{name}\\n\" 644 1000:1000"),
            ),
            ("home/user", "dir 755 1000:1000".to_string()),
        ] {
            assert_eq!(
                u.get(rel),
                Some(&want),
                "container {name}: {rel} in its upper"
            );
        }
        assert!(
            !u.contains_key(&format!("root-of-{other}")),
            "container {name}'s upper holds container {other}'s directory: {u:?}"
        );
    }
    // The image itself is untouched.
    assert_eq!(
        std::fs::read_to_string(image.join("etc/os-release")).expect("read the image's os-release"),
        "image\n"
    );
    assert!(
        !image.join("etc/hostname").exists(),
        "a write reached the image"
    );

    for (_, _, mnt, _) in &mnts {
        s.unmount(mnt);
    }
}

#[test]
fn an_overlay_without_upper_is_read_only() {
    let mut s = Scratch::new();
    let (l1, l2) = image(&s);
    let mnt = s.mkdir("mnt");
    s.overlay(
        &mnt,
        &format!("lowerdir={}:{}", l1.display(), l2.display()),
        &[],
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("shadowed")).expect("read shadowed through the overlay"),
        "from l1\n"
    );
    let erofs = |what: &str, r: std::io::Result<()>| {
        let e = r.expect_err(&format!("{what} on a read-only overlay succeeded"));
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
    };
    erofs(
        "open a lower file for write",
        std::fs::OpenOptions::new()
            .write(true)
            .open(mnt.join("mod"))
            .map(drop),
    );
    erofs("create", File::create(mnt.join("new")).map(drop));
    erofs("mkdir", std::fs::create_dir(mnt.join("newdir")));
    erofs("unlink", std::fs::remove_file(mnt.join("gone")));
    erofs(
        "rename",
        std::fs::rename(mnt.join("base"), mnt.join("moved")),
    );
    erofs(
        "chmod",
        std::fs::set_permissions(mnt.join("base"), std::fs::Permissions::from_mode(0o600)),
    );
    erofs("symlink", std::os::unix::fs::symlink("x", mnt.join("sym")));
    s.unmount(&mnt);
    assert_eq!(
        std::fs::read_to_string(l1.join("mod")).expect("read l1/mod"),
        "original\n",
        "the lower layer is untouched"
    );
}

/// `idfuse mount overlay MNT -o OPTS` that must be refused: the exit status
/// is non-zero, stderr names `names` (directories, the fix) and nothing is
/// mounted at MNT. The command is not in the foreground, so a wrongly
/// accepted layout would return once mounted rather than hang.
fn refused(mnt: &Path, opts: &str, names: &[&str]) {
    let o = Command::new(BIN)
        .args(["mount", "overlay"])
        .arg(mnt)
        .args(["-o", opts])
        .stdin(Stdio::null())
        .output()
        .expect("run idfuse mount overlay");
    let err = String::from_utf8_lossy(&o.stderr);
    let mounted = is_mounted(mnt);
    if mounted {
        let _ = rustix::mount::unmount(mnt, rustix::mount::UnmountFlags::DETACH);
    }
    assert!(!mounted, "-o {opts}: mounted although the layout is bad");
    assert!(
        !o.status.success(),
        "-o {opts}: exit status {} ({err})",
        o.status
    );
    for n in names {
        assert!(
            err.contains(n),
            "-o {opts}: the refusal does not name {n:?}: {err}"
        );
    }
}

#[test]
fn bad_layouts_are_refused_by_name_and_nothing_is_mounted() {
    let s = Scratch::new();
    let lower = s.mkdir("fs/lower");
    let upper = s.mkdir("fs/upper");
    let work = s.mkdir("fs/work");
    let nested_work = s.mkdir("fs/upper/work");
    s.tmpfs("other");
    let other_work = s.mkdir("other/work");
    let mnt = s.mkdir("mnt");
    let mnt_in_lower = s.mkdir("fs/lower/mnt");
    let missing = s.path("fs/no-such-layer");
    let (l, u, w, ms) = (
        lower.display().to_string(),
        upper.display().to_string(),
        work.display().to_string(),
        missing.display().to_string(),
    );

    refused(&mnt, &format!("lowerdir={l}:{ms}"), &[&ms, "create"]);
    refused(
        &mnt,
        &format!("lowerdir={l},upperdir={ms},workdir={w}"),
        &[&ms, "upperdir"],
    );
    refused(
        &mnt,
        &format!("lowerdir={l},upperdir={u}"),
        &[&u, "workdir"],
    );
    refused(
        &mnt,
        &format!("lowerdir={l},workdir={w}"),
        &[&w, "upperdir"],
    );
    refused(
        &mnt,
        &format!(
            "lowerdir={l},upperdir={u},workdir={}",
            nested_work.display()
        ),
        &[&nested_work.display().to_string(), &u, "inside"],
    );
    refused(
        &mnt,
        &format!("lowerdir={l},upperdir={u},workdir={}", other_work.display()),
        &[&other_work.display().to_string(), &u, "same filesystem"],
    );
    refused(
        &mnt_in_lower,
        &format!("lowerdir={l},upperdir={u},workdir={w}"),
        &[
            &mnt_in_lower.display().to_string(),
            &l,
            "outside every layer",
        ],
    );
    let many = vec![l.as_str(); 501].join(":");
    refused(&mnt, &format!("lowerdir={many}"), &["501", "500"]);
    // The option and its form (the fix) are named, whoever words it.
    refused(&mnt, "lowerdir=", &["lowerdir=DIR"]);
    refused(&mnt, &format!("upperdir={u},workdir={w}"), &["lowerdir"]);
}

/// `lowerdir+=DIR` once per layer (kernel 6.8's form) stacks the layers in
/// the order given, the path taken as it is (a colon in it is part of the
/// name), and the overlay shows what `lowerdir=L1:L2` shows.
#[test]
fn lowerdir_add_stacks_one_layer_per_option() {
    let mut s = Scratch::new();
    let (l1, l2) = image(&s);
    let top = s.path("fs/l:1");
    std::fs::rename(&l1, &top).expect("rename l1 to a name with a colon");
    let (upper, work) = (s.mkdir("fs/upper"), s.mkdir("fs/work"));
    let mnt = s.mkdir("mnt");
    let opts = format!(
        "lowerdir+={},lowerdir+={},upperdir={},workdir={}",
        top.display(),
        l2.display(),
        upper.display(),
        work.display()
    );
    s.overlay(&mnt, &opts, &[]);
    let added = walk(&mnt);
    change(&mnt);
    check_changed("lowerdir+= overlay", &walk(&mnt));
    s.unmount(&mnt);
    assert_eq!(
        added.get("shadowed").map(String::as_str),
        Some("file \"from l1\\n\" 644 0:0"),
        "the first lowerdir+= is on top"
    );

    // The same layers as one lowerdir= (the colon escaped), read-only.
    let spec = format!(
        "lowerdir={}:{}",
        top.display().to_string().replace(':', "\\:"),
        l2.display()
    );
    s.overlay(&mnt, &spec, &[]);
    let listed = walk(&mnt);
    s.unmount(&mnt);
    assert_same_view(
        "lowerdir+= / lowerdir= over the same layers",
        &added,
        &listed,
    );
}

#[test]
fn lowerdir_and_lowerdir_add_do_not_mix_and_passthrough_options_are_refused() {
    let s = Scratch::new();
    let (l1, l2) = image(&s);
    let mnt = s.mkdir("mnt");
    let (a, b) = (l1.display().to_string(), l2.display().to_string());
    for opts in [
        format!("lowerdir={a},lowerdir+={b}"),
        format!("lowerdir+={a},lowerdir={b}"),
    ] {
        refused(&mnt, &opts, &["cannot be mixed", "lowerdir+=DIR"]);
    }
    refused(
        &mnt,
        &format!("lowerdir+={a},lowerdir+="),
        &["lowerdir+=DIR"],
    );
    refused(
        &mnt,
        &format!("lowerdir+={a},datadir+={b}"),
        &["datadir+=", "data-only"],
    );
    for opt in ["cache=auto", "inode_handles=always"] {
        let name = opt.split('=').next().unwrap();
        refused(
            &mnt,
            &format!("lowerdir={a},{opt}"),
            &[name, "option of `idfuse mount passthrough`"],
        );
    }
    refused(
        &mnt,
        &format!("lowerdir={a},writeback_cache"),
        &["writeback_cache"],
    );
}

/// `idfuse mount overlay --help` names the overlay's options and not the
/// passthrough's; the passthrough's help keeps them.
#[test]
fn overlay_help_lists_only_its_options() {
    let help = |fs: &str| {
        let o = run_ok(Command::new(BIN).args(["mount", fs, "--help"]));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let ov = help("overlay");
    for want in [
        "lowerdir=DIR[:DIR...]",
        "lowerdir+=DIR",
        "upperdir=DIR",
        "workdir=DIR",
        "userxattr",
        "entry_timeout=SECS",
        "attr_timeout=SECS",
        "timeout=SECS",
        "default_permissions",
        "allow_other",
        "fsname=NAME",
    ] {
        assert!(ov.contains(want), "overlay --help lacks {want}:\n{ov}");
    }
    for not in ["cache=auto", "inode_handles=auto", "fanotify", "SOURCE"] {
        assert!(!ov.contains(not), "overlay --help names {not}:\n{ov}");
    }
    let pt = help("passthrough");
    for want in ["cache=auto|always|never", "inode_handles=auto|never|always"] {
        assert!(pt.contains(want), "passthrough --help lacks {want}:\n{pt}");
    }
    let mem = help("memfs");
    assert!(
        !mem.contains("inode_handles") && mem.contains("default_permissions"),
        "memfs --help:\n{mem}"
    );
}

// ---------------------------------------------------------------------
// SIGKILL during a copy-up

/// The size of the lower file whose copy-up is interrupted.
const BIG: usize = 256 << 20;
/// Where the write that triggers the copy-up lands, and its length.
const BIG_WRITE_AT: usize = 100 << 20;
const BIG_WRITE_LEN: usize = 64 << 10;

/// The lower file's bytes: each 8-byte word from its index.
fn big_old() -> Vec<u8> {
    let mut v = vec![0u8; BIG];
    for (i, w) in v.chunks_mut(8).enumerate() {
        let x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x0123_4567_89ab_cdef;
        w.copy_from_slice(&x.to_le_bytes());
    }
    v
}

/// What the write puts at `BIG_WRITE_AT`.
fn big_patch() -> Vec<u8> {
    (0..BIG_WRITE_LEN).map(|i| (i % 251) as u8 ^ 0xa5).collect()
}

/// A 64-bit hash of `data`, 8 bytes at a time.
fn hash(data: &[u8]) -> u64 {
    data.chunks(8).fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        (h ^ u64::from_le_bytes(w))
            .wrapping_mul(0x0100_0000_01b3)
            .rotate_left(29)
    }) ^ data.len() as u64
}

/// How the client's write ended.
#[derive(Debug)]
enum WriteEnd {
    /// Opened, written and fsync'ed.
    Done,
    /// The open (which copies up) failed.
    OpenFailed(std::io::Error),
    /// Opened (copied up), then the write or fsync failed.
    WriteFailed(std::io::Error),
}

fn write_patch(path: &Path) -> WriteEnd {
    use std::os::unix::fs::FileExt;
    let f = match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) => return WriteEnd::OpenFailed(e),
    };
    match f
        .write_all_at(&big_patch(), BIG_WRITE_AT as u64)
        .and_then(|()| f.sync_all())
    {
        Ok(()) => WriteEnd::Done,
        Err(e) => WriteEnd::WriteFailed(e),
    }
}

/// The error a client of a killed daemon may see: ENOTCONN, or (over
/// io_uring, a request caught in the ring's teardown) ECANCELED, or
/// ECONNABORTED.
fn dead_daemon_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED)
    )
}

/// A client opens a 256 MiB lower file for writing, which copies it up;
/// the daemon is killed by SIGKILL while the copy is being built in
/// WORKDIR/work (when the test sees the temporary file there; if the copy
/// is too quick to be seen, whenever the kill lands). Whatever the moment:
/// the client gets an error of a dead connection or its write completed;
/// the dead mount unmounts; the upper holds no partial copy (the file is
/// there wholly old or wholly new, or not at all); remounted on the same
/// layers, the overlay shows the file wholly old or wholly new (new if the
/// client's write and fsync succeeded, old if its open failed), no debris
/// of the killed copy-up is visible, and WORKDIR/work was cleared; the
/// write then succeeds.
fn sigkill_during_copy_up(passthrough: bool) {
    let mut s = Scratch::new();
    s.tmpfs_with("big", c"mode=0755,size=1g");
    let (l1, l2) = (s.mkdir("big/l1"), s.mkdir("big/l2"));
    let (upper, work) = (s.mkdir("big/upper"), s.mkdir("big/work"));
    let mnt = s.mkdir("mnt");
    let old = big_old();
    std::fs::write(l2.join("big"), &old).expect("write the lower file");
    std::fs::write(l1.join("small"), b"small\n").expect("write a small lower file");
    let mut new = old.clone();
    new[BIG_WRITE_AT..BIG_WRITE_AT + BIG_WRITE_LEN].copy_from_slice(&big_patch());
    let (h_old, h_new) = (hash(&old), hash(&new));
    assert_ne!(h_old, h_new);
    drop((old, new));

    let opts = idfuse_opts(&[&l1, &l2], &upper, &work);
    let pt = if passthrough { "true" } else { "false" };
    s.overlay(&mnt, &opts, &["--passthrough", pt]);
    let pid = s.daemons.last().expect("the daemon").id();
    assert_eq!(
        std::fs::read(mnt.join("small")).expect("read through the mount"),
        b"small\n"
    );

    let client = {
        let p = mnt.join("big");
        std::thread::spawn(move || write_patch(&p))
    };
    // Kill as soon as the copy is being built: a file in WORKDIR/work.
    let ww = work.join("work");
    let start = Instant::now();
    let mut seen = None;
    while seen.is_none() && !client.is_finished() && start.elapsed() < PATIENCE {
        seen = std::fs::read_dir(&ww).ok().and_then(|d| {
            d.filter_map(Result::ok)
                .find_map(|e| e.metadata().ok().map(|m| (e.file_name(), m.len())))
        });
    }
    // SAFETY: SIGKILL to our own child by pid; it is not reaped yet (it is
    // in s.daemons), so the pid cannot have been reused.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let daemon = s.daemons.last_mut().expect("the daemon");
    let st = daemon.wait().expect("wait for the killed daemon");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(libc::SIGKILL),
        "{st}"
    );
    s.daemons.pop();
    match &seen {
        Some((name, len)) => eprintln!(
            "passthrough={passthrough}: killed while {name:?} was {len} bytes in WORKDIR/work"
        ),
        None => eprintln!(
            "passthrough={passthrough}: the copy-up was not seen in progress; killed after it"
        ),
    }

    let deadline = Instant::now() + PATIENCE;
    while !client.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the client still blocked after the daemon was killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let end = client.join().expect("the client thread");
    eprintln!("passthrough={passthrough}: the client: {end:?}");
    match &end {
        WriteEnd::Done => {}
        WriteEnd::OpenFailed(e) | WriteEnd::WriteFailed(e) => {
            assert!(dead_daemon_error(e), "the client's error: {e}")
        }
    }
    // The mount is dead, and unmounts.
    let r = std::fs::symlink_metadata(mnt.join("never-looked-up"));
    assert!(
        r.as_ref().is_err_and(dead_daemon_error),
        "lookup on the dead mount: {r:?}"
    );
    run_ok(Command::new("umount").arg(&mnt));
    assert!(!is_mounted(&mnt), "the dead mount is gone");

    // No partial copy ever reaches the upper: the rename into place is the
    // last step of a copy-up.
    let on_disk = std::fs::read(upper.join("big")).ok().map(|d| hash(&d));
    assert!(
        on_disk.is_none() || on_disk == Some(h_old) || on_disk == Some(h_new),
        "the upper holds a partial copy"
    );
    let debris: Vec<String> = std::fs::read_dir(&ww)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    eprintln!("passthrough={passthrough}: left in WORKDIR/work: {debris:?}");

    // Remounted on the same layers: the file wholly old or wholly new, and
    // nothing else.
    s.overlay(&mnt, &opts, &["--passthrough", pt]);
    let left: Vec<String> = std::fs::read_dir(&ww)
        .expect("read WORKDIR/work")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.is_empty(),
        "WORKDIR/work not cleared at mount: {left:?}"
    );
    let mut names: Vec<String> = std::fs::read_dir(&mnt)
        .expect("readdir the merged root")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["big", "small"], "the merged view");
    assert_eq!(
        std::fs::metadata(mnt.join("big")).expect("stat big").len(),
        BIG as u64
    );
    let h = hash(&std::fs::read(mnt.join("big")).expect("read big after the remount"));
    let what = if h == h_old {
        "old"
    } else if h == h_new {
        "new"
    } else {
        panic!("big is neither wholly old nor wholly new after the kill")
    };
    match &end {
        WriteEnd::Done => assert_eq!(what, "new", "a completed, fsync'ed write was lost"),
        WriteEnd::OpenFailed(_) => assert_eq!(what, "old", "a failed open changed the file"),
        WriteEnd::WriteFailed(_) => {}
    }
    eprintln!("passthrough={passthrough}: after the remount big is wholly {what}");
    // The copy-up works again after the killed one.
    let again = write_patch(&mnt.join("big"));
    assert!(
        matches!(again, WriteEnd::Done),
        "the write after the remount: {again:?}"
    );
    assert_eq!(
        hash(&std::fs::read(mnt.join("big")).expect("read big after the write")),
        h_new
    );
    s.unmount(&mnt);
    assert_eq!(
        hash(&std::fs::read(upper.join("big")).expect("read the upper copy")),
        h_new,
        "the upper copy"
    );
    assert_eq!(
        hash(&std::fs::read(l2.join("big")).expect("read the lower file")),
        h_old,
        "the lower file is untouched"
    );
}

#[test]
fn sigkill_during_copy_up_of_a_256_mib_file() {
    sigkill_during_copy_up(true);
}

#[test]
fn sigkill_during_copy_up_of_a_256_mib_file_without_fuse_passthrough() {
    sigkill_during_copy_up(false);
}
