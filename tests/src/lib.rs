//! Test kit for freezeframe's integration tests: the scratch filesystems and record writer of
//! `freezeframe_demo::scratch` (shared with the demo) as test helpers, probes for blocked writes, a
//! stand-in NOTIFY_SOCKET, and the workspace's binaries.
//!
//! Every filesystem here is one the tests create; nothing touches the machine's own mounts.

pub mod attacker;
pub mod bus;
pub mod container;
pub mod docker;
pub mod postgres;
pub mod restored;

pub use postgres::{assert_counted, pg_bin, PgServer};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The integration tests freeze real filesystems: they need root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the integration tests create, mount and freeze loop filesystems: run them as root"
    );
}

/// Runs a command and returns its stdout, or fails the test with its output.
pub fn run(cmd: &str, args: &[&str]) -> String {
    freezeframe_demo::scratch::run(cmd, args).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A scratch directory on the machine's own disk (never frozen), removed on drop.
pub fn scratch() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("freezeframe-test-")
        .tempdir_in("/var/tmp")
        .expect("scratch dir");
    // Database servers run as their own users and must reach their folders inside.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    dir
}

pub use freezeframe_demo::scratch::{Fs, LoopFs, Writer, RECORD_LEN};
pub use freezeframe_do_sim as sim;
pub use freezeframe_do_sim::SimServer;

/// Makes and mounts a loop filesystem (see [`LoopFs::create`]), or fails the test.
pub fn loop_fs(fs: Fs, size_mib: u64, image: &Path, mountpoint: &Path) -> LoopFs {
    require_root();
    LoopFs::create(fs, size_mib, image, mountpoint).expect("make a loop filesystem")
}

/// The snapshot-point probe's markers in an ext4 image, read from a copy mounted in `dir`
/// (mounting may replay the journal, which must not touch the image), removed after.
pub fn probe_markers(
    image: &Path,
    dir: &Path,
) -> Vec<(String, freezeframe_agent::transaction::ports::ProbeMoment)> {
    use freezeframe_agent::freeze::probe;
    let copy = dir.join("probe-copy.img");
    std::fs::copy(image, &copy).expect("copy the image");
    let mounted = LoopFs::attach(Fs::Ext4, copy, &dir.join("probe-view")).expect("mount the image");
    probe::markers_in(&mounted.path(probe::PROBE_DIR))
}

/// Mounts a copy read-only (see [`LoopFs::attach_read_only`]), or fails the test.
pub fn view_image(fs: Fs, image: &Path, mountpoint: &Path) -> LoopFs {
    LoopFs::attach_read_only(fs, image, mountpoint).expect("mount the copy read-only")
}

/// Checks an image with the filesystem's checker, or fails the test.
pub fn assert_clean(fs: Fs, image: &Path) {
    let (clean, output) = fs.check(image).expect("run the filesystem checker");
    assert!(clean, "{fs:?} image {} is not clean:\n{output}", image.display());
}

/// Starts a record writer on `path`, or fails the test.
pub fn writer(path: &Path) -> Writer {
    Writer::start(path).expect("start the writer")
}

/// Checks that `text` starts with records 1..=n, in order and complete.
pub fn assert_records(text: &[u8], n: u64) {
    if let Err(e) = freezeframe_demo::scratch::verify_records(text, n) {
        panic!("{e}");
    }
}

/// A write started now in another thread; tells when (if) it went through. The write(2) itself
/// waits while the filesystem is frozen (at the superblock's write barrier), so its return is
/// the moment the filesystem was writable again. No fsync: that would add the host disk's
/// latency, seconds on a loaded machine, to a time the tests bound to a second or two.
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
                .and_then(|mut f| f.write_all(b"probe\n"));
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

/// An xfs filesystem of `size_mib` in `dir` standing for a DigitalOcean volume named `data`,
/// linked from `dir/by-id/scsi-0DO_Volume_data` as udev links one (the agent's `volume_links`).
pub fn volume_fs(dir: &Path, size_mib: u64) -> LoopFs {
    let fs = loop_fs(Fs::Xfs, size_mib, &dir.join("volume.img"), &dir.join("volume"));
    let links = dir.join("by-id");
    std::fs::create_dir_all(&links).unwrap();
    std::os::unix::fs::symlink(&fs.device, links.join("scsi-0DO_Volume_data")).unwrap();
    fs
}

/// Asserts that the probe's write completed, at most `limit` after `since` (a kill, a freeze):
/// the filesystem was writable again by then.
pub fn assert_writable_within(probe: &WriteProbe, since: Instant, limit: Duration, what: &str) {
    let done = probe
        .completed_within(limit + Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{what}: the write never completed"));
    let after = done.saturating_duration_since(since);
    assert!(
        after <= limit,
        "{what}: writable again only {after:?} after, more than {limit:?}"
    );
}

/// Whether the filesystem at `mountpoint` is frozen right now: a second freeze answers EBUSY.
/// (If it was not frozen, the probe's own freeze is undone at once; a thaw guard finishing its
/// work may have undone it first, which the probe's unfreeze then finds.)
pub fn is_frozen(mountpoint: &Path) -> bool {
    let out = Command::new("fsfreeze")
        .args(["--freeze", mountpoint.to_str().unwrap()])
        .output()
        .expect("run fsfreeze");
    if out.status.success() {
        let undone = Command::new("fsfreeze")
            .args(["--unfreeze", mountpoint.to_str().unwrap()])
            .output()
            .expect("run fsfreeze");
        let thawed_meanwhile = String::from_utf8_lossy(&undone.stderr).contains("Invalid argument");
        assert!(
            undone.status.success() || thawed_meanwhile,
            "fsfreeze --unfreeze {}: {}",
            mountpoint.display(),
            String::from_utf8_lossy(&undone.stderr)
        );
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

/// The demo binary (`freezeframe-demo`), built by cargo next to this test binary.
pub fn demo_bin() -> PathBuf {
    workspace_bin("freezeframe-demo")
}

fn workspace_bin(name: &str) -> PathBuf {
    // Tests run from target/<profile>/deps/, programs from target/<profile>/.
    let exe = std::env::current_exe().expect("own path");
    let dir = exe.parent().expect("a folder");
    let profile_dir = if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>")
    } else {
        dir
    };
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --workspace` (tests/run does)",
        bin.display()
    );
    bin
}

/// Writes an agent configuration for the `local-image` provider that freezes exactly
/// `mountpoints`. Hooks are read from `hooks.d/` beside it, so none of this machine's run.
pub fn write_config(path: &Path, mountpoints: &[&Path], runtime: &Path, images: &Path, max_freeze: &str) {
    let list: Vec<String> = mountpoints
        .iter()
        .map(|m| format!("{:?}", m.display().to_string()))
        .collect();
    let dir = path.parent().expect("the config has a folder");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        path,
        format!(
            "{kept}[agent]\nruntime_dir = {:?}\n\n[freeze]\nmountpoints = [{}]\nmax_freeze = \"{max_freeze}\"\n\n\
             [snapshot]\nprovider = \"local-image\"\n\n[local_image]\nimage_dir = {:?}\n\n\
             [quiesce]\nhooks_dir = {:?}\n",
            runtime.display().to_string(),
            list.join(", "),
            images.display().to_string(),
            dir.join("hooks.d").display().to_string(),
            kept = kept_here(dir),
        ),
    )
    .unwrap();
}

/// A shell snippet that, in a mount namespace of its own, gives what runs after it a boot id of
/// its own, as a machine restored from a snapshot has booted anew (`verify` refuses the machine
/// whose markers carry the current boot's id: the one that took the snapshot).
pub const NEW_BOOT: &str = "boot_id=$(mktemp); cat /proc/sys/kernel/random/uuid > \"$boot_id\"; \
    mount --bind \"$boot_id\" /proc/sys/kernel/random/boot_id; rm -f \"$boot_id\"\n";

/// The `[history]` and `[metrics]` of a test's configuration: the record in `dir`, no metrics
/// file (the defaults are this machine's /var/lib, which no test may touch). First in the
/// file, so that what a test appends stays in the section it follows.
pub fn kept_here(dir: &Path) -> String {
    format!(
        "[history]\nfile = {:?}\n[metrics]\ntextfile_dir = \"\"\n",
        dir.join("history.json").display().to_string()
    )
}

/// A `local-image` configuration freezing `fs` alone, in its scratch folder (`etc/config.toml`,
/// runtime and images beside it, `max_freeze` 20 s), with `extra` appended.
pub fn local_image_config(fs: &ScratchFs, extra: &str) -> PathBuf {
    let config = fs.dir.path().join("etc/config.toml");
    write_config(
        &config,
        &[&fs.mountpoint],
        &fs.dir.path().join("run"),
        &fs.dir.path().join("images"),
        "20s",
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(extra);
    std::fs::write(&config, text).unwrap();
    config
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

/// Spawns `cmd` (an agent snapshot) with a NOTIFY_SOCKET in `dir`; returns once the agent
/// reports that it is frozen, with the moment it said so. Fails the test if it exits first.
pub fn spawn_until_frozen(mut cmd: std::process::Command, dir: &Path) -> (std::process::Child, Instant) {
    use std::process::Stdio;
    let notify = NotifySocket::bind(dir);
    let mut child = cmd
        .env("NOTIFY_SOCKET", &notify.path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the agent");
    let frozen_at = notify.wait_for_status("frozen", Duration::from_secs(60), || {
        child.try_wait().unwrap().map(|status| {
            let out = child.wait_with_output_ref();
            format!("the agent exited ({status}) before freezing: {out}")
        })
    });
    (child, frozen_at)
}

/// A loop filesystem in a scratch folder of its own. Fields drop in order: the filesystem is
/// unmounted before its folder is removed.
pub struct ScratchFs {
    pub fs: LoopFs,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for ScratchFs {
    type Target = LoopFs;
    fn deref(&self) -> &LoopFs {
        &self.fs
    }
}

/// A 64 MiB (128 for btrfs) loop filesystem of type `fs` in its own scratch folder.
pub fn scratch_fs(fs: Fs) -> ScratchFs {
    scratch_fs_sized(fs, fs.min_mib())
}

/// A loop filesystem of `mib` MiB in its own scratch folder.
pub fn scratch_fs_sized(fs: Fs, mib: u64) -> ScratchFs {
    let dir = scratch();
    let lfs = loop_fs(fs, mib, &dir.path().join("img"), &dir.path().join("mnt"));
    ScratchFs { fs: lfs, dir }
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

/// A static file server on loopback, as an apt repository's web server: `GET` and `HEAD` of
/// the files under its root, one request per connection. Stops on drop.
pub struct StaticHttp {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StaticHttp {
    pub fn serve(root: &Path) -> StaticHttp {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (root, done) = (root.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = answer_file(stream, &root);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
        });
        StaticHttp {
            url,
            stop,
            thread: Some(thread),
        }
    }
}

/// Answers one request for a file under `root` (never outside it).
fn answer_file(mut stream: std::net::TcpStream, root: &Path) -> std::io::Result<()> {
    use std::io::{BufRead, Write};
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut reader = std::io::BufReader::new(stream.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut words = first.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    let relative = path.split('?').next().unwrap_or("").trim_start_matches('/');
    let file = (!relative.split('/').any(|part| part == ".."))
        .then(|| root.join(relative))
        .filter(|f| f.is_file())
        .and_then(|f| std::fs::read(f).ok());
    let (status, body) = match file {
        Some(body) => ("200 OK", body),
        None => ("404 Not Found", b"not found\n".to_vec()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        stream.write_all(&body)?;
    }
    stream.flush()
}

impl Drop for StaticHttp {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A signing key made for a test, in a keyring of its own (`GNUPGHOME`), removed on drop.
pub struct TestKey {
    pub home: tempfile::TempDir,
    pub fingerprint: String,
}

impl TestKey {
    pub fn new(name: &str) -> TestKey {
        let home = tempfile::tempdir().unwrap();
        let gpg = |args: &[&str]| {
            let out = Command::new("gpg")
                .env("GNUPGHOME", home.path())
                .arg("--batch")
                .args(args)
                .output()
                .expect("run gpg");
            assert!(
                out.status.success(),
                "gpg {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        gpg(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            &format!("{name} <archive@test.invalid>"),
            "ed25519",
            "sign",
            "never",
        ]);
        let listed = gpg(&["--with-colons", "--list-secret-keys"]);
        let fingerprint = listed
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|l| l.split(':').find(|f| !f.is_empty()))
            .expect("the new key's fingerprint")
            .to_string();
        TestKey { home, fingerprint }
    }

    /// The public key, binary, as a `signed-by` keyring.
    pub fn keyring(&self) -> Vec<u8> {
        Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args(["--batch", "--export", &self.fingerprint])
            .output()
            .expect("run gpg")
            .stdout
    }
}
