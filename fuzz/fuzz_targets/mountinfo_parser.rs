//! The mountinfo parser on arbitrary text, then the planner on what it accepted (with a host
//! that has no loop devices): errors are fine, panics and cycles that hang are not.
#![no_main]

use freezeframe_agent::kernel::mountinfo::{self, Mount};
use freezeframe_agent::transaction::ports::DevNum;
use freezeframe_agent::freeze::plan::{plan, HostLookup, Selection};
use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};

/// A host where nothing is a loop device and paths have no device.
struct NoHost;

impl HostLookup for NoHost {
    fn loop_backing_file(&self, _mount: &Mount) -> Option<PathBuf> {
        None
    }
    fn device_of(&self, _path: &Path) -> Option<DevNum> {
        None
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mounts) = mountinfo::parse(text) else {
        return;
    };
    if let Ok(planned) = plan(
        &mounts,
        Selection {
            mountpoints: None,
            exclude: &[],
        },
        &NoHost,
    ) {
        // Every target is one of the parsed mounts, and no superblock is frozen twice.
        let mut devs: Vec<_> = planned.targets.iter().map(|t| t.dev).collect();
        let before = devs.len();
        devs.sort();
        devs.dedup();
        assert_eq!(devs.len(), before, "a superblock planned twice");
    }
});
