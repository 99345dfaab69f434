//! `<include>` and `<includedir>`: relative paths, dbus-daemon's merge rules, order, missing
//! and broken files, circles.

use std::path::{Path, PathBuf};
use std::time::Duration;

use telbus_busconfig::{PolicyContext, RuleKind, load};

struct Tree(tempfile::TempDir);

impl Tree {
    fn new() -> Tree {
        Tree(tempfile::tempdir().unwrap())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// Write `<busconfig>body</busconfig>` to `name` (directories created).
    fn file(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("<busconfig>{body}</busconfig>")).unwrap();
        path
    }
}

const LISTEN: &str = "<listen>unix:tmpdir=/tmp</listen>";

#[test]
fn included_files_merge_as_dbus_daemon_merges_them() {
    let t = Tree::new();
    let main = t.file(
        "main.conf",
        &format!(
            "{LISTEN}<user>alice</user><type>session</type><auth>EXTERNAL</auth>\
             <servicedir>/srv/one</servicedir><pidfile>/run/a.pid</pidfile>\
             <limit name=\"max_names_per_connection\">7</limit>\
             <include>sub/inc.conf</include>\
             <listen>tcp:host=localhost,port=0</listen>"
        ),
    );
    t.file(
        "sub/inc.conf",
        "<user>bob</user><fork/><keep_umask/><allow_anonymous/><syslog/>\
         <listen>unix:path=/x</listen><auth>ANONYMOUS</auth>\
         <servicedir>/srv/one</servicedir><servicedir>rel</servicedir>\
         <servicehelper>helper</servicehelper>\
         <limit name=\"auth_timeout\">10</limit>\
         <policy context=\"default\"><allow own=\"a.b\"/></policy>",
    );
    let c = load(&main).unwrap();
    // Replaced by the included file.
    assert_eq!(c.user.as_deref(), Some("bob"));
    // Kept: the included file says nothing about them.
    assert_eq!(c.bus_type.as_deref(), Some("session"));
    assert_eq!(c.pidfile.as_deref(), Some(Path::new("/run/a.pid")));
    // Or-ed in.
    assert!(c.fork && c.keep_umask && c.allow_anonymous);
    // Not merged: dbus-daemon only honours <syslog/> in the top-level file.
    assert!(!c.syslog);
    // Appended in document order.
    assert_eq!(
        c.listen,
        [
            "unix:tmpdir=/tmp",
            "unix:path=/x",
            "tcp:host=localhost,port=0"
        ]
    );
    assert_eq!(c.auth, ["EXTERNAL", "ANONYMOUS"]);
    // Service directories: no duplicates; relative to the file that names them.
    let dirs: Vec<&Path> = c.servicedirs.iter().map(|d| d.path.as_path()).collect();
    assert_eq!(dirs, [Path::new("/srv/one"), t.path("sub/rel").as_path()]);
    assert_eq!(c.servicehelper, Some(t.path("sub/helper")));
    // Limits: inherited by the included file, and what it sets applies afterwards.
    assert_eq!(c.limits.max_names_per_connection, 7);
    assert_eq!(c.limits.auth_timeout, Duration::from_millis(10));
    // Policies and files, with where they came from.
    assert_eq!(c.policies.len(), 1);
    assert_eq!(
        &*c.policies[0].origin.file,
        t.path("sub/inc.conf").as_path()
    );
    assert_eq!(c.files, [main.clone(), t.path("sub/inc.conf")]);
}

#[test]
fn an_included_file_sees_the_limits_set_before_it_and_later_ones_win() {
    let t = Tree::new();
    let main = t.file(
        "main.conf",
        &format!(
            "{LISTEN}<limit name=\"max_replies_per_connection\">3</limit>\
             <include>a.conf</include>\
             <limit name=\"max_match_rules_per_connection\">9</limit>"
        ),
    );
    t.file(
        "a.conf",
        "<limit name=\"max_match_rules_per_connection\">5</limit>",
    );
    let c = load(&main).unwrap();
    assert_eq!(c.limits.max_replies_per_connection, 3);
    assert_eq!(c.limits.max_match_rules_per_connection, 9);
}

#[test]
fn includedir_reads_conf_files_in_name_order_and_skips_broken_ones() {
    let t = Tree::new();
    let main = t.file("main.conf", &format!("{LISTEN}<includedir>d</includedir>"));
    t.file(
        "d/20-b.conf",
        "<policy context=\"default\"><allow own=\"b\"/></policy>",
    );
    t.file(
        "d/10-a.conf",
        "<policy context=\"default\"><allow own=\"a\"/></policy>",
    );
    t.file(
        "d/30-c.conf",
        "<policy context=\"default\"><allow own=\"c\"/><type>x</foo></policy>",
    );
    t.file(
        "d/40-d.conf.disabled",
        "<policy context=\"default\"><allow own=\"d\"/></policy>",
    );
    t.file("d/.conf", "<type>hidden</type>");
    std::fs::create_dir(t.path("d/50-dir.conf")).unwrap();
    let c = load(&main).unwrap();
    let owned: Vec<String> = c
        .policies
        .iter()
        .flat_map(|s| &s.rules)
        .map(|r| match &r.kind {
            RuleKind::Own { name, .. } => name.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(owned, ["a", "b"]);
    // ".conf" ends with ".conf", as dbus-daemon tests it.
    assert_eq!(c.bus_type.as_deref(), Some("hidden"));
    assert_eq!(c.conf_dirs, [t.path("d")]);
    // The broken file and the directory are reported, not fatal.
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    assert!(
        c.warnings[0].message.contains("30-c.conf"),
        "{}",
        c.warnings[0]
    );
    assert!(
        c.warnings[1].message.contains("50-dir.conf"),
        "{}",
        c.warnings[1]
    );
    // A broken file leaves nothing behind, limits included.
    t.file(
        "e/bad.conf",
        "<limit name=\"auth_timeout\">1</limit><bees/>",
    );
    let main2 = t.file("main2.conf", &format!("{LISTEN}<includedir>e</includedir>"));
    let c = load(&main2).unwrap();
    assert_eq!(c.limits.auth_timeout, Duration::from_millis(30_000));
}

#[test]
fn missing_includes() {
    let t = Tree::new();
    let missing = t.file(
        "a.conf",
        &format!("{LISTEN}<include>nothere.conf</include>"),
    );
    let e = load(&missing).unwrap_err();
    assert_eq!(e.file, missing);
    assert_eq!(e.line, Some(1));
    assert!(e.message.contains("nothere.conf"), "{e}");

    let ignored = t.file(
        "b.conf",
        &format!("{LISTEN}<include ignore_missing=\"yes\">nothere.conf</include><includedir>nodir</includedir>"),
    );
    let c = load(&ignored).unwrap();
    assert_eq!(c.files, [ignored]);
    assert!(c.conf_dirs.is_empty());

    // dbus-daemon forgives a missing file anywhere below an ignore_missing include.
    t.file("c-inner.conf", "<include>nothere.conf</include>");
    let nested = t.file(
        "c.conf",
        &format!("{LISTEN}<include ignore_missing=\"yes\">c-inner.conf</include>"),
    );
    assert!(load(&nested).is_ok());

    // But not a broken file.
    t.file("d-inner.conf", "<bees/>");
    let broken = t.file(
        "d.conf",
        &format!("{LISTEN}<include ignore_missing=\"yes\">d-inner.conf</include>"),
    );
    let e = load(&broken).unwrap_err();
    assert_eq!(e.file, t.path("d-inner.conf"));
    assert!(e.message.contains("<bees>"), "{e}");
}

#[test]
fn circular_includes_are_refused() {
    let t = Tree::new();
    let a = t.file("a.conf", &format!("{LISTEN}<include>b.conf</include>"));
    t.file("b.conf", "<include>sub/../a.conf</include>");
    std::fs::create_dir(t.path("sub")).unwrap();
    let e = load(&a).unwrap_err();
    assert!(e.message.starts_with("Circular inclusion of file"), "{e}");
    assert_eq!(e.file, t.path("b.conf"));

    let own = t.file(
        "self.conf",
        &format!("{LISTEN}<include>self.conf</include>"),
    );
    assert!(load(&own).unwrap_err().message.contains("Circular"));

    // The same file twice, one after the other, is not a circle.
    t.file("leaf.conf", "<auth>EXTERNAL</auth>");
    let twice = t.file(
        "twice.conf",
        &format!("{LISTEN}<include>leaf.conf</include><include>leaf.conf</include>"),
    );
    assert_eq!(load(&twice).unwrap().auth, ["EXTERNAL", "EXTERNAL"]);
}

#[test]
fn listen_is_required_of_the_top_level_file_only() {
    let t = Tree::new();
    t.file("inc.conf", "<type>x</type>");
    let top = t.file("top.conf", "<include>inc.conf</include>");
    let e = load(&top).unwrap_err();
    assert!(e.message.contains("<listen>"), "{e}");
    t.file("listens.conf", LISTEN);
    let ok = t.file("ok.conf", "<include>listens.conf</include>");
    assert_eq!(load(&ok).unwrap().listen.len(), 1);
}

#[test]
fn policy_sections_keep_document_order_across_includes() {
    let t = Tree::new();
    let main = t.file(
        "main.conf",
        &format!(
            "{LISTEN}<policy context=\"default\"><deny own=\"*\"/></policy>\
             <include>x.conf</include>\
             <policy context=\"mandatory\"><deny own=\"m\"/></policy>"
        ),
    );
    t.file(
        "x.conf",
        "<policy user=\"root\"><allow own=\"r\"/></policy>",
    );
    let c = load(&main).unwrap();
    let contexts: Vec<&PolicyContext> = c.policies.iter().map(|s| &s.context).collect();
    assert_eq!(
        contexts,
        [
            &PolicyContext::Default,
            &PolicyContext::User("root".into()),
            &PolicyContext::Mandatory
        ]
    );
}

#[test]
fn relative_paths_follow_the_including_file() {
    let t = Tree::new();
    let main = t.file(
        "etc/main.conf",
        &format!("{LISTEN}<include>../share/a.conf</include>"),
    );
    t.file(
        "share/a.conf",
        "<includedir>a.d</includedir><servicedir>services</servicedir>",
    );
    t.file("share/a.d/x.conf", "<pidfile>relative.pid</pidfile>");
    let c = load(&main).unwrap();
    assert_eq!(c.files.len(), 3);
    assert_eq!(c.conf_dirs, [t.path("etc/../share/a.d")]);
    assert_eq!(c.servicedirs[0].path, t.path("etc/../share/services"));
    // <pidfile> is used as written.
    assert_eq!(c.pidfile.as_deref(), Some(Path::new("relative.pid")));
}
