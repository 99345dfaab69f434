//! `<standard_session_servicedirs/>` and `<standard_system_servicedirs/>`, expanded as
//! dbus-daemon 1.14 expands them (Debian's build: its data directory is /usr/share).

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::model::ServiceDir;

/// dbus-daemon's DBUS_DATADIR.
const DATADIR: &str = "/usr/share";

/// Split a `:`-separated list as dbus-daemon does: blanks trimmed, empty entries dropped, and
/// `suffix` appended to each.
fn split_paths(list: &str, suffix: &str) -> Vec<PathBuf> {
    list.split(':')
        .map(str::trim)
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(suffix))
        .collect()
}

/// `<standard_system_servicedirs/>`: /usr/local/share, /usr/share, then /lib, each with
/// `dbus-1/system-services` (dbus-daemon 1.14 has no /etc or /run entries; 1.16 added them).
pub fn system_service_dirs() -> Vec<ServiceDir> {
    let list = format!("/usr/local/share:/usr/share:{DATADIR}:/lib");
    let mut dirs = Vec::new();
    for path in split_paths(&list, "dbus-1/system-services") {
        crate::model::push_service_dir(
            &mut dirs,
            ServiceDir {
                path,
                system: true,
                watch: true,
                strict_naming: false,
            },
        );
    }
    dirs
}

/// `<standard_session_servicedirs/>`, in search order:
/// 1. `$XDG_RUNTIME_DIR/dbus-1/services`, for transient services: created if missing, used only
///    if it and XDG_RUNTIME_DIR are ours and nobody else can write them, not watched, and its
///    files must be named after their bus names;
/// 2. `$XDG_DATA_HOME/dbus-1/services` (default: `~/.local/share`, the home directory from the
///    user database);
/// 3. each of `$XDG_DATA_DIRS` (default `/usr/local/share:/usr/share`), then `/usr/share`.
///
/// Returns the directories and, when the transient directory cannot be used, why.
pub fn session_service_dirs() -> (Vec<ServiceDir>, Option<String>) {
    let mut dirs = Vec::new();
    let mut problem = None;
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
        match transient_dir(Path::new(&runtime)) {
            Ok(path) => dirs.push(ServiceDir {
                path,
                system: false,
                watch: false,
                strict_naming: true,
            }),
            Err(e) => problem = Some(format!("Unable to set up transient service directory: {e}")),
        }
    }
    let data_home = match std::env::var("XDG_DATA_HOME") {
        Ok(dir) => dir,
        Err(_) => {
            // SAFETY: getuid has no preconditions.
            let uid = unsafe { libc::getuid() };
            let home = crate::users::home_dir(uid)
                .or_else(|| std::env::var("HOME").ok())
                .unwrap_or_default();
            format!("{home}/.local/share")
        }
    };
    let data_dirs =
        std::env::var("XDG_DATA_DIRS").unwrap_or_else(|_| "/usr/local/share:/usr/share".into());
    let list = format!("{data_home}:{data_dirs}:{DATADIR}");
    for path in split_paths(&list, "dbus-1/services") {
        crate::model::push_service_dir(&mut dirs, ServiceDir::plain(path));
    }
    (dirs, problem)
}

/// `$XDG_RUNTIME_DIR/dbus-1/services`, created as dbus-daemon creates it, if it is safe to use.
fn transient_dir(runtime: &Path) -> Result<PathBuf, String> {
    let dbus1 = runtime.join("dbus-1");
    let services = dbus1.join("services");
    check_owned(runtime, "XDG_RUNTIME_DIR", false)?;
    check_owned(&dbus1, "XDG_RUNTIME_DIR subdirectory", true)?;
    check_owned(&services, "XDG_RUNTIME_DIR subdirectory", true)?;
    Ok(services)
}

/// The directory exists (made, 0700, if `create`), is ours, and only we may write to it.
fn check_owned(dir: &Path, label: &str, create: bool) -> Result<(), String> {
    if create {
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("{label} \"{}\" not available: {e}", dir.display())),
        }
    }
    let meta = std::fs::metadata(dir)
        .map_err(|e| format!("{label} \"{}\" not available: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{label} \"{}\" is not a directory", dir.display()));
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(format!(
            "{label} \"{}\" is owned by uid {}, not our uid {euid}",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{label} \"{}\" can be written by others (mode 0{:o})",
            dir.display(),
            meta.mode()
        ));
    }
    Ok(())
}
