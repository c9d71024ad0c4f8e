//! `freezeframe -H a -H b … snapshot --group`: one consistent cut across machines, by two
//! barriers and no clocks. Every member prepares (preflight, quiesce, flush) and waits; once all
//! are ready they freeze and wait; once all are frozen they request their snapshots together and
//! each thaws as its own registers. A member that fails, or does not get there by the prepare
//! deadline, aborts the group before any request: every member thaws and resumes, and nothing is
//! requested anywhere. The coordinator's own clock times the barriers; each member's report
//! gives its own durations, and together they bound the window in which all were frozen.

use crate::agent::{self, Exit, Failure};
use crate::args::{Cli, Command};
use crate::client::Target;
use crate::cmd::Done;
use crate::pacing::{Pacer, Start};
use crate::progress::{self, Board, State};
use freezeframe_contract::Report;
use freezeframe_contract::{Consistency, SnapshotInfo};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod link;
mod member;
mod prune;
mod result;

use link::{Bus, Heard, Link};
use member::Member;
pub(crate) use prune::prune_groups;
use result::GroupResult;
use result::{exit, result, text};

/// What a group snapshot asks of every member.
#[derive(Debug, Clone)]
pub struct GroupRequest {
    pub wait: bool,
    /// How long the members have, from the start, to be frozen.
    pub prepare_timeout: Duration,
    /// A bound on every member's frozen window below its own `freeze.max_freeze`.
    pub max_freeze: Option<Duration>,
}

/// The coordinator's word to every member; it only moves forward, or to Abort.
#[derive(Debug, Clone, PartialEq)]
enum Word {
    Prepare,
    Freeze,
    Commit,
    Abort(String),
}

/// What a member tells the coordinator.
#[derive(Debug)]
enum Event {
    /// Prepare answered: the member's job runs.
    Prepared,
    /// Quiesced and flushed: waiting for Freeze.
    Ready,
    /// Frozen: waiting for Commit.
    Frozen,
    /// Its job ended.
    Finished(Box<Report>),
    /// It failed before or instead of a report (unreachable, refused, connection lost).
    Failed(Failure),
}

/// A member as the coordinator saw it.
#[derive(Debug, Default)]
struct Seen {
    ready: Option<Instant>,
    frozen: Option<Instant>,
    report: Option<Report>,
    failure: Option<Failure>,
}

/// Runs the group snapshot on `targets`; its result.
pub(crate) async fn run(cli: &Cli, targets: &[Target]) -> crate::cmd::Done {
    let Command::Snapshot {
        wait,
        prepare_timeout,
        max_freeze,
        ..
    } = &cli.command
    else {
        unreachable!("called for snapshot --group only")
    };
    let request = &GroupRequest {
        wait: *wait,
        prepare_timeout: *prepare_timeout,
        max_freeze: *max_freeze,
    };
    let group = freezeframe_agent::new_group_id();
    let pacer = Arc::new(Pacer::new(cli.api_rate));
    let links = targets.iter().cloned().map(Bus::new).collect();
    let result = coordinate(targets, links, request, &group, cli.parallel as usize, pacer).await;
    crate::cmd::Done {
        exit: exit(&result),
        value: crate::output::json(&result),
        text: text(&result),
        line: String::new(),
    }
}

/// The two barriers, then the results.
async fn coordinate<L: Link>(
    targets: &[Target],
    links: Vec<L>,
    request: &GroupRequest,
    group: &str,
    parallel: usize,
    pacer: Arc<Pacer>,
) -> GroupResult {
    let started = Instant::now();
    let (words, _) = tokio::sync::watch::channel(Word::Prepare);
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let limit = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    for (index, (target, link)) in targets.iter().zip(links).enumerate() {
        let member = Member {
            index,
            link,
            target: target.clone(),
            group: group.to_string(),
            request: request.clone(),
            words: words.subscribe(),
            events: events.clone(),
            pacer: pacer.clone(),
        };
        tokio::spawn(member.run(limit.clone()));
    }
    drop(events);
    let board = Board::new(targets);
    let shown = tokio::spawn(progress::show(board.clone(), pacer.clone()));
    let mut c = Coordinator {
        targets,
        board,
        words,
        seen: targets.iter().map(|_| Seen::default()).collect(),
        barrier: None,
        committed: None,
        aborted: None,
    };
    let deadline = tokio::time::sleep_until((started + request.prepare_timeout).into());
    tokio::pin!(deadline);
    let mut signals = Signals::new();
    loop {
        tokio::select! {
            event = received.recv() => match event {
                Some((index, at, event)) => c.heard(index, at, event),
                None => break,
            },
            () = &mut deadline, if c.deciding() => {
                let late = late_members(targets, &c.seen);
                c.abort(format!(
                    "{late} within the prepare deadline ({})",
                    humantime::format_duration(request.prepare_timeout)
                ));
            }
            () = signals.next(), if c.deciding() => c.abort("the coordinator was interrupted".into()),
        }
    }
    shown.abort();
    result(targets, group, c.seen, c.aborted, c.barrier.zip(c.committed))
}

/// The coordinator's view of its group, and its words to it.
struct Coordinator<'a> {
    targets: &'a [Target],
    /// Where each member is, for the progress line.
    board: Board,
    words: tokio::sync::watch::Sender<Word>,
    seen: Vec<Seen>,
    /// When the last member was seen frozen.
    barrier: Option<Instant>,
    /// When the commit went out.
    committed: Option<Instant>,
    /// Why the group stopped before its commit.
    aborted: Option<String>,
}

impl Coordinator<'_> {
    /// Neither committed nor aborted yet.
    fn deciding(&self) -> bool {
        self.committed.is_none() && self.aborted.is_none()
    }

    /// Tells every member to abort, once, saying why.
    fn abort(&mut self, why: String) {
        if self.aborted.is_none() {
            let _ = self.words.send(Word::Abort(why.clone()));
            self.aborted = Some(why);
        }
    }

    /// Takes in what member `index` said at `at`; a failure before the commit aborts the group,
    /// and the last member ready (or frozen) moves every member on.
    fn heard(&mut self, index: usize, at: Instant, event: Event) {
        let member = &mut self.seen[index];
        let failed = match event {
            Event::Prepared => {
                self.board.set(index, State::Running(at));
                None
            }
            Event::Ready => {
                member.ready = Some(at);
                self.board.moved(index, State::Ready);
                None
            }
            Event::Frozen => {
                member.frozen = Some(at);
                self.board.moved(index, State::Frozen);
                None
            }
            Event::Finished(report) => {
                let why = report.error.clone().unwrap_or_else(|| "it ended early".into());
                let phase = report
                    .failed_phase
                    .map(|p| format!(" at {p}"))
                    .unwrap_or_default();
                self.board
                    .set(index, State::Done(agent::report_exit(&report) == Exit::Success));
                member.report = Some(*report);
                Some(format!("{} failed{phase}: {why}", self.targets[index]))
            }
            Event::Failed(failure) => {
                let why = failure.message.clone();
                if member.report.is_none() {
                    self.board.set(index, State::Done(false));
                }
                member.failure = Some(failure);
                Some(why)
            }
        };
        if self.committed.is_some() {
            return;
        }
        if let Some(why) = failed {
            self.abort(why);
        }
        if !self.deciding() {
            return;
        }
        if *self.words.borrow() == Word::Prepare && self.seen.iter().all(|s| s.ready.is_some()) {
            let _ = self.words.send(Word::Freeze);
        } else if self.seen.iter().all(|s| s.frozen.is_some()) {
            self.barrier = self.seen.iter().filter_map(|s| s.frozen).max();
            let _ = self.words.send(Word::Commit);
            self.committed = Some(Instant::now());
        }
    }
}

/// The members that held the group up at the deadline, by name: those not yet quiesced and
/// flushed, or once all were, those not yet frozen.
fn late_members(targets: &[Target], seen: &[Seen]) -> String {
    let all_ready = seen.iter().all(|s| s.ready.is_some());
    let late: Vec<String> = targets
        .iter()
        .zip(seen)
        .filter(|(_, s)| {
            if all_ready {
                s.frozen.is_none()
            } else {
                s.ready.is_none()
            }
        })
        .map(|(t, _)| t.to_string())
        .collect();
    let what = match (all_ready, late.len()) {
        (true, 1) => "was not frozen",
        (true, _) => "were not frozen",
        (false, _) => "had not quiesced and flushed",
    };
    format!("{} {what}", late.join(", "))
}

/// Ctrl-C and SIGTERM, as a stream of "stop" requests.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    async fn next(&mut self) {
        let term = async {
            match self.term.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let int = async {
            match self.int.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! { _ = term => {}, _ = int => {} }
    }
}

#[cfg(test)]
mod coordinator_tests;
