//! libdbus's dbus-send and dbus-monitor against the bus: calls with printed replies, signals,
//! error replies, and a monitor that sees them.

use std::time::Duration;

use telbus_dbus_tests::{ServiceThread, TestBus, add_match, next_signal, run};

const SERVICE: &str = "org.telbus.DbusSendTest";

/// `dbus-send --print-reply` of `method` (qualified) at `path` on `dest`.
fn send(
    bus: &TestBus,
    dest: &str,
    path: &str,
    method: &str,
    args: &[&str],
) -> telbus_dbus_tests::ClientOutput {
    let dest = format!("--dest={dest}");
    let mut argv = vec!["--print-reply", "--type=method_call", &dest, path, method];
    argv.extend_from_slice(args);
    bus.dbus_send(argv)
}

/// The lines after the "method return ..." header of a printed reply, trimmed.
fn reply_lines(stdout: &str) -> Vec<String> {
    let mut lines = stdout.lines();
    let header = lines.next().unwrap_or_default();
    assert!(
        header.starts_with("method return "),
        "not a reply: {stdout}"
    );
    lines.map(|line| line.trim().to_string()).collect()
}

#[test]
fn method_calls_print_their_replies() {
    let bus = TestBus::start();
    let service = ServiceThread::start(&bus, Some(SERVICE));
    let driver = |method: &str, args: &[&str]| {
        let method = format!("org.freedesktop.DBus.{method}");
        let out = send(
            &bus,
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            &method,
            args,
        );
        reply_lines(&out.assert_success().stdout)
    };
    assert_eq!(
        driver("GetNameOwner", &[&format!("string:{SERVICE}")]),
        [format!("string \"{}\"", service.unique_name())]
    );
    assert_eq!(
        driver("NameHasOwner", &["string:org.telbus.Nobody"]),
        ["boolean false"]
    );
    let names = driver("ListNames", &[]);
    assert_eq!(names.first().map(String::as_str), Some("array ["));
    assert!(
        names.contains(&format!("string \"{SERVICE}\"")),
        "{names:?}"
    );
    assert!(
        names.contains(&"string \"org.freedesktop.DBus\"".to_string()),
        "{names:?}"
    );

    let out = send(
        &bus,
        SERVICE,
        "/org/telbus/Test",
        "org.telbus.Test1.Add",
        &["int32:2", "int32:40"],
    );
    assert_eq!(reply_lines(&out.assert_success().stdout), ["int32 42"]);
    let out = send(
        &bus,
        SERVICE,
        "/org/telbus/Test",
        "org.telbus.Test1.Describe",
        &["string:hello"],
    );
    assert_eq!(
        reply_lines(&out.assert_success().stdout),
        ["uint32 5", "string \"HELLO\""]
    );
    // The reply comes from the service, addressed to the caller.
    let out = send(
        &bus,
        SERVICE,
        "/org/telbus/Test",
        "org.telbus.Test1.Echo",
        &["string:x"],
    );
    let header = out.stdout.lines().next().unwrap().to_string();
    assert!(
        header.contains(&format!(
            "sender={} -> destination=:",
            service.unique_name()
        )),
        "{out}"
    );
    bus.assert_alive();
}

#[test]
fn errors_are_printed_with_name_and_message() {
    let bus = TestBus::start();
    let _service = ServiceThread::start(&bus, Some(SERVICE));
    let error = |dest: &str, path: &str, method: &str, args: &[&str]| {
        send(&bus, dest, path, method, args)
            .assert_failure()
            .stderr
            .trim()
            .to_string()
    };
    assert_eq!(
        error("org.telbus.Nobody", "/", "org.telbus.X.Y", &[]),
        "Error org.freedesktop.DBus.Error.ServiceUnknown: \
         The name org.telbus.Nobody was not provided by any .service files"
    );
    assert_eq!(
        error(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.NoSuchMethod",
            &[]
        ),
        "Error org.freedesktop.DBus.Error.UnknownMethod: \
         org.freedesktop.DBus does not understand message NoSuchMethod"
    );
    assert_eq!(
        error(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.GetNameOwner",
            &["string:org.telbus.Nobody"]
        ),
        "Error org.freedesktop.DBus.Error.NameHasNoOwner: \
         Could not get owner of name 'org.telbus.Nobody': no such name"
    );
    assert_eq!(
        error(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.GetNameOwner",
            &["int32:4"]
        ),
        "Error org.freedesktop.DBus.Error.InvalidArgs: \
         Call to GetNameOwner has wrong args (i, expected s)"
    );
    // A service's own error, relayed as it sent it.
    assert_eq!(
        error(
            SERVICE,
            "/org/telbus/Test",
            "org.telbus.Test1.Fail",
            &["string:bad things"]
        ),
        "Error org.freedesktop.DBus.Error.Failed: bad things"
    );
    bus.assert_alive();
}

#[test]
fn a_signal_reaches_subscribers_and_only_them() {
    let bus = TestBus::start();
    run(async {
        let subscriber = bus.connect().await;
        let other = bus.connect().await;
        let mut inbox = zbus::MessageStream::from(&subscriber);
        let mut other_inbox = zbus::MessageStream::from(&other);
        add_match(
            &subscriber,
            "type='signal',path='/org/telbus/Sender',interface='org.telbus.Sent'",
        )
        .await
        .unwrap();
        add_match(&other, "type='signal',interface='org.telbus.Other'")
            .await
            .unwrap();

        bus.dbus_send([
            "--type=signal",
            "/org/telbus/Sender",
            "org.telbus.Sent.Changed",
            "string:x",
            "uint32:3",
        ])
        .assert_success();
        // The other subscriber's rule is for this one only.
        bus.dbus_send([
            "--type=signal",
            "/org/telbus/Sender",
            "org.telbus.Other.Done",
        ])
        .assert_success();

        let signal = next_signal(&mut inbox, |m| {
            m.header()
                .sender()
                .is_some_and(|s| s != "org.freedesktop.DBus")
        })
        .await;
        assert_eq!(signal.header().member().unwrap().as_str(), "Changed");
        let body: (String, u32) = signal.body().deserialize().unwrap();
        assert_eq!(body, ("x".to_string(), 3));
        let signal = next_signal(&mut other_inbox, |m| {
            m.header()
                .sender()
                .is_some_and(|s| s != "org.freedesktop.DBus")
        })
        .await;
        assert_eq!(
            signal.header().member().unwrap().as_str(),
            "Done",
            "not Changed first"
        );
    });
    bus.assert_alive();
}

#[test]
fn a_unicast_signal_reaches_its_destination() {
    let bus = TestBus::start();
    run(async {
        let addressee = bus.connect().await;
        let mut inbox = zbus::MessageStream::from(&addressee);
        let to = addressee.unique_name().unwrap().to_string();
        // No match rule needed: a signal with a destination is delivered like a call.
        bus.dbus_send([
            &format!("--dest={to}"),
            "--type=signal",
            "/org/telbus/Sender",
            "org.telbus.Sent.Direct",
            "int32:-5",
        ])
        .assert_success();
        let signal = next_signal(&mut inbox, |m| {
            m.header()
                .interface()
                .is_some_and(|i| i == "org.telbus.Sent")
        })
        .await;
        assert_eq!(signal.header().destination().unwrap().as_str(), to);
        assert_eq!(signal.body().deserialize::<i32>().unwrap(), -5);
    });
    bus.assert_alive();
}

#[test]
fn dbus_monitor_sees_calls_replies_errors_and_signals() {
    let bus = TestBus::start();
    let service = ServiceThread::start(&bus, Some(SERVICE));
    let monitor = bus.spawn_dbus_monitor([
        "interface='org.telbus.Test1'",
        "type='method_return'",
        "type='error'",
    ]);
    // dbus-monitor prints its own NameLost once the bus made it a monitor.
    monitor.wait_for_text("member=NameLost", Duration::from_secs(5));

    send(
        &bus,
        SERVICE,
        "/org/telbus/Test",
        "org.telbus.Test1.Echo",
        &["string:seen-by-monitor"],
    )
    .assert_success();
    send(
        &bus,
        SERVICE,
        "/org/telbus/Test",
        "org.telbus.Test1.Fail",
        &["string:failure-seen"],
    )
    .assert_failure();
    bus.dbus_send([
        "--type=signal",
        "/org/telbus/Test",
        "org.telbus.Test1.Tick",
        "uint32:9",
    ])
    .assert_success();

    // dbus-monitor writes a message's header line before its body: wait for the last body.
    let out = monitor.wait_for_text("uint32 9", Duration::from_secs(5));
    let unique = service.unique_name();
    let expected_in_order = [
        format!("-> destination={SERVICE} serial=2 path=/org/telbus/Test; interface=org.telbus.Test1; member=Echo"),
        "string \"seen-by-monitor\"".to_string(),
        "method return time=".to_string(),
        format!("sender={unique} -> destination=:"),
        "string \"seen-by-monitor\"".to_string(),
        "member=Fail".to_string(),
        "error_name=org.freedesktop.DBus.Error.Failed".to_string(),
        "string \"failure-seen\"".to_string(),
        "-> destination=(null destination) serial=2 path=/org/telbus/Test; interface=org.telbus.Test1; member=Tick".to_string(),
        "uint32 9".to_string(),
    ];
    let mut rest = out.as_str();
    for piece in &expected_in_order {
        let at = rest
            .find(piece.as_str())
            .unwrap_or_else(|| panic!("{piece:?} missing (in order) from:\n{out}"));
        rest = &rest[at + piece.len()..];
    }
    bus.assert_alive();
}
