//! Generates the Rust (types, client proxies, server traits) of the bundled TelAF APIs.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let apis = [
        "../interfaces/api/le_info.api",
        "../interfaces/api/le_gpio.api",
        "../interfaces/api/le_mcc.api",
        "../interfaces/api/le_data.api",
        "../interfaces/api/le_pm.api",
    ];
    if let Err(e) = telbus_interfaces::build::generate(&apis, &["../interfaces/api"], &out) {
        panic!("{e}");
    }
}
