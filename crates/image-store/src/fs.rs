//! The file-system seam: every mutation the on-disk store makes.
//!
//! [`OciDir`](crate::OciDir) creates, writes, syncs, renames and removes
//! files only through an [`Fs`]. [`RealFs`] performs the calls;
//! [`FaultyFs`] fails a chosen call with a chosen `errno` (ENOSPC, EIO,
//! ...) so tests can check that every step of an ingest or an index update
//! fails cleanly; a wrapper of one's own can report each step (the crash
//! test does). Each call names its [`Target`], the kind of file touched.
//! Reads do not go through the seam.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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
    fn create_dir_all(&self, target: Target, path: &Path) -> io::Result<()>;

    /// Opens a file for reading and appending, creating it when missing,
    /// emptying it when `truncate`.
    ///
    /// # Errors
    /// The system call's error.
    fn open_temp(&self, target: Target, path: &Path, truncate: bool) -> io::Result<File>;

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
    fn rename(&self, target: Target, from: &Path, to: &Path) -> io::Result<()>;

    /// Flushes the directory `dir` (its entries) to stable storage.
    ///
    /// # Errors
    /// The system call's error.
    fn sync_dir(&self, target: Target, dir: &Path) -> io::Result<()>;

    /// Removes a file.
    ///
    /// # Errors
    /// The system call's error.
    fn remove_file(&self, target: Target, path: &Path) -> io::Result<()>;

    /// Removes a directory and everything in it.
    ///
    /// # Errors
    /// The system call's error.
    fn remove_dir_all(&self, target: Target, path: &Path) -> io::Result<()>;

    /// Removes an empty directory (`rmdir`).
    ///
    /// # Errors
    /// The system call's error (`ENOTEMPTY` when it is not empty).
    fn remove_dir(&self, target: Target, path: &Path) -> io::Result<()>;
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
    fn create_dir_all(&self, _: Target, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn open_temp(&self, _: Target, path: &Path, truncate: bool) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(path)
            .and_then(|f| {
                if truncate {
                    f.set_len(0)?;
                }
                Ok(f)
            })
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

    fn rename(&self, _: Target, from: &Path, to: &Path) -> io::Result<()> {
        rustix::fs::rename(from, to).map_err(io::Error::from)
    }

    fn sync_dir(&self, _: Target, dir: &Path) -> io::Result<()> {
        let fd = rustix::fs::open(
            dir,
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        rustix::fs::fsync(&fd).map_err(io::Error::from)
    }

    fn remove_file(&self, _: Target, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir_all(&self, _: Target, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }

    fn remove_dir(&self, _: Target, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
}

/// A seam that fails one chosen call and passes the others to another seam.
///
/// A fault matches an [`Op`], optionally a [`Target`], and fires on the
/// `nth` matching call (0 for the first), once, or on every matching call
/// from then on when [`sticky`](FaultyFs::sticky) is set.
#[derive(Debug)]
pub struct FaultyFs {
    inner: Arc<dyn Fs>,
    fault: Mutex<Option<Fault>>,
    hits: AtomicUsize,
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    op: Op,
    target: Option<Target>,
    nth: usize,
    errno: Errno,
    seen: usize,
    sticky: bool,
}

impl FaultyFs {
    /// A seam that passes every call to `inner` until a fault is armed.
    pub fn new(inner: Arc<dyn Fs>) -> FaultyFs {
        FaultyFs {
            inner,
            fault: Mutex::new(None),
            hits: AtomicUsize::new(0),
        }
    }

    /// Fails the `nth` call of `op` on `target` (any target when `None`) with `errno`.
    pub fn arm(&self, op: Op, target: Option<Target>, nth: usize, errno: Errno) {
        *self.lock() = Some(Fault {
            op,
            target,
            nth,
            errno,
            seen: 0,
            sticky: false,
        });
    }

    /// Like [`arm`](FaultyFs::arm), and keeps failing every later matching call.
    pub fn sticky(&self, op: Op, target: Option<Target>, nth: usize, errno: Errno) {
        self.arm(op, target, nth, errno);
        if let Some(f) = self.lock().as_mut() {
            f.sticky = true;
        }
    }

    /// Removes the fault.
    pub fn disarm(&self) {
        *self.lock() = None;
    }

    /// How many calls the fault has failed.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Fault>> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self, op: Op, target: Target) -> io::Result<()> {
        let mut g = self.lock();
        if let Some(f) = g.as_mut() {
            if f.op == op && f.target.is_none_or(|t| t == target) {
                let n = f.seen;
                f.seen += 1;
                if n == f.nth || (f.sticky && n > f.nth) {
                    self.hits.fetch_add(1, Ordering::SeqCst);
                    return Err(io::Error::from(f.errno));
                }
            }
        }
        Ok(())
    }
}

impl Fs for FaultyFs {
    fn create_dir_all(&self, target: Target, path: &Path) -> io::Result<()> {
        self.check(Op::CreateDir, target)?;
        self.inner.create_dir_all(target, path)
    }

    fn open_temp(&self, target: Target, path: &Path, truncate: bool) -> io::Result<File> {
        self.check(Op::CreateTemp, target)?;
        self.inner.open_temp(target, path, truncate)
    }

    fn write(&self, target: Target, file: &mut File, buf: &[u8]) -> io::Result<usize> {
        self.check(Op::Write, target)?;
        self.inner.write(target, file, buf)
    }

    fn set_len(&self, target: Target, file: &File, len: u64) -> io::Result<()> {
        self.check(Op::SetLen, target)?;
        self.inner.set_len(target, file, len)
    }

    fn sync_file(&self, target: Target, file: &File) -> io::Result<()> {
        self.check(Op::SyncFile, target)?;
        self.inner.sync_file(target, file)
    }

    fn rename(&self, target: Target, from: &Path, to: &Path) -> io::Result<()> {
        self.check(Op::Rename, target)?;
        self.inner.rename(target, from, to)
    }

    fn sync_dir(&self, target: Target, dir: &Path) -> io::Result<()> {
        self.check(Op::SyncDir, target)?;
        self.inner.sync_dir(target, dir)
    }

    fn remove_file(&self, target: Target, path: &Path) -> io::Result<()> {
        self.check(Op::RemoveFile, target)?;
        self.inner.remove_file(target, path)
    }

    fn remove_dir_all(&self, target: Target, path: &Path) -> io::Result<()> {
        self.check(Op::RemoveDir, target)?;
        self.inner.remove_dir_all(target, path)
    }

    fn remove_dir(&self, target: Target, path: &Path) -> io::Result<()> {
        self.check(Op::RemoveDir, target)?;
        self.inner.remove_dir(target, path)
    }
}
