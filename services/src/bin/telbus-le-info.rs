//! `telbus-le-info`: the le_info service (device identity) of a simulated module.

use clap::Parser;
use std::process::ExitCode;
use telbus_services::{info, startup};

/// Serves io.telaf.le_info (IMEI, firmware, model, reset information, RF devices) of a simulated
/// module as io.telaf.infoService.le_info, object /io/telaf/le_info.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    bus: startup::BusArgs,
    /// The IMEI to report (15 digits).
    #[arg(long)]
    imei: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut identity = info::Identity::default();
    if let Some(imei) = args.imei {
        identity.imei = imei;
    }
    startup::run(&args.bus, info::APP, info::SERVICE, |startup| {
        info::serve(startup, identity)
    })
}
