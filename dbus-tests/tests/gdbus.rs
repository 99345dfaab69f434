//! GLib's gdbus (GDBus) against the bus: calls to the driver and to a service, introspection,
//! signal monitoring and unicast signals.

use std::time::Duration;

use telbus_dbus_tests::{
    DRIVER_INTERFACE, DRIVER_NAME, DRIVER_PATH, ServiceThread, TEST_INTERFACE, TEST_PATH, TestBus,
    next_signal, run,
};
use zbus_xml::Node;

const SERVICE: &str = "org.telbus.GdbusTest";

/// `gdbus call` of `method` (unqualified) on the driver; its stdout.
fn call_driver(bus: &TestBus, method: &str, args: &[&str]) -> String {
    let method = format!("{DRIVER_INTERFACE}.{method}");
    let mut argv = vec![
        "call",
        "--dest",
        DRIVER_NAME,
        "--object-path",
        DRIVER_PATH,
        "--method",
        &method,
    ];
    argv.extend_from_slice(args);
    bus.gdbus(argv).assert_success().stdout
}

fn call_service(bus: &TestBus, method: &str, args: &[&str]) -> telbus_dbus_tests::ClientOutput {
    let method = format!("{TEST_INTERFACE}.{method}");
    let mut argv = vec![
        "call",
        "--dest",
        SERVICE,
        "--object-path",
        TEST_PATH,
        "--method",
        &method,
    ];
    argv.extend_from_slice(args);
    bus.gdbus(argv)
}

#[test]
fn call_driver_methods() {
    let bus = TestBus::start();
    let service = ServiceThread::start(&bus, Some(SERVICE));
    let unique = service.unique_name();

    assert_eq!(
        call_driver(&bus, "GetNameOwner", &[SERVICE]),
        format!("('{unique}',)\n")
    );
    assert_eq!(call_driver(&bus, "NameHasOwner", &[SERVICE]), "(true,)\n");
    assert_eq!(
        call_driver(&bus, "NameHasOwner", &["org.telbus.Nobody"]),
        "(false,)\n"
    );
    let names = call_driver(&bus, "ListNames", &[]);
    for name in [DRIVER_NAME, SERVICE, unique] {
        assert!(names.contains(&format!("'{name}'")), "{name} in {names}");
    }
    // The bus ID: 32 hex digits, the same for every client.
    let id = call_driver(&bus, "GetId", &[]);
    let hex = id.trim().trim_start_matches("('").trim_end_matches("',)");
    assert!(
        hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(call_driver(&bus, "GetId", &[]), id);
    assert_eq!(
        call_driver(&bus, "GetConnectionUnixProcessID", &[SERVICE]),
        format!("(uint32 {},)\n", std::process::id())
    );
    bus.assert_alive();
}

#[test]
fn call_a_service_method_with_arguments() {
    let bus = TestBus::start();
    let _service = ServiceThread::start(&bus, Some(SERVICE));
    let out = call_service(&bus, "Add", &["2", "40"]).assert_success();
    assert_eq!(out.stdout, "(42,)\n");
    let out = call_service(&bus, "Describe", &["abc"]).assert_success();
    assert_eq!(out.stdout, "(uint32 3, 'ABC')\n");
    let out = call_service(&bus, "Echo", &["it's"]).assert_success();
    assert_eq!(out.stdout, "(\"it's\",)\n");
    bus.assert_alive();
}

#[test]
fn call_errors_carry_the_error_name_and_message() {
    let bus = TestBus::start();
    let _service = ServiceThread::start(&bus, Some(SERVICE));
    let out = call_service(&bus, "Fail", &["it broke"]).assert_failure();
    assert_eq!(
        out.stderr.trim(),
        "Error: GDBus.Error:org.freedesktop.DBus.Error.Failed: it broke",
        "{out}"
    );
    let out = bus
        .gdbus([
            "call",
            "--dest",
            "org.telbus.Nobody",
            "--object-path",
            "/",
            "--method",
            "org.telbus.X.Y",
        ])
        .assert_failure();
    assert_eq!(
        out.stderr.trim(),
        "Error: GDBus.Error:org.freedesktop.DBus.Error.ServiceUnknown: \
         The name org.telbus.Nobody was not provided by any .service files",
        "{out}"
    );
    bus.assert_alive();
}

#[test]
fn introspect_a_service_as_xml() {
    let bus = TestBus::start();
    let _service = ServiceThread::start(&bus, Some(SERVICE));
    let out = bus
        .gdbus([
            "introspect",
            "--xml",
            "--dest",
            SERVICE,
            "--object-path",
            TEST_PATH,
        ])
        .assert_success();
    let node = Node::from_reader(out.stdout.as_bytes()).expect("introspection XML");
    let interface = node
        .interfaces()
        .iter()
        .find(|i| i.name() == TEST_INTERFACE)
        .expect("the test interface");
    let methods: Vec<String> = interface.methods().map(|m| m.name().to_string()).collect();
    for method in [
        "Echo",
        "Add",
        "Describe",
        "Fail",
        "EmitPinged",
        "ReadFd",
        "OpenPipe",
    ] {
        assert!(
            methods.iter().any(|m| m == method),
            "{method} in {methods:?}"
        );
    }
    assert!(interface.signals().any(|s| s.name() == "Pinged"));
    assert!(interface.properties().any(|p| p.name() == "Label"));
    let children: Vec<_> = node.nodes().iter().filter_map(|n| n.name()).collect();
    assert_eq!(children, ["Child"]);
    bus.assert_alive();
}

#[test]
fn introspect_the_driver() {
    let bus = TestBus::start();
    let out = bus
        .gdbus([
            "introspect",
            "--xml",
            "--dest",
            DRIVER_NAME,
            "--object-path",
            DRIVER_PATH,
        ])
        .assert_success();
    let node = Node::from_reader(out.stdout.as_bytes()).expect("introspection XML");
    let interface = node
        .interfaces()
        .iter()
        .find(|i| i.name() == DRIVER_INTERFACE)
        .expect("the driver's interface");
    let methods: Vec<String> = interface.methods().map(|m| m.name().to_string()).collect();
    for method in [
        "Hello",
        "RequestName",
        "ReleaseName",
        "AddMatch",
        "GetNameOwner",
    ] {
        assert!(
            methods.iter().any(|m| m == method),
            "{method} in {methods:?}"
        );
    }
    // The human-readable form, too.
    let out = bus
        .gdbus([
            "introspect",
            "--dest",
            DRIVER_NAME,
            "--object-path",
            DRIVER_PATH,
        ])
        .assert_success();
    assert!(
        out.stdout.contains("interface org.freedesktop.DBus {"),
        "{out}"
    );
    assert!(
        out.stdout.contains("ListQueuedOwners(in  s arg_0,"),
        "{out}"
    );
    bus.assert_alive();
}

#[test]
fn monitor_shows_the_signals_of_a_name() {
    let bus = TestBus::start();
    let service = ServiceThread::start(&bus, Some(SERVICE));
    let monitor = bus.spawn_gdbus(["monitor", "--dest", SERVICE]);
    // Printed once gdbus knows the owner, after its signal subscription was sent.
    monitor.wait_for_text(
        &format!("The name {SERVICE} is owned by {}", service.unique_name()),
        Duration::from_secs(5),
    );
    let method = format!("{TEST_INTERFACE}.EmitPinged");
    bus.gdbus([
        "call",
        "--dest",
        SERVICE,
        "--object-path",
        TEST_PATH,
        "--method",
        &method,
        "7",
    ])
    .assert_success();
    monitor.wait_for_text(
        "/org/telbus/Test: org.telbus.Test1.Pinged (uint32 7,)",
        Duration::from_secs(5),
    );
    bus.assert_alive();
}

#[test]
fn emit_a_unicast_signal_to_one_connection() {
    let bus = TestBus::start();
    run(async {
        let addressee = bus.connect().await;
        let bystander = bus.connect().await;
        let mut addressee_inbox = zbus::MessageStream::from(&addressee);
        let mut bystander_inbox = zbus::MessageStream::from(&bystander);
        // The bystander listens to every signal: a unicast signal still is not for it.
        telbus_dbus_tests::add_match(&bystander, "type='signal'")
            .await
            .unwrap();

        let to = addressee.unique_name().unwrap().to_string();
        bus.gdbus([
            "emit",
            "--dest",
            &to,
            "--object-path",
            "/org/telbus/Unicast",
            "--signal",
            "org.telbus.Unicast.Note",
            "'for you'",
        ])
        .assert_success();
        // Then a broadcast, which the bystander gets. (Not with gdbus emit: without --dest it
        // skips Hello, and the bus drops what an unregistered connection sends.)
        bus.dbus_send([
            "--type=signal",
            "/org/telbus/Unicast",
            "org.telbus.Unicast.All",
            "int32:1",
        ])
        .assert_success();

        let is_test_signal = |m: &zbus::Message| {
            m.header()
                .interface()
                .is_some_and(|i| i == "org.telbus.Unicast")
        };
        let note = next_signal(&mut addressee_inbox, is_test_signal).await;
        assert_eq!(note.header().member().unwrap().as_str(), "Note");
        assert_eq!(note.header().destination().unwrap().as_str(), to);
        assert_eq!(note.body().deserialize::<String>().unwrap(), "for you");
        // The bystander's first test signal is the broadcast, not the unicast one.
        let first = next_signal(&mut bystander_inbox, is_test_signal).await;
        assert_eq!(first.header().member().unwrap().as_str(), "All");
    });
    bus.assert_alive();
}
