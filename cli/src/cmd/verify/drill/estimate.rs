//! How long a drill is expected to take and what that costs, said before anything is created:
//! from the sizes of the snapshots it restores and the one rate DigitalOcean documents for
//! them, "about 1 to 3 minutes per GB of used disk space"
//! (<https://docs.digitalocean.com/support/how-long-will-my-backup-or-snapshot-take-to-complete/>).
//! That page times taking a snapshot; DigitalOcean documents no rate for restoring one, so the
//! drill expects the same for moving the same data back onto a disk. A snapshot's
//! `size_gigabytes` is its used disk (what it is billed for), the measure that rate is given in.

use super::{DrillOptions, Plan};
use serde::Serialize;
use std::time::Duration;

/// DigitalOcean's documented minutes per GB of used disk: the least and the most.
pub(super) const MINUTES_PER_GB: (f64, f64) = (1.0, 3.0);

/// What a drill is expected to take and cost, before it starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Expected {
    /// GB of used disk restored: the Droplet's snapshot and its run's volume snapshots.
    pub gigabytes: f64,
    /// Seconds at the documented rate's fastest.
    pub low_seconds: u64,
    /// Seconds at its slowest.
    pub high_seconds: u64,
    /// USD at the fastest and the slowest, billed by the started hour.
    pub low_cost: f64,
    pub high_cost: f64,
}

/// The expectation for `plan`.
pub(super) fn expect(plan: &Plan) -> Expected {
    let gigabytes: f64 =
        plan.snapshot.size_gigabytes + plan.volumes.iter().map(|v| v.size_gigabytes).sum::<f64>();
    let seconds = |minutes_per_gb: f64| (gigabytes * minutes_per_gb * 60.0).ceil().max(0.0) as u64;
    let (low_seconds, high_seconds) = (seconds(MINUTES_PER_GB.0), seconds(MINUTES_PER_GB.1));
    // Billed by the started hour: the first hour is paid however short the drill.
    let cost = |s: u64| s.div_ceil(3600).max(1) as f64 * plan.size.price_hourly;
    Expected {
        gigabytes,
        low_seconds,
        high_seconds,
        low_cost: cost(low_seconds),
        high_cost: cost(high_seconds),
    }
}

/// The expectation in words, and a warning when `--timeout` may cut the drill short.
pub(super) fn words(expected: &Expected, options: &DrillOptions) -> String {
    let time = |s: u64| humantime::format_duration(Duration::from_secs(s)).to_string();
    let cost = if expected.low_cost == expected.high_cost {
        format!("${:.4}", expected.low_cost)
    } else {
        format!("${:.4} to ${:.4}", expected.low_cost, expected.high_cost)
    };
    let mut words = format!(
        "expect the restore to take {} to {} ({:.2} GB of snapshots at the {} to {} minutes per \
         GB DigitalOcean documents), costing {cost}, plus the checks",
        time(expected.low_seconds),
        time(expected.high_seconds),
        expected.gigabytes,
        MINUTES_PER_GB.0,
        MINUTES_PER_GB.1,
    );
    if Duration::from_secs(expected.high_seconds) >= options.timeout {
        words.push_str(&format!(
            "; --timeout {} may cut it short: give it more",
            humantime::format_duration(options.timeout)
        ));
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use freezeframe_digitalocean::{Size, Snapshot};

    fn snapshot(gigabytes: f64) -> Snapshot {
        Snapshot {
            id: "1".into(),
            name: "s".into(),
            created_at: String::new(),
            regions: vec!["nyc3".into()],
            min_disk_size: 25,
            size_gigabytes: gigabytes,
            resource_id: "2".into(),
            resource_type: "droplet".into(),
            tags: None,
        }
    }

    #[test]
    fn the_documented_rate_times_the_snapshots_used_disk_billed_by_the_started_hour() {
        let plan = Plan {
            snapshot: snapshot(25.0),
            volumes: vec![snapshot(5.0)],
            size: Size {
                slug: "s-1vcpu-1gb".into(),
                memory: 1024,
                vcpus: 1,
                disk: 25,
                price_monthly: 6.0,
                price_hourly: 0.01,
                regions: vec!["nyc3".into()],
                available: true,
            },
        };
        let expected = expect(&plan);
        assert_eq!((expected.low_seconds, expected.high_seconds), (1800, 5400));
        assert_eq!((expected.low_cost, expected.high_cost), (0.01, 0.02));
        let options = DrillOptions {
            snapshot: "s".into(),
            size: None,
            ssh_keys: Vec::new(),
            yes: true,
            timeout: Duration::from_secs(20 * 60),
            user: "root".into(),
            ssh_command: "ssh".into(),
            poll: Duration::from_secs(2),
        };
        let said = words(&expected, &options);
        assert!(
            said.starts_with("expect the restore to take 30m to 1h 30m (30.00 GB of snapshots at the 1 to 3")
                && said.contains("costing $0.0100 to $0.0200")
                && said.ends_with("--timeout 20m may cut it short: give it more"),
            "{said}"
        );
    }
}
