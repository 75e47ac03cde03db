//! Filesystem operations relative to directory descriptors.
//!
//! Everything here works on a directory file descriptor and a single name
//! (or a path resolved inside the root of an unpack: `openat2` with
//! `RESOLVE_IN_ROOT`, or a careful walk of one component at a time where
//! the kernel lacks it), never on host paths joined from strings. Nothing
//! follows a symbolic link in the last component.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Extended attributes as (name, value) pairs, sorted by name.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Flags for resolving a path strictly inside a root.
pub(crate) fn in_root() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

/// Whether `openat2` is known to be missing (`ENOSYS`: Linux before 5.6,
/// or a seccomp filter that hides it).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens `path` (components separated by `/`) under `root` with `flags`,
/// resolving it as if `root` were `/`: `..` and absolute symlinks never
/// leave it, magic links are not followed, and the last component is
/// followed unless `flags` has `O_NOFOLLOW`. An empty path opens the root
/// itself. Uses `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` where
/// the kernel has it and `walk` is false; [`walk_in_root`] otherwise.
pub(crate) fn open_in_root(
    root: BorrowedFd<'_>,
    path: &[u8],
    flags: OFlags,
    walk: bool,
) -> Result<OwnedFd, Errno> {
    if !walk && !NO_OPENAT2.load(Ordering::Relaxed) {
        let p: &[u8] = if path.is_empty() { b"." } else { path };
        match rfs::openat2(root, p, flags | OFlags::CLOEXEC, Mode::empty(), in_root()) {
            Err(Errno::NOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
            r => return r,
        }
    }
    walk_in_root(root, path, flags)
}

/// Symlinks followed in one resolution before `ELOOP`, as the kernel's
/// limit.
const MAX_SYMLINKS: usize = 40;

/// [`open_in_root`] without `openat2`: a walk of one component at a time,
/// each opened with `O_PATH | O_NOFOLLOW` relative to the directory before
/// it. A symlink's target is read and its components take its place (an
/// absolute one restarts from `root`); `..` goes back to the directory the
/// walk came from and stays at `root` there. Nothing is ever resolved by
/// the kernel across more than one component, so no link can lead out.
pub(crate) fn walk_in_root(
    root: BorrowedFd<'_>,
    path: &[u8],
    flags: OFlags,
) -> Result<OwnedFd, Errno> {
    let flags = flags | OFlags::CLOEXEC;
    let follow_last = !flags.contains(OFlags::NOFOLLOW);
    // The directories walked into below `root`, innermost last.
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut todo: VecDeque<Vec<u8>> = components(path).collect();
    let mut links = 0;
    loop {
        let cur = stack.last().map_or(root, |f| f.as_fd());
        let Some(comp) = todo.pop_front() else {
            // The path ends at the directory reached.
            return rfs::openat(cur, ".", flags, Mode::empty());
        };
        if comp == b".." {
            stack.pop();
            continue;
        }
        let last = todo.is_empty();
        if last && !follow_last {
            return rfs::openat(cur, &comp[..], flags, Mode::empty());
        }
        let fd = rfs::openat(
            cur,
            &comp[..],
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        match FileType::from_raw_mode(rfs::fstat(&fd)?.st_mode) {
            FileType::Symlink => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Errno::LOOP);
                }
                let target = rfs::readlinkat(&fd, "", Vec::new())?;
                let target = target.as_bytes();
                if target.is_empty() {
                    return Err(Errno::NOENT);
                }
                if target[0] == b'/' {
                    stack.clear();
                }
                let rest = std::mem::take(&mut todo);
                todo = components(target).collect();
                todo.extend(rest);
            }
            FileType::Directory if !last => stack.push(fd),
            _ if !last => return Err(Errno::NOTDIR),
            // The last component, not a symlink: open it for real, still
            // without following (it cannot have become a link unnoticed).
            _ => return rfs::openat(cur, &comp[..], flags | OFlags::NOFOLLOW, Mode::empty()),
        }
    }
}

/// The components of `path` that name something: no empty ones, no `.`.
fn components(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
}

/// Opens the directory `path` (components separated by `/`, already
/// normalised) under `root`, resolving symlinks as if `root` were `/`.
/// An empty path opens the root itself. The result is an `O_PATH` handle,
/// usable as the directory of `*at` calls.
pub(crate) fn open_dir_in_root(
    root: BorrowedFd<'_>,
    path: &[u8],
    walk: bool,
) -> Result<OwnedFd, Errno> {
    open_in_root(root, path, OFlags::PATH | OFlags::DIRECTORY, walk)
}

/// Opens `path` under `root` for reading its metadata and setting it
/// (`O_RDONLY|O_DIRECTORY|O_NOFOLLOW`), resolving inside the root.
pub(crate) fn open_real_dir_in_root(
    root: BorrowedFd<'_>,
    path: &[u8],
    walk: bool,
) -> Result<OwnedFd, Errno> {
    open_in_root(
        root,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
        walk,
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

    /// What opening a path gave: the file's identity, or the errno.
    fn outcome(r: Result<OwnedFd, Errno>) -> Result<(u64, u64), Errno> {
        r.and_then(|fd| rfs::fstat(&fd).map(|st| (st.st_dev, st.st_ino)))
    }

    #[test]
    fn component_walk_resolves_as_openat2_does() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path().join("root");
        std::fs::create_dir_all(r.join("d/sub")).expect("mkdir");
        std::fs::write(r.join("d/f"), b"f").expect("write");
        std::fs::write(r.join("f"), b"f").expect("write");
        // Outside the root, where an escaping link would land.
        std::fs::create_dir_all(tmp.path().join("etc")).expect("mkdir");
        for (link, target) in [
            ("abs", "/d"),
            ("rel", "d/sub"),
            ("up", "../../.."),
            ("updir", "d/../d"),
            ("loop1", "loop2"),
            ("loop2", "loop1"),
            ("dangling", "nowhere"),
            ("tofile", "f"),
            ("d/back", ".."),
            ("d/escape", "../../../../etc"),
            ("d/absfile", "/d/f"),
            ("chain", "abs/back/rel"),
            ("self", "."),
        ] {
            symlink(target, r.join(link)).expect("symlink");
        }
        let root = rfs::open(&r, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).expect("root");
        let paths: &[&str] = &[
            "",
            "d",
            "d/f",
            "f",
            "abs",
            "abs/f",
            "abs/sub",
            "rel",
            "up",
            "up/d/f",
            "updir/f",
            "loop1",
            "loop1/x",
            "dangling",
            "dangling/x",
            "tofile",
            "tofile/x",
            "d/back/f",
            "d/back/d/back/abs/sub",
            "d/escape",
            "d/escape/x",
            "d/absfile",
            "f/x",
            "missing/x",
            "abs/../../f",
            "chain",
            "chain/../f",
            "self/self/d/f",
            "d/sub/../../abs/f",
        ];
        let flag_sets = [
            OFlags::PATH | OFlags::DIRECTORY,
            OFlags::PATH,
            OFlags::PATH | OFlags::NOFOLLOW,
            OFlags::RDONLY,
            OFlags::RDONLY | OFlags::NOFOLLOW,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
        ];
        let mut checked = 0;
        for path in paths {
            for flags in flag_sets {
                let kernel = outcome(open_in_root(root.as_fd(), path.as_bytes(), flags, false));
                let walked = outcome(walk_in_root(root.as_fd(), path.as_bytes(), flags));
                assert_eq!(walked, kernel, "{path:?} with {flags:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, paths.len() * flag_sets.len());
        // Nothing resolved to the directory outside the root.
        let outside = outcome(rfs::open(
            tmp.path().join("etc"),
            OFlags::PATH,
            Mode::empty(),
        ));
        for path in ["d/escape", "up/etc", "/etc", "../etc"] {
            let walked = outcome(walk_in_root(root.as_fd(), path.as_bytes(), OFlags::PATH));
            assert_ne!(walked, outside, "{path} escaped");
        }
    }
}
