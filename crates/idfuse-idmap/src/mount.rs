//! Idmapping mounts: clone a tree detached (`open_tree`), give it an idmap
//! (`mount_setattr(MOUNT_ATTR_IDMAP)`, or both at once with
//! `open_tree_attr`), attach it (`move_mount`). Failures are explained by
//! the probe, never returned as a bare errno.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::io::Errno;

use crate::probe::explain;
use crate::{Error, UserNamespace};

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: u32 = 1;
const SYS_OPEN_TREE_ATTR: libc::c_long = 467;

/// `struct mount_attr` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Options for [`idmap_mount`].
#[derive(Debug, Clone, Copy, Default)]
pub struct IdmapOptions {
    /// Include submounts (`AT_RECURSIVE`).
    pub recursive: bool,
}

fn errno() -> Errno {
    Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO)
}

/// A detached copy of the mount tree at `path` (`open_tree(OPEN_TREE_CLONE)`).
pub fn clone_tree(path: &Path, recursive: bool) -> Result<OwnedFd, Error> {
    let mut flags = rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
        | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= rustix::mount::OpenTreeFlags::AT_RECURSIVE;
    }
    rustix::mount::open_tree(rustix::fs::CWD, path, flags).map_err(|e| Error::Mount {
        step: "open_tree",
        path: path.to_path_buf(),
        why: match e {
            Errno::NOENT => "it does not exist".into(),
            Errno::PERM => "cloning mounts needs CAP_SYS_ADMIN in the user namespace that owns the mount namespace".into(),
            Errno::INVAL => "it cannot be cloned (an unbindable mount?)".into(),
            e => e.to_string(),
        },
    })
}

/// Give the detached mount `mount_fd` (from [`clone_tree`] or `fsmount`)
/// the idmap of `ns`. On failure the error says why, in words.
pub fn set_idmap(
    mount_fd: BorrowedFd<'_>,
    ns: &UserNamespace,
    recursive: bool,
) -> Result<(), Error> {
    set_idmap_of(mount_fd, ns, recursive, None)
}

/// [`set_idmap`] on a clone of `source`, whose mountinfo explains failures.
pub(crate) fn set_idmap_of(
    mount_fd: BorrowedFd<'_>,
    ns: &UserNamespace,
    recursive: bool,
    source: Option<&Path>,
) -> Result<(), Error> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: ns.as_fd().as_raw_fd() as u64,
    };
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: mount_setattr reads `size_of::<MountAttr>()` bytes from a live
    // value; the path is a static empty C string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount_fd.as_raw_fd(),
            c"".as_ptr(),
            flags as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        let e = errno();
        return Err(Error::Idmap(explain(mount_fd, e, source)));
    }
    Ok(())
}

/// `open_tree_attr(2)` (6.15+): clone and idmap in one step; it may also
/// replace the idmap of an already idmapped source. `None` when the kernel
/// lacks the syscall.
fn open_tree_attr(
    source: &Path,
    ns: &UserNamespace,
    recursive: bool,
) -> Option<Result<OwnedFd, Errno>> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: ns.as_fd().as_raw_fd() as u64,
    };
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as u32;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    let path = std::ffi::CString::new(source.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: valid C string and a live `mount_attr` of the size passed.
    let r = unsafe {
        libc::syscall(
            SYS_OPEN_TREE_ATTR,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        let e = errno();
        if e == Errno::NOSYS {
            return None;
        }
        return Some(Err(e));
    }
    // SAFETY: the syscall returned a new fd that nothing else owns.
    Some(Ok(unsafe { OwnedFd::from_raw_fd(r as i32) }))
}

/// Attach the detached mount at `target`.
pub fn attach(mount_fd: BorrowedFd<'_>, target: &Path) -> Result<MountGuard, Error> {
    match std::fs::metadata(target) {
        Ok(m) if m.is_dir() || m.is_file() => {}
        Ok(_) => {
            return Err(Error::Mount {
                step: "move_mount",
                path: target.to_path_buf(),
                why: "the target must be a directory".into(),
            })
        }
        Err(_) => {
            return Err(Error::Mount {
                step: "move_mount",
                path: target.to_path_buf(),
                why: "the target does not exist; create the directory first".into(),
            })
        }
    }
    rustix::mount::move_mount(
        mount_fd,
        "",
        rustix::fs::CWD,
        target,
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| Error::Mount {
        step: "move_mount",
        path: target.to_path_buf(),
        why: e.to_string(),
    })?;
    Ok(MountGuard {
        target: target.to_path_buf(),
        keep: false,
    })
}

/// Make an idmapped view of `source` at `target`.
pub fn idmap_mount(
    source: &Path,
    target: &Path,
    ns: &UserNamespace,
    opts: IdmapOptions,
) -> Result<MountGuard, Error> {
    if !source.exists() {
        return Err(Error::Mount {
            step: "open_tree",
            path: source.to_path_buf(),
            why: "it does not exist".into(),
        });
    }
    if !target.is_dir() {
        return Err(Error::Mount {
            step: "move_mount",
            path: target.to_path_buf(),
            why: if target.exists() {
                "the target is not a directory".into()
            } else {
                "the target does not exist; create the directory first".into()
            },
        });
    }
    let tree = match open_tree_attr(source, ns, opts.recursive) {
        Some(Ok(fd)) => fd,
        // Explain with the probe on a plain clone.
        Some(Err(_)) | None => {
            let fd = clone_tree(source, opts.recursive)?;
            set_idmap_of(fd.as_fd(), ns, opts.recursive, Some(source))?;
            fd
        }
    };
    attach(tree.as_fd(), target)
}

/// An attached mount that is detached (`umount2(MNT_DETACH)`) on drop.
#[derive(Debug)]
pub struct MountGuard {
    target: PathBuf,
    keep: bool,
}

impl MountGuard {
    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Leave it mounted.
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        self.target.clone()
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(e) =
                rustix::mount::unmount(&self.target, rustix::mount::UnmountFlags::DETACH)
            {
                tracing::warn!("detaching {}: {e}", self.target.display());
            }
        }
    }
}
