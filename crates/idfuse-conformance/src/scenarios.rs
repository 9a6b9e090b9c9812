//! The scenario catalogue (docs/conformance.md). Each scenario runs in its
//! own scratch directory, makes its own idmapped views and child processes
//! with exact credentials, asserts what Linux does on in-kernel
//! filesystems, and returns a record (results, errnos, owners and modes in
//! every view) for the differential comparison.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::proc::{res, run_as, As};
use crate::target::Instance;

/// How a scenario ended, short of passing.
#[derive(Debug, Clone)]
pub enum Stop {
    /// An assertion failed.
    Fail(String),
    /// It cannot run here; the cause.
    Skip(String),
}

/// What a scenario sees.
pub struct Ctx<'a> {
    /// The scratch directory on the target (plain mount).
    pub dir: PathBuf,
    /// The target.
    pub inst: &'a Instance,
    /// A directory outside the target for view mountpoints.
    pub work: PathBuf,
    /// The idfuse binary.
    pub idfuse: PathBuf,
    /// Why the target cannot be idmapped, if it cannot.
    pub no_idmap: Option<String>,
    views: std::cell::Cell<u32>,
}

/// A scenario's outcome: its record, or why it stopped.
pub type Outcome = Result<Value, Stop>;

/// One catalogue entry.
pub struct Scenario {
    /// Id, e.g. `B1`.
    pub id: &'static str,
    /// What it checks.
    pub title: &'static str,
    /// The check.
    pub run: fn(&Ctx<'_>) -> Outcome,
}

/// An idmapped view of the scratch directory, detached on drop.
pub struct View {
    /// Where it is attached.
    pub path: PathBuf,
    /// The namespace that carries the idmap.
    pub ns: idfuse_idmap::UserNamespace,
    _guard: idfuse_idmap::MountGuard,
}

const LIMIT: Duration = Duration::from_secs(20);

macro_rules! check {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            return Err(Stop::Fail(format!($($msg)*)));
        }
    };
}

// Scenario groups in their own files; after `check!` so they can use it.
mod ns;
mod overlay;
mod unpriv;
mod uring;

impl<'a> Ctx<'a> {
    /// A new context.
    pub fn new(
        dir: PathBuf,
        inst: &'a Instance,
        work: PathBuf,
        idfuse: PathBuf,
        no_idmap: Option<String>,
    ) -> Self {
        Self {
            dir,
            inst,
            work,
            idfuse,
            no_idmap,
            views: std::cell::Cell::new(0),
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// An idmapped view of `dir` (the scratch directory by default).
    fn view_of(&self, dir: &Path, spec: &str) -> Result<View, Stop> {
        if let Some(why) = &self.no_idmap {
            return Err(Stop::Skip(format!("the target cannot be idmapped: {why}")));
        }
        let map: idfuse_idmap::IdMap = spec
            .parse()
            .map_err(|e| Stop::Fail(format!("bad spec {spec}: {e}")))?;
        let ns =
            idfuse_idmap::UserNamespace::create(&map).map_err(|e| Stop::Fail(e.to_string()))?;
        let n = self.views.get();
        self.views.set(n + 1);
        let path = self.work.join(format!("view-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| Stop::Fail(e.to_string()))?;
        let guard =
            idfuse_idmap::idmap_mount(dir, &path, &ns, idfuse_idmap::IdmapOptions::default())
                .map_err(|e| Stop::Fail(format!("idmapping the scratch directory: {e}")))?;
        Ok(View {
            path,
            ns,
            _guard: guard,
        })
    }

    fn view(&self, spec: &str) -> Result<View, Stop> {
        self.view_of(&self.dir, spec)
    }

    fn fuse_only(&self) -> Result<(), Stop> {
        if !self.inst.fuse {
            return Err(Stop::Skip("not a FUSE target".into()));
        }
        Ok(())
    }

    fn ours_only(&self) -> Result<(), Stop> {
        self.fuse_only()?;
        if !self.inst.ours {
            return Err(Stop::Skip(
                "checks idfuse's own daemon; this target runs another server".into(),
            ));
        }
        Ok(())
    }
}

/// Run `f` in a child as `who`; a child that cannot start fails the
/// scenario.
fn child(who: &As, f: impl FnOnce() -> Value) -> Result<Value, Stop> {
    run_as(who, LIMIT, f).map_err(|e| Stop::Fail(format!("child as {who:?}: {e:?}")))
}

/// "uid:gid:mode" of a path (not following symlinks), or the errno.
fn st(p: &Path) -> String {
    match std::fs::symlink_metadata(p) {
        Ok(m) => format!("{}:{}:{:o}", m.uid(), m.gid(), m.mode()),
        Err(e) => crate::proc::errno_name(e.raw_os_error().unwrap_or(0)),
    }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap_or_default()
}

fn errno_of(r: i32) -> String {
    if r == 0 {
        "ok".into()
    } else {
        crate::proc::errno_name(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

fn mknod(p: &Path, mode: u32, dev: u64) -> String {
    // SAFETY: valid C string.
    errno_of(unsafe { libc::mknod(cstr(p).as_ptr(), mode, dev) })
}

fn create(p: &Path, mode: u32) -> String {
    // SAFETY: valid C string; the fd is closed right away.
    let fd = unsafe {
        libc::open(
            cstr(p).as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            mode,
        )
    };
    if fd >= 0 {
        // SAFETY: our own fd.
        unsafe { libc::close(fd) };
        "ok".into()
    } else {
        errno_of(-1)
    }
}

fn tmpfile_link(dir: &Path, name: &Path, mode: u32) -> String {
    let fd = match rustix::fs::open(
        dir,
        rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::WRONLY,
        rustix::fs::Mode::from_raw_mode(mode),
    ) {
        Ok(fd) => fd,
        Err(e) => return crate::proc::errno_name(e.raw_os_error()),
    };
    res(rustix::fs::linkat(
        &fd,
        "",
        rustix::fs::CWD,
        name,
        rustix::fs::AtFlags::EMPTY_PATH,
    ))
}

fn write_file(p: &Path, mode: u32) -> Result<(), Stop> {
    std::fs::write(p, b"data").map_err(|e| Stop::Fail(format!("writing {}: {e}", p.display())))?;
    chmod(p, mode)
}

fn chmod(p: &Path, mode: u32) -> Result<(), Stop> {
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| Stop::Fail(format!("chmod {}: {e}", p.display())))
}

fn chown(p: &Path, uid: u32, gid: u32) -> Result<(), Stop> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .map_err(|e| Stop::Fail(format!("chown {}: {e}", p.display())))
}

fn mkdir(p: &Path, mode: u32) -> Result<(), Stop> {
    std::fs::create_dir(p).map_err(|e| Stop::Fail(format!("mkdir {}: {e}", p.display())))?;
    chmod(p, mode)
}

fn rec(pairs: Vec<(&str, Value)>) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert(k.to_string(), v);
    }
    Value::Object(m)
}

/// Map used by most scenarios: root stays root, 1000.. shows as 11000..
const MAP: &str = "b:0:0:1 b:1000:11000:1000";

// ---------------------------------------------------------------- A

fn a1(c: &Ctx<'_>) -> Outcome {
    c.fuse_only()?;
    // A server that did not opt in: the target itself, or our memfs with
    // idmap support switched off.
    let (what, verdict) = match idfuse_idmap::can_idmap(&c.inst.root) {
        idfuse_idmap::Verdict::Unsupported(r) => {
            ("the target", idfuse_idmap::Verdict::Unsupported(r))
        }
        idfuse_idmap::Verdict::Supported => {
            let mnt = c.work.join("a1-noidmap");
            std::fs::create_dir_all(&mnt).map_err(|e| Stop::Fail(e.to_string()))?;
            let argv: Vec<String> = vec![
                c.idfuse.to_string_lossy().into(),
                "mount".into(),
                "memfs".into(),
                mnt.to_string_lossy().into(),
                "--foreground".into(),
                "--idmap-support".into(),
                "false".into(),
            ];
            let mut d = crate::target::start_daemon(&argv, &mnt).map_err(Stop::Fail)?;
            let v = idfuse_idmap::can_idmap(&mnt);
            let _ = rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH);
            let _ = d.kill();
            let _ = d.wait();
            ("idfuse memfs --idmap-support false", v)
        }
    };
    match verdict {
        idfuse_idmap::Verdict::Unsupported(r) => {
            let text = r.to_string();
            check!(
                text.contains("did not opt in") && text.contains("FUSE_ALLOW_IDMAP"),
                "{what}: explanation does not name the opt-in: {text}"
            );
            Ok(json!({ "explained": true, "explanation": text }))
        }
        idfuse_idmap::Verdict::Supported => Err(Stop::Fail(format!(
            "{what} can be idmapped although it did not opt in"
        ))),
    }
}

fn a2(c: &Ctx<'_>) -> Outcome {
    c.fuse_only()?;
    if let Some(why) = &c.no_idmap {
        return Err(Stop::Skip(format!("the server did not opt in: {why}")));
    }
    check!(
        idfuse_idmap::can_idmap(&c.dir) == idfuse_idmap::Verdict::Supported,
        "probe says the mount cannot be idmapped"
    );
    let v = c.view(MAP)?;
    check!(
        std::fs::metadata(&v.path).is_ok(),
        "the view cannot be stat'ed"
    );
    Ok(json!({ "supported": true }))
}

fn a3(c: &Ctx<'_>) -> Outcome {
    c.ours_only()?;
    let mnt = c.work.join("a3");
    std::fs::create_dir_all(&mnt).map_err(|e| Stop::Fail(e.to_string()))?;
    let out = std::process::Command::new(&c.idfuse)
        .args(["mount", "memfs"])
        .arg(&mnt)
        .args(["-o", "nodefault_permissions", "--foreground"])
        .output()
        .map_err(|e| Stop::Fail(e.to_string()))?;
    let err = String::from_utf8_lossy(&out.stderr);
    let mounted = idfuse_idmap::probe::MountInfo::of(&mnt).is_some_and(|i| i.mount_point == mnt);
    check!(
        !out.status.success() && err.contains("default_permissions") && !mounted,
        "not refused before mounting: {err}"
    );
    Ok(json!({ "refused": true }))
}

fn a4(c: &Ctx<'_>) -> Outcome {
    c.ours_only()?;
    if let Some(why) = &c.no_idmap {
        return Err(Stop::Skip(format!("the target cannot be idmapped: {why}")));
    }
    let mnt = c.work.join("a4");
    let log = c.work.join("a4.requests");
    std::fs::create_dir_all(&mnt).map_err(|e| Stop::Fail(e.to_string()))?;
    let argv: Vec<String> = vec![
        c.idfuse.to_string_lossy().into(),
        "mount".into(),
        "memfs".into(),
        mnt.to_string_lossy().into(),
        "--foreground".into(),
        "--record-requests".into(),
        log.to_string_lossy().into(),
    ];
    let mut d = crate::target::start_daemon(&argv, &mnt).map_err(Stop::Fail)?;
    let result = (|| {
        chmod(&mnt, 0o777)?;
        let v = c.view_of(&mnt, MAP)?;
        let p = v.path.join("by-11001");
        let made = child(&As::user(11001, 11002), || {
            json!(res(std::fs::create_dir(&p)))
        })?;
        check!(made == "ok", "mkdir through the view as 11001: {made}");
        let _ = std::fs::metadata(mnt.join("by-11001"));
        drop(v);
        let text = std::fs::read_to_string(&log).map_err(|e| Stop::Fail(e.to_string()))?;
        let mkdir: Vec<&str> = text.lines().filter(|l| l.starts_with("MKDIR ")).collect();
        check!(
            mkdir == ["MKDIR 1001 1002"],
            "MKDIR should carry the owner mapped back (1001 1002): {mkdir:?}"
        );
        let others: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("MKDIR ") && !l.starts_with("INIT "))
            .collect();
        check!(
            !others.is_empty() && others.iter().all(|l| l.ends_with(" - -")),
            "non-creating requests carried ids: {others:?}"
        );
        Ok(json!({ "mkdir_owner": "1001 1002", "others_without_ids": true }))
    })();
    let _ = rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH);
    let _ = d.kill();
    let _ = d.wait();
    result
}

// ---------------------------------------------------------------- B

fn b1(c: &Ctx<'_>) -> Outcome {
    let v = c.view(MAP)?;
    chown(&c.dir, 0, 0)?;
    write_file(&c.p("src"), 0o644)?;
    chown(&c.p("src"), 1001, 1001)?;
    write_file(&c.p("unmapped"), 0o644)?;
    chown(&c.p("unmapped"), 50000, 50000)?;
    let vp = v.path.clone();
    let made = child(&As::user(11001, 11001), || {
        json!({
            "create": create(&vp.join("file"), 0o644),
            "mknod_reg": mknod(&vp.join("reg"), libc::S_IFREG | 0o644, 0),
            "mkdir": res(std::fs::create_dir(vp.join("dir"))),
            "symlink": res(std::os::unix::fs::symlink("file", vp.join("sym"))),
            "link": res(std::fs::hard_link(vp.join("src"), vp.join("hard"))),
            "tmpfile": tmpfile_link(&vp, &vp.join("tmp"), 0o600),
        })
    })?;
    let chr = mknod(
        &v.path.join("chr"),
        libc::S_IFCHR | 0o644,
        libc::makedev(1, 3),
    );
    let mut r = Map::new();
    r.insert("ops".into(), made.clone());
    r.insert("mknod_chr_as_root".into(), json!(chr));
    for n in ["file", "reg", "dir", "sym", "tmp"] {
        let plain = st(&c.p(n));
        let view = st(&v.path.join(n));
        check!(
            plain.starts_with("1001:1001:"),
            "{n}: plain owner {plain}, want 1001:1001"
        );
        check!(
            view.starts_with("11001:11001:"),
            "{n}: view owner {view}, want 11001:11001"
        );
        r.insert(format!("{n}.plain"), json!(plain));
        r.insert(format!("{n}.view"), json!(view));
    }
    check!(
        made.as_object()
            .is_some_and(|o| o.values().all(|x| x == "ok")),
        "a create failed: {made}"
    );
    check!(
        st(&c.p("chr")).starts_with("0:0:"),
        "chr plain owner {}",
        st(&c.p("chr"))
    );
    let un = st(&v.path.join("unmapped"));
    check!(
        un.starts_with("65534:65534:"),
        "unmapped owner should show as the overflow id, got {un}"
    );
    r.insert("unmapped.view".into(), json!(un));
    Ok(Value::Object(r))
}

fn b2(c: &Ctx<'_>) -> Outcome {
    let v = c.view(MAP)?;
    write_file(&c.p("f"), 0o644)?;
    std::os::unix::fs::symlink("f", c.p("l")).map_err(|e| Stop::Fail(e.to_string()))?;
    let a = res(std::os::unix::fs::chown(
        v.path.join("f"),
        Some(11005),
        Some(11006),
    ));
    let b = res(std::os::unix::fs::lchown(
        v.path.join("l"),
        Some(11007),
        Some(11008),
    ));
    check!(
        a == "ok" && b == "ok",
        "fchownat through the view: {a} / {b}"
    );
    let (pf, pl) = (st(&c.p("f")), st(&c.p("l")));
    check!(
        pf.starts_with("1005:1006:"),
        "f stored as {pf}, want 1005:1006"
    );
    check!(
        pl.starts_with("1007:1008:"),
        "symlink stored as {pl}, want 1007:1008 (AT_SYMLINK_NOFOLLOW)"
    );
    check!(
        st(&v.path.join("l")).starts_with("11007:11008:"),
        "symlink through the view"
    );
    // From a user namespace with the same mapping: ids as the view shows.
    let userns =
        idfuse_idmap::UserNamespace::create(&MAP.parse().map_err(|_| Stop::Fail("map".into()))?)
            .map_err(|e| Stop::Fail(e.to_string()))?;
    let who = As {
        userns_fd: Some(std::os::fd::AsRawFd::as_raw_fd(&userns.as_fd())),
        ..As::root()
    };
    let vp = v.path.join("f");
    let seen = child(&who, || json!(st(&vp)))?;
    check!(
        seen.as_str().is_some_and(|s| s.starts_with("1005:1006:")),
        "seen from the user namespace: {seen}"
    );
    Ok(rec(vec![
        ("f.plain", json!(pf)),
        ("l.plain", json!(pl)),
        ("f.userns", seen),
    ]))
}

fn b3(c: &Ctx<'_>) -> Outcome {
    let v = c.view(MAP)?;
    let vp = v.path.clone();
    let out = child(&As::user(11500, 11500), || {
        json!([
            create(&vp.join("a"), 0o600),
            res(std::fs::create_dir(vp.join("b"))),
            mknod(&vp.join("c"), libc::S_IFIFO | 0o600, 0),
            res(std::os::unix::fs::symlink("a", vp.join("d"))),
        ])
    })?;
    check!(
        out.as_array().is_some_and(|a| a.iter().all(|x| x == "ok")),
        "mapped fsids could not create: {out}"
    );
    for n in ["a", "b", "c", "d"] {
        check!(
            st(&c.p(n)).starts_with("1500:1500:"),
            "{n} stored as {}",
            st(&c.p(n))
        );
    }
    Ok(json!({ "ops": out }))
}

fn b4(c: &Ctx<'_>) -> Outcome {
    let spec = "b:0:10000:10000";
    let v = c.view(spec)?;
    let userns =
        idfuse_idmap::UserNamespace::create(&spec.parse().map_err(|_| Stop::Fail("map".into()))?)
            .map_err(|e| Stop::Fail(e.to_string()))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&userns.as_fd());
    let vp = v.path.clone();
    let user = As {
        userns_fd: Some(fd),
        ..As::user(1000, 1000)
    };
    let ops = child(&user, || {
        json!({
            "create": create(&vp.join("f"), 0o644),
            "link": res(std::fs::hard_link(vp.join("f"), vp.join("g"))),
            "rename": res(std::fs::rename(vp.join("g"), vp.join("h"))),
            "unlink": res(std::fs::remove_file(vp.join("h"))),
            "mkdir": res(std::fs::create_dir(vp.join("d"))),
        })
    })?;
    let root = As {
        userns_fd: Some(fd),
        ..As::root()
    };
    let chr = child(&root, || {
        json!(mknod(
            &vp.join("chr"),
            libc::S_IFCHR | 0o644,
            libc::makedev(1, 3)
        ))
    })?;
    check!(
        ops.as_object()
            .is_some_and(|o| o.values().all(|x| x == "ok")),
        "in the user namespace: {ops}"
    );
    check!(
        st(&c.p("f")).starts_with("1000:1000:"),
        "f stored as {}",
        st(&c.p("f"))
    );
    check!(
        chr == "EPERM",
        "mknod of a char device in a user namespace: {chr}, want EPERM"
    );
    Ok(rec(vec![
        ("ops", ops),
        ("mknod_chr", chr),
        ("f", json!(st(&c.p("f")))),
    ]))
}

// ---------------------------------------------------------------- C

fn c1(c: &Ctx<'_>) -> Outcome {
    let v = c.view("b:0:10000:10000")?;
    write_file(&c.p("f"), 0o644)?;
    mkdir(&c.p("d"), 0o755)?;
    write_file(&c.p("victim"), 0o644)?;
    mkdir(&c.p("vdir"), 0o755)?;
    let p = |n: &str| v.path.join(n);
    // Root's fsid 0 has no mapping in this view.
    let r = rec(vec![
        ("link", json!(res(std::fs::hard_link(p("f"), p("f2"))))),
        ("rename_file", json!(res(std::fs::rename(p("f"), p("f3"))))),
        ("rename_dir", json!(res(std::fs::rename(p("d"), p("d3"))))),
        ("open_creat", json!(create(&p("new"), 0o644))),
        (
            "mknod_reg",
            json!(mknod(&p("reg"), libc::S_IFREG | 0o644, 0)),
        ),
        (
            "mknod_chr",
            json!(mknod(&p("chr"), libc::S_IFCHR | 0o644, libc::makedev(1, 3))),
        ),
        (
            "symlink",
            json!(res(std::os::unix::fs::symlink("f", p("sym")))),
        ),
        ("mkdir", json!(res(std::fs::create_dir(p("nd"))))),
        ("unlink", json!(res(std::fs::remove_file(p("victim"))))),
        ("rmdir", json!(res(std::fs::remove_dir(p("vdir"))))),
    ]);
    for (k, want) in [
        ("link", "EOVERFLOW"),
        ("rename_file", "EOVERFLOW"),
        ("rename_dir", "EOVERFLOW"),
        ("open_creat", "EOVERFLOW"),
        ("mknod_reg", "EOVERFLOW"),
        ("mknod_chr", "EOVERFLOW"),
        ("symlink", "EOVERFLOW"),
        ("mkdir", "EOVERFLOW"),
        ("unlink", "ok"),
        ("rmdir", "ok"),
    ] {
        check!(r[k] == want, "{k}: {} (want {want})", r[k]);
    }
    Ok(r)
}

fn c2(c: &Ctx<'_>) -> Outcome {
    let v = c.view("b:1000:1001:1 b:1001:1000:1")?;
    chmod(&c.dir, 0o777)?;
    write_file(&c.p("mine"), 0o644)?;
    chown(&c.p("mine"), 1001, 1001)?; // shows as 1000 through the view
    write_file(&c.p("theirs"), 0o644)?;
    chown(&c.p("theirs"), 1000, 1000)?; // shows as 1001
    let p = |n: &str| v.path.join(n);
    let (m, t) = (p("mine"), p("theirs"));
    let out = child(&As::user(1000, 1000), || {
        json!({
            "chown_self": res(std::os::unix::fs::chown(&m, Some(1000), Some(1000))),
            "chown_other": res(std::os::unix::fs::chown(&t, Some(1000), Some(1000))),
            "chown_unmapped": res(std::os::unix::fs::chown(&m, Some(5000), None)),
        })
    })?;
    check!(out["chown_self"] == "ok", "chown to self: {out}");
    check!(
        out["chown_other"] == "EPERM",
        "chown of another's file: {out}"
    );
    // EINVAL when the id has no kuid (xfstests runs in a user namespace),
    // EOVERFLOW when it has one that the idmap does not map.
    check!(
        out["chown_unmapped"] == "EINVAL" || out["chown_unmapped"] == "EOVERFLOW",
        "chown to an unmapped id: {out}"
    );
    Ok(out)
}

// ---------------------------------------------------------------- D

fn d1(c: &Ctx<'_>) -> Outcome {
    let v = c.view(MAP)?;
    for n in ["t", "ft"] {
        write_file(&c.p(n), 0o6777)?;
        chown(&c.p(n), 1001, 1001)?;
        chmod(&c.p(n), 0o6777)?;
    }
    let (t, ft) = (v.path.join("t"), v.path.join("ft"));
    let out = child(&As::user(11002, 11002), || {
        let a = res(
            rustix::fs::open(&t, rustix::fs::OFlags::WRONLY, rustix::fs::Mode::empty()).and_then(
                |_| {
                    rustix::fs::open(&t, rustix::fs::OFlags::WRONLY, rustix::fs::Mode::empty())
                        .map(|_| ())
                },
            ),
        );
        // SAFETY: valid C string.
        let tr = errno_of(unsafe { libc::truncate(cstr(&t).as_ptr(), 1) });
        let ftr = match std::fs::OpenOptions::new().write(true).open(&ft) {
            Ok(f) => res(f.set_len(2)),
            Err(e) => res::<(), _>(Err(e)),
        };
        json!({ "open": a, "truncate": tr, "ftruncate": ftr })
    })?;
    let (mt, mft) = (st(&c.p("t")), st(&c.p("ft")));
    check!(
        out["truncate"] == "ok" && out["ftruncate"] == "ok",
        "truncate by a non-owner with write access: {out}"
    );
    check!(
        mt.ends_with(":100777") && mft.ends_with(":100777"),
        "setid bits should be stripped by a truncate from a non-owner: {mt} {mft}"
    );
    Ok(rec(vec![
        ("ops", out),
        ("t", json!(mt)),
        ("ft", json!(mft)),
    ]))
}

fn d2(c: &Ctx<'_>) -> Outcome {
    let v = c.view(MAP)?;
    write_file(&c.p("w"), 0o6777)?;
    chown(&c.p("w"), 1001, 1001)?;
    chmod(&c.p("w"), 0o6777)?;
    write_file(&c.p("o"), 0o6755)?;
    chmod(&c.p("o"), 0o6755)?;
    let w = v.path.join("w");
    let out = child(&As::user(11002, 11002), || {
        json!(res(std::fs::OpenOptions::new()
            .write(true)
            .open(&w)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"x"))))
    })?;
    let chown = res(std::os::unix::fs::chown(
        v.path.join("o"),
        Some(11001),
        Some(11001),
    ));
    let (mw, mo) = (st(&c.p("w")), st(&c.p("o")));
    check!(out == "ok" && chown == "ok", "write {out}, chown {chown}");
    check!(
        mw.ends_with(":100777"),
        "write by a non-owner should strip setid: {mw}"
    );
    check!(mo == "1001:1001:100755", "chown should strip setid: {mo}");
    Ok(rec(vec![
        ("write", out),
        ("w", json!(mw)),
        ("o", json!(mo)),
    ]))
}

// ---------------------------------------------------------------- E

/// Creations in an S_ISGID directory, by a member of its group and by an
/// outsider, with `umask`, new objects asking for `mode`, and optionally a
/// default ACL on the directory.
fn setgid_case(c: &Ctx<'_>, umask: u32, mode: u32, default_acl: Option<&[u8]>) -> Outcome {
    let v = c.view(MAP)?;
    mkdir(&c.p("sg"), 0o777)?;
    chown(&c.p("sg"), 0, 1500)?;
    chmod(&c.p("sg"), 0o2777)?;
    if let Some(acl) = default_acl {
        let set = res(rustix::fs::setxattr(
            c.p("sg"),
            "system.posix_acl_default",
            acl,
            rustix::fs::XattrFlags::empty(),
        ));
        if set == "EOPNOTSUPP" {
            return Err(Stop::Skip("the target has no POSIX ACLs".into()));
        }
        check!(set == "ok", "setting a default ACL: {set}");
    }
    let sg = v.path.join("sg");
    let mut r = Map::new();
    for (who, groups) in [("member", vec![11500u32]), ("outsider", vec![])] {
        let s = sg.join(who);
        let caller = As {
            groups: groups.clone(),
            umask,
            ..As::user(11001, 11001)
        };
        let ops = child(&caller, || {
            let _ = std::fs::create_dir(&s);
            json!({
                "file": create(&s.join("file"), mode),
                "mknod": mknod(&s.join("reg"), libc::S_IFREG | mode, 0),
                "dir": res(rustix::fs::mkdir(s.join("dir"), rustix::fs::Mode::from_raw_mode(mode))),
                "tmpfile": tmpfile_link(&s, &s.join("tmp"), mode),
            })
        })?;
        r.insert(format!("{who}.ops"), ops);
        for n in ["file", "reg", "dir", "tmp"] {
            r.insert(
                format!("{who}.{n}"),
                json!(st(&c.p("sg").join(who).join(n))),
            );
        }
    }
    for who in ["member", "outsider"] {
        for n in ["file", "reg", "dir", "tmp"] {
            let s = r[&format!("{who}.{n}")].as_str().unwrap_or("").to_string();
            check!(
                s.starts_with("1001:1500:"),
                "{who}/{n} should inherit the directory's group 1500: {s}"
            );
        }
        let dir = r[&format!("{who}.dir")].as_str().unwrap_or("").to_string();
        check!(
            u32::from_str_radix(dir.rsplit(':').next().unwrap_or("0"), 8).unwrap_or(0)
                & libc::S_ISGID
                != 0,
            "{who}/dir should inherit S_ISGID: {dir}"
        );
    }
    let out_file = r["outsider.file"].as_str().unwrap_or("").to_string();
    check!(
        u32::from_str_radix(out_file.rsplit(':').next().unwrap_or("0"), 8).unwrap_or(0)
            & libc::S_ISGID
            == 0,
        "S_ISGID must be stripped for a caller outside the group: {out_file}"
    );
    Ok(Value::Object(r))
}

fn e1(c: &Ctx<'_>) -> Outcome {
    setgid_case(c, 0o022, 0o2755, None)
}

fn e2(c: &Ctx<'_>) -> Outcome {
    setgid_case(c, 0o010, 0o2755, None)
}

/// The mode bits of an "uid:gid:mode" record.
fn mode_of(st: &str) -> u32 {
    u32::from_str_radix(st.rsplit(':').next().unwrap_or("0"), 8).unwrap_or(0)
}

fn e3(c: &Ctx<'_>) -> Outcome {
    // user::rwx group::rw- other::rwx: the default ACL takes group execute
    // away and, since it replaces the umask, leaves other write in place.
    let acl = acl_bytes(&[(1, 7, 0), (4, 6, 0), (0x20, 7, 0)]);
    let r = setgid_case(c, 0o022, 0o2777, Some(&acl))?;
    for who in ["member", "outsider"] {
        for n in ["file", "reg", "dir", "tmp"] {
            let s = r[&format!("{who}.{n}")].as_str().unwrap_or("").to_string();
            let m = mode_of(&s);
            check!(
                m & 0o010 == 0,
                "{who}/{n}: the default ACL should remove group execute: {s}"
            );
            check!(
                m & 0o002 != 0,
                "{who}/{n}: a default ACL replaces the umask, so other write stays: {s}"
            );
        }
    }
    let member = r["member.file"].as_str().unwrap_or("").to_string();
    check!(
        mode_of(&member) & libc::S_ISGID != 0,
        "a member of the group keeps S_ISGID even without group execute: {member}"
    );
    Ok(r)
}

fn e4(c: &Ctx<'_>) -> Outcome {
    let v = c.view(MAP)?;
    for n in ["f", "g"] {
        write_file(&c.p(n), 0o644)?;
        chown(&c.p(n), 1001, 1001)?;
    }
    let (f, g) = (v.path.join("f"), v.path.join("g"));
    let caller = As {
        groups: vec![11500],
        ..As::user(11001, 11001)
    };
    let out = child(&caller, || {
        json!({
            "chgrp_member": res(std::os::unix::fs::chown(&f, None, Some(11500))),
            "chgrp_nonmember": res(std::os::unix::fs::chown(&g, None, Some(11600))),
            "seen": st(&f),
        })
    })?;
    let (sf, sg) = (st(&c.p("f")), st(&c.p("g")));
    check!(
        out["chgrp_member"] == "ok",
        "chgrp to a group the owner is in: {out}"
    );
    check!(
        out["chgrp_nonmember"] == "EPERM",
        "chgrp to a group the owner is not in: {out}"
    );
    check!(
        sf.starts_with("1001:1500:"),
        "f stored as {sf}, want 1001:1500"
    );
    check!(
        sg.starts_with("1001:1001:"),
        "g stored as {sg}, want 1001:1001"
    );
    check!(
        out["seen"]
            .as_str()
            .is_some_and(|s| s.starts_with("11001:11500:")),
        "f through the view: {out}"
    );
    Ok(rec(vec![("ops", out), ("f", json!(sf)), ("g", json!(sg))]))
}

// ---------------------------------------------------------------- F

fn acl_bytes(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (t, p, i) in entries {
        v.extend_from_slice(&t.to_le_bytes());
        v.extend_from_slice(&p.to_le_bytes());
        v.extend_from_slice(&i.to_le_bytes());
    }
    v
}

fn f1(c: &Ctx<'_>) -> Outcome {
    let v = c.view(MAP)?;
    write_file(&c.p("f"), 0o600)?;
    // user::rw-, user:11001:r-- (view ids), group::---, mask::r--, other::---
    let acl = acl_bytes(&[
        (1, 6, 0),
        (2, 4, 11001),
        (4, 0, 0),
        (0x10, 4, 0),
        (0x20, 0, 0),
    ]);
    let set = res(rustix::fs::setxattr(
        v.path.join("f"),
        "system.posix_acl_access",
        &acl,
        rustix::fs::XattrFlags::empty(),
    ));
    if set == "EOPNOTSUPP" {
        return Err(Stop::Skip("the target has no POSIX ACLs".into()));
    }
    check!(set == "ok", "setting an ACL through the view: {set}");
    let read = |p: &Path| -> Vec<u32> {
        let mut buf = [0u8; 256];
        match rustix::fs::getxattr(p, "system.posix_acl_access", &mut buf) {
            Ok(n) => buf[4..n]
                .chunks(8)
                .filter(|e| u16::from_le_bytes([e[0], e[1]]) == 2)
                .map(|e| u32::from_le_bytes([e[4], e[5], e[6], e[7]]))
                .collect(),
            Err(_) => vec![],
        }
    };
    let (plain, view) = (read(&c.p("f")), read(&v.path.join("f")));
    check!(
        plain == [1001],
        "stored with fs ids: {plain:?}, want [1001]"
    );
    check!(
        view == [11001],
        "read back through the view: {view:?}, want [11001]"
    );
    let f = v.path.join("f");
    let named = child(&As::user(11001, 11001), || json!(res(std::fs::read(&f))))?;
    let other = child(&As::user(11002, 11002), || json!(res(std::fs::read(&f))))?;
    check!(
        named == "ok" && other == "EACCES",
        "ACL enforcement: named user {named}, other {other}"
    );
    Ok(rec(vec![
        ("plain", json!(plain)),
        ("view", json!(view)),
        ("named", named),
        ("other", other),
        ("mode", json!(st(&c.p("f")))),
    ]))
}

/// The entries (tag, perm, id) of an ACL xattr, or the errno.
fn acl_entries(p: &Path, name: &str) -> Result<Vec<(u16, u16, u32)>, String> {
    let mut buf = [0u8; 512];
    let n = rustix::fs::getxattr(p, name, &mut buf)
        .map_err(|e| crate::proc::errno_name(e.raw_os_error()))?;
    Ok(buf[4.min(n)..n]
        .chunks_exact(8)
        .map(|e| {
            (
                u16::from_le_bytes([e[0], e[1]]),
                u16::from_le_bytes([e[2], e[3]]),
                u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            )
        })
        .collect())
}

fn f2(c: &Ctx<'_>) -> Outcome {
    let v = c.view(MAP)?;
    write_file(&c.p("f"), 0o600)?;
    let vf = v.path.join("f");
    // user::rw- user:11001:rw- group::r-- mask::rw- other::---
    let acl = acl_bytes(&[
        (1, 6, 0),
        (2, 6, 11001),
        (4, 4, 0),
        (0x10, 6, 0),
        (0x20, 0, 0),
    ]);
    let set = res(rustix::fs::setxattr(
        &vf,
        "system.posix_acl_access",
        &acl,
        rustix::fs::XattrFlags::empty(),
    ));
    if set == "EOPNOTSUPP" {
        return Err(Stop::Skip("the target has no POSIX ACLs".into()));
    }
    check!(set == "ok", "setting an ACL through the view: {set}");
    let after_set = st(&c.p("f"));
    check!(
        after_set.ends_with(":100660"),
        "the group bits of the mode should show the mask (rw-): {after_set}"
    );
    let vf2 = vf.clone();
    let write = |f: &Path| {
        let f = f.to_path_buf();
        child(&As::user(11001, 11001), move || {
            json!({
                "write": res(std::fs::OpenOptions::new().write(true).open(&f)),
                "read": res(std::fs::File::open(&f)),
            })
        })
    };
    let before = write(&vf2)?;
    chmod(&vf, 0o640)?;
    let after_chmod = st(&c.p("f"));
    let entries = acl_entries(&vf, "system.posix_acl_access");
    let limited = write(&vf2)?;
    chmod(&vf, 0o660)?;
    let restored = write(&vf2)?;
    let entries_v = entries.clone().unwrap_or_default();
    let find = |tag: u16| entries_v.iter().find(|e| e.0 == tag).copied();
    check!(
        after_chmod.ends_with(":100640"),
        "after chmod 0640: {after_chmod}"
    );
    check!(
        find(0x10).map(|e| e.1) == Some(4),
        "chmod 0640 should set the mask to r--: {entries:?}"
    );
    check!(
        find(2) == Some((2, 6, 11001)) && find(4).map(|e| e.1) == Some(4),
        "chmod must change the mask only, not the named user or owning group entries: {entries:?}"
    );
    check!(
        before["write"] == "ok" && limited["write"] == "EACCES" && limited["read"] == "ok",
        "the mask limits the named user: before {before}, after chmod {limited}"
    );
    check!(
        restored["write"] == "ok",
        "chmod 0660 should widen the mask again: {restored}"
    );
    Ok(rec(vec![
        ("after_set", json!(after_set)),
        ("after_chmod", json!(after_chmod)),
        ("entries", json!(format!("{entries:?}"))),
        ("before", before),
        ("limited", limited),
        ("restored", restored),
    ]))
}

// ---------------------------------------------------------------- H

fn h1(c: &Ctx<'_>) -> Outcome {
    let v = c.view(MAP)?;
    mkdir(&c.p("sticky"), 0o1777)?;
    for n in ["a", "b", "c"] {
        write_file(&c.p("sticky").join(n), 0o666)?;
        chown(&c.p("sticky").join(n), 1001, 1001)?;
    }
    let s = v.path.join("sticky");
    let other = child(
        &As::user(11002, 11002),
        || json!({ "unlink": res(std::fs::remove_file(s.join("a"))), "rename": res(std::fs::rename(s.join("b"), s.join("b2"))) }),
    )?;
    let owner = child(
        &As::user(11001, 11001),
        || json!({ "unlink": res(std::fs::remove_file(s.join("c"))) }),
    )?;
    check!(
        other["unlink"] == "EPERM" && other["rename"] == "EPERM",
        "non-owner in a sticky dir: {other}"
    );
    check!(owner["unlink"] == "ok", "owner in a sticky dir: {owner}");
    Ok(rec(vec![("other", other), ("owner", owner)]))
}

/// An exclusive lock for scenarios that change machine-wide settings (a
/// sysctl, /dev/fuse's mode, users): suites running side by side take turns
/// instead of restoring each other's changes. Released when dropped, or
/// when a killed scenario's process dies.
struct MachineLock(#[allow(dead_code)] std::fs::File);

impl MachineLock {
    fn take() -> Result<Self, Stop> {
        let path = if Path::new("/run/lock").is_dir() {
            "/run/lock/idfuse-conformance.lock"
        } else {
            "/tmp/idfuse-conformance.lock"
        };
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Stop::Fail(format!("opening {path}: {e}")))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Stop::Fail(format!("locking {path}: {e}")))?;
        Ok(Self(f))
    }
}

/// The original value of a machine-wide setting that a scenario changes:
/// kept in a file beside the lock until the scenario puts it back, so that
/// a scenario killed before it could restore the setting is repaired by the
/// next one instead of taking the changed value for the original.
/// Call only while holding the [`MachineLock`].
fn original_of(name: &str, current: &str) -> String {
    let record = record_path(name);
    match std::fs::read_to_string(&record) {
        Ok(saved) => saved,
        Err(_) => {
            let _ = std::fs::write(&record, current);
            current.to_string()
        }
    }
}

/// The original was put back: forget it.
fn restored(name: &str) {
    let _ = std::fs::remove_file(record_path(name));
}

fn record_path(name: &str) -> PathBuf {
    let dir = if Path::new("/run/lock").is_dir() {
        "/run/lock"
    } else {
        "/tmp"
    };
    PathBuf::from(format!("{dir}/idfuse-conformance.{name}.orig"))
}

/// A sysctl set for the length of a scenario, restored on drop.
struct Sysctl {
    path: &'static str,
    saved: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Result<Self, Stop> {
        let current = std::fs::read_to_string(path)
            .map_err(|e| Stop::Skip(format!("cannot read {path}: {e}")))?;
        let name = format!("sysctl-{}", path.rsplit('/').next().unwrap_or("x"));
        let saved = original_of(&name, &current);
        if current.trim() != value {
            std::fs::write(path, value).map_err(|e| {
                Stop::Skip(format!(
                    "{path} is {} and cannot be set to {value} for the run: {e}",
                    saved.trim()
                ))
            })?;
        }
        Ok(Self { path, saved })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if std::fs::write(self.path, self.saved.trim()).is_ok() {
            restored(&format!(
                "sysctl-{}",
                self.path.rsplit('/').next().unwrap_or("x")
            ));
        }
    }
}

fn h2(c: &Ctx<'_>) -> Outcome {
    // Distributions ship fs.protected_symlinks=1; this machine may not.
    let _lock = MachineLock::take()?;
    let _knob = Sysctl::set("/proc/sys/fs/protected_symlinks", "1")?;
    let v = c.view(MAP)?;
    // A sticky, world-writable directory owned by root, with a link owned
    // by 1001; and one owned by 1003 with a link owned by 1003.
    mkdir(&c.p("s"), 0o1777)?;
    write_file(&c.p("s/target"), 0o666)?;
    std::os::unix::fs::symlink("target", c.p("s/l"))
        .map_err(|e| Stop::Fail(format!("symlink: {e}")))?;
    chown(&c.p("s/l"), 1001, 1001)?;
    mkdir(&c.p("t"), 0o1777)?;
    chown(&c.p("t"), 1003, 1003)?;
    chmod(&c.p("t"), 0o1777)?;
    write_file(&c.p("t/target"), 0o666)?;
    std::os::unix::fs::symlink("target", c.p("t/l"))
        .map_err(|e| Stop::Fail(format!("symlink: {e}")))?;
    chown(&c.p("t/l"), 1003, 1003)?;
    let follow = |who: As, p: PathBuf| child(&who, move || json!(res(std::fs::File::open(&p))));
    let vp = |n: &str| v.path.join(n);
    let r = rec(vec![
        ("view_other", follow(As::user(11002, 11002), vp("s/l"))?),
        ("view_owner", follow(As::user(11001, 11001), vp("s/l"))?),
        ("view_root", follow(As::root(), vp("s/l"))?),
        (
            "view_dir_owner_match",
            follow(As::user(11002, 11002), vp("t/l"))?,
        ),
        ("plain_other", follow(As::user(1002, 1002), c.p("s/l"))?),
        ("plain_owner", follow(As::user(1001, 1001), c.p("s/l"))?),
    ]);
    for (k, want) in [
        ("view_other", "EACCES"),
        ("view_owner", "ok"),
        ("view_root", "EACCES"),
        ("view_dir_owner_match", "ok"),
        ("plain_other", "EACCES"),
        ("plain_owner", "ok"),
    ] {
        check!(r[k] == want, "{k}: {} (want {want})", r[k]);
    }
    Ok(r)
}

// ---------------------------------------------------------------- I

fn i1(c: &Ctx<'_>) -> Outcome {
    let v1 = c.view(MAP)?;
    let v2 = c.view(MAP)?;
    write_file(&c.p("f"), 0o644)?;
    mkdir(&c.p("d"), 0o777)?;
    let r = rec(vec![
        (
            "link_plain_to_view",
            json!(res(std::fs::hard_link(c.p("f"), v1.path.join("d/l1")))),
        ),
        (
            "link_view_to_view",
            json!(res(std::fs::hard_link(
                v1.path.join("f"),
                v2.path.join("d/l2")
            ))),
        ),
        (
            "rename_view_to_plain",
            json!(res(std::fs::rename(v1.path.join("f"), c.p("d/r1")))),
        ),
        (
            "rename_view_to_view",
            json!(res(std::fs::rename(
                v1.path.join("f"),
                v2.path.join("d/r2")
            ))),
        ),
        (
            "link_inside_view",
            json!(res(std::fs::hard_link(
                v1.path.join("f"),
                v1.path.join("d/l3")
            ))),
        ),
        (
            "rename_inside_view",
            json!(res(std::fs::rename(
                v1.path.join("d/l3"),
                v1.path.join("d/l4")
            ))),
        ),
    ]);
    for k in [
        "link_plain_to_view",
        "link_view_to_view",
        "rename_view_to_plain",
        "rename_view_to_view",
    ] {
        check!(r[k] == "EXDEV", "{k}: {} (want EXDEV)", r[k]);
    }
    check!(
        r["link_inside_view"] == "ok" && r["rename_inside_view"] == "ok",
        "inside one view: {r}"
    );
    Ok(r)
}

// ---------------------------------------------------------------- K

fn k1(c: &Ctx<'_>) -> Outcome {
    let v = c.view(MAP)?;
    write_file(&c.p("a"), 0o644)?;
    let r = res(rustix::fs::renameat_with(
        rustix::fs::CWD,
        v.path.join("a"),
        rustix::fs::CWD,
        v.path.join("b"),
        rustix::fs::RenameFlags::WHITEOUT,
    ));
    let wo = st(&c.p("a"));
    if r == "ok" {
        check!(
            wo == "0:0:20000",
            "whiteout should be a 0:0 char device owned by the caller (0:0): {wo}"
        );
    }
    Ok(rec(vec![
        ("rename_whiteout", json!(r)),
        ("whiteout", json!(wo)),
    ]))
}

fn k2(c: &Ctx<'_>) -> Outcome {
    let v = c.view(MAP)?;
    let vp = v.path.clone();
    let r = child(&As::user(11003, 11004), || {
        json!(tmpfile_link(&vp, &vp.join("t"), 0o640))
    })?;
    if r == "EOPNOTSUPP" {
        return Err(Stop::Skip("the target has no O_TMPFILE".into()));
    }
    check!(r == "ok", "O_TMPFILE + linkat through the view: {r}");
    let s = st(&c.p("t"));
    check!(s == "1003:1004:100640", "linked tmpfile stored as {s}");
    Ok(rec(vec![("tmpfile", r), ("t", json!(s))]))
}

// ---------------------------------------------------------------- L

fn l1(c: &Ctx<'_>) -> Outcome {
    c.ours_only()?;
    let src = c.work.join("l1-src");
    let mnt = c.work.join("l1-mnt");
    std::fs::create_dir_all(&src).map_err(|e| Stop::Fail(e.to_string()))?;
    std::fs::create_dir_all(&mnt).map_err(|e| Stop::Fail(e.to_string()))?;
    let argv: Vec<String> = vec![
        c.idfuse.to_string_lossy().into(),
        "mount".into(),
        "passthrough".into(),
        src.to_string_lossy().into(),
        mnt.to_string_lossy().into(),
        "--foreground".into(),
    ];
    let mut d = crate::target::start_daemon(&argv, &mnt).map_err(Stop::Fail)?;
    let result = (|| {
        let view = c.view_of(&mnt, MAP)?;
        let mut f =
            std::fs::File::create(mnt.join("kept")).map_err(|e| Stop::Fail(e.to_string()))?;
        std::io::Write::write_all(&mut f, &[7u8; 65536]).map_err(|e| Stop::Fail(e.to_string()))?;
        f.sync_all().map_err(|e| Stop::Fail(e.to_string()))?;
        drop(f);
        let _ = d.kill();
        let _ = d.wait();
        let (m, p, vp) = (mnt.clone(), mnt.join("kept"), view.path.join("kept"));
        // A daemon serving over io_uring leaves the kernel a moment of
        // teardown after its exit (the ring's commands are cancelled
        // asynchronously): requests made then end with ECONNABORTED (or
        // ECANCELED), and from then on every request gets ENOTCONN. Over
        // /dev/fuse the first request gets ENOTCONN already.
        let seen = child(&As::root(), || {
            let mut during = Vec::new();
            let t = std::time::Instant::now();
            loop {
                let r = res(std::fs::metadata(&m));
                if r == "ENOTCONN" || t.elapsed() > std::time::Duration::from_secs(5) {
                    break;
                }
                if !during.contains(&r) {
                    during.push(r);
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            json!({ "during_teardown": during, "plain": res(std::fs::metadata(&p)), "view": res(std::fs::metadata(&vp)), "root": res(std::fs::read_dir(&m)) })
        })?;
        let teardown_ok = seen["during_teardown"]
            .as_array()
            .is_some_and(|v| v.iter().all(|e| e == "ECONNABORTED" || e == "ECANCELED"));
        check!(
            teardown_ok && seen["plain"] == "ENOTCONN" && seen["view"] == "ENOTCONN",
            "after the daemon died: {seen}"
        );
        drop(view);
        let um = res(rustix::mount::unmount(
            &mnt,
            rustix::mount::UnmountFlags::empty(),
        ));
        check!(um == "ok", "unmounting after the daemon died: {um}");
        let data = std::fs::read(src.join("kept")).map_err(|e| Stop::Fail(e.to_string()))?;
        check!(data == vec![7u8; 65536], "fsync'ed data lost");
        Ok(json!({ "after_kill": seen, "unmount": um, "data_intact": true }))
    })();
    let _ = rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH);
    let _ = d.kill();
    let _ = d.wait();
    result
}

fn l2(c: &Ctx<'_>) -> Outcome {
    c.ours_only()?;
    let mnt = c.work.join("l2");
    std::fs::create_dir_all(&mnt).map_err(|e| Stop::Fail(e.to_string()))?;
    let argv: Vec<String> = vec![
        c.idfuse.to_string_lossy().into(),
        "mount".into(),
        "memfs".into(),
        mnt.to_string_lossy().into(),
        "--foreground".into(),
    ];
    let mut d = crate::target::start_daemon(&argv, &mnt).map_err(Stop::Fail)?;
    let um = res(rustix::mount::unmount(
        &mnt,
        rustix::mount::UnmountFlags::empty(),
    ));
    let start = std::time::Instant::now();
    let status = loop {
        if let Ok(Some(s)) = d.try_wait() {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = d.kill();
            let _ = d.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    check!(um == "ok", "umount: {um}");
    check!(
        status.is_some_and(|s| s.success()),
        "daemon after a clean unmount: {status:?}"
    );
    Ok(json!({ "exit": 0 }))
}

/// The catalogue, in order.
pub fn catalogue() -> Vec<Scenario> {
    vec![
        Scenario {
            id: "A1",
            title: "a server that did not opt in cannot be idmapped, and we say why",
            run: a1,
        },
        Scenario {
            id: "A2",
            title: "a server that opted in can be idmapped",
            run: a2,
        },
        Scenario {
            id: "A3",
            title: "idmap support without default_permissions is refused before mounting",
            run: a3,
        },
        Scenario {
            id: "A4",
            title: "after opt-in only creating requests carry ids, mapped back",
            run: a4,
        },
        Scenario {
            id: "B1",
            title: "objects created through an idmapped mount get mapped owners",
            run: b1,
        },
        Scenario {
            id: "B2",
            title: "fchownat through an idmapped mount stores fs ids",
            run: b2,
        },
        Scenario {
            id: "B3",
            title: "a caller with mapped fsids can create everything",
            run: b3,
        },
        Scenario {
            id: "B4",
            title: "inside a matching user namespace: create, link, rename, unlink; no mknod",
            run: b4,
        },
        Scenario {
            id: "B5",
            title: "nested user namespaces attached to idmapped mounts",
            run: ns::b5,
        },
        Scenario {
            id: "C1",
            title: "unmapped fsids: creating calls fail with EOVERFLOW, unlink/rmdir work",
            run: c1,
        },
        Scenario {
            id: "C2",
            title: "chown through an idmapped mount: self ok, other EPERM, unmapped EINVAL",
            run: c2,
        },
        Scenario {
            id: "C3",
            title: "a file whose owner is unmapped cannot be opened for write (also io_uring)",
            run: uring::c3,
        },
        Scenario {
            id: "D1",
            title: "truncate by a non-owner strips setid bits",
            run: d1,
        },
        Scenario {
            id: "D2",
            title: "write by a non-owner and chown strip setid bits",
            run: d2,
        },
        Scenario {
            id: "D3",
            title: "setuid/setgid binaries on an idmapped mount",
            run: ns::d3,
        },
        Scenario {
            id: "E1",
            title: "setgid directories: group and S_ISGID inheritance, stripping",
            run: e1,
        },
        Scenario {
            id: "E2",
            title: "setgid directories with umask S_IXGRP",
            run: e2,
        },
        Scenario {
            id: "E3",
            title: "setgid stripping when a default ACL removes group execute",
            run: e3,
        },
        Scenario {
            id: "E4",
            title: "chgrp to an own group through an idmapped mount",
            run: e4,
        },
        Scenario {
            id: "F1",
            title: "POSIX ACLs through an idmapped mount: stored with fs ids, enforced",
            run: f1,
        },
        Scenario {
            id: "F2",
            title: "chmod keeps ACL and mode consistent",
            run: f2,
        },
        Scenario {
            id: "G1",
            title: "security.capability rootid translation",
            run: ns::g1,
        },
        Scenario {
            id: "G2",
            title: "capabilities valid only in an ancestor namespace",
            run: ns::g2,
        },
        Scenario {
            id: "H1",
            title: "sticky directories through an idmapped mount",
            run: h1,
        },
        Scenario {
            id: "H2",
            title: "protected_symlinks with mapped owners",
            run: h2,
        },
        Scenario {
            id: "I1",
            title: "link and rename across mounts fail with EXDEV",
            run: i1,
        },
        Scenario {
            id: "J1",
            title: "an unprivileged user mounts and idmaps our server",
            run: unpriv::j1,
        },
        Scenario {
            id: "J2",
            title: "no escalation from an unprivileged mount",
            run: unpriv::j2,
        },
        Scenario {
            id: "K1",
            title: "RENAME_WHITEOUT through an idmapped mount",
            run: k1,
        },
        Scenario {
            id: "K2",
            title: "O_TMPFILE then linkat through an idmapped mount",
            run: k2,
        },
        Scenario {
            id: "K3",
            title: "io_uring openat with registered credentials",
            run: uring::k3,
        },
        Scenario {
            id: "L1",
            title: "killing the daemon: ENOTCONN, unmount works, fsync'ed data intact",
            run: l1,
        },
        Scenario {
            id: "L2",
            title: "a clean unmount ends the daemon with status 0",
            run: l2,
        },
        Scenario {
            id: "O1",
            title: "overlay: copy-up through an idmapped view keeps the lower owner",
            run: overlay::o1,
        },
        Scenario {
            id: "O2",
            title: "overlay: created through the view by mapped uid X, in the upper as X's fs id",
            run: overlay::o2,
        },
        Scenario {
            id: "O3",
            title: "overlay: unlink of a lower file leaves a kernel-format whiteout",
            run: overlay::o3,
        },
        Scenario {
            id: "O4",
            title: "overlay: rmdir + mkdir of a lower directory makes it opaque",
            run: overlay::o4,
        },
        Scenario {
            id: "O5",
            title: "rename of a directory (a lower one on overlay: EXDEV)",
            run: overlay::o5,
        },
        Scenario {
            id: "O6",
            title: "writing a file that is open for reading (a lower one on overlay)",
            run: overlay::o6,
        },
    ]
}

/// Where a target differs from the reference (tmpfs) by design: in a
/// differential run a difference at `key` (a record path, or a prefix of
/// one) of `scenario` on `target` is reported, with `why`, and does not
/// fail the scenario.
#[derive(Debug, Clone, Copy)]
pub struct Difference {
    /// The target's name as it is spelled on the command line; it covers
    /// the same target with options (`overlay` covers `overlay:userxattr`).
    pub target: &'static str,
    /// The scenario id.
    pub scenario: &'static str,
    /// The record path that differs.
    pub key: &'static str,
    /// Why, in words.
    pub why: &'static str,
}

impl Difference {
    /// Whether it is documented for `target` (a target's display name).
    pub fn applies_to(&self, target: &str) -> bool {
        target == self.target
            || target
                .strip_prefix(self.target)
                .is_some_and(|rest| rest.starts_with(':'))
    }
}

/// Every documented difference from the reference.
pub fn documented_differences() -> Vec<Difference> {
    const EXDEV: &str = "overlay: a directory from a lower layer cannot be renamed (EXDEV, \
        like kernel overlayfs without redirect_dir; mv copies instead), and the \
        upper then holds a whiteout for the renamed lower file";
    [
        "rename_dir_plain",
        "rename_dir_view",
        "listing",
        "upper_f",
        "upper_g",
    ]
    .into_iter()
    .map(|key| Difference {
        target: "overlay",
        scenario: "O5",
        key,
        why: EXDEV,
    })
    .chain(
        ["write_while_open_for_reading", "reader_read", "contents"].map(|key| Difference {
            target: "overlay",
            scenario: "O6",
            key,
            why: "overlay with FUSE passthrough: while a lower file is open for reading, \
                opening it for writing (and truncating it by path) is refused with ETXTBSY, \
                and the file keeps its contents; the kernel takes one backing file per FUSE \
                inode and the reader's is the lower file. Kernel overlayfs copies up and the \
                reader reads the copy, as idfuse's overlay does without passthrough",
        }),
    )
    .chain(["rename_whiteout", "whiteout"].map(|key| Difference {
        target: "overlay:userxattr",
        scenario: "K1",
        key,
        why: "overlay with userxattr: RENAME_WHITEOUT is refused with EINVAL, as kernel \
            overlayfs refuses it: the overlay shows a caller's 0/0 char device by marking \
            it with an xattr, and a char device cannot carry user.* xattrs",
    }))
    .collect()
}
