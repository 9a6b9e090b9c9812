//! `idfuse bench`: speed against native tmpfs and peer FUSE servers, in one
//! interleaved run, as a Markdown table, JSON and a PNG bar chart.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use idfuse_bench::{
    chart, markdown, run as run_bench, BenchOptions, CEPH_TARGETS, OVERLAY_TARGETS, TARGETS,
};

#[derive(clap::Args)]
#[command(
    after_help = "Targets: native, passthrough, passthrough-nopt, passthrough-idmap, memfs, passthrough-nopt-uring, passthrough-uring, passthrough-idmap-uring, memfs-uring, bindfs, mergerfs, fuse-overlayfs (peers are skipped, with the reason, when their Debian package is missing; scripts/bench-deps.sh installs them). The idfuse targets run over /dev/fuse; the -uring ones over io_uring, and are skipped with the reason when the kernel does not offer it (echo Y > /sys/module/fuse/parameters/enable_uring).
CephFS targets, only when named: cephfs, cephfs-idmap, ceph-fuse (one single-node memstore cluster is started for the run; it measures the clients, not a cluster).
Overlay targets, only when named or with --suite overlay, and never with the others: overlay, overlay-idmap (idfuse's overlay, plain and through an idmapped view), overlay-uring, overlay-idmap-uring (the same over io_uring), fuse-overlayfs-layers (the peer) and overlayfs (kernel overlayfs, the reference). Each mounts two lower layers and an upper+work on a fresh tmpfs, prepared identically for every target and repetition, and runs the overlay workloads: readdir of a 10,000-entry directory merged from both lowers with whiteouts in the upper (cold: the first listing after the mount, kernel caches dropped; warm: the second), seq read of a lower file (cold: kernel caches dropped; the lower file's tmpfs pages are memory and stay), 4 KiB random reads of it, seq write of a new file, copy-up of a 1 GiB lower file (open O_WRONLY, write 1 byte, close; 256 MiB with --quick), create+stat+unlink and untar.

Examples:
  idfuse bench --quick
  idfuse bench --targets native,passthrough,bindfs --out /tmp/bench
  idfuse bench --quick --targets cephfs,cephfs-idmap,ceph-fuse
  idfuse bench --suite overlay --reps 7
  idfuse bench --redraw /tmp/bench     # results.md and results.png again from results.json"
)]
pub struct Args {
    /// Small sizes, one repetition (under two minutes on two cores).
    #[arg(long)]
    quick: bool,
    /// Comma-separated targets (default: all).
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// A group of targets instead of --targets: overlay (overlay,
    /// overlay-idmap, overlay-uring, overlay-idmap-uring,
    /// fuse-overlayfs-layers, overlayfs).
    #[arg(long, value_name = "overlay", conflicts_with = "targets")]
    suite: Option<Suite>,
    /// Repetitions (default: 1 with --quick, 3 otherwise); e.g. --quick
    /// --reps 3 for small sizes measured three times (the CephFS targets,
    /// whose memstore OSD keeps everything in RAM).
    #[arg(long, value_name = "N")]
    reps: Option<usize>,
    /// Comma-separated parts of workload names: run only the workloads
    /// whose name contains one (default: all), e.g. `--workloads
    /// create,untar`.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    workloads: Vec<String>,
    /// Directory for results.md, results.json and results.png (default:
    /// ./bench-results/<unix time>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Measure nothing: write DIR/results.md and DIR/results.png again from
    /// DIR/results.json of an earlier run.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["quick", "targets", "suite", "reps", "out", "workloads"])]
    redraw: Option<PathBuf>,
}

/// Named groups of targets.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Suite {
    /// The overlay filesystems over two lower layers and an upper.
    Overlay,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.redraw {
        return redraw(dir);
    }
    if !rustix::process::geteuid().is_root() {
        bail!("the bench mounts tmpfs and FUSE filesystems and drops caches: run it as root");
    }
    let targets = match args.suite {
        Some(Suite::Overlay) => OVERLAY_TARGETS.iter().map(|t| t.to_string()).collect(),
        None => args.targets,
    };
    for t in &targets {
        if !TARGETS.contains(&t.as_str())
            && !CEPH_TARGETS.contains(&t.as_str())
            && !OVERLAY_TARGETS.contains(&t.as_str())
        {
            bail!(
                "unknown target `{t}`; known: {}, {}, {}",
                TARGETS.join(", "),
                CEPH_TARGETS.join(", "),
                OVERLAY_TARGETS.join(", ")
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
        targets,
        idfuse: std::env::current_exe().context("finding the idfuse binary")?,
        reps: args.reps,
        workloads: args.workloads,
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

fn redraw(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let json = dir.join("results.json");
    let text =
        std::fs::read_to_string(&json).with_context(|| format!("reading {}", json.display()))?;
    let report: idfuse_bench::Report = serde_json::from_str(&text)
        .with_context(|| format!("{} is not the results.json of idfuse bench", json.display()))?;
    let md = dir.join("results.md");
    std::fs::write(&md, markdown(&report)).with_context(|| format!("writing {}", md.display()))?;
    let png = dir.join("results.png");
    chart(&report, &png).map_err(anyhow::Error::msg)?;
    println!("results: {}\nchart: {}", md.display(), png.display());
    Ok(ExitCode::SUCCESS)
}
