//! Cgroup hierarchies found from `/proc/self/mountinfo` and
//! `/proc/self/cgroup` (never assumed), and the container cgroups placed
//! under the calling process's own cgroup in each hierarchy.
//!
//! The runtimes (runc, crun) create a container's cgroups from a relative
//! `linux.cgroupsPath`, which they resolve under their own cgroup per
//! hierarchy, the one they inherit from us; they remove them on delete.
//! [`remove_container_cgroups`] removes what a crashed run left behind.

use std::path::{Path, PathBuf};

use crate::mountinfo::{self, MountInfo};

/// Prefix of the cgroup directory of every container made by this crate.
pub const CGROUP_PREFIX: &str = "image-runtime-";

/// One mounted cgroup hierarchy and the calling process's cgroup in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// `true` for the unified (v2) hierarchy.
    pub v2: bool,
    /// v1 controllers (`memory`, `cpu`, `name=systemd`); empty for v2.
    pub controllers: Vec<String>,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The host directory of our own cgroup in it.
    pub own_dir: PathBuf,
}

const MOUNT_OPTS: [&str; 12] = [
    "rw",
    "ro",
    "nosuid",
    "nodev",
    "noexec",
    "relatime",
    "noatime",
    "nsdelegate",
    "memory_recursiveprot",
    "clone_children",
    "xattr",
    "favordynmods",
];

fn controllers_of(m: &MountInfo) -> Vec<String> {
    let mut c: Vec<String> = m
        .super_options
        .split(',')
        .filter(|o| !MOUNT_OPTS.contains(o) && !o.starts_with("release_agent="))
        .map(str::to_owned)
        .collect();
    c.sort();
    c
}

/// Matches mounts with `/proc/self/cgroup` lines (pure).
pub fn hierarchies_from(mounts: &[MountInfo], proc_cgroup: &str) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in proc_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(ctrl), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let v2 = ctrl.is_empty();
        let mut wanted: Vec<String> = ctrl
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        wanted.sort();
        let found = mounts.iter().find(|m| {
            if v2 {
                m.fs_type == "cgroup2"
            } else {
                m.fs_type == "cgroup" && controllers_of(m) == wanted
            }
        });
        let Some(m) = found else { continue };
        // A mount of a sub-tree (cgroup namespace, bind) shows our path
        // relative to its own root.
        let own = Path::new(path);
        let rel = own.strip_prefix(&m.root).unwrap_or(own);
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        out.push(Hierarchy {
            v2,
            controllers: wanted,
            mount_point: m.mount_point.clone(),
            own_dir: m.mount_point.join(rel),
        });
    }
    out
}

/// The hierarchies of the calling process.
///
/// # Errors
/// Reading `/proc/self/mountinfo` or `/proc/self/cgroup`.
pub fn hierarchies() -> std::io::Result<Vec<Hierarchy>> {
    let mounts = mountinfo::current()?;
    let cg = std::fs::read_to_string("/proc/self/cgroup")?;
    Ok(hierarchies_from(&mounts, &cg))
}

/// The relative `linux.cgroupsPath` for a container.
pub fn cgroups_path(id: &str) -> String {
    format!("{CGROUP_PREFIX}{id}")
}

/// The host directories a container's cgroups have (or would have).
///
/// # Errors
/// As [`hierarchies`].
pub fn container_dirs(id: &str) -> std::io::Result<Vec<PathBuf>> {
    let name = cgroups_path(id);
    Ok(hierarchies()?
        .into_iter()
        .map(|h| h.own_dir.join(&name))
        .collect())
}

/// Removes a container's cgroup directories that still exist (empty ones:
/// `rmdir` refuses a cgroup with processes, which is reported).
///
/// # Errors
/// The first `rmdir` failure other than absence.
pub fn remove_container_cgroups(id: &str) -> std::io::Result<()> {
    let mut first = None;
    for dir in container_dirs(id)? {
        // Sub-cgroups a runtime may have made (crun's `container` leaf).
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_own_cgroups_per_hierarchy() {
        let mounts = mountinfo::parse(
            "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
             40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n\
             42 31 0:39 /sub /mnt/cg rw - cgroup cgroup rw,pids\n",
        );
        let h = hierarchies_from(
            &mounts,
            "9:name=systemd:/\n8:pids:/sub/x\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n",
        );
        assert_eq!(h.len(), 5);
        assert_eq!(h[0].own_dir, PathBuf::from("/sys/fs/cgroup/systemd"));
        assert_eq!(h[1].own_dir, PathBuf::from("/mnt/cg/x"));
        assert_eq!(
            h[2].own_dir,
            PathBuf::from("/sys/fs/cgroup/memory/process_api/abc")
        );
        assert!(h[4].v2);
        assert_eq!(h[4].own_dir, PathBuf::from("/sys/fs/cgroup/unified"));
    }
}
