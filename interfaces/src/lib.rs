//! The TelAF API language (see the interfaces issue).
