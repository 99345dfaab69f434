//! End to end: the TelAF-style service processes (`services/`, built as
//! `target/release/telbus-le-*`) on a private bus, activated on first use through the shipped
//! `.service` files, called with busctl and with the generated zbus proxies, and releasing what
//! a client held when the client dies (SIGKILL): the call ends (le_mcc), the connection drops
//! with its last holder (le_data), the wakeup source goes (le_pm). The killed clients are the
//! example programs (`examples/`, `telaf-call` and `telaf-hold`).
//!
//! Build first: `cargo build --release -p telbus-broker -p telbus-services -p telbus-examples`.

include!(concat!(env!("OUT_DIR"), "/telaf_apis.rs"));

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use le_data::client::LeDataProxy;
use le_gpio::client::LeGpioProxy;
use le_info::client::LeInfoProxy;
use le_mcc::client::LeMccProxy;
use le_pm::client::LePmProxy;
use telaf_common::LeResult;
use telbus_dbus_tests::services::{
    DATA, INFO, MCC, PIN2, PM, next_property_value, property_changes, release_program,
};
use telbus_dbus_tests::{Background, STEP_TIMEOUT, TestBus, expect_error, run};
use zbus::Connection;
use zbus::wire::{OwnedObjectPath, OwnedVariant};

/// A bus on which every shipped `.service` file (services/dbus-1/services) is installed, its
/// Exec pointing into the release build instead of /usr/libexec/telbus.
fn bus_with_services() -> TestBus {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../services/dbus-1/services");
    let release = release_program("telbus-le-info")
        .parent()
        .unwrap()
        .canonicalize()
        .unwrap();
    let mut builder = TestBus::builder();
    for entry in std::fs::read_dir(&dir).expect("services/dbus-1/services") {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
                .to_string()
        };
        let exec = field("Exec=").replace("/usr/libexec/telbus", &release.display().to_string());
        builder = builder.activatable(&field("Name="), &exec);
    }
    builder.start()
}

/// Starts an example client (`telaf-call`, `telaf-hold`) against `bus`.
fn example(bus: &TestBus, name: &str, args: &[&str]) -> Background {
    let mut command = bus.command(release_program(name));
    command
        .arg(format!("--address={}", bus.address()))
        .args(args);
    Background::spawn(command)
}

fn ok() -> i32 {
    LeResult::Ok.to_wire()
}

#[test]
fn le_info_is_activated_on_first_use_and_answers_busctl_and_the_proxy() {
    let bus = bus_with_services();
    // First use: busctl activates it.
    let out = bus
        .busctl([
            "call",
            INFO,
            "/io/telaf/le_info",
            "io.telaf.le_info",
            "GetImei",
        ])
        .assert_success();
    assert_eq!(out.stdout.trim(), "is 0 \"490154203237518\"");
    let out = bus
        .busctl([
            "call",
            INFO,
            "/io/telaf/le_info",
            "io.telaf.le_info",
            "GetRfDeviceStatus",
        ])
        .assert_success();
    assert_eq!(
        out.stdout.trim(),
        "iaqayab 0 3 308 535 192 3 33 90 7 3 true true false"
    );
    let out = bus
        .busctl([
            "get-property",
            INFO,
            "/io/telaf/le_info",
            "io.telaf.Service1",
            "ProtocolId",
        ])
        .assert_success();
    assert_eq!(out.stdout.trim(), format!("s \"{}\"", le_info::PROTOCOL_ID));

    run(async {
        let conn = bus.connect().await;
        let info = LeInfoProxy::builder(&conn)
            .destination(INFO)
            .build()
            .await
            .unwrap();
        let (result, model) = info.get_device_model().await.unwrap();
        assert_eq!((result, model.as_str()), (ok(), "WP7702"));
        let (result, reset, text) = info.get_reset_information().await.unwrap();
        assert_eq!(result, ok());
        assert_eq!(
            le_info::Reset::try_from(reset),
            Ok(le_info::Reset::RESET_USER)
        );
        assert!(!text.is_empty());
        let (result, firmware) = info.get_firmware_version().await.unwrap();
        assert_eq!(result, ok());
        assert!(firmware.len() <= le_info::MAX_VERS_LEN as usize);
        // A CDMA-only item on a GSM/LTE module.
        let (result, _) = info.get_meid().await.unwrap();
        assert_eq!(result, LeResult::Fault.to_wire());
        let (result, manufacturers, products, working) = info.get_rf_device_status().await.unwrap();
        assert_eq!(result, ok());
        assert_eq!(manufacturers.len(), products.len());
        assert_eq!(working, vec![true, true, false]);
    });
    bus.assert_alive();
}

#[test]
fn le_gpio_pin_belongs_to_its_first_client_and_reports_filtered_changes() {
    let bus = bus_with_services();
    run(async {
        let owner = bus.connect().await;
        let other = bus.connect().await;
        let pin = |conn: &Connection| {
            LeGpioProxy::builder(conn)
                .destination(PIN2)
                .path("/io/telaf/le_gpioPin2")
                .build()
        };
        let owner_pin = pin(&owner).await.unwrap();
        let other_pin = pin(&other).await.unwrap();
        let mut owner_changes = property_changes(&other, "/io/telaf/le_gpioPin2").await;

        // The first to configure it (activating the service) owns it; the other gets LE_BUSY.
        let active_high = le_gpio::Polarity::ACTIVE_HIGH.to_wire();
        assert_eq!(
            owner_pin
                .set_push_pull_output(active_high, false)
                .await
                .unwrap(),
            ok()
        );
        assert_eq!(
            other_pin.set_input(active_high).await.unwrap(),
            LeResult::Busy.to_wire()
        );
        assert_eq!(
            other_pin.activate().await.unwrap(),
            LeResult::Busy.to_wire()
        );
        // Reading is open to all.
        assert!(other_pin.is_output().await.unwrap());
        assert!(!other_pin.read().await.unwrap());

        // The other client hears rising edges only.
        let rising = le_gpio::Edge::EDGE_RISING.to_wire();
        let handler = other_pin.add_change_event_handler(rising, 0).await.unwrap();
        assert!(
            handler
                .as_str()
                .starts_with("/io/telaf/le_gpioPin2/handler/ChangeEvent/"),
            "{handler}"
        );
        let on_handler = LeGpioProxy::builder(&other)
            .destination(PIN2)
            .path(handler.clone())
            .build()
            .await
            .unwrap();
        let mut changes = on_handler.receive_change_event().await.unwrap();
        assert_eq!(owner_pin.activate().await.unwrap(), ok());
        assert_eq!(owner_pin.deactivate().await.unwrap(), ok());
        assert_eq!(owner_pin.activate().await.unwrap(), ok());
        for _ in 0..2 {
            let change = telbus_dbus_tests::within(STEP_TIMEOUT, "a ChangeEvent", changes.next())
                .await
                .unwrap();
            // The falling edge between the two was filtered out.
            assert!(*change.args().unwrap().state());
        }
        assert!(other_pin.read().await.unwrap());

        // An ENUM value outside Edge is refused by the generated wrapper.
        let (name, message) = expect_error(other_pin.add_change_event_handler(9, 0).await);
        assert_eq!(name, "org.freedesktop.DBus.Error.InvalidArgs");
        assert!(message.contains("trigger"), "{message}");

        // The owner leaves: the pin is free again, and the other client can take it.
        let owner_name = owner.unique_name().unwrap().to_string();
        drop(owner_pin);
        drop(owner);
        loop {
            let value =
                next_property_value(&mut owner_changes, "io.telaf.sim.le_gpio", "Owner").await;
            let owner = String::try_from(value).unwrap();
            if owner.is_empty() {
                break;
            }
            assert_eq!(owner, owner_name);
        }
        assert_eq!(other_pin.set_input(active_high).await.unwrap(), ok());
    });
    // busctl: a new client each time, reading the pin.
    let out = bus
        .busctl([
            "call",
            PIN2,
            "/io/telaf/le_gpioPin2",
            "io.telaf.le_gpio",
            "IsInput",
        ])
        .assert_success();
    assert_eq!(out.stdout.trim(), "b true");
    bus.assert_alive();
}

/// (call reference, event) of the next CallEvent on `stream`.
async fn next_call_event(
    stream: &mut le_mcc::client::CallEventStream,
) -> (OwnedObjectPath, le_mcc::Event) {
    let signal = telbus_dbus_tests::within(STEP_TIMEOUT, "a CallEvent", stream.next())
        .await
        .expect("the CallEvent stream ended");
    let args = signal.args().unwrap();
    let event = le_mcc::Event::try_from(*args.event()).unwrap();
    (args.call_ref().clone(), event)
}

async fn mcc_proxy<'a>(conn: &Connection, path: &str) -> LeMccProxy<'a> {
    LeMccProxy::builder(conn)
        .destination(MCC)
        .path(path.to_string())
        .build()
        .await
        .unwrap()
}

/// A subscriber of CallEvent: its proxy and its event stream.
async fn subscribe_to_calls(
    conn: &Connection,
) -> (LeMccProxy<'static>, le_mcc::client::CallEventStream) {
    let mcc = mcc_proxy(conn, "/io/telaf/le_mcc").await;
    let handler = mcc.add_call_event_handler().await.unwrap();
    let on_handler = mcc_proxy(conn, handler.as_str()).await;
    let events = on_handler.receive_call_event().await.unwrap();
    (mcc, events)
}

#[test]
fn le_mcc_calls_reach_each_subscriber_with_its_own_reference() {
    let bus = bus_with_services();
    run(async {
        let caller = bus.connect().await;
        let watcher = bus.connect().await;
        let (mcc, mut events) = subscribe_to_calls(&caller).await;
        let (watcher_mcc, mut watcher_events) = subscribe_to_calls(&watcher).await;

        let call = mcc.create("+4930123").await.unwrap();
        assert_eq!(mcc.start(&call).await.unwrap(), ok());
        use le_mcc::Event::*;
        let mut watchers_call = None;
        for expected in [EVENT_ORIGINATING, EVENT_ALERTING, EVENT_CONNECTED] {
            assert_eq!(next_call_event(&mut events).await, (call.clone(), expected));
            let (reference, event) = next_call_event(&mut watcher_events).await;
            assert_eq!(event, expected);
            assert_ne!(reference, call, "the watcher gets a reference of its own");
            watchers_call.get_or_insert(reference.clone());
            assert_eq!(Some(&reference), watchers_call.as_ref());
        }
        let watchers_call = watchers_call.unwrap();
        assert!(mcc.is_connected(&call).await.unwrap());
        let (result, number) = watcher_mcc.get_remote_tel(&watchers_call).await.unwrap();
        assert_eq!((result, number.as_str()), (ok(), "+4930123"));
        // A reference is its holder's only.
        let (result, _) = watcher_mcc.get_remote_tel(&call).await.unwrap();
        assert_eq!(result, LeResult::NotFound.to_wire());

        assert_eq!(mcc.hang_up(&call).await.unwrap(), ok());
        assert_eq!(
            next_call_event(&mut events).await,
            (call.clone(), EVENT_TERMINATED)
        );
        assert_eq!(
            next_call_event(&mut watcher_events).await,
            (watchers_call.clone(), EVENT_TERMINATED)
        );
        assert_eq!(
            le_mcc::TerminationReason::try_from(mcc.get_termination_reason(&call).await.unwrap()),
            Ok(le_mcc::TerminationReason::TERM_LOCAL_ENDED)
        );
        assert_eq!(mcc.delete(&call).await.unwrap(), ok());
        assert_eq!(
            mcc.delete(&call).await.unwrap(),
            LeResult::NotFound.to_wire()
        );

        // A busy far end.
        let busy = mcc.create("+4930100").await.unwrap();
        assert_eq!(mcc.start(&busy).await.unwrap(), ok());
        assert_eq!(next_call_event(&mut events).await.1, EVENT_ORIGINATING);
        assert_eq!(next_call_event(&mut events).await.1, EVENT_TERMINATED);
        assert_eq!(
            next_call_event(&mut watcher_events).await.1,
            EVENT_ORIGINATING
        );
        assert_eq!(
            next_call_event(&mut watcher_events).await.1,
            EVENT_TERMINATED
        );
        assert_eq!(
            le_mcc::TerminationReason::try_from(mcc.get_termination_reason(&busy).await.unwrap()),
            Ok(le_mcc::TerminationReason::TERM_USER_BUSY)
        );

        // An incoming call, answered by the watcher with its own reference.
        let out = bus
            .busctl([
                "call",
                MCC,
                "/io/telaf/le_mcc",
                "io.telaf.sim.le_mcc",
                "Ring",
                "s",
                "+4940555",
            ])
            .assert_success();
        assert_eq!(out.stdout.trim(), "b true");
        let (incoming, event) = next_call_event(&mut watcher_events).await;
        assert_eq!(event, EVENT_INCOMING);
        assert_eq!(watcher_mcc.answer(&incoming).await.unwrap(), ok());
        assert_eq!(
            next_call_event(&mut watcher_events).await,
            (incoming.clone(), EVENT_CONNECTED)
        );

        // One byte over PHONE_NUM_MAX_LEN.
        let (name, message) = expect_error(mcc.create(&"1".repeat(18)).await);
        assert_eq!(name, "org.freedesktop.DBus.Error.InvalidArgs");
        assert!(message.contains("phoneNumPtr"), "{message}");
    });
    bus.assert_alive();
}

#[test]
fn le_mcc_call_ends_when_its_creator_is_killed() {
    let bus = bus_with_services();
    run(async {
        let watcher = bus.connect().await;
        let (watcher_mcc, mut events) = subscribe_to_calls(&watcher).await;

        // The example client calls, stays on the line, and is killed.
        let client = example(&bus, "telaf-call", &["--talk=3600", "+4930123"]);
        let mut watchers_call = None;
        use le_mcc::Event::*;
        for expected in [EVENT_ORIGINATING, EVENT_ALERTING, EVENT_CONNECTED] {
            let (reference, event) = next_call_event(&mut events).await;
            assert_eq!(event, expected);
            watchers_call.get_or_insert(reference);
        }
        let watchers_call = watchers_call.unwrap();
        client.wait_for_text("EVENT_CONNECTED", STEP_TIMEOUT);
        let (stdout, _) = client.stop(); // SIGKILL
        assert!(
            stdout.starts_with("call /io/telaf/le_mcc/call/"),
            "{stdout}"
        );

        assert_eq!(
            next_call_event(&mut events).await,
            (watchers_call.clone(), EVENT_TERMINATED)
        );
        assert_eq!(
            le_mcc::TerminationReason::try_from(
                watcher_mcc
                    .get_termination_reason(&watchers_call)
                    .await
                    .unwrap()
            ),
            Ok(le_mcc::TerminationReason::TERM_LOCAL_ENDED)
        );
        // The creator's references are gone: once the watcher lets go, so is the call.
        assert_eq!(watcher_mcc.delete(&watchers_call).await.unwrap(), ok());
        let calls: u32 = zbus::Proxy::new(&watcher, MCC, "/io/telaf/le_mcc", "io.telaf.sim.le_mcc")
            .await
            .unwrap()
            .get_property("Calls")
            .await
            .unwrap();
        assert_eq!(calls, 0);
    });
    bus.assert_alive();
}

/// (interface, connected) of the next ConnectionState on `states`.
async fn next_state(states: &mut le_data::client::ConnectionStateStream) -> (String, bool) {
    let signal = telbus_dbus_tests::within(STEP_TIMEOUT, "ConnectionState", states.next())
        .await
        .expect("the ConnectionState stream ended");
    let args = signal.args().unwrap();
    (args.intf_name().clone(), *args.is_connected())
}

#[test]
fn le_data_connection_stays_up_while_a_request_is_held_and_drops_with_the_last_holder() {
    let bus = bus_with_services();
    run(async {
        let watcher = bus.connect().await;
        let data = LeDataProxy::builder(&watcher)
            .destination(DATA)
            .build()
            .await
            .unwrap();
        let handler = data.add_connection_state_handler().await.unwrap();
        let on_handler = LeDataProxy::builder(&watcher)
            .destination(DATA)
            .path(handler)
            .build()
            .await
            .unwrap();
        let mut states = on_handler.receive_connection_state().await.unwrap();
        let mut holders = property_changes(&watcher, "/io/telaf/le_data").await;
        assert_eq!(
            data.get_technology().await.unwrap(),
            le_data::Technology::MAX.to_wire()
        );

        let first = example(&bus, "telaf-hold", &["data"]);
        first.wait_for_text("holding /io/telaf/le_data/request/", STEP_TIMEOUT);
        assert_eq!(next_state(&mut states).await, ("rmnet_data0".into(), true));
        let second = example(&bus, "telaf-hold", &["data"]);
        second.wait_for_text("holding /io/telaf/le_data/request/", STEP_TIMEOUT);

        // The first holder dies: one request left, still connected.
        first.stop();
        loop {
            let value = next_property_value(&mut holders, "io.telaf.sim.le_data", "Holders").await;
            if u32::try_from(value).unwrap() == 1 {
                break;
            }
        }
        assert_eq!(
            data.get_technology().await.unwrap(),
            le_data::Technology::CELLULAR.to_wire()
        );
        let (result, year, _, _) = data.get_date().await.unwrap();
        assert_eq!(result, ok());
        assert!(year >= 2024, "{year}");

        // The last holder dies: the connection drops.
        second.stop();
        assert_eq!(next_state(&mut states).await, ("rmnet_data0".into(), false));
        assert_eq!(
            data.get_technology().await.unwrap(),
            le_data::Technology::MAX.to_wire()
        );

        // Request and Release of our own; someone else's request is refused.
        let request = data.request().await.unwrap();
        assert_eq!(next_state(&mut states).await, ("rmnet_data0".into(), true));
        assert_eq!(data.add_route("10.0.0.1").await.unwrap(), ok());
        assert_eq!(
            data.add_route("not-an-address").await.unwrap(),
            LeResult::BadParameter.to_wire()
        );
        let stranger = bus.connect().await;
        let stranger_data = LeDataProxy::builder(&stranger)
            .destination(DATA)
            .build()
            .await
            .unwrap();
        let (name, _) = expect_error(stranger_data.release(&request).await);
        assert_eq!(name, "org.freedesktop.DBus.Error.InvalidArgs");
        data.release(&request).await.unwrap();
        assert_eq!(next_state(&mut states).await, ("rmnet_data0".into(), false));
    });
    // busctl: one client that requests and leaves.
    let out = bus
        .busctl([
            "call",
            DATA,
            "/io/telaf/le_data",
            "io.telaf.le_data",
            "Request",
        ])
        .assert_success();
    assert!(
        out.stdout.starts_with("o \"/io/telaf/le_data/request/"),
        "{out}"
    );
    bus.assert_alive();
}

/// `io.telaf.sim.le_pm.Awake`, read afresh.
async fn awake(conn: &Connection) -> bool {
    let reply = conn
        .call_method(
            Some(PM),
            "/io/telaf/le_pm",
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &("io.telaf.sim.le_pm", "Awake"),
        )
        .await
        .unwrap();
    bool::try_from(reply.body().deserialize::<OwnedVariant>().unwrap()).unwrap()
}

/// `io.telaf.sim.le_pm.WakeupSources` as busctl prints it.
fn wakeup_sources(bus: &TestBus) -> String {
    let out = bus
        .busctl([
            "get-property",
            PM,
            "/io/telaf/le_pm",
            "io.telaf.sim.le_pm",
            "WakeupSources",
        ])
        .assert_success();
    out.stdout.trim().to_string()
}

#[test]
fn le_pm_wakeup_source_is_released_when_its_holder_is_killed() {
    let bus = bus_with_services();
    run(async {
        let watcher = bus.connect().await;
        let pm = LePmProxy::builder(&watcher)
            .destination(PM)
            .build()
            .await
            .unwrap();
        let mut changes = property_changes(&watcher, "/io/telaf/le_pm").await;
        assert!(!awake(&watcher).await);

        let holder = example(&bus, "telaf-hold", &["pm", "demo"]);
        holder.wait_for_text("holding /io/telaf/le_pm/wakeup/", STEP_TIMEOUT);
        let sources = wakeup_sources(&bus);
        assert!(
            sources.starts_with("a(ossu) 1 \"/io/telaf/le_pm/wakeup/"),
            "{sources}"
        );
        // (path, tag, holder, holds)
        assert!(
            sources.contains(" \"demo\" \":1.") && sources.ends_with("\" 1"),
            "{sources}"
        );
        assert!(awake(&watcher).await);

        holder.stop(); // SIGKILL
        loop {
            let value = next_property_value(&mut changes, "io.telaf.sim.le_pm", "Awake").await;
            if !bool::try_from(value).unwrap() {
                break;
            }
        }
        assert_eq!(wakeup_sources(&bus), "a(ossu) 0");

        // Our own source: counted holds; others cannot touch it; arguments are checked.
        let source = pm
            .new_wakeup_source(le_pm::REF_COUNT as u32, "mine")
            .await
            .unwrap();
        assert_eq!(pm.stay_awake(&source).await.unwrap(), ok());
        assert_eq!(pm.stay_awake(&source).await.unwrap(), ok());
        let stranger = bus.connect().await;
        let stranger_pm = LePmProxy::builder(&stranger)
            .destination(PM)
            .build()
            .await
            .unwrap();
        assert_eq!(
            stranger_pm.relax(&source).await.unwrap(),
            LeResult::NotFound.to_wire()
        );
        assert_eq!(pm.relax(&source).await.unwrap(), ok());
        assert!(awake(&watcher).await);
        assert_eq!(pm.relax(&source).await.unwrap(), ok());
        assert!(!awake(&watcher).await);
        let (name, message) = expect_error(pm.new_wakeup_source(0, &"t".repeat(32)).await);
        assert_eq!(name, "org.freedesktop.DBus.Error.InvalidArgs");
        assert!(message.contains("wsTag"), "{message}");
        let (name, _) = expect_error(pm.new_wakeup_source(2, "x").await);
        assert_eq!(name, "org.freedesktop.DBus.Error.InvalidArgs");
    });
    bus.assert_alive();
}

#[test]
fn a_service_stops_cleanly_on_sigterm_and_when_the_bus_goes_away() {
    let bus = TestBus::start();
    let start = || {
        let mut command = bus.command(release_program("telbus-le-info"));
        command.arg(format!("--address={}", bus.address()));
        Background::spawn(command)
    };
    let mut service = start();
    bus.wait_for_owner(INFO, STEP_TIMEOUT);

    // A second instance cannot take the name, and says so.
    let mut second = start();
    let status = second
        .wait_exit(STEP_TIMEOUT)
        .expect("the second instance exits");
    assert_eq!(status.code(), Some(1));
    assert!(
        second.stderr().contains("owned by another connection"),
        "{}",
        second.stderr()
    );

    // SIGTERM: the name is released and the exit status is 0.
    unsafe { libc::kill(service.pid() as libc::pid_t, libc::SIGTERM) };
    let status = service.wait_exit(STEP_TIMEOUT).expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", service.stderr());
    assert!(service.stderr().contains("SIGTERM: shutting down"));
    let out = bus
        .busctl([
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "NameHasOwner",
            "s",
            INFO,
        ])
        .assert_success();
    assert_eq!(out.stdout.trim(), "b false");

    // The bus goes away: the service follows, with status 0.
    let mut service = start();
    bus.wait_for_owner(INFO, STEP_TIMEOUT);
    drop(bus);
    let status = service
        .wait_exit(Duration::from_secs(10))
        .expect("exits with the bus");
    assert!(status.success(), "{status:?}\n{}", service.stderr());
    assert!(service.stderr().contains("the bus went away"));
}
