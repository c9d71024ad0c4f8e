//! What `freezeframe-agent` says when it is pointed at the wrong thing, and that it says one
//! accurate cause with its fix and exits with the code of the contract's table: a path that is
//! not a mountpoint, a live filesystem given to `verify`, a dry run that would fail, a refused
//! token, a metadata service that answers wrong, a drop-in that breaks the configuration; and
//! what a local-image run reports and publishes.

use crate::droplet::Droplet;
use freezeframe_tests::sim::Fault;
use freezeframe_tests::*;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn agent(config: &Path) -> Command {
    let mut cmd = Command::new(agent_bin());
    cmd.arg("--config").arg(config);
    cmd
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        let (stdout, stderr) = text(out);
        panic!("stdout is not one JSON document ({e}):\n{stdout}\nstderr:\n{stderr}")
    })
}

/// A path that does not exist, or is not a mountpoint, is refused with what to pass, before
/// anything is thawed; a mountpoint is thawed (or said not to have been frozen).
#[test]
fn thaw_refuses_a_path_that_is_not_a_mountpoint_and_thaws_nothing() {
    let fs = scratch_fs(Fs::Ext4);
    let config = local_image_config(&fs, "");
    std::fs::create_dir_all(fs.path("sub")).unwrap();
    for (args, expected) in [
        (
            vec!["thaw", "/no/such/path"],
            "/no/such/path does not exist".to_string(),
        ),
        (
            vec!["thaw", "--json", "/no/such/path"],
            "/no/such/path does not exist".to_string(),
        ),
        (
            vec!["thaw", fs.path("sub").to_str().unwrap()],
            format!(
                "{} is not a mountpoint: it is inside the filesystem mounted at {}",
                fs.path("sub").display(),
                fs.mountpoint.display()
            ),
        ),
    ] {
        let out = agent(&config).args(&args).output().unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains(&expected) && stderr.contains("name the mountpoint of a frozen filesystem"),
            "{args:?}: {stderr}"
        );
        assert!(!stdout.contains("was not frozen"), "{args:?}: {stdout}");
    }

    // One bad path among good ones: refused before the good one is thawed.
    run("fsfreeze", &["-f", fs.mountpoint.to_str().unwrap()]);
    let out = agent(&config)
        .args(["thaw", fs.mountpoint.to_str().unwrap(), "/no/such/path"])
        .output()
        .unwrap();
    let frozen_after_refusal = is_frozen(&fs.mountpoint);
    let thawed = agent(&config)
        .args(["thaw", fs.mountpoint.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    assert!(text(&out).1.contains("nothing was thawed"), "{:?}", text(&out));
    assert!(frozen_after_refusal, "a refused thaw thawed something");
    assert_eq!(thawed.status.code(), Some(0), "{:?}", text(&thawed));
    assert!(
        text(&thawed)
            .0
            .contains(&format!("{}: thawed", fs.mountpoint.display())),
        "{:?}",
        text(&thawed)
    );
    assert!(!is_frozen(&fs.mountpoint));
    let again = agent(&config)
        .args(["thaw", "--json", fs.mountpoint.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(json(&again)["filesystems"][0]["outcome"], "was-not-frozen");
}

/// `verify` on the machine that took the snapshot, in that boot, or `--image` on what is
/// mounted here, says it is live, not a restored copy (and not that the snapshot was read
/// after the thaw); a snapshot's folder names its images; an image from it is verified.
#[test]
fn verify_says_a_live_filesystem_is_not_a_restored_copy() {
    let fs = scratch_fs(Fs::Ext4);
    let config = local_image_config(&fs, "");
    let out = agent(&config)
        .args(["snapshot", "--json", "--name", "live-1"])
        .output()
        .unwrap();
    assert_eq!(json(&out)["status"], "succeeded", "{:?}", text(&out));
    let folder = fs.dir.path().join("images/live-1");
    let image = std::fs::read_dir(&folder)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "img"))
        .expect("the snapshot's image");

    let refused = |args: &[&str], expected: &str| {
        let out = agent(&config).args(args).output().unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("thaw_after") && !stdout.contains("thaw_after"),
            "{args:?}: {stdout}{stderr}"
        );
    };
    refused(
        &["verify", "--json"],
        &format!(
            "this is the machine that took snapshot live-1, still in the boot that took it (the markers on {}",
            fs.mountpoint.display()
        ),
    );
    let mounted = format!("is mounted at {}: a live filesystem", fs.mountpoint.display());
    refused(&["verify", "--image", &fs.device], &mounted);
    refused(&["verify", "--image", fs.image.to_str().unwrap()], &mounted);
    refused(
        &["verify", "--image", folder.to_str().unwrap()],
        &format!(
            "{} is a folder, not an image; it holds {}: give one of them, such as --image {}",
            folder.display(),
            image.file_name().unwrap().to_string_lossy(),
            image.display()
        ),
    );

    // The image itself is a copy: verified.
    let out = agent(&config)
        .args(["verify", "--json", "--image", image.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{:#}", json(&out));
    // A machine booted since (its boot id is new) is checked as a restored one.
    let booted = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "{NEW_BOOT}exec {} --config {} verify --json",
            agent_bin().display(),
            config.display()
        ))
        .output()
        .unwrap();
    assert_eq!(json(&booted)["probe"], "after-thaw", "{:?}", text(&booted));
}

/// A dry run runs preflight: a token the API refuses is said, with the exit code a snapshot
/// would end with; nothing is requested or frozen. With a good token it passes.
#[test]
fn a_dry_run_runs_preflight_and_says_what_would_fail() {
    let droplet = Droplet::new(Duration::from_millis(100), "");
    dry_runs_say_what_would_fail(&droplet, |args| droplet.agent().args(args).output().unwrap());
    assert!(
        !droplet.dir.path().join("run").exists(),
        "a dry run takes no lock and writes no state"
    );
}

/// `freezeframe snapshot --dry-run` asks the agent on its bus, which runs the same preflight
/// and answers as the agent's own dry run does.
#[test]
fn the_clis_dry_run_runs_the_agents_preflight_over_the_bus() {
    let member = crate::fleet::serve(Droplet::new(Duration::from_millis(100), ""));
    dry_runs_say_what_would_fail(&member.droplet, |args| {
        Command::new(cli_bin())
            .args(["--bus-address", &member.bus.address])
            .args(args)
            .output()
            .unwrap()
    });
}

/// `run` (a program with its arguments) dry-runs with a refused token, in text and as one JSON
/// document, then with `droplet`'s good token: exit 2 and what would fail, then 0; the API is
/// asked for the Droplet and for nothing else, and nothing is frozen.
fn dry_runs_say_what_would_fail(droplet: &Droplet, run: impl Fn(&[&str]) -> Output) {
    let token = droplet.dir.path().join("token");
    let good = std::fs::read(&token).unwrap();
    std::fs::write(&token, "dop_v1_revoked\n").unwrap();
    let out = run(&["snapshot", "--dry-run"]);
    let (stdout, stderr) = text(&out);
    // A token the API refuses is the configuration's to fix: 2, as a missing one.
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stdout.contains("Provider: digitalocean"),
        "the plan too: {stdout}"
    );
    assert!(
        stdout.contains("Preflight: a snapshot now would FAIL (exit 2): digitalocean provider: cannot read Droplet 3164444")
            && stdout.contains("HTTP 401"),
        "{stdout}"
    );
    let out = run(&["snapshot", "--dry-run", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let found = json(&out);
    assert_eq!(found["preflight"]["passed"], false, "{found:#}");
    assert_eq!(found["preflight"]["exit"], 2, "{found:#}");
    assert!(found["freeze_order"].is_array(), "the plan's fields: {found:#}");

    std::fs::write(&token, good).unwrap();
    let out = run(&["snapshot", "--dry-run"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("Preflight: passed"), "{stdout}");
    let calls = droplet.server.sim.counters().calls;
    assert!(calls.iter().any(|c| c == "GET /v2/droplets/3164444"), "{calls:?}");
    assert!(
        calls.iter().all(|c| !c.starts_with("POST")),
        "a dry run requests nothing: {calls:?}"
    );
    assert!(!is_frozen(&droplet.disk.mountpoint));
}

/// A 401 is a bad token, a 403 a missing scope, each said as such.
#[test]
fn a_refused_token_is_told_from_a_missing_scope() {
    let droplet = Droplet::new(Duration::from_millis(100), "");
    droplet
        .server
        .sim
        .set_faults(vec!["GET /v2/droplets/=401".parse::<Fault>().unwrap()]);
    let (out, report) = droplet.snapshot(&[]);
    assert_eq!(out.status.code(), Some(2), "a configuration error: {report:#}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("does not accept the token (HTTP 401")
            && error.contains("mistyped, expired or revoked")
            && error.contains("store a new token with `freezeframe-agent setup-token`"),
        "{error}"
    );
    assert!(!error.contains("lacks a scope"), "{error}");
    droplet
        .server
        .sim
        .set_faults(vec!["GET /v2/droplets/=403".parse::<Fault>().unwrap()]);
    let (_, report) = droplet.snapshot(&[]);
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("the token lacks a scope this needs (HTTP 403") && error.contains("droplet:read"),
        "{error}"
    );
    assert!(!error.contains("revoked"), "{error}");
}

/// The metadata service that answers an error is not said to be silent, and the fix is to
/// name the Droplet; one that does not answer is.
#[test]
fn the_metadata_service_is_said_to_answer_or_not_with_the_fix() {
    let droplet = Droplet::new(Duration::from_millis(100), "");
    droplet
        .server
        .sim
        .set_faults(vec!["GET /metadata/=403".parse::<Fault>().unwrap()]);
    let (_, report) = droplet.snapshot(&[]);
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("answered, but not with this Droplet's metadata (HTTP 403")
            && error.contains("set `digitalocean.droplet_id`"),
        "{error}"
    );
    assert!(!error.contains("did not answer"), "{error}");

    // Nothing listens at the address.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dropins = droplet.config.parent().unwrap().join("config.d");
    std::fs::create_dir_all(&dropins).unwrap();
    std::fs::write(
        dropins.join("50-metadata.toml"),
        format!("[digitalocean]\nmetadata_url = \"http://127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    droplet.server.sim.set_faults(Vec::new());
    let (_, report) = droplet.snapshot(&[]);
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("did not answer") && error.contains("set `digitalocean.droplet_id`"),
        "{error}"
    );
    assert!(!error.contains("HTTP"), "{error}");
}

/// A drop-in whose value is wrong is named with its line; a duration is explained in words
/// of ours, not the parser's.
#[test]
fn a_drop_in_that_breaks_the_configuration_is_named_with_its_line() {
    let fs = scratch_fs(Fs::Ext4);
    let config = local_image_config(&fs, "");
    let dropins = config.parent().unwrap().join("config.d");
    std::fs::create_dir_all(&dropins).unwrap();
    let dropin = dropins.join("50-keep.toml");
    for (written, expected, not) in [
        (
            "# keep more\n[history]\nkeep = 0\n",
            format!("invalid `history.keep` in {}, line 3:", dropin.display()),
            "in the configuration",
        ),
        (
            "[freeze]\nmax_freeze = \"ten seconds\"\n",
            "`ten seconds` is not a duration: write a number and its unit, like \"30s\", \"1500ms\" or \"2m\"".to_string(),
            "expected number",
        ),
    ] {
        std::fs::write(&dropin, written).unwrap();
        let out = agent(&config).arg("plan").output().unwrap();
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{written}: {stderr}");
        assert!(stderr.contains(&expected), "{written}: {stderr}");
        assert!(!stderr.contains(not), "{written}: {stderr}");
    }
    std::fs::remove_file(&dropin).unwrap();
    let out = agent(&config)
        .args(["verify", "--wait", "ten seconds"])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`ten seconds` is not a duration: write a number")
            && !stderr.contains("expected number"),
        "{stderr}"
    );
}

/// A local-image run says where its images went; its metrics are plain numbers, labelled
/// with the host name (there is no Droplet), as the documentation says.
#[test]
fn a_local_image_run_says_where_its_images_are_and_publishes_plain_numbers() {
    let fs = scratch_fs(Fs::Ext4);
    let textfiles = fs.dir.path().join("textfiles");
    std::fs::create_dir_all(&textfiles).unwrap();
    let config = local_image_config(&fs, "");
    // The test kit's [metrics] is off; this run's is on.
    let kit = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        kit.replace(
            "[metrics]\ntextfile_dir = \"\"\n",
            &format!(
                "[metrics]\ntextfile_dir = {:?}\n",
                textfiles.display().to_string()
            ),
        ),
    )
    .unwrap();
    let out = agent(&config)
        .args(["snapshot", "--json", "--name", "here-1"])
        .output()
        .unwrap();
    let report = json(&out);
    let folder = fs.dir.path().join("images/here-1");
    assert_eq!(report["location"], folder.display().to_string(), "{report:#}");
    let out = agent(&config)
        .args(["snapshot", "--name", "here-2"])
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains(&format!(
            "stored in {}",
            fs.dir.path().join("images/here-2").display()
        )),
        "{stdout}"
    );

    let metrics = std::fs::read_to_string(textfiles.join("freezeframe.prom")).unwrap();
    let host = run("hostname", &[]).trim().to_string();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            line.contains(&format!("{{droplet=\"{host}\"")),
            "the host names the series: {line}"
        );
        let value = line.rsplit(' ').next().unwrap();
        let decimals = value.split_once('.').map_or(0, |(_, f)| f.len());
        assert!(
            decimals <= 6 && !value.ends_with('0') || !value.contains('.'),
            "{line}"
        );
    }
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/src/metrics.md"))
        .unwrap();
    let docs = docs.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        docs.contains(
            "with `snapshot.provider = \"local-image\"`, which has no Droplet, or before any run \
             learned the id, this machine's host name"
        ),
        "docs/src/metrics.md says what `droplet` is under local-image"
    );
}
