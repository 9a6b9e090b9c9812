//! The passthrough daemon running in a user namespace (no privilege outside
//! it): no FUSE passthrough I/O, and inodes are created as the ids mapped
//! there. A test without libtest's harness: run plainly it sets up the
//! namespace and runs itself again inside it, where it mounts and works.

mod common;

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use idfuse::{MountOptions, Session, SessionConfig};
use idfuse_fs::passthrough::{Passthrough, PassthroughOptions};

const CHILD: &str = "IDFUSE_PT_USERNS_CHILD";

fn owner(p: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).expect("lstat");
    (m.uid(), m.gid())
}

fn mounted(p: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let p = p.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m == p))
}

fn main() {
    // libtest's flags (e.g. from `cargo test -- --nocapture`) mean nothing
    // here; a filter that does not name this test skips it.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .iter()
        .any(|a| !a.starts_with('-') && !"userns_daemon".contains(a.as_str()))
    {
        return;
    }
    match std::env::var_os(CHILD) {
        Some(dir) => child(&PathBuf::from(dir)),
        None => {
            parent();
            println!("test daemon_in_a_user_namespace_creates_as_mapped_ids ... ok");
        }
    }
}

fn parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    for d in ["src", "mnt"] {
        fs::create_dir(dir.path().join(d)).expect("mkdir");
    }
    fs::set_permissions(dir.path().join("src"), fs::Permissions::from_mode(0o777)).expect("chmod");
    // ns root is host root, so it may open /dev/fuse (0600 here); ns ids
    // 1.. are host 100001..
    let ns =
        idfuse_idmap::UserNamespace::create(&"b:0:0:1 b:1:100001:65535".parse().expect("spec"))
            .expect("user namespace");
    let nsfd = ns.as_fd().as_raw_fd();
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("test binary"));
    cmd.env(CHILD, dir.path());
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(nsfd, libc::CLONE_NEWUSER) != 0 || libc::unshare(libc::CLONE_NEWNS) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("run the child");
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("child done"), "the child ran: {text}");
    let src = dir.path().join("src");
    assert_eq!(owner(&src.join("by-root")), (0, 0));
    assert_eq!(
        owner(&src.join("by-1000")),
        (101000, 101000),
        "ns uid 1000 on the host"
    );
    assert_eq!(owner(&src.join("dir-1000")), (101000, 101000));
    assert_eq!(fs::read(src.join("by-1000")).expect("read"), b"user data");
    assert!(!mounted(&dir.path().join("mnt")));
}

fn child(dir: &Path) {
    let (src, mnt) = (dir.join("src"), dir.join("mnt"));
    // Handles from the first inode on, where they can be opened: in a user
    // namespace they cannot (non-directories never), so the table falls
    // back to fds.
    let opts = PassthroughOptions {
        inode_fds_max: Some(0),
        ..PassthroughOptions::default()
    };
    let pt = Arc::new(Passthrough::new(&src, opts).expect("passthrough"));
    let session = Session::mount(
        pt.clone(),
        &mnt,
        MountOptions::default(),
        SessionConfig {
            passthrough: true,
            ..SessionConfig::default()
        },
    )
    .expect("mount inside the user namespace");
    fs::write(mnt.join("by-root"), b"root data").expect("write as ns root");
    let m = mnt.clone();
    let step = common::as_user(1000, 1000, &[], 0o022, || {
        if fs::write(m.join("by-1000"), b"user data").is_err() {
            return 1;
        }
        if fs::create_dir(m.join("dir-1000")).is_err() {
            return 2;
        }
        i32::from(fs::read(m.join("by-1000")).ok().as_deref() != Some(&b"user data"[..])) * 3
    });
    assert_eq!(step, 0, "step {step} as ns uid 1000 failed");
    assert_eq!(fs::read(mnt.join("by-root")).expect("read"), b"root data");
    println!(
        "inodes: {} held, {} by fds",
        pt.inode_count(),
        pt.inode_fd_count()
    );
    assert!(
        pt.inode_fd_count() >= 3,
        "the root and both files are held by fds ({} of {})",
        pt.inode_fd_count(),
        pt.inode_count()
    );
    assert!(
        !pt.passthrough_active(),
        "BACKING_OPEN needs CAP_SYS_ADMIN in the initial namespace"
    );
    drop(session);
    println!("child done");
}
