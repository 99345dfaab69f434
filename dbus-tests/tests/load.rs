//! Nothing lost: many well-behaved clients exchange numbered method calls and signals while
//! others connect and disconnect, stop reading, hold authentications open and send garbage.
//! Every well-behaved client checks that it received every message meant for it exactly once
//! and in order. Then a soak run (`TELBUS_SOAK_SECONDS`, 20 by default) whose broker memory
//! must stay flat after warm-up.
//!
//! The figures go to stderr (`--nocapture` shows them).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use telbus_dbus_tests::{RawClient, TestBus, driver_call, socket_path};
use zbus::Message;
use zbus::message::Type;

const PATH: &str = "/org/telbus/Load";
const INTERFACE: &str = "org.telbus.Load";

/// How long a group runs.
#[derive(Clone, Copy)]
enum Length {
    Rounds(u32),
    Until(Instant),
}

/// What the well-behaved clients of one group sent and received.
#[derive(Default, Debug, Clone, Copy)]
struct Figures {
    /// Messages the clients sent (signals, calls, replies).
    sent: u64,
    /// Messages that reached the clients they were meant for (a signal once per subscriber).
    delivered: u64,
    /// Deliveries that should have happened and did not.
    lost: u64,
}

impl std::ops::AddAssign for Figures {
    fn add_assign(&mut self, other: Figures) {
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.lost += other.lost;
    }
}

/// A well-behaved client: it subscribes to its group's signals and, each round, broadcasts one
/// numbered signal and calls its right-hand neighbour once.
struct Member {
    client: RawClient,
    index: u32,
    /// The round of the last signal received from each member of the group.
    last_signal: Vec<Option<u32>>,
    signals_this_round: usize,
    last_call: Option<u32>,
    call_serial: u32,
    replied: bool,
}

fn tick(group: u32) -> String {
    format!("g{group}")
}

impl Member {
    fn join(path: &str, group: u32, index: u32, size: usize) -> Member {
        let mut client = RawClient::authenticate(path);
        client.hello();
        let rule = format!(
            "type='signal',interface='{INTERFACE}',member='Tick',arg0='{}'",
            tick(group)
        );
        let serial = client.send(driver_call("AddMatch"), &(rule.as_str(),));
        let reply = client.read_reply_to(serial);
        assert_eq!(reply.header().message_type(), Type::MethodReturn);
        Member {
            client,
            index,
            last_signal: vec![None; size],
            signals_this_round: 0,
            last_call: None,
            call_serial: 0,
            replied: false,
        }
    }

    /// Handle one message; panics on anything out of order or not meant for this client.
    fn handle(&mut self, msg: Message, group: u32, round: u32, size: usize, left: &str) {
        let header = msg.header();
        let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
        match header.message_type() {
            Type::Signal if sender == "org.freedesktop.DBus" => {}
            Type::Signal => {
                let (tag, from, r): (String, u32, u32) = msg.body().deserialize().expect("a Tick");
                assert_eq!(
                    tag,
                    tick(group),
                    "member {} got another group's signal",
                    self.index
                );
                let last = &mut self.last_signal[from as usize];
                assert_eq!(
                    (r, *last),
                    (round, round.checked_sub(1)),
                    "member {} of group {group}: signal from {from} out of order",
                    self.index
                );
                *last = Some(r);
                self.signals_this_round += 1;
                assert!(self.signals_this_round <= size);
            }
            Type::MethodCall => {
                assert_eq!(
                    sender, left,
                    "a call from a client that is not the neighbour"
                );
                let (_from, r): (u32, u32) = msg.body().deserialize().expect("a Ping");
                assert_eq!(
                    (r, self.last_call),
                    (round, round.checked_sub(1)),
                    "member {} of group {group}: call out of order",
                    self.index
                );
                self.last_call = Some(r);
                self.client.send(Message::method_return(&header), &(r,));
            }
            Type::MethodReturn => {
                assert_eq!(
                    header.reply_serial().map(|s| s.get()),
                    Some(self.call_serial)
                );
                let r: u32 = msg.body().deserialize().expect("a round number");
                assert_eq!(r, round);
                assert!(!self.replied, "a second reply");
                self.replied = true;
            }
            Type::Error => panic!(
                "member {} of group {group} got an error: {:?}",
                self.index,
                header.error_name()
            ),
        }
    }
}

/// One group of well-behaved clients, in one thread.
fn run_group(mut members: Vec<Member>, group: u32, length: Length) -> Figures {
    let size = members.len();
    let names: Vec<String> = members
        .iter()
        .map(|m| m.client.unique_name.clone())
        .collect();
    let mut figures = Figures::default();
    let mut round = 0;
    loop {
        match length {
            Length::Rounds(n) if round >= n => break,
            Length::Until(at) if Instant::now() >= at => break,
            _ => {}
        }
        for m in members.iter_mut() {
            let signal = Message::signal(PATH, INTERFACE, "Tick");
            m.client.send(signal, &(tick(group), m.index, round));
            m.signals_this_round = 0;
            m.replied = false;
        }
        for (i, m) in members.iter_mut().enumerate() {
            let call = Message::method_call(PATH, "Ping")
                .destination(names[(i + 1) % size].clone())
                .interface(INTERFACE);
            m.call_serial = m.client.send(call, &(m.index, round));
        }
        figures.sent += 3 * size as u64;
        // First every signal and the neighbour's call (answered at once), then the replies.
        for (i, m) in members.iter_mut().enumerate() {
            let left = &names[(i + size - 1) % size];
            while m.signals_this_round < size || m.last_call != Some(round) {
                match m.client.read_message() {
                    Some(msg) => m.handle(msg, group, round, size, left),
                    None => {
                        figures.lost += (size - m.signals_this_round) as u64
                            + u64::from(m.last_call != Some(round));
                        return figures;
                    }
                }
            }
        }
        for (i, m) in members.iter_mut().enumerate() {
            let left = &names[(i + size - 1) % size];
            while !m.replied {
                match m.client.read_message() {
                    Some(msg) => m.handle(msg, group, round, size, left),
                    None => {
                        figures.lost += 1;
                        return figures;
                    }
                }
            }
        }
        figures.delivered += (size * size + 2 * size) as u64;
        round += 1;
    }
    // Nothing more may come: a duplicate would show before the answer to a last question.
    for m in members.iter_mut() {
        let serial = m.client.send(driver_call("GetId"), &());
        loop {
            let msg = m.client.read_message().expect("the bus answers");
            let header = msg.header();
            if header.reply_serial().map(|s| s.get()) == Some(serial) {
                break;
            }
            assert!(
                header.message_type() == Type::Signal
                    && header.sender().map(|s| s.as_str()) == Some("org.freedesktop.DBus"),
                "member {} of group {group} got a message too many: {msg:?}",
                m.index
            );
        }
    }
    figures
}

/// What the misbehaving clients did.
#[derive(Default)]
struct Trouble {
    churned: AtomicU64,
    garbage: AtomicU64,
    stop: AtomicBool,
}

/// Clients that come and go (some mid-message), send garbage (before and after
/// authenticating), stop reading, or hold an authentication open, until told to stop.
fn make_trouble(path: &str, trouble: &Arc<Trouble>) -> Vec<thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    // Come and go, listening to everything meanwhile; every third leaves mid-message.
    let (p, t) = (path.to_string(), trouble.clone());
    threads.push(thread::spawn(move || {
        let mut n = 0u64;
        while !t.stop.load(Ordering::Relaxed) {
            let mut client = RawClient::authenticate(&p);
            client.hello();
            client.subscribe_to_everything();
            if n.is_multiple_of(3) {
                let msg = Message::signal(PATH, INTERFACE, "Half")
                    .build(&("x".repeat(4096),))
                    .unwrap();
                let bytes = &msg.data()[..];
                let _ = client.send_bytes(&bytes[..bytes.len() / 2]);
            }
            drop(client);
            n += 1;
            t.churned.fetch_add(1, Ordering::Relaxed);
        }
    }));
    // Garbage: after authenticating (the bus must close the connection), and instead of it.
    let (p, t) = (path.to_string(), trouble.clone());
    threads.push(thread::spawn(move || {
        let mut n = 0u64;
        while !t.stop.load(Ordering::Relaxed) {
            if n.is_multiple_of(2) {
                let mut client = RawClient::authenticate(&p);
                client.hello();
                let mut junk = vec![b'l', 1, 0, 1, 0xff, 0xff, 0xff, 0x7f];
                junk.extend((0..256u32).map(|i| (i * 7 + n as u32) as u8));
                let _ = client.send_bytes(&junk);
                assert!(client.is_disconnected(), "the bus closes a garbage sender");
            } else {
                let mut stream = UnixStream::connect(&p).expect("connect");
                let _ = stream.write_all(b"\0HELO THERE\r\nGARBAGE\r\nMORE\r\nEVEN MORE\r\n");
                drop(stream);
            }
            n += 1;
            t.garbage.fetch_add(1, Ordering::Relaxed);
        }
    }));
    // Stop reading and hold an authentication open, until the end.
    let (p, t) = (path.to_string(), trouble.clone());
    threads.push(thread::spawn(move || {
        let mut sleepers: Vec<RawClient> = (0..3)
            .map(|_| {
                let mut c = RawClient::authenticate(&p);
                c.hello();
                c.subscribe_to_everything();
                c
            })
            .collect();
        let half_open: Vec<UnixStream> = (0..3).map(|_| RawClient::half_open(&p)).collect();
        while !t.stop.load(Ordering::Relaxed) {
            thread::park_timeout(Duration::from_millis(100));
        }
        sleepers.clear();
        drop(half_open);
    }));
    threads
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

/// A bus whose connections may have 1 MiB queued: the clients that stop reading reach it
/// early, and from then on what is sent to them is dropped.
fn bounded_bus() -> TestBus {
    TestBus::with_config(r#"<limit name="max_outgoing_bytes">1048576</limit>"#)
}

/// Connect `groups` groups of `size` clients and run them, each in a thread.
fn run_groups(bus: &TestBus, groups: u32, size: usize, length: Length) -> Figures {
    let path = socket_path(bus);
    let threads: Vec<_> = (0..groups)
        .map(|g| {
            let members: Vec<Member> = (0..size)
                .map(|i| Member::join(&path, g, i as u32, size))
                .collect();
            thread::spawn(move || run_group(members, g, length))
        })
        .collect();
    let mut total = Figures::default();
    for t in threads {
        total += t.join().expect("a group of well-behaved clients");
    }
    total
}

#[test]
fn every_message_arrives_exactly_once_and_in_order_under_load() {
    let bus = bounded_bus();
    let path = socket_path(&bus);
    let trouble = Arc::new(Trouble::default());
    let troublemakers = make_trouble(&path, &trouble);
    let (groups, size, rounds) = (15, 20, 300);
    let started = Instant::now();
    let figures = run_groups(&bus, groups, size, Length::Rounds(rounds));
    let elapsed = started.elapsed();
    trouble.stop.store(true, Ordering::Relaxed);
    for t in troublemakers {
        t.join().expect("a misbehaving client's thread");
    }
    eprintln!(
        "load: {} well-behaved clients in {groups} groups, {rounds} rounds in {:.1} s: {} messages sent, {} delivered, {} lost; meanwhile {} clients came and went and {} sent garbage",
        groups as usize * size,
        elapsed.as_secs_f64(),
        figures.sent,
        figures.delivered,
        figures.lost,
        trouble.churned.load(Ordering::Relaxed),
        trouble.garbage.load(Ordering::Relaxed),
    );
    assert_eq!(figures.lost, 0);
    assert_eq!(
        figures.delivered,
        u64::from(groups) * u64::from(rounds) * (size * size + 2 * size) as u64
    );
    bus.assert_alive();
}

#[test]
fn soak_memory_stays_flat() {
    let seconds: u64 = std::env::var("TELBUS_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let bus = bounded_bus();
    let path = socket_path(&bus);
    let trouble = Arc::new(Trouble::default());
    let troublemakers = make_trouble(&path, &trouble);
    let (groups, size) = (5, 10);
    let started = Instant::now();
    // Warm-up: a quarter of the run, at least a few seconds.
    let warm_up = Duration::from_secs((seconds / 4).max(3).min(seconds));
    let end = started + Duration::from_secs(seconds);
    let pid = bus.pid();
    let sampler = thread::spawn(move || {
        thread::sleep(warm_up);
        let at_warm_up = rss_kib(pid);
        let mut peak = at_warm_up;
        while Instant::now() + Duration::from_secs(1) < end {
            thread::sleep(Duration::from_secs(1));
            peak = peak.max(rss_kib(pid));
        }
        (at_warm_up, peak)
    });
    let rss_start = rss_kib(pid);
    let figures = run_groups(&bus, groups, size, Length::Until(end));
    trouble.stop.store(true, Ordering::Relaxed);
    for t in troublemakers {
        t.join().expect("a misbehaving client's thread");
    }
    let (at_warm_up, peak) = sampler.join().unwrap();
    let rss_end = rss_kib(pid);
    eprintln!(
        "soak: {} well-behaved clients for {:.1} s: {} messages sent, {} delivered, {} lost; {} clients came and went, {} sent garbage; broker RSS {rss_start} KiB at start, {at_warm_up} KiB after {} s warm-up, peak {peak} KiB, {rss_end} KiB at end",
        groups as usize * size,
        started.elapsed().as_secs_f64(),
        figures.sent,
        figures.delivered,
        figures.lost,
        trouble.churned.load(Ordering::Relaxed),
        trouble.garbage.load(Ordering::Relaxed),
        warm_up.as_secs(),
    );
    assert_eq!(figures.lost, 0);
    assert!(figures.delivered > 0);
    // Generous: allocator noise and buffers kept for reuse, not growth with the work done.
    let margin = at_warm_up / 2 + 8 * 1024;
    assert!(
        rss_end <= at_warm_up + margin && peak <= at_warm_up + margin,
        "the broker grew from {at_warm_up} KiB to {rss_end} KiB (peak {peak} KiB)"
    );
    bus.assert_alive();
}
