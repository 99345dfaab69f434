//! Hostile clients: each case attacks the bus the way a buggy or malicious program could, and
//! checks three things: the offender gets a D-Bus error or is disconnected, the bus stays up,
//! and a bystander — a zbus connection made before the attack — still gets its calls answered
//! with its text intact.
//!
//! Every case passes against dbus-daemon too (`TELBUS_TEST_DAEMON=/usr/bin/dbus-daemon`); where
//! the two differ, the case says how. Limits and slow readers are also in limits.rs; these add the
//! malformed input and the floods.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc as async_mpsc;
use telbus_dbus_tests::{
    RawClient, STEP_TIMEOUT, ServiceThread, TEST_INTERFACE, TEST_PATH, TestBus, daemon_path,
    driver_call, run, socket_path, try_read_line,
};
use zbus::Message;
use zbus::message::Type;

const ECHO: &str = "org.telbus.Hostile.Echo";
const LIMITS_EXCEEDED: &str = "org.freedesktop.DBus.Error.LimitsExceeded";

/// Whether the bus under test is dbus-daemon (`TELBUS_TEST_DAEMON`), for the cases where it
/// behaves differently.
fn is_dbus_daemon() -> bool {
    daemon_path()
        .file_name()
        .is_some_and(|name| name == "dbus-daemon")
}

type EchoRequest = (String, mpsc::Sender<Result<String, String>>);

/// A well-behaved client and the service it calls, both connected before the attack.
struct Bystander {
    requests: Option<async_mpsc::UnboundedSender<EchoRequest>>,
    thread: Option<JoinHandle<()>>,
    _service: ServiceThread,
}

impl Bystander {
    fn start(bus: &TestBus) -> Bystander {
        let service = ServiceThread::start(bus, Some(ECHO));
        let address = bus.address().to_string();
        let (requests, mut incoming) = async_mpsc::unbounded::<EchoRequest>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = thread::spawn(move || {
            zruntime::block_on(async move {
                let connection = zbus::connection::Builder::address(address.as_str())
                    .build()
                    .await
                    .expect("the bystander connects");
                ready_tx.send(()).expect("the test waits");
                while let Some((text, answer)) = incoming.next().await {
                    let result = connection
                        .call_method(
                            Some(ECHO),
                            TEST_PATH,
                            Some(TEST_INTERFACE),
                            "Echo",
                            &(text.as_str(),),
                        )
                        .await
                        .and_then(|reply| reply.body().deserialize::<String>())
                        .map_err(|e| e.to_string());
                    let _ = answer.send(result);
                }
            })
        });
        ready_rx
            .recv_timeout(STEP_TIMEOUT)
            .expect("the bystander came up");
        Bystander {
            requests: Some(requests),
            thread: Some(thread),
            _service: service,
        }
    }

    /// A call round trip through the bus, with a text that would show any corruption.
    #[track_caller]
    fn check(&self, after: &str) {
        let text = format!(
            "still served after {after}: ünïcödé ✓ {}",
            "0123456789".repeat(50)
        );
        let (answer, result) = mpsc::channel();
        self.requests
            .as_ref()
            .unwrap()
            .unbounded_send((text.clone(), answer))
            .expect("the bystander thread runs");
        let reply = result
            .recv_timeout(STEP_TIMEOUT * 2)
            .unwrap_or_else(|_| panic!("the bystander got no answer after {after}"))
            .unwrap_or_else(|e| panic!("the bystander's call failed after {after}: {e}"));
        assert_eq!(reply, text, "the bystander's text changed after {after}");
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
            && !thread::panicking()
        {
            panic!("the bystander thread panicked");
        }
    }
}

/// The end of every case: the bus runs and the bystander is served.
#[track_caller]
fn assert_unharmed(bus: &TestBus, bystander: &Bystander, after: &str) {
    bus.assert_alive();
    bystander.check(after);
    bus.assert_alive();
}

/// A header field value, for messages built by hand.
enum Field<'a> {
    Str(u8, &'a str),
    Path(&'a str),
    U32(u8, u32),
}

fn pad8(bytes: &mut Vec<u8>) {
    bytes.resize(bytes.len().div_ceil(8) * 8, 0);
}

/// A little-endian message marshalled by hand, so that it can say what no library would write.
fn marshal(
    msg_type: u8,
    serial: u32,
    fields: &[Field<'_>],
    signature: &[u8],
    body: &[u8],
) -> Vec<u8> {
    let mut out = vec![b'l', msg_type, 0, 1];
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&serial.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let string = |out: &mut Vec<u8>, code: u8, ty: u8, s: &str| {
        pad8(out);
        out.extend_from_slice(&[code, 1, ty, 0]);
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    };
    for field in fields {
        match field {
            Field::Str(code, s) => string(&mut out, *code, b's', s),
            Field::Path(p) => string(&mut out, 1, b'o', p),
            Field::U32(code, v) => {
                pad8(&mut out);
                out.extend_from_slice(&[*code, 1, b'u', 0]);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    if !signature.is_empty() {
        pad8(&mut out);
        out.extend_from_slice(&[8, 1, b'g', 0, signature.len() as u8]);
        out.extend_from_slice(signature);
        out.push(0);
    }
    let fields_len = (out.len() - 16) as u32;
    out[12..16].copy_from_slice(&fields_len.to_le_bytes());
    pad8(&mut out);
    out.extend_from_slice(body);
    out
}

/// A valid call of Echo(text) to the echo service, as bytes.
fn echo_call(serial: u32, text: &str) -> Vec<u8> {
    let mut body = (text.len() as u32).to_le_bytes().to_vec();
    body.extend_from_slice(text.as_bytes());
    body.push(0);
    marshal(
        1,
        serial,
        &[
            Field::Path(TEST_PATH),
            Field::Str(2, TEST_INTERFACE),
            Field::Str(3, "Echo"),
            Field::Str(6, ECHO),
        ],
        b"s",
        &body,
    )
}

/// Replace the first occurrence of `from` in `bytes` with `to` (same length).
fn patch(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("the bytes to patch");
    bytes[at..at + to.len()].copy_from_slice(to);
}

/// Sends `bytes` from a client that said Hello and checks that the bus hangs up on it, that the
/// bus lives and the bystander is served.
#[track_caller]
fn assert_disconnects_sender(bytes: &[u8], what: &str) {
    let bus = TestBus::start();
    let bystander = Bystander::start(&bus);
    let mut offender = RawClient::connect(&bus);
    // The bus may hang up before it has read everything: a write error is fine too.
    let _ = offender.send_bytes(bytes);
    assert!(
        closed_by_bus(&mut offender.stream),
        "the bus kept a client that sent {what}"
    );
    assert_unharmed(&bus, &bystander, what);
}

#[test]
fn the_valid_message_these_cases_corrupt_is_answered() {
    // The control: without corruption, the hand-made call gets its reply.
    let bus = TestBus::start();
    let _bystander = Bystander::start(&bus);
    let mut client = RawClient::connect(&bus);
    let serial = client.next_serial();
    client.send_bytes(&echo_call(serial, "intact")).unwrap();
    let reply = client.read_reply_to(serial);
    assert_eq!(reply.header().message_type(), Type::MethodReturn);
    assert_eq!(reply.body().deserialize::<String>().unwrap(), "intact");
}

#[test]
fn a_truncated_message_then_eof_disconnects() {
    let bus = TestBus::start();
    let bystander = Bystander::start(&bus);
    let mut offender = RawClient::connect(&bus);
    let bytes = echo_call(100, "cut short");
    offender.send_bytes(&bytes[..bytes.len() - 5]).unwrap();
    // The bus cannot tell a slow client from a truncated message until the stream ends.
    bystander.check("half a message");
    offender.stream.shutdown(Shutdown::Write).unwrap();
    assert!(closed_by_bus(&mut offender.stream));
    assert_unharmed(&bus, &bystander, "a truncated message");
}

#[test]
fn a_string_longer_than_its_header_disconnects() {
    let mut bytes = echo_call(100, "x");
    // The MEMBER field's string length points past the end of the field array.
    patch(
        &mut bytes,
        &[4, 0, 0, 0, b'E', b'c', b'h', b'o'],
        &[0xff, 0xff, 0, 0, b'E', b'c', b'h', b'o'],
    );
    assert_disconnects_sender(&bytes, "a header string running past its array");
}

#[test]
fn an_oversized_message_is_refused_before_it_is_read() {
    let bus = TestBus::with_config(r#"<limit name="max_message_size">4096</limit>"#);
    let bystander = Bystander::start(&bus);
    let mut offender = RawClient::connect(&bus);
    let mut bytes = echo_call(100, "big");
    // Declare a 1 GiB body and send only the header: the bus must not wait for (or buffer) it.
    bytes[4..8].copy_from_slice(&(1u32 << 30).to_le_bytes());
    let header_len = bytes.len() - 8; // "big" marshalled is 8 bytes
    let _ = offender.send_bytes(&bytes[..header_len]);
    assert!(closed_by_bus(&mut offender.stream));
    assert_unharmed(&bus, &bystander, "a 1 GiB length");
}

#[test]
fn a_wrong_endianness_byte_disconnects() {
    let mut bytes = echo_call(100, "endian");
    bytes[0] = b'X';
    assert_disconnects_sender(&bytes, "endianness byte 'X'");
}

#[test]
fn an_invalid_body_signature_disconnects() {
    let mut bytes = echo_call(100, "sig");
    patch(
        &mut bytes,
        &[8, 1, b'g', 0, 1, b's', 0],
        &[8, 1, b'g', 0, 1, b'(', 0],
    );
    assert_disconnects_sender(&bytes, "signature \"(\"");
}

#[test]
fn a_body_that_does_not_match_its_signature_disconnects() {
    let mut bytes = echo_call(100, "abc");
    // The string's terminating NUL becomes a byte.
    let n = bytes.len();
    bytes[n - 1] = b'!';
    assert_disconnects_sender(&bytes, "a string without its NUL");
}

#[test]
fn nesting_deeper_than_64_disconnects() {
    // 65 nested arrays (the specification allows 32 arrays and 64 containers in all); the
    // outermost is empty, so the body is just its length.
    let signature = [vec![b'a'; 65], vec![b'y']].concat();
    let bytes = marshal(
        4,
        100,
        &[
            Field::Path("/deep"),
            Field::Str(2, "org.telbus.Deep"),
            Field::Str(3, "Down"),
        ],
        &signature,
        &[0, 0, 0, 0],
    );
    assert_disconnects_sender(&bytes, "65 nested arrays");
    // 33 nested structs: over the 32 allowed.
    let signature = [vec![b'('; 33], vec![b'y'], vec![b')'; 33]].concat();
    let bytes = marshal(
        4,
        100,
        &[
            Field::Path("/deep"),
            Field::Str(2, "org.telbus.Deep"),
            Field::Str(3, "Down"),
        ],
        &signature,
        &[7],
    );
    assert_disconnects_sender(&bytes, "33 nested structs");
}

#[test]
fn invalid_utf8_in_a_string_disconnects() {
    let mut bytes = echo_call(100, "hello");
    patch(&mut bytes, b"hello", b"h\xffllo");
    assert_disconnects_sender(&bytes, "invalid UTF-8");
}

#[test]
fn an_invalid_object_path_disconnects() {
    let mut bytes = marshal(
        4,
        100,
        &[
            Field::Path("/a/bc"),
            Field::Str(2, "org.telbus.P"),
            Field::Str(3, "S"),
        ],
        b"",
        b"",
    );
    patch(&mut bytes, b"/a/bc", b"/a//c");
    assert_disconnects_sender(&bytes, "object path /a//c");
}

#[test]
fn header_fields_of_the_wrong_type_disconnect() {
    // PATH sent as a string.
    let mut bytes = echo_call(100, "x");
    patch(&mut bytes, &[1, 1, b'o', 0], &[1, 1, b's', 0]);
    assert_disconnects_sender(&bytes, "a PATH of type s");
    // REPLY_SERIAL sent as a string.
    let bytes = marshal(
        2,
        100,
        &[Field::Str(5, "one"), Field::Str(6, ECHO)],
        b"",
        b"",
    );
    assert_disconnects_sender(&bytes, "a REPLY_SERIAL of type s");
}

#[test]
fn a_message_before_hello_disconnects() {
    let bus = TestBus::start();
    let bystander = Bystander::start(&bus);
    let mut offender = RawClient::authenticate(&socket_path(&bus));
    offender.send_bytes(&echo_call(1, "no hello")).unwrap();
    assert!(closed_by_bus(&mut offender.stream));
    assert_unharmed(&bus, &bystander, "a message before Hello");
}

#[test]
fn a_second_hello_is_an_error() {
    let bus = TestBus::start();
    let bystander = Bystander::start(&bus);
    let mut offender = RawClient::connect(&bus);
    let serial = offender.send(driver_call("Hello"), &());
    let reply = offender.read_reply_to(serial);
    assert_eq!(reply.header().message_type(), Type::Error);
    assert_eq!(
        reply.header().error_name().unwrap().as_str(),
        "org.freedesktop.DBus.Error.Failed"
    );
    // The connection stays, under its first name.
    let own_name = offender.unique_name.clone();
    let serial = offender.send(driver_call("GetNameOwner"), &(own_name.as_str(),));
    let reply = offender.read_reply_to(serial);
    assert_eq!(
        reply.body().deserialize::<String>().unwrap(),
        offender.unique_name
    );
    assert_unharmed(&bus, &bystander, "a second Hello");
}

/// Reads messages until one that does not come from the bus driver (NameAcquired and the like).
fn next_from_a_peer(client: &mut RawClient) -> Message {
    loop {
        let msg = client.read_message().expect("a message");
        if msg.header().sender().map(|s| s.as_str()) != Some("org.freedesktop.DBus") {
            return msg;
        }
        // The driver's messages carry no member a test sends.
        assert_ne!(msg.header().member().map(|m| m.as_str()), Some("Spoofed"));
    }
}

#[test]
fn a_spoofed_sender_is_overwritten() {
    let bus = TestBus::start();
    let bystander = Bystander::start(&bus);
    let mut receiver = RawClient::connect(&bus);
    let mut offender = RawClient::connect(&bus);
    let receiver_name = receiver.unique_name.clone();
    for forged in ["org.freedesktop.DBus", ECHO, receiver_name.as_str()] {
        // Built by hand: zbus will not put a well-known name in SENDER.
        let mut body = (forged.len() as u32).to_le_bytes().to_vec();
        body.extend_from_slice(forged.as_bytes());
        body.push(0);
        let serial = offender.next_serial();
        let bytes = marshal(
            4,
            serial,
            &[
                Field::Path("/org/telbus/Spoof"),
                Field::Str(2, "org.telbus.Spoof"),
                Field::Str(3, "Spoofed"),
                Field::Str(6, &receiver_name),
                Field::Str(7, forged),
            ],
            b"s",
            &body,
        );
        offender.send_bytes(&bytes).unwrap();
        let msg = next_from_a_peer(&mut receiver);
        assert_eq!(msg.header().member().unwrap().as_str(), "Spoofed");
        assert_eq!(
            msg.header().sender().unwrap().as_str(),
            offender.unique_name,
            "the receiver saw the forged sender {forged}"
        );
        assert_eq!(msg.body().deserialize::<String>().unwrap(), forged);
    }
    assert_unharmed(&bus, &bystander, "spoofed senders");
}

#[test]
fn a_reply_to_a_call_never_made_is_not_delivered() {
    // dbus-daemon delivers unrequested replies when the send policy allows them (the test
    // configuration allows everything), and refuses them where a rule says
    // send_requested_reply="false", as the system bus's default policy does; these rules make
    // it refuse them. telbusd never delivers a reply nobody is waiting for.
    let bus = TestBus::with_config(
        r#"<policy context="default">
             <deny send_type="method_return" send_requested_reply="false"/>
             <deny send_type="error" send_requested_reply="false"/>
           </policy>"#,
    );
    let bystander = Bystander::start(&bus);
    let mut receiver = RawClient::connect(&bus);
    let mut offender = RawClient::connect(&bus);
    let target = receiver.unique_name.clone();
    // A method return and an error, each for a serial the receiver used (Hello's).
    let serial = offender.next_serial();
    let ret = marshal(
        2,
        serial,
        &[Field::U32(5, 1), Field::Str(6, &target)],
        b"s",
        &[3, 0, 0, 0, b'b', b'a', b'd', 0],
    );
    offender.send_bytes(&ret).unwrap();
    let serial = offender.next_serial();
    let err = marshal(
        3,
        serial,
        &[
            Field::Str(4, "org.telbus.Forged"),
            Field::U32(5, 1),
            Field::Str(6, &target),
        ],
        b"",
        b"",
    );
    offender.send_bytes(&err).unwrap();
    // Then a signal: messages from one sender arrive in order, so if the replies had been
    // delivered they would come first.
    offender.send(
        Message::signal("/org/telbus/After", "org.telbus.After", "After")
            .destination(target.clone()),
        &(),
    );
    let msg = next_from_a_peer(&mut receiver);
    assert_eq!(
        msg.header().message_type(),
        Type::Signal,
        "an unrequested reply was delivered"
    );
    assert_eq!(msg.header().member().unwrap().as_str(), "After");
    assert_unharmed(&bus, &bystander, "unrequested replies");
}

/// Open file descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the process's descriptors")
        .count()
}

#[test]
fn too_many_unix_fds_on_a_message_disconnect() {
    let bus = TestBus::with_config(r#"<limit name="max_message_unix_fds">4</limit>"#);
    let bystander = Bystander::start(&bus);
    let before = fd_count(bus.pid());
    let mut offender = RawClient::connect(&bus);
    let (read_end, _write_end) = rustix::pipe::pipe().unwrap();
    let fds = vec![read_end.as_fd(); 8];
    let serial = offender.next_serial();
    let body: Vec<u8> = (0..8u32).flat_map(|i| i.to_le_bytes()).collect();
    let bytes = marshal(
        1,
        serial,
        &[
            Field::Path(TEST_PATH),
            Field::Str(2, TEST_INTERFACE),
            Field::Str(3, "TakeFds"),
            Field::Str(6, ECHO),
            Field::U32(9, 8),
        ],
        b"hhhhhhhh",
        &body,
    );
    let _ = offender.send_bytes_with_fds(&bytes, &fds);
    assert!(
        closed_by_bus(&mut offender.stream),
        "8 fds passed a limit of 4"
    );
    drop(offender);
    assert_unharmed(&bus, &bystander, "a message with 8 fds");
    // The descriptors the bus received went with the connection. (The bystander's call above
    // was answered after the disconnection was handled.)
    assert!(
        fd_count(bus.pid()) <= before + 1,
        "the bus holds {} descriptors, {before} before",
        fd_count(bus.pid())
    );
}

#[test]
fn a_flood_of_unix_fds_without_messages_is_cut_off() {
    let bus = TestBus::start();
    let bystander = Bystander::start(&bus);
    let before = fd_count(bus.pid());
    let mut offender = RawClient::connect(&bus);
    let (read_end, _write_end) = rustix::pipe::pipe().unwrap();
    let fds = vec![read_end.as_fd(); 200];
    // 200 descriptors with each byte of a message that never completes: 40 000 in all if the
    // bus let them all in.
    let bytes = echo_call(offender.next_serial(), &"z".repeat(400));
    let mut cut_off = false;
    for byte in &bytes[..200] {
        if offender
            .send_bytes_with_fds(std::slice::from_ref(byte), &fds)
            .is_err()
        {
            cut_off = true;
            break;
        }
    }
    // dbus-daemon hangs up as soon as one read brings more descriptors than a message may have;
    // telbusd once they exceed what one message may still claim.
    assert!(
        cut_off || closed_by_bus(&mut offender.stream),
        "the fd flood was taken"
    );
    drop(offender);
    assert_unharmed(&bus, &bystander, "an fd flood");
    assert!(
        fd_count(bus.pid()) <= before + 1,
        "the bus holds {} descriptors, {before} before",
        fd_count(bus.pid())
    );
}

/// Connects and starts SASL without finishing it.
fn half_authenticated(bus: &TestBus) -> UnixStream {
    let mut stream = UnixStream::connect(socket_path(bus)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"\0AUTH EXTERNAL").unwrap();
    stream
}

/// True once the bus closes `stream` (a read ends), false on the read timeout.
fn closed_by_bus(stream: &mut UnixStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn a_half_finished_authentication_times_out() {
    let bus = TestBus::with_config(r#"<limit name="auth_timeout">500</limit>"#);
    let bystander = Bystander::start(&bus);
    let mut stalled = half_authenticated(&bus);
    assert!(closed_by_bus(&mut stalled), "auth_timeout did not close it");
    assert_unharmed(&bus, &bystander, "a stalled authentication");
}

#[test]
fn half_finished_authentications_do_not_lock_others_out() {
    // An attacker holding max_incomplete_connections half-authenticated sockets: as in
    // dbus-daemon, the bus stops accepting while they are held (newcomers wait in the listen
    // backlog, authenticated clients are served), and auth_timeout drops them, so a newcomer
    // gets in once they are gone.
    let bus = TestBus::with_config(
        r#"<limit name="max_incomplete_connections">8</limit>
           <limit name="auth_timeout">1000</limit>"#,
    );
    let bystander = Bystander::start(&bus);
    let mut stalled: Vec<UnixStream> = (0..32).map(|_| half_authenticated(&bus)).collect();
    assert_unharmed(&bus, &bystander, "32 half-open connections held");
    run(async {
        let newcomer = zbus::connection::Builder::address(bus.address())
            .build()
            .await
            .expect("a new client gets in once the half-open connections time out");
        newcomer
            .call_method(
                Some(ECHO),
                TEST_PATH,
                Some(TEST_INTERFACE),
                "Echo",
                &("in",),
            )
            .await
            .expect("the newcomer is served");
    });
    // The attacker's sockets were closed by the bus.
    assert!(closed_by_bus(&mut stalled[0]));
    assert_unharmed(&bus, &bystander, "32 half-open connections");
}

#[test]
fn garbage_in_sasl_is_rejected_then_disconnected() {
    let bus = TestBus::start();
    let bystander = Bystander::start(&bus);

    // No credentials byte first.
    let mut no_nul = UnixStream::connect(socket_path(&bus)).unwrap();
    no_nul
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    no_nul.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(closed_by_bus(&mut no_nul));

    // Commands the server does not know get ERROR; the connection stays.
    let mut chatter = UnixStream::connect(socket_path(&bus)).unwrap();
    chatter
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    chatter.write_all(b"\0HELO bus\r\n").unwrap();
    let line = try_read_line(&mut chatter).expect("an answer");
    assert!(line.starts_with("ERROR"), "answered {line:?}");
    // Unknown mechanisms are REJECTED, and after a few the bus hangs up.
    let mut rejected = 0;
    for _ in 0..20 {
        if chatter.write_all(b"AUTH NOPE\r\n").is_err() {
            break;
        }
        match try_read_line(&mut chatter) {
            Some(line) if line.starts_with("REJECTED") => rejected += 1,
            Some(line) => panic!("answered {line:?}"),
            None => break,
        }
    }
    assert!((1..20).contains(&rejected), "{rejected} rejections");
    assert!(closed_by_bus(&mut chatter));

    // A line longer than the bus buffers.
    let mut long = UnixStream::connect(socket_path(&bus)).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = long.write_all(&[b"\0AUTH EXTERNAL ".as_slice(), &[b'3'; 64 * 1024]].concat());
    assert!(closed_by_bus(&mut long));

    assert_unharmed(&bus, &bystander, "SASL garbage");
}

#[test]
fn thousands_of_connections_from_one_user_hit_the_limit() {
    const LIMIT: usize = 64;
    let bus = TestBus::with_config(&format!(
        r#"<limit name="max_connections_per_user">{LIMIT}</limit>"#
    ));
    let bystander = Bystander::start(&bus);
    let mut watcher = name_watcher(&bus);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for _ in 0..2000 {
        match RawClient::try_connect(&bus) {
            Some(client) => accepted.push(client),
            None => refused += 1,
        }
    }
    // The bystander, its service and the watcher count too.
    assert!(
        accepted.len() <= LIMIT - 3 && accepted.len() + 4 >= LIMIT - 3,
        "{} connections accepted with max_connections_per_user={LIMIT}",
        accepted.len()
    );
    assert_eq!(accepted.len() + refused, 2000);
    assert_unharmed(&bus, &bystander, "2000 connections");
    // Those that got in are served.
    let last = accepted.last_mut().unwrap();
    let serial = last.send(driver_call("GetId"), &());
    assert_eq!(
        last.read_reply_to(serial).header().message_type(),
        Type::MethodReturn
    );
    // Gone, they make room again.
    let name = accepted[0].unique_name.clone();
    drop(accepted);
    wait_gone(&mut watcher, &name);
    let again = RawClient::try_connect(&bus);
    assert!(again.is_some(), "no room after the connections closed");
}

/// A raw client subscribed to NameOwnerChanged.
fn name_watcher(bus: &TestBus) -> RawClient {
    let mut watcher = RawClient::connect(bus);
    let rule = "type='signal',member='NameOwnerChanged'";
    let serial = watcher.send(driver_call("AddMatch"), &(rule,));
    watcher.read_reply_to(serial);
    watcher
}

/// Waits for the signal that `name` lost its owner.
fn wait_gone(watcher: &mut RawClient, name: &str) {
    loop {
        let msg = watcher.read_message().expect("NameOwnerChanged");
        if msg.header().member().map(|m| m.as_str()) == Some("NameOwnerChanged") {
            let (n, _old, new): (String, String, String) = msg.body().deserialize().unwrap();
            if n == name && new.is_empty() {
                return;
            }
        }
    }
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

#[test]
fn a_client_that_never_reads_is_refused_more_unicasts() {
    let bus = TestBus::with_config(r#"<limit name="max_outgoing_bytes">65536</limit>"#);
    let bystander = Bystander::start(&bus);
    let sleeper = RawClient::connect(&bus);
    let mut flooder = RawClient::connect(&bus);
    let before = rss_kib(bus.pid());
    // 512 KiB of calls for the sleeper, which never reads: once its queue is full the callers
    // get LimitsExceeded (from both buses: dbus-daemon checks the destination's queue too).
    let payload = "w".repeat(8192);
    let mut serials = Vec::new();
    for _ in 0..64 {
        serials.push(
            flooder.send(
                Message::method_call("/org/telbus/Sleep", "Take")
                    .interface("org.telbus.Sleep")
                    .destination(sleeper.unique_name.clone()),
                &(payload.as_str(),),
            ),
        );
    }
    // The bus answers the refused ones; the first is for a call it queued.
    let refused = flooder.read_reply_to(*serials.last().unwrap());
    assert_eq!(
        refused.header().error_name().unwrap().as_str(),
        LIMITS_EXCEEDED
    );
    bystander.check("a flood for a sleeper");
    let after = rss_kib(bus.pid());
    assert!(
        after < before + 16 * 1024,
        "the bus grew by {} KiB for a client that does not read",
        after.saturating_sub(before)
    );
    drop(sleeper);
    assert_unharmed(&bus, &bystander, "a client that never reads");
}

#[test]
fn a_monitor_that_stops_reading_does_not_hold_the_bus() {
    let bus = TestBus::with_config(r#"<limit name="max_outgoing_bytes">1048576</limit>"#);
    let bystander = Bystander::start(&bus);
    let mut monitor = RawClient::connect(&bus);
    let serial = monitor.send(
        Message::method_call("/org/freedesktop/DBus", "BecomeMonitor")
            .destination("org.freedesktop.DBus")
            .interface("org.freedesktop.DBus.Monitoring"),
        &(Vec::<&str>::new(), 0u32),
    );
    let reply = monitor.read_reply_to(serial);
    assert_eq!(reply.header().message_type(), Type::MethodReturn);
    let before = rss_kib(bus.pid());
    let mut flooder = RawClient::connect(&bus);
    let payload = "m".repeat(32 * 1024);
    // 32 MiB of signals that the monitor sees and does not read.
    for _ in 0..1024 {
        flooder.send(
            Message::signal("/org/telbus/Flood", "org.telbus.Flood", "Wave"),
            &(payload.as_str(),),
        );
    }
    let serial = flooder.send(driver_call("GetId"), &());
    flooder.read_reply_to(serial);
    let after = rss_kib(bus.pid());
    eprintln!(
        "bus RSS with a stalled monitor: {before} KiB before a 32 MiB flood, {after} KiB after"
    );
    // dbus-daemon 1.14 queues everything for a monitor, whatever max_outgoing_bytes says (it
    // grew by 34 MiB here): only telbusd's memory is bounded.
    if !is_dbus_daemon() {
        assert!(
            after < before + 16 * 1024,
            "the bus grew by {} KiB for a monitor that does not read",
            after.saturating_sub(before)
        );
    }
    assert_unharmed(&bus, &bystander, "a stalled monitor");
}

#[test]
fn a_match_rule_flood_hits_the_limit() {
    let bus = TestBus::with_config(r#"<limit name="max_match_rules_per_connection">100</limit>"#);
    let bystander = Bystander::start(&bus);
    let mut offender = RawClient::connect(&bus);
    // Sent without waiting for replies, as a flood would be.
    let serials: Vec<u32> = (0..1000)
        .map(|i| {
            let rule = format!("type='signal',member='Flood{i}'");
            offender.send(driver_call("AddMatch"), &(rule.as_str(),))
        })
        .collect();
    let mut added = 0;
    for serial in serials {
        let reply = offender.read_reply_to(serial);
        match reply.header().message_type() {
            Type::MethodReturn => added += 1,
            _ => assert_eq!(
                reply.header().error_name().unwrap().as_str(),
                LIMITS_EXCEEDED
            ),
        }
    }
    assert_eq!(added, 100);
    // Invalid and overlong rules are errors, not disconnections.
    for rule in [
        "type='nonsense'".to_string(),
        "x".repeat(2000),
        "arg64='x'".into(),
    ] {
        let serial = offender.send(driver_call("AddMatch"), &(rule.as_str(),));
        let reply = offender.read_reply_to(serial);
        assert_eq!(
            reply.header().message_type(),
            Type::Error,
            "{rule:.40} was added"
        );
    }
    assert_unharmed(&bus, &bystander, "a match-rule flood");
}

#[test]
fn a_name_ownership_flood_hits_the_limit() {
    let bus = TestBus::with_config(r#"<limit name="max_names_per_connection">50</limit>"#);
    let bystander = Bystander::start(&bus);
    let mut offender = RawClient::connect(&bus);
    let names: Vec<String> = (0..1000)
        .map(|i| format!("org.telbus.Hostile.N{i}"))
        .collect();
    let serials: Vec<u32> = names
        .iter()
        .map(|name| offender.send(driver_call("RequestName"), &(name.as_str(), 4u32)))
        .collect();
    let mut owned = 0;
    for serial in serials {
        let reply = offender.read_reply_to(serial);
        match reply.header().message_type() {
            Type::MethodReturn => owned += 1,
            _ => assert_eq!(
                reply.header().error_name().unwrap().as_str(),
                LIMITS_EXCEEDED
            ),
        }
    }
    // The unique name counts against the limit, as in dbus-daemon.
    assert_eq!(owned, 49);
    // Churn: take and give back one name many times.
    for _ in 0..500 {
        offender.send(driver_call("ReleaseName"), &("org.telbus.Hostile.N0",));
        offender.send(driver_call("RequestName"), &("org.telbus.Hostile.N0", 4u32));
    }
    let serial = offender.send(driver_call("GetNameOwner"), &("org.telbus.Hostile.N0",));
    let owner = offender.read_reply_to(serial);
    assert_eq!(
        owner.body().deserialize::<String>().unwrap(),
        offender.unique_name
    );
    // Its names go when it goes.
    let mut watcher = name_watcher(&bus);
    drop(offender);
    wait_gone(&mut watcher, "org.telbus.Hostile.N0");
    assert_unharmed(&bus, &bystander, "a name flood");
}

#[test]
fn calls_on_another_clients_object_are_denied_by_policy() {
    const PRIVATE: &str = "org.telbus.Hostile.Private";
    let bus = TestBus::with_config(&format!(
        r#"<policy context="default"><deny send_destination="{PRIVATE}"/></policy>"#
    ));
    let bystander = Bystander::start(&bus);
    let private = ServiceThread::start(&bus, Some(PRIVATE));
    let mut offender = RawClient::connect(&bus);
    for destination in [PRIVATE.to_string(), private.unique_name().to_string()] {
        let serial = offender.send(
            Message::method_call(TEST_PATH, "Echo")
                .interface(TEST_INTERFACE)
                .destination(destination.clone()),
            &("let me in",),
        );
        let reply = offender.read_reply_to(serial);
        let error = reply.header().error_name().map(|e| e.as_str().to_string());
        if destination == PRIVATE {
            assert_eq!(
                error.as_deref(),
                Some("org.freedesktop.DBus.Error.AccessDenied"),
                "a call to {destination} was let through"
            );
        } else {
            // By its unique name the rule does not apply (it names the well-known name only
            // when the owner is the primary owner: dbus-daemon denies these too, as the
            // connection owns the name).
            assert_eq!(
                error.as_deref(),
                Some("org.freedesktop.DBus.Error.AccessDenied"),
                "a call to the owner of {PRIVATE} by unique name was let through"
            );
        }
    }
    // The owner keeps its name.
    let serial = offender.send(driver_call("GetNameOwner"), &(PRIVATE,));
    let reply = offender.read_reply_to(serial);
    assert_eq!(
        reply.body().deserialize::<String>().unwrap(),
        private.unique_name()
    );
    assert_unharmed(&bus, &bystander, "calls to a denied destination");
}
