//! The command line, as clap definitions: parsed by the binary, and turned into its help, shell
//! completions and man pages (`freezeframe completions`, `freezeframe man`), all from
//! [`command`]. Which commands take several machines ([`machines`]) is here too: the router
//! refuses by it, and `-H`'s help lists by it.

use crate::ssh::Host;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;

/// Consistent live snapshots without a shutdown: drives freezeframe-agent, locally or over SSH.
#[derive(Debug, Parser)]
#[command(name = "freezeframe", version)]
pub struct Cli {
    /// Run on another machine, over SSH, the way `systemctl -H` does: [USER@]HOST[:PORT]
    /// (which commands take several: [`hosts_help`])
    #[arg(short = 'H', long = "host", value_name = "[USER@]HOST[:PORT]", global = true)]
    pub hosts: Vec<Host>,
    /// The Droplets with this tag, by public IPv4 (DigitalOcean API; token from DIGITALOCEAN_TOKEN)
    #[arg(long, value_name = "TAG", global = true)]
    pub tag: Option<String>,
    /// Talk to the agent on this D-Bus address instead of the system bus
    #[arg(long, value_name = "ADDRESS", global = true, conflicts_with_all = ["hosts", "tag"],
          value_parser = bus_address)]
    pub bus_address: Option<String>,
    /// The ssh command for -H (its words are split on spaces)
    #[arg(long, value_name = "COMMAND", default_value = "ssh", global = true,
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub ssh_command: String,
    /// How many machines at once with several -H or --tag
    #[arg(long, value_name = "N", default_value_t = 10, global = true,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,
    /// With several machines: the DigitalOcean API calls a minute their snapshot runs may make
    /// together (they share the token's limit of 250); runs start no faster than that allows
    #[arg(long, value_name = "N", default_value_t = 200, global = true,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub api_rate: u32,
    /// Print results as JSON (one object per machine)
    #[arg(long, global = true)]
    pub json: bool,
    /// The DigitalOcean API that --tag asks
    #[arg(long, value_name = "URL", global = true, hide = true,
          default_value = freezeframe_agent::config::DEFAULT_API_URL)]
    pub api_url: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Take a snapshot now: quiesce, freeze, request, thaw, resume
    Snapshot {
        /// Snapshot name [default: the agent's `snapshot.name_template`]
        #[arg(long)]
        name: Option<String>,
        /// Wait until the snapshot is complete, not only registered
        #[arg(long)]
        wait: bool,
        /// Show what would be frozen and quiesced; change nothing
        #[arg(long)]
        dry_run: bool,
        /// One consistent cut across the machines (-H, --tag): all quiesce, then all freeze,
        /// and only when all are frozen do they request their snapshots; any failure before
        /// that aborts the group (everyone thaws and resumes, nothing is requested). Named with
        /// the agents' `snapshot.group_name_template`, which carries the group's id
        #[arg(long, conflicts_with_all = ["name", "dry_run"])]
        group: bool,
        /// With --group: how long the members have, from the start, to be frozen
        #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = duration, requires = "group")]
        prepare_timeout: std::time::Duration,
        /// With --group: a bound on every member's frozen window, below its own
        /// `freeze.max_freeze` [default: each member's own]
        #[arg(long, value_name = "DURATION", value_parser = duration, requires = "group")]
        max_freeze: Option<std::time::Duration>,
        /// DigitalOcean's documented way instead of a live snapshot: shut each Droplet down
        /// cleanly, snapshot it (and its volumes) while off, and power it on again, on every
        /// path. Droplets by --tag or --droplet, through the API (token from
        /// DIGITALOCEAN_TOKEN)
        /// (With --dry-run: what it would do to each Droplet, changing nothing.)
        #[arg(long, conflicts_with_all = ["group", "wait"])]
        offline: bool,
        /// With --offline: a Droplet by its id (repeatable)
        #[arg(long = "droplet", value_name = "ID", requires = "offline")]
        droplets: Vec<u64>,
        /// With --offline: how long the guest has to power off after the shutdown request
        #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = duration, requires = "offline")]
        shutdown_timeout: std::time::Duration,
        /// With --offline: past --shutdown-timeout, cut the power (power_off) instead of
        /// giving up, as DigitalOcean's API guide suggests
        #[arg(long, requires = "offline")]
        force_power_off: bool,
        /// With --offline: how long a Droplet has to be active again after power_on
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = duration, requires = "offline")]
        boot_timeout: std::time::Duration,
        /// With --offline: how long a failed power-on (an API error, a rate limit, no answer) is
        /// tried again, with backoff, before the Droplet is left off for `freezeframe recover`
        /// (a snapshot still running does not count)
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = duration, requires = "offline")]
        power_on_deadline: std::time::Duration,
    },
    /// Power on the Droplets that an offline snapshot killed outright left off: those recorded
    /// under this user's state directory and those tagged freezeframe-offline-pending
    Recover,
    /// Show what a snapshot would freeze and quiesce, in which order, and what it skips and why
    Plan,
    /// The agent's version, whether anything is frozen, and the last result
    Status,
    /// This machine's snapshots, oldest first
    List {
        /// Only the snapshots of this consistency group (its id, as in their names)
        #[arg(long, value_name = "ID")]
        group: Option<String>,
    },
    /// Delete all but the newest N of this machine's snapshots, or of the groups' snapshots
    #[command(group = clap::ArgGroup::new("retention").required(true).args(["keep", "keep_groups"]))]
    Prune {
        /// How many single snapshots to keep on each machine (at least 1)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        keep: Option<u32>,
        /// How many consistency groups to keep across the machines (at least 1): older groups
        /// are deleted whole, on every machine, never one member's part
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        keep_groups: Option<u32>,
        /// List exactly what would be deleted (the agent's own selection), and delete nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Check everything a snapshot needs, and say how to fix what fails
    Doctor,
    /// Restore drill: prove a snapshot restores, on a new Droplet made from it (DigitalOcean API,
    /// token from DIGITALOCEAN_TOKEN), destroyed afterwards on every path
    ///
    /// Creates a Droplet of the smallest size that fits from the Droplet snapshot, and volumes
    /// from the volume snapshots of the same run, runs `freezeframe-agent verify` there over
    /// ssh (the snapshot-point probe; each volume's filesystem and databases), tags the snapshot
    /// freezeframe-verified or freezeframe-verify-failed, and destroys what it created. The cost
    /// is shown first; --yes is needed without a terminal to ask on.
    Verify {
        /// The Droplet snapshot, by id or name
        #[arg(value_name = "SNAPSHOT", required_unless_present_any = ["cleanup", "scheduled"])]
        snapshot: Option<String>,
        /// Destroy every Droplet and volume a drill left behind (tag freezeframe-verify)
        #[arg(long, conflicts_with_all = ["snapshot", "size", "ssh_key", "scheduled"])]
        cleanup: bool,
        /// On a Droplet: drill its newest snapshot if `verify.schedule` in the agent's
        /// configuration says one is due (freezeframe-drill.service runs this after the timer's
        /// snapshot), with the token of `verify.token_file`
        #[arg(long, conflicts_with_all = ["snapshot", "size", "ssh_key", "user", "yes", "timeout"])]
        scheduled: bool,
        /// The agent's configuration, for --scheduled [default: /etc/freezeframe/config.toml
        /// and its drop-ins]
        #[arg(long, value_name = "FILE", requires = "scheduled")]
        config: Option<PathBuf>,
        /// The Droplet size [default: the cheapest whose disk fits the snapshot]
        #[arg(long, value_name = "SLUG")]
        size: Option<String>,
        /// An SSH key (id or fingerprint) for the new Droplet; the image's own authorized keys
        /// work too. Repeat for several
        #[arg(long, value_name = "KEY")]
        ssh_key: Vec<String>,
        /// The user ssh logs in as on the restored Droplet
        #[arg(long, value_name = "USER", default_value = "root")]
        user: String,
        /// Create the billed resources without asking
        #[arg(long)]
        yes: bool,
        /// Give up (and destroy what was created) after this long
        #[arg(long, value_name = "DURATION", default_value = "20m", value_parser = duration)]
        timeout: std::time::Duration,
    },
    /// Emergency: thaw what a dead agent left frozen, and run the resumes it owed
    ///
    /// Through the agent on the machine (-H, --tag, --bus-address, or this one); on this
    /// machine, directly from the runtime directory when no agent answers.
    Thaw {
        /// The agent's runtime directory, for a thaw on this machine when no agent answers
        /// [default: /run/freezeframe]
        #[arg(long, value_name = "DIR")]
        runtime_dir: Option<PathBuf>,
    },
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages into a directory
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

impl Command {
    /// The subcommand's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Snapshot { .. } => "snapshot",
            Command::Recover => "recover",
            Command::Plan => "plan",
            Command::Status => "status",
            Command::List { .. } => "list",
            Command::Prune { .. } => "prune",
            Command::Doctor => "doctor",
            Command::Verify { .. } => "verify",
            Command::Thaw { .. } => "thaw",
            Command::Completions { .. } => "completions",
            Command::Man { .. } => "man",
        }
    }
}

/// How many machines a command takes through -H and --tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machines {
    /// None: it runs here (or finds its Droplets through the API); --bus-address is refused too.
    None,
    /// One -H (or none, for this machine); no --tag.
    One,
    /// Any number, run as a fleet (or a group).
    Many,
}

/// How many machines the subcommand `name` takes; the router refuses more.
pub fn machines(name: &str) -> Machines {
    match name {
        "snapshot" | "plan" | "status" | "list" | "prune" | "thaw" => Machines::Many,
        "doctor" => Machines::One,
        _ => Machines::None,
    }
}

/// `-H`'s help: which of `program`'s subcommands take several machines, and which one.
fn hosts_help(program: &clap::Command) -> String {
    let named = |wanted: Machines| {
        let names: Vec<&str> = program
            .get_subcommands()
            .map(|s| s.get_name())
            .filter(|name| machines(name) == wanted)
            .collect();
        names.join(", ")
    };
    format!(
        "Run on another machine, over SSH, the way `systemctl -H` does: [USER@]HOST[:PORT]. \
         Repeat for several machines ({}); one only for {}",
        named(Machines::Many),
        named(Machines::One)
    )
}

/// The one definition of the command line: what parses it, its help, completions and man pages.
pub fn command() -> clap::Command {
    let program = Cli::command();
    let help = hosts_help(&program);
    program.mut_arg("hosts", |arg| arg.help(help))
}

/// The arguments of this process, parsed by [`command`]; clap's error (a usage error, or
/// --help and --version, which it prints itself) for the caller to end with.
pub fn try_parse() -> Result<Cli, clap::Error> {
    let matches = command().try_get_matches()?;
    Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command()))
}

/// A D-Bus address as the specification writes them (`unix:path=/run/dbus/system_bus_socket`).
fn bus_address(text: &str) -> Result<String, String> {
    text.parse::<zbus::Address>()
        .map(|_| text.to_string())
        .map_err(|e| {
            format!(
                "`{text}` is not a D-Bus address ({e}); write it like unix:path=/run/dbus/system_bus_socket"
            )
        })
}

/// A duration as `20m` or `1h 30m`.
fn duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write it like 20m or 1h"))
}
