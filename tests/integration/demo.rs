//! `freezeframe-demo`: the demo runs end to end and cleans up after itself, also when interrupted.

use freezeframe_tests::*;
use std::process::Command;

#[test]
fn the_demo_passes_and_leaves_nothing_behind() {
    require_root();
    let out = Command::new(demo_bin()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("fsck clean"), "{stdout}");
    assert!(
        stdout.contains("records acknowledged before the request are in it"),
        "{stdout}"
    );
    assert!(stdout.contains("verdict: PASS"), "{stdout}");
    // Its scratch mountpoint appears in the output; it must be gone from the mount table.
    let mountpoint = stdout
        .split("mounted at ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .expect("the demo names its mountpoint")
        .to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&mountpoint), "{mountpoint} is still mounted");
    assert!(
        !std::path::Path::new(&mountpoint).exists(),
        "its scratch folder was removed"
    );
}

#[test]
fn ctrl_c_during_the_demo_snapshot_stops_the_agent_and_removes_everything() {
    use std::io::{BufRead, BufReader};
    require_root();
    let mut demo = Command::new(demo_bin())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut mountpoint = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("mounted at ").nth(1) {
            mountpoint = rest.to_string();
        }
        if line.contains("[5/6]") {
            break;
        }
    }
    assert!(!mountpoint.is_empty(), "the demo names its mountpoint");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.id() as i32),
        nix::sys::signal::SIGINT,
    )
    .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = demo.wait().unwrap();
    assert!(!status.success(), "an interrupted demo does not pass: {rest:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&mountpoint), "{mountpoint} is still mounted");
    let scratch = std::path::Path::new(&mountpoint).parent().unwrap();
    assert!(!scratch.exists(), "its scratch folder was removed");
    // No agent or bus of the demo's is left running.
    let leftovers: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&*scratch.to_string_lossy()))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn completions_and_man_pages_come_from_the_command_line_definitions() {
    let out = Command::new(cli_bin())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(script.contains("freezeframe") && script.contains("--host") && script.contains("snapshot"));
    let dir = scratch();
    let out = Command::new(cli_bin())
        .arg("man")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = std::fs::read_to_string(dir.path().join("freezeframe.1")).unwrap();
    assert!(
        page.contains(".TH freezeframe") && page.contains("systemctl \\-H"),
        "{page}"
    );
    let page = std::fs::read_to_string(dir.path().join("freezeframe-snapshot.1")).unwrap();
    assert!(page.contains("\\-\\-wait"), "{page}");
    // Every page: the global options, and the sections clap does not write.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let page = std::fs::read_to_string(&path).unwrap();
        for needed in [
            ".SH \"EXIT STATUS\"",
            ".SH ENVIRONMENT",
            ".SH FILES",
            ".SH \"SEE ALSO\"",
            "\\-\\-json",
        ] {
            assert!(page.contains(needed), "{}: no {needed}", path.display());
        }
        assert!(
            !page.contains("freezeframe\\-help(1)"),
            "{}: names a page that is not made",
            path.display()
        );
    }
    assert!(!dir.path().join("freezeframe-help.1").exists());
    let page = std::fs::read_to_string(dir.path().join("freezeframe-thaw.1")).unwrap();
    assert!(page.contains(".SH EXAMPLES") && page.contains("\\-H"), "{page}");
    let out = Command::new(cli_bin())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown shell is a usage error");
}

#[test]
fn every_wrong_shape_of_arguments_is_a_usage_error_that_reaches_no_machine() {
    let dir = scratch();
    // An ssh that records being called: no case may get that far.
    let called = dir.path().join("ssh-called");
    let ssh = dir.path().join("ssh");
    std::fs::write(&ssh, format!("#!/bin/sh\ntouch {}\nexit 255\n", called.display())).unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (&[], "Usage: freezeframe"),
        (&["snapshot", "--bogus"], "unexpected argument '--bogus'"),
        (&["list", "extra"], "unexpected argument 'extra'"),
        (&["status", "--json", "--json"], "cannot be used multiple times"),
        (&["-H"], "a value is required for '--host"),
        (&["-H", "db1:notaport", "status"], "the port is not 1-65535"),
        (&["-H", "db1:70000", "status"], "the port is not 1-65535"),
        (
            &["-H", "-oProxyCommand=evil", "status"],
            "unexpected argument '-o'",
        ),
        (
            &["--parallel", "0", "-H", "a", "-H", "b", "status"],
            "0 is not in 1..=256",
        ),
        (
            &["--parallel", "many", "status"],
            "invalid value 'many' for '--parallel",
        ),
        (&["--parallel", "257", "status"], "257 is not in 1..=256"),
        (
            &["-H", "a", "--bus-address", "unix:path=/x", "status"],
            "cannot be used with",
        ),
        (
            &["--bus-address", "bogus", "status"],
            "`bogus` is not a D-Bus address",
        ),
        (
            &["--ssh-command=", "-H", "a", "status"],
            "a value is required for '--ssh-command",
        ),
        (&["prune"], "--keep <N>"),
        (&["prune", "--keep", "0"], "0 is not in 1.."),
        (&["prune", "--keep", "-1"], "unexpected argument '-1'"),
        (&["prune", "--keep", "lots"], "invalid value 'lots'"),
        (&["completions"], "<SHELL>"),
        (&["completions", "tcsh"], "invalid value 'tcsh'"),
        (
            &["-H", "a", "-H", "b", "doctor"],
            "doctor checks one machine at a time",
        ),
        (
            &["-H", "a", "thaw", "--runtime-dir", "/run/freezeframe"],
            "--runtime-dir /run/freezeframe names a directory on this machine",
        ),
    ];
    for (args, expected) in cases {
        let mut cli = Command::new(cli_bin());
        if !args.iter().any(|a| a.starts_with("--ssh-command")) {
            cli.args(["--ssh-command", ssh.to_str().unwrap()]);
        }
        let out = cli.args(*args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in {stderr}"
        );
    }
    assert!(!called.exists(), "a malformed command reached for ssh");
}

/// Runs `cmd` with a standard output whose reader is already gone (`… | head` after `head`
/// exited): every write fails with EPIPE.
fn with_stdout_closed(mut cmd: Command) -> std::process::Output {
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    cmd.stdout(std::process::Stdio::from(writer))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn a_reader_that_went_away_ends_the_output_quietly() {
    let fs = scratch_fs(Fs::Ext4);
    let config = local_image_config(&fs, "");
    let mut completions = Command::new(cli_bin());
    completions.args(["completions", "bash"]);
    let mut plan = Command::new(agent_bin());
    plan.arg("--config").arg(&config).arg("plan");
    let mut thaw = Command::new(agent_bin());
    thaw.arg("--config").arg(&config).arg("thaw");
    for (what, cmd) in [("completions", completions), ("plan", plan), ("thaw", thaw)] {
        let out = with_stdout_closed(cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
}

#[test]
fn setup_token_with_nothing_to_store_is_a_usage_error_and_writes_nothing() {
    let dir = scratch();
    let token = dir.path().join("token");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[snapshot]\nprovider = \"digitalocean\"\n[digitalocean]\ntoken_file = {:?}\n",
            token.display().to_string()
        ),
    )
    .unwrap();
    for (input, expected) in [("", "no token read"), ("two words\n", "holds spaces")] {
        let mut child = Command::new(agent_bin())
            .arg("--config")
            .arg(&config)
            .arg("setup-token")
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{input:?}: {stderr}");
        assert!(stderr.contains(expected), "{input:?}: {stderr}");
        assert!(!token.exists(), "nothing was written");
    }
}
