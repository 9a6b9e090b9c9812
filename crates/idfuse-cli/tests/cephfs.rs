//! `idfuse mount cephfs` against a real single-node Ceph cluster started by
//! scripts/ceph-cluster.sh (Debian's Ceph 16; setup.sh installs it).
//!
//! Two idfuse mounts of one CephFS, idmapped b:0:100000:65536 ("host A")
//! and b:0:200000:65536 ("host B"), plus ceph-fuse as the unmapped view:
//! ownership, data, coherence of rename/unlink/chmod, concurrent O_APPEND,
//! the permission contract, faults (SIGKILL of the daemon; MDS and OSD
//! paused), and the mount errors. One cluster serves the whole test (a
//! start costs seconds); it is stopped in a guard, also on panic, after
//! every client is unmounted and reaped.
#![cfg(feature = "cephfs")]

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_idfuse");
/// Hang detection only: on a busy machine the cluster may be slow.
const DEADLINE: Duration = Duration::from_secs(60);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ceph-cluster.sh")
}

struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("idfuse-ceph.")
            .tempdir()
            .unwrap();
        let st = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .status()
            .expect("run scripts/ceph-cluster.sh (setup.sh installs Ceph)");
        let c = Self { dir };
        assert!(st.success(), "ceph-cluster.sh start failed");
        c
    }
    fn conf(&self) -> PathBuf {
        self.dir.path().join("ceph.conf")
    }
    fn daemon_pid(&self, name: &str) -> i32 {
        std::fs::read_to_string(self.dir.path().join(format!("run/{name}.daemon-pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Cluster {
    fn ceph(&self, args: &[&str]) -> String {
        let out = Command::new("timeout")
            .arg("30")
            .arg("ceph")
            .arg("-c")
            .arg(self.conf())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ceph {args:?}: {:?}", out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    /// Evict the MDS session of the client process `pid` (found by the pid
    /// in the session's client metadata).
    fn evict(&self, pid: i32) {
        let ls = self.ceph(&["tell", "mds.a", "client", "ls", "--format=json"]);
        let v: serde_json::Value = serde_json::from_str(&ls).unwrap();
        let id = v
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["client_metadata"]["pid"].as_str() == Some(&pid.to_string()))
            .and_then(|s| s["id"].as_u64())
            .unwrap_or_else(|| panic!("no session of pid {pid}: {ls}"));
        self.ceph(&["tell", "mds.a", "client", "evict", &format!("id={id}")]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

fn mounted(path: &Path) -> bool {
    let p = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*p))
}

/// A FUSE client in the foreground, our child: unmounted and reaped on drop.
struct Client {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Client {
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn wait_mounted(mut self) -> Self {
        let t = Instant::now();
        while !mounted(self.path()) {
            if let Some(c) = &mut self.child {
                if let Ok(Some(st)) = c.try_wait() {
                    let mut err = String::new();
                    if let Some(e) = c.stderr.as_mut() {
                        let _ = e.read_to_string(&mut err);
                    }
                    panic!("client exited before mounting: {st}: {err}");
                }
            }
            assert!(t.elapsed() < DEADLINE, "mount did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        self
    }
    fn idfuse(c: &Cluster, idmap: Option<&str>) -> Self {
        Self::idfuse_with(idmap, &format!("conf={}", c.conf().display()))
    }
    /// As [`Self::idfuse`], with these `-o` options (conf= among them).
    fn idfuse_with(idmap: Option<&str>, opts: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("idfuse-ceph-mnt.")
            .tempdir()
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["mount", "cephfs"])
            .arg(dir.path())
            .arg("-o")
            .arg(opts)
            .arg("--foreground")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(m) = idmap {
            cmd.args(["--idmap", m]);
        }
        let child = cmd.spawn().unwrap();
        Self {
            dir,
            child: Some(child),
        }
        .wait_mounted()
    }
    fn ceph_fuse(c: &Cluster) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("idfuse-ceph-mnt.")
            .tempdir()
            .unwrap();
        let child = Command::new("ceph-fuse")
            .arg("-f")
            .arg("-c")
            .arg(c.conf())
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ceph-fuse (setup.sh installs it)");
        Self {
            dir,
            child: Some(child),
        }
        .wait_mounted()
    }
    fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }
    /// Unmount and let the daemon end its Ceph session itself (a killed
    /// one holds its capabilities until the MDS times the session out,
    /// a minute, which stalls the next client); kill it only if it has not
    /// exited by the deadline. Gives what it wrote to stderr.
    fn stop(mut self) -> String {
        let _ = rustix::mount::unmount(self.path(), rustix::mount::UnmountFlags::DETACH);
        let mut err = String::new();
        if let Some(mut c) = self.child.take() {
            let t = Instant::now();
            while matches!(c.try_wait(), Ok(None)) && t.elapsed() < DEADLINE {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            if let Some(e) = c.stderr.as_mut() {
                let _ = e.read_to_string(&mut err);
            }
        }
        err
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(self.path(), rustix::mount::UnmountFlags::DETACH);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Run `f` on a thread whose fs ids are `uid`/`gid` (per-thread, as the
/// syscalls are), optionally keeping CAP_DAC_OVERRIDE.
fn as_user<T: Send>(uid: u32, gid: u32, keep_dac: bool, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: thread-local credential changes on a scoped thread
            // that ends right after `f`.
            unsafe {
                if keep_dac {
                    // SECBIT_NO_SETUID_FIXUP: changing the fsuid keeps the
                    // effective capabilities.
                    assert_eq!(libc::prctl(libc::PR_SET_SECUREBITS, 1 << 2, 0, 0, 0), 0);
                }
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>());
                libc::syscall(libc::SYS_setfsgid, gid);
                libc::syscall(libc::SYS_setfsuid, uid);
            }
            f()
        })
        .join()
        .unwrap()
    })
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < DEADLINE,
            "{what}: not seen within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    t.elapsed()
}

fn run_idfuse(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One cluster at a time from this binary: each is ~120 MB and a CPU burst.
static ONE_CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn cephfs_two_hosts() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let cluster = Cluster::start();
    eprintln!("cephfs: cluster up in {:?}", t0.elapsed());
    let plain = Client::ceph_fuse(&cluster);
    // A shared directory anyone may create in, made through the unmapped view.
    let shared = plain.p("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();

    let a = Client::idfuse(&cluster, Some("b:0:100000:65536"));
    let b = Client::idfuse(&cluster, Some("b:0:200000:65536"));

    // Ownership: container uid 1000 on host A is host uid 101000.
    as_user(101000, 101000, false, || {
        let mut f = std::fs::File::create(a.p("shared/f")).unwrap();
        f.write_all(b"written on A\n").unwrap();
        f.sync_all().unwrap();
        std::fs::create_dir(a.p("shared/d")).unwrap();
    });
    let on_a = std::fs::metadata(a.p("shared/f")).unwrap();
    assert_eq!((on_a.uid(), on_a.gid()), (101000, 101000));
    let on_b = std::fs::metadata(b.p("shared/f")).unwrap();
    assert_eq!((on_b.uid(), on_b.gid()), (201000, 201000));
    let in_ceph = std::fs::metadata(plain.p("shared/f")).unwrap();
    assert_eq!((in_ceph.uid(), in_ceph.gid()), (1000, 1000));
    let d = std::fs::metadata(plain.p("shared/d")).unwrap();
    assert_eq!((d.uid(), d.gid()), (1000, 1000));

    // Data written and fsync'ed on A is read on B.
    assert_eq!(
        std::fs::read(b.p("shared/f")).unwrap(),
        b"written on A\n".to_vec()
    );
    // And a rewrite on B reaches A's (cached) view.
    as_user(201000, 201000, false, || {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(b.p("shared/f"))
            .unwrap();
        f.write_all(b"rewritten on B\n").unwrap();
        f.sync_all().unwrap();
    });
    let t = wait_for("B's rewrite on A", || {
        std::fs::read(a.p("shared/f")).ok().as_deref() == Some(b"rewritten on B\n")
    });
    eprintln!("cephfs: data rewrite on B seen on A after {t:?}");

    // chmod, rename, unlink on A are seen on B.
    as_user(101000, 101000, false, || {
        std::fs::set_permissions(a.p("shared/f"), std::fs::Permissions::from_mode(0o600)).unwrap();
    });
    let t = wait_for("chmod", || {
        std::fs::metadata(b.p("shared/f")).is_ok_and(|m| m.mode() & 0o7777 == 0o600)
    });
    eprintln!("cephfs: chmod on A seen on B after {t:?}");
    as_user(101000, 101000, false, || {
        std::fs::rename(a.p("shared/f"), a.p("shared/g")).unwrap();
    });
    let t = wait_for("rename", || {
        b.p("shared/g").exists() && !b.p("shared/f").exists()
    });
    eprintln!("cephfs: rename on A seen on B after {t:?}");
    as_user(101000, 101000, false, || {
        std::fs::remove_file(a.p("shared/g")).unwrap();
    });
    let t = wait_for("unlink", || !b.p("shared/g").exists());
    eprintln!("cephfs: unlink on A seen on B after {t:?}");

    // The kernel decides permissions, not libcephfs: a caller with
    // CAP_DAC_OVERRIDE and container uid 1000 may create in the
    // root-owned 0755 root; Ceph records uid 1000 (libcephfs would refuse
    // a UserPerm of uid 1000 here without fuse_default_permissions=true).
    let root = std::fs::metadata(plain.path()).unwrap();
    assert_eq!((root.uid(), root.mode() & 0o777), (0, 0o755));
    as_user(101000, 101000, true, || {
        std::fs::write(a.p("by-override"), b"x").unwrap();
    });
    let m = std::fs::metadata(plain.p("by-override")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1000));
    // Without the capability the kernel refuses, before the daemon sees it.
    let denied = as_user(101000, 101000, false, || {
        std::fs::write(a.p("denied"), b"x")
            .unwrap_err()
            .raw_os_error()
    });
    assert_eq!(denied, Some(libc::EACCES));

    eprintln!("cephfs: Concurrent O_APPEND from tw at {:?}", t0.elapsed());
    // Concurrent O_APPEND from two hosts: 2 x 100 lines, none lost.
    std::fs::write(plain.p("shared/log"), b"").unwrap();
    std::fs::set_permissions(
        plain.p("shared/log"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    std::thread::scope(|s| {
        for (who, client, uid) in [("a", &a, 101000u32), ("b", &b, 201000u32)] {
            s.spawn(move || {
                as_user(uid, uid, false, || {
                    for i in 0..100 {
                        let mut f = std::fs::OpenOptions::new()
                            .append(true)
                            .open(client.p("shared/log"))
                            .unwrap();
                        f.write_all(format!("{who}{i}\n").as_bytes()).unwrap();
                    }
                })
            });
        }
    });
    let log = String::from_utf8(std::fs::read(plain.p("shared/log")).unwrap()).unwrap();
    let mut lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 200, "{log}");
    lines.sort_unstable();
    lines.dedup();
    assert_eq!(lines.len(), 200);

    eprintln!("cephfs: MDS, then OSD, paused at {:?}", t0.elapsed());
    // MDS, then OSD, paused for 3 s while A works: the work waits and
    // completes once the daemon is back; the client survives; nothing
    // fsync'ed is lost.
    for daemon in ["mds.a", "osd.0"] {
        let pid = cluster.daemon_pid(daemon);
        let dir = format!("shared/{}", daemon.replace('.', "-"));
        std::thread::scope(|s| {
            let worker = s.spawn(|| {
                as_user(101000, 101000, false, || {
                    std::fs::create_dir(a.p(&dir)).unwrap();
                    for i in 0..12 {
                        let mut f = std::fs::File::create(a.p(&format!("{dir}/{i}"))).unwrap();
                        f.write_all(format!("{daemon} {i}\n").as_bytes()).unwrap();
                        f.sync_all().unwrap();
                        std::thread::sleep(Duration::from_millis(150));
                    }
                })
            });
            std::thread::sleep(Duration::from_millis(500));
            // SAFETY: pausing a daemon of our own cluster by its recorded pid.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            std::thread::sleep(Duration::from_secs(3));
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGCONT) };
            worker.join().unwrap();
        });
        for i in 0..12 {
            assert_eq!(
                std::fs::read_to_string(b.p(&format!("{dir}/{i}"))).unwrap(),
                format!("{daemon} {i}\n")
            );
        }
    }
    assert!(mounted(a.path()));

    eprintln!("cephfs: SIGKILL of our daemon at {:?}", t0.elapsed());
    // SIGKILL of our daemon: its callers get ENOTCONN; what it fsync'ed is
    // intact on the other host. The dead client's caps block B until the
    // MDS ends its session (session_timeout, 60 s by default) or, as here,
    // an operator evicts it.
    let mut k = Client::idfuse(&cluster, Some("b:0:100000:65536"));
    as_user(101000, 101000, false, || {
        let mut f = std::fs::File::create(k.p("shared/before-kill")).unwrap();
        f.write_all(b"synced").unwrap();
        f.sync_all().unwrap();
    });
    // SAFETY: our own child.
    unsafe { libc::kill(k.pid(), libc::SIGKILL) };
    if let Some(c) = k.child.as_mut() {
        let _ = c.wait();
    }
    let err = std::fs::metadata(k.p("shared")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN));
    let killed = k.pid();
    drop(k);
    cluster.evict(killed);
    let t = Instant::now();
    assert_eq!(
        std::fs::read(b.p("shared/before-kill")).unwrap(),
        b"synced".to_vec()
    );
    eprintln!(
        "cephfs: the killed client's file read on B after {:?}",
        t.elapsed()
    );

    eprintln!("cephfs: Mount errors, each naming at {:?}", t0.elapsed());
    // Mount errors, each naming what failed.
    let mnt = tempfile::tempdir().unwrap();
    let m = mnt.path().to_str().unwrap();
    let conf = cluster.conf();
    let conf = conf.to_str().unwrap();
    let (ok, err) = run_idfuse(&[
        "mount",
        "cephfs",
        m,
        "-o",
        &format!("conf={conf},fs=nosuchfs,mount_timeout=5"),
    ]);
    assert!(
        !ok && err.contains("no file system named `nosuchfs`"),
        "{err}"
    );
    let (ok, err) = run_idfuse(&[
        "mount",
        "cephfs",
        m,
        "-o",
        &format!("conf={conf},path=/no/such/dir,mount_timeout=5"),
    ]);
    assert!(!ok && err.contains("/no/such/dir does not exist"), "{err}");
    let wrong = cluster.dir.path().join("wrong.keyring");
    let st = Command::new("ceph-authtool")
        .arg(&wrong)
        .args(["--create-keyring", "--gen-key", "-n", "client.admin"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let (ok, err) = run_idfuse(&[
        "mount",
        "cephfs",
        m,
        "-o",
        &format!(
            "conf={conf},keyring={},mount_timeout=5",
            wrong.to_str().unwrap()
        ),
    ]);
    assert!(
        !ok && err.contains("refused to authenticate client.admin"),
        "{err}"
    );
    eprintln!("cephfs: An unreachable cluster at {:?}", t0.elapsed());
    // An unreachable cluster: its own directory, so the keyring path in
    // the conf still resolves.
    let un = cluster.dir.path().join("unreachable");
    std::fs::create_dir(&un).unwrap();
    let text = std::fs::read_to_string(cluster.conf()).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("mon host") {
                "mon host = [v2:127.0.0.1:9,v1:127.0.0.1:10]".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(un.join("ceph.conf"), text + "\n").unwrap();
    let keyring = cluster.dir.path().join("ceph.client.admin.keyring");
    let t = Instant::now();
    let (ok, err) = run_idfuse(&[
        "mount",
        "cephfs",
        m,
        "-o",
        &format!(
            "conf={},keyring={},mount_timeout=3",
            un.join("ceph.conf").display(),
            keyring.display()
        ),
    ]);
    assert!(
        !ok && err.contains("no Ceph monitor answered") && err.contains("127.0.0.1:9"),
        "{err}"
    );
    assert!(t.elapsed() < DEADLINE);
    assert!(!mounted(mnt.path()));

    eprintln!("cephfs: teardown at {:?}", t0.elapsed());
    drop(a);
    drop(b);
    drop(plain);
    drop(cluster);
    eprintln!("cephfs: done at {:?}", t0.elapsed());
}

/// A rename over one name of a hard-linked file leaves the file's other
/// names in place. libcephfs 16.2.15, and so ceph-fuse, loses them from
/// its cache when the MDS confirms such a rename (the "safe" reply, sent
/// once the MDS journal is flushed), and then answers ENOENT for them
/// and lists their directories without them; idfuse-cephfs makes these
/// renames through a second, short-lived client (RELIABILITY.md).
#[test]
fn rename_over_a_hard_link_keeps_the_files_other_names() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start();
    // No kernel caching: every lookup and listing asks the daemon.
    let m = Client::idfuse_with(
        None,
        &format!("conf={},timeout=0", cluster.conf().display()),
    );
    let names = |dir: PathBuf| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
            .map(|e| {
                e.expect("a directory entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        v.sort();
        v
    };
    const ROUNDS: usize = 3;
    for r in 0..ROUNDS {
        let (a, b) = (m.p(&format!("r{r}/a")), m.p(&format!("r{r}/b")));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        // One file with three names, two of them in `a`.
        std::fs::write(a.join("f"), "old").unwrap();
        std::fs::hard_link(a.join("f"), a.join("l1")).unwrap();
        std::fs::hard_link(a.join("f"), b.join("l2")).unwrap();
        std::fs::write(b.join("src"), "new").unwrap();
        // Listed in full, the directories are "complete" in libcephfs's
        // cache: it then answers for absent names itself.
        assert_eq!(names(a.clone()), ["f", "l1"]);
        assert_eq!(names(b.clone()), ["l2", "src"]);
        std::fs::rename(b.join("src"), b.join("l2"))
            .unwrap_or_else(|e| panic!("round {r}: rename over the hard link: {e}"));
    }
    // The MDS confirms the renames when its journal is flushed (otherwise
    // on its next tick, up to 5 s later); the client handles the replies
    // as they come, so give them a moment. Were they late, the old names
    // would merely not yet be lost: this cannot fail a correct client.
    cluster.ceph(&["tell", "mds.a", "flush", "journal"]);
    std::thread::sleep(Duration::from_millis(500));
    for r in 0..ROUNDS {
        let (a, b) = (m.p(&format!("r{r}/a")), m.p(&format!("r{r}/b")));
        assert_eq!(
            names(a.clone()),
            ["f", "l1"],
            "round {r}: the file's other names"
        );
        for n in ["f", "l1"] {
            let md =
                std::fs::metadata(a.join(n)).unwrap_or_else(|e| panic!("round {r}: a/{n}: {e}"));
            assert_eq!(md.nlink(), 2, "round {r}: a/{n}'s link count");
            assert_eq!(
                std::fs::read(a.join(n)).unwrap(),
                b"old",
                "round {r}: a/{n}"
            );
        }
        assert_eq!(names(b.clone()), ["l2"], "round {r}: the renamed directory");
        assert_eq!(
            std::fs::read(b.join("l2")).unwrap(),
            b"new",
            "round {r}: b/l2"
        );
    }
    m.stop();

    // Where the second client cannot be made (here: its ceph.conf is gone
    // since the mount), the rename is still made, through the main client,
    // and the log says what that risks.
    // (Ceph takes the cluster's name, and so the keyring's, from the
    // conf's file name: the copy keeps it.)
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("ceph.conf");
    std::fs::copy(cluster.conf(), &conf).unwrap();
    let m = Client::idfuse_with(None, &format!("conf={},timeout=0", conf.display()));
    drop(conf_dir);
    let d = m.p("fallback");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("f"), "old").unwrap();
    std::fs::hard_link(d.join("f"), d.join("l")).unwrap();
    std::fs::write(d.join("src"), "new").unwrap();
    std::fs::rename(d.join("src"), d.join("l"))
        .unwrap_or_else(|e| panic!("the rename through the main client failed: {e}"));
    assert_eq!(std::fs::read(d.join("l")).unwrap(), b"new");
    let log = m.stop();
    assert!(
        log.contains("a second CephFS client for a rename over a hard-linked file failed")
            && log.contains("renaming through this one"),
        "{log}"
    );
    drop(cluster);
}

/// `idfuse conformance --target cephfs` (its own cluster), differential
/// against tmpfs: every scenario passes or is a named skip (J1/J2 need an
/// unprivileged mount, which a Ceph client is not).
#[test]
fn conformance_on_cephfs() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(BIN)
        .args(["conformance", "--target", "cephfs", "--differential"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let last = text
        .lines()
        .rfind(|l| l.contains(" passed, "))
        .unwrap_or("");
    assert!(last.contains(" 0 failed"), "{text}");
    for l in text
        .lines()
        .filter(|l| l.starts_with("skip") && l.contains(" cephfs "))
    {
        // J1/J2 mount in a user namespace, which cephfs does not; O1–O4
        // look at an overlay's layers.
        assert!(
            l.contains("  J1  ")
                || l.contains("  J2  ")
                || (l.contains("  O") && l.contains("not an overlay target")),
            "unexpected skip on cephfs: {l}"
        );
    }
    assert!(
        text.lines().any(|l| l.starts_with("pass  B1  cephfs")),
        "{text}"
    );
}
