//! Child processes with exact credentials: fork, enter a user namespace if
//! asked, set groups, gids, uids and umask, run a closure, send its result
//! back through a pipe. A child that overruns its time limit is killed.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Who a child runs as.
#[derive(Debug, Clone, Default)]
pub struct As {
    /// uid (real, effective, saved; fsuid follows).
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// umask.
    pub umask: u32,
    /// Enter this user namespace (an nsfs fd number valid in the child)
    /// before changing ids; ids are then those inside it.
    pub userns_fd: Option<i32>,
}

impl As {
    /// Root with no supplementary groups.
    pub fn root() -> Self {
        Self {
            umask: 0o022,
            ..Self::default()
        }
    }
    /// A user with its own group.
    pub fn user(uid: u32, gid: u32) -> Self {
        Self {
            uid,
            gid,
            umask: 0o022,
            ..Self::default()
        }
    }
}

/// Why a child did not produce a result.
#[derive(Debug, Clone)]
pub enum ChildError {
    /// It ran past its time limit and was killed.
    Timeout,
    /// It died or could not set its credentials.
    Died(String),
}

/// Run `f` in a child as `who`, for at most `limit`.
pub fn run_as(who: &As, limit: Duration, f: impl FnOnce() -> Value) -> Result<Value, ChildError> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| ChildError::Died(e.to_string()))?;
    // SAFETY: the runner is single-threaded when it forks (scenarios run
    // in their own forked process), so the child may run Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(ChildError::Died("fork failed".into()));
    }
    if pid == 0 {
        drop(r);
        let out = match set_creds(who) {
            Ok(()) => f(),
            Err(e) => serde_json::json!({ "__setup_error": e }),
        };
        let bytes = serde_json::to_vec(&out).unwrap_or_default();
        let _ = rustix::io::write(&w, &bytes);
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    drop(w);
    let res = collect(pid, r, limit);
    if let Ok(v) = &res {
        if let Some(e) = v.get("__setup_error") {
            return Err(ChildError::Died(format!("could not become {who:?}: {e}")));
        }
    }
    res
}

fn collect(pid: i32, r: OwnedFd, limit: Duration) -> Result<Value, ChildError> {
    let deadline = Instant::now() + limit;
    let mut buf = Vec::new();
    let mut file = std::fs::File::from(r);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            kill_and_reap(pid);
            return Err(ChildError::Timeout);
        }
        let mut fds = [rustix::event::PollFd::new(
            &file,
            rustix::event::PollFlags::IN,
        )];
        let ts = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) => continue,
            Ok(_) => {
                let mut chunk = [0u8; 65536];
                match file.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        kill_and_reap(pid);
                        return Err(ChildError::Died(e.to_string()));
                    }
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                kill_and_reap(pid);
                return Err(ChildError::Died(e.to_string()));
            }
        }
    }
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    serde_json::from_slice(&buf)
        .map_err(|_| ChildError::Died(format!("child exited without a result (status {st})")))
}

fn kill_and_reap(pid: i32) {
    // SAFETY: our own child, by pid.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
    }
}

fn set_creds(who: &As) -> Result<(), String> {
    // SAFETY: credential syscalls on this (child) process only.
    unsafe {
        if let Some(fd) = who.userns_fd {
            if libc::setns(fd, libc::CLONE_NEWUSER) != 0 {
                return Err(format!("setns: {}", std::io::Error::last_os_error()));
            }
        }
        libc::umask(who.umask);
        if libc::setgroups(who.groups.len(), who.groups.as_ptr()) != 0 && !who.groups.is_empty() {
            return Err(format!("setgroups: {}", std::io::Error::last_os_error()));
        }
        if libc::setresgid(who.gid, who.gid, who.gid) != 0 {
            return Err(format!(
                "setresgid({}): {}",
                who.gid,
                std::io::Error::last_os_error()
            ));
        }
        if libc::setresuid(who.uid, who.uid, who.uid) != 0 {
            return Err(format!(
                "setresuid({}): {}",
                who.uid,
                std::io::Error::last_os_error()
            ));
        }
        // Changing ids made us non-dumpable, which hands our /proc files to
        // root: a child that makes user namespaces needs them as its own,
        // like any process a user logs in with.
        libc::prctl(libc::PR_SET_DUMPABLE, 1);
    }
    Ok(())
}

/// The errno of the last failed call, as a name for records.
pub fn errno_name(e: i32) -> String {
    let name = match e {
        0 => "ok",
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EACCES => "EACCES",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::EINVAL => "EINVAL",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ENOTCONN => "ENOTCONN",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECANCELED => "ECANCELED",
        libc::EROFS => "EROFS",
        libc::ENOTSUP => "EOPNOTSUPP",
        libc::ENODATA => "ENODATA",
        libc::EISDIR => "EISDIR",
        libc::ENOTDIR => "ENOTDIR",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ETXTBSY => "ETXTBSY",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

/// Turn a syscall result into a record value: "ok" or the errno name.
pub fn res<T, E: Into<std::io::Error>>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => errno_name(e.into().raw_os_error().unwrap_or(0)),
    }
}
