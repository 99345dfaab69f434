//! dbus-daemon's XML bus configuration ("busconfig"): parsing, includes, the merge rules, limits
//! and the policy rules as written, with the file and line of each, checked as strictly as
//! dbus-daemon checks them.
//!
//! The result is plain data: telbus-policy compiles the `<policy>` sections into decisions and
//! the broker uses the rest.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quick_xml::events::{BytesStart, Event};

mod defaults;
pub use defaults::{BusKind, default_config_path, embedded_default};

/// Where something was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<Path>,
    pub line: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A configuration that cannot be used, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<u32>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A directory searched for `.service` files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceDir {
    pub path: PathBuf,
    /// From `<standard_system_servicedirs/>`: services there need a `User`.
    pub system: bool,
}

/// Every `<limit>` dbus-daemon knows, with its defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_incoming_bytes: u64,
    pub max_incoming_unix_fds: u64,
    pub max_outgoing_bytes: u64,
    pub max_outgoing_unix_fds: u64,
    pub max_message_size: u64,
    pub max_message_unix_fds: u64,
    pub service_start_timeout: Duration,
    pub auth_timeout: Duration,
    pub pending_fd_timeout: Duration,
    pub max_completed_connections: u64,
    pub max_incomplete_connections: u64,
    pub max_connections_per_user: u64,
    pub max_pending_service_starts: u64,
    pub max_names_per_connection: u64,
    pub max_match_rules_per_connection: u64,
    pub max_replies_per_connection: u64,
    /// None: replies may take forever (dbus-daemon's default).
    pub reply_timeout: Option<Duration>,
    pub max_containers: u64,
    pub max_containers_per_user: u64,
    pub max_container_metadata_bytes: u64,
    pub max_connections_per_container: u64,
}

const MEGABYTE: u64 = 1024 * 1024;
/// DBUS_DEFAULT_MESSAGE_UNIX_FDS.
const DEFAULT_MESSAGE_UNIX_FDS: u64 = 16;
/// DBUS_MAXIMUM_MESSAGE_UNIX_FDS.
pub const MAXIMUM_MESSAGE_UNIX_FDS: u32 = 16 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_incoming_bytes: 127 * MEGABYTE,
            max_incoming_unix_fds: DEFAULT_MESSAGE_UNIX_FDS * 4,
            max_outgoing_bytes: 127 * MEGABYTE,
            max_outgoing_unix_fds: DEFAULT_MESSAGE_UNIX_FDS * 4,
            max_message_size: 32 * MEGABYTE,
            max_message_unix_fds: DEFAULT_MESSAGE_UNIX_FDS,
            service_start_timeout: Duration::from_millis(25_000),
            auth_timeout: Duration::from_millis(30_000),
            pending_fd_timeout: Duration::from_millis(150_000),
            max_completed_connections: 2048,
            max_incomplete_connections: 64,
            max_connections_per_user: 256,
            max_pending_service_starts: 512,
            max_names_per_connection: 512,
            max_match_rules_per_connection: 512,
            max_replies_per_connection: 128,
            reply_timeout: None,
            max_containers: 512,
            max_containers_per_user: 16,
            max_container_metadata_bytes: 4096,
            max_connections_per_container: 8,
        }
    }
}

impl Limits {
    /// Set a limit by its configuration name. Values are milliseconds for the timeouts.
    fn set(&mut self, name: &str, value: u64) -> Result<(), String> {
        let ms = Duration::from_millis(value);
        match name {
            "max_incoming_bytes" => self.max_incoming_bytes = value,
            "max_incoming_unix_fds" => self.max_incoming_unix_fds = value,
            "max_outgoing_bytes" => self.max_outgoing_bytes = value,
            "max_outgoing_unix_fds" => self.max_outgoing_unix_fds = value,
            "max_message_size" => self.max_message_size = value,
            "max_message_unix_fds" => self.max_message_unix_fds = value,
            "service_start_timeout" => self.service_start_timeout = ms,
            "auth_timeout" => self.auth_timeout = ms,
            "pending_fd_timeout" => self.pending_fd_timeout = ms,
            "reply_timeout" => self.reply_timeout = (value > 0).then_some(ms),
            "max_completed_connections" => self.max_completed_connections = value,
            "max_incomplete_connections" => self.max_incomplete_connections = value,
            "max_connections_per_user" => self.max_connections_per_user = value,
            "max_pending_service_starts" => self.max_pending_service_starts = value,
            "max_names_per_connection" => self.max_names_per_connection = value,
            "max_match_rules_per_connection" => self.max_match_rules_per_connection = value,
            "max_replies_per_connection" => self.max_replies_per_connection = value,
            "max_containers" => self.max_containers = value,
            "max_containers_per_user" => self.max_containers_per_user = value,
            "max_container_metadata_bytes" => self.max_container_metadata_bytes = value,
            "max_connections_per_container" => self.max_connections_per_container = value,
            _ => return Err(format!("There is no limit called \"{name}\"")),
        }
        Ok(())
    }
}

/// Which connections a `<policy>` section applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyContext {
    Default,
    Mandatory,
    /// A user name, a numeric uid, or "*".
    User(String),
    /// A group name, a numeric gid, or "*".
    Group(String),
    AtConsole(bool),
}

/// A message type named in a rule (`send_type`, `receive_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    MethodCall,
    MethodReturn,
    Error,
    Signal,
}

/// `<allow send_…>` / `<deny send_…>`. None stands for "any" (`*` in the file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendRule {
    pub destination: Option<String>,
    /// `send_destination_prefix`: `destination` is a prefix of dot-separated elements.
    pub destination_is_prefix: bool,
    pub interface: Option<String>,
    pub member: Option<String>,
    pub error: Option<String>,
    pub path: Option<String>,
    pub msg_type: Option<MessageKind>,
    /// None: broadcast or not; Some(true): only broadcasts; Some(false): only non-broadcasts.
    pub broadcast: Option<bool>,
    pub requested_reply: bool,
    pub eavesdrop: bool,
    pub min_fds: u32,
    pub max_fds: u32,
    pub log: bool,
}

/// `<allow receive_…>` / `<deny receive_…>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiveRule {
    pub sender: Option<String>,
    pub interface: Option<String>,
    pub member: Option<String>,
    pub error: Option<String>,
    pub path: Option<String>,
    pub msg_type: Option<MessageKind>,
    pub requested_reply: bool,
    pub eavesdrop: bool,
    pub min_fds: u32,
    pub max_fds: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleKind {
    Send(SendRule),
    Receive(ReceiveRule),
    /// `own` (prefix false) or `own_prefix` (prefix true); "*" is any name.
    Own { name: String, prefix: bool },
    /// Connection rule: which users may connect ("*" for all).
    User(String),
    Group(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    pub kind: RuleKind,
    pub origin: Origin,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySection {
    pub context: PolicyContext,
    pub rules: Vec<Rule>,
    pub origin: Origin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppArmorMode {
    Enabled,
    Disabled,
    Required,
}

/// A whole configuration, includes merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BusConfig {
    pub bus_type: Option<String>,
    pub user: Option<String>,
    pub fork: bool,
    pub keep_umask: bool,
    pub syslog: bool,
    pub allow_anonymous: bool,
    pub listen: Vec<String>,
    pub pidfile: Option<PathBuf>,
    pub auth: Vec<String>,
    pub servicedirs: Vec<ServiceDir>,
    pub servicehelper: Option<PathBuf>,
    pub limits: Limits,
    pub policies: Vec<PolicySection>,
    pub apparmor: Option<AppArmorMode>,
    pub selinux_associations: Vec<(String, String)>,
    /// Every file read, in order.
    pub files: Vec<PathBuf>,
}

/// Load a configuration file and everything it includes.
pub fn load(path: &Path) -> Result<BusConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        message: format!("Failed to open \"{}\": {e}", path.display()),
    })?;
    load_str(&text, path)
}

/// Load configuration text; `path` names it in errors and anchors relative includes.
pub fn load_str(text: &str, path: &Path) -> Result<BusConfig, ConfigError> {
    let mut config = BusConfig::default();
    let mut loader = Loader {
        stack: Vec::new(),
        config: &mut config,
    };
    loader.file(text, path, true)?;
    dedup_servicedirs(&mut config.servicedirs);
    Ok(config)
}

/// A directory listed twice is searched once, at its first place (as dbus-daemon does).
fn dedup_servicedirs(dirs: &mut Vec<ServiceDir>) {
    let mut seen = HashSet::new();
    dirs.retain(|d| seen.insert(d.path.clone()));
}

/// An element of the file, parsed.
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Element>,
    text: String,
    line: u32,
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parse the XML of one file into elements (quick-xml does the XML; this keeps lines).
fn parse_xml(text: &str, file: &Path) -> Result<Element, ConfigError> {
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let line_at = |pos: u64| -> u32 {
        let pos = (pos as usize).min(text.len());
        text.as_bytes()[..pos].iter().filter(|b| **b == b'\n').count() as u32 + 1
    };
    let err = |line: u32, message: String| ConfigError {
        file: file.to_path_buf(),
        line: Some(line),
        message,
    };
    let start = |e: &BytesStart<'_>, line: u32| -> Result<Element, ConfigError> {
        let name = e.name().as_ref().to_string();
        let mut attrs: Vec<(String, String)> = Vec::new();
        for a in e.attributes() {
            let a = a.map_err(|e| err(line, format!("Malformed attribute: {e}")))?;
            let key = a.key.as_ref().to_string();
            let value = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| err(line, format!("Malformed attribute value: {e}")))?
                .into_owned();
            if attrs.iter().any(|(k, _)| *k == key) {
                return Err(err(line, format!("Attribute \"{key}\" repeated twice on the same <{name}> element")));
            }
            attrs.push((key, value));
        }
        Ok(Element {
            name,
            attrs,
            children: Vec::new(),
            text: String::new(),
            line,
        })
    };
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let pos = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| err(line_at(reader.error_position()), format!("Document is not well-formed: {e}")))?;
        let line = line_at(pos);
        match event {
            Event::Start(e) => stack.push(start(&e, line)?),
            Event::Empty(e) => {
                let el = start(&e, line)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None if root.is_none() => root = Some(el),
                    None => return Err(err(line, "More than one root element".into())),
                }
            }
            Event::End(_) => {
                let el = stack.pop().expect("quick-xml checks that ends match starts");
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None if root.is_none() => root = Some(el),
                    None => return Err(err(line, "More than one root element".into())),
                }
            }
            Event::Text(t) => {
                let text = t.xml_content(quick_xml::XmlVersion::Implicit1_0);
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(err(line, "Text outside the root element".into())),
                }
            }
            Event::CData(t) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&t);
                }
            }
            Event::GeneralRef(r) => {
                let name = r.to_string();
                let resolved = match name.as_str() {
                    "amp" => "&".to_string(),
                    "lt" => "<".to_string(),
                    "gt" => ">".to_string(),
                    "quot" => "\"".to_string(),
                    "apos" => "'".to_string(),
                    other => match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => return Err(err(line, format!("Unknown entity &{other};"))),
                    },
                };
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&resolved);
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(err(line_at(text.len() as u64), "Document ended inside an element (truncated?)".into()));
    }
    let root = root.ok_or_else(|| err(1, "Empty configuration file".into()))?;
    if root.name != "busconfig" {
        return Err(err(root.line, format!("Unknown root element <{}>, expected <busconfig>", root.name)));
    }
    Ok(root)
}

struct Loader<'c> {
    /// Files being read, for circular includes.
    stack: Vec<PathBuf>,
    config: &'c mut BusConfig,
}

fn yes_no(value: &str, attr: &str, el: &Element, file: &Path) -> Result<bool, ConfigError> {
    match value {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => Err(ConfigError {
            file: file.to_path_buf(),
            line: Some(el.line),
            message: format!("\"{attr}\" attribute must have value \"yes\" or \"no\", not \"{other}\""),
        }),
    }
}

impl Loader<'_> {
    fn file(&mut self, text: &str, path: &Path, top: bool) -> Result<(), ConfigError> {
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if self.stack.contains(&canonical) {
            return Err(ConfigError {
                file: path.to_path_buf(),
                line: None,
                message: "Circular inclusion of file".into(),
            });
        }
        let root = parse_xml(text, path)?;
        self.stack.push(canonical);
        self.config.files.push(path.to_path_buf());
        let result = self.busconfig(&root, path, top);
        self.stack.pop();
        result
    }

    fn err(&self, file: &Path, el: &Element, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line: Some(el.line),
            message: message.into(),
        }
    }

    fn no_attributes(&self, file: &Path, el: &Element, allowed: &[&str]) -> Result<(), ConfigError> {
        for (key, _) in &el.attrs {
            if !allowed.contains(&key.as_str()) {
                return Err(self.err(file, el, format!("Attribute \"{key}\" is invalid on <{}> element in this context", el.name)));
            }
        }
        Ok(())
    }

    fn no_children(&self, file: &Path, el: &Element) -> Result<(), ConfigError> {
        if let Some(child) = el.children.first() {
            return Err(self.err(file, child, format!("Element <{}> not allowed inside <{}> in configuration file", child.name, el.name)));
        }
        Ok(())
    }

    /// A path in an element's text, relative to the including file's directory.
    fn relative(&self, file: &Path, text: &str) -> PathBuf {
        let p = PathBuf::from(text.trim());
        if p.is_absolute() {
            p
        } else {
            file.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    fn busconfig(&mut self, root: &Element, file: &Path, _top: bool) -> Result<(), ConfigError> {
        self.no_attributes(file, root, &[])?;
        for el in &root.children {
            let text = el.text.trim();
            match el.name.as_str() {
                "user" | "type" | "pidfile" | "servicehelper" | "listen" | "auth" | "servicedir" | "includedir" => {
                    self.no_attributes(file, el, &[])?;
                    self.no_children(file, el)?;
                    if text.is_empty() {
                        return Err(self.err(file, el, format!("<{}> must contain text", el.name)));
                    }
                    match el.name.as_str() {
                        "user" => self.config.user = Some(text.to_string()),
                        "type" => self.config.bus_type = Some(text.to_string()),
                        "pidfile" => self.config.pidfile = Some(self.relative(file, text)),
                        "servicehelper" => self.config.servicehelper = Some(self.relative(file, text)),
                        "listen" => self.config.listen.push(text.to_string()),
                        "auth" => self.config.auth.push(text.to_string()),
                        "servicedir" => self.config.servicedirs.push(ServiceDir {
                            path: self.relative(file, text),
                            system: false,
                        }),
                        _ => self.includedir(&self.relative(file, text))?,
                    }
                }
                "fork" | "keep_umask" | "syslog" | "allow_anonymous" | "standard_session_servicedirs" | "standard_system_servicedirs" => {
                    self.no_attributes(file, el, &[])?;
                    self.no_children(file, el)?;
                    match el.name.as_str() {
                        "fork" => self.config.fork = true,
                        "keep_umask" => self.config.keep_umask = true,
                        "syslog" => self.config.syslog = true,
                        "allow_anonymous" => self.config.allow_anonymous = true,
                        "standard_session_servicedirs" => self.config.servicedirs.extend(defaults::session_service_dirs()),
                        _ => self.config.servicedirs.extend(defaults::system_service_dirs()),
                    }
                }
                "include" => self.include(el, file)?,
                "limit" => self.limit(el, file)?,
                "policy" => self.policy(el, file)?,
                "selinux" => self.selinux(el, file)?,
                "apparmor" => {
                    self.no_attributes(file, el, &["mode"])?;
                    self.no_children(file, el)?;
                    let mode = match el.attr("mode") {
                        Some("enabled") => AppArmorMode::Enabled,
                        Some("disabled") => AppArmorMode::Disabled,
                        Some("required") => AppArmorMode::Required,
                        Some(other) => return Err(self.err(file, el, format!("AppArmor mode \"{other}\" is not valid (enabled, disabled or required)"))),
                        None => return Err(self.err(file, el, "<apparmor> needs a mode attribute")),
                    };
                    self.config.apparmor = Some(mode);
                }
                "associate" | "allow" | "deny" => {
                    return Err(self.err(file, el, format!("Element <{}> not allowed inside <busconfig> in configuration file", el.name)));
                }
                other => {
                    return Err(self.err(file, el, format!("Element <{other}> not allowed inside <busconfig> in configuration file")));
                }
            }
        }
        Ok(())
    }

    fn include(&mut self, el: &Element, file: &Path) -> Result<(), ConfigError> {
        self.no_attributes(file, el, &["ignore_missing", "if_selinux_enabled", "selinux_root_relative"])?;
        self.no_children(file, el)?;
        let ignore_missing = match el.attr("ignore_missing") {
            Some(v) => yes_no(v, "ignore_missing", el, file)?,
            None => false,
        };
        let if_selinux = match el.attr("if_selinux_enabled") {
            Some(v) => yes_no(v, "if_selinux_enabled", el, file)?,
            None => false,
        };
        let selinux_relative = match el.attr("selinux_root_relative") {
            Some(v) => yes_no(v, "selinux_root_relative", el, file)?,
            None => false,
        };
        if (if_selinux || selinux_relative) && !selinux_enabled() {
            return Ok(());
        }
        let text = el.text.trim();
        if text.is_empty() {
            return Err(self.err(file, el, "<include> must contain a file name"));
        }
        let path = self.relative(file, text);
        match std::fs::read_to_string(&path) {
            Ok(included) => self.file(&included, &path, false).map_err(|mut e| {
                if e.message == "Circular inclusion of file" {
                    e.file = file.to_path_buf();
                    e.line = Some(el.line);
                    e.message = format!("Circular inclusion of file \"{}\"", path.display());
                }
                e
            }),
            Err(_) if ignore_missing => Ok(()),
            Err(e) => Err(self.err(file, el, format!("Failed to open \"{}\": {e}", path.display()))),
        }
    }

    fn includedir(&mut self, dir: &Path) -> Result<(), ConfigError> {
        let Ok(read) = std::fs::read_dir(dir) else {
            // A missing <includedir> is not an error in dbus-daemon.
            return Ok(());
        };
        let mut files: Vec<PathBuf> = read
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        files.sort();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
                file: path.clone(),
                line: None,
                message: format!("Failed to open \"{}\": {e}", path.display()),
            })?;
            self.file(&text, &path, false)?;
        }
        Ok(())
    }

    fn limit(&mut self, el: &Element, file: &Path) -> Result<(), ConfigError> {
        self.no_attributes(file, el, &["name"])?;
        self.no_children(file, el)?;
        let name = el
            .attr("name")
            .ok_or_else(|| self.err(file, el, "<limit> element must have a \"name\" attribute"))?;
        let text = el.text.trim();
        let value: i64 = text
            .parse()
            .map_err(|_| self.err(file, el, format!("<limit name=\"{name}\"> element has invalid value (could not parse as integer)")))?;
        if value < 0 {
            return Err(self.err(file, el, format!("<limit name=\"{name}\"> element has invalid value (negative)")));
        }
        if value > i32::MAX as i64 {
            return Err(self.err(file, el, format!("<limit name=\"{name}\"> element has invalid value (too large)")));
        }
        self.config
            .limits
            .set(name, value as u64)
            .map_err(|m| self.err(file, el, m))
    }

    fn selinux(&mut self, el: &Element, file: &Path) -> Result<(), ConfigError> {
        self.no_attributes(file, el, &[])?;
        for child in &el.children {
            if child.name != "associate" {
                return Err(self.err(file, child, format!("Element <{}> not allowed inside <selinux> in configuration file", child.name)));
            }
            self.no_attributes(file, child, &["own", "context"])?;
            let (Some(own), Some(context)) = (child.attr("own"), child.attr("context")) else {
                return Err(self.err(file, child, "<associate> needs both \"own\" and \"context\" attributes"));
            };
            self.config
                .selinux_associations
                .push((own.to_string(), context.to_string()));
        }
        Ok(())
    }

    fn policy(&mut self, el: &Element, file: &Path) -> Result<(), ConfigError> {
        self.no_attributes(file, el, &["context", "user", "group", "at_console"])?;
        let given = ["context", "user", "group", "at_console"]
            .iter()
            .filter(|a| el.attr(a).is_some())
            .count();
        if given != 1 {
            return Err(self.err(file, el, "<policy> element must have exactly one of (context|user|group|at_console) attributes"));
        }
        let context = if let Some(c) = el.attr("context") {
            match c {
                "default" => PolicyContext::Default,
                "mandatory" => PolicyContext::Mandatory,
                other => return Err(self.err(file, el, format!("context attribute on <policy> must have the value \"default\" or \"mandatory\", not \"{other}\""))),
            }
        } else if let Some(u) = el.attr("user") {
            PolicyContext::User(u.to_string())
        } else if let Some(g) = el.attr("group") {
            PolicyContext::Group(g.to_string())
        } else {
            match el.attr("at_console") {
                Some("true") => PolicyContext::AtConsole(true),
                Some("false") => PolicyContext::AtConsole(false),
                other => return Err(self.err(file, el, format!("at_console attribute on <policy> must have the value \"true\" or \"false\", not {other:?}"))),
            }
        };
        let file_arc: Arc<Path> = Arc::from(file);
        let origin = |line| Origin {
            file: file_arc.clone(),
            line,
        };
        let mut rules = Vec::new();
        for child in &el.children {
            let allow = match child.name.as_str() {
                "allow" => true,
                "deny" => false,
                other => return Err(self.err(file, child, format!("Element <{other}> not allowed inside <policy> in configuration file"))),
            };
            self.no_children(file, child)?;
            let kind = rule_kind(child, allow).map_err(|m| self.err(file, child, m))?;
            if matches!(kind, RuleKind::User(_) | RuleKind::Group(_))
                && !matches!(context, PolicyContext::Default | PolicyContext::Mandatory)
            {
                // dbus-daemon ignores connection rules outside default/mandatory; keep them
                // out of the model rather than pretend they apply.
                continue;
            }
            rules.push(Rule {
                allow,
                kind,
                origin: origin(child.line),
            });
        }
        self.config.policies.push(PolicySection {
            context,
            rules,
            origin: origin(el.line),
        });
        Ok(())
    }
}

fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

fn message_kind(value: &str) -> Result<MessageKind, String> {
    match value {
        "method_call" => Ok(MessageKind::MethodCall),
        "method_return" => Ok(MessageKind::MethodReturn),
        "error" => Ok(MessageKind::Error),
        "signal" => Ok(MessageKind::Signal),
        other => Err(format!("Bad message type \"{other}\"")),
    }
}

fn true_false(value: &str, attr: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("Bad value \"{other}\" for {attr} attribute, must be true or false")),
    }
}

fn fds(value: Option<&str>, attr: &str, default: u32) -> Result<u32, String> {
    match value {
        None => Ok(default),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if n <= MAXIMUM_MESSAGE_UNIX_FDS => Ok(n),
            _ => Err(format!("Bad value \"{v}\" for {attr} attribute, must be an integer from 0 to {MAXIMUM_MESSAGE_UNIX_FDS}")),
        },
    }
}

/// `*` means "any" in the file; None in the model.
fn wildcard(value: Option<&str>) -> Option<String> {
    value.filter(|v| *v != "*").map(str::to_string)
}

/// The rule an `<allow>`/`<deny>` element states, with dbus-daemon's checks on which
/// attributes go together.
fn rule_kind(el: &Element, allow: bool) -> Result<RuleKind, String> {
    const KNOWN: &[&str] = &[
        "send_interface", "send_member", "send_error", "send_destination", "send_destination_prefix",
        "send_path", "send_type", "send_broadcast", "receive_interface", "receive_member",
        "receive_error", "receive_sender", "receive_path", "receive_type", "eavesdrop", "max_fds",
        "min_fds", "send_requested_reply", "receive_requested_reply", "own", "own_prefix", "user",
        "group", "log",
    ];
    for (key, _) in &el.attrs {
        if !KNOWN.contains(&key.as_str()) {
            return Err(format!("Attribute \"{key}\" is invalid on <{}> element in this context", el.name));
        }
    }
    let a = |n: &str| el.attr(n);
    let any_send = [
        "send_destination", "send_destination_prefix", "send_broadcast", "send_path", "send_type",
        "send_interface", "send_member", "send_error", "send_requested_reply",
    ]
    .iter()
    .any(|n| a(n).is_some());
    let any_receive = [
        "receive_sender", "receive_path", "receive_type", "receive_interface", "receive_member",
        "receive_error", "receive_requested_reply",
    ]
    .iter()
    .any(|n| a(n).is_some())
        || (!any_send && a("eavesdrop").is_some());
    let any_message = any_send || any_receive || a("eavesdrop").is_some() || a("max_fds").is_some() || a("min_fds").is_some();
    let others = ["own", "own_prefix", "user", "group"].iter().filter(|n| a(n).is_some()).count();
    if !(any_send || any_receive || others > 0) {
        return Err(format!("Element <{}> must have one or more attributes", el.name));
    }
    if (a("send_member").is_some() && a("send_interface").is_none() && a("send_path").is_none())
        || (a("receive_member").is_some() && a("receive_interface").is_none() && a("receive_path").is_none())
    {
        return Err(format!("On element <{}>, if you specify a member you must specify an interface or a path. Keep in mind that not all messages have an interface field.", el.name));
    }
    if any_message as usize + others > 1 {
        return Err(format!("Invalid combination of attributes on element <{}>: own, own_prefix, user, group and the message-related attributes cannot be combined", el.name));
    }
    if any_send && any_receive {
        return Err(format!("Invalid combination of attributes on element <{}>: send and receive attributes cannot be combined", el.name));
    }
    if (a("send_member").is_some() || a("send_interface").is_some()) && a("send_error").is_some() {
        return Err(format!("Invalid combination of attributes on element <{}>: send_error cannot be combined with send_member or send_interface", el.name));
    }
    if a("send_destination").is_some() && a("send_destination_prefix").is_some() {
        return Err(format!("Invalid combination of attributes on element <{}>: send_destination cannot be combined with send_destination_prefix", el.name));
    }
    if (a("receive_member").is_some() || a("receive_interface").is_some()) && a("receive_error").is_some() {
        return Err(format!("Invalid combination of attributes on element <{}>: receive_error cannot be combined with receive_member or receive_interface", el.name));
    }
    let eavesdrop = a("eavesdrop").map(|v| true_false(v, "eavesdrop")).transpose()?.unwrap_or(false);
    let max_fds = fds(a("max_fds"), "max_fds", MAXIMUM_MESSAGE_UNIX_FDS)?;
    let min_fds = fds(a("min_fds"), "min_fds", 0)?;
    if any_send {
        let broadcast = a("send_broadcast").map(|v| true_false(v, "send_broadcast")).transpose()?;
        let destination = wildcard(a("send_destination"));
        if broadcast == Some(true) {
            if let Some(d) = a("send_destination") {
                return Err(format!("Rule with send_broadcast=\"true\" and send_destination=\"{d}\" cannot match anything"));
            }
        }
        let (destination, destination_is_prefix) = match a("send_destination_prefix") {
            Some(p) => (Some(p.to_string()), true),
            None => (destination, false),
        };
        return Ok(RuleKind::Send(SendRule {
            destination,
            destination_is_prefix,
            interface: wildcard(a("send_interface")),
            member: wildcard(a("send_member")),
            error: wildcard(a("send_error")),
            path: wildcard(a("send_path")),
            msg_type: wildcard(a("send_type")).map(|t| message_kind(&t)).transpose()?,
            broadcast,
            // Unset, it is the rule's own verdict, as in dbus-daemon.
            requested_reply: a("send_requested_reply").map(|v| true_false(v, "send_requested_reply")).transpose()?.unwrap_or(allow),
            eavesdrop,
            min_fds,
            max_fds,
            log: a("log").map(|v| true_false(v, "log")).transpose()?.unwrap_or(false),
        }));
    }
    if any_receive {
        return Ok(RuleKind::Receive(ReceiveRule {
            sender: wildcard(a("receive_sender")),
            interface: wildcard(a("receive_interface")),
            member: wildcard(a("receive_member")),
            error: wildcard(a("receive_error")),
            path: wildcard(a("receive_path")),
            msg_type: wildcard(a("receive_type")).map(|t| message_kind(&t)).transpose()?,
            requested_reply: a("receive_requested_reply").map(|v| true_false(v, "receive_requested_reply")).transpose()?.unwrap_or(allow),
            eavesdrop,
            min_fds,
            max_fds,
        }));
    }
    if let Some(name) = a("own") {
        return Ok(RuleKind::Own { name: name.to_string(), prefix: false });
    }
    if let Some(name) = a("own_prefix") {
        return Ok(RuleKind::Own { name: name.to_string(), prefix: true });
    }
    if let Some(user) = a("user") {
        return Ok(RuleKind::User(user.to_string()));
    }
    if let Some(group) = a("group") {
        return Ok(RuleKind::Group(group.to_string()));
    }
    // Only min_fds/max_fds: dbus-daemon treats these as message attributes without a
    // direction, which it refuses above; nothing is left here.
    Err(format!("Element <{}> must have one or more attributes", el.name))
}

#[cfg(test)]
mod tests;
