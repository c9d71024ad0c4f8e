//! Test kit for freezeframe's integration tests: loop-mounted filesystems that always clean up,
//! a writer that fsyncs numbered records, probes for blocked writes, and the agent binary.
//!
//! Every filesystem here is one the tests create; nothing touches the machine's own mounts.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The integration tests freeze real filesystems: they need root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the integration tests create, mount and freeze loop filesystems: run them as root"
    );
}

/// Runs a command and returns its stdout; panics with its output if it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    run_env(cmd, args, &[])
}

fn run_env(cmd: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A scratch directory on the machine's own disk (never frozen), removed on drop.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("freezeframe-test-")
        .tempdir_in("/var/tmp")
        .expect("scratch dir")
}

/// Filesystem types the tests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fs {
    Ext4,
    Xfs,
    Btrfs,
}

impl Fs {
    pub const ALL: [Fs; 3] = [Fs::Ext4, Fs::Xfs, Fs::Btrfs];

    pub fn name(self) -> &'static str {
        match self {
            Fs::Ext4 => "ext4",
            Fs::Xfs => "xfs",
            Fs::Btrfs => "btrfs",
        }
    }

    /// The smallest size each mkfs accepts comfortably.
    pub fn min_mib(self) -> u64 {
        match self {
            Fs::Ext4 | Fs::Xfs => 64,
            Fs::Btrfs => 128,
        }
    }

    fn mkfs(self, image: &Path) {
        let image = image.to_str().unwrap();
        match self {
            Fs::Ext4 => run("mkfs.ext4", &["-q", "-F", image]),
            // Below 300 MiB mkfs.xfs wants to be told this is a test filesystem.
            Fs::Xfs => run_env(
                "mkfs.xfs",
                &["-q", "-f", image],
                &[("TEST_DIR", "1"), ("TEST_DEV", "1"), ("QA_CHECK_FS", "1")],
            ),
            Fs::Btrfs => run("mkfs.btrfs", &["-q", "-f", image]),
        };
    }

    /// Checks an image; returns whether it is clean, and the checker's output. A frozen XFS
    /// keeps metadata in its log (the kernel does not empty the log on freeze), so for XFS the
    /// log is first replayed by mounting the image, as a restore would, then checked read-only.
    pub fn check(self, image: &Path) -> (bool, String) {
        if self == Fs::Xfs {
            let dir = scratch();
            let device = run("losetup", &["--find", "--show", image.to_str().unwrap()])
                .trim()
                .to_string();
            // nouuid: the original, with the same UUID, is still mounted.
            let mounted = Command::new("mount")
                .args(["-o", "nouuid", &device, dir.path().to_str().unwrap()])
                .status()
                .is_ok_and(|s| s.success());
            if mounted {
                let _ = Command::new("umount").arg(dir.path()).status();
            }
            let _ = Command::new("losetup").args(["--detach", &device]).status();
            if !mounted {
                return (
                    false,
                    format!("{} does not mount (log replay failed)", image.display()),
                );
            }
        }
        let image = image.to_str().unwrap();
        let (cmd, args): (&str, Vec<&str>) = match self {
            Fs::Ext4 => ("fsck.ext4", vec!["-n", "-f", image]),
            Fs::Xfs => ("xfs_repair", vec!["-n", "-f", image]),
            Fs::Btrfs => ("btrfs", vec!["check", "--readonly", image]),
        };
        let out = Command::new(cmd)
            .args(&args)
            .output()
            .expect("run the filesystem checker");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

/// A filesystem in an image file, on a loop device, mounted. Dropping it thaws (in case),
/// unmounts, detaches and deletes, even when the test failed.
pub struct LoopFs {
    pub fs: Fs,
    pub image: PathBuf,
    pub device: String,
    pub mountpoint: PathBuf,
}

impl LoopFs {
    /// Makes `size_mib` of `fs` in `image` and mounts it at `mountpoint` (created if needed).
    pub fn create(fs: Fs, size_mib: u64, image: &Path, mountpoint: &Path) -> LoopFs {
        require_root();
        std::fs::File::create(image)
            .and_then(|f| f.set_len(size_mib << 20))
            .expect("create the image file");
        fs.mkfs(image);
        std::fs::create_dir_all(mountpoint).expect("create the mountpoint");
        let device = run("losetup", &["--find", "--show", image.to_str().unwrap()])
            .trim()
            .to_string();
        let fs_guard = LoopFs {
            fs,
            image: image.to_path_buf(),
            device,
            mountpoint: mountpoint.to_path_buf(),
        };
        run("mount", &[&fs_guard.device, mountpoint.to_str().unwrap()]);
        fs_guard
    }

    /// Attaches an existing image read-only and mounts it read-only (to inspect a copy).
    pub fn attach_read_only(fs: Fs, image: &Path, mountpoint: &Path) -> LoopFs {
        std::fs::create_dir_all(mountpoint).expect("create the mountpoint");
        let device = run(
            "losetup",
            &["--find", "--show", "--read-only", image.to_str().unwrap()],
        )
        .trim()
        .to_string();
        let guard = LoopFs {
            fs,
            image: PathBuf::new(), // not ours to delete
            device,
            mountpoint: mountpoint.to_path_buf(),
        };
        let opts = match fs {
            Fs::Xfs => "ro,norecovery,nouuid",
            _ => "ro",
        };
        run(
            "mount",
            &["-o", opts, &guard.device, mountpoint.to_str().unwrap()],
        );
        guard
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let mp = self.mountpoint.to_str().unwrap_or_default().to_string();
        let _ = Command::new("fsfreeze").args(["--unfreeze", &mp]).output();
        let unmounted = (0..20).any(|_| {
            let ok = Command::new("umount")
                .arg(&mp)
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                std::thread::sleep(Duration::from_millis(100));
            }
            ok
        });
        if !unmounted {
            let _ = Command::new("umount").args(["--lazy", &mp]).output();
        }
        let _ = Command::new("losetup").args(["--detach", &self.device]).output();
        if !self.image.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.image);
        }
    }
}

/// Appends fixed-width numbered records to a file, fsyncing each; counts what was acknowledged.
pub struct Writer {
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Bytes per record: `0000000042\n`.
pub const RECORD_LEN: usize = 11;

impl Writer {
    pub fn start(path: &Path) -> Writer {
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(path)
            .expect("open the records file");
        let (a, s) = (acked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                n += 1;
                file.write_all(format!("{n:010}\n").as_bytes())
                    .expect("write a record");
                file.sync_data().expect("fsync a record");
                a.store(n, Ordering::SeqCst);
            }
        });
        Writer {
            acked,
            stop,
            thread: Some(thread),
        }
    }

    /// How many records have been written and fsync'd.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    pub fn acked_counter(&self) -> Arc<AtomicU64> {
        self.acked.clone()
    }

    /// Waits until at least `n` records are acknowledged.
    pub fn wait_for(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.acked() < n {
            assert!(Instant::now() < deadline, "the writer made no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("writer thread");
        }
        self.acked()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Not joined: if the filesystem is still frozen, the thread would hold the test.
    }
}

/// Checks that `text` starts with records 1..=n, in order, complete.
pub fn assert_records(text: &[u8], n: u64) {
    let have = (text.len() / RECORD_LEN) as u64;
    assert!(
        have >= n,
        "only {have} complete records, but {n} were acknowledged before the snapshot"
    );
    for (i, rec) in text.chunks(RECORD_LEN).take(n as usize).enumerate() {
        assert_eq!(
            rec,
            format!("{:010}\n", i + 1).as_bytes(),
            "record {} is damaged",
            i + 1
        );
    }
}

/// A write + fsync started now in another thread; tells when (if) it completes.
pub struct WriteProbe {
    started: Instant,
    done: mpsc::Receiver<Instant>,
}

impl WriteProbe {
    pub fn start(dir: &Path) -> WriteProbe {
        let path = dir.join(format!("probe-{}", std::process::id()));
        let (tx, done) = mpsc::channel();
        let started = Instant::now();
        std::thread::spawn(move || {
            let ok = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(b"probe\n").and_then(|()| f.sync_all()));
            if ok.is_ok() {
                let _ = tx.send(Instant::now());
            }
        });
        WriteProbe { started, done }
    }

    /// Whether the write has completed by now, waiting at most `wait`.
    pub fn completed_within(&self, wait: Duration) -> Option<Instant> {
        self.done.recv_timeout(wait).ok()
    }

    pub fn started(&self) -> Instant {
        self.started
    }
}

/// Whether the filesystem at `mountpoint` is frozen right now: a second freeze answers EBUSY.
/// (If it was not frozen, the probe's own freeze is undone at once.)
pub fn is_frozen(mountpoint: &Path) -> bool {
    let out = Command::new("fsfreeze")
        .args(["--freeze", mountpoint.to_str().unwrap()])
        .output()
        .expect("run fsfreeze");
    if out.status.success() {
        run("fsfreeze", &["--unfreeze", mountpoint.to_str().unwrap()]);
        false
    } else {
        true
    }
}

/// A tmpfs mounted for a test; unmounted on drop.
pub struct Tmpfs {
    pub mountpoint: PathBuf,
}

impl Tmpfs {
    pub fn mount(mountpoint: &Path) -> Tmpfs {
        std::fs::create_dir_all(mountpoint).expect("create the mountpoint");
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=1m",
                "tmpfs",
                mountpoint.to_str().unwrap(),
            ],
        );
        Tmpfs {
            mountpoint: mountpoint.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mountpoint).output();
    }
}

/// The agent binary built by cargo next to this test binary.
pub fn agent_bin() -> PathBuf {
    workspace_bin("freezeframe-agent")
}

/// The CLI binary built by cargo next to this test binary.
pub fn cli_bin() -> PathBuf {
    workspace_bin("freezeframe")
}

fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target directory");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so cargo builds it",
        bin.display()
    );
    bin
}

/// A datagram socket standing in for systemd's NOTIFY_SOCKET.
pub struct NotifySocket {
    pub path: PathBuf,
    socket: std::os::unix::net::UnixDatagram,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket { path, socket }
    }

    /// Waits for a `STATUS=` message containing `text`; returns when it arrived. `gone` is
    /// asked now and then whether the sender is gone, with the reason to fail with.
    pub fn wait_for_status(
        &self,
        text: &str,
        timeout: Duration,
        mut gone: impl FnMut() -> Option<String>,
    ) -> Instant {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no STATUS containing {text:?} within {timeout:?}"
            );
            if let Some(why) = gone() {
                panic!("waiting for STATUS {text:?}: {why}");
            }
            self.socket
                .set_read_timeout(Some(left.min(Duration::from_millis(100))))
                .unwrap();
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]);
                if msg.starts_with("STATUS=") && msg.contains(text) {
                    return Instant::now();
                }
            }
        }
    }
}

/// Reads what is left of a finished child's stdout and stderr.
pub trait ChildOutput {
    fn wait_with_output_ref(&mut self) -> String;
}

impl ChildOutput for std::process::Child {
    fn wait_with_output_ref(&mut self) -> String {
        use std::io::Read;
        let mut text = String::new();
        if let Some(out) = self.stdout.as_mut() {
            let _ = out.read_to_string(&mut text);
        }
        if let Some(err) = self.stderr.as_mut() {
            let _ = err.read_to_string(&mut text);
        }
        text
    }
}

/// Whether a process exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}
