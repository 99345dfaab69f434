//! Service activation: starting a service when a message is sent to its name, from the
//! `.service` files of the configured service directories, as dbus-daemon does.
//!
//! The bus spawns the service's `Exec` line itself (as its `User` when the bus runs as root,
//! in place of dbus-daemon's setuid launch helper), or, with `--systemd-activation` and a
//! `SystemdService=` key, asks systemd through `org.freedesktop.systemd1.Activator`. Messages
//! for the name wait until it is owned; the service failing or timing out fails them with
//! dbus-daemon's errors.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Instant;

use rustix::event::epoll;
use tracing::{info, warn};
use zbus::Message;

use crate::ConnId;
use crate::bus::{Bus, DRIVER, unique_name};
use crate::driver::{DriverError, LIMITS_EXCEEDED, SERVICE_UNKNOWN};
use crate::wire::BusMessage;
pub use telbus_broker::service_file::{ServiceEntry, parse_service_file};

/// StartServiceByName replies.
const START_SUCCESS: u32 = 1;
const ALREADY_RUNNING: u32 = 2;

/// The name systemd takes on the bus; activation requests go to it.
const SYSTEMD: &str = "org.freedesktop.systemd1";

/// Epoll tokens of the children the bus started: this base plus the pid.
pub const TOKEN_CHILD_BASE: u64 = u64::MAX - (1 << 33);
/// Epoll token of the inotify descriptor that watches the service directories.
pub const TOKEN_SERVICE_DIRS: u64 = TOKEN_CHILD_BASE - 1;

/// Read every `.service` file of `dirs`, earlier directories first (they win).
pub fn scan(dirs: &[PathBuf], system_bus: bool) -> HashMap<String, ServiceEntry> {
    let mut entries: HashMap<String, ServiceEntry> = HashMap::new();
    for dir in dirs {
        let Ok(read) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = read
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "service"))
            .collect();
        files.sort();
        for file in files {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            match parse_service_file(&text, &file) {
                Ok(entry) => {
                    // On the system bus a file must be named after its service.
                    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                    if system_bus && stem != entry.name {
                        warn!(
                            "ignoring {}: on the system bus it must be named {}.service",
                            file.display(),
                            entry.name
                        );
                        continue;
                    }
                    entries.entry(entry.name.clone()).or_insert(entry);
                }
                Err(e) => warn!("ignoring service file: {e}"),
            }
        }
    }
    entries
}

/// A service being started, and what waits for it.
struct Pending {
    entry: ServiceEntry,
    /// Messages sent to the name, with their senders.
    messages: Vec<(ConnId, BusMessage)>,
    /// StartServiceByName calls to answer.
    start_calls: Vec<(ConnId, BusMessage)>,
    deadline: Instant,
    pid: Option<u32>,
}

/// Activation state of the bus.
#[derive(Default)]
pub struct Activation {
    pub entries: HashMap<String, ServiceEntry>,
    pending: HashMap<String, Pending>,
    children: HashMap<u32, OwnedFd>,
    /// Variables set with UpdateActivationEnvironment.
    pub env: HashMap<String, String>,
    /// Watches the service directories, so that a new `.service` file is seen at once.
    watch: Option<OwnedFd>,
    /// ActivationRequests waiting for org.freedesktop.systemd1 to join the bus.
    for_systemd: Vec<Message>,
}

impl Activation {
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }
}

impl Bus {
    fn system_bus(&self) -> bool {
        self.config.bus_type.as_deref() == Some("system")
    }

    /// Read the service directories again (start-up, ReloadConfig, SIGHUP); tell clients when
    /// the set of activatable names changed.
    /// Watch the configured service directories and read them (start-up, reload).
    pub fn load_services(&mut self) {
        let dirs: Vec<PathBuf> = self
            .config
            .servicedirs
            .iter()
            .map(|d| d.path.clone())
            .collect();
        self.watch_service_dirs(&dirs);
        self.rescan_services();
    }

    pub fn rescan_services(&mut self) {
        let dirs: Vec<PathBuf> = self
            .config
            .servicedirs
            .iter()
            .map(|d| d.path.clone())
            .collect();
        let entries = scan(&dirs, self.system_bus());
        let changed = entries != self.activation.entries;
        self.activation.entries = entries;
        if changed && self.started.elapsed().as_millis() > 0 {
            match Message::signal(
                crate::driver::PATH,
                "org.freedesktop.DBus",
                "ActivatableServicesChanged",
            )
            .sender(DRIVER)
            .build(&())
            {
                Ok(msg) => self.broadcast_from_driver(msg),
                Err(e) => warn!("cannot build ActivatableServicesChanged: {e}"),
            }
        }
    }

    /// (Re)create the inotify watches of the service directories.
    fn watch_service_dirs(&mut self, dirs: &[PathBuf]) {
        use rustix::fs::inotify;
        if let Some(old) = self.activation.watch.take() {
            let _ = epoll::delete(&self.epoll, &old);
        }
        let Ok(fd) = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
        else {
            warn!("cannot watch the service directories; they are read on reload only");
            return;
        };
        let flags = inotify::WatchFlags::CREATE
            | inotify::WatchFlags::DELETE
            | inotify::WatchFlags::CLOSE_WRITE
            | inotify::WatchFlags::MOVED_TO
            | inotify::WatchFlags::MOVED_FROM
            | inotify::WatchFlags::MODIFY;
        for dir in dirs {
            // A directory that does not exist yet is not watched, as in dbus-daemon.
            let _ = inotify::add_watch(&fd, dir.as_path(), flags);
        }
        if epoll::add(
            &self.epoll,
            &fd,
            epoll::EventData::new_u64(TOKEN_SERVICE_DIRS),
            epoll::EventFlags::IN,
        )
        .is_ok()
        {
            self.activation.watch = Some(fd);
        }
    }

    /// Something changed in a service directory.
    pub fn service_dirs_changed(&mut self) {
        if let Some(fd) = &self.activation.watch {
            let mut buf = [0u8; 4096];
            while matches!(rustix::io::read(fd, &mut buf), Ok(n) if n > 0) {}
        }
        self.rescan_services();
    }

    pub fn is_activatable(&self, name: &str) -> bool {
        self.activation.entries.contains_key(name)
    }

    pub fn list_activatable_names(&self) -> Vec<String> {
        let mut names = vec![DRIVER.to_string()];
        let mut rest: Vec<String> = self.activation.entries.keys().cloned().collect();
        rest.sort();
        names.extend(rest);
        names
    }

    /// A message for an activatable name nobody owns: start the service, deliver later.
    pub fn activate_for(&mut self, from: ConnId, msg: BusMessage, name: &str) {
        let route = msg.route();
        if let Err(denied) = self
            .check_send_to_activatable(from, name, &route)
            .and_then(|()| self.telaf_check_activation(from, name, &route))
        {
            self.capture(&msg, from, None);
            self.send_error(from, &msg, crate::driver::ACCESS_DENIED, &denied);
            return;
        }
        let started = self.start(name);
        // Monitors see the message after what the bus did about it (the ActivationRequest to
        // systemd), as in dbus-daemon.
        self.capture(&msg, from, None);
        if let Err(e) = started {
            self.send_error(from, &msg, e.name, &e.text);
            return;
        }
        if let Some(p) = self.activation.pending.get_mut(name) {
            p.messages.push((from, msg));
        }
    }

    /// StartServiceByName: Some(reply code) now, or None when the reply waits for the service.
    pub fn start_service_by_name(
        &mut self,
        from: ConnId,
        call: &BusMessage,
        name: &str,
    ) -> Result<Option<u32>, DriverError> {
        if self.resolve(name).is_some() {
            return Ok(Some(ALREADY_RUNNING));
        }
        if !self.is_activatable(name) {
            return Err(DriverError {
                name: SERVICE_UNKNOWN,
                text: format!("The name {name} was not provided by any .service files"),
            });
        }
        self.start(name)?;
        if let Some(p) = self.activation.pending.get_mut(name) {
            p.start_calls.push((from, call.clone()));
        }
        Ok(None)
    }

    /// Start `name`'s service unless it is already starting.
    fn start(&mut self, name: &str) -> Result<(), DriverError> {
        if self.activation.pending.contains_key(name) {
            return Ok(());
        }
        let limit = self.config.limits.max_pending_service_starts;
        if self.activation.pending.len() as u64 >= limit {
            return Err(DriverError {
                name: LIMITS_EXCEEDED,
                text: format!(
                    "The maximum number of pending activations has been reached, activation of {name} failed (max_pending_service_starts={limit})"
                ),
            });
        }
        let entry = self
            .activation
            .entries
            .get(name)
            .cloned()
            .ok_or_else(|| DriverError {
                name: SERVICE_UNKNOWN,
                text: format!("The name {name} was not provided by any .service files"),
            })?;
        let deadline = Instant::now() + self.config.limits.service_start_timeout;
        let mut pending = Pending {
            entry: entry.clone(),
            messages: Vec::new(),
            start_calls: Vec::new(),
            deadline,
            pid: None,
        };
        if self.systemd_activation && entry.systemd_service.is_some() {
            self.ask_systemd(&entry);
        } else if let Some(exec) = &entry.exec {
            pending.pid = Some(self.spawn(&entry, exec)?);
        } else {
            return Err(DriverError {
                name: "org.freedesktop.DBus.Error.Spawn.FileInvalid",
                text: format!(
                    "Cannot activate {name}: {} has no Exec and systemd activation is off",
                    entry.file.display()
                ),
            });
        }
        info!(
            "activating service name='{name}' (file {})",
            entry.file.display()
        );
        self.activation.pending.insert(name.to_string(), pending);
        Ok(())
    }

    fn spawn(&mut self, entry: &ServiceEntry, exec: &str) -> Result<u32, DriverError> {
        let argv = shlex::split(exec)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| DriverError {
                name: "org.freedesktop.DBus.Error.Spawn.FileInvalid",
                text: format!(
                    "Exec line of {} cannot be parsed: {exec}",
                    entry.file.display()
                ),
            })?;
        let mut command = std::process::Command::new(&argv[0]);
        command.args(&argv[1..]).stdin(std::process::Stdio::null());
        let bus_type = if self.system_bus() {
            "system"
        } else {
            "session"
        };
        command.env("DBUS_STARTER_ADDRESS", &self.address);
        command.env("DBUS_STARTER_BUS_TYPE", bus_type);
        if self.system_bus() {
            command.env("DBUS_SYSTEM_BUS_ADDRESS", &self.address);
        } else {
            command.env("DBUS_SESSION_BUS_ADDRESS", &self.address);
        }
        command.envs(&self.activation.env);
        if let Some(user) = &entry.user
            && rustix::process::getuid().is_root()
        {
            let (uid, gid) = crate::daemon::lookup_user(user).map_err(|text| DriverError {
                name: "org.freedesktop.DBus.Error.Spawn.PermissionsInvalid",
                text,
            })?;
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
        // SAFETY: the hook only calls setrlimit, which is async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                crate::daemon::restore_fd_limit_in_child();
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| DriverError {
            name: "org.freedesktop.DBus.Error.Spawn.ExecFailed",
            // dbus-daemon names the service, not the program, and gives the bare strerror text.
            text: format!(
                "Failed to execute program {}: {}",
                entry.name,
                os_error_text(&e)
            ),
        })?;
        let pid = child.id();
        // The child is reaped through its pidfd; std's handle is not needed.
        drop(child);
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid as i32).expect("a child has a pid"),
            rustix::process::PidfdFlags::empty(),
        )
        .map_err(|e| DriverError {
            name: "org.freedesktop.DBus.Error.Spawn.Failed",
            text: format!("cannot watch the service process: {e}"),
        })?;
        if let Err(e) = epoll::add(
            &self.epoll,
            &pidfd,
            epoll::EventData::new_u64(TOKEN_CHILD_BASE + pid as u64),
            epoll::EventFlags::IN,
        ) {
            warn!("cannot watch process {pid}: {e}");
        }
        self.activation.children.insert(pid, pidfd);
        Ok(pid)
    }

    /// Ask systemd to start the unit (test-sd-activation shows the protocol).
    fn ask_systemd(&mut self, entry: &ServiceEntry) {
        let unit = entry.systemd_service.clone().unwrap_or_default();
        let request = Message::signal(
            crate::driver::PATH,
            "org.freedesktop.systemd1.Activator",
            "ActivationRequest",
        )
        .sender(DRIVER)
        .destination("org.freedesktop.systemd1")
        .build(&(unit.as_str(),));
        let request = match request {
            Ok(msg) => msg,
            Err(e) => {
                warn!("cannot build ActivationRequest: {e}");
                return;
            }
        };
        match self.resolve_conn(SYSTEMD) {
            Some(systemd) => self.deliver_from_driver(systemd, request),
            None => {
                // systemd may join the bus later (early boot): the request waits for it, and
                // the activation's own timeout still applies.
                info!(
                    "activation of {} waits for {SYSTEMD} to join the bus",
                    entry.name
                );
                self.capture(&BusMessage::from_zbus(request.clone()), 0, None);
                self.activation.for_systemd.push(request);
            }
        }
    }

    /// org.freedesktop.systemd1 just got an owner: hand it the requests that waited for it.
    fn systemd_joined(&mut self) {
        let Some(systemd) = self.resolve_conn(SYSTEMD) else {
            return;
        };
        for request in std::mem::take(&mut self.activation.for_systemd) {
            // Monitors saw it when it was made.
            self.deliver_from_driver_uncaptured(systemd, BusMessage::from_zbus(request));
        }
    }

    /// systemd says a unit failed to start (ActivationFailure from org.freedesktop.systemd1).
    pub fn systemd_activation_failed(&mut self, from: ConnId, msg: &BusMessage) {
        if self.resolve_conn(SYSTEMD) != Some(from) {
            warn!(
                "ignoring a forged ActivationFailure from {}",
                unique_name(from)
            );
            return;
        }
        let Ok((unit, error_name, text)) =
            msg.zbus().body().deserialize::<(String, String, String)>()
        else {
            return;
        };
        let names: Vec<String> = self
            .activation
            .pending
            .iter()
            .filter(|(_, p)| p.entry.systemd_service.as_deref() == Some(unit.as_str()))
            .map(|(n, _)| n.clone())
            .collect();
        // The callers get systemd's own error, as from dbus-daemon; a name that is not a
        // valid error name cannot be sent and is replaced.
        let (error_name, text) = match zbus::names::ErrorName::try_from(error_name.as_str()) {
            Ok(_) => (error_name, text),
            Err(_) => (
                "org.freedesktop.systemd1.UnitFailed".to_string(),
                format!("{error_name}: {text}"),
            ),
        };
        for name in names {
            self.fail_activation(&name, &error_name, &text);
        }
    }

    /// A service process ended (its pidfd became readable).
    pub fn child_exited(&mut self, pid: u32) {
        let Some(pidfd) = self.activation.children.remove(&pid) else {
            return;
        };
        let _ = epoll::delete(&self.epoll, &pidfd);
        let status = rustix::process::waitid(
            rustix::process::WaitId::PidFd(std::os::fd::AsFd::as_fd(&pidfd)),
            rustix::process::WaitIdOptions::EXITED,
        );
        let Some(name) = self
            .activation
            .pending
            .iter()
            .find(|(_, p)| p.pid == Some(pid))
            .map(|(n, _)| n.clone())
        else {
            return;
        };
        let Ok(Some(status)) = status else {
            return;
        };
        if let Some(signal) = status.terminating_signal() {
            self.fail_activation(
                &name,
                "org.freedesktop.DBus.Error.Spawn.ChildSignaled",
                &format!("Process {name} received signal {signal}"),
            );
        } else if let Some(code) = status.exit_status()
            && code != 0
        {
            self.fail_activation(
                &name,
                "org.freedesktop.DBus.Error.Spawn.ChildExited",
                &format!("Process {name} exited with status {code}"),
            );
        }
        // Exiting with 0 before taking the name is not a failure in itself: the
        // activation then ends at its timeout, as in dbus-daemon.
    }

    fn fail_activation(&mut self, name: &str, error: &str, text: &str) {
        let Some(p) = self.activation.pending.remove(name) else {
            return;
        };
        info!("activated service '{name}' failed: {text}");
        for (from, msg) in p.messages.iter().chain(p.start_calls.iter()) {
            self.send_error(*from, msg, error, text);
        }
    }

    /// Pending activations whose service_start_timeout passed.
    pub fn expire_activations(&mut self, now: Instant) {
        let late: Vec<String> = self
            .activation
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(n, _)| n.clone())
            .collect();
        let timeout = self.config.limits.service_start_timeout.as_millis();
        for name in late {
            let text = format!(
                "Failed to activate service '{name}': timed out (service_start_timeout={timeout}ms)"
            );
            warn!("{text}");
            self.fail_activation(&name, "org.freedesktop.DBus.Error.TimedOut", &text);
        }
    }

    pub fn update_activation_environment(
        &mut self,
        env: HashMap<String, String>,
    ) -> Result<(), DriverError> {
        // Sorted, so that what systemd is told does not depend on hashing.
        let mut assignments: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assignments.sort();
        for (key, value) in env {
            self.activation.env.insert(key, value);
        }
        if self.systemd_activation {
            self.tell_systemd_environment(&assignments);
        }
        Ok(())
    }

    /// With systemd activation, systemd starts the services, so it must learn the activation
    /// environment too (dbus-daemon calls its SetEnvironment, as test-sd-activation checks).
    fn tell_systemd_environment(&mut self, assignments: &[String]) {
        let systemd = self.resolve_conn(SYSTEMD);
        let destination = systemd.map_or(SYSTEMD.to_string(), unique_name);
        let call = Message::method_call("/org/freedesktop/systemd1", "SetEnvironment")
            .interface("org.freedesktop.systemd1.Manager")
            .destination(destination.as_str())
            .sender(DRIVER)
            .with_flags(zbus::message::Flags::NO_REPLY_EXPECTED)
            .build(&(assignments,));
        let call = match call {
            Ok(call) => call,
            Err(e) => {
                warn!("cannot build SetEnvironment for systemd: {e}");
                return;
            }
        };
        match systemd {
            Some(systemd) => self.deliver_from_driver(systemd, call),
            None => {
                self.capture(&BusMessage::from_zbus(call.clone()), 0, None);
                self.activation.for_systemd.push(call);
            }
        }
    }

    /// A name just got a primary owner: the messages waiting for its activation go now.
    pub fn name_acquired_by_activation(&mut self, name: &str) {
        if name == SYSTEMD {
            self.systemd_joined();
        }
        let Some(p) = self.activation.pending.remove(name) else {
            return;
        };
        let Some(owner) = self.resolve_conn(name) else {
            return;
        };
        info!("successfully activated service '{name}'");
        for (from, call) in p.start_calls {
            match Message::method_return(&call.zbus().header())
                .sender(DRIVER)
                .build(&(START_SUCCESS,))
            {
                Ok(reply) => self.deliver_from_driver(from, reply),
                Err(e) => warn!("cannot build StartServiceByName reply: {e}"),
            }
        }
        for (from, msg) in p.messages {
            if self.peers.contains_key(&from) {
                self.deliver_unicast(from, owner, &msg, &msg.route());
            }
        }
    }
}

/// The C library's text for an OS error, without Rust's " (os error N)" suffix.
fn os_error_text(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        // SAFETY: strerror returns a pointer to a static, NUL-terminated message.
        Some(code) => unsafe { std::ffi::CStr::from_ptr(libc::strerror(code)) }
            .to_string_lossy()
            .into_owned(),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn service_files_parse() {
        let text = "# comment\n[D-BUS Service]\nName=org.example.Svc\nExec=/usr/bin/svc --flag 'a b'\nUser=nobody\nSystemdService=svc.service\n\n[Other]\nName=ignored\n";
        let e = parse_service_file(text, Path::new("/x/org.example.Svc.service")).unwrap();
        assert_eq!(e.name, "org.example.Svc");
        assert_eq!(e.exec.as_deref(), Some("/usr/bin/svc --flag 'a b'"));
        assert_eq!(e.user.as_deref(), Some("nobody"));
        assert_eq!(e.systemd_service.as_deref(), Some("svc.service"));
    }

    #[test]
    fn bad_service_files_are_refused() {
        let p = Path::new("/x/a.service");
        assert!(parse_service_file("[D-BUS Service]\nExec=/bin/true\n", p).is_err());
        assert!(parse_service_file("[D-BUS Service]\nName=org.a\n", p).is_err());
        assert!(parse_service_file("[D-BUS Service]\nName=not a name\nExec=x\n", p).is_err());
        assert!(
            parse_service_file("[D-BUS Service]\nName=org.a\nName=org.b\nExec=x\n", p).is_err()
        );
        assert!(parse_service_file("[D-BUS Service\nName=org.a\n", p).is_err());
        assert!(parse_service_file("[D-BUS Service]\njunk\n", p).is_err());
    }

    #[test]
    fn the_installed_test_service_files_parse() {
        let dir = Path::new("/usr/lib/dbus-1.0/installed-tests/dbus/data/valid-service-files");
        if !dir.exists() {
            eprintln!("skipped: {} is not installed", dir.display());
            return;
        }
        let found = scan(&[dir.to_path_buf()], false);
        assert!(!found.is_empty());
        for (name, entry) in &found {
            assert_eq!(name, &entry.name);
        }
    }

    #[test]
    fn earlier_directories_win() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(
            a.path().join("x.service"),
            "[D-BUS Service]\nName=org.x\nExec=/bin/first\n",
        )
        .unwrap();
        std::fs::write(
            b.path().join("x.service"),
            "[D-BUS Service]\nName=org.x\nExec=/bin/second\n",
        )
        .unwrap();
        let found = scan(&[a.path().to_path_buf(), b.path().to_path_buf()], false);
        assert_eq!(found["org.x"].exec.as_deref(), Some("/bin/first"));
        // On the system bus the file must carry the service's name.
        assert!(scan(&[a.path().to_path_buf()], true).is_empty());
    }
}
