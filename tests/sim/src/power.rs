//! The Droplet's power, as an offline snapshot meets it (the API's own words, in the spec's
//! table of Droplet actions): `shutdown` "is an attempt to shutdown the Droplet in a graceful
//! way … this action guarantees that the command is issued, not that it succeeds", so the
//! action completes after `shutdown_takes` and the Droplet is off then unless the guest ignores
//! it; `power_off` "is a hard shutdown", off at once; `power_on` boots in `boot_takes`. A
//! Droplet with an action in progress, a snapshot included, is locked: any other action gets
//! the API's 422. [`PowerFault`]s make a power action meet what the real API may answer instead:
//! a 5xx, a 429 with `retry-after`, no answer, or no answer to an action it took.

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

/// A fault that power action `action` meets, written `ACTION=KIND[*COUNT]`: `power_on=500*3`
/// (refused with HTTP 500, three times), `power_on=429:90` (rate-limited, `retry-after: 90`),
/// `power_on=hang` (held unanswered and not taken, until the simulator stops), `power_on=lost`
/// (taken, its answer held back the same way: the caller times out on an action that
/// registered). Without `*COUNT` it applies to every such request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerFault {
    action: String,
    kind: PowerFaultKind,
    /// How many more requests it applies to; `None`: all.
    remaining: Option<u32>,
}

/// What a faulty power action meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerFaultKind {
    /// Refused with this HTTP status, not taken.
    Status(u16),
    /// Refused with 429 and `retry-after`, not taken.
    RateLimited { retry_after: u64 },
    /// Never answered (until the simulator stops), not taken.
    Hang,
    /// Taken, but never answered (until the simulator stops).
    Lost,
}

/// What the next request for power action `action` meets, using up one application of the
/// first fault that applies.
pub(crate) fn take_fault(faults: &mut [PowerFault], action: &str) -> Option<PowerFaultKind> {
    let fault = faults
        .iter_mut()
        .find(|f| f.action == action && f.remaining != Some(0))?;
    if let Some(n) = fault.remaining.as_mut() {
        *n -= 1;
    }
    Some(fault.kind)
}

impl std::str::FromStr for PowerFault {
    type Err = String;

    fn from_str(spec: &str) -> Result<PowerFault, String> {
        let bad = |why: &str| format!("bad power fault `{spec}`: {why}; write it like `power_on=500*3`");
        let (action, what) = spec.split_once('=').ok_or_else(|| bad("no `=`"))?;
        if !["shutdown", "power_off", "power_on"].contains(&action) {
            return Err(bad("the action is shutdown, power_off or power_on"));
        }
        let (kind, remaining) = match what.split_once('*') {
            Some((k, n)) => (
                k,
                Some(n.parse::<u32>().map_err(|_| bad("the count is not a number"))?),
            ),
            None => (what, None),
        };
        let kind = match kind.split_once(':') {
            None if kind == "hang" => PowerFaultKind::Hang,
            None if kind == "lost" => PowerFaultKind::Lost,
            None => PowerFaultKind::Status(
                kind.parse::<u16>()
                    .ok()
                    .filter(|c| (400..600).contains(c) && *c != 429)
                    .ok_or_else(|| bad("unknown kind"))?,
            ),
            Some(("429", secs)) => PowerFaultKind::RateLimited {
                retry_after: secs.parse().map_err(|_| bad("retry-after is not a number"))?,
            },
            Some(_) => return Err(bad("unknown kind")),
        };
        Ok(PowerFault {
            action: action.to_string(),
            kind,
            remaining,
        })
    }
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

    #[test]
    fn power_faults_parse_and_apply_to_their_action_only_as_often_as_written() {
        let mut faults: Vec<PowerFault> = ["power_on=500*2", "power_on=429:90*1", "shutdown=hang"]
            .iter()
            .map(|f| f.parse().unwrap())
            .collect();
        assert_eq!(take_fault(&mut faults, "power_off"), None);
        assert_eq!(
            take_fault(&mut faults, "power_on"),
            Some(PowerFaultKind::Status(500))
        );
        assert_eq!(
            take_fault(&mut faults, "power_on"),
            Some(PowerFaultKind::Status(500))
        );
        assert_eq!(
            take_fault(&mut faults, "power_on"),
            Some(PowerFaultKind::RateLimited { retry_after: 90 })
        );
        assert_eq!(take_fault(&mut faults, "power_on"), None, "used up");
        for _ in 0..3 {
            assert_eq!(take_fault(&mut faults, "shutdown"), Some(PowerFaultKind::Hang));
        }
        assert_eq!(
            "power_on=lost".parse::<PowerFault>().unwrap().kind,
            PowerFaultKind::Lost
        );
        for bad in [
            "power_on",
            "snapshot=500",
            "power_on=200",
            "power_on=429",
            "power_on=500*x",
            "power_on=teapot",
        ] {
            assert!(bad.parse::<PowerFault>().is_err(), "{bad}");
        }
    }
}
