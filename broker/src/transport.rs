//! Listening sockets for the addresses dbus-daemon listens on, and the credentials of the peers
//! that connect to them.
//!
//! [`listen`] takes one `<listen>` element's address (or `--address`). Like dbus-daemon, the
//! `;`-separated entries of one address are alternatives: the first that can be listened on is
//! used, and a later one only when an earlier one could not bind (an address that is wrong in
//! itself is an error at once). Every listener is non-blocking and close-on-exec, and knows the
//! address clients connect to, with the bus's guid.

mod address;
mod credentials;
mod systemd;
mod tcp;
mod unix;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use rustix::io::Errno;
use rustix::net::{SocketFlags, sockopt};

pub use address::{Address, escape, parse_addresses};
pub use credentials::{PeerCredentials, peer_credentials, user_groups};
pub use systemd::systemd_listen_fds;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// The address is wrong in itself (syntax, missing or conflicting keys).
    BadAddress(String),
    /// The address is fine but could not be listened on (bind failed, no socket passed, …).
    CannotListen(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::BadAddress(text) | TransportError::CannotListen(text) => {
                f.write_str(text)
            }
        }
    }
}

impl std::error::Error for TransportError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    Unix,
    Tcp,
}

/// A listening socket and the address clients use to reach it.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    kind: ListenerKind,
    /// The connectable address with the bus's guid, e.g.
    /// `unix:path=/tmp/dbus-AbC123,guid=…` or `tcp:host=localhost,port=43711,family=ipv4,guid=…`.
    pub address: String,
    /// The socket file to remove when the listener is dropped.
    cleanup: Option<SocketFile>,
}

/// A socket file we made, known by its inode so that we never remove another one that took
/// its place.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    device: u64,
    inode: u64,
}

/// An accepted connection: non-blocking and close-on-exec.
#[derive(Debug)]
pub struct Accepted {
    pub fd: OwnedFd,
    pub credentials: PeerCredentials,
}

impl Listener {
    pub fn is_unix(&self) -> bool {
        self.kind == ListenerKind::Unix
    }

    pub fn kind(&self) -> ListenerKind {
        self.kind
    }

    /// Accept one waiting connection, with its peer's credentials; None when none is waiting.
    pub fn accept(&self) -> io::Result<Option<Accepted>> {
        loop {
            match rustix::net::accept_with(&self.fd, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
                Ok(fd) => {
                    let credentials = match self.kind {
                        ListenerKind::Unix => peer_credentials(fd.as_fd()),
                        ListenerKind::Tcp => {
                            // Inherited from the listener on Linux; set in case it is not.
                            let _ = sockopt::set_tcp_nodelay(&fd, true);
                            PeerCredentials::default()
                        }
                    };
                    return Ok(Some(Accepted { fd, credentials }));
                }
                Err(Errno::AGAIN) => return Ok(None),
                // The client gave up before we took it, or (accept(2) on Linux) a network
                // error already pending on the new connection: take the next one.
                Err(
                    Errno::INTR
                    | Errno::CONNABORTED
                    | Errno::PROTO
                    | Errno::NETDOWN
                    | Errno::NOPROTOOPT
                    | Errno::HOSTDOWN
                    | Errno::NONET
                    | Errno::HOSTUNREACH
                    | Errno::OPNOTSUPP
                    | Errno::NETUNREACH,
                ) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(file) = &self.cleanup {
            file.remove();
        }
    }
}

/// Listen on `address`: one dbus-daemon listen address, or alternatives separated by `;`.
///
/// Several listeners come back when a TCP host has several addresses, or systemd passed
/// several sockets.
pub fn listen(address: &str, guid: &str) -> Result<Vec<Listener>, TransportError> {
    let entries = parse_addresses(address)?;
    let mut first_failure = None;
    for entry in &entries {
        let listened = match entry.transport.as_str() {
            "unix" => unix::listen(entry, guid).map(|l| vec![l]),
            "tcp" => tcp::listen(entry, guid),
            "systemd" => systemd::listen(guid),
            "nonce-tcp" => Err(TransportError::CannotListen(
                "nonce-tcp addresses are not supported by telbus".into(),
            )),
            // Not ours to handle: perhaps a later alternative is.
            _ => continue,
        };
        match listened {
            Ok(listeners) => return Ok(listeners),
            Err(e @ TransportError::BadAddress(_)) => return Err(e),
            Err(e @ TransportError::CannotListen(_)) => {
                first_failure.get_or_insert(e);
            }
        }
    }
    Err(first_failure.unwrap_or_else(|| {
        TransportError::BadAddress(format!("Unknown address type '{}'", entries[0].transport))
    }))
}

/// The addresses of `listeners` for `--print-address` and DBUS_STARTER_ADDRESS: `;`-separated,
/// each once (the sockets of one TCP address share it).
pub fn address_list(listeners: &[Listener]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for listener in listeners {
        if !seen.contains(&listener.address.as_str()) {
            seen.push(&listener.address);
        }
    }
    seen.join(";")
}
