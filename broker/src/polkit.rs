//! polkit authorization for calls a policy rule allows only with a polkit action (telbus's
//! `polkit_action="…"` on `<allow send_…>`).
//!
//! The event loop never waits for polkit: the first call of a connection that needs an action
//! is held, and a worker thread with its own zbus connection to this bus asks
//! org.freedesktop.PolicyKit1 (CheckAuthorization, the caller as a `system-bus-name` subject:
//! polkitd asks the bus who that is). The answer comes back through a channel and a pipe the
//! event loop watches; the held calls are then delivered, or refused with AccessDenied naming
//! the action. A definite answer (authorized, or not authorized without a challenge) is kept
//! per (connection, action) while the connection lives, until polkit says its rules or actions
//! changed (its `Changed` signal, which the worker listens for) or the configuration is
//! reloaded; failures and challenges are not kept, so the next call asks again.
//!
//! Calls held for an answer wait in the order they came; a later call from the same
//! connection that needs no polkit answer is not held behind them.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;

use futures::StreamExt;
use futures::channel::mpsc as async_mpsc;
use rustix::event::epoll;
use tracing::{debug, info, warn};
use zbus::Message;
use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};

use crate::ConnId;
use crate::bus::{Bus, unique_name};
use crate::driver::{ACCESS_DENIED, SERVICE_UNKNOWN};
use crate::wire::BusMessage;

/// The epoll token of the pipe the worker writes to when it has answers.
pub const TOKEN_POLKIT: u64 = crate::activation::TOKEN_SERVICE_DIRS - 1;

/// How many questions the worker has out with polkit at once.
const CONCURRENT_CHECKS: usize = 32;

/// What polkit said about one (connection, action).
#[derive(Debug, Clone)]
enum Outcome {
    Authorized,
    NotAuthorized {
        challenge: bool,
    },
    /// polkit could not be asked, or failed: the text says why.
    Failed(String),
}

struct Question {
    conn: ConnId,
    action: String,
    /// The held call: its sender is the subject.
    call: Message,
}

struct Answer {
    conn: ConnId,
    action: String,
    outcome: Outcome,
}

/// A call waiting for polkit, and the connection it was going to.
struct Held {
    to: ConnId,
    msg: BusMessage,
}

/// The worker thread's ends of the channels.
struct Worker {
    questions: async_mpsc::UnboundedSender<Question>,
    reports: mpsc::Receiver<Report>,
    wake: OwnedFd,
}

/// The polkit state of the bus.
#[derive(Default)]
pub struct Polkit {
    /// Definite answers, while the connection lives.
    answers: HashMap<(ConnId, String), bool>,
    /// Calls waiting for an answer (the question is out while the list is not empty).
    held: HashMap<(ConnId, String), Vec<Held>>,
    worker: Option<Worker>,
}

impl Polkit {
    /// Forget a connection that went away: its answers and the calls it had waiting.
    pub fn forget(&mut self, conn: ConnId) {
        self.answers.retain(|(id, _), _| *id != conn);
        self.held.retain(|(id, _), _| *id != conn);
    }

    /// Forget every answer (the configuration or polkit's rules changed).
    pub fn forget_answers(&mut self) {
        self.answers.clear();
    }
}

impl Bus {
    /// Whether a call that policy allows only with polkit `action` may go on now. If not, it
    /// was either refused (the sender got AccessDenied) or held until polkit answers.
    pub fn polkit_allows(
        &mut self,
        from: ConnId,
        to: ConnId,
        msg: &BusMessage,
        action: &str,
    ) -> bool {
        // The bus's own connection to polkit is never held behind polkit.
        let own_pid = std::process::id();
        if self
            .peers
            .get(&from)
            .is_some_and(|p| p.creds.pid == Some(own_pid))
        {
            return true;
        }
        let key = (from, action.to_string());
        match self.polkit.answers.get(&key) {
            Some(true) => return true,
            Some(false) => {
                self.refuse_for_polkit(
                    from,
                    msg,
                    action,
                    &Outcome::NotAuthorized { challenge: false },
                );
                return false;
            }
            None => {}
        }
        let first = !self.polkit.held.contains_key(&key);
        self.polkit.held.entry(key).or_default().push(Held {
            to,
            msg: msg.clone(),
        });
        if first && let Err(why) = self.ask_polkit(from, action, msg.zbus()) {
            // Not even asked: answer the held calls at once.
            self.polkit_answered(Answer {
                conn: from,
                action: action.to_string(),
                outcome: Outcome::Failed(why),
            });
        }
        false
    }

    fn ask_polkit(&mut self, conn: ConnId, action: &str, call: &Message) -> Result<(), String> {
        if self.polkit.worker.is_none() {
            let worker = spawn_worker(self.address.clone())
                .map_err(|e| format!("cannot start the polkit worker: {e}"))?;
            epoll::add(
                &self.epoll,
                worker.wake.as_fd(),
                epoll::EventData::new_u64(TOKEN_POLKIT),
                epoll::EventFlags::IN,
            )
            .map_err(|e| format!("cannot watch the polkit worker: {e}"))?;
            self.polkit.worker = Some(worker);
        }
        let worker = self.polkit.worker.as_ref().expect("started above");
        debug!("asking polkit about {action} for {}", unique_name(conn));
        worker
            .questions
            .unbounded_send(Question {
                conn,
                action: action.to_string(),
                call: call.clone(),
            })
            .map_err(|_| "the polkit worker has stopped".to_string())
    }

    /// The worker has answers: use them (the event loop calls this when its pipe is readable).
    pub fn polkit_ready(&mut self) {
        let Some(worker) = &self.polkit.worker else {
            return;
        };
        let mut buf = [0u8; 64];
        while matches!(rustix::io::read(&worker.wake, &mut buf), Ok(1..)) {}
        let reports: Vec<Report> = worker.reports.try_iter().collect();
        for report in reports {
            match report {
                Report::Answer(answer) => self.polkit_answered(answer),
                Report::Changed => {
                    info!("polkit's actions or rules changed: the answers kept are forgotten");
                    self.polkit.forget_answers();
                }
            }
        }
    }

    fn polkit_answered(&mut self, answer: Answer) {
        let key = (answer.conn, answer.action);
        let held = self.polkit.held.remove(&key).unwrap_or_default();
        let Some(peer) = self.peers.get(&answer.conn) else {
            return;
        };
        let who = format!("{} ({})", peer.unique, peer.loginfo());
        let action = key.1.as_str();
        match &answer.outcome {
            Outcome::Authorized => info!("polkit authorized {action} for {who}"),
            Outcome::NotAuthorized { challenge } => info!(
                "polkit did not authorize {action} for {who}{}",
                if *challenge {
                    " (it would with authentication)"
                } else {
                    ""
                }
            ),
            Outcome::Failed(why) => {
                warn!("polkit could not be asked about {action} for {who}: {why}")
            }
        }
        match answer.outcome {
            Outcome::Authorized => {
                self.polkit.answers.insert(key.clone(), true);
            }
            Outcome::NotAuthorized { challenge: false } => {
                self.polkit.answers.insert(key.clone(), false);
            }
            _ => {}
        }
        let action = key.1;
        for Held { to, msg } in held {
            if !matches!(answer.outcome, Outcome::Authorized) {
                self.refuse_for_polkit(answer.conn, &msg, &action, &answer.outcome);
                continue;
            }
            let route = msg.route();
            if self.peers.contains_key(&to) {
                // The answer is known now, so this goes through (or meets another check).
                self.deliver_unicast(answer.conn, to, &msg, &route);
            } else {
                let text = format!(
                    "The destination {} disconnected while polkit was asked about {action}",
                    route.destination.unwrap_or("(unset)")
                );
                self.send_error(answer.conn, &msg, SERVICE_UNKNOWN, &text);
            }
        }
    }

    fn refuse_for_polkit(
        &mut self,
        from: ConnId,
        msg: &BusMessage,
        action: &str,
        outcome: &Outcome,
    ) {
        let route = msg.route();
        let why = match outcome {
            Outcome::Authorized => return,
            Outcome::NotAuthorized { challenge: false } => {
                "polkit did not authorize it".to_string()
            }
            Outcome::NotAuthorized { challenge: true } => {
                "polkit would authorize it only after authentication, which the bus cannot ask for"
                    .to_string()
            }
            Outcome::Failed(why) => format!("polkit could not be asked: {why}"),
        };
        let text = format!(
            "Rejected send message: interface=\"{}\" member=\"{}\" destination=\"{}\" needs the polkit action {action} for {}, and {why}",
            route.interface.unwrap_or("(unset)"),
            route.member.unwrap_or("(unset)"),
            route.destination.unwrap_or("(unset)"),
            unique_name(from),
        );
        info!("{text}");
        self.send_error(from, msg, ACCESS_DENIED, &text);
    }
}

/// What the worker tells the event loop.
enum Report {
    Answer(Answer),
    /// polkit's actions or rules changed (its `Changed` signal): answers kept may be stale.
    Changed,
}

/// Start the thread that asks polkit, connected to this bus at `address`.
fn spawn_worker(address: String) -> std::io::Result<Worker> {
    let (questions, incoming) = async_mpsc::unbounded::<Question>();
    let (reports_tx, reports) = mpsc::channel::<Report>();
    let (wake, wake_writer) = rustix::pipe::pipe_with(
        rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
    )?;
    std::thread::Builder::new()
        .name("telbus-polkit".into())
        .spawn(move || {
            let report = |report| {
                // The loop may be gone (shutting down): nothing to tell then.
                if reports_tx.send(report).is_ok() {
                    let _ = rustix::io::write(&wake_writer, &[1]);
                }
            };
            let connection = futures::lock::Mutex::new(None);
            zruntime::block_on(futures::future::join(
                ask(&connection, &address, incoming, &report),
                watch_changes(&connection, &address, &report),
            ))
        })?;
    Ok(Worker {
        questions,
        reports,
        wake,
    })
}

/// The worker's connection to the bus, made when first needed and again after a failure.
type Slot = futures::lock::Mutex<Option<zbus::Connection>>;

async fn connected(slot: &Slot, address: &str) -> Result<zbus::Connection, String> {
    let mut slot = slot.lock().await;
    if let Some(conn) = &*slot {
        return Ok(conn.clone());
    }
    let conn = zbus::connection::Builder::address(address)
        .build()
        .await
        .map_err(|e| format!("cannot connect to the bus: {e}"))?;
    *slot = Some(conn.clone());
    Ok(conn)
}

/// Questions answered as they come, several at a time.
async fn ask(
    connection: &Slot,
    address: &str,
    questions: async_mpsc::UnboundedReceiver<Question>,
    report: &impl Fn(Report),
) {
    questions
        .for_each_concurrent(CONCURRENT_CHECKS, |question| async move {
            let outcome = check(connection, address, &question).await;
            if let Outcome::Failed(_) = outcome {
                // Perhaps the connection is broken: make a new one next time.
                connection.lock().await.take();
            }
            report(Report::Answer(Answer {
                conn: question.conn,
                action: question.action,
                outcome,
            }));
        })
        .await;
}

/// Listens for polkit's `Changed` signal (its rules or actions changed) for as long as the bus
/// lets the worker connect.
async fn watch_changes(connection: &Slot, address: &str, report: &impl Fn(Report)) {
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface("org.freedesktop.PolicyKit1.Authority")
        .member("Changed")
        .build();
    let rule = match rule {
        Ok(rule) => rule,
        Err(e) => return warn!("cannot watch polkit for changes: {e}"),
    };
    loop {
        let conn = match connected(connection, address).await {
            Ok(conn) => conn,
            Err(e) => return warn!("cannot watch polkit for changes: {e}"),
        };
        let mut changes = match zbus::MessageStream::for_match_rule(rule.clone(), &conn, None).await
        {
            Ok(stream) => stream,
            Err(e) => return warn!("cannot watch polkit for changes: {e}"),
        };
        while let Some(change) = changes.next().await {
            if change.is_ok() {
                report(Report::Changed);
            }
        }
        // The connection has gone: watch again on a new one.
        connection.lock().await.take();
    }
}

async fn check(connection: &Slot, address: &str, question: &Question) -> Outcome {
    let conn = match connected(connection, address).await {
        Ok(conn) => conn,
        Err(e) => return Outcome::Failed(e),
    };
    let subject = match Subject::new_for_message_header(&question.call.header()) {
        Ok(subject) => subject,
        Err(e) => return Outcome::Failed(format!("no subject for the caller: {e}")),
    };
    let proxy = AuthorityProxy::builder(&conn)
        // Only CheckAuthorization is wanted: no properties fetched, nothing subscribed.
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await;
    let proxy = match proxy {
        Ok(proxy) => proxy,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    match proxy
        .check_authorization(
            &subject,
            &question.action,
            &HashMap::new(),
            // The bus has no way to show an authentication dialog to the caller.
            CheckAuthorizationFlags::empty(),
            "",
        )
        .await
    {
        Ok(result) if result.is_authorized => Outcome::Authorized,
        Ok(result) => Outcome::NotAuthorized {
            challenge: result.is_challenge,
        },
        Err(e) => Outcome::Failed(e.to_string()),
    }
}
