//! A private D-Bus bus: a `dbus-daemon` of our own, for the demo (the agent serves on it, so
//! nothing touches the machine's own bus) and for the tests.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `dbus-daemon` listening on a socket in a folder of its own; killed on drop.
pub struct PrivateBus {
    pub address: String,
    daemon: Child,
}

const PERMISSIVE: &str = r#"<policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>"#;

/// The default policy of Debian's system bus (/usr/share/dbus-1/system.conf): nothing may own a
/// name or call a method unless a policy file allows it.
const SYSTEM_DEFAULT: &str = r#"<policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>"#;

impl PrivateBus {
    /// Starts a bus with a system-bus-like configuration that lets anyone do anything.
    pub fn start(dir: &Path) -> Result<PrivateBus> {
        PrivateBus::launch(dir, PERMISSIVE)
    }

    /// Starts a bus with the system bus's default policy plus the `policy` file (a packaged
    /// busconfig), activating services from the `.service` files in `service_dir`.
    pub fn system_like(dir: &Path, policy: &Path, service_dir: Option<&Path>) -> Result<PrivateBus> {
        let mut extra = format!("{SYSTEM_DEFAULT}\n  <include>{}</include>", policy.display());
        if let Some(services) = service_dir {
            extra.push_str(&format!("\n  <servicedir>{}</servicedir>", services.display()));
        }
        PrivateBus::launch(dir, &extra)
    }

    fn launch(dir: &Path, policies: &str) -> Result<PrivateBus> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let socket = dir.join("system_bus_socket");
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  {policies}
</busconfig>
"#,
                socket.display()
            ),
        )
        .context("cannot write the bus configuration")?;
        let mut daemon = Command::new("dbus-daemon")
            // Services it activates find their bus here.
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                format!("unix:path={}", socket.display()),
            )
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start dbus-daemon (install the package dbus-daemon)")?;
        for _ in 0..200 {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return Ok(PrivateBus {
                    address: format!("unix:path={}", socket.display()),
                    daemon,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = daemon.kill();
        let _ = daemon.wait();
        bail!("dbus-daemon did not listen on {}", socket.display());
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}
