//! What every fuzz target checks, one function per parser. The fuzz targets (`fuzz_targets/`)
//! call these, and so does `dbus-tests/tests/fuzz_replay.rs`, which replays the corpus and the
//! regressions in the normal `cargo test`; both include this file by path.
//!
//! Each check panics when a property fails: a parser must never panic, and where it is cheap we
//! check more than that (a rule that parses re-parses from its text to the same rule, a message
//! the bus stamps is one the bus would take again unchanged, …).

use std::path::Path;
use std::sync::Arc;

use telbus_broker::auth::{AuthConfig, AuthError, Sasl};
use telbus_broker::match_rule::{MAX_RULE_LENGTH, MatchRule};
use telbus_broker::service_file::parse_service_file;
use telbus_broker::wire;
use telbus_policy::bindings::{
    Allowed, Binding, ClientSide, Glob, Matcher, Principal, SystemDef, parse_client,
};
use zbus::wire::Endian;
use zbus::wire::serialized::{Context, Data};

/// The SASL exchange: a client's bytes, fed to the server's state machine.
///
/// The first byte picks the configuration (anonymous allowed, fd passing, a peer uid); the second
/// how the rest is cut into reads. Properties: the conversation comes out the same whether the
/// bytes arrive at once or in pieces; every reply is a whole line the protocol knows; consumed
/// bytes never exceed what was given.
pub fn sasl(data: &[u8]) {
    let Some((&config_byte, rest)) = data.split_first() else {
        return;
    };
    let Some((&cut, input)) = rest.split_first() else {
        return;
    };
    let config = Arc::new(AuthConfig {
        mechanisms: if config_byte & 4 != 0 {
            vec!["EXTERNAL".to_string()]
        } else {
            Vec::new()
        },
        allow_anonymous: config_byte & 1 != 0,
        guid: "0123456789abcdef0123456789abcdef".to_string(),
        unix_fd_capable: config_byte & 2 != 0,
    });
    let peer_uid = (config_byte & 8 == 0).then_some(1000);
    let whole = converse(&config, peer_uid, input, input.len().max(1));
    let pieces = converse(&config, peer_uid, input, usize::from(cut % 7) + 1);
    assert_eq!(
        whole, pieces,
        "the conversation depends on how the bytes arrive"
    );
    let (replies, _, consumed) = whole;
    assert!(consumed <= input.len());
    for line in replies.split_inclusive(|&b| b == b'\n') {
        let text = std::str::from_utf8(line).expect("replies are ASCII");
        let text = text
            .strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("a reply that is not a whole line: {text:?}"));
        let command = text.split(' ').next().unwrap_or("");
        assert!(
            ["OK", "REJECTED", "DATA", "ERROR", "AGREE_UNIX_FD"].contains(&command),
            "unknown reply {text:?}"
        );
    }
}

/// Feed `input` to a fresh conversation in reads of `chunk` bytes, as the event loop does.
/// Returns the replies, how it ended (Debug text) and the bytes consumed.
fn converse(
    config: &Arc<AuthConfig>,
    peer_uid: Option<u32>,
    input: &[u8],
    chunk: usize,
) -> (Vec<u8>, String, usize) {
    let mut sasl = Sasl::new(config.clone(), peer_uid);
    let mut replies = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut consumed = 0;
    for piece in input.chunks(chunk) {
        pending.extend_from_slice(piece);
        match sasl.feed(&pending, &mut replies) {
            Ok(progress) => {
                assert!(progress.consumed <= pending.len());
                pending.drain(..progress.consumed);
                consumed += progress.consumed;
                if let Some(done) = progress.done {
                    // Feeding again after BEGIN is refused.
                    let again = sasl.feed(&pending, &mut Vec::new());
                    assert_eq!(again, Err(AuthError::AlreadyDone));
                    return (replies, format!("{done:?}"), consumed);
                }
            }
            // Where the error struck within a read is not reported: only the replies and the
            // error are compared.
            Err(e) => return (replies, format!("{e:?}"), 0),
        }
    }
    (replies, "unfinished".to_string(), consumed)
}

/// Framing, header fields and body validation: the bytes of one message as a client sends it.
///
/// Properties: a message the bus accepts carries the sender the bus stamped; its length is what
/// framing says; stamping it again changes nothing but the sender; header and body survive.
pub fn wire_message(data: &[u8]) {
    let Ok(Some(len)) = wire::message_len(data, wire::MAX_MESSAGE_SIZE) else {
        return;
    };
    if len > data.len() {
        return;
    }
    // The bus's own check of a stamped message takes exactly what zbus takes: the bus reads
    // the header itself and makes a zbus Message only when it needs one, which must then work.
    if let Ok((out, _)) = wire::restamp(&data[..len], ":1.42") {
        let endian = if out[0] == b'B' {
            Endian::Big
        } else {
            Endian::Little
        };
        let ctx = Context::new(endian, 0);
        let ours = wire::BusMessage::checked(Data::new(out.clone(), ctx));
        // SAFETY: the body is only read by `validate`, which checks it.
        let theirs = unsafe { zbus::Message::from_bytes(Data::new(out, ctx)) };
        // The headers: what the bus takes, zbus must take (BusMessage::zbus relies on it).
        let our_header_ok = !matches!(ours, Err(wire::WireError::BadHeader(_)));
        assert_eq!(
            our_header_ok,
            theirs.is_ok(),
            "the bus and zbus disagree on the header: bus {:?}, zbus {:?}",
            ours.as_ref().err(),
            theirs.as_ref().err()
        );
        // The bodies: the same verdict, but where zbus counts nesting as GLib does and the
        // bus as libdbus does (see wire::body), which only zbus refuses.
        if let Ok(theirs) = theirs {
            let their_body = theirs.body().validate();
            let deeper_than_zbus = matches!(their_body, Err(zbus::Error::MaxDepthExceeded(_)));
            assert!(
                ours.is_ok() == their_body.is_ok() || (ours.is_ok() && deeper_than_zbus),
                "the bus and zbus disagree on the body: bus {:?}, zbus {:?}",
                ours.as_ref().err(),
                their_body.err()
            );
        }
    }
    // Messages that announce descriptors are refused: none came with these bytes.
    let no_fds = |n: usize| (n == 0).then(Vec::new);
    let Ok(msg) = wire::stamp_client_message(&data[..len], ":1.42", no_fds) else {
        return;
    };
    let route = msg.route();
    assert_eq!(route.sender, Some(":1.42"));
    let header = msg.zbus().header();
    assert_eq!(route.path, header.path().map(|p| p.as_str()));
    assert_eq!(route.interface, header.interface().map(|i| i.as_str()));
    assert_eq!(route.member, header.member().map(|m| m.as_str()));
    assert_eq!(route.error_name, header.error_name().map(|e| e.as_str()));
    assert_eq!(route.destination, header.destination().map(|d| d.as_str()));
    assert_eq!(route.reply_serial, header.reply_serial().map(|s| s.get()));
    assert_eq!(route.serial, header.primary().serial_num().get());
    assert_eq!(route.msg_type, header.message_type());
    let bytes = msg.data().bytes();
    assert_eq!(
        wire::message_len(bytes, wire::MAX_MESSAGE_SIZE).unwrap(),
        Some(bytes.len())
    );
    let again = wire::stamp_client_message(bytes, ":1.42", no_fds)
        .expect("a message the bus stamped is valid");
    assert_eq!(
        again.data().bytes(),
        bytes,
        "stamping twice changed the message"
    );
    let other = wire::stamp_client_message(bytes, ":1.7", no_fds).expect("restamped");
    let other_route = other.route();
    assert_eq!(other_route.sender, Some(":1.7"));
    assert_eq!(other_route.path, route.path);
    assert_eq!(other_route.member, route.member);
    assert_eq!(other_route.interface, route.interface);
    assert_eq!(other_route.destination, route.destination);
    assert_eq!(other_route.reply_serial, route.reply_serial);
    assert_eq!(other_route.signature, route.signature);
}

/// Signatures `wire_body` picks from, by the top 5 bits of its first byte; past the table, the
/// signature is in the input.
const BODY_SIGNATURES: [&str; 24] = [
    "s",
    "ss",
    "su",
    "(su)",
    "o",
    "g",
    "v",
    "ay",
    "ab",
    "ah",
    "as",
    "ao",
    "a{sv}",
    "a{sa{sv}}",
    "aay",
    "a(yv)",
    "(yv)",
    "vv",
    "sa{sv}as",
    "ybnqiuxtdh",
    "a{hs}",
    "a(ya(y))",
    "av",
    "aav",
];

/// The bus's body validator (`wire::body::validate_body`) against zbus's (`Body::validate`, which
/// telbusd used before it).
///
/// The first byte: bit 0 the byte order (big-endian if set), bits 1-2 how many fds the message
/// brings, bits 3-7 a signature of `BODY_SIGNATURES`, or past its end, a signature given by the
/// next byte (its length) and the bytes after it. The rest is the body.
///
/// Properties: both accept the body or both refuse it, but where zbus counts nesting as GLib
/// does, refusing bodies that libdbus takes (see wire/body.rs's tests); an error's offset is in
/// the body.
pub fn wire_body(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let endian = match first & 1 {
        0 => zbus::wire::Endian::Little,
        _ => zbus::wire::Endian::Big,
    };
    let fds = u32::from((first >> 1) & 3);
    let (signature, body) = match BODY_SIGNATURES.get(usize::from(first >> 3)) {
        Some(signature) => (signature.as_bytes(), rest),
        None => {
            let Some((&len, rest)) = rest.split_first() else {
                return;
            };
            if usize::from(len) > rest.len() {
                return;
            }
            rest.split_at(len.into())
        }
    };
    // The bus only checks bodies whose signature is valid (zbus parses it as it builds).
    let Ok(signature) = std::str::from_utf8(signature) else {
        return;
    };
    let files = (0..fds)
        .map(|_| {
            std::os::fd::OwnedFd::from(std::fs::File::open("/dev/null").expect("/dev/null")).into()
        })
        .collect();
    // SAFETY: the body is only checked, never trusted.
    let Ok(msg) = (unsafe {
        zbus::Message::method_call("/", "M")
            .endian(endian)
            .build_raw_body(body, signature, files)
    }) else {
        return;
    };
    // As the header has it: a structure of all the body's types without its parentheses.
    let signature = msg.body().signature().to_string_no_parens();
    let ours = wire::body::validate_body(body, signature.as_bytes(), endian, fds);
    let theirs = msg.body().validate();
    match (&ours, &theirs) {
        (Ok(()), Ok(())) | (Err(_), Err(_)) => (),
        (Ok(()), Err(zbus::Error::MaxDepthExceeded(_))) => (),
        _ => panic!("`{signature}` {endian:?} {fds} fds {body:?}: ours {ours:?}, zbus {theirs:?}"),
    }
    if let Err(e) = ours {
        assert!(e.offset <= body.len(), "{e:?} of {} bytes", body.len());
    }
}

/// Match rules (AddMatch's argument): a rule that parses prints a text that parses back to the
/// same rule and prints the same text.
pub fn match_rule(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(rule) = MatchRule::parse(text) else {
        return;
    };
    let canonical = rule.to_string();
    if canonical.len() > MAX_RULE_LENGTH {
        // Quoting can make the canonical text longer than the 1024 bytes a client may send
        // (dbus-daemon's canonical text grows the same way): nothing to re-parse.
        return;
    }
    let reparsed = MatchRule::parse(&canonical)
        .unwrap_or_else(|e| panic!("{text:?} printed as {canonical:?}, which fails: {e}"));
    assert_eq!(reparsed, rule, "{text:?} printed as {canonical:?}");
    assert_eq!(reparsed.to_string(), canonical);
}

/// The XML bus configuration. Loading is deterministic, and an error names the file.
pub fn busconfig(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/telbus-fuzz/bus.conf");
    match telbus_busconfig::load_str(text, path) {
        Ok(config) => {
            let again = telbus_busconfig::load_str(text, path).expect("loads twice");
            assert_eq!(format!("{config:?}"), format!("{again:?}"));
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with('/'),
                "an error without its file: {message}"
            );
        }
    }
}

/// `.service` files: an entry that parses, written back as a file, parses to the same entry.
pub fn service_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/org.example.Fuzz.service");
    let Ok(entry) = parse_service_file(text, path) else {
        return;
    };
    let mut written = format!("[D-BUS Service]\nName={}\n", entry.name);
    for (key, value) in [
        ("Exec", &entry.exec),
        ("User", &entry.user),
        ("SystemdService", &entry.systemd_service),
        ("AssumedAppArmorLabel", &entry.apparmor_label),
    ] {
        if let Some(value) = value {
            written.push_str(&format!("{key}={value}\n"));
        }
    }
    let reparsed = parse_service_file(&written, path)
        .unwrap_or_else(|e| panic!("{text:?} written back as {written:?} fails: {e}"));
    assert_eq!(reparsed, entry, "written back as {written:?}");
}

/// The TelAF `.api` language: a file that compiles gives well-formed introspection XML, the
/// same each time.
pub fn api(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(api) = telbus_interfaces::compile_in_memory("fuzz", text, &[]) else {
        return;
    };
    let xml = telbus_interfaces::xml::generate(&api);
    let mut reader = quick_xml::Reader::from_str(&xml);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("generated XML is not well-formed ({e}):\n{xml}"),
        }
    }
    let again = telbus_interfaces::compile_in_memory("fuzz", text, &[]).expect("compiles twice");
    assert_eq!(telbus_interfaces::xml::generate(&again), xml);
}

/// Where the bindings check pretends its file lives: the repository's root, so that a relative
/// `apipath "interfaces/api"` (as in docs/bindings.md) finds the repository's own .api files and
/// protocol ids are computed the same everywhere.
pub const BINDINGS_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../system.bindings");

/// The TelAF system definition (bindings) file.
///
/// Properties: loading is deterministic; an error names the file and a line and column that
/// exist; a definition that loads, written back as a file, loads to the same apps and bindings;
/// every glob matches its own text; and every binding is what routing and access decide.
pub fn bindings(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new(BINDINGS_FILE);
    let def = match SystemDef::from_str(text, path) {
        Ok(def) => def,
        Err(e) => {
            let again = SystemDef::from_str(text, path).expect_err("fails twice");
            assert_eq!(e, again);
            assert_eq!(e.file, path);
            let lines: Vec<&str> = text.lines().collect();
            assert!(
                e.line >= 1 && e.line <= lines.len().max(1),
                "{e}: no such line"
            );
            let line_len = lines.get(e.line - 1).map_or(0, |l| l.len());
            assert!(
                e.column >= 1 && e.column <= line_len + 1,
                "{e}: no such column"
            );
            return;
        }
    };
    let again = SystemDef::from_str(text, path).expect("loads twice");
    assert_eq!(def.apps, again.apps);
    assert_eq!(def.bindings, again.bindings);

    let written = write_bindings(&def);
    let reloaded = SystemDef::from_str(&written, path)
        .unwrap_or_else(|e| panic!("{text:?} written back as {written:?} fails: {e}"));
    assert_eq!(
        without_lines(&reloaded),
        without_lines(&def),
        "written back as {written:?}"
    );

    for app in &def.apps {
        for m in &app.matchers {
            if let Matcher::Exe(g) | Matcher::Unit(g) | Matcher::Label(g) = m {
                glob_matches_itself(g);
            }
        }
    }
    for b in &def.bindings {
        let (app, provided) = def
            .provider(&b.bus_name())
            .expect("a bound service is provided");
        assert_eq!(
            (app.name.as_str(), provided.service.as_str()),
            (b.server_app.as_str(), b.service.as_str())
        );
        let principal = match &b.client {
            ClientSide::App(a) => Principal::App(a.clone()),
            ClientSide::User(u) => Principal::User(u.clone()),
            // Anyone: a user named `*` is bound by `<*>.iface` if that exists, else by `*`.
            ClientSide::Any => Principal::User("*".to_string()),
        };
        let routed = def
            .route(&principal, &b.interface)
            .expect("a bound interface routes");
        assert_eq!(routed.interface, b.interface);
        if b.client != ClientSide::Any {
            assert_eq!(routed, b, "{principal} routes elsewhere");
        }
        let allowed = def
            .may_call(&principal, &b.server_app, &b.bus_name())
            .unwrap_or_else(|| panic!("{b} does not let {principal} call"));
        if let Allowed::Binding(via) = allowed {
            assert_eq!(via.bus_name(), b.bus_name());
        }
        assert_eq!(parse_client(&b.client.to_string()), Some(b.client.clone()));
    }
}

/// A loaded definition as a file: every protocol id is given, so no apipath is needed.
fn write_bindings(def: &SystemDef) -> String {
    let mut out = String::new();
    for app in &def.apps {
        out.push_str(&format!("app {} {{\n", app.name));
        for m in &app.matchers {
            out.push_str(&format!("    match {m}\n"));
        }
        for p in &app.provides {
            let id = p
                .protocol_id
                .as_deref()
                .expect("ids are known after loading");
            out.push_str(&format!(
                "    provides {} api={} protocol={id}\n",
                p.service, p.api
            ));
        }
        for r in &app.requires {
            out.push_str(&format!("    requires {} api={}\n", r.interface, r.api));
        }
        out.push_str("}\n");
    }
    for b in &def.bindings {
        out.push_str(&format!("bind {b}\n"));
    }
    out
}

/// Apps and bindings with the line numbers taken out, which writing back changes.
fn without_lines(def: &SystemDef) -> (Vec<telbus_policy::bindings::App>, Vec<Binding>) {
    let mut apps = def.apps.clone();
    for app in &mut apps {
        app.line = 0;
        for p in &mut app.provides {
            p.line = 0;
        }
    }
    let mut bindings = def.bindings.clone();
    for b in &mut bindings {
        b.line = None;
    }
    (apps, bindings)
}

/// A glob matches its text with each `*` standing for nothing, and for anything.
fn glob_matches_itself(g: &Glob) {
    let pattern = g.as_str();
    for filler in ["", "*", "x/y*z"] {
        let text = pattern.replace('*', filler);
        assert!(g.matches(&text), "{pattern:?} does not match {text:?}");
    }
}

/// What a fuzz target runs on each input.
pub type Check = fn(&[u8]);

/// Every target by name, for the replay test.
pub const TARGETS: [(&str, Check); 8] = [
    ("sasl", sasl),
    ("wire_message", wire_message),
    ("wire_body", wire_body),
    ("match_rule", match_rule),
    ("busconfig", busconfig),
    ("service_file", service_file),
    ("api", api),
    ("bindings", bindings),
];
