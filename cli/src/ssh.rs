//! The SSH leg of `-H HOST`: the command line that runs `systemd-stdio-bridge` on the host, with
//! ssh's own messages (and the remote command's) kept in a file, and, when the D-Bus handshake
//! then fails, which step it was and what to do, read from those messages.

use std::ffi::OsString;
use std::path::Path;

/// Where reaching a host failed, for people and for `--json` (`step`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// ssh itself: name resolution, connection, host key, login.
    Ssh,
    /// The host has no system bus, or no `systemd-stdio-bridge` to reach it.
    RemoteBus,
    /// The bus answered, but not as D-Bus (or the bridge died).
    Bus,
}

impl Step {
    /// Its name in `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Ssh => "ssh",
            Step::RemoteBus => "remote-bus",
            Step::Bus => "bus",
        }
    }
}

/// What every ssh the CLI starts is given after the user's own options: the host reached is
/// not trusted with the user's ssh agent, display or forwarded ports (`-a` and `-x` override any
/// earlier `-A`/`-X`, whatever the user's configuration says).
pub const NO_FORWARDING: [&str; 10] = [
    "-a",
    "-o",
    "ForwardAgent=no",
    "-o",
    "ForwardX11=no",
    "-o",
    "ForwardX11Trusted=no",
    "-o",
    "ClearAllForwardings=yes",
    "-x",
];

/// Runs `ssh_command … HOST systemd-stdio-bridge` through `sh`, which sends ssh's stderr to
/// `log` and adds ssh's exit status: a D-Bus transport has no other place for them. The secret
/// variables (the API token) are unset first: ssh and its helpers do not get them.
pub fn bridge_command(ssh_command: &str, host: &Host, log: &Path) -> (OsString, Vec<OsString>) {
    let mut words = ssh_command.split_whitespace();
    let program = words.next().unwrap_or("ssh");
    let script = format!(
        r#"unset {}; log=$1; shift; "$@" 2>"$log"; status=$?; echo "exit status $status" >>"$log"; exit $status"#,
        freezeframe_agent::secret::SECRET_VARIABLES.join(" ")
    );
    let mut args: Vec<OsString> = vec![
        "-c".into(),
        script.into(),
        "freezeframe-ssh".into(),
        log.into(),
        program.into(),
    ];
    args.extend(words.map(OsString::from));
    args.extend(NO_FORWARDING.map(OsString::from));
    args.extend(["-T", "-o", "BatchMode=yes"].map(OsString::from));
    if let Some(port) = host.port {
        args.extend([OsString::from("-p"), OsString::from(port.to_string())]);
    }
    args.push(OsString::from("--"));
    let destination = match &host.user {
        Some(user) => format!("{user}@{}", host.host),
        None => host.host.clone(),
    };
    args.push(destination.into());
    args.push("systemd-stdio-bridge".into());
    ("sh".into(), args)
}

/// What the log of a failed connection says: the step, ssh's (or the host's) own words, and
/// the fix.
pub fn diagnose(log: &str, host: &Host) -> (Step, String, String) {
    let status: Option<i32> = log
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("exit status ")?.trim().parse().ok());
    let said: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with("exit status ") && !l.trim().is_empty())
        .collect();
    let words = said.last().map(|l| l.trim().to_string()).unwrap_or_default();
    let has = |needle: &str| log.contains(needle);
    let login = match &host.user {
        Some(user) => format!("{user}@{}", host.host),
        None => host.host.clone(),
    };
    let (step, fix) = if has("Could not resolve hostname") || has("Name or service not known") {
        (
            Step::Ssh,
            format!("check the host name `{}` (and DNS)", host.host),
        )
    } else if has("Host key verification failed") || has("host key") || has("HOST IDENTIFICATION") {
        (
            Step::Ssh,
            format!(
                "accept the host's key once with `ssh {login}` (freezeframe runs ssh with \
                 BatchMode=yes, which cannot ask)"
            ),
        )
    } else if has("Permission denied") {
        (
            Step::Ssh,
            format!(
                "set up key-based login for {login} (`ssh-copy-id {login}`, or an ssh agent): \
                 with BatchMode=yes ssh cannot ask for a password"
            ),
        )
    } else if has("Connection refused") || has("timed out") || has("No route to host") {
        (
            Step::Ssh,
            format!(
                "check that sshd runs on {} and listens on the port given",
                host.host
            ),
        )
    } else if status == Some(127) || has("systemd-stdio-bridge: not found") || has("command not found") {
        (
            Step::RemoteBus,
            format!(
                "{} has no systemd-stdio-bridge: freezeframe reaches a host's agent through \
                 systemd's system bus, so the host must run systemd",
                host.host
            ),
        )
    } else if has("Failed to connect to bus") || has("Failed to set up bus") {
        (
            Step::RemoteBus,
            format!(
                "the system bus on {} is not running: `systemctl status dbus` there",
                host.host
            ),
        )
    } else if status == Some(255) {
        (Step::Ssh, format!("run `ssh {login}` to see what ssh needs"))
    } else {
        (
            Step::Bus,
            format!(
                "ssh reached {} but no D-Bus answered through systemd-stdio-bridge; try \
                 `ssh {login} systemd-stdio-bridge` by hand",
                host.host
            ),
        )
    };
    (step, words, fix)
}

/// `[USER@]HOST[:PORT]`, as `-H` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// Text that is not `[USER@]HOST[:PORT]`, and why (a usage error wherever it is met).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not [USER@]HOST[:PORT]: {why}")]
pub struct BadHost {
    pub text: String,
    pub why: &'static str,
}

impl std::str::FromStr for Host {
    type Err = BadHost;

    fn from_str(text: &str) -> Result<Host, BadHost> {
        let bad = |why: &'static str| BadHost {
            text: text.to_string(),
            why,
        };
        let (user, rest) = match text.rsplit_once('@') {
            Some((user, rest)) if !user.is_empty() => (Some(user.to_string()), rest),
            Some(_) => return Err(bad("the user before `@` is empty")),
            None => (None, text),
        };
        // [v6]:port, v6, host:port, host.
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (addr, after) = inner.split_once(']').ok_or_else(|| bad("`[` without `]`"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("text after `]` that is not `:PORT`")),
            };
            (addr.to_string(), port)
        } else if rest.matches(':').count() == 1 {
            let (h, p) = rest.split_once(':').expect("one colon");
            (h.to_string(), Some(p))
        } else {
            (rest.to_string(), None)
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("the port is not 1-65535"))
            })
            .transpose()?;
        let valid = |s: &str| {
            !s.is_empty()
                && !s.starts_with('-')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._:%".contains(c))
        };
        if !valid(&host) {
            return Err(bad("the host name has characters a host name cannot have"));
        }
        if let Some(u) = &user {
            if !valid(u) {
                return Err(bad("the user name has characters a user name cannot have"));
            }
        }
        Ok(Host { user, host, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_is_told_by_its_step_and_fix() {
        let host: Host = "root@db1".parse().unwrap();
        for (log, step, fix) in [
            (
                "ssh: Could not resolve hostname db1: Name or service not known\nexit status 255\n",
                Step::Ssh,
                "check the host name `db1`",
            ),
            (
                "Host key verification failed.\nexit status 255\n",
                Step::Ssh,
                "`ssh root@db1`",
            ),
            (
                "root@db1: Permission denied (publickey,password).\nexit status 255\n",
                Step::Ssh,
                "ssh-copy-id root@db1",
            ),
            (
                "ssh: connect to host db1 port 22: Connection refused\nexit status 255\n",
                Step::Ssh,
                "sshd runs on db1",
            ),
            (
                "bash: line 1: systemd-stdio-bridge: command not found\nexit status 127\n",
                Step::RemoteBus,
                "must run systemd",
            ),
            (
                "Failed to connect to bus: No such file or directory\nexit status 1\n",
                Step::RemoteBus,
                "system bus on db1 is not running",
            ),
            ("exit status 0\n", Step::Bus, "no D-Bus answered"),
        ] {
            let (found, words, said) = diagnose(log, &host);
            assert_eq!(found, step, "{log}");
            assert!(said.contains(fix), "{log}: {said}");
            if step != Step::Bus {
                assert!(
                    !words.is_empty() && !words.starts_with("exit status"),
                    "{log}: {words}"
                );
            }
        }
    }

    #[test]
    fn hosts_parse_like_ssh_destinations() {
        let h: Host = "root@db1.example.com:2222".parse().unwrap();
        assert_eq!(
            (h.user.as_deref(), h.host.as_str(), h.port),
            (Some("root"), "db1.example.com", Some(2222))
        );
        let h: Host = "[2001:db8::1]:22".parse().unwrap();
        assert_eq!((h.host.as_str(), h.port), ("2001:db8::1", Some(22)));
        let h: Host = "2001:db8::1".parse().unwrap();
        assert_eq!((h.host.as_str(), h.port), ("2001:db8::1", None));
        assert_eq!("web".parse::<Host>().unwrap().to_string(), "web");
        for bad in [
            "",
            "@host",
            "host:0",
            "host:99999",
            "-oProxyCommand=x",
            "a b",
            "[::1",
            "u;rm@h",
        ] {
            assert!(bad.parse::<Host>().is_err(), "{bad}");
        }
    }
}
