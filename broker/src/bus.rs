//! The bus: every connection, the registries, and the event loop that drives them.
//!
//! One thread, one epoll set, edge-triggered: a peer that became readable is read until the
//! socket is empty or it used its share of the loop (then it waits for the next turn), and
//! every peer that got messages is flushed once per turn, so that many messages to one peer
//! go out in one `sendmsg`. Nothing blocks; a peer that does not read has its messages
//! wait in its own bounded queue.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::epoll;
use telbus_broker::auth::{AuthConfig, Identity, Sasl};
use telbus_broker::match_rule::MatchIndex;
use telbus_broker::transport::{Listener, PeerCredentials};
use telbus_busconfig::BusConfig;
use tracing::{debug, info, warn};

use crate::ConnId;
use crate::names::NameRegistry;
use crate::peer::{InBuffer, OutQueue, ReadOutcome};
use crate::replies::ReplyTracker;
use crate::wire::{self, BusMessage, WireError};

/// Messages read from one peer before the others get their turn.
const READ_BUDGET: usize = 128;

/// Epoll tokens of things that are not peers.
const TOKEN_SIGNAL: u64 = u64::MAX;
const TOKEN_LISTENER_BASE: u64 = u64::MAX - 1024;

/// The bus driver's own name.
pub const DRIVER: &str = "org.freedesktop.DBus";

/// Where a connection is in its life.
pub enum Phase {
    /// SASL exchange in progress.
    Auth(Box<Sasl>),
    /// Authenticated; its first message must be Hello.
    Unregistered,
    /// Registered with a unique name.
    Active,
    /// Became a monitor: receives copies, may not send.
    Monitor,
}

/// Counters per connection, for Debug.Stats and logs.
#[derive(Default, Clone, Copy)]
pub struct PeerStats {
    pub messages_in: u64,
    pub messages_out: u64,
    pub peak_out_bytes: usize,
    pub peak_out_fds: usize,
    pub peak_match_rules: usize,
    pub peak_names: usize,
}

pub struct Peer {
    pub id: ConnId,
    /// `:1.<id>`, kept so that stamping a message does not format it again.
    pub unique: String,
    pub fd: OwnedFd,
    pub phase: Phase,
    pub creds: PeerCredentials,
    pub unix_fds: bool,
    pub inbuf: InBuffer,
    pub out: OutQueue,
    pub auth_deadline: Option<Instant>,
    /// When the descriptors received ahead of an incomplete message must have their message
    /// (pending_fd_timeout): a client may not park descriptors in the bus.
    pub fd_deadline: Option<Instant>,
    /// The socket may have more to read (edge-triggered readiness not consumed yet).
    pub readable: bool,
    pub stats: PeerStats,
    /// The policy rules that apply to this connection (set once it authenticated).
    pub policy: Option<telbus_policy::PeerPolicy>,
    /// Its messages still waiting in other connections' queues, for max_incoming_bytes and
    /// max_incoming_unix_fds (as in dbus-daemon, a message counts until it is written).
    pub in_flight: crate::quota::Usage,
    /// Not read from until `in_flight` drains below the incoming limits.
    pub throttled: bool,
    /// The last message policy let it send to one connection (see `access`).
    pub last_allowed: crate::access::AllowedSend,
    /// epoll reported a hang-up or an error: read until the end, never stop at a short read.
    pub hangup_reported: bool,
}

impl Peer {
    pub fn unique_name(&self) -> String {
        self.unique.clone()
    }

    pub fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Active)
    }

    /// The user its queued messages are accounted to.
    pub fn quota_user(&self) -> u32 {
        self.creds.uid.unwrap_or(crate::quota::ANONYMOUS)
    }

    /// `uid=… pid=…` for logs.
    pub fn loginfo(&self) -> String {
        let fmt = |v: Option<u32>| v.map_or("?".to_string(), |v| v.to_string());
        format!("uid={} pid={}", fmt(self.creds.uid), fmt(self.creds.pid))
    }
}

pub fn unique_name(id: ConnId) -> String {
    format!(":1.{id}")
}

/// The connection a unique name stands for, if it is one of ours.
pub fn conn_of_unique(name: &str) -> Option<ConnId> {
    name.strip_prefix(":1.")?.parse().ok()
}

pub struct Bus {
    pub epoll: OwnedFd,
    pub listeners: Vec<Listener>,
    pub peers: telbus_broker::IdMap<ConnId, Peer>,
    pub names: NameRegistry,
    pub matches: MatchIndex<ConnId>,
    pub replies: ReplyTracker,
    pub config: Arc<BusConfig>,
    /// The configuration's `<policy>` rules, compiled.
    pub policy: telbus_policy::Policy,
    pub auth: Arc<AuthConfig>,
    pub guid: String,
    pub machine_id: String,
    pub bus_uid: u32,
    pub started: Instant,
    next_id: ConnId,
    /// Peers with something queued to write.
    dirty: Vec<ConnId>,
    /// Peers that still have input after using their read budget.
    ready: VecDeque<ConnId>,
    /// Peers to close at the end of this turn.
    doomed: Vec<(ConnId, String)>,
    pub signal_pipe: Option<OwnedFd>,
    signal_flags: crate::daemon::SignalFlags,
    pub shutdown: bool,
    pub reload_requested: bool,
    /// The config file, for ReloadConfig and SIGHUP.
    pub config_path: Option<std::path::PathBuf>,
    pub systemd_activation: bool,
    pub monitors: crate::monitor::Monitors,
    pub activation: crate::activation::Activation,
    /// The address clients connect to (all listeners, `;`-separated), for activated services.
    pub address: String,
    pub peaks: crate::stats::Peaks,
    pub stats_serial: u32,
    /// What waits in the bus, per user.
    pub quotas: crate::quota::UserQuotas,
    /// The listeners are not watched: max_incomplete_connections is reached.
    accept_paused: bool,
    /// How many connections are in each stage, for the connection limits.
    pub census: crate::census::Census,
    /// Connections that must finish authenticating by then (auth_timeout).
    auth_deadlines: crate::census::Deadlines,
    /// Connections whose descriptors must have their message by then (pending_fd_timeout).
    fd_deadlines: crate::census::Deadlines,
    /// The connection whose message is being routed, and that message's bytes (by address):
    /// the copies of it that are queued are charged to that connection's user.
    dispatching: Option<Dispatching>,
    /// TelAF bindings and references (telbusd --bindings).
    pub telaf: Option<Box<crate::telaf::Telaf>>,
    /// Calls held for polkit, its answers, and the thread that asks it.
    pub polkit: crate::polkit::Polkit,
    /// False only when the benchmark asks for a bus without `<policy>` checks (the environment
    /// variable [`NO_POLICY_ENV`]), to measure what the checks cost; never in normal use.
    enforce_policy: bool,
}

/// Set (to anything) in telbusd's environment, connections get no `<policy>` rules at all: every
/// send, receive and own is allowed without a look at the configuration. For
/// `telbus-bench --only telbusd-nopolicy`, the baseline the policy's cost is measured against.
pub const NO_POLICY_ENV: &str = "TELBUS_BENCH_NO_POLICY";

impl Bus {
    pub fn new(
        config: BusConfig,
        config_path: Option<std::path::PathBuf>,
        listeners: Vec<Listener>,
        guid: String,
    ) -> std::io::Result<Bus> {
        let policy = telbus_policy::Policy::compile(&config.policies)
            .map_err(|e| std::io::Error::other(format!("invalid policy: {e}")))?;
        let epoll_fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        for (i, l) in listeners.iter().enumerate() {
            epoll::add(
                &epoll_fd,
                l.as_fd(),
                epoll::EventData::new_u64(TOKEN_LISTENER_BASE + i as u64),
                epoll::EventFlags::IN,
            )?;
        }
        let auth = Arc::new(AuthConfig {
            mechanisms: config.auth.clone(),
            allow_anonymous: config.allow_anonymous,
            guid: guid.clone(),
            unix_fd_capable: true,
        });
        Ok(Bus {
            epoll: epoll_fd,
            listeners,
            peers: Default::default(),
            names: NameRegistry::default(),
            matches: MatchIndex::new(),
            replies: ReplyTracker::default(),
            config: Arc::new(config),
            policy,
            auth,
            guid,
            machine_id: crate::machine_id(),
            bus_uid: rustix::process::getuid().as_raw(),
            started: Instant::now(),
            next_id: 1,
            dirty: Vec::new(),
            ready: VecDeque::new(),
            doomed: Vec::new(),
            signal_pipe: None,
            signal_flags: Default::default(),
            shutdown: false,
            reload_requested: false,
            config_path,
            systemd_activation: false,
            monitors: Default::default(),
            activation: Default::default(),
            address: String::new(),
            peaks: Default::default(),
            stats_serial: 0,
            quotas: Default::default(),
            accept_paused: false,
            census: Default::default(),
            auth_deadlines: Default::default(),
            fd_deadlines: Default::default(),
            dispatching: None,
            telaf: None,
            polkit: Default::default(),
            enforce_policy: {
                let off = std::env::var_os(NO_POLICY_ENV).is_some();
                if off {
                    warn!(
                        "{NO_POLICY_ENV} is set: <policy> rules are NOT enforced (benchmarks only)"
                    );
                }
                !off
            },
        })
    }

    pub fn watch_signals(
        &mut self,
        pipe: OwnedFd,
        flags: crate::daemon::SignalFlags,
    ) -> std::io::Result<()> {
        self.signal_flags = flags;
        epoll::add(
            &self.epoll,
            &pipe,
            epoll::EventData::new_u64(TOKEN_SIGNAL),
            epoll::EventFlags::IN,
        )?;
        self.signal_pipe = Some(pipe);
        Ok(())
    }

    /// Run until SIGTERM/SIGINT.
    pub fn run(&mut self) -> std::io::Result<()> {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
        while !self.shutdown {
            let timeout = if !self.ready.is_empty() {
                Some(Duration::ZERO)
            } else {
                self.next_deadline()
                    .map(|at| at.saturating_duration_since(Instant::now()))
            };
            let timespec = timeout.map(|d| rustix::time::Timespec {
                tv_sec: d.as_secs() as i64,
                // Round up so that a deadline is not missed by a few nanoseconds.
                tv_nsec: d.subsec_nanos().div_ceil(1_000_000) as i64 * 1_000_000,
            });
            events.clear();
            match epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                timespec.as_ref(),
            ) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let already_ready = self.ready.len();
            for event in events.iter() {
                let token = event.data.u64();
                let flags = event.flags;
                if token == TOKEN_SIGNAL {
                    self.handle_signals();
                } else if token >= TOKEN_LISTENER_BASE {
                    self.accept_one((token - TOKEN_LISTENER_BASE) as usize);
                } else if token == crate::polkit::TOKEN_POLKIT {
                    self.polkit_ready();
                } else if token == crate::activation::TOKEN_SERVICE_DIRS {
                    self.service_dirs_changed();
                } else if token >= crate::activation::TOKEN_CHILD_BASE {
                    self.child_exited((token - crate::activation::TOKEN_CHILD_BASE) as u32);
                } else if let Some(peer) = self.peers.get_mut(&token) {
                    if flags.intersects(
                        epoll::EventFlags::RDHUP | epoll::EventFlags::HUP | epoll::EventFlags::ERR,
                    ) {
                        peer.hangup_reported = true;
                    }
                    if flags.intersects(
                        epoll::EventFlags::IN | epoll::EventFlags::HUP | epoll::EventFlags::ERR,
                    ) && !peer.readable
                    {
                        peer.readable = true;
                        self.ready.push_back(token);
                    }
                    if flags.contains(epoll::EventFlags::OUT) && !peer.out.is_empty() {
                        self.dirty.push(token);
                    }
                }
            }
            // The peers that became readable in this batch take their turns oldest connection
            // first, as in dbus-daemon (which polls its connections in that order). epoll's own
            // order says when an fd last changed state (a write *to* a peer counts), not when
            // its input arrived, and clients rely on input sent first on one connection being
            // handled before input sent later on another (test-dbus-daemon's
            // max-replies-per-connection does).
            self.ready.make_contiguous()[already_ready..].sort_unstable();
            // Each ready peer gets one turn; those with more input go to the back.
            for _ in 0..self.ready.len() {
                let Some(id) = self.ready.pop_front() else {
                    break;
                };
                self.read_peer(id);
            }
            self.expire_timers();
            self.flush_dirty();
            self.close_doomed();
            if self.accept_paused {
                self.pause_or_resume_accepting();
            }
            if self.reload_requested {
                self.reload_requested = false;
                if let Err(e) = self.reload_config(None) {
                    warn!("{}", e.text);
                }
                self.flush_dirty();
            }
        }
        info!("shutting down");
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.auth_deadlines.next(),
            self.fd_deadlines.next(),
            self.replies.next_deadline(),
            self.activation.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle_signals(&mut self) {
        let Some(pipe) = &self.signal_pipe else {
            return;
        };
        let mut buf = [0u8; 64];
        while let Ok(n) = rustix::io::read(pipe, &mut buf) {
            if n == 0 {
                break;
            }
        }
        use std::sync::atomic::Ordering;
        if self.signal_flags.hangup.swap(false, Ordering::Relaxed) {
            self.reload_requested = true;
        }
        if self.signal_flags.terminate.load(Ordering::Relaxed) {
            self.shutdown = true;
        }
    }

    /// Move a connection to its next stage, keeping the census.
    pub fn set_phase(&mut self, id: ConnId, phase: Phase) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        self.census.leave(&peer.phase, peer.creds.uid);
        self.census.enter(&phase, peer.creds.uid);
        peer.phase = phase;
    }

    /// As dbus-daemon: while max_incomplete_connections connections have not said Hello, the
    /// bus accepts no more (new clients wait in the listen backlog), so that half-open
    /// connections cannot exhaust it; connected clients are not affected.
    fn pause_or_resume_accepting(&mut self) {
        let max = self.config.limits.max_incomplete_connections;
        let full = self.census.incomplete() >= max;
        if full == self.accept_paused {
            return;
        }
        self.accept_paused = full;
        if full {
            warn!("max_incomplete_connections={max} reached: not accepting new connections");
        } else {
            info!("accepting new connections again");
        }
        let flags = if full {
            epoll::EventFlags::empty()
        } else {
            epoll::EventFlags::IN
        };
        for (i, l) in self.listeners.iter().enumerate() {
            let data = epoll::EventData::new_u64(TOKEN_LISTENER_BASE + i as u64);
            if let Err(e) = epoll::modify(&self.epoll, l.as_fd(), data, flags) {
                warn!("cannot change the watch of a listener: {e}");
            }
        }
    }

    fn accept_one(&mut self, index: usize) {
        let incomplete = self.census.incomplete();
        loop {
            if self.accept_paused || incomplete >= self.config.limits.max_incomplete_connections {
                self.pause_or_resume_accepting();
                return;
            }
            let accepted = match self.listeners[index].accept() {
                Ok(Some(a)) => a,
                Ok(None) => return,
                Err(e) => {
                    warn!("accept failed: {e}");
                    return;
                }
            };
            let id = self.next_id;
            self.next_id += 1;
            if let Err(e) = epoll::add(
                &self.epoll,
                &accepted.fd,
                epoll::EventData::new_u64(id),
                epoll::EventFlags::IN
                    | epoll::EventFlags::OUT
                    | epoll::EventFlags::RDHUP
                    | epoll::EventFlags::ET,
            ) {
                warn!("cannot watch a new connection: {e}");
                continue;
            }
            let is_unix = self.listeners[index].is_unix();
            let auth = if is_unix {
                self.auth.clone()
            } else {
                Arc::new(AuthConfig {
                    unix_fd_capable: false,
                    ..(*self.auth).clone()
                })
            };
            let sasl = Sasl::new(auth, accepted.credentials.uid);
            let mut peer = Peer {
                id,
                unique: unique_name(id),
                fd: accepted.fd,
                phase: Phase::Auth(Box::new(sasl)),
                creds: accepted.credentials,
                unix_fds: false,
                inbuf: InBuffer::default(),
                out: OutQueue::default(),
                auth_deadline: None,
                fd_deadline: None,
                readable: true,
                stats: PeerStats::default(),
                policy: None,
                in_flight: Default::default(),
                throttled: false,
                last_allowed: Default::default(),
                hangup_reported: false,
            };
            debug!("connection {id} accepted ({})", peer.loginfo());
            self.census.enter(&peer.phase, peer.creds.uid);
            let deadline = Instant::now() + self.config.limits.auth_timeout;
            self.auth_deadlines
                .set(id, &mut peer.auth_deadline, Some(deadline));
            self.peers.insert(id, peer);
            self.ready.push_back(id);
            // One per turn: the listener is level-triggered, so epoll reports it again while
            // connections wait, and going on until accept says EAGAIN cost a system call for
            // nothing when they come one at a time.
            return;
        }
    }

    /// Read and handle what a peer sent, up to its budget.
    fn read_peer(&mut self, id: ConnId) {
        let max_size = self.config.limits.max_message_size as usize;
        let mut handled = 0;
        // The last read emptied the socket (see `ReadOutcome::Data`).
        let mut socket_drained = false;
        loop {
            let Some(peer) = self.peers.get_mut(&id) else {
                return;
            };
            if !peer.readable {
                return;
            }
            let mut want = 0;
            match &mut peer.phase {
                Phase::Auth(sasl) => {
                    if !peer.inbuf.pending().is_empty() {
                        let mut reply = Vec::new();
                        match sasl.feed(peer.inbuf.pending(), &mut reply) {
                            Ok(progress) => {
                                peer.inbuf.consume(progress.consumed);
                                if !reply.is_empty() {
                                    peer.out.push_raw(reply);
                                    self.dirty.push(id);
                                }
                                if let Some(done) = progress.done {
                                    self.authenticated(id, done.identity, done.unix_fds);
                                    continue;
                                }
                            }
                            Err(e) => {
                                self.doom(id, format!("authentication failed: {e}"));
                                return;
                            }
                        }
                    }
                }
                _ => match wire::message_len(peer.inbuf.pending(), max_size) {
                    Err(e) => {
                        self.doom(id, format!("{e}"));
                        return;
                    }
                    Ok(Some(len)) if peer.inbuf.pending().len() >= len => {
                        if handled == READ_BUDGET {
                            self.ready.push_back(id);
                            return;
                        }
                        let limits = &self.config.limits;
                        if peer.in_flight.bytes as u64 >= limits.max_incoming_bytes
                            || peer.in_flight.fds as u64 >= limits.max_incoming_unix_fds
                        {
                            // Read on once its messages drain (see `release_written`).
                            debug!(
                                "{} has {} bytes and {} fds waiting for delivery: not read for now",
                                peer.unique, peer.in_flight.bytes, peer.in_flight.fds
                            );
                            peer.throttled = true;
                            return;
                        }
                        handled += 1;
                        let (inbuf, sender) = (&mut peer.inbuf, &peer.unique);
                        let mut fds = std::mem::take(&mut inbuf.fds);
                        // As dbus-daemon: a message may not announce more descriptors than
                        // max_message_unix_fds; its sender is disconnected.
                        let max_fds = self.config.limits.max_message_unix_fds as usize;
                        let mut over_limit = None;
                        let stamped =
                            wire::stamp_client_message(&inbuf.pending()[..len], sender, |n| {
                                if n > max_fds {
                                    over_limit = Some(n);
                                    return None;
                                }
                                (fds.len() >= n).then(|| fds.drain(..n).collect())
                            });
                        inbuf.fds = fds;
                        if let Some(n) = over_limit {
                            self.doom(
                                id,
                                format!(
                                    "sent a message with {n} file descriptors, more than \
                                     max_message_unix_fds={max_fds}"
                                ),
                            );
                            return;
                        }
                        inbuf.consume(len);
                        peer.stats.messages_in += 1;
                        match stamped {
                            Ok(msg) => {
                                self.dispatching = Some(Dispatching {
                                    from: id,
                                    user: peer.quota_user(),
                                    bytes_at: msg.data().bytes().as_ptr() as usize,
                                    queued: Default::default(),
                                });
                                self.dispatch(id, msg);
                                // What of it was queued counts for the sender until written.
                                if let Some(done) = self.dispatching.take()
                                    && done.queued.messages > 0
                                    && let Some(peer) = self.peers.get_mut(&id)
                                {
                                    peer.in_flight.add_usage(&done.queued);
                                }
                            }
                            Err(e) => {
                                self.invalid_message(id, e);
                                return;
                            }
                        }
                        continue;
                    }
                    Ok(Some(len)) => want = len - peer.inbuf.pending().len(),
                    Ok(None) => {}
                },
            }
            let peer = self.peers.get_mut(&id).expect("peer still here");
            if peer.inbuf.fds.len() > self.config.limits.max_message_unix_fds as usize + 253 {
                self.doom(id, "too many file descriptors without a message".into());
                return;
            }
            let outcome = if socket_drained {
                Ok(ReadOutcome::WouldBlock)
            } else {
                peer.inbuf.read_from(peer.fd.as_fd(), want)
            };
            match outcome {
                Ok(ReadOutcome::Data { drained }) => {
                    // Without a hang-up reported, a drained socket has nothing more to read:
                    // the read that would only say EAGAIN is saved. After one, the read that
                    // sees the end must still come.
                    socket_drained = drained && !peer.hangup_reported;
                }
                Ok(ReadOutcome::WouldBlock) => {
                    peer.readable = false;
                    peer.inbuf.shrink();
                    let deadline = match peer.fd_deadline {
                        _ if peer.inbuf.fds.is_empty() => None,
                        Some(at) => Some(at),
                        None => Some(Instant::now() + self.config.limits.pending_fd_timeout),
                    };
                    self.fd_deadlines.set(id, &mut peer.fd_deadline, deadline);
                    return;
                }
                Ok(ReadOutcome::Closed) => {
                    self.doom(id, "closed by peer".into());
                    return;
                }
                Err(e) => {
                    self.doom(id, format!("read error: {e}"));
                    return;
                }
            }
        }
    }

    fn invalid_message(&mut self, id: ConnId, e: WireError) {
        self.doom(id, format!("sent an invalid message: {e}"));
    }

    fn authenticated(&mut self, id: ConnId, identity: Identity, unix_fds: bool) {
        let groups = self
            .peers
            .get(&id)
            .map(|p| p.creds.groups.clone())
            .unwrap_or_default();
        if let Identity::Uid(uid) = identity {
            // The session bus lets only its own user in, unless the configuration says more.
            if !self.allows_user(uid, &groups) {
                let why = format!("uid {uid} is not allowed to connect to this bus");
                self.doom(id, why);
                return;
            }
        }
        let policy = match identity {
            Identity::Uid(uid) => self.policy_for(uid, &groups),
            // Anonymous clients get the rules that apply to no user in particular.
            Identity::Anonymous => self.policy_for(u32::MAX, &[]),
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.policy = self.enforce_policy.then_some(policy);
        peer.unix_fds = unix_fds;
        self.auth_deadlines.set(id, &mut peer.auth_deadline, None);
        debug!("connection {id} authenticated ({})", peer.loginfo());
        self.set_phase(id, Phase::Unregistered);
    }

    /// Close a connection at the end of this turn, after what is queued for others went out.
    pub fn doom(&mut self, id: ConnId, why: String) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.readable = false;
            self.doomed.push((id, why));
        }
    }

    fn close_doomed(&mut self) {
        while let Some((id, why)) = self.doomed.pop() {
            self.disconnect(id, &why);
        }
    }

    /// Forget a connection: release its names, match rules and pending calls, and tell others.
    fn disconnect(&mut self, id: ConnId, why: &str) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        self.census.leave(&peer.phase, peer.creds.uid);
        self.auth_deadlines.set(id, &mut peer.auth_deadline, None);
        self.fd_deadlines.set(id, &mut peer.fd_deadline, None);
        // Last chance for what is queued to it (e.g. the error that explains why).
        let _ = peer.out.flush(peer.fd.as_fd());
        peer.out.discard();
        let released = std::mem::take(&mut peer.out.released);
        self.release_charges(peer.quota_user(), &released);
        let _ = epoll::delete(&self.epoll, &peer.fd);
        let was_active = peer.is_active();
        // A client that closes its end is routine (debug, as its arrival is); the bus
        // dropping one says why at info, or warn for one that never got as far as Hello.
        let closed_by_peer = why == "closed by peer";
        if closed_by_peer {
            debug!("{} disconnected ({}): {why}", peer.unique, peer.loginfo());
        } else if was_active {
            info!("{} disconnected ({}): {why}", peer.unique, peer.loginfo());
        } else {
            warn!(
                "{} disconnected ({}): {why}",
                unique_name(id),
                peer.loginfo()
            );
        }
        // The peer is gone from `peers`: its user's totals are changed here, not through
        // `count_rules`/`count_claims`, which look the user up.
        let user = peer.quota_user();
        drop(peer);
        self.census
            .rules_changed(user, self.matches.rule_count(id), 0);
        self.matches.remove_owner(id);
        for key in self.replies.remove_connection(id) {
            self.send_error_to_caller(
                key,
                "org.freedesktop.DBus.Error.NoReply",
                "Message recipient disconnected from message bus without replying",
            );
        }
        self.monitor_gone(id);
        self.telaf_gone(id);
        self.polkit.forget(id);
        self.census.names_changed(user, self.names.claims_of(id), 0);
        for change in self.names.remove_connection(id) {
            self.announce_owner_change(change);
        }
        if was_active {
            let name = unique_name(id);
            self.emit_name_owner_changed(&name, Some(&name), None);
        }
        self.flush_dirty();
    }

    fn expire_timers(&mut self) {
        let now = Instant::now();
        for id in self.auth_deadlines.expired(now) {
            self.doom(id, "authentication timed out".into());
        }
        for id in self.fd_deadlines.expired(now) {
            let timeout = self.config.limits.pending_fd_timeout.as_millis();
            self.doom(
                id,
                format!(
                    "file descriptors were sent without their message for {timeout} ms (pending_fd_timeout)"
                ),
            );
        }
        self.expire_activations(now);
        for key in self.replies.expire(now) {
            self.send_error_to_caller(
                key,
                "org.freedesktop.DBus.Error.NoReply",
                "Message did not receive a reply (timeout by message bus)",
            );
        }
    }

    /// Queue a message for a peer. Fails (and drops the message) if the peer's queue is full,
    /// or if its sender used its share of the receiving user's quota.
    pub fn enqueue(&mut self, to: ConnId, msg: &BusMessage) -> Result<(), QueueFull> {
        let limits = &self.config.limits;
        let Some(peer) = self.peers.get_mut(&to) else {
            return Ok(());
        };
        let (bytes, fds) = (msg.data().len(), msg.data().fds().len());
        if peer.out.bytes + bytes > limits.max_outgoing_bytes as usize
            || peer.out.fds + fds > limits.max_outgoing_unix_fds as usize
        {
            return Err(QueueFull::Connection);
        }
        // A copy of the message being routed is the sender's; anything else (the driver's
        // messages) and copies for monitors are the bus's own.
        let dispatching = self.dispatching.as_mut().filter(|d| {
            d.bytes_at == msg.data().bytes().as_ptr() as usize
                && !matches!(peer.phase, Phase::Monitor)
        });
        let (sender, actor) = dispatching
            .as_ref()
            .map_or((0, crate::quota::BUS_ACTOR), |d| (d.from, d.user));
        let budget = crate::quota::Budget {
            bytes: limits.max_queued_bytes_per_user as usize,
            fds: limits.max_queued_unix_fds_per_user as usize,
        };
        let receiver = peer.quota_user();
        if let Err(exceeded) = self.quotas.charge(receiver, actor, bytes, fds, budget) {
            return Err(QueueFull::User {
                receiver,
                actor,
                exceeded,
            });
        }
        if let Some(d) = dispatching {
            d.queued.add(bytes, fds);
        }
        if peer.out.is_empty() {
            self.dirty.push(to);
        }
        let charge = crate::quota::Charge {
            sender,
            actor,
            bytes: bytes as u32,
            fds: fds as u32,
        };
        peer.out.push_charged(msg.data().clone(), charge);
        peer.stats.messages_out += 1;
        peer.stats.peak_out_bytes = peer.stats.peak_out_bytes.max(peer.out.bytes);
        peer.stats.peak_out_fds = peer.stats.peak_out_fds.max(peer.out.fds);
        Ok(())
    }

    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for id in dirty {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if peer.out.is_empty() {
                continue;
            }
            let result = peer.out.flush(peer.fd.as_fd());
            if !peer.out.released.is_empty() {
                let released = std::mem::take(&mut peer.out.released);
                let receiver = peer.quota_user();
                self.release_charges(receiver, &released);
                if let Some(peer) = self.peers.get_mut(&id) {
                    // Keep the allocation for the next flush.
                    let mut released = released;
                    released.clear();
                    peer.out.released = released;
                }
            }
            if let Err(e) = result
                && !self.doomed.iter().any(|(d, _)| *d == id)
            {
                self.doom(id, format!("write error: {e}"));
            }
        }
    }

    /// Messages charged to `receiver` were written or dropped: give their senders and users
    /// back what they held, and read again from senders that were waiting for that.
    ///
    /// Runs between dispatches only (flushes do), so no sender has charges pending in
    /// `dispatching`.
    fn release_charges(&mut self, receiver: u32, released: &[crate::quota::Charge]) {
        debug_assert!(self.dispatching.is_none());
        let limits = &self.config.limits;
        // Consecutive charges of one sender (the common case: a burst from one client) are
        // given back together, with one lookup each.
        for run in released.chunk_by(|a, b| a.sender == b.sender && a.actor == b.actor) {
            let mut total = crate::quota::Usage::default();
            for charge in run {
                total.add(charge.bytes as usize, charge.fds as usize);
            }
            let (sender, actor) = (run[0].sender, run[0].actor);
            self.quotas.release(receiver, actor, &total);
            if sender == 0 {
                continue;
            }
            let Some(from) = self.peers.get_mut(&sender) else {
                continue;
            };
            from.in_flight.sub_usage(&total);
            if from.throttled
                && (from.in_flight.bytes as u64) < limits.max_incoming_bytes
                && (from.in_flight.fds as u64) < limits.max_incoming_unix_fds
            {
                from.throttled = false;
                // It stopped with input left; its turn comes back.
                if from.readable {
                    self.ready.push_back(sender);
                }
            }
        }
    }
}

impl Bus {
    /// Read the configuration file again and use it (ReloadConfig, SIGHUP). A file that does
    /// not load leaves the running configuration as it was.
    pub fn reload_config(&mut self, by: Option<ConnId>) -> Result<(), crate::driver::DriverError> {
        let who = by.map_or("SIGHUP".to_string(), unique_name);
        let Some(path) = self.config_path.clone() else {
            info!("reload requested by {who}: the embedded configuration does not change");
            return Ok(());
        };
        crate::daemon::notify_reloading();
        let loaded = crate::daemon::load_config(&path, None).and_then(|config| {
            telbus_policy::Policy::compile(&config.policies)
                .map(|policy| (config, policy))
                .map_err(|e| format!("invalid policy: {e}"))
        });
        match loaded {
            Ok((config, policy)) => {
                // Connections keep their identity; their rules are selected again from the new
                // policy, so a change applies to the next message.
                for peer in self.peers.values_mut() {
                    peer.last_allowed = Default::default();
                    if let (Some(_), Some(uid)) = (&peer.policy, peer.creds.uid) {
                        peer.policy = Some(policy.for_peer(&telbus_policy::PeerIdentity {
                            uid,
                            gids: peer.creds.groups.clone(),
                            at_console: false,
                        }));
                    }
                }
                self.policy = policy;
                self.polkit.forget_answers();
                self.auth = Arc::new(AuthConfig {
                    mechanisms: config.auth.clone(),
                    allow_anonymous: config.allow_anonymous,
                    guid: self.guid.clone(),
                    unix_fd_capable: true,
                });
                crate::daemon::apply_config_log_filter(&config);
                self.config = Arc::new(config);
                self.load_services();
                info!(
                    "configuration reloaded from {} (requested by {who})",
                    path.display()
                );
                crate::daemon::notify_systemd("READY=1\nSTATUS=Processing requests...");
                Ok(())
            }
            Err(e) => {
                let text = format!("Unable to reload configuration: {e}");
                warn!("{text} (requested by {who}); keeping the running configuration");
                crate::daemon::notify_systemd(&format!(
                    "READY=1\nSTATUS=Processing requests (configuration not reloaded: {e})"
                ));
                Err(crate::driver::DriverError {
                    name: "org.freedesktop.DBus.Error.Failed",
                    text,
                })
            }
        }
    }
}

/// The message being routed, whose queued copies are charged to its sender.
struct Dispatching {
    from: ConnId,
    user: u32,
    /// Where its bytes are: the copies share them.
    bytes_at: usize,
    /// What of it was queued so far, added to the sender's `in_flight` once routed.
    queued: crate::quota::Usage,
}

/// Why a message could not be queued.
#[derive(Debug)]
pub enum QueueFull {
    /// The receiving connection's queue is over max_outgoing_bytes or max_outgoing_unix_fds.
    Connection,
    /// The sending user has its share of the receiving user's quota queued already.
    User {
        receiver: u32,
        actor: u32,
        exceeded: crate::quota::Exceeded,
    },
}

impl QueueFull {
    /// The limit that refused the message, for the sender's error and the log.
    pub fn limit(&self) -> String {
        match self {
            QueueFull::Connection => "max_outgoing_bytes or max_outgoing_unix_fds".into(),
            QueueFull::User {
                receiver,
                actor,
                exceeded,
            } => {
                let what = match exceeded {
                    crate::quota::Exceeded::Bytes => "max_queued_bytes_per_user",
                    crate::quota::Exceeded::Fds => "max_queued_unix_fds_per_user",
                };
                format!("uid {actor}'s share of uid {receiver}'s {what}")
            }
        }
    }
}

impl OutQueue {
    /// Queue bytes that are not a message (SASL replies).
    pub fn push_raw(&mut self, bytes: Vec<u8>) {
        use zbus::wire::serialized::{Context, Data};
        self.push_data(Data::new(
            bytes,
            Context::new(zbus::wire::Endian::Little, 0),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_map_back_to_connections() {
        assert_eq!(unique_name(42), ":1.42");
        assert_eq!(conn_of_unique(":1.42"), Some(42));
        assert_eq!(conn_of_unique(":2.42"), None);
        assert_eq!(conn_of_unique("org.x"), None);
        assert_eq!(conn_of_unique(":1.x"), None);
    }
}
