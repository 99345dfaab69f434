//! Golden files pin the XML, Rust and JSON made from the bundled APIs (and the test API
//! that uses every construct). Regenerate with `UPDATE_GOLDEN=1 cargo test -p telbus-interfaces`.

use std::path::{Path, PathBuf};
use telbus_interfaces::{Api, Compiler, json, rust, xml};

const BUNDLED: &[&str] = &["le_info", "le_gpio", "le_mcc", "le_data", "le_pm"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compile(path: &Path) -> Api {
    Compiler::new()
        .include_dir(root().join("api"))
        .compile_file(path)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn all_apis() -> Vec<Api> {
    let mut apis: Vec<Api> = BUNDLED
        .iter()
        .map(|n| compile(&root().join("api").join(format!("{n}.api"))))
        .collect();
    apis.push(compile(&root().join("tests/data/kitchen_sink.api")));
    apis
}

fn check(name: &str, actual: &str) {
    let path = root().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .map(|i| i + 1)
            .unwrap_or(expected.lines().count().min(actual.lines().count()) + 1);
        panic!(
            "{} differs from the generated output from line {line} on (run with UPDATE_GOLDEN=1 if intended)",
            path.display()
        );
    }
}

#[test]
fn xml_matches_golden_files() {
    for api in all_apis() {
        check(&format!("{}.xml", api.name), &xml::generate(&api));
    }
}

#[test]
fn rust_matches_golden_files() {
    for api in all_apis() {
        check(
            &format!("{}.rs", api.name),
            &rust::generate(&api, rust::Mode::Full),
        );
    }
    check("telaf_common.rs", &rust::common());
    let mdm = compile(&root().join("api/le_mdmDefs.api"));
    check(
        "le_mdmDefs.types.rs",
        &rust::generate(&mdm, rust::Mode::TypesOnly),
    );
}

#[test]
fn json_matches_golden_file() {
    let api = compile(&root().join("api/le_mcc.api"));
    check("le_mcc.json", &json::generate(&api));
}

#[test]
fn xml_is_accepted_by_zbus_xml() {
    for api in all_apis() {
        let text = xml::generate(&api);
        let node = zbus_xml::Node::from_reader(text.as_bytes())
            .unwrap_or_else(|e| panic!("{}: zbus_xml refused the XML: {e}", api.name));
        let iface = &node.interfaces()[0];
        assert_eq!(iface.name().as_str(), format!("io.telaf.{}", api.name));
        let ours = telbus_interfaces::dbus::interface(&api);
        assert_eq!(iface.methods().count(), ours.methods.len());
        assert_eq!(iface.signals().count(), ours.signals.len());
        // Every argument signature survives the round trip.
        for (m, o) in iface.methods().zip(&ours.methods) {
            assert_eq!(m.name().as_str(), o.name);
            let sigs: Vec<String> = m.args().iter().map(|a| a.ty().to_string()).collect();
            let expected: Vec<String> = o
                .in_args
                .iter()
                .chain(&o.out_args)
                .map(|a| a.signature.clone())
                .collect();
            assert_eq!(sigs, expected, "{}.{}", api.name, o.name);
        }
        let protocol = iface
            .annotations()
            .find(|a| a.name() == "io.telaf.ProtocolId")
            .expect("protocol id annotation");
        assert_eq!(
            protocol.value(),
            telbus_interfaces::protocol_id::protocol_id(&api)
        );
    }
}

#[test]
fn bundled_apis_have_the_expected_shape() {
    let mcc = compile(&root().join("api/le_mcc.api"));
    let iface = telbus_interfaces::dbus::interface(&mcc);
    let create = iface.methods.iter().find(|m| m.name == "Create").unwrap();
    assert_eq!(create.in_args[0].signature, "s");
    assert!(
        create.in_args[0]
            .annotations
            .contains(&("io.telaf.MaxLength".into(), "17".into()))
    );
    assert_eq!(create.out_args[0].signature, "o");
    let names: Vec<&str> = iface.methods.iter().map(|m| m.name.as_str()).collect();
    assert!(names.contains(&"AddCallEventHandler") && names.contains(&"RemoveCallEventHandler"));
    assert_eq!(iface.signals[0].name, "CallEvent");
    let sig: String = iface.signals[0]
        .args
        .iter()
        .map(|a| a.signature.clone())
        .collect();
    assert_eq!(sig, "oi");

    let info = compile(&root().join("api/le_info.api"));
    let iface = telbus_interfaces::dbus::interface(&info);
    let rf = iface
        .methods
        .iter()
        .find(|m| m.name == "GetRfDeviceStatus")
        .unwrap();
    let sig: Vec<&str> = rf.out_args.iter().map(|a| a.signature.as_str()).collect();
    assert_eq!(sig, vec!["i", "aq", "ay", "ab"]);
}
