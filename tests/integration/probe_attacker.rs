//! The snapshot-point probe against the user at the other side of a shared disk: uid 65534 on
//! a 1777 filesystem that the agent (root) freezes plants links and folders where the markers
//! go. Each run must leave root's canary (in a folder that user cannot write) as it was, say
//! why that filesystem got no marker, and still take its snapshot.

use freezeframe_agent::freeze::probe::PROBE_DIR;
use freezeframe_tests::attacker::{as_nobody, nobody_dir, nobody_sh, Canary};
use freezeframe_tests::*;
use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const NAME: &str = "shared-1";

/// A 1777 ext4 filesystem frozen by a local-image configuration, and root's canary beside it.
struct SharedDisk {
    fs: ScratchFs,
    config: PathBuf,
    canary: Canary,
}

impl SharedDisk {
    fn new() -> SharedDisk {
        let fs = scratch_fs(Fs::Ext4);
        std::fs::set_permissions(&fs.mountpoint, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let config = local_image_config(&fs, "");
        let canary = Canary::new(fs.dir.path());
        SharedDisk { fs, config, canary }
    }

    fn probe_dir(&self) -> PathBuf {
        self.fs.mountpoint.join(PROBE_DIR)
    }

    fn snapshot(&self, failpoints: Option<&str>) -> (Output, String) {
        let mut cmd = Command::new(agent_bin());
        cmd.arg("--config")
            .arg(&self.config)
            .args(["snapshot", "--json", "--name", NAME]);
        if let Some(points) = failpoints {
            cmd.env("FAILPOINTS", points);
        }
        let out = cmd.output().expect("run the agent");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out, said)
    }

    /// The run took its snapshot, and warned that the probe folder was not used because `why`.
    fn assert_refused(&self, out: &Output, said: &str, why: &str) {
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {said}"));
        assert_eq!(report["status"], "succeeded", "{said}");
        let dir = self.probe_dir().display().to_string();
        let warned = report["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|w| w.as_str())
            .any(|w| w.contains(&dir) && w.contains(why) && w.contains(&format!("rm -r {dir}")));
        assert!(warned, "no warning naming {dir}, {why:?} and the fix: {said}");
    }
}

/// Before the fix, root followed the link and unlinked every regular file in the folder it led
/// to (here the canary's), then wrote its markers there.
#[test]
fn a_probe_folder_linked_elsewhere_is_not_followed() {
    let disk = SharedDisk::new();
    nobody_sh(&format!(
        "ln -s {} {}",
        disk.canary.folder().display(),
        disk.probe_dir().display()
    ));
    let (out, said) = disk.snapshot(None);
    disk.canary.assert_untouched("a run with a linked probe folder");
    disk.assert_refused(&out, &said, "is a symbolic link");
}

/// Before the fix, root opened the planted `NAME.before` with O_CREAT|O_TRUNC through the
/// link, truncating and rewriting the canary.
#[test]
fn a_probe_folder_that_user_owns_is_not_used() {
    let disk = SharedDisk::new();
    nobody_dir(&disk.probe_dir(), 0o755);
    nobody_sh(&format!(
        "ln -s {} {}/{NAME}.before",
        disk.canary.path.display(),
        disk.probe_dir().display()
    ));
    let (out, said) = disk.snapshot(None);
    disk.canary
        .assert_untouched("a run with a probe folder of uid 65534's");
    disk.assert_refused(&out, &said, "belongs to uid 65534, not root");
}

/// A watcher of uid 65534's that plants `NAME.after` → canary as soon as `NAME.before`
/// appears: before the fix root wrote its `after` marker through that link after the thaw. The
/// window is held open (a failpoint) so that, before the fix, the watcher always wins.
#[test]
fn a_marker_link_planted_between_before_and_after_is_not_followed() {
    let disk = SharedDisk::new();
    nobody_dir(&disk.probe_dir(), 0o777);
    let mut watcher = Watcher::start(&disk.probe_dir(), &disk.canary.path);
    let (out, said) = disk.snapshot(Some("local-image-copy=sleep(3000)"));
    let planted = watcher.stop();
    disk.canary
        .assert_untouched("a run raced by a watcher planting the after marker");
    disk.assert_refused(&out, &said, "belongs to uid 65534, not root");
    assert!(
        !planted,
        "NAME.before appeared in a folder that user writes: {said}"
    );
}

/// A run on a filesystem where no one interfered still leaves its markers (the tests above
/// would pass vacuously if the probe never wrote anything).
#[test]
fn on_a_shared_disk_root_s_own_probe_folder_gets_both_markers() {
    let disk = SharedDisk::new();
    let (out, said) = disk.snapshot(None);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {said}"));
    assert_eq!(report["status"], "succeeded", "{said}");
    assert_eq!(report["warnings"], serde_json::json!([]), "{said}");
    let meta = std::fs::symlink_metadata(disk.probe_dir()).unwrap();
    assert!(meta.is_dir());
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
    for moment in ["before", "after"] {
        assert!(
            disk.probe_dir().join(format!("{NAME}.{moment}")).is_file(),
            "{said}"
        );
    }
}

/// The watcher: this test binary again, running [`plant_after_marker_when_before_appears`] as
/// uid 65534.
struct Watcher {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Watcher {
    fn start(dir: &Path, target: &Path) -> Watcher {
        let mut child = as_nobody(std::env::current_exe().unwrap())
            .args([
                "probe_attacker::plant_after_marker_when_before_appears",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WATCH_DIR, dir)
            .env(PLANT_TARGET, target)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the watcher");
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        // Dropped (the child killed) if it never says so. Its words follow libtest's own.
        let watcher = Watcher { child, lines };
        loop {
            let line = watcher
                .lines
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("the watcher says it is watching");
            if line.ends_with("watching") {
                return watcher;
            }
        }
    }

    /// Stops it; whether it planted its link.
    fn stop(&mut self) -> bool {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.lines.try_iter().any(|l| l.contains("planted"))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const WATCH_DIR: &str = "FREEZEFRAME_TEST_WATCH_DIR";
const PLANT_TARGET: &str = "FREEZEFRAME_TEST_PLANT_TARGET";

/// Not a test: the watcher [`Watcher`] runs (as uid 65534). Does nothing unless started so.
#[test]
#[ignore = "run by a_marker_link_planted_between_before_and_after_is_not_followed, as uid 65534"]
fn plant_after_marker_when_before_appears() {
    let (Some(dir), Some(target)) = (std::env::var_os(WATCH_DIR), std::env::var_os(PLANT_TARGET)) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let c_dir = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str())).unwrap();
    // SAFETY: inotify_init1 takes flags only; inotify_add_watch reads the NUL-terminated path,
    // which outlives the call.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    assert!(fd >= 0, "inotify_init1: {}", std::io::Error::last_os_error());
    // SAFETY: as above.
    let wd = unsafe { libc::inotify_add_watch(fd, c_dir.as_ptr(), libc::IN_CREATE | libc::IN_MOVED_TO) };
    assert!(wd >= 0, "inotify_add_watch: {}", std::io::Error::last_os_error());
    println!("watching");
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: read into a buffer of this frame, at most its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        assert!(n > 0, "read inotify: {}", std::io::Error::last_os_error());
        let mut at = 0;
        while at + 16 <= n as usize {
            let len = u32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap()) as usize;
            let name = &buf[at + 16..at + 16 + len];
            let name = String::from_utf8_lossy(name.split(|b| *b == 0).next().unwrap_or(&[]));
            if let Some(snapshot) = name.strip_suffix(".before") {
                std::os::unix::fs::symlink(&target, dir.join(format!("{snapshot}.after"))).unwrap();
                println!("planted");
                return;
            }
            at += 16 + len;
        }
    }
}
