//! `imagectl run`'s smaller gaps (issue 16): `--cpus` above the host's
//! CPUs refused; anonymous volumes for an image's VOLUME paths and named
//! volumes (`-v name:/path`), initialised from the image's content,
//! `rm -v`, `imagectl volume ls|create|inspect|rm`. As root, with the
//! native backend, on an image appended in the test from busybox-static.
//! A missing tool or privilege skips the test loudly unless CI=true.

mod common;

use std::path::Path;

use common::{container_rootfs, ready, Cleanup, Cli};

const IMAGE: &str = "test.local/vol-busybox:1";
const APPLETS: &[&str] = &["sh", "echo", "cat", "ls", "readlink", "true"];

/// The CPUs `imagectl` may run on (its affinity, as `nproc` counts them).
fn host_cpus() -> u32 {
    let out = std::process::Command::new("nproc").output().expect("nproc");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn cpus_above_the_host_are_refused_with_both_numbers() {
    if !ready(&[]) {
        return;
    }
    let cli = Cli::new(Cleanup::Containers);
    let rootfs = cli.tmp.path().join("rootfs");
    container_rootfs(&rootfs, APPLETS);
    cli.append_shell_image(&rootfs, IMAGE);
    let n = host_cpus();
    let too_many = format!("{}.5", n);
    let err = cli.fails(&["run", "--rm", "--cpus", &too_many, IMAGE, "true"]);
    assert!(
        err.contains(&format!(
            "range of CPUs is from 0.01 to {n}.00, as there are only {n} CPUs available"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("invalid cpus {n}.50")), "{err}");
    // Nothing is left of the refused container.
    assert_eq!(cli.ok(&["ps", "-q"]), "");
}
