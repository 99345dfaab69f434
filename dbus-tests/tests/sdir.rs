//! telbus-sdir and telbusctl's bindings and references views against telbusd --bindings: the
//! output a person reads (tables, sdir's layout) and the JSON scripts read. telbusd only.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use telbus_dbus_tests::{CLIENT_TIMEOUT, ClientOutput, TelafBus, run_command};

const CLIENT: &str = env!("CARGO_BIN_EXE_telaf-client");

const SYSTEM: &str = "app modem {
    match exe=*/modem-a
    provides le_mcc api=le_mcc protocol=0123456789abcdef0123456789abcdef
}
app clientA {
    match exe=*/client-a
}
bind clientA.mcc -> modem.le_mcc
";

fn tool(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/release")
        .join(name);
    assert!(
        path.exists(),
        "build it first: cargo build --release -p telbus-tools ({})",
        path.display()
    );
    path
}

fn sdir(t: &TelafBus, args: &[&str]) -> ClientOutput {
    let mut command: Command = t.bus.command(tool("telbus-sdir"));
    command
        .arg(format!("--address={}", t.bus.address()))
        .args(args);
    run_command(command, CLIENT_TIMEOUT)
}

fn telbusctl(t: &TelafBus, args: &[&str]) -> ClientOutput {
    let mut command: Command = t.bus.command(tool("telbusctl"));
    command
        .arg(format!("--address={}", t.bus.address()))
        .args(args);
    run_command(command, CLIENT_TIMEOUT)
}

#[test]
fn list_bind_unbind_load_and_why() {
    let t = TelafBus::start(SYSTEM, CLIENT);
    let modem = t.spawn(
        "modem-a",
        &[
            "serve",
            "/io/telaf/le_mcc",
            "own",
            "io.telaf.modem.le_mcc",
            "hold",
        ],
    );
    let modem_out = modem.wait_for_text("holding", Duration::from_secs(10));
    let modem_unique = modem_out
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("unique ");
    let waiter = t.spawn("client-c", &["connect", "gnss", "-", "true", "hold"]);
    let waiter_unique = waiter
        .wait_for_text("unique", Duration::from_secs(10))
        .trim()
        .trim_start_matches("unique ")
        .to_string();
    // Wait until its Connect is parked (each List is a round trip through the bus).
    let listed = loop {
        let out = sdir(&t, &["list"]).assert_success();
        if out.stdout.contains("UNBOUND") {
            break out.stdout;
        }
    };
    assert!(
        listed.contains("\nBINDINGS\n\n        clientA.mcc -> modem.le_mcc\n"),
        "{listed}"
    );
    assert!(listed.contains(&format!("        modem.le_mcc  (protocol ID = '0123456789abcdef0123456789abcdef', {modem_unique}, pid {})", modem.pid())), "{listed}");
    assert!(
        listed.contains(&format!(
            "] <root>.gnss UNBOUND  (protocol ID = '', {waiter_unique})"
        )),
        "{listed}"
    );

    let json = sdir(&t, &["list", "--format=json"]).assert_success();
    let json: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(
        json["bindings"][0]["origin"]
            .as_str()
            .map(|o| o.ends_with("system.bindings:8")),
        Some(true),
        "{json}"
    );
    assert_eq!(json["services"][0]["owner"], modem_unique);
    assert_eq!(json["waiting"][0]["state"], "UNBOUND");

    // why: by app name and by unique name, allowed and denied.
    let why = sdir(&t, &["why", "clientA", "io.telaf.modem.le_mcc"]).assert_success();
    assert!(why.stdout.starts_with("ALLOWED: clientA may call io.telaf.modem.le_mcc through the binding \"clientA.mcc -> modem.le_mcc\" ("), "{why}");
    let why = sdir(&t, &["why", &waiter_unique, "modem.le_mcc"]).assert_success();
    assert!(
        why.stdout.contains(&format!(
            "{waiter_unique} is no app (no app's match holds for exe="
        )),
        "{why}"
    );
    assert!(why.stdout.contains("DENIED: <root> has no binding to modem.le_mcc (missing \"bind <root>.<interface> -> modem.le_mcc\")"), "{why}");
    let why = sdir(&t, &["why", "clientA", "org.example.Other"]).assert_success();
    assert!(why.stdout.contains("is not a TelAF service"), "{why}");

    // bind: the waiting client is answered; unbind; load brings the file's rules back.
    sdir(&t, &["bind", "<root>.gnss", "modem.le_mcc"]).assert_success();
    let answered = waiter.wait_for_stdout(Duration::from_secs(10), |o| o.contains("connect "));
    assert!(
        answered.contains("connect OK io.telaf.modem.le_mcc /io/telaf/le_mcc"),
        "{answered}"
    );
    let list = sdir(&t, &["list"]).assert_success();
    assert!(
        list.stdout
            .contains("        <root>.gnss -> modem.le_mcc\n"),
        "{list}"
    );
    sdir(&t, &["unbind", "<root>.gnss"]).assert_success();
    let missing = sdir(&t, &["unbind", "<root>.gnss"]).assert_failure();
    assert!(
        missing.stderr.contains("<root>.gnss is not bound"),
        "{missing}"
    );
    sdir(&t, &["bind", "*.x", "modem.le_mcc"]).assert_success();
    sdir(&t, &["load"]).assert_success();
    let list = sdir(&t, &["list"]).assert_success();
    assert!(
        !list.stdout.contains("*.x"),
        "a load drops bindings made at run time:\n{list}"
    );
    t.rewrite("app broken {\n");
    let refused = sdir(&t, &["load"]).assert_failure();
    assert!(
        refused
            .stderr
            .contains("system.bindings:1:1: expected `}` to close app `broken`"),
        "{refused}"
    );

    // telbusctl's view of the same.
    let table = telbusctl(&t, &["bindings"]).assert_success();
    assert!(
        table
            .stdout
            .contains("CLIENT   INTERFACE  SERVER  SERVICE  ORIGIN"),
        "{table}"
    );
    assert!(
        table.stdout.contains("clientA  mcc        modem   le_mcc"),
        "{table}"
    );
    assert!(
        table.stdout.contains(&format!(
            "io.telaf.modem.le_mcc  le_mcc  0123456789abcdef0123456789abcdef  {modem_unique}"
        )),
        "{table}"
    );
    let json = telbusctl(&t, &["bindings", "--json"]).assert_success();
    let json: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(json["bindings"].as_array().unwrap().len(), 1, "{json}");
}

#[test]
fn refs_lists_live_references_per_service_and_client() {
    let t = TelafBus::start(SYSTEM, CLIENT);
    let client = t.spawn("client-a", &["hold"]);
    let client_unique = client
        .wait_for_text("holding", Duration::from_secs(10))
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("unique ")
        .to_string();
    // The test's connection is the service that hands out the references.
    telbus_dbus_tests::run(async {
        let service = t.bus.connect().await;
        let me = service.unique_name().unwrap().to_string();
        for (p, shared) in [
            ("/io/telaf/le_mcc/Call/1", false),
            ("/io/telaf/le_mcc/handler/CallEvent/2", true),
        ] {
            service
                .call_method(
                    Some("org.freedesktop.DBus"),
                    "/io/telaf/Broker1",
                    Some("io.telaf.Broker1"),
                    "AddReference",
                    &(
                        client_unique.as_str(),
                        zbus::wire::ObjectPath::try_from(p).unwrap(),
                        shared,
                    ),
                )
                .await
                .expect("AddReference");
        }
        let refs = sdir(&t, &["refs"]).assert_success();
        assert!(refs.stdout.starts_with("SERVICE"), "{refs}");
        let row = |path: &str| -> Vec<String> {
            let line = refs
                .stdout
                .lines()
                .find(|l| l.contains(path))
                .unwrap_or_else(|| panic!("{path} missing:\n{refs}"));
            line.split_whitespace().map(str::to_string).collect()
        };
        assert_eq!(
            row("/io/telaf/le_mcc/Call/1"),
            [
                me.as_str(),
                "-",
                &client_unique,
                "clientA",
                "/io/telaf/le_mcc/Call/1",
                "no"
            ]
        );
        assert_eq!(row("/io/telaf/le_mcc/handler/CallEvent/2")[5], "yes");
        let none = sdir(&t, &["refs", ":1.9999"]).assert_success();
        assert_eq!(none.stdout.lines().count(), 1, "only the header:\n{none}");
        let json = sdir(&t, &["refs", "--json"]).assert_success();
        let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        assert_eq!(json["clients"][0]["client"], client_unique.as_str());
        assert_eq!(
            json["clients"][0]["references"].as_array().unwrap().len(),
            2
        );
        let table = telbusctl(&t, &["references"]).assert_success();
        assert!(table.stdout.contains("/io/telaf/le_mcc/Call/1"), "{table}");
        let json = telbusctl(&t, &["references", "--json"]).assert_success();
        let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        assert_eq!(json["services"][0]["service"], me.as_str());
        drop(service);
    });
}
