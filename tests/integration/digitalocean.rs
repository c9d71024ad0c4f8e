//! The `digitalocean` provider end to end: `freezeframe-agent snapshot` against the API
//! simulator on loopback, on a loop filesystem that stands for the Droplet's disk.

use crate::droplet::{report_of, Droplet};
use freezeframe_tests::sim::{Capture, Fault};
use freezeframe_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn check_records(image: &Path, dir: &Path, acked: u64) {
    assert_clean(Fs::Ext4, image);
    let view = view_image(Fs::Ext4, image, &dir.join("view"));
    assert_records(&std::fs::read(view.path("records")).unwrap(), acked);
}

#[test]
fn a_snapshot_through_the_simulator_is_consistent_and_reported() {
    let droplet = Droplet::new(Duration::from_millis(500), "");
    let writer = writer(&droplet.disk.path("records"));
    writer.wait_for(50, Duration::from_secs(30)).unwrap();
    let mut cmd = droplet.agent();
    cmd.args(["snapshot", "--json", "--wait", "--name", "e2e-1"]);
    let (child, _) = spawn_until_frozen(cmd, droplet.dir.path());
    // Frozen: nothing acknowledged from here on can be missing from the image.
    let acked = writer.acked();
    let out = child.wait_with_output().unwrap();
    let after = writer.stop();
    let report = report_of(&out);
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert_eq!(report["provider"], "digitalocean");
    assert_eq!(report["consistency"], "filesystem");
    assert!(after > acked, "the writer went on after the thaw");
    let counters = droplet.server.sim.counters();
    assert_eq!(counters.snapshot_posts, 1);
    assert!(
        counters.calls.iter().any(|c| c == "GET /metadata/v1.json"),
        "the Droplet id came from metadata"
    );
    let action_id = report["action_id"].as_str().unwrap();
    assert!(report["snapshot_size_bytes"].as_u64().unwrap() > 0, "{report:#}");
    let snapshot_id = report["snapshot_id"]
        .as_str()
        .expect("--wait reports the snapshot id");
    assert!(snapshot_id.parse::<u64>().unwrap() > action_id.parse::<u64>().unwrap());
    let images = droplet.server.sim.images();
    let image = images.get("e2e-1").expect("the simulator copied the disk");
    assert_eq!(image, &droplet.images.join(format!("{action_id}.img")));
    check_records(image, droplet.dir.path(), acked);
}

/// Registration, completion and a read front to back across the thaw each leave their own
/// evidence: the markers, and ext4's superblock and journal (both rewritten by the first write
/// after the thaw), as `verify --image` reads them.
#[test]
fn the_probe_tells_the_three_capture_timings_apart() {
    for (capture, delay, markers, journal, probe) in [
        (
            Capture::Registration,
            500,
            &["probe-1.before"][..],
            "clean",
            "inside-window",
        ),
        (
            Capture::Completion,
            500,
            &["probe-1.after", "probe-1.before"][..],
            "needs-recovery",
            "after-thaw",
        ),
        // Pieces every 4 s / 16: the superblock's inside the window, the journal's (16 MiB in,
        // 1 s later) long after the `after` marker was written and synced.
        (
            Capture::PartWay,
            4000,
            &["probe-1.before"][..],
            "torn",
            "after-thaw",
        ),
    ] {
        let droplet = Droplet::capturing_at(capture, Duration::from_millis(delay));
        let (_, report) = droplet.snapshot(&["--wait", "--name", "probe-1"]);
        assert_eq!(report["status"], "succeeded", "{capture:?}: {report:#}");
        let image = droplet.server.sim.images()["probe-1"].clone();
        let (code, found) = crate::servers::verify(&image);
        assert_eq!(found["journal"], journal, "{capture:?}: {found:#}");
        assert_eq!(found["probe"], probe, "{capture:?}: {found:#}");
        let mut found_markers: Vec<&str> = found["markers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        found_markers.sort();
        // Part-way, the `after` marker's inode may have been read before or after it was written.
        if capture == Capture::PartWay {
            assert!(found_markers.contains(&"probe-1.before"), "{found:#}");
        } else {
            assert_eq!(found_markers, markers, "{capture:?}: {found:#}");
        }
        assert_eq!(code, if probe == "inside-window" { 0 } else { 1 }, "{found:#}");
        let reasons = found["reasons"].to_string();
        match capture {
            Capture::Registration => assert_eq!(found["verified"], true, "{found:#}"),
            Capture::Completion => assert!(reasons.contains("`after` marker"), "{reasons}"),
            Capture::PartWay => assert!(reasons.contains("part-way"), "{reasons}"),
        }
        assert!(code == 0 || reasons.contains("thaw_after"), "{reasons}");
    }
}

#[test]
fn a_refused_token_fails_in_preflight_and_names_the_scopes() {
    let droplet = Droplet::new(Duration::from_millis(100), "");
    droplet
        .server
        .sim
        .set_faults(vec!["GET /v2/droplets/=401".parse::<Fault>().unwrap()]);
    let (out, report) = droplet.snapshot(&[]);
    // The user's configuration, as a missing token is: 2.
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(report["setup_error"], true);
    assert_eq!(report["failed_phase"], "preflight");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("does not accept the token (HTTP 401"), "{error}");
    assert!(error.contains("request id sim-"), "{error}");
    for scope in ["droplet:read", "droplet:update", "image:create", "actions:read"] {
        assert!(error.contains(scope), "{error}");
    }
    assert_eq!(droplet.server.sim.counters().snapshot_posts, 0);
}

#[test]
fn a_token_file_readable_by_others_is_refused() {
    let droplet = Droplet::new(Duration::from_millis(100), "");
    let token = droplet.dir.path().join("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (out, report) = droplet.snapshot(&[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a set-up error, like a configuration error"
    );
    assert_eq!(report["setup_error"], true);
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("readable by group or others") && error.contains("chmod 600"),
        "{error}"
    );
    assert!(droplet.server.sim.counters().calls.is_empty(), "nothing was sent");
}

#[test]
fn a_pending_event_is_refused_before_anything_freezes() {
    let droplet = Droplet::new(Duration::from_secs(30), "");
    let (_, first) = droplet.snapshot(&["--name", "first"]);
    assert_eq!(first["status"], "succeeded", "{first:#}");
    let (_, second) = droplet.snapshot(&["--name", "second"]);
    assert_eq!(second["failed_phase"], "preflight");
    let error = second["error"].as_str().unwrap();
    assert!(error.contains("pending event"), "{error}");
    assert_eq!(droplet.server.sim.counters().snapshot_posts, 1);
}

#[test]
fn a_hanging_post_is_bounded_by_max_freeze_and_never_repeated() {
    let droplet = Droplet::new(Duration::from_millis(100), "");
    droplet
        .server
        .sim
        .set_faults(vec!["POST /v2/droplets/=hang".parse::<Fault>().unwrap()]);
    let started = Instant::now();
    let (out, report) = droplet.snapshot(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(report["failed_phase"], "request");
    assert_eq!(report["consistency"], "crash");
    assert!(report["frozen_ms"].as_f64().unwrap() < 5000.0, "{report:#}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!is_frozen(&droplet.disk.mountpoint));
    let posts = droplet
        .server
        .sim
        .counters()
        .calls
        .iter()
        .filter(|c| c.starts_with("POST"))
        .count();
    assert_eq!(posts, 1, "exactly one attempt inside the window");
}

#[test]
fn a_server_error_on_the_request_is_reported_with_its_request_id() {
    let droplet = Droplet::new(Duration::from_millis(100), "");
    droplet
        .server
        .sim
        .set_faults(vec!["POST /v2/droplets/=500".parse::<Fault>().unwrap()]);
    let (_, report) = droplet.snapshot(&[]);
    assert_eq!(report["failed_phase"], "request");
    assert!(report["consistency"].is_null(), "no snapshot was made");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("HTTP 500") && error.contains("request id sim-"),
        "{error}"
    );
    assert!(!is_frozen(&droplet.disk.mountpoint));
}

#[test]
fn thaw_after_completed_holds_the_freeze_until_the_action_completes() {
    let delay = Duration::from_millis(1500);
    let droplet = Droplet::new(delay, "thaw_after = \"completed\"\n");
    let (_, report) = droplet.snapshot(&[]);
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert!(
        report["frozen_ms"].as_f64().unwrap() >= delay.as_millis() as f64,
        "{report:#}"
    );
}

#[test]
fn a_post_answered_after_the_deadline_is_reconciled_not_repeated() {
    let droplet = Droplet::new(Duration::from_secs(30), "");
    // The simulator registers the snapshot at once but answers only after max_freeze (5 s).
    droplet
        .server
        .sim
        .set_faults(vec!["POST /v2/droplets/=slow-answer:8000"
            .parse::<Fault>()
            .unwrap()]);
    let (_, report) = droplet.snapshot(&["--name", "late"]);
    assert_eq!(report["failed_phase"], "request", "{report:#}");
    assert_eq!(report["consistency"], "crash");
    let registered = droplet.server.sim.images();
    assert!(registered.contains_key("late"));
    let action_id = report["action_id"]
        .as_str()
        .expect("the registered action is reported");
    let warning = report["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains(&format!("registered snapshot action {action_id}")),
        "{warning}"
    );
    assert!(warning.contains("crash-consistent"), "{warning}");
    assert_eq!(
        droplet.server.sim.counters().snapshot_posts,
        1,
        "never sent twice"
    );
    assert!(!is_frozen(&droplet.disk.mountpoint));
}

#[test]
fn a_post_that_never_registered_is_reported_as_nothing_to_clean_up() {
    let droplet = Droplet::new(Duration::from_millis(100), "");
    droplet
        .server
        .sim
        .set_faults(vec!["POST /v2/droplets/=hang".parse::<Fault>().unwrap()]);
    let (_, report) = droplet.snapshot(&[]);
    assert!(report["action_id"].is_null());
    let warning = report["warnings"][0].as_str().unwrap();
    assert!(warning.contains("did not register a snapshot"), "{warning}");
}

#[test]
fn preflight_waits_out_a_rate_limit_and_retries_server_errors() {
    let droplet = Droplet::new(Duration::from_millis(100), "");
    droplet.server.sim.set_faults(vec![
        "GET /v2/droplets/=429:1*1".parse::<Fault>().unwrap(),
        "GET /v2/droplets/3164444/actions=503*1".parse::<Fault>().unwrap(),
    ]);
    let started = Instant::now();
    let (out, report) = droplet.snapshot(&[]);
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retry-after was honoured"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("retrying in 1s"), "{stderr}");
    assert!(stderr.contains("HTTP 503"), "{stderr}");

    // A lasting failure gives up after the attempts, with DigitalOcean's message.
    droplet
        .server
        .sim
        .set_faults(vec!["GET /v2/droplets/=500".parse::<Fault>().unwrap()]);
    let (_, report) = droplet.snapshot(&["--name", "second"]);
    assert_eq!(report["failed_phase"], "preflight");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("Unexpected server-side error"),
        "{report:#}"
    );
    let gets = droplet
        .server
        .sim
        .counters()
        .calls
        .iter()
        .filter(|c| *c == "GET /v2/droplets/3164444")
        .count();
    assert_eq!(
        gets,
        2 + 4,
        "the first run: a 429 and its retry (the check before the freeze finds the connection \
         warm from it); then four attempts"
    );
}

#[test]
fn retention_keeps_the_newest_of_this_machines_snapshots_and_nothing_else() {
    let droplet = Droplet::new(Duration::from_millis(100), "[retention]\nkeep_last = 2\n");
    let (_, manual) = droplet.snapshot(&["--wait", "--name", "manual"]);
    assert_eq!(manual["status"], "succeeded", "{manual:#}");
    let mut names = Vec::new();
    for _ in 0..3 {
        let (_, report) = droplet.snapshot(&["--wait"]);
        assert_eq!(report["status"], "succeeded", "{report:#}");
        let name = report["snapshot_name"].as_str().unwrap().to_string();
        assert!(
            name.ends_with("-filesystem"),
            "the name records the consistency: {name}"
        );
        names.push((name, report));
    }
    // The first two runs kept everything (at most two of ours); the third deleted the oldest.
    assert!(names[0].1.get("pruned").is_none() && names[1].1.get("pruned").is_none());
    let pruned = names[2].1["pruned"].as_array().unwrap();
    assert_eq!(pruned.len(), 1, "{:#}", names[2].1);
    assert_eq!(pruned[0]["name"], names[0].0.as_str());
    let left = droplet.server.sim.snapshot_names();
    assert_eq!(left.len(), 3, "{left:?}");
    assert_eq!(
        left[0], "manual",
        "a snapshot not named by freezeframe is never deleted"
    );
}

#[test]
fn retention_keeps_the_newest_of_each_attached_volumes_snapshots_too() {
    // Without it a volume reaches DigitalOcean's 25 snapshots and every later run is refused.
    let droplet = Droplet::with_volume(Duration::from_millis(100), "[retention]\nkeep_last = 2\n", true);
    let host = rendered_hostname();
    let volume_id = "506f78a4-e098-11e5-ad9f-000f53306ae1";
    let sim = &droplet.server.sim;
    // Three earlier runs of this machine (a day, two and three old) and one made by hand.
    let earlier: Vec<String> = (1..=3)
        .map(|day| format!("{host}-2026110{day}-000000-filesystem"))
        .collect();
    for (i, name) in earlier.iter().enumerate() {
        sim.seed_volume_snapshot(
            volume_id,
            Some(name),
            Duration::from_secs(86_400 * (4 - i as u64)),
        );
    }
    sim.seed_volume_snapshot(volume_id, Some("by-hand"), Duration::from_secs(86_400 * 5));
    let (_, report) = droplet.snapshot(&["--wait"]);
    assert_eq!(report["status"], "succeeded", "{report:#}");
    let new = report["snapshot_name"].as_str().unwrap().to_string();
    let pruned: Vec<&str> = report["pruned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(pruned, [&earlier[0], &earlier[1]], "{report:#}");
    assert_eq!(
        sim.volume_snapshot_names(),
        ["by-hand", earlier[2].as_str(), new.as_str()],
        "the newest two of this machine's, and the one made by hand"
    );
}

/// This machine's host name as snapshot names carry it (`{hostname}`).
pub(crate) fn rendered_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        .collect()
}

#[test]
fn every_injected_fault_gives_a_clear_message_and_leaves_nothing_frozen() {
    let droplet = Droplet::new(Duration::from_millis(100), "");
    let cases = [
        (
            "GET /v2/droplets/=404",
            "preflight",
            "cannot read Droplet 3164444",
        ),
        ("GET /v2/droplets/=404", "preflight", "could not be found"),
        ("POST /v2/droplets/=422", "request", "pending event"),
        (
            "POST /v2/droplets/=reset",
            "request",
            "cannot reach POST /v2/droplets/3164444/actions",
        ),
        (
            "POST /v2/droplets/=garbage",
            "request",
            "unexpected answer from POST /v2/droplets/3164444/actions",
        ),
        (
            "POST /v2/droplets/=500",
            "request",
            "Unexpected server-side error",
        ),
        (
            "POST /v2/droplets/=403",
            "request",
            "droplet:update, image:create",
        ),
    ];
    for (i, (fault, phase, expected)) in cases.iter().enumerate() {
        droplet
            .server
            .sim
            .set_faults(vec![fault.parse::<Fault>().unwrap()]);
        let (out, report) = droplet.snapshot(&["--name", &format!("fault-{i}")]);
        // What the Droplet's read refuses (the token, the Droplet's id) is the configuration's
        // to fix; anything else is a failed run.
        let setup = fault.starts_with("GET /v2/droplets/=40");
        assert_eq!(out.status.code(), Some(if setup { 2 } else { 1 }), "{fault}");
        assert_eq!(report["failed_phase"], *phase, "{fault}: {report:#}");
        let error = report["error"].as_str().unwrap();
        assert!(error.contains(expected), "{fault}: {error}");
        assert!(!is_frozen(&droplet.disk.mountpoint), "{fault}: left frozen");
    }
    assert_eq!(
        droplet.server.sim.counters().snapshot_posts,
        0,
        "no fault let a snapshot through"
    );

    // Latency slows the request, which the frozen window then covers; nothing else changes.
    droplet
        .server
        .sim
        .set_faults(vec!["/v2/=latency:300".parse::<Fault>().unwrap()]);
    let (_, report) = droplet.snapshot(&["--name", "slow"]);
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert!(report["request_ms"].as_f64().unwrap() >= 300.0, "{report:#}");
    assert!(report["frozen_ms"].as_f64().unwrap() >= report["request_ms"].as_f64().unwrap());
}

#[test]
fn attached_volumes_are_snapshotted_in_the_same_window_as_one_group() {
    let droplet = Droplet::with_volume(Duration::from_millis(200), "", true);
    let volume = droplet.volume.as_ref().unwrap();
    let disk_writer = writer(&droplet.disk.path("records"));
    let volume_writer = writer(&volume.path("records"));
    disk_writer.wait_for(30, Duration::from_secs(30)).unwrap();
    volume_writer.wait_for(30, Duration::from_secs(30)).unwrap();
    let mut cmd = droplet.agent();
    cmd.args(["snapshot", "--json", "--wait", "--name", "group"]);
    let (child, _) = spawn_until_frozen(cmd, droplet.dir.path());
    let (disk_acked, volume_acked) = (disk_writer.acked(), volume_writer.acked());
    let report = report_of(&child.wait_with_output().unwrap());
    disk_writer.stop();
    volume_writer.stop();
    assert_eq!(report["status"], "succeeded", "{report:#}");
    let volumes = report["volume_snapshots"]
        .as_array()
        .expect("volume snapshots are reported");
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0]["volume_name"], "data");
    assert_eq!(volumes[0]["mountpoint"], volume.mountpoint.to_str().unwrap());
    assert_eq!(droplet.server.sim.counters().volume_snapshot_posts, 1);

    let images = droplet.server.sim.images();
    check_records(&images["group"], droplet.dir.path(), disk_acked);
    let volume_image = &images["group@data"];
    assert_clean(Fs::Xfs, volume_image);
    let view = view_image(Fs::Xfs, volume_image, &droplet.dir.path().join("volume-view"));
    assert_records(&std::fs::read(view.path("records")).unwrap(), volume_acked);
    drop(view);

    // DigitalOcean's limits on volume snapshots, met in preflight: one every 10 minutes, 25
    // kept. Nothing is frozen or requested for a run the platform would refuse.
    let (out, report) = droplet.snapshot(&["--name", "too-soon"]);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert_eq!(report["failed_phase"], "preflight", "{report:#}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("volume data was snapshotted at")
            && error.contains("one snapshot of a volume every 10 minutes"),
        "{error}"
    );
    assert!(report["filesystems"]["frozen"].as_array().unwrap().is_empty());
    let counters = droplet.server.sim.counters();
    assert_eq!((counters.snapshot_posts, counters.volume_snapshot_posts), (1, 1));
    let volume_id = "506f78a4-e098-11e5-ad9f-000f53306ae1";
    droplet
        .server
        .sim
        .seed_volume_snapshots(volume_id, 24, Duration::from_secs(86_400));
    let (_, report) = droplet.snapshot(&["--name", "too-many"]);
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("volume data has 25 snapshots"), "{error}");
    assert_eq!(droplet.server.sim.counters().snapshot_posts, 1);
}

#[test]
fn a_volume_that_is_not_frozen_or_switched_off_is_not_snapshotted() {
    let droplet = Droplet::with_volume(Duration::from_millis(100), "", false);
    let (out, report) = droplet.snapshot(&[]);
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert!(report.get("volume_snapshots").is_none());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("volume data"),
        "the skip is said"
    );

    let droplet = Droplet::with_volume(Duration::from_millis(100), "volumes = false\n", true);
    let (_, report) = droplet.snapshot(&[]);
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert_eq!(droplet.server.sim.counters().volume_snapshot_posts, 0);
}

#[test]
fn a_failed_volume_snapshot_fails_the_group_and_says_what_was_made() {
    let droplet = Droplet::with_volume(Duration::from_secs(30), "", true);
    droplet
        .server
        .sim
        .set_faults(vec!["POST /v2/volumes/=500".parse::<Fault>().unwrap()]);
    let (_, report) = droplet.snapshot(&["--name", "partial"]);
    assert_eq!(report["failed_phase"], "request", "{report:#}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("group is incomplete") && error.contains("volume data"),
        "{error}"
    );
    assert!(error.contains("made: snapshot action"), "{error}");
    assert!(
        !report["action_id"].is_null(),
        "the Droplet snapshot that was made is named"
    );
    assert!(!is_frozen(&droplet.disk.mountpoint));
}

#[test]
fn a_registered_snapshot_whose_answer_lacks_an_id_is_reconciled_not_repeated() {
    let droplet = Droplet::new(Duration::from_secs(30), "");
    droplet
        .server
        .sim
        .set_faults(vec!["POST /v2/droplets/=no-action-id".parse::<Fault>().unwrap()]);
    let (_, report) = droplet.snapshot(&["--name", "no-id"]);
    assert_eq!(report["failed_phase"], "request", "{report:#}");
    assert!(
        report["error"].as_str().unwrap().contains("unexpected answer"),
        "{report:#}"
    );
    // The API did register it: the report names it, and says what it is worth.
    let action_id = report["action_id"]
        .as_str()
        .expect("the registered action is named");
    let warning = report["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains(&format!("registered snapshot action {action_id}")),
        "{warning}"
    );
    assert_eq!(
        droplet.server.sim.counters().snapshot_posts,
        1,
        "never sent twice"
    );
    assert!(!is_frozen(&droplet.disk.mountpoint));
}

#[test]
fn a_snapshot_while_another_still_waits_for_completion_is_refused_as_busy() {
    let droplet = Droplet::new(Duration::from_secs(6), "");
    let mut waiting = droplet.agent();
    waiting.args(["snapshot", "--json", "--wait", "--name", "first"]);
    let (first, _) = spawn_until_frozen(waiting, droplet.dir.path());
    // The first thaws as soon as its request registered, then polls for completion (6 s after
    // the request: time for the second to start on a loaded machine); the run (and its lock)
    // lasts until then, so a second one is refused, not interleaved.
    let deadline = Instant::now() + Duration::from_secs(60);
    while is_frozen(&droplet.disk.mountpoint) {
        assert!(Instant::now() < deadline, "the first run did not thaw");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = droplet
        .agent()
        .args(["snapshot", "--json", "--name", "second"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("busy"));
    let report = report_of(&first.wait_with_output().unwrap());
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert!(
        report["snapshot_id"].is_string(),
        "it waited for completion: {report:#}"
    );
    assert!(!droplet.server.sim.images().contains_key("second"));
}

#[test]
fn retention_waits_out_a_rate_limited_delete_as_a_get_would() {
    let droplet = Droplet::new(Duration::from_millis(100), "[retention]\nkeep_last = 1\n");
    let (_, first) = droplet.snapshot(&["--wait"]);
    assert_eq!(first["status"], "succeeded", "{first:#}");
    droplet
        .server
        .sim
        .set_faults(vec!["DELETE /v2/snapshots/=429:1*1".parse::<Fault>().unwrap()]);
    let (out, second) = droplet.snapshot(&["--wait"]);
    assert_eq!(second["status"], "succeeded", "{second:#}");
    assert_eq!(second["pruned"].as_array().map(Vec::len), Some(1), "{second:#}");
    // The DELETE honoured retry-after, as every idempotent call does, and said so.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("DELETE /v2/snapshots/") && stderr.contains("retrying in 1s"),
        "{stderr}"
    );
    assert_eq!(
        droplet.server.sim.snapshot_names(),
        [second["snapshot_name"].as_str().unwrap()]
    );
}

#[test]
fn a_completed_snapshot_and_its_volumes_carry_the_consistency_reached_and_list_shows_it() {
    let member = crate::fleet::serve(Droplet::with_volume(Duration::from_millis(100), "", true));
    let sim = &member.droplet.server.sim;
    let cli = |args: &[&str]| {
        Command::new(cli_bin())
            .args(["--bus-address", &member.bus.address])
            .args(args)
            .output()
            .unwrap()
    };
    let out = cli(&["snapshot", "--json", "--wait", "--name", "tagged"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert!(report["warnings"].as_array().unwrap().is_empty(), "{report:#}");
    let level = report["consistency"].as_str().unwrap().to_string();
    let image = report["snapshot_id"].as_str().unwrap().to_string();
    let volume = report["volume_snapshots"][0]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    for id in [&image, &volume] {
        assert_eq!(sim.image_tags(id), [format!("freezeframe:{level}")], "{id}");
    }
    // One call tags both; the tag is made only because the API said it did not exist yet.
    let calls = sim.counters().calls;
    let count = |call: &str| calls.iter().filter(|c| *c == call).count();
    assert_eq!(count("POST /v2/tags"), 1, "{calls:?}");
    assert_eq!(
        count(&format!("POST /v2/tags/freezeframe%3A{level}/resources")),
        2,
        "{calls:?}"
    );

    let out = cli(&["list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{listed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = listed.lines().next().unwrap_or_default();
    let row = listed.lines().find(|l| l.contains("tagged")).unwrap_or_default();
    assert!(
        header.find("CONSISTENCY").is_some() && header.find("CONSISTENCY") == row.find(level.as_str()),
        "the level in its column: {listed}"
    );
}

/// Tags a snapshot as `freezeframe verify` does from an operator's machine: its result and when
/// it ran, through the same client calls.
fn drilled_elsewhere(url: &str, image: &str, verified: bool, at: u64) {
    use freezeframe_digitalocean::{http_client, platform, Client, Token};
    let client = Client::new(
        http_client(url).unwrap(),
        url,
        Token::new(crate::droplet::TOKEN),
        &["image:read", "tag:create"],
        Duration::from_secs(20),
    );
    let result = if verified {
        platform::VERIFIED_TAG
    } else {
        platform::FAILED_TAG
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for tag in [result.to_string(), platform::drilled_tag(at)] {
        runtime
            .block_on(client.tag_snapshot(&tag, image, false))
            .unwrap_or_else(|e| panic!("tag {tag}: {e}"));
    }
}

/// A drill run elsewhere leaves its verdict and time as tags on the snapshot: the Droplet's
/// next run reports them as the last verification in its metrics (the newest drill wins, a
/// failed one too), and `status` shows each run's verification from the same tags.
#[test]
fn a_drill_run_elsewhere_reaches_the_metrics_and_the_status_of_each_run() {
    let droplet = Droplet::new(Duration::from_millis(100), "");
    let textfiles = droplet.dir.path().join("textfiles");
    std::fs::create_dir(&textfiles).unwrap();
    let state = droplet.dir.path().join("drill.json");
    let dropins = droplet.config.with_file_name("config.d");
    std::fs::create_dir_all(&dropins).unwrap();
    std::fs::write(
        dropins.join("metrics.toml"),
        format!(
            "[metrics]\ntextfile_dir = {:?}\n[verify]\nstate_file = {:?}\n",
            textfiles.display().to_string(),
            state.display().to_string()
        ),
    )
    .unwrap();
    let member = crate::fleet::serve(droplet);
    let url = member.droplet.server.url.clone();
    let cli = |args: &[&str]| {
        Command::new(cli_bin())
            .args(["--bus-address", &member.bus.address])
            .args(args)
            .output()
            .unwrap()
    };
    let snapshot = |name: &str| {
        let out = cli(&["snapshot", "--json", "--wait", "--name", name]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["status"], "succeeded", "{report:#}");
        report["snapshot_id"].as_str().unwrap().to_string()
    };
    let metrics = || std::fs::read_to_string(textfiles.join("freezeframe.prom")).unwrap();
    let sample = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{droplet=\"3164444\"}} ")))
            .and_then(|l| l.rsplit(' ').next())
            .map(String::from)
    };

    let first = snapshot("drilled-1");
    assert_eq!(
        sample(&metrics(), "freezeframe_last_verification_success"),
        None,
        "no drill yet"
    );
    drilled_elsewhere(&url, &first, true, 1_765_000_000);
    snapshot("plain-2");
    let text = metrics();
    assert_eq!(
        sample(&text, "freezeframe_last_verification_success").as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "freezeframe_last_verification_timestamp_seconds").as_deref(),
        Some("1765000000"),
        "{text}"
    );

    // A later drill of another snapshot failed: that is the last verification now.
    let third = snapshot("failed-3");
    drilled_elsewhere(&url, &third, false, 1_765_000_100);
    snapshot("plain-4");
    let text = metrics();
    assert_eq!(
        sample(&text, "freezeframe_last_verification_success").as_deref(),
        Some("0"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "freezeframe_last_verification_timestamp_seconds").as_deref(),
        Some("1765000100"),
        "{text}"
    );

    let out = cli(&["status"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = shown.lines().find(|l| l.starts_with("ENDED")).unwrap_or_default();
    let column = header.find("VERIFICATION").expect("a VERIFICATION column");
    for (run, said) in [
        ("drilled-1", "verified"),
        ("plain-2", "-"),
        ("failed-3", "FAILED"),
        ("plain-4", "-"),
    ] {
        let row = shown.lines().find(|l| l.ends_with(run)).unwrap_or_default();
        assert_eq!(
            row.get(column..).map(|r| r.split_whitespace().next()),
            Some(Some(said)),
            "{run}: {shown}"
        );
    }
}

/// Waits until the simulator lists the snapshot `name` as complete.
fn completed(droplet: &Droplet, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !droplet.server.sim.snapshot_names().iter().any(|n| n == name) {
        assert!(
            Instant::now() < deadline,
            "{name} never completed: {:?}",
            droplet.server.sim.snapshot_names()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The calls a run made: what `run` did to the simulator's count of `call`.
fn calls_during(droplet: &Droplet, call: &str, run: impl FnOnce()) -> usize {
    let count = || {
        droplet
            .server
            .sim
            .counters()
            .calls
            .iter()
            .filter(|c| *c == call)
            .count()
    };
    let before = count();
    run();
    count() - before
}

#[test]
fn a_run_that_did_not_wait_has_its_snapshots_tagged_by_the_next_run() {
    // No volume: the platform takes one snapshot of a volume every 10 minutes (the simulator
    // too), and the volumes' snapshots are tagged by the same call as the Droplet's.
    let droplet = Droplet::new(Duration::from_millis(100), "");
    let sim = &droplet.server.sim;
    let list = "GET /v2/droplets/3164444/snapshots";
    let level_tag =
        |report: &serde_json::Value| format!("freezeframe:{}", report["consistency"].as_str().unwrap());
    // Not waiting, the first run cannot tag its snapshot: it has no id yet.
    let (_, first) = droplet.snapshot(&["--name", "first"]);
    assert_eq!(first["status"], "succeeded", "{first:#}");
    completed(&droplet, "first");
    assert!(sim.snapshot_tags("first").is_empty());

    // The next run, not waiting either, tags it, listing once.
    let mut second = serde_json::Value::Null;
    let listed = calls_during(&droplet, list, || {
        second = droplet.snapshot(&["--name", "second"]).1;
    });
    assert_eq!(second["status"], "succeeded", "{second:#}");
    assert_eq!(sim.snapshot_tags("first"), [level_tag(&first)]);
    assert_eq!(listed, 1, "{:?}", sim.counters().calls);

    // A run that waits tags the one before on the list its wait made: no list of its own.
    completed(&droplet, "second");
    let mut third = serde_json::Value::Null;
    let listed = calls_during(&droplet, list, || {
        third = droplet.snapshot(&["--name", "third", "--wait"]).1;
    });
    assert_eq!(third["status"], "succeeded", "{third:#}");
    assert_eq!(listed, 1, "the wait's list only: {:?}", sim.counters().calls);
    for (name, report) in [("second", &second), ("third", &third)] {
        assert_eq!(sim.snapshot_tags(name), [level_tag(report)], "{name}");
    }
    // Nothing owed any more: a fourth run asks nothing about earlier ones.
    let listed = calls_during(&droplet, list, || {
        let (_, fourth) = droplet.snapshot(&["--name", "fourth"]);
        assert_eq!(fourth["status"], "succeeded", "{fourth:#}");
    });
    assert_eq!(listed, 0, "{:?}", sim.counters().calls);
    assert_eq!(sim.snapshot_tags("first"), [level_tag(&first)]);
}
