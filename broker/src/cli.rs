//! dbus-daemon's command line, so that anything that starts dbus-daemon can start telbusd.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "telbusd",
    version,
    about = "telbus message bus daemon: a drop-in replacement for dbus-daemon",
    long_about = "telbusd is a D-Bus message bus. It takes dbus-daemon's command line and XML \
configuration files, so D-Bus clients (busctl, gdbus, dbus-send, zbus, libdbus) use it unchanged.\n\n\
Logging goes to stderr, or to the journal when systemd connects stderr to it \
(JOURNAL_STREAM) or with --syslog-only; set TELBUS_LOG (or RUST_LOG) to a tracing filter such \
as `debug` or `info,telbusd::activation=debug` for more."
)]
pub struct Args {
    /// Use the standard configuration of the per-login-session bus.
    #[arg(long, conflicts_with_all = ["system", "config_file"])]
    pub session: bool,

    /// Use the standard configuration of the systemwide bus.
    #[arg(long, conflicts_with = "config_file")]
    pub system: bool,

    /// The configuration file to use.
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    /// Listen on this address instead of those of the configuration.
    #[arg(long, value_name = "ADDRESS")]
    pub address: Option<String>,

    /// Print the bus address to this file descriptor (standard output when no FD is given).
    #[arg(long, value_name = "FD", num_args = 0..=1, require_equals = true, default_missing_value = "1")]
    pub print_address: Option<i32>,

    /// Print the daemon's process id to this file descriptor (standard output when no FD is given).
    #[arg(long, value_name = "FD", num_args = 0..=1, require_equals = true, default_missing_value = "1")]
    pub print_pid: Option<i32>,

    /// Stay in the foreground, whatever the configuration says.
    #[arg(long, conflicts_with = "fork")]
    pub nofork: bool,

    /// Run in the background, whatever the configuration says.
    #[arg(long)]
    pub fork: bool,

    /// Do not write the pid file the configuration names.
    #[arg(long)]
    pub nopidfile: bool,

    /// Activate services through systemd (org.freedesktop.systemd1).
    #[arg(long)]
    pub systemd_activation: bool,

    /// Log to syslog (the journal) as well.
    #[arg(long, conflicts_with = "nosyslog")]
    pub syslog: bool,

    /// Log to syslog (the journal) only.
    #[arg(long)]
    pub syslog_only: bool,

    /// Do not log to syslog.
    #[arg(long)]
    pub nosyslog: bool,

    /// Enforce the TelAF bindings of this system definition file and serve io.telaf.Broker1
    /// (see docs/bindings.md).
    #[arg(long, value_name = "FILE")]
    pub bindings: Option<PathBuf>,

    /// Print the bus driver's introspection XML and exit.
    #[arg(long)]
    pub introspect: bool,
}

impl Args {
    pub fn parse_args() -> Args {
        Args::parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("telbusd").chain(args.iter().copied()))
    }

    #[test]
    fn dbus_daemon_style_options_parse() {
        let a = parse(&[
            "--config-file=/x.conf",
            "--nofork",
            "--print-address=5",
            "--print-pid",
            "--address=unix:tmpdir=/tmp",
            "--systemd-activation",
        ])
        .unwrap();
        assert_eq!(a.config_file.unwrap(), PathBuf::from("/x.conf"));
        assert_eq!(a.print_address, Some(5));
        assert_eq!(a.print_pid, Some(1));
        assert!(a.nofork && a.systemd_activation);
        assert_eq!(a.address.as_deref(), Some("unix:tmpdir=/tmp"));
    }

    #[test]
    fn config_file_takes_a_separate_value_too() {
        let a = parse(&["--config-file", "/y.conf", "--print-address"]).unwrap();
        assert_eq!(a.config_file.unwrap(), PathBuf::from("/y.conf"));
        assert_eq!(a.print_address, Some(1));
    }

    #[test]
    fn contradictions_are_refused() {
        assert!(parse(&["--session", "--system"]).is_err());
        assert!(parse(&["--fork", "--nofork"]).is_err());
        assert!(parse(&["--print-address=x"]).is_err());
    }
}
