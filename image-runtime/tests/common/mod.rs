//! Helpers shared by the integration tests of image-runtime.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use image_core::config::RunConfig;
use image_runtime::state::{ContainerStatus, Owner};

/// How long a test lets a container run before it gives up on it.
pub const TIMEOUT: Duration = Duration::from_secs(60);

pub use image_testsupport::tools::ready;

/// A busybox-static root filesystem with `applets` linked in /bin, as
/// `busybox --install -s` makes it, users root and app (1000, in wheel and
/// staff), a sticky /tmp and `data/readme` containing "lower".
pub fn busybox_rootfs(dir: &Path, applets: &[&str]) {
    for d in [
        "bin", "etc", "proc", "sys", "dev", "tmp", "home/app", "data",
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for a in applets {
        std::os::unix::fs::symlink("/bin/busybox", dir.join("bin").join(a)).unwrap();
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\nwheel:x:10:app\nstaff:x:50:app\napp:x:1000:\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(dir.join("data/readme"), "lower\n").unwrap();
}

/// The image config of the tests that run a rootfs directory or a bundle:
/// PATH=/bin and FOO=from-image, command `sh`, working directory
/// /work/dir (absent from the rootfs), user app.
pub fn image_config() -> RunConfig {
    serde_json::from_value(serde_json::json!({
        "Env": ["PATH=/bin", "FOO=from-image"],
        "Cmd": ["sh"],
        "WorkingDir": "/work/dir",
        "User": "app",
    }))
    .unwrap()
}

/// An overlay mount of `upper` (with its `work` directory) on `lower`; the
/// directories must exist when it is mounted.
pub fn overlay_mount(lower: &Path, upper: &Path, work: &Path) -> image_overlay::mount::Mount {
    image_overlay::mount::Mount {
        fs_type: "overlay".into(),
        source: "overlay".into(),
        target: None,
        options: vec![
            format!("lowerdir={}", lower.display()),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
        ],
    }
}

/// Asserts that nothing is mounted under `dir`.
pub fn assert_unmounted(dir: &Path) {
    let mounts = image_runtime::mountinfo::mounts_under(dir).unwrap();
    assert!(mounts.is_empty(), "left mounted: {mounts:?}");
}

/// How many mounts there are under `dir`.
pub fn mount_count(dir: &Path) -> usize {
    image_runtime::mountinfo::mounts_under(dir).unwrap().len()
}

/// Asserts that no cgroup of container `id` is left, in any hierarchy.
pub fn assert_no_cgroups(id: &str) {
    for d in image_runtime::cgroup::container_dirs(id).unwrap() {
        assert!(!d.exists(), "cgroup left: {}", d.display());
    }
}

/// Rewrites `c`'s record on disk as if the process that owned it had died
/// while the container ran (status running, an owner pid that cannot
/// exist), for the next `Runtime` to collect.
pub fn pretend_owner_died(c: &image_runtime::Container) {
    let mut record = c.record().clone();
    record.status = ContainerStatus::Running;
    record.owner = Some(Owner {
        pid: u32::MAX - 7,
        start_time: 1,
    });
    std::fs::write(
        c.bundle().join("container.json"),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
}

/// The commands two backends run in the same bundle to be compared: the
/// first five by their output ([`assert_same_probes`]), the last (the
/// mount table) through [`mount_set`] and [`split_mounts`].
pub const PROBES: [&[&str]; 6] = [
    &["id"],
    &["pwd"],
    &["env"],
    &["hostname"],
    &["ls", "/proc"],
    &["cat", "/proc/self/mounts"],
];

/// Runs each of [`PROBES`] through `run` (given its index and arguments),
/// asserts that it succeeded (the message names `backend`, the probe and
/// its stderr) and returns their outputs, in order.
pub fn probe_outputs(
    backend: &str,
    mut run: impl FnMut(usize, &[&str]) -> image_runtime::Exit,
) -> Vec<String> {
    let mut outs = Vec::new();
    for (i, probe) in PROBES.iter().enumerate() {
        let exit = run(i, probe);
        assert!(
            exit.status.success(),
            "{backend} {probe:?}: {}",
            exit.stderr_str()
        );
        outs.push(exit.stdout_str());
    }
    outs
}

/// Asserts that two backends printed the same for each of the first five
/// [`PROBES`] (`a` and `b`: their outputs, in the order of `PROBES`).
pub fn assert_same_probes(a: &[String], b: &[String]) {
    for (i, name) in ["id", "pwd", "env", "hostname", "ls /proc"]
        .iter()
        .enumerate()
    {
        assert_eq!(a[i], b[i], "probe {name} differs");
    }
}

/// A mount as `/proc/self/mounts` shows it, reduced to what is compared:
/// mount point, file system type, and the ro, nosuid, nodev and noexec
/// flags.
pub type MountFacts = (String, String, bool, bool, bool, bool);

/// Parses `/proc/self/mounts` into comparable facts.
pub fn mount_set(text: &str) -> BTreeSet<MountFacts> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let opts: BTreeSet<&str> = f.get(3)?.split(',').collect();
            Some((
                f[1].to_owned(),
                f[2].to_owned(),
                opts.contains("ro"),
                opts.contains("nosuid"),
                opts.contains("nodev"),
                opts.contains("noexec"),
            ))
        })
        .collect()
}

/// Splits `set` into the plain mounts, to be compared exactly, and the
/// spec's `masked` and `readonly` paths, reduced to (mount point, whether
/// it is a read-only path mounted read-only): runtimes mask and remount
/// those each their own way.
pub fn split_mounts(
    set: BTreeSet<MountFacts>,
    masked: &BTreeSet<String>,
    readonly: &BTreeSet<String>,
) -> (BTreeSet<MountFacts>, BTreeSet<(String, bool)>) {
    let (special, plain): (BTreeSet<_>, BTreeSet<_>) = set
        .into_iter()
        .partition(|m| masked.contains(&m.0) || readonly.contains(&m.0));
    let special: BTreeSet<(String, bool)> = special
        .into_iter()
        .map(|m| (m.0.clone(), readonly.contains(&m.0) && m.2))
        .collect();
    (plain, special)
}
