//! `freezeframe-agent` as users run it: a separate process, killed, hung, and pointed at
//! configuration, state and logs that live on the very filesystem it freezes.

use freezeframe_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// Makes the local-image copy hang inside the frozen window.
const HANG_IN_WINDOW: (&str, &str) = ("FAILPOINTS", "local-image-copy=sleep(60000)");

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    runtime: PathBuf,
    images: PathBuf,
}

impl Setup {
    /// A configuration that freezes exactly `mountpoints`, with state in `runtime`.
    fn new(mountpoints: &[&Path], max_freeze: &str) -> Setup {
        let dir = scratch();
        let runtime = dir.path().join("run");
        let images = dir.path().join("images");
        let config = dir.path().join("etc/freezeframe.toml");
        write_config(&config, mountpoints, &runtime, &images, max_freeze);
        Setup {
            dir,
            config,
            runtime,
            images,
        }
    }

    fn agent(&self) -> Command {
        let mut cmd = Command::new(agent_bin());
        cmd.arg("--config").arg(&self.config);
        cmd
    }

    /// Starts `snapshot --json --name NAME` hanging in the window; returns once it reports
    /// being frozen.
    fn start_frozen(&self, name: &str) -> (Child, Instant) {
        let mut cmd = self.agent();
        cmd.args(["snapshot", "--json", "--name", name])
            .env(HANG_IN_WINDOW.0, HANG_IN_WINDOW.1);
        spawn_until_frozen(cmd, self.dir.path())
    }

    fn record(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.runtime.join("frozen.json")).expect("the record exists"))
            .unwrap()
    }
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still running");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigkill_while_frozen_thaws_within_a_second() {
    let lfs = scratch_fs(Fs::Xfs);
    let setup = Setup::new(&[&lfs.mountpoint], "60s");
    let (mut agent, _) = setup.start_frozen("hang");
    let guard_pid = setup.record()["guard_pid"].as_u64().unwrap() as u32;
    assert!(process_alive(guard_pid));

    let probe = WriteProbe::start(&lfs.mountpoint);
    assert!(
        probe.completed_within(Duration::from_millis(200)).is_none(),
        "the filesystem is frozen"
    );
    agent.kill().unwrap();
    let killed_at = Instant::now();
    agent.wait().unwrap();
    assert_writable_within(
        &probe,
        killed_at,
        Duration::from_secs(1),
        "the write completes after the agent is killed",
    );
    wait_gone(guard_pid);
    assert!(
        !setup.runtime.join("frozen.json").exists(),
        "the guard removed the record"
    );
}

#[test]
fn a_hanging_provider_is_cut_at_max_freeze_and_a_second_run_is_busy() {
    let lfs = scratch_fs(Fs::Ext4);
    let setup = Setup::new(&[&lfs.mountpoint], "2s");
    let (agent, frozen_at) = setup.start_frozen("hang");
    let probe = WriteProbe::start(&lfs.mountpoint);

    let second = setup.agent().args(["snapshot"]).output().unwrap();
    assert_eq!(second.status.code(), Some(75), "busy exits with EX_TEMPFAIL");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("busy: another snapshot is in progress"),
        "{stderr}"
    );

    assert_writable_within(
        &probe,
        frozen_at,
        Duration::from_secs(3),
        "the filesystem is writable again",
    );
    let out = agent.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report = json(&out);
    assert_eq!(report["status"], "failed");
    assert_eq!(report["failed_phase"], "request");
    assert_eq!(report["consistency"], "crash");
    assert!(report["error"]
        .as_str()
        .unwrap()
        .contains("did not register within max_freeze (2s)"));
    assert!(
        report["frozen_ms"].as_f64().unwrap() < 2000.0,
        "the agent thawed before its guard had to"
    );
    assert!(
        std::fs::read_dir(&setup.images).unwrap().next().is_none(),
        "the abandoned copy was discarded"
    );
}

#[test]
fn config_state_and_logs_on_the_frozen_filesystem_do_not_stall_the_window() {
    let lfs = scratch_fs(Fs::Ext4);
    let images = lfs.dir.path().join("images");
    let config = lfs.path("etc/freezeframe/config.toml");
    // Config, runtime directory (lock, record) and the log all on the frozen filesystem.
    write_config(
        &config,
        &[&lfs.mountpoint],
        &lfs.path("run/freezeframe"),
        &images,
        "10s",
    );
    std::fs::create_dir_all(lfs.path("log")).unwrap();
    let log = std::fs::File::create(lfs.path("log/agent.log")).unwrap();
    let out = Command::new(agent_bin())
        .args([
            "--config",
            config.to_str().unwrap(),
            "-vv",
            "snapshot",
            "--json",
            "--wait",
        ])
        .stderr(log)
        .output()
        .unwrap();
    let report = json(&out);
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert_eq!(report["consistency"], "filesystem");
    assert!(report["warnings"].as_array().unwrap().is_empty(), "{report:#}");
    assert!(
        report["frozen_ms"].as_f64().unwrap() < 9000.0,
        "the deadline was not needed"
    );
    assert!(!lfs.path("run/freezeframe/frozen.json").exists());
    // Lines logged inside the window were held and written after the thaw.
    let log = std::fs::read_to_string(lfs.path("log/agent.log")).unwrap();
    assert!(log.contains("phase=request"), "{log}");
    assert!(log.contains("phase=thaw"), "{log}");
}

#[test]
fn nested_loop_filesystems_freeze_the_inner_one_first() {
    let dir = scratch();
    // The outer mountpoint is deeper, so path order alone would freeze it first and deadlock.
    let outer = loop_fs(
        Fs::Ext4,
        128,
        &dir.path().join("outer.img"),
        &dir.path().join("x/y/z/outer"),
    );
    let inner = loop_fs(Fs::Xfs, 64, &outer.path("inner.img"), &dir.path().join("inner"));
    let setup = Setup::new(&[&outer.mountpoint, &inner.mountpoint], "20s");

    let plan = setup.agent().args(["plan", "--json"]).output().unwrap();
    assert!(plan.status.success(), "{}", String::from_utf8_lossy(&plan.stderr));
    let plan = json(&plan);
    let order: Vec<&str> = plan["freeze_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["mountpoint"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        [
            inner.mountpoint.to_str().unwrap(),
            outer.mountpoint.to_str().unwrap()
        ]
    );

    let out = setup
        .agent()
        .args(["snapshot", "--json", "--name", "nested"])
        .output()
        .unwrap();
    let report = json(&out);
    assert_eq!(report["status"], "succeeded", "{report:#}");
    let frozen: Vec<&str> = report["filesystems"]["frozen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["mountpoint"].as_str().unwrap())
        .collect();
    assert_eq!(frozen, order);
    assert!(
        report["frozen_ms"].as_f64().unwrap() < 18000.0,
        "no deadlock until the deadline"
    );
    for key in ["action_id", "quiesce_ms", "request_ms", "consistency"] {
        assert!(!report[key].is_null(), "{key} is reported");
    }
    assert_eq!(report["action_id"], "nested");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(setup.images.join("nested/manifest.json")).unwrap()).unwrap();
    for image in manifest["images"].as_array().unwrap() {
        let fs = if image["fstype"] == "xfs" {
            Fs::Xfs
        } else {
            Fs::Ext4
        };
        assert_clean(
            fs,
            &setup.images.join("nested").join(image["file"].as_str().unwrap()),
        );
    }
}

#[test]
fn leftovers_of_a_dead_agent_and_guard_are_thawed_by_the_next_run_and_by_thaw() {
    let lfs = scratch_fs(Fs::Btrfs);
    let setup = Setup::new(&[&lfs.mountpoint], "60s");

    let kill_both = |round: &str| {
        let (mut agent, _) = setup.start_frozen(round);
        let guard = setup.record()["guard_pid"].as_u64().unwrap() as i32;
        // Stop the guard first so it cannot thaw, then kill both: nothing thaws.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(guard), nix::sys::signal::SIGSTOP).unwrap();
        agent.kill().unwrap();
        agent.wait().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(guard), nix::sys::signal::SIGKILL).unwrap();
        wait_gone(guard as u32);
        assert!(
            is_frozen(&lfs.mountpoint),
            "{round}: left frozen, as after a crash"
        );
    };

    // The next snapshot thaws what the record lists, then takes its snapshot.
    kill_both("next-run");
    let out = setup
        .agent()
        .args(["snapshot", "--json", "--name", "after-crash"])
        .output()
        .unwrap();
    let report = json(&out);
    assert_eq!(report["status"], "succeeded", "{report:#}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("an earlier run left") && stderr.contains("thawed"),
        "{stderr}"
    );
    assert!(!is_frozen(&lfs.mountpoint));

    // `thaw`, as ExecStopPost= runs it.
    kill_both("agent-thaw");
    let out = setup.agent().arg("thaw").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{}: thawed", lfs.mountpoint.display())),
        "{stdout}"
    );
    assert!(!is_frozen(&lfs.mountpoint));
    assert!(!setup.runtime.join("frozen.json").exists());
    let again = setup.agent().arg("thaw").output().unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to thaw"));

    // The CLI's emergency `freezeframe thaw`, which needs neither the agent nor its config.
    kill_both("cli-thaw");
    let out = Command::new(cli_bin())
        .args(["thaw", "--runtime-dir", setup.runtime.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": thawed"));
    assert!(!is_frozen(&lfs.mountpoint));
}

#[test]
fn dry_run_shows_the_plan_and_freezes_nothing() {
    let lfs = scratch_fs(Fs::Ext4);
    let setup = Setup::new(&[&lfs.mountpoint], "20s");
    let out = setup.agent().args(["snapshot", "--dry-run"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "1. {}  (ext4, {})",
            lfs.mountpoint.display(),
            lfs.device
        )),
        "{text}"
    );
    assert!(text.contains("Provider: local-image"), "{text}");
    assert!(
        !setup.runtime.exists(),
        "a dry run takes no lock and writes no state"
    );
    assert!(!setup.images.exists());
}

#[test]
fn bad_input_gets_a_clear_error_and_exit_code_2() {
    let lfs = scratch_fs(Fs::Ext4);
    let setup = Setup::new(&[&lfs.mountpoint], "20s");

    let cases: Vec<(String, &str)> = vec![
        (
            "[freeze]\nmax_frezee = \"5s\"\n".into(),
            "unknown field `max_frezee`",
        ),
        ("[freeze]\nmax_freeze = \"10m\"\n".into(), "between 1s and 5m"),
        // What the user wrote is echoed as written.
        (
            "[freeze]\nmax_freeze = \"999h\"\n".into(),
            "`999h` is out of range: it must be between 1s and 5m",
        ),
        (
            format!(
                "[freeze]\nmountpoints = [{:?}]\n",
                lfs.path("sub").display().to_string()
            ),
            "is not a mountpoint",
        ),
        (
            "[freeze]\nmountpoints = [\"/proc\"]\n".into(),
            "pseudo filesystem",
        ),
        // Hostile or mistyped values: each named, nothing started.
        (
            "[agent]\nruntime_dir = \"/run/../etc/x\"\n".into(),
            "config.d/90-test.toml, line 2: `/run/../etc/x` must be an absolute path without `..`",
        ),
        (
            "[quiesce]\nhooks_dir = \"hooks\"\n".into(),
            "must be an absolute path",
        ),
        (
            "[freeze]\nmax_freeze = \"-5s\"\n".into(),
            "`-5s` is not a duration",
        ),
        (
            "[freeze]\nmax_freeze = \"99999999999999999999999h\"\n".into(),
            "is not a duration",
        ),
        (
            "[freeze]\nmax_freeze = 5\n".into(),
            "`5` has no unit: write a duration as a string with its unit, like \"5s\"",
        ),
        (
            "[quiesce]\nhook_timeout = \"1000000d\"\n".into(),
            "between 1s and 1h",
        ),
        ("[quiesce]\nhook_timeout = \"0s\"\n".into(), "between 1s and 1h"),
        (
            "[[quiescer]]\nkind = \"redis\"\ntimeout = \"9999h\"\n".into(),
            "`quiescer.timeout`",
        ),
        (
            "[[quiescer]]\nkind = \"oracle\"\n".into(),
            "unknown variant `oracle`",
        ),
        (
            format!("[freeze]\nmountpoints = [\"/{}\"]\n", "a".repeat(5000)),
            "is not a mountpoint",
        ),
    ];
    std::fs::create_dir_all(setup.config.parent().unwrap().join("config.d")).unwrap();
    for (dropin, expected) in cases {
        std::fs::create_dir_all(lfs.path("sub")).unwrap();
        std::fs::write(
            setup.config.parent().unwrap().join("config.d/90-test.toml"),
            &dropin,
        )
        .unwrap();
        let out = setup.agent().args(["snapshot"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{dropin}: {stderr}");
        assert!(stderr.contains(expected), "{dropin}: {stderr}");
        assert!(!setup.runtime.exists(), "nothing was started");
    }
    let out = setup
        .agent()
        .args(["snapshot", "--name", "../x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("option --name: `../x` is not a valid snapshot name")
            && !stderr.contains("configuration"),
        "the option is named, not the configuration: {stderr}"
    );
}

#[test]
fn default_discovery_plans_every_local_filesystem_root_last() {
    let lfs = scratch_fs(Fs::Ext4);
    let excluded = scratch_fs(Fs::Ext4);
    let setup = Setup::new(&[], "20s");
    let excludes = format!(
        "[freeze]\nexclude = [{:?}]\n",
        excluded.mountpoint.display().to_string()
    );
    std::fs::create_dir_all(setup.config.parent().unwrap().join("config.d")).unwrap();
    std::fs::write(
        setup.config.parent().unwrap().join("config.d/50-exclude.toml"),
        excludes,
    )
    .unwrap();

    // Only the plan: the default would freeze this machine's own `/`.
    let out = setup.agent().args(["plan", "--json"]).output().unwrap();
    let plan = json(&out);
    let order: Vec<&str> = plan["freeze_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["mountpoint"].as_str().unwrap())
        .collect();
    assert_eq!(order.last(), Some(&"/"), "{order:?}");
    assert!(order.contains(&lfs.mountpoint.to_str().unwrap()), "{order:?}");
    let reason = |mp: &str| {
        plan["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["mountpoint"] == mp)
            .map(|s| s["reason"].as_str().unwrap().to_string())
    };
    assert!(reason("/proc").unwrap().starts_with("pseudo filesystem"));
    assert_eq!(
        reason(excluded.mountpoint.to_str().unwrap()).unwrap(),
        "excluded by `freeze.exclude`"
    );
}

#[test]
fn sigterm_while_frozen_thaws_at_once_and_reports_the_interruption() {
    let lfs = scratch_fs(Fs::Ext4);
    let setup = Setup::new(&[&lfs.mountpoint], "60s");
    let (agent, _) = setup.start_frozen("term");
    let probe = WriteProbe::start(&lfs.mountpoint);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    let signalled = Instant::now();
    assert_writable_within(&probe, signalled, Duration::from_secs(1), "thawed after SIGTERM");
    let out = agent.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report = json(&out);
    assert_eq!(report["failed_phase"], "request");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("interrupted by a signal"),
        "{report:#}"
    );
    assert!(!setup.runtime.join("frozen.json").exists());
}

#[test]
fn a_stopped_agent_is_thawed_by_its_guard_at_max_freeze() {
    let lfs = scratch_fs(Fs::Ext4);
    let setup = Setup::new(&[&lfs.mountpoint], "2s");
    // No `after` marker: its write would wait for the other tool's thaw below.
    let drop_ins = setup.config.with_file_name("config.d");
    std::fs::create_dir_all(&drop_ins).unwrap();
    std::fs::write(drop_ins.join("probe.toml"), "[freeze]\nprobe = false\n").unwrap();
    let (mut agent, frozen_at) = setup.start_frozen("stopped");
    let pid = nix::unistd::Pid::from_raw(agent.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGSTOP).unwrap();
    let probe = WriteProbe::start(&lfs.mountpoint);
    assert_writable_within(&probe, frozen_at, Duration::from_secs(3), "the guard thawed");
    // Another tool freezes the filesystem now. The agent, when it runs again, must not undo
    // that freeze: the guard thawed everything it had frozen.
    let theirs = TheirFreeze::start(&lfs.mountpoint);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGCONT).unwrap();
    let out = agent.wait_with_output_ref();
    let status = agent.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("\"consistency\": \"crash\""), "{out}");
    assert!(
        is_frozen(&lfs.mountpoint),
        "the agent thawed a freeze that was not its own"
    );
    drop(theirs);
    assert!(!is_frozen(&lfs.mountpoint));
}

#[test]
fn a_droplet_snapshotted_offline_takes_no_snapshot_of_its_own() {
    let lfs = scratch_fs(Fs::Ext4);
    let setup = Setup::new(&[&lfs.mountpoint], "20s");
    let drop_ins = setup.config.with_file_name("config.d");
    std::fs::create_dir_all(&drop_ins).unwrap();
    std::fs::write(
        drop_ins.join("offline.toml"),
        "[snapshot]\nstrategy = \"offline\"\n",
    )
    .unwrap();
    let out = setup.agent().args(["snapshot", "--json"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("snapshot --offline") && text.contains("cannot power itself on"),
        "{text}"
    );
    assert!(!is_frozen(&lfs.mountpoint));
    assert!(
        std::fs::read_dir(&setup.images).map_or(true, |mut d| d.next().is_none()),
        "no image"
    );
}

/// A freeze made by another tool (`fsfreeze`), undone on drop.
struct TheirFreeze<'a>(&'a Path);

impl TheirFreeze<'_> {
    fn start(mountpoint: &Path) -> TheirFreeze<'_> {
        run("fsfreeze", &["--freeze", mountpoint.to_str().unwrap()]);
        TheirFreeze(mountpoint)
    }
}

impl Drop for TheirFreeze<'_> {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze")
            .args(["--unfreeze", self.0.to_str().unwrap()])
            .status();
    }
}

#[test]
fn a_killed_guard_makes_the_agent_thaw_by_itself() {
    let lfs = scratch_fs(Fs::Ext4);
    let setup = Setup::new(&[&lfs.mountpoint], "60s");
    let (agent, _) = setup.start_frozen("guardless");
    let guard = setup.record()["guard_pid"].as_u64().unwrap() as i32;
    let probe = WriteProbe::start(&lfs.mountpoint);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(guard), nix::sys::signal::SIGKILL).unwrap();
    let killed = Instant::now();
    assert_writable_within(&probe, killed, Duration::from_secs(1), "the agent thawed");
    let out = agent.wait_with_output().unwrap();
    let report = json(&out);
    assert_eq!(report["failed_phase"], "request", "{report:#}");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("thaw guard process died"),
        "{report:#}"
    );
}

#[test]
fn images_and_manifests_are_private_whatever_the_umask_and_an_open_image_dir_is_closed() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let lfs = scratch_fs(Fs::Ext4);
    let setup = Setup::new(&[&lfs.mountpoint], "20s");
    // An image_dir someone made readable to all, and an agent run with no umask at all.
    std::fs::create_dir_all(&setup.images).unwrap();
    std::fs::set_permissions(&setup.images, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = setup.agent();
    cmd.args(["snapshot", "--json", "--name", "private"]);
    // SAFETY: umask is async-signal-safe and touches no shared state.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert_eq!(json(&out)["status"], "succeeded");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("was open to other users (mode 755); made it 0700"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Durations in the log are rounded to a tenth of a millisecond, not float noise.
    let stderr = String::from_utf8_lossy(&out.stderr);
    for value in stderr.split(" ms=").skip(1) {
        let number = value.split_whitespace().next().unwrap();
        let decimals = number.split('.').nth(1).map_or(0, str::len);
        assert!(decimals <= 1, "ms={number} in {stderr}");
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&setup.images), 0o700);
    let snapshot = setup.images.join("private");
    assert_eq!(mode(&snapshot), 0o700);
    let files: Vec<PathBuf> = std::fs::read_dir(&snapshot)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() >= 2, "an image and the manifest: {files:?}");
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}
