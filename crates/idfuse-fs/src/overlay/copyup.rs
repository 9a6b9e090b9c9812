//! Copy-up: a lower object about to change is copied into the upper layer
//! first. The copy is built under a temporary name in `WORKDIR/work` —
//! data (with copy_file_range), owner, xattrs (ACLs and
//! `security.capability` included, after the chown that would clear the
//! latter), mode, times — and only then renamed into place, so a crash
//! leaves the old view and some debris in the work directory, which the
//! next mount clears. Parents are copied up first, as directories.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use idfuse::Errno;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};

use crate::backing::{key_of, open_child, set_xattr, statx_fd, xattr_names, xattr_value};

use super::inodes::Node;
use super::layers::{is_dir, is_whiteout};
use super::Overlay;

/// Copy whole files in steps of this many bytes (copy_file_range may stop
/// short; each step is one syscall).
const STEP: usize = 1 << 30;

impl Overlay {
    /// The node's object in the upper layer, copied up (with its data when
    /// `data`) if it is not there yet. EROFS on a read-only overlay.
    pub(super) fn copy_up(&self, node: &Arc<Node>, data: bool) -> Result<Arc<OwnedFd>, Errno> {
        let layers = node.layers();
        if let Some(u) = layers.upper {
            return Ok(u);
        }
        let work = self.work.as_ref().ok_or(Errno::ROFS)?;
        // Makes an entry in the parent's upper directory.
        let _changing = self.changing();
        let (parent, name) = layers.parent.clone().ok_or(Errno::IO)?;
        let pupper = self.copy_up(&parent, false)?;
        let _one = self.copy_lock.lock().map_err(|_| Errno::IO)?;
        // Another request may have copied it meanwhile.
        if let Some(u) = node.layers().upper {
            return Ok(u);
        }
        let src = layers.lowers.first().cloned().ok_or(Errno::IO)?;
        // Copied up by an earlier node of the same object (forgotten and
        // looked up again meanwhile): adopt it.
        let upper = match open_child(pupper.as_fd(), &name) {
            Ok(fd) if !is_whiteout(&statx_fd(fd.as_fd())?) => fd,
            Ok(_) | Err(Errno::NOENT) => {
                self.build_copy(work.as_fd(), src.as_fd(), pupper.as_fd(), &name, data)?
            }
            Err(e) => return Err(e),
        };
        let ukey = key_of(&statx_fd(upper.as_fd())?);
        if let Ok(mut c) = self.copied.lock() {
            c.insert(ukey, node.key);
        }
        let upper = Arc::new(upper);
        if let Ok(mut l) = node.layers.lock() {
            l.upper = Some(upper.clone());
        }
        tracing::debug!(node = node.id, name = ?name, "copied up");
        Ok(upper)
    }

    /// Build a copy of `src` in `work` and rename it to `name` in `dir`.
    fn build_copy(
        &self,
        work: BorrowedFd<'_>,
        src: BorrowedFd<'_>,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        data: bool,
    ) -> Result<OwnedFd, Errno> {
        let tmp = self.temp_name();
        let st = statx_fd(src)?;
        let kind = u32::from(st.stx_mode) & libc::S_IFMT;
        match kind {
            libc::S_IFREG => {
                let out = rustix::fs::openat(
                    work,
                    &tmp,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                if data && st.stx_size > 0 {
                    let r = self
                        .proc
                        .reopen(src, OFlags::RDONLY)
                        .and_then(|input| copy_data(input.as_fd(), out.as_fd(), st.stx_size))
                        .and_then(|()| rustix::fs::fsync(&out));
                    if let Err(e) = r {
                        let _ = rustix::fs::unlinkat(work, &tmp, AtFlags::empty());
                        return Err(e);
                    }
                }
            }
            libc::S_IFDIR => rustix::fs::mkdirat(work, &tmp, Mode::from_raw_mode(0o700))?,
            libc::S_IFLNK => {
                let target = rustix::fs::readlinkat(src, "", Vec::new())?;
                rustix::fs::symlinkat(target.as_c_str(), work, &tmp)?;
            }
            _ => rustix::fs::mknodat(
                work,
                &tmp,
                FileType::from_raw_mode(kind),
                Mode::from_raw_mode(0o600),
                libc::makedev(st.stx_rdev_major, st.stx_rdev_minor),
            )?,
        }
        let r = (|| {
            let t = open_child(work, &tmp)?;
            self.copy_meta(src, t.as_fd(), &st)?;
            rustix::fs::renameat_with(work, &tmp, dir, name, RenameFlags::NOREPLACE)?;
            Ok(t)
        })();
        if r.is_err() {
            let _ = remove_tree(work, &tmp);
        }
        r
    }

    /// Give `dst` the owner, xattrs, mode and times of `src`.
    fn copy_meta(
        &self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        st: &rustix::fs::Statx,
    ) -> Result<(), Errno> {
        rustix::fs::chownat(
            dst,
            "",
            Some(rustix::fs::Uid::from_raw(st.stx_uid)),
            Some(rustix::fs::Gid::from_raw(st.stx_gid)),
            AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        )?;
        // After the chown, which would drop security.capability.
        for n in xattr_names(src)? {
            if n.starts_with(self.private_prefix.as_bytes()) {
                continue;
            }
            let n = OsStr::from_bytes(&n);
            let Some(v) = xattr_value(src, n)? else {
                continue;
            };
            match set_xattr(dst, n, &v, rustix::fs::XattrFlags::empty()) {
                Ok(()) => {}
                // An upper filesystem without that namespace (e.g. user.*
                // on a symlink, trusted.* in a user namespace) cannot take
                // it: copy-up fails as in the kernel, naming the xattr.
                Err(e) => {
                    tracing::warn!(xattr = ?n, "copy-up cannot set xattr: {e}");
                    return Err(e);
                }
            }
        }
        let kind = u32::from(st.stx_mode) & libc::S_IFMT;
        if kind != libc::S_IFLNK {
            self.proc.chmod(dst, u32::from(st.stx_mode) & 0o7777)?;
        }
        let ts = |t: rustix::fs::StatxTimestamp| rustix::fs::Timespec {
            tv_sec: t.tv_sec,
            tv_nsec: i64::from(t.tv_nsec),
        };
        let times = rustix::fs::Timestamps {
            last_access: ts(st.stx_atime),
            last_modification: ts(st.stx_mtime),
        };
        if kind == libc::S_IFLNK {
            // The magic link of an O_PATH symlink fd cannot be followed for
            // utimensat; AT_EMPTY_PATH on the fd itself sets the link's.
            rustix::fs::utimensat(
                dst,
                "",
                &times,
                AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
            )
            .or_else(|e| if e == Errno::INVAL { Ok(()) } else { Err(e) })?;
        } else {
            self.proc.utimes(dst, &times)?;
        }
        Ok(())
    }

    /// A fresh name in the work directory.
    pub(super) fn temp_name(&self) -> OsString {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        OsString::from(format!("#idfuse.{}.{n:x}", std::process::id()))
    }
}

/// Copy `len` bytes from the start of `input` to `out`: copy_file_range
/// (a reflink where the filesystem can), else read and write.
fn copy_data(input: BorrowedFd<'_>, out: BorrowedFd<'_>, len: u64) -> Result<(), Errno> {
    let (mut oi, mut oo) = (0u64, 0u64);
    while oi < len {
        let want = usize::try_from(len - oi).unwrap_or(STEP).min(STEP);
        match rustix::fs::copy_file_range(input, Some(&mut oi), out, Some(&mut oo), want) {
            Ok(0) => break,
            Ok(_) => {}
            // Across filesystems of different types, or not offered.
            Err(Errno::XDEV | Errno::INVAL | Errno::OPNOTSUPP | Errno::NOSYS) => {
                return copy_by_reads(input, out, oi, len)
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn copy_by_reads(
    input: BorrowedFd<'_>,
    out: BorrowedFd<'_>,
    from: u64,
    len: u64,
) -> Result<(), Errno> {
    let mut buf = vec![0u8; 1 << 20];
    let mut off = from;
    while off < len {
        let n = rustix::io::pread(input, &mut buf, off)?;
        if n == 0 {
            break;
        }
        let mut done = 0;
        while done < n {
            done += rustix::io::pwrite(out, &buf[done..n], off + done as u64)?;
        }
        off += n as u64;
    }
    Ok(())
}

/// Remove `name` in `dir` and, if it is a directory, all it holds; never
/// following a symlink.
pub(super) fn remove_tree(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    let fd = open_child(dir, name)?;
    if !is_dir(&statx_fd(fd.as_fd())?) {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty());
    }
    let d = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    clear_dir(d.as_fd())?;
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// Remove everything inside the directory `d` (opened for reading).
pub(super) fn clear_dir(d: BorrowedFd<'_>) -> Result<(), Errno> {
    let mut names = Vec::new();
    let mut it = rustix::fs::Dir::read_from(d)?;
    while let Some(e) = it.read() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    for n in names {
        remove_tree(d, OsStr::from_bytes(&n))?;
    }
    Ok(())
}
