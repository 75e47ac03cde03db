//! The build context: the directory a build's `COPY` and `ADD` read from,
//! opened once, with its `.dockerignore` rules.
//!
//! # Security
//! The context is never trusted. Its directory is opened once and every
//! source is resolved from that descriptor with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS)`: a path or a symlink that leads out of it (`..`,
//! an absolute target, a chain of links) fails with `EXDEV` instead of
//! being followed, and the copy reports it as an escape (see
//! [`crate::copy::CopyError::OutsideContext`]).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use image_core::error::{Classify, ErrorKind};
use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;

use crate::dockerignore::{find_ignore_file, open_if_regular, Ignore, IgnoreError};

/// A failure to open a build context.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// The context directory cannot be opened.
    #[error("opening the build context {path}")]
    Open {
        /// The directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The ignore file cannot be read or understood.
    #[error("reading the build context's ignore file")]
    Ignore {
        /// The failure.
        #[source]
        source: IgnoreError,
    },
}

impl Classify for ContextError {
    fn kind(&self) -> ErrorKind {
        match self {
            ContextError::Open { source, .. } => Classify::kind(source),
            ContextError::Ignore { source } => source.kind(),
        }
    }
}

/// The build context directory, opened once, with its ignore rules; or no
/// context at all (a Dockerfile from standard input), from which every
/// `COPY` fails clearly.
#[derive(Debug)]
pub struct Context {
    inner: Option<Opened>,
}

#[derive(Debug)]
struct Opened {
    path: PathBuf,
    dir: OwnedFd,
    ignore: Ignore,
    ignore_file: Option<PathBuf>,
}

impl Context {
    /// Opens the context directory `dir` and reads its ignore rules:
    /// `<Dockerfile>.dockerignore` next to a named `dockerfile` when it
    /// exists, else `.dockerignore` at the context's root (Docker's order).
    ///
    /// # Errors
    /// [`ContextError::Open`] when `dir` is not a directory (the path the
    /// user names is followed, as Docker does; nothing inside it is);
    /// [`ContextError::Ignore`] for an unreadable or invalid ignore file.
    pub fn open(dir: &Path, dockerfile: Option<&Path>) -> Result<Context, ContextError> {
        let fd = rustix::fs::openat(
            CWD,
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ContextError::Open {
            path: dir.to_path_buf(),
            source: e.into(),
        })?;
        let (ignore_file, ignore) = match find_ignore_file(dir, dockerfile)
            .map_err(|source| ContextError::Ignore { source })?
        {
            Some((file, ignore)) => (Some(file), ignore),
            None => (None, Ignore::default()),
        };
        Ok(Context {
            inner: Some(Opened {
                path: dir.to_path_buf(),
                dir: fd,
                ignore,
                ignore_file,
            }),
        })
    }

    /// No context: a build whose Dockerfile came from standard input.
    pub fn none() -> Context {
        Context { inner: None }
    }

    /// The context directory as it was named, or None for no context.
    pub fn path(&self) -> Option<&Path> {
        self.inner.as_ref().map(|o| o.path.as_path())
    }

    /// The ignore file that was read, if any.
    pub fn ignore_file(&self) -> Option<&Path> {
        self.inner.as_ref().and_then(|o| o.ignore_file.as_deref())
    }

    /// The ignore rules (empty without a file or a context).
    pub fn ignore(&self) -> Option<&Ignore> {
        self.inner.as_ref().map(|o| &o.ignore)
    }

    /// The open context directory, or None for no context.
    pub fn dir(&self) -> Option<BorrowedFd<'_>> {
        self.inner.as_ref().map(|o| o.dir.as_fd())
    }

    /// True when `path` (relative to the context, `/`-separated) is left
    /// out of the build by the ignore rules.
    pub fn is_excluded(&self, path: &str) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|o| o.ignore.is_excluded(path))
    }
}

/// The name of the Dockerfile a build reads from its context when none is
/// named.
pub const DEFAULT_DOCKERFILE: &str = "Dockerfile";

/// Opens [`DEFAULT_DOCKERFILE`] in the context directory `dir` as the
/// context's files are read: resolved beneath `dir` (a link out of it, or
/// a magic link, is refused, not followed), and only when it is a regular
/// file, looked at before it is opened for reading (a FIFO would block the
/// build for ever, and opening a device node can have effects).
///
/// # Errors
/// The I/O error; a link out of the context and anything but a regular
/// file are [`std::io::ErrorKind::InvalidInput`].
pub fn open_dockerfile(dir: &Path) -> std::io::Result<File> {
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let root = rustix::fs::openat(
        CWD,
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let mut tries = 0;
    let pinned = loop {
        let flags = OFlags::PATH | OFlags::CLOEXEC;
        match rustix::fs::openat2(&root, DEFAULT_DOCKERFILE, flags, Mode::empty(), how) {
            // A rename elsewhere on the system raced the lookup.
            Err(Errno::AGAIN) if tries < 63 => tries += 1,
            Err(Errno::XDEV) => {
                return Err(invalid("is a link that leads out of the build context"))
            }
            r => break r?,
        }
    };
    Ok(File::from(open_if_regular(&pinned)?))
}
