//! polkit on a system bus served by the bus under test, and telbus's `polkit_action` rules.
//!
//! The bus runs with this machine's real system.conf and system.d (so polkit's own
//! org.freedesktop.PolicyKit1.conf lets user polkitd own its name), on a private socket. Debian's
//! real polkitd (package `polkitd`, which also has pkcheck) runs with DBUS_SYSTEM_BUS_ADDRESS
//! pointing at it, in a private mount namespace where temp dirs are bind-mounted over
//! /etc/polkit-1/rules.d, /usr/share/polkit-1/rules.d and /usr/share/polkit-1/actions: it sees
//! the test's action file and rules file only, and the machine's own files are never touched.
//! The rules grant `io.telaf.test.granted` and deny `io.telaf.test.denied` to everyone.
//!
//! polkit authorizes everything for root without reading the rules, so the subjects are
//! processes and connections of user nobody. The tests need root (to mount, and to become
//! nobody); without root or without polkitd they say why and pass.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use telbus_dbus_tests::{
    Background, CLIENT_TIMEOUT, ClientOutput, RawClient, STEP_TIMEOUT, TestBus, TestBusBuilder,
    daemon_path, next_signal, run, run_command, socket_path, within,
};
use zbus::Message;
use zbus::message::Type;
use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};

const POLKITD: &str = "/usr/lib/polkit-1/polkitd";
const POLKIT_NAME: &str = "org.freedesktop.PolicyKit1";
const GRANTED: &str = "io.telaf.test.granted";
const DENIED: &str = "io.telaf.test.denied";
/// polkitd loads its rules and actions before it takes its name.
const POLKITD_STARTUP: Duration = Duration::from_secs(20);
const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;

const ACTIONS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE policyconfig PUBLIC "-//freedesktop//DTD PolicyKit Policy Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/PolicyKit/1/policyconfig.dtd">
<policyconfig>
  <vendor>telbus tests</vendor>
  <action id="io.telaf.test.granted">
    <description>An action the test's rules grant</description>
    <message>Nobody would see this: the rules decide</message>
    <defaults>
      <allow_any>no</allow_any>
      <allow_inactive>no</allow_inactive>
      <allow_active>no</allow_active>
    </defaults>
  </action>
  <action id="io.telaf.test.denied">
    <description>An action the test's rules deny</description>
    <message>Nobody would see this: the rules decide</message>
    <defaults>
      <allow_any>yes</allow_any>
      <allow_inactive>yes</allow_inactive>
      <allow_active>yes</allow_active>
    </defaults>
  </action>
</policyconfig>
"#;

/// The defaults above say the opposite of the rules, so an answer shows the rules were read.
const RULES: &str = r#"polkit.addRule(function(action, subject) {
    if (action.id == "io.telaf.test.granted") {
        return polkit.Result.YES;
    }
    if (action.id == "io.telaf.test.denied") {
        return polkit.Result.NO;
    }
});
"#;

/// Whether this machine can run the tests; if not, says why.
fn can_run() -> bool {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root (to mount over polkit's directories and become nobody)");
        return false;
    }
    for program in [
        POLKITD,
        "/usr/bin/pkcheck",
        "/usr/bin/unshare",
        "/usr/bin/setpriv",
    ] {
        if !Path::new(program).exists() {
            eprintln!("skipped: {program} is missing (apt-get install polkitd util-linux)");
            return false;
        }
    }
    if uid_of("polkitd").is_none() {
        eprintln!("skipped: there is no user polkitd (apt-get install polkitd)");
        return false;
    }
    true
}

fn uid_of(name: &str) -> Option<u32> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name))
            .then(|| fields.nth(1).and_then(|uid| uid.parse().ok()))
            .flatten()
    })
}

/// Real polkitd on `bus`, with the test's actions and rules; killed when dropped.
struct Polkitd {
    process: Background,
}

impl Polkitd {
    #[track_caller]
    fn start(bus: &TestBus) -> Polkitd {
        let root = bus.dir().join("polkit");
        let (rules, actions, empty) = (
            root.join("rules.d"),
            root.join("actions"),
            root.join("empty"),
        );
        for dir in [&root, &rules, &actions, &empty] {
            std::fs::create_dir_all(dir).unwrap();
            // polkitd reads them as user polkitd.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(rules.join("10-telbus-test.rules"), RULES).unwrap();
        std::fs::write(actions.join("io.telaf.test.policy"), ACTIONS).unwrap();
        for file in [
            rules.join("10-telbus-test.rules"),
            actions.join("io.telaf.test.policy"),
        ] {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let script = format!(
            "mount --bind {rules} /etc/polkit-1/rules.d && \
             mount --bind {empty} /usr/share/polkit-1/rules.d && \
             mount --bind {actions} /usr/share/polkit-1/actions && \
             exec {POLKITD}",
            rules = rules.display(),
            empty = empty.display(),
            actions = actions.display(),
        );
        let mut command = bus.command("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address());
        let process = Background::spawn(command);
        let polkitd = Polkitd { process };
        let owner = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            bus.wait_for_owner(POLKIT_NAME, POLKITD_STARTUP)
        }));
        if let Err(panic) = owner {
            eprintln!(
                "polkitd did not take its name; it said:\n{}{}\nthe bus said:\n{}",
                polkitd.process.stdout(),
                polkitd.process.stderr(),
                bus.daemon_stderr()
            );
            std::panic::resume_unwind(panic);
        }
        polkitd
    }

    fn output(&self) -> String {
        format!("{}{}", self.process.stdout(), self.process.stderr())
    }
}

/// A system bus with this machine's configuration and `extra` rules.
fn system_bus(extra: &str) -> TestBus {
    TestBusBuilder::default().system().config(extra).start()
}

/// A command run as nobody.
fn as_nobody(bus: &TestBus, program: &str) -> std::process::Command {
    let mut command = bus.command("setpriv");
    command.args([
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--",
        program,
    ]);
    command
}

/// pkcheck (as root, allowed to ask about anyone) about process `pid` and `action`.
fn pkcheck(bus: &TestBus, pid: u32, action: &str) -> ClientOutput {
    let mut command = bus.command("pkcheck");
    command.env("DBUS_SYSTEM_BUS_ADDRESS", bus.address()).args([
        "--process",
        &pid.to_string(),
        "--action-id",
        action,
    ]);
    run_command(command, CLIENT_TIMEOUT)
}

/// polkitd owns its name on a system bus with the machine's configuration, and answers real
/// pkcheck and a zbus_polkit client according to the test's rules.
#[test]
fn polkitd_serves_on_the_system_bus() {
    if !can_run() {
        return;
    }
    let bus = system_bus("");
    let polkitd = Polkitd::start(&bus);
    // The subject: a process of user nobody.
    let mut sleeper = as_nobody(&bus, "sleep");
    sleeper.arg("300");
    let subject = Background::spawn(sleeper);
    let pid = subject.pid();

    let granted = pkcheck(&bus, pid, GRANTED);
    assert!(
        granted.success(),
        "{granted}\npolkitd:\n{}",
        polkitd.output()
    );
    let denied = pkcheck(&bus, pid, DENIED);
    // pkcheck: 1 is "not authorized".
    assert_eq!(denied.status.code(), Some(1), "{denied}");
    assert!(denied.all_output().contains("Not authorized"), "{denied}");

    run(async {
        let connection = bus.connect().await;
        let authority = within(
            STEP_TIMEOUT,
            "an AuthorityProxy",
            AuthorityProxy::new(&connection),
        )
        .await
        .unwrap();
        let ask = |action: &'static str| {
            let authority = &authority;
            async move {
                let subject = Subject::new_for_pid(pid, None, None).expect("a subject");
                within(
                    STEP_TIMEOUT,
                    "CheckAuthorization",
                    authority.check_authorization(
                        &subject,
                        action,
                        &Default::default(),
                        CheckAuthorizationFlags::empty(),
                        "",
                    ),
                )
                .await
                .expect("CheckAuthorization")
            }
        };
        let yes = ask(GRANTED).await;
        assert!(yes.is_authorized && !yes.is_challenge, "{yes:?}");
        let no = ask(DENIED).await;
        assert!(!no.is_authorized && !no.is_challenge, "{no:?}");
        // An action nobody declared is an error, not a no.
        let subject = Subject::new_for_pid(pid, None, None).unwrap();
        let unknown = authority
            .check_authorization(
                &subject,
                "io.telaf.test.undeclared",
                &Default::default(),
                CheckAuthorizationFlags::empty(),
                "",
            )
            .await;
        assert!(unknown.is_err(), "{unknown:?}");
    });
    bus.assert_alive();
}

// ---- telbus's polkit_action rules -------------------------------------------------------

const SERVICE: &str = "io.telaf.test.Mcc";
const INTERFACE: &str = "io.telaf.le_mcc";

/// Rules that let anyone call the service, `Start` only with io.telaf.test.granted and
/// `Reset` only with io.telaf.test.denied. (dbus-daemon would refuse the attribute.)
fn guarded_rules() -> String {
    format!(
        r#"<policy user="root">
    <allow own="{SERVICE}"/>
  </policy>
  <policy context="default">
    <allow send_destination="{SERVICE}" send_interface="{INTERFACE}"/>
    <allow send_destination="{SERVICE}" send_interface="{INTERFACE}" send_member="Start"
           polkit_action="{GRANTED}"/>
    <allow send_destination="{SERVICE}" send_interface="{INTERFACE}" send_member="Reset"
           polkit_action="{DENIED}"/>
  </policy>"#
    )
}

/// A system bus with the guarded rules and an echo service (it answers every call with an
/// empty reply) owning the service name.
fn guarded_bus() -> Option<(TestBus, Background)> {
    if !can_run() {
        return None;
    }
    if daemon_path().ends_with("dbus-daemon") {
        eprintln!("skipped: polkit_action is a telbus extension, which dbus-daemon refuses");
        return None;
    }
    let bus = system_bus(&guarded_rules());
    let Some((service, _)) = bus.spawn_echo_service(Some(SERVICE)) else {
        eprintln!("skipped: dbus-test-tool is missing (apt-get install dbus-tests)");
        return None;
    };
    Some((bus, service))
}

/// A raw client of user nobody: it connects from a thread that has become nobody (the
/// credentials the bus sees are those of the connecting thread), then serves the test thread.
fn connect_as_nobody(bus: &TestBus) -> RawClient {
    let path = socket_path(bus);
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // Raw system calls: glibc's wrappers would change every thread of the test.
                // SAFETY: plain credential system calls with valid arguments, on this thread.
                unsafe {
                    assert_eq!(
                        libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<u32>()),
                        0
                    );
                    assert_eq!(
                        libc::syscall(libc::SYS_setresgid, NOGROUP, NOGROUP, NOGROUP),
                        0
                    );
                    assert_eq!(
                        libc::syscall(libc::SYS_setresuid, NOBODY, NOBODY, NOBODY),
                        0
                    );
                }
                let mut client = RawClient::authenticate(&path);
                client.hello();
                client
            })
            .join()
            .expect("connect as nobody")
    })
}

fn call(member: &'static str) -> zbus::message::Builder<'static> {
    Message::method_call("/io/telaf/test", member)
        .destination(SERVICE)
        .interface(INTERFACE)
}

/// The error name and text of a reply, or None for a method return.
fn error_of(reply: &Message) -> Option<(String, String)> {
    let header = reply.header();
    (header.message_type() == Type::Error).then(|| {
        (
            header
                .error_name()
                .map(|e| e.to_string())
                .unwrap_or_default(),
            reply.body().deserialize::<String>().unwrap_or_default(),
        )
    })
}

#[track_caller]
fn assert_returned(reply: &Message, what: &str, bus: &TestBus) {
    assert!(
        error_of(reply).is_none(),
        "{what}: {:?}\nthe bus said:\n{}",
        error_of(reply),
        bus.daemon_stderr()
    );
}

#[track_caller]
fn assert_denied(reply: &Message, needles: &[&str]) {
    let (name, text) = error_of(reply).expect("an error");
    assert_eq!(name, "org.freedesktop.DBus.Error.AccessDenied", "{text}");
    eprintln!("refused as expected: {text}");
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} not in {text:?}");
    }
}

/// dbus-send as nobody: a call the rules make wait for polkit goes through when polkit
/// authorizes it, and is refused with AccessDenied naming the action when it does not; a call
/// with no polkit_action goes through without polkit.
#[test]
fn polkit_action_allows_and_denies_real_clients() {
    let Some((bus, _service)) = guarded_bus() else {
        return;
    };
    let polkitd = Polkitd::start(&bus);
    let send = |member: &str| {
        let mut command = as_nobody(&bus, "dbus-send");
        command.args([
            format!("--bus={}", bus.address()),
            "--print-reply".to_string(),
            format!("--dest={SERVICE}"),
            "/io/telaf/test".to_string(),
            format!("{INTERFACE}.{member}"),
        ]);
        run_command(command, CLIENT_TIMEOUT)
    };
    let start = send("Start");
    assert!(
        start.success(),
        "{start}\nthe bus said:\n{}\npolkitd said:\n{}",
        bus.daemon_stderr(),
        polkitd.output()
    );
    assert!(start.stdout.contains("method return"), "{start}");
    let reset = send("Reset").assert_failure();
    let text = reset.all_output();
    assert!(
        text.contains("org.freedesktop.DBus.Error.AccessDenied"),
        "{reset}"
    );
    assert!(
        text.contains(DENIED) && text.contains("did not authorize"),
        "{reset}"
    );
    send("Stop").assert_success();
    bus.assert_alive();
}

/// One connection's answers are kept while it lives: calls held for one question are
/// delivered in order once polkit answers, and after polkitd has gone the connection that was
/// authorized still is, while a new connection gets AccessDenied saying polkit could not be
/// asked.
#[test]
fn polkit_answers_are_kept_per_connection() {
    let Some((bus, _service)) = guarded_bus() else {
        return;
    };
    let polkitd = Polkitd::start(&bus);
    let mut client = connect_as_nobody(&bus);
    // Three calls before any answer: one question to polkit, three replies in order.
    let serials: Vec<u32> = (0..3).map(|_| client.send(call("Start"), &())).collect();
    for serial in serials {
        let reply = client.read_reply_to(serial);
        assert_returned(&reply, "a held Start", &bus);
    }
    let serial = client.send(call("Reset"), &());
    assert_denied(
        &client.read_reply_to(serial),
        &[DENIED, "did not authorize"],
    );

    drop(polkitd);
    let serial = client.send(call("Start"), &());
    assert_returned(
        &client.read_reply_to(serial),
        "a Start already authorized",
        &bus,
    );
    // The refusal was kept too: no need to ask.
    let serial = client.send(call("Reset"), &());
    assert_denied(
        &client.read_reply_to(serial),
        &[DENIED, "did not authorize"],
    );

    let mut newcomer = connect_as_nobody(&bus);
    let serial = newcomer.send(call("Start"), &());
    assert_denied(
        &newcomer.read_reply_to(serial),
        &[GRANTED, "polkit could not be asked"],
    );
    bus.assert_alive();
}

/// Without polkitd, calls that need an action are refused with a message that says polkit
/// could not be asked, and the bus keeps serving.
#[test]
fn without_polkitd_calls_that_need_it_are_refused() {
    let Some((bus, _service)) = guarded_bus() else {
        return;
    };
    let mut client = connect_as_nobody(&bus);
    let serial = client.send(call("Start"), &());
    assert_denied(
        &client.read_reply_to(serial),
        &[GRANTED, "polkit could not be asked", POLKIT_NAME],
    );
    // Not kept: asked again (and refused again) on the next call.
    let serial = client.send(call("Start"), &());
    assert_denied(
        &client.read_reply_to(serial),
        &["polkit could not be asked"],
    );
    let serial = client.send(call("Stop"), &());
    assert_returned(&client.read_reply_to(serial), "Stop needs no polkit", &bus);
    bus.assert_alive();
}

/// When polkit's rules change (polkitd sends its Changed signal), the answers the bus kept are
/// forgotten: the next call of a connection that was authorized is asked about again.
#[test]
fn kept_answers_are_forgotten_when_polkit_rules_change() {
    let Some((bus, _service)) = guarded_bus() else {
        return;
    };
    let polkitd = Polkitd::start(&bus);
    let mut client = connect_as_nobody(&bus);
    let serial = client.send(call("Start"), &());
    assert_returned(&client.read_reply_to(serial), "Start", &bus);

    run(async {
        let watcher = bus.connect().await;
        let rule = zbus::MatchRule::builder()
            .msg_type(Type::Signal)
            .interface("org.freedesktop.PolicyKit1.Authority")
            .member("Changed")
            .build()
            .unwrap();
        let mut changes = zbus::MessageStream::for_match_rule(rule, &watcher, None)
            .await
            .unwrap();
        // The granted action is denied from now on.
        let rules = bus.dir().join("polkit/rules.d/10-telbus-test.rules");
        std::fs::write(&rules, RULES.replace("Result.YES", "Result.NO")).unwrap();
        next_signal(&mut changes, |_| true).await;
    });
    // The bus hears the same signal on its own connection: within a few calls (each a round
    // trip) it has forgotten the answer, and polkit now says no.
    let mut attempts = 0;
    let refusal = loop {
        attempts += 1;
        let serial = client.send(call("Start"), &());
        let reply = client.read_reply_to(serial);
        if error_of(&reply).is_some() || attempts == 1000 {
            break reply;
        }
    };
    assert_denied(&refusal, &[GRANTED, "did not authorize"]);
    drop(polkitd);
    bus.assert_alive();
}
