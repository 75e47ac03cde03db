//! Lexical path cleaning for the paths images and archives name: the one
//! cleaner of the family. Nothing here touches a file system; a caller that
//! opens the result still resolves it without following symlinks.
//!
//! Three forms of one rule (Go's `path.Clean`: empty and `.` components
//! dropped, each `..` taking back the component before it), differing only
//! in what a `..` with nothing to take back means: refused
//! ([`clean_relative`], an entry inside a root), dropped at the root
//! ([`clean_absolute`]), or kept in front when the path is relative
//! ([`clean`], Go's own behaviour, which `.dockerignore` patterns follow).

/// The components of `path` (split on `/`) with empty and `.` components
/// dropped and each `..` taking back the component before it, and the
/// number of `..` that had nothing to take back (they all come before the
/// components kept: one can only be unmatched while none is kept).
fn components(path: &str) -> (Vec<&str>, usize) {
    let mut parts: Vec<&str> = Vec::new();
    let mut climbs = 0;
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    climbs += 1;
                }
            }
            c => parts.push(c),
        }
    }
    (parts, climbs)
}

/// `path` cleaned as a path relative to a root (an entry in an archive):
/// `./a//b/../c` is `a/c`, the root itself is `""`. A leading `/` is
/// dropped. `None` when the path climbs above the root (`../x`, `a/../../x`).
pub fn clean_relative(path: &str) -> Option<String> {
    let (parts, climbs) = components(path);
    (climbs == 0).then(|| parts.join("/"))
}

/// `path` cleaned as an absolute path (a working directory, a mount
/// point): `/a/./b/../c` and `a/b/../c` are `/a/c`; a `..` at the root
/// stays at the root (`/../x` is `/x`), as Go's `path.Clean` does.
pub fn clean_absolute(path: &str) -> String {
    let (parts, _) = components(path);
    format!("/{}", parts.join("/"))
}

/// `path` cleaned as Go's `path.Clean` cleans it: a rooted path as
/// [`clean_absolute`]; a relative one keeps the `..` that climb above where
/// it starts, in front (`a/../../x` is `../x`), and is `.` when nothing is
/// left. `.dockerignore` patterns and the paths matched against them are
/// cleaned this way (moby's patternmatcher uses `filepath.Clean`).
pub fn clean(path: &str) -> String {
    if path.starts_with('/') {
        return clean_absolute(path);
    }
    let (parts, climbs) = components(path);
    let up = std::iter::repeat_n("..", climbs);
    let cleaned = up.chain(parts).collect::<Vec<_>>().join("/");
    if cleaned.is_empty() {
        ".".to_owned()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(clean_relative("./a//b/./c").as_deref(), Some("a/b/c"));
        assert_eq!(clean_relative("a/../b").as_deref(), Some("b"));
        assert_eq!(clean_relative("/a/b/").as_deref(), Some("a/b"));
        assert_eq!(clean_relative("a/..").as_deref(), Some(""));
        assert_eq!(clean_relative("").as_deref(), Some(""));
        assert_eq!(clean_relative("../x"), None);
        assert_eq!(clean_relative("a/../../x"), None);
        // Climbing out and back in is still climbing out.
        assert_eq!(clean_relative("../a/x"), None);
    }

    #[test]
    fn absolute_paths() {
        assert_eq!(clean_absolute("/a/./b/../c"), "/a/c");
        assert_eq!(clean_absolute("a/b/../c"), "/a/c");
        assert_eq!(clean_absolute("/../x"), "/x");
        assert_eq!(clean_absolute("/"), "/");
        assert_eq!(clean_absolute(""), "/");
        assert_eq!(clean_absolute("//a//"), "/a");
    }

    /// Go's own examples of `path.Clean` (its documentation and tests).
    #[test]
    fn go_clean_paths() {
        let cases = [
            ("", "."),
            (".", "."),
            ("..", ".."),
            ("../..", "../.."),
            ("../../abc", "../../abc"),
            ("abc/../../././../def", "../../def"),
            ("abc//def//ghi", "abc/def/ghi"),
            ("abc/./def", "abc/def"),
            ("abc/def/..", "abc"),
            ("abc/..", "."),
            ("abc/../..", ".."),
            ("./abc/../..", ".."),
            ("a/c/b/..", "a/c"),
            ("a//c", "a/c"),
            ("/", "/"),
            ("//", "/"),
            ("/..", "/"),
            ("/../a/c", "/a/c"),
            ("/../a/b/../././/c", "/a/c"),
            ("/abc/../../def", "/def"),
            ("abc/", "abc"),
        ];
        for (input, want) in cases {
            assert_eq!(clean(input), want, "{input:?}");
        }
    }

    /// The plain stack form of Go's `path.Clean`: each `..` pops a name,
    /// is dropped at the root of a rooted path, and is kept otherwise.
    fn clean_by_stack(p: &str) -> String {
        let rooted = p.starts_with('/');
        let mut out: Vec<&str> = Vec::new();
        for c in p.split('/') {
            match c {
                "" | "." => {}
                ".." if out.last().is_some_and(|l| *l != "..") => {
                    out.pop();
                }
                ".." if rooted => {}
                c => out.push(c),
            }
        }
        match (rooted, out.join("/")) {
            (true, j) => format!("/{j}"),
            (false, j) if j.is_empty() => ".".to_owned(),
            (false, j) => j,
        }
    }

    /// Cleaning is idempotent, never leaves `.`, `..` or empty components,
    /// and agrees between the two forms, on generated paths.
    #[test]
    fn cleaning_generated_paths() {
        let atoms = ["a", "b", ".", "..", "", "c.d", "..."];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut p = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % 9) as usize;
            let mut s = seed;
            for i in 0..n {
                if i > 0 || s % 3 == 0 {
                    p.push('/');
                }
                p.push_str(atoms[(s % atoms.len() as u64) as usize]);
                s /= 7;
            }
            let go = clean(&p);
            assert_eq!(go, clean_by_stack(&p), "{p:?}");
            assert_eq!(clean(&go), go, "{p:?}");
            let abs = clean_absolute(&p);
            assert_eq!(clean_absolute(&abs), abs, "{p:?}");
            assert!(
                abs == "/" || abs[1..].split('/').all(|c| !matches!(c, "" | "." | "..")),
                "{p:?} -> {abs:?}"
            );
            if let Some(rel) = clean_relative(&p) {
                assert_eq!(clean_relative(&rel).as_deref(), Some(rel.as_str()));
                assert_eq!(format!("/{rel}"), abs, "{p:?}");
                if !p.starts_with('/') {
                    let dot = if rel.is_empty() { "." } else { rel.as_str() };
                    assert_eq!(go, dot, "{p:?}");
                }
            } else if !p.starts_with('/') {
                assert!(go.starts_with("../") || go == "..", "{p:?} -> {go:?}");
            }
        }
    }
}
