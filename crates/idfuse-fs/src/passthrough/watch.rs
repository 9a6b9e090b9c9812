//! Keeping the kernel's caches true when SOURCE changes behind the mirror.
//!
//! Where the daemon may (CAP_SYS_ADMIN), one fanotify group watches the
//! whole filesystem SOURCE lives on (`FAN_MARK_FILESYSTEM`), reporting each
//! change as the changed directory's file handle plus the entry name
//! (`FAN_REPORT_DFID_NAME`). A thread turns each event into notifications:
//!
//! - a name created, deleted or moved in directory P: `INVAL_ENTRY(P, name)`
//!   (drops a positive or negative dentry) and `INVAL_INODE(P)` (its
//!   attributes and its cached listing, `FOPEN_CACHE_DIR` pages);
//! - attributes or data of an entry changed: `INVAL_INODE` of the entry's
//!   node (attributes only, or attributes and cached pages for data);
//! - the event queue overflowed: `INC_EPOCH` (every dentry is revalidated)
//!   and `INVAL_INODE` of every node the kernel holds.
//!
//! Events made by the daemon itself (the event's pid is ours) are skipped:
//! the kernel learnt of those changes through the request that made them.
//! Directories the kernel has never looked up are skipped too: nothing
//! below them can be cached.
//!
//! Deadlocks: `INVAL_ENTRY` takes the directory's lock in the kernel, which
//! a request on that directory may hold while a worker serves it. The
//! watcher is its own thread, holds no lock of the mirror while it writes a
//! notification, and no worker ever waits for it; so it may wait for a
//! worker, never the other way round.
//!
//! File handles here come from the kernel's fanotify, never from a client;
//! the inode they open is only stat'ed, or used as the directory for one
//! name lookup that cannot leave it. Nothing is handed on.
//!
//! Elsewhere (no privilege, a network or FUSE filesystem whose changes are
//! made on other machines, a filesystem mounted inside SOURCE) there is no
//! watch, and the mirror falls back to short timeouts for the inodes it
//! cannot watch.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, RwLock};

use idfuse::abi::reply::Notification;
use idfuse::{Errno, Notifier};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::inodes::{InodeTable, Key};
use crate::backing::{check_name, key_of, statx_fd};

/// The events that change what the kernel may have cached.
const MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_ATTRIB
    | libc::FAN_MODIFY
    | libc::FAN_ONDIR;

/// Directory handles remembered with their key, at most.
const KEYS_MAX: usize = 8192;

/// Filesystems whose changes come from elsewhere (a network or another
/// FUSE daemon): a local watch would miss them.
const REMOTE_FS: &[i64] = &[
    0x6969,      // NFS
    0xFF53_4D42, // CIFS
    0xFE53_4D42, // SMB2
    0x6573_5546, // FUSE
    0x00C3_6400, // Ceph
    0x0102_1997, // 9P
    0x5346_414F, // AFS
    0x0116_1970, // GFS2
    0x7461_636f, // OCFS2
    0x0BD0_0BD0, // Lustre
    0x4750_4653, // GPFS
];

/// The watch on SOURCE's filesystem, before its thread runs.
pub(super) struct Watch {
    fan: OwnedFd,
    /// An fd on the watched filesystem, to open directory handles with.
    mount_fd: OwnedFd,
    /// `st_dev` of SOURCE: inodes with another one are not watched.
    pub(super) dev: u64,
}

/// Stops the watcher thread when dropped (its end of a pipe closes).
pub(super) struct Running {
    _stop: OwnedFd,
}

impl Watch {
    /// Watch the filesystem of `root` (SOURCE, opened for reading), or say
    /// why not.
    pub(super) fn new(root: BorrowedFd<'_>, dev: u64) -> Result<Self, String> {
        let sfs = rustix::fs::fstatfs(root).map_err(|e| format!("statfs: {e}"))?;
        #[allow(clippy::unnecessary_cast)]
        let ftype = sfs.f_type as i64;
        if REMOTE_FS.contains(&ftype) {
            return Err(format!(
                "SOURCE is on a network or FUSE filesystem (type {ftype:#x}), whose changes made elsewhere a local watch cannot see"
            ));
        }
        let init = |report: libc::c_uint| {
            // SAFETY: plain syscall with constant flags; returns a new fd
            // or -1.
            unsafe {
                libc::fanotify_init(
                    libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK | report,
                    (libc::O_RDONLY | libc::O_CLOEXEC) as libc::c_uint,
                )
            }
        };
        // The changed object's own handle too (5.17+): it names the inode
        // a deletion removed, and one whose link count changed.
        let mut fd = init(libc::FAN_REPORT_DFID_NAME_TARGET);
        if fd < 0 {
            fd = init(libc::FAN_REPORT_DFID_NAME);
        }
        if fd < 0 {
            return Err(format!(
                "fanotify_init: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: fanotify_init returned a new fd nobody else owns.
        let fan = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `fan` and `root` are valid fds; a null path marks `root`'s
        // filesystem itself.
        let r = unsafe {
            libc::fanotify_mark(
                fan.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                MASK,
                root.as_raw_fd(),
                std::ptr::null(),
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            let why = if e.raw_os_error() == Some(libc::EPERM) {
                " (a filesystem-wide watch needs CAP_SYS_ADMIN in the initial user namespace)"
            } else {
                ""
            };
            return Err(format!("fanotify_mark on SOURCE's filesystem: {e}{why}"));
        }
        let mount_fd = rustix::io::fcntl_dupfd_cloexec(root, 0).map_err(|e| format!("dup: {e}"))?;
        Ok(Self { fan, mount_fd, dev })
    }

    /// Start the thread that turns events into notifications; it stops
    /// when the returned value is dropped.
    pub(super) fn start(
        self,
        table: Arc<RwLock<InodeTable>>,
        notifier: Notifier,
        epoch: bool,
    ) -> std::io::Result<Running> {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let mut w8 = Watcher {
            watch: self,
            table,
            notifier,
            epoch,
            keys: HashMap::new(),
            me: rustix::process::getpid().as_raw_nonzero().get(),
        };
        std::thread::Builder::new()
            .name("idfuse-watch".into())
            .spawn(move || w8.run(r))?;
        Ok(Running { _stop: w })
    }
}

struct Watcher {
    watch: Watch,
    table: Arc<RwLock<InodeTable>>,
    notifier: Notifier,
    /// The kernel takes `FUSE_NOTIFY_INC_EPOCH` (protocol 7.44).
    epoch: bool,
    /// Directory handles (type and bytes) and the key of their inode.
    keys: HashMap<Vec<u8>, Key>,
    me: i32,
}

/// One thing to tell the kernel.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Inval {
    Entry(u64, Vec<u8>),
    /// Parent, the deleted child, its name.
    Delete(u64, u64, Vec<u8>),
    /// Node, and whether cached data goes too (else attributes only).
    Inode(u64, bool),
    Everything,
}

impl Watcher {
    fn run(&mut self, stop: OwnedFd) {
        use rustix::event::{poll, PollFd, PollFlags};
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut fds = [
                PollFd::new(&self.watch.fan, PollFlags::IN),
                PollFd::new(&stop, PollFlags::IN),
            ];
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => {
                    tracing::warn!("watch on SOURCE stopped: poll: {e}");
                    return;
                }
            }
            if !fds[1].revents().is_empty() {
                return;
            }
            // Let a burst gather (every change the daemon makes itself is
            // an event too): at most one wakeup per millisecond, well
            // inside the visibility bound.
            std::thread::sleep(std::time::Duration::from_millis(1));
            let mut out = Vec::new();
            // Drain what is queued, then tell the kernel in one go.
            loop {
                match rustix::io::read(&self.watch.fan, &mut buf) {
                    Ok(0) | Err(Errno::AGAIN) => break,
                    Ok(n) => self.parse(&buf[..n.min(buf.len())], &mut out),
                    Err(Errno::INTR) => continue,
                    Err(e) => {
                        tracing::warn!("watch on SOURCE stopped: read: {e}");
                        return;
                    }
                }
                if out.len() > 4096 {
                    break;
                }
            }
            if !self.send(out) {
                return;
            }
        }
    }

    /// Turn a buffer of events into invalidations.
    fn parse(&mut self, mut buf: &[u8], out: &mut Vec<Inval>) {
        // struct fanotify_event_metadata: event_len u32, vers u8, reserved
        // u8, metadata_len u16, mask u64, fd i32, pid i32.
        const META: usize = 24;
        while buf.len() >= META {
            let rd32 = |b: &[u8], at: usize| {
                b.get(at..at + 4)
                    .and_then(|s| s.try_into().ok())
                    .map_or(0, u32::from_ne_bytes)
            };
            let len = rd32(buf, 0) as usize;
            let meta_len = buf
                .get(6..8)
                .and_then(|s| s.try_into().ok())
                .map_or(0, u16::from_ne_bytes) as usize;
            if len < META || len > buf.len() || meta_len < META || meta_len > len {
                return;
            }
            let ev = &buf[..len];
            buf = &buf[len..];
            let mask = buf_u64(ev, 8);
            let fd = rd32(ev, 16) as i32;
            let pid = rd32(ev, 20) as i32;
            if fd >= 0 {
                // SAFETY: the kernel gave us this fd with the event; we own
                // it. (With FID reporting it is always FAN_NOFD.)
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            if mask & libc::FAN_Q_OVERFLOW != 0 {
                out.push(Inval::Everything);
                continue;
            }
            if pid == self.me {
                continue;
            }
            // Info records: header { type u8, pad u8, len u16 }, then
            // fsid (8 bytes), struct file_handle { bytes u32, type i32,
            // data }, and for DFID_NAME the NUL-terminated name.
            let mut dir = None;
            let mut object = None;
            let mut info = &ev[meta_len..];
            while info.len() >= 4 {
                let typ = info[0];
                let ilen = u16::from_ne_bytes([info[2], info[3]]) as usize;
                if ilen < 4 || ilen > info.len() {
                    break;
                }
                let rec = &info[..ilen];
                info = &info[ilen..];
                let Some(fh) = rec.get(12..) else { continue };
                let hbytes = rd32(fh, 0) as usize;
                // The handle with its type, as the cache key and to open.
                let Some(handle) = fh.get(..8 + hbytes) else {
                    continue;
                };
                let rest = &fh[8 + hbytes..];
                match typ {
                    libc::FAN_EVENT_INFO_TYPE_DFID_NAME => {
                        let name = rest.split(|&b| b == 0).next().unwrap_or(b".");
                        dir = Some((handle, name));
                    }
                    libc::FAN_EVENT_INFO_TYPE_DFID => dir = Some((handle, &b"."[..])),
                    libc::FAN_EVENT_INFO_TYPE_FID => object = Some(handle),
                    _ => {}
                }
            }
            self.event(mask, dir, object, out);
        }
    }

    /// Open, as `O_PATH`, the inode whose handle (with its 8-byte header)
    /// is given.
    fn open_handle(&self, handle: &[u8]) -> Option<OwnedFd> {
        #[repr(C)]
        struct Raw {
            bytes: u32,
            typ: i32,
            data: [u8; 128],
        }
        let data = handle.get(8..)?;
        let mut raw = Raw {
            bytes: u32::try_from(data.len()).ok()?,
            typ: i32::from_ne_bytes(handle.get(4..8)?.try_into().ok()?),
            data: [0; 128],
        };
        raw.data.get_mut(..data.len())?.copy_from_slice(data);
        // SAFETY: `raw` is a `struct file_handle` whose `handle_bytes` says
        // how many bytes of `data` follow, alive for the call; the mount fd
        // is valid.
        let fd = unsafe {
            libc::open_by_handle_at(
                self.watch.mount_fd.as_raw_fd(),
                (&raw mut raw).cast::<libc::file_handle>(),
                libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        };
        // SAFETY: a new fd nobody else owns, when not negative.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn node_of(&self, key: Key) -> Option<u64> {
        self.table.read().ok()?.id_of(key)
    }

    /// The node of the inode a handle names, if the kernel holds one.
    fn node_of_handle(&self, handle: &[u8]) -> Option<u64> {
        let fd = self.open_handle(handle)?;
        let st = statx_fd(fd.as_fd()).ok()?;
        self.node_of(key_of(&st))
    }

    /// One event: `dir` is the directory's handle and the entry's name
    /// (`.`: the directory itself), `object` the changed inode's handle.
    fn event(
        &mut self,
        mask: u64,
        dir: Option<(&[u8], &[u8])>,
        object: Option<&[u8]>,
        out: &mut Vec<Inval>,
    ) {
        let data = mask & libc::FAN_MODIFY != 0;
        let Some((handle, name)) = dir else {
            // No directory (a link count changed): the inode alone.
            if let Some(node) = object.and_then(|h| self.node_of_handle(h)) {
                out.push(Inval::Inode(node, data));
            }
            return;
        };
        let mut dir_fd = None;
        let key = match self.keys.get(handle) {
            Some(k) => *k,
            None => {
                let Some(fd) = self.open_handle(handle) else {
                    return;
                };
                let Ok(st) = statx_fd(fd.as_fd()) else { return };
                let k = key_of(&st);
                if self.keys.len() >= KEYS_MAX {
                    self.keys.clear();
                }
                self.keys.insert(handle.to_vec(), k);
                dir_fd = Some(fd);
                k
            }
        };
        let Some(parent) = self.node_of(key) else {
            // Nothing below a directory the kernel never looked up is
            // cached.
            return;
        };
        let name_changes =
            libc::FAN_CREATE | libc::FAN_DELETE | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO;
        if name == b"." {
            // The directory itself.
            out.push(Inval::Inode(parent, mask & name_changes != 0));
            return;
        }
        let name_ok = check_name(std::ffi::OsStr::from_bytes(name)).is_ok();
        if mask & name_changes != 0 {
            // The inode a deletion removed: the kernel marks it deleted
            // (DELETE), and its link count is read again.
            let gone = if mask & (libc::FAN_DELETE | libc::FAN_MOVED_FROM) != 0 {
                object.and_then(|h| self.node_of_handle(h))
            } else {
                None
            };
            match gone {
                Some(child) if mask & libc::FAN_DELETE != 0 => {
                    out.push(Inval::Delete(parent, child, name.to_vec()));
                    out.push(Inval::Inode(child, false));
                }
                Some(child) => {
                    out.push(Inval::Entry(parent, name.to_vec()));
                    out.push(Inval::Inode(child, false));
                }
                None => out.push(Inval::Entry(parent, name.to_vec())),
            }
            out.push(Inval::Inode(parent, true));
        }
        if mask & (libc::FAN_ATTRIB | libc::FAN_MODIFY) != 0 {
            if let Some(node) = object.and_then(|h| self.node_of_handle(h)) {
                out.push(Inval::Inode(node, data));
                return;
            }
            if !name_ok {
                return;
            }
            // No object handle (an older kernel): look the name up.
            let dir = match dir_fd {
                Some(fd) => fd,
                None => match self.open_handle(handle) {
                    Some(fd) => fd,
                    None => return,
                },
            };
            let Ok(child) = rustix::fs::openat2(
                &dir,
                std::ffi::OsStr::from_bytes(name),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_SYMLINKS,
            ) else {
                // Gone meanwhile: its own event follows.
                return;
            };
            let Ok(st) = statx_fd(child.as_fd()) else {
                return;
            };
            if let Some(node) = self.node_of(key_of(&st)) {
                out.push(Inval::Inode(node, data));
            }
        }
    }

    /// Tell the kernel, each thing once. False when the connection is gone.
    fn send(&self, out: Vec<Inval>) -> bool {
        let mut seen = HashSet::new();
        let mut all = false;
        for i in out {
            if i == Inval::Everything {
                all = true;
                continue;
            }
            if all || !seen.insert(i.clone()) {
                continue;
            }
            let r = match &i {
                Inval::Entry(p, name) => self.notifier.inval_entry(*p, OsStr::from_bytes(name)),
                // A child the kernel no longer has under that name: drop
                // the name all the same.
                // A child the kernel no longer has under that name, or a
                // directory it cannot mark deleted (busy, not empty in its
                // cache): drop the name all the same.
                Inval::Delete(p, c, name) => {
                    match self.notifier.delete(*p, *c, OsStr::from_bytes(name)) {
                        Ok(()) => Ok(()),
                        Err(_) => self.notifier.inval_entry(*p, OsStr::from_bytes(name)),
                    }
                }
                Inval::Inode(n, data) => {
                    self.notifier.inval_inode(*n, if *data { 0 } else { -1 }, 0)
                }
                Inval::Everything => Ok(()),
            };
            if !self.ok(r) {
                return false;
            }
        }
        if all {
            tracing::warn!("the watch on SOURCE lost events (queue overflow); dropping every cached name and attribute");
            if self.epoch && !self.ok(self.notifier.send(&Notification::inc_epoch())) {
                return false;
            }
            let nodes = self.table.read().map(|t| t.ids()).unwrap_or_default();
            for n in nodes {
                if !self.ok(self.notifier.inval_inode(n, 0, 0)) {
                    return false;
                }
            }
        }
        true
    }

    /// Whether to go on after a notification's outcome.
    fn ok(&self, r: Result<(), Errno>) -> bool {
        match r {
            // Not (or no longer) cached: nothing to drop.
            Ok(()) | Err(Errno::NOENT) => true,
            Err(Errno::NODEV) | Err(Errno::NOTCONN) | Err(Errno::BADF) => false,
            Err(e) => {
                tracing::debug!("notification refused: {e}");
                true
            }
        }
    }
}

fn buf_u64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}
