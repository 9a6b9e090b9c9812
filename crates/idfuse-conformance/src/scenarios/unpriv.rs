//! Unprivileged users (J1, J2): a throwaway user with subordinate ids makes
//! a user namespace, mounts a fresh instance of the target's filesystem
//! there (tmpfs for the reference, our daemon for ours), idmaps it through
//! a child namespace, and works through both views.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{original_of, rec, restored, st, Ctx, MachineLock, Outcome, Stop};
use crate::proc::{errno_name, res, run_as, As};

/// The throwaway user's name: fixed, so that a run killed before it could
/// clean up is repaired by the next one.
const USER: &str = "idfuse-conf";
/// Its subordinate ids (namespace 0..65535 is host BASE..).
const BASE: u32 = 3_200_000;
/// The idmap made inside the namespace: its 0..999 show as 1000..1999.
const IDMAP: &str = "b:0:1000:1000";

/// The throwaway user, removed and /etc/sub[ug]id restored on drop.
struct Throwaway {
    uid: u32,
    gid: u32,
    saved: Vec<(&'static str, Option<String>)>,
}

fn strip(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with(&format!("{USER}:")))
        .map(|l| format!("{l}\n"))
        .collect()
}

impl Throwaway {
    fn create() -> Result<Self, Stop> {
        for tool in ["useradd", "userdel", "newuidmap", "newgidmap"] {
            let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
                .iter()
                .any(|d| Path::new(d).join(tool).exists());
            if !found {
                return Err(Stop::Skip(format!(
                    "`{tool}` is missing (Debian packages passwd and uidmap)"
                )));
            }
        }
        // A leftover from a killed run.
        let _ = Command::new("userdel").arg(USER).output();
        let saved: Vec<(&'static str, Option<String>)> = ["/etc/subuid", "/etc/subgid"]
            .into_iter()
            .map(|f| (f, std::fs::read_to_string(f).ok().map(|t| strip(&t))))
            .collect();
        let out = Command::new("useradd")
            .args(["-M", "-N", "-s", "/usr/sbin/nologin", USER])
            .output()
            .map_err(|e| Stop::Fail(format!("useradd: {e}")))?;
        if !out.status.success() {
            return Err(Stop::Fail(format!(
                "useradd {USER}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let mut me = Self {
            uid: 0,
            gid: 0,
            saved,
        };
        let id = |flag: &str| -> Result<u32, Stop> {
            let out = Command::new("id")
                .args([flag, USER])
                .output()
                .map_err(|e| Stop::Fail(format!("id: {e}")))?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .map_err(|_| Stop::Fail(format!("no id {flag} for {USER}")))
        };
        me.uid = id("-u")?;
        // newuidmap insists on the primary group of the passwd entry.
        me.gid = id("-g")?;
        for (f, old) in &me.saved {
            let text = format!("{}{USER}:{BASE}:65536\n", old.as_deref().unwrap_or(""));
            std::fs::write(f, text).map_err(|e| Stop::Fail(format!("writing {f}: {e}")))?;
        }
        Ok(me)
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(USER).output();
        for (f, old) in &self.saved {
            match old {
                Some(t) => {
                    let _ = std::fs::write(f, t);
                }
                None => {
                    let _ = std::fs::remove_file(f);
                }
            }
        }
    }
}

/// /dev/fuse opened up to everyone for the scenario, as distributions ship
/// it; the old mode is restored on drop.
struct DevFuse(u32);

impl DevFuse {
    fn widen() -> Result<Self, Stop> {
        let m =
            std::fs::metadata("/dev/fuse").map_err(|e| Stop::Skip(format!("/dev/fuse: {e}")))?;
        let now = std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777;
        let old = original_of("dev-fuse-mode", &format!("{now:o}"));
        let old = u32::from_str_radix(old.trim(), 8).unwrap_or(now);
        set_mode("/dev/fuse", 0o666)?;
        Ok(Self(old))
    }
}

impl Drop for DevFuse {
    fn drop(&mut self) {
        if set_mode("/dev/fuse", self.0).is_ok() {
            restored("dev-fuse-mode");
        }
    }
}

fn set_mode(p: impl AsRef<Path>, mode: u32) -> Result<(), Stop> {
    let p = p.as_ref();
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| Stop::Fail(format!("chmod {}: {e}", p.display())))
}

/// Where the unprivileged body works, as seen inside its namespaces.
pub(super) struct Places {
    /// The plain mount.
    pub mnt: PathBuf,
    /// The idmapped view of it.
    pub view: PathBuf,
}

fn fail(e: impl std::fmt::Display) -> Value {
    json!({ "__error": e.to_string() })
}

/// Become root in a new user namespace made from `map` by the current
/// (unprivileged) user, in a new mount namespace.
fn enter_userns(map: &str) -> Result<(), String> {
    super::ns::nest(&[map])?;
    crate::private_mounts()
}

/// Mount a fresh `kind` at `mnt` from inside the namespace; a daemon, if
/// any, is returned so it can be stopped.
fn mount_kind(
    kind: &str,
    bin: &Path,
    src: &Path,
    mnt: &Path,
    fault: Option<&str>,
) -> Result<Option<std::process::Child>, String> {
    let b = bin.to_string_lossy().to_string();
    let m = mnt.to_string_lossy().to_string();
    let argv: Vec<String> = match kind {
        "tmpfs" => {
            rustix::mount::mount(
                "tmpfs",
                mnt,
                "tmpfs",
                rustix::mount::MountFlags::empty(),
                Some(c"mode=0777"),
            )
            .map_err(|e| format!("mounting tmpfs in the namespace: {e}"))?;
            return Ok(None);
        }
        "memfs" => {
            let mut v = vec![b, "mount".into(), "memfs".into(), m, "--foreground".into()];
            if let Some(f) = fault {
                v.extend(["--fault".into(), f.to_string()]);
            }
            v
        }
        "overlay" => {
            // Layers made by the namespace's root; metadata in user.*
            // xattrs, as kernel overlayfs's userxattr (trusted.* is out of
            // reach in a user namespace).
            let layer = |n: &str| {
                let p = src.join(n);
                std::fs::create_dir_all(&p)
                    .map(|()| p.to_string_lossy().into_owned())
                    .map_err(|e| format!("{}: {e}", p.display()))
            };
            let opts = format!(
                "lowerdir={},upperdir={},workdir={},userxattr",
                layer("lower")?,
                layer("upper")?,
                layer("work")?
            );
            vec![
                b,
                "mount".into(),
                "overlay".into(),
                m,
                "--foreground".into(),
                "-o".into(),
                opts,
            ]
        }
        _ => vec![
            b,
            "mount".into(),
            "passthrough".into(),
            src.to_string_lossy().into(),
            m,
            "--foreground".into(),
        ],
    };
    crate::target::start_daemon(&argv, mnt).map(Some)
}

/// Unmount `mnt`; a daemon must then exit by itself, with status 0.
fn stop_kind(mnt: &Path, daemon: Option<std::process::Child>) -> String {
    let um = res(rustix::mount::unmount(
        mnt,
        rustix::mount::UnmountFlags::empty(),
    ));
    let Some(mut d) = daemon else { return um };
    let start = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = d.try_wait() {
            break format!("exit {}", s.code().unwrap_or(-1));
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = d.kill();
            let _ = d.wait();
            break "did not exit after unmount".into();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    format!("{um}, daemon {status}")
}

/// What the J scenarios share: the setup as root, the namespace work as
/// the throwaway user, and, for the passthrough and the overlay, the
/// backing directory (the overlay's upper layer) as the host sees it.
fn unprivileged(c: &Ctx<'_>, body: fn(&Places) -> Value) -> Result<(Value, Option<PathBuf>), Stop> {
    let Some(kind) = c.inst.userns_kind else {
        return Err(Stop::Skip(
            "needs a fresh instance of the target's filesystem mounted by an unprivileged user in a user namespace, which only the tmpfs, memfs, passthrough and overlay targets provide"
                .into(),
        ));
    };
    // Another suite on this machine may be adding the same user or
    // widening /dev/fuse: take turns.
    let _lock = MachineLock::take()?;
    let user = Throwaway::create()?;
    let _fuse = DevFuse::widen()?;
    let tag = format!("{}-{}", std::process::id(), kind);
    let base = c.work.join(format!("j-{tag}"));
    let (src, mnt, view) = (base.join("src"), base.join("mnt"), base.join("view"));
    for d in [&base, &src, &mnt, &view] {
        std::fs::create_dir_all(d).map_err(|e| Stop::Fail(format!("{}: {e}", d.display())))?;
        set_mode(d, 0o777)?;
    }
    // The namespace's root owns the mirrored directory.
    std::os::unix::fs::chown(&src, Some(BASE), Some(BASE))
        .map_err(|e| Stop::Fail(format!("chown {}: {e}", src.display())))?;
    // The daemon binary where the throwaway user can run it.
    let bin = base.join("idfuse");
    if kind != "tmpfs" {
        std::fs::copy(&c.idfuse, &bin).map_err(|e| Stop::Fail(format!("copying idfuse: {e}")))?;
        set_mode(&bin, 0o755)?;
    }
    let fault = c.inst.fault.clone();
    let (s2, m2, v2, b2) = (src.clone(), mnt.clone(), view.clone(), bin.clone());
    let out = run_as(
        &As::user(user.uid, user.gid),
        Duration::from_secs(40),
        move || {
            if let Err(e) = enter_userns(&format!("b:0:{BASE}:65536")) {
                return fail(e);
            }
            let daemon = match mount_kind(kind, &b2, &s2, &m2, fault.as_deref()) {
                Ok(d) => d,
                Err(e) => return fail(format!("mounting {kind} in the namespace: {e}")),
            };
            let _ = set_mode(&m2, 0o777);
            let inner = (|| -> Result<Value, String> {
                let map: idfuse_idmap::IdMap = IDMAP.parse().map_err(|e| format!("{e}"))?;
                let ns = idfuse_idmap::UserNamespace::create(&map).map_err(|e| e.to_string())?;
                let guard =
                    idfuse_idmap::idmap_mount(&m2, &v2, &ns, idfuse_idmap::IdmapOptions::default())
                        .map_err(|e| {
                            format!("idmapping the mount from inside the namespace: {e}")
                        })?;
                let r = body(&Places {
                    mnt: m2.clone(),
                    view: v2.clone(),
                });
                drop(guard);
                Ok(r)
            })();
            let stopped = stop_kind(&m2, daemon);
            match inner {
                Ok(r) => json!({ "body": r, "stopped": stopped }),
                Err(e) => fail(e),
            }
        },
    )
    .map_err(|e| Stop::Fail(format!("the unprivileged child: {e:?}")))?;
    if let Some(e) = out.get("__error") {
        return Err(Stop::Fail(e.as_str().unwrap_or("").to_string()));
    }
    let stopped = out["stopped"].as_str().unwrap_or("").to_string();
    check!(
        stopped == "ok" || stopped == "ok, daemon exit 0",
        "unmounting inside the namespace: {stopped}"
    );
    drop(user);
    let backing = match kind {
        "passthrough" => Some(src),
        // What the overlay makes lands in its upper layer.
        "overlay" => Some(src.join("upper")),
        _ => None,
    };
    Ok((out["body"].clone(), backing))
}

/// As `uid`:`gid` inside the namespace, in a child.
fn as_ns(uid: u32, gid: u32, f: impl FnOnce() -> Value) -> Value {
    match run_as(&As::user(uid, gid), Duration::from_secs(10), f) {
        Ok(v) => v,
        Err(e) => json!(format!("child: {e:?}")),
    }
}

fn j1_body(p: &Places) -> Value {
    let (v, m) = (p.view.clone(), p.mnt.clone());
    let v2 = v.clone();
    let created = as_ns(1005, 1005, move || {
        json!({
            "file": res(std::fs::write(v.join("a"), b"x")),
            "mkdir": res(std::fs::create_dir(v.join("d"))),
            "symlink": res(std::os::unix::fs::symlink("a", v.join("s"))),
        })
    });
    let v3 = v2.clone();
    let mut root_ops = as_ns(1000, 1000, move || {
        json!({
            "file": res(std::fs::write(v2.join("r"), b"x")),
            "chown_to_other": res(std::os::unix::fs::chown(v2.join("r"), Some(1007), Some(1008))),
        })
    });
    // The namespace's root may give it away (CAP_CHOWN there).
    root_ops["chown_by_ns_root"] = json!(res(std::os::unix::fs::chown(
        v3.join("r"),
        Some(1007),
        Some(1008)
    )));
    rec(vec![
        ("as_1005", created),
        ("as_1000", root_ops),
        ("view.a", json!(st(&p.view.join("a")))),
        ("plain.a", json!(st(&m.join("a")))),
        ("view.d", json!(st(&p.view.join("d")))),
        ("plain.d", json!(st(&m.join("d")))),
        ("plain.s", json!(st(&m.join("s")))),
        ("view.r", json!(st(&p.view.join("r")))),
        ("plain.r", json!(st(&m.join("r")))),
    ])
}

pub(super) fn j1(c: &Ctx<'_>) -> Outcome {
    let (r, src) = unprivileged(c, j1_body)?;
    for (k, want) in [
        ("view.a", "1005:1005:"),
        ("plain.a", "5:5:"),
        ("view.d", "1005:1005:"),
        ("plain.d", "5:5:"),
        ("plain.s", "5:5:"),
        ("view.r", "1007:1008:"),
        ("plain.r", "7:8:"),
    ] {
        let s = r[k].as_str().unwrap_or("");
        check!(s.starts_with(want), "{k}: {s} (want {want}..)");
    }
    check!(
        r["as_1005"]
            .as_object()
            .is_some_and(|o| o.values().all(|x| x == "ok"))
            && r["as_1000"]["file"] == "ok"
            && r["as_1000"]["chown_by_ns_root"] == "ok",
        "creating through the idmapped view: {r}"
    );
    check!(
        r["as_1000"]["chown_to_other"] == "EPERM",
        "a plain user of the namespace gave a file away: {}",
        r["as_1000"]
    );
    if let Some(src) = src {
        // On the host the files belong to the namespace's subordinate ids.
        for (n, id) in [("a", BASE + 5), ("d", BASE + 5), ("r", BASE + 7)] {
            let s = st(&src.join(n));
            check!(
                s.starts_with(&format!("{id}:")),
                "{n} in the backing directory: {s}, want uid {id}"
            );
        }
    }
    Ok(r)
}

/// `prog args` as `uid` inside the namespace: its output or its failure.
fn run_prog(uid: u32, prog: PathBuf, args: &'static [&'static str]) -> Value {
    as_ns(uid, uid, move || {
        match Command::new(&prog).args(args).output() {
            Ok(o) if o.status.success() => {
                json!(format!("ok: {}", String::from_utf8_lossy(&o.stdout).trim()))
            }
            Ok(_) => json!("failed"),
            Err(e) => json!(errno_name(e.raw_os_error().unwrap_or(0))),
        }
    })
}

fn j2_body(p: &Places) -> Value {
    let (v, m) = (p.view.clone(), p.mnt.clone());
    let _ = std::fs::write(m.join("a"), b"x");
    let _ = std::os::unix::fs::chown(m.join("a"), Some(5), Some(5));
    let copy = |from: &str, to: &Path| -> String {
        let r = res(std::fs::copy(from, to));
        if r == "ok" {
            res(std::fs::set_permissions(
                to,
                std::os::unix::fs::PermissionsExt::from_mode(0o6755),
            ))
        } else {
            r
        }
    };
    let cat = copy("/bin/cat", &m.join("cat"));
    let id = copy("/usr/bin/id", &m.join("id"));
    let esc = res(std::os::unix::fs::symlink("/etc", m.join("esc")));
    let (v1, v2) = (v.clone(), v.clone());
    let as_root = json!({
        // The namespace's root is not mapped by the idmap.
        "create_through_view": res(std::fs::write(v.join("r"), b"x")),
        "mknod_chr": super::mknod(&m.join("chr"), libc::S_IFCHR | 0o666, libc::makedev(1, 3)),
        "follow_to_host_shadow": res(std::fs::File::open(m.join("esc/shadow"))),
    });
    let view_owner = as_ns(1005, 1005, move || {
        json!({
            // 3000 has an id in the namespace but none in the idmap; 70000
            // has none at all.
            "chown_unmapped_in_idmap": res(std::os::unix::fs::chown(v1.join("a"), Some(3000), None)),
            "chown_unmapped_in_ns": res(std::os::unix::fs::chown(v1.join("a"), Some(70000), None)),
            "mknod_chr": super::mknod(&v1.join("chr2"), libc::S_IFCHR | 0o666, libc::makedev(1, 3)),
        })
    });
    rec(vec![
        ("as_root", as_root),
        ("as_1005", view_owner),
        ("copies", json!([cat, id, esc])),
        ("cat", json!(st(&m.join("cat")))),
        (
            "setuid_cat_shadow",
            run_prog(1009, v2.join("cat"), &["/etc/shadow"]),
        ),
        ("setuid_id_view", run_prog(1009, v.join("id"), &["-u"])),
        ("setuid_id_plain", run_prog(9, m.join("id"), &["-u"])),
    ])
}

pub(super) fn j2(c: &Ctx<'_>) -> Outcome {
    let (r, src) = unprivileged(c, j2_body)?;
    for (k, want) in [
        ("as_root.create_through_view", "EOVERFLOW"),
        ("as_root.mknod_chr", "EPERM"),
        ("as_root.follow_to_host_shadow", "EACCES"),
        ("as_1005.chown_unmapped_in_idmap", "EOVERFLOW"),
        ("as_1005.chown_unmapped_in_ns", "EINVAL"),
        ("as_1005.mknod_chr", "EPERM"),
        ("setuid_cat_shadow", "failed"),
        // Setuid to the namespace's root (0, shown as 1000 through the
        // view), never to the host's.
        ("setuid_id_view", "ok: 1000"),
        ("setuid_id_plain", "ok: 0"),
    ] {
        let (a, b) = k.split_once('.').unwrap_or((k, ""));
        let got = if b.is_empty() { &r[a] } else { &r[a][b] };
        check!(got == want, "{k}: {got} (want {want})");
    }
    check!(
        r["copies"] == json!(["ok", "ok", "ok"]),
        "preparing setuid copies: {}",
        r["copies"]
    );
    if let Some(src) = src {
        let s = st(&src.join("cat"));
        check!(
            s.starts_with(&format!("{BASE}:{BASE}:")),
            "the setuid file in the backing directory belongs to the namespace's root ({BASE}), not the host's: {s}"
        );
    }
    Ok(r)
}
