//! dbus's own configuration test data (package dbus-tests): every invalid file is refused,
//! every valid one accepted, and the equivalent pairs load alike.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use telbus_busconfig::{BusConfig, load};

const DATA: &str = "/usr/lib/dbus-1.0/installed-tests/dbus/data";

fn data_dir(sub: &str) -> Option<PathBuf> {
    let dir = Path::new(DATA).join(sub);
    if dir.is_dir() {
        Some(dir)
    } else {
        println!(
            "note: skipped, {} is not installed (package dbus-tests)",
            dir.display()
        );
        None
    }
}

fn conf_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_invalid_file_is_refused_with_a_place_and_a_reason() {
    let Some(dir) = data_dir("invalid-config-files") else {
        return;
    };
    let files = conf_files(&dir);
    assert!(files.len() >= 30, "{} files", files.len());
    for file in files {
        let e = load(&file).expect_err(&format!("{} must be refused", file.display()));
        // The error is in the file, or in one it includes (the circular ones).
        assert_eq!(e.file.parent(), file.parent(), "{e}");
        assert!(e.line.is_some(), "no line in {e}");
        assert!(!e.message.is_empty());
    }
}

#[test]
fn invalid_files_are_refused_for_the_right_reason() {
    let Some(dir) = data_dir("invalid-config-files") else {
        return;
    };
    let expect = [
        (
            "bad-element.conf",
            "Element <bees> not allowed inside <busconfig>",
        ),
        ("bad-limit.conf", "could not parse as integer"),
        ("circular-1.conf", "Circular inclusion"),
        ("circular-2.conf", "Circular inclusion"),
        ("impossible-send.conf", "cannot match anything"),
        ("ludicrous-limit.conf", "value is too large"),
        ("negative-limit.conf", "must be a positive number"),
        ("not-well-formed.conf", "not well-formed"),
        ("policy-contradiction.conf", "exactly one of"),
        ("policy-member-no-path.conf", "if you specify a member"),
        ("policy-mixed.conf", "cannot be combined"),
        (
            "send-and-receive.conf",
            "send and receive attributes cannot be combined",
        ),
        ("truncated-file.conf", "not well-formed"),
        (
            "unknown-limit.conf",
            "There is no limit called \"max_bees\"",
        ),
    ];
    for (name, reason) in expect {
        let e = load(&dir.join(name)).unwrap_err();
        assert!(e.message.contains(reason), "{name}: {e}");
    }
}

#[test]
fn every_valid_file_is_accepted() {
    for sub in ["valid-config-files", "valid-config-files-system"] {
        let Some(dir) = data_dir(sub) else {
            return;
        };
        let files = conf_files(&dir);
        assert!(files.len() >= 5);
        for file in files {
            if let Err(e) = load(&file) {
                panic!("{} must load: {e}", file.display());
            }
        }
    }
}

/// The configuration without what necessarily differs between equivalent files: which files
/// were read and where each rule was written.
fn comparable(config: &BusConfig) -> BusConfig {
    let mut config = config.clone();
    config.files.clear();
    let nowhere: Arc<Path> = Arc::from(Path::new(""));
    for section in &mut config.policies {
        section.origin.file = nowhere.clone();
        section.origin.line = 0;
        for rule in &mut section.rules {
            rule.origin.file = nowhere.clone();
            rule.origin.line = 0;
        }
    }
    config
}

#[test]
fn equivalent_files_load_alike() {
    let Some(dir) = data_dir("equiv-config-files") else {
        return;
    };
    let mut groups = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let files = conf_files(&entry.path());
        assert!(files.len() >= 2, "{}", entry.path().display());
        let configs: Vec<BusConfig> = files
            .iter()
            .map(|f| load(f).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        for pair in configs.windows(2) {
            assert_eq!(
                comparable(&pair[0]),
                comparable(&pair[1]),
                "{}",
                entry.path().display()
            );
        }
        groups += 1;
    }
    assert!(groups >= 2);
}

#[test]
fn entities_are_resolved() {
    let Some(dir) = data_dir("valid-config-files") else {
        return;
    };
    let config = load(&dir.join("entities.conf")).unwrap();
    assert_eq!(config.listen[0], "unix:path=/foo/<bar>");
    assert!(
        config
            .servicedirs
            .iter()
            .any(|d| d.path == Path::new("/usr/&share/foo"))
    );
    assert_eq!(config.conf_dirs, vec![dir.join("basic.d")]);
}

#[test]
fn basic_conf_reads_as_written() {
    let Some(dir) = data_dir("valid-config-files") else {
        return;
    };
    let config = load(&dir.join("basic.conf")).unwrap();
    assert_eq!(config.user.as_deref(), Some("mybususer"));
    assert_eq!(config.listen[..2], ["unix:path=/foo/bar", "tcp:port=1234"]);
    assert_eq!(config.limits.max_incoming_bytes, 5000);
    assert_eq!(config.limits.max_message_size, 300);
    assert_eq!(config.limits.auth_timeout.as_millis(), 6000);
    assert_eq!(config.limits.max_names_per_connection, 256);
    assert_eq!(
        config.selinux_associations,
        [
            (
                "org.freedesktop.FrobationaryMeasures".to_string(),
                "my_selinux_context_t".to_string()
            ),
            (
                "org.freedesktop.BlahBlahBlah".to_string(),
                "foo_t".to_string()
            ),
        ]
    );
    // basic.d/basic.conf is included, and repeats the listen addresses.
    assert!(config.files.contains(&dir.join("basic.d/basic.conf")));
    assert_eq!(config.listen.len(), 2 + 2 * (config.files.len() - 1));
}
