//! Parsing `/proc/self/mountinfo` (proc(5)): one mount per line, pure and unit-tested.

use crate::transaction::ports::DevNum;
use std::path::PathBuf;

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Unique id of the mount (also `mnt_id` in `/proc/self/fdinfo`).
    pub mount_id: u64,
    /// The id of the mount this one is mounted on.
    pub parent_id: u64,
    /// `st_dev` of files on this filesystem (for btrfs, of the filesystem, not of a subvolume).
    pub dev: DevNum,
    /// The path inside the filesystem that is mounted here (`/` for the whole filesystem).
    pub root: PathBuf,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// Per-mount options (`ro`/`rw` here is the mount's, not the filesystem's).
    pub mount_options: String,
    /// The filesystem type, such as `ext4`.
    pub fstype: String,
    /// The mount source: a device path for block filesystems, anything for others.
    pub source: String,
    /// Per-superblock options: `ro` here means the filesystem itself is read-only.
    pub super_options: String,
}

impl Mount {
    /// Whether the filesystem (the superblock, not this mount) is read-only.
    pub(crate) fn superblock_read_only(&self) -> bool {
        self.super_options.split(',').any(|o| o == "ro")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot parse line {line} of mountinfo: {problem}: {text:?}")]
/// A mountinfo line that could not be read.
pub struct ParseError {
    /// Its number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub problem: &'static str,
    /// The line itself.
    pub text: String,
}

/// Parses the whole text of a mountinfo file.
pub fn parse(text: &str) -> Result<Vec<Mount>, ParseError> {
    let mut seen = std::collections::HashSet::new();
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let error = |problem| ParseError {
                line: i + 1,
                problem,
                text: l.to_string(),
            };
            let mount = parse_line(l).map_err(error)?;
            // The kernel never lists a mount id twice; a table that does cannot be trusted.
            if !seen.insert(mount.mount_id) {
                return Err(error("the mount id is listed twice"));
            }
            Ok(mount)
        })
        .collect()
}

fn parse_line(line: &str) -> Result<Mount, &'static str> {
    // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    let (head, tail) = line.split_once(" - ").ok_or("no ` - ` separator")?;
    let mut fields = head.split(' ');
    let mut next = |what| fields.next().ok_or(what);
    let mount_id = next("no mount id")?.parse().map_err(|_| "bad mount id")?;
    let parent_id = next("no parent id")?.parse().map_err(|_| "bad parent id")?;
    let (major, minor) = next("no device")?.split_once(':').ok_or("bad device")?;
    let dev = DevNum {
        major: major.parse().map_err(|_| "bad major")?,
        minor: minor.parse().map_err(|_| "bad minor")?,
    };
    let root = unescape(next("no root")?).into();
    let mountpoint: PathBuf = unescape(next("no mountpoint")?).into();
    // The kernel writes absolute paths; anything else is not a mountinfo line.
    if !mountpoint.is_absolute() {
        return Err("the mountpoint is not an absolute path");
    }
    let mount_options = next("no mount options")?.to_string();
    let mut tail = tail.split(' ');
    let fstype = tail
        .next()
        .filter(|t| !t.is_empty())
        .ok_or("no filesystem type")?
        .to_string();
    let source = unescape(tail.next().ok_or("no source")?);
    let super_options = tail.next().unwrap_or("").to_string();
    Ok(Mount {
        mount_id,
        parent_id,
        dev,
        root,
        mountpoint,
        mount_options,
        fstype,
        source,
        super_options,
    })
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\011`, `\012`, `\134`). A
/// backslash followed by anything else, or by an octal number past one byte (`\777`, which the
/// kernel never writes), stays as it is.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u16, |n, c| n * 8 + u16::from(c - b'0')))
            .and_then(|n| u8::try_from(n).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_decode_and_impossible_ones_stay_literal() {
        assert_eq!(unescape(r"/mnt/a\040b\134c"), "/mnt/a b\\c");
        // Found by fuzzing: `\777` is past a byte (it overflowed before).
        assert_eq!(unescape(r"/x\777y"), r"/x\777y");
        assert_eq!(unescape(r"/x\7"), r"/x\7");
    }

    #[test]
    fn parses_the_proc5_example() {
        let m = parse("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n")
            .unwrap();
        assert_eq!(
            m,
            vec![Mount {
                mount_id: 36,
                parent_id: 35,
                dev: DevNum { major: 98, minor: 0 },
                root: "/mnt1".into(),
                mountpoint: "/mnt2".into(),
                mount_options: "rw,noatime".into(),
                fstype: "ext3".into(),
                source: "/dev/root".into(),
                super_options: "rw,errors=continue".into(),
            }]
        );
    }

    #[test]
    fn handles_no_optional_fields_and_several() {
        let m = parse(
            "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
             25 1 7:3 / /data ro shared:5 master:2 propagate_from:1 - xfs /dev/loop3 rw,attr2\n",
        )
        .unwrap();
        assert_eq!(m[0].fstype, "proc");
        assert_eq!(m[1].mountpoint, PathBuf::from("/data"));
        assert_eq!(m[1].dev, DevNum { major: 7, minor: 3 });
        assert_eq!(m[1].mount_options, "ro");
        assert!(!m[1].superblock_read_only(), "a ro mount of a rw superblock");
    }

    #[test]
    fn unescapes_spaces_and_backslashes() {
        let m = parse("30 1 8:1 / /mnt/my\\040disk\\134x rw - ext4 /dev/sda1 ro\n").unwrap();
        assert_eq!(m[0].mountpoint, PathBuf::from("/mnt/my disk\\x"));
        assert!(m[0].superblock_read_only());
        assert_eq!(unescape("a\\04"), "a\\04", "a short escape is left alone");
    }

    #[test]
    fn reports_the_bad_line() {
        let err = parse("22 1 0:21 / /proc rw - proc proc rw\ngarbage\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.to_string().contains("garbage"));
    }

    #[test]
    fn parses_this_machine() {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mounts = parse(&text).unwrap();
        assert!(mounts.iter().any(|m| m.mountpoint == std::path::Path::new("/")));
    }
}
