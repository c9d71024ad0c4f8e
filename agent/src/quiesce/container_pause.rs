//! What each container gets across the window, and the pause. A `[[quiescer]] kind =
//! "container"` that selects it decides first, then the container's own `freezeframe.quiesce`
//! label (`auto`, `pause` or `none`); with neither, `auto`: its database's native quiescer
//! when it runs one (`container.rs`), nothing otherwise. A paused container is stopped in place
//! by the engine (the cgroup freezer, as `FreezeUnit` does for units), recorded until it is
//! unpaused so that a dead agent's pause is undone by `thaw` or the next run; one whose pause
//! would stop what the agent itself needs (the agent, the engine, the system bus) is refused.

use super::pending::{self, Pending};
use crate::config::{ContainerMode, ContainerRule, ContainerSelector, DEFAULT_QUIESCER_TIMEOUT};
use crate::container::{printable, Container, Engine};
use crate::transaction::ports::{QuiesceError, Quiescer, Target};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What is done to one container, and who said so (none: the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub mode: ContainerMode,
    pub by: Option<String>,
    /// Bound on the pause and on the unpause: the rule's, or the quiescers' default.
    pub timeout: Duration,
}

/// Decides for `container`: the first rule that selects it, else (with `auto`) its label. None:
/// nothing is done to it (`auto` off and no rule). An unreadable label is `auto` and a problem.
pub(crate) fn decide(
    container: &Container,
    rules: &[ContainerRule],
    auto: bool,
) -> (Option<Decision>, Option<String>) {
    if let Some(rule) = rules.iter().find(|r| selects(&r.selector, container)) {
        let by = format!("[[quiescer]] kind = \"container\", {}", rule.selector);
        return (
            Some(Decision {
                mode: rule.mode,
                by: Some(by),
                timeout: rule.timeout,
            }),
            None,
        );
    }
    if !auto {
        return (None, None);
    }
    let Some(value) = container.labels.get(ContainerMode::LABEL) else {
        return (
            Some(Decision {
                mode: ContainerMode::Auto,
                by: None,
                timeout: DEFAULT_QUIESCER_TIMEOUT,
            }),
            None,
        );
    };
    match ContainerMode::parse(value) {
        Some(mode) => (
            Some(Decision {
                mode,
                by: Some(format!("label {}={value}", ContainerMode::LABEL)),
                timeout: DEFAULT_QUIESCER_TIMEOUT,
            }),
            None,
        ),
        None => (
            Some(Decision {
                mode: ContainerMode::Auto,
                by: None,
                timeout: DEFAULT_QUIESCER_TIMEOUT,
            }),
            Some(format!(
                "container {}: its label {}=`{}` is not pause, none or auto (taken as auto); fix \
                 the label, or decide with a [[quiescer]] kind = \"container\"",
                container.name,
                ContainerMode::LABEL,
                printable(value)
            )),
        ),
    }
}

fn selects(selector: &ContainerSelector, container: &Container) -> bool {
    match selector {
        ContainerSelector::Name(name) => &container.name == name,
        ContainerSelector::Label { key, value } => container
            .labels
            .get(key)
            .is_some_and(|v| value.as_ref().is_none_or(|want| want == v)),
    }
}

/// A container to pause across the window.
#[derive(Clone)]
pub(crate) struct ToPause {
    pub container: Container,
    pub engine: Arc<dyn Engine>,
    /// The label or rule that asked for it.
    pub by: String,
    pub timeout: Duration,
}

impl ToPause {
    pub(crate) fn label(&self) -> String {
        format!("container {} (pause)", self.container.name)
    }
}

/// The cgroup a pause freezes a process in: its cgroup v1 `freezer` hierarchy's where there is
/// one (a hybrid setup, where engines freeze through it), else its cgroup v2 one (`0::`); named
/// as this machine's root cgroup namespace names it. None when the process is gone.
fn freezer_cgroup(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    freezer_line(&text)
}

fn freezer_line(text: &str) -> Option<String> {
    let entries: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(':')?;
            rest.split_once(':')
        })
        .collect();
    entries
        .iter()
        .find(|(controllers, _)| controllers.split(',').any(|c| c == "freezer"))
        .or_else(|| entries.iter().find(|(controllers, _)| controllers.is_empty()))
        .map(|(_, path)| path.to_string())
}

/// Whether cgroup `inner` is `outer` or inside it.
fn within(inner: &str, outer: &str) -> bool {
    inner == outer || inner.starts_with(&format!("{}/", outer.trim_end_matches('/')))
}

/// The process listening on a unix socket (the kernel's word, `SO_PEERCRED`); None when it
/// cannot be reached.
fn listener_of(socket: &Path) -> Option<u32> {
    let stream = UnixStream::connect(socket).ok()?;
    let creds = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials).ok()?;
    u32::try_from(creds.pid()).ok()
}

/// The processes the agent needs while it works, by what each is.
fn needed_by_the_agent(engine_socket: &Path) -> Vec<(&'static str, u32)> {
    let mut needed = vec![("the agent itself", std::process::id())];
    if let Some(pid) = listener_of(engine_socket) {
        needed.push(("the container engine", pid));
    }
    if let Some(pid) = listener_of(Path::new(SYSTEM_BUS_SOCKET)) {
        needed.push(("the system bus", pid));
    }
    needed
}

/// The system bus's socket, where systemd and the databases' units are reached.
const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";

/// Refuses to pause a container that holds a process the agent needs: pausing it would stop
/// the run that is to unpause it.
fn refuse_own_path(container: &Container, needed: &[(&'static str, u32)]) -> Result<(), QuiesceError> {
    let theirs = freezer_cgroup(container.main_pid);
    for (what, pid) in needed {
        let held = container.pids.contains(pid)
            || matches!((&theirs, freezer_cgroup(*pid)), (Some(t), Some(mine)) if within(&mine, t));
        if held {
            return Err(QuiesceError::new(format!(
                "container {} holds {what} (pid {pid}): pausing it would stop the snapshot that is \
                 to unpause it; label it freezeframe.quiesce=none, or quiesce what runs in it with a \
                 hook",
                container.name
            )));
        }
    }
    Ok(())
}

/// The quiescer that pauses one container across the window.
pub(crate) struct PausedContainer {
    target: ToPause,
    name: String,
    runtime_dir: Option<PathBuf>,
}

impl PausedContainer {
    pub(crate) fn new(target: ToPause, runtime_dir: Option<PathBuf>) -> PausedContainer {
        PausedContainer {
            name: target.label(),
            target,
            runtime_dir,
        }
    }

    fn pending(&self) -> Pending {
        Pending::PausedContainer {
            id: self.target.container.id.clone(),
            socket: self.target.engine.socket().to_path_buf(),
        }
    }

    fn error(&self, problem: impl std::fmt::Display) -> QuiesceError {
        QuiesceError::new(format!("container {}: {problem}", self.target.container.name))
    }
}

#[async_trait::async_trait]
impl Quiescer for PausedContainer {
    fn name(&self) -> &str {
        &self.name
    }

    fn prepare_timeout(&self) -> Duration {
        self.target.timeout
    }

    fn resume_timeout(&self) -> Duration {
        self.target.timeout
    }

    fn details(&self) -> Option<String> {
        Some(format!("paused, as {} asks", self.target.by))
    }

    async fn check(&mut self, _targets: &[Target]) -> Result<(), QuiesceError> {
        let c = &self.target.container;
        match self
            .target
            .engine
            .paused(&c.id)
            .await
            .map_err(QuiesceError::caused_by)?
        {
            None => return Err(self.error("it is no longer running")),
            Some(true) => {
                return Err(self.error(format!(
                    "it is already paused by someone else; unpause it first (`docker unpause {}`)",
                    c.name
                )))
            }
            Some(false) => {}
        }
        let (container, socket) = (c.clone(), self.target.engine.socket().to_path_buf());
        crate::blocking::run(move || refuse_own_path(&container, &needed_by_the_agent(&socket))).await
    }

    async fn prepare(&mut self) -> Result<(), QuiesceError> {
        if let Some(dir) = &self.runtime_dir {
            pending::add(dir, self.pending())
                .map_err(|e| self.error(format!("cannot record it in {}: {e}", dir.display())))?;
        }
        self.target
            .engine
            .pause(&self.target.container.id)
            .await
            .map_err(QuiesceError::caused_by)
    }

    async fn resume(&mut self) -> Result<(), QuiesceError> {
        let id = &self.target.container.id;
        // A pause that failed part-way may have left it paused, or not at all.
        if self
            .target
            .engine
            .paused(id)
            .await
            .map_err(QuiesceError::caused_by)?
            == Some(true)
        {
            self.target
                .engine
                .unpause(id)
                .await
                .map_err(QuiesceError::caused_by)?;
        }
        if let Some(dir) = &self.runtime_dir {
            let _ = pending::remove(dir, &self.pending());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::fake::FakeEngine;

    fn container(name: &str, labels: &[(&str, &str)]) -> Container {
        Container {
            id: format!("{:0>64}", name.len()),
            name: name.into(),
            image: "local/app".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            main_pid: 1,
            pids: vec![1],
            root_password: None,
            mounts: vec![],
        }
    }

    fn rule(selector: ContainerSelector, mode: ContainerMode) -> ContainerRule {
        ContainerRule {
            selector,
            mode,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_rule_decides_before_the_label_and_the_label_before_the_default() {
        let labelled = container("web", &[("freezeframe.quiesce", "pause"), ("role", "worker")]);
        let (d, problem) = decide(&labelled, &[], true);
        assert_eq!(d.unwrap().mode, ContainerMode::Pause);
        assert_eq!(problem, None);
        let rules = [
            rule(
                ContainerSelector::Label {
                    key: "role".into(),
                    value: Some("db".into()),
                },
                ContainerMode::Pause,
            ),
            rule(
                ContainerSelector::Label {
                    key: "role".into(),
                    value: None,
                },
                ContainerMode::None,
            ),
        ];
        let d = decide(&labelled, &rules, true).0.unwrap();
        assert_eq!(d.mode, ContainerMode::None, "the first rule that selects it wins");
        assert!(d.by.unwrap().contains("label = \"role\""));
        // `auto` off: rules alone, labels not read.
        assert_eq!(decide(&labelled, &[], false).0, None);
        let by_name = [rule(ContainerSelector::Name("web".into()), ContainerMode::Auto)];
        assert_eq!(
            decide(&labelled, &by_name, false).0.unwrap().mode,
            ContainerMode::Auto
        );
        assert_eq!(
            decide(&container("x", &[]), &[], true).0.unwrap().mode,
            ContainerMode::Auto
        );
    }

    #[test]
    fn an_unknown_label_value_is_auto_and_said() {
        let (d, problem) = decide(&container("web", &[("freezeframe.quiesce", "freeze")]), &[], true);
        assert_eq!(d.unwrap().mode, ContainerMode::Auto);
        let problem = problem.unwrap();
        assert!(
            problem.contains("web") && problem.contains("`freeze`"),
            "{problem}"
        );
    }

    #[test]
    fn a_container_that_holds_the_agent_is_never_paused() {
        let me = std::process::id();
        let mut holds_me = container("agent-box", &[]);
        holds_me.main_pid = me;
        holds_me.pids = vec![me];
        let needed = [("the agent itself", me)];
        let refused = refuse_own_path(&holds_me, &needed).unwrap_err().to_string();
        assert!(
            refused.contains("the agent itself") && refused.contains("agent-box"),
            "{refused}"
        );
        // Another process in the agent's own cgroup (a container's cgroup holding the agent).
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let mut beside = container("beside", &[]);
        beside.main_pid = child.id();
        beside.pids = vec![child.id()];
        let refused = refuse_own_path(&beside, &needed);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(refused.is_err(), "a cgroup shared with the agent is the agent's");
        assert!(within(
            "/system.slice/docker-ab.scope/inner",
            "/system.slice/docker-ab.scope"
        ));
        assert!(
            within("/docker/ab", "/"),
            "a container in the root cgroup holds everything"
        );
        assert!(!within(
            "/system.slice/docker-abc.scope",
            "/system.slice/docker-ab.scope"
        ));
    }

    #[test]
    fn the_freezer_hierarchy_is_read_where_engines_freeze() {
        let hybrid = "6:freezer:/docker/ab\n4:memory:/docker/ab\n0::/\n";
        assert_eq!(freezer_line(hybrid).as_deref(), Some("/docker/ab"));
        let joined = "3:cpu,freezer:/x\n0::/y\n";
        assert_eq!(freezer_line(joined).as_deref(), Some("/x"));
        let unified = "0::/system.slice/docker-ab.scope\n";
        assert_eq!(
            freezer_line(unified).as_deref(),
            Some("/system.slice/docker-ab.scope")
        );
        assert_eq!(freezer_line(""), None);
    }

    #[tokio::test]
    async fn a_pause_is_recorded_before_it_is_made_and_forgotten_once_undone() {
        let dir = tempfile::tempdir().unwrap();
        let app = container("app", &[]);
        let engine = Arc::new(FakeEngine::new(vec![app.clone()], |_, _| unreachable!()));
        let mut q = PausedContainer::new(
            ToPause {
                container: app.clone(),
                engine: engine.clone(),
                by: "label freezeframe.quiesce=pause".into(),
                timeout: Duration::from_secs(5),
            },
            Some(dir.path().to_path_buf()),
        );
        q.prepare().await.unwrap();
        assert_eq!(engine.paused(&app.id).await.unwrap(), Some(true));
        assert_eq!(
            pending::recorded(dir.path()),
            vec![Pending::PausedContainer {
                id: app.id.clone(),
                socket: engine.socket().to_path_buf()
            }]
        );
        // Paused already (by this run): the check before a next run refuses it.
        assert!(q
            .check(&[])
            .await
            .unwrap_err()
            .to_string()
            .contains("already paused"));
        q.resume().await.unwrap();
        assert_eq!(engine.paused(&app.id).await.unwrap(), Some(false));
        assert!(pending::recorded(dir.path()).is_empty());
        assert_eq!(
            *engine.changes.lock().unwrap(),
            vec![format!("pause {}", app.id), format!("unpause {}", app.id)]
        );
    }
}
