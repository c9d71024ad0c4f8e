//! `freezeframe man DIR`: the man pages, `clap_mangen`'s rendering of the arguments with the
//! sections clap does not write (EXIT STATUS, ENVIRONMENT, FILES, EXAMPLES, SEE ALSO) as roff.

use crate::args::Cli;
use clap::CommandFactory;
use std::path::Path;

/// freezeframe.1 and one page per subcommand (freezeframe-snapshot.1, …), each with the
/// global options and the sections clap does not write.
pub fn write(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut command = Cli::command();
    // Propagates the global options (-H, --json, --bus-address, …) into each subcommand's page.
    command.build();
    let mut pages = vec![("freezeframe".to_string(), command.clone(), None)];
    for sub in command.get_subcommands() {
        let name = format!("freezeframe-{}", sub.get_name());
        pages.push((
            name.clone(),
            sub.clone().name(name.clone()),
            Some(sub.get_name().to_string()),
        ));
    }
    for (name, page, sub) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        out.extend_from_slice(extra_sections(sub.as_deref()).as_bytes());
        std::fs::write(dir.join(format!("{name}.1")), out)?;
    }
    Ok(())
}

/// The sections for `freezeframe.1` (`None`) or the page of subcommand `sub`.
fn extra_sections(sub: Option<&str>) -> String {
    let mut roff = freezeframe_contract::exit::roff(freezeframe_contract::exit::Program::Cli);
    roff.push_str(
        ".SH ENVIRONMENT\n\
         .TP\n\\fBDBUS_SYSTEM_BUS_ADDRESS\\fR\nThe system bus to reach the local agent on \
         (default unix:path=/run/dbus/system_bus_socket).\n\
         .TP\n\\fBDIGITALOCEAN_TOKEN\\fR\nThe API token \\fB--tag\\fR lists Droplets with \
         (scope droplet:read). The agent reads its own token from its configuration.\n\
         .SH FILES\n\
         .TP\n\\fI/etc/freezeframe/config.toml\\fR, \\fI/etc/freezeframe/config.d/*.toml\\fR\n\
         The agent's configuration (freezeframe-agent(1)).\n\
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
    roff.push_str(".SH \"SEE ALSO\"\nfreezeframe-agent(1), systemd-stdio-bridge(1), ssh(1)\n");
    roff
}
