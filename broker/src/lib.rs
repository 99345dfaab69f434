//! telbusd's building blocks. The binary (`main.rs`) wires them into the bus.

pub mod auth;
pub mod match_rule;
pub mod service_file;
pub mod transport;
pub mod wire;
