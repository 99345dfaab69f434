//! Differential test: for each configuration here, telbus accepts it exactly when the
//! installed dbus-daemon does. dbus-daemon runs on a private socket in a temporary directory
//! and is stopped as soon as it prints its address (it accepted) or exits (it refused).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

/// Whether dbus-daemon starts with this configuration file, and what it said if not.
fn dbus_daemon_accepts(config: &Path) -> Result<(), String> {
    let mut child = Command::new("dbus-daemon")
        .args(["--nofork", "--nopidfile", "--print-address=1"])
        .arg(format!("--config-file={}", config.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dbus-daemon runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let accepted = !line.trim().is_empty();
    if accepted {
        child.kill().unwrap();
    }
    let output = child.wait_with_output().unwrap();
    if accepted {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Configurations that differ in one thing each: grammar, values, XML, rules, includes.
fn cases(listen: &str, aux: &Path) -> Vec<(&'static str, String)> {
    let l = format!("<listen>{listen}</listen>");
    let bc = |body: &str| format!("<busconfig>{l}{body}</busconfig>");
    let default = |rule: &str| bc(&format!("<policy context=\"default\">{rule}</policy>"));
    let a = aux.display();
    vec![
        ("minimal", bc("")),
        (
            "text in busconfig",
            format!("<busconfig>hello{l}</busconfig>"),
        ),
        ("text in fork", bc("<fork>x</fork>")),
        (
            "empty listen",
            format!("<busconfig>{l}<listen/></busconfig>"),
        ),
        (
            "include without a file name",
            bc("<include ignore_missing=\"yes\"></include>"),
        ),
        (
            "limit in hex, with blanks",
            bc("<limit name=\"auth_timeout\"> 0x10 </limit>"),
        ),
        (
            "limit with trailing junk",
            bc("<limit name=\"auth_timeout\">12abc</limit>"),
        ),
        (
            "byte limit beyond int",
            bc("<limit name=\"max_incoming_bytes\">3123123123</limit>"),
        ),
        (
            "byte limit beyond long",
            bc("<limit name=\"max_incoming_bytes\">99999999999999999999</limit>"),
        ),
        (
            "int limit at INT_MAX",
            bc("<limit name=\"auth_timeout\">2147483647</limit>"),
        ),
        (
            "int limit beyond INT_MAX",
            bc("<limit name=\"auth_timeout\">2147483648</limit>"),
        ),
        (
            "negative reply timeout",
            bc("<limit name=\"reply_timeout\">-5</limit>"),
        ),
        (
            "limit with a plus",
            bc("<limit name=\"auth_timeout\">+5</limit>"),
        ),
        (
            "limit of blanks",
            bc("<limit name=\"auth_timeout\"> </limit>"),
        ),
        (
            "octal limit",
            bc("<limit name=\"auth_timeout\">010</limit>"),
        ),
        ("unknown limit", bc("<limit name=\"bees\">1</limit>")),
        (
            "policy for user *",
            bc("<policy user=\"*\"><allow own=\"x\"/></policy>"),
        ),
        (
            "connection rule for root",
            bc("<policy user=\"root\"><allow user=\"*\"/></policy>"),
        ),
        (
            "connection rule for group root",
            bc("<policy group=\"root\"><allow group=\"*\"/></policy>"),
        ),
        (
            "connection rule for an unknown user",
            bc("<policy user=\"nosuchuserxyz\"><allow user=\"*\"/></policy>"),
        ),
        (
            "connection rule at console",
            bc("<policy at_console=\"true\"><allow user=\"*\"/></policy>"),
        ),
        (
            "unknown user in a root rule",
            bc("<policy user=\"root\"><allow user=\"nosuchuserxyz\"/></policy>"),
        ),
        (
            "uid without user",
            bc("<policy user=\"54321\"><allow user=\"*\"/></policy>"),
        ),
        (
            "uid 0",
            bc("<policy user=\"0\"><allow user=\"*\"/></policy>"),
        ),
        ("apparmor without mode", bc("<apparmor/>")),
        ("apparmor enabled", bc("<apparmor mode=\"enabled\"/>")),
        ("apparmor bogus", bc("<apparmor mode=\"bogus\"/>")),
        (
            "broadcast to *",
            default("<allow send_destination=\"*\" send_broadcast=\"true\"/>"),
        ),
        (
            "broadcast to a name",
            default("<allow send_destination=\"a\" send_broadcast=\"true\"/>"),
        ),
        (
            "log=yes",
            default("<allow log=\"yes\" send_destination=\"x\"/>"),
        ),
        ("min_fds alone", default("<allow min_fds=\"3\"/>")),
        ("own with log", default("<allow own=\"x\" log=\"true\"/>")),
        ("eavesdrop=maybe", default("<allow eavesdrop=\"maybe\"/>")),
        (
            "max_fds with junk",
            default("<allow max_fds=\"12abc\" send_destination=\"x\"/>"),
        ),
        (
            "max_fds at the maximum",
            default("<allow max_fds=\"33554432\" send_destination=\"x\"/>"),
        ),
        (
            "max_fds beyond",
            default("<allow max_fds=\"33554433\" send_destination=\"x\"/>"),
        ),
        (
            "negative min_fds",
            default("<allow min_fds=\"-1\" send_destination=\"x\"/>"),
        ),
        (
            "own with max_fds",
            default("<allow own=\"x\" max_fds=\"1\"/>"),
        ),
        ("user and group", default("<allow user=\"*\" group=\"*\"/>")),
        (
            "destination and prefix",
            default("<allow send_destination=\"a\" send_destination_prefix=\"b\"/>"),
        ),
        (
            "receive error and interface",
            default("<allow receive_error=\"a\" receive_interface=\"b\"/>"),
        ),
        (
            "send interface and error",
            default("<deny send_interface=\"a\" send_error=\"b\"/>"),
        ),
        (
            "send path and member",
            default("<allow send_path=\"/x\" send_member=\"M\"/>"),
        ),
        (
            "receive member alone",
            default("<allow receive_member=\"M\"/>"),
        ),
        ("bogus send_type", default("<allow send_type=\"bogus\"/>")),
        ("send_type *", default("<allow send_type=\"*\"/>")),
        ("own_prefix *", default("<allow own_prefix=\"*\"/>")),
        (
            "send_requested_reply=yes",
            default("<allow send_requested_reply=\"yes\"/>"),
        ),
        (
            "eavesdrop=false alone",
            default("<deny eavesdrop=\"false\"/>"),
        ),
        (
            "text in allow",
            default("<allow send_destination=\"x\">text</allow>"),
        ),
        ("element in allow", default("<allow own=\"x\"><x/></allow>")),
        ("nested policy", default("<policy context=\"default\"/>")),
        ("at_console=TRUE", bc("<policy at_console=\"TRUE\"/>")),
        ("policy with an empty user", bc("<policy user=\"\"/>")),
        (
            "policy for group *",
            bc("<policy group=\"*\"><allow own=\"x\"/></policy>"),
        ),
        ("entity", bc("<type>a &amp; b</type>")),
        ("undefined entity", bc("<type>&bees;</type>")),
        (
            "entity from the DOCTYPE",
            format!(
                "<!DOCTYPE busconfig [<!ENTITY l \"{listen}\">]><busconfig><listen>&l;</listen></busconfig>"
            ),
        ),
        (
            "entity in an attribute",
            format!(
                "<!DOCTYPE busconfig [<!ENTITY c \"default\">]><busconfig>{l}<policy context=\"&c;\"/></busconfig>"
            ),
        ),
        ("character reference 0", bc("<type>&#0;</type>")),
        ("hexadecimal character reference", bc("<type>&#x41;</type>")),
        ("bare ampersand", bc("<type>a & b</type>")),
        ("two roots", format!("{}<busconfig/>", bc(""))),
        (
            "late XML declaration",
            format!("<!-- c --><?xml version=\"1.0\"?>{}", bc("")),
        ),
        (
            "latin-1 declaration",
            format!("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>{}", bc("")),
        ),
        ("byte order mark", format!("\u{feff}{}", bc(""))),
        (
            "external DTD",
            format!("<!DOCTYPE busconfig SYSTEM \"foo.dtd\">{}", bc("")),
        ),
        (
            "DOCTYPE after the root",
            format!("{}<!DOCTYPE busconfig>", bc("")),
        ),
        (
            "attribute on busconfig",
            format!("<busconfig xmlns=\"x\">{l}</busconfig>"),
        ),
        (
            "prefixed root",
            format!("<x:busconfig xmlns:x=\"y\">{l}</x:busconfig>"),
        ),
        ("unknown root", format!("<bus>{l}</bus>")),
        ("only busconfig", "<busconfig/>".to_string()),
        ("empty file", String::new()),
        ("blank file", "  \n".to_string()),
        ("unclosed comment", bc("<!-- foo")),
        (
            "comment after the root",
            format!("{}<!-- trailing -->", bc("")),
        ),
        ("double hyphen in a comment", bc("<!-- a -- b -->")),
        ("processing instruction", bc("<?foo bar?>")),
        (
            "CDATA",
            format!("<busconfig><listen><![CDATA[{listen}]]></listen></busconfig>"),
        ),
        ("CRLF", bc("<type>a</type>").replace("><", ">\r\n<")),
        (
            "less-than in an attribute",
            bc("<policy context=\"def<ault\"/>"),
        ),
        (
            "single quotes",
            bc("<policy context='default'><allow own='x'/></policy>"),
        ),
        ("attribute without value", bc("<policy context/>")),
        ("unquoted attribute", bc("<policy context=default/>")),
        ("upper-case element", bc("<Fork/>")),
        (
            "duplicate attribute",
            bc("<limit name=\"auth_timeout\" name=\"auth_timeout\">1</limit>"),
        ),
        (
            "associate without context",
            bc("<selinux><associate own=\"a\"/></selinux>"),
        ),
        ("text in selinux", bc("<selinux>text</selinux>")),
        ("empty servicedir", bc("<servicedir></servicedir>")),
        (
            "text in standard_session_servicedirs",
            bc("<standard_session_servicedirs>x</standard_session_servicedirs>"),
        ),
        ("allow in busconfig", bc("<allow own=\"x\"/>")),
        (
            "element in listen",
            format!("<busconfig><listen>{listen}<x/></listen></busconfig>"),
        ),
        ("two types", bc("<type>x</type><type>y</type>")),
        (
            "relative servicehelper",
            bc("<servicehelper>helper</servicehelper>"),
        ),
        (
            "include if SELinux",
            bc("<include if_selinux_enabled=\"yes\">/nonexistent</include>"),
        ),
        (
            "include SELinux-relative",
            bc("<include selinux_root_relative=\"yes\">x</include>"),
        ),
        (
            "include SELinux-relative, ignore missing",
            bc("<include selinux_root_relative=\"yes\" ignore_missing=\"yes\">x</include>"),
        ),
        (
            "missing includedir",
            bc("<includedir>/nonexistent</includedir>"),
        ),
        (
            "includedir that is a file",
            bc("<includedir>/etc/passwd</includedir>"),
        ),
        ("missing include", bc("<include>nothere.conf</include>")),
        (
            "include of a directory",
            bc(&format!("<include>{a}/d</include>")),
        ),
        (
            "include of an empty busconfig",
            bc(&format!("<include>{a}/empty.conf</include>")),
        ),
        (
            "include with a missing include",
            bc(&format!("<include>{a}/inc_missing.conf</include>")),
        ),
        (
            "ignore_missing include with a missing include",
            bc(&format!(
                "<include ignore_missing=\"yes\">{a}/inc_missing.conf</include>"
            )),
        ),
        (
            "ignore_missing include of a broken file",
            bc(&format!(
                "<include ignore_missing=\"yes\">{a}/broken.conf</include>"
            )),
        ),
        (
            "includedir with a broken file",
            bc(&format!("<includedir>{a}/bad</includedir>")),
        ),
        (
            "includedir with broken files and a directory",
            bc(&format!("<includedir>{a}/d</includedir>")),
        ),
        (
            "include of itself",
            bc(&format!("<include>{a}/selfloop.conf</include>")),
        ),
        (
            "includedir of itself",
            bc(&format!("<includedir>{a}/dirloop</includedir>")),
        ),
    ]
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn telbus_accepts_what_dbus_daemon_accepts() {
    if Command::new("dbus-daemon")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("note: skipped, dbus-daemon is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let aux = dir.path().join("aux");
    write(
        &aux.join("inc_missing.conf"),
        "<busconfig><include>/nonexistent/x.conf</include></busconfig>",
    );
    write(
        &aux.join("broken.conf"),
        "<busconfig><type>x</foo></busconfig>",
    );
    write(
        &aux.join("bad/a.conf"),
        "<busconfig><type>x</foo></busconfig>",
    );
    write(
        &aux.join("d/zz.conf"),
        "<busconfig><limit name=\"bees\">1</limit></busconfig>",
    );
    write(
        &aux.join("d/aa.conf"),
        "<busconfig><type>ok</type></busconfig>",
    );
    std::fs::create_dir_all(aux.join("d/sub.conf")).unwrap();
    write(&aux.join("empty.conf"), "<busconfig/>");
    write(
        &aux.join("selfloop.conf"),
        "<busconfig><include>selfloop.conf</include></busconfig>",
    );
    write(
        &aux.join("dirloop/x.conf"),
        "<busconfig><includedir>.</includedir></busconfig>",
    );
    let sockets = dir.path().join("sockets");
    std::fs::create_dir(&sockets).unwrap();
    let listen = format!("unix:dir={}", sockets.display());

    let mut disagreements = Vec::new();
    let cases = cases(&listen, &aux);
    let (mut accepted, mut refused) = (0, 0);
    for (i, (name, text)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case{i}.conf"));
        write(&path, text);
        let theirs = dbus_daemon_accepts(&path);
        let ours = telbus_busconfig::load(&path);
        match (&theirs, &ours) {
            (Ok(()), Ok(_)) => accepted += 1,
            (Err(_), Err(_)) => refused += 1,
            (Ok(()), Err(e)) => {
                disagreements.push(format!("{name}: dbus-daemon accepts, telbus refuses: {e}"))
            }
            (Err(e), Ok(_)) => disagreements.push(format!(
                "{name}: dbus-daemon refuses ({}), telbus accepts",
                e.trim()
            )),
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    assert!(
        accepted > 30 && refused > 30,
        "{accepted} accepted, {refused} refused"
    );
}
