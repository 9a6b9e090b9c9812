//! Creating inodes as their owner: for the duration of one create, the
//! worker thread's fsuid/fsgid become the kernel's `Owner`, its
//! supplementary groups hold only the parent's gid from `FUSE_EXT_GROUPS`,
//! and its umask is the caller's. All three are per-thread (raw syscalls,
//! and a private fs_struct per worker), so other workers are unaffected.

use std::cell::Cell;

use idfuse::{Errno, Owner};
use rustix::process::Gid;

thread_local! {
    static PRIVATE_FS: Cell<bool> = const { Cell::new(false) };
}

/// Give this thread its own umask (and cwd) once: `unshare(CLONE_FS)`.
fn private_fs() -> Result<(), Errno> {
    if PRIVATE_FS.with(Cell::get) {
        return Ok(());
    }
    // SAFETY: unshare(CLONE_FS) affects only the calling thread.
    if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
        return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO));
    }
    PRIVATE_FS.with(|c| c.set(true));
    Ok(())
}

fn setfsuid(uid: u32) -> u32 {
    // SAFETY: setfsuid changes only this thread's fsuid; it returns the old one.
    unsafe { libc::syscall(libc::SYS_setfsuid, uid) as u32 }
}

fn setfsgid(gid: u32) -> u32 {
    // SAFETY: as setfsuid, for the fsgid.
    unsafe { libc::syscall(libc::SYS_setfsgid, gid) as u32 }
}

/// Restores the thread's credentials and umask on drop.
pub(super) struct AsOwner {
    uid: u32,
    gid: u32,
    groups: Vec<Gid>,
    umask: rustix::fs::Mode,
}

impl AsOwner {
    pub(super) fn new(owner: &Owner, umask: u32) -> Result<Self, Errno> {
        private_fs()?;
        let groups = rustix::process::getgroups()?;
        let supp: Vec<Gid> = owner.supp_group.map(Gid::from_raw).into_iter().collect();
        match rustix::thread::set_thread_groups(&supp) {
            Ok(()) => {}
            // In a user namespace whose setgroups is denied (unshare -r),
            // the groups cannot change; the create proceeds with the fsuid
            // and fsgid alone.
            Err(Errno::PERM) => {}
            Err(e) => return Err(e),
        }
        let gid = setfsgid(owner.gid);
        let uid = setfsuid(owner.uid);
        let guard = Self {
            uid,
            gid,
            groups,
            umask: rustix::process::umask(rustix::fs::Mode::from_raw_mode(umask & 0o777)),
        };
        // setfsuid reports no error: read back what took effect.
        if setfsuid(u32::MAX) != owner.uid || setfsgid(u32::MAX) != owner.gid {
            // The id has no mapping in our user namespace.
            return Err(Errno::OVERFLOW);
        }
        Ok(guard)
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        setfsuid(self.uid);
        setfsgid(self.gid);
        let _ = rustix::thread::set_thread_groups(&self.groups);
        rustix::process::umask(self.umask);
    }
}
