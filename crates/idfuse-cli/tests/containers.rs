//! idfuse volumes idmapped by real container runtimes: systemd-nspawn's
//! `--bind=SRC:DST:idmap`, crun's `idmap` bind-mount option and LXC's
//! `idmap=container` mount entry, each on a busybox root filesystem built
//! here. Each checks that files the host owns
//! appear with the container's ids, that a file container-root creates is
//! stored with the fs id the mapping implies, and that the same runtime
//! refuses bindfs (a FUSE server that does not opt in), with
//! `idfuse idmap --probe` saying why. Recipes: docs/containers.md.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_idfuse");
/// Container root is host uid/gid 100000; 65536 ids.
const BASE: u32 = 100000;

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap_or_default();
    let p = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*p))
}

/// A FUSE server in the foreground at `path`: unmounted (lazily) and killed
/// by pid on drop, also when the test panics.
struct Server {
    path: PathBuf,
    child: Child,
}

impl Server {
    fn start(cmd: &mut Command, path: &Path) -> Server {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let s = Server {
            path: path.to_path_buf(),
            child,
        };
        let start = Instant::now();
        while !mounted(path) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{cmd:?} did not mount {}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if mounted(&self.path) {
            let _ = rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The scratch tree: a busybox root filesystem, a source directory with
/// host-owned files, and mountpoints.
struct Scene {
    dir: tempfile::TempDir,
}

impl Scene {
    /// None (with the reason printed) when no static busybox is installed.
    fn new(runtime: &str) -> Option<Scene> {
        let busybox = Path::new("/bin/busybox");
        let dir = tempfile::Builder::new()
            .prefix(&format!("idfuse-{runtime}."))
            .tempdir()
            .unwrap();
        // The container maps 100000.. and must be able to walk to its root.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let root = dir.path().join("rootfs");
        for d in [
            "bin", "usr/lib", "etc", "proc", "sys", "dev", "tmp", "run", "data",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        if !busybox.exists() {
            println!("skipped: no /bin/busybox to build a root filesystem from; install busybox-static (scripts/setup.sh does)");
            return None;
        }
        // Copied by cp(1), not std::fs::copy: a file this process held open
        // for writing would be inherited by whatever another test thread
        // forks meanwhile, and exec of it would fail with ETXTBSY until that
        // child execs.
        let copied = Command::new("cp")
            .arg(busybox)
            .arg(root.join("bin/busybox"))
            .status()
            .expect("run cp");
        assert!(copied.success(), "cp /bin/busybox into the root filesystem");
        for applet in ["sh", "id", "stat", "touch", "mkdir", "ls", "cat"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        // systemd-nspawn wants to recognise an OS tree.
        std::fs::write(
            root.join("usr/lib/os-release"),
            "ID=busybox\nNAME=busybox\n",
        )
        .unwrap();
        let ran = Command::new("chroot")
            .arg(&root)
            .args(["/bin/busybox", "true"])
            .output()
            .expect("run chroot");
        assert!(
            ran.status.success(),
            "/bin/busybox does not run in a bare root filesystem (is it busybox-static?): {}",
            String::from_utf8_lossy(&ran.stderr)
        );
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("by-host-root"), b"x").unwrap();
        std::fs::write(src.join("by-host-1000"), b"x").unwrap();
        chown(&src.join("by-host-1000"), 1000);
        std::fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        std::fs::create_dir(dir.path().join("view")).unwrap();
        std::fs::create_dir(dir.path().join("bindfs")).unwrap();
        Some(Scene { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `idfuse mount passthrough src view`, with no idmap of its own: the
    /// runtime idmaps it.
    fn idfuse(&self) -> Server {
        Server::start(
            Command::new(BIN)
                .args(["mount", "passthrough", "--foreground"])
                .arg(self.path("src"))
                .arg(self.path("view")),
            &self.path("view"),
        )
    }

    /// bindfs, which does not negotiate FUSE_ALLOW_IDMAP, on the same source.
    fn bindfs(&self) -> Option<Server> {
        if !have("bindfs") {
            println!(
                "skipped the refusal check: bindfs is not installed (scripts/setup.sh installs it)"
            );
            return None;
        }
        Some(Server::start(
            Command::new("bindfs")
                .arg("-f")
                .arg(self.path("src"))
                .arg(self.path("bindfs")),
            &self.path("bindfs"),
        ))
    }
}

fn chown(path: &Path, id: u32) {
    rustix::fs::chown(
        path,
        Some(rustix::fs::Uid::from_raw(id)),
        Some(rustix::fs::Gid::from_raw(id)),
    )
    .unwrap();
}

/// Run with a generous deadline (hang detection only).
fn run(cmd: &mut Command) -> Output {
    let mut full = Command::new("timeout");
    full.args(["--kill-after=10", "300"]).arg(cmd.get_program());
    full.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => full.env(k, v),
            None => full.env_remove(k),
        };
    }
    full.stdin(Stdio::null());
    full.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `stat -c '%u:%g %n'` lines printed in the container, as (name → ids).
fn owners(out: &Output) -> Vec<(String, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, n)| n.starts_with("/data/"))
        .map(|(ids, n)| (n.trim_start_matches("/data/").to_string(), ids.to_string()))
        .collect()
}

fn owner(list: &[(String, String)], name: &str) -> String {
    list.iter()
        .find(|(n, _)| n == name)
        .map(|(_, ids)| ids.clone())
        .unwrap_or_else(|| format!("(no {name} in {list:?})"))
}

/// What the container runs: show the owners, create a file as its root,
/// show the owners again.
const SCRIPT: &str =
    "id -u; stat -c '%u:%g %n' /data/*; touch /data/by-container-root && stat -c '%u:%g %n' /data/by-container-root";

fn assert_idmapped(runtime: &str, out: &Output, src: &Path) {
    assert!(out.status.success(), "{runtime} failed:\n{}", text(out));
    let seen = owners(out);
    // Host ids appear as the container's: fs id N is container id N.
    assert_eq!(
        owner(&seen, "by-host-root"),
        "0:0",
        "{runtime}: by-host-root inside\n{}",
        text(out)
    );
    assert_eq!(
        owner(&seen, "by-host-1000"),
        "1000:1000",
        "{runtime}: by-host-1000 inside\n{}",
        text(out)
    );
    assert_eq!(
        owner(&seen, "by-container-root"),
        "0:0",
        "{runtime}: by-container-root inside\n{}",
        text(out)
    );
    // Container root (host uid 100000) through the idmapped volume is
    // stored as fs id 0 on disk.
    let m = std::fs::metadata(src.join("by-container-root")).unwrap_or_else(|e| {
        panic!(
            "{runtime}: by-container-root not on disk ({e})\n{}",
            text(out)
        )
    });
    assert_eq!(
        (m.uid(), m.gid()),
        (0, 0),
        "{runtime}: by-container-root on disk"
    );
}

fn assert_probe_explains(path: &Path) {
    let o = Command::new(BIN)
        .args(["idmap", "--probe"])
        .arg(path)
        .output()
        .unwrap();
    assert!(!o.status.success(), "probe accepted bindfs:\n{}", text(&o));
    let said = text(&o);
    assert!(
        said.contains("did not opt in") && said.contains("FUSE_ALLOW_IDMAP"),
        "probe did not say why:\n{said}"
    );
}

fn nspawn(scene: &Scene, name: &str, bind: &str, script: &str) -> Output {
    run(Command::new("systemd-nspawn")
        .args([
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--console=pipe",
            "--settings=no",
            "--link-journal=no",
            "--resolv-conf=off",
            "--timezone=off",
            "--private-network",
        ])
        .arg(format!("--machine={name}"))
        .arg(format!("--private-users={BASE}:65536"))
        .arg("--directory")
        .arg(scene.path("rootfs"))
        .arg(format!("--bind={bind}"))
        .args(["/bin/sh", "-c", script]))
}

#[test]
fn systemd_nspawn_bind_idmap() {
    if !have("systemd-nspawn") {
        println!("skipped: systemd-nspawn is not installed (Debian package systemd-container; scripts/setup.sh installs it)");
        return;
    }
    let Some(scene) = Scene::new("nspawn") else {
        return;
    };
    let name = format!("idfuse-test-{}", std::process::id());
    let view = scene.path("view");
    {
        let _server = scene.idfuse();
        // Without idmap the container sees no owner it knows: nobody.
        let plain = nspawn(
            &scene,
            &name,
            &format!("{}:/data", view.display()),
            "stat -c '%u:%g %n' /data/*",
        );
        assert!(
            plain.status.success(),
            "systemd-nspawn failed:\n{}",
            text(&plain)
        );
        assert_eq!(
            owner(&owners(&plain), "by-host-1000"),
            "65534:65534",
            "without :idmap\n{}",
            text(&plain)
        );

        let out = nspawn(
            &scene,
            &name,
            &format!("{}:/data:idmap", view.display()),
            SCRIPT,
        );
        assert_idmapped("systemd-nspawn", &out, &scene.path("src"));
    }
    if let Some(_bindfs) = scene.bindfs() {
        let bindfs = scene.path("bindfs");
        let out = nspawn(
            &scene,
            &name,
            &format!("{}:/data:idmap", bindfs.display()),
            "touch /data/through-bindfs",
        );
        assert!(
            !out.status.success(),
            "systemd-nspawn idmapped bindfs:\n{}",
            text(&out)
        );
        assert!(
            !scene.path("src/through-bindfs").exists(),
            "the container ran anyway"
        );
        println!(
            "systemd-nspawn refused bindfs: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("")
        );
        assert_probe_explains(&bindfs);
    }
}

/// crun state lives in the scene, and the container is deleted on drop.
struct Crun<'a> {
    scene: &'a Scene,
    name: String,
}

impl Crun<'_> {
    fn run(&self, volume: &Path, script: &str) -> Output {
        let bundle = self.scene.path("bundle");
        let _ = std::fs::create_dir(&bundle);
        let config = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": ["/bin/sh", "-c", script],
                "env": ["PATH=/bin"],
                "cwd": "/"
            },
            "root": {"path": self.scene.path("rootfs"), "readonly": false},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
                {"destination": "/data", "type": "bind", "source": volume, "options": ["bind", "idmap"]}
            ],
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "user"}, {"type": "ipc"}, {"type": "uts"}],
                "uidMappings": [{"containerID": 0, "hostID": BASE, "size": 65536}],
                "gidMappings": [{"containerID": 0, "hostID": BASE, "size": 65536}]
            }
        });
        std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
        // crun 1.8 refuses a hybrid cgroup layout (v1 controllers plus a
        // v2 hierarchy at /sys/fs/cgroup/unified); with cgroups left alone
        // (--cgroup-manager=disabled) it needs only that hierarchy out of
        // its sight, in a mount namespace of its own.
        let hybrid = Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists();
        let crun = format!(
            "exec crun --root {} --cgroup-manager=disabled run --bundle {} {}",
            self.scene.path("crun-state").display(),
            bundle.display(),
            self.name
        );
        let script = if hybrid {
            format!("umount /sys/fs/cgroup/unified && {crun}")
        } else {
            crun
        };
        run(Command::new("unshare").args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ]))
    }
}

impl Drop for Crun<'_> {
    fn drop(&mut self) {
        let _ = Command::new("crun")
            .arg("--root")
            .arg(self.scene.path("crun-state"))
            .args(["delete", "--force", &self.name])
            .output();
    }
}

#[test]
fn crun_idmap_bind_mount() {
    if !have("crun") {
        println!(
            "skipped: crun is not installed (Debian package crun; scripts/setup.sh installs it)"
        );
        return;
    }
    let Some(scene) = Scene::new("crun") else {
        return;
    };
    let crun = Crun {
        scene: &scene,
        name: format!("idfuse-test-{}", std::process::id()),
    };
    {
        let _server = scene.idfuse();
        let out = crun.run(&scene.path("view"), SCRIPT);
        assert_idmapped("crun", &out, &scene.path("src"));
    }
    if let Some(_bindfs) = scene.bindfs() {
        let out = crun.run(&scene.path("bindfs"), "touch /data/through-bindfs");
        assert!(
            !out.status.success(),
            "crun idmapped bindfs:\n{}",
            text(&out)
        );
        assert!(
            !scene.path("src/through-bindfs").exists(),
            "the container ran anyway"
        );
        println!(
            "crun refused bindfs: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("")
        );
        assert_probe_explains(&scene.path("bindfs"));
    }
}

/// `lxc-execute` with a config file of the scene's; root's subordinate id
/// range comes from private copies of /etc/subuid and /etc/subgid bound
/// over the real ones in the command's own mount namespace, so the
/// machine's files are neither read for it nor changed.
fn lxc(scene: &Scene, name: &str, volume: &Path, script: &str) -> Output {
    let config = scene.path("lxc.conf");
    std::fs::write(
        &config,
        format!(
            "lxc.uts.name = {name}\n\
             lxc.rootfs.path = dir:{root}\n\
             lxc.idmap = u 0 {BASE} 65536\n\
             lxc.idmap = g 0 {BASE} 65536\n\
             lxc.mount.auto = proc:mixed sys:mixed\n\
             lxc.mount.entry = {volume} data none bind,create=dir,idmap=container 0 0\n\
             lxc.net.0.type = empty\n\
             lxc.apparmor.profile = unconfined\n",
            root = scene.path("rootfs").display(),
            volume = volume.display(),
        ),
    )
    .unwrap();
    for file in ["subuid", "subgid"] {
        let mine = std::fs::read_to_string(format!("/etc/{file}")).unwrap_or_default();
        std::fs::write(scene.path(file), format!("{mine}root:{BASE}:65536\n")).unwrap();
    }
    let lxcpath = scene.path("lxcpath");
    let _ = std::fs::create_dir(&lxcpath);
    let inner = format!(
        "mount --bind {uid} /etc/subuid && mount --bind {gid} /etc/subgid && \
         exec lxc-execute -n {name} -P {lxcpath} -f {config} -- /bin/sh -c \"$0\"",
        uid = scene.path("subuid").display(),
        gid = scene.path("subgid").display(),
        lxcpath = lxcpath.display(),
        config = config.display(),
    );
    run(Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &inner,
        script,
    ]))
}

#[test]
fn lxc_idmapped_mount_entry() {
    if !have("lxc-execute") {
        println!("skipped: LXC is not installed (Debian package lxc)");
        return;
    }
    let Some(scene) = Scene::new("lxc") else {
        return;
    };
    let name = format!("idfuse-test-{}", std::process::id());
    {
        let _server = scene.idfuse();
        let out = lxc(&scene, &name, &scene.path("view"), SCRIPT);
        assert_idmapped("lxc", &out, &scene.path("src"));
    }
    if let Some(_bindfs) = scene.bindfs() {
        let out = lxc(
            &scene,
            &name,
            &scene.path("bindfs"),
            "touch /data/through-bindfs",
        );
        assert!(
            !out.status.success(),
            "lxc idmapped bindfs:\n{}",
            text(&out)
        );
        assert!(
            !scene.path("src/through-bindfs").exists(),
            "the container ran anyway"
        );
        let why = String::from_utf8_lossy(&out.stderr);
        println!(
            "lxc refused bindfs: {}",
            why.lines()
                .find(|l| l.contains("idmap"))
                .unwrap_or_else(|| why.lines().next().unwrap_or(""))
        );
        assert_probe_explains(&scene.path("bindfs"));
    }
}
