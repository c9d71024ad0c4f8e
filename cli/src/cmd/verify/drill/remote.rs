//! The check on the restored Droplet: `freezeframe-agent verify` over ssh, accepting only
//! the host key the drill gave it ([`Remote`], whose double the tests use).

use super::{DrillOptions, Stop};
use freezeframe_contract::verification::MachineVerification;
use std::time::Duration;

/// The one host key ssh accepts from the restored Droplet: `known_hosts` lists it under
/// `alias` (ssh's `HostKeyAlias`), which is what ssh looks up instead of the address.
pub(super) struct Pinned {
    pub(super) known_hosts: std::path::PathBuf,
    pub(super) alias: String,
}

/// Where the restored Droplet is checked: [`Ssh`], or the tests' double.
pub(super) trait Remote {
    async fn verify(
        &self,
        options: &DrillOptions,
        address: &str,
        volumes: &[String],
        pinned: &Pinned,
        last: &LastTry,
    ) -> Result<MachineVerification, Stop>;
}

/// The check over ssh: [`remote_verify`].
pub(super) struct Ssh;

impl Remote for Ssh {
    async fn verify(
        &self,
        options: &DrillOptions,
        address: &str,
        volumes: &[String],
        pinned: &Pinned,
        last: &LastTry,
    ) -> Result<MachineVerification, Stop> {
        remote_verify(options, address, volumes, pinned, last).await
    }
}

/// Why the last ssh attempt could not connect yet, kept for the drill's end: a drill cut short by
/// its timeout or a signal says what it was still waiting for.
#[derive(Default)]
pub(super) struct LastTry(std::sync::Mutex<Option<String>>);

impl LastTry {
    fn set(&self, why: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    /// The last attempt's failure, if one failed.
    pub(super) fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What ssh's exit status and words say about an attempt that produced no report.
#[derive(Debug, PartialEq)]
enum Attempt {
    /// The report, or the agent's own answer (exit 0 or 1): read stdout.
    Answered,
    /// ssh could not connect yet (sshd may still be starting): try again.
    NotYet,
    /// The host presented another key than the one pinned: never tried again.
    WrongHostKey,
    /// Anything else (auth refused, the command missing, an option ssh rejects): no later
    /// attempt mends it.
    Failed,
}

/// Connection failures of a machine still booting; everything else ssh says (255) is for good.
const NOT_YET: [&str; 6] = [
    "Connection refused",
    "timed out",
    "No route to host",
    "Connection reset",
    "Connection closed by",
    "kex_exchange_identification",
];

fn attempt(status: Option<i32>, said: &str) -> Attempt {
    match status {
        Some(0 | 1) => Attempt::Answered,
        Some(255)
            if ["Host key verification failed", "IDENTIFICATION HAS CHANGED"]
                .iter()
                .any(|w| said.contains(w)) =>
        {
            Attempt::WrongHostKey
        }
        // Refused keys are refused again: never waited out.
        Some(255) if said.contains("Permission denied") => Attempt::Failed,
        Some(255) if NOT_YET.iter().any(|w| said.contains(w)) => Attempt::NotYet,
        _ => Attempt::Failed,
    }
}

/// The first pause between two attempts, doubled up to [`MOST_PATIENT`].
const FIRST_PAUSE: Duration = Duration::from_secs(2);
const MOST_PATIENT: Duration = Duration::from_secs(10);

/// `freezeframe-agent verify --json` on the restored Droplet over ssh, tried again while ssh
/// cannot connect yet (sshd starts after the Droplet is reported active), each failed attempt
/// said as it happens and kept in `last`; an error that no later attempt mends ends it at once.
/// Only the host key the drill gave the Droplet is accepted: another one ends the drill before
/// anything runs there.
pub(super) async fn remote_verify(
    options: &DrillOptions,
    address: &str,
    volumes: &[String],
    pinned: &Pinned,
    last: &LastTry,
) -> Result<MachineVerification, Stop> {
    let mut pause = FIRST_PAUSE;
    for tried in 1.. {
        let mut command = ssh_verify(options, address, volumes, pinned);
        let out = command
            .output()
            .await
            .map_err(|e| Stop::Failed(format!("cannot run {}: {e}", options.ssh_command)))?;
        let said = String::from_utf8_lossy(&out.stderr);
        match attempt(out.status.code(), &said) {
            Attempt::Answered => return report(address, &out.stdout, &said),
            Attempt::WrongHostKey => {
                return Err(Stop::Failed(format!(
                    "{address} answered with an SSH host key other than the one the drill gave                      the restored Droplet: it is not that Droplet, or the image's cloud-init did                      not install the key from the user data (ssh_keys); nothing was run there and                      nothing it said is trusted. ssh said: {}",
                    said.trim()
                )))
            }
            Attempt::Failed => return Err(ssh_failure(options, address, &out.status, &said)),
            Attempt::NotYet => {
                let why = last_line(&said);
                eprintln!(
                    "freezeframe: ssh to {address} (attempt {tried}): {why}; trying again in {}                      (sshd may still be starting), until --timeout",
                    humantime::format_duration(pause)
                );
                last.set(format!("attempt {tried}: {why}"));
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MOST_PATIENT);
            }
        }
    }
    unreachable!("the attempts are counted without end")
}

/// ssh's last line of complaint (the earlier ones are warnings), or its exit when it said none.
fn last_line(said: &str) -> String {
    said.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("ssh failed and said nothing")
        .to_string()
}

/// The report the remote verify printed, or what it printed instead.
fn report(address: &str, stdout: &[u8], said: &str) -> Result<MachineVerification, Stop> {
    serde_json::from_slice(stdout).map_err(|e| {
        let printed = String::from_utf8_lossy(stdout);
        let printed = printed.trim();
        let mut why = format!("freezeframe-agent verify on {address} answered no report ({e})");
        match printed.chars().count() {
            0 => why.push_str("; it printed nothing on stdout"),
            n if n > 200 => why.push_str(&format!(
                "; it printed: {}…",
                printed.chars().take(200).collect::<String>()
            )),
            _ => why.push_str(&format!("; it printed: {printed}")),
        }
        if !said.trim().is_empty() {
            why.push_str(&format!("; on stderr: {}", said.trim()));
        }
        Stop::Failed(why)
    })
}

/// The options that make ssh accept only the pinned host key, whatever the user's ssh_config
/// says: ssh keeps the first value it is given for an option, so these go before any word of
/// the user's `--ssh-command`. No connection sharing (a master socket the user's `ControlMaster
/// auto` left open to the same address would carry the session with no host-key check), and
/// no other source of keys (`KnownHostsCommand`, DNS) than the drill's own known-hosts file.
pub(super) fn pinned_options(pinned: &Pinned) -> Vec<String> {
    let mut options: Vec<String> = [
        "StrictHostKeyChecking=yes",
        "GlobalKnownHostsFile=/dev/null",
        "KnownHostsCommand=none",
        "VerifyHostKeyDNS=no",
        "HostKeyAlgorithms=ssh-ed25519",
        "CheckHostIP=no",
        "UpdateHostKeys=no",
        "ControlMaster=no",
        "ControlPath=none",
    ]
    .map(String::from)
    .to_vec();
    options.push(format!("UserKnownHostsFile={}", pinned.known_hosts.display()));
    options.push(format!("HostKeyAlias={}", pinned.alias));
    options
        .into_iter()
        .flat_map(|option| ["-o".to_string(), option])
        .collect()
}

/// `ssh … USER@ADDRESS freezeframe-agent verify --json --volume …`, accepting only the pinned
/// host key ([`pinned_options`], before the user's own words); no forwarding to the host, and
/// no secret in ssh's environment.
pub(super) fn ssh_verify(
    options: &DrillOptions,
    address: &str,
    volumes: &[String],
    pinned: &Pinned,
) -> tokio::process::Command {
    let mut words = options.ssh_command.split_whitespace();
    let mut command = tokio::process::Command::new(words.next().unwrap_or("ssh"));
    for name in freezeframe_agent::secret::SECRET_VARIABLES {
        command.env_remove(name);
    }
    command
        .args(pinned_options(pinned))
        .args(words)
        .args(crate::ssh::NO_FORWARDING)
        .args(["-T", "-o", "BatchMode=yes"])
        .arg("--")
        .arg(format!("{}@{address}", options.user))
        .args(["freezeframe-agent", "verify", "--json"]);
    for volume in volumes {
        command.args(["--volume", volume]);
    }
    command.kill_on_drop(true).stdin(std::process::Stdio::null());
    command
}

/// Why the remote verify could not run, with what to do.
pub(super) fn ssh_failure(
    options: &DrillOptions,
    address: &str,
    status: &std::process::ExitStatus,
    said: &str,
) -> Stop {
    if status.code() == Some(127) {
        return Stop::Failed(format!(
            "freezeframe-agent is not installed on the snapshot's image, so {address} cannot \
             check itself: install the freezeframe-agent package on the machine that is \
             snapshotted"
        ));
    }
    let fix = if said.contains("Permission denied") {
        "the restored Droplet lets in the keys the snapshotted machine did, and those given with \
         --ssh-key (an id or fingerprint from your account): give yours with --ssh-key, or load \
         one of the others into an ssh agent"
            .to_string()
    } else {
        format!("{}@{address}", options.user)
            .parse::<crate::ssh::Host>()
            .map(|host| crate::ssh::diagnose(said, &host).2)
            .unwrap_or_default()
    };
    Stop::Failed(format!(
        "{} to {address} failed ({status}): {}; {fix}",
        options.ssh_command,
        said.trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What ssh says decides between waiting and giving up: only a machine still booting is
    /// waited for.
    #[test]
    fn only_connection_failures_are_tried_again() {
        for (status, said, expected) in [
            (Some(0), "", Attempt::Answered),
            (Some(1), "", Attempt::Answered),
            (
                Some(255),
                "ssh: connect to host 192.0.2.7 port 22: Connection refused",
                Attempt::NotYet,
            ),
            (
                Some(255),
                "ssh: connect to host 192.0.2.7 port 22: Connection timed out",
                Attempt::NotYet,
            ),
            (
                Some(255),
                "kex_exchange_identification: read: Connection reset by peer",
                Attempt::NotYet,
            ),
            (
                Some(255),
                "root@192.0.2.7: Permission denied (publickey).",
                Attempt::Failed,
            ),
            (
                Some(255),
                "Connection closed by 192.0.2.7\nroot@192.0.2.7: Permission denied (publickey).",
                Attempt::Failed,
            ),
            (Some(255), "Host key verification failed.", Attempt::WrongHostKey),
            (Some(127), "sh: freezeframe-agent: not found", Attempt::Failed),
            (
                Some(255),
                "ssh: Could not resolve hostname x: Name or service not known",
                Attempt::Failed,
            ),
            (None, "", Attempt::Failed),
        ] {
            assert_eq!(attempt(status, said), expected, "{status:?} {said}");
        }
    }

    #[test]
    fn no_report_says_what_came_instead_without_a_dangling_colon() {
        let Err(Stop::Failed(why)) = report("192.0.2.7", b"", "") else {
            panic!("an empty answer is no report")
        };
        assert!(why.ends_with("; it printed nothing on stdout"), "{why}");
        let Err(Stop::Failed(why)) = report("192.0.2.7", b"{}", "warning: x\n") else {
            panic!("an empty object is no report")
        };
        assert!(
            why.contains("missing field") && why.ends_with("; it printed: {}; on stderr: warning: x"),
            "{why}"
        );
    }
}
