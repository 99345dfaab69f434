//! dbus-daemon's `<limit>`s, each set low on a test bus: the client that goes over one gets
//! dbus-daemon's error (or is disconnected, where dbus-daemon disconnects), and the bus keeps
//! serving everyone else. Also a slow reader: a client that stops reading while another floods
//! it must neither stop a third client nor grow the broker's memory without bound.
//!
//! Every test passes against dbus-daemon too (`TELBUS_TEST_DAEMON=/usr/bin/dbus-daemon`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use telbus_dbus_tests::{
    RawClient, ServiceThread, TEST_INTERFACE, TEST_PATH, TestBus, add_match, call_driver,
    expect_error_name, run, socket_path,
};
use zbus::Message;

const LIMITS_EXCEEDED: &str = "org.freedesktop.DBus.Error.LimitsExceeded";

fn bus_with_limit(name: &str, value: u64) -> TestBus {
    TestBus::with_config(&format!(r#"<limit name="{name}">{value}</limit>"#))
}

/// A connection that says Hello once a place is free: the bus hears of a client that left
/// a little after the client closed, so a refusal is tried again for up to 10 s.
async fn connect_when_a_place_frees(bus: &TestBus) -> zbus::Connection {
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match zbus::connection::Builder::address(bus.address())
            .build()
            .await
        {
            Ok(connection) => return connection,
            Err(e) if std::time::Instant::now() < give_up => {
                assert!(
                    e.to_string().contains("LimitsExceeded"),
                    "unexpected error: {e}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("no place freed in 10 s: {e}"),
        }
    }
}

#[test]
fn max_names_per_connection() {
    // As in dbus-daemon, the unique name counts: 3 leaves room for two well-known names.
    let bus = bus_with_limit("max_names_per_connection", 3);
    run(async {
        let client = bus.connect().await;
        for name in ["org.telbus.Limits.A", "org.telbus.Limits.B"] {
            client.request_name(name).await.expect("under the limit");
        }
        let over = client.request_name("org.telbus.Limits.C").await;
        assert_eq!(expect_error_name(over), LIMITS_EXCEEDED);
        // The names it has are still its own.
        let owner = call_driver(&client, "GetNameOwner", &("org.telbus.Limits.A",))
            .await
            .unwrap();
        assert_eq!(
            owner.body().deserialize::<String>().unwrap(),
            client.unique_name().unwrap().as_str()
        );
    });
    bus.assert_alive();
}

#[test]
fn max_match_rules_per_connection() {
    let bus = bus_with_limit("max_match_rules_per_connection", 2);
    run(async {
        let client = bus.connect().await;
        // zbus adds a rule of its own for NameAcquired/NameLost on some versions: count what
        // is left by adding rules until one is refused.
        let mut added = 0;
        let refused = loop {
            match add_match(&client, &format!("type='signal',member='M{added}'")).await {
                Ok(()) => added += 1,
                Err(e) => break e,
            }
            assert!(added <= 2, "more rules than the limit were accepted");
        };
        assert_eq!(expect_error_name::<(), _>(Err(refused)), LIMITS_EXCEEDED);
        // Another connection has its own allowance.
        let other = bus.connect().await;
        add_match(&other, "type='signal',member='Other'")
            .await
            .expect("another connection is not limited by the first");
    });
    bus.assert_alive();
}

#[test]
fn max_replies_per_connection_and_reply_timeout() {
    let bus = TestBus::with_config(
        r#"<limit name="max_replies_per_connection">2</limit>
           <limit name="reply_timeout">1000</limit>"#,
    );
    // A callee that takes calls and never answers.
    let mut silent = RawClient::connect(&bus);
    silent.send(
        Message::method_call("/org/freedesktop/DBus", "RequestName")
            .destination("org.freedesktop.DBus")
            .interface("org.freedesktop.DBus"),
        &("org.telbus.Limits.Silent", 4u32),
    );
    bus.wait_for_owner("org.telbus.Limits.Silent", Duration::from_secs(5));
    run(async {
        let caller = bus.connect().await;
        let call = || {
            caller.call_method(
                Some("org.telbus.Limits.Silent"),
                "/",
                Some("org.telbus.Limits"),
                "Wait",
                &(),
            )
        };
        // Two calls wait for replies (the limit); the third is refused at once.
        let (first, second, third) = futures::join!(call(), call(), async {
            // A round trip on the same connection: the bus has the first two calls by then.
            call_driver(&caller, "GetId", &()).await.unwrap();
            call().await
        });
        assert_eq!(expect_error_name(third), LIMITS_EXCEEDED);
        // The two that waited end with NoReply at reply_timeout.
        for waited in [first, second] {
            assert_eq!(
                expect_error_name(waited),
                "org.freedesktop.DBus.Error.NoReply"
            );
        }
    });
    bus.assert_alive();
}

#[test]
fn max_connections_per_user_refuses_hello() {
    let bus = bus_with_limit("max_connections_per_user", 2);
    run(async {
        let first = bus.connect().await;
        let _second = bus.connect().await;
        let third = zbus::connection::Builder::address(bus.address())
            .build()
            .await;
        let error = third.expect_err("a third connection of the same user is refused");
        assert!(
            error.to_string().contains("LimitsExceeded"),
            "unexpected error: {error}"
        );
        // The first two keep working.
        call_driver(&first, "GetId", &()).await.unwrap();
        // One that leaves makes room for another.
        drop(first);
        let fourth = connect_when_a_place_frees(&bus).await;
        call_driver(&fourth, "GetId", &()).await.unwrap();
    });
    bus.assert_alive();
}

#[test]
fn max_completed_connections_refuses_hello() {
    let bus = bus_with_limit("max_completed_connections", 2);
    run(async {
        let first = bus.connect().await;
        let _second = bus.connect().await;
        let third = zbus::connection::Builder::address(bus.address())
            .build()
            .await;
        let error = third.expect_err("a third connection is refused");
        assert!(
            error.to_string().contains("LimitsExceeded"),
            "unexpected error: {error}"
        );
        call_driver(&first, "GetId", &()).await.unwrap();
        drop(first);
        let fourth = connect_when_a_place_frees(&bus).await;
        call_driver(&fourth, "GetId", &()).await.unwrap();
    });
    bus.assert_alive();
}

#[test]
fn an_oversized_message_disconnects_its_sender_only() {
    let bus = bus_with_limit("max_message_size", 4096);
    let service = ServiceThread::start(&bus, Some("org.telbus.Limits.Echo"));
    run(async {
        let sender = bus.connect().await;
        let big = "x".repeat(8192);
        let result = sender
            .call_method(
                Some("org.telbus.Limits.Echo"),
                TEST_PATH,
                Some(TEST_INTERFACE),
                "Echo",
                &(big.as_str(),),
            )
            .await;
        assert!(result.is_err(), "an 8 KiB message passed a 4 KiB limit");
        // Everyone else is served.
        let other = bus.connect().await;
        let reply = other
            .call_method(
                Some("org.telbus.Limits.Echo"),
                TEST_PATH,
                Some(TEST_INTERFACE),
                "Echo",
                &("small",),
            )
            .await
            .expect("a small call still works");
        assert_eq!(reply.body().deserialize::<String>().unwrap(), "small");
    });
    drop(service);
    bus.assert_alive();
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_slow_reader_does_not_stop_others_nor_grow_the_bus() {
    // 1 MiB of queue per connection: the flood below is 32 times that.
    let bus = bus_with_limit("max_outgoing_bytes", 1 << 20);
    let service = ServiceThread::start(&bus, Some("org.telbus.Limits.Echo"));
    let mut sleeper = RawClient::connect(&bus);
    sleeper.subscribe_to_everything();
    let before = rss_kib(bus.pid());
    run(async {
        let flooder = bus.connect().await;
        let payload = "y".repeat(32 * 1024);
        // 32 MiB of signals, all of which the sleeper's rule matches.
        for _ in 0..1024 {
            flooder
                .emit_signal(
                    None::<&str>,
                    "/org/telbus/Flood",
                    "org.telbus.Flood",
                    "Wave",
                    &(payload.as_str(),),
                )
                .await
                .expect("the flooder is not stopped");
        }
        // A third client is served throughout.
        let bystander = bus.connect().await;
        for i in 0..20 {
            let text = format!("still here {i}");
            let reply = bystander
                .call_method(
                    Some("org.telbus.Limits.Echo"),
                    TEST_PATH,
                    Some(TEST_INTERFACE),
                    "Echo",
                    &(text.as_str(),),
                )
                .await
                .expect("the bystander is served while the sleeper sleeps");
            assert_eq!(reply.body().deserialize::<String>().unwrap(), text);
        }
    });
    let after = rss_kib(bus.pid());
    eprintln!(
        "broker RSS with a stalled reader after a 32 MiB flood: {before} KiB before, {after} KiB after"
    );
    // What the sleeper may hold is bounded by max_outgoing_bytes; the 32 MiB flood must not
    // have been kept for it.
    assert!(
        after < before + 16 * 1024,
        "the broker grew by {} KiB for a reader that does not read",
        after - before
    );
    drop(sleeper);
    drop(service);
    bus.assert_alive();
}

#[test]
fn a_client_that_never_authenticates_is_dropped_at_auth_timeout() {
    let bus = bus_with_limit("auth_timeout", 500);
    let mut stream = UnixStream::connect(Path::new(&socket_path(&bus))).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(b"\0").unwrap();
    // Says nothing more: the bus closes the connection (read gives end of file).
    let mut buffer = [0u8; 64];
    let read = stream.read(&mut buffer);
    assert!(
        matches!(read, Ok(0))
            || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the half-authenticated connection was not closed: {read:?}"
    );
    run(async {
        let client = bus.connect().await;
        call_driver(&client, "GetId", &()).await.unwrap();
    });
    bus.assert_alive();
}

#[test]
fn too_many_unix_fds_in_one_message() {
    let bus = bus_with_limit("max_message_unix_fds", 1);
    run(async {
        let sender = bus.connect().await;
        let (a, b) = (
            std::fs::File::open("/dev/null").unwrap(),
            std::fs::File::open("/dev/null").unwrap(),
        );
        use std::os::fd::AsFd;
        let result = sender
            .call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.telbus.Limits"),
                "TwoFds",
                &(zbus::Fd::from(a.as_fd()), zbus::Fd::from(b.as_fd())),
            )
            .await;
        // Refused: the connection is closed (as dbus-daemon does) or the call gets
        // LimitsExceeded, never delivered (the driver would answer UnknownMethod).
        match result {
            Err(zbus::Error::MethodError(name, _, _)) => {
                assert_ne!(name.as_str(), "org.freedesktop.DBus.Error.UnknownMethod")
            }
            Err(_) => {}
            Ok(_) => panic!("a message with 2 fds passed max_message_unix_fds=1"),
        }
        let other = bus.connect().await;
        call_driver(&other, "GetId", &()).await.unwrap();
    });
    bus.assert_alive();
}

#[test]
fn descriptors_without_their_message_are_dropped_at_pending_fd_timeout() {
    let bus = bus_with_limit("pending_fd_timeout", 500);
    let mut parker = RawClient::connect(&bus);
    // The start of a message (its fixed header) with a descriptor, and then nothing more.
    let call = Message::method_call("/", "Park")
        .destination("org.freedesktop.DBus")
        .serial(std::num::NonZeroU32::new(100).unwrap())
        .build(&())
        .unwrap();
    let devnull = std::fs::File::open("/dev/null").unwrap();
    {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
        use std::os::fd::AsFd;
        let fds = [devnull.as_fd()];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
        let head = &call.data()[..16];
        sendmsg(
            &parker.stream,
            &[std::io::IoSlice::new(head)],
            &mut control,
            SendFlags::empty(),
        )
        .expect("send the start of a message with a descriptor");
    }
    parker
        .stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // Whatever the bus sent (Hello's reply, NameAcquired), then end of file.
    let mut buffer = [0u8; 4096];
    loop {
        match parker.stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the bus kept a connection that parked a descriptor: {e}"),
        }
    }
    run(async {
        let client = bus.connect().await;
        call_driver(&client, "GetId", &()).await.unwrap();
    });
    bus.assert_alive();
}

#[test]
fn max_outgoing_unix_fds_bounds_what_waits_for_a_reader() {
    use std::os::fd::AsFd;
    let bus = bus_with_limit("max_outgoing_unix_fds", 4);
    // Never reads: once the socket's own buffer is full (64 KiB messages fill it after a few),
    // what is sent to it waits in the bus, which holds at most 4 descriptors for it.
    let sleeper = RawClient::connect(&bus);
    let mut sender = RawClient::connect(&bus);
    let file = std::fs::File::open("/dev/null").unwrap();
    let payload = vec![7u8; 64 * 1024];
    for _ in 0..48 {
        sender.send_with_fds(
            Message::method_call(TEST_PATH, "TakeFd")
                .destination(sleeper.unique_name.as_str())
                .interface(TEST_INTERFACE),
            &(zbus::Fd::from(file.as_fd()), payload.as_slice()),
        );
    }
    // The errors for refused calls come before the reply to a later call.
    let done = sender.send(telbus_dbus_tests::driver_call("GetId"), &());
    let mut refused = 0;
    loop {
        let msg = sender.read_message().expect("the bus answers");
        let header = msg.header();
        if header.reply_serial().map(|s| s.get()) == Some(done) {
            break;
        }
        if let Some(name) = header.error_name() {
            assert_eq!(name.as_str(), LIMITS_EXCEEDED, "refused with");
            refused += 1;
        }
    }
    eprintln!("{refused} of 48 calls with a descriptor refused");
    assert!(
        refused > 0,
        "48 calls with a descriptor each all went to a reader that does not read"
    );
    assert!(refused < 48, "nothing at all was delivered");
    // Everyone else is served.
    run(async {
        let client = bus.connect().await;
        call_driver(&client, "GetId", &()).await.unwrap();
    });
    drop(sleeper);
    bus.assert_alive();
}
