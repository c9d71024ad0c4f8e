//! The kernel's interfaces the agent calls, and nothing above them: the freezing ioctls and the
//! mount checks ([`sys`]), the mount table ([`mountinfo`]), the RCU knob ([`rcu`]). The bottom
//! layer: freezing, the thaw guard, checks and restore drills use it; it imports only the
//! transaction's plain value types (`DevNum`).

pub mod mountinfo;
pub(crate) mod rcu;
pub mod sys;
