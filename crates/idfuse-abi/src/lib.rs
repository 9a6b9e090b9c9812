//! The Linux FUSE kernel ABI, protocol 7.45 (Linux 6.18): the structs of
//! `include/uapi/linux/fuse.h`, opcodes, INIT and per-request flags,
//! request decoding into borrowed typed requests, and reply encoding.
//!
//! Its one job is the byte layout: it does no I/O, allocates nothing per
//! request and never panics on input from the kernel. The
//! [`idfuse`](https://docs.rs/idfuse) framework is built on it; use this
//! crate directly only to drive `/dev/fuse` yourself.
//!
//! ```
//! use idfuse_abi::{decode, opcode, DecodeOptions, InHeader, Operation};
//! use zerocopy::IntoBytes;
//!
//! // A LOOKUP of "hello" in the root, as one read(2) of /dev/fuse returns it.
//! let name = b"hello\0";
//! let header = InHeader {
//!     len: (std::mem::size_of::<InHeader>() + name.len()) as u32,
//!     opcode: opcode::LOOKUP,
//!     unique: 2,
//!     nodeid: idfuse_abi::ROOT_ID,
//!     ..InHeader::default()
//! };
//! let mut buf = header.as_bytes().to_vec();
//! buf.extend_from_slice(name);
//!
//! let request = decode(&buf, DecodeOptions::default()).expect("a valid request");
//! assert!(matches!(request.op, Operation::Lookup { name } if name == "hello"));
//! // Truncated or hostile input is an error, never a panic.
//! assert!(decode(&buf[..buf.len() - 1], DecodeOptions::default()).is_err());
//! ```
#![warn(missing_docs)]

pub mod flags;
pub mod kernel;
pub mod reply;
pub mod request;

pub use flags::*;
pub use kernel::*;
pub use request::{
    decode, DecodeError, DecodeOptions, Extensions, ForgetList, Operation, Request,
    SecurityContext, SuppGroupList,
};
