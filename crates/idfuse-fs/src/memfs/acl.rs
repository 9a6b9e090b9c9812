//! POSIX ACLs in their xattr form (`system.posix_acl_*`), enough to keep
//! them consistent with the mode as ext4 and tmpfs do: the kernel leaves
//! that to a FUSE server.

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AclEntry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// A parsed ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Acl(Vec<AclEntry>);

/// Why bytes are not an ACL.
#[derive(Debug)]
pub(super) struct BadAcl;

impl Acl {
    /// Parse and validate the xattr bytes.
    pub(super) fn parse(b: &[u8]) -> Result<Self, BadAcl> {
        if b.len() < 4 || !(b.len() - 4).is_multiple_of(8) {
            return Err(BadAcl);
        }
        let version = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if version != VERSION {
            return Err(BadAcl);
        }
        let entries: Vec<AclEntry> = b[4..]
            .chunks_exact(8)
            .map(|c| AclEntry {
                tag: u16::from_le_bytes([c[0], c[1]]),
                perm: u16::from_le_bytes([c[2], c[3]]),
                id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        let count = |t: u16| entries.iter().filter(|e| e.tag == t).count();
        let named = count(USER) + count(GROUP);
        let valid = entries.iter().all(|e| {
            e.perm & !7 == 0 && matches!(e.tag, USER_OBJ | USER | GROUP_OBJ | GROUP | MASK | OTHER)
        }) && count(USER_OBJ) == 1
            && count(GROUP_OBJ) == 1
            && count(OTHER) == 1
            && count(MASK) <= 1
            && (named == 0 || count(MASK) == 1);
        if !valid {
            return Err(BadAcl);
        }
        Ok(Self(entries))
    }

    /// The xattr bytes.
    pub(super) fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + 8 * self.0.len());
        v.extend_from_slice(&VERSION.to_le_bytes());
        for e in &self.0 {
            v.extend_from_slice(&e.tag.to_le_bytes());
            v.extend_from_slice(&e.perm.to_le_bytes());
            v.extend_from_slice(&e.id.to_le_bytes());
        }
        v
    }

    fn perm(&self, tag: u16) -> Option<u32> {
        self.0
            .iter()
            .find(|e| e.tag == tag)
            .map(|e| u32::from(e.perm))
    }

    /// The mode's permission bits this access ACL implies.
    pub(super) fn mode_bits(&self) -> u32 {
        let user = self.perm(USER_OBJ).unwrap_or(0);
        let group = self
            .perm(MASK)
            .or_else(|| self.perm(GROUP_OBJ))
            .unwrap_or(0);
        let other = self.perm(OTHER).unwrap_or(0);
        (user << 6) | (group << 3) | other
    }

    /// True when the ACL says nothing the mode does not.
    pub(super) fn is_equivalent_to_mode(&self) -> bool {
        self.0
            .iter()
            .all(|e| matches!(e.tag, USER_OBJ | GROUP_OBJ | OTHER))
    }

    /// chmod: the owner, group-class (mask, or group if no mask) and other
    /// entries follow the new permission bits.
    pub(super) fn chmod(&mut self, mode: u32) {
        let has_mask = self.perm(MASK).is_some();
        for e in &mut self.0 {
            match e.tag {
                USER_OBJ => e.perm = ((mode >> 6) & 7) as u16,
                MASK => e.perm = ((mode >> 3) & 7) as u16,
                GROUP_OBJ if !has_mask => e.perm = ((mode >> 3) & 7) as u16,
                OTHER => e.perm = (mode & 7) as u16,
                _ => {}
            }
        }
    }

    /// The access ACL and mode of an inode created under this default ACL
    /// with permission bits `mode` (the kernel's `posix_acl_create`). The
    /// ACL is `None` when it would be equivalent to the mode.
    pub(super) fn create_masq(&self, mode: u32) -> (Option<Acl>, u32) {
        let mut acl = self.clone();
        let mut m = mode;
        let mut group_obj = None;
        let mut mask_obj = None;
        for (i, e) in acl.0.iter_mut().enumerate() {
            match e.tag {
                USER_OBJ => {
                    e.perm &= ((m >> 6) & 7) as u16;
                    m &= (u32::from(e.perm) << 6) | !0o700;
                }
                GROUP_OBJ => group_obj = Some(i),
                MASK => mask_obj = Some(i),
                OTHER => {
                    e.perm &= (m & 7) as u16;
                    m &= u32::from(e.perm) | !0o007;
                }
                _ => {}
            }
        }
        if let Some(i) = mask_obj.or(group_obj) {
            let e = &mut acl.0[i];
            e.perm &= ((m >> 3) & 7) as u16;
            m &= (u32::from(e.perm) << 3) | !0o070;
        }
        let access = (!acl.is_equivalent_to_mode()).then_some(acl);
        (access, m)
    }
}
