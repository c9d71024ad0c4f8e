use super::*;
use crate::kernel::mountinfo::parse;
use std::collections::HashMap;

/// A host where loop devices and file devices are given by the test.
#[derive(Default)]
struct FakeHost {
    /// source device → backing file
    backing: HashMap<String, PathBuf>,
    /// path prefix → device of files under it
    devices: Vec<(PathBuf, DevNum)>,
}

impl HostLookup for FakeHost {
    fn loop_backing_file(&self, mount: &Mount) -> Option<PathBuf> {
        self.backing.get(&mount.source).cloned()
    }
    fn device_of(&self, path: &Path) -> Option<DevNum> {
        self.devices
            .iter()
            .filter(|(p, _)| path.starts_with(p))
            .max_by_key(|(p, _)| p.components().count())
            .map(|(_, d)| *d)
    }
}

const MACHINE: &str = "\
21 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw
22 21 0:21 / /proc rw - proc proc rw
23 21 0:22 / /sys rw - sysfs sysfs rw
24 21 0:5 / /dev rw - devtmpfs udev rw
25 21 0:23 / /run rw - tmpfs tmpfs rw
26 21 254:2 / /boot/efi rw - vfat /dev/vda2 rw
27 21 7:0 / /snap/core/1 ro - squashfs /dev/loop0 ro
28 21 0:40 / /home/u/.cache/doc rw - fuse.portal portal rw
29 21 0:41 / /mnt/nfs rw - nfs4 srv:/export rw
30 21 0:42 / /var/lib/docker/overlay2/x/merged rw - overlay overlay rw
31 21 254:16 / /data rw - xfs /dev/sda rw
32 21 254:16 /www /var/www ro - xfs /dev/sda rw
33 21 254:32 / /archive ro - ext4 /dev/sdb ro
";

fn discover(text: &str, exclude: &[PathBuf], host: &FakeHost) -> Result<Plan, PlanError> {
    plan(
        &parse(text).unwrap(),
        Selection {
            mountpoints: None,
            exclude,
        },
        host,
    )
}

fn mountpoints(plan: &Plan) -> Vec<&str> {
    plan.targets
        .iter()
        .map(|t| t.mountpoint.to_str().unwrap())
        .collect()
}

fn reason_of<'a>(plan: &'a Plan, mp: &str) -> &'a SkipReason {
    &plan
        .skipped
        .iter()
        .find(|s| s.mountpoint == Path::new(mp))
        .unwrap_or_else(|| panic!("{mp} not skipped"))
        .reason
}

#[test]
fn discovery_freezes_local_disks_root_last_and_says_why_it_skips() {
    let p = discover(MACHINE, &[], &FakeHost::default()).unwrap();
    assert_eq!(mountpoints(&p), ["/boot/efi", "/data", "/"]);
    assert_eq!(reason_of(&p, "/proc"), &SkipReason::Pseudo);
    assert_eq!(reason_of(&p, "/run"), &SkipReason::MemoryBacked);
    assert_eq!(reason_of(&p, "/snap/core/1"), &SkipReason::ReadOnly);
    assert_eq!(reason_of(&p, "/home/u/.cache/doc"), &SkipReason::Fuse);
    assert_eq!(reason_of(&p, "/mnt/nfs"), &SkipReason::Network);
    assert_eq!(
        reason_of(&p, "/var/lib/docker/overlay2/x/merged"),
        &SkipReason::Overlay
    );
    assert_eq!(reason_of(&p, "/archive"), &SkipReason::ReadOnly);
    // The bind mount is read-only, its superblock is not: frozen through /data, once.
    assert_eq!(
        reason_of(&p, "/var/www"),
        &SkipReason::SameFilesystemAs("/data".into())
    );
    assert_eq!(p.targets[1].also_mounted_at, vec![PathBuf::from("/var/www")]);
    assert_eq!(p.targets[1].mount_id, 31);
}

#[test]
fn a_read_only_bind_of_root_still_freezes_root() {
    // What a hardened systemd service sees: / through a read-only bind mount.
    let p = discover(
        "40 1 254:1 / / ro,relatime - ext4 /dev/vda1 rw\n",
        &[],
        &FakeHost::default(),
    )
    .unwrap();
    assert_eq!(mountpoints(&p), ["/"]);
}

#[test]
fn exclusion_covers_every_mount_of_the_filesystem() {
    let p = discover(MACHINE, &["/var/www".into()], &FakeHost::default()).unwrap();
    assert_eq!(mountpoints(&p), ["/boot/efi", "/"]);
    assert_eq!(reason_of(&p, "/data"), &SkipReason::Excluded);
}

#[test]
fn btrfs_subvolumes_are_one_filesystem() {
    let text = "\
21 1 0:30 /@ / rw - btrfs /dev/vda1 rw,subvol=/@
22 21 0:30 /@home /home rw - btrfs /dev/vda1 rw,subvol=/@home
23 21 0:31 / /mnt/b rw - btrfs /dev/loop4 rw
";
    let p = discover(text, &[], &FakeHost::default()).unwrap();
    assert_eq!(mountpoints(&p), ["/mnt/b", "/"]);
    assert_eq!(reason_of(&p, "/home"), &SkipReason::SameFilesystemAs("/".into()));
}

#[test]
fn a_path_mounted_over_is_reached_through_the_top_mount() {
    let text = "\
21 1 254:1 / / rw - ext4 /dev/vda1 rw
22 21 7:1 / /mnt rw - ext4 /dev/loop1 rw
23 21 7:2 / /mnt rw - xfs /dev/loop2 rw
";
    let p = discover(text, &[], &FakeHost::default()).unwrap();
    assert_eq!(p.targets[0].source, "/dev/loop2");
    assert_eq!(p.skipped[0].reason, SkipReason::Hidden);
}

#[test]
fn a_pseudo_filesystem_mounted_twice_is_listed_once() {
    let text = "\
21 1 254:1 / / rw - ext4 /dev/vda1 rw
22 21 0:25 / /dev/shm rw - tmpfs shm rw
23 21 0:26 / /dev/pts rw - devpts devpts rw
24 21 0:27 / /dev/pts rw - devpts devpts rw
25 21 0:28 / /dev/shm rw - tmpfs tmpfs rw
";
    let p = discover(text, &[], &FakeHost::default()).unwrap();
    let listed: Vec<&str> = p.skipped.iter().map(|s| s.mountpoint.to_str().unwrap()).collect();
    assert_eq!(listed, ["/dev/pts", "/dev/shm"], "{:?}", p.skipped);
    assert_eq!(reason_of(&p, "/dev/shm"), &SkipReason::MemoryBacked);
}

#[test]
fn a_loop_filesystem_freezes_before_the_one_holding_its_image_whatever_the_paths() {
    // /a/b/c/outer is deeper, so path order alone would freeze it first and deadlock.
    let text = "\
21 1 254:1 / / rw - ext4 /dev/vda1 rw
22 21 7:1 / /a/b/c/outer rw - ext4 /dev/loop1 rw
23 21 7:2 / /inner rw - xfs /dev/loop2 rw
";
    let mut host = FakeHost::default();
    host.backing
        .insert("/dev/loop2".into(), "/a/b/c/outer/inner.img".into());
    host.backing
        .insert("/dev/loop1".into(), "/var/tmp/outer.img".into());
    host.devices.push(("/".into(), DevNum { major: 254, minor: 1 }));
    host.devices
        .push(("/a/b/c/outer".into(), DevNum { major: 7, minor: 1 }));
    let p = discover(text, &[], &host).unwrap();
    assert_eq!(mountpoints(&p), ["/inner", "/a/b/c/outer", "/"]);
}

#[test]
fn a_backing_file_is_found_by_path_when_its_device_is_unknown() {
    let text = "\
21 1 254:1 / / rw - ext4 /dev/vda1 rw
22 21 7:1 / /x/y/outer rw - ext4 /dev/loop1 rw
23 21 7:2 / /inner rw - xfs /dev/loop2 rw
";
    let mut host = FakeHost::default();
    host.backing.insert("/dev/loop2".into(), "/x/y/outer/img".into());
    let p = discover(text, &[], &host).unwrap();
    assert_eq!(mountpoints(&p), ["/inner", "/x/y/outer", "/"]);
}

#[test]
fn explicit_mountpoints_are_checked_and_ordered() {
    let mounts = parse(MACHINE).unwrap();
    let host = FakeHost::default();
    let wanted = [
        PathBuf::from("/"),
        PathBuf::from("/data"),
        PathBuf::from("/var/www"),
    ];
    let p = plan(
        &mounts,
        Selection {
            mountpoints: Some(&wanted),
            exclude: &[],
        },
        &host,
    )
    .unwrap();
    assert_eq!(mountpoints(&p), ["/data", "/"]);
    assert_eq!(
        p.skipped.len(),
        1,
        "only the duplicate is reported: {:?}",
        p.skipped
    );
    assert_eq!(
        reason_of(&p, "/var/www"),
        &SkipReason::SameFilesystemAs("/data".into())
    );

    let err = plan(
        &mounts,
        Selection {
            mountpoints: Some(&["/data/db".into()]),
            exclude: &[],
        },
        &host,
    )
    .unwrap_err();
    assert_eq!(
        err,
        PlanError::NotAMountpoint {
            path: "/data/db".into(),
            within: "/data".into()
        }
    );
    assert!(err.to_string().contains("inside /data"));

    let err = plan(
        &mounts,
        Selection {
            mountpoints: Some(&["/run".into()]),
            exclude: &[],
        },
        &host,
    )
    .unwrap_err();
    assert_eq!(
        err,
        PlanError::Ineligible {
            path: "/run".into(),
            reason: SkipReason::MemoryBacked
        }
    );
}

#[test]
fn a_cycle_is_an_error_not_a_hang() {
    let text = "\
21 1 7:1 / /a rw - ext4 /dev/loop1 rw
22 1 7:2 / /b rw - ext4 /dev/loop2 rw
";
    let mut host = FakeHost::default();
    host.backing.insert("/dev/loop1".into(), "/b/a.img".into());
    host.backing.insert("/dev/loop2".into(), "/a/b.img".into());
    assert!(matches!(discover(text, &[], &host), Err(PlanError::Cycle(_))));
}

#[test]
fn a_skip_reason_reads_well_in_json() {
    let json = serde_json::to_string(&Skipped {
        mountpoint: "/run".into(),
        fstype: "tmpfs".into(),
        reason: SkipReason::MemoryBacked,
    })
    .unwrap();
    assert!(json.contains("\"reason\":\"memory-backed"), "{json}");
}

#[test]
fn one_device_under_two_filesystem_types_is_refused() {
    // Found by fuzzing: a table no kernel writes, where freezing both would freeze twice.
    let mounts =
        parse("28 27 4:25 / /a rw - btrfs /dev/vdb rw\n30 27 4:25 / /b rw - ext4 /dev/vdc rw\n").unwrap();
    let err = plan(
        &mounts,
        Selection {
            mountpoints: None,
            exclude: &[],
        },
        &FakeHost::default(),
    )
    .unwrap_err();
    assert!(matches!(err, PlanError::Inconsistent { .. }), "{err}");
    let repeated = parse("28 27 8:1 / / rw - ext4 /dev/vda rw\n28 27 8:2 / /b rw - ext4 /dev/vdb rw\n");
    assert!(repeated.unwrap_err().problem.contains("listed twice"));
}
