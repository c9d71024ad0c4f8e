//! Logging: tracing to stderr, with a gate that holds every line in memory while filesystems are
//! frozen. stderr may be a file on a frozen filesystem; a write there would block until the thaw
//! guard's deadline. [`hold`] returns a guard; dropping it writes the held lines out.

use std::io::Write;
use std::sync::Mutex;
use tracing_subscriber::fmt::MakeWriter;

/// Held output past this size is dropped (and counted) rather than grown without bound.
const HOLD_LIMIT: usize = 4 << 20;

struct Gate {
    /// How many [`Hold`]s are alive.
    holders: usize,
    held: Vec<u8>,
    dropped_bytes: usize,
}

static GATE: Mutex<Gate> = Mutex::new(Gate {
    holders: 0,
    held: Vec::new(),
    dropped_bytes: 0,
});

fn gate() -> std::sync::MutexGuard<'static, Gate> {
    GATE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// While alive, log output stays in memory. Dropping the last one flushes it to stderr.
#[must_use = "output is held only while the Hold is alive"]
pub struct Hold(());

/// Starts holding log output in memory.
pub fn hold() -> Hold {
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

/// Whether output is being held now (for tests and assertions).
pub fn is_holding() -> bool {
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

/// The writer handed to tracing.
#[derive(Clone, Copy, Default)]
pub struct GatedStderr;

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
pub fn init(verbosity: u8) {
    let level = match verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(GatedStderr)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
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
    }
}
