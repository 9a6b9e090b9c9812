//! Request decoding must return a value or a DecodeError for any bytes.
#![no_main]

use idfuse_abi::{decode, DecodeOptions, Operation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for setxattr_ext in [false, true] {
        if let Ok(req) = decode(data, DecodeOptions { setxattr_ext }) {
            // Touch what a server reads: names, data, lists.
            let _ = req.op.name();
            if let Operation::BatchForget { nodes, .. } = &req.op {
                let _ = nodes.iter().count();
            }
            if let Some(g) = req.ext.supp_groups {
                let _ = g.iter().count();
            }
        }
    }
});
