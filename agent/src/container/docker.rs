//! The Docker Engine API (and Podman's compatible one) on a unix socket, through `bollard`. The
//! API version is negotiated with the engine, so an older one (Debian's 20.10 speaks 1.41) is
//! asked only what it understands.

use super::{
    printable, root_password, same_namespace, valid_id, valid_labels, valid_name, Container, Engine,
    EngineError, Exec, ExecOutput, Mount, Session, MAX_ITEMS, MAX_OUTPUT,
};
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;

/// Bound on each request to the engine, in seconds (a command's own run included).
const REQUEST_TIMEOUT: u64 = 120;

/// An engine at a unix socket; connected (and its version negotiated) on first use.
pub(crate) struct Docker {
    socket: PathBuf,
    client: OnceCell<bollard::Docker>,
}

impl Docker {
    pub(crate) fn new(socket: PathBuf) -> Docker {
        Docker {
            socket,
            client: OnceCell::new(),
        }
    }

    fn unreachable(&self, problem: impl std::fmt::Display) -> EngineError {
        EngineError::Unreachable {
            socket: self.socket.clone(),
            problem: problem.to_string(),
        }
    }

    fn refused(&self, what: &str, problem: impl std::fmt::Display) -> EngineError {
        EngineError::Refused {
            socket: self.socket.clone(),
            what: what.to_string(),
            problem: printable(&problem.to_string()),
        }
    }

    async fn client(&self) -> Result<&bollard::Docker, EngineError> {
        self.client
            .get_or_try_init(|| async {
                let path = self
                    .socket
                    .to_str()
                    .ok_or_else(|| self.unreachable("the path is not UTF-8"))?;
                bollard::Docker::connect_with_unix(path, REQUEST_TIMEOUT, bollard::API_DEFAULT_VERSION)
                    .map_err(|e| self.unreachable(e))?
                    .negotiate_version()
                    .await
                    .map_err(|e| self.unreachable(e))
            })
            .await
    }

    /// One running container, inspected and validated; None when it is gone or unusable.
    async fn inspect(&self, id: &str) -> Result<Option<Container>, EngineError> {
        let client = self.client().await?;
        let Ok(found) = client.inspect_container(id, None).await else {
            return Ok(None);
        };
        let state = found.state.unwrap_or_default();
        let Some(main_pid) = state.pid.and_then(|p| u32::try_from(p).ok()).filter(|p| *p > 1) else {
            return Ok(None);
        };
        if state.running != Some(true) || state.paused == Some(true) {
            return Ok(None);
        }
        let top = client
            .top_processes(id, None::<bollard::query_parameters::TopOptions>)
            .await
            .map_err(|e| self.refused("listing a container's processes", e))?;
        let config = found.config.unwrap_or_default();
        let image_labels = self.image_labels(found.image.as_deref()).await;
        let short: String = id.chars().take(12).collect();
        Ok(Some(Container {
            id: id.to_string(),
            name: found.name.as_deref().and_then(valid_name).unwrap_or(short),
            image: printable(config.image.as_deref().unwrap_or("")),
            labels: valid_labels(
                config
                    .labels
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(key, value)| operators_label(key, value, image_labels.as_ref())),
            ),
            main_pid,
            pids: same_namespace(main_pid, top_pids(&top)),
            root_password: root_password(config.env.iter().flatten().map(String::as_str)),
            mounts: found
                .mounts
                .unwrap_or_default()
                .into_iter()
                .take(MAX_ITEMS)
                .filter_map(|m| {
                    Some(Mount {
                        destination: PathBuf::from(m.destination?),
                        source: PathBuf::from(m.source?),
                    })
                })
                .collect(),
        }))
    }

    /// The labels a container's image carries; None when the image cannot be inspected.
    async fn image_labels(&self, image: Option<&str>) -> Option<HashMap<String, String>> {
        let client = self.client().await.ok()?;
        let inspected = client
            .inspect_image(image.filter(|i| !i.is_empty())?)
            .await
            .ok()?;
        Some(inspected.config.and_then(|c| c.labels).unwrap_or_default())
    }

    async fn start(
        &self,
        id: &str,
        exec: &Exec,
        stdin: bool,
    ) -> Result<(String, StartExecResults), EngineError> {
        let client = self.client().await?;
        let env: Vec<String> = exec
            .env
            .iter()
            .map(|(name, value)| format!("{name}={}", value.expose()))
            .collect();
        let created = client
            .create_exec(
                id,
                CreateExecOptions {
                    attach_stdin: Some(stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    user: Some(exec.user.clone()),
                    cmd: Some(exec.cmd.clone()),
                    env: Some(env),
                    ..Default::default()
                },
            )
            // The engine's answer never repeats the environment.
            .await
            .map_err(|e| self.refused("running a command in a container", e))?;
        let started = client
            .start_exec(&created.id, Some(StartExecOptions::default()))
            .await
            .map_err(|e| self.refused("starting a command in a container", e))?;
        Ok((created.id, started))
    }
}

/// Whether a label the engine shows on a container is the operator's word. The engine merges
/// the image's labels into the container's, but those are the image author's: one shown with its
/// image's value is not read, so an image never decides how it is quiesced. With the image
/// unknown, freezeframe's own labels are not read at all.
fn operators_label(key: &str, value: &str, image: Option<&HashMap<String, String>>) -> bool {
    match image {
        Some(image) => image.get(key).is_none_or(|v| v != value),
        None => !key.starts_with("freezeframe."),
    }
}

/// The PID column of `top`'s answer (the engine lists host pids).
fn top_pids(top: &bollard::models::ContainerTopResponse) -> Vec<u32> {
    let Some(column) = top
        .titles
        .as_ref()
        .and_then(|t| t.iter().position(|title| title == "PID"))
    else {
        return Vec::new();
    };
    top.processes
        .iter()
        .flatten()
        .take(MAX_ITEMS)
        .filter_map(|row| row.get(column)?.parse().ok())
        .collect()
}

#[async_trait::async_trait]
impl Engine for Docker {
    async fn running(&self) -> Result<Vec<Container>, EngineError> {
        let client = self.client().await?;
        let listed = client
            .list_containers(None::<bollard::query_parameters::ListContainersOptions>)
            .await
            .map_err(|e| self.refused("listing the containers", e))?;
        let mut found = Vec::new();
        for id in listed
            .iter()
            .filter_map(|c| c.id.as_deref().and_then(valid_id))
            .take(MAX_ITEMS)
        {
            if let Some(container) = self.inspect(&id).await? {
                found.push(container);
            }
        }
        Ok(found)
    }

    async fn exec(&self, id: &str, exec: &Exec) -> Result<ExecOutput, EngineError> {
        let (exec_id, StartExecResults::Attached { mut output, .. }) = self.start(id, exec, false).await?
        else {
            return Err(self.refused("attaching to a command", "it started detached"));
        };
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(piece) = output.next().await {
            match piece.map_err(|e| self.refused("reading a command's output", e))? {
                LogOutput::StdOut { message } if stdout.len() < MAX_OUTPUT => {
                    stdout.extend_from_slice(&message)
                }
                LogOutput::StdErr { message } if stderr.len() < MAX_OUTPUT => {
                    stderr.extend_from_slice(&message)
                }
                _ => {}
            }
        }
        // The command's exit code: the engine records it as the process's exit reaches it,
        // which may come just after its output ended.
        let client = self.client().await?;
        let mut exit_code = None;
        for _ in 0..100 {
            let inspected = client
                .inspect_exec(&exec_id)
                .await
                .map_err(|e| self.refused("reading a command's exit code", e))?;
            exit_code = inspected.exit_code;
            if exit_code.is_some() || inspected.running != Some(true) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(ExecOutput {
            exit_code,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    async fn session(&self, id: &str, exec: &Exec) -> Result<Box<dyn Session>, EngineError> {
        let (_, StartExecResults::Attached { output, input }) = self.start(id, exec, true).await? else {
            return Err(self.refused("attaching to a command", "it started detached"));
        };
        Ok(Box::new(Attached {
            output,
            input,
            pending: Vec::new(),
            stderr: Vec::new(),
            ended: false,
        }))
    }

    async fn paused(&self, id: &str) -> Result<Option<bool>, EngineError> {
        let client = self.client().await?;
        match client.inspect_container(id, None).await {
            Ok(found) => {
                let state = found.state.unwrap_or_default();
                Ok((state.running == Some(true)).then_some(state.paused == Some(true)))
            }
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(self.refused("inspecting a container", e)),
        }
    }

    async fn pause(&self, id: &str) -> Result<(), EngineError> {
        let client = self.client().await?;
        client
            .pause_container(id)
            .await
            .map_err(|e| self.refused("pausing a container", e))
    }

    async fn unpause(&self, id: &str) -> Result<(), EngineError> {
        let client = self.client().await?;
        client
            .unpause_container(id)
            .await
            .map_err(|e| self.refused("unpausing a container", e))
    }

    fn socket(&self) -> &std::path::Path {
        &self.socket
    }
}

type Output = Pin<Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// A command with its input and output attached through the engine.
struct Attached {
    output: Output,
    input: Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    pending: Vec<u8>,
    stderr: Vec<u8>,
    ended: bool,
}

#[async_trait::async_trait]
impl Session for Attached {
    async fn write(&mut self, text: &str) -> std::io::Result<()> {
        self.input.write_all(text.as_bytes()).await?;
        self.input.flush().await
    }

    async fn read_line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..end]).into_owned()));
            }
            if self.ended || self.pending.len() > MAX_OUTPUT {
                return Ok(None);
            }
            match self.output.next().await {
                Some(Ok(LogOutput::StdOut { message })) => self.pending.extend_from_slice(&message),
                Some(Ok(LogOutput::StdErr { message })) if self.stderr.len() < MAX_OUTPUT => {
                    self.stderr.extend_from_slice(&message)
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
                None => self.ended = true,
            }
        }
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_the_image_carries_is_not_the_operators() {
        let image: HashMap<String, String> = [("freezeframe.quiesce".to_string(), "none".to_string())].into();
        assert!(!operators_label("freezeframe.quiesce", "none", Some(&image)));
        assert!(
            operators_label("freezeframe.quiesce", "pause", Some(&image)),
            "set over the image's"
        );
        assert!(operators_label("role", "db", Some(&image)));
        assert!(!operators_label("freezeframe.quiesce", "pause", None));
        assert!(operators_label("role", "db", None));
    }
}
