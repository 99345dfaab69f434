use super::*;

const SAMPLE: &str = r#"
# a modem and two clients
app modemService {
    match exe=*/telbus-le-mcc uid=0
    provides le_mcc api=le_mcc protocol=abc123
    provides le_info protocol=def456
}
app demo {
    match exe=/opt/demo/*   # any binary under /opt/demo
    requires mcc api=le_mcc
}
app other {
    match user=telaf group=telaf unit=other*.service label=other_t
}
bind demo.mcc -> modemService.le_mcc
bind *.info -> modemService.le_info
bind <root>.mcc -> modemService.le_mcc
"#;

fn sample() -> SystemDef {
    SystemDef::from_str(SAMPLE, Path::new("/etc/telbus/system.bindings")).unwrap()
}

fn err(text: &str) -> String {
    match SystemDef::from_str(text, Path::new("f.bindings")) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn exe(path: &str) -> ProcessFacts {
    ProcessFacts {
        uid: Some(0),
        user: Some("root".into()),
        exe: Some(path.into()),
        ..Default::default()
    }
}

#[test]
fn globs_match_any_run_of_characters() {
    let g = Glob::new("*/bin/*-mcc");
    assert!(g.matches("/usr/bin/telbus-le-mcc"));
    assert!(!g.matches("/usr/bin/telbus-le-mcc2"));
    assert!(Glob::new("*").matches(""));
    assert!(Glob::new("a*").matches("a"));
    assert!(!Glob::new("a*b").matches("ab-"));
    assert!(Glob::new("exact").matches("exact"));
    assert!(!Glob::new("exact").matches("exactly"));
    assert!(!Glob::new("*aa").matches("a"));
    assert!(!Glob::new("ab*b").matches("ab"));
    assert!(Glob::new("a*b*b*c").matches("abbc"));
    assert!(!Glob::new("a*b*c").matches("acb"));
    assert!(Glob::new("*/x*y/*").matches("/a/xzy/b"));
}

#[test]
fn the_sample_parses() {
    let def = sample();
    assert_eq!(def.apps.len(), 3);
    let modem = def.app("modemService").unwrap();
    assert_eq!(modem.provides[1].api, "le_info");
    assert_eq!(modem.provides[0].protocol_id.as_deref(), Some("abc123"));
    assert_eq!(def.apps[2].matchers.len(), 4);
    assert_eq!(def.bindings.len(), 3);
    assert_eq!(def.bindings[2].client, ClientSide::User("root".into()));
    assert_eq!(
        def.bindings[0].to_string(),
        "demo.mcc -> modemService.le_mcc"
    );
}

#[test]
fn connections_are_recognised_by_the_first_app_whose_match_holds() {
    let def = sample();
    assert_eq!(
        def.principal(&exe("/usr/lib/telbus-le-mcc")),
        Principal::App("modemService".into())
    );
    assert_eq!(
        def.principal(&exe("/opt/demo/bin/demo")),
        Principal::App("demo".into())
    );
    assert_eq!(
        def.principal(&exe("/usr/bin/busctl")),
        Principal::User("root".into())
    );
    let mut not_root = exe("/usr/lib/telbus-le-mcc");
    not_root.uid = Some(1000);
    not_root.user = None;
    assert_eq!(def.principal(&not_root), Principal::User("1000".into()));
    let other = ProcessFacts {
        uid: Some(5),
        user: Some("telaf".into()),
        gids: vec![5],
        groups: vec!["telaf".into()],
        exe: Some("/x".into()),
        unit: Some("other-1.service".into()),
        label: Some("other_t".into()),
    };
    assert_eq!(def.principal(&other), Principal::App("other".into()));
    let unlabelled = ProcessFacts {
        label: None,
        ..other
    };
    assert_eq!(def.principal(&unlabelled), Principal::User("telaf".into()));
}

#[test]
fn apps_with_an_exact_executable_keep_their_place_in_the_file() {
    // An exact `exe=` files the app by its path; the first app of the file that holds still
    // wins, whichever way it was found.
    let text = |first: &str, second: &str| {
        format!("app first {{\n    match {first}\n}}\napp second {{\n    match {second}\n}}\n")
    };
    let recognised = |text: &str, exe_path: &str| {
        let def = SystemDef::from_str(text, Path::new("f.bindings")).unwrap();
        def.principal(&exe(exe_path))
    };
    let app = |name: &str| Principal::App(name.into());
    let glob_then_exact = text("exe=/usr/bin/*", "exe=/usr/bin/b");
    assert_eq!(recognised(&glob_then_exact, "/usr/bin/b"), app("first"));
    let exact_then_glob = text("exe=/usr/bin/b", "exe=/usr/bin/*");
    assert_eq!(recognised(&exact_then_glob, "/usr/bin/b"), app("first"));
    assert_eq!(recognised(&exact_then_glob, "/usr/bin/c"), app("second"));
    // An exact path that holds but another matcher that does not: the next app is tried.
    let exact_and_uid = text("exe=/usr/bin/b uid=7", "uid=0");
    assert_eq!(recognised(&exact_and_uid, "/usr/bin/b"), app("second"));
    assert_eq!(
        recognised(&text("exe=/usr/bin/a", "exe=/usr/bin/b"), "/usr/bin/x"),
        Principal::User("root".into())
    );
}

#[test]
fn the_definition_says_whether_it_needs_units_and_labels() {
    let def = sample();
    assert!(def.uses_unit() && def.uses_label());
    let def = SystemDef::from_str("app a {\n    match exe=/x uid=0\n}\n", Path::new("f")).unwrap();
    assert!(!def.uses_unit() && !def.uses_label());
}

#[test]
fn bindings_route_and_allow() {
    let mut def = sample();
    let demo = Principal::App("demo".into());
    let other = Principal::App("other".into());
    let root = Principal::User("root".into());
    assert_eq!(def.route(&demo, "mcc").unwrap().service, "le_mcc");
    assert!(def.route(&other, "mcc").is_none());
    assert_eq!(def.route(&other, "info").unwrap().client, ClientSide::Any);
    assert!(def.route(&root, "mcc").is_some());
    let mcc = bus_name("modemService", "le_mcc");
    assert!(matches!(
        def.may_call(&demo, "modemService", &mcc),
        Some(Allowed::Binding(_))
    ));
    assert!(def.may_call(&other, "modemService", &mcc).is_none());
    let modem = Principal::App("modemService".into());
    assert_eq!(
        def.may_call(&modem, "modemService", &mcc),
        Some(Allowed::SameApp)
    );
    // Bound at run time, then unbound.
    def.bind(Binding {
        client: ClientSide::App("other".into()),
        interface: "modem".into(),
        server_app: "modemService".into(),
        service: "le_mcc".into(),
        line: None,
    })
    .unwrap();
    assert!(def.may_call(&other, "modemService", &mcc).is_some());
    assert!(def.unbind(&ClientSide::App("other".into()), "modem"));
    assert!(def.may_call(&other, "modemService", &mcc).is_none());
    assert!(!def.unbind(&ClientSide::App("other".into()), "modem"));
    let bad = Binding {
        client: ClientSide::Any,
        interface: "x".into(),
        server_app: "modemService".into(),
        service: "nope".into(),
        line: None,
    };
    assert!(
        def.bind(bad)
            .unwrap_err()
            .contains("does not provide `nope`")
    );
}

#[test]
fn service_names_map_to_their_provider() {
    let def = sample();
    let (app, p) = def.provider("io.telaf.modemService.le_info").unwrap();
    assert_eq!(
        (app.name.as_str(), p.service.as_str()),
        ("modemService", "le_info")
    );
    assert!(def.provider("io.telaf.modemService.le_sms").is_none());
    assert!(def.provider("org.example").is_none());
}

#[test]
fn errors_say_where_and_what_was_expected() {
    assert_eq!(
        err("app x {\n  match foo=1\n}\n"),
        "f.bindings:2:9: expected one of the keys uid, user, gid, group, exe, unit, label; found `foo`"
    );
    assert_eq!(
        err("app x {\n  match uid=abc\n}\n"),
        "f.bindings:2:9: expected a numeric uid after `uid=`, found `abc`"
    );
    assert_eq!(
        err("application x\n"),
        "f.bindings:1:1: expected `app`, `apipath` or `bind`, found `application`"
    );
    assert_eq!(
        err("app x {\n  match uid=1\n"),
        "f.bindings:2:1: expected `}` to close app `x` (opened at line 1)"
    );
    assert_eq!(
        err("app x\n"),
        "f.bindings:1:6: expected `{` after the app name"
    );
    assert_eq!(
        err("bind a.b => c.d\n"),
        "f.bindings:1:10: expected `->`, found `=>`"
    );
    assert_eq!(
        err("bind ab -> c.d\n"),
        "f.bindings:1:6: expected CLIENT.INTERFACE (app.iface, <user>.iface or *.iface), found `ab`"
    );
    assert_eq!(
        err("bind *.b -> c.d\n"),
        "f.bindings:1:13: expected a defined server app, found `c`"
    );
    assert_eq!(
        err("app x {\n}\n"),
        "f.bindings:2:1: app `x` has no `match` line: expected one before `}`"
    );
    assert_eq!(
        err("app x {\n match uid=1\n provides s api=nothere\n}\n"),
        "f.bindings:3:17: expected nothere.api in an apipath (none given) to compute its protocol id, or `protocol=ID`"
    );
    let twice =
        "app s {\n match uid=1\n provides a protocol=1\n}\nbind *.i -> s.a\nbind *.i -> s.a\n";
    assert_eq!(
        err(twice),
        "f.bindings:6:6: `*.i` is bound twice (first at line 5)"
    );
}

#[test]
fn protocol_ids_come_from_the_api_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../interfaces/api");
    let text = format!(
        "apipath \"{}\"\napp m {{\n match uid=0\n provides le_info\n}}\n",
        dir.display()
    );
    let def = SystemDef::from_str(&text, Path::new("/x/f.bindings")).unwrap();
    let id = def.apps[0].provides[0].protocol_id.clone().unwrap();
    let api = telbus_interfaces::Compiler::new()
        .include_dir(&dir)
        .compile_file(dir.join("le_info.api"))
        .unwrap();
    assert_eq!(id, telbus_interfaces::protocol_id::protocol_id(&api));
    assert_eq!(id.len(), 32);
}
