use super::*;

const DATA: &str = "/usr/lib/dbus-1.0/installed-tests/dbus/data";

fn data_dir(sub: &str) -> Option<PathBuf> {
    let dir = Path::new(DATA).join(sub);
    if dir.exists() {
        Some(dir)
    } else {
        eprintln!("skipped: {} is not installed (package dbus-tests)", dir.display());
        None
    }
}

fn conf_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    files
}

fn parse(text: &str) -> Result<BusConfig, ConfigError> {
    load_str(text, Path::new("/test/bus.conf"))
}

#[test]
fn every_invalid_reference_file_is_refused() {
    let Some(dir) = data_dir("invalid-config-files") else { return };
    let files = conf_files(&dir);
    assert!(files.len() >= 25);
    for file in files {
        let err = load(&file).expect_err(&format!("{} should be refused", file.display()));
        assert!(!err.message.is_empty());
    }
}

#[test]
fn every_valid_reference_file_is_accepted() {
    for sub in ["valid-config-files", "valid-config-files-system"] {
        let Some(dir) = data_dir(sub) else { return };
        for file in conf_files(&dir) {
            if let Err(e) = load(&file) {
                panic!("{} should load: {e}", file.display());
            }
        }
    }
}

#[test]
fn equivalent_reference_files_load_alike() {
    let Some(dir) = data_dir("equiv-config-files") else { return };
    for sub in std::fs::read_dir(dir).unwrap().flatten() {
        let files = conf_files(&sub.path());
        let configs: Vec<BusConfig> = files.iter().map(|f| load(f).unwrap()).collect();
        for pair in configs.windows(2) {
            let strip = |c: &BusConfig| {
                let mut c = c.clone();
                c.files.clear();
                for p in &mut c.policies {
                    p.origin.line = 0;
                    p.origin.file = Arc::from(Path::new(""));
                    for r in &mut p.rules {
                        r.origin.line = 0;
                        r.origin.file = Arc::from(Path::new(""));
                    }
                }
                c
            };
            assert_eq!(strip(&pair[0]), strip(&pair[1]), "{}", sub.path().display());
        }
    }
}

#[test]
fn the_machines_own_configurations_load() {
    for kind in [BusKind::Session, BusKind::System] {
        if let Some(path) = default_config_path(kind) {
            let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!config.listen.is_empty());
            assert!(!config.policies.is_empty());
        }
        let embedded = load_str(embedded_default(kind), Path::new("/embedded.conf")).unwrap();
        assert!(!embedded.listen.is_empty());
    }
}

#[test]
fn elements_and_limits() {
    let c = parse(
        r#"<busconfig>
  <type>session</type>
  <user>nobody</user>
  <fork/>
  <listen>unix:tmpdir=/tmp</listen>
  <listen>tcp:host=localhost,port=0</listen>
  <auth>EXTERNAL</auth>
  <pidfile>run/pid</pidfile>
  <servicedir>/srv/a</servicedir>
  <servicedir>/srv/a</servicedir>
  <allow_anonymous/>
  <limit name="max_names_per_connection">7</limit>
  <limit name="reply_timeout">5000</limit>
  <apparmor mode="disabled"/>
</busconfig>"#,
    )
    .unwrap();
    assert_eq!(c.bus_type.as_deref(), Some("session"));
    assert_eq!(c.user.as_deref(), Some("nobody"));
    assert!(c.fork && c.allow_anonymous && !c.syslog);
    assert_eq!(c.listen.len(), 2);
    assert_eq!(c.pidfile, Some(PathBuf::from("/test/run/pid")));
    assert_eq!(c.servicedirs.len(), 1, "duplicates are dropped");
    assert_eq!(c.limits.max_names_per_connection, 7);
    assert_eq!(c.limits.reply_timeout, Some(Duration::from_secs(5)));
    assert_eq!(c.limits.max_match_rules_per_connection, 512);
    assert_eq!(c.apparmor, Some(AppArmorMode::Disabled));
}

#[test]
fn errors_name_file_and_line() {
    let e = parse("<busconfig>\n  <listen>unix:tmpdir=/tmp</listen>\n  <bees/>\n</busconfig>").unwrap_err();
    assert_eq!(e.line, Some(3));
    assert_eq!(e.to_string(), "/test/bus.conf:3: Element <bees> not allowed inside <busconfig> in configuration file");
    let e = parse("<busconfig>\n<policy context=\"default\">\n<allow receive_type=\"signal\" send_destination=\"a.b\"/>\n</policy>\n</busconfig>").unwrap_err();
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("send and receive"));
    let e = parse("<busconfig><limit name=\"max_bees\">1</limit></busconfig>").unwrap_err();
    assert!(e.message.contains("max_bees"));
}

#[test]
fn includes_merge_and_circles_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("main.conf");
    std::fs::write(&main, "<busconfig><listen>unix:tmpdir=/tmp</listen><include>a.conf</include><include ignore_missing=\"yes\">missing.conf</include><includedir>d</includedir></busconfig>").unwrap();
    std::fs::write(dir.path().join("a.conf"), "<busconfig><type>system</type><limit name=\"auth_timeout\">10</limit></busconfig>").unwrap();
    std::fs::create_dir(dir.path().join("d")).unwrap();
    std::fs::write(dir.path().join("d/2.conf"), "<busconfig><policy context=\"default\"><allow own=\"b.c\"/></policy></busconfig>").unwrap();
    std::fs::write(dir.path().join("d/1.conf"), "<busconfig><policy context=\"default\"><deny own=\"a.b\"/></policy></busconfig>").unwrap();
    std::fs::write(dir.path().join("d/ignored.txt"), "not xml").unwrap();
    let c = load(&main).unwrap();
    assert_eq!(c.bus_type.as_deref(), Some("system"));
    assert_eq!(c.limits.auth_timeout, Duration::from_millis(10));
    assert_eq!(c.policies.len(), 2);
    assert_eq!(c.policies[0].rules[0].kind, RuleKind::Own { name: "a.b".into(), prefix: false });
    assert!(c.policies[0].rules[0].origin.file.ends_with("d/1.conf"));
    assert_eq!(c.files.len(), 4);

    std::fs::write(dir.path().join("x.conf"), "<busconfig><include>y.conf</include></busconfig>").unwrap();
    std::fs::write(dir.path().join("y.conf"), "<busconfig><include>x.conf</include></busconfig>").unwrap();
    let e = load(&dir.path().join("x.conf")).unwrap_err();
    assert!(e.message.contains("Circular"), "{e}");
    let e = parse("<busconfig><include>/nonexistent/file.conf</include></busconfig>").unwrap_err();
    assert!(e.message.contains("Failed to open"));
}

#[test]
fn policy_rules_keep_their_meaning() {
    let c = parse(
        r#"<busconfig>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <deny send_destination_prefix="com.example" send_type="method_call"/>
    <allow receive_sender="org.a" receive_interface="org.a.I" receive_member="M"/>
    <deny own_prefix="org.x"/>
    <allow user="*"/>
  </policy>
  <policy user="root"><allow own="*"/></policy>
  <policy group="wheel"><allow own="*"/></policy>
  <policy at_console="true"><allow own="*"/></policy>
  <policy context="mandatory"><deny send_interface="org.a.I" send_member="Secret"/></policy>
</busconfig>"#,
    )
    .unwrap();
    let rules = &c.policies[0].rules;
    match &rules[0].kind {
        RuleKind::Send(s) => {
            assert!(s.destination.is_none() && s.eavesdrop && s.requested_reply);
        }
        other => panic!("{other:?}"),
    }
    match &rules[1].kind {
        RuleKind::Send(s) => {
            assert!(s.destination_is_prefix);
            assert_eq!(s.msg_type, Some(MessageKind::MethodCall));
            assert!(!s.requested_reply, "a deny rule applies to requested replies only if it says so");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&rules[2].kind, RuleKind::Receive(r) if r.sender.as_deref() == Some("org.a")));
    assert_eq!(rules[3].kind, RuleKind::Own { name: "org.x".into(), prefix: true });
    assert_eq!(rules[4].kind, RuleKind::User("*".into()));
    assert_eq!(rules[0].origin.line, 3);
    assert_eq!(c.policies[1].context, PolicyContext::User("root".into()));
    assert_eq!(c.policies[2].context, PolicyContext::Group("wheel".into()));
    assert_eq!(c.policies[3].context, PolicyContext::AtConsole(true));
    assert_eq!(c.policies[4].context, PolicyContext::Mandatory);
}

#[test]
fn the_parser_never_panics_on_mangled_files() {
    let base = r#"<busconfig><type>session</type><policy context="default"><allow send_destination="*"/></policy><limit name="auth_timeout">5</limit></busconfig>"#;
    let mut seed: u64 = 0x1234_5678;
    for _ in 0..3000 {
        let mut bytes = base.as_bytes().to_vec();
        for _ in 0..3 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let pos = (seed % bytes.len() as u64) as usize;
            bytes[pos] = (seed >> 32) as u8 % 128;
        }
        if let Ok(text) = String::from_utf8(bytes) {
            let _ = parse(&text);
        }
    }
}
