//! Open files and directories, shared by the mirror and the overlay: the
//! table the kernel's `fh` numbers index, the I/O mode that all opens of
//! one regular inode share (a FUSE-passthrough backing file or I/O through
//! the daemon), and the requests that act on an open handle alone.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use idfuse::{BackingId, Context, Errno, WriteFlags};
use rustix::fs::OFlags;

use super::{creds, ProcFd};

/// How the kernel does I/O on the open files of one regular inode. The
/// kernel allows one backing file per inode and refuses to mix passthrough
/// and cached opens on it (the other mode fails with EIO), so every open
/// follows the first until all are released. `L` says which real file
/// backs it where there is a choice (the overlay's layers); `()` where
/// there is none.
#[derive(Debug, Default)]
pub(crate) enum FileIo<L = ()> {
    /// No open file.
    #[default]
    Idle,
    /// Opened with `FOPEN_PASSTHROUGH`, sharing one backing file.
    Backing { id: BackingId, users: u32, layer: L },
    /// Opened for reads and writes through the daemon.
    Cached { users: u32 },
}

impl<L: Copy + PartialEq> FileIo<L> {
    /// Count one more open of the inode, of the real file `layer`, and say
    /// whether it shares a backing file. An idle inode takes the mode
    /// `first` picks (`Some`: that backing file). An inode open on a
    /// backing file of another layer refuses with ETXTBSY: the kernel
    /// would refuse the second backing file.
    pub(crate) fn join(
        &mut self,
        layer: L,
        first: impl FnOnce() -> Result<Option<BackingId>, Errno>,
    ) -> Result<Option<BackingId>, Errno> {
        match self {
            FileIo::Backing {
                id,
                users,
                layer: l,
            } if *l == layer => {
                *users += 1;
                Ok(Some(*id))
            }
            FileIo::Backing { .. } => Err(Errno::TXTBSY),
            FileIo::Cached { users } => {
                *users += 1;
                Ok(None)
            }
            FileIo::Idle => {
                let id = first()?;
                *self = match id {
                    Some(id) => FileIo::Backing {
                        id,
                        users: 1,
                        layer,
                    },
                    None => FileIo::Cached { users: 1 },
                };
                Ok(id)
            }
        }
    }

    /// One open is gone; the last one closes the backing file (files the
    /// kernel opened with it keep it alive).
    fn leave(&mut self, ctx: &Context<'_>) {
        match self {
            FileIo::Backing { id, users, .. } => {
                *users = users.saturating_sub(1);
                if *users == 0 {
                    let _ = ctx.close_backing(*id);
                    *self = FileIo::Idle;
                }
            }
            FileIo::Cached { users } => {
                *users = users.saturating_sub(1);
                if *users == 0 {
                    *self = FileIo::Idle;
                }
            }
            FileIo::Idle => {}
        }
    }
}

/// An inode that regular files are opened on.
pub(crate) trait OpenInode {
    /// Which real file backs the inode's I/O (see [`FileIo`]).
    type Layer: Copy + PartialEq;
    /// The I/O mode its opens share.
    fn io(&self) -> &Mutex<FileIo<Self::Layer>>;
    /// Where the data of an open made on `layer` lives now, when no longer
    /// in the file it opened: the overlay's copy of a lower file copied up
    /// since (any fd of it, `O_PATH` too). Such an open reads, fstats,
    /// fsyncs and seeks that file from then on, reopened read-only once
    /// (see [`Handle::data`]), as kernel overlayfs switches it on its next
    /// read. `None`, the default: the data never moves.
    fn moved(&self, _layer: Self::Layer) -> Option<Arc<OwnedFd>> {
        None
    }
}

/// An open regular file's inode, whose [`FileIo`] counts the open.
pub(crate) struct OpenFile<N: OpenInode> {
    pub(crate) inode: Arc<N>,
    /// The real file it was opened on.
    layer: N::Layer,
    /// Where its data moved since (see [`OpenInode::moved`]), opened
    /// read-only.
    moved: OnceLock<OwnedFd>,
}

/// An open file or directory.
pub(crate) struct Handle<N: OpenInode, D> {
    /// The open file; `None` for a directory with nothing to read itself
    /// (an overlay directory with no upper layer).
    pub(crate) file: Option<OwnedFd>,
    /// For regular files: the inode, whose [`FileIo`] counts this open.
    pub(crate) io: Option<OpenFile<N>>,
    /// For directories: the filesystem's reading state.
    pub(crate) dir: Option<Mutex<D>>,
}

impl<N: OpenInode, D> Handle<N, D> {
    /// The open file, EBADF where there is none.
    pub(crate) fn file(&self) -> Result<BorrowedFd<'_>, Errno> {
        self.file.as_ref().map(AsFd::as_fd).ok_or(Errno::BADF)
    }

    /// The file whose data the open reads: its own file, or, once the
    /// inode's data moved (see [`OpenInode::moved`]), that file, reopened
    /// read-only on first use and kept for the life of the open. For the
    /// requests that read (READ, fstat, FSYNC, LSEEK, the source of
    /// COPY_FILE_RANGE); writes go to [`Handle::file`], which is where the
    /// data is for any open that may write.
    pub(crate) fn data(&self, proc: &ProcFd) -> Result<BorrowedFd<'_>, Errno> {
        let file = self.file()?;
        let Some(open) = &self.io else {
            return Ok(file);
        };
        if let Some(moved) = open.moved.get() {
            return Ok(moved.as_fd());
        }
        let Some(to) = open.inode.moved(open.layer) else {
            return Ok(file);
        };
        creds::daemon()?;
        let moved = proc.reopen(to.as_fd(), OFlags::RDONLY)?;
        // A racing request may have set it first; either one serves.
        let _ = open.moved.set(moved);
        Ok(open.moved.get().ok_or(Errno::IO)?.as_fd())
    }
}

/// The open handles by the `fh` the kernel was given.
pub(crate) struct Handles<N: OpenInode, D> {
    by_fh: RwLock<HashMap<u64, Arc<Handle<N, D>>>>,
    next: AtomicU64,
}

impl<N: OpenInode, D> Handles<N, D> {
    pub(crate) fn new() -> Self {
        Self {
            by_fh: RwLock::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    pub(crate) fn get(&self, fh: u64) -> Result<Arc<Handle<N, D>>, Errno> {
        let h = self.by_fh.read().map_err(|_| Errno::IO)?;
        h.get(&fh).cloned().ok_or(Errno::BADF)
    }

    /// Keep an open directory; its `fh`.
    pub(crate) fn add_dir(&self, file: Option<OwnedFd>, dir: D) -> Result<u64, Errno> {
        self.add(Handle {
            file,
            io: None,
            dir: Some(Mutex::new(dir)),
        })
    }

    /// Keep an open of the regular file `inode` made on its real file
    /// `layer`, already counted in its [`FileIo`]; its `fh`. On failure
    /// the count is undone.
    pub(crate) fn add_file(
        &self,
        ctx: &Context<'_>,
        inode: &Arc<N>,
        layer: N::Layer,
        file: OwnedFd,
    ) -> Result<u64, Errno> {
        let h = Handle {
            file: Some(file),
            io: Some(OpenFile {
                inode: inode.clone(),
                layer,
                moved: OnceLock::new(),
            }),
            dir: None,
        };
        self.add(h).inspect_err(|_| put_io(ctx, &**inode))
    }

    fn add(&self, h: Handle<N, D>) -> Result<u64, Errno> {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.by_fh
            .write()
            .map_err(|_| Errno::IO)?
            .insert(fh, Arc::new(h));
        Ok(fh)
    }

    /// RELEASE and RELEASEDIR: forget the handle; the last open of a
    /// regular inode closes its backing file.
    pub(crate) fn release(&self, ctx: &Context<'_>, fh: u64) -> Result<(), Errno> {
        let h = self.by_fh.write().map_err(|_| Errno::IO)?.remove(&fh);
        if let Some(open) = h.as_ref().and_then(|h| h.io.as_ref()) {
            put_io(ctx, &*open.inode);
        }
        Ok(())
    }

    /// FSYNC and FSYNCDIR; nothing to do for a handle without a file.
    pub(crate) fn fsync(&self, proc: &ProcFd, fh: u64, datasync: bool) -> Result<(), Errno> {
        creds::daemon()?;
        let h = self.get(fh)?;
        if h.file.is_none() {
            return Ok(());
        }
        let file = h.data(proc)?;
        if datasync {
            rustix::fs::fdatasync(file)
        } else {
            rustix::fs::fsync(file)
        }
    }

    /// READ: up to `size` bytes at `offset` into `buf` (empty on entry).
    pub(crate) fn read(
        &self,
        proc: &ProcFd,
        fh: u64,
        offset: u64,
        size: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        creds::daemon()?;
        let h = self.get(fh)?;
        let file = h.data(proc)?;
        buf.clear();
        buf.reserve(size as usize);
        let spare = buf
            .spare_capacity_mut()
            .get_mut(..size as usize)
            .ok_or(Errno::NOMEM)?;
        let n = rustix::io::pread(file, spare, offset)?.0.len();
        // SAFETY: pread initialised the first `n` bytes of the spare
        // capacity, and `buf` was cleared above.
        unsafe { buf.set_len(n) };
        Ok(())
    }

    /// WRITE `data` at `offset`, first clearing the setid bits the kernel
    /// asks to (the daemon's CAP_FSETID keeps the backing fs from it).
    pub(crate) fn write(
        &self,
        proc: &ProcFd,
        fh: u64,
        offset: u64,
        data: &[u8],
        wf: WriteFlags,
    ) -> Result<u32, Errno> {
        creds::daemon()?;
        let h = self.get(fh)?;
        let file = h.file()?;
        if wf.contains(WriteFlags::KILL_SUIDGID) {
            proc.kill_suidgid(file)?;
        }
        Ok(rustix::io::pwrite(file, data, offset)? as u32)
    }

    /// FALLOCATE with the kernel's `mode` flags.
    pub(crate) fn fallocate(
        &self,
        fh: u64,
        offset: u64,
        length: u64,
        mode: u32,
    ) -> Result<(), Errno> {
        creds::daemon()?;
        let h = self.get(fh)?;
        let file = h.file()?;
        let flags = rustix::fs::FallocateFlags::from_bits(mode).ok_or(Errno::OPNOTSUPP)?;
        rustix::fs::fallocate(file, flags, offset, length)
    }

    /// LSEEK, SEEK_DATA and SEEK_HOLE included.
    pub(crate) fn lseek(
        &self,
        proc: &ProcFd,
        fh: u64,
        offset: u64,
        whence: u32,
    ) -> Result<u64, Errno> {
        creds::daemon()?;
        let h = self.get(fh)?;
        let file = h.data(proc)?;
        let off = i64::try_from(offset).map_err(|_| Errno::INVAL)?;
        let from = match whence as i32 {
            libc::SEEK_SET => rustix::fs::SeekFrom::Start(offset),
            libc::SEEK_CUR => rustix::fs::SeekFrom::Current(off),
            libc::SEEK_END => rustix::fs::SeekFrom::End(off),
            libc::SEEK_DATA => rustix::fs::SeekFrom::Data(offset),
            libc::SEEK_HOLE => rustix::fs::SeekFrom::Hole(offset),
            _ => return Err(Errno::INVAL),
        };
        rustix::fs::seek(file, from)
    }

    /// COPY_FILE_RANGE between two open files.
    pub(crate) fn copy_file_range(
        &self,
        proc: &ProcFd,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
    ) -> Result<u64, Errno> {
        creds::daemon()?;
        let a = self.get(fh_in)?;
        let b = self.get(fh_out)?;
        let (mut oi, mut oo) = (off_in, off_out);
        let n = rustix::fs::copy_file_range(
            a.data(proc)?,
            Some(&mut oi),
            b.file()?,
            Some(&mut oo),
            usize::try_from(len).unwrap_or(usize::MAX),
        )?;
        Ok(n as u64)
    }
}

/// One open of `inode` is gone; the last one closes a backing file.
fn put_io<N: OpenInode + ?Sized>(ctx: &Context<'_>, inode: &N) {
    if let Ok(mut io) = inode.io().lock() {
        io.leave(ctx);
    }
}

/// Whether opens may get a FUSE-passthrough backing file, and whether one
/// ever did.
pub(crate) struct BackingFiles {
    /// The user asked for passthrough I/O.
    wanted: bool,
    active: AtomicBool,
    /// BACKING_OPEN failed once: the daemon lacks the privilege; say why
    /// once and stop trying.
    refused: AtomicBool,
}

impl BackingFiles {
    pub(crate) fn new(wanted: bool) -> Self {
        Self {
            wanted,
            active: AtomicBool::new(false),
            refused: AtomicBool::new(false),
        }
    }

    /// Whether opens may get a backing file: wanted, negotiated, permitted.
    pub(crate) fn wanted(&self, ctx: &Context<'_>) -> bool {
        self.wanted && ctx.passthrough() && !self.refused.load(Ordering::Relaxed)
    }

    /// True once a file was handed to the kernel as a backing file.
    pub(crate) fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Register `file` as a backing file (BACKING_OPEN); `None` where the
    /// kernel refuses, which is said once, and never asked again.
    pub(crate) fn open(&self, ctx: &Context<'_>, file: BorrowedFd<'_>) -> Option<BackingId> {
        // The kernel keeps the opener's credentials for I/O on the file.
        creds::daemon().ok()?;
        match ctx.open_backing(file) {
            Ok(id) => {
                self.active.store(true, Ordering::Relaxed);
                Some(id)
            }
            Err(e) => {
                if !self.refused.swap(true, Ordering::Relaxed) {
                    let why = if e == Errno::PERM {
                        "it needs CAP_SYS_ADMIN in the initial user namespace"
                    } else {
                        "the kernel refused the backing file"
                    };
                    tracing::warn!(
                        "FUSE passthrough unavailable ({e}): {why}; reads and writes go through the daemon"
                    );
                }
                None
            }
        }
    }
}

/// True for a file whose setid bits a write by another user clears:
/// S_ISUID, or S_ISGID with group execute. Writes through a backing file
/// run with the daemon's CAP_FSETID and would keep them, so such a file
/// does its I/O through the daemon, which clears them (WRITE with
/// KILL_SUIDGID).
pub(crate) fn write_clears_setid(mode: u32) -> bool {
    mode & libc::S_ISUID != 0
        || mode & (libc::S_ISGID | libc::S_IXGRP) == libc::S_ISGID | libc::S_IXGRP
}

/// The [`idfuse::Filesystem`] requests that act on an open handle alone —
/// READ, WRITE, FLUSH, RELEASE, FSYNC, RELEASEDIR, FSYNCDIR, FALLOCATE,
/// LSEEK and COPY_FILE_RANGE — for an `impl Filesystem` of a type with a
/// `handles: Handles<..>` and a `proc: ProcFd` field. FLUSH has nothing to
/// do: locks are the kernel's, and a local backing fs reports no errors at
/// close.
macro_rules! handle_requests {
    () => {
        fn read(
            &self,
            _ctx: &idfuse::Context<'_>,
            _ino: u64,
            fh: u64,
            offset: u64,
            size: u32,
            buf: &mut Vec<u8>,
        ) -> idfuse::Result<()> {
            self.handles.read(&self.proc, fh, offset, size, buf)
        }

        fn write(
            &self,
            _ctx: &idfuse::Context<'_>,
            _ino: u64,
            fh: u64,
            offset: u64,
            data: &[u8],
            wf: idfuse::WriteFlags,
            _flags: u32,
        ) -> idfuse::Result<u32> {
            self.handles.write(&self.proc, fh, offset, data, wf)
        }

        fn flush(
            &self,
            _ctx: &idfuse::Context<'_>,
            _ino: u64,
            _fh: u64,
            _lock_owner: u64,
        ) -> idfuse::Result<()> {
            Ok(())
        }

        fn release(
            &self,
            ctx: &idfuse::Context<'_>,
            _ino: u64,
            fh: u64,
            _flags: u32,
            _lock_owner: Option<u64>,
            _flush: bool,
        ) -> idfuse::Result<()> {
            self.handles.release(ctx, fh)
        }

        fn fsync(
            &self,
            _ctx: &idfuse::Context<'_>,
            _ino: u64,
            fh: u64,
            datasync: bool,
        ) -> idfuse::Result<()> {
            self.handles.fsync(&self.proc, fh, datasync)
        }

        fn releasedir(
            &self,
            ctx: &idfuse::Context<'_>,
            _ino: u64,
            fh: u64,
            _flags: u32,
        ) -> idfuse::Result<()> {
            self.handles.release(ctx, fh)
        }

        fn fsyncdir(
            &self,
            _ctx: &idfuse::Context<'_>,
            _ino: u64,
            fh: u64,
            datasync: bool,
        ) -> idfuse::Result<()> {
            self.handles.fsync(&self.proc, fh, datasync)
        }

        fn fallocate(
            &self,
            _ctx: &idfuse::Context<'_>,
            _ino: u64,
            fh: u64,
            offset: u64,
            length: u64,
            mode: u32,
        ) -> idfuse::Result<()> {
            self.handles.fallocate(fh, offset, length, mode)
        }

        fn lseek(
            &self,
            _ctx: &idfuse::Context<'_>,
            _ino: u64,
            fh: u64,
            offset: u64,
            whence: u32,
        ) -> idfuse::Result<u64> {
            self.handles.lseek(&self.proc, fh, offset, whence)
        }

        fn copy_file_range(
            &self,
            _ctx: &idfuse::Context<'_>,
            _ino_in: u64,
            fh_in: u64,
            off_in: u64,
            _ino_out: u64,
            fh_out: u64,
            off_out: u64,
            len: u64,
            _flags: u64,
        ) -> idfuse::Result<u64> {
            self.handles
                .copy_file_range(&self.proc, fh_in, off_in, fh_out, off_out, len)
        }
    };
}
pub(crate) use handle_requests;
