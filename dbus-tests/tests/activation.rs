//! Service activation from `.service` files: auto-start on a call, StartServiceByName, and the
//! errors of services that cannot start.

use std::path::Path;

use telbus_dbus_tests::{TestBus, call_driver, expect_error, run};
use zbus::Message;
use zbus::message::Flags;

const ECHO: &str = "org.telbus.ActivationTest.Echo";
const TOOL: &str = "/usr/bin/dbus-test-tool";

fn bus_with_services() -> Option<TestBus> {
    if !Path::new(TOOL).exists() {
        panic!(
            "dbus-test-tool is missing: install the dbus-tests package (scripts/test-all.sh does)"
        );
    }
    Some(
        TestBus::builder()
            .activatable(ECHO, &format!("{TOOL} echo --name={ECHO}"))
            .activatable("org.telbus.ActivationTest.Exits", "/bin/false")
            .activatable("org.telbus.ActivationTest.Missing", "/nonexistent/program")
            .start(),
    )
}

async fn start_service(connection: &zbus::Connection, name: &str) -> zbus::Result<u32> {
    let reply = call_driver(connection, "StartServiceByName", &(name, 0u32)).await?;
    Ok(reply.body().deserialize().unwrap())
}

#[test]
fn a_call_starts_the_service_it_is_for() {
    let Some(bus) = bus_with_services() else {
        return;
    };
    run(async {
        let connection = bus.connect().await;
        // The echo service answers any call with an empty reply, once the bus started it.
        let reply = connection
            .call_method(Some(ECHO), "/", Some("org.telbus.Any"), "Thing", &("x",))
            .await
            .expect("the activated service's reply");
        assert_eq!(reply.body().signature().to_string(), "");
        let reply = call_driver(&connection, "NameHasOwner", &(ECHO,))
            .await
            .unwrap();
        assert!(reply.body().deserialize::<bool>().unwrap());
        // Already running now.
        assert_eq!(start_service(&connection, ECHO).await.unwrap(), 2);
    });
    bus.assert_alive();
}

#[test]
fn start_service_by_name_then_call() {
    let Some(bus) = bus_with_services() else {
        return;
    };
    run(async {
        let connection = bus.connect().await;
        assert_eq!(start_service(&connection, ECHO).await.unwrap(), 1);
        let reply = call_driver(&connection, "GetNameOwner", &(ECHO,))
            .await
            .unwrap();
        let owner: String = reply.body().deserialize().unwrap();
        assert!(owner.starts_with(':'), "{owner}");
    });
    bus.assert_alive();
}

#[test]
fn no_auto_start_leaves_the_service_stopped() {
    let Some(bus) = bus_with_services() else {
        return;
    };
    run(async {
        let connection = bus.connect().await;
        let call = Message::method_call("/", "Thing")
            .interface("org.telbus.Any")
            .destination(ECHO)
            .with_flags(Flags::NO_AUTO_START)
            .build(&())
            .unwrap();
        let serial = call.primary_header().serial_num();
        let mut inbox = zbus::MessageStream::from(&connection);
        connection.send(&call).await.unwrap();
        let reply =
            telbus_dbus_tests::within(telbus_dbus_tests::STEP_TIMEOUT, "the error", async {
                use futures::StreamExt;
                loop {
                    let message = inbox.next().await.unwrap().unwrap();
                    if message.header().reply_serial() == Some(serial) {
                        return message;
                    }
                }
            })
            .await;
        // Not ServiceUnknown: the name is activatable, only not running.
        assert_eq!(
            reply.header().error_name().map(|e| e.as_str()),
            Some("org.freedesktop.DBus.Error.NameHasNoOwner")
        );
        assert_eq!(
            reply.body().deserialize::<String>().unwrap(),
            format!("Name \"{ECHO}\" does not exist")
        );
        let reply = call_driver(&connection, "NameHasOwner", &(ECHO,))
            .await
            .unwrap();
        assert!(!reply.body().deserialize::<bool>().unwrap());
    });
    bus.assert_alive();
}

#[test]
fn services_that_cannot_start() {
    let Some(bus) = bus_with_services() else {
        return;
    };
    run(async {
        let connection = bus.connect().await;
        assert_eq!(
            expect_error(start_service(&connection, "org.telbus.ActivationTest.Exits").await),
            (
                "org.freedesktop.DBus.Error.Spawn.ChildExited".to_string(),
                "Process org.telbus.ActivationTest.Exits exited with status 1".to_string()
            )
        );
        assert_eq!(
            expect_error(start_service(&connection, "org.telbus.ActivationTest.Missing").await),
            (
                "org.freedesktop.DBus.Error.Spawn.ExecFailed".to_string(),
                "Failed to execute program org.telbus.ActivationTest.Missing: \
                 No such file or directory"
                    .to_string()
            )
        );
        assert_eq!(
            expect_error(start_service(&connection, "org.telbus.ActivationTest.Unknown").await),
            (
                "org.freedesktop.DBus.Error.ServiceUnknown".to_string(),
                "The name org.telbus.ActivationTest.Unknown was not provided by any .service files"
                    .to_string()
            )
        );
    });
    bus.assert_alive();
}

/// A service that starts but never takes its name fails at service_start_timeout, and while
/// it is starting, max_pending_service_starts keeps a second activation from starting.
#[test]
fn a_service_that_never_takes_its_name_and_the_pending_starts_limit() {
    let bus = TestBus::builder()
        .activatable("org.telbus.ActivationTest.Silent", "/bin/sleep 30")
        .activatable("org.telbus.ActivationTest.Silent2", "/bin/sleep 30")
        .config(
            r#"<limit name="service_start_timeout">1000</limit>
               <limit name="max_pending_service_starts">1</limit>"#,
        )
        .start();
    run(async {
        let connection = bus.connect().await;
        let (first, second) = futures::join!(
            start_service(&connection, "org.telbus.ActivationTest.Silent"),
            async {
                // The first request reaches the bus before this one (same connection, in order).
                call_driver(&connection, "GetId", &()).await.unwrap();
                start_service(&connection, "org.telbus.ActivationTest.Silent2").await
            }
        );
        assert_eq!(
            expect_error(second).0,
            "org.freedesktop.DBus.Error.LimitsExceeded"
        );
        assert_eq!(expect_error(first).0, "org.freedesktop.DBus.Error.TimedOut");
    });
    bus.assert_alive();
}
