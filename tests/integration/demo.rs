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
