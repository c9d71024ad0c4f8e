//! A private D-Bus system bus for tests (a `dbus-daemon` of the test's own), and stand-ins for
//! systemd and logind on it: enough of org.freedesktop.systemd1 and org.freedesktop.login1 for
//! the agent's discovery, unit quiescers and inhibitor lock, with units that point at real
//! processes the test started. Every call the agent makes is recorded.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zbus::object_server::SignalEmitter;
use zbus::{ObjectPath, OwnedObjectPath};

pub use freezeframe_demo::private_bus::PrivateBus;

/// One unit the fake systemd knows.
#[derive(Debug, Clone)]
pub struct FakeUnit {
    pub name: String,
    /// 0 for a unit without a main process (Debian's umbrella `postgresql.service`).
    pub main_pid: u32,
    pub active_state: String,
    pub freezer_state: String,
}

impl FakeUnit {
    pub fn active(name: &str, main_pid: u32) -> FakeUnit {
        FakeUnit {
            name: name.to_string(),
            main_pid,
            active_state: "active".into(),
            freezer_state: "running".into(),
        }
    }
}

#[derive(Default)]
struct State {
    units: BTreeMap<String, FakeUnit>,
    calls: Vec<String>,
    /// Read ends of the inhibitor pipes handed out; the lock is held while the write end is.
    inhibitors: Vec<std::fs::File>,
}

type Shared = Arc<Mutex<State>>;

/// systemd and logind stand-ins serving on a private bus from a thread of their own.
pub struct FakeSystemd {
    state: Shared,
    _connection: zbus::Connection,
    _runtime: tokio::runtime::Runtime,
}

fn unit_path(name: &str) -> OwnedObjectPath {
    // systemd escapes every byte outside [A-Za-z0-9] as _XX.
    let escaped: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("_{b:02x}")
            }
        })
        .collect();
    OwnedObjectPath::try_from(format!("/org/freedesktop/systemd1/unit/{escaped}")).expect("a valid path")
}

/// Shell-style matching with `*`, as ListUnitsByPatterns does for these patterns.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            name.starts_with(head)
                && (0..=name.len() - head.len()).any(|i| glob(rest, &name[head.len() + i..]))
        }
    }
}

impl FakeSystemd {
    /// Serves `units` as org.freedesktop.systemd1 and an inhibitor-granting
    /// org.freedesktop.login1 on `bus`.
    pub fn serve(bus: &PrivateBus, units: Vec<FakeUnit>) -> FakeSystemd {
        let state: Shared = Arc::new(Mutex::new(State {
            units: units.iter().map(|u| (u.name.clone(), u.clone())).collect(),
            ..Default::default()
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let connection = runtime.block_on(async {
            let mut builder = zbus::connection::Builder::address(bus.address.as_str())
                .name("org.freedesktop.systemd1")
                .name("org.freedesktop.login1")
                .serve_at("/org/freedesktop/systemd1", Manager(state.clone()))
                .serve_at("/org/freedesktop/login1", Login(state.clone()));
            for unit in &units {
                let path = unit_path(&unit.name);
                builder = builder
                    .serve_at(path.clone(), UnitObject(state.clone(), unit.name.clone()))
                    .serve_at(path, ServiceObject(state.clone(), unit.name.clone()));
            }
            builder.build().await.expect("connect the fake systemd")
        });
        FakeSystemd {
            state,
            _connection: connection,
            _runtime: runtime,
        }
    }

    /// Every call made, in order, such as `FreezeUnit app.service` or `Inhibit shutdown:sleep delay`.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// A unit's current state.
    pub fn unit(&self, name: &str) -> FakeUnit {
        self.state.lock().unwrap().units[name].clone()
    }

    /// How many inhibitor locks are still held by whoever took them.
    pub fn inhibitors_held(&self) -> usize {
        let state = self.state.lock().unwrap();
        state
            .inhibitors
            .iter()
            .filter(|read_end| {
                let mut fds = [nix::poll::PollFd::new(
                    // SAFETY: the File outlives this borrow of its descriptor.
                    unsafe { std::os::fd::BorrowedFd::borrow_raw(read_end.as_raw_fd()) },
                    nix::poll::PollFlags::POLLIN,
                )];
                // Hung up (or readable at EOF) once the holder closed its end.
                nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap_or(0) == 0
            })
            .count()
    }
}

struct Manager(Shared);

type ListedUnit = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

impl Manager {
    fn change(&self, verb: &str, name: &str, apply: impl FnOnce(&mut FakeUnit)) -> zbus::fdo::Result<()> {
        let mut state = self.0.lock().unwrap();
        state.calls.push(format!("{verb} {name}"));
        let unit = state
            .units
            .get_mut(name)
            .ok_or_else(|| zbus::fdo::Error::Failed(format!("Unit {name} not loaded.")))?;
        apply(unit);
        Ok(())
    }

    async fn job(
        &self,
        emitter: SignalEmitter<'_>,
        name: String,
        verb: &'static str,
        active: &'static str,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        self.change(verb, &name, |u| u.active_state = active.into())?;
        let job = OwnedObjectPath::try_from(format!("/org/freedesktop/systemd1/job/{}", rand_id())).unwrap();
        let (emitter, path) = (emitter.into_owned(), job.clone());
        // Like systemd, the job ends after the call returned.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = Manager::job_removed(&emitter, 1, path.as_ref(), &name, "done").await;
        });
        Ok(job)
    }
}

fn rand_id() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(100);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    #[zbus(property)]
    fn version(&self) -> String {
        "252 (freezeframe test double)".into()
    }

    fn list_units_by_patterns(&self, states: Vec<String>, patterns: Vec<String>) -> Vec<ListedUnit> {
        let mut state = self.0.lock().unwrap();
        state
            .calls
            .push(format!("ListUnitsByPatterns {}", patterns.join(",")));
        state
            .units
            .values()
            .filter(|u| states.is_empty() || states.contains(&u.active_state))
            .filter(|u| patterns.iter().any(|p| glob(p, &u.name)))
            .map(|u| {
                (
                    u.name.clone(),
                    String::new(),
                    "loaded".into(),
                    u.active_state.clone(),
                    "running".into(),
                    String::new(),
                    unit_path(&u.name),
                    0,
                    String::new(),
                    OwnedObjectPath::try_from("/").unwrap(),
                )
            })
            .collect()
    }

    fn load_unit(&self, name: String) -> zbus::fdo::Result<OwnedObjectPath> {
        if self.0.lock().unwrap().units.contains_key(&name) {
            Ok(unit_path(&name))
        } else {
            Err(zbus::fdo::Error::Failed(format!("Unit {name} not found.")))
        }
    }

    fn subscribe(&self) {}

    fn unsubscribe(&self) {}

    fn freeze_unit(&self, name: String) -> zbus::fdo::Result<()> {
        self.change("FreezeUnit", &name, |u| u.freezer_state = "frozen".into())
    }

    fn thaw_unit(&self, name: String) -> zbus::fdo::Result<()> {
        self.change("ThawUnit", &name, |u| u.freezer_state = "running".into())
    }

    async fn stop_unit(
        &self,
        name: String,
        _mode: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        self.job(emitter, name, "StopUnit", "inactive").await
    }

    async fn start_unit(
        &self,
        name: String,
        _mode: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        self.job(emitter, name, "StartUnit", "active").await
    }

    #[zbus(signal)]
    async fn job_removed(
        emitter: &SignalEmitter<'_>,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

struct UnitObject(Shared, String);

impl UnitObject {
    fn get(&self) -> FakeUnit {
        self.0.lock().unwrap().units[&self.1].clone()
    }
}

#[zbus::interface(name = "org.freedesktop.systemd1.Unit")]
impl UnitObject {
    #[zbus(property)]
    fn load_state(&self) -> String {
        "loaded".into()
    }
    #[zbus(property)]
    fn active_state(&self) -> String {
        self.get().active_state
    }
    #[zbus(property)]
    fn freezer_state(&self) -> String {
        self.get().freezer_state
    }
    #[zbus(property)]
    fn can_freeze(&self) -> bool {
        true
    }
}

struct ServiceObject(Shared, String);

#[zbus::interface(name = "org.freedesktop.systemd1.Service")]
impl ServiceObject {
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> u32 {
        self.0.lock().unwrap().units[&self.1].main_pid
    }
    #[zbus(property)]
    fn control_group(&self) -> String {
        format!("/system.slice/{}", self.1)
    }
}

struct Login(Shared);

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl Login {
    fn inhibit(
        &self,
        what: String,
        _who: String,
        _why: String,
        mode: String,
    ) -> zbus::fdo::Result<zbus::OwnedFd> {
        let (read_end, write_end) =
            nix::unistd::pipe().map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
        let mut state = self.0.lock().unwrap();
        state.calls.push(format!("Inhibit {what} {mode}"));
        state.inhibitors.push(std::fs::File::from(read_end));
        Ok(zbus::OwnedFd::from(write_end))
    }
}

/// A stand-in for ssh: checks that it is asked for `systemd-stdio-bridge`, records its
/// arguments, and bridges to the bus the host name stands for; unknown hosts fail like ssh.
pub fn fake_ssh(dir: &std::path::Path, hosts: &[(&str, &PrivateBus)]) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let mut cases = String::new();
    for (host, bus) in hosts {
        cases.push_str(&format!("    {host}) bus='{}' ;;\n", bus.address));
    }
    let script = dir.join("ssh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> {log}\nfor last; do :; done\n\
             [ \"$last\" = systemd-stdio-bridge ] || {{ echo \"ssh: unexpected command $last\" >&2; exit 255; }}\n\
             eval dest=\\${{$(($# - 1))}}\n\
             case \"$dest\" in\n{cases}    *) echo \"ssh: Could not resolve hostname $dest\" >&2; exit 255 ;;\nesac\n\
             exec systemd-stdio-bridge --bus-path=\"$bus\"\n",
            log = dir.join("ssh.log").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// The agent's processes serving `config`.
pub fn agents_serving(config: &std::path::Path) -> Vec<u32> {
    let needle = config.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let args: Vec<String> = c
                        .split(|b| *b == 0)
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect();
                    args.iter().any(|a| a == &needle) && args.iter().any(|a| a == "run")
                })
                .unwrap_or(false)
        })
        .collect()
}

/// A private bus like the system bus, with the packaged policy and the packaged activation file
/// pointed at this build and `config`: the first call to org.freezeframe.Agent1 starts the agent.
pub fn activated_bus(dir: &std::path::Path, config: &std::path::Path) -> PrivateBus {
    let services = dir.join("services");
    std::fs::create_dir_all(&services).unwrap();
    let packaged = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/dbus");
    let activation = std::fs::read_to_string(packaged.join("org.freezeframe.Agent1.service"))
        .unwrap()
        .replace(
            "Exec=/usr/bin/freezeframe-agent run",
            &format!(
                "Exec={} --config {} run",
                crate::agent_bin().display(),
                config.display()
            ),
        );
    std::fs::write(services.join("org.freezeframe.Agent1.service"), activation).unwrap();
    PrivateBus::system_like(
        &dir.join("bus"),
        &packaged.join("org.freezeframe.Agent1.conf"),
        Some(&services),
    )
    .expect("start a private bus")
}
