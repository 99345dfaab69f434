//! `<standard_session_servicedirs/>` and `<standard_system_servicedirs/>`. These read the
//! environment, so they are one test in a test binary of their own.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use telbus_busconfig::{ServiceDir, load_str};

fn dirs(element: &str) -> (Vec<ServiceDir>, Vec<String>) {
    let c = load_str(
        &format!("<busconfig><listen>unix:tmpdir=/tmp</listen>{element}</busconfig>"),
        Path::new("/t/dirs.conf"),
    )
    .unwrap();
    (
        c.servicedirs,
        c.warnings.iter().map(|w| w.message.clone()).collect(),
    )
}

fn paths(dirs: &[ServiceDir]) -> Vec<PathBuf> {
    dirs.iter().map(|d| d.path.clone()).collect()
}

fn set(var: &str, value: Option<&str>) {
    // SAFETY: this test binary has a single test, so no other thread reads the environment.
    unsafe {
        match value {
            Some(v) => std::env::set_var(var, v),
            None => std::env::remove_var(var),
        }
    }
}

#[test]
fn standard_service_directories() {
    // The system bus: fixed, in dbus-daemon 1.14's order, /usr/share only once.
    let (system, _) = dirs("<standard_system_servicedirs/>");
    assert_eq!(
        paths(&system),
        [
            PathBuf::from("/usr/local/share/dbus-1/system-services"),
            PathBuf::from("/usr/share/dbus-1/system-services"),
            PathBuf::from("/lib/dbus-1/system-services"),
        ]
    );
    assert!(
        system
            .iter()
            .all(|d| d.system && d.watch && !d.strict_naming)
    );

    // The session bus, from the XDG variables.
    let runtime = tempfile::tempdir().unwrap();
    std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    set("XDG_RUNTIME_DIR", Some(runtime.path().to_str().unwrap()));
    set("XDG_DATA_HOME", Some("/home/u/.data"));
    set("XDG_DATA_DIRS", Some("/opt/share: /usr/share ::/x/"));
    let (session, warnings) = dirs("<standard_session_servicedirs/>");
    assert!(warnings.is_empty(), "{warnings:?}");
    let transient = runtime.path().join("dbus-1/services");
    assert_eq!(
        paths(&session),
        [
            transient.clone(),
            PathBuf::from("/home/u/.data/dbus-1/services"),
            PathBuf::from("/opt/share/dbus-1/services"),
            PathBuf::from("/usr/share/dbus-1/services"),
            PathBuf::from("/x/dbus-1/services"),
        ]
    );
    assert!(transient.is_dir(), "created as dbus-daemon creates it");
    assert!(!session[0].watch && session[0].strict_naming);
    assert!(
        session[1..]
            .iter()
            .all(|d| d.watch && !d.strict_naming && !d.system)
    );

    // An explicit <servicedir> of the transient directory makes it watched and lax.
    let (both, _) = dirs(&format!(
        "<standard_session_servicedirs/><servicedir>{}</servicedir>",
        transient.display()
    ));
    assert!(both[0].watch && !both[0].strict_naming);

    // A runtime directory others may write to is not used, with a warning.
    std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (session, warnings) = dirs("<standard_session_servicedirs/>");
    assert_eq!(
        session[0].path,
        PathBuf::from("/home/u/.data/dbus-1/services")
    );
    assert!(
        warnings[0].contains("can be written by others"),
        "{warnings:?}"
    );

    // Defaults: the home directory from the user database, /usr/local/share:/usr/share.
    set("XDG_RUNTIME_DIR", None);
    set("XDG_DATA_HOME", None);
    set("XDG_DATA_DIRS", None);
    let (session, _) = dirs("<standard_session_servicedirs/>");
    assert!(
        session[0].path.ends_with(".local/share/dbus-1/services"),
        "{:?}",
        session[0]
    );
    assert_eq!(
        paths(&session)[1..],
        [
            PathBuf::from("/usr/local/share/dbus-1/services"),
            PathBuf::from("/usr/share/dbus-1/services"),
        ]
    );
}
