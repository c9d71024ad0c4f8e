//! The exit codes of both binaries, `freezeframe` and `freezeframe-agent`: one table, so the
//! same situation exits the same way whichever program met it. What each code means is written
//! here once ([`TABLE`]): the man pages are made from it ([`Exit::meaning`], with the codes each
//! command can end with), and tests hold the README's and the CLI reference's tables to
//! [`markdown`].

/// How a program ended. Ordered from best to worst (the declaration order, not the codes): a
/// command over several machines exits with the worst of theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Exit {
    /// 0: everything asked was done.
    #[default]
    Success = 0,
    /// 75 (EX_TEMPFAIL): another snapshot is running on that machine; nothing was done, and
    /// trying again later can succeed (so it ranks below a failure).
    Busy = 75,
    /// 1: the snapshot, the call or the thaw failed (the message or the report says why).
    Failed = 1,
    /// 2: usage or configuration error, or a set-up fault found before anything was frozen;
    /// nothing was touched. The user's configuration includes the credentials: a token the
    /// API refuses, a user the agent refuses.
    Usage = 2,
    /// 3: the agent could not be reached (ssh, the host's bus, no agent installed, an agent too
    /// old for the call). The CLI only: the agent never exits with it.
    Unreachable = 3,
}

/// What one code means, said for each program (`None`: that program never exits with it).
#[derive(Debug, Clone, Copy)]
pub struct Meaning {
    /// The code.
    pub exit: Exit,
    /// What it means from `freezeframe`.
    pub cli: &'static str,
    /// What it means from `freezeframe-agent`.
    pub agent: Option<&'static str>,
}

/// Every code of both programs, in the order the documentation lists them.
pub const TABLE: [Meaning; 5] = [
    Meaning {
        exit: Exit::Success,
        cli: "success",
        agent: Some("success"),
    },
    Meaning {
        exit: Exit::Failed,
        cli: "the snapshot or call failed (the message or the report says why)",
        agent: Some("the snapshot or thaw failed, or verify found the image not verified"),
    },
    Meaning {
        exit: Exit::Usage,
        cli: "usage or configuration error, nothing touched: bad arguments, no token or one the \
              API refuses, a user the agent refuses, a Droplet that does not exist, a name already \
              taken, or a set-up fault found before anything froze (the report says \
              `\"setup_error\": true`)",
        agent: Some(
            "usage or configuration error, nothing touched: bad configuration or arguments, no \
             token or one the API refuses, a name already taken, a set-up fault found before \
             anything froze",
        ),
    },
    Meaning {
        exit: Exit::Unreachable,
        cli: "the agent could not be reached: no system bus, ssh failed, no agent on the bus, or \
              an agent too old for the call (the message says which, and the fix)",
        agent: None,
    },
    Meaning {
        exit: Exit::Busy,
        cli: "the agent is busy: another snapshot is running there; nothing was done, try again later",
        agent: Some("another snapshot is running on this machine; nothing was done, try again later"),
    },
];

/// Which program's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `freezeframe`.
    Cli,
    /// `freezeframe-agent`.
    Agent,
}

/// The table as markdown, as the README and the CLI reference show it.
pub fn markdown() -> String {
    let mut out = String::from("| code | `freezeframe` | `freezeframe-agent` |\n|---|---|---|\n");
    for m in TABLE {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            m.exit.code(),
            m.cli,
            m.agent.unwrap_or("")
        ));
    }
    out
}

impl Exit {
    /// The process's exit status.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The exit whose code is `code`, if one is.
    pub fn from_code(code: u8) -> Option<Exit> {
        TABLE.iter().map(|m| m.exit).find(|e| e.code() == code)
    }

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

/// As its code, as the `exit` of `--json` documents.
impl serde::Serialize for Exit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.code())
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

    /// What the code means from `program`, in [`TABLE`]'s words (which the man pages' EXIT
    /// STATUS sections print); `None` where that program never exits with it.
    pub fn meaning(self, program: Program) -> Option<&'static str> {
        let said = TABLE.iter().find(|m| m.exit == self)?;
        match program {
            Program::Cli => Some(said.cli),
            Program::Agent => said.agent,
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
    use super::{markdown, Exit, TABLE};

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
        let mut listed: Vec<u8> = TABLE.iter().map(|m| m.exit.code()).collect();
        listed.sort_unstable();
        assert_eq!(listed, [0, 1, 2, 3, 75], "every code once in the table");
    }

    /// The README and the CLI reference show the table as it is here, word for word.
    #[test]
    fn the_readme_and_the_cli_reference_show_this_table() {
        let table = markdown();
        for (file, text) in [
            ("README.md", include_str!("../../README.md")),
            ("docs/src/cli.md", include_str!("../../docs/src/cli.md")),
        ] {
            assert!(
                text.contains(&table),
                "{file}'s exit-code table differs from contract/src/exit.rs; it must read:\n{table}"
            );
        }
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
