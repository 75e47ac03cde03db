//! Lexical path cleaning for the paths images and archives name: the one
//! cleaner of the family. Nothing here touches a file system; a caller that
//! opens the result still resolves it without following symlinks.

/// The components of `path` (split on `/`) with empty and `.` components
/// dropped and each `..` taking back the component before it; `true` when
/// a `..` had nothing to take back (the path climbs above where it starts).
fn components(path: &str) -> (Vec<&str>, bool) {
    let mut parts: Vec<&str> = Vec::new();
    let mut climbs = false;
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => climbs |= parts.pop().is_none(),
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
    (!climbs).then(|| parts.join("/"))
}

/// `path` cleaned as an absolute path (a working directory, a mount
/// point): `/a/./b/../c` and `a/b/../c` are `/a/c`; a `..` at the root
/// stays at the root (`/../x` is `/x`), as Go's `path.Clean` does.
pub fn clean_absolute(path: &str) -> String {
    let (parts, _) = components(path);
    format!("/{}", parts.join("/"))
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
            let abs = clean_absolute(&p);
            assert_eq!(clean_absolute(&abs), abs, "{p:?}");
            assert!(
                abs == "/" || abs[1..].split('/').all(|c| !matches!(c, "" | "." | "..")),
                "{p:?} -> {abs:?}"
            );
            if let Some(rel) = clean_relative(&p) {
                assert_eq!(clean_relative(&rel).as_deref(), Some(rel.as_str()));
                assert_eq!(format!("/{rel}"), abs, "{p:?}");
            }
        }
    }
}
