//! MariaDB (or MySQL) from a restored data directory: started in its sandbox (sandbox.rs) with
//! none of the machine's or the image's option files (`--no-defaults`: no binary log, no replication, no network), on a
//! private socket without the grant tables, so that InnoDB's crash recovery runs as a restore
//! would; then `mariadb-check --all-databases` and every table's rows counted, then stopped. On
//! a restored machine (`check_running`), the same checks on the server its boot started.

use super::databases::{DatabaseCheck, TableRows};
use super::inside::{Kind, Root};
use super::sandbox::{Confined, DATA, RUN};
use super::server::{output, Server, ServerError};
use crate::config::MariadbLogin;
use crate::secret::{read_private_file, Secret, SecretFileError};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Why a MariaDB check stopped: what the check records.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MariadbError {
    /// No server program to start the copy with.
    #[error(
        "no MariaDB or MySQL server is installed here, so this data directory could not be \
         started: install mariadb-server where verify runs"
    )]
    NoServer,
    /// The copy's overlay could not be opened.
    #[error("cannot open its overlay: {0}")]
    Overlay(#[source] std::io::Error),
    /// A client or the server could not be run.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The password file of a running server's quiescer cannot be used.
    #[error("the database password: {0}")]
    Password(#[source] SecretFileError),
    /// The running server did not accept connections within `--wait`.
    #[error(
        "MariaDB at {} did not accept connections within {} (`--wait`)",
        socket.display(),
        humantime::format_duration(*.wait)
    )]
    NotAnswering { socket: PathBuf, wait: Duration },
    /// A statement failed.
    #[error(transparent)]
    Sql(#[from] SqlError),
}

/// A statement that did not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SqlError {
    /// The client could not be run.
    #[error(transparent)]
    Client(#[from] ServerError),
    /// The server refused it: what the client said.
    #[error("{0}")]
    Refused(String),
}

/// Why a table's rows could not be counted.
#[derive(Debug, thiserror::Error)]
enum CountError {
    #[error("cannot list its tables: {0}")]
    List(#[source] SqlError),
    #[error("reading every row failed: {0}")]
    Read(#[source] SqlError),
}

pub(crate) fn check(mut check: DatabaseCheck, confined: &Confined) -> DatabaseCheck {
    if let Err(problem) = run(&mut check, confined) {
        check.fail(problem);
    }
    check
}

fn run(check: &mut DatabaseCheck, confined: &Confined) -> Result<(), MariadbError> {
    let server_program = ["/usr/sbin/mariadbd", "/usr/sbin/mysqld"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or(MariadbError::NoServer)?;
    let data = Root::open(confined.merged()).map_err(MariadbError::Overlay)?;
    let client = Client {
        socket: PathBuf::from(format!("{RUN}/mysqld.sock")),
        login: None,
        confined: Some(confined),
    };
    let mut command = confined.command(server_program);
    command
        // No option file of this machine's or the image's.
        .arg("--no-defaults")
        .arg(format!("--datadir={DATA}"))
        .arg(format!("--socket={}", client.socket.display()))
        .arg(format!("--pid-file={RUN}/mysqld.pid"))
        .arg(format!("--tmpdir={RUN}"))
        // No network, no replication; no grant tables, which also skips the plugins and
        // functions (UDFs, code) the image's mysql.plugin and mysql.func would load; no event
        // runs; no table's files through a link out of the data directory.
        .args([
            "--skip-networking",
            "--skip-grant-tables",
            "--skip-slave-start",
            "--event-scheduler=DISABLED",
            "--symbolic-links=0",
            "--local-infile=0",
        ]);
    if let Some(base) = binary_log(&data) {
        // Transactions prepared in InnoDB are committed or rolled back from the binary log:
        // without it the server refuses to start after a crash.
        command.arg(format!("--log-bin={base}"));
        check.checks.push(format!(
            "started with its binary log ({base}.*) for crash recovery"
        ));
    }
    let mut server = Server::start(command, &confined.log_file("mariadb.log"))?;
    let took = server.wait_ready(|| client.ready())?;
    check.recovery_seconds = Some(took.as_secs_f64());
    check.replayed_bytes = replayed(&server.log());
    client.check_everything(check);
    server.stop();
    Ok(())
}

/// The server a restored machine's boot started, on `socket`, logged in as the quiescer is.
pub(crate) fn check_running(
    mut check: DatabaseCheck,
    socket: &Path,
    login: &MariadbLogin,
    wait: Duration,
) -> DatabaseCheck {
    if let Err(problem) = running(&mut check, socket, login, wait) {
        check.fail(problem);
    }
    check
}

fn running(
    check: &mut DatabaseCheck,
    socket: &Path,
    login: &MariadbLogin,
    wait: Duration,
) -> Result<(), MariadbError> {
    let password = match &login.password_file {
        Some(file) => Some(read_private_file(file).map_err(MariadbError::Password)?),
        None => None,
    };
    let client = Client {
        socket: socket.to_path_buf(),
        login: Some((login.user.clone(), password)),
        confined: None,
    };
    if !super::server::wait_until(wait, || client.ready()) {
        return Err(MariadbError::NotAnswering {
            socket: socket.to_path_buf(),
            wait,
        });
    }
    check.path = PathBuf::from(client.sql("SELECT @@datadir")?.trim());
    check
        .checks
        .push("accepting connections, InnoDB recovery finished".into());
    client.check_everything(check);
    Ok(())
}

/// The binary log's base name in the data directory (`mysql-bin` for `mysql-bin.index` that
/// lists `./mysql-bin.000001`), when it keeps one there; read inside the overlay (`data`), a
/// base name of letters, digits, `-`, `_` and `.` only, since it becomes an argument.
fn binary_log(data: &Root) -> Option<String> {
    data.entries(Path::new("")).into_iter().find_map(|(name, kind)| {
        let name = name.into_string().ok()?;
        let base = name.strip_suffix(".index")?;
        if kind != Kind::File
            || !base
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return None;
        }
        let index = data.read_to_string(Path::new(&name), 1 << 20).ok()?;
        index
            .lines()
            .any(|line| {
                let file = line.trim().trim_start_matches("./");
                file.starts_with(&format!("{base}.")) && data.kind(Path::new(file)) == Some(Kind::File)
            })
            .then(|| base.to_string())
    })
}

/// Bytes of redo log InnoDB applied: from its checkpoint to the end of the log it found.
fn replayed(log: &str) -> Option<u64> {
    let number_after = |marker: &str| {
        log.lines()
            .find_map(|line| line.split_once(marker))
            .and_then(|(_, rest)| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
    };
    let from = number_after("Starting crash recovery from checkpoint LSN=")?;
    let to = number_after("End of log at LSN=")?;
    Some(to.saturating_sub(from))
}

/// The server's clients: on the restored copy's private socket (no grant tables), or on a
/// running server's as a user, with a password when it needs one.
struct Client<'a> {
    socket: PathBuf,
    login: Option<(String, Option<Secret>)>,
    /// A copy from an image: its clients run in its sandbox.
    confined: Option<&'a Confined>,
}

impl Client<'_> {
    fn program(&self, name: &str) -> Command {
        let mut command = match self.confined {
            Some(confined) => confined.command(name),
            None => Command::new(name),
        };
        command
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()));
        if let Some((user, password)) = &self.login {
            command.arg(format!("--user={user}"));
            if let Some(password) = password {
                // The environment, not the command line, which any local user can read.
                command.env("MYSQL_PWD", password.expose());
            }
        }
        command
    }

    /// mariadb-check, and every table's rows.
    fn check_everything(&self, check: &mut DatabaseCheck) {
        self.check_tables(check);
        match self.count_rows() {
            Ok(rows) => {
                check.checks.push(format!("{} tables counted", rows.len()));
                check.tables = rows;
            }
            Err(problem) => check.fail(problem),
        }
    }

    fn ready(&self) -> bool {
        let mut command = self.program("mariadb-admin");
        command.arg("ping");
        output(&mut command).is_ok_and(|(ok, _)| ok)
    }

    fn sql(&self, statements: &str) -> Result<String, SqlError> {
        let mut command = self.program("mariadb");
        command.args(["--batch", "--skip-column-names", "-e", statements]);
        match output(&mut command)? {
            (true, text) => Ok(text),
            (false, text) => Err(SqlError::Refused(text.trim().to_string())),
        }
    }

    /// `mariadb-check --all-databases`: every table as the server's CHECK TABLE sees it.
    fn check_tables(&self, check: &mut DatabaseCheck) {
        let mut command = self.program("mariadb-check");
        command.arg("--all-databases");
        match output(&mut command) {
            Ok((ok, said)) => {
                let bad: Vec<&str> = said
                    .lines()
                    .filter(|l| l.starts_with("error") || l.contains("Corrupt"))
                    .collect();
                if ok && bad.is_empty() {
                    check.checks.push(format!(
                        "mariadb-check: {} tables OK",
                        said.lines().filter(|l| l.trim_end().ends_with("OK")).count()
                    ));
                } else {
                    check.fail(format!(
                        "mariadb-check finds damage: {}",
                        bad.into_iter().take(6).collect::<Vec<_>>().join(" | ")
                    ));
                }
            }
            Err(problem) => check.fail(problem),
        }
    }

    /// Every base table's rows outside the server's own schemas.
    fn count_rows(&self) -> Result<Vec<TableRows>, CountError> {
        let counts = self.sql(LIST_COUNTS).map_err(CountError::List)?;
        if counts.trim().is_empty() {
            return Ok(Vec::new());
        }
        let text = self.sql(&counts).map_err(CountError::Read)?;
        Ok(text
            .lines()
            .filter_map(|line| {
                let (table, rows) = line.rsplit_once('\t')?;
                Some(TableRows {
                    table: table.to_string(),
                    rows: rows.trim().parse().ok()?,
                })
            })
            .collect())
    }
}

/// One `SELECT COUNT(*)` statement per base table, names quoted.
const LIST_COUNTS: &str = "SELECT CONCAT('SELECT ', QUOTE(CONCAT(table_schema, '.', table_name)), \
     ', COUNT(*) FROM `', REPLACE(table_schema, '`', '``'), '`.`', REPLACE(table_name, '`', '``'), '`;') \
     FROM information_schema.tables WHERE table_type = 'BASE TABLE' \
     AND table_schema NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
     ORDER BY table_schema, table_name";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replayed_bytes_come_from_the_recovery_lines() {
        let log = "[Note] InnoDB: Starting crash recovery from checkpoint LSN=46846,47000\n\
                   [Note] InnoDB: End of log at LSN=52000";
        assert_eq!(replayed(log), Some(52000 - 46846));
        assert_eq!(replayed("[Note] InnoDB: 128 rollback segments are active."), None);
    }
}
