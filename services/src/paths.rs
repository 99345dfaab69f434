//! Object paths for references: unique for the life of the process, and unlikely to match a
//! path of an earlier run, so a stale reference is never mistaken for a live one.

use std::sync::atomic::{AtomicU64, Ordering};
use zbus::wire::OwnedObjectPath;

/// Mints `<base>/<kind>/<incarnation>_<n>` paths; `n` only grows.
#[derive(Debug)]
pub struct PathMinter {
    base: String,
    incarnation: u32,
    next: AtomicU64,
}

impl PathMinter {
    /// Paths under `base` (an object path such as `/io/telaf/le_mcc`).
    pub fn new(base: &str) -> Self {
        // Not a secret: only makes paths of an earlier run of the service unlikely to recur.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
            .unwrap_or(0);
        PathMinter {
            base: base.trim_end_matches('/').to_string(),
            incarnation: nanos ^ std::process::id().rotate_left(16),
            next: AtomicU64::new(1),
        }
    }

    /// A new path for a reference of `kind` (a path element such as `call`).
    pub fn mint(&self, kind: &str) -> OwnedObjectPath {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = format!("{}/{kind}/{:x}_{n}", self.base, self.incarnation);
        OwnedObjectPath::try_from(path).expect("a valid object path")
    }
}

/// `/`: the NULL reference.
pub fn null_reference() -> OwnedObjectPath {
    OwnedObjectPath::try_from("/").expect("a valid object path")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_never_reused() {
        let minter = PathMinter::new("/io/telaf/le_mcc/");
        let a = minter.mint("call");
        let b = minter.mint("call");
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("/io/telaf/le_mcc/call/"), "{a}");
    }
}
