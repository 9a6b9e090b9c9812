//! The idmap contract end to end on a real mount: after opt-in, GETATTR and
//! LOOKUP reach the filesystem with no caller identity, while MKDIR carries
//! the creating process's ids as the new inode's owner.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idfuse::{
    Attr, AttrReply, Caller, Context, CreateMode, Entry, Errno, Filesystem, InitFlags,
    MountOptions, Owner, Session, SessionConfig,
};

/// One request as the filesystem saw it: opcode, caller, owner.
type Seen = (&'static str, Option<Caller>, Option<Owner>);

/// A flat directory of empty directories that records what it was told.
#[derive(Default)]
struct Recorder {
    dirs: Mutex<HashMap<OsString, (u64, Owner)>>,
    seen: Mutex<Vec<Seen>>,
}

fn attr(ino: u64, mode: u32, uid: u32, gid: u32) -> Attr {
    Attr {
        ino,
        mode,
        nlink: if ino == 1 { 2 } else { 1 },
        uid,
        gid,
        blksize: 4096,
        ..Attr::default()
    }
}

impl Filesystem for Recorder {
    fn capabilities(&self) -> InitFlags {
        InitFlags::DONT_MASK
    }
    fn lookup(&self, ctx: &Context<'_>, _parent: u64, name: &OsStr) -> idfuse::Result<Entry> {
        self.seen
            .lock()
            .unwrap()
            .push(("LOOKUP", ctx.caller(), None));
        let dirs = self.dirs.lock().unwrap();
        let (ino, o) = dirs.get(name).ok_or(Errno::NOENT)?;
        Ok(Entry {
            ino: *ino,
            generation: 0,
            attr: attr(*ino, libc::S_IFDIR | 0o755, o.uid, o.gid),
            entry_timeout: Duration::ZERO,
            attr_timeout: Duration::ZERO,
        })
    }
    fn getattr(&self, ctx: &Context<'_>, ino: u64, _fh: Option<u64>) -> idfuse::Result<AttrReply> {
        self.seen
            .lock()
            .unwrap()
            .push(("GETATTR", ctx.caller(), None));
        if ino == 1 {
            return Ok(AttrReply {
                attr: attr(1, libc::S_IFDIR | 0o777, 0, 0),
                timeout: Duration::ZERO,
            });
        }
        let dirs = self.dirs.lock().unwrap();
        let (_, o) = dirs.values().find(|(i, _)| *i == ino).ok_or(Errno::NOENT)?;
        Ok(AttrReply {
            attr: attr(ino, libc::S_IFDIR | 0o755, o.uid, o.gid),
            timeout: Duration::ZERO,
        })
    }
    fn mkdir(
        &self,
        ctx: &Context<'_>,
        _parent: u64,
        name: &OsStr,
        owner: &Owner,
        _mode: CreateMode,
    ) -> idfuse::Result<Entry> {
        self.seen
            .lock()
            .unwrap()
            .push(("MKDIR", ctx.caller(), Some(*owner)));
        let mut dirs = self.dirs.lock().unwrap();
        let ino = dirs.len() as u64 + 2;
        dirs.insert(name.to_owned(), (ino, *owner));
        Ok(Entry {
            ino,
            generation: 0,
            attr: attr(ino, libc::S_IFDIR | 0o755, owner.uid, owner.gid),
            entry_timeout: Duration::ZERO,
            attr_timeout: Duration::ZERO,
        })
    }
}

/// Run `f` in a forked child with the given fs ids; returns its exit status.
fn as_ids(uid: u32, gid: u32, f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only makes syscalls and exits; it never returns
    // into the test harness.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: plain syscalls on the child's own credentials.
            unsafe {
                libc::setgroups(0, std::ptr::null());
                libc::setresgid(gid, gid, gid);
                libc::setresuid(uid, uid, uid);
            }
            let code = f();
            // SAFETY: leave the child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        pid if pid > 0 => {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            status
        }
        _ => panic!("fork failed"),
    }
}

fn mount(fs: Arc<Recorder>, dir: &Path, idmap: bool) -> Session<Recorder> {
    let cfg = SessionConfig {
        idmap,
        threads: 2,
        ..SessionConfig::default()
    };
    Session::mount(fs, dir, MountOptions::default(), cfg).expect("mount")
}

#[test]
fn opted_in_session_withholds_caller_but_passes_owner() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(Recorder::default());
    let session = mount(fs.clone(), dir.path(), true);
    assert!(
        session.negotiated().unwrap().idmap,
        "kernel 6.12+ offers FUSE_ALLOW_IDMAP"
    );
    let mnt = dir.path().to_path_buf();
    let st = as_ids(1234, 2345, || match std::fs::create_dir(mnt.join("d")) {
        Ok(()) => 0,
        Err(_) => 1,
    });
    assert_eq!(st, 0, "mkdir as 1234:2345 through the mount");
    let meta = std::fs::metadata(mnt.join("d")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid()),
        (1234, 2345),
        "owner of the new directory"
    );
    let seen = fs.seen.lock().unwrap().clone();
    let mkdir: Vec<_> = seen.iter().filter(|s| s.0 == "MKDIR").collect();
    assert_eq!(mkdir.len(), 1);
    assert_eq!(
        mkdir[0].1, None,
        "MKDIR context has no caller on an idmap session"
    );
    assert_eq!(
        mkdir[0].2.map(|o| (o.uid, o.gid)),
        Some((1234, 2345)),
        "MKDIR owner"
    );
    let others: Vec<_> = seen.iter().filter(|s| s.0 != "MKDIR").collect();
    assert!(
        others.iter().any(|s| s.0 == "GETATTR"),
        "saw GETATTR: {seen:?}"
    );
    assert!(
        others.iter().all(|s| s.1.is_none()),
        "no caller ids outside creation: {others:?}"
    );
    drop(session);
    assert!(!mounted(dir.path()), "unmounted on drop");
}

#[test]
fn plain_session_shows_caller() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(Recorder::default());
    let session = mount(fs.clone(), dir.path(), false);
    assert!(!session.negotiated().unwrap().idmap);
    let mnt = dir.path().to_path_buf();
    let st = as_ids(1234, 2345, || {
        i32::from(std::fs::metadata(mnt.join("nope")).is_ok())
    });
    assert_eq!(st, 0);
    let seen = fs.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|s| s.0 == "LOOKUP"
            && s.1
                == Some(Caller {
                    uid: 1234,
                    gid: 2345
                })),
        "LOOKUP carries the caller without idmap: {seen:?}"
    );
}

#[test]
fn idmap_without_default_permissions_is_refused_before_mounting() {
    let dir = tempfile::tempdir().unwrap();
    let opts = MountOptions {
        default_permissions: false,
        ..MountOptions::default()
    };
    let err = Session::mount(
        Arc::new(Recorder::default()),
        dir.path(),
        opts,
        SessionConfig::default(),
    )
    .expect_err("must refuse");
    assert!(err.to_string().contains("default_permissions"), "{err}");
    assert!(!mounted(dir.path()));
}

#[test]
fn bad_mountpoints_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let err = Session::mount(
        Arc::new(Recorder::default()),
        &missing,
        MountOptions::default(),
        SessionConfig::default(),
    )
    .expect_err("missing mountpoint");
    assert!(err.to_string().contains("does not exist"), "{err}");
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = Session::mount(
        Arc::new(Recorder::default()),
        &file,
        MountOptions::default(),
        SessionConfig::default(),
    )
    .expect_err("file mountpoint");
    assert!(err.to_string().contains("not a directory"), "{err}");
}

fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_string_lossy().to_string();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

#[test]
fn legacy_mount_path_works_too() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(Recorder::default());
    // `-o legacy_mount` is how a user asks for it (a seccomp filter that
    // refuses fsopen with EPERM); it sets MountOptions::force_legacy.
    let mut opts = MountOptions::default();
    let mut cfg = SessionConfig::default();
    idfuse::parse_options(
        "legacy_mount",
        &mut opts,
        &mut cfg,
        &mut |_, _| Ok(false),
        &[],
    )
    .expect("legacy_mount is an option");
    assert!(opts.force_legacy);
    let session = Session::mount(fs.clone(), dir.path(), opts, cfg).expect("mount(2)");
    assert_eq!(session.method(), idfuse::MountMethod::Legacy);
    assert!(session.negotiated().unwrap().idmap);
    std::fs::create_dir(dir.path().join("x")).expect("mkdir through a mount(2) mount");
    assert!(mounted(dir.path()));
    drop(session);
    assert!(!mounted(dir.path()), "unmounted on drop");
}
