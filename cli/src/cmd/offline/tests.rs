//! An offline run's paths against a double of the API ([`Fake`]: one Droplet whose power and
//! snapshots follow the calls, and calls that fail as a test scripts), on tokio's paused clock,
//! which jumps over the run's pauses: what is taken, and whether the Droplet runs at the end.

use super::ports::{Api, Event, Image};
use super::*;
use freezeframe_digitalocean::{Networks, Volume};
use std::collections::HashMap;
use std::sync::Mutex;

const ID: u64 = 42;

/// How a scripted call fails.
#[derive(Clone, Copy)]
enum Fault {
    /// A refusal no later attempt mends (403).
    Refused,
    /// A server error, worth trying again (500).
    ServerError,
}

impl Fault {
    fn error(self) -> ApiError {
        match self {
            Fault::Refused => ApiError::Status {
                status: 403,
                id: "forbidden".into(),
                message: "refused".into(),
                request_id: None,
                what: "the call".into(),
            },
            Fault::ServerError => ApiError::Status {
                status: 500,
                id: "server_error".into(),
                message: "try again".into(),
                request_id: None,
                what: "the call".into(),
            },
        }
    }
}

#[derive(Default)]
struct World {
    /// `active` or `off`.
    status: String,
    tags: Vec<String>,
    /// The calls that change something, in order.
    calls: Vec<&'static str>,
    /// Calls that fail, each with how many more times (`u32::MAX`: always).
    faults: HashMap<&'static str, (Fault, u32)>,
    /// The guest does not power off when asked to shut down.
    ignores_shutdown: bool,
    snapshots: Vec<Image>,
}

/// The API of an account with one Droplet, [`ID`].
struct Fake(Mutex<World>);

impl Fake {
    fn new() -> Fake {
        Fake(Mutex::new(World {
            status: "active".into(),
            ..World::default()
        }))
    }

    fn failing(self, call: &'static str, fault: Fault, times: u32) -> Fake {
        self.0.lock().unwrap().faults.insert(call, (fault, times));
        self
    }

    fn ignoring_shutdown(self) -> Fake {
        self.0.lock().unwrap().ignores_shutdown = true;
        self
    }

    fn powered_off(self) -> Fake {
        self.0.lock().unwrap().status = "off".into();
        self
    }

    /// Records `call`, or fails it as scripted.
    fn call(&self, call: &'static str) -> Result<(), ApiError> {
        let mut world = self.0.lock().unwrap();
        world.calls.push(call);
        match world.faults.get_mut(call) {
            Some((fault, times)) if *times > 0 => {
                *times = times.saturating_sub(if *times == u32::MAX { 0 } else { 1 });
                Err(fault.error())
            }
            _ => Ok(()),
        }
    }

    fn calls(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().calls.clone()
    }

    fn count(&self, call: &str) -> usize {
        self.calls().iter().filter(|c| **c == call).count()
    }

    fn status(&self) -> String {
        self.0.lock().unwrap().status.clone()
    }

    fn tagged(&self) -> bool {
        self.0.lock().unwrap().tags.iter().any(|t| t == PENDING_TAG)
    }
}

impl Api for Fake {
    fn api_url(&self) -> String {
        "https://api.example".into()
    }
    async fn account(&self) -> Result<String, ApiError> {
        Ok("account-1".into())
    }
    async fn droplet(&self, id: u64) -> Result<Droplet, ApiError> {
        let world = self.0.lock().unwrap();
        Ok(Droplet {
            id,
            name: "db1".into(),
            locked: false,
            status: world.status.clone(),
            volume_ids: Vec::new(),
            networks: Networks::default(),
            tags: world.tags.clone(),
        })
    }
    async fn droplet_actions(&self, _: u64) -> Result<Vec<Event>, ApiError> {
        Ok(Vec::new())
    }
    async fn volume(&self, id: &str) -> Result<Volume, ApiError> {
        unreachable!("the Droplet has no volume: {id}")
    }
    async fn check_volume(&self, _: &str, _: &str) -> Result<(), VolumeLimit> {
        Ok(())
    }
    async fn tag_droplet(&self, tag: &str, _: u64) -> Result<(), ApiError> {
        self.call("tag")?;
        self.0.lock().unwrap().tags.push(tag.into());
        Ok(())
    }
    async fn untag_droplet(&self, tag: &str, _: u64) -> Result<(), ApiError> {
        self.call("untag")?;
        self.0.lock().unwrap().tags.retain(|t| t != tag);
        Ok(())
    }
    async fn droplet_power(&self, _: u64, action: PowerAction) -> Result<(), ApiError> {
        let (call, after) = match action {
            PowerAction::Shutdown => ("shutdown", "off"),
            PowerAction::PowerOff => ("power_off", "off"),
            PowerAction::PowerOn => ("power_on", "active"),
        };
        self.call(call)?;
        let mut world = self.0.lock().unwrap();
        if !(call == "shutdown" && world.ignores_shutdown) {
            world.status = after.into();
        }
        Ok(())
    }
    async fn snapshot_droplet(&self, _: u64, name: &str, _: Duration) -> Result<u64, ApiError> {
        self.call("snapshot")?;
        self.0.lock().unwrap().snapshots.push(Image {
            id: "7".into(),
            name: name.into(),
        });
        Ok(7)
    }
    async fn snapshot_volume(&self, id: &str, _: &str, _: Duration) -> Result<String, ApiError> {
        unreachable!("the Droplet has no volume: {id}")
    }
    async fn action(&self, _: u64) -> Result<String, ApiError> {
        Ok("completed".into())
    }
    async fn droplet_snapshots(&self, _: u64) -> Result<Vec<Image>, ApiError> {
        Ok(self.0.lock().unwrap().snapshots.clone())
    }
    async fn tag_snapshots(&self, _: &str, _: &[String], _: &[String]) -> Result<(), ApiError> {
        self.call("label")
    }
    async fn droplets(&self) -> Result<Vec<ListedDroplet>, ApiError> {
        Ok(Vec::new())
    }
    async fn droplets_with_tag(&self, _: &str) -> Result<Vec<ListedDroplet>, ApiError> {
        Ok(Vec::new())
    }
}

fn request(force_power_off: bool) -> OfflineRequest {
    OfflineRequest {
        name: Some("db1-offline".into()),
        shutdown_timeout: Duration::from_secs(60),
        force_power_off,
        boot_timeout: Duration::from_secs(120),
        power_on_deadline: Duration::from_secs(600),
        dry_run: false,
    }
}

/// Runs the offline snapshot of [`ID`] against `api`; its report and the records left.
async fn offline(api: &Fake, request: &OfflineRequest) -> (OfflineReport, Vec<PendingPowerOn>) {
    let dir = tempfile::tempdir().unwrap();
    let pending = Pending::in_dir(dir.path().to_path_buf());
    let report = snapshot(api, ID, None, request, &pending, &Stop::default()).await;
    (report, pending.all())
}

#[tokio::test(start_paused = true)]
async fn a_run_shuts_down_snapshots_powers_on_and_clears_its_records() {
    let api = Fake::new();
    let (report, left) = offline(&api, &request(false)).await;
    assert!(report.succeeded, "{:?}", report.error);
    assert_eq!(
        api.calls(),
        ["tag", "shutdown", "snapshot", "power_on", "untag", "label"]
    );
    assert_eq!(report.consistency, Some("offline"));
    assert!(report.running && api.status() == "active");
    assert!(left.is_empty() && !api.tagged());
}

#[tokio::test(start_paused = true)]
async fn a_refused_shutdown_takes_nothing_and_leaves_the_droplet_running() {
    let api = Fake::new().failing("shutdown", Fault::Refused, 1);
    let (report, left) = offline(&api, &request(true)).await;
    assert!(!report.succeeded);
    assert!(report
        .error
        .as_deref()
        .unwrap()
        .contains("shutdown request was refused"));
    // Not cut off either, though --force-power-off allows it: the guest was never asked.
    assert_eq!(
        api.count("power_off") + api.count("snapshot") + api.count("power_on"),
        0
    );
    assert!(report.running && api.status() == "active");
    assert!(left.is_empty() && !api.tagged());
}

#[tokio::test(start_paused = true)]
async fn a_refused_power_off_takes_nothing_and_leaves_the_droplet_running() {
    let api = Fake::new()
        .ignoring_shutdown()
        .failing("power_off", Fault::Refused, 1);
    let (report, left) = offline(&api, &request(true)).await;
    assert!(!report.succeeded);
    assert!(report
        .error
        .as_deref()
        .unwrap()
        .contains("power_off request was refused"));
    assert_eq!(api.count("snapshot"), 0);
    assert!(report.running && api.status() == "active");
    assert!(left.is_empty() && !api.tagged());
}

#[tokio::test(start_paused = true)]
async fn a_guest_that_does_not_stop_in_time_is_not_cut_off_without_leave() {
    let api = Fake::new().ignoring_shutdown();
    let (report, _) = offline(&api, &request(false)).await;
    assert!(report.error.as_deref().unwrap().contains("--shutdown-timeout"));
    assert_eq!(api.count("power_off") + api.count("snapshot"), 0);
    assert!(report.running && !report.hard_power_off);
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_refused_after_the_shutdown_powers_the_droplet_on_again() {
    let api = Fake::new().failing("snapshot", Fault::Refused, 1);
    let (report, left) = offline(&api, &request(false)).await;
    assert!(!report.succeeded);
    assert!(report
        .error
        .as_deref()
        .unwrap()
        .contains("snapshot request was not accepted"));
    assert_eq!(api.calls(), ["tag", "shutdown", "snapshot", "power_on", "untag"]);
    assert!(report.running && api.status() == "active");
    assert!(report.consistency.is_none());
    assert!(left.is_empty() && !api.tagged());
}

#[tokio::test(start_paused = true)]
async fn a_pending_tag_that_cannot_be_set_powers_nothing_off() {
    let api = Fake::new().failing("tag", Fault::Refused, 1);
    let (report, left) = offline(&api, &request(true)).await;
    assert!(report
        .error
        .as_deref()
        .unwrap()
        .contains("nothing was powered off"));
    assert_eq!(api.calls(), ["tag"]);
    assert!(report.running && left.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failing_power_on_is_tried_again_until_it_runs() {
    let api = Fake::new().failing("power_on", Fault::ServerError, 3);
    let (report, left) = offline(&api, &request(false)).await;
    assert!(report.succeeded, "{:?}", report.error);
    assert_eq!(api.count("power_on"), 4);
    assert!(report.running && left.is_empty() && !api.tagged());
}

#[tokio::test(start_paused = true)]
async fn power_on_is_tried_again_until_the_deadline_then_left_to_recover() {
    let api = Fake::new().failing("power_on", Fault::ServerError, u32::MAX);
    let request = request(false);
    let started = Instant::now();
    let (report, left) = offline(&api, &request).await;
    // Tried all along the deadline, at no more than one try per POLL_RETRY once backed off.
    assert!(started.elapsed() >= request.power_on_deadline);
    let tries = api.count("power_on");
    let most = (request.power_on_deadline.as_secs() / POLL_RETRY.as_secs()) as usize + 6;
    assert!((10..=most).contains(&tries), "{tries} tries");
    assert!(!report.succeeded && !report.running);
    assert!(report.error.as_deref().unwrap().contains("left OFF"));
    // Recorded both ways for `recover`.
    assert_eq!(left.len(), 1);
    assert!(api.tagged());
}

#[tokio::test(start_paused = true)]
async fn a_refused_power_on_is_not_tried_again() {
    let api = Fake::new().failing("power_on", Fault::Refused, u32::MAX);
    let (report, left) = offline(&api, &request(false)).await;
    assert_eq!(api.count("power_on"), 1);
    assert!(report.error.as_deref().unwrap().contains("left OFF"));
    assert_eq!(left.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn recover_powers_on_what_a_killed_run_left_off_and_clears_its_record() {
    let api = Fake::new().powered_off();
    let dir = tempfile::tempdir().unwrap();
    let pending = Pending::in_dir(dir.path().to_path_buf());
    pending
        .record(&PendingPowerOn {
            droplet_id: ID,
            droplet_name: "db1".into(),
            since: "2026-01-01T00:00:00Z".into(),
            snapshot_name: None,
            api_url: None,
            account: None,
        })
        .unwrap();
    let reports = recover(&api, &pending).await.unwrap();
    assert_eq!(reports.len(), 1);
    assert!(reports[0].succeeded && reports[0].running);
    assert_eq!(api.calls(), ["power_on", "untag"]);
    assert!(pending.all().is_empty());
}
