//! The credentials the bus reports for its clients and for itself: GetConnectionUnixUser,
//! GetConnectionUnixProcessID and GetConnectionCredentials.

use std::os::unix::fs::PermissionsExt;
use std::panic::AssertUnwindSafe;
use std::path::Path;

use telbus_dbus_tests::{DRIVER_NAME, TestBus, call_driver, driver_proxy, expect_error, run};
use zbus::Connection;
use zbus::names::BusName;

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn egid() -> u32 {
    rustix::process::getegid().as_raw()
}

async fn unix_user(connection: &Connection, name: &str) -> zbus::Result<u32> {
    let reply = call_driver(connection, "GetConnectionUnixUser", &(name,)).await?;
    Ok(reply.body().deserialize().unwrap())
}

async fn process_id(connection: &Connection, name: &str) -> zbus::Result<u32> {
    let reply = call_driver(connection, "GetConnectionUnixProcessID", &(name,)).await?;
    Ok(reply.body().deserialize().unwrap())
}

#[test]
fn a_connection_of_this_process() {
    let bus = TestBus::start();
    run(async {
        let asker = bus.connect().await;
        let subject = bus.connect().await;
        let name = subject.unique_name().unwrap().to_string();
        assert_eq!(unix_user(&asker, &name).await.unwrap(), euid());
        assert_eq!(process_id(&asker, &name).await.unwrap(), std::process::id());

        let credentials = driver_proxy(&asker)
            .await
            .get_connection_credentials(BusName::try_from(name.as_str()).unwrap())
            .await
            .unwrap();
        assert_eq!(credentials.unix_user_id(), Some(euid()));
        assert_eq!(credentials.process_id(), Some(std::process::id()));
        let groups = credentials.unix_group_ids().expect("UnixGroupIDs");
        assert!(groups.contains(&egid()), "{groups:?} has our group");
    });
    bus.assert_alive();
}

#[test]
fn a_client_in_another_process_by_its_well_known_name() {
    const NAME: &str = "org.telbus.CredentialsTest";
    let bus = TestBus::start();
    let Some((echo, unique)) = bus.spawn_echo_service(Some(NAME)) else {
        panic!(
            "dbus-test-tool is missing: install the dbus-tests package (scripts/test-all.sh does)"
        );
    };
    run(async {
        let asker = bus.connect().await;
        for name in [NAME, unique.as_str()] {
            assert_eq!(
                process_id(&asker, name).await.unwrap(),
                echo.pid(),
                "{name}"
            );
            assert_eq!(unix_user(&asker, name).await.unwrap(), euid(), "{name}");
            let credentials = driver_proxy(&asker)
                .await
                .get_connection_credentials(BusName::try_from(name).unwrap())
                .await
                .unwrap();
            assert_eq!(credentials.process_id(), Some(echo.pid()));
            assert_eq!(credentials.unix_user_id(), Some(euid()));
        }
    });
    bus.assert_alive();
}

#[test]
fn a_client_of_another_user() {
    const NAME: &str = "org.telbus.CredentialsTest.Nobody";
    const NOBODY: u32 = 65534;
    if euid() != 0 || !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipped: needs root and setpriv to run a client as another user");
        return;
    }
    // Other users may connect (dbus-daemon admits only its own user by default).
    let bus = TestBus::with_config(r#"<policy context="default"><allow user="*"/></policy>"#);
    // ...and reach the socket.
    std::fs::set_permissions(bus.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut command = bus.command("/usr/bin/setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["/usr/bin/dbus-test-tool", "echo", &format!("--name={NAME}")])
        .env("DBUS_SESSION_BUS_ADDRESS", bus.address());
    let client = telbus_dbus_tests::Background::spawn(command);
    let wait = AssertUnwindSafe(|| bus.wait_for_owner(NAME, telbus_dbus_tests::STEP_TIMEOUT));
    let unique = std::panic::catch_unwind(wait).unwrap_or_else(|_| {
        panic!(
            "the client never owned {NAME}; its stderr:\n{}\nthe daemon's stderr:\n{}",
            client.stderr(),
            bus.daemon_stderr()
        )
    });
    run(async {
        let asker = bus.connect().await;
        assert_eq!(unix_user(&asker, NAME).await.unwrap(), NOBODY);
        assert_eq!(process_id(&asker, &unique).await.unwrap(), client.pid());
        let credentials = driver_proxy(&asker)
            .await
            .get_connection_credentials(BusName::try_from(NAME).unwrap())
            .await
            .unwrap();
        assert_eq!(credentials.unix_user_id(), Some(NOBODY));
        assert_eq!(credentials.process_id(), Some(client.pid()));
    });
    bus.assert_alive();
}

#[test]
fn the_bus_itself() {
    let bus = TestBus::start();
    run(async {
        let asker = bus.connect().await;
        assert_eq!(process_id(&asker, DRIVER_NAME).await.unwrap(), bus.pid());
        assert_eq!(unix_user(&asker, DRIVER_NAME).await.unwrap(), euid());
        let credentials = driver_proxy(&asker)
            .await
            .get_connection_credentials(BusName::try_from(DRIVER_NAME).unwrap())
            .await
            .unwrap();
        assert_eq!(credentials.process_id(), Some(bus.pid()));
        assert_eq!(credentials.unix_user_id(), Some(euid()));
    });
    bus.assert_alive();
}

#[test]
fn names_without_an_owner() {
    let bus = TestBus::start();
    run(async {
        let asker = bus.connect().await;
        let nobody = "org.telbus.Nobody";
        for (method, what) in [
            ("GetConnectionUnixUser", "UID"),
            ("GetConnectionUnixProcessID", "PID"),
            ("GetConnectionCredentials", "credentials"),
        ] {
            let result = call_driver(&asker, method, &(nobody,)).await;
            assert_eq!(
                expect_error(result),
                (
                    "org.freedesktop.DBus.Error.NameHasNoOwner".to_string(),
                    format!("Could not get {what} of name '{nobody}': no such name")
                ),
                "{method}"
            );
        }
    });
    bus.assert_alive();
}

/// The `Uid:` or `Gid:` line of /proc/PID/status: real, effective, saved and filesystem ids.
fn status_ids(pid: u32, key: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"));
    line.split_whitespace()
        .map(|id| id.parse().unwrap())
        .collect()
}

#[test]
fn a_system_bus_drops_to_its_configured_user_after_binding() {
    const NOBODY: u32 = 65534;
    if euid() != 0 {
        eprintln!("skipped: needs root to start a bus that drops privileges");
        return;
    }
    let bus = TestBus::with_config(
        r#"<user>nobody</user><policy context="default"><allow user="*"/></policy>"#,
    );
    // Every user id of the process is nobody's, and so is its group. telbusd drops privileges
    // before it prints its address; dbus-daemon prints first, so against it this check races.
    assert_eq!(status_ids(bus.pid(), "Uid:"), [NOBODY; 4]);
    assert_eq!(status_ids(bus.pid(), "Gid:")[1], NOBODY);
    let status = std::fs::read_to_string(format!("/proc/{}/status", bus.pid())).unwrap();
    let groups = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
    // Supplementary groups are nobody's own (initgroups), none of root's.
    assert!(!groups.split_whitespace().any(|g| g == "0"), "{groups}");
    run(async {
        // The socket was bound as root, before the drop, and still serves root's clients.
        let asker = bus.connect().await;
        let other = bus.connect().await;
        assert_eq!(unix_user(&asker, DRIVER_NAME).await.unwrap(), NOBODY);
        // A client learns another client's credentials through the driver only: its own socket
        // reports the bus's process, never the peer on the other side of a message.
        let name = other.unique_name().unwrap().to_string();
        assert_eq!(unix_user(&asker, &name).await.unwrap(), euid());
        assert_eq!(process_id(&asker, &name).await.unwrap(), std::process::id());
    });
    let raw = telbus_dbus_tests::RawClient::connect(&bus);
    let peer = rustix::net::sockopt::socket_peercred(&raw.stream).unwrap();
    assert_eq!(peer.pid.as_raw_nonzero().get() as u32, bus.pid());
    assert_eq!(
        peer.uid.as_raw(),
        0,
        "the socket's creds are those at bind time"
    );
    bus.assert_alive();
}
