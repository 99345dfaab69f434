//! telbusd: a D-Bus message bus daemon, a drop-in for dbus-daemon.

mod access;
mod activation;
mod bus;
mod census;
mod cli;
mod daemon;
mod driver;
mod monitor;
mod names;
mod peer;
mod polkit;
mod quota;
mod replies;
mod router;
mod stats;
mod telaf;
use telbus_broker::wire;

use std::process::ExitCode;

/// A connection's number: its unique name is `:1.<number>`. Never reused while the bus runs.
pub type ConnId = u64;

/// The machine id the bus reports (Peer.GetMachineId), as dbus-daemon reads it.
pub fn machine_id() -> String {
    for path in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
        if let Ok(text) = std::fs::read_to_string(path) {
            let id = text.trim();
            if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return id.to_string();
            }
        }
    }
    // No machine id on this system: one for the life of this bus, so that clients still get a
    // well-formed answer.
    random_hex()
}

/// 32 random hex digits (a GUID in the D-Bus sense).
pub fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        match rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("no randomness available: {e}"),
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> ExitCode {
    let args = cli::Args::parse_args();
    daemon::run(args)
}
