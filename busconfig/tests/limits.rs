//! `<limit>`: every name, dbus-daemon's defaults, and its checks on values.

use std::path::Path;
use std::time::Duration;

use telbus_busconfig::{Limits, load_str, parse_c_long};

fn with_limit(name: &str, value: &str) -> Result<Limits, String> {
    let text = format!(
        "<busconfig><listen>unix:tmpdir=/tmp</listen><limit name=\"{name}\">{value}</limit></busconfig>"
    );
    load_str(&text, Path::new("/t/limits.conf"))
        .map(|c| c.limits)
        .map_err(|e| e.to_string())
}

#[test]
fn defaults_are_dbus_daemons() {
    let l = load_str(
        "<busconfig><listen>unix:tmpdir=/tmp</listen></busconfig>",
        Path::new("/t.conf"),
    )
    .unwrap()
    .limits;
    assert_eq!(l, Limits::default());
    assert_eq!(l.max_incoming_bytes, 133_169_152);
    assert_eq!(l.max_outgoing_bytes, 133_169_152);
    assert_eq!(l.max_message_size, 33_554_432);
    assert_eq!(l.max_incoming_unix_fds, 64);
    assert_eq!(l.max_outgoing_unix_fds, 64);
    assert_eq!(l.max_message_unix_fds, 16);
    assert_eq!(l.service_start_timeout, Duration::from_secs(25));
    assert_eq!(l.auth_timeout, Duration::from_secs(30));
    assert_eq!(l.pending_fd_timeout, Duration::from_secs(150));
    assert_eq!(l.max_completed_connections, 2048);
    assert_eq!(l.max_incomplete_connections, 64);
    assert_eq!(l.max_connections_per_user, 256);
    assert_eq!(l.max_pending_service_starts, 512);
    assert_eq!(l.max_names_per_connection, 512);
    assert_eq!(l.max_match_rules_per_connection, 512);
    assert_eq!(l.max_replies_per_connection, 128);
    assert_eq!(l.reply_timeout, None);
    assert_eq!(l.max_containers, 512);
    assert_eq!(l.max_containers_per_user, 16);
    assert_eq!(l.max_container_metadata_bytes, 4096);
    assert_eq!(l.max_connections_per_container, 8);
    // telbus's own.
    assert_eq!(l.max_queued_bytes_per_user, 512 * 1024 * 1024);
    assert_eq!(l.max_queued_unix_fds_per_user, 4096);
    assert_eq!(l.max_names_per_user, 16384);
    assert_eq!(l.max_match_rules_per_user, 16384);
    assert_eq!(l.max_replies_per_user, 16384);
}

#[test]
fn every_limit_can_be_set() {
    for (i, name) in Limits::NAMES.iter().enumerate() {
        let value = 1000 + i as u64;
        let l = with_limit(name, &value.to_string()).unwrap();
        let ms = Duration::from_millis(value);
        let got = match *name {
            "max_incoming_bytes" => l.max_incoming_bytes == value,
            "max_incoming_unix_fds" => l.max_incoming_unix_fds == value,
            "max_outgoing_bytes" => l.max_outgoing_bytes == value,
            "max_outgoing_unix_fds" => l.max_outgoing_unix_fds == value,
            "max_message_size" => l.max_message_size == value,
            "max_message_unix_fds" => l.max_message_unix_fds == value,
            "service_start_timeout" => l.service_start_timeout == ms,
            "auth_timeout" => l.auth_timeout == ms,
            "pending_fd_timeout" => l.pending_fd_timeout == ms,
            "reply_timeout" => l.reply_timeout == Some(ms),
            "max_completed_connections" => l.max_completed_connections == value,
            "max_incomplete_connections" => l.max_incomplete_connections == value,
            "max_connections_per_user" => l.max_connections_per_user == value,
            "max_pending_service_starts" => l.max_pending_service_starts == value,
            "max_names_per_connection" => l.max_names_per_connection == value,
            "max_match_rules_per_connection" => l.max_match_rules_per_connection == value,
            "max_replies_per_connection" => l.max_replies_per_connection == value,
            "max_queued_bytes_per_user" => l.max_queued_bytes_per_user == value,
            "max_queued_unix_fds_per_user" => l.max_queued_unix_fds_per_user == value,
            "max_names_per_user" => l.max_names_per_user == value,
            "max_match_rules_per_user" => l.max_match_rules_per_user == value,
            "max_replies_per_user" => l.max_replies_per_user == value,
            "max_containers" => l.max_containers == value,
            "max_containers_per_user" => l.max_containers_per_user == value,
            "max_container_metadata_bytes" => l.max_container_metadata_bytes == value,
            "max_connections_per_container" => l.max_connections_per_container == value,
            other => panic!("untested limit {other}"),
        };
        assert!(got, "{name}");
        // Everything else kept its default.
        let mut expected = Limits::default();
        expected.set(name, value as i64).unwrap();
        assert_eq!(l, expected, "{name}");
    }
}

#[test]
fn values_are_read_as_strtol_reads_them() {
    let v = |text: &str| {
        with_limit("max_names_per_connection", text).map(|l| l.max_names_per_connection)
    };
    assert_eq!(v("42"), Ok(42));
    assert_eq!(v(" \n42\n "), Ok(42));
    assert_eq!(v("+42"), Ok(42));
    assert_eq!(v("0x2a"), Ok(42));
    assert_eq!(v("052"), Ok(42));
    assert_eq!(
        v("42 bees"),
        Ok(42),
        "trailing text is ignored, as dbus-daemon ignores it"
    );
    assert_eq!(v("0"), Ok(0));
    assert_eq!(v("0x"), Ok(0));
    assert_eq!(v("0xg"), Ok(0));
    for bad in ["bees", " ", "- 1", "x1", "99999999999999999999"] {
        let e = v(bad).unwrap_err();
        assert!(e.contains("could not parse as integer"), "{bad:?}: {e}");
    }
    assert!(v("").unwrap_err().contains("expected to have content"));
    assert_eq!(parse_c_long("-9223372036854775808"), Some(i64::MIN));
    assert_eq!(parse_c_long("9223372036854775807"), Some(i64::MAX));
    assert_eq!(parse_c_long("9223372036854775808"), None);
}

#[test]
fn negative_and_too_large_values_are_refused() {
    for name in Limits::NAMES {
        let e = with_limit(name, "-1").unwrap_err();
        assert!(
            e.ends_with(&format!(
                "<limit name=\"{name}\"> must be a positive number"
            )),
            "{e}"
        );
    }
    // Byte and fd counts are C longs in dbus-daemon; the rest are ints. telbus's per-user
    // byte and fd quotas are wide too; its per-user counts are ints.
    let wide = [
        "max_incoming_bytes",
        "max_incoming_unix_fds",
        "max_outgoing_bytes",
        "max_outgoing_unix_fds",
        "max_message_size",
        "max_message_unix_fds",
        "max_queued_bytes_per_user",
        "max_queued_unix_fds_per_user",
    ];
    for name in Limits::NAMES {
        let result = with_limit(name, "2147483648");
        if wide.contains(&name) {
            assert!(result.is_ok(), "{name}");
        } else {
            let e = result.unwrap_err();
            assert!(
                e.ends_with(&format!("<limit name=\"{name}\"> value is too large")),
                "{e}"
            );
            assert!(with_limit(name, "2147483647").is_ok(), "{name}");
        }
    }
    assert_eq!(
        with_limit("max_incoming_bytes", "9223372036854775807")
            .unwrap()
            .max_incoming_bytes,
        i64::MAX as u64
    );
}

#[test]
fn a_reply_timeout_of_zero_is_infinite() {
    assert_eq!(
        with_limit("reply_timeout", "0").unwrap().reply_timeout,
        None
    );
    assert_eq!(
        with_limit("reply_timeout", "1500").unwrap().reply_timeout,
        Some(Duration::from_millis(1500))
    );
}

#[test]
fn unknown_and_nameless_limits_are_refused() {
    let e = with_limit("max_bees", "1").unwrap_err();
    assert_eq!(
        e,
        "/t/limits.conf:1:45: There is no limit called \"max_bees\""
    );
    let e = load_str(
        "<busconfig><listen>x:</listen><limit>1</limit></busconfig>",
        Path::new("/t.conf"),
    )
    .unwrap_err();
    assert!(e.message.contains("must have a \"name\" attribute"));
    let e = load_str(
        "<busconfig><listen>x:</listen><limit name=\"auth_timeout\"/></busconfig>",
        Path::new("/t.conf"),
    )
    .unwrap_err();
    assert!(e.message.contains("expected to have content"), "{e}");
}
