//! dbus-daemon's XML bus configuration, read exactly as dbus-daemon 1.14 reads it.
//!
//! ```no_run
//! use std::path::Path;
//! use telbus_busconfig::{BusKind, default_config_path, embedded_default, load, load_str};
//!
//! let config = match default_config_path(BusKind::System) {
//!     Some(path) => load(&path),
//!     None => load_str(embedded_default(BusKind::System), Path::new("<embedded system.conf>")),
//! };
//! match config {
//!     Ok(config) => println!("listening on {:?}", config.listen),
//!     Err(e) => eprintln!("{e}"), // "/etc/foo.conf:12:5: Invalid combination of attributes…"
//! }
//! ```
//!
//! # API
//!
//! - [`load`]`(path) -> Result<`[`BusConfig`]`, `[`ConfigError`]`>`: a file and everything it
//!   includes. [`load_str`]`(text, path)`: the same for text in memory (`path` anchors
//!   relative includes and names the text in errors).
//! - [`BusConfig`]: the merged result; [`Limits`] with dbus-daemon's defaults;
//!   [`ServiceDir`]s in search order; [`PolicySection`]s with their [`Rule`]s, each with its
//!   [`Origin`] (file and line); [`ConfigWarning`]s for what dbus-daemon would only warn about.
//! - [`ConfigError`]: file, line, column and message; displays as `file:line:col: message`.
//! - [`default_config_path`]`(`[`BusKind`]`)` and [`embedded_default`]`(BusKind)`: which
//!   configuration to use when none is named.
//! - [`lookup_user`], [`lookup_group`]: how configurations name users and groups (telbus-policy
//!   resolves its rules with these).
//!
//! # What is checked
//!
//! Everything dbus-daemon checks, with its wording: unknown elements and attributes, elements
//! in the wrong place, text where none belongs, missing text where some is needed, the
//! attribute combinations `<allow>`/`<deny>` refuse, bad `yes`/`no` and `true`/`false`
//! values, unknown, negative, unparseable and too-large limits, circular includes, connection
//! rules (`user`, `group`) in per-user or per-group sections, and a top-level file without a
//! `<listen>`. XML that is not well-formed is refused.
//!
//! What dbus-daemon merely warns about is accepted and listed in [`BusConfig::warnings`]:
//! unknown users and groups (their sections and rules are kept as written; telbus-policy
//! ignores them, as dbus-daemon does), files in an `<includedir>` that fail to load (skipped),
//! an unusable transient service directory.
//!
//! # Merging
//!
//! An included file starts from the including file's limits and, when it loads, is merged into
//! it: `<policy>` sections, `<listen>`, `<auth>`, service directories (without duplicates) and
//! include directories are appended; `<user>`, `<type>`, `<pidfile>`, `<servicehelper>` replace
//! earlier values; `<fork>`, `<keep_umask>`, `<allow_anonymous>` add up; the limits it set
//! apply from then on. `<syslog/>` counts only in the top-level file, as in dbus-daemon.
//! Relative paths (`<include>`, `<includedir>`, `<servicedir>`, `<servicehelper>`) are
//! relative to the directory of the file that names them; `<pidfile>` is kept as written.
//! `<includedir>` reads the directory's `*.conf` files in name order (dbus-daemon 1.14 uses
//! readdir order; telbus sorts, like dbus-broker, to be reproducible). A missing `<include>`
//! is an error unless `ignore_missing="yes"`; a missing `<includedir>` is not.
//!
//! Text is used verbatim, as dbus-daemon uses it: `<listen> unix:path=/x </listen>` keeps its
//! spaces.

mod defaults;
mod limits;
mod loader;
mod model;
mod rules;
mod servicedirs;
mod users;
mod xml;

use std::path::Path;

pub use defaults::{BusKind, default_config_path, embedded_default};
pub use limits::{DEFAULT_MESSAGE_UNIX_FDS, Limits, MAXIMUM_MESSAGE_UNIX_FDS, parse_c_long};
pub use loader::{selinux_enabled, selinux_policy_root};
pub use model::{AppArmorMode, BusConfig, ConfigError, ConfigWarning, Origin, ServiceDir};
pub use rules::{MessageKind, PolicyContext, PolicySection, ReceiveRule, Rule, RuleKind, SendRule};
pub use servicedirs::{session_service_dirs, system_service_dirs};
pub use users::{group_name, lookup_group, lookup_user, user_name};

/// Load a configuration file and everything it includes.
pub fn load(path: &Path) -> Result<BusConfig, ConfigError> {
    loader::load_file(path)
}

/// Load configuration text. `path` stands for the text: relative includes are resolved
/// against its directory, and errors name it.
pub fn load_str(text: &str, path: &Path) -> Result<BusConfig, ConfigError> {
    loader::load_text(text, path)
}
