//! What every service process does around its API: read the common options, log with tracing,
//! connect to the bus, serve its objects, own `io.telaf.<app>.<service>`, release what departed
//! clients held, and shut down cleanly on SIGTERM/SIGINT or when the bus goes away.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use tracing::{error, info};
use zbus::fdo::{RequestNameFlags, RequestNameReply};
use zbus::wire::OwnedObjectPath;
use zbus::{Connection, connection};

use crate::references::{Departure, References};

/// Options every service takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BusArgs {
    /// The bus to serve on. Default: $DBUS_STARTER_ADDRESS (set when the bus activated the
    /// service), else the session bus ($DBUS_SESSION_BUS_ADDRESS).
    #[arg(long, value_name = "ADDRESS")]
    pub address: Option<String>,
    /// The app that provides the service: the bus name is io.telaf.APP.SERVICE.
    #[arg(long, value_name = "APP")]
    pub app: Option<String>,
}

/// A service's implementation, as the start-up code sees it.
pub trait Service: Send + Sync + 'static {
    /// A client left the bus: release every reference it held (listed in `departure`).
    fn client_gone(&self, departure: Departure) -> impl Future<Output = ()> + Send;
}

/// What a service gets to build itself with.
pub struct Startup {
    pub connection: Connection,
    pub references: References,
    /// `/io/telaf/<service>`: where the API is served.
    pub root: OwnedObjectPath,
    /// `io.telaf.<app>.<service>`.
    pub bus_name: String,
}

/// The bus name of `service` provided by `app`.
pub fn bus_name(app: &str, service: &str) -> String {
    format!("io.telaf.{app}.{service}")
}

/// The root object of `service`.
pub fn root_path(service: &str) -> OwnedObjectPath {
    OwnedObjectPath::try_from(format!("/io/telaf/{service}")).expect("a valid object path")
}

/// Logs to stderr; `TELBUS_LOG` is a tracing filter (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TELBUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs a service until SIGTERM/SIGINT or until the bus goes away: connects, lets `build`
/// serve its objects, owns the name, then hands each departure to the service.
/// Exit status 0 after a clean shutdown, 1 when the service could not start.
pub fn run<S, F, Fut>(args: &BusArgs, default_app: &str, service: &str, build: F) -> ExitCode
where
    S: Service,
    F: FnOnce(Startup) -> Fut,
    Fut: Future<Output = zbus::Result<Arc<S>>>,
{
    init_logging();
    let app = args.app.clone().unwrap_or_else(|| default_app.to_string());
    let name = bus_name(&app, service);
    let shutdown = match shutdown_signal() {
        Ok(signal) => signal,
        Err(e) => {
            error!("cannot handle SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = zruntime::block_on(async {
        let connection = connect(args).await?;
        // Returns after the name is released (its reply came, so nothing is left unsent); the
        // socket closes when the process exits.
        serve(connection, name.clone(), service, shutdown, build).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves until a signal or the end of the bus.
async fn serve<S, F, Fut>(
    connection: Connection,
    name: String,
    service: &str,
    shutdown: futures::channel::oneshot::Receiver<&'static str>,
    build: F,
) -> zbus::Result<()>
where
    S: Service,
    F: FnOnce(Startup) -> Fut,
    Fut: Future<Output = zbus::Result<Arc<S>>>,
{
    {
        let (references, departures) = References::new(&connection).await?;
        let mut departures = departures.fuse();
        let startup = Startup {
            connection: connection.clone(),
            references,
            root: root_path(service),
            bus_name: name.clone(),
        };
        let implementation = build(startup).await?;
        let flags = RequestNameFlags::DO_NOT_QUEUE;
        let reply = connection
            .request_name_with_flags(name.as_str(), flags)
            .await
            .map_err(|e| match e {
                zbus::Error::NameTaken => {
                    zbus::Error::Failure(format!("{name} is owned by another connection"))
                }
                e => e,
            })?;
        match reply {
            RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner => {}
            _ => {
                return Err(zbus::Error::Failure(format!(
                    "{name} is owned by another connection"
                )));
            }
        }
        info!(
            name,
            unique_name = %connection.unique_name().map(|n| n.as_str()).unwrap_or("?"),
            "serving"
        );

        let mut shutdown = shutdown.fuse();
        let closed = connection.closed().fuse();
        futures::pin_mut!(closed);
        loop {
            futures::select! {
                signal = shutdown => {
                    info!("{}: shutting down", signal.unwrap_or("signal"));
                    let _ = connection.release_name(name.as_str()).await;
                    break;
                }
                () = closed => {
                    info!("the bus went away: shutting down");
                    break;
                }
                departure = departures.select_next_some() => {
                    implementation.client_gone(departure).await;
                }
            }
        }
        Ok(())
    }
}

/// The bus from `--address`, else the activating bus, else the session bus.
async fn connect(args: &BusArgs) -> zbus::Result<Connection> {
    let address = args
        .address
        .clone()
        .or_else(|| std::env::var("DBUS_STARTER_ADDRESS").ok());
    let builder = match &address {
        Some(address) => connection::Builder::address(address.as_str()),
        None => connection::Builder::session(),
    };
    builder.build().await.map_err(|e| {
        zbus::Error::Failure(format!(
            "cannot connect to {}: {e}",
            address.as_deref().unwrap_or("the session bus")
        ))
    })
}

/// Resolves with the signal's name on the first SIGTERM or SIGINT.
fn shutdown_signal() -> std::io::Result<futures::channel::oneshot::Receiver<&'static str>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let _ = tx.send(if signal == SIGTERM {
                "SIGTERM"
            } else {
                "SIGINT"
            });
        }
    });
    Ok(rx)
}
