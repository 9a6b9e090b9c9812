//! Map specs in util-linux's syntax: `u:FROM:TO:COUNT`, `g:…`, `b:…` (both),
//! ranges separated by spaces or commas. FROM is the id on the filesystem
//! (inside the user namespace), TO the id seen through the idmapped mount.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The kernel's limit on ranges in one uid_map or gid_map.
pub const MAX_RANGES: usize = 340;

/// Which ids a range maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// User ids (`u:`).
    Uid,
    /// Group ids (`g:`).
    Gid,
    /// Both (`b:`).
    Both,
}

impl IdKind {
    fn letter(self) -> char {
        match self {
            IdKind::Uid => 'u',
            IdKind::Gid => 'g',
            IdKind::Both => 'b',
        }
    }
    fn has_uid(self) -> bool {
        self != IdKind::Gid
    }
    fn has_gid(self) -> bool {
        self != IdKind::Uid
    }
}

/// One range: `count` ids from `from` (filesystem) map to `to` (mount).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdRange {
    /// Which ids.
    pub kind: IdKind,
    /// First id on the filesystem (inside the user namespace).
    pub from: u32,
    /// First id seen through the mount (outside).
    pub to: u32,
    /// Number of ids.
    pub count: u32,
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.kind.letter(),
            self.from,
            self.to,
            self.count
        )
    }
}

/// Why a spec is not a valid map. Each names the offending range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Nothing to map.
    #[error("the map is empty; write ranges like `b:0:100000:65536` (KIND:FROM:TO:COUNT)")]
    Empty,
    /// A range that is not `KIND:FROM:TO:COUNT`.
    #[error("range {index} `{text}` is not KIND:FROM:TO:COUNT with KIND u, g or b (e.g. `b:0:100000:65536`)")]
    Syntax {
        /// 1-based position
        index: usize,
        /// as written
        text: String,
    },
    /// A number that is not a u32.
    #[error("range {index} `{text}`: `{field}` is not a number from 0 to 4294967294")]
    Number {
        /// 1-based position
        index: usize,
        /// as written
        text: String,
        /// the bad field
        field: String,
    },
    /// COUNT is zero.
    #[error("range {index} `{text}` maps no ids: COUNT must be at least 1")]
    ZeroCount {
        /// 1-based position
        index: usize,
        /// as written
        text: String,
    },
    /// FROM+COUNT or TO+COUNT passes the largest id.
    #[error("range {index} `{text}` runs past the largest id 4294967294 on the {side} side")]
    Overflow {
        /// 1-based position
        index: usize,
        /// as written
        text: String,
        /// "filesystem" or "mount"
        side: &'static str,
    },
    /// Two ranges of the same kind overlap.
    #[error("range {index} `{text}` overlaps range {other} `{other_text}` on the {side} side ({what} ids)")]
    Overlap {
        /// 1-based position
        index: usize,
        /// as written
        text: String,
        /// the earlier range
        other: usize,
        /// as written
        other_text: String,
        /// "filesystem" or "mount"
        side: &'static str,
        /// "user" or "group"
        what: &'static str,
    },
    /// More ranges than the kernel takes.
    #[error("{count} {what} ranges; the kernel takes at most {MAX_RANGES} per map")]
    TooMany {
        /// how many
        count: usize,
        /// "user" or "group"
        what: &'static str,
    },
}

/// A validated map: no zero counts, no overflow, no overlaps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdMap {
    ranges: Vec<IdRange>,
}

impl IdMap {
    /// The ranges as written.
    pub fn ranges(&self) -> &[IdRange] {
        &self.ranges
    }

    fn lines(&self, uid: bool) -> String {
        self.ranges
            .iter()
            .filter(|r| {
                if uid {
                    r.kind.has_uid()
                } else {
                    r.kind.has_gid()
                }
            })
            .map(|r| format!("{} {} {}\n", r.from, r.to, r.count))
            .collect()
    }

    /// Text for `/proc/PID/uid_map` (empty when the map has no uid range).
    pub fn uid_map(&self) -> String {
        self.lines(true)
    }

    /// Text for `/proc/PID/gid_map` (empty when the map has no gid range).
    pub fn gid_map(&self) -> String {
        self.lines(false)
    }

    fn map(&self, uid: bool, id: u32, down: bool) -> Option<u32> {
        self.ranges
            .iter()
            .filter(|r| {
                if uid {
                    r.kind.has_uid()
                } else {
                    r.kind.has_gid()
                }
            })
            .find_map(|r| {
                let (a, b) = if down { (r.from, r.to) } else { (r.to, r.from) };
                (id >= a && id - a < r.count).then(|| b + (id - a))
            })
    }

    /// The id a filesystem uid shows as through the mount.
    pub fn map_uid_to_mount(&self, fs_id: u32) -> Option<u32> {
        self.map(true, fs_id, true)
    }
    /// The filesystem uid behind a uid seen through the mount.
    pub fn map_uid_to_fs(&self, mount_id: u32) -> Option<u32> {
        self.map(true, mount_id, false)
    }
    /// The id a filesystem gid shows as through the mount.
    pub fn map_gid_to_mount(&self, fs_id: u32) -> Option<u32> {
        self.map(false, fs_id, true)
    }
    /// The filesystem gid behind a gid seen through the mount.
    pub fn map_gid_to_fs(&self, mount_id: u32) -> Option<u32> {
        self.map(false, mount_id, false)
    }

    /// Build from ranges, validating them.
    pub fn from_ranges(ranges: Vec<IdRange>) -> Result<Self, SpecError> {
        let texts: Vec<String> = ranges.iter().map(|r| r.to_string()).collect();
        Self::validate(&ranges, &texts)?;
        Ok(Self { ranges })
    }

    fn validate(ranges: &[IdRange], texts: &[String]) -> Result<(), SpecError> {
        if ranges.is_empty() {
            return Err(SpecError::Empty);
        }
        for (i, r) in ranges.iter().enumerate() {
            let text = texts[i].clone();
            if r.count == 0 {
                return Err(SpecError::ZeroCount { index: i + 1, text });
            }
            for (side, base) in [("filesystem", r.from), ("mount", r.to)] {
                // The last mappable id is 4294967294: (u32)-1 is "no id".
                if u64::from(base) + u64::from(r.count) > u64::from(u32::MAX) {
                    return Err(SpecError::Overflow {
                        index: i + 1,
                        text,
                        side,
                    });
                }
            }
        }
        for (what, pick) in [
            ("user", IdKind::has_uid as fn(IdKind) -> bool),
            ("group", IdKind::has_gid),
        ] {
            let chosen: Vec<usize> = (0..ranges.len())
                .filter(|&i| pick(ranges[i].kind))
                .collect();
            if chosen.len() > MAX_RANGES {
                return Err(SpecError::TooMany {
                    count: chosen.len(),
                    what,
                });
            }
            for (n, &i) in chosen.iter().enumerate() {
                for &j in &chosen[..n] {
                    let (a, b) = (ranges[i], ranges[j]);
                    for (side, x, y) in [("filesystem", a.from, b.from), ("mount", a.to, b.to)] {
                        let overlap = u64::from(x) < u64::from(y) + u64::from(b.count)
                            && u64::from(y) < u64::from(x) + u64::from(a.count);
                        if overlap {
                            return Err(SpecError::Overlap {
                                index: i + 1,
                                text: texts[i].clone(),
                                other: j + 1,
                                other_text: texts[j].clone(),
                                side,
                                what,
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl FromStr for IdMap {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let texts: Vec<String> = s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        let mut ranges = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let parts: Vec<&str> = text.split(':').collect();
            let kind = match parts.first().copied() {
                Some("u") => IdKind::Uid,
                Some("g") => IdKind::Gid,
                Some("b") => IdKind::Both,
                _ => {
                    return Err(SpecError::Syntax {
                        index: i + 1,
                        text: text.clone(),
                    })
                }
            };
            if parts.len() != 4 {
                return Err(SpecError::Syntax {
                    index: i + 1,
                    text: text.clone(),
                });
            }
            let num = |f: &str| -> Result<u32, SpecError> {
                f.parse::<u32>()
                    .ok()
                    .filter(|v| *v != u32::MAX)
                    .ok_or_else(|| SpecError::Number {
                        index: i + 1,
                        text: text.clone(),
                        field: f.to_string(),
                    })
            };
            ranges.push(IdRange {
                kind,
                from: num(parts[1])?,
                to: num(parts[2])?,
                count: num(parts[3])?,
            });
        }
        Self::validate(&ranges, &texts)?;
        Ok(Self { ranges })
    }
}

impl fmt::Display for IdMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Where an idmap comes from: ranges to build a namespace from, or an
/// existing user namespace file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapSource {
    /// Ranges.
    Map(IdMap),
    /// `/proc/PID/ns/user` or a bind-mounted namespace file.
    Namespace(PathBuf),
}

impl FromStr for MapSource {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let t = s.trim();
        if t.starts_with('/') {
            return Ok(MapSource::Namespace(PathBuf::from(t)));
        }
        Ok(MapSource::Map(t.parse()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_util_linux_syntax() {
        let m: IdMap = "b:0:100000:65536".parse().unwrap();
        assert_eq!(m.uid_map(), "0 100000 65536\n");
        assert_eq!(m.gid_map(), "0 100000 65536\n");
        assert_eq!(m.map_uid_to_mount(123), Some(100123));
        assert_eq!(m.map_uid_to_fs(100123), Some(123));
        assert_eq!(m.map_uid_to_fs(5), None);
        let m: IdMap = "u:0:1000:1, g:0:2000:1 u:1:5000:10".parse().unwrap();
        assert_eq!(m.uid_map(), "0 1000 1\n1 5000 10\n");
        assert_eq!(m.gid_map(), "0 2000 1\n");
        assert_eq!(m.to_string(), "u:0:1000:1 g:0:2000:1 u:1:5000:10");
        let circular: IdMap = "u:1000:1001:1 u:1001:1000:1".parse().unwrap();
        assert_eq!(circular.map_uid_to_mount(1000), Some(1001));
    }

    #[test]
    fn errors_name_the_range() {
        let e = "b:0:1:1 x:0:1:1".parse::<IdMap>().unwrap_err().to_string();
        assert!(e.contains("range 2 `x:0:1:1`"), "{e}");
        let e = "b:0:100000".parse::<IdMap>().unwrap_err().to_string();
        assert!(e.contains("KIND:FROM:TO:COUNT"), "{e}");
        let e = "u:0:1:0".parse::<IdMap>().unwrap_err();
        assert!(matches!(e, SpecError::ZeroCount { index: 1, .. }));
        let e = "u:4294967000:0:1000"
            .parse::<IdMap>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("filesystem side"), "{e}");
        let e = "u:0:100:10 u:5:1000:10"
            .parse::<IdMap>()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "range 2 `u:5:1000:10` overlaps range 1 `u:0:100:10` on the filesystem side"
            ),
            "{e}"
        );
        let e = "u:0:100:10 u:50:105:1"
            .parse::<IdMap>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("mount side"), "{e}");
        // u and g ranges may reuse ids; b overlaps both.
        "u:0:100:10 g:0:100:10".parse::<IdMap>().unwrap();
        assert!("u:0:100:10 b:0:500:1".parse::<IdMap>().is_err());
        let e = "u:x:1:1".parse::<IdMap>().unwrap_err().to_string();
        assert!(e.contains("`x` is not a number"), "{e}");
        assert_eq!("".parse::<IdMap>().unwrap_err(), SpecError::Empty);
        let many: Vec<String> = (0..341).map(|i| format!("u:{i}:{}:1", 1000 + i)).collect();
        let e = many.join(",").parse::<IdMap>().unwrap_err();
        assert!(matches!(e, SpecError::TooMany { count: 341, .. }), "{e}");
    }

    #[test]
    fn namespace_paths() {
        assert_eq!(
            "/proc/1/ns/user".parse::<MapSource>().unwrap(),
            MapSource::Namespace("/proc/1/ns/user".into())
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,80}") {
            let _ = s.parse::<IdMap>();
            let _ = s.parse::<MapSource>();
        }

        #[test]
        fn display_round_trips(from in 0u32..1_000_000, to in 0u32..1_000_000, count in 1u32..100_000, k in 0u8..3) {
            let kind = [IdKind::Uid, IdKind::Gid, IdKind::Both][k as usize];
            let m = IdMap::from_ranges(vec![IdRange { kind, from, to, count }]).unwrap();
            let again: IdMap = m.to_string().parse().unwrap();
            proptest::prop_assert_eq!(m, again);
        }
    }
}
