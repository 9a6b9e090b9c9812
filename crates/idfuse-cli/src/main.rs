//! `idfuse`: mount idfuse filesystems, make idmapped mounts, run the
//! conformance suite. Logic lives in the libraries; this file only routes.

mod bench_cmd;
mod conformance_cmd;
mod idmap_cmd;
mod mount_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Mount an idfuse filesystem (memfs, passthrough).
    Mount(mount_cmd::Args),
    /// Make idmapped mounts, probe whether a mount can be idmapped, show a mount's idmap.
    Idmap(idmap_cmd::Args),
    /// Run the idmapped-mount conformance suite against one or more targets.
    Conformance(conformance_cmd::Args),
    /// Measure speed against native tmpfs and peer FUSE servers.
    Bench(bench_cmd::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = ["warn", "info", "debug", "trace"][(cli.verbose as usize).min(3)];
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IDFUSE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Mount(args) => mount_cmd::run(args),
        Command::Idmap(args) => idmap_cmd::run(args),
        Command::Conformance(args) => conformance_cmd::run(args),
        Command::Bench(args) => bench_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("idfuse: {err:#}");
            ExitCode::FAILURE
        }
    }
}
