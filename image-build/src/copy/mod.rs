//! `COPY` and `ADD`: what a step reads ([`plan`], one walk that also
//! hashes it for the build cache) and the copy itself ([`apply`]) into the
//! mounted root filesystem of the image being built.
//!
//! The rules are BuildKit's: sources relative to the context (or to a
//! stage's or an image's root for `--from`), globs (`*`, `?`, `[...]` within
//! one path element) that must match something, a directory source copies
//! its contents (the destination directory keeps its own metadata: made
//! for the copy, it is 0755 and owned by the `--chown` owner, as BuildKit
//! makes it; subdirectories take their source's), several sources need a destination ending in `/`, a
//! destination relative to the working directory, parents of the
//! destination created (mode 0755, owned by the `--chown` owner), symlinks
//! copied as links, hard links kept within one copy, modes and mtimes kept,
//! owner 0:0 unless `--chown`, `--chmod` on every file and directory
//! copied, `--exclude` patterns, `--parents` (the source's path kept under
//! the destination, from a `/./` pivot when there is one). `ADD` unpacks a
//! local tar archive (plain, gzip, bzip2, xz, zstd)
//! into the destination, keeping `.wh.` files as plain files as Docker's
//! untar does. URL and git sources are not fetched (there is no network):
//! [`remote_digest`] keys them for the build cache, and [`plan`] refuses
//! them ([`CopyError::Remote`]).
//!
//! # Security
//! Every input is hostile. Context sources are resolved beneath the
//! context (an escape is [`CopyError::OutsideContext`]); a `--from` root's
//! sources are resolved inside that root (its symlinks stay in it); the
//! destination's path is resolved inside the destination root, and every
//! entry under it is created without following anything that was there
//! (an existing link is replaced, never written through). Walks are bounded
//! in entries ([`MAX_ENTRIES`]) and depth ([`MAX_DEPTH`]) and visit each
//! file once; an archive's unpack is image-overlay's, with its limits.

mod archive;
mod owner;
mod remote;
mod walk;
mod write;

use std::path::Path;

use image_core::error::{Classify, ErrorKind};
use image_core::Digest;

pub use remote::remote_digest;

use crate::context::Context;
use crate::dockerignore::IgnoreError;

/// The most entries one copy reads.
pub const MAX_ENTRIES: usize = 1_000_000;
/// The deepest directory nesting one copy walks.
pub const MAX_DEPTH: usize = 256;

/// Where a copy reads from.
#[derive(Debug, Clone, Copy)]
pub enum CopySource<'a> {
    /// The build context.
    Context(&'a Context),
    /// A stage's or an image's mounted root filesystem (`--from`).
    Root(&'a Path),
}

/// One `COPY` or `ADD`, already expanded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopySpec {
    /// The sources as written (paths or globs; URLs for `ADD`).
    pub sources: Vec<String>,
    /// The destination; relative to [`workdir`](CopySpec::workdir).
    pub dest: String,
    /// The working directory of the step.
    pub workdir: String,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=mode`, octal or symbolic.
    pub chmod: Option<String>,
    /// `--exclude` patterns (`.dockerignore` rules).
    pub exclude: Vec<String>,
    /// `--parents`.
    pub parents: bool,
    /// `--link`: the copy is the same; the build makes it into an empty
    /// root of its own (see the build's `COPY --link`).
    pub link: bool,
    /// `ADD`: local archives are unpacked, URL and git sources refused.
    pub add: bool,
    /// Heredoc sources (`COPY <<EOF`): name and content.
    pub heredocs: Vec<(String, String)>,
    /// `ADD --checksum` (URLs only, as BuildKit: refused for local files).
    pub checksum: Option<String>,
    /// `ADD --keep-git-dir` (git sources only, which are refused).
    pub keep_git_dir: bool,
}

impl CopySpec {
    /// A plain `COPY` of `sources` to `dest` in `workdir`.
    pub fn new(
        sources: Vec<String>,
        dest: impl Into<String>,
        workdir: impl Into<String>,
    ) -> CopySpec {
        CopySpec {
            sources,
            dest: dest.into(),
            workdir: workdir.into(),
            ..CopySpec::default()
        }
    }
}

/// What a copy will read, hashed; made by [`plan`], used by [`apply`].
#[derive(Debug)]
pub struct CopyPlan {
    /// sha256 over the paths (relative to each source), types, modes,
    /// owners, contents and link targets of everything read, never mtimes.
    pub digest: Digest,
    /// Docker's history form: `file:<hex>`, `dir:<hex>` or `multi:<hex>`.
    pub created_by_source: String,
    items: Vec<walk::Item>,
    entries: Vec<walk::Entry>,
    excluded_any: bool,
}

impl CopyPlan {
    /// True when the ignore rules (or `--exclude`) left out something the
    /// walk met: false means the copy holds all of its sources.
    pub fn excluded_any(&self) -> bool {
        self.excluded_any
    }

    /// How many files, directories and links the copy writes (archives
    /// count as one).
    pub fn entries(&self) -> usize {
        self.entries.len()
    }
}

/// What [`apply`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Entries written (files, directories, links; an archive's entries).
    pub files: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// A failed copy.
#[derive(Debug)]
#[non_exhaustive]
pub enum CopyError {
    /// The build has no context (a Dockerfile from standard input).
    NoContext {
        /// The source.
        source: String,
    },
    /// A source leads out of the context (`..`, a symlink out).
    OutsideContext {
        /// The source.
        source: String,
    },
    /// A source does not exist (or is excluded by `.dockerignore`).
    NotFound {
        /// The source.
        source: String,
    },
    /// A glob matched nothing.
    NoMatch {
        /// The pattern.
        pattern: String,
    },
    /// An `ADD` of a URL or a git repository: no network.
    Remote {
        /// The source.
        source: String,
    },
    /// `ADD --checksum` on a local source.
    ChecksumLocal {
        /// The source.
        source: String,
    },
    /// Several sources and a destination that does not end in `/`.
    DestNotDirectory {
        /// The destination as written.
        dest: String,
    },
    /// A `--chown` that cannot be resolved.
    Chown {
        /// The value.
        spec: String,
        /// Why.
        reason: &'static str,
    },
    /// A `--chmod` that cannot be parsed.
    Chmod {
        /// The value.
        spec: String,
        /// Why.
        reason: &'static str,
    },
    /// An `--exclude` pattern that cannot be compiled.
    Exclude {
        /// The failure.
        source: IgnoreError,
    },
    /// More entries or deeper nesting than the bounds allow.
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// A source file changed between planning and copying.
    Changed {
        /// The path, relative to its source.
        path: String,
    },
    /// A file type a copy cannot make (a socket).
    Unsupported {
        /// The path.
        path: String,
        /// Its type.
        what: &'static str,
    },
    /// A destination entry is a directory where a file goes.
    Conflict {
        /// The destination path.
        path: String,
    },
    /// Reading a source failed.
    Read {
        /// The path, relative to its source.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// Writing the destination failed.
    Write {
        /// The destination path.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// Unpacking an `ADD`ed archive failed.
    Unpack {
        /// The archive, relative to its source.
        source_path: String,
        /// The failure.
        source: image_overlay::UnpackError,
    },
}

impl std::fmt::Display for CopyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use CopyError as E;
        match self {
            E::NoContext { source, .. } => write!(f, "source {source:?} needs a build context, and this build has none"),
            E::OutsideContext { source, .. } => write!(f, "source {source:?} is outside the build context"),
            E::NotFound { source, .. } => write!(f, "source {source:?} not found"),
            E::NoMatch { pattern, .. } => write!(f, "no source files were specified: {pattern:?} matches nothing"),
            E::Remote { source, .. } => write!(f, "ADD of the remote source {source:?} is not supported (no network) and no cache record holds it"),
            E::ChecksumLocal { source, .. } => write!(f, "ADD --checksum applies to URL sources only, not to {source:?}"),
            E::DestNotDirectory { dest, .. } => write!(f, "with more than one source file, the destination {dest:?} must be a directory and end with a /"),
            E::Chown { reason, spec, .. } => write!(f, "--chown={spec}: {reason}"),
            E::Chmod { reason, spec, .. } => write!(f, "--chmod={spec}: {reason}"),
            E::Exclude { .. } => write!(f, "--exclude pattern"),
            E::TooLarge { limit, what, .. } => write!(f, "{what} exceeds the limit of {limit}"),
            E::Changed { path, .. } => write!(f, "source {path:?} changed during the build"),
            E::Unsupported { path, what, .. } => write!(f, "source {path:?} is a {what}, which cannot be copied"),
            E::Conflict { path, .. } => write!(f, "cannot replace the directory {path:?} with a non-directory"),
            E::Read { path, .. } => write!(f, "reading source {path:?}"),
            E::Write { path, .. } => write!(f, "writing {path:?} in the destination"),
            E::Unpack { source_path, .. } => write!(f, "unpacking the archive {source_path:?}"),
        }
    }
}

// By hand rather than derived: `Remote { source }` (the contract's name)
// is a path, which a derive would take for the error's cause.
impl std::error::Error for CopyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CopyError::Exclude { source } => Some(source),
            CopyError::Read { source, .. } | CopyError::Write { source, .. } => Some(source),
            CopyError::Unpack { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Classify for CopyError {
    fn kind(&self) -> ErrorKind {
        use CopyError as E;
        match self {
            E::NotFound { .. } | E::NoMatch { .. } => ErrorKind::NotFound,
            E::OutsideContext { .. } | E::TooLarge { .. } => ErrorKind::Unsafe,
            E::Remote { .. } | E::Unsupported { .. } => ErrorKind::Unsupported,
            E::NoContext { .. }
            | E::ChecksumLocal { .. }
            | E::DestNotDirectory { .. }
            | E::Chown { .. }
            | E::Chmod { .. }
            | E::Exclude { .. } => ErrorKind::InvalidInput,
            E::Changed { .. } | E::Conflict { .. } => ErrorKind::FailedPrecondition,
            E::Read { source, .. } | E::Write { source, .. } => Classify::kind(source),
            E::Unpack { source, .. } => source.kind(),
        }
    }
}

/// Finds and hashes everything `spec` reads from `source`, in one walk.
///
/// # Errors
/// A [`CopyError`]: a missing or escaping source, a glob matching nothing,
/// several sources to a destination without `/`, a remote `ADD`, a bad
/// `--chmod` or `--exclude`, a bound exceeded, a read failure.
pub fn plan(source: &CopySource<'_>, spec: &CopySpec) -> Result<CopyPlan, CopyError> {
    walk::plan(source, spec)
}

/// Copies what `plan` found from `source` into the root filesystem at
/// `dest_root`, following `spec`'s rules. It blocks on file I/O for as long
/// as the copy takes, and needs root (`CAP_CHOWN`, `CAP_MKNOD` for device
/// nodes): every entry is given an owner. Each file's bytes are hashed as
/// they are copied and must be those the plan read.
///
/// # Errors
/// A [`CopyError`]: a `--chown` name not in the destination's databases,
/// a source changed since the plan, a destination conflict, an I/O
/// failure, an archive that does not unpack.
pub fn apply(
    plan: &CopyPlan,
    source: &CopySource<'_>,
    spec: &CopySpec,
    dest_root: &Path,
) -> Result<CopyReport, CopyError> {
    write::apply(plan, source, spec, dest_root)
}
