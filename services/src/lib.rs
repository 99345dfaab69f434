//! TelAF-style services on telbus: simulated hardware behind real IPC.
//!
//! Each service is a process of its own (`telbus-le-info`, `telbus-le-gpio`, `telbus-le-mcc`,
//! `telbus-le-data`, `telbus-le-pm`) that owns `io.telaf.<app>.<service>` and serves the code
//! `interfaces/` generates from the bundled `.api` files. What they share lives here:
//!
//! - [`api`]: the generated types, client proxies and server traits;
//! - [`paths`]: reference paths that are never reused;
//! - [`references`]: which client holds which reference, and releasing them when it leaves
//!   (through `io.telaf.Broker1` when the bus offers it, `NameOwnerChanged` otherwise);
//! - [`startup`]: connecting, owning the name, logging, and shutting down cleanly.

/// The Rust generated from `interfaces/api/*.api` (see `build.rs`).
#[allow(clippy::all, missing_docs)]
pub mod api {
    include!(concat!(env!("OUT_DIR"), "/telaf_apis.rs"));
}

pub mod data;
pub mod gpio;
pub mod info;
pub mod mcc;
pub mod paths;
pub mod pm;
pub mod references;
pub mod startup;
