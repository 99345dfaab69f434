//! `telbus run-session -- COMMAND`: a private session bus for one command, as dbus-run-session.

use std::path::PathBuf;
use std::process::Command;

use telbus_dbus_tests::daemon_path;

fn telbus() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/telbus");
    assert!(
        path.exists(),
        "{} does not exist: build it first: cargo build --release -p telbus-tools",
        path.display()
    );
    path
}

fn run_session(command: &[&str]) -> std::process::Output {
    Command::new(telbus())
        .arg("run-session")
        .arg(format!("--dbus-daemon={}", daemon_path().display()))
        .arg("--")
        .args(command)
        // Never the machine's own session bus.
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output()
        .expect("run telbus")
}

#[test]
fn the_command_talks_to_a_private_bus() {
    let out = run_session(&[
        "dbus-send",
        "--session",
        "--print-reply",
        "--dest=org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.ListNames",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"org.freedesktop.DBus\""), "{stdout}");
    // The address was that of a bus started for the command, in a temp dir.
    let out = run_session(&["sh", "-c", "echo \"$DBUS_SESSION_BUS_ADDRESS\""]);
    let address = String::from_utf8_lossy(&out.stdout);
    assert!(address.starts_with("unix:"), "{address}");
}

#[test]
fn the_exit_status_is_the_commands() {
    let out = run_session(&["sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    let out = run_session(&["true"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn the_bus_stops_with_the_command() {
    let out = run_session(&["sh", "-c", "echo $DBUS_SESSION_BUS_ADDRESS"]);
    let address = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let path = address
        .split(',')
        .find_map(|part| part.strip_prefix("unix:path="))
        .map(str::to_string);
    if let Some(path) = path {
        // Nobody listens there any more.
        assert!(
            std::os::unix::net::UnixStream::connect(&path).is_err(),
            "{path}"
        );
    } else {
        // An abstract socket: the bus is gone if connecting fails.
        let out = Command::new("dbus-send")
            .args([
                "--bus",
                &address,
                "--dest=org.freedesktop.DBus",
                "/",
                "org.freedesktop.DBus.GetId",
            ])
            .output()
            .unwrap();
        assert!(!out.status.success(), "the bus still answers at {address}");
    }
}
