//! User namespaces to carry an idmap: made from a map (as root by writing
//! the child's maps, unprivileged through newuidmap/newgidmap), or opened
//! from a namespace file. No process outlives the call.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use crate::{Error, IdMap, MapSource};

/// An owned user namespace (an nsfs fd).
#[derive(Debug)]
pub struct UserNamespace {
    fd: OwnedFd,
    uid: Option<IdMap>,
    gid: Option<IdMap>,
}

const NSFS_MAGIC: i64 = 0x6e73_6673;
/// `NS_GET_NSTYPE` = `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

impl UserNamespace {
    /// A new user namespace whose maps are `map`.
    pub fn create(map: &IdMap) -> Result<Self, Error> {
        let (child, ready_r, go_w) = spawn_unshared_child()?;
        let result = (|| -> Result<OwnedFd, Error> {
            wait_byte(&ready_r)
                .map_err(|e| Error::Userns(format!("the helper child did not start: {e}")))?;
            if rustix::process::geteuid().is_root() {
                write_map(child, "uid_map", &map.uid_map())?;
                write_map(child, "gid_map", &map.gid_map())?;
            } else {
                helper_map(child, "newuidmap", "/etc/subuid", &map.uid_map())?;
                helper_map(child, "newgidmap", "/etc/subgid", &map.gid_map())?;
            }
            let fd = rustix::fs::open(
                format!("/proc/{child}/ns/user"),
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::Userns(format!("cannot open the new namespace: {e}")))?;
            Ok(fd)
        })();
        let _ = rustix::io::write(&go_w, b"x");
        drop(go_w);
        reap(child);
        let fd = result?;
        let uid = (!map.uid_map().is_empty()).then(|| map.clone());
        let gid = (!map.gid_map().is_empty()).then(|| map.clone());
        Ok(Self { fd, uid, gid })
    }

    /// Open an existing user namespace (`/proc/PID/ns/user`, or a file a
    /// namespace is bind-mounted on).
    pub fn open(path: &Path) -> Result<Self, Error> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).map_err(
            |e| {
                Error::Userns(format!(
                    "cannot open user namespace {}: {e}",
                    path.display()
                ))
            },
        )?;
        let st = rustix::fs::fstatfs(&fd)
            .map_err(|e| Error::Userns(format!("fstatfs {}: {e}", path.display())))?;
        // SAFETY: NS_GET_NSTYPE takes no argument and returns the type.
        let typ = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
        if st.f_type as i64 != NSFS_MAGIC || typ != libc::CLONE_NEWUSER {
            return Err(Error::Userns(format!(
                "{} is not a user namespace; give /proc/PID/ns/user or a map like b:0:100000:65536",
                path.display()
            )));
        }
        Ok(Self {
            fd,
            uid: None,
            gid: None,
        })
    }

    /// From a parsed `--map` argument.
    pub fn from_source(src: &MapSource) -> Result<Self, Error> {
        match src {
            MapSource::Map(m) => Self::create(m),
            MapSource::Namespace(p) => Self::open(p),
        }
    }

    /// The nsfs fd.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The uid map, if this namespace was made from one.
    pub fn uid_map(&self) -> Option<&IdMap> {
        self.uid.as_ref()
    }

    /// The gid map, if this namespace was made from one.
    pub fn gid_map(&self) -> Option<&IdMap> {
        self.gid.as_ref()
    }
}

/// Fork a child that unshares a user namespace, says so on `ready`, and
/// waits on `go` before it exits.
fn spawn_unshared_child() -> Result<(i32, OwnedFd, OwnedFd), Error> {
    let pipe = || {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| Error::Userns(format!("pipe: {e}")))
    };
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    // SAFETY: the child only calls async-signal-safe syscalls (unshare,
    // write, read, _exit), as required after fork in a threaded process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::Userns(format!(
            "fork: {}",
            std::io::Error::last_os_error()
        )));
    }
    if pid == 0 {
        // SAFETY: see above.
        unsafe {
            let ok = libc::unshare(libc::CLONE_NEWUSER) == 0;
            let b: u8 = if ok { b'1' } else { b'0' };
            libc::write(ready_w.as_raw_fd(), (&b as *const u8).cast(), 1);
            let mut buf = 0u8;
            libc::read(go_r.as_raw_fd(), (&mut buf as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    drop(ready_w);
    drop(go_r);
    Ok((pid, ready_r, go_w))
}

fn wait_byte(fd: &OwnedFd) -> Result<(), String> {
    let mut b = [0u8];
    match rustix::io::read(fd, &mut b) {
        Ok(1) if b[0] == b'1' => Ok(()),
        Ok(1) => Err("unshare(CLONE_NEWUSER) failed: user namespaces may be disabled (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone)".into()),
        Ok(_) => Err("the child exited early".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn reap(pid: i32) {
    let mut st = 0;
    // SAFETY: waiting for our own child, which exits once told to.
    unsafe { libc::waitpid(pid, &mut st, 0) };
}

fn write_map(pid: i32, file: &str, text: &str) -> Result<(), Error> {
    if text.is_empty() {
        return Ok(());
    }
    let path = format!("/proc/{pid}/{file}");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| Error::Userns(format!("cannot open {path}: {e}")))?;
    f.write_all(text.as_bytes()).map_err(|e| {
        Error::Userns(format!(
            "the kernel refused {file} `{}`: {e}",
            text.trim().replace('\n', ", ")
        ))
    })
}

/// Unprivileged: let the setuid helper write the map, if /etc/sub[ug]id
/// grants the ranges.
fn helper_map(pid: i32, helper: &str, subid: &str, text: &str) -> Result<(), Error> {
    if text.is_empty() {
        return Ok(());
    }
    let mut args = vec![pid.to_string()];
    for line in text.lines() {
        args.extend(line.split_whitespace().map(str::to_string));
    }
    let user = current_user_name();
    let out = std::process::Command::new(helper).args(&args).output().map_err(|e| {
        Error::Userns(format!(
            "cannot run {helper} ({e}): unprivileged users need it to map ids; install the Debian package uidmap"
        ))
    })?;
    if !out.status.success() {
        return Err(Error::Userns(format!(
            "{helper} refused the map `{}`: {}. An unprivileged user may map only ranges listed for it in {subid} (add a line like `{user}:100000:65536`) plus its own id",
            text.trim().replace('\n', ", "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn current_user_name() -> String {
    let uid = rustix::process::getuid().as_raw();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}
