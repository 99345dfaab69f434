//! Load bus configuration files and print what telbus makes of them: the merged configuration,
//! or the error dbus-daemon would refuse it with.
//!
//! `cargo run -p telbus-busconfig --example check-config -- /usr/share/dbus-1/system.conf`

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut status = ExitCode::SUCCESS;
    for arg in std::env::args().skip(1) {
        match telbus_busconfig::load(Path::new(&arg)) {
            Ok(config) => {
                for warning in &config.warnings {
                    eprintln!("warning: {warning}");
                }
                println!("{config:#?}");
            }
            Err(e) => {
                eprintln!("{e}");
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}
