//! The overlay's inode table. A node is keyed by its *origin*: the
//! `(st_dev, st_ino)` of the object in the layer it was first found in.
//! A copy-up records upper key → origin, so the node id and the reported
//! `st_ino` stay those of the lower object for the life of the mount,
//! through lookups before and after the copy-up and across forgets.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use crate::backing::{Key, OpenInode};

/// The root's node id, fixed by the protocol.
pub(super) const ROOT: u64 = 1;

/// How the kernel does I/O on a regular inode's opens; the layer is
/// `true` for a backing file of the upper layer, `false` for a lower one.
pub(super) type FileIo = crate::backing::FileIo<bool>;

/// Where an overlay object lives in the layers.
#[derive(Clone, Default)]
pub(super) struct Layers {
    /// The object in the upper layer (`O_PATH`), once it exists there.
    pub(super) upper: Option<Arc<OwnedFd>>,
    /// For a directory, the lower directories merged into it, top first
    /// (ending at an opaque one); for any other object, the topmost lower
    /// one (copied up from on a change).
    pub(super) lowers: Vec<Arc<OwnedFd>>,
    /// The directory node it was found in and its name there: where a
    /// copy-up puts it (`None` for the root).
    pub(super) parent: Option<(Arc<Node>, OsString)>,
}

impl Layers {
    /// The object whose attributes and data are the overlay's: upper if
    /// any, else the topmost lower.
    pub(super) fn top(&self) -> Option<&Arc<OwnedFd>> {
        self.upper.as_ref().or(self.lowers.first())
    }
}

/// One overlay inode.
pub(super) struct Node {
    /// The node id.
    pub(super) id: u64,
    /// The origin key (see the module comment).
    pub(super) key: Key,
    /// `st_ino` as reported (see `Overlay::report_ino`).
    pub(super) ino: u64,
    pub(super) dir: bool,
    pub(super) layers: Mutex<Layers>,
    pub(super) io: Mutex<FileIo>,
}

impl OpenInode for Node {
    type Layer = bool;
    fn io(&self) -> &Mutex<FileIo> {
        &self.io
    }

    /// An open of a lower file follows the copy once there is one.
    fn moved(&self, upper: bool) -> Option<Arc<OwnedFd>> {
        if upper {
            return None;
        }
        self.layers().upper
    }
}

impl Node {
    /// A snapshot of the node's layers (fds shared, not duplicated).
    pub(super) fn layers(&self) -> Layers {
        self.layers.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

struct Slot {
    node: Arc<Node>,
    lookups: u64,
}

/// Nodes by id and by origin, with the kernel's lookup counts.
pub(super) struct Table {
    by_id: HashMap<u64, Slot>,
    by_key: HashMap<Key, u64>,
    next: u64,
}

impl Table {
    /// A table holding the root, which is never forgotten.
    pub(super) fn new(root: Arc<Node>) -> Self {
        let mut t = Self {
            by_id: HashMap::new(),
            by_key: HashMap::new(),
            next: ROOT + 1,
        };
        t.by_key.insert(root.key, ROOT);
        t.by_id.insert(
            ROOT,
            Slot {
                node: root,
                lookups: 1,
            },
        );
        t
    }

    pub(super) fn get(&self, id: u64) -> Option<Arc<Node>> {
        self.by_id.get(&id).map(|s| s.node.clone())
    }

    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Count one lookup of the node with origin `key`, made by `make`
    /// (given the new node id) when the table has none.
    pub(super) fn lookup(&mut self, key: Key, make: impl FnOnce(u64) -> Node) -> Arc<Node> {
        if let Some(slot) = self.by_key.get(&key).and_then(|id| self.by_id.get_mut(id)) {
            slot.lookups += 1;
            return slot.node.clone();
        }
        let id = self.next;
        self.next += 1;
        let node = Arc::new(make(id));
        self.by_key.insert(key, id);
        self.by_id.insert(
            id,
            Slot {
                node: node.clone(),
                lookups: 1,
            },
        );
        node
    }

    /// Count one more lookup of a node the kernel knows (LINK).
    pub(super) fn count(&mut self, id: u64) -> Option<Arc<Node>> {
        let slot = self.by_id.get_mut(&id)?;
        slot.lookups += 1;
        Some(slot.node.clone())
    }

    /// Drop `n` lookups; the last one drops the node.
    pub(super) fn forget(&mut self, id: u64, n: u64) {
        if id == ROOT {
            return;
        }
        let Some(slot) = self.by_id.get_mut(&id) else {
            return;
        };
        slot.lookups = slot.lookups.saturating_sub(n);
        if slot.lookups > 0 {
            return;
        }
        if let Some(slot) = self.by_id.remove(&id) {
            if self.by_key.get(&slot.node.key) == Some(&id) {
                self.by_key.remove(&slot.node.key);
            }
        }
    }
}
