//! Root filesystems of busybox-static, to run containers of.

use std::path::Path;

use crate::tools::BUSYBOX;

/// A busybox-static root filesystem at `dir`: `bin`, `etc` and `tmp`,
/// `bin/busybox` copied from [`BUSYBOX`], and `bin/<applet>` a relative
/// symlink to it for each of `applets`.
pub fn busybox_rootfs(dir: &Path, applets: &[&str]) {
    for d in ["bin", "etc", "tmp"] {
        std::fs::create_dir_all(dir.join(d)).expect("mkdir");
    }
    std::fs::copy(BUSYBOX, dir.join("bin/busybox")).expect("copy busybox");
    for a in applets {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(a)).expect("symlink");
    }
}

/// A [`busybox_rootfs`] to run containers of: also the `proc`, `sys` and
/// `dev` mount points, and a root user and group in `etc/passwd` and
/// `etc/group`.
pub fn container_rootfs(dir: &Path, applets: &[&str]) {
    busybox_rootfs(dir, applets);
    for d in ["proc", "sys", "dev"] {
        std::fs::create_dir_all(dir.join(d)).expect("mkdir");
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("write");
    std::fs::write(dir.join("etc/group"), "root:x:0:\n").expect("write");
}
