//! Hand-written bindings to the part of libcephfs (Ceph 16, `cephfs/libcephfs.h`
//! and `cephfs/ceph_ll_client.h`) this crate uses: the mount life cycle, the
//! `ceph_ll_*` low-level calls, `UserPerm` and the invalidation callbacks.
//!
//! Hand-written rather than generated: the crate uses about fifty functions
//! and four structs, all stable since Ceph 14; generating them would need
//! libclang at build time on every machine for a few hundred lines that are
//! easier to review by reading.

#![allow(non_camel_case_types)]

use libc::{c_char, c_int, c_uint, c_void, dev_t, gid_t, mode_t, size_t, uid_t};

/// `struct ceph_mount_info`
#[repr(C)]
pub struct MountInfo {
    _opaque: [u8; 0],
}
/// `struct Inode`
#[repr(C)]
pub struct Inode {
    _opaque: [u8; 0],
}
/// `struct Fh`
#[repr(C)]
pub struct Fh {
    _opaque: [u8; 0],
}
/// `UserPerm`
#[repr(C)]
pub struct UserPerm {
    _opaque: [u8; 0],
}
/// `struct ceph_dir_result`
#[repr(C)]
pub struct DirResult {
    _opaque: [u8; 0],
}

/// `struct inodeno_t` (C layout: one 64-bit word).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct InodeNo {
    pub val: u64,
}

/// `struct vinodeno_t` (C layout: two 64-bit words).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct VInodeNo {
    pub ino: u64,
    pub snapid: u64,
}

/// `struct ceph_statx`
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CephStatx {
    pub stx_mask: u32,
    pub stx_blksize: u32,
    pub stx_nlink: u32,
    pub stx_uid: u32,
    pub stx_gid: u32,
    pub stx_mode: u16,
    pub stx_ino: u64,
    pub stx_size: u64,
    pub stx_blocks: u64,
    pub stx_dev: dev_t,
    pub stx_rdev: dev_t,
    pub stx_atime: libc::timespec,
    pub stx_ctime: libc::timespec,
    pub stx_mtime: libc::timespec,
    pub stx_btime: libc::timespec,
    pub stx_version: u64,
}

impl Default for CephStatx {
    fn default() -> Self {
        // SAFETY: every field is an integer or a timespec of integers, for
        // which all-zero is a valid value.
        unsafe { std::mem::zeroed() }
    }
}

pub const STATX_BASIC_STATS: c_uint = 0x7ff;
pub const STATX_SIZE: c_uint = 0x200;
pub const STATX_MODE: c_uint = 0x1;
pub const STATX_NLINK: c_uint = 0x2;
pub const AT_SYMLINK_NOFOLLOW: c_uint = 0x100;

pub const SETATTR_MODE: c_int = 1 << 0;
pub const SETATTR_UID: c_int = 1 << 1;
pub const SETATTR_GID: c_int = 1 << 2;
pub const SETATTR_MTIME: c_int = 1 << 3;
pub const SETATTR_ATIME: c_int = 1 << 4;
pub const SETATTR_SIZE: c_int = 1 << 5;
pub const SETATTR_CTIME: c_int = 1 << 6;
pub const SETATTR_MTIME_NOW: c_int = 1 << 7;
pub const SETATTR_ATIME_NOW: c_int = 1 << 8;

pub type InoCb = extern "C" fn(handle: *mut c_void, ino: VInodeNo, off: i64, len: i64);
pub type DentryCb = extern "C" fn(
    handle: *mut c_void,
    dirino: VInodeNo,
    ino: VInodeNo,
    name: *const c_char,
    len: size_t,
);
pub type RemountCb = extern "C" fn(handle: *mut c_void) -> c_int;
pub type SwitchIntrCb = extern "C" fn(handle: *mut c_void, data: *mut c_void);
pub type UmaskCb = extern "C" fn(handle: *mut c_void) -> mode_t;
pub type InoReleaseCb = extern "C" fn(handle: *mut c_void, ino: VInodeNo);

/// `struct ceph_client_callback_args`
#[repr(C)]
pub struct CallbackArgs {
    pub handle: *mut c_void,
    pub ino_cb: Option<InoCb>,
    pub dentry_cb: Option<DentryCb>,
    pub switch_intr_cb: Option<SwitchIntrCb>,
    pub remount_cb: Option<RemountCb>,
    pub umask_cb: Option<UmaskCb>,
    pub ino_release_cb: Option<InoReleaseCb>,
}

extern "C" {
    pub fn ceph_create(cmount: *mut *mut MountInfo, id: *const c_char) -> c_int;
    pub fn ceph_conf_read_file(cmount: *mut MountInfo, path: *const c_char) -> c_int;
    pub fn ceph_conf_set(
        cmount: *mut MountInfo,
        option: *const c_char,
        value: *const c_char,
    ) -> c_int;
    pub fn ceph_conf_get(
        cmount: *mut MountInfo,
        option: *const c_char,
        buf: *mut c_char,
        len: size_t,
    ) -> c_int;
    pub fn ceph_init(cmount: *mut MountInfo) -> c_int;
    pub fn ceph_select_filesystem(cmount: *mut MountInfo, fs_name: *const c_char) -> c_int;
    pub fn ceph_mount(cmount: *mut MountInfo, root: *const c_char) -> c_int;
    pub fn ceph_shutdown(cmount: *mut MountInfo);
    pub fn ceph_sync_fs(cmount: *mut MountInfo) -> c_int;

    pub fn ceph_userperm_new(
        uid: uid_t,
        gid: gid_t,
        ngids: c_int,
        gids: *mut gid_t,
    ) -> *mut UserPerm;
    pub fn ceph_userperm_destroy(perm: *mut UserPerm);

    pub fn ceph_ll_register_callbacks(cmount: *mut MountInfo, args: *mut CallbackArgs);

    pub fn ceph_ll_lookup_root(cmount: *mut MountInfo, out: *mut *mut Inode) -> c_int;
    pub fn ceph_ll_lookup(
        cmount: *mut MountInfo,
        parent: *mut Inode,
        name: *const c_char,
        out: *mut *mut Inode,
        stx: *mut CephStatx,
        want: c_uint,
        flags: c_uint,
        perms: *const UserPerm,
    ) -> c_int;
    pub fn ceph_ll_lookup_inode(
        cmount: *mut MountInfo,
        ino: InodeNo,
        inode: *mut *mut Inode,
    ) -> c_int;
    pub fn ceph_ll_forget(cmount: *mut MountInfo, inode: *mut Inode, count: c_int) -> c_int;
    pub fn ceph_ll_getattr(
        cmount: *mut MountInfo,
        inode: *mut Inode,
        stx: *mut CephStatx,
        want: c_uint,
        flags: c_uint,
        perms: *const UserPerm,
    ) -> c_int;
    pub fn ceph_ll_setattr(
        cmount: *mut MountInfo,
        inode: *mut Inode,
        stx: *mut CephStatx,
        mask: c_int,
        perms: *const UserPerm,
    ) -> c_int;
    pub fn ceph_ll_open(
        cmount: *mut MountInfo,
        inode: *mut Inode,
        flags: c_int,
        fh: *mut *mut Fh,
        perms: *const UserPerm,
    ) -> c_int;
    pub fn ceph_ll_read(
        cmount: *mut MountInfo,
        fh: *mut Fh,
        off: i64,
        len: u64,
        buf: *mut c_char,
    ) -> c_int;
    pub fn ceph_ll_write(
        cmount: *mut MountInfo,
        fh: *mut Fh,
        off: i64,
        len: u64,
        data: *const c_char,
    ) -> c_int;
    pub fn ceph_ll_fsync(cmount: *mut MountInfo, fh: *mut Fh, syncdataonly: c_int) -> c_int;
    pub fn ceph_ll_fallocate(
        cmount: *mut MountInfo,
        fh: *mut Fh,
        mode: c_int,
        offset: i64,
        length: i64,
    ) -> c_int;
    pub fn ceph_ll_close(cmount: *mut MountInfo, fh: *mut Fh) -> c_int;
    pub fn ceph_ll_setlk(
        cmount: *mut MountInfo,
        fh: *mut Fh,
        fl: *mut libc::flock,
        owner: u64,
        sleep: c_int,
    ) -> c_int;
    pub fn ceph_ll_create(
        cmount: *mut MountInfo,
        parent: *mut Inode,
        name: *const c_char,
        mode: mode_t,
        oflags: c_int,
        out: *mut *mut Inode,
        fh: *mut *mut Fh,
        stx: *mut CephStatx,
        want: c_uint,
        flags: c_uint,
        perms: *const UserPerm,
    ) -> c_int;
    pub fn ceph_ll_mknod(
        cmount: *mut MountInfo,
        parent: *mut Inode,
        name: *const c_char,
        mode: mode_t,
        rdev: dev_t,
        out: *mut *mut Inode,
        stx: *mut CephStatx,
        want: c_uint,
        flags: c_uint,
        perms: *const UserPerm,
    ) -> c_int;
    pub fn ceph_ll_mkdir(
        cmount: *mut MountInfo,
        parent: *mut Inode,
        name: *const c_char,
        mode: mode_t,
        out: *mut *mut Inode,
        stx: *mut CephStatx,
        want: c_uint,
        flags: c_uint,
        perms: *const UserPerm,
    ) -> c_int;
    pub fn ceph_ll_symlink(
        cmount: *mut MountInfo,
        parent: *mut Inode,
        name: *const c_char,
        value: *const c_char,
        out: *mut *mut Inode,
        stx: *mut CephStatx,
        want: c_uint,
        flags: c_uint,
        perms: *const UserPerm,
    ) -> c_int;
    pub fn ceph_ll_readlink(
        cmount: *mut MountInfo,
        inode: *mut Inode,
        buf: *mut c_char,
        bufsize: size_t,
        perms: *const UserPerm,
    ) -> c_int;
    pub fn ceph_ll_link(
        cmount: *mut MountInfo,
        inode: *mut Inode,
        newparent: *mut Inode,
        name: *const c_char,
        perms: *const UserPerm,
    ) -> c_int;
    pub fn ceph_ll_unlink(
        cmount: *mut MountInfo,
        parent: *mut Inode,
        name: *const c_char,
        perms: *const UserPerm,
    ) -> c_int;
    pub fn ceph_ll_rmdir(
        cmount: *mut MountInfo,
        parent: *mut Inode,
        name: *const c_char,
        perms: *const UserPerm,
    ) -> c_int;
    pub fn ceph_ll_rename(
        cmount: *mut MountInfo,
        parent: *mut Inode,
        name: *const c_char,
        newparent: *mut Inode,
        newname: *const c_char,
        perms: *const UserPerm,
    ) -> c_int;
    pub fn ceph_ll_opendir(
        cmount: *mut MountInfo,
        inode: *mut Inode,
        dirp: *mut *mut DirResult,
        perms: *const UserPerm,
    ) -> c_int;
    pub fn ceph_ll_releasedir(cmount: *mut MountInfo, dirp: *mut DirResult) -> c_int;
    pub fn ceph_readdirplus_r(
        cmount: *mut MountInfo,
        dirp: *mut DirResult,
        de: *mut libc::dirent,
        stx: *mut CephStatx,
        want: c_uint,
        flags: c_uint,
        out: *mut *mut Inode,
    ) -> c_int;
    pub fn ceph_readdir_r(
        cmount: *mut MountInfo,
        dirp: *mut DirResult,
        de: *mut libc::dirent,
    ) -> c_int;
    pub fn ceph_telldir(cmount: *mut MountInfo, dirp: *mut DirResult) -> i64;
    pub fn ceph_seekdir(cmount: *mut MountInfo, dirp: *mut DirResult, offset: i64);
    pub fn ceph_rewinddir(cmount: *mut MountInfo, dirp: *mut DirResult);
    pub fn ceph_ll_statfs(
        cmount: *mut MountInfo,
        inode: *mut Inode,
        st: *mut libc::statvfs,
    ) -> c_int;
    pub fn ceph_ll_getxattr(
        cmount: *mut MountInfo,
        inode: *mut Inode,
        name: *const c_char,
        value: *mut c_void,
        size: size_t,
        perms: *const UserPerm,
    ) -> c_int;
    pub fn ceph_ll_setxattr(
        cmount: *mut MountInfo,
        inode: *mut Inode,
        name: *const c_char,
        value: *const c_void,
        size: size_t,
        flags: c_int,
        perms: *const UserPerm,
    ) -> c_int;
    pub fn ceph_ll_listxattr(
        cmount: *mut MountInfo,
        inode: *mut Inode,
        list: *mut c_char,
        buf_size: size_t,
        list_size: *mut size_t,
        perms: *const UserPerm,
    ) -> c_int;
    pub fn ceph_ll_removexattr(
        cmount: *mut MountInfo,
        inode: *mut Inode,
        name: *const c_char,
        perms: *const UserPerm,
    ) -> c_int;
}
