//! Quotas and throttling: what one client (or one user) may leave waiting in the bus, and how
//! the bus holds back whoever goes over it, while an innocent client keeps working with its
//! messages intact.
//!
//! The clients of other users are made by switching a helper thread's credentials around its
//! `connect()` (the tests run as root). A receiver that "does not read" still has its kernel
//! socket buffer filled by the bus first; the floods below are sized well past that.
//!
//! Against dbus-daemon (`TELBUS_TEST_DAEMON=/usr/bin/dbus-daemon`) only the
//! max_incomplete_connections and max_incoming_unix_fds tests apply as they are (dbus-daemon
//! too holds exactly 8 one-descriptor messages at max_incoming_unix_fds=8): the per-user quotas
//! (queued bytes and fds, names, match rules, pending replies) and their GetStats figures are
//! telbusd's (dbus-broker's idea), and dbus-daemon holds a sender back over max_incoming_bytes
//! too but does not count its queued messages in GetConnectionStats.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use telbus_dbus_tests::{RawClient, TestBus, driver_call, socket_path};
use zbus::Message;
use zbus::OwnedVariant as OwnedValue;
use zbus::message::Type;

const LIMITS_EXCEEDED: &str = "org.freedesktop.DBus.Error.LimitsExceeded";
/// Users of other uids: they must exist (the bus, like dbus-daemon, refuses unknown uids).
const GREEDY_UID: u32 = 1; // daemon
const INNOCENT_UID: u32 = 2; // bin
const PATH: &str = "/org/telbus/Quota";
const INTERFACE: &str = "org.telbus.Quota";

/// A test bus that lets every user in, with `extra` configuration.
fn bus_for_everyone(extra: &str) -> TestBus {
    TestBus::with_config(&format!(
        r#"<policy context="default"><allow user="*"/></policy>
{extra}"#
    ))
}

/// `len` bytes that say which message they belong to.
fn payload(n: u32, len: usize) -> Vec<u8> {
    (0..len).map(|i| (n as usize * 31 + i) as u8).collect()
}

/// A numbered method call to `to` carrying `len` bytes.
fn send_call(client: &mut RawClient, to: &str, n: u32, len: usize) -> u32 {
    let call = Message::method_call(PATH, "Take")
        .destination(to.to_string())
        .interface(INTERFACE);
    client.send(call, &(n, payload(n, len)))
}

/// A numbered signal to `to` carrying `len` bytes.
fn send_signal(client: &mut RawClient, to: &str, n: u32, len: usize) -> u32 {
    let signal = Message::signal(PATH, INTERFACE, "Wave").destination(to.to_string());
    client.send(signal, &(n, payload(n, len)))
}

/// The number a test message carries, after checking its payload is intact.
fn number_of(msg: &Message) -> u32 {
    let (n, bytes): (u32, Vec<u8>) = msg.body().deserialize().expect("a test message");
    assert_eq!(
        bytes,
        payload(n, bytes.len()),
        "message {n} arrived damaged"
    );
    n
}

fn is_reply_to(msg: &Message, serial: u32) -> bool {
    let header = msg.header();
    matches!(header.message_type(), Type::MethodReturn | Type::Error)
        && header.reply_serial().map(|s| s.get()) == Some(serial)
}

fn error_name(msg: &Message) -> Option<String> {
    let header = msg.header();
    (header.message_type() == Type::Error)
        .then(|| header.error_name().map(|n| n.to_string()))
        .flatten()
}

/// Asks the bus something, so that everything sent before was handled; returns what arrived
/// meanwhile (the errors for earlier messages come before the answer).
fn sync(client: &mut RawClient) -> Vec<Message> {
    let serial = client.send(driver_call("GetId"), &());
    client.read_until(|m| is_reply_to(m, serial))
}

/// The test messages `from` sent that arrived, in the order they arrived.
fn numbers_from(messages: &[Message], from: &str, member: &str) -> Vec<u32> {
    messages
        .iter()
        .filter(|m| {
            let header = m.header();
            header.sender().map(|s| s.as_str()) == Some(from)
                && header.member().map(|m| m.as_str()) == Some(member)
        })
        .map(number_of)
        .collect()
}

/// The numbers of the calls (numbered from 0, sent with `serials`) that were not `refused`.
fn accepted_numbers(serials: &[u32], refused: &[u32]) -> Vec<u32> {
    (0..serials.len() as u32)
        .filter(|n| !refused.contains(&serials[*n as usize]))
        .collect()
}

/// A Debug.Stats call.
fn stats(
    client: &mut RawClient,
    member: &'static str,
    arg: Option<&str>,
) -> HashMap<String, OwnedValue> {
    let call = Message::method_call("/org/freedesktop/DBus", member)
        .destination("org.freedesktop.DBus")
        .interface("org.freedesktop.DBus.Debug.Stats");
    let serial = match arg {
        Some(name) => client.send(call, &(name,)),
        None => client.send(call, &()),
    };
    let reply = client.read_reply_to(serial);
    assert_eq!(error_name(&reply), None, "{member} failed");
    reply.body().deserialize().expect("a{sv}")
}

fn stat_u32(stats: &HashMap<String, OwnedValue>, key: &str) -> u32 {
    let value = stats
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {stats:?}"));
    u32::try_from(value).unwrap_or_else(|_| panic!("{key} is not a u32"))
}

/// `Users` of GetStats: uid → figure → value.
fn user_stats(stats: &HashMap<String, OwnedValue>) -> HashMap<u32, HashMap<String, u32>> {
    let value = stats.get("Users").expect("a Users key in GetStats");
    HashMap::<u32, HashMap<String, u32>>::try_from(value.try_clone().unwrap())
        .expect("Users is a{ua{su}}")
}

#[test]
fn a_user_over_its_share_of_a_receivers_quota_is_refused_and_other_users_are_not() {
    // 1 MiB for everything waiting for root's connections: one sending user may hold half.
    let bus = bus_for_everyone(
        r#"<limit name="max_queued_bytes_per_user">1048576</limit>
<limit name="max_queued_unix_fds_per_user">64</limit>"#,
    );
    let mut receiver = RawClient::connect(&bus);
    let to = receiver.unique_name.clone();
    let mut greedy = RawClient::connect_as(&bus, GREEDY_UID);
    let mut innocent = RawClient::connect_as(&bus, INNOCENT_UID);

    // 40 calls of 64 KiB: far more than the receiver's socket and greedy's share take.
    let serials: Vec<u32> = (0..40)
        .map(|n| send_call(&mut greedy, &to, n, 64 * 1024))
        .collect();
    // A signal over the share is dropped without an error.
    send_signal(&mut greedy, &to, 500, 64 * 1024);
    let answers = sync(&mut greedy);
    let refused: Vec<u32> = answers
        .iter()
        .filter(|m| error_name(m).as_deref() == Some(LIMITS_EXCEEDED))
        .map(|m| m.header().reply_serial().unwrap().get())
        .collect();
    assert!(
        answers.iter().filter(|m| error_name(m).is_some()).count() == refused.len(),
        "only LimitsExceeded errors: {answers:?}"
    );
    let accepted = accepted_numbers(&serials, &refused);
    assert!(
        !accepted.is_empty() && !refused.is_empty(),
        "some calls queued, others refused ({accepted:?} accepted)"
    );
    eprintln!(
        "greedy user: {} calls of 64 KiB queued, {} refused",
        accepted.len(),
        refused.len()
    );

    // Another user still gets its messages to the same receiver.
    for n in 0..4 {
        send_call(&mut innocent, &to, n, 16 * 1024);
    }
    let answers = sync(&mut innocent);
    assert!(
        answers.iter().all(|m| error_name(m).is_none()),
        "the innocent user was refused: {answers:?}"
    );
    // The last message: the receiver reads up to it.
    send_call(&mut innocent, &to, 999, 16);

    let got = receiver.read_until(|m| {
        m.header().member().map(|m| m.as_str()) == Some("Take") && number_of(m) == 999
    });
    // Exactly the calls that were not refused arrive, in order.
    assert_eq!(numbers_from(&got, &greedy.unique_name, "Take"), accepted);
    assert_eq!(
        numbers_from(&got, &innocent.unique_name, "Take"),
        [0, 1, 2, 3, 999]
    );
    assert!(
        numbers_from(&got, &greedy.unique_name, "Wave").is_empty(),
        "the signal over the share was dropped"
    );

    // Once delivered, the quota is free again.
    send_call(&mut greedy, &to, 1000, 64 * 1024);
    let answers = sync(&mut greedy);
    assert!(
        answers.iter().all(|m| error_name(m).is_none()),
        "{answers:?}"
    );
    let got = receiver.read_until(|m| m.header().member().map(|m| m.as_str()) == Some("Take"));
    assert_eq!(numbers_from(&got, &greedy.unique_name, "Take"), [1000]);
    bus.assert_alive();
}

#[test]
fn a_sender_over_max_incoming_bytes_is_not_read_until_its_messages_drain() {
    const LIMIT: u32 = 64 * 1024;
    const COUNT: u32 = 64;
    let bus = bus_for_everyone(&format!(
        r#"<limit name="max_incoming_bytes">{LIMIT}</limit>"#
    ));
    let mut receiver = RawClient::connect(&bus);
    let to = receiver.unique_name.clone();
    let mut observer = RawClient::connect(&bus);
    let mut innocent = RawClient::connect(&bus);
    let sender = RawClient::connect(&bus);
    let sender_name = sender.unique_name.clone();

    // 1 MiB of signals: the sender blocks in write() once the bus stops reading it.
    let flood = std::thread::spawn(move || {
        let mut sender = sender;
        for n in 0..COUNT {
            send_signal(&mut sender, &to, n, 16 * 1024);
        }
        sync(&mut sender)
    });

    // Wait (by asking) until the bus holds as much of the sender's as it may. Bounded by time,
    // not by a count of questions: on a loaded machine the flood thread may get little CPU.
    let mut held = HashMap::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        held = stats(
            &mut observer,
            "GetConnectionStats",
            Some(&receiver.unique_name),
        );
        if stat_u32(&held, "OutgoingBytes") >= LIMIT {
            break;
        }
        std::thread::yield_now();
    }
    let queued = stat_u32(&held, "OutgoingMessages");
    assert!(
        stat_u32(&held, "OutgoingBytes") >= LIMIT,
        "the flood never filled the queue"
    );
    assert!(
        queued < COUNT && stat_u32(&held, "OutgoingBytes") < LIMIT + 17 * 1024,
        "the bus held {queued} messages of the sender"
    );
    let sender_stats = stats(&mut observer, "GetConnectionStats", Some(&sender_name));
    assert_eq!(stat_u32(&sender_stats, "IncomingMessages"), queued);

    // The innocent client is served meanwhile, and the sender stays held back.
    for n in 0..10 {
        send_call(&mut innocent, &observer.unique_name, n, 1024);
    }
    let answers = sync(&mut innocent);
    assert!(
        answers.iter().all(|m| error_name(m).is_none()),
        "{answers:?}"
    );
    let got = observer.read_until(|m| {
        m.header().member().map(|m| m.as_str()) == Some("Take") && number_of(m) == 9
    });
    assert_eq!(
        numbers_from(&got, &innocent.unique_name, "Take"),
        (0..10).collect::<Vec<_>>()
    );
    let still = stats(
        &mut observer,
        "GetConnectionStats",
        Some(&receiver.unique_name),
    );
    assert_eq!(
        stat_u32(&still, "OutgoingMessages"),
        queued,
        "the sender was read on"
    );

    // The receiver reads: everything arrives, in order, and the sender is answered.
    let got = receiver.read_until(|m| {
        m.header().member().map(|m| m.as_str()) == Some("Wave") && number_of(m) == COUNT - 1
    });
    assert_eq!(
        numbers_from(&got, &sender_name, "Wave"),
        (0..COUNT).collect::<Vec<_>>()
    );
    let answers = flood
        .join()
        .expect("the sender is answered once it drained");
    assert!(
        answers.iter().all(|m| error_name(m).is_none()),
        "{answers:?}"
    );
    bus.assert_alive();
}

/// A numbered unicast signal to `to` carrying `fd` and `len` bytes.
fn send_fd_signal(
    client: &mut RawClient,
    to: &str,
    n: u32,
    fd: std::os::fd::BorrowedFd<'_>,
    len: usize,
) -> u32 {
    let signal = Message::signal(PATH, INTERFACE, "WaveFd").destination(to.to_string());
    client.send_with_fds(signal, &(n, zbus::Fd::from(fd), payload(n, len)))
}

/// What the bus holds for `receiver`: (messages, bytes, descriptors).
fn queued_for(observer: &mut RawClient, receiver: &str) -> (u32, u32, u32) {
    let s = stats(observer, "GetConnectionStats", Some(receiver));
    (
        stat_u32(&s, "OutgoingMessages"),
        stat_u32(&s, "OutgoingBytes"),
        stat_u32(&s, "OutgoingFDs"),
    )
}

#[test]
fn a_sender_over_max_incoming_unix_fds_is_not_read_until_its_messages_drain() {
    // Only descriptors count here: max_incoming_bytes stays far above what is sent.
    const LIMIT: u32 = 8;
    const COUNT: u32 = 64;
    let bus = bus_for_everyone(&format!(
        r#"<limit name="max_incoming_unix_fds">{LIMIT}</limit>"#
    ));
    let mut receiver = RawClient::connect(&bus);
    let to = receiver.unique_name.clone();
    let mut observer = RawClient::connect(&bus);
    let mut innocent = RawClient::connect(&bus);
    let sender = RawClient::connect(&bus);
    let sender_name = sender.unique_name.clone();

    // 64 signals of one descriptor and 16 KiB each: the receiver's socket buffer takes a dozen,
    // the bus up to LIMIT descriptors' worth, and the sender blocks in write() after that.
    let flood = std::thread::spawn(move || {
        let mut sender = sender;
        let (pipe, _writer) = rustix::pipe::pipe().expect("a pipe");
        for n in 0..COUNT {
            send_fd_signal(&mut sender, &to, n, pipe.as_fd(), 16 * 1024);
        }
        sync(&mut sender)
    });

    // Wait (by asking) until the bus holds as many of the sender's descriptors as it may.
    let mut held = (0, 0, 0);
    for _ in 0..100_000 {
        held = queued_for(&mut observer, &receiver.unique_name);
        if held.2 >= LIMIT {
            break;
        }
        std::thread::yield_now();
    }
    assert!(
        held.2 >= LIMIT,
        "the flood never filled the queue: {held:?}"
    );

    // The innocent client is served meanwhile.
    for n in 0..10 {
        send_call(&mut innocent, &observer.unique_name, n, 1024);
    }
    let answers = sync(&mut innocent);
    assert!(
        answers.iter().all(|m| error_name(m).is_none()),
        "{answers:?}"
    );
    let got = observer.read_until(|m| {
        m.header().member().map(|m| m.as_str()) == Some("Take") && number_of(m) == 9
    });
    assert_eq!(
        numbers_from(&got, &innocent.unique_name, "Take"),
        (0..10).collect::<Vec<_>>()
    );

    // The sender stays held back: what waits for the receiver does not move, it is about LIMIT
    // descriptors (not the dozens sent) and far from max_incoming_bytes.
    let held = queued_for(&mut observer, &receiver.unique_name);
    sync(&mut innocent);
    sync(&mut observer);
    let still = queued_for(&mut observer, &receiver.unique_name);
    assert_eq!(still, held, "the sender was read on");
    let (messages, bytes, fds) = held;
    eprintln!("held for the receiver: {messages} messages, {bytes} bytes, {fds} descriptors");
    assert!(
        (LIMIT..2 * LIMIT).contains(&fds) && messages == fds && bytes < 2 * LIMIT * 17 * 1024,
        "the bus held {messages} messages, {bytes} bytes, {fds} descriptors of the sender"
    );

    // The receiver reads: everything arrives, in order, each with its descriptor, and the
    // sender is answered.
    let mut numbers = Vec::new();
    while numbers.last() != Some(&(COUNT - 1)) {
        let m = receiver
            .read_message_with_fds()
            .expect("the receiver gets its messages");
        let header = m.header();
        if header.sender().map(|s| s.as_str()) == Some(sender_name.as_str())
            && header.member().map(|m| m.as_str()) == Some("WaveFd")
        {
            numbers.push(fd_call_number(&m));
        }
    }
    assert_eq!(numbers, (0..COUNT).collect::<Vec<_>>());
    let answers = flood
        .join()
        .expect("the sender is answered once it drained");
    assert!(
        answers.iter().all(|m| error_name(m).is_none()),
        "{answers:?}"
    );
    bus.assert_alive();
}

#[test]
fn max_incomplete_connections_stops_accepting_until_one_completes() {
    let bus = bus_for_everyone(r#"<limit name="max_incomplete_connections">4</limit>"#);
    let mut innocent = RawClient::connect(&bus);
    let path = socket_path(&bus);
    let mut half_open: Vec<UnixStream> = (0..4).map(|_| RawClient::half_open(&path)).collect();
    let mut incomplete = 0;
    for _ in 0..100_000 {
        incomplete = stat_u32(
            &stats(&mut innocent, "GetStats", None),
            "IncompleteConnections",
        );
        if incomplete == 4 {
            break;
        }
        std::thread::yield_now();
    }
    assert_eq!(incomplete, 4);

    // A fifth connection waits in the listen backlog: it is not even accepted.
    let waiting = UnixStream::connect(&path).expect("the kernel takes the connection");
    let stats_now = stats(&mut innocent, "GetStats", None);
    assert_eq!(stat_u32(&stats_now, "IncompleteConnections"), 4);
    // The authenticated client is served as usual.
    for _ in 0..5 {
        assert!(sync(&mut innocent).iter().all(|m| error_name(m).is_none()));
    }

    // One half-open connection goes: the waiting one is accepted and completes.
    drop(half_open.remove(0));
    let mut late = RawClient::authenticate_on(waiting);
    late.hello();
    assert!(late.unique_name.starts_with(':'));
    assert!(sync(&mut late).iter().all(|m| error_name(m).is_none()));
    assert!(sync(&mut innocent).iter().all(|m| error_name(m).is_none()));
    drop(half_open);
    bus.assert_alive();
}

#[test]
fn get_stats_reports_what_waits_per_user() {
    let bus = bus_for_everyone("");
    let mut receiver = RawClient::connect(&bus);
    let to = receiver.unique_name.clone();
    let mut observer = RawClient::connect(&bus);
    let mut sender = RawClient::connect_as(&bus, GREEDY_UID);
    // 10 calls of 64 KiB: what the receiver's socket does not take waits in the bus.
    for n in 0..10 {
        send_call(&mut sender, &to, n, 64 * 1024);
    }
    assert!(sync(&mut sender).iter().all(|m| error_name(m).is_none()));

    let all = stats(&mut observer, "GetStats", None);
    for key in [
        "Serial",
        "ActiveConnections",
        "IncompleteConnections",
        "MatchRules",
        "PeakMatchRules",
        "PeakMatchRulesPerConnection",
        "BusNames",
        "PeakBusNames",
        "PeakBusNamesPerConnection",
    ] {
        assert!(all.contains_key(key), "dbus-daemon's {key} is still there");
    }
    let users = user_stats(&all);
    let queued = stat_u32(
        &stats(&mut observer, "GetConnectionStats", Some(&to)),
        "OutgoingMessages",
    );
    assert!(queued > 0, "some of the 640 KiB wait in the bus");
    let root = &users[&0];
    let other = &users[&GREEDY_UID];
    assert_eq!(other["Connections"], 1);
    assert_eq!(other["SentMessages"], queued);
    assert!(other["SentBytes"] >= queued * 64 * 1024);
    assert_eq!(root["QueuedMessages"], queued);
    assert_eq!(root["QueuedBytes"], other["SentBytes"]);
    assert_eq!(root["Connections"], 2);
    assert!(root["Senders"] >= 1);
    eprintln!("per-user figures with a stalled reader: {users:?}");

    // The receiver reads everything: nothing is left accounted to anyone.
    let got = receiver.read_until(|m| {
        m.header().member().map(|m| m.as_str()) == Some("Take") && number_of(m) == 9
    });
    assert_eq!(
        numbers_from(&got, &sender.unique_name, "Take"),
        (0..10).collect::<Vec<_>>()
    );
    let users = user_stats(&stats(&mut observer, "GetStats", None));
    assert_eq!(users[&GREEDY_UID]["SentMessages"], 0);
    assert_eq!(users[&GREEDY_UID]["SentBytes"], 0);
    assert_eq!(users[&0]["QueuedBytes"], 0);
    bus.assert_alive();
}

/// The number a `(uhay)` call carries, after checking that its descriptor came with it and its
/// payload is intact.
fn fd_call_number(msg: &Message) -> u32 {
    let body = msg.body();
    let (n, _fd, bytes): (u32, zbus::Fd<'_>, Vec<u8>) =
        body.deserialize().expect("a call with its descriptor");
    assert_eq!(
        bytes,
        payload(n, bytes.len()),
        "message {n} arrived damaged"
    );
    n
}

#[test]
fn a_user_over_its_share_of_descriptors_is_refused_and_other_users_are_not() {
    // 64 descriptors for what waits for root's connections: one sending user may hold 32.
    let bus = bus_for_everyone(r#"<limit name="max_queued_unix_fds_per_user">64</limit>"#);
    let mut receiver = RawClient::connect(&bus);
    let to = receiver.unique_name.clone();
    let mut greedy = RawClient::connect_as(&bus, GREEDY_UID);
    let mut innocent = RawClient::connect_as(&bus, INNOCENT_UID);
    let (pipe, _writer) = rustix::pipe::pipe().expect("a pipe");
    let send = |client: &mut RawClient, n: u32| {
        let builder = Message::method_call(PATH, "TakeFd")
            .destination(to.clone())
            .interface(INTERFACE);
        // 8 KiB each as well: the receiver's socket buffer fills after a few dozen.
        let body = (n, zbus::Fd::from(pipe.as_fd()), payload(n, 8 * 1024));
        client.send_with_fds(builder, &body)
    };

    // Far more than the receiver's socket and greedy's share take.
    let serials: Vec<u32> = (0..600).map(|n| send(&mut greedy, n)).collect();
    let answers = sync(&mut greedy);
    let refused: Vec<u32> = answers
        .iter()
        .filter(|m| error_name(m).as_deref() == Some(LIMITS_EXCEEDED))
        .map(|m| m.header().reply_serial().unwrap().get())
        .collect();
    let accepted = accepted_numbers(&serials, &refused);
    assert!(
        !accepted.is_empty() && !refused.is_empty(),
        "{accepted:?} accepted"
    );
    eprintln!(
        "greedy user: {} calls with a descriptor queued, {} refused",
        accepted.len(),
        refused.len()
    );

    for n in 0..4 {
        send(&mut innocent, n);
    }
    let answers = sync(&mut innocent);
    assert!(
        answers.iter().all(|m| error_name(m).is_none()),
        "{answers:?}"
    );
    send(&mut innocent, 999);
    let mut got = Vec::new();
    loop {
        let m = receiver
            .read_message_with_fds()
            .expect("the receiver gets its messages");
        let last = m.header().member().map(|m| m.as_str()) == Some("TakeFd")
            && m.header().sender().map(|s| s.as_str()) == Some(innocent.unique_name.as_str())
            && fd_call_number(&m) == 999;
        got.push(m);
        if last {
            break;
        }
    }
    let numbers = |from: &str| -> Vec<u32> {
        got.iter()
            .filter(|m| m.header().sender().map(|s| s.as_str()) == Some(from))
            .filter(|m| m.header().member().map(|m| m.as_str()) == Some("TakeFd"))
            .map(fd_call_number)
            .collect()
    };
    assert_eq!(numbers(&greedy.unique_name), accepted);
    assert_eq!(numbers(&innocent.unique_name), [0, 1, 2, 3, 999]);
    bus.assert_alive();
}

/// A bus where each connection may hold 10 names, match rules or pending calls, and each user
/// 6: a user spread over 3 connections of 2 each reaches its own limit first.
fn bus_with_per_user_counts() -> TestBus {
    bus_for_everyone(
        r#"<policy context="default"><allow own="*"/></policy>
<limit name="max_names_per_connection">10</limit>
<limit name="max_match_rules_per_connection">10</limit>
<limit name="max_replies_per_connection">10</limit>
<limit name="max_names_per_user">6</limit>
<limit name="max_match_rules_per_user">6</limit>
<limit name="max_replies_per_user">6</limit>"#,
    )
}

/// Calls a bus driver method and returns its reply (or error).
fn ask_driver<B>(client: &mut RawClient, member: &'static str, body: &B) -> Message
where
    B: serde::Serialize + zbus::DynamicType,
{
    let serial = client.send(driver_call(member), body);
    client.read_reply_to(serial)
}

/// Whether `msg` is the test call numbered `n`.
fn is_take(msg: &Message, n: u32) -> bool {
    msg.header().member().map(|m| m.as_str()) == Some("Take") && number_of(msg) == n
}

/// The `Users` figure `key` of `uid` (0 when the user has none).
fn user_figure(observer: &mut RawClient, uid: u32, key: &str) -> u32 {
    let users = user_stats(&stats(observer, "GetStats", None));
    users
        .get(&uid)
        .and_then(|f| f.get(key).copied())
        .unwrap_or(0)
}

#[test]
fn a_user_over_max_names_per_user_is_refused_and_other_users_are_not() {
    let bus = bus_with_per_user_counts();
    let mut observer = RawClient::connect(&bus);
    let mut greedy: Vec<RawClient> = (0..3)
        .map(|_| RawClient::connect_as(&bus, GREEDY_UID))
        .collect();
    for (c, client) in greedy.iter_mut().enumerate() {
        for n in 0..2 {
            let name = format!("org.telbus.Greedy.C{c}N{n}");
            let reply = ask_driver(client, "RequestName", &(name.as_str(), 0u32));
            assert_eq!(error_name(&reply), None, "{name}");
        }
    }
    assert_eq!(user_figure(&mut observer, GREEDY_UID, "Names"), 6);

    // Each connection owns 2 of its 10, but the user has its 6.
    let reply = ask_driver(
        &mut greedy[0],
        "RequestName",
        &("org.telbus.Greedy.More", 0u32),
    );
    assert_eq!(error_name(&reply).as_deref(), Some(LIMITS_EXCEEDED));
    let text: String = reply.body().deserialize().unwrap();
    assert!(text.contains("max_names_per_user=6"), "{text}");
    // Queueing for a name counts too.
    let reply = ask_driver(
        &mut greedy[1],
        "RequestName",
        &("org.telbus.Greedy.C0N0", 0u32),
    );
    assert_eq!(error_name(&reply).as_deref(), Some(LIMITS_EXCEEDED));

    // Another user still gets a name.
    let mut innocent = RawClient::connect_as(&bus, INNOCENT_UID);
    let reply = ask_driver(&mut innocent, "RequestName", &("org.telbus.Innocent", 0u32));
    assert_eq!(error_name(&reply), None);
    let code: u32 = reply.body().deserialize().unwrap();
    assert_eq!(code, 1, "primary owner");
    assert_eq!(user_figure(&mut observer, INNOCENT_UID, "Names"), 1);

    // Releasing a name, or leaving, gives the user its room back.
    let reply = ask_driver(&mut greedy[2], "ReleaseName", &("org.telbus.Greedy.C2N0",));
    assert_eq!(error_name(&reply), None);
    assert_eq!(user_figure(&mut observer, GREEDY_UID, "Names"), 5);
    let reply = ask_driver(
        &mut greedy[0],
        "RequestName",
        &("org.telbus.Greedy.More", 0u32),
    );
    assert_eq!(error_name(&reply), None);
    assert_eq!(user_figure(&mut observer, GREEDY_UID, "Names"), 6);
    // The first connection (3 names) leaves: once their owners' changes are out, they are gone.
    let rule = "type='signal',member='NameOwnerChanged',arg0namespace='org.telbus.Greedy'";
    assert_eq!(
        error_name(&ask_driver(&mut observer, "AddMatch", &(rule,))),
        None
    );
    drop(greedy.remove(0));
    let mut released = Vec::new();
    observer.read_until(|m| {
        if m.header().member().map(|m| m.as_str()) == Some("NameOwnerChanged") {
            let (name, _old, new): (String, String, String) = m.body().deserialize().unwrap();
            if new.is_empty() {
                released.push(name);
            }
        }
        released.len() == 3
    });
    released.sort();
    assert_eq!(
        released,
        [
            "org.telbus.Greedy.C0N0",
            "org.telbus.Greedy.C0N1",
            "org.telbus.Greedy.More"
        ]
    );
    assert_eq!(user_figure(&mut observer, GREEDY_UID, "Names"), 3);
    let reply = ask_driver(
        &mut greedy[0],
        "RequestName",
        &("org.telbus.Greedy.Again", 0u32),
    );
    assert_eq!(error_name(&reply), None);
    bus.assert_alive();
}

#[test]
fn a_user_over_max_match_rules_per_user_is_refused_and_other_users_are_not() {
    let bus = bus_with_per_user_counts();
    let mut observer = RawClient::connect(&bus);
    let mut greedy: Vec<RawClient> = (0..3)
        .map(|_| RawClient::connect_as(&bus, GREEDY_UID))
        .collect();
    let rule = |c: usize, n: usize| format!("type='signal',member='Greedy{c}x{n}'");
    for (c, client) in greedy.iter_mut().enumerate() {
        for n in 0..2 {
            let reply = ask_driver(client, "AddMatch", &(rule(c, n).as_str(),));
            assert_eq!(error_name(&reply), None);
        }
    }
    assert_eq!(user_figure(&mut observer, GREEDY_UID, "MatchRules"), 6);

    // Each connection has 2 of its 10 rules, but the user has its 6.
    for client in &mut greedy {
        let reply = ask_driver(client, "AddMatch", &("type='signal',member='More'",));
        assert_eq!(error_name(&reply).as_deref(), Some(LIMITS_EXCEEDED));
        let text: String = reply.body().deserialize().unwrap();
        assert!(text.contains("max_match_rules_per_user=6"), "{text}");
    }

    // Another user still adds a match, and it works: it gets the signal it asked for.
    let mut innocent = RawClient::connect_as(&bus, INNOCENT_UID);
    let reply = ask_driver(&mut innocent, "AddMatch", &("type='signal',member='Wave'",));
    assert_eq!(error_name(&reply), None);
    assert_eq!(user_figure(&mut observer, INNOCENT_UID, "MatchRules"), 1);
    send_signal(&mut observer, &innocent.unique_name.clone(), 7, 16);
    let got = innocent.read_until(|m| m.header().member().map(|m| m.as_str()) == Some("Wave"));
    assert_eq!(numbers_from(&got, &observer.unique_name, "Wave"), [7]);

    // Removing a rule, or leaving, gives the user its room back.
    let reply = ask_driver(&mut greedy[1], "RemoveMatch", &(rule(1, 0).as_str(),));
    assert_eq!(error_name(&reply), None);
    assert_eq!(user_figure(&mut observer, GREEDY_UID, "MatchRules"), 5);
    let reply = ask_driver(
        &mut greedy[0],
        "AddMatch",
        &("type='signal',member='More'",),
    );
    assert_eq!(error_name(&reply), None);
    // A connection that leaves takes its rules: the bus has forgotten them once its unique
    // name's NameOwnerChanged is out.
    let gone = greedy[0].unique_name.clone();
    let watch = format!("type='signal',member='NameOwnerChanged',arg0='{gone}'");
    assert_eq!(
        error_name(&ask_driver(&mut observer, "AddMatch", &(watch.as_str(),))),
        None
    );
    drop(greedy.remove(0));
    observer.read_until(|m| m.header().member().map(|m| m.as_str()) == Some("NameOwnerChanged"));
    assert_eq!(user_figure(&mut observer, GREEDY_UID, "MatchRules"), 3);
    let reply = ask_driver(
        &mut greedy[0],
        "AddMatch",
        &("type='signal',member='Again'",),
    );
    assert_eq!(error_name(&reply), None);
    bus.assert_alive();
}

#[test]
fn a_user_over_max_replies_per_user_is_refused_and_other_users_are_not() {
    let bus = bus_with_per_user_counts();
    let mut observer = RawClient::connect(&bus);
    // A service that answers only when told to.
    let mut callee = RawClient::connect(&bus);
    let to = callee.unique_name.clone();
    let mut greedy: Vec<RawClient> = (0..3)
        .map(|_| RawClient::connect_as(&bus, GREEDY_UID))
        .collect();
    for (c, client) in greedy.iter_mut().enumerate() {
        for n in 0..2 {
            send_call(client, &to, (c * 2 + n) as u32, 16);
        }
        assert!(sync(client).iter().all(|m| error_name(m).is_none()));
    }
    let calls: Vec<Message> = callee
        .read_until(|m| is_take(m, 5))
        .into_iter()
        .filter(|m| m.header().member().map(|m| m.as_str()) == Some("Take"))
        .collect();
    assert_eq!(calls.len(), 6);
    assert_eq!(user_figure(&mut observer, GREEDY_UID, "PendingReplies"), 6);

    // Each connection waits for 2 of its 10 replies, but the user for its 6.
    for client in &mut greedy {
        let serial = send_call(client, &to, 100, 16);
        let answers = sync(client);
        let refusal = answers
            .iter()
            .find(|m| is_reply_to(m, serial))
            .expect("the call over the limit is answered at once");
        assert_eq!(error_name(refusal).as_deref(), Some(LIMITS_EXCEEDED));
        let text: String = refusal.body().deserialize().unwrap();
        assert!(text.contains(&format!("UID {GREEDY_UID}")), "{text}");
    }
    // A call that wants no reply is not counted, and goes through.
    let no_reply = Message::method_call(PATH, "Take")
        .destination(to.clone())
        .interface(INTERFACE)
        .with_flags(zbus::message::Flags::NO_REPLY_EXPECTED);
    greedy[0].send(no_reply, &(200u32, payload(200, 16)));

    // Another user's call still goes through, and gets its reply.
    let mut innocent = RawClient::connect_as(&bus, INNOCENT_UID);
    let serial = send_call(&mut innocent, &to, 300, 16);
    let got = callee.read_until(|m| is_take(m, 300));
    assert_eq!(numbers_from(&got, &greedy[0].unique_name, "Take"), [200]);
    let call = got.last().unwrap();
    assert_eq!(
        user_figure(&mut observer, INNOCENT_UID, "PendingReplies"),
        1
    );
    let reply = Message::method_return(&call.header());
    callee.send(reply, &());
    let answer = innocent.read_reply_to(serial);
    assert_eq!(error_name(&answer), None);
    assert_eq!(
        user_figure(&mut observer, INNOCENT_UID, "PendingReplies"),
        0
    );

    // A reply gives the user room for one more call; a caller that leaves gives back its own.
    let first = &calls[0];
    callee.send(Message::method_return(&first.header()), &());
    let caller = first.header().sender().unwrap().to_string();
    let owner = greedy.iter().position(|g| g.unique_name == caller).unwrap();
    greedy[owner].read_reply_to(first.header().primary().serial_num().get());
    assert_eq!(user_figure(&mut observer, GREEDY_UID, "PendingReplies"), 5);
    let watch = format!(
        "type='signal',member='NameOwnerChanged',arg0='{}'",
        greedy[owner].unique_name
    );
    assert_eq!(
        error_name(&ask_driver(&mut observer, "AddMatch", &(watch.as_str(),))),
        None
    );
    drop(greedy.remove(owner));
    observer.read_until(|m| m.header().member().map(|m| m.as_str()) == Some("NameOwnerChanged"));
    assert_eq!(user_figure(&mut observer, GREEDY_UID, "PendingReplies"), 4);
    let serial = send_call(&mut greedy[0], &to, 400, 16);
    let answers = sync(&mut greedy[0]);
    assert!(
        !answers.iter().any(|m| is_reply_to(m, serial)),
        "{answers:?}"
    );
    assert_eq!(user_figure(&mut observer, GREEDY_UID, "PendingReplies"), 5);
    bus.assert_alive();
}
