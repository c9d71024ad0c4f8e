//! The freeze engine in-process: real FIFREEZE on loop filesystems, real thaw guard, real
//! local-image copies; only the provider is wrapped to observe the frozen window from inside.

use crate::servers::verify;
use freezeframe_agent::freeze::plan::Selection;
use freezeframe_agent::freeze::{plan_from_system, probe, LiveFilesystems};
use freezeframe_agent::kernel::mountinfo;
use freezeframe_agent::naming::SnapshotName;
use freezeframe_agent::provider::local_image::LocalImage;
use freezeframe_agent::transaction::ports::{
    Completion, Consistency, Filesystems, GuardEvent, ProbeMoment, ProviderError, QuiescePolicy,
    Registration, SkipReason, SnapshotProvider, Target,
};
use freezeframe_agent::transaction::{
    Interrupt, NoObserver, Phase, Report, SnapshotSpec, Status, Transaction,
};
use freezeframe_tests::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn targets(mountpoints: &[PathBuf]) -> Vec<Target> {
    plan_from_system(Selection {
        mountpoints: Some(mountpoints),
        exclude: &[],
    })
    .expect("plan the test's own mounts")
    .targets
}

async fn snapshot(
    filesystems: &mut LiveFilesystems,
    provider: &mut dyn SnapshotProvider,
    max_freeze: Duration,
) -> Report {
    Transaction {
        filesystems,
        provider,
        quiescers: Vec::new(),
        observer: &NoObserver,
        spec: SnapshotSpec {
            name: std::sync::Arc::new(SnapshotName::Fixed("test-snapshot".into())),
            max_freeze,
            wait: true,
            on_quiesce_failure: QuiescePolicy::Abort,
            retention: None,
            unquiesced: Vec::new(),
        },
        skipped: Vec::new(),
        interrupt: Interrupt::never(),
        barrier: None,
    }
    .run()
    .await
}

/// Inside the window: starts a write on the frozen filesystem, holds the window open for
/// `hold`, and notes whether the write got through (it must not).
struct WindowProbe {
    dir: PathBuf,
    hold: Duration,
    write: Arc<Mutex<Option<(WriteProbe, bool)>>>,
}

#[async_trait::async_trait]
impl SnapshotProvider for WindowProbe {
    fn name(&self) -> &'static str {
        "window-probe"
    }
    async fn preflight(&mut self, _: &str, _: &[Target]) -> Result<(), ProviderError> {
        Ok(())
    }
    async fn request(&mut self, _: &str, _: &[Target], _: Duration) -> Result<Registration, ProviderError> {
        let probe = WriteProbe::start(&self.dir);
        tokio::time::sleep(self.hold).await;
        let got_through = probe.completed_within(Duration::ZERO).is_some();
        *self.write.lock().unwrap() = Some((probe, got_through));
        Ok(Registration {
            action_id: "probe".into(),
            completed: true,
            volume_snapshots: Vec::new(),
            location: None,
        })
    }
    async fn wait_completed(&mut self, _: &Registration) -> Result<Completion, ProviderError> {
        Ok(Completion::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_blocked_during_the_freeze_resumes_after_the_thaw() {
    for fs in Fs::ALL {
        let dir = scratch();
        let lfs = loop_fs(fs, fs.min_mib(), &dir.path().join("img"), &dir.path().join("mnt"));
        let mut filesystems = LiveFilesystems::new(
            targets(std::slice::from_ref(&lfs.mountpoint)),
            &dir.path().join("run"),
        );
        let write = Arc::new(Mutex::new(None));
        let hold = Duration::from_millis(300);
        let mut provider = WindowProbe {
            dir: lfs.mountpoint.clone(),
            hold,
            write: write.clone(),
        };
        let report = snapshot(&mut filesystems, &mut provider, Duration::from_secs(20)).await;
        assert_eq!(report.status, Status::Succeeded, "{fs:?}: {report:?}");
        assert_eq!(report.consistency, Some(Consistency::Filesystem));
        let (probe, got_through) = write.lock().unwrap().take().expect("the request ran");
        assert!(
            !got_through,
            "{fs:?}: a write completed while the filesystem was frozen"
        );
        probe
            .completed_within(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{fs:?}: the blocked write never completed after the thaw"));
        // The window covered the whole request, and no more than the whole run.
        assert!(
            report.frozen_ms >= hold.as_millis() as f64,
            "{fs:?}: {}",
            report.frozen_ms
        );
        assert!(report.frozen_ms >= report.request_ms && report.frozen_ms <= report.total_ms);
        // Freezing, the request and thawing are parts of the window, one after the other.
        assert!(
            report.freezing_ms > 0.0
                && report.thawing_ms > 0.0
                && report.freezing_ms + report.request_ms + report.thawing_ms <= report.frozen_ms,
            "{fs:?}: {report:?}"
        );
        assert_eq!(report.filesystems.frozen[0].mountpoint, lfs.mountpoint);
        assert!(
            !dir.path().join("run/frozen.json").exists(),
            "the record is removed after the thaw"
        );
    }
}

/// LocalImage, noting how many records the writer had acknowledged when the request came.
struct CountingLocalImage {
    inner: LocalImage,
    acked: Arc<AtomicU64>,
    acked_at_request: Option<u64>,
}

#[async_trait::async_trait]
impl SnapshotProvider for CountingLocalImage {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn preflight(&mut self, name: &str, t: &[Target]) -> Result<(), ProviderError> {
        self.inner.preflight(name, t).await
    }
    async fn request(
        &mut self,
        name: &str,
        frozen: &[Target],
        max_freeze: Duration,
    ) -> Result<Registration, ProviderError> {
        self.acked_at_request = Some(self.acked.load(Ordering::SeqCst));
        self.inner.request(name, frozen, max_freeze).await
    }
    async fn wait_completed(&mut self, r: &Registration) -> Result<Completion, ProviderError> {
        self.inner.wait_completed(r).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_image_is_clean_and_holds_every_record_fsynced_before_the_request() {
    for fs in Fs::ALL {
        let dir = scratch();
        let lfs = loop_fs(fs, fs.min_mib(), &dir.path().join("img"), &dir.path().join("mnt"));
        let writer = writer(&lfs.path("records"));
        writer.wait_for(50, Duration::from_secs(30)).unwrap();
        let images = dir.path().join("images");
        let mut provider = CountingLocalImage {
            inner: LocalImage::new(images.clone()),
            acked: writer.acked_counter(),
            acked_at_request: None,
        };
        let mut filesystems = LiveFilesystems::new(
            targets(std::slice::from_ref(&lfs.mountpoint)),
            &dir.path().join("run"),
        );
        let report = snapshot(&mut filesystems, &mut provider, Duration::from_secs(30)).await;
        let after = writer.stop();
        assert_eq!(report.status, Status::Succeeded, "{fs:?}: {report:?}");
        let acked = provider.acked_at_request.expect("the request ran");
        assert!(
            acked >= 50 && after > acked,
            "{fs:?}: the writer went on after the thaw ({acked} → {after})"
        );

        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(images.join("test-snapshot/manifest.json")).unwrap())
                .unwrap();
        let file = manifest["images"][0]["file"].as_str().unwrap();
        let copy = images.join("test-snapshot").join(file);
        assert_eq!(
            report.snapshot_id.as_deref(),
            Some(images.join("test-snapshot").to_str().unwrap())
        );
        assert_clean(fs, &copy);

        let view = view_image(fs, &copy, &dir.path().join("view"));
        let records = std::fs::read(view.path("records")).unwrap();
        assert_records(&records, acked);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_already_frozen_filesystem_fails_the_run_and_stays_frozen() {
    let dir = scratch();
    let a = loop_fs(Fs::Ext4, 64, &dir.path().join("a.img"), &dir.path().join("a"));
    let b = loop_fs(Fs::Xfs, 64, &dir.path().join("b.img"), &dir.path().join("b"));
    run("fsfreeze", &["--freeze", b.mountpoint.to_str().unwrap()]);
    let mut filesystems = LiveFilesystems::new(
        targets(&[a.mountpoint.clone(), b.mountpoint.clone()]),
        &dir.path().join("run"),
    );
    let write = Arc::new(Mutex::new(None));
    let mut provider = WindowProbe {
        dir: a.mountpoint.clone(),
        hold: Duration::ZERO,
        write: write.clone(),
    };
    let report = snapshot(&mut filesystems, &mut provider, Duration::from_secs(20)).await;
    assert_eq!(report.failed_phase, Some(Phase::Freeze), "{report:?}");
    let error = report.error.unwrap();
    assert!(error.contains("already frozen by another process"), "{error}");
    assert!(error.contains(b.mountpoint.to_str().unwrap()), "{error}");
    assert!(write.lock().unwrap().is_none(), "no snapshot was requested");
    assert!(
        is_frozen(&b.mountpoint),
        "someone else's freeze must not be thawed by us"
    );
    run("fsfreeze", &["--unfreeze", b.mountpoint.to_str().unwrap()]);
    WriteProbe::start(&a.mountpoint)
        .completed_within(Duration::from_secs(10))
        .expect("what this run froze was thawed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filesystem_that_cannot_freeze_is_skipped_and_reported() {
    let dir = scratch();
    let lfs = loop_fs(Fs::Ext4, 64, &dir.path().join("img"), &dir.path().join("mnt"));
    // tmpfs has no freeze support: the kernel answers FIFREEZE with EOPNOTSUPP, as vfat does.
    // The planner would skip it by type, so it is handed to the freezer directly.
    let tmpfs = Tmpfs::mount(&dir.path().join("tmp"));
    let mounts = mountinfo::parse(&std::fs::read_to_string("/proc/self/mountinfo").unwrap()).unwrap();
    let m = mounts
        .iter()
        .rev()
        .find(|m| m.mountpoint == tmpfs.mountpoint)
        .unwrap();
    let mut list = targets(std::slice::from_ref(&lfs.mountpoint));
    list.push(Target {
        mountpoint: m.mountpoint.clone(),
        mount_id: m.mount_id,
        dev: m.dev,
        fstype: m.fstype.clone(),
        source: m.source.clone(),
        also_mounted_at: Vec::new(),
    });
    let mut filesystems = LiveFilesystems::new(list, &dir.path().join("run"));
    let write = Arc::new(Mutex::new(None));
    let mut provider = WindowProbe {
        dir: lfs.mountpoint.clone(),
        hold: Duration::from_millis(50),
        write: write.clone(),
    };
    let report = snapshot(&mut filesystems, &mut provider, Duration::from_secs(20)).await;
    assert_eq!(report.status, Status::Succeeded, "{report:?}");
    assert_eq!(report.filesystems.frozen.len(), 1);
    assert_eq!(report.filesystems.frozen[0].mountpoint, lfs.mountpoint);
    let skipped = &report.filesystems.skipped[0];
    assert_eq!(skipped.mountpoint, tmpfs.mountpoint);
    assert_eq!(skipped.reason, SkipReason::FreezeNotSupported);
    assert!(
        !write.lock().unwrap().as_ref().unwrap().1,
        "the ext4 was frozen all the same"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_thaws_at_the_deadline_when_the_agent_does_not() {
    let dir = scratch();
    let lfs = loop_fs(Fs::Ext4, 64, &dir.path().join("img"), &dir.path().join("mnt"));
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let mut filesystems = LiveFilesystems::new(targets(std::slice::from_ref(&lfs.mountpoint)), &run_dir);
    filesystems.preflight().unwrap();
    let max_freeze = Duration::from_secs(1);
    let frozen_at = Instant::now();
    filesystems.freeze(max_freeze).unwrap();
    assert!(
        run_dir.join("frozen.json").exists(),
        "the record lists what is frozen"
    );
    let probe = WriteProbe::start(&lfs.mountpoint);
    let done = probe
        .completed_within(max_freeze + Duration::from_secs(1))
        .expect("writable again by max_freeze + 1 s");
    assert!(
        done - frozen_at >= max_freeze,
        "nothing but the guard thawed it, and not early"
    );
    let event = tokio::time::timeout(Duration::from_secs(5), filesystems.guard_tripped())
        .await
        .expect("the guard reports its deadline thaw");
    assert_eq!(event, GuardEvent::DeadlineThawed);
    let thaw = filesystems.thaw();
    assert_eq!(thaw.guard_event, Some(GuardEvent::DeadlineThawed));
    assert!(thaw.errors.is_empty(), "{:?}", thaw.errors);
    assert!(
        !run_dir.join("frozen.json").exists(),
        "the guard removed the record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_unmounted_between_plan_and_freeze_is_refused_before_anything_freezes() {
    let dir = scratch();
    let a = loop_fs(Fs::Ext4, 64, &dir.path().join("a.img"), &dir.path().join("a"));
    let planned = targets(std::slice::from_ref(&a.mountpoint));
    // Between the plan and the run, the filesystem goes and something else is mounted there.
    run("umount", &[a.mountpoint.to_str().unwrap()]);
    let other = Tmpfs::mount(&a.mountpoint);
    let mut filesystems = LiveFilesystems::new(planned, &dir.path().join("run"));
    let write = Arc::new(Mutex::new(None));
    let mut provider = WindowProbe {
        dir: other.mountpoint.clone(),
        hold: Duration::ZERO,
        write: write.clone(),
    };
    let report = snapshot(&mut filesystems, &mut provider, Duration::from_secs(20)).await;
    assert_eq!(report.failed_phase, Some(Phase::Preflight), "{report:?}");
    let error = report.error.unwrap();
    assert!(
        error.contains("no longer the filesystem that was planned"),
        "{error}"
    );
    assert!(write.lock().unwrap().is_none(), "nothing was requested");
    drop(other);
    // `a`'s guard unmounts nothing more and detaches its loop device.
}

/// A provider that copies the device when asked, like the hypervisor: at the request (inside
/// the window) or only once the snapshot completes (after the thaw).
struct CopyingProvider {
    device: PathBuf,
    image: PathBuf,
    at_request: bool,
}

impl CopyingProvider {
    fn copy(&self) -> Result<(), ProviderError> {
        use std::io::Seek;
        let size = std::fs::File::open(&self.device)
            .and_then(|mut f| f.seek(std::io::SeekFrom::End(0)))
            .map_err(|e| ProviderError::with_source("cannot size the device", e))?;
        freezeframe_agent::provider::local_image::copy_device(
            &self.device,
            size,
            &self.image,
            &std::sync::atomic::AtomicBool::new(false),
        )
        .map_err(|e| ProviderError::with_source("cannot copy", e))
    }
}

#[async_trait::async_trait]
impl SnapshotProvider for CopyingProvider {
    fn name(&self) -> &'static str {
        "copying"
    }
    async fn preflight(&mut self, _: &str, _: &[Target]) -> Result<(), ProviderError> {
        Ok(())
    }
    async fn request(&mut self, _: &str, _: &[Target], _: Duration) -> Result<Registration, ProviderError> {
        if self.at_request {
            self.copy()?;
        }
        Ok(Registration {
            action_id: "copy".into(),
            completed: self.at_request,
            volume_snapshots: Vec::new(),
            location: None,
        })
    }
    async fn wait_completed(&mut self, _: &Registration) -> Result<Completion, ProviderError> {
        if !self.at_request {
            self.copy()?;
        }
        Ok(Completion::default())
    }
}

/// A snapshot of a fresh `fs` (holding one small file), its image copied inside the window or
/// after the thaw. Fields drop in order: the filesystem goes before its scratch folder.
struct CopiedRun {
    lfs: LoopFs,
    image: PathBuf,
    dir: tempfile::TempDir,
}

async fn copied_run(fs: Fs, at_request: bool, probe_on: bool) -> CopiedRun {
    let dir = scratch();
    let lfs = loop_fs(fs, fs.min_mib(), &dir.path().join("img"), &dir.path().join("mnt"));
    std::fs::write(lfs.path("data"), b"some data").unwrap();
    let mut filesystems = LiveFilesystems::new(
        targets(std::slice::from_ref(&lfs.mountpoint)),
        &dir.path().join("run"),
    )
    .with_probe(probe_on);
    let image = dir.path().join("snapshot.img");
    let mut provider = CopyingProvider {
        device: lfs.device.clone().into(),
        image: image.clone(),
        at_request,
    };
    let report = snapshot(&mut filesystems, &mut provider, Duration::from_secs(20)).await;
    assert_eq!(report.status, Status::Succeeded, "{report:?}");
    CopiedRun { lfs, image, dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_tells_an_image_taken_while_frozen_from_one_taken_after_the_thaw() {
    for at_request in [true, false] {
        let run = copied_run(Fs::Ext4, at_request, true).await;
        // The live filesystem holds both markers of this snapshot, and nothing older.
        let both = vec![
            ("test-snapshot".to_string(), ProbeMoment::After),
            ("test-snapshot".to_string(), ProbeMoment::Before),
        ];
        assert_eq!(probe::markers_in(&run.lfs.path(probe::PROBE_DIR)), both);
        let captured = probe_markers(&run.image, run.dir.path());
        if at_request {
            assert_eq!(
                captured,
                [("test-snapshot".to_string(), ProbeMoment::Before)],
                "captured inside the window: `before` and not `after`"
            );
        } else {
            assert_eq!(captured, both, "captured after the thaw: `after` too");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_probe_nothing_is_written() {
    let run = copied_run(Fs::Ext4, true, false).await;
    assert!(!run.lfs.path(probe::PROBE_DIR).exists());
}

/// A probed snapshot's image, its filesystem unmounted; the scratch folder holding it.
async fn probed_image(fs: Fs, at_request: bool) -> (tempfile::TempDir, PathBuf) {
    let CopiedRun { lfs, image, dir } = copied_run(fs, at_request, true).await;
    drop(lfs);
    (dir, image)
}

/// An image on a read-only loop device, detached on drop whatever the test did.
struct LoopDevice(String);

impl LoopDevice {
    fn attach_read_only(image: &std::path::Path) -> LoopDevice {
        let device = run(
            "losetup",
            &["--find", "--show", "--read-only", image.to_str().unwrap()],
        );
        LoopDevice(device.trim().to_string())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["--detach", &self.0])
            .output();
    }
}

fn sha256(path: &std::path::Path) -> String {
    run("sha256sum", &[path.to_str().unwrap()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_proves_an_image_read_inside_the_window_and_never_changes_it() {
    for fs in [Fs::Ext4, Fs::Xfs, Fs::Btrfs] {
        let (_dir, image) = probed_image(fs, true).await;
        let before = sha256(&image);
        let (code, found) = verify(&image);
        assert_eq!(code, 0, "{fs:?}: {found:#}");
        assert_eq!(found["verified"], true);
        assert_eq!(found["probe"], "inside-window");
        // A freeze leaves ext4's journal clean and btrfs without a log tree; XFS's log covered
        // but not empty, so it tells nothing.
        let journal = if fs == Fs::Xfs { "not-told" } else { "clean" };
        assert_eq!(found["journal"], journal, "{fs:?}: {found:#}");
        assert_eq!(found["markers"], serde_json::json!(["test-snapshot.before"]));
        assert_eq!(
            found["claimed"], "filesystem",
            "{fs:?}: the marker holds the run's claim"
        );
        assert_eq!(sha256(&image), before, "{fs:?}: verify changed the image");
        // The same image as a block device (a restored volume is one): the same verdict.
        let device = LoopDevice::attach_read_only(&image);
        let (code, on_device) = verify(std::path::Path::new(&device.0));
        assert_eq!(code, 0, "{fs:?} on {}: {on_device:#}", device.0);
        assert_eq!(on_device["probe"], "inside-window");
        assert_eq!(sha256(&image), before, "{fs:?}: verify changed the device");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_fails_an_image_read_after_the_thaw_and_names_thaw_after() {
    let (_dir, image) = probed_image(Fs::Ext4, false).await;
    let (code, found) = verify(&image);
    assert_eq!(code, 1, "{found:#}");
    assert_eq!(found["probe"], "after-thaw");
    // The snapshot's own claim (its marker's) and the image disagree: said plainly.
    assert_eq!(found["claimed"], "filesystem");
    let reasons = found["reasons"].to_string();
    assert!(reasons.contains("thaw_after"), "{found:#}");
    assert!(
        reasons.contains("taken as filesystem-consistent is only crash-consistent"),
        "{found:#}"
    );
}

/// A whole disk (a partition table, a boot partition without a filesystem, the root filesystem
/// read inside the window): verify finds the partitions itself and verifies the one it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reads_a_whole_disk_through_its_partition_table() {
    let (dir, filesystem) = probed_image(Fs::Ext4, true).await;
    let size = std::fs::metadata(&filesystem).unwrap().len();
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(size + (4 << 20)))
        .unwrap();
    // As a Droplet's disk: a small BIOS boot partition, then the root filesystem at 2 MiB.
    let table = format!(
        "label: gpt\nstart=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649\n\
         start=4096, size={}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
        size / 512
    );
    let out = std::process::Command::new("sfdisk")
        .args(["--quiet", disk.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), table.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "sfdisk: {out:?}");
    run(
        "dd",
        &[
            &format!("if={}", filesystem.display()),
            &format!("of={}", disk.display()),
            "bs=1M",
            "seek=2",
            "conv=notrunc,sparse",
            "status=none",
        ],
    );
    let before = sha256(&disk);
    let (code, found) = verify(&disk);
    assert_eq!(code, 0, "{found:#}");
    assert_eq!(found["partition_table"], "gpt", "{found:#}");
    assert_eq!(found["probe"], "inside-window", "{found:#}");
    let partitions = found["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 2, "{found:#}");
    assert!(
        partitions[0]["found"].is_null(),
        "the boot partition is not checked"
    );
    assert_eq!(partitions[1]["fstype"], "ext4");
    assert_eq!(partitions[1]["found"]["verified"], true, "{found:#}");
    assert_eq!(
        partitions[1]["found"]["markers"],
        serde_json::json!(["test-snapshot.before"])
    );
    // A restored volume can be such a disk: on a restored machine it is checked the same way.
    let links = dir.path().join("by-id");
    std::fs::create_dir_all(&links).unwrap();
    std::os::unix::fs::symlink(&disk, links.join("scsi-0DO_Volume_data")).unwrap();
    let config = dir.path().join("restored.toml");
    std::fs::write(
        &config,
        format!(
            "[freeze]\nmountpoints = [{:?}]\n[snapshot]\nprovider = \"digitalocean\"\n\
             [digitalocean]\nvolume_links = {:?}\n",
            dir.path().join("no-such-mount").display().to_string(),
            links.display().to_string()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(agent_bin())
        .arg("--config")
        .arg(&config)
        .args(["verify", "--json", "--volume", "data"])
        .output()
        .unwrap();
    let machine: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let volume = &machine["volumes"][0]["found"];
    assert_eq!(volume["partition_table"], "gpt", "{machine:#}");
    assert_eq!(volume["verified"], true, "{machine:#}");
    assert_eq!(volume["partitions"][1]["found"]["probe"], "inside-window");
    assert_eq!(sha256(&disk), before, "verify changed the disk");
    // No loop device is left holding it.
    let held = run("losetup", &["--associated", disk.to_str().unwrap()]);
    assert!(held.trim().is_empty(), "{held}");
}

/// A btrfs read live, between an fsync and the transaction after it, holds a log tree to
/// replay: verify says so, and replays it on a private copy, never on the image. Any `sync` on
/// this machine (another test's) commits the transaction and empties the log tree, so copies are
/// made until one holds a log tree: the premise is checked, not assumed.
#[test]
fn verify_tells_a_btrfs_read_live_by_its_log_tree() {
    let dir = scratch();
    let lfs = loop_fs(Fs::Btrfs, 128, &dir.path().join("img"), &dir.path().join("mnt"));
    // The log tree stays until a sync, or five minutes.
    run(
        "mount",
        &["-o", "remount,commit=300", lfs.mountpoint.to_str().unwrap()],
    );
    let live = dir.path().join("live.img");
    let log_root = |image: &std::path::Path| -> u64 {
        run(
            "btrfs",
            &["inspect-internal", "dump-super", image.to_str().unwrap()],
        )
        .lines()
        .find_map(|l| l.strip_prefix("log_root").filter(|r| r.starts_with([' ', '\t'])))
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or(0)
    };
    let held = (0..20).any(|n| {
        // fsync goes to the log tree; the transaction that would empty it waits.
        let mut file = std::fs::File::create(lfs.path(&format!("fsynced-{n}"))).unwrap();
        std::io::Write::write_all(&mut file, &vec![n as u8; 64 << 10]).unwrap();
        file.sync_all().unwrap();
        let _ = std::fs::remove_file(&live);
        run(
            "dd",
            &[
                &format!("if={}", lfs.device),
                &format!("of={}", live.display()),
                "bs=1M",
                "iflag=direct",
                "status=none",
            ],
        );
        log_root(&live) != 0
    });
    assert!(held, "no copy held a log tree (a sync emptied it every time)");
    let before = sha256(&live);
    let (code, found) = verify(&live);
    assert_eq!(code, 1, "{found:#}");
    assert_eq!(found["journal"], "needs-recovery", "{found:#}");
    assert_eq!(found["probe"], "no-markers", "{found:#}");
    assert!(
        found["reasons"]
            .to_string()
            .contains("the journal needs recovery"),
        "{found:#}"
    );
    assert_eq!(sha256(&live), before, "the replay happened on a copy");
}

#[test]
fn verify_fails_a_live_copy_by_its_journal_and_a_damaged_one_by_its_check() {
    let dir = scratch();
    let lfs = loop_fs(Fs::Ext4, 64, &dir.path().join("img"), &dir.path().join("mnt"));
    std::fs::write(lfs.path("data"), vec![7u8; 1 << 20]).unwrap();
    run("sync", &[]);
    // Read while mounted and unfrozen: what a snapshot without a freeze gets.
    let live = dir.path().join("live.img");
    run("cp", &[&lfs.device, live.to_str().unwrap()]);
    let before = sha256(&live);
    let (code, found) = verify(&live);
    assert_eq!(code, 1, "{found:#}");
    assert_eq!(found["journal"], "needs-recovery", "{found:#}");
    assert_eq!(found["probe"], "no-markers");
    assert_eq!(sha256(&live), before, "the replay happened on a copy");
    // A filesystem never mounted, a file in it, then its inode cleared: the check must catch it.
    let damaged = dir.path().join("damaged.img");
    std::fs::File::create(&damaged)
        .and_then(|f| f.set_len(64 << 20))
        .unwrap();
    let path = damaged.to_str().unwrap();
    run("mkfs.ext4", &["-q", "-F", path]);
    run("debugfs", &["-w", "-R", "write /etc/os-release data", path]);
    run("debugfs", &["-w", "-R", "clri data", path]);
    let (code, found) = verify(&damaged);
    assert_eq!(code, 1, "{found:#}");
    assert_eq!(found["filesystem_ok"], false, "{found:#}");
    // Not an image: a usage error that names it, and no JSON to mistake for a verdict.
    let out = std::process::Command::new(agent_bin())
        .args(["verify", "--json", "--image", "/nonexistent/snapshot.img"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let failure: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(failure["exit"], 2, "{failure:#}");
    assert!(failure.get("filesystem_ok").is_none(), "no verdict: {failure:#}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/snapshot.img"));
    assert!(
        found["reasons"].to_string().contains("filesystem check failed"),
        "{found:#}"
    );
}

/// On a restored machine, each mounted filesystem's health is the kernel's record of its
/// errors: an ext4 whose superblock counts an error (one raised through the kernel's own
/// trigger, as a real error would be) and an XFS the kernel shut down fail the verdict, each
/// said; a clean ext4, XFS and btrfs pass.
#[test]
fn verify_on_a_restored_machine_fails_a_filesystem_the_kernel_recorded_errors_on() {
    let dir = scratch();
    let mk = |fs: Fs, name: &str| {
        loop_fs(
            fs,
            fs.min_mib(),
            &dir.path().join(format!("{name}.img")),
            &dir.path().join(name),
        )
    };
    let (clean, broken) = (mk(Fs::Ext4, "clean"), mk(Fs::Ext4, "broken"));
    let (xfs, btrfs) = (mk(Fs::Xfs, "xfs"), mk(Fs::Btrfs, "btrfs"));
    let config = dir.path().join("restored.toml");
    let write_config = |mounts: &[&LoopFs]| {
        let list: Vec<String> = mounts
            .iter()
            .map(|m| format!("{:?}", m.mountpoint.display().to_string()))
            .collect();
        std::fs::write(
            &config,
            format!("[freeze]\nmountpoints = [{}]\n", list.join(", ")),
        )
        .unwrap();
    };
    let verify = || {
        let out = std::process::Command::new(agent_bin())
            .arg("--config")
            .arg(&config)
            .args(["verify", "--json"])
            .output()
            .unwrap();
        let found: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), found)
    };
    let of = |found: &serde_json::Value, lfs: &LoopFs| {
        found["filesystems"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["mountpoint"] == lfs.mountpoint.display().to_string().as_str())
            .unwrap_or_else(|| panic!("{} not looked at: {found:#}", lfs.mountpoint.display()))
            .clone()
    };

    // What fails on a filesystem here: these carry no snapshot's markers, which is a reason too.
    let on_filesystems = |found: &serde_json::Value| -> Vec<String> {
        let reasons: Vec<String> = serde_json::from_value(found["reasons"].clone()).unwrap();
        reasons
            .into_iter()
            .filter(|r| r.starts_with(dir.path().to_str().unwrap()))
            .collect()
    };
    // All sound: each with the kernel's view and no error.
    write_config(&[&clean, &broken, &xfs, &btrfs]);
    let (_, found) = verify();
    assert_eq!(on_filesystems(&found), Vec::<String>::new(), "{found:#}");
    for lfs in [&clean, &broken, &btrfs] {
        let health = &of(&found, lfs)["health"];
        assert_eq!(health["errors"], 0, "{found:#}");
        assert!(health["problems"].is_null(), "{found:#}");
    }
    assert!(of(&found, &xfs)["health"]["problems"].is_null(), "{found:#}");

    // An error on `broken`, recorded by the kernel in its superblock and counted.
    let name = std::fs::read_link(format!(
        "/sys/dev/block/{}",
        run(
            "findmnt",
            &["-no", "MAJ:MIN", broken.mountpoint.to_str().unwrap()]
        )
        .trim()
    ))
    .unwrap();
    let name = name.file_name().unwrap().to_str().unwrap();
    std::fs::write(
        format!("/sys/fs/ext4/{name}/trigger_fs_error"),
        "freezeframe test\n",
    )
    .unwrap();
    let (code, found) = verify();
    assert_eq!(code, Some(1), "{found:#}");
    assert_eq!(found["verified"], false);
    let health = &of(&found, &broken)["health"];
    assert_eq!(health["errors"], 1, "{found:#}");
    assert_eq!(health["source"], format!("/sys/fs/ext4/{name}"), "{found:#}");
    let reasons = found["reasons"].to_string();
    assert!(
        reasons.contains(&format!(
            "{}: the kernel recorded 1 error; the first at",
            broken.mountpoint.display()
        )) && reasons.contains("trigger_test_error"),
        "{reasons}"
    );
    assert_eq!(of(&found, &clean)["health"]["errors"], 0, "{found:#}");

    // The XFS shut down by the kernel, as after a metadata error; the clean ones still pass.
    write_config(&[&clean, &xfs, &btrfs]);
    run(
        "xfs_io",
        &["-x", "-c", "shutdown", xfs.mountpoint.to_str().unwrap()],
    );
    let (code, found) = verify();
    assert_eq!(code, Some(1), "{found:#}");
    let reasons = on_filesystems(&found);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].starts_with(&format!("{}: the kernel shut it down", xfs.mountpoint.display())),
        "{reasons:?}"
    );
    // As text, each filesystem says what the kernel recorded.
    let out = std::process::Command::new(agent_bin())
        .arg("--config")
        .arg(&config)
        .arg("verify")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no errors recorded by the kernel") && text.contains("ERRORS: the kernel shut it down"),
        "{text}"
    );
}
