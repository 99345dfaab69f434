//! `systemd:`: listening sockets handed over by systemd's socket activation.
//!
//! The protocol is small (sd_listen_fds(3): `LISTEN_PID`, `LISTEN_FDS`, descriptors from 3 on),
//! so it is written here rather than linking libsystemd.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use rustix::net::{SocketAddrUnix, SocketType, sockopt};

use super::address::escape;
use super::{Listener, ListenerKind, TransportError};

/// The first descriptor systemd passes.
const FIRST_FD: RawFd = 3;
/// More than any socket unit passes; a bound on a corrupt LISTEN_FDS.
const MAX_FDS: RawFd = 4096;

/// The descriptors systemd passed to this process, close-on-exec from now on.
///
/// They are ours only if `LISTEN_PID` is our pid. The variables are removed either way, so that
/// the services the bus starts do not take them for their own; call this at start-up, before
/// any other thread exists, and once (a second call finds nothing).
pub fn systemd_listen_fds() -> Vec<OwnedFd> {
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| pid == std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<RawFd>().ok())
        .unwrap_or(0);
    // SAFETY: changing the environment is sound while no other thread reads it, which the
    // caller ensures (see above).
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if !for_us || count <= 0 {
        return Vec::new();
    }
    if count > MAX_FDS {
        tracing::warn!("ignoring LISTEN_FDS={count}: more descriptors than any socket unit passes");
        return Vec::new();
    }
    (FIRST_FD..FIRST_FD + count)
        .filter_map(|raw| {
            // SAFETY: fcntl on a number that may not be an open descriptor only fails.
            let flags = unsafe { libc::fcntl(raw, libc::F_GETFD) };
            if flags < 0 {
                tracing::warn!("LISTEN_FDS names descriptor {raw}, which is not open");
                return None;
            }
            // SAFETY: as above; the descriptor is open.
            unsafe { libc::fcntl(raw, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
            // SAFETY: systemd passed this open descriptor to us, and nothing else owns it:
            // the variables that named it are gone.
            Some(unsafe { OwnedFd::from_raw_fd(raw) })
        })
        .collect()
}

pub(super) fn listen(guid: &str) -> Result<Vec<Listener>, TransportError> {
    let fds = systemd_listen_fds();
    if fds.is_empty() {
        return Err(TransportError::CannotListen("No socket received.".into()));
    }
    fds.into_iter().map(|fd| listener(fd, guid)).collect()
}

/// A passed descriptor as a listener, if it is a listening stream socket.
fn listener(fd: OwnedFd, guid: &str) -> Result<Listener, TransportError> {
    let cannot = |text: &str| TransportError::CannotListen(text.into());
    let listening = sockopt::socket_type(&fd) == Ok(SocketType::STREAM)
        && sockopt::socket_acceptconn(&fd) == Ok(true);
    if !listening {
        return Err(cannot("Passed socket has wrong type."));
    }
    rustix::io::ioctl_fionbio(&fd, true)
        .map_err(|e| cannot(&format!("Failed to make a passed socket non-blocking: {e}")))?;
    let local = rustix::net::getsockname(&fd)
        .map_err(|e| cannot(&format!("Failed to read address from socket: {e}")))?;
    let (kind, address) = if let Ok(unix) = SocketAddrUnix::try_from(local.clone()) {
        let address = if let Some(path) = unix.path() {
            format!("unix:path={}", escape(&path.to_string_lossy()))
        } else if let Some(name) = unix.abstract_name() {
            format!("unix:abstract={}", escape(&String::from_utf8_lossy(name)))
        } else {
            return Err(cannot("Passed socket has no address."));
        };
        (ListenerKind::Unix, address)
    } else if let Ok(inet) = std::net::SocketAddr::try_from(local) {
        let family = if inet.is_ipv4() { "ipv4" } else { "ipv6" };
        let host = escape(&inet.ip().to_string());
        let address = format!("tcp:host={host},port={},family={family}", inet.port());
        (ListenerKind::Tcp, address)
    } else {
        return Err(cannot("Passed socket has wrong family."));
    };
    Ok(Listener {
        fd,
        kind,
        address: format!("{address},guid={guid}"),
        // The socket unit owns the file.
        cleanup: None,
    })
}
