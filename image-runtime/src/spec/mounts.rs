//! Mounts of a runtime spec and image-overlay's [`Mount`]: the one place
//! where one becomes the other.
//!
//! The runtime has one mount type, [`image_overlay::mount::Mount`]: what a
//! snapshotter returns for a root filesystem, and, read from a spec's
//! `mounts`, what the native backend performs inside the container. Its
//! `target` is relative to a mount point; for a spec's mounts that mount
//! point is the container's root, so a spec's `destination` is the target
//! made absolute (the root itself is `None`).

use std::path::{Path, PathBuf};

use image_core::oci_spec::runtime::Mount as OciMount;
use image_overlay::mount::Mount;

use super::{clean_absolute, SpecError};

/// `m` as a spec's mount: its target (relative to the container's root)
/// as the destination.
pub fn to_oci(m: &Mount) -> OciMount {
    let destination = match &m.target {
        Some(t) => Path::new("/").join(t),
        None => PathBuf::from("/"),
    };
    let mut out = OciMount::default();
    out.set_destination(destination)
        .set_typ(Some(m.fs_type.clone()))
        .set_source((!m.source.is_empty()).then(|| PathBuf::from(&m.source)))
        .set_options((!m.options.is_empty()).then(|| m.options.clone()));
    out
}

/// A spec's mount as a [`Mount`] whose target is its destination, cleaned
/// lexically and relative to the container's root (`None` for `/`; a
/// relative destination is read from the root, as runc reads it). A
/// mount without a type is a bind when its options say `bind` or `rbind`;
/// a missing source is empty (`proc`, `tmpfs` need none).
///
/// # Errors
/// [`SpecError::InvalidOption`] (option `mount`): no type and no bind
/// option, a source that is not UTF-8 or a bind without a source.
pub fn from_oci(m: &OciMount) -> Result<Mount, SpecError> {
    let destination = m.destination();
    let bad = |reason: &str| SpecError::InvalidOption {
        option: "mount",
        value: destination.display().to_string(),
        reason: reason.to_owned(),
    };
    let options = m.options().clone().unwrap_or_default();
    let mut mount = Mount {
        fs_type: String::new(),
        source: String::new(),
        target: None,
        options,
    };
    mount.fs_type = match m.typ().as_deref() {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ if mount.parsed_options().bind => "bind".to_owned(),
        _ => return Err(bad("it has no type")),
    };
    if let Some(source) = m.source() {
        mount.source = source
            .to_str()
            .ok_or_else(|| bad("its source is not UTF-8"))?
            .to_owned();
    }
    if mount.is_bind() && mount.source.is_empty() {
        return Err(bad("a bind mount needs a source"));
    }
    let cleaned = clean_absolute(&destination.to_string_lossy());
    let relative = cleaned.strip_prefix("/").unwrap_or(&cleaned);
    mount.target = (!relative.as_os_str().is_empty()).then(|| relative.to_owned());
    Ok(mount)
}

/// A mount of filesystem `fs_type` from `source` on `destination` in the
/// container.
fn at(destination: &str, fs_type: &str, source: &str, options: &[&str]) -> OciMount {
    to_oci(&Mount {
        fs_type: fs_type.to_owned(),
        source: source.to_owned(),
        target: Some(PathBuf::from(destination.trim_start_matches('/'))),
        options: options.iter().map(|o| (*o).to_owned()).collect(),
    })
}

/// A bind mount of host path `source` on `destination` in the container
/// (`rbind`, `rprivate`, and `ro` when `read_only`).
pub fn bind(destination: &Path, source: &Path, read_only: bool) -> OciMount {
    let mut options = vec!["rbind", "rprivate"];
    if read_only {
        options.push("ro");
    }
    let mut m = at(&destination.to_string_lossy(), "bind", "", &options);
    m.set_source(Some(source.to_owned()));
    m
}

/// Drops `ro` from the options of the mounts at `destinations` (a
/// privileged container's `/sys` and cgroups).
pub fn make_writable(mounts: &mut [OciMount], destinations: &[&str]) {
    for m in mounts {
        if !destinations.iter().any(|d| m.destination() == Path::new(d)) {
            continue;
        }
        if let Some(options) = m.options().clone() {
            let kept: Vec<String> = options.into_iter().filter(|o| o != "ro").collect();
            m.set_options(Some(kept));
        }
    }
}

/// Docker's default mounts: `/proc`, `/dev`, `/dev/pts`, `/sys` (ro),
/// `/sys/fs/cgroup` (ro), `/dev/mqueue`, `/dev/shm`.
pub fn default_mounts() -> Vec<OciMount> {
    vec![
        at("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        at(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        at(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        at(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        at(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev"],
        ),
        at(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        at(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_overlay::mount::Mounter;

    fn oci(json: serde_json::Value) -> OciMount {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_mount_goes_there_and_back() {
        for m in default_mounts() {
            assert_eq!(to_oci(&from_oci(&m).unwrap()), m);
        }
        let b = bind(Path::new("/mnt/v"), Path::new("/host"), true);
        let back = from_oci(&b).unwrap();
        assert_eq!(back.target.as_deref(), Some(Path::new("mnt/v")));
        assert_eq!(back.source, "/host");
        assert!(back.is_bind() && back.parsed_options().recursive && back.is_read_only());
        assert_eq!(to_oci(&back), b);
    }

    #[test]
    fn generated_destinations_stay_below_the_root_and_read_back_alike() {
        let mut next = crate::spec::test_rng(0x2545_f491_4f6c_dd1d);
        let parts = ["..", ".", "", "a", "b c", "...", "proc", "x:y", "-"];
        let words = [
            "ro", "rw", "bind", "rbind", "rprivate", "nosuid", "mode=755", "size=1m",
        ];
        for _ in 0..5000 {
            let n = next(7);
            let dest: String = (0..n)
                .map(|_| format!("/{}", parts[next(parts.len() as u64) as usize]))
                .collect();
            let dest = if next(4) == 0 {
                dest.trim_start_matches('/').to_owned()
            } else {
                dest
            };
            let options: Vec<&str> = (0..next(5))
                .map(|_| words[next(words.len() as u64) as usize])
                .collect();
            let typ = ["tmpfs", "bind", ""][next(3) as usize];
            let m = oci(serde_json::json!({
                "destination": dest, "type": typ,
                "source": "/src", "options": options,
            }));
            let Ok(read) = from_oci(&m) else {
                // Only a mount with no type that is no bind is refused.
                assert!(
                    m.typ().as_deref() == Some("")
                        && !options.contains(&"bind")
                        && !options.contains(&"rbind"),
                    "{m:?}"
                );
                continue;
            };
            if let Some(t) = &read.target {
                assert!(t.is_relative(), "{dest:?} -> {t:?}");
                assert!(
                    t.components()
                        .all(|c| matches!(c, std::path::Component::Normal(_))),
                    "{dest:?} -> {t:?}"
                );
            }
            assert_eq!(from_oci(&to_oci(&read)).unwrap(), read, "{dest:?}");
            // What image-overlay's mounters accept as a target.
            image_overlay::mount::RecordingMounter::default()
                .mount(std::slice::from_ref(&read), Path::new("/root"))
                .unwrap();
        }
    }

    #[test]
    fn spec_mounts_are_read_or_refused() {
        // Cleaned lexically, relative to the root; the root itself is None.
        let m = from_oci(&oci(serde_json::json!({
            "destination": "/a/../b//c/.", "type": "tmpfs"
        })))
        .unwrap();
        assert_eq!(m.target.as_deref(), Some(Path::new("b/c")));
        assert_eq!(m.source, "");
        let m = from_oci(&oci(serde_json::json!({
            "destination": "/..", "type": "tmpfs"
        })))
        .unwrap();
        assert_eq!(m.target, None);
        // A bind by its options alone.
        let m = from_oci(&oci(serde_json::json!({
            "destination": "/x", "source": "/h", "options": ["rbind"]
        })))
        .unwrap();
        assert_eq!(m.fs_type, "bind");
        for bad in [
            serde_json::json!({"destination": "/x"}),
            serde_json::json!({"destination": "/x", "type": ""}),
            serde_json::json!({"destination": "/x", "type": "bind"}),
        ] {
            assert!(
                matches!(
                    from_oci(&oci(bad.clone())),
                    Err(SpecError::InvalidOption {
                        option: "mount",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }
}
