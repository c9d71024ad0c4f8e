//! A member's agent as the group drives it, as a port: [`Link`] (connect and subscribe,
//! Prepare, the coordinator's words, and what the job says back), over the bus ([`Bus`]) or,
//! in the tests, a double, so the coordinator's paths are tested without agents.

use super::{GroupRequest, Word};
use crate::agent::{self, Exit, Failure};
use crate::client::{self, Agent1Proxy, Target};
use freezeframe_agent::service::{JobFinishedStream, PhaseChangedStream};
use freezeframe_agent::transaction::Report;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::future::Future;
use zbus::OwnedVariant;

/// What a member's job says.
#[derive(Debug)]
pub(crate) enum Heard {
    /// Quiesced and flushed: waiting for Freeze.
    Ready,
    /// Frozen: waiting for Commit.
    Frozen,
    /// It ended, with its report.
    Finished(Box<Report>),
}

/// A member's agent.
pub(crate) trait Link: Send + 'static {
    /// Reaches the agent and listens to its jobs, before anything is asked of it.
    fn connect(&mut self) -> impl Future<Output = Result<(), Failure>> + Send;
    /// Starts the member's job of group `group`; its id.
    fn prepare(
        &mut self,
        group: &str,
        request: &GroupRequest,
    ) -> impl Future<Output = Result<u64, Failure>> + Send;
    /// Says `word` (Freeze, Commit, Abort) to job `job`.
    fn say(&self, job: u64, word: &Word) -> impl Future<Output = Result<(), Failure>> + Send;
    /// The next thing job `job` says; Err when the connection is lost.
    fn next(&mut self, job: u64) -> impl Future<Output = Result<Heard, Failure>> + Send;
}

/// The agent at a target, over its bus.
pub(crate) struct Bus {
    target: Target,
    connected: Option<(Agent1Proxy<'static>, PhaseChangedStream, JobFinishedStream)>,
}

impl Bus {
    pub(crate) fn new(target: Target) -> Bus {
        Bus {
            target,
            connected: None,
        }
    }

    fn agent(&self) -> &Agent1Proxy<'static> {
        &self.connected.as_ref().expect("connected before it is used").0
    }
}

impl Link for Bus {
    async fn connect(&mut self) -> Result<(), Failure> {
        let target = &self.target;
        let connection = client::connect(target).await?;
        let agent = agent::proxy(target, &connection).await?;
        // Subscribed before the call, so no signal of a quick job is missed.
        let phases = agent
            .receive_phase_changed()
            .await
            .map_err(|e| agent::bus_failure(target, e))?;
        let finished = agent
            .receive_job_finished()
            .await
            .map_err(|e| agent::bus_failure(target, e))?;
        self.connected = Some((agent, phases, finished));
        Ok(())
    }

    async fn prepare(&mut self, group: &str, request: &GroupRequest) -> Result<u64, Failure> {
        let option = |v: zbus::Variant<'static>| OwnedVariant::try_from(v).expect("no file descriptors");
        let mut options: HashMap<String, OwnedVariant> = HashMap::new();
        options.insert("group".into(), option(group.to_string().into()));
        options.insert("wait".into(), option(request.wait.into()));
        options.insert(
            "timeout-ms".into(),
            option((request.prepare_timeout.as_millis() as u64).into()),
        );
        if let Some(max) = request.max_freeze {
            options.insert("max-freeze-ms".into(), option((max.as_millis() as u64).into()));
        }
        self.agent()
            .prepare(options)
            .await
            .map_err(|e| agent::call_failure(&self.target, e))
    }

    async fn say(&self, job: u64, word: &Word) -> Result<(), Failure> {
        let agent = self.agent();
        let answer = match word {
            Word::Prepare => return Ok(()),
            Word::Freeze => agent.freeze(job).await,
            Word::Commit => agent.commit(job).await,
            // A job that already ended, or is committed, says so; its report tells the rest.
            Word::Abort(why) => {
                let _ = agent.abort(job, why).await;
                return Ok(());
            }
        };
        answer.map_err(|e| agent::call_failure(&self.target, e))
    }

    async fn next(&mut self, job: u64) -> Result<Heard, Failure> {
        let target = &self.target;
        let gone = || {
            Failure::new(
                Exit::Unreachable,
                format!("{target}: the connection closed before job {job} finished"),
            )
        };
        let (_, phases, finished) = self.connected.as_mut().expect("connected before it is used");
        loop {
            // Both are cancel-safe: a word from the coordinator may interrupt the wait.
            tokio::select! {
                signal = phases.next() => {
                    let signal = signal.ok_or_else(gone)?;
                    let Ok(a) = signal.args() else { continue };
                    match (a.job == job && !a.finished, a.phase) {
                        (true, "ready") => return Ok(Heard::Ready),
                        (true, "hold") => return Ok(Heard::Frozen),
                        _ => {}
                    }
                }
                signal = finished.next() => {
                    let signal = signal.ok_or_else(gone)?;
                    let Ok(a) = signal.args() else { continue };
                    if a.job == job {
                        let report = agent::read::<Report>(target, &a.report)?;
                        return Ok(Heard::Finished(Box::new(report)));
                    }
                }
            }
        }
    }
}
