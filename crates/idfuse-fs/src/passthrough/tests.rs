//! The daemon's own name resolution, fed the names a hostile or buggy
//! kernel could send: nothing it opens may lie outside SOURCE.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::Path;

use super::*;

struct Tree {
    dir: tempfile::TempDir,
    pt: Passthrough,
    handles: InodeHandles,
}

impl Tree {
    fn src(&self) -> std::path::PathBuf {
        self.dir.path().join("src")
    }
}

/// SOURCE with a file, a subdirectory, and symlinks pointing out of it.
fn tree(handles: InodeHandles) -> Tree {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).expect("mkdir");
    std::fs::write(src.join("file"), b"inside").expect("write");
    std::fs::write(dir.path().join("outside"), b"secret").expect("write");
    std::os::unix::fs::symlink("/etc", src.join("etc")).expect("symlink");
    std::os::unix::fs::symlink("../outside", src.join("up")).expect("symlink");
    std::os::unix::fs::symlink(dir.path().join("outside"), src.join("abs")).expect("symlink");
    let opts = PassthroughOptions {
        inode_handles: handles,
        ..PassthroughOptions::default()
    };
    let pt = Passthrough::new(&src, opts).expect("passthrough");
    Tree { dir, pt, handles }
}

/// The same tree with inodes held by fds, and by handles (the tests run
/// as root).
fn trees() -> [Tree; 2] {
    [tree(InodeHandles::Never), tree(InodeHandles::Always)]
}

fn mode_of(pt: &Passthrough, ino: u64) -> u32 {
    let i = pt.inode(ino).expect("inode");
    u32::from(
        statx_fd(pt.fd(&i).expect("fd").as_fd())
            .expect("statx")
            .stx_mode,
    )
}

#[test]
fn names_that_are_not_one_component_are_refused() {
    for t in trees() {
        for bad in [
            "",
            ".",
            "..",
            "sub/deeper",
            "/etc",
            "../outside",
            "sub/..",
            "a\0b",
        ] {
            assert_eq!(
                t.pt.lookup_name(ROOT, OsStr::new(bad)).err(),
                Some(Errno::INVAL),
                "{bad:?}"
            );
        }
        let long = "x".repeat(256);
        assert_eq!(
            t.pt.lookup_name(ROOT, OsStr::new(&long)).err(),
            Some(Errno::NAMETOOLONG)
        );
    }
}

#[test]
fn symlinks_are_looked_up_as_themselves_never_followed() {
    for t in trees() {
        for link in ["etc", "up", "abs"] {
            let e = t.pt.lookup_name(ROOT, OsStr::new(link)).expect(link);
            assert_eq!(
                mode_of(&t.pt, e.ino) & libc::S_IFMT,
                libc::S_IFLNK,
                "{link} is the link itself"
            );
            // A buggy kernel using the link as a directory gets nothing from
            // behind it.
            assert_eq!(
                t.pt.lookup_name(e.ino, OsStr::new("passwd")).err(),
                Some(Errno::NOTDIR),
                "{link}/passwd"
            );
            // Nor can it read through it: the reopen lands on the link.
            let i = t.pt.inode(e.ino).expect("inode");
            assert_eq!(
                t.pt.reopen(t.pt.fd(&i).expect("fd").as_fd(), OFlags::RDONLY)
                    .err(),
                Some(Errno::LOOP),
                "open {link}"
            );
        }
        let e = t.pt.lookup_name(ROOT, OsStr::new("up")).expect("up");
        let i = t.pt.inode(e.ino).expect("inode");
        assert_eq!(
            rustix::fs::readlinkat(t.pt.fd(&i).expect("fd"), "", Vec::new())
                .expect("readlink")
                .as_bytes(),
            b"../outside",
            "the target is only text"
        );
    }
}

#[test]
fn dot_dot_stays_inside() {
    for t in trees() {
        let root = t.pt.lookup_dots(ROOT, OsStr::new("..")).expect("..");
        assert_eq!(root.ino, ROOT, ".. of the root is the root");
        let sub = t.pt.lookup_name(ROOT, OsStr::new("sub")).expect("sub");
        let deeper =
            t.pt.lookup_name(sub.ino, OsStr::new("deeper"))
                .expect("deeper");
        assert_eq!(
            t.pt.lookup_dots(deeper.ino, OsStr::new(".."))
                .expect("..")
                .ino,
            sub.ino
        );
        assert_eq!(
            t.pt.lookup_dots(sub.ino, OsStr::new(".")).expect(".").ino,
            sub.ino
        );
        let by_fds = if t.handles == InodeHandles::Always {
            1
        } else {
            3
        };
        assert_eq!(
            (t.pt.inode_count(), t.pt.inode_fd_count()),
            (3, by_fds),
            "{:?}",
            t.handles
        );
        // A parent the table does not know is not followed.
        t.pt.forget(sub.ino, 3);
        assert_eq!(
            t.pt.lookup_dots(deeper.ino, OsStr::new("..")).err(),
            Some(Errno::ACCESS)
        );
    }
}

#[test]
fn xattrs_of_a_symlink_act_on_the_symlink() {
    for t in trees() {
        let e = t.pt.lookup_name(ROOT, OsStr::new("up")).expect("up");
        let i = t.pt.inode(e.ino).expect("inode");
        let fd = t.pt.fd(&i).expect("fd");
        let path = crate::backing::ProcFd::path(fd.as_fd());
        rustix::fs::setxattr(
            path.as_c_str(),
            "trusted.idfuse",
            b"on-link",
            rustix::fs::XattrFlags::empty(),
        )
        .expect("setxattr through /proc");
        let mut buf = [0u8; 16];
        let n = rustix::fs::lgetxattr(t.src().join("up"), "trusted.idfuse", &mut buf)
            .expect("on the link");
        assert_eq!(&buf[..n], b"on-link");
        assert!(
            rustix::fs::getxattr(t.dir.path().join("outside"), "trusted.idfuse", &mut buf).is_err(),
            "not on the target"
        );
    }
}

#[test]
fn device_numbers_round_trip() {
    for (major, minor) in [(1, 3), (8, 17), (259, 0x1_2345), (0xfff, 0xff)] {
        let fuse = crate::backing::rdev_to_fuse(major, minor);
        let dev = rdev_from_fuse(fuse);
        assert_eq!(
            (libc::major(dev), libc::minor(dev)),
            (major, minor),
            "{major}:{minor}"
        );
    }
}

#[test]
fn mountpoint_checks_use_canonical_paths() {
    for t in trees() {
        let src = t.src();
        let inside = [
            src.clone(),
            src.join("sub"),
            src.join("not-yet"),
            src.join("sub/../sub/deeper"),
        ];
        for m in inside {
            assert!(
                matches!(
                    Passthrough::check_mountpoint(&src, &m),
                    Err(Error::MountpointInsideSource { .. })
                ),
                "{} is inside",
                m.display()
            );
        }
        std::os::unix::fs::symlink(&src, t.dir.path().join("alias")).expect("symlink");
        assert!(
            Passthrough::check_mountpoint(&t.dir.path().join("alias"), &src.join("sub")).is_err()
        );
        assert!(Passthrough::check_mountpoint(&src, &t.dir.path().join("srcx")).is_ok());
        assert!(Passthrough::check_mountpoint(&src, Path::new("/")).is_ok());
    }
}
