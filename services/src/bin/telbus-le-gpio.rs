//! `telbus-le-gpio`: one simulated GPIO pin, served as its own le_gpio service.

use clap::Parser;
use std::process::ExitCode;
use telbus_services::{gpio, startup};

/// Serves io.telaf.le_gpio for one simulated pin as io.telaf.gpioService.le_gpioPinN, object
/// /io/telaf/le_gpioPinN (one process per pin, so bindings decide who may drive which pin).
/// The first client that configures the pin owns it until it leaves the bus; others get
/// LE_BUSY. io.telaf.sim.le_gpio.SetInputLevel(b high) drives an input from outside.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    bus: startup::BusArgs,
    /// The pin number N (1 and up).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pin: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let service = gpio::service_name(args.pin);
    startup::run(&args.bus, gpio::APP, &service, |startup| {
        gpio::serve(startup, args.pin)
    })
}
