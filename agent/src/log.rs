//! Logging: tracing to stderr, or to journald with structured fields (JOB=, PHASE=, DROPLET=,
//! ACTION_ID=) when systemd connected stderr to the journal, with a gate that holds every line
//! in memory while filesystems are frozen. stderr may be a file on a frozen filesystem, and
//! journald may be writing to one; a write there would block until the thaw guard's deadline.
//! [`hold`] returns a guard; dropping it writes the held lines out.

use std::io::Write;
use std::sync::Mutex;
use tracing_subscriber::fmt::MakeWriter;

/// Held output past this size is dropped (and counted) rather than grown without bound.
const HOLD_LIMIT: usize = 4 << 20;

struct Gate {
    /// How many [`Hold`]s are alive.
    holders: usize,
    held: Vec<u8>,
    /// Journal entries held, each one datagram.
    held_entries: Vec<Vec<u8>>,
    dropped_bytes: usize,
    /// Where journal entries go, once [`init`] found journald.
    journal: Option<std::os::unix::net::UnixDatagram>,
}

static GATE: Mutex<Gate> = Mutex::new(Gate {
    holders: 0,
    held: Vec::new(),
    held_entries: Vec::new(),
    dropped_bytes: 0,
    journal: None,
});

fn gate() -> std::sync::MutexGuard<'static, Gate> {
    GATE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// While alive, log output stays in memory. Dropping the last one flushes it to stderr.
#[must_use = "output is held only while the Hold is alive"]
pub(crate) struct Hold(());

/// Starts holding log output in memory.
pub(crate) fn hold() -> Hold {
    let mut g = gate();
    if g.holders == 0 && g.held.capacity() == 0 {
        g.held.reserve(64 << 10);
    }
    g.holders += 1;
    Hold(())
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut g = gate();
        g.holders -= 1;
        if g.holders > 0 {
            return;
        }
        let held = std::mem::take(&mut g.held);
        let dropped = std::mem::take(&mut g.dropped_bytes);
        for entry in std::mem::take(&mut g.held_entries) {
            send_entry(&g, &entry);
        }
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&held);
        if dropped > 0 {
            let _ = writeln!(
                err,
                "freezeframe-agent: {dropped} bytes of log output were dropped while frozen"
            );
        }
    }
}

#[cfg(test)]
/// Whether output is being held now (for tests and assertions).
pub(crate) fn is_holding() -> bool {
    gate().holders > 0
}

/// Writes `bytes` to stderr, or holds them while a [`Hold`] is alive.
fn emit(bytes: &[u8]) -> std::io::Result<()> {
    let mut g = gate();
    if g.holders > 0 {
        if g.held.len() + bytes.len() <= HOLD_LIMIT {
            g.held.extend_from_slice(bytes);
        } else {
            g.dropped_bytes += bytes.len();
        }
        return Ok(());
    }
    // Written under the lock so a line cannot slip out between a check and a Hold.
    std::io::stderr().lock().write_all(bytes)
}

/// Sends one journal entry; never blocks (journald may itself be stuck on a frozen disk).
fn send_entry(g: &Gate, entry: &[u8]) {
    if let Some(journal) = &g.journal {
        let _ = journal.send(entry);
    }
}

/// Sends a journal entry, or holds it while a [`Hold`] is alive.
fn emit_entry(entry: Vec<u8>) {
    let mut g = gate();
    if g.holders > 0 {
        let size: usize = g.held.len() + g.held_entries.iter().map(Vec::len).sum::<usize>();
        if size + entry.len() <= HOLD_LIMIT {
            g.held_entries.push(entry);
        } else {
            g.dropped_bytes += entry.len();
        }
        return;
    }
    send_entry(&g, &entry);
}

/// One field in journald's native protocol: `KEY=value\n`, or, for a value with a newline,
/// `KEY\n`, its length as 64-bit little-endian, the value, `\n`.
fn journal_field(entry: &mut Vec<u8>, key: &str, value: &str) {
    if value.contains('\n') {
        entry.extend_from_slice(key.as_bytes());
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
        entry.extend_from_slice(value.as_bytes());
        entry.push(b'\n');
    } else {
        entry.extend_from_slice(format!("{key}={value}\n").as_bytes());
    }
}

/// A journal field name from a tracing field name: `action_id` → `ACTION_ID`; names journald
/// would refuse (leading digit or underscore, other characters) are dropped.
fn journal_key(name: &str) -> Option<String> {
    let key: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    (!key.is_empty() && key.len() <= 64 && key.starts_with(|c: char| c.is_ascii_uppercase())).then_some(key)
}

/// Turns tracing events into journal entries: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER and every
/// field of the event as its own journal field.
struct JournalLayer;

#[derive(Default)]
struct Fields {
    message: String,
    extra: Vec<(String, String)>,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.record(field.name(), value.to_string());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.record(field.name(), format!("{value:?}"));
    }
}

impl Fields {
    fn record(&mut self, name: &str, value: String) {
        if name == "message" {
            self.message = value;
        } else if let Some(key) = journal_key(name) {
            self.extra.push((key, value));
        }
    }
}

/// The journal entry for one event.
fn journal_entry(level: tracing::Level, fields: &Fields) -> Vec<u8> {
    let priority = match level {
        tracing::Level::ERROR => "3",
        tracing::Level::WARN => "4",
        tracing::Level::INFO => "6",
        _ => "7",
    };
    let mut message = fields.message.clone();
    for (key, value) in &fields.extra {
        message.push_str(&format!(" {}={value}", key.to_ascii_lowercase()));
    }
    let mut entry = Vec::new();
    journal_field(&mut entry, "MESSAGE", &message);
    journal_field(&mut entry, "PRIORITY", priority);
    journal_field(&mut entry, "SYSLOG_IDENTIFIER", "freezeframe-agent");
    for (key, value) in &fields.extra {
        journal_field(&mut entry, key, value);
    }
    entry
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for JournalLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        emit_entry(journal_entry(*event.metadata().level(), &fields));
    }
}

/// journald's socket, when systemd connected our stderr to the journal (`$JOURNAL_STREAM` names
/// stderr's device and inode).
fn journal_socket() -> Option<std::os::unix::net::UnixDatagram> {
    let stream = std::env::var("JOURNAL_STREAM").ok()?;
    let (dev, ino) = stream.split_once(':')?;
    let stderr = nix::sys::stat::fstat(std::io::stderr()).ok()?;
    if stderr.st_dev.to_string() != dev || stderr.st_ino.to_string() != ino {
        return None;
    }
    let socket = std::os::unix::net::UnixDatagram::unbound().ok()?;
    socket.connect("/run/systemd/journal/socket").ok()?;
    socket.set_nonblocking(true).ok()?;
    Some(socket)
}

/// The writer handed to tracing.
#[derive(Clone, Copy, Default)]
pub(crate) struct GatedStderr;

impl Write for GatedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        emit(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for GatedStderr {
    type Writer = GatedStderr;
    fn make_writer(&'a self) -> Self::Writer {
        GatedStderr
    }
}

/// Installs the tracing subscriber (stderr, no timestamps: journald adds its own) and a panic
/// hook that goes through the gate too. `verbosity` counts `-v` flags; `RUST_LOG` overrides.
pub(crate) fn init(verbosity: u8) {
    let level = match verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    if let Some(journal) = journal_socket() {
        use tracing_subscriber::layer::SubscriberExt;
        gate().journal = Some(journal);
        let subscriber = tracing_subscriber::registry().with(filter).with(JournalLayer);
        let _ = tracing::subscriber::set_global_default(subscriber);
    } else {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(GatedStderr)
            .without_time()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .try_init();
    }
    std::panic::set_hook(Box::new(|info| {
        let _ = emit(format!("freezeframe-agent: {info}\n").as_bytes());
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the gate is process-wide, and tests run in parallel threads.
    #[test]
    fn held_output_is_kept_until_the_last_hold_ends_and_bounded() {
        let outer = hold();
        let inner = hold();
        emit(b"line\n").unwrap();
        assert!(gate().held.ends_with(b"line\n"));
        drop(inner);
        assert!(is_holding(), "one hold is still alive");
        assert!(gate().held.ends_with(b"line\n"));
        drop(outer);
        assert!(gate().held.is_empty(), "flushed when the last hold ended");

        let h = hold();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..6 {
            emit(&chunk).unwrap();
        }
        {
            let g = gate();
            assert!(g.held.len() <= HOLD_LIMIT);
            assert!(g.dropped_bytes >= 2 << 20);
        }
        drop(h);

        // Journal entries wait behind the same gate.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journald = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        journald.set_nonblocking(true).unwrap();
        let socket = std::os::unix::net::UnixDatagram::unbound().unwrap();
        socket.connect(&path).unwrap();
        gate().journal = Some(socket);
        let fields = Fields {
            message: "phase finished".into(),
            extra: vec![
                ("JOB".into(), "7".into()),
                ("ACTION_ID".into(), "36804636".into()),
                ("ERROR".into(), "two\nlines".into()),
            ],
        };
        let h = hold();
        emit_entry(journal_entry(tracing::Level::WARN, &fields));
        let mut buf = [0u8; 4096];
        assert!(journald.recv(&mut buf).is_err(), "nothing is sent while held");
        drop(h);
        let n = journald.recv(&mut buf).unwrap();
        let entry = &buf[..n];
        let text = String::from_utf8_lossy(entry);
        assert!(
            text.contains("PRIORITY=4\nSYSLOG_IDENTIFIER=freezeframe-agent\nJOB=7\nACTION_ID=36804636\n"),
            "{text}"
        );
        let mut multi = b"ERROR\n".to_vec();
        multi.extend_from_slice(&9u64.to_le_bytes());
        multi.extend_from_slice(b"two\nlines\n");
        assert!(entry.ends_with(&multi), "{text}");
        gate().journal = None;
    }

    #[test]
    fn journal_keys_are_journald_names() {
        assert_eq!(journal_key("action_id").as_deref(), Some("ACTION_ID"));
        assert_eq!(journal_key("job").as_deref(), Some("JOB"));
        assert_eq!(journal_key("_private"), None);
        assert_eq!(journal_key("2fast"), None);
    }
}
