//! Match rules through the public API: parsing (with dbus-daemon's own test vectors), matching,
//! the index against a brute-force scan, and, when dbus-daemon is installed, the parser against
//! dbus-daemon itself.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;

use telbus_broker::match_rule::{
    ArgMatch, LIMITS_EXCEEDED, MATCH_RULE_INVALID, MatchIndex, MatchMessage, MatchRule, PathMatch,
};
use zbus::Message;
use zbus::message::Type;
use zbus::wire::{DynamicType, ObjectPath};

/// Counts this thread's allocations, to check that matching allocates nothing.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_allocation() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

fn rule(text: &str) -> MatchRule {
    MatchRule::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn error(text: &str) -> String {
    match MatchRule::parse(text) {
        Ok(r) => panic!("{text:?} parsed as {r}"),
        Err(e) => {
            assert_eq!(e.name(), MATCH_RULE_INVALID, "{text:?}");
            e.to_string()
        }
    }
}

/// A message and what the router would know about it, owned, so that a query can borrow it.
struct Sent {
    msg: Message,
    msg_type: Type,
    sender: String,
    names: Vec<&'static str>,
    destination: Option<String>,
    addressed_unique: Option<String>,
    addressed_names: Vec<&'static str>,
    path: Option<String>,
    interface: Option<String>,
    member: Option<String>,
}

impl Sent {
    fn new(msg: Message, sender: &str, names: &[&'static str]) -> Self {
        let header = msg.header();
        let sent = Sent {
            msg_type: header.message_type(),
            sender: sender.to_string(),
            names: names.to_vec(),
            destination: header.destination().map(|d| d.to_string()),
            addressed_unique: None,
            addressed_names: Vec::new(),
            path: header.path().map(|p| p.to_string()),
            interface: header.interface().map(|i| i.to_string()),
            member: header.member().map(|m| m.to_string()),
            msg: msg.clone(),
        };
        drop(header);
        sent
    }

    fn addressed_to(mut self, unique: &str) -> Self {
        self.addressed_unique = Some(unique.to_string());
        // The router resolved a well-known destination to its primary owner.
        if let Some(name) = self.destination.clone().filter(|d| !d.starts_with(':')) {
            self.addressed_names.push(Box::leak(name.into_boxed_str()));
        }
        self
    }

    fn query(&self) -> MatchMessage<'_> {
        MatchMessage {
            msg_type: self.msg_type,
            sender: Some(&self.sender),
            sender_names: &self.names,
            destination: self.destination.as_deref(),
            addressed_unique: self.addressed_unique.as_deref(),
            addressed_names: &self.addressed_names,
            path: self.path.as_deref(),
            interface: self.interface.as_deref(),
            member: self.member.as_deref(),
            message: self.msg.data().bytes(),
        }
    }
}

fn signal<B: serde::Serialize + DynamicType>(path: &str, member: &str, body: &B) -> Message {
    Message::signal(path, "org.example.Iface", member)
        .build(body)
        .unwrap()
}

/// A signal from :1.5, which owns org.example.Owner.
fn from_owner(msg: Message) -> Sent {
    Sent::new(msg, ":1.5", &["org.example.Owner"])
}

fn matches(text: &str, sent: &Sent) -> bool {
    rule(text).matches(&sent.query())
}

fn recipients(index: &MatchIndex<u32>, sent: &Sent, addressed: Option<u32>) -> Vec<u32> {
    let mut out = Vec::new();
    index.recipients(&sent.query(), addressed, |o| out.push(o));
    let reported = out.len();
    out.sort_unstable();
    out.dedup();
    assert_eq!(out.len(), reported, "an owner was reported twice");
    out
}

// ---------------------------------------------------------------------------------------------
// Parsing

#[test]
fn every_key_parses() {
    let r = rule(
        "type='signal',sender='org.example.Sender',interface='org.example.Iface',member='Foo',path='/bar/foo',destination=':452345.34',arg0='a',arg1path='/p/',arg63='z',eavesdrop='true'",
    );
    assert_eq!(r.msg_type(), Some(Type::Signal));
    assert_eq!(r.sender(), Some("org.example.Sender"));
    assert_eq!(r.interface(), Some("org.example.Iface"));
    assert_eq!(r.member(), Some("Foo"));
    assert_eq!(r.path(), Some(&PathMatch::Exact("/bar/foo".into())));
    assert_eq!(r.destination(), Some(":452345.34"));
    assert_eq!(
        r.args(),
        &[
            (0, ArgMatch::Str("a".into())),
            (1, ArgMatch::Path("/p/".into())),
            (63, ArgMatch::Str("z".into())),
        ]
    );
    assert!(r.eavesdrop());
    let r = rule("path_namespace='/foo/bar',arg0namespace='org.example',eavesdrop=false");
    assert_eq!(r.path(), Some(&PathMatch::Namespace("/foo/bar".into())));
    assert_eq!(r.args(), &[(0, ArgMatch::Namespace("org.example".into()))]);
    assert!(!r.eavesdrop());
    for (text, t) in [
        ("type=signal", Type::Signal),
        ("type=method_call", Type::MethodCall),
        ("type=method_return", Type::MethodReturn),
        ("type=error", Type::Error),
    ] {
        assert_eq!(rule(text).msg_type(), Some(t));
    }
    // Empty and all-whitespace rules match everything.
    assert_eq!(rule(""), MatchRule::default());
    assert_eq!(rule("    \t\r\n"), MatchRule::default());
    // Empty values are values.
    assert_eq!(rule("arg0=''").args(), &[(0, ArgMatch::Str(String::new()))]);
}

/// The rules dbus-daemon's own parser tests (bus/signals.c) accept, with the same outcome.
#[test]
fn dbus_daemon_parsing_vectors() {
    let large = rule(
        "type='signal',sender='org.freedesktop.DBusSender',interface='org.freedesktop.DBusInterface',member='Foo',path='/bar/foo',destination=':452345.34'",
    );
    // Extra whitespace and useless quotes.
    assert_eq!(
        rule(
            "    type='signal',  \tsender='org.freedes''ktop.DBusSender',   interface='org.freedesktop.DBusInterface''''', \tmember='Foo',path='/bar/foo',destination=':452345.34'''''"
        ),
        large
    );
    for (index, text) in [
        (0, "arg0"),
        (1, "arg1"),
        (2, "arg2"),
        (40, "arg40"),
        (63, "arg63"),
    ] {
        assert_eq!(
            rule(&format!("{text}='foo'")).args(),
            &[(index, ArgMatch::Str("foo".into()))]
        );
    }
    assert_eq!(
        rule("arg7path='/foo'").args(),
        &[(7, ArgMatch::Path("/foo".into()))]
    );
    assert_eq!(
        rule("arg0namespace='foo.bar'").args(),
        &[(0, ArgMatch::Namespace("foo.bar".into()))]
    );
    assert_eq!(
        rule("arg0namespace='foo'").args(),
        &[(0, ArgMatch::Namespace("foo".into()))]
    );
    for refused in [
        "arg1namespace='foo'",
        "arg0namespace=''",
        "arg0namespace='foo.'",
        "arg0namespace='foo.bar.'",
        "arg0namespace='foo..'",
        "arg0namespace='foo.bar..'",
        "arg300='foo'",
        "arg64='foo'",
        "arg='foo'",
        "argv='foo'",
        "arg3junk='foo'",
        "argument='foo'",
        "type='signal',type='method_call'",
        "path='/foo',path_namespace='/foo'",
        "path_namespace='/foo/'",
        "arg0='foo',arg0='bar'",
        "arg3='foo',arg3='bar'",
        "arg30='foo',arg30='bar'",
        "blah='signal'",
        "type='chouin'",
        "interface='abc@def++'",
        "service='youpi'",
        "type",
    ] {
        error(refused);
    }
}

/// dbus-daemon's equality vectors: each pair is one rule, prints the same, and reparses to
/// itself; and no rule equals another pair's.
#[test]
fn dbus_daemon_equality_vectors() {
    let pairs = [
        ("type='signal'", "type='signal'"),
        (
            "type='signal',interface='foo.bar'",
            "interface='foo.bar',type='signal'",
        ),
        ("type='signal',member='bar'", "member='bar',type='signal'"),
        (
            "type='method_call',sender=':1.0'",
            "sender=':1.0',type='method_call'",
        ),
        (
            "type='method_call',destination=':1.0'",
            "destination=':1.0',type='method_call'",
        ),
        (
            "type='method_call',path='/foo/bar'",
            "path='/foo/bar',type='method_call'",
        ),
        (
            "type='method_call',arg0='blah'",
            "arg0='blah',type='method_call'",
        ),
        (
            "type='method_call',arg0='boo'",
            "arg0='boo',type='method_call'",
        ),
        (
            "type='method_call',arg0='blah',arg1='baz'",
            "arg0='blah',arg1='baz',type='method_call'",
        ),
        (
            "type='method_call',arg3='foosh'",
            "arg3='foosh',type='method_call'",
        ),
        ("arg3='fool'", "arg3='fool'"),
        ("arg0namespace='fool'", "arg0namespace='fool'"),
        ("member='food'", "member='food'"),
        ("member=escape", "member='escape'"),
        ("member=icecream", "member=ice'cream'"),
        (
            "arg0='comma,type=comma',type=signal",
            "type=signal,arg0='comma,type=comma'",
        ),
        ("arg0=escap\\e", "arg0='escap\\e'"),
        ("arg0=Time: 8 o\\'clock", "arg0='Time: 8 o'\\''clock'"),
    ];
    for (i, (first, second)) in pairs.iter().enumerate() {
        let (a, b) = (rule(first), rule(second));
        assert_eq!(a, b, "{first} / {second}");
        assert_eq!(a.to_string(), b.to_string());
        assert_eq!(rule(&a.to_string()), a, "{a} reparses");
        for (j, (_, other)) in pairs.iter().enumerate() {
            if i != j {
                assert_ne!(a, rule(other), "{first} / {other}");
            }
        }
    }
    assert_eq!(
        rule("arg0=Time: 8 o\\'clock").args(),
        &[(0, ArgMatch::Str("Time: 8 o'clock".into()))]
    );
    assert_eq!(
        rule("arg0=Time: 8 o\\'clock").to_string(),
        "arg0='Time: 8 o'\\''clock'"
    );
}

#[test]
fn quoting_and_escaping() {
    let arg0 = |text: &str| match rule(text).args() {
        [(0, ArgMatch::Str(v))] => v.clone(),
        other => panic!("{text}: {other:?}"),
    };
    assert_eq!(arg0("arg0='a,b'"), "a,b");
    assert_eq!(arg0("arg0=a'b,c'd"), "ab,cd");
    assert_eq!(arg0(r"arg0=\'"), "'");
    assert_eq!(arg0(r"arg0='\'"), "\\");
    assert_eq!(arg0(r"arg0=a\b"), r"a\b");
    assert_eq!(arg0(r"arg0=a\"), r"a\");
    assert_eq!(arg0(r"arg0=a\,b"), r"a\,b");
    assert_eq!(arg0("arg0= spaced "), " spaced ");
    assert_eq!(arg0("arg0=unquoted"), "unquoted");
    assert_eq!(arg0("arg0='\u{e9}\u{1F600}'"), "\u{e9}\u{1F600}");
    // Whitespace before keys and before '=' goes; a trailing comma is fine.
    assert_eq!(rule(" \tmember \t=X,\n type=signal, ").member(), Some("X"));
    // A value's trailing whitespace stays and makes it invalid here.
    assert_eq!(
        error("type='signal' ,member=X"),
        "Invalid message type (signal ) in match rule"
    );
}

#[test]
fn argument_numbers_are_read_as_dbus_daemon_reads_them() {
    // dbus-daemon reads the number with strtoul(…, 0): octal, hexadecimal and signs count.
    let index = |text: &str| rule(text).args()[0].0;
    assert_eq!(index("arg01='x'"), 1);
    assert_eq!(index("arg010='x'"), 8);
    assert_eq!(index("arg0x1f='x'"), 31);
    assert_eq!(index("arg+5='x'"), 5);
    assert_eq!(index("arg-0='x'"), 0);
    assert_eq!(
        rule("arg0xapath='/a'").args(),
        &[(10, ArgMatch::Path("/a".into()))]
    );
    assert_eq!(rule("arg01='x'"), rule("arg1='x'"));
    assert_eq!(rule("arg01='x'").to_string(), "arg1='x'");
    assert_eq!(
        error("arg-1='x'"),
        "Key 'arg-1' in match rule has arg number 18446744073709551615 but the maximum is 63."
    );
    error("arg08='x'");
    error("arg00namespace='a'");
}

/// Every error, with dbus-daemon's text (less the newline some of its texts end with).
#[test]
fn every_error_and_its_text() {
    for (text, message) in [
        (
            "type",
            "Match rule has a key with no subsequent '=' character",
        ),
        (
            "type signal",
            "Match rule has a key with no subsequent '=' character",
        ),
        ("member='X", "Unbalanced quotation marks in match rule"),
        (
            "='x'",
            "Match rule has a '=' character with no key before it",
        ),
        (
            "type=signal,type=error",
            "Key type specified twice in match rule",
        ),
        (
            "sender=:1.1,sender=:1.2",
            "Key sender specified twice in match rule",
        ),
        (
            "interface=a.b,interface=a.b",
            "Key interface specified twice in match rule",
        ),
        (
            "member=A,member=A",
            "Key member specified twice in match rule",
        ),
        (
            "destination=:1.1,destination=:1.1",
            "Key destination specified twice in match rule",
        ),
        (
            "path=/a,path=/a",
            "path or path_namespace specified twice in match rule",
        ),
        (
            "path_namespace=/a,path=/a",
            "path or path_namespace specified twice in match rule",
        ),
        ("type=bogus", "Invalid message type (bogus) in match rule"),
        ("sender=bad", "Sender name 'bad' is invalid"),
        ("sender=''", "Sender name '' is invalid"),
        ("interface=nodots", "Interface name 'nodots' is invalid"),
        ("member=1bad", "Member name '1bad' is invalid"),
        ("path=no/slash", "Path 'no/slash' is invalid"),
        ("path_namespace=/a/", "Path '/a/' is invalid"),
        ("destination=a..b", "Destination name 'a..b' is invalid"),
        (
            "eavesdrop=maybe",
            "eavesdrop='maybe' is invalid, it should be 'true' or 'false'",
        ),
        ("foo=bar", "Unknown key \"foo\" in match rule"),
        (
            "arg='x'",
            "Key 'arg' in match rule starts with 'arg' but lacks an arg number. Should be 'arg0' or 'arg7' for example.",
        ),
        (
            "argv='x'",
            "Key 'argv' in match rule starts with 'arg' but could not parse arg number. Should be 'arg0' or 'arg7' for example.",
        ),
        (
            "arg3junk='x'",
            "Key 'arg3junk' in match rule contains junk after argument number (3). Only 'arg3path' (for example) or 'arg0namespace' are valid",
        ),
        (
            "arg1namespace='x'",
            "Key 'arg1namespace' in match rule contains junk after argument number (1). Only 'arg1path' (for example) or 'arg0namespace' are valid",
        ),
        (
            "arg0namespace='a.'",
            "arg0namespace='a.' is not a valid prefix of a bus name",
        ),
        (
            "arg64='x'",
            "Key 'arg64' in match rule has arg number 64 but the maximum is 63.",
        ),
        (
            "arg2='x',arg2path='/'",
            "Argument arg2path matched more than once in match rule",
        ),
    ] {
        assert_eq!(error(text), message, "{text}");
    }
    let long = format!("arg0='{}'", "x".repeat(1020));
    let e = MatchRule::parse(&long).unwrap_err();
    assert_eq!(e.name(), LIMITS_EXCEEDED);
    assert_eq!(
        e.to_string(),
        "Match rule text is 1027 bytes, maximum is 1024"
    );
    // 1024 bytes is still fine.
    assert!(MatchRule::parse(&format!("arg0='{}'", "x".repeat(1017))).is_ok());
}

#[test]
fn names_follow_dbus_daemon() {
    // Unique names need no dot; a namespace may be one element; paths take no trailing slash.
    rule("sender=':1'");
    rule("destination=':1.x-y'");
    rule("arg0namespace='org'");
    rule("path='/'");
    rule("path_namespace='/'");
    error("sender=':1.'");
    error("interface='a.9'");
    error("arg0namespace='9org'");
    // argNpath values are not checked: dconf's '/a/b/' and any string are fine.
    rule("arg0path='/a/b/'");
    rule("arg0path='not a path'");
}

#[test]
fn eavesdrop_may_repeat_and_the_last_counts() {
    assert!(!rule("eavesdrop=true,eavesdrop=false").eavesdrop());
    assert!(rule("eavesdrop=false,eavesdrop=true").eavesdrop());
    assert_eq!(rule("eavesdrop=false"), rule(""));
    assert_ne!(rule("eavesdrop=true"), rule(""));
    assert!(rule("").with_eavesdrop(true).eavesdrop());
}

#[test]
fn sixty_four_arguments_in_one_rule() {
    let text: Vec<String> = (0..64).map(|i| format!("arg{i}='{i}'")).collect();
    let r = rule(&text.join(","));
    assert_eq!(r.args().len(), 64);
    assert_eq!(rule(&r.to_string()), r);
}

// ---------------------------------------------------------------------------------------------
// Matching

/// dbus-daemon's matching vectors: a signal Frobated("foobar", 3).
#[test]
fn dbus_daemon_matching_vectors() {
    let sent = from_owner(signal("/", "Frobated", &("foobar", 3i32)));
    for text in [
        "type='signal'",
        "member='Frobated'",
        "arg0='foobar'",
        "type='signal',member='Frobated'",
        "type='signal',member='Frobated',arg0='foobar'",
        "member='Frobated',arg0='foobar'",
        "type='signal',arg0='foobar'",
        "arg0path='foobar'",
        "arg0namespace='foobar'",
    ] {
        assert!(matches(text, &sent), "{text}");
    }
    for text in [
        "type='method_call'",
        "type='error'",
        "type='method_return'",
        "type='signal',member='Oopsed'",
        "arg0='blah'",
        "arg1='foobar'",
        "arg2='foobar'",
        "arg3='foobar'",
        "arg0='3'",
        "arg1='3'",
        "arg0='foobar',arg1='abcdef'",
        "arg0='foobar',arg1='abcdef',arg2='abcdefghi',arg3='abcdefghi',arg4='abcdefghi'",
        "arg0='foobar',arg1='abcdef',arg4='abcdefghi',arg3='abcdefghi',arg2='abcdefghi'",
        "arg0path='foo'",
        "arg0path='foobar/'",
        "arg1path='3'",
        "arg0namespace='foo'",
        "arg0namespace='foo',arg1='abcdef'",
        "arg0namespace='moo'",
    ] {
        assert!(!matches(text, &sent), "{text}");
    }
}

#[test]
fn arg0namespace_splits_on_dots() {
    let sent = from_owner(signal(
        "/",
        "NameOwnerChanged",
        &("com.example.backend.foo",),
    ));
    for text in [
        "com.example.backend",
        "com.example",
        "com",
        "com.example.backend.foo",
    ] {
        assert!(matches(&format!("arg0namespace='{text}'"), &sent), "{text}");
    }
    for text in [
        "com.example.backend.foo.bar",
        "com.example.backend.foobar",
        "com.example.backend.fo",
        "com.example.backen",
        "com.exampl",
        "co",
    ] {
        assert!(
            !matches(&format!("arg0namespace='{text}'"), &sent),
            "{text}"
        );
    }
    // Only strings.
    let path = from_owner(signal("/", "S", &(ObjectPath::try_from("/com").unwrap(),)));
    assert!(!matches("arg0namespace='com'", &path));
}

/// The specification's (and dbus-daemon's) argNpath vectors, for `arg0path='/aa/bb/'`, the
/// way dconf subscribes.
#[test]
fn arg_path_prefixes_go_both_ways() {
    let rule_text = "arg0path='/aa/bb/'";
    let as_string = |s: &str| from_owner(signal("/", "Foo", &(s,)));
    let as_path = |s: &str| from_owner(signal("/", "Foo", &(ObjectPath::try_from(s).unwrap(),)));
    for s in ["/aa/", "/aa/bb/", "/aa/bb/cc/", "/", "/aa/bb/cc"] {
        assert!(matches(rule_text, &as_string(s)), "string {s}");
    }
    for s in ["/", "/aa/bb/cc"] {
        assert!(matches(rule_text, &as_path(s)), "path {s}");
    }
    for s in ["/aa/b", "/aa", "/aa/bb"] {
        assert!(!matches(rule_text, &as_string(s)), "string {s}");
        assert!(!matches(rule_text, &as_path(s)), "path {s}");
    }
    // argN (without path) takes strings only.
    assert!(!matches("arg0='/aa'", &as_path("/aa")));
    assert!(matches("arg0='/aa'", &as_string("/aa")));
    // A later argument, after others of other types.
    let sent = from_owner(signal("/", "S", &(1u8, vec![1u32, 2], "/x/y/z")));
    assert!(matches("arg2path='/x/'", &sent));
    assert!(!matches("arg1path='/x/'", &sent));
}

/// dbus-daemon's path_namespace vectors.
#[test]
fn path_namespace_stops_at_component_boundaries() {
    let at = |path: &str| from_owner(signal(path, "S", &()));
    let cases = [
        (
            "/foo/TheObjectManager",
            &["/", "/foo", "/foo/TheObjectManager"][..],
            &["/bar", "/bar/TheObjectManager"][..],
        ),
        (
            "/foo/TheObjectManager/child_object",
            &["/", "/foo/TheObjectManager"][..],
            &[][..],
        ),
        (
            "/foo/TheObjectManagerOther",
            &["/"][..],
            &["/foo/TheObjectManager"][..],
        ),
        ("/", &["/"][..], &["/foo/TheObjectManager"][..]),
    ];
    for (path, yes, no) in cases {
        let sent = at(path);
        for ns in yes {
            assert!(
                matches(&format!("type='signal',path_namespace='{ns}'"), &sent),
                "{ns} takes {path}"
            );
        }
        for ns in no {
            assert!(
                !matches(&format!("type='signal',path_namespace='{ns}'"), &sent),
                "{ns} does not take {path}"
            );
        }
    }
    assert!(matches(
        "path='/foo/TheObjectManager'",
        &at("/foo/TheObjectManager")
    ));
    assert!(!matches("path='/foo'", &at("/foo/TheObjectManager")));
}

#[test]
fn sender_by_unique_or_primary_name() {
    let sent = from_owner(signal("/", "S", &()));
    assert!(matches("sender=':1.5'", &sent));
    assert!(matches("sender='org.example.Owner'", &sent));
    assert!(!matches("sender=':1.6'", &sent));
    assert!(!matches("sender='org.example.Other'", &sent));
    let from_bus = Sent::new(signal("/", "S", &()), "org.freedesktop.DBus", &[]);
    assert!(matches("sender='org.freedesktop.DBus'", &from_bus));
    assert!(!matches("sender=':1.5'", &from_bus));
}

#[test]
fn destination_is_the_addressed_connection() {
    let to = |destination: &str, unique: &str| {
        let msg = Message::method_call("/", "Ping")
            .destination(destination)
            .build(&())
            .unwrap();
        from_owner(msg).addressed_to(unique)
    };
    let by_unique = to(":1.7", ":1.7");
    assert!(matches("destination=':1.7'", &by_unique));
    assert!(!matches("destination=':1.8'", &by_unique));
    let by_name = to("org.example.Service", ":1.7");
    assert!(matches("destination=':1.7'", &by_name));
    assert!(matches("destination='org.example.Service'", &by_name));
    assert!(!matches("destination='org.example.Other'", &by_name));
    // A broadcast has no destination, so no destination= rule takes it.
    let broadcast = from_owner(signal("/", "S", &()));
    assert!(!matches("destination=':1.5'", &broadcast));
    // With nobody addressed (a call to the bus itself), the DESTINATION field is compared.
    let to_bus = from_owner(
        Message::method_call("/", "Hello")
            .destination("org.freedesktop.DBus")
            .build(&())
            .unwrap(),
    );
    assert!(matches("destination='org.freedesktop.DBus'", &to_bus));
}

#[test]
fn missing_header_fields_never_match() {
    let call = Message::method_call("/p", "M").build(&()).unwrap();
    let sent = from_owner(call);
    assert!(matches("type='method_call',member='M',path='/p'", &sent));
    assert!(!matches("interface='org.example.Iface'", &sent));
    let reply = from_owner(
        Message::method_return(&sent.msg.header())
            .build(&("x",))
            .unwrap(),
    );
    assert!(matches("type='method_return',arg0='x'", &reply));
    assert!(!matches("member='M'", &reply));
    assert!(!matches("path_namespace='/'", &reply));
}

#[test]
fn big_endian_bodies() {
    let msg = Message::signal("/", "org.example.Iface", "S")
        .endian(zbus::wire::Endian::Big)
        .build(&(7u16, "text", ObjectPath::try_from("/o/p").unwrap()))
        .unwrap();
    let sent = from_owner(msg);
    assert!(matches("arg1='text',arg2path='/o/'", &sent));
    assert!(!matches("arg0='text'", &sent));
}

// ---------------------------------------------------------------------------------------------
// The index

#[test]
fn eavesdropping_needs_the_flag_and_the_addressed_connection_is_not_reported() {
    let mut index = MatchIndex::new();
    index.add(1, rule("member='Ping'"));
    index.add(2, rule("member='Ping',eavesdrop='true'"));
    index.add(3, rule("member='Ping'"));
    index.add(4, rule("destination=':1.3',eavesdrop='true'"));
    index.add(5, rule("destination=':1.3'"));
    let call = Message::method_call("/", "Ping")
        .destination(":1.3")
        .build(&())
        .unwrap();
    let unicast = from_owner(call).addressed_to(":1.3");
    assert_eq!(recipients(&index, &unicast, Some(3)), vec![2, 4]);
    // A broadcast goes to every rule that matches it.
    let broadcast = from_owner(signal("/", "Ping", &()));
    assert_eq!(recipients(&index, &broadcast, None), vec![1, 2, 3]);
}

#[test]
fn duplicates_are_counted() {
    let mut index = MatchIndex::new();
    index.add(1, rule("member='S'"));
    index.add(1, rule("type=signal,member=S"));
    index.add(1, rule("member='T'"));
    assert_eq!(index.rule_count(1), 3);
    assert_eq!(index.total_rules(), 3);
    let mut texts: Vec<String> = index.rules_of(1).map(|r| r.to_string()).collect();
    texts.sort();
    assert_eq!(
        texts,
        ["member='S'", "member='T'", "type='signal',member='S'"]
    );
    index.add(1, rule("member='S'"));
    assert_eq!(index.rule_count(1), 4);
    assert_eq!(
        index
            .rules_of(1)
            .filter(|r| *r == &rule("member=S"))
            .count(),
        2
    );
    let sent = from_owner(signal("/", "S", &()));
    assert_eq!(recipients(&index, &sent, None), vec![1]);
    assert!(index.remove(1, &rule("member='S'")));
    assert_eq!(recipients(&index, &sent, None), vec![1]);
    assert!(index.remove(1, &rule("member=S")));
    assert!(!index.remove(1, &rule("member=S")));
    assert!(index.remove(1, &rule("member=S,type=signal")));
    assert!(recipients(&index, &sent, None).is_empty());
    assert_eq!(index.rule_count(1), 1);
    assert!(!index.remove(2, &rule("member=T")));
    assert!(index.remove(1, &rule("member=T")));
    assert_eq!(index.total_rules(), 0);
    assert!(index.is_empty());
    assert_eq!(index.rules_of(1).count(), 0);
}

#[test]
fn removing_an_owner_or_a_unique_name() {
    let mut index = MatchIndex::new();
    index.add(1, rule("sender='org.example.Owner',member='S'"));
    index.add(1, rule("interface='org.example.Iface'"));
    index.add(1, rule("interface='org.example.Iface'"));
    index.add(2, rule("interface='org.example.Iface'"));
    index.add(2, rule("sender=':1.5'"));
    index.add(2, rule("sender=':1.5',arg0='x',eavesdrop=true"));
    index.add(3, rule("destination=':1.5',eavesdrop=true"));
    index.add(3, rule("destination=':1.6',eavesdrop=true"));
    assert_eq!(index.total_rules(), 8);
    index.remove_owner(1);
    assert_eq!(index.total_rules(), 5);
    assert_eq!(index.rule_count(1), 0);
    let sent = from_owner(signal("/", "S", &()));
    assert_eq!(recipients(&index, &sent, None), vec![2]);
    // :1.5 disconnects: rules naming it can never match again and go, whoever owns them.
    index.forget_unique_name(":1.5");
    assert_eq!(index.rule_count(2), 1);
    assert_eq!(index.rule_count(3), 1);
    assert_eq!(index.total_rules(), 2);
    assert!(!index.remove(2, &rule("sender=':1.5'")));
    index.remove_owner(2);
    index.remove_owner(3);
    assert!(index.is_empty());
}

#[test]
fn well_known_sender_rules_follow_the_names_the_sender_owns() {
    let mut index = MatchIndex::new();
    index.add(1, rule("sender='org.example.A'"));
    index.add(2, rule("sender='org.example.B'"));
    index.add(3, rule("sender=':1.5'"));
    let msg = signal("/", "S", &());
    let owns_a = Sent::new(msg.clone(), ":1.5", &["org.example.A"]);
    assert_eq!(recipients(&index, &owns_a, None), vec![1, 3]);
    let owns_both = Sent::new(msg.clone(), ":1.5", &["org.example.A", "org.example.B"]);
    assert_eq!(recipients(&index, &owns_both, None), vec![1, 2, 3]);
    let other = Sent::new(msg, ":1.6", &[]);
    assert!(recipients(&index, &other, None).is_empty());
}

#[test]
fn name_watchers_are_found_by_arg0() {
    let mut index = MatchIndex::new();
    for owner in 0..100u32 {
        index.add(
            owner,
            rule(&format!(
                "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged',path='/org/freedesktop/DBus',arg0='com.example.S{owner}'"
            )),
        );
    }
    index.add(
        500,
        rule("member='NameOwnerChanged',arg0namespace='com.example'"),
    );
    let changed = Message::signal(
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "NameOwnerChanged",
    )
    .build(&("com.example.S42", "", ":1.9"))
    .unwrap();
    let sent = Sent::new(changed, "org.freedesktop.DBus", &[]);
    assert_eq!(recipients(&index, &sent, None), vec![42, 500]);
}

#[test]
fn recipients_allocates_nothing() {
    let mut index = MatchIndex::new();
    for owner in 0..50u32 {
        index.add(owner, rule(&format!("member='S',arg0='v{owner}'")));
        index.add(owner, rule("type='signal',sender=':1.5',arg1path='/a/'"));
        index.add(
            owner,
            rule("interface='org.example.Iface',arg0namespace='v1'"),
        );
        index.add(owner, rule("eavesdrop=true,member=S,arg2='x'"));
    }
    let sent = from_owner(signal("/", "S", &("v7", "/a/b", "x")));
    let query = sent.query();
    let mut reported = [0u32; 64];
    let mut n = 0;
    let before = allocations();
    index.recipients(&query, None, |o| {
        reported[n] = o;
        n += 1;
    });
    index.recipients(&query, Some(3), |_| {});
    assert_eq!(allocations(), before, "recipients allocated");
    assert_eq!(n, 50);
}

/// A deterministic xorshift generator: enough to shake the index, and failures replay.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

fn random_rule(rng: &mut Rng) -> MatchRule {
    random_rule_with(rng, 1)
}

/// A random rule, each key left out with odds `sparse` to 1 (on top of the choice of none).
fn random_rule_with(rng: &mut Rng, sparse: usize) -> MatchRule {
    let parts: [&[&str]; 9] = [
        &["", "type='signal'", "type='method_call'"],
        &[
            "",
            "sender=':1.1'",
            "sender=':1.2'",
            "sender='org.a'",
            "sender='org.b'",
            "sender='org.freedesktop.DBus'",
        ],
        &["", "interface='org.x.I'", "interface='org.x.J'"],
        &["", "member='A'", "member='B'"],
        &["", "path='/x'", "path_namespace='/x'", "path_namespace='/'"],
        &["", "destination=':1.3'", "destination='org.c'"],
        &[
            "",
            "arg0='v'",
            "arg0='/x/'",
            "arg0path='/x/'",
            "arg0namespace='org.a'",
        ],
        &["", "arg1='w'", "arg1path='/x/y'"],
        &["", "", "eavesdrop='true'"],
    ];
    let mut text: Vec<&str> = Vec::new();
    for choices in parts {
        let part = rng.pick(choices);
        if !part.is_empty() && rng.below(sparse + 1) == 0 {
            text.push(part);
        }
    }
    rule(&text.join(","))
}

fn random_message(rng: &mut Rng) -> (Sent, Option<u32>) {
    let args = ["v", "/x/", "/x/y", "org.a.b", "w"];
    let arg = |rng: &mut Rng| rng.pick(&args).to_string();
    let (a0, a1) = (arg(rng), arg(rng));
    let path = rng.pick(&["/x", "/x/y", "/xy", "/"]);
    let interface = rng.pick(&["org.x.I", "org.x.J"]);
    let member = rng.pick(&["A", "B", "C"]);
    let unicast = rng.below(2) == 0;
    let mut builder = if unicast {
        Message::method_call(path, member).interface(interface)
    } else {
        Message::signal(path, interface, member)
    };
    let addressed = unicast.then(|| rng.below(8) as u32);
    if let Some(to) = addressed {
        let by_name = rng.below(2) == 0;
        builder = builder.destination(if by_name {
            "org.c".to_string()
        } else {
            format!(":1.{to}")
        });
    }
    if rng.below(4) == 0 {
        builder = builder.endian(zbus::wire::Endian::Big);
    }
    let msg = match rng.below(4) {
        0 => builder.build(&(a0.as_str(), a1.as_str())),
        1 => builder.build(&(ObjectPath::try_from(a0.as_str()).unwrap_or_default(), a1)),
        // One structure argument: arg0 is neither of its fields.
        2 => builder.build(&((a0.as_str(), a1.as_str()),)),
        _ => builder.build(&(a0.as_str(),)),
    }
    .unwrap();
    let (sender, names): (&str, &[&'static str]) = rng.pick(&[
        (":1.1", &["org.a"][..]),
        (":1.2", &["org.b", "org.c"][..]),
        (":1.9", &[][..]),
        ("org.freedesktop.DBus", &[][..]),
    ]);
    let mut sent = Sent::new(msg, sender, names);
    if let Some(to) = addressed {
        sent = sent.addressed_to(&format!(":1.{to}"));
    }
    (sent, addressed)
}

/// `recipients` against a scan of every rule, over random rules, adds, removals, departures and
/// messages.
#[test]
fn the_index_agrees_with_a_scan_of_every_rule() {
    for seed in 1..=20u64 {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ seed);
        let mut index = MatchIndex::new();
        let mut model: Vec<(u32, MatchRule)> = Vec::new();
        for step in 0..600 {
            match rng.below(10) {
                0..=5 => {
                    let owner = rng.below(8) as u32;
                    let r = random_rule(&mut rng);
                    index.add(owner, r.clone());
                    model.push((owner, r));
                }
                6 | 7 if !model.is_empty() => {
                    let (owner, r) = model.swap_remove(rng.below(model.len()));
                    assert!(index.remove(owner, &r), "seed {seed} step {step}");
                }
                8 => {
                    let owner = rng.below(8) as u32;
                    let r = random_rule(&mut rng);
                    let held = model.iter().position(|(o, m)| *o == owner && *m == r);
                    assert_eq!(index.remove(owner, &r), held.is_some(), "seed {seed}");
                    if let Some(i) = held {
                        model.swap_remove(i);
                    }
                }
                _ if rng.below(4) == 0 => {
                    let owner = rng.below(8) as u32;
                    index.remove_owner(owner);
                    model.retain(|(o, _)| *o != owner);
                }
                _ => {}
            }
            assert_eq!(index.total_rules(), model.len(), "seed {seed} step {step}");
            if step % 3 != 0 {
                continue;
            }
            let (sent, addressed) = random_message(&mut rng);
            let query = sent.query();
            let mut want: Vec<u32> = model
                .iter()
                .filter(|(owner, r)| {
                    Some(*owner) != addressed
                        && (addressed.is_none() || r.eavesdrop())
                        && r.matches(&query)
                })
                .map(|(owner, _)| *owner)
                .collect();
            want.sort_unstable();
            want.dedup();
            assert_eq!(
                recipients(&index, &sent, addressed),
                want,
                "seed {seed} step {step}"
            );
        }
        for owner in 0..8 {
            let mut have: Vec<String> = index.rules_of(owner).map(|r| r.to_string()).collect();
            let mut want: Vec<String> = model
                .iter()
                .filter(|(o, _)| *o == owner)
                .map(|(_, r)| r.to_string())
                .collect();
            have.sort();
            want.sort();
            assert_eq!(have, want, "seed {seed}");
            assert_eq!(index.rule_count(owner), want.len());
        }
        index.forget_unique_name(":1.1");
        model.retain(|(_, r)| r.sender() != Some(":1.1") && r.destination() != Some(":1.1"));
        assert_eq!(index.total_rules(), model.len());
        for owner in 0..8 {
            index.remove_owner(owner);
        }
        assert!(index.is_empty());
    }
}

/// Text made of the characters and fragments rules are made of, to shake the parser.
fn random_text(rng: &mut Rng) -> String {
    let pieces = [
        "type",
        "sender",
        "interface",
        "member",
        "path",
        "path_namespace",
        "destination",
        "eavesdrop",
        "arg",
        "arg0",
        "arg1path",
        "arg0namespace",
        "arg63",
        "arg64",
        "0x",
        "-",
        "=",
        "'",
        ",",
        "\\",
        " ",
        "\t",
        "\n",
        "signal",
        "true",
        ":1.5",
        "org.a",
        "/",
        "/a/",
        ".",
        "\u{e9}",
        "\u{0}",
        "\u{1F600}",
        "a",
        "9",
    ];
    let n = rng.below(24);
    (0..n).map(|_| rng.pick(&pieces)).collect()
}

#[test]
fn the_parser_never_panics_and_its_text_reparses() {
    let mut rng = Rng(12345);
    let mut accepted = 0;
    for _ in 0..100_000 {
        let text = random_text(&mut rng);
        if let Ok(r) = MatchRule::parse(&text) {
            accepted += 1;
            let again = MatchRule::parse(&r.to_string())
                .unwrap_or_else(|e| panic!("{text:?} -> {r} does not reparse: {e}"));
            assert_eq!(again, r, "{text:?}");
        }
    }
    // Random bytes too (as UTF-8, lossily).
    for _ in 0..20_000 {
        let bytes: Vec<u8> = (0..rng.below(64)).map(|_| rng.below(256) as u8).collect();
        let _ = MatchRule::parse(&String::from_utf8_lossy(&bytes));
    }
    assert!(accepted > 100, "the generator should make some valid rules");
}

// ---------------------------------------------------------------------------------------------
// Against dbus-daemon itself

mod dbus_daemon {
    //! A private dbus-daemon, and just enough of a client to call its driver.

    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::UnixStream;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use zbus::Message;
    use zbus::wire::serialized::{Context, Data};
    use zbus::wire::{DynamicType, Endian};

    pub const DAEMON: &str = "/usr/bin/dbus-daemon";

    pub struct Bus {
        child: Child,
        _dir: tempfile::TempDir,
        pub socket: PathBuf,
    }

    impl Bus {
        pub fn start() -> Bus {
            let dir = tempfile::tempdir().unwrap();
            let socket = dir.path().join("bus");
            let config = dir.path().join("bus.conf");
            std::fs::write(
                &config,
                format!(
                    r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
  <limit name="max_match_rules_per_connection">100000</limit>
</busconfig>
"#,
                    socket.display()
                ),
            )
            .unwrap();
            let child = Command::new(DAEMON)
                .arg(format!("--config-file={}", config.display()))
                .arg("--nofork")
                .arg("--nopidfile")
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !socket.exists() {
                assert!(Instant::now() < deadline, "dbus-daemon did not start");
                std::thread::sleep(Duration::from_millis(10));
            }
            Bus {
                child,
                _dir: dir,
                socket,
            }
        }
    }

    impl Drop for Bus {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    pub struct Client {
        stream: BufReader<UnixStream>,
        pub unique_name: String,
    }

    pub type Reply = Result<Message, (String, String)>;

    impl Client {
        pub fn connect(socket: &Path) -> Client {
            let mut stream = UnixStream::connect(socket).unwrap();
            let uid: String = rustix::process::getuid()
                .as_raw()
                .to_string()
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect();
            write!(stream, "\0AUTH EXTERNAL {uid}\r\n").unwrap();
            let mut stream = BufReader::new(stream);
            let mut line = String::new();
            stream.read_line(&mut line).unwrap();
            assert!(line.starts_with("OK "), "{line}");
            stream.get_mut().write_all(b"BEGIN\r\n").unwrap();
            let mut client = Client {
                stream,
                unique_name: String::new(),
            };
            let hello = client.call("org.freedesktop.DBus", "Hello", &()).unwrap();
            client.unique_name = hello.body().deserialize::<String>().unwrap();
            client
        }

        /// Call a method of the bus driver; its reply or its error (name, text).
        pub fn call<B>(&mut self, interface: &str, member: &str, body: &B) -> Reply
        where
            B: serde::Serialize + DynamicType,
        {
            let msg = Message::method_call("/org/freedesktop/DBus", member)
                .interface(interface)
                .destination("org.freedesktop.DBus")
                .build(body)
                .unwrap();
            let serial = msg.primary_header().serial_num();
            self.send(&msg);
            loop {
                let reply = self.receive();
                let header = reply.header();
                if header.reply_serial() != Some(serial) {
                    continue;
                }
                return match header.error_name() {
                    Some(name) => {
                        let text = reply.body().deserialize::<String>().unwrap_or_default();
                        Err((name.to_string(), text))
                    }
                    None => Ok(reply.clone()),
                };
            }
        }

        pub fn send(&mut self, msg: &Message) {
            self.stream.get_mut().write_all(msg.data().bytes()).unwrap();
        }

        pub fn receive(&mut self) -> Message {
            let mut fixed = [0u8; 16];
            self.stream.read_exact(&mut fixed).unwrap();
            let endian = if fixed[0] == b'B' {
                Endian::Big
            } else {
                Endian::Little
            };
            let u32_at = |at: usize| {
                let raw: [u8; 4] = fixed[at..at + 4].try_into().unwrap();
                match endian {
                    Endian::Big => u32::from_be_bytes(raw),
                    Endian::Little => u32::from_le_bytes(raw),
                }
            } as usize;
            let total = (16 + u32_at(12)).next_multiple_of(8) + u32_at(4);
            let mut bytes = fixed.to_vec();
            bytes.resize(total, 0);
            self.stream.read_exact(&mut bytes[16..]).unwrap();
            // SAFETY: the bytes are a whole message from dbus-daemon, which sends valid ones.
            unsafe { Message::from_bytes(Data::new(bytes, Context::new(endian, 0))) }.unwrap()
        }
    }
}

/// Random rule texts, parsed by this parser and by dbus-daemon's AddMatch: both must accept or
/// refuse each, with the same error, print it the same (GetAllMatchRules), and find the
/// printed text equal to the rule (RemoveMatch).
#[test]
fn the_parser_agrees_with_dbus_daemon() {
    use dbus_daemon::{Bus, Client, DAEMON};

    if !std::path::Path::new(DAEMON).exists() {
        eprintln!("{DAEMON} is not installed: skipping the comparison");
        return;
    }
    let bus = Bus::start();
    let mut client = Client::connect(&bus.socket);
    let mut rng = Rng(0xD1FF);
    let keys = [
        "type",
        "sender",
        "interface",
        "member",
        "path",
        "path_namespace",
        "destination",
        "eavesdrop",
        "arg0",
        "arg1",
        "arg2path",
        "arg0namespace",
        "arg63",
        "arg64",
        "arg01",
        "arg0x1f",
        "arg-0",
        "arg",
        "argv",
        "arg3junk",
        "foo",
        "arg1namespace",
    ];
    let values = [
        "'signal'",
        "signal",
        "'method_call'",
        "'bogus'",
        "'org.a.B'",
        "org.a",
        "':1.5'",
        "':1'",
        "'Member'",
        "'1x'",
        "'/a/b'",
        "'/a/b/'",
        "'/'",
        "''",
        "'true'",
        "false",
        "'a,b'",
        "a\\'b",
        "'it'\\''s'",
        "x\\y",
        "'\u{e9}'",
        "'a.'",
        "' spaced '",
        "'unbalanced",
        "'com.example'",
        "'a..b'",
    ];
    // Pairs that are valid on their own, so that whole rules often are.
    let valid = [
        "type='signal'",
        "type=method_call",
        "sender='org.a.B'",
        "sender=':1.5'",
        "interface='org.a.B'",
        "member='Member'",
        "path='/a/b'",
        "path_namespace='/'",
        "destination=':1'",
        "eavesdrop='true'",
        "arg0='a,b'",
        "arg1=a\\'b",
        "arg2path='/a/b/'",
        "arg0namespace='com.example'",
        "arg63=''",
        "arg01='x'",
        "arg0x1f='y'",
        "arg5=' spaced '",
    ];
    let mut agreed = (0, 0);
    for round in 0..4000 {
        let n = 1 + rng.below(5);
        let mut text = String::new();
        for i in 0..n {
            if i > 0 {
                text.push_str(rng.pick(&[",", ",", ", ", ",\t"]));
            }
            if rng.below(3) > 0 {
                text.push_str(rng.pick(&valid));
            } else {
                text.push_str(rng.pick(&keys));
                text.push('=');
                text.push_str(rng.pick(&values));
            }
        }
        if round % 500 == 0 {
            text = format!("arg0='{}'", "x".repeat(1020 + rng.below(10)));
        }
        let ours = MatchRule::parse(&text);
        let theirs = client.call("org.freedesktop.DBus", "AddMatch", &(text.as_str(),));
        match (&ours, &theirs) {
            (Err(ours), Err((name, message))) => {
                assert_eq!(ours.name(), name, "{text:?}");
                assert_eq!(ours.message(), message.trim_end_matches('\n'), "{text:?}");
                agreed.1 += 1;
            }
            (Ok(r), Ok(_)) => {
                let all = client
                    .call("org.freedesktop.DBus.Debug.Stats", "GetAllMatchRules", &())
                    .unwrap();
                let all: HashMap<String, Vec<String>> = all.body().deserialize().unwrap();
                assert_eq!(
                    all.get(&client.unique_name),
                    Some(&vec![r.to_string()]),
                    "{text:?}"
                );
                client
                    .call(
                        "org.freedesktop.DBus",
                        "RemoveMatch",
                        &(r.to_string().as_str(),),
                    )
                    .unwrap_or_else(|e| panic!("{text:?}: {e:?}"));
                agreed.0 += 1;
            }
            _ => panic!("{text:?}: telbus {ours:?}, dbus-daemon {theirs:?}"),
        }
    }
    eprintln!(
        "dbus-daemon and telbus agreed on {} accepted and {} refused rules",
        agreed.0, agreed.1
    );
    assert!(agreed.0 > 100 && agreed.1 > 100, "{agreed:?}");
}

/// Random rules and broadcast signals: dbus-daemon delivers a signal to a connection that has
/// the rule exactly when `MatchRule::matches` says so.
#[test]
fn matching_agrees_with_dbus_daemon() {
    use dbus_daemon::{Bus, Client, DAEMON};

    if !std::path::Path::new(DAEMON).exists() {
        eprintln!("{DAEMON} is not installed: skipping the comparison");
        return;
    }
    let bus = Bus::start();
    let mut listener = Client::connect(&bus.socket);
    let mut sender = Client::connect(&bus.socket);
    sender
        .call("org.freedesktop.DBus", "RequestName", &("org.a", 0u32))
        .unwrap();
    listener
        .call(
            "org.freedesktop.DBus",
            "AddMatch",
            &("interface='org.test.Marker'",),
        )
        .unwrap();
    let marker = || {
        Message::signal("/", "org.test.Marker", "Marker")
            .build(&())
            .unwrap()
    };
    let mut rng = Rng(0x5EED);
    let mut delivered = (0, 0);
    for _ in 0..3000 {
        let mut r = random_rule_with(&mut rng, 2);
        // The random rules name :1.1 as a sender; here the sender's unique name is whatever
        // the bus gave it.
        if r.sender() == Some(":1.1") {
            r = MatchRule::parse(&r.to_string().replace(":1.1", &sender.unique_name)).unwrap();
        }
        let (sent, addressed) = random_message(&mut rng);
        if addressed.is_some() {
            continue;
        }
        let sent = Sent::new(sent.msg.clone(), &sender.unique_name, &["org.a"]);
        let want = r.matches(&sent.query());
        listener
            .call(
                "org.freedesktop.DBus",
                "AddMatch",
                &(r.to_string().as_str(),),
            )
            .unwrap();
        sender.send(&sent.msg);
        sender.send(&marker());
        let mut got = false;
        loop {
            let msg = listener.receive();
            let header = msg.header();
            if header.member().is_some_and(|m| m.as_str() == "Marker") {
                break;
            }
            got |= header
                .sender()
                .is_some_and(|s| s.as_str() == sender.unique_name);
        }
        assert_eq!(
            got,
            want,
            "{r} and {:?} {:?}",
            sent.msg,
            sent.msg.body().signature()
        );
        listener
            .call(
                "org.freedesktop.DBus",
                "RemoveMatch",
                &(r.to_string().as_str(),),
            )
            .unwrap();
        if want {
            delivered.0 += 1;
        } else {
            delivered.1 += 1;
        }
    }
    eprintln!(
        "dbus-daemon and telbus agreed on {} delivered and {} not delivered signals",
        delivered.0, delivered.1
    );
    assert!(delivered.0 > 50 && delivered.1 > 50, "{delivered:?}");
}

// ---------------------------------------------------------------------------------------------
// Cost

/// How long `recipients` takes on a bus of `clients` connections with rules like those of
/// desktop clients, against two scans: of every rule, and of dbus-daemon's (type, interface)
/// buckets. Run with `cargo test --release -p telbus-broker --test match_rules -- --ignored
/// --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn measure_recipients() {
    use std::time::Instant;

    for clients in [100u32, 1000, 10000] {
        let services = clients / 5;
        let mut index = MatchIndex::new();
        let mut all: Vec<(u32, MatchRule)> = Vec::new();
        let mut add = |owner: u32, text: String| {
            let r = rule(&text);
            index.add(owner, r.clone());
            all.push((owner, r));
        };
        for c in 0..clients {
            for k in 0..4 {
                add(
                    c,
                    format!(
                        "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged',path='/org/freedesktop/DBus',arg0='com.example.Svc{}'",
                        (c * 7 + k) % services
                    ),
                );
            }
            for k in 0..2 {
                let j = (c * 3 + k) % services;
                add(
                    c,
                    format!(
                        "type='signal',sender='com.example.Svc{j}',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged',path_namespace='/com/example/Svc{j}'"
                    ),
                );
            }
            let j = (c * 11) % services;
            add(
                c,
                format!("type='signal',sender='com.example.Svc{j}',interface='com.example.Svc{j}'"),
            );
            add(
                c,
                "type='signal',interface='org.freedesktop.DBus',member='NameAcquired'".into(),
            );
        }
        add(0, "eavesdrop='true',interface='org.debug.Trace'".into());

        // dbus-daemon's index: rules by (type, interface), each of which may be absent.
        type Buckets = HashMap<(Option<Type>, Option<String>), Vec<(u32, MatchRule)>>;
        let mut buckets = Buckets::new();
        for (owner, r) in &all {
            buckets
                .entry((r.msg_type(), r.interface().map(str::to_string)))
                .or_default()
                .push((*owner, r.clone()));
        }

        let name_owner_changed = Sent::new(
            Message::signal(
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "NameOwnerChanged",
            )
            .build(&("com.example.Svc5", "", ":1.9"))
            .unwrap(),
            "org.freedesktop.DBus",
            &[],
        );
        let mut changed: HashMap<&str, zbus::wire::Variant<'_>> = HashMap::new();
        changed.insert("Level", zbus::wire::Variant::from(42u32));
        let properties_changed = Sent::new(
            Message::signal(
                "/com/example/Svc7/obj",
                "org.freedesktop.DBus.Properties",
                "PropertiesChanged",
            )
            .build(&("com.example.Svc7", changed, vec!["Other"]))
            .unwrap(),
            ":1.77",
            &["com.example.Svc7"],
        );
        let call = Sent::new(
            Message::method_call("/com/example/Svc7", "Get")
                .interface("org.freedesktop.DBus.Properties")
                .destination(":1.77")
                .build(&("com.example.Svc7", "Level"))
                .unwrap(),
            ":1.3",
            &[],
        )
        .addressed_to(":1.77");
        let unheard = Sent::new(signal("/x", "Nobody", &("x",)), ":1.8", &[]);

        println!("{clients} clients, {} rules:", index.total_rules());
        for (what, sent, addressed) in [
            ("NameOwnerChanged", &name_owner_changed, None),
            ("PropertiesChanged", &properties_changed, None),
            ("unicast call", &call, Some(77u32)),
            ("signal nobody wants", &unheard, None),
        ] {
            let query = sent.query();
            let eligible = |owner: u32, r: &MatchRule| {
                Some(owner) != addressed
                    && (addressed.is_none() || r.eavesdrop())
                    && r.matches(&query)
            };
            let rounds = 2000;
            let start = Instant::now();
            let mut found = 0;
            for _ in 0..rounds {
                index.recipients(&query, addressed, |_| found += 1);
            }
            let indexed = start.elapsed() / rounds;
            let scan_rounds = 20;
            let start = Instant::now();
            let mut scanned = 0;
            for _ in 0..scan_rounds {
                scanned += all.iter().filter(|(o, r)| eligible(*o, r)).count();
            }
            let full_scan = start.elapsed() / scan_rounds;
            let start = Instant::now();
            for _ in 0..scan_rounds {
                for t in [None, Some(sent.msg_type)] {
                    for i in [None, sent.interface.clone()] {
                        if let Some(list) = buckets.get(&(t, i)) {
                            scanned += list.iter().filter(|(o, r)| eligible(*o, r)).count();
                        }
                    }
                }
            }
            let daemon_like = start.elapsed() / scan_rounds;
            println!(
                "  {what:20} {:4} recipients: index {indexed:>10.2?}, (type, interface) buckets {daemon_like:>10.2?}, every rule {full_scan:>10.2?}",
                found / rounds as usize
            );
            assert!(scanned > 0 || found == 0);
        }
    }
}
