//! `idfuse bench`: speed against native tmpfs and peer FUSE servers, in one
//! interleaved run, as a Markdown table, JSON and a PNG bar chart.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use idfuse_bench::{chart, markdown, run as run_bench, BenchOptions, CEPH_TARGETS, TARGETS};

#[derive(clap::Args)]
#[command(
    after_help = "Targets: native, passthrough, passthrough-nopt, passthrough-idmap, memfs, passthrough-nopt-uring, memfs-uring, bindfs, mergerfs, fuse-overlayfs (peers are skipped, with the reason, when their Debian package is missing; scripts/bench-deps.sh installs them). The idfuse targets run over /dev/fuse; the -uring ones over io_uring, and are skipped with the reason when the kernel does not offer it (echo Y > /sys/module/fuse/parameters/enable_uring).
CephFS targets, only when named: cephfs, cephfs-idmap, ceph-fuse (one single-node memstore cluster is started for the run; it measures the clients, not a cluster).

Examples:
  idfuse bench --quick
  idfuse bench --targets native,passthrough,bindfs --out /tmp/bench
  idfuse bench --quick --targets cephfs,cephfs-idmap,ceph-fuse"
)]
pub struct Args {
    /// Small sizes, one repetition (under two minutes on two cores).
    #[arg(long)]
    quick: bool,
    /// Comma-separated targets (default: all).
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// Repetitions (default: 1 with --quick, 3 otherwise); e.g. --quick
    /// --reps 3 for small sizes measured three times (the CephFS targets,
    /// whose memstore OSD keeps everything in RAM).
    #[arg(long, value_name = "N")]
    reps: Option<usize>,
    /// Directory for results.md, results.json and results.png (default:
    /// ./bench-results/<unix time>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !rustix::process::geteuid().is_root() {
        bail!("the bench mounts tmpfs and FUSE filesystems and drops caches: run it as root");
    }
    for t in &args.targets {
        if !TARGETS.contains(&t.as_str()) && !CEPH_TARGETS.contains(&t.as_str()) {
            bail!(
                "unknown target `{t}`; known: {}, {}",
                TARGETS.join(", "),
                CEPH_TARGETS.join(", ")
            );
        }
    }
    let out = args.out.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("bench-results/{now}"))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // Mounts made here vanish with us, even if we are killed.
    idfuse_conformance::private_mounts().map_err(anyhow::Error::msg)?;
    let opts = BenchOptions {
        quick: args.quick,
        targets: args.targets,
        idfuse: std::env::current_exe().context("finding the idfuse binary")?,
        reps: args.reps,
    };
    let report = run_bench(&opts, &mut std::io::stderr()).map_err(anyhow::Error::msg)?;
    let md = markdown(&report);
    std::fs::write(out.join("results.md"), &md)?;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    // The chart is a convenience: the figures are already saved, so a
    // missing font only costs the picture.
    let png = out.join("results.png");
    let chart_result = chart(&report, &png);
    println!("{md}");
    println!("results: {}", out.display());
    match chart_result {
        Ok(()) => println!("chart: {}", png.display()),
        Err(e) => eprintln!("warning: no chart: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}
