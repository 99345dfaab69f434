//! The loaded configuration: plain data, includes merged, nothing left to interpret except the
//! policy rules (telbus-policy compiles those).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::limits::Limits;
use crate::rules::PolicySection;

/// Where something was written: a file and a 1-based line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub file: Arc<Path>,
    pub line: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A configuration that cannot be used: the file, where in it (1-based line and column, when
/// known) and dbus-daemon's description of the problem.
///
/// Displays as `file:line:column: message` (or `file:line: message`, or `file: message`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Something dbus-daemon accepts but warns about: an unknown user or group (its rules are
/// ignored), a file of an `<includedir>` that failed to load (it is skipped), a transient
/// service directory that cannot be used. The broker logs these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    pub file: PathBuf,
    pub line: Option<u32>,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// A directory searched for `.service` files, in search order (earlier wins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceDir {
    pub path: PathBuf,
    /// It came from `<standard_system_servicedirs/>`.
    pub system: bool,
    /// dbus-daemon watches it for changes (all but the transient session directory).
    pub watch: bool,
    /// A service file there must be named after its bus name (`org.x.Y.service`); only the
    /// transient session directory (`$XDG_RUNTIME_DIR/dbus-1/services`) requires this.
    pub strict_naming: bool,
}

impl ServiceDir {
    /// A `<servicedir>`: watched, names not enforced.
    pub fn plain(path: PathBuf) -> ServiceDir {
        ServiceDir {
            path,
            system: false,
            watch: true,
            strict_naming: false,
        }
    }
}

/// Add `dir` unless its path is already listed; a directory listed twice keeps its first place
/// and is watched (or lax about names) if either listing says so, as dbus-daemon does.
pub(crate) fn push_service_dir(dirs: &mut Vec<ServiceDir>, dir: ServiceDir) {
    match dirs.iter_mut().find(|d| d.path == dir.path) {
        Some(existing) => {
            existing.watch |= dir.watch;
            existing.strict_naming &= dir.strict_naming;
            existing.system |= dir.system;
        }
        None => dirs.push(dir),
    }
}

/// `<apparmor mode="…"/>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppArmorMode {
    Enabled,
    Disabled,
    Required,
}

/// A whole configuration, includes merged with dbus-daemon's rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BusConfig {
    /// `<type>`: "session", "system" or anything else the file says.
    pub bus_type: Option<String>,
    /// `<user>`: the user to run as (a name or a number, as written).
    pub user: Option<String>,
    pub fork: bool,
    pub keep_umask: bool,
    /// `<syslog/>` in the top-level file (dbus-daemon ignores it in included files).
    pub syslog: bool,
    pub allow_anonymous: bool,
    /// `<listen>` addresses, in order.
    pub listen: Vec<String>,
    /// `<pidfile>`, as written (dbus-daemon does not resolve it against the file's directory).
    pub pidfile: Option<PathBuf>,
    /// `<auth>` mechanisms, in order; empty means all.
    pub auth: Vec<String>,
    /// Service directories in search order, without duplicates.
    pub servicedirs: Vec<ServiceDir>,
    /// `<servicehelper>`, resolved against the file's directory.
    pub servicehelper: Option<PathBuf>,
    pub limits: Limits,
    /// Every `<policy>` section, in the order dbus-daemon merges them.
    pub policies: Vec<PolicySection>,
    /// The last `<apparmor mode>` given, if any.
    pub apparmor: Option<AppArmorMode>,
    /// `<selinux><associate own="name" context="context"/></selinux>`; a later association of
    /// the same name replaces the earlier one.
    pub selinux_associations: Vec<(String, String)>,
    /// Every file read and merged, in the order read: for logs and for reloading.
    pub files: Vec<PathBuf>,
    /// The `<includedir>` directories that exist: dbus-daemon watches them to reload.
    pub conf_dirs: Vec<PathBuf>,
    /// What dbus-daemon would have warned about while loading.
    pub warnings: Vec<ConfigWarning>,
    /// `<log>`, a telbus extension (dbus-daemon refuses it): telbusd's log filter, a level and
    /// per-module levels such as `info,telbusd::activation=debug`; the last one read wins. The
    /// TELBUS_LOG environment variable, when set, overrides it.
    pub log: Option<String>,
}
