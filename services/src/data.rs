//! `le_data`: one data connection shared by reference count.
//!
//! `Request` returns a request reference of the caller's own; the (simulated) connection is up
//! while any request is held, on the first technology of the rank list. `Release`, or the
//! holder leaving the bus, gives a request back; the last one brings the connection down.
//! Subscribers of `ConnectionState` hear every change. `io.telaf.sim.le_data` shows how many
//! requests are held (property `Holders`, with PropertiesChanged).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tracing::{info, warn};
use zbus::names::OwnedUniqueName;
use zbus::wire::OwnedObjectPath;
use zbus::{Connection, fdo};

use crate::api::le_data::server::{self as data_server, LeData, LeDataServer};
use crate::api::le_data::{self, Technology};
use crate::api::le_mdc;
use crate::api::telaf_common::{Context, LeResult, Subscriber};
use crate::paths::PathMinter;
use crate::references::{Departure, References};
use crate::startup::{Service, Startup};

/// The app that provides le_data by default.
pub const APP: &str = "dataConnectionService";
/// The service name (and API).
pub const SERVICE: &str = "le_data";
/// Shows the simulated connection's state.
pub const SIM_INTERFACE: &str = "io.telaf.sim.le_data";

const REQUEST: &str = "le_data.RequestObj";
const HANDLER: &str = "le_data.ConnectionStateHandler";

/// The network interface the simulated connection comes up on.
fn interface_name(technology: Technology) -> &'static str {
    match technology {
        Technology::WIFI => "wlan0",
        _ => "rmnet_data0",
    }
}

struct State {
    /// request path → holder
    requests: HashMap<String, String>,
    subscribers: Vec<Subscriber>,
    /// Technologies in the order they are tried.
    ranks: Vec<Technology>,
    /// Where GetNextUsedTechnology is in `ranks`.
    cursor: usize,
    /// The technology the connection is up on.
    up_on: Option<Technology>,
    profile_index: i32,
    routes: BTreeSet<IpAddr>,
}

/// The le_data service.
pub struct DataConnection {
    state: Mutex<State>,
    references: References,
    minter: PathMinter,
    connection: Connection,
    root: OwnedObjectPath,
}

impl DataConnection {
    /// Brings the connection up or down to match the requests held, and tells subscribers.
    async fn update(&self) {
        let (change, subscribers) = {
            let mut state = self.state.lock().unwrap();
            let wanted = !state.requests.is_empty();
            let change = match (wanted, state.up_on) {
                (true, None) => {
                    let technology = state.ranks.first().copied().unwrap_or(Technology::CELLULAR);
                    state.up_on = Some(technology);
                    Some((interface_name(technology), true))
                }
                (false, Some(technology)) => {
                    state.up_on = None;
                    state.routes.clear();
                    Some((interface_name(technology), false))
                }
                _ => None,
            };
            (change, state.subscribers.clone())
        };
        self.announce_holders().await;
        let Some((interface, connected)) = change else {
            return;
        };
        info!(interface, connected, "data connection");
        for subscriber in subscribers {
            let sent =
                data_server::emit_connection_state(&subscriber, interface.to_string(), connected)
                    .await;
            if let Err(e) = sent {
                warn!(subscriber = %subscriber.destination, "ConnectionState not sent: {e}");
            }
        }
    }

    async fn announce_holders(&self) {
        let server = self.connection.object_server();
        if let Ok(sim) = server.interface::<_, Sim>(&self.root).await {
            let _ = sim.get().await.holders_changed(sim.signal_emitter()).await;
        }
    }

    fn holders(&self) -> u32 {
        self.state.lock().unwrap().requests.len() as u32
    }

    fn connected(&self) -> bool {
        self.state.lock().unwrap().up_on.is_some()
    }
}

impl Service for DataConnection {
    async fn client_gone(&self, departure: Departure) {
        let server = self.connection.object_server();
        if let Ok(server) = server
            .interface::<_, LeDataServer<Arc<DataConnection>>>(&self.root)
            .await
        {
            server.get().await.client_gone(&departure.client).await;
        }
        {
            let mut state = self.state.lock().unwrap();
            for path in departure.of_kind(REQUEST) {
                state.requests.remove(path.as_str());
            }
        }
        self.update().await;
    }
}

impl LeData for Arc<DataConnection> {
    async fn add_connection_state_handler(&self, subscriber: Subscriber) -> fdo::Result<bool> {
        let client = subscriber.destination.to_string();
        self.references
            .register(&client, &subscriber.path, HANDLER, false)
            .await;
        self.state.lock().unwrap().subscribers.push(subscriber);
        Ok(true)
    }

    async fn remove_connection_state_handler(
        &self,
        _owner: OwnedUniqueName,
        handler: OwnedObjectPath,
    ) -> fdo::Result<()> {
        self.references.release(&handler).await;
        let mut state = self.state.lock().unwrap();
        state.subscribers.retain(|s| s.path != handler);
        Ok(())
    }

    async fn request(&self, ctx: Context) -> fdo::Result<OwnedObjectPath> {
        let path = self.minter.mint("request");
        self.state
            .lock()
            .unwrap()
            .requests
            .insert(path.as_str().to_string(), ctx.sender.to_string());
        self.references
            .register(&ctx.sender, &path, REQUEST, false)
            .await;
        self.update().await;
        Ok(path)
    }

    async fn release(&self, ctx: Context, request_ref: OwnedObjectPath) -> fdo::Result<()> {
        let held = {
            let mut state = self.state.lock().unwrap();
            match state.requests.get(request_ref.as_str()) {
                Some(holder) if holder == ctx.sender.as_str() => {
                    state.requests.remove(request_ref.as_str());
                    true
                }
                _ => false,
            }
        };
        if !held {
            return Err(fdo::Error::InvalidArgs(format!(
                "{request_ref} is not a request of yours"
            )));
        }
        self.references.release(&request_ref).await;
        self.update().await;
        Ok(())
    }

    async fn set_technology_rank(
        &self,
        _: Context,
        rank: u32,
        technology: Technology,
    ) -> fdo::Result<LeResult> {
        if rank == 0 || technology == Technology::MAX {
            return Ok(LeResult::BadParameter);
        }
        let mut state = self.state.lock().unwrap();
        state.ranks.retain(|t| *t != technology);
        let at = (rank as usize - 1).min(state.ranks.len());
        state.ranks.insert(at, technology);
        Ok(LeResult::Ok)
    }

    async fn get_first_used_technology(&self, _: Context) -> fdo::Result<Technology> {
        let mut state = self.state.lock().unwrap();
        state.cursor = 1;
        Ok(state.ranks.first().copied().unwrap_or(Technology::MAX))
    }

    async fn get_next_used_technology(&self, _: Context) -> fdo::Result<Technology> {
        let mut state = self.state.lock().unwrap();
        let next = state.ranks.get(state.cursor).copied();
        state.cursor += 1;
        Ok(next.unwrap_or(Technology::MAX))
    }

    async fn get_technology(&self, _: Context) -> fdo::Result<Technology> {
        Ok(self.state.lock().unwrap().up_on.unwrap_or(Technology::MAX))
    }

    async fn get_default_route_status(&self, _: Context) -> fdo::Result<bool> {
        Ok(self.connected())
    }

    async fn add_route(&self, _: Context, ip_dest_addr_str: String) -> fdo::Result<LeResult> {
        let Ok(address) = ip_dest_addr_str.parse::<IpAddr>() else {
            return Ok(LeResult::BadParameter);
        };
        let mut state = self.state.lock().unwrap();
        if state.up_on.is_none() {
            return Ok(LeResult::Fault);
        }
        Ok(match state.routes.insert(address) {
            true => LeResult::Ok,
            false => LeResult::Duplicate,
        })
    }

    async fn del_route(&self, _: Context, ip_dest_addr_str: String) -> fdo::Result<LeResult> {
        let Ok(address) = ip_dest_addr_str.parse::<IpAddr>() else {
            return Ok(LeResult::BadParameter);
        };
        let mut state = self.state.lock().unwrap();
        Ok(match state.routes.remove(&address) {
            true => LeResult::Ok,
            false => LeResult::NotFound,
        })
    }

    async fn get_cellular_profile_index(&self, _: Context) -> fdo::Result<i32> {
        Ok(self.state.lock().unwrap().profile_index)
    }

    async fn set_cellular_profile_index(
        &self,
        _: Context,
        profile_index: i32,
    ) -> fdo::Result<LeResult> {
        let valid = profile_index == le_mdc::DEFAULT_PROFILE as i32
            || (1..=le_mdc::PROFILE_LIST_ENTRY_MAX as i32).contains(&profile_index);
        if !valid {
            return Ok(LeResult::BadParameter);
        }
        let mut state = self.state.lock().unwrap();
        if state.up_on.is_some() {
            return Ok(LeResult::Busy);
        }
        state.profile_index = profile_index;
        Ok(LeResult::Ok)
    }

    async fn get_date(&self, _: Context) -> fdo::Result<(LeResult, u16, u16, u16)> {
        Ok(match self.network_time() {
            Some(t) => (LeResult::Ok, t.year, t.month, t.day),
            None => (LeResult::Fault, 0, 0, 0),
        })
    }

    async fn get_time(&self, _: Context) -> fdo::Result<(LeResult, u16, u16, u16, u16)> {
        Ok(match self.network_time() {
            Some(t) => (LeResult::Ok, t.hours, t.minutes, t.seconds, t.millis),
            None => (LeResult::Fault, 0, 0, 0, 0),
        })
    }

    async fn get_date_time(
        &self,
        _: Context,
    ) -> fdo::Result<(LeResult, u16, u16, u16, u16, u16, u16, u16)> {
        Ok(match self.network_time() {
            Some(t) => (
                LeResult::Ok,
                t.year,
                t.month,
                t.day,
                t.hours,
                t.minutes,
                t.seconds,
                t.millis,
            ),
            None => (LeResult::Fault, 0, 0, 0, 0, 0, 0, 0),
        })
    }
}

/// A UTC date and time, as a time server would give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: u16,
    pub month: u16,
    pub day: u16,
    pub hours: u16,
    pub minutes: u16,
    pub seconds: u16,
    pub millis: u16,
}

impl UtcTime {
    /// The calendar date and time `millis_since_epoch` after 1970-01-01T00:00:00Z.
    pub fn from_unix_millis(millis_since_epoch: u64) -> UtcTime {
        let secs = millis_since_epoch / 1000;
        let days = (secs / 86_400) as i64;
        let of_day = secs % 86_400;
        // Days to civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        UtcTime {
            year: year as u16,
            month: month as u16,
            day: day as u16,
            hours: (of_day / 3600) as u16,
            minutes: (of_day % 3600 / 60) as u16,
            seconds: (of_day % 60) as u16,
            millis: (millis_since_epoch % 1000) as u16,
        }
    }
}

impl DataConnection {
    /// The time from the network: only while the connection is up.
    fn network_time(&self) -> Option<UtcTime> {
        if !self.connected() {
            return None;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        Some(UtcTime::from_unix_millis(now.as_millis() as u64))
    }
}

/// The simulated connection's state, for demos and tests.
pub struct Sim {
    data: Arc<DataConnection>,
}

#[zbus::interface(name = "io.telaf.sim.le_data")]
impl Sim {
    /// How many requests are held (the connection is up while this is above 0).
    #[zbus(property)]
    fn holders(&self) -> u32 {
        self.data.holders()
    }

    /// Whether the connection is up.
    #[zbus(property(emits_changed_signal = "false"))]
    fn connected(&self) -> bool {
        self.data.connected()
    }
}

/// Serves le_data (and its simulation interface) at `startup.root`.
pub async fn serve(startup: Startup) -> zbus::Result<Arc<DataConnection>> {
    let data = Arc::new(DataConnection {
        state: Mutex::new(State {
            requests: HashMap::new(),
            subscribers: Vec::new(),
            ranks: vec![Technology::CELLULAR, Technology::WIFI],
            cursor: 0,
            up_on: None,
            profile_index: 1,
            routes: BTreeSet::new(),
        }),
        references: startup.references.clone(),
        minter: PathMinter::new(startup.root.as_str()),
        connection: startup.connection.clone(),
        root: startup.root.clone(),
    });
    let server = startup.connection.object_server();
    server
        .at(&startup.root, LeDataServer::new(data.clone()))
        .await?;
    server.at(&startup.root, le_data::service1()).await?;
    server.at(&startup.root, Sim { data: data.clone() }).await?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::UtcTime;

    #[test]
    fn civil_time_from_unix_millis() {
        assert_eq!(
            UtcTime::from_unix_millis(0),
            UtcTime {
                year: 1970,
                month: 1,
                day: 1,
                hours: 0,
                minutes: 0,
                seconds: 0,
                millis: 0
            }
        );
        // 2024-02-29T23:59:58.123Z (a leap day)
        assert_eq!(
            UtcTime::from_unix_millis(1_709_251_198_123),
            UtcTime {
                year: 2024,
                month: 2,
                day: 29,
                hours: 23,
                minutes: 59,
                seconds: 58,
                millis: 123
            }
        );
    }
}
