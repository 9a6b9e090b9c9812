//! FUSE over io_uring (Linux 6.14+): the second transport.
//!
//! The kernel keeps one queue per possible CPU and hands a request to the
//! queue of the CPU its caller runs on. A server registers ring entries on
//! every queue (`FUSE_IO_URING_CMD_REGISTER`, an `IORING_OP_URING_CMD` on
//! the `/dev/fuse` fd, in an SQE128); each entry is a header buffer and a
//! payload buffer. A completion means a request sits in the entry; the
//! server answers in the same buffers and fetches the next request with one
//! `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`, so one `io_uring_enter` answers
//! and waits where `/dev/fuse` needs a `writev` and a `read`.
//!
//! Only the transport differs: the request bytes go through the same
//! `session::process` as a `/dev/fuse` read, and replies come back through a
//! `ReplySink`. What the ring does not carry stays on `/dev/fuse`, where
//! one worker keeps reading: INTERRUPT, FORGET and BATCH_FORGET (the kernel
//! sends them there), and notifications (written there by the session).
//!
//! The kernel holds every request from the moment INIT grants
//! `FUSE_OVER_IO_URING` until each queue has an entry, so the session asks
//! for it only after [`preflight`] says a ring can be made, and registers
//! before the mount is used. If a registration fails, the kernel turns the
//! ring off for the connection and requests go to `/dev/fuse` again.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use idfuse_abi::uring::{
    CMD_COMMIT_AND_FETCH, CMD_REGISTER, ENT_IN_OUT_OFFSET, IN_OUT_HEADER_SZ, OP_IN_OUT_SZ,
    REQ_HEADER_SIZE,
};
use idfuse_abi::{opcode, InHeader, OutHeader, UringCmdReq, UringEntInOut};
use io_uring::{cqueue, opcode as op, squeue, types, IoUring};
use zerocopy::{FromBytes, IntoBytes};

use crate::fs::Filesystem;
use crate::session::{process, ReplySink, Scratch, Shared, Via};

/// Whether a session carries its requests over io_uring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoUringMode {
    /// Use io_uring when the kernel offers it; otherwise `/dev/fuse`, with
    /// one log line that says why.
    #[default]
    Auto,
    /// Use io_uring or refuse to mount, saying what to change.
    On,
    /// Always `/dev/fuse`.
    Off,
}

impl IoUringMode {
    /// `IDFUSE_IO_URING` (auto, on, off) if set and valid, else `Auto`.
    pub fn from_env() -> Self {
        std::env::var("IDFUSE_IO_URING")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    }
}

impl std::str::FromStr for IoUringMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" | "yes" | "true" => Ok(Self::On),
            "off" | "no" | "false" => Ok(Self::Off),
            _ => Err(format!("`{s}`: expected auto, on or off")),
        }
    }
}

impl std::fmt::Display for IoUringMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        })
    }
}

/// The transport a session runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// `read`/`writev` on `/dev/fuse`.
    DevFuse,
    /// FUSE over io_uring.
    IoUring {
        /// Kernel queues (one per possible CPU).
        queues: usize,
        /// Ring threads serving them.
        threads: usize,
        /// Entries per queue per ring thread.
        depth: u32,
        /// Payload buffer of each entry, in bytes.
        payload: usize,
    },
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DevFuse => f.write_str("/dev/fuse"),
            Self::IoUring {
                queues,
                threads,
                depth,
                payload,
            } => write!(
                f,
                "io_uring ({queues} queues, {threads} ring threads, {depth} entries per queue and thread, {} KiB payload buffers)",
                payload / 1024
            ),
        }
    }
}

/// Requests a session received, by transport and opcode.
#[derive(Debug, Clone)]
pub struct TransportStats {
    /// The transport in use.
    pub transport: Transport,
    /// `(opcode, count)` of requests read from `/dev/fuse`.
    pub dev: Vec<(u32, u64)>,
    /// `(opcode, count)` of requests that came over the ring.
    pub ring: Vec<(u32, u64)>,
}

impl TransportStats {
    /// Requests read from `/dev/fuse`.
    pub fn dev_total(&self) -> u64 {
        self.dev.iter().map(|&(_, n)| n).sum()
    }
    /// Requests that came over the ring.
    pub fn ring_total(&self) -> u64 {
        self.ring.iter().map(|&(_, n)| n).sum()
    }
    /// `/dev/fuse` requests other than the ones the kernel always sends
    /// there once a ring is up (INIT, FORGET, BATCH_FORGET, INTERRUPT).
    pub fn dev_besides_ring_exempt(&self) -> u64 {
        self.dev
            .iter()
            .filter(|&&(o, _)| {
                !matches!(
                    o,
                    opcode::INIT | opcode::FORGET | opcode::BATCH_FORGET | opcode::INTERRUPT
                )
            })
            .map(|&(_, n)| n)
            .sum()
    }
}

const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// Number of possible CPUs: the kernel's number of ring queues.
pub fn possible_cpus() -> usize {
    let parse = |s: &str| -> Option<usize> {
        let mut n = 0;
        for part in s.trim().split(',').filter(|p| !p.is_empty()) {
            n += match part.split_once('-') {
                Some((a, b)) => b.parse::<usize>().ok()? - a.parse::<usize>().ok()? + 1,
                None => {
                    part.parse::<usize>().ok()?;
                    1
                }
            };
        }
        (n > 0).then_some(n)
    };
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse(&s))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// How many ring threads a session with `config` would run (0 without io_uring).
pub(crate) fn ring_threads(config: &crate::SessionConfig) -> usize {
    if config.io_uring == IoUringMode::Off {
        0
    } else if config.uring_threads > 0 {
        config.uring_threads
    } else {
        config.threads.max(possible_cpus())
    }
}

fn kernel_version() -> Option<(u32, u32, String)> {
    let rel = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let mut it = rel.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor, rel))
}

/// Whether this machine can carry FUSE requests over io_uring, or why not
/// (with what to do about it).
pub fn preflight() -> Result<(), String> {
    if let Some((major, minor, rel)) = kernel_version() {
        if (major, minor) < (6, 14) {
            return Err(format!(
                "this kernel is {rel}; FUSE over io_uring needs Linux 6.14 or newer"
            ));
        }
    }
    match std::fs::read_to_string(ENABLE_URING) {
        Ok(v) if v.trim() == "Y" || v.trim() == "1" => {}
        Ok(v) => {
            return Err(format!(
                "FUSE over io_uring is switched off in the kernel ({ENABLE_URING} is {}); switch it on as root with `echo Y > {ENABLE_URING}` (or boot with fuse.enable_uring=1)",
                v.trim()
            ))
        }
        Err(_) => {
            return Err(format!(
                "this kernel has no FUSE over io_uring ({ENABLE_URING} does not exist: it was built without CONFIG_FUSE_IO_URING)"
            ))
        }
    }
    match IoUring::<squeue::Entry128, cqueue::Entry>::builder().build(2) {
        Ok(_) => Ok(()),
        Err(e) => {
            let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            Err(match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => format!(
                    "io_uring is disabled for this process (sysctl kernel.io_uring_disabled = {sysctl}: 2 disables it for everyone, 1 for all but CAP_SYS_ADMIN and the group in kernel.io_uring_group); allow it with `sysctl -w kernel.io_uring_disabled=0`"
                ),
                Some(libc::ENOSYS) => {
                    "this kernel has no io_uring (built without CONFIG_IO_URING)".to_string()
                }
                _ => format!("cannot create an io_uring with 128-byte SQEs: {e}"),
            })
        }
    }
}

/// The user_data of the shutdown poll.
const SHUTDOWN: u64 = u64::MAX;
/// Room before the payload for the request header and the opcode's
/// argument, so that a large request decodes in place.
const PREFIX: usize = 4096;
/// Requests whose payload is at most this long are copied out of the ring
/// buffer before decoding, so the reply can be written straight into it.
const SMALL: usize = 16 << 10;

#[repr(C, align(64))]
struct HeaderBuf([u8; REQ_HEADER_SIZE]);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Register,
    Commit,
}

/// One ring entry: the buffers the kernel writes requests into and reads
/// replies from. Their addresses are registered, so they never move.
struct Ent {
    header: Box<HeaderBuf>,
    /// `PREFIX` bytes of room, then the payload buffer.
    region: Box<[u8]>,
    iov: Box<[libc::iovec; 2]>,
    qid: u16,
    dev: std::os::fd::RawFd,
    commit_id: u64,
    last: Cmd,
    /// The kernel holds a command for this entry.
    armed: bool,
}

impl Ent {
    fn new(qid: u16, dev: std::os::fd::RawFd, payload: usize) -> Self {
        let mut header = Box::new(HeaderBuf([0; REQ_HEADER_SIZE]));
        let mut region = vec![0u8; PREFIX + payload].into_boxed_slice();
        let iov = Box::new([
            libc::iovec {
                iov_base: header.0.as_mut_ptr().cast(),
                iov_len: REQ_HEADER_SIZE,
            },
            libc::iovec {
                iov_base: region[PREFIX..].as_mut_ptr().cast(),
                iov_len: payload,
            },
        ]);
        Self {
            header,
            region,
            iov,
            qid,
            dev,
            commit_id: 0,
            last: Cmd::Register,
            armed: false,
        }
    }

    fn sqe(&self, index: usize) -> squeue::Entry128 {
        let (cmd_op, commit_id) = match self.last {
            Cmd::Register => (CMD_REGISTER, 0),
            Cmd::Commit => (CMD_COMMIT_AND_FETCH, self.commit_id),
        };
        let req = UringCmdReq {
            flags: 0,
            commit_id,
            qid: self.qid,
            padding: [0; 6],
        };
        let mut cmd = [0u8; 80];
        cmd[..core::mem::size_of::<UringCmdReq>()].copy_from_slice(req.as_bytes());
        // A plain fd, not a registered file: a registered file would keep
        // /dev/fuse open until the ring's asynchronous teardown, so a
        // killed daemon's connection would end later than its process.
        let mut b = op::UringCmd80::new(types::Fd(self.dev), cmd_op).cmd(cmd);
        if self.last == Cmd::Register {
            b = b.addr(Some(self.iov.as_ptr() as u64));
        }
        let mut e = b.build().user_data(index as u64);
        if self.last == Cmd::Register {
            set_sqe_len(&mut e, 2);
        }
        e
    }
}

/// Set `sqe->len`. REGISTER passes its two buffers as an iovec array in
/// `addr`/`len`, and the io-uring crate's `UringCmd80` builder sets `addr`
/// but has no setter for `len`; `Entry128` is `#[repr(C)]` over the
/// kernel's `struct io_uring_sqe`, where `len` is the u32 at byte 24.
fn set_sqe_len(e: &mut squeue::Entry128, len: u32) {
    const _: () = assert!(core::mem::size_of::<squeue::Entry128>() == 128);
    // SAFETY: in bounds of a 128-byte repr(C) value we own; an unaligned
    // write of a plain integer.
    unsafe {
        (e as *mut squeue::Entry128)
            .cast::<u8>()
            .add(24)
            .cast::<u32>()
            .write_unaligned(len)
    }
}

/// A reply written straight into the entry's buffers.
struct Direct<'a> {
    header: &'a mut [u8; REQ_HEADER_SIZE],
    payload: &'a mut [u8],
    done: bool,
}

impl ReplySink for Direct<'_> {
    fn reply(&mut self, unique: u64, error: i32, parts: &[&[u8]]) {
        if std::mem::replace(&mut self.done, true) {
            tracing::warn!(unique, "a second reply to one ring request was dropped");
            return;
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let (error, n) = if total > self.payload.len() {
            tracing::warn!(
                unique,
                total,
                "reply larger than the ring's payload buffer; answered EIO"
            );
            (-libc::EIO, 0)
        } else {
            let mut at = 0;
            for p in parts {
                self.payload[at..at + p.len()].copy_from_slice(p);
                at += p.len();
            }
            (error, total)
        };
        write_out_header(self.header, unique, error, n);
    }
}

/// A reply kept aside while the request still borrows the payload buffer
/// (large requests decode in place), copied in afterwards.
struct Staged<'a> {
    buf: &'a mut Vec<u8>,
    unique: u64,
    error: i32,
    done: bool,
}

impl ReplySink for Staged<'_> {
    fn reply(&mut self, unique: u64, error: i32, parts: &[&[u8]]) {
        if std::mem::replace(&mut self.done, true) {
            tracing::warn!(unique, "a second reply to one ring request was dropped");
            return;
        }
        self.buf.clear();
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.unique = unique;
        self.error = error;
    }
}

fn write_out_header(header: &mut [u8; REQ_HEADER_SIZE], unique: u64, error: i32, n: usize) {
    let oh = OutHeader {
        len: (core::mem::size_of::<OutHeader>() + n) as u32,
        error,
        unique,
    };
    header[..core::mem::size_of::<OutHeader>()].copy_from_slice(oh.as_bytes());
    // payload_sz is the u32 at offset 16 of fuse_uring_ent_in_out.
    header[ENT_IN_OUT_OFFSET + 16..ENT_IN_OUT_OFFSET + 20]
        .copy_from_slice(&(n as u32).to_ne_bytes());
}

/// Per-thread buffers.
struct Work {
    scratch: Scratch,
    request: Vec<u8>,
    staged: Vec<u8>,
}

/// Answer the request in `ent`. The entry is committed afterwards whatever
/// happens here: an unanswered entry would be lost to its queue.
fn serve<F: Filesystem>(shared: &Shared<F>, ent: &mut Ent, work: &mut Work, slot: usize) {
    let hsz = core::mem::size_of::<InHeader>();
    let header = &mut ent.header.0;
    let Ok((inh, _)) = InHeader::read_from_prefix(&header[..]) else {
        return;
    };
    let Ok((eio, _)) = UringEntInOut::read_from_prefix(&header[ENT_IN_OUT_OFFSET..]) else {
        return;
    };
    ent.commit_id = eio.commit_id;
    let payload_sz = eio.payload_sz as usize;
    let payload_cap = ent.region.len() - PREFIX;
    // The opcode's fixed argument came in op_in; its size is what the
    // header's total length leaves after the header and the payload.
    let op_sz = (inh.len as usize).checked_sub(hsz + payload_sz);
    let Some(op_sz) = op_sz.filter(|&n| n <= OP_IN_OUT_SZ && payload_sz <= payload_cap) else {
        tracing::warn!(
            unique = inh.unique,
            len = inh.len,
            payload_sz,
            "malformed ring request; answered EIO"
        );
        write_out_header(header, inh.unique, -libc::EIO, 0);
        return;
    };
    let op_in = IN_OUT_HEADER_SZ..IN_OUT_HEADER_SZ + op_sz;
    if payload_sz <= SMALL {
        // Copy the request out; the reply goes straight into the ring.
        let req = &mut work.request;
        req.clear();
        req.extend_from_slice(&header[..hsz]);
        req.extend_from_slice(&header[op_in]);
        req.extend_from_slice(&ent.region[PREFIX..PREFIX + payload_sz]);
        let mut out = Direct {
            header,
            payload: &mut ent.region[PREFIX..],
            done: false,
        };
        process(shared, &mut out, req, &mut work.scratch, slot, Via::Ring);
        if !out.done {
            // NOTIFY_REPLY and the like: nothing to say, but the entry must
            // go back to the kernel.
            write_out_header(out.header, inh.unique, 0, 0);
        }
    } else {
        // A large request (a WRITE) decodes in place: header and argument
        // go just before the payload.
        let start = PREFIX - hsz - op_sz;
        ent.region[start..start + hsz].copy_from_slice(&header[..hsz]);
        ent.region[start + hsz..PREFIX].copy_from_slice(&header[op_in]);
        work.staged.clear();
        let mut out = Staged {
            buf: &mut work.staged,
            unique: inh.unique,
            error: 0,
            done: false,
        };
        process(
            shared,
            &mut out,
            &ent.region[start..PREFIX + payload_sz],
            &mut work.scratch,
            slot,
            Via::Ring,
        );
        let (unique, error) = (out.unique, out.error);
        let mut direct = Direct {
            header,
            payload: &mut ent.region[PREFIX..],
            done: false,
        };
        direct.reply(unique, error, &[&work.staged]);
    }
}

/// What `start` brings up.
pub(crate) struct Started {
    /// Ring threads that registered at least one entry; they run until the
    /// connection ends or the session stops, whatever `result` says.
    pub(crate) handles: Vec<JoinHandle<()>>,
    /// The transport, or why the ring is not carrying requests.
    pub(crate) result: Result<Transport, String>,
}

/// Register entries on every queue and start the ring threads. Called
/// after INIT granted `FUSE_OVER_IO_URING`.
pub(crate) fn start<F: Filesystem>(shared: &Arc<Shared<F>>) -> Started {
    let cfg = &shared.config;
    let queues = possible_cpus();
    let threads = ring_threads(cfg).max(1);
    let depth = cfg.uring_depth.clamp(1, 1024);
    let max_write = shared
        .negotiated
        .get()
        .map_or(cfg.max_write, |n| n.max_write) as usize;
    // The kernel's max_payload_sz: max(FUSE_MIN_READ_BUFFER, max_write,
    // max_pages * PAGE_SIZE), and max_pages is max_write / 4096 here.
    let payload = max_write.max(idfuse_abi::MIN_READ_BUFFER);
    let (tx, rx) = mpsc::channel::<Result<(), String>>();
    let mut handles = Vec::new();
    let base_slot = cfg.threads.max(1);
    for t in 0..threads {
        // Which queues thread t serves, and the CPUs it runs on.
        let qids: Vec<u16> = if threads <= queues {
            (0..queues)
                .filter(|q| q % threads == t)
                .map(|q| q as u16)
                .collect()
        } else {
            vec![(t % queues) as u16]
        };
        let shared2 = shared.clone();
        let tx2 = tx.clone();
        shared.running.fetch_add(1, Ordering::SeqCst);
        let h = std::thread::Builder::new()
            .name(format!("idfuse-ring-{t}"))
            .spawn(move || {
                ring_thread(&shared2, &qids, depth, payload, base_slot + t, tx2);
                shared2.running.fetch_sub(1, Ordering::SeqCst);
            });
        match h {
            Ok(h) => handles.push(h),
            Err(e) => {
                shared.running.fetch_sub(1, Ordering::SeqCst);
                let _ = tx.send(Err(format!("spawning a ring thread: {e}")));
            }
        }
    }
    drop(tx);
    let mut failure = None;
    for _ in 0..threads {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                failure.get_or_insert("a ring thread did not report within 10 s".into());
                break;
            }
        }
    }
    let result = match failure {
        None => Ok(Transport::IoUring {
            queues,
            threads,
            depth,
            payload,
        }),
        Some(e) => {
            // The kernel holds requests until every queue has an entry, and
            // gives the ring up only when a registration fails: make sure
            // one did, so requests flow on /dev/fuse.
            poison(shared.device.fd());
            Err(e)
        }
    };
    Started { handles, result }
}

/// Submit a REGISTER the kernel must refuse (one iovec instead of two).
/// A refused registration turns io_uring off for the connection and
/// releases the requests the kernel was holding for the ring.
fn poison(dev: BorrowedFd<'_>) {
    let Ok(mut ring) = IoUring::<squeue::Entry128, cqueue::Entry>::builder().build(2) else {
        return;
    };
    let iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }];
    let mut e = op::UringCmd80::new(types::Fd(dev.as_raw_fd()), CMD_REGISTER)
        .addr(Some(iov.as_ptr() as u64))
        .build()
        .user_data(1);
    set_sqe_len(&mut e, 1);
    // SAFETY: `iov` outlives the submission, which we wait for.
    if unsafe { ring.submission().push(&e) }.is_ok() {
        let _ = ring.submit_and_wait(1);
    }
}

fn pin_to(cpus: &[u16]) {
    let mut set = rustix::thread::CpuSet::new();
    for &c in cpus {
        if usize::from(c) < rustix::thread::CpuSet::MAX_CPU {
            set.set(usize::from(c));
        }
    }
    if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
        tracing::debug!("cannot pin a ring thread to CPUs {cpus:?}: {e}");
    }
}

fn ring_thread<F: Filesystem>(
    shared: &Shared<F>,
    qids: &[u16],
    depth: u32,
    payload: usize,
    slot: usize,
    ready: mpsc::Sender<Result<(), String>>,
) {
    pin_to(qids);
    let n = qids.len() * depth as usize;
    // Only this thread submits, and it always waits for completions in
    // io_uring_enter: with DEFER_TASKRUN the kernel hands a request over
    // (task work) at that wait instead of interrupting the thread, about 5%
    // more 4 KiB O_DIRECT reads per second on two cores.
    let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
        .setup_cqsize((2 * n + 2) as u32)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build((n + 1).next_power_of_two() as u32);
    let mut ring = match ring {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(format!("io_uring_setup: {e}")));
            return;
        }
    };
    let dev = shared.device.fd().as_raw_fd();
    let mut ents: Vec<Ent> = qids
        .iter()
        .flat_map(|&q| (0..depth).map(move |_| q))
        .map(|q| Ent::new(q, dev, payload))
        .collect();
    let shutdown = op::PollAdd::new(types::Fd(shared.shutdown.as_raw_fd()), libc::POLLIN as u32)
        .build()
        .user_data(SHUTDOWN);
    {
        let mut sq = ring.submission();
        // SAFETY: the entries' buffers and iovecs live in `ents`, which
        // outlives every command (see the end of this function).
        unsafe {
            let _ = sq.push(&shutdown.into());
            for (i, e) in ents.iter_mut().enumerate() {
                e.armed = true;
                let _ = sq.push(&e.sqe(i));
            }
        }
    }
    let mut pending: Vec<(u64, i32)> = Vec::with_capacity(2 * n + 2);
    // The registrations are issued inside this submit; a refused one has
    // completed with its error by the time it returns.
    let mut registered = true;
    match ring.submit() {
        Ok(_) => {
            for c in ring.completion() {
                pending.push((c.user_data(), c.result()));
            }
            for &(ud, res) in &pending {
                if ud != SHUTDOWN && res < 0 && res != -libc::EAGAIN && res != -libc::EINTR {
                    registered = false;
                    let msg = format!(
                        "FUSE_IO_URING_CMD_REGISTER failed: {}",
                        std::io::Error::from_raw_os_error(-res)
                    );
                    let _ = ready.send(Err(msg));
                    break;
                }
            }
        }
        Err(e) => {
            let _ = ready.send(Err(format!("io_uring_enter: {e}")));
            return;
        }
    }
    if registered {
        let _ = ready.send(Ok(()));
    }
    drop(ready);
    let mut work = Work {
        scratch: Scratch::default(),
        request: Vec::with_capacity(SMALL + 512),
        staged: Vec::new(),
    };
    let mut stop = false;
    loop {
        for (ud, res) in pending.drain(..) {
            if ud == SHUTDOWN {
                stop = true;
                continue;
            }
            let Some(e) = ents.get_mut(ud as usize) else {
                continue;
            };
            match res {
                0 => {
                    serve(shared, e, &mut work, slot);
                    e.last = Cmd::Commit;
                }
                r if r == -libc::EAGAIN || r == -libc::EINTR => {}
                r => {
                    // ENOTCONN/ECONNABORTED: the connection ended;
                    // ECANCELED: the ring is going away.
                    e.armed = false;
                    if r != -libc::ENOTCONN && r != -libc::ECONNABORTED && r != -libc::ECANCELED {
                        tracing::warn!(
                            "ring entry of queue {} ended: {}",
                            e.qid,
                            std::io::Error::from_raw_os_error(-r)
                        );
                    }
                    continue;
                }
            }
            let sqe = e.sqe(ud as usize);
            // SAFETY: as above; the queue has room for every entry plus
            // the shutdown poll.
            if unsafe { ring.submission().push(&sqe) }.is_err() {
                tracing::error!("ring submission queue full; entry dropped");
                e.armed = false;
            }
        }
        if stop || !ents.iter().any(|e| e.armed) {
            break;
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => {
                tracing::error!("io_uring_enter failed: {e}; ring thread stops");
                break;
            }
        }
        for c in ring.completion() {
            pending.push((c.user_data(), c.result()));
        }
    }
    let armed = ents.iter().filter(|e| e.armed).count();
    // Close the ring first: from then on the kernel no longer touches the
    // entries' buffers. If it still held commands for some, keep the
    // buffers anyway rather than risk a late write into freed memory.
    drop(ring);
    if armed > 0 {
        tracing::debug!("{armed} ring entries still registered at exit; their buffers are kept");
        std::mem::forget(ents);
    }
}
