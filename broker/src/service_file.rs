//! `.service` files: what the bus reads from its service directories to know which program
//! starts a well-known name. In the library so that the fuzzer reaches the parser.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What a `.service` file says.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceEntry {
    pub name: String,
    pub exec: Option<String>,
    pub user: Option<String>,
    pub systemd_service: Option<String>,
    pub apparmor_label: Option<String>,
    pub file: PathBuf,
}

/// Parse a `.service` file: the `[D-BUS Service]` group of a desktop-entry style key file.
///
/// Written by hand: the format is a small subset of the desktop entry specification (groups,
/// `key=value`, `#` comments), smaller than any crate that parses the whole of it.
pub fn parse_service_file(text: &str, file: &Path) -> Result<ServiceEntry, String> {
    let mut group = None;
    let mut keys: HashMap<String, String> = HashMap::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            let name = name
                .strip_suffix(']')
                .ok_or_else(|| format!("{}:{}: unterminated group name", file.display(), n + 1))?;
            group = Some(name.to_string());
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "{}:{}: expected key=value, found {line:?}",
                file.display(),
                n + 1
            ));
        };
        if group.as_deref() == Some("D-BUS Service") {
            let key = key.trim();
            if keys.contains_key(key) {
                return Err(format!("{}:{}: duplicate key {key}", file.display(), n + 1));
            }
            keys.insert(key.to_string(), value.trim().to_string());
        }
    }
    let name = keys
        .remove("Name")
        .ok_or_else(|| format!("{}: no Name in [D-BUS Service]", file.display()))?;
    if zbus::names::WellKnownName::try_from(name.as_str()).is_err() {
        return Err(format!(
            "{}: Name {name:?} is not a valid bus name",
            file.display()
        ));
    }
    let exec = keys.remove("Exec");
    let systemd_service = keys.remove("SystemdService");
    if exec.is_none() && systemd_service.is_none() {
        return Err(format!(
            "{}: neither Exec nor SystemdService",
            file.display()
        ));
    }
    Ok(ServiceEntry {
        name,
        exec,
        user: keys.remove("User"),
        systemd_service,
        apparmor_label: keys.remove("AssumedAppArmorLabel"),
        file: file.to_path_buf(),
    })
}
