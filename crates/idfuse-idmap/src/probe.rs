//! Why a mount can or cannot be idmapped, in words: the kernel, the
//! filesystem type, the FUSE server's opt-in, privilege, the namespace.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use rustix::io::Errno;

use crate::{clone_tree, set_idmap, Error, IdMap, UserNamespace};

const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Filesystems whose type allows idmapped mounts in Linux 6.18
/// (FS_ALLOW_IDMAP), FUSE only when the server opts in. Not `overlay`:
/// kernel overlayfs takes idmapped mounts as its layers, but an overlay
/// mount itself cannot be idmapped (EINVAL on 6.18 with a fresh namespace).
const IDMAP_TYPES: &[&str] = &[
    "ext4",
    "ext2",
    "ext3",
    "xfs",
    "btrfs",
    "tmpfs",
    "vfat",
    "msdos",
    "f2fs",
    "erofs",
    "squashfs",
    "ceph",
    "bcachefs",
    "hugetlbfs",
    "gfs2",
    "virtiofs",
    "ntfs3",
    "zfs",
    "fuse",
    "fuseblk",
];

/// What we know of a mount, from /proc/self/mountinfo.
#[derive(Debug, Clone, Default)]
pub struct MountInfo {
    /// Mount point.
    pub mount_point: PathBuf,
    /// Filesystem type, e.g. `ext4` or `fuse.bindfs`.
    pub fstype: String,
    /// Per-mount options (`idmapped` shows here).
    pub mount_options: String,
    /// Superblock options (`default_permissions` shows here for FUSE).
    pub super_options: String,
    /// The mount's source.
    pub source: String,
}

impl MountInfo {
    /// The mount containing `path`.
    pub fn of(path: &Path) -> Option<MountInfo> {
        let path = std::fs::canonicalize(path).ok()?;
        let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let mut best: Option<MountInfo> = None;
        for line in text.lines() {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 6 || r.len() < 3 {
                continue;
            }
            let mp = PathBuf::from(unescape(l[4]));
            if path.starts_with(&mp)
                && best
                    .as_ref()
                    .is_none_or(|b| mp.as_os_str().len() >= b.mount_point.as_os_str().len())
            {
                best = Some(MountInfo {
                    mount_point: mp,
                    fstype: r[0].to_string(),
                    mount_options: l[5].to_string(),
                    super_options: r[2].to_string(),
                    source: unescape(r[1]),
                });
            }
        }
        best
    }

    fn is_fuse(&self) -> bool {
        self.fstype == "fuse"
            || self.fstype.starts_with("fuse.")
            || self.fstype == "fuseblk"
            || self.fstype.starts_with("fuseblk.")
    }

    /// The FUSE subtype, e.g. `bindfs` for `fuse.bindfs`.
    pub fn subtype(&self) -> Option<&str> {
        self.fstype.split_once('.').map(|(_, s)| s)
    }

    fn has_super_option(&self, o: &str) -> bool {
        self.super_options.split(',').any(|x| x == o)
    }

    fn is_idmapped(&self) -> bool {
        self.mount_options.split(',').any(|x| x == "idmapped")
    }
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The verdict of [`can_idmap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// An idmapped mount of it can be made.
    Supported,
    /// It cannot, and why.
    Unsupported(Reason),
}

/// Why a mount cannot be idmapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The kernel predates idmapped mounts (5.12), or FUSE idmapped mounts (6.12).
    KernelTooOld {
        /// `uname -r`
        release: String,
        /// the version needed
        need: &'static str,
        /// for what
        what: &'static str,
    },
    /// The filesystem type never allows idmapped mounts.
    FsUnsupported {
        /// the type
        fstype: String,
        /// `uname -r`
        release: String,
    },
    /// A FUSE server that did not opt in.
    FuseNotOptedIn {
        /// `fuse.SUBTYPE`
        fstype: String,
        /// where it is mounted and from what, when known
        place: String,
        /// whether the mount has `default_permissions`
        default_permissions: bool,
    },
    /// The caller lacks privilege.
    NoPrivilege {
        /// what is missing
        what: String,
    },
    /// The idmap's namespace is the initial one or the filesystem's own.
    WrongNamespace {
        /// which
        which: &'static str,
    },
    /// The mount is already idmapped.
    AlreadyIdmapped {
        /// the mount point
        mount_point: PathBuf,
    },
    /// The mount has writers (mount_setattr must hold them off).
    Busy,
    /// Something else; the errno and context.
    Other {
        /// what happened
        what: String,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::KernelTooOld { release, need, what } => write!(
                f,
                "kernel {release} lacks {what} (need Linux {need} or newer); upgrade the kernel"
            ),
            Reason::FsUnsupported { fstype, release } if fstype == "overlay" => write!(
                f,
                "kernel overlayfs (kernel {release}) cannot be idmapped itself, only its layers can: mount it over idmapped lower and upper directories, or use `idfuse mount overlay … --idmap SPEC`"
            ),
            Reason::FsUnsupported { fstype, release } => write!(
                f,
                "the filesystem type `{fstype}` does not support idmapped mounts on kernel {release}; use one that does (ext4, xfs, btrfs, tmpfs, or a FUSE server that opts in)"
            ),
            Reason::FuseNotOptedIn { fstype, place, default_permissions } => {
                let sub = match fstype.split_once('.') {
                    Some((_, s)) => format!("`{s}` (type {fstype}{place})"),
                    None => format!("(type {fstype}, no subtype{place})"),
                };
                if *default_permissions {
                    write!(f, "the FUSE server {sub} did not opt in to idmapped mounts: it must answer INIT with FUSE_ALLOW_IDMAP (Linux 6.12+). The mount has default_permissions, so the server itself must change, or be replaced by one that supports idmapped mounts (e.g. `idfuse mount passthrough`)")
                } else {
                    write!(f, "the FUSE server {sub} did not opt in to idmapped mounts: it must answer INIT with FUSE_ALLOW_IDMAP and be mounted with default_permissions (this mount lacks default_permissions). Remount with -o default_permissions and a server that sets FUSE_ALLOW_IDMAP (e.g. `idfuse mount passthrough`)")
                }
            }
            Reason::NoPrivilege { what } => write!(f, "permission denied: {what}"),
            Reason::WrongNamespace { which } => write!(f, "the idmap's user namespace is {which}, which the kernel refuses; use a map that creates a new namespace, e.g. b:0:100000:65536"),
            Reason::AlreadyIdmapped { mount_point } => write!(f, "{} is already an idmapped mount; its idmap cannot be changed in place. Idmap the original mount instead, or use a kernel with open_tree_attr (6.15+), which idfuse uses to replace an idmap on a fresh clone", mount_point.display()),
            Reason::Busy => write!(f, "the mount has active writers, which mount_setattr must hold off; close files open for writing on it and retry"),
            Reason::Other { what } => f.write_str(what),
        }
    }
}

/// The running kernel's release and (major, minor).
pub fn kernel_version() -> (String, (u32, u32)) {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    (release.clone(), parse_release(&release))
}

/// "6.18.44-foo" -> (6, 18).
pub fn parse_release(release: &str) -> (u32, u32) {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let major = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let minor = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (major, minor)
}

/// Why the kernel would refuse to idmap a mount of type `fstype` on a
/// kernel of `version`, before trying. `None`: the version is not the
/// obstacle.
pub fn version_obstacle(release: &str, fuse: bool) -> Option<Reason> {
    let v = parse_release(release);
    if v < (5, 12) {
        return Some(Reason::KernelTooOld {
            release: release.to_string(),
            need: "5.12",
            what: "idmapped mounts",
        });
    }
    if fuse && v < (6, 12) {
        return Some(Reason::KernelTooOld {
            release: release.to_string(),
            need: "6.12",
            what: "idmapped FUSE mounts",
        });
    }
    None
}

/// Explain a failed mount_setattr(MOUNT_ATTR_IDMAP) on `mount_fd`.
pub(crate) fn explain(mount_fd: BorrowedFd<'_>, e: Errno, source: Option<&Path>) -> Reason {
    let (release, _) = kernel_version();
    let magic = rustix::fs::fstatfs(mount_fd).map(|s| s.f_type).unwrap_or(0);
    let fuse = magic == FUSE_SUPER_MAGIC;
    // A detached clone is in no mountinfo: use its source's, or name the
    // type from the superblock magic.
    let info = match source.and_then(MountInfo::of) {
        Some(i) => Some(i),
        None => magic_name(magic).map(|n| MountInfo {
            fstype: n.to_string(),
            ..MountInfo::default()
        }),
    };
    reason_for(e, &release, fuse, info.as_ref())
}

/// Names of common superblock magics (linux/magic.h).
fn magic_name(magic: i64) -> Option<&'static str> {
    Some(match magic {
        0x9fa0 => "proc",
        0x6265_6572 => "sysfs",
        0x1cd1 => "devpts",
        0x0102_1994 => "tmpfs",
        0xef53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x794c_7630 => "overlay",
        0x6573_5546 => "fuse",
        0x2702_1997 => "9p",
        0x6969 => "nfs",
        0xff53_4d42 => "cifs",
        0x6367_7270 => "cgroup2",
        0x7372_6370 => "securityfs",
        0x6462_6720 => "debugfs",
        _ => return None,
    })
}

/// The reason for errno `e` given what we know of the mount. Crate-private:
/// its errno is rustix's, which this crate does not re-export.
pub(crate) fn reason_for(e: Errno, release: &str, fuse: bool, info: Option<&MountInfo>) -> Reason {
    let fuse = fuse || info.is_some_and(MountInfo::is_fuse);
    match e {
        Errno::NOSYS => version_obstacle(release, fuse).unwrap_or(Reason::KernelTooOld {
            release: release.to_string(),
            need: "5.12",
            what: "mount_setattr(2)",
        }),
        Errno::INVAL => {
            if let Some(r) = version_obstacle(release, fuse) {
                return r;
            }
            if fuse {
                return Reason::FuseNotOptedIn {
                    fstype: info.map_or_else(|| "fuse".to_string(), |i| i.fstype.clone()),
                    place: info
                        .filter(|i| !i.mount_point.as_os_str().is_empty())
                        .map(|i| format!(", mounted at {} from {}", i.mount_point.display(), i.source))
                        .unwrap_or_default(),
                    default_permissions: info.is_some_and(|i| i.has_super_option("default_permissions")),
                };
            }
            match info {
                Some(i) if !IDMAP_TYPES.contains(&i.fstype.as_str()) => Reason::FsUnsupported {
                    fstype: i.fstype.clone(),
                    release: release.to_string(),
                },
                _ => Reason::WrongNamespace {
                    which: "the filesystem's own user namespace (or the mount is not a fresh detached clone)",
                },
            }
        }
        Errno::PERM => match info {
            Some(i) if i.is_idmapped() => Reason::AlreadyIdmapped {
                mount_point: i.mount_point.clone(),
            },
            _ => Reason::NoPrivilege {
                what: "idmapping needs CAP_SYS_ADMIN over the filesystem's user namespace and over the idmap's namespace (run as root, or mount the filesystem inside a user namespace you own); an idmap in the initial namespace is refused too".into(),
            },
        },
        Errno::BUSY => Reason::Busy,
        Errno::BADF => Reason::Other {
            what: "the user namespace file descriptor is not valid".into(),
        },
        e => Reason::Other {
            what: format!("mount_setattr(MOUNT_ATTR_IDMAP) failed: {e}"),
        },
    }
}

/// Can an idmapped mount of `path` be made? Tries for real on a detached
/// clone with a throwaway namespace, and discards both.
pub fn can_idmap(path: &Path) -> Verdict {
    let (release, _) = kernel_version();
    let info = MountInfo::of(path);
    if let Some(r) = version_obstacle(&release, info.as_ref().is_some_and(MountInfo::is_fuse)) {
        return Verdict::Unsupported(r);
    }
    if let Some(i) = &info {
        if !IDMAP_TYPES.contains(&i.fstype.as_str()) && !i.is_fuse() {
            return Verdict::Unsupported(Reason::FsUnsupported {
                fstype: i.fstype.clone(),
                release,
            });
        }
    }
    let tree = match clone_tree(path, false) {
        Ok(t) => t,
        Err(Error::Mount { why, .. }) if why.contains("CAP_SYS_ADMIN") => {
            return Verdict::Unsupported(Reason::NoPrivilege { what: why })
        }
        Err(e) => {
            return Verdict::Unsupported(Reason::Other {
                what: e.to_string(),
            })
        }
    };
    let map: IdMap = match "b:0:4294967293:1".parse() {
        Ok(m) => m,
        Err(e) => {
            return Verdict::Unsupported(Reason::Other {
                what: e.to_string(),
            })
        }
    };
    let ns = match UserNamespace::create(&map) {
        Ok(ns) => ns,
        Err(e) => {
            return Verdict::Unsupported(Reason::NoPrivilege {
                what: format!("cannot make a user namespace to test with: {e}"),
            })
        }
    };
    match set_idmap(tree.as_fd(), &ns, false) {
        Ok(()) => Verdict::Supported,
        Err(Error::Idmap(r)) => {
            // The probe ran on a clone of `path`; recompute with its mountinfo.
            Verdict::Unsupported(match r {
                Reason::NoPrivilege { .. }
                | Reason::FuseNotOptedIn { .. }
                | Reason::WrongNamespace { .. } => {
                    reason_for(errno_of(&r), &release, false, info.as_ref())
                }
                other => other,
            })
        }
        Err(e) => Verdict::Unsupported(Reason::Other {
            what: e.to_string(),
        }),
    }
}

fn errno_of(r: &Reason) -> Errno {
    match r {
        Reason::NoPrivilege { .. } => Errno::PERM,
        _ => Errno::INVAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mountinfo line's fields.
    fn info(
        mount_point: &str,
        fstype: &str,
        mount_options: &str,
        super_options: &str,
        source: &str,
    ) -> MountInfo {
        MountInfo {
            mount_point: mount_point.into(),
            fstype: fstype.into(),
            mount_options: mount_options.into(),
            super_options: super_options.into(),
            source: source.into(),
        }
    }

    #[test]
    fn old_kernels_are_named() {
        let r = version_obstacle("5.10.0-28-amd64", false)
            .unwrap()
            .to_string();
        assert!(r.contains("5.10.0-28-amd64") && r.contains("5.12"), "{r}");
        let r = version_obstacle("6.1.0-18-amd64", true)
            .unwrap()
            .to_string();
        assert!(
            r.contains("idmapped FUSE mounts") && r.contains("6.12"),
            "{r}"
        );
        assert!(version_obstacle("6.1.0", false).is_none());
        assert!(version_obstacle("6.18.44-x", true).is_none());
    }

    #[test]
    fn einval_on_fuse_blames_the_server() {
        let info = info(
            "/mnt",
            "fuse.bindfs",
            "rw",
            "rw,user_id=0,group_id=0",
            "/src",
        );
        let r = reason_for(Errno::INVAL, "6.18.0", false, Some(&info)).to_string();
        assert!(
            r.contains("bindfs")
                && r.contains("FUSE_ALLOW_IDMAP")
                && r.contains("lacks default_permissions"),
            "{r}"
        );
        let r = reason_for(Errno::INVAL, "6.6.0", false, Some(&info)).to_string();
        assert!(r.contains("6.12"), "{r}");
    }

    #[test]
    fn eperm_on_idmapped_mount_says_so() {
        let info = info("/mnt/v", "tmpfs", "rw,relatime,idmapped", "rw", "tmpfs");
        let r = reason_for(Errno::PERM, "6.18.0", false, Some(&info)).to_string();
        assert!(r.contains("already an idmapped mount"), "{r}");
    }

    #[test]
    fn einval_on_kernel_overlayfs_points_at_its_layers() {
        let info = info(
            "/merged",
            "overlay",
            "rw",
            "rw,lowerdir=/l,upperdir=/u,workdir=/w",
            "overlay",
        );
        let r = reason_for(Errno::INVAL, "6.18.0", false, Some(&info)).to_string();
        assert!(
            r.contains("only its layers can") && r.contains("idfuse mount overlay"),
            "{r}"
        );
    }
}
