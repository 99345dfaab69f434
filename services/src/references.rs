//! The references a service handed out, keyed by the client that holds them, and released when
//! that client leaves the bus.
//!
//! A service calls [`References::register`] when it hands a client a reference (a call, a
//! request, a wakeup source, a handler registration) and [`References::release`] when the
//! client gives it back. When the client disconnects — cleanly or killed — the service gets one
//! [`Departure`] listing everything the client still held, and releases it.
//!
//! How a departure is learnt depends on the bus: when it offers `io.telaf.Broker1`
//! (docs/broker1-contract.md), references are registered there with `AddReference` and the
//! broker sends `ClientGone`; on any other bus the service watches `NameOwnerChanged` for the
//! unique names that hold references.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use tracing::{debug, info, warn};
use zbus::message::Type;
use zbus::wire::OwnedObjectPath;
use zbus::{Connection, MatchRule, Message, MessageStream};

/// The bus driver's name, which also serves `io.telaf.Broker1`.
pub const DRIVER: &str = "org.freedesktop.DBus";
/// The broker's TelAF interface (docs/broker1-contract.md).
pub const BROKER1_INTERFACE: &str = "io.telaf.Broker1";
/// Where the bus serves `io.telaf.Broker1`.
pub const BROKER1_PATH: &str = "/io/telaf/Broker1";
/// The broker's error for a path it does not know or a client that is not connected.
pub const BAD_REFERENCE: &str = "io.telaf.Error.BadReference";

/// How the service learns that a client left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// The bus tracks the references (`AddReference`) and sends `ClientGone`.
    Broker1,
    /// The service watches `NameOwnerChanged` itself (any bus).
    NameOwnerChanged,
}

/// A client left the bus: every reference it still held, with the kind it was registered as.
#[derive(Debug, Clone)]
pub struct Departure {
    /// The unique name the client had.
    pub client: String,
    pub references: Vec<(OwnedObjectPath, &'static str)>,
}

impl Departure {
    /// The paths of the references of `kind`.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a OwnedObjectPath> {
        self.references
            .iter()
            .filter(move |(_, k)| *k == kind)
            .map(|(path, _)| path)
    }
}

/// Departures as they happen, in order. Never ends while the service runs.
pub type Departures = Pin<Box<dyn Stream<Item = Departure> + Send>>;

#[derive(Debug)]
struct Holding {
    client: String,
    kind: &'static str,
}

struct Inner {
    connection: Connection,
    watch: Mutex<Watch>,
    /// path → who holds it
    table: Mutex<HashMap<String, Holding>>,
    /// Departures found outside the signal streams (a client gone before its registration).
    found: mpsc::UnboundedSender<Departure>,
}

/// The table of references one service connection handed out. Cheap to clone.
#[derive(Clone)]
pub struct References {
    inner: Arc<Inner>,
}

impl References {
    /// Subscribes to departures on `connection` (before any reference is handed out, so that no
    /// departure is missed) and finds out whether the bus offers `io.telaf.Broker1`.
    pub async fn new(connection: &Connection) -> zbus::Result<(References, Departures)> {
        let watch = if broker1_available(connection).await {
            Watch::Broker1
        } else {
            Watch::NameOwnerChanged
        };
        info!(
            ?watch,
            "client lifetimes: {}",
            match watch {
                Watch::Broker1 => "io.telaf.Broker1 (AddReference, ClientGone)",
                Watch::NameOwnerChanged =>
                    "io.telaf.Broker1 not offered; watching NameOwnerChanged",
            }
        );
        let owner_changes = MatchRule::builder()
            .msg_type(Type::Signal)
            .sender(DRIVER)
            .interface(DRIVER)
            .member("NameOwnerChanged")
            .build()?;
        let owner_changes = MessageStream::for_match_rule(owner_changes, connection, None).await?;
        let client_gone = MatchRule::builder()
            .msg_type(Type::Signal)
            .sender(DRIVER)
            .interface(BROKER1_INTERFACE)
            .member("ClientGone")
            .build()?;
        let client_gone = MessageStream::for_match_rule(client_gone, connection, None).await?;

        let (found, found_rx) = mpsc::unbounded();
        let references = References {
            inner: Arc::new(Inner {
                connection: connection.clone(),
                watch: Mutex::new(watch),
                table: Mutex::new(HashMap::new()),
                found,
            }),
        };
        let from_signals = futures::stream::select(owner_changes, client_gone).filter_map({
            let references = references.clone();
            move |message| {
                let departure = message.ok().and_then(|m| references.departure_in(&m));
                futures::future::ready(departure)
            }
        });
        let departures = futures::stream::select(from_signals, found_rx);
        Ok((references, Box::pin(departures)))
    }

    /// How departures are learnt on this bus.
    pub fn watch(&self) -> Watch {
        *self.inner.watch.lock().unwrap()
    }

    /// `client` now holds the reference `path`, of `kind` (a name the service chooses, e.g.
    /// `le_mcc.Call`, given back in the [`Departure`]). `shared`: other clients may use the
    /// path too (the broker then does not refuse their calls to it).
    pub async fn register(
        &self,
        client: &str,
        path: &OwnedObjectPath,
        kind: &'static str,
        shared: bool,
    ) {
        self.inner.table.lock().unwrap().insert(
            path.as_str().to_string(),
            Holding {
                client: client.to_string(),
                kind,
            },
        );
        debug!(client, %path, kind, "reference handed out");
        if self.watch() == Watch::Broker1 {
            let reply = self
                .call_broker1("AddReference", &(client, path, shared))
                .await;
            match reply {
                Ok(()) => return,
                Err(e) if is_unavailable(&e) => {
                    warn!("io.telaf.Broker1 went away ({e}); watching NameOwnerChanged instead");
                    *self.inner.watch.lock().unwrap() = Watch::NameOwnerChanged;
                }
                Err(e) if error_name(&e).as_deref() == Some(BAD_REFERENCE) => {
                    // The client is gone already (the broker would refuse a reused path too,
                    // but paths are never reused): the check below releases it.
                    debug!(client, %path, "AddReference refused: {e}");
                }
                Err(e) => warn!(client, %path, "AddReference failed: {e}"),
            }
        }
        // A client that left before its reference was recorded sent its NameOwnerChanged
        // before we looked for it: ask.
        if !self.has_owner(client).await
            && let Some(departure) = self.drain(client)
        {
            let _ = self.inner.found.unbounded_send(departure);
        }
    }

    /// The client gave `path` back (Delete, Release, Remove…Handler). Unknown paths are ignored.
    pub async fn release(&self, path: &OwnedObjectPath) {
        let holding = self.inner.table.lock().unwrap().remove(path.as_str());
        let Some(holding) = holding else { return };
        debug!(client = holding.client, %path, "reference released");
        if self.watch() == Watch::Broker1
            && let Err(e) = self.call_broker1("RemoveReference", &(path,)).await
        {
            debug!(%path, "RemoveReference: {e}");
        }
    }

    /// Who holds `path`, if anyone.
    pub fn holder(&self, path: &OwnedObjectPath) -> Option<String> {
        let table = self.inner.table.lock().unwrap();
        table.get(path.as_str()).map(|h| h.client.clone())
    }

    /// How many references are held in all.
    pub fn len(&self) -> usize {
        self.inner.table.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every reference of `client` from the table.
    fn drain(&self, client: &str) -> Option<Departure> {
        let mut table = self.inner.table.lock().unwrap();
        let paths: Vec<String> = table
            .iter()
            .filter(|(_, h)| h.client == client)
            .map(|(p, _)| p.clone())
            .collect();
        if paths.is_empty() {
            return None;
        }
        let references = paths
            .into_iter()
            .filter_map(|p| {
                let holding = table.remove(&p)?;
                Some((OwnedObjectPath::try_from(p).ok()?, holding.kind))
            })
            .collect();
        Some(Departure {
            client: client.to_string(),
            references,
        })
    }

    /// The departure a `NameOwnerChanged` or `ClientGone` signal announces, if it concerns a
    /// client holding references.
    fn departure_in(&self, message: &Message) -> Option<Departure> {
        let header = message.header();
        let (client, via) = match (header.interface()?.as_str(), header.member()?.as_str()) {
            // Under Broker1 the broker's ClientGone is the one notice that counts: it lists
            // what the broker released, and comes however the client went.
            (DRIVER, "NameOwnerChanged") if self.watch() == Watch::NameOwnerChanged => {
                let (name, _old, new): (String, String, String) =
                    message.body().deserialize().ok()?;
                if !name.starts_with(':') || !new.is_empty() {
                    return None;
                }
                (name, "NameOwnerChanged")
            }
            (BROKER1_INTERFACE, "ClientGone") => {
                let (client, _paths): (String, Vec<OwnedObjectPath>) =
                    message.body().deserialize().ok()?;
                (client, "ClientGone")
            }
            _ => return None,
        };
        let departure = self.drain(&client)?;
        info!(
            client,
            references = departure.references.len(),
            via,
            "client left the bus; releasing what it held"
        );
        Some(departure)
    }

    async fn has_owner(&self, client: &str) -> bool {
        let reply = self
            .inner
            .connection
            .call_method(
                Some(DRIVER),
                "/org/freedesktop/DBus",
                Some(DRIVER),
                "NameHasOwner",
                &(client,),
            )
            .await;
        match reply.and_then(|r| r.body().deserialize::<bool>()) {
            Ok(has) => has,
            Err(e) => {
                warn!(client, "NameHasOwner failed: {e}");
                true
            }
        }
    }

    async fn call_broker1<B>(&self, method: &str, body: &B) -> zbus::Result<()>
    where
        B: serde::Serialize + zbus::wire::DynamicType,
    {
        self.inner
            .connection
            .call_method(
                Some(DRIVER),
                BROKER1_PATH,
                Some(BROKER1_INTERFACE),
                method,
                body,
            )
            .await
            .map(drop)
    }
}

/// Whether the bus serves `io.telaf.Broker1`: its introspection data names the interface.
async fn broker1_available(connection: &Connection) -> bool {
    let reply = connection
        .call_method(
            Some(DRIVER),
            BROKER1_PATH,
            Some("org.freedesktop.DBus.Introspectable"),
            "Introspect",
            &(),
        )
        .await;
    match reply.and_then(|r| r.body().deserialize::<String>()) {
        Ok(xml) => xml.contains(&format!("\"{BROKER1_INTERFACE}\"")),
        Err(e) => {
            debug!("introspecting {BROKER1_PATH}: {e}");
            false
        }
    }
}

/// The D-Bus error name of a method error reply.
pub fn error_name(error: &zbus::Error) -> Option<String> {
    match error {
        zbus::Error::MethodError(name, _, _) => Some(name.to_string()),
        zbus::Error::FDO(fdo) => Some(zbus::DBusError::name(fdo.as_ref()).to_string()),
        _ => None,
    }
}

/// The errors that mean "the bus has no such method": not io.telaf.Broker1.
fn is_unavailable(error: &zbus::Error) -> bool {
    matches!(
        error_name(error).as_deref(),
        Some(
            "org.freedesktop.DBus.Error.UnknownMethod"
                | "org.freedesktop.DBus.Error.UnknownObject"
                | "org.freedesktop.DBus.Error.UnknownInterface"
        )
    )
}
