//! `idfuse`: mount idfuse filesystems, make idmapped mounts, run the
//! conformance suite. Logic lives in the libraries; this file only routes.

mod bench_cmd;
mod conformance_cmd;
mod idmap_cmd;
mod install_cmd;
mod mount_cmd;
mod mount_helper;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "idfuse",
    version,
    about = "FUSE that works on Linux idmapped mounts"
)]
struct Cli {
    /// More log output on stderr: -v info (the transport in use, mounts),
    /// -vv debug. IDFUSE_LOG (an env-filter spec) overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mount an idfuse filesystem (memfs, passthrough, overlay).
    Mount(mount_cmd::Args),
    /// Make idmapped mounts, probe whether a mount can be idmapped, show a mount's idmap.
    Idmap(idmap_cmd::Args),
    /// Run the idmapped-mount conformance suite against one or more targets.
    Conformance(conformance_cmd::Args),
    /// Measure speed against native tmpfs and peer FUSE servers.
    Bench(bench_cmd::Args),
    /// Write the man pages (idfuse.1 and one per subcommand) into DIR.
    #[command(hide = true)]
    GenerateMan(install_cmd::ManArgs),
    /// Write a shell completion script into DIR.
    #[command(hide = true)]
    GenerateCompletions(install_cmd::CompletionArgs),
}

fn main() -> ExitCode {
    // Installed as /sbin/mount.fuse.idfuse, this binary is mount(8)'s helper
    // for `-t fuse.idfuse`, with mount(8)'s arguments rather than ours.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let cli = (!mount_helper::invoked_as_helper(&argv0)).then(Cli::parse);
    let verbose = cli.as_ref().map_or(0, |c| c.verbose);
    let level = ["warn", "info", "debug", "trace"][(verbose as usize).min(3)];
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IDFUSE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let Some(cli) = cli else {
        let args: Vec<_> = std::env::args_os().skip(1).collect();
        return report(mount_helper::run(args));
    };
    let result = match cli.command {
        Command::Mount(args) => mount_cmd::run(args),
        Command::Idmap(args) => idmap_cmd::run(args),
        Command::Conformance(args) => conformance_cmd::run(args),
        Command::Bench(args) => bench_cmd::run(args),
        Command::GenerateMan(args) => install_cmd::man(Cli::command(), args),
        Command::GenerateCompletions(args) => install_cmd::completions(Cli::command(), args),
    };
    report(result)
}

/// Run the `idfuse` command line given as `args` (argv without argv[0]);
/// the mount helper translates mount(8)'s call into one of these.
fn run_args(args: Vec<std::ffi::OsString>) -> anyhow::Result<ExitCode> {
    let cli = Cli::try_parse_from(std::iter::once("idfuse".into()).chain(args))?;
    match cli.command {
        Command::Mount(args) => mount_cmd::run(args),
        _ => anyhow::bail!("the mount helper only runs `idfuse mount`"),
    }
}

/// Whether `idfuse mount` has a filesystem called `name`.
fn mount_knows(name: &str) -> bool {
    Cli::command()
        .find_subcommand("mount")
        .and_then(|m| m.find_subcommand(name))
        .is_some()
}

fn report(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("idfuse: {err:#}");
            ExitCode::FAILURE
        }
    }
}
