//! The workloads of `scripts/soak.sh`, run against a mount someone else
//! made (the CLI daemon, a plain mount or an idmapped view), as whatever
//! user the script chose:
//!
//! ```text
//! soak_worker fsx    DIR SECONDS SEED   the exerciser, round after round
//! soak_worker stress DIR SECONDS SEED   two threads racing on one namespace
//! soak_worker churn  DIR SECONDS SEED   git-like small files: write, fsync,
//!                                       rename into place, read back, prune;
//!                                       the repository stays at the end
//! soak_worker check  DIR                nlink = names found, for the tree
//! ```
//!
//! Each prints one `ops=N` line at the end and exits non-zero on the first
//! mismatch or unexpected error, naming it. The exerciser and the stressor
//! are the ones of `tests/exerciser.rs`, shared, not copied. Run by
//! `cargo test` without arguments, it does one short round of each against
//! a memfs mount of its own, so the soak's machinery is tested every time.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "exerciser.rs"]
mod exerciser;

use exerciser::{stress_thread, Fsx, Rng, STRESS_PARENTS};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => smoke(),
        ["check", dir] => check(Path::new(dir)).map(|files| format!("files={files}")),
        [kind, dir, secs, seed] => {
            let (Ok(secs), Ok(seed)) = (secs.parse::<u64>(), seed.parse::<u64>()) else {
                usage();
            };
            run(kind, Path::new(dir), Duration::from_secs(secs), seed)
                .map(|ops| format!("ops={ops}"))
        }
        _ => usage(),
    };
    match result {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("soak_worker {}: {e}", args.join(" "));
            std::process::exit(1);
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: soak_worker fsx|stress|churn DIR SECONDS SEED | check DIR");
    std::process::exit(2);
}

fn run(kind: &str, dir: &Path, time: Duration, seed: u64) -> Result<u64, String> {
    match kind {
        "fsx" => fsx(dir, time, seed),
        "stress" => stress(dir, time, seed),
        "churn" => churn(dir, time, seed),
        _ => usage(),
    }
}

/// Exerciser rounds of 20,000 operations on one file, each with a fresh
/// seed, until the time is up. A mismatch panics inside the exerciser with
/// the operation history; that ends this process non-zero.
fn fsx(dir: &Path, time: Duration, seed: u64) -> Result<u64, String> {
    const ROUND: u64 = 20_000;
    let start = Instant::now();
    let mut ops = 0;
    let mut round = 0u64;
    while ops == 0 || start.elapsed() < time {
        let path = dir.join(format!("fsx.{}", std::process::id()));
        let s = seed.wrapping_add(round.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let report = Fsx::new(&dir.display().to_string(), path.clone(), s).run(ROUND);
        ops += report.counts.iter().sum::<u64>();
        fs::remove_file(&path).map_err(|e| format!("remove {}: {e}", path.display()))?;
        round += 1;
    }
    Ok(ops)
}

/// Stressor rounds: two threads race on a fresh namespace for 5,000
/// operations each; then the tree must be consistent and removable.
fn stress(dir: &Path, time: Duration, seed: u64) -> Result<u64, String> {
    const ROUND: u64 = 5_000;
    let start = Instant::now();
    let mut ops = 0;
    let mut round = 0u64;
    while ops == 0 || start.elapsed() < time {
        let root = dir.join(format!("stress.{}", std::process::id()));
        for d in ["", "a", "b"] {
            fs::create_dir(root.join(d)).map_err(|e| format!("mkdir {}: {e}", root.display()))?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..2u64)
            .map(|t| {
                let (root, stop) = (root.clone(), stop.clone());
                let s = seed ^ (round * 2 + t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                std::thread::spawn(move || stress_thread(&root, s, ROUND, &stop))
            })
            .collect();
        for t in threads {
            let st = t
                .join()
                .map_err(|_| "a stress thread panicked".to_string())??;
            ops += st.ok.values().sum::<u64>() + st.errors.values().sum::<u64>();
        }
        check(&root)?;
        for parent in STRESS_PARENTS {
            // A name readdir lists can be looked up, and one it does not
            // list cannot: the kernel's cache agrees with the daemon.
            let Ok(rd) = fs::read_dir(root.join(parent)) else {
                continue;
            };
            for e in rd {
                let e = e.map_err(|e| format!("readdir {parent}: {e}"))?;
                fs::symlink_metadata(e.path()).map_err(|err| {
                    format!("{} is listed but not found: {err}", e.path().display())
                })?;
            }
        }
        fs::remove_dir_all(&root).map_err(|e| format!("remove {}: {e}", root.display()))?;
        round += 1;
    }
    Ok(ops)
}

/// Walk `dir`: every inode's link count equals the names found for it.
/// Returns the number of files.
fn check(dir: &Path) -> Result<usize, String> {
    fn walk(p: &Path, seen: &mut HashMap<(u64, u64), (u64, Vec<PathBuf>)>) -> Result<(), String> {
        let rd = fs::read_dir(p).map_err(|e| format!("readdir {}: {e}", p.display()))?;
        for e in rd {
            let e = e.map_err(|e| format!("readdir {}: {e}", p.display()))?;
            let path = e.path();
            let m = fs::symlink_metadata(&path)
                .map_err(|e| format!("{} is listed but not found: {e}", path.display()))?;
            if m.is_dir() {
                walk(&path, seen)?;
            } else {
                let entry = seen
                    .entry((m.dev(), m.ino()))
                    .or_insert((m.nlink(), Vec::new()));
                entry.1.push(path);
            }
        }
        Ok(())
    }
    let mut seen = HashMap::new();
    walk(dir, &mut seen)?;
    for (nlink, paths) in seen.values() {
        if *nlink != paths.len() as u64 {
            return Err(format!(
                "nlink {nlink} but {} names: {paths:?}",
                paths.len()
            ));
        }
    }
    Ok(seen.len())
}

/// What git does to a repository, in small: objects written to a temporary
/// file, fsync'ed and renamed to a name made from their contents under a
/// 256-way fan-out; a lock file created exclusively and renamed over the
/// index; objects read back and checked against their names; pruning.
fn churn(dir: &Path, time: Duration, seed: u64) -> Result<u64, String> {
    let repo = dir.join(format!("churn.{}", std::process::id()));
    let objects = repo.join("objects");
    fs::create_dir_all(&objects).map_err(|e| format!("mkdir {}: {e}", objects.display()))?;
    let mut rng = Rng(seed);
    let mut written: Vec<(PathBuf, u64)> = Vec::new();
    let start = Instant::now();
    let mut ops = 0u64;
    let mut buf = Vec::new();
    while ops == 0 || start.elapsed() < time {
        match rng.below(10) {
            0..=4 => {
                let len = 16 + rng.below(8192) as usize;
                buf.resize(len, 0);
                rng.fill(&mut buf);
                let sum = fnv(&buf);
                let fan = objects.join(format!("{:02x}", sum >> 56));
                match fs::create_dir(&fan) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                        return Err(format!("mkdir {}: {e}", fan.display()))
                    }
                    _ => {}
                }
                let tmp = repo.join(format!("tmp_obj_{ops}"));
                let mut f = fs::File::create(&tmp).map_err(|e| format!("create tmp: {e}"))?;
                f.write_all(&buf).map_err(|e| format!("write tmp: {e}"))?;
                f.sync_all().map_err(|e| format!("fsync tmp: {e}"))?;
                drop(f);
                let name = fan.join(format!("{sum:016x}"));
                fs::rename(&tmp, &name)
                    .map_err(|e| format!("rename to {}: {e}", name.display()))?;
                written.push((name, sum));
            }
            5..=7 if !written.is_empty() => {
                let (name, sum) = &written[rng.below(written.len() as u64) as usize];
                let data = fs::read(name).map_err(|e| format!("read {}: {e}", name.display()))?;
                if fnv(&data) != *sum {
                    return Err(format!("{} does not hold what was written", name.display()));
                }
            }
            8 => {
                let lock = repo.join("index.lock");
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&lock)
                    .map_err(|e| format!("create {} exclusively: {e}", lock.display()))?;
                writeln!(f, "{} objects", written.len()).map_err(|e| format!("write lock: {e}"))?;
                drop(f);
                fs::rename(&lock, repo.join("index")).map_err(|e| format!("rename index: {e}"))?;
            }
            _ => {
                // Prune: forget about half of the objects.
                let keep = written.split_off(written.len() / 2);
                for (name, _) in written.drain(..) {
                    match fs::remove_file(&name) {
                        // Identical contents give one name twice.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        r => r.map_err(|e| format!("remove {}: {e}", name.display()))?,
                    }
                }
                written = keep;
            }
        }
        ops += 1;
    }
    // The repository stays, for the soak's consistency check at the end.
    Ok(ops)
}

/// FNV-1a, 64 bits: the "hash" the objects are named after.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Without arguments (as `cargo test` runs it): each workload for a moment
/// on a memfs mount of its own, and the tree check at the end.
fn smoke() -> Result<String, String> {
    use idfuse::{MountOptions, Session, SessionConfig};
    use idfuse_fs::memfs::{MemFs, MemFsOptions};
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let fs = Arc::new(MemFs::new(MemFsOptions {
        root_mode: 0o777,
        ..MemFsOptions::default()
    }));
    let session = Session::mount(
        fs,
        dir.path(),
        MountOptions::default(),
        SessionConfig::default(),
    )
    .map_err(|e| format!("mount memfs: {e}"))?;
    let mut lines = Vec::new();
    for kind in ["fsx", "stress", "churn"] {
        let ops = run(kind, dir.path(), Duration::ZERO, 7)?;
        lines.push(format!("{kind} ops={ops}"));
    }
    let files = check(dir.path())?;
    drop(session);
    Ok(format!(
        "soak workloads on memfs: {}; {files} files left, links consistent",
        lines.join(", ")
    ))
}
