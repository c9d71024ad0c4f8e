//! Which Droplets an offline run takes: by id, by tag, or by `-H` host, each settled through
//! the API before anything is powered off (a host does not choose which Droplet is).

use super::*;

/// The Droplets an offline run takes, by id, each with the way to its agent when one is known:
/// `--droplet` ids, the Droplets carrying `--tag` (their agents by public address), and `-H`
/// hosts (the Droplet the API says the host is: [`host_droplet`]). Every one is settled before
/// anything is powered off.
pub(super) async fn named(
    cli: &Cli,
    client: &impl Api,
    droplets: &[u64],
) -> Result<Vec<(u64, Option<Target>)>, Failure> {
    let remote = |host: Host| Target::Remote {
        host,
        ssh_command: cli.ssh_command.clone(),
    };
    let unreachable = |what: String, e: ApiError| {
        Failure::new(crate::api::exit_of(&e, Exit::Unreachable), format!("{what}: {e}"))
    };
    let mut named: Vec<(u64, Option<Target>)> = droplets.iter().map(|id| (*id, None)).collect();
    if let Some(tag) = &cli.tag {
        let tagged = client
            .droplets_with_tag(tag)
            .await
            .map_err(|e| unreachable(format!("cannot list the Droplets tagged `{tag}`"), e))?;
        for d in tagged {
            let agent = d.public_ipv4().and_then(|ip| ip.parse().ok()).map(remote);
            named.push((d.id, agent));
        }
    }
    if !cli.hosts.is_empty() {
        let all = client
            .droplets()
            .await
            .map_err(|e| unreachable("cannot list the account's Droplets".into(), e))?;
        for host in &cli.hosts {
            let target = remote(host.clone());
            let id = host_droplet(&all, host, &target).await?;
            named.push((id, Some(target)));
        }
    }
    let mut seen = std::collections::HashSet::new();
    named.retain(|(id, _)| seen.insert(*id));
    Ok(named)
}

/// The Droplet that `-H host` is, by the API alone: [`which_droplet`]. What the host's agent
/// says (`digitalocean.droplet_id`) is only checked against it, never taken on its word: root on
/// that machine could name another Droplet and have the operator's token shut that one down.
/// Where the two differ, or the API knows no such Droplet, nothing is done: `--droplet ID` names
/// the Droplet instead.
async fn host_droplet(all: &[ListedDroplet], host: &Host, target: &Target) -> Result<u64, Failure> {
    let claimed = agent_status(target).await.ok().and_then(|s| s.droplet_id);
    let refuse = |what: String| {
        Failure::new(
            Exit::Usage,
            format!(
                "-H {host}: {what}; nothing was powered off. Name the Droplet to snapshot with \
                 --droplet ID (its agent is then not waited for)"
            ),
        )
    };
    match (which_droplet(all, &host.host), claimed) {
        (Some(id), None) => Ok(id),
        (Some(id), Some(claimed)) if claimed == id => Ok(id),
        (Some(id), Some(claimed)) => Err(refuse(format!(
            "its agent says it is Droplet {claimed} (`digitalocean.droplet_id`), but by the API \
             {} is Droplet {id}: a host does not choose which Droplet is powered off; correct \
             that agent's configuration",
            host.host
        ))),
        (None, Some(claimed)) => Err(refuse(format!(
            "its agent says it is Droplet {claimed} (`digitalocean.droplet_id`), but no Droplet \
             of this account has {}'s address or name, so the API cannot confirm it: a host \
             does not choose which Droplet is powered off",
            host.host
        ))),
        (None, None) => Err(refuse(
            "no Droplet of this account has that public address or name, nor that private \
             address, and its agent names none"
                .into(),
        )),
    }
}

/// The one Droplet whose public address, or else private address, is the address `host` is
/// (itself, or what it resolves to here: what ssh reaches), or else whose name it is. None when
/// none or several are.
fn which_droplet(all: &[ListedDroplet], host: &str) -> Option<u64> {
    let by = |wanted: &dyn Fn(&ListedDroplet) -> bool| {
        let found: Vec<u64> = all.iter().filter(|d| wanted(d)).map(|d| d.id).collect();
        (found.len() == 1).then(|| found[0])
    };
    let addresses: Vec<std::net::IpAddr> = match host.parse() {
        Ok(ip) => vec![ip],
        Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(host, 22))
            .map(|found| found.map(|a| a.ip()).collect())
            .unwrap_or_default(),
    };
    let at = |d: &ListedDroplet, kind: &str| {
        d.networks.v4.iter().any(|n| {
            n.kind == kind
                && n.ip_address
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| addresses.contains(&ip))
        })
    };
    by(&|d| at(d, "public"))
        .or_else(|| by(&|d| at(d, "private")))
        .or_else(|| by(&|d| d.name == host))
}
