//! The file-system seam: every mutation the on-disk store makes.
//!
//! [`OciDir`](crate::OciDir) creates, writes, syncs, renames and removes
//! files only through an [`Fs`]. [`RealFs`] performs the calls;
//! `FaultyFs` (a test double, with the `testing` feature) fails a chosen call with a chosen `errno` (ENOSPC, EIO,
//! ...) so tests can check that every step of an ingest or an index update
//! fails cleanly; a wrapper of one's own can report each step (the crash
//! test does). Each call names its [`Target`], the kind of file touched,
//! and the store's [`Root`], the directory opened once: [`RealFs`]
//! resolves every path inside it without following a symlink, so a link
//! planted in a layout (`blobs/sha256 -> /elsewhere`) is refused instead
//! of written through. Reads do not go through the seam; they use the
//! same [`Root`] ([`Root::open_regular`], [`Root::read_regular`]), which
//! also refuses anything that is not a regular file (a FIFO, a device)
//! having only looked at it (`O_PATH`): a device node is never opened.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use image_core::{Classify, ErrorKind};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// One kind of call of the seam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// `mkdir -p`.
    CreateDir,
    /// Create (or open for appending) a temporary file.
    CreateTemp,
    /// Write bytes to a file.
    Write,
    /// Truncate a file.
    SetLen,
    /// `fsync` a file.
    SyncFile,
    /// `rename` into place.
    Rename,
    /// `fsync` a directory.
    SyncDir,
    /// Remove a file.
    RemoveFile,
    /// Remove a directory (a tree, or an empty one).
    RemoveDir,
}

impl Op {
    /// Every operation, in the order an ingest performs them.
    pub const ALL: [Op; 9] = [
        Op::CreateDir,
        Op::CreateTemp,
        Op::Write,
        Op::SetLen,
        Op::SyncFile,
        Op::Rename,
        Op::SyncDir,
        Op::RemoveFile,
        Op::RemoveDir,
    ];
}

/// What kind of file a seam call touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// An ingest's data or its directory, or a blob being published.
    Blob,
    /// `index.json` (its temporary file, the rename, the directory sync).
    Index,
    /// A lease file.
    Lease,
    /// The layout skeleton (`oci-layout`, `blobs/`) and anything else.
    Layout,
}

/// The mutations the on-disk store performs, one method per system call.
pub trait Fs: Send + Sync + fmt::Debug {
    /// Creates a directory and its parents.
    ///
    /// # Errors
    /// The system call's error.
    fn create_dir_all(&self, target: Target, root: &Root, path: &Path) -> io::Result<()>;

    /// Opens a file for reading and appending, creating it when missing,
    /// emptying it when `truncate`.
    ///
    /// # Errors
    /// The system call's error.
    fn open_temp(
        &self,
        target: Target,
        root: &Root,
        path: &Path,
        truncate: bool,
    ) -> io::Result<File>;

    /// Writes some of `buf` to `file`, returning how much.
    ///
    /// # Errors
    /// The system call's error.
    fn write(&self, target: Target, file: &mut File, buf: &[u8]) -> io::Result<usize>;

    /// Truncates `file` to `len` bytes.
    ///
    /// # Errors
    /// The system call's error.
    fn set_len(&self, target: Target, file: &File, len: u64) -> io::Result<()>;

    /// Flushes `file`'s data to stable storage (`fsync`).
    ///
    /// # Errors
    /// The system call's error.
    fn sync_file(&self, target: Target, file: &File) -> io::Result<()>;

    /// Renames `from` to `to`, replacing `to` atomically.
    ///
    /// # Errors
    /// The system call's error.
    fn rename(&self, target: Target, root: &Root, from: &Path, to: &Path) -> io::Result<()>;

    /// Flushes the directory `dir` (its entries) to stable storage.
    ///
    /// # Errors
    /// The system call's error.
    fn sync_dir(&self, target: Target, root: &Root, dir: &Path) -> io::Result<()>;

    /// Removes a file.
    ///
    /// # Errors
    /// The system call's error.
    fn remove_file(&self, target: Target, root: &Root, path: &Path) -> io::Result<()>;

    /// Removes a directory and everything in it.
    ///
    /// # Errors
    /// The system call's error.
    fn remove_dir_all(&self, target: Target, root: &Root, path: &Path) -> io::Result<()>;

    /// Removes an empty directory (`rmdir`).
    ///
    /// # Errors
    /// The system call's error (`ENOTEMPTY` when it is not empty).
    fn remove_dir(&self, target: Target, root: &Root, path: &Path) -> io::Result<()>;
}

/// Writes all of `buf` through the seam.
pub(crate) fn write_all(
    fs: &dyn Fs,
    target: Target,
    file: &mut File,
    mut buf: &[u8],
) -> io::Result<()> {
    while !buf.is_empty() {
        match fs.write(target, file, buf) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0")),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The seam that performs the system calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

impl Fs for RealFs {
    fn create_dir_all(&self, _: Target, root: &Root, path: &Path) -> io::Result<()> {
        let rel = root.relative(path)?;
        let mut cur: Option<OwnedFd> = None;
        for name in names(rel).map_err(|e| root.refused(path, e))? {
            let at = cur.as_ref().map_or(root.fd.as_fd(), |f| f.as_fd());
            match rfs::mkdirat(at, name, Mode::from_raw_mode(0o777)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(root.refused(path, e)),
            }
            cur = Some(step(at, name).map_err(|e| root.refused(path, e))?);
        }
        Ok(())
    }

    fn open_temp(&self, _: Target, root: &Root, path: &Path, truncate: bool) -> io::Result<File> {
        let fd = root.open_or_create_regular(path, OFlags::RDWR | OFlags::APPEND)?;
        let file = File::from(fd);
        if truncate {
            file.set_len(0)?;
        }
        Ok(file)
    }

    fn write(&self, _: Target, file: &mut File, buf: &[u8]) -> io::Result<usize> {
        file.write(buf)
    }

    fn set_len(&self, _: Target, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    fn sync_file(&self, _: Target, file: &File) -> io::Result<()> {
        rustix::fs::fsync(file).map_err(io::Error::from)
    }

    fn rename(&self, _: Target, root: &Root, from: &Path, to: &Path) -> io::Result<()> {
        let (from_dir, from_name) = root.parent(from)?;
        let (to_dir, to_name) = root.parent(to)?;
        rfs::renameat(&from_dir, &from_name, &to_dir, &to_name).map_err(io::Error::from)
    }

    fn sync_dir(&self, _: Target, root: &Root, dir: &Path) -> io::Result<()> {
        let fd = root.open_at(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        rustix::fs::fsync(&fd).map_err(io::Error::from)
    }

    fn remove_file(&self, _: Target, root: &Root, path: &Path) -> io::Result<()> {
        let (dir, name) = root.parent(path)?;
        rfs::unlinkat(&dir, &name, AtFlags::empty()).map_err(io::Error::from)
    }

    fn remove_dir_all(&self, _: Target, root: &Root, path: &Path) -> io::Result<()> {
        let (dir, name) = root.parent(path)?;
        remove_tree(dir.as_fd(), &name, 0).map_err(|e| match e {
            // A link is removed, never followed: `ELOOP` is the depth bound.
            Errno::LOOP => RefusedFile::TooDeep {
                path: path.to_path_buf(),
                limit: MAX_REMOVE_DEPTH,
            }
            .into_io(),
            e => root.refused(path, e),
        })
    }

    fn remove_dir(&self, _: Target, root: &Root, path: &Path) -> io::Result<()> {
        let (dir, name) = root.parent(path)?;
        rfs::unlinkat(&dir, &name, AtFlags::REMOVEDIR).map_err(io::Error::from)
    }
}

/// The deepest tree [`RealFs::remove_dir_all`] removes (the store's own
/// trees are two levels deep; anything deeper was not made by it).
const MAX_REMOVE_DEPTH: usize = 16;

/// Removes `name` in `dir`, a file or a directory tree, without following
/// a symlink anywhere (a link is removed, never its target).
fn remove_tree(dir: BorrowedFd<'_>, name: &OsStr, depth: usize) -> Result<(), Errno> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        r => return r,
    }
    if depth >= MAX_REMOVE_DEPTH {
        return Err(Errno::LOOP);
    }
    let fd = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut children = Vec::new();
    for entry in rfs::Dir::read_from(&fd)? {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            children.push(OsStr::from_bytes(n).to_owned());
        }
    }
    for child in &children {
        remove_tree(fd.as_fd(), child, depth + 1)?;
    }
    rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// Why the store refused a file inside its directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RefusedFile {
    /// The path, or a directory on the way to it, is a symbolic link: the
    /// store follows none inside its directory.
    #[error("{}: a symbolic link on the way, which the store does not follow", path.display())]
    Symlink {
        /// The path asked for.
        path: PathBuf,
    },
    /// Something on the way to the path that should be a directory is not
    /// one (a file, a FIFO where `blobs/` belongs).
    #[error("{}: a file on the way where a directory belongs", path.display())]
    NotADirectory {
        /// The path asked for.
        path: PathBuf,
    },
    /// The path names something other than a regular file (a FIFO, a
    /// device, a directory, a socket).
    #[error("{}: a {found}, not a regular file", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is.
        found: &'static str,
    },
    /// A tree to remove is deeper than the store ever makes one, and than
    /// it descends.
    #[error("{}: a tree deeper than {limit} levels, not the store's", path.display())]
    TooDeep {
        /// The tree.
        path: PathBuf,
        /// The deepest the store descends.
        limit: usize,
    },
    /// The file holds more bytes than the limit for reading it.
    #[error("{}: larger than the limit of {limit} bytes", path.display())]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
}

impl Classify for RefusedFile {
    fn kind(&self) -> ErrorKind {
        match self {
            RefusedFile::Symlink { .. }
            | RefusedFile::NotADirectory { .. }
            | RefusedFile::NotRegular { .. }
            | RefusedFile::TooDeep { .. } => ErrorKind::Unsafe,
            RefusedFile::TooLarge { .. } => ErrorKind::FailedPrecondition,
        }
    }
}

impl RefusedFile {
    /// The [`RefusedFile`] an I/O error carries, when it carries one.
    pub fn from_io(e: &io::Error) -> Option<&RefusedFile> {
        e.get_ref().and_then(|i| i.downcast_ref::<RefusedFile>())
    }

    /// The error as an I/O error (`InvalidData`), to travel through the seam.
    pub fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

/// The [`RefusedFile`] inside `e`, or `e` itself when it carries none.
pub(crate) fn split_refused(e: io::Error) -> Result<RefusedFile, io::Error> {
    if RefusedFile::from_io(&e).is_none() {
        return Err(e);
    }
    let kind = e.kind();
    match e.into_inner() {
        Some(inner) => inner
            .downcast::<RefusedFile>()
            .map(|b| *b)
            .map_err(|i| io::Error::new(kind, i)),
        None => Err(io::Error::from(kind)),
    }
}

/// The class of an I/O error of the store: that of the [`RefusedFile`] it
/// carries, else the I/O error's own.
pub(crate) fn io_kind(e: &io::Error) -> ErrorKind {
    RefusedFile::from_io(e).map_or_else(|| Classify::kind(e), Classify::kind)
}

/// A store's directory, opened once. Every path inside it is resolved
/// from this descriptor without following a symbolic link (the directory
/// itself may be reached through one: that was the caller's choice when
/// naming it), and a file is only read when it is a regular file.
///
/// Resolution uses `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where
/// the kernel has it (Linux 5.6+) and otherwise a walk of one component at
/// a time, each opened `O_PATH | O_NOFOLLOW` relative to the one before.
#[derive(Debug)]
pub struct Root {
    path: PathBuf,
    fd: OwnedFd,
    walk: bool,
}

/// Writes `path` (inside `root`) atomically and durably: a temporary file
/// beside it (`.<name>.tmp-<pid>`), the bytes, fsync, rename over `path`,
/// fsync of the directory; the one atomic write of the family. Every step
/// resolves inside `root` without following a symlink (a symlink planted at
/// the temporary name or in a parent is refused, never written through),
/// and goes through `fs`, so that a test can fail any of them; on failure
/// the temporary file is removed and `path` is as it was. Threads of one
/// process writing the same `path` take turns on its temporary name.
///
/// # Errors
/// The first failing step's error.
pub fn write_file_atomic(
    fs: &dyn Fs,
    root: &Root,
    target: Target,
    path: &Path,
    bytes: &[u8],
) -> io::Result<()> {
    write_file_atomic_with(fs, root, target, path, |w| w.write_all(bytes), |e| e)
}

/// [`write_file_atomic`] of what `fill` writes, streamed (every write
/// through `fs`): the file appears whole at `path` once `fill` succeeds,
/// or not at all. `io_err` turns a step's error into `fill`'s error type.
///
/// # Errors
/// `fill`'s error, or the first failing step's error through `io_err`.
pub fn write_file_atomic_with<E>(
    fs: &dyn Fs,
    root: &Root,
    target: Target,
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> Result<(), E>,
    io_err: impl Fn(io::Error) -> E,
) -> Result<(), E> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _in_use = TempInUse::claim(&tmp);
    let result = (|| {
        let mut f = fs.open_temp(target, root, &tmp, true).map_err(&io_err)?;
        {
            let mut through = io::BufWriter::with_capacity(
                1 << 16,
                SeamWriter {
                    fs,
                    target,
                    file: &mut f,
                },
            );
            fill(&mut through)?;
            through.flush().map_err(&io_err)?;
        }
        fs.sync_file(target, &f).map_err(&io_err)?;
        drop(f);
        fs.rename(target, root, &tmp, path).map_err(&io_err)?;
        fs.sync_dir(target, root, dir).map_err(&io_err)
    })();
    if result.is_err() && matches!(root.stat(&tmp), Ok(Some(_))) {
        let _ = RealFs.remove_file(target, root, &tmp);
    }
    result
}

/// A file written through the [`Fs`] seam.
struct SeamWriter<'a> {
    fs: &'a dyn Fs,
    target: Target,
    file: &'a mut File,
}

impl Write for SeamWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.fs.write(self.target, self.file, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A temporary name of [`write_file_atomic`] held by one writer of this
/// process: the pid keeps the name apart from other processes, and this
/// claim from other threads writing the same file (who would otherwise
/// append into one temporary file and rename it from under each other).
struct TempInUse(PathBuf);

/// The temporary names claimed now, and the wake-up of their waiters.
static TEMPS_IN_USE: (std::sync::Mutex<Vec<PathBuf>>, std::sync::Condvar) =
    (std::sync::Mutex::new(Vec::new()), std::sync::Condvar::new());

impl TempInUse {
    /// Waits until no other thread holds `tmp`, then holds it until dropped.
    fn claim(tmp: &Path) -> TempInUse {
        let (lock, freed) = &TEMPS_IN_USE;
        let mut held = lock.lock().unwrap_or_else(|p| p.into_inner());
        while held.iter().any(|t| t == tmp) {
            held = freed.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        held.push(tmp.to_path_buf());
        TempInUse(tmp.to_path_buf())
    }
}

impl Drop for TempInUse {
    fn drop(&mut self) {
        let (lock, freed) = &TEMPS_IN_USE;
        let mut held = lock.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|t| *t != self.0);
        freed.notify_all();
    }
}

/// Whether `openat2` is known to be unavailable to this process: missing
/// (`ENOSYS`: Linux before 5.6) or refused by a seccomp filter (`ENOSYS`
/// or `EPERM`). Set once by [`openat2_or_none`], for every crate of the
/// family that resolves paths with it.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens `path` relative to the directory `dir` with `openat2(2)` and the
/// resolution `how` (`O_CLOEXEC` added to `flags`), for a caller that has
/// a walk of its own to fall back on: `None` when `openat2` is
/// unavailable to this process, so the caller walks instead.
///
/// Unavailable means missing (`ENOSYS`: Linux before 5.6) or refused by
/// a seccomp filter, which answers a call it does not know with `ENOSYS`
/// (Docker's default profile since 20.10, Podman's) or `EPERM` (older
/// profiles, and filters written by hand). An `EPERM` can also be the
/// path's own answer (an immutable file opened for writing, `O_NOATIME`
/// on another's file): a second `openat2`, of `dir` itself with nothing
/// asked, tells the two apart, and the path's `EPERM` is returned as it
/// is. Unavailability is remembered for the process, so later calls
/// return `None` at once; the store, the layer unpacker and the build
/// context share it.
///
/// `EAGAIN` (a rename or mount anywhere raced the lookup; `openat2(2)`
/// says to retry) is retried up to 63 times, then returned.
///
/// Blocks for the system call; needs no privilege.
///
/// # Example
/// ```
/// use image_store::fs::openat2_or_none;
/// use rustix::fs::{Mode, OFlags, ResolveFlags};
///
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("file"), b"x")?;
/// let root = rustix::fs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
/// let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
/// match openat2_or_none(&root, "file".as_ref(), OFlags::RDONLY, Mode::empty(), how) {
///     Some(opened) => drop(opened?),
///     None => { /* no openat2 here: walk one component at a time */ }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn openat2_or_none(
    dir: impl AsFd,
    path: &Path,
    flags: OFlags,
    mode: Mode,
    how: ResolveFlags,
) -> Option<Result<OwnedFd, Errno>> {
    if NO_OPENAT2.load(Ordering::Relaxed) {
        return None;
    }
    let dir = dir.as_fd();
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let mut tries = 0;
    loop {
        match rfs::openat2(dir, path, flags | OFlags::CLOEXEC, mode, how) {
            Err(Errno::AGAIN) if tries < 63 => tries += 1,
            Err(Errno::NOSYS) => break,
            Err(Errno::PERM) => {
                let probe = rfs::openat2(
                    dir,
                    ".",
                    OFlags::PATH | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::empty(),
                );
                match probe {
                    Err(Errno::PERM | Errno::NOSYS) => break,
                    _ => return Some(Err(Errno::PERM)),
                }
            }
            r => return Some(r),
        }
    }
    NO_OPENAT2.store(true, Ordering::Relaxed);
    None
}

impl Root {
    /// Opens the directory `path` (following a symlink there).
    ///
    /// # Errors
    /// The system call's error (`NotFound` when it does not exist).
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            path: path.to_path_buf(),
            fd,
            walk: false,
        })
    }

    /// Like [`open`](Root::open), always resolving by the component walk
    /// (the fallback for kernels without `openat2`), for tests.
    ///
    /// # Errors
    /// As [`open`](Root::open).
    pub fn open_walking(path: &Path) -> io::Result<Root> {
        Ok(Root {
            walk: true,
            ..Root::open(path)?
        })
    }

    /// Writes `path` (inside this directory, named from [`Root::path`] as
    /// every path given to a `Root` is) atomically and durably, with no
    /// symlink followed: [`write_file_atomic`] through the real file system.
    ///
    /// # Errors
    /// As [`write_file_atomic`].
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        write_file_atomic(&RealFs, self, Target::Layout, path, bytes)
    }

    /// [`write_atomic`](Root::write_atomic) of what `fill` streams: see
    /// [`write_file_atomic_with`].
    ///
    /// # Errors
    /// As [`write_file_atomic_with`].
    pub fn write_atomic_with<E>(
        &self,
        path: &Path,
        fill: impl FnOnce(&mut dyn Write) -> Result<(), E>,
        io_err: impl Fn(io::Error) -> E,
    ) -> Result<(), E> {
        write_file_atomic_with(&RealFs, self, Target::Layout, path, fill, io_err)
    }

    /// The directory as named.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path` relative to the directory; `path` must be inside it.
    fn relative<'a>(&self, path: &'a Path) -> io::Result<&'a Path> {
        path.strip_prefix(&self.path).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not inside the store {}",
                    path.display(),
                    self.path.display()
                ),
            )
        })
    }

    /// The I/O error for `errno` on `path`: a [`RefusedFile::Symlink`] for
    /// the errors of a symlink met on the way, a
    /// [`RefusedFile::NotADirectory`] for a file where a directory belongs
    /// (the store's directories are never anything else).
    fn refused(&self, path: &Path, errno: Errno) -> io::Error {
        match errno {
            Errno::LOOP | Errno::XDEV => RefusedFile::Symlink {
                path: path.to_path_buf(),
            }
            .into_io(),
            Errno::NOTDIR => RefusedFile::NotADirectory {
                path: path.to_path_buf(),
            }
            .into_io(),
            e => io::Error::from(e),
        }
    }

    /// Opens `path` (inside the directory) with `flags`, following no
    /// symlink. `O_NOFOLLOW` and `O_CLOEXEC` are always added.
    pub(crate) fn open_at(&self, path: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let rel = self.relative(path)?;
        open_beneath(self.fd.as_fd(), rel, flags, mode, self.walk)
            .map_err(|e| self.refused(path, e))
    }

    /// The directory holding `path`, opened without following a symlink,
    /// and `path`'s last component.
    fn parent(&self, path: &Path) -> io::Result<(OwnedFd, OsString)> {
        let rel = self.relative(path)?;
        let name = rel.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} names no file in the store", path.display()),
            )
        })?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        let dir = open_beneath(
            self.fd.as_fd(),
            parent,
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
            self.walk,
        )
        .map_err(|e| self.refused(path, e))?;
        Ok((dir, name.to_owned()))
    }

    /// Opens the regular file `path` with `flags` (`O_RDWR`, `O_APPEND`),
    /// creating it when it does not exist. A new file is created
    /// exclusively; an existing one is looked at (`O_PATH`) before it is
    /// opened, so a symlink, a FIFO or a device node there is refused
    /// without being opened.
    ///
    /// # Errors
    /// [`RefusedFile`] inside an I/O error; the system call's error.
    pub(crate) fn open_or_create_regular(&self, path: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        let (dir, name) = self.parent(path)?;
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rfs::openat(
            &dir,
            &name,
            flags | OFlags::CREATE | OFlags::EXCL,
            Mode::from_raw_mode(0o666),
        ) {
            Ok(fd) => Ok(fd),
            Err(Errno::EXIST) => {
                let look = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let at = rfs::openat(&dir, &name, look, Mode::empty())
                    .map_err(|e| self.refused(path, e))?;
                reopen_regular(at, path, flags, || {
                    rfs::openat(&dir, &name, flags | OFlags::NONBLOCK, Mode::empty())
                })
                .map_err(|e| refused_file(self, path, e))
            }
            Err(e) => Err(self.refused(path, e)),
        }
    }

    /// Facts about `path` without following a symlink: `None` when it does
    /// not exist.
    ///
    /// # Errors
    /// [`RefusedFile::Symlink`] when it or a directory on the way is a
    /// symlink; the system call's error.
    pub fn stat(&self, path: &Path) -> io::Result<Option<rfs::Stat>> {
        let fd = match self.open_at(path, OFlags::PATH, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let st = rfs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            return Err(RefusedFile::Symlink {
                path: path.to_path_buf(),
            }
            .into_io());
        }
        Ok(Some(st))
    }

    /// Whether `file` is what `path` names now (not removed or replaced
    /// since it was opened), looking at `path` without following a symlink.
    pub(crate) fn holds(&self, file: &File, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), self.stat(path)) {
            (Ok(a), Ok(Some(b))) => a.dev() == b.st_dev && a.ino() == b.st_ino,
            _ => false,
        }
    }

    /// Opens the regular file `path` for reading and returns it with its
    /// size. A FIFO is opened without blocking and refused like any other
    /// file that is not regular.
    ///
    /// # Errors
    /// [`RefusedFile`] inside an I/O error; the system call's error.
    pub fn open_regular(&self, path: &Path) -> io::Result<(File, u64)> {
        let at = self.open_at(path, OFlags::PATH, Mode::empty())?;
        let fd = reopen_regular(at, path, OFlags::RDONLY, || {
            let rel = self.relative(path).map_err(|_| Errno::INVAL)?;
            open_beneath(
                self.fd.as_fd(),
                rel,
                OFlags::RDONLY | OFlags::NONBLOCK,
                Mode::empty(),
                self.walk,
            )
        })
        .map_err(|e| refused_file(self, path, e))?;
        let size = rfs::fstat(&fd)?.st_size;
        Ok((File::from(fd), u64::try_from(size).unwrap_or(0)))
    }

    /// Reads the whole regular file `path`, refusing more than `limit`
    /// bytes (checked against its size first, then while reading, in case
    /// it grows).
    ///
    /// # Errors
    /// [`RefusedFile`] inside an I/O error; the system call's error.
    pub fn read_regular(&self, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
        let too_large = || {
            RefusedFile::TooLarge {
                path: path.to_path_buf(),
                limit,
            }
            .into_io()
        };
        let (file, size) = self.open_regular(path)?;
        if size > limit {
            return Err(too_large());
        }
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(limit.saturating_add(1)).read_to_end(&mut out)?;
        if out.len() as u64 > limit {
            return Err(too_large());
        }
        Ok(out)
    }
}

/// An error of [`reopen_regular`] as the store reports it.
fn refused_file(root: &Root, path: &Path, e: io::Error) -> io::Error {
    if RefusedFile::from_io(&e).is_some() {
        return e;
    }
    match e.raw_os_error() {
        Some(n) => root.refused(path, Errno::from_raw_os_error(n)),
        None => e,
    }
}

/// Opens with `flags` the file that `at` (an `O_PATH` descriptor) names,
/// when it is a regular file: anything else (a symlink, a FIFO, a device)
/// is refused having only been looked at, never opened, since opening a
/// device node can act on the device. The file is opened again through
/// `/proc/self/fd`, which names the very inode; without `/proc`, `again`
/// resolves the path anew (`O_NONBLOCK`, cleared after) and the result
/// must be the same inode.
fn reopen_regular(
    at: OwnedFd,
    path: &Path,
    flags: OFlags,
    again: impl FnOnce() -> Result<OwnedFd, Errno>,
) -> io::Result<OwnedFd> {
    let st = rfs::fstat(&at)?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => {}
        FileType::Symlink => {
            return Err(RefusedFile::Symlink {
                path: path.to_path_buf(),
            }
            .into_io())
        }
        other => {
            return Err(RefusedFile::NotRegular {
                path: path.to_path_buf(),
                found: type_name(other),
            }
            .into_io())
        }
    }
    // The magic link must be followed: it is what names the inode.
    let flags = flags.difference(OFlags::NOFOLLOW) | OFlags::NOCTTY | OFlags::CLOEXEC;
    let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&at));
    match rfs::open(proc_path.as_str(), flags, Mode::empty()) {
        Ok(fd) => return Ok(fd),
        Err(Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    // No /proc: a file swapped in between is opened, but refused.
    let fd = again()?;
    let now = rfs::fstat(&fd)?;
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
        return Err(RefusedFile::NotRegular {
            path: path.to_path_buf(),
            found: type_name(FileType::from_raw_mode(now.st_mode)),
        }
        .into_io());
    }
    rfs::fcntl_setfl(&fd, flags & OFlags::APPEND)?;
    Ok(fd)
}

/// What a file of this type is called in messages.
pub(crate) fn type_name(file_type: FileType) -> &'static str {
    match file_type {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Fifo => "FIFO",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Socket => "socket",
        FileType::Symlink => "symbolic link",
        _ => "special file",
    }
}

/// The names of `rel`, which may hold no `..` and be no absolute path.
fn names(rel: &Path) -> Result<Vec<&OsStr>, Errno> {
    rel.components()
        .filter(|c| *c != Component::CurDir)
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(Errno::XDEV),
        })
        .collect()
}

/// Opens the directory `name` in `at` (`O_PATH`) when it is one: `ELOOP`
/// for a symlink, `ENOTDIR` for anything else.
fn step(at: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    let fd = rfs::openat(
        at,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    match FileType::from_raw_mode(rfs::fstat(&fd)?.st_mode) {
        FileType::Directory => Ok(fd),
        FileType::Symlink => Err(Errno::LOOP),
        _ => Err(Errno::NOTDIR),
    }
}

/// Opens `rel` below `dir` with no symlink followed on the way or at its
/// end (an `O_PATH` open of a final symlink gives the link), and no `..`:
/// `ELOOP` for a symlink, `EXDEV` for `..`.
fn open_beneath(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    mode: Mode,
    walk: bool,
) -> Result<OwnedFd, Errno> {
    match open_beneath_once(dir, rel, flags, mode, walk) {
        // `O_DIRECTORY | O_NOFOLLOW` on a final symlink fails ENOTDIR: tell
        // a link from a file, since only the link is hostile.
        Err(Errno::NOTDIR) if flags.contains(OFlags::DIRECTORY) => {
            let fd = open_beneath_once(dir, rel, OFlags::PATH, Mode::empty(), walk)?;
            match FileType::from_raw_mode(rfs::fstat(&fd)?.st_mode) {
                FileType::Symlink => Err(Errno::LOOP),
                _ => Err(Errno::NOTDIR),
            }
        }
        r => r,
    }
}

fn open_beneath_once(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    mode: Mode,
    walk: bool,
) -> Result<OwnedFd, Errno> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    // `..` is refused before the kernel sees it, with either resolution.
    let names = names(rel)?;
    if !walk {
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
        if let Some(opened) = openat2_or_none(dir, rel, flags, mode, how) {
            return opened;
        }
    }
    let Some((last, parents)) = names.split_last() else {
        return rfs::openat(dir, ".", flags, mode);
    };
    let mut cur: Option<OwnedFd> = None;
    for name in parents {
        let at = cur.as_ref().map_or(dir, |f| f.as_fd());
        cur = Some(step(at, name)?);
    }
    let at = cur.as_ref().map_or(dir, |f| f.as_fd());
    rfs::openat(at, *last, flags, mode)
}

#[cfg(feature = "testing")]
mod faulty;
#[cfg(feature = "testing")]
pub use faulty::FaultyFs;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// An `EPERM` that is the path's own answer (an immutable file opened
    /// for writing) comes back as it is, and `openat2` is not taken for
    /// missing: the next open of the same directory still uses it (a
    /// link at the end is refused with `ELOOP` by `RESOLVE_NO_SYMLINKS`,
    /// where the caller's walk would be asked instead). Needs root
    /// (`CAP_LINUX_IMMUTABLE`) and a filesystem with the flag.
    #[test]
    fn a_paths_own_eperm_is_not_taken_for_a_missing_openat2() {
        if !image_testsupport::tools::root("an immutable file") {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("locked");
        std::fs::write(&file, b"kept").expect("write");
        symlink("locked", dir.path().join("link")).expect("symlink");
        let f = File::open(&file).expect("open");
        // The file's own flags kept (on ext4, extents), as chattr does.
        let flags = rfs::ioctl_getflags(&f).unwrap_or(rfs::IFlags::empty());
        if let Err(e) = rfs::ioctl_setflags(&f, flags | rfs::IFlags::IMMUTABLE) {
            // No CAP_LINUX_IMMUTABLE (a user namespace's root), or a
            // filesystem without the flag.
            image_testsupport::tools::skip_or_fail(&format!("an immutable file: chattr +i: {e}"));
            return;
        }
        let root = rfs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
            .expect("open the directory");
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
        let opened = openat2_or_none(
            &root,
            Path::new("locked"),
            OFlags::WRONLY,
            Mode::empty(),
            how,
        );
        let then = openat2_or_none(&root, Path::new("link"), OFlags::RDONLY, Mode::empty(), how);
        rfs::ioctl_setflags(&f, flags).expect("chattr -i");
        assert!(
            matches!(opened, Some(Err(Errno::PERM))),
            "the file's EPERM: {opened:?}"
        );
        assert!(
            matches!(then, Some(Err(Errno::LOOP))),
            "openat2 still used after the file's EPERM: {then:?}"
        );
    }

    /// A tree with links on the way and at the end, a FIFO, and a target
    /// outside the root that must never be read or written.
    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("d/e")).expect("mkdir");
        std::fs::create_dir(&outside).expect("mkdir");
        std::fs::write(root.join("d/e/f"), b"inside").expect("write");
        std::fs::write(outside.join("f"), b"outside").expect("write");
        symlink(&outside, root.join("out")).expect("link");
        symlink("e", root.join("d/rel")).expect("link");
        symlink(outside.join("f"), root.join("d/file-link")).expect("link");
        symlink("/dev/zero", root.join("zero")).expect("link");
        rfs::mknodat(
            rfs::CWD,
            root.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .expect("mkfifo");
        (dir, root, outside)
    }

    fn roots(path: &Path) -> [Root; 2] {
        [
            Root::open(path).expect("open"),
            Root::open_walking(path).expect("open"),
        ]
    }

    fn refused(e: &io::Error) -> &'static str {
        match RefusedFile::from_io(e) {
            Some(RefusedFile::Symlink { .. }) => "symlink",
            Some(RefusedFile::NotRegular { .. }) => "not regular",
            Some(RefusedFile::TooLarge { .. }) => "too large",
            Some(RefusedFile::NotADirectory { .. }) => "not a directory",
            Some(RefusedFile::TooDeep { .. }) => "too deep",
            None => "other",
        }
    }

    #[test]
    fn reads_follow_no_link_with_openat2_and_with_the_walk() {
        let (_d, root, _) = tree();
        for r in roots(&root) {
            let walk = r.walk;
            let p = |s: &str| root.join(s);
            assert_eq!(r.read_regular(&p("d/e/f"), 100).expect("read"), b"inside");
            for link in ["out/f", "d/rel/f", "d/file-link", "zero"] {
                let e = r.read_regular(&p(link), 100).expect_err(link);
                assert_eq!(refused(&e), "symlink", "{link} (walk {walk}): {e}");
                let e = r.stat(&p(link)).expect_err(link);
                assert_eq!(refused(&e), "symlink", "{link} (walk {walk}): {e}");
            }
            let e = r.open_regular(&p("fifo")).expect_err("fifo");
            assert_eq!(refused(&e), "not regular", "walk {walk}: {e}");
            let e = r.read_regular(&p("d/e/f"), 3).expect_err("limit");
            assert_eq!(refused(&e), "too large", "walk {walk}: {e}");
            assert!(r.stat(&p("d/missing")).expect("stat").is_none());
            let e = r.stat(&p("d/../d/e/f")).expect_err("dotdot");
            assert_eq!(refused(&e), "symlink", "walk {walk}: {e}");
            let e = r.stat(Path::new("/etc/passwd")).expect_err("outside");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "walk {walk}: {e}");
        }
    }

    #[test]
    fn mutations_follow_no_link_with_openat2_and_with_the_walk() {
        let (_d, root, outside) = tree();
        for r in roots(&root) {
            let walk = r.walk;
            let p = |s: &str| root.join(s);
            let fs = RealFs;
            let t = Target::Layout;
            let e = fs
                .create_dir_all(t, &r, &p("out/new/dir"))
                .expect_err("mkdir");
            assert_eq!(refused(&e), "symlink", "walk {walk}: {e}");
            let e = fs
                .open_temp(t, &r, &p("out/tmp"), true)
                .expect_err("create");
            assert_eq!(refused(&e), "symlink", "walk {walk}: {e}");
            let e = fs
                .open_temp(t, &r, &p("d/file-link"), true)
                .expect_err("create");
            assert_eq!(refused(&e), "symlink", "walk {walk}: {e}");
            let e = fs.open_temp(t, &r, &p("fifo"), false).expect_err("fifo");
            assert_eq!(refused(&e), "not regular", "walk {walk}: {e}");
            let e = fs
                .rename(t, &r, &p("d/e/f"), &p("out/f"))
                .expect_err("rename");
            assert_eq!(refused(&e), "symlink", "walk {walk}: {e}");
            let e = fs.remove_file(t, &r, &p("out/f")).expect_err("unlink");
            assert_eq!(refused(&e), "symlink", "walk {walk}: {e}");
            let e = fs.sync_dir(t, &r, &p("out")).expect_err("sync");
            assert_eq!(refused(&e), "symlink", "walk {walk}: {e}");

            fs.create_dir_all(t, &r, &p("a/b/c")).expect("mkdir inside");
            let mut f = fs.open_temp(t, &r, &p("a/b/c/x"), true).expect("create");
            write_all(&fs, t, &mut f, b"x").expect("write");
            symlink(&outside, p("a/b/link")).expect("link");
            fs.remove_dir_all(t, &r, &p("a")).expect("rm -r");
            assert!(!p("a").exists());
        }
        // Nothing outside was touched; the links are where they were.
        assert_eq!(std::fs::read(outside.join("f")).expect("read"), b"outside");
        assert_eq!(std::fs::read_dir(&outside).expect("ls").count(), 1);
        assert!(root.join("out").is_symlink());
    }
}
