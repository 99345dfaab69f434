//! Listening on every kind of address, accepting, and the credentials of the peer.
//!
//! What depends on the environment (XDG_RUNTIME_DIR, LISTEN_FDS) or on another uid runs in a
//! child process: this test binary again, running only `child_process` with TELBUS_TEST_CHILD
//! saying what to do, so that no test changes the environment of the others.

use std::io::Write;
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use telbus_broker::transport::{
    Listener, TransportError, address_list, listen, parse_addresses, systemd_listen_fds,
};

const GUID: &str = "0123456789abcdef0123456789abcdef";

fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

fn gid() -> u32 {
    rustix::process::getgid().as_raw()
}

/// Our groups as the kernel will report them for our sockets: supplementary and primary.
fn our_groups() -> Vec<u32> {
    let mut groups: Vec<u32> = rustix::process::getgroups()
        .unwrap()
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    groups.push(gid());
    groups.sort_unstable();
    groups.dedup();
    groups
}

fn only(mut listeners: Vec<Listener>) -> Listener {
    assert_eq!(listeners.len(), 1, "{listeners:?}");
    listeners.pop().unwrap()
}

fn error(address: &str) -> TransportError {
    listen(address, GUID).expect_err(address)
}

fn is_nonblocking_and_cloexec(fd: BorrowedFd<'_>) -> bool {
    let status = rustix::fs::fcntl_getfl(fd).unwrap();
    let flags = rustix::io::fcntl_getfd(fd).unwrap();
    status.contains(rustix::fs::OFlags::NONBLOCK) && flags.contains(rustix::io::FdFlags::CLOEXEC)
}

/// Accept the connection a client just made, waiting for it to be queued.
fn accept_one(listener: &Listener) -> telbus_broker::transport::Accepted {
    for _ in 0..200 {
        if let Some(accepted) = listener.accept().unwrap() {
            return accepted;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("no connection to accept on {}", listener.address);
}

fn key<'a>(address: &'a str, key: &str) -> Option<&'a str> {
    address
        .split(',')
        .find_map(|kv| kv.split(':').next_back()?.strip_prefix(&format!("{key}=")))
}

// --- unix ---------------------------------------------------------------------------------------

#[test]
fn a_path_listener_accepts_with_our_credentials_and_removes_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus socket");
    let listener = only(
        listen(
            &format!("unix:path={}", path.display()).replace(' ', "%20"),
            GUID,
        )
        .unwrap(),
    );
    assert!(listener.is_unix());
    assert_eq!(
        listener.address,
        format!(
            "unix:path={}/bus%20socket,guid={GUID}",
            dir.path().display()
        )
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o777,
        "anyone who reaches the directory may connect"
    );
    assert!(is_nonblocking_and_cloexec(listener.as_fd()));
    assert!(
        listener.accept().unwrap().is_none(),
        "nobody waiting: no blocking"
    );

    let _client = UnixStream::connect(&path).unwrap();
    let accepted = accept_one(&listener);
    assert!(is_nonblocking_and_cloexec(accepted.fd.as_fd()));
    let c = &accepted.credentials;
    assert_eq!(c.uid, Some(uid()));
    assert_eq!(c.gid, Some(gid()));
    assert_eq!(c.pid, Some(std::process::id()));
    assert_eq!(c.groups, our_groups());
    drop(listener);
    assert!(!path.exists(), "the socket file goes with the listener");
}

#[test]
fn a_stale_socket_file_is_replaced_but_a_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus");
    let address = format!("unix:path={}", path.display());
    // A bus that died without cleaning up leaves its file behind.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let listener = only(listen(&address, GUID).unwrap());
    let _client = UnixStream::connect(&path).unwrap();
    assert!(accept_one(&listener).credentials.uid.is_some());

    let e = error(&address);
    assert!(
        matches!(&e, TransportError::CannotListen(t) if t.contains("already listening")),
        "{e}"
    );
    drop(listener);

    std::fs::write(&path, "not a socket").unwrap();
    let e = error(&address);
    assert!(e.to_string().contains("Failed to bind socket"), "{e}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "not a socket",
        "left alone"
    );
}

#[test]
fn a_listener_removes_only_its_own_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus");
    let address = format!("unix:path={}", path.display());
    let first = only(listen(&address, GUID).unwrap());
    std::fs::remove_file(&path).unwrap();
    let second = only(listen(&address, GUID).unwrap());
    drop(first);
    assert!(path.exists(), "the second bus's socket stays");
    drop(second);
    assert!(!path.exists());
}

#[test]
fn dir_and_tmpdir_make_socket_files_with_fresh_names() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["dir", "tmpdir"] {
        let address = format!("unix:{kind}={}", dir.path().display());
        let a = only(listen(&address, GUID).unwrap());
        let b = only(listen(&address, GUID).unwrap());
        assert_ne!(a.address, b.address);
        let path = key(&a.address, "path").expect("a path, as dbus-daemon 1.14 prints");
        let name = Path::new(path).file_name().unwrap().to_str().unwrap();
        let tail = name.strip_prefix("dbus-").unwrap();
        assert_eq!(tail.len(), 10, "{name}");
        assert!(tail.bytes().all(|b| b.is_ascii_alphanumeric()), "{name}");
        assert_eq!(Path::new(path).parent(), Some(dir.path()));
        assert!(std::fs::metadata(path).unwrap().file_type().is_socket());
        let _client = UnixStream::connect(path).unwrap();
        assert_eq!(accept_one(&a).credentials.uid, Some(uid()));
        let path = path.to_string();
        drop(a);
        assert!(!Path::new(&path).exists());
    }
    assert!(
        error(&format!("unix:dir={}/missing", dir.path().display()))
            .to_string()
            .contains("Failed to bind socket")
    );
}

#[test]
fn abstract_sockets() {
    let name = format!("/telbus/test/{}-{}", std::process::id(), line!());
    let listener = only(listen(&format!("unix:abstract={name}"), GUID).unwrap());
    assert_eq!(
        listener.address,
        format!("unix:abstract={name},guid={GUID}")
    );
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _client = UnixStream::connect_addr(&addr).unwrap();
    assert_eq!(
        accept_one(&listener).credentials.pid,
        Some(std::process::id())
    );
    let e = error(&format!("unix:abstract={name}"));
    assert!(matches!(e, TransportError::CannotListen(_)), "in use: {e}");
    let long = "a".repeat(108);
    assert!(
        error(&format!("unix:abstract={long}"))
            .to_string()
            .contains("too long")
    );
    assert!(
        error(&format!("unix:path=/tmp/{long}"))
            .to_string()
            .contains("too long")
    );
}

// --- tcp ----------------------------------------------------------------------------------------

#[test]
fn tcp_picks_a_port_and_has_no_credentials() {
    let listener = only(listen("tcp:host=127.0.0.1,port=0", GUID).unwrap());
    assert!(!listener.is_unix());
    assert!(is_nonblocking_and_cloexec(listener.as_fd()));
    let port: u16 = key(&listener.address, "port").unwrap().parse().unwrap();
    assert_ne!(port, 0);
    assert_eq!(
        listener.address,
        format!("tcp:host=127.0.0.1,port={port},family=ipv4,guid={GUID}")
    );
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let accepted = accept_one(&listener);
    let c = &accepted.credentials;
    assert_eq!((c.uid, c.gid, c.pid, c.groups.len()), (None, None, None, 0));
    assert!(rustix::net::sockopt::tcp_nodelay(&accepted.fd).unwrap());
    assert!(is_nonblocking_and_cloexec(accepted.fd.as_fd()));
    client.write_all(b"\0").unwrap();

    // The port may be given; then it is taken.
    let e = error(&format!("tcp:host=127.0.0.1,port={port}"));
    assert!(matches!(e, TransportError::CannotListen(_)), "{e}");
}

#[test]
fn tcp_defaults_and_wildcards() {
    // No host: localhost, as dbus-daemon prints it.
    let listeners = listen("tcp:", GUID).unwrap();
    let address = &listeners[0].address;
    assert!(address.starts_with("tcp:host=localhost,port="), "{address}");
    let port: u16 = key(address, "port").unwrap().parse().unwrap();
    assert!(
        listeners.iter().all(|l| &l.address == address),
        "one port for all"
    );
    drop(TcpStream::connect(("localhost", port)).unwrap());

    // bind=* listens everywhere, but clients are told the host.
    let listeners = listen("tcp:host=localhost,bind=*,family=ipv4", GUID).unwrap();
    let address = address_list(&listeners);
    assert!(address.starts_with("tcp:host=localhost,port="), "{address}");
    let port: u16 = key(&address, "port").unwrap().parse().unwrap();
    drop(TcpStream::connect(("127.0.0.1", port)).unwrap());
    let accepted = listeners.iter().find_map(|l| {
        (0..100).find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(5));
            l.accept().unwrap()
        })
    });
    assert!(accepted.is_some());
}

#[test]
fn tcp_over_ipv6_when_the_machine_has_it() {
    match listen("tcp:host=%3a%3a1,port=0", GUID) {
        Ok(listeners) => {
            let l = only(listeners);
            assert!(
                l.address.starts_with("tcp:host=%3a%3a1,port="),
                "{}",
                l.address
            );
            assert!(l.address.contains(",family=ipv6,"));
            let port: u16 = key(&l.address, "port").unwrap().parse().unwrap();
            drop(TcpStream::connect(("::1", port)).unwrap());
            assert!(accept_one(&l).credentials.uid.is_none());
        }
        Err(e) => {
            eprintln!("no IPv6 loopback here: {e}");
            assert!(matches!(e, TransportError::CannotListen(_)));
        }
    }
    let e = error("tcp:host=127.0.0.1,family=ipv6");
    assert_eq!(
        e.to_string(),
        "Failed to lookup host/port: \"127.0.0.1:0\": no IPv6 address"
    );
}

// --- lists and errors ------------------------------------------------------------------------------

#[test]
fn alternatives_are_tried_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // The first cannot bind: the second is used.
    let text = format!(
        "unix:path={}/missing/bus;tcp:host=127.0.0.1",
        dir.path().display()
    );
    let l = only(listen(&text, GUID).unwrap());
    assert!(
        l.address.starts_with("tcp:host=127.0.0.1,"),
        "{}",
        l.address
    );
    // Transports we do not know are passed over.
    let text = format!("autolaunch:;unix:path={}/bus", dir.path().display());
    assert!(only(listen(&text, GUID).unwrap()).is_unix());
    // The first that works wins; the second is not listened on.
    let text = format!("unix:path={0}/one;unix:path={0}/two", dir.path().display());
    let l = only(listen(&text, GUID).unwrap());
    assert!(l.address.contains("/one,"));
    assert!(!dir.path().join("two").exists());
    // A wrong address ends the search.
    let text = format!("unix:;unix:path={}/three", dir.path().display());
    assert!(matches!(error(&text), TransportError::BadAddress(_)));
    assert!(!dir.path().join("three").exists());
    // When all fail, the first failure is reported.
    let text = format!("unix:path={0}/x/a;unix:path={0}/y/b", dir.path().display());
    assert!(
        error(&text).to_string().contains("/x/a"),
        "{}",
        error(&text)
    );
}

#[test]
fn bad_addresses_are_refused_with_dbus_daemon_s_words() {
    let bad = |address: &str, text: &str| {
        let e = error(address);
        assert_eq!(e.to_string(), text, "{address}");
        assert!(matches!(e, TransportError::BadAddress(_)), "{address}");
    };
    bad("", "Empty address ''");
    bad("foo:bar=1", "Unknown address type 'foo'");
    bad("launchd:env=X", "Unknown address type 'launchd'");
    bad("unix", "Address does not contain a colon");
    bad(
        "unix:path",
        "'=' character not found or has no value following it",
    );
    bad(
        "unix:",
        "Server address of type unix was missing argument path or tmpdir or abstract or runtime or dir",
    );
    bad(
        "unix:path=/tmp/a,abstract=b",
        "cannot specify two of \"path\", \"tmpdir\", \"abstract\", \"runtime\" and \"dir\" at the same time",
    );
    bad(
        "unix:runtime=no",
        "if given, the only value allowed for \"runtime\" is \"yes\"",
    );
    bad(
        "unix:path=/tmp/a b",
        "In D-Bus address, character ' ' should have been escaped",
    );

    let cannot = |address: &str, text: &str| {
        let e = error(address);
        assert!(
            matches!(e, TransportError::CannotListen(_)),
            "{address}: {e:?}"
        );
        assert!(e.to_string().contains(text), "{address}: {e}");
    };
    cannot(
        "tcp:host=localhost,family=ipx",
        "Unknown address family ipx",
    );
    cannot("tcp:host=localhost,port=x", "the port is not a number");
    cannot("tcp:host=localhost,port=65536", "the port is not a number");
    cannot(
        "tcp:host=no-such-host.invalid",
        "Failed to lookup host/port",
    );
    cannot("nonce-tcp:host=localhost", "not supported");
    // Keys we do not use are ignored, as by dbus-daemon.
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "unix:path={}/bus,guid=0000,whatever=1",
        dir.path().display()
    );
    assert!(
        only(listen(&text, GUID).unwrap())
            .address
            .ends_with(&format!(",guid={GUID}"))
    );
    assert_eq!(parse_addresses("unix:path=/a;tcp:").unwrap().len(), 2);
}

#[test]
fn address_lists_name_each_address_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut listeners = listen(&format!("unix:dir={}", dir.path().display()), GUID).unwrap();
    listeners.extend(listen("tcp:host=127.0.0.1", GUID).unwrap());
    let list = address_list(&listeners);
    let parts: Vec<&str> = list.split(';').collect();
    assert_eq!(parts.len(), 2, "{list}");
    assert_eq!(parts[0], listeners[0].address);
    assert_eq!(parts[1], listeners[1].address);
}

// --- in child processes ------------------------------------------------------------------------------

/// The test binary again, running `child_process` with `mode`.
fn child(mode: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TELBUS_TEST_CHILD", mode)
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS");
    command
}

/// The child's `CHILD:` lines; panics with its output if it failed.
fn child_said(output: Output) -> Vec<String> {
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    let said: Vec<String> = stdout
        .lines()
        // libtest prints "test child_process ... " before the first line.
        .filter_map(|l| l.split_once("CHILD: ").map(|(_, said)| said.to_string()))
        .collect();
    assert!(
        !said.is_empty(),
        "the child ran nothing:\n{stdout}\n{stderr}"
    );
    said
}

/// What a child does; a no-op in a normal test run.
#[test]
fn child_process() {
    let Ok(mode) = std::env::var("TELBUS_TEST_CHILD") else {
        return;
    };
    let say = |text: String| println!("CHILD: {text}");
    match mode.as_str() {
        // Listen on the address given, report the address or the error.
        "listen" => {
            let address = std::env::var("TELBUS_TEST_ADDRESS").unwrap();
            match listen(&address, GUID) {
                Ok(listeners) => {
                    for l in &listeners {
                        say(format!("listening {}", l.address));
                    }
                    // Check each socket really is one we can connect to and accept on.
                    for l in &listeners {
                        if let Some(path) = key(&l.address, "path") {
                            drop(UnixStream::connect(path).unwrap());
                            assert!(accept_one(l).credentials.uid.is_some());
                        }
                        if let (Some(host), Some(port)) =
                            (key(&l.address, "host"), key(&l.address, "port"))
                        {
                            drop(TcpStream::connect((host, port.parse::<u16>().unwrap())).unwrap());
                            accept_one(l);
                        }
                        say(format!("accepted on {}", l.address));
                    }
                }
                Err(e) => say(format!("error {e}")),
            }
            for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
                if std::env::var_os(var).is_some() {
                    say(format!("{var} is still set"));
                }
            }
        }
        // Take the systemd descriptors and tell what they are.
        "fds" => {
            let fds = systemd_listen_fds();
            for fd in &fds {
                let cloexec = rustix::io::fcntl_getfd(fd)
                    .unwrap()
                    .contains(rustix::io::FdFlags::CLOEXEC);
                say(format!("fd {} cloexec={cloexec}", fd.as_raw_fd()));
            }
            say(format!(
                "{} fds; again: {}",
                fds.len(),
                systemd_listen_fds().len()
            ));
        }
        other => panic!("unknown child mode {other}"),
    }
}

#[test]
fn runtime_yes_is_xdg_runtime_dir_slash_bus() {
    let dir = tempfile::tempdir().unwrap();
    let said = child_said(
        child("listen")
            .env("TELBUS_TEST_ADDRESS", "unix:runtime=yes")
            .env("XDG_RUNTIME_DIR", dir.path())
            .output()
            .unwrap(),
    );
    let expected = format!("unix:path={}/bus,guid={GUID}", dir.path().display());
    assert_eq!(said[0], format!("listening {expected}"));
    assert_eq!(said[1], format!("accepted on {expected}"));
    assert!(
        !dir.path().join("bus").exists(),
        "removed when the child's listener went"
    );

    let said = child_said(
        child("listen")
            .env("TELBUS_TEST_ADDRESS", "unix:runtime=yes")
            .env_remove("XDG_RUNTIME_DIR")
            .output()
            .unwrap(),
    );
    assert_eq!(said, ["error \"XDG_RUNTIME_DIR\" is not set"]);
}

/// Run `command` through a shell that exports LISTEN_PID as its own pid and then becomes the
/// command (so the pid is the command's), with `fds` as descriptors 3, 4, …: what systemd does.
fn with_listen_fds(command: Command, fds: &[BorrowedFd<'_>], listen_pid: &str) -> Output {
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
    let mut shell = Command::new("sh");
    shell
        .arg("-c")
        .arg(format!(
            "export LISTEN_PID={listen_pid}; exec \"$0\" \"$@\""
        ))
        .arg(program)
        .args(args);
    for (k, v) in command.get_envs() {
        match v {
            Some(v) => shell.env(k, v),
            None => shell.env_remove(k),
        };
    }
    shell.env("LISTEN_FDS", fds.len().to_string());
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    // SAFETY: between fork and exec only dup2 and fcntl, which are async-signal-safe. The
    // descriptors are first moved out of the way of 3, 4, … so that none is overwritten.
    unsafe {
        shell.pre_exec(move || {
            let mut high = Vec::with_capacity(raw.len());
            for &fd in &raw {
                let moved = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
                if moved < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high.push(moved);
            }
            for (i, &fd) in high.iter().enumerate() {
                // dup2 leaves the new descriptor open across exec.
                if libc::dup2(fd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    shell.output().unwrap()
}

#[test]
fn systemd_sockets_are_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("activated");
    let unix = UnixListener::bind(&path).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let mut command = child("listen");
    command.env("TELBUS_TEST_ADDRESS", "systemd:");
    let said = child_said(with_listen_fds(command, &[unix.as_fd(), tcp.as_fd()], "$$"));
    let unix_address = format!("unix:path={},guid={GUID}", path.display());
    let tcp_address = format!("tcp:host=127.0.0.1,port={port},family=ipv4,guid={GUID}");
    assert_eq!(
        said,
        [
            format!("listening {unix_address}"),
            format!("listening {tcp_address}"),
            format!("accepted on {unix_address}"),
            format!("accepted on {tcp_address}"),
        ]
    );
    assert!(
        path.exists(),
        "the socket unit's file is not ours to remove"
    );
}

#[test]
fn systemd_descriptors_become_close_on_exec_and_the_variables_go() {
    let (a, _b) = UnixStream::pair().unwrap();
    let said = child_said(with_listen_fds(child("fds"), &[a.as_fd(), a.as_fd()], "$$"));
    assert_eq!(
        said,
        ["fd 3 cloexec=true", "fd 4 cloexec=true", "2 fds; again: 0"]
    );
}

#[test]
fn systemd_sockets_for_another_process_are_not_ours() {
    let unix = UnixListener::bind(tempfile::tempdir().unwrap().path().join("s")).unwrap();
    let mut command = child("listen");
    command.env("TELBUS_TEST_ADDRESS", "systemd:");
    let said = child_said(with_listen_fds(command, &[unix.as_fd()], "1"));
    assert_eq!(said, ["error No socket received."]);
}

#[test]
fn systemd_must_pass_listening_stream_sockets() {
    let (a, _b) = UnixStream::pair().unwrap();
    let mut command = child("listen");
    command.env("TELBUS_TEST_ADDRESS", "systemd:");
    let said = child_said(with_listen_fds(command, &[a.as_fd()], "$$"));
    assert_eq!(said, ["error Passed socket has wrong type."]);
}

/// Fork a child that becomes uid and gid 65534 with groups 4242 and 777, connects to `path`,
/// and waits for the other end to hang up. No exec: between fork and exit the child makes only
/// system calls, as a child of a threaded process must.
fn fork_other_user_client(path: &Path) -> libc::pid_t {
    let addr = rustix::net::SocketAddrUnix::new(path).unwrap();
    let groups: [libc::gid_t; 2] = [4242, 777];
    // SAFETY: the child uses only async-signal-safe calls (raw system calls) and leaves with
    // _exit; the parent goes on as usual.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid > 0 {
            return pid;
        }
        let switched = libc::setgroups(groups.len(), groups.as_ptr()) == 0
            && libc::setgid(65534) == 0
            && libc::setuid(65534) == 0;
        if !switched {
            libc::_exit(2);
        }
        let Ok(socket) = rustix::net::socket(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            None,
        ) else {
            libc::_exit(3)
        };
        if rustix::net::connect(&socket, &addr).is_err() {
            libc::_exit(4);
        }
        let mut byte = [0u8; 1];
        while matches!(rustix::io::read(&socket, &mut byte), Ok(1)) {}
        libc::_exit(0)
    }
}

#[test]
fn credentials_of_another_user_with_other_groups() {
    if uid() != 0 {
        eprintln!("SKIPPED: switching to another uid needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let path = dir.path().join("bus");
    let listener = only(listen(&format!("unix:path={}", path.display()), GUID).unwrap());
    let pid = fork_other_user_client(&path);
    let accepted = (0..500).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        listener.accept().unwrap()
    });
    let c = &accepted.as_ref().expect("the child connects").credentials;
    assert_eq!(c.uid, Some(65534));
    assert_eq!(c.gid, Some(65534));
    assert_eq!(c.pid, Some(pid as u32));
    assert_eq!(c.groups, [777, 4242, 65534]);
    drop(accepted);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    // 4: connect failed, which a socket file without mode 0777 would make it.
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );
}
