//! telbusd's building blocks. The binary (`main.rs`) wires them into the bus.

pub mod auth;
pub mod match_rule;
pub mod service_file;
pub mod transport;
pub mod wire;

/// A hash map keyed by something the broker chose itself (a connection id, a uid, a call's
/// serial with its caller): hashed with foldhash, which costs far less than std's SipHash on
/// the per-message path. Keys a client chooses (names, rule texts) stay on std's hasher.
pub type IdMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
