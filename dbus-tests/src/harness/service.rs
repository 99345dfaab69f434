//! A small D-Bus service for clients to call: methods with arguments and replies, errors,
//! properties, signals and file descriptors, served with zbus on the test bus.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

use futures::channel::oneshot;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, connection, fdo, interface};

use super::bus::TestBus;
use super::timeout::{STEP_TIMEOUT, within};

/// The interface [`TestObject`] serves.
pub const TEST_INTERFACE: &str = "org.telbus.Test1";
/// Where [`serve_test_object`] serves a [`TestObject`].
pub const TEST_PATH: &str = "/org/telbus/Test";
/// Where [`serve_test_object`] serves a second one, so that the object tree has depth.
pub const TEST_CHILD_PATH: &str = "/org/telbus/Test/Child";

/// The object behind [`TEST_INTERFACE`].
#[derive(Debug, Default)]
pub struct TestObject {
    label: String,
    echo_count: u32,
}

#[interface(
    name = "org.telbus.Test1",
    proxy(default_path = "/org/telbus/Test", visibility = "pub")
)]
impl TestObject {
    /// Returns `text` unchanged.
    fn echo(&mut self, text: &str) -> String {
        self.echo_count += 1;
        text.to_string()
    }

    /// Returns `a + b`, or InvalidArgs when that overflows.
    fn add(&self, a: i32, b: i32) -> fdo::Result<i32> {
        a.checked_add(b)
            .ok_or_else(|| fdo::Error::InvalidArgs(format!("{a} + {b} overflows")))
    }

    /// Two results: the length of `text` in bytes, and `text` in upper case.
    #[zbus(out_args("length", "upper"))]
    fn describe(&self, text: &str) -> (u32, String) {
        (text.len() as u32, text.to_uppercase())
    }

    /// Always fails with org.freedesktop.DBus.Error.Failed and `message`.
    fn fail(&self, message: &str) -> fdo::Result<()> {
        Err(fdo::Error::Failed(message.to_string()))
    }

    /// Emits the `Pinged` signal, broadcast, then replies.
    async fn emit_pinged(
        &self,
        value: u32,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> fdo::Result<()> {
        Self::pinged(&emitter, value).await?;
        Ok(())
    }

    /// Reads `fd` to its end and returns what it read.
    fn read_fd(&self, fd: zbus::Fd<'_>) -> fdo::Result<String> {
        let owned = fd.as_fd().try_clone_to_owned().map_err(io_failed)?;
        let mut text = String::new();
        std::fs::File::from(owned)
            .read_to_string(&mut text)
            .map_err(io_failed)?;
        Ok(text)
    }

    /// Returns the read end of a pipe that holds `text`, its write end already closed.
    fn open_pipe(&self, text: &str) -> fdo::Result<zbus::OwnedFd> {
        let (read_end, write_end) = rustix::pipe::pipe().map_err(|e| io_failed(e.into()))?;
        let mut writer = std::fs::File::from(write_end);
        writer.write_all(text.as_bytes()).map_err(io_failed)?;
        drop(writer);
        Ok(zbus::OwnedFd::from(read_end))
    }

    /// A broadcast signal.
    #[zbus(signal)]
    async fn pinged(emitter: &SignalEmitter<'_>, value: u32) -> zbus::Result<()>;

    /// A read-write property.
    #[zbus(property)]
    fn label(&self) -> String {
        self.label.clone()
    }

    #[zbus(property)]
    fn set_label(&mut self, label: String) {
        self.label = label;
    }

    /// How many times Echo was called: read-only.
    #[zbus(property)]
    fn echo_count(&self) -> u32 {
        self.echo_count
    }
}

fn io_failed(error: std::io::Error) -> fdo::Error {
    fdo::Error::IOError(error.to_string())
}

/// Connects to the bus at `address` and serves a [`TestObject`] at [`TEST_PATH`] and another at
/// [`TEST_CHILD_PATH`], owning `name` if given. The objects are served for as long as the
/// connection lives, by whichever thread runs the runtime.
pub async fn serve_test_object(address: &str, name: Option<&str>) -> Connection {
    let mut builder = connection::Builder::address(address)
        .serve_at(TEST_PATH, TestObject::default())
        .serve_at(TEST_CHILD_PATH, TestObject::default());
    if let Some(name) = name {
        builder = builder.name(name.to_string());
    }
    within(STEP_TIMEOUT, "connecting the test service", builder.build())
        .await
        .expect("test service connection")
}

/// A [`TestObject`] service on a thread of its own, for tests whose own thread blocks (on a
/// client program, say) while the service must answer. Stops when dropped.
pub struct ServiceThread {
    unique_name: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ServiceThread {
    /// Starts the service and returns once it is on the bus (owning `name`, if given).
    #[track_caller]
    pub fn start(bus: &TestBus, name: Option<&str>) -> ServiceThread {
        let address = bus.address().to_string();
        let name = name.map(str::to_string);
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            zruntime::block_on(async move {
                let connection = serve_test_object(&address, name.as_deref()).await;
                let unique = connection.unique_name().expect("unique name").to_string();
                ready_tx.send(unique).expect("test waits for the service");
                // Served until the test drops its handle (which drops the sender too).
                let _ = stop_rx.await;
                drop(connection);
            })
        });
        let unique_name = match ready_rx.recv_timeout(STEP_TIMEOUT) {
            Ok(unique) => unique,
            Err(_) => panic!("the test service did not come up"),
        };
        ServiceThread {
            unique_name,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The service's unique connection name.
    pub fn unique_name(&self) -> &str {
        &self.unique_name
    }
}

impl Drop for ServiceThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // A panic in the service thread fails the test that owns it.
            if thread.join().is_err() && !thread::panicking() {
                panic!("the test service thread panicked");
            }
        }
    }
}
