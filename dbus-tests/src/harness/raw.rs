//! A client on a plain socket, for tests that need to misbehave on purpose: stop reading, send
//! bytes no library would build, hold a half-finished authentication open. It authenticates
//! with SASL EXTERNAL and (unless told not to) says Hello, then does only what the test says.

use std::io::{Read, Write};
use std::num::NonZeroU32;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use zbus::Message;
use zbus::message::{Builder, Type};
use zbus::wire::Endian;
use zbus::wire::serialized::{Context, Data};

use super::bus::TestBus;

/// The unix socket path of a test bus (`unix:path=…,guid=…`).
pub fn socket_path(bus: &TestBus) -> String {
    let address = bus.address();
    address
        .split(',')
        .find_map(|part| part.strip_prefix("unix:path="))
        .unwrap_or_else(|| panic!("a unix:path address: {address}"))
        .to_string()
}

pub struct RawClient {
    pub stream: UnixStream,
    serial: u32,
    /// The unique name the bus gave in its Hello reply (empty before Hello).
    pub unique_name: String,
}

impl RawClient {
    /// Connects, authenticates and says Hello, waiting for its reply.
    pub fn connect(bus: &TestBus) -> RawClient {
        let mut client = Self::authenticate(&socket_path(bus));
        client.hello();
        client
    }

    /// Connects to a socket path and authenticates (EXTERNAL, with unix fd passing), without
    /// saying Hello.
    pub fn authenticate(path: &str) -> RawClient {
        let mut stream = UnixStream::connect(Path::new(path)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let uid = rustix::process::geteuid().as_raw().to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        stream
            .write_all(format!("\0AUTH EXTERNAL {hex}\r\n").as_bytes())
            .unwrap();
        let line = read_line(&mut stream);
        assert!(line.starts_with("OK "), "AUTH answered: {line}");
        stream.write_all(b"NEGOTIATE_UNIX_FD\r\n").unwrap();
        let line = read_line(&mut stream);
        assert!(line.starts_with("AGREE_UNIX_FD"), "answered: {line}");
        stream.write_all(b"BEGIN\r\n").unwrap();
        RawClient {
            stream,
            serial: 0,
            unique_name: String::new(),
        }
    }

    /// Says Hello and reads its reply (skipping the NameAcquired signal that may come first).
    pub fn hello(&mut self) {
        let serial = self.send(driver_call("Hello"), &());
        let reply = self.read_reply_to(serial);
        self.unique_name = reply.body().deserialize::<String>().expect("a unique name");
    }

    /// Sends a message built from `builder`, numbering it; returns its serial.
    pub fn send<B>(&mut self, builder: Builder<'_>, body: &B) -> u32
    where
        B: serde::Serialize + zbus::DynamicType,
    {
        self.serial += 1;
        let msg = builder
            .serial(NonZeroU32::new(self.serial).unwrap())
            .build(body)
            .expect("build a message");
        self.stream
            .write_all(&msg.data()[..])
            .expect("write a message");
        self.serial
    }

    /// Writes bytes as they are: for messages no library would build.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Subscribes to every signal (then the test decides whether to read them).
    pub fn subscribe_to_everything(&mut self) {
        self.send(driver_call("AddMatch"), &("type='signal'",));
    }

    /// Reads the next whole message, or None at end of stream or after the read timeout.
    pub fn read_message(&mut self) -> Option<Message> {
        let mut fixed = [0u8; 16];
        self.stream.read_exact(&mut fixed).ok()?;
        let (bytes, endian) = read_rest_of_message(&mut self.stream, fixed)?;
        // SAFETY: from_bytes is unsafe only because it trusts the encoding; the bus sent it, and
        // a test that reads garbage fails on the assertion that follows anyway.
        unsafe { Message::from_bytes(Data::new(bytes, Context::new(endian, 0))) }.ok()
    }

    /// Reads until the reply (method return or error) to `serial`, dropping anything else.
    pub fn read_reply_to(&mut self, serial: u32) -> Message {
        loop {
            let msg = self
                .read_message()
                .unwrap_or_else(|| panic!("no reply to serial {serial}"));
            let header = msg.header();
            let is_reply = matches!(header.message_type(), Type::MethodReturn | Type::Error);
            if is_reply && header.reply_serial().map(|s| s.get()) == Some(serial) {
                return msg;
            }
        }
    }

    /// True once the bus has closed this connection (reads end; pending input is drained).
    pub fn is_disconnected(&mut self) -> bool {
        loop {
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// A method call to the bus driver, to be sent with [`RawClient::send`].
pub fn driver_call(member: &'static str) -> Builder<'static> {
    Message::method_call("/org/freedesktop/DBus", member)
        .destination("org.freedesktop.DBus")
        .interface("org.freedesktop.DBus")
}

/// Reads the rest of a message whose fixed 16-byte header is `fixed`: its whole bytes and order.
fn read_rest_of_message(stream: &mut UnixStream, fixed: [u8; 16]) -> Option<(Vec<u8>, Endian)> {
    let endian = match fixed[0] {
        b'l' => Endian::Little,
        b'B' => Endian::Big,
        other => panic!("the bus sent endianness byte {other:#x}"),
    };
    let word = |at: usize| {
        let bytes = [fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]];
        match endian {
            Endian::Little => u32::from_le_bytes(bytes),
            Endian::Big => u32::from_be_bytes(bytes),
        }
    } as usize;
    let body_len = word(4);
    let fields_len = word(12);
    let header_len = (16 + fields_len).div_ceil(8) * 8;
    let mut bytes = fixed.to_vec();
    bytes.resize(header_len + body_len, 0);
    stream.read_exact(&mut bytes[16..]).ok()?;
    Some((bytes, endian))
}

fn read_line(stream: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).expect("the bus answers");
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).trim_end().to_string()
}

impl RawClient {
    /// Connects, authenticates and says Hello as user `uid` (the test must run as root, and the
    /// bus must let that user in, e.g. `<allow user="*"/>`). Only a helper thread takes the
    /// user's identity, with the raw `setresuid` system call (glibc's wrapper would change every
    /// thread): the kernel records the credentials of the thread that connects.
    pub fn connect_as(bus: &TestBus, uid: u32) -> RawClient {
        let path = socket_path(bus);
        std::thread::spawn(move || {
            // Keep root as the saved uid, so that the file-system uid can stay root: the
            // socket is in a directory only root may enter.
            let switched = unsafe {
                libc::syscall(
                    libc::SYS_setresuid,
                    uid as libc::c_long,
                    uid as libc::c_long,
                    0 as libc::c_long,
                )
            };
            assert_eq!(
                switched, 0,
                "setresuid to {uid} (the tests must run as root)"
            );
            unsafe { libc::syscall(libc::SYS_setfsuid, 0 as libc::c_long) };
            let mut client = Self::authenticate(&path);
            client.hello();
            client
        })
        .join()
        .expect("connecting as another user")
    }

    /// Authenticates on a stream that is already connected (EXTERNAL, with unix fd passing),
    /// without saying Hello: for a connection made before the bus accepts it.
    pub fn authenticate_on(mut stream: UnixStream) -> RawClient {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let uid = rustix::process::geteuid().as_raw().to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        let auth = format!("\0AUTH EXTERNAL {hex}\r\n");
        stream.write_all(auth.as_bytes()).unwrap();
        let line = read_line(&mut stream);
        assert!(line.starts_with("OK "), "AUTH answered: {line}");
        stream.write_all(b"NEGOTIATE_UNIX_FD\r\n").unwrap();
        let line = read_line(&mut stream);
        assert!(line.starts_with("AGREE_UNIX_FD"), "answered: {line}");
        stream.write_all(b"BEGIN\r\n").unwrap();
        RawClient {
            stream,
            serial: 0,
            unique_name: String::new(),
        }
    }

    /// Connects to a socket path and writes the start of an authentication, without finishing
    /// it: a connection the bus counts as incomplete.
    pub fn half_open(path: &str) -> UnixStream {
        let mut stream = UnixStream::connect(Path::new(path)).expect("connect");
        stream.write_all(b"\0").expect("write the credentials byte");
        stream
    }

    /// Sends a message with the file descriptors its body holds (as SCM_RIGHTS), numbering
    /// it; returns its serial.
    pub fn send_with_fds<B>(&mut self, builder: Builder<'_>, body: &B) -> u32
    where
        B: serde::Serialize + zbus::DynamicType,
    {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        use std::os::fd::{AsFd, BorrowedFd};
        self.serial += 1;
        let msg = builder
            .serial(NonZeroU32::new(self.serial).unwrap())
            .build(body)
            .expect("build a message");
        let data = msg.data();
        let fds: Vec<BorrowedFd<'_>> = data.fds().iter().map(|f| f.as_fd()).collect();
        let mut space =
            vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
        let sent = rustix::net::sendmsg(
            &self.stream,
            &[std::io::IoSlice::new(data.bytes())],
            &mut control,
            SendFlags::empty(),
        )
        .expect("sendmsg");
        self.stream
            .write_all(&data.bytes()[sent..])
            .expect("write the rest of a message");
        self.serial
    }

    /// Reads the next whole message with the file descriptors that came with it, or None at end
    /// of stream or after the read timeout.
    pub fn read_message_with_fds(&mut self) -> Option<Message> {
        use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
        let mut fds: Vec<std::os::fd::OwnedFd> = Vec::new();
        let mut space = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(253))];
        let mut fixed = [0u8; 16];
        let mut got = 0;
        // The descriptors come with the first bytes of their message.
        while got < fixed.len() {
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let received = rustix::net::recvmsg(
                &self.stream,
                &mut [std::io::IoSliceMut::new(&mut fixed[got..])],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )
            .ok()?
            .bytes;
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received_fds) = message {
                    fds.extend(received_fds);
                }
            }
            if received == 0 {
                return None;
            }
            got += received;
        }
        let (bytes, endian) = read_rest_of_message(&mut self.stream, fixed)?;
        // SAFETY: as in read_message.
        unsafe { Message::from_bytes(Data::new_fds(bytes, Context::new(endian, 0), fds)) }.ok()
    }

    /// Reads messages until `stop` says one is the last wanted, returning them all.
    pub fn read_until(&mut self, mut stop: impl FnMut(&Message) -> bool) -> Vec<Message> {
        let mut got = Vec::new();
        loop {
            let msg = self
                .read_message()
                .expect("the bus sends the expected messages");
            let last = stop(&msg);
            got.push(msg);
            if last {
                return got;
            }
        }
    }
}

/// Added by the hostile suite (raw bytes with fds, connections that may be refused).
impl RawClient {
    pub fn send_bytes_with_fds(
        &mut self,
        bytes: &[u8],
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> std::io::Result<()> {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
        use std::mem::MaybeUninit;
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(std::io::Error::other(
                "too many descriptors for one message",
            ));
        }
        let sent = sendmsg(
            &self.stream,
            &[std::io::IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        )?;
        if sent < bytes.len() {
            self.stream.write_all(&bytes[sent..])?;
        }
        Ok(())
    }

    /// Connects, authenticates and says Hello like [`RawClient::connect`], but returns None
    /// where the bus refuses any step (a limit reached) instead of panicking.
    pub fn try_connect(bus: &TestBus) -> Option<RawClient> {
        let mut stream = UnixStream::connect(Path::new(&socket_path(bus))).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let uid = rustix::process::geteuid().as_raw().to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        stream
            .write_all(format!("\0AUTH EXTERNAL {hex}\r\nBEGIN\r\n").as_bytes())
            .ok()?;
        let line = try_read_line(&mut stream)?;
        if !line.starts_with("OK ") {
            return None;
        }
        let mut client = RawClient {
            stream,
            serial: 0,
            unique_name: String::new(),
        };
        let serial = client.send(driver_call("Hello"), &());
        loop {
            let msg = client.read_message()?;
            let header = msg.header();
            if header.reply_serial().map(|s| s.get()) != Some(serial) {
                continue;
            }
            if header.message_type() != Type::MethodReturn {
                return None;
            }
            client.unique_name = msg.body().deserialize::<String>().ok()?;
            return Some(client);
        }
    }

    /// The serial the next [`RawClient::send`] will use, for messages built by hand.
    pub fn next_serial(&mut self) -> u32 {
        self.serial += 1;
        self.serial
    }
}

/// A line of the SASL exchange, or None when the bus closes the connection or times out.
pub fn try_read_line(stream: &mut UnixStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).ok()?;
        line.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&line).trim_end().to_string())
}
