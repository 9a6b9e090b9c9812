//! passthrough with `cache=auto`: changes another process makes directly in
//! SOURCE reach the client through the plain mount and an idmapped view,
//! although the kernel may cache names and attributes for a day, because
//! the mirror watches SOURCE and invalidates. The latency of each change is
//! measured and printed (`--nocapture`); the test asserts only a generous
//! deadline, so a busy machine cannot fail it.
//!
//! The changes are made by child processes: the daemon runs inside the test
//! process and ignores the events it causes itself.

mod common;

use common::Tmpfs;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use idfuse::{MountOptions, Session, SessionConfig};
use idfuse_fs::passthrough::{CacheMode, Passthrough, PassthroughOptions, LONG_TIMEOUT};

/// Only for hang detection: visibility is expected within milliseconds.
const DEADLINE: Duration = Duration::from_secs(5);

struct Fixture {
    session: Option<Session<Passthrough>>,
    mnt: PathBuf,
    src: PathBuf,
    _tmpfs: Tmpfs,
    dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.session.take();
    }
}

fn fixture(opts: PassthroughOptions, passthrough: bool) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&src).expect("mkdir src");
    fs::create_dir(&mnt).expect("mkdir mnt");
    let tmpfs = Tmpfs::mount(&src, c"mode=0777,size=64m");
    let fs_ = Arc::new(Passthrough::new(&src, opts).expect("passthrough"));
    let cfg = SessionConfig {
        passthrough,
        ..SessionConfig::default()
    };
    let session = Session::mount(fs_, &mnt, MountOptions::default(), cfg).expect("mount");
    Fixture {
        session: Some(session),
        mnt,
        src,
        _tmpfs: tmpfs,
        dir,
    }
}

impl Fixture {
    fn pt(&self) -> &Arc<Passthrough> {
        self.session.as_ref().expect("mounted").filesystem()
    }
}

/// Run a shell command in another process (not the daemon's).
fn host(script: &str) {
    let st = Command::new("sh")
        .arg("-c")
        .arg(script)
        .status()
        .expect("run sh");
    assert!(st.success(), "`{script}` failed");
}

/// Poll `seen` until true; how long it took, or a failure after DEADLINE.
fn visible(what: &str, seen: impl FnMut() -> bool) -> Duration {
    visible_since(Instant::now(), what, seen)
}

/// As [`visible`], timed from `t` (when the change was complete).
fn visible_since(t: Instant, what: &str, mut seen: impl FnMut() -> bool) -> Duration {
    loop {
        if seen() {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < DEADLINE,
            "{what}: not visible through the mirror after {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn listed(dir: &Path, name: &str) -> bool {
    fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).any(|e| e.file_name() == name))
        .unwrap_or(false)
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

#[test]
fn changes_in_source_reach_both_views_within_the_bound() {
    let f = fixture(PassthroughOptions::default(), true);
    assert!(
        f.pt().watching(),
        "running as root, the mirror should watch SOURCE with fanotify"
    );
    let view = f.dir.path().join("view");
    fs::create_dir(&view).expect("mkdir view");
    let ns = idfuse_idmap::UserNamespace::create(&"b:0:100000:65536".parse().expect("spec"))
        .expect("user namespace");
    let _g = idfuse_idmap::idmap_mount(&f.mnt, &view, &ns, idfuse_idmap::IdmapOptions::default())
        .expect("idmap the mirror");
    fs::create_dir(f.src.join("d")).expect("mkdir");
    let views = [("plain", f.mnt.join("d")), ("idmapped", view.join("d"))];
    let src = f.src.join("d");
    let mut report = Vec::new();

    // Prime every cache: the listing, and the absence of the name.
    for (_, v) in &views {
        assert!(!listed(v, "new"));
        assert!(!v.join("new").exists());
    }
    host(&format!("echo -n > {}", q(&src.join("new"))));
    let t0 = Instant::now();
    for (label, v) in &views {
        let t = visible_since(t0, "create", || v.join("new").exists() && listed(v, "new"));
        report.push(format!("create/{label} {t:?}"));
    }

    for (_, v) in &views {
        assert_eq!(fs::metadata(v.join("new")).expect("stat").len(), 0);
    }
    host(&format!("printf hello > {}", q(&src.join("new"))));
    let t0 = Instant::now();
    for (label, v) in &views {
        let t = visible_since(t0, "write", || {
            fs::metadata(v.join("new")).is_ok_and(|m| m.len() == 5)
                && fs::read(v.join("new")).is_ok_and(|d| d == b"hello")
        });
        report.push(format!("write/{label} {t:?}"));
    }

    for (_, v) in &views {
        assert_ne!(
            fs::metadata(v.join("new")).expect("stat").mode() & 0o777,
            0o600
        );
    }
    host(&format!("chmod 600 {}", q(&src.join("new"))));
    let t0 = Instant::now();
    for (label, v) in &views {
        let t = visible_since(t0, "chmod", || {
            fs::metadata(v.join("new")).is_ok_and(|m| m.mode() & 0o777 == 0o600)
        });
        report.push(format!("chmod/{label} {t:?}"));
    }

    for (_, v) in &views {
        assert!(!v.join("moved").exists());
    }
    host(&format!(
        "mv {} {}",
        q(&src.join("new")),
        q(&src.join("moved"))
    ));
    let t0 = Instant::now();
    for (label, v) in &views {
        let t = visible_since(t0, "rename", || {
            !v.join("new").exists()
                && v.join("moved").exists()
                && listed(v, "moved")
                && !listed(v, "new")
        });
        report.push(format!("rename/{label} {t:?}"));
    }

    host(&format!("rm {}", q(&src.join("moved"))));
    let t0 = Instant::now();
    for (label, v) in &views {
        let t = visible_since(t0, "unlink", || {
            !v.join("moved").exists() && !listed(v, "moved")
        });
        report.push(format!("unlink/{label} {t:?}"));
    }

    // The view shows fs ids shifted: the chmod'ed file was root's (0 →
    // 100000); check ownership is still mapped after all that.
    fs::write(src.join("owned"), b"").expect("write");
    host(&format!("chown 7:7 {}", q(&src.join("owned"))));
    let t = visible("chown", || {
        fs::metadata(view.join("d/owned")).is_ok_and(|m| m.uid() == 100_007)
            && fs::metadata(f.mnt.join("d/owned")).is_ok_and(|m| m.uid() == 7)
    });
    report.push(format!("chown/both {t:?}"));
    eprintln!(
        "visibility latency (cache=auto, fanotify): {}",
        report.join(", ")
    );
}

/// Link counts follow the host: a hard link made there, and the deletion
/// of a file the client holds open (the kernel is told with
/// `FUSE_NOTIFY_DELETE`, and its cached link count is dropped).
#[test]
fn host_links_and_deletions_reach_open_files() {
    let f = fixture(PassthroughOptions::default(), true);
    assert!(f.pt().watching());
    fs::write(f.src.join("a"), b"data").expect("write");
    let held = fs::File::open(f.mnt.join("a")).expect("open");
    assert_eq!(held.metadata().expect("fstat").nlink(), 1);
    host(&format!(
        "ln {} {}",
        q(&f.src.join("a")),
        q(&f.src.join("b"))
    ));
    let t_link = visible("hard link", || {
        held.metadata().is_ok_and(|m| m.nlink() == 2) && f.mnt.join("b").exists()
    });
    host(&format!(
        "rm {} {}",
        q(&f.src.join("a")),
        q(&f.src.join("b"))
    ));
    let t_rm = visible("deletion of an open file", || {
        held.metadata().is_ok_and(|m| m.nlink() == 0)
            && !f.mnt.join("a").exists()
            && !f.mnt.join("b").exists()
    });
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut &held, &mut data).expect("read");
    assert_eq!(data, b"data", "the open file still reads");
    eprintln!("visibility latency: link {t_link:?}, delete of an open file {t_rm:?}");
}

/// The mirror names objects, not paths: a directory the client has open
/// follows its host-side rename, and a file replaced on the host by another
/// of the same name is never served with the old one's data again once the
/// new one is visible, with and without FUSE passthrough (without it the
/// kernel keeps file pages between opens).
#[test]
fn host_renames_and_replacements_never_serve_the_old_object() {
    for passthrough in [true, false] {
        let f = fixture(PassthroughOptions::default(), passthrough);
        assert!(f.pt().watching());
        let (src, mnt) = (&f.src, &f.mnt);
        fs::create_dir(src.join("d")).expect("mkdir");
        fs::write(src.join("d/f"), b"object one").expect("write");
        let open_dir = fs::File::open(mnt.join("d")).expect("open dir");
        assert_eq!(fs::read(mnt.join("d/f")).expect("read"), b"object one");

        // Rename the open directory and put a new one in its place.
        host(&format!(
            "mv {} {} && mkdir {} && printf 'object two' > {}",
            q(&src.join("d")),
            q(&src.join("e")),
            q(&src.join("d")),
            q(&src.join("d/f"))
        ));
        visible("replaced directory", || {
            fs::read(mnt.join("d/f")).is_ok_and(|d| d == b"object two")
        });
        assert_eq!(fs::read(mnt.join("e/f")).expect("read"), b"object one");
        // The open directory is the renamed one.
        let via_fd = rustix::fs::openat(
            &open_dir,
            "f",
            rustix::fs::OFlags::RDONLY,
            rustix::fs::Mode::empty(),
        )
        .expect("openat through the open directory");
        let mut buf = [0u8; 32];
        let n = rustix::io::read(&via_fd, &mut buf).expect("read");
        assert_eq!(
            &buf[..n],
            b"object one",
            "the open directory moved with its name"
        );

        // Replace a file by another of the same name and size, atomically.
        fs::write(src.join("g"), b"AAAA").expect("write");
        assert_eq!(fs::read(mnt.join("g")).expect("read"), b"AAAA");
        let mut kept = fs::File::open(mnt.join("g")).expect("open");
        host(&format!(
            "printf BBBB > {} && mv {} {}",
            q(&src.join("g.tmp")),
            q(&src.join("g.tmp")),
            q(&src.join("g"))
        ));
        visible("replaced file", || {
            fs::read(mnt.join("g")).is_ok_and(|d| d == b"BBBB")
        });
        for _ in 0..50 {
            assert_eq!(
                fs::read(mnt.join("g")).expect("read"),
                b"BBBB",
                "old data under the name again (passthrough {passthrough})"
            );
        }
        // The file opened before still reads the object it opened.
        let mut old = Vec::new();
        std::io::Read::read_to_end(&mut kept, &mut old).expect("read");
        assert_eq!(old, b"AAAA");
        drop((kept, via_fd, open_dir));
    }
}

/// `cache=never` caches nothing; `cache=always` keeps names for a day
/// (a change in SOURCE is not seen) and sets up no watch.
#[test]
fn cache_modes_never_and_always() {
    let never = fixture(
        PassthroughOptions {
            cache: CacheMode::Never,
            ..PassthroughOptions::default()
        },
        true,
    );
    assert!(!never.pt().watching());
    assert!(!never.mnt.join("x").exists());
    host(&format!("touch {}", q(&never.src.join("x"))));
    assert!(never.mnt.join("x").exists(), "nothing cached: seen at once");
    host(&format!("chmod 604 {}", q(&never.src.join("x"))));
    assert_eq!(
        fs::metadata(never.mnt.join("x"))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o604
    );
    drop(never);

    let always = fixture(
        PassthroughOptions {
            cache: CacheMode::Always,
            ..PassthroughOptions::default()
        },
        true,
    );
    assert!(!always.pt().watching());
    assert!(LONG_TIMEOUT >= Duration::from_secs(3600));
    // What the kernel is told to cache is read from the daemon's replies,
    // not inferred from what the kernel still holds: memory pressure or a
    // drop_caches elsewhere may forget a cached name at any time.
    let mut lb = idfuse::Loopback::new(
        Arc::new(
            Passthrough::new(
                &always.src,
                PassthroughOptions {
                    cache: CacheMode::Always,
                    ..PassthroughOptions::default()
                },
            )
            .expect("passthrough"),
        ),
        SessionConfig {
            io_uring: idfuse::IoUringMode::Off,
            passthrough: false,
            ..SessionConfig::default()
        },
        true,
    )
    .expect("loopback");
    let init = lb.handle(&request(idfuse::abi::opcode::INIT, 2, &init_in()));
    assert_eq!(error_of(&init[0]), 0, "INIT");
    fs::write(always.src.join("present"), b"x").expect("write");
    for (name, what) in [
        (&b"absent\0"[..], "a missing name"),
        (b"present\0", "a file"),
    ] {
        let r = lb.handle(&request(idfuse::abi::opcode::LOOKUP, 4, name));
        assert_eq!(
            error_of(&r[0]),
            0,
            "LOOKUP of {what} is an entry, negative or not"
        );
        let valid = |at: usize| u64::from_ne_bytes(r[0][at..at + 8].try_into().unwrap());
        // struct fuse_entry_out after the 16-byte header: nodeid,
        // generation, entry_valid, attr_valid.
        assert!(
            valid(32) >= LONG_TIMEOUT.as_secs(),
            "cache=always keeps the entry of {what} for a day: {} s",
            valid(32)
        );
        if what == "a file" {
            assert!(valid(40) >= LONG_TIMEOUT.as_secs(), "and its attributes");
        }
    }
}

/// A raw request for the loopback session: `struct fuse_in_header`, then
/// the body.
fn request(opcode: u32, unique: u64, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(40 + body.len());
    v.extend_from_slice(&((40 + body.len()) as u32).to_ne_bytes());
    v.extend_from_slice(&opcode.to_ne_bytes());
    v.extend_from_slice(&unique.to_ne_bytes());
    v.extend_from_slice(&1u64.to_ne_bytes()); // nodeid: the root
    v.extend_from_slice(&0u32.to_ne_bytes()); // uid
    v.extend_from_slice(&0u32.to_ne_bytes()); // gid
    v.extend_from_slice(&1u32.to_ne_bytes()); // pid
    v.extend_from_slice(&[0u8; 4]); // total_extlen, padding
    v.extend_from_slice(body);
    v
}

/// `struct fuse_init_in` for protocol 7.45, offering what the passthrough
/// needs to serve lookups.
fn init_in() -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    for w in [7u32, 45, 131072, 0, 0] {
        v.extend_from_slice(&w.to_ne_bytes());
    }
    v.extend_from_slice(&[0u8; 44]);
    v
}

/// The error field of a reply's `struct fuse_out_header`.
fn error_of(reply: &[u8]) -> i32 {
    i32::from_ne_bytes(reply[4..8].try_into().unwrap())
}
