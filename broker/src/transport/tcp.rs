//! `tcp:` addresses: `host=`, `port=`, `family=` and `bind=`.
//!
//! As dbus-daemon: sockets are bound to every address that `bind` (default: `host`; `*` for
//! every interface) resolves to, all on one port (with port 0 or none, the first socket picks
//! it); the printed address names `host`, that port, and the family when all sockets share one.
//! Every failure here is "could not listen", after which dbus-daemon tries the next `;`
//! alternative. Differences: ports must be numbers (dbus-daemon also takes service names from
//! /etc/services and prints 99999 as it was given), and `nonce-tcp:` is not supported.
//!
//! TCP peers have no credentials: they can authenticate only with ANONYMOUS.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;

use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};

use super::address::{Address, escape};
use super::{Listener, ListenerKind, TransportError};

/// How many connections may wait to be accepted: dbus-daemon's number for TCP.
const BACKLOG: i32 = 30;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

pub(super) fn listen(address: &Address, guid: &str) -> Result<Vec<Listener>, TransportError> {
    let host = address.get("host").unwrap_or("localhost");
    let bind = address.get("bind").unwrap_or(host);
    let port_text = address.get("port").unwrap_or("0");
    let family = match address.get("family") {
        None => None,
        Some("ipv4") => Some(Family::V4),
        Some("ipv6") => Some(Family::V6),
        Some(other) => return Err(cannot(format!("Unknown address family {other}"))),
    };
    let mut port: u16 = port_text.parse().map_err(|_| {
        cannot(format!(
            "Failed to lookup host/port: \"{bind}:{port_text}\": the port is not a number from \
             0 to 65535"
        ))
    })?;
    let mut sockets: Vec<(OwnedFd, SocketAddr)> = Vec::new();
    let mut failures = Vec::new();
    for mut candidate in resolve(bind, port, family)? {
        if port != 0 {
            candidate.set_port(port);
        }
        // Like dbus-daemon, a failure on one address is not fatal: IPv6 may be off, or a
        // dual-stack socket may already cover the IPv4 address.
        match bound_socket(candidate) {
            Ok((fd, bound)) => {
                port = bound.port();
                sockets.push((fd, bound));
            }
            Err(e) => failures.push(format!("{candidate}: {e}")),
        }
    }
    if sockets.is_empty() {
        return Err(cannot(format!(
            "Failed to bind socket \"{bind}:{port_text}\": {}",
            failures.join("; ")
        )));
    }
    let family = if sockets.iter().all(|(_, a)| a.is_ipv4()) {
        ",family=ipv4"
    } else if sockets.iter().all(|(_, a)| a.is_ipv6()) {
        ",family=ipv6"
    } else {
        ""
    };
    let address = format!("tcp:host={},port={port}{family},guid={guid}", escape(host));
    Ok(sockets
        .into_iter()
        .map(|(fd, _)| Listener {
            fd,
            kind: ListenerKind::Tcp,
            address: address.clone(),
            cleanup: None,
        })
        .collect())
}

/// The addresses to bind. Name resolution may block; it happens once, at start-up.
fn resolve(
    bind: &str,
    port: u16,
    family: Option<Family>,
) -> Result<Vec<SocketAddr>, TransportError> {
    let all: Vec<SocketAddr> = if bind == "*" {
        vec![
            (Ipv4Addr::UNSPECIFIED, port).into(),
            (Ipv6Addr::UNSPECIFIED, port).into(),
        ]
    } else {
        (bind, port)
            .to_socket_addrs()
            .map_err(|e| {
                cannot(format!(
                    "Failed to lookup host/port: \"{bind}:{port}\": {e}"
                ))
            })?
            .collect()
    };
    let mut wanted: Vec<SocketAddr> = all
        .into_iter()
        .filter(|a| match family {
            Some(Family::V4) => a.is_ipv4(),
            Some(Family::V6) => a.is_ipv6(),
            None => true,
        })
        .collect();
    wanted.dedup();
    if wanted.is_empty() {
        let which = if family == Some(Family::V4) {
            "IPv4"
        } else {
            "IPv6"
        };
        return Err(cannot(format!(
            "Failed to lookup host/port: \"{bind}:{port}\": no {which} address"
        )));
    }
    Ok(wanted)
}

/// A non-blocking, close-on-exec TCP socket listening on `addr`, and the address it got.
fn bound_socket(addr: SocketAddr) -> rustix::io::Result<(OwnedFd, SocketAddr)> {
    let domain = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket_with(
        domain,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    // Nagle's algorithm would hold back the first small messages of every connection;
    // accepted sockets inherit this.
    sockopt::set_tcp_nodelay(&fd, true)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, BACKLOG)?;
    let bound = SocketAddr::try_from(rustix::net::getsockname(&fd)?)
        .map_err(|_| rustix::io::Errno::AFNOSUPPORT)?;
    Ok((fd, bound))
}

fn cannot(text: String) -> TransportError {
    TransportError::CannotListen(text)
}
