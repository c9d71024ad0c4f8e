//! sd_notify(3): readiness and status for systemd, over the datagram socket in `$NOTIFY_SOCKET`.
//! Sending a datagram writes to no filesystem, so status can be reported inside the frozen window.

use std::os::unix::net::UnixDatagram;

/// A connection to the service manager's notification socket, if there is one.
pub(crate) struct Notifier {
    socket: Option<UnixDatagram>,
}

impl Notifier {
    /// Connects to `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket); without it,
    /// or if it cannot be reached, notifications are dropped.
    pub(crate) fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|addr| {
            let socket = UnixDatagram::unbound().ok()?;
            let addr = addr.to_string_lossy().into_owned();
            let connected = match addr.strip_prefix('@') {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).ok()?;
                    socket.connect_addr(&addr)
                }
                None => socket.connect(&addr),
            };
            connected.ok()?;
            socket.set_nonblocking(true).ok()?;
            Some(socket)
        });
        Notifier { socket }
    }

    /// Sends one notification such as `STATUS=...`; never blocks, never fails the caller.
    pub(crate) fn send(&self, message: &str) {
        if let Some(s) = &self.socket {
            let _ = s.send(message.as_bytes());
        }
    }

    /// `STATUS=<text>`.
    pub(crate) fn status(&self, text: &str) {
        self.send(&format!("STATUS={text}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reaches_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let socket = UnixDatagram::unbound().unwrap();
        socket.connect(&path).unwrap();
        let n = Notifier { socket: Some(socket) };
        n.status("frozen");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=frozen");
        Notifier { socket: None }.status("dropped quietly");
    }
}
