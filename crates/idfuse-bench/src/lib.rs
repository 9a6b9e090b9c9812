//! `idfuse bench`: the same workloads on native tmpfs, idfuse's filesystems
//! and peer FUSE servers, interleaved (A B C A B C …) in one run, reported
//! as medians with min–max and ratios to native and to the best peer.
//! The overlay group ([`OVERLAY_TARGETS`]) runs its own workloads over two
//! lower layers and an upper, with kernel overlayfs as the reference.
//!
//! [`run`] mounts every target it is given (as root, through the `idfuse`
//! binary named in [`BenchOptions`]) and [`markdown`] renders the report:
//!
//! ```no_run
//! use idfuse_bench::{markdown, run, BenchOptions};
//!
//! let opts = BenchOptions {
//!     quick: true,
//!     targets: vec!["native".into(), "memfs".into()],
//!     idfuse: "target/release/idfuse".into(),
//!     reps: None,
//!     workloads: Vec::new(),
//! };
//! let report = run(&opts, &mut std::io::stderr()).expect("bench");
//! println!("{}", markdown(&report));
//! ```
#![warn(missing_docs)]

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Instant;

use serde::{Deserialize, Serialize};

mod chart;
pub use chart::chart;

/// How to run the bench.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Small sizes and one repetition (under two minutes on two cores).
    pub quick: bool,
    /// Target names; empty means all.
    pub targets: Vec<String>,
    /// The idfuse binary.
    pub idfuse: PathBuf,
    /// Repetitions, instead of the mode's (quick: 1, full: 3).
    pub reps: Option<usize>,
    /// Run only the workloads whose name contains one of these (case
    /// insensitive); empty means all.
    pub workloads: Vec<String>,
}

/// All target names, in the order they run.
pub const TARGETS: &[&str] = &[
    "native",
    "passthrough",
    "passthrough-nopt",
    "passthrough-idmap",
    "memfs",
    "passthrough-nopt-uring",
    "passthrough-uring",
    "passthrough-idmap-uring",
    "memfs-uring",
    "bindfs",
    "mergerfs",
    "fuse-overlayfs",
];

/// CephFS clients, run only when named (they share one single-node test
/// cluster, started for the run): idfuse's, idmapped (identity map), and
/// ceph-fuse as the peer.
pub const CEPH_TARGETS: &[&str] = &["cephfs", "cephfs-idmap", "ceph-fuse"];

/// Overlay filesystems, run only when named (or with `--suite overlay`),
/// and never together with the other groups: each target mounts two lower
/// layers and an upper with its work directory, all on one fresh tmpfs,
/// prepared identically for every target and repetition. idfuse's overlay,
/// the same seen through an idmapped view (identity map), both again over
/// io_uring (skipped where the kernel does not offer it), fuse-overlayfs
/// with those layers (the peer; the `fuse-overlayfs` target of the default
/// group is a one-layer mirror) and kernel overlayfs (the reference of this
/// group, as native tmpfs is of the default one).
pub const OVERLAY_TARGETS: &[&str] = &[
    "overlay",
    "overlay-idmap",
    "overlay-uring",
    "overlay-idmap-uring",
    "fuse-overlayfs-layers",
    "overlayfs",
];

/// Peers: other FUSE servers from Debian.
const PEERS: &[&str] = &[
    "bindfs",
    "mergerfs",
    "fuse-overlayfs",
    "fuse-overlayfs-layers",
    "ceph-fuse",
];

/// The in-kernel references that ratios are taken against: native tmpfs
/// for the mirrors, kernel overlayfs for the overlays.
fn is_reference(target: &str) -> bool {
    matches!(target, "native" | "overlayfs")
}

/// The single-node Ceph cluster of a run with CephFS targets; stopped on drop.
struct CephCluster {
    script: PathBuf,
    dir: PathBuf,
}

impl CephCluster {
    /// `osd_mib`: the size of the OSD's in-memory store. Deleted files are
    /// purged in the background, so it must hold several repetitions'
    /// files: a full store blocks every client (and the run) for good.
    fn start(base: &Path, osd_mib: u64) -> Result<Self, String> {
        std::fs::create_dir_all(base).map_err(|e| e.to_string())?;
        let script = base.join("ceph-cluster.sh");
        std::fs::write(&script, idfuse_conformance::target::CEPH_CLUSTER_SH)
            .map_err(|e| e.to_string())?;
        let c = Self {
            script,
            dir: base.join("ceph-cluster"),
        };
        let ok = Command::new("bash")
            .arg(&c.script)
            .arg("start")
            .arg(&c.dir)
            .env("CEPH_CLUSTER_OSD_BYTES", (osd_mib << 20).to_string())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(
                "the Ceph test cluster did not start (scripts/setup.sh installs Ceph)".into(),
            );
        }
        Ok(c)
    }
    fn conf(&self) -> PathBuf {
        self.dir.join("ceph.conf")
    }
}

impl Drop for CephCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// One figure: a workload on a target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// Workload name.
    pub workload: String,
    /// Target name.
    pub target: String,
    /// Unit, e.g. MiB/s or ops/s (higher is better for all).
    pub unit: String,
    /// Median over repetitions.
    pub median: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// Why there is no figure, if there is none.
    pub skipped: Option<String>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Kernel, cores, passthrough state.
    pub machine: String,
    /// Exact commands used to mount each target.
    pub commands: Vec<(String, String)>,
    /// Figures.
    pub figures: Vec<Figure>,
}

struct Sizes {
    file_mib: usize,
    /// The lower file whose copy-up is timed.
    copyup_mib: usize,
    files: usize,
    random_reads: usize,
    /// Random reads go on at least this long.
    min_time: std::time::Duration,
    reps: usize,
}

/// A mounted target, torn down on drop.
struct Mounted {
    dir: PathBuf,
    mounts: Vec<PathBuf>,
    daemon: Option<Child>,
    /// Remove `dir` before unmounting (a shared CephFS, whose memstore OSD
    /// keeps everything in RAM).
    clean: bool,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.clean {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        for m in self.mounts.iter().rev() {
            let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
        }
        if let Some(d) = &mut self.daemon {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

fn tmpfs(dir: &Path) -> Result<(), String> {
    tmpfs_with(dir, c"mode=0777,size=3g")
}

fn tmpfs_with(dir: &Path, opts: &std::ffi::CStr) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    rustix::mount::mount(
        "tmpfs",
        dir,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        Some(opts),
    )
    .map_err(|e| format!("tmpfs at {}: {e}", dir.display()))
}

fn which(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The mount command for `target`, with SRC/MNT filled in.
fn command_for(
    target: &str,
    idfuse: &Path,
    src: &Path,
    mnt: &Path,
    work: &Path,
) -> Option<Vec<String>> {
    let (b, s, m) = (
        idfuse.to_string_lossy().to_string(),
        src.to_string_lossy().to_string(),
        mnt.to_string_lossy().to_string(),
    );
    // The /dev/fuse targets say so, so that a machine where the kernel
    // offers io_uring still measures both transports side by side.
    let idf = |args: &[&str], transport: &str| -> Vec<String> {
        let mut v = vec![b.clone(), "mount".into()];
        v.extend(args.iter().map(|a| a.to_string()));
        v.extend(["--foreground".into(), "--io-uring".into(), transport.into()]);
        v
    };
    Some(match target {
        "passthrough" => idf(&["passthrough", &s, &m], "off"),
        "passthrough-nopt" => idf(&["passthrough", &s, &m, "--passthrough", "false"], "off"),
        "passthrough-nopt-uring" => idf(&["passthrough", &s, &m, "--passthrough", "false"], "on"),
        "passthrough-uring" => idf(&["passthrough", &s, &m], "on"),
        // An identity map in a new user namespace: the kernel's idmapped
        // paths run, and root can still write.
        "passthrough-idmap" => idf(&["passthrough", &s, &m, "--idmap", "b:0:0:65536"], "off"),
        "passthrough-idmap-uring" => idf(&["passthrough", &s, &m, "--idmap", "b:0:0:65536"], "on"),
        "memfs" => idf(&["memfs", &m], "off"),
        "memfs-uring" => idf(&["memfs", &m], "on"),
        "bindfs" => vec!["bindfs".into(), "-f".into(), "--multithreaded".into(), s, m],
        "mergerfs" => vec![
            "mergerfs".into(),
            "-f".into(),
            "-o".into(),
            "cache.files=off,dropcacheonclose=true,category.create=mfs,minfreespace=0".into(),
            s,
            m,
        ],
        "fuse-overlayfs" => {
            let (up, wk) = (work.join("upper"), work.join("work"));
            let _ = std::fs::create_dir_all(&up);
            let _ = std::fs::create_dir_all(&wk);
            vec![
                "fuse-overlayfs".into(),
                "-f".into(),
                "-o".into(),
                format!(
                    "lowerdir={s},upperdir={},workdir={}",
                    up.display(),
                    wk.display()
                ),
                m,
            ]
        }
        _ => return None,
    })
}

fn mount_ceph(
    target: &str,
    work: &Path,
    idfuse: &Path,
    conf: Option<&Path>,
) -> Result<(Mounted, String), String> {
    let conf = conf.ok_or("no Ceph cluster")?;
    let mnt = work.join("mnt");
    std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    let m = mnt.to_string_lossy().to_string();
    let argv: Vec<String> = match target {
        "ceph-fuse" => {
            if !which("ceph-fuse") {
                return Err("ceph-fuse is not installed (Debian package ceph-fuse)".into());
            }
            vec![
                "ceph-fuse".into(),
                "-f".into(),
                "-c".into(),
                conf.to_string_lossy().into(),
                m,
            ]
        }
        _ => {
            let mut v = vec![
                idfuse.to_string_lossy().to_string(),
                "mount".into(),
                "cephfs".into(),
                m,
                "--foreground".into(),
                "-o".into(),
                format!("conf={}", conf.display()),
            ];
            if target == "cephfs-idmap" {
                v.extend(["--idmap".into(), "b:0:0:65536".into()]);
            }
            v
        }
    };
    let child = idfuse_conformance::target::start_daemon(&argv, &mnt)?;
    let dir = mnt.join(format!(
        "{}-{}",
        work.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let m = Mounted {
        dir: dir.clone(),
        mounts: vec![mnt],
        daemon: Some(child),
        clean: true,
    };
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok((m, argv.join(" ")))
}

fn mount(
    target: &str,
    work: &Path,
    idfuse: &Path,
    ceph: Option<&Path>,
) -> Result<(Mounted, String), String> {
    if CEPH_TARGETS.contains(&target) {
        return mount_ceph(target, work, idfuse, ceph);
    }
    let src = work.join("src");
    tmpfs(&src)?;
    let mut m = Mounted {
        dir: src.clone(),
        mounts: vec![src.clone()],
        daemon: None,
        clean: false,
    };
    if target == "native" {
        return Ok((m, format!("mount -t tmpfs tmpfs {}", src.display())));
    }
    let prog = match target {
        "bindfs" | "mergerfs" | "fuse-overlayfs" => target,
        _ => "idfuse",
    };
    uring_available(target)?;
    if prog != "idfuse" && !which(prog) {
        return Err(format!(
            "{prog} is not installed (Debian package {prog}; scripts/bench-deps.sh installs it)"
        ));
    }
    let mnt = work.join("mnt");
    std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    let argv = command_for(target, idfuse, &src, &mnt, work)
        .ok_or_else(|| format!("unknown target {target}"))?;
    let child = idfuse_conformance::target::start_daemon(&argv, &mnt)?;
    m.daemon = Some(child);
    m.mounts.push(mnt.clone());
    m.dir = mnt;
    Ok((m, argv.join(" ")))
}

/// The workloads of `all` whose name contains one of `wanted` (case
/// insensitive), in their usual order; all of them when `wanted` is empty.
fn select_workloads(
    all: &'static [(&'static str, Work)],
    wanted: &[String],
) -> Result<Vec<(&'static str, Work)>, String> {
    if wanted.is_empty() {
        return Ok(all.to_vec());
    }
    let wanted: Vec<String> = wanted.iter().map(|w| w.to_lowercase()).collect();
    if let Some(w) = wanted.iter().find(|w| {
        !all.iter()
            .any(|(n, _)| n.to_lowercase().contains(w.as_str()))
    }) {
        return Err(format!(
            "no workload matches `{w}`; the workloads of these targets: {}",
            all.iter().map(|(n, _)| *n).collect::<Vec<_>>().join("; ")
        ));
    }
    Ok(all
        .iter()
        .filter(|(n, _)| wanted.iter().any(|w| n.to_lowercase().contains(w.as_str())))
        .copied()
        .collect())
}

/// A `-uring` target runs only where the kernel offers FUSE over io_uring.
fn uring_available(target: &str) -> Result<(), String> {
    if !target.ends_with("-uring") {
        return Ok(());
    }
    let knob = "/sys/module/fuse/parameters/enable_uring";
    match std::fs::read_to_string(knob) {
        Ok(v) if v.trim() == "Y" => Ok(()),
        Ok(v) => Err(format!(
            "FUSE over io_uring is off ({knob} is {}; echo Y > {knob} as root)",
            v.trim()
        )),
        Err(_) => Err("this kernel has no FUSE over io_uring".into()),
    }
}

/// The lower file read by the overlay group (in the bottom layer, so that
/// a lookup passes both): the name the mirror workloads read and write.
const LOWER_FILE: &str = "seq";
/// The lower file whose copy-up is timed.
const COPYUP_FILE: &str = "copyup";
/// Whiteouts in the upper copy of the merged directory.
const WHITEOUTS: usize = 500;

fn write_mib(p: &Path, mib: usize) -> Result<(), String> {
    let block = vec![0x5au8; 1 << 20];
    let mut f = std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?;
    for _ in 0..mib {
        f.write_all(&block).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn touch(p: &Path) -> Result<(), String> {
    std::fs::File::create(p)
        .map(drop)
        .map_err(|e| format!("{}: {e}", p.display()))
}

/// Two lower layers and an upper with its work directory on a fresh tmpfs
/// at `layers`, written directly (not through any overlay): `l2` (the
/// bottom) holds the file the reads use and the one copied up; `many`, the
/// merged directory the listings read, has half its names in each lower
/// plus [`WHITEOUTS`] more in `l2` that the upper hides with char 0/0
/// whiteouts, so that it lists `s.files` entries.
fn overlay_layers(layers: &Path, s: &Sizes) -> Result<[PathBuf; 4], String> {
    tmpfs_with(layers, c"mode=0755,size=5g")?;
    let dirs = ["l1", "l2", "upper", "work"].map(|d| layers.join(d));
    for d in &dirs {
        std::fs::create_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let [l1, l2, upper, _] = &dirs;
    write_mib(&l2.join(LOWER_FILE), s.file_mib)?;
    write_mib(&l2.join(COPYUP_FILE), s.copyup_mib)?;
    for d in [l1, l2, upper] {
        std::fs::create_dir(d.join("many")).map_err(|e| e.to_string())?;
    }
    for i in 0..s.files {
        let lower = if i % 2 == 0 { l1 } else { l2 };
        touch(&lower.join(format!("many/entry-{i:06}")))?;
    }
    for i in 0..WHITEOUTS {
        let name = format!("many/gone-{i:06}");
        touch(&l2.join(&name))?;
        rustix::fs::mknodat(
            rustix::fs::CWD,
            upper.join(&name),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .map_err(|e| format!("whiteout {name}: {e}"))?;
    }
    Ok(dirs)
}

/// Mount an overlay target over freshly prepared layers under `work`.
fn mount_overlay(
    target: &str,
    work: &Path,
    idfuse: &Path,
    s: &Sizes,
) -> Result<(Mounted, String), String> {
    let prog = match target {
        "fuse-overlayfs-layers" => "fuse-overlayfs",
        _ => "",
    };
    uring_available(target)?;
    if !prog.is_empty() && !which(prog) {
        return Err(format!(
            "{prog} is not installed (Debian package {prog}; scripts/bench-deps.sh installs it)"
        ));
    }
    let layers = work.join("layers");
    let mnt = work.join("mnt");
    std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    let mut m = Mounted {
        dir: mnt.clone(),
        mounts: vec![layers.clone()],
        daemon: None,
        clean: false,
    };
    let [l1, l2, upper, wk] = overlay_layers(&layers, s)?;
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        l1.display(),
        l2.display(),
        upper.display(),
        wk.display()
    );
    let m_s = mnt.to_string_lossy().to_string();
    let argv: Vec<String> = match target {
        "overlayfs" => {
            let data = std::ffi::CString::new(opts.clone()).map_err(|e| e.to_string())?;
            rustix::mount::mount(
                "overlay",
                &mnt,
                "overlay",
                rustix::mount::MountFlags::empty(),
                Some(data.as_c_str()),
            )
            .map_err(|e| format!("mount -t overlay at {m_s}: {e}"))?;
            m.mounts.push(mnt);
            return Ok((m, format!("mount -t overlay overlay -o {opts} {m_s}")));
        }
        "fuse-overlayfs-layers" => {
            vec!["fuse-overlayfs".into(), "-f".into(), "-o".into(), opts, m_s]
        }
        "overlay" | "overlay-idmap" | "overlay-uring" | "overlay-idmap-uring" => {
            let mut v: Vec<String> = vec![
                idfuse.to_string_lossy().into(),
                "mount".into(),
                "overlay".into(),
                m_s,
                "-o".into(),
                opts,
            ];
            if target.starts_with("overlay-idmap") {
                v.extend(["--idmap".into(), "b:0:0:65536".into()]);
            }
            let transport = if target.ends_with("-uring") {
                "on"
            } else {
                "off"
            };
            v.extend(["--foreground".into(), "--io-uring".into(), transport.into()]);
            v
        }
        _ => return Err(format!("unknown overlay target {target}")),
    };
    // Pushed before the daemon starts: a daemon that mounted and then
    // failed to report so is still unmounted on drop.
    m.mounts.push(mnt.clone());
    m.daemon = Some(idfuse_conformance::target::start_daemon(&argv, &mnt)?);
    Ok((m, argv.join(" ")))
}

fn drop_caches() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

type Work = fn(&Path, &Sizes) -> Result<(f64, &'static str), String>;

fn seq_write(dir: &Path, s: &Sizes) -> Result<(f64, &'static str), String> {
    let block = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    let mut f = std::fs::File::create(dir.join("seq")).map_err(|e| e.to_string())?;
    for _ in 0..s.file_mib {
        f.write_all(&block).map_err(|e| e.to_string())?;
    }
    f.sync_all().map_err(|e| e.to_string())?;
    Ok((s.file_mib as f64 / t.elapsed().as_secs_f64(), "MiB/s"))
}

fn ensure_file(dir: &Path, s: &Sizes) -> Result<PathBuf, String> {
    let p = dir.join("seq");
    if std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0) < (s.file_mib as u64) << 20 {
        seq_write(dir, s)?;
    }
    Ok(p)
}

fn seq_read(dir: &Path, s: &Sizes) -> Result<(f64, &'static str), String> {
    let p = ensure_file(dir, s)?;
    drop_caches();
    let mut buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    let mut f = std::fs::File::open(&p).map_err(|e| e.to_string())?;
    let mut total = 0usize;
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        total += n;
    }
    Ok(((total >> 20) as f64 / t.elapsed().as_secs_f64(), "MiB/s"))
}

/// Keeps the calling thread on the CPU it runs on until dropped, then gives
/// it back the CPUs it had.
struct OnOneCpu(rustix::thread::CpuSet);

impl OnOneCpu {
    fn here() -> Result<Self, String> {
        let had = rustix::thread::sched_getaffinity(None)
            .map_err(|e| format!("sched_getaffinity: {e}"))?;
        let mut one = rustix::thread::CpuSet::new();
        one.set(rustix::thread::sched_getcpu());
        rustix::thread::sched_setaffinity(None, &one)
            .map_err(|e| format!("sched_setaffinity: {e}"))?;
        Ok(OnOneCpu(had))
    }
}

impl Drop for OnOneCpu {
    fn drop(&mut self) {
        let _ = rustix::thread::sched_setaffinity(None, &self.0);
    }
}

fn random_reads(dir: &Path, s: &Sizes, direct: bool) -> Result<(f64, &'static str), String> {
    let p = ensure_file(dir, s)?;
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    let f = o
        .open(&p)
        .map_err(|e| format!("open{}: {e}", if direct { " O_DIRECT" } else { "" }))?;
    // 4 KiB-aligned buffer for O_DIRECT.
    let mut raw = vec![0u8; 8192];
    let off = raw.as_ptr().align_offset(4096);
    let buf = &mut raw[off..off + 4096];
    let blocks = ((s.file_mib as u64) << 20) / 4096;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    // At least `random_reads`, and for at least `min_time`: a few tens of
    // milliseconds of reads measure the machine's noise, not the ~10% a
    // FUSE passthrough read costs over a native one (fio runs for seconds).
    let t = Instant::now();
    let mut n = 0usize;
    while n < s.random_reads || t.elapsed() < s.min_time {
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (x % blocks) * 4096;
            rustix::io::pread(&f, &mut *buf, at).map_err(|e| format!("pread: {e}"))?;
        }
        n += 1000;
    }
    Ok((n as f64 / t.elapsed().as_secs_f64(), "reads/s"))
}

/// Alternate `step(0)` and `step(1)` in 100 ms slices (ABBA, so that
/// neither side always goes first) for twice `min_time`, and give side 0's
/// rate in percent of side 1's. Each step does some operations and says how
/// many. Interleaving this finely cancels the machine's drift, which
/// between separate runs is larger than the differences measured with it.
fn paired(s: &Sizes, mut step: impl FnMut(usize) -> Result<usize, String>) -> Result<f64, String> {
    let slice = std::time::Duration::from_millis(100);
    let mut rate = [(0usize, 0f64); 2];
    let t0 = Instant::now();
    let mut round = 0;
    while t0.elapsed() < 2 * s.min_time {
        round += 1;
        let order = if round % 2 == 0 { [1, 0] } else { [0, 1] };
        for i in order {
            let t = Instant::now();
            let mut n = 0;
            while t.elapsed() < slice {
                n += step(i)?;
            }
            rate[i].0 += n;
            rate[i].1 += t.elapsed().as_secs_f64();
        }
    }
    let r = |(n, t): (usize, f64)| n as f64 / t;
    Ok(100.0 * r(rate[0]) / r(rate[1]))
}

/// Buffered 4 KiB random reads of one file through the target and of the
/// same file in the source directly, [`paired`]: the figure fio shows (one
/// file, one reader) without the drift between separate runs.
fn rand_paired(dir: &Path, s: &Sizes) -> Result<(f64, &'static str), String> {
    let p = ensure_file(dir, s)?;
    let direct = if dir.ends_with("mnt") {
        dir.parent().map(|w| w.join("src/seq")).unwrap_or_default()
    } else {
        p.clone()
    };
    let open = |p: &Path| std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()));
    let files = [
        open(&p)?,
        open(&direct).map_err(|e| format!("the file is not in the source as written ({e})"))?,
    ];
    let blocks = ((s.file_mib as u64) << 20) / 4096;
    let mut buf = vec![0u8; 4096];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let pct = paired(s, |i| {
        for _ in 0..200 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            rustix::io::pread(&files[i], &mut buf[..], (x % blocks) * 4096)
                .map_err(|e| format!("pread: {e}"))?;
        }
        Ok(200)
    })?;
    Ok((pct, "% of direct"))
}

/// An idmapped view of the mount at a directory (an identity map in a new
/// user namespace, as the `-idmap` targets have), detached and removed on
/// drop.
struct IdmapView {
    guard: Option<idfuse_idmap::MountGuard>,
    path: PathBuf,
}

impl IdmapView {
    fn of(dir: &Path) -> Result<Self, String> {
        let map: idfuse_idmap::IdMap = "b:0:0:65536".parse().map_err(|e| format!("{e}"))?;
        let ns = idfuse_idmap::UserNamespace::create(&map).map_err(|e| e.to_string())?;
        let path = std::env::temp_dir().join(format!("idfuse-bench-view.{}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut view = IdmapView { guard: None, path };
        let guard = idfuse_idmap::idmap_mount(dir, &view.path, &ns, Default::default())
            .map_err(|e| e.to_string())?;
        view.guard = Some(guard);
        Ok(view)
    }
}

impl Drop for IdmapView {
    fn drop(&mut self) {
        drop(self.guard.take());
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Files per create+stat+unlink step of [`idmap_paired`].
const PAIRED_FILES: usize = 20;

/// create+stat+unlink in one directory of the target, through an idmapped
/// view of the same mount and through the mount itself, [`paired`]: what
/// the idmapped view costs, with the same daemon and the same directory on
/// both sides, so that neither the machine's drift nor a second daemon's
/// placement counts. "n/a" on a mount that cannot be idmapped, with the
/// reason; on an `-idmap` target it compares a view of the view with the
/// view.
fn idmap_paired(dir: &Path, s: &Sizes) -> Result<(f64, &'static str), String> {
    let d = dir.join("pair");
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    let view = IdmapView::of(dir)?;
    let dirs = [view.path.join("pair"), d];
    let names: Vec<String> = (0..PAIRED_FILES).map(|i| format!("f{i}")).collect();
    let pct = paired(s, |i| {
        let ps: Vec<PathBuf> = names.iter().map(|n| dirs[i].join(n)).collect();
        for p in &ps {
            std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        for p in &ps {
            rustix::fs::stat(p).map_err(|e| format!("stat {}: {e}", p.display()))?;
        }
        for p in &ps {
            std::fs::remove_file(p).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        Ok(3 * PAIRED_FILES)
    })?;
    Ok((pct, "% of plain"))
}

fn rand_buffered(dir: &Path, s: &Sizes) -> Result<(f64, &'static str), String> {
    random_reads(dir, s, false)
}

fn rand_direct(dir: &Path, s: &Sizes) -> Result<(f64, &'static str), String> {
    random_reads(dir, s, true)
}

/// O_DIRECT reads by a reader that stays on one CPU, as in a container
/// given one CPU (a cpuset). A synchronous reader that may move is moved by
/// the scheduler whenever the thread that wakes it is still running on its
/// CPU and another CPU is idle; over io_uring that thread is the ring
/// thread of the reader's own CPU, so a free reader moves about one read
/// in three, and each move wakes an idle CPU. Kept on one CPU, each read
/// costs the transport's round trip and nothing else.
fn rand_direct_one_cpu(dir: &Path, s: &Sizes) -> Result<(f64, &'static str), String> {
    let _pin = OnOneCpu::here()?;
    random_reads(dir, s, true)
}

fn metadata_in(d: &Path, n: usize) -> Result<(), String> {
    metadata_with(d, n, false)
}

/// Create `n` files, stat each, unlink each. The stat is stat(2) as C
/// programs make it (`ls -l`, `find`, git, make: the basic fields), unless
/// `birth`: then it is Rust's `std::fs::metadata`, whose statx also asks
/// for the birth time, which a FUSE server that implements STATX is asked
/// for once per new inode (LOOKUP and CREATE replies carry no birth time),
/// and one that refuses STATX (bindfs, mergerfs, fuse-overlayfs) never is.
fn metadata_with(d: &Path, n: usize, birth: bool) -> Result<(), String> {
    std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    for i in 0..n {
        std::fs::File::create(d.join(format!("f{i}"))).map_err(|e| e.to_string())?;
    }
    for i in 0..n {
        let p = d.join(format!("f{i}"));
        if birth {
            std::fs::metadata(&p).map(drop)
        } else {
            rustix::fs::stat(&p).map(drop).map_err(std::io::Error::from)
        }
        .map_err(|e| e.to_string())?;
    }
    for i in 0..n {
        std::fs::remove_file(d.join(format!("f{i}"))).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn metadata(dir: &Path, s: &Sizes) -> Result<(f64, &'static str), String> {
    let d = dir.join("meta");
    let t = Instant::now();
    metadata_in(&d, s.files)?;
    Ok(((3 * s.files) as f64 / t.elapsed().as_secs_f64(), "ops/s"))
}

fn metadata_birth(dir: &Path, s: &Sizes) -> Result<(f64, &'static str), String> {
    let d = dir.join("meta-birth");
    let t = Instant::now();
    metadata_with(&d, s.files, true)?;
    Ok(((3 * s.files) as f64 / t.elapsed().as_secs_f64(), "ops/s"))
}

fn readdir_dir(dir: &Path, s: &Sizes) -> Result<PathBuf, String> {
    let d = dir.join("many");
    if !d.exists() {
        std::fs::create_dir(&d).map_err(|e| e.to_string())?;
        for i in 0..s.files {
            std::fs::File::create(d.join(format!("entry-{i:06}"))).map_err(|e| e.to_string())?;
        }
    }
    Ok(d)
}

/// List `d` and stat every entry as `ls -l` does: `fstatat` for the basic
/// attributes. Not `DirEntry::metadata`, whose `statx` also asks for the
/// birth time, which FUSE attributes do not carry: on a server that
/// answers `FUSE_STATX` every entry would cost a round trip that `ls`
/// never makes.
fn list(d: &Path) -> Result<usize, String> {
    use rustix::fs::{AtFlags, OFlags};
    let at = rustix::fs::open(
        d,
        OFlags::PATH | OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(std::fs::read_dir(d)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .filter(|e| rustix::fs::statat(&at, e.file_name(), AtFlags::SYMLINK_NOFOLLOW).is_ok())
        .count())
}

fn readdir_cold(dir: &Path, s: &Sizes) -> Result<(f64, &'static str), String> {
    let d = readdir_dir(dir, s)?;
    drop_caches();
    let t = Instant::now();
    let n = list(&d)?;
    Ok((n as f64 / t.elapsed().as_secs_f64(), "entries/s"))
}

fn readdir_warm(dir: &Path, s: &Sizes) -> Result<(f64, &'static str), String> {
    let d = readdir_dir(dir, s)?;
    list(&d)?;
    let t = Instant::now();
    let n = list(&d)?;
    Ok((n as f64 / t.elapsed().as_secs_f64(), "entries/s"))
}

/// A mid-size source tree that is always in the local registry: our own
/// dependency clap_builder.
fn source_crate() -> Result<PathBuf, String> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    let cache = home.join("registry/cache");
    let mut found = Vec::new();
    for reg in std::fs::read_dir(&cache)
        .map_err(|e| format!("{}: {e}", cache.display()))?
        .flatten()
    {
        for f in std::fs::read_dir(reg.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let n = f.file_name().to_string_lossy().to_string();
            if n.starts_with("clap_builder-") && n.ends_with(".crate") {
                found.push(f.path());
            }
        }
    }
    found.sort();
    found.pop().ok_or_else(|| {
        "no clap_builder .crate in the cargo registry cache (build the workspace first)".into()
    })
}

/// Trees untarred per measurement: one 64-entry tree is 20-40 ms, too
/// short to rise above this machine's noise.
const UNTAR_TREES: u32 = 4;

fn untar_du(dir: &Path, _s: &Sizes) -> Result<(f64, &'static str), String> {
    let krate = source_crate()?;
    let tar = |to: Option<&Path>| {
        let mut c = Command::new("tar");
        c.arg("xzf").arg(&krate);
        match to {
            Some(d) => c.arg("-C").arg(d),
            None => c.arg("-O").stdout(std::process::Stdio::null()),
        };
        c.status().is_ok_and(|s| s.success())
    };
    let du = |d: &Path| {
        Command::new("du")
            .arg("-s")
            .arg(d)
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // The workload starts with the kernel's caches dropped, which also
    // evicts tar, gzip, du, their libraries and the archive: reading those
    // back from the root disk is the same for every target and is not what
    // this row measures. Read them once, outside the timing.
    if !(tar(None) && du(Path::new("/dev/null"))) {
        return Err(format!(
            "tar xzf {} or du failed outside the mount (Debian packages tar, gzip, coreutils)",
            krate.display()
        ));
    }
    let trees: Vec<PathBuf> = (0..UNTAR_TREES)
        .map(|i| dir.join(format!("tree-{}-{i}", std::process::id())))
        .collect();
    for d in &trees {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let t = Instant::now();
    for d in &trees {
        if !(tar(Some(d)) && du(d)) {
            return Err(format!(
                "tar xzf {} or du failed in {}",
                krate.display(),
                d.display()
            ));
        }
    }
    let secs = t.elapsed().as_secs_f64();
    for d in &trees {
        let _ = std::fs::remove_dir_all(d);
    }
    Ok((f64::from(UNTAR_TREES) / secs, "trees/s"))
}

fn two_procs(dir: &Path, s: &Sizes) -> Result<(f64, &'static str), String> {
    let (a, b) = (dir.join("p1"), dir.join("p2"));
    let n = s.files / 2;
    let t = Instant::now();
    let h = std::thread::spawn(move || metadata_in(&a, n));
    metadata_in(&b, n)?;
    h.join().map_err(|_| "worker panicked".to_string())??;
    Ok(((6 * n) as f64 / t.elapsed().as_secs_f64(), "ops/s"))
}

const WORKLOADS: &[(&str, Work)] = &[
    ("seq write 1 MiB blocks", seq_write),
    ("seq read 1 MiB blocks (cold)", seq_read),
    ("4 KiB random read, buffered", rand_buffered),
    ("4 KiB random read, O_DIRECT", rand_direct),
    (
        "4 KiB random read, O_DIRECT, reader on one CPU",
        rand_direct_one_cpu,
    ),
    (
        "4 KiB random read vs same file in source, paired",
        rand_paired,
    ),
    ("create+stat+unlink", metadata),
    ("create+stat+unlink, stat with birth time", metadata_birth),
    (
        "create+stat+unlink, idmapped view vs plain, paired",
        idmap_paired,
    ),
    ("readdir, cold", readdir_cold),
    ("readdir, warm", readdir_warm),
    ("untar a crate + du", untar_du),
    ("two processes, metadata", two_procs),
];

/// A new file written through the overlay (into the upper layer), in a
/// new directory so that it does not meet the lower file of the same name;
/// removed afterwards to keep the layers' tmpfs small.
fn seq_write_new(dir: &Path, s: &Sizes) -> Result<(f64, &'static str), String> {
    let d = dir.join("new");
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    let r = seq_write(&d, s);
    let _ = std::fs::remove_file(d.join("seq"));
    r
}

/// The copy-up of a lower file of `copyup_mib`: the time of its first
/// write (open `O_WRONLY`, write one byte, close), as MiB of file copied
/// per second.
fn copy_up(dir: &Path, s: &Sizes) -> Result<(f64, &'static str), String> {
    let p = dir.join(COPYUP_FILE);
    let len = std::fs::metadata(&p)
        .map_err(|e| format!("{}: {e}", p.display()))?
        .len();
    if len != (s.copyup_mib as u64) << 20 {
        return Err(format!(
            "{} is {len} bytes, not {} MiB",
            p.display(),
            s.copyup_mib
        ));
    }
    let t = Instant::now();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .map_err(|e| format!("open O_WRONLY {}: {e}", p.display()))?;
    f.write_all(b"x").map_err(|e| e.to_string())?;
    drop(f);
    Ok((s.copyup_mib as f64 / t.elapsed().as_secs_f64(), "MiB/s"))
}

/// The merged directory must list `s.files` names: both lowers, whiteouts
/// honoured. Checked after the timed listing, so as not to warm it.
fn merged(f: Work) -> impl Fn(&Path, &Sizes) -> Result<(f64, &'static str), String> {
    move |dir, s| {
        let r = f(dir, s)?;
        let n = list(&dir.join("many"))?;
        if n != s.files {
            return Err(format!(
                "the merged directory lists {n} entries, not {}",
                s.files
            ));
        }
        Ok(r)
    }
}

fn merged_cold(dir: &Path, s: &Sizes) -> Result<(f64, &'static str), String> {
    merged(readdir_cold)(dir, s)
}

fn merged_warm(dir: &Path, s: &Sizes) -> Result<(f64, &'static str), String> {
    merged(readdir_warm)(dir, s)
}

/// The overlay group's workloads, in the order they run on each mount.
/// The listings come first, so that "cold" is the first listing of the
/// merged directory after the mount (with the kernel's caches dropped
/// too), and the copy-up after the reads of the other lower file.
const OVERLAY_WORKLOADS: &[(&str, Work)] = &[
    ("readdir merged dir, cold", merged_cold),
    ("readdir merged dir, warm", merged_warm),
    ("seq read lower file (cold)", seq_read),
    ("4 KiB random read lower file", rand_buffered),
    ("seq write new file", seq_write_new),
    ("copy-up on first write", copy_up),
    ("create+stat+unlink", metadata),
    (
        "create+stat+unlink, idmapped view vs plain, paired",
        idmap_paired,
    ),
    ("untar a crate + du", untar_du),
];

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Run the bench; progress goes to `log`.
pub fn run(opts: &BenchOptions, log: &mut dyn Write) -> Result<Report, String> {
    let sizes = if opts.quick {
        Sizes {
            file_mib: 64,
            copyup_mib: 256,
            files: 1000,
            random_reads: 5000,
            min_time: std::time::Duration::from_millis(1500),
            reps: 1,
        }
    } else {
        Sizes {
            file_mib: 1024,
            copyup_mib: 1024,
            files: 10_000,
            random_reads: 50_000,
            min_time: std::time::Duration::from_secs(4),
            reps: 3,
        }
    };
    let sizes = Sizes {
        reps: opts.reps.unwrap_or(sizes.reps).max(1),
        ..sizes
    };
    let targets: Vec<String> = if opts.targets.is_empty() {
        TARGETS.iter().map(|s| s.to_string()).collect()
    } else {
        for t in &opts.targets {
            if !TARGETS.contains(&t.as_str())
                && !CEPH_TARGETS.contains(&t.as_str())
                && !OVERLAY_TARGETS.contains(&t.as_str())
            {
                return Err(format!(
                    "unknown target `{t}`; known: {}, {}, {}",
                    TARGETS.join(", "),
                    CEPH_TARGETS.join(", "),
                    OVERLAY_TARGETS.join(", ")
                ));
            }
        }
        opts.targets.clone()
    };
    let overlays = targets
        .iter()
        .filter(|t| OVERLAY_TARGETS.contains(&t.as_str()))
        .count();
    if overlays != 0 && overlays != targets.len() {
        return Err(format!(
            "the overlay targets ({}) run their own workloads over layers and cannot share a run with other targets",
            OVERLAY_TARGETS.join(", ")
        ));
    }
    let all = if overlays != 0 {
        OVERLAY_WORKLOADS
    } else {
        WORKLOADS
    };
    let workloads = select_workloads(all, &opts.workloads)?;
    let base = std::env::temp_dir().join(format!("idfuse-bench.{}", std::process::id()));
    let mut samples: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); targets.len()]; workloads.len()];
    let mut units = vec![""; workloads.len()];
    let mut skipped: Vec<Vec<Option<String>>> = vec![vec![None; targets.len()]; workloads.len()];
    let mut commands = Vec::new();
    let ceph = if targets.iter().any(|t| CEPH_TARGETS.contains(&t.as_str())) {
        Some(CephCluster::start(
            &base,
            (sizes.file_mib as u64 * 6).max(3072),
        )?)
    } else {
        None
    };
    let ceph_conf = ceph.as_ref().map(CephCluster::conf);
    // Interleave: every target gets a fresh mount per repetition, and the
    // repetitions go A B C A B C.
    for rep in 0..sizes.reps {
        for (ti, t) in targets.iter().enumerate() {
            let work = base.join(format!("{t}-{rep}"));
            let _ = std::fs::create_dir_all(&work);
            let mounted = if overlays != 0 {
                mount_overlay(t, &work, &opts.idfuse, &sizes)
            } else {
                mount(t, &work, &opts.idfuse, ceph_conf.as_deref())
            };
            let (m, cmd) = match mounted {
                Ok(x) => x,
                Err(e) => {
                    for row in skipped.iter_mut() {
                        row[ti] = Some(e.clone());
                    }
                    let _ = writeln!(log, "skip {t}: {e}");
                    continue;
                }
            };
            if rep == 0 {
                commands.push((t.clone(), cmd));
            }
            for (wi, (name, f)) in workloads.iter().enumerate() {
                // Each workload starts with the kernel's caches dropped: the
                // inodes the previous one left cached would otherwise count
                // against this one (for the mirror, one open fd each).
                drop_caches();
                match f(&m.dir, &sizes) {
                    Ok((v, unit)) => {
                        units[wi] = unit;
                        samples[wi][ti].push(v);
                        let _ = writeln!(log, "{t:<18} {name:<32} {v:>12.1} {unit}");
                    }
                    Err(e) => {
                        skipped[wi][ti] = Some(e.clone());
                        let _ = writeln!(log, "{t:<18} {name:<32} n/a ({e})");
                    }
                }
            }
            drop(m);
            let _ = std::fs::remove_dir_all(&work);
        }
    }
    drop(ceph);
    let _ = std::fs::remove_dir_all(&base);
    let mut figures = Vec::new();
    for (wi, (name, _)) in workloads.iter().enumerate() {
        for (ti, t) in targets.iter().enumerate() {
            let mut v = samples[wi][ti].clone();
            let f = if v.is_empty() {
                Figure {
                    workload: name.to_string(),
                    target: t.clone(),
                    unit: units[wi].into(),
                    median: 0.0,
                    min: 0.0,
                    max: 0.0,
                    skipped: Some(
                        skipped[wi][ti]
                            .clone()
                            .unwrap_or_else(|| "no sample".into()),
                    ),
                }
            } else {
                let (mn, mx) = (
                    v.iter().cloned().fold(f64::MAX, f64::min),
                    v.iter().cloned().fold(0.0, f64::max),
                );
                Figure {
                    workload: name.to_string(),
                    target: t.clone(),
                    unit: units[wi].into(),
                    median: median(&mut v),
                    min: mn,
                    max: mx,
                    skipped: None,
                }
            };
            figures.push(f);
        }
    }
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let machine = if overlays != 0 {
        format!("kernel {release}, {cores} cores; layers: two lowers and upper+work on one fresh tmpfs per target and repetition; sizes: {} MiB lower file, {} MiB copy-up, {} entries merged ({} in each lower, {WHITEOUTS} whited out), {} files, {} reps", sizes.file_mib, sizes.copyup_mib, sizes.files, sizes.files / 2, sizes.files, sizes.reps)
    } else {
        format!("kernel {release}, {cores} cores; passthrough target uses FUSE_PASSTHROUGH (root, backing files); sizes: {} MiB file, {} files, {} reps", sizes.file_mib, sizes.files, sizes.reps)
    };
    Ok(Report {
        machine,
        commands,
        figures,
    })
}

/// The report as a Markdown table: each figure with its ratio to the
/// in-kernel reference (native tmpfs, or kernel overlayfs for the overlay
/// group) and to the best peer of the same run.
pub fn markdown(r: &Report) -> String {
    let mut targets: Vec<String> = Vec::new();
    for f in &r.figures {
        if !targets.contains(&f.target) {
            targets.push(f.target.clone());
        }
    }
    let reference = targets
        .iter()
        .find(|t| is_reference(t))
        .map_or("native", String::as_str);
    let mut s = format!("Machine: {}\n\nMedian (min–max); ×{reference} / ×best peer. Higher is better everywhere.\n\n| workload | {} |\n|---|{}\n", r.machine, targets.join(" | "), "---|".repeat(targets.len()));
    let mut workloads: Vec<String> = Vec::new();
    for f in &r.figures {
        if !workloads.contains(&f.workload) {
            workloads.push(f.workload.clone());
        }
    }
    for w in &workloads {
        let row: Vec<&Figure> = r.figures.iter().filter(|f| &f.workload == w).collect();
        let native = row
            .iter()
            .find(|f| is_reference(&f.target) && f.skipped.is_none())
            .map(|f| f.median);
        let best_peer = row
            .iter()
            .filter(|f| PEERS.contains(&f.target.as_str()) && f.skipped.is_none())
            .map(|f| f.median)
            .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
        let unit = row
            .iter()
            .find(|f| f.skipped.is_none())
            .map_or("", |f| f.unit.as_str());
        let cells: Vec<String> = row
            .iter()
            .map(|f| match &f.skipped {
                Some(_) => "n/a".to_string(),
                None => {
                    let rn = native.map_or(String::new(), |n| format!(" ×{:.2}", f.median / n));
                    let rp = best_peer
                        .filter(|_| !PEERS.contains(&f.target.as_str()) && !is_reference(&f.target))
                        .map_or(String::new(), |p| format!(" / ×{:.2}", f.median / p));
                    format!("{:.0} ({:.0}–{:.0}){rn}{rp}", f.median, f.min, f.max)
                }
            })
            .collect();
        s.push_str(&format!("| {w} ({unit}) | {} |\n", cells.join(" | ")));
    }
    s.push_str("\nCommands:\n\n");
    for (t, c) in &r.commands {
        s.push_str(&format!("- {t}: `{c}`\n"));
    }
    let notes: Vec<String> = r
        .figures
        .iter()
        .filter_map(|f| {
            f.skipped
                .as_ref()
                .map(|why| format!("- {} on {}: {}", f.workload, f.target, why))
        })
        .collect();
    if !notes.is_empty() {
        s.push_str("\nNot measured:\n\n");
        s.push_str(&notes.join("\n"));
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(target: &str, median: f64) -> Figure {
        Figure {
            workload: "copy-up on first write".into(),
            target: target.into(),
            unit: "MiB/s".into(),
            median,
            min: median,
            max: median,
            skipped: None,
        }
    }

    #[test]
    fn overlay_ratios_are_to_kernel_overlayfs_and_fuse_overlayfs() {
        let r = Report {
            machine: "test".into(),
            commands: Vec::new(),
            figures: vec![
                fig("overlay", 900.0),
                fig("fuse-overlayfs-layers", 600.0),
                fig("overlayfs", 1000.0),
            ],
        };
        let md = markdown(&r);
        assert!(md.contains("×overlayfs / ×best peer"), "{md}");
        assert!(md.contains("| 900 (900–900) ×0.90 / ×1.50 |"), "{md}");
        // The peer and the reference get no ratio to the peer.
        assert!(md.contains("| 600 (600–600) ×0.60 |"), "{md}");
        assert!(md.contains("| 1000 (1000–1000) ×1.00 |"), "{md}");
    }
}
