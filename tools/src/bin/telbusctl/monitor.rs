//! `telbusctl monitor`: become a monitor (org.freedesktop.DBus.Monitoring.BecomeMonitor) and
//! print each message the bus routes, one line each (or one JSON object per line).

use std::io::Write;

use futures::StreamExt;
use serde_json::json;
use zbus::message::{Message, Type};
use zbus::wire::Structure;

use crate::Cli;
use crate::driver::{Driver, error_text};

pub async fn run(cli: &Cli, matches: &[String]) -> Result<(), String> {
    let driver = Driver::connect(cli).await?;
    let me = driver
        .connection
        .unique_name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    // Listen before asking, so that no message between the reply and our first read is lost.
    let mut stream = zbus::MessageStream::from(&driver.connection);
    let rules: Vec<&str> = matches.iter().map(String::as_str).collect();
    driver
        .connection
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus.Monitoring"),
            "BecomeMonitor",
            &(rules, 0u32),
        )
        .await
        .map_err(|e| format!("cannot become a monitor: {}", error_text(&e)))?;
    let mut stdout = std::io::stdout().lock();
    while let Some(message) = stream.next().await {
        let Ok(message) = message else { continue };
        // What the bus says to the monitor itself (our reply, NameLost of our name) is not
        // traffic of the bus.
        if message.header().destination().map(|d| d.as_str()) == Some(me.as_str()) {
            continue;
        }
        let line = if cli.json {
            json_line(&message)
        } else {
            text_line(&message)
        };
        // A closed pipe (telbusctl monitor | head) ends the monitor.
        if writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

fn kind(message: &Message) -> &'static str {
    match message.message_type() {
        Type::MethodCall => "call",
        Type::MethodReturn => "return",
        Type::Error => "error",
        Type::Signal => "signal",
    }
}

/// The body as D-Bus text, on one line.
fn body_text(message: &Message) -> String {
    let body = message.body();
    if body.signature().to_string().is_empty() {
        return String::new();
    }
    match body.deserialize::<Structure>() {
        Ok(s) => s.to_string().replace('\n', "\\n"),
        Err(e) => format!("<unreadable body: {e}>"),
    }
}

fn text_line(message: &Message) -> String {
    let h = message.header();
    let mut line = format!(
        "{:<6} {} -> {} serial={}",
        kind(message),
        h.sender().map_or("-", |s| s.as_str()),
        h.destination().map_or("*", |d| d.as_str()),
        h.primary().serial_num(),
    );
    if let Some(r) = h.reply_serial() {
        line.push_str(&format!(" reply_serial={r}"));
    }
    if let Some(path) = h.path() {
        line.push_str(&format!(" {path}"));
    }
    match (h.interface(), h.member()) {
        (Some(i), Some(m)) => line.push_str(&format!(" {i}.{m}")),
        (None, Some(m)) => line.push_str(&format!(" {m}")),
        _ => {}
    }
    if let Some(e) = h.error_name() {
        line.push_str(&format!(" {e}"));
    }
    let body = body_text(message);
    if !body.is_empty() {
        line.push_str(&format!(" {body}"));
    }
    line
}

fn json_line(message: &Message) -> String {
    let h = message.header();
    json!({
        "type": kind(message),
        "sender": h.sender().map(|s| s.as_str()),
        "destination": h.destination().map(|d| d.as_str()),
        "serial": h.primary().serial_num().get(),
        "reply_serial": h.reply_serial().map(|r| r.get()),
        "path": h.path().map(|p| p.as_str()),
        "interface": h.interface().map(|i| i.as_str()),
        "member": h.member().map(|m| m.as_str()),
        "error_name": h.error_name().map(|e| e.as_str()),
        "signature": message.body().signature().to_string(),
        "body": body_text(message),
    })
    .to_string()
}
