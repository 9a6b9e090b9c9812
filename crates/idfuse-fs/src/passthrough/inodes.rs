//! The inode table: one `O_PATH` fd per backing inode, keyed by
//! `(st_dev, st_ino)`, with the kernel's lookup count. Holding the fd keeps
//! the backing inode (and so its number) alive until the kernel forgets it,
//! so a key never names two different files while it is in the table.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use idfuse::BackingId;

/// `(st_dev, st_ino)` of a backing inode.
pub(super) type Key = (u64, u64);

/// The root's node id, fixed by the protocol.
pub(super) const ROOT: u64 = 1;

/// How the kernel does I/O on the open files of one regular inode. The
/// kernel refuses to mix the two modes on an inode (an open in the other
/// mode fails with EIO) and allows one backing file per inode, so every
/// open of an inode follows the first one until all are released.
#[derive(Debug, Default)]
pub(super) enum FileIo {
    /// No open file.
    #[default]
    Idle,
    /// Opened with `FOPEN_PASSTHROUGH`, sharing one backing file.
    Backing { id: BackingId, users: u32 },
    /// Opened for reads and writes through the daemon.
    Cached { users: u32 },
}

pub(super) struct Inode {
    /// `O_PATH | O_NOFOLLOW`: never readable by itself, reopened through
    /// `/proc/self/fd` when data is needed.
    pub(super) fd: OwnedFd,
    pub(super) io: Mutex<FileIo>,
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
}

impl InodeTable {
    /// A table holding the root, which is never forgotten.
    pub(super) fn new(root: OwnedFd, key: Key) -> Self {
        let mut t = Self {
            by_id: HashMap::new(),
            by_key: HashMap::new(),
            next: ROOT + 1,
        };
        t.insert(ROOT, root, key);
        t
    }

    fn insert(&mut self, ino: u64, fd: OwnedFd, key: Key) {
        let inode = Arc::new(Inode {
            fd,
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

    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Count one lookup of the inode behind `key`, registering `fd` for it
    /// if it is new (otherwise `fd` is dropped: the table has one already).
    pub(super) fn lookup(&mut self, key: Key, fd: OwnedFd) -> u64 {
        if let Some(ino) = self.count_existing(key) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.insert(ino, fd, key);
        ino
    }

    /// Count one lookup of `key` if the table knows it.
    pub(super) fn count_existing(&mut self, key: Key) -> Option<u64> {
        let ino = *self.by_key.get(&key)?;
        let slot = self.by_id.get_mut(&ino)?;
        slot.lookups += 1;
        Some(ino)
    }

    /// Drop `n` lookups; the last one closes the fd (once no request is
    /// using the inode any more).
    pub(super) fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        let Some(slot) = self.by_id.get_mut(&ino) else {
            return;
        };
        slot.lookups = slot.lookups.saturating_sub(n);
        if slot.lookups == 0 {
            if let Some(slot) = self.by_id.remove(&ino) {
                self.by_key.remove(&slot.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> OwnedFd {
        rustix::fs::open("/", rustix::fs::OFlags::PATH, rustix::fs::Mode::empty())
            .expect("open / as O_PATH")
    }

    #[test]
    fn lookups_are_counted_per_key_and_forgotten() {
        let mut t = InodeTable::new(fd(), (1, 1));
        let a = t.lookup((1, 2), fd());
        assert_eq!(t.lookup((1, 2), fd()), a, "same key, same node id");
        let b = t.lookup((2, 2), fd());
        assert_ne!(a, b, "same inode number on another device");
        assert_eq!(t.len(), 3);
        t.forget(a, 1);
        assert!(t.get(a).is_some(), "one lookup left");
        t.forget(a, 1);
        assert!(t.get(a).is_none());
        t.forget(b, 5);
        t.forget(ROOT, 100);
        assert_eq!(t.len(), 1, "only the root stays");
        let c = t.lookup((1, 2), fd());
        assert!(c > b, "node ids are never reused");
    }
}
