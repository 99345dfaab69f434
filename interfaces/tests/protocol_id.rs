//! The protocol id ignores comments and layout, and changes with any signature change.

use telbus_interfaces::compile_in_memory;
use telbus_interfaces::protocol_id::protocol_id;

const BASE: &str = "DEFINE MAX = 8;\nENUM E { A, B };\nREFERENCE R;\nFUNCTION le_result_t F(R r IN, string s[MAX] OUT);\n";

fn id(src: &str) -> String {
    protocol_id(&compile_in_memory("p", src, &[("imp", "ENUM I { X };")]).unwrap())
}

#[test]
fn comments_whitespace_and_spelling_of_sizes_do_not_change_it() {
    let base = id(BASE);
    assert_eq!(base.len(), 32);
    assert!(base.chars().all(|c| c.is_ascii_hexdigit()));
    let commented = "/** File. */\n/** Max. */ DEFINE   MAX=8 ; // x\nENUM E {\n A, ///< a\n B\n};\n/* c */ REFERENCE R;\n/** f */\nFUNCTION le_result_t F(\n  R r IN, ///< r\n  string s[MAX] OUT ///< s\n);";
    assert_eq!(id(commented), base);
    assert_eq!(
        id(&BASE.replace("s[MAX]", "s[8]")),
        base,
        "a size is its value"
    );
    assert_eq!(
        id(&BASE.replace("R r IN", "R r")),
        base,
        "IN is the default"
    );
}

#[test]
fn any_signature_change_changes_it() {
    let base = id(BASE);
    let variants = [
        BASE.replace("MAX = 8", "MAX = 9"),
        BASE.replace("A, B", "B, A"),
        BASE.replace("A, B", "A, B, C"),
        BASE.replace("A, B", "A = 1, B"),
        BASE.replace("REFERENCE R", "REFERENCE Q")
            .replace("R r", "Q r"),
        BASE.replace("le_result_t F", "int32 F"),
        BASE.replace("F(", "G("),
        BASE.replace("R r IN", "R x IN"),
        BASE.replace("OUT", "IN"),
        format!("{BASE}FUNCTION H();"),
        format!("FUNCTION H();\n{BASE}"),
        format!("USETYPES imp;\n{BASE}"),
    ];
    for v in &variants {
        assert_ne!(id(v), base, "{v}");
    }
}

#[test]
fn an_imported_type_change_changes_it() {
    let src = "USETYPES imp; FUNCTION F(imp.I i);";
    let a = protocol_id(&compile_in_memory("p", src, &[("imp", "ENUM I { X };")]).unwrap());
    let b = protocol_id(&compile_in_memory("p", src, &[("imp", "ENUM I { X, Y };")]).unwrap());
    assert_ne!(a, b);
}
