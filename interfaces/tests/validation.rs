//! Every construct parses and every validation rule reports its error at the right place.

use telbus_interfaces::model::*;
use telbus_interfaces::{Api, Error, compile_in_memory, dbus};

const DEFS: &str = "DEFINE LEN = 10; DEFINE NAME = \"x\"; ENUM Color { RED, GREEN }; REFERENCE Obj; HANDLER H(int32 v);";

fn ok(src: &str) -> Api {
    match compile_in_memory("t", src, &[("defs", DEFS)]) {
        Ok(api) => api,
        Err(e) => panic!("unexpected error:\n{e}"),
    }
}

/// The first error: (line, column, message).
fn err(src: &str) -> (u32, u32, String) {
    match compile_in_memory("t", src, &[("defs", DEFS)]) {
        Ok(_) => panic!("expected an error for:\n{src}"),
        Err(Error::Invalid(d)) => (d[0].span.line, d[0].span.column, d[0].message.clone()),
        Err(e) => panic!("unexpected {e}"),
    }
}

fn assert_err(src: &str, line: u32, column: u32, contains: &str) {
    let (l, c, m) = err(src);
    assert!(m.contains(contains), "message {m:?} lacks {contains:?}");
    assert_eq!((l, c), (line, column), "position of {m:?}");
}

#[test]
fn defines_evaluate_expressions_and_scoped_references() {
    let api = ok(
        "USETYPES defs;\nDEFINE A = (2 + 3) * 4 - 10 / 3;\nDEFINE B = -A;\nDEFINE C = defs.LEN + A;\nDEFINE S = 'it\\'s';\nDEFINE H = 0x10;",
    );
    let v: Vec<_> = api.defines.iter().map(|d| d.value.clone()).collect();
    assert_eq!(
        v,
        vec![
            DefineValue::Int(17),
            DefineValue::Int(-17),
            DefineValue::Int(27),
            DefineValue::Str("it's".into()),
            DefineValue::Int(16)
        ]
    );
}

#[test]
fn defines_may_refer_forward() {
    let api = ok("DEFINE A = B + 1; DEFINE B = 2;");
    assert_eq!(api.defines[0].value, DefineValue::Int(3));
}

#[test]
fn enums_auto_increment_from_explicit_and_negative_values() {
    let api = ok("ENUM S { BUSY = -1, LOW, HIGH, X = 10, Y };");
    let vals: Vec<i128> = api.enums[0].members.iter().map(|m| m.value).collect();
    assert_eq!(vals, vec![-1, 0, 1, 10, 11]);
    assert!(!api.enums[0].wide);
    let api = ok("ENUM W { A = 0x80000000 };");
    assert!(api.enums[0].wide, "a value above i32 needs x");
}

#[test]
fn bitmasks_use_powers_of_two_and_widen() {
    let api = ok("BITMASK B { A, B, C = 0x10, D, Z = 0 };");
    let vals: Vec<i128> = api.bitmasks[0].members.iter().map(|m| m.value).collect();
    assert_eq!(vals, vec![1, 2, 16, 32, 0]);
    // After 0 the automatic value starts again at 1.
    assert_err("BITMASK B { A, Z = 0, E };", 1, 23, "A and E are both 1");
    assert!(!api.bitmasks[0].wide);
    let api = ok("BITMASK W { A, B = 0x100000000 };");
    assert!(api.bitmasks[0].wide);
    let api = ok("BITMASK T { TOP = 0x8000000000000000 };");
    assert_eq!(api.bitmasks[0].members[0].value, 1i128 << 63);
}

#[test]
fn structs_nest_and_map_to_dbus_structures() {
    let api = ok(
        "STRUCT In { int8 a; string s[4]; };\nSTRUCT Out { In inner; uint8 raw[3]; double d; };\nFUNCTION F(Out o IN);",
    );
    let iface = dbus::interface(&api);
    assert_eq!(iface.methods[0].in_args[0].signature, "((ns)ayd)");
}

#[test]
fn functions_map_return_then_out_params() {
    let api = ok(
        "USETYPES defs;\nFUNCTION le_result_t Get(defs.Obj o IN, string name[8] OUT, uint16 ids[4] OUT, defs.Color c OUT);",
    );
    let m = &dbus::interface(&api).methods[0];
    let ins: Vec<_> = m
        .in_args
        .iter()
        .map(|a| (a.name.as_str(), a.signature.as_str()))
        .collect();
    let outs: Vec<_> = m
        .out_args
        .iter()
        .map(|a| (a.name.as_str(), a.signature.as_str()))
        .collect();
    assert_eq!(ins, vec![("o", "o")]);
    assert_eq!(
        outs,
        vec![("result", "i"), ("name", "s"), ("ids", "aq"), ("c", "i")]
    );
    assert!(
        m.out_args[1]
            .annotations
            .contains(&("io.telaf.MaxLength".into(), "8".into()))
    );
    assert!(
        m.out_args[2]
            .annotations
            .contains(&("io.telaf.MaxElements".into(), "4".into()))
    );
    assert!(
        m.out_args[3]
            .annotations
            .contains(&("io.telaf.Type".into(), "defs.Color".into()))
    );
}

#[test]
fn basic_types_have_their_signatures() {
    let api = ok(
        "FUNCTION F(uint8 a, int8 b, uint16 c, int16 d, uint32 e, int32 f, uint64 g, int64 h, double i, bool j, char k, size l, file m, le_result_t n, le_onoff_t o);",
    );
    let sig: String = dbus::interface(&api).methods[0]
        .in_args
        .iter()
        .map(|a| a.signature.clone())
        .collect();
    assert_eq!(sig, "ynqnuitxdbyuhii");
}

#[test]
fn events_become_add_remove_and_a_signal() {
    let api = ok("HANDLER H(bool on IN, string s[5]);\nEVENT Change(int32 filter IN, H handler);");
    let iface = dbus::interface(&api);
    let names: Vec<_> = iface.methods.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, vec!["AddChangeHandler", "RemoveChangeHandler"]);
    assert_eq!(iface.methods[0].in_args[0].name, "filter");
    assert_eq!(iface.methods[0].out_args[0].signature, "o");
    assert_eq!(iface.signals[0].name, "Change");
    let sig: Vec<_> = iface.signals[0]
        .args
        .iter()
        .map(|a| a.signature.as_str())
        .collect();
    assert_eq!(sig, vec!["b", "s"]);
}

#[test]
fn one_shot_handlers_add_a_token_and_a_callback_signal() {
    let api = ok(
        "HANDLER Done(le_result_t r);\nFUNCTION le_result_t SendAsync(uint32 id, Done handler);",
    );
    let iface = dbus::interface(&api);
    let outs: Vec<_> = iface.methods[0]
        .out_args
        .iter()
        .map(|a| (a.name.as_str(), a.signature.as_str()))
        .collect();
    assert_eq!(outs, vec![("result", "i"), ("callback", "o")]);
    assert_eq!(iface.signals[0].name, "SendAsyncCallback");
}

#[test]
fn doc_comments_attach_to_what_they_document() {
    let src = "/** File doc. */\n/** Enum doc.\n * second line */\nENUM E {\n  A, ///< doc of A\n  B ///< doc of B\n};\nFUNCTION F(int32 x, ///< doc of x\n  int32 y ///< doc of y\n);\nDEFINE D = 1; ///< doc of D";
    let api = ok(src);
    assert_eq!(api.doc.as_deref(), Some("File doc."));
    assert_eq!(api.enums[0].doc.as_deref(), Some("Enum doc.\nsecond line"));
    assert_eq!(api.enums[0].members[0].doc.as_deref(), Some("doc of A"));
    assert_eq!(api.enums[0].members[1].doc.as_deref(), Some("doc of B"));
    let f = api.functions().next().unwrap();
    assert_eq!(f.params[0].doc.as_deref(), Some("doc of x"));
    assert_eq!(f.params[1].doc.as_deref(), Some("doc of y"));
    assert_eq!(api.defines[0].doc.as_deref(), Some("doc of D"));
}

#[test]
fn deprecated_forms_give_warnings() {
    let api = ok("HANDLER H(int32 v);\nFUNCTION F(handler H);\nFUNCTION G(uint8 a[2..8] IN);");
    assert_eq!(api.warnings.len(), 2);
    assert!(api.warnings[0].message.contains("deprecated"));
    let g = api.functions().nth(1).unwrap();
    assert_eq!(g.params[0].max, Some(8));
    let f = api.functions().next().unwrap();
    assert_eq!(f.params[0].name, "handler");
}

#[test]
fn syntax_errors_say_what_was_expected() {
    assert_err(
        "FUNCTION F(int32 x",
        1,
        19,
        "expected ')' or ',' in the parameter list, found end of file",
    );
    assert_err(
        "ENUM E { A B };",
        1,
        12,
        "expected '}' or ',' in the ENUM body, found 'B'",
    );
    assert_err(
        "DEFINE X 3;",
        1,
        10,
        "expected '=' after the DEFINE name, found number 3",
    );
    assert_err(
        "STRUCT S { int32 a };",
        1,
        20,
        "expected ';' after the STRUCT member",
    );
    assert_err("FOO X;", 1, 1, "expected a declaration");
    assert_err(
        "REFERENCE R",
        1,
        12,
        "expected ';' at the end of the REFERENCE declaration",
    );
    assert_err("DEFINE X = $;", 1, 12, "unexpected character '$'");
    assert_err("/* never closed", 1, 1, "unterminated comment");
    assert_err("DEFINE X = \"abc;", 1, 12, "unterminated string");
    assert_err("DEFINE X = 0xZZ;", 1, 12, "malformed number '0xZZ'");
    assert_err(
        "DEFINE X = 99999999999999999999;",
        1,
        12,
        "does not fit in 64 bits",
    );
    assert_err(
        "FUNCTION IN();",
        1,
        10,
        "expected a return type or function name",
    );
}

#[test]
fn redefinitions_are_errors() {
    assert_err(
        "ENUM E { A };\nREFERENCE E;",
        2,
        11,
        "'E' is already declared at 1:6",
    );
    assert_err(
        "DEFINE X = 1;\nDEFINE X = 2;",
        2,
        8,
        "'X' is already declared at 1:8",
    );
    assert_err(
        "FUNCTION F();\nFUNCTION F();",
        2,
        10,
        "'F' is already declared",
    );
    assert_err("ENUM string { A };", 1, 6, "predefined type");
    assert_err("FUNCTION F(int32 a, int32 a);", 1, 27, "duplicate name 'a'");
    assert_err("ENUM E { A, A };", 1, 13, "already has a member named A");
    assert_err(
        "HANDLER H(int32 v);\nEVENT X(H h);\nFUNCTION AddXHandler();",
        3,
        10,
        "clashes with the method generated for EVENT X",
    );
    assert_err("USETYPES defs;\nUSETYPES defs;", 2, 10, "already imported");
}

#[test]
fn type_errors() {
    assert_err("FUNCTION F(Nope x);", 1, 12, "unknown type 'Nope'");
    assert_err(
        "DEFINE D = 1;\nFUNCTION F(D x);",
        2,
        12,
        "unknown type 'D' (it is a DEFINE)",
    );
    assert_err(
        "FUNCTION F(other.T x);",
        1,
        12,
        "unknown API 'other': add 'USETYPES other;'",
    );
    assert_err(
        "USETYPES defs;\nFUNCTION F(defs.Nope x);",
        2,
        12,
        "defs declares no type Nope",
    );
    assert_err(
        "FUNCTION F(string s IN);",
        1,
        19,
        "string 's' needs a maximum length",
    );
    assert_err("STRUCT S { string s; };", 1, 19, "needs a maximum length");
    assert_err(
        "HANDLER H(int32 v);\nFUNCTION F(H h[2]);",
        2,
        14,
        "arrays of handlers are not allowed",
    );
    assert_err(
        "FUNCTION F(uint8 a[0]);",
        1,
        20,
        "a size must be at least 1",
    );
    assert_err(
        "DEFINE S = \"x\";\nFUNCTION F(uint8 a[S]);",
        2,
        20,
        "a size must be an integer, found a string",
    );
    assert_err(
        "FUNCTION F(uint8 a[NOPE]);",
        1,
        20,
        "no DEFINE named 'NOPE'",
    );
    assert_err(
        "USETYPES defs;\nFUNCTION F(uint8 a[defs.NOPE]);",
        2,
        20,
        "no DEFINE named 'defs.NOPE'",
    );
}

#[test]
fn value_errors() {
    assert_err(
        "DEFINE A = B;\nDEFINE B = A;",
        1,
        8,
        "DEFINE A refers to itself (A -> B -> A)",
    );
    assert_err("DEFINE A = 1 / 0;", 1, 14, "division by zero");
    assert_err("DEFINE A = \"x\" + 1;", 1, 12, "arithmetic needs integers");
    assert_err(
        "ENUM E { A = 1, B = 1 };",
        1,
        17,
        "duplicate values: A and B are both 1",
    );
    assert_err(
        "ENUM E { A = 0xffffffffffffffff };",
        1,
        10,
        "larger than 64 bits",
    );
    assert_err(
        "BITMASK B { A = 3 };",
        1,
        13,
        "value 0x3 of A is not a power of 2",
    );
    assert_err("BITMASK B { A = -1 };", 1, 13, "is negative");
    assert_err(
        "BITMASK B { A = 0x8000000000000000, C };",
        1,
        37,
        "larger than 64 bits",
    );
    assert_err("BITMASK B { A = 2, C = 2 };", 1, 20, "duplicate values");
    assert_err("ENUM E { A = \"s\" };", 1, 14, "must be an integer");
}

#[test]
fn struct_handler_event_and_function_rules() {
    assert_err(
        "HANDLER H(int32 v);\nSTRUCT S { H h; };",
        2,
        14,
        "a STRUCT cannot contain a handler",
    );
    assert_err("STRUCT S { };", 1, 8, "STRUCT S has no members");
    assert_err(
        "STRUCT A { B b; };\nSTRUCT B { A a; };",
        1,
        1,
        "STRUCT A contains itself",
    );
    assert_err(
        "HANDLER H(int32 v OUT);",
        1,
        17,
        "HANDLER parameters are always IN",
    );
    assert_err(
        "HANDLER G(int32 v);\nHANDLER H(G g);",
        2,
        13,
        "a HANDLER cannot have a handler parameter",
    );
    assert_err(
        "EVENT E(int32 x);",
        1,
        7,
        "EVENT E needs exactly one handler parameter, found 0",
    );
    assert_err("HANDLER H(int32 v);\nEVENT E(H a, H b);", 2, 7, "found 2");
    assert_err(
        "HANDLER H(int32 v);\nEVENT E(int32 x OUT, H h);",
        2,
        15,
        "EVENT parameters are IN filters",
    );
    assert_err(
        "HANDLER H(int32 v);\nFUNCTION F(H a, H b);",
        2,
        19,
        "only one handler parameter",
    );
    assert_err(
        "HANDLER H(int32 v);\nFUNCTION H F();",
        2,
        10,
        "a FUNCTION cannot return a handler",
    );
    assert_err("FUNCTION string F();", 1, 10, "cannot return a string");
    assert_err(
        "HANDLER H(int32 v);\nFUNCTION F(H h OUT);",
        2,
        16,
        "takes no IN or OUT",
    );
    assert_err(
        "HANDLER H(int32 v);\nEVENT X(H h);\nHANDLER G(int32 v);\nFUNCTION le_result_t X(G g);\nFUNCTION XCallback(G g);\nEVENT XCallback(H h);",
        6,
        1,
        "signal 'XCallback' is already generated",
    );
}

#[test]
fn imports_are_transitive_and_cycles_refused() {
    let c = "DEFINE N = 3; ENUM Deep { D1 };";
    let b = "USETYPES c; DEFINE M = c.N + 1;";
    let api = compile_in_memory(
        "a",
        "USETYPES b;\nFUNCTION F(c.Deep d, uint8 x[b.M]);",
        &[("b", b), ("c", c)],
    )
    .unwrap();
    assert_eq!(api.imports.keys().collect::<Vec<_>>(), vec!["b", "c"]);
    assert_eq!(api.functions().next().unwrap().params[1].max, Some(4));

    let e = compile_in_memory("a", "USETYPES b;", &[("b", "USETYPES a;")]).unwrap_err();
    let d = &e.diagnostics()[0];
    assert!(
        d.message.contains("USETYPES cycle: a -> b -> a"),
        "{}",
        d.message
    );
    assert_eq!((d.span.line, d.span.column), (1, 10));

    let e = compile_in_memory("a", "\n  USETYPES missing;", &[]).unwrap_err();
    let d = &e.diagnostics()[0];
    assert_eq!((d.span.line, d.span.column), (2, 12));
    assert!(d.message.contains("cannot find missing.api"));

    // An error inside an import names the import's file and where it was imported.
    let e =
        compile_in_memory("a", "USETYPES b;", &[("b", "ENUM E { A = 1, B = 1 };")]).unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("b.api:1:17: error: ENUM E has duplicate values"),
        "{text}"
    );
    assert!(
        text.contains("a.api:1:10: error: in the API b imported here"),
        "{text}"
    );
}

#[test]
fn the_api_name_must_be_an_identifier() {
    let e = compile_in_memory("bad-name", "REFERENCE R;", &[]).unwrap_err();
    assert!(
        e.to_string()
            .contains("bad-name.api:1:1: error: the API name 'bad-name'")
    );
}

#[test]
fn errors_are_all_reported_in_order() {
    let e = compile_in_memory("t", "FUNCTION F(Nope a);\nFUNCTION G(string s);", &[]).unwrap_err();
    assert_eq!(e.diagnostics().len(), 2);
    assert_eq!(e.diagnostics()[1].span.line, 2);
}
