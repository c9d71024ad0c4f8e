//! The DigitalOcean API client the command line builds, in one place: the token (from
//! `DIGITALOCEAN_TOKEN`, or a token file for the scheduled drill), the URL, the HTTPS client, the
//! scopes the token needs and the time each call may take.

use crate::agent::{Exit, Failure};
use crate::ssh::Host;
use freezeframe_agent::secret::read_private_file;
use freezeframe_digitalocean::{http_client, ApiError, Client, Token};
use std::path::Path;
use std::time::Duration;

/// What a command does with the API: the scopes its token needs and how long a call may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Access {
    /// The scopes, as the API names them.
    pub scopes: &'static [&'static str],
    /// How long one call may take.
    pub timeout: Duration,
    /// What the token is for, said when it is missing.
    pub why: &'static str,
}

impl Access {
    /// The scopes in words: `a, b and c`.
    pub(crate) fn scopes_text(&self) -> String {
        match self.scopes {
            [] => String::new(),
            [one] => (*one).to_string(),
            [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
        }
    }
}

/// The exit of an API call's failure: a token the API refuses is the user's configuration (2,
/// as a missing one is); any other failure is `otherwise`.
pub(crate) fn exit_of(e: &ApiError, otherwise: Exit) -> Exit {
    match e {
        ApiError::Unauthorized { .. } => Exit::Usage,
        _ => otherwise,
    }
}

/// A client of the API at `api_url` with the user's token, `DIGITALOCEAN_TOKEN`.
pub(crate) fn from_env(api_url: &str, access: &Access) -> Result<Client, Failure> {
    let token = std::env::var("DIGITALOCEAN_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            Failure::new(
                Exit::Usage,
                format!(
                    "{}: set DIGITALOCEAN_TOKEN to a token with {}",
                    access.why,
                    access.scopes_text()
                ),
            )
        })?;
    with_token(api_url, Token::new(token.trim()), access)
}

/// A client of the API at `api_url` with the token in `file` (private, as every secret file);
/// `setting` names where the file is configured.
pub(crate) fn from_file(
    api_url: &str,
    file: &Path,
    setting: &str,
    access: &Access,
) -> Result<Client, Failure> {
    let token = read_private_file(file).map_err(|e| {
        Failure::new(
            Exit::Usage,
            format!(
                "{} ({setting}): {e}; it needs {}",
                access.why,
                access.scopes_text()
            ),
        )
    })?;
    with_token(api_url, token.into(), access)
}

/// A client of the API at `api_url` with `token`.
pub(crate) fn with_token(api_url: &str, token: Token, access: &Access) -> Result<Client, Failure> {
    let http =
        http_client(api_url).map_err(|e| Failure::new(Exit::Failed, format!("cannot set up HTTPS: {e}")))?;
    Ok(Client::new(http, api_url, token, access.scopes, access.timeout))
}

/// The public IPv4 addresses of the Droplets tagged `tag`, from the API with the user's token
/// (`DIGITALOCEAN_TOKEN`).
pub async fn tagged(api_url: &str, tag: &str) -> Result<Vec<Host>, Failure> {
    let usage = |message: String| Failure::new(Exit::Usage, message);
    let client = from_env(
        api_url,
        &Access {
            scopes: &["droplet:read"],
            timeout: Duration::from_secs(15),
            why: "--tag asks the DigitalOcean API which Droplets have the tag",
        },
    )?;
    let droplets = client.droplets_with_tag(tag).await.map_err(|e| {
        Failure::new(
            exit_of(&e, Exit::Unreachable),
            format!("cannot list the Droplets tagged `{tag}`: {e}"),
        )
    })?;
    let mut hosts = Vec::new();
    for d in droplets {
        match d.public_ipv4() {
            Some(ip) => hosts.push(
                ip.parse::<Host>()
                    .map_err(|e| usage(format!("Droplet {} ({}): {e}", d.id, d.name)))?,
            ),
            None => eprintln!(
                "freezeframe: Droplet {} ({}) has no public IPv4 address: skipped",
                d.id, d.name
            ),
        }
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_listed_in_words() {
        let access = |scopes| Access {
            scopes,
            timeout: Duration::from_secs(1),
            why: "",
        };
        assert_eq!(access(&["droplet:read"]).scopes_text(), "droplet:read");
        assert_eq!(access(&["a", "b", "c"]).scopes_text(), "a, b and c");
    }
}
