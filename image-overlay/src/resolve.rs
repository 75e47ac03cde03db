//! Opening paths inside a root directory as if it were `/`: what an
//! unpack does for every entry of a layer, and what a runtime or a build
//! does to look at an image's files (`/etc/passwd` for `USER`, a
//! `WORKDIR`, the destination of a `COPY`) without following a link out.
//!
//! [`open_in_root`] uses `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//! where the kernel has it (Linux 5.6+) and a walk of one component at a
//! time otherwise, each opened `O_PATH|O_NOFOLLOW` relative to the one
//! before, with symlinks expanded here: `..` and absolute targets stop at
//! the root, and no call ever lets the kernel resolve more than one name.
//!
//! ```
//! use std::os::fd::AsFd;
//! use image_overlay::resolve::{open_in_root, PathResolution};
//! use rustix::fs::{Mode, OFlags};
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::create_dir(dir.path().join("etc"))?;
//! std::fs::write(dir.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n")?;
//! std::os::unix::fs::symlink("/etc", dir.path().join("conf"))?;
//! let root = rustix::fs::open(dir.path(), OFlags::DIRECTORY, Mode::empty())?;
//! // "/etc" in the link means the root's etc, not the host's.
//! for resolution in [PathResolution::Auto, PathResolution::ComponentWalk] {
//!     let fd = open_in_root(root.as_fd(), b"conf/passwd", OFlags::RDONLY, Mode::empty(), resolution)?;
//!     let mut s = String::new();
//!     std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut s)?;
//!     assert!(s.starts_with("root:"));
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use image_store::fs::openat2_or_none;
use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// How a path is resolved inside a root directory, so that no symlink in
/// it (from a layer, or an image's own files) leads out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PathResolution {
    /// `openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS` where the
    /// kernel has it (Linux 5.6 and later), the component walk where it
    /// does not or a seccomp filter refuses it (`ENOSYS` or `EPERM`:
    /// [`image_store::fs::openat2_or_none`]).
    #[default]
    Auto,
    /// Always the component walk: one component at a time, each opened
    /// with `O_NOFOLLOW` relative to the one before, symlinks expanded by
    /// us and kept inside the root.
    ComponentWalk,
}

/// Opens `path` (components separated by `/`) under `root` with `flags`,
/// resolving it as if `root` were `/`: `..` and absolute symlinks never
/// leave it, magic links are not followed, and the last component is
/// followed unless `flags` has `O_NOFOLLOW`. An empty path opens the root
/// itself. Uses `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` where
/// the kernel has it and `resolution` is [`PathResolution::Auto`], the
/// component walk otherwise.
///
/// `O_CLOEXEC` is always added; `mode` is used when `flags` create a file.
///
/// # Errors
/// The errno of the failing step, as `openat2` would report it (`ENOENT`,
/// `ENOTDIR`, `ELOOP` after 40 symlinks, ...).
pub fn open_in_root(
    root: BorrowedFd<'_>,
    path: &[u8],
    flags: OFlags,
    mode: Mode,
    resolution: PathResolution,
) -> Result<OwnedFd, Errno> {
    if resolution == PathResolution::Auto {
        let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        let p = Path::new(OsStr::from_bytes(path));
        if let Some(opened) = openat2_or_none(root, p, flags, mode, how) {
            return opened;
        }
    }
    walk_in_root(root, path, flags, mode)
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
fn walk_in_root(
    root: BorrowedFd<'_>,
    path: &[u8],
    flags: OFlags,
    mode: Mode,
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
            return rfs::openat(cur, ".", flags, mode);
        };
        if comp == b".." {
            stack.pop();
            continue;
        }
        let last = todo.is_empty();
        if last && !follow_last {
            return rfs::openat(cur, &comp[..], flags, mode);
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
            // without following. A link swapped in since the look above
            // fails that open (`ELOOP`), except for an `O_PATH` open,
            // which gives the link itself: where the last component is to
            // be followed, it is looked at again, counted as a link.
            _ => {
                let opened = rfs::openat(cur, &comp[..], flags | OFlags::NOFOLLOW, mode)?;
                if follow_last
                    && flags.contains(OFlags::PATH)
                    && FileType::from_raw_mode(rfs::fstat(&opened)?.st_mode) == FileType::Symlink
                {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(Errno::LOOP);
                    }
                    todo.push_front(comp);
                    continue;
                }
                return Ok(opened);
            }
        }
    }
}

/// The components of `path` that name something: no empty ones, no `.`.
fn components(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name swapped between a file and a link (to a file inside the
    /// root) while the walk opens it `O_PATH`, to be followed: the walk
    /// never hands out the link itself, which a caller binding or reading
    /// through `/proc/self/fd` would follow on the host.
    #[test]
    fn a_link_swapped_in_under_an_o_path_walk_is_followed_inside_not_handed_out() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("inside"), b"in").expect("write");
        std::fs::write(dir.path().join("x"), b"file").expect("write");
        std::os::unix::fs::symlink("/inside", dir.path().join("y")).expect("symlink");
        let root = rfs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
            .expect("open root");
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let stop = Arc::clone(&stop);
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let d = rfs::open(&path, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
                    .expect("open");
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    rfs::renameat_with(&d, "x", &d, "y", rfs::RenameFlags::EXCHANGE)
                        .expect("exchange");
                }
            })
        };
        let mut links = 0;
        let started = std::time::Instant::now();
        for _ in 0..200_000 {
            if started.elapsed() > std::time::Duration::from_secs(5) {
                break;
            }
            let Ok(fd) = open_in_root(
                root.as_fd(),
                b"x",
                OFlags::PATH,
                Mode::empty(),
                PathResolution::ComponentWalk,
            ) else {
                continue;
            };
            let st = rfs::fstat(&fd).expect("fstat");
            if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                links += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        swapper.join().expect("swapper");
        assert_eq!(
            links, 0,
            "the walk handed out the link itself {links} times"
        );
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
                let kernel = outcome(open_in_root(
                    root.as_fd(),
                    path.as_bytes(),
                    flags,
                    Mode::empty(),
                    PathResolution::Auto,
                ));
                let walked = outcome(walk_in_root(
                    root.as_fd(),
                    path.as_bytes(),
                    flags,
                    Mode::empty(),
                ));
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
            let walked = outcome(walk_in_root(
                root.as_fd(),
                path.as_bytes(),
                OFlags::PATH,
                Mode::empty(),
            ));
            assert_ne!(walked, outside, "{path} escaped");
        }
    }
}
