//! TelAF bindings: the system definition file that says which app a connection is, which
//! services each app provides, and which client may reach which service (TelAF's `.sdef`
//! bindings, `client.iface -> server.service`). The broker asks it three things: which app is
//! this connection, may this client call that service, and where does this client's interface
//! name lead.
//!
//! The format is documented in docs/bindings.md.

mod parse;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use parse::{ParseError, parse_client, parse_client_interface, parse_server_service};

/// Bus names of TelAF services start with this: `io.telaf.<app>.<service>`.
pub const NAME_PREFIX: &str = "io.telaf.";

/// A `*` glob: `*` matches any run of characters (`/` included); everything else is literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    /// Where the first `*` is: None for a literal, which is compared as a whole.
    first_star: Option<usize>,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob {
            pattern: pattern.to_string(),
            first_star: pattern.find('*'),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// The text this glob matches, when it has no `*`.
    pub fn literal(&self) -> Option<&str> {
        self.first_star.is_none().then_some(self.pattern.as_str())
    }

    /// Allocates nothing: every connection is tested against the apps' globs at Hello.
    pub fn matches(&self, text: &str) -> bool {
        let Some(star) = self.first_star else {
            return text == self.pattern;
        };
        let (first, tail) = (&self.pattern[..star], &self.pattern[star + 1..]);
        let (middle, last) = tail.rsplit_once('*').unwrap_or(("", tail));
        let Some(rest) = text.strip_prefix(first) else {
            return false;
        };
        let Some(mut rest) = rest.strip_suffix(last) else {
            return false;
        };
        // The parts between the first and the last `*`, each found as early as it can be.
        for part in middle.split('*').filter(|p| !p.is_empty()) {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        true
    }
}

/// One condition of an app's `match` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    Uid(u32),
    User(String),
    Gid(u32),
    Group(String),
    Exe(Glob),
    Unit(Glob),
    Label(Glob),
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Matcher::Uid(v) => write!(f, "uid={v}"),
            Matcher::User(v) => write!(f, "user={v}"),
            Matcher::Gid(v) => write!(f, "gid={v}"),
            Matcher::Group(v) => write!(f, "group={v}"),
            Matcher::Exe(g) => write!(f, "exe={}", g.as_str()),
            Matcher::Unit(g) => write!(f, "unit={}", g.as_str()),
            Matcher::Label(g) => write!(f, "label={}", g.as_str()),
        }
    }
}

/// What the broker knows about the process behind a connection, read once when it connects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessFacts {
    pub uid: Option<u32>,
    pub user: Option<String>,
    /// Primary and supplementary groups.
    pub gids: Vec<u32>,
    pub groups: Vec<String>,
    /// /proc/PID/exe.
    pub exe: Option<String>,
    /// The systemd unit of its cgroup (`foo.service`).
    pub unit: Option<String>,
    /// The security label (SO_PEERSEC or /proc/PID/attr/current).
    pub label: Option<String>,
}

impl Matcher {
    pub fn holds(&self, p: &ProcessFacts) -> bool {
        match self {
            Matcher::Uid(v) => p.uid == Some(*v),
            Matcher::User(v) => p.user.as_deref() == Some(v.as_str()),
            Matcher::Gid(v) => p.gids.contains(v),
            Matcher::Group(v) => p.groups.iter().any(|g| g == v),
            Matcher::Exe(g) => p.exe.as_deref().is_some_and(|e| g.matches(e)),
            Matcher::Unit(g) => p.unit.as_deref().is_some_and(|u| g.matches(u)),
            Matcher::Label(g) => p.label.as_deref().is_some_and(|l| g.matches(l)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provided {
    pub service: String,
    pub api: String,
    /// Given with `protocol=`, or computed from the .api file at load.
    pub protocol_id: Option<String>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Required {
    pub interface: String,
    pub api: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub name: String,
    pub matchers: Vec<Matcher>,
    pub provides: Vec<Provided>,
    pub requires: Vec<Required>,
    pub line: usize,
}

impl App {
    pub fn provided(&self, service: &str) -> Option<&Provided> {
        self.provides.iter().find(|p| p.service == service)
    }
}

/// The client side of a binding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientSide {
    /// `*`: any client.
    Any,
    App(String),
    /// `<user>`: connections of that user not recognised as an app.
    User(String),
}

impl std::fmt::Display for ClientSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientSide::Any => write!(f, "*"),
            ClientSide::App(a) => write!(f, "{a}"),
            ClientSide::User(u) => write!(f, "<{u}>"),
        }
    }
}

/// Who a connection is: an app, or (not recognised as one) its user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    App(String),
    /// The user name, or the uid in decimal when it has no name.
    User(String),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::App(a) => write!(f, "{a}"),
            Principal::User(u) => write!(f, "<{u}>"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub client: ClientSide,
    pub interface: String,
    pub server_app: String,
    pub service: String,
    /// The line of the file; None for a binding made at run time (Bind).
    pub line: Option<usize>,
}

impl Binding {
    pub fn bus_name(&self) -> String {
        bus_name(&self.server_app, &self.service)
    }
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{} -> {}.{}",
            self.client, self.interface, self.server_app, self.service
        )
    }
}

/// `io.telaf.<app>.<service>`.
pub fn bus_name(app: &str, service: &str) -> String {
    format!("{NAME_PREFIX}{app}.{service}")
}

/// The root object of a service: `/io/telaf/<service>`.
pub fn root_path(service: &str) -> String {
    format!("/io/telaf/{service}")
}

/// Why a client may call a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed<'a> {
    /// It is the providing app itself.
    SameApp,
    Binding(&'a Binding),
}

/// Who may call one service: indexes into `bindings`.
#[derive(Debug, Default, Clone)]
struct ServiceAccess {
    any: Option<usize>,
    apps: HashMap<String, usize>,
    users: HashMap<String, usize>,
}

/// A loaded system definition file, with its bindings indexed for the hot path.
#[derive(Debug, Clone)]
pub struct SystemDef {
    pub file: PathBuf,
    pub apps: Vec<App>,
    pub bindings: Vec<Binding>,
    /// Bus name (`io.telaf.app.service`) → who may call it.
    access: HashMap<String, ServiceAccess>,
    /// App name → its place in `apps` (fixed once loaded): every call to a TelAF name looks
    /// its provider up, and a walk over a thousand apps showed.
    app_index: HashMap<String, usize>,
    /// Apps recognised by an exact executable (`match exe=/usr/bin/x`), by that path: a new
    /// connection is tested against those with its own executable and the rest, not against
    /// every app.
    by_exe: HashMap<String, Vec<usize>>,
    /// The apps without an exact executable, in file order.
    without_exe: Vec<usize>,
    /// Some app is recognised by its systemd unit / its security label: only then does the
    /// broker read a connection's cgroup / `attr/current`.
    uses_unit: bool,
    uses_label: bool,
}

impl SystemDef {
    /// Reads, checks and indexes a file, computing protocol ids from the .api files found on
    /// its `apipath`s (with telbus-interfaces).
    pub fn load(path: &Path) -> Result<SystemDef, ParseError> {
        let text = std::fs::read_to_string(path).map_err(|e| ParseError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read the file: {e}"),
        })?;
        Self::from_str(&text, path)
    }

    /// The same from text; `file` names it in errors and anchors relative `apipath`s.
    pub fn from_str(text: &str, file: &Path) -> Result<SystemDef, ParseError> {
        let parsed = parse::parse(text, file)?;
        let error = |line: usize, needle: &str, message: String| {
            let column = text
                .lines()
                .nth(line.saturating_sub(1))
                .and_then(|l| l.find(needle))
                .map_or(1, |c| c + 1);
            ParseError {
                file: file.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let mut apps = parsed.apps;
        let dirs: Vec<PathBuf> = parsed.apipaths.iter().map(|(d, _)| d.clone()).collect();
        for app in &mut apps {
            for p in &mut app.provides {
                if p.protocol_id.is_some() {
                    continue;
                }
                let Some(api_file) = dirs
                    .iter()
                    .map(|d| d.join(format!("{}.api", p.api)))
                    .find(|f| f.exists())
                else {
                    let searched: Vec<String> =
                        dirs.iter().map(|d| d.display().to_string()).collect();
                    return Err(error(
                        p.line,
                        &p.api,
                        format!(
                            "expected {}.api in an apipath ({}) to compute its protocol id, or `protocol=ID`",
                            p.api,
                            if searched.is_empty() {
                                "none given".to_string()
                            } else {
                                searched.join(", ")
                            }
                        ),
                    ));
                };
                let api = telbus_interfaces::Compiler::new()
                    .include_dirs(dirs.iter().cloned())
                    .compile_file(&api_file)
                    .map_err(|e| {
                        error(
                            p.line,
                            &p.api,
                            format!("{} does not compile: {e}", api_file.display()),
                        )
                    })?;
                p.protocol_id = Some(telbus_interfaces::protocol_id::protocol_id(&api));
            }
        }
        let app_index = apps
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.clone(), i))
            .collect();
        let mut by_exe: HashMap<String, Vec<usize>> = HashMap::new();
        let mut without_exe = Vec::new();
        for (i, app) in apps.iter().enumerate() {
            let exact_exe = app.matchers.iter().find_map(|m| match m {
                Matcher::Exe(glob) => glob.literal(),
                _ => None,
            });
            match exact_exe {
                Some(exe) => by_exe.entry(exe.to_string()).or_default().push(i),
                None => without_exe.push(i),
            }
        }
        let uses = |kind: fn(&Matcher) -> bool| apps.iter().any(|a| a.matchers.iter().any(kind));
        let uses_unit = uses(|m| matches!(m, Matcher::Unit(_)));
        let uses_label = uses(|m| matches!(m, Matcher::Label(_)));
        let mut def = SystemDef {
            file: file.to_path_buf(),
            apps,
            bindings: Vec::new(),
            access: HashMap::new(),
            app_index,
            by_exe,
            without_exe,
            uses_unit,
            uses_label,
        };
        for b in parsed.bindings {
            let line = b.line.unwrap_or(0);
            if let Some(first) = def
                .bindings
                .iter()
                .find(|o| o.client == b.client && o.interface == b.interface)
            {
                return Err(error(
                    line,
                    &format!("{}.{}", b.client, b.interface),
                    format!(
                        "`{}.{}` is bound twice (first at line {})",
                        b.client,
                        b.interface,
                        first.line.unwrap_or(0)
                    ),
                ));
            }
            def.check_binding(&b)
                .map_err(|(needle, m)| error(line, &needle, m))?;
            def.bindings.push(b);
        }
        def.reindex();
        Ok(def)
    }

    /// A binding must name an app that provides the service, and a known client app.
    fn check_binding(&self, b: &Binding) -> Result<(), (String, String)> {
        if let ClientSide::App(client) = &b.client
            && self.app(client).is_none()
        {
            return Err((
                client.clone(),
                format!("expected a defined app, found `{client}`"),
            ));
        }
        match self.app(&b.server_app) {
            None => Err((
                b.server_app.clone(),
                format!("expected a defined server app, found `{}`", b.server_app),
            )),
            Some(app) if app.provided(&b.service).is_none() => Err((
                b.service.clone(),
                format!(
                    "app `{}` does not provide `{}` (it provides: {})",
                    app.name,
                    b.service,
                    app.provides
                        .iter()
                        .map(|p| p.service.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    fn reindex(&mut self) {
        self.access.clear();
        for (i, b) in self.bindings.iter().enumerate() {
            let entry = self.access.entry(b.bus_name()).or_default();
            match &b.client {
                ClientSide::Any => entry.any = Some(i),
                ClientSide::App(a) => {
                    entry.apps.insert(a.clone(), i);
                }
                ClientSide::User(u) => {
                    entry.users.insert(u.clone(), i);
                }
            }
        }
    }

    pub fn app(&self, name: &str) -> Option<&App> {
        self.app_index.get(name).map(|&i| &self.apps[i])
    }

    /// The first app (in file order) whose `match` holds for the process.
    /// The first app (in file order) whose matchers all hold for the process.
    pub fn recognise(&self, facts: &ProcessFacts) -> Option<&App> {
        let holds = |&i: &usize| self.apps[i].matchers.iter().all(|m| m.holds(facts));
        let same_exe = facts
            .exe
            .as_deref()
            .and_then(|exe| self.by_exe.get(exe))
            .and_then(|apps| apps.iter().find(|i| holds(i)));
        let other = self.without_exe.iter().find(|i| holds(i));
        let first = match (same_exe, other) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(&self.apps[*first])
    }

    /// Whether some app is recognised by its systemd unit (so connections' cgroups are read).
    pub fn uses_unit(&self) -> bool {
        self.uses_unit
    }

    /// Whether some app is recognised by its security label.
    pub fn uses_label(&self) -> bool {
        self.uses_label
    }

    /// The app a connection is, or its user.
    pub fn principal(&self, facts: &ProcessFacts) -> Principal {
        match self.recognise(facts) {
            Some(app) => Principal::App(app.name.clone()),
            None => Principal::User(
                facts
                    .user
                    .clone()
                    .or_else(|| facts.uid.map(|u| u.to_string()))
                    .unwrap_or_else(|| "?".into()),
            ),
        }
    }

    /// The app and service a bus name stands for, if it is a declared TelAF service name.
    pub fn provider(&self, bus_name: &str) -> Option<(&App, &Provided)> {
        let rest = bus_name.strip_prefix(NAME_PREFIX)?;
        let (app, service) = rest.split_once('.')?;
        let app = self.app(app)?;
        Some((app, app.provided(service)?))
    }

    /// Where `client`'s interface name leads: its own binding, else a `*` one.
    pub fn route(&self, client: &Principal, interface: &str) -> Option<&Binding> {
        let own = self.bindings.iter().find(|b| {
            b.interface == interface
                && match (&b.client, client) {
                    (ClientSide::App(a), Principal::App(p)) => a == p,
                    (ClientSide::User(u), Principal::User(p)) => u == p,
                    _ => false,
                }
        });
        own.or_else(|| {
            self.bindings
                .iter()
                .find(|b| b.interface == interface && b.client == ClientSide::Any)
        })
    }

    /// Why `client` may call the service behind `bus_name` (declared by `app`), or None.
    pub fn may_call(&self, client: &Principal, app: &str, bus_name: &str) -> Option<Allowed<'_>> {
        if matches!(client, Principal::App(c) if c == app) {
            return Some(Allowed::SameApp);
        }
        let access = self.access.get(bus_name)?;
        let index = match client {
            Principal::App(a) => access.apps.get(a),
            Principal::User(u) => access.users.get(u),
        }
        .or(access.any.as_ref())?;
        Some(Allowed::Binding(&self.bindings[*index]))
    }

    /// Adds a binding (replacing the one of the same client interface) until the next load.
    pub fn bind(&mut self, binding: Binding) -> Result<(), String> {
        self.check_binding(&binding).map_err(|(_, m)| m)?;
        self.bindings
            .retain(|b| !(b.client == binding.client && b.interface == binding.interface));
        self.bindings.push(binding);
        self.reindex();
        Ok(())
    }

    /// Removes the binding of a client interface; false if there was none.
    pub fn unbind(&mut self, client: &ClientSide, interface: &str) -> bool {
        let before = self.bindings.len();
        self.bindings
            .retain(|b| !(&b.client == client && b.interface == interface));
        self.reindex();
        self.bindings.len() != before
    }
}

#[cfg(test)]
mod tests;
