//! `unix:` addresses: `path=`, `abstract=`, `dir=`, `tmpdir=` and `runtime=yes`.
//!
//! As dbus-daemon 1.14.10 does (checked with `--print-address`): `dir=` and `tmpdir=` both make a
//! socket file with a random name (`dbus-` and ten letters or digits) in that directory. Older
//! dbus-daemons made `tmpdir=` sockets abstract on Linux; abstract sockets escape filesystem
//! permissions and are shared by every process in the network namespace. Socket files are made
//! connectable by everyone (mode 0777: the directory decides who can reach them, the bus's
//! policy who may stay) and removed when the listener is dropped.

use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use super::address::{Address, escape};
use super::{Listener, ListenerKind, SocketFile, TransportError};

/// How many connections may wait to be accepted: dbus-daemon asks for SOMAXCONN.
const BACKLOG: i32 = libc::SOMAXCONN;
/// The longest socket path: sun_path less its terminating NUL (or, for abstract names, the
/// leading one).
const MAX_PATH: usize = 107;

const MODES: [&str; 5] = ["path", "tmpdir", "abstract", "runtime", "dir"];

pub(super) fn listen(address: &Address, guid: &str) -> Result<Listener, TransportError> {
    let given: Vec<&str> = MODES
        .into_iter()
        .filter(|key| address.get(key).is_some())
        .collect();
    let value = |key| address.get(key).expect("a given key");
    match given.as_slice() {
        [] => Err(TransportError::BadAddress(
            "Server address of type unix was missing argument path or tmpdir or abstract or \
             runtime or dir"
                .into(),
        )),
        ["path"] => listen_path(Path::new(value("path")), guid),
        ["abstract"] => listen_abstract(value("abstract"), guid),
        ["runtime"] => {
            if value("runtime") != "yes" {
                return Err(TransportError::BadAddress(
                    "if given, the only value allowed for \"runtime\" is \"yes\"".into(),
                ));
            }
            let dir = std::env::var_os("XDG_RUNTIME_DIR").ok_or_else(|| {
                TransportError::CannotListen("\"XDG_RUNTIME_DIR\" is not set".into())
            })?;
            listen_path(&Path::new(&dir).join("bus"), guid)
        }
        [key @ ("dir" | "tmpdir")] => {
            let name = format!("dbus-{}", random_name(10));
            listen_path(&Path::new(value(key)).join(name), guid)
        }
        _ => Err(TransportError::BadAddress(
            "cannot specify two of \"path\", \"tmpdir\", \"abstract\", \"runtime\" and \"dir\" \
             at the same time"
                .into(),
        )),
    }
}

fn listen_path(path: &Path, guid: &str) -> Result<Listener, TransportError> {
    let shown = path.display();
    let cannot = |why: String| TransportError::CannotListen(why);
    if path.as_os_str().len() > MAX_PATH {
        return Err(cannot(format!("Socket name too long: \"{shown}\"")));
    }
    // Checked before the file exists: only XDG_RUNTIME_DIR can bring a path that is not.
    let text = path
        .to_str()
        .ok_or_else(|| cannot(format!("Socket path \"{shown}\" is not UTF-8")))?;
    remove_stale_socket(path)?;
    let addr = SocketAddrUnix::new(path)
        .map_err(|e| cannot(format!("Failed to bind socket \"{shown}\": {e}")))?;
    let fd = bound_socket(&addr, text)?;
    let file = SocketFile::of(path).map_err(|e| {
        let _ = std::fs::remove_file(path);
        cannot(format!("Failed to bind socket \"{shown}\": {e}"))
    })?;
    // Whoever can reach the directory may connect; the bus's policy decides the rest.
    if let Err(e) = std::fs::set_permissions(path, PermissionsExt::from_mode(0o777)) {
        tracing::warn!("Could not set mode 0777 on socket {shown}: {e}");
    }
    Ok(Listener {
        fd,
        kind: ListenerKind::Unix,
        address: format!("unix:path={},guid={guid}", escape(text)),
        cleanup: Some(file),
    })
}

fn listen_abstract(name: &str, guid: &str) -> Result<Listener, TransportError> {
    if name.len() > MAX_PATH {
        return Err(TransportError::CannotListen(format!(
            "Abstract socket name too long: \"{name}\""
        )));
    }
    let addr = SocketAddrUnix::new_abstract_name(name.as_bytes()).map_err(|e| {
        TransportError::CannotListen(format!("Failed to bind socket \"{name}\": {e}"))
    })?;
    let fd = bound_socket(&addr, name)?;
    Ok(Listener {
        fd,
        kind: ListenerKind::Unix,
        address: format!("unix:abstract={},guid={guid}", escape(name)),
        cleanup: None,
    })
}

/// A non-blocking, close-on-exec unix socket bound to `addr` and listening.
fn bound_socket(addr: &SocketAddrUnix, shown: &str) -> Result<OwnedFd, TransportError> {
    let fail = |what: &str, e: rustix::io::Errno| {
        TransportError::CannotListen(format!("Failed to {what} socket \"{shown}\": {e}"))
    };
    let fd = new_socket().map_err(|e| fail("create", e))?;
    rustix::net::bind(&fd, addr).map_err(|e| fail("bind", e))?;
    rustix::net::listen(&fd, BACKLOG).map_err(|e| fail("listen on", e))?;
    Ok(fd)
}

fn new_socket() -> rustix::io::Result<OwnedFd> {
    rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
}

/// A socket file left by a bus that is gone would make bind fail: remove it. dbus-daemon
/// removes any socket file in its way; we leave one that a live server still answers on, so
/// that a second bus does not silently take the first one's address.
fn remove_stale_socket(path: &Path) -> Result<(), TransportError> {
    let Ok(metadata) = std::fs::metadata(path) else {
        return Ok(());
    };
    if !metadata.file_type().is_socket() {
        // Not ours to remove; bind will say "Address in use".
        return Ok(());
    }
    let Ok(addr) = SocketAddrUnix::new(path) else {
        return Ok(());
    };
    let probe = new_socket()
        .map_err(|e| TransportError::CannotListen(format!("Failed to create socket: {e}")))?;
    match rustix::net::connect(&probe, &addr) {
        // Someone accepts there (or has a full backlog): a live server.
        Ok(()) | Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INPROGRESS) => {
            Err(TransportError::CannotListen(format!(
                "Failed to bind socket \"{}\": a server is already listening there",
                path.display()
            )))
        }
        Err(rustix::io::Errno::CONNREFUSED) => {
            let _ = std::fs::remove_file(path);
            Ok(())
        }
        Err(_) => Ok(()),
    }
}

/// `length` random letters and digits.
fn random_name(length: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; length];
    let mut filled = 0;
    while filled < length {
        match rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("no randomness available: {e}"),
        }
    }
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

impl SocketFile {
    fn of(path: &Path) -> std::io::Result<SocketFile> {
        let metadata = std::fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: PathBuf::from(path),
            device: metadata.dev(),
            inode: metadata.ino(),
        })
    }

    /// Remove the socket file, unless another one has taken its place.
    pub(super) fn remove(&self) {
        if std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == self.device && m.ino() == self.inode)
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
