//! Starting each broker on a private socket in a temp dir, and stopping it.
//!
//! telbusd and dbus-daemon get the same permissive session-style configuration; busd gets it
//! too (it only uses `<listen>`). dbus-broker runs without its launcher: the benchmark is its
//! controller, as dbus-broker's own test harness is. It execs `dbus-broker --controller FD`,
//! authenticates on that socket and calls `org.bus1.DBus.Broker.AddListener` with a listening
//! socket and an allow-all policy. That needs neither systemd's journal socket nor a bus
//! connection of the launcher's own, and touches nothing outside the temp dir.

use std::io::{BufRead, BufReader, IoSlice};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use zbus::{Message, ObjectPath};

use crate::client::Client;
use crate::wire::Template;

/// How long a broker may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Telbusd,
    /// telbusd without `<policy>` checks at all (TELBUS_BENCH_NO_POLICY): the baseline for the
    /// cost of policy.
    TelbusdNoPolicy,
    /// telbusd with the machine's system-bus policy (system.conf and its system.d files).
    TelbusdSystemPolicy,
    /// telbusd with 1,000 TelAF apps and bindings loaded (--bindings).
    TelbusdBindings,
    DbusDaemon,
    DbusBroker,
    Busd,
}

impl Kind {
    pub fn from_name(name: &str) -> Option<Kind> {
        match name {
            "telbusd" => Some(Kind::Telbusd),
            "telbusd-nopolicy" => Some(Kind::TelbusdNoPolicy),
            "telbusd-syspolicy" => Some(Kind::TelbusdSystemPolicy),
            "telbusd-bindings" => Some(Kind::TelbusdBindings),
            "dbus-daemon" => Some(Kind::DbusDaemon),
            "dbus-broker" => Some(Kind::DbusBroker),
            "busd" => Some(Kind::Busd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Telbusd => "telbusd",
            Kind::TelbusdNoPolicy => "telbusd-nopolicy",
            Kind::TelbusdSystemPolicy => "telbusd-syspolicy",
            Kind::TelbusdBindings => "telbusd-bindings",
            Kind::DbusDaemon => "dbus-daemon",
            Kind::DbusBroker => "dbus-broker",
            Kind::Busd => "busd",
        }
    }
}

/// A broker binary to benchmark.
#[derive(Clone, Debug)]
pub struct Broker {
    pub kind: Kind,
    pub binary: PathBuf,
}

impl Broker {
    /// The first line of `--version`.
    pub fn version(&self) -> String {
        Command::new(&self.binary)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(|l| l.trim().to_string())
            })
            .unwrap_or_else(|| "unknown version".to_string())
    }

    /// Start a fresh instance, listening on a socket of its own.
    pub fn start(&self) -> Result<RunningBroker, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let socket = dir.path().join("bus");
        let log = dir.path().join("broker.log");
        let config = dir.path().join("bus.conf");
        let text = match self.kind {
            Kind::TelbusdSystemPolicy => system_policy_config(&socket)?,
            _ => permissive_config(&socket),
        };
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let mut command = Command::new(&self.binary);
        command
            .env("HOME", dir.path())
            .env("XDG_RUNTIME_DIR", dir.path())
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
            .env_remove("DBUS_STARTER_ADDRESS")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?)
            .process_group(0);
        let mut running = match self.kind {
            Kind::Telbusd
            | Kind::TelbusdNoPolicy
            | Kind::TelbusdSystemPolicy
            | Kind::TelbusdBindings
            | Kind::DbusDaemon => {
                if self.kind == Kind::TelbusdNoPolicy {
                    command.env("TELBUS_BENCH_NO_POLICY", "1");
                }
                if self.kind == Kind::TelbusdBindings {
                    let file = dir.path().join("system.bindings");
                    std::fs::write(&file, thousand_bindings()).map_err(|e| e.to_string())?;
                    command.arg(format!("--bindings={}", file.display()));
                }
                command.arg(format!("--config-file={}", config.display()));
                command.args(["--nofork", "--print-address=1"]);
                start_printing_address(command, dir, socket)?
            }
            Kind::Busd => {
                command.arg("--config").arg(&config).arg("--print-address");
                start_printing_address(command, dir, socket)?
            }
            Kind::DbusBroker => start_dbus_broker(command, dir, socket)?,
        };
        running.log = log;
        Ok(running)
    }
}

/// 1,000 apps, each bound to the next one's service: the bench's clients are none of them
/// (they are user principals), so every call pays the bindings' lookups and passes.
fn thousand_bindings() -> String {
    let mut text = String::new();
    for i in 0..1000 {
        text.push_str(&format!(
            "app app{i} {{\n    match exe=/nonexistent/app{i}\n    provides svc{i} protocol=p{i}\n}}\n"
        ));
    }
    for i in 0..1000 {
        text.push_str(&format!(
            "bind app{i}.next -> app{}.svc{}\n",
            (i + 1) % 1000,
            (i + 1) % 1000
        ));
    }
    text
}

/// A broker running in a temp dir of its own; killed when dropped.
pub struct RunningBroker {
    pub socket: PathBuf,
    pub pid: u32,
    child: Child,
    log: PathBuf,
    /// dbus-broker exits when its controller goes away: held for as long as it runs.
    _controller: Option<Client>,
    _dir: tempfile::TempDir,
}

impl RunningBroker {
    /// Whether the broker is still running, and if not the end of its log.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("the broker exited ({status}){}", self.log_tail())),
            Err(e) => Err(e.to_string()),
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        }
    }
}

impl Drop for RunningBroker {
    fn drop(&mut self) {
        // SIGTERM first, so that a broker run under a profiler (callgrind) exits cleanly and
        // writes its profile; SIGKILL to the process group after a grace period.
        // SAFETY: kill(2) on the broker and on the process group it was started in.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe {
            libc::kill(-(self.pid as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// The configuration telbusd, dbus-daemon and busd run with: a session bus that lets everyone
/// do everything, with limits high enough for the workloads (as dbus-daemon's session.conf has
/// them, plus more match rules and connections).
pub fn permissive_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
  <limit name="max_incoming_bytes">1000000000</limit>
  <limit name="max_outgoing_bytes">1000000000</limit>
  <limit name="max_completed_connections">100000</limit>
  <limit name="max_incomplete_connections">10000</limit>
  <limit name="max_connections_per_user">100000</limit>
  <limit name="max_match_rules_per_connection">50000</limit>
  <limit name="max_replies_per_connection">50000</limit>
  <limit name="max_names_per_connection">50000</limit>
</busconfig>
"#,
        socket.display()
    )
}

/// The machine's system bus configuration (its whole policy, system.d files included) with
/// what would touch the machine taken out (user, fork, pidfile, syslog, listen, service
/// helper, service dirs), listening on `socket`, plus what a benchmark service would install in
/// system.d: a rule that lets anyone call its interface. Limits as in [`permissive_config`].
pub fn system_policy_config(socket: &Path) -> Result<String, String> {
    const SYSTEM_CONF: &str = "/usr/share/dbus-1/system.conf";
    let mut text =
        std::fs::read_to_string(SYSTEM_CONF).map_err(|e| format!("{SYSTEM_CONF}: {e}"))?;
    for tag in [
        "user",
        "fork",
        "pidfile",
        "syslog",
        "listen",
        "servicehelper",
        "standard_system_servicedirs",
    ] {
        text = remove_element(&text, tag);
    }
    // Relative include dirs are relative to the file, which now lives in a temp dir.
    text = text.replace(
        "<includedir>system.d</includedir>",
        "<includedir>/usr/share/dbus-1/system.d</includedir>",
    );
    let end = text
        .rfind("</busconfig>")
        .ok_or_else(|| format!("{SYSTEM_CONF} has no </busconfig>"))?;
    let permissive = permissive_config(socket);
    let limits: String = permissive
        .lines()
        .filter(|l| l.trim_start().starts_with("<limit "))
        .map(|l| format!("{l}\n"))
        .collect();
    let extra = format!(
        r#"  <listen>unix:path={}</listen>
  <policy context="default">
    <allow send_interface="org.telbus.Bench"/>
  </policy>
{limits}"#,
        socket.display()
    );
    text.insert_str(end, &extra);
    Ok(text)
}

/// `text` without any `<tag>…</tag>` or `<tag/>` element.
fn remove_element(text: &str, tag: &str) -> String {
    let mut out = text.to_string();
    let empty = format!("<{tag}/>");
    out = out.replace(&empty, "");
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    while let Some(start) = out.find(&open) {
        let Some(len) = out[start..].find(&close) else {
            break;
        };
        out.replace_range(start..start + len + close.len(), "");
    }
    out
}

/// Start a broker that prints its address on stdout once it listens.
fn start_printing_address(
    mut command: Command,
    dir: tempfile::TempDir,
    socket: PathBuf,
) -> Result<RunningBroker, String> {
    command.stdout(Stdio::piped());
    let mut child = command.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    let pid = child.id();
    let mut running = RunningBroker {
        socket,
        pid,
        child,
        log: dir.path().join("broker.log"),
        _controller: None,
        _dir: dir,
    };
    match receiver.recv_timeout(START_TIMEOUT) {
        Ok(line) if line.starts_with("unix:") => Ok(running),
        Ok(_) => Err(running
            .check_alive()
            .err()
            .unwrap_or_else(|| "printed no address".to_string())),
        Err(_) => Err(format!(
            "printed no address within {} s",
            START_TIMEOUT.as_secs()
        )),
    }
}

/// The controller's policy for dbus-broker's AddListener: one batch for every uid that allows
/// connecting, owning any name, and sending and receiving anything; no gid or uid-range
/// batches, no SELinux rules, no AppArmor; a session bus. The values are the ones dbus-broker's
/// test harness uses; the type is `(a(u(bta(btbs)a(btssssuutt)a(btssssuutt)))a(buu(…))a(ss)bs)`.
type Transfer = (
    bool,
    u64,
    String,
    String,
    String,
    String,
    u32,
    u32,
    u64,
    u64,
);
type Batch = (
    bool,
    u64,
    Vec<(bool, u64, bool, String)>,
    Vec<Transfer>,
    Vec<Transfer>,
);
type Policy = (
    Vec<(u32, Batch)>,
    Vec<(bool, u32, u32, Batch)>,
    Vec<(String, String)>,
    bool,
    String,
);

fn allow_all_policy() -> Policy {
    let transfer: Transfer = (
        true,
        1,
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        0,
        0,
        0,
        u64::MAX,
    );
    let batch: Batch = (
        true,
        1,
        vec![(true, 1, true, String::new())],
        vec![transfer.clone()],
        vec![transfer],
    );
    (
        vec![(u32::MAX, batch)],
        Vec::new(),
        Vec::new(),
        false,
        "session".to_string(),
    )
}

fn machine_id() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|id| id.trim().to_string())
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| "0123456789abcdef0123456789abcdef".to_string())
}

/// Exec `dbus-broker --controller 3` and hand it a listening socket.
fn start_dbus_broker(
    mut command: Command,
    dir: tempfile::TempDir,
    socket: PathBuf,
) -> Result<RunningBroker, String> {
    let listener = UnixListener::bind(&socket).map_err(|e| format!("bind: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let theirs_fd = theirs.as_raw_fd();
    command
        .args(["--controller", "3", "--machine-id", &machine_id()])
        .args(["--max-matches", "1000000", "--max-objects", "1000000"])
        .args(["--max-bytes", "1000000000", "--max-fds", "100000"])
        .stdout(Stdio::null());
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if theirs_fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(theirs_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| format!("cannot start: {e}"))?;
    drop(theirs);
    let pid = child.id();
    let mut running = RunningBroker {
        socket,
        pid,
        child,
        log: dir.path().join("broker.log"),
        _controller: None,
        _dir: dir,
    };
    let controller = add_listener(ours, &listener).map_err(|e| {
        let died = running.check_alive().err().unwrap_or_default();
        format!("AddListener: {e} {died}")
    })?;
    running._controller = Some(controller);
    Ok(running)
}

/// Authenticate on the controller socket and call AddListener, passing the listener's fd.
fn add_listener(controller: UnixStream, listener: &UnixListener) -> std::io::Result<Client> {
    let mut client = Client::authenticated(controller, true)?;
    let path = ObjectPath::try_from("/org/bus1/DBus/Listener/0").map_err(std::io::Error::other)?;
    let call = Message::method_call("/org/bus1/DBus/Broker", "AddListener")
        .interface("org.bus1.DBus.Broker")
        .build(&(
            path,
            zbus::Fd::from(listener),
            zbus::Variant::from(allow_all_policy()),
        ))
        .map_err(std::io::Error::other)?;
    let template = Template::new(&call);
    let serial = client.next_serial();
    let mut bytes = Vec::new();
    template.append_to(&mut bytes, serial, None);
    // The message's one fd (index 0 in its body) goes alongside it.
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = rustix::net::SendAncillaryBuffer::new(&mut space);
    let fds = [listener.as_fd()];
    ancillary.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
    let sent = rustix::net::sendmsg(
        client.stream(),
        &[IoSlice::new(&bytes)],
        &mut ancillary,
        rustix::net::SendFlags::empty(),
    )?;
    client.send(&bytes[sent..])?;
    client.wait_reply(serial)?;
    Ok(client)
}
