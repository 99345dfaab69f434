//! One client connection: its socket, what it has sent that is not parsed yet, and what waits to
//! be written to it.
//!
//! Reading and writing never block. The outgoing queue holds whole messages, shared with the
//! other recipients of a broadcast; a flush writes as many of them as the socket takes in one
//! `sendmsg`, so a busy peer costs one system call for many messages.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};
use zbus::wire::serialized::Data;

use crate::quota::Charge;

/// Bytes to write: a message, or a SASL reply (no descriptors).
pub type Outgoing = Data<'static, 'static>;

/// How many messages one `sendmsg` carries at most.
const MAX_BATCH: usize = 64;
/// The most file descriptors one message may carry on Linux (SCM_MAX_FD).
pub const MAX_FDS_PER_MESSAGE: usize = 253;
/// Bytes read per `recvmsg` at least.
const READ_CHUNK: usize = 64 * 1024;
/// How many read buffers of idle peers are kept for reuse.
const MAX_SPARE_BUFFERS: usize = 16;

thread_local! {
    /// Read buffers of peers that went idle, for the next peer that reads: an idle connection
    /// then holds no buffer (instead of 64 KiB), and a busy one does not allocate and zero a
    /// fresh buffer each time it wakes up. The broker's event loop is one thread.
    static SPARE_BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// What is waiting to be written to a peer.
#[derive(Default)]
pub struct OutQueue {
    messages: VecDeque<Outgoing>,
    /// Bytes of the front message already written.
    written: usize,
    /// Bytes in the queue not written yet, for max_outgoing_bytes.
    pub bytes: usize,
    /// File descriptors in the queue not written yet, for max_outgoing_unix_fds.
    pub fds: usize,
    /// What each queued message is charged for, front first (see `quota`).
    charges: VecDeque<Charge>,
    /// Charges of messages written (or dropped) since the bus last took them back.
    pub released: Vec<Charge>,
}

impl OutQueue {
    #[cfg(test)]
    pub fn push(&mut self, msg: &zbus::Message) {
        self.push_data(msg.data().clone());
    }

    pub fn push_data(&mut self, data: Outgoing) {
        self.push_charged(data, Charge::NONE);
    }

    /// Queue a message with what it is charged for, given back in `released` once written.
    pub fn push_charged(&mut self, data: Outgoing, charge: Charge) {
        self.bytes += data.bytes().len();
        self.fds += data.fds().len();
        self.messages.push_back(data);
        self.charges.push_back(charge);
    }

    /// Drop everything still queued (the peer is gone), releasing its charges.
    pub fn discard(&mut self) {
        self.messages.clear();
        self.written = 0;
        self.bytes = 0;
        self.fds = 0;
        self.released
            .extend(self.charges.drain(..).filter(|c| c.bytes > 0));
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Write what the socket takes. Returns `Ok(true)` when the queue is empty.
    ///
    /// A message that carries file descriptors always starts a `sendmsg` of its own, with the
    /// descriptors attached: clients such as sd-bus take every descriptor that comes with a read
    /// for the message that read starts.
    pub fn flush(&mut self, fd: BorrowedFd<'_>) -> io::Result<bool> {
        while !self.messages.is_empty() {
            // On the stack: a flush runs for every batch of messages, an allocation showed in
            // the profile.
            let mut slices = [IoSlice::new(&[]); MAX_BATCH];
            let mut count = 0;
            let mut fds: Vec<BorrowedFd<'_>> = Vec::new();
            for (i, msg) in self.messages.iter().take(MAX_BATCH).enumerate() {
                let msg_fds = msg.fds();
                if !msg_fds.is_empty() {
                    if i > 0 {
                        break;
                    }
                    if self.written == 0 {
                        fds.extend(msg_fds.iter().map(|f| f.as_fd()));
                    }
                }
                let bytes = msg.bytes();
                let start = if i == 0 { self.written } else { 0 };
                slices[count] = IoSlice::new(&bytes[start..]);
                count += 1;
            }
            let mut space =
                [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !fds.is_empty() {
                control.push(SendAncillaryMessage::ScmRights(&fds));
            }
            let sent = match sendmsg(
                fd,
                &slices[..count],
                &mut control,
                SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
            ) {
                Ok(n) => n,
                Err(Errno::AGAIN) => return Ok(false),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            self.consume(sent);
        }
        Ok(true)
    }

    fn consume(&mut self, mut sent: usize) {
        self.bytes -= sent;
        while sent > 0 {
            let front_len = self.messages[0].bytes().len() - self.written;
            if sent >= front_len {
                sent -= front_len;
                let msg = self.messages.pop_front().expect("front exists");
                self.fds -= msg.fds().len();
                if let Some(charge) = self.charges.pop_front()
                    && charge.bytes > 0
                {
                    self.released.push(charge);
                }
                self.written = 0;
            } else {
                self.written += sent;
                sent = 0;
            }
        }
    }
}

/// Bytes read from a peer and not consumed yet, and the file descriptors that came with them.
///
/// The buffer stays initialised at its full length (`buf[start..end]` holds the data), so a read
/// does not have to zero memory first.
#[derive(Default)]
pub struct InBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    pub fds: VecDeque<OwnedFd>,
}

/// A closed connection's buffer serves the next one: a new connection does not allocate and
/// zero 64 KiB for its handshake (that showed in the profile of connection set-up).
impl Drop for InBuffer {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.buf));
    }
}

/// Keep `buf` among the spare buffers, unless it grew for a large message or enough are spare.
fn give_back(buf: Vec<u8>) {
    if buf.is_empty() || buf.len() > 4 * READ_CHUNK {
        return;
    }
    // `try_with`: a buffer dropped while the thread exits just goes to the allocator.
    let _ = SPARE_BUFFERS.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < MAX_SPARE_BUFFERS {
            spare.push(buf);
        }
    });
}

/// The result of one read.
pub enum ReadOutcome {
    /// Some bytes (and maybe descriptors) arrived. `drained`: the read took less than it had
    /// room for and brought no descriptors, so the socket had nothing more (a unix socket's
    /// read stops early only after a message that carries descriptors); what arrives later is
    /// reported by epoll anew.
    Data { drained: bool },
    /// Nothing more to read for now.
    WouldBlock,
    /// The peer closed its end.
    Closed,
}

impl InBuffer {
    /// The bytes not consumed yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Memory held, for accounting.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Give the buffer back when everything in it was consumed (the peer has nothing more to
    /// read for now): to the spare buffers for the next reader, or to the allocator when it
    /// grew for a large message or enough are spare already.
    pub fn shrink(&mut self) {
        if self.start != self.end || self.buf.is_empty() {
            return;
        }
        self.start = 0;
        self.end = 0;
        give_back(std::mem::take(&mut self.buf));
    }

    /// Read once from `fd`, making room for at least `want` more bytes.
    pub fn read_from(&mut self, fd: BorrowedFd<'_>, want: usize) -> io::Result<ReadOutcome> {
        let need = want.max(READ_CHUNK / 4);
        if self.buf.is_empty()
            && let Some(spare) = SPARE_BUFFERS.with_borrow_mut(|spare| spare.pop())
        {
            self.buf = spare;
        }
        if self.buf.len() - self.end < need {
            // Move what is pending to the front, then grow if that is not enough.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < need {
                let len = (self.end + need).max(READ_CHUNK);
                self.buf.resize(len, 0);
            }
        }
        let mut space =
            [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let room = self.buf.len() - self.end;
        let result = loop {
            let mut iov = [IoSliceMut::new(&mut self.buf[self.end..])];
            match recvmsg(
                fd,
                &mut iov,
                &mut control,
                RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
            ) {
                Err(Errno::INTR) => continue,
                other => break other,
            }
        };
        let received = match result {
            Ok(msg) => msg.bytes,
            Err(Errno::AGAIN) => return Ok(ReadOutcome::WouldBlock),
            Err(e) => return Err(e.into()),
        };
        self.end += received;
        let fds_before = self.fds.len();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                self.fds.extend(fds);
            }
        }
        if received == 0 {
            return Ok(ReadOutcome::Closed);
        }
        Ok(ReadOutcome::Data {
            drained: received < room && self.fds.len() == fds_before,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use zbus::Message;

    fn signal(n: u32) -> Message {
        Message::signal("/a", "a.b", "C").build(&(n,)).unwrap()
    }

    #[test]
    fn queued_messages_go_out_in_order() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut q = OutQueue::default();
        let msgs: Vec<Message> = (1..=3).map(signal).collect();
        let total: usize = msgs.iter().map(|m| m.data().len()).sum();
        for m in &msgs {
            q.push(m);
        }
        assert_eq!(q.bytes, total);
        assert!(q.flush(a.as_fd()).unwrap());
        assert_eq!(q.bytes, 0);
        let mut got = vec![0; total];
        b.read_exact(&mut got).unwrap();
        let expected: Vec<u8> = msgs
            .iter()
            .flat_map(|m| m.data().bytes().to_vec())
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_full_socket_keeps_the_rest_queued() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut q = OutQueue::default();
        let big = Message::signal("/a", "a.b", "C")
            .build(&(vec![7u8; 1 << 20],))
            .unwrap();
        for _ in 0..4 {
            q.push(&big);
        }
        assert!(!q.flush(a.as_fd()).unwrap());
        assert!(q.bytes > 0 && q.bytes < 4 * big.data().len());
        // Drain the reader while flushing until everything went through.
        let mut received = 0;
        let mut chunk = vec![0; 1 << 16];
        while !q.flush(a.as_fd()).unwrap() {
            received += b.read(&mut chunk).unwrap();
        }
        b.set_nonblocking(true).unwrap();
        while let Ok(n) = b.read(&mut chunk) {
            if n == 0 {
                break;
            }
            received += n;
        }
        assert_eq!(received, 4 * big.data().len());
    }

    #[test]
    fn reads_collect_bytes_and_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let msg = Message::signal("/a", "a.b", "C").build(&()).unwrap();
        let mut fds = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut fds);
        let borrowed = [r.as_fd()];
        control.push(SendAncillaryMessage::ScmRights(&borrowed));
        sendmsg(
            &a,
            &[IoSlice::new(msg.data().bytes())],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
        let mut inbuf = InBuffer::default();
        // A read that brings descriptors may have stopped early: not known to be drained.
        assert!(matches!(
            inbuf.read_from(b.as_fd(), 0).unwrap(),
            ReadOutcome::Data { drained: false }
        ));
        assert_eq!(inbuf.pending(), msg.data().bytes());
        assert_eq!(inbuf.fds.len(), 1);
        assert_eq!(inbuf.fds.drain(..).count(), 1);
        inbuf.consume(msg.data().len());
        assert!(inbuf.pending().is_empty());
        assert!(matches!(
            inbuf.read_from(b.as_fd(), 0).unwrap(),
            ReadOutcome::WouldBlock
        ));
        drop(a);
        assert!(matches!(
            inbuf.read_from(b.as_fd(), 0).unwrap(),
            ReadOutcome::Closed
        ));
    }

    #[test]
    fn a_short_read_without_descriptors_says_the_socket_is_drained() {
        let (mut a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let msg = signal(1);
        std::io::Write::write_all(&mut a, msg.data().bytes()).unwrap();
        let mut inbuf = InBuffer::default();
        assert!(matches!(
            inbuf.read_from(b.as_fd(), 0).unwrap(),
            ReadOutcome::Data { drained: true }
        ));
        assert_eq!(inbuf.pending(), msg.data().bytes());
        // A read that fills all the room it had cannot tell.
        let big = vec![7u8; READ_CHUNK * 2];
        std::io::Write::write_all(&mut a, &big[..READ_CHUNK]).unwrap();
        let mut inbuf = InBuffer::default();
        let outcome = inbuf.read_from(b.as_fd(), 0).unwrap();
        let room = inbuf.buf.len();
        let got = inbuf.pending().len();
        assert!(
            matches!(outcome, ReadOutcome::Data { drained } if drained == (got < room)),
            "read {got} of {room}"
        );
    }
}
