//! What a restore drill asks of the API: Droplets created from snapshot images (each disk a
//! private copy of the image, as a restore gives), volumes created from volume snapshots and
//! attached to them, sizes with prices, tags on images; and destroying all of it, by id or by
//! tag. DigitalOcean's own rules are kept where a drill could trip on them: the image must be a
//! snapshot of this account and fit the size's disk, volumes are created in the snapshot's
//! region, an attached volume cannot be deleted until its Droplet is gone (destroying a
//! Droplet detaches its volumes), and the simulator never destroys a Droplet it did not create.

use super::*;

/// A Droplet created from a snapshot image.
pub(crate) struct RestoredDroplet {
    pub(crate) id: u64,
    name: String,
    size: String,
    image: u64,
    image_name: String,
    pub(crate) tags: Vec<String>,
    user_data: Option<String>,
    created: Instant,
    created_at: SystemTime,
    /// Its disk: a private copy of the snapshot's image.
    disk: PathBuf,
    ip: String,
}

/// A volume created from a volume snapshot.
pub(crate) struct RestoredVolume {
    id: String,
    name: String,
    size_gigabytes: u64,
    tags: Vec<String>,
    disk: PathBuf,
    droplet: Option<u64>,
    created_at: SystemTime,
}

/// A restored Droplet as the tests' stand-in for ssh reaches it: its address, its disk, and
/// the volumes attached to it by name.
#[derive(Debug, Clone)]
pub struct RestoredMachine {
    pub id: u64,
    pub name: String,
    pub ip: String,
    pub disk: PathBuf,
    pub user_data: Option<String>,
    pub tags: Vec<String>,
    pub volumes: Vec<(String, PathBuf)>,
}

/// The region every snapshot of the simulator is in.
const REGION: &str = "nyc3";

/// Sizes on sale: slug, memory (MiB), vCPUs, disk (GB), monthly and hourly price (USD).
const SIZES: &[(&str, u64, u64, u64, f64, f64)] = &[
    ("s-1vcpu-512mb-10gb", 512, 1, 10, 4.0, 0.00595),
    ("s-1vcpu-1gb", 1024, 1, 25, 6.0, 0.00893),
    ("s-1vcpu-2gb", 2048, 1, 50, 12.0, 0.01786),
    ("s-2vcpu-4gb", 4096, 2, 80, 24.0, 0.03571),
];

/// The minimum disk a Droplet snapshot needs (its `min_disk_size`).
pub(crate) const SNAPSHOT_MIN_DISK: u64 = 25;

impl Sim {
    /// The Droplets created from snapshots that exist now.
    pub fn restored_machines(&self) -> Vec<RestoredMachine> {
        let st = self.lock();
        st.restored
            .iter()
            .map(|d| RestoredMachine {
                id: d.id,
                name: d.name.clone(),
                ip: d.ip.clone(),
                disk: d.disk.clone(),
                user_data: d.user_data.clone(),
                tags: d.tags.clone(),
                volumes: st
                    .restored_volumes
                    .iter()
                    .filter(|v| v.droplet == Some(d.id))
                    .map(|v| (v.name.clone(), v.disk.clone()))
                    .collect(),
            })
            .collect()
    }

    /// Ids of the volumes created from snapshots that exist now.
    pub fn restored_volume_ids(&self) -> Vec<String> {
        self.lock()
            .restored_volumes
            .iter()
            .map(|v| v.id.clone())
            .collect()
    }

    /// The tags on the Droplet snapshot named `name`.
    pub fn snapshot_tags(&self, name: &str) -> Vec<String> {
        let st = self.lock();
        st.snapshots
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| st.image_tags.get(&s.id.to_string()).cloned())
            .unwrap_or_default()
    }

    /// The tags on a snapshot, by its id.
    pub fn image_tags(&self, snapshot_id: &str) -> Vec<String> {
        self.lock()
            .image_tags
            .get(snapshot_id)
            .cloned()
            .unwrap_or_default()
    }
}

pub(crate) fn droplet_json(st: &SimState, d: &RestoredDroplet) -> Value {
    let mut json = template();
    json["id"] = json!(d.id);
    json["name"] = json!(d.name);
    json["locked"] = json!(false);
    // New until it has booted (as long as a snapshot action takes here).
    let booted = d.created.elapsed() >= st.config.action_delay;
    json["status"] = json!(if booted { "active" } else { "new" });
    json["created_at"] = json!(rfc3339(d.created_at));
    json["size_slug"] = json!(d.size);
    json["size"]["slug"] = json!(d.size);
    json["image"]["id"] = json!(d.image);
    json["image"]["name"] = json!(d.image_name);
    json["image"]["type"] = json!("snapshot");
    json["tags"] = json!(d.tags);
    json["snapshot_ids"] = json!([]);
    json["volume_ids"] = json!(st
        .restored_volumes
        .iter()
        .filter(|v| v.droplet == Some(d.id))
        .map(|v| v.id.clone())
        .collect::<Vec<_>>());
    json["networks"]["v4"] = if booted {
        json!([{"ip_address": d.ip, "netmask": "255.255.255.0", "gateway": "192.0.2.1", "type": "public"}])
    } else {
        json!([])
    };
    json
}

fn unprocessable(message: &str) -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable_entity",
        message,
        "sim",
    )
}

#[derive(Deserialize)]
struct DropletCreate {
    name: String,
    region: String,
    size: String,
    image: Value,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    user_data: Option<String>,
}

/// `POST /v2/droplets` from a snapshot image: its disk is a copy of the image.
pub(crate) async fn post_droplets(State(sim): State<Sim>, body: axum::body::Bytes) -> Response {
    let body: DropletCreate = match json_body(&body) {
        Ok(body) => body,
        Err(answer) => return *answer,
    };
    let image_id = body
        .image
        .as_u64()
        .or_else(|| body.image.as_str().and_then(|s| s.parse().ok()));
    let (id, image, image_name, disk, ip) = {
        let mut st = sim.lock();
        st.refresh();
        let Some(snapshot) = image_id.and_then(|i| st.snapshots.iter().find(|s| s.id == i)) else {
            return unprocessable("You specified an invalid image for Droplet creation.");
        };
        let Some(image) = snapshot.image.clone() else {
            return unprocessable("The image has no disk to restore.");
        };
        let image_name = snapshot.name.clone();
        if body.region != REGION {
            return unprocessable(&format!(
                "The image is not available in {}; it is in {REGION}.",
                body.region
            ));
        }
        match SIZES.iter().find(|s| s.0 == body.size) {
            None => return unprocessable("You specified an invalid size for Droplet creation."),
            Some(size) if size.3 < SNAPSHOT_MIN_DISK => {
                return unprocessable("The size's disk is smaller than the image's min_disk_size.")
            }
            Some(_) => {}
        }
        st.next_id += 1;
        let id = st.next_id;
        let n = st.restored.len() + st.restored_volumes.len() + 100;
        let disk = st.config.image_dir.join(format!("droplet-{id}.img"));
        (id, image, image_name, disk, format!("192.0.2.{}", n % 250 + 2))
    };
    if !copy_file(image, disk.clone()).await {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "restoring the image failed",
            "sim",
        );
    }
    let mut st = sim.lock();
    let droplet = RestoredDroplet {
        id,
        name: body.name,
        size: body.size,
        image: image_id.unwrap_or_default(),
        image_name,
        tags: body.tags.unwrap_or_default(),
        user_data: body.user_data,
        created: Instant::now(),
        created_at: SystemTime::now(),
        disk,
        ip,
    };
    let json = droplet_json(&st, &droplet);
    st.restored.push(droplet);
    st.next_id += 1;
    let action = st.next_id;
    (
        StatusCode::ACCEPTED,
        Json(json!({"droplet": json, "links": {"actions": [
            {"id": action, "rel": "create", "href": format!("https://api.digitalocean.com/v2/actions/{action}")}
        ]}})),
    )
        .into_response()
}

/// A sparse copy of a file, as a restore's private disk.
async fn copy_file(from: PathBuf, to: PathBuf) -> bool {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new("cp")
            .arg("--sparse=always")
            .arg(&from)
            .arg(&to)
            .status()
            .is_ok_and(|s| s.success())
    })
    .await
    .unwrap_or(false)
}

/// Removes a restored Droplet: its disk goes, its volumes are detached.
fn destroy(st: &mut SimState, id: u64) {
    if let Some(i) = st.restored.iter().position(|d| d.id == id) {
        let droplet = st.restored.remove(i);
        let _ = std::fs::remove_file(&droplet.disk);
        for v in st.restored_volumes.iter_mut().filter(|v| v.droplet == Some(id)) {
            v.droplet = None;
        }
    }
}

/// `DELETE /v2/droplets/{id}`: only Droplets the simulator created from images.
pub(crate) async fn delete_droplet(State(sim): State<Sim>, Path(id): Path<u64>) -> Response {
    let mut st = sim.lock();
    if st.restored.iter().any(|d| d.id == id) {
        destroy(&mut st, id);
        StatusCode::NO_CONTENT.into_response()
    } else if id == st.config.droplet_id || st.config.fleet.iter().any(|f| f.id == id) {
        unprocessable("the simulator never destroys a Droplet it did not create")
    } else {
        not_found("droplet")
    }
}

#[derive(Deserialize)]
pub(crate) struct TagQuery {
    tag_name: String,
}

/// `DELETE /v2/droplets?tag_name=T`.
pub(crate) async fn delete_droplets_by_tag(
    State(sim): State<Sim>,
    Query(query): Query<TagQuery>,
) -> Response {
    let mut st = sim.lock();
    if st.config.fleet.iter().any(|f| f.tags.contains(&query.tag_name)) {
        return unprocessable("the simulator never destroys a Droplet it did not create");
    }
    let tagged: Vec<u64> = st
        .restored
        .iter()
        .filter(|d| d.tags.contains(&query.tag_name))
        .map(|d| d.id)
        .collect();
    for id in tagged {
        destroy(&mut st, id);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /v2/sizes`.
pub(crate) async fn sizes(Query(paging): Query<Paging>) -> Response {
    let items = SIZES
        .iter()
        .map(|(slug, memory, vcpus, disk, monthly, hourly)| {
            json!({"slug": slug, "memory": memory, "vcpus": vcpus, "disk": disk, "transfer": 1.0,
                   "price_monthly": monthly, "price_hourly": hourly, "regions": [REGION, "sfo3"],
                   "available": true, "description": "Basic"})
        })
        .collect();
    Json(page("sizes", items, &paging)).into_response()
}

/// `GET /v2/snapshots/{id}`: a Droplet snapshot (numeric id) or a volume snapshot.
pub(crate) async fn snapshot(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    let mut st = sim.lock();
    st.refresh();
    let found = st
        .snapshots
        .iter()
        .find(|s| s.id.to_string() == id)
        .map(|s| droplet_snapshot_json(&st, s))
        .or_else(|| {
            st.volume_snapshots
                .iter()
                .find(|s| s.id == id)
                .map(|s| volume_snapshot_json(&st, s))
        });
    match found {
        Some(json) => Json(json!({"snapshot": json})).into_response(),
        None => not_found("snapshot"),
    }
}

pub(crate) fn droplet_snapshot_json(st: &SimState, s: &SimSnapshot) -> Value {
    json!({"id": s.id.to_string(), "name": s.name, "created_at": rfc3339(s.created), "regions": [REGION],
           "min_disk_size": SNAPSHOT_MIN_DISK, "size_gigabytes": gigabytes(s.size_bytes),
           "resource_id": st.config.droplet_id.to_string(), "resource_type": "droplet",
           "tags": st.image_tags.get(&s.id.to_string()).cloned().unwrap_or_default()})
}

pub(crate) fn volume_snapshot_json(st: &SimState, s: &SimVolumeSnapshot) -> Value {
    json!({"id": s.id, "name": s.name, "created_at": rfc3339(s.created), "regions": [REGION],
           "resource_id": s.volume_id, "resource_type": "volume", "min_disk_size": 10,
           "size_gigabytes": gigabytes(s.size_bytes),
           "tags": st.image_tags.get(&s.id).cloned().unwrap_or_default()})
}

#[derive(Deserialize)]
pub(crate) struct ImagesQuery {
    tag_name: Option<String>,
    page: Option<usize>,
    per_page: Option<usize>,
}

/// `GET /v2/images[?tag_name=T]`: the account's snapshots, as images.
pub(crate) async fn images(State(sim): State<Sim>, Query(query): Query<ImagesQuery>) -> Response {
    let mut st = sim.lock();
    st.refresh();
    let items = st
        .snapshots
        .iter()
        .filter_map(|s| {
            let tags = st.image_tags.get(&s.id.to_string()).cloned().unwrap_or_default();
            if query.tag_name.as_ref().is_some_and(|t| !tags.contains(t)) {
                return None;
            }
            Some(
                json!({"id": s.id, "name": s.name, "type": "snapshot", "distribution": "Debian",
                "slug": null, "public": false, "regions": [REGION], "created_at": rfc3339(s.created),
                "min_disk_size": SNAPSHOT_MIN_DISK, "size_gigabytes": gigabytes(s.size_bytes),
                "description": "", "tags": tags, "status": "available", "error_message": ""}),
            )
        })
        .collect();
    let paging = Paging {
        page: query.page,
        per_page: query.per_page,
    };
    Json(page("images", items, &paging)).into_response()
}

#[derive(Deserialize)]
struct VolumeCreate {
    name: String,
    size_gigabytes: u64,
    region: String,
    snapshot_id: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
}

/// `POST /v2/volumes` from a volume snapshot.
pub(crate) async fn post_volumes(State(sim): State<Sim>, body: axum::body::Bytes) -> Response {
    let body: VolumeCreate = match json_body(&body) {
        Ok(body) => body,
        Err(answer) => return *answer,
    };
    let (id, image, disk) = {
        let mut st = sim.lock();
        let Some(snapshot) = body
            .snapshot_id
            .as_ref()
            .and_then(|id| st.volume_snapshots.iter().find(|s| &s.id == id))
        else {
            return unprocessable("the simulator creates volumes from volume snapshots only");
        };
        if body.region != REGION {
            return unprocessable("The snapshot is not available in that region.");
        }
        let image = snapshot.image.clone();
        st.next_id += 1;
        let id = format!("9b0a0303-0000-4000-8000-{:012}", st.next_id);
        let disk = st.config.image_dir.join(format!("volume-restored-{id}.img"));
        (id, image, disk)
    };
    if !copy_file(image, disk.clone()).await {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "restoring the volume failed",
            "sim",
        );
    }
    let mut st = sim.lock();
    let volume = RestoredVolume {
        id,
        name: body.name,
        size_gigabytes: body.size_gigabytes,
        tags: body.tags.unwrap_or_default(),
        disk,
        droplet: None,
        created_at: SystemTime::now(),
    };
    let json = volume_json(&volume);
    st.restored_volumes.push(volume);
    (StatusCode::CREATED, Json(json!({"volume": json}))).into_response()
}

fn volume_json(v: &RestoredVolume) -> Value {
    let mut json: Value = serde_json::from_str(VOLUME_TEMPLATE).expect("the template is JSON");
    json["id"] = json!(v.id);
    json["name"] = json!(v.name);
    json["size_gigabytes"] = json!(v.size_gigabytes);
    json["droplet_ids"] = json!(v.droplet.into_iter().collect::<Vec<_>>());
    json["tags"] = json!(v.tags);
    json["created_at"] = json!(rfc3339(v.created_at));
    json["region"]["slug"] = json!(REGION);
    json
}

/// `GET /v2/volumes`: the volumes restored from snapshots (with their tags).
pub(crate) async fn volumes(State(sim): State<Sim>, Query(paging): Query<Paging>) -> Response {
    let st = sim.lock();
    let items = st.restored_volumes.iter().map(volume_json).collect();
    Json(page("volumes", items, &paging)).into_response()
}

/// `DELETE /v2/volumes/{id}`: refused while the volume is attached.
pub(crate) async fn delete_volume(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    let mut st = sim.lock();
    let Some(i) = st.restored_volumes.iter().position(|v| v.id == id) else {
        return not_found("volume");
    };
    if st.restored_volumes[i].droplet.is_some() {
        return error(
            StatusCode::CONFLICT,
            "conflict",
            "Volume is currently attached to a Droplet; detach it or destroy the Droplet first.",
            "sim",
        );
    }
    let volume = st.restored_volumes.remove(i);
    let _ = std::fs::remove_file(&volume.disk);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct VolumeAction {
    #[serde(rename = "type")]
    kind: String,
    droplet_id: Option<u64>,
}

/// `POST /v2/volumes/{id}/actions` with `type: attach`.
pub(crate) async fn post_volume_action(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let body: VolumeAction = match json_body(&body) {
        Ok(body) => body,
        Err(answer) => return *answer,
    };
    let mut st = sim.lock();
    if body.kind != "attach" {
        return unprocessable("the simulator only attaches volumes");
    }
    let Some(droplet) = body.droplet_id.filter(|d| st.restored.iter().any(|r| r.id == *d)) else {
        return unprocessable("the simulator attaches volumes to Droplets it created only");
    };
    let Some(volume) = st.restored_volumes.iter_mut().find(|v| v.id == id) else {
        return not_found("volume");
    };
    volume.droplet = Some(droplet);
    st.next_id += 1;
    let now = rfc3339(SystemTime::now());
    let action = json!({"id": st.next_id, "status": "completed", "type": "attach_volume",
        "started_at": now, "completed_at": now, "resource_id": null, "resource_type": "volume",
        "region": template()["region"].clone(), "region_slug": REGION});
    (StatusCode::ACCEPTED, Json(json!({"action": action}))).into_response()
}

#[derive(Deserialize)]
struct TagCreate {
    name: String,
}

/// `POST /v2/tags`.
pub(crate) async fn post_tags(State(sim): State<Sim>, body: axum::body::Bytes) -> Response {
    let body: TagCreate = match json_body(&body) {
        Ok(body) => body,
        Err(answer) => return *answer,
    };
    sim.lock().tags.insert(body.name.clone());
    let none = json!({"count": 0});
    (
        StatusCode::CREATED,
        Json(
            json!({"tag": {"name": body.name, "resources": {"count": 0, "droplets": none,
            "imgages": none, "volumes": none, "volume_snapshots": none, "databases": none}}}),
        ),
    )
        .into_response()
}

#[derive(Deserialize)]
struct TagResources {
    resources: Vec<TagResource>,
}

#[derive(Deserialize)]
struct TagResource {
    resource_id: String,
    resource_type: String,
}

/// The resources a tag request names, once the tag is known to exist.
fn tag_request(st: &SimState, tag: &str, body: &[u8]) -> Result<TagResources, Box<Response>> {
    let body: TagResources = json_body(body)?;
    if !st.tags.contains(tag) {
        return Err(Box::new(not_found("tag")));
    }
    Ok(body)
}

/// `POST /v2/tags/{tag}/resources`: images (snapshots) and this Droplet, the tag made first.
pub(crate) async fn post_tag_resources(
    State(sim): State<Sim>,
    Path(tag): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let mut st = sim.lock();
    let body = match tag_request(&st, &tag, &body) {
        Ok(body) => body,
        Err(answer) => return *answer,
    };
    for r in &body.resources {
        if r.resource_type == "droplet" {
            if r.resource_id != st.config.droplet_id.to_string() {
                return not_found("droplet");
            }
            if !st.droplet_tags.contains(&tag) {
                st.droplet_tags.push(tag.clone());
            }
            continue;
        }
        if !matches!(r.resource_type.as_str(), "image" | "volume_snapshot") {
            return unprocessable("the simulator tags images, volume snapshots and its Droplet only");
        }
        let known = st.snapshots.iter().any(|s| s.id.to_string() == r.resource_id)
            || st.volume_snapshots.iter().any(|s| s.id == r.resource_id);
        if !known {
            return not_found("image");
        }
        let tags = st.image_tags.entry(r.resource_id.clone()).or_default();
        if !tags.contains(&tag) {
            tags.push(tag.clone());
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `DELETE /v2/tags/{tag}/resources`: untags this Droplet (what offline snapshots clear).
pub(crate) async fn delete_tag_resources(
    State(sim): State<Sim>,
    Path(tag): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let mut st = sim.lock();
    let body = match tag_request(&st, &tag, &body) {
        Ok(body) => body,
        Err(answer) => return *answer,
    };
    for r in &body.resources {
        if r.resource_type != "droplet" || r.resource_id != st.config.droplet_id.to_string() {
            return unprocessable("the simulator untags its Droplet only");
        }
        st.droplet_tags.retain(|t| *t != tag);
    }
    StatusCode::NO_CONTENT.into_response()
}
