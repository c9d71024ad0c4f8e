//! Databases in containers, with no configuration: each running container of each engine is
//! recognised by what runs inside it (the names the kernel gives its processes), then asked, by
//! a client the engine runs inside the container as the database's own user, whether it
//! answers as that database. Only one that answers is quiesced, as the native quiescers do on
//! the host: PostgreSQL's `CHECKPOINT`, Redis's `BGSAVE` waited for, and MariaDB's
//! `FLUSH TABLES WITH READ LOCK` held by a session attached through the engine across the
//! window (its input closes when the agent's connection does, which ends it and its lock).
//! Nothing from a container is trusted: its process names only choose which question to ask,
//! and no path inside its root is ever opened.

use super::require_frozen;
use crate::container::{printable, Container, Engine, Exec, Session};
use crate::secret::Secret;
use crate::systemd::discovery::DatabaseKind;
use crate::transaction::ports::{QuiesceError, Quiescer, Target};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Marks the end of each batch of statements in a MariaDB session's output.
const DONE: &str = "freezeframe-done";

/// A container running a database, and what will be done to it.
#[derive(Clone)]
pub(crate) struct FoundContainer {
    pub container: Container,
    pub kind: DatabaseKind,
    /// The database's user (a uid), whom commands run as.
    pub user: String,
    /// Why it is not quiesced, when it is not.
    pub unhandled: Option<String>,
    pub engine: Arc<dyn Engine>,
}

impl FoundContainer {
    /// How the plan, the report and doctor name it.
    pub(crate) fn label(&self) -> String {
        format!("{} in container {}", self.kind.as_str(), self.container.name)
    }
}

/// The database a process is, by the name the kernel gives it.
fn kind_of(comm: &str) -> Option<DatabaseKind> {
    match comm.trim() {
        "postgres" | "postmaster" => Some(DatabaseKind::Postgresql),
        "mariadbd" | "mysqld" => Some(DatabaseKind::Mariadb),
        "redis-server" | "valkey-server" => Some(DatabaseKind::Redis),
        _ => None,
    }
}

/// The real uid of a host process, from its status.
fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The first database process of a container (its main process first), and its uid.
fn recognise(container: &Container) -> Option<(DatabaseKind, u32)> {
    container.pids.iter().find_map(|pid| {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        Some((kind_of(&comm)?, uid_of(*pid)?))
    })
}

/// The databases running in the containers of `engines`, each probed; and what could not be
/// listed.
pub(crate) async fn discover(engines: Vec<Arc<dyn Engine>>) -> (Vec<FoundContainer>, Vec<String>) {
    let (mut found, mut problems) = (Vec::new(), Vec::new());
    for engine in engines {
        let containers = match engine.running().await {
            Ok(containers) => containers,
            Err(e) => {
                problems.push(format!("cannot list the containers: {e}"));
                continue;
            }
        };
        for container in containers {
            let Some((kind, uid)) = recognise(&container) else {
                continue;
            };
            let mut db = FoundContainer {
                container,
                kind,
                user: uid.to_string(),
                unhandled: None,
                engine: engine.clone(),
            };
            db.unhandled = probe(&db).await.err();
            found.push(db);
        }
    }
    (found, problems)
}

/// Whether the database answers as what its process is named; why not, when it does not.
async fn probe(db: &FoundContainer) -> Result<(), String> {
    let client = Client::of(db);
    let answer = match db.kind {
        DatabaseKind::Postgresql => client.sql("SELECT 1").await,
        DatabaseKind::Mariadb => client.sql("SELECT 1").await,
        DatabaseKind::Redis => client.redis(&["PING"]).await,
        DatabaseKind::Mongodb => return Err("freezeframe has no MongoDB quiescer".into()),
    };
    match answer {
        Ok(out) if matches!(out.trim(), "1" | "PONG") => Ok(()),
        Ok(out) => Err(format!(
            "it did not answer as {} (it said `{}`), so it is not trusted",
            db.kind.as_str(),
            printable(out.trim())
        )),
        Err(e) => Err(format!("it did not answer as {}: {e}", db.kind.as_str())),
    }
}

/// A database's own client, run in its container.
struct Client {
    engine: Arc<dyn Engine>,
    id: String,
    user: String,
    kind: DatabaseKind,
    password: Option<Secret>,
}

impl Client {
    fn of(db: &FoundContainer) -> Client {
        Client {
            engine: db.engine.clone(),
            id: db.container.id.clone(),
            // MariaDB's root, over its socket; the others as the database's own user.
            user: match db.kind {
                DatabaseKind::Mariadb => "0".into(),
                _ => db.user.clone(),
            },
            kind: db.kind,
            password: db.container.root_password.clone(),
        }
    }

    fn exec(&self, cmd: &[&str]) -> Exec {
        Exec {
            user: self.user.clone(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            env: self
                .password
                .iter()
                .filter(|_| self.kind == DatabaseKind::Mariadb)
                .map(|p| ("MYSQL_PWD".to_string(), p.clone()))
                .collect(),
        }
    }

    async fn run(&self, cmd: &[&str]) -> Result<String, QuiesceError> {
        let out = self
            .engine
            .exec(&self.id, &self.exec(cmd))
            .await
            .map_err(QuiesceError::caused_by)?;
        if !out.success() {
            return Err(QuiesceError::new(format!(
                "`{}` ended with {}: {}",
                cmd.first().unwrap_or(&""),
                out.exit_code
                    .map_or("no exit code".into(), |c| format!("exit code {c}")),
                printable(&self.scrub(out.stderr.trim()))
            )));
        }
        Ok(self.scrub(&out.stdout))
    }

    /// What the container's programs said, without the password they were given: a program
    /// in the container is the container's, and may repeat it.
    fn scrub(&self, text: &str) -> String {
        match &self.password {
            Some(p) => text.replace(p.expose(), "[redacted]"),
            None => text.to_string(),
        }
    }

    /// One statement through the database's command-line client.
    async fn sql(&self, statement: &str) -> Result<String, QuiesceError> {
        match self.kind {
            DatabaseKind::Postgresql => {
                self.run(&[
                    "psql",
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-d",
                    "postgres",
                    "-c",
                    statement,
                ])
                .await
            }
            _ => {
                self.run(&["mariadb", "--batch", "--skip-column-names", "-e", statement])
                    .await
            }
        }
    }

    async fn redis(&self, args: &[&str]) -> Result<String, QuiesceError> {
        let mut cmd = vec!["redis-cli"];
        cmd.extend_from_slice(args);
        self.run(&cmd).await
    }
}

/// Where a path inside a container is on this machine: under the mount that holds it.
fn on_host(container: &Container, inside: &Path) -> Option<PathBuf> {
    container
        .mounts
        .iter()
        .filter_map(|m| Some((m, inside.strip_prefix(&m.destination).ok()?)))
        .max_by_key(|(m, _)| m.destination.components().count())
        .map(|(m, rest)| m.source.join(rest))
}

/// Refuses a data directory that is on a mount this run does not freeze.
fn require_frozen_inside(
    container: &Container,
    what: &str,
    dir: &str,
    targets: &[Target],
) -> Result<(), QuiesceError> {
    match on_host(container, Path::new(dir.trim())) {
        Some(host) => require_frozen(&format!("{what} (container {})", container.name), &host, targets),
        // In the container's own layer, under the engine's data root.
        None => Ok(()),
    }
}

/// The quiescer of one database in a container.
pub(crate) struct InContainer {
    db: FoundContainer,
    name: String,
    timeout: Duration,
    session: Option<Box<dyn Session>>,
    locked: bool,
}

impl InContainer {
    pub(crate) fn new(db: FoundContainer, timeout: Duration) -> InContainer {
        InContainer {
            name: db.label(),
            db,
            timeout,
            session: None,
            locked: false,
        }
    }

    /// Sends statements to the held session and reads their output up to the end marker.
    async fn in_session(&mut self, statements: &str) -> Result<Vec<String>, QuiesceError> {
        let client = Client::of(&self.db);
        let session = self
            .session
            .as_mut()
            .ok_or_else(|| QuiesceError::new("no lock session"))?;
        let ended = |said: String| {
            QuiesceError::new(format!(
                "the session ended{}; any lock it held is released",
                if said.is_empty() {
                    String::new()
                } else {
                    format!(": {}", printable(client.scrub(said.trim()).as_str()))
                }
            ))
        };
        if session
            .write(&format!("{statements}\nSELECT '{DONE}';\n"))
            .await
            .is_err()
        {
            return Err(ended(session.stderr()));
        }
        let mut lines = Vec::new();
        loop {
            let next = session.read_line().await;
            match next {
                Ok(Some(line)) if line == DONE => return Ok(lines),
                Ok(Some(line)) => lines.push(line),
                Ok(None) | Err(_) => return Err(ended(session.stderr())),
            }
        }
    }
}

/// Redis's `BGSAVE`, waited for: the save started after every write acknowledged before it.
async fn redis_save(db: &FoundContainer) -> Result<(), QuiesceError> {
    let client = Client::of(db);
    let saves = |info: &str| super::redis::info_field(info, "rdb_saves").and_then(|v| v.parse::<u64>().ok());
    let before = saves(&client.redis(&["INFO", "persistence"]).await?);
    loop {
        let answer = client.redis(&["BGSAVE"]).await?;
        if !answer.contains("in progress") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let info = client.redis(&["INFO", "persistence"]).await?;
        let field = |name| super::redis::info_field(&info, name);
        if field("rdb_bgsave_in_progress").as_deref() != Some("0") {
            continue;
        }
        if field("rdb_last_bgsave_status").as_deref() != Some("ok") {
            return Err(QuiesceError::new("Redis's background save failed; see its log"));
        }
        if saves(&info) > before || before.is_none() {
            return Ok(());
        }
    }
}

#[async_trait::async_trait]
impl Quiescer for InContainer {
    fn name(&self) -> &str {
        &self.name
    }

    fn prepare_timeout(&self) -> Duration {
        self.timeout
    }

    async fn check(&mut self, targets: &[Target]) -> Result<(), QuiesceError> {
        let client = Client::of(&self.db);
        let (what, dir) = match self.db.kind {
            DatabaseKind::Postgresql => (
                "PostgreSQL's data directory",
                client.sql("SHOW data_directory").await?,
            ),
            DatabaseKind::Mariadb => ("MariaDB's data directory", client.sql("SELECT @@datadir").await?),
            DatabaseKind::Redis => {
                let answer = client.redis(&["CONFIG", "GET", "dir"]).await?;
                (
                    "Redis's data directory",
                    answer.lines().nth(1).unwrap_or("").to_string(),
                )
            }
            DatabaseKind::Mongodb => return Err(QuiesceError::new("no MongoDB quiescer")),
        };
        require_frozen_inside(&self.db.container, what, &dir, targets)
    }

    async fn prepare(&mut self) -> Result<(), QuiesceError> {
        match self.db.kind {
            DatabaseKind::Postgresql => Client::of(&self.db).sql("CHECKPOINT").await.map(drop),
            DatabaseKind::Redis => redis_save(&self.db).await,
            DatabaseKind::Mariadb => {
                let client = Client::of(&self.db);
                let exec = client.exec(&["mariadb", "--batch", "--skip-column-names", "--unbuffered"]);
                let session = self
                    .db
                    .engine
                    .session(&self.db.container.id, &exec)
                    .await
                    .map_err(QuiesceError::caused_by)?;
                // From here resume() must end this session, and with it what it holds.
                self.session = Some(session);
                self.in_session(&format!(
                    "SET SESSION lock_wait_timeout = {};\nFLUSH TABLES WITH READ LOCK;",
                    crate::config::DEFAULT_LOCK_WAIT_TIMEOUT.as_secs()
                ))
                .await
                .map_err(|e| QuiesceError::with_source("FLUSH TABLES WITH READ LOCK did not complete", e))?;
                self.locked = true;
                Ok(())
            }
            DatabaseKind::Mongodb => Err(QuiesceError::new("no MongoDB quiescer")),
        }
    }

    async fn resume(&mut self) -> Result<(), QuiesceError> {
        let result = if self.locked && self.session.is_some() {
            self.in_session("UNLOCK TABLES;").await.map(drop)
        } else {
            Ok(())
        };
        self.locked = false;
        // Closing its input ends the client, and its session with whatever it held or waited for.
        self.session = None;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::fake::FakeEngine;
    use crate::container::{ExecOutput, Mount};

    fn container(name: &str, mounts: Vec<Mount>) -> Container {
        Container {
            id: "ab".repeat(32),
            name: name.into(),
            image: "local/db".into(),
            labels: Default::default(),
            main_pid: std::process::id(),
            pids: vec![std::process::id()],
            root_password: Some(Secret::new("s3cret")),
            mounts,
        }
    }

    #[test]
    fn processes_are_recognised_by_their_kernel_names() {
        assert_eq!(kind_of("postgres\n"), Some(DatabaseKind::Postgresql));
        assert_eq!(kind_of("mysqld"), Some(DatabaseKind::Mariadb));
        assert_eq!(kind_of("valkey-server"), Some(DatabaseKind::Redis));
        assert_eq!(kind_of("postgres-exporter"), None);
        assert_eq!(kind_of("sh"), None);
    }

    #[test]
    fn a_path_inside_maps_through_the_deepest_mount() {
        let c = container(
            "db",
            vec![
                Mount {
                    destination: "/var/lib".into(),
                    source: "/srv/lib".into(),
                },
                Mount {
                    destination: "/var/lib/postgresql/data".into(),
                    source: "/var/lib/docker/volumes/pg/_data".into(),
                },
            ],
        );
        assert_eq!(
            on_host(&c, Path::new("/var/lib/postgresql/data/base")),
            Some(PathBuf::from("/var/lib/docker/volumes/pg/_data/base"))
        );
        assert_eq!(
            on_host(&c, Path::new("/var/lib/x")),
            Some(PathBuf::from("/srv/lib/x"))
        );
        assert_eq!(on_host(&c, Path::new("/data")), None);
    }

    #[tokio::test]
    async fn a_database_that_does_not_answer_as_itself_is_not_trusted() {
        let engine = Arc::new(FakeEngine::new(vec![], |_, cmd| ExecOutput {
            exit_code: Some(0),
            stdout: if cmd[0] == "redis-cli" {
                "PONG\n"
            } else {
                "\x1b[2Jpwned\n"
            }
            .into(),
            stderr: String::new(),
        }));
        let db = |kind| FoundContainer {
            container: container("db", vec![]),
            kind,
            user: "999".into(),
            unhandled: None,
            engine: engine.clone(),
        };
        assert_eq!(probe(&db(DatabaseKind::Redis)).await, Ok(()));
        let refused = probe(&db(DatabaseKind::Postgresql)).await.unwrap_err();
        assert!(
            refused.contains("not trusted") && !refused.contains('\x1b'),
            "{refused}"
        );
        // The password goes only to MariaDB's client, in its environment, as root.
        let client = Client::of(&db(DatabaseKind::Mariadb));
        let exec = client.exec(&["mariadb"]);
        assert_eq!(exec.user, "0");
        assert_eq!(exec.env.len(), 1);
        assert_eq!(format!("{:?}", exec.env), "[(\"MYSQL_PWD\", [redacted])]");
        assert!(Client::of(&db(DatabaseKind::Postgresql))
            .exec(&["psql"])
            .env
            .is_empty());
        let ran = engine.ran.lock().unwrap().clone();
        assert_eq!(ran[1].1, "999", "PostgreSQL's client runs as the database's user");
    }
}
