//! `unsafe` code stays in the shims ([`SHIMS`]: the two `sys` modules of
//! the libraries, and the test support's seccomp filter), and no other
//! module can let it in: a crate root's `#![deny(unsafe_code)]` (the
//! crates with a shim) can be lifted by any module's `#[allow(unsafe_code)]`, so the
//! check reads every crate's `src` (the workspace's and fuzz's) itself:
//! - outside [`SHIMS`], no `unsafe` keyword (block, fn, impl, trait,
//!   extern, attribute) and no `unsafe_code` lint lifted (`allow`,
//!   `expect`, `warn`);
//! - every library crate's root has `#![forbid(unsafe_code)]`, or, for a
//!   crate with a shim, `#![deny(unsafe_code)]`.
//!
//! Sources are tokenized (proc-macro2), so comments and string literals do
//! not count; a doc comment is a string.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use proc_macro2::{Delimiter, TokenStream, TokenTree};

/// The files allowed `unsafe` code, relative to the workspace: each opens
/// with a `# Safety` section and `#![allow(unsafe_code)]`.
const SHIMS: &[&str] = &[
    "image-runtime/src/sys.rs",
    "image-overlay/src/sys.rs",
    // A test fixture's: a seccomp filter on the calling thread.
    "image-testsupport/src/seccomp.rs",
];

/// What is wrong in one source file.
fn findings_in(rel: &str, src: &str, out: &mut Vec<String>) {
    let tokens = TokenStream::from_str(src).unwrap_or_else(|e| panic!("{rel}: {e:?}"));
    if SHIMS.contains(&rel) {
        return;
    }
    walk(rel, tokens, out);
}

/// Every `unsafe` and every lifted `unsafe_code` in `tokens`.
fn walk(rel: &str, tokens: TokenStream, out: &mut Vec<String>) {
    let mut prev: Option<String> = None;
    for tree in tokens {
        match tree {
            TokenTree::Ident(ref ident) if ident == "unsafe" => {
                out.push(format!("{rel}:{}: unsafe", ident.span().start().line));
            }
            TokenTree::Group(group) => {
                let lifting = matches!(prev.as_deref(), Some("allow" | "expect" | "warn"));
                if lifting && group.delimiter() == Delimiter::Parenthesis {
                    let names = group
                        .stream()
                        .into_iter()
                        .any(|t| matches!(t, TokenTree::Ident(ref i) if i == "unsafe_code"));
                    if names {
                        let line = group.span().start().line;
                        out.push(format!("{rel}:{line}: unsafe_code lifted"));
                    }
                }
                walk(rel, group.stream(), out);
                prev = None;
                continue;
            }
            _ => {}
        }
        prev = match &tree {
            TokenTree::Ident(i) => Some(i.to_string()),
            _ => None,
        };
    }
}

/// The lint level the crate root `src` gives `unsafe_code` in an inner
/// attribute (`#![forbid(unsafe_code)]`: `"forbid"`), if any.
fn root_level(src: &str) -> Option<String> {
    let tokens: Vec<TokenTree> = TokenStream::from_str(src).ok()?.into_iter().collect();
    tokens.windows(3).find_map(|w| match w {
        [TokenTree::Punct(hash), TokenTree::Punct(bang), TokenTree::Group(attr)]
            if hash.as_char() == '#'
                && bang.as_char() == '!'
                && attr.delimiter() == Delimiter::Bracket =>
        {
            let inner: Vec<TokenTree> = attr.stream().into_iter().collect();
            match inner.as_slice() {
                [TokenTree::Ident(level), TokenTree::Group(args)]
                    if args.stream().to_string().trim() == "unsafe_code" =>
                {
                    Some(level.to_string())
                }
                _ => None,
            }
        }
        _ => None,
    })
}

/// The `.rs` files under `dir`, sorted.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Everything wrong under `workspace`: each directory of it with a
/// `Cargo.toml` and a `src` is a crate (the members and fuzz).
fn check(workspace: &Path) -> Vec<String> {
    let mut crates: Vec<PathBuf> = std::fs::read_dir(workspace)
        .expect("read workspace")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("Cargo.toml").is_file() && p.join("src").is_dir())
        .collect();
    crates.sort();
    let mut out = Vec::new();
    for dir in crates {
        let name = dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let mut files = Vec::new();
        sources(&dir.join("src"), &mut files);
        for file in &files {
            let rel = file
                .strip_prefix(workspace)
                .expect("inside")
                .to_string_lossy();
            let src = std::fs::read_to_string(file).expect("read source");
            findings_in(&rel, &src, &mut out);
        }
        let lib = dir.join("src/lib.rs");
        if !lib.is_file() {
            continue;
        }
        let has_shim = SHIMS.iter().any(|s| s.starts_with(&format!("{name}/")));
        let want = if has_shim { "deny" } else { "forbid" };
        let level = root_level(&std::fs::read_to_string(&lib).expect("read lib.rs"));
        if level.as_deref() != Some(want) {
            out.push(format!(
                "{name}/src/lib.rs: wants #![{want}(unsafe_code)], has {level:?}"
            ));
        }
    }
    out
}

#[test]
fn unsafe_code_stays_in_the_shims() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let workspace = workspace.canonicalize().expect("workspace");
    for shim in SHIMS {
        assert!(
            workspace.join(shim).is_file(),
            "{shim} is gone: update SHIMS"
        );
    }
    let found = check(&workspace);
    assert!(
        found.is_empty(),
        "unsafe code outside the shims:\n{}",
        found.join("\n")
    );
}

/// A fixture workspace of `files` (path relative to it, contents).
fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    dir
}

#[test]
fn the_check_finds_lifted_lints_unsafe_and_weak_roots() {
    let dir = fixture(&[
        ("a/Cargo.toml", ""),
        ("a/src/lib.rs", "#![deny(unsafe_code)]\nmod m;\nmod n;\n"),
        (
            "a/src/m.rs",
            "// unsafe { in a comment }\n/// `unsafe` in a doc\n\
             const S: &str = \"unsafe { }\";\n#[allow(dead_code, unsafe_code)]\nfn f() {}\n",
        ),
        (
            "a/src/n.rs",
            "mod inner {\n    fn g() {\n        unsafe { h() }\n    }\n}\n",
        ),
        ("b/Cargo.toml", ""),
        ("b/src/lib.rs", "#![forbid(unsafe_code)]\n"),
        ("c/Cargo.toml", ""),
        ("c/src/main.rs", "#![expect(unsafe_code)]\nfn main() {}\n"),
        ("image-overlay/Cargo.toml", ""),
        ("image-overlay/src/lib.rs", "#![deny(unsafe_code)]\n"),
        (
            "image-overlay/src/sys.rs",
            "#![allow(unsafe_code)]\nfn f() { unsafe {} }\n",
        ),
    ]);
    assert_eq!(
        check(dir.path()),
        vec![
            "a/src/m.rs:4: unsafe_code lifted".to_owned(),
            "a/src/n.rs:3: unsafe".to_owned(),
            "a/src/lib.rs: wants #![forbid(unsafe_code)], has Some(\"deny\")".to_owned(),
            "c/src/main.rs:1: unsafe_code lifted".to_owned(),
        ]
    );
}
