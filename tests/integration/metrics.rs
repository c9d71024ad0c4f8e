//! Knowing that backups work without logging in: the run history (`freezeframe status`), the
//! metrics node_exporter's textfile collector reads, and the same served over HTTP by the
//! agent, each checked by Prometheus's own `promtool`.

use crate::service::{json_of, stderr, Served};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// What `promtool check metrics` says of `text`: None when it is clean, or why it is not. It
/// lints too (names, units, help), as Prometheus's own CI does.
fn promtool(text: &str) -> Option<String> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("promtool: {e} (.ci/run installs it from Debian's prometheus package)"),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (!out.status.success() || !said.trim().is_empty()).then_some(said)
}

/// One HTTP/1.1 GET on loopback: the status line and the body.
fn get(port: u16, path: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn runs_are_recorded_and_their_metrics_are_written_and_served_as_prometheus_reads_them() {
    let port = free_port();
    let textfiles = tempfile::tempdir().unwrap();
    let served = Served::start_with(
        "idle_exit = \"1s\"\n",
        &[],
        &format!(
            "[metrics]\ntextfile_dir = {:?}\nlisten = \"127.0.0.1:{port}\"\n",
            textfiles.path().display().to_string()
        ),
    );
    let first = json_of(&served.cli(&["snapshot", "--json", "--name", "kept-1"]));
    assert_eq!(first["status"], "succeeded", "{first:#}");
    // A run that fails: a hook refuses to freeze.
    let hooks = served.fs.dir.path().join("etc/hooks.d");
    std::fs::create_dir_all(&hooks).unwrap();
    std::fs::write(
        hooks.join("10-no"),
        "#!/bin/sh\n[ \"$1\" = freeze ] && exit 3\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(hooks.join("10-no"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let second = served.cli(&["snapshot", "--json", "--name", "refused-2"]);
    assert_eq!(json_of(&second)["status"], "failed", "{}", stderr(&second));

    // The textfile: replaced after each run, readable by node_exporter's user, clean for promtool.
    let file = textfiles.path().join("freezeframe.prom");
    let text = std::fs::read_to_string(&file).expect("freezeframe.prom written");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(
        std::fs::read_dir(textfiles.path()).unwrap().count(),
        1,
        "no temporary file left"
    );
    if let Some(why) = promtool(&text) {
        panic!("promtool check metrics: {why}\n{text}");
    }
    assert_eq!(
        sample(&text, "freezeframe_runs_total{droplet=").unwrap_or(-1.0),
        1.0,
        "{text}"
    );
    assert!(text.contains("result=\"failed\"} 1\n"), "{text}");
    assert_eq!(
        sample(&text, "freezeframe_last_run_success{").unwrap(),
        0.0,
        "{text}"
    );
    assert!(
        text.contains("consistency=\"application\"} 0\n") && text.contains("consistency=\"filesystem\"} 0\n"),
        "a failed run achieved no level: {text}"
    );
    assert!(sample(&text, "freezeframe_last_success_timestamp_seconds{").unwrap() > 1.7e9);

    // Served over HTTP, past the idle exit (metrics keep the agent up), the same text.
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, text);
    assert_eq!(get(port, "/").0, "HTTP/1.1 404 Not Found");

    // `status` lists the runs, newest first; --json carries the whole record.
    let out = served.cli(&["status"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("runs recorded: 1 succeeded, 1 failed"),
        "{shown}{}",
        stderr(&out)
    );
    // The failed run, newest, first: refused at its hook, it took no snapshot, and the name it
    // would have had is not listed as one.
    let rows: Vec<&str> = shown
        .lines()
        .skip_while(|l| !l.starts_with("ENDED"))
        .skip(1)
        .collect();
    assert!(
        rows.len() >= 2 && rows[0].contains("FAILED") && rows[0].ends_with("- (none taken)"),
        "{shown}"
    );
    assert!(!rows.iter().any(|r| r.contains("refused-2")), "{shown}");
    assert!(
        rows[1].contains("succeeded") && rows[1].ends_with("kept-1"),
        "newest first: {shown}"
    );
    let status = json_of(&served.cli(&["status", "--json"]));
    let runs = status["history"]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{status:#}");
    assert_eq!(runs[0]["consistency"], "filesystem", "{status:#}");
    assert!(runs[1]["error"].as_str().unwrap().contains("10-no"), "{status:#}");
    let history = served.fs.dir.path().join("etc/history.json");
    assert_eq!(
        std::fs::metadata(&history).unwrap().permissions().mode() & 0o777,
        0o600,
        "the record is root's"
    );
}

#[test]
fn the_shipped_alert_rules_fire_when_they_should_and_not_before() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for args in [
        vec!["check", "rules", "packaging/prometheus/freezeframe-alerts.yml"],
        vec!["test", "rules", "tests/fixtures/prometheus/alerts-test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&root)
            .output()
            .unwrap_or_else(|e| panic!("promtool: {e} (.ci/run installs it)"));
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    }
}

#[test]
fn a_metrics_address_off_this_machine_is_refused_with_what_to_write() {
    let fs = freezeframe_tests::scratch_fs(freezeframe_tests::Fs::Ext4);
    let config = freezeframe_tests::local_image_config(&fs, "");
    let dir = config.with_file_name("config.d");
    std::fs::create_dir_all(&dir).unwrap();
    for (listen, why) in [
        ("0.0.0.0:9846", "not a loopback address"),
        ("localhost", "not an address and port"),
    ] {
        std::fs::write(dir.join("m.toml"), format!("[metrics]\nlisten = {listen:?}\n")).unwrap();
        let out = Command::new(freezeframe_tests::agent_bin())
            .arg("--config")
            .arg(&config)
            .arg("plan")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{listen}");
        let err = stderr(&out);
        assert!(
            err.contains("metrics.listen") && err.contains(why),
            "{listen}: {err}"
        );
    }
    assert!(Path::new(&config).exists());
}

/// Any local user may connect to `/metrics`. Two thousand idle connections from another uid,
/// to an agent with systemd's default soft limit of 1,024 descriptors, leave it the
/// descriptors a snapshot needs; once they are gone, `/metrics` answers as before.
#[test]
fn idle_connections_to_metrics_cannot_starve_a_snapshot_of_descriptors() {
    let port = free_port();
    let served = Served::start_with("", &[], &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let limited = Command::new("prlimit")
        .arg(format!("--pid={}", served.pid()))
        .arg("--nofile=1024:1024")
        .status()
        .unwrap();
    assert!(limited.success());
    // As nobody: connect 2,000 times, say nothing, and hold them until told (stdin closes).
    let mut flood = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-c"])
        .arg(format!(
            "for i in $(seq 2000); do exec {{fd}}<>/dev/tcp/127.0.0.1/{port} || exit 1; done; \
             echo held; read _"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    flood
        .stdout
        .as_mut()
        .unwrap()
        .take(5)
        .read_to_string(&mut said)
        .unwrap();
    assert_eq!(said, "held\n", "the connections were not all made");

    let out = served.cli(&["snapshot", "--json"]);
    let report = json_of(&out);
    drop(flood.stdin.take());
    let _ = flood.wait();
    assert_eq!(report["status"], "succeeded", "{report:#}{}", stderr(&out));

    let (status, body) = get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("freezeframe_runs_total"), "{body}");
}

/// One GET /metrics sent at once, as Prometheus does: the status line and body, or None when
/// the connection was closed on it.
fn try_get_metrics(port: u16) -> Option<(String, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

/// Another user holding far more idle connections than `/metrics` has slots, and opening new
/// ones all the time, does not keep a scraper out: a newcomer closes the oldest connection that
/// has not sent its request, so each scrape is answered within a few tries.
#[test]
fn a_scraper_is_answered_while_another_user_keeps_every_slot_with_idle_connections() {
    let port = free_port();
    let served = Served::start_with("", &[], &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    // As nobody: 100 connections (descriptors 10 to 109) that say nothing, each opened again in
    // turn (its old one closed), without end.
    let open_all =
        format!("for i in $(seq 10 109); do eval \"exec $i<>/dev/tcp/127.0.0.1/{port}\" || exit 1; done");
    struct Flood(std::process::Child);
    impl Drop for Flood {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut flood = Flood(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-c"])
            .arg(format!(
                "{open_all}; echo held; while :; do {open_all} 2>/dev/null; done"
            ))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut said = String::new();
    flood
        .0
        .stdout
        .as_mut()
        .unwrap()
        .take(5)
        .read_to_string(&mut said)
        .unwrap();
    assert_eq!(said, "held\n", "the connections were not all made");
    for scrape in 0..20 {
        let answered = (0..3).find_map(|_| try_get_metrics(port));
        let (status, body) =
            answered.unwrap_or_else(|| panic!("scrape {scrape}: closed three times running"));
        assert_eq!(status, "HTTP/1.1 200 OK", "scrape {scrape}");
        assert!(body.contains("freezeframe_runs_total"), "{body}");
    }
    assert!(
        flood.0.try_wait().unwrap().is_none(),
        "the flood stopped before the scrapes were done"
    );
    drop(flood);
    drop(served);
}

/// Never during a freeze: with node_exporter's textfile folder on the very filesystem the run
/// freezes, the run neither stalls nor fails on its metrics (a write there while frozen would
/// block the run until the thaw guard's deadline), and the file it leaves holds that run's own
/// figures, which exist only once it has thawed: written after the thaw, after the probe's
/// `after` marker.
#[test]
fn metrics_on_the_frozen_filesystem_are_written_after_the_thaw_and_the_run_does_not_stall() {
    let fs = freezeframe_tests::scratch_fs(freezeframe_tests::Fs::Ext4);
    let textfiles = fs.mountpoint.join("textfiles");
    std::fs::create_dir(&textfiles).unwrap();
    let config = freezeframe_tests::local_image_config(&fs, "");
    let dropins = config.with_file_name("config.d");
    std::fs::create_dir_all(&dropins).unwrap();
    std::fs::write(
        dropins.join("metrics.toml"),
        format!(
            "[metrics]\ntextfile_dir = {:?}\n[freeze]\nmax_freeze = \"5s\"\n",
            textfiles.display().to_string()
        ),
    )
    .unwrap();
    for (run, name) in ["frozen-1", "frozen-2"].into_iter().enumerate() {
        let out = Command::new(freezeframe_tests::agent_bin())
            .arg("--config")
            .arg(&config)
            .args(["snapshot", "--json", "--name", name])
            .output()
            .unwrap();
        let report = json_of(&out);
        assert_eq!(report["status"], "succeeded", "{report:#}{}", stderr(&out));
        assert!(
            report["guard_event"].is_null(),
            "the guard had to thaw: {report:#}"
        );
        let frozen: Vec<&str> = report["filesystems"]["frozen"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["mountpoint"].as_str())
            .collect();
        assert_eq!(
            frozen,
            [fs.mountpoint.to_str().unwrap()],
            "the textfile's filesystem was frozen: {report:#}"
        );

        let file = textfiles.join("freezeframe.prom");
        let text = std::fs::read_to_string(&file).expect("freezeframe.prom written");
        let runs = (run + 1) as f64;
        assert_eq!(
            sample(&text, "freezeframe_runs_total{droplet=").unwrap_or(-1.0),
            runs,
            "this run is counted: {text}"
        );
        let frozen_ms = report["frozen_ms"].as_f64().unwrap();
        // Written to the microsecond.
        assert!(
            (sample(&text, "freezeframe_last_run_frozen_seconds{").unwrap() - frozen_ms / 1000.0).abs()
                < 1e-6,
            "this run's window, known only after its thaw: {text}"
        );
        assert_eq!(
            std::fs::read_dir(&textfiles).unwrap().count(),
            1,
            "no temporary file left"
        );
        let after = fs
            .mountpoint
            .join(".freezeframe-probe")
            .join(format!("{name}.after"));
        let modified = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        assert!(
            modified(&file) >= modified(&after),
            "the metrics were written before the probe's after-the-thaw marker"
        );
    }
}
