//! The container's root filesystem: where it comes from ([`Rootfs`]) and
//! safe access to files inside it (a `RootDir`, crate-private: every path
//! resolved in the root with `openat2(RESOLVE_IN_ROOT)`).
//!
//! # Security
//! An image controls its own files: `/etc/passwd` may be a symlink to
//! `/../../../etc/shadow`, a working directory may be a symlink out of the
//! root. Every access here goes through a directory handle on the root and
//! [`image_overlay::resolve::open_in_root`] (`openat2(2)` with
//! `RESOLVE_IN_ROOT`, or its component walk on kernels without it), so
//! absolute symlinks and `..` are resolved as if the root were `/`: nothing
//! outside the root is ever read, created or changed. Host paths are never
//! built by joining strings.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use image_core::{Classify, ErrorKind};
use image_overlay::mount::{Mount, MountError, Mounter};
use image_overlay::resolve::{open_in_root, PathResolution};
use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

/// The largest file a `RootDir` reads (the image's `/etc/passwd`
/// and `/etc/group`, which real images keep to kilobytes).
pub const MAX_READ: u64 = 16 << 20;

/// Where a container's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Rootfs {
    /// A plain directory, used as it is (writes land in it).
    Directory(PathBuf),
    /// Mounts to perform, in order, on the bundle's `rootfs` directory: what
    /// a snapshotter's `prepare(key, parent)` returns (typically a single
    /// overlay mount), performed through image-overlay's
    /// [`Mounter`]. They are unmounted when the container is deleted.
    Mounts(Vec<Mount>),
}

/// Performs `mounts` on `target` with `mounter` (image-overlay's seam).
///
/// # Errors
/// [`RootfsError::Mount`] (classified `PermissionDenied` without the
/// privilege to mount), [`RootfsError::Overlay`] for a mount refused
/// before the kernel saw it.
pub(crate) fn mount_all(
    mounter: &dyn Mounter,
    mounts: &[Mount],
    target: &Path,
) -> Result<(), RootfsError> {
    mounter.mount(mounts, target).map_err(RootfsError::from)
}

/// Unmounts every mount at or below `dir` with `mounter`, deepest first;
/// a busy mount is detached (lazy) rather than left behind.
///
/// # Errors
/// [`RootfsError::Unmount`] for a mount that cannot be removed at all.
pub(crate) fn unmount_all(mounter: &dyn Mounter, dir: &Path) -> Result<(), RootfsError> {
    let mounts: Vec<PathBuf> =
        crate::mountinfo::mounts_under(dir).map_err(|source| RootfsError::Unmount {
            target: dir.to_owned(),
            source,
        })?;
    let errno = |e: &MountError| match e {
        MountError::Unmount { source, .. } => source.raw_os_error(),
        _ => None,
    };
    for m in mounts {
        let Err(e) = mounter.unmount(&m, false) else {
            continue;
        };
        match errno(&e) {
            Some(libc::EINVAL) | Some(libc::ENOENT) => {}
            Some(libc::EBUSY) => mounter.unmount(&m, true).map_err(RootfsError::from)?,
            _ => return Err(e.into()),
        }
    }
    Ok(())
}

/// Errors of opening and reading inside a root filesystem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootfsError {
    /// The root directory itself could not be opened.
    #[error("cannot open root filesystem {path}")]
    OpenRoot {
        /// The host path of the root.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A path inside the root could not be accessed.
    #[error("{path:?} in the root filesystem")]
    Access {
        /// The path, as seen inside the container.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A path inside the root exists but is of the wrong type.
    #[error("{path:?} in the root filesystem is not a {expected}")]
    WrongType {
        /// The path, as seen inside the container.
        path: PathBuf,
        /// What was expected (`directory`, `regular file`).
        expected: &'static str,
    },
    /// A path inside the root that must be reached through no symlink
    /// (a proc or sysfs mount point) has one on its way.
    #[error("{path:?} in the root filesystem is a symbolic link")]
    Symlink {
        /// The path, as seen inside the container, up to the symlink.
        path: PathBuf,
    },
    /// A file inside the root is larger than [`MAX_READ`].
    #[error("{path:?} in the root filesystem is larger than {limit} bytes")]
    TooLarge {
        /// The path, as seen inside the container.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// A mount of the root filesystem failed.
    #[error("mounting {fs_type} {source_path} on {target}")]
    Mount {
        /// The filesystem type.
        fs_type: String,
        /// The mount source.
        source_path: String,
        /// The host target.
        target: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The mounter refused an overlay mount before the kernel saw it (too
    /// many layers for overlayfs, an option it does not take).
    #[error(transparent)]
    Overlay(image_overlay::mount::MountError),
    /// Unmounting the root filesystem failed.
    #[error("unmounting {target}")]
    Unmount {
        /// The host target.
        target: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl From<MountError> for RootfsError {
    fn from(e: MountError) -> RootfsError {
        match e {
            MountError::Mount {
                fs_type,
                source_path,
                target,
                source,
                ..
            } => RootfsError::Mount {
                fs_type,
                source_path,
                target,
                source,
            },
            MountError::Unmount { target, source } => RootfsError::Unmount { target, source },
            other => RootfsError::Overlay(other),
        }
    }
}

impl Classify for RootfsError {
    fn kind(&self) -> ErrorKind {
        match self {
            RootfsError::OpenRoot { source, .. }
            | RootfsError::Access { source, .. }
            | RootfsError::Mount { source, .. }
            | RootfsError::Unmount { source, .. } => ErrorKind::from_io(source),
            RootfsError::WrongType { .. } => ErrorKind::InvalidInput,
            RootfsError::Symlink { .. } | RootfsError::TooLarge { .. } => ErrorKind::Unsafe,
            RootfsError::Overlay(e) => e.kind(),
        }
    }
}

/// A handle on a root filesystem directory; every lookup stays inside it.
#[derive(Debug)]
pub(crate) struct RootDir {
    fd: OwnedFd,
}

/// What a path inside the root is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileInfo {
    /// Mode bits including the file type.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl FileInfo {
    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & 0o170000 == 0o040000
    }

    /// True for a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & 0o170000 == 0o100000
    }

    /// True when any execute bit is set.
    pub fn is_executable(&self) -> bool {
        self.mode & 0o111 != 0
    }
}

fn io_err(e: rustix::io::Errno) -> std::io::Error {
    std::io::Error::from(e)
}

/// The path relative to the root (leading `/` removed); empty means the root.
fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect()
}

impl RootDir {
    /// Opens the directory at `path` (a host path) as a root.
    ///
    /// # Errors
    /// [`RootfsError::OpenRoot`] when it cannot be opened as a directory.
    pub fn open(path: &Path) -> Result<RootDir, RootfsError> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RootfsError::OpenRoot {
            path: path.to_owned(),
            source: io_err(e),
        })?;
        Ok(RootDir { fd })
    }

    /// Opens the directory `name` in the directory `parent` as a root,
    /// without following a symlink there (`ELOOP`/`ENOTDIR`): for a
    /// root inside a directory an operator named, whose entries may be
    /// anything. `host_path` is what an error says.
    ///
    /// # Errors
    /// [`RootfsError::OpenRoot`].
    pub fn open_nofollow_at(
        parent: impl AsFd,
        name: &str,
        host_path: PathBuf,
    ) -> Result<RootDir, RootfsError> {
        match rustix::fs::openat(
            parent,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(RootDir { fd }),
            Err(e) => Err(RootfsError::OpenRoot {
                path: host_path,
                source: io_err(e),
            }),
        }
    }

    fn open_in(&self, path: &Path, flags: OFlags) -> Result<OwnedFd, RootfsError> {
        let rel = relative(path);
        let rel: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &rel
        };
        open_in_root(
            self.fd.as_fd(),
            rel.as_os_str().as_bytes(),
            flags,
            Mode::empty(),
            PathResolution::Auto,
        )
        .map_err(|e| RootfsError::Access {
            path: path.to_owned(),
            source: io_err(e),
        })
    }

    /// Opens the directory at `path` inside the root for reading its
    /// entries, following symlinks inside the root.
    ///
    /// # Errors
    /// [`RootfsError::Access`] (`ENOTDIR` when it is no directory).
    pub(crate) fn open_dir(&self, path: &Path) -> Result<OwnedFd, RootfsError> {
        self.open_in(path, OFlags::RDONLY | OFlags::DIRECTORY)
    }

    /// Reads a whole file inside the root, following symlinks inside it;
    /// at most [`MAX_READ`] bytes.
    ///
    /// # Errors
    /// [`RootfsError::Access`] (classified `NotFound` when it is missing),
    /// [`RootfsError::WrongType`] (not a regular file),
    /// [`RootfsError::TooLarge`].
    pub fn read(&self, path: &Path) -> Result<Vec<u8>, RootfsError> {
        let fd = self.open_in(path, OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK)?;
        let info = fstat_info(&fd, path)?;
        if !info.is_file() {
            return Err(RootfsError::WrongType {
                path: path.to_owned(),
                expected: "regular file",
            });
        }
        let file = std::fs::File::from(fd);
        let mut buf = Vec::new();
        file.take(MAX_READ + 1)
            .read_to_end(&mut buf)
            .map_err(|source| RootfsError::Access {
                path: path.to_owned(),
                source,
            })?;
        if buf.len() as u64 > MAX_READ {
            return Err(RootfsError::TooLarge {
                path: path.to_owned(),
                limit: MAX_READ,
            });
        }
        Ok(buf)
    }

    /// Checks that `path` is an ordinary directory: every component,
    /// the last one too, a directory and none a symlink (`lstat` one
    /// component at a time from the root handle).
    ///
    /// # Errors
    /// [`RootfsError::Symlink`], [`RootfsError::WrongType`], or
    /// [`RootfsError::Access`] (classified `NotFound` when a component
    /// is missing).
    pub fn ordinary_dir(&self, path: &Path) -> Result<(), RootfsError> {
        let mut done = PathBuf::from("/");
        let mut dir = rustix::io::dup(&self.fd).map_err(|e| RootfsError::Access {
            path: done.clone(),
            source: io_err(e),
        })?;
        for comp in relative(path).components() {
            let Component::Normal(name) = comp else {
                return Err(RootfsError::WrongType {
                    path: path.to_owned(),
                    expected: "path without `.` or `..`",
                });
            };
            done.push(name);
            let access = |e: rustix::io::Errno| RootfsError::Access {
                path: done.clone(),
                source: io_err(e),
            };
            let st = rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                .map_err(access)?;
            match rustix::fs::FileType::from_raw_mode(st.st_mode) {
                rustix::fs::FileType::Directory => {}
                rustix::fs::FileType::Symlink => return Err(RootfsError::Symlink { path: done }),
                _ => {
                    return Err(RootfsError::WrongType {
                        path: done,
                        expected: "directory",
                    })
                }
            }
            dir = rustix::fs::openat(
                &dir,
                name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(access)?;
        }
        Ok(())
    }

    /// Stats a path inside the root (symlinks followed inside the root).
    ///
    /// # Errors
    /// [`RootfsError::Access`].
    pub fn stat(&self, path: &Path) -> Result<FileInfo, RootfsError> {
        let fd = self.open_in(path, OFlags::PATH)?;
        fstat_info(&fd, path)
    }

    /// Creates `path` and any missing parents inside the root, as Docker
    /// does for a working directory: mode 0755, owned by `uid:gid`, and
    /// only directories it creates are chowned. Existing symlinks are
    /// followed inside the root.
    ///
    /// # Errors
    /// [`RootfsError::Access`], or [`RootfsError::WrongType`] when a
    /// component exists and is not a directory.
    pub fn create_dir_all(&self, path: &Path, uid: u32, gid: u32) -> Result<(), RootfsError> {
        let rel = relative(path);
        let mut done = PathBuf::from("/");
        let mut parent = self.open_in(&done, OFlags::PATH | OFlags::DIRECTORY)?;
        for comp in rel.components() {
            let name = match comp {
                Component::Normal(n) => n,
                Component::ParentDir => {
                    done.pop();
                    parent = self.open_in(&done, OFlags::PATH | OFlags::DIRECTORY)?;
                    continue;
                }
                _ => continue,
            };
            done.push(name);
            match self.open_in(&done, OFlags::PATH) {
                Ok(fd) => {
                    if !fstat_info(&fd, &done)?.is_dir() {
                        return Err(RootfsError::WrongType {
                            path: done,
                            expected: "directory",
                        });
                    }
                    parent = fd;
                }
                Err(RootfsError::Access { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    // The parent handle was resolved inside the root, and
                    // `name` is a single component: mkdirat cannot escape.
                    let dir_fd = self.open_in(
                        done.parent().unwrap_or(Path::new("/")),
                        OFlags::RDONLY | OFlags::DIRECTORY,
                    )?;
                    let access = |e: rustix::io::Errno| RootfsError::Access {
                        path: done.clone(),
                        source: io_err(e),
                    };
                    match rustix::fs::mkdirat(&dir_fd, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) => {}
                        Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(access(e)),
                    }
                    let fd = self.open_in(&done, OFlags::RDONLY | OFlags::DIRECTORY)?;
                    rustix::fs::fchown(
                        &fd,
                        Some(rustix::fs::Uid::from_raw(uid)),
                        Some(rustix::fs::Gid::from_raw(gid)),
                    )
                    .map_err(access)?;
                    // mkdir's mode is masked by the umask; Docker's is 0755.
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755)).map_err(access)?;
                    parent = fd;
                }
                Err(e) => return Err(e),
            }
        }
        drop(parent);
        Ok(())
    }

    /// Creates the empty regular file `path` (mode `mode`, owned by the
    /// caller) inside the root unless something exists there (a dangling
    /// symlink counts as existing); returns whether it was created. The
    /// parent must exist.
    ///
    /// # Errors
    /// [`RootfsError::Access`].
    pub fn create_file(&self, path: &Path, mode: u32) -> Result<bool, RootfsError> {
        let rel = relative(path);
        let rel: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &rel
        };
        match open_in_root(
            self.fd.as_fd(),
            rel.as_os_str().as_bytes(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
            Mode::from_raw_mode(mode),
            PathResolution::Auto,
        ) {
            Ok(fd) => {
                // The mode given to open is masked by the umask.
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| {
                    RootfsError::Access {
                        path: path.to_owned(),
                        source: io_err(e),
                    }
                })?;
                Ok(true)
            }
            Err(rustix::io::Errno::EXIST) => Ok(false),
            Err(e) => Err(RootfsError::Access {
                path: path.to_owned(),
                source: io_err(e),
            }),
        }
    }
}

fn fstat_info(fd: &OwnedFd, path: &Path) -> Result<FileInfo, RootfsError> {
    let st = rustix::fs::fstat(fd).map_err(|e| RootfsError::Access {
        path: path.to_owned(),
        source: io_err(e),
    })?;
    Ok(FileInfo {
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(tmp.path().join("secret"), "host secret").unwrap();
        std::fs::write(root.join("secret"), "inside").unwrap();
        std::os::unix::fs::symlink("../../../../secret", root.join("etc/rel")).unwrap();
        std::os::unix::fs::symlink("/secret", root.join("etc/abs")).unwrap();
        let r = RootDir::open(&root).unwrap();
        assert_eq!(r.read(Path::new("/etc/rel")).unwrap(), b"inside");
        assert_eq!(r.read(Path::new("etc/abs")).unwrap(), b"inside");
        assert_eq!(r.read(Path::new("/../secret")).unwrap(), b"inside");
        let e = r.read(Path::new("/missing")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }

    /// A path inside the root (an image's) reaches the error quoted, none
    /// of its control characters printed.
    #[test]
    fn a_hostile_path_is_quoted_in_the_error() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("\u{1b}[2Jd")).unwrap();
        let r = RootDir::open(tmp.path()).unwrap();
        for p in ["/\u{1b}[2Jd", "/\u{1b}]0;missing\u{7}"] {
            let msg = r.read(Path::new(p)).unwrap_err().to_string();
            assert!(
                !msg.contains(char::is_control),
                "{p:?}: raw control characters"
            );
        }
    }

    #[test]
    fn reads_are_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        // Sparse: no disk used, but a naive read would allocate it all.
        let f = std::fs::File::create(root.join("etc/passwd")).unwrap();
        f.set_len(64 << 30).unwrap();
        let f = std::fs::File::create(root.join("etc/group")).unwrap();
        f.set_len(MAX_READ).unwrap();
        let r = RootDir::open(&root).unwrap();
        let e = r.read(Path::new("/etc/passwd")).unwrap_err();
        assert!(matches!(e, RootfsError::TooLarge { .. }), "{e:?}");
        assert_eq!(e.kind(), ErrorKind::Unsafe);
        assert_eq!(
            r.read(Path::new("/etc/group")).unwrap().len() as u64,
            MAX_READ
        );
        // Through the user lookup too.
        assert!(matches!(
            crate::user::resolve(&r, "app"),
            Err(crate::user::UserError::Read(RootfsError::TooLarge { .. }))
        ));
    }

    #[test]
    fn create_dir_all_stays_inside() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink("/../..", root.join("up")).unwrap();
        let r = RootDir::open(&root).unwrap();
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        r.create_dir_all(Path::new("/up/a/b"), uid, gid).unwrap();
        assert!(root.join("a/b").is_dir());
        assert!(!tmp.path().join("a").exists());
        let info = r.stat(Path::new("/a/b")).unwrap();
        assert!(info.is_dir());
        assert_eq!(info.mode & 0o7777, 0o755);
        std::fs::write(root.join("file"), "").unwrap();
        assert!(matches!(
            r.create_dir_all(Path::new("/file/x"), uid, gid),
            Err(RootfsError::WrongType { .. })
        ));
    }
}
