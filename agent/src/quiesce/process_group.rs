//! A hook's process group: killed when the run stops waiting for the hook, and recorded while
//! the hook runs so that whoever resumes for a SIGKILLed agent can kill what the hook started.
//! (PR_SET_PDEATHSIG takes down the hook itself with the agent, not its children: a `sleep` or
//! a database client left from a cut-short `freeze` would otherwise race the `thaw` run later.)

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// A process group, named by its id and its leader's start time (clock ticks since boot, from
/// `/proc/PID/stat`), so a recorded group is told apart from a later one that reuses the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessGroup {
    pub id: i32,
    pub leader_start: u64,
}

/// What `/proc/PID/stat` says of a process: (process group, start time, whether it is a zombie:
/// dead, waiting for its parent to reap it).
fn stat(pid: i32) -> Option<(i32, u64, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields are counted after
    // its closing parenthesis, from field 3 (state).
    let fields: Vec<&str> = text.get(text.rfind(')')? + 1..)?.split_whitespace().collect();
    Some((
        fields.get(2)?.parse().ok()?,
        fields.get(19)?.parse().ok()?,
        fields.first() == Some(&"Z"),
    ))
}

impl ProcessGroup {
    /// The group `leader` leads (a child spawned with `process_group(0)`).
    pub(crate) fn led_by(leader: u32) -> Option<ProcessGroup> {
        let (group, start, _) = stat(leader as i32)?;
        (group == leader as i32).then_some(ProcessGroup {
            id: group,
            leader_start: start,
        })
    }

    /// The processes still running in this group (zombies, dead already, are not). Empty when
    /// the group is gone, or when its id now belongs to a different leader (a leader alive with
    /// another start time). While any member of a group lives, the kernel does not hand its id
    /// to a new process.
    pub(crate) fn members(&self) -> Vec<i32> {
        if let Some((_, start, _)) = stat(self.id) {
            if start != self.leader_start {
                return Vec::new();
            }
        }
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| stat(*pid).is_some_and(|(group, _, zombie)| group == self.id && !zombie))
            .collect()
    }

    /// Reaps the group's leader, when it is still the process that led it and a child of this
    /// one that nothing waits for (a spawn that failed after the fork), once it has died.
    pub(crate) fn reap_leader(&self) {
        if stat(self.id).is_some_and(|(_, start, zombie)| start == self.leader_start && zombie) {
            // Still that process (its pid is not free while unreaped), so only it is reaped.
            let _ =
                nix::sys::wait::waitpid(Pid::from_raw(self.id), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
    }

    /// SIGKILLs what is left of the group and waits (up to `wait`) until it is gone; returns how
    /// many processes it had.
    pub(crate) async fn kill_leftovers(&self, wait: Duration) -> usize {
        let members = self.members().len();
        if members > 0 {
            let _ = killpg(Pid::from_raw(self.id), Signal::SIGKILL);
            let deadline = Instant::now() + wait;
            while !self.members().is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        members
    }
}

impl fmt::Display for ProcessGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.id, self.leader_start)
    }
}

impl FromStr for ProcessGroup {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (id, start) = s.split_once(':').ok_or(())?;
        let id: i32 = id.parse().map_err(drop)?;
        // Never 0, negative or 1: killpg would signal the caller's own group, every process, or
        // init's group.
        if id <= 1 {
            return Err(());
        }
        Ok(ProcessGroup {
            id,
            leader_start: start.parse().map_err(drop)?,
        })
    }
}

/// Kills a process group when dropped: at a hook's timeout, and when the run stops waiting for
/// the hook (a signal to the agent drops the prepare).
pub(crate) struct KillGroupOnDrop(pub Option<Pid>);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[tokio::test]
    async fn a_recorded_group_is_found_killed_and_not_confused_with_another() {
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "sleep 60 & sleep 60 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let group = ProcessGroup::led_by(leader.id()).expect("the child leads its group");
        assert_eq!(group.to_string().parse::<ProcessGroup>(), Ok(group));
        let deadline = Instant::now() + Duration::from_secs(10);
        while group.members().len() < 3 {
            assert!(Instant::now() < deadline, "{:?}", group.members());
            std::thread::sleep(Duration::from_millis(10));
        }
        let other = ProcessGroup {
            leader_start: group.leader_start + 1,
            ..group
        };
        assert!(other.members().is_empty(), "another leader's start time");
        // The leader dies first, as PR_SET_PDEATHSIG would have it: its children remain.
        leader.kill().unwrap();
        leader.wait().unwrap();
        assert_eq!(group.members().len(), 2);
        assert_eq!(group.kill_leftovers(Duration::from_secs(5)).await, 2);
        assert!(group.members().is_empty());
        assert_eq!(group.kill_leftovers(Duration::from_secs(5)).await, 0);
        for bad in ["0:5", "-1:5", "1:5", "x:5", "12", "12:y"] {
            assert!(bad.parse::<ProcessGroup>().is_err(), "{bad}");
        }
    }
}
