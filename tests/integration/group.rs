//! Consistency groups (`freezeframe -H … snapshot --group`): agents on private buses reached
//! through the stand-in for ssh, writers whose records carry one sequence across all the
//! members (appended to files, or inserted into a PostgreSQL server on each), and the images
//! the local-image provider copies while each member is frozen, restored.

use crate::servers::{loop_fs_from_image, pg_insert, RowWriter};
use crate::service::{json_of, stderr, Served};
use freezeframe_tests::bus::fake_ssh;
use freezeframe_tests::*;
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOSTS: [&str; 3] = ["alpha", "beta", "gamma"];

/// Three agents, each freezing its own scratch filesystem, and the stand-in for ssh that
/// reaches them by name.
struct Group {
    members: Vec<Served>,
    ssh: PathBuf,
}

impl Group {
    fn start(env: &[&[(&str, &str)]; 3]) -> Group {
        Group::start_with(env, "")
    }

    /// As [`Group::start`], each member with `drop_in` as a configuration drop-in.
    fn start_with(env: &[&[(&str, &str)]; 3], drop_in: &str) -> Group {
        let members: Vec<Served> = env
            .iter()
            .map(|env| Served::start_with("", env, drop_in))
            .collect();
        let hosts: Vec<(&str, &freezeframe_tests::bus::PrivateBus)> =
            HOSTS.iter().zip(&members).map(|(h, m)| (*h, &m.bus)).collect();
        let ssh = fake_ssh(members[0].fs.dir.path(), &hosts);
        Group { members, ssh }
    }

    fn command(&self, args: &[&str]) -> Command {
        self.command_via(&self.ssh, args)
    }

    /// As [`Group::command`], reaching the members through `ssh`.
    fn command_via(&self, ssh: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(cli_bin());
        cmd.args(["--ssh-command", ssh.to_str().unwrap()]);
        for host in HOSTS {
            cmd.args(["-H", host]);
        }
        cmd.args(args);
        cmd
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// A hook on member `i` (qemu-ga style: `$1` is freeze or thaw), logging beside it.
    fn hook(&self, i: usize, on_freeze: &str) {
        let dir = self.members[i].fs.dir.path();
        let hooks = dir.join("etc/hooks.d");
        std::fs::create_dir_all(&hooks).unwrap();
        let path = hooks.join("10-app");
        let log = dir.join("hooks.log");
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"$1\" >> {}\nif [ \"$1\" = freeze ]; then\n:\n{on_freeze}\nfi\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn hook_log(&self, i: usize) -> Vec<String> {
        std::fs::read_to_string(self.members[i].fs.dir.path().join("hooks.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Member `i`'s images (local-image: one folder per snapshot).
    fn images(&self, i: usize) -> Vec<PathBuf> {
        let dir = self.members[i].fs.dir.path().join("images");
        let mut found = Vec::new();
        for snapshot in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            for file in std::fs::read_dir(snapshot.path()).into_iter().flatten().flatten() {
                if file.path().extension().is_some_and(|e| e == "img") {
                    found.push(file.path());
                }
            }
        }
        found
    }

    fn assert_nothing_frozen_or_taken(&self, text: &str) {
        for (i, m) in self.members.iter().enumerate() {
            assert!(!is_frozen(&m.fs.mountpoint), "{}: frozen: {text}", HOSTS[i]);
            assert!(
                self.images(i).is_empty(),
                "{}: an image was taken: {text}",
                HOSTS[i]
            );
        }
    }
}

/// Appends one sequence across the members' filesystems, record n to member n % 3, as an
/// application spread over machines would: a record is written only after its predecessor.
struct SequenceWriter {
    stop: Arc<AtomicBool>,
    /// How many records were written so far.
    written: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl SequenceWriter {
    fn start(files: Vec<PathBuf>) -> SequenceWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let (flag, count) = (stop.clone(), written.clone());
        let thread = std::thread::spawn(move || {
            let mut out: Vec<std::fs::File> = files
                .iter()
                .map(|f| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(f)
                        .unwrap()
                })
                .collect();
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let member = (n % out.len() as u64) as usize;
                writeln!(out[member], "{n}").unwrap();
                n += 1;
                count.store(n, Ordering::SeqCst);
                if n.is_multiple_of(64) {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            n
        });
        SequenceWriter {
            stop,
            written,
            thread: Some(thread),
        }
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// Waits until `n` records were written: a member left frozen stalls it.
    fn wait_for(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.written() < n {
            assert!(
                Instant::now() < deadline,
                "the writer stalled at {} records",
                self.written()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for SequenceWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The sequence numbers an image's file holds.
fn records_in(image: &Path, dir: &Path) -> BTreeSet<u64> {
    let view = view_image(Fs::Ext4, image, &dir.join("view"));
    let text = std::fs::read_to_string(view.path("sequence")).unwrap_or_default();
    text.lines().filter_map(|l| l.parse().ok()).collect()
}

#[test]
fn a_group_cuts_three_machines_at_one_point_and_is_kept_and_deleted_whole() {
    require_root();
    let group = Group::start(&[&[], &[], &[]]);
    let files = group.members.iter().map(|m| m.fs.path("sequence")).collect();
    let writer = SequenceWriter::start(files);
    writer.wait_for(300);
    let out = group.cli(&["snapshot", "--group", "--json"]);
    // Every record in an image was written before the CLI returned: at most the one being
    // written then is not counted yet. Two more, and the writer went on after the snapshots,
    // however late it was scheduled after the thaw.
    writer.wait_for(writer.written() + 2);
    let written = writer.stop();
    let result = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{result:#}{}", stderr(&out));
    assert_eq!(result["consistent"], true, "{result:#}");
    let id = result["group"].as_str().unwrap().to_string();
    assert!(result["overlap_ms"].as_f64().unwrap() > 0.0, "{result:#}");
    for member in result["members"].as_array().unwrap() {
        let report = &member["report"];
        assert_eq!(report["status"], "succeeded", "{report:#}");
        assert_eq!(report["group"]["id"], id.as_str());
        assert!(
            report["snapshot_name"].as_str().unwrap().contains(&id),
            "{report:#}"
        );
        assert!(member["frozen_seen_ms"].as_f64().unwrap() <= 0.0, "{member:#}");
        assert!(member["thawed_after_ms"].as_f64().unwrap() > 0.0, "{member:#}");
        let phases: Vec<&str> = report["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["phase"].as_str().unwrap())
            .collect();
        assert_eq!(
            phases,
            [
                "preflight",
                "quiesce",
                "sync",
                "ready",
                "freeze",
                "hold",
                "request",
                "thaw",
                "resume"
            ]
        );
    }

    // Each image is what its member held while all were frozen: one cut of the sequence.
    let mut held: Vec<BTreeSet<u64>> = Vec::new();
    for (i, host) in HOSTS.iter().enumerate() {
        let images = group.images(i);
        assert_eq!(images.len(), 1, "{host}: {images:?}");
        held.push(records_in(&images[0], group.members[i].fs.dir.path()));
    }
    let last = held
        .iter()
        .filter_map(|h| h.last().copied())
        .max()
        .expect("records were captured");
    assert!(
        last + 1 < written,
        "the writer went on after the snapshots ({last} of {written})"
    );
    for n in 0..=last {
        assert!(
            held[(n % 3) as usize].contains(&n),
            "record {n} is missing from {}'s image, while record {last} is in another's: \
             not one cut",
            HOSTS[(n % 3) as usize]
        );
    }

    // Listed by group, and retention keeps or deletes a group whole.
    let out = group.cli(&["list", "--group", &id, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.iter().all(|l| l["result"].as_array().unwrap().len() == 1),
        "{lines:?}"
    );
    // A second later: snapshot times count seconds, and groups of the same second are kept
    // together.
    std::thread::sleep(Duration::from_millis(1100));
    let out = group.cli(&["snapshot", "--group", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let second = json_of(&out)["group"].as_str().unwrap().to_string();
    // A dry run names, on every member, what the real run then deletes, and deletes nothing.
    let before: Vec<_> = (0..3).map(|i| group.images(i)).collect();
    let out = group.cli(&["prune", "--keep-groups", "1", "--dry-run", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let would = json_of(&out);
    assert_eq!(would["groups"], serde_json::json!([id]), "{would:#}");
    let machines = would["machines"].as_array().unwrap();
    assert_eq!(machines.len(), 3, "{would:#}");
    for machine in machines {
        assert!(machine.get("deleted").is_none(), "{would:#}");
        let names: Vec<&str> = machine["would_delete"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(names.len() == 1 && names[0].contains(&id), "{would:#}");
    }
    let after: Vec<_> = (0..3).map(|i| group.images(i)).collect();
    assert_eq!(after, before, "the dry run deleted nothing");
    let out = group.cli(&["prune", "--keep-groups", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert_eq!(
        text.matches("1 snapshots of 1 older groups deleted").count(),
        3,
        "{text}"
    );
    for i in 0..3 {
        let left = group.images(i);
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].to_string_lossy().contains(&second), "{left:?}");
    }
    let out = group.cli(&["list", "--group", &id, "--json"]);
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .all(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["result"] == serde_json::json!([])));
    let out = group.cli(&["list", "--group", "nogroup"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// A group where member `gamma` fails as `setup` makes it: nothing is requested anywhere, and
/// every member that prepared thawed and resumed.
fn assert_aborted_by_gamma(group: &Group, extra: &[&str], expected: &str) {
    let out = group.cli(&[&["snapshot", "--group", "--json"], extra].concat());
    let result = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{result:#}{}", stderr(&out));
    assert_eq!(result["consistent"], false);
    let aborted = result["aborted"].as_str().unwrap();
    assert!(
        aborted.starts_with("gamma") && aborted.contains(expected),
        "{aborted}"
    );
    group.assert_nothing_frozen_or_taken(&format!("{result:#}"));
    for (i, member) in result["members"].as_array().unwrap().iter().enumerate() {
        let report = &member["report"];
        // A quick failure may abort the group before a member's Prepare was sent.
        if report.is_null() {
            let error = member["error"].as_str().unwrap_or_default();
            assert!(error.contains("not prepared: gamma"), "{member:#}");
            continue;
        }
        assert_eq!(report["status"], "failed", "{report:#}");
        assert_eq!(
            report["consistency"],
            serde_json::Value::Null,
            "nothing requested: {report:#}"
        );
        if i < 2 {
            let error = report["error"].as_str().unwrap();
            assert!(
                error.contains("aborted by the group's coordinator: gamma"),
                "{error}"
            );
            // Whatever they had quiesced was resumed. A quick failure may stop them before
            // their quiesce began (nothing), or stop the hook's `freeze` before it wrote its
            // first line (under load): that hook still gets its `thaw`, since the agent cannot
            // know how far a `freeze` it began got, and a lock taken must be let go.
            let log = group.hook_log(i);
            assert!(
                log.is_empty() || log == ["freeze", "thaw"] || log == ["thaw"],
                "{}: {log:?}",
                HOSTS[i]
            );
        }
    }
}

#[test]
fn a_member_failing_its_preflight_quiesce_freeze_or_deadline_aborts_the_group() {
    require_root();
    let group = Group::start(&[&[], &[], &[]]);
    group.hook(0, "");
    group.hook(1, "");

    // A hook anyone may rewrite: gamma refuses it in preflight, before quiescing anything.
    group.hook(2, "");
    let hook = group.members[2].fs.dir.path().join("etc/hooks.d/10-app");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_aborted_by_gamma(&group, &[], "failed at preflight");
    assert!(group.hook_log(2).is_empty(), "gamma quiesced nothing");
    for i in 0..3 {
        let _ = std::fs::remove_file(group.members[i].fs.dir.path().join("hooks.log"));
    }

    group.hook(2, "exit 1");
    assert_aborted_by_gamma(&group, &[], "failed at quiesce");

    // Someone else froze gamma's filesystem: FIFREEZE answers EBUSY.
    group.hook(2, "");
    let gamma = &group.members[2].fs.mountpoint;
    run("fsfreeze", &["-f", gamma.to_str().unwrap()]);
    let thaw_gamma = scopeguard(gamma);
    for i in 0..3 {
        let _ = std::fs::remove_file(group.members[i].fs.dir.path().join("hooks.log"));
    }
    let out = group.cli(&["snapshot", "--group", "--json"]);
    drop(thaw_gamma);
    let result = json_of(&out);
    let aborted = result["aborted"].as_str().unwrap_or_default();
    assert!(aborted.starts_with("gamma failed at freeze"), "{result:#}");
    group.assert_nothing_frozen_or_taken(&format!("{result:#}"));
    assert_eq!(group.hook_log(0), ["freeze", "thaw"]);

    // Gamma hangs in its prepare: the deadline aborts the group. The deadline counts from the
    // coordinator's start (connections included) and must leave alpha and beta, on a loaded
    // machine, the time to quiesce; gamma's hook would hang far longer than that and than the
    // wait allowed below, its timeout raised to match (read at each call).
    for i in 0..3 {
        let _ = std::fs::remove_file(group.members[i].fs.dir.path().join("hooks.log"));
    }
    let drop_ins = group.members[2].fs.dir.path().join("etc/config.d");
    std::fs::create_dir_all(&drop_ins).unwrap();
    std::fs::write(
        drop_ins.join("60-hooks.toml"),
        "[quiesce]\nhook_timeout = \"10m\"\n",
    )
    .unwrap();
    group.hook(2, "sleep 300");
    let started = Instant::now();
    assert_aborted_by_gamma(
        &group,
        &["--prepare-timeout", "10s"],
        "had not quiesced and flushed within the prepare deadline",
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the hook's sleep was waited for: {:?}",
        started.elapsed()
    );
}

/// Thaws `mountpoint` when dropped (a test's own fsfreeze).
fn scopeguard(mountpoint: &Path) -> impl Drop + '_ {
    struct Thaw<'a>(&'a Path);
    impl Drop for Thaw<'_> {
        fn drop(&mut self) {
            let _ = Command::new("fsfreeze").arg("-u").arg(self.0).status();
        }
    }
    Thaw(mountpoint)
}

/// Waits until every member's filesystem is frozen by the group run `cli`; a run that ended
/// meanwhile fails the test with what it said.
fn wait_all_frozen(group: &Group, cli: &mut std::process::Child, within: Duration) {
    // The agents say where their jobs are (JobPhase): `hold` is frozen and waiting for the
    // commit. A member held in its freeze phase (an injected sleep) is probed with fsfreeze, but
    // only once every other member holds: the probe's own freeze of a filesystem about to be
    // frozen would make the agent's fail with EBUSY.
    let deadline = Instant::now() + within;
    loop {
        let phases: Vec<String> = group.members.iter().map(job_phase).collect();
        let holding = phases.iter().filter(|p| *p == "hold").count();
        let all = group.members.iter().zip(&phases).all(|(m, phase)| {
            phase == "hold"
                || (phase == "freeze" && holding == phases.len() - 1 && is_frozen(&m.fs.mountpoint))
        });
        if all {
            return;
        }
        if let Some(status) = cli.try_wait().unwrap() {
            let said = |pipe: Option<&mut dyn std::io::Read>| {
                let mut text = String::new();
                if let Some(pipe) = pipe {
                    let _ = pipe.read_to_string(&mut text);
                }
                text
            };
            let stdout = said(cli.stdout.as_mut().map(|p| p as &mut dyn std::io::Read));
            let stderr = said(cli.stderr.as_mut().map(|p| p as &mut dyn std::io::Read));
            panic!(
                "the group run ended ({status}) before its members all froze: {phases:?}\n{stdout}\n{stderr}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "the members did not all freeze: {phases:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The phase of the job `member`'s agent runs (`JobPhase`), empty when none.
fn job_phase(member: &Served) -> String {
    let out = Command::new("busctl")
        .arg(format!("--address={}", member.bus.address))
        .args([
            "get-property",
            "org.freezeframe.Agent1",
            "/org/freezeframe/Agent1",
            "org.freezeframe.Agent1",
            "JobPhase",
        ])
        .output()
        .unwrap();
    // `s "hold"`
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("s ")
        .trim_matches('"')
        .to_string()
}

/// How long until every member's filesystem is thawed.
fn time_to_thaw_all(group: &Group, within: Duration) -> Duration {
    let started = Instant::now();
    while group.members.iter().any(|m| is_frozen(&m.fs.mountpoint)) {
        assert!(started.elapsed() < within, "a member stayed frozen");
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

#[test]
fn members_thaw_and_resume_at_once_when_the_coordinator_or_its_link_goes() {
    require_root();
    // Gamma sleeps 20 s right after its freeze: everyone is frozen and waiting for the commit
    // meanwhile, with max_freeze 20 s in their configurations.
    let slow = [("FAILPOINTS", "after-freeze=sleep(20000)")];
    let group = Group::start(&[&[], &[], &slow]);
    for i in 0..3 {
        group.hook(i, "");
    }

    // The coordinator SIGKILLed while all are frozen.
    let spawned = Instant::now();
    let mut cli = group
        .command(&["snapshot", "--group"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_all_frozen(&group, &mut cli, Duration::from_secs(90));
    cli.kill().unwrap();
    let _ = cli.wait();
    // Alpha and beta, waiting for the commit, thaw as their coordinator leaves: before their
    // max_freeze (20 s) could have ended it, which is no sooner than 20 s after the coordinator
    // was started, however long its members took to freeze. Gamma, in its injected sleep, thaws
    // when that ends, by its own max_freeze at the latest (slack for a loaded machine).
    let max_freeze = Duration::from_secs(20);
    let deadline = max_freeze + Duration::from_secs(10);
    while [0, 1].iter().any(|&i| is_frozen(&group.members[i].fs.mountpoint)) {
        assert!(
            spawned.elapsed() < max_freeze,
            "alpha or beta waited for its deadline"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    time_to_thaw_all(&group, deadline);
    for i in 0..3 {
        wait_for_hook_thaw(&group, i);
        // The hook's thaw is logged before its run ends and records its result.
        let last = &last_result_once_idle(&group.members[i]);
        assert_eq!(last["status"], "failed", "{last:#}");
        assert_eq!(last["failed_phase"], "hold", "{last:#}");
        assert_eq!(last["consistency"], serde_json::Value::Null);
        // Gamma's injected sleep blocks its agent past max_freeze: its deadline ends it.
        if i < 2 {
            assert!(
                last["error"]
                    .as_str()
                    .unwrap()
                    .contains("left the bus before it committed"),
                "{last:#}"
            );
        }
    }
    group.assert_nothing_frozen_or_taken("after the coordinator was killed");

    // One member's link cut (its ssh session killed) while all are frozen: that member aborts
    // because its coordinator left its bus, and the coordinator aborts the others.
    for i in 0..3 {
        let _ = std::fs::remove_file(group.members[i].fs.dir.path().join("hooks.log"));
    }
    let mut cli = group
        .command(&["snapshot", "--group", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_all_frozen(&group, &mut cli, Duration::from_secs(90));
    let bridges = bridges_to(&group.members[0].bus.address);
    assert!(!bridges.is_empty(), "the stand-in ssh runs systemd-stdio-bridge");
    for pid in bridges {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
    }
    let out = cli.wait_with_output().unwrap();
    let result = json_of(&out);
    assert_eq!(result["consistent"], false, "{result:#}");
    assert!(
        result["aborted"].as_str().unwrap().starts_with("alpha"),
        "{result:#}"
    );
    time_to_thaw_all(&group, deadline);
    group.assert_nothing_frozen_or_taken(&format!("{result:#}"));
    for i in 0..3 {
        wait_for_hook_thaw(&group, i);
    }
}

/// Waits until member `i`'s hook ran its thaw.
fn wait_for_hook_thaw(group: &Group, i: usize) {
    let started = Instant::now();
    while group.hook_log(i) != ["freeze", "thaw"] {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}: {:?}",
            HOSTS[i],
            group.hook_log(i)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The systemd-stdio-bridge processes connected to the bus at `address`.
fn bridges_to(address: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("systemd-stdio-bridge") && c.contains(address)
            })
        })
        .collect()
}

#[test]
fn a_group_of_postgresql_servers_restores_to_one_cut_of_their_writes() {
    require_root();
    let group = Group::start(&[&[], &[], &[]]);
    let servers: Vec<PgServer> = group
        .members
        .iter()
        .map(|m| {
            let server = PgServer::start(&m.fs.path("pg/data"), &m.fs.dir.path().join("pg-run"), true);
            server.sql("CREATE TABLE rows (n bigint PRIMARY KEY)");
            let config = m.fs.dir.path().join("etc/config.toml");
            let mut text = std::fs::read_to_string(&config).unwrap();
            text.push_str(&format!(
                "\n[[quiescer]]\nkind = \"postgresql\"\nsocket_dir = {:?}\n",
                server.sockets
            ));
            std::fs::write(&config, text).unwrap();
            server
        })
        .collect();
    // Row n goes to member n % 3, each INSERT committed before the next is sent: an
    // application whose machines act on each other's acknowledged writes.
    let sockets: Vec<PathBuf> = servers.iter().map(|s| s.sockets.clone()).collect();
    let writer = RowWriter::start("INSERT across the group", 30, move |n| {
        pg_insert(&sockets[(n % 3) as usize], n)
    });
    let out = group.cli(&["snapshot", "--group", "--json"]);
    // Every row in an image was committed before the CLI returned, its acknowledgement at most
    // one behind: two more, and the writer went on after the snapshots, however late it was
    // scheduled after the thaw.
    writer.wait_for(writer.acked() + 2);
    let written = writer.stop();
    drop(servers);
    let result = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{result:#}{}", stderr(&out));
    assert_eq!(result["consistent"], true, "{result:#}");
    for member in result["members"].as_array().unwrap() {
        assert_eq!(member["report"]["consistency"], "application", "{member:#}");
    }

    // Each member's image, started as its own database after crash recovery.
    let mut held: Vec<BTreeSet<u64>> = Vec::new();
    for (i, m) in group.members.iter().enumerate() {
        let images = group.images(i);
        assert_eq!(images.len(), 1, "{}: {images:?}", HOSTS[i]);
        let restored = loop_fs_from_image(&images[0], &m.fs.dir.path().join("restored"));
        let server = PgServer::restart(&restored.path("pg/data"), &m.fs.dir.path().join("pg-run-2"));
        held.push(
            server
                .sql("SELECT n FROM rows")
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect(),
        );
    }
    let last = held
        .iter()
        .filter_map(|h| h.last().copied())
        .max()
        .expect("rows were captured");
    assert!(
        last < written,
        "the writer went on after the snapshots ({last} of {written})"
    );
    for n in 1..=last {
        assert!(
            held[(n % 3) as usize].contains(&n),
            "row {n} is missing from {}'s restored database, while row {last} is in another's",
            HOSTS[(n % 3) as usize]
        );
    }
}

/// A coordinator that asks a member to wait longer than that machine's
/// `agent.max_prepare_timeout` is refused by it before anything is quiesced, saying how much it
/// may ask for; the CLI's coordinator then aborts the group.
#[test]
fn a_prepare_timeout_above_a_members_bound_is_refused_before_anything_is_quiesced() {
    require_root();
    let group = Group::start(&[&[], &[], &[]]);
    for i in 0..3 {
        group.hook(i, "");
    }
    // Gamma's owner allows 30 s (read at each call: no restart): time enough for three members
    // to connect and quiesce on a loaded machine.
    let drop_ins = group.members[2].fs.dir.path().join("etc/config.d");
    std::fs::create_dir_all(&drop_ins).unwrap();
    std::fs::write(
        drop_ins.join("60-bound.toml"),
        "[agent]\nmax_prepare_timeout = \"30s\"\n",
    )
    .unwrap();
    let out = group.cli(&["snapshot", "--group", "--json", "--prepare-timeout", "1m"]);
    let result = json_of(&out);
    // A usage error: the option must change.
    assert_eq!(out.status.code(), Some(2), "{result:#}{}", stderr(&out));
    let aborted = result["aborted"].as_str().unwrap_or_default();
    assert!(
        aborted.starts_with("gamma")
            && aborted.contains("at most 30000 ms (30s, `agent.max_prepare_timeout`)"),
        "{result:#}"
    );
    group.assert_nothing_frozen_or_taken(&format!("{result:#}"));
    assert!(group.hook_log(2).is_empty(), "gamma quiesced nothing");
    // Within the bound, the same group goes through.
    let out = group.cli(&["snapshot", "--group", "--json", "--prepare-timeout", "30s"]);
    let result = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{result:#}{}", stderr(&out));
    assert_eq!(result["consistent"], true, "{result:#}");
}

/// Runs `busctl ARGS…` against `bus` through `systemd-stdio-bridge`, whose connection to the bus
/// stays after busctl leaves (until the returned guard drops): a coordinator that called Prepare
/// and never says another word, nor leaves.
fn busctl_staying_on(
    bus: &freezeframe_tests::bus::PrivateBus,
    dir: &Path,
    args: &[&str],
) -> (Output, impl Drop) {
    struct Leave(PathBuf);
    impl Drop for Leave {
        fn drop(&mut self) {
            let _ = std::fs::write(&self.0, "");
        }
    }
    // Each bridge its own file: a later call must not take away an earlier one's word to go.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, Ordering::SeqCst);
    let leave = dir.join(format!("coordinator-{n}-leaves"));
    let script = dir.join(format!("staying-bridge-{n}"));
    // busctl's end of the socket is non-blocking: socat copies it, where cat would stop at
    // EAGAIN. Not on busctl's stderr, which would keep its output open while the bridge stays.
    // It stays until told, or until the test's folder is gone, two minutes at most.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec 2>/dev/null\n{{ socat -u STDIN STDOUT; i=0; while [ ! -e '{leave}' ] && [ -e '{script}' ] && \
             [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; }} | exec systemd-stdio-bridge --bus-path='{bus}'\n",
            leave = leave.display(),
            script = script.display(),
            bus = bus.address,
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("busctl")
        .arg(format!("--address=unixexec:path={}", script.display()))
        .args([
            "call",
            "org.freezeframe.Agent1",
            "/org/freezeframe/Agent1",
            "org.freezeframe.Agent1",
        ])
        .args(args)
        .output()
        .unwrap();
    (out, Leave(leave))
}

/// busctl as a coordinator that stays on the bus and never says Freeze: asking for a timeout of
/// half a billion years is refused before anything is quiesced, and asking for none gets this
/// machine's bound, at which its wait ends and its hook's lock is released.
#[test]
fn a_coordinator_that_stays_silent_holds_a_member_quiesced_no_longer_than_its_bound() {
    require_root();
    let member = Served::start("max_prepare_timeout = \"3s\"\n", &[]);
    let dir = member.fs.dir.path().to_path_buf();
    let hooks = dir.join("etc/hooks.d");
    std::fs::create_dir_all(&hooks).unwrap();
    let log = dir.join("hooks.log");
    std::fs::write(
        hooks.join("10-app"),
        format!("#!/bin/sh\necho \"$1\" >> {}\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(hooks.join("10-app"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let hook_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let huge = u64::MAX.to_string();
    let (out, gone) = busctl_staying_on(
        &member.bus,
        &dir,
        &[
            "Prepare",
            "a{sv}",
            "2",
            "group",
            "s",
            "g0123abcd",
            "timeout-ms",
            "t",
            &huge,
        ],
    );
    drop(gone);
    assert!(
        !out.status.success(),
        "accepted: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr(&out).contains("at most 3000 ms (3s, `agent.max_prepare_timeout`)"),
        "{}",
        stderr(&out)
    );
    let status = json_of(&member.cli(&["status", "--json"]));
    assert_eq!(status["running_job"], 0, "{status:#}");
    assert_eq!(hook_log(), "", "nothing quiesced");

    let (out, _stays) = busctl_staying_on(
        &member.bus,
        &dir,
        &["Prepare", "a{sv}", "1", "group", "s", "g0123abcd"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        let status = json_of(&member.cli(&["status", "--json"]));
        if status["running_job"] == 0 && status["last_result"]["group"]["id"] == "g0123abcd" {
            break status["last_result"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the member still waits for its silent coordinator: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let error = last["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("did not come by its prepare deadline"),
        "ended by the bound, the coordinator still on the bus: {last:#}"
    );
    assert!(
        last["filesystems"]["frozen"].as_array().unwrap().is_empty(),
        "{last:#}"
    );
    assert_eq!(hook_log(), "freeze\nthaw\n", "the hook's lock was released");
    assert!(!is_frozen(&member.fs.mountpoint));
}

/// The group `freezeframe` on this machine while held, created when missing (and removed when
/// the last test holding it is done); agents started meanwhile let its members in.
struct FreezeframeGroup {
    gid: u32,
}

static GROUP_HOLDERS: std::sync::Mutex<(usize, bool)> = std::sync::Mutex::new((0, false));

impl FreezeframeGroup {
    fn hold() -> FreezeframeGroup {
        let mut holders = GROUP_HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        if holders.0 == 0 && nix::unistd::Group::from_name("freezeframe").unwrap().is_none() {
            let made = Command::new("groupadd")
                .args(["--system", "freezeframe"])
                .status()
                .unwrap();
            assert!(made.success(), "groupadd freezeframe");
            holders.1 = true;
        }
        holders.0 += 1;
        let gid = nix::unistd::Group::from_name("freezeframe")
            .unwrap()
            .expect("the group freezeframe")
            .gid
            .as_raw();
        FreezeframeGroup { gid }
    }

    /// `busctl call` of org.freezeframe.Agent1's `args` on `bus`, as uid 65534 in this group
    /// alone: a member of the group, not root.
    fn busctl_as_member(&self, bus: &freezeframe_tests::bus::PrivateBus, args: &[&str]) -> Output {
        let groups = format!("--groups={}", self.gid);
        crate::service::busctl_with_ids(&["--reuid=65534", "--regid=65534", &groups], &bus.address, args)
    }
}

impl Drop for FreezeframeGroup {
    fn drop(&mut self) {
        let mut holders = GROUP_HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        holders.0 -= 1;
        if holders.0 == 0 && holders.1 {
            let _ = Command::new("groupdel").arg("freezeframe").status();
            holders.1 = false;
        }
    }
}

/// Waits until `member` runs no job, and returns its last result.
fn last_result_once_idle(member: &Served) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = json_of(&member.cli(&["status", "--json"]));
        if status["running_job"] == 0 {
            return status["last_result"].clone();
        }
        assert!(Instant::now() < deadline, "the job did not end: {status:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Another member of the group (busctl as uid 65534 in `freezeframe`) may not abort a group
/// job it did not prepare: refused, the job goes on; its coordinator's Abort ends it.
#[test]
fn another_member_of_the_group_may_not_abort_a_group_job_its_coordinator_may() {
    require_root();
    let group = FreezeframeGroup::hold();
    let member = Served::start("", &[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The coordinator: a connection of the test's own (root), which stays until it aborts.
    let coordinator = runtime.block_on(async {
        zbus::connection::Builder::address(member.bus.address.as_str())
            .build()
            .await
            .unwrap()
    });
    let options: std::collections::HashMap<&str, zbus::Variant> =
        [("group", zbus::Variant::from("g0123abcd"))].into();
    let job: u64 = runtime.block_on(async {
        coordinator
            .call_method(
                Some("org.freezeframe.Agent1"),
                "/org/freezeframe/Agent1",
                Some("org.freezeframe.Agent1"),
                "Prepare",
                &(options,),
            )
            .await
            .unwrap()
            .body()
            .deserialize()
            .unwrap()
    });

    let out = group.busctl_as_member(&member.bus, &["Abort", "ts", &job.to_string(), "mine now"]);
    assert!(
        !out.status.success(),
        "another member aborted the job: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr(&out).contains("only that connection, or root, may abort it"),
        "{}",
        stderr(&out)
    );
    let status = json_of(&member.cli(&["status", "--json"]));
    assert_eq!(status["running_job"], job, "{status:#}");

    // Its coordinator's Abort is obeyed (it would find no job, had the member's ended it).
    runtime
        .block_on(coordinator.call_method(
            Some("org.freezeframe.Agent1"),
            "/org/freezeframe/Agent1",
            Some("org.freezeframe.Agent1"),
            "Abort",
            &(job, "the coordinator's own"),
        ))
        .unwrap();
    let last = last_result_once_idle(&member);
    let error = last["error"].as_str().unwrap_or_default();
    assert!(error.contains("the coordinator's own"), "{last:#}");
    assert!(
        last["filesystems"]["frozen"].as_array().unwrap().is_empty(),
        "{last:#}"
    );
}

/// A coordinator that lets its prepare deadline pass holds this machine quiesced that long:
/// Prepare again right after is refused to a member of the group, naming the wait, and not to
/// root.
#[test]
fn after_a_group_job_ends_uncommitted_prepare_waits_as_long_as_it_held_the_machine() {
    require_root();
    let group = FreezeframeGroup::hold();
    let member = Served::start("max_prepare_timeout = \"10s\"\n", &[]);
    let dir = member.fs.dir.path().to_path_buf();
    let (out, _stays) = busctl_staying_on(
        &member.bus,
        &dir,
        &[
            "Prepare",
            "a{sv}",
            "2",
            "group",
            "s",
            "g0123abcd",
            "timeout-ms",
            "t",
            "10000",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let last = last_result_once_idle(&member);
    assert!(
        last["error"]
            .as_str()
            .unwrap_or_default()
            .contains("did not come by its prepare deadline"),
        "{last:#}"
    );

    let prepare = ["Prepare", "a{sv}", "1", "group", "s", "g0123abcd"];
    let out = group.busctl_as_member(&member.bus, &prepare);
    assert!(
        !out.status.success(),
        "prepared again at once: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr(&out).contains("may be tried again in"), "{}", stderr(&out));
    let status = json_of(&member.cli(&["status", "--json"]));
    assert_eq!(
        status["running_job"], 0,
        "the refused Prepare started nothing: {status:#}"
    );
    // Root may (busctl leaves at once, so that job aborts).
    let out = Command::new("busctl")
        .arg(format!("--address={}", member.bus.address))
        .args([
            "call",
            "org.freezeframe.Agent1",
            "/org/freezeframe/Agent1",
            "org.freezeframe.Agent1",
        ])
        .args(prepare)
        .output()
        .unwrap();
    assert!(out.status.success(), "root was refused: {}", stderr(&out));
    let last = last_result_once_idle(&member);
    assert!(
        last["error"]
            .as_str()
            .unwrap_or_default()
            .contains("left the bus"),
        "{last:#}"
    );
}

/// Waits until member `i`'s job is in `phase` (its `JobPhase`); a run that ended meanwhile
/// fails the test with what it said.
fn wait_for_phase(group: &Group, cli: &mut std::process::Child, i: usize, phase: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while job_phase(&group.members[i]) != phase {
        if let Some(status) = cli.try_wait().unwrap() {
            panic!(
                "the group run ended ({status}) before {} reached {phase}",
                HOSTS[i]
            );
        }
        let phases: Vec<String> = group.members.iter().map(job_phase).collect();
        assert!(
            Instant::now() < deadline,
            "{} never reached {phase}: {phases:?}",
            HOSTS[i]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A stand-in for ssh in front of `ssh` whose connection to `host` passes what the coordinator
/// sends through a relay (`cat`) the test can stop: what the coordinator says then stays in
/// flight while the agent's signals still reach it. The relay's pid is written to `relay`.
fn ssh_with_relay(ssh: &Path, host: &str, relay: &Path) -> PathBuf {
    let dir = relay.parent().unwrap();
    let script = dir.join("ssh-relayed");
    let fifo = dir.join("relay.fifo");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \" $* \" in\n  *\" {host} \"*)\n    rm -f {fifo}; mkfifo {fifo}\n    \
             exec 3<&0\n    cat <&3 > {fifo} &\n    echo $! > {relay}\n    exec 3<&-\n    \
             exec {ssh} \"$@\" < {fifo} ;;\n  *) exec {ssh} \"$@\" ;;\nesac\n",
            fifo = fifo.display(),
            relay = relay.display(),
            ssh = ssh.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// Member `i`'s last result once its job ended, bounded well below its `max_freeze`: a member
/// left to its deadline fails here.
fn ended_without_its_deadline(group: &Group, i: usize) -> serde_json::Value {
    let last = last_result_once_idle(&group.members[i]);
    assert!(!is_frozen(&group.members[i].fs.mountpoint), "{}", HOSTS[i]);
    assert!(
        last["guard_event"].is_null(),
        "{}: the guard ended it: {last:#}",
        HOSTS[i]
    );
    last
}

/// A member that had the commit when its coordinator was SIGKILLed: its snapshot taken, the
/// freeze ended by the registration, and its report saying that the coordinator left after
/// its commit.
fn committed_and_told(group: &Group, i: usize) {
    let last = ended_without_its_deadline(group, i);
    assert_eq!(last["status"], "succeeded", "{}: {last:#}", HOSTS[i]);
    assert_eq!(
        last["group"]["coordinator_left"], "after_commit",
        "{}: {last:#}",
        HOSTS[i]
    );
    let warnings = last["warnings"].to_string();
    assert!(
        warnings.contains("left the bus after it committed"),
        "{}: {last:#}",
        HOSTS[i]
    );
    assert_eq!(group.images(i).len(), 1, "{}: {last:#}", HOSTS[i]);
}

#[test]
fn the_coordinator_killed_after_or_during_its_commit_leaves_no_member_to_its_deadline() {
    require_root();
    // max_freeze 5 minutes: every wait below is bounded far below it, so a member thawed by its
    // deadline fails the test. Each member's request (the image's copy) takes 6 s, so the
    // coordinator is killed while they are all committed and frozen; gamma is frozen 5 s before
    // it says so, so alpha holds well before the commit.
    let slow = "local-image-copy=sleep(6000)";
    let slowest = format!("after-freeze=sleep(5000);{slow}");
    let group = Group::start_with(
        &[
            &[("FAILPOINTS", slow)],
            &[("FAILPOINTS", slow)],
            &[("FAILPOINTS", &slowest)],
        ],
        "[freeze]\nmax_freeze = \"5min\"\n",
    );

    // After the commit went to every member: each goes on, thaws as its snapshot registers, and
    // says its coordinator left.
    let mut cli = group
        .command(&["snapshot", "--group", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for i in 0..3 {
        wait_for_phase(&group, &mut cli, i, "request");
    }
    cli.kill().unwrap();
    let _ = cli.wait();
    for i in 0..3 {
        committed_and_told(&group, i);
    }

    // During the commit: it reached beta and gamma, and was still on its way to alpha (held in
    // the relay the test stopped) when the coordinator was killed and that connection went.
    for i in 0..3 {
        for image in group.images(i) {
            std::fs::remove_dir_all(image.parent().unwrap()).unwrap();
        }
    }
    let relay = group.members[0].fs.dir.path().join("relay.pid");
    let ssh = ssh_with_relay(&group.ssh, HOSTS[0], &relay);
    let mut cli = group
        .command_via(&ssh, &["snapshot", "--group", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_phase(&group, &mut cli, 0, "hold");
    let gamma = job_phase(&group.members[2]);
    assert_ne!(gamma, "hold", "gamma, in its injected sleep, must hold last");
    let relay: i32 = std::fs::read_to_string(&relay).unwrap().trim().parse().unwrap();
    let relay = nix::unistd::Pid::from_raw(relay);
    nix::sys::signal::kill(relay, nix::sys::signal::SIGSTOP).unwrap();
    for i in 1..3 {
        wait_for_phase(&group, &mut cli, i, "request");
    }
    cli.kill().unwrap();
    let _ = cli.wait();
    nix::sys::signal::kill(relay, nix::sys::signal::SIGKILL).unwrap();
    let alpha = ended_without_its_deadline(&group, 0);
    assert_eq!(alpha["status"], "failed", "{alpha:#}");
    assert_eq!(alpha["failed_phase"], "hold", "{alpha:#}");
    assert_eq!(alpha["group"]["coordinator_left"], "before_commit", "{alpha:#}");
    assert!(
        alpha["error"]
            .as_str()
            .unwrap_or_default()
            .contains("left the bus before it committed"),
        "{alpha:#}"
    );
    assert!(group.images(0).is_empty(), "alpha took a snapshot: {alpha:#}");
    for i in 1..3 {
        committed_and_told(&group, i);
    }
}
