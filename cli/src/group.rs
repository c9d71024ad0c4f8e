//! `freezeframe -H a -H b … snapshot --group`: one consistent cut across machines, by two
//! barriers and no clocks. Every member prepares (preflight, quiesce, flush) and waits; once all
//! are ready they freeze and wait; once all are frozen they request their snapshots together and
//! each thaws as its own registers. A member that fails, or does not get there by the prepare
//! deadline, aborts the group before any request: every member thaws and resumes, and nothing is
//! requested anywhere. The coordinator's own clock times the barriers; each member's report
//! gives its own durations, and together they bound the window in which all were frozen.

use crate::args::Cli;
use crate::client::{self, Target};
use crate::commands::{self, Exit, Failure};
use crate::pacing::{Pacer, Start};
use crate::progress::{self, Board, State};
use freezeframe_contract::Report;
use freezeframe_contract::{Consistency, SnapshotInfo};
use futures_util::StreamExt;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zbus::OwnedVariant;

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

/// One member's part of the group's result.
#[derive(Debug, Serialize)]
pub struct MemberResult {
    pub host: String,
    pub exit: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the coordinator learned it was frozen, from the barrier (≤ 0): it froze before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen_seen_ms: Option<f64>,
    /// The earliest it can have begun to thaw, from the barrier: the commit's sending plus
    /// its own time from the commit to the thaw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thawed_after_ms: Option<f64>,
}

/// The group's result.
#[derive(Debug, Serialize)]
pub struct GroupResult {
    pub group: String,
    /// Every member's snapshot registered while every member was frozen.
    pub consistent: bool,
    /// Why the group stopped before its commit, naming the member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
    /// The interval, on the coordinator's clock, in which every member was certainly frozen:
    /// from the barrier (the last member seen frozen) to the earliest possible thaw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlap_ms: Option<f64>,
    pub members: Vec<MemberResult>,
}

/// Runs the group snapshot on `targets` and prints its result.
pub async fn run(cli: &Cli, targets: &[Target], request: &GroupRequest) -> Exit {
    let group = freezeframe_agent::new_group_id();
    let pacer = Arc::new(Pacer::new(cli.api_rate));
    let result = coordinate(targets, request, &group, cli.parallel as usize, pacer).await;
    if cli.json {
        crate::outln!("{}", serde_json::to_string_pretty(&result).unwrap_or_default());
    } else {
        freezeframe_agent::stdout::write(text(&result).as_bytes());
    }
    exit(&result)
}

/// The two barriers, then the results.
async fn coordinate(
    targets: &[Target],
    request: &GroupRequest,
    group: &str,
    parallel: usize,
    pacer: Arc<Pacer>,
) -> GroupResult {
    let started = Instant::now();
    let (words, _) = tokio::sync::watch::channel(Word::Prepare);
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let limit = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    for (index, target) in targets.iter().enumerate() {
        let member = Member {
            index,
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
                self.board.set(
                    index,
                    State::Done(commands::report_exit(&report) == Exit::Success),
                );
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

/// Puts what was seen together: each member's times on the coordinator's clock, and the
/// overlap window, from the barrier to the earliest possible thaw.
fn result(
    targets: &[Target],
    group: &str,
    seen: Vec<Seen>,
    aborted: Option<String>,
    cut: Option<(Instant, Instant)>,
) -> GroupResult {
    let ms = |d: Duration| freezeframe_contract::report::ms(d);
    let signed = |a: Instant, b: Instant| if a >= b { ms(a - b) } else { -ms(b - a) };
    let members: Vec<MemberResult> = targets
        .iter()
        .zip(seen)
        .map(|(target, s)| {
            let commit_to_thaw = s
                .report
                .as_ref()
                .and_then(|r| r.group.as_ref())
                .and_then(|g| g.commit_to_thaw_ms);
            let exit = match (&s.report, &s.failure) {
                (Some(r), _) => commands::report_exit(r),
                (None, Some(f)) => f.exit,
                (None, None) => Exit::Failed,
            };
            MemberResult {
                host: target.to_string(),
                exit: exit as u8,
                error: s.failure.as_ref().map(|f| f.message.clone()),
                frozen_seen_ms: cut.zip(s.frozen).map(|((barrier, _), at)| signed(at, barrier)),
                thawed_after_ms: cut
                    .zip(commit_to_thaw)
                    .map(|((barrier, commit), t)| ms(commit - barrier) + t),
                report: s.report,
            }
        })
        .collect();
    // Registered inside its window: the report's consistency says so (a request cut at the
    // deadline is `crash`), and the commit-to-thaw time is only given for a registration.
    let all_registered = members.iter().all(|m| {
        m.thawed_after_ms.is_some()
            && m.report
                .as_ref()
                .and_then(|r| r.consistency)
                .is_some_and(|c| c != Consistency::Crash)
    });
    let overlap_ms = cut
        .is_some()
        .then(|| members.iter().filter_map(|m| m.thawed_after_ms).reduce(f64::min))
        .flatten()
        .filter(|_| all_registered);
    GroupResult {
        group: group.to_string(),
        consistent: aborted.is_none() && all_registered && overlap_ms.is_some_and(|o| o > 0.0),
        aborted,
        overlap_ms,
        members,
    }
}

fn exit(result: &GroupResult) -> Exit {
    if result.consistent && result.members.iter().all(|m| m.exit == 0) {
        return Exit::Success;
    }
    if result.members.iter().any(|m| m.exit == Exit::Unreachable as u8) {
        return Exit::Unreachable;
    }
    if result.members.iter().any(|m| m.exit == Exit::Usage as u8) {
        return Exit::Usage;
    }
    Exit::Failed
}

/// The group's result for people.
fn text(result: &GroupResult) -> String {
    let n = result.members.len();
    let mut out = match (&result.aborted, result.consistent, result.overlap_ms) {
        (Some(why), _, _) => format!(
            "group {}: ABORTED before any snapshot was requested: {why}; every member that had \
             prepared thawed and resumed\n",
            result.group
        ),
        (None, true, Some(overlap)) => format!(
            "group {}: consistent: all {n} members were frozen together for at least {overlap:.1} ms \
             around the requests\n",
            result.group
        ),
        (None, _, _) => format!(
            "group {}: NOT consistent: not every member's snapshot registered while all were frozen \
             (see each member below); the snapshots that were made carry the group's id\n",
            result.group
        ),
    };
    for m in &result.members {
        let line = match (&m.report, &m.error) {
            (Some(report), _) => crate::fleet::snapshot_line(report),
            (None, Some(error)) => format!("FAILED: {error}"),
            (None, None) => "no result".into(),
        };
        out.push_str(&format!("{}: {line}", m.host));
        if let (Some(seen), Some(thawed)) = (m.frozen_seen_ms, m.thawed_after_ms) {
            out.push_str(&format!(
                " [frozen by {seen:+.1} ms, thawing from {thawed:+.1} ms, from the barrier]"
            ));
        }
        out.push('\n');
    }
    let succeeded = result.members.iter().filter(|m| m.exit == 0).count();
    out.push_str(&format!("{succeeded} of {n} members succeeded\n"));
    out
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

/// One member's connection, driven by the coordinator's words.
struct Member {
    index: usize,
    target: Target,
    group: String,
    request: GroupRequest,
    words: tokio::sync::watch::Receiver<Word>,
    events: tokio::sync::mpsc::UnboundedSender<(usize, Instant, Event)>,
    pacer: Arc<Pacer>,
}

impl Member {
    fn tell(&self, event: Event) {
        let _ = self.events.send((self.index, Instant::now(), event));
    }

    async fn run(mut self, limit: Arc<tokio::sync::Semaphore>) {
        // A member's run costs API calls (its preflight now, its request at the commit): the
        // group's are spread over the budget like a fleet's. Connections are set up at most
        // `parallel` at once, and then all held open: a group needs every member at once.
        if let Start::HourSpent { until_unix } = self.pacer.start().await {
            let message = format!(
                "{}: not started: {}",
                self.target,
                crate::pacing::hour_spent(until_unix)
            );
            self.tell(Event::Failed(Failure::new(Exit::Failed, message)));
            return;
        }
        let permit = limit.acquire_owned().await;
        let prepared = self.prepare().await;
        drop(permit);
        let followed = match prepared {
            Ok((agent, phases, finished, job)) => {
                self.tell(Event::Prepared);
                self.follow(&agent, phases, finished, job).await
            }
            Err(failure) => Err(failure),
        };
        if let Err(failure) = followed {
            self.pacer.finished(0, None);
            self.tell(Event::Failed(failure));
        }
    }

    /// Connects, subscribes to the job's signals, and calls Prepare.
    async fn prepare(
        &self,
    ) -> Result<
        (
            client::Agent1Proxy<'static>,
            freezeframe_contract::PhaseChangedStream,
            freezeframe_contract::JobFinishedStream,
            u64,
        ),
        Failure,
    > {
        let target = &self.target;
        let connection = client::connect(target).await?;
        let agent = commands::proxy(target, &connection).await?;
        let phases = agent
            .receive_phase_changed()
            .await
            .map_err(|e| commands::bus_failure(target, e))?;
        let finished = agent
            .receive_job_finished()
            .await
            .map_err(|e| commands::bus_failure(target, e))?;
        if let Word::Abort(why) = &*self.words.borrow() {
            return Err(Failure::new(
                Exit::Failed,
                format!("{target}: not prepared: {why}"),
            ));
        }
        let option = |v: zbus::Variant<'static>| OwnedVariant::try_from(v).expect("no file descriptors");
        let mut options: HashMap<String, OwnedVariant> = HashMap::new();
        options.insert("group".into(), option(self.group.clone().into()));
        options.insert("wait".into(), option(self.request.wait.into()));
        options.insert(
            "timeout-ms".into(),
            option((self.request.prepare_timeout.as_millis() as u64).into()),
        );
        if let Some(max) = self.request.max_freeze {
            options.insert("max-freeze-ms".into(), option((max.as_millis() as u64).into()));
        }
        let job = agent
            .prepare(options)
            .await
            .map_err(|e| commands::call_failure(target, e))?;
        Ok((agent, phases, finished, job))
    }

    /// Passes the coordinator's words on to the job and its phases back, until it ends.
    async fn follow(
        &mut self,
        agent: &client::Agent1Proxy<'static>,
        mut phases: freezeframe_contract::PhaseChangedStream,
        mut finished: freezeframe_contract::JobFinishedStream,
        job: u64,
    ) -> Result<(), Failure> {
        let target = self.target.clone();
        let gone = || {
            Failure::new(
                Exit::Unreachable,
                format!("{target}: the connection closed before job {job} finished"),
            )
        };
        let mut passed = Word::Prepare;
        let mut words_open = true;
        // A word given before Prepare answered is passed on at once.
        let mut pending_word = self.words.borrow().clone() != Word::Prepare;
        loop {
            if std::mem::take(&mut pending_word) {
                let word = self.words.borrow_and_update().clone();
                if word != passed {
                    self.pass(agent, job, &word).await;
                    passed = word;
                }
            }
            tokio::select! {
                signal = phases.next() => {
                    let signal = signal.ok_or_else(gone)?;
                    let Ok(a) = signal.args() else { continue };
                    match (a.job == job && !a.finished, a.phase) {
                        (true, "ready") => self.tell(Event::Ready),
                        (true, "hold") => self.tell(Event::Frozen),
                        _ => {}
                    }
                }
                signal = finished.next() => {
                    let signal = signal.ok_or_else(gone)?;
                    let Ok(a) = signal.args() else { continue };
                    if a.job == job {
                        let report = commands::read::<Report>(&target, &a.report)?;
                        self.pacer.finished(report.provider_calls, report.provider_budget);
                        self.tell(Event::Finished(Box::new(report)));
                        return Ok(());
                    }
                }
                changed = self.words.changed(), if words_open => {
                    words_open = changed.is_ok();
                    pending_word = words_open;
                }
            }
        }
    }

    /// Says `word` to the member's agent. A refusal is reported; the job's own report follows.
    async fn pass(&self, agent: &client::Agent1Proxy<'static>, job: u64, word: &Word) {
        let answer = match word {
            Word::Prepare => return,
            Word::Freeze => agent.freeze(job).await,
            Word::Commit => agent.commit(job).await,
            // A job that already ended, or is committed, says so; its report tells the rest.
            Word::Abort(why) => {
                let _ = agent.abort(job, why).await;
                return;
            }
        };
        if let Err(e) = answer {
            self.tell(Event::Failed(commands::call_failure(&self.target, e)));
        }
    }
}

/// The groups among `snapshots` (of every machine) older than the newest `keep`, judged by each
/// group's newest snapshot, and how many groups there are. Snapshot times have a resolution of a
/// second: a group made in the same second as the `keep`-th newest cannot be told from it, so it
/// is kept too. Only older groups go.
fn older_groups(snapshots: &[SnapshotInfo], keep: u32) -> (Vec<String>, usize) {
    let mut newest: HashMap<&str, &str> = HashMap::new();
    for s in snapshots {
        if let Some(group) = &s.group {
            let at = newest.entry(group).or_default();
            if s.created_at.as_str() > *at {
                *at = &s.created_at;
            }
        }
    }
    let mut groups: Vec<(&str, &str)> = newest.into_iter().collect();
    groups.sort_by(|a, b| b.1.cmp(a.1));
    let cutoff = groups.get((keep as usize).saturating_sub(1)).map(|(_, at)| *at);
    let old = groups
        .iter()
        .filter(|(_, at)| cutoff.is_some_and(|c| *at < c))
        .map(|(g, _)| g.to_string())
        .collect();
    (old, groups.len())
}

/// `prune --keep-groups N` over the machines: the newest N groups (by their newest snapshot on
/// any machine) are kept, and every older group is deleted on every machine. Every machine is
/// listed first; one that cannot be stops the prune before anything is deleted, since a group
/// seen only in part would be judged by the part.
pub async fn prune_groups(cli: &Cli, targets: &[Target], keep: u32) -> Exit {
    use futures_util::stream::{self, StreamExt as _};
    let parallel = cli.parallel as usize;
    let lists: Vec<_> = stream::iter(targets.iter().map(commands::list))
        .buffered(parallel)
        .collect()
        .await;
    let mut listed = Vec::new();
    for (target, list) in targets.iter().zip(lists) {
        match list {
            Ok(list) => listed.extend(list),
            Err(f) => {
                let message = format!("{}; nothing was deleted", f.message);
                eprintln!("freezeframe: error: {target}: cannot list its snapshots: {message}");
                return f.exit;
            }
        }
    }
    let (old, groups) = older_groups(&listed, keep);
    if old.is_empty() {
        crate::outln!("nothing to delete: {groups} groups, none older than the newest {keep}");
        return Exit::Success;
    }
    let deleted: Vec<_> = stream::iter(targets.iter().map(|t| commands::delete_groups(t, &old)))
        .buffered(parallel)
        .collect()
        .await;
    let mut exit = Exit::Success;
    for (target, result) in targets.iter().zip(deleted) {
        match result {
            Ok(pruned) if cli.json => crate::outln!(
                "{}",
                serde_json::json!({ "host": target.to_string(), "groups": old, "deleted": pruned })
            ),
            Ok(pruned) => crate::outln!(
                "{target}: {} snapshots of {} older groups deleted",
                pruned.len(),
                old.len()
            ),
            Err(f) => {
                exit = exit.max(f.exit);
                crate::outln!("{target}: FAILED: {}", f.message);
            }
        }
    }
    exit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(group: Option<&str>, created_at: &str) -> SnapshotInfo {
        SnapshotInfo {
            id: format!("{group:?}-{created_at}"),
            name: String::new(),
            created_at: created_at.into(),
            size_bytes: None,
            drill: None,
            group: group.map(String::from),
            consistency: None,
        }
    }

    #[test]
    fn groups_are_judged_by_their_newest_snapshot_and_same_second_ties_are_kept() {
        let listed = [
            // gold's members finished a second apart: its newest counts.
            snapshot(Some("gold"), "2026-12-04T10:00:00Z"),
            snapshot(Some("gold"), "2026-12-04T10:00:01Z"),
            // silver and bronze share a second: neither can be told the newer.
            snapshot(Some("silver"), "2026-12-04T09:00:00Z"),
            snapshot(Some("bronze"), "2026-12-04T09:00:00Z"),
            snapshot(Some("lead"), "2026-12-04T08:00:00Z"),
            // A machine's own snapshots belong to no group and are never counted.
            snapshot(None, "2026-12-04T11:00:00Z"),
        ];
        let (old, groups) = older_groups(&listed, 2);
        assert_eq!(groups, 4);
        assert_eq!(old, ["lead"], "the tie with the second newest is kept");
        let (mut old, _) = older_groups(&listed, 1);
        old.sort();
        assert_eq!(old, ["bronze", "lead", "silver"]);
        assert!(older_groups(&listed, 4).0.is_empty());
        assert!(older_groups(&listed, 9).0.is_empty(), "fewer groups than kept");
        assert!(older_groups(&[], 1).0.is_empty());
    }
}
