//! `telbusctl`: one tool for people running a telbus (or any D-Bus) message bus: the bus's
//! state, its peers, one connection's counters, and a live monitor. Human tables by default,
//! `--json` for scripts. Everything it shows comes from the bus driver
//! (org.freedesktop.DBus, its Debug.Stats and Monitoring interfaces), so it also works against
//! dbus-daemon.

// The modules live in telbusctl/ beside this file (a binary's root looks in its own directory).
// Shared with telbus-sdir, which also prints `sdir list`'s layout.
#[path = "telbusctl/broker1.rs"]
#[allow(dead_code)]
mod broker1;
#[path = "telbusctl/driver.rs"]
mod driver;
#[path = "telbusctl/monitor.rs"]
mod monitor;
#[path = "telbusctl/table.rs"]
mod table;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use serde_json::json;

use crate::driver::Driver;
use crate::table::Table;

#[derive(Parser)]
#[command(
    name = "telbusctl",
    version,
    about = "Look at a running D-Bus message bus: status, peers, per-connection statistics, live monitor",
    long_about = "telbusctl shows the state of a running message bus (telbusd or dbus-daemon): \
its uptime and counters, the connected peers with their credentials and names, one \
connection's statistics, and a live monitor of the messages it routes. It connects to the \
session bus unless told otherwise. Output is a human table; --json prints JSON for scripts."
)]
struct Cli {
    /// Connect to the system bus.
    #[arg(long, global = true, conflicts_with = "address")]
    system: bool,

    /// Connect to the session bus (the default).
    #[arg(long, global = true, conflicts_with_all = ["system", "address"])]
    session: bool,

    /// Connect to the bus at this D-Bus address.
    #[arg(long, global = true, value_name = "ADDRESS")]
    address: Option<String>,

    /// Print JSON instead of tables (one object per line for `monitor`).
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The bus's uptime, connections, names, match rules, and bytes queued per user.
    Status,
    /// The connected peers: unique and well-known names, uid, pid and command line.
    Peers,
    /// One connection's statistics (by unique or well-known name).
    Stats {
        /// A unique name (:1.42) or a well-known name.
        name: String,
    },
    /// The TelAF bindings of a bus run with telbusd --bindings: bindings, services, waiting clients.
    Bindings,
    /// The live TelAF references (client-bound object paths) per service and client.
    References,
    /// Print the messages the bus routes, one line each, as they pass (BecomeMonitor).
    Monitor {
        /// Match rules (as for AddMatch), e.g. "type='signal'" or "sender=org.example.App";
        /// none shows every message.
        #[arg(value_name = "MATCH")]
        matches: Vec<String>,
    },
    /// Print a shell completion script for telbusctl.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print telbusctl's man page (roff), or write one page per command into a directory.
    Manpage {
        /// Write telbusctl.1 and telbusctl-COMMAND.1 into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "telbusctl",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Manpage { dir } => manpage(dir.as_deref()),
        Command::Monitor { matches } => zruntime::block_on(monitor::run(&cli, matches)),
        Command::Status
        | Command::Peers
        | Command::Stats { .. }
        | Command::Bindings
        | Command::References => zruntime::block_on(query(&cli)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("telbusctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn manpage(dir: Option<&std::path::Path>) -> Result<(), String> {
    let command = Cli::command();
    match dir {
        Some(dir) => clap_mangen::generate_to(command, dir)
            .map_err(|e| format!("cannot write man pages to {}: {e}", dir.display())),
        None => clap_mangen::Man::new(command)
            .render(&mut std::io::stdout())
            .map_err(|e| e.to_string()),
    }
}

async fn query(cli: &Cli) -> Result<(), String> {
    let driver = Driver::connect(cli).await?;
    let output = match &cli.command {
        Command::Status => status(&driver, cli.json).await?,
        Command::Peers => peers(&driver, cli.json).await?,
        Command::Stats { name } => stats(&driver, name, cli.json).await?,
        Command::Bindings => {
            let list = broker1::call_json(&driver.connection, "List").await?;
            if cli.json {
                list.to_string()
            } else {
                broker1::bindings_tables(&list)
            }
        }
        Command::References => {
            let refs = broker1::call_json(&driver.connection, "References").await?;
            if cli.json {
                refs.to_string()
            } else {
                broker1::references_table(&refs, None)
            }
        }
        _ => unreachable!("handled in main"),
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{output}").map_err(|e| e.to_string())
}

async fn status(driver: &Driver, json: bool) -> Result<String, String> {
    let stats = driver.stats().await?;
    // Ourselves included, so that the counts match the bus's.
    let peers = driver.peers(true).await?;
    let uptime = stats
        .get("StartTime")
        .and_then(|v| v.as_u64())
        .filter(|&t| t > 0)
        .map(|start| now_secs().saturating_sub(start));
    // Bytes waiting in the bus for each user's connections: what a slow reader costs.
    let mut per_user: std::collections::BTreeMap<Option<u32>, (u64, u64, u64)> = Default::default();
    for peer in &peers {
        let entry = per_user.entry(peer.uid).or_default();
        entry.0 += 1;
        entry.1 += peer.stat("OutgoingBytes");
        entry.2 += peer.stat("OutgoingMessages");
    }
    if json {
        let users: Vec<_> = per_user
            .iter()
            .map(|(uid, (conns, bytes, msgs))| {
                json!({"uid": uid, "user": uid.and_then(table::user_name),
                       "connections": conns, "queued_bytes": bytes, "queued_messages": msgs})
            })
            .collect();
        return Ok(json!({
            "address": driver.address,
            "uptime_seconds": uptime,
            "stats": stats,
            "users": users,
        })
        .to_string());
    }
    let get = |key: &str| {
        stats
            .get(key)
            .and_then(|v| v.as_u64())
            .map_or("?".to_string(), |n| n.to_string())
    };
    let mut summary = Table::new(&["", ""]);
    summary.row(["bus".into(), driver.address.clone()]);
    summary.row([
        "uptime".into(),
        uptime.map_or("unknown (not telbusd)".into(), table::duration),
    ]);
    summary.row([
        "connections".into(),
        format!(
            "{} active, {} authenticating",
            get("ActiveConnections"),
            get("IncompleteConnections")
        ),
    ]);
    summary.row([
        "names".into(),
        format!("{} (peak {})", get("BusNames"), get("PeakBusNames")),
    ]);
    summary.row([
        "match rules".into(),
        format!("{} (peak {})", get("MatchRules"), get("PeakMatchRules")),
    ]);
    let mut users = Table::new(&["UID", "USER", "CONNECTIONS", "QUEUED BYTES", "QUEUED MSGS"]);
    for (uid, (conns, bytes, msgs)) in &per_user {
        users.row([
            uid.map_or("-".into(), |u| u.to_string()),
            uid.and_then(table::user_name).unwrap_or_else(|| "-".into()),
            conns.to_string(),
            bytes.to_string(),
            msgs.to_string(),
        ]);
    }
    Ok(format!(
        "{}\nqueued for delivery, per user:\n{}",
        summary.render_without_header(),
        users.render()
    ))
}

async fn peers(driver: &Driver, json: bool) -> Result<String, String> {
    let peers = driver.peers(false).await?;
    if json {
        let list: Vec<_> = peers
            .iter()
            .map(|p| {
                json!({"unique_name": p.unique_name, "names": p.names, "uid": p.uid,
                       "user": p.uid.and_then(table::user_name), "pid": p.pid,
                       "command": p.command()})
            })
            .collect();
        return Ok(serde_json::Value::from(list).to_string());
    }
    let mut t = Table::new(&["UNIQUE NAME", "PID", "UID", "USER", "NAMES", "COMMAND"]);
    for p in &peers {
        t.row([
            p.unique_name.clone(),
            p.pid.map_or("-".into(), |n| n.to_string()),
            p.uid.map_or("-".into(), |n| n.to_string()),
            p.uid
                .and_then(table::user_name)
                .unwrap_or_else(|| "-".into()),
            if p.names.is_empty() {
                "-".into()
            } else {
                p.names.join(",")
            },
            p.command().unwrap_or_else(|| "-".into()),
        ]);
    }
    Ok(t.render())
}

async fn stats(driver: &Driver, name: &str, json: bool) -> Result<String, String> {
    let stats = driver.connection_stats(name).await?;
    if json {
        return Ok(serde_json::Value::Object(stats).to_string());
    }
    let mut t = Table::new(&["KEY", "VALUE"]);
    for (key, value) in &stats {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        t.row([key.clone(), text]);
    }
    Ok(t.render())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
