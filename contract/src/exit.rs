//! The exit codes of both binaries, `freezeframe` and `freezeframe-agent`: one table, so the
//! same situation exits the same way whichever program met it.

/// How a program ended. Ordered from best to worst (the declaration order, not the codes): a
/// command over several machines exits with the worst of theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: everything asked was done.
    Success = 0,
    /// 75 (EX_TEMPFAIL): another snapshot is running on that machine; nothing was done, and
    /// trying again later can succeed (so it ranks below a failure).
    Busy = 75,
    /// 1: the snapshot, the call or the thaw failed (the message or the report says why).
    Failed = 1,
    /// 2: usage or configuration error, or a set-up fault found before anything was frozen;
    /// nothing was touched.
    Usage = 2,
    /// 3: the agent could not be reached (ssh, the host's bus, no agent installed). The CLI
    /// only: the agent never exits with it.
    Unreachable = 3,
}

impl Exit {
    /// The process's exit status.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl Exit {
    /// The place in the order best to worst.
    fn rank(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Busy => 1,
            Exit::Failed => 2,
            Exit::Usage => 3,
            Exit::Unreachable => 4,
        }
    }
}

impl Ord for Exit {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl PartialOrd for Exit {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::Exit;

    #[test]
    fn the_codes_are_the_documented_ones_and_worst_is_greatest() {
        let codes: Vec<u8> = [
            Exit::Success,
            Exit::Busy,
            Exit::Failed,
            Exit::Usage,
            Exit::Unreachable,
        ]
        .map(Exit::code)
        .to_vec();
        assert_eq!(codes, [0, 75, 1, 2, 3]);
        assert!(Exit::Success < Exit::Busy && Exit::Busy < Exit::Failed);
        assert!(Exit::Failed < Exit::Usage && Exit::Usage < Exit::Unreachable);
    }
}
