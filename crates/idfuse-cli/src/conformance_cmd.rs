//! `idfuse conformance`: run the idmapped-mount suite against targets.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use idfuse_conformance::{RunOptions, Target};

#[derive(clap::Args)]
#[command(
    after_help = "Targets: tmpfs (the reference), ext4 (loop device), memfs, passthrough (over a fresh tmpfs), passthrough:OPTIONS (the same with -o OPTIONS, e.g. passthrough:cache=never), overlay (idfuse overlay over fresh tmpfs layers; always differential, with its documented differences from tmpfs reported), overlay:OPTIONS (the same with -o OPTIONS, e.g. overlay:userxattr), path:DIR (an existing mount), cmd:'COMMAND {mnt}' (any FUSE daemon on a scratch mountpoint).
With no --target: tmpfs, memfs and passthrough, differential against tmpfs.

Examples:
  idfuse conformance
  idfuse conformance --target tmpfs --target ext4 --only B
  idfuse conformance --target \"cmd:bindfs /srv/data {mnt}\""
)]
pub struct Args {
    /// A target (repeatable).
    #[arg(long = "target", value_name = "T")]
    targets: Vec<String>,
    /// Only scenarios whose id or title contains PATTERN.
    #[arg(long, value_name = "PATTERN")]
    only: Option<String>,
    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Compare each scenario's record with tmpfs's and report differences.
    #[arg(long)]
    differential: bool,
    /// Time limit per scenario, in seconds.
    #[arg(long, default_value_t = 60)]
    limit: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !rustix::process::geteuid().is_root() {
        bail!("the conformance suite mounts filesystems and switches credentials: run it as root");
    }
    let default = args.targets.is_empty();
    let mut targets: Vec<Target> = if default {
        vec![Target::Tmpfs, Target::Memfs(None), Target::Passthrough]
    } else {
        args.targets
            .iter()
            .map(|t| t.parse::<Target>().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()?
    };
    // An overlay is judged against tmpfs: its differences by design are
    // documented, any other is a failure.
    let differential =
        args.differential || default || targets.iter().any(|t| matches!(t, Target::Overlay(_)));
    if differential && !targets.contains(&Target::Tmpfs) {
        targets.insert(0, Target::Tmpfs);
    }
    let idfuse = std::env::current_exe().context("finding the idfuse binary")?;
    idfuse_conformance::private_mounts().map_err(anyhow::Error::msg)?;
    let signals = block_sigint()?;
    let stop = move || {
        let mut fds = [rustix::event::PollFd::new(
            &signals,
            rustix::event::PollFlags::IN,
        )];
        matches!(rustix::event::poll(&mut fds, Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 })), Ok(n) if n > 0)
    };
    let opts = RunOptions {
        targets,
        only: args.only,
        differential,
        idfuse,
        limit: Duration::from_secs(args.limit.max(5)),
    };
    let mut stdout = std::io::stdout();
    let results = idfuse_conformance::run(&opts, &mut stdout, &stop);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&results)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let interrupted = stop();
    let failed = results.iter().any(|r| r.status == "fail");
    Ok(if failed || interrupted {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// SIGINT/SIGTERM become readable events, checked between scenarios; the
/// private mount namespace takes every mount with us even on SIGKILL.
fn block_sigint() -> anyhow::Result<OwnedFd> {
    // SAFETY: signal mask manipulation on locals before any thread exists;
    // signalfd returns a new fd that we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
        if fd < 0 {
            bail!("signalfd: {}", std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}
