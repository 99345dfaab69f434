//! Reading the D-Bus error a call came back with, whichever way zbus reported it.

use zbus::{DBusError, fdo};

/// An error that may stand for an error reply: zbus's own and a typed proxy's `fdo::Error`.
pub trait ErrorReply: std::fmt::Debug {
    /// The error reply's name and message, or `None` if this is not an error reply (a broken
    /// connection, say).
    fn name_and_message(&self) -> Option<(String, String)>;
}

impl ErrorReply for zbus::Error {
    fn name_and_message(&self) -> Option<(String, String)> {
        match self {
            zbus::Error::MethodError(name, message, _) => {
                Some((name.to_string(), message.clone().unwrap_or_default()))
            }
            zbus::Error::FDO(error) => error.name_and_message(),
            zbus::Error::DBus(error) => Some((
                error.name().to_string(),
                error.description().unwrap_or_default().to_string(),
            )),
            _ => None,
        }
    }
}

impl ErrorReply for fdo::Error {
    fn name_and_message(&self) -> Option<(String, String)> {
        match self {
            fdo::Error::ZBus(error) => error.name_and_message(),
            error => Some((
                error.name().to_string(),
                error.description().unwrap_or_default().to_string(),
            )),
        }
    }
}

/// The name and message of the error reply behind `error`. Panics if `error` is not an error
/// reply, since the tests that ask expected one.
#[track_caller]
pub fn error_reply(error: &impl ErrorReply) -> (String, String) {
    error
        .name_and_message()
        .unwrap_or_else(|| panic!("expected an error reply, got {error:?}"))
}

/// The error name a call came back with, panicking if the call succeeded.
#[track_caller]
pub fn expect_error_name<T: std::fmt::Debug, E: ErrorReply>(result: Result<T, E>) -> String {
    match result {
        Ok(value) => panic!("expected an error reply, got {value:?}"),
        Err(error) => error_reply(&error).0,
    }
}

/// The error name and message a call came back with, panicking if the call succeeded.
#[track_caller]
pub fn expect_error<T: std::fmt::Debug, E: ErrorReply>(result: Result<T, E>) -> (String, String) {
    match result {
        Ok(value) => panic!("expected an error reply, got {value:?}"),
        Err(error) => error_reply(&error),
    }
}
