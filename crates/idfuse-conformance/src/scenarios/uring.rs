//! io_uring scenarios (C3, K3): opens submitted with registered
//! credentials (a "personality") go through the same idmapped-mount checks
//! as direct opens.

use std::path::Path;

use io_uring::{opcode, types, IoUring};
use serde_json::{json, Value};

use super::{child, chown, cstr, rec, st, write_file, Ctx, Outcome, Stop, MAP};
use crate::proc::{errno_name, As};

/// A ring, or why this machine has none: a skip names the cause.
fn ring() -> Result<IoUring, String> {
    IoUring::new(8).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOSYS) => "the kernel lacks io_uring (CONFIG_IO_URING)".to_string(),
        Some(libc::EPERM) => "io_uring is disabled (sysctl kernel.io_uring_disabled)".to_string(),
        _ => format!("io_uring_setup: {e}"),
    })
}

/// Whether io_uring works here, checked in the scenario's own process.
fn uring_or_skip() -> Result<(), Stop> {
    ring().map(drop).map_err(Stop::Skip)
}

/// Register the credentials of `uid`/`gid` (as fs ids) with the ring, then
/// go back to root. Runs in a child that is root.
fn personality(ring: &IoUring, uid: u32, gid: u32) -> Result<u16, String> {
    // SAFETY: setfsuid/setfsgid change this (child) process's fs ids only;
    // they are restored before returning.
    unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
    }
    let id = ring.submitter().register_personality();
    // SAFETY: as above.
    unsafe {
        libc::setfsuid(0);
        libc::setfsgid(0);
    }
    id.map_err(|e| format!("IORING_REGISTER_PERSONALITY: {e}"))
}

/// `openat` through the ring with credentials `who`: "ok" or the errno.
fn open(ring: &mut IoUring, p: &Path, flags: i32, mode: u32, who: u16) -> String {
    let path = cstr(p);
    let e = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
        .flags(flags | libc::O_CLOEXEC)
        .mode(mode)
        .build()
        .personality(who);
    // SAFETY: `path` outlives the submission: we wait for its completion
    // below before it is dropped.
    if unsafe { ring.submission().push(&e) }.is_err() {
        return "submission queue full".into();
    }
    if let Err(e) = ring.submit_and_wait(1) {
        return format!("io_uring_enter: {e}");
    }
    let Some(cqe) = ring.completion().next() else {
        return "no completion".into();
    };
    let r = cqe.result();
    if r >= 0 {
        // SAFETY: the ring opened this fd for us.
        unsafe { libc::close(r) };
        "ok".into()
    } else {
        errno_name(-r)
    }
}

/// In a root child: a ring plus personalities for `ids`, then `f`.
fn with_ring(
    ids: &[(u32, u32)],
    f: impl FnOnce(&mut IoUring, &[u16]) -> Value,
) -> Result<Value, Stop> {
    let ids = ids.to_vec();
    let out = child(&As::root(), move || {
        let mut ring = match ring() {
            Ok(r) => r,
            Err(e) => return json!({ "__error": e }),
        };
        let mut ps = Vec::new();
        for (u, g) in ids {
            match personality(&ring, u, g) {
                Ok(p) => ps.push(p),
                Err(e) => return json!({ "__error": e }),
            }
        }
        f(&mut ring, &ps)
    })?;
    if let Some(e) = out.get("__error") {
        return Err(Stop::Fail(format!("setting up io_uring: {e}")));
    }
    Ok(out)
}

pub(super) fn c3(c: &Ctx<'_>) -> Outcome {
    let v = c.view(MAP)?;
    // Owned by 5000, which the view does not map: it shows as 65534.
    write_file(&c.p("f"), 0o600)?;
    chown(&c.p("f"), 5000, 5000)?;
    write_file(&c.p("ctl"), 0o600)?;
    chown(&c.p("ctl"), 1001, 1001)?;
    let (f, ctl) = (v.path.join("f"), v.path.join("ctl"));
    let wr = |p: &Path| {
        let p = p.to_path_buf();
        move || {
            json!(crate::proc::res(
                std::fs::OpenOptions::new().write(true).open(&p)
            ))
        }
    };
    let direct = rec(vec![
        ("overflow_uid", child(&As::user(65534, 65534), wr(&f))?),
        ("root", child(&As::root(), wr(&f))?),
        ("owner_of_ctl", child(&As::user(11001, 11001), wr(&ctl))?),
    ]);
    uring_or_skip()?;
    let (f2, ctl2) = (f.clone(), ctl.clone());
    let uring = with_ring(&[(65534, 65534), (11001, 11001)], move |ring, ps| {
        json!({
            "overflow_uid": open(ring, &f2, libc::O_WRONLY, 0, ps[0]),
            "owner_of_ctl": open(ring, &ctl2, libc::O_WRONLY, 0, ps[1]),
        })
    })?;
    for (k, want) in [
        ("overflow_uid", "EACCES"),
        ("root", "EACCES"),
        ("owner_of_ctl", "ok"),
    ] {
        check!(
            direct[k] == want,
            "direct open {k}: {} (want {want})",
            direct[k]
        );
    }
    for (k, want) in [("overflow_uid", "EACCES"), ("owner_of_ctl", "ok")] {
        check!(
            uring[k] == want,
            "io_uring open with registered creds {k}: {} (want {want})",
            uring[k]
        );
    }
    Ok(rec(vec![
        ("direct", direct),
        ("uring", uring),
        ("f", json!(st(&c.p("f")))),
    ]))
}

pub(super) fn k3(c: &Ctx<'_>) -> Outcome {
    uring_or_skip()?;
    let v = c.view(MAP)?;
    let (vp, dir) = (v.path.clone(), c.dir.clone());
    let creat = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
    let out = with_ring(
        &[(11001, 11001), (5000, 5000), (11002, 11002), (1001, 1001)],
        move |ring, ps| {
            json!({
                "create_mapped": open(ring, &vp.join("new"), creat, 0o644, ps[0]),
                "create_unmapped": open(ring, &vp.join("new2"), creat, 0o644, ps[1]),
                "write_other": open(ring, &vp.join("new"), libc::O_WRONLY, 0, ps[2]),
                "read_other": open(ring, &vp.join("new"), libc::O_RDONLY, 0, ps[2]),
                "create_plain": open(ring, &dir.join("plain"), creat, 0o600, ps[3]),
            })
        },
    )?;
    let (new, plain) = (st(&c.p("new")), st(&c.p("plain")));
    for (k, want) in [
        ("create_mapped", "ok"),
        ("create_unmapped", "EOVERFLOW"),
        ("write_other", "EACCES"),
        ("read_other", "ok"),
        ("create_plain", "ok"),
    ] {
        check!(out[k] == want, "{k}: {} (want {want})", out[k]);
    }
    check!(
        new == "1001:1001:100644",
        "created through the view as {new}"
    );
    check!(
        plain == "1001:1001:100600",
        "created on the plain mount as {plain}"
    );
    Ok(rec(vec![
        ("ops", out),
        ("new", json!(new)),
        ("plain", json!(plain)),
    ]))
}
