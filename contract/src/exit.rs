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

impl Exit {
    /// Every code, best to worst.
    pub const ALL: [Exit; 5] = [
        Exit::Success,
        Exit::Busy,
        Exit::Failed,
        Exit::Usage,
        Exit::Unreachable,
    ];

    /// What the code says, in the words the man pages' EXIT STATUS sections print.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Success => "Success: everything asked was done.",
            Exit::Busy => {
                "The agent is busy: another snapshot is running on that machine; nothing was done, \
                 and trying again later can succeed (EX_TEMPFAIL)."
            }
            Exit::Failed => {
                "It failed: the snapshot, the call, the thaw or the check (the message or the \
                 report says why)."
            }
            Exit::Usage => {
                "Usage or configuration error, or a set-up fault found before anything was frozen \
                 (the report says setup_error); nothing was touched."
            }
            Exit::Unreachable => {
                "The agent could not be reached (ssh, the host's bus, or no agent installed)."
            }
        }
    }

    /// The codes `freezeframe COMMAND` can end with (`None`: the program's own page); `None` for
    /// a command this table does not know. Usage errors, clap's own included, are 2 everywhere.
    pub fn of_cli(command: Option<&str>) -> Option<&'static [Exit]> {
        use Exit::*;
        match command {
            None => Some(&Exit::ALL),
            // Through an agent that may be running a snapshot (or may not be reached).
            Some("snapshot" | "prune" | "thaw") => Some(&[Success, Busy, Failed, Usage, Unreachable]),
            // Through an agent, reading only.
            Some("plan" | "status" | "list" | "doctor") => Some(&[Success, Failed, Usage, Unreachable]),
            // The DigitalOcean API, ssh to a restored Droplet, or files here: never the agent.
            Some("verify" | "recover" | "man") => Some(&[Success, Failed, Usage]),
            Some("completions" | "help") => Some(&[Success, Usage]),
            Some(_) => None,
        }
    }

    /// The codes `freezeframe-agent COMMAND` can end with (`None`: the program's own page);
    /// `None` for a command this table does not know. The agent never exits with 3.
    pub fn of_agent(command: Option<&str>) -> Option<&'static [Exit]> {
        use Exit::*;
        match command {
            None | Some("snapshot") => Some(&[Success, Busy, Failed, Usage]),
            Some("plan" | "thaw" | "run" | "verify" | "setup-token" | "man") => {
                Some(&[Success, Failed, Usage])
            }
            Some("help") => Some(&[Success, Usage]),
            Some(_) => None,
        }
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

    #[test]
    fn all_is_every_code_best_to_worst_and_each_command_lists_its_codes_in_that_order() {
        // A code left out of ALL leaves a gap in the ranks.
        let ranks: Vec<u8> = Exit::ALL.iter().map(|e| e.rank()).collect();
        assert_eq!(ranks, (0..Exit::ALL.len() as u8).collect::<Vec<_>>());
        for name in ["snapshot", "plan", "verify", "completions", "help"] {
            let codes = Exit::of_cli(Some(name)).unwrap();
            assert!(codes.windows(2).all(|w| w[0] < w[1]), "{name}: {codes:?}");
        }
        assert!(!Exit::of_agent(None).unwrap().contains(&Exit::Unreachable));
        assert_eq!(Exit::of_cli(Some("frobnicate")), None);
    }
}
