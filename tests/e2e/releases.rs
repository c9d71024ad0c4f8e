//! The Debian releases the packages are for, each booted with its own systemd: the packages
//! install from the signed apt repository and their units are understood (main.rs,
//! `install_from_repository`), and a live snapshot of that release's own PostgreSQL, MariaDB
//! and Redis, found through systemd and written to throughout, is application-consistent: the
//! release's units start again on the captured volume and hold every write acknowledged before
//! the snapshot was asked for. Debian 12 also runs the full test in main.rs.

use super::*;

/// The three databases as the release's packages run them, moved onto the volume as an
/// administrator would (a data directory, a `datadir`, Redis's `dir` and the drop-in its
/// sandboxed unit needs to write there), each with an empty table or list to write to.
const DATABASES_ON_THE_VOLUME: &str = r#"set -e
v=$(ls /usr/lib/postgresql | sort -n | tail -1)
pg_dropcluster --stop $v main
install -d -o postgres -g postgres /vol/pg
pg_createcluster -d /vol/pg/data $v main >/dev/null
systemctl start postgresql@$v-main
runuser -u postgres -- psql -X -q -c 'CREATE TABLE rows (n bigint PRIMARY KEY)'
systemctl stop mariadb
install -d -o mysql -g mysql /vol/mysql
cp -a /var/lib/mysql/. /vol/mysql/
printf '[mysqld]\ndatadir = /vol/mysql\n' > /etc/mysql/mariadb.conf.d/99-volume.cnf
systemctl start mariadb
mariadb -e 'CREATE DATABASE app; CREATE TABLE app.rows (n bigint PRIMARY KEY) ENGINE=InnoDB'
systemctl stop redis-server
install -d -o redis -g redis -m 0750 /vol/redis
sed -i 's|^dir .*|dir /vol/redis|' /etc/redis/redis.conf
mkdir -p /etc/systemd/system/redis-server.service.d
printf '[Service]\nReadWritePaths=/vol/redis\n' > /etc/systemd/system/redis-server.service.d/volume.conf
systemctl daemon-reload
systemctl start redis-server
"#;

/// The database units, as `systemctl` names them (PostgreSQL's instance by its version).
const UNITS_OF_THE_DATABASES: &str =
    "postgresql@$(ls /usr/lib/postgresql | sort -n | tail -1)-main mariadb redis-server";

/// The writers: PostgreSQL and MariaDB commit one row each, Redis pushes one element each.
fn writers(pid: u32) -> [(&'static str, Inserter); 3] {
    [
        ("postgresql", Inserter::start(pid)),
        (
            "mariadb",
            Inserter::writing(pid, |n| {
                vec![
                    "mariadb".into(),
                    "-e".into(),
                    format!("INSERT INTO app.rows VALUES ({n})"),
                ]
            }),
        ),
        (
            "redis",
            Inserter::writing(pid, |n| {
                vec!["redis-cli".into(), "RPUSH".into(), "rows".into(), n.to_string()]
            }),
        ),
    ]
}

/// How many of the writes numbered up to `acked` the restarted database of `kind` holds.
fn held(machine: &Container, kind: &str, acked: u64) -> u64 {
    let count = match kind {
        "postgresql" => machine.sh(&format!(
            "runuser -u postgres -- psql -X -A -t -c 'SELECT count(*) FROM rows WHERE n <= {acked}'"
        )),
        "mariadb" => machine.sh(&format!(
            "mariadb -N -e 'SELECT count(*) FROM app.rows WHERE n <= {acked}'"
        )),
        // Pushed in order: the first `acked` elements are 1 to `acked` when all are there.
        _ => machine.sh(&format!(
            "[ \"$(redis-cli LINDEX rows {})\" = {acked} ] && redis-cli LLEN rows || echo 0",
            acked.saturating_sub(1)
        )),
    };
    count
        .parse::<u64>()
        .map(|c| c.min(acked))
        .unwrap_or_else(|_| panic!("{kind}: no count in {count:?}"))
}

fn the_release_s_own_databases_snapshot_live_and_restore(release: Release) {
    if let Some(why) = container::unavailable() {
        eprintln!("SKIPPED the end-to-end test on {release:?}: {why}");
        return;
    }
    let debs = debs();
    let volume = scratch_fs_sized(Fs::Ext4, 512);
    let dir = volume.dir.path();
    let sim = simulated_droplet(&volume, 3164446, "release-droplet");
    let root = container::release_root(
        release,
        &["postgresql", "mariadb-server", "redis-server", "openssh-client"],
    );
    let machine = Container::boot(
        &root,
        &[Bind {
            host: &volume.mountpoint,
            inside: "/vol",
            read_only: false,
        }],
    );
    let _repo = install_from_repository(&machine, release, &debs);
    machine.sh(&format!("echo {TOKEN} | freezeframe-agent setup-token"));
    machine.sh(&format!(
        "printf '[freeze]\\nmountpoints = [\"/vol\"]\\n[digitalocean]\\napi_url = \"{0}\"\\nmetadata_url = \"{0}\"\\n' \
         > /etc/freezeframe/config.d/e2e.toml",
        sim.url
    ));
    machine.sh(DATABASES_ON_THE_VOLUME);
    eprintln!(
        "{release:?}: {}",
        machine.sh(
            "v=$(ls /usr/lib/postgresql | sort -n | tail -1); echo PostgreSQL $v, \
             $(mariadb --version), $(redis-server --version | cut -d' ' -f1-3)"
        )
    );

    let writers = writers(machine.pid);
    for (_, writer) in &writers {
        writer.wait_for(10);
    }
    let acked: Vec<u64> = writers.iter().map(|(_, w)| w.acked()).collect();
    let ssh = fake_ssh(dir, machine.pid);
    let out = Command::new(cli_bin())
        .args(["--ssh-command", ssh.to_str().unwrap(), "-H", "root@droplet"])
        .args(["snapshot", "--json", "--wait", "--name", "release-1"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert_eq!(report["consistency"], "application", "{report:#}");
    let quiesced = report["quiescers"].to_string();
    for (kind, writer) in &writers {
        assert!(
            quiesced.contains(&format!("\"{kind} (")),
            "{kind} found through systemd with no configuration: {report:#}"
        );
        writer.wait_for(writer.acked() + 5);
    }
    for ((kind, writer), before) in writers.into_iter().zip(&acked) {
        let total = writer.stop();
        assert!(total > *before, "{kind} was written to after the snapshot");
    }

    // The machine restored: its databases stopped, the volume's files become those of the
    // snapshot, and the release's units start on them as a restored Droplet boots.
    machine.sh(&format!("systemctl stop {UNITS_OF_THE_DATABASES}"));
    let restored = restored_copy(&sim, "release-1", dir);
    run(
        "find",
        &[volume.mountpoint.to_str().unwrap(), "-mindepth", "1", "-delete"],
    );
    run(
        "cp",
        &[
            "-a",
            &format!("{}/.", restored.mountpoint.display()),
            volume.mountpoint.to_str().unwrap(),
        ],
    );
    drop(restored);
    machine.sh(&format!("systemctl start {UNITS_OF_THE_DATABASES}"));
    for (kind, before) in ["postgresql", "mariadb", "redis"].into_iter().zip(acked) {
        assert_eq!(
            held(&machine, kind, before),
            before,
            "{release:?}: every write to {kind} acknowledged before the snapshot is in it"
        );
    }
    drop(machine);
}

#[test]
#[ignore = "run by tests/e2e/run, which builds the packages first"]
fn on_debian_13_a_live_snapshot_of_its_postgresql_mariadb_and_redis_restores() {
    the_release_s_own_databases_snapshot_live_and_restore(Release::Trixie);
}
