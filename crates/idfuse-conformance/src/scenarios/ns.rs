//! Scenarios across user namespaces: nested namespaces over an idmapped
//! view (B5), setid binaries (D3), file capabilities (G1, G2).

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{child, chmod, chown, rec, st, write_file, Ctx, Outcome, Stop, MAP};
use crate::proc::{errno_name, res, As};

/// Enter a chain of new user namespaces, each the child of the one before
/// and made from its map, and become root in the innermost. Runs in a
/// child; the first namespace is made as whoever the child is (through
/// newuidmap when not root).
pub(super) fn nest(maps: &[&str]) -> Result<(), String> {
    for m in maps {
        let map: idfuse_idmap::IdMap = m.parse().map_err(|e| format!("map {m}: {e}"))?;
        let ns = idfuse_idmap::UserNamespace::create(&map).map_err(|e| e.to_string())?;
        // SAFETY: credential and namespace calls on this single-threaded
        // child only.
        unsafe {
            if libc::setns(ns.as_fd().as_raw_fd(), libc::CLONE_NEWUSER) != 0 {
                return Err(format!("setns({m}): {}", std::io::Error::last_os_error()));
            }
            libc::setgroups(0, std::ptr::null());
            if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
                return Err(format!(
                    "becoming root in {m}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            // Changing ids made us non-dumpable, which gives our /proc
            // files to the initial root, unmapped here: the next level's
            // uid_map could not be written.
            libc::prctl(libc::PR_SET_DUMPABLE, 1);
        }
    }
    Ok(())
}

/// Switch to `uid`/`gid` inside the current namespace.
fn become_user(uid: u32, gid: u32) -> Result<(), String> {
    // SAFETY: credential calls on this child only.
    unsafe {
        if libc::setresgid(gid, gid, gid) != 0 || libc::setresuid(uid, uid, uid) != 0 {
            return Err(format!(
                "becoming {uid}:{gid}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Run `f` as root in the nested namespaces `maps` (then as `user` if
/// given), in a child.
fn in_nested(
    maps: &[&str],
    user: Option<(u32, u32)>,
    f: impl FnOnce() -> Value,
) -> Result<Value, Stop> {
    let owned: Vec<String> = maps.iter().map(|s| s.to_string()).collect();
    let out = child(&As::root(), move || {
        let maps: Vec<&str> = owned.iter().map(String::as_str).collect();
        if let Err(e) = nest(&maps) {
            return json!({ "__error": e });
        }
        if let Some((u, g)) = user {
            if let Err(e) = become_user(u, g) {
                return json!({ "__error": e });
            }
        }
        f()
    })?;
    if let Some(e) = out.get("__error") {
        return Err(Stop::Fail(format!(
            "entering user namespaces {maps:?}: {e}"
        )));
    }
    Ok(out)
}

// ---------------------------------------------------------------- B5

pub(super) fn b5(c: &Ctx<'_>) -> Outcome {
    let v = c.view("b:0:10000:10000")?;
    let files = [0u32, 1000, 1001, 2000, 3000];
    for id in files {
        let p = c.p(&format!("f{id}"));
        write_file(&p, 0o644)?;
        chown(&p, id, id)?;
    }
    // Level 1 maps 0.. to the view's 10000..; level 2 (inside 1) maps 0.. to
    // level 1's 1000..2999; level 3 (inside 2) maps 0.. to level 2's
    // 1000..1999.
    let levels = ["b:0:10000:10000", "b:0:1000:2000", "b:0:1000:1000"];
    let mut r = serde_json::Map::new();
    for depth in 1..=levels.len() {
        let (vp, dir) = (v.path.clone(), c.dir.clone());
        let name = format!("c{depth}");
        let seen = in_nested(&levels[..depth], None, move || {
            let mut m = serde_json::Map::new();
            for id in files {
                m.insert(format!("view.f{id}"), json!(st(&vp.join(format!("f{id}")))));
                m.insert(
                    format!("plain.f{id}"),
                    json!(st(&dir.join(format!("f{id}")))),
                );
            }
            let p = vp.join(&name);
            m.insert("create".into(), json!(res(std::fs::write(&p, b"x"))));
            m.insert(
                "chown_to_1".into(),
                json!(res(std::os::unix::fs::chown(&p, Some(1), Some(1)))),
            );
            m.insert("created".into(), json!(st(&p)));
            Value::Object(m)
        })?;
        r.insert(format!("level{depth}"), seen);
        r.insert(
            format!("fs.c{depth}"),
            json!(st(&c.p(&format!("c{depth}")))),
        );
    }
    let owner = |lvl: usize, id: u32| -> String {
        r[&format!("level{lvl}")][&format!("view.f{id}")]
            .as_str()
            .unwrap_or("")
            .split(':')
            .next()
            .unwrap_or("")
            .to_string()
    };
    for (lvl, want) in [
        (1, ["0", "1000", "1001", "2000", "3000"]),
        (2, ["65534", "0", "1", "1000", "65534"]),
        (3, ["65534", "65534", "65534", "0", "65534"]),
    ] {
        for (id, w) in files.iter().zip(want) {
            check!(
                owner(lvl, *id) == w,
                "level {lvl}: f{id} through the view owned by {}, want {w}",
                owner(lvl, *id)
            );
        }
    }
    // Root of each level created its file, then gave it to its uid 1:
    // level 1's 1 is fs 1; level 2's 1 is fs 1001; level 3's 1 is fs 2001.
    for (lvl, want) in [(1, "1:1:"), (2, "1001:1001:"), (3, "2001:2001:")] {
        let s = r[&format!("fs.c{lvl}")].as_str().unwrap_or("").to_string();
        check!(
            r[&format!("level{lvl}")]["create"] == "ok"
                && r[&format!("level{lvl}")]["chown_to_1"] == "ok",
            "level {lvl}: {}",
            r[&format!("level{lvl}")]
        );
        check!(
            s.starts_with(want),
            "level {lvl}: c{lvl} stored as {s}, want {want}"
        );
    }
    Ok(Value::Object(r))
}

// ---------------------------------------------------------------- D3

/// `prog -u` and `prog -g` (effective ids) as printed by `id`.
fn effective_ids(prog: &Path) -> Value {
    let run = |flag: &str| match std::process::Command::new(prog).arg(flag).output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Ok(o) => format!(
            "status {:?}: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => errno_name(e.raw_os_error().unwrap_or(0)),
    };
    json!(format!("{}:{}", run("-u"), run("-g")))
}

pub(super) fn d3(c: &Ctx<'_>) -> Outcome {
    let id = ["/usr/bin/id", "/bin/id"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| Stop::Skip("no `id` binary to copy (coreutils)".into()))?;
    let v = c.view(MAP)?;
    let bin = c.p("idbin");
    std::fs::copy(&id, &bin).map_err(|e| Stop::Fail(format!("copying {}: {e}", id.display())))?;
    chown(&bin, 1001, 1001)?;
    chmod(&bin, 0o6755)?;
    let vb = v.path.join("idbin");
    let (vb1, vb2, vb3, pb) = (vb.clone(), vb.clone(), vb.clone(), bin.clone());
    let r = rec(vec![
        (
            "view",
            child(&As::user(11002, 11002), move || effective_ids(&vb1))?,
        ),
        (
            "plain",
            child(&As::user(1002, 1002), move || effective_ids(&pb))?,
        ),
        // 11001 is the namespace's 1: the binary runs as 1.
        (
            "userns_mapped",
            in_nested(&["b:0:11000:1000"], Some((2, 2)), move || {
                effective_ids(&vb2)
            })?,
        ),
        // 11001 has no mapping here: the setid bits are ignored.
        (
            "userns_unmapped",
            in_nested(&["b:0:20000:1000"], Some((2, 2)), move || {
                effective_ids(&vb3)
            })?,
        ),
        ("bin", json!(st(&bin))),
    ]);
    for (k, want) in [
        ("view", "11001:11001"),
        ("plain", "1001:1001"),
        ("userns_mapped", "1:1"),
        ("userns_unmapped", "2:2"),
    ] {
        check!(r[k] == want, "{k}: effective ids {} (want {want})", r[k]);
    }
    Ok(r)
}

// ---------------------------------------------------------------- G

const CAP: &str = "security.capability";
/// CAP_NET_RAW in the permitted set.
const PERMITTED: u32 = 1 << 13;

/// A v2 capability xattr (no rootid), effective.
fn cap_v2() -> Vec<u8> {
    let mut v = 0x0200_0001u32.to_le_bytes().to_vec();
    for w in [PERMITTED, 0, 0, 0] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

/// A v3 capability xattr with `rootid`.
fn cap_v3(rootid: u32) -> Vec<u8> {
    let mut v = 0x0300_0001u32.to_le_bytes().to_vec();
    for w in [PERMITTED, 0, 0, 0, rootid] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

fn cap_set(p: &Path, value: &[u8]) -> String {
    res(rustix::fs::setxattr(
        p,
        CAP,
        value,
        rustix::fs::XattrFlags::empty(),
    ))
}

/// "v2", "v3:ROOTID", or the errno, as the caller sees it.
fn cap_get(p: &Path) -> String {
    let mut buf = [0u8; 64];
    match rustix::fs::getxattr(p, CAP, &mut buf) {
        Ok(20) => "v2".into(),
        Ok(24) => format!(
            "v3:{}",
            u32::from_le_bytes([buf[20], buf[21], buf[22], buf[23]])
        ),
        Ok(n) => format!("{n} bytes"),
        Err(e) => errno_name(e.raw_os_error()),
    }
}

fn caps_or_skip(c: &Ctx<'_>) -> Result<(), Stop> {
    write_file(&c.p("probe"), 0o755)?;
    let r = cap_set(&c.p("probe"), &cap_v2());
    let _ = std::fs::remove_file(c.p("probe"));
    match r.as_str() {
        "ok" => Ok(()),
        "EOPNOTSUPP" => Err(Stop::Skip("the target has no security.* xattrs".into())),
        _ => Err(Stop::Fail(format!("setting {CAP} on the plain mount: {r}"))),
    }
}

pub(super) fn g1(c: &Ctx<'_>) -> Outcome {
    caps_or_skip(c)?;
    let v = c.view(MAP)?;
    for n in ["v3", "v2", "bad", "ns"] {
        write_file(&c.p(n), 0o755)?;
        chown(&c.p(n), 1001, 1001)?;
    }
    let vp = |n: &str| v.path.join(n);
    let mut r = serde_json::Map::new();
    r.insert("set.v3".into(), json!(cap_set(&vp("v3"), &cap_v3(11000))));
    r.insert("set.v2".into(), json!(cap_set(&vp("v2"), &cap_v2())));
    r.insert("set.bad".into(), json!(cap_set(&vp("bad"), &cap_v3(5000))));
    // Root of a namespace whose 0 is the view's 11000 writes a v2 cap.
    let nsf = vp("ns");
    let set_ns = in_nested(
        &["b:0:11000:1000"],
        None,
        move || json!({ "set": cap_set(&nsf, &cap_v2()), "get": cap_get(&nsf) }),
    )?;
    r.insert("userns".into(), set_ns);
    for n in ["v3", "v2", "ns"] {
        r.insert(format!("plain.{n}"), json!(cap_get(&c.p(n))));
        r.insert(format!("view.{n}"), json!(cap_get(&vp(n))));
    }
    // A view that maps only root cannot represent rootid 1000.
    let narrow = c.view("b:0:0:1")?;
    r.insert("narrow.v3".into(), json!(cap_get(&narrow.path.join("v3"))));
    let r = Value::Object(r);
    for (k, want) in [
        ("set.v3", "ok"),
        ("set.v2", "ok"),
        ("set.bad", "EINVAL"),
        ("plain.v3", "v3:1000"),
        ("view.v3", "v3:11000"),
        ("plain.v2", "v2"),
        ("view.v2", "v2"),
        ("plain.ns", "v3:1000"),
        ("view.ns", "v3:11000"),
        ("narrow.v3", "EOVERFLOW"),
    ] {
        check!(r[k] == want, "{k}: {} (want {want})", r[k]);
    }
    check!(
        r["userns"]["set"] == "ok" && r["userns"]["get"] == "v2",
        "from the user namespace: {}",
        r["userns"]
    );
    Ok(r)
}

pub(super) fn g2(c: &Ctx<'_>) -> Outcome {
    caps_or_skip(c)?;
    let v = c.view(MAP)?;
    write_file(&c.p("f"), 0o755)?;
    chown(&c.p("f"), 1001, 1001)?;
    let set = cap_set(&c.p("f"), &cap_v3(1000));
    check!(set == "ok", "setting a v3 cap with rootid 1000: {set}");
    let vf = v.path.join("f");
    let get = |maps: &'static [&'static str]| {
        let vf = vf.clone();
        in_nested(maps, None, move || json!(cap_get(&vf)))
    };
    // The view's 11000 is the root of U1; U2 lives inside U1; U3 is U1's
    // sibling.
    let r = rec(vec![
        ("u1", get(&["b:0:11000:1000"])?),
        ("u2_in_u1", get(&["b:0:11000:1000", "b:0:100:100"])?),
        ("u3_sibling", get(&["b:0:13000:1000"])?),
        ("plain", json!(cap_get(&c.p("f")))),
    ]);
    for (k, want) in [
        ("u1", "v2"),
        ("u2_in_u1", "v2"),
        ("u3_sibling", "EOVERFLOW"),
        ("plain", "v3:1000"),
    ] {
        check!(r[k] == want, "{k}: {} (want {want})", r[k]);
    }
    Ok(r)
}
