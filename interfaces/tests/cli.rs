//! `telbus-ifgen` end to end: outputs, errors and exit codes.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_telbus-ifgen");
const API: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/api");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn outputs() {
    let mcc = format!("{API}/le_mcc.api");
    let (code, xml, _) = run(&[&mcc, "--xml"]);
    assert_eq!(code, 0);
    assert!(xml.contains("<interface name=\"io.telaf.le_mcc\">"));
    let (code, rust, _) = run(&[&mcc, "--rust", "--with-common"]);
    assert_eq!(code, 0);
    assert!(rust.contains("pub mod telaf_common") && rust.contains("pub mod le_mcc"));
    let (code, json, _) = run(&[&mcc, "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["dbus"]["interface"], "io.telaf.le_mcc");
    let (code, hash, _) = run(&[&mcc, "--hash"]);
    assert_eq!(code, 0);
    assert_eq!(hash.trim().len(), 32);
    let (_, verbose, _) = run(&[&mcc, "--hash", "-v"]);
    assert!(verbose.starts_with("telbus-api-v1\nAPI le_mcc\nUSETYPES le_mdmDefs\n"));
    assert!(verbose.ends_with(&hash));
}

#[test]
fn errors_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.api");
    std::fs::write(&bad, "FUNCTION F(string s);\n").unwrap();
    let (code, out, err) = run(&[bad.to_str().unwrap(), "--xml"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("bad.api:1:19: error: string 's' needs a maximum length"),
        "{err}"
    );

    // USETYPES found through -I only.
    let user = dir.path().join("user.api");
    std::fs::write(
        &user,
        "USETYPES le_mdmDefs;\nFUNCTION F(le_mdmDefs.IpVersion v);\n",
    )
    .unwrap();
    assert_eq!(run(&[user.to_str().unwrap(), "--hash"]).0, 1);
    assert_eq!(run(&[user.to_str().unwrap(), "--hash", "-I", API]).0, 0);

    let (code, _, err) = run(&[bad.to_str().unwrap()]);
    assert_eq!(code, 2, "an output must be chosen");
    assert!(err.contains("--xml"));
    let (code, help, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(help.contains("USETYPES") && help.contains("Examples:"));
}
