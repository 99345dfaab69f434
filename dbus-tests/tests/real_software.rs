//! Real desktop software on a private session telbusd: dconf's writer (a GLib service)
//! started by activation from this machine's own .service files, then used by the dconf and
//! gsettings command-line programs and looked at with gdbus.
//!
//! The bus's configuration has `<standard_session_servicedirs/>`, so activation finds
//! /usr/share/dbus-1/services/ca.desrt.dconf.service as on a desktop. HOME, XDG_RUNTIME_DIR
//! and the XDG base directories all point into the test's temp dir (for the clients
//! directly, for the activated service through UpdateActivationEnvironment, as a desktop
//! session's startup does), so the machine's real dconf database is never touched.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use telbus_dbus_tests::{Background, CLIENT_TIMEOUT, ClientOutput, TestBus, run_command};

const DCONF_SERVICE_FILE: &str = "/usr/share/dbus-1/services/ca.desrt.dconf.service";
const DCONF_NAME: &str = "ca.desrt.dconf";
const WRITER_PATH: &str = "/ca/desrt/dconf/Writer/user";

/// A session bus as a desktop has it, with the user's dconf files in the temp dir.
struct Desktop {
    bus: TestBus,
    home: PathBuf,
}

impl Desktop {
    fn start() -> Option<Desktop> {
        for program in [DCONF_SERVICE_FILE, "/usr/bin/dconf"] {
            if !Path::new(program).exists() {
                // scripts/test-all.sh installs dconf-cli and dconf-service; a bare `cargo
                // test` on a machine without them says so rather than failing.
                eprintln!(
                    "skipped: {program} is missing (apt-get install dconf-cli dconf-service)"
                );
                return None;
            }
        }
        let bus = TestBus::with_config("<standard_session_servicedirs/>");
        let home = bus.dir().join("home");
        for dir in ["config", "cache", "data", "runtime"] {
            std::fs::create_dir_all(home.join(dir)).unwrap();
        }
        // Only the user database, whatever /etc/dconf/profile says on this machine.
        std::fs::write(home.join("dconf-profile"), "user-db:user\n").unwrap();
        let desktop = Desktop { bus, home };
        // What a desktop session's startup does for the services the bus will start.
        let mut update = desktop.command("dbus-update-activation-environment");
        update.arg("--verbose").args(
            desktop
                .environment()
                .iter()
                .map(|(k, v)| format!("{k}={v}")),
        );
        run_command(update, CLIENT_TIMEOUT).assert_success();
        Some(desktop)
    }

    fn environment(&self) -> Vec<(&'static str, String)> {
        let at = |dir: &str| self.home.join(dir).display().to_string();
        vec![
            ("HOME", self.home.display().to_string()),
            ("XDG_CONFIG_HOME", at("config")),
            ("XDG_CACHE_HOME", at("cache")),
            ("XDG_DATA_HOME", at("data")),
            ("XDG_RUNTIME_DIR", at("runtime")),
            ("DCONF_PROFILE", at("dconf-profile")),
        ]
    }

    /// A client on this session bus with the desktop's environment.
    fn command(&self, program: &str) -> Command {
        let mut command = self.bus.command(program);
        command
            .env("DBUS_SESSION_BUS_ADDRESS", self.bus.address())
            .env("GSETTINGS_BACKEND", "dconf");
        if program != "dbus-update-activation-environment" {
            command.envs(self.environment());
        }
        command
    }

    fn run(&self, program: &str, args: &[&str]) -> ClientOutput {
        let mut command = self.command(program);
        command.args(args);
        run_command(command, CLIENT_TIMEOUT)
    }

    /// The user database file the dconf writer keeps.
    fn user_database(&self) -> PathBuf {
        self.home.join("config/dconf/user")
    }
}

#[test]
fn dconf_write_activates_the_machines_dconf_service_and_dconf_read_sees_it() {
    let Some(desktop) = Desktop::start() else {
        return;
    };
    let names = desktop
        .bus
        .busctl([
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "ListActivatableNames",
        ])
        .assert_success()
        .stdout;
    assert!(
        names.contains(DCONF_NAME),
        "the standard session service dirs give {DCONF_NAME}: {names}"
    );

    desktop
        .run("dconf", &["write", "/org/telbus/test", "42"])
        .assert_success();
    let read = desktop
        .run("dconf", &["read", "/org/telbus/test"])
        .assert_success();
    assert_eq!(read.stdout.trim(), "42");
    assert!(
        desktop.user_database().exists(),
        "the writer, started with the session's environment, wrote {}",
        desktop.user_database().display()
    );

    // The writer stays on the bus as a GLib service: gdbus sees its interface and calls it.
    let owner = desktop
        .bus
        .wait_for_owner(DCONF_NAME, Duration::from_secs(10));
    assert!(owner.starts_with(':'), "owner of {DCONF_NAME}: {owner}");
    let introspection = desktop
        .bus
        .gdbus([
            "introspect",
            "--address",
            desktop.bus.address(),
            "--dest",
            DCONF_NAME,
            "--object-path",
            WRITER_PATH,
        ])
        .assert_success()
        .stdout;
    assert!(
        introspection.contains("interface ca.desrt.dconf.Writer")
            && introspection.contains("Change("),
        "gdbus introspect: {introspection}"
    );
    let ping = desktop
        .bus
        .gdbus([
            "call",
            "--address",
            desktop.bus.address(),
            "--dest",
            DCONF_NAME,
            "--object-path",
            WRITER_PATH,
            "--method",
            "org.freedesktop.DBus.Peer.Ping",
        ])
        .assert_success();
    assert_eq!(ping.stdout.trim(), "()");
    desktop.bus.assert_alive();
}

#[test]
fn dconf_watch_sees_the_writers_change_signals() {
    let Some(desktop) = Desktop::start() else {
        return;
    };
    // dconf watch subscribes (AddMatch) to the writer's Notify signals; wait until its rule
    // is on the bus, so that the write below cannot pass before it.
    let mut watch = desktop.command("dconf");
    watch.args(["watch", "/org/telbus/"]);
    let watch = Background::spawn(watch);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rules = desktop
            .bus
            .busctl([
                "call",
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.Debug.Stats",
                "GetAllMatchRules",
            ])
            .assert_success()
            .stdout;
        if rules.contains("ca.desrt.dconf.Writer") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dconf watch never added its match rule: {rules}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    desktop
        .run("dconf", &["write", "/org/telbus/second", "'two'"])
        .assert_success();
    let seen = watch.wait_for_text("'two'", Duration::from_secs(20));
    assert!(seen.contains("/org/telbus/second"), "dconf watch: {seen}");
}

#[test]
fn gsettings_with_the_dconf_backend_round_trips_a_desktop_setting() {
    let Some(desktop) = Desktop::start() else {
        return;
    };
    let schema = "org.gnome.desktop.interface";
    if !desktop.run("gsettings", &["list-keys", schema]).success() {
        eprintln!("skipped: the {schema} schema is not installed (gsettings-desktop-schemas)");
        return;
    }
    desktop
        .run("gsettings", &["set", schema, "clock-format", "'12h'"])
        .assert_success();
    let got = desktop
        .run("gsettings", &["get", schema, "clock-format"])
        .assert_success();
    assert_eq!(got.stdout.trim(), "'12h'");
    let raw = desktop
        .run(
            "dconf",
            &["read", "/org/gnome/desktop/interface/clock-format"],
        )
        .assert_success();
    assert_eq!(raw.stdout.trim(), "'12h'");
}
