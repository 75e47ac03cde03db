//! Filesystem helpers of the snapshot drivers (atomic writes are the
//! store's [`Root::write_atomic`](image_store::fs::Root::write_atomic)): a faithful
//! tree copy, disk usage. Everything walks with directory descriptors and
//! never follows a symlink found in a tree.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timestamps, XattrFlags};
use rustix::io::Errno;

/// Fsyncs a directory (so that a rename or create in it is durable).
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes a path and everything below it; a missing path is success.
pub(crate) fn remove_all(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(md) if md.is_dir() => match std::fs::remove_dir_all(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        },
        Ok(_) => std::fs::remove_file(path),
    }
}

fn open_dir(path: &Path) -> Result<OwnedFd, Errno> {
    rfs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn open_child_dir(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    let mut d = rfs::Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(ent) = d.read() {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Bytes and inodes used by a tree (hardlinked files counted once).
pub(crate) fn disk_usage(path: &Path) -> io::Result<(u64, u64)> {
    let root = open_dir(path)?;
    let st = rfs::fstat(&root)?;
    let mut seen = std::collections::HashSet::new();
    let mut size = st.st_blocks as u64 * 512;
    let mut inodes = 1;
    du_dir(root.as_fd(), &mut seen, &mut size, &mut inodes)?;
    Ok((size, inodes))
}

fn du_dir(
    dir: BorrowedFd<'_>,
    seen: &mut std::collections::HashSet<(u64, u64)>,
    size: &mut u64,
    inodes: &mut u64,
) -> io::Result<()> {
    for name in list_dir(dir)? {
        let st = rfs::statat(dir, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)?;
        if st.st_nlink > 1 && !seen.insert((st.st_dev, st.st_ino)) {
            continue;
        }
        *size += st.st_blocks as u64 * 512;
        *inodes += 1;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let sub = open_child_dir(dir, &name)?;
            du_dir(sub.as_fd(), seen, size, inodes)?;
        }
    }
    Ok(())
}

/// Copies the tree under `src` into the existing empty directory `dst`,
/// preserving types, owners, modes (setuid and friends included), xattrs,
/// hardlinks, device nodes, fifos and timestamps (directories last, so
/// their mtimes stick). Sockets are skipped. The root's own metadata is
/// copied too.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let s = open_dir(src)?;
    let d = open_dir(dst)?;
    let mut links = HashMap::new();
    copy_dir(s.as_fd(), d.as_fd(), d.as_fd(), b"", &mut links)
        .map_err(|(path, e)| annotate(src, &path, e))?;
    let st = rfs::fstat(&s)?;
    copy_meta_fd(s.as_fd(), d.as_fd(), &st).map_err(|e| annotate(src, b"", e))
}

fn annotate(root: &Path, rel: &[u8], e: Errno) -> io::Error {
    let path: PathBuf = root.join(OsStr::from_bytes(rel));
    io::Error::new(
        io::Error::from(e).kind(),
        format!("copying {}: {e}", path.display()),
    )
}

type Links = HashMap<(u64, u64), Vec<u8>>;
type CopyResult = Result<(), (Vec<u8>, Errno)>;

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = rel.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn copy_dir(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    dst_root: BorrowedFd<'_>,
    rel: &[u8],
    links: &mut Links,
) -> CopyResult {
    let names = list_dir(src).map_err(|e| (rel.to_vec(), e))?;
    for name in names {
        let path = join(rel, &name);
        let st = rfs::statat(src, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| (path.clone(), e))?;
        let ft = FileType::from_raw_mode(st.st_mode);
        let fail = |e: Errno| (path.clone(), e);
        match ft {
            FileType::Directory => {
                rfs::mkdirat(dst, name.as_slice(), Mode::from_raw_mode(0o700)).map_err(fail)?;
                let s = open_child_dir(src, &name).map_err(fail)?;
                let d = open_child_dir(dst, &name).map_err(fail)?;
                copy_dir(s.as_fd(), d.as_fd(), dst_root, &path, links)?;
                copy_meta_fd(s.as_fd(), d.as_fd(), &st).map_err(fail)?;
            }
            FileType::RegularFile => {
                if st.st_nlink > 1 {
                    if let Some(first) = links.get(&(st.st_dev, st.st_ino)) {
                        rfs::linkat(
                            dst_root,
                            first.as_slice(),
                            dst,
                            name.as_slice(),
                            AtFlags::empty(),
                        )
                        .map_err(fail)?;
                        continue;
                    }
                    links.insert((st.st_dev, st.st_ino), path.clone());
                }
                let s = rfs::openat(
                    src,
                    name.as_slice(),
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(fail)?;
                let d = rfs::openat(
                    dst,
                    name.as_slice(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(fail)?;
                copy_data(&s, &d, st.st_size as u64).map_err(fail)?;
                copy_meta_fd(s.as_fd(), d.as_fd(), &st).map_err(fail)?;
            }
            FileType::Symlink => {
                let target = rfs::readlinkat(src, name.as_slice(), Vec::new()).map_err(fail)?;
                rfs::symlinkat(target.as_c_str(), dst, name.as_slice()).map_err(fail)?;
                copy_meta_at(src, dst, &name, &st, false).map_err(fail)?;
            }
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                rfs::mknodat(
                    dst,
                    name.as_slice(),
                    ft,
                    Mode::from_raw_mode(st.st_mode & 0o7777),
                    st.st_rdev,
                )
                .map_err(fail)?;
                copy_meta_at(src, dst, &name, &st, true).map_err(fail)?;
            }
            _ => {}
        }
    }
    Ok(())
}

pub(crate) fn copy_data(src: &OwnedFd, dst: &OwnedFd, len: u64) -> Result<(), Errno> {
    if len == 0 {
        return Ok(());
    }
    if rfs::ioctl_ficlone(dst, src).is_ok() {
        return Ok(());
    }
    let mut remaining = len;
    while remaining > 0 {
        let chunk = remaining.min(1 << 30) as usize;
        let n = rfs::copy_file_range(src, None, dst, None, chunk)?;
        if n == 0 {
            break;
        }
        remaining -= n as u64;
    }
    if remaining > 0 {
        // The source shrank while copied, or copy_file_range stopped early:
        // fall back to read/write for the rest.
        let mut s = File::from(src.try_clone().map_err(|_| Errno::IO)?);
        let mut d = File::from(dst.try_clone().map_err(|_| Errno::IO)?);
        io::copy(&mut s, &mut d).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
    }
    Ok(())
}

fn copy_xattrs_fd(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> Result<(), Errno> {
    let mut names = vec![0u8; 64 * 1024];
    let n = match rfs::flistxattr(src, &mut names[..]) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut value = vec![0u8; 64 * 1024];
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let len = match rfs::fgetxattr(src, name, &mut value[..]) {
            Ok(len) => len,
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(e),
        };
        match rfs::fsetxattr(dst, name, &value[..len], XattrFlags::empty()) {
            Ok(()) | Err(Errno::NOTSUP) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn copy_xattrs_path(src: &Path, dst: &Path) -> Result<(), Errno> {
    let mut names = vec![0u8; 64 * 1024];
    let n = match rfs::llistxattr(src, &mut names[..]) {
        Ok(n) => n,
        Err(Errno::NOTSUP) | Err(Errno::PERM) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut value = vec![0u8; 64 * 1024];
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let len = match rfs::lgetxattr(src, name, &mut value[..]) {
            Ok(len) => len,
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(e),
        };
        match rfs::lsetxattr(dst, name, &value[..len], XattrFlags::empty()) {
            // user.* xattrs are not allowed on symlinks and special files.
            Ok(()) | Err(Errno::NOTSUP) | Err(Errno::PERM) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn times(st: &rfs::Stat) -> Timestamps {
    Timestamps {
        last_access: rfs::Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: rfs::Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// Owner, mode, xattrs and times through open descriptors.
fn copy_meta_fd(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, st: &rfs::Stat) -> Result<(), Errno> {
    let owner = (
        Some(rfs::Uid::from_raw(st.st_uid)),
        Some(rfs::Gid::from_raw(st.st_gid)),
    );
    match rfs::fchown(dst, owner.0, owner.1) {
        Ok(()) => {}
        Err(Errno::PERM) if !rustix::process::geteuid().is_root() => {}
        Err(e) => return Err(e),
    }
    copy_xattrs_fd(src, dst)?;
    // After chown, which clears setuid/setgid.
    rfs::fchmod(dst, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    rfs::futimens(dst, &times(st))
}

/// Owner, mode, xattrs and times of a symlink or special file, by name.
fn copy_meta_at(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    name: &[u8],
    st: &rfs::Stat,
    chmod: bool,
) -> Result<(), Errno> {
    match rfs::chownat(
        dst,
        name,
        Some(rfs::Uid::from_raw(st.st_uid)),
        Some(rfs::Gid::from_raw(st.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    ) {
        Ok(()) => {}
        Err(Errno::PERM) if !rustix::process::geteuid().is_root() => {}
        Err(e) => return Err(e),
    }
    // Through the descriptors' /proc links: the directory is pinned, the
    // last component is not followed.
    let fd_path = |fd: BorrowedFd<'_>| {
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", fd_num(fd)));
        p.push(OsStr::from_bytes(name));
        p
    };
    copy_xattrs_path(&fd_path(src), &fd_path(dst))?;
    if chmod {
        rfs::chmodat(
            dst,
            name,
            Mode::from_raw_mode(st.st_mode & 0o7777),
            AtFlags::empty(),
        )?;
    }
    rfs::utimensat(dst, name, &times(st), AtFlags::SYMLINK_NOFOLLOW)
}

fn fd_num(fd: BorrowedFd<'_>) -> i32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}
