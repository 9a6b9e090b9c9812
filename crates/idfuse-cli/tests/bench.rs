//! `idfuse bench --quick --suite overlay` end to end: the six overlay
//! targets mount over their layers (the two over io_uring where the kernel
//! offers it; otherwise they are skipped with the reason), every workload
//! gives a figure (the merged directory lists both lowers with the upper's
//! whiteouts honoured, or its rows would be "n/a"), ratios are to kernel
//! overlayfs, and no daemon outlives the run. About 15 s on two cores.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_idfuse");

/// Processes whose command line names the bench's scratch directory.
fn daemons_of(bench_pid: u32) -> Vec<String> {
    let mark = format!("idfuse-bench.{bench_pid}/");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&mark))
        .collect()
}

/// A scratch directory for the bench's results, or `None` (the test is
/// skipped, saying why) when not run as root.
fn results_dir() -> Option<tempfile::TempDir> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: the bench mounts tmpfs, overlayfs and FUSE: run as root");
        return None;
    }
    Some(
        tempfile::Builder::new()
            .prefix("idfuse-bench-test.")
            .tempdir()
            .expect("temp dir"),
    )
}

/// The body rows of the results table.
fn table_rows(md: &str) -> Vec<&str> {
    md.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| workload"))
        .collect()
}

/// Run `idfuse bench ARGS --out OUT` to success; its pid (to look for
/// daemons it left), its results.md and its log.
fn bench(args: &[&str], out: &std::path::Path) -> (u32, String, String) {
    let child = Command::new(BIN)
        .arg("bench")
        .args(args)
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run idfuse bench");
    let pid = child.id();
    let run = child.wait_with_output().expect("wait for idfuse bench");
    let log = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "idfuse bench failed:\n{log}");
    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md");
    (pid, md, log)
}

#[test]
fn quick_overlay_suite_measures_every_workload_and_unmounts() {
    let Some(out) = results_dir() else {
        return;
    };
    let (pid, md, log) = bench(&["--quick", "--suite", "overlay"], out.path());
    assert!(md.contains("×overlayfs / ×best peer"), "{md}");
    let header = md
        .lines()
        .find(|l| l.starts_with("| workload |"))
        .expect("table header");
    for t in idfuse_bench::OVERLAY_TARGETS {
        assert!(header.contains(&format!("| {t} ")), "{t} missing: {header}");
    }
    let rows = table_rows(&md);
    assert_eq!(rows.len(), 9, "one row per overlay workload:\n{md}");
    for r in &rows {
        // A peer that is not installed is skipped with the reason; every
        // other target must have measured every workload, but for the
        // idmapped-view row on the two that cannot be idmapped.
        let missing = r.matches("n/a").count();
        let unidmappable = if r.contains("idmapped view vs plain") {
            assert!(
                md.contains("on overlayfs: cannot idmap this mount: kernel overlayfs"),
                "kernel overlayfs's reason is missing:\n{md}"
            );
            2 - usize::from(md.contains("fuse-overlayfs is not installed"))
        } else {
            0
        };
        let allowed = unidmappable
            + usize::from(md.contains("fuse-overlayfs is not installed"))
            + usize::from(
                md.contains("FUSE over io_uring is off")
                    || md.contains("this kernel has no FUSE over io_uring"),
            ) * idfuse_bench::OVERLAY_TARGETS
                .iter()
                .filter(|t| t.ends_with("-uring"))
                .count();
        assert!(
            missing <= allowed,
            "a workload was not measured: {r}\n{log}"
        );
    }
    // Its mounts were private to it; its daemons are killed by pid as each
    // target's repetition ends.
    let left = daemons_of(pid);
    assert!(left.is_empty(), "daemons left running: {left:?}");
}

/// `--workloads` runs only the named rows, here untar (which must find the
/// crate archive and time real trees) on native tmpfs and the mirror; a
/// name that matches no workload is refused with the list of names.
#[test]
fn workloads_option_runs_only_the_named_rows() {
    let Some(out) = results_dir() else {
        return;
    };
    let (_, md, log) = bench(
        &[
            "--quick",
            "--targets",
            "native,passthrough",
            "--workloads",
            "UNTAR",
        ],
        out.path(),
    );
    let rows = table_rows(&md);
    assert_eq!(rows.len(), 1, "only the untar row:\n{md}");
    assert!(
        rows[0].starts_with("| untar a crate + du (trees/s) |"),
        "{md}"
    );
    assert!(
        !rows[0].contains("n/a"),
        "untar was not measured: {md}\n{log}"
    );

    let bad = Command::new(BIN)
        .args(["bench", "--quick", "--targets", "native"])
        .args(["--workloads", "nosuch", "--out"])
        .arg(out.path())
        .output()
        .expect("run idfuse bench");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "an unknown workload was accepted");
    assert!(
        err.contains("no workload matches `nosuch`") && err.contains("untar a crate + du"),
        "{err}"
    );
}

/// The idmapped-view row: create+stat+unlink through an idmapped view of a
/// target's own mount and through the mount itself, alternated, as a
/// percentage. Measured on native tmpfs and memfs (the same mount on both
/// sides, so far from 100 % would be a fault, not noise); "n/a" with the
/// reason on bindfs, which does not opt in to idmapped mounts; and the view
/// is gone afterwards.
#[test]
fn idmapped_view_row_compares_two_views_of_one_mount() {
    let Some(out) = results_dir() else {
        return;
    };
    let (pid, md, log) = bench(
        &[
            "--quick",
            "--targets",
            "native,memfs,bindfs",
            "--workloads",
            "idmapped view",
        ],
        out.path(),
    );
    let rows = table_rows(&md);
    assert_eq!(rows.len(), 1, "only the idmapped-view row:\n{md}");
    let cells: Vec<&str> = rows[0].split('|').map(str::trim).collect();
    assert!(cells[1].ends_with("(% of plain)"), "{md}");
    for cell in &cells[2..4] {
        let pct: f64 = cell
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("not measured: {cell}\n{md}\n{log}"));
        assert!((50.0..200.0).contains(&pct), "{pct} % for one mount:\n{md}");
    }
    assert_eq!(cells[4], "n/a", "{md}");
    assert!(
        md.contains("did not opt in to idmapped mounts") || md.contains("bindfs is not installed"),
        "{md}"
    );
    let view = std::env::temp_dir().join(format!("idfuse-bench-view.{pid}"));
    assert!(!view.exists(), "{} was left behind", view.display());
}
