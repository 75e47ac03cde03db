//! The allow list: findings a user has accepted, by path glob or by
//! fingerprint.
//!
//! One entry per line; `#` starts a comment line; a line
//! `fingerprint:HEX` (or a bare 16-digit hex fingerprint) accepts that one
//! finding; any other line is a glob over the finding's path (`*` and `?`
//! within one path component, `**` across components), e.g.
//! `/usr/share/doc/**` or `/etc/ssl/private/*.pem`.

use std::path::{Path, PathBuf};

use image_core::{Classify, ErrorKind};

/// The most bytes of an allow-list file read.
pub const MAX_ALLOW_FILE: u64 = 1 << 20;
/// The longest glob accepted (and path matched: a longer path matches no
/// glob; Linux's `PATH_MAX` is 4096).
pub const MAX_GLOB: usize = 4096;

/// Errors reading an allow list.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AllowListError {
    /// The file could not be read.
    #[error("reading allow list {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_ALLOW_FILE`].
    #[error("allow list {path} is larger than {max} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: u64,
    },
    /// A line is not an entry.
    #[error("allow list line {line}: {reason}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

impl Classify for AllowListError {
    fn kind(&self) -> ErrorKind {
        match self {
            AllowListError::Read { source, .. } => Classify::kind(source),
            AllowListError::TooLarge { .. } | AllowListError::BadLine { .. } => {
                ErrorKind::InvalidInput
            }
        }
    }
}

/// Accepted findings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    globs: Vec<Vec<u8>>,
    fingerprints: Vec<String>,
}

impl AllowList {
    /// Parses the text of an allow list.
    ///
    /// # Errors
    /// [`AllowListError::BadLine`] for a glob longer than [`MAX_GLOB`] or an
    /// empty fingerprint.
    pub fn parse(text: &str) -> Result<AllowList, AllowListError> {
        let mut list = AllowList::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason| AllowListError::BadLine {
                line: i + 1,
                reason,
            };
            if let Some(fp) = line.strip_prefix("fingerprint:") {
                let fp = fp.trim();
                if fp.is_empty() || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad("a fingerprint is hex digits"));
                }
                list.fingerprints.push(fp.to_ascii_lowercase());
            } else if line.len() == 16 && line.bytes().all(|b| b.is_ascii_hexdigit()) {
                list.fingerprints.push(line.to_ascii_lowercase());
            } else if line.len() > MAX_GLOB {
                return Err(bad("glob longer than 4096 bytes"));
            } else {
                list.globs.push(line.as_bytes().to_vec());
            }
        }
        Ok(list)
    }

    /// Reads and parses an allow-list file (a regular file, at most
    /// [`MAX_ALLOW_FILE`] bytes).
    ///
    /// # Errors
    /// [`AllowListError`].
    pub fn read(path: &Path) -> Result<AllowList, AllowListError> {
        use std::io::Read;
        let read = |source| AllowListError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        let mut text = String::new();
        file.take(MAX_ALLOW_FILE + 1)
            .read_to_string(&mut text)
            .map_err(read)?;
        if text.len() as u64 > MAX_ALLOW_FILE {
            return Err(AllowListError::TooLarge {
                path: path.to_owned(),
                max: MAX_ALLOW_FILE,
            });
        }
        AllowList::parse(&text)
    }

    /// Whether a finding with this path and fingerprint is accepted.
    pub fn allows(&self, path: Option<&str>, fingerprint: &str) -> bool {
        self.fingerprints.iter().any(|f| f == fingerprint)
            || path.is_some_and(|p| {
                p.len() <= MAX_GLOB && self.globs.iter().any(|g| glob_match(g, p.as_bytes()))
            })
    }
}

/// Whether `text` matches `glob` (`*`, `?`: not `/`; `**`: anything).
/// Dynamic programming over the two: O(len(glob) * len(text)), both
/// bounded by [`MAX_GLOB`].
pub(crate) fn glob_match(glob: &[u8], text: &[u8]) -> bool {
    // reach[j]: the glob consumed so far matches text[..j].
    let mut reach = vec![false; text.len() + 1];
    reach[0] = true;
    let mut i = 0;
    while i < glob.len() {
        let mut next = vec![false; text.len() + 1];
        match glob[i] {
            b'*' if glob.get(i + 1) == Some(&b'*') => {
                let mut on = false;
                for j in 0..=text.len() {
                    on |= reach[j];
                    next[j] = on;
                }
                i += 1;
            }
            b'*' => {
                let mut on = false;
                for j in 0..=text.len() {
                    on = reach[j] || (on && text[j - 1] != b'/');
                    next[j] = on;
                }
            }
            c => {
                for j in 1..=text.len() {
                    let t = text[j - 1];
                    next[j] = reach[j - 1] && (t == c || (c == b'?' && t != b'/'));
                }
            }
        }
        reach = next;
        i += 1;
    }
    reach[text.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"/etc/*.pem", b"/etc/a.pem"));
        assert!(!glob_match(b"/etc/*.pem", b"/etc/x/a.pem"));
        assert!(glob_match(b"/usr/share/doc/**", b"/usr/share/doc/a/b/c"));
        assert!(glob_match(b"/tmp/?ass", b"/tmp/pass"));
        assert!(!glob_match(b"/tmp/pass", b"/tmp/pas"));
        assert!(glob_match(b"**", b""));
    }

    #[test]
    fn parse_and_allow() {
        let l = AllowList::parse("# ok\n/srv/**\nfingerprint:ABCDEF0123456789\n0011223344556677\n")
            .unwrap();
        assert!(l.allows(Some("/srv/x/key.pem"), "ff"));
        assert!(l.allows(None, "abcdef0123456789"));
        assert!(l.allows(None, "0011223344556677"));
        assert!(!l.allows(Some("/etc/x"), "ff"));
        assert!(AllowList::parse("fingerprint:zz").is_err());
    }
}
