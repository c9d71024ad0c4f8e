//! The `freezeframe` binary as users run it: completions and man pages, usage errors that reach
//! no machine, a closed stdout, `setup-token` with nothing to store.

use freezeframe_tests::*;
use std::process::Command;

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
        (
            &["prune"],
            "Usage: freezeframe prune <--keep <N>|--keep-groups <N>>",
        ),
        (
            &["prune", "--keep", "1", "--keep-groups", "1"],
            "cannot be used with",
        ),
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
