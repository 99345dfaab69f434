//! Bus names: RequestName with every flag, the queue of owners, ReleaseName, the
//! NameOwnerChanged / NameLost / NameAcquired signals and their order, and the name queries.

use futures::StreamExt;
use telbus_dbus_tests::{
    DRIVER_NAME, STEP_TIMEOUT, TestBus, add_match, call_driver, expect_error, run, within,
};
use zbus::message::Type;
use zbus::{Connection, Message, MessageStream};

const NAME: &str = "org.telbus.NamesTest";

// RequestName flags and replies, as numbers on the wire.
const ALLOW_REPLACEMENT: u32 = 1;
const REPLACE_EXISTING: u32 = 2;
const DO_NOT_QUEUE: u32 = 4;
const PRIMARY_OWNER: u32 = 1;
const IN_QUEUE: u32 = 2;
const EXISTS: u32 = 3;
const ALREADY_OWNER: u32 = 4;
// ReleaseName replies.
const RELEASED: u32 = 1;
const NON_EXISTENT: u32 = 2;
const NOT_OWNER: u32 = 3;

/// A connection, its unique name, and everything the driver sends it from now on.
struct Peer {
    connection: Connection,
    unique: String,
    inbox: MessageStream,
}

impl Peer {
    /// Connects and subscribes to NameOwnerChanged for [`NAME`].
    async fn join(bus: &TestBus) -> Peer {
        let connection = bus.connect().await;
        let rule =
            format!("type='signal',sender='{DRIVER_NAME}',member='NameOwnerChanged',arg0='{NAME}'");
        add_match(&connection, &rule).await.unwrap();
        let inbox = MessageStream::from(&connection);
        let unique = connection.unique_name().unwrap().to_string();
        Peer {
            connection,
            unique,
            inbox,
        }
    }

    async fn request(&self, flags: u32) -> u32 {
        let reply = call_driver(&self.connection, "RequestName", &(NAME, flags))
            .await
            .expect("RequestName");
        reply.body().deserialize().unwrap()
    }

    async fn release(&self, name: &str) -> u32 {
        let reply = call_driver(&self.connection, "ReleaseName", &(name,))
            .await
            .expect("ReleaseName");
        reply.body().deserialize().unwrap()
    }

    /// The next `count` messages from the driver, written as `NameOwnerChanged(name,old,new)`,
    /// `NameAcquired(name)`, `NameLost(name)` or `reply(u)`. NameAcquired and NameLost of the
    /// unique name are skipped (the first may come after the stream was made, or not).
    async fn events(&mut self, count: usize) -> Vec<String> {
        let mut events = Vec::new();
        within(STEP_TIMEOUT, "driver messages", async {
            while events.len() < count {
                let message = self.inbox.next().await.unwrap().unwrap();
                if let Some(event) = describe(&message) {
                    events.push(event);
                }
            }
        })
        .await;
        events
    }
}

fn describe(message: &Message) -> Option<String> {
    let header = message.header();
    if header.sender().is_none_or(|s| s != DRIVER_NAME) {
        return None;
    }
    let body = message.body();
    match message.message_type() {
        Type::MethodReturn => Some(match body.deserialize::<u32>() {
            Ok(value) => format!("reply({value})"),
            Err(_) => "reply".to_string(),
        }),
        Type::Signal => match header.member()?.as_str() {
            "NameOwnerChanged" => {
                let (name, old, new): (String, String, String) = body.deserialize().unwrap();
                Some(format!("NameOwnerChanged({name},{old},{new})"))
            }
            member @ ("NameAcquired" | "NameLost") => {
                let name: String = body.deserialize().unwrap();
                (!name.starts_with(':')).then(|| format!("{member}({name})"))
            }
            _ => None,
        },
        _ => None,
    }
}

async fn owner(connection: &Connection) -> zbus::Result<String> {
    let reply = call_driver(connection, "GetNameOwner", &(NAME,)).await?;
    Ok(reply.body().deserialize().unwrap())
}

async fn queue(connection: &Connection) -> Vec<String> {
    let reply = call_driver(connection, "ListQueuedOwners", &(NAME,))
        .await
        .expect("ListQueuedOwners");
    reply.body().deserialize().unwrap()
}

#[test]
fn request_name_signals_come_before_the_reply() {
    let bus = TestBus::start();
    run(async {
        let mut a = Peer::join(&bus).await;
        assert_eq!(a.request(0).await, PRIMARY_OWNER);
        assert_eq!(
            a.events(3).await,
            [
                format!("NameOwnerChanged({NAME},,{})", a.unique),
                format!("NameAcquired({NAME})"),
                "reply(1)".to_string(),
            ]
        );
        // Again: already the owner, and nothing changes, so no signal before the reply.
        assert_eq!(a.request(0).await, ALREADY_OWNER);
        assert_eq!(a.events(1).await, ["reply(4)"]);
        assert_eq!(owner(&a.connection).await.unwrap(), a.unique);
    });
    bus.assert_alive();
}

#[test]
fn queued_owners_take_over_in_order_on_release() {
    let bus = TestBus::start();
    run(async {
        let mut a = Peer::join(&bus).await;
        let mut b = Peer::join(&bus).await;
        let c = Peer::join(&bus).await;
        assert_eq!(a.request(0).await, PRIMARY_OWNER);
        assert_eq!(b.request(0).await, IN_QUEUE);
        assert_eq!(c.request(DO_NOT_QUEUE).await, EXISTS);
        assert_eq!(
            queue(&c.connection).await,
            [a.unique.clone(), b.unique.clone()]
        );
        a.events(3).await;
        b.events(2).await; // NameOwnerChanged for a, then its own reply(2)

        assert_eq!(a.release(NAME).await, RELEASED);
        let handover = format!("NameOwnerChanged({NAME},{},{})", a.unique, b.unique);
        assert_eq!(
            a.events(3).await,
            [
                format!("NameLost({NAME})"),
                handover.clone(),
                "reply(1)".to_string()
            ]
        );
        assert_eq!(
            b.events(2).await,
            [handover, format!("NameAcquired({NAME})")]
        );
        assert_eq!(owner(&c.connection).await.unwrap(), b.unique);
        assert_eq!(queue(&c.connection).await, vec![b.unique.clone()]);

        // Releasing what one does not own, or what nobody owns.
        assert_eq!(a.release(NAME).await, NOT_OWNER);
        assert_eq!(
            a.release("org.telbus.NamesTest.Unowned").await,
            NON_EXISTENT
        );

        assert_eq!(b.release(NAME).await, RELEASED);
        let (error, message) = expect_error(owner(&c.connection).await);
        assert_eq!(error, "org.freedesktop.DBus.Error.NameHasNoOwner");
        assert_eq!(
            message,
            format!("Could not get owner of name '{NAME}': no such name")
        );
        let (error, _) =
            expect_error(call_driver(&c.connection, "ListQueuedOwners", &(NAME,)).await);
        assert_eq!(error, "org.freedesktop.DBus.Error.NameHasNoOwner");
    });
    bus.assert_alive();
}

#[test]
fn replace_existing_takes_a_name_that_allows_replacement() {
    let bus = TestBus::start();
    run(async {
        let mut a = Peer::join(&bus).await;
        let mut b = Peer::join(&bus).await;
        assert_eq!(a.request(ALLOW_REPLACEMENT).await, PRIMARY_OWNER);
        a.events(3).await;
        b.events(1).await;

        assert_eq!(b.request(REPLACE_EXISTING).await, PRIMARY_OWNER);
        let handover = format!("NameOwnerChanged({NAME},{},{})", a.unique, b.unique);
        assert_eq!(
            a.events(2).await,
            [format!("NameLost({NAME})"), handover.clone()]
        );
        assert_eq!(
            b.events(3).await,
            [
                handover,
                format!("NameAcquired({NAME})"),
                "reply(1)".to_string()
            ]
        );
        // The replaced owner did not ask not to queue, so it waits next in line.
        assert_eq!(
            queue(&b.connection).await,
            [b.unique.clone(), a.unique.clone()]
        );

        // b did not allow replacement: a third connection only queues, or is refused. Asking
        // to replace still puts it at the head of the queue, right after the owner.
        let c = Peer::join(&bus).await;
        assert_eq!(c.request(REPLACE_EXISTING).await, IN_QUEUE);
        let d = Peer::join(&bus).await;
        assert_eq!(d.request(REPLACE_EXISTING | DO_NOT_QUEUE).await, EXISTS);
        assert_eq!(d.request(0).await, IN_QUEUE);
        assert_eq!(
            queue(&d.connection).await,
            [
                b.unique.clone(),
                c.unique.clone(),
                a.unique.clone(),
                d.unique.clone()
            ]
        );
    });
    bus.assert_alive();
}

#[test]
fn a_replaced_owner_that_did_not_queue_loses_the_name_entirely() {
    let bus = TestBus::start();
    run(async {
        let a = Peer::join(&bus).await;
        let b = Peer::join(&bus).await;
        assert_eq!(
            a.request(ALLOW_REPLACEMENT | DO_NOT_QUEUE).await,
            PRIMARY_OWNER
        );
        assert_eq!(b.request(REPLACE_EXISTING).await, PRIMARY_OWNER);
        assert_eq!(queue(&b.connection).await, vec![b.unique.clone()]);
        // And a's flags count only for its own request: b now holds the name without
        // ALLOW_REPLACEMENT, so a cannot take it back.
        assert_eq!(a.request(REPLACE_EXISTING | DO_NOT_QUEUE).await, EXISTS);
        // Re-requesting updates the owner's flags: with ALLOW_REPLACEMENT now, a can take it.
        assert_eq!(b.request(ALLOW_REPLACEMENT).await, ALREADY_OWNER);
        assert_eq!(a.request(REPLACE_EXISTING).await, PRIMARY_OWNER);
        assert_eq!(owner(&b.connection).await.unwrap(), a.unique);
    });
    bus.assert_alive();
}

#[test]
fn an_owner_that_disconnects_hands_the_name_to_the_queue() {
    let bus = TestBus::start();
    run(async {
        let a = Peer::join(&bus).await;
        let mut b = Peer::join(&bus).await;
        let mut observer = Peer::join(&bus).await;
        assert_eq!(a.request(0).await, PRIMARY_OWNER);
        assert_eq!(b.request(0).await, IN_QUEUE);
        b.events(2).await;
        observer.events(1).await;

        let gone = a.unique.clone();
        a.connection.close().await.unwrap();
        let handover = format!("NameOwnerChanged({NAME},{gone},{})", b.unique);
        assert_eq!(
            b.events(2).await,
            [handover.clone(), format!("NameAcquired({NAME})")]
        );
        assert_eq!(observer.events(1).await, [handover]);
        assert_eq!(owner(&observer.connection).await.unwrap(), b.unique);
    });
    bus.assert_alive();
}

#[test]
fn name_queries_follow_owners() {
    let bus = TestBus::start();
    run(async {
        let a = Peer::join(&bus).await;
        let mut observer = bus.connect().await;
        let has_owner = |connection: &Connection, name: String| {
            let connection = connection.clone();
            async move {
                let reply = call_driver(&connection, "NameHasOwner", &(name,))
                    .await
                    .unwrap();
                reply.body().deserialize::<bool>().unwrap()
            }
        };
        let list_names = |connection: &Connection| {
            let connection = connection.clone();
            async move {
                let reply = call_driver(&connection, "ListNames", &()).await.unwrap();
                reply.body().deserialize::<Vec<String>>().unwrap()
            }
        };
        assert!(!has_owner(&observer, NAME.into()).await);
        assert_eq!(a.request(0).await, PRIMARY_OWNER);
        assert!(has_owner(&observer, NAME.into()).await);
        assert!(has_owner(&observer, a.unique.clone()).await);
        assert!(has_owner(&observer, DRIVER_NAME.into()).await);
        let names = list_names(&observer).await;
        for name in [
            DRIVER_NAME,
            NAME,
            &a.unique,
            observer.unique_name().unwrap().as_str(),
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        // A unique name is its own owner.
        let reply = call_driver(&observer, "GetNameOwner", &(a.unique.as_str(),))
            .await
            .unwrap();
        assert_eq!(reply.body().deserialize::<String>().unwrap(), a.unique);
        let reply = call_driver(&observer, "GetNameOwner", &(DRIVER_NAME,))
            .await
            .unwrap();
        assert_eq!(reply.body().deserialize::<String>().unwrap(), DRIVER_NAME);

        // Once a is gone, so are its names.
        let mut inbox = MessageStream::from(&observer);
        let rule = format!(
            "type='signal',member='NameOwnerChanged',arg0='{}'",
            a.unique
        );
        add_match(&observer, &rule).await.unwrap();
        let gone = a.unique.clone();
        a.connection.close().await.unwrap();
        telbus_dbus_tests::next_signal(&mut inbox, |m| {
            m.body()
                .deserialize::<(String, String, String)>()
                .is_ok_and(|(name, old, new)| name == gone && old == gone && new.is_empty())
        })
        .await;
        assert!(!has_owner(&observer, NAME.into()).await);
        assert!(!has_owner(&observer, gone.clone()).await);
        let names = list_names(&observer).await;
        assert!(
            !names.contains(&gone) && !names.iter().any(|n| n == NAME),
            "{names:?}"
        );
        observer = bus.connect().await;
        assert!(!list_names(&observer).await.contains(&gone));
    });
    bus.assert_alive();
}

#[test]
fn unique_names_are_distinct_and_not_reused() {
    let bus = TestBus::start();
    run(async {
        let mut seen = Vec::new();
        for _ in 0..5 {
            let connection = bus.connect().await;
            let unique = connection.unique_name().unwrap().to_string();
            assert!(unique.starts_with(":1."), "{unique}");
            assert!(!seen.contains(&unique), "{unique} reused: {seen:?}");
            seen.push(unique);
            connection.close().await.unwrap();
        }
        // Hello a second time is refused.
        let connection = bus.connect().await;
        let (error, message) = expect_error(call_driver(&connection, "Hello", &()).await);
        assert_eq!(error, "org.freedesktop.DBus.Error.Failed");
        assert_eq!(message, "Already handled an Hello message");
    });
    bus.assert_alive();
}

#[test]
fn invalid_and_reserved_names_are_refused() {
    let bus = TestBus::start();
    run(async {
        let connection = bus.connect().await;
        let request = |name: &'static str| {
            let connection = connection.clone();
            async move { call_driver(&connection, "RequestName", &(name, 0u32)).await }
        };
        assert_eq!(
            expect_error(request("nodots").await),
            (
                "org.freedesktop.DBus.Error.InvalidArgs".to_string(),
                "Requested bus name \"nodots\" is not valid".to_string()
            )
        );
        assert_eq!(
            expect_error(request(":1.99").await),
            (
                "org.freedesktop.DBus.Error.InvalidArgs".to_string(),
                "Cannot acquire a service starting with ':' such as \":1.99\"".to_string()
            )
        );
        assert_eq!(
            expect_error(request(DRIVER_NAME).await).0,
            "org.freedesktop.DBus.Error.InvalidArgs"
        );
        let release = call_driver(&connection, "ReleaseName", &(DRIVER_NAME,)).await;
        assert_eq!(
            expect_error(release),
            (
                "org.freedesktop.DBus.Error.InvalidArgs".to_string(),
                "Cannot release the org.freedesktop.DBus service because it is owned by the bus"
                    .to_string()
            )
        );
    });
    bus.assert_alive();
}
