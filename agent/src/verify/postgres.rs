//! PostgreSQL from a restored data directory: started in its sandbox (sandbox.rs) on a private
//! socket, from a configuration that is entirely verify's own (`safe_settings`: nothing the
//! image holds is read as configuration, and every setting that loads code or runs a command
//! is pinned), recovered, checked with `pg_amcheck` on every database and by counting every
//! table's rows, then stopped. On a restored machine (`check_running`), the same checks on the
//! server its boot started.

use super::databases::{DatabaseCheck, TableRows};
use super::inside::Root;
use super::sandbox::{Confined, DATA, ETC, RUN};
use super::server::{output, output_from, Owner, Server, ServerError};
use crate::transaction::ports::LogPosition;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const PORT: &str = "5432";

/// Why a PostgreSQL check stopped, or a step of it failed: what the check records.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PostgresError {
    /// The copy's overlay could not be opened.
    #[error("cannot open its overlay: {0}")]
    Overlay(#[source] std::io::Error),
    /// `PG_VERSION` could not be read.
    #[error("cannot read its PG_VERSION ({0}), so it is not a PostgreSQL version")]
    NoVersion(#[source] std::io::Error),
    /// `PG_VERSION` holds something other than a version (it becomes part of a path).
    #[error(
        "its PG_VERSION holds {0:?}, which is not a PostgreSQL version: the data directory is \
         damaged or made to mislead, and is not started"
    )]
    BadVersion(String),
    /// The server of that version is not installed where verify runs.
    #[error(
        "PostgreSQL {0}'s server is not installed here, so this data directory could not be \
         started: install postgresql-{0} where verify runs"
    )]
    NotInstalled(String),
    /// A client or the server could not be run.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// No account here to reach a running server as.
    #[error("no user {0} here to reach PostgreSQL as")]
    NoUser(String),
    /// The running server did not accept connections within `--wait`.
    #[error(
        "PostgreSQL at {} port {port} did not accept connections within {} (`--wait`)",
        socket_dir.display(),
        humantime::format_duration(*.wait)
    )]
    NotAnswering {
        socket_dir: PathBuf,
        port: u16,
        wait: Duration,
    },
    /// A query failed: what psql said.
    #[error("`{query}` failed: {said}")]
    Query { query: String, said: String },
    /// `server_version_num` is not a number.
    #[error("server version {0}?")]
    ServerVersion(String),
    /// The running server is a standby, or still recovering.
    #[error("the server is still in recovery (is it a standby?)")]
    InRecovery,
    /// A file or folder of verify's own could not be made or read.
    #[error("cannot {action} {}: {source}", path.display())]
    Own {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The snapshot's marker names no WAL position.
    #[error("the marker's WAL position `{0}` is not an LSN")]
    MarkerPosition(String),
    /// Recovery stopped before the WAL position the snapshot was taken at: committed
    /// transactions are lost.
    #[error(
        "recovery ended at WAL {reached}, before {wanted} where the WAL stood when the snapshot \
         was taken: WAL written before the freeze is damaged or missing, and the transactions \
         it held are lost"
    )]
    RecoveryShort { reached: String, wanted: String },
    /// The log does not say where recovery ended.
    #[error(
        "the server's log does not say where recovery ended, so reaching the snapshot's WAL \
         position {0} cannot be shown"
    )]
    RecoveryEndUnknown(String),
    /// Its databases could not be listed.
    #[error("cannot list its databases: {0}")]
    Databases(String),
    /// A database's rows could not be read to the end.
    #[error("reading every row of database {database} failed: {said}")]
    Rows { database: String, said: String },
}

/// `action` on `path`, a file or folder of verify's own, failed.
fn own(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PostgresError {
    let path = path.to_path_buf();
    move |source| PostgresError::Own { action, path, source }
}

/// Starts the data directory prepared in `confined` (an overlay) and checks it; `image` is the
/// image's top (its accounts name the bootstrap superuser); `position`, from the snapshot's
/// marker, is where its WAL stood when the snapshot was taken, which recovery must reach.
pub(crate) fn check(
    mut check: DatabaseCheck,
    image: &Root,
    confined: &Confined,
    position: Option<&LogPosition>,
) -> DatabaseCheck {
    if let Err(problem) = run(&mut check, image, confined, position) {
        check.fail(problem);
    }
    check
}

fn run(
    check: &mut DatabaseCheck,
    image: &Root,
    confined: &Confined,
    position: Option<&LogPosition>,
) -> Result<(), PostgresError> {
    let data = Root::open(confined.merged()).map_err(PostgresError::Overlay)?;
    let text = data
        .read_to_string(Path::new("PG_VERSION"), 64)
        .map_err(PostgresError::NoVersion)?;
    let (version, major) = version_of(&text)?;
    let bin = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
    if !bin.join("postgres").is_file() {
        return Err(PostgresError::NotInstalled(version));
    }
    let client = Client {
        bin,
        sockets: PathBuf::from(RUN),
        port: PORT.into(),
        run_as: None,
        confined: Some(confined),
        role: bootstrap_superuser(image, confined.image_owner),
    };
    forget_the_live_server(check, confined.merged());
    let redo_point = checkpoint_redo(&client);
    write_settings(confined.etc())?;
    let mut server = Server::start(client.server_command(major), &confined.log_file("postgresql.log"))?;
    let took = server.wait_ready(|| client.ready())?;
    check.recovery_seconds = Some(took.as_secs_f64());
    check.replayed_bytes = replayed(&server.log());
    if let Some(position) = position {
        reached_the_snapshot_point(check, &server.log(), redo_point, position)?;
    }
    client.check_every_database(check, confined.etc())?;
    server.stop();
    Ok(())
}

/// The version a `PG_VERSION` names (`15`, or `9.6` before 10) and its major number; anything
/// else is refused, since the version becomes part of the path of the programs run.
fn version_of(text: &str) -> Result<(String, u32), PostgresError> {
    let version = text.trim();
    let parts: Vec<&str> = version.split('.').collect();
    let numeric = parts.len() <= 2
        && parts
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    match parts[0].parse::<u32>() {
        Ok(major) if numeric => Ok((version.to_string(), major)),
        _ => Err(PostgresError::BadVersion(version.to_string())),
    }
}

/// The bootstrap superuser's name: initdb names it after the account that ran it, which owns
/// the data directory. That account is the image's, so its name is looked up in the image's
/// own `/etc/passwd` (when the data is on the root filesystem), never in this machine's; and
/// `postgres` otherwise.
fn bootstrap_superuser(image: &Root, uid: u32) -> String {
    let passwd = image
        .read_to_string(Path::new("etc/passwd"), 1 << 20)
        .unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() > 2 && fields[2] == uid.to_string()).then(|| fields[0].to_string())
        })
        .filter(|name| {
            (1..=32).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        })
        .unwrap_or_else(|| "postgres".to_string())
}

/// The server a restored machine's boot started, at `socket_dir` and `port`, reached as
/// `os_user` (peer authentication, as the quiescer does): up and out of recovery, then the
/// same checks as on an image.
pub(crate) fn check_running(
    mut check: DatabaseCheck,
    socket_dir: &Path,
    port: u16,
    os_user: &str,
    wait: Duration,
    scratch: &Path,
) -> DatabaseCheck {
    if let Err(problem) = running(&mut check, socket_dir, port, os_user, wait, scratch) {
        check.fail(problem);
    }
    check
}

fn running(
    check: &mut DatabaseCheck,
    socket_dir: &Path,
    port: u16,
    os_user: &str,
    wait: Duration,
    scratch: &Path,
) -> Result<(), PostgresError> {
    let user = nix::unistd::User::from_name(os_user)
        .ok()
        .flatten()
        .ok_or_else(|| PostgresError::NoUser(os_user.to_string()))?;
    let mut client = Client {
        bin: PathBuf::from("/usr/bin"),
        sockets: socket_dir.to_path_buf(),
        port: port.to_string(),
        role: os_user.to_string(),
        run_as: Some(Owner {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }),
        confined: None,
    };
    if !super::server::wait_until(wait, || client.ready()) {
        return Err(PostgresError::NotAnswering {
            socket_dir: socket_dir.to_path_buf(),
            port,
            wait,
        });
    }
    let version = client.one("template1", "SHOW server_version_num")?;
    let major = version
        .trim()
        .parse::<u32>()
        .map_err(|_| PostgresError::ServerVersion(version.clone()))?
        / 10000;
    client.bin = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
    check.path = PathBuf::from(client.one("template1", "SHOW data_directory")?.trim());
    if client.one("template1", "SELECT pg_is_in_recovery()")?.trim() != "f" {
        return Err(PostgresError::InRecovery);
    }
    check
        .checks
        .push("accepting connections, recovery finished".into());
    std::fs::create_dir_all(scratch).map_err(own("create", scratch))?;
    client.check_every_database(check, scratch)
}

/// The files that tie the data directory to the machine it was copied from, removed from the
/// overlay (`data`, verify's view of it; each a name at its top, so no link is followed): the
/// live server's pid file (its pid may be alive here), the signals that would start a standby
/// that follows a primary (the copy starts as a primary of its own), and the configuration
/// PostgreSQL reads from the data directory whatever `config_file` says
/// (`postgresql.auto.conf`, and `recovery.conf` before 12), with whatever it includes.
fn forget_the_live_server(check: &mut DatabaseCheck, data: &Path) {
    for file in ["postmaster.pid", "postgresql.auto.conf", "recovery.conf"] {
        let _ = std::fs::remove_file(data.join(file));
    }
    for signal in ["standby.signal", "recovery.signal"] {
        if std::fs::remove_file(data.join(signal)).is_ok() {
            check
                .checks
                .push(format!("{signal} was in the image: started as a primary instead"));
        }
    }
}

/// The settings files the copy runs with, in place of the cluster's own: written into verify's
/// own folder, shown read-only to the sandbox at `ETC`.
fn write_settings(etc: &Path) -> Result<(), PostgresError> {
    for (name, text) in [
        ("postgresql.conf", ""),
        // Trust, on the sandbox's own socket, which only root and the sandbox reach.
        ("pg_hba.conf", "local all all trust\n"),
        ("pg_ident.conf", ""),
    ] {
        let path = etc.join(name);
        std::fs::write(&path, text).map_err(own("write", &path))?;
    }
    Ok(())
}

/// Every setting the server starts with, on its command line, which outranks every file. With
/// `config_file` verify's (empty) and `postgresql.auto.conf` removed, nothing of the image is
/// read as configuration, so no `include` of it is followed either; the settings that load
/// code, run a command or reach outside are pinned here all the same, so that nothing the image
/// holds decides them. `major` is the server's version: a setting it does not know would stop
/// it.
fn safe_settings(major: u32) -> Vec<(&'static str, String)> {
    let etc = |name: &str| format!("{ETC}/{name}");
    let mut settings = vec![
        // verify's own, empty: the image's postgresql.conf and its includes are never read.
        ("config_file", etc("postgresql.conf")),
        // Trust on the private socket only.
        ("hba_file", etc("pg_hba.conf")),
        ("ident_file", etc("pg_ident.conf")),
        // The sandbox's socket folder, closed to everyone else; no TCP at all.
        ("unix_socket_directories", RUN.to_string()),
        ("unix_socket_permissions", "0700".into()),
        ("listen_addresses", String::new()),
        ("port", PORT.into()),
        // Libraries loaded at start or at each connection: code.
        ("shared_preload_libraries", String::new()),
        ("session_preload_libraries", String::new()),
        ("local_preload_libraries", String::new()),
        // Where LOAD and C functions find libraries: only this machine's installed modules.
        ("dynamic_library_path", "$libdir".into()),
        // Runs a command to unlock an SSL key; SSL is off, no key is read.
        ("ssl", "off".into()),
        ("ssl_passphrase_command", String::new()),
        // Kerberos' key file, read from a path the image would name.
        ("krb_server_keyfile", String::new()),
        // Archiving runs a command (or a library, from 15) on every finished WAL segment.
        ("archive_mode", "off".into()),
        ("archive_command", String::new()),
        // Writes a file where the image says.
        ("external_pid_file", String::new()),
        // The log goes to verify's file (stderr), not to a folder the image names.
        ("logging_collector", "off".into()),
        ("log_destination", "stderr".into()),
    ];
    if major >= 11 {
        // JIT loads a provider library.
        settings.push(("jit", "off".into()));
        settings.push(("jit_provider", "llvmjit".into()));
    }
    if major >= 12 {
        // Recovery's commands, and replication from a primary.
        settings.extend([
            ("restore_command", String::new()),
            ("archive_cleanup_command", String::new()),
            ("recovery_end_command", String::new()),
            ("primary_conninfo", String::new()),
            ("primary_slot_name", String::new()),
        ]);
    }
    if major >= 15 {
        settings.push(("archive_library", String::new()));
    }
    settings
}

/// The REDO location of the image's latest checkpoint (where recovery starts), from
/// `pg_controldata`, read before the server runs.
fn checkpoint_redo(client: &Client<'_>) -> Option<u64> {
    let mut command = client.sandboxed("pg_controldata");
    command.arg("-D").arg(DATA);
    let (_, text) = output(&mut command).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Latest checkpoint's REDO location:"))
        .and_then(|v| parse_lsn(v.trim()))
}

/// Recovery must have replayed to the WAL position the quiescer recorded before the freeze
/// (every record before it was durable then): the last record replayed (`redo done at`), or
/// with nothing to replay the checkpoint's own REDO point, at or past it. WAL damaged before
/// that point ends recovery early and silently, losing committed transactions.
fn reached_the_snapshot_point(
    check: &mut DatabaseCheck,
    log: &str,
    redo_point: Option<u64>,
    position: &LogPosition,
) -> Result<(), PostgresError> {
    let wanted =
        parse_lsn(&position.lsn).ok_or_else(|| PostgresError::MarkerPosition(position.lsn.clone()))?;
    let reached = if log.contains("redo is not required") {
        redo_point
    } else {
        log.lines()
            .find_map(|line| line.split_once("redo done at "))
            .and_then(|(_, rest)| parse_lsn(rest.split_whitespace().next()?))
    };
    match reached {
        Some(reached) if reached >= wanted => {
            check.checks.push(format!(
                "WAL replayed to {}, past {} where it stood when the snapshot was taken",
                format_lsn(reached),
                position.lsn
            ));
            Ok(())
        }
        Some(reached) => Err(PostgresError::RecoveryShort {
            reached: format_lsn(reached),
            wanted: position.lsn.clone(),
        }),
        None => Err(PostgresError::RecoveryEndUnknown(position.lsn.clone())),
    }
}

fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Bytes of WAL replayed, from the server's log: `redo starts at A` … `redo done at B`.
fn replayed(log: &str) -> Option<u64> {
    if log.contains("redo is not required") {
        return Some(0);
    }
    let lsn_after = |marker: &str| {
        log.lines()
            .find_map(|line| line.split_once(marker))
            .and_then(|(_, rest)| parse_lsn(rest.split_whitespace().next()?))
    };
    Some(lsn_after("redo done at ")?.saturating_sub(lsn_after("redo starts at ")?))
}

/// `16/B374D848` → its byte position.
fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

/// The server's clients: on the restored copy's private socket, or on a running server's.
struct Client<'a> {
    bin: PathBuf,
    sockets: PathBuf,
    port: String,
    role: String,
    /// Whom the clients run as (peer authentication) on a running server; root otherwise.
    run_as: Option<Owner>,
    /// A copy from an image: its server and clients run in its sandbox, and its writes land on
    /// a throwaway overlay (amcheck may be installed). A running server's databases are only
    /// read.
    confined: Option<&'a Confined>,
}

impl Client<'_> {
    fn server_command(&self, major: u32) -> Command {
        let mut command = self.sandboxed("postgres");
        command.arg("-D").arg(DATA);
        for (key, value) in safe_settings(major) {
            command.arg("-c").arg(format!("{key}={value}"));
        }
        command
    }

    /// `name` from the server's binaries: in the sandbox for a copy from an image.
    fn sandboxed(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        match self.confined {
            Some(confined) => confined.command(program),
            None => {
                let mut command = Command::new(program);
                if let Some(owner) = self.run_as {
                    owner.apply(&mut command);
                }
                command
            }
        }
    }

    fn program(&self, name: &str) -> Command {
        let mut command = self.sandboxed(name);
        command
            .arg("-h")
            .arg(&self.sockets)
            .args(["-p", &self.port, "-U", &self.role]);
        // Whatever the image's roles and databases set, a client's search path is the
        // catalog's alone (a setting sent by the client outranks them).
        command.env("PGOPTIONS", "-c search_path=pg_catalog");
        command
    }

    /// One value from `database`.
    fn one(&self, database: &str, query: &str) -> Result<String, PostgresError> {
        let mut command = self.psql(database);
        command.args(["-c", query]);
        match output(&mut command)? {
            (true, text) => Ok(text.trim().to_string()),
            (false, text) => Err(PostgresError::Query {
                query: query.to_string(),
                said: text.trim().to_string(),
            }),
        }
    }

    /// pg_amcheck on every database, and every table's rows counted.
    fn check_every_database(&self, check: &mut DatabaseCheck, scratch: &Path) -> Result<(), PostgresError> {
        let databases = self.databases()?;
        self.amcheck(check, &databases);
        for database in &databases {
            match self.count_rows(database, scratch) {
                Ok(mut rows) => check.tables.append(&mut rows),
                Err(problem) => check.fail(problem),
            }
        }
        check.checks.push(format!(
            "{} tables in {} databases counted",
            check.tables.len(),
            databases.len()
        ));
        Ok(())
    }

    fn ready(&self) -> bool {
        let mut command = self.sandboxed("pg_isready");
        command
            .arg("-h")
            .arg(&self.sockets)
            .args(["-p", &self.port, "-q"]);
        output(&mut command).is_ok_and(|(ok, _)| ok)
    }

    fn psql(&self, database: &str) -> Command {
        let mut command = self.program("psql");
        command.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", database]);
        command
    }

    fn databases(&self) -> Result<Vec<String>, PostgresError> {
        let mut command = self.psql("template1");
        command.args([
            "-c",
            "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1",
        ]);
        match output(&mut command)? {
            (true, text) => Ok(text.lines().map(str::to_string).collect()),
            (false, text) => Err(PostgresError::Databases(text.trim().to_string())),
        }
    }

    /// `pg_amcheck` on every database: heap pages and B-tree indexes, read as the server
    /// reads them.
    fn amcheck(&self, check: &mut DatabaseCheck, databases: &[String]) {
        if !self.bin.join("pg_amcheck").is_file() {
            check
                .checks
                .push("pg_amcheck is not installed here: tables counted only".into());
            return;
        }
        let mut command = self.program("pg_amcheck");
        command.arg("--no-password");
        let checked = if self.confined.is_some() {
            command.args(["--all", "--install-missing"]);
            databases.len()
        } else {
            let with: Vec<&String> = databases
                .iter()
                .filter(|d| {
                    self.one(d, "SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'")
                        .is_ok_and(|n| n == "1")
                })
                .collect();
            if with.is_empty() {
                check.checks.push(
                    "pg_amcheck not run: no database has the amcheck extension, and verify \
                     installs nothing into a running server (CREATE EXTENSION amcheck to have \
                     it checked)"
                        .into(),
                );
                return;
            }
            for database in &with {
                command.args(["--database", database]);
            }
            with.len()
        };
        match output(&mut command) {
            Ok((true, said)) if said.trim().is_empty() => check
                .checks
                .push(format!("pg_amcheck: no corruption in {checked} databases")),
            Ok((_, said)) => check.fail(format!(
                "pg_amcheck finds corruption: {}",
                said.lines().take(6).collect::<Vec<_>>().join(" | ")
            )),
            Err(problem) => check.fail(problem),
        }
    }

    /// Every ordinary table's rows in `database`, each read from end to end; the script is
    /// written into `scratch`, a folder of root's, and read by psql from its standard input.
    fn count_rows(&self, database: &str, scratch: &Path) -> Result<Vec<TableRows>, PostgresError> {
        let script = scratch.join("count-rows.sql");
        std::fs::write(&script, COUNT_ROWS).map_err(own("write", &script))?;
        let input = std::fs::File::open(&script).map_err(own("read", &script))?;
        let mut command = self.psql(database);
        match output_from(&mut command, Stdio::from(input))? {
            (true, text) => Ok(text
                .lines()
                .filter_map(|line| {
                    let (table, rows) = line.rsplit_once('|')?;
                    Some(TableRows {
                        table: table.to_string(),
                        rows: rows.parse().ok()?,
                    })
                })
                .collect()),
            (false, text) => Err(PostgresError::Rows {
                database: database.to_string(),
                said: text.trim().to_string(),
            }),
        }
    }
}

/// One `SELECT count(*)` per ordinary table, generated and run by psql's `\gexec`.
const COUNT_ROWS: &str = r"
SELECT format('SELECT %L, pg_catalog.count(*) FROM %I.%I',
              current_database() || '.' || n.nspname || '.' || c.relname, n.nspname, c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
 ORDER BY 1
\gexec
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_must_reach_the_wal_position_of_the_snapshot() {
        let position = LogPosition {
            data_directory: PathBuf::from("/srv/pg/data"),
            lsn: "0/3000148".into(),
        };
        let mut check = DatabaseCheck::new(super::super::DatabaseKind::Postgresql, Path::new("/pg"));
        let past = "LOG:  redo starts at 0/3000028\nLOG:  redo done at 0/30001A0 system usage";
        assert!(reached_the_snapshot_point(&mut check, past, Some(0x3000028), &position).is_ok());
        assert!(check.checks[0].contains("WAL replayed to 0/30001A0, past 0/3000148"));
        let short = "LOG:  redo starts at 0/3000028\nLOG:  redo done at 0/3000100 system usage";
        let err = reached_the_snapshot_point(&mut check, short, None, &position).unwrap_err();
        assert!(
            matches!(&err, PostgresError::RecoveryShort { reached, wanted }
                if reached == "0/3000100" && wanted == "0/3000148"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("recovery ended at WAL 0/3000100, before 0/3000148"),
            "{err}"
        );
        // Nothing replayed: the checkpoint's REDO point counts.
        let none = "LOG:  redo is not required";
        assert!(reached_the_snapshot_point(&mut check, none, Some(0x3000200), &position).is_ok());
        assert!(reached_the_snapshot_point(&mut check, none, Some(0x3000028), &position).is_err());
        assert!(matches!(
            reached_the_snapshot_point(&mut check, "", None, &position),
            Err(PostgresError::RecoveryEndUnknown(_))
        ));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
    }

    #[test]
    fn a_pg_version_is_a_version_or_nothing() {
        assert_eq!(version_of("15\n").unwrap(), ("15".to_string(), 15));
        assert_eq!(version_of("9.6\n").unwrap(), ("9.6".to_string(), 9));
        for bad in ["../../bin", "15/../../x", "", "1.2.3", "١٥", "9.", ".6", "1234"] {
            let err = version_of(bad).unwrap_err();
            assert!(matches!(&err, PostgresError::BadVersion(_)), "{bad:?}: {err:?}");
            assert!(
                err.to_string().contains("not a PostgreSQL version"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn replayed_bytes_come_from_the_redo_lines() {
        let log = "LOG:  redo starts at 0/1A2B3C0\nLOG:  redo done at 1/00000010 system usage: …";
        assert_eq!(replayed(log), Some((1 << 32) + 0x10 - 0x1A2B3C0));
        assert_eq!(replayed("LOG:  redo is not required"), Some(0));
        assert_eq!(replayed("LOG:  database system is ready"), None);
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("nonsense"), None);
    }
}
