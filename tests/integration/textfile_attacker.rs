//! Files root writes into a folder another user owns: node_exporter's textfile folder belongs
//! to its user (here uid 65534, mode 0755). That user plants links at every name the metrics
//! writer could be expected to use; the run must write its metrics file, a file of root's
//! with its own mode, and leave root's canary as it was.

use freezeframe_tests::attacker::{nobody_dir, nobody_sh, Canary};
use freezeframe_tests::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};

#[test]
fn links_planted_in_the_textfile_folder_are_replaced_never_followed() {
    let fs = scratch_fs(Fs::Ext4);
    let textfiles = fs.dir.path().join("textfile");
    nobody_dir(&textfiles, 0o755);
    let canary = Canary::new(fs.dir.path());
    let config = local_image_config(&fs, "");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        "textfile_dir = \"\"",
        &format!("textfile_dir = {:?}", textfiles.display().to_string()),
    );
    std::fs::write(&config, text).unwrap();

    // The agent, stopped before it starts: its pid (which named the old writer's temporary
    // file) is known before it writes anything.
    let agent = Command::new("sh")
        .args(["-c", "kill -STOP $$; exec \"$0\" \"$@\""])
        .arg(agent_bin())
        .arg("--config")
        .arg(&config)
        .args(["snapshot", "--json", "--name", "metrics-1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = agent.id();
    wait_stopped(pid);
    let names = [
        "freezeframe.prom".to_string(),
        format!(".freezeframe.prom.{pid}.partial"),
        "freezeframe.prom.partial".into(),
        ".freezeframe.prom.partial".into(),
        "freezeframe.prom.tmp".into(),
        ".freezeframe.prom.tmp".into(),
    ];
    for name in &names {
        nobody_sh(&format!(
            "ln -s {} {}/{name}",
            canary.path.display(),
            textfiles.display()
        ));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    let out = agent.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    canary.assert_untouched("a run writing metrics into a folder of uid 65534's");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {said}"));
    assert_eq!(report["status"], "succeeded", "{said}");
    let file = textfiles.join("freezeframe.prom");
    let meta = std::fs::symlink_metadata(&file).unwrap();
    assert!(meta.is_file(), "the planted link was replaced by a file: {said}");
    assert_eq!((meta.uid(), meta.permissions().mode() & 0o7777), (0, 0o644));
    let metrics = std::fs::read_to_string(&file).unwrap();
    assert!(
        metrics.contains("freezeframe_runs_total{") || metrics.contains("# TYPE freezeframe_"),
        "{metrics}"
    );
    // Nothing of root's is left beside it: the planted links (the attacker's own) and the file.
    let mut left: Vec<String> = std::fs::read_dir(&textfiles)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "freezeframe.prom" && !names.contains(n))
        .collect();
    left.sort();
    assert!(left.is_empty(), "left in the textfile folder: {left:?}");
}

/// Waits until process `pid` is stopped (state `T` in /proc/PID/stat).
fn wait_stopped(pid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        if state == "T" {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pid} never stopped: {stat}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
