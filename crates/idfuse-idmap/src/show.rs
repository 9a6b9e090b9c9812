//! Reading back the idmap of a mount with statmount(2)
//! (`STATMOUNT_MNT_UIDMAP`/`GIDMAP`, Linux 6.15+).

use std::path::Path;

use crate::probe::MountInfo;
use crate::{Error, IdKind, IdMap, IdRange};

const SYS_STATMOUNT: libc::c_long = 457;
const STATMOUNT_MNT_UIDMAP: u64 = 0x2000;
const STATMOUNT_MNT_GIDMAP: u64 = 0x4000;
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

/// `struct mnt_id_req` (version 1).
#[repr(C)]
struct MntIdReq {
    size: u32,
    spare: u32,
    mnt_id: u64,
    param: u64,
    mnt_ns_id: u64,
}

/// Field offsets in `struct statmount` (uapi linux/mount.h, 6.15+).
const OFF_MASK: usize = 8;
const OFF_UIDMAP_NUM: usize = 152;
const OFF_UIDMAP: usize = 156;
const OFF_GIDMAP_NUM: usize = 160;
const OFF_GIDMAP: usize = 164;
const OFF_STR: usize = 512;

/// The idmap of the mount at `path`: `None` when it is not idmapped.
pub fn show(path: &Path) -> Result<Option<(IdMap, IdMap)>, Error> {
    let info = MountInfo::of(path)
        .ok_or_else(|| Error::Show(format!("{} is not on any mount we can see", path.display())))?;
    if !info.mount_options.split(',').any(|o| o == "idmapped") {
        return Ok(None);
    }
    let stx = rustix::fs::statx(
        rustix::fs::CWD,
        path,
        rustix::fs::AtFlags::empty(),
        rustix::fs::StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE),
    )
    .map_err(|e| Error::Show(format!("statx {}: {e}", path.display())))?;
    let req = MntIdReq {
        size: std::mem::size_of::<MntIdReq>() as u32,
        spare: 0,
        mnt_id: stx.stx_mnt_id,
        param: STATMOUNT_MNT_UIDMAP | STATMOUNT_MNT_GIDMAP,
        mnt_ns_id: 0,
    };
    let mut buf = vec![0u64; 8192];
    let bytes = buf.len() * 8;
    // SAFETY: statmount writes at most `bytes` into our buffer and reads a
    // live `mnt_id_req`.
    let r = unsafe {
        libc::syscall(
            SYS_STATMOUNT,
            &req as *const MntIdReq,
            buf.as_mut_ptr(),
            bytes,
            0u32,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::Show(format!(
            "statmount(2) failed ({e}); reading a mount's idmap needs Linux 6.15 or newer"
        )));
    }
    // SAFETY: reinterpreting our own u64 buffer as bytes.
    let raw: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), bytes) };
    let u32_at = |o: usize| u32::from_ne_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]);
    let mask = u64::from_ne_bytes(raw[OFF_MASK..OFF_MASK + 8].try_into().unwrap_or([0; 8]));
    if mask & STATMOUNT_MNT_UIDMAP == 0 {
        return Err(Error::Show(
            "this kernel's statmount(2) does not report idmaps (Linux 6.15+ does)".into(),
        ));
    }
    let list = |num_off: usize, str_off: usize, kind: IdKind| -> Result<IdMap, Error> {
        let n = u32_at(num_off) as usize;
        let mut off = OFF_STR + u32_at(str_off) as usize;
        let mut ranges = Vec::new();
        for _ in 0..n {
            let end = raw[off..]
                .iter()
                .position(|b| *b == 0)
                .map(|p| off + p)
                .ok_or_else(|| Error::Show("malformed statmount map".into()))?;
            let text = String::from_utf8_lossy(&raw[off..end]).to_string();
            let f: Vec<u32> = text
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if f.len() != 3 {
                return Err(Error::Show(format!(
                    "unexpected statmount map entry `{text}`"
                )));
            }
            ranges.push(IdRange {
                kind,
                from: f[0],
                to: f[1],
                count: f[2],
            });
            off = end + 1;
        }
        IdMap::from_ranges(ranges).map_err(|e| Error::Show(e.to_string()))
    };
    Ok(Some((
        list(OFF_UIDMAP_NUM, OFF_UIDMAP, IdKind::Uid)?,
        list(OFF_GIDMAP_NUM, OFF_GIDMAP, IdKind::Gid)?,
    )))
}
