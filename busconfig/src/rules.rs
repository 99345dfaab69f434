//! `<policy>` sections and their `<allow>`/`<deny>` rules, as written, checked as dbus-daemon
//! checks them. What a rule means for a message is telbus-policy's business; this module only
//! decides which rules are well-formed and records what they say.

use crate::limits::{MAXIMUM_MESSAGE_UNIX_FDS, parse_c_long};
use crate::model::Origin;

/// Which connections a `<policy>` section applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyContext {
    /// `context="default"`: every connection, before anything else.
    Default,
    /// `context="mandatory"`: every connection, after everything else.
    Mandatory,
    /// `user="…"`: a user name or a numeric uid, as written. dbus-daemon ignores sections
    /// whose user does not exist (including `*`).
    User(String),
    /// `group="…"`: a group name or a numeric gid, as written; unknown groups are ignored.
    Group(String),
    /// `at_console="true|false"`.
    AtConsole(bool),
}

/// A message type named by `send_type`/`receive_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    MethodCall,
    MethodReturn,
    Error,
    Signal,
}

impl MessageKind {
    /// The type's name in configurations and match rules.
    pub fn name(self) -> &'static str {
        match self {
            MessageKind::MethodCall => "method_call",
            MessageKind::MethodReturn => "method_return",
            MessageKind::Error => "error",
            MessageKind::Signal => "signal",
        }
    }

    fn from_name(name: &str) -> Option<MessageKind> {
        match name {
            "method_call" => Some(MessageKind::MethodCall),
            "method_return" => Some(MessageKind::MethodReturn),
            "error" => Some(MessageKind::Error),
            "signal" => Some(MessageKind::Signal),
            _ => None,
        }
    }
}

/// `<allow|deny send_…>`. A field that is None matches anything (`*` in the file, or absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendRule {
    /// `send_destination` (a name the receiving connection owns or queues for), or with
    /// `destination_is_prefix` `send_destination_prefix` (that name or names below it; `*` is
    /// not a wildcard there).
    pub destination: Option<String>,
    pub destination_is_prefix: bool,
    pub interface: Option<String>,
    pub member: Option<String>,
    pub error: Option<String>,
    pub path: Option<String>,
    pub msg_type: Option<MessageKind>,
    /// `send_broadcast`: None for either; Some(true) only broadcasts (signals without a
    /// destination); Some(false) only messages with a destination.
    pub broadcast: Option<bool>,
    /// `send_requested_reply`; when absent, the rule's own verdict (allow: true, deny: false).
    pub requested_reply: bool,
    pub eavesdrop: bool,
    /// `min_fds`..=`max_fds`: how many fds the message may carry (default 0..=33554432).
    pub min_fds: u32,
    pub max_fds: u32,
    /// `log="true"`: dbus-daemon logs messages this rule decides on.
    pub log: bool,
    /// `polkit_action="…"` (a telbus extension, `<allow>` only): what the rule allows still
    /// needs polkit to authorize this action for the sender.
    pub polkit_action: Option<String>,
}

/// `<allow|deny receive_…>` (and `<allow|deny eavesdrop="…"/>` alone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiveRule {
    /// `receive_sender`: a name the sending connection owns or queues for.
    pub sender: Option<String>,
    pub interface: Option<String>,
    pub member: Option<String>,
    pub error: Option<String>,
    pub path: Option<String>,
    pub msg_type: Option<MessageKind>,
    /// `receive_requested_reply`; when absent, the rule's own verdict.
    pub requested_reply: bool,
    pub eavesdrop: bool,
    pub min_fds: u32,
    pub max_fds: u32,
}

/// What a rule is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleKind {
    Send(SendRule),
    Receive(ReceiveRule),
    /// `own="name"` (prefix false; `*` is any name) or `own_prefix="name"` (prefix true: the
    /// name and names below it).
    Own {
        name: String,
        prefix: bool,
    },
    /// A connection rule: may this user connect (`*` for everyone)? Only meaningful in the
    /// default and mandatory contexts.
    User(String),
    /// A connection rule by group (`*` for everyone).
    Group(String),
}

/// One `<allow>` or `<deny>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    pub kind: RuleKind,
    pub origin: Origin,
}

/// One `<policy>` element and its rules, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySection {
    pub context: PolicyContext,
    pub rules: Vec<Rule>,
    pub origin: Origin,
}

impl RuleKind {
    /// Whether the rule is about a connection's own traffic (send, receive, own), which is what
    /// user, group and at_console sections may say; user/group rules decide who may connect at
    /// all, which only default and mandatory sections may.
    pub fn is_per_connection(&self) -> bool {
        !matches!(self, RuleKind::User(_) | RuleKind::Group(_))
    }
}

/// Every attribute `<allow>` and `<deny>` take.
const RULE_ATTRIBUTES: [&str; 25] = [
    "send_interface",
    "send_member",
    "send_error",
    "send_destination",
    "send_destination_prefix",
    "send_path",
    "send_type",
    "send_broadcast",
    "receive_interface",
    "receive_member",
    "receive_error",
    "receive_sender",
    "receive_path",
    "receive_type",
    "eavesdrop",
    "max_fds",
    "min_fds",
    "send_requested_reply",
    "receive_requested_reply",
    "own",
    "own_prefix",
    "user",
    "group",
    "log",
    // telbus's own: dbus-daemon refuses a configuration that uses it.
    "polkit_action",
];

/// The attributes of one rule element.
struct Attrs<'a> {
    list: &'a [(String, String)],
}

impl<'a> Attrs<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        self.list
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The value, with `*` meaning "any" (None).
    fn pattern(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| *v != "*").map(str::to_string)
    }
}

fn true_or_false(value: &str, attribute: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!(
            "Bad value \"{value}\" for {attribute} attribute, must be true or false"
        )),
    }
}

/// `min_fds`/`max_fds`: read as strtol reads, within 0..=16384.
fn fd_count(value: Option<&str>, attribute: &str, default: u32) -> Result<u32, String> {
    let Some(text) = value else {
        return Ok(default);
    };
    match parse_c_long(text) {
        Some(n) if (0..=i64::from(MAXIMUM_MESSAGE_UNIX_FDS)).contains(&n) => Ok(n as u32),
        _ => Err(format!(
            "Bad value \"{text}\" for {attribute} attribute, must be an integer in range 0 to \
             {MAXIMUM_MESSAGE_UNIX_FDS} inclusive"
        )),
    }
}

fn message_kind(value: Option<&str>) -> Result<Option<MessageKind>, String> {
    match value {
        None | Some("*") => Ok(None),
        Some(name) => MessageKind::from_name(name)
            .map(Some)
            .ok_or_else(|| format!("Bad message type \"{name}\"")),
    }
}

/// The rule an `<allow>` (`allow`) or `<deny>` element states, or dbus-daemon's complaint
/// about it. `element` is "allow" or "deny".
pub(crate) fn parse_rule(
    element: &str,
    attributes: &[(String, String)],
    allow: bool,
) -> Result<RuleKind, String> {
    if let Some((name, _)) = attributes
        .iter()
        .find(|(name, _)| !RULE_ATTRIBUTES.contains(&name.as_str()))
    {
        return Err(format!(
            "Attribute \"{name}\" is invalid on <{element}> element in this context"
        ));
    }
    let a = Attrs { list: attributes };

    let any_send = [
        "send_destination",
        "send_destination_prefix",
        "send_broadcast",
        "send_path",
        "send_type",
        "send_interface",
        "send_member",
        "send_error",
        "send_requested_reply",
    ]
    .iter()
    .any(|n| a.has(n));
    // eavesdrop alone makes a receive rule: <allow eavesdrop="true"/> is receive_sender="*".
    let any_receive = [
        "receive_sender",
        "receive_path",
        "receive_type",
        "receive_interface",
        "receive_member",
        "receive_error",
        "receive_requested_reply",
    ]
    .iter()
    .any(|n| a.has(n))
        || (!any_send && a.has("eavesdrop"));
    let any_message =
        any_send || any_receive || a.has("eavesdrop") || a.has("max_fds") || a.has("min_fds");
    let others = ["own", "own_prefix", "user", "group"]
        .iter()
        .filter(|n| a.has(n))
        .count();

    if !(any_send || any_receive || others > 0) {
        return Err(format!(
            "Element <{element}> must have one or more attributes"
        ));
    }
    if (a.has("send_member") && !a.has("send_interface") && !a.has("send_path"))
        || (a.has("receive_member") && !a.has("receive_interface") && !a.has("receive_path"))
    {
        return Err(format!(
            "On element <{element}>, if you specify a member you must specify an interface or a \
             path. Keep in mind that not all messages have an interface field."
        ));
    }
    if usize::from(any_message) + others > 1 {
        return Err(format!(
            "Invalid combination of attributes on element <{element}>: own, own_prefix, user, \
             group and the message-related attributes cannot be combined"
        ));
    }
    if let Some(action) = a.get("polkit_action") {
        if !allow || !any_send {
            return Err(format!(
                "Attribute \"polkit_action\" is only valid on <allow> elements with send_* \
                 attributes (on <{element}> element)"
            ));
        }
        if !is_polkit_action_id(action) {
            return Err(format!(
                "Bad value \"{action}\" for polkit_action attribute, must be a polkit action id \
                 (letters, digits, '.', '-' and '_')"
            ));
        }
    }
    if any_send && any_receive {
        return Err(format!(
            "Invalid combination of attributes on element <{element}>: send and receive \
             attributes cannot be combined"
        ));
    }
    if (a.has("send_member") || a.has("send_interface")) && a.has("send_error") {
        return Err(format!(
            "Invalid combination of attributes on element <{element}>: send_error cannot be \
             combined with send_member or send_interface"
        ));
    }
    if a.has("send_destination") && a.has("send_destination_prefix") {
        return Err(format!(
            "Invalid combination of attributes on element <{element}>: send_destination cannot \
             be combined with send_destination_prefix"
        ));
    }
    if (a.has("receive_member") || a.has("receive_interface")) && a.has("receive_error") {
        return Err(format!(
            "Invalid combination of attributes on element <{element}>: receive_error cannot be \
             combined with receive_member or receive_interface"
        ));
    }

    if any_send {
        return send_rule(&a, allow).map(RuleKind::Send);
    }
    if any_receive {
        return receive_rule(&a, allow).map(RuleKind::Receive);
    }
    if let Some(name) = a.get("own") {
        return Ok(RuleKind::Own {
            name: name.to_string(),
            prefix: false,
        });
    }
    if let Some(name) = a.get("own_prefix") {
        return Ok(RuleKind::Own {
            name: name.to_string(),
            prefix: true,
        });
    }
    if let Some(user) = a.get("user") {
        return Ok(RuleKind::User(user.to_string()));
    }
    let group = a
        .get("group")
        .expect("one of the attribute groups is present");
    Ok(RuleKind::Group(group.to_string()))
}

fn send_rule(a: &Attrs<'_>, allow: bool) -> Result<SendRule, String> {
    let msg_type = message_kind(a.get("send_type"))?;
    let eavesdrop = a
        .get("eavesdrop")
        .map(|v| true_or_false(v, "eavesdrop"))
        .transpose()?;
    let broadcast = a
        .get("send_broadcast")
        .map(|v| true_or_false(v, "send_broadcast"))
        .transpose()?;
    let destination = a.pattern("send_destination");
    if let (Some(destination), Some(true)) = (&destination, broadcast) {
        // A broadcast has no destination, so this could never match.
        return Err(format!(
            "Rule with send_broadcast=\"true\" and send_destination=\"{destination}\" cannot \
             match anything"
        ));
    }
    let requested_reply = a
        .get("send_requested_reply")
        .map(|v| true_or_false(v, "send_requested_reply"))
        .transpose()?;
    let max_fds = fd_count(a.get("max_fds"), "max_fds", MAXIMUM_MESSAGE_UNIX_FDS)?;
    let min_fds = fd_count(a.get("min_fds"), "min_fds", 0)?;
    let (destination, destination_is_prefix) = match a.get("send_destination_prefix") {
        Some(prefix) => (Some(prefix.to_string()), true),
        None => (destination, false),
    };
    Ok(SendRule {
        destination,
        destination_is_prefix,
        interface: a.pattern("send_interface"),
        member: a.pattern("send_member"),
        error: a.pattern("send_error"),
        path: a.pattern("send_path"),
        msg_type,
        broadcast,
        requested_reply: requested_reply.unwrap_or(allow),
        eavesdrop: eavesdrop.unwrap_or(false),
        min_fds,
        max_fds,
        // dbus-daemon takes anything but "true" as false here, without complaint.
        log: a.get("log") == Some("true"),
        polkit_action: a.get("polkit_action").map(str::to_string),
    })
}

/// A polkit action id, as polkit's .policy files spell them (`org.freedesktop.login1.reboot`).
fn is_polkit_action_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn receive_rule(a: &Attrs<'_>, allow: bool) -> Result<ReceiveRule, String> {
    let msg_type = message_kind(a.get("receive_type"))?;
    let eavesdrop = a
        .get("eavesdrop")
        .map(|v| true_or_false(v, "eavesdrop"))
        .transpose()?;
    let requested_reply = a
        .get("receive_requested_reply")
        .map(|v| true_or_false(v, "receive_requested_reply"))
        .transpose()?;
    let max_fds = fd_count(a.get("max_fds"), "max_fds", MAXIMUM_MESSAGE_UNIX_FDS)?;
    let min_fds = fd_count(a.get("min_fds"), "min_fds", 0)?;
    Ok(ReceiveRule {
        sender: a.pattern("receive_sender"),
        interface: a.pattern("receive_interface"),
        member: a.pattern("receive_member"),
        error: a.pattern("receive_error"),
        path: a.pattern("receive_path"),
        msg_type,
        requested_reply: requested_reply.unwrap_or(allow),
        eavesdrop: eavesdrop.unwrap_or(false),
        min_fds,
        max_fds,
    })
}
