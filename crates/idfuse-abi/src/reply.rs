//! Reply and notification encoding: the out header, directory entry
//! buffers for READDIR/READDIRPLUS, and notification messages.

use zerocopy::IntoBytes;

use crate::kernel::*;

/// The header of a reply to request `unique`: `error` is 0 or a negative
/// errno, `payload` the number of bytes that follow the header.
pub fn out_header(unique: u64, error: i32, payload: usize) -> OutHeader {
    OutHeader {
        len: (core::mem::size_of::<OutHeader>() + payload) as u32,
        error,
        unique,
    }
}

/// Accumulates directory entries up to the size the kernel asked for.
#[derive(Debug)]
pub struct DirBuf {
    buf: Vec<u8>,
    max: usize,
}

impl DirBuf {
    /// A buffer that holds at most `max` bytes (the READDIR `size`).
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::with_capacity(max.min(1 << 20)),
            max,
        }
    }

    /// Reuse the allocation for another reply of at most `max` bytes.
    pub fn reset(&mut self, max: usize) {
        self.buf.clear();
        self.max = max;
    }

    /// Append a `fuse_dirent`. `off` is the offset of the *next* entry.
    /// Returns false, appending nothing, when the entry does not fit.
    pub fn push(&mut self, ino: u64, off: u64, typ: u32, name: &[u8]) -> bool {
        let head = Dirent {
            ino,
            off,
            namelen: name.len() as u32,
            r#type: typ,
        };
        self.append(head.as_bytes(), name)
    }

    /// Append a `fuse_direntplus`. Returns false when it does not fit.
    pub fn push_plus(&mut self, entry: &EntryOut, off: u64, typ: u32, name: &[u8]) -> bool {
        let head = Direntplus {
            entry_out: *entry,
            dirent: Dirent {
                ino: entry.attr.ino,
                off,
                namelen: name.len() as u32,
                r#type: typ,
            },
        };
        self.append(head.as_bytes(), name)
    }

    fn append(&mut self, head: &[u8], name: &[u8]) -> bool {
        let len = rec_align(head.len() + name.len());
        if self.buf.len() + len > self.max || name.is_empty() || name.len() > u32::MAX as usize {
            return false;
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(head);
        self.buf.extend_from_slice(name);
        self.buf.resize(start + len, 0);
        true
    }

    /// The encoded entries.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// True when no entry was added.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// A complete notification message (header included), ready to write.
#[derive(Debug, Clone)]
pub struct Notification(Vec<u8>);

impl Notification {
    fn build(code: i32, parts: &[&[u8]]) -> Self {
        let payload: usize = parts.iter().map(|p| p.len()).sum();
        let mut v = Vec::with_capacity(16 + payload);
        v.extend_from_slice(out_header(0, code, payload).as_bytes());
        for p in parts {
            v.extend_from_slice(p);
        }
        Self(v)
    }

    /// The bytes to write to `/dev/fuse`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// `FUSE_NOTIFY_INVAL_INODE`: drop cached attributes and, for `len != 0`,
    /// cached data from `off` (len < 0: to the end).
    pub fn inval_inode(ino: u64, off: i64, len: i64) -> Self {
        Self::build(
            notify::INVAL_INODE,
            &[NotifyInvalInodeOut { ino, off, len }.as_bytes()],
        )
    }

    /// `FUSE_NOTIFY_INVAL_ENTRY`: drop the dentry `name` in `parent`
    /// (`flags`: `EXPIRE_ONLY`).
    pub fn inval_entry(parent: u64, name: &[u8], flags: u32) -> Self {
        let arg = NotifyInvalEntryOut {
            parent,
            namelen: name.len() as u32,
            flags,
        };
        Self::build(notify::INVAL_ENTRY, &[arg.as_bytes(), name, &[0]])
    }

    /// `FUSE_NOTIFY_DELETE`: `name` in `parent`, which was `child`, is gone.
    pub fn delete(parent: u64, child: u64, name: &[u8]) -> Self {
        let arg = NotifyDeleteOut {
            parent,
            child,
            namelen: name.len() as u32,
            padding: 0,
        };
        Self::build(notify::DELETE, &[arg.as_bytes(), name, &[0]])
    }

    /// `FUSE_NOTIFY_STORE`: put `data` into the page cache of `nodeid` at `offset`.
    pub fn store(nodeid: u64, offset: u64, data: &[u8]) -> Self {
        let arg = NotifyStoreOut {
            nodeid,
            offset,
            size: data.len() as u32,
            padding: 0,
        };
        Self::build(notify::STORE, &[arg.as_bytes(), data])
    }

    /// `FUSE_NOTIFY_RETRIEVE`: ask for cached data; the kernel answers with a
    /// NOTIFY_REPLY request whose `unique` is `notify_unique`.
    pub fn retrieve(notify_unique: u64, nodeid: u64, offset: u64, size: u32) -> Self {
        let arg = NotifyRetrieveOut {
            notify_unique,
            nodeid,
            offset,
            size,
            padding: 0,
        };
        Self::build(notify::RETRIEVE, &[arg.as_bytes()])
    }

    /// `FUSE_NOTIFY_PRUNE`: ask the kernel to forget these inodes if unused.
    pub fn prune(nodeids: &[u64]) -> Self {
        let arg = NotifyPruneOut {
            count: nodeids.len() as u32,
            padding: 0,
            spare: 0,
        };
        Self::build(notify::PRUNE, &[arg.as_bytes(), nodeids.as_bytes()])
    }

    /// `FUSE_NOTIFY_POLL`: wake up the poll handle `kh`.
    pub fn poll_wakeup(kh: u64) -> Self {
        Self::build(notify::POLL, &[NotifyPollWakeupOut { kh }.as_bytes()])
    }

    /// `FUSE_NOTIFY_RESEND`: ask the kernel to resend pending requests.
    pub fn resend() -> Self {
        Self::build(notify::RESEND, &[])
    }

    /// `FUSE_NOTIFY_INC_EPOCH`: invalidate all cached dentries.
    pub fn inc_epoch() -> Self {
        Self::build(notify::INC_EPOCH, &[])
    }
}
