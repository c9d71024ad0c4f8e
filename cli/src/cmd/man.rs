//! `freezeframe man DIR`: the man pages, from the argument definitions
//! ([`args::command`](crate::args::command)) through the agent's page writer, with the exit
//! codes each command ends with from the exit table, and the sections clap does not write
//! (ENVIRONMENT, FILES, EXAMPLES, SEE ALSO) as roff.

use crate::agent::Exit;
use std::path::Path;

/// freezeframe.1 and one page per subcommand (freezeframe-snapshot.1, …), each with the
/// global options, its own exit codes and the sections clap does not write.
pub fn write(dir: &Path) -> std::io::Result<()> {
    let sections = freezeframe_agent::man::Sections {
        program: freezeframe_contract::exit::Program::Cli,
        exits: Exit::of_cli,
        rest: extra_sections,
    };
    freezeframe_agent::man::write(crate::args::command(), &sections, dir).map(drop)
}

/// The sections for `freezeframe.1` (`None`) or the page of subcommand `sub`.
fn extra_sections(sub: Option<&str>) -> String {
    let mut roff = String::new();
    if sub.is_none_or(|name| crate::args::machines(name) == crate::args::Machines::Many) {
        roff.push_str(
            ".PP\nWith several machines, the exit status is the worst of theirs (from best to worst: ",
        );
        let codes: Vec<String> = Exit::ALL.iter().map(|e| e.code().to_string()).collect();
        roff.push_str(&format!("{}).\n", codes.join(", ")));
    }
    roff.push_str(
        ".SH ENVIRONMENT\n\
         .TP\n\\fBDBUS_SYSTEM_BUS_ADDRESS\\fR\nThe system bus to reach the local agent on \
         (default unix:path=/run/dbus/system_bus_socket).\n\
         .TP\n\\fBDIGITALOCEAN_TOKEN\\fR\nThe API token \\fB--tag\\fR lists Droplets with \
         (scope droplet:read). The agent reads its own token from its configuration.\n\
         .SH FILES\n\
         .TP\n\\fI/etc/freezeframe/config.toml\\fR, \\fI/etc/freezeframe/config.d/*.toml\\fR\n\
         The agent's configuration (freezeframe\\-agent(1)).\n\
         .TP\n\\fI/etc/freezeframe/hooks.d/\\fR\nHook scripts, called with freeze and thaw.\n\
         .TP\n\\fI/run/freezeframe/\\fR\nThe agent's runtime directory: the lock, the record of \
         what is frozen, the resumes owed, the last report.\n",
    );
    let examples: &[&str] = match sub {
        None | Some("snapshot") => &[
            "freezeframe snapshot --wait",
            "freezeframe -H root@db1 snapshot --json",
            "freezeframe -H db1 -H db2 snapshot",
            "DIGITALOCEAN_TOKEN=... freezeframe --tag prod snapshot",
        ],
        Some("thaw") => &["freezeframe thaw", "freezeframe -H root@db1 thaw --json"],
        Some("list") => &["freezeframe list", "freezeframe -H root@db1 list --json"],
        Some("prune") => &["freezeframe prune --keep 7"],
        Some("doctor") => &["freezeframe doctor", "freezeframe -H root@db1 doctor"],
        Some("plan") => &["freezeframe plan", "freezeframe -H root@db1 plan --json"],
        Some("status") => &["freezeframe status", "freezeframe -H db1 -H db2 status --json"],
        Some("completions") => &["freezeframe completions bash > /etc/bash_completion.d/freezeframe"],
        Some(_) => &[],
    };
    if !examples.is_empty() {
        roff.push_str(".SH EXAMPLES\n");
        for example in examples {
            roff.push_str(&format!(".PP\n.nf\n{}\n.fi\n", example.replace('-', "\\-")));
        }
    }
    let parent = if sub.is_some() { "freezeframe(1), " } else { "" };
    let see_also = format!("{parent}freezeframe-agent(1), systemd-stdio-bridge(1), ssh(1)");
    roff.push_str(&format!(
        ".SH \"SEE ALSO\"\n{}\n",
        freezeframe_agent::man::escape(&see_also)
    ));
    roff
}
