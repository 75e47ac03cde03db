//! Filesystem operations relative to directory descriptors.
//!
//! Everything here works on a directory file descriptor and a single name
//! (or a path resolved inside the root of an unpack: `openat2` with
//! `RESOLVE_IN_ROOT`, or a careful walk of one component at a time where
//! the kernel lacks it), never on host paths joined from strings. Nothing
//! follows a symbolic link in the last component.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::resolve::{self, PathResolution};

/// Extended attributes as (name, value) pairs, sorted by name.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Opens the directory `path` (components separated by `/`, already
/// normalised) under `root`, resolving symlinks as if `root` were `/`.
/// An empty path opens the root itself. The result is an `O_PATH` handle,
/// usable as the directory of `*at` calls.
pub(crate) fn open_dir_in_root(
    root: BorrowedFd<'_>,
    path: &[u8],
    resolution: PathResolution,
) -> Result<OwnedFd, Errno> {
    resolve::open_in_root(
        root,
        path,
        OFlags::PATH | OFlags::DIRECTORY,
        Mode::empty(),
        resolution,
    )
}

/// Opens `path` under `root` for reading its metadata and setting it
/// (`O_RDONLY|O_DIRECTORY|O_NOFOLLOW`), resolving inside the root.
pub(crate) fn open_real_dir_in_root(
    root: BorrowedFd<'_>,
    path: &[u8],
    resolution: PathResolution,
) -> Result<OwnedFd, Errno> {
    resolve::open_in_root(
        root,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
        Mode::empty(),
        resolution,
    )
}

/// Opens the child directory `name` of `dir` without following a symlink.
pub(crate) fn open_child_dir(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `lstat` of `name` in `dir`; `None` when it does not exist.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Option<rfs::Stat>, Errno> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The names in a directory, without `.` and `..`, sorted bytewise.
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    let mut d = rfs::Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(ent) = d.read() {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        names.push(name.to_vec());
    }
    names.sort_unstable();
    Ok(names)
}

/// Removes `name` from `dir` and, if it is a directory, everything below
/// it. Never follows a symlink; a missing name is success.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {
            // EPERM is what some filesystems return for unlink of a directory.
            let sub = match open_child_dir(dir, name) {
                Ok(fd) => fd,
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                    return rfs::unlinkat(dir, name, AtFlags::empty());
                }
                Err(e) => return Err(e),
            };
            clear_dir(sub.as_fd(), &mut |_| false)?;
            match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Removes every entry of `dir` for which `keep` is false.
pub(crate) fn clear_dir(
    dir: BorrowedFd<'_>,
    keep: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<(), Errno> {
    for name in list_dir(dir)? {
        if !keep(&name) {
            remove_all_at(dir, &name)?;
        }
    }
    Ok(())
}

/// A path for error messages.
pub(crate) fn display_path(bytes: &[u8]) -> PathBuf {
    Path::new(OsStr::from_bytes(bytes)).to_path_buf()
}

/// Converts an errno into an `io::Error`.
pub(crate) fn io_err(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
}

/// Lists the extended attribute names of an open file.
pub(crate) fn list_xattrs(fd: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = match rfs::flistxattr(fd, &mut buf[..]) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(Errno::RANGE) => {
            buf = vec![0u8; 1 << 20];
            rfs::flistxattr(fd, &mut buf[..])?
        }
        Err(e) => return Err(e),
    };
    let mut names: Vec<Vec<u8>> = buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    names.sort_unstable();
    Ok(names)
}

/// Reads one extended attribute of an open file.
pub(crate) fn get_xattr(fd: BorrowedFd<'_>, name: &[u8]) -> Result<Option<Vec<u8>>, Errno> {
    let mut buf = vec![0u8; 64 * 1024];
    match rfs::fgetxattr(fd, name, &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(Errno::NODATA) | Err(Errno::NOTSUP) => Ok(None),
        Err(e) => Err(e),
    }
}

/// All extended attributes of an open file, sorted by name.
pub(crate) fn read_xattrs(fd: BorrowedFd<'_>) -> Result<Xattrs, Errno> {
    let mut out = Vec::new();
    for name in list_xattrs(fd)? {
        if let Some(v) = get_xattr(fd, &name)? {
            out.push((name, v));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_all_does_not_follow_symlinks() {
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("keep"), b"x").expect("write");
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("d")).expect("mkdir");
        std::os::unix::fs::symlink(outside.path(), root.path().join("d/link")).expect("symlink");
        let fd = rfs::open(
            root.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .expect("open");
        remove_all_at(fd.as_fd(), b"d").expect("remove");
        assert!(!root.path().join("d").exists());
        assert!(outside.path().join("keep").exists());
    }
}
