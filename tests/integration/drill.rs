//! Restore drills (`freezeframe verify SNAPSHOT`) against the simulator: a snapshot of a
//! Droplet whose volume holds PostgreSQL, restored by the simulator on a Droplet of its own,
//! reached through a stand-in for ssh that gives the agent a machine whose filesystems are the
//! restored disk's (a mount namespace with the restored disk where the original was) and the
//! restored volume attached, not mounted, as on DigitalOcean.

use crate::droplet::{Droplet, TOKEN};
use freezeframe_tests::bus::PrivateBus;
use freezeframe_tests::restored::Machines;
use freezeframe_tests::sim::{Capture, SimConfig};
use freezeframe_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A Droplet with PostgreSQL on its volume, 200 rows in, snapshotted and completed as `name`;
/// PostgreSQL stopped again. The disk is read at `capture`: at completion, well after the thaw
/// (the volume's snapshot, a copy of all of it here, holds the window open a while).
fn snapshotted(capture: Capture, name: &str) -> Droplet {
    let delay = match capture {
        Capture::Registration => Duration::from_millis(300),
        Capture::Completion => Duration::from_secs(4),
        // The journal (16 MiB into the 64 MiB disk) is read a quarter of the way through: well
        // after the thaw even on a loaded machine, where the volume's copy inside the window
        // takes seconds. Read before the thaw, nothing on the disk could tell.
        Capture::PartWay => Duration::from_secs(16),
    };
    let droplet = Droplet::with_database_volume(capture, delay, 300);
    let volume = droplet.volume.as_ref().unwrap();
    let pg = PgServer::start(&volume.path("pg/data"), &droplet.dir.path().join("pg-run"), true);
    pg.sql("CREATE TABLE rows AS SELECT n::bigint FROM generate_series(1, 200) n");
    let mut config = std::fs::read_to_string(&droplet.config).unwrap();
    config.push_str(&format!(
        "\n[[quiescer]]\nkind = \"postgresql\"\nsocket_dir = {:?}\n",
        pg.sockets.display().to_string()
    ));
    std::fs::write(&droplet.config, config).unwrap();
    let (_, report) = droplet.snapshot(&["--wait", "--name", name]);
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert_eq!(report["consistency"], "application", "{report:#}");
    drop(pg);
    droplet
}

/// The stand-in for ssh: to an address the simulator restored, it "boots" the machine (a
/// private mount namespace: the restored disk mounted where the Droplet's disk was, the
/// original volume gone, each restored volume on a read-only loop device linked by name as
/// udev would) and runs the remote `freezeframe-agent` command there, with the machine's
/// config; any other address is refused as sshd would before it is up. The host presents the
/// ed25519 key its user data gave it, as cloud-init installs it (or, where `machines/impostor`
/// exists, the key in that file: another host at the address), and the host key is checked as
/// ssh checks it: against `UserKnownHostsFile` under `HostKeyAlias`, by
/// `StrictHostKeyChecking` (`yes`: an unknown key is refused; `accept-new`: it is added), each
/// option's first value winning, as in OpenSSH.
fn restoring_ssh(droplet: &Droplet, machines: &Path) -> PathBuf {
    let dir = droplet.dir.path();
    let links = dir.join("restored-links");
    let config = dir.join("etc/restored.toml");
    let original = std::fs::read_to_string(&droplet.config).unwrap();
    std::fs::write(
        &config,
        original.replace(
            &format!("volume_links = {:?}", dir.join("by-id").display().to_string()),
            &format!("volume_links = {:?}", links.display().to_string()),
        ),
    )
    .unwrap();
    let boot = dir.join("boot-restored.sh");
    std::fs::write(
        &boot,
        format!(
            "set -e\n. \"$1\"; shift\n{new_boot}\
             dev=$(losetup --find --show \"$disk\"); vdevs=''\n\
             trap 'umount {disk_mp} 2>/dev/null; losetup -d $dev; for v in $vdevs; do losetup -d $v; done' EXIT\n\
             mount \"$dev\" {disk_mp}\n\
             umount -l {volume_mp}\n\
             mkdir -p {links}\n\
             for v in $volumes; do vdev=$(losetup --find --show --read-only \"${{v#*:}}\"); vdevs=\"$vdevs $vdev\"; \
             ln -sfn \"$vdev\" {links}/scsi-0DO_Volume_${{v%%:*}}; done\n\
             set +e\n{agent} --config {config} \"$@\"\n",
            disk_mp = droplet.disk.mountpoint.display(),
            volume_mp = droplet.volume.as_ref().unwrap().mountpoint.display(),
            links = links.display(),
            agent = agent_bin().display(),
            config = config.display(),
            new_boot = NEW_BOOT,
        ),
    )
    .unwrap();
    let ssh = dir.join("ssh");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\necho \"$@\" >> {log}\n\
             env > {env}\n\
             kh=''; strict=''; alias=''\n\
             for a in \"$@\"; do case \"$a\" in UserKnownHostsFile=*) kh=${{kh:-${{a#*=}}}};; \
             StrictHostKeyChecking=*) strict=${{strict:-${{a#*=}}}};; HostKeyAlias=*) alias=${{alias:-${{a#*=}}}};; esac; done\n\
             kh=${{kh:-/dev/null}}; strict=${{strict:-ask}}\n\
             while [ $# -gt 0 ] && [ \"$1\" != -- ]; do shift; done; shift\n\
             ip=${{1#*@}}; shift\n\
             [ -f {machines}/deny ] && {{ echo \"root@$ip: Permission denied (publickey).\" >&2; exit 255; }}\n\
             [ -f {machines}/$ip ] || {{ echo \"ssh: connect to host $ip port 22: Connection refused\" >&2; exit 255; }}\n\
             if [ -f {machines}/impostor ]; then key=$(cat {machines}/impostor); \
             else key=$(sed -n 's/^  ed25519_public: //p' {machines}/$ip.user-data); fi\n\
             [ -n \"$key\" ] || key='ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIThe+image+s+own+key'\n\
             name=${{alias:-$ip}}\n\
             known=$(awk -v n=\"$name\" '$1 == n {{ print $2 \" \" $3 }}' \"$kh\" 2>/dev/null)\n\
             if [ -z \"$known\" ]; then\n\
               if [ \"$strict\" = accept-new ] || [ \"$strict\" = no ]; then echo \"$name $key\" >> \"$kh\";\n\
               else echo \"No ED25519 host key is known for $name and you have requested strict checking.\" >&2; \
             echo 'Host key verification failed.' >&2; exit 255; fi\n\
             elif [ \"$known\" != \"$key\" ]; then\n\
               echo '@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@' >&2\n\
               echo '@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @' >&2\n\
               echo \"Host key for $name has changed and you have requested strict checking.\" >&2\n\
               echo 'Host key verification failed.' >&2; exit 255\n\
             fi\n\
             [ \"$1\" = freezeframe-agent ] || {{ echo \"sh: $1: not found\" >&2; exit 127; }}\n\
             shift\nexec unshare -m --propagation private sh {boot} {machines}/$ip \"$@\"\n",
            log = dir.join("ssh.log").display(),
            env = dir.join("ssh.env").display(),
            machines = machines.display(),
            boot = boot.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    ssh
}

/// `freezeframe verify ARGS --json` against the droplet's simulator, with `ssh`.
fn drill(droplet: &Droplet, ssh: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(cli_bin());
    cmd.args(["--api-url", &droplet.server.url, "--ssh-command"])
        .arg(ssh)
        .args(["--json", "verify"])
        .args(args)
        .env("DIGITALOCEAN_TOKEN", TOKEN);
    cmd
}

fn drill_report(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The simulator's restored Droplets as the stand-in for ssh finds them (with one volume
/// attached), and that ssh; watched until dropped.
struct Restored {
    machines: PathBuf,
    ssh: PathBuf,
    _watch: Machines,
}

impl Restored {
    fn watch(droplet: &Droplet) -> Restored {
        let machines = droplet.dir.path().join("machines");
        let watch = Machines::watch(droplet.server.sim.clone(), &machines, 1);
        let ssh = restoring_ssh(droplet, &machines);
        Restored {
            machines,
            ssh,
            _watch: watch,
        }
    }
}

/// What the restored machine's verify found on the restored disk of `droplet`.
fn restored_disk<'a>(found: &'a serde_json::Value, droplet: &Droplet) -> &'a serde_json::Value {
    let disk = droplet.disk.mountpoint.display().to_string();
    found["filesystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["mountpoint"] == disk.as_str())
        .unwrap_or_else(|| panic!("the restored disk at {disk}: {found:#}"))
}

/// Nothing the drill created is left in the simulator, and no loop device holds its files.
fn nothing_left(droplet: &Droplet) {
    assert!(
        droplet.server.sim.restored_machines().is_empty(),
        "a drill Droplet is left"
    );
    assert!(
        droplet.server.sim.restored_volume_ids().is_empty(),
        "a drill volume is left"
    );
}

#[test]
fn a_drill_restores_the_snapshot_verifies_it_records_it_and_leaves_nothing() {
    let test_started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let droplet = snapshotted(Capture::Registration, "drill-1");
    let restored = Restored::watch(&droplet);
    let (machines, ssh) = (&restored.machines, &restored.ssh);

    let out = drill(&droplet, ssh, &["drill-1", "--yes"]).output().unwrap();
    let report = drill_report(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["verified"], true);
    assert_eq!(report["size"], "s-1vcpu-1gb", "the cheapest size whose disk fits");
    let found = &report["verification"];
    assert_eq!(found["probe"], "inside-window", "{found:#}");
    assert_eq!(found["claimed"], "application");
    let root = restored_disk(found, &droplet);
    assert_eq!(root["markers"], serde_json::json!(["drill-1.before"]));
    // The configuration's PostgreSQL does not run on the restored machine: its data is on the
    // volume, which is attached after the boot, and is checked there.
    let running = found["databases"][0]["checks"].to_string();
    assert!(running.contains("its data is on a restored volume"), "{found:#}");
    // The volume, restored from its snapshot of the same run: PostgreSQL recovers and reads.
    let volume = &found["volumes"][0]["found"];
    assert_eq!(volume["verified"], true, "{volume:#}");
    let pg = &volume["databases"][0];
    assert_eq!(pg["kind"], "postgresql");
    assert_eq!(pg["path"], "/pg/data");
    let rows = pg["tables"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|t| t["table"] == "postgres.public.rows" && t["rows"] == 200),
        "{pg:#}"
    );
    // Recorded on the snapshot, and the restored copy was kept from snapshotting itself.
    // The result, when the drill ran (during this test), and the probe's verdict.
    let recorded: Vec<String> = serde_json::from_value(report["recorded"].clone()).unwrap();
    let drilled_at: u64 = recorded
        .get(1)
        .and_then(|t| t.strip_prefix("freezeframe-drilled:"))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no drill time recorded: {recorded:?}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (test_started..=now).contains(&drilled_at),
        "{drilled_at} is not during this test"
    );
    assert_eq!(
        [recorded[0].as_str(), recorded[2].as_str()],
        ["freezeframe-verified", "freezeframe-probe-inside-window"]
    );
    let id = report["snapshot_id"].as_str().unwrap();
    // After the level its own run recorded on it.
    let mut expected = vec!["freezeframe:application".to_string()];
    expected.extend(recorded);
    assert_eq!(droplet.server.sim.image_tags(id), expected);
    let address = report["address"].as_str().unwrap();
    let user_data = std::fs::read_to_string(machines.join(format!("{address}.user-data"))).unwrap();
    assert!(
        user_data.contains("mask") && user_data.contains("freezeframe-snapshot.timer"),
        "{user_data}"
    );
    assert_eq!(report["left_behind"], serde_json::json!([]));
    nothing_left(&droplet);
    // `freezeframe list` shows the result, from the tags.
    let served = Served::start(&droplet);
    let list: serde_json::Value = serde_json::from_slice(&served.cli(&["--json", "list"]).stdout).unwrap();
    let drilled = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "drill-1")
        .unwrap_or_else(|| panic!("{list:#}"));
    assert_eq!(drilled["drill"], "verified", "{list:#}");
    let text = String::from_utf8_lossy(&served.cli(&["list"]).stdout).into_owned();
    assert!(
        text.contains("RESTORE DRILL") && text.contains("verified"),
        "{text}"
    );
    // And `freezeframe status`, the newest drilled snapshot's.
    let status: serde_json::Value =
        serde_json::from_slice(&served.cli(&["--json", "status"]).stdout).unwrap();
    assert_eq!(status["last_drill"]["name"], "drill-1", "{status:#}");
    assert_eq!(status["last_drill"]["drill"], "verified", "{status:#}");
    let text = String::from_utf8_lossy(&served.cli(&["status"]).stdout).into_owned();
    assert!(
        text.contains("last restore drill: verified of snapshot drill-1"),
        "{text}"
    );
    // An API that does not answer leaves the status standing, said, without waiting on it.
    droplet
        .server
        .sim
        .set_faults(vec!["GET /v2/=hang".parse().unwrap()]);
    let out = served.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("restore drills: unknown") && text.contains("did not list them within 5s"),
        "{text}"
    );
}

/// As the attacker: another host at the restored Droplet's address (or a restored copy that
/// kept the image's own host key). The drill pinned the key it gave the Droplet: ssh refuses
/// the host before logging in, the drill fails saying so, trusts and records nothing, and
/// destroys what it made. The private key it made is in the user data only: never in what the
/// drill says, and gone from the machine afterwards; the ssh it ran forwarded nothing and
/// carried no token.
#[test]
fn a_host_answering_with_another_key_fails_the_drill_and_leaves_nothing() {
    let droplet = snapshotted(Capture::Registration, "impostor-1");
    let restored = Restored::watch(&droplet);
    std::fs::write(
        restored.machines.join("impostor"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIImpostor+host+key",
    )
    .unwrap();
    let tmp = droplet.dir.path().join("drill-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = drill(&droplet, &restored.ssh, &["impostor-1", "--yes"])
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    let report = drill_report(&out);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{report:#}\n{stderr}");
    assert_eq!(report["verified"], false);
    assert!(
        report["verification"].is_null(),
        "nothing it said is trusted: {report:#}"
    );
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("SSH host key other than the one the drill gave")
            && error.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{error}"
    );
    assert_eq!(report["recorded"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["left_behind"], serde_json::json!([]));
    nothing_left(&droplet);
    let id = report["snapshot_id"].as_str().unwrap();
    assert_eq!(droplet.server.sim.image_tags(id), ["freezeframe:application"]);

    // The private key went to the Droplet's user data, and nowhere else.
    let address = report["address"].as_str().unwrap();
    let user_data = std::fs::read_to_string(restored.machines.join(format!("{address}.user-data"))).unwrap();
    let private: Vec<&str> = user_data
        .lines()
        .skip_while(|l| !l.contains("ed25519_private: |"))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(str::trim)
        .collect();
    assert!(
        private.first() == Some(&"-----BEGIN OPENSSH PRIVATE KEY-----") && private.len() > 3,
        "{user_data}"
    );
    let said = format!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
    for line in &private[1..private.len() - 1] {
        assert!(
            !said.contains(line),
            "a line of the private key was printed:\n{said}"
        );
    }
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "the drill's key directory is left"
    );
    // No forwarding to the host, only the pinned key, and no token in ssh's environment.
    let argv = std::fs::read_to_string(droplet.dir.path().join("ssh.log")).unwrap();
    for word in [
        " -a ",
        " -x ",
        "ForwardAgent=no",
        "ForwardX11=no",
        "StrictHostKeyChecking=yes",
        "HostKeyAlias=freezeframe-verify-",
    ] {
        assert!(argv.contains(word), "{word} not in {argv}");
    }
    assert!(!argv.contains("accept-new"), "{argv}");
    let env = std::fs::read_to_string(droplet.dir.path().join("ssh.env")).unwrap();
    assert!(
        !env.contains("DIGITALOCEAN_TOKEN") && !env.contains(TOKEN),
        "ssh inherited the token"
    );
}

/// As the attacker who also wrote the user's `--ssh-command` (or ssh_config): options that
/// would turn the host-key check off. ssh keeps an option's first value and the drill's pins
/// come first, so the impostor still fails the drill before anything runs there.
#[test]
fn an_ssh_command_turning_host_key_checks_off_does_not_unpin_the_key() {
    let droplet = snapshotted(Capture::Registration, "unpinned-1");
    let restored = Restored::watch(&droplet);
    std::fs::write(
        restored.machines.join("impostor"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIImpostor+host+key",
    )
    .unwrap();
    let hostile = format!(
        "{} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        restored.ssh.display()
    );
    let out = drill(&droplet, Path::new(&hostile), &["unpinned-1", "--yes"])
        .output()
        .unwrap();
    let report = drill_report(&out);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{report:#}\n{stderr}");
    assert_eq!(report["verified"], false, "{report:#}");
    assert!(report["verification"].is_null(), "{report:#}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("SSH host key other than the one the drill gave"),
        "{error}"
    );
    let argv = std::fs::read_to_string(droplet.dir.path().join("ssh.log")).unwrap();
    assert!(argv.contains("StrictHostKeyChecking=no"), "{argv}");
    assert_eq!(report["recorded"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["left_behind"], serde_json::json!([]));
    nothing_left(&droplet);
}

/// As the attacker who runs the proxy the environment names (`http_proxy`, `ALL_PROXY`): the
/// API on this machine over plain http is reached directly, so the token never goes to the
/// proxy in the clear; the proxy hears nothing, the API (the simulator) answers.
#[test]
fn a_plain_http_api_on_this_machine_is_never_reached_through_a_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let server = SimServer::start(SimConfig {
        token: TOKEN.into(),
        droplet_id: 3164444,
        droplet_name: "web-1".into(),
        disk: None,
        image_dir: dir.path().to_path_buf(),
        action_delay: Duration::ZERO,
        capture: Capture::Registration,
        latency: Duration::ZERO,
        faults: Vec::new(),
        volumes: Vec::new(),
        fleet: Vec::new(),
        rate_limit: None,
    });
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let heard = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listening = {
        let (heard, stop) = (heard.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in proxy.incoming() {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                heard.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(stream);
            }
        })
    };
    let mut cmd = Command::new(cli_bin());
    cmd.args(["--api-url", &server.url, "--json", "verify", "--cleanup"])
        .env("DIGITALOCEAN_TOKEN", TOKEN)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    for name in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env(name, &proxy_url);
    }
    let out = cmd.output().unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = std::net::TcpStream::connect(proxy_url.trim_start_matches("http://"));
    listening.join().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        heard.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the proxy was asked: {said}"
    );
    assert!(out.status.success(), "{said}");
    assert!(
        !server.sim.counters().calls.is_empty(),
        "the API was not reached: {said}"
    );
}

/// A disk read front to back across the thaw: the restored machine's boot discards the torn
/// journal, and the `after` marker's blocks may have been read before it was written; but the
/// journal's log still holds the marker's creation, which verify finds there.
#[test]
fn a_drill_of_a_disk_read_part_way_fails_by_what_the_journal_logged() {
    let droplet = snapshotted(Capture::PartWay, "partway-1");
    let restored = Restored::watch(&droplet);
    let ssh = &restored.ssh;
    let out = drill(&droplet, ssh, &["partway-1", "--yes"]).output().unwrap();
    let report = drill_report(&out);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    let found = &report["verification"];
    assert_eq!(found["probe"], "after-thaw", "{found:#}");
    let root = restored_disk(found, &droplet);
    assert_eq!(root["after_logged"], true, "{found:#}");
    assert!(
        found["reasons"]
            .to_string()
            .contains("its journal logged the `after` marker's creation"),
        "{found:#}"
    );
    nothing_left(&droplet);
}

/// PostgreSQL, MariaDB and Redis on the volume, each written to while the snapshot is taken:
/// the drill restores the volume and every one of them recovers with every write acknowledged
/// before the freeze.
#[test]
fn a_drill_of_three_databases_snapshotted_under_writes_finds_every_acknowledged_write() {
    use crate::servers::{mariadb_inserter, pg_inserter, redis_pusher, rows_in, MariaDb, RedisServer};
    let droplet = Droplet::with_database_volume(Capture::Registration, Duration::from_millis(300), 480);
    // The simulator copies the whole volume inside the window: on a loaded machine that takes
    // longer than the Droplet's 5 s bound, which this test is not about.
    let dropin = droplet.config.parent().unwrap().join("config.d/max-freeze.toml");
    std::fs::create_dir_all(dropin.parent().unwrap()).unwrap();
    std::fs::write(&dropin, "[freeze]\nmax_freeze = \"60s\"\n").unwrap();
    let volume = droplet.volume.as_ref().unwrap();
    let run = droplet.dir.path();
    let pg = PgServer::start(&volume.path("pg/data"), &run.join("pg-run"), true);
    pg.sql("CREATE TABLE rows (n bigint PRIMARY KEY)");
    let maria = MariaDb::start(&volume.path("mysql/data"), &run.join("mysql-run"), true);
    maria.sql("CREATE DATABASE app; CREATE TABLE app.rows (n BIGINT PRIMARY KEY) ENGINE=InnoDB");
    let cache = RedisServer::start(&volume.path("redis"), &run.join("redis-run"));
    let mut config = std::fs::read_to_string(&droplet.config).unwrap();
    for (kind, key, value) in [
        ("postgresql", "socket_dir", &pg.sockets),
        ("mariadb", "socket", &maria.socket),
        ("redis", "socket", &cache.socket),
    ] {
        config.push_str(&format!(
            "\n[[quiescer]]\nkind = \"{kind}\"\n{key} = {:?}\n",
            value.display().to_string()
        ));
    }
    std::fs::write(&droplet.config, config).unwrap();

    let writers = [
        pg_inserter(&pg.sockets),
        mariadb_inserter(&maria.socket),
        redis_pusher(&cache.socket),
    ];
    let mut snapshot = droplet.agent();
    snapshot.args(["snapshot", "--json", "--wait", "--name", "load-1"]);
    let (child, _) = spawn_until_frozen(snapshot, run);
    // Frozen: every write acknowledged by now must be in the snapshot.
    let acked: Vec<u64> = writers.iter().map(|w| w.acked()).collect();
    let out = child.wait_with_output().unwrap();
    for writer in writers {
        writer.stop();
    }
    let report = crate::droplet::report_of(&out);
    assert_eq!(report["consistency"], "application", "{report:#}");
    drop((pg, maria, cache));

    let restored = Restored::watch(&droplet);
    let ssh = &restored.ssh;
    let out = drill(&droplet, ssh, &["load-1", "--yes"]).output().unwrap();
    let report = drill_report(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let found = &report["verification"];
    // None of them runs on the restored machine: their data is on the volume, checked there.
    for database in found["databases"].as_array().unwrap() {
        assert!(
            database["checks"]
                .to_string()
                .contains("its data is on a restored volume"),
            "{found:#}"
        );
    }
    let restored = found["volumes"][0]["found"]["databases"].as_array().unwrap();
    let of = |kind: &str| {
        restored
            .iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} on the volume: {found:#}"))
    };
    assert!(
        rows_in(of("postgresql"), "postgres.public.rows") >= acked[0],
        "{found:#}"
    );
    assert!(rows_in(of("mariadb"), "app.rows") >= acked[1], "{found:#}");
    // Redis's list is one key; its dump passed redis-check-rdb and loaded.
    assert_eq!(of("redis")["keys"], 1, "{found:#}");
    nothing_left(&droplet);
}

/// The opt-in drill a Droplet runs on itself (`freezeframe verify --scheduled`, what
/// freezeframe-drill.service runs after the timer's snapshot): with its own token and ssh key
/// from the agent's configuration, on the Droplet's newest snapshot, only when due.
#[test]
fn a_scheduled_drill_runs_when_due_records_itself_and_waits_for_the_next() {
    let droplet = snapshotted(Capture::Registration, "timer-1");
    let restored = Restored::watch(&droplet);
    let ssh = &restored.ssh;
    let dir = droplet.dir.path();
    let (token, key, state) = (
        dir.join("drill-token"),
        dir.join("drill-key"),
        dir.join("drill.json"),
    );
    for (file, text) in [(&token, TOKEN), (&key, "a private key")] {
        std::fs::write(file, text).unwrap();
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let with_schedule = |schedule: &str| {
        let config = std::fs::read_to_string(&droplet.config).unwrap();
        let config = config.split("\n[verify]").next().unwrap().to_string();
        std::fs::write(
            &droplet.config,
            format!(
                "{config}\n[verify]\nschedule = {schedule:?}\ntoken_file = {:?}\nssh_identity = {:?}\n\
                 state_file = {:?}\n",
                token.display().to_string(),
                key.display().to_string(),
                state.display().to_string()
            ),
        )
        .unwrap();
    };
    let scheduled = || {
        Command::new(cli_bin())
            .arg("--ssh-command")
            .arg(ssh)
            .args(["--json", "verify", "--scheduled", "--config"])
            .arg(&droplet.config)
            // Not the operator's token: the drill's own, from its file.
            .env_remove("DIGITALOCEAN_TOKEN")
            .output()
            .unwrap()
    };

    // node_exporter's textfile collector reads the drill's result from the metrics.
    let textfiles = dir.join("textfile");
    std::fs::create_dir_all(&textfiles).unwrap();
    let drop_ins = droplet.config.with_file_name("config.d");
    std::fs::create_dir_all(&drop_ins).unwrap();
    std::fs::write(
        drop_ins.join("metrics.toml"),
        format!(
            "[metrics]\ntextfile_dir = {:?}\n",
            textfiles.display().to_string()
        ),
    )
    .unwrap();

    with_schedule("off");
    let out = scheduled();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(drill_report(&out)["scheduled"], "off");
    assert!(droplet.server.sim.restored_machines().is_empty());

    with_schedule("7d");
    let out = scheduled();
    let report = drill_report(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["scheduled"], "ran");
    assert_eq!(
        report["snapshot_name"], "timer-1",
        "the newest snapshot: {report:#}"
    );
    assert_eq!(report["verified"], true, "{report:#}");
    let said = std::fs::read_to_string(dir.join("ssh.log")).unwrap();
    assert!(said.contains(&format!("-i {}", key.display())), "{said}");
    nothing_left(&droplet);
    let recorded: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(recorded["snapshot"], "timer-1");
    assert_eq!(recorded["verified"], true);
    let metrics = std::fs::read_to_string(textfiles.join("freezeframe.prom")).unwrap();
    assert!(
        metrics.contains("freezeframe_last_verification_success{droplet=\"3164444\"} 1\n")
            && metrics.contains(&format!(
                "freezeframe_last_verification_timestamp_seconds{{droplet=\"3164444\"}} {}\n",
                recorded["unix_seconds"]
            )),
        "{metrics}"
    );

    // Not due again for a week: nothing is created.
    let out = scheduled();
    let report = drill_report(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["scheduled"], "not-due", "{report:#}");
    assert_eq!(report["last"]["snapshot"], "timer-1");
    assert!(droplet.server.sim.restored_machines().is_empty());

    // Due, but the token is readable by others: refused before anything is created.
    std::fs::remove_file(&state).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = scheduled();
    assert_eq!(out.status.code(), Some(2));
    let error = drill_report(&out)["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("verify.token_file") && error.contains("chmod 600"),
        "{error}"
    );
    assert!(droplet.server.sim.restored_machines().is_empty());
    assert!(!state.exists());

    // doctor says what the drill's token would give whoever took over the Droplet.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let served = Served::start(&droplet);
    let text = String::from_utf8_lossy(&served.cli(&["doctor"]).stdout).into_owned();
    assert!(
        text.contains("scheduled restore drills")
            && text.contains("can create and destroy every Droplet and volume of the account"),
        "{text}"
    );
}

/// The Droplet's agent serving its bus (a private one), for the CLI's commands; stopped on drop.
struct Served {
    bus: PrivateBus,
    agent: std::process::Child,
}

impl Served {
    fn start(droplet: &Droplet) -> Served {
        let bus = PrivateBus::start(&droplet.dir.path().join("bus")).unwrap();
        let agent = droplet
            .agent()
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .arg("run")
            .spawn()
            .unwrap();
        let served = Served { bus, agent };
        wait_for(|| served.cli(&["status"]).status.success());
        served
    }

    /// `freezeframe --bus-address BUS ARGS…`.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(cli_bin())
            .args(["--bus-address", &self.bus.address])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

#[test]
fn a_drill_of_a_disk_read_after_the_thaw_fails_and_says_so() {
    let droplet = snapshotted(Capture::Completion, "late-1");
    let restored = Restored::watch(&droplet);
    let ssh = &restored.ssh;

    let out = drill(&droplet, ssh, &["late-1", "--yes"]).output().unwrap();
    let report = drill_report(&out);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert_eq!(report["verified"], false);
    let found = &report["verification"];
    assert_eq!(found["probe"], "after-thaw", "{found:#}");
    let reasons = found["reasons"].to_string();
    assert!(reasons.contains("thaw_after"), "{reasons}");
    assert!(reasons.contains("only crash-consistent"), "{reasons}");
    let recorded: Vec<&str> = report["recorded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    // The verdict, when it was drilled, and what the probe found.
    assert_eq!(recorded.len(), 3, "{recorded:?}");
    assert_eq!(recorded[0], "freezeframe-verify-failed");
    assert!(recorded[1].starts_with("freezeframe-drilled:"), "{recorded:?}");
    assert_eq!(recorded[2], "freezeframe-probe-after-thaw");
    nothing_left(&droplet);

    // The agent on the Droplet reads the verdict back: under thaw_after = "registered" its
    // next snapshot claims no more than crash-consistent, and says why.
    // (PostgreSQL is stopped now: its quiescer goes, and filesystem-consistent is the aim. The
    // volume, snapshotted minutes ago, may not be again within 10 minutes: it stays out.)
    let config = std::fs::read_to_string(&droplet.config).unwrap();
    let without = config.split("\n[[quiescer]]").next().unwrap().to_string();
    std::fs::write(&droplet.config, format!("{without}volumes = false\n")).unwrap();
    let (_, next) = droplet.snapshot(&["--wait", "--name", "after-the-drill"]);
    assert_eq!(next["status"], "succeeded", "{next:#}");
    assert_eq!(next["consistency"], "crash", "{next:#}");
    let warnings = next["warnings"].to_string();
    assert!(
        warnings.contains("restore drill of snapshot late-1") && warnings.contains("thaw_after"),
        "{warnings}"
    );
    // doctor says so too, through the agent's service.
    let served = Served::start(&droplet);
    let text = String::from_utf8_lossy(&served.cli(&["doctor"]).stdout).into_owned();
    assert!(
        text.contains("snapshot point") && text.contains("thaw_after = \"completed\""),
        "{text}"
    );
    let text = String::from_utf8_lossy(&served.cli(&["status"]).stdout).into_owned();
    assert!(
        text.contains("last restore drill: FAILED of snapshot late-1"),
        "{text}"
    );
}

#[test]
fn an_interrupted_or_failed_drill_destroys_what_it_made_and_cleanup_takes_the_rest() {
    let droplet = snapshotted(Capture::Registration, "cut-1");
    // No machine file: ssh is refused, as to a Droplet whose sshd never comes up.
    let machines = droplet.dir.path().join("machines");
    let ssh = restoring_ssh(&droplet, &machines);
    let sim = &droplet.server.sim;

    // Without --yes and without a terminal: nothing is created.
    let posts = || {
        sim.counters()
            .calls
            .iter()
            .filter(|c| c.starts_with("POST"))
            .count()
    };
    let before = posts();
    let out = drill(&droplet, &ssh, &["cut-1"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert_eq!(posts(), before, "nothing was asked for");

    // SIGINT while it waits for ssh: it destroys the Droplet and the volume, and says why.
    for (signal, name) in [
        (nix::sys::signal::Signal::SIGINT, "SIGINT"),
        (nix::sys::signal::Signal::SIGTERM, "SIGTERM"),
    ] {
        let child = drill(&droplet, &ssh, &["cut-1", "--yes"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_for(|| sim.restored_machines().iter().any(|m| !m.volumes.is_empty()));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let out = child.wait_with_output().unwrap();
        let report = drill_report(&out);
        assert_eq!(out.status.code(), Some(1), "{report:#}");
        // With what ssh said last, if it was tried before the signal.
        let error = report["error"].as_str().unwrap_or_default();
        assert!(error.starts_with(&format!("interrupted by {name}")), "{report:#}");
        nothing_left(&droplet);
    }

    // A timeout, likewise.
    let out = drill(&droplet, &ssh, &["cut-1", "--yes", "--timeout", "3s"])
        .output()
        .unwrap();
    let report = drill_report(&out);
    assert!(
        report["error"].as_str().unwrap().contains("--timeout"),
        "{report:#}"
    );
    nothing_left(&droplet);

    // ssh refused for good (no key the restored machine accepts): said at once, cleaned up.
    std::fs::create_dir_all(&machines).unwrap();
    std::fs::write(machines.join("deny"), "").unwrap();
    let out = drill(&droplet, &ssh, &["cut-1", "--yes"]).output().unwrap();
    let report = drill_report(&out);
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("Permission denied") && error.contains("--ssh-key"),
        "{error}"
    );
    nothing_left(&droplet);
    std::fs::remove_file(machines.join("deny")).unwrap();

    // An API failure part-way (the volume cannot be made): the Droplet goes all the same.
    sim.set_faults(vec!["POST /v2/volumes=500*1".parse().unwrap()]);
    let out = drill(&droplet, &ssh, &["cut-1", "--yes"]).output().unwrap();
    let report = drill_report(&out);
    assert!(
        report["error"].as_str().unwrap().contains("cannot create volume"),
        "{report:#}"
    );
    assert!(report["droplet_id"].is_u64(), "{report:#}");
    nothing_left(&droplet);

    // SIGKILL: nothing can clean up, but everything made carries the drill's tag.
    let mut child = drill(&droplet, &ssh, &["cut-1", "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(|| sim.restored_machines().iter().any(|m| !m.volumes.is_empty()));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(sim.restored_machines().len(), 1);
    let out = drill(&droplet, &ssh, &["--cleanup"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report_of_cleanup(&out), serde_json::json!([]));
    nothing_left(&droplet);
}

fn report_of_cleanup(out: &Output) -> serde_json::Value {
    drill_report(out)["left_behind"].clone()
}

fn wait_for(mut done: impl FnMut() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting");
}

/// A stand-in for ssh that answers each attempt by the next line of `answers` (the last one
/// again once they run out): `refused`, `denied`, `no-agent` (the remote command missing) or
/// `silent` (the remote verify printing nothing, exit 0). Each attempt is logged.
fn scripted_ssh(droplet: &Droplet, name: &str, answers: &[&str]) -> PathBuf {
    let dir = droplet.dir.path();
    let (script, tries) = (dir.join(name), dir.join(format!("{name}.tries")));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho x >> {tries}\nn=$(wc -l < {tries})\n\
             answer=$(printf '%s\\n' {answers} | sed -n \"${{n}}p\")\n\
             [ -n \"$answer\" ] || answer={last}\n\
             while [ $# -gt 0 ] && [ \"$1\" != -- ]; do shift; done; ip=${{2#*@}}\n\
             case $answer in\n\
             refused) echo \"ssh: connect to host $ip port 22: Connection refused\" >&2; exit 255;;\n\
             denied) echo \"root@$ip: Permission denied (publickey).\" >&2; exit 255;;\n\
             no-agent) echo 'sh: 1: freezeframe-agent: not found' >&2; exit 127;;\n\
             silent) exit 0;;\n\
             esac\n",
            tries = tries.display(),
            answers = answers.join(" "),
            last = answers.last().unwrap(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// A drill whose ssh cannot reach the restored Droplet says each failed attempt as it happens;
/// errors that no later attempt mends (keys refused, the agent missing) end it at once, and a
/// drill that runs out of time, or whose remote verify printed nothing, says what it saw last.
/// The timeouts given are bounds only: a drill that gave up early ends long before.
#[test]
fn a_drill_whose_ssh_fails_says_each_attempt_and_gives_up_on_what_will_not_heal() {
    let droplet = Droplet::new(Duration::from_millis(200), "");
    let (out, report) = droplet.snapshot(&["--wait", "--name", "unreached-1"]);
    assert_eq!(
        report["status"],
        "succeeded",
        "{report:#}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ran = |ssh: &Path, timeout: &str| {
        let out = drill(&droplet, ssh, &["unreached-1", "--yes", "--timeout", timeout])
            .output()
            .unwrap();
        let report = drill_report(&out);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{report:#}\n{stderr}");
        nothing_left(&droplet);
        (report["error"].as_str().unwrap_or_default().to_string(), stderr)
    };

    // Refused twice while "booting", then the keys are refused: said at once, not waited out.
    let ssh = scripted_ssh(&droplet, "denied-ssh", &["refused", "refused", "denied"]);
    let (error, stderr) = ran(&ssh, "1h");
    assert!(
        error.contains("Permission denied") && error.contains("--ssh-key") && !error.contains("--timeout"),
        "{error}"
    );
    for attempt in [
        "(attempt 1): ssh: connect to host",
        "(attempt 2): ssh: connect to host",
    ] {
        assert!(
            stderr.contains(attempt) && stderr.contains("Connection refused; trying again in"),
            "{attempt}: {stderr}"
        );
    }
    assert!(!stderr.contains("(attempt 3)"), "{stderr}");

    // The time it expects and its cost were said with the price, before anything was created:
    // the snapshot's used disk at DigitalOcean's documented 1 to 3 minutes per GB.
    let expected_at = stderr.find("freezeframe: expect the restore to take ");
    let created_at = stderr.find("creating Droplet");
    assert!(
        expected_at.zip(created_at).is_some_and(|(e, c)| e < c) && stderr.contains(", costing $"),
        "{stderr}"
    );
    let out = drill(&droplet, &ssh, &["unreached-1", "--yes", "--timeout", "1h"])
        .output()
        .unwrap();
    let expected = &drill_report(&out)["expected"];
    let gigabytes = expected["gigabytes"].as_f64().unwrap();
    let listed: serde_json::Value = serde_json::from_slice(
        &Command::new("curl")
            .args(["-sf", "-H", &format!("Authorization: Bearer {TOKEN}")])
            .arg(format!(
                "{}/v2/snapshots?resource_type=droplet",
                droplet.server.url
            ))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let snapshot = listed["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "unreached-1")
        .unwrap_or_else(|| panic!("{listed:#}"));
    assert_eq!(
        snapshot["size_gigabytes"].as_f64(),
        Some(gigabytes),
        "{expected:#}"
    );
    assert!(gigabytes > 0.0, "{expected:#}");
    assert_eq!(
        [&expected["low_seconds"], &expected["high_seconds"]],
        [
            (gigabytes * 60.0).ceil() as u64,
            (gigabytes * 180.0).ceil() as u64
        ],
        "{expected:#}"
    );
    nothing_left(&droplet);

    // The agent missing on the image: said at once.
    let ssh = scripted_ssh(&droplet, "no-agent-ssh", &["no-agent"]);
    let (error, _) = ran(&ssh, "1h");
    assert!(error.contains("freezeframe-agent is not installed"), "{error}");

    // The remote verify printed nothing: said so, with no dangling colon.
    let ssh = scripted_ssh(&droplet, "silent-ssh", &["refused", "silent"]);
    let (error, _) = ran(&ssh, "1h");
    assert!(
        error.contains("answered no report (") && error.ends_with("; it printed nothing on stdout"),
        "{error}"
    );

    // Never reachable: each attempt said while the drill still runs, and the last one at the end.
    let ssh = scripted_ssh(&droplet, "refused-ssh", &["refused"]);
    let mut child = drill(&droplet, &ssh, &["unreached-1", "--yes", "--timeout", "30s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    let seen = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("(attempt 1)") || l.contains("destroying what the drill created"));
    assert!(
        seen.as_deref().is_some_and(|l| l.contains("Connection refused")),
        "no attempt said before the drill ended: {seen:?}"
    );
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = child.wait_with_output().unwrap();
    let report = drill_report(&out);
    assert_eq!(out.status.code(), Some(1), "{report:#}\n{rest:?}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("(--timeout); the last ssh attempt failed: attempt ")
            && error.ends_with("port 22: Connection refused"),
        "{error}"
    );
    nothing_left(&droplet);
}

/// Where a drill is cut in the matrix: each step of a drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Create,
    WaitActive,
    Volumes,
    Attach,
    Ssh,
    Verify,
    Destroy,
}

/// How it is cut there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Sigint,
    Sigterm,
    /// `--timeout` running out.
    Timeout,
    /// The API failing the step's call.
    ApiFailure,
    /// ssh failing for good.
    SshFailure,
}

/// What a cut drill leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaves {
    Nothing,
    /// Its Droplet and volume, both named in its report, which `--cleanup` then destroys.
    ForCleanup,
}

/// One cell of the matrix: its faults, its stand-in ssh's answer, and what it must leave.
struct Cell {
    step: Step,
    cut: Cut,
}

/// `--timeout` of the timeout cells: long enough to reach any step on a loaded machine.
const MATRIX_TIMEOUT: Duration = Duration::from_secs(10);

impl Cell {
    /// The faults that hold the drill at its step (or fail it there). A request that creates
    /// something is held by `unwaited`: the simulator handles it later even if the drill has
    /// given up on the answer, as the platform does with a request it received.
    fn faults(&self) -> Vec<freezeframe_tests::sim::Fault> {
        use freezeframe_tests::sim::{Fault, FaultKind, Method};
        let hold = match self.cut {
            Cut::Timeout => MATRIX_TIMEOUT + Duration::from_secs(3),
            _ => Duration::from_secs(3),
        };
        let on = |method: Method, path: &str, kind: FaultKind, count: Option<u32>| {
            Fault::new(Some(method), path, kind, count)
        };
        let failed = FaultKind::Status(500);
        match (self.step, self.cut) {
            (Step::Create, Cut::ApiFailure) => vec![on(Method::POST, "/v2/droplets", failed, Some(1))],
            (Step::Create, _) => vec![on(
                Method::POST,
                "/v2/droplets",
                FaultKind::Unwaited(hold),
                Some(1),
            )],
            (Step::WaitActive, Cut::ApiFailure) => {
                vec![on(Method::GET, "/v2/droplets/", FaultKind::Status(403), None)]
            }
            // Held by a Droplet that stays `new` (the simulator's boot, `action_delay`).
            (Step::WaitActive, _) => Vec::new(),
            // The first POST there creates the volume; the attach comes after.
            (Step::Volumes, Cut::ApiFailure) => vec![on(Method::POST, "/v2/volumes", failed, Some(1))],
            (Step::Volumes, _) => vec![on(
                Method::POST,
                "/v2/volumes",
                FaultKind::Unwaited(hold),
                Some(1),
            )],
            (Step::Attach, Cut::ApiFailure) => vec![on(Method::POST, "/v2/volumes/", failed, Some(1))],
            (Step::Attach, _) => vec![on(
                Method::POST,
                "/v2/volumes/",
                FaultKind::Unwaited(hold),
                Some(1),
            )],
            (Step::Destroy, Cut::ApiFailure) => vec![on(Method::DELETE, "/v2/droplets", failed, None)],
            (Step::Destroy, _) => vec![on(
                Method::DELETE,
                "/v2/droplets",
                FaultKind::Latency(hold),
                Some(1),
            )],
            (Step::Ssh | Step::Verify, _) => Vec::new(),
        }
    }

    /// What the stand-in ssh answers every attempt.
    fn ssh_answer(&self) -> &'static str {
        match (self.step, self.cut) {
            (Step::Ssh, Cut::SshFailure) => "denied",
            (Step::Ssh, _) => "refused",
            (Step::Verify, Cut::SshFailure) => "cut",
            (Step::Verify, _) => "hang",
            // Fails at once: the drill goes on to destroy what it made.
            (Step::Destroy, _) => "denied",
            // Never reached before the cut.
            _ => "refused",
        }
    }

    /// The drill is at its step: the simulator received the step's call, or ssh was tried.
    fn reached(&self, calls: &[String], ssh_tries: usize) -> bool {
        let called = |prefix: &str| calls.iter().any(|c| c.starts_with(prefix));
        match self.step {
            Step::Create => called("POST /v2/droplets"),
            Step::WaitActive => called("GET /v2/droplets/"),
            Step::Volumes => called("POST /v2/volumes"),
            Step::Attach => called("POST /v2/volumes/"),
            Step::Ssh | Step::Verify => ssh_tries > 0,
            Step::Destroy => called("DELETE /v2/droplets"),
        }
    }

    /// What the drill's report must say stopped it.
    fn said(&self) -> &'static str {
        match (self.step, self.cut) {
            (Step::Destroy, _) => "Permission denied",
            (_, Cut::Sigint) => "interrupted by SIGINT",
            (_, Cut::Sigterm) => "interrupted by SIGTERM",
            (_, Cut::Timeout) => "(--timeout)",
            (Step::Create, Cut::ApiFailure) => "cannot create the Droplet",
            (Step::WaitActive, Cut::ApiFailure) => "cannot read Droplet",
            (Step::Volumes, Cut::ApiFailure) => "cannot create volume",
            (Step::Attach, Cut::ApiFailure) => "cannot attach volume",
            (Step::Ssh, Cut::SshFailure) => "Permission denied",
            (Step::Verify, Cut::SshFailure) => "closed by remote host",
            _ => unreachable!("no such cell"),
        }
    }

    fn leaves(&self) -> Leaves {
        match (self.step, self.cut) {
            (Step::Destroy, Cut::ApiFailure) => Leaves::ForCleanup,
            _ => Leaves::Nothing,
        }
    }

    /// Signals are sent once the drill is at its step; the rest cut it themselves.
    fn signal(&self) -> Option<nix::sys::signal::Signal> {
        match self.cut {
            Cut::Sigint => Some(nix::sys::signal::Signal::SIGINT),
            Cut::Sigterm => Some(nix::sys::signal::Signal::SIGTERM),
            _ => None,
        }
    }
}

/// Every cell: each step cut by SIGINT, SIGTERM and `--timeout`; the API failing at each step
/// that calls it; ssh failing at the two that run it.
fn matrix() -> Vec<Cell> {
    use Cut::*;
    use Step::*;
    let mut cells = Vec::new();
    for step in [Create, WaitActive, Volumes, Attach, Ssh, Verify, Destroy] {
        for cut in [Sigint, Sigterm, Timeout, ApiFailure, SshFailure] {
            let applies = match cut {
                ApiFailure => !matches!(step, Ssh | Verify),
                SshFailure => matches!(step, Ssh | Verify),
                _ => true,
            };
            if applies {
                cells.push(Cell { step, cut });
            }
        }
    }
    cells
}

/// A simulator whose account holds the Droplet snapshot `matrix` (10 GB of used disk) and a
/// volume snapshot of the same run, and a stand-in ssh answering every attempt with `answer`
/// (`refused`, `denied`, `hang`: connected, the remote verify never answering, or `cut`: the
/// session closed by the remote host), each attempt logged in `tries`.
struct MatrixDrill {
    dir: tempfile::TempDir,
    server: SimServer,
    ssh: PathBuf,
    tries: PathBuf,
}

impl MatrixDrill {
    fn new(cell: &Cell) -> MatrixDrill {
        let dir = tempfile::tempdir().unwrap();
        let server = SimServer::start(SimConfig {
            token: TOKEN.into(),
            droplet_id: 3164444,
            droplet_name: "web-1".into(),
            disk: None,
            image_dir: dir.path().to_path_buf(),
            // A restored Droplet boots as long as this: for ever, where the drill is held there.
            action_delay: match (cell.step, cell.cut) {
                (Step::WaitActive, Cut::Sigint | Cut::Sigterm | Cut::Timeout) => Duration::from_secs(3600),
                _ => Duration::ZERO,
            },
            capture: Capture::Registration,
            latency: Duration::ZERO,
            faults: cell.faults(),
            volumes: Vec::new(),
            fleet: Vec::new(),
            rate_limit: None,
        });
        server
            .sim
            .seed_snapshot("matrix", 10_000_000_000, PathBuf::from("/dev/null"));
        server
            .sim
            .seed_volume_snapshot("vol-1", Some("matrix"), Duration::from_secs(60));
        let (ssh, tries) = (dir.path().join("ssh"), dir.path().join("tries"));
        std::fs::write(
            &ssh,
            format!(
                "#!/bin/sh\necho x >> {tries}\n\
                 while [ $# -gt 0 ] && [ \"$1\" != -- ]; do shift; done; ip=${{2#*@}}\n\
                 case {answer} in\n\
                 refused) echo \"ssh: connect to host $ip port 22: Connection refused\" >&2; exit 255;;\n\
                 denied) echo \"root@$ip: Permission denied (publickey).\" >&2; exit 255;;\n\
                 hang) exec sleep 600;;\n\
                 cut) echo \"Connection to $ip closed by remote host.\" >&2; exit 255;;\n\
                 esac\n",
                tries = tries.display(),
                answer = cell.ssh_answer(),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
        MatrixDrill {
            dir,
            server,
            ssh,
            tries,
        }
    }

    fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(cli_bin());
        cmd.args(["--api-url", &self.server.url, "--ssh-command"])
            .arg(&self.ssh)
            .args(["--json", "verify"])
            .args(args)
            .env("DIGITALOCEAN_TOKEN", TOKEN)
            .env("TMPDIR", self.dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    }

    fn ssh_tries(&self) -> usize {
        std::fs::read_to_string(&self.tries).map_or(0, |t| t.lines().count())
    }

    /// What the simulator holds of the drill's once every request it received had its effect.
    fn left(&self) -> (Vec<u64>, Vec<String>) {
        let sim = &self.server.sim;
        for _ in 0..600 {
            if sim.unhandled() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            sim.unhandled(),
            0,
            "a request the simulator received was never handled"
        );
        (
            sim.restored_machines().iter().map(|m| m.id).collect(),
            sim.restored_volume_ids(),
        )
    }
}

/// Runs one cell: the drill, cut at its step; then what it left, and `--cleanup` where that
/// is the promise. Failures are returned as words, so every cell runs and all are reported.
fn run_cell(cell: &Cell) -> Result<(), String> {
    let name = format!("{:?} at {:?}", cell.cut, cell.step);
    let drill = MatrixDrill::new(cell);
    let timeout = match cell.cut {
        Cut::Timeout => format!("{}s", MATRIX_TIMEOUT.as_secs()),
        _ => "10m".into(),
    };
    let child = drill
        .cli(&["matrix", "--yes", "--timeout", &timeout])
        .spawn()
        .map_err(|e| format!("{name}: {e}"))?;
    if let Some(signal) = cell.signal() {
        let at_step = (0..1200).any(|_| {
            let calls = drill.server.sim.counters().calls;
            cell.reached(&calls, drill.ssh_tries()) || {
                std::thread::sleep(Duration::from_millis(25));
                false
            }
        });
        if !at_step {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(format!(
                "{name}: the drill never reached its step: {:?}",
                drill.server.sim.counters().calls
            ));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal)
            .map_err(|e| format!("{name}: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("{name}: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{name}: not JSON ({e}): {stderr}"))?;
    let seen = format!(
        "{name}:\n{report:#}\n{stderr}\ncalls: {:?}",
        drill.server.sim.counters().calls
    );
    let check = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(format!("{what}; {seen}"))
        }
    };
    check(out.status.code() == Some(1), "not exit 1")?;
    check(
        cell.reached(&drill.server.sim.counters().calls, drill.ssh_tries()),
        "cut before its step",
    )?;
    let error = report["error"].as_str().unwrap_or_default();
    check(
        error.contains(cell.said()),
        &format!("the error does not say `{}`", cell.said()),
    )?;
    // Said before anything was created: the time it expects (10 GB at 1 to 3 minutes a GB).
    check(
        report["expected"]["low_seconds"] == 600 && report["expected"]["high_seconds"] == 1800,
        "no expectation",
    )?;
    let (droplets, volumes) = drill.left();
    match cell.leaves() {
        Leaves::Nothing => {
            check(
                droplets.is_empty() && volumes.is_empty(),
                &format!("left {droplets:?} {volumes:?}"),
            )?;
            check(
                report["left_behind"] == serde_json::json!([]),
                "says it left something",
            )?;
        }
        Leaves::ForCleanup => {
            // Exactly what it says it left: its Droplet and its volume.
            let said = report["left_behind"].to_string();
            check(
                droplets.len() == 1
                    && volumes.len() == 1
                    && report["droplet_id"] == droplets[0]
                    && said.contains(&format!("({})", droplets[0]))
                    && said.contains(&volumes[0]),
                &format!("left {droplets:?} {volumes:?}, and said {said}"),
            )?;
            drill.server.sim.set_faults(Vec::new());
            let out = drill
                .cli(&["--cleanup"])
                .output()
                .map_err(|e| format!("{name}: {e}"))?;
            check(out.status.code() == Some(0), "--cleanup failed")?;
            let (droplets, volumes) = drill.left();
            check(
                droplets.is_empty() && volumes.is_empty(),
                &format!("--cleanup left {droplets:?} {volumes:?}"),
            )?;
        }
    }
    Ok(())
}

/// The drill interrupted at every step (create, wait for active, volumes, attach, ssh, verify,
/// destroy) by SIGINT, SIGTERM, `--timeout`, an API failure and an ssh failure: nothing of the
/// drill's is left in the simulator once every request it received had its effect, or, where
/// the API refuses to destroy, exactly what the drill says it left, which `--cleanup` then
/// destroys. The cells run at once, each on a simulator of its own.
#[test]
fn a_drill_cut_at_any_step_leaves_nothing_or_what_cleanup_takes() {
    let cells = matrix();
    assert_eq!(cells.len(), 28);
    let failures: Vec<String> = std::thread::scope(|scope| {
        let running: Vec<_> = cells
            .iter()
            .map(|cell| scope.spawn(move || run_cell(cell)))
            .collect();
        running
            .into_iter()
            .filter_map(|r| r.join().unwrap_or_else(|_| Err("a cell panicked".into())).err())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} cells failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
