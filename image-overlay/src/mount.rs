//! Mounts as data, and the narrow seam that performs them.
//!
//! A snapshotter never mounts anything itself: it returns [`Mount`]s, plain
//! descriptions in containerd's shape (type, source, options). A [`Mounter`]
//! turns them into kernel mounts. [`SysMounter`] is the real one (rustix:
//! the new mount API, `fsopen`/`fsconfig`/`fsmount`/`move_mount`, for
//! overlayfs, so that lowerdir lists longer than a page are passed one
//! directory at a time with `lowerdir+`; `mount(2)` for bind mounts);
//! [`LegacyMounter`] is what it falls back to on kernels before 6.8
//! (`mount(2)` only, long lists shortened through `/proc/self/fd`);
//! `RecordingMounter` (with the `testing` feature) only records what it is
//! asked, for tests. [`MountGuard`] unmounts on drop. [`MountOptions`] reads
//! a mount's options, once, for every mounter (and for the runtime's native
//! executor, which mounts inside the container with the same rules).
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! use image_overlay::mount::{Mount, Mounter, RecordingMounter, MountCall};
//! use std::path::Path;
//!
//! let m = RecordingMounter::default();
//! let mounts = vec![Mount::bind("/var/lib/snap/1/fs", false)];
//! m.mount(&mounts, Path::new("/run/c1/rootfs"))?;
//! m.unmount(Path::new("/run/c1/rootfs"), false)?;
//! assert!(matches!(&m.calls()[0], MountCall::Mount { .. }));
//! # }
//! # Ok::<(), image_overlay::mount::MountError>(())
//! ```

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
#[cfg(any(test, feature = "testing"))]
use std::sync::Mutex;
use std::sync::OnceLock;

use image_core::{Classify, ErrorKind};
use rustix::fs::{FileType, Mode, OFlags, CWD};
use rustix::io::Errno;
use rustix::mount::{
    self as rmount, FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, UnmountFlags,
};
use serde::{Deserialize, Serialize};

/// The `MS_*` flags of [`MountOptions::flags`] (rustix's, re-exported so
/// that a caller never meets two versions of it).
pub use rustix::mount::MountFlags;

/// One mount, as data: what `mount -t FS_TYPE -o OPTIONS SOURCE TARGET` would do.
///
/// Serialized as `{"fs_type", "source", "options"}` plus `"target"` when
/// it has one (how a container record keeps its root filesystem's mounts).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mount {
    /// The filesystem type: `overlay`, `bind`, ...
    pub fs_type: String,
    /// The source: a directory for `bind`, `overlay` for overlayfs.
    pub source: String,
    /// A path relative to the mount point given to [`Mounter::mount`], for
    /// mounts stacked below the root of a list; `None` is the mount point itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PathBuf>,
    /// Mount options, as `mount -o` spells them (`ro`, `rbind`, `lowerdir=a:b`, ...).
    pub options: Vec<String>,
}

impl Mount {
    /// A bind mount of `source` (recursive), read-only when `read_only`.
    pub fn bind(source: impl Into<String>, read_only: bool) -> Mount {
        Mount {
            fs_type: "bind".to_owned(),
            source: source.into(),
            target: None,
            options: vec![
                if read_only { "ro" } else { "rw" }.to_owned(),
                "rbind".to_owned(),
            ],
        }
    }

    /// Whether the options contain `ro`.
    pub fn is_read_only(&self) -> bool {
        self.parsed_options().flags.contains(MountFlags::RDONLY)
    }

    /// The options, read ([`MountOptions::parse`]).
    pub fn parsed_options(&self) -> MountOptions {
        MountOptions::parse(&self.options)
    }

    /// Whether this is a bind mount: of type `bind`, or with a `bind` or
    /// `rbind` option (whatever its type, as `mount(8)` reads it).
    pub fn is_bind(&self) -> bool {
        self.fs_type == "bind" || self.parsed_options().bind
    }

    /// The value of option `key=value`, if present.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find_map(|o| o.split_once('=').and_then(|(k, v)| (k == key).then_some(v)))
    }

    /// Whether a flag option (one without `=`) is present.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.options.iter().any(|o| o == flag)
    }

    /// For an overlay mount: its lower directories, nearest first.
    pub fn lowerdirs(&self) -> Vec<&str> {
        self.option("lowerdir")
            .map(|l| l.split(':').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }
}

/// A mount's options, read once, by the one parser every mounter uses:
/// the flag words `mount(2)` takes as `MS_*` flags, whether it binds
/// (recursively), and the rest, passed to the filesystem as it is.
///
/// - `ro`, `nosuid`, `nodev`, `noexec`, `noatime`, `nodiratime`,
///   `relatime`, `strictatime`, `sync` are [`MountOptions::flags`];
///   `rw` and `defaults` set nothing.
/// - `bind` binds, `rbind` binds recursively (as runc reads them: a mount
///   of type `bind` with neither is a plain, non-recursive bind).
/// - Propagation (`private`, `rprivate`, `shared`, `rshared`, `slave`,
///   `rslave`, `unbindable`, `runbindable`) is dropped: nothing here makes
///   a mount shared, and the native executor makes every mount private.
/// - Anything else (`lowerdir=a:b`, `mode=755`, `userxattr`) is
///   [`MountOptions::data`], in order.
///
/// ```
/// use image_overlay::mount::{MountFlags, MountOptions};
///
/// let o = MountOptions::parse(&["rbind", "rprivate", "ro", "mode=755"]);
/// assert!(o.bind && o.recursive);
/// assert_eq!(o.flags, MountFlags::RDONLY);
/// assert_eq!(o.data, ["mode=755"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MountOptions {
    /// The `MS_*` flags (never `MS_BIND` or `MS_REC`: see
    /// [`MountOptions::bind`]).
    pub flags: MountFlags,
    /// `bind` or `rbind`.
    pub bind: bool,
    /// `rbind`.
    pub recursive: bool,
    /// The filesystem's own options, in order.
    pub data: Vec<String>,
}

impl MountOptions {
    /// Reads `options` (see the type's documentation).
    pub fn parse<S: AsRef<str>>(options: &[S]) -> MountOptions {
        let mut out = MountOptions {
            flags: MountFlags::empty(),
            bind: false,
            recursive: false,
            data: Vec::new(),
        };
        for o in options {
            let o = o.as_ref();
            out.flags |= match o {
                "ro" => MountFlags::RDONLY,
                "nosuid" => MountFlags::NOSUID,
                "nodev" => MountFlags::NODEV,
                "noexec" => MountFlags::NOEXEC,
                "noatime" => MountFlags::NOATIME,
                "nodiratime" => MountFlags::NODIRATIME,
                "relatime" => MountFlags::RELATIME,
                "strictatime" => MountFlags::STRICTATIME,
                "sync" => MountFlags::SYNCHRONOUS,
                "rw" | "defaults" | "private" | "rprivate" | "shared" | "rshared" | "slave"
                | "rslave" | "unbindable" | "runbindable" => MountFlags::empty(),
                "bind" => {
                    out.bind = true;
                    MountFlags::empty()
                }
                "rbind" => {
                    out.bind = true;
                    out.recursive = true;
                    MountFlags::empty()
                }
                other => {
                    out.data.push(other.to_owned());
                    MountFlags::empty()
                }
            };
        }
        out
    }

    /// The data options joined as `mount(2)` takes them (`a,b=c`).
    pub fn data_string(&self) -> String {
        self.data.join(",")
    }

    /// The flags that are per-mount attributes of the new mount API
    /// (`fsmount`, `mount_setattr`); [`MountFlags::SYNCHRONOUS`], a
    /// superblock flag, is not one.
    pub fn attrs(&self) -> MountAttrFlags {
        let mut a = MountAttrFlags::empty();
        for (flag, attr) in [
            (MountFlags::RDONLY, MountAttrFlags::MOUNT_ATTR_RDONLY),
            (MountFlags::NOSUID, MountAttrFlags::MOUNT_ATTR_NOSUID),
            (MountFlags::NODEV, MountAttrFlags::MOUNT_ATTR_NODEV),
            (MountFlags::NOEXEC, MountAttrFlags::MOUNT_ATTR_NOEXEC),
            (MountFlags::NOATIME, MountAttrFlags::MOUNT_ATTR_NOATIME),
            (
                MountFlags::NODIRATIME,
                MountAttrFlags::MOUNT_ATTR_NODIRATIME,
            ),
            (
                MountFlags::STRICTATIME,
                MountAttrFlags::MOUNT_ATTR_STRICTATIME,
            ),
            (MountFlags::RELATIME, MountAttrFlags::MOUNT_ATTR_RELATIME),
        ] {
            if self.flags.contains(flag) {
                a |= attr;
            }
        }
        a
    }
}

/// A failed mount or unmount.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// The kernel refused a mount.
    #[error("mount {fs_type} {source_path} on {target}: {step}")]
    Mount {
        /// The filesystem type.
        fs_type: String,
        /// The mount source.
        source_path: String,
        /// The mount point.
        target: PathBuf,
        /// Which call failed (`fsopen`, `fsconfig lowerdir+`, `mount`, ...).
        step: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The kernel refused an unmount.
    #[error("unmount {target}")]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A mount this mounter does not know how to perform.
    #[error("unsupported mount {fs_type} on {target}: {reason}")]
    Unsupported {
        /// The filesystem type.
        fs_type: String,
        /// The mount point.
        target: PathBuf,
        /// Why.
        reason: String,
    },
    /// An overlay mount with more lower directories than overlayfs stacks
    /// ([`MAX_OVERLAY_LOWERS`]): refused before the kernel is asked, which
    /// would only say `EINVAL`.
    #[error(
        "overlay on {target}: {lowers} lower layers, overlayfs stacks at most {max} \
         (use the copy snapshotter for such an image)"
    )]
    TooManyLayers {
        /// The mount point.
        target: PathBuf,
        /// How many lower directories the mount names.
        lowers: usize,
        /// The limit, [`MAX_OVERLAY_LOWERS`].
        max: usize,
    },
    /// A mount's relative target is absolute or has `..`.
    #[error("mount target {target} is not a plain relative path")]
    BadTarget {
        /// The offending target.
        target: PathBuf,
    },
    /// A mount's relative target is reached through a symbolic link below
    /// the mount point (the files mounted there, an image's, would decide
    /// where on the host it lands).
    #[error("mount target {target} is reached through a symbolic link")]
    SymlinkTarget {
        /// The mount point, up to the symlink.
        target: PathBuf,
    },
}

impl Classify for MountError {
    fn kind(&self) -> ErrorKind {
        match self {
            MountError::Mount { source, .. } | MountError::Unmount { source, .. } => {
                match source.raw_os_error() {
                    Some(e) if e == Errno::PERM.raw_os_error() => ErrorKind::PermissionDenied,
                    _ => Classify::kind(source),
                }
            }
            MountError::Unsupported { .. } | MountError::TooManyLayers { .. } => {
                ErrorKind::Unsupported
            }
            MountError::BadTarget { .. } => ErrorKind::InvalidInput,
            MountError::SymlinkTarget { .. } => ErrorKind::Unsafe,
        }
    }
}

/// Performs mounts described as data. Keep implementations small: this
/// is the seam between the snapshot logic and the kernel.
pub trait Mounter: Send + Sync {
    /// Mounts `mounts` in order on `target` (each on `target/<mount.target>`
    /// when it names a relative target, which must be reached through no
    /// symlink below `target`: [`MountError::SymlinkTarget`]).
    ///
    /// # Errors
    /// A [`MountError`]; mounts made before the failing one are undone.
    fn mount(&self, mounts: &[Mount], target: &Path) -> Result<(), MountError>;

    /// Unmounts `target`; `detach` unmounts lazily (`MNT_DETACH`).
    ///
    /// # Errors
    /// [`MountError::Unmount`].
    fn unmount(&self, target: &Path, detach: bool) -> Result<(), MountError>;

    /// Checks that `mounts` can be mounted on `target`, leaving no mount.
    /// By default it mounts and unmounts lazily; [`SysMounter`] creates a
    /// lone overlay with the new mount API and closes it unattached, so no
    /// unmount waits for the kernel's grace period (tens of milliseconds,
    /// paid by every fresh snapshot root's probe).
    ///
    /// # Errors
    /// As [`Mounter::mount`].
    fn probe(&self, mounts: &[Mount], target: &Path) -> Result<(), MountError> {
        probe_by_mounting(self, mounts, target)
    }
}

/// [`Mounter::probe`] by mounting `mounts` on `target` with `mounter`,
/// then unmounting them lazily.
fn probe_by_mounting(
    mounter: &(impl Mounter + ?Sized),
    mounts: &[Mount],
    target: &Path,
) -> Result<(), MountError> {
    mounter.mount(mounts, target)?;
    let _ = mounter.unmount(target, true);
    Ok(())
}

impl<T: Mounter + ?Sized> Mounter for &T {
    fn mount(&self, mounts: &[Mount], target: &Path) -> Result<(), MountError> {
        (**self).mount(mounts, target)
    }
    fn unmount(&self, target: &Path, detach: bool) -> Result<(), MountError> {
        (**self).unmount(target, detach)
    }
    fn probe(&self, mounts: &[Mount], target: &Path) -> Result<(), MountError> {
        (**self).probe(mounts, target)
    }
}

impl<T: Mounter + ?Sized> Mounter for Box<T> {
    fn mount(&self, mounts: &[Mount], target: &Path) -> Result<(), MountError> {
        (**self).mount(mounts, target)
    }
    fn unmount(&self, target: &Path, detach: bool) -> Result<(), MountError> {
        (**self).unmount(target, detach)
    }
    fn probe(&self, mounts: &[Mount], target: &Path) -> Result<(), MountError> {
        (**self).probe(mounts, target)
    }
}

impl<T: Mounter + ?Sized> Mounter for std::sync::Arc<T> {
    fn mount(&self, mounts: &[Mount], target: &Path) -> Result<(), MountError> {
        (**self).mount(mounts, target)
    }
    fn unmount(&self, target: &Path, detach: bool) -> Result<(), MountError> {
        (**self).unmount(target, detach)
    }
    fn probe(&self, mounts: &[Mount], target: &Path) -> Result<(), MountError> {
        (**self).probe(mounts, target)
    }
}

fn mount_point(target: &Path, m: &Mount) -> Result<PathBuf, MountError> {
    match &m.target {
        None => Ok(target.to_path_buf()),
        Some(rel) => {
            if rel
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
            {
                return Err(MountError::BadTarget {
                    target: rel.clone(),
                });
            }
            Ok(target.join(rel))
        }
    }
}

/// Checks that `m`'s relative target below `target` is reached through
/// no symlink: each component opened `O_PATH | O_NOFOLLOW` from the one
/// before, none a symlink (the last may be a file, for a file bind). The
/// mounts of a list are made before anything runs on them, so nothing
/// changes the tree between this check and the mount.
fn check_no_symlink(target: &Path, m: &Mount, point: &Path) -> Result<(), MountError> {
    let Some(rel) = &m.target else {
        return Ok(());
    };
    let open_err = |at: &Path, e: Errno| MountError::Mount {
        fs_type: m.fs_type.clone(),
        source_path: m.source.clone(),
        target: at.to_path_buf(),
        step: "opening the mount point".to_owned(),
        source: errno_io(e),
    };
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = rustix::fs::open(target, flags | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| open_err(target, e))?;
    let mut at = target.to_path_buf();
    for c in rel.components() {
        let Component::Normal(name) = c else {
            continue;
        };
        at.push(name);
        let next =
            rustix::fs::openat(&dir, name, flags, Mode::empty()).map_err(|e| open_err(&at, e))?;
        let st = rustix::fs::fstat(&next).map_err(|e| open_err(&at, e))?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            return Err(MountError::SymlinkTarget { target: at });
        }
        dir = next;
    }
    debug_assert_eq!(at, point);
    Ok(())
}

/// The real mounter (needs `CAP_SYS_ADMIN` in the mount namespace).
///
/// - `overlay`: the new mount API, one `fsconfig(lowerdir+)` per lower
///   directory (kernel 6.8+), so the list is not bounded by a page; on older
///   kernels, or where `fsopen` is refused (`ENOSYS`, `EPERM`: a seccomp
///   filter), `mount(2)` as [`LegacyMounter`] does.
///   The flags of [`MountOptions`] become mount attributes (`sync` a
///   superblock flag); the data options are passed to overlayfs as they are.
/// - `bind` (or options containing `bind`/`rbind`): `mount(2)` with
///   `MS_BIND` (`MS_REC` for `rbind`), then a remount with the flags
///   (`ro`, `nosuid`, ...).
/// - any other type (`tmpfs`, `proc`, ...): `mount(2)` with the flags and
///   the data options.
#[derive(Debug, Default, Clone, Copy)]
pub struct SysMounter;

impl SysMounter {
    /// A real mounter.
    pub fn new() -> SysMounter {
        SysMounter
    }
}

/// A real mounter that mounts overlay with `mount(2)` only, never the new
/// mount API: what [`SysMounter`] falls back to on kernels before 6.8 and
/// where `fsopen` is refused. The option string must fit a page; a longer
/// one (many layers) names the directories through a descriptor of their
/// common parent (`/proc/self/fd/N/<id>/fs`, a few bytes each instead of a
/// full path), which fits well over a hundred snapshot layers. Bind mounts
/// as [`SysMounter`].
#[derive(Debug, Default, Clone, Copy)]
pub struct LegacyMounter;

fn has_lowerdir_plus() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(|| {
        let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
            return false;
        };
        let mut it = release.split(|c: char| !c.is_ascii_digit());
        let major: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let minor: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        (major, minor) >= (6, 8)
    })
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from(e)
}

impl Mounter for SysMounter {
    fn mount(&self, mounts: &[Mount], target: &Path) -> Result<(), MountError> {
        mount_all(self, mounts, target, false)
    }

    fn unmount(&self, target: &Path, detach: bool) -> Result<(), MountError> {
        unmount(target, detach)
    }

    fn probe(&self, mounts: &[Mount], target: &Path) -> Result<(), MountError> {
        if let [m] = mounts {
            if m.fs_type == "overlay" && m.target.is_none() && create_overlay_unattached(m, target)?
            {
                return Ok(());
            }
        }
        probe_by_mounting(self, mounts, target)
    }
}

impl Mounter for LegacyMounter {
    fn mount(&self, mounts: &[Mount], target: &Path) -> Result<(), MountError> {
        mount_all(self, mounts, target, true)
    }

    fn unmount(&self, target: &Path, detach: bool) -> Result<(), MountError> {
        unmount(target, detach)
    }
}

/// Mounts `mounts` in order under `target` (overlay with `mount(2)` only
/// when `legacy`); on a failure, unmounts what it mounted.
fn mount_all(
    mounter: &dyn Mounter,
    mounts: &[Mount],
    target: &Path,
    legacy: bool,
) -> Result<(), MountError> {
    let mut done: Vec<PathBuf> = Vec::new();
    for m in mounts {
        let result = mount_point(target, m).and_then(|point| {
            check_no_symlink(target, m, &point)?;
            let options = m.parsed_options();
            if m.fs_type == "bind" || options.bind {
                mount_bind(m, &options, &point)
            } else if m.fs_type == "overlay" {
                mount_overlay(m, &options, &point, legacy)
            } else {
                mount_other(m, &options, &point)
            }
            .map(|()| point)
        });
        match result {
            Ok(point) => done.push(point),
            Err(e) => {
                for p in done.iter().rev() {
                    let _ = mounter.unmount(p, true);
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

fn unmount(target: &Path, detach: bool) -> Result<(), MountError> {
    let flags = if detach {
        UnmountFlags::DETACH | UnmountFlags::NOFOLLOW
    } else {
        UnmountFlags::NOFOLLOW
    };
    rmount::unmount(target, flags).map_err(|e| MountError::Unmount {
        target: target.to_path_buf(),
        source: errno_io(e),
    })
}

/// The failure of step `step` of mounting `m` on `point`.
fn mount_err(m: &Mount, point: &Path, step: &str, e: Errno) -> MountError {
    MountError::Mount {
        fs_type: m.fs_type.clone(),
        source_path: m.source.clone(),
        target: point.to_path_buf(),
        step: step.to_owned(),
        source: errno_io(e),
    }
}

fn mount_bind(m: &Mount, options: &MountOptions, point: &Path) -> Result<(), MountError> {
    let err = |step: &str, e: Errno| mount_err(m, point, step, e);
    if options.recursive {
        rmount::mount_bind_recursive(m.source.as_str(), point).map_err(|e| err("mount", e))?;
    } else {
        rmount::mount_bind(m.source.as_str(), point).map_err(|e| err("mount", e))?;
    }
    if !options.flags.is_empty() {
        if let Err(e) = rmount::mount_remount(point, options.flags | MountFlags::BIND, "") {
            let _ = rmount::unmount(point, UnmountFlags::DETACH);
            return Err(err("remount", e));
        }
    }
    Ok(())
}

/// The options of `m` as the C string `mount(2)` takes.
fn data_cstring(m: &Mount, point: &Path, data: String) -> Result<std::ffi::CString, MountError> {
    std::ffi::CString::new(data).map_err(|_| MountError::Unsupported {
        fs_type: m.fs_type.clone(),
        target: point.to_path_buf(),
        reason: "NUL byte in options".to_owned(),
    })
}

/// Any other filesystem (`tmpfs`, `proc`, ...): `mount(2)` with the flags
/// and the data options.
fn mount_other(m: &Mount, options: &MountOptions, point: &Path) -> Result<(), MountError> {
    let data = data_cstring(m, point, options.data_string())?;
    let data = (!data.as_bytes().is_empty()).then_some(data.as_c_str());
    rmount::mount(
        m.source.as_str(),
        point,
        m.fs_type.as_str(),
        options.flags,
        data,
    )
    .map_err(|e| mount_err(m, point, "mount", e))
}

/// The most lower directories one overlayfs mount takes: the kernel's
/// `OVL_MAX_STACK` (fs/overlayfs/params.h), 500 since lowerdir stacking
/// began, counted the same through `lowerdir=` and `lowerdir+`. Docker's
/// overlay2 driver stops earlier (128), containers/storage at this one.
pub const MAX_OVERLAY_LOWERS: usize = 500;

fn mount_overlay(
    m: &Mount,
    options: &MountOptions,
    point: &Path,
    legacy: bool,
) -> Result<(), MountError> {
    let err = |step: &str, e: Errno| mount_err(m, point, step, e);
    let lowers = m.lowerdirs().len();
    if lowers > MAX_OVERLAY_LOWERS {
        return Err(MountError::TooManyLayers {
            target: point.to_owned(),
            lowers,
            max: MAX_OVERLAY_LOWERS,
        });
    }
    if legacy || !has_lowerdir_plus() {
        return mount_overlay_legacy(m, options, point);
    }
    let fs = match rmount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(fs) => fs,
        Err(Errno::NOSYS) | Err(Errno::PERM) => return mount_overlay_legacy(m, options, point),
        Err(e) => return Err(err("fsopen", e)),
    };
    configure_overlay(&fs, m, options, point)?;
    let mnt = rmount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, options.attrs())
        .map_err(|e| err("fsmount", e))?;
    rmount::move_mount(
        &mnt,
        "",
        CWD,
        point,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| err("move_mount", e))
}

/// Creates the overlay `m` describes in a filesystem context and closes it
/// unattached: the kernel checks its options, directories and the caller's
/// privilege as a mount would, and there is no mount to undo. `Ok(false)`
/// where the new mount API (with `lowerdir+`) is not there to do it.
fn create_overlay_unattached(m: &Mount, point: &Path) -> Result<bool, MountError> {
    if !has_lowerdir_plus() {
        return Ok(false);
    }
    let fs = match rmount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(fs) => fs,
        Err(Errno::NOSYS) | Err(Errno::PERM) => return Ok(false),
        Err(e) => return Err(mount_err(m, point, "fsopen", e)),
    };
    configure_overlay(&fs, m, &m.parsed_options(), point)?;
    Ok(true)
}

/// Sets `m`'s source and options on the overlay context `fs` and creates
/// the filesystem (`FSCONFIG_CMD_CREATE`).
fn configure_overlay(
    fs: &OwnedFd,
    m: &Mount,
    options: &MountOptions,
    point: &Path,
) -> Result<(), MountError> {
    let err = |step: &str, e: Errno| mount_err(m, point, step, e);
    rmount::fsconfig_set_string(fs, "source", m.source.as_str())
        .map_err(|e| err("fsconfig source", e))?;
    if options.flags.contains(MountFlags::SYNCHRONOUS) {
        rmount::fsconfig_set_flag(fs, "sync").map_err(|e| err("fsconfig sync", e))?;
    }
    for o in &options.data {
        match o.split_once('=') {
            Some(("lowerdir", list)) => {
                for dir in list.split(':').filter(|d| !d.is_empty()) {
                    rmount::fsconfig_set_string(fs, "lowerdir+", dir)
                        .map_err(|e| err(&format!("fsconfig lowerdir+ {dir}"), e))?;
                }
            }
            Some((key, value)) => rmount::fsconfig_set_string(fs, key, value)
                .map_err(|e| err(&format!("fsconfig {key}={value}"), e))?,
            None => rmount::fsconfig_set_flag(fs, o.as_str())
                .map_err(|e| err(&format!("fsconfig {o}"), e))?,
        }
    }
    rmount::fsconfig_create(fs).map_err(|e| err("fsconfig create", e))
}

/// The most bytes of mount options `mount(2)` takes (one page).
const PAGE: usize = 4096;

/// `options` with the directories of `lowerdir=`, `upperdir=` and
/// `workdir=` named through a descriptor of their common parent
/// (`/proc/self/fd/N/rel`), and that descriptor; `None` when they are not
/// all absolute or have no common parent below `/`.
fn shorten_dirs(options: &[String]) -> Option<(Vec<String>, OwnedFd)> {
    let is_dir_option = |k: &str| matches!(k, "lowerdir" | "upperdir" | "workdir");
    let mut dirs: Vec<&Path> = Vec::new();
    for o in options {
        if let Some((k, v)) = o.split_once('=') {
            if is_dir_option(k) {
                dirs.extend(v.split(':').filter(|d| !d.is_empty()).map(Path::new));
            }
        }
    }
    let first = dirs.first()?;
    if !dirs.iter().all(|d| d.is_absolute()) {
        return None;
    }
    let mut common: PathBuf = first.parent()?.to_path_buf();
    while !dirs.iter().all(|d| d.starts_with(&common)) {
        common = common.parent()?.to_path_buf();
    }
    // Not `/` itself: nothing to shorten then.
    common.parent()?;
    let fd = rustix::fs::open(
        &common,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()?;
    let prefix = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let short = |d: &str| -> String {
        match Path::new(d).strip_prefix(&common) {
            Ok(rel) if rel.as_os_str().is_empty() => prefix.clone(),
            Ok(rel) => format!("{prefix}/{}", rel.display()),
            Err(_) => d.to_owned(),
        }
    };
    let out = options
        .iter()
        .map(|o| match o.split_once('=') {
            Some((k, v)) if is_dir_option(k) => {
                let list: Vec<String> = v.split(':').map(short).collect();
                format!("{k}={}", list.join(":"))
            }
            _ => o.clone(),
        })
        .collect();
    Some((out, fd))
}

fn mount_overlay_legacy(m: &Mount, options: &MountOptions, point: &Path) -> Result<(), MountError> {
    let mut data = options.data.clone();
    // Keeps the common parent open until the mount is made.
    let mut _parent = None;
    if data.join(",").len() >= PAGE {
        if let Some((short, fd)) = shorten_dirs(&data) {
            data = short;
            _parent = Some(fd);
        }
    }
    let data = data.join(",");
    if data.len() >= PAGE {
        return Err(MountError::Unsupported {
            fs_type: m.fs_type.clone(),
            target: point.to_path_buf(),
            reason: format!(
                "{} bytes of options exceed a page and this kernel has no lowerdir+",
                data.len()
            ),
        });
    }
    let data = data_cstring(m, point, data)?;
    rmount::mount(
        m.source.as_str(),
        point,
        "overlay",
        options.flags,
        data.as_c_str(),
    )
    .map_err(|e| mount_err(m, point, "mount", e))
}

/// A call recorded by [`RecordingMounter`].
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountCall {
    /// A [`Mounter::mount`] call.
    Mount {
        /// The mounts.
        mounts: Vec<Mount>,
        /// The mount point.
        target: PathBuf,
    },
    /// A [`Mounter::unmount`] call.
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// Lazily.
        detach: bool,
    },
}

/// A mounter that records its calls and performs nothing, for tests.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Default)]
pub struct RecordingMounter {
    calls: Mutex<Vec<MountCall>>,
}

#[cfg(any(test, feature = "testing"))]
impl RecordingMounter {
    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<MountCall> {
        match self.calls.lock() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn push(&self, call: MountCall) {
        match self.calls.lock() {
            Ok(mut c) => c.push(call),
            Err(p) => p.into_inner().push(call),
        }
    }
}

#[cfg(any(test, feature = "testing"))]
impl Mounter for RecordingMounter {
    fn mount(&self, mounts: &[Mount], target: &Path) -> Result<(), MountError> {
        for m in mounts {
            mount_point(target, m)?;
        }
        self.push(MountCall::Mount {
            mounts: mounts.to_vec(),
            target: target.to_path_buf(),
        });
        Ok(())
    }

    fn unmount(&self, target: &Path, detach: bool) -> Result<(), MountError> {
        self.push(MountCall::Unmount {
            target: target.to_path_buf(),
            detach,
        });
        Ok(())
    }
}

/// Mounts on creation and unmounts on drop (lazily, with `MNT_DETACH`, if a
/// plain unmount fails), so that no mount outlives its scope.
#[derive(Debug)]
pub struct MountGuard<M: Mounter> {
    mounter: M,
    points: Vec<PathBuf>,
}

impl<M: Mounter> MountGuard<M> {
    /// Mounts `mounts` on `target` with `mounter`.
    ///
    /// # Errors
    /// As [`Mounter::mount`].
    pub fn mount(mounter: M, mounts: &[Mount], target: &Path) -> Result<Self, MountError> {
        mounter.mount(mounts, target)?;
        let mut points: Vec<PathBuf> = Vec::with_capacity(mounts.len());
        for m in mounts {
            points.push(mount_point(target, m)?);
        }
        Ok(MountGuard { mounter, points })
    }

    /// The mount point.
    pub fn target(&self) -> Option<&Path> {
        self.points.first().map(PathBuf::as_path)
    }

    /// Unmounts now, reporting the first failure (and still detaching).
    ///
    /// # Errors
    /// [`MountError::Unmount`] when a plain unmount failed (the mount was
    /// then detached lazily).
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.release()
    }

    fn release(&mut self) -> Result<(), MountError> {
        let mut first = None;
        while let Some(p) = self.points.pop() {
            let mut result = self.mounter.unmount(&p, false);
            // Busy for a moment: a process forked elsewhere in this program
            // holds a copy of a descriptor under the mount until its exec
            // closes it. Wait for that (at most about 127 ms) before
            // giving up and detaching.
            let mut wait = std::time::Duration::from_millis(1);
            while is_busy(&result) && wait <= std::time::Duration::from_millis(64) {
                std::thread::sleep(wait);
                wait *= 2;
                result = self.mounter.unmount(&p, false);
            }
            if let Err(e) = result {
                let _ = self.mounter.unmount(&p, true);
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Whether an unmount failed because the mount was busy (`EBUSY`).
fn is_busy(result: &Result<(), MountError>) -> bool {
    matches!(result, Err(MountError::Unmount { source, .. })
        if source.raw_os_error() == Some(Errno::BUSY.raw_os_error()))
}

impl<M: Mounter> Drop for MountGuard<M> {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mounter whose plain unmount is busy `busy` times, then succeeds.
    struct Busy {
        busy: std::sync::atomic::AtomicUsize,
        plain: std::sync::atomic::AtomicUsize,
    }

    impl Mounter for &Busy {
        fn mount(&self, _: &[Mount], _: &Path) -> Result<(), MountError> {
            Ok(())
        }
        fn unmount(&self, target: &Path, detach: bool) -> Result<(), MountError> {
            use std::sync::atomic::Ordering::SeqCst;
            if detach {
                return Ok(());
            }
            self.plain.fetch_add(1, SeqCst);
            if self.busy.load(SeqCst) == 0 {
                return Ok(());
            }
            self.busy.fetch_sub(1, SeqCst);
            Err(MountError::Unmount {
                target: target.to_owned(),
                source: io::Error::from_raw_os_error(Errno::BUSY.raw_os_error()),
            })
        }
    }

    /// A mount busy for a moment (a forked child's copy of a descriptor)
    /// is unmounted once it is free, not reported; one that stays busy is.
    #[test]
    fn a_briefly_busy_mount_is_waited_for() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let m = Mount::bind("/x", false);
        for (busy, ok) in [(3, true), (100, false)] {
            let mounter = Busy {
                busy: AtomicUsize::new(busy),
                plain: AtomicUsize::new(0),
            };
            let guard = MountGuard::mount(&mounter, std::slice::from_ref(&m), Path::new("/mnt"))
                .expect("mount");
            assert_eq!(guard.unmount().is_ok(), ok, "busy {busy}");
            let tries = mounter.plain.load(SeqCst);
            assert!(
                if ok {
                    tries == 4
                } else {
                    tries > 4 && tries < 10
                },
                "{tries}"
            );
        }
    }

    #[test]
    fn options_are_read() {
        let m = Mount {
            fs_type: "overlay".into(),
            source: "overlay".into(),
            target: None,
            options: vec!["lowerdir=/a:/b".into(), "upperdir=/u".into(), "ro".into()],
        };
        assert_eq!(m.lowerdirs(), vec!["/a", "/b"]);
        assert_eq!(m.option("upperdir"), Some("/u"));
        assert!(m.is_read_only());
        assert!(!Mount::bind("/x", false).is_read_only());
    }

    #[test]
    fn one_parser_reads_every_word() {
        let flags = [
            ("ro", MountFlags::RDONLY),
            ("nosuid", MountFlags::NOSUID),
            ("nodev", MountFlags::NODEV),
            ("noexec", MountFlags::NOEXEC),
            ("noatime", MountFlags::NOATIME),
            ("nodiratime", MountFlags::NODIRATIME),
            ("relatime", MountFlags::RELATIME),
            ("strictatime", MountFlags::STRICTATIME),
            ("sync", MountFlags::SYNCHRONOUS),
        ];
        let ignored = [
            "rw",
            "defaults",
            "private",
            "rprivate",
            "shared",
            "rshared",
            "slave",
            "rslave",
            "unbindable",
            "runbindable",
        ];
        let data = ["lowerdir=/a:/b", "mode=755", "userxattr", "size=65536k"];
        // Every subset of flags, interleaved with every ignored word and
        // the data in order: the flags are their union, the data kept in
        // order, nothing else appears.
        for mask in 0u32..(1 << flags.len()) {
            let mut words: Vec<&str> = Vec::new();
            let mut want = MountFlags::empty();
            for (i, (w, f)) in flags.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    words.push(w);
                    want |= *f;
                }
                words.push(ignored[(i + mask as usize) % ignored.len()]);
                if let Some(d) = data.get(i) {
                    words.push(d);
                }
            }
            let o = MountOptions::parse(&words);
            assert_eq!(o.flags, want, "{words:?}");
            assert_eq!(o.data, data, "{words:?}");
            assert!(!o.bind && !o.recursive);
            assert_eq!(o.data_string(), data.join(","));
            let attrs = o.attrs();
            assert_eq!(
                attrs.contains(MountAttrFlags::MOUNT_ATTR_RDONLY),
                want.contains(MountFlags::RDONLY)
            );
            assert_eq!(
                attrs.contains(MountAttrFlags::MOUNT_ATTR_NOATIME),
                want.contains(MountFlags::NOATIME)
            );
        }
        let b = MountOptions::parse(&["bind", "ro"]);
        assert!(b.bind && !b.recursive);
        let r = MountOptions::parse(&["rbind"]);
        assert!(r.bind && r.recursive);
        let typed = Mount {
            fs_type: "bind".into(),
            source: "/x".into(),
            target: None,
            options: vec![],
        };
        assert!(typed.is_bind() && !typed.parsed_options().recursive);
        assert!(Mount::bind("/x", true).parsed_options().recursive);
    }

    #[test]
    fn a_mount_serializes_as_the_records_kept_it() {
        // A container record written before the mount model was one type.
        let old = r#"{"fs_type":"overlay","source":"overlay","options":["lowerdir=/a"]}"#;
        let m: Mount = serde_json::from_str(old).expect("parse");
        assert_eq!(m.target, None);
        assert_eq!(serde_json::to_string(&m).expect("json"), old);
        let mut m = Mount::bind("/b", true);
        m.target = Some("sub".into());
        let back: Mount =
            serde_json::from_str(&serde_json::to_string(&m).expect("json")).expect("parse");
        assert_eq!(back, m);
    }

    #[test]
    fn guard_unmounts_in_reverse() {
        let rec = RecordingMounter::default();
        let mut inner = Mount::bind("/b", true);
        inner.target = Some("sub".into());
        {
            let _g = MountGuard::mount(&rec, &[Mount::bind("/a", false), inner], Path::new("/t"))
                .expect("mount");
        }
        let calls = rec.calls();
        assert_eq!(calls.len(), 3);
        assert_eq!(
            calls[1],
            MountCall::Unmount {
                target: "/t/sub".into(),
                detach: false
            }
        );
    }

    #[test]
    fn bad_targets_are_refused() {
        let rec = RecordingMounter::default();
        let mut m = Mount::bind("/a", false);
        m.target = Some("../x".into());
        assert!(matches!(
            rec.mount(&[m], Path::new("/t")),
            Err(MountError::BadTarget { .. })
        ));
    }
}
