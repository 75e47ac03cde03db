//! Hardlinks to files of lower layers, for a layer unpacked in overlay form
//! into a directory of its own.
//!
//! A layer may hardlink a name to a file that an earlier layer created. When
//! layers are flattened onto one directory the target is simply there; when
//! each layer has a directory of its own (overlayfs), it is in a lower
//! layer's directory, and a hardlink cannot cross directories that overlayfs
//! presents as one file system. So the target is looked up in the merged
//! view of the lower directories (nearest first, as overlayfs does: a
//! whiteout deletes, an opaque directory or a non-directory hides what lies
//! below), *copied up* into the layer's own directory (content, owner,
//! mode, xattrs, times, and the lower directories' metadata for parents the
//! layer lacks), and the new name is linked to the copy. The merged view
//! then shows the same content under both names, as the flattened tree does.
//!
//! # Security
//! The lookup walks one component at a time with `O_NOFOLLOW` from each
//! layer's root: a symlink among the parents ends the lookup (the target is
//! then missing), so it never leaves a layer's directory. The file is
//! opened with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` in its
//! lower root, `O_NOFOLLOW | O_NONBLOCK | O_NOCTTY`, and must be the regular
//! file the walk found (same device and inode); anything else is refused.
//! Overlay xattrs (`*.overlay.*`) are never copied. Lower directories are
//! only read.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{self as rfs, FileType, Mode, OFlags, Stat, XattrFlags};
use rustix::io::Errno;

use crate::fsops;
use crate::resolve::{self, PathResolution};
use crate::whiteout::{self, OverlayXattrs};

/// The lower directories of a layer, nearest first, opened on first use.
#[derive(Debug)]
pub(crate) struct Lowers {
    paths: Vec<PathBuf>,
    fds: Option<Vec<OwnedFd>>,
    /// How paths are resolved inside each lower directory.
    resolution: PathResolution,
}

/// One directory of the merged view: which layer provides it, opened.
pub(crate) struct Level {
    /// 0 is the layer's own directory, `n` the n-th lower.
    pub(crate) layer: usize,
    /// The directory, `O_RDONLY|O_DIRECTORY`.
    pub(crate) fd: OwnedFd,
    /// Its metadata.
    pub(crate) stat: Stat,
}

/// What the merged view has at a path.
pub(crate) enum Found {
    /// Nothing: absent, deleted by a whiteout, or hidden.
    Missing,
    /// A directory.
    Directory,
    /// Something other than a regular file, in a lower layer.
    NotRegular,
    /// A regular file of lower layer `layer` (1-based); `parents` are the
    /// topmost directory of each parent component, root excluded.
    Regular {
        layer: usize,
        stat: Stat,
        parents: Vec<Level>,
    },
}

fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

fn is_opaque(dir: BorrowedFd<'_>, ns: OverlayXattrs) -> Result<bool, Errno> {
    Ok(fsops::get_xattr(dir, ns.opaque().as_bytes())?.is_some_and(|v| v == b"y"))
}

impl Lowers {
    /// The lower directories `paths`, nearest first.
    pub(crate) fn new(paths: Vec<PathBuf>, resolution: PathResolution) -> Lowers {
        Lowers {
            paths,
            fds: None,
            resolution,
        }
    }

    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    fn fds(&mut self) -> Result<&[OwnedFd], Errno> {
        if self.fds.is_none() {
            let mut fds = Vec::with_capacity(self.paths.len());
            for p in &self.paths {
                fds.push(rfs::open(
                    p,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?);
            }
            self.fds = Some(fds);
        }
        Ok(self.fds.as_deref().unwrap_or(&[]))
    }

    /// Looks `path` (normalised, not the root) up in the merged view of
    /// `own` (the layer's directory) over the lowers.
    pub(crate) fn lookup(
        &mut self,
        own: BorrowedFd<'_>,
        path: &[u8],
        ns: OverlayXattrs,
    ) -> Result<Found, Errno> {
        let mut cands: Vec<(usize, OwnedFd)> = vec![(
            0,
            fsops::open_real_dir_in_root(own, b"", PathResolution::Auto)?,
        )];
        let own_opaque = is_opaque(cands[0].1.as_fd(), ns)?;
        if !own_opaque {
            for (i, fd) in self.fds()?.iter().enumerate() {
                let root = fsops::open_real_dir_in_root(fd.as_fd(), b"", PathResolution::Auto)?;
                let opaque = is_opaque(root.as_fd(), ns)?;
                cands.push((i + 1, root));
                if opaque {
                    break;
                }
            }
        }
        let comps: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
        let Some((name, dirs)) = comps.split_last() else {
            return Ok(Found::Missing);
        };
        let mut parents = Vec::with_capacity(dirs.len());
        for comp in dirs {
            let mut next: Vec<Level> = Vec::new();
            for (layer, dir) in &cands {
                let Some(st) = fsops::lstat_at(dir.as_fd(), comp)? else {
                    continue;
                };
                if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                    // A whiteout deletes, any other non-directory (a
                    // symlink included) hides everything below.
                    break;
                }
                let fd = fsops::open_child_dir(dir.as_fd(), comp)?;
                let opaque = is_opaque(fd.as_fd(), ns)?;
                next.push(Level {
                    layer: *layer,
                    fd,
                    stat: st,
                });
                if opaque {
                    break;
                }
            }
            let Some(first) = next.first() else {
                return Ok(Found::Missing);
            };
            cands = next
                .iter()
                .map(|l| Ok((l.layer, rustix::io::dup(&l.fd)?)))
                .collect::<Result<_, Errno>>()?;
            parents.push(Level {
                layer: first.layer,
                fd: rustix::io::dup(&first.fd)?,
                stat: first.stat,
            });
        }
        for (layer, dir) in &cands {
            let Some(st) = fsops::lstat_at(dir.as_fd(), name)? else {
                continue;
            };
            return Ok(match FileType::from_raw_mode(st.st_mode) {
                _ if is_whiteout(&st) => Found::Missing,
                FileType::Directory => Found::Directory,
                FileType::RegularFile if *layer > 0 => Found::Regular {
                    layer: *layer,
                    stat: st,
                    parents,
                },
                _ => Found::NotRegular,
            });
        }
        Ok(Found::Missing)
    }

    /// Opens the regular file `path` of lower `layer` (1-based) for
    /// reading, checking it is the file `expected` describes.
    pub(crate) fn open_file(
        &mut self,
        layer: usize,
        path: &[u8],
        expected: &Stat,
    ) -> Result<Option<OwnedFd>, Errno> {
        let resolution = self.resolution;
        let Some(root) = self.fds()?.get(layer.wrapping_sub(1)) else {
            return Err(Errno::NOENT);
        };
        let fd = resolve::open_in_root(
            root.as_fd(),
            path,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
            resolution,
        )?;
        let st = rfs::fstat(&fd)?;
        let same = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
            && st.st_dev == expected.st_dev
            && st.st_ino == expected.st_ino;
        Ok(same.then_some(fd))
    }
}

/// Copies the xattrs of `src` to `dst`, except overlayfs' own; names the
/// destination refuses (unsupported, not permitted) are left out.
pub(crate) fn copy_xattrs(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> Result<(), Errno> {
    for (name, value) in fsops::read_xattrs(src)? {
        if whiteout::is_overlay_xattr(&name) {
            continue;
        }
        match rfs::fsetxattr(dst, &name[..], &value, XattrFlags::empty()) {
            Ok(()) | Err(Errno::NOTSUP) | Err(Errno::PERM) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The file's content, `len` bytes, from `src` into `dst`.
pub(crate) fn copy_content(src: &OwnedFd, dst: &OwnedFd, len: u64) -> Result<(), Errno> {
    crate::snapshot::fsutil::copy_data(src, dst, len)
}
