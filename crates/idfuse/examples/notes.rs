//! A writable in-memory directory of notes, ready for idmapped mounts.
//!
//! As root: `notes MOUNTPOINT`, stopped by `umount MOUNTPOINT`. Then, for a
//! view where uid/gid N on the filesystem shows as 100000+N:
//!
//! ```sh
//! idfuse idmap --map b:0:100000:65536 MOUNTPOINT VIEW
//! setpriv --reuid=100042 --regid=100042 --clear-groups touch VIEW/todo
//! stat -c %u MOUNTPOINT/todo    # 42: stored with the filesystem's id
//! ```
//!
//! What idmap support asks of a filesystem, and what this one does:
//! - the session offers `FUSE_ALLOW_IDMAP` (`SessionConfig::idmap`) and the
//!   mount has `default_permissions`: the kernel checks every permission;
//! - a new file belongs to the [`Owner`] the kernel sends with the create,
//!   already mapped back into the filesystem's ids;
//! - no other request says who the caller is (`Context::caller()` is
//!   `None`), so nothing here compares ids or checks permissions.
//!
//! Only regular files, in one flat directory; nothing survives the unmount.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use idfuse::{
    Attr, AttrReply, Context, CreateMode, DirBuf, Entry, Errno, FileType, Filesystem, MountOptions,
    Opened, Owner, Result, Session, SessionConfig, SetAttr, SetTime,
};

const ROOT: u64 = 1;
const TTL: Duration = Duration::from_secs(1);
/// Notes are short; a larger size is refused with EFBIG.
const MAX_SIZE: u64 = 16 << 20;

struct Note {
    attr: Attr,
    data: Vec<u8>,
    /// Lookups the kernel holds; the inode goes when they and the name do.
    lookups: u64,
}

#[derive(Default)]
struct Inner {
    names: BTreeMap<OsString, u64>,
    notes: HashMap<u64, Note>,
    next_ino: u64,
}

struct Notes {
    root: Attr,
    inner: Mutex<Inner>,
}

fn now() -> (u64, u32) {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

fn set_mtime(attr: &mut Attr) {
    (attr.mtime, attr.mtimensec) = now();
    (attr.ctime, attr.ctimensec) = (attr.mtime, attr.mtimensec);
}

fn time_of(t: SetTime) -> (u64, u32) {
    match t {
        SetTime::Now => now(),
        SetTime::At { sec, nsec } => (sec as u64, nsec),
    }
}

impl Notes {
    fn new() -> Self {
        let (sec, nsec) = now();
        let root = Attr {
            ino: ROOT,
            mode: FileType::Directory.mode() | 0o1777, // like /tmp
            nlink: 2,
            blksize: 4096,
            mtime: sec,
            mtimensec: nsec,
            ctime: sec,
            ctimensec: nsec,
            ..Attr::default()
        };
        let inner = Inner {
            next_ino: ROOT + 1,
            ..Inner::default()
        };
        Self {
            root,
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic in another request leaves plain data behind: keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn note(&mut self, ino: u64) -> Result<&mut Note> {
        self.notes.get_mut(&ino).ok_or(Errno::NOENT)
    }

    /// An entry for the kernel, which then holds one more lookup.
    fn entry(&mut self, ino: u64) -> Result<Entry> {
        let note = self.note(ino)?;
        note.lookups += 1;
        Ok(Entry::new(note.attr, TTL))
    }

    fn drop_if_unused(&mut self, ino: u64) {
        if self
            .notes
            .get(&ino)
            .is_some_and(|n| n.lookups == 0 && n.attr.nlink == 0)
        {
            self.notes.remove(&ino);
        }
    }
}

impl Filesystem for Notes {
    fn lookup(&self, _ctx: &Context<'_>, parent: u64, name: &OsStr) -> Result<Entry> {
        if parent != ROOT {
            return Err(Errno::NOTDIR);
        }
        let mut inner = self.lock();
        let ino = *inner.names.get(name).ok_or(Errno::NOENT)?;
        inner.entry(ino)
    }

    fn forget(&self, ino: u64, nlookup: u64) {
        let mut inner = self.lock();
        if let Ok(note) = inner.note(ino) {
            note.lookups = note.lookups.saturating_sub(nlookup);
        }
        inner.drop_if_unused(ino);
    }

    fn getattr(&self, _ctx: &Context<'_>, ino: u64, _fh: Option<u64>) -> Result<AttrReply> {
        if ino == ROOT {
            return Ok(AttrReply::new(self.root, TTL));
        }
        Ok(AttrReply::new(self.lock().note(ino)?.attr, TTL))
    }

    /// chmod, chown, truncate and utimes. The kernel has already decided
    /// that the caller may; the ids in `set` are the filesystem's.
    fn setattr(&self, _ctx: &Context<'_>, ino: u64, set: &SetAttr) -> Result<AttrReply> {
        if ino == ROOT {
            return Err(Errno::PERM); // the root stays as it is, for brevity
        }
        let mut inner = self.lock();
        let note = inner.note(ino)?;
        let a = &mut note.attr;
        if let Some(mode) = set.mode {
            a.mode = FileType::RegularFile.mode() | (mode & 0o7777);
        }
        a.uid = set.uid.unwrap_or(a.uid);
        a.gid = set.gid.unwrap_or(a.gid);
        if set.kill_suidgid {
            a.mode &= !0o6000;
        }
        if let Some(size) = set.size {
            if size > MAX_SIZE {
                return Err(Errno::FBIG);
            }
            note.data.resize(size as usize, 0);
            a.size = size;
            set_mtime(a);
        }
        if let Some(t) = set.atime {
            (a.atime, a.atimensec) = time_of(t);
        }
        if let Some(t) = set.mtime {
            (a.mtime, a.mtimensec) = time_of(t);
        }
        (a.ctime, a.ctimensec) = now();
        Ok(AttrReply::new(*a, TTL))
    }

    /// A new note, owned by whom the kernel says: on an idmapped mount that
    /// is the creating process's fsuid/fsgid mapped back through the mount.
    fn create(
        &self,
        _ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        owner: &Owner,
        mode: CreateMode,
        _flags: u32,
        _kill_suidgid: bool,
    ) -> Result<(Entry, Opened)> {
        if parent != ROOT {
            return Err(Errno::NOTDIR);
        }
        if FileType::from_mode(mode.mode) != Some(FileType::RegularFile) {
            return Err(Errno::PERM); // notes are regular files only
        }
        let mut inner = self.lock();
        if inner.names.contains_key(name) {
            return Err(Errno::EXIST);
        }
        let ino = inner.next_ino;
        inner.next_ino += 1;
        let (sec, nsec) = now();
        let attr = Attr {
            ino,
            mode: FileType::RegularFile.mode() | mode.permissions(),
            nlink: 1,
            uid: owner.uid,
            gid: owner.gid,
            blksize: 4096,
            atime: sec,
            atimensec: nsec,
            mtime: sec,
            mtimensec: nsec,
            ctime: sec,
            ctimensec: nsec,
            ..Attr::default()
        };
        let note = Note {
            attr,
            data: Vec::new(),
            lookups: 0,
        };
        inner.notes.insert(ino, note);
        inner.names.insert(name.to_owned(), ino);
        Ok((inner.entry(ino)?, Opened::default()))
    }

    fn unlink(&self, _ctx: &Context<'_>, parent: u64, name: &OsStr) -> Result<()> {
        if parent != ROOT {
            return Err(Errno::NOTDIR);
        }
        let mut inner = self.lock();
        let ino = inner.names.remove(name).ok_or(Errno::NOENT)?;
        let note = inner.note(ino)?;
        note.attr.nlink = 0;
        (note.attr.ctime, note.attr.ctimensec) = now();
        inner.drop_if_unused(ino);
        Ok(())
    }

    fn read(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        _fh: u64,
        offset: u64,
        size: u32,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let mut inner = self.lock();
        let data = &inner.note(ino)?.data;
        let rest = data.get(offset as usize..).unwrap_or_default();
        buf.extend_from_slice(&rest[..rest.len().min(size as usize)]);
        Ok(())
    }

    fn write(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        _fh: u64,
        offset: u64,
        data: &[u8],
        write_flags: idfuse::WriteFlags,
        _flags: u32,
    ) -> Result<u32> {
        let mut inner = self.lock();
        let note = inner.note(ino)?;
        let end = offset.saturating_add(data.len() as u64);
        if end > MAX_SIZE {
            return Err(Errno::FBIG);
        }
        let end = end as usize;
        if note.data.len() < end {
            note.data.resize(end, 0);
        }
        note.data[offset as usize..end].copy_from_slice(data);
        note.attr.size = note.data.len() as u64;
        // A write by someone without CAP_FSETID clears setuid/setgid.
        if write_flags.contains(idfuse::WriteFlags::KILL_SUIDGID) {
            note.attr.mode &= !0o6000;
        }
        set_mtime(&mut note.attr);
        Ok(data.len() as u32)
    }

    fn readdir(
        &self,
        _ctx: &Context<'_>,
        _ino: u64,
        _fh: u64,
        offset: u64,
        out: &mut DirBuf,
    ) -> Result<()> {
        let inner = self.lock();
        let dots =
            [(ROOT, "."), (ROOT, "..")].map(|(i, n)| (i, FileType::Directory, OsStr::new(n)));
        let files = inner
            .names
            .iter()
            .map(|(n, i)| (*i, FileType::RegularFile, n.as_os_str()));
        // Offsets are positions in this listing: a name created or removed
        // between two READDIRs may be missed or listed twice, as POSIX allows.
        for (pos, (ino, typ, name)) in dots
            .into_iter()
            .chain(files)
            .enumerate()
            .skip(offset as usize)
        {
            if !out.push(
                ino,
                pos as u64 + 1,
                typ.dirent_type(),
                name.as_encoded_bytes(),
            ) {
                break;
            }
        }
        Ok(())
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let mnt = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .ok_or("usage: notes MOUNTPOINT")?,
    );
    // Both are idfuse's defaults, spelled out because idmap support needs
    // both: without default_permissions the kernel refuses FUSE_ALLOW_IDMAP.
    let options = MountOptions {
        fsname: "notes".into(),
        subtype: "notes".into(),
        default_permissions: true,
        allow_other: true,
        ..MountOptions::default()
    };
    let config = SessionConfig {
        idmap: true,
        ..SessionConfig::default()
    };
    let mut session = Session::mount(Arc::new(Notes::new()), &mnt, options, config)?;
    let negotiated = session.negotiated().map(|n| n.idmap);
    eprintln!(
        "notes: mounted at {}, idmap negotiated: {negotiated:?}",
        mnt.display()
    );
    session.wait();
    Ok(())
}
