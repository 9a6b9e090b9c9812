//! Helpers shared by the integration tests of this crate.

/// Run `f` in a forked child with these credentials and umask; its return
/// value is the child's exit code (99: the credentials could not be set).
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
            libc::WEXITSTATUS(st)
        }
    }
}
