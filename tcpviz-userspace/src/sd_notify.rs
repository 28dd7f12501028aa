//! systemd's readiness protocol (`Type=notify`), without libsystemd: a datagram with
//! `READY=1` (or `STOPPING=1`) to the unix socket named by `NOTIFY_SOCKET`. A name that
//! starts with `@` is in the abstract namespace (the `@` stands for the leading NUL).
//! Without `NOTIFY_SOCKET` (not started by systemd) nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The service manager's variable.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (`KEY=VALUE` lines) to the service manager, if there is one. Returns
/// whether it was sent; a failure is logged, never fatal: the agent works without it.
pub fn notify(state: &str) -> bool {
    let Some(name) = std::env::var_os(NOTIFY_SOCKET) else { return false };
    match send(&name, state) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("cannot notify the service manager at {}: {e}", name.to_string_lossy());
            false
        }
    }
}

/// The agent's hooks are attached: systemd may start what depends on it.
pub fn ready(status: &str) -> bool {
    notify(&format!("READY=1\nSTATUS={}", status.replace('\n', " ")))
}

/// The agent is detaching and writing its session.
pub fn stopping() -> bool {
    notify("STOPPING=1\nSTATUS=stopping: detaching and writing the session")
}

fn send(name: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let addr = address(name)?;
    let socket = UnixDatagram::unbound()?;
    let sent = socket.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(std::io::Error::other("short write"));
    }
    Ok(())
}

fn address(name: &std::ffi::OsStr) -> std::io::Result<SocketAddr> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..])
        }
        Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(name)),
        _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an absolute path nor an @abstract name")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(server: &UnixDatagram) -> String {
        server.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        assert_eq!(received(&server), "READY=1");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("tcpviz-test-{}", std::process::id());
        let server = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        send(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        assert_eq!(received(&server), "STOPPING=1");
    }

    #[test]
    fn rejects_relative_names_and_reports_a_missing_socket() {
        assert!(send(std::ffi::OsStr::new("relative/notify"), "READY=1").is_err());
        assert!(send(std::ffi::OsStr::new("/nonexistent/notify"), "READY=1").is_err());
    }
}
