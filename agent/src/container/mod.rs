//! Container engines (Docker, and Podman's Docker-compatible API) as the agent sees them: the
//! running containers, their processes, and commands run inside them. Everything an engine
//! reports about a container is the container's to choose (its name, labels, environment, the
//! names of its processes), so it is validated and bounded here, and nothing here ever opens a
//! path inside a container's root: databases are reached only through commands the engine runs
//! inside the container.

mod docker;

pub(crate) use docker::Docker;

use crate::secret::Secret;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The most labels, processes and mounts kept of one container, and the longest text.
const MAX_ITEMS: usize = 256;
const MAX_TEXT: usize = 256;
/// The most output kept of one command run in a container.
pub(crate) const MAX_OUTPUT: usize = 1 << 20;

/// Why an engine could not be asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    #[error("cannot reach the container engine at {}: {problem}", socket.display())]
    Unreachable { socket: PathBuf, problem: String },
    #[error("the container engine at {} refused {what}: {problem}", socket.display())]
    Refused {
        socket: PathBuf,
        what: String,
        problem: String,
    },
}

/// A running container, as validated from what the engine said.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Container {
    /// The engine's id (hex).
    pub id: String,
    /// Its name, printable and bounded; the id's start when it has no valid one.
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// Its main process, as this machine's /proc numbers it.
    pub main_pid: u32,
    /// Its processes (the main one included), host pids.
    pub pids: Vec<u32>,
    /// What the container's environment gives as the database's root password (MariaDB's
    /// and MySQL's official images), never printed.
    pub root_password: Option<Secret>,
    /// Its mounts: where each is inside the container, and what backs it on this machine.
    pub mounts: Vec<Mount>,
}

/// One mount of a container.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mount {
    pub destination: PathBuf,
    /// On this machine (a volume's `_data` folder or a bind mount's source); the engine's word,
    /// not the container's.
    pub source: PathBuf,
}

/// A command to run in a container.
#[derive(Debug, Clone, Default)]
pub(crate) struct Exec {
    /// As whom: a uid (the database's own) or a name the container's accounts know.
    pub user: String,
    pub cmd: Vec<String>,
    /// Variables set for it, secret (a password in `MYSQL_PWD`).
    pub env: Vec<(String, Secret)>,
}

/// How a command run in a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecOutput {
    pub exit_code: Option<i64>,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    pub(crate) fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// A command left running in a container with its input and output attached: a session held
/// across the freeze. Dropping it closes its input, which ends the command.
#[async_trait::async_trait]
pub(crate) trait Session: Send {
    async fn write(&mut self, text: &str) -> std::io::Result<()>;
    /// Its next line of output; None once it ended. What it wrote on stderr is kept aside.
    async fn read_line(&mut self) -> std::io::Result<Option<String>>;
    /// What it wrote on stderr so far.
    fn stderr(&self) -> String;
}

/// A container engine.
#[async_trait::async_trait]
pub(crate) trait Engine: Send + Sync {
    /// The running containers.
    async fn running(&self) -> Result<Vec<Container>, EngineError>;
    /// Runs a command in a container and waits for it.
    async fn exec(&self, id: &str, exec: &Exec) -> Result<ExecOutput, EngineError>;
    /// Starts a command in a container with its input and output attached.
    async fn session(&self, id: &str, exec: &Exec) -> Result<Box<dyn Session>, EngineError>;
}

/// `text` made safe to print: control characters replaced, at most `MAX_TEXT` characters.
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .take(MAX_TEXT)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A container name as engines make them (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`, bounded); None for
/// anything else.
pub(crate) fn valid_name(name: &str) -> Option<String> {
    let name = name.strip_prefix('/').unwrap_or(name);
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    ok.then(|| name.to_string())
}

/// An engine's container id: 12 to 64 hex digits.
pub(crate) fn valid_id(id: &str) -> Option<String> {
    ((12..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| id.to_ascii_lowercase())
}

/// Labels kept: at most `MAX_ITEMS`, each key and value printable and bounded; others dropped.
pub(crate) fn valid_labels(labels: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    labels
        .into_iter()
        .filter(|(k, v)| {
            k.len() <= MAX_TEXT && v.len() <= MAX_TEXT && !k.chars().chain(v.chars()).any(char::is_control)
        })
        .take(MAX_ITEMS)
        .collect()
}

/// The root password from a container's environment (`NAME=value` entries): the official
/// MariaDB and MySQL images' variables, in their order of precedence.
pub(crate) fn root_password<'a>(env: impl IntoIterator<Item = &'a str>) -> Option<Secret> {
    let env: Vec<&str> = env.into_iter().take(4096).collect();
    ["MARIADB_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD"]
        .iter()
        .find_map(|name| {
            env.iter().find_map(|entry| {
                let value = entry.strip_prefix(name)?.strip_prefix('=')?;
                // A value that could not be passed back in an environment is not used.
                (!value.is_empty() && value.len() <= 1024 && !value.contains('\0'))
                    .then(|| Secret::new(value))
            })
        })
}

/// Which of `pids` are in the same pid namespace as `main_pid`: the engine's word on a
/// container's processes checked against the kernel's (a pid reused since is dropped).
pub(crate) fn same_namespace(main_pid: u32, pids: impl IntoIterator<Item = u32>) -> Vec<u32> {
    let ns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let Some(main) = ns(main_pid) else {
        return Vec::new();
    };
    let mut kept: Vec<u32> = pids
        .into_iter()
        .take(MAX_ITEMS)
        .filter(|pid| ns(*pid).as_ref() == Some(&main))
        .collect();
    if !kept.contains(&main_pid) {
        kept.insert(0, main_pid);
    }
    kept
}

/// The engines at the configured sockets that exist. An engine that is configured but absent
/// is simply not there; one whose socket is not a socket is passed over.
pub(crate) fn engines(sockets: &[PathBuf]) -> Vec<Box<dyn Engine>> {
    use std::os::unix::fs::FileTypeExt;
    sockets
        .iter()
        .filter(|s| std::fs::symlink_metadata(s).is_ok_and(|m| m.file_type().is_socket()))
        .map(|s| Box::new(Docker::new(s.clone())) as Box<dyn Engine>)
        .collect()
}

#[cfg(test)]
pub(crate) mod fake;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_are_what_engines_make() {
        assert_eq!(valid_name("/db-1").as_deref(), Some("db-1"));
        assert_eq!(valid_name("pg_main.2").as_deref(), Some("pg_main.2"));
        for bad in ["", "/", "-x", "a b", "a\nb", "é", &"a".repeat(129), "../x"] {
            assert_eq!(valid_name(bad), None, "{bad:?}");
        }
        assert!(valid_id(&"ab".repeat(32)).is_some());
        assert_eq!(valid_id("xyz123456789"), None);
        assert_eq!(valid_id("abc"), None);
    }

    #[test]
    fn labels_and_text_are_bounded_and_printable() {
        let labels = valid_labels([
            ("freezeframe.quiesce".into(), "pause".into()),
            ("evil\nkey".into(), "x".into()),
            ("k".into(), "v".repeat(MAX_TEXT + 1)),
        ]);
        assert_eq!(labels.len(), 1);
        assert_eq!(printable("a\x1b[2Jb"), "a?[2Jb");
        assert_eq!(printable(&"x".repeat(1000)).len(), MAX_TEXT);
    }

    #[test]
    fn the_root_password_is_taken_from_the_images_variables_and_never_printed() {
        let env = [
            "PATH=/bin",
            "MYSQL_ROOT_PASSWORD=second",
            "MARIADB_ROOT_PASSWORD=first",
        ];
        let found = root_password(env).unwrap();
        assert_eq!(found.expose(), "first");
        assert_eq!(format!("{found:?} {found}"), "[redacted] [redacted]");
        assert_eq!(root_password(["MARIADB_ROOT_PASSWORD="]), None);
        assert_eq!(root_password(["MARIADB_ROOT_PASSWORD_HASH=x"]), None);
    }
}
