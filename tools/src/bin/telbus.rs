//! `telbus`: the user-facing entry point. `telbus run-session -- COMMAND` works like
//! dbus-run-session: a private session bus for one command, gone when the command exits.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "telbus", version, about = "telbus, a D-Bus message bus")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run COMMAND with a private session bus (DBUS_SESSION_BUS_ADDRESS set for it), and stop
    /// the bus when COMMAND exits; exits with COMMAND's status.
    RunSession {
        /// The bus daemon to start (default: telbusd next to this program, else on PATH).
        #[arg(long = "dbus-daemon", alias = "daemon", value_name = "PATH")]
        daemon: Option<PathBuf>,
        /// A bus configuration file (default: the daemon's --session configuration).
        #[arg(long = "config-file", value_name = "FILE")]
        config_file: Option<PathBuf>,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

fn default_daemon() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("telbusd")))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("telbusd"))
}

fn run_session(
    daemon: Option<PathBuf>,
    config_file: Option<PathBuf>,
    command: &[String],
) -> ExitCode {
    let daemon = daemon.unwrap_or_else(default_daemon);
    let mut bus = Command::new(&daemon);
    match &config_file {
        Some(file) => bus.arg(format!("--config-file={}", file.display())),
        None => bus.arg("--session"),
    };
    // The daemon prints its address on stdout once it listens; its log goes to our stderr.
    bus.args(["--nofork", "--nopidfile", "--print-address=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut bus = match bus.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("telbus run-session: cannot start {}: {e}", daemon.display());
            return ExitCode::from(127);
        }
    };
    let mut address = String::new();
    let stdout = bus.stdout.take().expect("piped stdout");
    if BufReader::new(stdout).read_line(&mut address).is_err() || address.trim().is_empty() {
        eprintln!(
            "telbus run-session: {} did not print its address",
            daemon.display()
        );
        let _ = bus.kill();
        let _ = bus.wait();
        return ExitCode::from(127);
    }
    let status = Command::new(&command[0])
        .args(&command[1..])
        .env("DBUS_SESSION_BUS_ADDRESS", address.trim())
        // A starter address of another bus would mislead the command.
        .env_remove("DBUS_STARTER_ADDRESS")
        .env_remove("DBUS_STARTER_BUS_TYPE")
        .status();
    // SIGTERM lets the bus shut down cleanly; then reap it.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(bus.id() as i32, libc::SIGTERM) };
    let _ = bus.wait();
    match status {
        Ok(status) => match status.code() {
            Some(code) => ExitCode::from(code as u8),
            // Killed by a signal: the shell's convention, 128 + signal.
            None => {
                use std::os::unix::process::ExitStatusExt;
                ExitCode::from(128 + status.signal().unwrap_or(0) as u8)
            }
        },
        Err(e) => {
            eprintln!("telbus run-session: cannot run {}: {e}", command[0]);
            ExitCode::from(127)
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Commands::RunSession {
            daemon,
            config_file,
            command,
        } => run_session(daemon, config_file, &command),
    }
}
