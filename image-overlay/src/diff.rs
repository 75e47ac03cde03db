//! A layer from the difference between two directory trees.
//!
//! Walks `lower` and `upper` side by side (names sorted within each
//! directory) and writes what turns `lower` into `upper`: entries only in
//! `upper` (with everything below them), entries whose metadata differs
//! (type, mode, owner, size, device, link target, xattrs, mtime to the
//! nanosecond), entries whose metadata is equal but whose content differs
//! (compared only when the mtime has no sub-second part, which a copy may
//! have truncated), and a `.wh.NAME` whiteout for each entry only in `lower`.
//! The parent directories of every change are written too (as containerd
//! does), so that their metadata, mtime included, survives the change.
//!
//! Hardlinks: names of one file written by the layer are one file's entry
//! and hardlink entries to it, as [`crate::pack`] writes them. A new or
//! changed name of a file that also has a name the layer leaves out
//! (unchanged since `lower`) is a hardlink entry to that unchanged name,
//! which the tree the layer is applied to has already: so the link group
//! survives the apply. A first pass over the trees finds those unchanged
//! names (the first in the layer's order when a file has several) before
//! anything is written; a name the layer whites out or replaces is never
//! unchanged, so a file none of whose names is left out is written whole
//! at its first name, as before.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use image_core::{Classify, ErrorKind};
use rustix::fs::{self as rfs, FileType, Mode, OFlags};

use crate::fsops::{self, display_path, Xattrs};
use crate::pack::{open_root, read_err, Node, PackError, PackOptions, PackReport, Packer, Source};
use crate::whiteout;

/// A failed diff.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiffError {
    /// Reading a tree or writing the layer failed.
    #[error(transparent)]
    Pack(#[from] PackError),
    /// Comparing the content of a file failed.
    #[error("comparing {path}")]
    Compare {
        /// The path relative to the trees.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl Classify for DiffError {
    fn kind(&self) -> ErrorKind {
        match self {
            DiffError::Pack(e) => e.kind(),
            DiffError::Compare { source, .. } => Classify::kind(source),
        }
    }
}

/// Writes to `out` a layer that turns the tree `lower` into the tree `upper`.
///
/// # Errors
/// A [`DiffError`] naming the path that failed.
pub fn diff_dirs<W: Write>(
    lower: &Path,
    upper: &Path,
    mut out: W,
    options: &PackOptions,
) -> Result<PackReport, DiffError> {
    diff_core(lower, upper, &mut out, options)
}

fn diff_core(
    lower: &Path,
    upper: &Path,
    out: &mut dyn Write,
    opts: &PackOptions,
) -> Result<PackReport, DiffError> {
    let l = open_root(lower)?;
    let u = open_root(upper)?;
    // Progress and cancellation as in a pack: the tracker sees the layer's
    // bytes and its interrupt stops the next write.
    let mut out = opts.tracker.writer("layer", None, out);
    let mut packer = Packer::new(&mut out, opts, Source::Plain)?;
    let mut linked = Linked::default();
    scan(&packer, l.as_fd(), u.as_fd(), b"", &mut linked)?;
    for (&(dev, ino), path) in &linked.targets {
        packer.link_to_existing(dev, ino, path.clone());
    }
    linked.paths = linked.targets.values().cloned().collect();
    walk(
        &mut packer,
        l.as_fd(),
        u.as_fd(),
        b"",
        &mut Vec::new(),
        &linked,
    )?;
    let report = packer.finish()?;
    out.finish();
    Ok(report)
}

/// What the first pass learns about the non-directories with more than one
/// link that are in both trees.
#[derive(Default)]
struct Linked {
    /// Whether each changed (path -> changed), so that the second pass
    /// neither compares their content again nor decides otherwise.
    changed: HashMap<Vec<u8>, bool>,
    /// (device, inode) of each unchanged one -> its first path in the
    /// layer's order: the hardlink target of the file's other names.
    targets: HashMap<(u64, u64), Vec<u8>>,
    /// The paths of `targets`, sorted.
    paths: BTreeSet<Vec<u8>>,
}

impl Linked {
    /// Fails if the layer would white out or replace `path` while it is,
    /// or something below it is, a hardlink target: an unchanged name never
    /// is, unless the tree changed between the two passes, and the layer
    /// would then link to a name it removes.
    fn check(&self, path: &[u8]) -> Result<(), PackError> {
        if self.paths.is_empty() {
            return Ok(());
        }
        let mut below = path.to_vec();
        below.push(b'/');
        let mut after = path.to_vec();
        after.push(b'/' + 1);
        if self.paths.contains(path) || self.paths.range(below..after).next().is_some() {
            return Err(PackError::FileChanged {
                path: display_path(path),
            });
        }
        Ok(())
    }
}

/// The first pass: walks the directories in both trees, as [`walk`] does,
/// and records into `linked` which non-directories with more than one link
/// changed.
fn scan(
    packer: &Packer<'_, '_>,
    lower: BorrowedFd<'_>,
    upper: BorrowedFd<'_>,
    path: &[u8],
    linked: &mut Linked,
) -> Result<(), DiffError> {
    let lnames = fsops::list_dir(lower).map_err(|e| read_err(path, "list lower", e))?;
    let unames = fsops::list_dir(upper).map_err(|e| read_err(path, "list upper", e))?;
    let mut i = 0;
    for name in &unames {
        while lnames.get(i).is_some_and(|l| l < name) {
            i += 1;
        }
        if lnames.get(i) != Some(name) {
            continue; // only in upper: written whole
        }
        let full = join(path, name);
        let un = Packer::stat(upper, name, &full)?;
        if un.file_type == FileType::Directory {
            let ln = Packer::stat(lower, name, &full)?;
            if ln.file_type == FileType::Directory {
                let lfd = fsops::open_child_dir(lower, name)
                    .map_err(|e| read_err(&full, "open lower", e))?;
                let ufd = fsops::open_child_dir(upper, name)
                    .map_err(|e| read_err(&full, "open upper", e))?;
                scan(packer, lfd.as_fd(), ufd.as_fd(), &full, linked)?;
            }
        } else if un.stat.st_nlink > 1 {
            let ln = Packer::stat(lower, name, &full)?;
            let ch = changed(packer, &ln, &un, lower, upper, name, &full)?;
            if !ch {
                linked
                    .targets
                    .entry((un.stat.st_dev, un.stat.st_ino))
                    .or_insert_with(|| full.clone());
            }
            linked.changed.insert(full, ch);
        }
    }
    Ok(())
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// A directory whose header is written only if something below it changes.
struct Pending {
    fd: OwnedFd,
    path: Vec<u8>,
    stat: rfs::Stat,
}

fn flush(packer: &mut Packer<'_, '_>, pending: &mut Vec<Pending>) -> Result<(), PackError> {
    for p in pending.drain(..) {
        packer.dir_header(p.fd.as_fd(), &p.path, &p.stat)?;
    }
    Ok(())
}

fn walk(
    packer: &mut Packer<'_, '_>,
    lower: BorrowedFd<'_>,
    upper: BorrowedFd<'_>,
    path: &[u8],
    pending: &mut Vec<Pending>,
    linked: &Linked,
) -> Result<(), DiffError> {
    let lnames = fsops::list_dir(lower).map_err(|e| read_err(path, "list lower", e))?;
    let unames = fsops::list_dir(upper).map_err(|e| read_err(path, "list upper", e))?;
    let (mut i, mut j) = (0, 0);
    while i < lnames.len() || j < unames.len() {
        let order = match (lnames.get(i), unames.get(j)) {
            (Some(a), Some(b)) => a.cmp(b),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                // Only in lower: deleted.
                let name = &lnames[i];
                let full = join(path, name);
                linked.check(&full)?;
                let st = Packer::stat(lower, name, &full)?;
                flush(packer, pending)?;
                let mut wh = whiteout::WHITEOUT_PREFIX.as_bytes().to_vec();
                wh.extend_from_slice(name);
                packer.whiteout_entry(path, &wh, &st.stat)?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                linked.check(&join(path, &unames[j]))?;
                flush(packer, pending)?;
                packer.tree(upper, &unames[j], path)?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let name = &unames[j];
                let full = join(path, name);
                let ln = Packer::stat(lower, name, &full)?;
                let un = Packer::stat(upper, name, &full)?;
                if ln.file_type == FileType::Directory && un.file_type == FileType::Directory {
                    let lfd = fsops::open_child_dir(lower, name)
                        .map_err(|e| read_err(&full, "open lower", e))?;
                    let ufd = fsops::open_child_dir(upper, name)
                        .map_err(|e| read_err(&full, "open upper", e))?;
                    let depth = pending.len();
                    if meta_differs(packer, &ln, &un, lower, upper, name, &full)? {
                        flush(packer, pending)?;
                        packer.dir_header(ufd.as_fd(), &full, &un.stat)?;
                    } else {
                        let fd = fsops::open_child_dir(upper, name)
                            .map_err(|e| read_err(&full, "open upper", e))?;
                        pending.push(Pending {
                            fd,
                            path: full.clone(),
                            stat: un.stat,
                        });
                    }
                    walk(packer, lfd.as_fd(), ufd.as_fd(), &full, pending, linked)?;
                    pending.truncate(depth);
                } else if match linked.changed.get(&full) {
                    Some(&ch) => ch,
                    None => changed(packer, &ln, &un, lower, upper, name, &full)?,
                } {
                    linked.check(&full)?;
                    flush(packer, pending)?;
                    packer.tree(upper, name, path)?;
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

fn xattrs_at(
    packer: &Packer<'_, '_>,
    dir: BorrowedFd<'_>,
    name: &[u8],
    node: &Node,
    path: &[u8],
) -> Result<Xattrs, PackError> {
    if !matches!(node.file_type, FileType::Directory | FileType::RegularFile) {
        return Ok(Vec::new());
    }
    let fd = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| read_err(path, "open", e))?;
    packer.xattrs_of(fd.as_fd(), path)
}

#[allow(clippy::too_many_arguments)]
fn meta_differs(
    packer: &Packer<'_, '_>,
    l: &Node,
    u: &Node,
    ldir: BorrowedFd<'_>,
    udir: BorrowedFd<'_>,
    name: &[u8],
    path: &[u8],
) -> Result<bool, PackError> {
    let (a, b) = (&l.stat, &u.stat);
    if l.file_type != u.file_type
        || a.st_mode != b.st_mode
        || a.st_uid != b.st_uid
        || a.st_gid != b.st_gid
        || a.st_mtime != b.st_mtime
        || a.st_mtime_nsec != b.st_mtime_nsec
    {
        return Ok(true);
    }
    match l.file_type {
        FileType::RegularFile if a.st_size != b.st_size => return Ok(true),
        FileType::CharacterDevice | FileType::BlockDevice if a.st_rdev != b.st_rdev => {
            return Ok(true)
        }
        FileType::Symlink => {
            let la = rfs::readlinkat(ldir, name, Vec::new())
                .map_err(|e| read_err(path, "read link", e))?;
            let lb = rfs::readlinkat(udir, name, Vec::new())
                .map_err(|e| read_err(path, "read link", e))?;
            if la != lb {
                return Ok(true);
            }
        }
        _ => {}
    }
    Ok(xattrs_at(packer, ldir, name, l, path)? != xattrs_at(packer, udir, name, u, path)?)
}

#[allow(clippy::too_many_arguments)]
fn changed(
    packer: &Packer<'_, '_>,
    l: &Node,
    u: &Node,
    ldir: BorrowedFd<'_>,
    udir: BorrowedFd<'_>,
    name: &[u8],
    path: &[u8],
) -> Result<bool, DiffError> {
    if meta_differs(packer, l, u, ldir, udir, name, path)? {
        return Ok(true);
    }
    if u.file_type == FileType::RegularFile && u.stat.st_mtime_nsec == 0 {
        return Ok(!same_content(ldir, udir, name, path)?);
    }
    Ok(false)
}

fn same_content(
    ldir: BorrowedFd<'_>,
    udir: BorrowedFd<'_>,
    name: &[u8],
    path: &[u8],
) -> Result<bool, DiffError> {
    let err = |source| DiffError::Compare {
        path: fsops::display_path(path),
        source,
    };
    let open = |dir| {
        rfs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .map_err(|e| err(fsops::io_err(e)))
    };
    let (mut a, mut b) = (open(ldir)?, open(udir)?);
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let n = read_full(&mut a, &mut ba).map_err(err)?;
        let m = read_full(&mut b, &mut bb).map_err(err)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
