//! `.dockerignore` rules, from Docker's documented examples and
//! moby/patternmatcher's behaviour.

use image_build::dockerignore::{find_ignore_file, Ignore, IgnoreError};
use image_core::error::{Classify, ErrorKind};

mod fifo;
use fifo::FifoProbe;

/// (ignore file, path, excluded?)
const TABLE: &[(&str, &str, bool)] = &[
    // Docker's documentation example.
    (
        "# comment\n*/temp*\n*/*/temp*\ntemp?\n",
        "somedir/temporary.txt",
        true,
    ),
    ("*/temp*", "somedir/temp", true),
    ("*/temp*", "temp", false),
    ("*/temp*", "a/b/temp", false),
    ("*/*/temp*", "somedir/subdir/temporary.txt", true),
    ("*/*/temp*", "somedir/temporary.txt", false),
    ("temp?", "tempa", true),
    ("temp?", "tempb", true),
    ("temp?", "temp", false),
    ("temp?", "tempab", false),
    ("# comment\n", "# comment", false),
    // `**` across elements.
    ("**/*.go", "main.go", true),
    ("**/*.go", "a/b/c/x.go", true),
    ("**/*.go", "a/b/c/x.gox", false),
    ("**", "anything/at/all", true),
    ("dir/**", "dir/a/b", true),
    ("dir/**", "dir", false),
    ("a/**/b", "a/b", true),
    ("a/**/b", "a/x/y/b", true),
    ("a/**/b", "a/xb", false),
    ("**/foo", "foo", true),
    ("**/foo", "x/y/foo", true),
    // Exceptions, in order.
    ("*.md\n!README.md", "README.md", false),
    ("*.md\n!README.md", "CHANGES.md", true),
    (
        "*.md\n!README*.md\nREADME-secret.md",
        "README-secret.md",
        true,
    ),
    ("*.md\n!README*.md\nREADME-secret.md", "README-x.md", false),
    (
        "*.md\nREADME-secret.md\n!README*.md",
        "README-secret.md",
        false,
    ),
    // A parent directory that matches excludes what is under it.
    ("node_modules", "node_modules/x/y.js", true),
    ("*", "a/b", true),
    ("dir\n!dir/keep", "dir/keep", false),
    ("dir\n!dir/keep", "dir/other", true),
    // Leading `/` and `./`, and cleaning.
    ("/foo", "foo", true),
    ("./foo", "foo", true),
    ("foo/../bar", "bar", true),
    ("foo/", "foo/x", true),
    ("  spaced  ", "spaced", true),
    ("! foo\n*", "foo", true),
    // The ignore file and the Dockerfile can be excluded.
    (".dockerignore\nDockerfile", ".dockerignore", true),
    (".dockerignore\nDockerfile", "Dockerfile", true),
    // Classes and escapes.
    ("file[0-9]", "file7", true),
    ("file[0-9]", "filex", false),
    ("file[^0-9]", "filex", true),
    ("a\\*b", "a*b", true),
    ("a\\*b", "axb", false),
    ("*.txt", "a.txt/inner", true),
    ("?", "ab", false),
    ("a?c", "a/c", false),
];

#[test]
fn documented_examples() {
    for (file, path, want) in TABLE {
        let ig = Ignore::parse(file).unwrap();
        assert_eq!(ig.is_excluded(path), *want, "patterns {file:?} on {path:?}");
    }
}

#[test]
fn bad_patterns_are_typed_errors() {
    for (text, line) in [("ok\n!", 2), ("[abc", 1)] {
        let e = Ignore::parse(text).unwrap_err();
        image_testsupport::chain::assert_said_once(&e);
        assert!(
            matches!(e, IgnoreError::Pattern { line: l, .. } if l == line),
            "{e}"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
}

#[test]
fn lookup_prefers_the_dockerfile_specific_file() {
    let ctx = tempfile::tempdir().unwrap();
    let dir = ctx.path();
    assert!(find_ignore_file(dir, None).unwrap().is_none());
    std::fs::write(dir.join(".dockerignore"), "a\n").unwrap();
    let (p, ig) = find_ignore_file(dir, Some(&dir.join("build/app.Dockerfile")))
        .unwrap()
        .unwrap();
    assert_eq!(p, dir.join(".dockerignore"));
    assert!(ig.is_excluded("a"));
    std::fs::create_dir(dir.join("build")).unwrap();
    std::fs::write(dir.join("build/app.Dockerfile.dockerignore"), "b\n").unwrap();
    let (p, ig) = find_ignore_file(dir, Some(&dir.join("build/app.Dockerfile")))
        .unwrap()
        .unwrap();
    assert_eq!(p, dir.join("build/app.Dockerfile.dockerignore"));
    assert!(ig.is_excluded("b") && !ig.is_excluded("a"));
}

#[test]
fn a_symlinked_ignore_file_is_refused() {
    let ctx = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "x\n").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret"),
        ctx.path().join(".dockerignore"),
    )
    .unwrap();
    let e = find_ignore_file(ctx.path(), None).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, IgnoreError::Read { .. }), "{e}");
}

/// An ignore file that is not a regular file is refused without being
/// opened for reading: opening has effects on a FIFO (a writer waiting
/// on it goes on) and on a device node of a hostile context (a tape
/// rewinds, a watchdog starts), and only a regular file is read.
#[test]
fn an_ignore_file_that_is_not_regular_is_refused_unopened() {
    let ctx = tempfile::tempdir().unwrap();
    let fifo = FifoProbe::new(&ctx.path().join(".dockerignore"));
    let e = find_ignore_file(ctx.path(), None).unwrap_err();
    assert!(!fifo.was_opened(), "the FIFO was opened for reading");
    assert!(matches!(e, IgnoreError::Read { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
}

#[test]
fn matching_is_linear_in_the_path() {
    // A backtracking matcher takes exponential time on this; the automaton
    // visits each character once per pattern state.
    let pattern = "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
    let ig = Ignore::parse(pattern).unwrap();
    let path = "a".repeat(20_000);
    assert!(!ig.is_excluded(&path));
}

#[test]
fn parent_matching_is_linear_in_the_depth() {
    // Checking each parent directory separately is quadratic in the depth;
    // one pass over the path checks them all.
    let ig = Ignore::parse("*/*/*/*/*/zz\n**/a/**/b/**/c/**/d").unwrap();
    let path = "a/".repeat(50_000) + "f";
    assert!(!ig.is_excluded(&path));
    let deep = "x/".repeat(50_000) + "a/b/c/d/e";
    assert!(ig.is_excluded(&deep));
}

/// The matcher before the index (kept as the reference): every pattern in
/// file order, each on the path and its parents, the last match deciding.
fn reference(ig: &Ignore, path: &str) -> bool {
    let file = image_core::path::clean(path.trim_start_matches('/'));
    let mut matched = false;
    for p in ig.patterns() {
        if p.exclusion != matched {
            continue;
        }
        if p.matches_or_parent(&file) {
            matched = !p.exclusion;
        }
    }
    matched
}

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

#[test]
fn the_index_decides_as_every_pattern_in_order_does() {
    // Pieces that exercise each index: literal first and last elements,
    // `**` in every position (repeated too), classes, escapes, `?`, and
    // elements shared by paths and patterns.
    const PIECES: &[&str] = &[
        "a", "b", "ab", "**", "*", "?", "a*", "*b", "[ab]", "[^a]", "\\a", "**/**", "x?",
    ];
    const NAMES: &[&str] = &["a", "b", "ab", "ba", "x", "xa", "aa", "*"];
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let mut text = String::new();
        for _ in 0..(1 + g.next() % 6) {
            if g.next() % 3 == 0 {
                text.push('!');
            }
            if g.next() % 5 == 0 {
                text.push('/');
            }
            let parts: Vec<String> = (0..(1 + g.next() % 4))
                .map(|_| {
                    let mut part = g.pick(PIECES).to_owned();
                    if g.next() % 4 == 0 {
                        part.push_str(g.pick(PIECES));
                    }
                    part
                })
                .collect();
            text.push_str(&parts.join("/"));
            text.push('\n');
        }
        let Ok(ig) = Ignore::parse(&text) else {
            continue;
        };
        for _ in 0..20 {
            let path: Vec<&str> = (0..(1 + g.next() % 5)).map(|_| g.pick(NAMES)).collect();
            let path = path.join("/");
            assert_eq!(
                ig.is_excluded(&path),
                reference(&ig, &path),
                "patterns {text:?} on {path:?}"
            );
        }
    }
}

#[test]
fn many_patterns_cost_what_each_path_can_match() {
    // 10,000 distinct patterns of 30 `**/` each, then 10,000 copies of one
    // general pattern, on 20,000 paths: every pattern on every path (the
    // matcher before the index) is about 10^10 automaton steps, minutes;
    // indexed by last element, deduplicated and simplified, each path is
    // tried against a handful of patterns.
    let mut text = String::new();
    for i in 0..10_000 {
        text.push_str(&"**/".repeat(30));
        text.push_str(&format!("x{i}\n"));
    }
    let ig = Ignore::parse(&text).unwrap();
    for j in 0..20_000 {
        let path = format!("d{}/e/f{j}", j % 50);
        assert!(!ig.is_excluded(&path), "{path}");
    }
    assert!(ig.is_excluded("d/x9999") && ig.is_excluded("x0/y"));
    let general = "**/**/**/**/**/**/*q*\n".repeat(9_999) + "!**/*qq*\n";
    let ig = Ignore::parse(&general).unwrap();
    for j in 0..20_000 {
        let path = format!("d{}/e/q{j}", j % 50);
        assert!(ig.is_excluded(&path), "{path}");
    }
    assert!(!ig.is_excluded("a/qq"));
}
