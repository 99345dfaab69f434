//! The client side of the APIs these examples use, generated from their .api files.

fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let apis = [
        "../interfaces/api/le_mcc.api",
        "../interfaces/api/le_data.api",
        "../interfaces/api/le_pm.api",
        "../interfaces/api/le_gpio.api",
    ];
    telbus_interfaces::build::generate(&apis, &["../interfaces/api"], &out)
        .unwrap_or_else(|e| panic!("{e}"));
}
