//! Kernel file handles (`name_to_handle_at`/`open_by_handle_at`): an inode
//! held by its handle costs a few dozen bytes instead of an open fd, so the
//! mirror can cache more inodes than the open-file limit allows.
//!
//! Security: `open_by_handle_at` opens *any* inode of the filesystem behind
//! its mount fd, inside SOURCE or not, with no path walk and no permission
//! check on the way. Every [`FileHandle`] therefore comes from our own
//! `name_to_handle_at` on an fd the daemon resolved itself below SOURCE
//! (single names, no symlinks, no `..`); there is no way to build one from
//! bytes, and handles never come from, nor go to, the kernel or the client.
//! Decoding needs CAP_DAC_READ_SEARCH in the initial user namespace (newer
//! kernels allow directories only in a user namespace), so every mount and
//! kind of inode is tried once before handles are used for it.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, RwLock};

use rustix::fs::AtFlags;
use rustix::io::Errno;

/// The largest handle the kernel hands out (`MAX_HANDLE_SZ`).
const MAX_HANDLE: usize = 128;

/// `struct file_handle` with room for the largest handle.
#[repr(C)]
struct RawHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; MAX_HANDLE],
}

/// A backing inode's file handle and the mount it was taken on.
#[derive(Debug)]
pub(super) struct FileHandle {
    mnt_id: u64,
    typ: i32,
    bytes: Box<[u8]>,
}

impl FileHandle {
    /// The handle of the inode `fd` refers to (an fd the daemon opened
    /// below SOURCE itself; see the module comment).
    pub(super) fn of(fd: BorrowedFd<'_>) -> Result<Self, Errno> {
        let mut raw = RawHandle {
            handle_bytes: MAX_HANDLE as u32,
            handle_type: 0,
            f_handle: [0; MAX_HANDLE],
        };
        let mut mnt_id: libc::c_int = 0;
        // SAFETY: `raw` is a `struct file_handle` whose `handle_bytes` says
        // how much room follows it; the path is a NUL-terminated empty
        // string used with AT_EMPTY_PATH on a valid fd; `mnt_id` is a
        // writable int. All outlive the call.
        let r = unsafe {
            libc::name_to_handle_at(
                fd.as_raw_fd(),
                c"".as_ptr(),
                (&raw mut raw).cast::<libc::file_handle>(),
                &mut mnt_id,
                libc::AT_EMPTY_PATH,
            )
        };
        if r != 0 {
            return Err(Errno::from_raw_os_error(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ));
        }
        let len = (raw.handle_bytes as usize).min(MAX_HANDLE);
        Ok(Self {
            mnt_id: u64::try_from(mnt_id).map_err(|_| Errno::INVAL)?,
            typ: raw.handle_type,
            bytes: raw.f_handle[..len].into(),
        })
    }

    /// True when both handles name the same inode (on one filesystem: the
    /// caller compares `st_dev` first). The mount does not matter: a bind
    /// mount shows the same inode under another mount id.
    pub(super) fn same_inode(&self, other: &Self) -> bool {
        self.typ == other.typ && self.bytes == other.bytes
    }

    /// Open the inode as `O_PATH | O_NOFOLLOW` through `mount_fd`, an fd
    /// on the mount the handle was taken on.
    fn open(&self, mount_fd: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
        let mut raw = RawHandle {
            handle_bytes: self.bytes.len() as u32,
            handle_type: self.typ,
            f_handle: [0; MAX_HANDLE],
        };
        raw.f_handle
            .get_mut(..self.bytes.len())
            .ok_or(Errno::INVAL)?
            .copy_from_slice(&self.bytes);
        // SAFETY: `raw` is a valid `struct file_handle` of `handle_bytes`
        // bytes, alive for the call; `mount_fd` is a valid fd.
        let fd = unsafe {
            libc::open_by_handle_at(
                mount_fd.as_raw_fd(),
                (&raw mut raw).cast::<libc::file_handle>(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(Errno::from_raw_os_error(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ));
        }
        // SAFETY: open_by_handle_at returned a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Whether handles of one kind of inode decode on one mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Works {
    Untried,
    Yes,
    No,
}

struct Mount {
    /// A directory of the mount, opened for reading (open_by_handle_at
    /// refuses `O_PATH` fds).
    fd: OwnedFd,
    dirs: Works,
    others: Works,
}

/// One fd per backing mount that holds handles, to decode them with.
#[derive(Default)]
pub(super) struct Mounts {
    by_id: RwLock<HashMap<u64, Mount>>,
}

fn is_dir(st: &rustix::fs::Statx) -> bool {
    u32::from(st.stx_mode) & libc::S_IFMT == libc::S_IFDIR
}

impl Mounts {
    /// Open `h`'s inode as `O_PATH`.
    pub(super) fn open(&self, h: &FileHandle) -> Result<OwnedFd, Errno> {
        let mounts = self.by_id.read().map_err(|_| Errno::IO)?;
        let m = mounts.get(&h.mnt_id).ok_or(Errno::STALE)?;
        h.open(m.fd.as_fd())
    }

    /// The handle to hold the inode `fd` (with attributes `st`, found in
    /// the directory `parent`) by, or None where handles do not work for
    /// it: its filesystem has none, the daemon may not decode them, or its
    /// mount has no directory the daemon knows. `reopen` opens an `O_PATH`
    /// fd of a directory for reading.
    pub(super) fn handle_for(
        &self,
        fd: BorrowedFd<'_>,
        st: &rustix::fs::Statx,
        parent: BorrowedFd<'_>,
        reopen: impl Fn(BorrowedFd<'_>) -> Result<OwnedFd, Errno>,
    ) -> Option<FileHandle> {
        let h = FileHandle::of(fd).ok()?;
        let dir = is_dir(st);
        let works = {
            let mounts = self.by_id.read().ok()?;
            mounts
                .get(&h.mnt_id)
                .map(|m| if dir { m.dirs } else { m.others })
        };
        match works {
            Some(Works::Yes) => return Some(h),
            Some(Works::No) => return None,
            Some(Works::Untried) => {}
            None => {
                // A mount not seen yet: this directory, or the parent it
                // was found in, if that is on the same mount.
                let mount_fd = if dir {
                    reopen(fd).ok()?
                } else {
                    let pst = rustix::fs::statx(
                        parent,
                        "",
                        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
                        rustix::fs::StatxFlags::MNT_ID,
                    )
                    .ok()?;
                    if pst.stx_mnt_id != h.mnt_id {
                        return None;
                    }
                    reopen(parent).ok()?
                };
                let mut mounts = self.by_id.write().ok()?;
                mounts.entry(h.mnt_id).or_insert(Mount {
                    fd: mount_fd,
                    dirs: Works::Untried,
                    others: Works::Untried,
                });
            }
        }
        // Try this kind on this mount once: decode and compare.
        let ok = self.open(&h).is_ok_and(|back| {
            crate::backing::statx_fd(back.as_fd()).is_ok_and(|b| {
                (b.stx_dev_major, b.stx_dev_minor, b.stx_ino)
                    == (st.stx_dev_major, st.stx_dev_minor, st.stx_ino)
            })
        });
        let mut mounts = self.by_id.write().ok()?;
        let m = mounts.get_mut(&h.mnt_id)?;
        let w = if dir { &mut m.dirs } else { &mut m.others };
        if *w == Works::Untried {
            *w = if ok { Works::Yes } else { Works::No };
            if !ok {
                tracing::warn!(
                    "file handles of {} on mount {} cannot be opened (it needs CAP_DAC_READ_SEARCH); holding them by fds",
                    if dir { "directories" } else { "non-directories" },
                    h.mnt_id
                );
            }
        }
        (*w == Works::Yes).then_some(h)
    }

    /// Try handles on the source's root `root` (an `O_PATH` fd) with
    /// `root_dir`, the same directory opened for reading; on success the
    /// root's mount is known and its directories work.
    pub(super) fn probe(&self, root: BorrowedFd<'_>, root_dir: &OwnedFd) -> Result<(), Errno> {
        let h = FileHandle::of(root)?;
        let back = h.open(root_dir.as_fd())?;
        let a = crate::backing::statx_fd(root)?;
        let b = crate::backing::statx_fd(back.as_fd())?;
        if (a.stx_dev_major, a.stx_dev_minor, a.stx_ino)
            != (b.stx_dev_major, b.stx_dev_minor, b.stx_ino)
        {
            return Err(Errno::STALE);
        }
        let fd = root_dir.try_clone().map_err(|_| Errno::MFILE)?;
        self.by_id.write().map_err(|_| Errno::IO)?.insert(
            h.mnt_id,
            Mount {
                fd,
                dirs: Works::Yes,
                others: Works::Untried,
            },
        );
        Ok(())
    }
}

/// A few fds of handle-held inodes, kept open between operations (a
/// directory is used again and again to look up its entries), most recent
/// first.
pub(super) struct FdCache {
    fds: Mutex<Vec<(u64, Arc<OwnedFd>)>>,
    cap: usize,
}

impl FdCache {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            fds: Mutex::new(Vec::with_capacity(cap)),
            cap,
        }
    }

    pub(super) fn get(&self, node: u64) -> Option<Arc<OwnedFd>> {
        let mut fds = self.fds.lock().ok()?;
        let at = fds.iter().position(|(n, _)| *n == node)?;
        let e = fds.remove(at);
        let fd = e.1.clone();
        fds.insert(0, e);
        Some(fd)
    }

    pub(super) fn put(&self, node: u64, fd: Arc<OwnedFd>) {
        if self.cap == 0 {
            return;
        }
        if let Ok(mut fds) = self.fds.lock() {
            fds.retain(|(n, _)| *n != node);
            fds.truncate(self.cap - 1);
            fds.insert(0, (node, fd));
        }
    }

    /// The node was forgotten: close its fd (once no request uses it).
    pub(super) fn remove(&self, node: u64) {
        if let Ok(mut fds) = self.fds.lock() {
            fds.retain(|(n, _)| *n != node);
        }
    }
}
