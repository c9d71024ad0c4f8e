//! Redis from a restored RDB dump, in its sandbox (sandbox.rs): `redis-check-rdb` on the file,
//! then a server loading it on a private socket (no port, no saving, no append-only file), its keys counted, then stopped.
//! An instance that runs with `appendonly yes` restores from its AOF, not from this dump: the
//! dump is still what the Redis quiescer's BGSAVE wrote, so it is what is checked. On a restored
//! machine (`check_running`): the server its boot started answers, its keys are counted, and
//! the dump it loaded is checked in place (read-only).

use super::databases::DatabaseCheck;
use super::sandbox::{Confined, DATA, RUN};
use super::server::{output, Server, ServerError};
use crate::config::RedisEndpoint;
use crate::secret::{read_private_file, SecretFileError};
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Why a Redis check stopped: what the check records.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisError {
    /// A client or the server could not be run.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// redis-check-rdb says the dump is damaged: its words.
    #[error("redis-check-rdb finds the dump damaged: {0}")]
    Damaged(String),
    /// The password file of a running server's quiescer cannot be used.
    #[error("the Redis password: {0}")]
    Password(#[source] SecretFileError),
    /// The running server did not answer within `--wait`.
    #[error("Redis at {endpoint} did not answer within {} (`--wait`)", humantime::format_duration(*.wait))]
    NotAnswering { endpoint: String, wait: Duration },
}

/// Checks the dump `file` in the folder prepared in `confined`.
pub(crate) fn check(mut check: DatabaseCheck, confined: &Confined, file: &OsStr) -> DatabaseCheck {
    if let Err(problem) = run(&mut check, confined, file) {
        check.fail(problem);
    }
    check
}

/// `redis-check-rdb` on a dump (`command` runs it where it belongs).
fn check_dump(check: &mut DatabaseCheck, mut command: Command, dump: &Path) -> Result<(), RedisError> {
    let (sound, said) = output(command.arg(dump))?;
    if !sound {
        let why: Vec<&str> = said
            .lines()
            .filter(|l| l.contains("--- ") || l.contains("Error") || l.contains("error"))
            .take(4)
            .collect();
        return Err(RedisError::Damaged(why.join(" | ")));
    }
    check.checks.push("redis-check-rdb: the dump is sound".into());
    Ok(())
}

/// The server a restored machine's boot started, at `endpoint`, with the quiescer's password.
pub(crate) fn check_running(
    mut check: DatabaseCheck,
    endpoint: &RedisEndpoint,
    password_file: Option<&Path>,
    wait: Duration,
) -> DatabaseCheck {
    if let Err(problem) = running(&mut check, endpoint, password_file, wait) {
        check.fail(problem);
    }
    check
}

fn running(
    check: &mut DatabaseCheck,
    endpoint: &RedisEndpoint,
    password_file: Option<&Path>,
    wait: Duration,
) -> Result<(), RedisError> {
    let password = match password_file {
        Some(file) => Some(read_private_file(file).map_err(RedisError::Password)?),
        None => None,
    };
    let cli = |args: &[&str]| {
        let mut command = Command::new("redis-cli");
        match endpoint {
            RedisEndpoint::Socket(socket) => command.arg("-s").arg(socket),
            RedisEndpoint::Tcp(address) => {
                let (host, port) = address.rsplit_once(':').unwrap_or((address, "6379"));
                command.args(["-h", host, "-p", port])
            }
        };
        if let Some(password) = &password {
            // The environment, not the command line, which any local user can read.
            command.env("REDISCLI_AUTH", password.expose());
        }
        command.args(args);
        output(&mut command)
    };
    if !super::server::wait_until(wait, || {
        cli(&["PING"]).is_ok_and(|(_, said)| said.trim() == "PONG")
    }) {
        return Err(RedisError::NotAnswering {
            endpoint: endpoint.to_string(),
            wait,
        });
    }
    check.checks.push("answering, its data loaded".into());
    let (_, keyspace) = cli(&["INFO", "keyspace"])?;
    check.keys = Some(keys(&keyspace));
    let setting = |name: &str| {
        cli(&["CONFIG", "GET", name]).map(|(_, said)| said.lines().nth(1).unwrap_or_default().to_string())
    };
    let dump = Path::new(&setting("dir")?).join(setting("dbfilename")?);
    check.path = dump.clone();
    if dump.is_file() {
        check_dump(check, Command::new("redis-check-rdb"), &dump)?;
    }
    Ok(())
}

fn run(check: &mut DatabaseCheck, confined: &Confined, file: &OsStr) -> Result<(), RedisError> {
    let dump = Path::new(DATA).join(file);
    check_dump(check, confined.command("redis-check-rdb"), &dump)?;
    let socket = format!("{RUN}/redis.sock");
    let mut command = confined.command("redis-server");
    command
        .args(["--port", "0", "--unixsocket", &socket])
        .args(["--unixsocketperm", "700", "--dir", DATA])
        .arg("--dbfilename")
        .arg(file)
        .args(["--appendonly", "no", "--save", "", "--daemonize", "no"]);
    let mut server = Server::start(command, &confined.log_file("redis.log"))?;
    let cli = |args: &[&str]| {
        let mut command = confined.command("redis-cli");
        command.args(["-s", &socket]).args(args);
        output(&mut command)
    };
    // PING answers LOADING until the whole dump is in memory.
    let took = server.wait_ready(|| cli(&["PING"]).is_ok_and(|(_, said)| said.trim() == "PONG"))?;
    check.recovery_seconds = Some(took.as_secs_f64());
    let (_, keyspace) = cli(&["INFO", "keyspace"])?;
    check.keys = Some(keys(&keyspace));
    server.stop();
    Ok(())
}

/// Keys in every database, from `INFO keyspace` (`db0:keys=5,expires=0,avg_ttl=0`).
fn keys(keyspace: &str) -> u64 {
    keyspace
        .lines()
        .filter_map(|line| {
            line.split_once(":keys=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_summed_over_databases() {
        let info = "# Keyspace\r\ndb0:keys=5,expires=0,avg_ttl=0\r\ndb3:keys=2,expires=1,avg_ttl=9\r\n";
        assert_eq!(super::keys(info), 7);
        assert_eq!(super::keys("# Keyspace\r\n"), 0);
    }
}
