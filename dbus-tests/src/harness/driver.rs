//! Raw calls to the bus driver, for what zbus's typed `DBusProxy` would check or reshape first
//! (a match rule given as a string, an invalid argument on purpose).

use serde::Serialize;
use zbus::proxy::CacheProperties;
use zbus::{Connection, DynamicType, Message, fdo};

pub const DRIVER_NAME: &str = "org.freedesktop.DBus";
pub const DRIVER_PATH: &str = "/org/freedesktop/DBus";
pub const DRIVER_INTERFACE: &str = "org.freedesktop.DBus";

/// Calls `method` of the driver's `org.freedesktop.DBus` interface with `body` as it is.
pub async fn call_driver<B>(
    connection: &Connection,
    method: &str,
    body: &B,
) -> zbus::Result<Message>
where
    B: Serialize + DynamicType,
{
    connection
        .call_method(
            Some(DRIVER_NAME),
            DRIVER_PATH,
            Some(DRIVER_INTERFACE),
            method,
            body,
        )
        .await
}

/// Adds the match rule `rule`, exactly as written, to `connection`.
pub async fn add_match(connection: &Connection, rule: &str) -> zbus::Result<()> {
    call_driver(connection, "AddMatch", &(rule,))
        .await
        .map(drop)
}

/// A proxy for the driver's `org.freedesktop.DBus` interface that neither caches properties nor
/// subscribes to anything behind the test's back (so match-rule tests see only their own rules).
pub async fn driver_proxy(connection: &Connection) -> fdo::DBusProxy<'static> {
    fdo::DBusProxy::builder(connection)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .expect("driver proxy")
}
