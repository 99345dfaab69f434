//! The harness itself: a bus is private, reported dead when it dies, and gone once dropped;
//! clients cannot reach the machine's buses; hung clients fail instead of blocking.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use telbus_dbus_tests::{TestBus, run_command};

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn the_bus_listens_in_its_own_temp_dir_and_goes_away_when_dropped() {
    let bus = TestBus::start();
    let dir = bus.dir().to_path_buf();
    let pid = bus.pid();
    let socket = bus
        .address()
        .strip_prefix("unix:path=")
        .and_then(|rest| rest.split(',').next())
        .expect("a unix:path= address");
    assert!(
        Path::new(socket).starts_with(&dir),
        "{socket} in {}",
        dir.display()
    );
    assert!(bus.config_path().starts_with(&dir));
    assert!(bus.is_alive());
    drop(bus);
    // Reaped, not a zombie: its /proc entry is gone.
    assert!(!process_exists(pid), "daemon {pid} still there");
    assert!(!dir.exists(), "{} still there", dir.display());
}

#[test]
fn a_daemon_that_died_is_noticed() {
    let bus = TestBus::start();
    // SAFETY: kill(2) on the daemon this test started; no memory involved.
    unsafe {
        libc::kill(bus.pid() as libc::pid_t, libc::SIGKILL);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while bus.is_alive() {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGKILL did not end the daemon"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let panic = catch_unwind(AssertUnwindSafe(|| bus.assert_alive())).expect_err("must panic");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("the bus daemon exited"), "{message}");
}

#[test]
fn clients_only_know_the_test_bus() {
    let bus = TestBus::start();
    let mut command = bus.command("sh");
    command.args([
        "-c",
        "echo \"session=$DBUS_SESSION_BUS_ADDRESS system=$DBUS_SYSTEM_BUS_ADDRESS runtime=$XDG_RUNTIME_DIR\"",
    ]);
    let out = run_command(command, Duration::from_secs(5)).assert_success();
    let runtime = out
        .stdout
        .trim()
        .rsplit("runtime=")
        .next()
        .unwrap()
        .to_string();
    assert!(out.stdout.starts_with("session= system= runtime="), "{out}");
    assert!(Path::new(&runtime).starts_with(bus.dir()), "{out}");
}

#[test]
fn a_hung_client_fails_instead_of_blocking() {
    let mut command = Command::new("sleep");
    command.arg("30");
    let started = std::time::Instant::now();
    let panic = catch_unwind(AssertUnwindSafe(|| {
        run_command(command, Duration::from_millis(200))
    }))
    .expect_err("must time out");
    assert!(started.elapsed() < Duration::from_secs(5));
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("still running after"), "{message}");
}

#[test]
fn extra_configuration_is_applied() {
    // A limit of one connection per user: the second client is refused.
    let bus = TestBus::with_config(r#"<limit name="max_connections_per_user">1</limit>"#);
    telbus_dbus_tests::run(async {
        let _first = bus.connect().await;
        let second = zbus::connection::Builder::address(bus.address())
            .build()
            .await;
        assert!(second.is_err(), "a second connection was accepted");
    });
    bus.assert_alive();
}
