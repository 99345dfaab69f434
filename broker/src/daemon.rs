//! Starting the daemon: configuration, listening sockets, forking, pid file, printing the
//! address, signals, privileges; then the bus runs until SIGTERM.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use telbus_broker::transport::{self, Listener};
use telbus_busconfig::{BusConfig, BusKind};
use tracing::{error, info};

use crate::bus::Bus;
use crate::cli::Args;

/// The configuration file to read for these arguments, and its text when it is the embedded one.
fn config_source(args: &Args) -> Result<(PathBuf, Option<&'static str>), String> {
    if let Some(path) = &args.config_file {
        return Ok((path.clone(), None));
    }
    let kind = if args.system {
        BusKind::System
    } else if args.session {
        BusKind::Session
    } else {
        return Err("No configuration file specified.".into());
    };
    match telbus_busconfig::default_config_path(kind) {
        Some(path) => Ok((path, None)),
        None => {
            let name = match kind {
                BusKind::System => "<embedded system.conf>",
                BusKind::Session => "<embedded session.conf>",
            };
            Ok((
                PathBuf::from(name),
                Some(telbus_busconfig::embedded_default(kind)),
            ))
        }
    }
}

pub fn load_config(path: &Path, embedded: Option<&str>) -> Result<BusConfig, String> {
    match embedded {
        Some(text) => telbus_busconfig::load_str(text, path),
        None => telbus_busconfig::load(path),
    }
    .map_err(|e| e.to_string())
}

/// Logs go to stderr, or to the journal when stderr is systemd's journal stream (systemd sets
/// JOURNAL_STREAM to its device and inode) or `--syslog-only` asks for it; `--syslog` logs to
/// both. TELBUS_LOG (else RUST_LOG) is a tracing filter: a level, and per-module levels such
/// as `info,telbusd::activation=debug`; without either, the configuration's `<log>` (see
/// [`apply_config_log_filter`]), else `info`.
fn init_logging(args: &Args) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, reload};

    let filter = env_log_filter().unwrap_or_else(|| "info".into());
    let to_journal = !args.nosyslog && (args.syslog || args.syslog_only || stderr_is_journal());
    let journal = if to_journal {
        match tracing_journald::layer() {
            Ok(layer) => Some(layer.with_syslog_identifier("telbusd".into())),
            Err(e) => {
                eprintln!("telbusd: cannot log to the journal ({e}); logging to stderr");
                None
            }
        }
    } else {
        None
    };
    let to_stderr = journal.is_none() || (args.syslog && !stderr_is_journal());
    let stderr = to_stderr.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
    });
    // One filter for both outputs, replaceable once the configuration is read (and reloaded).
    let (filter, handle) = reload::Layer::new(EnvFilter::new(&filter));
    let _ = LOG_FILTER.set(handle);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(journal)
        .with(stderr)
        .try_init();
}

type LogFilterHandle =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// The running log filter, for [`apply_config_log_filter`].
static LOG_FILTER: std::sync::OnceLock<LogFilterHandle> = std::sync::OnceLock::new();

fn env_log_filter() -> Option<String> {
    std::env::var("TELBUS_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
}

/// Use the configuration's `<log>` filter (at start and on every reload), unless TELBUS_LOG or
/// RUST_LOG says otherwise. A filter that does not parse is refused with a warning and the
/// running one stays.
pub fn apply_config_log_filter(config: &BusConfig) {
    if env_log_filter().is_some() {
        return;
    }
    let text = config.log.as_deref().unwrap_or("info");
    let Some(handle) = LOG_FILTER.get() else {
        return;
    };
    match tracing_subscriber::EnvFilter::try_new(text) {
        Ok(filter) => {
            if let Err(e) = handle.reload(filter) {
                tracing::warn!("cannot change the log filter: {e}");
            }
        }
        Err(e) => {
            tracing::warn!("<log>{text}</log> is not a log filter ({e}); kept the running one")
        }
    }
}

/// Whether our stderr is the stream systemd connected to the journal.
fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let Ok(stat) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(stat.st_dev) && ino.parse::<u64>().ok() == Some(stat.st_ino)
}

/// Write `text` to a descriptor we were handed (print-address, print-pid) without closing it.
fn write_to_fd(fd: i32, text: &str) -> std::io::Result<()> {
    // SAFETY: the descriptor number comes from the command line; ManuallyDrop keeps it open.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut file = std::mem::ManuallyDrop::new(file);
    file.write_all(text.as_bytes())?;
    file.flush()
}

pub fn run(args: Args) -> ExitCode {
    crate::stats::mark_start();
    init_logging(&args);
    if args.introspect {
        print!("{}", crate::driver::introspection_of_driver());
        return ExitCode::SUCCESS;
    }
    let (path, embedded) = match config_source(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match load_config(&path, embedded) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Failed to start message bus: {e}");
            return ExitCode::FAILURE;
        }
    };
    apply_config_log_filter(&config);
    // Before listening: a bad bindings file stops the bus before anyone is told its address.
    let telaf = match args.bindings.as_deref().map(crate::telaf::Telaf::load) {
        None => None,
        Some(Ok(telaf)) => Some(telaf),
        Some(Err(e)) => {
            eprintln!("Failed to start message bus: invalid bindings: {e}");
            return ExitCode::FAILURE;
        }
    };
    let guid = crate::random_hex();
    let addresses: Vec<String> = match &args.address {
        Some(a) => vec![a.clone()],
        None => config.listen.clone(),
    };
    if addresses.is_empty() {
        eprintln!("Failed to start message bus: no <listen> address in the configuration");
        return ExitCode::FAILURE;
    }
    let mut listeners: Vec<Listener> = Vec::new();
    for address in &addresses {
        match transport::listen(address, &guid) {
            Ok(mut l) => listeners.append(&mut l),
            Err(e) => {
                eprintln!("Failed to start message bus: cannot listen on {address}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let printed_address = listeners
        .iter()
        .map(|l| l.address.clone())
        .collect::<Vec<_>>()
        .join(";");

    // SIGPIPE would kill us when a client or a print-address reader goes away mid-write.
    // SAFETY: setting a signal disposition to SIG_IGN is always sound.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }

    let fork = !args.nofork && (args.fork || config.fork);
    if fork && let Err(e) = daemonize() {
        eprintln!("Failed to fork: {e}");
        return ExitCode::FAILURE;
    }
    if !args.nopidfile
        && let Some(pidfile) = &config.pidfile
        && let Err(e) = std::fs::write(pidfile, format!("{}\n", std::process::id()))
    {
        eprintln!(
            "Failed to start message bus: cannot write pid file {}: {e}",
            pidfile.display()
        );
        return ExitCode::FAILURE;
    }
    let signals = match signal_pipe() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("Failed to set up signal handling: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Raising the hard limit needs root; then the bus becomes its configured user before it says
    // it is ready (address and pid printed), so that whoever reads them meets the final process.
    raise_fd_limit();
    if let Some(user) = config.user.clone()
        && let Err(e) = drop_privileges(&user)
    {
        eprintln!("Failed to start message bus: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(fd) = args.print_address
        && let Err(e) = write_to_fd(fd, &format!("{printed_address}\n"))
    {
        eprintln!("Failed to print the address to fd {fd}: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(fd) = args.print_pid
        && let Err(e) = write_to_fd(fd, &format!("{}\n", std::process::id()))
    {
        eprintln!("Failed to print the pid to fd {fd}: {e}");
        return ExitCode::FAILURE;
    }
    if fork {
        finish_daemonizing();
    }

    let pidfile = config.pidfile.clone().filter(|_| !args.nopidfile);
    info!("listening on {printed_address}");
    let config_path = embedded.is_none().then_some(path);
    let mut bus = match Bus::new(config, config_path, listeners, guid) {
        Ok(b) => b,
        Err(e) => {
            error!("cannot set up the event loop: {e}");
            return ExitCode::FAILURE;
        }
    };
    bus.telaf = telaf.map(Box::new);
    bus.systemd_activation = args.systemd_activation;
    bus.address = printed_address.clone();
    bus.load_services();
    let (signals, flags) = signals;
    if let Err(e) = bus.watch_signals(signals, flags) {
        error!("cannot watch signals: {e}");
        return ExitCode::FAILURE;
    }
    crate::daemon::notify_systemd("READY=1\nSTATUS=Processing requests...");
    let result = bus.run();
    drop(bus);
    if let Some(pidfile) = pidfile {
        let _ = std::fs::remove_file(pidfile);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Which signals arrived since the event loop last looked.
#[derive(Default)]
pub struct SignalFlags {
    pub hangup: Arc<AtomicBool>,
    pub terminate: Arc<AtomicBool>,
}

/// A pipe that wakes the event loop when SIGHUP, SIGTERM or SIGINT arrive, and the flags
/// that say which did.
fn signal_pipe() -> std::io::Result<(OwnedFd, SignalFlags)> {
    let (read, write) = rustix::pipe::pipe_with(
        rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
    )?;
    let write = std::os::unix::net::UnixStream::from(write);
    let flags = SignalFlags::default();
    for (signal, flag) in [
        (libc::SIGHUP, &flags.hangup),
        (libc::SIGTERM, &flags.terminate),
        (libc::SIGINT, &flags.terminate),
    ] {
        signal_hook::flag::register(signal, flag.clone())?;
        signal_hook::low_level::pipe::register(signal, write.try_clone()?)?;
    }
    Ok((read, flags))
}

/// Tell systemd we are ready, when it started us with a notify socket.
pub fn notify_systemd(state: &str) {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else {
        return;
    };
    let socket = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let result = if let Some(abstract_name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
    } else {
        socket.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = result {
        tracing::warn!("cannot notify systemd at {path}: {e}");
    }
}

/// Tell systemd a reload has begun (READY=1 follows when it is done), with the monotonic
/// time systemd's notify-reload protocol asks for.
pub fn notify_reloading() {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1000;
    notify_systemd(&format!(
        "RELOADING=1\nSTATUS=Reloading configuration\nMONOTONIC_USEC={usec}"
    ));
}

static mut READY_PIPE: i32 = -1;

/// Fork into the background. The parent waits until the child has printed its address (so
/// that whoever started us can use the bus as soon as we exit) and exits.
fn daemonize() -> std::io::Result<()> {
    let (read, write) = rustix::pipe::pipe()?;
    // SAFETY: we are single-threaded here; the child only continues our own code.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            drop(read);
            // SAFETY: plain system calls in the child.
            unsafe {
                libc::setsid();
                READY_PIPE = std::os::fd::IntoRawFd::into_raw_fd(write);
            }
            Ok(())
        }
        _ => {
            drop(write);
            let mut buf = [0u8; 1];
            let ok = matches!(rustix::io::read(&read, &mut buf), Ok(1));
            std::process::exit(if ok { 0 } else { 1 });
        }
    }
}

/// In the forked child: tell the parent we are up, and leave the terminal alone.
fn finish_daemonizing() {
    // SAFETY: READY_PIPE is written once by `daemonize` before this runs, on this thread.
    let fd = unsafe { READY_PIPE };
    if fd >= 0 {
        let _ = write_to_fd(fd, "1");
        // SAFETY: we own this descriptor and close it once.
        unsafe {
            libc::close(fd);
        }
    }
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto the standard descriptors.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            if std::env::var_os("DBUS_DEBUG_OUTPUT").is_none() {
                libc::dup2(null.as_raw_fd(), 1);
            }
        }
    }
}

/// The uid and gid of a user name (or numeric uid).
pub fn lookup_user(user: &str) -> Result<(u32, u32), String> {
    let name = std::ffi::CString::new(user).map_err(|_| format!("bad user name {user:?}"))?;
    // SAFETY: getpwnam returns a pointer into static storage, read at once on this thread.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        if let Ok(uid) = user.parse::<u32>() {
            return Ok((uid, uid));
        }
        return Err(format!("Could not get UID and GID for username \"{user}\""));
    }
    // SAFETY: pw is non-null and valid until the next getpw* call.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// Become `<user>` after the sockets are bound, as dbus-daemon does.
fn drop_privileges(user: &str) -> Result<(), String> {
    let current = rustix::process::getuid();
    let name = std::ffi::CString::new(user).map_err(|_| format!("bad user name {user:?}"))?;
    let (uid, gid) = lookup_user(user)?;
    if current.as_raw() == uid {
        return Ok(());
    }
    if !current.is_root() {
        return Err(format!(
            "cannot switch to user \"{user}\": not running as root"
        ));
    }
    // SAFETY: plain system calls; order matters (groups and gid before uid).
    let ok = unsafe {
        libc::initgroups(name.as_ptr(), gid) == 0
            && libc::setgid(gid) == 0
            && libc::setuid(uid) == 0
    };
    if !ok {
        return Err(format!(
            "cannot switch to user \"{user}\": {}",
            std::io::Error::last_os_error()
        ));
    }
    info!("running as user {user} (uid {uid})");
    Ok(())
}

/// The file descriptor limit the bus started with, restored for the services it starts.
static INITIAL_FD_LIMIT: std::sync::OnceLock<libc::rlimit> = std::sync::OnceLock::new();

/// Enough descriptors for many clients passing fds, as dbus-daemon sets for itself.
const ENOUGH_FDS: libc::rlim_t = 65536;

/// Raise RLIMIT_NOFILE as dbus-daemon does: as root, to at least 65536 (soft and hard);
/// otherwise the soft limit up to the hard one. Done before dropping privileges.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(
            "cannot read the fd limit: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    let _ = INITIAL_FD_LIMIT.set(limit);
    let mut raised = limit;
    if rustix::process::getuid().is_root() {
        if raised.rlim_cur != libc::RLIM_INFINITY && raised.rlim_cur < ENOUGH_FDS {
            raised.rlim_cur = ENOUGH_FDS;
        }
        if raised.rlim_max != libc::RLIM_INFINITY && raised.rlim_max < raised.rlim_cur {
            raised.rlim_max = raised.rlim_cur;
        }
    }
    if raised.rlim_max == libc::RLIM_INFINITY || raised.rlim_cur < raised.rlim_max {
        raised.rlim_cur = raised.rlim_max;
    }
    if raised.rlim_cur == limit.rlim_cur && raised.rlim_max == limit.rlim_max {
        return;
    }
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        tracing::warn!(
            "cannot raise the fd limit: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Give a child the fd limit the bus was started with (called between fork and exec).
pub fn restore_fd_limit_in_child() {
    if let Some(limit) = INITIAL_FD_LIMIT.get() {
        // SAFETY: setrlimit is async-signal-safe and reads a struct that lives for ever.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, limit) };
    }
}
