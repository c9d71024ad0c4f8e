//! freezeframe's demo (`freezeframe-demo`: the whole job on a scratch filesystem, against the
//! bundled API simulator, with no account) and the kit it shares with the tests: scratch loop
//! filesystems and a record writer (`scratch`), a `dbus-daemon` of our own (`private_bus`).
//! None of it ships in the packages.

pub mod demo;
pub mod private_bus;
pub mod scratch;
