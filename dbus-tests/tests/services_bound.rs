//! End to end: the TelAF-style services under the demo system definition
//! (`services/demo.bindings`, given to telbusd with `--bindings`), activated on first use
//! through their `.service` files. The services register the references they hand out with
//! the bus (io.telaf.Broker1.AddReference) and release them on its ClientGone notice when
//! their client dies (SIGKILL): the call ends (le_mcc), the connection drops with its last
//! holder (le_data), the wakeup source goes (le_pm), the GPIO pin is free again (le_gpio). Bound clients (the example programs, app
//! `demo`; busctl, app `shell`) are allowed; unbound ones are refused with AccessDenied naming
//! the missing binding, before anything is started for them; another client's reference is
//! refused by the bus. Last, `scripts/start-bus.sh` (the README's first command) is run and
//! the lines it prints are run as printed.
//!
//! telbusd only (dbus-daemon has no bindings). Build first:
//! `cargo build --release -p telbus-broker -p telbus-services -p telbus-examples -p telbus-tools`.

include!(concat!(env!("OUT_DIR"), "/telaf_apis.rs"));

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use le_data::client::LeDataProxy;
use le_gpio::client::LeGpioProxy;
use le_info::client::LeInfoProxy;
use le_mcc::client::LeMccProxy;
use le_pm::client::LePmProxy;
use telaf_common::LeResult;
use telbus_dbus_tests::services::{
    DATA, INFO, MCC, PIN1, PM, next_property_value, property_changes, release_program, workspace,
};
use telbus_dbus_tests::{
    Background, STEP_TIMEOUT, TestBus, expect_error, run, run_command, within,
};
use tempfile::TempDir;
use zbus::Connection;
use zbus::wire::OwnedObjectPath;

const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";

/// telbusd with the demo definition and every shipped `.service` file (Exec pointing into
/// the release build).
struct BoundBus {
    bus: TestBus,
    _dir: TempDir,
}

/// The demo definition as shipped, its `apipath` made absolute, plus one app for this test
/// program (so that its own connections are a bound client) bound to every service. Other
/// connections of this user (gdbus, dbus-send, an unrecognised executable) stay unbound.
fn bindings_file(dir: &Path) -> PathBuf {
    let demo = std::fs::read_to_string(workspace().join("services/demo.bindings"))
        .expect("services/demo.bindings");
    assert!(demo.contains("apipath \"../interfaces/api\""), "{demo}");
    let demo = demo.replace(
        "apipath \"../interfaces/api\"",
        &format!(
            "apipath \"{}\"",
            workspace().join("interfaces/api").display()
        ),
    );
    let test = "
app tests {
    match exe=*/services_bound-*
}
bind tests.info -> infoService.le_info
bind tests.gpio1 -> gpioService.le_gpioPin1
bind tests.mcc -> modemService.le_mcc
bind tests.data -> dataConnectionService.le_data
bind tests.pm -> powerMgr.le_pm
";
    let file = dir.join("system.bindings");
    std::fs::write(&file, format!("{demo}{test}")).unwrap();
    file
}

impl BoundBus {
    fn start() -> BoundBus {
        let dir = tempfile::Builder::new()
            .prefix("telbus-bound.")
            .tempdir()
            .unwrap();
        let file = bindings_file(dir.path());
        let release = release_program("telbus-le-info")
            .parent()
            .unwrap()
            .to_path_buf();
        let mut builder = TestBus::builder().arg(format!("--bindings={}", file.display()));
        let services = workspace().join("services/dbus-1/services");
        for entry in std::fs::read_dir(&services).expect("services/dbus-1/services") {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let field = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
                    .to_string()
            };
            let exec =
                field("Exec=").replace("/usr/libexec/telbus", &release.display().to_string());
            builder = builder.activatable(&field("Name="), &exec);
        }
        BoundBus {
            bus: builder.start(),
            _dir: dir,
        }
    }

    /// Starts an example client (`telaf-call`, `telaf-hold`: app `demo`).
    fn example(&self, name: &str, args: &[&str]) -> Background {
        self.example_at(&release_program(name), args)
    }

    fn example_at(&self, exe: &Path, args: &[&str]) -> Background {
        let mut command = self.bus.command(exe);
        command
            .arg(format!("--address={}", self.bus.address()))
            .args(args);
        Background::spawn(command)
    }

    /// Waits until the bus's stderr (where the activated services log too) has `needle`.
    #[track_caller]
    fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_log_where(needle, |log| log.contains(needle))
    }

    /// Waits until the bus's stderr satisfies `done` (`what` says what is awaited).
    #[track_caller]
    fn wait_for_log_where(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let log = self.bus.daemon_stderr();
            if done(&log) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the bus's log never showed {what:?}:\n{log}"
            );
            // The log is a pipe read by a thread: nothing to await but its growth.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn has_owner(&self, name: &str) -> bool {
        let out = self
            .bus
            .busctl([
                "call",
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "NameHasOwner",
                "s",
                name,
            ])
            .assert_success();
        out.stdout.trim() == "b true"
    }
}

fn ok() -> i32 {
    LeResult::Ok.to_wire()
}

/// io.telaf.Broker1.References as JSON.
async fn references(conn: &Connection) -> serde_json::Value {
    let reply = within(
        STEP_TIMEOUT,
        "References",
        conn.call_method(
            Some("org.freedesktop.DBus"),
            "/io/telaf/Broker1",
            Some("io.telaf.Broker1"),
            "References",
            &(),
        ),
    )
    .await
    .expect("References");
    serde_json::from_str(&reply.body().deserialize::<String>().unwrap()).unwrap()
}

/// The paths the bus holds as references of `client`, sorted.
async fn references_of(conn: &Connection, client: &str) -> Vec<String> {
    let json = references(conn).await;
    let mut paths: Vec<String> = json["clients"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["client"] == client)
        .flat_map(|c| c["references"].as_array().unwrap().clone())
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    paths.sort();
    paths
}

/// The unique name of the connection with process id `pid`.
async fn unique_name_of_pid(conn: &Connection, pid: u32) -> String {
    let driver = |member: &'static str, name: Option<String>| async move {
        let reply = match name {
            Some(name) => {
                conn.call_method(
                    Some("org.freedesktop.DBus"),
                    "/org/freedesktop/DBus",
                    Some("org.freedesktop.DBus"),
                    member,
                    &(name,),
                )
                .await
            }
            None => {
                conn.call_method(
                    Some("org.freedesktop.DBus"),
                    "/org/freedesktop/DBus",
                    Some("org.freedesktop.DBus"),
                    member,
                    &(),
                )
                .await
            }
        };
        reply.unwrap()
    };
    let names: Vec<String> = driver("ListNames", None)
        .await
        .body()
        .deserialize()
        .unwrap();
    for name in names.into_iter().filter(|n| n.starts_with(':')) {
        let reply = driver("GetConnectionUnixProcessID", Some(name.clone())).await;
        if reply.body().deserialize::<u32>().unwrap() == pid {
            return name;
        }
    }
    panic!("no connection of pid {pid}");
}

#[test]
fn bound_clients_reach_every_service_started_on_first_use() {
    let t = BoundBus::start();
    for name in [INFO, PIN1, MCC, DATA, PM] {
        assert!(!t.has_owner(name), "{name} runs before its first use");
    }
    // busctl is app `shell`: each call activates its service.
    let out = t
        .bus
        .busctl([
            "call",
            INFO,
            "/io/telaf/le_info",
            "io.telaf.le_info",
            "GetImei",
        ])
        .assert_success();
    assert_eq!(out.stdout.trim(), "is 0 \"490154203237518\"");
    let out = t
        .bus
        .busctl([
            "call",
            PIN1,
            "/io/telaf/le_gpioPin1",
            "io.telaf.le_gpio",
            "Read",
        ])
        .assert_success();
    assert_eq!(out.stdout.trim(), "b false");
    let out = t
        .bus
        .busctl([
            "call",
            MCC,
            "/io/telaf/le_mcc",
            "io.telaf.le_mcc",
            "Create",
            "s",
            "123456789012345678",
        ])
        .assert_failure();
    assert!(
        out.stderr
            .contains("argument 'phoneNumPtr' is 18 bytes long; the API allows at most 17"),
        "{out}"
    );
    let out = t
        .bus
        .busctl([
            "get-property",
            PM,
            "/io/telaf/le_pm",
            "io.telaf.sim.le_pm",
            "Awake",
        ])
        .assert_success();
    assert_eq!(out.stdout.trim(), "b false");

    // This program's connections are app `tests`, bound too: the generated proxies.
    run(async {
        let conn = t.bus.connect().await;
        let data = LeDataProxy::builder(&conn)
            .destination(DATA)
            .build()
            .await
            .unwrap();
        assert_eq!(
            data.get_technology().await.unwrap(),
            le_data::Technology::MAX.to_wire()
        );
        let info = LeInfoProxy::builder(&conn)
            .destination(INFO)
            .build()
            .await
            .unwrap();
        let (result, model) = info.get_device_model().await.unwrap();
        assert_eq!((result, model.as_str()), (ok(), "WP7702"));
        let pin = LeGpioProxy::builder(&conn)
            .destination(PIN1)
            .path("/io/telaf/le_gpioPin1")
            .build()
            .await
            .unwrap();
        assert!(!pin.read().await.unwrap());
        let pm = LePmProxy::builder(&conn)
            .destination(PM)
            .build()
            .await
            .unwrap();
        let source = pm.new_wakeup_source(0, "tests").await.unwrap();
        assert_eq!(pm.stay_awake(&source).await.unwrap(), ok());
        assert_eq!(pm.relax(&source).await.unwrap(), ok());
    });
    for name in [INFO, PIN1, MCC, DATA, PM] {
        assert!(t.has_owner(name), "{name} was not activated");
    }
    // Every service found the bus's Broker1 ...
    let lifetimes = "client lifetimes: io.telaf.Broker1 (AddReference, ClientGone)";
    t.wait_for_log_where(lifetimes, |log| log.matches(lifetimes).count() == 5);
    // ... and the bus recognised each as its app, by executable.
    run(async {
        let conn = t.bus.connect().await;
        let reply = conn
            .call_method(
                Some("org.freedesktop.DBus"),
                "/io/telaf/Broker1",
                Some("io.telaf.Broker1"),
                "List",
                &(),
            )
            .await
            .unwrap();
        let list: serde_json::Value =
            serde_json::from_str(&reply.body().deserialize::<String>().unwrap()).unwrap();
        let connections = list["connections"].as_array().unwrap();
        for (app, exe) in [
            ("infoService", "telbus-le-info"),
            ("gpioService", "telbus-le-gpio"),
            ("modemService", "telbus-le-mcc"),
            ("dataConnectionService", "telbus-le-data"),
            ("powerMgr", "telbus-le-pm"),
        ] {
            let exe = release_program(exe).display().to_string();
            assert!(
                connections
                    .iter()
                    .any(|c| c["principal"] == app && c["app"] == true && c["exe"] == exe.as_str()),
                "{app} {exe}: {list:#}"
            );
        }
        let me = conn.unique_name().unwrap().to_string();
        assert!(
            connections
                .iter()
                .any(|c| c["client"] == me.as_str() && c["principal"] == "tests"),
            "{list:#}"
        );
    });
    t.bus.assert_alive();
}

#[test]
fn an_unbound_client_is_refused_naming_the_missing_binding_and_starts_nothing() {
    let t = BoundBus::start();
    // gdbus is no app of the definition: the user principal, which has no binding.
    let out = t
        .bus
        .gdbus([
            "call",
            "--dest",
            PM,
            "--object-path",
            "/io/telaf/le_pm",
            "--method",
            "io.telaf.le_pm.NewWakeupSource",
            "0",
            "tag",
        ])
        .assert_failure();
    assert!(out.stderr.contains(ACCESS_DENIED), "{out}");
    assert!(
        out.stderr
            .contains("has no binding to powerMgr.le_pm (missing \"bind <"),
        "{out}"
    );
    assert!(
        out.stderr.contains(".<interface> -> powerMgr.le_pm\" in "),
        "{out}"
    );
    assert!(!t.has_owner(PM), "an unbound call started le_pm");

    // The example client under a name the definition does not know: its generated proxy's
    // first call is refused, and so is the next one once a bound client started le_mcc.
    let dir = workspace().join("target/release/unbound");
    std::fs::create_dir_all(&dir).unwrap();
    let stranger = dir.join("caller");
    let _ = std::fs::remove_file(&stranger);
    // A hard link, not a copy: a copy's write descriptor could leak into a process forked
    // meanwhile by a parallel test, making the exec fail with ETXTBSY.
    std::fs::hard_link(release_program("telaf-call"), &stranger).unwrap();
    for round in 0..2 {
        let mut refused = t.example_at(&stranger, &["+4930123"]);
        let status = refused
            .wait_exit(STEP_TIMEOUT)
            .expect("the refused client exits");
        assert!(!status.success());
        // zbus prints the error as FDO(AccessDenied("…")); wait for all of it to be read.
        let stderr = refused.wait_for_stderr(STEP_TIMEOUT, |e| e.ends_with('\n'));
        assert!(
            stderr.starts_with("Error: FDO(AccessDenied(\"Access denied by TelAF bindings: <"),
            "{stderr}"
        );
        assert!(
            stderr.contains("has no binding to modemService.le_mcc"),
            "{stderr}"
        );
        assert!(!refused.stdout().contains("call /"), "{}", refused.stdout());
        if round == 0 {
            // Refused before le_mcc was started for it; a bound client starts it.
            assert!(!t.has_owner(MCC), "an unbound call started le_mcc");
            let out = t
                .bus
                .busctl(["introspect", MCC, "/io/telaf/le_mcc"])
                .assert_success();
            assert!(out.stdout.contains("io.telaf.le_mcc"), "{out}");
        }
    }
    // The bound example client, same binary under its own name: allowed.
    let allowed = t.example("telaf-call", &["+4930123"]);
    allowed.wait_for_text("EVENT_CONNECTED", STEP_TIMEOUT);
    t.bus.assert_alive();
}

/// (call reference, event) of the next CallEvent on `stream`.
async fn next_call_event(
    stream: &mut le_mcc::client::CallEventStream,
) -> (OwnedObjectPath, le_mcc::Event) {
    let signal = within(STEP_TIMEOUT, "a CallEvent", stream.next())
        .await
        .expect("the CallEvent stream ended");
    let args = signal.args().unwrap();
    let event = le_mcc::Event::try_from(*args.event()).unwrap();
    (args.call_ref().clone(), event)
}

#[test]
fn le_mcc_call_ends_through_client_gone_when_its_client_is_killed() {
    let t = BoundBus::start();
    run(async {
        let watcher = t.bus.connect().await;
        let mcc = LeMccProxy::builder(&watcher)
            .destination(MCC)
            .path("/io/telaf/le_mcc")
            .build()
            .await
            .unwrap();
        let handler = mcc.add_call_event_handler().await.unwrap();
        let on_handler = LeMccProxy::builder(&watcher)
            .destination(MCC)
            .path(handler.clone())
            .build()
            .await
            .unwrap();
        let mut events = on_handler.receive_call_event().await.unwrap();

        let client = t.example("telaf-call", &["--talk=3600", "+4930123"]);
        let out = client.wait_for_text("EVENT_CONNECTED", STEP_TIMEOUT);
        let call = out
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("call "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or_else(|| panic!("{out}"))
            .to_string();
        let mut watchers_call = None;
        use le_mcc::Event::*;
        for expected in [EVENT_ORIGINATING, EVENT_ALERTING, EVENT_CONNECTED] {
            let (reference, event) = next_call_event(&mut events).await;
            assert_eq!(event, expected);
            watchers_call.get_or_insert(reference);
        }
        let watchers_call = watchers_call.unwrap();

        // The bus holds the client's references: its call and its handler registration.
        let victim = unique_name_of_pid(&watcher, client.pid()).await;
        let held = references_of(&watcher, &victim).await;
        assert_eq!(held.len(), 2, "{held:?}");
        assert!(held.contains(&call), "{held:?}");
        assert!(
            held.iter()
                .any(|p| p.starts_with("/io/telaf/le_mcc/handler/CallEvent/")),
            "{held:?}"
        );
        // Ours too (the handler, and the watcher's own reference to the call).
        let mine = references_of(&watcher, watcher.unique_name().unwrap().as_str()).await;
        assert!(mine.contains(&handler.to_string()), "{mine:?}");
        assert!(mine.contains(&watchers_call.to_string()), "{mine:?}");

        // Another client's reference: the bus refuses a call on it, with the generated proxy
        // and with busctl (both bound to le_mcc).
        let on_theirs = LeMccProxy::builder(&watcher)
            .destination(MCC)
            .path(call.clone())
            .build()
            .await
            .unwrap();
        let (name, text) = expect_error(on_theirs.get_termination_reason(&watchers_call).await);
        assert_eq!(name, ACCESS_DENIED);
        assert!(
            text.starts_with(&format!("{call} is a reference of ")),
            "{text}"
        );
        assert!(text.contains(&format!("held by {victim}")), "{text}");
        let out = t
            .bus
            .busctl(["call", MCC, &call, "org.freedesktop.DBus.Peer", "Ping"])
            .assert_failure();
        // busctl shows the errno text of AccessDenied only (the bus's log has the rest).
        assert_eq!(out.stderr.trim(), "Call failed: Access denied", "{out}");
        // Passed as an argument, it is the service that knows it is not ours.
        let (result, _) = mcc
            .get_remote_tel(&OwnedObjectPath::try_from(call.as_str()).unwrap())
            .await
            .unwrap();
        assert_eq!(result, LeResult::NotFound.to_wire());

        client.stop(); // SIGKILL
        assert_eq!(
            next_call_event(&mut events).await,
            (watchers_call.clone(), EVENT_TERMINATED)
        );
        // Released on the bus's notice: the broker sent ClientGone, the service acted on it
        // (it ignores NameOwnerChanged under Broker1).
        t.wait_for_log(&format!("{victim} left holding 2 reference(s) of"));
        t.wait_for_log(&format!(
            "client left the bus; releasing what it held client=\"{victim}\" references=2 via=\"ClientGone\""
        ));
        assert!(references_of(&watcher, &victim).await.is_empty());
        assert_eq!(
            le_mcc::TerminationReason::try_from(
                mcc.get_termination_reason(&watchers_call).await.unwrap()
            ),
            Ok(le_mcc::TerminationReason::TERM_LOCAL_ENDED)
        );
        assert_eq!(mcc.delete(&watchers_call).await.unwrap(), ok());
        let calls: u32 = zbus::Proxy::new(&watcher, MCC, "/io/telaf/le_mcc", "io.telaf.sim.le_mcc")
            .await
            .unwrap()
            .get_property("Calls")
            .await
            .unwrap();
        assert_eq!(calls, 0);
        // The watcher's released reference is no longer the bus's either.
        let mine = references_of(&watcher, watcher.unique_name().unwrap().as_str()).await;
        assert!(!mine.contains(&watchers_call.to_string()), "{mine:?}");
    });
    t.bus.assert_alive();
}

#[test]
fn le_data_connection_drops_through_client_gone_when_the_last_holder_is_killed() {
    let t = BoundBus::start();
    run(async {
        let watcher = t.bus.connect().await;
        let data = LeDataProxy::builder(&watcher)
            .destination(DATA)
            .build()
            .await
            .unwrap();
        let handler = data.add_connection_state_handler().await.unwrap();
        let on_handler = LeDataProxy::builder(&watcher)
            .destination(DATA)
            .path(handler)
            .build()
            .await
            .unwrap();
        let mut states = on_handler.receive_connection_state().await.unwrap();
        let mut holders = property_changes(&watcher, "/io/telaf/le_data").await;
        let mut next_state = async || {
            let signal = within(STEP_TIMEOUT, "ConnectionState", states.next())
                .await
                .expect("the ConnectionState stream ended");
            *signal.args().unwrap().is_connected()
        };

        let first = t.example("telaf-hold", &["data"]);
        let out = first.wait_for_text("holding /io/telaf/le_data/request/", STEP_TIMEOUT);
        assert!(next_state().await);
        let second = t.example("telaf-hold", &["data"]);
        second.wait_for_text("holding /io/telaf/le_data/request/", STEP_TIMEOUT);
        let first_name = unique_name_of_pid(&watcher, first.pid()).await;
        let first_request = out.trim().strip_prefix("holding ").unwrap().to_string();
        assert_eq!(references_of(&watcher, &first_name).await, [first_request]);

        first.stop(); // SIGKILL
        loop {
            let value = next_property_value(&mut holders, "io.telaf.sim.le_data", "Holders").await;
            if u32::try_from(value).unwrap() == 1 {
                break;
            }
        }
        t.wait_for_log(&format!(
            "client left the bus; releasing what it held client=\"{first_name}\" references=1 via=\"ClientGone\""
        ));
        assert_eq!(
            data.get_technology().await.unwrap(),
            le_data::Technology::CELLULAR.to_wire()
        );

        let second_name = unique_name_of_pid(&watcher, second.pid()).await;
        second.stop(); // SIGKILL: the last holder
        assert!(!next_state().await);
        t.wait_for_log(&format!(
            "client left the bus; releasing what it held client=\"{second_name}\" references=1 via=\"ClientGone\""
        ));
        assert_eq!(
            data.get_technology().await.unwrap(),
            le_data::Technology::MAX.to_wire()
        );
    });
    t.bus.assert_alive();
}

#[test]
fn le_pm_wakeup_source_is_released_through_client_gone_when_its_holder_is_killed() {
    let t = BoundBus::start();
    run(async {
        let watcher = t.bus.connect().await;
        let awake = async || -> bool {
            zbus::Proxy::new(&watcher, PM, "/io/telaf/le_pm", "io.telaf.sim.le_pm")
                .await
                .unwrap()
                .get_property("Awake")
                .await
                .unwrap()
        };
        assert!(!awake().await);
        let mut changes = property_changes(&watcher, "/io/telaf/le_pm").await;

        let holder = t.example("telaf-hold", &["pm", "demo"]);
        let out = holder.wait_for_text("holding /io/telaf/le_pm/wakeup/", STEP_TIMEOUT);
        let source = out
            .trim()
            .strip_prefix("holding ")
            .and_then(|l| l.split(' ').next())
            .unwrap()
            .to_string();
        assert!(awake().await);
        let name = unique_name_of_pid(&watcher, holder.pid()).await;
        assert_eq!(references_of(&watcher, &name).await, [source]);

        holder.stop(); // SIGKILL
        loop {
            let value = next_property_value(&mut changes, "io.telaf.sim.le_pm", "Awake").await;
            if !bool::try_from(value).unwrap() {
                break;
            }
        }
        t.wait_for_log(&format!(
            "client left the bus; releasing what it held client=\"{name}\" references=1 via=\"ClientGone\""
        ));
        assert!(references_of(&watcher, &name).await.is_empty());
    });
    let out = t
        .bus
        .busctl([
            "get-property",
            PM,
            "/io/telaf/le_pm",
            "io.telaf.sim.le_pm",
            "WakeupSources",
        ])
        .assert_success();
    assert_eq!(out.stdout.trim(), "a(ossu) 0");
    t.bus.assert_alive();
}

#[test]
fn le_gpio_pin_is_freed_through_client_gone_when_its_owner_is_killed() {
    let t = BoundBus::start();
    run(async {
        let me = t.bus.connect().await;
        let pin = LeGpioProxy::builder(&me)
            .destination(PIN1)
            .path("/io/telaf/le_gpioPin1")
            .build()
            .await
            .unwrap();
        let owner = || async {
            zbus::Proxy::new(&me, PIN1, "/io/telaf/le_gpioPin1", "io.telaf.sim.le_gpio")
                .await
                .unwrap()
                .get_property::<String>("Owner")
                .await
                .unwrap()
        };
        // Activates the pin's service.
        assert_eq!(owner().await, "");
        let mut changes = property_changes(&me, "/io/telaf/le_gpioPin1").await;

        let holder = t.example("telaf-hold", &["gpio", "1"]);
        holder.wait_for_text("holding pin 1 (SetPushPullOutput: 0)", STEP_TIMEOUT);
        let name = unique_name_of_pid(&me, holder.pid()).await;
        assert_eq!(owner().await, name);
        // The pin is the holder's: configuring it is LE_BUSY for us, reading is open.
        let high = le_gpio::Polarity::ACTIVE_HIGH.to_wire();
        assert_eq!(pin.set_input(high).await.unwrap(), LeResult::Busy.to_wire());
        assert!(pin.is_output().await.unwrap());
        // Its session is a shared reference: registered with the bus, callable by all.
        let held = references_of(&me, &name).await;
        assert_eq!(held.len(), 1, "{held:?}");
        assert!(
            held[0].starts_with("/io/telaf/le_gpioPin1/session/"),
            "{held:?}"
        );

        holder.stop(); // SIGKILL
        loop {
            let value = next_property_value(&mut changes, "io.telaf.sim.le_gpio", "Owner").await;
            if String::try_from(value).unwrap().is_empty() {
                break;
            }
        }
        t.wait_for_log(&format!(
            "client left the bus; releasing what it held client=\"{name}\" references=1 via=\"ClientGone\""
        ));
        assert_eq!(pin.set_input(high).await.unwrap(), ok());
        assert_eq!(owner().await, me.unique_name().unwrap().as_str());
    });
    t.bus.assert_alive();
}

/// `scripts/start-bus.sh` as the README's quick start runs it (without the build step, which
/// the test's own build did), and each line it prints, run as printed.
#[test]
fn the_quick_start_script_starts_a_bound_bus_and_its_printed_lines_work() {
    let mut command = Command::new(workspace().join("scripts/start-bus.sh"));
    command.arg("--no-build");
    let mut script = Background::spawn(command);
    let out = script.wait_for_text("Ctrl-C stops the bus.", STEP_TIMEOUT);
    let lines: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .filter(|l| !l.starts_with(' '))
        .collect();
    assert!(lines[0].starts_with("unix:path=/tmp/telbus."), "{out}");
    let commands = &lines[1..];
    assert_eq!(commands.len(), 6, "{out}");
    let sh = |line: &str| {
        let mut command = Command::new("sh");
        command.arg("-c").arg(line);
        command
    };
    let output = |line: &str| run_command(sh(line), STEP_TIMEOUT);

    let imei = output(commands[0]).assert_success();
    assert_eq!(imei.stdout, "is 0 \"490154203237518\"\n");
    let pin = output(commands[1]).assert_success();
    assert_eq!(pin.stdout, "b false\n");
    assert!(commands[2].contains(" monitor io.telaf.modemService.le_mcc"));
    let monitor = Background::spawn(sh(commands[2]));
    monitor.wait_for_stderr(STEP_TIMEOUT, |e| {
        e.contains("Monitoring bus message stream.")
    });
    let call = output(commands[3]).assert_success();
    let events: Vec<&str> = call
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split(' ').nth(1).unwrap_or(""))
        .collect();
    assert!(
        call.stdout.starts_with("call /io/telaf/le_mcc/call/"),
        "{call}"
    );
    assert_eq!(
        events,
        ["EVENT_ORIGINATING", "EVENT_ALERTING", "EVENT_CONNECTED"]
    );
    // The monitor saw the events go to the client (4 is EVENT_CONNECTED).
    monitor.wait_for_stdout(STEP_TIMEOUT, |o| {
        o.matches("Member=CallEvent").count() >= 3 && o.contains("INT32 4;")
    });
    let list = output(commands[4]).assert_success();
    assert!(list.stdout.contains("BINDINGS"), "{list}");
    assert!(
        list.stdout
            .contains("        shell.mcc -> modemService.le_mcc\n"),
        "{list}"
    );
    assert!(
        list.stdout
            .contains("        demo.mcc -> modemService.le_mcc\n"),
        "{list}"
    );
    assert!(
        list.stdout.contains(
            "        modemService.le_mcc  (protocol ID = 'cb61ba188565d15be99ea07ee10a6309', :1."
        ),
        "{list}"
    );
    let refused = output(commands[5]).assert_failure();
    assert!(
        refused.stderr.starts_with(&format!(
            "Error {ACCESS_DENIED}: Access denied by TelAF bindings: <"
        )),
        "{refused}"
    );
    assert!(
        refused
            .stderr
            .contains("has no binding to infoService.le_info"),
        "{refused}"
    );
    drop(monitor);

    // Ctrl-C (here SIGTERM): the bus stops, the temp dir goes.
    let dir = lines[0]
        .strip_prefix("unix:path=")
        .and_then(|a| a.split(',').next())
        .and_then(|p| Path::new(p).parent())
        .unwrap()
        .to_path_buf();
    assert!(dir.exists());
    unsafe { libc::kill(script.pid() as libc::pid_t, libc::SIGTERM) };
    script
        .wait_exit(STEP_TIMEOUT)
        .expect("start-bus.sh exits on SIGTERM");
    assert!(!dir.exists(), "{} was left behind", dir.display());
    let log = script.wait_for_stderr(STEP_TIMEOUT, |e| e.contains("services/demo.bindings"));
    assert!(
        log.contains("TelAF bindings loaded from") && log.contains("services/demo.bindings"),
        "{log}"
    );
}
