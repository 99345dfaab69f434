//! `le_mcc`: voice calls through a simulated modem.
//!
//! `Create(number)` returns a call reference of the caller's own; `Start` dials. The far end is
//! simulated by the number dialled (see [`RemoteParty`]). Every subscriber of `CallEvent` gets
//! each event with a reference to the call of its own (minted on first sight, released by
//! `Delete` or when the subscriber leaves). A call ends when its creator deletes it or leaves
//! the bus, even by SIGKILL. `io.telaf.sim.le_mcc.Ring(number)` simulates an incoming call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{debug, info, warn};
use zbus::names::OwnedUniqueName;
use zbus::wire::OwnedObjectPath;
use zbus::{Connection, fdo};

use crate::api::le_mcc::server::{self as mcc_server, LeMcc, LeMccServer};
use crate::api::le_mcc::{self, Event, TerminationReason};
use crate::api::telaf_common::{Context, LeOnOff, LeResult, Subscriber};
use crate::paths::{PathMinter, null_reference};
use crate::references::{Departure, References};
use crate::startup::{Service, Startup};

/// The app that provides le_mcc by default.
pub const APP: &str = "modemService";
/// The service name (and API).
pub const SERVICE: &str = "le_mcc";
/// The interface that simulates the network side (incoming calls).
pub const SIM_INTERFACE: &str = "io.telaf.sim.le_mcc";

const CALL: &str = "le_mcc.Call";
const HANDLER: &str = "le_mcc.CallEventHandler";

/// How the simulated far end behaves, chosen by the number dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteParty {
    /// Rings, then answers: the default.
    Answers,
    /// A number ending in `00`: the line is busy.
    Busy,
    /// A number ending in `99`: rings until the no-answer timeout.
    NeverAnswers,
    /// Empty, or a character other than digits, `+`, `*`, `#`.
    Invalid,
}

impl RemoteParty {
    pub fn for_number(number: &str) -> RemoteParty {
        let dialable = |c: char| c.is_ascii_digit() || matches!(c, '+' | '*' | '#');
        if number.is_empty() || !number.chars().all(dialable) {
            RemoteParty::Invalid
        } else if number.ends_with("00") {
            RemoteParty::Busy
        } else if number.ends_with("99") {
            RemoteParty::NeverAnswers
        } else {
            RemoteParty::Answers
        }
    }
}

/// Delays of the simulated network.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// From ALERTING to CONNECTED for a number that answers.
    pub answer_delay: Duration,
    /// From ALERTING to TERMINATED for a number that never answers.
    pub no_answer_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            answer_delay: Duration::from_millis(300),
            no_answer_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug)]
struct Call {
    number: String,
    /// The last event: where the call stands.
    state: Event,
    started: bool,
    incoming: bool,
    termination: TerminationReason,
    clir: LeOnOff,
    /// The client that created (outgoing) or answered (incoming) it: it ends with them.
    owner: Option<String>,
}

impl Call {
    fn in_progress(&self) -> bool {
        (self.started || self.incoming) && self.state != Event::EVENT_TERMINATED
    }
}

#[derive(Default)]
struct State {
    next_call: u64,
    calls: HashMap<u64, Call>,
    /// reference path → (client, call)
    references: HashMap<String, (String, u64)>,
    subscribers: Vec<Subscriber>,
    call_waiting: bool,
    amr_wb: bool,
}

impl State {
    fn call_of(&self, client: &str, reference: &OwnedObjectPath) -> Option<u64> {
        match self.references.get(reference.as_str()) {
            Some((holder, id)) if holder == client => Some(*id),
            _ => None,
        }
    }

    fn reference_of(&self, client: &str, id: u64) -> Option<OwnedObjectPath> {
        self.references
            .iter()
            .find(|(_, (holder, call))| holder == client && *call == id)
            .and_then(|(path, _)| OwnedObjectPath::try_from(path.as_str()).ok())
    }

    /// Forgets calls no reference points to any more.
    fn collect_garbage(&mut self) {
        let referenced: Vec<u64> = self.references.values().map(|(_, id)| *id).collect();
        self.calls.retain(|id, call| {
            let keep = referenced.contains(id);
            if !keep {
                debug!(call = id, number = call.number, "call forgotten");
            }
            keep
        });
    }
}

/// The le_mcc service.
pub struct Modem {
    state: Mutex<State>,
    references: References,
    minter: PathMinter,
    timing: Timing,
    connection: Connection,
    root: OwnedObjectPath,
}

impl Modem {
    /// A reference to call `id` for `client`: its own if it has one, else a new one.
    async fn reference_for(&self, client: &str, id: u64) -> OwnedObjectPath {
        let path = {
            let mut state = self.state.lock().unwrap();
            if let Some(path) = state.reference_of(client, id) {
                return path;
            }
            let path = self.minter.mint("call");
            state
                .references
                .insert(path.as_str().to_string(), (client.to_string(), id));
            path
        };
        self.references.register(client, &path, CALL, false).await;
        path
    }

    /// Moves call `id` to `event` and tells every subscriber, each with its own reference.
    async fn advance(self: &Arc<Self>, id: u64, event: Event, reason: Option<TerminationReason>) {
        let subscribers = {
            let mut state = self.state.lock().unwrap();
            let Some(call) = state.calls.get_mut(&id) else {
                return;
            };
            if call.state == Event::EVENT_TERMINATED {
                return;
            }
            call.state = event;
            if let Some(reason) = reason {
                call.termination = reason;
            }
            info!(
                call = id,
                number = call.number,
                event = event.name(),
                "call event"
            );
            state.subscribers.clone()
        };
        for subscriber in subscribers {
            let reference = self
                .reference_for(subscriber.destination.as_str(), id)
                .await;
            if let Err(e) = mcc_server::emit_call_event(&subscriber, reference, event).await {
                warn!(subscriber = %subscriber.destination, "CallEvent not sent: {e}");
            }
        }
    }

    /// Ends call `id` if it is in progress.
    async fn end(self: &Arc<Self>, id: u64, reason: TerminationReason) -> bool {
        let in_progress = {
            let state = self.state.lock().unwrap();
            state.calls.get(&id).is_some_and(Call::in_progress)
        };
        if in_progress {
            self.advance(id, Event::EVENT_TERMINATED, Some(reason))
                .await;
        }
        in_progress
    }

    /// The simulated network, after Start.
    async fn dial(self: Arc<Self>, id: u64, number: String) {
        let timer = zruntime::SharedRuntime::current().expect("a runtime");
        self.advance(id, Event::EVENT_ORIGINATING, None).await;
        match RemoteParty::for_number(&number) {
            RemoteParty::Invalid => {
                let reason = TerminationReason::TERM_INVALID_NUMBER_FORMAT;
                self.end(id, reason).await;
            }
            RemoteParty::Busy => {
                self.end(id, TerminationReason::TERM_USER_BUSY).await;
            }
            RemoteParty::Answers => {
                self.advance(id, Event::EVENT_ALERTING, None).await;
                timer.sleep(self.timing.answer_delay).await;
                if self.state_of(id) == Some(Event::EVENT_ALERTING) {
                    self.advance(id, Event::EVENT_CONNECTED, None).await;
                }
            }
            RemoteParty::NeverAnswers => {
                self.advance(id, Event::EVENT_ALERTING, None).await;
                timer.sleep(self.timing.no_answer_timeout).await;
                if self.state_of(id) == Some(Event::EVENT_ALERTING) {
                    let reason = TerminationReason::TERM_USER_ALERTING_NO_ANSWER;
                    self.end(id, reason).await;
                }
            }
        }
    }

    fn state_of(&self, id: u64) -> Option<Event> {
        self.state.lock().unwrap().calls.get(&id).map(|c| c.state)
    }

    /// The caller's call behind `reference`, or None when it is not the caller's.
    fn callers_call(&self, ctx: &Context, reference: &OwnedObjectPath) -> Option<u64> {
        self.state.lock().unwrap().call_of(&ctx.sender, reference)
    }

    /// Drops `client`'s reference `path`; a call whose owner lets go of it ends.
    async fn drop_reference(self: &Arc<Self>, client: &str, path: &OwnedObjectPath) {
        let id = {
            let mut state = self.state.lock().unwrap();
            match state.references.remove(path.as_str()) {
                Some((_, id)) => id,
                None => return,
            }
        };
        let owned = {
            let state = self.state.lock().unwrap();
            state
                .calls
                .get(&id)
                .is_some_and(|c| c.owner.as_deref() == Some(client))
        };
        if owned {
            self.end(id, TerminationReason::TERM_LOCAL_ENDED).await;
        }
        self.state.lock().unwrap().collect_garbage();
    }

    /// A new incoming call from `number`: INCOMING to every subscriber.
    async fn ring(self: &Arc<Self>, number: String) -> bool {
        let id = {
            let mut state = self.state.lock().unwrap();
            if state.subscribers.is_empty() {
                return false;
            }
            state.next_call += 1;
            let id = state.next_call;
            state.calls.insert(
                id,
                Call {
                    number,
                    state: Event::EVENT_SETUP,
                    started: false,
                    incoming: true,
                    termination: TerminationReason::TERM_UNDEFINED,
                    clir: LeOnOff::Off,
                    owner: None,
                },
            );
            id
        };
        self.advance(id, Event::EVENT_INCOMING, None).await;
        true
    }

    /// The number of calls the modem knows (for tests and the log).
    pub fn call_count(&self) -> usize {
        self.state.lock().unwrap().calls.len()
    }
}

impl Service for Modem {
    async fn client_gone(&self, departure: Departure) {
        // Handler registrations first, through the generated server so that its own table of
        // subscriptions is emptied too (it calls remove_call_event_handler below).
        match self
            .connection
            .object_server()
            .interface::<_, LeMccServer<Arc<Modem>>>(&self.root)
            .await
        {
            Ok(server) => {
                let server = server.get().await;
                let modem = server.inner().clone();
                let handlers = server.client_gone(&departure.client).await;
                debug!(client = departure.client, handlers, "handlers removed");
                for path in departure.of_kind(CALL) {
                    modem.drop_reference(&departure.client, path).await;
                }
            }
            Err(e) => warn!("le_mcc is not served: {e}"),
        }
    }
}

impl LeMcc for Arc<Modem> {
    async fn create(&self, ctx: Context, phone_num_ptr: String) -> fdo::Result<OwnedObjectPath> {
        if phone_num_ptr.is_empty() {
            return Ok(null_reference());
        }
        let id = {
            let mut state = self.state.lock().unwrap();
            state.next_call += 1;
            let id = state.next_call;
            state.calls.insert(
                id,
                Call {
                    number: phone_num_ptr,
                    state: Event::EVENT_SETUP,
                    started: false,
                    incoming: false,
                    termination: TerminationReason::TERM_UNDEFINED,
                    clir: LeOnOff::Off,
                    owner: Some(ctx.sender.to_string()),
                },
            );
            id
        };
        Ok(self.reference_for(&ctx.sender, id).await)
    }

    async fn delete(&self, ctx: Context, call_ref: OwnedObjectPath) -> fdo::Result<LeResult> {
        if self.callers_call(&ctx, &call_ref).is_none() {
            return Ok(LeResult::NotFound);
        }
        self.references.release(&call_ref).await;
        self.drop_reference(&ctx.sender, &call_ref).await;
        Ok(LeResult::Ok)
    }

    async fn start(&self, ctx: Context, call_ref: OwnedObjectPath) -> fdo::Result<LeResult> {
        let Some(id) = self.callers_call(&ctx, &call_ref) else {
            return Ok(LeResult::NotFound);
        };
        let number = {
            let mut state = self.state.lock().unwrap();
            let Some(call) = state.calls.get_mut(&id) else {
                return Ok(LeResult::NotFound);
            };
            if call.started || call.incoming {
                return Ok(LeResult::Busy);
            }
            call.started = true;
            call.number.clone()
        };
        // Start answers at once; the call's progress comes as events.
        zruntime::spawn(self.clone().dial(id, number)).detach();
        Ok(LeResult::Ok)
    }

    async fn is_connected(&self, ctx: Context, call_ref: OwnedObjectPath) -> fdo::Result<bool> {
        let Some(id) = self.callers_call(&ctx, &call_ref) else {
            return Ok(false);
        };
        Ok(self.state_of(id) == Some(Event::EVENT_CONNECTED))
    }

    async fn get_remote_tel(
        &self,
        ctx: Context,
        call_ref: OwnedObjectPath,
    ) -> fdo::Result<(LeResult, String)> {
        let state = self.state.lock().unwrap();
        let call = state
            .call_of(&ctx.sender, &call_ref)
            .and_then(|id| state.calls.get(&id));
        Ok(match call {
            Some(call) => (LeResult::Ok, call.number.clone()),
            None => (LeResult::NotFound, String::new()),
        })
    }

    async fn get_termination_reason(
        &self,
        ctx: Context,
        call_ref: OwnedObjectPath,
    ) -> fdo::Result<TerminationReason> {
        let state = self.state.lock().unwrap();
        let call = state
            .call_of(&ctx.sender, &call_ref)
            .and_then(|id| state.calls.get(&id));
        Ok(call.map_or(TerminationReason::TERM_UNDEFINED, |c| c.termination))
    }

    async fn get_platform_specific_termination_code(
        &self,
        _: Context,
        _: OwnedObjectPath,
    ) -> fdo::Result<i32> {
        Ok(0)
    }

    async fn answer(&self, ctx: Context, call_ref: OwnedObjectPath) -> fdo::Result<LeResult> {
        let Some(id) = self.callers_call(&ctx, &call_ref) else {
            return Ok(LeResult::NotFound);
        };
        {
            let mut state = self.state.lock().unwrap();
            match state.calls.get_mut(&id) {
                Some(call) if call.incoming && call.state == Event::EVENT_INCOMING => {
                    call.owner = Some(ctx.sender.to_string());
                }
                _ => return Ok(LeResult::Fault),
            }
        }
        self.advance(id, Event::EVENT_CONNECTED, None).await;
        Ok(LeResult::Ok)
    }

    async fn hang_up(&self, ctx: Context, call_ref: OwnedObjectPath) -> fdo::Result<LeResult> {
        let Some(id) = self.callers_call(&ctx, &call_ref) else {
            return Ok(LeResult::NotFound);
        };
        Ok(
            match self.end(id, TerminationReason::TERM_LOCAL_ENDED).await {
                true => LeResult::Ok,
                false => LeResult::Fault,
            },
        )
    }

    async fn hang_up_all(&self, _: Context) -> fdo::Result<LeResult> {
        let ids: Vec<u64> = self.state.lock().unwrap().calls.keys().copied().collect();
        for id in ids {
            self.end(id, TerminationReason::TERM_LOCAL_ENDED).await;
        }
        Ok(LeResult::Ok)
    }

    async fn get_caller_id_restrict(
        &self,
        ctx: Context,
        call_ref: OwnedObjectPath,
    ) -> fdo::Result<(LeResult, LeOnOff)> {
        let state = self.state.lock().unwrap();
        let call = state
            .call_of(&ctx.sender, &call_ref)
            .and_then(|id| state.calls.get(&id));
        Ok(match call {
            Some(call) => (LeResult::Ok, call.clir),
            None => (LeResult::NotFound, LeOnOff::Off),
        })
    }

    async fn set_caller_id_restrict(
        &self,
        ctx: Context,
        call_ref: OwnedObjectPath,
        clir_status: LeOnOff,
    ) -> fdo::Result<LeResult> {
        let mut state = self.state.lock().unwrap();
        let Some(id) = state.call_of(&ctx.sender, &call_ref) else {
            return Ok(LeResult::NotFound);
        };
        match state.calls.get_mut(&id) {
            Some(call) => {
                call.clir = clir_status;
                Ok(LeResult::Ok)
            }
            None => Ok(LeResult::NotFound),
        }
    }

    async fn add_call_event_handler(&self, subscriber: Subscriber) -> fdo::Result<bool> {
        self.references
            .register(
                subscriber.destination.as_str(),
                &subscriber.path,
                HANDLER,
                false,
            )
            .await;
        self.state.lock().unwrap().subscribers.push(subscriber);
        Ok(true)
    }

    async fn remove_call_event_handler(
        &self,
        _owner: OwnedUniqueName,
        handler: OwnedObjectPath,
    ) -> fdo::Result<()> {
        self.references.release(&handler).await;
        let mut state = self.state.lock().unwrap();
        state.subscribers.retain(|s| s.path != handler);
        Ok(())
    }

    async fn set_call_waiting_service(&self, _: Context, active: bool) -> fdo::Result<LeResult> {
        self.state.lock().unwrap().call_waiting = active;
        Ok(LeResult::Ok)
    }

    async fn get_call_waiting_service(&self, _: Context) -> fdo::Result<(LeResult, bool)> {
        Ok((LeResult::Ok, self.state.lock().unwrap().call_waiting))
    }

    async fn activate_call(
        &self,
        ctx: Context,
        call_ref: OwnedObjectPath,
    ) -> fdo::Result<LeResult> {
        let Some(id) = self.callers_call(&ctx, &call_ref) else {
            return Ok(LeResult::NotFound);
        };
        // No call is ever waiting or held here: only a connected call is (already) active.
        Ok(match self.state_of(id) {
            Some(Event::EVENT_CONNECTED) => LeResult::Ok,
            _ => LeResult::Fault,
        })
    }

    async fn set_amr_wb_capability(&self, _: Context, enable: bool) -> fdo::Result<LeResult> {
        self.state.lock().unwrap().amr_wb = enable;
        Ok(LeResult::Ok)
    }

    async fn get_amr_wb_capability(&self, _: Context) -> fdo::Result<(LeResult, bool)> {
        Ok((LeResult::Ok, self.state.lock().unwrap().amr_wb))
    }
}

/// The network side of the simulation, for demos and tests.
pub struct Network {
    modem: Arc<Modem>,
}

#[zbus::interface(name = "io.telaf.sim.le_mcc")]
impl Network {
    /// A call comes in from `number`: every CallEvent subscriber gets EVENT_INCOMING with a
    /// reference of its own, which it may Answer. False when nobody subscribes (missed call).
    async fn ring(&self, number: String) -> fdo::Result<bool> {
        if number.len() as i64 > crate::api::le_mdmDefs::PHONE_NUM_MAX_LEN {
            return Err(fdo::Error::InvalidArgs(format!(
                "argument 'number' is {} bytes long; at most {}",
                number.len(),
                crate::api::le_mdmDefs::PHONE_NUM_MAX_LEN
            )));
        }
        Ok(self.modem.ring(number).await)
    }

    /// How many calls the modem knows (each kept while some client holds a reference to it).
    #[zbus(property(emits_changed_signal = "false"))]
    fn calls(&self) -> u32 {
        self.modem.call_count() as u32
    }
}

/// Serves le_mcc (and its simulation interface) at `startup.root`.
pub async fn serve(startup: Startup, timing: Timing) -> zbus::Result<Arc<Modem>> {
    let modem = Arc::new(Modem {
        state: Mutex::new(State {
            amr_wb: true,
            ..State::default()
        }),
        references: startup.references.clone(),
        minter: PathMinter::new(startup.root.as_str()),
        timing,
        connection: startup.connection.clone(),
        root: startup.root.clone(),
    });
    let server = startup.connection.object_server();
    server
        .at(&startup.root, LeMccServer::new(modem.clone()))
        .await?;
    server.at(&startup.root, le_mcc::service1()).await?;
    server
        .at(
            &startup.root,
            Network {
                modem: modem.clone(),
            },
        )
        .await?;
    Ok(modem)
}
