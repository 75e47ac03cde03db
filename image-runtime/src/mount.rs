//! Performing a [`Rootfs::Mounts`](crate::rootfs::Rootfs) list (what a
//! snapshotter returns) on the bundle's `rootfs` directory, and taking
//! everything down again.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

use crate::rootfs::{MountSpec, RootfsError};

/// Splits mount options into flags and the data string.
pub fn split_options(options: &[String]) -> (MountFlags, String) {
    let mut flags = MountFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= MountFlags::RDONLY,
            "rw" | "defaults" => {}
            "nosuid" => flags |= MountFlags::NOSUID,
            "nodev" => flags |= MountFlags::NODEV,
            "noexec" => flags |= MountFlags::NOEXEC,
            "noatime" => flags |= MountFlags::NOATIME,
            "nodiratime" => flags |= MountFlags::NODIRATIME,
            "relatime" => flags |= MountFlags::RELATIME,
            "strictatime" => flags |= MountFlags::STRICTATIME,
            "sync" => flags |= MountFlags::SYNCHRONOUS,
            "bind" => flags |= MountFlags::BIND,
            "rbind" => flags |= MountFlags::BIND | MountFlags::REC,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

fn mount_err(m: &MountSpec, target: &Path, source: std::io::Error) -> RootfsError {
    RootfsError::Mount {
        fs_type: m.fs_type.clone(),
        source_path: m.source.clone(),
        target: target.to_owned(),
        source,
    }
}

/// Performs `mounts` in order on `target` (a directory that exists).
/// On failure, what was mounted is unmounted again.
///
/// # Errors
/// [`RootfsError::Mount`] (classified `PermissionDenied` without the
/// privilege to mount).
pub fn mount_all(mounts: &[MountSpec], target: &Path) -> Result<(), RootfsError> {
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = mount_one(m, target) {
            for _ in 0..i {
                let _ = rustix::mount::unmount(target, UnmountFlags::DETACH);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn mount_one(m: &MountSpec, target: &Path) -> Result<(), RootfsError> {
    let (flags, data) = split_options(&m.options);
    let err = |e: rustix::io::Errno| mount_err(m, target, e.into());
    let bind = flags.contains(MountFlags::BIND) || m.fs_type == "bind";
    if m.fs_type == "overlay" && !bind {
        return mount_overlay(m, target);
    }
    if bind {
        let rec = flags.contains(MountFlags::REC);
        if rec {
            rustix::mount::mount_bind_recursive(m.source.as_str(), target).map_err(err)?;
        } else {
            rustix::mount::mount_bind(m.source.as_str(), target).map_err(err)?;
        }
        let extra = flags - MountFlags::BIND - MountFlags::REC;
        if !extra.is_empty() {
            rustix::mount::mount_remount(target, extra | MountFlags::BIND, "").map_err(err)?;
        }
        return Ok(());
    }
    let data = CString::new(data).map_err(|e| {
        mount_err(
            m,
            target,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        )
    })?;
    let data = (!data.as_bytes().is_empty()).then_some(data.as_c_str());
    rustix::mount::mount(m.source.as_str(), target, m.fs_type.as_str(), flags, data).map_err(err)
}

/// overlayfs through image-overlay's mounter: one `fsconfig(lowerdir+)` per
/// layer where the kernel has it, so deep images are not bounded by the
/// page-sized option string of `mount(2)`.
fn mount_overlay(m: &MountSpec, target: &Path) -> Result<(), RootfsError> {
    use image_overlay::mount::{Mount, MountError, Mounter, SysMounter};
    let mount = Mount {
        fs_type: m.fs_type.clone(),
        source: m.source.clone(),
        target: None,
        options: m.options.clone(),
    };
    SysMounter.mount(&[mount], target).map_err(|e| match e {
        MountError::Mount { source, .. } | MountError::Unmount { source, .. } => {
            mount_err(m, target, source)
        }
        other => RootfsError::Overlay(other),
    })
}

/// Unmounts every mount at or below `dir`, deepest first; a busy mount is
/// detached (lazy) rather than left behind.
///
/// # Errors
/// [`RootfsError::Unmount`] for a mount that cannot be removed at all.
pub fn unmount_all(dir: &Path) -> Result<(), RootfsError> {
    let mounts: Vec<PathBuf> =
        crate::mountinfo::mounts_under(dir).map_err(|source| RootfsError::Unmount {
            target: dir.to_owned(),
            source,
        })?;
    for m in mounts {
        match rustix::mount::unmount(&m, UnmountFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
            Err(rustix::io::Errno::BUSY) => {
                rustix::mount::unmount(&m, UnmountFlags::DETACH).map_err(|e| {
                    RootfsError::Unmount {
                        target: m.clone(),
                        source: e.into(),
                    }
                })?;
            }
            Err(e) => {
                return Err(RootfsError::Unmount {
                    target: m,
                    source: e.into(),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let o: Vec<String> = ["ro", "nosuid", "lowerdir=/a:/b", "upperdir=/u", "rbind"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let (f, d) = split_options(&o);
        assert!(f.contains(
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::BIND | MountFlags::REC
        ));
        assert_eq!(d, "lowerdir=/a:/b,upperdir=/u");
    }
}
