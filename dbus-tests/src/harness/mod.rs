//! The pieces of the harness, one concept each.

pub mod bus;
pub mod config;
pub mod driver;
pub mod errors;
pub mod process;
pub mod raw;
pub mod service;
pub mod telaf;
pub mod telaf_services;
pub mod timeout;
