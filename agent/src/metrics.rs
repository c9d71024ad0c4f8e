//! Prometheus metrics from the run history, for alerts on backups that stopped working: the
//! text exposition format, written for node_exporter's textfile collector (`freezeframe.prom`,
//! replaced atomically after every run and drill, never while anything is frozen) and served
//! over HTTP on a loopback address when `metrics.listen` is set. Names follow Velero's and
//! restic's exporters, units in the names.

use crate::config::Settings;
use crate::history::{History, LastDrill, RunRecord};
use crate::runtime::{RuntimeDir, RuntimeError};
use crate::transaction::ports::Consistency;
use crate::transaction::Status;
use std::fmt::Write;
use std::path::Path;

/// The file node_exporter's textfile collector reads.
pub(crate) const TEXTFILE: &str = "freezeframe.prom";

/// One metric family: its help, type, and samples (labels beyond `droplet`, value).
struct Family<'a> {
    out: &'a mut String,
    labels: &'a str,
}

impl Family<'_> {
    fn begin(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, extra: &[(&str, &str)], value: f64) {
        let mut labels = self.labels.to_string();
        for (key, v) in extra {
            let _ = write!(labels, ",{key}=\"{}\"", escape(v));
        }
        let _ = writeln!(self.out, "{name}{{{labels}}} {}", number(value));
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.begin(name, "gauge", help);
        self.sample(name, &[], value);
    }
}

/// A sample's value as written: whole numbers without a fraction, others to the microsecond
/// (seconds made from milliseconds carry float noise, `0.21572999999999998`, past that).
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        return format!("{value:.0}");
    }
    let text = format!("{value:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    match text {
        "" | "-0" => "0".to_string(),
        text => text.to_string(),
    }
}

/// A label value as the exposition format needs it.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics of `history` (and of the last restore drill, when there was one), labelled
/// with the Droplet (`droplet`: its id, as the newest run that learned it recorded it; this
/// host's name where no run did, as under local-image, which has no Droplet) and, for the last
/// run's own figures, its consistency group. A run that failed before it learned the id (a
/// refused token) does not change the label: the series stay one.
pub(crate) fn render(history: &History, drill: Option<&LastDrill>, host: &str) -> String {
    let last = history.runs.last();
    let droplet = history
        .runs
        .iter()
        .rev()
        .find_map(|r| r.droplet_id)
        .map_or_else(|| host.to_string(), |id| id.to_string());
    let base = format!("droplet=\"{}\"", escape(&droplet));
    let mut out = String::new();
    let mut f = Family {
        out: &mut out,
        labels: &base,
    };
    let totals = &history.totals;
    for (name, help, label, counts) in [
        (
            "freezeframe_runs_total",
            "Snapshot runs since the record began, by result.",
            "result",
            [("succeeded", totals.succeeded), ("failed", totals.failed)],
        ),
        (
            "freezeframe_guard_thaws_total",
            "Freezes the thaw guard ended on its own, by reason.",
            "reason",
            [
                ("deadline", totals.guard_deadline_thaws),
                ("agent_died", totals.guard_agent_died_thaws),
            ],
        ),
    ] {
        f.begin(name, "counter", help);
        for (value, count) in counts {
            f.sample(name, &[(label, value)], count as f64);
        }
    }
    if let Some(success) = history.last_success() {
        f.gauge(
            "freezeframe_last_success_timestamp_seconds",
            "When the last successful snapshot run ended, in seconds since the Unix epoch.",
            success.finished_unix.floor(),
        );
    }
    if let Some(run) = last {
        last_run(&mut out, &base, run);
    }
    if let Some(drill) = drill {
        let mut f = Family {
            out: &mut out,
            labels: &base,
        };
        f.gauge(
            "freezeframe_last_verification_timestamp_seconds",
            "When the last restore drill of this machine's snapshots ran (scheduled here, or elsewhere as its tag on the snapshot says), in seconds since the Unix epoch.",
            drill.unix_seconds as f64,
        );
        f.gauge(
            "freezeframe_last_verification_success",
            "Whether the last restore drill of this machine's snapshots verified it (1) or not (0).",
            f64::from(u8::from(drill.verified)),
        );
    }
    out
}

/// The last run's own figures, with its group when it was a member of one.
fn last_run(out: &mut String, base: &str, run: &RunRecord) {
    let labels = match &run.group {
        Some(group) => format!("{base},group=\"{}\"", escape(group)),
        None => base.to_string(),
    };
    let mut f = Family { out, labels: &labels };
    f.gauge(
        "freezeframe_last_attempt_timestamp_seconds",
        "When the last snapshot run ended, in seconds since the Unix epoch.",
        run.finished_unix.floor(),
    );
    f.gauge(
        "freezeframe_last_run_success",
        "Whether the last snapshot run succeeded (1) or failed (0).",
        f64::from(u8::from(run.status == Status::Succeeded)),
    );
    f.begin(
        "freezeframe_last_run_consistency",
        "gauge",
        "The consistency the last run's snapshot achieved: 1 for its level, 0 for the others (all 0: no snapshot).",
    );
    for level in Consistency::ALL {
        let name = level.as_str();
        let achieved = run.status == Status::Succeeded && run.consistency == Some(level);
        f.sample(
            "freezeframe_last_run_consistency",
            &[("consistency", name)],
            f64::from(u8::from(achieved)),
        );
    }
    for (name, help, ms) in [
        (
            "freezeframe_last_run_frozen_seconds",
            "How long the last run kept the filesystems frozen (writes blocked).",
            run.frozen_ms,
        ),
        (
            "freezeframe_last_run_request_seconds",
            "How long the last run's snapshot request took, inside the frozen window.",
            run.request_ms,
        ),
        (
            "freezeframe_last_run_quiesce_seconds",
            "How long the last run spent quiescing databases and hooks.",
            run.quiesce_ms,
        ),
        (
            "freezeframe_last_run_duration_seconds",
            "How long the last run took from start to end.",
            run.total_ms,
        ),
    ] {
        f.gauge(name, help, ms / 1000.0);
    }
    if let Some(kept) = run.snapshots_kept {
        f.gauge(
            "freezeframe_snapshots_kept",
            "This machine's snapshots left after the last run's retention.",
            kept as f64,
        );
    }
}

/// The metrics as they stand: the history in `history.file` and the drill in
/// `verify.state_file`.
pub(crate) fn current(settings: &Settings) -> String {
    let history = crate::history::load(&settings.history.file);
    let drill = LastDrill::load(&settings.verify.state_file);
    render(&history, drill.as_ref(), &crate::naming::hostname())
}

/// Whether anything reads the metrics here: a textfile directory that exists, or `/metrics`
/// served. Blocking (the directory is looked at).
pub(crate) fn wanted(settings: &Settings) -> bool {
    settings.metrics.listen.is_some() || settings.metrics.textfile_dir.as_deref().is_some_and(Path::is_dir)
}

/// Writes the current metrics for node_exporter when `metrics.textfile_dir` is set, at the end
/// of a run (its thaw and resumes long done), which holds the transaction lock.
pub(crate) fn publish(settings: &Settings) {
    if let Some(dir) = &settings.metrics.textfile_dir {
        write_textfile(dir, &current(settings));
    }
}

/// As [`publish`], outside a run (after a scheduled drill, after `thaw`): holding the
/// transaction lock, so that no run freezes the filesystem the file is on meanwhile. A run that
/// holds the lock past 30 s writes them itself when it ends. Each try, and the writing, runs
/// off the async workers; the waits between tries are async sleeps.
pub(crate) async fn publish_between_runs(settings: &Settings) {
    if settings.metrics.textfile_dir.is_none() {
        return;
    }
    let settings = std::sync::Arc::new(settings.clone());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let attempt = std::sync::Arc::clone(&settings);
        match crate::blocking::run(move || publish_if_unlocked(&attempt)).await {
            Ok(()) => return,
            Err(RuntimeError::Busy { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => {
                tracing::info!("metrics not written now ({e}): the next run writes them");
                return;
            }
        }
    }
}

/// Publishes under the transaction lock if it is free now; `Busy` if a run (or its guard)
/// holds it. Without a usable runtime directory there is no lock to hold: nothing is written,
/// and nothing said (the run that needs the directory says why).
fn publish_if_unlocked(settings: &Settings) -> Result<(), RuntimeError> {
    let Ok(dir) = RuntimeDir::open(&settings.runtime_dir) else {
        return Ok(());
    };
    let _lock = dir.lock()?;
    publish(settings);
    Ok(())
}

// Serving over HTTP.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// At most this many connections are served at a time. Each holds a descriptor, and a snapshot
/// needs its own (targets, the lock, the bus): local users must not be able to take them all.
/// Prometheus and do-agent use one at a time.
pub(crate) const HTTP_CONNECTIONS: usize = 32;

/// A request's head must have arrived this soon after the connection was accepted.
pub(crate) const HTTP_HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A connection is closed this long after it was accepted, whatever it is doing.
const HTTP_CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One connection being served: its task, and whether its request's head has arrived.
struct Open {
    id: u64,
    head_read: Arc<AtomicBool>,
    task: tokio::task::AbortHandle,
}

/// The connections being served, oldest first.
type OpenConnections = Arc<Mutex<VecDeque<Open>>>;

/// Takes a connection off the list when its task ends, or is aborted.
struct Leaves(OpenConnections, u64);

impl Drop for Leaves {
    fn drop(&mut self) {
        self.0.lock().unwrap().retain(|o| o.id != self.1);
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped: each answer read afresh from
/// the history and drill files. A minimal HTTP/1.1 responder, one request per connection
/// (Prometheus and do-agent scrape that way), [`HTTP_CONNECTIONS`] at a time; a request whose
/// head is slow (over [`HTTP_HEAD_TIMEOUT`]) or oversized is dropped. When every slot is taken,
/// a newcomer closes the oldest connection that has not sent its request yet: idle connections
/// held by a local user cannot keep out a scraper, which sends its request at once.
pub(crate) async fn serve_http(listener: tokio::net::TcpListener, settings: Settings) {
    let settings = Arc::new(settings);
    let open: OpenConnections = Arc::default();
    let mut next = 0u64;
    loop {
        // Accepted even when every slot is taken: left in the kernel's queue, a flood would
        // stall every later client instead.
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let mut connections = open.lock().unwrap();
        if connections.len() >= HTTP_CONNECTIONS {
            let idle = connections
                .iter()
                .position(|o| !o.head_read.load(Ordering::SeqCst));
            // Every slot answering a request (they end soon): this one is closed at once.
            let Some(oldest_idle) = idle.and_then(|i| connections.remove(i)) else {
                drop(stream);
                continue;
            };
            oldest_idle.task.abort();
        }
        next += 1;
        let head_read = Arc::new(AtomicBool::new(false));
        let leaves = Leaves(open.clone(), next);
        let (settings, read) = (settings.clone(), head_read.clone());
        let task = tokio::spawn(async move {
            let _leaves = leaves;
            let _ = tokio::time::timeout(HTTP_CONNECTION_TIMEOUT, answer(stream, settings, &read)).await;
        });
        connections.push_back(Open {
            id: next,
            head_read,
            task: task.abort_handle(),
        });
    }
}

/// Reads one request's head (saying so in `head_read` once it has all arrived) and answers it.
async fn answer(
    mut stream: tokio::net::TcpStream,
    settings: Arc<Settings>,
    head_read: &AtomicBool,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let head_by = tokio::time::Instant::now() + HTTP_HEAD_TIMEOUT;
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let Ok(read) = tokio::time::timeout_at(head_by, stream.read(&mut buf)).await else {
            return Ok(());
        };
        let n = read?;
        if n == 0 || head.len() + n > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    head_read.store(true, Ordering::SeqCst);
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, body) = match (method, path.split('?').next().unwrap_or("")) {
        // Reading and parsing the files blocks: off the runtime's workers, which serve the bus.
        ("GET" | "HEAD", "/metrics") => match tokio::task::spawn_blocking(move || current(&settings)).await {
            Ok(text) => ("200 OK", text),
            Err(_) => (
                "500 Internal Server Error",
                "the metrics could not be read\n".to_string(),
            ),
        },
        ("GET" | "HEAD", _) => ("404 Not Found", "freezeframe serves /metrics only\n".to_string()),
        _ => ("405 Method Not Allowed", "GET /metrics\n".to_string()),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Writes `text` as [`TEXTFILE`] in `dir`, atomically (the collector never reads half a file).
/// A directory that does not exist means no collector here: one log line, nothing written.
pub(crate) fn write_textfile(dir: &Path, text: &str) {
    if !dir.is_dir() {
        tracing::info!(
            "no metrics written: {} does not exist (node_exporter's textfile collector; metrics.textfile_dir)",
            dir.display()
        );
        return;
    }
    let file = dir.join(TEXTFILE);
    if let Err(e) = crate::atomic_file::replace(&file, text.as_bytes(), 0o644) {
        tracing::warn!("cannot write the metrics to {}: {e}", file.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waiting for a run's transaction lock must leave the async runtime free: on a runtime of
    /// one thread, the task that releases the lock runs meanwhile, and the metrics are written
    /// as soon as it has (a thread asleep between tries would wait out its 30 s, then give up).
    #[tokio::test(flavor = "current_thread")]
    async fn waiting_for_the_lock_leaves_the_runtime_free() {
        let dir = tempfile::tempdir().unwrap();
        let textfile_dir = dir.path().join("textfiles");
        std::fs::create_dir(&textfile_dir).unwrap();
        let config = dir.path().join("config.toml");
        let at = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(
            &config,
            format!(
                "[agent]\nruntime_dir = {:?}\n[snapshot]\nprovider = \"local-image\"\n\
                 [history]\nfile = {:?}\n[verify]\nstate_file = {:?}\n\
                 [metrics]\ntextfile_dir = {:?}\n",
                at("run"),
                at("history.json"),
                at("drill.json"),
                textfile_dir.display().to_string(),
            ),
        )
        .unwrap();
        let settings = crate::config::ConfigSources::explicit(&config).load().unwrap();
        let held = RuntimeDir::open(&settings.runtime_dir).unwrap().lock().unwrap();
        let release = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            drop(held);
        });
        let started = std::time::Instant::now();
        publish_between_runs(&settings).await;
        release.await.unwrap();
        assert!(
            textfile_dir.join(TEXTFILE).exists(),
            "not written after {:?}",
            started.elapsed()
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    fn run(status: Status, consistency: Option<Consistency>, group: Option<&str>) -> RunRecord {
        RunRecord {
            started_unix: 1_764_000_000.5,
            finished_unix: 1_764_000_001.9,
            status,
            consistency,
            snapshot_name: "web-1".into(),
            snapshot_id: None,
            action_id: None,
            droplet_id: Some(3164444),
            group: group.map(String::from),
            quiesce_ms: 12.0,
            frozen_ms: 305.0,
            request_ms: 301.0,
            total_ms: 1400.0,
            guard_deadline_thaw: false,
            snapshots_kept: Some(7),
            positions: Vec::new(),
            error: None,
            volume_snapshot_ids: Vec::new(),
            tag_owed: false,
        }
    }

    #[test]
    fn each_family_once_with_its_units_and_the_achieved_level_alone_set() {
        let mut history = History::default();
        history.add(run(Status::Succeeded, Some(Consistency::Application), None), 10);
        history.add(run(Status::Failed, Some(Consistency::Crash), Some("g-1")), 10);
        let text = render(
            &history,
            Some(&LastDrill {
                unix_seconds: 1_764_000_100,
                snapshot: "web-1".into(),
                verified: true,
            }),
            "web",
        );
        assert!(
            text.contains("freezeframe_runs_total{droplet=\"3164444\",result=\"succeeded\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("freezeframe_runs_total{droplet=\"3164444\",result=\"failed\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("freezeframe_last_success_timestamp_seconds{droplet=\"3164444\"} 1764000001\n"));
        assert!(text.contains("freezeframe_last_run_success{droplet=\"3164444\",group=\"g-1\"} 0\n"));
        assert!(
            text.contains("freezeframe_last_run_consistency{droplet=\"3164444\",group=\"g-1\",consistency=\"crash\"} 0\n"),
            "a failed run achieved no level: {text}"
        );
        assert!(
            text.contains("freezeframe_last_run_frozen_seconds{droplet=\"3164444\",group=\"g-1\"} 0.305\n")
        );
        assert!(text.contains("freezeframe_last_verification_success{droplet=\"3164444\"} 1\n"));
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            assert_eq!(text.matches(line).count(), 1, "{line} twice");
        }
    }

    #[test]
    fn seconds_are_written_without_float_noise() {
        let mut history = History::default();
        let mut noisy = run(Status::Succeeded, Some(Consistency::Application), None);
        noisy.frozen_ms = 215.73;
        noisy.request_ms = 0.0004;
        history.add(noisy, 10);
        let text = render(&history, None, "web");
        assert!(
            text.contains("freezeframe_last_run_frozen_seconds{droplet=\"3164444\"} 0.21573\n"),
            "{text}"
        );
        assert!(
            text.contains("freezeframe_last_run_request_seconds{droplet=\"3164444\"} 0\n"),
            "{text}"
        );
        assert_eq!(number(1_764_000_001.0), "1764000001");
        assert_eq!(number(0.1 + 0.2), "0.3");
        assert_eq!(number(-0.0000001), "0");
    }

    #[test]
    fn a_run_that_never_learned_the_droplet_keeps_its_label() {
        let mut history = History::default();
        history.add(run(Status::Succeeded, Some(Consistency::Application), None), 10);
        let mut refused = run(Status::Failed, None, None);
        refused.droplet_id = None;
        history.add(refused, 10);
        let text = render(&history, None, "web");
        assert!(
            text.contains("freezeframe_runs_total{droplet=\"3164444\",result=\"failed\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("droplet=\"web\""), "{text}");
    }

    #[test]
    fn without_a_droplet_the_host_labels_the_metrics_and_labels_are_escaped() {
        let mut history = History::default();
        let mut local = run(Status::Succeeded, Some(Consistency::Filesystem), Some("a\"b"));
        local.droplet_id = None;
        history.add(local, 10);
        let text = render(&history, None, "web\\1");
        assert!(text.contains("freezeframe_last_run_consistency{droplet=\"web\\\\1\",group=\"a\\\"b\",consistency=\"filesystem\"} 1\n"), "{text}");
        assert!(!text.contains("verification"));
    }
}
