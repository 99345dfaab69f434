//! `telbus-sdir`: TelAF's `sdir` for telbus. Lists the bindings, services and waiting clients
//! of a bus running with `telbusd --bindings`, changes bindings at run time, reloads the file,
//! explains a decision and lists live references. It talks to io.telaf.Broker1.

// Shared with telbusctl, which prints its own tables of the same answers.
#[path = "telbusctl/broker1.rs"]
#[allow(dead_code)]
mod broker1;
#[path = "telbusctl/table.rs"]
#[allow(dead_code)]
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "telbus-sdir",
    version,
    about = "TelAF service directory of a telbus bus: bindings, services, waiting clients, references",
    long_about = "telbus-sdir shows and changes the TelAF bindings of a bus run with \
telbusd --bindings=FILE, through io.telaf.Broker1 (administration needs uid 0 or the bus's uid). \
It talks to the system bus unless told otherwise."
)]
struct Cli {
    /// Connect to the bus at this D-Bus address.
    #[arg(long, global = true, value_name = "ADDRESS")]
    address: Option<String>,

    /// Connect to the session bus instead of the system bus.
    #[arg(long, global = true, conflicts_with = "address")]
    session: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Bindings, services (protocol id, owner) and clients waiting in Connect.
    List {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Bind a client interface to a service until the next load: `app.iface`, `<user>.iface`
    /// or `*.iface`, then `app.service`.
    Bind {
        #[arg(value_name = "CLIENT_IF")]
        client: String,
        #[arg(value_name = "SERVER_IF")]
        server: String,
    },
    /// Remove the binding of a client interface (`app.iface`, `<user>.iface` or `*.iface`).
    Unbind {
        #[arg(value_name = "CLIENT_IF")]
        client: String,
    },
    /// Read the bindings file again (atomically: a bad file changes nothing).
    Load,
    /// Explain whether CLIENT (unique name, app or <user>) may call SERVICE (bus name or
    /// app.service), and why.
    Why { client: String, service: String },
    /// Live references per service (optionally of one service or client).
    Refs {
        /// A service's unique or well-known name, or a client's unique name.
        filter: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

async fn connect(cli: &Cli) -> Result<zbus::Connection, String> {
    let (builder, what) = match &cli.address {
        Some(a) => (zbus::connection::Builder::address(a.as_str()), a.clone()),
        None if cli.session => (
            zbus::connection::Builder::session(),
            "the session bus".into(),
        ),
        None => (zbus::connection::Builder::system(), "the system bus".into()),
    };
    builder
        .build()
        .await
        .map_err(|e| format!("cannot connect to {what}: {e}"))
}

fn split_client(text: &str) -> Result<(&str, &str), String> {
    text.rsplit_once('.')
        .filter(|(c, i)| !c.is_empty() && !i.is_empty())
        .ok_or_else(|| {
            format!(
                "expected CLIENT.INTERFACE (app.iface, <user>.iface, *.iface), found \"{text}\""
            )
        })
}

async fn run(cli: &Cli) -> Result<String, String> {
    let conn = connect(cli).await?;
    Ok(match &cli.command {
        Command::List { format } => {
            let list = broker1::call_json(&conn, "List").await?;
            match format {
                Format::Json => list.to_string(),
                Format::Text => broker1::sdir_list(&list),
            }
        }
        Command::Bind { client, server } => {
            let (app, iface) = split_client(client)?;
            let (server_app, service) = server
                .split_once('.')
                .ok_or_else(|| format!("expected SERVER_APP.SERVICE, found \"{server}\""))?;
            broker1::call(&conn, "Bind", &(app, iface, server_app, service)).await?;
            format!("bound {client} -> {server}")
        }
        Command::Unbind { client } => {
            let (app, iface) = split_client(client)?;
            broker1::call(&conn, "Unbind", &(app, iface)).await?;
            format!("unbound {client}")
        }
        Command::Load => {
            broker1::call(&conn, "Load", &()).await?;
            "bindings reloaded".into()
        }
        Command::Why { client, service } => broker1::call_text(&conn, "Why", &(client, service))
            .await?
            .trim_end()
            .to_string(),
        Command::Refs { filter, json } => {
            let refs = broker1::call_json(&conn, "References").await?;
            if *json {
                refs.to_string()
            } else {
                broker1::references_table(&refs, filter.as_deref())
            }
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match zruntime::block_on(run(&cli)) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("telbus-sdir: {e}");
            ExitCode::FAILURE
        }
    }
}
