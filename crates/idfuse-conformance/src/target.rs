//! Targets: where scenarios run. The in-kernel references (a fresh tmpfs,
//! ext4 on a loop device), our FUSE servers started for the run, an
//! existing directory, or any FUSE daemon started from a command line.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A target as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A fresh tmpfs: the reference.
    Tmpfs,
    /// ext4 on a loop device.
    Ext4,
    /// idfuse memfs (optionally with a deliberate fault).
    Memfs(Option<String>),
    /// idfuse passthrough over a fresh tmpfs.
    Passthrough,
    /// idfuse passthrough over a fresh tmpfs, with these extra `-o`
    /// options (`passthrough:cache=never`).
    PassthroughWith(String),
    /// An existing directory.
    Path(PathBuf),
    /// `COMMAND {mnt}`: any FUSE daemon, started and stopped by us.
    Cmd(String),
    /// idfuse cephfs on a single-node Ceph cluster started for the run
    /// (scripts/ceph-cluster.sh, built in) and stopped after it.
    Cephfs,
    /// idfuse overlay over fresh tmpfs layers: a lower layer holding the
    /// overlay scenarios' fixtures ([`LOWER_FIXTURES`]) and every
    /// scenario's (empty) scratch directory, and an upper where whatever
    /// the scenarios make lands, each time through a copy-up of its parent.
    /// `overlay:OPTIONS` adds `-o OPTIONS` (`overlay:userxattr`).
    Overlay(Option<String>),
}

/// The layers of an overlay target, for scenarios that check what lands
/// on disk.
#[derive(Debug, Clone)]
pub struct Layers {
    /// The (single) lower layer.
    pub lower: PathBuf,
    /// The upper layer: the overlay's root directory.
    pub upper: PathBuf,
    /// The work directory.
    pub work: PathBuf,
    /// Where the overlay keeps its metadata: `trusted.overlay.`, or
    /// `user.overlay.` with the `userxattr` option.
    pub xattr_prefix: &'static str,
}

/// What an overlay target's lower layer holds before the mount: for each
/// overlay scenario a directory named after it, with the objects it works
/// on. (path, kind, mode, uid, gid): kind is `d` (directory) or the
/// contents of a regular file.
pub const LOWER_FIXTURES: &[(&str, &str, u32, u32, u32)] = &[
    ("O1", "d", 0o777, 1003, 1003),
    ("O1/f", "lower\n", 0o666, 1002, 1002),
    ("O2", "d", 0o777, 0, 0),
    ("O3", "d", 0o777, 0, 0),
    ("O3/gone", "lower\n", 0o644, 1002, 1002),
    ("O3/kept", "lower\n", 0o644, 1002, 1002),
    ("O4", "d", 0o777, 0, 0),
    ("O4/d", "d", 0o777, 1002, 1002),
    ("O4/d/a", "lower\n", 0o666, 1002, 1002),
    ("O4/d/b", "lower\n", 0o666, 1002, 1002),
    ("O5", "d", 0o777, 0, 0),
    ("O5/dir", "d", 0o777, 1002, 1002),
    ("O5/dir/inner", "lower\n", 0o666, 1002, 1002),
    ("O5/f", "lower\n", 0o666, 1002, 1002),
    ("O6", "d", 0o777, 0, 0),
    ("O6/f", "lower\n", 0o666, 1002, 1002),
];

/// The test-cluster script (scripts/ceph-cluster.sh), built in so the
/// target works from any directory.
pub const CEPH_CLUSTER_SH: &str = include_str!("../../../scripts/ceph-cluster.sh");

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "tmpfs" => Target::Tmpfs,
            "ext4" => Target::Ext4,
            "memfs" => Target::Memfs(None),
            "passthrough" => Target::Passthrough,
            "cephfs" => Target::Cephfs,
            "overlay" => Target::Overlay(None),
            _ if s.starts_with("overlay:") => Target::Overlay(Some(s["overlay:".len()..].to_string())),
            _ if s.starts_with("memfs:fault=") => Target::Memfs(Some(s["memfs:fault=".len()..].to_string())),
            _ if s.starts_with("passthrough:") => {
                Target::PassthroughWith(s["passthrough:".len()..].to_string())
            }
            _ if s.starts_with("path:") => Target::Path(PathBuf::from(&s[5..])),
            _ if s.starts_with("cmd:") => {
                let c = &s[4..];
                if !c.contains("{mnt}") {
                    return Err(format!("target `{s}`: the command must contain {{mnt}} where the mountpoint goes"));
                }
                Target::Cmd(c.to_string())
            }
            _ => {
                return Err(format!(
                    "unknown target `{s}`; use tmpfs, ext4, memfs, passthrough, passthrough:OPTIONS, overlay, overlay:OPTIONS, cephfs, path:DIR or cmd:'COMMAND {{mnt}}'"
                ))
            }
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tmpfs => f.write_str("tmpfs"),
            Target::Ext4 => f.write_str("ext4"),
            Target::Memfs(None) => f.write_str("memfs"),
            Target::Memfs(Some(x)) => write!(f, "memfs:fault={x}"),
            Target::Passthrough => f.write_str("passthrough"),
            Target::PassthroughWith(o) => write!(f, "passthrough:{o}"),
            Target::Path(p) => write!(f, "path:{}", p.display()),
            Target::Cmd(c) => write!(f, "cmd:{c}"),
            Target::Cephfs => f.write_str("cephfs"),
            Target::Overlay(None) => f.write_str("overlay"),
            Target::Overlay(Some(o)) => write!(f, "overlay:{o}"),
        }
    }
}

/// A running target: its root directory and what tears it down.
pub struct Instance {
    /// Where scenarios make their scratch directories.
    pub root: PathBuf,
    /// True for FUSE mounts.
    pub fuse: bool,
    /// True when the daemon is ours (idfuse), so FUSE-specific checks of our
    /// own command line apply.
    pub ours: bool,
    /// What a fresh instance mounted by an unprivileged user inside a user
    /// namespace would be (the J scenarios): "tmpfs", "memfs",
    /// "passthrough" or "overlay"; `None` when the target cannot be mounted there.
    pub userns_kind: Option<&'static str>,
    /// The memfs fault switched on, if any.
    pub fault: Option<String>,
    /// The layers, on an overlay target.
    pub layers: Option<Layers>,
    mounts: Vec<PathBuf>,
    daemon: Option<Child>,
    loopdev: Option<String>,
    work: Option<PathBuf>,
    /// A Ceph cluster to stop (script, directory), after the client.
    cluster: Option<(PathBuf, PathBuf)>,
    /// `root` was made in a directory the user named: removed (once the
    /// scenarios have emptied it) when the instance goes.
    made_root: bool,
}

impl Instance {
    /// The daemon's pid, for the lifecycle scenarios.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
        }
        if let Some(c) = &mut self.daemon {
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some((script, dir)) = &self.cluster {
            let _ = Command::new("bash")
                .arg(script)
                .arg("stop")
                .arg(dir)
                .status();
        }
        if let Some(l) = &self.loopdev {
            let _ = Command::new("losetup").args(["-d", l]).status();
        }
        if self.made_root {
            let _ = std::fs::remove_dir(&self.root);
        }
        if let Some(w) = &self.work {
            let _ = std::fs::remove_dir_all(w);
        }
    }
}

/// Error text when a target cannot be set up.
pub type SetupError = String;

fn mount_tmpfs(dir: &Path) -> Result<(), SetupError> {
    rustix::mount::mount(
        "tmpfs",
        dir,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        Some(c"mode=0777,size=1g"),
    )
    .map_err(|e| format!("mounting tmpfs at {}: {e}", dir.display()))
}

fn is_mounted(path: &Path) -> bool {
    let p = path.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|t| t.lines().any(|l| l.split(' ').nth(4) == Some(p.as_str())))
}

/// Start a FUSE daemon in the foreground on `mnt`; it dies with us.
pub fn start_daemon(argv: &[String], mnt: &Path) -> Result<Child, SetupError> {
    let (prog, args) = argv.split_first().ok_or("empty command")?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: prctl in the child before exec; async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{prog}`: {e}"))?;
    let start = Instant::now();
    while !is_mounted(mnt) {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!(
                "`{}` exited ({st}) before mounting",
                argv.join(" ")
            ));
        }
        if start.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("`{}` did not mount within 15 s", argv.join(" ")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(child)
}

impl Target {
    /// Set the target up under `work` (a fresh directory we own).
    pub fn start(&self, work: &Path, idfuse: &Path) -> Result<Instance, SetupError> {
        let mut inst = Instance {
            root: work.join("root"),
            fuse: false,
            ours: false,
            userns_kind: None,
            fault: None,
            layers: None,
            mounts: Vec::new(),
            daemon: None,
            loopdev: None,
            work: Some(work.to_path_buf()),
            cluster: None,
            made_root: false,
        };
        std::fs::create_dir_all(&inst.root).map_err(|e| e.to_string())?;
        let bin = idfuse.to_string_lossy().to_string();
        match self {
            Target::Tmpfs => {
                mount_tmpfs(&inst.root)?;
                inst.mounts.push(inst.root.clone());
                inst.userns_kind = Some("tmpfs");
            }
            Target::Ext4 => {
                let img = work.join("ext4.img");
                let f = std::fs::File::create(&img).map_err(|e| e.to_string())?;
                f.set_len(256 << 20).map_err(|e| e.to_string())?;
                let ok = Command::new("mkfs.ext4")
                    .args(["-q", "-F"])
                    .arg(&img)
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    return Err("mkfs.ext4 failed (Debian package e2fsprogs)".into());
                }
                let out = Command::new("losetup")
                    .args(["--find", "--show"])
                    .arg(&img)
                    .output()
                    .map_err(|e| e.to_string())?;
                if !out.status.success() {
                    return Err(format!(
                        "losetup: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
                inst.loopdev = Some(dev.clone());
                let ok = Command::new("mount")
                    .args(["-o", "acl,user_xattr"])
                    .arg(&dev)
                    .arg(&inst.root)
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    return Err("mounting ext4 failed".into());
                }
                inst.mounts.push(inst.root.clone());
                let _ = std::fs::set_permissions(
                    &inst.root,
                    std::os::unix::fs::PermissionsExt::from_mode(0o777),
                );
            }
            Target::Memfs(fault) => {
                let mut argv = vec![
                    bin,
                    "mount".into(),
                    "memfs".into(),
                    inst.root.to_string_lossy().into(),
                    "--foreground".into(),
                    "-o".into(),
                    "suid,dev".into(),
                ];
                if let Some(f) = fault {
                    argv.push("--fault".into());
                    argv.push(f.clone());
                }
                inst.userns_kind = Some("memfs");
                inst.fault.clone_from(fault);
                inst.daemon = Some(start_daemon(&argv, &inst.root)?);
                inst.mounts.push(inst.root.clone());
                inst.fuse = true;
                inst.ours = true;
                let _ = std::fs::set_permissions(
                    &inst.root,
                    std::os::unix::fs::PermissionsExt::from_mode(0o777),
                );
            }
            Target::Passthrough | Target::PassthroughWith(_) => {
                let opts = match self {
                    Target::PassthroughWith(o) => format!("suid,dev,{o}"),
                    _ => "suid,dev".into(),
                };
                let src = work.join("backing");
                std::fs::create_dir_all(&src).map_err(|e| e.to_string())?;
                mount_tmpfs(&src)?;
                inst.mounts.push(src.clone());
                let argv = vec![
                    bin,
                    "mount".into(),
                    "passthrough".into(),
                    src.to_string_lossy().into(),
                    inst.root.to_string_lossy().into(),
                    "--foreground".into(),
                    "-o".into(),
                    opts,
                ];
                inst.userns_kind = Some("passthrough");
                inst.daemon = Some(start_daemon(&argv, &inst.root)?);
                inst.mounts.push(inst.root.clone());
                inst.fuse = true;
                inst.ours = true;
            }
            Target::Overlay(extra) => {
                // One tmpfs for all three, so upper and work share a
                // filesystem as the overlay requires.
                let fs = work.join("layers");
                std::fs::create_dir_all(&fs).map_err(|e| e.to_string())?;
                mount_tmpfs(&fs)?;
                inst.mounts.push(fs.clone());
                let userxattr = extra
                    .as_deref()
                    .is_some_and(|o| o.split(',').any(|x| x == "userxattr"));
                let layers = Layers {
                    lower: fs.join("lower"),
                    upper: fs.join("upper"),
                    work: fs.join("work"),
                    xattr_prefix: if userxattr {
                        "user.overlay."
                    } else {
                        "trusted.overlay."
                    },
                };
                for d in [&layers.lower, &layers.upper, &layers.work] {
                    std::fs::create_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
                }
                // The overlay's root is the upper's root: open to every
                // scenario's callers, like the other targets' roots.
                std::fs::set_permissions(
                    &layers.upper,
                    std::os::unix::fs::PermissionsExt::from_mode(0o777),
                )
                .map_err(|e| e.to_string())?;
                for &(rel, kind, mode, uid, gid) in LOWER_FIXTURES {
                    let p = layers.lower.join(rel);
                    let made = if kind == "d" {
                        std::fs::create_dir(&p)
                    } else {
                        std::fs::write(&p, kind)
                    };
                    made.and_then(|()| {
                        std::fs::set_permissions(
                            &p,
                            std::os::unix::fs::PermissionsExt::from_mode(mode),
                        )
                    })
                    .and_then(|()| std::os::unix::fs::lchown(&p, Some(uid), Some(gid)))
                    .map_err(|e| format!("lower fixture {}: {e}", p.display()))?;
                }
                // Every scenario's scratch directory (ID.PID, PID being
                // this runner's) starts in the lower layer, so whatever a
                // scenario makes goes through a copy-up of its parent.
                for s in crate::catalogue() {
                    let d = layers
                        .lower
                        .join(format!("{}.{}", s.id, std::process::id()));
                    std::fs::create_dir(&d)
                        .map_err(|e| format!("lower scratch directory {}: {e}", d.display()))?;
                }
                let argv = vec![
                    bin,
                    "mount".into(),
                    "overlay".into(),
                    inst.root.to_string_lossy().into(),
                    "--foreground".into(),
                    "-o".into(),
                    format!(
                        "lowerdir={},upperdir={},workdir={},suid,dev{}",
                        layers.lower.display(),
                        layers.upper.display(),
                        layers.work.display(),
                        extra
                            .as_deref()
                            .map(|o| format!(",{o}"))
                            .unwrap_or_default()
                    ),
                ];
                inst.layers = Some(layers);
                inst.userns_kind = Some("overlay");
                inst.daemon = Some(start_daemon(&argv, &inst.root)?);
                inst.mounts.push(inst.root.clone());
                inst.fuse = true;
                inst.ours = true;
            }
            Target::Cephfs => {
                let script = work.join("ceph-cluster.sh");
                std::fs::write(&script, CEPH_CLUSTER_SH).map_err(|e| e.to_string())?;
                let dir = work.join("cluster");
                inst.cluster = Some((script.clone(), dir.clone()));
                let ok = Command::new("bash")
                    .arg(&script)
                    .arg("start")
                    .arg(&dir)
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    return Err(
                        "the Ceph test cluster did not start (ceph-cluster.sh; setup.sh installs Ceph)"
                            .into(),
                    );
                }
                let argv = vec![
                    bin,
                    "mount".into(),
                    "cephfs".into(),
                    inst.root.to_string_lossy().into(),
                    "--foreground".into(),
                    "-o".into(),
                    format!("conf={},suid,dev", dir.join("ceph.conf").display()),
                ];
                inst.daemon = Some(start_daemon(&argv, &inst.root)?);
                inst.mounts.push(inst.root.clone());
                inst.fuse = true;
                inst.ours = true;
                let _ = std::fs::set_permissions(
                    &inst.root,
                    std::os::unix::fs::PermissionsExt::from_mode(0o777),
                );
            }
            Target::Path(p) => {
                if !p.is_dir() {
                    return Err(format!("{} is not a directory", p.display()));
                }
                inst.root = p.join(format!("idfuse-conformance.{}", std::process::id()));
                std::fs::create_dir_all(&inst.root).map_err(|e| e.to_string())?;
                inst.made_root = true;
                let _ = std::fs::set_permissions(
                    &inst.root,
                    std::os::unix::fs::PermissionsExt::from_mode(0o777),
                );
                inst.fuse = std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|t| {
                    idfuse_idmap::probe::MountInfo::of(p)
                        .is_some_and(|i| i.fstype.starts_with("fuse"))
                        || t.is_empty()
                });
                inst.work = None;
            }
            Target::Cmd(c) => {
                let line = c.replace("{mnt}", &inst.root.to_string_lossy());
                let argv: Vec<String> = line.split_whitespace().map(str::to_string).collect();
                let mut child = start_daemon(&argv, &inst.root);
                if let Err(e) = &child {
                    // Daemons that detach: the command exits 0 once mounted.
                    if e.contains("exited (exit status: 0)") && is_mounted(&inst.root) {
                        child = Err(String::new());
                    }
                }
                match child {
                    Ok(c) => inst.daemon = Some(c),
                    Err(e) if e.is_empty() => {}
                    Err(e) if is_mounted(&inst.root) => tracing::debug!("{e}"),
                    Err(e) => return Err(e),
                }
                if !is_mounted(&inst.root) {
                    return Err(format!("`{line}` did not mount"));
                }
                inst.mounts.push(inst.root.clone());
                inst.fuse = true;
                let _ = std::fs::set_permissions(
                    &inst.root,
                    std::os::unix::fs::PermissionsExt::from_mode(0o777),
                );
            }
        }
        Ok(inst)
    }
}
