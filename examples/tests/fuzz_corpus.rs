//! Replays every fuzz target's seed corpus (fuzz/corpus/<target>/) through
//! the same target functions cargo-fuzz runs, on stable, so CI exercises
//! them without nightly. A crash found by fuzzing is added to the corpus
//! and stays a regression test here.

#[path = "../../fuzz/src/targets.rs"]
#[allow(dead_code, clippy::unwrap_used)]
mod targets;

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let data = std::fs::read(&path).expect("read corpus file");
        let outcome = std::panic::catch_unwind(|| f(&data));
        assert!(
            outcome.is_ok(),
            "fuzz target {target} failed on {}",
            path.display()
        );
        n += 1;
    }
    assert!(n > 0, "the corpus of {target} is empty");
    eprintln!("{target}: replayed {n} inputs");
}

macro_rules! corpus_tests {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            replay(stringify!($name), targets::$name);
        }
    )*};
}

corpus_tests!(digest, reference, platform, document, config, unpack, load);
