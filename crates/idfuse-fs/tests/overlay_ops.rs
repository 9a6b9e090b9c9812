//! overlay on real mounts over a fresh tmpfs holding its layers: lookups
//! and merged listings through whiteouts and opaque directories in the
//! kernel's and the OCI formats, copy-up keeping what the lower object
//! had, whiteouts and opaque directories written in the kernel's format,
//! renames, stable inode numbers, creation as other users, an idmapped
//! view, and a read-only overlay.

mod common;

use common::Tmpfs;

use std::ffi::{CStr, CString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use idfuse::{MountOptions, Session, SessionConfig};
use idfuse_fs::overlay::{Layout, Overlay, OverlayOptions};
use rustix::fs::{FileType, Mode, RenameFlags, XattrFlags, CWD};

/// Two lower layers (`l1` on top of `l2`), `upper`, `work` and `mnt`.
struct Fixture {
    session: Option<Session<Overlay>>,
    root: PathBuf,
    _tmpfs: Tmpfs,
    dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Unmount the overlay before the tmpfs under its layers.
        self.session.take();
    }
}

impl Fixture {
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    fn mnt(&self, rel: &str) -> PathBuf {
        self.root.join("mnt").join(rel)
    }
    fn upper(&self, rel: &str) -> PathBuf {
        self.root.join("upper").join(rel)
    }
    fn ov(&self) -> &Arc<Overlay> {
        self.session.as_ref().expect("mounted").filesystem()
    }
}

/// Layers on a new tmpfs, filled by `fill` (given the tmpfs root) before
/// the overlay is mounted; `writable`: with upper and work.
fn fixture(writable: bool, fill: impl FnOnce(&Path)) -> Fixture {
    fixture_with(writable, OverlayOptions::default(), fill)
}

fn fixture_with(writable: bool, opts: OverlayOptions, fill: impl FnOnce(&Path)) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("t");
    fs::create_dir(&root).expect("mkdir");
    let tmpfs = Tmpfs::mount(&root, c"mode=0755,size=1g");
    for d in ["l1", "l2", "upper", "work", "mnt"] {
        fs::create_dir(root.join(d)).expect("mkdir layer");
    }
    fill(&root);
    let layout = Layout {
        lowers: vec![root.join("l1"), root.join("l2")],
        upper: writable.then(|| root.join("upper")),
        work: writable.then(|| root.join("work")),
    };
    let fs = Arc::new(Overlay::new(layout, opts).expect("overlay"));
    let session = Session::mount(
        fs,
        &root.join("mnt"),
        MountOptions::default(),
        SessionConfig {
            passthrough: true,
            ..SessionConfig::default()
        },
    )
    .expect("mount overlay");
    Fixture {
        session: Some(session),
        root,
        _tmpfs: tmpfs,
        dir,
    }
}

fn whiteout(p: &Path) {
    rustix::fs::mknodat(CWD, p, FileType::CharacterDevice, Mode::empty(), 0).expect("mknod 0/0");
}

fn is_whiteout(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

fn names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", p.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::lgetxattr(p, name, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn owner(p: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).expect("lstat");
    (m.uid(), m.gid())
}

fn errno<T>(r: std::io::Result<T>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// Run `f` in a forked child as `uid`/`gid`, no supplementary groups,
/// umask 022; its exit code.
fn as_user(uid: u32, gid: u32, f: impl FnOnce() -> i32) -> i32 {
    common::as_user(uid, gid, &[], 0o022, f)
}

/// `system.posix_acl_access` with a named user.
fn acl_with_user(uid: u32) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 4, uid),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

#[test]
fn lookups_and_listings_through_layers() {
    let f = fixture(true, |r| {
        fs::write(r.join("l2/a"), b"bottom a").expect("write");
        fs::write(r.join("l1/a"), b"top a").expect("write");
        fs::write(r.join("l2/only2"), b"2").expect("write");
        fs::write(r.join("l2/gone"), b"x").expect("write");
        whiteout(&r.join("l1/gone"));
        fs::write(r.join("l2/oci-gone"), b"x").expect("write");
        fs::write(r.join("l1/.wh.oci-gone"), b"").expect("write");
        // A directory merged from both, with a whiteout in each format.
        fs::create_dir_all(r.join("l2/d")).expect("mkdir");
        fs::create_dir_all(r.join("l1/d")).expect("mkdir");
        for n in ["x", "y", "w"] {
            fs::write(r.join("l2/d").join(n), n).expect("write");
        }
        fs::write(r.join("l1/d/z"), b"z").expect("write");
        fs::write(r.join("l1/d/.wh.y"), b"").expect("write");
        whiteout(&r.join("l1/d/w"));
        // Opaque in the kernel's format and in OCI's.
        fs::create_dir_all(r.join("l2/k/hidden")).expect("mkdir");
        fs::create_dir_all(r.join("l1/k")).expect("mkdir");
        fs::write(r.join("l1/k/seen"), b"").expect("write");
        rustix::fs::setxattr(
            r.join("l1/k"),
            "trusted.overlay.opaque",
            b"y",
            XattrFlags::empty(),
        )
        .expect("set opaque");
        fs::create_dir_all(r.join("l2/o/hidden")).expect("mkdir");
        fs::create_dir_all(r.join("l1/o")).expect("mkdir");
        fs::write(r.join("l1/o/.wh..wh..opq"), b"").expect("write");
        fs::write(r.join("l1/o/seen"), b"").expect("write");
        // A file in upper over a directory below.
        fs::create_dir_all(r.join("l2/f/inner")).expect("mkdir");
        fs::write(r.join("upper/f"), b"file").expect("write");
    });
    assert_eq!(
        fs::read(f.mnt("a")).expect("read a"),
        b"top a",
        "top layer wins"
    );
    assert_eq!(fs::read(f.mnt("only2")).expect("read"), b"2");
    assert_eq!(
        errno(fs::metadata(f.mnt("gone"))),
        Some(libc::ENOENT),
        "kernel whiteout"
    );
    assert_eq!(
        errno(fs::metadata(f.mnt("oci-gone"))),
        Some(libc::ENOENT),
        "OCI whiteout"
    );
    assert_eq!(
        errno(fs::metadata(f.mnt(".wh.oci-gone"))),
        Some(libc::ENOENT),
        "OCI name hidden"
    );
    assert_eq!(names(&f.mnt("")), ["a", "d", "f", "k", "o", "only2"]);
    assert_eq!(
        names(&f.mnt("d")),
        ["x", "z"],
        "merged, whiteouts of both formats honoured"
    );
    assert_eq!(names(&f.mnt("k")), ["seen"], "trusted.overlay.opaque");
    assert_eq!(names(&f.mnt("o")), ["seen"], ".wh..wh..opq");
    assert!(
        fs::metadata(f.mnt("f")).expect("stat f").is_file(),
        "upper file hides lower dir"
    );
    assert_eq!(fs::read(f.mnt("d/x")).expect("read"), b"x");
    assert_eq!(errno(fs::metadata(f.mnt("d/y"))), Some(libc::ENOENT));
    assert_eq!(errno(fs::metadata(f.mnt("k/hidden"))), Some(libc::ENOENT));
    assert!(
        xattr(&f.mnt("k"), "trusted.overlay.opaque").is_none(),
        "the overlay's own xattrs are not shown"
    );
    // "." and ".." with the right inode numbers.
    let d_ino = fs::metadata(f.mnt("d")).expect("stat").ino();
    let root_ino = fs::metadata(f.mnt("")).expect("stat").ino();
    let dots = dir_entries(&f.mnt("d"));
    assert_eq!(dots[0], (".".to_string(), d_ino));
    assert_eq!(dots[1], ("..".to_string(), root_ino));
    for (n, ino) in &dots[2..] {
        assert_eq!(
            *ino,
            fs::symlink_metadata(f.mnt("d").join(n))
                .expect("stat")
                .ino(),
            "d_ino of {n} is its st_ino"
        );
    }
}

/// Every entry with its d_ino, in directory order, `.`/`..` included.
fn dir_entries(p: &Path) -> Vec<(String, u64)> {
    let c = CString::new(p.as_os_str().as_bytes()).expect("path");
    let mut out = Vec::new();
    // SAFETY: opendir/readdir/closedir on a directory stream we own; each
    // entry is read before the next call.
    unsafe {
        let d = libc::opendir(c.as_ptr());
        assert!(!d.is_null(), "opendir {}", p.display());
        loop {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            let name = CStr::from_ptr((*e).d_name.as_ptr())
                .to_string_lossy()
                .into_owned();
            out.push((name, (*e).d_ino));
        }
        libc::closedir(d);
    }
    out
}

#[test]
fn telldir_positions_stay_valid() {
    let f = fixture(true, |r| {
        fs::create_dir_all(r.join("l1/big")).expect("mkdir");
        fs::create_dir_all(r.join("l2/big")).expect("mkdir");
        for i in 0..400 {
            let layer = if i % 2 == 0 { "l1" } else { "l2" };
            fs::write(r.join(layer).join("big").join(format!("file-{i:03}")), b"").expect("write");
        }
        // The same names in both layers are listed once.
        for i in 0..50 {
            fs::write(r.join("l2/big").join(format!("file-{i:03}")), b"").expect("write");
        }
    });
    let c = CString::new(f.mnt("big").as_os_str().as_bytes()).expect("path");
    // SAFETY: a directory stream we own, read entry by entry.
    unsafe {
        let d = libc::opendir(c.as_ptr());
        assert!(!d.is_null());
        let mut all = Vec::new();
        loop {
            let pos = libc::telldir(d);
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            let name = CStr::from_ptr((*e).d_name.as_ptr())
                .to_string_lossy()
                .into_owned();
            all.push((pos, name));
        }
        assert_eq!(all.len(), 402, "400 names once, plus . and ..");
        for probe in [3usize, 150, 333, 401] {
            libc::seekdir(d, all[probe].0);
            let e = libc::readdir(d);
            assert!(!e.is_null(), "entry after seekdir to #{probe}");
            let name = CStr::from_ptr((*e).d_name.as_ptr())
                .to_string_lossy()
                .into_owned();
            assert_eq!(name, all[probe].1, "seekdir to the position of #{probe}");
        }
        libc::closedir(d);
    }
}

/// A listing's entries (READDIRPLUS, resolved from the layer the listing
/// found each name in) are what a lookup finds: kinds, inode numbers,
/// directories merged down to an opaque one, files over directories; and
/// a listing read on after a change made through the mount hands out
/// neither a removed name nor a copied-up file's lower attributes.
#[test]
fn listed_entries_resolve_as_lookups_do() {
    let f = fixture(true, |r| {
        for l in ["l1", "l2", "upper"] {
            fs::create_dir_all(r.join(l).join("big")).expect("mkdir");
        }
        let big = |l: &str, n: &str| r.join(l).join("big").join(n);
        // Enough names for several READDIRPLUS replies (some 190 each),
        // so that most are resolved by the look-ahead helper; each layer's
        // files have their own size.
        for i in 0..1000 {
            let (layer, body): (_, &[u8]) = if i % 2 == 0 {
                ("l1", b"lower")
            } else {
                ("l2", b"lower-2")
            };
            fs::write(big(layer, &format!("file-{i:03}")), body).expect("write");
        }
        fs::write(big("l1", "both"), b"top").expect("write");
        fs::write(big("l2", "both"), b"bottom").expect("write");
        // Merged from both lowers; merged with upper too.
        for (l, n) in [("l1", "m/one"), ("l2", "m/two"), ("l2", "m2/low")] {
            fs::create_dir_all(big(l, n).parent().expect("parent")).expect("mkdir");
            fs::write(big(l, n), b"").expect("write");
        }
        fs::create_dir_all(big("upper", "m2")).expect("mkdir");
        fs::write(big("upper", "m2/up"), b"").expect("write");
        // Opaque in l1: l2's content stays hidden.
        fs::create_dir_all(big("l1", "opq")).expect("mkdir");
        fs::write(big("l1", "opq/.wh..wh..opq"), b"").expect("write");
        fs::create_dir_all(big("l2", "opq/hidden")).expect("mkdir");
        // A file in l1 over a directory in l2, a symlink, whiteouts.
        fs::write(big("l1", "fileoverdir"), b"f").expect("write");
        fs::create_dir_all(big("l2", "fileoverdir/x")).expect("mkdir");
        std::os::unix::fs::symlink("file-000", big("l2", "link")).expect("symlink");
        fs::write(big("l2", "wh-kernel"), b"").expect("write");
        whiteout(&big("upper", "wh-kernel"));
        fs::write(big("l2", "wh-oci"), b"").expect("write");
        fs::write(big("l1", ".wh.wh-oci"), b"").expect("write");
    });
    let big = f.mnt("big");
    let listed = dir_entries(&big);
    assert_eq!(listed.len(), 2 + 1000 + 6, "{listed:?}");
    for (n, ino) in &listed[2..] {
        let st = fs::symlink_metadata(big.join(n)).expect("stat listed");
        assert_eq!(*ino, st.ino(), "d_ino of {n} is its st_ino");
        if let Some(i) = n.strip_prefix("file-") {
            let i: usize = i.parse().expect("file number");
            let size = if i.is_multiple_of(2) { 5 } else { 7 };
            assert_eq!(st.len(), size, "{n} has the attributes of its layer");
        }
    }
    assert_eq!(fs::read(big.join("both")).expect("read"), b"top");
    assert_eq!(
        names(&big.join("m")),
        ["one", "two"],
        "merged from both lowers"
    );
    assert_eq!(names(&big.join("m2")), ["low", "up"], "merged with upper");
    assert!(names(&big.join("opq")).is_empty(), "opaque stops the merge");
    assert!(fs::symlink_metadata(big.join("fileoverdir"))
        .expect("stat")
        .is_file());
    assert!(fs::symlink_metadata(big.join("link"))
        .expect("stat")
        .is_symlink());
    assert!(!listed.iter().any(|(n, _)| n.starts_with("wh-")));
}

/// A listing read on after changes made through the mount hands the
/// kernel neither an entry for a removed name nor a copied-up file's lower
/// attributes (the listing no longer counts as current: names are looked
/// up from the top). The names themselves may still be listed (POSIX
/// leaves that open for changes made since opendir).
#[test]
fn listing_read_on_after_a_change_shows_the_change() {
    let f = fixture(true, |r| {
        fs::create_dir_all(r.join("l1/big")).expect("mkdir");
        fs::create_dir_all(r.join("l2/big")).expect("mkdir");
        for i in 0..600 {
            let layer = if i % 2 == 0 { "l1" } else { "l2" };
            fs::write(
                r.join(layer).join("big").join(format!("file-{i:03}")),
                b"lower",
            )
            .expect("write");
        }
    });
    let big = f.mnt("big");
    let c = CString::new(big.as_os_str().as_bytes()).expect("path");
    let mut rest = Vec::new();
    // SAFETY: a directory stream we own, read entry by entry.
    unsafe {
        let d = libc::opendir(c.as_ptr());
        assert!(!d.is_null());
        assert!(!libc::readdir(d).is_null(), "first entry");
        // Names past what the first READDIRPLUS covered (at most 32 KiB,
        // ~200 entries) but in the next one: l1's 300 names are listed
        // first, the newest first. (With READDIRPLUS_AUTO the kernel asks
        // for the next batch with READDIRPLUS because the unlink looked a
        // name up in the directory; the one after that is a plain
        // READDIR.)
        fs::remove_file(big.join("file-010")).expect("unlink");
        fs::remove_file(big.join("file-012")).expect("unlink");
        fs::write(big.join("file-014"), b"copied up, longer").expect("copy-up");
        loop {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            rest.push(
                CStr::from_ptr((*e).d_name.as_ptr())
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        libc::closedir(d);
    }
    assert!(rest.iter().any(|n| n == "file-014"), "{rest:?}");
    for n in ["file-010", "file-012"] {
        assert_eq!(
            errno(fs::symlink_metadata(big.join(n))),
            Some(libc::ENOENT),
            "{n}"
        );
    }
    assert_eq!(
        fs::symlink_metadata(big.join("file-014"))
            .expect("stat")
            .len(),
        17,
        "the copied-up file's attributes"
    );
}

#[test]
fn copy_up_keeps_owner_mode_times_and_xattrs() {
    let f = fixture(true, |r| {
        fs::create_dir_all(r.join("l2/dir/sub")).expect("mkdir");
        std::os::unix::fs::chown(r.join("l2/dir"), Some(321), Some(654)).expect("chown");
        fs::set_permissions(r.join("l2/dir"), fs::Permissions::from_mode(0o2751)).expect("chmod");
        let file = r.join("l2/dir/sub/file");
        fs::write(&file, b"lower data").expect("write");
        std::os::unix::fs::chown(&file, Some(1234), Some(2345)).expect("chown");
        rustix::fs::setxattr(&file, "user.note", b"kept", XattrFlags::empty()).expect("user xattr");
        rustix::fs::setxattr(
            &file,
            "system.posix_acl_access",
            &acl_with_user(777),
            XattrFlags::empty(),
        )
        .expect("acl");
        // VFS_CAP_REVISION_2 with CAP_NET_BIND_SERVICE permitted.
        let mut cap = 0x0200_0000u32.to_le_bytes().to_vec();
        for w in [1u32 << 10, 0, 0, 0] {
            cap.extend_from_slice(&w.to_le_bytes());
        }
        rustix::fs::setxattr(&file, "security.capability", &cap, XattrFlags::empty()).expect("cap");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).expect("chmod");
        let t = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 1_000_000_000,
                tv_nsec: 5,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 1_100_000_000,
                tv_nsec: 7,
            },
        };
        rustix::fs::utimensat(CWD, &file, &t, rustix::fs::AtFlags::empty()).expect("utimes");
    });
    let lower = f.p("l2/dir/sub/file");
    let before = fs::metadata(&lower).expect("stat lower");
    let ino = fs::metadata(f.mnt("dir/sub/file")).expect("stat").ino();
    // A metadata-only change copies up without touching data or times.
    rustix::fs::setxattr(
        f.mnt("dir/sub/file"),
        "user.added",
        b"1",
        XattrFlags::empty(),
    )
    .expect("setxattr through the overlay");
    let up = f.upper("dir/sub/file");
    let after = fs::metadata(&up).expect("copied up");
    assert_eq!((after.uid(), after.gid()), (1234, 2345), "lower owner kept");
    assert_eq!(after.mode(), before.mode(), "mode kept");
    assert_eq!(
        (
            after.mtime(),
            after.mtime_nsec(),
            after.atime(),
            after.atime_nsec()
        ),
        (
            before.mtime(),
            before.mtime_nsec(),
            before.atime(),
            before.atime_nsec()
        ),
        "times kept"
    );
    assert_eq!(fs::read(&up).expect("read"), b"lower data");
    for x in [
        "user.note",
        "system.posix_acl_access",
        "security.capability",
    ] {
        assert_eq!(xattr(&up, x), xattr(&lower, x), "{x} copied");
    }
    assert_eq!(xattr(&up, "user.added").as_deref(), Some(&b"1"[..]));
    assert_eq!(xattr(&lower, "user.added"), None, "lower untouched");
    // Parents were copied up first, with their own owner and mode.
    let d = fs::metadata(f.upper("dir")).expect("parent copied up");
    assert_eq!((d.uid(), d.gid(), d.mode() & 0o7777), (321, 654, 0o2751));
    assert_eq!(
        fs::metadata(f.mnt("dir/sub/file")).expect("stat").ino(),
        ino,
        "st_ino kept"
    );
    // A write goes to the copy only.
    fs::OpenOptions::new()
        .append(true)
        .open(f.mnt("dir/sub/file"))
        .and_then(|mut w| std::io::Write::write_all(&mut w, b" + more"))
        .expect("append");
    assert_eq!(
        fs::read(f.mnt("dir/sub/file")).expect("read"),
        b"lower data + more"
    );
    assert_eq!(fs::read(&lower).expect("read"), b"lower data");
    assert_eq!(
        names(&f.p("work/work")),
        Vec::<String>::new(),
        "no debris in work"
    );
}

#[test]
fn copy_up_on_each_kind_of_change() {
    let f = fixture(true, |r| {
        for n in ["w", "t", "m", "o", "u", "x", "l"] {
            fs::write(r.join("l1").join(n), b"0123456789").expect("write");
        }
        std::os::unix::fs::symlink("target", r.join("l1/sym")).expect("symlink");
    });
    fs::write(f.mnt("w"), b"new").expect("write-open (O_TRUNC)");
    fs::OpenOptions::new()
        .write(true)
        .open(f.mnt("t"))
        .and_then(|h| h.set_len(4))
        .expect("ftruncate");
    fs::set_permissions(f.mnt("m"), fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::chown(f.mnt("o"), Some(42), None).expect("chown");
    let t = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 5,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 5,
            tv_nsec: 0,
        },
    };
    rustix::fs::utimensat(CWD, f.mnt("u"), &t, rustix::fs::AtFlags::empty()).expect("utimes");
    rustix::fs::lsetxattr(f.mnt("sym"), "trusted.t", b"1", XattrFlags::empty())
        .expect("xattr on a symlink");
    fs::hard_link(f.mnt("l"), f.mnt("l2")).expect("link");
    assert_eq!(fs::read(f.upper("w")).expect("upper w"), b"new");
    assert_eq!(fs::read(f.upper("t")).expect("upper t"), b"0123");
    assert_eq!(
        fs::metadata(f.upper("m")).expect("upper m").mode() & 0o777,
        0o600
    );
    assert_eq!(owner(&f.upper("o")).0, 42);
    assert_eq!(fs::metadata(f.upper("u")).expect("upper u").mtime(), 5);
    assert_eq!(
        fs::read_link(f.upper("sym")).expect("upper sym"),
        Path::new("target")
    );
    assert_eq!(
        fs::metadata(f.upper("l")).expect("upper l").ino(),
        fs::metadata(f.upper("l2")).expect("upper l2").ino(),
        "link made in upper"
    );
    assert_eq!(fs::read(f.mnt("l2")).expect("read link"), b"0123456789");
    // Lower layers never change.
    for n in ["w", "t", "l"] {
        assert_eq!(fs::read(f.p("l1").join(n)).expect("lower"), b"0123456789");
    }
    assert_eq!(
        fs::metadata(f.p("l1/m")).expect("lower").mode() & 0o777,
        0o644
    );
}

#[test]
fn unlink_and_rmdir_leave_kernel_whiteouts_and_mkdir_makes_opaque() {
    let f = fixture(true, |r| {
        fs::write(r.join("l2/file"), b"x").expect("write");
        fs::create_dir_all(r.join("l2/dir")).expect("mkdir");
        fs::write(r.join("l2/dir/inside"), b"x").expect("write");
        fs::write(r.join("upper/new"), b"x").expect("write");
    });
    fs::remove_file(f.mnt("file")).expect("unlink lower file");
    assert!(is_whiteout(&f.upper("file")), "char 0/0 whiteout in upper");
    assert_eq!(errno(fs::metadata(f.mnt("file"))), Some(libc::ENOENT));
    fs::remove_file(f.mnt("new")).expect("unlink upper-only file");
    assert!(
        !f.upper("new").exists() && fs::symlink_metadata(f.upper("new")).is_err(),
        "no whiteout needed"
    );
    assert_eq!(errno(fs::remove_dir(f.mnt("dir"))), Some(libc::ENOTEMPTY));
    fs::remove_file(f.mnt("dir/inside")).expect("unlink in lower dir");
    fs::remove_dir(f.mnt("dir")).expect("rmdir, now empty as merged");
    assert!(is_whiteout(&f.upper("dir")), "rmdir leaves a whiteout");
    assert_eq!(names(&f.mnt("")), Vec::<String>::new());
    fs::create_dir(f.mnt("dir")).expect("mkdir over the whiteout");
    assert_eq!(
        xattr(&f.upper("dir"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..]),
        "opaque"
    );
    assert_eq!(
        names(&f.mnt("dir")),
        Vec::<String>::new(),
        "nothing of the lower dir"
    );
    fs::write(f.mnt("file"), b"again").expect("create over the whiteout");
    assert_eq!(fs::read(f.upper("file")).expect("upper"), b"again");
    assert_eq!(names(&f.mnt("")), ["dir", "file"]);
}

/// A regular file created where a whiteout hides a lower one is made in
/// one step, as kernel overlayfs does (unnamed in the upper directory,
/// exchanged with the whiteout through the work directory), so a daemon
/// killed midway never shows the lower file again. The new file is the
/// creator's, with what the directory gives a create made in it (here a
/// setgid directory's group and the umask), and read-only creates work too.
#[test]
fn create_over_a_whiteout_takes_one_step() {
    let f = fixture(true, |r| {
        fs::create_dir_all(r.join("l2/sg")).expect("mkdir");
        std::os::unix::fs::chown(r.join("l2/sg"), None, Some(4000)).expect("chgrp");
        fs::set_permissions(r.join("l2/sg"), fs::Permissions::from_mode(0o2777)).expect("chmod");
        fs::write(r.join("l2/sg/f"), b"lower").expect("write");
        fs::write(r.join("l2/ro"), b"lower").expect("write");
    });
    fs::remove_file(f.mnt("sg/f")).expect("unlink the lower file");
    fs::remove_file(f.mnt("ro")).expect("unlink the lower file");
    assert!(is_whiteout(&f.upper("sg/f")) && is_whiteout(&f.upper("ro")));
    // Watch the upper directory: a two-step create would delete the
    // whiteout's name there first; one step only moves names.
    use rustix::fs::inotify;
    let watch = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)
        .expect("inotify_init");
    inotify::add_watch(
        &watch,
        f.upper("sg"),
        inotify::WatchFlags::DELETE | inotify::WatchFlags::CREATE | inotify::WatchFlags::MOVED_TO,
    )
    .expect("inotify_add_watch");
    let target = f.mnt("sg/f");
    let step = as_user(1000, 1000, || {
        if fs::write(&target, b"new").is_err() {
            return 1;
        }
        0
    });
    assert_eq!(step, 0, "create over the whiteout as uid 1000 failed");
    let m = fs::symlink_metadata(f.upper("sg/f")).expect("lstat upper");
    assert!(
        m.file_type().is_file(),
        "a regular file took the whiteout's place"
    );
    assert_eq!(
        (m.uid(), m.gid()),
        (1000, 4000),
        "the creator's, with the setgid group"
    );
    assert_eq!(m.mode() & 0o7777, 0o644, "mode 0666 less the umask 022");
    assert_eq!(m.nlink(), 1, "one name: the work directory keeps none");
    assert_eq!(fs::read(f.mnt("sg/f")).expect("read"), b"new");
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
    let mut events = inotify::Reader::new(&watch, &mut buf);
    let mut seen = Vec::new();
    while let Ok(e) = events.next() {
        let name = e.file_name().map(|n| n.to_string_lossy().into_owned());
        seen.push((e.events(), name));
    }
    let named_f = |flag| {
        seen.iter()
            .any(|(m, n): &(inotify::ReadFlags, Option<String>)| {
                m.contains(flag) && n.as_deref() == Some("f")
            })
    };
    assert!(
        named_f(inotify::ReadFlags::MOVED_TO) && !named_f(inotify::ReadFlags::DELETE),
        "the new file was exchanged with the whiteout, which was never removed from the name: {seen:?}"
    );
    let fd = rustix::fs::open(
        f.mnt("ro"),
        rustix::fs::OFlags::CREATE | rustix::fs::OFlags::RDONLY,
        Mode::from_raw_mode(0o600),
    )
    .expect("a read-only create over a whiteout");
    drop(fd);
    let ro = fs::symlink_metadata(f.upper("ro")).expect("lstat upper");
    assert!(
        ro.file_type().is_file() && ro.len() == 0,
        "an empty new file"
    );
    assert_eq!(names(&f.mnt("")), ["ro", "sg"]);
    assert_eq!(names(&f.p("work/work")), Vec::<String>::new(), "no debris");
}

#[test]
fn renames() {
    let f = fixture(true, |r| {
        fs::create_dir_all(r.join("l2/lowerdir")).expect("mkdir");
        fs::write(r.join("l2/a"), b"a").expect("write");
        fs::write(r.join("l2/b"), b"b").expect("write");
        fs::write(r.join("l2/c"), b"c").expect("write");
        fs::write(r.join("l2/d"), b"d").expect("write");
        fs::create_dir(r.join("upper/updir")).expect("mkdir");
    });
    assert_eq!(
        errno(fs::rename(f.mnt("lowerdir"), f.mnt("moved"))),
        Some(libc::EXDEV),
        "a lower directory does not move (no redirect_dir)"
    );
    fs::rename(f.mnt("updir"), f.mnt("updir2")).expect("an upper-only directory moves");
    let ino_a = fs::metadata(f.mnt("a")).expect("stat").ino();
    fs::rename(f.mnt("a"), f.mnt("a2")).expect("rename a lower file");
    assert!(
        is_whiteout(&f.upper("a")),
        "whiteout where the lower file was"
    );
    assert_eq!(fs::read(f.upper("a2")).expect("copied up"), b"a");
    assert_eq!(
        fs::metadata(f.mnt("a2")).expect("stat").ino(),
        ino_a,
        "st_ino follows"
    );
    let noreplace =
        rustix::fs::renameat_with(CWD, f.mnt("b"), CWD, f.mnt("c"), RenameFlags::NOREPLACE);
    assert_eq!(
        noreplace.err(),
        Some(rustix::io::Errno::EXIST),
        "RENAME_NOREPLACE"
    );
    rustix::fs::renameat_with(CWD, f.mnt("b"), CWD, f.mnt("c"), RenameFlags::EXCHANGE)
        .expect("RENAME_EXCHANGE of two lower files");
    assert_eq!(fs::read(f.mnt("b")).expect("read"), b"c");
    assert_eq!(fs::read(f.mnt("c")).expect("read"), b"b");
    // A caller's RENAME_WHITEOUT (kernel overlayfs refuses it) leaves a
    // char device 0/0 at the old name that the overlay shows as itself,
    // marked in the upper layer so as not to be taken for its own
    // whiteout; removing it leaves a real whiteout only over a lower name.
    let is_device = |p: &Path| {
        fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
    };
    rustix::fs::renameat_with(CWD, f.mnt("a2"), CWD, f.mnt("a3"), RenameFlags::WHITEOUT)
        .expect("RENAME_WHITEOUT of an upper-only file");
    assert!(
        is_device(&f.mnt("a2")),
        "the device at the old name is shown"
    );
    assert_eq!(
        xattr(&f.upper("a2"), "trusted.overlay.idfuse.device").as_deref(),
        Some(&b"y"[..]),
        "marked in the upper layer"
    );
    assert_eq!(
        xattr(&f.mnt("a2"), "trusted.overlay.idfuse.device"),
        None,
        "the mark is private"
    );
    assert_eq!(fs::read(f.mnt("a3")).expect("read"), b"a");
    fs::remove_file(f.mnt("a2")).expect("unlink the device");
    assert!(
        fs::symlink_metadata(f.upper("a2")).is_err(),
        "no lower a2, so no whiteout is left for it"
    );
    assert_eq!(errno(fs::metadata(f.mnt("a2"))), Some(libc::ENOENT));
    rustix::fs::renameat_with(CWD, f.mnt("d"), CWD, f.mnt("d2"), RenameFlags::WHITEOUT)
        .expect("RENAME_WHITEOUT of a lower file");
    assert!(
        is_device(&f.mnt("d")),
        "the device hides the lower d and shows"
    );
    assert_eq!(fs::read(f.mnt("d2")).expect("copied up"), b"d");
    fs::remove_file(f.mnt("d")).expect("unlink the device");
    assert!(
        is_whiteout(&f.upper("d")),
        "a whiteout keeps the lower d hidden"
    );
    assert_eq!(errno(fs::metadata(f.mnt("d"))), Some(libc::ENOENT));
    fs::rename(f.mnt("a3"), f.mnt("a4")).expect("rename of an upper-only file");
    assert_eq!(errno(fs::metadata(f.mnt("a3"))), Some(libc::ENOENT));
    fs::rename(f.mnt("c"), f.mnt("b")).expect("rename over an existing name");
    assert_eq!(fs::read(f.mnt("b")).expect("read"), b"b");
    assert_eq!(names(&f.mnt("")), ["a4", "b", "d2", "lowerdir", "updir2"]);
}

#[test]
fn inode_numbers_survive_copy_up() {
    let f = fixture(true, |r| {
        fs::create_dir_all(r.join("l1/d")).expect("mkdir");
        fs::write(r.join("l1/d/f"), b"x").expect("write");
    });
    let (ino_d, ino_f) = (
        fs::metadata(f.mnt("d")).expect("stat").ino(),
        fs::metadata(f.mnt("d/f")).expect("stat").ino(),
    );
    fs::write(f.mnt("d/f"), b"changed").expect("write");
    assert!(f.upper("d/f").exists(), "copied up");
    assert_eq!(fs::metadata(f.mnt("d")).expect("stat").ino(), ino_d);
    assert_eq!(fs::metadata(f.mnt("d/f")).expect("stat").ino(), ino_f);
    let listed: Vec<(String, u64)> = dir_entries(&f.mnt("d"))
        .into_iter()
        .filter(|(n, _)| n == "f")
        .collect();
    assert_eq!(listed, [("f".to_string(), ino_f)], "readdir agrees");
    assert_ne!(
        fs::metadata(f.upper("d/f")).expect("stat").ino(),
        ino_f,
        "the copy is a different inode underneath"
    );
}

#[test]
fn creates_as_other_users_land_in_upper_with_their_ids() {
    let f = fixture(true, |r| {
        fs::create_dir_all(r.join("l2/shared")).expect("mkdir");
        fs::set_permissions(r.join("l2/shared"), fs::Permissions::from_mode(0o777)).expect("chmod");
        fs::create_dir_all(r.join("l2/sg")).expect("mkdir");
        std::os::unix::fs::chown(r.join("l2/sg"), None, Some(4000)).expect("chgrp");
        fs::set_permissions(r.join("l2/sg"), fs::Permissions::from_mode(0o2777)).expect("chmod");
    });
    let (shared, sg) = (f.mnt("shared"), f.mnt("sg"));
    let step = as_user(1000, 1000, || {
        if fs::write(shared.join("file"), b"x").is_err() {
            return 1;
        }
        if fs::create_dir(shared.join("dir")).is_err() {
            return 2;
        }
        if std::os::unix::fs::symlink("file", shared.join("sym")).is_err() {
            return 3;
        }
        if fs::write(sg.join("inherits"), b"x").is_err() {
            return 4;
        }
        0
    });
    assert_eq!(step, 0, "step {step} as uid 1000 failed");
    for n in ["file", "dir", "sym"] {
        assert_eq!(
            owner(&f.upper("shared").join(n)),
            (1000, 1000),
            "{n} made as its owner"
        );
    }
    assert_eq!(
        owner(&f.upper("sg/inherits")),
        (1000, 4000),
        "setgid directory's group"
    );
    assert_eq!(
        owner(&f.upper("shared")),
        (0, 0),
        "the copied-up parent keeps its owner"
    );
    assert_eq!(
        as_user(1001, 1001, || errno(fs::remove_file(shared.join("file")))
            .unwrap_or(0)),
        0,
        "the kernel decides (0777, no sticky bit): allowed"
    );
}

#[test]
fn idmapped_view_copies_up_with_lower_owner_and_creates_with_fs_ids() {
    let f = fixture(true, |r| {
        fs::create_dir_all(r.join("l2/home")).expect("mkdir");
        std::os::unix::fs::chown(r.join("l2/home"), Some(123), Some(123)).expect("chown");
        fs::write(r.join("l2/home/doc"), b"lower").expect("write");
        std::os::unix::fs::chown(r.join("l2/home/doc"), Some(123), Some(123)).expect("chown");
        fs::write(r.join("l2/home/gone"), b"x").expect("write");
        std::os::unix::fs::chown(r.join("l2/home/gone"), Some(123), Some(123)).expect("chown");
    });
    let view = f.dir.path().join("view");
    fs::create_dir(&view).expect("mkdir");
    let ns = idfuse_idmap::UserNamespace::create(&"b:0:100000:65536".parse().expect("spec"))
        .expect("user namespace");
    let _g = idfuse_idmap::idmap_mount(
        &f.mnt(""),
        &view,
        &ns,
        idfuse_idmap::IdmapOptions::default(),
    )
    .expect("idmap the overlay");
    assert_eq!(
        owner(&view.join("home/doc")),
        (100123, 100123),
        "through the view"
    );
    let home = view.join("home");
    let step = as_user(100123, 100123, || {
        if fs::OpenOptions::new()
            .append(true)
            .open(home.join("doc"))
            .and_then(|mut w| std::io::Write::write_all(&mut w, b"+view"))
            .is_err()
        {
            return 1;
        }
        if fs::write(home.join("new"), b"x").is_err()
            || fs::create_dir(home.join("newdir")).is_err()
        {
            return 2;
        }
        if fs::remove_file(home.join("gone")).is_err() {
            return 3;
        }
        0
    });
    assert_eq!(step, 0, "step {step} through the view failed");
    assert_eq!(
        owner(&f.upper("home/doc")),
        (123, 123),
        "copy-up keeps the lower owner"
    );
    assert_eq!(fs::read(f.upper("home/doc")).expect("read"), b"lower+view");
    assert_eq!(owner(&f.upper("home")), (123, 123), "parent copy-up too");
    for n in ["new", "newdir"] {
        assert_eq!(
            owner(&f.upper("home").join(n)),
            (123, 123),
            "{n} stored with fs ids"
        );
    }
    assert!(
        is_whiteout(&f.upper("home/gone")),
        "unlink through the view leaves a whiteout"
    );
    assert_eq!(
        owner(&f.mnt("home/new")),
        (123, 123),
        "plain mount shows fs ids"
    );
}

#[test]
fn read_only_overlay_refuses_changes() {
    let f = fixture(false, |r| {
        fs::write(r.join("l1/f"), b"data").expect("write");
    });
    assert_eq!(fs::read(f.mnt("f")).expect("read"), b"data");
    assert!(
        f.ov().passthrough_active(),
        "lower reads use FUSE passthrough"
    );
    assert_eq!(errno(fs::write(f.mnt("f"), b"x")), Some(libc::EROFS));
    assert_eq!(errno(fs::write(f.mnt("g"), b"x")), Some(libc::EROFS));
    assert_eq!(errno(fs::remove_file(f.mnt("f"))), Some(libc::EROFS));
    assert_eq!(errno(fs::create_dir(f.mnt("d"))), Some(libc::EROFS));
    assert_eq!(
        errno(fs::set_permissions(
            f.mnt("f"),
            fs::Permissions::from_mode(0o600)
        )),
        Some(libc::EROFS)
    );
    assert_eq!(names(&f.p("upper")), Vec::<String>::new());
}

/// mknod of a character device 0/0, the overlay's own whiteout, is refused
/// with EPERM as kernel overlayfs refuses it; other devices are made.
#[test]
fn mknod_of_a_whiteout_device_is_refused() {
    let f = fixture(true, |r| {
        fs::write(r.join("l1/f"), b"lower").expect("write");
    });
    let mk = |rel: &str, dev: u64| {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            f.mnt(rel),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o644),
            dev,
        )
    };
    assert_eq!(mk("wh", 0), Err(rustix::io::Errno::PERM));
    assert_eq!(fs::read(f.mnt("f")).expect("lower file"), b"lower");
    assert!(!f.mnt("wh").exists() && !f.upper("wh").exists());
    mk("null", rustix::fs::makedev(1, 3)).expect("mknod 1/3");
    let st = fs::metadata(f.mnt("null")).expect("stat");
    assert_eq!(st.rdev(), rustix::fs::makedev(1, 3));
}

/// The kernel keeps one backing file per inode: while a file is open for
/// reading through its lower layer's, it cannot be opened for writing
/// (which needs the copy's). The writer is told ETXTBSY, and succeeds once
/// the reader closed it.
#[test]
fn writer_waits_for_lower_backed_readers() {
    let f = fixture(true, |r| {
        fs::write(r.join("l1/f"), b"lower").expect("write");
    });
    let reader = fs::File::open(f.mnt("f")).expect("open for reading");
    assert!(
        f.ov().passthrough_active(),
        "the reader has a lower backing file"
    );
    assert_eq!(errno(fs::write(f.mnt("f"), b"upper")), Some(libc::ETXTBSY));
    drop(reader);
    fs::write(f.mnt("f"), b"upper").expect("write-open once the reader is gone");
    assert_eq!(fs::read(f.mnt("f")).expect("read"), b"upper");
    assert_eq!(fs::read(f.p("l1/f")).expect("lower"), b"lower");
}

/// With `userxattr`, opaque directories are read from and written to
/// `user.overlay.opaque`, and the `user.overlay.*` xattrs are hidden.
#[test]
fn userxattr_keeps_marks_in_user_xattrs() {
    let opts = OverlayOptions {
        userxattr: true,
        ..OverlayOptions::default()
    };
    let f = fixture_with(true, opts, |r| {
        fs::create_dir_all(r.join("l2/o/hidden")).expect("mkdir");
        fs::create_dir_all(r.join("l1/o")).expect("mkdir");
        rustix::fs::setxattr(
            r.join("l1/o"),
            "user.overlay.opaque",
            b"y",
            XattrFlags::empty(),
        )
        .expect("set opaque");
        fs::create_dir_all(r.join("l2/d/inside")).expect("mkdir");
    });
    assert_eq!(
        names(&f.mnt("o")),
        Vec::<String>::new(),
        "user.overlay.opaque honoured"
    );
    assert!(
        xattr(&f.mnt("o"), "user.overlay.opaque").is_none(),
        "hidden"
    );
    fs::remove_dir(f.mnt("d/inside")).expect("rmdir");
    fs::remove_dir(f.mnt("d")).expect("rmdir");
    fs::create_dir(f.mnt("d")).expect("mkdir over the whiteout");
    assert_eq!(
        xattr(&f.upper("d"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..]),
        "opaque mark in the user namespace of xattrs"
    );
    assert_eq!(xattr(&f.upper("d"), "trusted.overlay.opaque"), None);
    assert_eq!(names(&f.mnt("d")), Vec::<String>::new());
}

/// What an interrupted copy-up leaves in `WORKDIR/work` is cleared when the
/// overlay starts, and was never visible through the mount.
#[test]
fn debris_of_interrupted_copy_ups_is_cleared_at_mount() {
    let f = fixture(true, |r| {
        fs::write(r.join("l1/big"), b"old").expect("write");
        fs::create_dir_all(r.join("work/work/#half-dir/inner")).expect("mkdir");
        fs::write(r.join("work/work/#half-file"), b"partial").expect("write");
    });
    assert_eq!(
        names(&f.p("work/work")),
        Vec::<String>::new(),
        "debris cleared"
    );
    assert_eq!(names(&f.mnt("")), ["big"]);
    assert_eq!(
        fs::read(f.mnt("big")).expect("read"),
        b"old",
        "the old view intact"
    );
}

/// O_TMPFILE in a lower directory (copied up to hold it), linked in later;
/// fallocate and copy_file_range on files from the lower layer.
#[test]
fn tmpfile_fallocate_and_copy_file_range() {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let f = fixture(true, |r| {
        fs::create_dir_all(r.join("l2/d")).expect("mkdir");
        fs::write(r.join("l2/d/src"), b"0123456789").expect("write");
    });
    let mut tmp = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o640)
        .open(f.mnt("d"))
        .expect("O_TMPFILE in a lower directory");
    tmp.write_all(b"unnamed").expect("write");
    assert!(f.upper("d").is_dir(), "the directory was copied up");
    let from = CString::new(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&tmp)
    ))
    .expect("path");
    let to = CString::new(f.mnt("d/named").as_os_str().as_bytes()).expect("path");
    // SAFETY: linkat with NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    assert_eq!(
        r,
        0,
        "link the tmpfile: {}",
        std::io::Error::last_os_error()
    );
    drop(tmp);
    assert_eq!(fs::read(f.upper("d/named")).expect("upper"), b"unnamed");

    let out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(f.mnt("d/copy"))
        .expect("create");
    let input = fs::File::open(f.mnt("d/src")).expect("open lower file");
    let n = rustix::fs::copy_file_range(&input, Some(&mut 2), &out, Some(&mut 0), 5)
        .expect("copy_file_range from a lower file");
    assert_eq!(n, 5);
    drop((input, out));
    assert_eq!(fs::read(f.mnt("d/copy")).expect("read"), b"23456");

    let w = fs::OpenOptions::new()
        .write(true)
        .open(f.mnt("d/src"))
        .expect("open for writing (copies up)");
    rustix::fs::fallocate(&w, rustix::fs::FallocateFlags::KEEP_SIZE, 0, 1 << 20)
        .expect("fallocate");
    rustix::fs::fallocate(&w, rustix::fs::FallocateFlags::empty(), 0, 20).expect("fallocate");
    drop(w);
    assert_eq!(fs::metadata(f.mnt("d/src")).expect("stat").len(), 20);
    assert_eq!(
        &fs::read(f.upper("d/src")).expect("upper")[..10],
        b"0123456789"
    );
    assert_eq!(fs::read(f.p("l2/d/src")).expect("lower"), b"0123456789");
}

/// A file open for reading before its copy-up reads the copy afterwards,
/// as on kernel overlayfs (since 4.19): writes through another open and a
/// truncate(2) by path are seen through it.
#[test]
fn a_reader_open_before_the_copy_up_reads_the_copy() {
    use std::os::unix::fs::FileExt;
    let opts = OverlayOptions {
        passthrough_io: false,
        ..OverlayOptions::default()
    };
    let f = fixture_with(true, opts, |r| {
        fs::write(r.join("l2/f"), b"lower data\n").expect("write");
    });
    let reader = fs::File::open(f.mnt("f")).expect("open for reading");
    let mut buf = [0u8; 32];
    let n = reader.read_at(&mut buf, 0).expect("read the lower file");
    assert_eq!(&buf[..n], b"lower data\n");
    let writer = fs::OpenOptions::new()
        .write(true)
        .open(f.mnt("f"))
        .expect("open for writing (copies up)");
    writer.write_all_at(b"UPPER", 0).expect("write");
    let n = reader.read_at(&mut buf, 0).expect("read after the copy-up");
    assert_eq!(&buf[..n], b"UPPER data\n", "the reader sees the copy");
    drop(writer);
    let path = CString::new(f.mnt("f").as_os_str().as_bytes()).expect("path");
    // SAFETY: truncate(2) with a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::truncate(path.as_ptr(), 3) }, 0, "truncate");
    let n = reader
        .read_at(&mut buf, 0)
        .expect("read after the truncate");
    assert_eq!(&buf[..n], b"UPP", "the reader sees the truncate");
    assert_eq!(fs::read(f.p("l2/f")).expect("lower"), b"lower data\n");
}

/// While the kernel reads a lower file through its backing file (FUSE
/// passthrough), a truncate by path cannot switch that open over to the
/// copy; it is refused with ETXTBSY, like an open for writing, rather than
/// leaving the reader on stale data. Once the reader is closed it works.
#[test]
fn truncate_waits_for_lower_backed_readers() {
    use std::os::unix::fs::FileExt;
    let f = fixture(true, |r| {
        fs::write(r.join("l1/f"), b"lower data\n").expect("write");
    });
    let reader = fs::File::open(f.mnt("f")).expect("open for reading");
    assert!(f.ov().passthrough_active(), "a lower backing file");
    let path = CString::new(f.mnt("f").as_os_str().as_bytes()).expect("path");
    // SAFETY: truncate(2) with a NUL-terminated path that outlives the call.
    let r = unsafe { libc::truncate(path.as_ptr(), 3) };
    let e = std::io::Error::last_os_error();
    let mut buf = [0u8; 32];
    let n = reader.read_at(&mut buf, 0).expect("read");
    assert_eq!(
        (r, e.raw_os_error(), &buf[..n]),
        (-1, Some(libc::ETXTBSY), &b"lower data\n"[..]),
        "truncate refused, the reader's data unchanged"
    );
    drop(reader);
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::truncate(path.as_ptr(), 3) },
        0,
        "{}",
        std::io::Error::last_os_error()
    );
    assert_eq!(fs::read(f.mnt("f")).expect("read"), b"low");
    assert_eq!(fs::read(f.p("l1/f")).expect("lower"), b"lower data\n");
}
