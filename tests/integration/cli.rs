//! The `freezeframe` binary: the demo runs end to end and cleans up after itself.

use freezeframe_tests::*;
use std::process::Command;

#[test]
fn the_demo_passes_and_leaves_nothing_behind() {
    require_root();
    let out = Command::new(cli_bin()).arg("demo").output().unwrap();
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
