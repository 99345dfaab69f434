//! Listening sockets for the addresses dbus-daemon accepts, and the credentials of the peers
//! that connect to them.
//!
//! zbus parses client addresses, but a listening bus needs what a client never does: picking a
//! random socket name in `unix:dir=`/`unix:tmpdir=`, `unix:runtime=yes`, port 0, sockets handed
//! over by systemd. The parser here is the specification's `transport:key=value,…` grammar with
//! its percent-escapes, which is short.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use rustix::net::{
    AddressFamily, SocketAddrUnix, SocketFlags, SocketType, bind, listen as listen_on, socket_with,
    sockopt,
};

/// How many connections may wait to be accepted, as dbus-daemon asks for.
const BACKLOG: i32 = 30;

#[derive(Debug)]
pub struct TransportError(pub String);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TransportError {}

fn error(text: impl Into<String>) -> TransportError {
    TransportError(text.into())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    Unix,
    Tcp,
}

/// A listening socket and the address clients use to reach it.
pub struct Listener {
    fd: OwnedFd,
    kind: ListenerKind,
    /// The connectable address, with the bus's guid, as printed by `--print-address`.
    pub address: String,
    /// A socket file to remove when the bus stops.
    cleanup: Option<PathBuf>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.cleanup {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// An accepted connection.
pub struct Accepted {
    pub fd: OwnedFd,
    pub credentials: PeerCredentials,
}

/// What the kernel says about the process at the other end of a socket.
#[derive(Debug, Default)]
pub struct PeerCredentials {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub pid: Option<u32>,
    /// Supplementary groups (SO_PEERGROUPS), sorted, with the primary group.
    pub groups: Vec<u32>,
    /// The LSM label (SO_PEERSEC), when the kernel has one.
    pub security_label: Option<Vec<u8>>,
    /// A pidfd of the peer (SO_PEERPIDFD), when the kernel offers it.
    pub pidfd: Option<OwnedFd>,
}

impl Listener {
    pub fn is_unix(&self) -> bool {
        self.kind == ListenerKind::Unix
    }

    /// Accept one waiting connection; None when there is none.
    pub fn accept(&self) -> io::Result<Option<Accepted>> {
        loop {
            match rustix::net::accept_with(&self.fd, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
                Ok(fd) => {
                    let credentials = match self.kind {
                        ListenerKind::Unix => peer_credentials(fd.as_fd()),
                        ListenerKind::Tcp => PeerCredentials::default(),
                    };
                    return Ok(Some(Accepted { fd, credentials }));
                }
                Err(rustix::io::Errno::AGAIN) => return Ok(None),
                Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The credentials of the peer of a connected unix socket.
pub fn peer_credentials(fd: BorrowedFd<'_>) -> PeerCredentials {
    let mut creds = PeerCredentials::default();
    if let Ok(ucred) = sockopt::socket_peercred(fd) {
        creds.uid = Some(ucred.uid.as_raw());
        creds.gid = Some(ucred.gid.as_raw());
        creds.pid = Some(ucred.pid.as_raw_nonzero().get() as u32);
    }
    // The kernel reports supplementary groups only; like dbus-broker, include the primary one.
    let mut groups = peer_groups(fd).unwrap_or_default();
    groups.extend(creds.gid);
    groups.sort_unstable();
    groups.dedup();
    creds.groups = groups;
    creds.security_label = peer_security_label(fd);
    creds.pidfd = peer_pidfd(fd);
    creds
}

/// SO_PEERGROUPS (Linux 4.13): not wrapped by rustix, so through libc.
fn peer_groups(fd: BorrowedFd<'_>) -> Option<Vec<u32>> {
    use std::os::fd::AsRawFd;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the buffer is `len` bytes long and getsockopt writes at most that.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 {
            groups.truncate(len as usize / std::mem::size_of::<libc::gid_t>());
            groups.sort_unstable();
            groups.dedup();
            return Some(groups);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && groups.len() < 65536 {
            groups.resize(
                (len as usize / std::mem::size_of::<libc::gid_t>()).max(groups.len() * 2),
                0,
            );
            continue;
        }
        return None;
    }
}

/// SO_PEERSEC: the peer's LSM label, if the kernel has a labelling LSM.
fn peer_security_label(fd: BorrowedFd<'_>) -> Option<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; 256];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the buffer is `len` bytes long.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERSEC,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 || len == 0 {
        return None;
    }
    buf.truncate(len as usize);
    while buf.last() == Some(&0) {
        buf.pop();
    }
    // "unconfined" without an LSM stacking label carries no information; keep it anyway, as
    // dbus-daemon reports whatever the kernel says.
    (!buf.is_empty()).then_some(buf)
}

/// SO_PEERPIDFD (Linux 6.5).
fn peer_pidfd(fd: BorrowedFd<'_>) -> Option<OwnedFd> {
    use std::os::fd::AsRawFd;
    const SO_PEERPIDFD: libc::c_int = 77;
    let mut pidfd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: an int-sized buffer.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut pidfd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    // SAFETY: on success the kernel gave us a new descriptor that we now own.
    (rc == 0 && pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) })
}

/// One `transport:key=value,…` address.
#[derive(Debug, PartialEq)]
pub struct Address {
    pub transport: String,
    pub keys: Vec<(String, String)>,
}

impl Address {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.keys
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parse a `;`-separated list of addresses.
pub fn parse_addresses(text: &str) -> Result<Vec<Address>, TransportError> {
    text.split(';')
        .filter(|a| !a.is_empty())
        .map(parse_address)
        .collect()
}

fn parse_address(text: &str) -> Result<Address, TransportError> {
    let (transport, rest) = text
        .split_once(':')
        .ok_or_else(|| error(format!("Address does not contain a colon: {text}")))?;
    if transport.is_empty() {
        return Err(error(format!("Address has an empty transport: {text}")));
    }
    let mut keys = Vec::new();
    for pair in rest.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| error(format!("Address element has no '=': {pair}")))?;
        if key.is_empty() {
            return Err(error(format!("Address element has an empty key: {pair}")));
        }
        keys.push((key.to_string(), unescape(value)?));
    }
    Ok(Address {
        transport: transport.to_string(),
        keys,
    })
}

fn unescape(value: &str) -> Result<String, TransportError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| error(format!("Bad %-escape in address value: {value}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| error(format!("Address value is not UTF-8: {value}")))
}

/// Escape a value for an address, as the specification asks (all but a few safe bytes).
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_/.\\*".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

fn random_name() -> String {
    let mut bytes = [0u8; 8];
    let _ = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let tail: String = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    format!("dbus-{tail}")
}

/// Listen on every address of `text` (one address or several separated by `;`).
pub fn listen(text: &str, guid: &str) -> Result<Vec<Listener>, TransportError> {
    let mut listeners = Vec::new();
    for address in parse_addresses(text)? {
        listeners.extend(listen_one(&address, guid)?);
    }
    if listeners.is_empty() {
        return Err(error(format!("Empty address '{text}'")));
    }
    Ok(listeners)
}

fn unix_socket() -> Result<OwnedFd, TransportError> {
    socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| error(format!("Failed to create socket: {e}")))
}

fn bind_unix(addr: &SocketAddrUnix, shown: &str) -> Result<OwnedFd, TransportError> {
    let fd = unix_socket()?;
    bind(&fd, addr).map_err(|e| error(format!("Failed to bind socket \"{shown}\": {e}")))?;
    listen_on(&fd, BACKLOG)
        .map_err(|e| error(format!("Failed to listen on socket \"{shown}\": {e}")))?;
    Ok(fd)
}

fn listen_one(address: &Address, guid: &str) -> Result<Vec<Listener>, TransportError> {
    match address.transport.as_str() {
        "unix" => listen_unix(address, guid).map(|l| vec![l]),
        "tcp" => listen_tcp(address, guid).map(|l| vec![l]),
        "systemd" => listen_systemd(guid),
        other => Err(error(format!(
            "Unknown address transport '{other}' (known: unix, tcp, systemd)"
        ))),
    }
}

fn listen_unix(address: &Address, guid: &str) -> Result<Listener, TransportError> {
    let path = address.get("path");
    let abstract_name = address.get("abstract");
    let dir = address.get("dir");
    let tmpdir = address.get("tmpdir");
    let runtime = address.get("runtime");
    let given = [path, abstract_name, dir, tmpdir, runtime]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if given != 1 {
        return Err(error(
            "unix address must have exactly one of path, abstract, dir, tmpdir or runtime",
        ));
    }
    if let Some(path) = path {
        let addr = SocketAddrUnix::new(path).map_err(|e| error(format!("bad path {path}: {e}")))?;
        let fd = bind_unix(&addr, path)?;
        return Ok(Listener {
            fd,
            kind: ListenerKind::Unix,
            address: format!("unix:path={},guid={guid}", escape(path)),
            cleanup: Some(PathBuf::from(path)),
        });
    }
    if let Some(name) = abstract_name {
        let addr = SocketAddrUnix::new_abstract_name(name.as_bytes())
            .map_err(|e| error(format!("bad abstract name {name}: {e}")))?;
        let fd = bind_unix(&addr, name)?;
        return Ok(Listener {
            fd,
            kind: ListenerKind::Unix,
            address: format!("unix:abstract={},guid={guid}", escape(name)),
            cleanup: None,
        });
    }
    if let Some(value) = runtime {
        if value != "yes" {
            return Err(error(format!("unix:runtime must be 'yes', not '{value}'")));
        }
        let dir = std::env::var("XDG_RUNTIME_DIR")
            .map_err(|_| error("unix:runtime=yes needs XDG_RUNTIME_DIR to be set"))?;
        let path = format!("{dir}/bus");
        let addr = SocketAddrUnix::new(path.as_str())
            .map_err(|e| error(format!("bad path {path}: {e}")))?;
        // A stale socket from a bus that is gone would make bind fail: replace it, as
        // dbus-daemon does for this address.
        if std::os::unix::net::UnixStream::connect(&path).is_err() {
            let _ = std::fs::remove_file(&path);
        }
        let fd = bind_unix(&addr, &path)?;
        return Ok(Listener {
            fd,
            kind: ListenerKind::Unix,
            address: format!("unix:path={},guid={guid}", escape(&path)),
            cleanup: Some(PathBuf::from(path)),
        });
    }
    // dir= and tmpdir=: a random name in that directory. dbus-daemon makes tmpdir sockets
    // abstract on Linux, and dir sockets real files.
    let (dir, abstract_socket) = match (dir, tmpdir) {
        (Some(d), _) => (d, false),
        (_, Some(d)) => (d, true),
        _ => unreachable!("one key was given"),
    };
    for _ in 0..8 {
        let path = format!("{dir}/{}", random_name());
        let result = if abstract_socket {
            SocketAddrUnix::new_abstract_name(path.as_bytes())
                .map_err(|e| error(format!("bad name {path}: {e}")))
                .and_then(|addr| bind_unix(&addr, &path))
        } else {
            SocketAddrUnix::new(path.as_str())
                .map_err(|e| error(format!("bad path {path}: {e}")))
                .and_then(|addr| bind_unix(&addr, &path))
        };
        match result {
            Ok(fd) => {
                let (key, cleanup) = if abstract_socket {
                    ("abstract", None)
                } else {
                    ("path", Some(PathBuf::from(&path)))
                };
                return Ok(Listener {
                    fd,
                    kind: ListenerKind::Unix,
                    address: format!("unix:{key}={},guid={guid}", escape(&path)),
                    cleanup,
                });
            }
            Err(e) if e.0.contains("in use") => continue,
            Err(e) => return Err(e),
        }
    }
    Err(error(format!("Failed to find a free socket name in {dir}")))
}

fn listen_tcp(address: &Address, guid: &str) -> Result<Listener, TransportError> {
    use std::net::{TcpListener, ToSocketAddrs};
    let host = address.get("host").unwrap_or("localhost");
    let bind_host = address.get("bind").unwrap_or(host);
    let port: u16 = address
        .get("port")
        .unwrap_or("0")
        .parse()
        .map_err(|_| error("tcp port must be a number from 0 to 65535"))?;
    let family = address.get("family");
    let candidates: Vec<std::net::SocketAddr> = (bind_host, port)
        .to_socket_addrs()
        .map_err(|e| error(format!("Failed to resolve {bind_host}: {e}")))?
        .filter(|a| match family {
            Some("ipv4") => a.is_ipv4(),
            Some("ipv6") => a.is_ipv6(),
            _ => true,
        })
        .collect();
    let first = candidates
        .first()
        .ok_or_else(|| error(format!("No address of family {family:?} for {bind_host}")))?;
    let listener =
        TcpListener::bind(first).map_err(|e| error(format!("Failed to bind {first}: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| error(e.to_string()))?;
    let bound = listener.local_addr().map_err(|e| error(e.to_string()))?;
    let family_name = if bound.is_ipv4() { "ipv4" } else { "ipv6" };
    Ok(Listener {
        fd: OwnedFd::from(listener),
        kind: ListenerKind::Tcp,
        address: format!(
            "tcp:host={},port={},family={family_name},guid={guid}",
            escape(host),
            bound.port()
        ),
        cleanup: None,
    })
}

/// Sockets passed by systemd (LISTEN_FDS), for `--address=systemd:`.
fn listen_systemd(guid: &str) -> Result<Vec<Listener>, TransportError> {
    let fds = systemd_listen_fds();
    if fds.is_empty() {
        return Err(error("systemd: no sockets were passed (LISTEN_FDS)"));
    }
    let mut listeners = Vec::new();
    for fd in fds {
        rustix::io::ioctl_fionbio(&fd, true).map_err(|e| error(e.to_string()))?;
        let local = rustix::net::getsockname(&fd).map_err(|e| error(e.to_string()))?;
        let (kind, address) = match rustix::net::SocketAddrUnix::try_from(local.clone()) {
            Ok(unix) => {
                let address = match (unix.path(), unix.abstract_name()) {
                    (Some(path), _) => {
                        format!("unix:path={},guid={guid}", escape(&path.to_string_lossy()))
                    }
                    (_, Some(name)) => format!(
                        "unix:abstract={},guid={guid}",
                        escape(&String::from_utf8_lossy(name))
                    ),
                    _ => format!("unix:guid={guid}"),
                };
                (ListenerKind::Unix, address)
            }
            Err(_) => match std::net::SocketAddr::try_from(local) {
                Ok(inet) => (
                    ListenerKind::Tcp,
                    format!("tcp:host={},port={},guid={guid}", inet.ip(), inet.port()),
                ),
                Err(_) => return Err(error("systemd passed a socket of an unknown family")),
            },
        };
        listeners.push(Listener {
            fd,
            kind,
            address,
            cleanup: None,
        });
    }
    Ok(listeners)
}

/// The sockets systemd passed to this process, validated against LISTEN_PID; the variables are
/// removed so that services the bus starts do not inherit them.
pub fn systemd_listen_fds() -> Vec<OwnedFd> {
    const FIRST: i32 = 3;
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    // SAFETY: removing variables while this process is still single-threaded at start-up.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if !pid_ok || count <= 0 {
        return Vec::new();
    }
    (FIRST..FIRST + count)
        .filter_map(|raw| {
            // SAFETY: systemd hands these descriptors to us; we take ownership once.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC).ok()?;
            Some(fd)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    const GUID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn addresses_parse_with_escapes() {
        let a = parse_addresses("unix:path=/tmp/a%20b,guid=x;tcp:host=localhost,port=0").unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].get("path"), Some("/tmp/a b"));
        assert_eq!(a[1].transport, "tcp");
        assert!(parse_addresses("nocolon").is_err());
        assert!(parse_addresses("unix:path").is_err());
        assert!(parse_addresses("unix:path=%zz").is_err());
        assert_eq!(escape("/a b"), "/a%20b");
    }

    #[test]
    fn unix_path_listener_accepts_with_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus");
        let text = format!("unix:path={}", path.display());
        let listeners = listen(&text, GUID).unwrap();
        assert_eq!(listeners.len(), 1);
        let l = &listeners[0];
        assert!(l.is_unix());
        assert!(l.address.starts_with("unix:path=") && l.address.ends_with(GUID));
        assert!(l.accept().unwrap().is_none());
        let _client = UnixStream::connect(&path).unwrap();
        let accepted = l.accept().unwrap().expect("a connection");
        let c = accepted.credentials;
        assert_eq!(c.uid, Some(rustix::process::getuid().as_raw()));
        assert_eq!(c.pid, Some(std::process::id()));
        let gid = rustix::process::getgid().as_raw();
        assert_eq!(c.gid, Some(gid));
        assert!(c.groups.contains(&gid));
        drop(listeners);
        assert!(!path.exists(), "the socket file is removed");
    }

    #[test]
    fn dir_and_tmpdir_pick_fresh_names() {
        let dir = tempfile::tempdir().unwrap();
        let d = format!("unix:dir={}", dir.path().display());
        let a = listen(&d, GUID).unwrap();
        let b = listen(&d, GUID).unwrap();
        assert_ne!(a[0].address, b[0].address);
        assert!(a[0].address.contains("unix:path="));
        let t = listen(&format!("unix:tmpdir={}", dir.path().display()), GUID).unwrap();
        assert!(t[0].address.starts_with("unix:abstract="));
    }

    #[test]
    fn abstract_and_tcp_listeners_work() {
        let name = format!("/telbus/test/{}", random_name());
        let l = listen(&format!("unix:abstract={name}"), GUID).unwrap();
        assert!(l[0].address.contains("abstract="));
        let t = listen("tcp:host=127.0.0.1,port=0", GUID).unwrap();
        assert!(!t[0].is_unix());
        let port: u16 = t[0]
            .address
            .split(',')
            .find_map(|kv| kv.strip_prefix("port="))
            .unwrap()
            .parse()
            .unwrap();
        assert_ne!(port, 0);
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let accepted = t[0].accept().unwrap().expect("a connection");
        assert_eq!(accepted.credentials.uid, None);
    }

    #[test]
    fn bad_addresses_are_refused() {
        assert!(listen("foo:bar=1", GUID).is_err());
        assert!(listen("unix:", GUID).is_err());
        assert!(listen("unix:path=/a,abstract=b", GUID).is_err());
        assert!(listen("unix:runtime=no", GUID).is_err());
        assert!(listen("tcp:port=notaport", GUID).is_err());
        assert!(listen("", GUID).is_err());
    }
}
