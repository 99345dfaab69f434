//! Refused configurations say which file, where, and what is wrong.

use std::path::{Path, PathBuf};

use telbus_busconfig::{ConfigError, load, load_str};

fn refuse(text: &str) -> ConfigError {
    load_str(text, Path::new("/etc/foo.conf")).expect_err(text)
}

#[test]
fn errors_display_file_line_and_column() {
    let e = refuse(
        "<busconfig>\n  <listen>unix:tmpdir=/tmp</listen>\n  <policy context=\"default\">\n    <allow send_interface=\"a.b\" receive_sender=\"c.d\"/>\n  </policy>\n</busconfig>\n",
    );
    assert_eq!(e.file, PathBuf::from("/etc/foo.conf"));
    assert_eq!((e.line, e.column), (Some(4), Some(5)));
    assert_eq!(
        e.to_string(),
        "/etc/foo.conf:4:5: Invalid combination of attributes on element <allow>: send and \
         receive attributes cannot be combined"
    );
}

#[test]
fn grammar_errors() {
    let cases = [
        (
            "<busconfig>\n<bees/></busconfig>",
            2,
            "Element <bees> not allowed inside <busconfig> in configuration file",
        ),
        (
            "<config/>",
            1,
            "Unknown element <config> at root of configuration file",
        ),
        (
            "<busconfig a=\"b\"/>",
            1,
            "Attribute \"a\" is invalid on <busconfig> element in this context",
        ),
        (
            "<busconfig><listen>x:</listen>\n<fork>now</fork></busconfig>",
            2,
            "No text content expected inside XML element fork in configuration file",
        ),
        (
            "<busconfig><listen>x:</listen>\n\n<user/></busconfig>",
            3,
            "XML element <user> was expected to have content inside it",
        ),
        (
            "<busconfig><listen>x:<auth/></listen></busconfig>",
            1,
            "Element <auth> is not allowed in this context",
        ),
        (
            "<busconfig><policy context=\"default\"><own/></policy></busconfig>",
            1,
            "Element <own> not allowed inside <policy> in configuration file",
        ),
        (
            "<busconfig><selinux><bees/></selinux></busconfig>",
            1,
            "Element <bees> not allowed inside <selinux> in configuration file",
        ),
        (
            "<busconfig><selinux><associate own=\"a\"/></selinux></busconfig>",
            1,
            "Element <associate> must have attributes own=\"<servicename>\" and context=\"<selinux context>\"",
        ),
        (
            "<busconfig><include bees=\"yes\">x</include></busconfig>",
            1,
            "Attribute \"bees\" is invalid on <include> element in this context",
        ),
        (
            "<busconfig><include ignore_missing=\"true\">x</include></busconfig>",
            1,
            "ignore_missing attribute must have value \"yes\" or \"no\"",
        ),
        (
            "<busconfig><policy/></busconfig>",
            1,
            "<policy> element must have exactly one of (context|user|group|at_console) attributes",
        ),
        (
            "<busconfig><policy context=\"sometimes\"/></busconfig>",
            1,
            "context attribute on <policy> must have the value \"default\" or \"mandatory\", not \"sometimes\"",
        ),
        (
            "<busconfig><policy at_console=\"yes\"/></busconfig>",
            1,
            "Unknown value \"yes\" for at_console in message bus configuration file",
        ),
        (
            "<busconfig><apparmor mode=\"on\"/></busconfig>",
            1,
            "Mode attribute on <apparmor> must have value \"required\", \"enabled\" or \"disabled\", not \"on\"",
        ),
        (
            "<busconfig><policy user=\"root\">\n<allow user=\"*\"/></policy></busconfig>",
            2,
            "<allow> rule cannot be per-user because it has bus-global semantics",
        ),
        (
            "<busconfig><policy group=\"root\"><deny group=\"*\"/></policy></busconfig>",
            1,
            "<deny> rule cannot be per-group because it has bus-global semantics",
        ),
    ];
    for (text, line, message) in cases {
        let e = refuse(text);
        assert_eq!(e.message, message, "{text}");
        assert_eq!(e.line, Some(line), "{text}");
    }
    let e = refuse("<busconfig><type>x</type></busconfig>");
    assert_eq!(
        e.to_string(),
        "/etc/foo.conf: Configuration file needs one or more <listen> elements giving addresses"
    );
}

#[test]
fn xml_errors_say_where() {
    let cases = [
        (
            "<busconfig>\n<listen>x:</listen>\n<user>me</usr>\n</busconfig>",
            3,
        ),
        (
            "<busconfig>\n<listen>x:</listen>\n<type>&bees;</type></busconfig>",
            3,
        ),
        (
            "<busconfig>\n<listen>x:</listen>\n<type>a & b</type></busconfig>",
            3,
        ),
        (
            "<busconfig><listen>x:</listen></busconfig>\n<busconfig/>",
            2,
        ),
        (
            "<busconfig>\n<listen>x:</listen>\n<policy context=\"default\" context=\"default\"/></busconfig>",
            3,
        ),
        (
            "<busconfig>\n<listen>x:</listen>\n<!-- a -- b --></busconfig>",
            3,
        ),
        (
            "<busconfig>\n<listen>x:</listen>\n<type>&#0;</type></busconfig>",
            3,
        ),
        ("<busconfig>\n<listen>x:</listen>", 2),
        ("", 1),
    ];
    for (text, line) in cases {
        let e = refuse(text);
        assert_eq!(e.line, Some(line), "{text:?}: {e}");
        assert!(e.column.is_some(), "{e}");
    }
}

#[test]
fn errors_in_included_files_name_the_included_file() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("main.conf");
    std::fs::write(
        &main,
        "<busconfig>\n<listen>x:</listen>\n<include>inc.conf</include>\n</busconfig>",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("inc.conf"),
        "<busconfig>\n\n  <limit name=\"max_bees\">1</limit>\n</busconfig>",
    )
    .unwrap();
    let e = load(&main).unwrap_err();
    assert_eq!(e.file, dir.path().join("inc.conf"));
    assert_eq!((e.line, e.column), (Some(3), Some(3)));
    // A file that cannot be read is reported where it is included.
    std::fs::write(
        &main,
        "<busconfig>\n<listen>x:</listen>\n<include>missing.conf</include>\n</busconfig>",
    )
    .unwrap();
    let e = load(&main).unwrap_err();
    assert_eq!((e.file.as_path(), e.line), (main.as_path(), Some(3)));
    assert!(e.message.starts_with("Failed to open"), "{e}");
    // A file that does not exist at all.
    let e = load(&dir.path().join("nope.conf")).unwrap_err();
    assert_eq!(e.line, None);
    assert!(e.to_string().contains("nope.conf: Failed to open"), "{e}");
}

#[test]
fn the_parser_survives_mangled_files() {
    let base = "<!DOCTYPE busconfig [<!ENTITY e \"x\">]><busconfig><type>&e;</type><listen>unix:tmpdir=/tmp</listen>\
                <policy context=\"default\"><allow send_destination=\"*\" max_fds=\"3\"/></policy>\
                <limit name=\"auth_timeout\">5</limit><selinux><associate own=\"a\" context=\"b\"/></selinux></busconfig>";
    assert!(load_str(base, Path::new("/t.conf")).is_ok());
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut refused = 0;
    for _ in 0..5000 {
        let mut bytes = base.as_bytes().to_vec();
        for _ in 0..3 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed % bytes.len() as u64) as usize;
            bytes[at] = b"<>/&;\"'=x! -#"[(seed >> 40) as usize % 13];
        }
        let text = String::from_utf8(bytes).unwrap();
        if let Err(e) = load_str(&text, Path::new("/t.conf")) {
            refused += 1;
            assert!(e.line.is_some() || e.message.contains("<listen>"), "{e}");
        }
    }
    assert!(refused > 1000, "{refused}");
}
