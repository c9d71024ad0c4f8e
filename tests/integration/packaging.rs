//! What users meet before the agent runs: the cloud-init user-data example (a new Droplet set
//! up at creation), checked by cloud-init's own schema validator in a Debian root made for it
//! (not on this machine, whose next boot an installed cloud-init would act on).

use freezeframe_tests::container;
use std::path::Path;
use std::process::Command;

/// `cloud-init schema` on `user_data`, in `root`: whether it is valid, and what it said.
fn schema(root: &Path, user_data: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("user-data.yaml");
    std::fs::write(&file, user_data).unwrap();
    // A tmpfs over the root's /tmp, in a mount namespace of its own: the cached root is left as
    // it was.
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t tmpfs tmpfs \"$1/tmp\" && cp \"$2\" \"$1/tmp/user-data.yaml\" && \
             chroot \"$1\" cloud-init schema --config-file /tmp/user-data.yaml",
        )
        .arg("sh")
        .arg(root)
        .arg(&file)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn the_installing_page_shows_the_cloud_init_example_as_it_is_shipped() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = std::fs::read_to_string(root.join("packaging/cloud-init/user-data.yaml")).unwrap();
    let page = std::fs::read_to_string(root.join("docs/src/installing.md")).unwrap();
    // The file's comments (but its first line) are for whoever edits it; the page says the same
    // in prose.
    let body: String = example
        .lines()
        .filter(|l| !l.starts_with('#') || l.starts_with("#cloud-config"))
        .map(|l| format!("{l}\n"))
        .collect();
    let shown = format!("```yaml\n{body}```\n");
    assert!(
        page.contains(&shown),
        "docs/src/installing.md's cloud-init example differs from the file:\n{shown}"
    );
}

#[test]
fn the_cloud_init_example_is_valid_user_data_and_a_mistake_in_it_is_caught() {
    if let Some(why) = container::unavailable() {
        eprintln!("SKIPPED the cloud-init check: {why}");
        return;
    }
    // python3-cffi-backend by name: debootstrap does not resolve the virtual packages
    // python3-cryptography depends on.
    let root = container::debian_root(&["cloud-init", "python3-cffi-backend"]);
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/cloud-init/user-data.yaml"),
    )
    .unwrap();
    let (valid, said) = schema(&root, &example);
    assert!(valid && said.contains("Valid cloud-config"), "{said}");
    // What a hand-edit gets wrong, caught the same way.
    for (wrong, why) in [
        (
            example.replace("permissions: \"0600\"", "permissions: 600"),
            "permissions",
        ),
        (
            example.replace("package_update: true", "package_update: sometimes"),
            "package_update",
        ),
    ] {
        let (valid, said) = schema(&root, &wrong);
        assert!(!valid && said.contains(why), "{why}: {said}");
    }
}

/// The agent package's metadata for cargo-deb, as far as the test reads it.
#[derive(serde::Deserialize)]
struct AgentManifest {
    package: ManifestPackage,
}

#[derive(serde::Deserialize)]
struct ManifestPackage {
    metadata: ManifestMetadata,
}

#[derive(serde::Deserialize)]
struct ManifestMetadata {
    deb: DebMetadata,
}

#[derive(serde::Deserialize)]
struct DebMetadata {
    /// Each: source (relative to agent/), destination, mode.
    assets: Vec<(String, String, String)>,
}

/// The examples the docs point at are in the agent package, where they say, from files that
/// exist: the alert rules and the Grafana dashboard.
#[test]
fn the_agent_package_ships_the_alert_rules_and_the_dashboard_as_examples() {
    let agent = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent");
    let manifest: AgentManifest =
        toml::from_str(&std::fs::read_to_string(agent.join("Cargo.toml")).unwrap()).unwrap();
    let assets = manifest.package.metadata.deb.assets;
    let examples = "usr/share/doc/freezeframe-agent/examples/";
    for shipped in [
        "../packaging/prometheus/freezeframe-alerts.yml",
        "../packaging/grafana/freezeframe.json",
    ] {
        let (source, _, mode) = assets
            .iter()
            .find(|(source, to, _)| source == shipped && to == examples)
            .unwrap_or_else(|| panic!("{shipped} is not in the agent package's {examples}"));
        assert!(agent.join(source).is_file(), "{source} does not exist");
        assert_eq!(mode, "644", "{source}");
    }
    // Every packaged file from the source tree exists (built ones come from target/).
    for (source, _, _) in assets.iter().filter(|(s, _, _)| s.starts_with("../")) {
        assert!(
            agent.join(source).is_file(),
            "{source} is packaged but does not exist"
        );
    }
    let page = std::fs::read_to_string(agent.join("../docs/src/metrics.md")).unwrap();
    assert!(
        page.contains(&format!("/{examples}freezeframe.json")),
        "docs/src/metrics.md does not say where the dashboard is installed"
    );
}
