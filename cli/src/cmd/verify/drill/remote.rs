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
    ) -> Result<MachineVerification, Stop> {
        remote_verify(options, address, volumes, pinned).await
    }
}

/// `freezeframe-agent verify --json` on the restored Droplet over ssh, retried while ssh cannot
/// connect yet (sshd starts after the Droplet is reported active). Only the host key the drill
/// gave the Droplet is accepted: another one ends the drill before anything runs there.
pub(super) async fn remote_verify(
    options: &DrillOptions,
    address: &str,
    volumes: &[String],
    pinned: &Pinned,
) -> Result<MachineVerification, Stop> {
    loop {
        let mut command = ssh_verify(options, address, volumes, pinned);
        let out = command
            .output()
            .await
            .map_err(|e| Stop::Failed(format!("cannot run {}: {e}", options.ssh_command)))?;
        let said = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(255)
            && ["Host key verification failed", "IDENTIFICATION HAS CHANGED"]
                .iter()
                .any(|w| said.contains(w))
        {
            return Err(Stop::Failed(format!(
                "{address} answered with an SSH host key other than the one the drill gave the \
                 restored Droplet: it is not that Droplet, or the image's cloud-init did not \
                 install the key from the user data (ssh_keys); nothing was run there and \
                 nothing it said is trusted. ssh said: {}",
                said.trim()
            )));
        }
        match out.status.code() {
            // ssh could not connect (yet): sshd may still be starting.
            Some(255)
                if [
                    "Connection refused",
                    "timed out",
                    "No route to host",
                    "Connection reset",
                ]
                .iter()
                .any(|w| said.contains(w)) =>
            {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Some(0 | 1) => {
                return serde_json::from_slice(&out.stdout).map_err(|e| {
                    Stop::Failed(format!(
                        "freezeframe-agent verify on {address} answered no report ({e}): {}",
                        said.trim()
                    ))
                })
            }
            _ => return Err(ssh_failure(options, address, &out.status, &said)),
        }
    }
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
