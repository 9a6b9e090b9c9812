//! `overlay`: kernel overlayfs semantics and on-disk format over FUSE,
//! correct on idmapped mounts. Layers are held by `O_PATH` fds and every
//! name resolves one component at a time below them (the mirror's
//! primitives in `backing`), never by path strings.
//!
//! - Lookups and listings read the layers as `layers` describes (kernel
//!   whiteouts and opaque xattrs, and the OCI `.wh.` forms).
//! - A change to a lower object copies it up first (`copyup`), keeping its
//!   owner, mode, times and xattrs. New objects are created in the upper
//!   layer as the kernel's `Owner` (per-thread fs credentials), never
//!   created and then chowned; removing a lower object leaves a char 0/0
//!   whiteout; a directory made where a lower one was whited out is opaque.
//!   A regular file created where a whiteout is takes its place in one
//!   step, as in the kernel (`O_TMPFILE`, then `RENAME_EXCHANGE` through
//!   the work directory); other objects remove the whiteout first.
//! - Renaming a directory that has lower layers answers `EXDEV`, as kernel
//!   overlayfs does without `redirect_dir`; `mv` then copies.
//! - Node ids and `st_ino` come from the layer an object was first found in
//!   and survive its copy-up for the life of the mount (`inodes`).
//! - Hard links: a lower file with several names is one node; a copy-up
//!   through one name copies that name only (kernel overlayfs without
//!   `index=on` does the same), so the other names keep the lower data once
//!   the kernel forgets the node, and `st_nlink` is the copy's own.
//! - A file opened for reading before its copy-up reads the copy after it,
//!   as on kernel overlayfs. The kernel itself reads an open it was given
//!   a lower backing file for (FUSE passthrough), so while one is open, an
//!   open for writing and a truncate by path are refused with ETXTBSY
//!   instead.
//! - No permission checks: the kernel makes them (`default_permissions`).

mod copyup;
mod inodes;
mod layers;
pub mod layout;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use idfuse::{
    AttrReply, Context, CreateMode, DirBuf, DirPlusBuf, Entry, Errno, Filesystem, InitFlags,
    Kstatfs, Negotiated, OpenOutFlags, Opened, Owner, SetAttr, SetxattrFlags, Statx, Xattr,
};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, StatxFlags};

use crate::backing::{
    check_name, key_of, open_child, rdev_from_fuse, statx_fd, statx_reply, to_attr,
    write_clears_setid, AsOwner, BackingFiles, Handles, Key, ProcFd, BENEATH,
};

use copyup::{clear_dir, remove_tree};
use inodes::{FileIo, Layers, Node, Table, ROOT};
use layers::{is_dir, is_whiteout, reserved, DirEnt, Listing, Reader};
pub use layout::{Layout, LayoutError, LowerOptions};

/// How long the kernel may cache names and attributes of objects that
/// live only in lower layers, which are immutable by contract.
pub const LOWER_TIMEOUT: Duration = Duration::from_secs(86_400);

/// The open flags that decide whether an open file may serve as its
/// inode's backing file as it is.
const BACKING_AS_IS: OFlags = OFlags::ACCMODE
    .union(OFlags::APPEND)
    .union(OFlags::DIRECT)
    .union(OFlags::SYNC)
    .union(OFlags::DSYNC)
    .union(OFlags::NOATIME);

/// How to run an [`Overlay`].
#[derive(Debug, Clone)]
pub struct OverlayOptions {
    /// How long the kernel may cache names of upper objects (and absent
    /// names).
    pub entry_timeout: Duration,
    /// How long the kernel may cache attributes of upper objects.
    pub attr_timeout: Duration,
    /// Hand regular files to the kernel as backing files (`FUSE_PASSTHROUGH`).
    pub passthrough_io: bool,
    /// Keep the overlay's metadata in `user.overlay.*` xattrs (as kernel
    /// overlayfs's `userxattr`, for a daemon in a user namespace) instead
    /// of `trusted.overlay.*`.
    pub userxattr: bool,
}

impl Default for OverlayOptions {
    fn default() -> Self {
        Self {
            entry_timeout: Duration::from_secs(1),
            attr_timeout: Duration::from_secs(1),
            passthrough_io: true,
            userxattr: false,
        }
    }
}

impl OverlayOptions {
    /// Take an `-o` option the framework does not know: `userxattr`,
    /// `entry_timeout=S`, `attr_timeout=S`, `timeout=S`. `Ok(false)` when
    /// the option is not ours (the layer options are the caller's).
    pub fn parse_option(&mut self, key: &str, value: Option<&str>) -> Result<bool, String> {
        let secs = |v: Option<&str>| {
            v.and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0 && *v < 1e9)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| {
                    format!("`{key}` needs a value in seconds ≥ 0, e.g. {key}=1 or {key}=0.5")
                })
        };
        match key {
            "userxattr" if value.is_none() => self.userxattr = true,
            "userxattr" => return Err("`userxattr` takes no value".into()),
            "entry_timeout" => self.entry_timeout = secs(value)?,
            "attr_timeout" => self.attr_timeout = secs(value)?,
            "timeout" => {
                self.entry_timeout = secs(value)?;
                self.attr_timeout = self.entry_timeout;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The options [`OverlayOptions::parse_option`] takes, for messages.
    pub fn known_options() -> Vec<String> {
        [
            "userxattr",
            "entry_timeout=SECS",
            "attr_timeout=SECS",
            "timeout=SECS",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// Receives one listed entry: (directory node, d_ino, offset of the next
/// entry, DT_*, name, and for an entry of a listing that is current (see
/// [`Listing`]) the directory's layers from the one it was found in down
/// with what the look-ahead found); answers whether to go on.
type Emit<'a> =
    dyn FnMut(&Arc<Node>, u64, u64, u32, &[u8], Option<Current<'_>>) -> Result<bool, Errno> + 'a;

/// An entry of a current listing (see [`Emit`]).
struct Current<'a> {
    /// The directory's layers from the one the entry was found in down.
    from: &'a Chain,
    /// What the look-ahead helper found for it, if it got there first.
    ahead: Option<Option<layers::Found>>,
}

/// Marks a char device 0/0 in a layer as one the user made (see
/// `Reader::device_xattr`); private, like every `trusted.overlay.` name.
const DEVICE_XATTR: &str = "trusted.overlay.idfuse.device";

/// Work for the look-ahead helper thread.
type Job = Box<dyn FnOnce() + Send>;

/// The soft open-file limit below which the overlay does not look ahead
/// (the usual default of 1,024 among them): room for some 16 directories
/// listed at once.
const LOOK_AHEAD_MIN_FDS: u64 = 8192;

/// Entries a READDIRPLUS reply is resolved ahead by: about one and a half
/// replies (a reply carries some 190 entries with short names).
const LOOK_AHEAD: usize = 256;

/// A directory's layers, top first, each flagged true if it is the upper.
type Chain = [(bool, Arc<OwnedFd>)];

/// The overlay filesystem.
pub struct Overlay {
    table: RwLock<Table>,
    /// Upper key → origin key of the objects copied up by this mount.
    copied: Mutex<HashMap<Key, Key>>,
    /// `WORKDIR/work`, where copies are built; `None`: read-only.
    work: Option<OwnedFd>,
    /// Serialises copy-ups (a copy-up checks, builds and renames).
    copy_lock: Mutex<()>,
    next_temp: AtomicU64,
    reader: Reader,
    /// `trusted.overlay.` or `user.overlay.`: hidden from the mount.
    private_prefix: &'static str,
    /// Device numbers of the layers' filesystems, in order of first sight:
    /// the index tags inode numbers (see [`Overlay::report_ino`]).
    devs: RwLock<Vec<u64>>,
    /// Open files (a directory's upper layer for directories) and, for
    /// directories, the merged listing, built on the first read (not at
    /// opendir: a listing the kernel has cached is opened, never read) and
    /// rebuilt on a later read from offset 0; entry `i` has offset `i + 3`.
    handles: Handles<Node, Option<Listing>>,
    /// Changes made to upper directories through the overlay (creations,
    /// removals, renames, copy-ups), counted once each is done: a listing
    /// made at the same count is current (see [`Listing`]).
    changes: AtomicU64,
    proc: ProcFd,
    opts: OverlayOptions,
    backing: BackingFiles,
    /// The look-ahead helper's queue (see [`Ahead`](layers::Ahead)), started on first
    /// use; it ends when the overlay is dropped.
    helper: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    /// Whether to look ahead at all: the entries resolved ahead hold an
    /// fd each until they are answered (up to about two replies' worth per
    /// open directory), which a low open-file limit cannot spare.
    look_ahead: bool,
}

/// See [`Overlay::changing`].
pub(super) struct Changing<'a>(&'a AtomicU64);

/// What is at a name a new object is to take (see [`Overlay::find_room`]).
enum Room {
    /// Nothing in the upper layer; `hides`: a lower layer has the name.
    Free { hides: bool },
    /// A whiteout (or another object that hides the name) in the upper
    /// layer.
    Whiteout,
}

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn io_error(what: String) -> impl FnOnce(Errno) -> std::io::Error {
    move |e| std::io::Error::new(std::io::Error::from(e).kind(), format!("{what}: {e}"))
}

fn open_dir_path(what: &str, p: &std::path::Path) -> std::io::Result<OwnedFd> {
    rustix::fs::open(
        p,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_error(format!("cannot open {what} {}", p.display())))
}

impl Overlay {
    /// An overlay of `layout`'s layers. Clears debris of interrupted
    /// copy-ups from `WORKDIR/work` (creating it if needed).
    pub fn new(layout: Layout, opts: OverlayOptions) -> std::io::Result<Overlay> {
        crate::backing::reserve_fd_table();
        let proc = ProcFd::open().map_err(io_error(
            "cannot open /proc/self/fd (the overlay reopens files through it; mount /proc)".into(),
        ))?;
        let mut lowers = Vec::new();
        for l in &layout.lowers {
            lowers.push(Arc::new(open_dir_path("lowerdir", l)?));
        }
        let upper = match &layout.upper {
            Some(u) => Some(Arc::new(open_dir_path("upperdir", u)?)),
            None => None,
        };
        let work = match &layout.work {
            Some(w) => {
                let wd = open_dir_path("workdir", w)?;
                match rustix::fs::mkdirat(&wd, "work", Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => {
                        return Err(io_error(format!(
                            "cannot create {}/work (the overlay builds copy-ups there)",
                            w.display()
                        ))(e))
                    }
                }
                let work = open_child(wd.as_fd(), OsStr::new("work"))
                    .map_err(io_error(format!("cannot open {}/work", w.display())))?;
                let readable = proc
                    .reopen(work.as_fd(), OFlags::RDONLY | OFlags::DIRECTORY)
                    .map_err(io_error(format!("cannot read {}/work", w.display())))?;
                clear_dir(readable.as_fd()).map_err(io_error(format!(
                    "cannot clear debris of earlier copy-ups from {}/work; remove what is in it",
                    w.display()
                )))?;
                Some(work)
            }
            None => None,
        };
        let reader = Reader {
            opaque_xattr: if opts.userxattr {
                "user.overlay.opaque"
            } else {
                "trusted.overlay.opaque"
            },
            // `user.` xattrs are for regular files and directories only.
            device_xattr: (!opts.userxattr).then_some(DEVICE_XATTR),
        };
        let top = upper.as_ref().or(lowers.first()).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "overlay needs a lower layer",
            )
        })?;
        let st = statx_fd(top.as_fd()).map_err(io_error("stat of the top layer".into()))?;
        // The root merges every lower unless upper or a lower is opaque.
        let mut root_lowers = Vec::new();
        let upper_opaque = match &upper {
            Some(u) => reader
                .is_opaque(u.as_fd())
                .map_err(io_error("reading upperdir's opaque mark".into()))?,
            None => false,
        };
        if !upper_opaque {
            for l in &lowers {
                root_lowers.push(l.clone());
                if reader
                    .is_opaque(l.as_fd())
                    .map_err(io_error("reading a lowerdir's opaque mark".into()))?
                {
                    break;
                }
            }
        }
        let key = key_of(&st);
        let root = Arc::new(Node {
            id: ROOT,
            key,
            ino: st.stx_ino,
            dir: true,
            layers: Mutex::new(Layers {
                upper,
                lowers: root_lowers,
                parent: None,
            }),
            io: Mutex::new(FileIo::Idle),
        });
        Ok(Overlay {
            table: RwLock::new(Table::new(root)),
            copied: Mutex::new(HashMap::new()),
            work,
            copy_lock: Mutex::new(()),
            next_temp: AtomicU64::new(1),
            reader,
            private_prefix: if opts.userxattr {
                "user.overlay."
            } else {
                "trusted.overlay."
            },
            devs: RwLock::new(vec![key.0]),
            handles: Handles::new(),
            changes: AtomicU64::new(0),
            proc,
            backing: BackingFiles::new(opts.passthrough_io),
            opts,
            helper: Mutex::new(None),
            look_ahead: rustix::process::getrlimit(rustix::process::Resource::Nofile)
                .current
                .is_none_or(|n| n >= LOOK_AHEAD_MIN_FDS),
        })
    }

    /// Nodes the kernel holds lookups on, plus the root.
    pub fn inode_count(&self) -> usize {
        self.table.read().map_or(0, |t| t.len())
    }

    /// True once a file was handed to the kernel as a backing file.
    pub fn passthrough_active(&self) -> bool {
        self.backing.active()
    }

    fn node(&self, id: u64) -> Result<Arc<Node>, Errno> {
        self.table
            .read()
            .map_err(|_| Errno::IO)?
            .get(id)
            .ok_or(Errno::STALE)
    }

    fn read_only(&self) -> bool {
        self.work.is_none()
    }

    /// The origin of the object with key `key` in some layer: itself,
    /// unless this mount copied it up from another.
    fn origin(&self, key: Key) -> Key {
        self.copied
            .lock()
            .ok()
            .and_then(|c| c.get(&key).copied())
            .unwrap_or(key)
    }

    /// The `st_ino` the overlay reports for an object whose origin is
    /// `key`. Layers on one filesystem keep their numbers (unique there);
    /// objects on further filesystems get the filesystem's index in the
    /// top 16 bits (as overlayfs's `xino`), where the number leaves them
    /// free; else the number as it is, which may then equal another
    /// layer's.
    fn report_ino(&self, key: Key) -> u64 {
        let (dev, ino) = key;
        let idx = {
            let known = self
                .devs
                .read()
                .ok()
                .and_then(|d| d.iter().position(|x| *x == dev));
            match known {
                Some(i) => i,
                None => match self.devs.write() {
                    Ok(mut d) => {
                        d.push(dev);
                        d.len() - 1
                    }
                    Err(_) => 0,
                },
            }
        };
        if idx == 0 || ino >> 48 != 0 {
            ino
        } else {
            ino | ((idx as u64) << 48)
        }
    }

    /// Attributes of `st` as the overlay shows them for `node`.
    fn attr(&self, node: &Node, layers: &Layers, st: &rustix::fs::Statx) -> idfuse::Attr {
        let mut a = to_attr(st);
        a.ino = node.ino;
        if node.dir && layers.lowers.len() + usize::from(layers.upper.is_some()) > 1 {
            // A merged directory's link count is not known without
            // listing every layer; 1 tells find(1) not to count on it.
            a.nlink = 1;
        }
        a
    }

    fn attr_ttl(&self, layers: &Layers) -> Duration {
        if layers.upper.is_none() {
            LOWER_TIMEOUT
        } else {
            self.opts.attr_timeout
        }
    }

    fn entry_ttl(&self, layers: &Layers) -> Duration {
        if layers.upper.is_none() {
            LOWER_TIMEOUT
        } else {
            self.opts.entry_timeout
        }
    }

    /// Count a lookup of the object `found` as `name` in `parent`.
    fn register(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        found: layers::Found,
    ) -> Result<Entry, Errno> {
        let top_key = key_of(&found.st);
        let key = match &found.upper {
            Some(_) => self.origin(top_key),
            None => top_key,
        };
        let ino = self.report_ino(key);
        let dir = is_dir(&found.st);
        let node = self
            .table
            .write()
            .map_err(|_| Errno::IO)?
            .lookup(key, |id| Node {
                id,
                key,
                ino,
                dir,
                layers: Mutex::new(Layers {
                    upper: found.upper.clone(),
                    lowers: found.lowers.clone(),
                    parent: Some((parent.clone(), name.to_os_string())),
                }),
                io: Mutex::new(FileIo::Idle),
            });
        let layers = node.layers();
        Ok(Entry {
            ino: node.id,
            generation: 0,
            attr: self.attr(&node, &layers, &found.st),
            entry_timeout: self.entry_ttl(&layers),
            attr_timeout: self.attr_ttl(&layers),
        })
    }

    /// Count a change to an upper directory when the guard is dropped,
    /// that is once the change is made (or failed): a listing started
    /// before then must not count as current.
    pub(super) fn changing(&self) -> Changing<'_> {
        Changing(&self.changes)
    }

    fn lookup_in(&self, parent: &Arc<Node>, name: &OsStr) -> Result<Option<Entry>, Errno> {
        if reserved(name) {
            return Ok(None);
        }
        let layers = parent.layers();
        match self.reader.resolve(&layers, name)? {
            Some(f) => self.register(parent, name, f).map(Some),
            None => Ok(None),
        }
    }

    fn attr_of(&self, node: &Node) -> Result<AttrReply, Errno> {
        let layers = node.layers();
        let top = layers.top().ok_or(Errno::STALE)?;
        let st = statx_fd(top.as_fd())?;
        Ok(AttrReply {
            attr: self.attr(node, &layers, &st),
            timeout: self.attr_ttl(&layers),
        })
    }

    /// Prepare `name` in `parent` for a new object: the parent copied up,
    /// a whiteout there removed. Returns the parent's upper directory and
    /// whether the new object hides something of the lower layers (a new
    /// directory must then be opaque).
    ///
    /// The guard it returns counts the change (see [`Overlay::changing`]):
    /// hold it until the new object is made.
    fn make_room(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
    ) -> Result<(Arc<OwnedFd>, bool, Changing<'_>), Errno> {
        let (pupper, room, changing) = self.find_room(parent, name)?;
        let hides = match room {
            Room::Free { hides } => hides,
            Room::Whiteout => {
                rustix::fs::unlinkat(&*pupper, name, AtFlags::empty())?;
                true
            }
        };
        Ok((pupper, hides, changing))
    }

    /// [`Overlay::make_room`] without removing a whiteout at `name`: says
    /// whether one is there instead.
    fn find_room(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
    ) -> Result<(Arc<OwnedFd>, Room, Changing<'_>), Errno> {
        check_name(name)?;
        if reserved(name) {
            // Would read back as a whiteout, here or under kernel overlayfs
            // with OCI tooling.
            tracing::warn!(name = ?name, "refused: names starting with .wh. are whiteouts in the overlay's on-disk format");
            return Err(Errno::INVAL);
        }
        if self.read_only() {
            return Err(Errno::ROFS);
        }
        let changing = self.changing();
        let pupper = self.copy_up(parent, false)?;
        match open_child(pupper.as_fd(), name) {
            Ok(fd) => {
                if !self.reader.hides(fd.as_fd(), &statx_fd(fd.as_fd())?)? {
                    return Err(Errno::EXIST);
                }
                Ok((pupper, Room::Whiteout, changing))
            }
            Err(Errno::NOENT) => {
                let hides = self.reader.in_lowers(&parent.layers(), name)?;
                Ok((pupper, Room::Free { hides }, changing))
            }
            Err(e) => Err(e),
        }
    }

    /// An unnamed regular file in `dir` (`O_TMPFILE`), made as `owner`, so
    /// that it gets what a create in `dir` would. `flags` gains `O_RDWR` if
    /// it has no write access (`O_TMPFILE` needs one); the flags used, with
    /// `O_TMPFILE`, are returned with the file.
    fn open_tmpfile(
        &self,
        dir: BorrowedFd<'_>,
        owner: &Owner,
        mode: &CreateMode,
        flags: OFlags,
    ) -> Result<(OwnedFd, OFlags), Errno> {
        let mut f = flags | OFlags::TMPFILE;
        if !f.intersects(OFlags::WRONLY | OFlags::RDWR) {
            f |= OFlags::RDWR;
        }
        let _as = AsOwner::new(owner, mode.umask)?;
        let file = rustix::fs::openat(
            self.proc.dir(),
            ProcFd::name(dir).as_c_str(),
            f | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode.mode & 0o7777),
        )?;
        Ok((file, f))
    }

    /// A regular file made at `name` in `dir`, the parent's upper
    /// directory, where a whiteout is, in one step as kernel overlayfs makes
    /// it: unnamed in `dir` (`O_TMPFILE`, as the owner, so that it inherits
    /// from `dir` what a create there would), named in the work directory,
    /// then exchanged with the whiteout (`RENAME_EXCHANGE`), which is then
    /// removed from the work directory. A daemon killed at any point leaves
    /// the whiteout or the new file at `name`, never the lower object
    /// showing again, and at most a name in the work directory. The flags
    /// used (see [`Overlay::open_tmpfile`]) are returned with the file, without
    /// `O_TMPFILE`. `None` where the upper
    /// filesystem has no `O_TMPFILE` or `RENAME_EXCHANGE`: the caller then
    /// removes the whiteout and creates, in two steps.
    fn create_over_whiteout(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        owner: &Owner,
        mode: &CreateMode,
        flags: OFlags,
    ) -> Result<Option<(OwnedFd, OFlags)>, Errno> {
        let work = self.work.as_ref().ok_or(Errno::ROFS)?;
        let (file, f) = match self.open_tmpfile(dir, owner, mode, flags) {
            Ok(made) => made,
            Err(Errno::OPNOTSUPP | Errno::ISDIR) => return Ok(None),
            Err(e) => return Err(e),
        };
        let tmp = self.temp_name();
        self.proc.link(file.as_fd(), work.as_fd(), &tmp)?;
        if let Err(e) = rustix::fs::renameat_with(work, &tmp, dir, name, RenameFlags::EXCHANGE) {
            let _ = rustix::fs::unlinkat(work, &tmp, AtFlags::empty());
            return if e == Errno::INVAL { Ok(None) } else { Err(e) };
        }
        // The whiteout, now in the work directory.
        if let Err(e) = rustix::fs::unlinkat(work, &tmp, AtFlags::empty()) {
            tracing::warn!(name = ?tmp, "a replaced whiteout stays in the work directory: {e}");
        }
        Ok(Some((file, f & !OFlags::TMPFILE)))
    }

    /// Look a just-made upper object up (its own origin).
    fn created_entry(&self, parent: &Arc<Node>, name: &OsStr) -> Result<Entry, Errno> {
        self.lookup_in(parent, name)?.ok_or(Errno::NOENT)
    }

    fn set_opaque(&self, dir: BorrowedFd<'_>) -> Result<(), Errno> {
        crate::backing::set_xattr(
            dir,
            OsStr::new(self.reader.opaque_xattr),
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
    }

    /// Make a handle for `file`, an open of the regular file `node` in the
    /// upper layer (`upper`) or a lower one.
    fn opened(
        &self,
        ctx: &Context<'_>,
        node: &Arc<Node>,
        file: OwnedFd,
        flags: OFlags,
        upper: bool,
    ) -> Result<Opened, Errno> {
        let backing = node.io.lock().map_err(|_| Errno::IO)?.join(upper, || {
            let st = statx_fd(file.as_fd())?;
            // A file with setid bits does its I/O through the daemon.
            Ok(
                if write_clears_setid(u32::from(st.stx_mode)) || !self.backing.wanted(ctx) {
                    None
                } else {
                    // Lower files are read-only: a read-only open itself
                    // serves; the upper file serves read-write.
                    let want = if upper { OFlags::RDWR } else { OFlags::RDONLY };
                    if flags & BACKING_AS_IS == want {
                        self.backing.open(ctx, file.as_fd())
                    } else {
                        self.proc
                            .reopen(file.as_fd(), want)
                            .ok()
                            .and_then(|f| self.backing.open(ctx, f.as_fd()))
                    }
                },
            )
        });
        let backing = match backing {
            Err(Errno::TXTBSY) => {
                // The inode is open on a backing file of a lower layer and
                // this open is of the copy (or the reverse). The kernel
                // keeps one backing file per inode and refuses any other
                // open of it (EBUSY/EINVAL, seen as EIO): say "busy"
                // instead, until the other opens are closed.
                tracing::info!(
                    node = node.id,
                    "open refused with ETXTBSY: the file is open through a backing file of another layer; close it first, or mount with passthrough off"
                );
                return Err(Errno::TXTBSY);
            }
            r => r?,
        };
        let fh = self.handles.add_file(ctx, node, upper, file)?;
        let mut flags = OpenOutFlags::NOFLUSH;
        if backing.is_none() && !upper {
            // Lower data never changes.
            flags |= OpenOutFlags::KEEP_CACHE;
        }
        Ok(Opened {
            fh,
            flags,
            backing_id: backing,
        })
    }

    /// Remove `name` (a `dir`ectory or not) from `parent`, leaving a
    /// whiteout where a lower layer still has the name.
    fn remove(&self, parent: &Arc<Node>, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let _changing = self.changing();
        check_name(name)?;
        if reserved(name) {
            return Err(Errno::NOENT);
        }
        if self.read_only() {
            return Err(Errno::ROFS);
        }
        let players = parent.layers();
        let found = self.reader.resolve(&players, name)?.ok_or(Errno::NOENT)?;
        match (dir, is_dir(&found.st)) {
            (true, false) => return Err(Errno::NOTDIR),
            (false, true) => return Err(Errno::ISDIR),
            _ => {}
        }
        if dir {
            let l = Layers {
                upper: found.upper.clone(),
                lowers: found.lowers.clone(),
                parent: None,
            };
            if !self.reader.list(&self.proc, &l, |_, i| i)?.is_empty() {
                return Err(Errno::NOTEMPTY);
            }
        }
        let pupper = self.copy_up(parent, false)?;
        let work = self.work.as_ref().ok_or(Errno::ROFS)?;
        let whiteout = self.reader.in_lowers(&players, name)?;
        if found.upper.is_some() {
            self.forget_copy(&found.st);
        }
        match (&found.upper, whiteout) {
            (None, _) => rustix::fs::mknodat(
                &*pupper,
                name,
                rustix::fs::FileType::CharacterDevice,
                Mode::empty(),
                0,
            ),
            (Some(_), false) if !dir => rustix::fs::unlinkat(&*pupper, name, AtFlags::empty()),
            (Some(_), wh) => {
                // Move it out in one step (a whiteout left in its place
                // where needed), then clear it in the work directory: an
                // upper directory may still hold whiteouts.
                let tmp = self.temp_name();
                let flags = if wh {
                    RenameFlags::WHITEOUT
                } else {
                    RenameFlags::NOREPLACE
                };
                rustix::fs::renameat_with(&*pupper, name, work, &tmp, flags)?;
                remove_tree(work.as_fd(), &tmp)
            }
        }
    }
}

impl Filesystem for Overlay {
    crate::backing::handle_requests!();

    fn capabilities(&self) -> InitFlags {
        crate::backing::INIT_FLAGS
    }

    fn init(&self, n: &Negotiated) {
        if self.opts.passthrough_io && !n.flags.contains(InitFlags::PASSTHROUGH) {
            tracing::warn!(
                "the kernel did not grant FUSE_PASSTHROUGH (not asked for, or kernel older than 6.9); reads and writes go through the daemon"
            );
        }
    }

    fn lookup(&self, _ctx: &Context<'_>, parent: u64, name: &OsStr) -> idfuse::Result<Entry> {
        let p = self.node(parent)?;
        if name == "." || name == ".." {
            // Sent only for NFS export: the directory itself, or the
            // directory it was found in (the root's is the root).
            let up = match p.layers().parent {
                Some((pp, _)) if name == ".." => pp,
                _ => p,
            };
            let a = self.attr_of(&up)?;
            let id = self
                .table
                .write()
                .map_err(|_| Errno::IO)?
                .count(up.id)
                .ok_or(Errno::STALE)?
                .id;
            return Ok(Entry {
                ino: id,
                generation: 0,
                attr: a.attr,
                entry_timeout: a.timeout,
                attr_timeout: a.timeout,
            });
        }
        check_name(name)?;
        match self.lookup_in(&p, name)? {
            Some(e) => Ok(e),
            None => {
                let ttl = self.entry_ttl(&p.layers());
                if ttl.is_zero() {
                    Err(Errno::NOENT)
                } else {
                    Ok(Entry::negative(ttl))
                }
            }
        }
    }

    fn forget(&self, ino: u64, nlookup: u64) {
        if let Ok(mut t) = self.table.write() {
            t.forget(ino, nlookup);
        }
    }

    fn batch_forget(&self, nodes: &mut dyn Iterator<Item = idfuse::ForgetOne>) {
        if let Ok(mut t) = self.table.write() {
            for n in nodes {
                t.forget(n.nodeid, n.nlookup);
            }
        }
    }

    fn getattr(&self, _ctx: &Context<'_>, ino: u64, fh: Option<u64>) -> idfuse::Result<AttrReply> {
        let node = self.node(ino)?;
        if let Some(h) = fh.and_then(|fh| self.handles.get(fh).ok()) {
            if h.io.is_some() {
                // A lower open copied up since reads the copy.
                let st = statx_fd(h.data(&self.proc)?)?;
                let layers = node.layers();
                return Ok(AttrReply {
                    attr: self.attr(&node, &layers, &st),
                    timeout: self.attr_ttl(&layers),
                });
            }
        }
        self.attr_of(&node)
    }

    fn statx(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        _fh: Option<u64>,
        _flags: u32,
        mask: u32,
    ) -> idfuse::Result<(Statx, Duration)> {
        let node = self.node(ino)?;
        let layers = node.layers();
        let top = layers.top().ok_or(Errno::STALE)?;
        let want = StatxFlags::from_bits_retain(mask) | StatxFlags::BASIC_STATS;
        let (st, mut out) = statx_reply(top.as_fd(), want)?;
        let a = self.attr(&node, &layers, &st);
        out.ino = a.ino;
        out.nlink = a.nlink;
        Ok((out, self.attr_ttl(&layers)))
    }

    fn setattr(&self, _ctx: &Context<'_>, ino: u64, a: &SetAttr) -> idfuse::Result<AttrReply> {
        let node = self.node(ino)?;
        if a.size.is_some() && node.layers().upper.is_none() {
            let lower_backed = matches!(
                *node.io.lock().map_err(|_| Errno::IO)?,
                FileIo::Backing { layer: false, .. }
            );
            if lower_backed {
                // The kernel reads those opens through the lower file
                // itself and would go on showing its old data: refused,
                // as an open for writing is (see `opened`).
                tracing::info!(
                    node = node.id,
                    "truncate refused with ETXTBSY: the file is open through a backing file of a lower layer; close it first, or mount with passthrough off"
                );
                return Err(Errno::TXTBSY);
            }
        }
        let data = a.size != Some(0);
        let upper = self.copy_up(&node, data)?;
        // A truncate through an open regular file, if the kernel named one.
        let h = a.size.and(a.fh).and_then(|fh| self.handles.get(fh).ok());
        let open = match &h {
            Some(h) if h.io.is_some() => Some(h.file()?),
            _ => None,
        };
        self.proc.set_attr(upper.as_fd(), open, a)?;
        self.attr_of(&node)
    }

    fn readlink(&self, _ctx: &Context<'_>, ino: u64) -> idfuse::Result<Vec<u8>> {
        let node = self.node(ino)?;
        let layers = node.layers();
        let top = layers.top().ok_or(Errno::STALE)?;
        Ok(rustix::fs::readlinkat(&**top, "", Vec::new())?.into_bytes())
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
        // A character device 0/0 in upper is the overlay's own whiteout: it
        // would hide the name rather than show as a device. Kernel
        // overlayfs refuses to create one with EPERM; so does this.
        if mode.mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0 {
            return Err(Errno::PERM);
        }
        let p = self.node(parent)?;
        let (pupper, _, _changing) = self.make_room(&p, name)?;
        let kind = if mode.mode & libc::S_IFMT == 0 {
            rustix::fs::FileType::RegularFile
        } else {
            rustix::fs::FileType::from_raw_mode(mode.mode)
        };
        {
            let _as = AsOwner::new(owner, mode.umask)?;
            rustix::fs::mknodat(
                &*pupper,
                name,
                kind,
                Mode::from_raw_mode(mode.mode & 0o7777),
                rdev_from_fuse(rdev),
            )?;
        }
        self.created_entry(&p, name)
    }

    fn mkdir(
        &self,
        _ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        owner: &Owner,
        mode: CreateMode,
    ) -> idfuse::Result<Entry> {
        let p = self.node(parent)?;
        let (pupper, hides, _changing) = self.make_room(&p, name)?;
        {
            let _as = AsOwner::new(owner, mode.umask)?;
            rustix::fs::mkdirat(&*pupper, name, Mode::from_raw_mode(mode.mode & 0o7777))?;
        }
        if hides {
            // A directory over a whited-out (or hidden) lower name must
            // not merge with it.
            let d = open_child(pupper.as_fd(), name)?;
            if let Err(e) = self.set_opaque(d.as_fd()) {
                let _ = rustix::fs::unlinkat(&*pupper, name, AtFlags::REMOVEDIR);
                return Err(e);
            }
        }
        self.created_entry(&p, name)
    }

    fn symlink(
        &self,
        _ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        owner: &Owner,
        target: &OsStr,
    ) -> idfuse::Result<Entry> {
        let p = self.node(parent)?;
        let (pupper, _, _changing) = self.make_room(&p, name)?;
        {
            let _as = AsOwner::new(owner, 0)?;
            rustix::fs::symlinkat(target, &*pupper, name)?;
        }
        self.created_entry(&p, name)
    }

    fn unlink(&self, _ctx: &Context<'_>, parent: u64, name: &OsStr) -> idfuse::Result<()> {
        let p = self.node(parent)?;
        self.remove(&p, name, false)
    }

    fn rmdir(&self, _ctx: &Context<'_>, parent: u64, name: &OsStr) -> idfuse::Result<()> {
        let p = self.node(parent)?;
        self.remove(&p, name, true)
    }

    fn rename(
        &self,
        _ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        whiteout_owner: Option<&Owner>,
    ) -> idfuse::Result<()> {
        let _changing = self.changing();
        check_name(name)?;
        check_name(newname)?;
        if reserved(name) {
            return Err(Errno::NOENT);
        }
        if reserved(newname) {
            return Err(Errno::INVAL);
        }
        if self.read_only() {
            return Err(Errno::ROFS);
        }
        let flags = RenameFlags::from_bits(flags).ok_or(Errno::INVAL)?;
        let exchange = flags.contains(RenameFlags::EXCHANGE);
        // A caller's RENAME_WHITEOUT leaves a char device 0/0 at the old
        // name, marked (DEVICE_XATTR) so that the overlay shows it as the
        // device it is instead of taking it for its own whiteout, which
        // would hide the name. Kernel overlayfs refuses the flag (EINVAL),
        // and so does this overlay where devices cannot carry the mark.
        let caller_whiteout = flags.contains(RenameFlags::WHITEOUT);
        let device_xattr = match (caller_whiteout, self.reader.device_xattr) {
            (false, _) => None,
            (true, Some(x)) if !exchange => Some(x),
            (true, None) => {
                tracing::warn!(name = ?name, "RENAME_WHITEOUT refused (EINVAL): with userxattr the overlay cannot mark the caller's char device, which would then read as its own whiteout; mount without userxattr (as root) to allow it");
                return Err(Errno::INVAL);
            }
            // With RENAME_EXCHANGE: refused by the kernel before us too.
            (true, Some(_)) => return Err(Errno::INVAL),
        };
        let p = self.node(parent)?;
        let np = self.node(newparent)?;
        let src = self
            .reader
            .resolve(&p.layers(), name)?
            .ok_or(Errno::NOENT)?;
        let dst = self.reader.resolve(&np.layers(), newname)?;
        if flags.contains(RenameFlags::NOREPLACE) && dst.is_some() {
            return Err(Errno::EXIST);
        }
        if exchange && dst.is_none() {
            return Err(Errno::NOENT);
        }
        // A directory with lower layers cannot move without redirects,
        // which this overlay does not write: EXDEV, as kernel overlayfs
        // without redirect_dir; mv(1) copies instead.
        let moves_lower_dir = |f: &layers::Found| is_dir(&f.st) && !f.lowers.is_empty();
        if moves_lower_dir(&src) || (exchange && dst.as_ref().is_some_and(moves_lower_dir)) {
            return Err(Errno::XDEV);
        }
        // The nodes to copy up: looked up (and so counted) for the moment.
        let src_entry = self.register(&p, name, src)?;
        let src_node = self.node(src_entry.ino)?;
        let dst_node = match dst {
            Some(d) => {
                let dir = is_dir(&d.st);
                if !exchange && dir {
                    // Replacing a directory: it must look empty, and its
                    // upper copy may hold whiteouts, which rename(2) would
                    // count as entries.
                    let l = Layers {
                        upper: d.upper.clone(),
                        lowers: d.lowers.clone(),
                        parent: None,
                    };
                    if !self.reader.list(&self.proc, &l, |_, i| i)?.is_empty() {
                        self.forget(src_entry.ino, 1);
                        return Err(Errno::NOTEMPTY);
                    }
                    if let Some(u) = &d.upper {
                        let r = self
                            .proc
                            .reopen(u.as_fd(), OFlags::RDONLY | OFlags::DIRECTORY)?;
                        clear_dir(r.as_fd())?;
                    }
                }
                if !exchange && d.upper.is_some() {
                    self.forget_copy(&d.st);
                }
                let e = self.register(&np, newname, d)?;
                Some(self.node(e.ino)?)
            }
            None => None,
        };
        let result = (|| -> Result<(), Errno> {
            self.copy_up(&src_node, true)?;
            if exchange {
                if let Some(d) = &dst_node {
                    self.copy_up(d, true)?;
                }
            }
            let pupper = self.copy_up(&p, false)?;
            let npupper = self.copy_up(&np, false)?;
            // Where the destination is only a lower object (or a whiteout),
            // the rename creates the name in upper: a whiteout there first
            // goes.
            if !exchange {
                if let Ok(fd) = open_child(npupper.as_fd(), newname) {
                    if is_whiteout(&statx_fd(fd.as_fd())?) {
                        rustix::fs::unlinkat(&*npupper, newname, AtFlags::empty())?;
                    }
                }
            }
            let src_hides = self.reader.in_lowers(&p.layers(), name)?;
            let mut f = flags;
            if src_hides && !exchange {
                f |= RenameFlags::WHITEOUT;
            }
            rustix::fs::renameat_with(&*pupper, name, &*npupper, newname, f)?;
            if let Some(x) = device_xattr {
                // The new device is the caller's: marked, then given the
                // caller's ids (it was made with the daemon's). Until the
                // mark is set the old name reads as absent, as after a
                // plain rename.
                let wo = open_child(pupper.as_fd(), name)?;
                crate::backing::set_xattr(
                    wo.as_fd(),
                    OsStr::new(x),
                    b"y",
                    rustix::fs::XattrFlags::empty(),
                )?;
                if let Some(o) = whiteout_owner {
                    rustix::fs::chownat(
                        &*pupper,
                        name,
                        Some(rustix::process::Uid::from_raw(o.uid)),
                        Some(rustix::process::Gid::from_raw(o.gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )?;
                }
            }
            // A directory now above a lower one of the same name must not
            // merge with it.
            let fix = |dirnode: &Node, at: &Arc<OwnedFd>, n: &OsStr, over: &Arc<Node>| {
                if dirnode.dir && self.reader.in_lowers(&over.layers(), n)? {
                    let d = open_child(at.as_fd(), n)?;
                    self.set_opaque(d.as_fd())?;
                }
                Ok::<(), Errno>(())
            };
            fix(&src_node, &npupper, newname, &np)?;
            if let (true, Some(d)) = (exchange, &dst_node) {
                fix(d, &pupper, name, &p)?;
            }
            Ok(())
        })();
        if result.is_ok() {
            if let Ok(mut l) = src_node.layers.lock() {
                l.parent = Some((np.clone(), newname.to_os_string()));
            }
            if let (true, Some(d)) = (exchange, &dst_node) {
                if let Ok(mut l) = d.layers.lock() {
                    l.parent = Some((p.clone(), name.to_os_string()));
                }
            }
        }
        self.forget(src_node.id, 1);
        if let Some(d) = dst_node {
            self.forget(d.id, 1);
        }
        result
    }

    fn link(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
    ) -> idfuse::Result<Entry> {
        let node = self.node(ino)?;
        let np = self.node(newparent)?;
        let upper = self.copy_up(&node, true)?;
        let (npupper, _, _changing) = self.make_room(&np, newname)?;
        self.proc.link(upper.as_fd(), npupper.as_fd(), newname)?;
        let node = self
            .table
            .write()
            .map_err(|_| Errno::IO)?
            .count(node.id)
            .ok_or(Errno::STALE)?;
        let a = self.attr_of(&node)?;
        Ok(Entry {
            ino: node.id,
            generation: 0,
            attr: a.attr,
            entry_timeout: self.opts.entry_timeout,
            attr_timeout: a.timeout,
        })
    }

    fn open(
        &self,
        ctx: &Context<'_>,
        ino: u64,
        flags: u32,
        kill_suidgid: bool,
    ) -> idfuse::Result<Opened> {
        let node = self.node(ino)?;
        let oflags = OFlags::from_bits_retain(flags)
            & !(OFlags::CREATE | OFlags::EXCL | OFlags::NOCTTY | OFlags::PATH);
        let writes = oflags.intersects(OFlags::WRONLY | OFlags::RDWR | OFlags::TRUNC);
        let (fd, upper) = if writes {
            if self.read_only() {
                return Err(Errno::ROFS);
            }
            let u = self.copy_up(&node, !oflags.contains(OFlags::TRUNC))?;
            (u, true)
        } else {
            let l = node.layers();
            let upper = l.upper.is_some();
            (l.top().cloned().ok_or(Errno::STALE)?, upper)
        };
        let file = self.proc.reopen(fd.as_fd(), oflags)?;
        if kill_suidgid {
            self.proc.kill_suidgid(file.as_fd())?;
        }
        self.opened(ctx, &node, file, oflags, upper)
    }

    fn create(
        &self,
        ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        owner: &Owner,
        mode: CreateMode,
        flags: u32,
        _kill_suidgid: bool,
    ) -> idfuse::Result<(Entry, Opened)> {
        let p = self.node(parent)?;
        let (pupper, room, _changing) = self.find_room(&p, name)?;
        let mut oflags = OFlags::from_bits_retain(flags)
            & !(OFlags::CREATE | OFlags::EXCL | OFlags::NOCTTY | OFlags::PATH);
        if oflags & BACKING_AS_IS == OFlags::WRONLY && self.backing.wanted(ctx) {
            // The new file may serve as the backing file too.
            oflags = (oflags & !OFlags::WRONLY) | OFlags::RDWR;
        }
        let made = match room {
            Room::Whiteout => {
                self.create_over_whiteout(pupper.as_fd(), name, owner, &mode, oflags)?
            }
            Room::Free { .. } => None,
        };
        let file = match made {
            Some((file, used)) => {
                oflags = used;
                file
            }
            None => {
                if matches!(room, Room::Whiteout) {
                    rustix::fs::unlinkat(&*pupper, name, AtFlags::empty())?;
                }
                let _as = AsOwner::new(owner, mode.umask)?;
                rustix::fs::openat2(
                    &*pupper,
                    name,
                    oflags | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(mode.mode & 0o7777),
                    BENEATH,
                )?
            }
        };
        let entry = self.created_entry(&p, name)?;
        let node = self.node(entry.ino)?;
        match self.opened(ctx, &node, file, oflags, true) {
            Ok(o) => Ok((entry, o)),
            Err(e) => {
                self.forget(entry.ino, 1);
                Err(e)
            }
        }
    }

    fn tmpfile(
        &self,
        ctx: &Context<'_>,
        parent: u64,
        owner: &Owner,
        mode: CreateMode,
        flags: u32,
    ) -> idfuse::Result<(Entry, Opened)> {
        if self.read_only() {
            return Err(Errno::ROFS);
        }
        let p = self.node(parent)?;
        let pupper = self.copy_up(&p, false)?;
        let (file, f) = self.open_tmpfile(
            pupper.as_fd(),
            owner,
            &mode,
            OFlags::from_bits_retain(flags)
                & !(OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOCTTY
                    | OFlags::PATH
                    | OFlags::DIRECTORY),
        )?;
        let path = self.proc.reopen(file.as_fd(), OFlags::PATH)?;
        let st = statx_fd(path.as_fd())?;
        let found = layers::Found {
            upper: Some(Arc::new(path)),
            lowers: Vec::new(),
            st,
        };
        // No name yet: linkat through /proc names it later, and LINK then
        // finds it already upper.
        let entry = self.register(&p, OsStr::new("#tmpfile"), found)?;
        let node = self.node(entry.ino)?;
        match self.opened(ctx, &node, file, f, true) {
            Ok(o) => Ok((entry, o)),
            Err(e) => {
                self.forget(entry.ino, 1);
                Err(e)
            }
        }
    }

    fn opendir(&self, _ctx: &Context<'_>, ino: u64, _flags: u32) -> idfuse::Result<Opened> {
        let node = self.node(ino)?;
        let layers = node.layers();
        let file = match &layers.upper {
            Some(u) => Some(
                self.proc
                    .reopen(u.as_fd(), OFlags::RDONLY | OFlags::DIRECTORY)?,
            ),
            None => None,
        };
        let fh = self.handles.add_dir(file, None)?;
        // The kernel may keep listings: lowers do not change, and every
        // change to an upper directory passes through the kernel, which
        // then drops the listing it cached; a change made in the upper
        // layer behind the mount's back (undefined for overlayfs too) is
        // seen once the directory's attributes expire and its mtime moved.
        Ok(Opened {
            fh,
            flags: OpenOutFlags::CACHE_DIR | OpenOutFlags::KEEP_CACHE,
            ..Opened::default()
        })
    }

    fn readdir(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        fh: u64,
        offset: u64,
        out: &mut DirBuf,
    ) -> idfuse::Result<()> {
        self.walk(ino, fh, offset, false, &mut |_, ino, next, typ, name, _| {
            Ok(out.push(ino, next, typ, name))
        })
    }

    fn readdirplus(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        fh: u64,
        offset: u64,
        out: &mut DirPlusBuf<'_>,
    ) -> idfuse::Result<()> {
        let mut sent = 0usize;
        self.walk(
            ino,
            fh,
            offset,
            true,
            &mut |dir, ino, next, typ, name, current| {
                let name = OsStr::from_bytes(name);
                if name == "." || name == ".." {
                    return Ok(out.push(&crate::backing::dots_entry(ino), next, typ, name));
                }
                // From a current listing, the name is resolved from the layer
                // the listing found it in down, as a lookup would (the layers
                // above hold neither it nor a whiteout of it): a lookup from the
                // top would probe them for NAME and .wh.NAME in vain, and a
                // probe of an absent name is the slow path of most filesystems'
                // lookup (tmpfs keeps no negative dentries).
                let found = match current {
                    Some(Current {
                        ahead: Some(found), ..
                    }) if !reserved(name) => found.map(|f| self.register(dir, name, f)).transpose(),
                    Some(Current { from, .. }) if !reserved(name) => self
                        .reader
                        .resolve_from(from, name)
                        .and_then(|f| f.map(|f| self.register(dir, name, f)).transpose()),
                    _ => self.lookup_in(dir, name),
                };
                let entry = match found {
                    Ok(Some(e)) => e,
                    // Gone since the listing was made: skip it.
                    Ok(None) | Err(Errno::NOENT) => return Ok(true),
                    // Out of fds or memory, say: never a silent gap in the
                    // listing. The entries before it go out; the next
                    // READDIRPLUS starts at this one, meets the error first
                    // and hands it to the caller.
                    Err(e) if sent == 0 => return Err(e),
                    Err(_) => return Ok(false),
                };
                if !out.push(&entry, next, typ, name) {
                    // Not sent: undo the lookup it counted.
                    self.forget(entry.ino, 1);
                    return Ok(false);
                }
                sent += 1;
                Ok(true)
            },
        )
    }

    fn statfs(&self, _ctx: &Context<'_>, _ino: u64) -> idfuse::Result<Kstatfs> {
        let root = self.node(ROOT)?;
        let layers = root.layers();
        let top = layers.top().ok_or(Errno::STALE)?;
        crate::backing::statfs(top.as_fd())
    }

    fn setxattr(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: u32,
        sf: SetxattrFlags,
    ) -> idfuse::Result<()> {
        if self.private(name) {
            return Err(Errno::PERM);
        }
        let node = self.node(ino)?;
        let upper = self.copy_up(&node, true)?;
        self.proc
            .setxattr_request(upper.as_fd(), name, value, flags, sf)
    }

    fn getxattr(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
    ) -> idfuse::Result<Xattr> {
        if self.private(name) {
            return Err(Errno::NODATA);
        }
        let node = self.node(ino)?;
        let layers = node.layers();
        let top = layers.top().ok_or(Errno::STALE)?;
        crate::backing::get_xattr(top.as_fd(), name, size)
    }

    fn listxattr(&self, _ctx: &Context<'_>, ino: u64, _size: u32) -> idfuse::Result<Xattr> {
        let node = self.node(ino)?;
        let layers = node.layers();
        let top = layers.top().ok_or(Errno::STALE)?;
        let mut list = Vec::new();
        for n in crate::backing::xattr_names(top.as_fd())? {
            if !n.starts_with(self.private_prefix.as_bytes()) {
                list.extend_from_slice(&n);
                list.push(0);
            }
        }
        // The session answers a size query, and a buffer too small.
        Ok(Xattr::Data(list))
    }

    fn removexattr(&self, _ctx: &Context<'_>, ino: u64, name: &OsStr) -> idfuse::Result<()> {
        if self.private(name) {
            return Err(Errno::PERM);
        }
        let node = self.node(ino)?;
        let upper = self.copy_up(&node, true)?;
        crate::backing::remove_xattr(upper.as_fd(), name)
    }
}

impl Overlay {
    /// An upper object (attributes `st`) is about to go: once its last
    /// name is gone, its inode number may be reused by a new file, which
    /// must not inherit its origin.
    fn forget_copy(&self, st: &rustix::fs::Statx) {
        if st.stx_nlink <= 1 || is_dir(st) {
            if let Ok(mut c) = self.copied.lock() {
                c.remove(&key_of(st));
            }
        }
    }

    /// True for the xattrs the overlay keeps for itself.
    fn private(&self, name: &OsStr) -> bool {
        name.as_bytes().starts_with(self.private_prefix.as_bytes())
    }

    /// Hand `emit` the entries of the open directory `fh` (node `ino`)
    /// after `offset`, `.` and `..` first, until it answers false. With
    /// `plus` (READDIRPLUS), entries past this reply are resolved ahead by
    /// the helper while the kernel digests it (see [`Ahead`](layers::Ahead)).
    fn walk(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        plus: bool,
        emit: &mut Emit<'_>,
    ) -> Result<(), Errno> {
        let h = self.handles.get(fh)?;
        let node = self.node(ino)?;
        let mut listing = h
            .dir
            .as_ref()
            .ok_or(Errno::NOTDIR)?
            .lock()
            .map_err(|_| Errno::IO)?;
        // rewinddir(3) must show changes made since opendir.
        if offset == 0 || listing.is_none() {
            // Read before listing: a change made meanwhile counts after.
            let changes = self.changes.load(Ordering::SeqCst);
            let layers = node.layers();
            let ents = self.listing(&layers)?;
            let chain = layers
                .upper
                .iter()
                .map(|u| (true, u.clone()))
                .chain(layers.lowers.iter().map(|l| (false, l.clone())))
                .collect();
            *listing = Some(Listing {
                changes,
                chain,
                ents,
                ahead: Arc::default(),
            });
        }
        let listing = listing.as_ref().ok_or(Errno::IO)?;
        let parent_ino = node.layers().parent.map_or(node.ino, |(p, _)| p.ino);
        let dt_dir = libc::S_IFDIR >> 12;
        // Offsets: 1 is past ".", 2 past "..", 2 + i + 1 past entry i.
        let mut off = offset;
        while off < 2 {
            let (name, i): (&[u8], u64) = if off == 0 {
                (b".", node.ino)
            } else {
                (b"..", parent_ino)
            };
            if !emit(&node, i, off + 1, dt_dir, name, None)? {
                return Ok(());
            }
            off += 1;
        }
        let start = usize::try_from(off - 2).map_err(|_| Errno::INVAL)?;
        let current = |l: &Listing| l.changes == self.changes.load(Ordering::SeqCst);
        let ahead = &listing.ahead;
        if plus && current(listing) {
            // The helper starts where this reply will likely end.
            let at = start + ahead.batch();
            self.look_ahead(listing, at, at + LOOK_AHEAD);
        }
        let mut end = listing.ents.len();
        for (i, e) in listing.ents.iter().enumerate().skip(start) {
            let cur = listing
                .chain
                .get(e.layer..)
                .filter(|_| current(listing))
                .map(|from| {
                    let found = if plus {
                        ahead.pass(i);
                        ahead.take(i)
                    } else {
                        None
                    };
                    Current { from, ahead: found }
                });
            if !emit(&node, e.ino, (i + 3) as u64, e.typ, &e.name, cur)? {
                end = i;
                break;
            }
        }
        if plus && end < listing.ents.len() && current(listing) {
            ahead.set_batch((end - start).max(1));
            self.look_ahead(listing, end, end + LOOK_AHEAD);
        }
        Ok(())
    }

    /// Hand entries `[from, to)` of `listing` (minus those already handed
    /// over) to the look-ahead helper. Without a helper thread (it could
    /// not be started) the walker resolves every entry itself.
    fn look_ahead(&self, listing: &Listing, from: usize, to: usize) {
        if !self.look_ahead {
            return;
        }
        let Some(range) = listing.ahead.claim(from, to.min(listing.ents.len())) else {
            return;
        };
        let ents: Vec<(usize, Vec<u8>, usize)> = listing.ents[range.clone()]
            .iter()
            .zip(range)
            .filter(|(e, _)| !reserved(OsStr::from_bytes(&e.name)))
            .map(|(e, i)| (i, e.name.clone(), e.layer))
            .collect();
        let (ahead, chain, reader) = (listing.ahead.clone(), listing.chain.clone(), self.reader);
        let job: Job = Box::new(move || ahead.fill(reader, &chain, ents));
        let Ok(mut helper) = self.helper.lock() else {
            return;
        };
        if helper.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            match std::thread::Builder::new()
                .name("idfuse-overlay-ahead".into())
                .spawn(move || rx.into_iter().for_each(|job| job()))
            {
                Ok(_) => *helper = Some(tx),
                Err(e) => {
                    tracing::warn!("cannot start the listing look-ahead thread: {e}");
                    return;
                }
            }
        }
        if let Some(tx) = helper.as_ref() {
            let _ = tx.send(job);
        }
    }

    /// The merged listing of a directory with `layers`.
    fn listing(&self, layers: &Layers) -> Result<Vec<DirEnt>, Errno> {
        self.reader.list(&self.proc, layers, |dev, ino| {
            self.report_ino(self.origin((dev, ino)))
        })
    }
}
