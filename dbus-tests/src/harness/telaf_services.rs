//! The bundled TelAF-style services (`services/`) as the end-to-end tests meet them: their bus
//! names, the programs of the release build, and their property-change signals.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use zbus::message::Type;
use zbus::wire::OwnedVariant;
use zbus::{Connection, MatchRule, MessageStream};

use super::timeout::next_signal;

pub const INFO: &str = "io.telaf.infoService.le_info";
pub const PIN1: &str = "io.telaf.gpioService.le_gpioPin1";
pub const PIN2: &str = "io.telaf.gpioService.le_gpioPin2";
pub const MCC: &str = "io.telaf.modemService.le_mcc";
pub const DATA: &str = "io.telaf.dataConnectionService.le_data";
pub const PM: &str = "io.telaf.powerMgr.le_pm";

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// A program of the workspace's release build; fails saying what to build when it is missing.
#[track_caller]
pub fn release_program(name: &str) -> PathBuf {
    let path = workspace().join("target/release").join(name);
    assert!(
        path.exists(),
        "{} is missing: cargo build --release -p telbus-broker -p telbus-services \
         -p telbus-examples -p telbus-tools",
        path.display()
    );
    path
}

/// Signals `PropertiesChanged` of objects at `path`.
pub async fn property_changes(conn: &Connection, path: &str) -> MessageStream {
    let rule = MatchRule::builder()
        .msg_type(Type::Signal)
        .interface("org.freedesktop.DBus.Properties")
        .member("PropertiesChanged")
        .path(path)
        .build()
        .unwrap();
    MessageStream::for_match_rule(rule, conn, None)
        .await
        .unwrap()
}

/// The next new value of property `name` of `interface` on a [`property_changes`] stream.
pub async fn next_property_value(
    stream: &mut MessageStream,
    interface: &str,
    name: &str,
) -> OwnedVariant {
    loop {
        let signal = next_signal(stream, |_| true).await;
        let (iface, changed, _): (String, HashMap<String, OwnedVariant>, Vec<String>) =
            signal.body().deserialize().unwrap();
        if iface == interface
            && let Some(value) = changed.get(name)
        {
            return value.try_clone().unwrap();
        }
    }
}
