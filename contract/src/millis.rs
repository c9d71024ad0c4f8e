//! A `Duration` on the agent's wires (the frozen record, plans and reports as JSON and on
//! D-Bus) as whole milliseconds, for `#[serde(with = "freezeframe_contract::millis")]`: inside the program a
//! time is a `Duration`, converted only where it leaves.

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

/// `duration` in whole milliseconds, saturated at `u64::MAX`.
pub fn serialize<S: Serializer>(duration: &Duration, to: S) -> Result<S::Ok, S::Error> {
    to.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// Whole milliseconds back into a `Duration`.
pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Duration, D::Error> {
    u64::deserialize(from).map(Duration::from_millis)
}
