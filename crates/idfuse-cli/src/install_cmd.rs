//! Files `scripts/setup.sh` installs next to the binary: man pages and
//! shell completions, generated from the same clap definitions the
//! command parses with, so they cannot describe options that do not exist.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct ManArgs {
    /// Directory to write idfuse.1 and idfuse-SUBCOMMAND.1 into (created if missing).
    dir: PathBuf,
}

#[derive(clap::Args)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(long, default_value = "bash")]
    shell: clap_complete::Shell,
    /// Directory to write the script into (created if missing).
    dir: PathBuf,
}

pub fn man(cmd: clap::Command, args: ManArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let mut written = Vec::new();
    write_pages(
        &cmd.clone().bin_name("idfuse"),
        "idfuse",
        &args.dir,
        &mut written,
    )?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// One page for `cmd`, then one per visible subcommand, named as git does
/// (`idfuse-mount.1`, `idfuse-mount-memfs.1`).
fn write_pages(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    // clap names are 'static without its `string` feature; this one-shot
    // command leaks a few bytes per page rather than pull that in.
    let page = cmd.clone().name(&*name.to_string().leak());
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .context("rendering a man page")?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        let sub_name = format!("{name}-{}", sub.get_name());
        let bin = format!("{} {}", cmd.get_bin_name().unwrap_or(name), sub.get_name());
        write_pages(&sub.clone().bin_name(bin), &sub_name, dir, written)?;
    }
    Ok(())
}

pub fn completions(mut cmd: clap::Command, args: CompletionArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    // The names each shell's completion loader looks for on its own.
    let file = match args.shell {
        clap_complete::Shell::Bash => "idfuse".to_string(),
        clap_complete::Shell::Zsh => "_idfuse".to_string(),
        shell => clap_complete::Generator::file_name(&shell, "idfuse"),
    };
    let path = args.dir.join(file);
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "idfuse", &mut out);
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}
