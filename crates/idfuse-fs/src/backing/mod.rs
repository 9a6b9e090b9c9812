//! Primitives on a backing directory shared by the mirror and the overlay:
//! names resolved one component at a time below a directory fd, never
//! following a symlink or `..` ([`open_child`]); attributes as FUSE carries
//! them ([`to_attr`]); the inode-precise calls that go through
//! `/proc/self/fd` ([`ProcFd`]); creating as the kernel's `Owner`
//! ([`AsOwner`], [`creds`]); and the table of open files and directories
//! ([`Handles`]).
//!
//! The helpers here that change the backing filesystem put the daemon's
//! credentials back first ([`creds::daemon`]), and those that read
//! xattrs make sure they read as the daemon would ([`creds::searching`]),
//! so that none of them can act with a creating owner's left on the thread.

pub(crate) mod creds;
mod open;

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use idfuse::{Attr, Errno, SetTime};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, StatxFlags};

pub(crate) use creds::AsOwner;
pub(crate) use open::{
    handle_requests, write_clears_setid, BackingFiles, FileIo, Handles, OpenInode,
};

/// What the mirror and the overlay ask of the kernel at INIT: ACLs and
/// setid clearing (killpriv v2) as a local filesystem does them, the
/// creating caller's supplementary group for setgid directories, and the
/// usual speed-ups.
pub(crate) const INIT_FLAGS: idfuse::InitFlags = idfuse::InitFlags::POSIX_ACL
    .union(idfuse::InitFlags::DONT_MASK)
    .union(idfuse::InitFlags::HANDLE_KILLPRIV_V2)
    .union(idfuse::InitFlags::DO_READDIRPLUS)
    .union(idfuse::InitFlags::READDIRPLUS_AUTO)
    .union(idfuse::InitFlags::SETXATTR_EXT)
    .union(idfuse::InitFlags::CREATE_SUPP_GROUP)
    .union(idfuse::InitFlags::CACHE_SYMLINKS)
    .union(idfuse::InitFlags::PARALLEL_DIROPS)
    .union(idfuse::InitFlags::AUTO_INVAL_DATA)
    .union(idfuse::InitFlags::SPLICE_READ)
    .union(idfuse::InitFlags::SPLICE_WRITE);

/// `(st_dev, st_ino)` of a backing inode.
pub(crate) type Key = (u64, u64);

/// A name the kernel gave us: one component, never `.`/`..`.
pub(crate) fn check_name(name: &OsStr) -> Result<(), Errno> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(Errno::INVAL);
    }
    if b.len() > 255 {
        return Err(Errno::NAMETOOLONG);
    }
    Ok(())
}

/// Open `name` in `parent` as `O_PATH` without following anything out of
/// the parent: a single component, no symlink (a symlink at the end is
/// opened as itself), no `..`, no absolute path, no magic link.
pub(crate) fn open_child(parent: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    check_name(name)?;
    rustix::fs::openat2(
        parent,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_SYMLINKS,
    )
}

/// Descriptors the fd table is grown to at once by [`reserve_fd_table`].
pub(crate) const FD_TABLE_RESERVE: u64 = 1 << 16;

/// Grow this process's fd table now to hold [`FD_TABLE_RESERVE`]
/// descriptors (or the soft `RLIMIT_NOFILE`, if lower), for a filesystem
/// that holds an fd per inode the kernel remembers.
///
/// The kernel grows the table by doubling as descriptors are opened, and
/// in a process with more than one thread each growth waits for an RCU
/// grace period (`expand_fdtable`), 10-27 ms each on the development
/// machine: five of them were half the time of the first cold listing of a
/// 10,000-entry directory through the overlay, which opens an fd per entry.
/// A table never shrinks, so growing it once here costs at most one such
/// wait and 8 bytes per slot (512 KiB at the default).
pub(crate) fn reserve_fd_table() {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(FD_TABLE_RESERVE);
    let Some(top) = FD_TABLE_RESERVE.min(soft).checked_sub(1) else {
        return;
    };
    let grown =
        rustix::fs::open("/", OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).and_then(|any| {
            rustix::io::fcntl_dupfd_cloexec(&any, i32::try_from(top).unwrap_or(i32::MAX))
        });
    match grown {
        // Closed at once: the slot stays, the table keeps its size.
        Ok(fd) => drop(fd),
        Err(e) => tracing::debug!("could not grow the fd table to {} slots: {e}", top + 1),
    }
}

/// The resolve flags of every create below a parent fd.
pub(crate) const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_SYMLINKS);

/// The attributes of the inode `fd` refers to (a symlink as itself).
pub(crate) fn statx_fd(fd: BorrowedFd<'_>) -> Result<rustix::fs::Statx, Errno> {
    rustix::fs::statx(
        fd,
        "",
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS | StatxFlags::BTIME,
    )
}

/// The `(st_dev, st_ino)` of a statx result.
pub(crate) fn key_of(st: &rustix::fs::Statx) -> Key {
    (
        libc::makedev(st.stx_dev_major, st.stx_dev_minor),
        st.stx_ino,
    )
}

/// A device number as FUSE carries it (the kernel's `new_encode_dev`).
pub(crate) fn rdev_to_fuse(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// A FUSE device number (`new_decode_dev`) as mknod(2) takes it.
pub(crate) fn rdev_from_fuse(rdev: u32) -> u64 {
    let major = (rdev & 0xfff00) >> 8;
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
    libc::makedev(major, minor)
}

/// Attributes as the backing filesystem has them, inode number included.
pub(crate) fn to_attr(st: &rustix::fs::Statx) -> Attr {
    Attr {
        ino: st.stx_ino,
        size: st.stx_size,
        blocks: st.stx_blocks,
        // FUSE carries times as u64 and reads them back as signed.
        atime: st.stx_atime.tv_sec as u64,
        mtime: st.stx_mtime.tv_sec as u64,
        ctime: st.stx_ctime.tv_sec as u64,
        atimensec: st.stx_atime.tv_nsec,
        mtimensec: st.stx_mtime.tv_nsec,
        ctimensec: st.stx_ctime.tv_nsec,
        mode: u32::from(st.stx_mode),
        nlink: st.stx_nlink,
        uid: st.stx_uid,
        gid: st.stx_gid,
        rdev: rdev_to_fuse(st.stx_rdev_major, st.stx_rdev_minor),
        blksize: st.stx_blksize,
        flags: 0,
    }
}

/// The READDIRPLUS entry of `.` or `..` (`d_ino` from the listing): the
/// kernel ignores these, so they carry no lookup (node id 0).
pub(crate) fn dots_entry(d_ino: u64) -> idfuse::Entry {
    idfuse::Entry {
        ino: 0,
        generation: 0,
        attr: Attr {
            ino: d_ino,
            mode: libc::S_IFDIR,
            ..Attr::default()
        },
        entry_timeout: std::time::Duration::ZERO,
        attr_timeout: std::time::Duration::ZERO,
    }
}

/// A statx timestamp as the FUSE statx reply carries it.
pub(crate) fn sx(t: rustix::fs::StatxTimestamp) -> idfuse::abi::SxTime {
    idfuse::abi::SxTime {
        tv_sec: t.tv_sec,
        tv_nsec: t.tv_nsec,
        __reserved: 0,
    }
}

/// The statx reply for the inode `fd` refers to, with the fields `want`.
pub(crate) fn statx_reply(
    fd: BorrowedFd<'_>,
    want: StatxFlags,
) -> Result<(rustix::fs::Statx, idfuse::Statx), Errno> {
    let st = rustix::fs::statx(
        fd,
        "",
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        want,
    )?;
    let out = idfuse::Statx {
        mask: st.stx_mask,
        blksize: st.stx_blksize,
        attributes: st.stx_attributes.bits(),
        nlink: st.stx_nlink,
        uid: st.stx_uid,
        gid: st.stx_gid,
        mode: st.stx_mode,
        ino: st.stx_ino,
        size: st.stx_size,
        blocks: st.stx_blocks,
        attributes_mask: st.stx_attributes_mask.bits(),
        atime: sx(st.stx_atime),
        btime: sx(st.stx_btime),
        ctime: sx(st.stx_ctime),
        mtime: sx(st.stx_mtime),
        rdev_major: st.stx_rdev_major,
        rdev_minor: st.stx_rdev_minor,
        dev_major: st.stx_dev_major,
        dev_minor: st.stx_dev_minor,
        ..idfuse::Statx::default()
    };
    Ok((st, out))
}

/// The backing filesystem's statfs, as the kernel wants it.
pub(crate) fn statfs(fd: BorrowedFd<'_>) -> Result<idfuse::Kstatfs, Errno> {
    let st = rustix::fs::fstatvfs(fd)?;
    Ok(idfuse::Kstatfs {
        blocks: st.f_blocks,
        bfree: st.f_bfree,
        bavail: st.f_bavail,
        files: st.f_files,
        ffree: st.f_ffree,
        bsize: st.f_bsize as u32,
        namelen: st.f_namemax as u32,
        frsize: st.f_frsize as u32,
        ..idfuse::Kstatfs::default()
    })
}

/// A time to set as utimensat(2) takes it.
pub(crate) fn set_time(t: Option<SetTime>) -> rustix::fs::Timespec {
    match t {
        None => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        Some(SetTime::Now) => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        Some(SetTime::At { sec, nsec }) => rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: i64::from(nsec),
        },
    }
}

/// `/proc/self/fd`: the calls that take a path but must land on exactly
/// the inode an `O_PATH` fd holds (reopen with real access modes, chmod,
/// utimes, xattrs, link). Following the magic link lands on the inode
/// itself, even a symlink, and goes no further.
pub(crate) struct ProcFd(OwnedFd);

impl ProcFd {
    /// Open `/proc/self/fd`.
    pub(crate) fn open() -> Result<Self, Errno> {
        rustix::fs::open(
            "/proc/self/fd",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(Self)
    }

    /// The directory fd the names of [`ProcFd::name`] are relative to.
    pub(crate) fn dir(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.0.as_fd()
    }

    /// The name of `fd` in `/proc/self/fd`.
    pub(crate) fn name(fd: BorrowedFd<'_>) -> CString {
        // A decimal number never holds a NUL.
        CString::new(fd.as_raw_fd().to_string()).unwrap_or_default()
    }

    /// The absolute path of `fd` through /proc, for the calls that take no
    /// fd (xattrs: `fgetxattr` refuses `O_PATH` fds).
    pub(crate) fn path(fd: BorrowedFd<'_>) -> CString {
        CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
    }

    /// Reopen an `O_PATH` fd with real access flags. The magic link
    /// resolves to exactly that inode; a symlink refuses with ELOOP.
    pub(crate) fn reopen(&self, fd: BorrowedFd<'_>, flags: OFlags) -> Result<OwnedFd, Errno> {
        rustix::fs::openat(
            &self.0,
            Self::name(fd).as_c_str(),
            (flags & !(OFlags::CREATE | OFlags::EXCL)) | OFlags::CLOEXEC,
            Mode::empty(),
        )
    }

    /// chmod the inode (never a symlink's target).
    pub(crate) fn chmod(&self, fd: BorrowedFd<'_>, mode: u32) -> Result<(), Errno> {
        creds::daemon()?;
        rustix::fs::chmodat(
            &self.0,
            Self::name(fd).as_c_str(),
            Mode::from_raw_mode(mode),
            AtFlags::empty(),
        )
    }

    /// Clear S_ISUID, and S_ISGID if group-executable (killpriv v2: the
    /// daemon runs with CAP_FSETID, so the backing fs will not do it).
    pub(crate) fn kill_suidgid(&self, fd: BorrowedFd<'_>) -> Result<(), Errno> {
        let st = statx_fd(fd)?;
        let mode = u32::from(st.stx_mode);
        let mut m = mode & !libc::S_ISUID;
        if m & libc::S_IXGRP != 0 {
            m &= !libc::S_ISGID;
        }
        if m != mode {
            self.chmod(fd, m & 0o7777)?;
        }
        Ok(())
    }

    /// Clear S_ISGID after SETXATTR of an ACL with ACL_KILL_SGID: the
    /// backing fs updated the mode from the ACL but, the daemon holding
    /// CAP_FSETID, kept the bit the caller must lose.
    pub(crate) fn kill_sgid(&self, fd: BorrowedFd<'_>) -> Result<(), Errno> {
        let mode = u32::from(statx_fd(fd)?.stx_mode);
        if mode & libc::S_ISGID != 0 {
            self.chmod(fd, mode & 0o7777 & !libc::S_ISGID)?;
        }
        Ok(())
    }

    /// SETXATTR on the inode `fd` as the kernel asks it: the raw `flags`
    /// (XATTR_CREATE/REPLACE), the value verbatim, then S_ISGID cleared
    /// where an ACL change requires it (`ACL_KILL_SGID`).
    pub(crate) fn setxattr_request(
        &self,
        fd: BorrowedFd<'_>,
        name: &OsStr,
        value: &[u8],
        flags: u32,
        sf: idfuse::SetxattrFlags,
    ) -> Result<(), Errno> {
        let flags = rustix::fs::XattrFlags::from_bits(flags).ok_or(Errno::INVAL)?;
        set_xattr(fd, name, value, flags)?;
        if sf.contains(idfuse::SetxattrFlags::ACL_KILL_SGID) {
            self.kill_sgid(fd)?;
        }
        Ok(())
    }

    /// SETATTR on the inode `fd` (`O_PATH`): the size through `open`, an
    /// open file of it, if the kernel named one, else through a write-only
    /// reopen; then owner, mode, setid clearing and times, in that order
    /// (a chown's clearing of setid bits comes before an explicit mode).
    /// Ids are in the filesystem's id space already.
    pub(crate) fn set_attr(
        &self,
        fd: BorrowedFd<'_>,
        open: Option<BorrowedFd<'_>>,
        a: &idfuse::SetAttr,
    ) -> Result<(), Errno> {
        creds::daemon()?;
        if let Some(size) = a.size {
            match open {
                Some(f) => rustix::fs::ftruncate(f, size)?,
                None => {
                    let f = self.reopen(fd, OFlags::WRONLY | OFlags::NONBLOCK)?;
                    rustix::fs::ftruncate(&f, size)?;
                }
            }
        }
        if a.uid.is_some() || a.gid.is_some() {
            // The backing fs clears setid bits on chown of a non-directory
            // by itself.
            rustix::fs::chownat(
                fd,
                "",
                a.uid.map(rustix::fs::Uid::from_raw),
                a.gid.map(rustix::fs::Gid::from_raw),
                AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        if let Some(mode) = a.mode {
            self.chmod(fd, mode & 0o7777)?;
        }
        if a.kill_suidgid {
            self.kill_suidgid(fd)?;
        }
        if a.atime.is_some() || a.mtime.is_some() {
            let times = rustix::fs::Timestamps {
                last_access: set_time(a.atime),
                last_modification: set_time(a.mtime),
            };
            // Through the magic link: lands on the inode, even a symlink.
            self.utimes(fd, &times)?;
        }
        Ok(())
    }

    /// Set the inode's access and modification times.
    pub(crate) fn utimes(
        &self,
        fd: BorrowedFd<'_>,
        times: &rustix::fs::Timestamps,
    ) -> Result<(), Errno> {
        creds::daemon()?;
        rustix::fs::utimensat(&self.0, Self::name(fd).as_c_str(), times, AtFlags::empty())
    }

    /// Make `newname` in `newdir` a hard link to the inode. The documented
    /// O_PATH idiom; unlike AT_EMPTY_PATH it needs no CAP_DAC_READ_SEARCH,
    /// so it works in a user namespace too.
    pub(crate) fn link(
        &self,
        fd: BorrowedFd<'_>,
        newdir: BorrowedFd<'_>,
        newname: &OsStr,
    ) -> Result<(), Errno> {
        creds::daemon()?;
        rustix::fs::linkat(
            &self.0,
            Self::name(fd).as_c_str(),
            newdir,
            newname,
            AtFlags::SYMLINK_FOLLOW,
        )
    }
}

/// An xattr value or list, as GETXATTR/LISTXATTR answer: its size when
/// `size` is 0, else at most `size` bytes.
pub(crate) fn get_xattr(
    fd: BorrowedFd<'_>,
    name: &OsStr,
    size: u32,
) -> Result<idfuse::Xattr, Errno> {
    creds::searching()?;
    let path = ProcFd::path(fd);
    if size == 0 {
        let n = rustix::fs::getxattr_query(path.as_c_str(), name)?;
        return Ok(idfuse::Xattr::Size(
            u32::try_from(n).map_err(|_| Errno::TOOBIG)?,
        ));
    }
    let mut buf = vec![0u8; size as usize];
    let n = rustix::fs::getxattr(path.as_c_str(), name, &mut buf[..])?;
    buf.truncate(n);
    Ok(idfuse::Xattr::Data(buf))
}

/// The NUL-separated xattr names of the inode, as [`get_xattr`] answers.
pub(crate) fn list_xattr(fd: BorrowedFd<'_>, size: u32) -> Result<idfuse::Xattr, Errno> {
    creds::searching()?;
    let path = ProcFd::path(fd);
    if size == 0 {
        let n = rustix::fs::listxattr_query(path.as_c_str())?;
        return Ok(idfuse::Xattr::Size(
            u32::try_from(n).map_err(|_| Errno::TOOBIG)?,
        ));
    }
    let mut buf = vec![0u8; size as usize];
    let n = rustix::fs::listxattr(path.as_c_str(), &mut buf[..])?;
    buf.truncate(n);
    Ok(idfuse::Xattr::Data(buf))
}

/// Set an xattr on the inode, verbatim (ACLs and capabilities arrive in
/// the filesystem's ids).
pub(crate) fn set_xattr(
    fd: BorrowedFd<'_>,
    name: &OsStr,
    value: &[u8],
    flags: rustix::fs::XattrFlags,
) -> Result<(), Errno> {
    creds::daemon()?;
    rustix::fs::setxattr(ProcFd::path(fd).as_c_str(), name, value, flags)
}

/// Remove an xattr from the inode.
pub(crate) fn remove_xattr(fd: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    creds::daemon()?;
    rustix::fs::removexattr(ProcFd::path(fd).as_c_str(), name)
}
/// A whole xattr value, `None` when the inode has no such xattr (or the
/// filesystem no xattrs).
pub(crate) fn xattr_value(fd: BorrowedFd<'_>, name: &OsStr) -> Result<Option<Vec<u8>>, Errno> {
    creds::searching()?;
    let path = ProcFd::path(fd);
    loop {
        let n = match rustix::fs::getxattr_query(path.as_c_str(), name) {
            Ok(n) => n,
            Err(Errno::NODATA | Errno::OPNOTSUPP) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut buf = vec![0u8; n];
        match rustix::fs::getxattr(path.as_c_str(), name, &mut buf[..]) {
            Ok(m) => {
                buf.truncate(m);
                return Ok(Some(buf));
            }
            // Grew meanwhile: ask again.
            Err(Errno::RANGE) => continue,
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// Every xattr name of the inode.
pub(crate) fn xattr_names(fd: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    creds::searching()?;
    let path = ProcFd::path(fd);
    loop {
        let n = match rustix::fs::listxattr_query(path.as_c_str()) {
            Ok(n) => n,
            Err(Errno::OPNOTSUPP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut buf = vec![0u8; n];
        match rustix::fs::listxattr(path.as_c_str(), &mut buf[..]) {
            Ok(m) => {
                buf.truncate(m);
                return Ok(buf
                    .split(|b| *b == 0)
                    .filter(|n| !n.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect());
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}
