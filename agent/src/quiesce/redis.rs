//! Redis: before the freeze, `BGSAVE` and wait until that save finished (and, with AOF, until
//! no rewrite is running), so the disk holds a fresh RDB file and a settled AOF. Nothing is held
//! across the freeze, so `resume` has nothing to undo. Speaks RESP over the Unix socket or TCP,
//! and authenticates with `AUTH` when a password file is configured (`requirepass`).

use super::require_frozen;
use crate::config::RedisEndpoint;
use crate::secret::{read_private_file, Secret};
use crate::transaction::ports::{DatabaseEndpoint, QuiesceError, Quiescer, Target};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// A RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    fn text(&self) -> String {
        match self {
            Reply::Simple(s) | Reply::Error(s) => s.clone(),
            Reply::Integer(i) => i.to_string(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Bulk(None) => String::new(),
            Reply::Array(items) => items.iter().map(Reply::text).collect::<Vec<_>>().join(" "),
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Connection {
    io: BufReader<Box<dyn Stream>>,
}

impl Connection {
    async fn open(endpoint: &RedisEndpoint) -> std::io::Result<Connection> {
        let io: Box<dyn Stream> = match endpoint {
            RedisEndpoint::Socket(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            RedisEndpoint::Tcp(addr) => Box::new(tokio::net::TcpStream::connect(addr).await?),
        };
        Ok(Connection {
            io: BufReader::new(io),
        })
    }

    async fn call(&mut self, args: &[&str]) -> std::io::Result<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.io.get_mut().write_all(&out).await?;
        read_reply(&mut self.io).await
    }
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad RESP reply: {what}"))
}

async fn read_line<R: AsyncBufReadExt + Unpin>(r: &mut R) -> std::io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn read_reply<'a, R: AsyncBufReadExt + Unpin + Send>(
    r: &'a mut R,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Reply>> + Send + 'a>> {
    Box::pin(async move {
        let line = read_line(r).await?;
        let (kind, rest) = line.split_at(line.len().min(1));
        let number = || rest.parse::<i64>().map_err(|_| bad(&line));
        Ok(match kind {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Integer(number()?),
            "$" => match number()? {
                n if n < 0 => Reply::Bulk(None),
                n => {
                    let mut buf = vec![0u8; usize::try_from(n).map_err(|_| bad(&line))? + 2];
                    tokio::io::AsyncReadExt::read_exact(r, &mut buf).await?;
                    buf.truncate(buf.len() - 2);
                    Reply::Bulk(Some(buf))
                }
            },
            "*" => {
                let n = number()?;
                let mut items = Vec::new();
                for _ in 0..n.max(0) {
                    items.push(read_reply(r).await?);
                }
                Reply::Array(items)
            }
            _ => return Err(bad(&line)),
        })
    })
}

/// `field:value` lines of `INFO`.
pub(crate) fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
}

pub(crate) struct Redis {
    endpoint: RedisEndpoint,
    password_file: Option<PathBuf>,
    password: Option<Secret>,
    timeout: Duration,
    name: String,
}

impl Redis {
    pub(crate) fn new(endpoint: RedisEndpoint, password_file: Option<PathBuf>, timeout: Duration) -> Self {
        let name = format!("redis ({endpoint})");
        Redis {
            endpoint,
            password_file,
            password: None,
            timeout,
            name,
        }
    }

    async fn connect(&self) -> Result<Connection, QuiesceError> {
        let mut conn = Connection::open(&self.endpoint).await.map_err(|e| {
            QuiesceError::with_source(format!("cannot connect to Redis at {}", self.endpoint), e)
        })?;
        if let Some(password) = &self.password {
            let reply = conn
                .call(&["AUTH", password.expose()])
                .await
                .map_err(|e| QuiesceError::with_source("Redis AUTH", e))?;
            if let Reply::Error(e) = reply {
                // Redis's answer never repeats the password.
                return Err(QuiesceError::new(format!(
                    "Redis at {} refused the password from {}: {e}",
                    self.endpoint,
                    self.password_file.as_deref().unwrap_or(Path::new("?")).display()
                )));
            }
        }
        Ok(conn)
    }
}

async fn call(conn: &mut Connection, args: &[&str]) -> Result<Reply, QuiesceError> {
    let reply = conn
        .call(args)
        .await
        .map_err(|e| QuiesceError::with_source(format!("Redis {}", args[0]), e))?;
    match reply {
        Reply::Error(e) if e.starts_with("NOAUTH") => Err(QuiesceError::new(
            "Redis wants a password (requirepass): put it in a file only root can read and set \
             `password_file` on a [[quiescer]] kind = \"redis\"",
        )),
        other => Ok(other),
    }
}

async fn persistence(conn: &mut Connection) -> Result<String, QuiesceError> {
    Ok(call(conn, &["INFO", "persistence"]).await?.text())
}

#[async_trait::async_trait]
impl Quiescer for Redis {
    fn name(&self) -> &str {
        &self.name
    }

    fn prepare_timeout(&self) -> Duration {
        self.timeout
    }

    fn endpoint(&self) -> Option<DatabaseEndpoint> {
        let (socket, address) = match &self.endpoint {
            RedisEndpoint::Socket(socket) => (Some(socket.clone()), None),
            RedisEndpoint::Tcp(address) => (None, Some(address.clone())),
        };
        Some(DatabaseEndpoint::Redis {
            socket,
            address,
            password_file: self.password_file.clone(),
        })
    }

    async fn check(&mut self, targets: &[Target]) -> Result<(), QuiesceError> {
        if let Some(file) = &self.password_file {
            self.password = Some(
                read_private_file(file).map_err(|e| QuiesceError::with_source("the Redis password", e))?,
            );
        }
        let mut conn = self.connect().await?;
        let pong = call(&mut conn, &["PING"]).await?;
        if pong != Reply::Simple("PONG".into()) {
            return Err(QuiesceError::new(format!(
                "Redis answered PING with {}",
                pong.text()
            )));
        }
        let dir = match call(&mut conn, &["CONFIG", "GET", "dir"]).await? {
            Reply::Array(items) if items.len() == 2 => PathBuf::from(items[1].text()),
            other => {
                return Err(QuiesceError::new(format!(
                    "cannot read Redis's dir: {}",
                    other.text()
                )))
            }
        };
        require_frozen("Redis's data directory", &dir, targets)
    }

    async fn prepare(&mut self) -> Result<(), QuiesceError> {
        let mut conn = self.connect().await?;
        let before = persistence(&mut conn).await?;
        let saves_before = info_field(&before, "rdb_saves").and_then(|v| v.parse::<u64>().ok());
        let last_before = call(&mut conn, &["LASTSAVE"]).await?.text();
        // A save already running may predate writes acknowledged since: wait, then start ours.
        loop {
            match call(&mut conn, &["BGSAVE"]).await? {
                Reply::Error(e) if e.contains("in progress") => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Reply::Error(e) => return Err(QuiesceError::new(format!("Redis refused BGSAVE: {e}"))),
                _ => break,
            }
        }
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let info = persistence(&mut conn).await?;
            if info_field(&info, "rdb_bgsave_in_progress").as_deref() != Some("0") {
                continue;
            }
            if info_field(&info, "rdb_last_bgsave_status").as_deref() != Some("ok") {
                return Err(QuiesceError::new(format!(
                    "Redis's background save failed (rdb_last_bgsave_status {}); see the Redis log",
                    info_field(&info, "rdb_last_bgsave_status").unwrap_or_default()
                )));
            }
            let saved = match (
                saves_before,
                info_field(&info, "rdb_saves").and_then(|v| v.parse::<u64>().ok()),
            ) {
                (Some(before), Some(now)) => now > before,
                // Older servers: LASTSAVE has one-second resolution.
                _ => call(&mut conn, &["LASTSAVE"]).await?.text() != last_before,
            };
            let aof_settled = info_field(&info, "aof_enabled").as_deref() != Some("1")
                || (info_field(&info, "aof_rewrite_in_progress").as_deref() == Some("0")
                    && info_field(&info, "aof_rewrite_scheduled").as_deref() != Some("1"));
            if saved && aof_settled {
                return Ok(());
            }
        }
    }

    async fn resume(&mut self) -> Result<(), QuiesceError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replies_parse() {
        let text = b"+PONG\r\n-ERR no\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*2\r\n$3\r\ndir\r\n$4\r\n/var\r\n";
        let mut r = BufReader::new(&text[..]);
        assert_eq!(read_reply(&mut r).await.unwrap(), Reply::Simple("PONG".into()));
        assert_eq!(read_reply(&mut r).await.unwrap(), Reply::Error("ERR no".into()));
        assert_eq!(read_reply(&mut r).await.unwrap(), Reply::Integer(42));
        assert_eq!(
            read_reply(&mut r).await.unwrap(),
            Reply::Bulk(Some(b"hello".to_vec()))
        );
        assert_eq!(read_reply(&mut r).await.unwrap(), Reply::Bulk(None));
        let dir = read_reply(&mut r).await.unwrap();
        assert_eq!(dir.text(), "dir /var");
        assert!(read_reply(&mut r).await.is_err(), "end of stream");
    }

    #[test]
    fn info_fields_are_found() {
        let info = "# Persistence\r\nrdb_saves:3\r\nrdb_bgsave_in_progress:0\r\n";
        assert_eq!(info_field(info, "rdb_saves").as_deref(), Some("3"));
        assert_eq!(info_field(info, "rdb_bgsave_in_progress").as_deref(), Some("0"));
        assert_eq!(info_field(info, "aof_enabled"), None);
    }
}
