//! Scratch filesystems for the demo and the tests: a filesystem in an image file on a loop
//! device (the agent's [`LoopMount`]), mounted, that unmounts, detaches and deletes itself on
//! drop; and a writer that
//! appends fsync'd, numbered records and measures how long each write took.
//!
//! Only filesystems made here are ever touched: nothing looks at the machine's own mounts.

use anyhow::{bail, Context, Result};
use freezeframe_agent::loop_mount::{Attach, LoopMount, LoopMountError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Runs a command; returns its stdout, or an error with its output.
pub fn run(cmd: &str, args: &[&str]) -> Result<String> {
    run_env(cmd, args, &[])
}

fn run_env(cmd: &str, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .with_context(|| format!("cannot run {cmd} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Filesystem types.
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

    fn mkfs(self, image: &Path) -> Result<()> {
        let image = image.to_str().context("image path is not UTF-8")?;
        match self {
            // Inode tables and journal written now, not by the kernel's lazy-init thread after
            // mounting: its background writes would slow freezes and show up in measurements.
            Fs::Ext4 => run(
                "mkfs.ext4",
                &["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", image],
            ),
            // Below 300 MiB mkfs.xfs wants to be told this is a test filesystem.
            Fs::Xfs => run_env(
                "mkfs.xfs",
                &["-q", "-f", image],
                &[("TEST_DIR", "1"), ("TEST_DEV", "1"), ("QA_CHECK_FS", "1")],
            ),
            Fs::Btrfs => run("mkfs.btrfs", &["-q", "-f", image]),
        }
        .map(drop)
    }

    /// Checks an image; returns whether it is clean, and the checker's output. A frozen XFS
    /// keeps metadata in its log (the kernel does not empty the log on freeze), so for XFS the
    /// log is first replayed by mounting the image, as a restore would, then checked read-only.
    pub fn check(self, image: &Path) -> Result<(bool, String)> {
        let path = image.to_str().context("image path is not UTF-8")?;
        if self == Fs::Xfs {
            let dir = tempfile::Builder::new()
                .prefix("freezeframe-check-")
                .tempdir_in("/var/tmp")?;
            // nouuid: the original, with the same UUID, may still be mounted.
            let how = Attach {
                read_only: false,
                options: Some("nouuid"),
            };
            let mounted = LoopMount::attach(image, dir.path(), how).map(drop);
            if let Err(e) = mounted {
                return Ok((false, format!("{path} does not mount (log replay failed): {e}")));
            }
        }
        let (cmd, args): (&str, Vec<&str>) = match self {
            Fs::Ext4 => ("fsck.ext4", vec!["-n", "-f", path]),
            Fs::Xfs => ("xfs_repair", vec!["-n", "-f", path]),
            Fs::Btrfs => ("btrfs", vec!["check", "--readonly", path]),
        };
        let out = Command::new(cmd)
            .args(&args)
            .output()
            .with_context(|| format!("cannot run {cmd}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }
}

/// A filesystem in an image file, on a loop device, mounted. Dropping it thaws (in case),
/// unmounts, detaches and deletes the image, even when the caller failed half-way.
pub struct LoopFs {
    pub fs: Fs,
    pub image: PathBuf,
    pub device: String,
    pub mountpoint: PathBuf,
    /// Whether the image is ours to delete.
    owns_image: bool,
    /// Dropped first: unmounted and detached before the image goes.
    mount: Option<LoopMount>,
}

impl LoopFs {
    /// Makes `size_mib` of `fs` in `image` and mounts it at `mountpoint` (created if needed).
    pub fn create(fs: Fs, size_mib: u64, image: &Path, mountpoint: &Path) -> Result<LoopFs> {
        std::fs::File::create(image)
            .and_then(|f| f.set_len(size_mib << 20))
            .with_context(|| format!("cannot create {}", image.display()))?;
        let made = fs.mkfs(image);
        if let Err(e) = made {
            let _ = std::fs::remove_file(image);
            return Err(e);
        }
        LoopFs::attach(fs, image.to_path_buf(), mountpoint)
    }

    /// Mounts an image made elsewhere (a restored copy) read-write; it is deleted on drop.
    pub fn attach(fs: Fs, image: PathBuf, mountpoint: &Path) -> Result<LoopFs> {
        let mounted = LoopMount::attach(&image, mountpoint, Attach::default());
        LoopFs::new(fs, image, true, mounted)
    }

    /// Attaches an existing image read-only and mounts it read-only, to inspect a copy.
    pub fn attach_read_only(fs: Fs, image: &Path, mountpoint: &Path) -> Result<LoopFs> {
        let how = Attach {
            read_only: true,
            options: Some(match fs {
                Fs::Xfs => "ro,norecovery,nouuid",
                _ => "ro",
            }),
        };
        let mounted = LoopMount::attach(image, mountpoint, how);
        LoopFs::new(fs, image.to_path_buf(), false, mounted)
    }

    fn new(
        fs: Fs,
        image: PathBuf,
        owns_image: bool,
        mounted: Result<LoopMount, LoopMountError>,
    ) -> Result<LoopFs> {
        match mounted {
            Ok(mount) => Ok(LoopFs {
                fs,
                device: mount.device().to_string(),
                mountpoint: mount.mountpoint().to_path_buf(),
                image,
                owns_image,
                mount: Some(mount),
            }),
            Err(e) => {
                if owns_image {
                    let _ = std::fs::remove_file(&image);
                }
                Err(anyhow::anyhow!(e))
            }
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        drop(self.mount.take());
        if self.owns_image {
            let _ = std::fs::remove_file(&self.image);
        }
    }
}

/// Bytes per record: `0000000042\n`.
pub const RECORD_LEN: usize = 11;

/// Appends fixed-width numbered records to a file, fsyncing each, and keeps count of what was
/// acknowledged and of the longest wait for one write.
pub struct Writer {
    acked: Arc<AtomicU64>,
    longest_us: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub fn start(path: &Path) -> Result<Writer> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let acked = Arc::new(AtomicU64::new(0));
        let longest_us = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, l, s) = (acked.clone(), longest_us.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                n += 1;
                let started = Instant::now();
                let written = file
                    .write_all(format!("{n:010}\n").as_bytes())
                    .and_then(|()| file.sync_data());
                if written.is_err() {
                    return;
                }
                l.fetch_max(started.elapsed().as_micros() as u64, Ordering::SeqCst);
                a.store(n, Ordering::SeqCst);
            }
        });
        Ok(Writer {
            acked,
            longest_us,
            stop,
            thread: Some(thread),
        })
    }

    /// How many records have been written and fsync'd.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// A shared view of the acknowledged count.
    pub fn acked_counter(&self) -> Arc<AtomicU64> {
        self.acked.clone()
    }

    /// The longest a single write + fsync has waited so far.
    pub fn longest_wait(&self) -> Duration {
        Duration::from_micros(self.longest_us.load(Ordering::SeqCst))
    }

    /// Waits until at least `n` records are acknowledged, for at most `timeout`.
    pub fn wait_for(&self, n: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.acked() < n {
            if Instant::now() > deadline {
                bail!("the writer made no progress ({} of {n} records)", self.acked());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Stops the writer; returns how many records were acknowledged.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.acked()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Not joined: if the filesystem were still frozen, the thread would hold the caller.
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Checks that `text` starts with records 1..=n, in order and complete.
pub fn verify_records(text: &[u8], n: u64) -> Result<(), String> {
    let have = (text.len() / RECORD_LEN) as u64;
    if have < n {
        return Err(format!(
            "only {have} complete records, but {n} were acknowledged before the snapshot"
        ));
    }
    for (i, rec) in text.chunks(RECORD_LEN).take(n as usize).enumerate() {
        if rec != format!("{:010}\n", i + 1).as_bytes() {
            return Err(format!(
                "record {} is damaged: {:?}",
                i + 1,
                String::from_utf8_lossy(rec)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_verified_in_order_and_complete() {
        let text: Vec<u8> = (1..=3).flat_map(|i| format!("{i:010}\n").into_bytes()).collect();
        assert!(verify_records(&text, 3).is_ok());
        assert!(verify_records(&text[..text.len() - 1], 3)
            .unwrap_err()
            .contains("only 2"));
        let mut damaged = text.clone();
        damaged[12] = b'x';
        assert!(verify_records(&damaged, 3).unwrap_err().contains("record 2"));
    }
}
