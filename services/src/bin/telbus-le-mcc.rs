//! `telbus-le-mcc`: the le_mcc service (voice calls) of a simulated modem.

use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;
use telbus_services::{mcc, startup};

/// Serves io.telaf.le_mcc (voice calls) of a simulated modem as io.telaf.modemService.le_mcc,
/// object /io/telaf/le_mcc.
///
/// The far end depends on the number dialled: a number ending in 00 is busy, one ending in 99
/// rings until the no-answer timeout, anything else answers after the answer delay; a number
/// with characters other than digits, +, * and # fails with TERM_INVALID_NUMBER_FORMAT.
/// io.telaf.sim.le_mcc.Ring(s number) on the same object simulates an incoming call.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    bus: startup::BusArgs,
    /// Milliseconds from ALERTING to CONNECTED for a number that answers.
    #[arg(long, default_value_t = 300, value_name = "MS")]
    answer_delay_ms: u64,
    /// Seconds from ALERTING to TERMINATED for a number that never answers.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    no_answer_timeout: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let timing = mcc::Timing {
        answer_delay: Duration::from_millis(args.answer_delay_ms),
        no_answer_timeout: Duration::from_secs(args.no_answer_timeout),
    };
    startup::run(&args.bus, mcc::APP, mcc::SERVICE, |startup| {
        mcc::serve(startup, timing)
    })
}
