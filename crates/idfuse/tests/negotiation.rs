//! INIT negotiation and protocol corner cases, driven through `Loopback`
//! (the workers' own decode/dispatch path, without a kernel).

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use idfuse::abi::{opcode, InHeader, InitFlags, InitIn, InitOut, OutHeader, INVALID_UIDGID};
use idfuse::{Attr, AttrReply, Context, Entry, Errno, Filesystem, Loopback, SessionConfig};
use zerocopy::{FromBytes, IntoBytes};

struct Tiny(InitFlags);

impl Filesystem for Tiny {
    fn capabilities(&self) -> InitFlags {
        self.0
    }
    fn lookup(&self, _: &Context<'_>, _: u64, _: &OsStr) -> idfuse::Result<Entry> {
        Err(Errno::NOENT)
    }
    fn getattr(&self, _: &Context<'_>, ino: u64, _: Option<u64>) -> idfuse::Result<AttrReply> {
        Ok(AttrReply {
            attr: Attr {
                ino,
                mode: libc::S_IFDIR | 0o755,
                nlink: 2,
                ..Attr::default()
            },
            timeout: Duration::ZERO,
        })
    }
}

fn req(op: u32, unique: u64, body: &[u8]) -> Vec<u8> {
    let h = InHeader {
        len: (40 + body.len()) as u32,
        opcode: op,
        unique,
        nodeid: 1,
        uid: INVALID_UIDGID,
        gid: INVALID_UIDGID,
        pid: 1,
        total_extlen: 0,
        padding: 0,
    };
    let mut v = h.as_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn init(major: u32, minor: u32, offered: InitFlags) -> Vec<u8> {
    let arg = InitIn {
        major,
        minor,
        max_readahead: 131072,
        flags: offered.bits() as u32,
        flags2: (offered.bits() >> 32) as u32,
        unused: [0; 11],
    };
    req(opcode::INIT, 2, arg.as_bytes())
}

fn header(reply: &[u8]) -> OutHeader {
    OutHeader::read_from_prefix(reply)
        .expect("reply has a header")
        .0
}

fn init_out(reply: &[u8]) -> InitOut {
    let mut out = InitOut::default();
    let body = &reply[16..];
    out.as_mut_bytes()[..body.len()].copy_from_slice(body);
    out
}

/// What Linux 6.18.44 offers (kernel-contract §1.4).
fn kernel_offer() -> InitFlags {
    InitFlags::from_bits_truncate(0x73ff_fffb | (0x5fd << 32))
}

fn loopback(caps: InitFlags, cfg: SessionConfig, default_permissions: bool) -> Loopback<Tiny> {
    Loopback::new(Arc::new(Tiny(caps)), cfg, default_permissions).expect("loopback")
}

#[test]
fn grants_only_what_the_kernel_offered_and_fills_flags2() {
    let mut lb = loopback(
        InitFlags::POSIX_ACL | InitFlags::DONT_MASK | InitFlags::OVER_IO_URING,
        SessionConfig {
            io_uring: idfuse::IoUringMode::Off,
            ..SessionConfig::default()
        },
        true,
    );
    let offered = kernel_offer() - InitFlags::DONT_MASK;
    let replies = lb.handle(&init(7, 45, offered));
    assert_eq!(replies.len(), 1);
    assert_eq!(header(&replies[0]).error, 0);
    let out = init_out(&replies[0]);
    let granted = InitFlags::from_bits_truncate(out.flags as u64 | ((out.flags2 as u64) << 32));
    assert!(
        granted.contains(InitFlags::INIT_EXT),
        "flags2 is only read with INIT_EXT"
    );
    assert!(
        granted.contains(InitFlags::ALLOW_IDMAP),
        "idmap is on by default: {granted:?}"
    );
    assert!(granted.contains(InitFlags::POSIX_ACL));
    assert!(
        !granted.contains(InitFlags::DONT_MASK),
        "not offered, so not granted"
    );
    assert!(
        !granted.contains(InitFlags::OVER_IO_URING),
        "io_uring off: never asked for"
    );
    assert!(
        (granted - kernel_offer()).is_empty(),
        "nothing beyond the offer: {granted:?}"
    );
    assert_eq!((out.major, out.max_write), (7, 1 << 20));
    let n = lb.negotiated().expect("negotiated");
    assert!(n.idmap);
}

#[test]
fn down_negotiates_the_minor_version() {
    let mut lb = loopback(InitFlags::empty(), SessionConfig::default(), true);
    let replies = lb.handle(&init(7, 31, kernel_offer() - InitFlags::INIT_EXT));
    assert_eq!(header(&replies[0]).error, 0);
    assert_eq!(lb.negotiated().expect("negotiated").minor, 31);
    // Without INIT_EXT in the offer the high flags are not offered at all.
    assert!(!lb.negotiated().unwrap().idmap);
}

#[test]
fn answers_a_newer_major_with_ours() {
    let mut lb = loopback(InitFlags::empty(), SessionConfig::default(), true);
    let replies = lb.handle(&init(8, 0, kernel_offer()));
    let out = init_out(&replies[0]);
    assert_eq!(
        (out.major, out.minor),
        (7, 45),
        "the kernel then resends INIT with 7"
    );
    assert!(lb.negotiated().is_none());
}

#[test]
fn refuses_idmap_without_default_permissions() {
    let mut lb = loopback(InitFlags::empty(), SessionConfig::default(), false);
    let replies = lb.handle(&init(7, 45, kernel_offer()));
    assert_eq!(header(&replies[0]).error, -libc::EPROTO);
    assert!(lb.negotiated().is_none());
    // With FUSE_POSIX_ACL the kernel turns default_permissions on itself.
    let mut lb = loopback(InitFlags::POSIX_ACL, SessionConfig::default(), false);
    let replies = lb.handle(&init(7, 45, kernel_offer()));
    assert_eq!(header(&replies[0]).error, 0);
}

#[test]
fn idmap_off_is_not_offered() {
    let cfg = SessionConfig {
        idmap: false,
        ..SessionConfig::default()
    };
    let mut lb = loopback(InitFlags::ALLOW_IDMAP, cfg, false);
    let out = init_out(&lb.handle(&init(7, 45, kernel_offer()))[0]);
    assert_eq!(out.flags2 & (1 << 8), 0, "ALLOW_IDMAP (bit 40) not sent");
}

#[test]
fn protocol_corner_cases_get_answers() {
    let mut lb = loopback(InitFlags::empty(), SessionConfig::default(), true);
    // Before INIT, requests are refused (not left hanging).
    let r = lb.handle(&req(opcode::GETATTR, 4, &[0u8; 16]));
    assert_eq!(header(&r[0]).error, -libc::EIO);
    lb.handle(&init(7, 45, kernel_offer()));
    // A truncated request still gets an answer.
    let r = lb.handle(&req(opcode::GETATTR, 6, &[0u8; 3]));
    assert_eq!(
        (header(&r[0]).unique, header(&r[0]).error),
        (6, -libc::EINVAL)
    );
    // Unknown opcodes are ENOSYS.
    let r = lb.handle(&req(4242, 8, &[]));
    assert_eq!(header(&r[0]).error, -libc::ENOSYS);
    // FORGET gets no reply at all.
    let r = lb.handle(&req(opcode::FORGET, 10, &1u64.to_ne_bytes()));
    assert!(r.is_empty());
    // A working request works.
    let r = lb.handle(&req(opcode::GETATTR, 12, &[0u8; 16]));
    assert_eq!(header(&r[0]).error, 0);
    assert_eq!(r[0].len(), 16 + 104);
    // LOOKUP of a missing name: ENOENT.
    let r = lb.handle(&req(opcode::LOOKUP, 14, b"x\0"));
    assert_eq!(header(&r[0]).error, -libc::ENOENT);
}

#[test]
fn io_uring_is_asked_for_only_when_offered_and_not_switched_off() {
    let granted = |mode: idfuse::IoUringMode, offer: InitFlags| {
        let cfg = SessionConfig {
            io_uring: mode,
            ..SessionConfig::default()
        };
        let mut lb = loopback(InitFlags::empty(), cfg, true);
        let replies = lb.handle(&init(7, 45, offer));
        let out = init_out(&replies[0]);
        InitFlags::from_bits_truncate(out.flags as u64 | ((out.flags2 as u64) << 32))
            .contains(InitFlags::OVER_IO_URING)
    };
    let with = kernel_offer() | InitFlags::OVER_IO_URING;
    let without = kernel_offer() - InitFlags::OVER_IO_URING;
    use idfuse::IoUringMode::*;
    assert!(granted(Auto, with), "auto takes what the kernel offers");
    assert!(granted(On, with));
    assert!(!granted(Off, with), "off never asks");
    assert!(!granted(Auto, without), "not offered, not granted");
    assert!(!granted(On, without));
}

/// INIT can only lower the kernel's readahead: a smaller `max_readahead`
/// is answered, a larger one is answered as the offer (the session raises
/// it on the mount's device instead).
#[test]
fn max_readahead_lowers_the_offer_and_never_exceeds_it() {
    for (asked, answered) in [
        (None, 131072),
        (Some(65536), 65536),
        (Some(8 << 20), 131072),
    ] {
        let mut lb = loopback(
            InitFlags::empty(),
            SessionConfig {
                max_readahead: asked,
                io_uring: idfuse::IoUringMode::Off,
                ..SessionConfig::default()
            },
            true,
        );
        let replies = lb.handle(&init(7, 45, kernel_offer()));
        assert_eq!(init_out(&replies[0]).max_readahead, answered, "{asked:?}");
    }
}
