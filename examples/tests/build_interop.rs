//! What `imagectl build` makes, other tools use: a multi-stage image of
//! the parity corpus (`tests/parity/multistage-runnable`) is read by
//! `skopeo inspect` (layers and config as ours says), run by podman (on a
//! private storage, from a skopeo copy), exported with `imagectl bundle`
//! and run by crun, and unpacked by umoci to the very tree `imagectl
//! unpack` makes. Missing tools or root: a loud skip, a failure under
//! CI=true.

mod common;
mod parity_support;

use std::path::Path;
use std::process::Command;

use common::{Cleanup, Cli};
use image_testsupport::tools::{ready, skip_or_fail};
use parity_support::image::{tree_differences, Facts, Tree};
use parity_support::tools::{checked, oci_runtime};
use parity_support::{corpus, full_name, Builders};

/// What the image prints when run with its own entrypoint and command.
const OUTPUT: &str = "hello from a built image\nbuilt in the first stage\n";

/// crun on a bundle, as root; its stdout. On a hybrid-cgroup host (v1
/// controllers and a v2 mount) crun 1.x refuses to start ("cgroups in
/// hybrid mode not supported"), so it runs in a private mount namespace
/// without the v2 mount there, as image-runtime's crun backend does.
fn crun_run(bundle: &Path, state: &Path, id: &str) -> String {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let v2 = mount_point(&mountinfo, "cgroup2");
    let hybrid_v2 = v2.filter(|_| mount_point(&mountinfo, "cgroup").is_some());
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        r#"if [ -n "$4" ]; then umount "$4" || exit 1; fi; exec crun --root "$1" run -b "$2" "$3""#,
        "sh",
    ])
    .arg(state)
    .arg(bundle)
    .arg(id)
    .arg(hybrid_v2.unwrap_or_default());
    checked(cmd)
}

/// The mount point of the first filesystem of type `fstype` in
/// `mountinfo`.
fn mount_point(mountinfo: &str, fstype: &str) -> Option<String> {
    mountinfo
        .lines()
        .find(|l| {
            l.split_once(" - ")
                .is_some_and(|(_, a)| a.split(' ').next() == Some(fstype))
        })
        .and_then(|l| l.split(' ').nth(4))
        .map(str::to_owned)
}

/// Every check on the image `name` in the Builders' store.
fn check_interop(b: &Builders, name: &str, layers: usize) {
    let full = full_name(name);
    let store = b.cli.store();
    let tmp = b.cli.tmp.path();
    let oci = format!("oci:{}:{full}", store.display());

    // skopeo reads the manifest and the config as we wrote them.
    let inspect: serde_json::Value = serde_json::from_str(&checked({
        let mut c = b.containers.command("skopeo");
        c.args(["inspect", &oci]);
        c
    }))
    .expect("skopeo inspect JSON");
    assert_eq!(
        inspect["Layers"].as_array().map(Vec::len),
        Some(layers),
        "{inspect}"
    );
    assert_eq!(
        inspect["Labels"]["org.opencontainers.image.title"], "multistage-runnable",
        "{inspect}"
    );
    let config: serde_json::Value = serde_json::from_str(&checked({
        let mut c = b.containers.command("skopeo");
        c.args(["inspect", "--config", &oci]);
        c
    }))
    .expect("skopeo inspect --config JSON");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/srv/bin/greeting"])
    );
    assert_eq!(config["config"]["User"], "1000");

    // podman runs it (copied into its private storage by skopeo).
    let mut copy = b.containers.command("skopeo");
    copy.args(["copy", "--quiet", &oci])
        .arg(b.containers.transport(&full));
    checked(copy);
    let mut run = b.containers.command("podman");
    // (podman raises the container's rlimits to its own defaults, which
    // a test machine's limits may forbid; these fit under any.)
    run.args([
        "run",
        "--rm",
        "--network",
        "none",
        "--runtime",
        oci_runtime(),
    ])
    .args([
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        &full,
    ]);
    assert_eq!(checked(run), OUTPUT, "podman run");

    // crun runs the bundle imagectl exports.
    let bundle = tmp.join("bundle");
    b.cli.ok(&["bundle", name, bundle.to_str().expect("utf8")]);
    assert_eq!(
        crun_run(&bundle, &tmp.join("crun-state"), "build-interop"),
        OUTPUT,
        "crun run"
    );

    // umoci unpacks the tree we unpack, and the tree the layers say.
    let umoci_bundle = tmp.join("umoci-bundle");
    let mut umoci = Command::new("umoci");
    umoci
        .args(["unpack", "--image"])
        .arg(format!("{}:{full}", store.display()))
        .arg(&umoci_bundle);
    checked(umoci);
    let ours_dir = tmp.join("ours-unpacked");
    b.cli
        .ok(&["unpack", name, ours_dir.to_str().expect("utf8")]);
    let (theirs, ours) = (
        Tree::from_dir(&umoci_bundle.join("rootfs")),
        Tree::from_dir(&ours_dir),
    );
    let diff = tree_differences("umoci", &theirs, "imagectl unpack", &ours);
    assert!(diff.is_empty(), "{}", diff.join("\n"));
    let layered = Facts::from_oci_layout(&store, &full).tree;
    let diff = tree_differences("the layers", &layered, "imagectl unpack", &ours);
    assert!(diff.is_empty(), "{}", diff.join("\n"));
}

#[test]
fn a_built_multi_stage_image_is_read_run_and_unpacked_by_other_tools() {
    if !ready(&["skopeo", "podman", "crun", "umoci", "unshare"]) {
        return;
    }
    let b = Builders::new(Cli::new(Cleanup::Mounts));
    if !b.cli.imagectl(&["build", "--help"]).status.success() {
        skip_or_fail("`imagectl build` (not in this imagectl yet)");
        return;
    }
    let case = corpus()
        .into_iter()
        .find(|c| c.name == "multistage-runnable")
        .expect("in the corpus");
    let facts = b.ours(&case).unwrap_or_else(|e| panic!("{e}"));
    check_interop(&b, &case.tag(), facts.layers);
}
