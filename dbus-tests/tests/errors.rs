//! Errors the bus itself sends: unknown destinations, unowned names, unknown driver methods,
//! bad arguments, calls left without a reply, and NO_REPLY_EXPECTED.

use futures::StreamExt;
use telbus_dbus_tests::{
    DRIVER_INTERFACE, DRIVER_NAME, DRIVER_PATH, STEP_TIMEOUT, TestBus, add_match, call_driver,
    expect_error, next_signal, run, within,
};
use zbus::message::{Flags, Type};
use zbus::{Connection, Message, MessageStream};

/// Waits for the next method call that reaches `inbox`.
async fn next_call(inbox: &mut MessageStream) -> Message {
    within(STEP_TIMEOUT, "a method call", async {
        loop {
            let message = inbox.next().await.unwrap().unwrap();
            if message.message_type() == Type::MethodCall {
                return message;
            }
        }
    })
    .await
}

fn error(name: &str, message: &str) -> (String, String) {
    (name.to_string(), message.to_string())
}

#[test]
fn calls_to_names_nobody_owns_get_service_unknown() {
    let bus = TestBus::start();
    run(async {
        let caller = bus.connect().await;
        for name in ["org.telbus.Nobody", ":1.999"] {
            let result = caller
                .call_method(Some(name), "/", Some("org.telbus.X"), "Y", &())
                .await;
            assert_eq!(
                expect_error(result),
                error(
                    "org.freedesktop.DBus.Error.ServiceUnknown",
                    &format!("The name {name} was not provided by any .service files")
                )
            );
        }
    });
    bus.assert_alive();
}

#[test]
fn driver_errors() {
    let bus = TestBus::start();
    run(async {
        let connection = bus.connect().await;
        assert_eq!(
            expect_error(call_driver(&connection, "GetNameOwner", &("org.telbus.Nobody",)).await),
            error(
                "org.freedesktop.DBus.Error.NameHasNoOwner",
                "Could not get owner of name 'org.telbus.Nobody': no such name"
            )
        );
        assert_eq!(
            expect_error(call_driver(&connection, "NoSuchMethod", &()).await),
            error(
                "org.freedesktop.DBus.Error.UnknownMethod",
                "org.freedesktop.DBus does not understand message NoSuchMethod"
            )
        );
        let unknown_interface = connection
            .call_method(
                Some(DRIVER_NAME),
                DRIVER_PATH,
                Some("org.telbus.NotThere"),
                "Nope",
                &(),
            )
            .await;
        assert_eq!(
            expect_error(unknown_interface).0,
            "org.freedesktop.DBus.Error.UnknownInterface"
        );
        // Wrong argument types, and missing arguments.
        let (name, message) =
            expect_error(call_driver(&connection, "GetNameOwner", &(7u32,)).await);
        assert_eq!(name, "org.freedesktop.DBus.Error.InvalidArgs");
        assert_eq!(
            message.trim_end(),
            "Call to GetNameOwner has wrong args (u, expected s)"
        );
        let (name, message) =
            expect_error(call_driver(&connection, "RequestName", &("org.telbus.A",)).await);
        assert_eq!(name, "org.freedesktop.DBus.Error.InvalidArgs");
        assert_eq!(
            message.trim_end(),
            "Call to RequestName has wrong args (s, expected su)"
        );
        // None of which upsets the connection.
        assert!(call_driver(&connection, "GetId", &()).await.is_ok());
    });
    bus.assert_alive();
}

#[test]
fn a_callee_that_disconnects_leaves_the_caller_a_no_reply_error() {
    let bus = TestBus::start();
    run(async {
        let caller = bus.connect().await;
        let callee = bus.connect().await;
        let mut callee_inbox = MessageStream::from(&callee);
        let callee_name = callee.unique_name().unwrap().to_string();

        let call = caller.call_method(
            Some(callee_name.as_str()),
            "/",
            Some("org.telbus.X"),
            "Wait",
            &(),
        );
        let hang_up = async {
            next_call(&mut callee_inbox).await;
            callee.close().await.unwrap();
        };
        let (result, ()) = within(STEP_TIMEOUT, "the call", async {
            futures::join!(call, hang_up)
        })
        .await;
        assert_eq!(
            expect_error(result),
            error(
                "org.freedesktop.DBus.Error.NoReply",
                "Message recipient disconnected from message bus without replying"
            )
        );
    });
    bus.assert_alive();
}

#[test]
fn the_bus_times_out_a_call_left_unanswered() {
    let bus = TestBus::with_config(r#"<limit name="reply_timeout">300</limit>"#);
    run(async {
        let caller = bus.connect().await;
        let callee = bus.connect().await;
        let mut callee_inbox = MessageStream::from(&callee);
        let callee_name = callee.unique_name().unwrap().to_string();
        let call = caller.call_method(
            Some(callee_name.as_str()),
            "/",
            Some("org.telbus.X"),
            "Ignored",
            &(),
        );
        let (result, _) = futures::join!(call, next_call(&mut callee_inbox));
        assert_eq!(
            expect_error(result),
            error(
                "org.freedesktop.DBus.Error.NoReply",
                "Message did not receive a reply (timeout by message bus)"
            )
        );
        assert!(call_driver(&caller, "GetId", &()).await.is_ok());
    });
    bus.assert_alive();
}

#[test]
fn no_reply_expected_calls_are_delivered_and_never_answered_by_the_bus() {
    let bus = TestBus::start();
    run(async {
        let caller = bus.connect().await;
        let callee = bus.connect().await;
        let mut caller_inbox = MessageStream::from(&caller);
        let mut callee_inbox = MessageStream::from(&callee);
        let callee_name = callee.unique_name().unwrap().to_string();
        add_match(
            &caller,
            &format!("type='signal',member='NameOwnerChanged',arg0='{callee_name}'"),
        )
        .await
        .unwrap();

        let call = Message::method_call("/org/telbus/Quiet", "Fire")
            .interface("org.telbus.X")
            .destination(callee_name.as_str())
            .with_flags(Flags::NO_REPLY_EXPECTED)
            .build(&("and forget",))
            .unwrap();
        let serial = call.primary_header().serial_num();
        caller.send(&call).await.unwrap();

        // It arrives, flag and all.
        let received = next_call(&mut callee_inbox).await;
        assert_eq!(received.header().member().unwrap().as_str(), "Fire");
        assert!(
            received
                .primary_header()
                .flags()
                .contains(Flags::NO_REPLY_EXPECTED)
        );
        assert_eq!(
            received.body().deserialize::<String>().unwrap(),
            "and forget"
        );

        // The callee leaves without replying: no call of it is pending, so no NoReply.
        callee.close().await.unwrap();
        next_signal(&mut caller_inbox, |m| {
            m.body()
                .deserialize::<(String, String, String)>()
                .is_ok_and(|(_, _, new)| new.is_empty())
        })
        .await;
        // A round trip to the bus after that: anything for the first call would come first.
        let ping = Message::method_call(DRIVER_PATH, "GetId")
            .interface(DRIVER_INTERFACE)
            .destination(DRIVER_NAME)
            .build(&())
            .unwrap();
        let ping_serial = ping.primary_header().serial_num();
        caller.send(&ping).await.unwrap();
        within(STEP_TIMEOUT, "the GetId reply", async {
            loop {
                let message = caller_inbox.next().await.unwrap().unwrap();
                let reply_to = message.header().reply_serial();
                assert_ne!(
                    reply_to,
                    Some(serial),
                    "a reply to a NO_REPLY_EXPECTED call: {message:?}"
                );
                if reply_to == Some(ping_serial) {
                    return;
                }
            }
        })
        .await;
    });
    bus.assert_alive();
}

#[test]
fn a_policy_denial_is_an_access_denied_error() {
    let bus = TestBus::with_config(
        r#"<policy context="default"><deny send_interface="org.telbus.Forbidden"/></policy>"#,
    );
    run(async {
        let caller = bus.connect().await;
        let callee: Connection = bus.connect().await;
        let mut callee_inbox = MessageStream::from(&callee);
        let callee_name = callee.unique_name().unwrap().to_string();
        let denied = caller
            .call_method(
                Some(callee_name.as_str()),
                "/",
                Some("org.telbus.Forbidden"),
                "Call",
                &(),
            )
            .await;
        let (name, message) = expect_error(denied);
        assert_eq!(name, "org.freedesktop.DBus.Error.AccessDenied");
        assert!(message.starts_with("Rejected send message"), "{message}");
        // Another interface goes through: the callee sees only that one.
        let allowed = Message::method_call("/", "Call")
            .interface("org.telbus.Allowed")
            .destination(callee_name.as_str())
            .with_flags(Flags::NO_REPLY_EXPECTED)
            .build(&())
            .unwrap();
        caller.send(&allowed).await.unwrap();
        let call = next_call(&mut callee_inbox).await;
        assert_eq!(
            call.header().interface().unwrap().as_str(),
            "org.telbus.Allowed"
        );
    });
    bus.assert_alive();
}

/// The bus remembers the last message policy let a connection send to another and does not ask
/// the rules again for the same message; a name the receiver takes (or gives up) in between
/// changes the decision all the same.
#[test]
fn a_decision_follows_the_receivers_names() {
    let bus = TestBus::with_config(
        r#"<policy context="default"><deny send_destination="org.telbus.Locked"/></policy>"#,
    );
    run(async {
        let caller = bus.connect().await;
        let callee: Connection = bus.connect().await;
        let mut callee_inbox = MessageStream::from(&callee);
        let callee_name = callee.unique_name().unwrap().to_string();
        let ping = |flags: Flags| {
            Message::method_call("/", "Ping")
                .interface("org.telbus.I")
                .destination(callee_name.as_str())
                .with_flags(flags)
                .build(&())
                .unwrap()
        };
        for _ in 0..2 {
            caller.send(&ping(Flags::NO_REPLY_EXPECTED)).await.unwrap();
            let call = next_call(&mut callee_inbox).await;
            assert_eq!(call.header().member().unwrap().as_str(), "Ping");
        }
        callee.request_name("org.telbus.Locked").await.unwrap();
        let denied = caller
            .call_method(
                Some(callee_name.as_str()),
                "/",
                Some("org.telbus.I"),
                "Ping",
                &(),
            )
            .await;
        let (name, message) = expect_error(denied);
        assert_eq!(name, "org.freedesktop.DBus.Error.AccessDenied");
        assert!(message.contains("denied by the rule at"), "{message}");
        callee.release_name("org.telbus.Locked").await.unwrap();
        caller.send(&ping(Flags::NO_REPLY_EXPECTED)).await.unwrap();
        let call = next_call(&mut callee_inbox).await;
        assert_eq!(call.header().member().unwrap().as_str(), "Ping");
    });
    bus.assert_alive();
}
