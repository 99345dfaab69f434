//! Harness for end-to-end tests: starts a bus daemon on a private socket and runs real D-Bus
//! clients (busctl, gdbus, dbus-send, dbus-monitor, dbus-test-tool, zbus) against it.
//!
//! The daemon is `$TELBUS_TEST_DAEMON` when set (e.g. `/usr/bin/dbus-daemon`), otherwise the
//! workspace's `target/release/telbusd`. Every bus lives in a temp dir of its own and is killed
//! when its [`TestBus`] is dropped; no test ever reaches the machine's own buses.
//!
//! ```no_run
//! use telbus_dbus_tests::TestBus;
//!
//! let bus = TestBus::start();
//! let out = bus.busctl(["list"]).assert_success();
//! assert!(out.stdout.contains("org.freedesktop.DBus"));
//! bus.assert_alive();
//! ```

mod harness;

pub use harness::bus::{DAEMON_ENV, TestBus, TestBusBuilder, daemon_path};
pub use harness::config::{SYSTEM_CONF, session_config, system_config};
pub use harness::driver::{
    DRIVER_INTERFACE, DRIVER_NAME, DRIVER_PATH, add_match, call_driver, driver_proxy,
};
pub use harness::errors::{ErrorReply, error_reply, expect_error, expect_error_name};
pub use harness::process::{Background, CLIENT_TIMEOUT, ClientOutput, run_command};
pub use harness::raw::{RawClient, driver_call, socket_path, try_read_line};
pub use harness::service::{
    ServiceThread, TEST_CHILD_PATH, TEST_INTERFACE, TEST_PATH, TestObject, TestObjectProxy,
    serve_test_object,
};
pub use harness::telaf::{TelafBus, api_dir};
pub use harness::telaf_services as services;
pub use harness::timeout::{STEP_TIMEOUT, TEST_TIMEOUT, next_signal, run, within};
