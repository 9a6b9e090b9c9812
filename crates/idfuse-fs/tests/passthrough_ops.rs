//! passthrough on real mounts over a fresh tmpfs: operations as root and as
//! other users, owners checked on the backing directory, an idmapped view,
//! large-file integrity with and without FUSE passthrough, changes made
//! behind the mirror's back, escapes, and bad input.

mod common;
use common::as_user;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use idfuse::{MountOptions, Session, SessionConfig};
use idfuse_fs::passthrough::{Passthrough, PassthroughOptions};

/// A tmpfs for the backing directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

struct Fixture {
    session: Option<Session<Passthrough>>,
    mnt: PathBuf,
    src: PathBuf,
    _tmpfs: Tmpfs,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Unmount the mirror before its backing tmpfs.
        self.session.take();
    }
}

fn fixture(opts: PassthroughOptions, passthrough: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&src).unwrap();
    fs::create_dir(&mnt).unwrap();
    rustix::mount::mount(
        "tmpfs",
        &src,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        Some(c"mode=0777,size=2g"),
    )
    .unwrap();
    let tmpfs = Tmpfs(src.clone());
    let cfg = SessionConfig {
        passthrough,
        ..SessionConfig::default()
    };
    let fs = Arc::new(Passthrough::new(&src, opts).unwrap());
    let session =
        Session::mount(fs, &mnt, MountOptions::default(), cfg).expect("mount passthrough");
    Fixture {
        session: Some(session),
        mnt,
        src,
        _tmpfs: tmpfs,
        _dir: dir,
    }
}

fn owner(p: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

#[test]
fn operations_as_root_and_as_other_users() {
    let f = fixture(PassthroughOptions::default(), true);
    let (m, s) = (f.mnt.clone(), f.src.clone());
    fs::write(m.join("a"), b"hello").unwrap();
    assert_eq!(
        fs::read(s.join("a")).unwrap(),
        b"hello",
        "written through to the source"
    );
    fs::create_dir(m.join("d")).unwrap();
    std::os::unix::fs::symlink("a", m.join("l")).unwrap();
    fs::hard_link(m.join("a"), m.join("h")).unwrap();
    assert_eq!(fs::metadata(s.join("a")).unwrap().nlink(), 2);
    // SAFETY: mknod with valid C strings.
    unsafe {
        let p = std::ffi::CString::new(m.join("fifo").to_str().unwrap()).unwrap();
        assert_eq!(libc::mkfifo(p.as_ptr(), 0o644), 0);
        let p = std::ffi::CString::new(m.join("null").to_str().unwrap()).unwrap();
        assert_eq!(
            libc::mknod(p.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)),
            0
        );
    }
    assert_eq!(
        fs::symlink_metadata(s.join("null")).unwrap().rdev(),
        libc::makedev(1, 3)
    );
    fs::rename(m.join("h"), m.join("d/h")).unwrap();
    assert!(s.join("d/h").exists());
    fs::set_permissions(m.join("a"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(m.join("a"), Some(1234), Some(2345)).unwrap();
    assert_eq!(owner(&s.join("a")), (1234, 2345));
    assert_eq!(fs::metadata(s.join("a")).unwrap().mode() & 0o777, 0o600);
    rustix::fs::setxattr(m.join("a"), "user.k", b"v", rustix::fs::XattrFlags::empty()).unwrap();
    let mut buf = [0u8; 8];
    let n = rustix::fs::getxattr(s.join("a"), "user.k", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"v", "xattr stored on the backing file");
    // Other users create: owned by them on disk, never by the daemon.
    fs::set_permissions(m.join("d"), fs::Permissions::from_mode(0o777)).unwrap();
    let d = m.join("d");
    let code = as_user(1000, 1001, &[], 0o022, || {
        let ok = fs::write(d.join("u"), b"x").is_ok()
            && fs::create_dir(d.join("ud")).is_ok()
            && std::os::unix::fs::symlink("u", d.join("ul")).is_ok();
        i32::from(!ok)
    });
    assert_eq!(code, 0);
    for n in ["u", "ud", "ul"] {
        assert_eq!(owner(&s.join("d").join(n)), (1000, 1001), "{n} on disk");
    }
    // The daemon makes no decision of its own: the kernel refuses this.
    let a = m.join("a");
    let code = as_user(1000, 1001, &[], 0o022, || match fs::read(&a) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(1),
    });
    assert_eq!(code, libc::EACCES);
    // renameat2 flags and whiteouts.
    fs::write(m.join("x"), b"X").unwrap();
    fs::write(m.join("y"), b"Y").unwrap();
    let r2 = |a: &str, b: &str, flags: rustix::fs::RenameFlags| {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            m.join(a),
            rustix::fs::CWD,
            m.join(b),
            flags,
        )
    };
    assert_eq!(
        r2("x", "y", rustix::fs::RenameFlags::NOREPLACE).unwrap_err(),
        rustix::io::Errno::EXIST
    );
    r2("x", "y", rustix::fs::RenameFlags::EXCHANGE).unwrap();
    assert_eq!(fs::read(s.join("x")).unwrap(), b"Y");
    r2("x", "z", rustix::fs::RenameFlags::WHITEOUT).unwrap();
    assert_eq!(
        fs::symlink_metadata(s.join("x")).unwrap().rdev(),
        0,
        "whiteout on disk"
    );
    // O_TMPFILE, fallocate, SEEK_DATA, copy_file_range, fsync, syncfs.
    let t = rustix::fs::open(
        &m,
        rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::RDWR,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    rustix::io::write(&t, b"tmp").unwrap();
    rustix::fs::linkat(
        &t,
        "",
        rustix::fs::CWD,
        m.join("tmp"),
        rustix::fs::AtFlags::EMPTY_PATH,
    )
    .unwrap();
    assert_eq!(fs::read(s.join("tmp")).unwrap(), b"tmp");
    let mut sp = fs::File::create(m.join("sparse")).unwrap();
    rustix::fs::fallocate(&sp, rustix::fs::FallocateFlags::KEEP_SIZE, 0, 4096).unwrap();
    std::io::Seek::seek(&mut sp, std::io::SeekFrom::Start(1 << 20)).unwrap();
    sp.write_all(b"end").unwrap();
    sp.sync_all().unwrap();
    let r = fs::File::open(m.join("sparse")).unwrap();
    let direct = fs::File::open(s.join("sparse")).unwrap();
    for q in [
        rustix::fs::SeekFrom::Hole(0),
        rustix::fs::SeekFrom::Data(4096),
    ] {
        assert_eq!(
            rustix::fs::seek(&r, q).unwrap(),
            rustix::fs::seek(&direct, q).unwrap(),
            "{q:?} as on tmpfs"
        );
    }
    let dst = fs::File::create(m.join("copy")).unwrap();
    let n = rustix::fs::copy_file_range(&r, Some(&mut (1 << 20)), &dst, Some(&mut 0), 3).unwrap();
    assert_eq!(n, 3);
    assert_eq!(fs::read(s.join("copy")).unwrap(), b"end");
    rustix::fs::syncfs(&r).unwrap();
    // statx birth time passes through.
    let sx = rustix::fs::statx(
        rustix::fs::CWD,
        m.join("copy"),
        rustix::fs::AtFlags::empty(),
        rustix::fs::StatxFlags::BTIME,
    )
    .unwrap();
    assert!(
        sx.stx_mask & rustix::fs::StatxFlags::BTIME.bits() != 0,
        "btime reported"
    );
    // readdir sees everything.
    let mut names: Vec<String> = fs::read_dir(&m)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(
        names.contains(&"null".to_string()) && names.contains(&"tmp".to_string()),
        "{names:?}"
    );
}

#[test]
fn setgid_acl_and_umask_behave_as_on_the_backing_fs() {
    let f = fixture(PassthroughOptions::default(), true);
    let (m, s) = (f.mnt.clone(), f.src.clone());
    // The same operations directly on tmpfs and through the mirror.
    for base in [s.join("direct"), m.join("mirrored")] {
        fs::create_dir(&base).unwrap();
        std::os::unix::fs::chown(&base, Some(0), Some(777)).unwrap();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o2777)).unwrap();
        fs::create_dir(base.join("acl")).unwrap();
        fs::set_permissions(base.join("acl"), fs::Permissions::from_mode(0o777)).unwrap();
        let mut def = 2u32.to_le_bytes().to_vec();
        for (t, p, i) in [
            (1u16, 7u16, 0u32),
            (2, 7, 4321),
            (4, 5, 0),
            (0x10, 7, 0),
            (0x20, 5, 0),
        ] {
            def.extend_from_slice(&t.to_le_bytes());
            def.extend_from_slice(&p.to_le_bytes());
            def.extend_from_slice(&i.to_le_bytes());
        }
        rustix::fs::setxattr(
            base.join("acl"),
            "system.posix_acl_default",
            &def,
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let b = base.clone();
        let code = as_user(1000, 1000, &[], 0o077, || {
            let ok = fs::write(b.join("f"), b"").is_ok()
                && fs::create_dir(b.join("sub")).is_ok()
                && fs::write(b.join("acl/f"), b"").is_ok();
            i32::from(!ok)
        });
        assert_eq!(code, 0, "{}", base.display());
    }
    let d = s.join("direct");
    let p = s.join("mirrored");
    for rel in ["f", "sub", "acl/f"] {
        let a = fs::metadata(d.join(rel)).unwrap();
        let b = fs::metadata(p.join(rel)).unwrap();
        assert_eq!(
            (a.uid(), a.gid(), a.mode()),
            (b.uid(), b.gid(), b.mode()),
            "{rel}: direct vs mirrored"
        );
    }
    assert_eq!(
        fs::metadata(p.join("sub")).unwrap().mode() & libc::S_ISGID,
        libc::S_ISGID
    );
    assert_eq!(
        fs::metadata(p.join("f")).unwrap().gid(),
        777,
        "setgid group inherited"
    );
    assert_eq!(
        fs::metadata(p.join("acl/f")).unwrap().mode() & 0o777,
        0o664,
        "default ACL beats umask 077"
    );
}

#[test]
fn killpriv_on_write_by_another_user() {
    let f = fixture(PassthroughOptions::default(), true);
    let file = f.mnt.join("suid");
    fs::write(&file, b"x").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o6777)).unwrap();
    let p = file.clone();
    let code = as_user(1000, 1000, &[], 0o022, || {
        match fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .and_then(|mut h| h.write_all(b"y"))
        {
            Ok(()) => 0,
            Err(e) => e.raw_os_error().unwrap_or(1),
        }
    });
    assert_eq!(code, 0);
    assert_eq!(
        fs::metadata(f.src.join("suid")).unwrap().mode() & 0o7777,
        0o777,
        "setid bits cleared on disk"
    );
}

fn integrity(passthrough: bool) {
    let f = fixture(PassthroughOptions::default(), passthrough);
    let path = f.mnt.join("big");
    let block: Vec<u8> = (0..(1 << 20))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut w = fs::File::create(&path).unwrap();
    let mut sum_written = 0u64;
    for i in 0..1024u64 {
        let mut b = block.clone();
        b[..8].copy_from_slice(&i.to_le_bytes());
        sum_written = sum_written.wrapping_add(checksum(&b));
        w.write_all(&b).unwrap();
    }
    w.sync_all().unwrap();
    drop(w);
    assert_eq!(fs::metadata(&path).unwrap().len(), 1 << 30);
    fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    for p in [path.clone(), f.src.join("big")] {
        let mut r = fs::File::open(&p).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut sum = 0u64;
        for i in 0..1024u64 {
            r.read_exact(&mut buf).unwrap();
            assert_eq!(&buf[..8], &i.to_le_bytes(), "block {i} of {}", p.display());
            sum = sum.wrapping_add(checksum(&buf));
        }
        assert_eq!(sum, sum_written, "checksum of {}", p.display());
    }
    if passthrough {
        assert!(
            f.session
                .as_ref()
                .unwrap()
                .filesystem()
                .passthrough_active(),
            "FUSE passthrough was used"
        );
    }
}

fn checksum(b: &[u8]) -> u64 {
    b.chunks(8).fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
        let mut x = [0u8; 8];
        x[..c.len()].copy_from_slice(c);
        (h ^ u64::from_le_bytes(x)).wrapping_mul(0x100_0000_01b3)
    })
}

#[test]
fn one_gib_integrity_with_passthrough() {
    integrity(true);
}

#[test]
fn one_gib_integrity_without_passthrough() {
    integrity(false);
}

#[test]
fn changes_in_source_show_within_the_timeout() {
    let opts = PassthroughOptions {
        entry_timeout: Duration::from_millis(200),
        attr_timeout: Duration::from_millis(200),
        ..PassthroughOptions::default()
    };
    let f = fixture(opts, true);
    fs::write(f.src.join("f"), b"one").unwrap();
    assert_eq!(fs::metadata(f.mnt.join("f")).unwrap().len(), 3);
    fs::write(f.src.join("f"), b"longer").unwrap();
    fs::write(f.src.join("new"), b"").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        fs::metadata(f.mnt.join("f")).unwrap().len(),
        6,
        "size change visible"
    );
    assert_eq!(fs::read(f.mnt.join("f")).unwrap(), b"longer");
    assert!(f.mnt.join("new").exists());
    fs::remove_file(f.src.join("new")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!f.mnt.join("new").exists(), "removal visible");
}

#[test]
fn nothing_escapes_the_source() {
    let f = fixture(PassthroughOptions::default(), true);
    std::os::unix::fs::symlink("/etc", f.src.join("etc")).unwrap();
    std::os::unix::fs::symlink("../../../../../../etc/passwd", f.src.join("up")).unwrap();
    // Through the mount the kernel resolves symlinks itself: the link shows
    // as a link, and the daemon never opened /etc on anyone's behalf.
    assert!(fs::symlink_metadata(f.mnt.join("etc"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_link(f.mnt.join("up")).unwrap(),
        Path::new("../../../../../../etc/passwd")
    );
    // Creating through a symlinked directory is a kernel path walk; a name
    // with a slash or .. never reaches the daemon as one component.
    let err = fs::write(f.mnt.join("nope/../../x"), b"").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    // The daemon's own resolution refuses ".." and symlinks beneath.
    let pt = f.session.as_ref().unwrap().filesystem();
    let _ = pt;
    assert!(!f.src.parent().unwrap().join("x").exists());
}

#[test]
fn bad_input_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let e = Passthrough::new(&dir.path().join("missing"), PassthroughOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
    let file = dir.path().join("file");
    fs::write(&file, b"").unwrap();
    let e = Passthrough::new(&file, PassthroughOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not a directory"), "{e}");
    fs::create_dir(dir.path().join("src")).unwrap();
    fs::create_dir(dir.path().join("src/inner")).unwrap();
    let e = Passthrough::check_mountpoint(&dir.path().join("src"), &dir.path().join("src/inner"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("inside the source"), "{e}");
    let e = Passthrough::check_mountpoint(&dir.path().join("src"), &dir.path().join("src"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("inside the source"), "{e}");
    let mut o = PassthroughOptions::default();
    assert_eq!(o.parse_option("entry_timeout", Some("0.5")), Ok(true));
    assert_eq!(o.entry_timeout, Duration::from_millis(500));
    assert!(o.parse_option("attr_timeout", Some("soon")).is_err());
    assert_eq!(o.parse_option("bogus", None), Ok(false));
}

#[test]
fn forgets_return_the_inode_table_to_baseline() {
    let f = fixture(PassthroughOptions::default(), true);
    for i in 0..2000 {
        fs::write(f.src.join(format!("f{i}")), b"").unwrap();
    }
    let pt = f.session.as_ref().unwrap().filesystem().clone();
    let base = pt.inode_count();
    for i in 0..2000 {
        fs::metadata(f.mnt.join(format!("f{i}"))).unwrap();
    }
    assert!(pt.inode_count() >= base + 2000);
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    let start = std::time::Instant::now();
    while pt.inode_count() > base + 10 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        pt.inode_count() <= base + 10,
        "{} inodes left, baseline {base}",
        pt.inode_count()
    );
}

#[test]
fn idmapped_view_stores_fs_ids() {
    let f = fixture(PassthroughOptions::default(), true);
    let view = f._dir.path().join("view");
    fs::create_dir(&view).unwrap();
    fs::create_dir(f.src.join("home")).unwrap();
    std::os::unix::fs::chown(f.src.join("home"), Some(123), Some(123)).unwrap();
    let ns = idfuse_idmap::UserNamespace::create(&"b:0:100000:65536".parse().unwrap()).unwrap();
    let _g = idfuse_idmap::idmap_mount(&f.mnt, &view, &ns, idfuse_idmap::IdmapOptions::default())
        .expect("idmap the mirror");
    assert_eq!(
        owner(&view.join("home")),
        (100123, 100123),
        "through the view"
    );
    let home = view.join("home");
    let code = as_user(100123, 100123, &[], 0o022, || {
        let ok = fs::write(home.join("f"), b"x").is_ok() && fs::create_dir(home.join("d")).is_ok();
        i32::from(!ok)
    });
    assert_eq!(code, 0);
    assert_eq!(
        owner(&f.src.join("home/f")),
        (123, 123),
        "stored with fs ids on disk"
    );
    assert_eq!(owner(&f.src.join("home/d")), (123, 123));
    assert_eq!(
        owner(&f.mnt.join("home/f")),
        (123, 123),
        "plain mount shows fs ids"
    );
    assert_eq!(owner(&view.join("home/f")), (100123, 100123));
    // chown through the view stores fs ids; host root itself has no
    // mapping in this view, so the VFS refuses its chown with EOVERFLOW.
    std::os::unix::fs::chown(view.join("home/f"), Some(100555), None).unwrap();
    assert_eq!(owner(&f.src.join("home/f")).0, 555);
    let e = std::os::unix::fs::chown(view.join("home/f"), Some(5), None).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EOVERFLOW));
}

#[test]
fn full_backing_fs_and_vanished_source_are_errors_not_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let (src, mnt) = (dir.path().join("src"), dir.path().join("mnt"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&mnt).unwrap();
    rustix::mount::mount(
        "tmpfs",
        &src,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        Some(c"mode=0777,size=1m"),
    )
    .unwrap();
    let _t = Tmpfs(src.clone());
    for passthrough in [true, false] {
        let fs_ = Arc::new(Passthrough::new(&src, PassthroughOptions::default()).unwrap());
        let cfg = SessionConfig {
            passthrough,
            ..SessionConfig::default()
        };
        let session = Session::mount(fs_, &mnt, MountOptions::default(), cfg).unwrap();
        // ENOSPC from the backing filesystem reaches the writer.
        let mut f = fs::File::create(mnt.join("big")).unwrap();
        let chunk = vec![1u8; 256 << 10];
        let err = (0..16)
            .find_map(|_| f.write_all(&chunk).and_then(|_| f.sync_all()).err())
            .expect("a 1 MiB tmpfs fills up");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        drop(f);
        fs::remove_file(mnt.join("big")).unwrap();
        // RELEASE is asynchronous: the space returns once the daemon has
        // closed its backing file.
        let start = std::time::Instant::now();
        while rustix::fs::statvfs(&src).unwrap().f_bfree < 128
            && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Files removed behind the mirror's back: errors, and the daemon lives.
        fs::create_dir(mnt.join("d")).unwrap();
        fs::write(mnt.join("d/f"), b"x").unwrap();
        let held = fs::File::open(mnt.join("d/f")).unwrap();
        fs::remove_dir_all(src.join("d")).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert!(fs::metadata(mnt.join("d/f")).is_err());
        assert_eq!(fs::read_dir(&mnt).unwrap().count(), 0);
        drop(held);
        assert!(
            session.running_workers() > 0,
            "the daemon survived (passthrough {passthrough})"
        );
        drop(session);
    }
}
