//! The `-o` option string is untrusted input (mount(8), fstab, a runtime's
//! spec). Parsing must accept or reject any string without panicking, what
//! it accepts must stay within the documented bounds, and an accepted string
//! parses the same way twice.
#![no_main]

use idfuse::{parse_options, MountOptions, SessionConfig};
use idfuse_fs::passthrough::PassthroughOptions;
use libfuzzer_sys::fuzz_target;

fn parse(s: &str) -> Option<(String, String, PassthroughOptions)> {
    let mut mount = MountOptions::default();
    let mut session = SessionConfig::default();
    let mut fs = PassthroughOptions::default();
    parse_options(s, &mut mount, &mut session, &mut |k, v| fs.parse_option(k, v), &[]).ok()?;
    assert!((4096..=1 << 24).contains(&session.max_write), "max_write out of bounds");
    assert!(mount.max_read.is_none_or(|r| r >= 4096), "max_read below a page");
    for name in [&mount.fsname, &mount.subtype] {
        assert!(!name.is_empty() && !name.contains(','), "bad name {name:?}");
    }
    Some((format!("{mount:?}"), format!("{session:?}"), fs))
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((mount, session, fs)) = parse(s) {
        let (mount2, session2, fs2) = parse(s).expect("an accepted option string is accepted again");
        assert_eq!((mount, session), (mount2, session2));
        assert_eq!(format!("{fs:?}"), format!("{fs2:?}"));
    }
});
