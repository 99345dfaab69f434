//! telbusd's log filter: TELBUS_LOG in the environment, else the configuration's `<log>` (a
//! telbus extension, which dbus-daemon refuses), changed by ReloadConfig. telbusd only.

use std::time::{Duration, Instant};

use telbus_dbus_tests::{TestBus, call_driver, run};

/// Wait until the daemon's stderr says `what`, or fail.
fn wait_for_log(bus: &TestBus, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bus.daemon_stderr().contains(what) {
        assert!(
            Instant::now() < deadline,
            "the log never said {what:?}:\n{}",
            bus.daemon_stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_log_filter_comes_from_the_configuration_and_changes_on_reload() {
    let bus = TestBus::with_config("<log>info,telbusd::driver=debug</log>");
    run(async {
        // A connection's arrival is logged at debug, by the driver module.
        let first = bus.connect().await;
        let first_name = first.unique_name().unwrap().to_string();
        wait_for_log(&bus, &format!("{first_name} connected ("));

        // Back to the default (info): the next arrival is not logged.
        let config = std::fs::read_to_string(bus.config_path()).unwrap();
        let config = config.replace("<log>info,telbusd::driver=debug</log>", "");
        std::fs::write(bus.config_path(), config).unwrap();
        call_driver(&first, "ReloadConfig", &()).await.unwrap();
        let second = bus.connect().await;
        let second_name = second.unique_name().unwrap().to_string();
        // A second reload, logged at info after the arrival: once its line is there, the
        // arrival's would be too (one thread writes them in order).
        call_driver(&first, "ReloadConfig", &()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while bus
            .daemon_stderr()
            .matches("configuration reloaded from")
            .count()
            < 2
        {
            assert!(Instant::now() < deadline, "{}", bus.daemon_stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = bus.daemon_stderr();
        assert!(
            !log.contains(&format!("{second_name} connected (")),
            "a debug line was logged with the filter back at info:\n{log}"
        );
    });
    bus.assert_alive();
}

#[test]
fn a_log_filter_that_does_not_parse_leaves_the_running_one() {
    let bus = TestBus::with_config("<log>info,telbusd::driver=debug</log>");
    run(async {
        let first = bus.connect().await;
        let config = std::fs::read_to_string(bus.config_path()).unwrap();
        let config = config.replace("info,telbusd::driver=debug", "info,telbusd::driver=loud");
        std::fs::write(bus.config_path(), config).unwrap();
        call_driver(&first, "ReloadConfig", &()).await.unwrap();
        wait_for_log(&bus, "is not a log filter");
        // Still at debug for the driver.
        let second = bus.connect().await;
        let name = second.unique_name().unwrap().to_string();
        wait_for_log(&bus, &format!("{name} connected ("));
    });
    bus.assert_alive();
}
