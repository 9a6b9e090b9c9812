//! Creating inodes as their owner: for the duration of one create, the
//! worker thread's fsuid/fsgid become the kernel's `Owner`, its
//! supplementary groups hold only the parent's gid from `FUSE_EXT_GROUPS`,
//! and its umask is the caller's. All three are per-thread (raw syscalls,
//! and a private fs_struct per worker), so other workers are unaffected.
//!
//! Leaving fsuid 0 drops the file-system capabilities from the effective
//! set. CAP_FSETID, CAP_CHOWN and CAP_FOWNER stay dropped, so the backing
//! filesystem strips S_ISGID and assigns groups exactly as it would for the
//! caller. CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH come back (when the
//! daemon holds them): the kernel has already decided the caller may
//! create here, with all of the caller's groups, which the daemon does not
//! know; the backing filesystem must not decide again with fewer.

use std::cell::Cell;

use idfuse::{Errno, Owner};
use rustix::process::Gid;
use rustix::thread::{CapabilitySet, CapabilitySets};

thread_local! {
    static PRIVATE_FS: Cell<bool> = const { Cell::new(false) };
    static BASELINE: std::cell::RefCell<Option<Baseline>> = const { std::cell::RefCell::new(None) };
    /// The thread's umask as last set here. Only creates use it, and each
    /// sets its own, so it stays between creates: the next create by the
    /// same caller makes no umask call.
    static UMASK: Cell<Option<u32>> = const { Cell::new(None) };
    /// The capabilities the thread has right after switching to an fsuid,
    /// keyed by whether it is 0: leaving fsuid 0 clears the file-system
    /// ones, always the same from the same baseline. Read once.
    static SWITCHED_CAPS: Cell<Option<(bool, CapabilitySets)>> = const { Cell::new(None) };
    /// The last owner whose ids were seen to take effect (a mapping, once
    /// there, cannot change): the next switch to it skips the read-back.
    static VERIFIED: Cell<Option<(u32, u32)>> = const { Cell::new(None) };
}

/// Give this thread `umask` for the creates that follow (kept: see UMASK).
fn set_umask(umask: u32) {
    let want = umask & 0o777;
    if UMASK.with(Cell::get) != Some(want) {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(want));
        UMASK.with(|c| c.set(Some(want)));
    }
}

/// A worker thread's credentials between switches. They change only inside
/// an [`AsOwner`], which puts them back, so they are read once per thread
/// instead of on every create.
#[derive(Clone)]
struct Baseline {
    caps: CapabilitySets,
    groups: Vec<Gid>,
    fsuid: u32,
    fsgid: u32,
}

fn baseline() -> Result<Baseline, Errno> {
    if let Some(b) = BASELINE.with(|b| b.borrow().clone()) {
        return Ok(b);
    }
    let b = Baseline {
        caps: rustix::thread::capabilities(None)?,
        groups: rustix::process::getgroups()?,
        fsuid: setfsuid(u32::MAX),
        fsgid: setfsgid(u32::MAX),
    };
    BASELINE.with(|c| *c.borrow_mut() = Some(b.clone()));
    Ok(b)
}

/// Give this thread its own umask (and cwd) once: `unshare(CLONE_FS)`.
fn private_fs() -> Result<(), Errno> {
    if PRIVATE_FS.with(Cell::get) {
        return Ok(());
    }
    // SAFETY: CLONE_FS only detaches this thread's cwd/root/umask from the
    // other threads; no fd table or memory is shared differently afterwards.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }?;
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

/// The access-check capabilities given back while acting as an owner.
const ACCESS_CAPS: CapabilitySet =
    CapabilitySet::DAC_OVERRIDE.union(CapabilitySet::DAC_READ_SEARCH);

/// Acts as an `Owner` until dropped; restores the thread's fs ids, groups,
/// capabilities and umask.
pub(crate) struct AsOwner {
    uid: u32,
    gid: u32,
    groups: Option<Vec<Gid>>,
    caps: Option<CapabilitySets>,
    /// The fs ids were changed (not already the owner's).
    switched: bool,
}

impl AsOwner {
    /// Switch to `owner` with `umask` (already 0 when the kernel applied it).
    pub(crate) fn new(owner: &Owner, umask: u32) -> Result<Self, Errno> {
        private_fs()?;
        let base = baseline()?;
        let caps = base.caps;
        let supp: Vec<Gid> = owner.supp_group.map(Gid::from_raw).into_iter().collect();
        let groups = if supp == base.groups {
            None
        } else {
            match rustix::thread::set_thread_groups(&supp) {
                Ok(()) => Some(base.groups.clone()),
                // In a user namespace whose setgroups is denied (unshare
                // -r), the groups cannot change; the create proceeds with
                // the fsuid and fsgid alone.
                Err(Errno::PERM) => None,
                Err(e) => return Err(e),
            }
        };
        if owner.uid == base.fsuid && owner.gid == base.fsgid {
            // Already the owner (the daemon's own ids, e.g. root creating
            // as root): nothing to switch, and the capabilities stay.
            set_umask(umask);
            return Ok(Self {
                uid: base.fsuid,
                gid: base.fsgid,
                groups,
                caps: None,
                switched: false,
            });
        }
        set_umask(umask);
        let mut guard = Self {
            gid: setfsgid(owner.gid),
            uid: setfsuid(owner.uid),
            groups,
            caps: None,
            switched: true,
        };
        // setfsuid reports no error: read back what took effect (once per
        // owner and thread).
        if VERIFIED.with(Cell::get) != Some((owner.uid, owner.gid)) {
            if setfsuid(u32::MAX) != owner.uid || setfsgid(u32::MAX) != owner.gid {
                return Err(if caps.effective.contains(CapabilitySet::SETUID) {
                    // The id has no mapping in the daemon's user namespace.
                    Errno::OVERFLOW
                } else {
                    // An unprivileged daemon can create only as itself.
                    Errno::PERM
                });
            }
            VERIFIED.with(|c| c.set(Some((owner.uid, owner.gid))));
        }
        let root = owner.uid == 0;
        let now = match SWITCHED_CAPS.with(Cell::get) {
            Some((r, c)) if r == root => c,
            _ => {
                let c = rustix::thread::capabilities(None)?;
                SWITCHED_CAPS.with(|s| s.set(Some((root, c))));
                c
            }
        };
        let give_back = ACCESS_CAPS & caps.effective & now.permitted & !now.effective;
        if !give_back.is_empty() {
            guard.caps = Some(caps);
            rustix::thread::set_capabilities(
                None,
                CapabilitySets {
                    effective: now.effective | give_back,
                    ..now
                },
            )?;
        }
        Ok(guard)
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        if self.switched {
            setfsuid(self.uid);
            setfsgid(self.gid);
        }
        if let Some(caps) = self.caps {
            // Returning to fsuid 0 raised the fs capabilities again; this
            // puts back exactly the set the thread had.
            let _ = rustix::thread::set_capabilities(None, caps);
        }
        if let Some(groups) = &self.groups {
            let _ = rustix::thread::set_thread_groups(groups);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs_ids() -> (u32, u32) {
        let (u, g) = (setfsuid(u32::MAX), setfsgid(u32::MAX));
        (u, g)
    }

    fn umask() -> String {
        let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .map(|v| v.trim().to_string())
            .expect("Umask line")
    }

    #[test]
    fn the_daemons_own_ids_switch_nothing_but_the_umask() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        std::thread::spawn(|| {
            let before_caps = rustix::thread::capabilities(None).expect("capget");
            let owner = Owner {
                uid: 0,
                gid: 0,
                supp_group: None,
            };
            {
                let g = AsOwner::new(&owner, 0o077).expect("switch");
                assert!(!g.switched);
                assert_eq!(fs_ids(), (0, 0));
                assert_eq!(umask(), "0077");
                assert_eq!(
                    rustix::thread::capabilities(None).expect("capget"),
                    before_caps,
                    "root creating as root keeps its capabilities"
                );
            }
            assert_eq!(umask(), "0077", "umask kept for the next create");
            // A switch after the shortcut still switches.
            let other = Owner {
                uid: 1234,
                gid: 2345,
                supp_group: None,
            };
            let g = AsOwner::new(&other, 0o022).expect("switch");
            assert!(g.switched);
            assert_eq!(fs_ids(), (1234, 2345));
            drop(g);
            assert_eq!(fs_ids(), (0, 0));
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn switches_and_restores_this_thread_only() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        // A fresh thread: its fs_struct is unshared, the test harness's not.
        std::thread::spawn(|| {
            let before_caps = rustix::thread::capabilities(None).expect("capget");
            let before_groups = rustix::process::getgroups().expect("getgroups");
            let owner = Owner {
                uid: 1234,
                gid: 2345,
                supp_group: Some(777),
            };
            {
                let _g = AsOwner::new(&owner, 0o027).expect("switch");
                assert_eq!(fs_ids(), (1234, 2345));
                assert_eq!(umask(), "0027");
                let groups = rustix::process::getgroups().expect("getgroups");
                assert_eq!(groups, vec![Gid::from_raw(777)]);
                let caps = rustix::thread::capabilities(None).expect("capget");
                assert!(caps.effective.contains(CapabilitySet::DAC_OVERRIDE));
                assert!(!caps.effective.contains(CapabilitySet::FSETID));
                assert!(!caps.effective.contains(CapabilitySet::CHOWN));
            }
            assert_eq!(fs_ids(), (0, 0));
            assert_eq!(
                rustix::process::getgroups().expect("getgroups"),
                before_groups
            );
            assert_eq!(
                rustix::thread::capabilities(None).expect("capget"),
                before_caps
            );
            assert_eq!(umask(), "0027", "umask kept for the next create");
            // Again as the same owner: same state, from the cached values.
            {
                let _g = AsOwner::new(&owner, 0o027).expect("switch");
                assert_eq!(fs_ids(), (1234, 2345));
                let caps = rustix::thread::capabilities(None).expect("capget");
                assert!(caps.effective.contains(CapabilitySet::DAC_OVERRIDE));
                assert!(!caps.effective.contains(CapabilitySet::CHOWN));
            }
            assert_eq!(fs_ids(), (0, 0));
            assert_eq!(
                rustix::thread::capabilities(None).expect("capget"),
                before_caps
            );
        })
        .join()
        .expect("thread");
    }
}
