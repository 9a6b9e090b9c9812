//! `idfuse conformance`: the idmapped-mount test suite, run against any
//! mount, with the in-kernel filesystem (tmpfs) as the reference. A target
//! is a mount point; this crate knows no filesystem's internals.
//!
//! The catalogue is data; [`run`] executes it (as root) on [`Target`]s such
//! as `tmpfs`, `memfs`, a directory, or `cmd:DAEMON ARGS {mnt}` for any FUSE
//! server:
//!
//! ```
//! use idfuse_conformance::{catalogue, Target};
//!
//! let scenarios = catalogue();
//! assert!(scenarios.iter().any(|s| s.id == "A1"));
//! let target: Target = "cmd:bindfs /srv/src {mnt}".parse().expect("a target spec");
//! assert!(matches!(target, Target::Cmd(_)));
//! ```
#![warn(missing_docs)]

pub mod proc;
pub mod scenarios;
pub mod target;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

pub use scenarios::{catalogue, documented_differences, Difference, Scenario, Stop};
pub use target::Target;

/// One scenario on one target.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// Scenario id.
    pub scenario: String,
    /// Target name.
    pub target: String,
    /// pass, fail or skip.
    pub status: String,
    /// Why it failed or was skipped.
    pub detail: String,
    /// What was observed.
    pub record: Value,
}

/// How to run the suite.
pub struct RunOptions {
    /// Targets, in order.
    pub targets: Vec<Target>,
    /// Only scenarios whose id or title contains this.
    pub only: Option<String>,
    /// Compare every record with the reference (tmpfs).
    pub differential: bool,
    /// The idfuse binary.
    pub idfuse: PathBuf,
    /// Time limit per scenario.
    pub limit: Duration,
}

/// Put this process in a private mount namespace, so that every mount the
/// suite makes disappears with it, even if it is killed.
pub fn private_mounts() -> Result<(), String> {
    // SAFETY: a new mount namespace for this single-threaded process; no
    // file descriptor or memory invariant depends on the old one.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
        .map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .map_err(|e| format!("making mounts private: {e}"))
}

fn run_one(
    s: &Scenario,
    inst: &target::Instance,
    work: &Path,
    idfuse: &Path,
    no_idmap: Option<String>,
    limit: Duration,
) -> (String, String, Value) {
    let dir = inst.root.join(format!("{}.{}", s.id, std::process::id()));
    let views = work.join("views");
    // On an overlay the scratch directory is already there, from the lower
    // layer (target::Target::Overlay): the chmod copies it up.
    let from_lower = inst.layers.is_some();
    let prep = proc::run_as(&proc::As::root(), Duration::from_secs(15), || {
        let _ = std::fs::create_dir_all(&views);
        let made = match std::fs::create_dir(&dir) {
            Err(e) if from_lower && e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            r => r,
        };
        match made.and_then(|_| {
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        }) {
            Ok(()) => json!("ok"),
            Err(e) => json!(e.to_string()),
        }
    });
    match prep {
        Ok(v) if v == "ok" => {}
        Ok(v) => {
            return (
                "fail".into(),
                format!("cannot make the scratch directory: {v}"),
                Value::Null,
            )
        }
        Err(e) => {
            return (
                "fail".into(),
                format!("cannot make the scratch directory: {e:?}"),
                Value::Null,
            )
        }
    }
    let run = s.run;
    let out = proc::run_as(&proc::As::root(), limit, || {
        let ctx = scenarios::Ctx::new(
            dir.clone(),
            inst,
            views.clone(),
            idfuse.to_path_buf(),
            no_idmap,
        );
        match run(&ctx) {
            Ok(r) => json!({ "status": "pass", "record": r }),
            Err(Stop::Fail(m)) => json!({ "status": "fail", "detail": m }),
            Err(Stop::Skip(m)) => json!({ "status": "skip", "detail": m }),
        }
    });
    // Views of a scenario that was killed would otherwise stay attached.
    sweep(&views);
    // Nor is the scratch directory left: on a target the run does not tear
    // down (a path, or a command mirroring a source the user keeps) it
    // would stay in the user's directory. Only the record is compared.
    let _ = proc::run_as(&proc::As::root(), Duration::from_secs(15), || {
        let _ = std::fs::remove_dir_all(&dir);
        json!("ok")
    });
    match out {
        Ok(v) => (
            v["status"].as_str().unwrap_or("fail").to_string(),
            v["detail"].as_str().unwrap_or("").to_string(),
            v.get("record").cloned().unwrap_or(Value::Null),
        ),
        Err(proc::ChildError::Timeout) => (
            "fail".into(),
            format!("timed out after {} s (a hung daemon?)", limit.as_secs()),
            Value::Null,
        ),
        Err(proc::ChildError::Died(m)) => ("fail".into(), m, Value::Null),
    }
}

/// Detach every mount below `dir`.
/// Where the run of process `pid` keeps its mounts and scratch files.
pub fn run_dir(pid: u32) -> PathBuf {
    std::env::temp_dir().join(format!("idfuse-conformance.{pid}"))
}

/// Remove what runs killed before they could clean up left in the temp
/// directory: the directories of processes that no longer exist, after
/// detaching anything still mounted under them.
pub fn remove_stale_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("idfuse-conformance."))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        remove_run_dir(&e.path());
    }
}

/// Detach the mounts under `dir`, then delete it without crossing into
/// another filesystem (a mount that could not be detached keeps its files).
pub fn remove_run_dir(dir: &Path) {
    sweep(dir);
    if let Ok(meta) = std::fs::symlink_metadata(dir) {
        remove_same_fs(dir, std::os::unix::fs::MetadataExt::dev(&meta));
    }
}

fn remove_same_fs(path: &Path, dev: u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.dev() != dev {
        return;
    }
    if meta.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                remove_same_fs(&e.path(), dev);
            }
        }
        let _ = std::fs::remove_dir(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}

fn sweep(dir: &Path) {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().to_string();
    for line in text.lines().rev() {
        if let Some(mp) = line.split(' ').nth(4) {
            if mp.starts_with(&prefix) {
                let _ = rustix::mount::unmount(mp, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
}

fn diff(reference: &Value, got: &Value, path: &str, out: &mut Vec<String>) {
    match (reference, got) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(vb) => diff(va, vb, &p, out),
                    None => out.push(format!("{p}: tmpfs {va}, here missing")),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}.{k}: missing on tmpfs"));
            }
        }
        (a, b) if a != b => out.push(format!("{path}: tmpfs {a}, here {b}")),
        _ => {}
    }
}

/// Run the suite; `stop` is polled between scenarios (SIGINT). Lines are
/// printed as results come in.
pub fn run(opts: &RunOptions, out: &mut dyn Write, stop: &dyn Fn() -> bool) -> Vec<ScenarioResult> {
    remove_stale_runs();
    let base = run_dir(std::process::id());
    let cat = catalogue();
    let chosen: Vec<&Scenario> = cat
        .iter()
        .filter(|s| {
            opts.only
                .as_ref()
                .is_none_or(|p| s.id.contains(p.as_str()) || s.title.contains(p.as_str()))
        })
        .collect();
    let mut results: Vec<ScenarioResult> = Vec::new();
    let started = Instant::now();
    'targets: for (ti, t) in opts.targets.iter().enumerate() {
        let work = base.join(format!("t{ti}"));
        let _ = std::fs::create_dir_all(&work);
        let inst = t.start(&work, &opts.idfuse);
        let inst = match inst {
            Ok(i) => i,
            Err(e) => {
                // A target the run was asked for and could not start is a
                // failure of the run, not a row of skips that exits 0.
                for s in &chosen {
                    let r = ScenarioResult {
                        scenario: s.id.into(),
                        target: t.to_string(),
                        status: "fail".into(),
                        detail: format!("target did not start: {e}"),
                        record: Value::Null,
                    };
                    let _ = writeln!(
                        out,
                        "FAIL  {:<3} {:<12} {} ({})",
                        s.id, t, s.title, r.detail
                    );
                    results.push(r);
                }
                continue;
            }
        };
        let no_idmap = match idfuse_idmap::can_idmap(&inst.root) {
            idfuse_idmap::Verdict::Supported => None,
            idfuse_idmap::Verdict::Unsupported(r) => Some(r.to_string()),
        };
        for s in &chosen {
            if stop() {
                let _ = writeln!(out, "interrupted; cleaning up");
                break 'targets;
            }
            let (status, mut detail, record) =
                run_one(s, &inst, &work, &opts.idfuse, no_idmap.clone(), opts.limit);
            let mut status = status;
            if opts.differential && status == "pass" && !matches!(t, Target::Tmpfs) {
                if let Some(reference) = results
                    .iter()
                    .find(|r| r.scenario == s.id && r.target == "tmpfs" && r.status == "pass")
                {
                    let mut d = Vec::new();
                    diff(&reference.record, &record, "", &mut d);
                    let target = t.to_string();
                    let documented = documented_differences();
                    let (known, unknown): (Vec<String>, Vec<String>) =
                        d.into_iter().partition(|line| {
                            // Keys only the target has come out as ".key".
                            let line = line.strip_prefix('.').unwrap_or(line);
                            documented.iter().any(|k| {
                                k.applies_to(&target)
                                    && k.scenario == s.id
                                    && line.starts_with(k.key)
                                    && line[k.key.len()..].starts_with([':', '.'])
                            })
                        });
                    if !unknown.is_empty() {
                        status = "fail".into();
                        detail = format!("differs from tmpfs: {}", unknown.join("; "));
                    } else if !known.is_empty() {
                        let why: Vec<&str> = documented
                            .iter()
                            .filter(|k| k.applies_to(&target) && k.scenario == s.id)
                            .map(|k| k.why)
                            .collect::<std::collections::BTreeSet<_>>()
                            .into_iter()
                            .collect();
                        detail = format!(
                            "documented difference from tmpfs ({}): {}",
                            known.join("; "),
                            why.join("; ")
                        );
                    }
                }
            }
            let line = match status.as_str() {
                "pass" if !detail.is_empty() => format!(
                    "pass  {:<3} {:<12} {} ({detail})",
                    s.id,
                    t.to_string(),
                    s.title
                ),
                "pass" => format!("pass  {:<3} {:<12} {}", s.id, t.to_string(), s.title),
                "skip" => format!(
                    "skip  {:<3} {:<12} {} ({detail})",
                    s.id,
                    t.to_string(),
                    s.title
                ),
                _ => format!(
                    "FAIL  {:<3} {:<12} {}: {detail}",
                    s.id,
                    t.to_string(),
                    s.title
                ),
            };
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            results.push(ScenarioResult {
                scenario: s.id.into(),
                target: t.to_string(),
                status,
                detail,
                record,
            });
        }
        drop(inst);
    }
    remove_run_dir(&base);
    let count = |s: &str| results.iter().filter(|r| r.status == s).count();
    let _ = writeln!(
        out,
        "({} targets, {:.0} s)",
        opts.targets.len(),
        started.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        out,
        "{} passed, {} failed, {} skipped",
        count("pass"),
        count("fail"),
        count("skip")
    );
    results
}
