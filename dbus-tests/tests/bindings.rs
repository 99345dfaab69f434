//! TelAF bindings on telbusd (`--bindings=FILE`): who may own `io.telaf.<app>.<service>`, who
//! may call it, where a client's interface name leads (io.telaf.Broker1.Connect), and changes
//! at run time. Apps are told apart by executable: each is a copy of the tiny telaf-client
//! under its own name; busctl and the test's own connections are no app (user <root>).
//!
//! telbusd only: dbus-daemon has no bindings.

use std::time::Duration;

use telbus_dbus_tests::{STEP_TIMEOUT, TelafBus, api_dir, expect_error, run, within};
use zbus::Connection;

const CLIENT: &str = env!("CARGO_BIN_EXE_telaf-client");
const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";
const MCC_NAME: &str = "io.telaf.modem.le_mcc";
const MCC_ROOT: &str = "/io/telaf/le_mcc";

fn system(extra: &str) -> String {
    format!(
        r#"# test system
apipath "{}"
app modem {{
    match exe=*/modem-a
    provides le_mcc api=le_mcc
}}
app modem2 {{
    match exe=*/modem-b
    provides le_mcc api=le_mcc
}}
app clientA {{
    match exe=*/client-a
    requires mcc api=le_mcc
}}
app clientB {{
    match exe=*/client-b
    requires mcc api=le_mcc
}}
app stranger {{
    match exe=*/client-c
}}
bind clientA.mcc -> modem.le_mcc
bind clientB.mcc -> modem2.le_mcc
{extra}"#,
        api_dir().display()
    )
}

/// A provider copy serving its root object and owning its name, running until dropped.
fn provider(t: &TelafBus, exe: &str, name: &str) -> telbus_dbus_tests::Background {
    let p = t.spawn(exe, &["serve", MCC_ROOT, "own", name, "hold"]);
    let out = p.wait_for_text("holding", Duration::from_secs(10));
    assert!(out.contains("own OK"), "{exe} could not own {name}:\n{out}");
    p
}

async fn broker(
    conn: &Connection,
    member: &str,
    body: &(impl serde::Serialize + zbus::wire::DynamicType),
) -> zbus::Result<zbus::Message> {
    within(
        STEP_TIMEOUT,
        member,
        conn.call_method(
            Some("org.freedesktop.DBus"),
            "/io/telaf/Broker1",
            Some("io.telaf.Broker1"),
            member,
            body,
        ),
    )
    .await
}

async fn list(conn: &Connection) -> serde_json::Value {
    let reply = broker(conn, "List", &()).await.expect("List");
    let text: String = reply.body().deserialize().unwrap();
    serde_json::from_str(&text).expect("List answers JSON")
}

async fn ping(conn: &Connection, dest: &str, path: &str) -> zbus::Result<zbus::Message> {
    within(
        STEP_TIMEOUT,
        "Ping",
        conn.call_method(
            Some(dest),
            path,
            Some("org.freedesktop.DBus.Peer"),
            "Ping",
            &(),
        ),
    )
    .await
}

#[test]
fn unbound_client_is_refused_and_bound_client_allowed() {
    let t = TelafBus::start(&system(""), CLIENT);
    let modem = provider(&t, "modem-a", MCC_NAME);
    let bound = t.run(
        "client-a",
        &["connect", "mcc", "-", "false", "call", MCC_NAME, MCC_ROOT],
    );
    assert!(
        bound
            .stdout
            .contains("connect OK io.telaf.modem.le_mcc /io/telaf/le_mcc\ncall OK"),
        "{bound}"
    );
    let provider_unique = modem
        .stdout()
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("unique ")
        .to_string();
    let unbound = t.run(
        "client-c",
        &[
            "connect",
            "mcc",
            "-",
            "false",
            "call",
            MCC_NAME,
            MCC_ROOT,
            "call",
            &provider_unique,
            MCC_ROOT,
        ],
    );
    let lines: Vec<&str> = unbound.stdout.lines().collect();
    assert!(
        lines[1].starts_with(&format!(
            "connect ERR {ACCESS_DENIED}: stranger has no binding for its interface mcc"
        )),
        "{unbound}"
    );
    for line in &lines[2..4] {
        assert!(
            line.starts_with(&format!("call ERR {ACCESS_DENIED}:")),
            "{unbound}"
        );
        assert!(
            line.contains("stranger has no binding to modem.le_mcc (missing \"bind stranger.<interface> -> modem.le_mcc\""),
            "{unbound}"
        );
    }
    // busctl is no app: it is user <root>, which has no binding either.
    let busctl = t
        .bus
        .busctl([
            "call",
            MCC_NAME,
            MCC_ROOT,
            "org.freedesktop.DBus.Peer",
            "Ping",
        ])
        .assert_failure();
    assert!(busctl.stderr.contains("Access denied"), "{busctl}");
    // Traffic that is not TelAF's is unchanged: the driver answers everyone.
    t.bus
        .busctl([
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "ListNames",
        ])
        .assert_success();
    let log = t.bus.daemon_stderr();
    assert!(
        log.contains("stranger has no binding to modem.le_mcc"),
        "the refusal is logged:\n{log}"
    );
    assert!(
        log.contains("<root> has no binding to modem.le_mcc"),
        "busctl's refusal is logged:\n{log}"
    );
    t.bus.assert_alive();
}

#[test]
fn two_clients_with_the_same_interface_name_reach_different_providers() {
    let t = TelafBus::start(&system(""), CLIENT);
    let _m1 = provider(&t, "modem-a", MCC_NAME);
    let _m2 = provider(&t, "modem-b", "io.telaf.modem2.le_mcc");
    let a = t.run(
        "client-a",
        &[
            "connect",
            "mcc",
            "-",
            "false",
            "call",
            MCC_NAME,
            MCC_ROOT,
            "call",
            "io.telaf.modem2.le_mcc",
            MCC_ROOT,
        ],
    );
    assert!(a.stdout.contains("connect OK io.telaf.modem.le_mcc /io/telaf/le_mcc\ncall OK\ncall ERR org.freedesktop.DBus.Error.AccessDenied"), "{a}");
    let b = t.run(
        "client-b",
        &[
            "connect",
            "mcc",
            "-",
            "false",
            "call",
            "io.telaf.modem2.le_mcc",
            MCC_ROOT,
            "call",
            MCC_NAME,
            MCC_ROOT,
        ],
    );
    assert!(b.stdout.contains("connect OK io.telaf.modem2.le_mcc /io/telaf/le_mcc\ncall OK\ncall ERR org.freedesktop.DBus.Error.AccessDenied"), "{b}");
}

#[test]
fn only_the_provider_may_own_its_name() {
    let t = TelafBus::start(&system(""), CLIENT);
    let client = t.run(
        "client-a",
        &[
            "own",
            MCC_NAME,
            "own",
            "io.telaf.nobody.svc",
            "own",
            "org.example.Free",
        ],
    );
    let lines: Vec<&str> = client.stdout.lines().collect();
    assert!(
        lines[1].starts_with(&format!("own ERR {ACCESS_DENIED}"))
            && lines[1].contains("only app modem provides le_mcc"),
        "{client}"
    );
    assert!(
        lines[2].starts_with(&format!("own ERR {ACCESS_DENIED}"))
            && lines[2].contains("no app of the TelAF bindings"),
        "{client}"
    );
    assert_eq!(
        lines[3], "own OK",
        "names outside io.telaf are not TelAF's: {client}"
    );
    // Another provider of the same API does not get this app's name either.
    let other = t.run("modem-b", &["own", MCC_NAME]);
    assert!(
        other
            .stdout
            .contains("own ERR org.freedesktop.DBus.Error.AccessDenied"),
        "{other}"
    );
    let _modem = provider(&t, "modem-a", MCC_NAME);
}

#[test]
fn protocol_ids_are_checked() {
    let t = TelafBus::start(&system(""), CLIENT);
    let _modem = provider(&t, "modem-a", MCC_NAME);
    let id = run(async {
        let conn = t.bus.connect().await;
        let listed = list(&conn).await;
        let service = listed["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["busName"] == MCC_NAME)
            .cloned()
            .unwrap();
        assert_eq!(
            service["owner"].as_str().map(|o| o.starts_with(":1.")),
            Some(true),
            "{listed}"
        );
        service["protocolId"].as_str().unwrap().to_string()
    });
    assert_eq!(id.len(), 32);
    let out = t.run(
        "client-a",
        &[
            "connect",
            "mcc",
            "0123456789abcdef0123456789abcdef",
            "false",
            "connect",
            "mcc",
            &id,
            "false",
        ],
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[1].starts_with("connect ERR io.telaf.Error.ProtocolMismatch: mcc is bound to modem.le_mcc of API le_mcc"), "{out}");
    assert_eq!(
        lines[2], "connect OK io.telaf.modem.le_mcc /io/telaf/le_mcc",
        "{out}"
    );
}

#[test]
fn connect_with_wait_answers_once_bound_and_the_provider_is_up() {
    let t = TelafBus::start(&system(""), CLIENT);
    // Without wait: unbound is AccessDenied; bound but the provider is not up: ServiceUnknown.
    let now = t.run("client-a", &["connect", "mcc", "-", "false"]);
    assert!(now.stdout.contains("connect ERR org.freedesktop.DBus.Error.ServiceUnknown: mcc is bound to modem.le_mcc, but io.telaf.modem.le_mcc is not on the bus"), "{now}");
    let waiter = t.spawn("client-c", &["connect", "mcc", "-", "true", "hold"]);
    run(async {
        let admin = t.bus.connect().await;
        // The Connect is parked: List shows it UNBOUND.
        let unique = waiter
            .wait_for_text("unique", Duration::from_secs(10))
            .trim()
            .trim_start_matches("unique ")
            .to_string();
        loop {
            let listed = list(&admin).await;
            if let Some(w) = listed["waiting"]
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["client"] == unique.as_str())
            {
                assert_eq!(w["state"], "UNBOUND", "{listed}");
                assert_eq!(w["principal"], "stranger");
                break;
            }
        }
        broker(&admin, "Bind", &("stranger", "mcc", "modem", "le_mcc"))
            .await
            .expect("Bind");
        let listed = list(&admin).await;
        let w = &listed["waiting"][0];
        assert_eq!(
            (w["state"].as_str(), w["for"].as_str()),
            (Some("WAITING"), Some("modem.le_mcc")),
            "{listed}"
        );
        assert!(
            !waiter.stdout().contains("connect"),
            "answered before the provider came"
        );
    });
    let _modem = provider(&t, "modem-a", MCC_NAME);
    let out = waiter.wait_for_text("holding", Duration::from_secs(10));
    assert!(
        out.contains("connect OK io.telaf.modem.le_mcc /io/telaf/le_mcc\nholding"),
        "{out}"
    );
}

#[test]
fn bind_unbind_and_load_apply_to_the_next_message() {
    let t = TelafBus::start(&system(""), CLIENT);
    let _modem = provider(&t, "modem-a", MCC_NAME);
    run(async {
        // The test's own connection is user <root>: one connection throughout, never dropped.
        let me = t.bus.connect().await;
        let denied = expect_error(ping(&me, MCC_NAME, MCC_ROOT).await);
        assert_eq!(denied.0, ACCESS_DENIED);
        broker(&me, "Bind", &("<root>", "mcc", "modem", "le_mcc"))
            .await
            .expect("Bind");
        ping(&me, MCC_NAME, MCC_ROOT)
            .await
            .expect("allowed once bound");
        let reply = broker(&me, "Connect", &("mcc", "", false))
            .await
            .expect("Connect");
        let (name, _path): (String, zbus::wire::OwnedObjectPath) =
            reply.body().deserialize().unwrap();
        assert_eq!(name, MCC_NAME);
        broker(&me, "Unbind", &("<root>", "mcc"))
            .await
            .expect("Unbind");
        assert_eq!(
            expect_error(ping(&me, MCC_NAME, MCC_ROOT).await).0,
            ACCESS_DENIED
        );
        let again = expect_error(broker(&me, "Unbind", &("<root>", "mcc")).await);
        assert_eq!(again.0, "org.freedesktop.DBus.Error.InvalidArgs");
        // A bind to a service nobody provides is refused.
        let bad = expect_error(broker(&me, "Bind", &("<root>", "x", "modem", "le_sms")).await);
        assert!(
            bad.1.contains("app `modem` does not provide `le_sms`"),
            "{bad:?}"
        );

        // Load: the file now binds <root>.
        t.rewrite(&system("bind <root>.mcc -> modem.le_mcc\n"));
        broker(&me, "Load", &()).await.expect("Load");
        ping(&me, MCC_NAME, MCC_ROOT)
            .await
            .expect("allowed after Load");
        // A bad file is refused and the rules stay as they were.
        t.rewrite(&format!("{}bind <root>.mcc => modem.le_mcc\n", system("")));
        let refused = expect_error(broker(&me, "Load", &()).await);
        assert_eq!(refused.0, "org.freedesktop.DBus.Error.Failed");
        assert!(
            refused
                .1
                .contains("system.bindings:24:17: expected `->`, found `=>`"),
            "{refused:?}"
        );
        ping(&me, MCC_NAME, MCC_ROOT).await.expect("old rules kept");
        // Back to the first file: refused again, on the same connection.
        t.rewrite(&system(""));
        broker(&me, "Load", &()).await.expect("Load");
        assert_eq!(
            expect_error(ping(&me, MCC_NAME, MCC_ROOT).await).0,
            ACCESS_DENIED
        );
    });
    t.bus.assert_alive();
}

#[test]
fn broker1_is_introspectable_and_administration_is_for_root() {
    let t = TelafBus::start(&system(""), CLIENT);
    let root = t
        .bus
        .busctl(["introspect", "--xml-interface", "org.freedesktop.DBus", "/"])
        .assert_success();
    assert!(root.stdout.contains("<node name=\"io\"/>"), "{root}");
    let telaf = t
        .bus
        .busctl([
            "introspect",
            "--xml-interface",
            "org.freedesktop.DBus",
            "/io/telaf",
        ])
        .assert_success();
    assert!(telaf.stdout.contains("<node name=\"Broker1\"/>"), "{telaf}");
    let broker1 = t
        .bus
        .busctl([
            "introspect",
            "--xml-interface",
            "org.freedesktop.DBus",
            "/io/telaf/Broker1",
        ])
        .assert_success();
    assert!(
        broker1
            .stdout
            .contains("<interface name=\"io.telaf.Broker1\">"),
        "{broker1}"
    );
    for member in [
        "Connect",
        "AddReference",
        "RemoveReference",
        "List",
        "Bind",
        "Unbind",
        "Load",
        "Why",
        "References",
    ] {
        assert!(
            broker1
                .stdout
                .contains(&format!("<method name=\"{member}\">")),
            "{member} missing:\n{broker1}"
        );
    }
    assert!(
        broker1.stdout.contains("<signal name=\"ClientGone\">"),
        "{broker1}"
    );
    // A caller of another uid may connect, but not administer.
    let out = t
        .bus
        .command("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "busctl",
            "--address",
            t.bus.address(),
            "call",
            "org.freedesktop.DBus",
            "/io/telaf/Broker1",
            "io.telaf.Broker1",
            "List",
        ])
        .output()
        .expect("setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // busctl prints the error's name as text ("Access denied"): the call was made and refused.
    assert!(
        !out.status.success() && stderr.contains("Call failed: Access denied"),
        "{stderr}"
    );
}

#[test]
fn a_bad_bindings_file_stops_telbusd_with_where_and_what() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.bindings");
    std::fs::write(&file, "app x {\n  match colour=blue\n}\n").unwrap();
    let out = std::process::Command::new(telbus_dbus_tests::daemon_path())
        .args(["--session", "--nofork", "--print-address=1"])
        .arg(format!("--bindings={}", file.display()))
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output()
        .expect("run telbusd");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no address is printed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:2:9: expected one of the keys uid, user, gid, group, exe, unit, label; found `colour`", file.display())),
        "{stderr}"
    );
}
