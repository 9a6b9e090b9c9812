//! Creating inodes as their owner: for a create, the worker thread's
//! fsuid/fsgid become the kernel's `Owner`, its supplementary groups hold
//! only the parent's gid from `FUSE_EXT_GROUPS`, and its umask is the
//! caller's. All three are per-thread (raw syscalls, and a private
//! fs_struct per worker), so other workers are unaffected.
//!
//! Leaving fsuid 0 drops the file-system capabilities from the effective
//! set. CAP_FSETID, CAP_CHOWN and CAP_FOWNER stay dropped, so the backing
//! filesystem strips S_ISGID and assigns groups exactly as it would for the
//! caller. CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH come back (when the
//! daemon holds them): the kernel has already decided the caller may
//! create here, with all of the caller's groups, which the daemon does not
//! know; the backing filesystem must not decide again with fewer.
//!
//! The switch is kept between requests (issue 17): a thread stays in the
//! last owner's credentials until something needs other ones, so a run of
//! creates by one owner switches once. Which credentials the thread holds
//! is a per-thread state that every backing operation states its need
//! against before it touches the backing filesystem:
//! - [`owner`]: the kernel's `Owner` (creates only);
//! - [`daemon`]: the daemon's own, for everything else (chmod, chown,
//!   unlink, xattrs, opening for I/O, BACKING_OPEN, writes...);
//! - [`searching`]: resolving names and reading attributes and xattrs,
//!   which an owner's credentials do exactly as the daemon's when the
//!   access capabilities came back in the initial user namespace (so the
//!   LOOKUP, GETATTR and GETXATTR between two creates by one owner do not
//!   switch back).
//!
//! A switch that fails half-way leaves the state unknown, which no need
//! accepts: the next operation restores everything first, or fails.

use std::cell::{Cell, RefCell};
use std::sync::OnceLock;

use idfuse::{Errno, Owner};
use rustix::process::Gid;
use rustix::thread::{CapabilitySet, CapabilitySets};

/// The credentials a thread holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// The daemon's own (the [`Baseline`]).
    Daemon,
    /// An owner's, as [`owner`] left them.
    Owner(AsWhom),
    /// A switch or a restore failed half-way: anything may be in effect.
    Unknown,
}

/// What [`owner`] put in effect, and what [`daemon`] must undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AsWhom {
    uid: u32,
    gid: u32,
    supp: Option<u32>,
    /// The fs ids differ from the daemon's.
    ids: bool,
    /// The supplementary groups differ from the daemon's.
    groups: bool,
    /// The capabilities differ from the daemon's beyond what returning to
    /// its fsuid restores.
    caps: bool,
    /// Names resolve and attributes read as under the daemon's
    /// credentials (see [`searching`]).
    searches: bool,
}

thread_local! {
    static PRIVATE_FS: Cell<bool> = const { Cell::new(false) };
    static BASELINE: RefCell<Option<Baseline>> = const { RefCell::new(None) };
    static HELD: Cell<Held> = const { Cell::new(Held::Daemon) };
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

/// A worker thread's own credentials. They change only here, so they are
/// read once per thread, before the first switch.
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
    // Read in the daemon's credentials only: before any switch.
    if HELD.with(Cell::get) != Held::Daemon {
        return Err(Errno::IO);
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

/// True when the daemon runs in the initial user namespace, where every
/// inode's ids are mapped and CAP_DAC_READ_SEARCH therefore passes every
/// search and read check (in a child namespace it does not on unmapped
/// inodes, where the fsuid and groups decide).
fn initial_userns() -> bool {
    static INITIAL: OnceLock<bool> = OnceLock::new();
    *INITIAL.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map")
            .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
    })
}

/// Put the daemon's own credentials back on this thread, unless they are
/// in effect already (a thread-local read). Every operation that is not a
/// create calls this (or [`searching`]) before it touches the backing
/// filesystem: the kernel has checked the caller's permission, and the
/// daemon acts with its own. On error the thread's state stays unknown,
/// and the operation must not go on.
pub(crate) fn daemon() -> Result<(), Errno> {
    let held = HELD.with(Cell::get);
    if held == Held::Daemon {
        return Ok(());
    }
    // Cached: read before the first switch.
    let base = baseline()?;
    let undo = match held {
        Held::Daemon => return Ok(()),
        Held::Owner(w) => w,
        Held::Unknown => AsWhom {
            uid: u32::MAX,
            gid: u32::MAX,
            supp: None,
            ids: true,
            groups: true,
            caps: true,
            searches: false,
        },
    };
    HELD.with(|h| h.set(Held::Unknown));
    if undo.ids {
        setfsuid(base.fsuid);
        setfsgid(base.fsgid);
        if held == Held::Unknown
            && (setfsuid(u32::MAX) != base.fsuid || setfsgid(u32::MAX) != base.fsgid)
        {
            return Err(Errno::IO);
        }
    }
    if undo.caps {
        // Returning to fsuid 0 raised the fs capabilities again; this puts
        // back exactly the set the thread had.
        rustix::thread::set_capabilities(None, base.caps)?;
    }
    if undo.groups {
        match rustix::thread::set_thread_groups(&base.groups) {
            Ok(()) => {}
            // Groups that cannot change (setgroups denied in this user
            // namespace) never changed.
            Err(Errno::PERM) if held == Held::Unknown => {}
            Err(e) => return Err(e),
        }
    }
    HELD.with(|h| h.set(Held::Daemon));
    Ok(())
}

/// Make sure names resolve and attributes and xattrs read on this thread
/// as under the daemon's credentials: LOOKUP, GETATTR, STATX, GETXATTR,
/// LISTXATTR and the lookup a create makes of what it created. An owner's
/// credentials qualify when CAP_DAC_READ_SEARCH came back in the initial
/// user namespace: the syscalls these make (`openat2(O_PATH)` below a
/// directory, `statx` on an fd, `name_to_handle_at`, `open_by_handle_at`,
/// a directory opened for reading, xattr reads through `/proc/self/fd`)
/// check search or read permission, which it grants on every inode, or a
/// capability outside the file-system set (CAP_SYS_ADMIN for `trusted.*`),
/// which no fsuid change touches. Anything else goes back to the daemon's.
pub(crate) fn searching() -> Result<(), Errno> {
    match HELD.with(Cell::get) {
        Held::Daemon => Ok(()),
        Held::Owner(w) if w.searches => Ok(()),
        Held::Owner(_) | Held::Unknown => daemon(),
    }
}

/// Act as `owner`, with `umask` (already 0 when the kernel applied it),
/// for the create that follows, and stay so until an operation needs other
/// credentials. Nothing is switched when the thread holds exactly these
/// already. On error the thread is back in the daemon's credentials (or
/// its state is unknown) and the create must not go on.
pub(crate) fn owner(owner: &Owner, umask: u32) -> Result<(), Errno> {
    private_fs()?;
    set_umask(umask);
    match HELD.with(Cell::get) {
        Held::Owner(w) if (w.uid, w.gid, w.supp) == (owner.uid, owner.gid, owner.supp_group) => {
            return Ok(());
        }
        // Between two owners other than root, the fs capabilities stay
        // dropped and the given-back ones stay given: switch the ids and
        // groups alone.
        Held::Owner(w) if w.ids && w.uid != 0 && owner.uid != 0 => {
            return switch_between(w, owner).inspect_err(|_| {
                let _ = daemon();
            });
        }
        Held::Owner(_) | Held::Unknown => daemon()?,
        Held::Daemon => {}
    }
    switch_from_daemon(owner).inspect_err(|_| {
        let _ = daemon();
    })
}

/// Set the supplementary groups, `now` the thread's, to the owner's;
/// whether they now differ from the daemon's (and so are the owner's). In
/// a user namespace whose setgroups is denied (unshare -r) the groups
/// cannot change, and never did; the create proceeds with the fsuid and
/// fsgid alone.
fn set_groups(owner: &Owner, base: &Baseline, now: &[Gid]) -> Result<bool, Errno> {
    let supp: Vec<Gid> = owner.supp_group.map(Gid::from_raw).into_iter().collect();
    if supp == now {
        return Ok(supp != base.groups);
    }
    match rustix::thread::set_thread_groups(&supp) {
        Ok(()) => Ok(supp != base.groups),
        Err(Errno::PERM) => Ok(now != base.groups),
        Err(e) => Err(e),
    }
}

/// Set the fs ids to the owner's and check, once per owner and thread,
/// that they took effect (setfsuid reports no error).
fn set_ids(owner: &Owner, base: &Baseline) -> Result<(), Errno> {
    setfsgid(owner.gid);
    setfsuid(owner.uid);
    if VERIFIED.with(Cell::get) != Some((owner.uid, owner.gid)) {
        if setfsuid(u32::MAX) != owner.uid || setfsgid(u32::MAX) != owner.gid {
            return Err(if base.caps.effective.contains(CapabilitySet::SETUID) {
                // The id has no mapping in the daemon's user namespace.
                Errno::OVERFLOW
            } else {
                // An unprivileged daemon can create only as itself.
                Errno::PERM
            });
        }
        VERIFIED.with(|c| c.set(Some((owner.uid, owner.gid))));
    }
    Ok(())
}

fn switch_from_daemon(owner: &Owner) -> Result<(), Errno> {
    let base = baseline()?;
    HELD.with(|h| h.set(Held::Unknown));
    let groups = set_groups(owner, &base, &base.groups)?;
    if owner.uid == base.fsuid && owner.gid == base.fsgid {
        // Already the owner (the daemon's own ids, e.g. root creating as
        // root): nothing to switch, and the capabilities stay.
        HELD.with(|h| {
            h.set(if groups {
                Held::Owner(AsWhom {
                    uid: owner.uid,
                    gid: owner.gid,
                    supp: owner.supp_group,
                    ids: false,
                    groups,
                    caps: false,
                    // Fewer groups, but the daemon's ids and capabilities.
                    searches: initial_userns()
                        && base.caps.effective.contains(CapabilitySet::DAC_READ_SEARCH),
                })
            } else {
                Held::Daemon
            })
        });
        return Ok(());
    }
    set_ids(owner, &base)?;
    let root = owner.uid == 0;
    let now = match SWITCHED_CAPS.with(Cell::get) {
        Some((r, c)) if r == root => c,
        _ => {
            let c = rustix::thread::capabilities(None)?;
            SWITCHED_CAPS.with(|s| s.set(Some((root, c))));
            c
        }
    };
    let give_back = ACCESS_CAPS & base.caps.effective & now.permitted & !now.effective;
    // The ids changed, so the capabilities may have: restore them exactly
    // whenever the set differs from the daemon's (fsuid 0 raises the fs
    // ones again, but only from the permitted set).
    let effective = now.effective | give_back;
    if !give_back.is_empty() {
        rustix::thread::set_capabilities(None, CapabilitySets { effective, ..now })?;
    }
    let caps = CapabilitySets { effective, ..now } != base.caps;
    HELD.with(|h| {
        h.set(Held::Owner(AsWhom {
            uid: owner.uid,
            gid: owner.gid,
            supp: owner.supp_group,
            ids: true,
            groups,
            caps,
            searches: initial_userns() && effective.contains(CapabilitySet::DAC_READ_SEARCH),
        }))
    });
    Ok(())
}

/// From one owner's credentials to another's, both other than root.
fn switch_between(from: AsWhom, owner: &Owner) -> Result<(), Errno> {
    let base = baseline()?;
    HELD.with(|h| h.set(Held::Unknown));
    let now: Vec<Gid> = if from.groups {
        from.supp.map(Gid::from_raw).into_iter().collect()
    } else {
        base.groups.clone()
    };
    let groups = set_groups(owner, &base, &now)?;
    set_ids(owner, &base)?;
    HELD.with(|h| {
        h.set(Held::Owner(AsWhom {
            uid: owner.uid,
            gid: owner.gid,
            supp: owner.supp_group,
            groups,
            ..from
        }))
    });
    Ok(())
}

/// Acts as an `Owner` until dropped, then puts the daemon's credentials
/// back: for a create whose caller goes on with daemon work at once (the
/// overlay's, a whiteout rename). The mirror's creates call [`owner`] and
/// leave the switch back to the next operation that needs it.
pub(crate) struct AsOwner(());

impl AsOwner {
    /// Switch to `owner` with `umask` (already 0 when the kernel applied it).
    pub(crate) fn new(o: &Owner, umask: u32) -> Result<Self, Errno> {
        owner(o, umask)?;
        Ok(Self(()))
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        if let Err(e) = daemon() {
            // The state stays unknown: the next operation restores again
            // before it acts, or fails.
            tracing::warn!("restoring the daemon's credentials failed: {e}");
        }
    }
}
#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use rustix::fs::{Mode, OFlags};

    use super::super::ProcFd;
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

    fn held() -> Held {
        HELD.with(Cell::get)
    }

    fn caps() -> CapabilitySets {
        rustix::thread::capabilities(None).expect("capget")
    }

    fn groups() -> Vec<Gid> {
        rustix::process::getgroups().expect("getgroups")
    }

    fn who(uid: u32, gid: u32, supp: Option<u32>) -> Owner {
        Owner {
            uid,
            gid,
            supp_group: supp,
        }
    }

    /// The thread holds exactly the daemon's credentials it started with.
    fn assert_daemon(caps0: &CapabilitySets, groups0: &[Gid], step: &str) {
        assert_eq!(held(), Held::Daemon, "{step}: state");
        assert_eq!(fs_ids(), (0, 0), "{step}: fs ids");
        assert_eq!(&caps(), caps0, "{step}: capabilities");
        assert_eq!(groups(), groups0, "{step}: groups");
    }

    /// Run `f` on a fresh thread (its fs_struct is unshared, the test
    /// harness's not), as root only.
    fn on_a_worker(f: impl FnOnce() + Send + 'static) {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        std::thread::spawn(f).join().expect("thread");
    }

    #[test]
    fn the_daemons_own_ids_switch_nothing_but_the_umask_and_groups() {
        on_a_worker(|| {
            let (caps0, groups0) = (caps(), groups());
            owner(&who(0, 0, None), 0o077).expect("switch");
            assert_eq!(fs_ids(), (0, 0));
            assert_eq!(umask(), "0077");
            assert_eq!(
                caps(),
                caps0,
                "root creating as root keeps its capabilities"
            );
            assert_eq!(groups(), Vec::<Gid>::new());
            daemon().expect("restore");
            assert_daemon(&caps0, &groups0, "after root's create");
            assert_eq!(umask(), "0077", "umask kept for the next create");
        });
    }

    #[test]
    fn an_owner_is_kept_until_an_operation_needs_the_daemon() {
        on_a_worker(|| {
            let (caps0, groups0) = (caps(), groups());
            let a = who(1234, 2345, Some(777));
            owner(&a, 0o027).expect("switch");
            assert_eq!(fs_ids(), (1234, 2345));
            assert_eq!(umask(), "0027");
            assert_eq!(groups(), vec![Gid::from_raw(777)]);
            let as_a = caps();
            assert!(as_a.effective.contains(CapabilitySet::DAC_OVERRIDE));
            assert!(!as_a.effective.contains(CapabilitySet::FSETID));
            assert!(!as_a.effective.contains(CapabilitySet::CHOWN));
            assert!(matches!(held(), Held::Owner(w) if w.uid == 1234 && w.caps));
            // The same owner again: kept, nothing switched.
            owner(&a, 0o027).expect("again");
            assert_eq!(fs_ids(), (1234, 2345));
            assert_eq!(caps(), as_a);
            // A lookup between two creates keeps it too, where the access
            // capabilities make it resolve as the daemon would.
            searching().expect("searching");
            if initial_userns() && caps0.effective.contains(CapabilitySet::DAC_READ_SEARCH) {
                assert_eq!(fs_ids(), (1234, 2345), "lookups keep the owner");
            } else {
                assert_daemon(&caps0, &groups0, "lookup without search caps");
            }
            daemon().expect("restore");
            assert_daemon(&caps0, &groups0, "after the daemon's operation");
            daemon().expect("no-op");
            assert_daemon(&caps0, &groups0, "twice");
        });
    }

    #[test]
    fn one_owner_to_another_switches_ids_and_groups_only() {
        on_a_worker(|| {
            let (caps0, groups0) = (caps(), groups());
            owner(&who(1234, 2345, Some(777)), 0o022).expect("a");
            let as_a = caps();
            owner(&who(3456, 4567, None), 0o022).expect("b");
            assert_eq!(fs_ids(), (3456, 4567));
            assert_eq!(groups(), Vec::<Gid>::new());
            assert_eq!(caps(), as_a, "the same capabilities as any non-root owner");
            owner(&who(0, 4567, Some(1)), 0o022).expect("root, another group");
            assert_eq!(fs_ids(), (0, 4567));
            assert_eq!(caps(), caps0, "root keeps the daemon's capabilities");
            assert_eq!(groups(), vec![Gid::from_raw(1)]);
            daemon().expect("restore");
            assert_daemon(&caps0, &groups0, "after three owners");
        });
    }

    /// Issue 17's hazard: the daemon's work between two creates by
    /// different owners on one thread must run with the daemon's
    /// credentials, and each create with its owner's.
    #[test]
    fn creates_by_two_owners_around_root_only_work_on_one_thread() {
        on_a_worker(|| {
            let (caps0, groups0) = (caps(), groups());
            let dir = tempfile::tempdir().expect("tempdir");
            let proc = ProcFd::open().expect("proc");
            // A root-only directory with a root-only file in it.
            let secret_dir = dir.path().join("root-only");
            std::fs::create_dir(&secret_dir).expect("mkdir");
            std::fs::set_permissions(&secret_dir, PermissionsExt::from_mode(0o700))
                .expect("chmod dir");
            let secret = secret_dir.join("secret");
            std::fs::write(&secret, b"x").expect("write");
            std::fs::set_permissions(&secret, PermissionsExt::from_mode(0o600))
                .expect("chmod file");
            let secret_fd = rustix::fs::open(&secret, OFlags::PATH, Mode::empty()).expect("open");
            let dirfd =
                rustix::fs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
                    .expect("open dir");
            let create = |name: &str| {
                rustix::fs::openat(
                    &dirfd,
                    name,
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
                .map(drop)
            };
            let owner_of = |name: &str| {
                let m = std::fs::metadata(dir.path().join(name)).expect("stat");
                (m.uid(), m.gid())
            };
            let mode_of_secret = || std::fs::metadata(&secret).expect("stat").mode() & 0o7777;
            let secret_path = ProcFd::path(secret_fd.as_fd());

            for round in 0..3 {
                // A create by uid A.
                owner(&who(1234, 2345, None), 0o022).expect("as A");
                create(&format!("a{round}")).expect("create as A");
                assert_eq!(
                    owner_of(&format!("a{round}")),
                    (1234, 2345),
                    "round {round}: A's file"
                );
                // As A, root's file cannot be chmodded: the state matters.
                assert_eq!(
                    rustix::fs::chmod(secret_path.as_c_str(), Mode::from_raw_mode(0o640)).err(),
                    Some(Errno::PERM),
                    "round {round}: A may not chmod root's file"
                );
                // The daemon's chmod of it puts the daemon's credentials back.
                proc.chmod(secret_fd.as_fd(), 0o640)
                    .expect("chmod as the daemon");
                assert_daemon(&caps0, &groups0, "after chmod");
                assert_eq!(mode_of_secret(), 0o640);
                // An unlink in the root-only directory, as a request does.
                daemon().expect("unlink's credentials");
                let gone = secret_dir.join(format!("gone{round}"));
                std::fs::write(&gone, b"").expect("write");
                rustix::fs::unlinkat(
                    rustix::fs::CWD,
                    gone.as_path(),
                    rustix::fs::AtFlags::empty(),
                )
                .expect("unlink as the daemon");
                // A create by uid B, straight after A's: B's ids, not A's.
                owner(&who(1234, 2345, None), 0o022).expect("as A again");
                owner(&who(3456, 4567, None), 0o022).expect("as B");
                create(&format!("b{round}")).expect("create as B");
                assert_eq!(
                    owner_of(&format!("b{round}")),
                    (3456, 4567),
                    "round {round}: B's file"
                );
                assert_eq!(
                    rustix::fs::chmod(secret_path.as_c_str(), Mode::from_raw_mode(0o600)).err(),
                    Some(Errno::PERM),
                    "round {round}: B may not chmod root's file"
                );
                // Root's create after B's: root's ids and capabilities.
                owner(&who(0, 0, None), 0o022).expect("as root");
                create(&format!("r{round}")).expect("create as root");
                assert_eq!(
                    owner_of(&format!("r{round}")),
                    (0, 0),
                    "round {round}: root's file"
                );
                proc.chmod(secret_fd.as_fd(), 0o600)
                    .expect("chmod as the daemon");
                assert_daemon(&caps0, &groups0, "end of round");
            }
        });
    }

    #[test]
    fn a_failed_switch_leaves_nothing_behind() {
        on_a_worker(|| {
            let (caps0, groups0) = (caps(), groups());
            owner(&who(1234, 2345, Some(5)), 0o022).expect("a");
            // -1 is no id: setfsuid ignores it, the read-back refuses it.
            let r = owner(&who(u32::MAX, u32::MAX, None), 0o022);
            assert!(r.is_err(), "a switch to -1 must fail");
            assert_daemon(&caps0, &groups0, "after a refused switch");
        });
    }
}
