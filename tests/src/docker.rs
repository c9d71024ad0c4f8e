//! A Docker engine of the test's own (Debian's `docker.io`): its own socket, data root, exec
//! root and pid file, no network changes, stopped and cleaned up on drop; and images made with
//! no registry, from the cached debootstrapped Debian root with Debian's database packages,
//! through `docker import`. Recipe: ../shared/DOCKER-IN-TESTS.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The image of Debian's PostgreSQL, MariaDB and Redis that `Dockerd::import_databases` makes.
pub const DATABASES_IMAGE: &str = "local/databases:bookworm";

/// Why this machine cannot run the engine, if it cannot (the tests say so and skip; `.ci/run`
/// installs it).
pub fn unavailable() -> Option<String> {
    if !Path::new("/usr/sbin/dockerd").is_file() {
        return Some("`dockerd` is missing (install the package docker.io)".into());
    }
    crate::container::unavailable()
}

/// A running dockerd; stopped (and its mounts removed) on drop.
pub struct Dockerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    child: std::process::Child,
}

impl Dockerd {
    /// Starts an engine whose every file is under `dir` (on a disk, not an overlay).
    pub fn start(dir: &Path) -> Dockerd {
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("docker.sock");
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("/usr/sbin/dockerd")
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--storage-driver=overlay2",
            ])
            .arg(format!("--data-root={}", dir.join("data").display()))
            .arg(format!("--exec-root={}", dir.join("exec").display()))
            .arg(format!("-H=unix://{}", socket.display()))
            .arg(format!("--pidfile={}", dir.join("docker.pid").display()))
            // Its containerd is its own too, so nothing is shared with another test's engine.
            .arg(format!("--containerd-namespace=ff-{}", std::process::id()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let engine = Dockerd {
            dir: dir.to_path_buf(),
            socket,
            child,
        };
        for _ in 0..600 {
            if engine
                .try_docker(&["version"])
                .is_some_and(|o| o.status.success())
            {
                return engine;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("dockerd did not answer: {}", engine.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    fn try_docker(&self, args: &[&str]) -> Option<Output> {
        Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()
    }

    /// Runs `docker ARGS` against this engine; its stdout, trimmed. Panics on failure.
    pub fn docker(&self, args: &[&str]) -> String {
        let out = self.try_docker(args).expect("run docker");
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Imports the cached Debian root with PostgreSQL, MariaDB and Redis as `DATABASES_IMAGE`.
    pub fn import_databases(&self) {
        let root = crate::container::debian_root(&["postgresql", "mariadb-server", "redis-server"]);
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run tar");
        let out = Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(["import", "-", DATABASES_IMAGE])
            .stdin(tar.stdout.take().expect("tar's stdout"))
            .output()
            .expect("run docker import");
        let tarred = tar.wait().expect("wait for tar");
        assert!(tarred.success(), "tar of {} failed: {tarred}", root.display());
        assert!(
            out.status.success(),
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The host pid of a container's main process.
    pub fn pid_of(&self, container: &str) -> u32 {
        self.docker(&["inspect", "-f", "{{.State.Pid}}", container])
            .parse()
            .unwrap()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers first (each given time to stop cleanly), then the engine.
        if let Some(out) = self.try_docker(&["ps", "-q"]) {
            let ids = String::from_utf8_lossy(&out.stdout).to_string();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["stop", "-t", "20"];
                args.extend(ids);
                let _ = self.try_docker(&args);
            }
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        let waited = (0..300).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !waited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // What it may leave mounted under its folder (volumes, layers, netns files).
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut ours: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| Path::new(m).starts_with(&self.dir))
                .collect();
            ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in ours {
                let _ = Command::new("umount").args(["-l", m]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // What every engine makes there; gone only when empty (another test's engine may run).
        let _ = std::fs::remove_dir("/run/docker/plugins");
        let _ = std::fs::remove_dir("/run/docker");
    }
}
