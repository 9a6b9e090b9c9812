//! memfs on a real mount, exercised through ordinary syscalls.

mod common;
use common::as_user;

use std::ffi::CString;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use idfuse::{MountOptions, Session, SessionConfig};
use idfuse_fs::memfs::{MemFs, MemFsOptions};

/// Fields drop in order: the session unmounts before the directory under
/// it is removed (else the removal empties the mount and then fails on the
/// busy mountpoint, leaving it behind).
struct Mnt {
    session: Session<MemFs>,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

fn mount() -> Mnt {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let fs = Arc::new(MemFs::new(MemFsOptions {
        root_mode: 0o777,
        ..MemFsOptions::default()
    }));
    let session = Session::mount(fs, &path, MountOptions::default(), SessionConfig::default())
        .expect("mount memfs");
    Mnt {
        session,
        path,
        _dir: dir,
    }
}

fn c(p: &Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[test]
fn files_directories_links_and_special_files() {
    let m = mount();
    let p = &m.path;
    fs::write(p.join("a"), b"hello").unwrap();
    assert_eq!(fs::read(p.join("a")).unwrap(), b"hello");
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(p.join("a"))
        .unwrap();
    f.write_all(b" world").unwrap();
    drop(f);
    assert_eq!(fs::read_to_string(p.join("a")).unwrap(), "hello world");
    fs::create_dir(p.join("d")).unwrap();
    fs::create_dir(p.join("d/e")).unwrap();
    assert_eq!(fs::metadata(p.join("d")).unwrap().nlink(), 3);
    assert_eq!(
        fs::remove_dir(p.join("d")).unwrap_err().raw_os_error(),
        Some(libc::ENOTEMPTY)
    );
    std::os::unix::fs::symlink("a", p.join("s")).unwrap();
    assert_eq!(fs::read_link(p.join("s")).unwrap(), Path::new("a"));
    assert_eq!(fs::read(p.join("s")).unwrap(), b"hello world");
    fs::hard_link(p.join("a"), p.join("h")).unwrap();
    assert_eq!(fs::metadata(p.join("a")).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(p.join("a")).unwrap().ino(),
        fs::metadata(p.join("h")).unwrap().ino()
    );
    // SAFETY: mknod/mkfifo with valid C strings.
    unsafe {
        assert_eq!(
            libc::mknod(
                c(&p.join("chr")).as_ptr(),
                libc::S_IFCHR | 0o600,
                libc::makedev(1, 3)
            ),
            0
        );
        assert_eq!(
            libc::mknod(
                c(&p.join("blk")).as_ptr(),
                libc::S_IFBLK | 0o600,
                libc::makedev(7, 0)
            ),
            0
        );
        assert_eq!(libc::mkfifo(c(&p.join("fifo")).as_ptr(), 0o644), 0);
    }
    let chr = fs::symlink_metadata(p.join("chr")).unwrap();
    assert_eq!(
        (chr.mode() & libc::S_IFMT, chr.rdev()),
        (libc::S_IFCHR, libc::makedev(1, 3))
    );
    assert_eq!(
        fs::symlink_metadata(p.join("fifo")).unwrap().mode() & libc::S_IFMT,
        libc::S_IFIFO
    );
    fs::remove_file(p.join("h")).unwrap();
    assert_eq!(fs::metadata(p.join("a")).unwrap().nlink(), 1);
    let mut names: Vec<String> = fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "blk", "chr", "d", "fifo", "s"]);
    assert_eq!(
        fs::hard_link(p.join("d"), p.join("dl"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EPERM)
    );
    let long = "x".repeat(256);
    assert_eq!(
        fs::write(p.join(long), b"").unwrap_err().raw_os_error(),
        Some(libc::ENAMETOOLONG)
    );
    drop(m.session);
}

#[test]
fn attributes_truncate_times_and_statfs() {
    let m = mount();
    let f = m.path.join("f");
    fs::write(&f, vec![7u8; 100_000]).unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&f, Some(1234), Some(2345)).unwrap();
    let md = fs::metadata(&f).unwrap();
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.gid(), md.len()),
        (0o640, 1234, 2345, 100_000)
    );
    fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(10)
        .unwrap();
    assert_eq!(fs::read(&f).unwrap(), vec![7u8; 10]);
    fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(20)
        .unwrap();
    let mut want = vec![7u8; 10];
    want.extend_from_slice(&[0; 10]);
    assert_eq!(
        fs::read(&f).unwrap(),
        want,
        "extending truncate reads zeros"
    );
    let times = [
        libc::timespec {
            tv_sec: 1_000_000,
            tv_nsec: 5,
        },
        libc::timespec {
            tv_sec: 2_000_000,
            tv_nsec: 7,
        },
    ];
    // SAFETY: valid path and array of two timespecs.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c(&f).as_ptr(), times.as_ptr(), 0) },
        0
    );
    let md = fs::metadata(&f).unwrap();
    assert_eq!(
        (md.atime(), md.mtime(), md.mtime_nsec()),
        (1_000_000, 2_000_000, 7)
    );
    let st = rustix::fs::statvfs(&m.path).unwrap();
    assert!(st.f_blocks > 0 && st.f_namemax == 255);
}

#[test]
fn rename_flags_and_whiteout() {
    let m = mount();
    let p = &m.path;
    fs::write(p.join("a"), b"A").unwrap();
    fs::write(p.join("b"), b"B").unwrap();
    let r2 = |a: &str, b: &str, flags: u32| -> i32 {
        // SAFETY: renameat2 with valid C strings.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                c(&p.join(a)).as_ptr(),
                libc::AT_FDCWD,
                c(&p.join(b)).as_ptr(),
                flags,
            )
        };
        if r == 0 {
            0
        } else {
            errno()
        }
    };
    assert_eq!(r2("a", "b", libc::RENAME_NOREPLACE), libc::EEXIST);
    assert_eq!(r2("a", "b", libc::RENAME_EXCHANGE), 0);
    assert_eq!(
        (
            fs::read(p.join("a")).unwrap(),
            fs::read(p.join("b")).unwrap()
        ),
        (b"B".to_vec(), b"A".to_vec())
    );
    assert_eq!(r2("a", "c", libc::RENAME_WHITEOUT), 0);
    let wo = fs::symlink_metadata(p.join("a")).unwrap();
    assert_eq!(
        (wo.mode() & libc::S_IFMT, wo.rdev()),
        (libc::S_IFCHR, 0),
        "whiteout left at the old name"
    );
    assert_eq!(fs::read(p.join("c")).unwrap(), b"B");
    fs::create_dir_all(p.join("x/y")).unwrap();
    assert_eq!(r2("x", "x/y/z", 0), libc::EINVAL, "rename into own subtree");
    fs::create_dir(p.join("e")).unwrap();
    assert_eq!(r2("c", "e", 0), libc::EISDIR);
    assert_eq!(r2("e", "c", 0), libc::ENOTDIR);
    fs::rename(p.join("c"), p.join("x/y/c")).unwrap();
    assert_eq!(fs::read(p.join("x/y/c")).unwrap(), b"B");
}

#[test]
fn tmpfile_fallocate_seek_and_copy_range() {
    let m = mount();
    let p = &m.path;
    let fd = rustix::fs::open(
        p,
        rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::RDWR,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .expect("O_TMPFILE");
    rustix::io::write(&fd, b"anonymous").unwrap();
    rustix::fs::linkat(
        &fd,
        "",
        rustix::fs::CWD,
        p.join("named"),
        rustix::fs::AtFlags::EMPTY_PATH,
    )
    .expect("linkat tmpfile");
    assert_eq!(fs::read(p.join("named")).unwrap(), b"anonymous");

    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(p.join("sparse"))
        .unwrap();
    f.seek(SeekFrom::Start(1 << 20)).unwrap();
    f.write_all(b"data").unwrap();
    let fd = rustix::fd::AsFd::as_fd(&f);
    assert_eq!(
        rustix::fs::seek(fd, rustix::fs::SeekFrom::Data(0)).unwrap(),
        1 << 20,
        "SEEK_DATA skips the hole"
    );
    assert_eq!(
        rustix::fs::seek(fd, rustix::fs::SeekFrom::Hole(0)).unwrap(),
        0,
        "SEEK_HOLE at 0"
    );
    rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::empty(), 0, 8192).unwrap();
    assert_eq!(
        rustix::fs::seek(fd, rustix::fs::SeekFrom::Data(0)).unwrap(),
        0,
        "allocated range is data"
    );
    rustix::fs::fallocate(
        fd,
        rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
        1 << 20,
        2,
    )
    .unwrap();
    let mut tail = Vec::new();
    f.seek(SeekFrom::Start(1 << 20)).unwrap();
    f.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, b"\0\0ta", "punched bytes read as zeros");
    assert!(
        fs::metadata(p.join("sparse")).unwrap().blocks() < 1000,
        "sparse file stays small"
    );

    fs::write(p.join("src"), b"0123456789").unwrap();
    let src = fs::File::open(p.join("src")).unwrap();
    let dst = fs::File::create(p.join("dst")).unwrap();
    let mut off_in = 2u64;
    let mut off_out = 0u64;
    let n =
        rustix::fs::copy_file_range(&src, Some(&mut off_in), &dst, Some(&mut off_out), 5).unwrap();
    assert_eq!(n, 5);
    assert_eq!(fs::read(p.join("dst")).unwrap(), b"23456");
}

#[test]
fn xattrs_are_stored_verbatim() {
    let m = mount();
    let f = m.path.join("f");
    fs::write(&f, b"").unwrap();
    rustix::fs::setxattr(&f, "user.k", b"v1", rustix::fs::XattrFlags::CREATE).unwrap();
    assert_eq!(
        rustix::fs::setxattr(&f, "user.k", b"v2", rustix::fs::XattrFlags::CREATE).unwrap_err(),
        rustix::io::Errno::EXIST
    );
    assert_eq!(
        rustix::fs::setxattr(&f, "user.n", b"v", rustix::fs::XattrFlags::REPLACE).unwrap_err(),
        rustix::io::Errno::NODATA
    );
    let cap = [
        0u8, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    rustix::fs::setxattr(
        &f,
        "security.capability",
        &cap,
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let n = rustix::fs::getxattr(&f, "user.k", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"v1");
    let n = rustix::fs::listxattr(&f, &mut buf).unwrap();
    assert!(buf[..n].split(|b| *b == 0).any(|x| x == b"user.k"));
    rustix::fs::removexattr(&f, "user.k").unwrap();
    assert_eq!(
        rustix::fs::getxattr(&f, "user.k", &mut buf).unwrap_err(),
        rustix::io::Errno::NODATA
    );
}

/// ACL xattr bytes: version 2, then (tag, perm, id) entries.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (t, p, i) in entries {
        v.extend_from_slice(&t.to_le_bytes());
        v.extend_from_slice(&p.to_le_bytes());
        v.extend_from_slice(&i.to_le_bytes());
    }
    v
}

#[test]
fn umask_default_acl_and_setgid_directories() {
    let m = mount();
    let p = m.path.clone();
    // The umask applies when there is no default ACL.
    let code = as_user(1000, 1000, &[], 0o027, || {
        match fs::write(p.join("u"), b"") {
            Ok(()) => 0,
            Err(_) => 1,
        }
    });
    assert_eq!(code, 0);
    assert_eq!(fs::metadata(p.join("u")).unwrap().mode() & 0o777, 0o640);
    // A default ACL wins over the umask.
    fs::create_dir(p.join("acl")).unwrap();
    fs::set_permissions(p.join("acl"), fs::Permissions::from_mode(0o777)).unwrap();
    let def = acl(&[
        (0x01, 7, 0),
        (0x02, 7, 4321),
        (0x04, 5, 0),
        (0x10, 7, 0),
        (0x20, 5, 0),
    ]);
    rustix::fs::setxattr(
        p.join("acl"),
        "system.posix_acl_default",
        &def,
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let code = as_user(1000, 1000, &[], 0o077, || {
        match fs::write(p.join("acl/f"), b"") {
            Ok(()) => 0,
            Err(_) => 1,
        }
    });
    assert_eq!(code, 0);
    let mode = fs::metadata(p.join("acl/f")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o664, "mode from the default ACL, not the umask 077");
    let mut buf = [0u8; 128];
    let n = rustix::fs::getxattr(p.join("acl/f"), "system.posix_acl_access", &mut buf)
        .expect("inherited access ACL");
    assert!(n >= 4 + 5 * 8);
    // The named user entry is enforced by the kernel (FUSE_POSIX_ACL).
    fs::write(p.join("acl/f"), b"x").unwrap();
    fs::set_permissions(p.join("acl/f"), fs::Permissions::from_mode(0o660)).unwrap();
    let pf = p.join("acl/f");
    let code = as_user(4321, 4321, &[], 0o022, || match fs::read(&pf) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(1),
    });
    assert_eq!(code, 0, "user 4321 reads through its named ACL entry");
    let code = as_user(4322, 4322, &[], 0o022, || match fs::read(&pf) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(1),
    });
    assert_eq!(
        code,
        libc::EACCES,
        "user 4322 has no entry and no other access"
    );
    // Setgid directories pass on their group, and S_ISGID to subdirectories.
    fs::create_dir(p.join("sg")).unwrap();
    std::os::unix::fs::chown(p.join("sg"), Some(0), Some(777)).unwrap();
    fs::set_permissions(p.join("sg"), fs::Permissions::from_mode(0o2777)).unwrap();
    let sg = p.join("sg");
    let code = as_user(1000, 1000, &[], 0o022, || {
        let ok = fs::write(sg.join("f"), b"").is_ok() && fs::create_dir(sg.join("d")).is_ok();
        i32::from(!ok)
    });
    assert_eq!(code, 0);
    let f = fs::metadata(p.join("sg/f")).unwrap();
    let d = fs::metadata(p.join("sg/d")).unwrap();
    assert_eq!(
        (f.uid(), f.gid()),
        (1000, 777),
        "file inherits the directory's group"
    );
    assert_eq!(
        (d.gid(), d.mode() & libc::S_ISGID),
        (777, libc::S_ISGID),
        "subdirectory inherits group and S_ISGID"
    );
}

#[test]
fn killpriv_clears_setid_on_write_by_others() {
    let m = mount();
    let f = m.path.join("suid");
    fs::write(&f, b"x").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o6777)).unwrap();
    let pf = f.clone();
    let code = as_user(1000, 1000, &[], 0o022, || {
        match fs::OpenOptions::new()
            .write(true)
            .open(&pf)
            .and_then(|mut h| h.write_all(b"y"))
        {
            Ok(()) => 0,
            Err(e) => e.raw_os_error().unwrap_or(1),
        }
    });
    assert_eq!(code, 0);
    assert_eq!(
        fs::metadata(&f).unwrap().mode() & 0o7777,
        0o777,
        "S_ISUID and S_ISGID cleared"
    );
    fs::set_permissions(&f, fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::chown(&f, Some(5), None).unwrap();
    assert_eq!(
        fs::metadata(&f).unwrap().mode() & 0o7777,
        0o755,
        "chown clears S_ISUID"
    );
}

#[test]
fn owners_come_from_the_creating_process() {
    let m = mount();
    let p = m.path.clone();
    let code = as_user(1234, 2345, &[], 0o022, || {
        let ok = fs::write(p.join("f"), b"").is_ok()
            && fs::create_dir(p.join("d")).is_ok()
            && std::os::unix::fs::symlink("f", p.join("l")).is_ok();
        i32::from(!ok)
    });
    assert_eq!(code, 0);
    for name in ["f", "d", "l"] {
        let md = fs::symlink_metadata(m.path.join(name)).unwrap();
        assert_eq!((md.uid(), md.gid()), (1234, 2345), "{name}");
    }
}

#[test]
fn forgotten_inodes_are_freed() {
    let m = mount();
    let base = m.session.filesystem().inode_count();
    for i in 0..1000 {
        fs::write(m.path.join(format!("f{i}")), b"").unwrap();
    }
    let listed = fs::read_dir(&m.path).unwrap().count();
    assert_eq!(listed, 1000);
    for i in 0..1000 {
        fs::remove_file(m.path.join(format!("f{i}"))).unwrap();
    }
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    let start = std::time::Instant::now();
    while m.session.filesystem().inode_count() > base
        && start.elapsed() < std::time::Duration::from_secs(5)
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        m.session.filesystem().inode_count(),
        base,
        "inode table back at its baseline"
    );
}

#[test]
fn idmapped_memfs_stores_mapped_owners() {
    let m = mount();
    let work = tempfile::tempdir().unwrap();
    let view = work.path().join("view");
    fs::create_dir(&view).unwrap();
    let ns =
        idfuse_idmap::UserNamespace::create(&"b:0:0:1 b:1000:11000:1000".parse().unwrap()).unwrap();
    let _g = idfuse_idmap::idmap_mount(&m.path, &view, &ns, idfuse_idmap::IdmapOptions::default())
        .expect("idmap memfs");
    let v = view.clone();
    let code = as_user(11001, 11002, &[], 0o022, || {
        i32::from(fs::write(v.join("by-11001"), b"x").is_err())
    });
    assert_eq!(code, 0, "create through the view as 11001");
    let plain = fs::metadata(m.path.join("by-11001")).unwrap();
    let mapped = fs::metadata(view.join("by-11001")).unwrap();
    assert_eq!(
        (plain.uid(), plain.gid()),
        (1001, 1002),
        "stored with the mapped-back owner"
    );
    assert_eq!(
        (mapped.uid(), mapped.gid()),
        (11001, 11002),
        "seen as the creator through the view"
    );
}
