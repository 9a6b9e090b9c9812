//! The session's dispatch fed with arbitrary request streams: after a valid
//! INIT, the input is cut into requests (opcode, node id, header ids, body)
//! and each goes through the workers' decode/dispatch path. No panic, no
//! unbounded allocation, and every request except FORGETs gets exactly one
//! reply.
#![no_main]

use std::ffi::OsStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use idfuse::abi::{opcode, InHeader, InitFlags, InitIn};
use idfuse::*;
use libfuzzer_sys::fuzz_target;
use zerocopy::IntoBytes;

/// Answers everything with plausible values and counts the calls.
#[derive(Default)]
struct Recorder {
    calls: Mutex<u64>,
}

impl Recorder {
    fn hit(&self) {
        if let Ok(mut c) = self.calls.lock() {
            *c += 1;
        }
    }
    fn entry(&self, ino: u64) -> Result<Entry> {
        self.hit();
        Ok(Entry {
            ino: ino.max(2),
            generation: 0,
            attr: Attr { ino, mode: libc::S_IFREG | 0o644, nlink: 1, ..Attr::default() },
            entry_timeout: Duration::ZERO,
            attr_timeout: Duration::ZERO,
        })
    }
    fn attr(&self, ino: u64) -> Result<AttrReply> {
        self.hit();
        Ok(AttrReply { attr: Attr { ino, mode: libc::S_IFDIR | 0o755, nlink: 2, ..Attr::default() }, timeout: Duration::ZERO })
    }
}

impl Filesystem for Recorder {
    fn capabilities(&self) -> InitFlags {
        InitFlags::POSIX_ACL | InitFlags::DONT_MASK | InitFlags::SETXATTR_EXT | InitFlags::DO_READDIRPLUS
    }
    fn lookup(&self, _: &Context<'_>, p: u64, _: &OsStr) -> Result<Entry> {
        self.entry(p + 1)
    }
    fn getattr(&self, _: &Context<'_>, ino: u64, _: Option<u64>) -> Result<AttrReply> {
        self.attr(ino)
    }
    fn setattr(&self, _: &Context<'_>, ino: u64, _: &SetAttr) -> Result<AttrReply> {
        self.attr(ino)
    }
    fn readlink(&self, _: &Context<'_>, _: u64) -> Result<Vec<u8>> {
        self.hit();
        Ok(b"target".to_vec())
    }
    fn mknod(&self, _: &Context<'_>, p: u64, _: &OsStr, _: &Owner, _: CreateMode, _: u32) -> Result<Entry> {
        self.entry(p + 1)
    }
    fn mkdir(&self, _: &Context<'_>, p: u64, _: &OsStr, _: &Owner, _: CreateMode) -> Result<Entry> {
        self.entry(p + 1)
    }
    fn symlink(&self, _: &Context<'_>, p: u64, _: &OsStr, _: &Owner, _: &OsStr) -> Result<Entry> {
        self.entry(p + 1)
    }
    fn link(&self, _: &Context<'_>, ino: u64, _: u64, _: &OsStr) -> Result<Entry> {
        self.entry(ino)
    }
    fn read(&self, _: &Context<'_>, _: u64, _: u64, _: u64, size: u32, buf: &mut Vec<u8>) -> Result<()> {
        self.hit();
        buf.resize((size as usize).min(1 << 16), 7);
        Ok(())
    }
    fn write(&self, _: &Context<'_>, _: u64, _: u64, _: u64, data: &[u8], _: WriteFlags, _: u32) -> Result<u32> {
        self.hit();
        Ok(data.len() as u32)
    }
    fn readdir(&self, _: &Context<'_>, _: u64, _: u64, off: u64, out: &mut DirBuf) -> Result<()> {
        self.hit();
        for i in off..off + 4 {
            if !out.push(i + 2, i + 1, libc::DT_REG as u32, b"name") {
                break;
            }
        }
        Ok(())
    }
    fn readdirplus(&self, _: &Context<'_>, _: u64, _: u64, off: u64, out: &mut DirPlusBuf<'_>) -> Result<()> {
        for i in off..off + 4 {
            let e = self.entry(i + 2)?;
            if !out.push(&e, i + 1, libc::DT_REG as u32, OsStr::new("name")) {
                break;
            }
        }
        Ok(())
    }
    fn getxattr(&self, _: &Context<'_>, _: u64, _: &OsStr, size: u32) -> Result<Xattr> {
        self.hit();
        Ok(if size == 0 { Xattr::Size(3) } else { Xattr::Data(b"abc".to_vec()) })
    }
    fn listxattr(&self, _: &Context<'_>, _: u64, size: u32) -> Result<Xattr> {
        self.hit();
        Ok(if size == 0 { Xattr::Size(6) } else { Xattr::Data(b"user.a\0".to_vec()) })
    }
    fn create(&self, _: &Context<'_>, p: u64, _: &OsStr, _: &Owner, _: CreateMode, _: u32, _: bool) -> Result<(Entry, Opened)> {
        Ok((self.entry(p + 1)?, Opened::default()))
    }
    fn tmpfile(&self, _: &Context<'_>, p: u64, _: &Owner, _: CreateMode, _: u32) -> Result<(Entry, Opened)> {
        Ok((self.entry(p + 1)?, Opened::default()))
    }
    fn lseek(&self, _: &Context<'_>, _: u64, _: u64, off: u64, _: u32) -> Result<u64> {
        self.hit();
        Ok(off)
    }
    fn copy_file_range(&self, _: &Context<'_>, _: u64, _: u64, _: u64, _: u64, _: u64, _: u64, len: u64, _: u64) -> Result<u64> {
        self.hit();
        Ok(len)
    }
}

struct Harness {
    lb: Mutex<Loopback<Recorder>>,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let cfg = SessionConfig { threads: 1, max_write: 1 << 17, ..SessionConfig::default() };
        let mut lb = Loopback::new(Arc::new(Recorder::default()), cfg, true).expect("loopback");
        let offered = InitFlags::from_bits_truncate(0x73ff_fffb | (0x5fd << 32));
        let init = InitIn { major: 7, minor: 45, max_readahead: 1 << 17, flags: offered.bits() as u32, flags2: (offered.bits() >> 32) as u32, unused: [0; 11] };
        lb.handle(&request(opcode::INIT, 1, 0, 0, init.as_bytes()));
        assert!(lb.negotiated().is_some(), "INIT negotiated");
        Harness { lb: Mutex::new(lb) }
    })
}

fn request(op: u32, nodeid: u64, uid: u32, extlen: u16, body: &[u8]) -> Vec<u8> {
    let h = InHeader { len: (40 + body.len()) as u32, opcode: op, unique: 2, nodeid, uid, gid: uid, pid: 1, total_extlen: extlen, padding: 0 };
    let mut v = h.as_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let Ok(mut lb) = h.lb.lock() else { return };
    let mut rest = data;
    // Each record: opcode (1 byte, 0..=63), node id (1), uid selector (1),
    // extension length in 8-byte units (1), body length (2), body.
    while rest.len() >= 6 {
        let op = u32::from(rest[0] % 64);
        let nodeid = u64::from(rest[1]);
        let uid = if rest[2] & 1 == 0 { u32::MAX } else { u32::from(rest[2]) };
        let extlen = u16::from(rest[3] % 4);
        let len = (usize::from(u16::from_le_bytes([rest[4], rest[5]]))).min(rest.len() - 6);
        let body = &rest[6..6 + len];
        rest = &rest[6 + len..];
        if op == opcode::INIT || op == opcode::DESTROY {
            continue;
        }
        let replies = lb.handle(&request(op, nodeid, uid, extlen, body));
        let silent = op == opcode::FORGET || op == opcode::BATCH_FORGET || op == opcode::INTERRUPT || op == opcode::NOTIFY_REPLY;
        if silent {
            // FORGET and friends never get a reply; a decode error on them
            // is dropped too.
            assert!(replies.len() <= 1);
        } else {
            assert_eq!(replies.len(), 1, "opcode {op}: exactly one reply");
        }
    }
});
