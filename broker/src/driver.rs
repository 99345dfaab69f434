//! The bus driver, `org.freedesktop.DBus` at `/org/freedesktop/DBus`: the methods clients call
//! on the bus itself, and the signals the bus sends about names.
//!
//! Method tables, error names and texts follow dbus-daemon, whose clients and test suite check
//! them.

use std::collections::HashMap;

use telbus_broker::match_rule::MatchRule;
use telbus_broker::transport::PeerCredentials;
use tracing::{debug, warn};
use zbus::Message;
use zbus::message::Header;
use zbus::names::BusName;
use zbus::wire::{OwnedVariant as OwnedValue, Variant as Value};

use crate::ConnId;
use crate::bus::{Bus, DRIVER, Phase, conn_of_unique, unique_name};
use crate::names::{self, OwnerChange};
use crate::replies::CallKey;
use crate::wire::{BusMessage, Route};

pub const PATH: &str = "/org/freedesktop/DBus";
const IFACE: &str = "org.freedesktop.DBus";
const IFACE_PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const IFACE_INTROSPECTABLE: &str = "org.freedesktop.DBus.Introspectable";
const IFACE_PEER: &str = "org.freedesktop.DBus.Peer";
const IFACE_MONITORING: &str = "org.freedesktop.DBus.Monitoring";
const IFACE_STATS: &str = "org.freedesktop.DBus.Debug.Stats";

/// An error reply: its D-Bus name and text.
pub struct DriverError {
    pub name: &'static str,
    pub text: String,
}

fn err(name: &'static str, text: impl Into<String>) -> DriverError {
    DriverError {
        name,
        text: text.into(),
    }
}

pub const INVALID_ARGS: &str = "org.freedesktop.DBus.Error.InvalidArgs";
pub const NAME_HAS_NO_OWNER: &str = "org.freedesktop.DBus.Error.NameHasNoOwner";
pub const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";
pub const LIMITS_EXCEEDED: &str = "org.freedesktop.DBus.Error.LimitsExceeded";
pub const SERVICE_UNKNOWN: &str = "org.freedesktop.DBus.Error.ServiceUnknown";

/// What a driver method answers: a reply body, built by zbus.
/// None when the reply comes later (StartServiceByName waiting for the service).
type Reply = Result<Option<Message>, DriverError>;

/// How a method may be called.
#[derive(Clone, Copy, PartialEq)]
enum Where {
    /// At any object path (the methods that always were).
    AnyPath,
    /// Only at /org/freedesktop/DBus.
    Canonical,
    /// Only at the canonical path, and only by the bus's own user or root.
    Privileged,
}

/// Interface, member, input signature, where it may be called.
const METHODS: &[(&str, &str, &str, Where)] = &[
    (IFACE, "Hello", "", Where::AnyPath),
    (IFACE, "RequestName", "su", Where::AnyPath),
    (IFACE, "ReleaseName", "s", Where::AnyPath),
    (IFACE, "StartServiceByName", "su", Where::AnyPath),
    (
        IFACE,
        "UpdateActivationEnvironment",
        "a{ss}",
        Where::Privileged,
    ),
    (IFACE, "NameHasOwner", "s", Where::AnyPath),
    (IFACE, "ListNames", "", Where::AnyPath),
    (IFACE, "ListActivatableNames", "", Where::AnyPath),
    (IFACE, "AddMatch", "s", Where::AnyPath),
    (IFACE, "RemoveMatch", "s", Where::AnyPath),
    (IFACE, "GetNameOwner", "s", Where::AnyPath),
    (IFACE, "ListQueuedOwners", "s", Where::AnyPath),
    (IFACE, "GetConnectionUnixUser", "s", Where::AnyPath),
    (IFACE, "GetConnectionUnixProcessID", "s", Where::AnyPath),
    (IFACE, "GetAdtAuditSessionData", "s", Where::AnyPath),
    (
        IFACE,
        "GetConnectionSELinuxSecurityContext",
        "s",
        Where::AnyPath,
    ),
    (IFACE, "ReloadConfig", "", Where::AnyPath),
    (IFACE, "GetId", "", Where::AnyPath),
    (IFACE, "GetConnectionCredentials", "s", Where::AnyPath),
    (IFACE_PROPERTIES, "Get", "ss", Where::Canonical),
    (IFACE_PROPERTIES, "GetAll", "s", Where::Canonical),
    (IFACE_PROPERTIES, "Set", "ssv", Where::Canonical),
    (IFACE_INTROSPECTABLE, "Introspect", "", Where::AnyPath),
    (IFACE_MONITORING, "BecomeMonitor", "asu", Where::Privileged),
    (IFACE_STATS, "GetStats", "", Where::Canonical),
    (IFACE_STATS, "GetConnectionStats", "s", Where::Canonical),
    (IFACE_STATS, "GetAllMatchRules", "", Where::Canonical),
    (IFACE_PEER, "GetMachineId", "", Where::AnyPath),
    (IFACE_PEER, "Ping", "", Where::AnyPath),
];

/// Interfaces that exist at any path (the others only at the canonical one).
fn interface_at_any_path(iface: &str) -> bool {
    matches!(iface, IFACE | IFACE_INTROSPECTABLE | IFACE_PEER)
}

fn reply_to(call: &Header<'_>) -> zbus::message::Builder<'static> {
    Message::method_return(call).sender(DRIVER)
}

impl Bus {
    /// A method call (or other message) addressed to the bus itself.
    pub fn driver_call(&mut self, from: ConnId, msg: &BusMessage, route: &Route<'_>) {
        if route.msg_type == zbus::message::Type::Signal
            && route.interface == Some("org.freedesktop.systemd1.Activator")
            && route.member == Some("ActivationFailure")
        {
            self.systemd_activation_failed(from, msg);
            return;
        }
        if route.msg_type != zbus::message::Type::MethodCall {
            return;
        }
        let member = route.member.unwrap_or_default();
        let registered = self.peers.get(&from).is_some_and(|p| p.is_active());
        if !registered && member != "Hello" {
            tracing::debug!(
                "{} called {member} before Hello (interface {:?})",
                unique_name(from),
                route.interface
            );
            self.send_error(
                from,
                msg,
                ACCESS_DENIED,
                "Client tried to send a message other than Hello without being registered",
            );
            return;
        }
        if self.is_telaf_call(route) {
            self.telaf_call(from, msg, route);
            return;
        }
        let result = self.driver_method(from, msg, &msg.zbus().header(), route);
        match result {
            Ok(reply) => {
                if let Some(reply) = reply.filter(|_| !route.no_reply_expected) {
                    self.deliver_from_driver(from, reply);
                }
                if member == "Hello" {
                    self.after_hello(from);
                }
            }
            Err(e) => self.send_error(from, msg, e.name, &e.text),
        }
    }

    fn driver_method(
        &mut self,
        from: ConnId,
        msg: &BusMessage,
        header: &Header<'_>,
        route: &Route<'_>,
    ) -> Reply {
        let member = route.member.unwrap_or_default();
        let canonical = route.path == Some(PATH);
        let mut found_interface = false;
        let mut method = None;
        for &(iface, name, sig, place) in METHODS {
            if !(canonical || interface_at_any_path(iface)) {
                continue;
            }
            if route.interface.is_some_and(|i| i != iface) {
                continue;
            }
            found_interface = true;
            if name == member {
                method = Some((iface, sig, place));
                break;
            }
        }
        let Some((iface, sig, place)) = method else {
            let name = if found_interface {
                "org.freedesktop.DBus.Error.UnknownMethod"
            } else {
                "org.freedesktop.DBus.Error.UnknownInterface"
            };
            return Err(err(
                name,
                format!("{DRIVER} does not understand message {member}"),
            ));
        };
        if place == Where::Privileged {
            self.check_privileged(from, member)?;
        }
        if place != Where::AnyPath && !canonical {
            return Err(err(
                ACCESS_DENIED,
                format!(
                    "Method '{member}' is only available at the canonical object path '{PATH}'"
                ),
            ));
        }
        let actual = header.signature().to_string_no_parens();
        if actual != sig {
            return Err(err(
                INVALID_ARGS,
                format!("Call to {member} has wrong args ({actual}, expected {sig})\n"),
            ));
        }
        let body = msg.zbus().body();
        let bad_body = |e: zbus::Error| err(INVALID_ARGS, e.to_string());
        let reply = reply_to(header);
        let built = match (iface, member) {
            (IFACE, "Hello") => self.hello(from).map(|name| reply.build(&(name,))),
            (IFACE, "RequestName") => {
                let (name, flags): (&str, u32) = body.deserialize().map_err(bad_body)?;
                self.request_name(from, name, flags)
                    .map(|code| reply.build(&(code,)))
            }
            (IFACE, "ReleaseName") => {
                let (name,): (&str,) = body.deserialize().map_err(bad_body)?;
                self.release_name(from, name)
                    .map(|code| reply.build(&(code,)))
            }
            (IFACE, "StartServiceByName") => {
                let (name, _flags): (&str, u32) = body.deserialize().map_err(bad_body)?;
                match self.start_service_by_name(from, msg, name)? {
                    Some(code) => Ok(reply.build(&(code,))),
                    None => return Ok(None),
                }
            }
            (IFACE, "UpdateActivationEnvironment") => {
                let (env,): (HashMap<String, String>,) = body.deserialize().map_err(bad_body)?;
                self.update_activation_environment(env)
                    .map(|()| reply.build(&()))
            }
            (IFACE, "NameHasOwner") => {
                let (name,): (&str,) = body.deserialize().map_err(bad_body)?;
                Ok(reply.build(&(self.resolve(name).is_some(),)))
            }
            (IFACE, "ListNames") => Ok(reply.build(&(self.list_names(),))),
            (IFACE, "ListActivatableNames") => Ok(reply.build(&(self.list_activatable_names(),))),
            (IFACE, "AddMatch") => {
                let (rule,): (&str,) = body.deserialize().map_err(bad_body)?;
                self.add_match(from, rule).map(|()| reply.build(&()))
            }
            (IFACE, "RemoveMatch") => {
                let (rule,): (&str,) = body.deserialize().map_err(bad_body)?;
                self.remove_match(from, rule).map(|()| reply.build(&()))
            }
            (IFACE, "GetNameOwner") => {
                let (name,): (&str,) = body.deserialize().map_err(bad_body)?;
                match self.resolve(name) {
                    Some(owner) => Ok(reply.build(&(owner,))),
                    None => Err(err(
                        NAME_HAS_NO_OWNER,
                        format!("Could not get owner of name '{name}': no such name"),
                    )),
                }
            }
            (IFACE, "ListQueuedOwners") => {
                let (name,): (&str,) = body.deserialize().map_err(bad_body)?;
                self.list_queued_owners(name)
                    .map(|owners| reply.build(&(owners,)))
            }
            (IFACE, "GetConnectionUnixUser") => {
                let (name,): (&str,) = body.deserialize().map_err(bad_body)?;
                let creds = self.credentials_of(name, "UID")?;
                match creds.uid {
                    Some(uid) => Ok(reply.build(&(uid,))),
                    None => Err(err(
                        "org.freedesktop.DBus.Error.Failed",
                        format!("Could not determine UID for '{name}'"),
                    )),
                }
            }
            (IFACE, "GetConnectionUnixProcessID") => {
                let (name,): (&str,) = body.deserialize().map_err(bad_body)?;
                let creds = self.credentials_of(name, "PID")?;
                match creds.pid {
                    Some(pid) => Ok(reply.build(&(pid,))),
                    None => Err(err(
                        "org.freedesktop.DBus.Error.UnixProcessIdUnknown",
                        format!("Could not determine PID for '{name}'"),
                    )),
                }
            }
            (IFACE, "GetConnectionCredentials") => {
                let (name,): (&str,) = body.deserialize().map_err(bad_body)?;
                let creds = self.credentials_of(name, "credentials")?;
                let mut dict: HashMap<&str, Value<'_>> = HashMap::new();
                if let Some(uid) = creds.uid {
                    dict.insert("UnixUserID", Value::from(uid));
                }
                if !creds.groups.is_empty() {
                    dict.insert("UnixGroupIDs", Value::from(creds.groups.clone()));
                }
                if let Some(pid) = creds.pid {
                    dict.insert("ProcessID", Value::from(pid));
                }
                if let Some(label) = &creds.security_label {
                    let mut bytes = label.clone();
                    if bytes.last() != Some(&0) {
                        bytes.push(0);
                    }
                    dict.insert("LinuxSecurityLabel", Value::from(bytes));
                }
                Ok(reply.build(&(dict,)))
            }
            (IFACE, "GetAdtAuditSessionData") => {
                let (name,): (&str,) = body.deserialize().map_err(bad_body)?;
                self.credentials_of(name, "audit session data")?;
                Err(err(
                    "org.freedesktop.DBus.Error.AdtAuditDataUnknown",
                    format!("Could not determine audit session data for '{name}'"),
                ))
            }
            (IFACE, "GetConnectionSELinuxSecurityContext") => {
                let (name,): (&str,) = body.deserialize().map_err(bad_body)?;
                self.credentials_of(name, "security context")?;
                Err(err(
                    "org.freedesktop.DBus.Error.SELinuxSecurityContextUnknown",
                    format!("Could not determine security context for '{name}'"),
                ))
            }
            (IFACE, "ReloadConfig") => self.reload_config(Some(from)).map(|()| reply.build(&())),
            (IFACE, "GetId") => Ok(reply.build(&(self.guid.as_str(),))),
            (IFACE_PROPERTIES, "Get") => {
                let (iface, prop): (&str, &str) = body.deserialize().map_err(bad_body)?;
                self.property(iface, prop).map(|v| reply.build(&(v,)))
            }
            (IFACE_PROPERTIES, "GetAll") => {
                let (iface,): (&str,) = body.deserialize().map_err(bad_body)?;
                self.all_properties(iface).map(|all| reply.build(&(all,)))
            }
            (IFACE_PROPERTIES, "Set") => {
                let (iface, prop, _): (&str, &str, OwnedValue) =
                    body.deserialize().map_err(bad_body)?;
                // The same checks as Get, then: every property of the bus is read-only.
                self.property(iface, prop)?;
                Err(err(
                    "org.freedesktop.DBus.Error.PropertyReadOnly",
                    format!("Property '{iface}.{prop}' cannot be set"),
                ))
            }
            (IFACE_INTROSPECTABLE, "Introspect") => {
                Ok(reply.build(&(self.introspect(route.path.unwrap_or("/")),)))
            }
            (IFACE_MONITORING, "BecomeMonitor") => {
                let (rules, flags): (Vec<String>, u32) = body.deserialize().map_err(bad_body)?;
                self.become_monitor(from, &rules, flags)
                    .map(|()| reply.build(&()))
            }
            (IFACE_STATS, "GetStats") => Ok(reply.build(&(self.get_stats(),))),
            (IFACE_STATS, "GetConnectionStats") => {
                let (name,): (&str,) = body.deserialize().map_err(bad_body)?;
                self.get_connection_stats(name).map(|s| reply.build(&(s,)))
            }
            (IFACE_STATS, "GetAllMatchRules") => Ok(reply.build(&(self.get_all_match_rules(),))),
            (IFACE_PEER, "GetMachineId") => Ok(reply.build(&(self.machine_id.as_str(),))),
            (IFACE_PEER, "Ping") => Ok(reply.build(&())),
            _ => unreachable!("every entry of METHODS is handled"),
        }?;
        built
            .map(Some)
            .map_err(|e| err("org.freedesktop.DBus.Error.Failed", e.to_string()))
    }

    /// Methods only the bus's own user (or root) may call.
    fn check_privileged(&self, from: ConnId, member: &str) -> Result<(), DriverError> {
        let uid = self.peers.get(&from).and_then(|p| p.creds.uid);
        match uid {
            Some(uid) if uid == self.bus_uid || uid == 0 => Ok(()),
            _ => Err(err(
                ACCESS_DENIED,
                format!(
                    "The caller does not have the privileges to call {IFACE}.{member} (uid {})",
                    uid.map_or("unknown".into(), |u| u.to_string())
                ),
            )),
        }
    }

    fn hello(&mut self, from: ConnId) -> Result<String, DriverError> {
        let peer = self.peers.get_mut(&from).expect("caller exists");
        if !matches!(peer.phase, Phase::Unregistered) {
            return Err(err(
                "org.freedesktop.DBus.Error.Failed",
                "Already handled an Hello message",
            ));
        }
        let uid = peer.creds.uid;
        // As in dbus-daemon, the connection limits apply to registered connections and are
        // checked here: a refused Hello leaves the connection open, and it may try again.
        let limits = &self.config.limits;
        if self.census.completed() >= limits.max_completed_connections {
            let text = "The maximum number of active connections has been reached";
            warn!(
                "{text} (max_completed_connections={})",
                limits.max_completed_connections
            );
            return Err(err(LIMITS_EXCEEDED, text));
        }
        if let Some(uid) = uid
            && self.census.completed_of(uid) >= limits.max_connections_per_user
        {
            let text =
                format!("The maximum number of active connections for UID {uid} has been reached");
            warn!(
                "{text} (max_connections_per_user={})",
                limits.max_connections_per_user
            );
            return Err(err(LIMITS_EXCEEDED, text));
        }
        self.set_phase(from, Phase::Active);
        let peer = &self.peers[&from];
        let name = peer.unique_name();
        debug!("{name} connected ({})", peer.loginfo());
        Ok(name)
    }

    /// After the reply to Hello: the new name's signals.
    fn after_hello(&mut self, from: ConnId) {
        let name = unique_name(from);
        self.emit_name_owner_changed(&name, None, Some(&name));
        self.send_name_signal(from, "NameAcquired", &name);
        self.telaf_hello(from);
    }

    fn request_name(&mut self, from: ConnId, name: &str, flags: u32) -> Result<u32, DriverError> {
        let me = unique_name(from);
        if BusName::try_from(name).is_err() {
            return Err(err(
                INVALID_ARGS,
                format!("Requested bus name \"{name}\" is not valid"),
            ));
        }
        if name.starts_with(':') {
            return Err(err(
                INVALID_ARGS,
                format!("Cannot acquire a service starting with ':' such as \"{name}\""),
            ));
        }
        if name == DRIVER {
            return Err(err(
                INVALID_ARGS,
                format!(
                    "Connection \"{me}\" is not allowed to own the service \"{DRIVER}\"because it is reserved for D-Bus' use only"
                ),
            ));
        }
        if let Some(denial) = self.check_own(from, name) {
            return Err(err(
                ACCESS_DENIED,
                format!(
                    "Connection \"{me}\" is not allowed to own the service \"{name}\" due to security policies in the configuration file{denial}"
                ),
            ));
        }
        if let Some(text) = self.telaf_check_own(from, name) {
            return Err(err(ACCESS_DENIED, text));
        }
        let limit = self.config.limits.max_names_per_connection;
        let already = self.names.queue(name).is_some_and(|q| q.contains(&from));
        // Like dbus-daemon, the unique name counts as one of the names a connection owns.
        if !already && self.names.claims_of(from) as u64 + 1 >= limit {
            let text = format!(
                "Connection \"{me}\" is not allowed to own more services (increase limits in configuration file if required; max_names_per_connection={limit})"
            );
            warn!("{text}");
            return Err(err(LIMITS_EXCEEDED, text));
        }
        let user = self.user_of(from);
        let limit = self.config.limits.max_names_per_user;
        if !already && self.census.names_of(user) as u64 >= limit {
            let text = format!(
                "Connection \"{me}\" is not allowed to own more services: the connections of UID {user} own or wait for {limit} (increase limits in configuration file if required; max_names_per_user={limit})"
            );
            warn!("{text}");
            return Err(err(LIMITS_EXCEEDED, text));
        }
        // A request changes the caller's claims, and those of the owner it may replace.
        let owner = self.names.owner(name).filter(|&owner| owner != from);
        let owner_claims = owner.map(|owner| (owner, self.names.claims_of(owner)));
        let claims = self.names.claims_of(from);
        let (code, change) = self.names.request(name, from, flags);
        self.count_claims(from, claims);
        if let Some((owner, claims)) = owner_claims {
            self.count_claims(owner, claims);
        }
        self.note_peaks(from);
        if let Some(change) = change {
            self.announce_owner_change(change);
        }
        if code == names::PRIMARY_OWNER {
            self.name_acquired_by_activation(name);
        }
        Ok(code)
    }

    fn release_name(&mut self, from: ConnId, name: &str) -> Result<u32, DriverError> {
        if BusName::try_from(name).is_err() {
            return Err(err(
                INVALID_ARGS,
                format!("Given bus name \"{name}\" is not valid"),
            ));
        }
        if name.starts_with(':') {
            return Err(err(
                INVALID_ARGS,
                format!("Cannot release a service starting with ':' such as \"{name}\""),
            ));
        }
        if name == DRIVER {
            return Err(err(
                INVALID_ARGS,
                format!("Cannot release the {DRIVER} service because it is owned by the bus"),
            ));
        }
        let claims = self.names.claims_of(from);
        let (code, change) = self.names.release(name, from);
        // (A queued connection promoted to owner keeps its count: a claim either way.)
        self.count_claims(from, claims);
        if let Some(change) = change {
            self.announce_owner_change(change);
        }
        Ok(code)
    }

    /// `conn` had `before` names (owned or queued for) and may have others now: its user's
    /// total follows.
    pub fn count_claims(&mut self, conn: ConnId, before: usize) {
        let after = self.names.claims_of(conn);
        let user = self.user_of(conn);
        self.census.names_changed(user, before, after);
    }

    /// `conn` had `before` match rules and may have others now: its user's total follows.
    pub fn count_rules(&mut self, conn: ConnId, before: usize) {
        let after = self.matches.rule_count(conn);
        let user = self.user_of(conn);
        self.census.rules_changed(user, before, after);
    }

    /// The unique name that owns `name` (itself for an active unique name; the bus for its own).
    pub fn resolve(&self, name: &str) -> Option<String> {
        if name == DRIVER {
            return Some(DRIVER.to_string());
        }
        self.resolve_conn(name).map(unique_name)
    }

    /// The active connection `name` stands for.
    pub fn resolve_conn(&self, name: &str) -> Option<ConnId> {
        if name.starts_with(':') {
            conn_of_unique(name).filter(|id| self.peers.get(id).is_some_and(|p| p.is_active()))
        } else {
            self.names.owner(name)
        }
    }

    fn list_names(&self) -> Vec<String> {
        let mut all = vec![DRIVER.to_string()];
        all.extend(self.names.names().map(str::to_string));
        let mut active: Vec<ConnId> = self
            .peers
            .values()
            .filter(|p| p.is_active())
            .map(|p| p.id)
            .collect();
        active.sort_unstable();
        all.extend(active.into_iter().map(unique_name));
        all
    }

    fn list_queued_owners(&self, name: &str) -> Result<Vec<String>, DriverError> {
        if name == DRIVER {
            return Ok(vec![DRIVER.to_string()]);
        }
        if name.starts_with(':') {
            if let Some(id) = self.resolve_conn(name) {
                return Ok(vec![unique_name(id)]);
            }
        } else if let Some(queue) = self.names.queue(name) {
            return Ok(queue.into_iter().map(unique_name).collect());
        }
        Err(err(
            NAME_HAS_NO_OWNER,
            format!("Could not get owners of name '{name}': no such name"),
        ))
    }

    /// Credentials of a connection or of the bus itself, for the GetConnection* methods.
    fn credentials_of(&self, name: &str, what: &str) -> Result<PeerCredentials, DriverError> {
        if name == DRIVER {
            return Ok(PeerCredentials {
                uid: Some(self.bus_uid),
                gid: Some(rustix::process::getgid().as_raw()),
                pid: Some(std::process::id()),
                groups: Vec::new(),
                security_label: None,
            });
        }
        if BusName::try_from(name).is_err() {
            return Err(err(
                INVALID_ARGS,
                format!("Bus name \"{name}\" is not valid"),
            ));
        }
        match self.resolve_conn(name).and_then(|id| self.peers.get(&id)) {
            Some(peer) => Ok(peer.creds.clone()),
            None => Err(err(
                NAME_HAS_NO_OWNER,
                format!("Could not get {what} of name '{name}': no such name"),
            )),
        }
    }

    fn add_match(&mut self, from: ConnId, text: &str) -> Result<(), DriverError> {
        let rule = MatchRule::parse(text)
            .map_err(|e| err("org.freedesktop.DBus.Error.MatchRuleInvalid", e.to_string()))?;
        let limit = self.config.limits.max_match_rules_per_connection;
        if self.matches.rule_count(from) as u64 >= limit {
            let text = format!(
                "Connection \"{}\" is not allowed to add more match rules (increase limits in configuration file if required; max_match_rules_per_connection={limit})",
                unique_name(from)
            );
            warn!("{text}");
            return Err(err(LIMITS_EXCEEDED, text));
        }
        let user = self.user_of(from);
        let limit = self.config.limits.max_match_rules_per_user;
        if self.census.rules_of(user) as u64 >= limit {
            let text = format!(
                "Connection \"{}\" is not allowed to add more match rules: the connections of UID {user} have {limit} (increase limits in configuration file if required; max_match_rules_per_user={limit})",
                unique_name(from)
            );
            warn!("{text}");
            return Err(err(LIMITS_EXCEEDED, text));
        }
        let rules = self.matches.rule_count(from);
        self.matches.add(from, rule);
        self.count_rules(from, rules);
        self.note_peaks(from);
        Ok(())
    }

    /// The user a connection's names, match rules and pending calls are accounted to.
    fn user_of(&self, conn: ConnId) -> u32 {
        self.peers
            .get(&conn)
            .map_or(crate::quota::BUS_ACTOR, |p| p.quota_user())
    }

    fn remove_match(&mut self, from: ConnId, text: &str) -> Result<(), DriverError> {
        let rule = MatchRule::parse(text)
            .map_err(|e| err("org.freedesktop.DBus.Error.MatchRuleInvalid", e.to_string()))?;
        let rules = self.matches.rule_count(from);
        if self.matches.remove(from, &rule) {
            self.count_rules(from, rules);
            Ok(())
        } else {
            Err(err(
                "org.freedesktop.DBus.Error.MatchRuleNotFound",
                "The given match rule wasn't found and can't be removed",
            ))
        }
    }

    fn features(&self) -> Vec<&'static str> {
        let mut features = vec!["ActivatableServicesChanged", "HeaderFiltering"];
        if self.systemd_activation {
            features.push("SystemdActivation");
        }
        features
    }

    fn interfaces(&self) -> Vec<&'static str> {
        vec![IFACE_MONITORING, IFACE_STATS]
    }

    fn property(&self, iface: &str, prop: &str) -> Result<Value<'static>, DriverError> {
        if iface != IFACE {
            return Err(err(
                "org.freedesktop.DBus.Error.UnknownInterface",
                format!("Interface \"{iface}\" not found"),
            ));
        }
        match prop {
            "Features" => Ok(Value::from(self.features())),
            "Interfaces" => Ok(Value::from(self.interfaces())),
            _ => Err(err(
                "org.freedesktop.DBus.Error.UnknownProperty",
                format!("Property \"{iface}.{prop}\" not found"),
            )),
        }
    }

    fn all_properties(
        &self,
        iface: &str,
    ) -> Result<HashMap<&'static str, Value<'static>>, DriverError> {
        let mut all = HashMap::new();
        if iface == IFACE {
            all.insert("Features", Value::from(self.features()));
            all.insert("Interfaces", Value::from(self.interfaces()));
            Ok(all)
        } else {
            Err(err(
                "org.freedesktop.DBus.Error.UnknownInterface",
                format!("Interface \"{iface}\" not found"),
            ))
        }
    }

    fn introspect(&self, path: &str) -> String {
        match self.telaf {
            Some(_) => crate::telaf::introspect(path, introspect_path(path)),
            None => introspect_path(path),
        }
    }

    /// Send NameLost/NameOwnerChanged/NameAcquired for a change of primary owner, in
    /// dbus-daemon's order.
    pub fn announce_owner_change(&mut self, change: OwnerChange) {
        let old = change.old.map(unique_name);
        let new = change.new.map(unique_name);
        if let Some(old_id) = change.old {
            self.send_name_signal(old_id, "NameLost", &change.name);
        }
        self.emit_name_owner_changed(&change.name, old.as_deref(), new.as_deref());
        if let Some(new_id) = change.new {
            self.send_name_signal(new_id, "NameAcquired", &change.name);
        }
        if change.new.is_some() {
            self.telaf_name_acquired(&change.name);
        }
    }

    fn send_name_signal(&mut self, to: ConnId, member: &str, name: &str) {
        if !self.peers.get(&to).is_some_and(|p| p.is_active()) {
            return;
        }
        let built = Message::signal(PATH, IFACE, member)
            .sender(DRIVER)
            .destination(unique_name(to))
            .build(&(name,));
        match built {
            Ok(msg) => self.deliver_from_driver(to, msg),
            Err(e) => warn!("cannot build {member}: {e}"),
        }
    }

    pub fn emit_name_owner_changed(&mut self, name: &str, old: Option<&str>, new: Option<&str>) {
        // Every connection's arrival and departure comes here: build nothing for nobody.
        if self.monitors.is_empty()
            && !self
                .matches
                .may_match_signal(DRIVER, IFACE, "NameOwnerChanged")
        {
            return;
        }
        let built = Message::signal(PATH, IFACE, "NameOwnerChanged")
            .sender(DRIVER)
            .build(&(name, old.unwrap_or(""), new.unwrap_or("")));
        match built {
            Ok(msg) => self.broadcast_from_driver(msg),
            Err(e) => warn!("cannot build NameOwnerChanged: {e}"),
        }
    }

    /// An error reply from the bus to a method call (nothing for other messages or calls
    /// that asked for no reply).
    ///
    /// As in dbus-daemon, whatever the refused message was (a signal or a call that expects no
    /// reply too): clients ignore errors they did not ask for, and monitors see why it went
    /// nowhere.
    pub fn send_error(&mut self, to: ConnId, call: &BusMessage, name: &str, text: &str) {
        match Message::error(&call.zbus().header(), name)
            .sender(DRIVER)
            .build(&(text,))
        {
            Ok(msg) => self.deliver_from_driver(to, msg),
            Err(e) => warn!("cannot build error {name}: {e}"),
        }
    }

    /// The error a refused delivery would have caused, shown to monitors only: the sender of a
    /// broadcast is not told that one of its recipients may not receive it (as in dbus-daemon).
    pub fn capture_error(&mut self, sender: ConnId, call: &BusMessage, name: &str, text: &str) {
        if self.monitors.is_empty() {
            return;
        }
        match Message::error(&call.zbus().header(), name)
            .sender(DRIVER)
            .build(&(text,))
        {
            Ok(msg) => self.capture(&BusMessage::from_zbus(msg), 0, Some(sender)),
            Err(e) => warn!("cannot build error {name}: {e}"),
        }
    }

    /// An error from the bus to a caller whose call will get no other reply.
    pub fn send_error_to_caller(&mut self, key: CallKey, name: &str, text: &str) {
        if !self.peers.get(&key.caller).is_some_and(|p| p.is_active()) {
            return;
        }
        // zbus builds replies from the call's header; the call itself is long gone, so stand
        // in a header with what a reply needs: the caller's name and the call's serial.
        let Some(serial) = std::num::NonZeroU32::new(key.serial) else {
            return;
        };
        let built = Message::method_call(PATH, "Call")
            .sender(unique_name(key.caller))
            .serial(serial)
            .build(&())
            .and_then(|call| {
                Message::error(&call.header(), name)
                    .sender(DRIVER)
                    .build(&(text,))
            });
        match built {
            Ok(msg) => self.deliver_from_driver(key.caller, msg),
            Err(e) => warn!("cannot build error {name}: {e}"),
        }
    }
}

/// The driver's introspection XML, as `telbusd --introspect` prints it.
pub fn introspection_of_driver() -> String {
    introspect_path(PATH)
}

/// Introspection XML of the driver at `path`: all its interfaces at the canonical path, those
/// available everywhere elsewhere, and the child node leading towards it.
fn introspect_path(path: &str) -> String {
    let mut xml = String::from(
        "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n\"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<node>\n",
    );
    let canonical = path == PATH;
    let mut current = "";
    for &(iface, name, sig, place) in METHODS {
        if !(canonical || interface_at_any_path(iface)) {
            continue;
        }
        if !canonical && place != Where::AnyPath {
            continue;
        }
        if iface != current {
            if !current.is_empty() {
                xml.push_str(&interface_tail(current));
            }
            xml.push_str(&format!("  <interface name=\"{iface}\">\n"));
            current = iface;
        }
        xml.push_str(&format!("    <method name=\"{name}\">\n"));
        for arg in split_signature(sig) {
            xml.push_str(&format!("      <arg direction=\"in\" type=\"{arg}\"/>\n"));
        }
        if let Some(out) = out_signature(iface, name) {
            for arg in split_signature(out) {
                xml.push_str(&format!("      <arg direction=\"out\" type=\"{arg}\"/>\n"));
            }
        }
        xml.push_str("    </method>\n");
    }
    if !current.is_empty() {
        xml.push_str(&interface_tail(current));
    }
    // Child nodes on the way to /org/freedesktop/DBus.
    let prefix = if path == "/" {
        "/".to_string()
    } else {
        format!("{path}/")
    };
    if let Some(rest) = PATH.strip_prefix(prefix.as_str()) {
        let child = rest.split('/').next().unwrap_or_default();
        xml.push_str(&format!("  <node name=\"{child}\"/>\n"));
    }
    xml.push_str("</node>\n");
    xml
}

fn interface_tail(iface: &str) -> String {
    let extra = match iface {
        IFACE => concat!(
            "    <signal name=\"NameOwnerChanged\">\n",
            "      <arg type=\"s\"/>\n      <arg type=\"s\"/>\n      <arg type=\"s\"/>\n",
            "    </signal>\n",
            "    <signal name=\"NameLost\">\n      <arg type=\"s\"/>\n    </signal>\n",
            "    <signal name=\"NameAcquired\">\n      <arg type=\"s\"/>\n    </signal>\n",
            "    <property name=\"Features\" type=\"as\" access=\"read\">\n",
            "      <annotation name=\"org.freedesktop.DBus.Property.EmitsChangedSignal\" value=\"const\"/>\n",
            "    </property>\n",
            "    <property name=\"Interfaces\" type=\"as\" access=\"read\">\n",
            "      <annotation name=\"org.freedesktop.DBus.Property.EmitsChangedSignal\" value=\"const\"/>\n",
            "    </property>\n",
        ),
        IFACE_PROPERTIES => concat!(
            "    <signal name=\"PropertiesChanged\">\n",
            "      <arg type=\"s\" name=\"interface_name\"/>\n",
            "      <arg type=\"a{sv}\" name=\"changed_properties\"/>\n",
            "      <arg type=\"as\" name=\"invalidated_properties\"/>\n",
            "    </signal>\n",
        ),
        _ => "",
    };
    format!("{extra}  </interface>\n")
}

fn out_signature(iface: &str, name: &str) -> Option<&'static str> {
    Some(match (iface, name) {
        (IFACE, "Hello" | "GetNameOwner" | "GetId") => "s",
        (IFACE, "RequestName" | "ReleaseName" | "StartServiceByName") => "u",
        (IFACE, "GetConnectionUnixUser" | "GetConnectionUnixProcessID") => "u",
        (IFACE, "NameHasOwner") => "b",
        (IFACE, "ListNames" | "ListActivatableNames" | "ListQueuedOwners") => "as",
        (IFACE, "GetAdtAuditSessionData" | "GetConnectionSELinuxSecurityContext") => "ay",
        (IFACE, "GetConnectionCredentials") => "a{sv}",
        (IFACE_PROPERTIES, "Get") => "v",
        (IFACE_PROPERTIES, "GetAll") => "a{sv}",
        (IFACE_INTROSPECTABLE, "Introspect") => "s",
        (IFACE_PEER, "GetMachineId") => "s",
        (IFACE_MONITORING, "BecomeMonitor") => return None,
        (IFACE_STATS, "GetStats" | "GetConnectionStats") => "a{sv}",
        (IFACE_STATS, "GetAllMatchRules") => "a{sas}",
        _ => return None,
    })
}

/// The complete types of a signature, one per argument.
fn split_signature(sig: &str) -> Vec<String> {
    match zbus::wire::Signature::try_from(sig) {
        Ok(zbus::wire::Signature::Structure(fields)) if !sig.starts_with('(') => {
            fields.iter().map(|f| f.to_string()).collect()
        }
        Ok(zbus::wire::Signature::Unit) | Err(_) => Vec::new(),
        Ok(one) => vec![one.to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_split_into_arguments() {
        assert_eq!(split_signature(""), Vec::<String>::new());
        assert_eq!(split_signature("s"), vec!["s"]);
        assert_eq!(split_signature("su"), vec!["s", "u"]);
        assert_eq!(split_signature("a{ss}"), vec!["a{ss}"]);
        assert_eq!(split_signature("ssv"), vec!["s", "s", "v"]);
    }

    #[test]
    fn every_method_has_its_reply_type() {
        for &(iface, name, _, _) in METHODS {
            let silent = matches!(
                name,
                "UpdateActivationEnvironment"
                    | "AddMatch"
                    | "RemoveMatch"
                    | "ReloadConfig"
                    | "Set"
                    | "Ping"
                    | "BecomeMonitor"
            );
            assert_eq!(out_signature(iface, name).is_none(), silent, "{name}");
        }
    }
}
