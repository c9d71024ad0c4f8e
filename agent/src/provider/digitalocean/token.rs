//! Where the API token comes from: the systemd credential `$CREDENTIALS_DIRECTORY/do-token`
//! (`LoadCredential=`), the `DIGITALOCEAN_TOKEN` environment variable, or `token_file`, which,
//! like an ssh key, must not be readable by group or others.

use crate::secret::{read_file, read_private_file, Secret, SecretFileError};
use freezeframe_digitalocean::Token;
use std::path::{Path, PathBuf};

/// A secret read by the agent's checks, as the API client's token (which prints as redacted
/// too).
impl From<Secret> for Token {
    fn from(secret: Secret) -> Token {
        Token::new(secret.expose())
    }
}

/// The name of the systemd credential.
pub(crate) const CREDENTIAL_NAME: &str = "do-token";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum TokenError {
    #[error(
        "no DigitalOcean API token: put one in {file} (mode 600, owned by root), pass it as the \
         systemd credential `{CREDENTIAL_NAME}` (LoadCredential=), or set DIGITALOCEAN_TOKEN"
    )]
    Missing { file: PathBuf },
    #[error("the DigitalOcean API token: {0}")]
    File(#[from] SecretFileError),
}

/// Reads the token from the first source that has one: credential, environment, file.
pub(crate) fn load(token_file: &Path) -> Result<Secret, TokenError> {
    load_from(
        std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(PathBuf::from)
            .as_deref(),
        crate::secret::variable("DIGITALOCEAN_TOKEN"),
        token_file,
    )
}

/// [`load`] with its inputs given, for tests.
pub(crate) fn load_from(
    credentials_dir: Option<&Path>,
    env_token: Option<String>,
    token_file: &Path,
) -> Result<Secret, TokenError> {
    if let Some(dir) = credentials_dir {
        let file = dir.join(CREDENTIAL_NAME);
        if file.exists() {
            // systemd made this file private to the service; no mode check.
            return Ok(read_file(&file)?);
        }
    }
    if let Some(token) = env_token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()) {
        return Ok(Secret::new(token));
    }
    match read_private_file(token_file) {
        Err(SecretFileError::Missing { file }) => Err(TokenError::Missing { file }),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn the_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        write(&file, "dop_v1_secret\n", 0o640);
        let err = load_from(None, None, &file).unwrap_err();
        assert!(matches!(
            err,
            TokenError::File(SecretFileError::TooOpen { mode: 0o640, .. })
        ));
        assert!(err.to_string().contains("chmod 600"));
        assert!(!err.to_string().contains("dop_v1_secret"));
        write(&file, "dop_v1_secret\n", 0o600);
        assert_eq!(load_from(None, None, &file).unwrap().expose(), "dop_v1_secret");
    }

    /// As the attacker: a private file another user owns (and so can rewrite at will).
    #[test]
    fn a_token_file_another_user_owns_is_refused() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "only root can give a file to another user: run the tests as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        write(&file, "dop_v1_planted\n", 0o600);
        std::os::unix::fs::chown(&file, Some(65534), Some(65534)).unwrap();
        let err = load_from(None, None, &file).unwrap_err();
        assert!(
            matches!(
                &err,
                TokenError::File(SecretFileError::NotOwned { uid: 65534, .. })
            ),
            "{err:?}"
        );
        let said = err.to_string();
        assert!(
            said.contains(&file.display().to_string())
                && said.contains(&format!("chown root:root {}", file.display())),
            "{said}"
        );
        assert!(!said.contains("dop_v1_planted"), "{said}");
        std::os::unix::fs::chown(&file, Some(0), Some(0)).unwrap();
        assert_eq!(load_from(None, None, &file).unwrap().expose(), "dop_v1_planted");
    }

    #[test]
    fn sources_in_order_credential_environment_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        write(&file, "from-file", 0o600);
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        assert_eq!(
            load_from(Some(&creds), Some("from-env".into()), &file)
                .unwrap()
                .expose(),
            "from-env"
        );
        std::fs::write(creds.join(CREDENTIAL_NAME), "from-credential\n").unwrap();
        assert_eq!(
            load_from(Some(&creds), Some("from-env".into()), &file)
                .unwrap()
                .expose(),
            "from-credential"
        );
        assert_eq!(
            load_from(None, Some("  ".into()), &file).unwrap().expose(),
            "from-file"
        );
    }

    #[test]
    fn missing_and_empty_tokens_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let err = load_from(None, None, &file).unwrap_err().to_string();
        assert!(
            err.contains("LoadCredential=") && err.contains("DIGITALOCEAN_TOKEN"),
            "{err}"
        );
        write(&file, "\n", 0o600);
        assert_eq!(
            load_from(None, None, &file).unwrap_err(),
            TokenError::File(SecretFileError::Empty { file })
        );
    }
}
