//! `.dockerignore`: which context paths a build does not see, by Docker's
//! pattern rules (moby/patternmatcher): patterns cleaned as paths with a
//! leading `/` dropped, `*` and `?` within one path element, `**` across
//! elements, `[...]` classes, `\` escapes, `!` exceptions evaluated in
//! order, and a path excluded when it or one of its parent directories
//! matches. The `.dockerignore` file and the Dockerfile may be excluded like
//! any other file (the builder still reads them).
//!
//! # Security
//! The file is read without following a symlink in its last component
//! (`O_NOFOLLOW`), and its size ([`MAX_IGNORE_BYTES`]) and pattern count
//! ([`MAX_PATTERNS`]) are bounded. Matching one pattern is linear in the
//! path's length times the pattern's; a path is matched against the
//! patterns compiled once at parse ([`Ignore::parse`]): repeated patterns
//! kept once (the last, which alone can decide), runs such as `**/**/`
//! made one, and the patterns indexed by the first or last path element
//! they fix, so that a path is tried only against the patterns that can
//! match it, from the last to the first, stopping at the first match.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use image_core::error::{Classify, ErrorKind};
use image_core::path::clean;
use rustix::fs::{Mode, OFlags, CWD};

use crate::glob::Glob;

/// The largest ignore file read, in bytes.
pub const MAX_IGNORE_BYTES: u64 = 1 << 20;
/// The most patterns in one ignore file.
pub const MAX_PATTERNS: usize = 10_000;

/// A failure to read or understand an ignore file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IgnoreError {
    /// A pattern that cannot be compiled.
    #[error("line {line}: pattern {pattern:?}: {reason}")]
    Pattern {
        /// The line, from 1.
        line: usize,
        /// The pattern as written.
        pattern: String,
        /// Why.
        reason: &'static str,
    },
    /// The file or its pattern count is beyond the bounds.
    #[error("{what} exceeds the limit of {limit}")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// The file could not be read (a symlink is refused as ELOOP).
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

impl Classify for IgnoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            IgnoreError::Read { source, .. } => Classify::kind(source),
            _ => ErrorKind::InvalidInput,
        }
    }
}

/// One line of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    /// The cleaned pattern, without its `!`.
    pub text: String,
    /// A `!` exception: matching paths are included again.
    pub exclusion: bool,
    glob: Glob,
}

/// The patterns of an ignore file, in order, and their compiled index.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
    index: Index,
}

impl PartialEq for Ignore {
    fn eq(&self, other: &Ignore) -> bool {
        self.patterns == other.patterns
    }
}

/// The patterns as matching uses them. The last pattern that matches a path
/// decides, so a pattern repeated (after simplifying) is kept at its last
/// place only, and the candidates of a path are tried from the last.
#[derive(Debug, Clone, Default)]
struct Index {
    /// The distinct patterns: place in the file, simplified glob, literal
    /// prefix, exception or not.
    entries: Vec<Entry>,
    /// The entries whose matches all start with this path element.
    by_first: HashMap<String, Vec<usize>>,
    /// The entries whose matches all end with this path element.
    by_last: HashMap<String, Vec<usize>>,
    /// The others, tried on every path.
    general: Vec<usize>,
    /// Whether some entry is an exception (else any match excludes).
    exceptions: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    glob: Glob,
    prefix: String,
    exclusion: bool,
}

impl Index {
    fn new(patterns: &[Pattern]) -> Index {
        let mut seen = HashSet::new();
        let mut last_first: Vec<(Glob, bool)> = Vec::new();
        for p in patterns.iter().rev() {
            let glob = p.glob.simplified();
            if seen.insert(glob.clone()) {
                last_first.push((glob, p.exclusion));
            }
        }
        let mut index = Index::default();
        for (glob, exclusion) in last_first.into_iter().rev() {
            let at = index.entries.len();
            if let Some(first) = glob.first_element() {
                index.by_first.entry(first).or_default().push(at);
            } else if let Some(last) = glob.last_element() {
                index.by_last.entry(last).or_default().push(at);
            } else {
                index.general.push(at);
            }
            index.exceptions |= exclusion;
            index.entries.push(Entry {
                prefix: glob.literal_prefix(),
                glob,
                exclusion,
            });
        }
        index
    }

    /// The verdict of the last entry matching `file` or a parent of it:
    /// excluded unless it is an exception; not excluded when none matches.
    fn is_excluded(&self, file: &str) -> bool {
        let mut candidates: Vec<usize> = self.general.clone();
        let mut elements = file.split('/');
        if let Some(found) = elements.next().and_then(|first| self.by_first.get(first)) {
            candidates.extend(found);
        }
        if !self.by_last.is_empty() {
            let mut named = HashSet::new();
            for element in file.split('/') {
                if named.insert(element) {
                    if let Some(found) = self.by_last.get(element) {
                        candidates.extend(found);
                    }
                }
            }
        }
        if self.exceptions {
            candidates.sort_unstable_by(|a, b| b.cmp(a));
        }
        candidates
            .into_iter()
            .map(|i| &self.entries[i])
            .find(|e| file.starts_with(&e.prefix) && e.glob.matches(file, true))
            .is_some_and(|e| !e.exclusion)
    }
}

impl Ignore {
    /// Reads the text of an ignore file: comments (`#` first on a line) and
    /// blank lines skipped, each pattern trimmed and cleaned.
    pub fn parse(text: &str) -> Result<Ignore, IgnoreError> {
        if text.len() as u64 > MAX_IGNORE_BYTES {
            return Err(IgnoreError::TooLarge {
                what: "the ignore file's size in bytes",
                limit: MAX_IGNORE_BYTES,
            });
        }
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            if raw.starts_with('#') {
                continue;
            }
            let mut p = raw.trim();
            if p.is_empty() {
                continue;
            }
            let exclusion = p.starts_with('!');
            if exclusion {
                p = p[1..].trim();
            }
            let bad = |reason| IgnoreError::Pattern {
                line: i + 1,
                pattern: raw.to_string(),
                reason,
            };
            if p.is_empty() {
                return Err(bad("an exception needs a pattern after '!'"));
            }
            let mut cleaned = clean(p);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let glob = Glob::path(&cleaned).ok_or_else(|| bad("unterminated '[' class"))?;
            if patterns.len() == MAX_PATTERNS {
                return Err(IgnoreError::TooLarge {
                    what: "the number of patterns",
                    limit: MAX_PATTERNS as u64,
                });
            }
            patterns.push(Pattern {
                text: cleaned,
                exclusion,
                glob,
            });
        }
        Ok(Ignore::new(patterns))
    }

    /// The ignore of these patterns, in order.
    pub fn new(patterns: Vec<Pattern>) -> Ignore {
        Ignore {
            index: Index::new(&patterns),
            patterns,
        }
    }

    /// The patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// True when `path` (relative to the context, `/`-separated) is left
    /// out of the build: the last pattern matching it or one of its parent
    /// directories decides.
    pub fn is_excluded(&self, path: &str) -> bool {
        self.index.is_excluded(&clean(path.trim_start_matches('/')))
    }
}

impl Pattern {
    /// True when the pattern matches the whole of `path`.
    pub fn matches(&self, path: &str) -> bool {
        self.glob.matches(path, false)
    }

    /// True when the pattern matches `path` or one of its parent
    /// directories: one pass, the parents are the prefixes before a `/`.
    pub fn matches_or_parent(&self, path: &str) -> bool {
        self.glob.matches(path, true)
    }
}

/// The ignore file of a build, as Docker looks for it: `<name>.dockerignore`
/// next to the Dockerfile (when one is named), else `.dockerignore` at the
/// context's root. Returns the file read and its patterns, or None when
/// neither exists. Neither file is read through a symlink.
pub fn find_ignore_file(
    context: &Path,
    dockerfile: Option<&Path>,
) -> Result<Option<(PathBuf, Ignore)>, IgnoreError> {
    let mut candidates = Vec::new();
    if let Some(df) = dockerfile {
        if let Some(name) = df.file_name() {
            let mut n = name.to_os_string();
            n.push(".dockerignore");
            candidates.push(df.with_file_name(n));
        }
    }
    candidates.push(context.join(".dockerignore"));
    for path in candidates {
        if let Some(text) = read_no_follow(&path)? {
            let ignore = Ignore::parse(&text)?;
            return Ok(Some((path, ignore)));
        }
    }
    Ok(None)
}

fn read_no_follow(path: &Path) -> Result<Option<String>, IgnoreError> {
    let err = |source| IgnoreError::Read {
        path: path.to_path_buf(),
        source,
    };
    let pinned = match rustix::fs::openat(
        CWD,
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(err(e.into())),
    };
    let fd = open_if_regular(&pinned).map_err(err)?;
    let Some(buf) = read_regular(fd, MAX_IGNORE_BYTES).map_err(err)? else {
        return Err(IgnoreError::TooLarge {
            what: "the ignore file's size in bytes",
            limit: MAX_IGNORE_BYTES,
        });
    };
    String::from_utf8(buf)
        .map(Some)
        .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// The file `pinned` (an `O_PATH` descriptor) opened for reading through
/// that descriptor (`/proc/self/fd`: the file looked at, whatever has
/// taken its name since) when it is a regular file; anything else is an
/// [`std::io::ErrorKind::InvalidInput`] error and is never opened (opening
/// a FIFO or a device node has effects: a waiting writer goes on, a tape
/// rewinds, a watchdog starts).
///
/// # Errors
/// Not a regular file; the I/O error of looking at or opening it.
pub(crate) fn open_if_regular(pinned: &OwnedFd) -> std::io::Result<OwnedFd> {
    let mode = rustix::fs::fstat(pinned)?.st_mode;
    if rustix::fs::FileType::from_raw_mode(mode) != rustix::fs::FileType::RegularFile {
        return Err(not_regular());
    }
    let fd = rustix::fs::openat(
        CWD,
        format!("/proc/self/fd/{}", pinned.as_raw_fd()),
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(fd)
}

fn not_regular() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file")
}

/// Reads the regular file open as `fd` (any other type is an error), at
/// most `limit` bytes: None when it holds more.
pub(crate) fn read_regular(fd: OwnedFd, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut file = std::fs::File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    let mut buf = Vec::new();
    (&mut file).take(limit + 1).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= limit).then_some(buf))
}
