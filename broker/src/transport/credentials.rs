//! What the kernel says about the process at the other end of a unix socket.
//!
//! Read through libc: rustix wraps SO_PEERCRED only, and its `UCred` holds the pid as a
//! non-zero type while the kernel reports 0 for a peer in a pid namespace we cannot see.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// The credentials of a peer; all None (and no groups) for TCP peers.
#[derive(Debug, Default, Clone)]
pub struct PeerCredentials {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub pid: Option<u32>,
    /// The groups of the peer (SO_PEERGROUPS, or the user database on kernels before 4.13),
    /// sorted, with the primary group.
    pub groups: Vec<u32>,
    /// The LSM label (SO_PEERSEC) without a trailing NUL, when the kernel has a labelling LSM.
    pub security_label: Option<Vec<u8>>,
    // No SO_PEERPIDFD: nothing reports or uses a pidfd (the driver does not offer ProcessFD),
    // and it cost every connection a second descriptor and two system calls.
}

/// The credentials of the peer of a connected unix socket, as they were when it connected.
pub fn peer_credentials(fd: BorrowedFd<'_>) -> PeerCredentials {
    let mut creds = PeerCredentials::default();
    if let Some(ucred) = peer_ucred(fd) {
        creds.uid = Some(ucred.uid);
        creds.gid = Some(ucred.gid);
        creds.pid = u32::try_from(ucred.pid).ok().filter(|&pid| pid != 0);
    }
    let mut groups = match variable_option(fd, libc::SO_PEERGROUPS) {
        Ok(bytes) => bytes
            .chunks_exact(size_of::<libc::gid_t>())
            .map(|b| libc::gid_t::from_ne_bytes(b.try_into().expect("a gid's size")))
            .collect(),
        // Kernels before 4.13 do not know SO_PEERGROUPS; ask the user database, as dbus-daemon.
        Err(_) => match (creds.uid, creds.gid) {
            (Some(uid), Some(gid)) => user_groups(uid, gid),
            _ => Vec::new(),
        },
    };
    // The kernel reports the supplementary groups; the primary one counts too.
    groups.extend(creds.gid);
    groups.sort_unstable();
    groups.dedup();
    creds.groups = groups;
    creds.security_label = peer_label(fd);
    creds
}

/// Set once SO_PEERSEC answered ENOPROTOOPT: no security module labels sockets. That is fixed
/// when the kernel boots, so later connections are not asked (a system call each).
static NO_SOCKET_LABELS: AtomicBool = AtomicBool::new(false);

/// The LSM label of the peer (SO_PEERSEC), without trailing NULs.
fn peer_label(fd: BorrowedFd<'_>) -> Option<Vec<u8>> {
    if NO_SOCKET_LABELS.load(Ordering::Relaxed) {
        return None;
    }
    match variable_option(fd, libc::SO_PEERSEC) {
        Ok(mut label) => {
            while label.last() == Some(&0) {
                label.pop();
            }
            (!label.is_empty()).then_some(label)
        }
        Err(e) => {
            if e.raw_os_error() == Some(libc::ENOPROTOOPT) {
                NO_SOCKET_LABELS.store(true, Ordering::Relaxed);
            }
            None
        }
    }
}

/// The groups of a user from the user database (getgrouplist), sorted, with `gid`.
///
/// This may block on a remote user database (NSS: LDAP and the like), so the bus uses it only
/// when the kernel cannot tell.
pub fn user_groups(uid: u32, gid: u32) -> Vec<u32> {
    let Some(name) = user_name(uid) else {
        return vec![gid];
    };
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut count = groups.len() as libc::c_int;
        // SAFETY: `groups` has room for `count` entries; getgrouplist writes at most that many
        // and reports the number it needs in `count` when they do not fit.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            break;
        }
        if groups.len() >= 1 << 16 {
            return vec![gid];
        }
        groups.resize((count.max(0) as usize).max(groups.len() * 2), 0);
    }
    groups.push(gid);
    groups.sort_unstable();
    groups.dedup();
    groups
}

fn user_name(uid: u32) -> Option<CString> {
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: a passwd record is plain data; zeroes are a valid (empty) value.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the length given; the strings in `entry` point
        // into `buf`, which outlives their use below.
        let rc =
            unsafe { libc::getpwuid_r(uid, &mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || found.is_null() || entry.pw_name.is_null() {
            return None;
        }
        // SAFETY: getpwuid_r succeeded, so pw_name is a NUL-terminated string inside `buf`.
        return Some(unsafe { CStr::from_ptr(entry.pw_name) }.to_owned());
    }
}

fn peer_ucred(fd: BorrowedFd<'_>) -> Option<libc::ucred> {
    // SAFETY: ucred is plain data.
    let mut ucred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the buffer is a ucred and `len` says so.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == size_of::<libc::ucred>()).then_some(ucred)
}

/// A socket option of variable length (SO_PEERGROUPS, SO_PEERSEC): the kernel answers ERANGE
/// with the length it needs when the buffer is too small.
fn variable_option(fd: BorrowedFd<'_>, option: libc::c_int) -> io::Result<Vec<u8>> {
    const LIMIT: usize = 1 << 20;
    let mut buf = vec![0u8; 256];
    loop {
        let mut len = buf.len() as libc::socklen_t;
        // SAFETY: the buffer is `len` bytes long and getsockopt writes at most that.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 {
            buf.truncate(len as usize);
            return Ok(buf);
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ERANGE) || buf.len() >= LIMIT {
            return Err(error);
        }
        buf.resize((len as usize).max(buf.len() * 2).min(LIMIT), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_socket_pair_shows_ourselves() {
        let (a, _b) = UnixStream::pair().unwrap();
        let c = peer_credentials(a.as_fd());
        assert_eq!(c.uid, Some(rustix::process::getuid().as_raw()));
        assert_eq!(c.gid, Some(rustix::process::getgid().as_raw()));
        assert_eq!(c.pid, Some(std::process::id()));
        assert!(c.groups.contains(&rustix::process::getgid().as_raw()));
        assert!(c.groups.is_sorted());
    }

    #[test]
    fn the_user_database_knows_root() {
        assert_eq!(user_name(0).as_deref(), Some(c"root"));
        assert!(user_groups(0, 0).contains(&0));
        // A uid without an entry still has its primary group.
        assert_eq!(user_groups(3_999_999_999, 12345), vec![12345]);
    }

    #[test]
    fn a_socket_that_is_not_connected_tells_nothing() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        // The peer is gone, but the kernel still remembers who it was.
        assert_eq!(peer_credentials(a.as_fd()).pid, Some(std::process::id()));
        let file = std::fs::File::open("/dev/null").unwrap();
        let c = peer_credentials(file.as_fd());
        assert_eq!((c.uid, c.pid, c.groups.len()), (None, None, 0));
    }
}
