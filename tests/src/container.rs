//! A Debian container booted with `systemd-nspawn`: the real systemd (and logind) as PID 1, for
//! the tests that need them. The root filesystem comes from `debootstrap`, cached between runs
//! under /var/cache/freezeframe-tests; each boot runs on a throwaway overlay of it, so the
//! cache is never changed. Recipe: ../shared/SYSTEMD-CONTAINER.md.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CACHE: &str = "/var/cache/freezeframe-tests";
const MIRROR: &str = "http://deb.debian.org/debian";

/// Why this machine cannot boot a container, if it cannot: the tests that need one say so and
/// skip instead of failing (`.ci/run` installs what they need).
pub fn unavailable() -> Option<String> {
    for (tool, package) in [
        ("debootstrap", "debootstrap"),
        ("systemd-nspawn", "systemd-container"),
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
    ] {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()));
        if !found {
            return Some(format!("`{tool}` is missing (install the package {package})"));
        }
    }
    None
}

/// A Debian release the containers boot, and what it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Debian 12: systemd 252, glibc 2.36.
    Bookworm,
    /// Debian 13: systemd 257, glibc 2.41.
    Trixie,
}

impl Release {
    /// The codename, as debootstrap and apt's sources name it.
    pub fn codename(self) -> &'static str {
        match self {
            Release::Bookworm => "bookworm",
            Release::Trixie => "trixie",
        }
    }

    /// The major version of the systemd it ships.
    pub fn systemd(self) -> u32 {
        match self {
            Release::Bookworm => 252,
            Release::Trixie => 257,
        }
    }
}

/// A bookworm root with systemd, dbus and `packages`, built once and cached by package list.
pub fn debian_root(packages: &[&str]) -> PathBuf {
    release_root(Release::Bookworm, packages)
}

/// A root of `release` with systemd, dbus and `packages`, built once and cached by release and
/// package list (Debian's archive serves every release this names).
pub fn release_root(release: Release, packages: &[&str]) -> PathBuf {
    let mut all = vec!["systemd", "systemd-sysv", "dbus"];
    all.extend_from_slice(packages);
    all.sort();
    all.dedup();
    let key = all.join("+");
    std::fs::create_dir_all(CACHE).expect("create the container cache");
    let root = Path::new(CACHE).join(format!("{}-{key}", release.codename()));
    // One builder at a time: other tests wait for the cache.
    let lock = std::fs::File::create(Path::new(CACHE).join("build.lock")).expect("cache lock");
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map(|held| {
            if !root.join("usr/lib/systemd/systemd").exists() && !root.join("lib/systemd/systemd").exists() {
                let building = root.with_extension("partial");
                let _ = std::fs::remove_dir_all(&building);
                let out = Command::new("debootstrap")
                    .args(["--variant=minbase", &format!("--include={}", all.join(","))])
                    .args([release.codename(), building.to_str().unwrap(), MIRROR])
                    .output()
                    .expect("run debootstrap");
                assert!(
                    out.status.success(),
                    "debootstrap failed:\n{}",
                    String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .rev()
                        .take(20)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                std::fs::rename(&building, &root).expect("publish the root");
            }
            drop(held);
        })
        .map_err(|(_, e)| e)
        .expect("lock the container cache");
    root
}

/// A booted container; powered off (and waited for) on drop.
pub struct Container {
    nspawn: Child,
    /// The container's systemd, as seen from the host.
    pub pid: u32,
}

/// A path on the host bound into the container.
pub struct Bind<'a> {
    pub host: &'a Path,
    pub inside: &'a str,
    pub read_only: bool,
}

impl Container {
    /// Boots `root` (on a tmpfs overlay) with `binds`, and waits until systemd finished booting.
    pub fn boot(root: &Path, binds: &[Bind]) -> Container {
        Container::start(root, None, binds)
    }

    /// Boots `root` on an overlay that keeps its changes in `kept` (made when missing), so that
    /// a machine powered off and booted again finds what was installed on it, as a disk would.
    pub fn boot_kept(root: &Path, kept: &Path, binds: &[Bind]) -> Container {
        for part in ["upper", "work", "merged"] {
            std::fs::create_dir_all(kept.join(part)).expect("make the container's overlay");
        }
        Container::start(root, Some(kept), binds)
    }

    fn start(root: &Path, kept: Option<&Path>, binds: &[Bind]) -> Container {
        let mut nspawn_args = vec![
            // No host systemd to register with (see SYSTEMD-CONTAINER.md).
            "--register=no".to_string(),
            "--keep-unit".into(),
            "--console=pipe".into(),
        ];
        // A private mount namespace with its own /run: nspawn refuses a /run on a disk. The
        // kept overlay is mounted in it too, so it goes when the container does.
        let script = match kept {
            None => {
                nspawn_args.extend([
                    "-D".into(),
                    root.display().to_string(),
                    "--volatile=overlay".into(),
                ]);
                "mount -t tmpfs tmpfs /run && exec systemd-nspawn \"$@\""
            }
            Some(kept) => {
                nspawn_args.extend(["-D".into(), kept.join("merged").display().to_string()]);
                "mount -t tmpfs tmpfs /run && \
                 mount -t overlay overlay -o \"lowerdir=$LOWER,upperdir=$KEPT/upper,workdir=$KEPT/work\" \"$KEPT/merged\" && \
                 exec systemd-nspawn \"$@\""
            }
        };
        for b in binds {
            let flag = if b.read_only { "--bind-ro" } else { "--bind" };
            nspawn_args.push(format!("{flag}={}:{}", b.host.display(), b.inside));
        }
        nspawn_args.push("-b".into());
        let nspawn = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
            .args(&nspawn_args)
            .env("LOWER", root)
            .env("KEPT", kept.unwrap_or(root))
            // Pure cgroup v2 inside, without which FreezeUnit is unsupported on a hybrid host.
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start systemd-nspawn");
        let mut container = Container { nspawn, pid: 0 };
        // Generous: a loaded CI machine boots slowly.
        let deadline = Instant::now() + Duration::from_secs(180);
        while container.pid == 0 {
            if let Some(status) = container.nspawn.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                let _ = container.nspawn.stderr.take().unwrap().read_to_string(&mut err);
                panic!("systemd-nspawn exited ({status}): {err}");
            }
            assert!(Instant::now() < deadline, "the container's systemd did not start");
            container.pid = container_init(container.nspawn.id()).unwrap_or(0);
            std::thread::sleep(Duration::from_millis(50));
        }
        // systemd needs a moment to set up its bus before systemctl can ask it anything.
        loop {
            let out = container.exec(&["systemctl", "is-system-running", "--wait"]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the container did not finish booting: {state}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        container
    }

    /// What the power button does: asks the container's systemd for a clean poweroff, with the
    /// signal `machinectl poweroff` sends (SIGRTMIN+4), from outside the machine.
    pub fn press_power_button(&self) {
        // SAFETY: kill(2) on a pid, with a signal number the C library defines; no memory passes.
        let sent = unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGRTMIN() + 4) };
        assert_eq!(
            sent,
            0,
            "signal the container's systemd: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Whether the container stopped within `bound` (its nspawn exited).
    pub fn stopped_within(&mut self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        loop {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a command inside the container (every namespace of its systemd).
    pub fn exec(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run nsenter")
    }

    /// A command to run inside the container, for the caller to adjust and start.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid.to_string(), "-a", "--"]).args(args);
        cmd
    }

    /// Runs a shell script inside; its stdout, or fails the test with its output.
    pub fn sh(&self, script: &str) -> String {
        let out = self.exec(&["sh", "-c", script]);
        assert!(
            out.status.success(),
            "`{script}` failed in the container:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A unit property, such as `FreezerState`.
    pub fn unit_property(&self, unit: &str, property: &str) -> String {
        self.sh(&format!("systemctl show -P {property} {unit}"))
    }
}

/// The container's PID 1: the child of `nspawn` in a PID namespace of its own. (nspawn's first
/// child is a short-lived helper still in ours; taking it for PID 1 would leave the real one
/// running when a failed boot is cleaned up.)
fn container_init(nspawn: u32) -> Option<u32> {
    let ours = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let children = std::fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|pid| std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|ns| ns != ours))
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.pid == 0 {
            self.pid = container_init(self.nspawn.id()).unwrap_or(0);
        }
        let _ = self.exec(&["systemctl", "poweroff"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Killing the container's PID 1 ends every process in its namespace, so nothing of it
        // (a dbus-daemon, a mount holding a loop device) outlives a container that hung, or an
        // nspawn that went before its container. Only while it still is a namespace's init.
        let ours = std::fs::read_link("/proc/self/ns/pid").ok();
        let init_ns = std::fs::read_link(format!("/proc/{}/ns/pid", self.pid)).ok();
        if self.pid != 0 && init_ns.is_some() && init_ns != ours {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::SIGKILL,
            );
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}
