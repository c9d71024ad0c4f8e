//! PostgreSQL from a restored data directory: started as its owner on a private socket with
//! none of the cluster's settings that reach outside (its `postgresql.conf` is not read;
//! archiving, replication and listening on the network are off), recovered, checked with
//! `pg_amcheck` on every database and by counting every table's rows, then stopped. On a
//! restored machine (`check_running`), the same checks on the server its boot started.

use super::databases::{DatabaseCheck, TableRows};
use super::server::{output, Owner, Server};
use crate::transaction::ports::LogPosition;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const PORT: &str = "5432";

/// Starts the data directory `data` (an overlay) and checks it; `position`, from the snapshot's
/// marker, is where its WAL stood when the snapshot was taken, which recovery must reach.
pub(crate) fn check(
    mut check: DatabaseCheck,
    data: &Path,
    scratch: &Path,
    position: Option<&LogPosition>,
) -> DatabaseCheck {
    if let Err(problem) = run(&mut check, data, scratch, position) {
        check.fail(problem);
    }
    check
}

fn run(
    check: &mut DatabaseCheck,
    data: &Path,
    scratch: &Path,
    position: Option<&LogPosition>,
) -> Result<(), String> {
    let version = std::fs::read_to_string(data.join("PG_VERSION"))
        .map_err(|e| format!("cannot read its PG_VERSION: {e}"))?;
    let version = version.trim();
    let bin = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
    if !bin.join("postgres").is_file() {
        return Err(format!(
            "PostgreSQL {version}'s server is not installed here, so this data directory could \
             not be started: install postgresql-{version} where verify runs"
        ));
    }
    let owner = Owner::of(data)?;
    let client = Client {
        bin,
        sockets: owner.private_dir(&scratch.join("sockets"))?,
        port: PORT.into(),
        run_as: None,
        overlay: true,
        // Trust on our own socket admits any role that exists; the bootstrap superuser is
        // named after the user who ran initdb, which owns the data directory.
        role: nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(owner.uid))
            .ok()
            .flatten()
            .map_or_else(|| "postgres".to_string(), |u| u.name),
    };
    forget_the_live_server(check, data);
    let redo_point = checkpoint_redo(&client.bin, data);
    let mut server = Server::start(
        client.server_command(data, &settings(scratch)?, owner),
        &scratch.join("postgresql.log"),
    )?;
    let took = server.wait_ready(|| client.ready())?;
    check.recovery_seconds = Some(took.as_secs_f64());
    check.replayed_bytes = replayed(&server.log());
    if let Some(position) = position {
        reached_the_snapshot_point(check, &server.log(), redo_point, position)?;
    }
    client.check_every_database(check, scratch)?;
    server.stop();
    Ok(())
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
) -> Result<(), String> {
    let user = nix::unistd::User::from_name(os_user)
        .ok()
        .flatten()
        .ok_or_else(|| format!("no user {os_user} here to reach PostgreSQL as"))?;
    let mut client = Client {
        bin: PathBuf::from("/usr/bin"),
        sockets: socket_dir.to_path_buf(),
        port: port.to_string(),
        role: os_user.to_string(),
        run_as: Some(Owner {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }),
        overlay: false,
    };
    if !super::server::wait_until(wait, || client.ready()) {
        return Err(format!(
            "PostgreSQL at {} port {port} did not accept connections within {} (`--wait`)",
            socket_dir.display(),
            humantime::format_duration(wait)
        ));
    }
    let version = client.one("template1", "SHOW server_version_num")?;
    let major = version
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("server version {version}?"))?
        / 10000;
    client.bin = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
    check.path = PathBuf::from(client.one("template1", "SHOW data_directory")?.trim());
    if client.one("template1", "SELECT pg_is_in_recovery()")?.trim() != "f" {
        return Err("the server is still in recovery (is it a standby?)".into());
    }
    check
        .checks
        .push("accepting connections, recovery finished".into());
    std::fs::create_dir_all(scratch).map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    client.check_every_database(check, scratch)
}

/// The files that tie the data directory to the machine it was copied from, removed from the
/// overlay: the live server's pid file (its pid may be alive here), and the signals that would
/// start a standby that follows a primary. The copy starts as a primary of its own.
fn forget_the_live_server(check: &mut DatabaseCheck, data: &Path) {
    let _ = std::fs::remove_file(data.join("postmaster.pid"));
    for signal in ["standby.signal", "recovery.signal"] {
        if std::fs::remove_file(data.join(signal)).is_ok() {
            check
                .checks
                .push(format!("{signal} was in the image: started as a primary instead"));
        }
    }
}

/// The settings files the copy runs with, in place of the cluster's own.
struct Settings {
    config: PathBuf,
    hba: PathBuf,
    ident: PathBuf,
}

fn settings(scratch: &Path) -> Result<Settings, String> {
    let files = Settings {
        config: scratch.join("postgresql.conf"),
        hba: scratch.join("pg_hba.conf"),
        ident: scratch.join("pg_ident.conf"),
    };
    for (path, text) in [
        (&files.config, ""),
        (&files.hba, "local all all trust\n"),
        (&files.ident, ""),
    ] {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(files)
}

/// The REDO location of the image's latest checkpoint (where recovery starts), from
/// `pg_controldata`, read before the server runs.
fn checkpoint_redo(bin: &Path, data: &Path) -> Option<u64> {
    let (_, text) = output(Command::new(bin.join("pg_controldata")).arg("-D").arg(data)).ok()?;
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
) -> Result<(), String> {
    let wanted = parse_lsn(&position.lsn)
        .ok_or_else(|| format!("the marker's WAL position `{}` is not an LSN", position.lsn))?;
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
        Some(reached) => Err(format!(
            "recovery ended at WAL {}, before {} where the WAL stood when the snapshot was \
             taken: WAL written before the freeze is damaged or missing, and the transactions \
             it held are lost",
            format_lsn(reached),
            position.lsn
        )),
        None => Err(format!(
            "the server's log does not say where recovery ended, so reaching the snapshot's WAL \
             position {} cannot be shown",
            position.lsn
        )),
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
struct Client {
    bin: PathBuf,
    sockets: PathBuf,
    port: String,
    role: String,
    /// Whom the clients run as (peer authentication); root otherwise.
    run_as: Option<Owner>,
    /// Its writes land on a throwaway overlay: amcheck may be installed. A running server's
    /// databases are only read.
    overlay: bool,
}

impl Client {
    fn server_command(&self, data: &Path, settings: &Settings, owner: Owner) -> Command {
        let mut command = Command::new(self.bin.join("postgres"));
        owner.apply(&mut command).arg("-D").arg(data);
        let settings = [
            ("config_file", settings.config.display().to_string()),
            ("hba_file", settings.hba.display().to_string()),
            ("ident_file", settings.ident.display().to_string()),
            ("unix_socket_directories", self.sockets.display().to_string()),
            ("listen_addresses", String::new()),
            ("port", self.port.clone()),
            ("archive_mode", "off".into()),
            ("primary_conninfo", String::new()),
            ("restore_command", String::new()),
            ("logging_collector", "off".into()),
        ];
        for (key, value) in settings {
            command.arg("-c").arg(format!("{key}={value}"));
        }
        command
    }

    fn program(&self, name: &str) -> Command {
        let mut command = Command::new(self.bin.join(name));
        if let Some(owner) = self.run_as {
            owner.apply(&mut command);
        }
        command
            .arg("-h")
            .arg(&self.sockets)
            .args(["-p", &self.port, "-U", &self.role]);
        command
    }

    /// One value from `database`.
    fn one(&self, database: &str, query: &str) -> Result<String, String> {
        let mut command = self.psql(database);
        command.args(["-c", query]);
        match output(&mut command)? {
            (true, text) => Ok(text.trim().to_string()),
            (false, text) => Err(format!("`{query}` failed: {}", text.trim())),
        }
    }

    /// pg_amcheck on every database, and every table's rows counted.
    fn check_every_database(&self, check: &mut DatabaseCheck, scratch: &Path) -> Result<(), String> {
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
        let mut command = Command::new(self.bin.join("pg_isready"));
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

    fn databases(&self) -> Result<Vec<String>, String> {
        let mut command = self.psql("template1");
        command.args([
            "-c",
            "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1",
        ]);
        match output(&mut command)? {
            (true, text) => Ok(text.lines().map(str::to_string).collect()),
            (false, text) => Err(format!("cannot list its databases: {}", text.trim())),
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
        let checked = if self.overlay {
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

    /// Every ordinary table's rows in `database`, each read from end to end.
    fn count_rows(&self, database: &str, scratch: &Path) -> Result<Vec<TableRows>, String> {
        let script = scratch.join("count-rows.sql");
        std::fs::write(&script, COUNT_ROWS).map_err(|e| format!("cannot write {}: {e}", script.display()))?;
        let mut command = self.psql(database);
        command.arg("-f").arg(&script);
        match output(&mut command)? {
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
            (false, text) => Err(format!(
                "reading every row of database {database} failed: {}",
                text.trim()
            )),
        }
    }
}

/// One `SELECT count(*)` per ordinary table, generated and run by psql's `\gexec`.
const COUNT_ROWS: &str = r"
SELECT format('SELECT %L, count(*) FROM %I.%I',
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
            err.contains("recovery ended at WAL 0/3000100, before 0/3000148"),
            "{err}"
        );
        // Nothing replayed: the checkpoint's REDO point counts.
        let none = "LOG:  redo is not required";
        assert!(reached_the_snapshot_point(&mut check, none, Some(0x3000200), &position).is_ok());
        assert!(reached_the_snapshot_point(&mut check, none, Some(0x3000028), &position).is_err());
        assert!(reached_the_snapshot_point(&mut check, "", None, &position).is_err());
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
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
