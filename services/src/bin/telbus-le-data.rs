//! `telbus-le-data`: the le_data service of a simulated module.

use clap::Parser;
use std::process::ExitCode;
use telbus_services::{data, startup};

/// Serves io.telaf.le_data (a data connection shared by reference count) as
/// io.telaf.dataConnectionService.le_data, object /io/telaf/le_data. The connection is up
/// while any client holds a request; io.telaf.sim.le_data shows how many do.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    bus: startup::BusArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    startup::run(&args.bus, data::APP, data::SERVICE, data::serve)
}
