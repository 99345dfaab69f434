//! Generates the Rust for the bundled TelAF APIs (and a test API using every construct),
//! so that `tests/generated_interfaces.rs` can serve and call them.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let apis = [
        "../interfaces/api/le_info.api",
        "../interfaces/api/le_gpio.api",
        "../interfaces/api/le_mcc.api",
        "../interfaces/api/le_data.api",
        "../interfaces/api/le_pm.api",
        "../interfaces/tests/data/kitchen_sink.api",
    ];
    if let Err(e) = telbus_interfaces::build::generate(&apis, &["../interfaces/api"], &out) {
        panic!("{e}");
    }
}
