//! The system bus, where systemd and logind live. Its address comes from the standard
//! `DBUS_SYSTEM_BUS_ADDRESS` (tests point it at a private `dbus-daemon`), never from code.

use std::time::Duration;

/// How long connecting, and then any one call, may take: a stuck bus must not stall a snapshot.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The system bus could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot reach the system bus ({address}): {reason}")]
pub(crate) struct BusUnreachable {
    pub address: String,
    pub reason: String,
}

/// Where the system bus is, as the user would look for it.
pub(crate) fn system_bus_address() -> String {
    std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .unwrap_or_else(|_| "unix:path=/run/dbus/system_bus_socket".to_string())
}

/// Connects to the system bus, bounded by [`CALL_TIMEOUT`] for the connection and each call.
pub(crate) async fn system_bus() -> Result<zbus::Connection, BusUnreachable> {
    let unreachable = |reason: String| BusUnreachable {
        address: system_bus_address(),
        reason,
    };
    let connect = zbus::connection::Builder::system()
        .method_timeout(CALL_TIMEOUT)
        .build();
    match tokio::time::timeout(CALL_TIMEOUT, connect).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!("no answer within {CALL_TIMEOUT:?}"))),
    }
}
