//! The Droplet's power, as an offline snapshot meets it (the API's own words, in the spec's
//! table of Droplet actions): `shutdown` "is an attempt to shutdown the Droplet in a graceful
//! way … this action guarantees that the command is issued, not that it succeeds", so the
//! action completes after `shutdown_takes` and the Droplet is off then unless the guest ignores
//! it; `power_off` "is a hard shutdown", off at once; `power_on` boots in `boot_takes`. A
//! Droplet with an action in progress, a snapshot included, is locked: any other action gets
//! the API's 422.

use std::time::Duration;

/// The machine behind the simulated Droplet, when a test has a real one (a booted container):
/// power actions then reach it, and take as long as it takes, instead of the model's timings.
pub trait Guest: Send + Sync {
    /// What a `shutdown` sends: the ACPI power-button request. True once the machine is off,
    /// false when it stayed on.
    fn shutdown(&self) -> bool;
    /// A power cut (`power_off`); returns once the machine is off.
    fn power_off(&self);
    /// Boots the machine (`power_on`); returns once it runs.
    fn power_on(&self);
}

/// How the simulated guest and hypervisor answer power actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerModel {
    /// From a `shutdown` request to the guest powered off.
    pub shutdown_takes: Duration,
    /// The guest ignores the ACPI request (a hung or misconfigured OS): the action completes,
    /// the Droplet stays on.
    pub guest_ignores_shutdown: bool,
    /// From `power_on` to the Droplet active.
    pub boot_takes: Duration,
}

impl Default for PowerModel {
    fn default() -> Self {
        PowerModel {
            shutdown_takes: Duration::from_secs(2),
            guest_ignores_shutdown: false,
            boot_takes: Duration::from_secs(2),
        }
    }
}

/// The Droplet's power state, as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Power {
    Active,
    Off,
}

impl Power {
    pub(crate) fn status(self) -> &'static str {
        match self {
            Power::Active => "active",
            Power::Off => "off",
        }
    }
}

/// A power action the simulator takes: how long it runs, and the state it leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PowerAction {
    pub(crate) takes: Duration,
    /// `None`: the state does not change (an ignored shutdown).
    pub(crate) leaves: Option<Power>,
}

/// What action `kind` does to a Droplet in state `now`, or the API's refusal.
pub(crate) fn plan(model: &PowerModel, now: Power, kind: &str) -> Option<Result<PowerAction, &'static str>> {
    let action = match (kind, now) {
        ("shutdown" | "power_off", Power::Off) => return Some(Err("Droplet is already powered off.")),
        ("power_on", Power::Active) => return Some(Err("Droplet is already powered on.")),
        ("shutdown", _) => PowerAction {
            takes: model.shutdown_takes,
            leaves: (!model.guest_ignores_shutdown).then_some(Power::Off),
        },
        ("power_off", _) => PowerAction {
            takes: Duration::ZERO,
            leaves: Some(Power::Off),
        },
        ("power_on", _) => PowerAction {
            takes: model.boot_takes,
            leaves: Some(Power::Active),
        },
        _ => return None,
    };
    Some(Ok(action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_action_leaves_the_state_the_api_describes_or_is_refused() {
        let model = PowerModel::default();
        let off = plan(&model, Power::Active, "shutdown").unwrap().unwrap();
        assert_eq!((off.takes, off.leaves), (model.shutdown_takes, Some(Power::Off)));
        let hard = plan(&model, Power::Active, "power_off").unwrap().unwrap();
        assert_eq!((hard.takes, hard.leaves), (Duration::ZERO, Some(Power::Off)));
        let on = plan(&model, Power::Off, "power_on").unwrap().unwrap();
        assert_eq!(on.leaves, Some(Power::Active));
        let ignored = PowerModel {
            guest_ignores_shutdown: true,
            ..model
        };
        assert_eq!(
            plan(&ignored, Power::Active, "shutdown").unwrap().unwrap().leaves,
            None
        );
        assert!(plan(&model, Power::Off, "shutdown").unwrap().is_err());
        assert!(plan(&model, Power::Active, "power_on").unwrap().is_err());
        assert!(plan(&model, Power::Active, "snapshot").is_none());
    }
}
