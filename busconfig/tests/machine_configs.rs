//! The machine's own session.conf and system.conf load, with every file they include, and
//! mean what they say; the embedded defaults load too.

use std::path::{Path, PathBuf};

use telbus_busconfig::{
    BusKind, PolicyContext, RuleKind, default_config_path, embedded_default, load, load_str,
};

/// The *.conf files of the directories system.conf/session.conf include.
fn conf_files_in(dirs: &[&str]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.to_string_lossy().ends_with(".conf"))
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

#[test]
fn the_system_bus_configuration_loads_with_all_of_system_d() {
    let Some(path) = default_config_path(BusKind::System) else {
        println!("note: skipped, no system.conf on this machine");
        return;
    };
    let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.bus_type.as_deref(), Some("system"));
    assert!(!config.listen.is_empty());
    assert!(config.auth.contains(&"EXTERNAL".to_string()));
    assert!(
        config
            .servicedirs
            .iter()
            .any(|d| d.system && d.path == Path::new("/usr/share/dbus-1/system-services"))
    );
    // The default context denies owning and calling, and lets everyone connect.
    let default = config
        .policies
        .iter()
        .find(|s| s.context == PolicyContext::Default)
        .unwrap();
    assert!(default.rules.iter().any(|r| !r.allow
        && r.kind
            == RuleKind::Own {
                name: "*".into(),
                prefix: false
            }));
    assert!(
        default
            .rules
            .iter()
            .any(|r| r.allow && r.kind == RuleKind::User("*".into()))
    );
    // Every file of system.d was read, in name order, and its rules are there.
    let included = conf_files_in(&["/usr/share/dbus-1/system.d", "/etc/dbus-1/system.d"]);
    let read: Vec<&PathBuf> = config.files.iter().skip(1).collect();
    let expected: Vec<&PathBuf> = included.iter().collect();
    assert_eq!(read, expected);
    for file in &included {
        let from_file = config
            .policies
            .iter()
            .filter(|s| *s.origin.file == **file)
            .count();
        let sections = std::fs::read_to_string(file)
            .unwrap()
            .matches("<policy")
            .count();
        assert_eq!(from_file, sections, "{}", file.display());
    }
    for warning in &config.warnings {
        println!("warning: {warning}");
    }
}

#[test]
fn the_session_bus_configuration_loads() {
    let Some(path) = default_config_path(BusKind::Session) else {
        println!("note: skipped, no session.conf on this machine");
        return;
    };
    let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.bus_type.as_deref(), Some("session"));
    assert!(config.keep_umask);
    assert!(!config.listen.is_empty());
    assert!(
        config
            .servicedirs
            .iter()
            .any(|d| d.path == Path::new("/usr/share/dbus-1/services"))
    );
    // session.conf raises the limits.
    assert_eq!(config.limits.max_names_per_connection, 50000);
    assert_eq!(config.limits.max_incoming_bytes, 1_000_000_000);
    let default = &config.policies[0];
    assert_eq!(default.context, PolicyContext::Default);
    assert!(default.rules.iter().all(|r| r.allow));
}

#[test]
fn the_embedded_configurations_load_and_match_the_distributions_in_effect() {
    for kind in [BusKind::Session, BusKind::System] {
        let embedded = load_str(embedded_default(kind), Path::new("/embedded/bus.conf"))
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert!(!embedded.listen.is_empty());
        assert!(!embedded.servicedirs.is_empty());
        let Some(path) = default_config_path(kind) else {
            continue;
        };
        let distribution = load(&path).unwrap();
        assert_eq!(embedded.bus_type, distribution.bus_type);
        assert_eq!(embedded.listen, distribution.listen);
        assert_eq!(embedded.auth, distribution.auth);
        assert_eq!(embedded.servicedirs, distribution.servicedirs);
        assert_eq!(embedded.limits, distribution.limits);
        // The same rules, contexts and all (the distribution's files may add theirs).
        let rules = |c: &telbus_busconfig::BusConfig| -> Vec<(String, bool, RuleKind)> {
            c.policies
                .iter()
                .filter(|s| {
                    s.origin.file.ends_with("bus.conf") || s.origin.file == path.as_path().into()
                })
                .flat_map(|s| {
                    s.rules
                        .iter()
                        .map(move |r| (format!("{:?}", s.context), r.allow, r.kind.clone()))
                })
                .collect()
        };
        let mut mine = rules(&embedded);
        let mut theirs = rules(&distribution);
        mine.sort_by_key(|r| format!("{r:?}"));
        theirs.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(mine, theirs, "{kind:?}");
    }
}
