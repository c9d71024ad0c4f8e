//! logind (org.freedesktop.login1): a `delay` inhibitor lock on shutdown and sleep while a
//! snapshot runs, so a reboot asked for mid-freeze waits (up to logind's InhibitDelayMaxSec)
//! until the filesystems are thawed and the applications resumed.

use zbus_systemd::login1::ManagerProxy;

/// Held for the length of a run; dropping it closes the descriptor, which releases the lock.
#[derive(Debug)]
pub(crate) struct InhibitorLock {
    _fd: zbus::OwnedFd,
}

/// Why no inhibitor lock was taken; either way the run goes on without one.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InhibitError {
    /// logind is not on the bus (containers, minimal systems): nothing would honour a lock.
    #[error("logind is not reachable on the system bus: {0}")]
    NoLogind(#[source] zbus::Error),
    /// logind answered but would not give the lock (a policy, a logind shutting down).
    #[error("logind refused the inhibitor lock: {0}")]
    Refused(#[source] zbus::Error),
}

/// Takes the lock. Fails where logind is not on the bus (containers, minimal systems); the
/// caller goes on without it, since nothing would honour the lock there anyway.
pub(crate) async fn inhibit_shutdown(bus: &zbus::Connection) -> Result<InhibitorLock, InhibitError> {
    let manager = ManagerProxy::new(bus).await.map_err(InhibitError::NoLogind)?;
    let fd = manager
        .inhibit(
            "shutdown:sleep".into(),
            "freezeframe".into(),
            "taking a consistent snapshot (filesystems frozen briefly)".into(),
            "delay".into(),
        )
        .await
        .map_err(InhibitError::Refused)?;
    Ok(InhibitorLock { _fd: fd })
}
