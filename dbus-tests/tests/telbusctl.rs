//! `telbusctl` against a running bus: status, peers, stats and monitor, as tables and as
//! JSON, and the completions and man pages generated from its command line.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use telbus_dbus_tests::{Background, CLIENT_TIMEOUT, ClientOutput, TestBus, run_command};

const SERVICE: &str = "org.telbus.test.CtlEcho";

fn telbusctl_path() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/telbusctl");
    assert!(
        path.exists(),
        "{} does not exist: build it first: cargo build --release -p telbus-tools",
        path.display()
    );
    path
}

fn telbusctl_command(bus: &TestBus, args: &[&str]) -> Command {
    let mut command = bus.command(telbusctl_path());
    command
        .arg(format!("--address={}", bus.address()))
        .args(args);
    command
}

fn telbusctl(bus: &TestBus, args: &[&str]) -> ClientOutput {
    run_command(telbusctl_command(bus, args), CLIENT_TIMEOUT)
}

fn json(bus: &TestBus, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = telbusctl(bus, &all).assert_success();
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("telbusctl {args:?} printed no JSON ({e}):\n{out}"))
}

/// A bus with dbus-test-tool owning [`SERVICE`]; None without dbus-test-tool.
fn bus_with_service() -> Option<(TestBus, Background, String)> {
    let bus = TestBus::start();
    let (service, _) = bus.spawn_echo_service(Some(SERVICE))?;
    let unique = bus.wait_for_owner(SERVICE, Duration::from_secs(10));
    Some((bus, service, unique))
}

fn our_uid() -> u64 {
    // SAFETY: getuid cannot fail.
    u64::from(unsafe { libc::getuid() })
}

#[test]
fn status_counts_connections_names_and_queued_bytes_per_user() {
    let Some((bus, service, _)) = bus_with_service() else {
        return;
    };
    let status = json(&bus, &["status"]);
    assert!(status["stats"]["ActiveConnections"].as_u64().unwrap() >= 2);
    assert!(status["stats"]["BusNames"].as_u64().is_some());
    assert!(status["stats"]["MatchRules"].as_u64().is_some());
    let users = status["users"].as_array().unwrap();
    let mine = users
        .iter()
        .find(|u| u["uid"].as_u64() == Some(our_uid()))
        .unwrap_or_else(|| panic!("no entry for our uid: {status}"));
    assert!(mine["connections"].as_u64().unwrap() >= 1);
    assert!(mine["queued_bytes"].as_u64().is_some());
    if bus.daemon().ends_with("telbusd") {
        assert!(status["uptime_seconds"].as_u64().is_some(), "{status}");
    }

    let table = telbusctl(&bus, &["status"]).assert_success().stdout;
    for label in [
        "uptime",
        "connections",
        "names",
        "match rules",
        "QUEUED BYTES",
    ] {
        assert!(table.contains(label), "no {label} in:\n{table}");
    }
    drop(service);
}

#[test]
fn peers_show_names_credentials_and_command_lines() {
    let Some((bus, service, unique)) = bus_with_service() else {
        return;
    };
    let peers = json(&bus, &["peers"]);
    let echo = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["unique_name"] == unique.as_str())
        .unwrap_or_else(|| panic!("{unique} not among the peers: {peers}"));
    assert_eq!(echo["names"], serde_json::json!([SERVICE]));
    assert_eq!(echo["pid"].as_u64(), Some(u64::from(service.pid())));
    assert_eq!(echo["uid"].as_u64(), Some(our_uid()));
    let command = echo["command"].as_str().unwrap();
    assert!(
        command.contains("dbus-test-tool") && command.contains(SERVICE),
        "{command}"
    );

    let table = telbusctl(&bus, &["peers"]).assert_success().stdout;
    let line = table
        .lines()
        .find(|l| l.starts_with(&unique))
        .unwrap_or_else(|| panic!("no line for {unique}:\n{table}"));
    assert!(line.contains(SERVICE) && line.contains(&service.pid().to_string()));
}

#[test]
fn stats_of_one_connection_by_either_name() {
    let Some((bus, _service, unique)) = bus_with_service() else {
        return;
    };
    let by_name = json(&bus, &["stats", SERVICE]);
    assert_eq!(by_name["UniqueName"], unique.as_str());
    assert!(by_name["BusNames"].as_u64().unwrap() >= 1);
    let by_unique = json(&bus, &["stats", &unique]);
    assert_eq!(by_unique["UniqueName"], unique.as_str());
    assert!(
        telbusctl(&bus, &["stats", &unique])
            .assert_success()
            .stdout
            .contains("OutgoingBytes")
    );

    let missing = telbusctl(&bus, &["stats", "org.telbus.test.Nobody"]).assert_failure();
    assert!(
        missing.stderr.contains("NameHasNoOwner"),
        "the driver's error is shown: {missing}"
    );
}

#[test]
fn monitor_prints_one_line_per_matching_message() {
    let bus = TestBus::start();
    let monitor = Background::spawn(telbusctl_command(
        &bus,
        &["monitor", "type='method_call',member='GetId'"],
    ));
    // The monitor prints nothing before its first message: call until it shows one.
    let get_id = [
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "GetId",
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !monitor.stdout().contains("GetId") {
        assert!(Instant::now() < deadline, "monitor printed nothing");
        bus.busctl(get_id).assert_success();
        std::thread::sleep(Duration::from_millis(20));
    }
    // A message the filter leaves out, then one it shows: only the second is printed.
    bus.busctl([
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "ListNames",
    ])
    .assert_success();
    let before = monitor.stdout().matches("GetId").count();
    bus.busctl(get_id).assert_success();
    let out = monitor.wait_for_stdout(Duration::from_secs(20), |o| {
        o.matches("GetId").count() > before
    });
    assert!(
        !out.contains("ListNames"),
        "the filter let ListNames through:\n{out}"
    );
    for line in out.lines() {
        assert!(
            line.starts_with("call ") && line.contains("org.freedesktop.DBus.GetId"),
            "one line per message: {line}"
        );
    }
}

#[test]
fn monitor_json_is_one_object_per_line() {
    let bus = TestBus::start();
    let monitor = Background::spawn(telbusctl_command(
        &bus,
        &["--json", "monitor", "type='method_call',member='GetId'"],
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !monitor.stdout().contains("GetId") {
        assert!(Instant::now() < deadline, "monitor printed nothing");
        bus.busctl([
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "GetId",
        ])
        .assert_success();
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = monitor.wait_for_stdout(Duration::from_secs(20), |o| o.ends_with('\n'));
    let first: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "call");
    assert_eq!(first["member"], "GetId");
    assert_eq!(first["destination"], "org.freedesktop.DBus");
    assert!(first["sender"].as_str().unwrap().starts_with(':'));
}

#[test]
fn completions_and_man_pages_come_from_the_command_line() {
    let bash = run_command(
        {
            let mut c = Command::new(telbusctl_path());
            c.args(["completions", "bash"]);
            c
        },
        CLIENT_TIMEOUT,
    )
    .assert_success();
    assert!(bash.stdout.contains("_telbusctl") && bash.stdout.contains("monitor"));
    let dir = tempfile::tempdir().unwrap();
    let mut man = Command::new(telbusctl_path());
    man.arg("manpage").arg("--dir").arg(dir.path());
    run_command(man, CLIENT_TIMEOUT).assert_success();
    for page in ["telbusctl.1", "telbusctl-status.1", "telbusctl-monitor.1"] {
        let text = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page} is a man page");
    }
}
