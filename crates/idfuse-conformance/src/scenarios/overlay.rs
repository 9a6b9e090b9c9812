//! O: overlay scenarios. They work on the lower layer's fixtures of an
//! overlay target (target::LOWER_FIXTURES, one directory per scenario at
//! the overlay's root) and look at what lands in the upper layer: the
//! on-disk format is kernel overlayfs's, so both can mount the same upper.
//! O5 and O6 also run on other targets, where renaming a directory and
//! writing a file open for reading work; on an overlay they are documented
//! differences (see `documented_differences`).

use std::io::Write as _;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{child, rec, st, Ctx, Outcome, Stop, MAP};
use crate::proc::{res, As};
use crate::target::Layers;

fn layers<'c>(c: &'c Ctx<'_>) -> Result<&'c Layers, Stop> {
    c.inst.layers.as_ref().ok_or_else(|| {
        Stop::Skip("not an overlay target: there are no lower and upper layers to look at".into())
    })
}

/// The scenario's fixture directory in the overlay.
fn fixture(c: &Ctx<'_>, id: &str) -> PathBuf {
    c.inst.root.join(id)
}

fn read(p: &Path) -> String {
    match std::fs::read(p) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => crate::proc::errno_name(e.raw_os_error().unwrap_or(0)),
    }
}

fn names(dir: &Path) -> String {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v.join(",")
        }
        Err(e) => crate::proc::errno_name(e.raw_os_error().unwrap_or(0)),
    }
}

/// "whiteout" for a char device 0/0 (kernel overlayfs's whiteout), else
/// what the path is.
fn whiteout(p: &Path) -> String {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_char_device() && m.rdev() == 0 => "whiteout".into(),
        Ok(m) => format!("not a whiteout: mode {:o} rdev {:x}", m.mode(), m.rdev()),
        Err(e) => crate::proc::errno_name(e.raw_os_error().unwrap_or(0)),
    }
}

/// The overlay's opaque mark on `p`, in the namespace the target uses.
fn opaque_xattr(l: &Layers, p: &Path) -> String {
    let mut buf = [0u8; 16];
    match rustix::fs::lgetxattr(p, format!("{}opaque", l.xattr_prefix), &mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => crate::proc::errno_name(e.raw_os_error()),
    }
}

/// O1: a write through an idmapped view by a caller who is not the owner
/// copies the file up with the lower owner and mode, not the caller's; its
/// parent directory is copied up with its own lower owner too.
pub(super) fn o1(c: &Ctx<'_>) -> Outcome {
    let l = layers(c)?;
    let v = c.view_of(&fixture(c, "O1"), MAP)?;
    let vp = v.path.clone();
    let wrote = child(&As::user(11001, 11001), || {
        json!(res(std::fs::OpenOptions::new()
            .append(true)
            .open(vp.join("f"))
            .and_then(|mut f| f.write_all(b"more\n"))))
    })?;
    check!(
        wrote == "ok",
        "append to the lower file as 11001 through the view: {wrote}"
    );
    let r = rec(vec![
        ("append", wrote),
        ("upper_file", json!(st(&l.upper.join("O1/f")))),
        ("upper_dir", json!(st(&l.upper.join("O1")))),
        ("view_file", json!(st(&v.path.join("f")))),
        ("plain_file", json!(st(&fixture(c, "O1").join("f")))),
        ("contents", json!(read(&fixture(c, "O1").join("f")))),
        ("lower_contents", json!(read(&l.lower.join("O1/f")))),
    ]);
    check!(
        r["upper_file"] == "1002:1002:100666",
        "the copy in the upper: {} (want the lower owner and mode 1002:1002:100666, not the writer's 1001)",
        r["upper_file"]
    );
    check!(
        r["upper_dir"] == "1003:1003:40777",
        "the parent copied up: {} (want its lower owner 1003:1003:40777)",
        r["upper_dir"]
    );
    check!(
        r["view_file"] == "11002:11002:100666" && r["plain_file"] == "1002:1002:100666",
        "after copy-up, through the view {} (want 11002:11002:100666), plain {} (want 1002:1002:100666)",
        r["view_file"],
        r["plain_file"]
    );
    check!(
        r["contents"] == "lower\nmore\n" && r["lower_contents"] == "lower\n",
        "contents through the overlay {} (want lower+more), in the lower {} (want untouched)",
        r["contents"],
        r["lower_contents"]
    );
    Ok(r)
}

/// O2: objects created through the view by mapped uid 11001 land in the
/// upper owned by its fs id 1001.
pub(super) fn o2(c: &Ctx<'_>) -> Outcome {
    let l = layers(c)?;
    let v = c.view_of(&fixture(c, "O2"), MAP)?;
    let vp = v.path.clone();
    let made = child(&As::user(11001, 11001), || {
        json!({
            "create": res(std::fs::write(vp.join("new"), b"new\n")),
            "mkdir": res(std::fs::create_dir(vp.join("newdir"))),
            "symlink": res(std::os::unix::fs::symlink("new", vp.join("sym"))),
        })
    })?;
    check!(
        made.as_object()
            .is_some_and(|o| o.values().all(|x| x == "ok")),
        "creating through the view as 11001: {made}"
    );
    let mut r = rec(vec![("ops", made)]);
    for (n, mode) in [("new", "100644"), ("newdir", "40755"), ("sym", "120777")] {
        let upper = st(&l.upper.join("O2").join(n));
        let view = st(&v.path.join(n));
        check!(
            upper == format!("1001:1001:{mode}"),
            "{n} in the upper: {upper} (want 1001:1001:{mode}, the caller's fs ids)"
        );
        check!(
            view == format!("11001:11001:{mode}"),
            "{n} through the view: {view} (want 11001:11001:{mode})"
        );
        r[format!("{n}.upper")] = json!(upper);
        r[format!("{n}.view")] = json!(view);
    }
    let lower_new = st(&l.lower.join("O2/new"));
    check!(
        lower_new == "ENOENT",
        "the lower layer got the new file: {lower_new}"
    );
    r["lower_untouched"] = json!(true);
    // The scratch directories of all scenarios come from the lower layer
    // and are copied up when the runner opens them to everyone.
    let scratch = c.dir.file_name().map(PathBuf::from).unwrap_or_default();
    let (lower, upper) = (st(&l.lower.join(&scratch)), st(&l.upper.join(&scratch)));
    check!(
        lower == "0:0:40755" && upper == "0:0:40777",
        "the scratch directory {}: in the lower {lower} (want 0:0:40755), in the upper {upper} (want 0:0:40777, copied up by the chmod)",
        scratch.display()
    );
    Ok(r)
}

/// O3: unlinking a lower file through the view leaves a kernel-format
/// whiteout (a char device 0/0) in the upper; the name is gone from the
/// overlay, the lower file stays.
pub(super) fn o3(c: &Ctx<'_>) -> Outcome {
    let l = layers(c)?;
    let v = c.view_of(&fixture(c, "O3"), MAP)?;
    let vp = v.path.clone();
    let gone = child(&As::user(11001, 11001), || {
        json!(res(std::fs::remove_file(vp.join("gone"))))
    })?;
    check!(
        gone == "ok",
        "unlink of a lower file through the view as 11001: {gone}"
    );
    let r = rec(vec![
        ("unlink", gone),
        ("upper", json!(whiteout(&l.upper.join("O3/gone")))),
        ("stat_plain", json!(st(&fixture(c, "O3").join("gone")))),
        ("stat_view", json!(st(&v.path.join("gone")))),
        ("listing", json!(names(&fixture(c, "O3")))),
        ("lower", json!(st(&l.lower.join("O3/gone")))),
    ]);
    check!(
        r["upper"] == "whiteout",
        "upper/O3/gone: {} (want a whiteout, char 0/0)",
        r["upper"]
    );
    check!(
        r["stat_plain"] == "ENOENT" && r["stat_view"] == "ENOENT",
        "the unlinked name through the plain mount: {}, the view: {} (want ENOENT)",
        r["stat_plain"],
        r["stat_view"]
    );
    check!(
        r["listing"] == "kept",
        "listing after the unlink: {} (want kept)",
        r["listing"]
    );
    check!(
        r["lower"] == "1002:1002:100644",
        "the lower file: {} (want it untouched)",
        r["lower"]
    );
    Ok(r)
}

/// O4: a lower directory emptied, removed and made again through the view
/// is an opaque directory in the upper (trusted.overlay.opaque=y, or
/// user.overlay.opaque with userxattr): the
/// lower entries do not come back.
pub(super) fn o4(c: &Ctx<'_>) -> Outcome {
    let l = layers(c)?;
    let v = c.view_of(&fixture(c, "O4"), MAP)?;
    let vp = v.path.clone();
    let ops = child(&As::user(11001, 11001), || {
        json!({
            "unlink_a": res(std::fs::remove_file(vp.join("d/a"))),
            "unlink_b": res(std::fs::remove_file(vp.join("d/b"))),
            "rmdir": res(std::fs::remove_dir(vp.join("d"))),
            "mkdir": res(std::fs::create_dir(vp.join("d"))),
        })
    })?;
    check!(
        ops.as_object()
            .is_some_and(|o| o.values().all(|x| x == "ok")),
        "emptying, removing and making d again through the view as 11001: {ops}"
    );
    let r = rec(vec![
        ("ops", ops),
        ("opaque", json!(opaque_xattr(l, &l.upper.join("O4/d")))),
        ("upper_dir", json!(st(&l.upper.join("O4/d")))),
        ("view_dir", json!(st(&v.path.join("d")))),
        ("listing", json!(names(&fixture(c, "O4").join("d")))),
        ("stat_a", json!(st(&fixture(c, "O4").join("d/a")))),
        ("lower_listing", json!(names(&l.lower.join("O4/d")))),
    ]);
    check!(
        r["opaque"] == "y",
        "{}opaque on upper/O4/d: {} (want y)",
        l.xattr_prefix,
        r["opaque"]
    );
    check!(
        r["upper_dir"] == "1001:1001:40755" && r["view_dir"] == "11001:11001:40755",
        "the new d: in the upper {} (want 1001:1001:40755), through the view {} (want 11001:11001:40755)",
        r["upper_dir"],
        r["view_dir"]
    );
    check!(
        r["listing"] == "" && r["stat_a"] == "ENOENT",
        "the new d lists {:?} and d/a is {} (want empty and ENOENT)",
        r["listing"],
        r["stat_a"]
    );
    check!(
        r["lower_listing"] == "a,b",
        "the lower d: {} (want it untouched: a,b)",
        r["lower_listing"]
    );
    Ok(r)
}

/// O5: renaming a directory through the plain mount and through the view.
/// On an overlay the directory comes from the lower layer, and idfuse does
/// what kernel overlayfs does without `redirect_dir`: EXDEV, which mv(1)
/// answers by copying. A lower file renames (copy-up + whiteout). On any
/// other target the directory is made in the scratch directory and the
/// renames work.
pub(super) fn o5(c: &Ctx<'_>) -> Outcome {
    let (dir, overlay) = match &c.inst.layers {
        Some(_) => (fixture(c, "O5"), true),
        None => {
            let d = c.dir.join("O5");
            super::mkdir(&d, 0o777)?;
            super::mkdir(&d.join("dir"), 0o777)?;
            super::write_file(&d.join("dir/inner"), 0o666)?;
            super::write_file(&d.join("f"), 0o666)?;
            (d, false)
        }
    };
    let v = c.view_of(&dir, MAP)?;
    let plain = res(std::fs::rename(dir.join("dir"), dir.join("moved")));
    // The same directory again, by whatever name it has now.
    let from = if plain == "ok" { "moved" } else { "dir" };
    let view = res(std::fs::rename(
        v.path.join(from),
        v.path.join("moved-in-view"),
    ));
    let file = res(std::fs::rename(dir.join("f"), dir.join("g")));
    let mut r = rec(vec![
        ("rename_dir_plain", json!(plain)),
        ("rename_dir_view", json!(view)),
        ("rename_file", json!(file)),
        ("listing", json!(names(&dir))),
    ]);
    check!(
        r["rename_file"] == "ok",
        "rename of a file: {}",
        r["rename_file"]
    );
    if overlay {
        let l = layers(c)?;
        check!(
            r["rename_dir_plain"] == "EXDEV" && r["rename_dir_view"] == "EXDEV",
            "rename of a lower directory: plain {}, view {} (want EXDEV, as kernel overlayfs without redirect_dir)",
            r["rename_dir_plain"],
            r["rename_dir_view"]
        );
        check!(
            r["listing"] == "dir,g",
            "listing after the renames: {} (want dir,g)",
            r["listing"]
        );
        let f = whiteout(&l.upper.join("O5/f"));
        let g = st(&l.upper.join("O5/g"));
        check!(
            f == "whiteout" && g == "1002:1002:100666",
            "the renamed lower file: upper/O5/f {f} (want a whiteout), upper/O5/g {g} (want 1002:1002:100666)"
        );
        r["upper_f"] = json!(f);
        r["upper_g"] = json!(g);
    } else {
        check!(
            r["rename_dir_plain"] == "ok"
                && r["rename_dir_view"] == "ok"
                && r["listing"] == "g,moved-in-view",
            "renames of a directory: {r}"
        );
    }
    Ok(r)
}

/// O6: a file held open for reading is opened again for writing and
/// appended to; then both are closed and the file is read. On tmpfs and on
/// kernel overlayfs the write works (on an overlay it copies the file up,
/// and the reader goes on reading the copy). idfuse's overlay with FUSE
/// passthrough refuses the open for writing with ETXTBSY while the read
/// open lasts: the kernel takes one backing file per FUSE inode, and the
/// reader's is the lower file. Nothing is lost then: the file keeps its
/// contents and the reader still reads them. Without passthrough (an
/// unprivileged daemon, `--passthrough false`) the overlay does what the
/// kernel does.
pub(super) fn o6(c: &Ctx<'_>) -> Outcome {
    use std::io::Read as _;
    let dir = match &c.inst.layers {
        Some(_) => fixture(c, "O6"),
        None => {
            let d = c.dir.join("O6");
            super::mkdir(&d, 0o777)?;
            std::fs::write(d.join("f"), b"lower\n")
                .map_err(|e| Stop::Fail(format!("writing O6/f: {e}")))?;
            d
        }
    };
    let f = dir.join("f");
    let mut reader = std::fs::File::open(&f)
        .map_err(|e| Stop::Fail(format!("opening {} for reading: {e}", f.display())))?;
    let write = res(std::fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .and_then(|mut w| w.write_all(b"more\n")));
    let mut seen = String::new();
    let reader_read = res(reader.read_to_string(&mut seen));
    drop(reader);
    let r = rec(vec![
        ("write_while_open_for_reading", json!(write)),
        ("reader_read", json!(format!("{reader_read}: {seen:?}"))),
        ("contents", json!(read(&f))),
    ]);
    let refused = c.inst.layers.is_some() && write == "ETXTBSY";
    if refused {
        check!(
            r["contents"] == "lower\n" && r["reader_read"] == "ok: \"lower\\n\"",
            "the write open was refused, but the file or its reader changed: {r}"
        );
    } else {
        check!(
            write == "ok"
                && r["contents"] == "lower\nmore\n"
                && r["reader_read"] == "ok: \"lower\\nmore\\n\"",
            "writing a file open for reading: {r}"
        );
    }
    Ok(r)
}
