//! `verify --image` on hostile images: snapshots of a compromised machine, made to run code on
//! the verifier (settings that run commands or load libraries, included files, a catalog whose
//! event trigger runs a program, setuid-root programs and device nodes in the data directory,
//! links out of the image, a `PG_VERSION` that is a path). Each test checks what verify said and
//! that nothing outside the image changed: two canaries on the verifier, one only root may
//! write (its bytes and mode), one anyone may (so that any program of the image that ran
//! outside the sandbox, as any account, would have changed it).

use crate::servers::verify;
use freezeframe_agent::loop_mount::{Attach, LoopMount};
use freezeframe_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A file on the verifier, outside every image, with the bytes and mode it must keep.
struct Canary {
    path: PathBuf,
    bytes: Vec<u8>,
    mode: u32,
}

impl Canary {
    fn new(path: PathBuf, mode: u32) -> Canary {
        let bytes = format!("the verifier's own {}\n", path.display()).into_bytes();
        std::fs::write(&path, &bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        Canary { path, bytes, mode }
    }

    fn assert_untouched(&self, what: &str) {
        let meta = std::fs::symlink_metadata(&self.path).unwrap();
        assert!(
            meta.is_file(),
            "{what}: {} is no longer a file",
            self.path.display()
        );
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            self.mode,
            "{what}: the mode of {} changed",
            self.path.display()
        );
        assert_eq!(
            std::fs::read(&self.path).unwrap(),
            self.bytes,
            "{what}: the bytes of {} changed",
            self.path.display()
        );
    }
}

/// One hostile image at a time: verify's private mount namespace holds a copy of every mount
/// made when it starts, so an image another test unmounts meanwhile stays mounted there until
/// that verify ends.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A hostile image being made: an ext4 filesystem in a scratch folder, mounted while the test
/// fills it, and the verifier's canaries beside it (outside it).
/// Fields drop in order: unmounted, then the folder removed, then the next test's turn.
struct Hostile {
    mount: Option<LoopMount>,
    /// Only root may write it.
    root_canary: Canary,
    /// Anyone may write it.
    open_canary: Canary,
    dir: tempfile::TempDir,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Hostile {
    fn new() -> Hostile {
        require_root();
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let dir = scratch();
        let image = dir.path().join("hostile.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(200 << 20))
            .unwrap();
        run("mkfs.ext4", &["-q", image.to_str().unwrap()]);
        let mount = LoopMount::attach(&image, &dir.path().join("mnt"), Attach::default()).unwrap();
        let root_canary = Canary::new(dir.path().join("root-canary"), 0o600);
        let open_canary = Canary::new(dir.path().join("open-canary"), 0o666);
        Hostile {
            mount: Some(mount),
            root_canary,
            open_canary,
            dir,
            _turn: turn,
        }
    }

    /// A path in the image being made.
    fn path(&self, rel: &str) -> PathBuf {
        self.mount.as_ref().unwrap().mountpoint().join(rel)
    }

    /// Unmounts it: the image, ready to verify. Synced first: a verify that another test
    /// started meanwhile holds a copy of this mount in its namespace, which keeps the
    /// filesystem mounted (its journal unclean, verify then replays it) after the unmount here.
    fn image(&mut self) -> PathBuf {
        let mountpoint = self.mount.as_ref().unwrap().mountpoint().to_path_buf();
        run("sync", &["-f", mountpoint.to_str().unwrap()]);
        drop(self.mount.take());
        self.dir.path().join("hostile.img")
    }

    /// A PostgreSQL data directory at `pg/data`, made by initdb as `postgres`.
    fn initdb(&self) -> PathBuf {
        let data = self.path("pg/data");
        std::fs::create_dir_all(data.parent().unwrap()).unwrap();
        run(
            "chown",
            &["postgres:postgres", data.parent().unwrap().to_str().unwrap()],
        );
        freezeframe_tests::postgres::initdb(&data);
        data
    }

    /// A setuid-root copy of `program` at `path` in the image.
    fn setuid_copy(&self, program: &str, path: &Path) {
        std::fs::copy(program, path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o4755)).unwrap();
    }

    /// A shell command that overwrites both canaries (the root one through setuid-root copies
    /// of cp and chmod in the data directory, its working directory) and ends well.
    fn attack(&self, data: &Path) -> String {
        self.setuid_copy("/usr/bin/cp", &data.join("evil-cp"));
        self.setuid_copy("/usr/bin/chmod", &data.join("evil-chmod"));
        std::fs::write(data.join("payload"), "pwned\n").unwrap();
        run(
            "chown",
            &["postgres:postgres", data.join("payload").to_str().unwrap()],
        );
        let (root, open) = (self.root_canary.path.display(), self.open_canary.path.display());
        format!("./evil-cp payload {root}; ./evil-chmod 0777 {root}; echo pwned > {open}; true")
    }

    fn assert_nothing_outside_changed(&self, what: &str) {
        self.root_canary.assert_untouched(what);
        self.open_canary.assert_untouched(what);
    }
}

/// Appends `text` to the data directory's `postgresql.auto.conf`.
fn auto_conf(data: &Path, text: &str) {
    let path = data.join("postgresql.auto.conf");
    let mut conf = std::fs::read_to_string(&path).unwrap();
    conf.push_str(text);
    std::fs::write(path, conf).unwrap();
}

/// The one database verify found, checked.
fn the_database(found: &serde_json::Value) -> &serde_json::Value {
    let databases = found["databases"].as_array().unwrap();
    assert_eq!(databases.len(), 1, "{found:#}");
    &databases[0]
}

#[test]
fn an_images_ssl_passphrase_command_is_never_run() {
    let mut hostile = Hostile::new();
    let data = hostile.initdb();
    // An encrypted key: the server runs ssl_passphrase_command to unlock it, from the data
    // directory, where setuid-root programs wait.
    let (key, cert) = (data.join("server.key"), data.join("server.crt"));
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-days",
            "1",
            "-subj",
            "/CN=hostile",
            "-passout",
            "pass:secret",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    run(
        "chown",
        &["postgres:postgres", key.to_str().unwrap(), cert.to_str().unwrap()],
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let attack = hostile.attack(&data);
    auto_conf(
        &data,
        &format!(
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             ssl_passphrase_command = '{attack}; echo secret'\n"
        ),
    );
    let (_, found) = verify(&hostile.image());
    hostile.assert_nothing_outside_changed("verify of an image whose ssl_passphrase_command attacks");
    // The server started from verify's configuration alone, and was checked.
    assert_eq!(the_database(&found)["ok"], true, "{found:#}");
}

#[test]
fn an_images_included_settings_and_libraries_are_never_read() {
    let mut hostile = Hostile::new();
    let data = hostile.initdb();
    // postgresql.auto.conf includes a folder whose settings load libraries (which do not
    // exist: a server that loaded them would fail) and write the server's pid over a file of
    // the verifier's.
    std::fs::create_dir_all(data.join("conf.d")).unwrap();
    std::fs::write(
        data.join("conf.d/00-hostile.conf"),
        format!(
            "external_pid_file = '{}'\nsession_preload_libraries = 'hostile'\n\
             local_preload_libraries = 'hostile'\njit = on\njit_provider = 'hostile'\n",
            hostile.open_canary.path.display()
        ),
    )
    .unwrap();
    run(
        "chown",
        &["-R", "postgres:postgres", data.join("conf.d").to_str().unwrap()],
    );
    auto_conf(&data, "include_dir = 'conf.d'\n");
    let (_, found) = verify(&hostile.image());
    hostile.assert_nothing_outside_changed("verify of an image whose included settings attack");
    assert_eq!(the_database(&found)["ok"], true, "{found:#}");
}

#[test]
fn an_images_preload_libraries_are_never_loaded() {
    let mut hostile = Hostile::new();
    let data = hostile.initdb();
    auto_conf(
        &data,
        "shared_preload_libraries = 'hostile'\ndynamic_library_path = '/nonexistent'\n",
    );
    let (_, found) = verify(&hostile.image());
    hostile.assert_nothing_outside_changed("verify of an image whose libraries are preloaded");
    assert_eq!(the_database(&found)["ok"], true, "{found:#}");
}

#[test]
fn an_images_catalog_runs_its_programs_only_in_the_sandbox() {
    let mut hostile = Hostile::new();
    let data = hostile.initdb();
    // A device node for a loop device whose backing file is a canary of its own: writing the
    // node would write the file.
    let disk = hostile.dir.path().join("disk-canary");
    let disk_canary = Canary::new(disk.clone(), 0o600);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&disk)
        .and_then(|f| f.set_len(1 << 20))
        .unwrap();
    let disk_canary = Canary {
        bytes: std::fs::read(&disk).unwrap(),
        ..disk_canary
    };
    let device = run("losetup", &["--find", "--show", disk.to_str().unwrap()]);
    let device = device.trim().to_string();
    let detach = Detach(device.clone());
    let rdev = std::os::unix::fs::MetadataExt::rdev(&std::fs::metadata(&device).unwrap());
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let node = data.join("evil-disk");
    run(
        "mknod",
        &[
            "-m",
            "0666",
            node.to_str().unwrap(),
            "b",
            &major.to_string(),
            &minor.to_string(),
        ],
    );
    // And a program left running, to outlive the check.
    let attack = format!(
        "{}; dd if=payload of=./evil-disk conv=notrunc,fsync; \
         (sleep {LINGER} </dev/null >/dev/null 2>&1 &); true",
        hostile.attack(&data)
    );
    // An event trigger that runs the attack when verify installs amcheck (CREATE EXTENSION).
    let sockets = hostile.dir.path().join("pg-run");
    let server = PgServer::start(&data, &sockets, false);
    server.sql(&format!(
        "CREATE FUNCTION hostile() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN \
         COPY (SELECT 1) TO PROGRAM '{attack}'; END $$; \
         CREATE EVENT TRIGGER hostile ON ddl_command_end EXECUTE FUNCTION hostile()"
    ));
    drop(server);
    let (_, found) = verify(&hostile.image());
    drop(detach);
    hostile.assert_nothing_outside_changed("verify of an image whose event trigger attacks");
    disk_canary.assert_untouched("verify of an image with a device node");
    // It ran, and was stopped by the sandbox: the database fails its checks or passes them.
    assert_eq!(the_database(&found)["kind"], "postgresql", "{found:#}");
    let lingering = std::process::Command::new("pgrep")
        .args(["-f", &format!("sleep {LINGER}")])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&lingering.stdout).to_string();
    for pid in pids.split_whitespace() {
        let _ = std::process::Command::new("kill").args(["-9", pid]).status();
    }
    assert!(
        pids.trim().is_empty(),
        "a program the image started outlived verify: {pids}"
    );
}

/// How long the program an image leaves behind would sleep: a number no other process has.
const LINGER: u64 = 7_654_321;

/// Detaches a loop device on drop.
struct Detach(String);

impl Drop for Detach {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["--detach", &self.0])
            .status();
    }
}

#[test]
fn links_in_an_image_resolve_inside_it() {
    let mut hostile = Hostile::new();
    // Markers on the verifier, where the image's links point.
    let theirs = hostile.dir.path().join("verifier-probe");
    std::fs::create_dir_all(theirs.join("lib/freezeframe/probe")).unwrap();
    for dir in [theirs.clone(), theirs.join("lib/freezeframe/probe")] {
        std::fs::write(dir.join("verifiers-own.before"), "{}\n").unwrap();
    }
    std::os::unix::fs::symlink(&theirs, hostile.path(".freezeframe-probe")).unwrap();
    std::os::unix::fs::symlink(&theirs, hostile.path("var")).unwrap();
    let (code, found) = verify(&hostile.image());
    assert_eq!(code, 1, "{found:#}");
    assert_eq!(found["markers"], serde_json::json!([]), "{found:#}");
    assert_eq!(found["probe"], "no-markers", "{found:#}");
    hostile.assert_nothing_outside_changed("verify of an image with links out of it");
}

#[test]
fn a_pg_version_that_is_a_path_runs_nothing() {
    let mut hostile = Hostile::new();
    // Programs on the verifier where `/usr/lib/postgresql/{PG_VERSION}/bin` would lead.
    let bin = hostile.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\necho pwned > {}\nchmod 0777 {}\necho pwned > {}\n",
        hostile.root_canary.path.display(),
        hostile.root_canary.path.display(),
        hostile.open_canary.path.display()
    );
    for program in ["postgres", "pg_controldata", "pg_isready"] {
        std::fs::write(bin.join(program), &script).unwrap();
        std::fs::set_permissions(bin.join(program), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let data = hostile.path("pg/data");
    std::fs::create_dir_all(data.join("global")).unwrap();
    std::fs::write(data.join("global/pg_control"), [0u8; 8192]).unwrap();
    std::fs::write(
        data.join("PG_VERSION"),
        format!("../../..{}\n", hostile.dir.path().display()),
    )
    .unwrap();
    run(
        "chown",
        &["-R", "postgres:postgres", hostile.path("pg").to_str().unwrap()],
    );
    let (code, found) = verify(&hostile.image());
    hostile.assert_nothing_outside_changed("verify of an image whose PG_VERSION is a path");
    assert_eq!(code, 1, "{found:#}");
    let database = the_database(&found);
    assert_eq!(database["ok"], false, "{found:#}");
    assert!(
        database["problems"]
            .to_string()
            .contains("not a PostgreSQL version"),
        "{found:#}"
    );
}

#[test]
fn a_pg_wal_that_links_out_of_the_image_never_reaches_the_verifiers_files() {
    let mut hostile = Hostile::new();
    let data = hostile.initdb();
    // The image's WAL moved to a folder of the verifier's (postgres's own, as a cluster's WAL
    // folder here would be), and pg_wal a link to it: a server that followed it would recover
    // from the verifier's files and write into them.
    let theirs = hostile.dir.path().join("verifiers-wal");
    run(
        "cp",
        &[
            "-a",
            data.join("pg_wal").to_str().unwrap(),
            theirs.to_str().unwrap(),
        ],
    );
    std::fs::remove_dir_all(data.join("pg_wal")).unwrap();
    std::os::unix::fs::symlink(&theirs, data.join("pg_wal")).unwrap();
    let before = tree_state(&theirs);
    let (code, found) = verify(&hostile.image());
    assert_eq!(
        tree_state(&theirs),
        before,
        "verify changed the verifier's WAL folder: {found:#}"
    );
    hostile.assert_nothing_outside_changed("verify of an image whose pg_wal links out");
    // Without its WAL the copy does not start: reported, not verified.
    assert_eq!(code, 1, "{found:#}");
    assert_eq!(the_database(&found)["ok"], false, "{found:#}");
}

/// Every file under `dir`: its name, mode and bytes.
fn tree_state(dir: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let bytes = if meta.is_file() {
            std::fs::read(&path).unwrap()
        } else {
            Vec::new()
        };
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
        found.push((path, meta.permissions().mode(), bytes));
    }
    found.sort();
    found
}
