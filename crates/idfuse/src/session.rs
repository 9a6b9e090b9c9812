//! The session: INIT negotiation, worker threads with one cloned `/dev/fuse`
//! fd each, request dispatch to the [`Filesystem`], interrupts, forgets and
//! notifications.

use std::ffi::OsStr;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;

use idfuse_abi::reply::{out_header, DirBuf, Notification};
use idfuse_abi::{
    decode, AttrOut, BmapOut, DecodeOptions, EntryOut, GetxattrOut, InHeader, InitFlags, InitIn,
    InitOut, IoctlOut, LkOut, LseekOut, OpenInFlags, OpenOut, OpenOutFlags, Operation, PollOut,
    ReleaseFlags, SetattrIn, SetattrValid, SetxattrFlags, StatfsOut, StatxOut, WriteFlags,
    WriteOut, INVALID_UIDGID, KERNEL_MINOR_VERSION, KERNEL_VERSION,
};
use rustix::io::Errno;
use zerocopy::IntoBytes;

use crate::fs::{
    AttrReply, BackingId, Caller, Context, CreateMode, DirPlusBuf, Entry, Filesystem, Negotiated,
    Opened, Owner, SetAttr, SetTime, Xattr,
};
use crate::uring::{IoUringMode, Transport, TransportStats};
use crate::Result;

/// Called for every request the session receives, with the opcode name and
/// the header ids (`None` when the kernel withheld them). For tests and
/// diagnostics (`idfuse mount --record-requests`).
pub type Observer = dyn Fn(&str, Option<Caller>) + Send + Sync;

/// Called with the raw bytes of every request, before decoding: for
/// capturing fuzzing seeds from a real mount.
pub type RawObserver = dyn Fn(&[u8]) + Send + Sync;

/// Session settings that do not belong to the mount itself.
#[derive(Clone)]
pub struct SessionConfig {
    /// Worker threads, each with its own cloned `/dev/fuse` fd.
    pub threads: usize,
    /// Offer `FUSE_ALLOW_IDMAP`: the mount may be idmapped, and the kernel
    /// withholds caller ids on every request that does not create an inode.
    pub idmap: bool,
    /// Ask for `FUSE_PASSTHROUGH` (kernel-to-kernel I/O on backing files).
    pub passthrough: bool,
    /// Ask for `FUSE_WRITEBACK_CACHE`. The kernel refuses it together with
    /// passthrough.
    pub writeback_cache: bool,
    /// Largest WRITE request (bytes).
    pub max_write: u32,
    /// The kernel's readahead for this mount, in bytes (`max_readahead=N`).
    /// The kernel starts a FUSE mount at 128 KiB and lets INIT only lower
    /// that; a larger value is set once the mount exists, on its backing
    /// device (`/sys/class/bdi/MAJ:MIN/read_ahead_kb`, which needs root).
    /// `None`: the kernel's default.
    pub max_readahead: Option<u32>,
    /// Request observer.
    pub observer: Option<Arc<Observer>>,
    /// Raw request observer.
    pub raw_observer: Option<Arc<RawObserver>>,
    /// Carry requests over io_uring (`FUSE_OVER_IO_URING`, Linux 6.14+)
    /// instead of `/dev/fuse` reads and writes. The default is `auto`, or
    /// what the environment variable `IDFUSE_IO_URING` says.
    pub io_uring: IoUringMode,
    /// Ring entries each ring thread registers per queue it serves. One
    /// entry is one request in flight: a ring thread answers its requests
    /// one at a time, so more than one entry only lets it pick up several
    /// finished requests per system call.
    pub uring_depth: u32,
    /// Ring threads, each with its own io_uring. The kernel keeps one
    /// queue per possible CPU and routes a request to the queue of the CPU
    /// its caller runs on; every queue is served by at least one thread.
    /// 0: as many as `threads` or queues, whichever is more.
    pub uring_threads: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            idmap: true,
            passthrough: false,
            writeback_cache: false,
            max_write: 1 << 20,
            max_readahead: None,
            observer: None,
            raw_observer: None,
            io_uring: IoUringMode::from_env(),
            uring_depth: 1,
            uring_threads: 0,
        }
    }
}

impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfig")
            .field("threads", &self.threads)
            .field("idmap", &self.idmap)
            .field("passthrough", &self.passthrough)
            .field("writeback_cache", &self.writeback_cache)
            .field("max_write", &self.max_write)
            .field("max_readahead", &self.max_readahead)
            .field("io_uring", &self.io_uring)
            .field("uring_depth", &self.uring_depth)
            .field("uring_threads", &self.uring_threads)
            .finish()
    }
}

/// The connection's `/dev/fuse` fd as the filesystem may use it: backing
/// files for passthrough and notifications.
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
    passthrough: AtomicBool,
}

impl Device {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        Self {
            fd,
            passthrough: AtomicBool::new(false),
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// True when `FUSE_PASSTHROUGH` was negotiated.
    pub fn passthrough(&self) -> bool {
        self.passthrough.load(Ordering::Relaxed)
    }

    /// `FUSE_DEV_IOC_BACKING_OPEN`.
    pub fn open_backing(&self, fd: BorrowedFd<'_>) -> Result<BackingId> {
        let map = idfuse_abi::BackingMap {
            fd: fd.as_raw_fd(),
            flags: 0,
            padding: 0,
        };
        // SAFETY: BACKING_OPEN reads a `struct fuse_backing_map` from the
        // pointer, which points at a live, correctly laid out value.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                idfuse_abi::ioctl::BACKING_OPEN as _,
                &map as *const idfuse_abi::BackingMap,
            )
        };
        if r < 0 {
            return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO));
        }
        Ok(BackingId(r))
    }

    /// `FUSE_DEV_IOC_BACKING_CLOSE`.
    pub fn close_backing(&self, id: BackingId) -> Result<()> {
        let raw: u32 = id.0 as u32;
        // SAFETY: BACKING_CLOSE reads a u32 from the pointer, which points at
        // a live local.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                idfuse_abi::ioctl::BACKING_CLOSE as _,
                &raw as *const u32,
            )
        };
        if r < 0 {
            return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO));
        }
        Ok(())
    }

    /// Send a notification to the kernel. `ENOENT` means the kernel no
    /// longer knows the inode or name, which is not an error for a cache
    /// invalidation.
    pub fn notify(&self, n: &Notification) -> Result<()> {
        match rustix::io::write(&self.fd, n.as_bytes()) {
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A handle through which a filesystem sends notifications.
#[derive(Clone, Debug)]
pub struct Notifier(pub(crate) Arc<Device>);

impl Notifier {
    /// Invalidate cached attributes and data of `ino`.
    pub fn inval_inode(&self, ino: u64, off: i64, len: i64) -> Result<()> {
        self.0.notify(&Notification::inval_inode(ino, off, len))
    }
    /// Invalidate the name `name` in `parent`.
    pub fn inval_entry(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.0
            .notify(&Notification::inval_entry(parent, name.as_bytes(), 0))
    }
    /// Tell the kernel `name` (inode `child`) in `parent` was deleted.
    pub fn delete(&self, parent: u64, child: u64, name: &OsStr) -> Result<()> {
        self.0
            .notify(&Notification::delete(parent, child, name.as_bytes()))
    }
    /// Push data into the kernel's page cache.
    pub fn store(&self, ino: u64, offset: u64, data: &[u8]) -> Result<()> {
        self.0.notify(&Notification::store(ino, offset, data))
    }
    /// Ask the kernel for cached data; it arrives through
    /// [`Filesystem::retrieve_reply`](crate::Filesystem).
    pub fn retrieve(&self, cookie: u64, ino: u64, offset: u64, size: u32) -> Result<()> {
        self.0
            .notify(&Notification::retrieve(cookie, ino, offset, size))
    }
    /// Ask the kernel to drop unused inodes.
    pub fn prune(&self, inos: &[u64]) -> Result<()> {
        self.0.notify(&Notification::prune(inos))
    }
    /// Send any prepared notification.
    pub fn send(&self, n: &Notification) -> Result<()> {
        self.0.notify(n)
    }
}

/// State shared by the workers of one session.
pub(crate) struct Shared<F: Filesystem> {
    pub(crate) fs: Arc<F>,
    pub(crate) config: SessionConfig,
    pub(crate) device: Arc<Device>,
    pub(crate) negotiated: OnceLock<Negotiated>,
    pub(crate) init_state: Mutex<InitState>,
    pub(crate) init_cv: Condvar,
    /// One slot per worker: the request it is serving, and whether the
    /// kernel interrupted it. Lock-free, so tracking costs two stores.
    slots: Vec<Slot>,
    pub(crate) running: AtomicUsize,
    pub(crate) default_permissions: bool,
    pub(crate) shutdown: Arc<OwnedFd>,
    /// Set when the session stops: a `/dev/fuse` worker woken by
    /// [`wake_signal`] (or between two requests) sees it and returns.
    pub(crate) stopping: AtomicBool,
    /// Requests per opcode, by the way they came: [0] `/dev/fuse`, [1] the ring.
    counts: [OpCounts; 2],
    /// Which transport carries the requests.
    pub(crate) transport: Mutex<Transport>,
}

/// Requests counted per opcode (opcodes past the table share the last slot).
struct OpCounts([AtomicU64; 64]);

impl Default for OpCounts {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// How a request reached the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Dev = 0,
    Ring = 1,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InitState {
    Waiting,
    Done,
    Failed(String),
    Gone,
}

impl<F: Filesystem> Shared<F> {
    pub(crate) fn new(
        fs: Arc<F>,
        config: SessionConfig,
        device: Device,
        default_permissions: bool,
        shutdown: Arc<OwnedFd>,
    ) -> Self {
        let slots = config.threads.max(1) + crate::uring::ring_threads(&config);
        Self {
            fs,
            config,
            device: Arc::new(device),
            negotiated: OnceLock::new(),
            init_state: Mutex::new(InitState::Waiting),
            init_cv: Condvar::new(),
            slots: (0..slots).map(|_| Slot::default()).collect(),
            running: AtomicUsize::new(0),
            default_permissions,
            shutdown,
            stopping: AtomicBool::new(false),
            counts: Default::default(),
            transport: Mutex::new(Transport::DevFuse),
        }
    }

    pub(crate) fn count(&self, via: Via, opcode: u32) {
        let t = &self.counts[via as usize].0;
        t[(opcode as usize).min(t.len() - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests so far, per transport and opcode.
    pub(crate) fn stats(&self) -> TransportStats {
        let snap = |c: &OpCounts| -> Vec<(u32, u64)> {
            c.0.iter()
                .enumerate()
                .map(|(i, n)| (i as u32, n.load(Ordering::Relaxed)))
                .filter(|&(_, n)| n > 0)
                .collect()
        };
        TransportStats {
            transport: self
                .transport
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            dev: snap(&self.counts[0]),
            ring: snap(&self.counts[1]),
        }
    }

    fn set_init(&self, state: InitState) {
        let mut g = self.init_state.lock().unwrap_or_else(|p| p.into_inner());
        if *g == InitState::Waiting {
            *g = state;
        }
        self.init_cv.notify_all();
    }

    /// Wait until INIT was answered (or the connection died).
    pub(crate) fn wait_init(
        &self,
        timeout: std::time::Duration,
    ) -> std::result::Result<(), String> {
        let g = self.init_state.lock().unwrap_or_else(|p| p.into_inner());
        let (g, t) = self
            .init_cv
            .wait_timeout_while(g, timeout, |s| *s == InitState::Waiting)
            .unwrap_or_else(|p| p.into_inner());
        if t.timed_out() {
            return Err(format!(
                "the kernel sent no INIT request within {} s",
                timeout.as_secs()
            ));
        }
        match &*g {
            InitState::Done => Ok(()),
            InitState::Failed(why) => Err(why.clone()),
            InitState::Gone => Err("the connection ended before INIT completed".into()),
            InitState::Waiting => Err("INIT did not complete".into()),
        }
    }
}

#[derive(Default)]
struct Slot {
    unique: AtomicU64,
    interrupted: AtomicBool,
}

/// Spawn one worker reading `fd`.
pub(crate) fn spawn_worker<F: Filesystem>(
    shared: Arc<Shared<F>>,
    fd: Arc<OwnedFd>,
    index: usize,
) -> std::io::Result<JoinHandle<()>> {
    shared.running.fetch_add(1, Ordering::SeqCst);
    std::thread::Builder::new()
        .name(format!("idfuse-worker-{index}"))
        .spawn(move || {
            worker_loop(&shared, fd.as_fd(), index);
            shared.running.fetch_sub(1, Ordering::SeqCst);
            shared.set_init(InitState::Gone);
        })
}

fn worker_loop<F: Filesystem>(shared: &Shared<F>, fd: BorrowedFd<'_>, index: usize) {
    let size = shared.config.max_write as usize + 2 * 4096;
    let mut buf = vec![0u8; size.max(idfuse_abi::MIN_READ_BUFFER)];
    let mut scratch = Scratch::default();
    // A blocking read is one system call per request, and the kernel wakes
    // one blocked reader per request. Polling costs two more calls, and
    // poll wakes every worker for each request (the kernel's poll waiters
    // are not exclusive): 10-15% of create+stat+unlink on two cores. A
    // blocked read is woken for shutdown by the wake signal, so it is used
    // only when that signal is ours.
    let blocking = wake_signal().is_some();
    let flags = if blocking {
        rustix::fs::OFlags::RDWR
    } else {
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NONBLOCK
    };
    if let Err(e) = rustix::fs::fcntl_setfl(fd, flags) {
        tracing::error!("setting the flags of /dev/fuse failed: {e}; worker stops");
        return;
    }
    loop {
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let n = match rustix::io::read(fd, &mut buf[..]) {
            Ok(0) => return,
            Ok(n) => n,
            // Without the wake signal the fd is non-blocking: wait for a
            // request or for the session's shutdown eventfd.
            Err(Errno::AGAIN) => {
                use rustix::event::{poll, PollFd, PollFlags};
                let mut fds = [
                    PollFd::new(&fd, PollFlags::IN),
                    PollFd::new(&*shared.shutdown, PollFlags::IN),
                ];
                match poll(&mut fds, None) {
                    Ok(_) if !fds[1].revents().is_empty() => return,
                    Ok(_) | Err(Errno::INTR) => continue,
                    Err(e) => {
                        tracing::error!("poll on /dev/fuse failed: {e}; worker stops");
                        return;
                    }
                }
            }
            // EINTR: the wake signal (the loop's top sees `stopping`).
            // ENOENT: the request was interrupted before we read it.
            Err(Errno::INTR) | Err(Errno::NOENT) => continue,
            Err(Errno::NODEV) => {
                tracing::debug!("connection ended (ENODEV)");
                return;
            }
            Err(e) => {
                tracing::error!("reading /dev/fuse failed: {e}; worker stops");
                return;
            }
        };
        if process(
            shared,
            &mut DevOut(fd),
            &buf[..n],
            &mut scratch,
            index,
            Via::Dev,
        ) {
            return;
        }
    }
}

/// The signal that wakes a worker blocked in `read(/dev/fuse)` when the
/// session stops: one real-time signal (SIGRTMAX-4) with a handler that
/// does nothing, installed without `SA_RESTART` so that the read returns
/// EINTR. It is claimed once per process, and only if nothing else handles
/// it; otherwise `None`, and workers poll instead (see `worker_loop`).
pub(crate) fn wake_signal() -> Option<i32> {
    static SIGNAL: OnceLock<Option<i32>> = OnceLock::new();
    *SIGNAL.get_or_init(|| {
        extern "C" fn nothing(_: libc::c_int) {}
        let sig = libc::SIGRTMAX() - 4;
        // SAFETY: sigaction with a null new action only reads the current
        // one into `old`, a zeroed local of the right type.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: see above; the pointers are to live locals.
        if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 {
            return None;
        }
        let ours = nothing as extern "C" fn(libc::c_int) as libc::sighandler_t;
        if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != ours {
            tracing::debug!("signal {sig} is taken; /dev/fuse workers poll instead of blocking");
            return None;
        }
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask"
        // action; the handler is async-signal-safe (it does nothing).
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = ours;
        // SAFETY: `act` is initialised above and outlives the call.
        if unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) } != 0 {
            return None;
        }
        Some(sig)
    })
}

/// Decode and answer one request, whichever transport brought it: the one
/// code path from bytes to reply. Returns true when the worker should stop.
pub(crate) fn process<F: Filesystem>(
    shared: &Shared<F>,
    out: &mut dyn ReplySink,
    buf: &[u8],
    scratch: &mut Scratch,
    index: usize,
    via: Via,
) -> bool {
    if let Some(raw) = &shared.config.raw_observer {
        raw(buf);
    }
    if let Ok((h, _)) = <InHeader as zerocopy::FromBytes>::read_from_prefix(buf) {
        shared.count(via, h.opcode);
    }
    let opts = DecodeOptions {
        setxattr_ext: shared
            .negotiated
            .get()
            .is_some_and(|n| n.flags.contains(InitFlags::SETXATTR_EXT)),
    };
    match decode(buf, opts) {
        Ok(req) => dispatch(shared, out, req, scratch, index),
        Err(e) => {
            // Answer what we can: a request we cannot decode still has an
            // id, and an unanswered request would hang its caller.
            tracing::warn!("undecodable request: {e}");
            if let Ok((h, _)) = <InHeader as zerocopy::FromBytes>::read_from_prefix(buf) {
                if h.opcode != idfuse_abi::opcode::FORGET
                    && h.opcode != idfuse_abi::opcode::BATCH_FORGET
                {
                    reply_err(out, h.unique, Errno::INVAL);
                }
            }
            false
        }
    }
}

#[derive(Default)]
pub(crate) struct Scratch {
    data: Vec<u8>,
    dir: Option<DirBuf>,
}

/// Where a transport takes a reply: the header is built here, the
/// transport only moves the bytes.
pub(crate) trait ReplySink {
    /// Send the reply to request `unique`: `error` (0 or a negative errno)
    /// and the payload `parts`, in order.
    fn reply(&mut self, unique: u64, error: i32, parts: &[&[u8]]);
}

/// Replies written to `/dev/fuse` with one writev.
pub(crate) struct DevOut<'a>(pub(crate) BorrowedFd<'a>);

impl ReplySink for DevOut<'_> {
    fn reply(&mut self, unique: u64, error: i32, parts: &[&[u8]]) {
        let payload: usize = parts.iter().map(|p| p.len()).sum();
        let header = out_header(unique, error, payload);
        let mut iov = Vec::with_capacity(parts.len() + 1);
        iov.push(IoSlice::new(header.as_bytes()));
        for p in parts {
            if !p.is_empty() {
                iov.push(IoSlice::new(p));
            }
        }
        match rustix::io::writev(self.0, &iov) {
            Ok(_) => {}
            // The request was interrupted and the caller is gone.
            Err(Errno::NOENT) => {}
            Err(e) => tracing::warn!(unique, "writing reply failed: {e}"),
        }
    }
}

fn reply_err(out: &mut dyn ReplySink, unique: u64, e: Errno) {
    out.reply(unique, -e.raw_os_error(), &[]);
}

fn reply_ok(out: &mut dyn ReplySink, unique: u64, parts: &[&[u8]]) {
    out.reply(unique, 0, parts);
}

fn attr_out(a: AttrReply) -> AttrOut {
    AttrOut {
        attr_valid: a.timeout.as_secs(),
        attr_valid_nsec: a.timeout.subsec_nanos(),
        dummy: 0,
        attr: a.attr,
    }
}

fn open_out(o: Opened) -> OpenOut {
    let mut flags = o.flags;
    let backing_id = match o.backing_id {
        Some(id) => {
            flags |= OpenOutFlags::PASSTHROUGH;
            id.0
        }
        None => 0,
    };
    OpenOut {
        fh: o.fh,
        open_flags: flags.bits(),
        backing_id,
    }
}

fn entry_out(e: Entry) -> EntryOut {
    e.to_out()
}

fn set_time(now_bit: bool, set_bit: bool, sec: u64, nsec: u32) -> Option<SetTime> {
    if now_bit {
        Some(SetTime::Now)
    } else if set_bit {
        Some(SetTime::At {
            sec: sec as i64,
            nsec,
        })
    } else {
        None
    }
}

fn setattr_from(a: &SetattrIn) -> SetAttr {
    let v = SetattrValid::from_bits_truncate(a.valid);
    SetAttr {
        mode: v.contains(SetattrValid::MODE).then_some(a.mode),
        uid: v.contains(SetattrValid::UID).then_some(a.uid),
        gid: v.contains(SetattrValid::GID).then_some(a.gid),
        size: v.contains(SetattrValid::SIZE).then_some(a.size),
        atime: set_time(
            v.contains(SetattrValid::ATIME_NOW),
            v.contains(SetattrValid::ATIME),
            a.atime,
            a.atimensec,
        ),
        mtime: set_time(
            v.contains(SetattrValid::MTIME_NOW),
            v.contains(SetattrValid::MTIME),
            a.mtime,
            a.mtimensec,
        ),
        ctime: v.contains(SetattrValid::CTIME).then_some(SetTime::At {
            sec: a.ctime as i64,
            nsec: a.ctimensec,
        }),
        fh: v.contains(SetattrValid::FH).then_some(a.fh),
        lock_owner: v.contains(SetattrValid::LOCKOWNER).then_some(a.lock_owner),
        kill_suidgid: v.contains(SetattrValid::KILL_SUIDGID),
    }
}

/// Negotiate INIT. Returns the reply, or an error text.
fn negotiate<F: Filesystem>(
    shared: &Shared<F>,
    arg: &InitIn,
) -> std::result::Result<(InitOut, Negotiated), String> {
    let mut offered = InitFlags::from_bits_truncate(arg.flags as u64);
    if offered.contains(InitFlags::INIT_EXT) {
        offered |= InitFlags::from_bits_truncate((arg.flags2 as u64) << 32);
    }
    let cfg = &shared.config;
    let mut want = shared.fs.capabilities()
        | InitFlags::ASYNC_READ
        | InitFlags::BIG_WRITES
        | InitFlags::MAX_PAGES
        | InitFlags::INIT_EXT
        | InitFlags::ABORT_ERROR
        | InitFlags::PARALLEL_DIROPS
        | InitFlags::ATOMIC_O_TRUNC
        | InitFlags::ASYNC_DIO;
    if cfg.idmap {
        want |= InitFlags::ALLOW_IDMAP;
    } else {
        want.remove(InitFlags::ALLOW_IDMAP);
    }
    if cfg.passthrough {
        want |= InitFlags::PASSTHROUGH;
    } else {
        want.remove(InitFlags::PASSTHROUGH);
    }
    if cfg.writeback_cache {
        want |= InitFlags::WRITEBACK_CACHE;
    } else {
        want.remove(InitFlags::WRITEBACK_CACHE);
    }
    // Never echo bits we do not understand.
    want.remove(InitFlags::OVER_IO_URING | InitFlags::INIT_RESERVED | InitFlags::REQUEST_TIMEOUT);
    // io_uring only when the session will register its queues right after
    // INIT: once granted, the kernel holds every request until it has.
    if cfg.io_uring != IoUringMode::Off {
        want |= InitFlags::OVER_IO_URING;
    }
    let granted = want & offered;
    if granted.contains(InitFlags::ALLOW_IDMAP)
        && !shared.default_permissions
        && !granted.contains(InitFlags::POSIX_ACL)
    {
        // Checked before mounting too; this is the last line of defence
        // against a connection the kernel would kill with ECONNREFUSED.
        return Err("FUSE_ALLOW_IDMAP needs the default_permissions mount option".into());
    }
    let minor = arg.minor.min(KERNEL_MINOR_VERSION);
    let max_write = cfg.max_write.max(4096);
    let out = InitOut {
        major: KERNEL_VERSION,
        minor: KERNEL_MINOR_VERSION,
        max_readahead: cfg
            .max_readahead
            .map_or(arg.max_readahead, |r| r.min(arg.max_readahead)),
        flags: granted.bits() as u32,
        max_background: 64,
        congestion_threshold: 48,
        max_write,
        time_gran: 1,
        max_pages: (max_write / 4096).clamp(1, u16::MAX as u32) as u16,
        map_alignment: 0,
        flags2: (granted.bits() >> 32) as u32,
        max_stack_depth: if granted.contains(InitFlags::PASSTHROUGH) {
            1
        } else {
            0
        },
        request_timeout: 0,
        unused: [0; 11],
    };
    let neg = Negotiated {
        minor,
        flags: granted,
        idmap: granted.contains(InitFlags::ALLOW_IDMAP),
        max_write,
    };
    Ok((out, neg))
}

/// Which requests may block long enough for INTERRUPT to matter.
fn interruptible(op: &Operation<'_>) -> bool {
    matches!(
        op,
        Operation::Setlkw { .. }
            | Operation::Read { .. }
            | Operation::Write { .. }
            | Operation::Fsync { .. }
            | Operation::Fsyncdir { .. }
            | Operation::Fallocate { .. }
            | Operation::CopyFileRange { .. }
            | Operation::CopyFileRange64 { .. }
            | Operation::Ioctl { .. }
            | Operation::Poll { .. }
    )
}

/// Handle one request. Returns true when the worker should stop.
fn dispatch<F: Filesystem>(
    shared: &Shared<F>,
    out: &mut dyn ReplySink,
    req: idfuse_abi::Request<'_>,
    scratch: &mut Scratch,
    index: usize,
) -> bool {
    let h = req.header;
    let unique = h.unique;
    let ino = h.nodeid;
    let neg = shared.negotiated.get();
    let idmap = neg.is_some_and(|n| n.idmap);
    let header_ids = (h.uid != INVALID_UIDGID && h.gid != INVALID_UIDGID).then_some(Caller {
        uid: h.uid,
        gid: h.gid,
    });
    if let Some(obs) = &shared.config.observer {
        obs(req.op.name(), header_ids);
    }
    let _span = tracing::trace_span!("req", unique, op = req.op.name(), ino).entered();

    // INIT comes first and alone.
    if let Operation::Init { arg } = &req.op {
        if arg.major < KERNEL_VERSION {
            tracing::error!("kernel speaks FUSE {}.{}, need 7.x", arg.major, arg.minor);
            reply_err(out, unique, Errno::PROTO);
            shared.set_init(InitState::Failed(format!(
                "the kernel speaks FUSE protocol {}.{}; idfuse needs 7.x",
                arg.major, arg.minor
            )));
            return false;
        }
        if arg.major > KERNEL_VERSION {
            // The kernel will send a new INIT with our major.
            let o = InitOut {
                major: KERNEL_VERSION,
                minor: KERNEL_MINOR_VERSION,
                ..InitOut::default()
            };
            reply_ok(out, unique, &[o.as_bytes()]);
            return false;
        }
        match negotiate(shared, arg) {
            Ok((o, n)) => {
                // Old kernels accept only the compat sizes.
                let len = if arg.minor < 5 {
                    idfuse_abi::COMPAT_INIT_OUT_SIZE
                } else if arg.minor < 23 {
                    idfuse_abi::COMPAT_22_INIT_OUT_SIZE
                } else {
                    core::mem::size_of::<InitOut>()
                };
                shared
                    .device
                    .passthrough
                    .store(n.flags.contains(InitFlags::PASSTHROUGH), Ordering::Relaxed);
                let _ = shared.negotiated.set(n);
                reply_ok(out, unique, &[&o.as_bytes()[..len]]);
                tracing::info!(minor = n.minor, flags = ?n.flags, "INIT negotiated");
                shared.fs.set_notifier(Notifier(shared.device.clone()));
                shared.fs.init(&n);
                shared.fs.notifier(&n, Notifier(shared.device.clone()));
                shared.set_init(InitState::Done);
            }
            Err(why) => {
                reply_err(out, unique, Errno::PROTO);
                shared.set_init(InitState::Failed(why));
            }
        }
        return false;
    }
    if neg.is_none() {
        tracing::warn!("request before INIT");
        if !req.op.is_forget() {
            reply_err(out, unique, Errno::IO);
        }
        return false;
    }

    if let Operation::Interrupt { arg } = &req.op {
        // No reply: the request is either marked or already answered.
        shared.interrupt(arg.unique);
        return false;
    }
    let slot = shared.slots.get(index).filter(|_| interruptible(&req.op));
    if let Some(slot) = slot {
        slot.interrupted.store(false, Ordering::Relaxed);
        slot.unique.store(unique, Ordering::Release);
    }
    let ctx = Context {
        unique,
        pid: h.pid,
        // The idmap contract: on an idmap session nothing but an inode's
        // creation carries ids, and the session never shows any.
        caller: if idmap { None } else { header_ids },
        interrupted: slot.map(|s| &s.interrupted),
        device: &shared.device,
    };
    let owner = Owner {
        uid: h.uid,
        gid: h.gid,
        supp_group: req.ext.supp_groups.and_then(|g| g.first()),
    };
    let dont_mask = neg.is_some_and(|n| n.flags.contains(InitFlags::DONT_MASK));
    let cmode = |mode: u32, umask: u32| CreateMode {
        mode,
        umask: if dont_mask { umask } else { 0 },
    };
    let fs = &*shared.fs;
    let forget = req.op.is_forget();
    let name = req.op.name();
    // A filesystem that panics must not take the worker, and the caller
    // waiting for this reply, down with it.
    let stop = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handle(fs, &ctx, out, unique, ino, req.op, &owner, cmode, scratch)
    })) {
        Ok(stop) => stop,
        Err(_) => {
            tracing::error!(unique, op = name, "the filesystem panicked; answered EIO");
            if !forget {
                reply_err(out, unique, Errno::IO);
            }
            false
        }
    };
    if let Some(slot) = slot {
        slot.unique.store(0, Ordering::Release);
    }
    stop
}

macro_rules! reply {
    ($out:expr, $unique:expr, $res:expr, |$v:pat_param| $body:expr) => {
        match $res {
            Ok($v) => $body,
            Err(e) => reply_err($out, $unique, e),
        }
    };
}

#[allow(clippy::too_many_arguments)]
fn handle<F: Filesystem>(
    fs: &F,
    ctx: &Context<'_>,
    out: &mut dyn ReplySink,
    unique: u64,
    ino: u64,
    op: Operation<'_>,
    owner: &Owner,
    cmode: impl Fn(u32, u32) -> CreateMode,
    scratch: &mut Scratch,
) -> bool {
    use Operation as O;
    // Every creating request must carry ids; if one does not, the kernel
    // broke its contract and we refuse rather than invent an owner.
    let owner_ok = owner.uid != INVALID_UIDGID && owner.gid != INVALID_UIDGID;
    match op {
        O::Lookup { name } => reply!(out, unique, fs.lookup(ctx, ino, name), |e| reply_ok(
            out,
            unique,
            &[entry_out(e).as_bytes()]
        )),
        O::Forget { arg } => fs.forget(ino, arg.nlookup),
        O::BatchForget { nodes, .. } => fs.batch_forget(&mut nodes.iter()),
        O::Getattr { arg } => {
            let fh = (arg.getattr_flags & idfuse_abi::GETATTR_FH != 0).then_some(arg.fh);
            reply!(out, unique, fs.getattr(ctx, ino, fh), |a| reply_ok(
                out,
                unique,
                &[attr_out(a).as_bytes()]
            ))
        }
        O::Setattr { arg } => {
            let sa = setattr_from(&arg);
            reply!(out, unique, fs.setattr(ctx, ino, &sa), |a| reply_ok(
                out,
                unique,
                &[attr_out(a).as_bytes()]
            ))
        }
        O::Readlink => reply!(out, unique, fs.readlink(ctx, ino), |t| reply_ok(
            out,
            unique,
            &[&t]
        )),
        O::Symlink { name, target } => {
            if !owner_ok {
                reply_err(out, unique, Errno::IO);
                return false;
            }
            reply!(
                out,
                unique,
                fs.symlink(ctx, ino, name, owner, target),
                |e| { reply_ok(out, unique, &[entry_out(e).as_bytes()]) }
            )
        }
        O::Mknod { arg, name } => {
            if !owner_ok {
                reply_err(out, unique, Errno::IO);
                return false;
            }
            reply!(
                out,
                unique,
                fs.mknod(ctx, ino, name, owner, cmode(arg.mode, arg.umask), arg.rdev),
                |e| reply_ok(out, unique, &[entry_out(e).as_bytes()])
            )
        }
        O::Mkdir { arg, name } => {
            if !owner_ok {
                reply_err(out, unique, Errno::IO);
                return false;
            }
            // The kernel sends mkdir's mode without the type bits.
            let mode = (arg.mode & 0o7777) | libc::S_IFDIR;
            reply!(
                out,
                unique,
                fs.mkdir(ctx, ino, name, owner, cmode(mode, arg.umask)),
                |e| reply_ok(out, unique, &[entry_out(e).as_bytes()])
            )
        }
        O::Unlink { name } => reply!(out, unique, fs.unlink(ctx, ino, name), |_v| reply_ok(
            out,
            unique,
            &[]
        )),
        O::Rmdir { name } => reply!(out, unique, fs.rmdir(ctx, ino, name), |_v| reply_ok(
            out,
            unique,
            &[]
        )),
        O::Rename { arg, name, newname } => reply!(
            out,
            unique,
            fs.rename(ctx, ino, name, arg.newdir, newname, 0, None),
            |_v| reply_ok(out, unique, &[])
        ),
        O::Rename2 { arg, name, newname } => {
            let wo = if arg.flags & idfuse_abi::RENAME_WHITEOUT != 0 {
                if !owner_ok {
                    reply_err(out, unique, Errno::IO);
                    return false;
                }
                Some(owner)
            } else {
                None
            };
            reply!(
                out,
                unique,
                fs.rename(ctx, ino, name, arg.newdir, newname, arg.flags, wo),
                |_v| reply_ok(out, unique, &[])
            )
        }
        O::Link { arg, newname } => {
            reply!(
                out,
                unique,
                fs.link(ctx, arg.oldnodeid, ino, newname),
                |e| { reply_ok(out, unique, &[entry_out(e).as_bytes()]) }
            )
        }
        O::Open { arg } => {
            let kill =
                OpenInFlags::from_bits_truncate(arg.open_flags).contains(OpenInFlags::KILL_SUIDGID);
            reply!(out, unique, fs.open(ctx, ino, arg.flags, kill), |o| {
                reply_ok(out, unique, &[open_out(o).as_bytes()])
            })
        }
        O::Read { arg } => {
            scratch.data.clear();
            reply!(
                out,
                unique,
                fs.read(ctx, ino, arg.fh, arg.offset, arg.size, &mut scratch.data),
                |_v| {
                    let n = scratch.data.len().min(arg.size as usize);
                    reply_ok(out, unique, &[&scratch.data[..n]])
                }
            )
        }
        O::Write { arg, data } => {
            let wf = WriteFlags::from_bits_truncate(arg.write_flags);
            reply!(
                out,
                unique,
                fs.write(ctx, ino, arg.fh, arg.offset, data, wf, arg.flags),
                |n| {
                    let o = WriteOut {
                        size: n,
                        padding: 0,
                    };
                    reply_ok(out, unique, &[o.as_bytes()])
                }
            )
        }
        O::Statfs => reply!(out, unique, fs.statfs(ctx, ino), |st| reply_ok(
            out,
            unique,
            &[StatfsOut { st }.as_bytes()]
        )),
        O::Release { arg } => {
            let rf = ReleaseFlags::from_bits_truncate(arg.release_flags);
            let lo = rf
                .contains(ReleaseFlags::FLOCK_UNLOCK)
                .then_some(arg.lock_owner);
            reply!(
                out,
                unique,
                fs.release(
                    ctx,
                    ino,
                    arg.fh,
                    arg.flags,
                    lo,
                    rf.contains(ReleaseFlags::FLUSH)
                ),
                |_v| reply_ok(out, unique, &[])
            )
        }
        O::Fsync { arg } => reply!(
            out,
            unique,
            fs.fsync(
                ctx,
                ino,
                arg.fh,
                arg.fsync_flags & idfuse_abi::FSYNC_FDATASYNC != 0
            ),
            |_v| reply_ok(out, unique, &[])
        ),
        O::Setxattr { arg, name, value } => {
            let sf = SetxattrFlags::from_bits_truncate(arg.setxattr_flags);
            reply!(
                out,
                unique,
                fs.setxattr(ctx, ino, name, value, arg.flags, sf),
                |_v| reply_ok(out, unique, &[])
            )
        }
        O::Getxattr { arg, name } => {
            reply!(out, unique, fs.getxattr(ctx, ino, name, arg.size), |x| {
                reply_xattr(out, unique, arg.size, x)
            })
        }
        O::Listxattr { arg } => reply!(out, unique, fs.listxattr(ctx, ino, arg.size), |x| {
            reply_xattr(out, unique, arg.size, x)
        }),
        O::Removexattr { name } => {
            reply!(out, unique, fs.removexattr(ctx, ino, name), |_v| reply_ok(
                out,
                unique,
                &[]
            ))
        }
        O::Flush { arg } => reply!(
            out,
            unique,
            fs.flush(ctx, ino, arg.fh, arg.lock_owner),
            |_v| reply_ok(out, unique, &[])
        ),
        O::Opendir { arg } => reply!(out, unique, fs.opendir(ctx, ino, arg.flags), |o| reply_ok(
            out,
            unique,
            &[open_out(o).as_bytes()]
        )),
        O::Readdir { arg } => {
            let mut dir = scratch
                .dir
                .take()
                .unwrap_or_else(|| DirBuf::new(arg.size as usize));
            dir.reset(arg.size as usize);
            reply!(
                out,
                unique,
                fs.readdir(ctx, ino, arg.fh, arg.offset, &mut dir),
                |_v| reply_ok(out, unique, &[dir.as_bytes()])
            );
            scratch.dir = Some(dir);
        }
        O::Readdirplus { arg } => {
            let mut dir = scratch
                .dir
                .take()
                .unwrap_or_else(|| DirBuf::new(arg.size as usize));
            dir.reset(arg.size as usize);
            let res = fs.readdirplus(ctx, ino, arg.fh, arg.offset, &mut DirPlusBuf(&mut dir));
            reply!(out, unique, res, |_v| reply_ok(
                out,
                unique,
                &[dir.as_bytes()]
            ));
            scratch.dir = Some(dir);
        }
        O::Releasedir { arg } => reply!(
            out,
            unique,
            fs.releasedir(ctx, ino, arg.fh, arg.flags),
            |_v| reply_ok(out, unique, &[])
        ),
        O::Fsyncdir { arg } => reply!(
            out,
            unique,
            fs.fsyncdir(
                ctx,
                ino,
                arg.fh,
                arg.fsync_flags & idfuse_abi::FSYNC_FDATASYNC != 0
            ),
            |_v| reply_ok(out, unique, &[])
        ),
        O::Getlk { arg } => reply!(
            out,
            unique,
            fs.getlk(ctx, ino, arg.fh, arg.owner, &arg.lk),
            |lk| reply_ok(out, unique, &[LkOut { lk }.as_bytes()])
        ),
        O::Setlk { arg } => reply!(
            out,
            unique,
            fs.setlk(
                ctx,
                ino,
                arg.fh,
                arg.owner,
                &arg.lk,
                false,
                arg.lk_flags & idfuse_abi::LK_FLOCK != 0
            ),
            |_v| reply_ok(out, unique, &[])
        ),
        O::Setlkw { arg } => reply!(
            out,
            unique,
            fs.setlk(
                ctx,
                ino,
                arg.fh,
                arg.owner,
                &arg.lk,
                true,
                arg.lk_flags & idfuse_abi::LK_FLOCK != 0
            ),
            |_v| reply_ok(out, unique, &[])
        ),
        O::Access { arg } => reply!(out, unique, fs.access(ctx, ino, arg.mask), |_v| reply_ok(
            out,
            unique,
            &[]
        )),
        O::Create { arg, name } => {
            if !owner_ok {
                reply_err(out, unique, Errno::IO);
                return false;
            }
            let kill =
                OpenInFlags::from_bits_truncate(arg.open_flags).contains(OpenInFlags::KILL_SUIDGID);
            reply!(
                out,
                unique,
                fs.create(
                    ctx,
                    ino,
                    name,
                    owner,
                    cmode(arg.mode, arg.umask),
                    arg.flags,
                    kill
                ),
                |(e, o)| {
                    reply_ok(
                        out,
                        unique,
                        &[entry_out(e).as_bytes(), open_out(o).as_bytes()],
                    )
                }
            )
        }
        O::Tmpfile { arg, name: _ } => {
            if !owner_ok {
                reply_err(out, unique, Errno::IO);
                return false;
            }
            reply!(
                out,
                unique,
                fs.tmpfile(ctx, ino, owner, cmode(arg.mode, arg.umask), arg.flags),
                |(e, o)| {
                    reply_ok(
                        out,
                        unique,
                        &[entry_out(e).as_bytes(), open_out(o).as_bytes()],
                    )
                }
            )
        }
        // Handled in `dispatch`, which owns the in-flight table.
        O::Interrupt { .. } => {}
        O::Bmap { arg } => reply!(
            out,
            unique,
            fs.bmap(ctx, ino, arg.blocksize, arg.block),
            |block| reply_ok(out, unique, &[BmapOut { block }.as_bytes()])
        ),
        O::Destroy => {
            fs.destroy();
            reply_ok(out, unique, &[]);
            return true;
        }
        O::Ioctl { arg, data } => {
            let input = &data[..data.len().min(arg.in_size as usize)];
            reply!(
                out,
                unique,
                fs.ioctl(
                    ctx,
                    ino,
                    arg.fh,
                    arg.flags,
                    arg.cmd,
                    arg.arg,
                    input,
                    arg.out_size
                ),
                |(result, data)| {
                    let head = IoctlOut {
                        result,
                        flags: 0,
                        in_iovs: 0,
                        out_iovs: 0,
                    };
                    let n = data.len().min(arg.out_size as usize);
                    reply_ok(out, unique, &[head.as_bytes(), &data[..n]])
                }
            )
        }
        O::Poll { arg } => reply!(
            out,
            unique,
            fs.poll(ctx, ino, arg.fh, arg.kh, arg.flags, arg.events),
            |revents| reply_ok(
                out,
                unique,
                &[PollOut {
                    revents,
                    padding: 0
                }
                .as_bytes()]
            )
        ),
        O::NotifyReply { arg, data } => fs.retrieve_reply(unique, ino, arg.offset, data),
        O::Fallocate { arg } => reply!(
            out,
            unique,
            fs.fallocate(ctx, ino, arg.fh, arg.offset, arg.length, arg.mode),
            |_v| reply_ok(out, unique, &[])
        ),
        O::Lseek { arg } => reply!(
            out,
            unique,
            fs.lseek(ctx, ino, arg.fh, arg.offset, arg.whence),
            |offset| reply_ok(out, unique, &[LseekOut { offset }.as_bytes()])
        ),
        O::CopyFileRange { arg } => reply!(
            out,
            unique,
            fs.copy_file_range(
                ctx,
                ino,
                arg.fh_in,
                arg.off_in,
                arg.nodeid_out,
                arg.fh_out,
                arg.off_out,
                arg.len,
                arg.flags
            ),
            |n| {
                let o = WriteOut {
                    size: n.min(u32::MAX as u64) as u32,
                    padding: 0,
                };
                reply_ok(out, unique, &[o.as_bytes()])
            }
        ),
        O::CopyFileRange64 { arg } => reply!(
            out,
            unique,
            fs.copy_file_range(
                ctx,
                ino,
                arg.fh_in,
                arg.off_in,
                arg.nodeid_out,
                arg.fh_out,
                arg.off_out,
                arg.len,
                arg.flags
            ),
            |n| {
                let o = idfuse_abi::CopyFileRangeOut { bytes_copied: n };
                reply_ok(out, unique, &[o.as_bytes()])
            }
        ),
        O::Syncfs { .. } => reply!(out, unique, fs.syncfs(ctx, ino), |_v| reply_ok(
            out,
            unique,
            &[]
        )),
        O::Statx { arg } => {
            let fh = (arg.getattr_flags & idfuse_abi::GETATTR_FH != 0).then_some(arg.fh);
            reply!(
                out,
                unique,
                fs.statx(ctx, ino, fh, arg.sx_flags, arg.sx_mask),
                |(stat, t)| {
                    let o = StatxOut {
                        attr_valid: t.as_secs(),
                        attr_valid_nsec: t.subsec_nanos(),
                        flags: 0,
                        spare: [0; 2],
                        stat,
                    };
                    reply_ok(out, unique, &[o.as_bytes()])
                }
            )
        }
        // DAX mappings exist only on virtiofs; a /dev/fuse session never
        // gets them, and ENOSYS is the protocol's "not supported".
        O::Setupmapping { .. } | O::Removemapping { .. } => reply_err(out, unique, Errno::NOSYS),
        // CUSE sessions are character devices, not filesystems.
        O::CuseInit { .. } => reply_err(out, unique, Errno::NOSYS),
        O::Init { .. } => reply_err(out, unique, Errno::PROTO),
        O::Unknown { opcode, .. } => {
            tracing::debug!(opcode, "unknown opcode, answered ENOSYS");
            reply_err(out, unique, Errno::NOSYS)
        }
    }
    false
}

fn reply_xattr(out: &mut dyn ReplySink, unique: u64, size: u32, x: Xattr) {
    match x {
        Xattr::Size(n) => reply_ok(
            out,
            unique,
            &[GetxattrOut {
                size: n,
                padding: 0,
            }
            .as_bytes()],
        ),
        Xattr::Data(d) => {
            if size == 0 {
                let o = GetxattrOut {
                    size: d.len() as u32,
                    padding: 0,
                };
                reply_ok(out, unique, &[o.as_bytes()])
            } else if d.len() > size as usize {
                reply_err(out, unique, Errno::RANGE)
            } else {
                reply_ok(out, unique, &[&d])
            }
        }
    }
}

impl<F: Filesystem> Shared<F> {
    /// Mark request `unique` interrupted, if a worker is serving it.
    pub(crate) fn interrupt(&self, unique: u64) {
        for slot in &self.slots {
            if slot.unique.load(Ordering::Acquire) == unique {
                slot.interrupted.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Drives a filesystem with raw request bytes instead of `/dev/fuse`, through
/// exactly the code path the workers use: for fuzzing the dispatch and for
/// tests of protocol corner cases. Replies go through a `SOCK_SEQPACKET`
/// socket pair and come back one message per reply.
pub struct Loopback<F: Filesystem> {
    shared: Arc<Shared<F>>,
    theirs: OwnedFd,
    ours: OwnedFd,
    scratch: Scratch,
}

impl<F: Filesystem> Loopback<F> {
    /// A loopback session over `fs`. `default_permissions` plays the role of
    /// the mount option.
    pub fn new(
        fs: Arc<F>,
        config: SessionConfig,
        default_permissions: bool,
    ) -> std::io::Result<Self> {
        use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(&theirs, 4 << 20);
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&ours, 4 << 20);
        let device = Device::new(theirs.try_clone()?);
        let shutdown = Arc::new(rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC,
        )?);
        Ok(Self {
            shared: Arc::new(Shared::new(
                fs,
                config,
                device,
                default_permissions,
                shutdown,
            )),
            theirs,
            ours,
            scratch: Scratch::default(),
        })
    }

    /// Feed one request (as `read(2)` on `/dev/fuse` would return it) and
    /// collect the replies and notifications written in answer.
    pub fn handle(&mut self, request: &[u8]) -> Vec<Vec<u8>> {
        process(
            &self.shared,
            &mut DevOut(self.theirs.as_fd()),
            request,
            &mut self.scratch,
            0,
            Via::Dev,
        );
        let mut out = Vec::new();
        let mut buf = vec![0u8; (self.shared.config.max_write as usize).max(1 << 16) + 4096];
        while let Ok(n) = rustix::io::read(&self.ours, &mut buf) {
            out.push(buf[..n].to_vec());
        }
        out
    }

    /// What INIT negotiated, once an INIT request was handled.
    pub fn negotiated(&self) -> Option<Negotiated> {
        self.shared.negotiated.get().copied()
    }
}
