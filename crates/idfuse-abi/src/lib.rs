//! The Linux FUSE kernel ABI, protocol 7.45 (Linux 6.18): the structs of
//! `include/uapi/linux/fuse.h`, opcodes, INIT and per-request flags,
//! request decoding into borrowed typed requests, and reply encoding.
//!
//! This crate does no I/O and never panics on input from the kernel.
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
