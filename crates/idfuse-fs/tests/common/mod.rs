//! Helpers shared by the integration tests of this crate. Each test binary
//! uses a part of them.
#![allow(dead_code)]

use std::ffi::CStr;
use std::path::{Path, PathBuf};

/// A tmpfs mounted at an existing directory with `options`, unmounted
/// (detached) on drop, also when a test panics.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, options: &CStr) -> Self {
        rustix::mount::mount(
            "tmpfs",
            at,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            Some(options),
        )
        .unwrap_or_else(|e| panic!("mount a tmpfs at {}: {e}", at.display()));
        Self(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

/// Run `f` in a forked child with these credentials and umask; its return
/// value is the child's exit code (99: the credentials could not be set;
/// 128: the child died of a signal).
pub fn as_user(uid: u32, gid: u32, groups: &[u32], umask: u32, f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child makes syscalls and leaves with _exit.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: credential syscalls on the child itself.
            let code = unsafe {
                libc::umask(umask);
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setresgid(gid, gid, gid) != 0
                    || libc::setresuid(uid, uid, uid) != 0
                {
                    99
                } else {
                    f()
                }
            };
            // SAFETY: leave without running the test harness's destructors.
            unsafe { libc::_exit(code) }
        }
        pid => {
            let mut st = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                128
            }
        }
    }
}
