//! `idfuse-cephfs`: a CephFS client that serves an idfuse [`Filesystem`],
//! so a CephFS can be mounted through FUSE and idmapped like any other
//! idfuse mount. It speaks to the cluster through libcephfs's low-level
//! API (`ceph_ll_*`), the same layer ceph-fuse sits on.
//!
//! The idmap contract on a network filesystem:
//! - Creating requests (mknod, mkdir, symlink, create) run under a
//!   `UserPerm` made from the request's [`Owner`] (plus the
//!   `FUSE_EXT_GROUPS` group), so the MDS records the owner the kernel
//!   mapped back through the mount's idmap.
//! - Every other request runs under uid 0: the kernel has already decided
//!   permissions (`default_permissions`), and libcephfs is configured with
//!   `fuse_default_permissions=true`, which is what turns off the ll API's
//!   own permission checks (`client_permissions=false` does not).
//! - The MDS still enforces what its caps say: a path-restricted key cannot
//!   leave its path, and `root_squash` turns uid 0 into an unprivileged
//!   caller for the requests above (see docs/cephfs.md).
//!
//! Coherence: libcephfs's invalidation callbacks (inode data/attributes,
//! dentries) become `FUSE_NOTIFY_INVAL_INODE`/`INVAL_ENTRY`, so another
//! client's change reaches this kernel's caches as soon as the MDS revokes
//! our caps; names and attributes are also cached for at most
//! [`CephOptions::timeout`] (1 s by default), which bounds what a missed
//! callback could leave stale.
//!
//! `O_APPEND`: files opened for append bypass the page cache (DIRECT_IO)
//! and each append WRITE is placed by the daemon itself, under an exclusive
//! Ceph file lock taken for the write: the end of file is read from the MDS
//! after the lock is granted and the data written there. The kernel's own
//! idea of the end of file (which another host may have moved) is ignored.

mod ffi;

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use idfuse::{
    Attr, AttrReply, Context, CreateMode, DirBuf, DirPlusBuf, Entry, Errno, Filesystem, InitFlags,
    Kstatfs, Notifier, OpenOutFlags, Opened, Owner, SetAttr, SetTime, SetxattrFlags, WriteFlags,
    Xattr,
};

use ffi::CephStatx;

/// How to reach the cluster and what to mount.
#[derive(Debug, Clone)]
pub struct CephOptions {
    /// ceph.conf to read (mon addresses, and anything else the client needs).
    pub conf: Option<PathBuf>,
    /// The cephx user, as `client.NAME` or `NAME` (default: admin).
    pub name: Option<String>,
    /// Keyring file (default: what the conf says).
    pub keyring: Option<PathBuf>,
    /// File system name, for clusters with several (default: the cluster's default).
    pub fs: Option<String>,
    /// The directory of the file system to mount as the root.
    pub path: String,
    /// How long names and attributes may stay cached in the kernel.
    pub timeout: Duration,
    /// Seconds to wait for the monitors and the MDS before giving up.
    pub mount_timeout: u32,
}

impl Default for CephOptions {
    fn default() -> Self {
        Self {
            conf: None,
            name: None,
            keyring: None,
            fs: None,
            path: "/".into(),
            timeout: Duration::from_secs(1),
            mount_timeout: 15,
        }
    }
}

impl CephOptions {
    /// The options [`CephOptions::parse_option`] takes, as `name=VALUE`, for
    /// messages that list what is known.
    pub fn known_options() -> Vec<String> {
        [
            "conf=PATH",
            "name=client.NAME",
            "keyring=PATH",
            "fs=NAME",
            "path=/DIR",
            "timeout=SECS",
            "mount_timeout=SECS",
        ]
        .map(String::from)
        .to_vec()
    }

    /// Take one `-o` option this filesystem knows; `Ok(false)` for others.
    pub fn parse_option(&mut self, key: &str, value: Option<&str>) -> Result<bool, String> {
        let need = |v: Option<&str>| {
            v.filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| format!("`{key}` needs a value ({key}=...)"))
        };
        match key {
            "conf" => self.conf = Some(need(value)?.into()),
            "name" => self.name = Some(need(value)?),
            "keyring" => self.keyring = Some(need(value)?.into()),
            "fs" | "mds_namespace" => self.fs = Some(need(value)?),
            "path" => {
                let p = need(value)?;
                if !p.starts_with('/') {
                    return Err(format!(
                        "path={p} must be absolute within the file system, e.g. path=/volumes/team"
                    ));
                }
                self.path = p;
            }
            "timeout" => {
                let v = need(value)?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| format!("timeout={v}: not a number of seconds"))?;
                self.timeout = Duration::from_secs_f64(secs);
            }
            "mount_timeout" => {
                let v = need(value)?;
                self.mount_timeout =
                    v.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("mount_timeout={v}: not a whole number of seconds")
                    })?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn id(&self) -> &str {
        match &self.name {
            Some(n) => n.strip_prefix("client.").unwrap_or(n),
            None => "admin",
        }
    }
}

/// Why the client could not mount. Each message says what, why, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration step failed.
    #[error("{what}: {errno}; {hint}")]
    Config {
        /// the step
        what: String,
        /// its error
        errno: Errno,
        /// what to do
        hint: String,
    },
    /// No monitor answered.
    #[error("no Ceph monitor answered within {secs} s (tried {addrs}): the cluster may be down, or those addresses unreachable from here; check `mon host` in the conf and that the monitors run")]
    Unreachable {
        /// mon_host as configured
        addrs: String,
        /// how long we waited
        secs: u32,
    },
    /// cephx refused us.
    #[error("the monitors refused to authenticate client.{id} ({errno}): check that the keyring{keyring} holds client.{id}'s current key, and that the key has caps `mon 'allow r'` and `mds 'allow rw path=...'`, `osd 'allow rw tag cephfs data=FS'` (ceph fs authorize FS client.{id} / rw)")]
    Auth {
        /// the cephx id
        id: String,
        /// the keyring, as ` PATH`
        keyring: String,
        /// the error
        errno: Errno,
    },
    /// No such file system.
    #[error("the cluster has no file system named `{0}`; `ceph fs ls` lists them (or drop fs= to mount the default one)")]
    UnknownFs(String),
    /// No such path.
    #[error("the path {path} does not exist in {fs}; create it first (e.g. mkdir through a mount of its parent) or fix path=")]
    MissingPath {
        /// the path
        path: String,
        /// the file system's description
        fs: String,
    },
    /// The MDS did not let us in.
    #[error("mounting {path} failed: {errno}; {hint}")]
    Mount {
        /// the path
        path: String,
        /// the error
        errno: Errno,
        /// what to do
        hint: String,
    },
}

fn errno(r: libc::c_int) -> Errno {
    Errno::from_raw_os_error(-r)
}

fn check(r: libc::c_int) -> idfuse::Result<libc::c_int> {
    if r < 0 {
        Err(errno(r))
    } else {
        Ok(r)
    }
}

fn cstr(s: &OsStr) -> idfuse::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| Errno::INVAL)
}

/// A libcephfs mount handle.
struct Mount(*mut ffi::MountInfo);

// SAFETY: libcephfs serialises access to a mount with its client lock; its
// calls may be made from any thread.
unsafe impl Send for Mount {}
// SAFETY: as above.
unsafe impl Sync for Mount {}

impl Drop for Mount {
    fn drop(&mut self) {
        // SAFETY: the handle came from ceph_create and is released once;
        // ceph_shutdown unmounts if mounted and frees it.
        unsafe { ffi::ceph_shutdown(self.0) };
    }
}

/// A `UserPerm` and the group list it points into.
struct Perm {
    ptr: *mut ffi::UserPerm,
    _groups: Box<[libc::gid_t]>,
}

// SAFETY: a UserPerm is an immutable value once built.
unsafe impl Send for Perm {}
// SAFETY: as above.
unsafe impl Sync for Perm {}

impl Perm {
    fn new(uid: u32, gid: u32, groups: &[u32]) -> idfuse::Result<Self> {
        let mut groups: Box<[libc::gid_t]> = groups.into();
        let n = groups.len() as libc::c_int;
        let list = if groups.is_empty() {
            std::ptr::null_mut()
        } else {
            groups.as_mut_ptr()
        };
        // SAFETY: libcephfs keeps the pointer to the group list (it does not
        // copy it); the list lives in this struct as long as the perm.
        let ptr = unsafe { ffi::ceph_userperm_new(uid, gid, n, list) };
        if ptr.is_null() {
            return Err(Errno::NOMEM);
        }
        Ok(Self {
            ptr,
            _groups: groups,
        })
    }

    fn of(owner: &Owner) -> idfuse::Result<Self> {
        match owner.supp_group {
            Some(g) => Self::new(owner.uid, owner.gid, &[owner.gid, g]),
            None => Self::new(owner.uid, owner.gid, &[owner.gid]),
        }
    }
}

impl Drop for Perm {
    fn drop(&mut self) {
        // SAFETY: made by ceph_userperm_new, destroyed once.
        unsafe { ffi::ceph_userperm_destroy(self.ptr) };
    }
}

thread_local! {
    /// The umask of the create being served on this thread, for libcephfs's
    /// umask callback (called synchronously from the create when the parent
    /// has no default ACL).
    static UMASK: Cell<u32> = const { Cell::new(0) };
}

struct UmaskGuard;

impl UmaskGuard {
    fn set(umask: u32) -> Self {
        UMASK.with(|u| u.set(umask & 0o777));
        Self
    }
}

impl Drop for UmaskGuard {
    fn drop(&mut self) {
        UMASK.with(|u| u.set(0));
    }
}

/// What the callbacks need: where to send invalidations, and the root's
/// Ceph inode number (the kernel calls it 1).
struct Callbacks {
    notifier: OnceLock<Notifier>,
    root_ino: AtomicU64,
}

impl Callbacks {
    fn nodeid(&self, ceph_ino: u64) -> u64 {
        swap_root(ceph_ino, self.root_ino.load(Ordering::Relaxed))
    }
}

/// Node ids are Ceph inode numbers, except that the mounted root is node 1
/// and Ceph's inode 1 (outside a sub-directory mount) takes the root's number.
fn swap_root(ino: u64, root: u64) -> u64 {
    if root == 0 || root == 1 {
        ino
    } else if ino == root {
        1
    } else if ino == 1 {
        root
    } else {
        ino
    }
}

extern "C" fn ino_cb(handle: *mut libc::c_void, ino: ffi::VInodeNo, off: i64, len: i64) {
    // SAFETY: the handle is the Callbacks box, which outlives the mount.
    let cb = unsafe { &*(handle as *const Callbacks) };
    if let Some(n) = cb.notifier.get() {
        let _ = n.inval_inode(cb.nodeid(ino.ino), off, len);
    }
}

extern "C" fn dentry_cb(
    handle: *mut libc::c_void,
    dirino: ffi::VInodeNo,
    _ino: ffi::VInodeNo,
    name: *const libc::c_char,
    len: libc::size_t,
) {
    // SAFETY: the handle is the Callbacks box, which outlives the mount.
    let cb = unsafe { &*(handle as *const Callbacks) };
    if name.is_null() {
        return;
    }
    // SAFETY: libcephfs passes `len` bytes of name.
    let name = unsafe { std::slice::from_raw_parts(name as *const u8, len) };
    if let Some(n) = cb.notifier.get() {
        let _ = n.inval_entry(cb.nodeid(dirino.ino), OsStr::from_bytes(name));
    }
}

extern "C" fn remount_cb(_handle: *mut libc::c_void) -> libc::c_int {
    // Dentries are invalidated one by one through dentry_cb; nothing to do.
    0
}

extern "C" fn umask_cb(_handle: *mut libc::c_void) -> libc::mode_t {
    UMASK.with(|u| u.get())
}

struct Node {
    inode: *mut ffi::Inode,
    nlookup: u64,
}

struct FileHandle {
    fh: *mut ffi::Fh,
    inode: *mut ffi::Inode,
}

struct DirHandle {
    dirp: *mut ffi::DirResult,
    lock: Mutex<()>,
}

/// Counter for the lock owners of append writes (each write its own).
static APPEND_OWNER: AtomicU64 = AtomicU64::new(0);

/// An idfuse filesystem backed by a CephFS.
pub struct CephFs {
    cb: Box<Callbacks>,
    // Dropped before `cb` (fields drop in order): no callback after this.
    mount: Mount,
    root: *mut ffi::Inode,
    nodes: Mutex<HashMap<u64, Node>>,
    /// O_TMPFILE files not yet linked: node id -> (parent node id, hidden name).
    tmpfiles: Mutex<HashMap<u64, (u64, CString)>>,
    root_perm: Perm,
    timeout: Duration,
    describe: String,
    /// How this mount was made, for the second client of [`Self::rename_aside`].
    opts: CephOptions,
}

// SAFETY: the raw Inode pointers are libcephfs objects kept alive by the ll
// references this struct holds; libcephfs calls are thread-safe.
unsafe impl Send for CephFs {}
// SAFETY: as above; the node table is behind a mutex.
unsafe impl Sync for CephFs {}

fn conf_set(m: *mut ffi::MountInfo, key: &str, value: &str) -> Result<(), Error> {
    let (k, v) = (CString::new(key), CString::new(value));
    let (Ok(k), Ok(v)) = (k, v) else {
        return Err(Error::Config {
            what: format!("setting {key}"),
            errno: Errno::INVAL,
            hint: "the value contains a NUL byte".into(),
        });
    };
    // SAFETY: valid handle and C strings.
    let r = unsafe { ffi::ceph_conf_set(m, k.as_ptr(), v.as_ptr()) };
    if r < 0 {
        return Err(Error::Config {
            what: format!("setting {key}={value}"),
            errno: errno(r),
            hint: "this libcephfs does not know the option; idfuse-cephfs needs Ceph 16 or newer"
                .into(),
        });
    }
    Ok(())
}

fn conf_get(m: *mut ffi::MountInfo, key: &str) -> String {
    let Ok(k) = CString::new(key) else {
        return String::new();
    };
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid handle; buf is writable for its length.
    let r = unsafe { ffi::ceph_conf_get(m, k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return String::new();
    }
    CStr::from_bytes_until_nul(&buf)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl CephFs {
    /// Connect to the cluster and mount `opts.path` of the file system.
    /// Fails within about `opts.mount_timeout` seconds when the cluster
    /// cannot be reached.
    pub fn connect(opts: &CephOptions) -> Result<Self, Error> {
        let fs = Self::connect_quietly(opts)?;
        tracing::info!(fs = %fs.describe, root_ino = fs.cb.root_ino.load(Ordering::Relaxed), "CephFS mounted");
        Ok(fs)
    }

    fn connect_quietly(opts: &CephOptions) -> Result<Self, Error> {
        let id = CString::new(opts.id()).map_err(|_| Error::Config {
            what: "name=".into(),
            errno: Errno::INVAL,
            hint: "the name contains a NUL byte".into(),
        })?;
        let mut m = std::ptr::null_mut();
        // SAFETY: out-pointer to a local.
        let r = unsafe { ffi::ceph_create(&mut m, id.as_ptr()) };
        if r < 0 || m.is_null() {
            return Err(Error::Config {
                what: "creating a libcephfs handle".into(),
                errno: errno(r.min(-1)),
                hint: "check the libcephfs installation (Debian: libcephfs2)".into(),
            });
        }
        let mount = Mount(m);
        if let Some(conf) = &opts.conf {
            if let Err(e) = std::fs::metadata(conf) {
                return Err(Error::Config {
                    what: format!("reading {}", conf.display()),
                    errno: Errno::from_io_error(&e).unwrap_or(Errno::IO),
                    hint: "conf= must name a readable ceph.conf".into(),
                });
            }
            let c = CString::new(conf.as_os_str().as_bytes()).map_err(|_| Error::Config {
                what: "conf=".into(),
                errno: Errno::INVAL,
                hint: "the path contains a NUL byte".into(),
            })?;
            // SAFETY: valid handle and C string.
            let r = unsafe { ffi::ceph_conf_read_file(m, c.as_ptr()) };
            if r < 0 {
                return Err(Error::Config {
                    what: format!("parsing {}", conf.display()),
                    errno: errno(r),
                    hint: "conf= must name a valid ceph.conf".into(),
                });
            }
        } else {
            // SAFETY: valid handle; a null path means the default search list.
            let r = unsafe { ffi::ceph_conf_read_file(m, std::ptr::null()) };
            if r < 0 {
                return Err(Error::Config {
                    what: "reading the default ceph.conf".into(),
                    errno: errno(r),
                    hint: "pass conf=PATH".into(),
                });
            }
        }
        if let Some(k) = &opts.keyring {
            if let Err(e) = std::fs::File::open(k) {
                return Err(Error::Config {
                    what: format!("opening keyring {}", k.display()),
                    errno: Errno::from_io_error(&e).unwrap_or(Errno::IO),
                    hint: "keyring= must name a readable keyring file holding the client's key"
                        .into(),
                });
            }
            conf_set(m, "keyring", &k.to_string_lossy())?;
        }
        // The kernel decides permissions (default_permissions); this is
        // the option that stops the ll_* calls from checking them again
        // with the ids of our UserPerms (measured on Ceph 16.2.15:
        // client_permissions=false does not).
        conf_set(m, "fuse_default_permissions", "true")?;
        conf_set(m, "client_acl_type", "posix_acl")?;
        let secs = opts.mount_timeout.to_string();
        conf_set(m, "client_mount_timeout", &secs)?;
        conf_set(m, "rados_mon_op_timeout", &secs)?;
        // Directory sizes as a local filesystem's, not recursive byte counts.
        conf_set(m, "client_dirsize_rbytes", "false")?;
        conf_set(m, "client_die_on_failed_dentry_invalidate", "false")?;
        // Failures are reported by the caller, in one sentence; libcephfs's
        // own lines go to its log file.
        conf_set(m, "log_to_stderr", "false")?;
        conf_set(m, "err_to_stderr", "false")?;
        let mon_host = conf_get(m, "mon_host");
        let keyring_desc = match &opts.keyring {
            Some(k) => format!(" {}", k.display()),
            None => {
                let k = conf_get(m, "keyring");
                if k.is_empty() {
                    String::new()
                } else {
                    format!(" ({k})")
                }
            }
        };
        let auth_err = |e: Errno| Error::Auth {
            id: opts.id().to_owned(),
            keyring: keyring_desc.clone(),
            errno: e,
        };
        // SAFETY: valid handle.
        let r = unsafe { ffi::ceph_init(m) };
        if r < 0 {
            let e = errno(r);
            return Err(match e {
                Errno::TIMEDOUT => Error::Unreachable {
                    addrs: mon_host,
                    secs: opts.mount_timeout,
                },
                Errno::NOENT => Error::Config {
                    what: format!("no key for client.{}", opts.id()),
                    errno: e,
                    hint: format!(
                        "no keyring was found{keyring_desc}; pass keyring=PATH to a keyring holding client.{}'s key",
                        opts.id()
                    ),
                },
                Errno::ACCESS | Errno::PERM | Errno::INVAL => auth_err(e),
                _ => Error::Config {
                    what: "connecting to the monitors".into(),
                    errno: e,
                    hint: format!("monitors: {mon_host}"),
                },
            });
        }
        let cb = Box::new(Callbacks {
            notifier: OnceLock::new(),
            root_ino: AtomicU64::new(0),
        });
        let mut args = ffi::CallbackArgs {
            handle: &*cb as *const Callbacks as *mut libc::c_void,
            ino_cb: Some(ino_cb),
            dentry_cb: Some(dentry_cb),
            switch_intr_cb: None,
            remount_cb: Some(remount_cb),
            umask_cb: Some(umask_cb),
            ino_release_cb: None,
        };
        // SAFETY: valid handle; libcephfs copies the struct; the handle
        // points into `cb`, which the CephFs keeps until after the mount
        // is shut down.
        unsafe { ffi::ceph_ll_register_callbacks(m, &mut args) };
        let fs_desc = match &opts.fs {
            Some(name) => {
                let c = CString::new(name.as_str()).map_err(|_| Error::UnknownFs(name.clone()))?;
                // SAFETY: valid handle and C string.
                let r = unsafe { ffi::ceph_select_filesystem(m, c.as_ptr()) };
                if r < 0 {
                    return Err(Error::UnknownFs(name.clone()));
                }
                format!("file system `{name}`")
            }
            None => "the default file system".to_owned(),
        };
        let path = CString::new(opts.path.as_str()).map_err(|_| Error::MissingPath {
            path: opts.path.clone(),
            fs: fs_desc.clone(),
        })?;
        // SAFETY: valid handle and C string.
        let r = unsafe { ffi::ceph_mount(m, path.as_ptr()) };
        if r < 0 {
            let e = errno(r);
            return Err(match e {
                Errno::NOENT if opts.fs.is_some() && !fs_exists(opts) => {
                    Error::UnknownFs(opts.fs.clone().unwrap_or_default())
                }
                Errno::NOENT if opts.fs.is_none() && opts.path == "/" => Error::Mount {
                    path: opts.path.clone(),
                    errno: e,
                    hint: "the cluster has no file system (create one with `ceph fs new`)".into(),
                },
                Errno::NOENT => Error::MissingPath {
                    path: opts.path.clone(),
                    fs: fs_desc,
                },
                Errno::TIMEDOUT => Error::Mount {
                    path: opts.path.clone(),
                    errno: e,
                    hint: format!("no MDS of {fs_desc} became available within {} s; check `ceph fs status`", opts.mount_timeout),
                },
                Errno::ACCESS | Errno::PERM => Error::Mount {
                    path: opts.path.clone(),
                    errno: e,
                    hint: format!("client.{} has no MDS caps for this path of {fs_desc}; grant them with `ceph fs authorize`", opts.id()),
                },
                _ => Error::Mount {
                    path: opts.path.clone(),
                    errno: e,
                    hint: format!("monitors: {mon_host}"),
                },
            });
        }
        let mut root = std::ptr::null_mut();
        // SAFETY: mounted handle; out-pointer to a local.
        let r = unsafe { ffi::ceph_ll_lookup_root(m, &mut root) };
        if r < 0 || root.is_null() {
            return Err(Error::Mount {
                path: opts.path.clone(),
                errno: errno(r.min(-1)),
                hint: "the root inode could not be read".into(),
            });
        }
        let root_perm = Perm::new(0, 0, &[]).map_err(|e| Error::Config {
            what: "making a UserPerm".into(),
            errno: e,
            hint: "out of memory".into(),
        })?;
        let fs = Self {
            cb,
            mount,
            root,
            nodes: Mutex::new(HashMap::new()),
            tmpfiles: Mutex::new(HashMap::new()),
            root_perm,
            timeout: opts.timeout,
            describe: format!("{fs_desc}{}", opts.path),
            opts: opts.clone(),
        };
        let st = fs.stat(root).map_err(|e| Error::Mount {
            path: opts.path.clone(),
            errno: e,
            hint: "the root's attributes could not be read".into(),
        })?;
        fs.cb.root_ino.store(st.stx_ino, Ordering::Relaxed);
        Ok(fs)
    }

    /// How many inodes the kernel holds lookups on (the root not counted).
    pub fn inode_count(&self) -> usize {
        self.nodes.lock().map_or(0, |n| n.len())
    }

    fn m(&self) -> *mut ffi::MountInfo {
        self.mount.0
    }

    fn inode(&self, ino: u64) -> idfuse::Result<*mut ffi::Inode> {
        if ino == 1 {
            return Ok(self.root);
        }
        self.nodes
            .lock()
            .map_err(|_| Errno::IO)?
            .get(&ino)
            .map(|n| n.inode)
            .ok_or(Errno::STALE)
    }

    fn stat(&self, inode: *mut ffi::Inode) -> idfuse::Result<CephStatx> {
        let mut st = CephStatx::default();
        // SAFETY: inode is held by an ll reference; out-pointer to a local.
        check(unsafe {
            ffi::ceph_ll_getattr(
                self.m(),
                inode,
                &mut st,
                ffi::STATX_BASIC_STATS,
                0,
                self.root_perm.ptr,
            )
        })?;
        Ok(st)
    }

    fn attr(&self, st: &CephStatx) -> Attr {
        let rdev_major = libc::major(st.stx_rdev);
        let rdev_minor = libc::minor(st.stx_rdev);
        Attr {
            ino: st.stx_ino,
            size: st.stx_size,
            blocks: st.stx_blocks,
            atime: st.stx_atime.tv_sec as u64,
            mtime: st.stx_mtime.tv_sec as u64,
            ctime: st.stx_ctime.tv_sec as u64,
            atimensec: st.stx_atime.tv_nsec as u32,
            mtimensec: st.stx_mtime.tv_nsec as u32,
            ctimensec: st.stx_ctime.tv_nsec as u32,
            mode: u32::from(st.stx_mode),
            nlink: st.stx_nlink,
            uid: st.stx_uid,
            gid: st.stx_gid,
            rdev: (rdev_minor & 0xff) | ((rdev_major & 0xfff) << 8) | ((rdev_minor & !0xff) << 12),
            blksize: st.stx_blksize,
            flags: 0,
        }
    }

    /// Take over one ll reference on `inode` as one kernel lookup.
    fn remember(&self, inode: *mut ffi::Inode, st: &CephStatx) -> idfuse::Result<Entry> {
        let nodeid = self.cb.nodeid(st.stx_ino);
        let mut nodes = self.nodes.lock().map_err(|_| Errno::IO)?;
        let n = nodes.entry(nodeid).or_insert(Node { inode, nlookup: 0 });
        if n.inode != inode {
            // A snapshot inode shares its number with the head inode;
            // snapshots are not served.
            drop(nodes);
            self.put(inode, 1);
            return Err(Errno::OPNOTSUPP);
        }
        n.nlookup += 1;
        Ok(Entry {
            ino: nodeid,
            generation: 0,
            attr: self.attr(st),
            entry_timeout: self.timeout,
            attr_timeout: self.timeout,
        })
    }

    /// Whether `name` exists in `parent`, as libcephfs's lookup says (its
    /// cache or the MDS); the reference the lookup takes is dropped.
    fn probe(&self, parent: *mut ffi::Inode, name: &CStr) -> idfuse::Result<()> {
        self.probe_links(parent, name).map(|_| ())
    }

    /// As [`Self::probe`], giving the link count of what `name` names.
    fn probe_links(&self, parent: *mut ffi::Inode, name: &CStr) -> idfuse::Result<u32> {
        let (inode, st) = self.ll_lookup(parent, name, ffi::STATX_NLINK)?;
        self.put(inode, 1);
        Ok(st.stx_nlink)
    }

    /// Rename over a file that has other hard links, through a second,
    /// short-lived libcephfs client.
    ///
    /// libcephfs 16.2.15 (ceph-fuse too) mishandles the MDS's final (safe)
    /// reply to such a rename: it drops every name of the replaced file
    /// from its cache, not only the one the rename replaced, and then
    /// trusts the missing names while it holds the directories' `Fs`
    /// capability. The file's other names vanish from this client's
    /// lookups and listings, for as long as the capability stays, though
    /// the MDS has them (RELIABILITY.md; the cephfs test
    /// `rename_over_a_hard_link_keeps_the_files_other_names`). Made by
    /// another client, the rename reaches this one as any remote change
    /// does: the MDS revokes the capabilities on what it changes before it
    /// answers, so this client asks again, and the replaced file's cached
    /// names stay as they are. The second client lives for this one
    /// rename, so nothing of its cache (where the same bug strikes)
    /// outlives it.
    ///
    /// Returns `Ok(false)` when the second client could not be made (then
    /// the caller renames here, as before), an error when the rename
    /// itself failed.
    fn rename_aside(
        &self,
        parent: u64,
        name: &CStr,
        newparent: u64,
        newname: &CStr,
    ) -> idfuse::Result<bool> {
        let side = match Self::connect_quietly(&self.opts) {
            Ok(side) => side,
            Err(e) => {
                tracing::warn!(
                    "a second CephFS client for a rename over a hard-linked file failed ({e}); \
                     renaming through this one, whose cache may then hide the file's other names"
                );
                return Ok(false);
            }
        };
        let root_ino = self.cb.root_ino.load(Ordering::Relaxed);
        let dir = |node: u64| -> idfuse::Result<*mut ffi::Inode> {
            if node == 1 {
                return Ok(side.root);
            }
            let mut out = std::ptr::null_mut();
            let ino = ffi::InodeNo {
                val: swap_root(node, root_ino),
            };
            // SAFETY: mounted handle; out-pointer to a local.
            check(unsafe { ffi::ceph_ll_lookup_inode(side.m(), ino, &mut out) })?;
            Ok(out)
        };
        let release = |inode: *mut ffi::Inode| {
            if inode != side.root {
                side.put(inode, 1);
            }
        };
        let p = dir(parent)?;
        let np = match dir(newparent) {
            Ok(np) => np,
            Err(e) => {
                release(p);
                return Err(e);
            }
        };
        // SAFETY: both parents held by `side`; C strings.
        let r = check(unsafe {
            ffi::ceph_ll_rename(
                side.m(),
                p,
                name.as_ptr(),
                np,
                newname.as_ptr(),
                side.root_perm.ptr,
            )
        });
        release(p);
        release(np);
        r.map(|_| true)
    }

    /// `ceph_ll_lookup` asking for the statx fields in `want`: the inode,
    /// with one ll reference the caller owns, and its attributes.
    fn ll_lookup(
        &self,
        parent: *mut ffi::Inode,
        name: &CStr,
        want: libc::c_uint,
    ) -> idfuse::Result<(*mut ffi::Inode, CephStatx)> {
        let mut out = std::ptr::null_mut();
        let mut st = CephStatx::default();
        // SAFETY: parent held; out-pointers to locals.
        check(unsafe {
            ffi::ceph_ll_lookup(
                self.m(),
                parent,
                name.as_ptr(),
                &mut out,
                &mut st,
                want,
                0,
                self.root_perm.ptr,
            )
        })?;
        Ok((out, st))
    }

    fn put(&self, inode: *mut ffi::Inode, n: u64) {
        // SAFETY: we hold at least `n` ll references on inode.
        unsafe { ffi::ceph_ll_forget(self.m(), inode, n.min(i32::MAX as u64) as libc::c_int) };
    }

    fn lookup_inner(&self, parent: *mut ffi::Inode, name: &CStr) -> idfuse::Result<Entry> {
        let (inode, st) = self.ll_lookup(parent, name, ffi::STATX_BASIC_STATS)?;
        self.remember(inode, &st)
    }

    fn file(fh: u64) -> idfuse::Result<&'static FileHandle> {
        if fh == 0 {
            return Err(Errno::BADF);
        }
        // SAFETY: fh is a Box<FileHandle> pointer we gave the kernel in
        // open/create; it stays valid until release, which the kernel sends
        // after every other request on the handle.
        Ok(unsafe { &*(fh as *const FileHandle) })
    }

    fn dir(fh: u64) -> idfuse::Result<&'static DirHandle> {
        if fh == 0 {
            return Err(Errno::BADF);
        }
        // SAFETY: as for `file`, with opendir/releasedir.
        Ok(unsafe { &*(fh as *const DirHandle) })
    }

    fn opened(&self, fh: *mut ffi::Fh, inode: *mut ffi::Inode, flags: u32) -> Opened {
        let h = Box::new(FileHandle { fh, inode });
        let out = if flags & libc::O_APPEND as u32 != 0 {
            // The daemon places appends itself (see the crate docs), so the
            // kernel must send them as they come, not through its cache.
            OpenOutFlags::DIRECT_IO
        } else {
            // The kernel may keep what it cached of the file from one open
            // to the next, as ceph-fuse lets it: when the MDS revokes this
            // client's cache capability (Fc) for another client's write,
            // libcephfs calls the inode invalidation callback, which drops
            // the pages (FUSE_NOTIFY_INVAL_INODE). Whatever no callback
            // covers, AUTO_INVAL_DATA does: a read after the attributes'
            // `timeout` fetches them again, and a changed mtime or size
            // drops the pages, which bounds staleness as for names.
            OpenOutFlags::KEEP_CACHE
        };
        Opened {
            fh: Box::into_raw(h) as u64,
            flags: out,
            backing_id: None,
        }
    }

    fn append(&self, h: &FileHandle, data: &[u8]) -> idfuse::Result<u32> {
        let owner = (u64::from(std::process::id()) << 32)
            | (APPEND_OWNER.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff);
        // SAFETY: flock is plain data.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as i16;
        fl.l_whence = libc::SEEK_SET as i16;
        // SAFETY: fh is open; fl is a local.
        check(unsafe { ffi::ceph_ll_setlk(self.m(), h.fh, &mut fl, owner, 1) })?;
        let result = (|| {
            let mut st = CephStatx::default();
            // SAFETY: inode held by the open handle; out-pointer to a local.
            check(unsafe {
                ffi::ceph_ll_getattr(
                    self.m(),
                    h.inode,
                    &mut st,
                    ffi::STATX_SIZE,
                    0,
                    self.root_perm.ptr,
                )
            })?;
            // SAFETY: fh open; data valid for its length.
            let n = check(unsafe {
                ffi::ceph_ll_write(
                    self.m(),
                    h.fh,
                    st.stx_size as i64,
                    data.len() as u64,
                    data.as_ptr().cast(),
                )
            })?;
            Ok(n as u32)
        })();
        fl.l_type = libc::F_UNLCK as i16;
        // SAFETY: as above.
        let _ = unsafe { ffi::ceph_ll_setlk(self.m(), h.fh, &mut fl, owner, 0) };
        result
    }
}

impl Filesystem for CephFs {
    fn capabilities(&self) -> InitFlags {
        InitFlags::POSIX_ACL
            | InitFlags::DONT_MASK
            | InitFlags::DO_READDIRPLUS
            | InitFlags::READDIRPLUS_AUTO
            | InitFlags::SETXATTR_EXT
            | InitFlags::CREATE_SUPP_GROUP
            | InitFlags::PARALLEL_DIROPS
            | InitFlags::AUTO_INVAL_DATA
            | InitFlags::ATOMIC_O_TRUNC
            | InitFlags::BIG_WRITES
            | InitFlags::ASYNC_READ
    }

    fn set_notifier(&self, notifier: Notifier) {
        let _ = self.cb.notifier.set(notifier);
    }

    fn lookup(&self, _ctx: &Context<'_>, parent: u64, name: &OsStr) -> idfuse::Result<Entry> {
        let p = self.inode(parent)?;
        let name = cstr(name)?;
        match self.lookup_inner(p, &name) {
            Err(Errno::NOENT) => Ok(Entry::negative(Duration::ZERO)),
            r => r,
        }
    }

    fn forget(&self, ino: u64, nlookup: u64) {
        if ino == 1 {
            return;
        }
        let Ok(mut nodes) = self.nodes.lock() else {
            return;
        };
        let Some(n) = nodes.get_mut(&ino) else {
            return;
        };
        let k = nlookup.min(n.nlookup);
        n.nlookup -= k;
        let inode = n.inode;
        if n.nlookup == 0 {
            nodes.remove(&ino);
        }
        drop(nodes);
        if k > 0 {
            self.put(inode, k);
        }
    }

    fn getattr(&self, _ctx: &Context<'_>, ino: u64, _fh: Option<u64>) -> idfuse::Result<AttrReply> {
        let st = self.stat(self.inode(ino)?)?;
        Ok(AttrReply {
            attr: self.attr(&st),
            timeout: self.timeout,
        })
    }

    fn setattr(&self, _ctx: &Context<'_>, ino: u64, a: &SetAttr) -> idfuse::Result<AttrReply> {
        let inode = self.inode(ino)?;
        let mut st = CephStatx::default();
        let mut mask = 0;
        if let Some(m) = a.mode {
            st.stx_mode = (m & 0o7777) as u16;
            mask |= ffi::SETATTR_MODE;
        } else if a.kill_suidgid {
            let cur = self.stat(inode)?;
            let mut mode = u32::from(cur.stx_mode) & 0o7777;
            mode &= !libc::S_ISUID;
            if mode & libc::S_IXGRP != 0 {
                mode &= !libc::S_ISGID;
            }
            if mode != u32::from(cur.stx_mode) & 0o7777 {
                st.stx_mode = mode as u16;
                mask |= ffi::SETATTR_MODE;
            }
        }
        if let Some(u) = a.uid {
            st.stx_uid = u;
            mask |= ffi::SETATTR_UID;
        }
        if let Some(g) = a.gid {
            st.stx_gid = g;
            mask |= ffi::SETATTR_GID;
        }
        if let Some(s) = a.size {
            st.stx_size = s;
            mask |= ffi::SETATTR_SIZE;
        }
        let ts = |t: SetTime, out: &mut libc::timespec, bit: i32, now: i32| -> i32 {
            match t {
                SetTime::Now => bit | now,
                SetTime::At { sec, nsec } => {
                    out.tv_sec = sec;
                    out.tv_nsec = i64::from(nsec);
                    bit
                }
            }
        };
        if let Some(t) = a.atime {
            mask |= ts(
                t,
                &mut st.stx_atime,
                ffi::SETATTR_ATIME,
                ffi::SETATTR_ATIME_NOW,
            );
        }
        if let Some(t) = a.mtime {
            mask |= ts(
                t,
                &mut st.stx_mtime,
                ffi::SETATTR_MTIME,
                ffi::SETATTR_MTIME_NOW,
            );
        }
        if let Some(SetTime::At { sec, nsec }) = a.ctime {
            st.stx_ctime.tv_sec = sec;
            st.stx_ctime.tv_nsec = i64::from(nsec);
            mask |= ffi::SETATTR_CTIME;
        }
        if mask != 0 {
            // SAFETY: inode held; st is a local.
            check(unsafe {
                ffi::ceph_ll_setattr(self.m(), inode, &mut st, mask, self.root_perm.ptr)
            })?;
        }
        let st = self.stat(inode)?;
        Ok(AttrReply {
            attr: self.attr(&st),
            timeout: self.timeout,
        })
    }

    fn readlink(&self, _ctx: &Context<'_>, ino: u64) -> idfuse::Result<Vec<u8>> {
        let inode = self.inode(ino)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
        // SAFETY: inode held; buf writable for its length.
        let n = check(unsafe {
            ffi::ceph_ll_readlink(
                self.m(),
                inode,
                buf.as_mut_ptr().cast(),
                buf.len(),
                self.root_perm.ptr,
            )
        })?;
        buf.truncate(n as usize);
        Ok(buf)
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
        let p = self.inode(parent)?;
        let name = cstr(name)?;
        let perm = Perm::of(owner)?;
        let _umask = UmaskGuard::set(mode.umask);
        let major = (rdev & 0xfff00) >> 8;
        let minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
        let mut out = std::ptr::null_mut();
        let mut st = CephStatx::default();
        // SAFETY: parent held; out-pointers to locals.
        check(unsafe {
            ffi::ceph_ll_mknod(
                self.m(),
                p,
                name.as_ptr(),
                mode.mode,
                libc::makedev(major, minor),
                &mut out,
                &mut st,
                ffi::STATX_BASIC_STATS,
                0,
                perm.ptr,
            )
        })?;
        self.remember(out, &st)
    }

    fn mkdir(
        &self,
        _ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        owner: &Owner,
        mode: CreateMode,
    ) -> idfuse::Result<Entry> {
        let p = self.inode(parent)?;
        let name = cstr(name)?;
        let perm = Perm::of(owner)?;
        let _umask = UmaskGuard::set(mode.umask);
        let mut out = std::ptr::null_mut();
        let mut st = CephStatx::default();
        // SAFETY: parent held; out-pointers to locals.
        check(unsafe {
            ffi::ceph_ll_mkdir(
                self.m(),
                p,
                name.as_ptr(),
                mode.mode & 0o7777,
                &mut out,
                &mut st,
                ffi::STATX_BASIC_STATS,
                0,
                perm.ptr,
            )
        })?;
        self.remember(out, &st)
    }

    fn symlink(
        &self,
        _ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        owner: &Owner,
        target: &OsStr,
    ) -> idfuse::Result<Entry> {
        let p = self.inode(parent)?;
        let name = cstr(name)?;
        let target = cstr(target)?;
        let perm = Perm::of(owner)?;
        let mut out = std::ptr::null_mut();
        let mut st = CephStatx::default();
        // SAFETY: parent held; out-pointers to locals.
        check(unsafe {
            ffi::ceph_ll_symlink(
                self.m(),
                p,
                name.as_ptr(),
                target.as_ptr(),
                &mut out,
                &mut st,
                ffi::STATX_BASIC_STATS,
                0,
                perm.ptr,
            )
        })?;
        self.remember(out, &st)
    }

    fn unlink(&self, _ctx: &Context<'_>, parent: u64, name: &OsStr) -> idfuse::Result<()> {
        let p = self.inode(parent)?;
        let name = cstr(name)?;
        // SAFETY: parent held; C string.
        check(unsafe { ffi::ceph_ll_unlink(self.m(), p, name.as_ptr(), self.root_perm.ptr) })?;
        Ok(())
    }

    fn rmdir(&self, _ctx: &Context<'_>, parent: u64, name: &OsStr) -> idfuse::Result<()> {
        let p = self.inode(parent)?;
        let name = cstr(name)?;
        // SAFETY: parent held; C string.
        check(unsafe { ffi::ceph_ll_rmdir(self.m(), p, name.as_ptr(), self.root_perm.ptr) })?;
        Ok(())
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
        if flags & libc::RENAME_EXCHANGE != 0 {
            // Ceph has no atomic exchange.
            return Err(Errno::INVAL);
        }
        let whiteout = flags & libc::RENAME_WHITEOUT != 0;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_WHITEOUT) != 0
            || (whiteout && whiteout_owner.is_none())
        {
            return Err(Errno::INVAL);
        }
        let p = self.inode(parent)?;
        let np = self.inode(newparent)?;
        let name = cstr(name)?;
        let newname = cstr(newname)?;
        // libcephfs 16.2.15 marks the target's dentry "renaming" before it
        // looks up the source and the target, and only a rename that
        // reaches the MDS clears the mark. If either lookup fails (the
        // source is gone, which its cache can say while the kernel's still
        // shows the name), the mark stays, and every later lookup of the
        // target name waits for it forever: the two-thread metadata
        // stressor hung so in about one run of three. So both lookups are
        // made here first, and a rename they would fail is answered here
        // without reaching `ceph_ll_rename`. The kernel holds both
        // directories locked for the rename, so no other request of this
        // mount can remove the source in between; another client still
        // can (RELIABILITY.md).
        if self.probe_links(p, &name)? > 1 {
            // A second libcephfs 16.2.15 bug feeds the first: when the MDS
            // confirms (safe reply) an earlier request that replaced another
            // link of this file, libcephfs drops every cached name of the
            // file and trusts the null dentries it leaves, so the source can
            // turn "absent" between this probe and the rename's own lookup
            // (RELIABILITY.md has the debug log). Such renames now go
            // through a second client (`rename_aside`), so this client
            // should not meet it; the wait stays for the renames that still
            // come here (the second client could not be made, or another
            // client linked the target after the check below). Waiting for
            // this client's unconfirmed requests lets a pending drop happen
            // first; the second probe then sees it. Only hard-linked
            // sources pay for the wait.
            // SAFETY: the mount is live for `self`'s lifetime.
            check(unsafe { ffi::ceph_sync_fs(self.m()) })?;
            self.probe(p, &name)?;
        }
        let linked_target = match self.ll_lookup(np, &newname, ffi::STATX_MODE | ffi::STATX_NLINK) {
            Ok((inode, st)) => {
                self.put(inode, 1);
                if flags & (libc::RENAME_NOREPLACE | libc::RENAME_WHITEOUT) != 0 {
                    // Checked, not atomic: another client may create the name
                    // between the check and the rename.
                    return Err(Errno::EXIST);
                }
                u32::from(st.stx_mode) & libc::S_IFMT != libc::S_IFDIR && st.stx_nlink > 1
            }
            Err(Errno::NOENT) => false,
            Err(e) => return Err(e),
        };
        if !linked_target || !self.rename_aside(parent, &name, newparent, &newname)? {
            // SAFETY: both parents held; C strings.
            check(unsafe {
                ffi::ceph_ll_rename(
                    self.m(),
                    p,
                    name.as_ptr(),
                    np,
                    newname.as_ptr(),
                    self.root_perm.ptr,
                )
            })?;
        }
        if let (true, Some(owner)) = (whiteout, whiteout_owner) {
            // The whiteout (a 0/0 character device) follows the rename
            // instead of appearing with it: not atomic, unlike a local
            // filesystem's.
            let perm = Perm::of(owner)?;
            let mut out = std::ptr::null_mut();
            let mut st = CephStatx::default();
            // SAFETY: parent held; out-pointers to locals.
            check(unsafe {
                ffi::ceph_ll_mknod(
                    self.m(),
                    p,
                    name.as_ptr(),
                    libc::S_IFCHR,
                    0,
                    &mut out,
                    &mut st,
                    0,
                    0,
                    perm.ptr,
                )
            })?;
            self.put(out, 1);
        }
        Ok(())
    }

    fn link(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
    ) -> idfuse::Result<Entry> {
        let inode = self.inode(ino)?;
        let np = self.inode(newparent)?;
        let newname = cstr(newname)?;
        // SAFETY: both held; C string.
        check(unsafe {
            ffi::ceph_ll_link(self.m(), inode, np, newname.as_ptr(), self.root_perm.ptr)
        })?;
        self.drop_tmpfile_name(ino);
        self.lookup_inner(np, &newname)
    }

    fn open(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        flags: u32,
        _kill_suidgid: bool,
    ) -> idfuse::Result<Opened> {
        let inode = self.inode(ino)?;
        let oflags = (flags as i32) & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY);
        let mut fh = std::ptr::null_mut();
        // SAFETY: inode held; out-pointer to a local.
        check(unsafe { ffi::ceph_ll_open(self.m(), inode, oflags, &mut fh, self.root_perm.ptr) })?;
        Ok(self.opened(fh, inode, flags))
    }

    fn read(
        &self,
        _ctx: &Context<'_>,
        _ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
        buf: &mut Vec<u8>,
    ) -> idfuse::Result<()> {
        let h = Self::file(fh)?;
        // Read into spare capacity: zero-filling up to 1 MiB per READ first
        // would cost a noticeable share of a sequential read.
        buf.clear();
        buf.reserve(size as usize);
        // SAFETY: fh open; the spare capacity is writable for `size` bytes.
        let n = check(unsafe {
            ffi::ceph_ll_read(
                self.m(),
                h.fh,
                offset as i64,
                u64::from(size),
                buf.spare_capacity_mut().as_mut_ptr().cast(),
            )
        })?;
        let n = (n as usize).min(size as usize);
        // SAFETY: libcephfs wrote `n` bytes (at most `size`) at the start of
        // the spare capacity.
        unsafe { buf.set_len(n) };
        Ok(())
    }

    fn write(
        &self,
        _ctx: &Context<'_>,
        _ino: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: u32,
    ) -> idfuse::Result<u32> {
        let h = Self::file(fh)?;
        if flags & libc::O_APPEND as u32 != 0 {
            return self.append(h, data);
        }
        // SAFETY: fh open; data valid for its length.
        let n = check(unsafe {
            ffi::ceph_ll_write(
                self.m(),
                h.fh,
                offset as i64,
                data.len() as u64,
                data.as_ptr().cast(),
            )
        })?;
        Ok(n as u32)
    }

    fn release(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        fh: u64,
        _flags: u32,
        _lock_owner: Option<u64>,
        _flush: bool,
    ) -> idfuse::Result<()> {
        if fh == 0 {
            return Ok(());
        }
        // SAFETY: the Box from `opened`; the kernel releases a handle once.
        let h = unsafe { Box::from_raw(fh as *mut FileHandle) };
        // An O_TMPFILE file is opened once (by its creation): never
        // linked, it goes now.
        self.drop_tmpfile_name(ino);
        // SAFETY: fh open, closed once.
        check(unsafe { ffi::ceph_ll_close(self.m(), h.fh) })?;
        Ok(())
    }

    fn fsync(&self, _ctx: &Context<'_>, _ino: u64, fh: u64, datasync: bool) -> idfuse::Result<()> {
        let h = Self::file(fh)?;
        // SAFETY: fh open.
        check(unsafe { ffi::ceph_ll_fsync(self.m(), h.fh, i32::from(datasync)) })?;
        Ok(())
    }

    fn opendir(&self, _ctx: &Context<'_>, ino: u64, _flags: u32) -> idfuse::Result<Opened> {
        let inode = self.inode(ino)?;
        let mut dirp = std::ptr::null_mut();
        // SAFETY: inode held; out-pointer to a local.
        check(unsafe { ffi::ceph_ll_opendir(self.m(), inode, &mut dirp, self.root_perm.ptr) })?;
        let h = Box::new(DirHandle {
            dirp,
            lock: Mutex::new(()),
        });
        Ok(Opened {
            fh: Box::into_raw(h) as u64,
            flags: OpenOutFlags::empty(),
            backing_id: None,
        })
    }

    fn readdir(
        &self,
        _ctx: &Context<'_>,
        _ino: u64,
        fh: u64,
        offset: u64,
        out: &mut DirBuf,
    ) -> idfuse::Result<()> {
        let d = Self::dir(fh)?;
        let _g = d.lock.lock().map_err(|_| Errno::IO)?;
        self.seek(d, offset);
        loop {
            // SAFETY: dirp open.
            let here = unsafe { ffi::ceph_telldir(self.m(), d.dirp) };
            // SAFETY: dirent is plain data.
            let mut de: libc::dirent = unsafe { std::mem::zeroed() };
            // SAFETY: dirp open; de is a local.
            let r = check(unsafe { ffi::ceph_readdir_r(self.m(), d.dirp, &mut de) })?;
            if r == 0 {
                return Ok(());
            }
            // SAFETY: dirp open.
            let next = unsafe { ffi::ceph_telldir(self.m(), d.dirp) };
            // SAFETY: libcephfs NUL-terminates d_name.
            let name = unsafe { CStr::from_ptr(de.d_name.as_ptr()) };
            if name.to_bytes().starts_with(TMPFILE_PREFIX.as_bytes()) {
                continue;
            }
            if !out.push(de.d_ino, next as u64, u32::from(de.d_type), name.to_bytes()) {
                // SAFETY: dirp open.
                unsafe { ffi::ceph_seekdir(self.m(), d.dirp, here) };
                return Ok(());
            }
        }
    }

    fn readdirplus(
        &self,
        _ctx: &Context<'_>,
        _ino: u64,
        fh: u64,
        offset: u64,
        out: &mut DirPlusBuf<'_>,
    ) -> idfuse::Result<()> {
        let d = Self::dir(fh)?;
        let _g = d.lock.lock().map_err(|_| Errno::IO)?;
        self.seek(d, offset);
        loop {
            // SAFETY: dirp open.
            let here = unsafe { ffi::ceph_telldir(self.m(), d.dirp) };
            // SAFETY: plain data.
            let mut de: libc::dirent = unsafe { std::mem::zeroed() };
            let mut st = CephStatx::default();
            let mut inode = std::ptr::null_mut();
            // SAFETY: dirp open; out-pointers to locals.
            let r = check(unsafe {
                ffi::ceph_readdirplus_r(
                    self.m(),
                    d.dirp,
                    &mut de,
                    &mut st,
                    ffi::STATX_BASIC_STATS,
                    ffi::AT_SYMLINK_NOFOLLOW,
                    &mut inode,
                )
            })?;
            if r == 0 {
                return Ok(());
            }
            // SAFETY: dirp open.
            let next = unsafe { ffi::ceph_telldir(self.m(), d.dirp) };
            // SAFETY: NUL-terminated by libcephfs.
            let name = unsafe { CStr::from_ptr(de.d_name.as_ptr()) };
            let name_b = name.to_bytes();
            let typ = u32::from(de.d_type);
            if name_b.starts_with(TMPFILE_PREFIX.as_bytes()) {
                if !inode.is_null() {
                    self.put(inode, 1);
                }
                continue;
            }
            let fits = if name_b == b"." || name_b == b".." || inode.is_null() {
                // The kernel takes no lookup for these.
                if !inode.is_null() {
                    self.put(inode, 1);
                }
                let e = Entry {
                    ino: 0,
                    generation: 0,
                    attr: self.attr(&st),
                    entry_timeout: Duration::ZERO,
                    attr_timeout: Duration::ZERO,
                };
                let mut e = e;
                e.attr.ino = de.d_ino;
                out.push(&e, next as u64, typ, OsStr::from_bytes(name_b))
            } else {
                match self.remember(inode, &st) {
                    Ok(e) => {
                        if out.push(&e, next as u64, typ, OsStr::from_bytes(name_b)) {
                            true
                        } else {
                            self.forget(e.ino, 1);
                            false
                        }
                    }
                    // A snapshot: skip it.
                    Err(_) => true,
                }
            };
            if !fits {
                // SAFETY: dirp open.
                unsafe { ffi::ceph_seekdir(self.m(), d.dirp, here) };
                return Ok(());
            }
        }
    }

    fn releasedir(
        &self,
        _ctx: &Context<'_>,
        _ino: u64,
        fh: u64,
        _flags: u32,
    ) -> idfuse::Result<()> {
        if fh == 0 {
            return Ok(());
        }
        // SAFETY: the Box from opendir; released once.
        let d = unsafe { Box::from_raw(fh as *mut DirHandle) };
        // SAFETY: dirp open, released once.
        check(unsafe { ffi::ceph_ll_releasedir(self.m(), d.dirp) })?;
        Ok(())
    }

    fn statfs(&self, _ctx: &Context<'_>, ino: u64) -> idfuse::Result<Kstatfs> {
        let inode = self.inode(ino)?;
        // SAFETY: plain data.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: inode held; s a local.
        check(unsafe { ffi::ceph_ll_statfs(self.m(), inode, &mut s) })?;
        Ok(Kstatfs {
            blocks: s.f_blocks,
            bfree: s.f_bfree,
            bavail: s.f_bavail,
            files: s.f_files,
            ffree: s.f_ffree,
            bsize: s.f_bsize as u32,
            namelen: s.f_namemax as u32,
            frsize: s.f_frsize as u32,
            ..Kstatfs::default()
        })
    }

    fn setxattr(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: u32,
        _setxattr_flags: SetxattrFlags,
    ) -> idfuse::Result<()> {
        let inode = self.inode(ino)?;
        let name = cstr(name)?;
        // SAFETY: inode held; value valid for its length.
        check(unsafe {
            ffi::ceph_ll_setxattr(
                self.m(),
                inode,
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags as i32,
                self.root_perm.ptr,
            )
        })?;
        Ok(())
    }

    fn getxattr(
        &self,
        _ctx: &Context<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
    ) -> idfuse::Result<Xattr> {
        let inode = self.inode(ino)?;
        let name = cstr(name)?;
        let mut buf = vec![0u8; size as usize];
        let ptr = if size == 0 {
            std::ptr::null_mut()
        } else {
            buf.as_mut_ptr()
        };
        // SAFETY: inode held; buf writable for `size` bytes.
        let n = check(unsafe {
            ffi::ceph_ll_getxattr(
                self.m(),
                inode,
                name.as_ptr(),
                ptr.cast(),
                size as usize,
                self.root_perm.ptr,
            )
        })?;
        if size == 0 {
            return Ok(Xattr::Size(n as u32));
        }
        buf.truncate(n as usize);
        Ok(Xattr::Data(buf))
    }

    fn listxattr(&self, _ctx: &Context<'_>, ino: u64, size: u32) -> idfuse::Result<Xattr> {
        let inode = self.inode(ino)?;
        let mut buf = vec![0u8; size as usize];
        let ptr = if size == 0 {
            std::ptr::null_mut()
        } else {
            buf.as_mut_ptr()
        };
        let mut len = 0usize;
        // SAFETY: inode held; buf writable for `size` bytes.
        check(unsafe {
            ffi::ceph_ll_listxattr(
                self.m(),
                inode,
                ptr.cast(),
                size as usize,
                &mut len,
                self.root_perm.ptr,
            )
        })?;
        if size == 0 {
            return Ok(Xattr::Size(len as u32));
        }
        buf.truncate(len);
        Ok(Xattr::Data(buf))
    }

    fn removexattr(&self, _ctx: &Context<'_>, ino: u64, name: &OsStr) -> idfuse::Result<()> {
        let inode = self.inode(ino)?;
        let name = cstr(name)?;
        // SAFETY: inode held; C string.
        check(unsafe {
            ffi::ceph_ll_removexattr(self.m(), inode, name.as_ptr(), self.root_perm.ptr)
        })?;
        Ok(())
    }

    fn create(
        &self,
        _ctx: &Context<'_>,
        parent: u64,
        name: &OsStr,
        owner: &Owner,
        mode: CreateMode,
        flags: u32,
        _kill_suidgid: bool,
    ) -> idfuse::Result<(Entry, Opened)> {
        let p = self.inode(parent)?;
        let cname = cstr(name)?;
        let perm = Perm::of(owner)?;
        let _umask = UmaskGuard::set(mode.umask);
        let oflags = (flags as i32 | libc::O_CREAT) & !libc::O_NOCTTY;
        let mut out = std::ptr::null_mut();
        let mut fh = std::ptr::null_mut();
        let mut st = CephStatx::default();
        // SAFETY: parent held; out-pointers to locals.
        check(unsafe {
            ffi::ceph_ll_create(
                self.m(),
                p,
                cname.as_ptr(),
                mode.mode & 0o7777,
                oflags,
                &mut out,
                &mut fh,
                &mut st,
                ffi::STATX_BASIC_STATS,
                0,
                perm.ptr,
            )
        })?;
        let entry = match self.remember(out, &st) {
            Ok(e) => e,
            Err(e) => {
                // SAFETY: fh open, closed once.
                unsafe { ffi::ceph_ll_close(self.m(), fh) };
                return Err(e);
            }
        };
        Ok((entry, self.opened(fh, out, flags)))
    }

    fn tmpfile(
        &self,
        ctx: &Context<'_>,
        parent: u64,
        owner: &Owner,
        mode: CreateMode,
        flags: u32,
    ) -> idfuse::Result<(Entry, Opened)> {
        // Ceph has no unnamed create (and cannot link an unlinked inode
        // back): the file is made under a hidden name, which a later LINK
        // turns into the real one and the last release removes. This
        // client's listings leave the name out; other clients see it while
        // the file is open and unlinked.
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let hidden = format!(
            "{TMPFILE_PREFIX}{}.{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let flags = flags & !(libc::O_TMPFILE as u32);
        let (entry, opened) = self.create(
            ctx,
            parent,
            OsStr::new(&hidden),
            owner,
            mode,
            flags | libc::O_EXCL as u32,
            false,
        )?;
        let name = CString::new(hidden).map_err(|_| Errno::INVAL)?;
        if let Ok(mut t) = self.tmpfiles.lock() {
            t.insert(entry.ino, (parent, name));
        }
        Ok((entry, opened))
    }

    fn fallocate(
        &self,
        _ctx: &Context<'_>,
        _ino: u64,
        fh: u64,
        offset: u64,
        length: u64,
        mode: u32,
    ) -> idfuse::Result<()> {
        let h = Self::file(fh)?;
        // SAFETY: fh open.
        check(unsafe {
            ffi::ceph_ll_fallocate(self.m(), h.fh, mode as i32, offset as i64, length as i64)
        })?;
        Ok(())
    }
}

/// Names of O_TMPFILE files until they are linked or closed.
const TMPFILE_PREFIX: &str = ".idfuse-tmpfile.";

impl CephFs {
    fn drop_tmpfile_name(&self, ino: u64) {
        let Some((parent, name)) = self.tmpfiles.lock().ok().and_then(|mut t| t.remove(&ino))
        else {
            return;
        };
        if let Ok(p) = self.inode(parent) {
            // SAFETY: parent held (the kernel keeps the parent of an open
            // file's dentry); C string.
            let r = unsafe { ffi::ceph_ll_unlink(self.m(), p, name.as_ptr(), self.root_perm.ptr) };
            if r < 0 {
                tracing::warn!(name = ?name, err = %errno(r), "cannot remove an O_TMPFILE's hidden name");
            }
        }
    }

    fn seek(&self, d: &DirHandle, offset: u64) {
        if offset == 0 {
            // SAFETY: dirp open.
            unsafe { ffi::ceph_rewinddir(self.m(), d.dirp) };
            return;
        }
        // SAFETY: dirp open.
        let here = unsafe { ffi::ceph_telldir(self.m(), d.dirp) };
        if here as u64 != offset {
            // SAFETY: dirp open; an offset telldir gave earlier.
            unsafe { ffi::ceph_seekdir(self.m(), d.dirp, offset as i64) };
        }
    }
}

/// Whether `opts.fs` names a file system: mount its root with a second
/// handle (used only to tell "no such fs" from "no such path").
fn fs_exists(opts: &CephOptions) -> bool {
    let probe = CephOptions {
        path: "/".into(),
        fs: opts.fs.clone(),
        ..opts.clone()
    };
    match CephFs::connect_probe(&probe) {
        Ok(()) => true,
        // A key restricted to a path may not mount "/": the fs exists.
        Err(e) => e != Errno::NOENT,
    }
}

impl CephFs {
    fn connect_probe(opts: &CephOptions) -> Result<(), Errno> {
        let id = CString::new(opts.id()).map_err(|_| Errno::INVAL)?;
        let mut m = std::ptr::null_mut();
        // SAFETY: out-pointer to a local.
        check(unsafe { ffi::ceph_create(&mut m, id.as_ptr()) })?;
        let mount = Mount(m);
        if let Some(conf) = &opts.conf {
            let c = CString::new(conf.as_os_str().as_bytes()).map_err(|_| Errno::INVAL)?;
            // SAFETY: valid handle, C string.
            check(unsafe { ffi::ceph_conf_read_file(mount.0, c.as_ptr()) })?;
        }
        if let Some(k) = &opts.keyring {
            conf_set(mount.0, "keyring", &k.to_string_lossy()).map_err(|_| Errno::INVAL)?;
        }
        conf_set(
            mount.0,
            "client_mount_timeout",
            &opts.mount_timeout.to_string(),
        )
        .map_err(|_| Errno::INVAL)?;
        let fs = CString::new(opts.fs.clone().unwrap_or_default()).map_err(|_| Errno::INVAL)?;
        // SAFETY: valid handle.
        check(unsafe { ffi::ceph_init(mount.0) })?;
        // SAFETY: valid handle, C string.
        check(unsafe { ffi::ceph_select_filesystem(mount.0, fs.as_ptr()) })?;
        let root = CString::new("/").map_err(|_| Errno::INVAL)?;
        // SAFETY: valid handle, C string.
        check(unsafe { ffi::ceph_mount(mount.0, root.as_ptr()) })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_swap_is_an_involution() {
        for root in [0u64, 1, 0x1000_0000_0001] {
            for ino in [1u64, 2, 0x1000_0000_0001, 77] {
                assert_eq!(swap_root(swap_root(ino, root), root), ino);
            }
        }
        assert_eq!(swap_root(0x1000_0000_0001, 0x1000_0000_0001), 1);
        assert_eq!(swap_root(1, 0x1000_0000_0001), 0x1000_0000_0001);
    }

    #[test]
    fn options_parse() {
        let mut o = CephOptions::default();
        assert_eq!(
            o.parse_option("conf", Some("/etc/ceph/ceph.conf")),
            Ok(true)
        );
        assert_eq!(o.parse_option("name", Some("client.kube")), Ok(true));
        assert_eq!(o.id(), "kube");
        assert!(o.parse_option("path", Some("relative")).is_err());
        assert_eq!(o.parse_option("path", Some("/a/b")), Ok(true));
        assert_eq!(o.path, "/a/b");
        assert_eq!(o.parse_option("allow_other", None), Ok(false));
        assert!(o.parse_option("conf", None).is_err());
    }

    #[test]
    fn statx_layout_matches_c() {
        // struct ceph_statx on x86_64/aarch64: 4 u32 + u16 (+pad) then
        // 3 u64, 2 dev_t, 4 timespecs, 1 u64.
        assert_eq!(
            std::mem::size_of::<CephStatx>(),
            24 + 3 * 8 + 2 * 8 + 4 * 16 + 8
        );
        assert_eq!(std::mem::offset_of!(CephStatx, stx_ino), 24);
    }
}
