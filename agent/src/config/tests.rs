use super::defaults::DEFAULT_NAME_TEMPLATE;
use super::*;

fn settings(text: &str) -> Result<Settings, ConfigError> {
    Settings::validate(parse(&[(Path::new("test.toml"), text)])?)
}

const MINIMAL: &str = "[snapshot]\nprovider = \"local-image\"\n";

#[test]
fn defaults_apply_to_a_minimal_file() {
    let s = settings(MINIMAL).unwrap();
    assert_eq!(s.runtime_dir, PathBuf::from("/run/freezeframe"));
    assert_eq!(s.freeze.max_freeze, Duration::from_secs(20));
    assert_eq!(s.freeze.mountpoints, None);
    assert!(s.freeze.exclude.is_empty());
    assert_eq!(s.snapshot.name_template, DEFAULT_NAME_TEMPLATE.parse().unwrap());
    assert_eq!(s.snapshot.keep_last, 0);
    assert_eq!(
        s.snapshot.provider,
        ProviderSettings::LocalImage {
            image_dir: "/var/lib/freezeframe/images".into()
        }
    );
}

#[test]
fn every_key_is_read() {
    let s = settings(
        r#"
        [agent]
        runtime_dir = "/tmp/ff/run/"
        [freeze]
        mountpoints = ["/data", "/srv/./db"]
        exclude = ["/boot"]
        max_freeze = "1500ms"
        [snapshot]
        provider = "local-image"
        name_template = "nightly-{hostname}-{utc:%Y%m%d}"
        [retention]
        keep_last = 7
        [local_image]
        image_dir = "/backup"
        "#,
    )
    .unwrap();
    assert_eq!(s.runtime_dir, PathBuf::from("/tmp/ff/run"));
    assert_eq!(
        s.freeze.mountpoints,
        Some(vec![PathBuf::from("/data"), PathBuf::from("/srv/db")])
    );
    assert_eq!(s.freeze.exclude, vec![PathBuf::from("/boot")]);
    assert_eq!(s.freeze.max_freeze, Duration::from_millis(1500));
    assert_eq!(
        s.snapshot.name_template,
        "nightly-{hostname}-{utc:%Y%m%d}".parse().unwrap()
    );
    assert_eq!(s.snapshot.keep_last, 7);
    for (key, bad, why) in [
        ("name_template", "{host}", "unknown placeholder"),
        ("name_template", "a/{hostname}", "outside placeholders"),
        (
            "name_template",
            "{hostname}-{group}",
            "only snapshot.group_name_template",
        ),
        (
            "group_name_template",
            "{hostname}-{consistency}",
            "has no {group}",
        ),
        (
            "group_name_template",
            "{group}/{hostname}",
            "outside placeholders",
        ),
    ] {
        let err = settings(&format!("[snapshot]\n{key} = \"{bad}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("snapshot.{key}")) && err.contains(why),
            "{bad}: {err}"
        );
    }
    assert_eq!(s.snapshot.provider.name(), "local-image");
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let err = settings("[freeze]\nmax_frezee = \"5s\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_frezee"), "{err}");
    assert!(err.contains("test.toml"), "{err}");
}

#[test]
fn max_freeze_is_bounded() {
    for bad in ["500ms", "301s", "10m"] {
        let err = settings(&format!("{MINIMAL}[freeze]\nmax_freeze = \"{bad}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("freeze.max_freeze") && err.contains("between 1s and 5m"),
            "{err}"
        );
    }
    for good in ["1s", "300s", "5m"] {
        settings(&format!("{MINIMAL}[freeze]\nmax_freeze = \"{good}\"\n")).unwrap();
    }
    let err = settings(&format!("{MINIMAL}[freeze]\nmax_freeze = \"soon\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("like \"30s\""),
        "the error shows how to write it: {err}"
    );
}

#[test]
fn relative_paths_are_refused() {
    let err = settings(&format!("{MINIMAL}[freeze]\nmountpoints = [\"data\"]\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("freeze.mountpoints") && err.contains("absolute"),
        "{err}"
    );
    let err = settings(&format!("{MINIMAL}[local_image]\nimage_dir = \"/a/../b\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("local_image.image_dir"), "{err}");
}

#[test]
fn a_mountpoint_cannot_be_both_listed_and_excluded() {
    let err = settings(&format!(
        "{MINIMAL}[freeze]\nmountpoints = [\"/data\"]\nexclude = [\"/data/\"]\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("/data") && err.contains("remove it from one"),
        "{err}"
    );
}

#[test]
fn the_default_provider_is_digitalocean_and_unknown_ones_are_refused() {
    let s = settings("").unwrap();
    assert_eq!(
        s.snapshot.provider,
        ProviderSettings::DigitalOcean(DigitalOceanSettings {
            api_url: "https://api.digitalocean.com".into(),
            metadata_url: "http://169.254.169.254".into(),
            token_file: "/etc/freezeframe/token".into(),
            droplet_id: None,
            thaw_after: ThawAfter::Registered,
            api_timeout: Duration::from_secs(15),
            volumes: true,
            volume_links: "/dev/disk/by-id".into(),
        })
    );
    let err = settings("[snapshot]\nprovider = \"tape\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown provider `tape`") && err.contains("digitalocean, local-image"),
        "{err}"
    );
}

#[test]
fn the_strategy_is_live_unless_offline_is_asked_for() {
    assert_eq!(settings("").unwrap().snapshot.strategy, Strategy::Live);
    let offline = settings("[snapshot]\nstrategy = \"offline\"\n").unwrap();
    assert_eq!(offline.snapshot.strategy, Strategy::Offline);
    let err = settings("[snapshot]\nstrategy = \"sometimes\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("snapshot.strategy") && err.contains("\"live\" nor \"offline\""),
        "{err}"
    );
}

#[test]
fn digitalocean_keys_are_read_and_checked() {
    let s = settings(
        "[digitalocean]\napi_url = \"http://127.0.0.1:4010/\"\nmetadata_url = \"http://127.0.0.1:9\"\n\
         token_file = \"/run/t\"\ndroplet_id = 42\nthaw_after = \"completed\"\napi_timeout = \"3s\"\n",
    )
    .unwrap();
    let ProviderSettings::DigitalOcean(d) = s.snapshot.provider else {
        panic!("not digitalocean")
    };
    assert_eq!(d.api_url, "http://127.0.0.1:4010");
    assert_eq!(d.droplet_id, Some(42));
    assert_eq!(d.thaw_after, ThawAfter::Completed);
    assert_eq!(d.api_timeout, Duration::from_secs(3));
    for (bad, key) in [
        ("api_url = \"api.digitalocean.com\"", "digitalocean.api_url"),
        ("thaw_after = \"later\"", "digitalocean.thaw_after"),
        ("droplet_id = 0", "digitalocean.droplet_id"),
        ("token_file = \"token\"", "digitalocean.token_file"),
    ] {
        let err = settings(&format!("[digitalocean]\n{bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{bad}: {err}");
    }
}

#[test]
fn the_api_is_reached_over_https_except_on_loopback() {
    for fine in [
        "https://api.digitalocean.com",
        "http://127.0.0.1:4010",
        "http://127.9.9.9",
        "http://localhost:8080/",
        "http://[::1]:4010",
    ] {
        assert!(check_api_url(fine).is_ok(), "{fine}");
        assert!(
            settings(&format!("[digitalocean]\napi_url = {fine:?}\n")).is_ok(),
            "{fine}"
        );
    }
    for hostile in [
        "http://api.digitalocean.com",
        "http://10.0.0.1:4010",
        "http://127.0.0.1.evil.example",
        "http://localhost.evil.example",
        "http://127.0.0.1@evil.example",
        "http://[::ffff:10.0.0.1]",
        "ftp://127.0.0.1",
    ] {
        let err = settings(&format!("[digitalocean]\napi_url = {hostile:?}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("digitalocean.api_url"), "{hostile}: {err}");
        assert!(check_api_url(hostile).is_err(), "{hostile}");
    }
    let cleartext = check_api_url("http://api.digitalocean.com").unwrap_err();
    assert!(
        matches!(cleartext, ApiUrlError::Cleartext { .. }),
        "{cleartext:?}"
    );
    assert!(cleartext.to_string().contains("use https://"), "{cleartext}");
    assert!(matches!(
        check_api_url("ftp://127.0.0.1"),
        Err(ApiUrlError::Scheme { scheme, .. }) if scheme == "ftp"
    ));
    assert!(matches!(
        check_api_url("not a url"),
        Err(ApiUrlError::NotUrl { .. })
    ));
}

#[test]
fn names_are_checked() {
    assert!(crate::naming::check_name("freezeframe-web1.2026_11").is_ok());
    for bad in ["", "-x", "a b", "a/b", &"x".repeat(65)] {
        assert!(crate::naming::check_name(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn later_files_win_key_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("config.toml");
    std::fs::write(
        &main,
        "[snapshot]\nprovider = \"local-image\"\n[freeze]\nmax_freeze = \"10s\"\nexclude = [\"/boot\"]\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("config.d")).unwrap();
    std::fs::write(
        dir.path().join("config.d/50-b.toml"),
        "[freeze]\nmax_freeze = \"3s\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config.d/10-a.toml"),
        "[freeze]\nmax_freeze = \"7s\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("config.d/README"), "not toml, ignored").unwrap();
    let sources = ConfigSources::explicit(&main);
    assert_eq!(sources.paths().count(), 3);
    let s = sources.load().unwrap();
    assert_eq!(
        s.freeze.max_freeze,
        Duration::from_secs(3),
        "50-b.toml is read last"
    );
    assert_eq!(
        s.freeze.exclude,
        vec![PathBuf::from("/boot")],
        "untouched keys survive"
    );
}

#[test]
fn an_explicit_file_must_exist() {
    let err = ConfigSources::explicit(Path::new("/nonexistent/freezeframe.toml"))
        .load()
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/freezeframe.toml"), "{err}");
}

#[test]
fn quiescers_are_read_in_order_and_checked() {
    let s = settings(
        "[[quiescer]]\nkind = \"redis\"\nsocket = \"/run/redis/redis.sock\"\ntimeout = \"5s\"\n\
         [[quiescer]]\nkind = \"redis\"\n",
    )
    .unwrap();
    use crate::config::RedisEndpoint as Endpoint;
    assert_eq!(
        s.quiesce.quiescers,
        vec![
            QuiescerSettings::Redis {
                endpoint: Endpoint::Socket("/run/redis/redis.sock".into()),
                password_file: None,
                timeout: Duration::from_secs(5)
            },
            QuiescerSettings::Redis {
                endpoint: Endpoint::Tcp("127.0.0.1:6379".into()),
                password_file: None,
                timeout: Duration::from_secs(60)
            },
        ]
    );
    // PostgreSQL's CHECKPOINT before the freeze is on unless switched off.
    let s = settings(
        "[[quiescer]]\nkind = \"postgresql\"\n[[quiescer]]\nkind = \"postgresql\"\nport = 5433\n\
         checkpoint = false\n",
    )
    .unwrap();
    let checkpoints: Vec<bool> = s
        .quiesce
        .quiescers
        .iter()
        .map(|q| match q {
            QuiescerSettings::Postgresql { checkpoint, .. } => *checkpoint,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(checkpoints, [true, false]);
    for (bad, expected) in [
        ("kind = \"redis\"\nsocket = \"/s\"\naddress = \"h:1\"", "not both"),
        (
            "kind = \"oracle\"",
            "unknown variant `oracle`, expected one of `mariadb`, `mysql`, `postgresql`, `redis`, `systemd`",
        ),
        ("socket = \"/s\"", "missing field `kind`"),
        (
            "kind = \"redis\"\nport = 1",
            "unknown field `port`, expected one of `socket`, `address`, `password_file`, `timeout`",
        ),
        (
            "kind = \"postgresql\"\naddress = \"h:1\"",
            "unknown field `address`",
        ),
        ("kind = \"redis\"\nportt = 1", "unknown field `portt`"),
        ("kind = \"redis\"\npassword_file = \"pw\"", "absolute path"),
        ("kind = \"mariadb\"\nuser = \"\"", "quiescer.user"),
        ("kind = \"postgresql\"\nunit = \"x\"", "unknown field `unit`"),
        ("kind = \"systemd\"", "needs the `unit`"),
        ("kind = \"systemd\"\nunit = \"dbus\"", "would hang the run"),
        (
            "kind = \"systemd\"\nunit = \"app\"\nmode = \"pause\"",
            "neither \"freeze\" nor \"stop\"",
        ),
        (
            "kind = \"systemd\"\nunit = \"app\"\nsocket = \"/s\"",
            "unknown field `socket`, expected one of `unit`, `mode`, `timeout`",
        ),
    ] {
        let err = settings(&format!("[[quiescer]]\n{bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{bad}: {err}");
    }
    let s = settings(
        "[[quiescer]]\nkind = \"systemd\"\nunit = \"app\"\n[[quiescer]]\nkind = \"mariadb\"\n\
         user = \"backup\"\npassword_file = \"/etc/freezeframe/mariadb-password\"\n",
    )
    .unwrap();
    assert_eq!(
        s.quiesce.quiescers[0],
        QuiescerSettings::Systemd {
            unit: "app.service".into(),
            mode: crate::config::UnitMode::Freeze,
            timeout: Duration::from_secs(60)
        }
    );
    assert!(
        matches!(&s.quiesce.quiescers[1], QuiescerSettings::Mariadb { login, .. }
        if login.user == "backup" && login.password_file.is_some())
    );
    assert!(s.quiesce.auto, "detection is on by default");
    let s = settings("[quiesce]\non_quiesce_failure = \"continue\"\nhook_timeout = \"2s\"\n").unwrap();
    assert_eq!(
        s.quiesce.on_failure,
        crate::transaction::ports::QuiescePolicy::Continue
    );
    assert_eq!(s.quiesce.hook_timeout, Duration::from_secs(2));
    let err = settings("[quiesce]\non_quiesce_failure = \"ignore\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("quiesce.on_quiesce_failure"), "{err}");
}

#[test]
fn scheduled_drills_are_off_unless_a_schedule_is_given() {
    let s = settings("").unwrap();
    assert_eq!(s.verify.schedule, None);
    assert_eq!(s.verify.token_file, Path::new("/etc/freezeframe/drill-token"));
    let s = settings("[verify]\nschedule = \"7d\"\nsize = \"s-1vcpu-2gb\"\n").unwrap();
    assert_eq!(s.verify.schedule, Some(Duration::from_secs(7 * 86400)));
    assert_eq!(s.verify.size.as_deref(), Some("s-1vcpu-2gb"));
    for (bad, expected) in [
        ("schedule = \"5m\"", "between 1h and"),
        ("schedule = \"weekly\"", "is not a duration"),
        ("token_file = \"drill-token\"", "absolute path"),
        ("ssh_identity = \"/etc/my key\"", "holds a space"),
        ("keep = 1", "unknown field `keep`"),
    ] {
        let err = settings(&format!("[verify]\n{bad}\n")).unwrap_err().to_string();
        assert!(err.contains(expected), "{bad}: {err}");
    }
}

#[test]
fn history_and_metrics_default_to_the_packaged_places_and_are_bounded() {
    let s = settings(MINIMAL).unwrap();
    assert_eq!(s.history.file, PathBuf::from("/var/lib/freezeframe/history.json"));
    assert_eq!(s.history.keep, 50);
    assert_eq!(
        s.metrics.textfile_dir,
        Some(PathBuf::from("/var/lib/prometheus/node-exporter"))
    );
    assert_eq!(s.metrics.listen, None);
    let s = settings(&format!(
        "{MINIMAL}[metrics]\ntextfile_dir = \"\"\nlisten = \"[::1]:9846\"\n[history]\nkeep = 1000\n"
    ))
    .unwrap();
    assert_eq!(s.metrics.textfile_dir, None, "\"\" turns the file off");
    assert_eq!(s.metrics.listen, Some("[::1]:9846".parse().unwrap()));
    for (text, key) in [
        ("[history]\nkeep = 0\n", "history.keep"),
        ("[history]\nkeep = 1001\n", "history.keep"),
        ("[history]\nfile = \"history.json\"\n", "history.file"),
        ("[metrics]\nlisten = \"10.0.0.1:9846\"\n", "metrics.listen"),
    ] {
        let err = settings(&format!("{MINIMAL}{text}")).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn an_error_in_a_drop_in_names_that_file_its_line_and_the_key() {
    let main = "[freeze]\nmax_freeze = \"10s\"\n\n[agent]\npublic_read = true\n";
    for (dropin, line, expected) in [
        (
            "# a comment\n[agent]\n\npublic_reed = true\n",
            "line 4, column 1",
            "unknown field `public_reed`, expected one of `runtime_dir`, `idle_exit`, `public_read`, `max_prepare_timeout`",
        ),
        ("[freeze]\nmax_freeze = \"soon\"\n", "line 2, column 14", "`soon` is not a duration"),
        ("[freeze]\nexpedite_rcu = \"yes\"\n", "line 2, column 16", "invalid type: string \"yes\", expected a boolean"),
        (
            "[[quiescer]]\nkind = \"redis\"\n[[quiescer]]\nkind = \"oracle\"\n",
            "line 4, column 8",
            "unknown variant `oracle`",
        ),
    ] {
        let err = parse(&[(Path::new("/etc/main.toml"), main), (Path::new("/etc/config.d/50-x.toml"), dropin)])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("configuration file /etc/config.d/50-x.toml is not valid: TOML parse error at ")
                && err.contains(line)
                && err.contains(expected),
            "{dropin}: {err}"
        );
    }
    // The main file's own error names the main file, after a drop-in was merged over it.
    let err = parse(&[
        (Path::new("/etc/main.toml"), "[agent]\nidle_exit = 5\n"),
        (
            Path::new("/etc/config.d/50-x.toml"),
            "[agent]\npublic_read = true\n",
        ),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(
            "configuration file /etc/main.toml is not valid: TOML parse error at line 2, column 13"
        ) && err.contains("2 | idle_exit = 5\n    |             ^\n  `5` has no unit"),
        "{err}"
    );
}

#[test]
fn a_value_found_wrong_after_the_merge_names_the_file_and_line_that_set_it() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("config.toml");
    std::fs::write(&main, "[history]\nkeep = 10\n").unwrap();
    std::fs::create_dir(dir.path().join("config.d")).unwrap();
    let dropin = dir.path().join("config.d/50-x.toml");
    std::fs::write(&dropin, "# fewer\n\n[history]\nkeep = 0\n").unwrap();
    let err = ConfigSources::explicit(&main).load().unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "invalid `history.keep` in {}, line 4: ",
            dropin.display()
        )),
        "{err}"
    );
    // In a list of tables, the table that has the key.
    std::fs::write(
        &dropin,
        "[[quiescer]]\nkind = \"redis\"\n[[quiescer]]\nkind = \"systemd\"\nunit = \"a b\"\n",
    )
    .unwrap();
    let err = ConfigSources::explicit(&main).load().unwrap_err().to_string();
    assert!(err.contains(&format!("{}, line 5", dropin.display())), "{err}");
}
