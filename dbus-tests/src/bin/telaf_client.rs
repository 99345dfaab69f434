//! A tiny TelAF client for the bindings tests: the tests copy it under several names, so that
//! the bus recognises each copy as a different app by its executable.
//!
//! `telaf-client ADDRESS STEP...`, each step printing one line on stdout:
//! - `own NAME`: RequestName → `own OK` or `own ERR <error name>: <message>`
//! - `connect IFACE PROTOCOL WAIT`: io.telaf.Broker1.Connect (`-` for an empty protocol id,
//!   WAIT `true`/`false`) → `connect OK <bus name> <path>` or `connect ERR …`
//! - `call DEST PATH`: org.freedesktop.DBus.Peer.Ping → `call OK` or `call ERR …`
//! - `serve PATH`: serves the harness's test object at PATH → `serve OK`
//! - `hold`: prints `holding` and stays connected until it is killed.
//!
//! The first line is `unique <its unique name>`.

use std::io::Write;

use zbus::Connection;
use zbus::names::BusName;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn error_text(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, text, _) => {
            format!("ERR {name}: {}", text.as_deref().unwrap_or(""))
        }
        other => format!("ERR {other}"),
    }
}

async fn call(
    conn: &Connection,
    dest: &str,
    path: &str,
    iface: &str,
    member: &str,
    body: &(impl serde::Serialize + zbus::wire::DynamicType),
) -> zbus::Result<zbus::Message> {
    let dest = BusName::try_from(dest.to_string())?;
    conn.call_method(Some(dest), path, Some(iface), member, body)
        .await
}

async fn run(address: &str, steps: &[String]) -> Result<(), String> {
    let conn = zbus::connection::Builder::address(address)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    say(&format!(
        "unique {}",
        conn.unique_name().map(|n| n.as_str()).unwrap_or("?")
    ));
    let mut i = 0;
    let arg = |i: usize| -> Result<&str, String> {
        steps
            .get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("missing argument {i}"))
    };
    while i < steps.len() {
        match steps[i].as_str() {
            "own" => {
                let name = arg(i + 1)?;
                i += 2;
                let result = call(
                    &conn,
                    "org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus",
                    "RequestName",
                    &(name, 4u32),
                )
                .await;
                match result.and_then(|m| m.body().deserialize::<u32>()) {
                    Ok(1) => say("own OK"),
                    Ok(code) => say(&format!("own CODE {code}")),
                    Err(e) => say(&format!("own {}", error_text(&e))),
                }
            }
            "connect" => {
                let iface = arg(i + 1)?;
                let protocol = match arg(i + 2)? {
                    "-" => "",
                    p => p,
                };
                let wait = arg(i + 3)? == "true";
                i += 4;
                let result = call(
                    &conn,
                    "org.freedesktop.DBus",
                    "/io/telaf/Broker1",
                    "io.telaf.Broker1",
                    "Connect",
                    &(iface, protocol, wait),
                )
                .await;
                let answer = result.and_then(|m| {
                    m.body()
                        .deserialize::<(String, zbus::wire::OwnedObjectPath)>()
                });
                match answer {
                    Ok((name, path)) => say(&format!("connect OK {name} {}", path.as_str())),
                    Err(e) => say(&format!("connect {}", error_text(&e))),
                }
            }
            "call" => {
                let dest = arg(i + 1)?;
                let path = arg(i + 2)?;
                i += 3;
                match call(&conn, dest, path, "org.freedesktop.DBus.Peer", "Ping", &()).await {
                    Ok(_) => say("call OK"),
                    Err(e) => say(&format!("call {}", error_text(&e))),
                }
            }
            "serve" => {
                let path = arg(i + 1)?;
                i += 2;
                conn.object_server()
                    .at(path, telbus_dbus_tests::TestObject::default())
                    .await
                    .map_err(|e| e.to_string())?;
                say("serve OK");
            }
            "hold" => {
                i += 1;
                say("holding");
                // Stays connected (and serving) until killed.
                std::future::pending::<()>().await;
            }
            other => return Err(format!("unknown step {other}")),
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((address, steps)) = args.split_first() else {
        eprintln!("usage: telaf-client ADDRESS STEP...");
        return std::process::ExitCode::FAILURE;
    };
    match zruntime::block_on(run(address, steps)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("telaf-client: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
