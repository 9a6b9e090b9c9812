//! passthrough on real mounts over a fresh tmpfs: operations as root and as
//! other users, owners checked on the backing directory, an idmapped view,
//! large-file integrity with and without FUSE passthrough, changes made
//! behind the mirror's back, escapes, bad input, and a daemon running in a
//! user namespace.

mod common;

use common::Tmpfs;

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idfuse::{MountOptions, Session, SessionConfig};
use idfuse_fs::passthrough::{InodeHandles, Passthrough, PassthroughOptions};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, XattrFlags, CWD};

struct Fixture {
    session: Option<Session<Passthrough>>,
    mnt: PathBuf,
    src: PathBuf,
    _tmpfs: Tmpfs,
    dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Unmount the mirror before its backing tmpfs.
        self.session.take();
    }
}

impl Fixture {
    fn pt(&self) -> &Arc<Passthrough> {
        self.session.as_ref().expect("mounted").filesystem()
    }
}

/// `IDFUSE_INODE_HANDLES=always|never|auto` runs every mirror holding its
/// inodes that way (the default, auto, uses fds this far below the limit).
fn handles_from_env(mut opts: PassthroughOptions) -> PassthroughOptions {
    match std::env::var("IDFUSE_INODE_HANDLES").as_deref() {
        Ok("always") => opts.inode_handles = InodeHandles::Always,
        Ok("never") => opts.inode_handles = InodeHandles::Never,
        Ok("auto") | Err(_) => {}
        Ok(v) => panic!("IDFUSE_INODE_HANDLES={v}: expected always, auto or never"),
    }
    opts
}

fn fixture_with(opts: PassthroughOptions, cfg: SessionConfig) -> Fixture {
    let opts = handles_from_env(opts);
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&src).expect("mkdir src");
    fs::create_dir(&mnt).expect("mkdir mnt");
    let tmpfs = Tmpfs::mount(&src, c"mode=0777,size=2g");
    let fs = Arc::new(Passthrough::new(&src, opts).expect("passthrough"));
    let session =
        Session::mount(fs, &mnt, MountOptions::default(), cfg).expect("mount passthrough");
    Fixture {
        session: Some(session),
        mnt,
        src,
        _tmpfs: tmpfs,
        dir,
    }
}

fn fixture(opts: PassthroughOptions, passthrough: bool) -> Fixture {
    fixture_with(
        opts,
        SessionConfig {
            passthrough,
            ..SessionConfig::default()
        },
    )
}

/// Run `f` in a forked child with these credentials; its exit code.
fn as_user(uid: u32, gid: u32, groups: &[u32], umask: u32, f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child makes syscalls and leaves with _exit.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: credential syscalls on the child itself.
            let code = unsafe {
                libc::umask(umask);
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setresgid(gid, gid, gid) != 0
                    || libc::setresuid(uid, uid, uid) != 0
                {
                    99
                } else {
                    f()
                }
            };
            // SAFETY: leave without running the harness's destructors.
            unsafe { libc::_exit(code) }
        }
        pid => {
            let mut st = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                128
            }
        }
    }
}

/// 0 on success, else the errno (or 1).
fn code<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(1),
    }
}

fn owner(p: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).expect("lstat");
    (m.uid(), m.gid())
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).expect("no NUL in test paths")
}

fn mounted(p: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let p = p.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m == p))
}

/// `system.posix_acl_*` value from `(tag, perm, id)` entries.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(t, p, i) in entries {
        // Only named entries carry an id; the kernel stores -1 for others.
        let i = if t == ACL_USER || t == ACL_GROUP {
            i
        } else {
            u32::MAX
        };
        v.extend_from_slice(&t.to_le_bytes());
        v.extend_from_slice(&p.to_le_bytes());
        v.extend_from_slice(&i.to_le_bytes());
    }
    v
}

const ACL_USER_OBJ: u16 = 1;
const ACL_USER: u16 = 2;
const ACL_GROUP_OBJ: u16 = 4;
const ACL_GROUP: u16 = 8;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;

fn get_xattr(p: &Path, name: &str) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(p, name, &mut buf)
        .unwrap_or_else(|e| panic!("getxattr {name} on {}: {e}", p.display()));
    buf.truncate(n);
    buf
}

#[test]
fn operations_as_root() {
    let f = fixture(PassthroughOptions::default(), true);
    let (m, s) = (f.mnt.clone(), f.src.clone());
    fs::write(m.join("a"), b"hello").expect("write");
    assert_eq!(
        fs::read(s.join("a")).expect("read"),
        b"hello",
        "written through to the source"
    );
    assert!(f.pt().passthrough_active(), "root gets FUSE passthrough");
    fs::create_dir(m.join("d")).expect("mkdir");
    std::os::unix::fs::symlink("a", m.join("l")).expect("symlink");
    assert_eq!(
        fs::read_link(s.join("l")).expect("readlink"),
        Path::new("a")
    );
    fs::hard_link(m.join("a"), m.join("h")).expect("link");
    assert_eq!(fs::metadata(s.join("a")).expect("stat").nlink(), 2);
    // SAFETY: mkfifo/mknod with valid C strings.
    unsafe {
        assert_eq!(libc::mkfifo(cpath(&m.join("fifo")).as_ptr(), 0o644), 0);
        assert_eq!(
            libc::mknod(
                cpath(&m.join("null")).as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(1, 3)
            ),
            0
        );
        assert_eq!(
            libc::mknod(
                cpath(&m.join("big-dev")).as_ptr(),
                libc::S_IFBLK | 0o600,
                libc::makedev(259, 70000)
            ),
            0
        );
    }
    assert!(fs::symlink_metadata(s.join("fifo"))
        .expect("lstat")
        .file_type()
        .is_fifo());
    for (n, dev) in [
        ("null", libc::makedev(1, 3)),
        ("big-dev", libc::makedev(259, 70000)),
    ] {
        assert_eq!(fs::symlink_metadata(s.join(n)).expect("lstat").rdev(), dev);
        assert_eq!(
            fs::symlink_metadata(m.join(n)).expect("lstat").rdev(),
            dev,
            "{n} through the mirror"
        );
    }
    assert_eq!(fs::read(m.join("null")).expect("read /dev/null copy"), b"");
    fs::rename(m.join("h"), m.join("d/h")).expect("rename");
    assert!(s.join("d/h").exists());
    fs::set_permissions(m.join("a"), fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::chown(m.join("a"), Some(1234), Some(2345)).expect("chown");
    assert_eq!(owner(&s.join("a")), (1234, 2345));
    assert_eq!(
        fs::metadata(s.join("a")).expect("stat").mode() & 0o777,
        0o600
    );
    std::os::unix::fs::lchown(m.join("l"), Some(77), Some(78)).expect("lchown");
    assert_eq!(owner(&s.join("l")), (77, 78), "the link, not its target");
    assert_eq!(owner(&s.join("a")), (1234, 2345));
    // stat through the mirror and on the source agree, inode numbers too.
    for n in ["a", "d", "l", "fifo"] {
        let (x, y) = (
            fs::symlink_metadata(m.join(n)).expect("lstat"),
            fs::symlink_metadata(s.join(n)).expect("lstat"),
        );
        assert_eq!(
            (x.ino(), x.mode(), x.uid(), x.gid(), x.size(), x.nlink()),
            (y.ino(), y.mode(), y.uid(), y.gid(), y.size(), y.nlink()),
            "{n}: mirror vs source"
        );
    }
    for e in fs::read_dir(&m).expect("readdir") {
        let e = e.expect("entry");
        assert_eq!(
            std::os::unix::fs::DirEntryExt::ino(&e),
            fs::symlink_metadata(e.path()).expect("lstat").ino(),
            "readdir and stat agree for {:?}",
            e.file_name()
        );
    }
    // xattrs, listed and removed.
    rustix::fs::setxattr(m.join("a"), "user.k", b"v", XattrFlags::empty()).expect("setxattr");
    assert_eq!(
        get_xattr(&s.join("a"), "user.k"),
        b"v",
        "on the backing file"
    );
    assert_eq!(get_xattr(&m.join("a"), "user.k"), b"v");
    assert_eq!(
        rustix::fs::getxattr_query(m.join("a"), "user.k").expect("size query"),
        1
    );
    assert_eq!(
        rustix::fs::listxattr_query(m.join("a")).expect("size query"),
        rustix::fs::listxattr_query(s.join("a")).expect("size query")
    );
    let mut list = [0u8; 64];
    let n = rustix::fs::listxattr(m.join("a"), &mut list).expect("listxattr");
    assert!(list[..n].split(|b| *b == 0).any(|x| x == b"user.k"));
    rustix::fs::removexattr(m.join("a"), "user.k").expect("removexattr");
    assert!(rustix::fs::getxattr(s.join("a"), "user.k", &mut list).is_err());
    // renameat2 flags and whiteouts.
    fs::write(m.join("x"), b"X").expect("write");
    fs::write(m.join("y"), b"Y").expect("write");
    let r2 = |a: &str, b: &str, flags: RenameFlags| {
        rustix::fs::renameat_with(CWD, m.join(a), CWD, m.join(b), flags)
    };
    assert_eq!(
        r2("x", "y", RenameFlags::NOREPLACE).unwrap_err(),
        rustix::io::Errno::EXIST
    );
    r2("x", "y", RenameFlags::EXCHANGE).expect("exchange");
    assert_eq!(fs::read(s.join("x")).expect("read"), b"Y");
    r2("x", "z", RenameFlags::WHITEOUT).expect("whiteout");
    let wo = fs::symlink_metadata(s.join("x")).expect("whiteout on disk");
    assert!(wo.file_type().is_char_device() && wo.rdev() == 0);
    // O_TMPFILE, fallocate, SEEK_DATA/HOLE, copy_file_range, fsync, syncfs.
    let t = rustix::fs::open(
        &m,
        OFlags::TMPFILE | OFlags::RDWR,
        Mode::from_raw_mode(0o600),
    )
    .expect("O_TMPFILE");
    rustix::io::write(&t, b"tmp").expect("write");
    rustix::fs::linkat(&t, "", CWD, m.join("tmp"), AtFlags::EMPTY_PATH).expect("linkat");
    assert_eq!(fs::read(s.join("tmp")).expect("read"), b"tmp");
    let mut sp = fs::File::create(m.join("sparse")).expect("create");
    rustix::fs::fallocate(&sp, rustix::fs::FallocateFlags::KEEP_SIZE, 0, 4096).expect("fallocate");
    std::io::Seek::seek(&mut sp, std::io::SeekFrom::Start(1 << 20)).expect("seek");
    sp.write_all(b"end").expect("write");
    sp.sync_all().expect("fsync");
    sp.sync_data().expect("fdatasync");
    let r = fs::File::open(m.join("sparse")).expect("open");
    let direct = fs::File::open(s.join("sparse")).expect("open");
    for q in [
        rustix::fs::SeekFrom::Hole(0),
        rustix::fs::SeekFrom::Data(4096),
    ] {
        assert_eq!(
            rustix::fs::seek(&r, q).expect("seek mirror"),
            rustix::fs::seek(&direct, q).expect("seek tmpfs"),
            "{q:?} as on tmpfs"
        );
    }
    rustix::fs::fallocate(
        &sp,
        rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
        (1 << 20) - 4096,
        4096,
    )
    .expect("punch hole");
    let dst = fs::File::create(m.join("copy")).expect("create");
    let n = rustix::fs::copy_file_range(&r, Some(&mut (1 << 20)), &dst, Some(&mut 0), 3)
        .expect("copy_file_range");
    assert_eq!(n, 3);
    assert_eq!(fs::read(s.join("copy")).expect("read"), b"end");
    rustix::fs::syncfs(&r).expect("syncfs");
    rustix::fs::fsync(rustix::fs::open(&m, OFlags::RDONLY, Mode::empty()).expect("opendir"))
        .expect("fsync a directory");
    // statx birth time passes through.
    let sx = rustix::fs::statx(
        CWD,
        m.join("copy"),
        AtFlags::empty(),
        rustix::fs::StatxFlags::BTIME,
    )
    .expect("statx");
    assert!(
        sx.stx_mask & rustix::fs::StatxFlags::BTIME.bits() != 0,
        "btime reported"
    );
    let st = rustix::fs::statfs(&m).expect("statfs");
    let sst = rustix::fs::statfs(&s).expect("statfs");
    assert_eq!(st.f_blocks, sst.f_blocks, "statfs of the source");
    // unlink and rmdir.
    fs::remove_file(m.join("d/h")).expect("unlink");
    fs::remove_dir(m.join("d")).expect("rmdir");
    assert!(!s.join("d").exists());
    // readdir sees everything, with and without plus.
    let mut names: Vec<String> = fs::read_dir(&m)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = fs::read_dir(&s)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    want.sort();
    assert_eq!(names, want);
}

#[test]
fn other_users_create_every_kind_as_themselves() {
    let f = fixture(PassthroughOptions::default(), true);
    let (m, s) = (f.mnt.clone(), f.src.clone());
    fs::create_dir(m.join("pub")).expect("mkdir");
    fs::set_permissions(m.join("pub"), fs::Permissions::from_mode(0o777)).expect("chmod");
    let d = m.join("pub");
    let step = as_user(1000, 1001, &[], 0o022, || {
        // SAFETY: mkfifo/mknod with valid C strings.
        let (fifo, sock, chr) = unsafe {
            (
                libc::mkfifo(cpath(&d.join("fifo")).as_ptr(), 0o666),
                libc::mknod(cpath(&d.join("sock")).as_ptr(), libc::S_IFSOCK | 0o777, 0),
                libc::mknod(
                    cpath(&d.join("chr")).as_ptr(),
                    libc::S_IFCHR | 0o666,
                    libc::makedev(1, 3),
                ),
            )
        };
        if fifo != 0 || sock != 0 {
            return 1;
        }
        if chr == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
            return 2;
        }
        let tmp = rustix::fs::open(
            &d,
            OFlags::TMPFILE | OFlags::WRONLY,
            Mode::from_raw_mode(0o666),
        );
        let Ok(tmp) = tmp else { return 3 };
        if rustix::io::write(&tmp, b"t").is_err()
            || rustix::fs::linkat(&tmp, "", CWD, d.join("tmp"), AtFlags::EMPTY_PATH).is_err()
        {
            return 4;
        }
        if fs::write(d.join("file"), b"f").is_err()
            || fs::hard_link(d.join("file"), d.join("hard")).is_err()
        {
            return 5;
        }
        if fs::rename(d.join("hard"), d.join("moved")).is_err() {
            return 6;
        }
        if rustix::fs::renameat_with(
            CWD,
            d.join("moved"),
            CWD,
            d.join("target"),
            RenameFlags::WHITEOUT,
        )
        .is_err()
        {
            return 7;
        }
        if fs::create_dir(d.join("dir")).is_err()
            || std::os::unix::fs::symlink("file", d.join("link")).is_err()
        {
            return 8;
        }
        0
    });
    assert_eq!(step, 0, "step {step} as uid 1000 failed");
    let p = s.join("pub");
    for (n, mode) in [
        ("fifo", libc::S_IFIFO | 0o644),
        ("sock", libc::S_IFSOCK | 0o755),
        ("tmp", libc::S_IFREG | 0o644),
        ("file", libc::S_IFREG | 0o644),
        ("target", libc::S_IFREG | 0o644),
        ("dir", libc::S_IFDIR | 0o755),
        ("link", libc::S_IFLNK | 0o777),
        ("moved", libc::S_IFCHR),
    ] {
        let md = fs::symlink_metadata(p.join(n)).expect("lstat");
        assert_eq!(
            (md.uid(), md.gid()),
            (1000, 1001),
            "{n} owned by its creator on disk"
        );
        if n == "moved" {
            assert_eq!((md.mode() & libc::S_IFMT, md.rdev()), (mode, 0), "whiteout");
        } else {
            assert_eq!(md.mode(), mode, "{n}: mode with umask 022 on disk");
        }
    }
    assert!(!p.join("chr").exists(), "no device node without CAP_MKNOD");
    // The daemon makes no decision of its own: the kernel refuses this.
    fs::write(m.join("private"), b"p").expect("write");
    fs::set_permissions(m.join("private"), fs::Permissions::from_mode(0o600)).expect("chmod");
    let private = m.join("private");
    assert_eq!(
        as_user(1000, 1001, &[], 0o022, || code(fs::read(&private))),
        libc::EACCES
    );
}

/// Issue 17: a worker keeps a creating owner's credentials between
/// requests. On one worker thread, creates by uid 1000 and uid 1001 are
/// interleaved with root's chmod, chown, xattr and unlink of root-only
/// files: each create must be its owner's, and root's work must not run
/// with the last owner's credentials (it would fail with EPERM/EACCES).
#[test]
fn creates_by_two_users_between_roots_work_on_one_worker() {
    let f = fixture_with(
        PassthroughOptions::default(),
        SessionConfig {
            threads: 1,
            io_uring: idfuse::IoUringMode::Off,
            // Without FUSE passthrough a create has nothing that needs the
            // daemon's credentials after it: the owner's stay the longest.
            passthrough: false,
            ..SessionConfig::default()
        },
    );
    let (m, s) = (f.mnt.clone(), f.src.clone());
    fs::create_dir(m.join("pub")).expect("mkdir pub");
    fs::set_permissions(m.join("pub"), fs::Permissions::from_mode(0o777)).expect("chmod pub");
    fs::create_dir(m.join("root-only")).expect("mkdir root-only");
    fs::set_permissions(m.join("root-only"), fs::Permissions::from_mode(0o700))
        .expect("chmod root-only");
    let secret = m.join("root-only/secret");
    fs::write(&secret, b"s").expect("write secret");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod secret");
    // Creates that write nothing: a write would put the daemon's
    // credentials back before root's request.
    for round in 0..5 {
        let a = m.join(format!("pub/a{round}"));
        let b = m.join(format!("pub/b{round}"));
        assert_eq!(
            as_user(1000, 1000, &[], 0o022, || code(fs::File::create(&a))),
            0,
            "round {round}: uid 1000 creates"
        );
        // Root, through the mirror, on root-only files.
        std::os::unix::fs::chown(&secret, Some(0), Some(round))
            .unwrap_or_else(|e| panic!("round {round}: root's chown after uid 1000's create: {e}"));
        let mode = if round % 2 == 0 { 0o640 } else { 0o600 };
        fs::set_permissions(&secret, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("round {round}: root's chmod: {e}"));
        rustix::fs::setxattr(&secret, "trusted.idfuse-test", b"x", XattrFlags::empty())
            .unwrap_or_else(|e| panic!("round {round}: root's trusted xattr: {e}"));
        let gone = m.join(format!("root-only/gone{round}"));
        fs::write(&gone, b"").expect("root creates");
        fs::remove_file(&gone)
            .unwrap_or_else(|e| panic!("round {round}: root's unlink in a 0700 dir: {e}"));
        assert_eq!(
            as_user(1001, 1001, &[], 0o022, || code(fs::File::create(&b))),
            0,
            "round {round}: uid 1001 creates"
        );
        assert_eq!(
            owner(&s.join(format!("pub/a{round}"))),
            (1000, 1000),
            "round {round}: a"
        );
        assert_eq!(
            owner(&s.join(format!("pub/b{round}"))),
            (1001, 1001),
            "round {round}: b"
        );
        let st = fs::metadata(s.join("root-only/secret")).expect("stat secret");
        assert_eq!(
            (st.mode() & 0o7777, st.uid(), st.gid()),
            (mode, 0, round),
            "round {round}: root's chmod and chown reached the source"
        );
        assert!(
            !s.join(format!("root-only/gone{round}")).exists(),
            "round {round}: unlinked in the source"
        );
    }
    // Creates by one user in a row, with lookups and reads between them.
    let code = as_user(1000, 1000, &[], 0o022, || {
        for i in 0..50 {
            let p = m.join(format!("pub/run{i}"));
            if let Err(e) = fs::write(&p, b"r") {
                return e.raw_os_error().unwrap_or(1);
            }
            if fs::read(&p).map(|v| v != b"r").unwrap_or(true) {
                return 2;
            }
        }
        0
    });
    assert_eq!(code, 0, "a run of creates by uid 1000");
    assert_eq!(owner(&s.join("pub/run49")), (1000, 1000));
    assert_eq!(
        fs::read(&secret).expect("root reads its 0600 file after the run"),
        b"s"
    );
}

#[test]
fn group_members_create_through_the_supplementary_group_and_acls() {
    let f = fixture(PassthroughOptions::default(), true);
    let (m, s) = (f.mnt.clone(), f.src.clone());
    // The parent's group, which the kernel sends as FUSE_EXT_GROUPS.
    fs::create_dir(m.join("team")).expect("mkdir");
    std::os::unix::fs::chown(m.join("team"), Some(0), Some(777)).expect("chown");
    fs::set_permissions(m.join("team"), fs::Permissions::from_mode(0o770)).expect("chmod");
    let team = m.join("team");
    let t = team.clone();
    assert_eq!(
        as_user(1000, 1000, &[777], 0o022, || code(fs::write(
            t.join("f"),
            b""
        ))),
        0,
        "member of the parent's group"
    );
    assert_eq!(owner(&s.join("team/f")), (1000, 1000));
    let t = team.clone();
    assert_eq!(
        as_user(1000, 1000, &[], 0o022, || code(fs::write(t.join("g"), b""))),
        libc::EACCES,
        "not a member"
    );
    // A group named in an ACL entry: the kernel decides with all of the
    // caller's groups, which the daemon never learns.
    fs::create_dir(m.join("acl")).expect("mkdir");
    fs::set_permissions(m.join("acl"), fs::Permissions::from_mode(0o750)).expect("chmod");
    let access = acl(&[
        (ACL_USER_OBJ, 7, 0),
        (ACL_GROUP_OBJ, 5, 0),
        (ACL_GROUP, 7, 555),
        (ACL_MASK, 7, 0),
        (ACL_OTHER, 0, 0),
    ]);
    rustix::fs::setxattr(
        m.join("acl"),
        "system.posix_acl_access",
        &access,
        XattrFlags::empty(),
    )
    .expect("set ACL");
    assert_eq!(
        get_xattr(&s.join("acl"), "system.posix_acl_access"),
        access,
        "stored verbatim"
    );
    assert_eq!(get_xattr(&m.join("acl"), "system.posix_acl_access"), access);
    assert_eq!(
        fs::metadata(s.join("acl")).expect("stat").mode() & 0o777,
        0o770,
        "the backing fs folded the mask into the mode"
    );
    let a = m.join("acl");
    assert_eq!(
        as_user(1000, 1000, &[555], 0o022, || code(fs::write(
            a.join("f"),
            b""
        ))),
        0,
        "member of an ACL group"
    );
    assert_eq!(owner(&s.join("acl/f")), (1000, 1000));
    let a = m.join("acl");
    assert_eq!(
        as_user(1000, 1000, &[556], 0o022, || code(fs::write(
            a.join("g"),
            b""
        ))),
        libc::EACCES
    );
    // ACL entries on a file are enforced by the kernel (POSIX_ACL).
    fs::write(m.join("secret"), b"s").expect("write");
    fs::set_permissions(m.join("secret"), fs::Permissions::from_mode(0o600)).expect("chmod");
    let read_acl = acl(&[
        (ACL_USER_OBJ, 6, 0),
        (ACL_USER, 4, 1000),
        (ACL_GROUP_OBJ, 0, 0),
        (ACL_MASK, 4, 0),
        (ACL_OTHER, 0, 0),
    ]);
    rustix::fs::setxattr(
        m.join("secret"),
        "system.posix_acl_access",
        &read_acl,
        XattrFlags::empty(),
    )
    .expect("set ACL");
    let secret = m.join("secret");
    assert_eq!(
        as_user(1000, 1000, &[], 0o022, || code(fs::read(&secret))),
        0
    );
    let secret = m.join("secret");
    assert_eq!(
        as_user(1001, 1001, &[], 0o022, || code(fs::read(&secret))),
        libc::EACCES
    );
    // File capabilities pass through verbatim (v2, CAP_NET_BIND_SERVICE).
    let mut cap = (0x0200_0000u32 | 1).to_le_bytes().to_vec();
    for w in [1u32 << 10, 0, 0, 0] {
        cap.extend_from_slice(&w.to_le_bytes());
    }
    rustix::fs::setxattr(
        m.join("secret"),
        "security.capability",
        &cap,
        XattrFlags::empty(),
    )
    .expect("set capability");
    assert_eq!(get_xattr(&s.join("secret"), "security.capability"), cap);
    assert_eq!(get_xattr(&m.join("secret"), "security.capability"), cap);
}

#[test]
fn setgid_acl_and_umask_behave_as_on_the_backing_fs() {
    let f = fixture(PassthroughOptions::default(), true);
    let (m, s) = (f.mnt.clone(), f.src.clone());
    let default_acl = acl(&[
        (ACL_USER_OBJ, 7, 0),
        (ACL_USER, 7, 4321),
        (ACL_GROUP_OBJ, 5, 0),
        (ACL_MASK, 7, 0),
        (ACL_OTHER, 5, 0),
    ]);
    let no_gx = acl(&[
        (ACL_USER_OBJ, 7, 0),
        (ACL_GROUP_OBJ, 6, 0),
        (ACL_OTHER, 5, 0),
    ]);
    // The same operations directly on tmpfs and through the mirror.
    for base in [s.join("direct"), m.join("mirrored")] {
        fs::create_dir(&base).expect("mkdir");
        std::os::unix::fs::chown(&base, Some(0), Some(777)).expect("chown");
        fs::set_permissions(&base, fs::Permissions::from_mode(0o2777)).expect("chmod");
        for (d, a) in [("acl", &default_acl), ("acl-nogx", &no_gx)] {
            fs::create_dir(base.join(d)).expect("mkdir");
            fs::set_permissions(base.join(d), fs::Permissions::from_mode(0o2777)).expect("chmod");
            rustix::fs::setxattr(
                base.join(d),
                "system.posix_acl_default",
                a,
                XattrFlags::empty(),
            )
            .expect("default ACL");
        }
        let b = base.clone();
        // As a member of the setgid group and as an outsider; umask 077
        // and S_IXGRP (generic/696, 697).
        for (uid, groups, umask, tag) in [
            (1000, &[777u32][..], 0o077, "member"),
            (1001, &[][..], 0o010, "outsider"),
        ] {
            let code = as_user(uid, uid, groups, umask, || {
                // SAFETY: mknod/open with valid C strings.
                let ok = unsafe {
                    libc::mknod(
                        cpath(&b.join(format!("{tag}-node"))).as_ptr(),
                        libc::S_IFREG | 0o2755,
                        0,
                    ) == 0
                };
                let open = |p: PathBuf, mode: u32| {
                    rustix::fs::open(
                        &p,
                        OFlags::CREATE | OFlags::WRONLY,
                        Mode::from_raw_mode(mode),
                    )
                };
                let tmp = rustix::fs::open(
                    &b,
                    OFlags::TMPFILE | OFlags::WRONLY,
                    Mode::from_raw_mode(0o2777),
                )
                .and_then(|t| {
                    rustix::fs::linkat(
                        &t,
                        "",
                        CWD,
                        b.join(format!("{tag}-tmp")),
                        AtFlags::EMPTY_PATH,
                    )
                });
                let ok = ok
                    && open(b.join(format!("{tag}-f")), 0o2777).is_ok()
                    && fs::create_dir(b.join(format!("{tag}-sub"))).is_ok()
                    && open(b.join(format!("acl/{tag}-f")), 0o2777).is_ok()
                    && open(b.join(format!("acl-nogx/{tag}-f")), 0o2777).is_ok()
                    && fs::create_dir(b.join(format!("acl/{tag}-d"))).is_ok()
                    && tmp.is_ok();
                i32::from(!ok)
            });
            assert_eq!(code, 0, "{tag} in {}", base.display());
        }
    }
    let (d, p) = (s.join("direct"), s.join("mirrored"));
    let mut compared = 0;
    for tag in ["member", "outsider"] {
        for rel in ["node", "tmp", "f", "sub", "acl/f", "acl-nogx/f", "acl/d"] {
            let rel = match rel.split_once('/') {
                Some((dir, n)) => format!("{dir}/{tag}-{n}"),
                None => format!("{tag}-{rel}"),
            };
            let a = fs::metadata(d.join(&rel)).expect("direct");
            let b = fs::metadata(p.join(&rel)).expect("mirrored");
            assert_eq!(
                (a.uid(), a.gid(), format!("{:o}", a.mode())),
                (b.uid(), b.gid(), format!("{:o}", b.mode())),
                "{rel}: directly on tmpfs vs through the mirror"
            );
            compared += 1;
        }
        let acl_file = format!("acl/{tag}-f");
        let da = get_xattr(&d.join(&acl_file), "system.posix_acl_access");
        assert_eq!(
            da,
            get_xattr(&p.join(&acl_file), "system.posix_acl_access"),
            "inherited ACL of {acl_file}"
        );
    }
    assert_eq!(compared, 14);
    assert_eq!(
        fs::metadata(p.join("member-sub")).expect("stat").mode() & libc::S_ISGID,
        libc::S_ISGID,
        "setgid inherited by directories"
    );
    assert_eq!(
        fs::metadata(p.join("member-f")).expect("stat").gid(),
        777,
        "group inherited"
    );
    assert_eq!(
        fs::metadata(p.join("acl/member-f")).expect("stat").mode() & 0o777,
        0o775,
        "default ACL beats umask 077"
    );
}

#[test]
fn setattr_as_on_the_backing_fs() {
    let f = fixture(PassthroughOptions::default(), true);
    let (m, s) = (f.mnt.clone(), f.src.clone());
    fs::write(m.join("data"), b"0123456789").expect("write");
    // truncate by path (no file handle) and through one.
    // SAFETY: truncate with a valid C string.
    assert_eq!(
        unsafe { libc::truncate(cpath(&m.join("data")).as_ptr(), 4) },
        0
    );
    assert_eq!(fs::read(s.join("data")).expect("read"), b"0123");
    let fh = fs::OpenOptions::new()
        .write(true)
        .open(m.join("data"))
        .expect("open");
    fh.set_len(2).expect("ftruncate");
    assert_eq!(fs::read(s.join("data")).expect("read"), b"01");
    // utimensat: explicit, OMIT and NOW.
    let ts = |sec: i64, nsec: i64| rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    let set = |a, b| {
        rustix::fs::utimensat(
            CWD,
            m.join("data"),
            &rustix::fs::Timestamps {
                last_access: a,
                last_modification: b,
            },
            AtFlags::empty(),
        )
    };
    set(ts(1000, 5), ts(2000, 6)).expect("utimensat");
    set(ts(0, rustix::fs::UTIME_OMIT), ts(3000, 7)).expect("utimensat OMIT");
    let md = fs::metadata(s.join("data")).expect("stat");
    assert_eq!(
        (md.atime(), md.atime_nsec(), md.mtime(), md.mtime_nsec()),
        (1000, 5, 3000, 7)
    );
    set(ts(0, rustix::fs::UTIME_NOW), ts(0, rustix::fs::UTIME_OMIT)).expect("utimensat NOW");
    let md = fs::metadata(s.join("data")).expect("stat");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!((now - md.atime()).abs() < 5 && md.mtime() == 3000);
    // Times before 1970 survive the trip.
    set(ts(-86400, 0), ts(0, rustix::fs::UTIME_OMIT)).expect("utimensat");
    assert_eq!(fs::metadata(m.join("data")).expect("stat").atime(), -86400);
    // chown, truncate and write strip setid bits as tmpfs does.
    for base in [s.join("direct"), m.join("mirrored")] {
        fs::create_dir(&base).expect("mkdir");
        fs::set_permissions(&base, fs::Permissions::from_mode(0o777)).expect("chmod");
        for n in ["chown", "trunc", "write", "sgid-noexec"] {
            let p = base.join(n);
            fs::write(&p, b"xx").expect("write");
            std::os::unix::fs::chown(&p, Some(1000), Some(1000)).expect("chown");
            let mode = if n == "sgid-noexec" { 0o2766 } else { 0o6777 };
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
        }
        std::os::unix::fs::chown(base.join("chown"), Some(1000), Some(1000)).expect("chown");
        let b = base.clone();
        let code = as_user(1000, 1000, &[], 0o022, || {
            let t = fs::OpenOptions::new()
                .write(true)
                .open(b.join("trunc"))
                .and_then(|f| f.set_len(1));
            let w = fs::OpenOptions::new()
                .append(true)
                .open(b.join("write"))
                .and_then(|mut f| f.write_all(b"y"));
            let n = fs::OpenOptions::new()
                .append(true)
                .open(b.join("sgid-noexec"))
                .and_then(|mut f| f.write_all(b"y"));
            code(t) | code(w) | code(n)
        });
        assert_eq!(code, 0, "{}", base.display());
    }
    for n in ["chown", "trunc", "write", "sgid-noexec"] {
        let a = fs::metadata(s.join("direct").join(n)).expect("direct");
        let b = fs::metadata(s.join("mirrored").join(n)).expect("mirrored");
        assert_eq!(
            format!("{:o}", a.mode()),
            format!("{:o}", b.mode()),
            "{n}: directly on tmpfs vs through the mirror"
        );
    }
    assert_eq!(
        fs::metadata(s.join("mirrored/write")).expect("stat").mode() & 0o7777,
        0o777,
        "write by another user cleared both bits"
    );
}

#[test]
fn opens_follow_the_io_mode_of_the_inode() {
    let f = fixture(PassthroughOptions::default(), true);
    let p = f.mnt.join("f");
    fs::write(&p, b"abc").expect("write");
    // Open through a backing file, then make the file setuid: a later open
    // must share the backing file (the kernel refuses to mix modes).
    let a = fs::File::open(&p).expect("open");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o4755)).expect("chmod");
    let mut b = fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .expect("second open");
    b.write_all(b"d").expect("write");
    drop((a, b));
    // Now setuid: opened through the daemon; clearing the bit while open
    // must not switch later opens to a backing file.
    let c = fs::File::open(&p).expect("open setuid file");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut d = fs::File::open(&p).expect("open after chmod");
    let mut buf = String::new();
    d.read_to_string(&mut buf).expect("read");
    assert_eq!(buf, "abcd");
    drop((c, d));
    // Idle again: a backing file once more, with the same content.
    assert_eq!(fs::read(&p).expect("read"), b"abcd");
}

#[test]
fn shared_mappings_reach_the_source_with_and_without_passthrough() {
    for passthrough in [true, false] {
        let f = fixture(PassthroughOptions::default(), passthrough);
        let p = f.mnt.join("mapped");
        fs::write(&p, vec![b'.'; 8192]).expect("write");
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .expect("open");
        // SAFETY: a fresh shared mapping of 8 KiB of an open file, used only
        // within its bounds and unmapped before the file is closed.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED, "mmap, passthrough={passthrough}");
            let bytes = std::slice::from_raw_parts_mut(addr.cast::<u8>(), 8192);
            bytes[4096..4101].copy_from_slice(b"hello");
            assert_eq!(libc::msync(addr, 8192, libc::MS_SYNC), 0);
            assert_eq!(libc::munmap(addr, 8192), 0);
        }
        drop(file);
        let on_disk = fs::read(f.src.join("mapped")).expect("read");
        assert_eq!(
            &on_disk[4095..4102],
            b".hello.",
            "passthrough={passthrough}"
        );
        let (mnt, src) = (f.mnt.clone(), f.src.clone());
        drop(f);
        assert!(
            !mounted(&mnt) && !mounted(&src),
            "nothing left mounted after the fixture"
        );
    }
}

#[test]
fn locks_are_kept_by_the_kernel_between_users_of_the_mirror() {
    let f = fixture(PassthroughOptions::default(), true);
    let p = f.mnt.join("lock");
    fs::write(&p, b"l").expect("write");
    let held = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .expect("open");
    rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    let lk = |kind: i16| libc::flock {
        l_type: kind,
        l_whence: libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    let mut w = lk(libc::F_WRLCK as i16);
    // SAFETY: F_SETLK with a valid struct flock.
    assert_eq!(
        unsafe { libc::fcntl(held.as_raw_fd(), libc::F_SETLK, &mut w) },
        0
    );
    let me = std::process::id() as i32;
    let q = p.clone();
    let code = as_user(0, 0, &[0], 0o022, || {
        let Ok(other) = fs::OpenOptions::new().read(true).write(true).open(&q) else {
            return 1;
        };
        if rustix::fs::flock(&other, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            != Err(rustix::io::Errno::WOULDBLOCK)
        {
            return 2;
        }
        let mut w = lk(libc::F_WRLCK as i16);
        // SAFETY: fcntl locks with a valid struct flock.
        unsafe {
            if libc::fcntl(other.as_raw_fd(), libc::F_SETLK, &mut w) == 0 {
                return 3;
            }
            if libc::fcntl(other.as_raw_fd(), libc::F_GETLK, &mut w) != 0
                || i32::from(w.l_type) != libc::F_WRLCK
                || w.l_pid != me
            {
                return 4;
            }
        }
        0
    });
    assert_eq!(code, 0, "lock check {code} failed in the other process");
}

fn integrity(passthrough: bool) {
    let f = fixture(PassthroughOptions::default(), passthrough);
    let path = f.mnt.join("big");
    let block: Vec<u8> = (0..(1 << 20))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut sums = Vec::with_capacity(1024);
    let start = Instant::now();
    let mut w = fs::File::create(&path).expect("create");
    let mut b = block.clone();
    for i in 0..1024u64 {
        b[..8].copy_from_slice(&i.to_le_bytes());
        sums.push(checksum(&b));
        w.write_all(&b).expect("write");
    }
    w.sync_all().expect("fsync");
    drop(w);
    let wrote = start.elapsed();
    assert_eq!(fs::metadata(&path).expect("stat").len(), 1 << 30);
    fs::write("/proc/sys/vm/drop_caches", "3").expect("drop caches");
    for p in [path.clone(), f.src.join("big")] {
        let start = Instant::now();
        let mut r = fs::File::open(&p).expect("open");
        let mut buf = vec![0u8; 1 << 20];
        for (i, want) in sums.iter().enumerate() {
            r.read_exact(&mut buf).expect("read");
            assert_eq!(
                &buf[..8],
                &(i as u64).to_le_bytes(),
                "block {i} of {}",
                p.display()
            );
            assert_eq!(
                checksum(&buf),
                *want,
                "checksum of block {i} of {}",
                p.display()
            );
        }
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).expect("read");
        assert!(rest.is_empty(), "nothing after 1 GiB");
        eprintln!(
            "passthrough={passthrough}: wrote 1 GiB in {:.2?}, read back {} in {:.2?} (with checksums)",
            wrote,
            p.display(),
            start.elapsed()
        );
    }
    assert_eq!(
        f.pt().passthrough_active(),
        passthrough,
        "FUSE passthrough used iff asked for"
    );
}

fn checksum(b: &[u8]) -> u64 {
    b.chunks_exact(8).fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
        let mut x = [0u8; 8];
        x.copy_from_slice(c);
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
fn writeback_cache_without_passthrough() {
    let f = fixture_with(
        PassthroughOptions {
            passthrough_io: false,
            writeback_cache: true,
            ..PassthroughOptions::default()
        },
        SessionConfig {
            passthrough: false,
            writeback_cache: true,
            ..SessionConfig::default()
        },
    );
    let p = f.mnt.join("wb");
    fs::write(&p, b"one").expect("write");
    let mut a = fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .expect("open O_APPEND");
    a.write_all(b"two").expect("append");
    a.sync_all().expect("fsync");
    drop(a);
    let mut wo = fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .expect("open O_WRONLY");
    wo.write_all(b"ONE").expect("write");
    wo.sync_all().expect("fsync");
    drop(wo);
    assert_eq!(fs::read(f.src.join("wb")).expect("read"), b"ONEtwo");
    assert!(!f.pt().passthrough_active());
}

#[test]
fn changes_in_source_show_within_the_timeout() {
    let opts = PassthroughOptions {
        entry_timeout: Duration::from_millis(200),
        attr_timeout: Duration::from_millis(200),
        // These timeouts everywhere: the changes below are made by this
        // process, the daemon's own, which the watch on SOURCE ignores.
        timeouts_set: true,
        ..PassthroughOptions::default()
    };
    let f = fixture(opts, true);
    fs::write(f.src.join("f"), b"one").expect("write");
    assert_eq!(fs::metadata(f.mnt.join("f")).expect("stat").len(), 3);
    assert!(!f.mnt.join("new").exists(), "absent, and cached as absent");
    fs::write(f.src.join("f"), b"longer").expect("write");
    fs::write(f.src.join("new"), b"").expect("write");
    fs::set_permissions(f.src.join("f"), fs::Permissions::from_mode(0o640)).expect("chmod");
    std::thread::sleep(Duration::from_millis(500));
    let md = fs::metadata(f.mnt.join("f")).expect("stat");
    assert_eq!(md.len(), 6, "size change visible");
    assert_eq!(md.mode() & 0o777, 0o640, "mode change visible");
    assert_eq!(fs::read(f.mnt.join("f")).expect("read"), b"longer");
    assert!(f.mnt.join("new").exists(), "new name visible");
    fs::remove_file(f.src.join("new")).expect("unlink");
    fs::rename(f.src.join("f"), f.src.join("g")).expect("rename");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!f.mnt.join("new").exists(), "removal visible");
    assert!(
        !f.mnt.join("f").exists() && f.mnt.join("g").exists(),
        "rename visible"
    );
}

#[test]
fn nothing_escapes_the_source() {
    let f = fixture(PassthroughOptions::default(), true);
    let outside = f.dir.path().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    std::os::unix::fs::symlink("/etc", f.src.join("etc")).expect("symlink");
    std::os::unix::fs::symlink("../outside", f.src.join("up")).expect("symlink");
    std::os::unix::fs::symlink(&outside, f.src.join("abs")).expect("symlink");
    // Through the mount the kernel resolves symlinks itself: the links show
    // as links with their text, and the daemon opens nothing behind them.
    for (n, target) in [
        ("etc", Path::new("/etc")),
        ("up", Path::new("../outside")),
        ("abs", outside.as_path()),
    ] {
        let p = f.mnt.join(n);
        assert!(fs::symlink_metadata(&p)
            .expect("lstat")
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_link(&p).expect("readlink"), target);
        let e = rustix::fs::open(&p, OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty()).unwrap_err();
        assert_eq!(e, rustix::io::Errno::LOOP, "{n} with O_NOFOLLOW");
        // Names with a slash never reach the daemon as one component.
        let e = rustix::fs::openat2(
            rustix::fs::open(&f.mnt, OFlags::PATH, Mode::empty()).expect("open mnt"),
            format!("{n}/x"),
            OFlags::CREATE | OFlags::WRONLY,
            Mode::from_raw_mode(0o644),
            rustix::fs::ResolveFlags::BENEATH,
        )
        .unwrap_err();
        assert_eq!(e, rustix::io::Errno::XDEV, "{n}/x beneath the mount");
    }
    assert_eq!(
        fs::write(f.mnt.join("nope/../../x"), b"")
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOENT)
    );
    assert!(
        fs::read_dir(&outside).expect("readdir").next().is_none(),
        "nothing created outside"
    );
    assert!(!f.dir.path().join("x").exists());
}

#[test]
fn bad_input_is_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = Passthrough::new(&dir.path().join("missing"), PassthroughOptions::default())
        .err()
        .expect("missing source refused")
        .to_string();
    assert!(e.contains("does not exist") && e.contains("missing"), "{e}");
    let file = dir.path().join("file");
    fs::write(&file, b"").expect("write");
    let e = Passthrough::new(&file, PassthroughOptions::default())
        .err()
        .expect("file source refused")
        .to_string();
    assert!(e.contains("not a directory"), "{e}");
    fs::create_dir(dir.path().join("src")).expect("mkdir");
    fs::create_dir(dir.path().join("src/inner")).expect("mkdir");
    for m in ["src/inner", "src", "src/new"] {
        let e = Passthrough::check_mountpoint(&dir.path().join("src"), &dir.path().join(m))
            .expect_err(m)
            .to_string();
        assert!(
            e.contains("inside the source") && e.contains("Choose a mountpoint outside"),
            "{e}"
        );
    }
    Passthrough::check_mountpoint(&dir.path().join("src"), dir.path()).expect("the parent is fine");
    let e = Passthrough::check_mountpoint(&dir.path().join("missing"), dir.path())
        .expect_err("missing source")
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
    let mut o = PassthroughOptions::default();
    assert_eq!(o.parse_option("entry_timeout", Some("0.5")), Ok(true));
    assert_eq!(o.entry_timeout, Duration::from_millis(500));
    assert_eq!(o.parse_option("timeout", Some("2")), Ok(true));
    assert_eq!(
        (o.entry_timeout, o.attr_timeout),
        (Duration::from_secs(2), Duration::from_secs(2))
    );
    let e = o
        .parse_option("attr_timeout", Some("soon"))
        .expect_err("bad value");
    assert!(e.contains("attr_timeout=soon"), "{e}");
    assert!(o.parse_option("attr_timeout", None).is_err());
    assert!(o.parse_option("attr_timeout", Some("-1")).is_err());
    assert_eq!(o.parse_option("bogus", None), Ok(false));
}

#[test]
fn forgets_return_the_inode_table_to_baseline() {
    let f = fixture(PassthroughOptions::default(), true);
    fs::create_dir(f.src.join("many")).expect("mkdir");
    for i in 0..2000 {
        fs::write(f.src.join(format!("many/f{i}")), b"").expect("write");
    }
    let pt = f.pt().clone();
    let base = pt.inode_count();
    for i in 0..1000 {
        fs::metadata(f.mnt.join(format!("many/f{i}"))).expect("stat");
    }
    // READDIRPLUS counts lookups too (for as long as the kernel uses it).
    assert_eq!(
        fs::read_dir(f.mnt.join("many")).expect("readdir").count(),
        2000
    );
    assert!(
        pt.inode_count() > base + 1000,
        "{} inodes",
        pt.inode_count()
    );
    fs::write("/proc/sys/vm/drop_caches", "2").expect("drop caches");
    let start = Instant::now();
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
    let view = f.dir.path().join("view");
    fs::create_dir(&view).expect("mkdir");
    fs::create_dir(f.src.join("home")).expect("mkdir");
    std::os::unix::fs::chown(f.src.join("home"), Some(123), Some(123)).expect("chown");
    let ns = idfuse_idmap::UserNamespace::create(&"b:0:100000:65536".parse().expect("spec"))
        .expect("user namespace");
    let _g = idfuse_idmap::idmap_mount(&f.mnt, &view, &ns, idfuse_idmap::IdmapOptions::default())
        .expect("idmap the mirror");
    assert_eq!(
        owner(&view.join("home")),
        (100123, 100123),
        "through the view"
    );
    let home = view.join("home");
    let step = as_user(100123, 100123, &[], 0o022, || {
        if fs::write(home.join("f"), b"x").is_err() || fs::create_dir(home.join("d")).is_err() {
            return 1;
        }
        if std::os::unix::fs::symlink("f", home.join("l")).is_err()
            || rustix::fs::renameat_with(
                CWD,
                home.join("d"),
                CWD,
                home.join("e"),
                RenameFlags::WHITEOUT,
            )
            .is_err()
        {
            return 2;
        }
        // An ACL naming a user of the view is stored with the fs id.
        let a = acl(&[
            (ACL_USER_OBJ, 6, 0),
            (ACL_USER, 4, 100777),
            (ACL_GROUP_OBJ, 4, 0),
            (ACL_MASK, 4, 0),
            (ACL_OTHER, 4, 0),
        ]);
        if rustix::fs::setxattr(
            home.join("f"),
            "system.posix_acl_access",
            &a,
            XattrFlags::empty(),
        )
        .is_err()
        {
            return 3;
        }
        0
    });
    assert_eq!(step, 0, "step {step} through the view failed");
    for n in ["f", "l", "e", "d"] {
        assert_eq!(
            owner(&f.src.join("home").join(n)),
            (123, 123),
            "{n} stored with fs ids on disk"
        );
    }
    assert!(fs::symlink_metadata(f.src.join("home/d"))
        .expect("whiteout")
        .file_type()
        .is_char_device());
    let stored = get_xattr(&f.src.join("home/f"), "system.posix_acl_access");
    assert_eq!(
        stored,
        acl(&[
            (ACL_USER_OBJ, 6, 0),
            (ACL_USER, 4, 777),
            (ACL_GROUP_OBJ, 4, 0),
            (ACL_MASK, 4, 0),
            (ACL_OTHER, 4, 0),
        ]),
        "ACL stored with fs ids"
    );
    assert_eq!(
        owner(&f.mnt.join("home/f")),
        (123, 123),
        "plain mount shows fs ids"
    );
    assert_eq!(owner(&view.join("home/f")), (100123, 100123));
    // chown through the view stores fs ids; host root itself has no
    // mapping in this view, so the VFS refuses its chown with EOVERFLOW.
    std::os::unix::fs::chown(view.join("home/f"), Some(100555), None).expect("chown");
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
    let _t = Tmpfs::mount(&src, c"mode=0777,size=1m");
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
        // By another process: the watch on SOURCE ignores the daemon's
        // own changes, and this test process is the daemon.
        let rm = std::process::Command::new("rm")
            .arg("-rf")
            .arg(src.join("d"))
            .status()
            .unwrap();
        assert!(rm.success());
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
