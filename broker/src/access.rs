//! Access checks the router and the driver ask before they act: who may connect, own a name,
//! send, receive and eavesdrop.
//!
//! The dbus-daemon `<policy>` engine (telbus-policy) is not wired in yet: until it is, every
//! check here answers with what the permissive session policy answers, and the reference-suite
//! cases that test denials are listed as expected failures (dbus-tests/reference-expected-failures.txt).

use telbus_busconfig::BusConfig;
use zbus::Message;

use crate::ConnId;
use crate::bus::Bus;
use crate::wire::Route;

/// May `uid` connect? dbus-daemon's rule without `<allow user=…>` rules: only the bus's own user.
pub fn allows_user(config: &BusConfig, uid: u32, bus_uid: u32) -> bool {
    use telbus_busconfig::{PolicyContext, RuleKind};
    if uid == bus_uid {
        return true;
    }
    // Connection rules (<allow user="…"/>, <allow group="…"/>) of the default context.
    let mut allowed = false;
    for section in &config.policies {
        if !matches!(section.context, PolicyContext::Default) {
            continue;
        }
        for rule in &section.rules {
            if let RuleKind::User(who) = &rule.kind {
                if who == "*"
                    || who.parse::<u32>() == Ok(uid)
                    || user_name_of(uid).as_deref() == Some(who.as_str())
                {
                    allowed = rule.allow;
                }
            }
        }
    }
    allowed
}

fn user_name_of(uid: u32) -> Option<String> {
    // SAFETY: getpwuid returns static storage, read at once on this thread.
    unsafe {
        let pw = libc::getpwuid(uid);
        if pw.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

impl Bus {
    /// None if `from` may own `name`; otherwise why not (appended to the error text).
    pub fn check_own(&self, _from: ConnId, _name: &str) -> Option<String> {
        None
    }

    /// Ok if `from` may send this message to `to` and `to` may receive it.
    pub fn check_send(
        &self,
        _from: ConnId,
        _to: ConnId,
        _msg: &Message,
        _route: &Route<'_>,
        _is_reply: bool,
    ) -> Result<(), String> {
        Ok(())
    }

    /// Ok if `to` may receive this broadcast from `from`.
    pub fn check_receive_broadcast(
        &self,
        _from: ConnId,
        _to: ConnId,
        _msg: &Message,
        _route: &Route<'_>,
    ) -> Result<(), String> {
        Ok(())
    }

    /// May `who` see messages addressed to others (match rules with eavesdrop='true')?
    pub fn may_eavesdrop(&self, _who: ConnId) -> bool {
        true
    }
}
