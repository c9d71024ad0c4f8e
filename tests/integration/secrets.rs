//! Where the API token must not go: into the environment of what the agent starts (hooks, and
//! the database clients it runs as the database's user), into the ssh the CLI starts, or in the
//! clear across the network. And what the CLI's ssh may not give the host: the user's ssh agent
//! or display.

use freezeframe_tests::*;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CANARY: &str = "dop_v1_canary_token_that_must_not_travel";

fn executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// As the attacker: the postgres user reading its psql's environment, a hook's author reading
/// its own. The agent runs with DIGITALOCEAN_TOKEN set; a hook, psql (through `runuser`, a
/// stand-in found on PATH as the agent finds it) and the MariaDB client (likewise) each write
/// their environment down, and none holds the token.
#[test]
fn no_hook_or_database_client_inherits_the_api_token() {
    let fs = scratch_fs(Fs::Ext4);
    let dir = fs.dir.path();
    let config = dir.join("etc/config.toml");
    write_config(
        &config,
        &[&fs.mountpoint],
        &dir.join("run"),
        &dir.join("images"),
        "10s",
    );
    let seen = dir.join("seen");
    let bin = dir.join("bin");
    for d in [&seen, &bin, &dir.join("etc/hooks.d")] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    executable(
        &dir.join("etc/hooks.d/10-env"),
        &format!("#!/bin/sh\nenv > {}/hook-$1\n", seen.display()),
    );
    for program in ["runuser", "mariadb"] {
        executable(
            &bin.join(program),
            &format!(
                "#!/bin/sh\nenv > {}/{program}\necho 'stand-in: no server here' >&2\nexit 1\n",
                seen.display()
            ),
        );
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let plain = std::fs::read_to_string(&config).unwrap();
    // One run each: a quiescer whose check fails stops the run before the hooks.
    for (n, (quiescer, children)) in [
        ("", &["hook-freeze", "hook-thaw"][..]),
        (
            format!(
                "[[quiescer]]\nkind = \"postgresql\"\nsocket_dir = {:?}\n",
                dir.display().to_string()
            )
            .as_str(),
            &["runuser"][..],
        ),
        (
            format!(
                "[[quiescer]]\nkind = \"mariadb\"\nsocket = {:?}\n",
                dir.join("mysqld.sock").display().to_string()
            )
            .as_str(),
            &["mariadb"][..],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(&config, format!("{plain}\n{quiescer}")).unwrap();
        let out = Command::new(agent_bin())
            .arg("--config")
            .arg(&config)
            .args(["snapshot", "--json", "--name", &format!("run-{n}")])
            .env("DIGITALOCEAN_TOKEN", CANARY)
            .env("PATH", &path)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for child in children {
            let env = std::fs::read_to_string(seen.join(child))
                .unwrap_or_else(|e| panic!("{child} did not run ({e}):\n{said}"));
            assert!(
                env.contains("PATH=") && !env.contains(CANARY) && !env.contains("DIGITALOCEAN_TOKEN"),
                "{child} inherited the token:\n{env}"
            );
        }
        assert!(!said.contains(CANARY), "{said}");
    }
}

/// The ssh the CLI starts for `-H`: no agent or X11 forwarding whatever the user's options
/// say, and no token in its environment.
#[test]
fn the_clis_ssh_forwards_nothing_and_carries_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let ssh = dir.path().join("ssh");
    let (argv, env) = (dir.path().join("argv"), dir.path().join("env"));
    executable(
        &ssh,
        &format!(
            "#!/bin/sh\necho \" $* \" > {}\nenv > {}\n\
             echo 'ssh: connect to host db1 port 22: Connection refused' >&2\nexit 255\n",
            argv.display(),
            env.display()
        ),
    );
    let out = Command::new(cli_bin())
        .arg("--ssh-command")
        .arg(format!("{} -A -X -o ForwardAgent=yes", ssh.display()))
        .args(["-H", "root@db1", "status"])
        .env("DIGITALOCEAN_TOKEN", CANARY)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let argv = std::fs::read_to_string(&argv).unwrap();
    // `-a` and `-x` after the user's `-A` and `-X`: the last of them wins.
    let last = |words: [&str; 2]| {
        words
            .iter()
            .map(|w| {
                argv.rfind(&format!(" {w} "))
                    .unwrap_or_else(|| panic!("{w} not in {argv}"))
            })
            .collect::<Vec<_>>()
    };
    let agent = last(["-A", "-a"]);
    assert!(agent[0] < agent[1], "{argv}");
    let x11 = last(["-X", "-x"]);
    assert!(x11[0] < x11[1], "{argv}");
    assert!(argv.contains(" ForwardX11=no "), "{argv}");
    let env = std::fs::read_to_string(&env).unwrap();
    assert!(
        !env.contains(CANARY) && !env.contains("DIGITALOCEAN_TOKEN"),
        "ssh inherited the token:\n{env}"
    );
}

/// As the attacker: a listener on the path to an API given as plain http. The CLI refuses the
/// URL (exit 2, a usage error) and sends it nothing, the token least of all. (0.0.0.0 is not a
/// loopback address, yet reaches this machine: the only way to listen on the attacker's side
/// here without a network.)
#[test]
fn the_cli_sends_no_token_to_a_plain_http_api_off_this_machine() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let heard = Arc::new(Mutex::new(String::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (heard, stop) = (heard.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut peer, _)) => {
                        peer.set_nonblocking(false).unwrap();
                        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        let mut buf = [0u8; 4096];
                        let n = peer.read(&mut buf).unwrap_or(0);
                        heard
                            .lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buf[..n]));
                        let _ = peer.write_all(
                            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
    };
    let out = Command::new(cli_bin())
        .args([
            "--api-url",
            &format!("http://0.0.0.0:{port}"),
            "--json",
            "--tag",
            "web",
            "status",
        ])
        .env("DIGITALOCEAN_TOKEN", CANARY)
        .output()
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    thread.join().unwrap();
    let heard = heard.lock().unwrap().clone();
    assert!(heard.is_empty(), "the API's address heard:\n{heard}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--api-url") && stderr.contains("use https://"),
        "{stderr}"
    );
    let document: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(document["exit"], 2, "{document}");
    // On this machine, plain http stays allowed (a simulator, a local proxy).
    let out = Command::new(cli_bin())
        .args(["--api-url", "http://127.0.0.1:9", "--tag", "web", "status"])
        .env("DIGITALOCEAN_TOKEN", CANARY)
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("use https://"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
