//! Real idmapped mounts on tmpfs and on ext4 on a loop device: owners match
//! the spec through the view, recursive clones cover submounts, every
//! refusal is explained, and FUSE servers that did not opt in are named.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use idfuse_idmap::*;

/// A mount made for the test, detached on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

fn tmpfs(dir: &Path) -> Mounted {
    rustix::mount::mount(
        "tmpfs",
        dir,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        Some(c"mode=0777"),
    )
    .expect("mount tmpfs");
    Mounted(dir.to_path_buf())
}

/// ext4 on a loop device; detaches the loop device on drop.
struct Ext4 {
    _mount: Mounted,
    loopdev: String,
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self._mount.0, rustix::mount::UnmountFlags::DETACH);
        let _ = Command::new("losetup").args(["-d", &self.loopdev]).status();
    }
}

fn ext4(work: &Path, dir: &Path) -> Ext4 {
    let img = work.join("ext4.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(64 << 20).unwrap();
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&img)
        .status()
        .expect("mkfs.ext4 (e2fsprogs)");
    assert!(st.success());
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&img)
        .output()
        .expect("losetup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let loopdev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let st = Command::new("mount")
        .arg(&loopdev)
        .arg(dir)
        .status()
        .unwrap();
    if !st.success() {
        let _ = Command::new("losetup").args(["-d", &loopdev]).status();
        panic!("mount ext4");
    }
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    Ext4 {
        _mount: Mounted(dir.to_path_buf()),
        loopdev,
    }
}

/// Create `name` in `dir` as uid/gid in a child; returns success.
fn create_as(dir: &Path, name: &str, uid: u32, gid: u32) -> bool {
    Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".into(),
            "touch".into(),
        ])
        .arg(dir.join(name))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn owners_follow_the_spec(src: &Path, view: &Path) {
    std::fs::write(src.join("by-root"), b"").unwrap();
    std::fs::write(src.join("by-123"), b"").unwrap();
    std::os::unix::fs::chown(src.join("by-123"), Some(123), Some(456)).unwrap();
    std::fs::write(src.join("by-7000"), b"").unwrap();
    std::os::unix::fs::chown(src.join("by-7000"), Some(7000), Some(7000)).unwrap();
    let spec = "b:0:100000:1000 u:5000:300000:5000 g:5000:400000:5000";
    let map: IdMap = spec.parse().unwrap();
    let ns = UserNamespace::create(&map).unwrap();
    let _g = idmap_mount(src, view, &ns, IdmapOptions::default()).expect("idmap");
    let md = |n: &str| {
        let m = std::fs::metadata(view.join(n)).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(md("by-root"), (100000, 100000), "through the view");
    assert_eq!(md("by-123"), (100123, 100456));
    assert_eq!(md("by-7000"), (302000, 402000), "second range");
    // A mapped caller creates: stored as the fs id.
    assert!(create_as(view, "new", 100042, 100043));
    let on_disk = std::fs::metadata(src.join("new")).unwrap();
    assert_eq!(
        (on_disk.uid(), on_disk.gid()),
        (42, 43),
        "stored with fs ids"
    );
    // An unmapped caller cannot create (EOVERFLOW in the VFS).
    assert!(!create_as(view, "nope", 1, 1));
    // --show reads the map back.
    let (u, g) = show(view).expect("show").expect("idmapped");
    assert_eq!(u.to_string(), "u:0:100000:1000 u:5000:300000:5000");
    assert_eq!(g.to_string(), "g:0:100000:1000 g:5000:400000:5000");
    assert!(show(src).unwrap().is_none(), "the source is not idmapped");
}

#[test]
fn tmpfs_owners_follow_the_spec() {
    let work = tempfile::tempdir().unwrap();
    let (src, view) = (work.path().join("src"), work.path().join("view"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&view).unwrap();
    let _t = tmpfs(&src);
    owners_follow_the_spec(&src, &view);
}

#[test]
fn ext4_owners_follow_the_spec() {
    let work = tempfile::tempdir().unwrap();
    let (src, view) = (work.path().join("src"), work.path().join("view"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&view).unwrap();
    let _e = ext4(work.path(), &src);
    owners_follow_the_spec(&src, &view);
    assert_eq!(can_idmap(&src), Verdict::Supported);
}

#[test]
fn recursive_mode_covers_submounts() {
    let work = tempfile::tempdir().unwrap();
    let (src, view) = (work.path().join("src"), work.path().join("view"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&view).unwrap();
    let _t = tmpfs(&src);
    std::fs::create_dir(src.join("sub")).unwrap();
    let _s = tmpfs(&src.join("sub"));
    std::fs::write(src.join("sub/f"), b"").unwrap();
    let ns = UserNamespace::create(&"b:0:100000:65536".parse().unwrap()).unwrap();
    {
        let _g = idmap_mount(&src, &view, &ns, IdmapOptions { recursive: true }).unwrap();
        assert_eq!(
            std::fs::metadata(view.join("sub/f")).unwrap().uid(),
            100000,
            "submount mapped"
        );
    }
    let _g = idmap_mount(&src, &view, &ns, IdmapOptions { recursive: false }).unwrap();
    assert!(
        !view.join("sub/f").exists(),
        "without --recursive the submount is not cloned"
    );
}

#[test]
fn refusals_are_explained() {
    let work = tempfile::tempdir().unwrap();
    let view = work.path().join("view");
    std::fs::create_dir_all(&view).unwrap();
    let ns = UserNamespace::create(&"b:0:100000:65536".parse().unwrap()).unwrap();
    // procfs does not support idmapped mounts.
    let v = can_idmap(Path::new("/proc"));
    let Verdict::Unsupported(r) = v else {
        panic!("/proc cannot be idmapped")
    };
    assert!(
        r.to_string()
            .contains("`proc` does not support idmapped mounts"),
        "{r}"
    );
    let e = idmap_mount(Path::new("/proc"), &view, &ns, IdmapOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not support idmapped mounts"), "{e}");
    // Already idmapped: re-idmapping the view itself.
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let _t = tmpfs(&src);
    let g = idmap_mount(&src, &view, &ns, IdmapOptions::default()).unwrap();
    let v = can_idmap(g.path());
    let Verdict::Unsupported(r) = v else {
        panic!("an idmapped mount cannot be idmapped again")
    };
    assert!(r.to_string().contains("already an idmapped mount"), "{r}");
    drop(g);
    // The initial user namespace is refused.
    let init = UserNamespace::open(Path::new("/proc/self/ns/user")).unwrap();
    let tree = clone_tree(&src, false).unwrap();
    let e = set_idmap(std::os::fd::AsFd::as_fd(&tree), &init, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("permission denied") || e.contains("namespace"),
        "{e}"
    );
    // Not a user namespace.
    let e = UserNamespace::open(Path::new("/proc/self/ns/mnt"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a user namespace"), "{e}");
    // Missing source and target.
    let e = idmap_mount(
        &work.path().join("nope"),
        &view,
        &ns,
        IdmapOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("does not exist"), "{e}");
    let e = idmap_mount(
        &src,
        &work.path().join("nope"),
        &ns,
        IdmapOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("create the directory first"), "{e}");
}

#[test]
fn fuse_server_that_did_not_opt_in_is_named() {
    let work = tempfile::tempdir().unwrap();
    let (src, mnt, view) = (
        work.path().join("src"),
        work.path().join("mnt"),
        work.path().join("view"),
    );
    for d in [&src, &mnt, &view] {
        std::fs::create_dir_all(d).unwrap();
    }
    let st = Command::new("bindfs")
        .arg(&src)
        .arg(&mnt)
        .status()
        .expect("bindfs (Debian package bindfs)");
    assert!(st.success());
    let _m = Mounted(mnt.clone());
    let Verdict::Unsupported(r) = can_idmap(&mnt) else {
        panic!("bindfs does not opt in")
    };
    let r = r.to_string();
    // Debian's bindfs mounts as plain `fuse`; the message names the mount.
    assert!(
        r.contains(mnt.to_str().unwrap())
            && r.contains("did not opt in")
            && r.contains("FUSE_ALLOW_IDMAP"),
        "{r}"
    );
    let ns = UserNamespace::create(&"b:0:100000:65536".parse().unwrap()).unwrap();
    let e = idmap_mount(&mnt, &view, &ns, IdmapOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("did not opt in") && !e.contains("Invalid argument"),
        "{e}"
    );
}

/// A throwaway unprivileged user with subordinate id ranges; removed, and
/// /etc/subuid and /etc/subgid restored byte for byte, on drop.
struct ThrowawayUser {
    name: String,
    uid: u32,
    saved: Vec<(&'static str, Option<Vec<u8>>)>,
}

impl ThrowawayUser {
    fn create(with_subids: bool) -> Self {
        let name = format!(
            "idft{}{}",
            std::process::id() % 100_000,
            u8::from(with_subids)
        );
        let saved = ["/etc/subuid", "/etc/subgid"]
            .map(|f| (f, std::fs::read(f).ok()))
            .to_vec();
        let st = Command::new("useradd")
            .args(["-M", "-N", "-s", "/usr/sbin/nologin", &name])
            .status()
            .expect("useradd");
        assert!(st.success(), "useradd {name}");
        let mut user = Self {
            name,
            uid: 0,
            saved,
        };
        let out = Command::new("id")
            .args(["-u", &user.name])
            .output()
            .unwrap();
        user.uid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        // useradd may have added ranges itself; make them exactly what we say.
        for (f, old) in &user.saved {
            let mut text = String::from_utf8_lossy(old.as_deref().unwrap_or_default()).to_string();
            text = text
                .lines()
                .filter(|l| !l.starts_with(&format!("{}:", user.name)))
                .map(|l| format!("{l}\n"))
                .collect();
            if with_subids {
                text.push_str(&format!("{}:3000000:65536\n", user.name));
            }
            std::fs::write(f, text).unwrap();
        }
        user
    }

    fn run(&self, cmd: &str) -> std::process::Output {
        Command::new("setpriv")
            .args([
                format!("--reuid={}", self.uid),
                format!("--regid={}", self.uid),
                "--clear-groups".into(),
                "sh".into(),
                "-c".into(),
                cmd.into(),
            ])
            .env("HOME", "/")
            .output()
            .unwrap()
    }
}

impl Drop for ThrowawayUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
        for (f, old) in &self.saved {
            match old {
                Some(b) => {
                    let _ = std::fs::write(f, b);
                }
                None => {
                    let _ = std::fs::remove_file(f);
                }
            }
        }
    }
}

fn idfuse_bin() -> PathBuf {
    // The CLI binary, brought up to date (this crate cannot depend on the
    // CLI crate, so cargo test does not build it for us).
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let bin = target.join(profile).join("idfuse");
    let mut c = Command::new(env!("CARGO"));
    c.args(["build", "-q", "-p", "idfuse-cli"]);
    if !cfg!(debug_assertions) {
        c.arg("--release");
    }
    assert!(c.status().unwrap().success(), "building the idfuse binary");
    bin
}

#[test]
fn unprivileged_user_idmaps_a_tmpfs_it_mounted_in_its_namespace() {
    let bin = idfuse_bin();
    let user = ThrowawayUser::create(true);
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    for d in [&a, &b] {
        std::fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(user.uid), Some(user.uid)).unwrap();
    }
    // In a user namespace it owns (root inside = the user outside): mount a
    // tmpfs, then idmap it through a child namespace the tool creates.
    let script = format!(
        "unshare -Ur -m sh -c 'mount -t tmpfs none {a} && touch {a}/f && {bin} idmap --map b:0:0:1 {a} {b} && stat -c %u:%g {b}/f && {bin} idmap --show {b}'",
        a = a.display(),
        b = b.display(),
        bin = bin.display()
    );
    let out = user.run(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("0:0"), "owner through the view: {stdout}");
    assert!(
        stdout.contains("b:0:0:1"),
        "--show inside the namespace: {stdout}"
    );
    // The unprivileged probe goes through newuidmap and /etc/subuid, then
    // explains that the user has no privilege over the host's tmpfs.
    let probe = user.run(&format!("{} idmap --probe /dev/shm", bin.display()));
    let text = String::from_utf8_lossy(&probe.stdout);
    assert_eq!(probe.status.code(), Some(1), "{text}");
    assert!(
        text.contains("permission denied") && text.contains("CAP_SYS_ADMIN"),
        "{text}"
    );
}

#[test]
fn unprivileged_user_without_subids_is_told_what_is_missing() {
    let bin = idfuse_bin();
    let user = ThrowawayUser::create(false);
    let out = user.run(&format!(
        "{} idmap --map b:0:100000:10 /tmp /tmp",
        bin.display()
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("/etc/subuid") && err.contains(&user.name),
        "{err}"
    );
}
