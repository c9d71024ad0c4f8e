//! A container engine of canned containers, recording the commands run in them.

use super::{Container, Engine, EngineError, Exec, ExecOutput, Session};
use std::path::PathBuf;
use std::sync::Mutex;

/// How a command run in a container is answered: from the container's name and the command.
type Answer = Box<dyn Fn(&str, &[String]) -> ExecOutput + Send + Sync>;

/// Answers `running` with its containers and every command with `answer(container, cmd)`.
pub(crate) struct FakeEngine {
    pub containers: Vec<Container>,
    pub answer: Answer,
    /// Every command run: the container, the user, the command.
    pub ran: Mutex<Vec<(String, String, Vec<String>)>>,
    socket: PathBuf,
}

impl FakeEngine {
    pub(crate) fn new(
        containers: Vec<Container>,
        answer: impl Fn(&str, &[String]) -> ExecOutput + Send + Sync + 'static,
    ) -> FakeEngine {
        FakeEngine {
            containers,
            answer: Box::new(answer),
            ran: Mutex::new(Vec::new()),
            socket: PathBuf::from("/run/fake-engine.sock"),
        }
    }
}

#[async_trait::async_trait]
impl Engine for FakeEngine {
    async fn running(&self) -> Result<Vec<Container>, EngineError> {
        Ok(self.containers.clone())
    }

    async fn exec(&self, id: &str, exec: &Exec) -> Result<ExecOutput, EngineError> {
        self.ran
            .lock()
            .unwrap()
            .push((id.to_string(), exec.user.clone(), exec.cmd.clone()));
        Ok((self.answer)(id, &exec.cmd))
    }

    async fn session(&self, _id: &str, _exec: &Exec) -> Result<Box<dyn Session>, EngineError> {
        Err(EngineError::Refused {
            socket: self.socket.clone(),
            what: "a session".into(),
            problem: "the fake engine holds none".into(),
        })
    }
}
