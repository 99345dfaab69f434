//! `telbus-le-pm`: the le_pm service of a simulated module.

use clap::Parser;
use std::process::ExitCode;
use telbus_services::{pm, startup};

/// Serves io.telaf.le_pm (wakeup sources) as io.telaf.powerMgr.le_pm, object /io/telaf/le_pm.
/// The system stays awake while any source is held; io.telaf.sim.le_pm shows the state.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    bus: startup::BusArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    startup::run(&args.bus, pm::APP, pm::SERVICE, pm::serve)
}
