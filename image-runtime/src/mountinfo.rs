//! `/proc/self/mountinfo`, parsed: used to find cgroup hierarchies and to
//! check that nothing of ours is left mounted.

use std::path::{Path, PathBuf};

/// One mount of `/proc/<pid>/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// The path inside the filesystem that is mounted (`/` for a whole fs).
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,...`).
    pub mount_options: String,
    /// Filesystem type.
    pub fs_type: String,
    /// Mount source.
    pub source: String,
    /// Per-superblock options (for cgroup v1: the controllers).
    pub super_options: String,
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 6 || r.len() < 3 {
                return None;
            }
            Some(MountInfo {
                root: PathBuf::from(unescape(l[3])),
                mount_point: PathBuf::from(unescape(l[4])),
                mount_options: l[5].to_owned(),
                fs_type: r[0].to_owned(),
                source: unescape(r[1]),
                super_options: r[2].to_owned(),
            })
        })
        .collect()
}

/// The mounts of the calling process.
///
/// # Errors
/// Reading `/proc/self/mountinfo`.
pub fn current() -> std::io::Result<Vec<MountInfo>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// Mount points at or below `dir`, deepest (most recently listed) first,
/// the order to unmount them in.
///
/// # Errors
/// Reading `/proc/self/mountinfo`.
pub fn mounts_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = current()?
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.reverse();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let text =
            "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                    50 1 8:1 /a\\040b /mnt/x\\040y rw - ext4 /dev/sda1 rw\n\
                    garbage\n";
        let m = parse(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].super_options, "rw,memory");
        assert_eq!(m[1].fs_type, "cgroup2");
        assert_eq!(m[2].mount_point, PathBuf::from("/mnt/x y"));
        assert_eq!(m[2].root, PathBuf::from("/a b"));
    }
}
