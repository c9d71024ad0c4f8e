//! A Droplet for tests of the `digitalocean` provider: a loop filesystem as its disk (and one
//! as an attached volume), the API simulator on loopback, a token file and the agent's config.

use freezeframe_tests::sim::{Capture, RateLimit, SimConfig, SimVolume};
use freezeframe_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

pub(crate) const TOKEN: &str = "dop_v1_simulated_secret_token";

/// Fields drop in order: the simulator and the filesystems go before their scratch folder.
pub(crate) struct Droplet {
    pub(crate) server: SimServer,
    pub(crate) volume: Option<LoopFs>,
    pub(crate) disk: LoopFs,
    pub(crate) config: PathBuf,
    pub(crate) images: PathBuf,
    pub(crate) dir: tempfile::TempDir,
}

impl Droplet {
    /// A loop filesystem as the Droplet's disk, the simulator, a token file and a config.
    pub(crate) fn new(action_delay: Duration, extra_config: &str) -> Droplet {
        Droplet::build(action_delay, extra_config, None, Capture::Registration)
    }

    /// A Droplet whose disk the simulator reads only as the snapshot action completes.
    pub(crate) fn capturing_at(capture: Capture, action_delay: Duration) -> Droplet {
        Droplet::build(action_delay, "", None, capture)
    }

    /// With a volume named `data` attached (an xfs loop filesystem), frozen if `freeze_it`.
    pub(crate) fn with_volume(action_delay: Duration, extra_config: &str, freeze_it: bool) -> Droplet {
        Droplet::build(action_delay, extra_config, Some(freeze_it), Capture::Registration)
    }

    /// With a volume named `data` of `volume_mib` MiB, frozen, and the disk read at `capture`
    /// (the action completing after `action_delay`): room on the volume for a database.
    pub(crate) fn with_database_volume(capture: Capture, action_delay: Duration, volume_mib: u64) -> Droplet {
        Droplet::build_sized(action_delay, "", Some(true), capture, volume_mib)
    }

    fn build(action_delay: Duration, extra_config: &str, volume: Option<bool>, capture: Capture) -> Droplet {
        Droplet::build_sized(action_delay, extra_config, volume, capture, 64)
    }

    fn build_sized(
        action_delay: Duration,
        extra_config: &str,
        volume: Option<bool>,
        capture: Capture,
        volume_mib: u64,
    ) -> Droplet {
        Droplet::build_with(
            action_delay,
            extra_config,
            volume,
            Some(capture),
            volume_mib,
            None,
        )
    }

    /// One of a fleet whose simulators share the token's `rate_limit`; its disk is not read
    /// (there are many, and the test is about the API).
    pub(crate) fn in_fleet(rate_limit: std::sync::Arc<RateLimit>) -> Droplet {
        Droplet::build_with(Duration::from_millis(100), "", None, None, 64, Some(rate_limit))
    }

    fn build_with(
        action_delay: Duration,
        extra_config: &str,
        volume: Option<bool>,
        capture: Option<Capture>,
        volume_mib: u64,
        rate_limit: Option<std::sync::Arc<RateLimit>>,
    ) -> Droplet {
        let dir = scratch();
        let disk = loop_fs(
            Fs::Ext4,
            64,
            &dir.path().join("disk.img"),
            &dir.path().join("disk"),
        );
        let volume = volume.map(|frozen| (volume_fs(dir.path(), volume_mib), frozen));
        let images = dir.path().join("sim-images");
        std::fs::create_dir_all(&images).unwrap();
        let server = SimServer::start(SimConfig {
            token: TOKEN.into(),
            droplet_id: 3164444,
            droplet_name: "web-1".into(),
            disk: capture.map(|_| disk.device.clone().into()),
            image_dir: images.clone(),
            action_delay,
            capture: capture.unwrap_or(Capture::Registration),
            latency: Duration::ZERO,
            faults: Vec::new(),
            volumes: volume
                .iter()
                .map(|(fs, _)| SimVolume {
                    id: "506f78a4-e098-11e5-ad9f-000f53306ae1".into(),
                    name: "data".into(),
                    device: fs.device.clone().into(),
                })
                .collect(),
            fleet: Vec::new(),
            rate_limit,
        });
        let token = dir.path().join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut mountpoints = vec![format!("{:?}", disk.mountpoint.display().to_string())];
        if let Some((fs, true)) = &volume {
            mountpoints.push(format!("{:?}", fs.mountpoint.display().to_string()));
        }
        let config = dir.path().join("etc/config.toml");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(
            &config,
            format!(
                "{kept}[agent]\nruntime_dir = {:?}\n[freeze]\nmountpoints = [{}]\nmax_freeze = \"5s\"\n\
                 [quiesce]\nhooks_dir = {:?}\n\
                 [digitalocean]\napi_url = {:?}\nmetadata_url = {:?}\ntoken_file = {:?}\nvolume_links = {:?}\n\
                 {extra_config}",
                dir.path().join("run").display().to_string(),
                mountpoints.join(", "),
                dir.path().join("etc/hooks.d").display().to_string(),
                server.url,
                server.url,
                token.display().to_string(),
                dir.path().join("by-id").display().to_string(),
                kept = kept_here(dir.path()),
            ),
        )
        .unwrap();
        Droplet {
            dir,
            disk,
            volume: volume.map(|(fs, _)| fs),
            server,
            config,
            images,
        }
    }

    pub(crate) fn agent(&self) -> Command {
        let mut cmd = Command::new(agent_bin());
        cmd.arg("--config")
            .arg(&self.config)
            .env_remove("DIGITALOCEAN_TOKEN");
        cmd
    }

    pub(crate) fn snapshot(&self, args: &[&str]) -> (Output, serde_json::Value) {
        let out = self
            .agent()
            .args(["snapshot", "--json"])
            .args(args)
            .output()
            .unwrap();
        let report = report_of(&out);
        (out, report)
    }
}

pub(crate) fn report_of(out: &Output) -> serde_json::Value {
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(TOKEN)
            && !String::from_utf8_lossy(&out.stderr).contains(TOKEN),
        "the token leaked into the output"
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
