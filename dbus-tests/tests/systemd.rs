//! telbusd started the way systemd starts it from dist/systemd's units: the unit's ExecStart
//! command line, a listening socket passed as fd 3 with LISTEN_FDS/LISTEN_PID (socket
//! activation), and a NOTIFY_SOCKET (a datagram socket this test reads, as systemd's manager
//! does). Checks READY=1 and STATUS=, that clients use the passed socket, and that a reload
//! (SIGHUP, or ReloadConfig as the units' ExecReload sends) re-reads the configuration and is
//! announced with RELOADING=1 then READY=1.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use telbus_dbus_tests::{CLIENT_TIMEOUT, ClientOutput, daemon_path, run_command, session_config};

/// How long systemd would wait for a notification, far above what a start or reload takes.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(20);

/// STATUS= texts and MONOTONIC_USEC= are telbusd's additions; dbus-daemon (TELBUS_TEST_DAEMON)
/// sends only READY=1 and RELOADING=1, which every check here also holds it to.
fn is_telbusd() -> bool {
    daemon_path()
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("telbusd"))
}

/// The ExecStart= or ExecReload= command line of one of dist/systemd's units.
fn unit_command(unit: &str, key: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dist/systemd")
        .join(unit);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{} has no {key}=", path.display()));
    line.split_whitespace().map(String::from).collect()
}

/// telbusd under a fake service manager: the socket, the notify socket, the config file.
struct Activated {
    child: Child,
    dir: tempfile::TempDir,
    notify: UnixDatagram,
    address: String,
}

impl Activated {
    /// Starts the unit's ExecStart command with the unit's bus configuration (--system or
    /// --session) replaced by a private one, as socket activation would.
    fn start(unit: &str) -> Activated {
        let dir = tempfile::Builder::new()
            .prefix("telbus-systemd.")
            .tempdir()
            .expect("temp dir");
        let services = dir.path().join("services");
        std::fs::create_dir(&services).unwrap();
        // The config's own <listen> is not used: the unit says --address=systemd:.
        let config = session_config("unix:path=/nonexistent/not-used", &services, "");
        std::fs::write(dir.path().join("bus.conf"), config).unwrap();

        let socket_path = dir.path().join("bus");
        let listener = UnixListener::bind(&socket_path).expect("bind the bus socket");
        let notify_path = dir.path().join("notify");
        let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
        notify.set_read_timeout(Some(NOTIFY_TIMEOUT)).unwrap();

        let exec = unit_command(unit, "ExecStart");
        assert!(
            exec.iter().any(|a| a == "--address=systemd:"),
            "{unit} does not take its socket from systemd: {exec:?}"
        );
        let args: Vec<String> = exec[1..]
            .iter()
            .map(|a| match a.as_str() {
                "--system" | "--session" => {
                    format!("--config-file={}", dir.path().join("bus.conf").display())
                }
                _ => a.clone(),
            })
            .collect();
        // LISTEN_PID must be the daemon's own pid, known only in the child: a shell sets it
        // and execs the daemon, keeping its pid.
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(r#"LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=dbus.socket exec "$0" "$@""#)
            .arg(daemon_path())
            .args(&args)
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let fd = listener.as_raw_fd();
        // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if fd == 3 {
                    // Already in place: just let it survive exec.
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start the daemon");
        drop(listener);
        Activated {
            child,
            notify,
            address: format!("unix:path={}", socket_path.display()),
            dir,
        }
    }

    /// The next notification datagram, as systemd's manager reads it.
    fn next_notification(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self
            .notify
            .recv(&mut buf)
            .expect("a notification from the daemon within the time limit");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Reads notifications until one has `field` (e.g. "READY=1"); returns all read.
    fn wait_for(&self, field: &str) -> Vec<String> {
        let deadline = Instant::now() + NOTIFY_TIMEOUT;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let message = self.next_notification();
            let done = message.lines().any(|l| l == field);
            seen.push(message);
            if done {
                return seen;
            }
        }
        panic!("no {field} notification; got {seen:?}");
    }

    fn busctl(&self, args: &[&str]) -> ClientOutput {
        let mut command = Command::new("busctl");
        command
            .arg(format!("--address={}", self.address))
            .args(args)
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_PAGER", "");
        run_command(command, CLIENT_TIMEOUT)
    }

    fn activatable_names(&self) -> String {
        self.busctl(&[
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "ListActivatableNames",
        ])
        .assert_success()
        .stdout
    }

    /// Adds a second service directory to the configuration, with one service in it: only a
    /// daemon that reads its configuration again sees it.
    fn add_service_dir(&self, name: &str) {
        let extra = self.dir.path().join("more-services");
        std::fs::create_dir_all(&extra).unwrap();
        std::fs::write(
            extra.join(format!("{name}.service")),
            format!("[D-BUS Service]\nName={name}\nExec=/bin/false\n"),
        )
        .unwrap();
        let conf = self.dir.path().join("bus.conf");
        let text = std::fs::read_to_string(&conf).unwrap().replace(
            "</busconfig>",
            &format!("<servicedir>{}</servicedir>\n</busconfig>", extra.display()),
        );
        std::fs::write(&conf, text).unwrap();
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn starts_and_serves_the_passed_socket(unit: &str) {
    let bus = Activated::start(unit);
    let ready = bus.wait_for("READY=1");
    assert!(
        !is_telbusd()
            || ready
                .iter()
                .any(|m| m.lines().any(|l| l.starts_with("STATUS="))),
        "no STATUS= with READY=1: {ready:?}"
    );
    let list = bus.busctl(&["list", "--no-pager"]).assert_success().stdout;
    assert!(list.contains("org.freedesktop.DBus"), "busctl list: {list}");
}

#[test]
fn the_user_unit_starts_socket_activated_and_notifies_ready() {
    starts_and_serves_the_passed_socket("user/telbus.service");
}

#[test]
fn the_system_unit_starts_socket_activated_and_notifies_ready() {
    starts_and_serves_the_passed_socket("system/telbus.service");
}

#[test]
fn sighup_reloads_the_configuration_with_reloading_and_ready() {
    let mut bus = Activated::start("user/telbus.service");
    bus.wait_for("READY=1");
    let name = "org.telbus.test.AddedBySighup";
    assert!(!bus.activatable_names().contains(name));

    bus.add_service_dir(name);
    bus.signal(libc::SIGHUP);
    let reload = bus.wait_for("READY=1");
    assert!(
        reload[0].lines().any(|l| l == "RELOADING=1"),
        "a reload starts with RELOADING=1: {reload:?}"
    );
    assert!(
        !is_telbusd()
            || reload
                .iter()
                .any(|m| m.lines().any(|l| l.starts_with("MONOTONIC_USEC="))),
        "RELOADING=1 comes with MONOTONIC_USEC= (notify-reload protocol): {reload:?}"
    );
    let names = bus.activatable_names();
    assert!(names.contains(name), "after SIGHUP: {names}");
    assert!(bus.child.try_wait().unwrap().is_none(), "the daemon exited");
}

#[test]
fn the_units_exec_reload_reloads_the_configuration() {
    let bus = Activated::start("user/telbus.service");
    bus.wait_for("READY=1");
    let name = "org.telbus.test.AddedByExecReload";
    bus.add_service_dir(name);

    // The unit's ExecReload= line, pointed at this bus instead of the user's.
    let reload = unit_command("user/telbus.service", "ExecReload");
    assert!(reload[0].ends_with("busctl"), "ExecReload: {reload:?}");
    let args: Vec<&str> = reload[1..]
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--user" && *a != "--system")
        .collect();
    bus.busctl(&args).assert_success();
    bus.wait_for("READY=1");
    let names = bus.activatable_names();
    assert!(names.contains(name), "after ExecReload: {names}");
}

#[test]
fn a_configuration_that_does_not_load_keeps_the_bus_running_and_ready() {
    let mut bus = Activated::start("user/telbus.service");
    bus.wait_for("READY=1");
    std::fs::write(bus.dir.path().join("bus.conf"), "<busconfig><oops").unwrap();
    bus.signal(libc::SIGHUP);
    let after = bus.wait_for("READY=1");
    assert!(
        !is_telbusd()
            || after.iter().any(|m| m
                .lines()
                .any(|l| l.starts_with("STATUS=") && l.contains("not reloaded"))),
        "the status says the reload failed: {after:?}"
    );
    bus.busctl(&["list", "--no-pager"]).assert_success();
    assert!(bus.child.try_wait().unwrap().is_none(), "the daemon exited");
}
