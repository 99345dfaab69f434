//! A zbus proxy on one connection calling a `#[zbus::interface]` service on another, through the
//! bus: methods, properties, signals and errors.

use futures::StreamExt;
use telbus_dbus_tests::{
    STEP_TIMEOUT, TEST_CHILD_PATH, TEST_INTERFACE, TestBus, TestObjectProxy, error_reply, run,
    serve_test_object, within,
};
use zbus::proxy::CacheProperties;

const SERVICE: &str = "org.telbus.ZbusTest";

async fn proxy<'a>(client: &zbus::Connection, path: &'a str) -> TestObjectProxy<'a> {
    TestObjectProxy::builder(client)
        .destination(SERVICE)
        .path(path)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .expect("proxy")
}

#[test]
fn methods_with_arguments_and_results() {
    let bus = TestBus::start();
    run(async {
        let _service = serve_test_object(bus.address(), Some(SERVICE)).await;
        let client = bus.connect().await;
        let test = proxy(&client, "/org/telbus/Test").await;
        assert_eq!(test.echo("hello").await.unwrap(), "hello");
        assert_eq!(test.add(2, 40).await.unwrap(), 42);
        assert_eq!(test.describe("abc").await.unwrap(), (3, "ABC".to_string()));
        // A long argument goes through intact.
        let long = "x".repeat(200_000);
        assert_eq!(test.echo(&long).await.unwrap(), long);
        // Each object is its own.
        let child = proxy(&client, TEST_CHILD_PATH).await;
        assert_eq!(child.echo_count().await.unwrap(), 0);
        assert_eq!(test.echo_count().await.unwrap(), 2);
    });
    bus.assert_alive();
}

#[test]
fn properties_get_set_and_change_signals() {
    let bus = TestBus::start();
    run(async {
        let _service = serve_test_object(bus.address(), Some(SERVICE)).await;
        let client = bus.connect().await;
        let test = proxy(&client, "/org/telbus/Test").await;
        // PropertiesChanged comes through the bus as a broadcast signal that the proxy's match
        // rule selects.
        let properties = zbus::fdo::PropertiesProxy::builder(&client)
            .destination(SERVICE)
            .path("/org/telbus/Test")
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .unwrap();
        let mut changes = properties.receive_properties_changed().await.unwrap();
        assert_eq!(test.label().await.unwrap(), "");
        test.set_label("green".to_string()).await.unwrap();
        assert_eq!(test.label().await.unwrap(), "green");
        let change = within(STEP_TIMEOUT, "PropertiesChanged", changes.next())
            .await
            .expect("a change");
        let args = change.args().unwrap();
        assert_eq!(args.interface_name.as_str(), TEST_INTERFACE);
        let label = args.changed_properties.get("Label").expect("Label changed");
        assert_eq!(
            String::try_from(label.try_clone().unwrap()).unwrap(),
            "green"
        );
    });
    bus.assert_alive();
}

#[test]
fn signals_reach_a_proxy() {
    let bus = TestBus::start();
    run(async {
        let _service = serve_test_object(bus.address(), Some(SERVICE)).await;
        let client = bus.connect().await;
        let test = proxy(&client, "/org/telbus/Test").await;
        let mut pings = test.receive_pinged().await.unwrap();
        for value in [1, 2, 3] {
            test.emit_pinged(value).await.unwrap();
        }
        for expected in [1, 2, 3] {
            let signal = within(STEP_TIMEOUT, "Pinged", pings.next()).await.unwrap();
            assert_eq!(signal.args().unwrap().value, expected, "in order");
        }
    });
    bus.assert_alive();
}

#[test]
fn service_errors_reach_the_caller() {
    let bus = TestBus::start();
    run(async {
        let _service = serve_test_object(bus.address(), Some(SERVICE)).await;
        let client = bus.connect().await;
        let test = proxy(&client, "/org/telbus/Test").await;
        let error = test.fail("as asked").await.unwrap_err();
        assert_eq!(
            error_reply(&error),
            (
                "org.freedesktop.DBus.Error.Failed".to_string(),
                "as asked".to_string()
            )
        );
        let error = test.add(i32::MAX, 1).await.unwrap_err();
        assert_eq!(
            error_reply(&error).0,
            "org.freedesktop.DBus.Error.InvalidArgs"
        );
        // An object that is not there: the service says so, not the bus.
        let missing = proxy(&client, "/org/telbus/Missing").await;
        let error = missing.echo("x").await.unwrap_err();
        assert_eq!(
            error_reply(&error).0,
            "org.freedesktop.DBus.Error.UnknownObject"
        );
        // And the connection still works afterwards.
        assert_eq!(test.echo("still here").await.unwrap(), "still here");
    });
    bus.assert_alive();
}
