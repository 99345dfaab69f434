//! The fuzz corpus and the regressions (inputs that once crashed a fuzz target), replayed through
//! the same checks as the fuzz targets, so that they run in every `cargo test`. The checks are in
//! fuzz/checks.rs; scripts/fuzz.sh runs the fuzzers themselves.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/checks.rs"]
mod checks;

/// Every file of `fuzz/<kind>/<target>/`, with its contents.
fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("a fuzz input");
            (p, bytes)
        })
        .collect()
}

fn replay(kind: &str) -> usize {
    let mut count = 0;
    for (target, check) in checks::TARGETS {
        for (path, bytes) in inputs(kind, target) {
            let outcome = std::panic::catch_unwind(|| check(&bytes));
            assert!(outcome.is_ok(), "{target} fails on {}", path.display());
            count += 1;
        }
    }
    count
}

#[test]
fn the_regressions_pass_their_checks() {
    let count = replay("regressions");
    eprintln!("{count} regression inputs replayed");
}

#[test]
fn the_corpus_passes_its_checks() {
    let count = replay("corpus");
    assert!(
        count >= checks::TARGETS.len(),
        "the corpus is missing ({count} files)"
    );
    eprintln!("{count} corpus inputs replayed");
}

/// The bindings seeds that are meant to load do, so the fuzzer starts past the parser's errors
/// (with the repository's .api files found through `apipath "interfaces/api"`).
#[test]
fn the_bindings_seeds_load() {
    let path = Path::new(checks::BINDINGS_FILE);
    let seeds = ["docs_example", "protocol_ids", "test_system", "every_key"];
    let mut loaded_seeds = 0;
    for (file, bytes) in inputs("corpus", "bindings") {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        // The rest of the corpus is what the fuzzer found, valid or not.
        if !seeds.contains(&name.as_str()) {
            continue;
        }
        let text = String::from_utf8(bytes).expect("a text seed");
        let def = telbus_policy::bindings::SystemDef::from_str(&text, path)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!def.bindings.is_empty(), "{name} has no bindings");
        loaded_seeds += 1;
    }
    assert_eq!(
        loaded_seeds,
        seeds.len(),
        "seeds missing from fuzz/corpus/bindings"
    );
}
