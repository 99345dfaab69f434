//! TelAF-style services: not built yet (see the services issue); this crate only holds its place in the workspace.
