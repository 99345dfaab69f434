//! TelAF on the bus: `io.telaf.Broker1` at /io/telaf/Broker1 (served by the bus itself), the
//! bindings that decide who may own and call `io.telaf.<app>.<service>` names, and the
//! references services hand to clients, which die with their client.
//!
//! Enabled by `telbusd --bindings=FILE` (the format is in docs/bindings.md). Each connection is
//! recognised as an app once, at Hello, from its credentials and /proc; the rules are asked on
//! every message, so Bind/Unbind/Load apply to the next one without dropping connections.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value as Json, json};
use telbus_policy::bindings::{
    self, Allowed, Binding, ClientSide, Principal, ProcessFacts, SystemDef,
};
use tracing::{debug, info, warn};
use zbus::Message;
use zbus::message::Header;
use zbus::wire::ObjectPath;

use crate::ConnId;
use crate::bus::{Bus, DRIVER, conn_of_unique, unique_name};
use crate::driver::{ACCESS_DENIED, DriverError, INVALID_ARGS, SERVICE_UNKNOWN};
use crate::wire::{BusMessage, Route};

pub const PATH: &str = "/io/telaf/Broker1";
pub const IFACE: &str = "io.telaf.Broker1";
const PROTOCOL_MISMATCH: &str = "io.telaf.Error.ProtocolMismatch";
const BAD_REFERENCE: &str = "io.telaf.Error.BadReference";
const FAILED: &str = "org.freedesktop.DBus.Error.Failed";

/// Member, input signature, output signature, for administrators only.
const METHODS: &[(&str, &str, &str, bool)] = &[
    ("Connect", "ssb", "so", false),
    ("AddReference", "sob", "", false),
    ("RemoveReference", "o", "", false),
    ("List", "", "s", true),
    ("Bind", "ssss", "", true),
    ("Unbind", "ss", "", true),
    ("Load", "", "", true),
    ("Why", "ss", "s", true),
    ("References", "", "s", true),
];

fn err(name: &'static str, text: impl Into<String>) -> DriverError {
    DriverError {
        name,
        text: text.into(),
    }
}

/// A connection as the bindings see it.
struct Conn {
    facts: ProcessFacts,
    principal: Principal,
    pid: Option<u32>,
}

/// A Connect(wait=true) whose answer waits for a binding or for the provider.
struct Waiting {
    caller: ConnId,
    call: BusMessage,
    interface: String,
    protocol: String,
    since: Instant,
}

struct Reference {
    client: ConnId,
    shared: bool,
}

/// The references one service connection registered.
#[derive(Default)]
struct ServiceRefs {
    live: HashMap<String, Reference>,
    /// Every path ever registered: paths are never reused.
    ever: HashSet<String>,
}

pub struct Telaf {
    file: PathBuf,
    def: SystemDef,
    conns: telbus_broker::IdMap<ConnId, Conn>,
    waiting: Vec<Waiting>,
    refs: telbus_broker::IdMap<ConnId, ServiceRefs>,
    /// User and group names by id, for recognising apps at Hello: a lookup reads
    /// /etc/passwd or /etc/group (through NSS) and cost more than the rest of a connection's
    /// set-up. Forgotten on Load, which is where a changed user database is picked up.
    user_names: telbus_broker::IdMap<u32, Option<String>>,
    group_names: telbus_broker::IdMap<u32, Option<String>>,
}

impl Telaf {
    /// Loads the system definition file given with --bindings.
    pub fn load(file: &Path) -> Result<Telaf, String> {
        let def = SystemDef::load(file).map_err(|e| e.to_string())?;
        info!(
            "TelAF bindings loaded from {}: {} apps, {} bindings",
            file.display(),
            def.apps.len(),
            def.bindings.len()
        );
        Ok(Telaf {
            file: file.to_path_buf(),
            def,
            conns: Default::default(),
            waiting: Vec::new(),
            refs: Default::default(),
            user_names: Default::default(),
            group_names: Default::default(),
        })
    }
}

/// What Connect finds for a caller's interface name.
enum Resolved {
    Ready(String, String),
    Unbound,
    /// Bound, but the provider does not own its name: the name and its `app.service`.
    NotUp(String, String),
    Mismatch(String),
}

impl Bus {
    /// After Hello: which app is this connection?
    pub fn telaf_hello(&mut self, id: ConnId) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        if self.telaf.is_none() {
            return;
        }
        let telaf = self.telaf.as_mut().expect("checked");
        let mut facts = process_facts(&peer.creds, &mut telaf.user_names, &mut telaf.group_names);
        let pid = peer.creds.pid;
        read_proc_facts(
            &mut facts,
            pid,
            telaf.def.uses_unit(),
            telaf.def.uses_label(),
        );
        let principal = telaf.def.principal(&facts);
        debug!(
            "{} is {} (exe={} uid={})",
            unique_name(id),
            match &principal {
                Principal::App(a) => format!("app {a}"),
                Principal::User(u) => format!("user <{u}>, not an app"),
            },
            facts.exe.as_deref().unwrap_or("?"),
            facts.uid.map_or("?".into(), |u| u.to_string())
        );
        telaf.conns.insert(
            id,
            Conn {
                facts,
                principal,
                pid,
            },
        );
    }

    /// Only the providing app may own `io.telaf.<app>.<service>`. None if allowed.
    pub fn telaf_check_own(&self, from: ConnId, name: &str) -> Option<String> {
        let telaf = self.telaf.as_ref()?;
        if !name.starts_with(bindings::NAME_PREFIX) {
            return None;
        }
        let who = telaf.conns.get(&from).map(|c| &c.principal);
        let text = match telaf.def.provider(name) {
            Some((app, _)) if matches!(who, Some(Principal::App(a)) if *a == app.name) => {
                return None;
            }
            Some((app, p)) => format!(
                "Connection \"{}\" ({}) may not own {name}: only app {} provides {} (TelAF bindings {})",
                unique_name(from),
                who.map_or("?".into(), |w| w.to_string()),
                app.name,
                p.service,
                telaf.file.display()
            ),
            None => format!(
                "Connection \"{}\" may not own {name}: no app of the TelAF bindings {} provides it",
                unique_name(from),
                telaf.file.display()
            ),
        };
        info!("{text}");
        Some(text)
    }

    /// A method call about to go from `from` to `to`: refused when the destination is a TelAF
    /// service the caller has no binding to, or the path is another client's reference.
    pub fn telaf_check_call(
        &self,
        from: ConnId,
        to: ConnId,
        route: &Route<'_>,
    ) -> Result<(), String> {
        let Some(telaf) = self.telaf.as_ref() else {
            return Ok(());
        };
        if let (Some(refs), Some(path)) = (telaf.refs.get(&to), route.path)
            && let Some(r) = refs.live.get(path)
            && !r.shared
            && r.client != from
        {
            let text = format!(
                "{path} is a reference of {} held by {}: {} may not call it",
                unique_name(to),
                unique_name(r.client),
                unique_name(from)
            );
            info!("{text}");
            return Err(text);
        }
        let Some(dest) = route.destination else {
            return Ok(());
        };
        let check = |name: &str| self.telaf_binding_verdict(from, name);
        let verdict = if dest.starts_with(':') {
            // Through its unique name, a provider is reachable by the clients of any of its
            // TelAF names.
            let mut verdict = None;
            for name in self.names.owned_by(to) {
                match check(name) {
                    Some(Ok(())) => return Ok(()),
                    Some(Err(e)) => verdict = verdict.or(Some(Err(e))),
                    None => {}
                }
            }
            verdict
        } else if dest.starts_with(bindings::NAME_PREFIX) {
            check(dest)
        } else {
            None
        };
        match verdict {
            Some(Err(text)) => {
                info!("{text}");
                Err(text)
            }
            _ => Ok(()),
        }
    }

    /// A method call from `from` to the TelAF name `name`: Ok when a binding allows it, Err
    /// naming the missing binding, None when `name` is no TelAF service (or the caller is
    /// unknown to the bindings).
    fn telaf_binding_verdict(&self, from: ConnId, name: &str) -> Option<Result<(), String>> {
        let telaf = self.telaf.as_ref()?;
        let caller = telaf.conns.get(&from).map(|c| &c.principal)?;
        let (app, p) = telaf.def.provider(name)?;
        Some(match telaf.def.may_call(caller, &app.name, name) {
            Some(_) => Ok(()),
            None => Err(format!(
                "Access denied by TelAF bindings: {caller} has no binding to {}.{} (missing \"bind {}.<interface> -> {}.{}\" in {}); {} may not call {name}",
                app.name,
                p.service,
                client_text(caller),
                app.name,
                p.service,
                telaf.file.display(),
                unique_name(from)
            )),
        })
    }

    /// A method call for the activatable TelAF name `name`, nobody owning it yet: refused
    /// before the service is started when no binding allows it, so that an unbound client
    /// does not start services it may not call.
    pub fn telaf_check_activation(
        &self,
        from: ConnId,
        name: &str,
        route: &Route<'_>,
    ) -> Result<(), String> {
        if route.msg_type != zbus::message::Type::MethodCall {
            return Ok(());
        }
        match self.telaf_binding_verdict(from, name) {
            Some(Err(text)) => {
                info!("{text}");
                Err(text)
            }
            _ => Ok(()),
        }
    }

    /// A TelAF name got an owner: Connects waiting for it may be answered.
    pub fn telaf_name_acquired(&mut self, name: &str) {
        if name.starts_with(bindings::NAME_PREFIX)
            && self.telaf.as_ref().is_some_and(|t| !t.waiting.is_empty())
        {
            self.telaf_retry_waiting();
        }
    }

    /// A connection left: its waiting Connects go, the references it held die (their services
    /// get one ClientGone each), and those it registered as a service are forgotten.
    pub fn telaf_gone(&mut self, id: ConnId) {
        let Some(telaf) = self.telaf.as_mut() else {
            return;
        };
        telaf.conns.remove(&id);
        telaf.waiting.retain(|w| w.caller != id);
        telaf.refs.remove(&id);
        let mut notices = Vec::new();
        for (service, refs) in telaf.refs.iter_mut() {
            let mut paths: Vec<String> = refs
                .live
                .iter()
                .filter(|(_, r)| r.client == id)
                .map(|(p, _)| p.clone())
                .collect();
            if paths.is_empty() {
                continue;
            }
            paths.sort();
            for p in &paths {
                refs.live.remove(p);
            }
            notices.push((*service, paths));
        }
        notices.sort();
        for (service, paths) in notices {
            info!(
                "{} left holding {} reference(s) of {}: ClientGone sent",
                unique_name(id),
                paths.len(),
                unique_name(service)
            );
            let paths: Vec<ObjectPath<'_>> = paths
                .iter()
                .filter_map(|p| ObjectPath::try_from(p.as_str()).ok())
                .collect();
            let built = Message::signal(PATH, IFACE, "ClientGone")
                .sender(DRIVER)
                .destination(unique_name(service))
                .build(&(unique_name(id), paths));
            match built {
                Ok(msg) => self.deliver_from_driver(service, msg),
                Err(e) => warn!("cannot build ClientGone: {e}"),
            }
        }
    }

    /// Is this a call for io.telaf.Broker1 (which the bus serves when bindings are loaded)?
    pub fn is_telaf_call(&self, route: &Route<'_>) -> bool {
        self.telaf.is_some()
            && route.path == Some(PATH)
            && match route.interface {
                Some(i) => i == IFACE,
                None => METHODS.iter().any(|(m, ..)| Some(*m) == route.member),
            }
    }

    /// A call to io.telaf.Broker1.
    pub fn telaf_call(&mut self, from: ConnId, msg: &BusMessage, route: &Route<'_>) {
        match self.telaf_method(from, msg, &msg.zbus().header(), route) {
            Ok(Some(reply)) => {
                if !route.no_reply_expected {
                    self.deliver_from_driver(from, reply)
                }
            }
            Ok(None) => {}
            Err(e) => self.send_error(from, msg, e.name, &e.text),
        }
    }

    fn telaf_method(
        &mut self,
        from: ConnId,
        msg: &BusMessage,
        header: &Header<'_>,
        route: &Route<'_>,
    ) -> Result<Option<Message>, DriverError> {
        let member = route.member.unwrap_or_default();
        let Some(&(_, sig, _, admin)) = METHODS.iter().find(|(m, ..)| *m == member) else {
            return Err(err(
                "org.freedesktop.DBus.Error.UnknownMethod",
                format!("{IFACE} has no method {member}"),
            ));
        };
        let actual = header.signature().to_string_no_parens();
        if actual != sig {
            return Err(err(
                INVALID_ARGS,
                format!("Call to {IFACE}.{member} has wrong args ({actual}, expected {sig})"),
            ));
        }
        if admin {
            let uid = self.peers.get(&from).and_then(|p| p.creds.uid);
            if !uid.is_some_and(|u| u == 0 || u == self.bus_uid) {
                return Err(err(
                    ACCESS_DENIED,
                    format!(
                        "{IFACE}.{member} is for administrators (uid 0 or the bus's uid {}); the caller has uid {}",
                        self.bus_uid,
                        uid.map_or("unknown".into(), |u| u.to_string())
                    ),
                ));
            }
        }
        let body = msg.zbus().body();
        let bad_body = |e: zbus::Error| err(INVALID_ARGS, e.to_string());
        let reply = Message::method_return(header).sender(DRIVER);
        let built = match member {
            "Connect" => {
                let (iface, protocol, wait): (String, String, bool) =
                    body.deserialize().map_err(bad_body)?;
                match self.telaf_resolve(from, &iface, &protocol) {
                    Resolved::Ready(name, path) => reply.build(&(
                        name,
                        ObjectPath::try_from(path).map_err(|e| err(FAILED, e.to_string()))?,
                    )),
                    Resolved::Mismatch(text) => return Err(err(PROTOCOL_MISMATCH, text)),
                    _ if wait => {
                        let telaf = self.telaf.as_mut().expect("enabled");
                        telaf.waiting.push(Waiting {
                            caller: from,
                            call: msg.clone(),
                            interface: iface,
                            protocol,
                            since: Instant::now(),
                        });
                        return Ok(None);
                    }
                    Resolved::Unbound => {
                        let who = self.telaf_principal(from);
                        return Err(err(
                            ACCESS_DENIED,
                            format!(
                                "{who} has no binding for its interface {iface} (missing \"bind {}.{iface} -> APP.SERVICE\")",
                                client_text(&who)
                            ),
                        ));
                    }
                    Resolved::NotUp(name, service) => {
                        return Err(err(
                            SERVICE_UNKNOWN,
                            format!("{iface} is bound to {service}, but {name} is not on the bus"),
                        ));
                    }
                }
            }
            "AddReference" => {
                let (client, path, shared): (String, ObjectPath<'_>, bool) =
                    body.deserialize().map_err(bad_body)?;
                self.telaf_add_reference(from, &client, path.as_str(), shared)?;
                reply.build(&())
            }
            "RemoveReference" => {
                let (path,): (ObjectPath<'_>,) = body.deserialize().map_err(bad_body)?;
                let telaf = self.telaf.as_mut().expect("enabled");
                let removed = telaf
                    .refs
                    .get_mut(&from)
                    .and_then(|r| r.live.remove(path.as_str()));
                if removed.is_none() {
                    return Err(err(
                        BAD_REFERENCE,
                        format!("{path} is not a live reference of {}", unique_name(from)),
                    ));
                }
                reply.build(&())
            }
            "List" => reply.build(&(self.telaf_list().to_string(),)),
            "References" => reply.build(&(self.telaf_references().to_string(),)),
            "Bind" => {
                let (client, iface, server, service): (String, String, String, String) =
                    body.deserialize().map_err(bad_body)?;
                let client_side = bindings::parse_client(&client).ok_or_else(|| {
                    err(
                        INVALID_ARGS,
                        format!("expected an app, <user> or *, found \"{client}\""),
                    )
                })?;
                let binding = Binding {
                    client: client_side,
                    interface: iface,
                    server_app: server,
                    service,
                    line: None,
                };
                let text = binding.to_string();
                let telaf = self.telaf.as_mut().expect("enabled");
                telaf.def.bind(binding).map_err(|e| err(INVALID_ARGS, e))?;
                info!("bound {text} (by {})", unique_name(from));
                self.telaf_retry_waiting();
                reply.build(&())
            }
            "Unbind" => {
                let (client, iface): (String, String) = body.deserialize().map_err(bad_body)?;
                let client_side = bindings::parse_client(&client).ok_or_else(|| {
                    err(
                        INVALID_ARGS,
                        format!("expected an app, <user> or *, found \"{client}\""),
                    )
                })?;
                let telaf = self.telaf.as_mut().expect("enabled");
                if !telaf.def.unbind(&client_side, &iface) {
                    return Err(err(INVALID_ARGS, format!("{client}.{iface} is not bound")));
                }
                info!("unbound {client}.{iface} (by {})", unique_name(from));
                reply.build(&())
            }
            "Load" => {
                self.telaf_load(from)?;
                reply.build(&())
            }
            "Why" => {
                let (client, destination): (String, String) =
                    body.deserialize().map_err(bad_body)?;
                reply.build(&(self.telaf_why(&client, &destination)?,))
            }
            _ => unreachable!("every Broker1 method is handled"),
        };
        built.map(Some).map_err(|e| err(FAILED, e.to_string()))
    }

    fn telaf_principal(&self, id: ConnId) -> Principal {
        self.telaf
            .as_ref()
            .and_then(|t| t.conns.get(&id))
            .map_or(Principal::User("?".into()), |c| c.principal.clone())
    }

    fn telaf_resolve(&self, from: ConnId, iface: &str, protocol: &str) -> Resolved {
        let telaf = self.telaf.as_ref().expect("enabled");
        let who = self.telaf_principal(from);
        let Some(binding) = telaf.def.route(&who, iface) else {
            return Resolved::Unbound;
        };
        let name = binding.bus_name();
        let service = format!("{}.{}", binding.server_app, binding.service);
        let Some((_, provided)) = telaf.def.provider(&name) else {
            return Resolved::Unbound;
        };
        if !protocol.is_empty()
            && let Some(id) = &provided.protocol_id
            && id != protocol
        {
            return Resolved::Mismatch(format!(
                "{iface} is bound to {service} of API {} with protocol id {id}; the client expects {protocol}",
                provided.api
            ));
        }
        if self.names.owner(&name).is_none() {
            return Resolved::NotUp(name, service);
        }
        Resolved::Ready(name, bindings::root_path(&binding.service))
    }

    /// Answers the waiting Connects that can be answered now.
    fn telaf_retry_waiting(&mut self) {
        let Some(telaf) = self.telaf.as_mut() else {
            return;
        };
        let waiting = std::mem::take(&mut telaf.waiting);
        let mut still = Vec::new();
        for w in waiting {
            let header = w.call.zbus().header();
            match self.telaf_resolve(w.caller, &w.interface, &w.protocol) {
                Resolved::Ready(name, path) => {
                    let built = ObjectPath::try_from(path).and_then(|path| {
                        Message::method_return(&header)
                            .sender(DRIVER)
                            .build(&(name.as_str(), path))
                    });
                    info!(
                        "{} connected to {name} after waiting {:?}",
                        unique_name(w.caller),
                        w.since.elapsed()
                    );
                    match built {
                        Ok(reply) => self.deliver_from_driver(w.caller, reply),
                        Err(e) => warn!("cannot build the reply to Connect: {e}"),
                    }
                }
                Resolved::Mismatch(text) => {
                    self.send_error(w.caller, &w.call, PROTOCOL_MISMATCH, &text)
                }
                Resolved::Unbound | Resolved::NotUp(..) => still.push(w),
            }
        }
        if let Some(telaf) = self.telaf.as_mut() {
            still.append(&mut telaf.waiting);
            telaf.waiting = still;
        }
    }

    fn telaf_add_reference(
        &mut self,
        from: ConnId,
        client: &str,
        path: &str,
        shared: bool,
    ) -> Result<(), DriverError> {
        let Some(client_id) = self
            .resolve_conn(client)
            .filter(|_| client.starts_with(':'))
        else {
            return Err(err(
                BAD_REFERENCE,
                format!("{client} is not a connected client (a unique name is expected)"),
            ));
        };
        let telaf = self.telaf.as_mut().expect("enabled");
        let refs = telaf.refs.entry(from).or_default();
        if !refs.ever.insert(path.to_string()) {
            return Err(err(
                BAD_REFERENCE,
                format!(
                    "{path} was registered before by {}: reference paths are never reused",
                    unique_name(from)
                ),
            ));
        }
        refs.live.insert(
            path.to_string(),
            Reference {
                client: client_id,
                shared,
            },
        );
        Ok(())
    }

    /// Load: read the file again; a file that does not load leaves the rules as they were.
    fn telaf_load(&mut self, from: ConnId) -> Result<(), DriverError> {
        let telaf = self.telaf.as_mut().expect("enabled");
        let def = match SystemDef::load(&telaf.file) {
            Ok(def) => def,
            Err(e) => {
                warn!(
                    "Load by {} refused, the bindings stay as they were: {e}",
                    unique_name(from)
                );
                return Err(err(FAILED, format!("the bindings were not reloaded: {e}")));
            }
        };
        telaf.user_names.clear();
        telaf.group_names.clear();
        for conn in telaf.conns.values_mut() {
            // A definition that recognises apps by unit or label where the old one did not
            // needs what was not read when the connection came.
            read_proc_facts(&mut conn.facts, conn.pid, def.uses_unit(), def.uses_label());
            conn.principal = def.principal(&conn.facts);
        }
        telaf.def = def;
        info!(
            "TelAF bindings reloaded from {} by {}",
            telaf.file.display(),
            unique_name(from)
        );
        self.telaf_retry_waiting();
        Ok(())
    }

    fn telaf_list(&self) -> Json {
        let telaf = self.telaf.as_ref().expect("enabled");
        let bindings: Vec<Json> = telaf
            .def
            .bindings
            .iter()
            .map(|b| {
                json!({"client": b.client.to_string(), "interface": b.interface,
                       "server": b.server_app, "service": b.service,
                       "origin": b.line.map_or("runtime".to_string(),
                           |l| format!("{}:{l}", telaf.file.display()))})
            })
            .collect();
        let mut services = Vec::new();
        for app in &telaf.def.apps {
            for p in &app.provides {
                let name = bindings::bus_name(&app.name, &p.service);
                let owner = self.names.owner(&name);
                services.push(json!({
                    "app": app.name, "service": p.service, "api": p.api,
                    "protocolId": p.protocol_id, "busName": name,
                    "owner": owner.map(unique_name),
                    "pid": owner.and_then(|o| self.peers.get(&o)).and_then(|p| p.creds.pid),
                }));
            }
        }
        let waiting: Vec<Json> = telaf
            .waiting
            .iter()
            .map(|w| {
                let who = self.telaf_principal(w.caller);
                let bound = telaf.def.route(&who, &w.interface);
                json!({
                    "client": unique_name(w.caller),
                    "principal": who.to_string(),
                    "pid": telaf.conns.get(&w.caller).and_then(|c| c.pid),
                    "interface": w.interface,
                    "protocolId": w.protocol,
                    "state": if bound.is_some() { "WAITING" } else { "UNBOUND" },
                    "for": bound.map(|b| format!("{}.{}", b.server_app, b.service)),
                    "seconds": w.since.elapsed().as_secs(),
                })
            })
            .collect();
        let mut conns: Vec<(&ConnId, &Conn)> = telaf.conns.iter().collect();
        conns.sort_by_key(|(id, _)| **id);
        let connections: Vec<Json> = conns
            .iter()
            .map(|(id, c)| {
                json!({"client": unique_name(**id), "principal": c.principal.to_string(),
                       "app": matches!(c.principal, Principal::App(_)),
                       "pid": c.pid, "exe": c.facts.exe})
            })
            .collect();
        json!({"file": telaf.file.display().to_string(), "bindings": bindings,
               "services": services, "waiting": waiting, "connections": connections})
    }

    fn telaf_references(&self) -> Json {
        let telaf = self.telaf.as_ref().expect("enabled");
        let mut per_client: BTreeMap<ConnId, Vec<Json>> = BTreeMap::new();
        let mut services: Vec<(ConnId, Vec<Json>)> = Vec::new();
        for (service, refs) in &telaf.refs {
            let mut list: Vec<(&String, &Reference)> = refs.live.iter().collect();
            list.sort_by(|a, b| a.0.cmp(b.0));
            let entries: Vec<Json> = list
                .iter()
                .map(|(path, r)| {
                    per_client.entry(r.client).or_default().push(json!({
                        "service": unique_name(*service), "path": path, "shared": r.shared}));
                    json!({"path": path, "client": unique_name(r.client), "shared": r.shared})
                })
                .collect();
            services.push((*service, entries));
        }
        services.sort_by_key(|(id, _)| *id);
        let principal = |id: ConnId| telaf.conns.get(&id).map(|c| c.principal.to_string());
        let services: Vec<Json> = services
            .into_iter()
            .map(|(id, refs)| {
                json!({"service": unique_name(id), "principal": principal(id),
                       "names": self.names.owned_by(id).collect::<Vec<_>>(),
                       "references": refs})
            })
            .collect();
        let clients: Vec<Json> = per_client
            .into_iter()
            .map(|(id, refs)| {
                json!({"client": unique_name(id), "principal": principal(id), "references": refs})
            })
            .collect();
        json!({"services": services, "clients": clients})
    }

    /// Why(client, destination): the decision for a call from `client` (a unique name, an app
    /// or `<user>`) to `destination` (a bus name or `app.service`), and what made it.
    fn telaf_why(&self, client: &str, destination: &str) -> Result<String, DriverError> {
        let telaf = self.telaf.as_ref().expect("enabled");
        let mut out = String::new();
        let who = if client.starts_with(':') {
            let id = conn_of_unique(client)
                .filter(|id| telaf.conns.contains_key(id))
                .ok_or_else(|| err(INVALID_ARGS, format!("{client} is not connected")))?;
            let conn = &telaf.conns[&id];
            match telaf.def.recognise(&conn.facts) {
                Some(app) => out.push_str(&format!(
                    "{client} is app {} (match {} at line {}; exe={}, uid={})\n",
                    app.name,
                    app.matchers.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(" "),
                    app.line,
                    conn.facts.exe.as_deref().unwrap_or("?"),
                    conn.facts.uid.map_or("?".into(), |u| u.to_string())
                )),
                None => out.push_str(&format!(
                    "{client} is no app (no app's match holds for exe={}, uid={}), so it is user {}\n",
                    conn.facts.exe.as_deref().unwrap_or("?"),
                    conn.facts.uid.map_or("?".into(), |u| u.to_string()),
                    conn.principal
                )),
            }
            conn.principal.clone()
        } else {
            match bindings::parse_client(client) {
                Some(ClientSide::App(a)) => Principal::App(a),
                Some(ClientSide::User(u)) => Principal::User(u),
                _ => {
                    return Err(err(
                        INVALID_ARGS,
                        format!("expected a unique name, an app or <user>, found \"{client}\""),
                    ));
                }
            }
        };
        // The TelAF names the destination stands for.
        let names: Vec<String> = if destination.starts_with(':') {
            match self.resolve_conn(destination) {
                Some(id) => self
                    .names
                    .owned_by(id)
                    .filter(|n| telaf.def.provider(n).is_some())
                    .map(str::to_string)
                    .collect(),
                None => {
                    return Err(err(INVALID_ARGS, format!("{destination} is not connected")));
                }
            }
        } else if destination.starts_with(bindings::NAME_PREFIX) {
            vec![destination.to_string()]
        } else if let Ok((app, service)) = bindings::parse_server_service(destination)
            && telaf
                .def
                .provider(&bindings::bus_name(&app, &service))
                .is_some()
        {
            vec![bindings::bus_name(&app, &service)]
        } else {
            out.push_str(&format!(
                "ALLOWED by the bindings: {destination} is not a TelAF service (the bus's policy decides)\n"
            ));
            return Ok(out);
        };
        if names.is_empty() {
            out.push_str(&format!(
                "ALLOWED by the bindings: {destination} owns no TelAF service name\n"
            ));
            return Ok(out);
        }
        for name in names {
            let Some((app, p)) = telaf.def.provider(&name) else {
                out.push_str(&format!(
                    "DENIED: {name} is reserved (no app of {} provides it)\n",
                    telaf.file.display()
                ));
                continue;
            };
            match telaf.def.may_call(&who, &app.name, &name) {
                Some(Allowed::SameApp) => out.push_str(&format!(
                    "ALLOWED: {who} is {}, the app that provides {}\n",
                    app.name, p.service
                )),
                Some(Allowed::Binding(b)) => out.push_str(&format!(
                    "ALLOWED: {who} may call {name} through the binding \"{b}\" ({})\n",
                    b.line.map_or("made at run time".to_string(), |l| format!("{}:{l}", telaf.file.display()))
                )),
                None => out.push_str(&format!(
                    "DENIED: {who} has no binding to {}.{} (missing \"bind {}.<interface> -> {}.{}\")\n",
                    app.name,
                    p.service,
                    client_text(&who),
                    app.name,
                    p.service
                )),
            }
        }
        Ok(out)
    }
}

/// A principal as the client side of a binding is written.
fn client_text(p: &Principal) -> String {
    p.to_string()
}

/// Introspection of the paths on the way to /io/telaf/Broker1 (None: not one of them).
pub fn introspect(path: &str, driver_xml: String) -> String {
    let extra = match path {
        "/" => "  <node name=\"io\"/>\n".to_string(),
        "/io" => "  <node name=\"telaf\"/>\n".to_string(),
        "/io/telaf" => "  <node name=\"Broker1\"/>\n".to_string(),
        PATH => interface_xml(),
        _ => return driver_xml,
    };
    match driver_xml.rfind("</node>") {
        Some(at) => format!("{}{extra}{}", &driver_xml[..at], &driver_xml[at..]),
        None => driver_xml,
    }
}

fn interface_xml() -> String {
    let names = |sig: &str| -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(zbus::wire::Signature::Structure(fields)) =
            zbus::wire::Signature::try_from(format!("({sig})").as_str())
        {
            out.extend(fields.iter().map(|f| f.to_string()));
        }
        out
    };
    let mut xml = format!("  <interface name=\"{IFACE}\">\n");
    for (member, input, output, _) in METHODS {
        xml.push_str(&format!("    <method name=\"{member}\">\n"));
        for t in names(input) {
            xml.push_str(&format!("      <arg direction=\"in\" type=\"{t}\"/>\n"));
        }
        for t in names(output) {
            xml.push_str(&format!("      <arg direction=\"out\" type=\"{t}\"/>\n"));
        }
        xml.push_str("    </method>\n");
    }
    xml.push_str("    <signal name=\"ClientGone\">\n      <arg name=\"client\" type=\"s\"/>\n      <arg name=\"references\" type=\"ao\"/>\n    </signal>\n  </interface>\n");
    xml
}

/// What the bindings need to know about the process behind a connection.
fn process_facts(
    creds: &telbus_broker::transport::PeerCredentials,
    user_names: &mut telbus_broker::IdMap<u32, Option<String>>,
    group_names: &mut telbus_broker::IdMap<u32, Option<String>>,
) -> ProcessFacts {
    let mut facts = ProcessFacts {
        uid: creds.uid,
        user: creds.uid.and_then(|uid| {
            user_names
                .entry(uid)
                .or_insert_with(|| telbus_busconfig::user_name(uid))
                .clone()
        }),
        ..Default::default()
    };
    facts.gids = creds
        .gid
        .into_iter()
        .chain(creds.groups.iter().copied())
        .collect();
    facts.gids.dedup();
    facts.groups = facts
        .gids
        .iter()
        .filter_map(|&gid| {
            group_names
                .entry(gid)
                .or_insert_with(|| telbus_busconfig::group_name(gid))
                .clone()
        })
        .collect();
    if let Some(pid) = creds.pid {
        facts.exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.display().to_string());
    }
    facts.label = creds
        .security_label
        .as_ref()
        .map(|l| String::from_utf8_lossy(l).into_owned());
    facts
}

/// Fill in what only `/proc` tells, the systemd unit (from the cgroup) and the security label
/// (when the socket had none), if the definition recognises apps by it and it is not known
/// yet: each costs opening and reading a file, for every connection.
fn read_proc_facts(facts: &mut ProcessFacts, pid: Option<u32>, unit: bool, label: bool) {
    let Some(pid) = pid else {
        return;
    };
    if unit && facts.unit.is_none() {
        facts.unit = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|text| unit_of_cgroup(&text));
    }
    if label && facts.label.is_none() {
        facts.label = std::fs::read_to_string(format!("/proc/{pid}/attr/current")).ok();
    }
    facts.label = facts
        .label
        .take()
        .map(|l| l.trim_end_matches(['\0', '\n']).to_string())
        .filter(|l| !l.is_empty());
}

/// The systemd unit of a /proc/PID/cgroup text: the last `.service` or `.scope` component.
fn unit_of_cgroup(text: &str) -> Option<String> {
    let line = text
        .lines()
        .find(|l| l.starts_with("0::"))
        .or_else(|| text.lines().find(|l| l.contains("name=systemd")))?;
    let path = line.splitn(3, ':').nth(2)?;
    path.split('/')
        .rev()
        .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_comes_from_the_cgroup() {
        assert_eq!(
            unit_of_cgroup("0::/system.slice/telbus-le-mcc.service\n").as_deref(),
            Some("telbus-le-mcc.service")
        );
        assert_eq!(
            unit_of_cgroup("0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope\n")
                .as_deref(),
            Some("x.scope")
        );
        assert_eq!(unit_of_cgroup("0::/\n"), None);
    }

    #[test]
    fn broker1_introspection_lists_its_methods() {
        let xml = introspect(PATH, "<node>\n</node>\n".into());
        assert!(xml.contains("<method name=\"Connect\">"));
        assert!(xml.contains("<arg direction=\"in\" type=\"b\"/>"));
        assert!(xml.contains("<signal name=\"ClientGone\">"));
        assert!(introspect("/", "<node>\n</node>\n".into()).contains("<node name=\"io\"/>"));
    }
}
