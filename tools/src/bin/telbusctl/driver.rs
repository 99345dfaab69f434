//! What telbusctl asks the bus driver (org.freedesktop.DBus): names, credentials and the
//! Debug.Stats counters.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};
use zbus::Connection;
use zbus::wire::{OwnedVariant, Variant};

use crate::Cli;

const DRIVER: &str = "org.freedesktop.DBus";
const DRIVER_PATH: &str = "/org/freedesktop/DBus";
const STATS: &str = "org.freedesktop.DBus.Debug.Stats";

/// A connection to the bus, for asking its driver.
pub struct Driver {
    pub connection: Connection,
    pub address: String,
}

/// One connected peer as the driver describes it.
pub struct Peer {
    pub unique_name: String,
    /// The well-known names it owns (not those it waits for in a queue).
    pub names: Vec<String>,
    pub uid: Option<u32>,
    pub pid: Option<u32>,
    /// GetConnectionStats, when the bus allows us to read it.
    pub stats: Map<String, Json>,
}

impl Peer {
    /// A counter from the peer's statistics, 0 when unknown.
    pub fn stat(&self, key: &str) -> u64 {
        self.stats.get(key).and_then(Json::as_u64).unwrap_or(0)
    }

    /// The peer's command line, read from /proc (so only for peers on this machine, in our
    /// pid namespace, and only when /proc lets us read it).
    pub fn command(&self) -> Option<String> {
        let bytes = std::fs::read(format!("/proc/{}/cmdline", self.pid?)).ok()?;
        let words: Vec<String> = bytes
            .split(|&b| b == 0)
            .filter(|w| !w.is_empty())
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        (!words.is_empty()).then(|| words.join(" "))
    }
}

/// The bus address telbusctl's options select, as zbus would resolve it.
pub fn builder(cli: &Cli) -> Result<(zbus::connection::Builder<'static>, String), String> {
    if let Some(address) = &cli.address {
        return Ok((
            zbus::connection::Builder::address(address.as_str()),
            address.clone(),
        ));
    }
    if cli.system {
        let address = std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
            .unwrap_or_else(|_| "unix:path=/run/dbus/system_bus_socket".into());
        Ok((zbus::connection::Builder::system(), address))
    } else {
        let address = std::env::var("DBUS_SESSION_BUS_ADDRESS").map_err(|_| {
            "DBUS_SESSION_BUS_ADDRESS is not set: use --address or --system".to_string()
        })?;
        Ok((zbus::connection::Builder::session(), address))
    }
}

impl Driver {
    pub async fn connect(cli: &Cli) -> Result<Driver, String> {
        let (builder, address) = builder(cli)?;
        let connection = builder
            .build()
            .await
            .map_err(|e| format!("cannot connect to {address}: {e}"))?;
        Ok(Driver {
            connection,
            address,
        })
    }

    async fn call<B, R>(&self, interface: &str, method: &str, body: &B) -> Result<R, String>
    where
        B: zbus::wire::export::serde::Serialize + zbus::wire::DynamicType,
        R: for<'d> zbus::wire::export::serde::Deserialize<'d> + zbus::wire::Type,
    {
        let reply = self
            .connection
            .call_method(Some(DRIVER), DRIVER_PATH, Some(interface), method, body)
            .await
            .map_err(|e| format!("{interface}.{method}: {}", error_text(&e)))?;
        reply
            .body()
            .deserialize::<R>()
            .map_err(|e| format!("{interface}.{method}: unexpected reply: {e}"))
    }

    /// GetStats: the bus's counters.
    pub async fn stats(&self) -> Result<Map<String, Json>, String> {
        let stats: HashMap<String, OwnedVariant> = self.call(STATS, "GetStats", &()).await?;
        Ok(to_json_map(stats))
    }

    /// GetConnectionStats of one connection.
    pub async fn connection_stats(&self, name: &str) -> Result<Map<String, Json>, String> {
        let stats: HashMap<String, OwnedVariant> =
            self.call(STATS, "GetConnectionStats", &(name,)).await?;
        Ok(to_json_map(stats))
    }

    /// Every connected peer but the driver, in connection order; ourselves only if asked.
    pub async fn peers(&self, include_self: bool) -> Result<Vec<Peer>, String> {
        let names: Vec<String> = self.call(DRIVER, "ListNames", &()).await?;
        let me = self.connection.unique_name().map(|n| n.to_string());
        let mut peers: Vec<Peer> = Vec::new();
        for name in names.iter().filter(|n| n.starts_with(':')) {
            if !include_self && Some(name) == me.as_ref() {
                continue;
            }
            // A peer may leave while we ask; what we could not learn stays unknown.
            let creds: HashMap<String, OwnedVariant> = self
                .call(DRIVER, "GetConnectionCredentials", &(name,))
                .await
                .unwrap_or_default();
            let number = |key: &str| match creds.get(key).map(|v| &**v) {
                Some(Variant::U32(n)) => Some(*n),
                _ => None,
            };
            let stats = self.connection_stats(name).await.unwrap_or_default();
            peers.push(Peer {
                unique_name: name.clone(),
                names: Vec::new(),
                uid: number("UnixUserID"),
                pid: number("ProcessID"),
                stats,
            });
        }
        for name in names.iter().filter(|n| !n.starts_with(':') && *n != DRIVER) {
            let Ok(owner) = self
                .call::<_, String>(DRIVER, "GetNameOwner", &(name,))
                .await
            else {
                continue;
            };
            if let Some(peer) = peers.iter_mut().find(|p| p.unique_name == owner) {
                peer.names.push(name.clone());
            }
        }
        peers.sort_by_key(|p| connection_number(&p.unique_name));
        for peer in &mut peers {
            peer.names.sort();
        }
        Ok(peers)
    }
}

/// The number in a unique name ":1.42", for sorting peers in the order they connected.
fn connection_number(unique_name: &str) -> (u64, u64) {
    let mut parts = unique_name
        .trim_start_matches(':')
        .split('.')
        .map(|p| p.parse().unwrap_or(u64::MAX));
    (
        parts.next().unwrap_or(u64::MAX),
        parts.next().unwrap_or(u64::MAX),
    )
}

/// A D-Bus error as "Name: text", the way people read them.
pub fn error_text(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, text, _) => {
            format!("{name}: {}", text.as_deref().unwrap_or(""))
        }
        other => other.to_string(),
    }
}

fn to_json_map(stats: HashMap<String, OwnedVariant>) -> Map<String, Json> {
    let mut keys: Vec<_> = stats.into_iter().collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    keys.into_iter()
        .map(|(key, value)| (key, to_json(&value)))
        .collect()
}

/// The statistics' values are numbers and strings; anything else is shown as D-Bus text.
fn to_json(value: &Variant<'_>) -> Json {
    match value {
        Variant::U8(n) => Json::from(*n),
        Variant::Bool(b) => Json::from(*b),
        Variant::I16(n) => Json::from(*n),
        Variant::U16(n) => Json::from(*n),
        Variant::I32(n) => Json::from(*n),
        Variant::U32(n) => Json::from(*n),
        Variant::I64(n) => Json::from(*n),
        Variant::U64(n) => Json::from(*n),
        Variant::F64(n) => Json::from(*n),
        Variant::Str(s) => Json::from(s.as_str()),
        Variant::Variant(inner) => to_json(inner),
        other => Json::from(other.to_string()),
    }
}
