//! `freezeframe-do-sim`: a stateful simulator of the part of the DigitalOcean API v2 that
//! freezeframe uses, on loopback. Responses follow DigitalOcean's OpenAPI spec (the contract
//! tests put Prism's validating proxy in front of it).
//!
//! When it registers a snapshot action it copies the block device that stands for the
//! Droplet's disk into `image_dir/<snapshot id>.img`, as a hypervisor would take its
//! point-in-time copy; the action completes after `action_delay`. Faults are injected per
//! method and path prefix, from flags or at run time through `PUT /_sim/faults`, and per power
//! action (`PowerFault`: a `power_on` refused, rate-limited, unanswered, or taken unanswered).

mod faults;
mod power;
mod rate;
mod restore;

pub use axum::http::Method;
pub use faults::{Fault, FaultKind};
pub use power::{Guest, PowerFault, PowerFaultKind, PowerModel};
pub use rate::{Admission, RateLimit};
pub use restore::RestoredMachine;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A Droplet as the spec's own example shows one; id, name and state are filled in per request.
const DROPLET_TEMPLATE: &str = include_str!("droplet-template.json");
/// A volume, likewise.
const VOLUME_TEMPLATE: &str = include_str!("volume-template.json");

/// A block storage volume attached to the Droplet.
#[derive(Debug, Clone)]
pub struct SimVolume {
    pub id: String,
    pub name: String,
    /// The block device (or file) that stands for the volume, copied at each volume snapshot.
    pub device: PathBuf,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The bearer token the API accepts.
    pub token: String,
    pub droplet_id: u64,
    pub droplet_name: String,
    /// The block device (or file) that stands for the Droplet's disk.
    pub disk: Option<PathBuf>,
    /// Where snapshot images are written.
    pub image_dir: PathBuf,
    /// How long a snapshot action stays `in-progress` after it registered.
    pub action_delay: Duration,
    /// When the disk is read for a Droplet snapshot.
    pub capture: Capture,
    /// Added to every API call.
    pub latency: Duration,
    pub faults: Vec<Fault>,
    pub volumes: Vec<SimVolume>,
    /// More Droplets of the account, listed by `GET /v2/droplets` (for `--tag`), besides this one.
    pub fleet: Vec<FleetDroplet>,
    /// The token's rate limits, shared by the simulators of one account; `None` lets every
    /// request through (the headers then count down from 5,000).
    pub rate_limit: Option<Arc<RateLimit>>,
}

/// When the simulated hypervisor reads a Droplet's disk for a snapshot. DigitalOcean does not
/// document it; the snapshot-point probe tells them apart on the real platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// As the action registers, before the POST is answered (while the agent still freezes).
    Registration,
    /// When the action completes, `action_delay` later (after the agent thawed).
    Completion,
    /// Front to back over the action's duration, as a streaming copy would: the first of
    /// [`PART_WAY_PIECES`] pieces as the action registers, the others spread over `action_delay`
    /// (so the beginning of the disk is read inside the window and the rest after the thaw).
    PartWay,
}

/// How many pieces a part-way capture reads the disk in.
pub const PART_WAY_PIECES: u32 = 16;

/// A Droplet that is only listed: its id, name, tags and public IPv4 address.
#[derive(Debug, Clone)]
pub struct FleetDroplet {
    pub id: u64,
    pub name: String,
    pub tags: Vec<String>,
    pub public_ipv4: String,
}

/// What tests can inspect.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Snapshot actions created (POST /v2/droplets/{id}/actions with type snapshot).
    pub snapshot_posts: u32,
    /// Volume snapshots created.
    pub volume_snapshot_posts: u32,
    /// API calls answered, by `METHOD path`.
    pub calls: Vec<String>,
    /// Calls refused by the rate limit (429), by `METHOD path`.
    pub rate_limited: Vec<String>,
    /// Power actions accepted (`shutdown`, `power_off`, `power_on`), in order.
    pub power_actions: Vec<String>,
}

struct SimAction {
    id: u64,
    kind: String,
    started: SystemTime,
    registered: Instant,
    completed_at: Option<SystemTime>,
    snapshot_name: String,
    image: Option<PathBuf>,
    /// The disk was read (at once, or at completion: see [`Capture`]); for a power action,
    /// the machine behind it did it (see [`Guest`]). The action completes no sooner.
    captured: Arc<std::sync::atomic::AtomicBool>,
    /// How long it runs once registered.
    takes: Duration,
    /// The power state it leaves when it completes (power actions).
    leaves: Option<power::Power>,
    /// It ends `errored`, making nothing ([`Sim::fail_snapshots`]).
    errors: bool,
}

struct SimSnapshot {
    id: u64,
    name: String,
    created: SystemTime,
    size_bytes: u64,
    /// The captured disk, which a Droplet created from this snapshot gets a copy of.
    image: Option<PathBuf>,
}

struct SimVolumeSnapshot {
    id: String,
    name: String,
    volume_id: String,
    created: SystemTime,
    size_bytes: u64,
    image: PathBuf,
}

struct SimState {
    config: SimConfig,
    actions: Vec<SimAction>,
    /// Volume snapshot images by `<snapshot name>@<volume name>`.
    volume_images: HashMap<String, PathBuf>,
    snapshots: Vec<SimSnapshot>,
    volume_snapshots: Vec<SimVolumeSnapshot>,
    /// Droplets and volumes created from snapshots (restore drills).
    restored: Vec<restore::RestoredDroplet>,
    restored_volumes: Vec<restore::RestoredVolume>,
    /// Tags that exist, and the tags on each image by its id.
    tags: BTreeSet<String>,
    image_tags: HashMap<String, Vec<String>>,
    /// The tags on this Droplet.
    droplet_tags: Vec<String>,
    next_id: u64,
    counters: Counters,
    remaining: u64,
    power: power::Power,
    power_model: PowerModel,
    /// Faults that power actions meet (`--power-fault`).
    power_faults: Vec<PowerFault>,
    /// Faults that join `config.faults` once a Droplet snapshot completes.
    after_snapshot: Vec<Fault>,
    /// How many of the next Droplet snapshot actions end `errored`.
    failing_snapshots: u32,
    guest: Option<Arc<dyn Guest>>,
}

impl SimState {
    /// Moves actions whose delay has passed to `completed`, creating their snapshot.
    fn refresh(&mut self) {
        let mut made = Vec::new();
        for a in self.actions.iter_mut().filter(|a| a.completed_at.is_none()) {
            if a.registered.elapsed() >= a.takes && a.captured.load(Ordering::SeqCst) {
                a.completed_at = Some(SystemTime::now());
                if let Some(state) = a.leaves {
                    self.power = state;
                }
                if a.kind == "snapshot" && !a.errors {
                    let size = a
                        .image
                        .as_ref()
                        .and_then(|p| std::fs::metadata(p).ok())
                        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
                        .unwrap_or(0);
                    made.push((a.snapshot_name.clone(), size, a.image.clone()));
                }
            }
        }
        if !made.is_empty() {
            let armed = std::mem::take(&mut self.after_snapshot);
            self.config.faults.extend(armed);
        }
        for (name, size_bytes, image) in made {
            self.next_id += 1;
            self.snapshots.push(SimSnapshot {
                id: self.next_id,
                name,
                created: SystemTime::now(),
                size_bytes,
                image,
            });
        }
    }

    fn locked(&self) -> bool {
        self.actions.iter().any(|a| a.completed_at.is_none())
    }
}

/// A running simulator.
#[derive(Clone)]
pub struct Sim {
    state: Arc<Mutex<SimState>>,
    request_ids: Arc<std::sync::atomic::AtomicU64>,
    /// Set once a hanging fault should stop hanging (shutdown).
    released: Arc<AtomicBool>,
    /// Calls an `unwaited` fault holds that are not handled yet.
    unwaited: Arc<std::sync::atomic::AtomicUsize>,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Sim {
    pub fn new(config: SimConfig) -> Sim {
        Sim {
            state: Arc::new(Mutex::new(SimState {
                config,
                actions: Vec::new(),
                volume_images: HashMap::new(),
                snapshots: Vec::new(),
                volume_snapshots: Vec::new(),
                restored: Vec::new(),
                restored_volumes: Vec::new(),
                tags: BTreeSet::new(),
                image_tags: HashMap::new(),
                droplet_tags: Vec::new(),
                next_id: 7_000_000,
                counters: Counters::default(),
                remaining: 5000,
                power: power::Power::Active,
                power_model: PowerModel::default(),
                power_faults: Vec::new(),
                after_snapshot: Vec::new(),
                failing_snapshots: 0,
                guest: None,
            })),
            request_ids: Arc::new(std::sync::atomic::AtomicU64::new(1)),
            released: Arc::new(AtomicBool::new(false)),
            unwaited: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Without a rate limit: every call let through, the hourly count going down as before.
    fn unlimited(&self) -> Admission {
        let mut st = self.lock();
        st.remaining = st.remaining.saturating_sub(1);
        Admission {
            retry_after: None,
            remaining: st.remaining,
            reset: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                + 60,
        }
    }

    /// Gives volume `volume_id` `count` snapshots taken `age` ago (each a copy of nothing), as
    /// an account that has been snapshotting it would have.
    pub fn seed_volume_snapshots(&self, volume_id: &str, count: usize, age: Duration) {
        for _ in 0..count {
            self.seed_volume_snapshot(volume_id, None, age);
        }
    }

    /// Gives volume `volume_id` one snapshot taken `age` ago, named `name` (or `earlier-N`).
    pub fn seed_volume_snapshot(&self, volume_id: &str, name: Option<&str>, age: Duration) {
        let mut st = self.lock();
        st.next_id += 1;
        let snapshot = SimVolumeSnapshot {
            id: format!("8fa70202-0000-4000-8000-{:012}", st.next_id),
            name: name.map_or_else(|| format!("earlier-{}", st.next_id), String::from),
            volume_id: volume_id.to_string(),
            created: SystemTime::now() - age,
            size_bytes: 0,
            image: PathBuf::from("/dev/null"),
        };
        st.volume_snapshots.push(snapshot);
    }

    /// Names of the volume snapshots that exist now, oldest first.
    pub fn volume_snapshot_names(&self) -> Vec<String> {
        let st = self.lock();
        let mut snapshots: Vec<&SimVolumeSnapshot> = st.volume_snapshots.iter().collect();
        snapshots.sort_by_key(|s| s.created);
        snapshots.iter().map(|s| s.name.clone()).collect()
    }

    /// How the guest and the hypervisor answer power actions from now on.
    pub fn set_power(&self, model: PowerModel) {
        self.lock().power_model = model;
    }

    /// The faults that power actions meet from now on.
    pub fn set_power_faults(&self, faults: Vec<PowerFault>) {
        self.lock().power_faults = faults;
    }

    /// Faults that start to apply once the next Droplet snapshot completes (what an offline run
    /// meets as it powers the Droplet on).
    pub fn faults_after_snapshot(&self, faults: Vec<Fault>) {
        self.lock().after_snapshot = faults;
    }

    /// How long snapshot actions run once registered, from now on.
    pub fn set_action_delay(&self, delay: Duration) {
        self.lock().config.action_delay = delay;
    }

    /// The next `count` Droplet snapshot actions are taken, run their time, and end `errored`
    /// on the platform's side, making no snapshot (what an offline run meets after the
    /// shutdown).
    pub fn fail_snapshots(&self, count: u32) {
        self.lock().failing_snapshots = count;
    }

    /// Lists `droplet` too, from now on (`GET /v2/droplets`).
    pub fn list_also(&self, droplet: FleetDroplet) {
        self.lock().config.fleet.push(droplet);
    }

    /// Power actions reach `guest` from now on (the model's timings no longer apply).
    pub fn set_guest(&self, guest: Arc<dyn Guest>) {
        self.lock().guest = Some(guest);
    }

    /// The tags on the Droplet.
    pub fn droplet_tags(&self) -> Vec<String> {
        self.lock().droplet_tags.clone()
    }

    /// The Droplet's `status`: `active` or `off`.
    pub fn status(&self) -> &'static str {
        let mut st = self.lock();
        st.refresh();
        st.power.status()
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }

    pub fn set_faults(&self, faults: Vec<Fault>) {
        self.lock().config.faults = faults;
    }

    /// Calls an `unwaited` fault holds that are not handled yet: none once every request the
    /// simulator received has had its effect.
    pub fn unhandled(&self) -> usize {
        self.unwaited.load(Ordering::SeqCst)
    }

    /// Gives the account a Droplet snapshot named `name`, `size_bytes` of used disk, whose
    /// image (what a Droplet created from it gets a copy of) is `image`; its id.
    pub fn seed_snapshot(&self, name: &str, size_bytes: u64, image: PathBuf) -> u64 {
        let mut st = self.lock();
        st.next_id += 1;
        let id = st.next_id;
        st.snapshots.push(SimSnapshot {
            id,
            name: name.to_string(),
            created: SystemTime::now(),
            size_bytes,
            image: Some(image),
        });
        id
    }

    /// Ends every request that a `hang` fault holds.
    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
    }

    /// Names of the completed snapshots that exist now, oldest first.
    pub fn snapshot_names(&self) -> Vec<String> {
        let mut st = self.lock();
        st.refresh();
        st.snapshots.iter().map(|s| s.name.clone()).collect()
    }

    /// Paths of the images made so far: Droplet snapshots by name, volume snapshots by
    /// `<name>@<volume name>`.
    pub fn images(&self) -> HashMap<String, PathBuf> {
        let st = self.lock();
        let mut images: HashMap<String, PathBuf> = st
            .actions
            .iter()
            .filter_map(|a| a.image.clone().map(|p| (a.snapshot_name.clone(), p)))
            .collect();
        images.extend(st.volume_images.clone());
        images
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/metadata/v1.json", get(metadata))
            .route("/v2/account", get(account))
            .route(
                "/v2/droplets",
                get(droplets)
                    .post(restore::post_droplets)
                    .delete(restore::delete_droplets_by_tag),
            )
            .route("/v2/droplets/{id}", get(droplet).delete(restore::delete_droplet))
            .route(
                "/v2/droplets/{id}/actions",
                get(droplet_actions).post(post_droplet_action),
            )
            .route("/v2/droplets/{id}/snapshots", get(droplet_snapshots))
            .route("/v2/actions/{id}", get(action))
            .route("/v2/snapshots", get(snapshots))
            .route("/v2/sizes", get(restore::sizes))
            .route("/v2/images", get(restore::images))
            .route("/v2/volumes", get(restore::volumes).post(restore::post_volumes))
            .route("/v2/volumes/{id}", get(volume).delete(restore::delete_volume))
            .route(
                "/v2/volumes/{id}/actions",
                axum::routing::post(restore::post_volume_action),
            )
            .route("/v2/tags", axum::routing::post(restore::post_tags))
            .route(
                "/v2/tags/{tag}/resources",
                axum::routing::post(restore::post_tag_resources).delete(restore::delete_tag_resources),
            )
            .route(
                "/v2/volumes/{id}/snapshots",
                get(volume_snapshots).post(post_volume_snapshot),
            )
            .route(
                "/v2/volumes/snapshots/{id}",
                axum::routing::delete(delete_volume_snapshot),
            )
            .route(
                "/v2/snapshots/{id}",
                get(restore::snapshot).delete(delete_snapshot),
            )
            .route("/_sim/faults", put(put_faults))
            .layer(axum::middleware::from_fn_with_state(self.clone(), api_layer))
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

fn error(status: StatusCode, id: &str, message: &str, request_id: &str) -> Response {
    (
        status,
        Json(json!({"id": id, "message": message, "request_id": request_id})),
    )
        .into_response()
}

/// Request ids, latency, faults, the bearer token and rate-limit headers, around every call.
async fn api_layer(State(sim): State<Sim>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let request_id = format!("sim-{:08}", sim.request_ids.fetch_add(1, Ordering::SeqCst));
    if path.starts_with("/_sim/") {
        return next.run(request).await;
    }
    let (latency, fault, token, limit) = {
        let mut st = sim.lock();
        st.counters.calls.push(format!("{method} {path}"));
        let fault = st
            .config
            .faults
            .iter_mut()
            .find(|f| f.matches(&method, &path))
            .map(|f| f.take());
        (
            st.config.latency,
            fault,
            st.config.token.clone(),
            st.config.rate_limit.clone(),
        )
    };
    // The metadata service is not the API: no token, no rate limit.
    let admission = match &limit {
        Some(limit) if !path.starts_with("/metadata/") => limit.admit(),
        _ => sim.unlimited(),
    };
    tokio::time::sleep(latency).await;
    let call = Call {
        token,
        path,
        request_id,
    };
    let mut response = match (admission.retry_after, fault) {
        (Some(retry_after), _) => {
            sim.lock()
                .counters
                .rate_limited
                .push(format!("{method} {}", call.path));
            rate_limited(retry_after, &call.request_id)
        }
        (None, Some(fault)) => faulty_answer(fault, &sim, request, next, &call).await,
        (None, None) => call.answer(request, next).await,
    };
    let h = response.headers_mut();
    let hourly = limit.as_ref().map_or(5000, |l| l.per_hour as u64);
    h.insert("ratelimit-limit", HeaderValue::from(hourly));
    h.insert("ratelimit-remaining", HeaderValue::from(admission.remaining));
    h.insert("ratelimit-reset", HeaderValue::from(admission.reset));
    if let Ok(v) = HeaderValue::from_str(&call.request_id) {
        h.insert("x-request-id", v);
    }
    response
}

/// The API's answer past its rate limit.
fn rate_limited(retry_after: u64, request_id: &str) -> Response {
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        "API rate limit exceeded.",
        request_id,
    );
    r.headers_mut()
        .insert("retry-after", HeaderValue::from(retry_after));
    r
}

/// One API call as the layer sees it.
struct Call {
    token: String,
    path: String,
    request_id: String,
}

impl Call {
    /// The handler's answer, or 401 without the right token.
    async fn answer(&self, request: Request, next: Next) -> Response {
        match authorized(&request, &self.token, &self.path, &self.request_id) {
            Some(denied) => denied,
            None => next.run(request).await,
        }
    }
}

/// The answer an injected fault gives instead of (or on top of) the handler's.
async fn faulty_answer(fault: FaultKind, sim: &Sim, request: Request, next: Next, call: &Call) -> Response {
    let request_id = &call.request_id;
    match fault {
        FaultKind::Reset => {
            // A body that fails: hyper drops the connection in the middle of the answer.
            let broken = futures_util::stream::once(async {
                Err::<axum::body::Bytes, std::io::Error>(std::io::Error::other("simulated reset"))
            });
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .header("content-length", "512")
                .body(axum::body::Body::from_stream(broken))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        FaultKind::NoActionId => {
            let status = call.answer(request, next).await.status();
            (
                status,
                Json(json!({"action": {"status": "in-progress", "type": "snapshot"}})),
            )
                .into_response()
        }
        FaultKind::Garbage => (
            StatusCode::OK,
            [("content-type", "application/json")],
            "<html>502 Bad Gateway</html>",
        )
            .into_response(),
        FaultKind::Hang => hung(sim, request_id).await,
        FaultKind::Latency(extra) => {
            tokio::time::sleep(extra).await;
            call.answer(request, next).await
        }
        FaultKind::SlowAnswer(delay) => {
            let answer = call.answer(request, next).await;
            tokio::time::sleep(delay).await;
            answer
        }
        FaultKind::Unwaited(delay) => {
            // A task of its own: the client going away does not cancel it.
            let call = Call {
                token: call.token.clone(),
                path: call.path.clone(),
                request_id: call.request_id.clone(),
            };
            let pending = sim.unwaited.clone();
            pending.fetch_add(1, Ordering::SeqCst);
            let handled = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let answer = call.answer(request, next).await;
                pending.fetch_sub(1, Ordering::SeqCst);
                answer
            });
            handled
                .await
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        FaultKind::Status(code) => status_answer(code, request_id),
        FaultKind::RateLimited { retry_after } => rate_limited(retry_after, request_id),
    }
}

/// No answer until the simulator stops.
async fn hung(sim: &Sim, request_id: &str) -> Response {
    while !sim.released.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        "simulator shutting down",
        request_id,
    )
}

/// An error status as the API words it.
fn status_answer(code: u16, request_id: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (id, message) = match code {
        401 => ("unauthorized", "Unable to authenticate you"),
        403 => ("forbidden", "You do not have access for the attempted action."),
        404 => ("not_found", "The resource you were accessing could not be found."),
        422 => ("unprocessable_entity", "Droplet already has a pending event."),
        _ => ("server_error", "Unexpected server-side error"),
    };
    error(status, id, message, request_id)
}

/// The answer a power action `kind` on Droplet `id` gets from an injected [`PowerFault`], if
/// one applies; a `lost` one is taken first (when the Droplet takes actions now).
async fn power_fault(sim: &Sim, id: u64, kind: &str) -> Option<Response> {
    let fault = {
        let mut st = sim.lock();
        if id != st.config.droplet_id {
            return None;
        }
        power::take_fault(&mut st.power_faults, kind)?
    };
    Some(match fault {
        PowerFaultKind::Status(code) => status_answer(code, "sim"),
        PowerFaultKind::RateLimited { retry_after } => rate_limited(retry_after, "sim"),
        PowerFaultKind::Hang => hung(sim, "sim").await,
        PowerFaultKind::Lost => {
            {
                let mut st = sim.lock();
                st.refresh();
                if !st.locked() {
                    let _ = power_action(sim, &mut st, id, kind);
                }
            }
            hung(sim, "sim").await
        }
    })
}

/// `None` if the call may go on; the 401 answer otherwise. The metadata service needs no token.
fn authorized(request: &Request, token: &str, path: &str, request_id: &str) -> Option<Response> {
    if path.starts_with("/metadata/") {
        return None;
    }
    let given = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(token) {
        None
    } else {
        Some(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unable to authenticate you",
            request_id,
        ))
    }
}

fn not_found(what: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("The resource you were accessing could not be found ({what})."),
        "sim",
    )
}

async fn account() -> Response {
    Json(json!({"account": {
        "droplet_limit": 25, "floating_ip_limit": 5, "email": "sammy@example.com", "name": "Sammy",
        "uuid": "b6fr89dbf6d9156cace5f3c78dc9851d957381ef", "email_verified": true,
        "status": "active", "status_message": " ",
    }}))
    .into_response()
}

async fn metadata(State(sim): State<Sim>) -> Response {
    let st = sim.lock();
    Json(json!({"droplet_id": st.config.droplet_id, "hostname": st.config.droplet_name})).into_response()
}

fn template() -> Value {
    serde_json::from_str(DROPLET_TEMPLATE).expect("the template is JSON")
}

fn droplet_json(st: &SimState) -> Value {
    let mut d = template();
    d["id"] = json!(st.config.droplet_id);
    d["name"] = json!(st.config.droplet_name);
    d["locked"] = json!(st.locked());
    d["status"] = json!(st.power.status());
    d["volume_ids"] = json!(st.config.volumes.iter().map(|v| v.id.clone()).collect::<Vec<_>>());
    d["snapshot_ids"] = json!(st.snapshots.iter().map(|s| s.id).collect::<Vec<_>>());
    d["tags"] = json!(st.droplet_tags);
    d
}

/// `GET /v2/droplets[?tag_name=T]`: this Droplet and the fleet, by pages.
async fn droplets(State(sim): State<Sim>, Query(query): Query<HashMap<String, String>>) -> Response {
    let mut st = sim.lock();
    st.refresh();
    let mut all = vec![droplet_json(&st)];
    for f in &st.config.fleet {
        let mut d = template();
        d["id"] = json!(f.id);
        d["name"] = json!(f.name);
        d["tags"] = json!(f.tags);
        d["volume_ids"] = json!([]);
        d["networks"]["v4"] = json!([
            {"ip_address": "10.10.0.2", "netmask": "255.255.0.0", "gateway": "10.10.0.1", "type": "private"},
            {"ip_address": f.public_ipv4, "netmask": "255.255.255.0", "gateway": "192.0.2.1", "type": "public"}
        ]);
        all.push(d);
    }
    all.extend(st.restored.iter().map(|d| restore::droplet_json(&st, d)));
    if let Some(tag) = query.get("tag_name") {
        all.retain(|d| {
            d["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == tag.as_str()))
        });
    }
    let paging = Paging {
        page: query.get("page").and_then(|p| p.parse().ok()),
        per_page: query.get("per_page").and_then(|p| p.parse().ok()),
    };
    Json(page("droplets", all, &paging)).into_response()
}

async fn droplet(State(sim): State<Sim>, Path(id): Path<u64>) -> Response {
    let mut st = sim.lock();
    st.refresh();
    if let Some(restored) = st.restored.iter().find(|d| d.id == id) {
        return Json(json!({"droplet": restore::droplet_json(&st, restored)})).into_response();
    }
    if id != st.config.droplet_id {
        return not_found("droplet");
    }
    Json(json!({"droplet": droplet_json(&st)})).into_response()
}

fn action_json(a: &SimAction, droplet_id: u64) -> Value {
    json!({
        "id": a.id,
        "status": match (a.completed_at, a.errors) {
            (None, _) => "in-progress",
            (Some(_), false) => "completed",
            (Some(_), true) => "errored",
        },
        "type": a.kind,
        "started_at": rfc3339(a.started),
        "completed_at": a.completed_at.map(rfc3339),
        "resource_id": droplet_id,
        "resource_type": "droplet",
        "region": template()["region"].clone(),
        "region_slug": "nyc3",
    })
}

#[derive(Deserialize)]
struct Paging {
    page: Option<usize>,
    per_page: Option<usize>,
}

/// One page of `items` with the spec's `links` and `meta`.
fn page(key: &str, items: Vec<Value>, paging: &Paging) -> Value {
    let per_page = paging.per_page.unwrap_or(20).clamp(1, 200);
    let page = paging.page.unwrap_or(1).max(1);
    let total = items.len();
    let chunk: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let mut links = json!({});
    if page * per_page < total {
        links = json!({"pages": {"next": format!("?page={}&per_page={per_page}", page + 1),
                                 "last": format!("?page={}&per_page={per_page}", total.div_ceil(per_page))}});
    }
    json!({key: chunk, "links": links, "meta": {"total": total}})
}

async fn droplet_actions(
    State(sim): State<Sim>,
    Path(id): Path<u64>,
    Query(paging): Query<Paging>,
) -> Response {
    let mut st = sim.lock();
    st.refresh();
    if id != st.config.droplet_id {
        return not_found("droplet");
    }
    // Newest first, as the API lists them.
    let items = st.actions.iter().rev().map(|a| action_json(a, id)).collect();
    Json(page("actions", items, &paging)).into_response()
}

/// A request body as `T`, or the API's 422 answer.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable_entity",
            &format!("invalid JSON body: {e}"),
            "sim",
        ))
    })
}

#[derive(Deserialize)]
struct ActionBody {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
}

async fn post_droplet_action(
    State(sim): State<Sim>,
    Path(id): Path<u64>,
    body: axum::body::Bytes,
) -> Response {
    let body: ActionBody = match json_body(&body) {
        Ok(body) => body,
        Err(answer) => return *answer,
    };
    if body.kind != "snapshot" {
        if let Some(answer) = power_fault(&sim, id, &body.kind).await {
            return answer;
        }
    }
    let (disk, image, action_id, capture) = {
        let mut st = sim.lock();
        st.refresh();
        if id != st.config.droplet_id {
            return not_found("droplet");
        }
        if st.locked() {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable_entity",
                "Droplet already has a pending event.",
                "sim",
            );
        }
        if body.kind != "snapshot" {
            return power_action(&sim, &mut st, id, &body.kind);
        }
        st.counters.snapshot_posts += 1;
        st.next_id += 1;
        let action_id = st.next_id;
        let image = st.config.image_dir.join(format!("{action_id}.img"));
        let capture = (st.config.capture, st.config.action_delay);
        (st.config.disk.clone(), image, action_id, capture)
    };
    let captured = Arc::new(std::sync::atomic::AtomicBool::new(disk.is_none()));
    // The hypervisor's point-in-time copy: before the action is reported registered, or as it
    // completes (the action stays in progress until the copy is done).
    match (disk, capture) {
        (Some(disk), (Capture::PartWay, delay)) => {
            let Some(copy) = PartWayCopy::start(disk, image.clone()).await else {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "the disk copy failed",
                    "sim",
                );
            };
            let captured = captured.clone();
            tokio::spawn(async move {
                copy.finish(delay).await;
                captured.store(true, Ordering::SeqCst);
            });
        }
        (Some(disk), (Capture::Completion, delay)) => {
            let (image, captured) = (image.clone(), captured.clone());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                copy_disk(disk, image).await;
                captured.store(true, Ordering::SeqCst);
            });
        }
        (Some(disk), (Capture::Registration, _)) => {
            if !copy_disk(disk, image.clone()).await {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "the disk copy failed",
                    "sim",
                );
            }
            captured.store(true, Ordering::SeqCst);
        }
        (None, _) => {}
    }
    let mut st = sim.lock();
    let action = SimAction {
        id: action_id,
        kind: "snapshot".into(),
        started: SystemTime::now(),
        registered: Instant::now(),
        completed_at: None,
        snapshot_name: body.name.unwrap_or_else(|| format!("snapshot-{action_id}")),
        image: Some(image),
        captured,
        takes: st.config.action_delay,
        leaves: None,
        errors: st.failing_snapshots > 0,
    };
    st.failing_snapshots = st.failing_snapshots.saturating_sub(1);
    let json = action_json(&action, id);
    st.actions.push(action);
    (StatusCode::CREATED, Json(json!({"action": json}))).into_response()
}

/// `shutdown`, `power_off` or `power_on` on Droplet `id`, not locked.
fn power_action(sim: &Sim, st: &mut SimState, id: u64, kind: &str) -> Response {
    let refused = |message: &str| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable_entity",
            message,
            "sim",
        )
    };
    let planned = match power::plan(&st.power_model, st.power, kind) {
        None => {
            return refused("the simulator takes snapshots and power actions (shutdown, power_off, power_on)")
        }
        Some(Err(message)) => return refused(message),
        Some(Ok(planned)) => planned,
    };
    st.counters.power_actions.push(kind.to_string());
    st.next_id += 1;
    let done = Arc::new(AtomicBool::new(st.guest.is_none()));
    let action = SimAction {
        id: st.next_id,
        kind: kind.to_string(),
        started: SystemTime::now(),
        registered: Instant::now(),
        completed_at: None,
        snapshot_name: String::new(),
        image: None,
        captured: done.clone(),
        takes: if st.guest.is_some() {
            Duration::ZERO
        } else {
            planned.takes
        },
        leaves: planned.leaves,
        errors: false,
    };
    if let Some(guest) = st.guest.clone() {
        reach_guest(sim.clone(), guest, action.id, kind.to_string(), done);
    }
    let json = action_json(&action, id);
    st.actions.push(action);
    st.refresh();
    (StatusCode::CREATED, Json(json!({"action": json}))).into_response()
}

/// Takes power action `action` (`kind`) on the real machine, apart from the request: the action
/// stays in progress until the machine did it, and a shutdown it ignored leaves it on.
fn reach_guest(sim: Sim, guest: Arc<dyn Guest>, action: u64, kind: String, done: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let stayed_on = match kind.as_str() {
            "shutdown" => !guest.shutdown(),
            "power_off" => {
                guest.power_off();
                false
            }
            _ => {
                guest.power_on();
                false
            }
        };
        if stayed_on {
            if let Some(a) = sim.lock().actions.iter_mut().find(|a| a.id == action) {
                a.leaves = None;
            }
        }
        done.store(true, Ordering::SeqCst);
    });
}

/// A disk read front to back in pieces over an action's duration (`Capture::PartWay`).
struct PartWayCopy {
    disk: PathBuf,
    image: Arc<std::fs::File>,
    size: u64,
}

impl PartWayCopy {
    /// Creates the image and reads the first piece; `None` if that failed.
    async fn start(disk: PathBuf, image: PathBuf) -> Option<PartWayCopy> {
        let opened = tokio::task::spawn_blocking(move || -> std::io::Result<PartWayCopy> {
            use std::io::Seek;
            let size = std::fs::File::open(&disk)?.seek(std::io::SeekFrom::End(0))?;
            let image = std::fs::File::create(image)?;
            image.set_len(size)?;
            Ok(PartWayCopy {
                disk,
                image: Arc::new(image),
                size,
            })
        })
        .await;
        let copy = match opened {
            Ok(Ok(copy)) => copy,
            _ => return None,
        };
        copy.piece(0).await.then_some(copy)
    }

    /// Reads the other pieces, piece `n` at `n / PART_WAY_PIECES` of `delay` after the start.
    async fn finish(self, delay: Duration) {
        let start = Instant::now();
        for n in 1..PART_WAY_PIECES {
            tokio::time::sleep_until((start + delay * n / PART_WAY_PIECES).into()).await;
            self.piece(n).await;
        }
    }

    async fn piece(&self, n: u32) -> bool {
        let piece = self.size.div_ceil(u64::from(PART_WAY_PIECES));
        let range = (piece * u64::from(n)).min(self.size)..(piece * u64::from(n + 1)).min(self.size);
        let (disk, image) = (self.disk.clone(), self.image.clone());
        let copied = tokio::task::spawn_blocking(move || {
            freezeframe_agent::provider::local_image::copy_part(
                &disk,
                range,
                &image,
                &std::sync::atomic::AtomicBool::new(false),
            )
        })
        .await;
        matches!(copied, Ok(Ok(())))
    }
}

/// Copies a device (or file) into an image, as a hypervisor's snapshot would; true if it worked.
async fn copy_disk(disk: PathBuf, image: PathBuf) -> bool {
    let copied = tokio::task::spawn_blocking(move || {
        use std::io::Seek;
        let size = std::fs::File::open(&disk)?.seek(std::io::SeekFrom::End(0))?;
        freezeframe_agent::provider::local_image::copy_device(
            &disk,
            size,
            &image,
            &std::sync::atomic::AtomicBool::new(false),
        )
    })
    .await;
    matches!(copied, Ok(Ok(())))
}

async fn volume(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    let st = sim.lock();
    let Some(v) = st.config.volumes.iter().find(|v| v.id == id) else {
        return not_found("volume");
    };
    let mut json: Value = serde_json::from_str(VOLUME_TEMPLATE).expect("the template is JSON");
    json["id"] = json!(v.id);
    json["name"] = json!(v.name);
    json["droplet_ids"] = json!([st.config.droplet_id]);
    Json(json!({"volume": json})).into_response()
}

#[derive(Deserialize)]
struct VolumeSnapshotBody {
    name: String,
}

async fn post_volume_snapshot(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let body: VolumeSnapshotBody = match json_body(&body) {
        Ok(body) => body,
        Err(answer) => return *answer,
    };
    let (volume, image, snapshot_id) = {
        let mut st = sim.lock();
        let Some(volume) = st.config.volumes.iter().find(|v| v.id == id).cloned() else {
            return not_found("volume");
        };
        if let Some(refused) = volume_limits(&st, &volume.id) {
            return refused;
        }
        st.counters.volume_snapshot_posts += 1;
        st.next_id += 1;
        let snapshot_id = format!("8fa70202-0000-4000-8000-{:012}", st.next_id);
        let image = st.config.image_dir.join(format!("volume-{snapshot_id}.img"));
        (volume, image, snapshot_id)
    };
    if !copy_disk(volume.device.clone(), image.clone()).await {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the volume copy failed",
            "sim",
        );
    }
    let size = std::fs::metadata(&image)
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .unwrap_or(0);
    let mut st = sim.lock();
    st.volume_images
        .insert(format!("{}@{}", body.name, volume.name), image.clone());
    let snapshot = SimVolumeSnapshot {
        id: snapshot_id,
        name: body.name,
        volume_id: volume.id,
        created: SystemTime::now(),
        size_bytes: size,
        image,
    };
    let json = restore::volume_snapshot_json(&st, &snapshot);
    st.volume_snapshots.push(snapshot);
    (StatusCode::CREATED, Json(json!({"snapshot": json}))).into_response()
}

/// DigitalOcean's limits on volume snapshots: 25 kept, one every 10 minutes. The message is
/// the simulator's own; the API documents the limits, not its words for them.
fn volume_limits(st: &SimState, volume_id: &str) -> Option<Response> {
    let taken: Vec<SystemTime> = st
        .volume_snapshots
        .iter()
        .filter(|s| s.volume_id == volume_id)
        .map(|s| s.created)
        .collect();
    let recent = taken
        .iter()
        .any(|t| t.elapsed().unwrap_or_default() < VOLUME_SNAPSHOT_INTERVAL);
    let message = if taken.len() >= VOLUME_SNAPSHOTS_KEPT {
        "the volume has the most snapshots a volume may have (25)"
    } else if recent {
        "a volume may be snapshotted once every 10 minutes"
    } else {
        return None;
    };
    Some(error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable_entity",
        message,
        "sim",
    ))
}

/// How many snapshots DigitalOcean keeps of a volume, and how often it takes one.
const VOLUME_SNAPSHOTS_KEPT: usize = 25;
const VOLUME_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(600);

/// `GET /v2/volumes/{id}/snapshots`.
async fn volume_snapshots(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> Response {
    let st = sim.lock();
    if !st.config.volumes.iter().any(|v| v.id == id) {
        return not_found("volume");
    }
    let items = st
        .volume_snapshots
        .iter()
        .filter(|s| s.volume_id == id)
        .map(|s| restore::volume_snapshot_json(&st, s))
        .collect();
    Json(page("snapshots", items, &paging)).into_response()
}

async fn action(State(sim): State<Sim>, Path(id): Path<u64>) -> Response {
    let mut st = sim.lock();
    st.refresh();
    let droplet_id = st.config.droplet_id;
    match st.actions.iter().find(|a| a.id == id) {
        Some(a) => Json(json!({"action": action_json(a, droplet_id)})).into_response(),
        None => not_found("action"),
    }
}

fn gigabytes(bytes: u64) -> f64 {
    ((bytes as f64 / 1e9) * 100.0).ceil() / 100.0
}

async fn droplet_snapshots(
    State(sim): State<Sim>,
    Path(id): Path<u64>,
    Query(paging): Query<Paging>,
) -> Response {
    let mut st = sim.lock();
    st.refresh();
    if id != st.config.droplet_id {
        return not_found("droplet");
    }
    let items = st
        .snapshots
        .iter()
        .map(|s| {
            json!({"id": s.id, "name": s.name, "created_at": rfc3339(s.created), "regions": ["nyc3"],
                   "min_disk_size": 25, "size_gigabytes": gigabytes(s.size_bytes), "type": "snapshot"})
        })
        .collect();
    Json(page("snapshots", items, &paging)).into_response()
}

#[derive(Deserialize)]
struct SnapshotQuery {
    resource_type: Option<String>,
    // Not a flattened Paging: serde_urlencoded cannot read numbers through `flatten`.
    page: Option<usize>,
    per_page: Option<usize>,
}

/// `GET /v2/snapshots[?resource_type=droplet|volume]`.
async fn snapshots(State(sim): State<Sim>, Query(query): Query<SnapshotQuery>) -> Response {
    let mut st = sim.lock();
    st.refresh();
    let kind = query.resource_type.as_deref();
    let mut items: Vec<Value> = Vec::new();
    if kind != Some("volume") {
        items.extend(
            st.snapshots
                .iter()
                .map(|s| restore::droplet_snapshot_json(&st, s)),
        );
    }
    if kind != Some("droplet") {
        items.extend(
            st.volume_snapshots
                .iter()
                .map(|s| restore::volume_snapshot_json(&st, s)),
        );
    }
    let paging = Paging {
        page: query.page,
        per_page: query.per_page,
    };
    Json(page("snapshots", items, &paging)).into_response()
}

async fn delete_snapshot(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    let mut st = sim.lock();
    let Ok(id) = id.parse::<u64>() else {
        return not_found("snapshot");
    };
    match st.snapshots.iter().position(|s| s.id == id) {
        Some(i) => {
            st.snapshots.remove(i);
            StatusCode::NO_CONTENT.into_response()
        }
        None => not_found("snapshot"),
    }
}

/// `DELETE /v2/volumes/snapshots/{id}`.
async fn delete_volume_snapshot(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    let mut st = sim.lock();
    match st.volume_snapshots.iter().position(|s| s.id == id) {
        Some(i) => {
            st.volume_snapshots.remove(i);
            StatusCode::NO_CONTENT.into_response()
        }
        None => not_found("snapshot"),
    }
}

async fn put_faults(State(sim): State<Sim>, _headers: HeaderMap, Json(specs): Json<Vec<String>>) -> Response {
    match specs
        .iter()
        .map(|s| s.parse::<Fault>())
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(faults) => {
            sim.set_faults(faults);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

/// The API simulator, served in-process on loopback from its own thread.
pub struct SimServer {
    pub url: String,
    pub sim: Sim,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SimServer {
    pub fn start(config: SimConfig) -> SimServer {
        let sim = Sim::new(config);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, addr) = std::sync::mpsc::channel();
        let served = sim.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                ready.send(listener.local_addr().unwrap()).unwrap();
                let release = served.clone();
                served
                    .serve(listener, async move {
                        let _ = stopped.await;
                        release.release();
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr.recv().expect("the simulator starts");
        SimServer {
            url: format!("http://{addr}"),
            sim,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.sim.release();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
