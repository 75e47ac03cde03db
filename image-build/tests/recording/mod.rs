//! A store seam that records every mutation, by kind and target, for the
//! tests of the cache's writes and syncs.

use std::fs::File;
use std::path::Path;

use image_store::fs::{Fs, Op, RealFs, Root, Target};

/// A seam that records every mutation of the store, by kind and target.
#[derive(Debug, Default)]
pub struct Recording {
    calls: std::sync::Mutex<Vec<(Op, Target)>>,
}

impl Recording {
    fn note(&self, op: Op, target: Target) {
        self.calls.lock().expect("calls").push((op, target));
    }

    /// The calls so far, in order; the record starts anew.
    pub fn take(&self) -> Vec<(Op, Target)> {
        std::mem::take(&mut *self.calls.lock().expect("calls"))
    }
}

impl Fs for Recording {
    fn create_dir_all(&self, t: Target, r: &Root, p: &Path) -> std::io::Result<()> {
        self.note(Op::CreateDir, t);
        RealFs.create_dir_all(t, r, p)
    }
    fn open_temp(&self, t: Target, r: &Root, p: &Path, truncate: bool) -> std::io::Result<File> {
        self.note(Op::CreateTemp, t);
        RealFs.open_temp(t, r, p, truncate)
    }
    fn write(&self, t: Target, f: &mut File, buf: &[u8]) -> std::io::Result<usize> {
        self.note(Op::Write, t);
        RealFs.write(t, f, buf)
    }
    fn set_len(&self, t: Target, f: &File, len: u64) -> std::io::Result<()> {
        self.note(Op::SetLen, t);
        RealFs.set_len(t, f, len)
    }
    fn sync_file(&self, t: Target, f: &File) -> std::io::Result<()> {
        self.note(Op::SyncFile, t);
        RealFs.sync_file(t, f)
    }
    fn rename(&self, t: Target, r: &Root, from: &Path, to: &Path) -> std::io::Result<()> {
        self.note(Op::Rename, t);
        RealFs.rename(t, r, from, to)
    }
    fn sync_dir(&self, t: Target, r: &Root, d: &Path) -> std::io::Result<()> {
        self.note(Op::SyncDir, t);
        RealFs.sync_dir(t, r, d)
    }
    fn remove_file(&self, t: Target, r: &Root, p: &Path) -> std::io::Result<()> {
        self.note(Op::RemoveFile, t);
        RealFs.remove_file(t, r, p)
    }
    fn remove_dir_all(&self, t: Target, r: &Root, p: &Path) -> std::io::Result<()> {
        self.note(Op::RemoveDir, t);
        RealFs.remove_dir_all(t, r, p)
    }
    fn remove_dir(&self, t: Target, r: &Root, p: &Path) -> std::io::Result<()> {
        self.note(Op::RemoveDir, t);
        RealFs.remove_dir(t, r, p)
    }
}
