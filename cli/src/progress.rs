//! Progress on stderr: one snapshot's phases as they happen ([`Progress`]: a spinner, lines
//! held while frozen, or nothing), and where a run over many machines is, every few seconds: how
//! many are done (and failed), frozen, ready (a group's members, quiesced and waiting to
//! freeze), running and waiting to start, the slowest machine still going, and what pacing held
//! back.

use crate::client::Target;
use crate::pacing::Pacer;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where one machine is.
#[derive(Debug, Clone, Copy)]
pub enum State {
    /// Not started (pacing, or `--parallel`).
    Waiting,
    /// Started at this moment.
    Running(Instant),
    /// A group's member, quiesced and flushed, waiting to freeze (since its start).
    Ready(Instant),
    /// Its filesystems frozen (since its start).
    Frozen(Instant),
    /// Ended, well or not.
    Done(bool),
}

/// Each machine's state, by index, and its name.
#[derive(Clone)]
pub struct Board {
    states: Arc<Mutex<Vec<State>>>,
    names: Arc<Vec<String>>,
}

impl Board {
    pub fn new(targets: &[Target]) -> Board {
        Board {
            states: Arc::new(Mutex::new(vec![State::Waiting; targets.len()])),
            names: Arc::new(targets.iter().map(|t| t.to_string()).collect()),
        }
    }

    pub fn set(&self, index: usize, state: State) {
        self.states.lock().unwrap_or_else(|p| p.into_inner())[index] = state;
    }

    /// Machine `index` moved on to `next` (ready, frozen), keeping when it started.
    pub fn moved(&self, index: usize, next: fn(Instant) -> State) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if let State::Running(at) | State::Ready(at) | State::Frozen(at) = states[index] {
            states[index] = next(at);
        }
    }

    /// The progress of machine `index`'s snapshot, as its phases arrive.
    pub fn member(&self, index: usize) -> MemberProgress {
        MemberProgress {
            board: self.clone(),
            index,
        }
    }

    /// One line: counts, and the slowest machine still going.
    pub fn line(&self) -> String {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let count = |f: fn(&State) -> bool| states.iter().filter(|s| f(s)).count();
        let done = count(|s| matches!(s, State::Done(_)));
        let failed = count(|s| matches!(s, State::Done(false)));
        let frozen = count(|s| matches!(s, State::Frozen(_)));
        let ready = count(|s| matches!(s, State::Ready(_)));
        let running = count(|s| matches!(s, State::Running(_)));
        let waiting = count(|s| matches!(s, State::Waiting));
        let ready = if ready > 0 {
            format!("{ready} ready, ")
        } else {
            String::new()
        };
        let slowest = states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                State::Running(at) | State::Ready(at) | State::Frozen(at) => Some((i, at.elapsed())),
                _ => None,
            })
            .max_by_key(|(_, d)| *d)
            .map(|(i, d)| format!("; slowest: {} ({:.0} s)", self.names[i], d.as_secs_f64()))
            .unwrap_or_default();
        format!(
            "progress: {done} of {} done ({failed} failed), {frozen} frozen, {ready}{running} running, \
             {waiting} waiting{slowest}",
            states.len()
        )
    }
}

/// A machine's snapshot phases, on the board: frozen from the freeze to the thaw.
pub struct MemberProgress {
    board: Board,
    index: usize,
}

impl Progress for MemberProgress {
    fn phase(&mut self, phase: &str, finished: bool, _ok: bool, _elapsed_ms: f64) {
        match (phase, finished) {
            ("freeze", false) => self.board.moved(self.index, State::Frozen),
            ("thaw", true) => self.board.moved(self.index, State::Running),
            _ => {}
        }
    }
}

/// How often a long run says where it is.
const EVERY: Duration = Duration::from_secs(5);

/// Every few seconds, the board and what pacing did, on stderr; runs until aborted.
pub async fn show(board: Board, pacer: Arc<Pacer>) {
    let mut said = 0;
    loop {
        tokio::time::sleep(EVERY).await;
        let mut line = board.line();
        let (waited, _, _) = pacer.summary();
        if waited > said {
            said = waited;
            line.push_str(&format!("; {}", pacing_line(&pacer)));
        }
        eprintln!("freezeframe: {line}");
    }
}

/// What pacing did so far.
pub fn pacing_line(pacer: &Pacer) -> String {
    let (waited, time, cost) = pacer.summary();
    let api_rate = pacer.per_minute();
    format!(
        "pacing: {waited} runs waited {:.0} s in all for the API budget ({api_rate} calls a minute \
         for the fleet, about {cost:.0} per run; --api-rate)",
        time.as_secs_f64()
    )
}

/// Shows a snapshot's phases as they happen.
pub trait Progress: Send {
    fn phase(&mut self, phase: &str, finished: bool, ok: bool, elapsed_ms: f64);
    fn done(&mut self) {}
}

/// No progress (JSON to a pipe, or fleet runs that print one line per machine).
pub struct Silent;
impl Progress for Silent {
    fn phase(&mut self, _: &str, _: bool, _: bool, _: f64) {}
}

/// One line per phase on stderr. Lines during the frozen window are held until the thaw: stderr
/// may be a file on a filesystem being frozen, and a write there would block this client.
#[derive(Default)]
pub struct Lines {
    held: Vec<String>,
    frozen: bool,
}

impl Progress for Lines {
    fn phase(&mut self, phase: &str, finished: bool, ok: bool, elapsed_ms: f64) {
        let line = if finished {
            format!(
                "{phase}: {} in {elapsed_ms:.1} ms",
                if ok { "done" } else { "FAILED" }
            )
        } else {
            format!("{phase}: started")
        };
        if phase == "freeze" && !finished {
            self.frozen = true;
        }
        self.held.push(line);
        if phase == "thaw" && finished {
            self.frozen = false;
        }
        if !self.frozen {
            let mut err = std::io::stderr().lock();
            for line in self.held.drain(..) {
                let _ = writeln!(err, "{line}");
            }
        }
    }

    fn done(&mut self) {
        let mut err = std::io::stderr().lock();
        for line in self.held.drain(..) {
            let _ = writeln!(err, "{line}");
        }
    }
}

/// A live spinner on a terminal: the phase running now, and the frozen window as it happens.
pub struct Spinner {
    bar: indicatif::ProgressBar,
    frozen_at: Option<std::time::Instant>,
}

impl Spinner {
    pub fn new(what: &str) -> Spinner {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {prefix}{msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_prefix(format!("{what}: "));
        bar.enable_steady_tick(std::time::Duration::from_millis(80));
        Spinner { bar, frozen_at: None }
    }
}

impl Progress for Spinner {
    fn phase(&mut self, phase: &str, finished: bool, ok: bool, elapsed_ms: f64) {
        match (phase, finished) {
            ("freeze", false) => {
                self.frozen_at = Some(std::time::Instant::now());
                self.bar.set_message("freezing filesystems");
            }
            ("request", false) => self.bar.set_message("FROZEN: requesting the snapshot"),
            ("thaw", true) => {
                if let Some(at) = self.frozen_at.take() {
                    self.bar.println(format!(
                        "  writes were blocked for {:.0} ms",
                        at.elapsed().as_secs_f64() * 1000.0
                    ));
                }
            }
            (_, false) => self.bar.set_message(format!("{phase}…")),
            (_, true) => self.bar.println(format!(
                "  {phase} {} {elapsed_ms:.1} ms",
                if ok { "✓" } else { "✗" }
            )),
        }
    }

    fn done(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// How one machine's snapshot shows its progress: nothing under `--json`, a spinner on a
/// terminal, else one line per phase.
pub fn for_one(json: bool) -> Box<dyn Progress> {
    if json {
        Box::new(Silent)
    } else if std::io::stderr().is_terminal() {
        Box::new(Spinner::new("snapshot"))
    } else {
        Box::new(Lines::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counts_each_state_and_names_the_slowest() {
        let targets: Vec<Target> = (0..5).map(|i| Target::Bus(format!("unix:path=/b{i}"))).collect();
        let board = Board::new(&targets);
        let long_ago = Instant::now() - Duration::from_secs(30);
        board.set(0, State::Done(true));
        board.set(1, State::Done(false));
        board.set(2, State::Running(long_ago));
        board.moved(2, State::Frozen);
        board.set(3, State::Running(Instant::now()));
        board.moved(3, State::Ready);
        let line = board.line();
        assert_eq!(
            line,
            "progress: 2 of 5 done (1 failed), 1 frozen, 1 ready, 0 running, 1 waiting; \
             slowest: the agent on unix:path=/b2 (30 s)"
        );
    }
}
