//! References bound to client lifetimes (io.telaf.Broker1.AddReference/RemoveReference): the
//! bus refuses other connections' calls on a client's references, and when the client goes
//! (even killed with SIGKILL) each service holding its references gets one ClientGone listing
//! them. telbusd only.

use std::time::Duration;

use futures::StreamExt;
use telbus_dbus_tests::{
    STEP_TIMEOUT, TelafBus, TestObject, expect_error, next_signal, run, within,
};
use zbus::Connection;
use zbus::wire::OwnedObjectPath;

const CLIENT: &str = env!("CARGO_BIN_EXE_telaf-client");
const SYSTEM: &str = "app modem {\n    match exe=*/modem-a\n    provides le_mcc protocol=1\n}\n";
const BAD_REFERENCE: &str = "io.telaf.Error.BadReference";

async fn broker(
    conn: &Connection,
    member: &str,
    body: &(impl serde::Serialize + zbus::wire::DynamicType),
) -> zbus::Result<zbus::Message> {
    within(
        STEP_TIMEOUT,
        member,
        conn.call_method(
            Some("org.freedesktop.DBus"),
            "/io/telaf/Broker1",
            Some("io.telaf.Broker1"),
            member,
            body,
        ),
    )
    .await
}

async fn ping(conn: &Connection, dest: &str, path: &str) -> zbus::Result<zbus::Message> {
    within(
        STEP_TIMEOUT,
        "Ping",
        conn.call_method(
            Some(dest),
            path,
            Some("org.freedesktop.DBus.Peer"),
            "Ping",
            &(),
        ),
    )
    .await
}

fn path(p: &str) -> OwnedObjectPath {
    OwnedObjectPath::try_from(p).unwrap()
}

#[test]
fn another_clients_reference_is_refused() {
    let t = TelafBus::start(SYSTEM, CLIENT);
    run(async {
        let service = t.bus.connect().await;
        let me = service.unique_name().unwrap().to_string();
        for p in [
            "/io/telaf/le_mcc/Call/1",
            "/io/telaf/le_mcc/Call/2",
            "/io/telaf/le_mcc/Call/3",
        ] {
            service
                .object_server()
                .at(p, TestObject::default())
                .await
                .unwrap();
        }
        let a = t.bus.connect().await;
        let b = t.bus.connect().await;
        let a_name = a.unique_name().unwrap().to_string();
        broker(
            &service,
            "AddReference",
            &(a_name.as_str(), path("/io/telaf/le_mcc/Call/1"), false),
        )
        .await
        .expect("AddReference");
        broker(
            &service,
            "AddReference",
            &(a_name.as_str(), path("/io/telaf/le_mcc/Call/2"), true),
        )
        .await
        .expect("shared");
        ping(&a, &me, "/io/telaf/le_mcc/Call/1")
            .await
            .expect("the owner may call its reference");
        let (name, text) = expect_error(ping(&b, &me, "/io/telaf/le_mcc/Call/1").await);
        assert_eq!(name, "org.freedesktop.DBus.Error.AccessDenied");
        assert_eq!(
            text,
            format!(
                "/io/telaf/le_mcc/Call/1 is a reference of {me} held by {a_name}: {} may not call it",
                b.unique_name().unwrap()
            )
        );
        ping(&b, &me, "/io/telaf/le_mcc/Call/2")
            .await
            .expect("a shared reference is for everyone");
        ping(&b, &me, "/io/telaf/le_mcc/Call/3")
            .await
            .expect("a path that is no reference is for everyone");
        // Registered once only, even after it is removed: paths are never reused.
        let again = expect_error(
            broker(
                &service,
                "AddReference",
                &(a_name.as_str(), path("/io/telaf/le_mcc/Call/1"), false),
            )
            .await,
        );
        assert_eq!(again.0, BAD_REFERENCE);
        broker(
            &service,
            "RemoveReference",
            &(path("/io/telaf/le_mcc/Call/1"),),
        )
        .await
        .expect("RemoveReference");
        ping(&b, &me, "/io/telaf/le_mcc/Call/1")
            .await
            .expect("no longer a reference");
        let reused = expect_error(
            broker(
                &service,
                "AddReference",
                &(a_name.as_str(), path("/io/telaf/le_mcc/Call/1"), false),
            )
            .await,
        );
        assert!(reused.1.contains("never reused"), "{reused:?}");
        let unknown = expect_error(
            broker(
                &service,
                "RemoveReference",
                &(path("/io/telaf/le_mcc/Call/9"),),
            )
            .await,
        );
        assert_eq!(unknown.0, BAD_REFERENCE);
        let nobody = expect_error(
            broker(
                &service,
                "AddReference",
                &(":1.9999", path("/io/telaf/le_mcc/Call/4"), false),
            )
            .await,
        );
        assert_eq!(nobody.0, BAD_REFERENCE);
    });
}

#[test]
fn references_are_released_when_their_client_is_killed() {
    let t = TelafBus::start(SYSTEM, CLIENT);
    let client = t.spawn("client-x", &["hold"]);
    let out = client.wait_for_text("holding", Duration::from_secs(10));
    let victim = out
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("unique ")
        .to_string();
    run(async {
        let service = t.bus.connect().await;
        let other_service = t.bus.connect().await;
        let bystander = t.bus.connect().await;
        let bystander_name = bystander.unique_name().unwrap().to_string();
        let rule = "type='signal',sender='org.freedesktop.DBus',interface='io.telaf.Broker1',member='ClientGone'";
        let mut streams = Vec::new();
        for s in [&service, &other_service] {
            let stream = zbus::MessageStream::from(s);
            s.call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus"),
                "AddMatch",
                &(rule,),
            )
            .await
            .unwrap();
            streams.push(stream);
        }
        for p in [
            "/io/telaf/le_mcc/Call/7",
            "/io/telaf/le_mcc/handler/CallEvent/8",
        ] {
            broker(&service, "AddReference", &(victim.as_str(), path(p), false))
                .await
                .unwrap();
        }
        broker(
            &service,
            "AddReference",
            &(victim.as_str(), path("/io/telaf/le_mcc/Call/9"), false),
        )
        .await
        .unwrap();
        broker(
            &service,
            "RemoveReference",
            &(path("/io/telaf/le_mcc/Call/9"),),
        )
        .await
        .unwrap();
        broker(
            &service,
            "AddReference",
            &(
                bystander_name.as_str(),
                path("/io/telaf/le_mcc/Call/10"),
                false,
            ),
        )
        .await
        .unwrap();
        broker(
            &other_service,
            "AddReference",
            &(victim.as_str(), path("/io/telaf/le_sms/Msg/1"), false),
        )
        .await
        .unwrap();

        let (_, _) = client.stop(); // SIGKILL
        let gone = next_signal(&mut streams[0], |m| {
            m.header().member().is_some_and(|m| m == "ClientGone")
        })
        .await;
        let header = gone.header();
        assert_eq!(header.sender().unwrap().as_str(), "org.freedesktop.DBus");
        assert_eq!(
            header.destination().unwrap().as_str(),
            service.unique_name().unwrap().as_str()
        );
        assert_eq!(header.path().unwrap().as_str(), "/io/telaf/Broker1");
        let (who, paths): (String, Vec<OwnedObjectPath>) = gone.body().deserialize().unwrap();
        assert_eq!(who, victim);
        let paths: Vec<&str> = paths.iter().map(|p| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/io/telaf/le_mcc/Call/7",
                "/io/telaf/le_mcc/handler/CallEvent/8"
            ]
        );
        let gone = next_signal(&mut streams[1], |m| {
            m.header().member().is_some_and(|m| m == "ClientGone")
        })
        .await;
        let (who, paths): (String, Vec<OwnedObjectPath>) = gone.body().deserialize().unwrap();
        assert_eq!((who.as_str(), paths.len()), (victim.as_str(), 1));
        assert_eq!(paths[0].as_str(), "/io/telaf/le_sms/Msg/1");

        // Only the bystander's reference is left; a second ClientGone never comes.
        let refs = broker(&service, "References", &()).await.unwrap();
        let text: String = refs.body().deserialize().unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let clients = json["clients"].as_array().unwrap();
        assert_eq!(clients.len(), 1, "{json}");
        assert_eq!(clients[0]["client"], bystander_name.as_str());
        assert_eq!(
            clients[0]["references"][0]["path"],
            "/io/telaf/le_mcc/Call/10"
        );
        // A Ping round trip through the bus orders after anything it would have sent.
        service
            .call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus.Peer"),
                "Ping",
                &(),
            )
            .await
            .unwrap();
        let mut extra = 0;
        while let Some(Some(Ok(m))) = futures::FutureExt::now_or_never(streams[0].next()) {
            if m.header().member().is_some_and(|m| m == "ClientGone") {
                extra += 1;
            }
        }
        assert_eq!(extra, 0, "ClientGone is sent once");
    });
}
