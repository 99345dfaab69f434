//! systemd's busctl (sd-bus) against the bus: listings, credentials, introspection, calls,
//! properties, signals and monitoring.

use std::time::Duration;

use telbus_dbus_tests::{
    ServiceThread, TEST_INTERFACE, TEST_PATH, TestBus, add_match, next_signal, run,
};

const SERVICE: &str = "org.telbus.BusctlTest";

/// The rows of `busctl list --no-legend`, split into columns (NAME PID PROCESS USER CONNECTION
/// UNIT SESSION DESCRIPTION).
fn list_rows(bus: &TestBus, extra: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec!["list", "--no-legend"];
    args.extend_from_slice(extra);
    let out = bus.busctl(args).assert_success();
    out.stdout
        .lines()
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn row<'a>(rows: &'a [Vec<String>], name: &str) -> Option<&'a Vec<String>> {
    rows.iter().find(|row| row[0] == name)
}

/// `KEY=value` lines of `busctl status`.
fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[test]
fn list_shows_the_driver_and_every_name_with_its_owner() {
    let bus = TestBus::start();
    let service = ServiceThread::start(&bus, Some(SERVICE));
    let rows = list_rows(&bus, &[]);

    let driver = row(&rows, "org.freedesktop.DBus").expect("the driver is listed");
    assert_eq!(
        driver[1],
        bus.pid().to_string(),
        "the driver's PID is the daemon's"
    );

    let named = row(&rows, SERVICE).expect("the service's name is listed");
    assert_eq!(
        named[1],
        std::process::id().to_string(),
        "PID of the name's owner"
    );
    assert_eq!(named[3], user_name(), "USER of the owner");
    assert_eq!(
        named[4],
        service.unique_name(),
        "CONNECTION is the owner's unique name"
    );

    let unique = row(&rows, service.unique_name()).expect("unique names are listed");
    assert_eq!(unique[1], std::process::id().to_string());
    assert!(
        row(&rows, "org.telbus.Nobody").is_none(),
        "no row for an unowned name"
    );
    bus.assert_alive();
}

/// The user name busctl shows for our uid.
fn user_name() -> String {
    let uid = euid();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.get(2) == Some(&uid.to_string().as_str())).then(|| fields[0].to_string())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

#[test]
fn list_acquired_and_activatable_names_separately() {
    const ACTIVATABLE: &str = "org.telbus.BusctlTest.Activatable";
    let bus = TestBus::builder()
        .activatable(ACTIVATABLE, "/bin/false")
        .start();
    let _service = ServiceThread::start(&bus, Some(SERVICE));

    let acquired = list_rows(&bus, &["--acquired"]);
    assert!(row(&acquired, SERVICE).is_some(), "{acquired:?}");
    assert!(
        row(&acquired, "org.freedesktop.DBus").is_some(),
        "{acquired:?}"
    );
    assert!(row(&acquired, ACTIVATABLE).is_none(), "{acquired:?}");
    assert!(
        acquired.iter().all(|row| !row[0].starts_with(':')),
        "--acquired lists no unique names: {acquired:?}"
    );

    let activatable = list_rows(&bus, &["--activatable"]);
    let row_activatable = row(&activatable, ACTIVATABLE).expect("the .service file's name");
    assert_eq!(row_activatable[1], "-", "not running, so no PID");
    assert!(
        row(&activatable, SERVICE).is_none(),
        "a name without a .service file is not activatable: {activatable:?}"
    );

    // Without a filter: both, and the activatable one stays unstarted.
    let all = list_rows(&bus, &[]);
    assert!(row(&all, SERVICE).is_some() && row(&all, ACTIVATABLE).is_some());
    assert!(
        all.iter()
            .any(|row| row[0] == ACTIVATABLE && row.contains(&"(activatable)".into()))
    );
    bus.assert_alive();
}

#[test]
fn status_of_a_name_shows_its_owners_pid_and_uid() {
    let bus = TestBus::start();
    let Some((echo, unique)) = bus.spawn_echo_service(Some(SERVICE)) else {
        panic!(
            "dbus-test-tool is missing: install the dbus-tests package (scripts/test-all.sh does)"
        );
    };
    let out = bus.busctl(["status", SERVICE]).assert_success();
    assert_eq!(
        status_field(&out.stdout, "PID"),
        Some(echo.pid().to_string().as_str()),
        "{out}"
    );
    assert_eq!(
        status_field(&out.stdout, "UID"),
        Some(euid().to_string().as_str()),
        "{out}"
    );
    assert_eq!(
        status_field(&out.stdout, "UniqueName"),
        Some(unique.as_str()),
        "{out}"
    );
    assert_eq!(
        status_field(&out.stdout, "Comm"),
        Some("dbus-test-tool"),
        "{out}"
    );
    bus.assert_alive();
}

#[test]
fn status_of_the_bus_shows_the_daemon_and_bus_id() {
    let bus = TestBus::start();
    let out = bus.busctl(["status"]).assert_success();
    assert_eq!(
        status_field(&out.stdout, "PID"),
        Some(bus.pid().to_string().as_str()),
        "{out}"
    );
    let guid = bus.address().rsplit("guid=").next().unwrap();
    assert_eq!(status_field(&out.stdout, "BusID"), Some(guid), "{out}");
    assert_eq!(
        status_field(&out.stdout, "UID"),
        Some(euid().to_string().as_str()),
        "{out}"
    );
    bus.assert_alive();
}

#[test]
fn tree_shows_the_services_objects() {
    let bus = TestBus::start();
    let _service = ServiceThread::start(&bus, Some(SERVICE));
    let out = bus.busctl(["tree", "--list", SERVICE]).assert_success();
    let paths: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        paths,
        [
            "/",
            "/org",
            "/org/telbus",
            "/org/telbus/Test",
            "/org/telbus/Test/Child"
        ],
        "{out}"
    );
    // The drawn tree, too.
    let out = bus.busctl(["tree", SERVICE]).assert_success();
    assert!(out.stdout.contains("└─/org/telbus/Test/Child"), "{out}");
    bus.assert_alive();
}

#[test]
fn introspect_lists_methods_properties_and_signals() {
    let bus = TestBus::start();
    let _service = ServiceThread::start(&bus, Some(SERVICE));
    let out = bus
        .busctl([
            "introspect",
            "--no-legend",
            SERVICE,
            TEST_PATH,
            TEST_INTERFACE,
        ])
        .assert_success();
    let rows: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    let expected: [&[&str]; 5] = [
        &[".Add", "method", "ii", "i", "-"],
        &[".Describe", "method", "s", "us", "-"],
        &[".OpenPipe", "method", "s", "h", "-"],
        &[
            ".Label",
            "property",
            "s",
            "\"\"",
            "emits-change",
            "writable",
        ],
        &[".Pinged", "signal", "u", "-", "-"],
    ];
    for member in expected {
        assert!(
            rows.iter().any(|row| row == member),
            "{member:?} missing:\n{out}"
        );
    }
    bus.assert_alive();
}

#[test]
fn call_passes_arguments_and_prints_the_reply() {
    let bus = TestBus::start();
    let _service = ServiceThread::start(&bus, Some(SERVICE));
    let call = |method: &str, args: &[&str]| {
        let mut argv = vec!["call", SERVICE, TEST_PATH, TEST_INTERFACE, method];
        argv.extend_from_slice(args);
        bus.busctl(argv).assert_success().stdout
    };
    assert_eq!(call("Add", &["ii", "2", "40"]), "i 42\n");
    assert_eq!(call("Echo", &["s", "hello world"]), "s \"hello world\"\n");
    assert_eq!(call("Describe", &["s", "abc"]), "us 3 \"ABC\"\n");

    // The JSON form, parsed.
    let out = bus
        .busctl([
            "--json=short",
            "call",
            SERVICE,
            TEST_PATH,
            TEST_INTERFACE,
            "Describe",
            "s",
            "hello",
        ])
        .assert_success();
    let reply: serde_json::Value = serde_json::from_str(&out.stdout).expect("busctl JSON");
    assert_eq!(
        reply,
        serde_json::json!({"type": "us", "data": [5, "HELLO"]})
    );
    bus.assert_alive();
}

#[test]
fn call_reports_error_replies() {
    let bus = TestBus::start();
    let _service = ServiceThread::start(&bus, Some(SERVICE));
    let out = bus
        .busctl([
            "call",
            SERVICE,
            TEST_PATH,
            TEST_INTERFACE,
            "Fail",
            "s",
            "it broke",
        ])
        .assert_failure();
    assert_eq!(out.stderr.trim(), "Call failed: it broke", "{out}");

    let out = bus
        .busctl(["call", "org.telbus.Nobody", "/", "org.telbus.X", "Y"])
        .assert_failure();
    assert_eq!(
        out.stderr.trim(),
        "Call failed: The name org.telbus.Nobody was not provided by any .service files",
        "{out}"
    );
    bus.assert_alive();
}

#[test]
fn get_and_set_a_property() {
    let bus = TestBus::start();
    let _service = ServiceThread::start(&bus, Some(SERVICE));
    bus.busctl([
        "set-property",
        SERVICE,
        TEST_PATH,
        TEST_INTERFACE,
        "Label",
        "s",
        "blue",
    ])
    .assert_success();
    let out = bus
        .busctl(["get-property", SERVICE, TEST_PATH, TEST_INTERFACE, "Label"])
        .assert_success();
    assert_eq!(out.stdout, "s \"blue\"\n");

    // A property without a setter cannot be set (the service's error, relayed).
    let out = bus
        .busctl([
            "set-property",
            SERVICE,
            TEST_PATH,
            TEST_INTERFACE,
            "EchoCount",
            "u",
            "5",
        ])
        .assert_failure();
    assert!(out.stderr.contains("EchoCount"), "{out}");
    bus.assert_alive();
}

#[test]
fn emit_reaches_a_subscriber_whose_rule_matches() {
    let bus = TestBus::start();
    run(async {
        let subscriber = bus.connect().await;
        let mut inbox = zbus::MessageStream::from(&subscriber);
        add_match(
            &subscriber,
            "type='signal',interface='org.telbus.Emitted',member='Wanted'",
        )
        .await
        .unwrap();

        // Not matching (another member), then matching: the first signal to arrive must be the
        // second one, as one sender's messages keep their order.
        bus.busctl([
            "emit",
            "/org/telbus/Emitter",
            "org.telbus.Emitted",
            "Unwanted",
            "s",
            "no",
        ])
        .assert_success();
        bus.busctl([
            "emit",
            "/org/telbus/Emitter",
            "org.telbus.Emitted",
            "Wanted",
            "su",
            "yes",
            "7",
        ])
        .assert_success();

        let signal = next_signal(&mut inbox, |m| {
            m.header()
                .interface()
                .is_some_and(|i| i == "org.telbus.Emitted")
        })
        .await;
        let header = signal.header();
        assert_eq!(header.member().unwrap().as_str(), "Wanted");
        assert_eq!(header.path().unwrap().as_str(), "/org/telbus/Emitter");
        assert!(
            header.sender().unwrap().starts_with(':'),
            "the bus stamps the sender"
        );
        assert!(header.destination().is_none(), "a broadcast signal");
        let body: (String, u32) = signal.body().deserialize().unwrap();
        assert_eq!(body, ("yes".to_string(), 7));
    });
    bus.assert_alive();
}

#[test]
fn monitor_sees_a_call_and_its_reply() {
    let bus = TestBus::start();
    let service = ServiceThread::start(&bus, Some(SERVICE));
    let monitor = bus.spawn_busctl(["monitor"]);
    // busctl says so once BecomeMonitor has been answered.
    monitor.wait_for_stderr(Duration::from_secs(5), |err| {
        err.contains("Monitoring bus message stream.")
    });

    bus.busctl([
        "call",
        SERVICE,
        TEST_PATH,
        TEST_INTERFACE,
        "Echo",
        "s",
        "monitored-marker",
    ])
    .assert_success();

    let out = monitor.wait_for_stdout(Duration::from_secs(5), |out| {
        out.contains("Type=method_return") && out.matches("monitored-marker").count() >= 2
    });
    // One block per message, each starting with "‣ ".
    let blocks: Vec<&str> = out.split("‣ ").collect();
    let call = blocks
        .iter()
        .find(|b| b.starts_with("Type=method_call") && b.contains("Member=Echo"))
        .expect("the call is shown");
    assert!(call.contains(&format!("Destination={SERVICE}")), "{out}");
    assert!(call.contains("STRING \"monitored-marker\";"), "{out}");
    let cookie = field(call, "Cookie").expect("the call's cookie");
    let reply = blocks
        .iter()
        .find(|b| b.starts_with("Type=method_return") && field(b, "ReplyCookie") == Some(cookie))
        .expect("its reply is shown");
    assert_eq!(field(reply, "Sender"), Some(service.unique_name()), "{out}");
    assert!(reply.contains("STRING \"monitored-marker\";"), "{out}");
    bus.assert_alive();
}

/// The value of `key=` in a busctl monitor block (fields are separated by spaces).
fn field<'a>(block: &'a str, key: &str) -> Option<&'a str> {
    block
        .split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}
