//! Why an offline run, its dry run or a power-on failed, typed: the exit code follows from the
//! kind (a refused token or a Droplet that does not exist is the user's to fix, 2; everything
//! else that stops a run, 1), decided where the error is made and never from its words.

use super::*;

/// Why one Droplet's offline run (or its plan, or its power-on) failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OfflineError {
    /// An API call failed; `doing` says which.
    #[error("{doing}: {source}")]
    Api {
        doing: String,
        #[source]
        source: ApiError,
    },
    /// The account has no Droplet of that id.
    #[error(
        "no Droplet {id} in this account (the API answered HTTP 404 for it): check the id \
         (`doctl compute droplet list`), or the token's account; nothing was done"
    )]
    NoSuchDroplet { id: u64 },
    /// The run must not start now (not active, a pending event, a volume at its limit).
    #[error("Droplet {id} ({name}): {why}; nothing was done")]
    Refused { id: u64, name: String, why: String },
    /// A signal stopped it.
    #[error("interrupted by a signal{0}")]
    Interrupted(&'static str),
    /// The pending power-on could not be recorded.
    #[error("cannot record the pending power-on ({0}); nothing was powered off")]
    Record(#[source] std::io::Error),
    /// A bound passed, or the platform gave up (the guest's shutdown, `power_off`, the snapshot
    /// action, the agent after the boot).
    #[error("{0}")]
    Stalled(String),
    /// The Droplet is left off, for `freezeframe recover`.
    #[error("{0}")]
    LeftOff(String),
    /// A failure, and a later one on the way back (the power-on after it).
    #[error("{first}; and {then}")]
    Both {
        first: Box<OfflineError>,
        then: Box<OfflineError>,
    },
}

impl OfflineError {
    /// An API call's failure, said with what was being done.
    pub(super) fn api(doing: impl Into<String>, source: ApiError) -> OfflineError {
        OfflineError::Api {
            doing: doing.into(),
            source,
        }
    }

    /// Reading Droplet `id` before anything is done: a 404 is a Droplet that does not exist.
    pub(super) fn reading(id: u64, source: ApiError) -> OfflineError {
        match source {
            ApiError::Status { status: 404, .. } => OfflineError::NoSuchDroplet { id },
            source => OfflineError::api(format!("cannot read Droplet {id}"), source),
        }
    }

    /// The exit it ends with: the user's configuration (a token the API refuses, a Droplet
    /// that does not exist) is 2, as a missing token is; the worst of both for two failures.
    pub(crate) fn exit(&self) -> Exit {
        match self {
            OfflineError::Api {
                source: ApiError::Unauthorized { .. },
                ..
            }
            | OfflineError::NoSuchDroplet { .. } => Exit::Usage,
            OfflineError::Both { first, then } => first.exit().max(then.exit()),
            OfflineError::Api { .. }
            | OfflineError::Refused { .. }
            | OfflineError::Interrupted(_)
            | OfflineError::Record(_)
            | OfflineError::Stalled(_)
            | OfflineError::LeftOff(_) => Exit::Failed,
        }
    }
}
