//! Contract tests against DigitalOcean's own OpenAPI spec (`../shared/digitalocean-openapi/`),
//! with Prism (`tests/prism`, installed by .ci/run): the client against `prism mock`, which
//! answers 422 to any request that breaks the spec; and the agent and the simulator through
//! `prism proxy --errors`, which also fails any response of the simulator that breaks it.

use freezeframe_digitalocean::{http_client, Client, Token};
use freezeframe_tests::sim::{Capture, Fault, PowerModel, Sim, SimConfig, SimVolume};
use freezeframe_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn spec() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let spec = root.join("../../shared/digitalocean-openapi/digitalocean-openapi.yaml");
    assert!(
        spec.exists(),
        "{} is missing: the shared folder sits beside the repository",
        spec.display()
    );
    spec
}

fn prism_bin() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("prism/node_modules/.bin/prism");
    assert!(
        bin.exists(),
        "{} is missing: run `npm install` in tests/prism (.ci/run does)",
        bin.display()
    );
    bin
}

/// The agent's API client, pointed at `url`.
fn client_for(url: &str) -> Client {
    Client::new(
        http_client(url).unwrap(),
        url,
        Token::new("dop_v1_contract"),
        &["droplet:read"],
        Duration::from_secs(20),
    )
}

/// A Prism process on a free loopback port; killed on drop.
struct Prism {
    url: String,
    child: Child,
}

impl Prism {
    fn start(args: &[&str]) -> Prism {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(prism_bin());
        cmd.args(args)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("start prism");
        let prism = Prism {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "prism did not start listening");
            std::thread::sleep(Duration::from_millis(100));
        }
        prism
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_of_the_client_agrees_with_the_spec() {
    let spec = spec();
    let prism = Prism::start(&["mock", spec.to_str().unwrap()]);
    let client = client_for(&prism.url);
    // Prism answers a request that breaks the spec with 422 and its violations.
    let droplet = client.droplet(3164444).await.expect("GET /v2/droplets/{id}");
    assert!(droplet.id > 0);
    client
        .droplets_with_tag("env:prod")
        .await
        .expect("GET /v2/droplets?tag_name=");
    client
        .droplet_actions(3164444)
        .await
        .expect("GET /v2/droplets/{id}/actions");
    let action = client
        .snapshot_droplet(3164444, "freezeframe-contract", Duration::from_secs(20))
        .await
        .expect("POST /v2/droplets/{id}/actions");
    client.action(action.id).await.expect("GET /v2/actions/{id}");
    client
        .droplet_snapshots(3164444)
        .await
        .expect("GET /v2/droplets/{id}/snapshots");
    let volume = "506f78a4-e098-11e5-ad9f-000f53306ae1";
    client.volume(volume).await.expect("GET /v2/volumes/{id}");
    client
        .snapshot_volume(volume, "freezeframe-contract", Duration::from_secs(20))
        .await
        .expect("POST /v2/volumes/{id}/snapshots");
    client
        .volume_snapshots(volume)
        .await
        .expect("GET /v2/volumes/{id}/snapshots");
    client
        .delete_snapshot(6372321)
        .await
        .expect("DELETE /v2/snapshots/{id}");
    client
        .delete_volume_snapshot("fbe805e8-866b-11e6-96bf-000f53315a41")
        .await
        .expect("DELETE /v2/volumes/snapshots/{id}");
    drill_requests_agree_with_the_spec(&client).await;
}

/// The calls of a restore drill, each as the spec has it (against `prism mock`).
async fn drill_requests_agree_with_the_spec(client: &Client) {
    use freezeframe_digitalocean::{DropletCreate, VolumeCreate};
    client.snapshot("6372321").await.expect("GET /v2/snapshots/{id}");
    client
        .snapshots("volume")
        .await
        .expect("GET /v2/snapshots?resource_type=");
    client.sizes().await.expect("GET /v2/sizes");
    let tags = ["freezeframe-verify".to_string()];
    let droplet = client
        .create_droplet(&DropletCreate {
            name: "freezeframe-verify-contract",
            region: "nyc3",
            size: "s-1vcpu-1gb",
            image: 6372321,
            ssh_keys: &["3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa".to_string()],
            tags: &tags,
            user_data: "#cloud-config\n",
        })
        .await
        .expect("POST /v2/droplets");
    let volume = client
        .create_volume(&VolumeCreate {
            name: "freezeframe-verify-data",
            size_gigabytes: 10,
            region: "nyc3",
            snapshot_id: "b0798135-fb76-11eb-946a-0a58ac146f33",
            tags: &tags,
        })
        .await
        .expect("POST /v2/volumes");
    client
        .attach_volume(&volume.id, droplet.id, "nyc3")
        .await
        .expect("POST /v2/volumes/{id}/actions");
    client.volumes().await.expect("GET /v2/volumes");
    client
        .tag_snapshot("freezeframe-verified", "6372321", false)
        .await
        .expect("POST /v2/tags, POST /v2/tags/{tag}/resources");
    client
        .delete_droplet(droplet.id)
        .await
        .expect("DELETE /v2/droplets/{id}");
    client
        .delete_droplets_tagged("freezeframe-verify")
        .await
        .expect("DELETE /v2/droplets?tag_name=");
    client
        .delete_volume(&volume.id)
        .await
        .expect("DELETE /v2/volumes/{id}");
}

#[test]
fn the_agent_and_the_simulator_agree_with_the_spec_through_a_validating_proxy() {
    let spec = spec();
    let dir = scratch();
    let disk = loop_fs(
        Fs::Ext4,
        64,
        &dir.path().join("disk.img"),
        &dir.path().join("disk"),
    );
    let volume = volume_fs(dir.path(), 64);
    let links = dir.path().join("by-id");
    let server = SimServer::start(SimConfig {
        token: "dop_v1_contract".into(),
        droplet_id: 3164444,
        droplet_name: "web-1".into(),
        disk: Some(disk.device.clone().into()),
        image_dir: dir.path().join("images"),
        action_delay: Duration::from_millis(300),
        capture: Capture::Registration,
        latency: Duration::ZERO,
        faults: Vec::new(),
        volumes: vec![SimVolume {
            id: "506f78a4-e098-11e5-ad9f-000f53306ae1".into(),
            name: "data".into(),
            device: volume.device.clone().into(),
        }],
        fleet: vec![freezeframe_tests::sim::FleetDroplet {
            id: 3164500,
            name: "db-1".into(),
            tags: vec!["db".into()],
            public_ipv4: "192.0.2.10".into(),
        }],
        rate_limit: None,
    });
    std::fs::create_dir_all(dir.path().join("images")).unwrap();
    let prism = Prism::start(&["proxy", "--errors", spec.to_str().unwrap(), &server.url]);
    let token = dir.path().join("token");
    std::fs::write(&token, "dop_v1_contract").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "{kept}[agent]\nruntime_dir = {:?}\n[freeze]\nmountpoints = [{:?}, {:?}]\nmax_freeze = \"20s\"\n\
             [quiesce]\nhooks_dir = {:?}\n\
             [digitalocean]\napi_url = {:?}\nmetadata_url = {:?}\ntoken_file = {:?}\nvolume_links = {:?}\n\
             [retention]\nkeep_last = 1\n",
            dir.path().join("run").display().to_string(),
            disk.mountpoint.display().to_string(),
            volume.mountpoint.display().to_string(),
            dir.path().join("hooks.d").display().to_string(),
            prism.url,
            server.url,
            token.display().to_string(),
            links.display().to_string(),
            kept = kept_here(dir.path()),
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(agent_bin())
            .arg("--config")
            .arg(&config)
            .args(["snapshot", "--json"])
            .args(args)
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        report
    };
    // An earlier run's volume snapshot, which retention deletes once this run's completed (its
    // calls through the proxy).
    let earlier = format!(
        "{}-20261101-000000-filesystem",
        crate::digitalocean::rendered_hostname()
    );
    server.sim.seed_volume_snapshot(
        "506f78a4-e098-11e5-ad9f-000f53306ae1",
        Some(&earlier),
        Duration::from_secs(86_400),
    );
    let report = run(&["--wait"]);
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert_eq!(report["pruned"][0]["name"], earlier.as_str(), "{report:#}");
    assert!(report["snapshot_id"].is_string(), "{report:#}");
    assert_eq!(
        report["volume_snapshots"].as_array().map(Vec::len),
        Some(1),
        "{report:#}"
    );

    // The simulator's other answers agree too (the agent does not call these; the CLI's --tag
    // lists Droplets).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for path in [
        "/v2/account",
        "/v2/snapshots?page=1&per_page=20",
        "/v2/droplets?tag_name=db&page=1&per_page=200",
        "/v2/images?private=true&tag_name=freezeframe-probe-after-thaw&page=1&per_page=200",
    ] {
        let status = rt.block_on(async {
            reqwest::Client::new()
                .get(format!("{}{path}", prism.url))
                .bearer_auth("dop_v1_contract")
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
        assert_eq!(status.ok(), Some(200), "GET {path} through the validating proxy");
    }
    // A drill's calls: the simulator answers them as the spec says, and follows its rules.
    let snapshot_id = report["snapshot_id"].as_str().unwrap().to_string();
    rt.block_on(drill_through_the_proxy(&prism.url, &snapshot_id));
    assert!(
        server.sim.restored_machines().is_empty(),
        "the drill's Droplet is gone"
    );
    assert!(
        server.sim.restored_volume_ids().is_empty(),
        "the drill's volume is gone"
    );
    // The run's level (tagged through the proxy, with the volume's snapshot in the same call),
    // then the drill's verdict.
    assert_eq!(
        server.sim.image_tags(&snapshot_id),
        ["freezeframe:filesystem", "freezeframe-verified"]
    );
    // An offline snapshot's calls: power states by the API's rules, answers as the spec says.
    rt.block_on(power_through_the_proxy(&prism.url, &server.sim));

    // Error answers must agree with the spec too.
    server
        .sim
        .set_faults(vec!["GET /v2/droplets/=401*1".parse::<Fault>().unwrap()]);
    let report = run(&["--name", "contract-2"]);
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("HTTP 401"), "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prism_mock_refuses_a_request_that_breaks_the_spec() {
    // The premise of the tests above: a request that breaks the spec is refused, not answered.
    let spec = spec();
    let prism = Prism::start(&["mock", spec.to_str().unwrap()]);
    let resp = reqwest::Client::new()
        .post(format!("{}/v2/droplets/3164444/actions", prism.url))
        .bearer_auth("dop_v1_contract")
        .json(&serde_json::json!({"type": "explode"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    assert!(resp.headers().contains_key("sl-violations"));
    let client = client_for(&prism.url);
    let err = client.droplet(3164444).await.err();
    assert!(err.is_none(), "a valid request is answered: {err:?}");
}

/// Shutdown, snapshot and power on through the validating proxy, against the simulator: a
/// Droplet powers off when its guest does, is locked while its snapshot runs (a power_on then
/// is refused), and boots again; a guest that ignores the shutdown stays on until power_off.
async fn power_through_the_proxy(url: &str, sim: &Sim) {
    use freezeframe_digitalocean::{ApiError, PowerAction};
    let quick = Duration::from_millis(300);
    sim.set_power(PowerModel {
        shutdown_takes: quick,
        guest_ignores_shutdown: false,
        boot_takes: quick,
    });
    let client = client_for(url);
    let id = 3164444;
    let until = |want: &'static str| {
        let client = &client;
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let droplet = client.droplet(id).await.expect("GET /v2/droplets/{id}");
                if droplet.status == want && !droplet.locked {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "the Droplet never became {want}: {droplet:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let refused = |result: Result<_, ApiError>, why: &str| {
        assert!(
            matches!(&result, Err(ApiError::Status { status: 422, message, .. }) if message.contains(why)),
            "{result:?}"
        );
    };
    until("active").await;
    refused(
        client.droplet_power(id, PowerAction::PowerOn).await,
        "already powered on",
    );
    let action = client
        .droplet_power(id, PowerAction::Shutdown)
        .await
        .expect("POST /v2/droplets/{id}/actions shutdown");
    assert_eq!(action.kind, "shutdown");
    until("off").await;
    refused(
        client.droplet_power(id, PowerAction::Shutdown).await,
        "already powered off",
    );
    // The record of a pending power-on, on the Droplet itself, and taken off.
    let pending = "freezeframe-offline-pending";
    let tagged = || async {
        let listed = client
            .droplets_with_tag(pending)
            .await
            .expect("GET /v2/droplets?tag_name=");
        listed.iter().map(|d| d.id).collect::<Vec<_>>()
    };
    client
        .tag_droplet(pending, id)
        .await
        .expect("POST /v2/tags/{tag}/resources droplet");
    assert_eq!(tagged().await, [id]);
    client
        .untag_droplet(pending, id)
        .await
        .expect("DELETE /v2/tags/{tag}/resources");
    assert!(tagged().await.is_empty());
    client
        .snapshot_droplet(id, "offline-contract", Duration::from_secs(20))
        .await
        .expect("POST /v2/droplets/{id}/actions snapshot");
    refused(
        client.droplet_power(id, PowerAction::PowerOn).await,
        "pending event",
    );
    until("off").await;
    client
        .droplet_power(id, PowerAction::PowerOn)
        .await
        .expect("POST /v2/droplets/{id}/actions power_on");
    until("active").await;

    sim.set_power(PowerModel {
        guest_ignores_shutdown: true,
        ..PowerModel::default()
    });
    let ignored = client
        .droplet_power(id, PowerAction::Shutdown)
        .await
        .expect("shutdown");
    until("active").await;
    let done = client.action(ignored.id).await.expect("GET /v2/actions/{id}");
    assert_eq!(done.status, "completed", "issued, not obeyed: {done:?}");
    client
        .droplet_power(id, PowerAction::PowerOff)
        .await
        .expect("POST /v2/droplets/{id}/actions power_off");
    until("off").await;
    client
        .droplet_power(id, PowerAction::PowerOn)
        .await
        .expect("power_on");
    until("active").await;
    assert_eq!(
        sim.counters().power_actions,
        ["shutdown", "power_on", "shutdown", "power_off", "power_on"]
    );
    // What an offline run's power-on may meet instead (the simulator's power faults), still
    // answered as the spec says: the API's own 500, and 429 with its retry-after.
    sim.set_power_faults(vec![
        "power_on=500*1".parse().unwrap(),
        "power_on=429:1*1".parse().unwrap(),
    ]);
    let refused = client.droplet_power(id, PowerAction::PowerOn).await;
    assert!(
        matches!(&refused, Err(ApiError::Status { status: 500, message, .. }) if message == "Unexpected server-side error"),
        "{refused:?}"
    );
    let limited = client.droplet_power(id, PowerAction::PowerOn).await;
    assert!(
        matches!(&limited, Err(ApiError::RateLimited { retry_after: Some(after), .. }) if after.as_secs() == 1),
        "{limited:?}"
    );
    sim.set_power_faults(Vec::new());
}

/// A restore drill's calls through the validating proxy, against the simulator.
async fn drill_through_the_proxy(url: &str, snapshot_id: &str) {
    use freezeframe_digitalocean::{DropletCreate, VolumeCreate};
    let client = client_for(url);
    let snapshot = client
        .snapshot(snapshot_id)
        .await
        .expect("GET /v2/snapshots/{id}");
    assert_eq!(snapshot.resource_type, "droplet");
    let volumes = client
        .snapshots("volume")
        .await
        .expect("GET /v2/snapshots?resource_type=volume");
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    let sizes = client.sizes().await.expect("GET /v2/sizes");
    let size = sizes
        .iter()
        .find(|s| s.disk >= snapshot.min_disk_size)
        .expect("a size that fits");
    let tags = ["freezeframe-verify".to_string()];
    let request = DropletCreate {
        name: "freezeframe-verify-contract",
        region: &snapshot.regions[0],
        size: &size.slug,
        image: snapshot.id.parse().unwrap(),
        ssh_keys: &[],
        tags: &tags,
        user_data: "#cloud-config\n",
    };
    // Too small a disk for the image: refused, as DigitalOcean does.
    let small = DropletCreate {
        size: "s-1vcpu-512mb-10gb",
        ..request.clone()
    };
    assert!(client.create_droplet(&small).await.is_err());
    let droplet = client.create_droplet(&request).await.expect("POST /v2/droplets");
    let volume = client
        .create_volume(&VolumeCreate {
            name: "freezeframe-verify-data",
            size_gigabytes: 10,
            region: &snapshot.regions[0],
            snapshot_id: &volumes[0].id,
            tags: &tags,
        })
        .await
        .expect("POST /v2/volumes");
    client
        .attach_volume(&volume.id, droplet.id, &snapshot.regions[0])
        .await
        .expect("POST /v2/volumes/{id}/actions");
    client.droplet(droplet.id).await.expect("GET /v2/droplets/{id}");
    assert_eq!(client.volumes().await.expect("GET /v2/volumes").len(), 1);
    // Attached: not deleted until its Droplet is gone.
    assert!(client.delete_volume(&volume.id).await.is_err());
    client
        .tag_snapshot("freezeframe-verified", snapshot_id, false)
        .await
        .expect("POST /v2/tags, POST /v2/tags/{tag}/resources");
    client
        .delete_droplets_tagged("freezeframe-verify")
        .await
        .expect("DELETE /v2/droplets?tag_name=");
    client
        .delete_volume(&volume.id)
        .await
        .expect("DELETE /v2/volumes/{id}");
}
