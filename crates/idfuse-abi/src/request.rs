//! Decoding one request read from `/dev/fuse` into a typed [`Request`] that
//! borrows names and write data from the read buffer. Decoding never panics:
//! every malformed buffer is a [`DecodeError`].

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use zerocopy::FromBytes;

use crate::kernel::*;

/// Why a buffer is not a valid request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the 40-byte `fuse_in_header`.
    #[error("request of {0} bytes is shorter than the 40-byte header")]
    ShortHeader(usize),
    /// `in.len` disagrees with the number of bytes read.
    #[error("header says {header} bytes but {read} were read")]
    LengthMismatch {
        /// `in.len`
        header: u32,
        /// bytes read
        read: usize,
    },
    /// The body ends before an argument of the opcode.
    #[error("opcode {opcode}: body too short for {what}")]
    Truncated {
        /// the opcode
        opcode: u32,
        /// which argument is missing
        what: &'static str,
    },
    /// A name argument lacks its NUL terminator.
    #[error("opcode {opcode}: {what} is not NUL-terminated")]
    Unterminated {
        /// the opcode
        opcode: u32,
        /// which argument
        what: &'static str,
    },
    /// The extension area is malformed.
    #[error("malformed request extension: {0}")]
    BadExtension(&'static str),
}

/// Knobs that change how requests decode, fixed once INIT is negotiated.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeOptions {
    /// `FUSE_SETXATTR_EXT` negotiated: `fuse_setxattr_in` is 16 bytes, not 8.
    pub setxattr_ext: bool,
}

/// One decoded request.
#[derive(Debug)]
pub struct Request<'a> {
    /// The header, as the kernel sent it.
    pub header: InHeader,
    /// The operation and its arguments.
    pub op: Operation<'a>,
    /// Request extensions (7.38+), present only on inode-creating requests.
    pub ext: Extensions<'a>,
}

/// Request extensions.
#[derive(Debug, Default, Clone, Copy)]
pub struct Extensions<'a> {
    /// The security context the kernel sent (`FUSE_SECURITY_CTX`).
    pub security_ctx: Option<SecurityContext<'a>>,
    /// Supplementary groups (`FUSE_EXT_GROUPS`): the kernel sends at most one,
    /// the parent directory's gid, when the caller is in it.
    pub supp_groups: Option<SuppGroupList<'a>>,
}

/// One security context: an xattr name and its value.
#[derive(Debug, Clone, Copy)]
pub struct SecurityContext<'a> {
    /// xattr name, e.g. `security.selinux`.
    pub name: &'a OsStr,
    /// xattr value.
    pub value: &'a [u8],
}

/// The gids of a `FUSE_EXT_GROUPS` extension.
#[derive(Debug, Clone, Copy)]
pub struct SuppGroupList<'a>(&'a [u8]);

impl<'a> SuppGroupList<'a> {
    /// The gids, in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        self.0
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
    }
    /// The first gid, the only one today's kernels send.
    pub fn first(&self) -> Option<u32> {
        self.iter().next()
    }
}

/// The list of a BATCH_FORGET request.
#[derive(Debug, Clone, Copy)]
pub struct ForgetList<'a>(&'a [u8]);

impl<'a> ForgetList<'a> {
    /// The entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = ForgetOne> + 'a {
        self.0
            .chunks_exact(core::mem::size_of::<ForgetOne>())
            .filter_map(|c| ForgetOne::read_from_bytes(c).ok())
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len() / core::mem::size_of::<ForgetOne>()
    }
    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every request the kernel sends, with its arguments. Variants are named
/// after the opcodes (`FUSE_LOOKUP` is `Lookup`); `arg` is the opcode's fixed
/// argument struct, names and data borrow from the read buffer.
#[derive(Debug)]
pub enum Operation<'a> {
    /// `FUSE_LOOKUP`: look `name` up in the header's node.
    Lookup {
        /// The name (without its NUL).
        name: &'a OsStr,
    },
    /// `FUSE_FORGET`: drop `arg.nlookup` lookups (no reply).
    Forget {
        /// The fixed argument.
        arg: ForgetIn,
    },
    /// `FUSE_GETATTR`.
    Getattr {
        /// The fixed argument.
        arg: GetattrIn,
    },
    /// `FUSE_SETATTR`.
    Setattr {
        /// The fixed argument.
        arg: SetattrIn,
    },
    /// `FUSE_READLINK`.
    Readlink,
    /// `FUSE_SYMLINK`: create `name` pointing at `target`.
    Symlink {
        /// The name (without its NUL).
        name: &'a OsStr,
        /// The symlink's target.
        target: &'a OsStr,
    },
    /// `FUSE_MKNOD`.
    Mknod {
        /// The fixed argument.
        arg: MknodIn,
        /// The name (without its NUL).
        name: &'a OsStr,
    },
    /// `FUSE_MKDIR`.
    Mkdir {
        /// The fixed argument.
        arg: MkdirIn,
        /// The name (without its NUL).
        name: &'a OsStr,
    },
    /// `FUSE_UNLINK`.
    Unlink {
        /// The name (without its NUL).
        name: &'a OsStr,
    },
    /// `FUSE_RMDIR`.
    Rmdir {
        /// The name (without its NUL).
        name: &'a OsStr,
    },
    /// `FUSE_RENAME`: `name` in the header's node to `newname` in `arg.newdir`.
    Rename {
        /// The fixed argument.
        arg: RenameIn,
        /// The name (without its NUL).
        name: &'a OsStr,
        /// The new name.
        newname: &'a OsStr,
    },
    /// `FUSE_LINK`: link `arg.oldnodeid` as `newname` in the header's node.
    Link {
        /// The fixed argument.
        arg: LinkIn,
        /// The new name.
        newname: &'a OsStr,
    },
    /// `FUSE_OPEN`.
    Open {
        /// The fixed argument.
        arg: OpenIn,
    },
    /// `FUSE_READ`.
    Read {
        /// The fixed argument.
        arg: ReadIn,
    },
    /// `FUSE_WRITE`.
    Write {
        /// The fixed argument.
        arg: WriteIn,
        /// The bytes that follow the argument.
        data: &'a [u8],
    },
    /// `FUSE_STATFS`.
    Statfs,
    /// `FUSE_RELEASE`.
    Release {
        /// The fixed argument.
        arg: ReleaseIn,
    },
    /// `FUSE_FSYNC`.
    Fsync {
        /// The fixed argument.
        arg: FsyncIn,
    },
    /// `FUSE_SETXATTR`.
    Setxattr {
        /// The fixed argument.
        arg: SetxattrIn,
        /// The name (without its NUL).
        name: &'a OsStr,
        /// The attribute's value.
        value: &'a [u8],
    },
    /// `FUSE_GETXATTR`.
    Getxattr {
        /// The fixed argument.
        arg: GetxattrIn,
        /// The name (without its NUL).
        name: &'a OsStr,
    },
    /// `FUSE_LISTXATTR`.
    Listxattr {
        /// The fixed argument.
        arg: GetxattrIn,
    },
    /// `FUSE_REMOVEXATTR`.
    Removexattr {
        /// The name (without its NUL).
        name: &'a OsStr,
    },
    /// `FUSE_FLUSH`.
    Flush {
        /// The fixed argument.
        arg: FlushIn,
    },
    /// `FUSE_INIT`.
    Init {
        /// The fixed argument.
        arg: InitIn,
    },
    /// `FUSE_OPENDIR`.
    Opendir {
        /// The fixed argument.
        arg: OpenIn,
    },
    /// `FUSE_READDIR`.
    Readdir {
        /// The fixed argument.
        arg: ReadIn,
    },
    /// `FUSE_RELEASEDIR`.
    Releasedir {
        /// The fixed argument.
        arg: ReleaseIn,
    },
    /// `FUSE_FSYNCDIR`.
    Fsyncdir {
        /// The fixed argument.
        arg: FsyncIn,
    },
    /// `FUSE_GETLK`.
    Getlk {
        /// The fixed argument.
        arg: LkIn,
    },
    /// `FUSE_SETLK`.
    Setlk {
        /// The fixed argument.
        arg: LkIn,
    },
    /// `FUSE_SETLKW`.
    Setlkw {
        /// The fixed argument.
        arg: LkIn,
    },
    /// `FUSE_ACCESS`.
    Access {
        /// The fixed argument.
        arg: AccessIn,
    },
    /// `FUSE_CREATE`.
    Create {
        /// The fixed argument.
        arg: CreateIn,
        /// The name (without its NUL).
        name: &'a OsStr,
    },
    /// `FUSE_INTERRUPT`: `arg.unique` is the request to interrupt.
    Interrupt {
        /// The fixed argument.
        arg: InterruptIn,
    },
    /// `FUSE_BMAP`.
    Bmap {
        /// The fixed argument.
        arg: BmapIn,
    },
    /// `FUSE_DESTROY`.
    Destroy,
    /// `FUSE_IOCTL`.
    Ioctl {
        /// The fixed argument.
        arg: IoctlIn,
        /// The bytes that follow the argument.
        data: &'a [u8],
    },
    /// `FUSE_POLL`.
    Poll {
        /// The fixed argument.
        arg: PollIn,
    },
    /// `FUSE_NOTIFY_REPLY`: data the kernel returns for a RETRIEVE notification.
    NotifyReply {
        /// The fixed argument.
        arg: NotifyRetrieveIn,
        /// The bytes that follow the argument.
        data: &'a [u8],
    },
    /// `FUSE_BATCH_FORGET` (no reply).
    BatchForget {
        /// The fixed argument.
        arg: BatchForgetIn,
        /// The inodes and counts.
        nodes: ForgetList<'a>,
    },
    /// `FUSE_FALLOCATE`.
    Fallocate {
        /// The fixed argument.
        arg: FallocateIn,
    },
    /// `FUSE_READDIRPLUS`.
    Readdirplus {
        /// The fixed argument.
        arg: ReadIn,
    },
    /// `FUSE_RENAME2`: a rename with `arg.flags`.
    Rename2 {
        /// The fixed argument.
        arg: Rename2In,
        /// The name (without its NUL).
        name: &'a OsStr,
        /// The new name.
        newname: &'a OsStr,
    },
    /// `FUSE_LSEEK`.
    Lseek {
        /// The fixed argument.
        arg: LseekIn,
    },
    /// `FUSE_COPY_FILE_RANGE`.
    CopyFileRange {
        /// The fixed argument.
        arg: CopyFileRangeIn,
    },
    /// `FUSE_SETUPMAPPING` (DAX).
    Setupmapping {
        /// The fixed argument.
        arg: SetupmappingIn,
    },
    /// `FUSE_REMOVEMAPPING` (DAX).
    Removemapping {
        /// The fixed argument.
        arg: RemovemappingIn,
        /// The `fuse_removemapping_one` records.
        entries: &'a [u8],
    },
    /// `FUSE_SYNCFS`.
    Syncfs {
        /// The fixed argument.
        arg: SyncfsIn,
    },
    /// `FUSE_TMPFILE`.
    Tmpfile {
        /// The fixed argument.
        arg: CreateIn,
        /// The name (without its NUL).
        name: &'a OsStr,
    },
    /// `FUSE_STATX`.
    Statx {
        /// The fixed argument.
        arg: StatxIn,
    },
    /// `FUSE_COPY_FILE_RANGE_64` (7.45).
    CopyFileRange64 {
        /// The fixed argument.
        arg: CopyFileRangeIn,
    },
    /// `CUSE_INIT`.
    CuseInit {
        /// The fixed argument.
        arg: CuseInitIn,
    },
    /// An opcode this crate does not know; the server answers it `ENOSYS`.
    Unknown {
        /// The opcode.
        opcode: u32,
        /// Everything after the header.
        body: &'a [u8],
    },
}

impl Operation<'_> {
    /// The kernel's name of the opcode, for logs.
    pub fn name(&self) -> &'static str {
        use Operation::*;
        match self {
            Lookup { .. } => "LOOKUP",
            Forget { .. } => "FORGET",
            Getattr { .. } => "GETATTR",
            Setattr { .. } => "SETATTR",
            Readlink => "READLINK",
            Symlink { .. } => "SYMLINK",
            Mknod { .. } => "MKNOD",
            Mkdir { .. } => "MKDIR",
            Unlink { .. } => "UNLINK",
            Rmdir { .. } => "RMDIR",
            Rename { .. } => "RENAME",
            Link { .. } => "LINK",
            Open { .. } => "OPEN",
            Read { .. } => "READ",
            Write { .. } => "WRITE",
            Statfs => "STATFS",
            Release { .. } => "RELEASE",
            Fsync { .. } => "FSYNC",
            Setxattr { .. } => "SETXATTR",
            Getxattr { .. } => "GETXATTR",
            Listxattr { .. } => "LISTXATTR",
            Removexattr { .. } => "REMOVEXATTR",
            Flush { .. } => "FLUSH",
            Init { .. } => "INIT",
            Opendir { .. } => "OPENDIR",
            Readdir { .. } => "READDIR",
            Releasedir { .. } => "RELEASEDIR",
            Fsyncdir { .. } => "FSYNCDIR",
            Getlk { .. } => "GETLK",
            Setlk { .. } => "SETLK",
            Setlkw { .. } => "SETLKW",
            Access { .. } => "ACCESS",
            Create { .. } => "CREATE",
            Interrupt { .. } => "INTERRUPT",
            Bmap { .. } => "BMAP",
            Destroy => "DESTROY",
            Ioctl { .. } => "IOCTL",
            Poll { .. } => "POLL",
            NotifyReply { .. } => "NOTIFY_REPLY",
            BatchForget { .. } => "BATCH_FORGET",
            Fallocate { .. } => "FALLOCATE",
            Readdirplus { .. } => "READDIRPLUS",
            Rename2 { .. } => "RENAME2",
            Lseek { .. } => "LSEEK",
            CopyFileRange { .. } => "COPY_FILE_RANGE",
            Setupmapping { .. } => "SETUPMAPPING",
            Removemapping { .. } => "REMOVEMAPPING",
            Syncfs { .. } => "SYNCFS",
            Tmpfile { .. } => "TMPFILE",
            Statx { .. } => "STATX",
            CopyFileRange64 { .. } => "COPY_FILE_RANGE_64",
            CuseInit { .. } => "CUSE_INIT",
            Unknown { .. } => "UNKNOWN",
        }
    }

    /// True for the requests that get no reply (FORGET, BATCH_FORGET).
    pub fn is_forget(&self) -> bool {
        matches!(
            self,
            Operation::Forget { .. } | Operation::BatchForget { .. }
        )
    }
}

/// A cursor over the body of one request.
struct Body<'a> {
    opcode: u32,
    rest: &'a [u8],
}

impl<'a> Body<'a> {
    fn arg<T: FromBytes>(&mut self, what: &'static str) -> Result<T, DecodeError> {
        let (v, rest) = T::read_from_prefix(self.rest).map_err(|_| DecodeError::Truncated {
            opcode: self.opcode,
            what,
        })?;
        self.rest = rest;
        Ok(v)
    }

    /// A struct that older kernels sent shorter: missing tail bytes read as zero.
    fn arg_zero_filled<T: FromBytes + zerocopy::IntoBytes + Default>(
        &mut self,
        min: usize,
        what: &'static str,
    ) -> Result<T, DecodeError> {
        let want = core::mem::size_of::<T>();
        if self.rest.len() < min {
            return Err(DecodeError::Truncated {
                opcode: self.opcode,
                what,
            });
        }
        let take = self.rest.len().min(want);
        let mut v = T::default();
        v.as_mut_bytes()[..take].copy_from_slice(&self.rest[..take]);
        self.rest = &self.rest[take..];
        Ok(v)
    }

    fn name(&mut self, what: &'static str) -> Result<&'a OsStr, DecodeError> {
        let nul = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Unterminated {
                opcode: self.opcode,
                what,
            })?;
        let name = &self.rest[..nul];
        self.rest = &self.rest[nul + 1..];
        Ok(OsStr::from_bytes(name))
    }

    fn bytes(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < len {
            return Err(DecodeError::Truncated {
                opcode: self.opcode,
                what,
            });
        }
        let (a, b) = self.rest.split_at(len);
        self.rest = b;
        Ok(a)
    }

    fn remaining(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.rest)
    }
}

/// Decode one request. `buf` must hold exactly the bytes one `read(2)` of
/// `/dev/fuse` returned.
pub fn decode(buf: &[u8], opts: DecodeOptions) -> Result<Request<'_>, DecodeError> {
    let (header, _) =
        InHeader::read_from_prefix(buf).map_err(|_| DecodeError::ShortHeader(buf.len()))?;
    let hdr_len = core::mem::size_of::<InHeader>();
    if header.len as usize != buf.len() || (header.len as usize) < hdr_len {
        return Err(DecodeError::LengthMismatch {
            header: header.len,
            read: buf.len(),
        });
    }
    let ext_len = header.total_extlen as usize * 8;
    let body_end = buf
        .len()
        .checked_sub(ext_len)
        .filter(|&end| end >= hdr_len)
        .ok_or(DecodeError::BadExtension(
            "extension area larger than the request",
        ))?;
    let ext = decode_extensions(&buf[body_end..])?;
    let opcode = header.opcode;
    let mut b = Body {
        opcode,
        rest: &buf[hdr_len..body_end],
    };
    use crate::kernel::opcode as oc;
    use Operation as O;
    let op = match opcode {
        oc::LOOKUP => O::Lookup {
            name: b.name("name")?,
        },
        oc::FORGET => O::Forget {
            arg: b.arg("fuse_forget_in")?,
        },
        oc::GETATTR => O::Getattr {
            arg: b.arg("fuse_getattr_in")?,
        },
        oc::SETATTR => O::Setattr {
            arg: b.arg("fuse_setattr_in")?,
        },
        oc::READLINK => O::Readlink,
        oc::SYMLINK => {
            let name = b.name("name")?;
            let target = b.name("link target")?;
            O::Symlink { name, target }
        }
        oc::MKNOD => {
            let arg = b.arg_zero_filled(COMPAT_MKNOD_IN_SIZE, "fuse_mknod_in")?;
            O::Mknod {
                arg,
                name: b.name("name")?,
            }
        }
        oc::MKDIR => {
            let arg = b.arg("fuse_mkdir_in")?;
            O::Mkdir {
                arg,
                name: b.name("name")?,
            }
        }
        oc::UNLINK => O::Unlink {
            name: b.name("name")?,
        },
        oc::RMDIR => O::Rmdir {
            name: b.name("name")?,
        },
        oc::RENAME => {
            let arg = b.arg("fuse_rename_in")?;
            let name = b.name("old name")?;
            O::Rename {
                arg,
                name,
                newname: b.name("new name")?,
            }
        }
        oc::LINK => {
            let arg = b.arg("fuse_link_in")?;
            O::Link {
                arg,
                newname: b.name("new name")?,
            }
        }
        oc::OPEN => O::Open {
            arg: b.arg("fuse_open_in")?,
        },
        oc::READ => O::Read {
            arg: b.arg("fuse_read_in")?,
        },
        oc::WRITE => {
            let arg: WriteIn = b.arg_zero_filled(COMPAT_WRITE_IN_SIZE, "fuse_write_in")?;
            let data = b.bytes(arg.size as usize, "write data")?;
            O::Write { arg, data }
        }
        oc::STATFS => O::Statfs,
        oc::RELEASE => O::Release {
            arg: b.arg("fuse_release_in")?,
        },
        oc::FSYNC => O::Fsync {
            arg: b.arg("fuse_fsync_in")?,
        },
        oc::SETXATTR => {
            let arg = if opts.setxattr_ext {
                b.arg::<SetxattrIn>("fuse_setxattr_in")?
            } else {
                // Without FUSE_SETXATTR_EXT the kernel sends the 8-byte compat form.
                let compat: [u32; 2] = b.arg("fuse_setxattr_in (compat)")?;
                SetxattrIn {
                    size: compat[0],
                    flags: compat[1],
                    ..SetxattrIn::default()
                }
            };
            let name = b.name("name")?;
            let value = b.bytes(arg.size as usize, "value")?;
            O::Setxattr { arg, name, value }
        }
        oc::GETXATTR => {
            let arg = b.arg("fuse_getxattr_in")?;
            O::Getxattr {
                arg,
                name: b.name("name")?,
            }
        }
        oc::LISTXATTR => O::Listxattr {
            arg: b.arg("fuse_getxattr_in")?,
        },
        oc::REMOVEXATTR => O::Removexattr {
            name: b.name("name")?,
        },
        oc::FLUSH => O::Flush {
            arg: b.arg("fuse_flush_in")?,
        },
        oc::INIT => O::Init {
            arg: b.arg_zero_filled(16, "fuse_init_in")?,
        },
        oc::OPENDIR => O::Opendir {
            arg: b.arg("fuse_open_in")?,
        },
        oc::READDIR => O::Readdir {
            arg: b.arg("fuse_read_in")?,
        },
        oc::RELEASEDIR => O::Releasedir {
            arg: b.arg("fuse_release_in")?,
        },
        oc::FSYNCDIR => O::Fsyncdir {
            arg: b.arg("fuse_fsync_in")?,
        },
        oc::GETLK => O::Getlk {
            arg: b.arg("fuse_lk_in")?,
        },
        oc::SETLK => O::Setlk {
            arg: b.arg("fuse_lk_in")?,
        },
        oc::SETLKW => O::Setlkw {
            arg: b.arg("fuse_lk_in")?,
        },
        oc::ACCESS => O::Access {
            arg: b.arg("fuse_access_in")?,
        },
        oc::CREATE => {
            let arg = b.arg("fuse_create_in")?;
            O::Create {
                arg,
                name: b.name("name")?,
            }
        }
        oc::INTERRUPT => O::Interrupt {
            arg: b.arg("fuse_interrupt_in")?,
        },
        oc::BMAP => O::Bmap {
            arg: b.arg("fuse_bmap_in")?,
        },
        oc::DESTROY => O::Destroy,
        oc::IOCTL => {
            let arg: IoctlIn = b.arg("fuse_ioctl_in")?;
            O::Ioctl {
                arg,
                data: b.remaining(),
            }
        }
        oc::POLL => O::Poll {
            arg: b.arg("fuse_poll_in")?,
        },
        oc::NOTIFY_REPLY => {
            let arg: NotifyRetrieveIn = b.arg("fuse_notify_retrieve_in")?;
            let data = b.bytes(arg.size as usize, "retrieved data")?;
            O::NotifyReply { arg, data }
        }
        oc::BATCH_FORGET => {
            let arg: BatchForgetIn = b.arg("fuse_batch_forget_in")?;
            let want = (arg.count as usize)
                .checked_mul(core::mem::size_of::<ForgetOne>())
                .ok_or(DecodeError::Truncated {
                    opcode,
                    what: "forget list",
                })?;
            let nodes = ForgetList(b.bytes(want, "forget list")?);
            O::BatchForget { arg, nodes }
        }
        oc::FALLOCATE => O::Fallocate {
            arg: b.arg("fuse_fallocate_in")?,
        },
        oc::READDIRPLUS => O::Readdirplus {
            arg: b.arg("fuse_read_in")?,
        },
        oc::RENAME2 => {
            let arg = b.arg("fuse_rename2_in")?;
            let name = b.name("old name")?;
            O::Rename2 {
                arg,
                name,
                newname: b.name("new name")?,
            }
        }
        oc::LSEEK => O::Lseek {
            arg: b.arg("fuse_lseek_in")?,
        },
        oc::COPY_FILE_RANGE => O::CopyFileRange {
            arg: b.arg("fuse_copy_file_range_in")?,
        },
        oc::SETUPMAPPING => O::Setupmapping {
            arg: b.arg("fuse_setupmapping_in")?,
        },
        oc::REMOVEMAPPING => {
            let arg: RemovemappingIn = b.arg("fuse_removemapping_in")?;
            O::Removemapping {
                arg,
                entries: b.remaining(),
            }
        }
        oc::SYNCFS => O::Syncfs {
            arg: b.arg("fuse_syncfs_in")?,
        },
        oc::TMPFILE => {
            let arg = b.arg("fuse_create_in")?;
            O::Tmpfile {
                arg,
                name: b.name("name")?,
            }
        }
        oc::STATX => O::Statx {
            arg: b.arg("fuse_statx_in")?,
        },
        oc::COPY_FILE_RANGE_64 => O::CopyFileRange64 {
            arg: b.arg("fuse_copy_file_range_in")?,
        },
        oc::CUSE_INIT => O::CuseInit {
            arg: b.arg("cuse_init_in")?,
        },
        _ => O::Unknown {
            opcode,
            body: b.remaining(),
        },
    };
    Ok(Request { header, op, ext })
}

fn decode_extensions(mut area: &[u8]) -> Result<Extensions<'_>, DecodeError> {
    let mut ext = Extensions::default();
    while !area.is_empty() {
        let (h, _) = ExtHeader::read_from_prefix(area)
            .map_err(|_| DecodeError::BadExtension("truncated extension header"))?;
        let size = h.size as usize;
        if size < core::mem::size_of::<ExtHeader>()
            || !size.is_multiple_of(REC_ALIGN)
            || size > area.len()
        {
            return Err(DecodeError::BadExtension("extension size out of range"));
        }
        let this = &area[..size];
        let payload = &this[core::mem::size_of::<ExtHeader>()..];
        if h.r#type == EXT_GROUPS {
            let (sg, rest) = SuppGroups::read_from_prefix(payload)
                .map_err(|_| DecodeError::BadExtension("truncated supplementary groups"))?;
            let want = (sg.nr_groups as usize)
                .checked_mul(4)
                .filter(|&w| w <= rest.len())
                .ok_or(DecodeError::BadExtension(
                    "supplementary group list overruns its extension",
                ))?;
            ext.supp_groups = Some(SuppGroupList(&rest[..want]));
        } else if h.r#type <= MAX_NR_SECCTX {
            // fuse_secctx_header: the "type" slot is nr_secctx.
            if h.r#type > 0 {
                ext.security_ctx = Some(decode_secctx(payload)?);
            }
        }
        // Unknown extension types are skipped: the kernel only sends the ones
        // we negotiated, and a future one must not break decoding.
        area = &area[size..];
    }
    Ok(ext)
}

fn decode_secctx(payload: &[u8]) -> Result<SecurityContext<'_>, DecodeError> {
    let (ctx, rest) = Secctx::read_from_prefix(payload)
        .map_err(|_| DecodeError::BadExtension("truncated security context"))?;
    let nul = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or(DecodeError::BadExtension(
            "security context name not terminated",
        ))?;
    let name = OsStr::from_bytes(&rest[..nul]);
    let value = rest
        .get(nul + 1..)
        .and_then(|v| v.get(..ctx.size as usize))
        .ok_or(DecodeError::BadExtension(
            "security context value overruns its extension",
        ))?;
    Ok(SecurityContext { name, value })
}
