//! The `#[repr(C)]` structs of `include/uapi/linux/fuse.h` (protocol 7.45,
//! Linux 6.18), field for field. Names drop the `fuse_` prefix and are
//! CamelCase; field names are the kernel's, so `fuse.h` and its comments
//! document them. Every field's doc names it; the fields a filesystem fills
//! in itself (`Attr`, `Kstatfs`, `FileLock`, `Statx`) say more.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Protocol major version.
pub const KERNEL_VERSION: u32 = 7;
/// Protocol minor version this crate speaks.
pub const KERNEL_MINOR_VERSION: u32 = 45;
/// Root inode number.
pub const ROOT_ID: u64 = 1;
/// The read buffer must be at least this large.
pub const MIN_READ_BUFFER: usize = 8192;
/// Header uid/gid on requests that carry no caller identity (idmap opted in).
pub const INVALID_UIDGID: u32 = u32::MAX;
/// Bit 63 of `unique`: a request the kernel resent.
pub const UNIQUE_RESEND: u64 = 1 << 63;
/// Bit 0 of `unique`: an INTERRUPT request.
pub const INT_REQ_BIT: u64 = 1;
/// `FUSE_COMPAT_INIT_OUT_SIZE`.
pub const COMPAT_INIT_OUT_SIZE: usize = 8;
/// `FUSE_COMPAT_22_INIT_OUT_SIZE`.
pub const COMPAT_22_INIT_OUT_SIZE: usize = 24;
/// `FUSE_COMPAT_ENTRY_OUT_SIZE` (before 7.9).
pub const COMPAT_ENTRY_OUT_SIZE: usize = 120;
/// `FUSE_COMPAT_ATTR_OUT_SIZE` (before 7.9).
pub const COMPAT_ATTR_OUT_SIZE: usize = 96;
/// `FUSE_COMPAT_MKNOD_IN_SIZE` (before 7.12).
pub const COMPAT_MKNOD_IN_SIZE: usize = 8;
/// `FUSE_COMPAT_WRITE_IN_SIZE` (before 7.9).
pub const COMPAT_WRITE_IN_SIZE: usize = 24;
/// `FUSE_COMPAT_STATFS_SIZE`.
pub const COMPAT_STATFS_SIZE: usize = 48;
/// `FUSE_COMPAT_SETXATTR_IN_SIZE` (without `FUSE_SETXATTR_EXT`).
pub const COMPAT_SETXATTR_IN_SIZE: usize = 8;
/// `FUSE_IOCTL_MAX_IOV`.
pub const IOCTL_MAX_IOV: usize = 256;
/// `FUSE_MAX_NR_SECCTX`: extension types 0..=31 are security contexts.
pub const MAX_NR_SECCTX: u32 = 31;
/// `FUSE_EXT_GROUPS`.
pub const EXT_GROUPS: u32 = 32;
/// Records (dirents, extensions) are aligned to this.
pub const REC_ALIGN: usize = 8;

/// Round `len` up to `FUSE_REC_ALIGN`.
pub const fn rec_align(len: usize) -> usize {
    (len + REC_ALIGN - 1) & !(REC_ALIGN - 1)
}

macro_rules! abi {
    ($($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty),* $(,)? })*) => {
        $(
            $(#[$m])*
            #[repr(C)]
            #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
            pub struct $name {
                $(
                    #[doc = concat!("`", stringify!($f), "`, as the kernel's struct names it.")]
                    $(#[$fm])*
                    pub $f: $t
                ),*
            }
        )*
    };
}

abi! {
    /// `struct fuse_attr`
    pub struct Attr {
        /// Inode number shown in `st_ino`.
        pub ino: u64,
        /// Size in bytes.
        pub size: u64,
        /// Allocated space in 512-byte units.
        pub blocks: u64,
        /// Access time, seconds since the epoch.
        pub atime: u64,
        /// Modification time, seconds since the epoch.
        pub mtime: u64,
        /// Status change time, seconds since the epoch.
        pub ctime: u64,
        /// Nanoseconds of `atime`.
        pub atimensec: u32,
        /// Nanoseconds of `mtime`.
        pub mtimensec: u32,
        /// Nanoseconds of `ctime`.
        pub ctimensec: u32,
        /// File type (`S_IFMT` bits) and permission bits, as in `st_mode`.
        pub mode: u32,
        /// Number of hard links.
        pub nlink: u32,
        /// Owner, in the filesystem's id space.
        pub uid: u32,
        /// Group, in the filesystem's id space.
        pub gid: u32,
        /// Device number of a device node.
        pub rdev: u32,
        /// Preferred I/O size (`st_blksize`); 0 lets the kernel choose.
        pub blksize: u32,
        /// `FUSE_ATTR_*` flags ([`AttrFlags`](crate::AttrFlags)).
        pub flags: u32,
    }
    /// `struct fuse_sx_time`
    pub struct SxTime {
        /// Seconds since the epoch.
        pub tv_sec: i64,
        /// Nanoseconds.
        pub tv_nsec: u32,
        /// Reserved.
        pub __reserved: i32,
    }
    /// `struct fuse_statx`
    pub struct Statx {
        pub mask: u32, pub blksize: u32, pub attributes: u64,
        pub nlink: u32, pub uid: u32, pub gid: u32, pub mode: u16, pub __spare0: u16,
        pub ino: u64, pub size: u64, pub blocks: u64, pub attributes_mask: u64,
        pub atime: SxTime, pub btime: SxTime, pub ctime: SxTime, pub mtime: SxTime,
        pub rdev_major: u32, pub rdev_minor: u32, pub dev_major: u32, pub dev_minor: u32,
        pub __spare2: [u64; 14],
    }
    /// `struct fuse_kstatfs`
    pub struct Kstatfs {
        /// Total data blocks, in `frsize` units.
        pub blocks: u64,
        /// Free blocks.
        pub bfree: u64,
        /// Free blocks available to unprivileged users.
        pub bavail: u64,
        /// Total inodes.
        pub files: u64,
        /// Free inodes.
        pub ffree: u64,
        /// Preferred block size.
        pub bsize: u32,
        /// Longest file name.
        pub namelen: u32,
        /// Fragment size, the unit of the block counts.
        pub frsize: u32,
        /// Reserved.
        pub padding: u32,
        /// Reserved.
        pub spare: [u32; 6],
    }
    /// `struct fuse_file_lock`
    pub struct FileLock {
        /// First byte of the range.
        pub start: u64,
        /// Last byte of the range (inclusive; `u64::MAX` or `i64::MAX` for
        /// "to the end").
        pub end: u64,
        /// `F_RDLCK`, `F_WRLCK` or `F_UNLCK`.
        pub r#type: u32,
        /// The process holding the lock, for GETLK answers.
        pub pid: u32,
    }
    /// `struct fuse_entry_out`
    pub struct EntryOut {
        pub nodeid: u64, pub generation: u64, pub entry_valid: u64, pub attr_valid: u64,
        pub entry_valid_nsec: u32, pub attr_valid_nsec: u32, pub attr: Attr,
    }
    /// `struct fuse_forget_in`
    pub struct ForgetIn { pub nlookup: u64 }
    /// `struct fuse_forget_one`
    pub struct ForgetOne {
        /// The inode.
        pub nodeid: u64,
        /// How many lookups to drop.
        pub nlookup: u64,
    }
    /// `struct fuse_batch_forget_in`
    pub struct BatchForgetIn { pub count: u32, pub dummy: u32 }
    /// `struct fuse_getattr_in`
    pub struct GetattrIn { pub getattr_flags: u32, pub dummy: u32, pub fh: u64 }
    /// `struct fuse_attr_out`
    pub struct AttrOut { pub attr_valid: u64, pub attr_valid_nsec: u32, pub dummy: u32, pub attr: Attr }
    /// `struct fuse_statx_in`
    pub struct StatxIn { pub getattr_flags: u32, pub reserved: u32, pub fh: u64, pub sx_flags: u32, pub sx_mask: u32 }
    /// `struct fuse_statx_out`
    pub struct StatxOut { pub attr_valid: u64, pub attr_valid_nsec: u32, pub flags: u32, pub spare: [u64; 2], pub stat: Statx }
    /// `struct fuse_mknod_in`
    pub struct MknodIn { pub mode: u32, pub rdev: u32, pub umask: u32, pub padding: u32 }
    /// `struct fuse_mkdir_in`
    pub struct MkdirIn { pub mode: u32, pub umask: u32 }
    /// `struct fuse_rename_in`
    pub struct RenameIn { pub newdir: u64 }
    /// `struct fuse_rename2_in`
    pub struct Rename2In { pub newdir: u64, pub flags: u32, pub padding: u32 }
    /// `struct fuse_link_in`
    pub struct LinkIn { pub oldnodeid: u64 }
    /// `struct fuse_setattr_in`
    pub struct SetattrIn {
        pub valid: u32, pub padding: u32, pub fh: u64, pub size: u64, pub lock_owner: u64,
        pub atime: u64, pub mtime: u64, pub ctime: u64,
        pub atimensec: u32, pub mtimensec: u32, pub ctimensec: u32,
        pub mode: u32, pub unused4: u32, pub uid: u32, pub gid: u32, pub unused5: u32,
    }
    /// `struct fuse_open_in`
    pub struct OpenIn { pub flags: u32, pub open_flags: u32 }
    /// `struct fuse_create_in`
    pub struct CreateIn { pub flags: u32, pub mode: u32, pub umask: u32, pub open_flags: u32 }
    /// `struct fuse_open_out`
    pub struct OpenOut { pub fh: u64, pub open_flags: u32, pub backing_id: i32 }
    /// `struct fuse_release_in`
    pub struct ReleaseIn { pub fh: u64, pub flags: u32, pub release_flags: u32, pub lock_owner: u64 }
    /// `struct fuse_flush_in`
    pub struct FlushIn { pub fh: u64, pub unused: u32, pub padding: u32, pub lock_owner: u64 }
    /// `struct fuse_read_in`
    pub struct ReadIn {
        pub fh: u64, pub offset: u64, pub size: u32, pub read_flags: u32,
        pub lock_owner: u64, pub flags: u32, pub padding: u32,
    }
    /// `struct fuse_write_in`
    pub struct WriteIn {
        pub fh: u64, pub offset: u64, pub size: u32, pub write_flags: u32,
        pub lock_owner: u64, pub flags: u32, pub padding: u32,
    }
    /// `struct fuse_write_out`
    pub struct WriteOut { pub size: u32, pub padding: u32 }
    /// `struct fuse_statfs_out`
    pub struct StatfsOut { pub st: Kstatfs }
    /// `struct fuse_fsync_in`
    pub struct FsyncIn { pub fh: u64, pub fsync_flags: u32, pub padding: u32 }
    /// `struct fuse_setxattr_in` (16 bytes with `FUSE_SETXATTR_EXT`, else the first 8)
    pub struct SetxattrIn { pub size: u32, pub flags: u32, pub setxattr_flags: u32, pub padding: u32 }
    /// `struct fuse_getxattr_in`
    pub struct GetxattrIn { pub size: u32, pub padding: u32 }
    /// `struct fuse_getxattr_out`
    pub struct GetxattrOut { pub size: u32, pub padding: u32 }
    /// `struct fuse_lk_in`
    pub struct LkIn { pub fh: u64, pub owner: u64, pub lk: FileLock, pub lk_flags: u32, pub padding: u32 }
    /// `struct fuse_lk_out`
    pub struct LkOut { pub lk: FileLock }
    /// `struct fuse_access_in`
    pub struct AccessIn { pub mask: u32, pub padding: u32 }
    /// `struct fuse_init_in` (64 bytes since 7.36)
    pub struct InitIn {
        pub major: u32, pub minor: u32, pub max_readahead: u32, pub flags: u32,
        pub flags2: u32, pub unused: [u32; 11],
    }
    /// `struct fuse_init_out`
    pub struct InitOut {
        pub major: u32, pub minor: u32, pub max_readahead: u32, pub flags: u32,
        pub max_background: u16, pub congestion_threshold: u16, pub max_write: u32,
        pub time_gran: u32, pub max_pages: u16, pub map_alignment: u16,
        pub flags2: u32, pub max_stack_depth: u32, pub request_timeout: u16,
        pub unused: [u16; 11],
    }
    /// `struct cuse_init_in`
    pub struct CuseInitIn { pub major: u32, pub minor: u32, pub unused: u32, pub flags: u32 }
    /// `struct cuse_init_out`
    pub struct CuseInitOut {
        pub major: u32, pub minor: u32, pub unused: u32, pub flags: u32,
        pub max_read: u32, pub max_write: u32, pub dev_major: u32, pub dev_minor: u32,
        pub spare: [u32; 10],
    }
    /// `struct fuse_interrupt_in`
    pub struct InterruptIn { pub unique: u64 }
    /// `struct fuse_bmap_in`
    pub struct BmapIn { pub block: u64, pub blocksize: u32, pub padding: u32 }
    /// `struct fuse_bmap_out`
    pub struct BmapOut { pub block: u64 }
    /// `struct fuse_ioctl_in`
    pub struct IoctlIn { pub fh: u64, pub flags: u32, pub cmd: u32, pub arg: u64, pub in_size: u32, pub out_size: u32 }
    /// `struct fuse_ioctl_iovec`
    pub struct IoctlIovec { pub base: u64, pub len: u64 }
    /// `struct fuse_ioctl_out`
    pub struct IoctlOut { pub result: i32, pub flags: u32, pub in_iovs: u32, pub out_iovs: u32 }
    /// `struct fuse_poll_in`
    pub struct PollIn { pub fh: u64, pub kh: u64, pub flags: u32, pub events: u32 }
    /// `struct fuse_poll_out`
    pub struct PollOut { pub revents: u32, pub padding: u32 }
    /// `struct fuse_notify_poll_wakeup_out`
    pub struct NotifyPollWakeupOut { pub kh: u64 }
    /// `struct fuse_fallocate_in`
    pub struct FallocateIn { pub fh: u64, pub offset: u64, pub length: u64, pub mode: u32, pub padding: u32 }
    /// `struct fuse_in_header`
    pub struct InHeader {
        pub len: u32, pub opcode: u32, pub unique: u64, pub nodeid: u64,
        pub uid: u32, pub gid: u32, pub pid: u32, pub total_extlen: u16, pub padding: u16,
    }
    /// `struct fuse_out_header`
    pub struct OutHeader { pub len: u32, pub error: i32, pub unique: u64 }
    /// `struct fuse_dirent` (followed by `namelen` name bytes, padded to 8)
    pub struct Dirent { pub ino: u64, pub off: u64, pub namelen: u32, pub r#type: u32 }
    /// `struct fuse_direntplus`
    pub struct Direntplus { pub entry_out: EntryOut, pub dirent: Dirent }
    /// `struct fuse_notify_inval_inode_out`
    pub struct NotifyInvalInodeOut { pub ino: u64, pub off: i64, pub len: i64 }
    /// `struct fuse_notify_inval_entry_out`
    pub struct NotifyInvalEntryOut { pub parent: u64, pub namelen: u32, pub flags: u32 }
    /// `struct fuse_notify_delete_out`
    pub struct NotifyDeleteOut { pub parent: u64, pub child: u64, pub namelen: u32, pub padding: u32 }
    /// `struct fuse_notify_store_out`
    pub struct NotifyStoreOut { pub nodeid: u64, pub offset: u64, pub size: u32, pub padding: u32 }
    /// `struct fuse_notify_retrieve_out`
    pub struct NotifyRetrieveOut { pub notify_unique: u64, pub nodeid: u64, pub offset: u64, pub size: u32, pub padding: u32 }
    /// `struct fuse_notify_retrieve_in` (the NOTIFY_REPLY request body)
    pub struct NotifyRetrieveIn { pub dummy1: u64, pub offset: u64, pub size: u32, pub dummy2: u32, pub dummy3: u64, pub dummy4: u64 }
    /// `struct fuse_notify_prune_out`
    pub struct NotifyPruneOut { pub count: u32, pub padding: u32, pub spare: u64 }
    /// `struct fuse_backing_map`
    pub struct BackingMap { pub fd: i32, pub flags: u32, pub padding: u64 }
    /// `struct fuse_lseek_in`
    pub struct LseekIn { pub fh: u64, pub offset: u64, pub whence: u32, pub padding: u32 }
    /// `struct fuse_lseek_out`
    pub struct LseekOut { pub offset: u64 }
    /// `struct fuse_copy_file_range_in`
    pub struct CopyFileRangeIn {
        pub fh_in: u64, pub off_in: u64, pub nodeid_out: u64, pub fh_out: u64,
        pub off_out: u64, pub len: u64, pub flags: u64,
    }
    /// `struct fuse_copy_file_range_out` (7.45)
    pub struct CopyFileRangeOut { pub bytes_copied: u64 }
    /// `struct fuse_setupmapping_in` (DAX)
    pub struct SetupmappingIn { pub fh: u64, pub foffset: u64, pub len: u64, pub flags: u64, pub moffset: u64 }
    /// `struct fuse_removemapping_in` (DAX)
    pub struct RemovemappingIn { pub count: u32 }
    /// `struct fuse_removemapping_one` (DAX)
    pub struct RemovemappingOne { pub moffset: u64, pub len: u64 }
    /// `struct fuse_syncfs_in`
    pub struct SyncfsIn { pub padding: u64 }
    /// `struct fuse_secctx`
    pub struct Secctx { pub size: u32, pub padding: u32 }
    /// `struct fuse_secctx_header`
    pub struct SecctxHeader { pub size: u32, pub nr_secctx: u32 }
    /// `struct fuse_ext_header`
    pub struct ExtHeader { pub size: u32, pub r#type: u32 }
    /// `struct fuse_supp_groups` (followed by `nr_groups` u32s)
    pub struct SuppGroups { pub nr_groups: u32 }
    /// `struct fuse_uring_ent_in_out` (FUSE over io_uring, 6.14+): the last
    /// 32 bytes of a ring entry's header buffer.
    pub struct UringEntInOut { pub flags: u64, pub commit_id: u64, pub payload_sz: u32, pub padding: u32, pub reserved: u64 }
    /// `struct fuse_uring_cmd_req`: the start of an SQE128's 80-byte command area.
    pub struct UringCmdReq { pub flags: u64, pub commit_id: u64, pub qid: u16, pub padding: [u8; 6] }
}

/// `enum fuse_opcode`: the opcodes, named as the kernel names them
/// without the `FUSE_` prefix.
pub mod opcode {
    /// Look a name up in a directory.
    pub const LOOKUP: u32 = 1;
    /// Drop lookups of an inode (no reply).
    pub const FORGET: u32 = 2;
    /// Read attributes.
    pub const GETATTR: u32 = 3;
    /// Change attributes.
    pub const SETATTR: u32 = 4;
    /// Read a symlink's target.
    pub const READLINK: u32 = 5;
    /// Create a symlink.
    pub const SYMLINK: u32 = 6;
    /// Create a file, device, FIFO or socket.
    pub const MKNOD: u32 = 8;
    /// Create a directory.
    pub const MKDIR: u32 = 9;
    /// Remove a non-directory.
    pub const UNLINK: u32 = 10;
    /// Remove a directory.
    pub const RMDIR: u32 = 11;
    /// Rename (no flags).
    pub const RENAME: u32 = 12;
    /// Create a hard link.
    pub const LINK: u32 = 13;
    /// Open a file.
    pub const OPEN: u32 = 14;
    /// Read from an open file or directory.
    pub const READ: u32 = 15;
    /// Write to an open file.
    pub const WRITE: u32 = 16;
    /// Filesystem statistics.
    pub const STATFS: u32 = 17;
    /// Last close of an open file.
    pub const RELEASE: u32 = 18;
    /// Flush a file to stable storage.
    pub const FSYNC: u32 = 20;
    /// Set an extended attribute.
    pub const SETXATTR: u32 = 21;
    /// Read an extended attribute.
    pub const GETXATTR: u32 = 22;
    /// List extended attribute names.
    pub const LISTXATTR: u32 = 23;
    /// Remove an extended attribute.
    pub const REMOVEXATTR: u32 = 24;
    /// A close(2) of a file descriptor.
    pub const FLUSH: u32 = 25;
    /// Start of the connection: negotiate version and flags.
    pub const INIT: u32 = 26;
    /// Open a directory.
    pub const OPENDIR: u32 = 27;
    /// List directory entries.
    pub const READDIR: u32 = 28;
    /// Last close of an open directory.
    pub const RELEASEDIR: u32 = 29;
    /// Flush a directory to stable storage.
    pub const FSYNCDIR: u32 = 30;
    /// Test for a POSIX lock.
    pub const GETLK: u32 = 31;
    /// Take or release a POSIX lock without waiting.
    pub const SETLK: u32 = 32;
    /// Take a POSIX lock, waiting for it.
    pub const SETLKW: u32 = 33;
    /// access(2) check (not sent with `default_permissions`).
    pub const ACCESS: u32 = 34;
    /// Create and open a regular file.
    pub const CREATE: u32 = 35;
    /// Interrupt an earlier request.
    pub const INTERRUPT: u32 = 36;
    /// Map a file block to a device block (`fuseblk`).
    pub const BMAP: u32 = 37;
    /// End of the connection (`fuseblk`, or on unmount).
    pub const DESTROY: u32 = 38;
    /// ioctl(2) on an open file.
    pub const IOCTL: u32 = 39;
    /// poll(2) on an open file.
    pub const POLL: u32 = 40;
    /// The kernel's answer to a RETRIEVE notification.
    pub const NOTIFY_REPLY: u32 = 41;
    /// Drop lookups of several inodes (no reply).
    pub const BATCH_FORGET: u32 = 42;
    /// Allocate or punch a range.
    pub const FALLOCATE: u32 = 43;
    /// List directory entries with their attributes.
    pub const READDIRPLUS: u32 = 44;
    /// Rename with `RENAME_*` flags.
    pub const RENAME2: u32 = 45;
    /// `SEEK_DATA`/`SEEK_HOLE`.
    pub const LSEEK: u32 = 46;
    /// Copy a range between open files (32-bit count reply).
    pub const COPY_FILE_RANGE: u32 = 47;
    /// Map a range into the DAX window (virtio-fs).
    pub const SETUPMAPPING: u32 = 48;
    /// Unmap ranges from the DAX window (virtio-fs).
    pub const REMOVEMAPPING: u32 = 49;
    /// syncfs(2).
    pub const SYNCFS: u32 = 50;
    /// Create an unnamed file (`O_TMPFILE`).
    pub const TMPFILE: u32 = 51;
    /// statx(2) attributes.
    pub const STATX: u32 = 52;
    /// Copy a range between open files (64-bit count reply, 7.45).
    pub const COPY_FILE_RANGE_64: u32 = 53;
    /// INIT of a CUSE (character device) connection.
    pub const CUSE_INIT: u32 = 4096;
    /// Reserved: CUSE_INIT byte-swapped.
    pub const CUSE_INIT_BSWAP_RESERVED: u32 = 1_048_576;
    /// Reserved: INIT byte-swapped.
    pub const FUSE_INIT_BSWAP_RESERVED: u32 = 436_207_616;
}

/// `enum fuse_notify_code`: what a notification written to `/dev/fuse`
/// asks of the kernel.
pub mod notify {
    /// Wake up a poll(2) waiter.
    pub const POLL: i32 = 1;
    /// Drop cached attributes and data of an inode.
    pub const INVAL_INODE: i32 = 2;
    /// Drop a cached name.
    pub const INVAL_ENTRY: i32 = 3;
    /// Put data into the page cache.
    pub const STORE: i32 = 4;
    /// Ask for data from the page cache.
    pub const RETRIEVE: i32 = 5;
    /// A name was removed (also tells inotify).
    pub const DELETE: i32 = 6;
    /// Resend every request still waiting for a reply.
    pub const RESEND: i32 = 7;
    /// Start a new epoch: older cached entries become stale.
    pub const INC_EPOCH: i32 = 8;
    /// Drop unused cached inodes.
    pub const PRUNE: i32 = 9;
}

/// FUSE over io_uring (`Documentation/filesystems/fuse-io-uring.rst`).
pub mod uring {
    /// `FUSE_URING_IN_OUT_HEADER_SZ`: room for `fuse_in_header` (request)
    /// or `fuse_out_header` (reply) at the start of the header buffer.
    pub const IN_OUT_HEADER_SZ: usize = 128;
    /// `FUSE_URING_OP_IN_OUT_SZ`: room for the opcode's fixed argument.
    pub const OP_IN_OUT_SZ: usize = 128;
    /// Offset of `struct fuse_uring_ent_in_out` in the header buffer.
    pub const ENT_IN_OUT_OFFSET: usize = IN_OUT_HEADER_SZ + OP_IN_OUT_SZ;
    /// `sizeof(struct fuse_uring_req_header)`.
    pub const REQ_HEADER_SIZE: usize = ENT_IN_OUT_OFFSET + 32;
    /// `FUSE_IO_URING_CMD_REGISTER`: hand the kernel one entry's buffers
    /// (an iovec pair: header, payload) and wait for a request.
    pub const CMD_REGISTER: u32 = 1;
    /// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`: answer the entry's request and
    /// wait for the next one.
    pub const CMD_COMMIT_AND_FETCH: u32 = 2;
}

/// `/dev/fuse` ioctls.
pub mod ioctl {
    /// `FUSE_DEV_IOC_MAGIC`
    pub const MAGIC: u8 = 229;
    /// `FUSE_DEV_IOC_CLONE` = `_IOR(229, 0, uint32_t)`
    pub const CLONE: u32 = ior(0, 4);
    /// `FUSE_DEV_IOC_BACKING_OPEN` = `_IOW(229, 1, struct fuse_backing_map)`
    pub const BACKING_OPEN: u32 = iow(1, 16);
    /// `FUSE_DEV_IOC_BACKING_CLOSE` = `_IOW(229, 2, uint32_t)`
    pub const BACKING_CLOSE: u32 = iow(2, 4);
    /// `FUSE_DEV_IOC_SYNC_INIT` = `_IO(229, 3)` (6.18)
    pub const SYNC_INIT: u32 = io(3);

    const IOC_WRITE: u32 = 1;
    const IOC_READ: u32 = 2;
    const fn ioc(dir: u32, nr: u32, size: u32) -> u32 {
        (dir << 30) | (size << 16) | ((MAGIC as u32) << 8) | nr
    }
    const fn io(nr: u32) -> u32 {
        ioc(0, nr, 0)
    }
    const fn ior(nr: u32, size: u32) -> u32 {
        ioc(IOC_READ, nr, size)
    }
    const fn iow(nr: u32, size: u32) -> u32 {
        ioc(IOC_WRITE, nr, size)
    }
}
