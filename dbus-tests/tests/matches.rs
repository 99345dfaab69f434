//! Match rules: AddMatch with each key, RemoveMatch, invalid rules, eavesdropping and unicast
//! signals. Each test sends signals that should and should not reach a subscriber, then a
//! "fence" signal from every sender; since the bus keeps each sender's messages in order, what
//! arrived before the fences is exactly what the subscriber's rules let through.

use futures::StreamExt;
use serde::Serialize;
use telbus_dbus_tests::{
    DRIVER_NAME, STEP_TIMEOUT, TestBus, add_match, call_driver, expect_error, run, within,
};
use zbus::message::Type;
use zbus::{Connection, DynamicType, Message, MessageStream, ObjectPath};

const FENCE_INTERFACE: &str = "org.telbus.Fence";
const INTERFACE: &str = "org.telbus.Matches";

/// One signal to send: its member names it in the results, so keep members distinct.
struct Signal {
    path: &'static str,
    interface: &'static str,
    member: &'static str,
    destination: Option<String>,
    args: Args,
}

/// Signal bodies the tests need.
enum Args {
    None,
    Str(&'static str),
    U32(u32),
    StrArray(&'static [&'static str]),
    TwoStrs(&'static str, &'static str),
    StrAndPath(&'static str, &'static str),
}

fn signal(member: &'static str) -> Signal {
    Signal {
        path: "/org/telbus/Matches",
        interface: INTERFACE,
        member,
        destination: None,
        args: Args::None,
    }
}

impl Signal {
    fn path(mut self, path: &'static str) -> Self {
        self.path = path;
        self
    }

    fn interface(mut self, interface: &'static str) -> Self {
        self.interface = interface;
        self
    }

    fn to(mut self, destination: &str) -> Self {
        self.destination = Some(destination.to_string());
        self
    }

    fn args(mut self, args: Args) -> Self {
        self.args = args;
        self
    }

    async fn send(&self, from: &Connection) {
        let message = match &self.args {
            Args::None => self.build(&()),
            Args::Str(s) => self.build(&(*s,)),
            Args::U32(u) => self.build(&(*u,)),
            Args::StrArray(strings) => self.build(&(strings.to_vec(),)),
            Args::TwoStrs(a, b) => self.build(&(*a, *b)),
            Args::StrAndPath(s, p) => self.build(&(*s, ObjectPath::try_from(*p).unwrap())),
        };
        from.send(&message).await.expect("send a signal");
    }

    fn build<B: Serialize + DynamicType>(&self, body: &B) -> Message {
        let mut builder = Message::signal(self.path, self.interface, self.member);
        if let Some(destination) = &self.destination {
            builder = builder.destination(destination.as_str());
        }
        builder.build(body).unwrap()
    }
}

/// A connection that will receive signals, with everything it receives from now on.
struct Subscriber {
    connection: Connection,
    inbox: MessageStream,
}

impl Subscriber {
    async fn new(bus: &TestBus) -> Subscriber {
        let connection = bus.connect().await;
        let inbox = MessageStream::from(&connection);
        add_match(
            &connection,
            &format!("type='signal',interface='{FENCE_INTERFACE}'"),
        )
        .await
        .unwrap();
        Subscriber { connection, inbox }
    }

    fn unique(&self) -> String {
        self.connection.unique_name().unwrap().to_string()
    }

    async fn add(&self, rule: &str) {
        add_match(&self.connection, rule)
            .await
            .unwrap_or_else(|e| panic!("AddMatch {rule:?}: {e}"));
    }

    async fn remove(&self, rule: &str) -> zbus::Result<Message> {
        call_driver(&self.connection, "RemoveMatch", &(rule,)).await
    }

    /// The members of the signals that arrived (driver signals aside) before `fences` fence
    /// signals did, sorted.
    async fn received(&mut self, fences: usize) -> Vec<String> {
        let mut members = Vec::new();
        let mut seen_fences = 0;
        within(STEP_TIMEOUT, "signals up to the fences", async {
            while seen_fences < fences {
                let message = self.inbox.next().await.unwrap().unwrap();
                let header = message.header();
                if message.message_type() != Type::Signal
                    || header.sender().is_some_and(|s| s == DRIVER_NAME)
                {
                    continue;
                }
                if header.interface().is_some_and(|i| i == FENCE_INTERFACE) {
                    seen_fences += 1;
                } else {
                    members.push(header.member().unwrap().to_string());
                }
            }
        })
        .await;
        members.sort();
        members
    }
}

/// Sends `signals` from `from`, then a fence.
async fn send_all(from: &Connection, signals: &[Signal]) {
    for signal in signals {
        signal.send(from).await;
    }
    signal("Fence").interface(FENCE_INTERFACE).send(from).await;
}

/// Subscribes with `rule`, sends `signals` from another connection, and returns the members
/// of those that got through.
async fn delivered(bus: &TestBus, rule: &str, signals: &[Signal]) -> Vec<String> {
    let mut subscriber = Subscriber::new(bus).await;
    subscriber.add(rule).await;
    let emitter = bus.connect().await;
    send_all(&emitter, signals).await;
    subscriber.received(1).await
}

#[test]
fn interface_member_and_path() {
    let bus = TestBus::start();
    run(async {
        let got = delivered(
            &bus,
            &format!("type='signal',interface='{INTERFACE}',member='Hit'"),
            &[
                signal("Hit"),
                signal("Hit").interface("org.telbus.Other"),
                signal("Miss"),
            ],
        )
        .await;
        // Only one "Hit": the other interface's did not match.
        assert_eq!(got, ["Hit"]);

        let got = delivered(
            &bus,
            "type='signal',path='/org/telbus/a'",
            &[
                signal("Exact").path("/org/telbus/a"),
                signal("Child").path("/org/telbus/a/b"),
                signal("Parent").path("/org/telbus"),
                signal("Longer").path("/org/telbus/ab"),
            ],
        )
        .await;
        assert_eq!(got, ["Exact"]);
    });
    bus.assert_alive();
}

#[test]
fn path_namespace() {
    let bus = TestBus::start();
    run(async {
        let signals = || {
            [
                signal("Itself").path("/org/telbus"),
                signal("Child").path("/org/telbus/x"),
                signal("Grandchild").path("/org/telbus/x/y"),
                signal("Sibling").path("/org/telbusx"),
                signal("Parent").path("/org"),
            ]
        };
        let got = delivered(&bus, "path_namespace='/org/telbus'", &signals()).await;
        assert_eq!(got, ["Child", "Grandchild", "Itself"]);
        // The root namespace holds every path.
        let got = delivered(&bus, "path_namespace='/'", &signals()).await;
        assert_eq!(got, ["Child", "Grandchild", "Itself", "Parent", "Sibling"]);
    });
    bus.assert_alive();
}

#[test]
fn sender_by_unique_and_well_known_name() {
    let bus = TestBus::start();
    run(async {
        let mut subscriber = Subscriber::new(&bus).await;
        let wanted = bus.connect().await;
        let other = bus.connect().await;
        call_driver(&wanted, "RequestName", &("org.telbus.Matches.Sender", 0u32))
            .await
            .unwrap();
        subscriber
            .add(&format!(
                "sender='{}',member='ByUnique'",
                wanted.unique_name().unwrap()
            ))
            .await;
        subscriber
            .add("sender='org.telbus.Matches.Sender',member='ByName'")
            .await;
        send_all(&wanted, &[signal("ByUnique"), signal("ByName")]).await;
        send_all(&other, &[signal("ByUnique"), signal("ByName")]).await;
        assert_eq!(subscriber.received(2).await, ["ByName", "ByUnique"]);
    });
    bus.assert_alive();
}

#[test]
fn string_arguments() {
    let bus = TestBus::start();
    run(async {
        let got = delivered(
            &bus,
            "arg0='on'",
            &[
                signal("On").args(Args::Str("on")),
                signal("Off").args(Args::Str("off")),
                signal("Padded").args(Args::Str("on ")),
                signal("Number").args(Args::U32(1)),
                signal("NoArgs"),
            ],
        )
        .await;
        assert_eq!(got, ["On"]);

        // A later argument. Only strings count: neither an object path nor a string array.
        let got = delivered(
            &bus,
            "arg1='/b'",
            &[
                signal("Second").args(Args::TwoStrs("a", "/b")),
                signal("FirstOnly").args(Args::TwoStrs("/b", "a")),
                signal("ObjectPath").args(Args::StrAndPath("a", "/b")),
                signal("Array").args(Args::StrArray(&["a", "/b"])),
            ],
        )
        .await;
        assert_eq!(got, ["Second"]);
    });
    bus.assert_alive();
}

#[test]
fn path_arguments_with_and_without_trailing_slash() {
    let bus = TestBus::start();
    run(async {
        // arg1 is an object path here; argNpath also matches string arguments.
        let path_signals = || {
            [
                signal("Equal").args(Args::StrAndPath("x", "/aa/bb")),
                signal("Below").args(Args::StrAndPath("x", "/aa/bb/cc")),
                signal("Other").args(Args::StrAndPath("x", "/aa/bbc")),
            ]
        };
        // With a trailing slash the rule is a namespace: everything below it matches, and
        // so does an argument that is itself a namespace (ends in '/') above it.
        let got = delivered(&bus, "arg1path='/aa/bb/'", &path_signals()).await;
        assert_eq!(got, ["Below"]);
        let got = delivered(
            &bus,
            "arg0path='/aa/bb/'",
            &[
                signal("Same").args(Args::Str("/aa/bb/")),
                signal("Deeper").args(Args::Str("/aa/bb/cc/")),
                signal("Above").args(Args::Str("/aa/")),
                signal("NoSlash").args(Args::Str("/aa/bb")),
                signal("Sideways").args(Args::Str("/aa/b")),
            ],
        )
        .await;
        assert_eq!(got, ["Above", "Deeper", "Same"]);

        // Without one it matches itself and the namespaces above it.
        let got = delivered(&bus, "arg1path='/aa/bb'", &path_signals()).await;
        assert_eq!(got, ["Equal"]);
        let got = delivered(
            &bus,
            "arg0path='/aa/bb'",
            &[
                signal("Above").args(Args::Str("/aa/")),
                signal("Root").args(Args::Str("/")),
                signal("Below").args(Args::Str("/aa/bb/cc")),
            ],
        )
        .await;
        assert_eq!(got, ["Above", "Root"]);
    });
    bus.assert_alive();
}

#[test]
fn arg0_namespace() {
    let bus = TestBus::start();
    run(async {
        let got = delivered(
            &bus,
            "arg0namespace='org.telbus'",
            &[
                signal("Itself").args(Args::Str("org.telbus")),
                signal("Inside").args(Args::Str("org.telbus.Foo")),
                signal("Deeper").args(Args::Str("org.telbus.Foo.Bar")),
                signal("Sibling").args(Args::Str("org.telbusx")),
                signal("Parent").args(Args::Str("org")),
                signal("Number").args(Args::U32(7)),
            ],
        )
        .await;
        assert_eq!(got, ["Deeper", "Inside", "Itself"]);
    });
    bus.assert_alive();
}

#[test]
fn type_key() {
    let bus = TestBus::start();
    run(async {
        // A rule for method calls lets no signal through.
        let got = delivered(
            &bus,
            &format!("type='method_call',interface='{INTERFACE}'"),
            &[signal("Sig")],
        )
        .await;
        assert_eq!(got, Vec::<String>::new());
        let got = delivered(
            &bus,
            &format!("type='signal',interface='{INTERFACE}'"),
            &[signal("Sig")],
        )
        .await;
        assert_eq!(got, ["Sig"]);
    });
    bus.assert_alive();
}

#[test]
fn unicast_signals_go_to_their_destination_only() {
    let bus = TestBus::start();
    run(async {
        let mut addressee = Subscriber::new(&bus).await;
        let mut bystander = Subscriber::new(&bus).await;
        // The bystander asks for every signal, the addressee for none beyond the fences.
        bystander.add("type='signal'").await;
        let emitter = bus.connect().await;
        send_all(
            &emitter,
            &[
                signal("ForAddressee").to(&addressee.unique()),
                signal("ForBystander").to(&bystander.unique()),
                signal("Broadcast").interface("org.telbus.Elsewhere"),
            ],
        )
        .await;
        assert_eq!(addressee.received(1).await, ["ForAddressee"]);
        assert_eq!(bystander.received(1).await, ["Broadcast", "ForBystander"]);
    });
    bus.assert_alive();
}

#[test]
fn destination_with_eavesdrop() {
    let bus = TestBus::start();
    run(async {
        let target = bus.connect().await;
        let other = bus.connect().await;
        let target_name = target.unique_name().unwrap().to_string();
        let other_name = other.unique_name().unwrap().to_string();

        // Without eavesdrop='true', a rule does not reach messages for someone else.
        let got = delivered(
            &bus,
            &format!("destination='{target_name}'"),
            &[signal("ToTarget").to(&target_name)],
        )
        .await;
        assert_eq!(got, Vec::<String>::new());

        // With it (and a policy that allows it), the destination key selects them.
        let got = delivered(
            &bus,
            &format!("eavesdrop='true',destination='{target_name}'"),
            &[
                signal("ToTarget").to(&target_name),
                signal("ToOther").to(&other_name),
                signal("Broadcast"),
            ],
        )
        .await;
        assert_eq!(got, ["ToTarget"]);
    });
    bus.assert_alive();
}

#[test]
fn remove_match_counts_rules() {
    let bus = TestBus::start();
    run(async {
        let mut subscriber = Subscriber::new(&bus).await;
        let emitter = bus.connect().await;
        let rule = format!("type='signal',interface='{INTERFACE}'");
        // The same rule twice: a signal still arrives once.
        subscriber.add(&rule).await;
        subscriber.add(&rule).await;
        send_all(&emitter, &[signal("Twice")]).await;
        assert_eq!(subscriber.received(1).await, ["Twice"]);

        // One RemoveMatch removes one of them.
        subscriber.remove(&rule).await.unwrap();
        send_all(&emitter, &[signal("Once")]).await;
        assert_eq!(subscriber.received(1).await, ["Once"]);

        // The keys may come in another order: it is the same rule.
        subscriber
            .remove(&format!("interface='{INTERFACE}',type='signal'"))
            .await
            .unwrap();
        send_all(&emitter, &[signal("None")]).await;
        assert_eq!(subscriber.received(1).await, Vec::<String>::new());

        let (error, message) = expect_error(subscriber.remove(&rule).await);
        assert_eq!(error, "org.freedesktop.DBus.Error.MatchRuleNotFound");
        assert_eq!(
            message,
            "The given match rule wasn't found and can't be removed"
        );
    });
    bus.assert_alive();
}

#[test]
fn invalid_rules_are_refused() {
    let bus = TestBus::start();
    run(async {
        let connection = bus.connect().await;
        for rule in [
            "foo='bar'",
            "type='nope'",
            "arg64='x'",
            "arg1namespace='a.b'",
            "path='notapath'",
            "path_namespace='/a/'",
            "member='a.b'",
            "interface='nodots'",
            "sender='x'",
            "eavesdrop='maybe'",
            "type='signal',type='signal'",
            "arg0namespace='org.*'",
            "arg3='unterminated",
        ] {
            let (error, _) = expect_error(add_match(&connection, rule).await);
            assert_eq!(
                error, "org.freedesktop.DBus.Error.MatchRuleInvalid",
                "{rule:?}"
            );
        }
        let (_, message) = expect_error(add_match(&connection, "foo='bar'").await);
        assert_eq!(message, "Unknown key \"foo\" in match rule");
        // RemoveMatch parses first, too.
        let (error, _) =
            expect_error(call_driver(&connection, "RemoveMatch", &("foo='bar'",)).await);
        assert_eq!(error, "org.freedesktop.DBus.Error.MatchRuleInvalid");

        // Valid edge cases: the empty rule, the highest argument, a path argument that is not
        // an object path (argNpath takes any string).
        for rule in ["", "arg63='x'", "arg0path='nopath'"] {
            add_match(&connection, rule)
                .await
                .unwrap_or_else(|e| panic!("{rule:?}: {e}"));
        }
        // And the connection is still fine.
        assert!(call_driver(&connection, "GetId", &()).await.is_ok());
    });
    bus.assert_alive();
}
