//! Every error type of the family that has a class is in its crate's
//! registry (`<crate>::CLASSIFIED`, made by
//! `image_core::classify_registry!`), so `image_core::error::classify`
//! finds the class of any of them behind a `&dyn Error` (imagectl does).
//! The types are found in the sources: each `impl Classify for X`.

use std::collections::BTreeSet;
use std::path::Path;

/// The type names of every `impl ... Classify for X` under `dir`.
fn classified_in(dir: &Path, found: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            classified_in(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read source");
            let impls = text
                .lines()
                .map(str::trim_start)
                .filter(|l| l.starts_with("impl"))
                .filter_map(|l| l.split_once("Classify for ").map(|(_, rest)| rest));
            for rest in impls {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let last = name.rsplit("::").next().unwrap_or_default();
                // The forwarding impl for Box<T> is no type of its own.
                if !last.is_empty() && last != "Box" {
                    found.insert(last.to_owned());
                }
            }
        }
    }
}

fn registered(names: &[&str]) -> BTreeSet<String> {
    names
        .iter()
        .map(|n| n.rsplit("::").next().unwrap_or_default().trim().to_owned())
        .collect()
}

#[test]
fn every_classified_error_is_in_its_crates_registry() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (krate, names) in [
        ("image-core", image_core::CLASSIFIED),
        ("image-store", image_store::CLASSIFIED),
        ("image-overlay", image_overlay::CLASSIFIED),
        ("image-runtime", image_runtime::CLASSIFIED),
        ("image-build", image_build::CLASSIFIED),
        ("image-registry", image_registry::CLASSIFIED),
    ] {
        let mut found = BTreeSet::new();
        classified_in(&root.join(krate).join("src"), &mut found);
        assert!(!found.is_empty(), "{krate}: no Classify impl found");
        assert_eq!(
            found,
            registered(names),
            "{krate}: registry and impls differ"
        );
    }
}

#[test]
fn the_runtime_registry_recognises_every_crate_below() {
    use image_core::ErrorKind;
    let core: Box<dyn std::error::Error> = "md5:abc"
        .parse::<image_core::Digest>()
        .expect_err("md5 is refused")
        .into();
    let kind = image_core::error::classify(&*core, image_runtime::kind_of);
    assert_eq!(kind, Some(ErrorKind::Unsupported));
    let store = image_store::MemoryStore::new();
    let missing = image_core::Digest::sha256(b"absent");
    let err = image_store::Provider::reader(&store, &missing)
        .err()
        .expect("absent");
    let boxed: Box<dyn std::error::Error> = Box::new(err);
    let kind = image_core::error::classify(&*boxed, image_runtime::kind_of);
    assert_eq!(kind, Some(ErrorKind::NotFound));
}

/// The `#[error("...")]` format strings under `dir` that print their own
/// source (`{source}`, or `{0}` of a `#[from]`/`#[source]` field): a chain
/// printer would show that message twice. Returns `file: format` lines.
fn messages_printing_their_source(dir: &Path, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            messages_printing_their_source(&path, found);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        let mut rest = text.as_str();
        while let Some(at) = rest.find("#[error(") {
            rest = &rest[at + 8..];
            let end = rest.find(")]").unwrap_or(rest.len());
            let format = &rest[..end];
            // The variant's fields: up to the next message or the enum's end.
            let after = &rest[end..];
            let mut cut = after.find("#[error(").unwrap_or(after.len()).min(600);
            while !after.is_char_boundary(cut) {
                cut -= 1;
            }
            let fields = &after[..cut];
            let tuple_source = fields.contains("#[from]") || fields.contains("#[source]");
            let prints_source = format.contains("{source}")
                || format.contains("{source:")
                || (tuple_source && (format.contains("{0}") || format.contains("{0:")));
            if prints_source && !format.contains("transparent") {
                found.push(format!("{}: {}", path.display(), format.trim()));
            }
        }
    }
}

/// No message of the family prints its source: each names its own
/// context, and `Chain` or imagectl prints the sources after it.
#[test]
fn no_error_message_prints_its_source() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    for krate in [
        "image-core",
        "image-store",
        "image-overlay",
        "image-runtime",
        "image-build",
        "image-registry",
    ] {
        messages_printing_their_source(&root.join(krate).join("src"), &mut found);
    }
    assert!(
        found.is_empty(),
        "messages printing their source:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_source_check_catches_a_message_printing_its_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("e.rs"),
        "enum E {\n    #[error(\"reading {path}: {source}\")]\n    A { path: String, source: std::io::Error },\n    #[error(\"parsing: {0}\")]\n    B(#[from] ParseError),\n    #[error(\"fine\")]\n    C(#[from] X),\n}\n",
    )
    .expect("write");
    let mut found = Vec::new();
    messages_printing_their_source(dir.path(), &mut found);
    assert_eq!(found.len(), 2, "{found:?}");
}
