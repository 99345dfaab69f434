//! A bus daemon on a private socket in a temp dir of its own, killed when dropped.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::config::{session_config, system_config};
use super::driver::{DRIVER_NAME, add_match, call_driver};
use super::process::{Background, CLIENT_TIMEOUT, ClientOutput, kill_group, run_command};
use super::timeout::{STEP_TIMEOUT, next_signal, within};

/// Names the daemon to test, when set; otherwise the workspace's release `telbusd` is used.
pub const DAEMON_ENV: &str = "TELBUS_TEST_DAEMON";

/// How long the daemon has to print its address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Environment variables that would lead a client to another bus than the test's.
const BUS_ENV: [&str; 4] = [
    "DBUS_SESSION_BUS_ADDRESS",
    "DBUS_SYSTEM_BUS_ADDRESS",
    "DBUS_STARTER_ADDRESS",
    "DBUS_STARTER_BUS_TYPE",
];

/// The daemon under test: `$TELBUS_TEST_DAEMON`, or `<workspace>/target/release/telbusd`.
#[track_caller]
pub fn daemon_path() -> PathBuf {
    if let Some(path) = std::env::var_os(DAEMON_ENV) {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/telbusd");
    if !path.exists() {
        panic!(
            "{} does not exist: build it first: cargo build --release -p telbus-broker \
             (or set {DAEMON_ENV}=/usr/bin/dbus-daemon)",
            path.display()
        );
    }
    path
}

/// Options for a [`TestBus`] beyond the default session-like configuration.
#[derive(Debug, Default, Clone)]
pub struct TestBusBuilder {
    extra_config: String,
    listen: Option<String>,
    daemon: Option<PathBuf>,
    services: Vec<(String, String)>,
    args: Vec<String>,
    system: bool,
}

impl TestBusBuilder {
    /// Appends `xml` to the configuration, after the defaults, so that it wins over them.
    pub fn config(mut self, xml: &str) -> Self {
        self.extra_config.push_str(xml);
        self.extra_config.push('\n');
        self
    }

    /// Listens on `address` instead of `unix:dir=<temp dir>`.
    pub fn listen(mut self, address: &str) -> Self {
        self.listen = Some(address.to_string());
        self
    }

    /// Makes `name` activatable: a `.service` file in the service dir that runs `exec`.
    pub fn activatable(mut self, name: &str, exec: &str) -> Self {
        self.services.push((name.to_string(), exec.to_string()));
        self
    }

    /// Passes `arg` to the daemon as well (e.g. telbusd's `--bindings=FILE`).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Starts a system bus with this machine's real configuration (see
    /// [`system_config`](super::config::system_config)) instead of the session-like default;
    /// [`config`](Self::config) adds to it. The temp dir is made reachable for every user, so
    /// that system users (polkitd) and unprivileged clients can connect.
    pub fn system(mut self) -> Self {
        self.system = true;
        self
    }

    /// Runs `daemon` instead of [`daemon_path`].
    pub fn daemon(mut self, daemon: impl Into<PathBuf>) -> Self {
        self.daemon = Some(daemon.into());
        self
    }

    /// Writes the configuration, starts the daemon and waits for its address.
    #[track_caller]
    pub fn start(self) -> TestBus {
        let daemon = self.daemon.unwrap_or_else(daemon_path);
        let dir = tempfile::Builder::new()
            .prefix("telbus-test.")
            .tempdir()
            .expect("temp dir");
        let service_dir = dir.path().join("services");
        let runtime_dir = dir.path().join("runtime");
        for subdir in [&service_dir, &runtime_dir] {
            std::fs::create_dir(subdir).expect("create a directory in the temp dir");
        }
        for (name, exec) in &self.services {
            let text = format!("[D-BUS Service]\nName={name}\nExec={exec}\n");
            std::fs::write(service_dir.join(format!("{name}.service")), text)
                .expect("write a .service file");
        }
        let listen = self
            .listen
            .unwrap_or_else(|| format!("unix:dir={}", dir.path().display()));
        let config_path = dir.path().join("bus.conf");
        let config = if self.system {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("make the temp dir reachable");
            system_config(&listen, &service_dir, &self.extra_config)
        } else {
            session_config(&listen, &service_dir, &self.extra_config)
        };
        std::fs::write(&config_path, config).expect("write the bus configuration");

        let mut command = Command::new(&daemon);
        command
            .arg(format!("--config-file={}", config_path.display()))
            .arg("--nofork")
            .arg("--print-address=1")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        isolate(&mut command, &runtime_dir);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", daemon.display()));

        let stderr_text = Arc::new(Mutex::new(String::new()));
        collect_stderr(
            child.stderr.take().expect("piped stderr"),
            stderr_text.clone(),
        );
        let address = match read_address(&mut child, STARTUP_TIMEOUT) {
            Ok(address) => address,
            Err(why) => {
                kill_group(child.id(), libc::SIGKILL);
                let _ = child.wait();
                // Give the stderr reader a moment to take the daemon's last words.
                thread::sleep(Duration::from_millis(50));
                panic!(
                    "{} did not start ({why}); its stderr:\n{}",
                    daemon.display(),
                    stderr_text.lock().unwrap()
                );
            }
        };
        TestBus {
            pid: child.id(),
            child: Mutex::new(child),
            address,
            daemon,
            config_path,
            service_dir,
            runtime_dir,
            stderr: stderr_text,
            dir,
        }
    }
}

/// A running bus daemon, on a private socket, with its config and a service dir in a temp dir.
pub struct TestBus {
    child: Mutex<Child>,
    pid: u32,
    address: String,
    daemon: PathBuf,
    config_path: PathBuf,
    service_dir: PathBuf,
    runtime_dir: PathBuf,
    stderr: Arc<Mutex<String>>,
    // Dropped last: the daemon's socket lives in it.
    dir: TempDir,
}

impl TestBus {
    /// A bus with the default session-like configuration.
    #[track_caller]
    pub fn start() -> TestBus {
        Self::builder().start()
    }

    /// A bus whose configuration also has `extra_xml` (policies, limits, ...) at its end.
    #[track_caller]
    pub fn with_config(extra_xml: &str) -> TestBus {
        Self::builder().config(extra_xml).start()
    }

    pub fn builder() -> TestBusBuilder {
        TestBusBuilder::default()
    }

    /// The address the daemon printed, e.g. `unix:path=/tmp/telbus-test.X/dbus-Y,guid=Z`.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The program running as this bus.
    pub fn daemon(&self) -> &Path {
        &self.daemon
    }

    /// The bus's temp dir (its socket, configuration and service dir are in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The configuration's `<servicedir>`, empty at first: put `.service` files here.
    pub fn service_dir(&self) -> &Path {
        &self.service_dir
    }

    /// What the daemon has written to stderr so far.
    pub fn daemon_stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether the daemon is still running.
    pub fn is_alive(&self) -> bool {
        matches!(self.child.lock().unwrap().try_wait(), Ok(None))
    }

    /// Panics unless the daemon is still running: tests end with this, so that a broker that
    /// crashed on the way fails them even when every reply came.
    #[track_caller]
    pub fn assert_alive(&self) {
        let status = self.child.lock().unwrap().try_wait().expect("try_wait");
        if let Some(status) = status {
            panic!(
                "the bus daemon exited ({status}); its stderr:\n{}",
                self.daemon_stderr()
            );
        }
    }

    /// A zbus connection to this bus (authenticated, Hello done).
    pub async fn connect(&self) -> zbus::Connection {
        let builder = zbus::connection::Builder::address(self.address());
        within(STEP_TIMEOUT, "connecting to the test bus", builder.build())
            .await
            .expect("connect to the test bus")
    }

    /// A command for `program` that can reach this bus only: no bus address in its environment
    /// (pass [`TestBus::address`] on its command line) and a private XDG_RUNTIME_DIR and HOME.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        isolate(&mut command, &self.runtime_dir);
        command
    }

    /// Runs `busctl --address=ADDR ARGS...` to completion.
    #[track_caller]
    pub fn busctl<I, S>(&self, args: I) -> ClientOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_command(self.busctl_command(args), CLIENT_TIMEOUT)
    }

    /// Runs `gdbus SUBCOMMAND --address ADDR REST...` to completion; `args` starts with the
    /// subcommand (`call`, `introspect`, ...).
    #[track_caller]
    pub fn gdbus<I, S>(&self, args: I) -> ClientOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_command(self.gdbus_command(args), CLIENT_TIMEOUT)
    }

    /// Runs `dbus-send --bus=ADDR ARGS...` to completion. (`--bus`, not `--address`: dbus-send's
    /// `--address` is the old spelling of `--peer`, which skips Hello and so is not a bus client.)
    #[track_caller]
    pub fn dbus_send<I, S>(&self, args: I) -> ClientOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command("dbus-send");
        command.arg(format!("--bus={}", self.address)).args(args);
        run_command(command, CLIENT_TIMEOUT)
    }

    /// Starts `busctl --address=ADDR ARGS...` in the background (e.g. `monitor`).
    #[track_caller]
    pub fn spawn_busctl<I, S>(&self, args: I) -> Background
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Background::spawn(self.busctl_command(args))
    }

    /// Starts `gdbus SUBCOMMAND --address ADDR REST...` in the background (e.g. `monitor`).
    #[track_caller]
    pub fn spawn_gdbus<I, S>(&self, args: I) -> Background
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Background::spawn(self.gdbus_command(args))
    }

    /// Starts `dbus-monitor --address ADDR ARGS...` in the background.
    #[track_caller]
    pub fn spawn_dbus_monitor<I, S>(&self, args: I) -> Background
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command("dbus-monitor");
        command.arg("--address").arg(&self.address).args(args);
        Background::spawn(command)
    }

    /// Starts `dbus-test-tool echo`, a service that answers every method call with an empty
    /// reply, owning `name` if given, and returns it with its unique name once it is on the bus.
    /// `None` when dbus-test-tool (package dbus-tests) is not installed.
    #[track_caller]
    pub fn spawn_echo_service(&self, name: Option<&str>) -> Option<(Background, String)> {
        const TOOL: &str = "/usr/bin/dbus-test-tool";
        if !Path::new(TOOL).exists() {
            return None;
        }
        // Line-buffered, so that the unique name it prints (when it takes no well-known name)
        // reaches the pipe at once.
        let mut command = self.command("stdbuf");
        command.args(["-oL", TOOL, "echo"]);
        if let Some(name) = name {
            command.arg(format!("--name={name}"));
        }
        // dbus-test-tool has no --address option: it connects to the "session" bus, which
        // here is this private one.
        command.env("DBUS_SESSION_BUS_ADDRESS", &self.address);
        let service = Background::spawn(command);
        let unique_name = match name {
            Some(name) => self.wait_for_owner(name, STARTUP_TIMEOUT),
            None => {
                let out = service.wait_for_stdout(STARTUP_TIMEOUT, |out| out.contains('\n'));
                out.trim().to_string()
            }
        };
        Some((service, unique_name))
    }

    /// Waits until `name` has an owner on this bus, and returns the owner's unique name.
    /// Callable from synchronous code and from inside [`crate::run`] alike (it runs on a thread
    /// of its own), as long as the owner is not a connection of the calling thread.
    #[track_caller]
    pub fn wait_for_owner(&self, name: &str, timeout: Duration) -> String {
        let address = self.address.clone();
        let name = name.to_string();
        let waiter = thread::spawn(move || {
            zruntime::block_on(async move {
                let connection = zbus::connection::Builder::address(address.as_str())
                    .build()
                    .await
                    .expect("connect to the test bus");
                within(
                    timeout,
                    "waiting for a name owner",
                    owner_of(&connection, &name),
                )
                .await
            })
        });
        match waiter.join() {
            Ok(owner) => owner,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    fn busctl_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command("busctl");
        command
            .arg(format!("--address={}", self.address))
            .arg("--no-pager")
            .args(args);
        command
    }

    fn gdbus_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut args = args.into_iter();
        let mut command = self.command("gdbus");
        command.args(args.next());
        command.arg("--address").arg(&self.address).args(args);
        command
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Ok(None) = child.try_wait() {
            // SIGTERM first, for a clean exit; SIGKILL if that takes too long.
            kill_group(self.pid, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(2);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            kill_group(self.pid, libc::SIGKILL);
        }
        let _ = child.wait();
    }
}

/// The unique name that owns `name`, as soon as it has one.
async fn owner_of(connection: &zbus::Connection, name: &str) -> String {
    let mut changes = zbus::MessageStream::from(connection);
    let rule =
        format!("type='signal',sender='{DRIVER_NAME}',member='NameOwnerChanged',arg0='{name}'");
    add_match(connection, &rule).await.expect("AddMatch");
    // Subscribed first, asked second: an owner that comes in between is seen either way.
    if let Ok(reply) = call_driver(connection, "GetNameOwner", &(name,)).await {
        return reply
            .body()
            .deserialize::<String>()
            .expect("GetNameOwner reply");
    }
    loop {
        let signal = next_signal(&mut changes, |m| {
            m.header().member().is_some_and(|m| m == "NameOwnerChanged")
        })
        .await;
        let (_, _, new_owner): (String, String, String) =
            signal.body().deserialize().expect("NameOwnerChanged body");
        if !new_owner.is_empty() {
            return new_owner;
        }
    }
}

/// Keeps `command` away from the machine's buses and the user's runtime files.
fn isolate(command: &mut Command, runtime_dir: &Path) {
    for name in BUS_ENV {
        command.env_remove(name);
    }
    command
        .env("XDG_RUNTIME_DIR", runtime_dir)
        .env("HOME", runtime_dir)
        // Plain, uncoloured output from systemd tools and GLib.
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "")
        .env("NO_COLOR", "1")
        .env("LC_ALL", "C.UTF-8");
}

/// Reads the first line of the daemon's stdout (its address), within `timeout`.
fn read_address(child: &mut Child, timeout: Duration) -> Result<String, String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let first = reader.read_line(&mut line).map(|_| line);
        let _ = tx.send(first);
        // Keep reading, so that the daemon never blocks on a full pipe.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(line)) if !line.trim().is_empty() => Ok(line.trim().to_string()),
        Ok(Ok(_)) => Err("it closed stdout without printing an address".to_string()),
        Ok(Err(e)) => Err(format!("reading its stdout: {e}")),
        Err(_) => Err(format!("no address printed within {timeout:?}")),
    }
}

/// Collects the daemon's stderr, for failure messages.
fn collect_stderr(mut stderr: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut buffer) {
            into.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
}
