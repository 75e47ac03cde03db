//! Helpers shared by the integration tests of image-runtime.
#![allow(dead_code)]

use std::path::Path;

/// Whether a test can run: root, busybox-static and `tools` present.
/// Otherwise it says so loudly and the test returns; under `CI=true` it fails.
pub fn ready(tools: &[&str]) -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|t| image_runtime::oci_runtime::which(t).is_none())
        .map(|t| (*t).to_owned())
        .collect();
    if !Path::new("/bin/busybox").is_file() {
        missing.push("/bin/busybox (busybox-static)".into());
    }
    if !rustix::process::geteuid().is_root() {
        missing.push("root privileges".into());
    }
    if missing.is_empty() {
        return true;
    }
    assert!(!ci, "CI=true and missing: {missing:?}");
    eprintln!("SKIPPED: missing {missing:?}");
    false
}

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
