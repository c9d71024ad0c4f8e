//! The coordinator's paths against doubles of its members' agents ([`Fake`]: a job that says
//! ready at once, or late, or never, that fails its Prepare as a test scripts, and that freezes,
//! commits or aborts as it is told), on tokio's paused clock: which words reach which member.

use super::link::{Heard, Link};
use super::*;
use freezeframe_agent::transaction::ports::Consistency;
use freezeframe_agent::transaction::{GroupReport, Status};
use std::sync::Mutex;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// What each member's agent was told (`prepare`, `freeze`, `commit`, `abort`) and said
/// (`ready`, `frozen`), in order.
type Log = Arc<Mutex<Vec<(usize, &'static str)>>>;

/// How a member's agent behaves.
#[derive(Clone, Copy, PartialEq)]
enum Script {
    /// Prepares, is ready, freezes and commits as told.
    Willing,
    /// Its Prepare is refused, after a second (so the others have prepared by then).
    RefusesPrepare,
    /// Prepares but never gets ready (a quiescer that hangs).
    NeverReady,
}

struct Fake {
    index: usize,
    script: Script,
    log: Log,
    said: UnboundedSender<Word>,
    heard: UnboundedReceiver<Word>,
    ready_said: bool,
}

impl Fake {
    fn new(index: usize, script: Script, log: &Log) -> Fake {
        let (said, heard) = unbounded_channel();
        Fake {
            index,
            script,
            log: log.clone(),
            said,
            heard,
            ready_said: false,
        }
    }

    fn record(&self, what: &'static str) {
        self.log.lock().unwrap().push((self.index, what));
    }
}

/// A member's report: succeeded with a registration inside its window, or failed with `error`.
fn report(error: Option<&str>) -> Report {
    let mut report: Report = serde_json::from_value(serde_json::json!({
        "status": "succeeded", "snapshot_name": "db-g0000000a", "provider": "fake",
        "warnings": [], "filesystems": { "frozen": [], "skipped": [] }, "quiescers": [],
        "quiesce_ms": 0.0, "sync_ms": 0.0, "frozen_ms": 0.0, "freezing_ms": 0.0,
        "request_ms": 0.0, "thawing_ms": 0.0, "resume_ms": 0.0, "total_ms": 0.0, "phases": [],
    }))
    .expect("a report");
    match error {
        None => {
            report.consistency = Some(Consistency::Filesystem);
            report.group = Some(GroupReport {
                commit_to_thaw_ms: Some(5.0),
                ..GroupReport::default()
            });
        }
        Some(error) => {
            report.status = Status::Failed;
            report.error = Some(error.into());
        }
    }
    report
}

impl Link for Fake {
    async fn connect(&mut self) -> Result<(), Failure> {
        Ok(())
    }

    async fn prepare(&mut self, _: &str, _: &GroupRequest) -> Result<u64, Failure> {
        if self.script == Script::RefusesPrepare {
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Err(Failure::new(Exit::Failed, format!("member {}: busy", self.index)));
        }
        self.record("prepare");
        Ok(1)
    }

    async fn say(&self, _: u64, word: &Word) -> Result<(), Failure> {
        self.record(match word {
            Word::Prepare => "prepare",
            Word::Freeze => "freeze",
            Word::Commit => "commit",
            Word::Abort(_) => "abort",
        });
        let _ = self.said.send(word.clone());
        Ok(())
    }

    async fn next(&mut self, _: u64) -> Result<Heard, Failure> {
        if !self.ready_said && self.script == Script::Willing {
            // Each a second after the one before: a barrier that does not wait shows.
            tokio::time::sleep(Duration::from_secs(self.index as u64)).await;
            self.ready_said = true;
            self.record("ready");
            return Ok(Heard::Ready);
        }
        match self.heard.recv().await {
            Some(Word::Freeze) => {
                tokio::time::sleep(Duration::from_secs(self.index as u64)).await;
                self.record("frozen");
                Ok(Heard::Frozen)
            }
            Some(Word::Commit) => Ok(Heard::Finished(Box::new(report(None)))),
            Some(Word::Abort(why)) => Ok(Heard::Finished(Box::new(report(Some(&why))))),
            Some(Word::Prepare) | None => std::future::pending().await,
        }
    }
}

/// Coordinates a group of members behaving as `scripts` say; its result and what each was told.
async fn group(scripts: &[Script]) -> (GroupResult, Vec<(usize, &'static str)>) {
    let log = Log::default();
    let targets: Vec<Target> = (0..scripts.len())
        .map(|i| Target::Bus(format!("unix:path=/member-{i}")))
        .collect();
    let links = scripts
        .iter()
        .enumerate()
        .map(|(i, script)| Fake::new(i, *script, &log))
        .collect();
    let request = GroupRequest {
        wait: false,
        prepare_timeout: Duration::from_secs(60),
        max_freeze: None,
    };
    let pacer = Arc::new(Pacer::new(10_000));
    let coordinated = coordinate(&targets, links, &request, "g0000000a", scripts.len(), pacer);
    let result = tokio::time::timeout(Duration::from_secs(3600), coordinated)
        .await
        .expect("the group ends");
    let told = log.lock().unwrap().clone();
    (result, told)
}

/// What `member` was told, in order.
fn told(log: &[(usize, &'static str)], member: usize) -> Vec<&'static str> {
    log.iter()
        .filter(|(m, w)| *m == member && !["ready", "frozen"].contains(w))
        .map(|(_, w)| *w)
        .collect()
}

/// Where the first `what` is in the log.
fn first(log: &[(usize, &'static str)], what: &str) -> usize {
    log.iter().position(|(_, w)| *w == what).unwrap()
}

/// How many `what` there are in the log before `end`.
fn before(log: &[(usize, &'static str)], what: &str, end: usize) -> usize {
    log[..end].iter().filter(|(_, w)| *w == what).count()
}

#[tokio::test(start_paused = true)]
async fn willing_members_are_frozen_together_then_committed() {
    let (result, log) = group(&[Script::Willing, Script::Willing, Script::Willing]).await;
    for member in 0..3 {
        assert_eq!(
            told(&log, member),
            ["prepare", "freeze", "commit"],
            "member {member}"
        );
    }
    // The barriers: no freeze before every member is ready, no commit before every one froze.
    assert_eq!(before(&log, "ready", first(&log, "freeze")), 3, "{log:?}");
    assert_eq!(before(&log, "frozen", first(&log, "commit")), 3, "{log:?}");
    assert!(result.aborted.is_none());
    assert!(result.consistent, "{result:?}");
}

#[tokio::test(start_paused = true)]
async fn a_member_failing_its_prepare_aborts_every_prepared_member() {
    let (result, log) = group(&[Script::Willing, Script::RefusesPrepare, Script::Willing]).await;
    for member in [0, 2] {
        assert_eq!(told(&log, member), ["prepare", "abort"], "member {member}");
    }
    assert!(told(&log, 1).is_empty());
    assert!(result.aborted.as_deref().unwrap().contains("member 1: busy"));
    assert!(!result.consistent);
    assert_eq!(result.members[1].exit, Exit::Failed as u8);
}

#[tokio::test(start_paused = true)]
async fn a_member_not_ready_by_the_deadline_aborts_the_group_naming_it() {
    let (result, log) = group(&[Script::Willing, Script::NeverReady]).await;
    for member in [0, 1] {
        assert_eq!(told(&log, member), ["prepare", "abort"], "member {member}");
    }
    let aborted = result.aborted.unwrap();
    assert!(
        aborted.contains("/member-1 had not quiesced and flushed"),
        "{aborted}"
    );
    assert!(!aborted.contains("/member-0"), "{aborted}");
    assert!(!result.consistent);
}
