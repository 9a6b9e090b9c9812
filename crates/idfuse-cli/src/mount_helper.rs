//! mount(8)'s helper for `-t fuse.idfuse`: `setup.sh` links
//! /sbin/mount.fuse.idfuse to this binary, and mount(8), fstab lines and
//! systemd `.mount` units then reach `idfuse mount` through it.
//!
//! mount(8) calls `mount.fuse.idfuse SOURCE MOUNTPOINT [-sfnv] [-o OPTS]
//! [-t fuse.idfuse]`. SOURCE names the filesystem: `memfs`,
//! `passthrough:DIR`, and `overlay` (layers in the options) once
//! `idfuse mount overlay` exists. Options meant for mount(8) or systemd are dropped,
//! `idmap=SPEC` and `threads=N` become `--idmap`/`--threads`, and the rest
//! are `idfuse mount -o` options.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

use anyhow::{bail, Context as _};

/// The names mount(8) looks for: `mount.fuse.idfuse` (`-t fuse.idfuse`)
/// and `mount.idfuse` (`-t idfuse`).
pub fn invoked_as_helper(argv0: &OsStr) -> bool {
    let name = std::path::Path::new(argv0)
        .file_name()
        .unwrap_or_default()
        .as_bytes();
    name == b"mount.fuse.idfuse" || name == b"mount.idfuse"
}

/// Options that mean something to mount(8), fstab or systemd only.
fn ignored(key: &str) -> bool {
    matches!(
        key,
        "defaults"
            | "auto"
            | "noauto"
            | "nofail"
            | "_netdev"
            | "user"
            | "nouser"
            | "users"
            | "owner"
            | "group"
            | "comment"
    ) || key.starts_with("x-")
}

/// One range of a map spec (`u:0:100000:65536`), which can follow
/// `idmap=…` as its own comma-separated item.
fn is_map_range(item: &str) -> bool {
    let mut parts = item.split(':');
    matches!(parts.next(), Some("u" | "g" | "b"))
        && parts.clone().count() == 3
        && parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// What mount(8) asked for, as an `idfuse mount` command line.
#[derive(Debug, PartialEq)]
pub struct Translated {
    pub args: Vec<OsString>,
    /// `-f`: mount(8) only wants to know it would work.
    pub fake: bool,
    pub verbose: bool,
}

pub fn translate(argv: Vec<OsString>) -> anyhow::Result<Translated> {
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let (mut fake, mut verbose) = (false, false);
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        let bytes = arg.as_bytes();
        if bytes.first() != Some(&b'-') || bytes.len() == 1 {
            positional.push(arg);
            continue;
        }
        // Short flags may be bundled (`-nv`); -o, -t and -N take a value,
        // attached or as the next argument.
        let flags = &bytes[1..];
        for (i, flag) in flags.iter().enumerate() {
            match flag {
                b's' | b'n' => {}
                b'f' => fake = true,
                b'v' => verbose = true,
                b'o' | b't' | b'N' => {
                    let value = if i + 1 < flags.len() {
                        OsStr::from_bytes(&flags[i + 1..]).to_os_string()
                    } else {
                        it.next().with_context(|| {
                            format!("mount.fuse.idfuse: -{} needs a value", *flag as char)
                        })?
                    };
                    match flag {
                        b'o' => options.push(value.to_string_lossy().into_owned()),
                        b'N' => bail!(
                            "mount.fuse.idfuse: -N (mount in another namespace) is not supported; run `nsenter -m -t PID mount …` instead"
                        ),
                        _ => {} // -t fuse.idfuse: we know.
                    }
                    break;
                }
                other => bail!(
                    "mount.fuse.idfuse: unknown flag -{}; mount(8) passes only -s, -f, -n, -v, -o and -t",
                    *other as char
                ),
            }
        }
    }
    let [source, mountpoint]: [OsString; 2] = positional.try_into().map_err(|p: Vec<_>| {
        anyhow::anyhow!(
            "mount.fuse.idfuse: expected SOURCE MOUNTPOINT, got {} argument(s); SOURCE is memfs or passthrough:DIR, e.g. `mount -t fuse.idfuse passthrough:/srv/data /mnt/view`",
            p.len()
        )
    })?;
    let source_text = source.to_string_lossy().into_owned();
    let mut args: Vec<OsString> = vec!["mount".into()];
    if source_text == "memfs" {
        args.push("memfs".into());
    } else if let Some(dir) = source.as_bytes().strip_prefix(b"passthrough:") {
        if dir.is_empty() {
            bail!("mount.fuse.idfuse: `passthrough:` needs the directory to mirror, e.g. passthrough:/srv/data");
        }
        args.push("passthrough".into());
        args.push(OsStr::from_bytes(dir).into());
    } else if source_text == "overlay" {
        // `overlay` takes its layers as options (lowerdir=…), passed on
        // with -o, once `idfuse mount overlay` exists.
        if !crate::mount_knows("overlay") {
            bail!("mount.fuse.idfuse: the overlay filesystem is not part of this idfuse yet; SOURCE can be memfs or passthrough:DIR");
        }
        args.push("overlay".into());
    } else {
        bail!("mount.fuse.idfuse: unknown SOURCE `{source_text}`; use memfs or passthrough:DIR, e.g. `mount -t fuse.idfuse passthrough:/srv/data /mnt/view`");
    }
    args.push(mountpoint);

    let mut idmap: Option<String> = None;
    let mut rest: Vec<String> = Vec::new();
    let mut in_idmap = false;
    for item in options.iter().flat_map(|o| o.split(',')).map(str::trim) {
        if item.is_empty() {
            continue;
        }
        if in_idmap && is_map_range(item) {
            if let Some(m) = idmap.as_mut() {
                m.push(' ');
                m.push_str(item);
            }
            continue;
        }
        in_idmap = false;
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (item, None),
        };
        match (key, value) {
            ("idmap", Some(v)) if !v.is_empty() => {
                idmap = Some(v.to_string());
                in_idmap = true;
            }
            ("idmap", _) => bail!("mount option `idmap` needs a map, e.g. idmap=b:0:100000:65536"),
            ("stack", None) => args.push("--stack".into()),
            ("threads", Some(v)) => {
                args.push("--threads".into());
                args.push(v.into());
            }
            _ if ignored(key) => {}
            _ => rest.push(item.to_string()),
        }
    }
    // The source shows in /proc/mounts as mount(8) and fstab wrote it, so
    // `mount -a` and findmnt recognise the line as mounted.
    if !rest.iter().any(|o| o.starts_with("fsname=")) && !source_text.contains(',') {
        rest.push(format!("fsname={source_text}"));
    }
    if let Some(map) = idmap {
        args.push("--idmap".into());
        args.push(map.into());
    }
    if !rest.is_empty() {
        args.push("-o".into());
        args.push(rest.join(",").into());
    }
    Ok(Translated {
        args,
        fake,
        verbose,
    })
}

pub fn run(argv: Vec<OsString>) -> anyhow::Result<ExitCode> {
    let t = translate(argv)?;
    if t.verbose || t.fake {
        let shown: Vec<_> = t.args.iter().map(|a| a.to_string_lossy()).collect();
        eprintln!("mount.fuse.idfuse: idfuse {}", shown.join(" "));
    }
    if t.fake {
        return Ok(ExitCode::SUCCESS);
    }
    crate::run_args(t.args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn line(v: &[&str]) -> String {
        let t = translate(args(v)).unwrap();
        t.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn sources_become_subcommands() {
        assert_eq!(line(&["memfs", "/m"]), "mount memfs /m -o fsname=memfs");
        assert_eq!(
            line(&["passthrough:/srv/d", "/m", "-o", "rw"]),
            "mount passthrough /srv/d /m -o rw,fsname=passthrough:/srv/d"
        );
    }

    #[test]
    fn mount_and_systemd_options_are_dropped() {
        assert_eq!(
            line(&[
                "memfs",
                "/m",
                "-o",
                "defaults,_netdev,nofail,noauto,x-systemd.automount,x-systemd.idle-timeout=5,ro"
            ]),
            "mount memfs /m -o ro,fsname=memfs"
        );
    }

    #[test]
    fn idmap_with_several_ranges_and_threads() {
        assert_eq!(
            line(&[
                "memfs",
                "/m",
                "-n",
                "-o",
                "idmap=u:0:1000:1,g:0:2000:1,threads=2,fsname=x"
            ]),
            "mount memfs /m --threads 2 --idmap u:0:1000:1 g:0:2000:1 -o fsname=x"
        );
        assert_eq!(
            line(&[
                "memfs",
                "/m",
                "-oidmap=b:0:100000:65536",
                "-t",
                "fuse.idfuse"
            ]),
            "mount memfs /m --idmap b:0:100000:65536 -o fsname=memfs"
        );
    }

    #[test]
    fn bad_calls_say_what_to_do() {
        for (argv, want) in [
            (&["nosuch", "/m"][..], "memfs or passthrough:DIR"),
            (&["passthrough:", "/m"][..], "needs the directory"),
            (&["memfs"][..], "expected SOURCE MOUNTPOINT"),
            (&["memfs", "/m", "-o", "idmap="][..], "needs a map"),
        ] {
            let err = translate(args(argv)).unwrap_err().to_string();
            assert!(err.contains(want), "{argv:?}: {err}");
        }
    }

    #[test]
    fn overlay_once_it_exists() {
        let t = translate(args(&["overlay", "/m", "-o", "lowerdir=/a:/b"]));
        if crate::mount_knows("overlay") {
            assert_eq!(
                line(&["overlay", "/m", "-o", "lowerdir=/a:/b"]),
                "mount overlay /m -o lowerdir=/a:/b,fsname=overlay"
            );
            // One layer per option, as kernel overlayfs 6.8+ takes them.
            assert_eq!(
                line(&["overlay", "/m", "-o", "lowerdir+=/a:b,lowerdir+=/c"]),
                "mount overlay /m -o lowerdir+=/a:b,lowerdir+=/c,fsname=overlay"
            );
        } else {
            let err = t.unwrap_err().to_string();
            assert!(err.contains("not part of this idfuse yet"), "{err}");
        }
    }

    #[test]
    fn fake_mount_is_noticed() {
        assert!(translate(args(&["memfs", "/m", "-fv"])).unwrap().fake);
    }
}
