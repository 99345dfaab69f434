//! dbus-daemon XML configuration (busconfig): filled in by the configuration work.
