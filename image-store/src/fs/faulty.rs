//! [`FaultyFs`], a test double of the [`Fs`] seam (the `testing` feature):
//! not for production use.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustix::io::Errno;

use super::{Fs, Op, Root, Target};

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
    fn create_dir_all(&self, target: Target, root: &Root, path: &Path) -> io::Result<()> {
        self.check(Op::CreateDir, target)?;
        self.inner.create_dir_all(target, root, path)
    }

    fn open_temp(
        &self,
        target: Target,
        root: &Root,
        path: &Path,
        truncate: bool,
    ) -> io::Result<File> {
        self.check(Op::CreateTemp, target)?;
        self.inner.open_temp(target, root, path, truncate)
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

    fn rename(&self, target: Target, root: &Root, from: &Path, to: &Path) -> io::Result<()> {
        self.check(Op::Rename, target)?;
        self.inner.rename(target, root, from, to)
    }

    fn sync_dir(&self, target: Target, root: &Root, dir: &Path) -> io::Result<()> {
        self.check(Op::SyncDir, target)?;
        self.inner.sync_dir(target, root, dir)
    }

    fn remove_file(&self, target: Target, root: &Root, path: &Path) -> io::Result<()> {
        self.check(Op::RemoveFile, target)?;
        self.inner.remove_file(target, root, path)
    }

    fn remove_dir_all(&self, target: Target, root: &Root, path: &Path) -> io::Result<()> {
        self.check(Op::RemoveDir, target)?;
        self.inner.remove_dir_all(target, root, path)
    }

    fn remove_dir(&self, target: Target, root: &Root, path: &Path) -> io::Result<()> {
        self.check(Op::RemoveDir, target)?;
        self.inner.remove_dir(target, root, path)
    }
}
