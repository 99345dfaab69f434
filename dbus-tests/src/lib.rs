//! Harness for end-to-end tests: starts a bus daemon on a private socket.
