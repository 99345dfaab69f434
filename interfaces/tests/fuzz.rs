//! The compiler never panics: random bytes, random token soup and mutated real APIs all
//! end in `Ok` or `Err`. A hand-rolled generator (seeded, reproducible) keeps the
//! dependency list short; the seed is printed on failure.

use std::panic::{AssertUnwindSafe, catch_unwind};
use telbus_interfaces::{compile_in_memory, json, rust, xml};

const API_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/api");

const TOKENS: &[&str] = &[
    "FUNCTION",
    "HANDLER",
    "EVENT",
    "REFERENCE",
    "DEFINE",
    "ENUM",
    "BITMASK",
    "STRUCT",
    "USETYPES",
    "IN",
    "OUT",
    "string",
    "int8",
    "uint64",
    "handler",
    "file",
    "le_result_t",
    "X",
    "Y",
    "H",
    "imp",
    "imp.T",
    "imp.N",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ";",
    ",",
    "=",
    ".",
    "..",
    "+",
    "-",
    "*",
    "/",
    "0",
    "1",
    "0x10",
    "0x8000000000000000",
    "99999999999999999999",
    "\"s\"",
    "'",
    "/**",
    "*/",
    "///<",
    "//",
    "/*",
    "\n",
    " ",
];

const IMPORT: &str = "DEFINE N = 4; ENUM T { A }; HANDLER H(int32 v);";

fn must_not_panic(seed: u64, text: &str) {
    let result = catch_unwind(AssertUnwindSafe(|| {
        if let Ok(api) = compile_in_memory("f", text, &[("imp", IMPORT)]) {
            // Whatever compiles must also generate.
            let _ = xml::generate(&api);
            let _ = rust::generate(&api, rust::Mode::Full);
            let _ = json::generate(&api);
        }
    }));
    if result.is_err() {
        panic!("panic for seed {seed} on input:\n{text:?}");
    }
}

fn quiet_panics() {
    std::panic::set_hook(Box::new(|_| {}));
}

#[test]
fn random_bytes_never_panic() {
    quiet_panics();
    for seed in 0..3000u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let len = rng.usize(0..200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        must_not_panic(seed, &String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn token_soup_never_panics() {
    quiet_panics();
    for seed in 0..5000u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let n = rng.usize(0..60);
        let text: Vec<&str> = (0..n).map(|_| TOKENS[rng.usize(..TOKENS.len())]).collect();
        must_not_panic(seed, &text.join(" "));
    }
}

#[test]
fn mutated_real_apis_never_panic() {
    quiet_panics();
    let sources: Vec<String> = [
        "le_info",
        "le_gpio",
        "le_mcc",
        "le_data",
        "le_pm",
        "le_mdmDefs",
    ]
    .iter()
    .map(|n| std::fs::read_to_string(format!("{API_DIR}/{n}.api")).unwrap())
    .map(|s| s.replace("le_mdmDefs", "imp").replace("le_mdc", "imp"))
    .collect();
    for seed in 0..1500u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut chars: Vec<char> = sources[rng.usize(..sources.len())].chars().collect();
        for _ in 0..rng.usize(1..8) {
            if chars.is_empty() {
                break;
            }
            let at = rng.usize(..chars.len());
            match rng.u8(0..4) {
                0 => {
                    chars.remove(at);
                }
                1 => chars.insert(
                    at,
                    TOKENS[rng.usize(..TOKENS.len())].chars().next().unwrap(),
                ),
                2 => {
                    let end = (at + rng.usize(0..40)).min(chars.len());
                    chars.drain(at..end);
                }
                _ => {
                    for c in TOKENS[rng.usize(..TOKENS.len())].chars().rev() {
                        chars.insert(at, c);
                    }
                }
            }
        }
        must_not_panic(seed, &chars.into_iter().collect::<String>());
    }
}
