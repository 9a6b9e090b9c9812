//! `memfs`: a complete in-memory filesystem. It is what the framework's own
//! tests mount and the smallest filesystem that passes the conformance
//! suite: owners from the kernel's `Owner`, setgid inheritance, the umask
//! applied here (`FUSE_DONT_MASK`) unless a default ACL wins, POSIX ACLs kept
//! in sync with the mode, and killpriv v2.
//!
//! It makes no permission decision of its own: the kernel does
//! (`default_permissions`). A deliberate [`Fault`] can be switched on to
//! check that the conformance suite notices a broken server.

mod acl;

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idfuse::{
    Attr, AttrReply, Context, CreateMode, DirBuf, DirPlusBuf, Entry, Errno, Filesystem, InitFlags,
    Kstatfs, OpenOutFlags, Opened, Owner, SetAttr, SetTime, SetxattrFlags, Statx, WriteFlags,
    Xattr,
};

use acl::Acl;

/// File data is stored in pages of this size, as tmpfs stores it; missing
/// pages are holes, and `st_blocks` counts the pages held.
const CHUNK: u64 = 4096;
/// Symlink targets shorter than this live in the inode on tmpfs and take
/// no blocks; longer ones take a page.
const INLINE_SYMLINK: usize = 128;
/// How long the kernel may cache names and attributes. memfs is the only
/// writer and every change passes through the kernel, so this only bounds
/// how stale `ls -l` can be after a crash of our own bookkeeping.
const TTL: Duration = Duration::from_secs(1);
const NAME_MAX: usize = 255;
const XATTR_CREATE: u32 = 1;
const XATTR_REPLACE: u32 = 2;
const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

/// A deliberate bug, for the conformance suite's self-test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// New inodes are owned by the daemon instead of the request's Owner.
    DaemonOwner,
    /// The umask the kernel sent is never applied.
    IgnoreDontMask,
    /// A setgid directory passes on neither its group nor S_ISGID.
    NoSetgidInherit,
    /// ACL xattrs are accepted and silently dropped.
    DropAclXattrs,
    /// Requests without a caller identity are refused with EACCES.
    DenyAbsentCaller,
}

const FAULTS: &[(&str, Fault)] = &[
    ("daemon-owner", Fault::DaemonOwner),
    ("ignore-dont-mask", Fault::IgnoreDontMask),
    ("no-setgid-inherit", Fault::NoSetgidInherit),
    ("drop-acl-xattrs", Fault::DropAclXattrs),
    ("deny-absent-caller", Fault::DenyAbsentCaller),
];

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FAULTS
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                let names: Vec<&str> = FAULTS.iter().map(|(n, _)| *n).collect();
                format!("unknown fault `{s}`; known faults: {}", names.join(", "))
            })
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = FAULTS
            .iter()
            .find(|(_, x)| x == self)
            .map_or("?", |(n, _)| *n);
        f.write_str(name)
    }
}

/// How to build a [`MemFs`].
#[derive(Debug, Clone, Default)]
pub struct MemFsOptions {
    /// A deliberate bug to switch on.
    pub fault: Option<Fault>,
    /// Permission bits of the root directory (0 means 0o755).
    pub root_mode: u32,
    /// Owner of the root directory.
    pub root_uid: u32,
    /// Group of the root directory.
    pub root_gid: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Time {
    sec: i64,
    nsec: u32,
}

fn now() -> Time {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Time {
        sec: d.as_secs() as i64,
        nsec: d.subsec_nanos(),
    }
}

#[derive(Debug)]
struct Dir {
    parent: u64,
    /// name -> (inode, cookie)
    by_name: BTreeMap<OsString, (u64, u64)>,
    /// cookie -> name: readdir offsets that survive concurrent changes.
    by_cookie: BTreeMap<u64, OsString>,
    next_cookie: u64,
}

#[derive(Debug)]
enum Kind {
    File(BTreeMap<u64, Vec<u8>>),
    Dir(Dir),
    Symlink(Vec<u8>),
    Special,
}

#[derive(Debug)]
struct Node {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    rdev: u32,
    size: u64,
    atime: Time,
    mtime: Time,
    ctime: Time,
    btime: Time,
    lookups: u64,
    opens: u64,
    xattrs: BTreeMap<OsString, Vec<u8>>,
}

impl Node {
    fn new(kind: Kind, mode: u32, uid: u32, gid: u32) -> Self {
        let t = now();
        let nlink = if matches!(kind, Kind::Dir(_)) { 2 } else { 1 };
        Self {
            kind,
            mode,
            uid,
            gid,
            nlink,
            rdev: 0,
            size: 0,
            atime: t,
            mtime: t,
            ctime: t,
            btime: t,
            lookups: 0,
            opens: 0,
            xattrs: BTreeMap::new(),
        }
    }

    fn blocks(&self) -> u64 {
        match &self.kind {
            Kind::File(chunks) => chunks.len() as u64 * (CHUNK / 512),
            Kind::Symlink(t) if t.len() < INLINE_SYMLINK => 0,
            Kind::Symlink(_) => CHUNK / 512,
            _ => 0,
        }
    }

    fn attr(&self, ino: u64) -> Attr {
        Attr {
            ino,
            size: self.size,
            blocks: self.blocks(),
            atime: self.atime.sec as u64,
            mtime: self.mtime.sec as u64,
            ctime: self.ctime.sec as u64,
            atimensec: self.atime.nsec,
            mtimensec: self.mtime.nsec,
            ctimensec: self.ctime.nsec,
            mode: self.mode,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: self.rdev,
            blksize: 4096,
            flags: 0,
        }
    }

    fn dir(&self) -> Result<&Dir, Errno> {
        match &self.kind {
            Kind::Dir(d) => Ok(d),
            _ => Err(Errno::NOTDIR),
        }
    }

    fn dir_mut(&mut self) -> Result<&mut Dir, Errno> {
        match &mut self.kind {
            Kind::Dir(d) => Ok(d),
            _ => Err(Errno::NOTDIR),
        }
    }

    fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir(_))
    }

    /// killpriv: clear S_ISUID, and S_ISGID when group-executable.
    fn kill_suidgid(&mut self) {
        let mut m = self.mode & !libc::S_ISUID;
        if m & libc::S_IXGRP != 0 {
            m &= !libc::S_ISGID;
        }
        if m != self.mode {
            self.mode = m;
            self.ctime = now();
        }
    }

    fn acl(&self, name: &[u8]) -> Option<Acl> {
        self.xattrs
            .get(OsStr::from_bytes(name))
            .and_then(|v| Acl::parse(v).ok())
    }
}

struct Inner {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
}

/// The in-memory filesystem.
pub struct MemFs {
    inner: RwLock<Inner>,
    fault: Option<Fault>,
    daemon: (u32, u32),
}

impl std::fmt::Debug for MemFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No inode count: taking the lock here could deadlock a caller
        // that prints the filesystem while holding it.
        f.debug_struct("MemFs")
            .field("fault", &self.fault)
            .finish_non_exhaustive()
    }
}

fn dtype(mode: u32) -> u32 {
    (mode & libc::S_IFMT) >> 12
}

fn check_name(name: &OsStr) -> Result<(), Errno> {
    let b = name.as_bytes();
    if b.len() > NAME_MAX {
        return Err(Errno::NAMETOOLONG);
    }
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(Errno::INVAL);
    }
    Ok(())
}

impl MemFs {
    /// A filesystem holding only its root directory.
    pub fn new(opts: MemFsOptions) -> Self {
        let mode = if opts.root_mode == 0 {
            0o755
        } else {
            opts.root_mode & 0o7777
        };
        let mut root = Node::new(
            Kind::Dir(Dir {
                parent: 1,
                by_name: BTreeMap::new(),
                by_cookie: BTreeMap::new(),
                next_cookie: 3,
            }),
            libc::S_IFDIR | mode,
            opts.root_uid,
            opts.root_gid,
        );
        root.lookups = 1;
        let mut nodes = HashMap::new();
        nodes.insert(1, root);
        Self {
            inner: RwLock::new(Inner { nodes, next_ino: 2 }),
            fault: opts.fault,
            daemon: (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            ),
        }
    }

    /// Inodes alive: reachable, looked up by the kernel, or open.
    pub fn inode_count(&self) -> usize {
        self.read().nodes.len()
    }

    /// Inodes the kernel holds lookups on (the root included); walks every
    /// inode.
    pub fn looked_up_count(&self) -> usize {
        self.read().nodes.values().filter(|n| n.lookups > 0).count()
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn deny(&self, ctx: &Context<'_>) -> Result<(), Errno> {
        if self.fault == Some(Fault::DenyAbsentCaller) && ctx.caller().is_none() {
            return Err(Errno::ACCESS);
        }
        Ok(())
    }

    fn entry(ino: u64, node: &Node) -> Entry {
        Entry {
            ino,
            generation: 0,
            attr: node.attr(ino),
            entry_timeout: TTL,
            attr_timeout: TTL,
        }
    }

    /// Make a new inode in `parent` named `name` (or unnamed for tmpfile),
    /// applying owner, setgid, umask and default-ACL rules.
    fn create_node(
        &self,
        inner: &mut Inner,
        parent: u64,
        name: Option<&OsStr>,
        owner: &Owner,
        mode: CreateMode,
        kind: Kind,
    ) -> Result<u64, Errno> {
        if let Some(name) = name {
            check_name(name)?;
        }
        let p = inner.nodes.get(&parent).ok_or(Errno::NOENT)?;
        let pdir = p.dir()?;
        if let Some(name) = name {
            if pdir.by_name.contains_key(name) {
                return Err(Errno::EXIST);
            }
        }
        let is_dir = matches!(kind, Kind::Dir(_));
        let is_symlink = matches!(kind, Kind::Symlink(_));
        let (mut uid, mut gid) = (owner.uid, owner.gid);
        if self.fault == Some(Fault::DaemonOwner) {
            (uid, gid) = self.daemon;
        }
        let mut perm = mode.mode & 0o7777;
        let setgid_parent =
            p.mode & libc::S_ISGID != 0 && self.fault != Some(Fault::NoSetgidInherit);
        if setgid_parent {
            gid = p.gid;
            if is_dir {
                perm |= libc::S_ISGID;
            }
        }
        let default_acl = if is_symlink { None } else { p.acl(ACL_DEFAULT) };
        let mut xattrs = BTreeMap::new();
        if let Some(def) = &default_acl {
            // posix_acl_create: the default ACL replaces the umask.
            let (access, new_mode) = def.create_masq(perm);
            perm = new_mode;
            if let Some(a) = access {
                xattrs.insert(OsString::from_vec_bytes(ACL_ACCESS), a.to_bytes());
            }
            if is_dir {
                xattrs.insert(OsString::from_vec_bytes(ACL_DEFAULT), def.to_bytes());
            }
        } else if !is_symlink && self.fault != Some(Fault::IgnoreDontMask) {
            perm &= !(mode.umask & 0o777);
        }
        let full_mode = (mode.mode & libc::S_IFMT) | perm;
        let mut node = Node::new(kind, full_mode, uid, gid);
        node.xattrs = xattrs;
        if let Kind::Dir(d) = &mut node.kind {
            d.parent = parent;
        }
        if let Kind::Symlink(t) = &node.kind {
            node.size = t.len() as u64;
        }
        let ino = inner.next_ino;
        inner.next_ino += 1;
        if name.is_none() {
            node.nlink = 0;
        }
        inner.nodes.insert(ino, node);
        if let Some(name) = name {
            let t = now();
            let p = inner.nodes.get_mut(&parent).ok_or(Errno::NOENT)?;
            let d = p.dir_mut()?;
            let cookie = d.next_cookie;
            d.next_cookie += 1;
            d.by_name.insert(name.to_owned(), (ino, cookie));
            d.by_cookie.insert(cookie, name.to_owned());
            if is_dir {
                p.nlink += 1;
            }
            p.mtime = t;
            p.ctime = t;
        }
        Ok(ino)
    }

    /// Free `ino` if nothing refers to it any more.
    fn maybe_free(inner: &mut Inner, ino: u64) {
        if ino == 1 {
            return;
        }
        let dead = inner.nodes.get(&ino).is_some_and(|n| {
            let unlinked = n.nlink == 0 || (n.is_dir() && n.nlink <= 1);
            unlinked && n.lookups == 0 && n.opens == 0
        });
        if dead {
            inner.nodes.remove(&ino);
        }
    }

    fn lookup_child(inner: &Inner, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        let p = inner.nodes.get(&parent).ok_or(Errno::NOENT)?;
        let d = p.dir()?;
        if name.as_bytes().len() > NAME_MAX {
            return Err(Errno::NAMETOOLONG);
        }
        d.by_name.get(name).map(|(i, _)| *i).ok_or(Errno::NOENT)
    }

    fn remove_entry(inner: &mut Inner, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        let p = inner.nodes.get_mut(&parent).ok_or(Errno::NOENT)?;
        let d = p.dir_mut()?;
        let (ino, cookie) = d.by_name.remove(name).ok_or(Errno::NOENT)?;
        d.by_cookie.remove(&cookie);
        let t = now();
        p.mtime = t;
        p.ctime = t;
        Ok(ino)
    }

    fn insert_entry(inner: &mut Inner, parent: u64, name: &OsStr, ino: u64) -> Result<(), Errno> {
        let p = inner.nodes.get_mut(&parent).ok_or(Errno::NOENT)?;
        let d = p.dir_mut()?;
        let cookie = d.next_cookie;
        d.next_cookie += 1;
        d.by_name.insert(name.to_owned(), (ino, cookie));
        d.by_cookie.insert(cookie, name.to_owned());
        let t = now();
        p.mtime = t;
        p.ctime = t;
        Ok(())
    }

    /// True if `ancestor` is `ino` or one of its ancestors.
    fn is_ancestor(inner: &Inner, ancestor: u64, mut ino: u64) -> bool {
        for _ in 0..4096 {
            if ino == ancestor {
                return true;
            }
            match inner.nodes.get(&ino).map(|n| &n.kind) {
                Some(Kind::Dir(d)) if d.parent != ino => ino = d.parent,
                _ => return false,
            }
        }
        false
    }

    fn file_read(node: &Node, offset: u64, size: u32, buf: &mut Vec<u8>) {
        let Kind::File(chunks) = &node.kind else {
            return;
        };
        let end = node.size.min(offset.saturating_add(size as u64));
        let mut pos = offset;
        while pos < end {
            let idx = pos / CHUNK;
            let within = (pos % CHUNK) as usize;
            let take = ((CHUNK as usize - within) as u64).min(end - pos) as usize;
            match chunks.get(&idx) {
                Some(c) => buf.extend_from_slice(&c[within..within + take]),
                None => buf.resize(buf.len() + take, 0),
            }
            pos += take as u64;
        }
    }

    fn file_write(node: &mut Node, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let end = offset.checked_add(data.len() as u64).ok_or(Errno::FBIG)?;
        if end > i64::MAX as u64 {
            return Err(Errno::FBIG);
        }
        let Kind::File(chunks) = &mut node.kind else {
            return Err(Errno::ISDIR);
        };
        let mut pos = offset;
        let mut src = data;
        while !src.is_empty() {
            let idx = pos / CHUNK;
            let within = (pos % CHUNK) as usize;
            let take = (CHUNK as usize - within).min(src.len());
            let c = chunks.entry(idx).or_insert_with(|| vec![0; CHUNK as usize]);
            c[within..within + take].copy_from_slice(&src[..take]);
            src = &src[take..];
            pos += take as u64;
        }
        node.size = node.size.max(end);
        Ok(())
    }

    /// Zero `[start, end)`, dropping whole chunks.
    fn file_zero(node: &mut Node, start: u64, end: u64) {
        let Kind::File(chunks) = &mut node.kind else {
            return;
        };
        let first_full = start.div_ceil(CHUNK);
        let last_full = end / CHUNK;
        // BTreeMap::range panics on an inverted range (start > end).
        let doomed: Vec<u64> = if first_full < last_full {
            chunks
                .range(first_full..last_full)
                .map(|(k, _)| *k)
                .collect()
        } else {
            Vec::new()
        };
        for k in doomed {
            chunks.remove(&k);
        }
        for idx in [start / CHUNK, end.saturating_sub(1) / CHUNK] {
            let lo = (idx * CHUNK).max(start);
            let hi = ((idx + 1) * CHUNK).min(end);
            if lo < hi {
                if let Some(c) = chunks.get_mut(&idx) {
                    c[(lo - idx * CHUNK) as usize..(hi - idx * CHUNK) as usize].fill(0);
                }
            }
        }
    }

    fn truncate(node: &mut Node, size: u64) -> Result<(), Errno> {
        if !matches!(node.kind, Kind::File(_)) {
            return Err(if node.is_dir() {
                Errno::ISDIR
            } else {
                Errno::INVAL
            });
        }
        if size > i64::MAX as u64 {
            return Err(Errno::FBIG);
        }
        if size < node.size {
            let old = node.size;
            Self::file_zero(node, size, old.max(size));
            if let Kind::File(chunks) = &mut node.kind {
                let keep = size.div_ceil(CHUNK);
                let doomed: Vec<u64> = chunks.range(keep..).map(|(k, _)| *k).collect();
                for k in doomed {
                    chunks.remove(&k);
                }
            }
        }
        node.size = size;
        Ok(())
    }

    /// Open files need no FLUSH: data is in memory the moment it is
    /// written, and locks are kept by the kernel. One round trip less per
    /// close.
    fn opened() -> Opened {
        Opened {
            flags: OpenOutFlags::NOFLUSH,
            ..Opened::default()
        }
    }

    fn open_node(&self, ino: u64, flags: u32, kill: bool) -> Result<Opened, Errno> {
        let mut inner = self.write();
        let node = inner.nodes.get_mut(&ino).ok_or(Errno::NOENT)?;
        if flags & libc::O_TRUNC as u32 != 0 && matches!(node.kind, Kind::File(_)) {
            Self::truncate(node, 0)?;
            let t = now();
            node.mtime = t;
            node.ctime = t;
        }
        if kill {
            node.kill_suidgid();
        }
        node.opens += 1;
        Ok(Self::opened())
    }

    fn set_acl(node: &mut Node, name: &[u8], value: &[u8], kill_sgid: bool) -> Result<(), Errno> {
        let acl = Acl::parse(value).map_err(|_| Errno::INVAL)?;
        if name == ACL_DEFAULT {
            if !node.is_dir() {
                return Err(if value.is_empty() {
                    Errno::NODATA
                } else {
                    Errno::ACCESS
                });
            }
            node.xattrs
                .insert(OsString::from_vec_bytes(name), value.to_vec());
            return Ok(());
        }
        // An access ACL sets the mode's permission bits; one that says no
        // more than the mode is not kept (as ext4 and tmpfs do).
        node.mode = (node.mode & !0o777) | acl.mode_bits();
        if kill_sgid {
            node.mode &= !libc::S_ISGID;
        }
        if acl.is_equivalent_to_mode() {
            node.xattrs.remove(OsStr::from_bytes(name));
        } else {
            node.xattrs
                .insert(OsString::from_vec_bytes(name), value.to_vec());
        }
        Ok(())
    }
}

trait FromVecBytes {
    fn from_vec_bytes(b: &[u8]) -> OsString;
}

impl FromVecBytes for OsString {
    fn from_vec_bytes(b: &[u8]) -> OsString {
        OsStr::from_bytes(b).to_owned()
    }
}

fn time_of(t: SetTime) -> Time {
    match t {
        SetTime::Now => now(),
        SetTime::At { sec, nsec } => Time { sec, nsec },
    }
}

fn sx(t: Time) -> idfuse::abi::SxTime {
    idfuse::abi::SxTime {
        tv_sec: t.sec,
        tv_nsec: t.nsec,
        __reserved: 0,
    }
}

impl Filesystem for MemFs {
    fn capabilities(&self) -> InitFlags {
        InitFlags::POSIX_ACL
            | InitFlags::DONT_MASK
            | InitFlags::HANDLE_KILLPRIV_V2
            | InitFlags::DO_READDIRPLUS
            | InitFlags::READDIRPLUS_AUTO
            | InitFlags::SETXATTR_EXT
            | InitFlags::CACHE_SYMLINKS
            | InitFlags::PARALLEL_DIROPS
    }

    fn lookup(&self, ctx: &Context<'_>, parent: u64, name: &OsStr) -> idfuse::Result<Entry> {
        self.deny(ctx)?;
        let mut inner = self.write();
        let ino = Self::lookup_child(&inner, parent, name)?;
        let node = inner.nodes.get_mut(&ino).ok_or(Errno::NOENT)?;
        node.lookups += 1;
        Ok(Self::entry(ino, node))
    }

    fn forget(&self, ino: u64, nlookup: u64) {
        let mut inner = self.write();
        if let Some(n) = inner.nodes.get_mut(&ino) {
            n.lookups = n.lookups.saturating_sub(nlookup);
        }
        Self::maybe_free(&mut inner, ino);
    }

    fn batch_forget(&self, nodes: &mut dyn Iterator<Item = idfuse::ForgetOne>) {
        let mut inner = self.write();
        for f in nodes {
            if let Some(n) = inner.nodes.get_mut(&f.nodeid) {
                n.lookups = n.lookups.saturating_sub(f.nlookup);
            }
            Self::maybe_free(&mut inner, f.nodeid);
        }
    }

    fn getattr(&self, ctx: &Context<'_>, ino: u64, _fh: Option<u64>) -> idfuse::Result<AttrReply> {
        self.deny(ctx)?;
        let inner = self.read();
        let node = inner.nodes.get(&ino).ok_or(Errno::NOENT)?;
        Ok(AttrReply {
            attr: node.attr(ino),
            timeout: TTL,
        })
    }

    fn statx(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        _fh: Option<u64>,
        _flags: u32,
        _mask: u32,
    ) -> idfuse::Result<(Statx, Duration)> {
        self.deny(ctx)?;
        let inner = self.read();
        let n = inner.nodes.get(&ino).ok_or(Errno::NOENT)?;
        let st = Statx {
            mask: libc::STATX_BASIC_STATS | libc::STATX_BTIME,
            blksize: 4096,
            nlink: n.nlink,
            uid: n.uid,
            gid: n.gid,
            mode: n.mode as u16,
            ino,
            size: n.size,
            blocks: n.blocks(),
            atime: sx(n.atime),
            btime: sx(n.btime),
            ctime: sx(n.ctime),
            mtime: sx(n.mtime),
            rdev_major: libc::major(n.rdev as u64),
            rdev_minor: libc::minor(n.rdev as u64),
            ..Statx::default()
        };
        Ok((st, TTL))
    }

    fn setattr(&self, ctx: &Context<'_>, ino: u64, a: &SetAttr) -> idfuse::Result<AttrReply> {
        self.deny(ctx)?;
        let mut inner = self.write();
        let node = inner.nodes.get_mut(&ino).ok_or(Errno::NOENT)?;
        let t = now();
        if let Some(size) = a.size {
            Self::truncate(node, size)?;
            node.mtime = t;
        }
        if let Some(uid) = a.uid {
            node.uid = uid;
        }
        if let Some(gid) = a.gid {
            node.gid = gid;
        }
        if let Some(mode) = a.mode {
            node.mode = (node.mode & libc::S_IFMT) | (mode & 0o7777);
            // Keep the access ACL in step with the mode (the kernel leaves
            // this to the server).
            if let Some(mut acl) = node.acl(ACL_ACCESS) {
                acl.chmod(mode & 0o777);
                node.xattrs
                    .insert(OsString::from_vec_bytes(ACL_ACCESS), acl.to_bytes());
            }
        }
        if a.kill_suidgid {
            node.kill_suidgid();
        }
        if let Some(at) = a.atime {
            node.atime = time_of(at);
        }
        if let Some(mt) = a.mtime {
            node.mtime = time_of(mt);
        }
        node.ctime = match a.ctime {
            Some(ct) => time_of(ct),
            None => t,
        };
        Ok(AttrReply {
            attr: node.attr(ino),
            timeout: TTL,
        })
    }

    fn readlink(&self, ctx: &Context<'_>, ino: u64) -> idfuse::Result<Vec<u8>> {
        self.deny(ctx)?;
        let inner = self.read();
        match &inner.nodes.get(&ino).ok_or(Errno::NOENT)?.kind {
            Kind::Symlink(t) => Ok(t.clone()),
            _ => Err(Errno::INVAL),
        }
    }

    fn mknod(
        &self,
        _ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        owner: &Owner,
        mode: CreateMode,
        rdev: u32,
    ) -> idfuse::Result<Entry> {
        let kind = match mode.mode & libc::S_IFMT {
            libc::S_IFREG | 0 => Kind::File(BTreeMap::new()),
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO | libc::S_IFSOCK => Kind::Special,
            _ => return Err(Errno::INVAL),
        };
        let mode = CreateMode {
            mode: if mode.mode & libc::S_IFMT == 0 {
                mode.mode | libc::S_IFREG
            } else {
                mode.mode
            },
            ..mode
        };
        let mut inner = self.write();
        let ino = self.create_node(&mut inner, parent, Some(name), owner, mode, kind)?;
        let node = inner.nodes.get_mut(&ino).ok_or(Errno::IO)?;
        node.rdev = rdev;
        node.lookups += 1;
        Ok(Self::entry(ino, node))
    }

    fn mkdir(
        &self,
        _ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        owner: &Owner,
        mode: CreateMode,
    ) -> idfuse::Result<Entry> {
        let kind = Kind::Dir(Dir {
            parent,
            by_name: BTreeMap::new(),
            by_cookie: BTreeMap::new(),
            next_cookie: 3,
        });
        let mut inner = self.write();
        let ino = self.create_node(&mut inner, parent, Some(name), owner, mode, kind)?;
        let node = inner.nodes.get_mut(&ino).ok_or(Errno::IO)?;
        node.lookups += 1;
        Ok(Self::entry(ino, node))
    }

    fn symlink(
        &self,
        _ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        owner: &Owner,
        target: &OsStr,
    ) -> idfuse::Result<Entry> {
        if target.len() >= 4096 {
            return Err(Errno::NAMETOOLONG);
        }
        let mode = CreateMode {
            mode: libc::S_IFLNK | 0o777,
            umask: 0,
        };
        let mut inner = self.write();
        let kind = Kind::Symlink(target.as_bytes().to_vec());
        let ino = self.create_node(&mut inner, parent, Some(name), owner, mode, kind)?;
        let node = inner.nodes.get_mut(&ino).ok_or(Errno::IO)?;
        node.lookups += 1;
        Ok(Self::entry(ino, node))
    }

    fn unlink(&self, ctx: &Context<'_>, parent: u64, name: &OsStr) -> idfuse::Result<()> {
        self.deny(ctx)?;
        let mut inner = self.write();
        let ino = Self::lookup_child(&inner, parent, name)?;
        if inner.nodes.get(&ino).is_some_and(Node::is_dir) {
            return Err(Errno::ISDIR);
        }
        Self::remove_entry(&mut inner, parent, name)?;
        if let Some(n) = inner.nodes.get_mut(&ino) {
            n.nlink = n.nlink.saturating_sub(1);
            n.ctime = now();
        }
        Self::maybe_free(&mut inner, ino);
        Ok(())
    }

    fn rmdir(&self, ctx: &Context<'_>, parent: u64, name: &OsStr) -> idfuse::Result<()> {
        self.deny(ctx)?;
        let mut inner = self.write();
        let ino = Self::lookup_child(&inner, parent, name)?;
        let node = inner.nodes.get(&ino).ok_or(Errno::NOENT)?;
        if !node.dir()?.by_name.is_empty() {
            return Err(Errno::NOTEMPTY);
        }
        Self::remove_entry(&mut inner, parent, name)?;
        if let Some(n) = inner.nodes.get_mut(&ino) {
            n.nlink = 0;
        }
        if let Some(p) = inner.nodes.get_mut(&parent) {
            p.nlink = p.nlink.saturating_sub(1);
        }
        Self::maybe_free(&mut inner, ino);
        Ok(())
    }

    fn rename(
        &self,
        ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        whiteout_owner: Option<&Owner>,
    ) -> idfuse::Result<()> {
        self.deny(ctx)?;
        use idfuse::abi::{RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT};
        if flags & !(RENAME_EXCHANGE | RENAME_NOREPLACE | RENAME_WHITEOUT) != 0
            || (flags & RENAME_EXCHANGE != 0 && flags & (RENAME_NOREPLACE | RENAME_WHITEOUT) != 0)
        {
            return Err(Errno::INVAL);
        }
        check_name(newname)?;
        let mut inner = self.write();
        let src = Self::lookup_child(&inner, parent, name)?;
        let dst = Self::lookup_child(&inner, newparent, newname).ok();
        inner.nodes.get(&newparent).ok_or(Errno::NOENT)?.dir()?;
        let src_dir = inner.nodes.get(&src).is_some_and(Node::is_dir);
        if src_dir && src != newparent && Self::is_ancestor(&inner, src, newparent) {
            return Err(Errno::INVAL);
        }
        if src_dir && src == newparent {
            return Err(Errno::INVAL);
        }
        if flags & RENAME_EXCHANGE != 0 {
            let dst = dst.ok_or(Errno::NOENT)?;
            let dst_dir = inner.nodes.get(&dst).is_some_and(Node::is_dir);
            if dst_dir && Self::is_ancestor(&inner, dst, parent) {
                return Err(Errno::INVAL);
            }
            Self::remove_entry(&mut inner, parent, name)?;
            Self::remove_entry(&mut inner, newparent, newname)?;
            Self::insert_entry(&mut inner, parent, name, dst)?;
            Self::insert_entry(&mut inner, newparent, newname, src)?;
            for (ino, p) in [(src, newparent), (dst, parent)] {
                if let Some(Kind::Dir(d)) = inner.nodes.get_mut(&ino).map(|n| &mut n.kind) {
                    d.parent = p;
                }
            }
            if parent != newparent {
                // A directory moving out takes its ".." link with it.
                for (is_dir, from, to) in
                    [(src_dir, parent, newparent), (dst_dir, newparent, parent)]
                {
                    if is_dir {
                        if let Some(n) = inner.nodes.get_mut(&from) {
                            n.nlink = n.nlink.saturating_sub(1);
                        }
                        if let Some(n) = inner.nodes.get_mut(&to) {
                            n.nlink += 1;
                        }
                    }
                }
            }
            let t = now();
            for ino in [src, dst] {
                if let Some(n) = inner.nodes.get_mut(&ino) {
                    n.ctime = t;
                }
            }
            return Ok(());
        }
        if let Some(dst) = dst {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(Errno::EXIST);
            }
            if dst == src {
                return Ok(());
            }
            let dnode = inner.nodes.get(&dst).ok_or(Errno::NOENT)?;
            match (src_dir, dnode.is_dir()) {
                (true, false) => return Err(Errno::NOTDIR),
                (false, true) => return Err(Errno::ISDIR),
                (true, true) if !dnode.dir()?.by_name.is_empty() => return Err(Errno::NOTEMPTY),
                _ => {}
            }
            Self::remove_entry(&mut inner, newparent, newname)?;
            let dst_is_dir = dnode_is_dir(&inner, dst);
            if let Some(n) = inner.nodes.get_mut(&dst) {
                n.nlink = if dst_is_dir {
                    0
                } else {
                    n.nlink.saturating_sub(1)
                };
                n.ctime = now();
            }
            if dst_is_dir {
                if let Some(p) = inner.nodes.get_mut(&newparent) {
                    p.nlink = p.nlink.saturating_sub(1);
                }
            }
            Self::maybe_free(&mut inner, dst);
        }
        Self::remove_entry(&mut inner, parent, name)?;
        Self::insert_entry(&mut inner, newparent, newname, src)?;
        if let Some(n) = inner.nodes.get_mut(&src) {
            n.ctime = now();
            if let Kind::Dir(d) = &mut n.kind {
                d.parent = newparent;
            }
        }
        if src_dir && parent != newparent {
            if let Some(p) = inner.nodes.get_mut(&parent) {
                p.nlink = p.nlink.saturating_sub(1);
            }
            if let Some(p) = inner.nodes.get_mut(&newparent) {
                p.nlink += 1;
            }
        }
        if flags & RENAME_WHITEOUT != 0 {
            let owner = whiteout_owner.ok_or(Errno::INVAL)?;
            let mode = CreateMode {
                mode: libc::S_IFCHR,
                umask: 0,
            };
            self.create_node(&mut inner, parent, Some(name), owner, mode, Kind::Special)?;
        }
        Ok(())
    }

    fn link(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
    ) -> idfuse::Result<Entry> {
        self.deny(ctx)?;
        check_name(newname)?;
        let mut inner = self.write();
        if Self::lookup_child(&inner, newparent, newname).is_ok() {
            return Err(Errno::EXIST);
        }
        let node = inner.nodes.get(&ino).ok_or(Errno::NOENT)?;
        if node.is_dir() {
            return Err(Errno::PERM);
        }
        Self::insert_entry(&mut inner, newparent, newname, ino)?;
        let node = inner.nodes.get_mut(&ino).ok_or(Errno::NOENT)?;
        node.nlink += 1;
        node.lookups += 1;
        node.ctime = now();
        Ok(Self::entry(ino, node))
    }

    fn open(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        flags: u32,
        kill_suidgid: bool,
    ) -> idfuse::Result<Opened> {
        self.deny(ctx)?;
        self.open_node(ino, flags, kill_suidgid)
    }

    fn read(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        _fh: u64,
        offset: u64,
        size: u32,
        buf: &mut Vec<u8>,
    ) -> idfuse::Result<()> {
        self.deny(ctx)?;
        let inner = self.read();
        let node = inner.nodes.get(&ino).ok_or(Errno::NOENT)?;
        if node.is_dir() {
            return Err(Errno::ISDIR);
        }
        Self::file_read(node, offset, size, buf);
        Ok(())
    }

    fn write(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        _fh: u64,
        offset: u64,
        data: &[u8],
        wf: WriteFlags,
        flags: u32,
    ) -> idfuse::Result<u32> {
        self.deny(ctx)?;
        let mut inner = self.write();
        let node = inner.nodes.get_mut(&ino).ok_or(Errno::NOENT)?;
        let offset = if flags & libc::O_APPEND as u32 != 0 {
            node.size
        } else {
            offset
        };
        Self::file_write(node, offset, data)?;
        if wf.contains(WriteFlags::KILL_SUIDGID) {
            node.kill_suidgid();
        }
        let t = now();
        node.mtime = t;
        node.ctime = t;
        Ok(data.len() as u32)
    }

    fn release(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        _fh: u64,
        _flags: u32,
        _lo: Option<u64>,
        _flush: bool,
    ) -> idfuse::Result<()> {
        let mut inner = self.write();
        if let Some(n) = inner.nodes.get_mut(&ino) {
            n.opens = n.opens.saturating_sub(1);
        }
        Self::maybe_free(&mut inner, ino);
        Ok(())
    }

    fn opendir(&self, ctx: &Context<'_>, ino: u64, _flags: u32) -> idfuse::Result<Opened> {
        self.deny(ctx)?;
        let inner = self.read();
        inner.nodes.get(&ino).ok_or(Errno::NOENT)?.dir()?;
        // Every change to a memfs directory passes through the kernel, which
        // drops its cached listing when it makes one: the kernel may keep
        // listings between opens.
        Ok(Opened {
            flags: OpenOutFlags::CACHE_DIR | OpenOutFlags::KEEP_CACHE,
            ..Opened::default()
        })
    }

    fn readdir(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        _fh: u64,
        offset: u64,
        out: &mut DirBuf,
    ) -> idfuse::Result<()> {
        self.deny(ctx)?;
        let inner = self.read();
        let node = inner.nodes.get(&ino).ok_or(Errno::NOENT)?;
        let d = node.dir()?;
        if offset < 1 && !out.push(ino, 1, libc::DT_DIR as u32, b".") {
            return Ok(());
        }
        if offset < 2 && !out.push(d.parent, 2, libc::DT_DIR as u32, b"..") {
            return Ok(());
        }
        for (cookie, name) in d.by_cookie.range(offset.max(2) + 1..) {
            let Some((child, _)) = d.by_name.get(name) else {
                continue;
            };
            let typ = inner.nodes.get(child).map_or(0, |n| dtype(n.mode));
            if !out.push(*child, *cookie, typ, name.as_bytes()) {
                break;
            }
        }
        Ok(())
    }

    fn readdirplus(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        _fh: u64,
        offset: u64,
        out: &mut DirPlusBuf<'_>,
    ) -> idfuse::Result<()> {
        self.deny(ctx)?;
        let mut inner = self.write();
        let node = inner.nodes.get(&ino).ok_or(Errno::NOENT)?;
        let d = node.dir()?;
        let parent = d.parent;
        if offset < 1 {
            let e = Self::entry(ino, node);
            if !out.push(&e, 1, libc::DT_DIR as u32, OsStr::new(".")) {
                return Ok(());
            }
        }
        if offset < 2 {
            let pnode = inner.nodes.get(&parent).ok_or(Errno::NOENT)?;
            let e = Self::entry(parent, pnode);
            if !out.push(&e, 2, libc::DT_DIR as u32, OsStr::new("..")) {
                return Ok(());
            }
        }
        let list: Vec<(u64, OsString, u64)> = inner
            .nodes
            .get(&ino)
            .and_then(|n| n.dir().ok())
            .map(|d| {
                d.by_cookie
                    .range(offset.max(2) + 1..)
                    .filter_map(|(c, name)| {
                        d.by_name.get(name).map(|(i, _)| (*c, name.clone(), *i))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (cookie, name, child) in list {
            let Some(n) = inner.nodes.get_mut(&child) else {
                continue;
            };
            let e = Self::entry(child, n);
            if !out.push(&e, cookie, dtype(n.mode), &name) {
                break;
            }
            n.lookups += 1;
        }
        Ok(())
    }

    fn statfs(&self, _ctx: &Context<'_>, _ino: u64) -> idfuse::Result<Kstatfs> {
        let inner = self.read();
        let used: u64 = inner.nodes.values().map(Node::blocks).sum::<u64>() / 8;
        let total = 1u64 << 28;
        Ok(Kstatfs {
            blocks: total,
            bfree: total.saturating_sub(used),
            bavail: total.saturating_sub(used),
            files: 1 << 32,
            ffree: (1u64 << 32).saturating_sub(inner.nodes.len() as u64),
            bsize: 4096,
            namelen: NAME_MAX as u32,
            frsize: 4096,
            ..Kstatfs::default()
        })
    }

    fn setxattr(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: u32,
        sf: SetxattrFlags,
    ) -> idfuse::Result<()> {
        self.deny(ctx)?;
        if name.len() > 255 {
            return Err(Errno::RANGE);
        }
        if value.len() > 65536 {
            return Err(Errno::TOOBIG);
        }
        let is_acl = name.as_bytes() == ACL_ACCESS || name.as_bytes() == ACL_DEFAULT;
        let mut inner = self.write();
        let node = inner.nodes.get_mut(&ino).ok_or(Errno::NOENT)?;
        let exists = node.xattrs.contains_key(name);
        if flags & XATTR_CREATE != 0 && exists {
            return Err(Errno::EXIST);
        }
        if flags & XATTR_REPLACE != 0 && !exists && !is_acl {
            return Err(Errno::NODATA);
        }
        if is_acl {
            if self.fault == Some(Fault::DropAclXattrs) {
                return Ok(());
            }
            Self::set_acl(
                node,
                name.as_bytes(),
                value,
                sf.contains(SetxattrFlags::ACL_KILL_SGID),
            )?;
        } else {
            node.xattrs.insert(name.to_owned(), value.to_vec());
        }
        node.ctime = now();
        Ok(())
    }

    fn getxattr(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        name: &OsStr,
        _size: u32,
    ) -> idfuse::Result<Xattr> {
        self.deny(ctx)?;
        let inner = self.read();
        let node = inner.nodes.get(&ino).ok_or(Errno::NOENT)?;
        let v = node.xattrs.get(name).ok_or(Errno::NODATA)?;
        Ok(Xattr::Data(v.clone()))
    }

    fn listxattr(&self, ctx: &Context<'_>, ino: u64, _size: u32) -> idfuse::Result<Xattr> {
        self.deny(ctx)?;
        let inner = self.read();
        let node = inner.nodes.get(&ino).ok_or(Errno::NOENT)?;
        let mut list = Vec::new();
        for k in node.xattrs.keys() {
            list.extend_from_slice(k.as_bytes());
            list.push(0);
        }
        Ok(Xattr::Data(list))
    }

    fn removexattr(&self, ctx: &Context<'_>, ino: u64, name: &OsStr) -> idfuse::Result<()> {
        self.deny(ctx)?;
        let mut inner = self.write();
        let node = inner.nodes.get_mut(&ino).ok_or(Errno::NOENT)?;
        node.xattrs.remove(name).ok_or(Errno::NODATA)?;
        node.ctime = now();
        Ok(())
    }

    fn create(
        &self,
        _ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        owner: &Owner,
        mode: CreateMode,
        _flags: u32,
        _kill: bool,
    ) -> idfuse::Result<(Entry, Opened)> {
        let mut inner = self.write();
        let mode = CreateMode {
            mode: (mode.mode & !libc::S_IFMT) | libc::S_IFREG,
            ..mode
        };
        let ino = self.create_node(
            &mut inner,
            parent,
            Some(name),
            owner,
            mode,
            Kind::File(BTreeMap::new()),
        )?;
        let node = inner.nodes.get_mut(&ino).ok_or(Errno::IO)?;
        node.lookups += 1;
        node.opens += 1;
        Ok((Self::entry(ino, node), Self::opened()))
    }

    fn tmpfile(
        &self,
        _ctx: &Context<'_>,
        parent: u64,
        owner: &Owner,
        mode: CreateMode,
        _flags: u32,
    ) -> idfuse::Result<(Entry, Opened)> {
        let mut inner = self.write();
        let mode = CreateMode {
            mode: (mode.mode & !libc::S_IFMT) | libc::S_IFREG,
            ..mode
        };
        let ino = self.create_node(
            &mut inner,
            parent,
            None,
            owner,
            mode,
            Kind::File(BTreeMap::new()),
        )?;
        let node = inner.nodes.get_mut(&ino).ok_or(Errno::IO)?;
        node.lookups += 1;
        node.opens += 1;
        Ok((Self::entry(ino, node), Self::opened()))
    }

    fn fallocate(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        _fh: u64,
        offset: u64,
        length: u64,
        mode: u32,
    ) -> idfuse::Result<()> {
        self.deny(ctx)?;
        let end = offset
            .checked_add(length)
            .filter(|e| *e <= i64::MAX as u64)
            .ok_or(Errno::FBIG)?;
        let keep = mode & libc::FALLOC_FL_KEEP_SIZE as u32 != 0;
        let mut inner = self.write();
        let node = inner.nodes.get_mut(&ino).ok_or(Errno::NOENT)?;
        if !matches!(node.kind, Kind::File(_)) {
            return Err(Errno::NODEV);
        }
        let punch = libc::FALLOC_FL_PUNCH_HOLE as u32;
        let zero = libc::FALLOC_FL_ZERO_RANGE as u32;
        match mode & !(libc::FALLOC_FL_KEEP_SIZE as u32) {
            0 => {
                if let Kind::File(chunks) = &mut node.kind {
                    for idx in offset / CHUNK..end.div_ceil(CHUNK) {
                        chunks.entry(idx).or_insert_with(|| vec![0; CHUNK as usize]);
                    }
                }
            }
            m if m == punch && keep => Self::file_zero(node, offset, end.min(node.size)),
            m if m == zero => Self::file_zero(node, offset, end.min(node.size)),
            _ => return Err(Errno::OPNOTSUPP),
        }
        if !keep && end > node.size {
            node.size = end;
        }
        let t = now();
        node.mtime = t;
        node.ctime = t;
        Ok(())
    }

    fn lseek(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        _fh: u64,
        offset: u64,
        whence: u32,
    ) -> idfuse::Result<u64> {
        self.deny(ctx)?;
        let inner = self.read();
        let node = inner.nodes.get(&ino).ok_or(Errno::NOENT)?;
        let Kind::File(chunks) = &node.kind else {
            return Err(Errno::INVAL);
        };
        if offset >= node.size {
            return Err(Errno::NXIO);
        }
        match whence as i32 {
            libc::SEEK_DATA => {
                let idx = offset / CHUNK;
                match chunks.range(idx..).next() {
                    Some((k, _)) => {
                        let pos = (k * CHUNK).max(offset);
                        if pos >= node.size {
                            Err(Errno::NXIO)
                        } else {
                            Ok(pos)
                        }
                    }
                    None => Err(Errno::NXIO),
                }
            }
            libc::SEEK_HOLE => {
                let mut idx = offset / CHUNK;
                while chunks.contains_key(&idx) {
                    idx += 1;
                }
                Ok((idx * CHUNK).max(offset).min(node.size))
            }
            libc::SEEK_SET => Ok(offset),
            _ => Err(Errno::INVAL),
        }
    }

    fn copy_file_range(
        &self,
        ctx: &Context<'_>,
        ino_in: u64,
        _fh_in: u64,
        off_in: u64,
        ino_out: u64,
        _fh_out: u64,
        off_out: u64,
        len: u64,
        _flags: u64,
    ) -> idfuse::Result<u64> {
        self.deny(ctx)?;
        let len = len.min(1 << 30) as u32;
        let mut data = Vec::new();
        {
            let inner = self.read();
            let src = inner.nodes.get(&ino_in).ok_or(Errno::NOENT)?;
            if !matches!(src.kind, Kind::File(_)) {
                return Err(Errno::INVAL);
            }
            Self::file_read(src, off_in, len, &mut data);
        }
        let mut inner = self.write();
        let dst = inner.nodes.get_mut(&ino_out).ok_or(Errno::NOENT)?;
        Self::file_write(dst, off_out, &data)?;
        let t = now();
        dst.mtime = t;
        dst.ctime = t;
        Ok(data.len() as u64)
    }
}

fn dnode_is_dir(inner: &Inner, ino: u64) -> bool {
    inner.nodes.get(&ino).is_some_and(Node::is_dir)
}
