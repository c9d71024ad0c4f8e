//! A consistency group's member on the service's side: the barrier a group job waits at
//! (`Prepare` starts it; `Freeze` and `Commit` release it, each only from the coordinator that
//! called `Prepare` and only where the job waits), and the watch that aborts the job when that
//! coordinator leaves the bus (killed, or its ssh connection cut) before it committed; a
//! departure after the commit is only noted in the member's report.

use crate::transaction::ports::{Barrier, BarrierError, BarrierPoint};
use crate::transaction::Interrupter;
use freezeframe_contract::report::CoordinatorLeft;
use freezeframe_contract::{AgentError, Report};
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};
#[cfg(test)]
use std::time::Duration;

/// What the service keeps of a group job: who coordinates it, where it waits, how far the
/// coordinator released it.
pub(crate) struct GroupSlot {
    /// The coordinator's unique bus name (`:1.42`).
    coordinator: String,
    /// Where the job waits now, if it does.
    waiting_at: Mutex<Option<BarrierPoint>>,
    /// The last point the coordinator released.
    released: tokio::sync::watch::Sender<Option<BarrierPoint>>,
    /// When the coordinator left the bus, if it did.
    left: Mutex<Option<CoordinatorLeft>>,
}

impl GroupSlot {
    pub(crate) fn new(coordinator: String) -> Arc<GroupSlot> {
        Arc::new(GroupSlot {
            coordinator,
            waiting_at: Mutex::new(None),
            released: tokio::sync::watch::channel(None).0,
            left: Mutex::new(None),
        })
    }

    /// Says in `report` (the member's) that its coordinator left while the job ran, if it did:
    /// the typed note, and after a commit a warning (before one, the error says it).
    pub(crate) fn note_departure(&self, report: &mut Report) {
        let Some(left) = *self.left.lock().unwrap() else {
            return;
        };
        if let Some(group) = report.group.as_mut() {
            group.coordinator_left = Some(left);
        }
        if left == CoordinatorLeft::AfterCommit {
            report.warnings.push(format!(
                "the group's coordinator ({}) left the bus after it committed: this member's                  snapshot was requested and the freeze ended as it registered; whether every                  member had the commit is not known here (`freezeframe list --group` on each shows                  whose snapshots were taken)",
                self.coordinator
            ));
        }
    }

    /// The coordinator's word to go on from `point`: refused from anyone else, and unless the
    /// job waits there now.
    pub(crate) fn release(
        &self,
        sender: Option<&str>,
        job: u64,
        point: BarrierPoint,
    ) -> Result<(), AgentError> {
        self.check_coordinator(sender, job)?;
        let waiting_at = *self.waiting_at.lock().unwrap();
        if waiting_at != Some(point) {
            let (word, needs) = match point {
                BarrierPoint::Synced => ("Freeze", "quiesced and flushed (phase `ready`)"),
                BarrierPoint::Frozen => ("Commit", "frozen (phase `hold`)"),
            };
            return Err(AgentError::Failed(format!(
                "job {job} is not waiting for {word}: it may be called once the job is {needs}, and once"
            )));
        }
        *self.waiting_at.lock().unwrap() = None;
        self.released.send_replace(Some(point));
        Ok(())
    }

    /// Whether the coordinator committed: from then on the request is sent, and only the
    /// registration ends the window.
    pub(crate) fn committed(&self) -> bool {
        *self.released.borrow() == Some(BarrierPoint::Frozen)
    }

    /// Refuses anyone but the coordinator.
    pub(crate) fn check_coordinator(&self, sender: Option<&str>, job: u64) -> Result<(), AgentError> {
        if sender != Some(self.coordinator.as_str()) {
            return Err(AgentError::AccessDenied(format!(
                "job {job} belongs to the coordinator {} that prepared it",
                self.coordinator
            )));
        }
        Ok(())
    }

    /// Refuses an Abort from anyone but the coordinator (root's is not checked here): another
    /// member of the group must not end someone else's group snapshot.
    pub(crate) fn check_may_abort(&self, sender: Option<&str>, job: u64) -> Result<(), AgentError> {
        if sender != Some(self.coordinator.as_str()) {
            return Err(AgentError::AccessDenied(format!(
                "job {job} belongs to the coordinator {} that prepared it: only that connection, \
                 or root, may abort it",
                self.coordinator
            )));
        }
        Ok(())
    }
}

/// A pause on Prepare after a group job that ended without a commit (aborted, its deadline
/// passed, its coordinator gone): as long as that job held this machine (quiesced and frozen),
/// so that a coordinator preparing again and again keeps MariaDB's lock and the freeze at most
/// half the time. Root is never refused.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CoolDown {
    held: std::time::Duration,
    until: std::time::Instant,
}

impl CoolDown {
    /// The pause after a job that held this machine `held`, ending now.
    pub(crate) fn after(held: std::time::Duration) -> CoolDown {
        CoolDown {
            held,
            until: std::time::Instant::now() + held,
        }
    }

    /// Refuses a Prepare by `uid` (not root) before the pause is over, saying when to try again.
    pub(crate) fn check(&self, uid: u32) -> Result<(), AgentError> {
        let left = self.until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        // Whole seconds, rounded up: trying again after them is never too soon.
        let wait = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Err(AgentError::Busy(format!(
            "the last group job here ended without a commit after holding this machine {}: \
             Prepare from uid {uid} may be tried again in {wait} s (root may now)",
            humantime::format_duration(std::time::Duration::from_secs(
                self.held.as_secs_f64().ceil() as u64
            ))
        )))
    }
}

/// The barrier a group job's transaction waits at.
pub(crate) struct ServiceBarrier {
    pub(crate) group: String,
    pub(crate) slot: Arc<GroupSlot>,
    /// When the coordinator gives up on the group being prepared: a member still waiting to
    /// freeze then stops waiting (its databases stay quiesced only that long).
    pub(crate) prepare_deadline: tokio::time::Instant,
}

/// How long a coordinator waits for its group to be prepared unless it says (`timeout-ms`).
pub(crate) const DEFAULT_PREPARE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// How long a member waits to freeze: what its coordinator asked (`timeout-ms`), or the
/// default, never above this machine's `agent.max_prepare_timeout`. A coordinator asking for
/// more is refused, not cut short unawares: its own deadline would otherwise outlast the
/// member's, and its databases would stay quiesced on a caller's word.
pub(crate) fn prepare_timeout(
    asked: Option<std::time::Duration>,
    bound: std::time::Duration,
) -> Result<std::time::Duration, AgentError> {
    match asked {
        None => Ok(DEFAULT_PREPARE_TIMEOUT.min(bound)),
        Some(asked) if asked <= bound => Ok(asked),
        Some(asked) => Err(AgentError::InvalidArgs(format!(
            "option `timeout-ms`: {} ms is more than this machine allows a coordinator to keep it \
             quiesced: at most {} ms ({}, `agent.max_prepare_timeout`); ask for less \
             (`freezeframe snapshot --group --prepare-timeout`) or raise that bound in this \
             agent's configuration",
            asked.as_millis(),
            bound.as_millis(),
            humantime::format_duration(bound)
        ))),
    }
}

#[async_trait::async_trait]
impl Barrier for ServiceBarrier {
    fn group(&self) -> &str {
        &self.group
    }

    fn arrived(&mut self, point: BarrierPoint) {
        // Before the phase signal (`ready`, `hold`) that tells the coordinator.
        *self.slot.waiting_at.lock().unwrap() = Some(point);
    }

    fn note(&self, report: &mut Report) {
        self.slot.note_departure(report);
    }

    async fn released(&mut self, point: BarrierPoint) -> Result<(), BarrierError> {
        let mut released = self.slot.released.subscribe();
        let word = released.wait_for(|r| *r >= Some(point));
        match point {
            // Frozen, the transaction bounds the wait by max_freeze.
            BarrierPoint::Frozen => {
                let _ = word.await;
                Ok(())
            }
            BarrierPoint::Synced => match tokio::time::timeout_at(self.prepare_deadline, word).await {
                Ok(_) => Ok(()),
                Err(_) => Err(BarrierError::Deadline(point)),
            },
        }
    }
}

/// Aborts the job through `stop` when the coordinator leaves the bus before it committed.
/// Returns once watching (the name checked after subscribing, so no departure is missed);
/// the watch itself runs until the returned task is aborted.
pub(crate) async fn watch_coordinator(
    connection: &zbus::Connection,
    slot: Arc<GroupSlot>,
    stop: Interrupter,
) -> Result<tokio::task::JoinHandle<()>, AgentError> {
    let failed = |e: zbus::Error| AgentError::Failed(format!("cannot watch the coordinator on the bus: {e}"));
    let bus = zbus::fdo::DBusProxy::new(connection).await.map_err(failed)?;
    let mut changes = bus
        .receive_name_owner_changed_with_args(&[(0, slot.coordinator.as_str())])
        .await
        .map_err(failed)?;
    let name = zbus::names::BusName::try_from(slot.coordinator.as_str()).map_err(failed)?;
    let present = bus.name_has_owner(name).await.map_err(|e| failed(e.into()))?;
    Ok(tokio::spawn(async move {
        if present {
            while let Some(change) = changes.next().await {
                if change.args().is_ok_and(|a| a.new_owner().is_none()) {
                    break;
                }
            }
        }
        let committed = slot.committed();
        *slot.left.lock().unwrap() = Some(if committed {
            CoordinatorLeft::AfterCommit
        } else {
            CoordinatorLeft::BeforeCommit
        });
        if committed {
            tracing::warn!(coordinator = %slot.coordinator, "the group's coordinator left the bus after it committed: the snapshot goes on");
        } else {
            tracing::warn!(coordinator = %slot.coordinator, "the group's coordinator left the bus: aborting");
            stop.stop(format!(
                "the group's coordinator ({}) left the bus before it committed",
                slot.coordinator
            ));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_coordinator_releases_and_only_where_the_job_waits() {
        let slot = GroupSlot::new(":1.7".into());
        let mut barrier = ServiceBarrier {
            group: "g00000001".into(),
            slot: slot.clone(),
            prepare_deadline: tokio::time::Instant::now() + Duration::from_secs(60),
        };
        let early = slot.release(Some(":1.7"), 3, BarrierPoint::Synced).unwrap_err();
        assert!(early.to_string().contains("not waiting for Freeze"), "{early}");
        barrier.arrived(BarrierPoint::Synced);
        let stranger = slot.release(Some(":1.8"), 3, BarrierPoint::Synced).unwrap_err();
        assert!(matches!(stranger, AgentError::AccessDenied(_)), "{stranger}");
        let commit_too_soon = slot.release(Some(":1.7"), 3, BarrierPoint::Frozen).unwrap_err();
        assert!(commit_too_soon.to_string().contains("not waiting for Commit"));
        slot.release(Some(":1.7"), 3, BarrierPoint::Synced).unwrap();
        barrier.released(BarrierPoint::Synced).await.unwrap();
        assert!(
            slot.release(Some(":1.7"), 3, BarrierPoint::Synced).is_err(),
            "once"
        );
        assert!(!slot.committed());
        barrier.arrived(BarrierPoint::Frozen);
        slot.release(Some(":1.7"), 3, BarrierPoint::Frozen).unwrap();
        barrier.released(BarrierPoint::Frozen).await.unwrap();
        assert!(slot.committed());
    }

    #[test]
    fn an_abort_is_the_coordinators_and_a_cool_down_names_the_wait() {
        let slot = GroupSlot::new(":1.7".into());
        let other = slot.check_may_abort(Some(":1.8"), 3).unwrap_err();
        assert!(
            matches!(&other, AgentError::AccessDenied(m) if m.contains("only that connection, or root")),
            "{other}"
        );
        slot.check_may_abort(Some(":1.7"), 3).unwrap();
        let cool_down = CoolDown::after(Duration::from_secs(90));
        let refused = cool_down.check(1000).unwrap_err();
        assert!(
            matches!(&refused, AgentError::Busy(m) if m.contains("holding this machine 1m 30s")
                && m.contains("tried again in 90 s")),
            "{refused}"
        );
        CoolDown::after(Duration::ZERO).check(1000).unwrap();
    }

    #[test]
    fn a_prepare_timeout_above_the_bound_is_refused_and_the_default_kept_below_it() {
        let bound = Duration::from_secs(600);
        assert_eq!(prepare_timeout(None, bound).unwrap(), DEFAULT_PREPARE_TIMEOUT);
        assert_eq!(
            prepare_timeout(None, Duration::from_secs(5)).unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(prepare_timeout(Some(bound), bound).unwrap(), bound);
        let huge = prepare_timeout(Some(Duration::from_millis(u64::MAX)), bound).unwrap_err();
        assert!(
            matches!(&huge, AgentError::InvalidArgs(m) if m.contains("at most 600000 ms (10m")),
            "{huge}"
        );
    }

    #[tokio::test]
    async fn a_member_stops_waiting_to_freeze_at_the_coordinators_deadline() {
        let slot = GroupSlot::new(":1.7".into());
        let mut barrier = ServiceBarrier {
            group: "g00000001".into(),
            slot,
            prepare_deadline: tokio::time::Instant::now() + Duration::from_millis(50),
        };
        barrier.arrived(BarrierPoint::Synced);
        let why = barrier.released(BarrierPoint::Synced).await.unwrap_err();
        assert_eq!(why, BarrierError::Deadline(BarrierPoint::Synced));
        assert!(why.to_string().contains("prepare deadline"), "{why}");
    }
}
