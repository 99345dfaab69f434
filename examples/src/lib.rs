//! Example clients of the TelAF-style services (see the README's walk-through).
//! The generated code for le_mcc, le_data, le_pm and le_gpio; the programs are in `src/bin`.

#[allow(clippy::all, missing_docs)]
pub mod api {
    include!(concat!(env!("OUT_DIR"), "/telaf_apis.rs"));
}

/// A connection to `--address`, or to the session bus.
pub async fn connect(address: Option<&str>) -> zbus::Result<zbus::Connection> {
    match address {
        Some(address) => zbus::connection::Builder::address(address).build().await,
        None => zbus::Connection::session().await,
    }
}
