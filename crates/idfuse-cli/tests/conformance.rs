//! The conformance suite as CI runs it: the default run passes on tmpfs,
//! memfs and passthrough with no differences; each deliberate memfs fault
//! makes a named scenario fail; a server that does not opt in gets A1's
//! explanation and skips; the overlay target passes with only its
//! documented differences; and an interrupted run leaves nothing behind.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_idfuse");

fn conformance(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("conformance")
        .args(args)
        .output()
        .expect("run idfuse conformance");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn leftovers() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("idfuse-conformance"))
        .map(str::to_string)
        .collect()
}

/// What is in `dir` (names only).
fn entries(dir: &std::path::Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").file_name())
        .collect()
}

#[test]
fn default_run_passes_with_no_differences() {
    let (ok, text) = conformance(&[]);
    assert!(ok, "{text}");
    let last = text
        .lines()
        .rfind(|l| l.contains(" passed, "))
        .unwrap_or("");
    assert!(last.contains(" 0 failed"), "{last}");
    for t in ["tmpfs", "memfs", "passthrough"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("pass  B1  ") && l.contains(t)),
            "B1 on {t}:\n{text}"
        );
    }
    assert!(leftovers().is_empty());
}

/// `--target overlay`: every scenario on an idfuse overlay over fresh tmpfs
/// layers, differential against tmpfs; only the documented differences
/// (O5: a lower directory does not rename; K1 with userxattr: no
/// RENAME_WHITEOUT) may show, as passes with reasons.
#[test]
fn overlay_target_passes_with_only_documented_differences() {
    // The overlay's metadata in trusted.overlay.*, and in user.overlay.*.
    for target in ["overlay", "overlay:userxattr"] {
        let (ok, text) = conformance(&["--target", target]);
        assert!(
            !text.contains("target did not start"),
            "the {target} target did not start:\n{text}"
        );
        assert!(ok, "{target}: {text}");
        let last = text
            .lines()
            .rfind(|l| l.contains(" passed, "))
            .unwrap_or("");
        assert!(last.contains(" 0 failed"), "{target}: {last}");
        let on_target = |l: &&str| l.contains(&format!(" {target} "));
        for id in ["B1", "J1", "K1", "O1", "O2", "O3", "O4", "O5", "O6"] {
            assert!(
                text.lines()
                    .filter(on_target)
                    .any(|l| l.starts_with(&format!("pass  {id} "))),
                "{id} on {target}:\n{text}"
            );
        }
        // O6: as root the overlay reads lower files through FUSE passthrough.
        for (id, errno) in [("O5", "EXDEV"), ("O6", "ETXTBSY")] {
            let line = text
                .lines()
                .filter(on_target)
                .find(|l| l.starts_with(&format!("pass  {id} ")))
                .unwrap_or("");
            assert!(
                line.contains("documented difference") && line.contains(errno),
                "{id} on {target} should pass as a documented difference: {line}"
            );
        }
        assert!(leftovers().is_empty());
    }
}

#[test]
fn every_fault_is_caught_by_a_named_scenario() {
    for (fault, scenario) in [
        ("daemon-owner", "B1"),
        ("ignore-dont-mask", "E2"),
        ("no-setgid-inherit", "E1"),
        ("drop-acl-xattrs", "F1"),
        ("deny-absent-caller", "B1"),
    ] {
        let target = format!("memfs:fault={fault}");
        let (ok, text) = conformance(&["--target", &target, "--differential"]);
        assert!(!ok, "fault {fault} went unnoticed:\n{text}");
        let line = format!("FAIL  {scenario} ");
        assert!(
            text.lines().any(|l| l.starts_with(&line)),
            "fault {fault} should fail {scenario}:\n{text}"
        );
    }
    assert!(leftovers().is_empty());
}

#[test]
fn a_server_that_does_not_opt_in_is_explained_and_skipped() {
    let src = tempfile::tempdir().unwrap();
    let target = format!("cmd:bindfs {} {{mnt}}", src.path().display());
    let (ok, text) = conformance(&["--target", &target]);
    assert!(ok, "{text}");
    assert!(text.lines().any(|l| l.starts_with("pass  A1 ")), "{text}");
    let b1 = text
        .lines()
        .find(|l| l.starts_with("skip  B1 "))
        .unwrap_or("");
    assert!(
        b1.contains("did not opt in"),
        "B1 skipped with its cause: {b1}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("pass  B")),
        "nothing idmapped can pass:\n{text}"
    );
    assert!(leftovers().is_empty());
    // The scenarios' scratch directories went through bindfs into the
    // source, which is the user's: they are gone again.
    let left = entries(src.path());
    assert!(left.is_empty(), "left in the source: {left:?}");
}

/// A path target's directory is the user's: the run leaves nothing in it.
#[test]
fn a_path_target_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let target = format!("path:{}", dir.path().display());
    let (ok, text) = conformance(&["--target", &target, "--only", "A"]);
    assert!(ok, "{text}");
    let left = entries(dir.path());
    assert!(left.is_empty(), "left in the directory: {left:?}");
}

/// A target that cannot start fails the run (exit status and FAIL lines),
/// rather than showing as skips that exit 0.
#[test]
fn a_target_that_does_not_start_fails_the_run() {
    // The daemon refuses an option it does not know, so it never mounts.
    let (ok, text) = conformance(&["--target", "passthrough:no_such_option", "--only", "A1"]);
    assert!(!ok, "a target that did not start passed:\n{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL  A1 ") && l.contains("target did not start")),
        "{text}"
    );
    assert!(leftovers().is_empty());
}

#[test]
fn interrupted_runs_leave_nothing_mounted() {
    for sig in [libc::SIGINT, libc::SIGKILL] {
        let mut child = Command::new(BIN)
            .args([
                "conformance",
                "--target",
                "memfs",
                "--target",
                "passthrough",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150));
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(child.id() as i32, sig) };
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the suite did not stop on signal {sig}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Its mounts live in a private mount namespace that dies with the
        // last process in it; its daemons die with it (parent-death signal).
        let dir = idfuse_conformance::run_dir(child.id());
        let mine = format!("{}/", dir.display());
        let start = Instant::now();
        let alive = || {
            let out = Command::new("pgrep").args(["-f", &mine]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        while !alive().is_empty() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            alive().is_empty(),
            "daemons of the suite left after signal {sig}: {}",
            alive()
        );
        assert!(
            leftovers().iter().all(|l| !l.contains(&mine)),
            "after signal {sig}: {:?}",
            leftovers()
        );
        // What a killed run cannot delete itself, the next run does.
        idfuse_conformance::remove_stale_runs();
        assert!(
            !dir.exists(),
            "{} is left in the temp directory after signal {sig}",
            dir.display()
        );
    }
}
