//! Part 5 of the benchmark: from a snapshot to a verified restore. PostgreSQL under pgbench is
//! snapshotted (the `local-image` provider: the same freeze, the device copied as a platform
//! would), then `freezeframe-agent verify --image` recovers the copy and checks it. With and
//! without the PostgreSQL quiescer's CHECKPOINT, which trades writes before the freeze (and a
//! longer quiesce) for less WAL to replay at restore.

use crate::database::{pgbench_server, Load, SETTLE};
use crate::{agent_snapshot, median_max, percentile, Args, Section};
use freezeframe_tests::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// One run's numbers.
struct Restore {
    quiesce_ms: f64,
    frozen_ms: f64,
    replayed_mib: f64,
    recovery_s: f64,
    to_verified_s: f64,
    verified: bool,
}

pub fn run(args: &Args) -> Section {
    let fs = scratch_fs_sized(Fs::Ext4, 1024);
    let (_server, sockets, logs) = pgbench_server(&fs);

    let mut section = Section::new(
        format!(
            "From snapshot to verified restore: PostgreSQL 15 under pgbench (scale 10, 4 clients), {} snapshots each",
            args.runs
        ),
        vec![
            "PostgreSQL quiescer",
            "quiesce, ms",
            "writes blocked, ms",
            "WAL replayed at restore, MiB",
            "recovery at restore, s",
            "snapshot to verified restore, s",
            "verified",
        ],
    );
    for checkpoint in [true, false] {
        let config = local_image_config(
            &fs,
            &format!(
                "[[quiescer]]\nkind = \"postgresql\"\nsocket_dir = {:?}\ncheckpoint = {checkpoint}\n",
                sockets.display().to_string()
            ),
        );
        let runs = snapshots(args, &fs, &config, &sockets, &logs, checkpoint);
        add_row(&mut section, checkpoint, &runs);
    }
    section.notes.push(
        "Medians / maxima. \"Snapshot to verified restore\" is the snapshot (quiesce, freeze, \
         the device copied, thaw) and `freezeframe-agent verify --image` on the copy: mount \
         without replay, PostgreSQL started on an overlay and recovered, pg_amcheck on every \
         database, every table read. The writes blocked include the copy of the 1 GiB device \
         (the local-image provider's request), the same for both rows."
            .into(),
    );
    section
}

/// One snapshot, verified; its image removed after.
fn one(config: &Path, images: &Path, name: &str) -> Restore {
    let started = Instant::now();
    let report = agent_snapshot(config, name);
    let dir = images.join(name);
    let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let image = dir.join(manifest["images"][0]["file"].as_str().unwrap());
    let out = Command::new(agent_bin())
        .args(["verify", "--json", "--image"])
        .arg(&image)
        .output()
        .unwrap();
    let to_verified_s = started.elapsed().as_secs_f64();
    let found: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    std::fs::remove_dir_all(&dir).unwrap();
    let pg = &found["databases"][0];
    Restore {
        quiesce_ms: report["quiesce_ms"].as_f64().unwrap_or_default(),
        frozen_ms: report["frozen_ms"].as_f64().unwrap_or_default(),
        replayed_mib: pg["replayed_bytes"].as_f64().unwrap_or_default() / (1024.0 * 1024.0),
        recovery_s: pg["recovery_seconds"].as_f64().unwrap_or_default(),
        to_verified_s,
        verified: found["verified"] == true,
    }
}

/// Median / max with two decimals.
fn two_places(values: &[f64]) -> String {
    format!(
        "{:.2} / {:.2}",
        percentile(values, 50.0),
        percentile(values, 100.0)
    )
}

/// `args.runs` snapshots under load with `config`, each verified.
fn snapshots(
    args: &Args,
    fs: &ScratchFs,
    config: &Path,
    sockets: &Path,
    logs: &Path,
    checkpoint: bool,
) -> Vec<Restore> {
    let load = Load::start(sockets, logs.to_path_buf());
    let runs = (0..args.runs)
        .map(|run| {
            std::thread::sleep(SETTLE);
            one(
                config,
                &fs.dir.path().join("images"),
                &format!("restore-{checkpoint}-{run}"),
            )
        })
        .collect();
    load.finish();
    runs
}

/// One row of the table, and its JSON.
fn add_row(section: &mut Section, checkpoint: bool, runs: &[Restore]) {
    let column = |f: fn(&Restore) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
    let verified = runs.iter().filter(|r| r.verified).count();
    let label = if checkpoint {
        "CHECKPOINT before the freeze (default)"
    } else {
        "checkpoint = false"
    };
    section.rows.push(vec![
        label.into(),
        median_max(&column(|r| r.quiesce_ms)),
        median_max(&column(|r| r.frozen_ms)),
        two_places(&column(|r| r.replayed_mib)),
        two_places(&column(|r| r.recovery_s)),
        two_places(&column(|r| r.to_verified_s)),
        format!("{verified} of {}", runs.len()),
    ]);
    let stats =
        |values: Vec<f64>| json!({"median": percentile(&values, 50.0), "max": percentile(&values, 100.0)});
    section.json.push(json!({
        "checkpoint": checkpoint, "runs": runs.len(), "verified": verified,
        "quiesce_ms": stats(column(|r| r.quiesce_ms)),
        "frozen_ms": stats(column(|r| r.frozen_ms)),
        "replayed_mib": stats(column(|r| r.replayed_mib)),
        "recovery_s": stats(column(|r| r.recovery_s)),
        "to_verified_s": stats(column(|r| r.to_verified_s)),
    }));
}
