//! freezeframe's contract between the agent and its clients: the D-Bus interface
//! `org.freezeframe.Agent1` as clients call it ([`Agent1Proxy`], [`AgentError`], [`BUS_NAME`],
//! [`OBJECT_PATH`]), the answers it sends as typed `a{sv}` ([`wire`]) and the types they are
//! read back into ([`Report`], [`SnapshotPlan`], [`AgentStatus`], [`Check`], [`SnapshotInfo`],
//! the history), how both binaries print plans and reports ([`render`]), the exit codes
//! both binaries share ([`Exit`]), and what `verify` finds ([`verification`]), which the CLI's
//! restore drill reads back. It depends on no part of the agent: the agent and the CLI
//! both depend on it.

#![warn(unreachable_pub, missing_docs)]

pub mod exit;
mod filesystems;
pub mod history;
mod interface;
pub mod millis;
pub mod plan;
mod records;
pub mod render;
pub mod report;
mod status;
pub mod verification;
pub mod wire;

pub use exit::Exit;
pub use filesystems::{DevNum, GuardEvent, SkipReason, Skipped, Target, UnknownSkipReason};
pub use interface::{
    Agent1Proxy, AgentError, JobFinished, JobFinishedArgs, JobFinishedStream, PhaseChanged, PhaseChangedArgs,
    PhaseChangedStream, BUS_NAME, OBJECT_PATH,
};
pub use plan::{DryRun, Preflight, SnapshotPlan};
pub use records::{
    ApiBudget, Consistency, DrillResult, LogPosition, Pruned, RecordedConsistency, SnapshotInfo,
    VolumeSnapshotRef,
};
pub use report::{Report, Status};
pub use status::{AgentStatus, Check, Recovered, RecoveredFilesystem, RecoveredResume};
