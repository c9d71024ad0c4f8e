//! End to end on a real systemd: the two .deb packages installed with dpkg in a Debian container
//! booted with systemd-nspawn, PostgreSQL as a systemd unit with its data on a loop-mounted
//! volume, the agent D-Bus activated, and snapshots driven from the host by the `freezeframe`
//! CLI through the remote path (a stand-in for ssh that enters the container). The API is the
//! simulator on the shared loopback, which copies the volume when it registers a snapshot.
//!
//! Run by `tests/e2e/run`, which builds the packages first (it takes minutes). Debian 13 and
//! the programs' glibc: releases.rs, glibc.rs.

mod glibc;
mod releases;

use freezeframe_tests::container::{self, Bind, Container, Release};
use freezeframe_tests::restored::Machines;
use freezeframe_tests::sim::{Capture, SimConfig};
use freezeframe_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "dop_v1_e2e_simulated_token";

/// Writes 1, 2, 3, … inside the container, one command each, counting the writes the
/// database's client reported done.
struct Inserter {
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Inserter {
    /// Inserts into PostgreSQL's `rows`, committed one by one.
    fn start(machine_pid: u32) -> Inserter {
        Inserter::writing(machine_pid, |n| {
            ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-c"]
                .map(String::from)
                .into_iter()
                .chain([format!("INSERT INTO rows VALUES ({n})")])
                .collect()
        })
    }

    /// Runs `write(n)` in the machine for n = 1, 2, 3, … until stopped.
    fn writing(machine_pid: u32, write: impl Fn(u64) -> Vec<String> + Send + 'static) -> Inserter {
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (acked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !s.load(Ordering::SeqCst) {
                n += 1;
                let out = Command::new("nsenter")
                    .args(["-t", &machine_pid.to_string(), "-a", "--"])
                    .args(write(n))
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "write {n}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                a.store(n, Ordering::SeqCst);
            }
        });
        Inserter {
            acked,
            stop,
            thread: Some(thread),
        }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    fn wait_for(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.acked() < n {
            assert!(
                Instant::now() < deadline,
                "the inserter stalled at {}",
                self.acked()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("every INSERT succeeded");
        self.acked()
    }
}

impl Drop for Inserter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A stand-in for `ssh HOST systemd-stdio-bridge` that bridges to the container's system bus.
fn fake_ssh(dir: &Path, machine_pid: u32) -> PathBuf {
    let script = dir.join("ssh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor last; do :; done\n\
             [ \"$last\" = systemd-stdio-bridge ] || {{ echo \"ssh: unexpected $last\" >&2; exit 255; }}\n\
             exec nsenter -t {machine_pid} -a systemd-stdio-bridge\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// The drill's stand-in for ssh: to an address the simulator restored, it "boots" that Droplet
/// inside the container: the files of its disk (copied in: the container may not mount a block
/// device) become /vol in a mount namespace of its own, with a /run/postgresql of its own where
/// PostgreSQL starts from them as its unit would (the live one goes on beside it); then the
/// installed `freezeframe-agent` runs there. Any other address is refused as sshd would.
fn restoring_ssh(dir: &Path, machines: &Path, machine: &Container) -> PathBuf {
    let boot = "set -e\n\
         mount --bind /var/tmp/restored /vol\n\
         mount -t tmpfs tmpfs /run/postgresql\n\
         chown postgres:postgres /run/postgresql\n\
         rm -f /vol/pg/data/postmaster.pid\n\
         v=$(ls /usr/lib/postgresql | sort -n | tail -1)\n\
         runuser -u postgres -- /usr/lib/postgresql/$v/bin/pg_ctl -w -D /vol/pg/data -l /tmp/restored.log \
           -o \"-c config_file=/etc/postgresql/$v/main/postgresql.conf -c listen_addresses=''\" start >/dev/null\n\
         set +e\n\"$@\"; status=$?\n\
         runuser -u postgres -- /usr/lib/postgresql/$v/bin/pg_ctl -D /vol/pg/data stop -m fast >/dev/null\n\
         exit $status\n";
    let inside = "/tmp/boot-restored.sh";
    std::fs::write(format!("/proc/{}/root{inside}", machine.pid), boot).unwrap();
    let script = dir.join("restoring-ssh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             while [ $# -gt 0 ] && [ \"$1\" != -- ]; do shift; done; shift\n\
             ip=${{1#*@}}; shift\n\
             [ -f {machines}/$ip ] || {{ echo \"ssh: connect to host $ip port 22: Connection refused\" >&2; exit 255; }}\n\
             . {machines}/$ip\n\
             files=/proc/{pid}/root/var/tmp/restored; disk_view=$(mktemp -d)\n\
             mount -o loop \"$disk\" $disk_view || exit 255\n\
             rm -rf $files && mkdir $files && cp -a $disk_view/. $files/; copied=$?\n\
             umount $disk_view; rmdir $disk_view; [ $copied = 0 ] || exit 255\n\
             exec nsenter -t {pid} -a unshare -m --propagation private sh {inside} \"$@\"\n",
            machines = machines.display(),
            pid = machine.pid,
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// `apt-get` in the machine, reading only freezeframe's source (the container has no network
/// but loopback).
const APT: &str = "apt-get -q -o Dir::Etc::sourcelist=/etc/apt/sources.list.d/freezeframe.list \
                   -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0";

/// The packages in a signed apt repository (`packaging/build-apt-repo`), served on loopback.
struct AptRepo {
    key: TestKey,
    dir: tempfile::TempDir,
    http: StaticHttp,
}

impl AptRepo {
    fn build(debs: &[PathBuf]) -> AptRepo {
        let dir = tempfile::tempdir().unwrap();
        let repo = AptRepo {
            key: TestKey::new("freezeframe test archive"),
            http: StaticHttp::serve(dir.path()),
            dir,
        };
        repo.publish(debs);
        repo
    }

    /// Puts `debs` in, replacing older versions, and signs it again.
    fn publish(&self, debs: &[PathBuf]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/build-apt-repo");
        let out = Command::new("bash")
            .arg(script)
            .arg(self.dir.path())
            .arg(&self.key.fingerprint)
            .args(debs)
            .env("GNUPGHOME", self.key.home.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "build-apt-repo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The machine's source for this repository, its packages checked with `keyring`.
    fn add_source(&self, machine: &Container, release: Release, keyring: &[u8]) {
        let root = format!("/proc/{}/root", machine.pid);
        std::fs::write(
            format!("{root}/usr/share/keyrings/freezeframe-archive-keyring.gpg"),
            keyring,
        )
        .unwrap();
        std::fs::write(
            format!("{root}/etc/apt/sources.list.d/freezeframe.list"),
            format!(
                "deb [signed-by=/usr/share/keyrings/freezeframe-archive-keyring.gpg] {} {} main\n",
                self.http.url,
                release.codename()
            ),
        )
        .unwrap();
    }
}

/// The units the agent's package installs.
const UNITS: [&str; 4] = [
    "freezeframe-agent.service",
    "freezeframe-snapshot.service",
    "freezeframe-snapshot.timer",
    "freezeframe-drill.service",
];

/// Installs both packages in `machine` (of `release`) from their signed apt repository, as
/// users install them (refused while the keyring lacks the archive's key), and holds the units
/// to that release's systemd: every directive understood, each service sandboxed within the
/// bounds docs/src/installing.md gives, nothing started before the first call.
fn install_from_repository(machine: &Container, release: Release, debs: &[PathBuf]) -> AptRepo {
    let repo = AptRepo::build(debs);
    repo.add_source(machine, release, &TestKey::new("someone else").keyring());
    let refused = machine.exec(&["sh", "-c", &format!("{APT} update 2>&1")]);
    let said = String::from_utf8_lossy(&refused.stdout);
    // apt's gpgv says NO_PUBKEY (Debian 12), its sqv "Missing key" (Debian 13).
    assert!(
        !refused.status.success() && (said.contains("NO_PUBKEY") || said.contains("Missing key")),
        "{said}"
    );
    repo.add_source(machine, release, &repo.key.keyring());
    machine.sh(&format!(
        "{APT} update && DEBIAN_FRONTEND=noninteractive {APT} install -y --no-install-recommends freezeframe-agent"
    ));
    assert_eq!(
        machine.sh("dpkg-query -W -f='${Package} ${Version}\\n' freezeframe freezeframe-agent"),
        "freezeframe 0.1.0-1\nfreezeframe-agent 0.1.0-1",
        "the agent's dependency came with it"
    );
    machine.sh("getent group freezeframe");
    let systemd = machine.sh("systemctl --version | head -1");
    assert!(
        systemd.starts_with(&format!("systemd {} ", release.systemd())),
        "{release:?} runs {systemd}"
    );
    // Every directive of every unit is one this systemd knows; a directive it does not know
    // (planted in a drop-in) is seen, so the check can fail.
    let misread = not_understood(machine);
    assert!(misread.is_empty(), "{systemd}: {misread:#?}");
    machine.sh(
        "mkdir -p /run/systemd/system/freezeframe-agent.service.d && \
         printf '[Service]\\nFreezeframeCanary=yes\\n' > /run/systemd/system/freezeframe-agent.service.d/canary.conf",
    );
    let planted = not_understood(machine);
    machine.sh("rm -r /run/systemd/system/freezeframe-agent.service.d && systemctl daemon-reload");
    assert!(
        planted.iter().any(|l| l.contains("FreezeframeCanary")),
        "an unknown directive went unseen: {planted:#?}"
    );
    // Each unit is sandboxed as docs/src/installing.md says: systemd's own rating.
    for (unit, limit) in [
        ("freezeframe-agent.service", 4.0),
        ("freezeframe-snapshot.service", 2.0),
        ("freezeframe-drill.service", 2.0),
    ] {
        let rating = machine.sh(&format!("systemd-analyze security --no-pager {unit} | tail -1"));
        let exposure: f64 = rating
            .rsplit(": ")
            .next()
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in {rating:?}"));
        eprintln!("{systemd}: systemd-analyze security: {unit}: {exposure}");
        assert!(exposure <= limit, "{systemd}: {unit}: {rating}");
    }
    assert_eq!(
        machine.unit_property("freezeframe-agent", "ActiveState"),
        "inactive"
    );
    assert_eq!(
        machine.sh("systemctl is-enabled freezeframe-snapshot.timer || true"),
        "disabled"
    );
    repo
}

/// What the machine's systemd says it did not understand in the packaged units: the lines of
/// `systemd-analyze verify` and of the journal since a reload that name a unit, key or section
/// it ignored.
fn not_understood(machine: &Container) -> Vec<String> {
    machine.sh("systemctl daemon-reload");
    let verify = machine.exec(
        &["systemd-analyze", "verify", "--man=no"]
            .into_iter()
            .chain(UNITS)
            .collect::<Vec<_>>(),
    );
    let journal = machine.sh("journalctl -b -o cat --no-pager _PID=1 | grep -i freezeframe || true");
    let said = format!(
        "{}{}{journal}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let mut misread: Vec<String> = said
        .lines()
        .filter(|l| {
            ["unknown", "ignoring", "unsupported", "invalid"]
                .iter()
                .any(|w| l.to_lowercase().contains(w))
        })
        .map(str::to_string)
        .collect();
    if !verify.status.success() {
        misread.push(format!(
            "systemd-analyze verify failed ({}): {said}",
            verify.status
        ));
    }
    misread.dedup();
    misread
}

/// `deb` again as version `version`: a newer build of the same package, in `dir`.
fn rebuilt(deb: &Path, version: &str, dir: &Path) -> PathBuf {
    let tree = tempfile::tempdir().unwrap();
    run(
        "dpkg-deb",
        &["-R", deb.to_str().unwrap(), tree.path().to_str().unwrap()],
    );
    let control = tree.path().join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).unwrap();
    let package = text
        .lines()
        .find_map(|l| l.strip_prefix("Package: "))
        .unwrap()
        .to_string();
    let text: String = text
        .lines()
        .map(|l| match l.strip_prefix("Version: ") {
            Some(_) => format!("Version: {version}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&control, text).unwrap();
    let out = dir.join(format!("{package}_{version}_amd64.deb"));
    run(
        "dpkg-deb",
        &[
            "--root-owner-group",
            "-Zxz",
            "-b",
            tree.path().to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    out
}

/// Waits until the agent in `machine` says it is frozen, in the run `cli` asked for.
fn wait_frozen(machine: &Container, cli: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !machine
        .unit_property("freezeframe-agent", "StatusText")
        .contains("frozen")
    {
        if let Some(status) = cli.try_wait().unwrap() {
            panic!(
                "the snapshot ended ({status}) before it was seen frozen: {}",
                cli.wait_with_output_ref()
            );
        }
        assert!(Instant::now() < deadline, "the snapshot never froze");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn debs() -> Vec<PathBuf> {
    let dir = std::env::var_os("FREEZEFRAME_DEBS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian"));
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "no packages in {}: {e} (tests/e2e/run builds them)",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort();
    assert_eq!(
        debs.len(),
        2,
        "freezeframe and freezeframe-agent in {}",
        dir.display()
    );
    debs
}

/// The simulator for a Droplet named `name` whose disk is `volume`, its images in the
/// volume's scratch folder.
fn simulated_droplet(volume: &ScratchFs, id: u64, name: &str) -> SimServer {
    let images = volume.dir.path().join("sim-images");
    std::fs::create_dir_all(&images).unwrap();
    SimServer::start(SimConfig {
        token: TOKEN.into(),
        droplet_id: id,
        droplet_name: name.into(),
        disk: Some(volume.device.clone().into()),
        image_dir: images,
        action_delay: Duration::from_secs(1),
        capture: Capture::Registration,
        latency: Duration::from_millis(100),
        faults: Vec::new(),
        volumes: Vec::new(),
        fleet: Vec::new(),
        rate_limit: None,
    })
}

/// A copy of the simulator's image of snapshot `name` (the volume), mounted under `dir`.
fn restored_copy(sim: &SimServer, name: &str, dir: &Path) -> LoopFs {
    let image = sim
        .sim
        .images()
        .remove(name)
        .expect("the simulator copied the volume");
    let copy = dir.join("restored.img");
    run(
        "cp",
        &["--sparse=always", image.to_str().unwrap(), copy.to_str().unwrap()],
    );
    LoopFs::attach(Fs::Ext4, copy, &dir.join("restored")).expect("mount the restored copy")
}

/// Starts the PostgreSQL of this machine on a data directory restored from the image and
/// counts the rows numbered up to `acked`.
fn count_restored_rows(data: &Path, sockets: &Path, acked: u64) -> u64 {
    // The cluster's configuration lived in the container's /etc; the copy gets a minimal one,
    // and this machine's postgres user (another uid than the container's) owns the files.
    std::fs::write(data.join("postgresql.conf"), "").unwrap();
    std::fs::write(data.join("pg_hba.conf"), "local all all trust\n").unwrap();
    std::fs::write(data.join("pg_ident.conf"), "").unwrap();
    run("chown", &["-R", "postgres:postgres", data.to_str().unwrap()]);
    let server = PgServer::restart(data, sockets);
    server
        .sql(&format!("SELECT count(*) FROM rows WHERE n <= {acked}"))
        .parse()
        .unwrap_or(0)
}

#[test]
#[ignore = "run by tests/e2e/run, which builds the packages first"]
fn the_packages_install_snapshot_postgresql_under_load_and_purge_cleanly() {
    if let Some(why) = container::unavailable() {
        eprintln!("SKIPPED the end-to-end test: {why}");
        return;
    }
    let debs = debs();
    let volume = scratch_fs_sized(Fs::Ext4, 256);
    let dir = volume.dir.path();
    let sim = simulated_droplet(&volume, 3164444, "e2e-droplet");
    let debs_dir = debs[0].parent().unwrap().to_path_buf();
    let root = container::debian_root(&["postgresql", "openssh-client"]);
    let machine = Container::boot(
        &root,
        &[
            Bind {
                host: &volume.mountpoint,
                inside: "/vol",
                read_only: false,
            },
            Bind {
                host: &debs_dir,
                inside: "/debs",
                read_only: true,
            },
        ],
    );

    let repo = install_from_repository(&machine, Release::Bookworm, &debs);
    machine.sh(&format!("echo {TOKEN} | freezeframe-agent setup-token"));
    assert_eq!(machine.sh("stat -c %a /etc/freezeframe/token"), "600");
    machine.sh(&format!(
        "printf '[freeze]\\nmountpoints = [\"/vol\"]\\n[digitalocean]\\napi_url = \"{0}\"\\nmetadata_url = \"{0}\"\\n' \
         > /etc/freezeframe/config.d/e2e.toml",
        sim.url
    ));

    // PostgreSQL as a systemd unit, its data (and WAL) on the volume.
    machine.sh(
        "v=$(ls /usr/lib/postgresql | sort -n | tail -1) && pg_dropcluster --stop $v main && \
         install -d -o postgres -g postgres /vol/pg && pg_createcluster -d /vol/pg/data $v main && \
         systemctl start postgresql@$v-main && \
         runuser -u postgres -- psql -X -q -c 'CREATE TABLE rows (n bigint PRIMARY KEY)'",
    );
    let inserter = Inserter::start(machine.pid);
    inserter.wait_for(20);

    // The first call, from the host over the "ssh" path, activates the agent through D-Bus.
    let ssh = fake_ssh(dir, machine.pid);
    let cli = |args: &[&str]| {
        Command::new(cli_bin())
            .args(["--ssh-command", ssh.to_str().unwrap(), "-H", "root@droplet"])
            .args(args)
            .output()
            .unwrap()
    };
    let acked_before = inserter.acked();
    let out = cli(&["snapshot", "--json", "--wait", "--name", "e2e-1"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert_eq!(report["consistency"], "application", "{report:#}");
    let quiescers: Vec<&str> = report["quiescers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert!(
        quiescers.iter().any(|q| q.starts_with("postgresql (postgresql@")),
        "PostgreSQL detected with no configuration: {quiescers:?}"
    );
    assert_eq!(
        machine.unit_property("freezeframe-agent", "ActiveState"),
        "active"
    );
    let journal = machine.sh("journalctl -u freezeframe-agent -o verbose --no-pager");
    assert!(
        journal.contains("JOB=1") && journal.contains("ACTION_ID="),
        "{journal}"
    );
    inserter.wait_for(inserter.acked() + 5);
    let total = inserter.stop();
    assert!(total > acked_before);

    // PostgreSQL starts on a copy of the captured volume with every row committed before.
    let restored = restored_copy(&sim, "e2e-1", dir);
    let present = count_restored_rows(&restored.path("pg/data"), &dir.join("pg-sockets"), acked_before);
    drop(restored);
    assert_eq!(
        present, acked_before,
        "every row committed before the snapshot is in it"
    );

    // A restore drill of that snapshot, verified by the installed agent on the restored machine.
    let machines = dir.join("machines");
    let _watch = Machines::watch(sim.sim.clone(), &machines, 0);
    let drill_ssh = restoring_ssh(dir, &machines, &machine);
    let out = Command::new(cli_bin())
        .args(["--api-url", &sim.url, "--ssh-command"])
        .arg(&drill_ssh)
        .args(["--json", "verify", "e2e-1", "--yes"])
        .env("DIGITALOCEAN_TOKEN", TOKEN)
        .output()
        .unwrap();
    let drilled: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{drilled:#}");
    let found = &drilled["verification"];
    assert_eq!(found["probe"], "inside-window", "{found:#}");
    // PostgreSQL was found through systemd, not configured: the snapshot's marker named it.
    let pg = &found["databases"][0];
    assert_eq!(pg["kind"], "postgresql", "{found:#}");
    assert_eq!(pg["ok"], true, "{found:#}");
    let rows = pg["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "postgres.public.rows")
        .and_then(|t| t["rows"].as_u64())
        .unwrap_or_else(|| panic!("no rows counted: {pg:#}"));
    assert!(rows >= acked_before, "{pg:#}");
    assert!(
        rows < total,
        "the restored PostgreSQL was checked, not the live one: {pg:#}"
    );
    assert!(
        sim.sim.restored_machines().is_empty(),
        "the drill left its Droplet"
    );

    // The sandboxed agent keeps its record of the run, root's alone.
    assert_eq!(machine.sh("stat -c %a /var/lib/freezeframe/history.json"), "600");

    // The scheduled snapshot: one command enables the timer; its service runs the CLI against
    // the agent on the container's own system bus. node_exporter's textfile directory exists
    // (as prometheus-node-exporter makes it): the agent's metrics land there.
    machine.sh("install -d /var/lib/prometheus/node-exporter");
    machine.sh("systemctl enable --now freezeframe-snapshot.timer");
    assert_eq!(
        machine.sh("systemctl is-enabled freezeframe-snapshot.timer"),
        "enabled"
    );
    machine.sh(
        "systemctl start freezeframe-snapshot.service || \
         { journalctl -u freezeframe-snapshot.service -u freezeframe-agent.service --no-pager -n 40; false; }",
    );
    assert_eq!(
        machine.unit_property("freezeframe-snapshot.service", "Result"),
        "success"
    );
    assert!(machine
        .sh("journalctl -u freezeframe-snapshot.service --no-pager")
        .contains("succeeded"));
    let metrics = machine.sh("cat /var/lib/prometheus/node-exporter/freezeframe.prom");
    assert!(
        metrics.contains("freezeframe_runs_total{droplet=\"3164444\",result=\"succeeded\"} 2"),
        "{metrics}"
    );
    assert_eq!(
        machine.sh("stat -c %a /var/lib/prometheus/node-exporter/freezeframe.prom"),
        "644",
        "readable by node_exporter's user"
    );
    // Its success starts the restore drill's unit, which does nothing while verify.schedule is
    // off (the default), and says so.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !machine
        .sh("journalctl -u freezeframe-drill.service --no-pager")
        .contains("scheduled restore drills are off")
    {
        assert!(
            Instant::now() < deadline,
            "the drill unit did not run after the snapshot: {}",
            machine.sh("systemctl status freezeframe-drill.service --no-pager || true")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        machine.unit_property("freezeframe-drill.service", "Result"),
        "success"
    );

    // An upgrade from the repository to a newer build, while a snapshot is frozen: the edited
    // configuration stays, the running agent is not restarted, and the snapshot completes.
    machine.sh("echo '# edited by the administrator' >> /etc/freezeframe/config.toml");
    let agent_pid = machine.unit_property("freezeframe-agent", "MainPID");
    let newer = tempfile::tempdir().unwrap();
    repo.publish(
        &debs
            .iter()
            .map(|d| rebuilt(d, "0.1.0-2", newer.path()))
            .collect::<Vec<_>>(),
    );
    sim.sim
        .set_faults(vec!["POST /v2/droplets/=latency:3000".parse().unwrap()]);
    let mut running = Command::new(cli_bin())
        .args(["--ssh-command", ssh.to_str().unwrap(), "-H", "root@droplet"])
        .args(["snapshot", "--json", "--wait", "--name", "e2e-upgrade"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_frozen(&machine, &mut running);
    machine.sh(&format!(
        "{APT} update && DEBIAN_FRONTEND=noninteractive {APT} install -y --only-upgrade freezeframe-agent freezeframe"
    ));
    let out = running.wait_with_output().unwrap();
    sim.sim.set_faults(Vec::new());
    let upgraded_during: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(upgraded_during["status"], "succeeded", "{upgraded_during:#}");
    assert_eq!(
        upgraded_during["consistency"], "application",
        "{upgraded_during:#}"
    );
    assert_eq!(
        machine.sh("dpkg-query -W -f='${Version}' freezeframe-agent"),
        "0.1.0-2"
    );
    assert!(machine
        .sh("cat /etc/freezeframe/config.toml")
        .contains("# edited by the administrator"));
    assert_eq!(machine.unit_property("freezeframe-agent", "MainPID"), agent_pid);

    // `systemctl stop` in the middle of a freeze leaves nothing frozen.
    sim.sim
        .set_faults(vec!["POST /v2/droplets/=latency:8000".parse().unwrap()]);
    let mut pending = Command::new(cli_bin())
        .args(["--ssh-command", ssh.to_str().unwrap(), "-H", "root@droplet"])
        .args(["snapshot", "--json", "--name", "e2e-2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_frozen(&machine, &mut pending);
    machine.sh("systemctl stop freezeframe-agent");
    machine.sh("timeout 10 sh -c 'echo thawed >> /vol/probe && sync /vol/probe'");
    machine.sh("test ! -e /run/freezeframe/frozen.json");
    let _ = pending.kill();
    let _ = pending.wait();
    sim.sim.set_faults(Vec::new());

    // Purge leaves no agent, no unit and none of the package's configuration behind (the
    // administrator's own drop-in stays, as dpkg leaves files it did not install).
    machine.sh("dpkg --purge freezeframe-agent freezeframe");
    machine.sh(
        "test ! -e /etc/freezeframe/config.toml && test ! -e /etc/freezeframe/token && \
         test ! -e /etc/freezeframe/hooks.d && test -e /etc/freezeframe/config.d/e2e.toml && \
         test ! -e /usr/bin/freezeframe-agent && test ! -e /usr/bin/freezeframe",
    );
    machine.sh("! grep -qa '[f]reezeframe-agent' /proc/[0-9]*/cmdline");
    machine.sh("! systemctl cat freezeframe-agent.service >/dev/null 2>&1");
    drop(machine);
}

/// The Droplet's machine for an offline snapshot: the container, whose power button the
/// simulator's `shutdown` presses and whose `power_on` boots it again on the same disks (its
/// kept overlay, the volume). The stand-in for ssh reaches whatever runs now through `pid_file`,
/// which is absent while the machine is off (ssh then fails as for a host that is down).
struct PoweredContainer {
    root: PathBuf,
    kept: PathBuf,
    volume: PathBuf,
    debs: PathBuf,
    pid_file: PathBuf,
    machine: std::sync::Mutex<Option<Container>>,
}

impl PoweredContainer {
    fn boot(&self) {
        let machine = Container::boot_kept(
            &self.root,
            &self.kept,
            &[
                Bind {
                    host: &self.volume,
                    inside: "/vol",
                    read_only: false,
                },
                Bind {
                    host: &self.debs,
                    inside: "/debs",
                    read_only: true,
                },
            ],
        );
        std::fs::write(&self.pid_file, machine.pid.to_string()).unwrap();
        *self.machine.lock().unwrap() = Some(machine);
    }

    /// Runs `script` in the machine, which must be on.
    fn sh(&self, script: &str) -> String {
        self.machine
            .lock()
            .unwrap()
            .as_ref()
            .expect("the machine is on")
            .sh(script)
    }

    fn off(&self, machine: Container) {
        let _ = std::fs::remove_file(&self.pid_file);
        drop(machine);
        // The last thing a real machine does before the power goes: its disks are flushed. This
        // machine's kernel holds the volume's pages for the container.
        run("sync", &["-f", self.volume.to_str().unwrap()]);
    }
}

impl freezeframe_tests::sim::Guest for PoweredContainer {
    fn shutdown(&self) -> bool {
        let mut slot = self.machine.lock().unwrap();
        let Some(machine) = slot.as_mut() else {
            return true;
        };
        machine.press_power_button();
        if !machine.stopped_within(Duration::from_secs(120)) {
            return false;
        }
        let machine = slot.take().unwrap();
        self.off(machine);
        true
    }

    fn power_off(&self) {
        if let Some(machine) = self.machine.lock().unwrap().take() {
            self.off(machine);
        }
    }

    fn power_on(&self) {
        self.boot();
    }
}

/// Powers the machine off when the test ends, however it ends (the simulator holds it too).
struct PowerCord(Arc<PoweredContainer>);

impl Drop for PowerCord {
    fn drop(&mut self) {
        drop(self.0.machine.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}

/// A stand-in for `ssh HOST systemd-stdio-bridge` to whichever machine `pid_file` names.
fn ssh_to_machine(dir: &Path, pid_file: &Path) -> PathBuf {
    let script = dir.join("ssh-powered");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor last; do :; done\n\
             [ \"$last\" = systemd-stdio-bridge ] || {{ echo \"ssh: unexpected $last\" >&2; exit 255; }}\n\
             pid=$(cat {0} 2>/dev/null) || {{ echo 'ssh: connect to host droplet port 22: No route to host' >&2; exit 255; }}\n\
             exec nsenter -t \"$pid\" -a systemd-stdio-bridge\n",
            pid_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
#[ignore = "run by tests/e2e/run, which builds the packages first"]
fn an_offline_snapshot_shuts_the_machine_down_cleanly_and_boots_it_again() {
    if let Some(why) = container::unavailable() {
        eprintln!("SKIPPED the offline end-to-end test: {why}");
        return;
    }
    let debs = debs();
    let volume = scratch_fs_sized(Fs::Ext4, 256);
    let dir = volume.dir.path();
    let sim = simulated_droplet(&volume, 3164445, "offline-droplet");
    let kept = tempfile::Builder::new()
        .prefix("freezeframe-test-machine-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let machine = Arc::new(PoweredContainer {
        root: container::debian_root(&["postgresql", "openssh-client"]),
        kept: kept.path().to_path_buf(),
        volume: volume.mountpoint.clone(),
        debs: debs[0].parent().unwrap().to_path_buf(),
        pid_file: dir.join("machine.pid"),
        machine: std::sync::Mutex::new(None),
    });
    let _cord = PowerCord(machine.clone());
    machine.boot();
    let names: Vec<String> = debs
        .iter()
        .map(|d| format!("/debs/{}", d.file_name().unwrap().to_string_lossy()))
        .collect();
    machine.sh(&format!("dpkg -i {}", names.join(" ")));
    machine.sh(&format!("echo {TOKEN} | freezeframe-agent setup-token"));
    machine.sh(&format!(
        "printf '[snapshot]\\nstrategy = \"offline\"\\n[freeze]\\nmountpoints = [\"/vol\"]\\n\
         [digitalocean]\\napi_url = \"{0}\"\\nmetadata_url = \"{0}\"\\n' > /etc/freezeframe/config.d/e2e.toml",
        sim.url
    ));
    // PostgreSQL as a systemd unit, enabled as Debian enables it, its data on the volume.
    machine.sh(
        "v=$(ls /usr/lib/postgresql | sort -n | tail -1) && pg_dropcluster --stop $v main && \
         install -d -o postgres -g postgres /vol/pg && pg_createcluster -d /vol/pg/data $v main && \
         systemctl enable --now postgresql@$v-main && \
         runuser -u postgres -- psql -X -q -c 'CREATE TABLE rows (n bigint PRIMARY KEY)' \
           -c 'INSERT INTO rows SELECT generate_series(1, 1000)'",
    );
    sim.sim.set_guest(machine.clone());

    let ssh = ssh_to_machine(dir, &machine.pid_file);
    let out = Command::new(cli_bin())
        .args(["--api-url", &sim.url, "--ssh-command"])
        .arg(&ssh)
        .args(["-H", "root@offline-droplet", "--json", "snapshot", "--offline"])
        .args(["--name", "e2e-offline", "--shutdown-timeout", "2m"])
        .env("DIGITALOCEAN_TOKEN", TOKEN)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("the offline run: {report:#}");
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["consistency"], "offline", "{report:#}");
    assert_eq!(report["hard_power_off"], false, "{report:#}");
    assert!(
        report["databases"].to_string().contains("postgresql"),
        "the agent said what the shutdown stops: {report:#}"
    );
    assert_eq!(report["running"], true, "{report:#}");
    assert!(
        report["agent_downtime_ms"].as_f64().is_some(),
        "the run waited for the agent to answer again: {report:#}"
    );
    assert_eq!(
        sim.sim.counters().power_actions,
        ["shutdown", "power_on"],
        "a clean shutdown, no power cut"
    );

    // The power button reached systemd: PostgreSQL was stopped as a unit is at poweroff, with
    // its shutdown checkpoint, and it runs again after the boot.
    let log = machine.sh("cat /var/log/postgresql/postgresql-*-main.log");
    assert!(
        log.contains("received fast shutdown request") && log.contains("database system is shut down"),
        "{log}"
    );
    assert!(log.contains("checkpoint starting: shutdown"), "{log}");
    machine.sh("systemctl is-active postgresql@$(ls /usr/lib/postgresql | sort -n | tail -1)-main");
    assert_eq!(
        machine.sh("runuser -u postgres -- psql -X -A -t -c 'SELECT count(*) FROM rows'"),
        "1000"
    );

    // The image holds a cluster that was shut down cleanly: it starts with no recovery.
    let restored = restored_copy(&sim, "e2e-offline", dir);
    let control = Command::new("sh")
        .arg("-c")
        .arg("v=$(ls /usr/lib/postgresql | sort -n | tail -1) && /usr/lib/postgresql/$v/bin/pg_controldata \"$1\"")
        .arg("sh")
        .arg(restored.path("pg/data"))
        .output()
        .unwrap();
    let control = String::from_utf8_lossy(&control.stdout);
    assert!(
        control
            .lines()
            .any(|l| l.starts_with("Database cluster state:") && l.ends_with(" shut down")),
        "{control}"
    );
    let present = count_restored_rows(&restored.path("pg/data"), &dir.join("pg-sockets"), 1000);
    drop(restored);
    assert_eq!(present, 1000, "every row is in the offline snapshot");
}
