//! The databases in a restored image, found by what their data looks like (the image alone is
//! the evidence: no report or config of the machine it came from is needed), and what checking
//! each one found.

use super::inside::{Kind, Root};
use super::DatabaseKind;
use std::path::{Path, PathBuf};

/// How deep below the image's root data is looked for: `/var/lib/postgresql/15/main` is 5.
const SEARCH_DEPTH: usize = 6;

/// Every database's data in the image whose top is `root`, as paths from it; every path
/// resolved inside the image, never through a link (which points into the machine the image
/// came from, not into the tree being searched).
pub(crate) fn find(root: &Root) -> Vec<(DatabaseKind, PathBuf)> {
    let mut found = Vec::new();
    search(root, Path::new(""), SEARCH_DEPTH, &mut found);
    found
}

fn search(root: &Root, rel: &Path, depth: usize, found: &mut Vec<(DatabaseKind, PathBuf)>) {
    if let Some(kind) = data_directory_kind(root, rel) {
        found.push((kind, rel.to_path_buf()));
        return;
    }
    for (name, kind) in root.entries(rel) {
        if kind == Kind::Dir && depth > 0 && !SKIPPED.iter().any(|s| name == *s) {
            search(root, &rel.join(&name), depth - 1, found);
        } else if kind == Kind::File && is_rdb(root, &rel.join(&name)) {
            found.push((DatabaseKind::Redis, rel.join(&name)));
        }
    }
}

/// Folders that hold no database's data in any layout we know, and can be huge.
const SKIPPED: &[&str] = &["proc", "sys", "dev", "usr", "lost+found", "snap", "boot"];

fn data_directory_kind(root: &Root, dir: &Path) -> Option<DatabaseKind> {
    let is = |name: &str, kind| root.kind(&dir.join(name)) == Some(kind);
    if is("PG_VERSION", Kind::File) && is("global/pg_control", Kind::File) {
        Some(DatabaseKind::Postgresql)
    } else if is("mysql", Kind::Dir)
        && ["ibdata1", "ib_logfile0", "aria_log_control"]
            .iter()
            .any(|f| is(f, Kind::File))
    {
        Some(DatabaseKind::Mariadb)
    } else {
        None
    }
}

/// An RDB dump; not the base of an append-only file (`appendonly.aof.1.base.rdb`), which is
/// only part of the AOF that a server with `appendonly yes` restores from.
fn is_rdb(root: &Root, path: &Path) -> bool {
    use std::io::Read;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if !name.ends_with(".rdb") || name.contains(".aof.") {
        return false;
    }
    let mut magic = [0u8; 5];
    root.resolve(path, libc::O_RDONLY | libc::O_NONBLOCK)
        .map(std::fs::File::from)
        .is_ok_and(|mut f| f.metadata().is_ok_and(|m| m.is_file()) && f.read_exact(&mut magic).is_ok())
        && &magic == b"REDIS"
}
