//! A drill's paths against doubles of the API ([`Fake`]: one Droplet snapshot and one volume
//! snapshot of its run, what the drill creates kept by tag, calls that fail as a test scripts)
//! and of the check on the restored Droplet ([`Check`]), on tokio's paused clock: whatever
//! happens, what the drill created is destroyed.

use super::*;
use freezeframe_digitalocean::{Droplet, ListedDroplet, Volume};
use std::collections::HashSet;

fn snapshot(id: &str, kind: &str) -> Snapshot {
    serde_json::from_value(serde_json::json!({
        "id": id, "name": "db1-20261207-offline", "created_at": "2026-12-07T10:00:00Z",
        "regions": ["nyc1"], "min_disk_size": 25, "size_gigabytes": 2.5,
        "resource_id": "1", "resource_type": kind,
    }))
    .unwrap()
}

#[derive(Default)]
struct World {
    /// The tags of what the drill created and has not destroyed.
    droplets: Vec<Vec<String>>,
    volumes: Vec<(String, Vec<String>)>,
    /// Calls scripted to fail.
    failing: HashSet<&'static str>,
    recorded: Vec<String>,
}

struct Fake(std::sync::Mutex<World>);

impl Fake {
    fn new(failing: &[&'static str]) -> Fake {
        Fake(std::sync::Mutex::new(World {
            failing: failing.iter().copied().collect(),
            ..World::default()
        }))
    }

    fn fails(&self, call: &'static str) -> Result<(), ApiError> {
        if self.0.lock().unwrap().failing.contains(call) {
            return Err(ApiError::Status {
                status: 500,
                id: "server_error".into(),
                message: format!("{call} failed"),
                request_id: None,
                what: call.into(),
            });
        }
        Ok(())
    }

    /// What the drill created and left.
    fn left(&self) -> usize {
        let world = self.0.lock().unwrap();
        world.droplets.len() + world.volumes.len()
    }

    fn created_droplet(&self) -> bool {
        self.0.lock().unwrap().recorded.iter().any(|c| c == "created")
    }
}

fn droplet(status: &str) -> Droplet {
    serde_json::from_value(serde_json::json!({
        "id": 100, "name": "freezeframe-verify-7", "locked": false, "status": status,
        "networks": { "v4": [{ "ip_address": "203.0.113.5", "type": "public" }] },
    }))
    .unwrap()
}

impl Api for Fake {
    async fn snapshot(&self, id: &str) -> Result<Snapshot, ApiError> {
        Ok(snapshot(id, "droplet"))
    }
    async fn snapshots(&self, kind: &str) -> Result<Vec<Snapshot>, ApiError> {
        Ok(vec![snapshot("v-1", kind)])
    }
    async fn sizes(&self) -> Result<Vec<Size>, ApiError> {
        Ok(vec![serde_json::from_value(serde_json::json!({
            "slug": "s-1vcpu-1gb", "memory": 1024, "vcpus": 1, "disk": 25,
            "price_monthly": 6.0, "price_hourly": 0.009, "regions": ["nyc1"], "available": true,
        }))
        .unwrap()])
    }
    async fn create_droplet(&self, request: &DropletCreate<'_>) -> Result<Droplet, ApiError> {
        self.fails("create_droplet")?;
        let mut world = self.0.lock().unwrap();
        world.droplets.push(request.tags.to_vec());
        world.recorded.push("created".into());
        Ok(droplet("new"))
    }
    async fn droplet(&self, _: u64) -> Result<Droplet, ApiError> {
        Ok(droplet("active"))
    }
    async fn create_volume(&self, request: &VolumeCreate<'_>) -> Result<Volume, ApiError> {
        self.fails("create_volume")?;
        let id = format!("vol-{}", request.name);
        let mut world = self.0.lock().unwrap();
        world.volumes.push((id.clone(), request.tags.to_vec()));
        Ok(Volume {
            id,
            name: request.name.into(),
            size_gigabytes: request.size_gigabytes,
            tags: Some(request.tags.to_vec()),
            droplet_ids: None,
        })
    }
    async fn attach_volume(&self, _: &str, _: u64, _: &str) -> Result<bool, ApiError> {
        self.fails("attach_volume")?;
        Ok(true)
    }
    async fn tag_snapshot(&self, tag: &str, _: &str, _: bool) -> Result<(), ApiError> {
        self.0.lock().unwrap().recorded.push(tag.into());
        Ok(())
    }
    async fn delete_droplets_tagged(&self, tag: &str) -> Result<(), ApiError> {
        self.0
            .lock()
            .unwrap()
            .droplets
            .retain(|tags| !tags.iter().any(|t| t == tag));
        Ok(())
    }
    async fn volumes(&self) -> Result<Vec<Volume>, ApiError> {
        let world = self.0.lock().unwrap();
        Ok(world
            .volumes
            .iter()
            .map(|(id, tags)| Volume {
                id: id.clone(),
                name: id.clone(),
                size_gigabytes: 25,
                tags: Some(tags.clone()),
                droplet_ids: None,
            })
            .collect())
    }
    async fn delete_volume(&self, id: &str) -> Result<(), ApiError> {
        self.0.lock().unwrap().volumes.retain(|(v, _)| v != id);
        Ok(())
    }
    async fn droplets_with_tag(&self, tag: &str) -> Result<Vec<ListedDroplet>, ApiError> {
        let world = self.0.lock().unwrap();
        let left = world.droplets.iter().filter(|tags| tags.iter().any(|t| t == tag));
        Ok(left
            .map(|_| serde_json::from_value(serde_json::json!({ "id": 100, "name": "left" })).unwrap())
            .collect())
    }
}

/// How the check on the restored Droplet goes.
enum Check {
    Verified,
    Fails,
    /// Never answers.
    Hangs,
}

impl Remote for Check {
    async fn verify(
        &self,
        _: &DrillOptions,
        _: &str,
        _: &[String],
        _: &Pinned,
        _: &LastTry,
    ) -> Result<MachineVerification, Stop> {
        match self {
            Check::Verified => Ok(serde_json::from_value(serde_json::json!({
                "probe": "no-markers", "filesystems": [], "verified": true,
            }))
            .unwrap()),
            Check::Fails => Err(Stop::Failed("ssh: connection closed".into())),
            Check::Hangs => std::future::pending().await,
        }
    }
}

async fn drill(api: &Fake, check: Check) -> (Exit, DrillReport) {
    let options = DrillOptions {
        snapshot: "7".into(),
        size: None,
        ssh_keys: Vec::new(),
        yes: true,
        timeout: Duration::from_secs(600),
        user: "root".into(),
        ssh_command: "ssh".into(),
        poll: Duration::from_secs(2),
    };
    let drilled = tokio::time::timeout(Duration::from_secs(24 * 3600), run_on(api, &check, &options));
    drilled.await.expect("the drill ends").expect("planned")
}

#[tokio::test(start_paused = true)]
async fn a_verified_drill_records_its_result_and_destroys_what_it_made() {
    let api = Fake::new(&[]);
    let (exit, report) = drill(&api, Check::Verified).await;
    assert_eq!(exit, Exit::Success, "{:?}", report.error);
    assert!(report.verified && report.left_behind.is_empty());
    assert_eq!(report.volumes.len(), 1);
    assert!(report.recorded.contains(&platform::VERIFIED_TAG.to_string()));
    assert!(api.created_droplet());
    assert_eq!(api.left(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_check_still_destroys_what_the_drill_made() {
    let api = Fake::new(&[]);
    let (exit, report) = drill(&api, Check::Fails).await;
    assert_eq!(exit, Exit::Failed);
    assert!(report.error.unwrap().contains("connection closed"));
    assert!(api.created_droplet());
    assert_eq!(api.left(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_drill_past_its_timeout_still_destroys_what_it_made() {
    let api = Fake::new(&[]);
    let (exit, report) = drill(&api, Check::Hangs).await;
    assert_eq!(exit, Exit::Failed);
    assert!(report.error.unwrap().contains("--timeout"));
    assert!(api.created_droplet());
    assert_eq!(api.left(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_volume_that_cannot_be_attached_still_has_everything_destroyed() {
    let api = Fake::new(&["attach_volume"]);
    let (exit, report) = drill(&api, Check::Verified).await;
    assert_eq!(exit, Exit::Failed);
    assert!(report.error.unwrap().contains("cannot attach volume"));
    assert!(!report.verified && report.recorded.is_empty());
    assert_eq!(api.left(), 0);
}
