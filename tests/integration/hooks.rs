//! Hook scripts as QEMU guest agent calls them: `freeze` in name order before the freeze,
//! `thaw` in reverse after the thaw, for every hook whose `freeze` ran.

use crate::servers::*;
use freezeframe_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Setup {
    fs: ScratchFs,
    config: PathBuf,
    hooks: PathBuf,
    images: PathBuf,
}

impl Setup {
    fn new(extra: &str) -> Setup {
        let fs = scratch_fs(Fs::Ext4);
        let config = fs.dir.path().join("etc/config.toml");
        let images = fs.dir.path().join("images");
        write_config(
            &config,
            &[&fs.mountpoint],
            &fs.dir.path().join("run"),
            &images,
            "10s",
        );
        if !extra.is_empty() {
            let mut text = std::fs::read_to_string(&config).unwrap();
            text.push_str(extra);
            std::fs::write(&config, text).unwrap();
        }
        let hooks = fs.dir.path().join("etc/hooks.d");
        std::fs::create_dir_all(&hooks).unwrap();
        std::fs::set_permissions(&hooks, std::fs::Permissions::from_mode(0o755)).unwrap();
        Setup {
            fs,
            config,
            hooks,
            images,
        }
    }

    /// A hook that appends `<name> <arg>` to a log on the frozen filesystem itself: a write
    /// while frozen would block until the deadline, so a clean run proves the order.
    fn hook(&self, name: &str, extra: &str) -> PathBuf {
        let log = self.fs.path("hooks.log");
        let path = self.hooks.join(name);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho \"{name} $1\" >> {}\n{extra}\n", log.display()),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.fs.path("hooks.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    fn snapshot(&self) -> serde_json::Value {
        let out = Command::new(agent_bin())
            .arg("--config")
            .arg(&self.config)
            .args(["snapshot", "--json"])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn images_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn hooks_freeze_in_name_order_and_thaw_in_reverse_around_the_window() {
    let setup = Setup::new("");
    setup.hook("20-app", "");
    setup.hook("10-db", "");
    setup.hook("30-x.sample", "exit 1");
    let report = setup.snapshot();
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert_eq!(report["consistency"], "application");
    assert_eq!(
        setup.log(),
        ["10-db freeze", "20-app freeze", "20-app thaw", "10-db thaw"]
    );
    assert_eq!(report["quiescers"][0]["name"], "hooks");
    assert_eq!(report["quiescers"][0]["resumed"], true);
    assert!(
        report["frozen_ms"].as_f64().unwrap() < 9000.0,
        "no hook wrote while frozen"
    );
}

#[test]
fn a_failing_freeze_hook_aborts_and_thaws_those_that_froze() {
    let setup = Setup::new("");
    setup.hook("10-db", "");
    setup.hook(
        "20-app",
        "[ \"$1\" = freeze ] && { echo 'app refused'; exit 7; }; exit 0",
    );
    setup.hook("30-web", "");
    let report = setup.snapshot();
    assert_eq!(report["failed_phase"], "quiesce", "{report:#}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("hook 20-app freeze failed") && error.contains("app refused"),
        "{error}"
    );
    assert_eq!(
        setup.log(),
        ["10-db freeze", "20-app freeze", "20-app thaw", "10-db thaw"]
    );
    assert_eq!(images_in(&setup.images), 0, "nothing was snapshotted");
}

#[test]
fn with_continue_a_failing_hook_gives_a_filesystem_consistent_snapshot() {
    let setup = Setup::new("on_quiesce_failure = \"continue\"\n");
    setup.hook("10-db", "[ \"$1\" = freeze ] && exit 1; exit 0");
    let report = setup.snapshot();
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert_eq!(report["consistency"], "filesystem");
    assert!(report["warnings"][0]
        .as_str()
        .unwrap()
        .contains("hook 10-db freeze failed"));
    assert_eq!(setup.log(), ["10-db freeze", "10-db thaw"]);
}

#[test]
fn a_hook_anyone_could_change_is_refused_before_anything_runs() {
    let setup = Setup::new("");
    setup.hook("10-db", "");
    let open = setup.hook("20-app", "");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let report = setup.snapshot();
    assert_eq!(report["failed_phase"], "preflight", "{report:#}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("20-app is writable by group or others"), "{error}");
    assert!(setup.log().is_empty(), "no hook ran");

    let plan = Command::new(agent_bin())
        .arg("--config")
        .arg(&setup.config)
        .arg("plan")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&plan.stdout).contains("hooks: refused"));
}

#[test]
fn a_hook_that_hangs_is_killed_and_the_others_thaw() {
    let setup = Setup::new("hook_timeout = \"1s\"\n");
    setup.hook("10-db", "");
    // It ignores SIGTERM and leaves a child of its own running: both go at the timeout.
    let child_pid = setup.fs.dir.path().join("child.pid");
    setup.hook(
        "20-stuck",
        &format!(
            "[ \"$1\" = freeze ] && {{ trap '' TERM; sleep 60 & echo $! > {}; wait; }}; exit 0",
            child_pid.display()
        ),
    );
    let report = setup.snapshot();
    assert_eq!(report["failed_phase"], "quiesce", "{report:#}");
    assert!(report["error"]
        .as_str()
        .unwrap()
        .contains("did not finish within 1s and was killed"));
    let pid: u32 = std::fs::read_to_string(&child_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!process_alive(pid), "the hook's child was killed with it");
    assert_eq!(
        setup.log(),
        ["10-db freeze", "20-stuck freeze", "20-stuck thaw", "10-db thaw"]
    );
}

/// QEMU's own sample MySQL hook (tests/fixtures/qemu-guest-agent), with only its client options
/// pointed at this test's server and bash as its shell, installed as `hooks.d/mysql-flush.sh`.
fn install_qemus_mysql_hook(hooks: &Path, socket: &Path) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/qemu-guest-agent/fsfreeze-hook.d/mysql-flush.sh.sample");
    let sample = std::fs::read_to_string(fixture).unwrap();
    let unchanged = "MYSQL_OPTS=\"-uroot\"";
    assert!(sample.contains(unchanged), "the sample's options line moved");
    // The sample is a bash script in fact: `read < $FIFO`, with no variable name, is an error
    // in dash (Debian's /bin/sh), which then closes the FIFO as soon as `thaw` opens it, and
    // `thaw`'s write dies of SIGPIPE when it loses that race. It runs as bash, as users must.
    assert!(
        sample.starts_with("#!/bin/sh\n"),
        "the sample's first line changed"
    );
    let text = sample.replacen("#!/bin/sh\n", "#!/bin/bash\n", 1).replace(
        unchanged,
        &format!("MYSQL_OPTS=\"-uroot --socket={}\"", socket.display()),
    );
    std::fs::create_dir_all(hooks).unwrap();
    let path = hooks.join("mysql-flush.sh");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Processes whose command line mentions `needle` (the hook's background client names the
/// test server's socket).
fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            e.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains(needle) && !cmdline.contains("mariadbd")).then_some(cmdline)
        })
        .collect()
}

/// Removes the sample's FIFO and kills what is left of its lock sessions on `socket`.
struct SampleLeftovers {
    fifo: &'static Path,
    socket: String,
}

impl Drop for SampleLeftovers {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.fifo);
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains(&self.socket) && !cmdline.contains("mariadbd") {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            }
        }
    }
}

#[test]
fn qemus_mysql_sample_hook_holds_the_lock_through_the_window_twice_in_a_row() {
    let fs = scratch_fs_sized(Fs::Ext4, 160);
    let server = MariaDb::start(&fs.path("mysql/data"), &fs.dir.path().join("mysql-run"), true);
    server.sql("CREATE DATABASE app; CREATE TABLE app.rows (n BIGINT PRIMARY KEY) ENGINE=InnoDB");
    let config = local_image_config(&fs, "");
    install_qemus_mysql_hook(&fs.dir.path().join("etc/hooks.d"), &server.socket);
    let socket = server.socket.display().to_string();
    // The sample's FIFO path is fixed: one left by an interrupted earlier run is removed (it
    // would fail the sample's mkfifo), and whatever this run leaves goes when it ends, pass or
    // fail, so that no later run inherits it.
    let fifo = Path::new("/var/run/mysql-flush.fifo");
    let _ = std::fs::remove_file(fifo);
    let _cleanup = SampleLeftovers {
        fifo,
        socket: socket.clone(),
    };

    for round in 1..=2 {
        server.sql(&format!("INSERT INTO app.rows VALUES ({round})"));
        // Held inside the window long enough to look at the lock from another session (whose
        // client may take seconds to start on a loaded machine, then waits a second), within
        // max_freeze (20 s) with room for the copy itself.
        let mut cmd = Command::new(agent_bin());
        cmd.env("FAILPOINTS", "local-image-copy=sleep(6000)")
            .arg("--config")
            .arg(&config)
            .args(["snapshot", "--json"]);
        let (agent, _) = spawn_until_frozen(cmd, fs.dir.path());
        // A writer needs the global lock's intention lock: behind FLUSH TABLES WITH READ LOCK it
        // waits, here for at most a second, and gives up. (LOCK TABLES writes nothing to disk.)
        let blocked =
            server.try_sql("SET SESSION lock_wait_timeout = 1; LOCK TABLES app.rows WRITE; UNLOCK TABLES");
        assert_eq!(
            blocked, None,
            "round {round}: the hook's read lock is held while frozen"
        );
        let out = agent.wait_with_output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(report["status"], "succeeded", "round {round}: {report:#}");
        assert_eq!(report["consistency"], "application", "round {round}");
        // After the thaw the lock is gone, and so is everything the hook made.
        server.sql("SET SESSION lock_wait_timeout = 5; LOCK TABLES app.rows WRITE; UNLOCK TABLES");
        server.sql(&format!("INSERT INTO app.rows VALUES ({})", round + 100));
        // Generous: on a loaded machine the lock session may take a while to wind down.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while (fifo.exists() || !processes_mentioning(&socket).is_empty())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            !fifo.exists(),
            "round {round}: the hook's FIFO is removed by its thaw"
        );
        assert_eq!(
            processes_mentioning(&socket),
            Vec::<String>::new(),
            "round {round}: the hook's lock session ended"
        );
    }
    assert_eq!(images_in(&fs.dir.path().join("images")), 2);
}

/// Live processes (not zombies) whose command line is `cmdline` (arguments joined by spaces).
fn pids_running(cmdline: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let line = std::fs::read(e.path().join("cmdline")).ok()?;
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches('\0')
                .replace('\0', " ");
            (line == cmdline && process_alive(pid)).then_some(pid as i32)
        })
        .collect()
}

/// The agent's record of resumes owed, as text (empty when there is none).
fn pending_record(setup: &Setup) -> String {
    std::fs::read_to_string(setup.fs.dir.path().join("run/pending-resumes")).unwrap_or_default()
}

/// `freezeframe-agent thaw`, as the unit's ExecStopPost runs it after a SIGKILLed agent; its
/// output.
fn thaw_for_dead_agent(setup: &Setup) -> String {
    let thaw = Command::new(agent_bin())
        .arg("--config")
        .arg(&setup.config)
        .arg("thaw")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&thaw.stdout).into_owned();
    assert!(
        thaw.status.success(),
        "thaw failed: {text}{}",
        String::from_utf8_lossy(&thaw.stderr)
    );
    text
}

/// A `freeze` that exits leaving a process in its group, held until `thaw` (as QEMU's MySQL
/// sample holds its lock session): with the agent SIGKILLed while frozen, `thaw` runs the hook's
/// `thaw` while that process still lives, then ends what is left of it.
#[test]
fn what_a_freeze_left_running_is_ended_after_its_thaw_when_the_agent_was_sigkilled() {
    let setup = Setup::new("");
    let (pid_file, seen) = (
        setup.fs.dir.path().join("session.pid"),
        setup.fs.dir.path().join("session.seen"),
    );
    // Its `thaw` leaves the session alone (a `thaw` that fails to end it, or one that only
    // tells it to finish), so only the resume can end it.
    setup.hook(
        "10-session",
        &format!(
            "case \"$1\" in\nfreeze) sleep 600.21 & echo $! > {pid} ;;\n\
             thaw) kill -0 $(cat {pid}) && echo alive-at-thaw >> {seen} ;;\nesac",
            pid = pid_file.display(),
            seen = seen.display()
        ),
    );
    let mut cmd = Command::new(agent_bin());
    cmd.env("FAILPOINTS", "local-image-copy=sleep(60000)")
        .arg("--config")
        .arg(&setup.config)
        .args(["snapshot", "--json"]);
    let (mut agent, _) = spawn_until_frozen(cmd, setup.fs.dir.path());
    let session: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    agent.kill().unwrap();
    agent.wait().unwrap();
    let record = pending_record(&setup);
    assert!(
        process_alive(session),
        "the session outlives the agent, as it would a real one"
    );
    let text = thaw_for_dead_agent(&setup);
    let alive_after = process_alive(session);
    if alive_after {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(session as i32),
            nix::sys::signal::SIGKILL,
        );
    }
    assert!(
        record
            .lines()
            .any(|l| l.starts_with("hook-left ") && l.ends_with("/10-session")),
        "what the freeze left is recorded: {record}"
    );
    assert!(text.contains("10-session: thaw: done"), "{text}");
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap_or_default(),
        "alive-at-thaw\n",
        "the thaw ran while the session lived"
    );
    assert!(!alive_after, "the session was ended after the thaw");
    assert_eq!(pending_record(&setup), "", "nothing is owed any more");
}

/// A hook that times out is killed, with its group, before its group's record is forgotten: an
/// agent SIGKILLed in between leaves the record, for `thaw` to kill what the hook started.
#[test]
fn a_timed_out_hook_is_killed_before_its_group_is_forgotten() {
    let setup = Setup::new("hook_timeout = \"1s\"\n");
    setup.hook(
        "10-stuck",
        "[ \"$1\" = freeze ] && { sleep 600.22 & wait; }; exit 0",
    );
    let mut agent = Command::new(agent_bin())
        .arg("--config")
        .arg(&setup.config)
        .args(["snapshot", "--json"])
        .env("FAILPOINTS", "hook-killed-unforgotten=sleep(60000)")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Between the kill and the record's change.
    crate::phases::wait_in_failpoint_pause(&mut agent);
    let record = pending_record(&setup);
    agent.kill().unwrap();
    agent.wait().unwrap();
    let text = thaw_for_dead_agent(&setup);
    // This test's own `sleep` (its fraction marks it), ended here whatever the outcome.
    let survivors = pids_running("sleep 600.22");
    for pid in &survivors {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::SIGKILL);
    }
    assert!(
        record
            .lines()
            .any(|l| l.starts_with("hook-running ") && l.ends_with("/10-stuck")),
        "the group's record stays until the group is killed: {record}"
    );
    assert_eq!(survivors, Vec::<i32>::new(), "what the hook started runs on");
    assert!(text.contains("10-stuck: thaw: done"), "{text}");
    assert_eq!(
        setup.log(),
        ["10-stuck freeze", "10-stuck thaw"],
        "its thaw ran, once"
    );
    assert_eq!(pending_record(&setup), "", "nothing is owed any more");
}

/// A runtime directory that hangs (here its first write, held by a fault point) fails the
/// prepare within a bound, before the hook's `freeze` runs, instead of hanging the run.
#[test]
fn a_record_that_hangs_fails_the_prepare_within_its_bound_and_no_freeze_runs() {
    let setup = Setup::new("");
    setup.hook("10-db", "");
    let mut agent = Command::new(agent_bin())
        .arg("--config")
        .arg(&setup.config)
        .args(["snapshot", "--json"])
        .env("FAILPOINTS", "pending-write=1*sleep(600000)")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Far past the bound (10 s), far short of the hang (600 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while agent.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            agent.kill().unwrap();
            agent.wait().unwrap();
            panic!("the run hangs with its record");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = agent.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["failed_phase"], "quiesce", "{report:#}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("cannot record hook") && error.contains("did not take the change within 10s"),
        "{error}"
    );
    assert!(setup.log().is_empty(), "no hook ran unrecorded");
    assert_eq!(images_in(&setup.images), 0);
}
