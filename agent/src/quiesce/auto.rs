//! Zero configuration: turns a database unit that systemd runs into the settings of its native
//! quiescer, read from the unit's main process in /proc: PostgreSQL's data directory (its
//! working directory) and `postmaster.pid` give the port and socket directory; MariaDB's and
//! Redis's listening sockets say where to connect.

use crate::config::QuiescerSettings;
use crate::config::RedisEndpoint;
use crate::systemd::discovery::{DatabaseKind, DatabaseUnit};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a detected database unit will be quiesced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Handler {
    /// Its native quiescer, with settings read from the running process.
    Native(QuiescerSettings),
    /// A `[[quiescer]]` in the configuration handles it.
    Configured,
    /// Nothing: the snapshot of its data is only crash-consistent. Says why and what to do.
    Unhandled(Unhandled),
}

/// Why a detected database gets no native quiescer, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unhandled {
    /// systemd names no main process to read the settings from.
    #[error("it has no main process")]
    NoMainProcess,
    /// A kind freezeframe has no quiescer for.
    #[error(
        "freezeframe has no native MongoDB quiescer; add [[quiescer]] kind = \"systemd\" with \
         this unit, or a hook script"
    )]
    NoMongodbQuiescer,
    /// PostgreSQL's working directory (its data directory) cannot be read.
    #[error("cannot read its data directory: {problem}")]
    DataDirectory { problem: String },
    /// PostgreSQL's `postmaster.pid` cannot be read.
    #[error("cannot read {}: {problem}", file.display())]
    PidFile { file: PathBuf, problem: String },
    /// PostgreSQL listens on no unix socket.
    #[error(
        "{} names no socket directory (unix_socket_directories is empty); configure \
         [[quiescer]] kind = \"postgresql\"",
        file.display()
    )]
    NoSocketDirectory { file: PathBuf },
    /// The OS user it runs as (whom PostgreSQL's peer authentication lets in) is unknown.
    #[error(transparent)]
    User(#[from] UnknownUser),
    /// Its sockets cannot be listed.
    #[error("cannot list its sockets: {problem}")]
    Sockets { problem: String },
    /// MariaDB listens on no unix socket.
    #[error(
        "it listens on no unix socket, which the lock session needs; configure [[quiescer]] \
         kind = \"mariadb\" with `socket`"
    )]
    NoUnixSocket,
    /// Redis listens on nothing.
    #[error("it listens on no socket")]
    NoSocket,
}

/// Why the OS user of a process is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UnknownUser {
    /// Its /proc status cannot be read (it exited?).
    #[error("cannot read its process status: {problem}")]
    Status { problem: String },
    /// Its status names no uid.
    #[error("no Uid in its status")]
    NoUid,
    /// The uid has no name in this machine's accounts.
    #[error("uid {0} has no user name")]
    NoName(u32),
}

/// A database unit and how it will be quiesced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Detected {
    pub unit: String,
    pub kind: DatabaseKind,
    pub main_pid: u32,
    pub handler: Handler,
}

/// Where /proc is; tests of the parsers use files of their own.
#[derive(Debug, Clone)]
pub(crate) struct Proc {
    root: PathBuf,
}

impl Default for Proc {
    fn default() -> Self {
        Proc {
            root: PathBuf::from("/proc"),
        }
    }
}

impl Proc {
    fn of(&self, pid: u32) -> PathBuf {
        self.root.join(pid.to_string())
    }

    /// The unix-socket paths and TCP addresses `pid` listens on.
    pub(crate) fn listeners(&self, pid: u32) -> std::io::Result<Listeners> {
        let dir = self.of(pid);
        let mut inodes = std::collections::HashSet::new();
        for entry in std::fs::read_dir(dir.join("fd"))? {
            let Ok(target) = std::fs::read_link(entry?.path()) else {
                continue;
            };
            let target = target.to_string_lossy().into_owned();
            if let Some(inode) = target.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                if let Ok(inode) = inode.parse::<u64>() {
                    inodes.insert(inode);
                }
            }
        }
        let read = |name: &str| std::fs::read_to_string(dir.join("net").join(name)).unwrap_or_default();
        let mut found = Listeners {
            unix: parse_unix_listeners(&read("unix"), &inodes),
            tcp: parse_tcp_listeners(&read("tcp"), &inodes),
        };
        found.tcp.extend(parse_tcp_listeners(&read("tcp6"), &inodes));
        Ok(found)
    }
}

/// Where a process accepts connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Listeners {
    pub unix: Vec<PathBuf>,
    pub tcp: Vec<std::net::SocketAddr>,
}

/// Listening unix sockets (`__SO_ACCEPTCON` in the flags) among `inodes`, from /proc/net/unix.
fn parse_unix_listeners(table: &str, inodes: &std::collections::HashSet<u64>) -> Vec<PathBuf> {
    const ACCEPTING: u32 = 0x0001_0000;
    let mut paths: Vec<PathBuf> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            let inode: u64 = f.get(6)?.parse().ok()?;
            let path = f.get(7)?;
            (flags & ACCEPTING != 0 && inodes.contains(&inode) && path.starts_with('/'))
                .then(|| PathBuf::from(path))
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// Listening TCP sockets (state 0A) among `inodes`, from /proc/net/tcp or tcp6.
fn parse_tcp_listeners(table: &str, inodes: &std::collections::HashSet<u64>) -> Vec<std::net::SocketAddr> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if *f.get(3)? != "0A" || !inodes.contains(&f.get(9)?.parse().ok()?) {
                return None;
            }
            let (addr, port) = f.get(1)?.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            // The kernel prints each 32-bit word of the address in host byte order.
            let words: Vec<u32> = (0..addr.len() / 8)
                .map(|i| u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16))
                .collect::<Result<_, _>>()
                .ok()?;
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
            let ip = match bytes.len() {
                4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
                16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
                _ => return None,
            };
            Some(std::net::SocketAddr::new(ip, port))
        })
        .collect()
}

/// An address to reach a listener on: the loopback one for a wildcard.
fn reachable(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    std::net::SocketAddr::new(ip, addr.port())
}

/// The OS user a process runs as.
fn process_user(proc_dir: &Path) -> Result<String, UnknownUser> {
    let status = std::fs::read_to_string(proc_dir.join("status")).map_err(|e| UnknownUser::Status {
        problem: e.to_string(),
    })?;
    let uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .ok_or(UnknownUser::NoUid)?;
    match nix::unistd::User::from_uid(uid.into()) {
        Ok(Some(user)) => Ok(user.name),
        _ => Err(UnknownUser::NoName(uid)),
    }
}

/// PostgreSQL's port and first socket directory, from `postmaster.pid` in its data directory:
/// line 4 is the port, line 5 the socket directory.
fn parse_postmaster_pid(text: &str) -> Option<(u16, PathBuf)> {
    let lines: Vec<&str> = text.lines().collect();
    let port = lines.get(3)?.trim().parse().ok()?;
    let socket_dir = lines.get(4)?.trim();
    (!socket_dir.is_empty()).then(|| (port, PathBuf::from(socket_dir)))
}

impl Proc {
    /// The settings of `db`'s native quiescer, or why there are none.
    pub(crate) fn handler(&self, db: &DatabaseUnit, timeout: Duration) -> Handler {
        let Some(pid) = db.unit.main_pid else {
            return Handler::Unhandled(Unhandled::NoMainProcess);
        };
        let found = match db.kind {
            DatabaseKind::Postgresql => self.postgres(pid, timeout),
            DatabaseKind::Mariadb => self.mariadb(pid, timeout),
            DatabaseKind::Redis => self.redis(pid, timeout),
            DatabaseKind::Mongodb => Err(Unhandled::NoMongodbQuiescer),
        };
        found.map_or_else(Handler::Unhandled, Handler::Native)
    }

    fn postgres(&self, pid: u32, timeout: Duration) -> Result<QuiescerSettings, Unhandled> {
        let dir = self.of(pid);
        let data_dir = std::fs::read_link(dir.join("cwd")).map_err(|e| Unhandled::DataDirectory {
            problem: e.to_string(),
        })?;
        let pid_file = data_dir.join("postmaster.pid");
        let text = std::fs::read_to_string(
            dir.join("root")
                .join(pid_file.strip_prefix("/").unwrap_or(&pid_file)),
        )
        .map_err(|e| Unhandled::PidFile {
            file: pid_file.clone(),
            problem: e.to_string(),
        })?;
        let (port, socket_dir) =
            parse_postmaster_pid(&text).ok_or(Unhandled::NoSocketDirectory { file: pid_file })?;
        Ok(QuiescerSettings::Postgresql {
            socket_dir,
            port,
            os_user: process_user(&dir)?,
            checkpoint: true,
            timeout,
        })
    }

    fn mariadb(&self, pid: u32, timeout: Duration) -> Result<QuiescerSettings, Unhandled> {
        let listeners = self.listeners(pid).map_err(|e| Unhandled::Sockets {
            problem: e.to_string(),
        })?;
        let socket = listeners.unix.into_iter().next().ok_or(Unhandled::NoUnixSocket)?;
        Ok(QuiescerSettings::Mariadb {
            socket,
            login: crate::config::MariadbLogin::default(),
            lock_wait_timeout: crate::config::DEFAULT_LOCK_WAIT_TIMEOUT,
            timeout,
        })
    }

    fn redis(&self, pid: u32, timeout: Duration) -> Result<QuiescerSettings, Unhandled> {
        let listeners = self.listeners(pid).map_err(|e| Unhandled::Sockets {
            problem: e.to_string(),
        })?;
        let endpoint = match (
            listeners.unix.into_iter().next(),
            listeners.tcp.into_iter().next(),
        ) {
            (Some(socket), _) => RedisEndpoint::Socket(socket),
            (None, Some(addr)) => RedisEndpoint::Tcp(reachable(addr).to_string()),
            (None, None) => return Err(Unhandled::NoSocket),
        };
        Ok(QuiescerSettings::Redis {
            endpoint,
            password_file: None,
            timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_listeners_are_the_accepting_sockets_of_the_process() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 1001 /run/mysqld/mysqld.sock\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 1002 /run/mysqld/mysqld.sock\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 1003 /run/other.sock\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 1004 @abstract\n";
        let inodes = [1001, 1002, 1004].into_iter().collect();
        assert_eq!(
            parse_unix_listeners(table, &inodes),
            vec![PathBuf::from("/run/mysqld/mysqld.sock")]
        );
    }

    #[test]
    fn tcp_listeners_decode_v4_and_v6() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000   108        0 2001 1\n\
           1: 0100007F:9C40 0100007F:18EB 01 00000000:00000000 00:00000000 00000000   108        0 2002 1\n";
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 00000000000000000000000001000000:18EB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   108        0 2003 1\n";
        let inodes = [2001, 2002, 2003].into_iter().collect();
        assert_eq!(
            parse_tcp_listeners(v4, &inodes),
            vec!["127.0.0.1:6379".parse().unwrap()]
        );
        assert_eq!(
            parse_tcp_listeners(v6, &inodes),
            vec!["[::1]:6379".parse().unwrap()]
        );
        assert_eq!(
            reachable("0.0.0.0:6379".parse().unwrap()),
            "127.0.0.1:6379".parse().unwrap()
        );
    }

    #[test]
    fn postmaster_pid_gives_port_and_socket_directory() {
        let text = "4242\n/var/lib/postgresql/15/main\n1700000000\n5433\n/var/run/postgresql\n*\n  5433001     0\nready   \n";
        assert_eq!(
            parse_postmaster_pid(text),
            Some((5433, PathBuf::from("/var/run/postgresql")))
        );
        assert_eq!(parse_postmaster_pid("4242\n/data\n1\n5432\n\n"), None);
    }
}
