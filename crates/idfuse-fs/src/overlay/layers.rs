//! Reading the layers as kernel overlayfs does: a name resolves top-down
//! through the directories merged into its parent; a whiteout (a char
//! device 0/0, or an OCI `.wh.NAME` file) ends the search; a non-directory
//! ends it too; an opaque directory (the `overlay.opaque` xattr = "y", or
//! an OCI `.wh..wh..opq` file inside) merges nothing below it. The OCI
//! names themselves are never shown.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use idfuse::Errno;
use rustix::fs::{AtFlags, OFlags, StatxFlags};

use crate::backing::{open_child, statx_fd, xattr_value, ProcFd};

use super::inodes::Layers;

/// The OCI whiteout prefix.
pub(super) const WH_PREFIX: &[u8] = b".wh.";
/// The OCI opaque-directory marker.
pub(super) const WH_OPAQUE: &str = ".wh..wh..opq";

/// True for a kernel-format whiteout: a char device 0/0.
pub(super) fn is_whiteout(st: &rustix::fs::Statx) -> bool {
    u32::from(st.stx_mode) & libc::S_IFMT == libc::S_IFCHR
        && st.stx_rdev_major == 0
        && st.stx_rdev_minor == 0
}

pub(super) fn is_dir(st: &rustix::fs::Statx) -> bool {
    u32::from(st.stx_mode) & libc::S_IFMT == libc::S_IFDIR
}

/// True for names the overlay keeps for itself (OCI whiteouts).
pub(super) fn reserved(name: &OsStr) -> bool {
    name.as_bytes().starts_with(WH_PREFIX)
}

/// An object found by name.
pub(super) struct Found {
    pub(super) upper: Option<Arc<OwnedFd>>,
    pub(super) lowers: Vec<Arc<OwnedFd>>,
    /// The attributes of the topmost object.
    pub(super) st: rustix::fs::Statx,
}

/// The layer-reading half of the overlay: which xattr marks opaque dirs.
#[derive(Clone, Copy)]
pub(super) struct Reader {
    pub(super) opaque_xattr: &'static str,
    /// The xattr (value "y") that marks a char device 0/0 as a device the
    /// user made (`RENAME_WHITEOUT` through the mount), shown as itself
    /// instead of hiding its name; `None` where char devices cannot carry
    /// it (`user.` xattrs, with `userxattr`). Kernel overlayfs does not
    /// know it and hides such a device's name as a whiteout.
    pub(super) device_xattr: Option<&'static str>,
}

impl Reader {
    /// True when the directory `dir` hides the layers below it.
    pub(super) fn is_opaque(&self, dir: BorrowedFd<'_>) -> Result<bool, Errno> {
        if let Some(v) = xattr_value(dir, OsStr::new(self.opaque_xattr))? {
            if v == b"y" {
                return Ok(true);
            }
        }
        match open_child(dir, OsStr::new(WH_OPAQUE)) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// True for a whiteout: a char device 0/0 (`st`, opened as `fd`) that
    /// is not marked as a device the user made (see `device_xattr`).
    pub(super) fn hides(&self, fd: BorrowedFd<'_>, st: &rustix::fs::Statx) -> Result<bool, Errno> {
        if !is_whiteout(st) {
            return Ok(false);
        }
        Ok(match self.device_xattr {
            Some(x) => xattr_value(fd, OsStr::new(x))?.as_deref() != Some(b"y"),
            None => true,
        })
    }

    /// [`Reader::hides`] for `name` in the layer directory `dir`, whose
    /// attributes are `st` (false if it is gone meanwhile).
    fn hides_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        st: &rustix::fs::Statx,
    ) -> Result<bool, Errno> {
        if !is_whiteout(st) || self.device_xattr.is_none() {
            return Ok(is_whiteout(st));
        }
        match open_child(dir, name) {
            Ok(fd) => self.hides(fd.as_fd(), st),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// True when the layer directory `dir` holds an OCI whiteout of `name`.
    fn oci_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> Result<bool, Errno> {
        let mut wh = WH_PREFIX.to_vec();
        wh.extend_from_slice(name.as_bytes());
        if wh.len() > 255 {
            return Ok(false);
        }
        match open_child(dir, OsStr::from_bytes(&wh)) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Resolve `name` in the directory made of `parent`'s layers.
    pub(super) fn resolve(&self, parent: &Layers, name: &OsStr) -> Result<Option<Found>, Errno> {
        let dirs = parent
            .upper
            .iter()
            .map(|u| (true, u))
            .chain(parent.lowers.iter().map(|l| (false, l)));
        self.resolve_in(dirs, name)
    }

    /// Resolve `name` in the lower layers of `parent` only: what an upper
    /// entry of that name hides (and so what its removal must white out).
    pub(super) fn in_lowers(&self, parent: &Layers, name: &OsStr) -> Result<bool, Errno> {
        Ok(self
            .resolve_in(parent.lowers.iter().map(|l| (false, l)), name)?
            .is_some())
    }

    /// Resolve `name` from the layer `chain[0]` down, the layers above it
    /// known to hold neither the name nor a whiteout of it (as a current
    /// merged listing knows for each name it shows; see [`Listing`]).
    pub(super) fn resolve_from(
        &self,
        chain: &[(bool, Arc<OwnedFd>)],
        name: &OsStr,
    ) -> Result<Option<Found>, Errno> {
        self.resolve_in(chain.iter().map(|(u, d)| (*u, d)), name)
    }

    fn resolve_in<'a>(
        &self,
        dirs: impl Iterator<Item = (bool, &'a Arc<OwnedFd>)>,
        name: &OsStr,
    ) -> Result<Option<Found>, Errno> {
        let mut found: Option<Found> = None;
        for (upper, dir) in dirs {
            let fd = match open_child(dir.as_fd(), name) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    if Self::oci_whiteout(dir.as_fd(), name)? {
                        break;
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let st = statx_fd(fd.as_fd())?;
            if self.hides(fd.as_fd(), &st)? {
                break;
            }
            let fd = Arc::new(fd);
            match &mut found {
                None => {
                    let dir = is_dir(&st);
                    let opaque = dir && self.is_opaque(fd.as_fd())?;
                    found = Some(if upper {
                        Found {
                            upper: Some(fd),
                            lowers: Vec::new(),
                            st,
                        }
                    } else {
                        Found {
                            upper: None,
                            lowers: vec![fd],
                            st,
                        }
                    });
                    if !dir || opaque {
                        break;
                    }
                }
                Some(f) => {
                    // A non-directory below a directory ends the merge.
                    if !is_dir(&st) {
                        break;
                    }
                    let opaque = self.is_opaque(fd.as_fd())?;
                    f.lowers.push(fd);
                    if opaque {
                        break;
                    }
                }
            }
        }
        Ok(found)
    }

    /// The merged listing of a directory: each name once, from the
    /// topmost layer that has it, whiteouts and OCI names left out.
    /// `ino` maps a layer's `(st_dev, d_ino)` to the reported inode number.
    pub(super) fn list(
        &self,
        proc: &ProcFd,
        layers: &Layers,
        mut ino: impl FnMut(u64, u64) -> u64,
    ) -> Result<Vec<DirEnt>, Errno> {
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut out = Vec::new();
        let dirs = layers.upper.iter().chain(layers.lowers.iter());
        for (layer, dir) in dirs.enumerate() {
            let dev = {
                let st = statx_fd(dir.as_fd())?;
                libc::makedev(st.stx_dev_major, st.stx_dev_minor)
            };
            let file = proc.reopen(dir.as_fd(), OFlags::RDONLY | OFlags::DIRECTORY)?;
            let mut hidden = Vec::new();
            let mut d = rustix::fs::Dir::read_from(&file)?;
            while let Some(e) = d.read() {
                let e = e?;
                let name = e.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                if let Some(rest) = name.strip_prefix(WH_PREFIX) {
                    if name != WH_OPAQUE.as_bytes() {
                        hidden.push(rest.to_vec());
                    }
                    continue;
                }
                if seen.contains(name) {
                    continue;
                }
                let mut typ = e.file_type().as_raw_mode() & libc::S_IFMT;
                if typ == libc::S_IFCHR || typ == 0 {
                    let st = rustix::fs::statx(
                        &file,
                        OsStr::from_bytes(name),
                        AtFlags::SYMLINK_NOFOLLOW,
                        StatxFlags::TYPE,
                    );
                    match st {
                        Ok(st) if self.hides_at(file.as_fd(), OsStr::from_bytes(name), &st)? => {
                            hidden.push(name.to_vec());
                            continue;
                        }
                        Ok(st) => typ = u32::from(st.stx_mode) & libc::S_IFMT,
                        // Gone meanwhile.
                        Err(Errno::NOENT) => continue,
                        Err(e) => return Err(e),
                    }
                }
                seen.insert(name.to_vec());
                out.push(DirEnt {
                    name: name.to_vec(),
                    typ: typ >> 12,
                    ino: ino(dev, e.ino()),
                    layer,
                });
            }
            seen.extend(hidden);
        }
        Ok(out)
    }
}

/// One entry of a merged listing.
pub(super) struct DirEnt {
    pub(super) name: Vec<u8>,
    /// `DT_*`.
    pub(super) typ: u32,
    pub(super) ino: u64,
    /// The layer it was found in: its index in the directory's layers,
    /// the upper first (if any), then the lowers top down.
    pub(super) layer: usize,
}

/// A directory's merged listing and what it knew when it was made.
pub(super) struct Listing {
    /// The overlay's change count (see `Overlay::changing`) when the
    /// listing was made; while it stands, no upper directory changed
    /// through the overlay since, so the names the listing shows are still
    /// absent (and not whited out) in every layer above the one it found
    /// them in: the lowers never change, and the upper did not.
    pub(super) changes: u64,
    /// The directory's layers, the upper first (flagged true), as listed.
    pub(super) chain: Vec<(bool, Arc<OwnedFd>)>,
    /// The entries; entry `i` has offset `i + 3`.
    pub(super) ents: Vec<DirEnt>,
    /// Entries resolved ahead of the kernel's next READDIRPLUS.
    pub(super) ahead: Arc<Ahead>,
}

impl Drop for Listing {
    fn drop(&mut self) {
        self.ahead.dropped.store(true, Ordering::Relaxed);
    }
}

/// Entries of a merged listing resolved by a helper thread while the
/// kernel digests the last READDIRPLUS reply. Without it a cold listing
/// alternates: the daemon resolves a batch of names while the listing
/// process waits, then the kernel makes an inode and a dentry of each while
/// the daemon waits; on two cores half the time was idle.
///
/// What the helper finds is only used while the listing is current (see
/// [`Listing`]), as the walker's own fast path is: no upper directory
/// changed through the overlay since the listing was made, so each name
/// still resolves from the layer it was listed in down.
#[derive(Default)]
pub(super) struct Ahead {
    /// Entry index → what resolving it found (`None`: gone meanwhile).
    slots: Mutex<HashMap<usize, Option<Found>>>,
    /// Entries below this index have been answered: the helper skips them.
    passed: AtomicUsize,
    /// Entries below this index have been handed to the helper.
    scheduled: AtomicUsize,
    /// Entries in the last reply: where the next one will likely end.
    last_batch: AtomicUsize,
    /// The listing is gone: the helper stops.
    dropped: AtomicBool,
}

impl Ahead {
    /// What the helper found for entry `i`, if it got there first.
    pub(super) fn take(&self, i: usize) -> Option<Option<Found>> {
        self.slots.lock().ok()?.remove(&i)
    }

    /// Entry `i` is answered (or being answered) by the walker.
    pub(super) fn pass(&self, i: usize) {
        self.passed.fetch_max(i + 1, Ordering::Relaxed);
    }

    /// Claim entries `[from, to)` for the helper, minus what it already
    /// has: the range to hand it, if any.
    pub(super) fn claim(&self, from: usize, to: usize) -> Option<std::ops::Range<usize>> {
        let start = from.max(self.scheduled.fetch_max(to, Ordering::Relaxed));
        (start < to).then_some(start..to)
    }

    /// The number of entries the last reply carried (64 before any).
    pub(super) fn batch(&self) -> usize {
        match self.last_batch.load(Ordering::Relaxed) {
            0 => 64,
            n => n,
        }
    }

    pub(super) fn set_batch(&self, n: usize) {
        self.last_batch.store(n, Ordering::Relaxed);
    }

    /// The helper's work: resolve each of `ents` (index, name, layer)
    /// from its layer in `chain` down, skipping what the walker passed.
    /// An error is left for the walker to meet and answer.
    pub(super) fn fill(
        &self,
        reader: Reader,
        chain: &[(bool, Arc<OwnedFd>)],
        ents: Vec<(usize, Vec<u8>, usize)>,
    ) {
        for (i, name, layer) in ents {
            if self.dropped.load(Ordering::Relaxed) {
                return;
            }
            if i < self.passed.load(Ordering::Relaxed) {
                continue;
            }
            let Some(from) = chain.get(layer..) else {
                continue;
            };
            if let Ok(found) = reader.resolve_from(from, OsStr::from_bytes(&name)) {
                match self.slots.lock() {
                    Ok(mut slots) if i >= self.passed.load(Ordering::Relaxed) => {
                        slots.insert(i, found);
                    }
                    _ => {}
                }
            }
        }
    }
}
