//! The shipped programs' C library: the glibc symbol versions (`GLIBC_2.xx`) the binaries in the
//! built packages need, read with `objdump -T`, are all provided by the oldest release the
//! documentation names, and each package's `Depends` asks for exactly the newest of them
//! (`libc6 (>= 2.xx)`), so that dpkg refuses a machine too old rather than the program failing
//! to start there.

use super::debs;
use std::path::Path;
use std::process::Command;

/// The releases docs/src/installing.md names, with the glibc each ships.
const RELEASES: [(&str, (u32, u32)); 4] = [
    ("Debian 12", (2, 36)),
    ("Debian 13", (2, 41)),
    ("Ubuntu 22.04", (2, 35)),
    ("Ubuntu 24.04", (2, 39)),
];

/// A glibc version, `2.34` as (2, 34) (a third part, as in `GLIBC_2.2.5`, is dropped: no
/// release boundary falls inside one).
fn version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// The newest `GLIBC_x.y` version `binary` needs, as its dynamic symbols say.
fn needed_glibc(binary: &Path) -> (u32, u32) {
    let out = Command::new("objdump")
        .arg("-T")
        .arg(binary)
        .output()
        .expect("run objdump (binutils)");
    assert!(
        out.status.success(),
        "objdump -T {}: {}",
        binary.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|word| word.strip_prefix("GLIBC_").and_then(version))
        .max()
        .unwrap_or_else(|| panic!("{} names no glibc symbol version", binary.display()))
}

/// The lower bound the package's `Depends` puts on libc6, if it names one.
fn depends_on_libc(deb: &Path) -> Option<(u32, u32)> {
    let depends = super::run("dpkg-deb", &["-f", deb.to_str().unwrap(), "Depends"]);
    depends.split(',').find_map(|d| {
        let bound = d.trim().strip_prefix("libc6 (>= ")?.strip_suffix(')')?;
        version(bound)
    })
}

#[test]
#[ignore = "run by tests/e2e/run, which builds the packages first"]
fn the_binaries_need_no_newer_glibc_than_the_oldest_release_and_depends_says_which() {
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/src/installing.md"))
        .expect("read docs/src/installing.md");
    for (release, _) in RELEASES {
        assert!(docs.contains(release), "installing.md names {release}");
    }
    let (oldest, floor) = RELEASES.iter().min_by_key(|(_, v)| *v).unwrap();
    for deb in debs() {
        let tree = tempfile::tempdir().unwrap();
        super::run("dpkg-deb", &["-x", deb.to_str().unwrap(), tree.path().to_str().unwrap()]);
        let bin = tree.path().join("usr/bin");
        let needed = std::fs::read_dir(&bin)
            .unwrap_or_else(|e| panic!("{}: no usr/bin: {e}", deb.display()))
            .map(|e| needed_glibc(&e.unwrap().path()))
            .max()
            .unwrap_or_else(|| panic!("{}: no program in usr/bin", deb.display()));
        eprintln!("{}: needs glibc {}.{}", deb.display(), needed.0, needed.1);
        assert!(
            needed <= *floor,
            "{} needs glibc {}.{}, newer than {oldest}'s {}.{}",
            deb.display(),
            needed.0,
            needed.1,
            floor.0,
            floor.1
        );
        assert_eq!(
            depends_on_libc(&deb),
            Some(needed),
            "{}: Depends must ask for libc6 (>= {}.{}), the newest symbol version its programs use",
            deb.display(),
            needed.0,
            needed.1
        );
    }
}
