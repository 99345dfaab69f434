//! Reading configuration files: the busconfig grammar, element by element in document order as
//! dbus-daemon processes it, and the merging of included files.
//!
//! Each file is read into a configuration of its own, which starts from the including file's
//! limits; when it loads, it is merged into the including file's with dbus-daemon's rules:
//! policies, listen addresses, auth mechanisms, service and include directories are appended;
//! user, type, pidfile and servicehelper replace; fork, keep_umask and allow_anonymous are
//! or-ed; limits are copied back; syslog is not merged (dbus-daemon only honours it in the
//! top-level file).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::limits::parse_c_long;
use crate::model::{
    AppArmorMode, BusConfig, ConfigError, ConfigWarning, Origin, ServiceDir, push_service_dir,
};
use crate::rules::{PolicyContext, PolicySection, Rule, RuleKind, parse_rule};
use crate::servicedirs;
use crate::users::{lookup_group, lookup_user};
use crate::xml::{Position, XmlEvent, XmlReader};

/// A failure to load, and whether it was a missing file: `ignore_missing` forgives that, as
/// in dbus-daemon, even when the missing file is one the included file includes.
pub(crate) struct LoadError {
    pub error: ConfigError,
    file_not_found: bool,
}

impl From<ConfigError> for LoadError {
    fn from(error: ConfigError) -> Self {
        LoadError {
            error,
            file_not_found: false,
        }
    }
}

/// Load a file, and everything it includes.
pub(crate) fn load_file(path: &Path) -> Result<BusConfig, ConfigError> {
    let text = read(path).map_err(|e| e.error)?;
    load_text(&text, path)
}

/// Load configuration text that stands for `path`.
pub(crate) fn load_text(text: &str, path: &Path) -> Result<BusConfig, ConfigError> {
    let mut includes = vec![canonical(path)];
    let config =
        parse(text, path, BusConfig::default().limits, &mut includes).map_err(|e| e.error)?;
    if config.listen.is_empty() {
        return Err(ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            message: "Configuration file needs one or more <listen> elements giving addresses"
                .into(),
        });
    }
    Ok(config)
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn read(path: &Path) -> Result<String, LoadError> {
    let failed = |message: String, file_not_found: bool| LoadError {
        error: ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            message,
        },
        file_not_found,
    };
    let bytes = std::fs::read(path).map_err(|e| {
        failed(
            format!("Failed to open \"{}\": {e}", path.display()),
            e.kind() == std::io::ErrorKind::NotFound,
        )
    })?;
    String::from_utf8(bytes).map_err(|e| {
        failed(
            format!(
                "\"{}\" is not valid UTF-8 (at byte {})",
                path.display(),
                e.utf8_error().valid_up_to()
            ),
            false,
        )
    })
}

/// What an open element is, with what dbus-daemon remembers about it.
enum Kind {
    Busconfig,
    /// Elements whose text is their value.
    Content(ContentKind),
    /// Elements that must be empty (their effect is taken when they start).
    Empty,
    Include {
        ignore_missing: bool,
        if_selinux_enabled: bool,
        selinux_root_relative: bool,
    },
    Limit {
        name: String,
        value: Option<i64>,
    },
    Policy,
    Selinux,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ContentKind {
    User,
    Type,
    Listen,
    Pidfile,
    Auth,
    Servicedir,
    Servicehelper,
    Includedir,
    Log,
}

impl ContentKind {
    fn from_name(name: &str) -> Option<ContentKind> {
        Some(match name {
            "user" => ContentKind::User,
            "type" => ContentKind::Type,
            "listen" => ContentKind::Listen,
            "pidfile" => ContentKind::Pidfile,
            "auth" => ContentKind::Auth,
            "servicedir" => ContentKind::Servicedir,
            "servicehelper" => ContentKind::Servicehelper,
            "includedir" => ContentKind::Includedir,
            "log" => ContentKind::Log,
            _ => return None,
        })
    }
}

struct Frame {
    kind: Kind,
    name: String,
    position: Position,
    had_content: bool,
}

/// One file being read.
struct FileParser<'a> {
    path: &'a Path,
    /// The file's directory, for relative paths (as dbus-daemon computes it: "." for a bare
    /// file name).
    basedir: String,
    file: Arc<Path>,
    config: BusConfig,
    stack: Vec<Frame>,
    content: String,
    /// Canonical paths of the files being read, outermost first.
    includes: &'a mut Vec<PathBuf>,
}

/// Parse one file into a configuration of its own (with its includes merged), starting from
/// the including file's limits.
fn parse(
    text: &str,
    path: &Path,
    limits: crate::limits::Limits,
    includes: &mut Vec<PathBuf>,
) -> Result<BusConfig, LoadError> {
    let basedir = match path.parent().map(|p| p.to_string_lossy().into_owned()) {
        Some(dir) if !dir.is_empty() => dir,
        _ => ".".to_string(),
    };
    let mut parser = FileParser {
        path,
        basedir,
        file: Arc::from(path),
        config: BusConfig {
            limits,
            files: vec![path.to_path_buf()],
            ..BusConfig::default()
        },
        stack: Vec::new(),
        content: String::new(),
        includes,
    };
    let mut reader = XmlReader::new(text);
    loop {
        let event = reader.next().map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: Some(e.position.line),
            column: Some(e.position.column),
            message: e.message,
        })?;
        match event {
            Some(XmlEvent::Start {
                name,
                attributes,
                position,
            }) => {
                parser.flush_content()?;
                parser.start_element(name, &attributes, position)?;
            }
            Some(XmlEvent::End { name }) => {
                parser.flush_content()?;
                parser.end_element(&name)?;
            }
            Some(XmlEvent::Text(text)) => parser.content.push_str(&text),
            None => break,
        }
    }
    Ok(parser.config)
}

fn no_attributes(element: &str, attributes: &[(String, String)]) -> Result<(), String> {
    match attributes.first() {
        Some((name, _)) => Err(format!(
            "Attribute \"{name}\" is invalid on <{element}> element in this context"
        )),
        None => Ok(()),
    }
}

/// The attributes named in `allowed`, refusing any other.
fn only_attributes<'v>(
    element: &str,
    attributes: &'v [(String, String)],
    allowed: &[&str],
) -> Result<Vec<Option<&'v str>>, String> {
    if let Some((name, _)) = attributes
        .iter()
        .find(|(name, _)| !allowed.contains(&name.as_str()))
    {
        return Err(format!(
            "Attribute \"{name}\" is invalid on <{element}> element in this context"
        ));
    }
    Ok(allowed
        .iter()
        .map(|wanted| {
            attributes
                .iter()
                .find(|(name, _)| name == wanted)
                .map(|(_, v)| v.as_str())
        })
        .collect())
}

fn yes_no(value: Option<&str>, attribute: &str) -> Result<bool, String> {
    match value {
        None | Some("no") => Ok(false),
        Some("yes") => Ok(true),
        Some(_) => Err(format!(
            "{attribute} attribute must have value \"yes\" or \"no\""
        )),
    }
}

fn is_white(text: &str) -> bool {
    text.bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

impl FileParser<'_> {
    fn error_at(&self, position: Option<Position>, message: impl Into<String>) -> LoadError {
        LoadError::from(ConfigError {
            file: self.path.to_path_buf(),
            line: position.map(|p| p.line),
            column: position.map(|p| p.column),
            message: message.into(),
        })
    }

    /// An error about the innermost open element.
    fn error(&self, message: impl Into<String>) -> LoadError {
        self.error_at(self.stack.last().map(|f| f.position), message)
    }

    fn warn(&mut self, line: Option<u32>, message: String) {
        self.config.warnings.push(ConfigWarning {
            file: self.path.to_path_buf(),
            line,
            message,
        });
    }

    fn origin(&self, position: Position) -> Origin {
        Origin {
            file: self.file.clone(),
            line: position.line,
        }
    }

    /// A path from the file, made absolute against the file's directory as dbus-daemon does
    /// (by plain concatenation, without normalising).
    fn full_path(&self, text: &str) -> PathBuf {
        if text.starts_with('/') {
            PathBuf::from(text)
        } else if self.basedir.ends_with('/') {
            PathBuf::from(format!("{}{text}", self.basedir))
        } else {
            PathBuf::from(format!("{}/{text}", self.basedir))
        }
    }

    fn push(&mut self, kind: Kind, name: String, position: Position) {
        self.stack.push(Frame {
            kind,
            name,
            position,
            had_content: false,
        });
    }

    fn start_element(
        &mut self,
        name: String,
        attributes: &[(String, String)],
        position: Position,
    ) -> Result<(), LoadError> {
        let err = |message: String| self.error_at(Some(position), message);
        match self.stack.last().map(|f| &f.kind) {
            None => {
                if name != "busconfig" {
                    return Err(err(format!(
                        "Unknown element <{name}> at root of configuration file"
                    )));
                }
                no_attributes(&name, attributes).map_err(err)?;
                self.push(Kind::Busconfig, name, position);
                Ok(())
            }
            Some(Kind::Busconfig) => self.start_busconfig_child(name, attributes, position),
            Some(Kind::Policy) => {
                let allow = match name.as_str() {
                    "allow" => true,
                    "deny" => false,
                    _ => {
                        return Err(err(format!(
                            "Element <{name}> not allowed inside <policy> in configuration file"
                        )));
                    }
                };
                self.append_rule(&name, attributes, allow, position)?;
                self.push(Kind::Empty, name, position);
                Ok(())
            }
            Some(Kind::Selinux) => {
                if name != "associate" {
                    return Err(err(format!(
                        "Element <{name}> not allowed inside <selinux> in configuration file"
                    )));
                }
                let values =
                    only_attributes(&name, attributes, &["own", "context"]).map_err(err)?;
                let (Some(own), Some(context)) = (values[0], values[1]) else {
                    return Err(err("Element <associate> must have attributes \
                                    own=\"<servicename>\" and context=\"<selinux context>\""
                        .into()));
                };
                let associations = &mut self.config.selinux_associations;
                match associations.iter_mut().find(|(name, _)| name == own) {
                    Some(existing) => existing.1 = context.to_string(),
                    None => associations.push((own.to_string(), context.to_string())),
                }
                self.push(Kind::Empty, name, position);
                Ok(())
            }
            Some(_) => Err(err(format!(
                "Element <{name}> is not allowed in this context"
            ))),
        }
    }

    fn start_busconfig_child(
        &mut self,
        name: String,
        attributes: &[(String, String)],
        position: Position,
    ) -> Result<(), LoadError> {
        let err = |message: String| self.error_at(Some(position), message);
        if let Some(kind) = ContentKind::from_name(&name) {
            no_attributes(&name, attributes).map_err(err)?;
            self.push(Kind::Content(kind), name, position);
            return Ok(());
        }
        match name.as_str() {
            "fork" | "syslog" | "keep_umask" | "allow_anonymous" => {
                no_attributes(&name, attributes).map_err(err)?;
                match name.as_str() {
                    "fork" => self.config.fork = true,
                    "syslog" => self.config.syslog = true,
                    "keep_umask" => self.config.keep_umask = true,
                    _ => self.config.allow_anonymous = true,
                }
            }
            "standard_session_servicedirs" => {
                no_attributes(&name, attributes).map_err(err)?;
                let (dirs, problem) = servicedirs::session_service_dirs();
                if let Some(problem) = problem {
                    self.warn(Some(position.line), problem);
                }
                for dir in dirs {
                    push_service_dir(&mut self.config.servicedirs, dir);
                }
            }
            "standard_system_servicedirs" => {
                no_attributes(&name, attributes).map_err(err)?;
                for dir in servicedirs::system_service_dirs() {
                    push_service_dir(&mut self.config.servicedirs, dir);
                }
            }
            "include" => {
                let values = only_attributes(
                    &name,
                    attributes,
                    &[
                        "ignore_missing",
                        "if_selinux_enabled",
                        "selinux_root_relative",
                    ],
                )
                .map_err(err)?;
                let kind = Kind::Include {
                    ignore_missing: yes_no(values[0], "ignore_missing").map_err(err)?,
                    if_selinux_enabled: yes_no(values[1], "if_selinux_enabled").map_err(err)?,
                    selinux_root_relative: yes_no(values[2], "selinux_root_relative")
                        .map_err(err)?,
                };
                self.push(kind, name, position);
                return Ok(());
            }
            "policy" => {
                self.start_policy(attributes, position)?;
                self.push(Kind::Policy, name, position);
                return Ok(());
            }
            "limit" => {
                let values = only_attributes(&name, attributes, &["name"]).map_err(err)?;
                let Some(limit) = values[0] else {
                    return Err(err("<limit> element must have a \"name\" attribute".into()));
                };
                let kind = Kind::Limit {
                    name: limit.to_string(),
                    value: None,
                };
                self.push(kind, name, position);
                return Ok(());
            }
            "selinux" => {
                no_attributes(&name, attributes).map_err(err)?;
                self.push(Kind::Selinux, name, position);
                return Ok(());
            }
            "apparmor" => {
                let values = only_attributes(&name, attributes, &["mode"]).map_err(err)?;
                let mode = match values[0] {
                    None => None,
                    Some("enabled") => Some(AppArmorMode::Enabled),
                    Some("disabled") => Some(AppArmorMode::Disabled),
                    Some("required") => Some(AppArmorMode::Required),
                    Some(other) => {
                        return Err(err(format!(
                            "Mode attribute on <apparmor> must have value \"required\", \
                             \"enabled\" or \"disabled\", not \"{other}\""
                        )));
                    }
                };
                if mode.is_some() {
                    self.config.apparmor = mode;
                }
            }
            _ => {
                return Err(err(format!(
                    "Element <{name}> not allowed inside <busconfig> in configuration file"
                )));
            }
        }
        self.push(Kind::Empty, name, position);
        Ok(())
    }

    fn start_policy(
        &mut self,
        attributes: &[(String, String)],
        position: Position,
    ) -> Result<(), LoadError> {
        let err = |message: String| self.error_at(Some(position), message);
        let values = only_attributes(
            "policy",
            attributes,
            &["context", "user", "group", "at_console"],
        )
        .map_err(err)?;
        if values.iter().filter(|v| v.is_some()).count() != 1 {
            return Err(err("<policy> element must have exactly one of \
                            (context|user|group|at_console) attributes"
                .into()));
        }
        let context = match (values[0], values[1], values[2], values[3]) {
            (Some("default"), ..) => PolicyContext::Default,
            (Some("mandatory"), ..) => PolicyContext::Mandatory,
            (Some(other), ..) => {
                return Err(err(format!(
                    "context attribute on <policy> must have the value \"default\" or \
                     \"mandatory\", not \"{other}\""
                )));
            }
            (_, Some(user), ..) => {
                if lookup_user(user).is_none() {
                    self.warn(
                        Some(position.line),
                        format!("Unknown username \"{user}\" in message bus configuration file"),
                    );
                }
                PolicyContext::User(user.to_string())
            }
            (_, _, Some(group), _) => {
                if lookup_group(group).is_none() {
                    self.warn(
                        Some(position.line),
                        format!("Unknown group \"{group}\" in message bus configuration file"),
                    );
                }
                PolicyContext::Group(group.to_string())
            }
            (.., Some("true")) => PolicyContext::AtConsole(true),
            (.., Some("false")) => PolicyContext::AtConsole(false),
            (.., Some(other)) => {
                return Err(err(format!(
                    "Unknown value \"{other}\" for at_console in message bus configuration file"
                )));
            }
            (None, None, None, None) => unreachable!("exactly one attribute is present"),
        };
        let origin = self.origin(position);
        self.config.policies.push(PolicySection {
            context,
            rules: Vec::new(),
            origin,
        });
        Ok(())
    }

    fn append_rule(
        &mut self,
        element: &str,
        attributes: &[(String, String)],
        allow: bool,
        position: Position,
    ) -> Result<(), LoadError> {
        let kind = parse_rule(element, attributes, allow)
            .map_err(|message| self.error_at(Some(position), message))?;
        // Connection rules naming unknown users or groups are dropped (with a warning) before
        // dbus-daemon looks at the section they are in.
        let resolves = match &kind {
            RuleKind::User(user) if user != "*" => {
                let known = lookup_user(user).is_some();
                if !known {
                    self.warn(
                        Some(position.line),
                        format!("Unknown username \"{user}\" on element <{element}>"),
                    );
                }
                known
            }
            RuleKind::Group(group) if group != "*" => {
                let known = lookup_group(group).is_some();
                if !known {
                    self.warn(
                        Some(position.line),
                        format!("Unknown group \"{group}\" on element <{element}>"),
                    );
                }
                known
            }
            _ => true,
        };
        let section = self
            .config
            .policies
            .last()
            .expect("a <policy> element is open");
        if resolves && !kind.is_per_connection() {
            let per = match &section.context {
                PolicyContext::User(user) if lookup_user(user).is_some() => Some("user"),
                PolicyContext::Group(group) if lookup_group(group).is_some() => Some("group"),
                _ => None,
            };
            if let Some(per) = per {
                return Err(self.error_at(
                    Some(position),
                    format!(
                        "<{element}> rule cannot be per-{per} because it has bus-global semantics"
                    ),
                ));
            }
        }
        let origin = self.origin(position);
        let section = self
            .config
            .policies
            .last_mut()
            .expect("a <policy> element is open");
        section.rules.push(Rule {
            allow,
            kind,
            origin,
        });
        Ok(())
    }

    /// Character data between two tags, handed to the open element as dbus-daemon does:
    /// verbatim (not trimmed), once the next tag arrives.
    fn flush_content(&mut self) -> Result<(), LoadError> {
        if self.content.is_empty() {
            return Ok(());
        }
        let content = std::mem::take(&mut self.content);
        let Some(frame) = self.stack.last_mut() else {
            return Err(self.error_at(
                None,
                "Text content outside of any XML element in configuration file",
            ));
        };
        frame.had_content = true;
        match &mut frame.kind {
            Kind::Busconfig | Kind::Empty | Kind::Policy | Kind::Selinux => {
                if is_white(&content) {
                    // Only elements with a value count as having content.
                    frame.had_content = false;
                    return Ok(());
                }
                let name = frame.name.clone();
                Err(self.error(format!(
                    "No text content expected inside XML element {name} in configuration file"
                )))
            }
            Kind::Limit { name, value } => match parse_c_long(&content) {
                Some(v) => {
                    *value = Some(v);
                    Ok(())
                }
                None => {
                    let name = name.clone();
                    Err(self.error(format!(
                        "<limit name=\"{name}\"> element has invalid value (could not parse as \
                         integer)"
                    )))
                }
            },
            Kind::Include {
                ignore_missing,
                if_selinux_enabled,
                selinux_root_relative,
            } => {
                let (ignore_missing, if_selinux_enabled, selinux_root_relative) =
                    (*ignore_missing, *if_selinux_enabled, *selinux_root_relative);
                if if_selinux_enabled && !selinux_enabled() {
                    return Ok(());
                }
                let path = if selinux_root_relative {
                    let root = selinux_policy_root();
                    PathBuf::from(format!("{}/{content}", root.trim_end_matches('/')))
                } else {
                    self.full_path(&content)
                };
                self.include(&path, ignore_missing)
            }
            Kind::Content(kind) => {
                let kind = *kind;
                self.set_value(kind, content)
            }
        }
    }

    fn set_value(&mut self, kind: ContentKind, content: String) -> Result<(), LoadError> {
        match kind {
            ContentKind::User => self.config.user = Some(content),
            ContentKind::Type => self.config.bus_type = Some(content),
            ContentKind::Listen => self.config.listen.push(content),
            ContentKind::Auth => self.config.auth.push(content),
            ContentKind::Pidfile => self.config.pidfile = Some(PathBuf::from(content)),
            ContentKind::Log => self.config.log = Some(content),
            ContentKind::Servicehelper => {
                self.config.servicehelper = Some(self.full_path(&content));
            }
            ContentKind::Servicedir => {
                let dir = ServiceDir::plain(self.full_path(&content));
                push_service_dir(&mut self.config.servicedirs, dir);
            }
            ContentKind::Includedir => {
                let dir = self.full_path(&content);
                self.include_dir(&dir)?;
            }
        }
        Ok(())
    }

    fn end_element(&mut self, name: &str) -> Result<(), LoadError> {
        let frame = self
            .stack
            .last()
            .expect("the XML layer matches ends to starts");
        debug_assert_eq!(frame.name, name);
        let needs_content = matches!(
            frame.kind,
            Kind::Content(_) | Kind::Include { .. } | Kind::Limit { .. }
        );
        if needs_content && !frame.had_content {
            return Err(self.error(format!(
                "XML element <{name}> was expected to have content inside it"
            )));
        }
        if let Kind::Limit {
            name: limit,
            value: Some(value),
        } = &frame.kind
        {
            let result = self.config.limits.set(limit, *value);
            result.map_err(|message| self.error(message))?;
        }
        self.stack.pop();
        Ok(())
    }

    /// `<include>`: read the file, and merge it in.
    fn include(&mut self, path: &Path, ignore_missing: bool) -> Result<(), LoadError> {
        let canonical = canonical(path);
        if self.includes.contains(&canonical) {
            return Err(self.error(format!("Circular inclusion of file '{}'", path.display())));
        }
        let text = match read(path) {
            Ok(text) => text,
            Err(e) if e.file_not_found && ignore_missing => return Ok(()),
            // The file could not be read: say where it was included from.
            Err(e) => {
                return Err(LoadError {
                    file_not_found: e.file_not_found,
                    ..self.error(e.error.message)
                });
            }
        };
        self.includes.push(canonical);
        let limits = self.config.limits.clone();
        let included = parse(&text, path, limits, self.includes);
        self.includes.pop();
        match included {
            Ok(included) => {
                merge_included(&mut self.config, included);
                Ok(())
            }
            Err(e) if e.file_not_found && ignore_missing => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `<includedir>`: every `*.conf` in the directory, in name order. A missing directory is
    /// fine; a file that fails to load is skipped with a warning, as dbus-daemon does.
    ///
    /// dbus-daemon 1.14 reads the directory in readdir order, which depends on the filesystem;
    /// telbus sorts by name (as dbus-broker does) so that the result is reproducible.
    fn include_dir(&mut self, dir: &Path) -> Result<(), LoadError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(self.error(format!(
                    "Failed to read directory \"{}\": {e}",
                    dir.display()
                )));
            }
        };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".conf"))
            .collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            if let Err(e) = self.include(&path, true) {
                let line = self.stack.last().map(|f| f.position.line);
                self.warn(
                    line,
                    format!(
                        "Encountered error '{}' while parsing '{}'; the file was skipped",
                        e.error,
                        path.display()
                    ),
                );
            }
        }
        self.config.conf_dirs.push(dir.to_path_buf());
        Ok(())
    }
}

/// Merge an included file's configuration into the including file's, as dbus-daemon does
/// (limits are the caller's business: they were inherited and are copied back).
fn merge_included(config: &mut BusConfig, included: BusConfig) {
    let BusConfig {
        bus_type,
        user,
        fork,
        keep_umask,
        syslog: _,
        allow_anonymous,
        listen,
        pidfile,
        auth,
        servicedirs,
        servicehelper,
        limits,
        policies,
        apparmor,
        selinux_associations,
        files,
        conf_dirs,
        warnings,
        log,
    } = included;
    config.policies.extend(policies);
    for (name, context) in selinux_associations {
        match config
            .selinux_associations
            .iter_mut()
            .find(|(existing, _)| *existing == name)
        {
            Some(existing) => existing.1 = context,
            None => config.selinux_associations.push((name, context)),
        }
    }
    if user.is_some() {
        config.user = user;
    }
    if bus_type.is_some() {
        config.bus_type = bus_type;
    }
    config.fork |= fork;
    config.keep_umask |= keep_umask;
    config.allow_anonymous |= allow_anonymous;
    if pidfile.is_some() {
        config.pidfile = pidfile;
    }
    if log.is_some() {
        config.log = log;
    }
    if servicehelper.is_some() {
        config.servicehelper = servicehelper;
    }
    config.listen.extend(listen);
    config.auth.extend(auth);
    for dir in servicedirs {
        push_service_dir(&mut config.servicedirs, dir);
    }
    config.conf_dirs.extend(conf_dirs);
    if apparmor.is_some() {
        config.apparmor = apparmor;
    }
    config.limits = limits;
    config.files.extend(files);
    config.warnings.extend(warnings);
}

/// Whether SELinux is on (selinuxfs mounted), which `if_selinux_enabled` tests.
pub fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists() || Path::new("/selinux/enforce").exists()
}

/// The SELinux policy root that `selinux_root_relative` includes are relative to, found as
/// libselinux finds it: `/etc/selinux/` and SELINUXTYPE from /etc/selinux/config ("targeted"
/// when unset).
pub fn selinux_policy_root() -> String {
    let config = std::fs::read_to_string("/etc/selinux/config").unwrap_or_default();
    let policy_type = config
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix("SELINUXTYPE="))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or("targeted");
    format!("/etc/selinux/{policy_type}")
}
