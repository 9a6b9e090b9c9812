//! `idfuse idmap`: make an idmapped mount, probe whether a mount can be
//! idmapped, or show a mount's idmap. The work is idfuse-idmap's.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use idfuse_idmap::{can_idmap, idmap_mount, IdmapOptions, MapSource, UserNamespace, Verdict};

#[derive(clap::Args)]
#[command(
    after_help = "A map is KIND:FROM:TO:COUNT, KIND u (uids), g (gids) or b (both); several ranges \
separated by spaces or commas. FROM is the id on the filesystem, TO the id seen through the \
idmapped mount. A map that names only uids leaves every gid unmapped (shown as 65534), and the \
other way round.

Examples:
  # Container root: fs ids 0-65535 appear as 100000-165535 in the view.
  idfuse idmap --map b:0:100000:65536 /srv/rootfs /run/ctr/rootfs
  # Two ranges, with submounts.
  idfuse idmap --map 'u:0:100000:1000 g:0:200000:1000' --recursive /srv/data /mnt/view
  # Use the user namespace of a running container.
  idfuse idmap --map /proc/4242/ns/user /srv/data /mnt/view
  # Why can this mount not be idmapped?
  idfuse idmap --probe /mnt/somefuse
  # Which idmap does this mount have?
  idfuse idmap --show /mnt/view"
)]
pub struct Args {
    /// The idmap: a spec such as b:0:100000:65536, or a user namespace file.
    #[arg(long, value_name = "SPEC", conflicts_with_all = ["probe", "show"])]
    map: Option<String>,
    /// Include submounts of SOURCE.
    #[arg(long, requires = "map")]
    recursive: bool,
    /// Say whether PATH's mount can be idmapped, and why not; exit 0 or 1.
    #[arg(long, value_name = "PATH", conflicts_with = "show")]
    probe: Option<PathBuf>,
    /// Print the idmap of PATH's mount in spec syntax.
    #[arg(long, value_name = "PATH")]
    show: Option<PathBuf>,
    /// The directory to idmap (with --map).
    source: Option<PathBuf>,
    /// Where the idmapped view appears (with --map).
    target: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(path) = args.probe {
        return Ok(match can_idmap(&path) {
            Verdict::Supported => {
                println!("{}: can be idmapped", path.display());
                ExitCode::SUCCESS
            }
            Verdict::Unsupported(reason) => {
                println!("{}: cannot be idmapped: {reason}", path.display());
                ExitCode::FAILURE
            }
        });
    }
    if let Some(path) = args.show {
        match idfuse_idmap::show(&path)? {
            None => println!("{}: not idmapped", path.display()),
            Some((u, g)) => {
                // One line for both when they agree, as the spec was likely written.
                let us = u.to_string();
                let gs = g.to_string();
                if us.replace("u:", "") == gs.replace("g:", "") && !us.is_empty() {
                    println!("{}", us.replace("u:", "b:"));
                } else {
                    println!(
                        "{}",
                        [us, gs]
                            .iter()
                            .filter(|s| !s.is_empty())
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(" ")
                    );
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(spec) = args.map else {
        bail!("say what to do: --map SPEC SOURCE TARGET, --probe PATH or --show PATH (see --help)");
    };
    let (Some(source), Some(target)) = (args.source, args.target) else {
        bail!("--map needs SOURCE and TARGET: idfuse idmap --map {spec} SOURCE TARGET");
    };
    let src: MapSource = spec
        .parse()
        .map_err(|e| anyhow::anyhow!("--map {spec}: {e}"))?;
    let ns = UserNamespace::from_source(&src)?;
    let guard = idmap_mount(
        &source,
        &target,
        &ns,
        IdmapOptions {
            recursive: args.recursive,
        },
    )
    .with_context(|| format!("idmapping {} at {}", source.display(), target.display()))?;
    let target = guard.keep();
    println!(
        "{} is now an idmapped view of {} ({spec}); undo with: umount {}",
        target.display(),
        source.display(),
        target.display()
    );
    Ok(ExitCode::SUCCESS)
}
