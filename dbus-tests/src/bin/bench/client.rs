//! A bus client on a raw blocking socket: SASL EXTERNAL and Hello by hand, pre-marshalled
//! messages out, whole messages in.
//!
//! Written by hand rather than with zbus's `Connection` on purpose: the benchmark must cost the
//! client as little as possible, so that the broker is the bottleneck. zbus builds the messages
//! (see [`crate::wire`]); this only moves bytes.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use zbus::Message;

use crate::wire::{self, ERROR, Header, METHOD_RETURN, Template};

/// How long any one read or write may block before the client gives up on the broker.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub const DRIVER: &str = "org.freedesktop.DBus";
const DRIVER_PATH: &str = "/org/freedesktop/DBus";

pub struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// The message [`Client::recv`] returned last.
    last: std::ops::Range<usize>,
    serial: u32,
    pub unique_name: String,
    out: Vec<u8>,
    /// Wait for input in `poll` rather than in a blocking `recv` (see [`Client::fill`]).
    wait_in_poll: bool,
}

impl Client {
    /// Connect, authenticate and say Hello.
    pub fn connect(socket: &Path) -> io::Result<Client> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut client = Client {
            stream,
            buf: vec![0; 16 * 1024],
            start: 0,
            end: 0,
            last: 0..0,
            serial: 0,
            unique_name: String::new(),
            out: Vec::new(),
            wait_in_poll: true,
        };
        client.authenticate(false)?;
        // Built once: the connections workload connects in a loop, and the client must cost
        // little next to the broker.
        static HELLO: std::sync::OnceLock<Template> = std::sync::OnceLock::new();
        let hello = HELLO.get_or_init(|| {
            Template::new(
                &driver_call("Hello")
                    .build(&())
                    .expect("a Hello call builds"),
            )
        });
        // BEGIN and Hello in one write, as libdbus and sd-bus send them.
        let mut first = b"BEGIN\r\n".to_vec();
        let serial = client.next_serial();
        hello.append_to(&mut first, serial, None);
        client.stream.write_all(&first)?;
        let reply = client.wait_reply(serial)?;
        client.unique_name = reply
            .first_string(client.last_message())
            .ok_or_else(|| io::Error::other("Hello reply without a name"))?
            .to_string();
        client.wait_in_poll = false;
        Ok(client)
    }

    /// Wrap a connected socket and run SASL EXTERNAL on it, without Hello (for a peer-to-peer
    /// connection such as dbus-broker's controller).
    pub fn authenticated(stream: UnixStream, unix_fds: bool) -> io::Result<Client> {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut client = Client {
            stream,
            buf: vec![0; 4096],
            start: 0,
            end: 0,
            last: 0..0,
            serial: 0,
            unique_name: String::new(),
            out: Vec::new(),
            wait_in_poll: false,
        };
        client.authenticate(unix_fds)?;
        client.stream.write_all(b"BEGIN\r\n")?;
        Ok(client)
    }

    fn authenticate(&mut self, unix_fds: bool) -> io::Result<()> {
        let uid = rustix::process::getuid().as_raw().to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        self.stream
            .write_all(format!("\0AUTH EXTERNAL {hex}\r\n").as_bytes())?;
        let answer = self.read_line()?;
        if !answer.starts_with("OK ") {
            return Err(io::Error::other(format!("SASL: {answer}")));
        }
        if unix_fds {
            self.stream.write_all(b"NEGOTIATE_UNIX_FD\r\n")?;
            let answer = self.read_line()?;
            if answer != "AGREE_UNIX_FD" {
                return Err(io::Error::other(format!("SASL: {answer}")));
            }
        }
        Ok(())
    }

    /// One SASL line (the server sends nothing else before BEGIN).
    fn read_line(&mut self) -> io::Result<String> {
        loop {
            let unread = &self.buf[self.start..self.end];
            if let Some(at) = unread.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&unread[..at]).into_owned();
                self.start += at + 2;
                return Ok(line);
            }
            self.fill()?;
        }
    }

    pub fn next_serial(&mut self) -> u32 {
        self.serial = self.serial.wrapping_add(1).max(1);
        self.serial
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Send `template` with a fresh serial, and return the serial.
    pub fn send_template(&mut self, template: &Template) -> io::Result<u32> {
        let serial = self.next_serial();
        self.out.clear();
        template.append_to(&mut self.out, serial, None);
        self.stream.write_all(&self.out)?;
        Ok(serial)
    }

    /// Queue a copy of `template` with a fresh serial (and `reply_serial` for a reply) for the
    /// next [`Client::flush`]; returns the serial.
    pub fn queue(&mut self, template: &Template, reply_serial: Option<u32>) -> u32 {
        let serial = self.next_serial();
        template.append_to(&mut self.out, serial, reply_serial);
        serial
    }

    /// Write everything queued, in one write where the socket takes it.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Call `template` and wait for its reply; an error reply is an error.
    pub fn call(&mut self, template: &Template) -> io::Result<Header> {
        let serial = self.send_template(template)?;
        self.wait_reply(serial)
    }

    /// Wait for the reply to `serial`, passing over anything else (signals).
    pub fn wait_reply(&mut self, serial: u32) -> io::Result<Header> {
        loop {
            let header = self.recv()?;
            if header.reply_serial != Some(serial) {
                continue;
            }
            return match header.kind {
                METHOD_RETURN => Ok(header),
                ERROR => Err(io::Error::other(self.error_text(&header))),
                _ => continue,
            };
        }
    }

    /// The error name of an error reply.
    pub fn error_text(&self, header: &Header) -> String {
        match &header.error_name {
            Some(name) => String::from_utf8_lossy(&self.last_message()[name.clone()]).into_owned(),
            None => "an error without a name".to_string(),
        }
    }

    /// The next whole message; its bytes are [`Client::last_message`] until the next call.
    pub fn recv(&mut self) -> io::Result<Header> {
        loop {
            let unread = &self.buf[self.start..self.end];
            if let Some(len) = wire::message_len(unread)
                && unread.len() >= len
            {
                let header = wire::parse_header(&unread[..len]).map_err(io::Error::other)?;
                self.last = self.start..self.start + len;
                self.start += len;
                return Ok(header);
            }
            self.fill()?;
        }
    }

    pub fn last_message(&self) -> &[u8] {
        &self.buf[self.last.clone()]
    }

    /// Whether a whole message is already buffered (so that a reader can batch its answers).
    pub fn has_buffered_message(&self) -> bool {
        let unread = &self.buf[self.start..self.end];
        wire::message_len(unread).is_some_and(|len| unread.len() >= len)
    }

    /// Read more bytes: move what is unread to the front, grow when a message needs it.
    ///
    /// Through the handshake the client waits for input in `poll`, as real clients do (sd-bus,
    /// libdbus, GLib and zbus all wait in poll/epoll for input alone). A client asleep in a
    /// blocking `recv` is also woken each time the broker reads from its socket (the kernel
    /// wakes a socket's readers with its writers), a wake-up no real client pays that showed
    /// as a fifth of the connections workload's broker time and put a ceiling on its rate.
    /// After Hello it reads with a blocking `recv`, the cheapest way, so that the message
    /// workloads keep the broker the bottleneck.
    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            self.last = 0..0;
        }
        let wanted = wire::message_len(&self.buf[..self.end]).unwrap_or(0);
        if self.buf.len() - self.end < 4096 || wanted > self.buf.len() {
            let size = (self.buf.len() * 2).max(wanted);
            self.buf.resize(size, 0);
        }
        let n = if self.wait_in_poll {
            self.read_or_poll()?
        } else {
            use std::io::Read;
            self.stream.read(&mut self.buf[self.end..])?
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the broker closed the connection",
            ));
        }
        self.end += n;
        Ok(())
    }

    /// Read what is there; when nothing is, wait for input in `poll` and read then.
    fn read_or_poll(&mut self) -> io::Result<usize> {
        let buf = &mut self.buf[self.end..];
        loop {
            match rustix::net::recv(&self.stream, &mut *buf, rustix::net::RecvFlags::DONTWAIT) {
                Ok((n, _)) => return Ok(n),
                Err(rustix::io::Errno::AGAIN) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let mut input = [rustix::event::PollFd::new(
                &self.stream,
                rustix::event::PollFlags::IN,
            )];
            let timeout = rustix::time::Timespec {
                tv_sec: IO_TIMEOUT.as_secs() as i64,
                tv_nsec: 0,
            };
            match rustix::event::poll(&mut input, Some(&timeout)) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the broker sent nothing",
                    ));
                }
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A method call to the bus driver.
pub fn driver_call(method: &str) -> zbus::message::Builder<'_> {
    Message::method_call(DRIVER_PATH, method)
        .destination(DRIVER)
        .interface(DRIVER)
}

/// A pre-marshalled call to the driver with a body.
pub fn driver_template<B>(method: &str, body: &B) -> Template
where
    B: serde::Serialize + zbus::wire::DynamicType,
{
    Template::new(
        &driver_call(method)
            .build(body)
            .expect("a valid driver call"),
    )
}
