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

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use image_core::error::{Classify, ErrorKind};
use image_overlay::resolve::{open_in_root, PathResolution};
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

/// The name read instead of [`DEFAULT_DOCKERFILE`] when the context has
/// none by that name (Docker's CLI does the same).
pub const DEFAULT_DOCKERFILE_LOWER: &str = "dockerfile";

/// Opens `path` (relative to the directory `root`) resolved beneath
/// `root`: `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, where a
/// link out of `root` fails with `EXDEV` and a magic link is not followed;
/// where the kernel has no `openat2` (`ENOSYS`: before Linux 5.6; `EPERM`:
/// a seccomp profile that refuses calls it does not know, as older
/// Docker's did), or `resolution` is [`PathResolution::ComponentWalk`],
/// image-overlay's walk of one component at a time, which keeps every
/// link inside `root` (one out of it resolves as if `root` were `/`). An
/// empty path opens `root`. `O_CLOEXEC` is always added.
///
/// # Errors
/// The errno of the failing step.
pub(crate) fn open_beneath(
    root: BorrowedFd<'_>,
    path: &[u8],
    flags: OFlags,
    resolution: PathResolution,
) -> Result<OwnedFd, Errno> {
    if resolution == PathResolution::Auto {
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        let p = Path::new(OsStr::from_bytes(path));
        // `None`: no openat2 here (missing, or refused by a seccomp
        // filter); the in-root walk below.
        if let Some(opened) = image_store::fs::openat2_or_none(root, p, flags, Mode::empty(), how) {
            return opened;
        }
    }
    open_in_root(
        root,
        path,
        flags,
        Mode::empty(),
        PathResolution::ComponentWalk,
    )
}

/// Opens the context's Dockerfile when none is named: [`DEFAULT_DOCKERFILE`]
/// in the context directory `dir`, or [`DEFAULT_DOCKERFILE_LOWER`] when
/// there is nothing by the first name (Docker's CLI looks for both, in
/// that order), read as the context's files are: resolved beneath `dir`
/// (`open_beneath`: a link out of it, or a magic link, is refused, not
/// followed), and only when it is a regular file, looked at before it is
/// opened for reading (a FIFO would block the build for ever, and opening
/// a device node can have effects).
///
/// # Errors
/// The I/O error (`NotFound` when neither name is there); a link out of
/// the context and anything but a regular file are
/// [`std::io::ErrorKind::InvalidInput`].
pub fn open_dockerfile(dir: &Path) -> std::io::Result<File> {
    open_dockerfile_with(dir, PathResolution::Auto)
}

/// [`open_dockerfile`] with the resolution given (a test forces the walk
/// that stands in for a missing `openat2`).
pub(crate) fn open_dockerfile_with(
    dir: &Path,
    resolution: PathResolution,
) -> std::io::Result<File> {
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let root = rustix::fs::openat(
        CWD,
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let open = |name: &str| open_beneath(root.as_fd(), name.as_bytes(), OFlags::PATH, resolution);
    let pinned = match open(DEFAULT_DOCKERFILE) {
        Err(Errno::NOENT) => open(DEFAULT_DOCKERFILE_LOWER),
        r => r,
    };
    let pinned = match pinned {
        Err(Errno::XDEV) => return Err(invalid("is a link that leads out of the build context")),
        r => r?,
    };
    Ok(File::from(open_if_regular(&pinned)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read(dir: &Path, res: PathResolution) -> std::io::Result<String> {
        let mut s = String::new();
        open_dockerfile_with(dir, res)?.read_to_string(&mut s)?;
        Ok(s)
    }

    /// Where `openat2` is missing (`ENOSYS`, or `EPERM` from a seccomp
    /// profile) the context's Dockerfile is opened by the component walk
    /// (forced here as the kernel cannot be made to lack the call): read
    /// as before, a link out of the context resolved inside it (here: to
    /// nothing) instead of to the host's file, a FIFO refused unopened,
    /// the lowercase name taken when there is no `Dockerfile`.
    #[test]
    fn the_dockerfile_is_opened_by_the_walk_without_openat2() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "FROM host\n").unwrap();
        let walk = PathResolution::ComponentWalk;
        let df = ctx.join(DEFAULT_DOCKERFILE);
        std::fs::write(ctx.join("inside"), "FROM inside\n").unwrap();
        std::os::unix::fs::symlink("/inside", &df).unwrap();
        assert_eq!(read(&ctx, walk).unwrap(), "FROM inside\n");
        std::fs::remove_file(&df).unwrap();
        for link in [outside.clone(), "../outside".into()] {
            std::os::unix::fs::symlink(&link, &df).unwrap();
            let e = read(&ctx, walk).expect_err("a link out");
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{link:?}: {e}");
            std::fs::remove_file(&df).unwrap();
        }
        let made = std::process::Command::new("mkfifo")
            .arg(&df)
            .status()
            .unwrap();
        assert!(made.success());
        let e = read(&ctx, walk).expect_err("a FIFO");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
        std::fs::remove_file(&df).unwrap();
        std::fs::write(ctx.join(DEFAULT_DOCKERFILE_LOWER), "FROM lower\n").unwrap();
        assert_eq!(read(&ctx, walk).unwrap(), "FROM lower\n");
        assert_eq!(read(&ctx, PathResolution::Auto).unwrap(), "FROM lower\n");
    }
}
