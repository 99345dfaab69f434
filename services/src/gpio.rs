//! `le_gpio`: one simulated pin per service instance (`le_gpioPin<N>`), so that bindings
//! decide which client may drive which pin.
//!
//! The first client that configures the pin owns it until it leaves the bus; configuring it
//! from another client answers LE_BUSY. Reading is open to everyone. `AddChangeEventHandler`
//! subscribes with a filter (which edges); level changes — driven by the owner on an output,
//! or by `io.telaf.sim.le_gpio.SetInputLevel` (the outside world) on an input — reach each
//! subscriber whose filter matches.

use std::sync::{Arc, Mutex};

use tracing::{info, warn};
use zbus::names::OwnedUniqueName;
use zbus::wire::OwnedObjectPath;
use zbus::{Connection, fdo};

use crate::api::le_gpio::server::{self as gpio_server, LeGpio, LeGpioServer};
use crate::api::le_gpio::{self, Edge, Polarity, PullUpDown};
use crate::api::telaf_common::{Context, LeResult, Subscriber};
use crate::paths::PathMinter;
use crate::references::{Departure, References};
use crate::startup::{Service, Startup};

/// The app that provides the pins by default.
pub const APP: &str = "gpioService";
/// The simulation interface (the world outside the pin).
pub const SIM_INTERFACE: &str = "io.telaf.sim.le_gpio";

const SESSION: &str = "le_gpio.Session";
const HANDLER: &str = "le_gpio.ChangeEventHandler";

/// The service name of pin `pin`.
pub fn service_name(pin: u32) -> String {
    format!("le_gpioPin{pin}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Input,
    PushPull,
    TriState,
    OpenDrain,
}

struct Pin {
    /// The owning client and the session reference registered for it.
    owner: Option<(String, OwnedObjectPath)>,
    mode: Mode,
    polarity: Polarity,
    /// The electrical level: true is high.
    high: bool,
    high_z: bool,
    pull: PullUpDown,
    edge: Edge,
    subscribers: Vec<(Subscriber, Edge)>,
}

impl Pin {
    fn active(&self) -> bool {
        self.high == (self.polarity == Polarity::ACTIVE_HIGH)
    }

    fn level_for(&self, active: bool) -> bool {
        active == (self.polarity == Polarity::ACTIVE_HIGH)
    }
}

/// One GPIO pin.
pub struct Gpio {
    number: u32,
    pin: Mutex<Pin>,
    references: References,
    minter: PathMinter,
    connection: Connection,
    root: OwnedObjectPath,
}

fn edge_matches(filter: Edge, now_active: bool) -> bool {
    match filter {
        Edge::EDGE_BOTH => true,
        Edge::EDGE_RISING => now_active,
        Edge::EDGE_FALLING => !now_active,
        Edge::EDGE_NONE => false,
    }
}

impl Gpio {
    /// Runs `configure` when the caller owns the pin, taking it if nobody does; LE_BUSY when
    /// another client owns it. Level changes it causes go to the subscribers.
    async fn configure(
        &self,
        ctx: &Context,
        configure: impl FnOnce(&mut Pin) -> LeResult,
    ) -> LeResult {
        let mut claimed = None;
        let (result, change) = {
            let mut pin = self.pin.lock().unwrap();
            match &pin.owner {
                Some((owner, _)) if owner != ctx.sender.as_str() => {
                    info!(pin = self.number, client = %ctx.sender, owner, "pin busy");
                    return LeResult::Busy;
                }
                Some(_) => {}
                None => {
                    let session = self.minter.mint("session");
                    pin.owner = Some((ctx.sender.to_string(), session.clone()));
                    claimed = Some(session);
                }
            }
            let was_active = pin.active();
            let result = configure(&mut pin);
            let now_active = pin.active();
            (result, (was_active != now_active).then_some(now_active))
        };
        if let Some(session) = claimed {
            info!(pin = self.number, client = %ctx.sender, "pin taken");
            // Shared: others may still read the pin (and hear LE_BUSY when they configure it).
            self.references
                .register(&ctx.sender, &session, SESSION, true)
                .await;
            self.announce_owner().await;
        }
        if let Some(active) = change {
            self.changed(active).await;
        }
        result
    }

    /// Output only: drives the pin to `active`.
    fn drive(pin: &mut Pin, active: bool) -> LeResult {
        if pin.mode == Mode::Input {
            return LeResult::NotPermitted;
        }
        pin.high_z = false;
        pin.high = pin.level_for(active);
        LeResult::Ok
    }

    /// The pin is now `active`: tells the subscribers whose filter takes this edge.
    async fn changed(&self, active: bool) {
        let subscribers: Vec<Subscriber> = {
            let pin = self.pin.lock().unwrap();
            pin.subscribers
                .iter()
                .filter(|(_, filter)| edge_matches(*filter, active))
                .map(|(s, _)| s.clone())
                .collect()
        };
        info!(
            pin = self.number,
            active,
            subscribers = subscribers.len(),
            "level changed"
        );
        for subscriber in subscribers {
            if let Err(e) = gpio_server::emit_change_event(&subscriber, active).await {
                warn!(subscriber = %subscriber.destination, "ChangeEvent not sent: {e}");
            }
        }
    }

    /// PropertiesChanged for `io.telaf.sim.le_gpio.Owner`.
    async fn announce_owner(&self) {
        let server = self.connection.object_server();
        if let Ok(sim) = server.interface::<_, Sim>(&self.root).await {
            let _ = sim.get().await.owner_changed(sim.signal_emitter()).await;
        }
    }

    fn read_pin<T>(&self, read: impl FnOnce(&Pin) -> T) -> T {
        read(&self.pin.lock().unwrap())
    }
}

impl Service for Gpio {
    async fn client_gone(&self, departure: Departure) {
        let server = self.connection.object_server();
        if let Ok(server) = server
            .interface::<_, LeGpioServer<Arc<Gpio>>>(&self.root)
            .await
        {
            server.get().await.client_gone(&departure.client).await;
        }
        let freed = {
            let mut pin = self.pin.lock().unwrap();
            let owned_by_leaver = pin
                .owner
                .as_ref()
                .is_some_and(|(owner, _)| *owner == departure.client);
            if owned_by_leaver {
                pin.owner = None;
            }
            owned_by_leaver
        };
        if freed {
            info!(
                pin = self.number,
                client = departure.client,
                "pin free again"
            );
            self.announce_owner().await;
        }
    }
}

impl LeGpio for Arc<Gpio> {
    async fn set_input(&self, ctx: Context, polarity: Polarity) -> fdo::Result<LeResult> {
        Ok(self
            .configure(&ctx, |pin| {
                pin.mode = Mode::Input;
                pin.polarity = polarity;
                pin.high_z = false;
                LeResult::Ok
            })
            .await)
    }

    async fn set_push_pull_output(
        &self,
        ctx: Context,
        polarity: Polarity,
        value: bool,
    ) -> fdo::Result<LeResult> {
        Ok(self
            .configure(&ctx, |pin| {
                pin.mode = Mode::PushPull;
                pin.polarity = polarity;
                Gpio::drive(pin, value)
            })
            .await)
    }

    async fn set_tri_state_output(
        &self,
        ctx: Context,
        polarity: Polarity,
    ) -> fdo::Result<LeResult> {
        Ok(self
            .configure(&ctx, |pin| {
                pin.mode = Mode::TriState;
                pin.polarity = polarity;
                pin.high_z = true;
                LeResult::Ok
            })
            .await)
    }

    async fn set_open_drain_output(
        &self,
        ctx: Context,
        polarity: Polarity,
        value: bool,
    ) -> fdo::Result<LeResult> {
        Ok(self
            .configure(&ctx, |pin| {
                pin.mode = Mode::OpenDrain;
                pin.polarity = polarity;
                Gpio::drive(pin, value)
            })
            .await)
    }

    async fn enable_pull_up(&self, ctx: Context) -> fdo::Result<LeResult> {
        Ok(self
            .configure(&ctx, |pin| {
                pin.pull = PullUpDown::PULL_UP;
                LeResult::Ok
            })
            .await)
    }

    async fn enable_pull_down(&self, ctx: Context) -> fdo::Result<LeResult> {
        Ok(self
            .configure(&ctx, |pin| {
                pin.pull = PullUpDown::PULL_DOWN;
                LeResult::Ok
            })
            .await)
    }

    async fn disable_resistors(&self, ctx: Context) -> fdo::Result<LeResult> {
        Ok(self
            .configure(&ctx, |pin| {
                pin.pull = PullUpDown::PULL_OFF;
                LeResult::Ok
            })
            .await)
    }

    async fn activate(&self, ctx: Context) -> fdo::Result<LeResult> {
        Ok(self.configure(&ctx, |pin| Gpio::drive(pin, true)).await)
    }

    async fn deactivate(&self, ctx: Context) -> fdo::Result<LeResult> {
        Ok(self.configure(&ctx, |pin| Gpio::drive(pin, false)).await)
    }

    async fn set_high_z(&self, ctx: Context) -> fdo::Result<LeResult> {
        Ok(self
            .configure(&ctx, |pin| {
                if pin.mode != Mode::TriState {
                    return LeResult::NotPermitted;
                }
                pin.high_z = true;
                LeResult::Ok
            })
            .await)
    }

    async fn read(&self, _: Context) -> fdo::Result<bool> {
        Ok(self.read_pin(Pin::active))
    }

    async fn add_change_event_handler(
        &self,
        subscriber: Subscriber,
        trigger: Edge,
        sample_ms: i32,
    ) -> fdo::Result<bool> {
        if sample_ms < 0 {
            return Err(fdo::Error::InvalidArgs(format!(
                "argument 'sampleMs': {sample_ms} is negative"
            )));
        }
        let client = subscriber.destination.to_string();
        self.references
            .register(&client, &subscriber.path, HANDLER, false)
            .await;
        self.pin
            .lock()
            .unwrap()
            .subscribers
            .push((subscriber, trigger));
        Ok(true)
    }

    async fn remove_change_event_handler(
        &self,
        _owner: OwnedUniqueName,
        handler: OwnedObjectPath,
    ) -> fdo::Result<()> {
        self.references.release(&handler).await;
        let mut pin = self.pin.lock().unwrap();
        pin.subscribers.retain(|(s, _)| s.path != handler);
        Ok(())
    }

    async fn set_edge_sense(&self, ctx: Context, trigger: Edge) -> fdo::Result<LeResult> {
        Ok(self
            .configure(&ctx, |pin| {
                if pin.mode != Mode::Input {
                    return LeResult::NotPermitted;
                }
                pin.edge = trigger;
                LeResult::Ok
            })
            .await)
    }

    async fn disable_edge_sense(&self, ctx: Context) -> fdo::Result<LeResult> {
        Ok(self
            .configure(&ctx, |pin| {
                pin.edge = Edge::EDGE_NONE;
                LeResult::Ok
            })
            .await)
    }

    async fn is_output(&self, _: Context) -> fdo::Result<bool> {
        Ok(self.read_pin(|pin| pin.mode != Mode::Input))
    }

    async fn is_input(&self, _: Context) -> fdo::Result<bool> {
        Ok(self.read_pin(|pin| pin.mode == Mode::Input))
    }

    async fn get_edge_sense(&self, _: Context) -> fdo::Result<Edge> {
        Ok(self.read_pin(|pin| pin.edge))
    }

    async fn get_polarity(&self, _: Context) -> fdo::Result<Polarity> {
        Ok(self.read_pin(|pin| pin.polarity))
    }

    async fn is_active(&self, _: Context) -> fdo::Result<bool> {
        Ok(self.read_pin(Pin::active))
    }

    async fn get_pull_up_down(&self, _: Context) -> fdo::Result<PullUpDown> {
        Ok(self.read_pin(|pin| pin.pull))
    }
}

/// The world outside the pin, for demos and tests.
pub struct Sim {
    gpio: Arc<Gpio>,
}

#[zbus::interface(name = "io.telaf.sim.le_gpio")]
impl Sim {
    /// Something outside drives an input pin to the electrical level `high`. Refused on an
    /// output.
    async fn set_input_level(&self, high: bool) -> fdo::Result<()> {
        let change = {
            let mut pin = self.gpio.pin.lock().unwrap();
            if pin.mode != Mode::Input {
                return Err(fdo::Error::Failed(format!(
                    "pin {} is an output: the outside cannot drive it",
                    self.gpio.number
                )));
            }
            let was_active = pin.active();
            pin.high = high;
            (was_active != pin.active()).then(|| pin.active())
        };
        if let Some(active) = change {
            self.gpio.changed(active).await;
        }
        Ok(())
    }

    /// Whether the pin is in high impedance (a tri-state output let go).
    #[zbus(property(emits_changed_signal = "false"))]
    fn high_z(&self) -> bool {
        self.gpio.pin.lock().unwrap().high_z
    }

    /// The owning client's unique name, empty when the pin is free.
    #[zbus(property)]
    fn owner(&self) -> String {
        let pin = self.gpio.pin.lock().unwrap();
        pin.owner
            .as_ref()
            .map(|(o, _)| o.clone())
            .unwrap_or_default()
    }
}

/// Serves pin `number` (and its simulation interface) at `startup.root`.
pub async fn serve(startup: Startup, number: u32) -> zbus::Result<Arc<Gpio>> {
    let gpio = Arc::new(Gpio {
        number,
        pin: Mutex::new(Pin {
            owner: None,
            mode: Mode::Input,
            polarity: Polarity::ACTIVE_HIGH,
            high: false,
            high_z: false,
            pull: PullUpDown::PULL_OFF,
            edge: Edge::EDGE_NONE,
            subscribers: Vec::new(),
        }),
        references: startup.references.clone(),
        minter: PathMinter::new(startup.root.as_str()),
        connection: startup.connection.clone(),
        root: startup.root.clone(),
    });
    let server = startup.connection.object_server();
    server
        .at(&startup.root, LeGpioServer::new(gpio.clone()))
        .await?;
    server.at(&startup.root, le_gpio::service1()).await?;
    server.at(&startup.root, Sim { gpio: gpio.clone() }).await?;
    Ok(gpio)
}
