//! The shipped programs' C library: the glibc symbol versions (`GLIBC_2.xx`) the binaries in the
//! built packages need, read with `objdump -T`, are all provided by the oldest release
//! docs/src/installing.md names (its table of releases, with the glibc of each), and each
//! package's `Depends` asks for exactly the newest of them (`libc6 (>= 2.xx)`, as that page
//! says), so that dpkg refuses a machine too old rather than the program failing to start there.

use super::debs;
use std::path::Path;
use std::process::Command;

/// The releases docs/src/installing.md's table names, each with the glibc it ships, as the
/// table says it (its `glibc` column).
fn releases_named(docs: &str) -> Vec<(String, (u32, u32))> {
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let header = docs
        .lines()
        .find(|l| l.starts_with("| Release |"))
        .expect("installing.md has a table of releases (| Release | … | glibc | …)");
    let column = cells(header)
        .iter()
        .position(|c| c == "glibc")
        .expect("the table of releases has a glibc column");
    let releases: Vec<(String, (u32, u32))> = docs
        .lines()
        .filter(|l| l.starts_with("| Debian ") || l.starts_with("| Ubuntu "))
        .map(|l| {
            let row = cells(l);
            let glibc = version(&row[column]).unwrap_or_else(|| panic!("no glibc version in {l:?}"));
            (row[0].clone(), glibc)
        })
        .collect();
    for named in ["Debian 12", "Debian 13", "Ubuntu 22.04", "Ubuntu 24.04"] {
        assert!(
            releases.iter().any(|(r, _)| r.starts_with(named)),
            "installing.md's table names {named}: {releases:?}"
        );
    }
    releases
}

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
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/src/installing.md"))
            .expect("read docs/src/installing.md");
    let releases = releases_named(&docs);
    let (oldest, floor) = releases.iter().min_by_key(|(_, v)| *v).unwrap();
    for deb in debs() {
        let tree = tempfile::tempdir().unwrap();
        super::run(
            "dpkg-deb",
            &["-x", deb.to_str().unwrap(), tree.path().to_str().unwrap()],
        );
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
        assert!(
            docs.contains(&format!("`libc6 (>= {}.{})`", needed.0, needed.1)),
            "installing.md says what Depends asks for: libc6 (>= {}.{})",
            needed.0,
            needed.1
        );
    }
}
