//! Unix file descriptors passed through the bus: in a call, in a reply, and in signals, unicast
//! and broadcast to several receivers.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use futures::StreamExt;
use telbus_dbus_tests::{
    STEP_TIMEOUT, TestBus, TestObjectProxy, add_match, run, serve_test_object, within,
};
use zbus::message::Type;
use zbus::{Message, MessageStream};

const SERVICE: &str = "org.telbus.FdTest";

fn pipe_with(text: &str) -> OwnedFd {
    let (read_end, write_end) = rustix::pipe::pipe().unwrap();
    std::fs::File::from(write_end)
        .write_all(text.as_bytes())
        .unwrap();
    read_end
}

fn read_all(fd: impl AsFd) -> String {
    let mut text = String::new();
    std::fs::File::from(fd.as_fd().try_clone_to_owned().unwrap())
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// (device, inode): what says two descriptors are the same open file.
fn identity(fd: impl AsFd) -> (u64, u64) {
    let stat = rustix::fs::fstat(fd).unwrap();
    (stat.st_dev, stat.st_ino)
}

async fn test_proxy(client: &zbus::Connection) -> TestObjectProxy<'static> {
    TestObjectProxy::builder(client)
        .destination(SERVICE)
        .build()
        .await
        .unwrap()
}

#[test]
fn a_pipe_sent_in_a_call_is_read_by_the_service() {
    let bus = TestBus::start();
    run(async {
        let _service = serve_test_object(bus.address(), Some(SERVICE)).await;
        let client = bus.connect().await;
        let read_end = pipe_with("through the bus");
        let text = test_proxy(&client)
            .await
            .read_fd(zbus::Fd::from(&read_end))
            .await
            .unwrap();
        assert_eq!(text, "through the bus");
    });
    bus.assert_alive();
}

#[test]
fn a_pipe_returned_in_a_reply_is_read_by_the_caller() {
    let bus = TestBus::start();
    run(async {
        let _service = serve_test_object(bus.address(), Some(SERVICE)).await;
        let client = bus.connect().await;
        let fd = test_proxy(&client)
            .await
            .open_pipe("from the service")
            .await
            .unwrap();
        assert_eq!(read_all(&fd), "from the service");
    });
    bus.assert_alive();
}

#[test]
fn fds_in_signals_reach_every_receiver() {
    let bus = TestBus::start();
    run(async {
        let sender = bus.connect().await;
        let addressee = bus.connect().await;
        let subscribers = [bus.connect().await, bus.connect().await];
        let mut addressee_inbox = MessageStream::from(&addressee);
        let mut inboxes: Vec<MessageStream> = subscribers.iter().map(MessageStream::from).collect();
        for subscriber in &subscribers {
            add_match(
                subscriber,
                "type='signal',interface='org.telbus.Fds',member='Broadcast'",
            )
            .await
            .unwrap();
        }

        // Both ends of one pipe: the write end to the addressee, the read end to everyone.
        let (read_end, write_end) = rustix::pipe::pipe().unwrap();
        let unicast = Message::signal("/org/telbus/Fds", "org.telbus.Fds", "WriteHere")
            .destination(addressee.unique_name().unwrap().as_str())
            .build(&(zbus::Fd::from(&write_end),))
            .unwrap();
        sender.send(&unicast).await.unwrap();
        let broadcast = Message::signal("/org/telbus/Fds", "org.telbus.Fds", "Broadcast")
            .build(&(zbus::Fd::from(&read_end), "payload"))
            .unwrap();
        sender.send(&broadcast).await.unwrap();
        drop(write_end);

        // The addressee writes through the descriptor it was given...
        let signal = next_fd_signal(&mut addressee_inbox).await;
        let body = signal.body();
        let received: zbus::Fd<'_> = body.deserialize().unwrap();
        std::fs::File::from(received.as_fd().try_clone_to_owned().unwrap())
            .write_all(b"written by the addressee")
            .unwrap();

        // ...and each subscriber holds its own descriptor for the same pipe's read end.
        let mut read_ends = Vec::new();
        for inbox in &mut inboxes {
            let signal = next_fd_signal(inbox).await;
            assert_eq!(signal.header().unix_fds(), Some(1));
            let body = signal.body();
            let (fd, text): (zbus::Fd<'_>, String) = body.deserialize().unwrap();
            assert_eq!(text, "payload");
            assert_eq!(identity(&fd), identity(&read_end), "the same pipe");
            read_ends.push(fd.as_fd().try_clone_to_owned().unwrap());
        }
        // Read a known length rather than to end of file: copies of the write end live on in
        // the messages still held here.
        let expected = b"written by the addressee";
        let mut buffer = vec![0u8; expected.len()];
        std::fs::File::from(read_ends.pop().unwrap())
            .read_exact(&mut buffer)
            .unwrap();
        assert_eq!(buffer, expected);
    });
    bus.assert_alive();
}

async fn next_fd_signal(inbox: &mut MessageStream) -> Message {
    within(STEP_TIMEOUT, "a signal with an fd", async {
        loop {
            let message = inbox.next().await.unwrap().unwrap();
            if message.message_type() == Type::Signal
                && message
                    .header()
                    .interface()
                    .is_some_and(|i| i == "org.telbus.Fds")
            {
                return message;
            }
        }
    })
    .await
}
