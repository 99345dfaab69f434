//! The bus driver's own interfaces: its properties, Peer, Introspectable, GetId, ReloadConfig
//! and ListActivatableNames.

use telbus_dbus_tests::{
    DRIVER_INTERFACE, DRIVER_NAME, DRIVER_PATH, TestBus, call_driver, driver_proxy, expect_error,
    run,
};
use zbus::{Connection, Message, OwnedVariant};
use zbus_xml::Node;

/// Calls `interface.method` on the driver object.
async fn call(
    connection: &Connection,
    interface: &str,
    method: &str,
    body: &(impl serde::Serialize + zbus::DynamicType),
) -> zbus::Result<Message> {
    connection
        .call_method(
            Some(DRIVER_NAME),
            DRIVER_PATH,
            Some(interface),
            method,
            body,
        )
        .await
}

/// What dbus-daemon 1.14 advertises (Debian 12's build).
const FEATURES: [&str; 2] = ["ActivatableServicesChanged", "HeaderFiltering"];
const INTERFACES: [&str; 2] = [
    "org.freedesktop.DBus.Monitoring",
    "org.freedesktop.DBus.Debug.Stats",
];

#[test]
fn features_and_interfaces_properties() {
    let bus = TestBus::start();
    run(async {
        let connection = bus.connect().await;
        let driver = driver_proxy(&connection).await;
        assert_eq!(driver.features().await.unwrap(), FEATURES);
        let interfaces: Vec<String> = driver
            .interfaces()
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.to_string())
            .collect();
        assert_eq!(interfaces, INTERFACES);

        // GetAll has both, and only those.
        let reply = call(
            &connection,
            "org.freedesktop.DBus.Properties",
            "GetAll",
            &(DRIVER_INTERFACE,),
        )
        .await
        .unwrap();
        let all: std::collections::HashMap<String, OwnedVariant> =
            reply.body().deserialize().unwrap();
        let mut keys: Vec<&str> = all.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["Features", "Interfaces"]);

        // They are read-only, and there are no others.
        let set = call(
            &connection,
            "org.freedesktop.DBus.Properties",
            "Set",
            &(DRIVER_INTERFACE, "Features", zbus::Variant::from(vec!["x"])),
        )
        .await;
        assert_eq!(
            expect_error(set),
            (
                "org.freedesktop.DBus.Error.PropertyReadOnly".to_string(),
                "Property 'org.freedesktop.DBus.Features' cannot be set".to_string()
            )
        );
        let get = call(
            &connection,
            "org.freedesktop.DBus.Properties",
            "Get",
            &(DRIVER_INTERFACE, "Nope"),
        )
        .await;
        assert_eq!(
            expect_error(get),
            (
                "org.freedesktop.DBus.Error.UnknownProperty".to_string(),
                "Property \"org.freedesktop.DBus.Nope\" not found".to_string()
            )
        );
    });
    bus.assert_alive();
}

#[test]
fn peer_ping_and_machine_id() {
    let bus = TestBus::start();
    run(async {
        let connection = bus.connect().await;
        let reply = call(&connection, "org.freedesktop.DBus.Peer", "Ping", &())
            .await
            .unwrap();
        assert_eq!(reply.body().signature().to_string(), "");
        let reply = call(
            &connection,
            "org.freedesktop.DBus.Peer",
            "GetMachineId",
            &(),
        )
        .await
        .unwrap();
        let machine_id: String = reply.body().deserialize().unwrap();
        let expected = ["/var/lib/dbus/machine-id", "/etc/machine-id"]
            .iter()
            .find_map(|path| std::fs::read_to_string(path).ok())
            .expect("a machine id file");
        assert_eq!(machine_id, expected.trim());
    });
    bus.assert_alive();
}

#[test]
fn introspection_lists_the_whole_driver() {
    let bus = TestBus::start();
    run(async {
        let connection = bus.connect().await;
        let reply = call(
            &connection,
            "org.freedesktop.DBus.Introspectable",
            "Introspect",
            &(),
        )
        .await
        .unwrap();
        let xml: String = reply.body().deserialize().unwrap();
        let node = Node::from_reader(xml.as_bytes()).expect("introspection XML parses");
        let interface = |name: &str| {
            node.interfaces()
                .iter()
                .find(|i| i.name() == name)
                .unwrap_or_else(|| panic!("{name} in the introspection"))
        };
        let driver = interface(DRIVER_INTERFACE);
        let signature = |method: &str| {
            let method = driver
                .methods()
                .find(|m| m.name() == method)
                .unwrap_or_else(|| panic!("method {method}"));
            let args = |dir| {
                method
                    .args()
                    .iter()
                    .filter(|a| a.direction() == Some(dir))
                    .map(|a| a.ty().to_string())
                    .collect::<String>()
            };
            (
                args(zbus_xml::ArgDirection::In),
                args(zbus_xml::ArgDirection::Out),
            )
        };
        for (method, ins, outs) in [
            ("Hello", "", "s"),
            ("RequestName", "su", "u"),
            ("ReleaseName", "s", "u"),
            ("StartServiceByName", "su", "u"),
            ("UpdateActivationEnvironment", "a{ss}", ""),
            ("NameHasOwner", "s", "b"),
            ("ListNames", "", "as"),
            ("ListActivatableNames", "", "as"),
            ("AddMatch", "s", ""),
            ("RemoveMatch", "s", ""),
            ("GetNameOwner", "s", "s"),
            ("ListQueuedOwners", "s", "as"),
            ("GetConnectionUnixUser", "s", "u"),
            ("GetConnectionUnixProcessID", "s", "u"),
            ("GetAdtAuditSessionData", "s", "ay"),
            ("GetConnectionSELinuxSecurityContext", "s", "ay"),
            ("ReloadConfig", "", ""),
            ("GetId", "", "s"),
            ("GetConnectionCredentials", "s", "a{sv}"),
        ] {
            assert_eq!(
                signature(method),
                (ins.to_string(), outs.to_string()),
                "{method}"
            );
        }
        let signals: Vec<String> = driver.signals().map(|s| s.name().to_string()).collect();
        for signal in ["NameOwnerChanged", "NameLost", "NameAcquired"] {
            assert!(
                signals.iter().any(|s| s == signal),
                "{signal} in {signals:?}"
            );
        }
        let properties: Vec<String> = driver.properties().map(|p| p.name().to_string()).collect();
        assert_eq!(properties, ["Features", "Interfaces"]);

        // The standard interfaces, and every one the Interfaces property claims.
        interface("org.freedesktop.DBus.Introspectable");
        interface("org.freedesktop.DBus.Peer");
        interface("org.freedesktop.DBus.Properties");
        for extra in driver_proxy(&connection).await.interfaces().await.unwrap() {
            interface(extra.as_str());
        }
    });
    bus.assert_alive();
}

#[test]
fn bus_id_is_stable_and_hexadecimal() {
    let bus = TestBus::start();
    run(async {
        let first = driver_proxy(&bus.connect().await)
            .await
            .get_id()
            .await
            .unwrap()
            .to_string();
        let second = driver_proxy(&bus.connect().await)
            .await
            .get_id()
            .await
            .unwrap()
            .to_string();
        assert_eq!(first, second);
        assert!(
            first.len() == 32 && first.bytes().all(|b| b.is_ascii_hexdigit()),
            "{first}"
        );
        // Another bus has another ID.
        let other = TestBus::start();
        let third = driver_proxy(&other.connect().await)
            .await
            .get_id()
            .await
            .unwrap()
            .to_string();
        assert_ne!(first, third);
    });
    bus.assert_alive();
}

#[test]
fn activatable_names_and_reload() {
    const ACTIVATABLE: &str = "org.telbus.DriverTest.Activatable";
    let bus = TestBus::builder()
        .activatable(ACTIVATABLE, "/bin/false")
        .start();
    run(async {
        let connection = bus.connect().await;
        let list = |connection: Connection| async move {
            let reply = call_driver(&connection, "ListActivatableNames", &())
                .await
                .unwrap();
            let mut names: Vec<String> = reply.body().deserialize().unwrap();
            names.sort();
            names
        };
        assert_eq!(list(connection.clone()).await, [DRIVER_NAME, ACTIVATABLE]);

        // A new .service file counts after ReloadConfig.
        let added = "org.telbus.DriverTest.Added";
        std::fs::write(
            bus.service_dir().join(format!("{added}.service")),
            format!("[D-BUS Service]\nName={added}\nExec=/bin/false\n"),
        )
        .unwrap();
        call_driver(&connection, "ReloadConfig", &()).await.unwrap();
        assert_eq!(
            list(connection.clone()).await,
            [DRIVER_NAME, ACTIVATABLE, added]
        );
        // Listing does not start anything.
        let reply = call_driver(&connection, "NameHasOwner", &(ACTIVATABLE,))
            .await
            .unwrap();
        assert!(!reply.body().deserialize::<bool>().unwrap());
    });
    bus.assert_alive();
}
