//! The inode table: each backing inode the kernel has looked up, keyed by
//! `(st_dev, st_ino)`, with the kernel's lookup count, held either by an
//! `O_PATH` fd or by its file handle (see `handles`).
//!
//! An fd keeps the backing inode (and so its number) alive until the kernel
//! forgets it, so the key of an fd-held inode never names another file. A
//! handle does not: the file may be deleted and its number reused. So a
//! lookup that finds its key held by a handle compares handles (which carry
//! the inode's generation); a different handle means the held inode is
//! gone, and the key is given to the new one under a new node id, while
//! the old node id stays until the kernel forgets it (ESTALE meanwhile).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use super::handles::FileHandle;
use crate::backing::{FileIo, OpenInode};

/// `(st_dev, st_ino)` of a backing inode.
pub(super) use crate::backing::Key;

/// The root's node id, fixed by the protocol.
pub(super) const ROOT: u64 = 1;

/// What keeps hold of a backing inode.
#[derive(Debug)]
pub(super) enum Held {
    /// `O_PATH | O_NOFOLLOW`: never readable by itself, reopened through
    /// `/proc/self/fd` when data is needed.
    Fd(OwnedFd),
    /// Opened as `O_PATH` for the duration of each operation.
    Handle(FileHandle),
}

pub(super) struct Inode {
    /// The node id.
    pub(super) id: u64,
    /// `st_dev` of the backing inode.
    pub(super) dev: u64,
    pub(super) held: Held,
    pub(super) io: Mutex<FileIo>,
}

impl OpenInode for Inode {
    type Layer = ();
    fn io(&self) -> &Mutex<FileIo> {
        &self.io
    }
}

struct Slot {
    inode: Arc<Inode>,
    key: Key,
    lookups: u64,
}

pub(super) struct InodeTable {
    by_id: HashMap<u64, Slot>,
    by_key: HashMap<Key, u64>,
    next: u64,
    /// Inodes held by an fd.
    fds: usize,
}

impl InodeTable {
    /// A table holding the root, which is never forgotten.
    pub(super) fn new(root: OwnedFd, key: Key) -> Self {
        let mut t = Self {
            by_id: HashMap::new(),
            by_key: HashMap::new(),
            next: ROOT + 1,
            fds: 0,
        };
        t.insert(ROOT, Held::Fd(root), key);
        t
    }

    fn insert(&mut self, ino: u64, held: Held, key: Key) {
        if matches!(held, Held::Fd(_)) {
            self.fds += 1;
        }
        let inode = Arc::new(Inode {
            id: ino,
            dev: key.0,
            held,
            io: Mutex::new(FileIo::Idle),
        });
        self.by_id.insert(
            ino,
            Slot {
                inode,
                key,
                lookups: 1,
            },
        );
        self.by_key.insert(key, ino);
    }

    pub(super) fn get(&self, ino: u64) -> Option<Arc<Inode>> {
        self.by_id.get(&ino).map(|s| s.inode.clone())
    }

    /// The node id the key belongs to, if the kernel holds one.
    pub(super) fn id_of(&self, key: Key) -> Option<u64> {
        self.by_key.get(&key).copied()
    }

    /// Every node id held.
    pub(super) fn ids(&self) -> Vec<u64> {
        self.by_id.keys().copied().collect()
    }

    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Inodes held by an open fd, the root included.
    pub(super) fn fd_count(&self) -> usize {
        self.fds
    }

    /// Count one lookup of the inode behind `key`, holding it by `held`
    /// if it is new (otherwise `held` is dropped: the table holds it
    /// already). `same` tells whether a handle the table holds for `key`
    /// is the handle of the inode being looked up.
    pub(super) fn lookup(
        &mut self,
        key: Key,
        held: Held,
        same: impl FnOnce(&FileHandle) -> bool,
    ) -> u64 {
        if let Some(ino) = self.count_existing(key, same) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.insert(ino, held, key);
        ino
    }

    /// Count one lookup of `key` if the table holds that very inode (see
    /// [`InodeTable::lookup`] for `same`). A handle-held slot whose handle
    /// differs belongs to a file that is gone: it loses the key.
    pub(super) fn count_existing(
        &mut self,
        key: Key,
        same: impl FnOnce(&FileHandle) -> bool,
    ) -> Option<u64> {
        let ino = *self.by_key.get(&key)?;
        let slot = self.by_id.get_mut(&ino)?;
        if let Held::Handle(h) = &slot.inode.held {
            if !same(h) {
                self.by_key.remove(&key);
                return None;
            }
        }
        slot.lookups += 1;
        Some(ino)
    }

    /// Drop `n` lookups; the last one closes the fd (once no request is
    /// using the inode any more). True when the node id is gone.
    pub(super) fn forget(&mut self, ino: u64, n: u64) -> bool {
        if ino == ROOT {
            return false;
        }
        let Some(slot) = self.by_id.get_mut(&ino) else {
            return false;
        };
        slot.lookups = slot.lookups.saturating_sub(n);
        if slot.lookups > 0 {
            return false;
        }
        if let Some(slot) = self.by_id.remove(&ino) {
            // The key may have passed to a newer inode meanwhile.
            if self.by_key.get(&slot.key) == Some(&ino) {
                self.by_key.remove(&slot.key);
            }
            if matches!(slot.inode.held, Held::Fd(_)) {
                self.fds -= 1;
            }
        }
        // Give back the memory of a burst of lookups once most are
        // forgotten (each shrink halves at least: amortised O(1)).
        let len = self.by_id.len();
        if self.by_id.capacity() > 4096 && len * 4 < self.by_id.capacity() {
            self.by_id.shrink_to(len * 2);
            self.by_key.shrink_to(len * 2);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn fd() -> OwnedFd {
        rustix::fs::open("/", rustix::fs::OFlags::PATH, rustix::fs::Mode::empty())
            .expect("open / as O_PATH")
    }

    fn lookup(t: &mut InodeTable, key: Key) -> u64 {
        t.lookup(key, Held::Fd(fd()), |_| true)
    }

    #[test]
    fn lookups_are_counted_per_key_and_forgotten() {
        let mut t = InodeTable::new(fd(), (1, 1));
        let a = lookup(&mut t, (1, 2));
        assert_eq!(lookup(&mut t, (1, 2)), a, "same key, same node id");
        let b = lookup(&mut t, (2, 2));
        assert_ne!(a, b, "same inode number on another device");
        assert_eq!((t.len(), t.fd_count()), (3, 3));
        assert!(!t.forget(a, 1));
        assert!(t.get(a).is_some(), "one lookup left");
        assert!(t.forget(a, 1));
        assert!(t.get(a).is_none());
        t.forget(b, 5);
        t.forget(ROOT, 100);
        assert_eq!((t.len(), t.fd_count()), (1, 1), "only the root stays");
        let c = lookup(&mut t, (1, 2));
        assert!(c > b, "node ids are never reused");
    }

    /// A handle-held key whose file was replaced (same number, another
    /// handle) goes to a new node id; the old one lives until forgotten
    /// and its FORGET leaves the new one alone.
    #[test]
    fn a_reused_inode_number_gets_a_new_node_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let handle = |name: &str| {
            std::fs::write(dir.path().join(name), b"").expect("write");
            let f = rustix::fs::open(
                dir.path().join(name),
                rustix::fs::OFlags::PATH,
                rustix::fs::Mode::empty(),
            )
            .expect("open");
            FileHandle::of(f.as_fd()).expect("name_to_handle_at")
        };
        let (h1, h1_again, h2) = (handle("one"), handle("one"), handle("two"));
        let mut t = InodeTable::new(fd(), (1, 1));
        let a = t.lookup((9, 9), Held::Handle(h1), |_| unreachable!("new key"));
        assert_eq!(t.fd_count(), 1, "handles hold no fd");
        let again = t.lookup((9, 9), Held::Fd(fd()), |h| h.same_inode(&h1_again));
        assert_eq!(again, a, "same handle, same node id");
        let b = t.lookup((9, 9), Held::Fd(fd()), |h| h.same_inode(&h2));
        assert_ne!(b, a, "another file behind the same number");
        assert_eq!(t.len(), 3);
        assert!(t.forget(a, 2));
        assert_eq!(lookup(&mut t, (9, 9)), b, "the key stays with the new node");
        assert!(t.get(b).is_some());
    }
}
