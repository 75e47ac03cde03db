//! Volumes, as `docker run -v` and `docker volume` know them: named
//! volumes (`-v name:/path`) and anonymous ones made for the image's
//! `VOLUME` paths, kept in the runtime's state directory.
//!
//! A volume is a directory `<state>/volumes/<name>/_data`, bind-mounted
//! read-write (unless `:ro`) into the containers that use it. A named
//! volume is created on first use; an anonymous one gets a random
//! 64-hex name and a marker file `anonymous` next to its `_data`, and
//! belongs to its container: [`crate::Runtime::delete_with_volumes`]
//! (`rm -v`) removes it unless another container uses it (mounted by its
//! name), [`crate::Runtime::delete`] keeps it, as Docker does. A volume
//! whose `_data` is empty when a container is created is first filled
//! with the image's content at the mount path (Docker's copy-up of a
//! fresh volume). Which volumes a container uses is written to
//! `volumes.json` in its state directory: what `rm -v` removes and what
//! [`VolumeStore::remove`] reads to refuse a volume still in use.
//!
//! # Security
//! The image controls what lies at the mount path: the path itself is
//! resolved inside the root filesystem (`openat2(RESOLVE_IN_ROOT)`: a
//! symlink there is read as if the root were `/`), and the content is
//! copied entry by entry with `O_NOFOLLOW` from directory handles: a
//! symlink is copied as a symlink, never followed, whether it points in
//! or out of the root. Every entry keeps its owner and mode, and, but for
//! a symlink, its extended attributes (overlayfs's own left out; one the
//! volume's filesystem does not support skipped): regular files,
//! directories, symlinks, and device nodes, fifos and sockets made anew
//! with `mknodat` (as Docker's copy-up makes them; never opened, so a
//! fifo cannot block the copy); names of one file stay names of one
//! file (linked to its first copy, as containerd's copy that Docker's
//! copy-up uses keeps them), so a file with many names is written once.
//! The copy is
//! bounded in depth ([`MAX_COPY_DEPTH`]) and entries
//! ([`MAX_COPY_ENTRIES`]). A container has at most
//! [`MAX_CONTAINER_VOLUMES`] volumes, and its `volumes.json` is written
//! only when it is small enough to be read back whole. A volume name is
//! one path component of Docker's grammar, so it never leaves
//! `<state>/volumes`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use image_core::{Classify, ErrorKind};
use image_store::fs::Root;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use serde::{Deserialize, Serialize};

use crate::rootfs::RootDir;

/// The directory of volumes under a runtime's state directory.
pub const VOLUMES_DIR: &str = "volumes";
/// A volume's data directory inside its own directory.
pub const DATA_DIR: &str = "_data";
/// The marker file of an anonymous volume, next to its `_data`.
const ANONYMOUS_MARKER: &str = "anonymous";
/// The lock file of the volumes directory (not a volume name: it starts
/// with a dot).
pub const LOCK_FILE: &str = ".lock";
/// The file in a container's state directory naming its volumes.
pub const CONTAINER_VOLUMES_FILE: &str = "volumes.json";
/// The deepest directory the copy from the image descends to (each level
/// holds two open directories).
pub const MAX_COPY_DEPTH: usize = 128;
/// The most entries copied from the image into one volume.
pub const MAX_COPY_ENTRIES: u64 = 1 << 20;
/// The longest volume name accepted.
pub const MAX_NAME_LEN: usize = 255;
/// The largest `volumes.json` read back (a container's volumes are few).
const MAX_RECORD: u64 = 1 << 20;
/// The most volumes one container may have: its `-v` volumes and the
/// image's `VOLUME` paths together. Docker sets no limit; real images
/// declare a handful, and each volume is a mount (the kernel allows
/// 100,000 per mount namespace by default).
pub const MAX_CONTAINER_VOLUMES: usize = 1024;

/// Errors of volumes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    /// The name is not Docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (at most
    /// [`MAX_NAME_LEN`] bytes).
    #[error("invalid volume name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at least two characters")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// No volume has this name.
    #[error("no such volume: {name}")]
    NotFound {
        /// The name.
        name: String,
    },
    /// The volume is used by containers (remove them first, or force).
    #[error("volume {name} is in use by containers {containers:?}")]
    InUse {
        /// The name.
        name: String,
        /// The containers using it.
        containers: Vec<String>,
    },
    /// A volume's directory could not be made, read or removed.
    #[error("volume directory {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The image's content at a volume's path could not be copied into it.
    #[error("copying the image's {path:?} into volume {name}")]
    Copy {
        /// The volume.
        name: String,
        /// The path in the container (below the mount path).
        path: PathBuf,
        /// The cause (`ELOOP` for a symlink where a directory was opened).
        source: io::Error,
    },
    /// The image's content at a volume's path is deeper or larger than
    /// the copy allows ([`MAX_COPY_DEPTH`], [`MAX_COPY_ENTRIES`]).
    #[error(
        "the image's {path:?} is too large to copy into volume {name}: more than {limit} {what}"
    )]
    TooLarge {
        /// The volume.
        name: String,
        /// The mount path in the container.
        path: PathBuf,
        /// `levels` or `entries`.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// A container would use more volumes than [`MAX_CONTAINER_VOLUMES`]
    /// (its `-v` volumes and the image's `VOLUME` paths), or its record
    /// of them ([`CONTAINER_VOLUMES_FILE`]) would be larger than a
    /// reader takes.
    #[error("a container may have at most {limit} {what}: this one would have {found}")]
    TooMany {
        /// `volumes` or `bytes of volumes record`.
        what: &'static str,
        /// What it would have.
        found: usize,
        /// The limit.
        limit: usize,
    },
}

impl Classify for VolumeError {
    fn kind(&self) -> ErrorKind {
        match self {
            VolumeError::InvalidName { .. } => ErrorKind::InvalidInput,
            VolumeError::NotFound { .. } => ErrorKind::NotFound,
            VolumeError::InUse { .. } => ErrorKind::FailedPrecondition,
            VolumeError::Io { source, .. } => ErrorKind::from_io(source),
            VolumeError::Copy { source, .. } => match source.raw_os_error() {
                Some(libc::ELOOP) => ErrorKind::Unsafe,
                _ => ErrorKind::from_io(source),
            },
            VolumeError::TooLarge { .. } | VolumeError::TooMany { .. } => ErrorKind::InvalidInput,
        }
    }
}

/// Checks a volume name: Docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, at most
/// [`MAX_NAME_LEN`] bytes. A name is one path component and never `.`
/// or `..`.
///
/// # Errors
/// [`VolumeError::InvalidName`].
pub fn validate_name(name: &str) -> Result<(), VolumeError> {
    let b = name.as_bytes();
    let ok = b.len() >= 2
        && b.len() <= MAX_NAME_LEN
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(VolumeError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// Whether `-v SOURCE:...` names a volume rather than a host path
/// (Docker's rule: a host path is absolute).
pub fn is_volume_name(source: &Path) -> bool {
    !source.as_os_str().as_bytes().starts_with(b"/")
}

/// One volume, as `volume ls` and `volume inspect` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VolumeInfo {
    /// The name.
    pub name: String,
    /// The directory bind-mounted into containers.
    pub mountpoint: PathBuf,
    /// Made for an image's `VOLUME` path (removed with its container by `rm -v`).
    pub anonymous: bool,
    /// The containers using it.
    pub containers: Vec<String>,
}

/// A volume a container uses, as its `volumes.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Use {
    pub(crate) name: String,
    pub(crate) destination: PathBuf,
    pub(crate) anonymous: bool,
}

/// The volumes of a runtime's state directory (`<state>/volumes`).
#[derive(Debug, Clone)]
pub struct VolumeStore {
    state: PathBuf,
    root: PathBuf,
}

impl VolumeStore {
    /// The volumes under the runtime state directory `state` (nothing is
    /// made until a volume is created).
    pub fn new(state: &Path) -> VolumeStore {
        VolumeStore {
            state: state.to_owned(),
            root: state.join(VOLUMES_DIR),
        }
    }

    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> VolumeError + '_ {
        move |source| VolumeError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// The data directory of volume `name` (it may not exist).
    ///
    /// # Errors
    /// [`VolumeError::InvalidName`].
    pub fn mountpoint(&self, name: &str) -> Result<PathBuf, VolumeError> {
        validate_name(name)?;
        Ok(self.root.join(name).join(DATA_DIR))
    }

    /// Creates volume `name` if it does not exist; its data directory.
    ///
    /// # Errors
    /// [`VolumeError::InvalidName`], [`VolumeError::Io`] (a symlink where
    /// the volumes or the volume's directory go is refused).
    pub fn create(&self, name: &str) -> Result<PathBuf, VolumeError> {
        self.create_as(name, false)
    }

    pub(crate) fn create_as(&self, name: &str, anonymous: bool) -> Result<PathBuf, VolumeError> {
        let data = self.mountpoint(name)?;
        let dir = self.root.join(name);
        for d in [&self.root, &dir, &data] {
            mkdir_no_symlink(d).map_err(Self::io(d))?;
        }
        if anonymous {
            let marker = dir.join(ANONYMOUS_MARKER);
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&marker)
                .map_err(Self::io(&marker))?;
        }
        Ok(data)
    }

    /// Volume `name`.
    ///
    /// # Errors
    /// [`VolumeError::InvalidName`], [`VolumeError::NotFound`],
    /// [`VolumeError::Io`].
    pub fn inspect(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        let data = self.mountpoint(name)?;
        let dir = self.root.join(name);
        match std::fs::symlink_metadata(&data) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(VolumeError::NotFound {
                    name: name.to_owned(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(VolumeError::NotFound {
                    name: name.to_owned(),
                })
            }
            Err(e) => return Err(Self::io(&data)(e)),
        }
        Ok(VolumeInfo {
            name: name.to_owned(),
            mountpoint: data,
            anonymous: std::fs::symlink_metadata(dir.join(ANONYMOUS_MARKER)).is_ok(),
            containers: self.users(name)?,
        })
    }

    /// Every volume, by name.
    ///
    /// # Errors
    /// [`VolumeError::Io`].
    pub fn list(&self) -> Result<Vec<VolumeInfo>, VolumeError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io(&self.root)(e)),
        };
        let mut names = Vec::new();
        for e in entries {
            let e = e.map_err(Self::io(&self.root))?;
            if let Some(n) = e.file_name().to_str() {
                if validate_name(n).is_ok() {
                    names.push(n.to_owned());
                }
            }
        }
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            match self.inspect(&n) {
                Ok(i) => out.push(i),
                Err(VolumeError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Removes volume `name`; one a container uses is refused unless
    /// `force`.
    ///
    /// # Errors
    /// [`VolumeError::InvalidName`], [`VolumeError::NotFound`],
    /// [`VolumeError::InUse`], [`VolumeError::Io`].
    pub fn remove(&self, name: &str, force: bool) -> Result<(), VolumeError> {
        // Checked and removed under the store's lock, which a container
        // holds while it records and makes its volumes: no container can
        // take the volume between the check and the removal.
        let _lock = self.lock()?;
        let info = self.inspect(name)?;
        if !force && !info.containers.is_empty() {
            return Err(VolumeError::InUse {
                name: name.to_owned(),
                containers: info.containers,
            });
        }
        let dir = self.root.join(name);
        std::fs::remove_dir_all(&dir).map_err(Self::io(&dir))
    }

    /// Takes the store's lock: an exclusive `flock` on [`LOCK_FILE`] in
    /// the volumes directory (both made if missing, no symlink followed),
    /// held until the guard is dropped (or its holder dies). A removal
    /// holds it across its check of the users and the removal, a container
    /// being made across recording its volumes and making them.
    pub(crate) fn lock(&self) -> Result<VolumesLock, VolumeError> {
        mkdir_no_symlink(&self.root).map_err(Self::io(&self.root))?;
        let path = self.root.join(LOCK_FILE);
        let fd = rustix::fs::open(
            &path,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .and_then(|fd| {
            rustix::fs::flock(&fd, rustix::fs::FlockOperation::LockExclusive)?;
            Ok(fd)
        })
        .map_err(|e| VolumeError::Io {
            path,
            source: e.into(),
        })?;
        Ok(VolumesLock { _fd: fd })
    }

    /// The containers whose `volumes.json` names volume `name`; one whose
    /// `volumes.json` cannot be read or parsed counts as a user (it may
    /// name the volume: removing it could pull it from under a container).
    fn users(&self, name: &str) -> Result<Vec<String>, VolumeError> {
        let containers = self.state.join("containers");
        let entries = match std::fs::read_dir(&containers) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io(&containers)(e)),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(Self::io(&containers))?;
            let uses = read_uses(&e.path());
            if uses.map_or(true, |uses| uses.iter().any(|u| u.name == name)) {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }
}

/// The store's lock (see [`VolumeStore::lock`]), released when dropped.
#[derive(Debug)]
pub(crate) struct VolumesLock {
    _fd: OwnedFd,
}

/// `mkdir` of `path` (0755, root's) unless it is a directory already; a
/// symlink there is refused (`ELOOP`), never followed.
fn mkdir_no_symlink(path: &Path) -> io::Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let m = std::fs::symlink_metadata(path)?;
    if m.is_dir() {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(if m.is_symlink() {
            libc::ELOOP
        } else {
            libc::ENOTDIR
        }))
    }
}

/// The volumes recorded in the container directory `dir` (none when it
/// has no `volumes.json`).
pub(crate) fn read_uses(dir: &Path) -> io::Result<Vec<Use>> {
    use std::io::Read;
    let path = dir.join(CONTAINER_VOLUMES_FILE);
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut buf = Vec::new();
    f.take(MAX_RECORD).read_to_end(&mut buf)?;
    serde_json::from_slice(&buf).map_err(io::Error::other)
}

/// Records `uses` in the container directory `dir`'s `volumes.json`,
/// atomically and durably as the container's record is written
/// ([`Root::write_atomic`]: a temporary file, fsync, rename): a reader
/// sees the old record or the new one, never a part.
///
/// # Errors
/// [`VolumeError::TooMany`] when the record would be larger than
/// [`read_uses`] reads (it could not be read back: the volumes would never
/// be removed, and every removal would count the container as a user);
/// [`VolumeError::Io`].
pub(crate) fn write_uses(dir: &Path, uses: &[Use]) -> Result<(), VolumeError> {
    let path = dir.join(CONTAINER_VOLUMES_FILE);
    let json = serde_json::to_vec_pretty(uses)
        .map_err(io::Error::other)
        .map_err(VolumeStore::io(&path))?;
    if json.len() as u64 > MAX_RECORD {
        return Err(VolumeError::TooMany {
            what: "bytes of volumes record",
            found: json.len(),
            limit: MAX_RECORD as usize,
        });
    }
    Root::open(dir)
        .and_then(|root| root.write_atomic(&path, &json))
        .map_err(VolumeStore::io(&path))
}

/// Copies the image's content at `path` (resolved in `root`) into the
/// empty directory `data`, with the path's own owner and mode; nothing
/// when the image has no directory there.
pub(crate) fn copy_up(
    root: &RootDir,
    path: &Path,
    data: &Path,
    name: &str,
) -> Result<(), VolumeError> {
    let src = match root.open_dir(path) {
        Ok(fd) => fd,
        Err(_) => return Ok(()),
    };
    let copy_err = |rel: &Path, e: rustix::io::Errno| VolumeError::Copy {
        name: name.to_owned(),
        path: path.join(rel),
        source: e.into(),
    };
    let dst = rustix::fs::open(
        data,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| VolumeError::Io {
        path: data.to_owned(),
        source: e.into(),
    })?;
    let mut copy = Copy {
        entries: 0,
        name,
        path,
        root: rustix::io::dup(&dst).map_err(|e| copy_err(Path::new(""), e))?,
        links: HashMap::new(),
    };
    copy.dir(src.as_fd(), dst.as_fd(), Path::new(""), 0)?;
    let st = rustix::fs::fstat(&src).map_err(|e| copy_err(Path::new(""), e))?;
    let xattrs = xattrs_of(src.as_fd()).map_err(|e| copy_err(Path::new(""), e))?;
    rustix::fs::fchown(
        &dst,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
    )
    .and_then(|()| rustix::fs::fchmod(&dst, Mode::from_raw_mode(st.st_mode & 0o7777)))
    .and_then(|()| set_xattrs(dst.as_fd(), &xattrs))
    .map_err(|e| copy_err(Path::new(""), e))
}

/// One copy from the image into a volume, with its bounds.
struct Copy<'a> {
    entries: u64,
    name: &'a str,
    path: &'a Path,
    /// The volume's directory.
    root: OwnedFd,
    /// Each source file with more than one name copied so far (device,
    /// inode), and its copy: its path below the volume's directory and
    /// its own (device, inode).
    links: HashMap<(u64, u64), (PathBuf, (u64, u64))>,
}

impl Copy<'_> {
    fn err(&self, rel: &Path, e: rustix::io::Errno) -> VolumeError {
        VolumeError::Copy {
            name: self.name.to_owned(),
            path: self.path.join(rel),
            source: e.into(),
        }
    }

    fn too_large(&self, what: &'static str, limit: u64) -> VolumeError {
        VolumeError::TooLarge {
            name: self.name.to_owned(),
            path: self.path.to_owned(),
            what,
            limit,
        }
    }

    fn dir(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        rel: &Path,
        depth: usize,
    ) -> Result<(), VolumeError> {
        if depth >= MAX_COPY_DEPTH {
            return Err(self.too_large("levels", MAX_COPY_DEPTH as u64));
        }
        let names = {
            let dup = rustix::io::dup(src).map_err(|e| self.err(rel, e))?;
            let mut d = rustix::fs::Dir::new(dup).map_err(|e| self.err(rel, e))?;
            let mut names = Vec::new();
            while let Some(entry) = d.read() {
                let entry = entry.map_err(|e| self.err(rel, e))?;
                let n = entry.file_name().to_bytes();
                if n != b"." && n != b".." {
                    names.push(n.to_vec());
                }
            }
            names
        };
        for n in names {
            self.entries += 1;
            if self.entries > MAX_COPY_ENTRIES {
                return Err(self.too_large("entries", MAX_COPY_ENTRIES));
            }
            let name = OsStr::from_bytes(&n);
            let here = rel.join(name);
            let fail = |e| self.err(&here, e);
            let st = rustix::fs::statat(src, name, AtFlags::SYMLINK_NOFOLLOW).map_err(fail)?;
            let mode = Mode::from_raw_mode(st.st_mode & 0o7777);
            let owner = (
                Some(rustix::fs::Uid::from_raw(st.st_uid)),
                Some(rustix::fs::Gid::from_raw(st.st_gid)),
            );
            let file_type = FileType::from_raw_mode(st.st_mode);
            match file_type {
                FileType::Directory => {
                    rustix::fs::mkdirat(dst, name, Mode::from_raw_mode(0o700)).map_err(fail)?;
                    let s = open_at(src, name, OFlags::DIRECTORY).map_err(fail)?;
                    let d = open_at(dst, name, OFlags::DIRECTORY).map_err(fail)?;
                    let xattrs = xattrs_of(s.as_fd()).map_err(fail)?;
                    self.dir(s.as_fd(), d.as_fd(), &here, depth + 1)?;
                    set_meta(&d, owner, mode, &xattrs).map_err(|e| self.err(&here, e))?;
                }
                FileType::CharacterDevice
                | FileType::BlockDevice
                | FileType::Fifo
                | FileType::Socket => {
                    // Never opened but by O_PATH: a fifo cannot block, a
                    // device is not touched.
                    let s = open_at(src, name, OFlags::PATH).map_err(fail)?;
                    let xattrs = xattrs_of(s.as_fd()).map_err(fail)?;
                    rustix::fs::mknodat(
                        dst,
                        name,
                        file_type,
                        Mode::from_raw_mode(0o600),
                        st.st_rdev,
                    )
                    .map_err(fail)?;
                    let d = open_at(dst, name, OFlags::PATH).map_err(fail)?;
                    let made = rustix::fs::fstat(&d).map_err(fail)?;
                    if FileType::from_raw_mode(made.st_mode) != file_type {
                        // Replaced between the mknod and the open.
                        return Err(self.err(&here, rustix::io::Errno::EXIST));
                    }
                    set_meta(&d, owner, mode, &xattrs).map_err(|e| self.err(&here, e))?;
                }
                FileType::RegularFile => {
                    let source = (st.st_dev, st.st_ino);
                    if st.st_nlink > 1 {
                        if let Some((first, made)) = self.links.get(&source) {
                            self.link(first, *made, dst, name, &here)?;
                            continue;
                        }
                    }
                    let s = open_at(src, name, OFlags::empty()).map_err(fail)?;
                    let xattrs = xattrs_of(s.as_fd()).map_err(fail)?;
                    let new = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL;
                    let d = open_at(dst, name, new).map_err(fail)?;
                    let mut from = std::fs::File::from(s);
                    let mut to = std::fs::File::from(d);
                    io::copy(&mut from, &mut to).map_err(|e| VolumeError::Copy {
                        name: self.name.to_owned(),
                        path: self.path.join(&here),
                        source: e,
                    })?;
                    let d: OwnedFd = to.into();
                    set_meta(&d, owner, mode, &xattrs).map_err(|e| self.err(&here, e))?;
                    if st.st_nlink > 1 {
                        let made = rustix::fs::fstat(&d).map_err(|e| self.err(&here, e))?;
                        self.links
                            .insert(source, (here.clone(), (made.st_dev, made.st_ino)));
                    }
                }
                FileType::Symlink => {
                    let target = rustix::fs::readlinkat(src, name, Vec::new()).map_err(fail)?;
                    rustix::fs::symlinkat(target.as_c_str(), dst, name).map_err(fail)?;
                    rustix::fs::chownat(dst, name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(fail)?;
                }
                FileType::Unknown => {}
            }
        }
        Ok(())
    }
}

impl Copy<'_> {
    /// Makes `name` in `dst` another name of the copy made at `first`
    /// (below the volume's directory), which must still be the file
    /// `made` (device, inode): the way to it is walked one directory at a
    /// time without following a symlink, and the link made without
    /// following one, so whatever else might write into the volume (a
    /// container using it) can only ever have another of its own files
    /// linked.
    fn link(
        &self,
        first: &Path,
        made: (u64, u64),
        dst: BorrowedFd<'_>,
        name: &OsStr,
        here: &Path,
    ) -> Result<(), VolumeError> {
        let fail = |e| self.err(here, e);
        let mut dir = rustix::io::dup(&self.root).map_err(fail)?;
        for c in first.parent().into_iter().flat_map(|p| p.components()) {
            dir = open_at(dir.as_fd(), c.as_os_str(), OFlags::PATH | OFlags::DIRECTORY)
                .map_err(fail)?;
        }
        let file = first.file_name().unwrap_or_default();
        let st = rustix::fs::statat(&dir, file, AtFlags::SYMLINK_NOFOLLOW).map_err(fail)?;
        if (st.st_dev, st.st_ino) != made {
            // Replaced since it was copied.
            return Err(fail(rustix::io::Errno::EXIST));
        }
        rustix::fs::linkat(&dir, file, dst, name, AtFlags::empty()).map_err(fail)
    }
}

/// Opens `name` in `dir` with `flags`, never through a symlink
/// (`O_NOFOLLOW`); read-only unless `flags` say otherwise, a new file
/// `0600` until its mode is copied.
fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlags) -> Result<OwnedFd, rustix::io::Errno> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600))
}

/// Gives the file behind `fd` (any descriptor, `O_PATH` included) its
/// owner, then its mode (a chown clears set-id bits), then its extended
/// attributes (a chown clears `security.capability`).
fn set_meta(
    fd: &OwnedFd,
    owner: (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>),
    mode: Mode,
    xattrs: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), rustix::io::Errno> {
    rustix::fs::chownat(fd, "", owner.0, owner.1, AtFlags::EMPTY_PATH)?;
    // fchmod refuses an O_PATH descriptor: through its magic link, which
    // names the file itself (no path walked, nothing followed beyond it).
    rustix::fs::chmod(magic_link(fd.as_fd()).as_str(), mode)?;
    set_xattrs(fd.as_fd(), xattrs)
}

/// `/proc/self/fd/N` of `fd`.
fn magic_link(fd: BorrowedFd<'_>) -> String {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// The largest list of names, or value, of extended attributes read (the
/// kernel's own limits: `XATTR_LIST_MAX`, `XATTR_SIZE_MAX`).
const MAX_XATTR_BYTES: usize = 64 << 10;

/// Extended attributes: (name, value) pairs.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Whether an extended attribute is overlayfs's own (never copied: it
/// would mean something to an overlay mount of the volume).
fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// The extended attributes of the file behind `fd` (any descriptor,
/// `O_PATH` included: read through its magic link), but overlayfs's own;
/// none where the filesystem has none.
fn xattrs_of(fd: BorrowedFd<'_>) -> Result<Xattrs, rustix::io::Errno> {
    use rustix::io::Errno;
    let link = magic_link(fd);
    let mut names = vec![0u8; MAX_XATTR_BYTES];
    let n = match rustix::fs::listxattr(link.as_str(), &mut names[..]) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    let mut value = vec![0u8; MAX_XATTR_BYTES];
    for name in names[..n].split(|&b| b == 0) {
        if name.is_empty() || is_overlay_xattr(name) {
            continue;
        }
        match rustix::fs::getxattr(link.as_str(), name, &mut value[..]) {
            Ok(len) => out.push((name.to_vec(), value[..len].to_vec())),
            // Removed since listed.
            Err(Errno::NODATA) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Sets `xattrs` on the file behind `fd` (through its magic link); one
/// the filesystem does not support is skipped.
fn set_xattrs(fd: BorrowedFd<'_>, xattrs: &[(Vec<u8>, Vec<u8>)]) -> Result<(), rustix::io::Errno> {
    if xattrs.is_empty() {
        return Ok(());
    }
    let link = magic_link(fd);
    for (name, value) in xattrs {
        match rustix::fs::setxattr(
            link.as_str(),
            &name[..],
            value,
            rustix::fs::XattrFlags::empty(),
        ) {
            Ok(()) | Err(rustix::io::Errno::NOTSUP) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_grammar() {
        for ok in ["ab", "data", "my-vol_1.x", "0a", "A.b-c_d"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "", "a", "..", ".a", "-a", "_a", "a/b", "../x", "a b", "a:b", "é1", &long,
        ] {
            assert!(
                matches!(validate_name(bad), Err(VolumeError::InvalidName { .. })),
                "{bad}"
            );
        }
        assert!(is_volume_name(Path::new("data")));
        assert!(!is_volume_name(Path::new("/data")));
    }

    /// A store under a fresh state directory holding volume `data`, and
    /// the directory of container `id` in it.
    pub(crate) fn store_with_volume(id: &str) -> (tempfile::TempDir, VolumeStore, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let store = VolumeStore::new(tmp.path());
        store.create("data").unwrap();
        let dir = tmp.path().join("containers").join(id);
        std::fs::create_dir_all(&dir).unwrap();
        (tmp, store, dir)
    }

    fn uses_of(name: &str) -> Vec<Use> {
        vec![Use {
            name: name.into(),
            destination: "/data".into(),
            anonymous: false,
        }]
    }

    /// A record is written only when a reader takes it back whole: one
    /// larger than that (long destinations) is refused, typed, and
    /// nothing is written.
    #[test]
    fn a_record_too_large_to_read_back_is_not_written() {
        let (_tmp, _store, dir) = store_with_volume("c1");
        let uses: Vec<Use> = (0..300)
            .map(|i| Use {
                name: format!("v{i}"),
                destination: PathBuf::from(format!("/{}", "d".repeat(4000))),
                anonymous: true,
            })
            .collect();
        match write_uses(&dir, &uses) {
            Ok(()) => assert!(
                read_uses(&dir).is_ok_and(|u| u == uses),
                "the record reads back"
            ),
            Err(e) => {
                assert!(matches!(e, VolumeError::TooMany { .. }), "{e:?}");
                assert_eq!(e.kind(), ErrorKind::InvalidInput);
                assert!(!dir.join(CONTAINER_VOLUMES_FILE).exists());
            }
        }
    }

    /// Hard links in the image's content stay hard links in the volume
    /// (as containerd's copy, which Docker's copy-up uses, keeps them):
    /// copied as separate files, one file with many names (a million are
    /// within the entry bound) was written as many times, however large.
    /// Names in other directories link to the first copy too.
    #[test]
    fn hard_links_are_copied_once() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("rootfs");
        let src = root.join("data");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("big"), vec![7u8; 64 << 10]).unwrap();
        for i in 0..50 {
            std::fs::hard_link(src.join("big"), src.join(format!("l{i}"))).unwrap();
        }
        std::fs::hard_link(src.join("big"), src.join("sub/deep")).unwrap();
        std::fs::write(src.join("single"), b"x").unwrap();
        let data = tmp.path().join("volume");
        std::fs::create_dir(&data).unwrap();
        let rootdir = RootDir::open(&root).unwrap();
        copy_up(&rootdir, Path::new("/data"), &data, "v").unwrap();
        let meta = |n: &str| std::fs::symlink_metadata(data.join(n)).unwrap();
        let first = meta("big");
        assert_eq!(first.nlink(), 52, "one file, 52 names");
        for n in (0..50).map(|i| format!("l{i}")).chain(["sub/deep".into()]) {
            assert_eq!(meta(&n).ino(), first.ino(), "{n}");
        }
        assert_eq!(std::fs::read(data.join("l7")).unwrap(), vec![7u8; 64 << 10]);
        assert_eq!(meta("single").nlink(), 1);
    }

    /// The image's path of a volume reaches the error quoted, none of its
    /// control characters printed (a copy deeper than the bound).
    #[test]
    fn a_hostile_volume_path_is_quoted_in_the_error() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("rootfs");
        let deep: PathBuf = std::iter::once("\u{1b}[2Jv")
            .chain(std::iter::repeat_n("d", MAX_COPY_DEPTH + 1))
            .collect();
        std::fs::create_dir_all(root.join(deep)).unwrap();
        let data = tmp.path().join("volume");
        std::fs::create_dir(&data).unwrap();
        let rootdir = RootDir::open(&root).unwrap();
        let e = copy_up(&rootdir, Path::new("/\u{1b}[2Jv"), &data, "v").unwrap_err();
        assert!(matches!(e, VolumeError::TooLarge { .. }), "{e:?}");
        assert!(
            !e.to_string().contains(char::is_control),
            "raw control characters"
        );
    }

    /// Another container's `volumes.json` that cannot be parsed (cut
    /// short, say) may name the volume: the volume is in use, not free.
    #[test]
    fn an_unparsable_volumes_record_keeps_the_volume() {
        let (_tmp, store, dir) = store_with_volume("c1");
        std::fs::write(dir.join(CONTAINER_VOLUMES_FILE), b"[{\"name\": \"da").unwrap();
        match store.remove("data", false) {
            Err(VolumeError::InUse { containers, .. }) => assert_eq!(containers, ["c1"]),
            other => panic!("{other:?}"),
        }
        assert!(store.inspect("data").is_ok());
        store.remove("data", true).unwrap();
        assert!(matches!(
            store.inspect("data"),
            Err(VolumeError::NotFound { .. })
        ));
    }

    /// `volumes.json` is replaced by a rename (a new inode each time),
    /// never rewritten in place: a reader racing the writer over many
    /// rounds always parses a whole record.
    #[test]
    fn the_volumes_record_is_replaced_whole() {
        use std::os::unix::fs::MetadataExt;
        let (_tmp, _store, dir) = store_with_volume("c1");
        let path = dir.join(CONTAINER_VOLUMES_FILE);
        write_uses(&dir, &uses_of("data")).unwrap();
        let first = std::fs::metadata(&path).unwrap().ino();
        let kept = std::fs::File::open(&path).unwrap();
        write_uses(&dir, &uses_of("other")).unwrap();
        assert_ne!(std::fs::metadata(&path).unwrap().ino(), first);
        // The file opened before still holds the first record whole.
        let old: Vec<Use> = serde_json::from_reader(kept).unwrap();
        assert_eq!(old, uses_of("data"));
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..500 {
                    write_uses(&dir, &uses_of(&format!("v{i}"))).unwrap();
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let uses = read_uses(&dir).expect("a whole record");
                assert_eq!(uses.len(), 1);
            }
        });
    }

    /// A removal waits for the store's lock (held by a container being
    /// made), then sees the record written under it and keeps the volume.
    #[test]
    fn a_removal_waits_for_the_lock_and_sees_the_new_user() {
        let (_tmp, store, dir) = store_with_volume("c1");
        let lock = store.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let remover = store.clone();
        let t = std::thread::spawn(move || tx.send(remover.remove("data", false)).unwrap());
        wait_for_a_waiter(&store, &rx, "removal");
        write_uses(&dir, &uses_of("data")).unwrap();
        drop(lock);
        t.join().unwrap();
        match rx.recv().unwrap() {
            Err(VolumeError::InUse { containers, .. }) => assert_eq!(containers, ["c1"]),
            other => panic!("{other:?}"),
        }
        assert!(store.inspect("data").is_ok());
    }

    /// Returns once the kernel lists a process blocked on `store`'s lock
    /// (`/proc/locks`); panics if `done` (what the `what` waiting for it
    /// sends when it ends) comes first, since it did not wait.
    pub(crate) fn wait_for_a_waiter<T: std::fmt::Debug>(
        store: &VolumeStore,
        done: &std::sync::mpsc::Receiver<T>,
        what: &str,
    ) {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(store.root.join(LOCK_FILE)).unwrap().ino();
        let waiting = format!(":{ino} ");
        loop {
            if let Ok(r) = done.try_recv() {
                panic!("the {what} did not wait for the lock: {r:?}");
            }
            let locks = std::fs::read_to_string("/proc/locks").unwrap();
            if locks
                .lines()
                .any(|l| l.contains("-> FLOCK") && l.contains(&waiting))
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Generated names: accepted ones are always one normal path
    /// component below the volumes directory.
    #[test]
    fn generated_names_never_leave_the_volumes_directory() {
        let mut next = crate::spec::test_rng(0x9e37_79b9_7f4a_7c15);
        let alphabet: Vec<char> = "ab0./-_:\\ \0.".chars().collect();
        let store = VolumeStore::new(Path::new("/state"));
        for _ in 0..20000 {
            let len = next(6);
            let name: String = (0..len)
                .map(|_| alphabet[next(alphabet.len() as u64) as usize])
                .collect();
            if let Ok(p) = store.mountpoint(&name) {
                assert_eq!(
                    p,
                    Path::new("/state/volumes").join(&name).join(DATA_DIR),
                    "{name:?}"
                );
                let mut c = Path::new(&name).components();
                assert!(
                    matches!(c.next(), Some(std::path::Component::Normal(_))) && c.next().is_none(),
                    "{name:?}"
                );
            }
        }
    }
}
