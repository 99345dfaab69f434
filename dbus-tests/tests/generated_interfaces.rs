//! End to end: Rust generated from interfaces/api/le_mcc.api (see build.rs) serves a small
//! in-test implementation on a private bus, and busctl, gdbus and the generated zbus proxy
//! call it: a reference returned and used (and refused to another client), an event handler
//! added and its unicast signal received, a too-long string refused with InvalidArgs, and
//! the introspection XML round-tripped through `gdbus introspect`.

include!(concat!(env!("OUT_DIR"), "/telaf_apis.rs"));

use futures::StreamExt;
use le_mcc::client::LeMccProxy;
use le_mcc::server::{self as mcc_server, LeMcc, LeMccServer};
use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;
use telaf_common::{Context, LeResult, Subscriber};
use telbus_dbus_tests::TestBus;
use zbus::fdo;
use zbus::names::OwnedUniqueName;
use zbus::wire::OwnedObjectPath;

const SERVICE: &str = "io.telaf.modemService.le_mcc";
const ROOT: &str = "/io/telaf/le_mcc";

/// A pretend modem: calls are per-client references; Start reports EVENT_ORIGINATING to
/// every subscriber.
#[derive(Default)]
struct Modem {
    state: Mutex<ModemState>,
}

#[derive(Default)]
struct ModemState {
    next_call: u64,
    /// path → (owner, number)
    calls: HashMap<String, (String, String)>,
    subscribers: Vec<Subscriber>,
}

impl Modem {
    fn owned_call(&self, ctx: &Context, call: &OwnedObjectPath) -> Option<String> {
        let state = self.state.lock().unwrap();
        match state.calls.get(call.as_str()) {
            Some((owner, number)) if owner == ctx.sender.as_str() => Some(number.clone()),
            _ => None,
        }
    }
}

impl LeMcc for Modem {
    async fn create(&self, ctx: Context, phone_num_ptr: String) -> fdo::Result<OwnedObjectPath> {
        let mut state = self.state.lock().unwrap();
        state.next_call += 1;
        let path = format!("{ROOT}/Call/{}", state.next_call);
        state
            .calls
            .insert(path.clone(), (ctx.sender.to_string(), phone_num_ptr));
        Ok(OwnedObjectPath::try_from(path).unwrap())
    }

    async fn delete(&self, ctx: Context, call_ref: OwnedObjectPath) -> fdo::Result<LeResult> {
        if self.owned_call(&ctx, &call_ref).is_none() {
            return Ok(LeResult::NotFound);
        }
        self.state.lock().unwrap().calls.remove(call_ref.as_str());
        Ok(LeResult::Ok)
    }

    async fn start(&self, ctx: Context, call_ref: OwnedObjectPath) -> fdo::Result<LeResult> {
        if self.owned_call(&ctx, &call_ref).is_none() {
            return Ok(LeResult::NotFound);
        }
        let subscribers = self.state.lock().unwrap().subscribers.clone();
        for s in &subscribers {
            mcc_server::emit_call_event(s, call_ref.clone(), le_mcc::Event::EVENT_ORIGINATING)
                .await
                .map_err(|e| fdo::Error::Failed(e.to_string()))?;
        }
        Ok(LeResult::Ok)
    }

    async fn is_connected(&self, _: Context, _: OwnedObjectPath) -> fdo::Result<bool> {
        Ok(false)
    }

    async fn get_remote_tel(
        &self,
        ctx: Context,
        call_ref: OwnedObjectPath,
    ) -> fdo::Result<(LeResult, String)> {
        Ok(match self.owned_call(&ctx, &call_ref) {
            Some(number) => (LeResult::Ok, number),
            None => (LeResult::NotFound, String::new()),
        })
    }

    async fn get_termination_reason(
        &self,
        _: Context,
        _: OwnedObjectPath,
    ) -> fdo::Result<le_mcc::TerminationReason> {
        Ok(le_mcc::TerminationReason::TERM_UNDEFINED)
    }

    async fn get_platform_specific_termination_code(
        &self,
        _: Context,
        _: OwnedObjectPath,
    ) -> fdo::Result<i32> {
        Ok(0)
    }

    async fn answer(&self, _: Context, _: OwnedObjectPath) -> fdo::Result<LeResult> {
        Ok(LeResult::Unsupported)
    }

    async fn hang_up(&self, _: Context, _: OwnedObjectPath) -> fdo::Result<LeResult> {
        Ok(LeResult::Unsupported)
    }

    async fn hang_up_all(&self, _: Context) -> fdo::Result<LeResult> {
        Ok(LeResult::Ok)
    }

    async fn get_caller_id_restrict(
        &self,
        _: Context,
        _: OwnedObjectPath,
    ) -> fdo::Result<(LeResult, telaf_common::LeOnOff)> {
        Ok((LeResult::Ok, telaf_common::LeOnOff::Off))
    }

    async fn set_caller_id_restrict(
        &self,
        _: Context,
        _: OwnedObjectPath,
        _: telaf_common::LeOnOff,
    ) -> fdo::Result<LeResult> {
        Ok(LeResult::Ok)
    }

    async fn add_call_event_handler(&self, subscriber: Subscriber) -> fdo::Result<bool> {
        self.state.lock().unwrap().subscribers.push(subscriber);
        Ok(true)
    }

    async fn remove_call_event_handler(
        &self,
        _owner: OwnedUniqueName,
        handler: OwnedObjectPath,
    ) -> fdo::Result<()> {
        self.state
            .lock()
            .unwrap()
            .subscribers
            .retain(|s| s.path != handler);
        Ok(())
    }

    async fn set_call_waiting_service(&self, _: Context, _: bool) -> fdo::Result<LeResult> {
        Ok(LeResult::Ok)
    }

    async fn get_call_waiting_service(&self, _: Context) -> fdo::Result<(LeResult, bool)> {
        Ok((LeResult::Ok, false))
    }

    async fn activate_call(&self, _: Context, _: OwnedObjectPath) -> fdo::Result<LeResult> {
        Ok(LeResult::Unsupported)
    }

    async fn set_amr_wb_capability(&self, _: Context, _: bool) -> fdo::Result<LeResult> {
        Ok(LeResult::Ok)
    }

    async fn get_amr_wb_capability(&self, _: Context) -> fdo::Result<(LeResult, bool)> {
        Ok((LeResult::Ok, true))
    }
}

async fn connect(address: &str) -> zbus::Connection {
    zbus::connection::Builder::address(address)
        .build()
        .await
        .expect("connect to the test bus")
}

async fn serve_modem(address: &str) -> zbus::Connection {
    zbus::connection::Builder::address(address)
        .serve_at(ROOT, LeMccServer::new(Modem::default()))
        .serve_at(ROOT, le_mcc::service1())
        .name(SERVICE)
        .build()
        .await
        .expect("serve le_mcc")
}

/// Runs a D-Bus command-line client against the test bus only, with a time limit.
fn run(program: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("timeout")
        .arg("20")
        .arg(program)
        .args(args)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn busctl(address: &str, args: &[&str]) -> (bool, String, String) {
    let addr = format!("--address={address}");
    let mut all = vec![addr.as_str()];
    all.extend_from_slice(args);
    run("busctl", &all)
}

#[test]
fn zbus_proxy_reference_event_and_invalid_args() {
    let bus = TestBus::start();
    let address = bus.address().to_string();
    zbus::block_on(async {
        let _service = serve_modem(&address).await;
        let conn = connect(&address).await;
        let proxy = LeMccProxy::builder(&conn)
            .destination(SERVICE)
            .path(ROOT)
            .build()
            .await
            .unwrap();

        // A reference returned, then used.
        let call = proxy.create("+4930123").await.unwrap();
        assert!(
            call.as_str().starts_with("/io/telaf/le_mcc/Call/"),
            "{call}"
        );
        let (result, number) = proxy.get_remote_tel(&call).await.unwrap();
        assert_eq!(
            (result, number.as_str()),
            (LeResult::Ok.to_wire(), "+4930123")
        );

        // The same reference from another client is not that client's.
        let other = connect(&address).await;
        let other_proxy = LeMccProxy::builder(&other)
            .destination(SERVICE)
            .path(ROOT)
            .build()
            .await
            .unwrap();
        let (result, _) = other_proxy.get_remote_tel(&call).await.unwrap();
        assert_eq!(result, LeResult::NotFound.to_wire());

        // An event handler: its unicast signal arrives on the handler path.
        let handler = proxy.add_call_event_handler().await.unwrap();
        assert!(
            handler
                .as_str()
                .starts_with("/io/telaf/le_mcc/handler/CallEvent/"),
            "{handler}"
        );
        let on_handler = LeMccProxy::builder(&conn)
            .destination(SERVICE)
            .path(handler.clone())
            .build()
            .await
            .unwrap();
        let mut events = on_handler.receive_call_event().await.unwrap();
        assert_eq!(proxy.start(&call).await.unwrap(), LeResult::Ok.to_wire());
        let signal = zbus_timeout(events.next())
            .await
            .expect("a CallEvent signal");
        let header = signal.message().header();
        assert_eq!(
            header.destination().map(|d| d.to_string()),
            conn.unique_name().map(|n| n.to_string())
        );
        let args = signal.args().unwrap();
        assert_eq!(args.call_ref(), &call);
        assert_eq!(
            le_mcc::Event::try_from(*args.event()),
            Ok(le_mcc::Event::EVENT_ORIGINATING)
        );

        // Only the owner may remove the handler; removal is idempotent.
        let err = other_proxy
            .remove_call_event_handler(&handler)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("AccessDenied"), "{err}");
        proxy.remove_call_event_handler(&handler).await.unwrap();
        proxy.remove_call_event_handler(&handler).await.unwrap();

        // One byte over le_mdmDefs.PHONE_NUM_MAX_LEN (17).
        let long = "1".repeat(18);
        let err = fdo::Error::from(proxy.create(&long).await.unwrap_err());
        assert_eq!(
            zbus::DBusError::name(&err).as_str(),
            "org.freedesktop.DBus.Error.InvalidArgs"
        );
        match err {
            fdo::Error::InvalidArgs(message) => {
                assert!(
                    message.contains("phoneNumPtr") && message.contains("17"),
                    "{message}"
                )
            }
            other => panic!("expected InvalidArgs, got {other:?}"),
        }
        assert!(
            proxy.create(&"1".repeat(17)).await.is_ok(),
            "exactly the limit is allowed"
        );
    });
    assert!(bus.is_alive(), "the bus survived");
}

/// Waits at most 10 s for a future.
async fn zbus_timeout<F: std::future::Future>(f: F) -> F::Output {
    let timeout = async {
        let (tx, rx) = futures::channel::oneshot::channel::<()>();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(10));
            let _ = tx.send(());
        });
        let _ = rx.await;
    };
    futures::pin_mut!(f);
    futures::pin_mut!(timeout);
    match futures::future::select(f, timeout).await {
        futures::future::Either::Left((v, _)) => v,
        futures::future::Either::Right(_) => panic!("timed out"),
    }
}

#[test]
fn busctl_calls_the_generated_interface() {
    let bus = TestBus::start();
    let address = bus.address().to_string();
    let _service = zbus::block_on(serve_modem(&address));

    let call = |args: &[&str]| {
        let mut all = vec!["call", SERVICE, ROOT, "io.telaf.le_mcc"];
        all.extend_from_slice(args);
        busctl(&address, &all)
    };
    let (ok, out, err) = call(&["Create", "s", "+4912"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("o \"/io/telaf/le_mcc/Call/"), "{out}");
    let path = out.trim_start_matches("o ").trim_matches('"').to_string();

    // Each busctl run is a new client: the reference is not its own.
    let (ok, out, err) = call(&["GetRemoteTel", "o", &path]);
    assert!(ok, "{err}");
    assert_eq!(out, "is -1 \"\"");

    let (ok, out, err) = call(&["AddCallEventHandler"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("o \"/io/telaf/le_mcc/handler/CallEvent/"),
        "{out}"
    );

    let (ok, _, err) = call(&["Create", "s", "123456789012345678"]);
    assert!(!ok);
    assert!(err.contains("phoneNumPtr") && err.contains("17"), "{err}");

    let (ok, out, err) = busctl(
        &address,
        &[
            "get-property",
            SERVICE,
            ROOT,
            "io.telaf.Service1",
            "ProtocolId",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out, format!("s \"{}\"", le_mcc::PROTOCOL_ID));

    let (ok, out, err) = busctl(&address, &["introspect", SERVICE, ROOT, "io.telaf.le_mcc"]);
    assert!(ok, "{err}");
    for member in ["Create", "GetRemoteTel", "AddCallEventHandler", "CallEvent"] {
        assert!(out.contains(member), "{member} missing from:\n{out}");
    }
    assert!(bus.is_alive());
}

/// Serves the generated XML as-is (annotations included) from a raw connection, and
/// checks that `gdbus introspect --xml` reads it back with every method, signal,
/// signature and annotation.
#[test]
fn gdbus_round_trips_the_generated_xml() {
    let bus = TestBus::start();
    let address = bus.address().to_string();
    let conn = zbus::block_on(connect(&address));
    let unique = conn.unique_name().unwrap().to_string();
    let server = conn.clone();
    let thread = std::thread::spawn(move || {
        zbus::block_on(async move {
            let mut stream = zbus::MessageStream::from(&server);
            while let Some(Ok(msg)) = stream.next().await {
                let header = msg.header();
                if header.message_type() != zbus::message::Type::MethodCall {
                    continue;
                }
                match header.member().map(|m| m.as_str()) {
                    Some("Introspect") => server
                        .reply(&header, &le_mcc::INTROSPECTION_XML)
                        .await
                        .unwrap(),
                    Some("Stop") => {
                        server.reply(&header, &()).await.unwrap();
                        break;
                    }
                    _ => {}
                }
            }
        })
    });
    let (ok, out, err) = run(
        "gdbus",
        &[
            "introspect",
            "--address",
            &address,
            "--dest",
            &unique,
            "--object-path",
            "/xml",
            "--xml",
        ],
    );
    let _ = busctl(&address, &["call", &unique, "/", "io.telaf.Test", "Stop"]);
    thread.join().unwrap();
    assert!(ok, "{err}");
    assert!(
        out.contains("<interface name=\"io.telaf.le_mcc\">"),
        "{out}"
    );
    let ours = le_mcc::INTROSPECTION_XML;
    // Every name and signature in our XML comes back.
    for piece in ours.split('"').skip(1).step_by(2) {
        assert!(
            out.contains(&format!("\"{piece}\"")),
            "{piece:?} lost in:\n{out}"
        );
    }
    assert!(out.contains(le_mcc::PROTOCOL_ID));
    assert!(bus.is_alive());
}
