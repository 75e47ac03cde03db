//! The one list of adversarial cases (and fuzz corpus inputs) that fail
//! today because of a finding of issue 18 being fixed on another branch.
//! Each is skipped with a loud message naming the point and the failure
//! seen. When a fix is merged, delete its lines: the case then runs, and
//! must pass. `ADVERSARIAL_RUN_AWAITING=1` runs the listed cases anyway
//! (and counts their failures), to see which pass after a merge.

/// `(case name, the point of issue 18 and the failure seen)`. Adversarial
/// cases are named as the suite prints them; fuzz corpus inputs as
/// `fuzz:<target>/<file>`.
pub const AWAITING_FIX: &[(&str, &str)] = &[
    (
        "layer/zstd-bomb-100GiB",
        "#11: load's diff-ID check expands the whole 100 GiB zstd layer (3.2 MB archive): killed after 30 s",
    ),
    (
        "archive/digest-tag-docker",
        "#1: a docker-save RepoTag `test/bb@sha256:...` is stored as a tag and `inspect test/bb@sha256:...` resolves it",
    ),
    (
        "archive/digest-tag-oci",
        "#1: an OCI ref.name `test/bb@sha256:...` is stored as a tag and resolves",
    ),
    (
        "archive/digest-tag-cli",
        "#1: `imagectl tag IMAGE test/bb@sha256:...` succeeds",
    ),
    (
        "archive/dag-bomb",
        "#6: load of 40 indexes each listing the next twice: killed after 30 s",
    ),
    (
        "archive/many-ref-names",
        "#7: load of one index with 5,000 ref names: killed after 30 s",
    ),
    (
        "archive/manifest-amplification",
        "#8: 2,000 manifest entries naming one 8 MiB gzip layer: killed after 30 s",
    ),
    (
        "archive/gzip-wrapped",
        "smaller (gzip-wrapped archive): `malformed tar stream ... numeric field did not have utf-8 text`",
    ),
    (
        "layout/blob-symlink",
        "#3: copy from a layout reads a blob through a symlink",
    ),
    (
        "layout/index-symlink",
        "#3: copy from a layout reads index.json through a symlink",
    ),
    (
        "layout/oci-layout-symlink",
        "#3: copy from a layout reads oci-layout through a symlink",
    ),
    (
        "layout/blobs-dir-symlink",
        "#3: copy from a layout reads blobs/ through a symlink",
    ),
    (
        "layout/blob-fifo",
        "#10: copy from a layout whose blob is a FIFO hangs: killed after 30 s",
    ),
    (
        "layout/blob-dev-zero",
        "#10: not run before the fix: the issue saw 8.6 GB of ingest written in 12 s",
    ),
    (
        "layout/index-dev-zero",
        "#10: not run before the fix: the issue saw 11.5 GB of memory taken",
    ),
    (
        "layout/no-oci-layout",
        "smaller (layout version): a layout without oci-layout is copied from",
    ),
    (
        "layout/digest-ref-name",
        "#1: a layout ref name `test/bb@sha256:...` is copied as a tag and resolves",
    ),
    (
        "layout/copy-to-digest-name",
        "#1: copy to `oci:DIR:test/bb@sha256:...` succeeds",
    ),
    (
        "layout/copy-into-symlinked-blobs",
        "#3: copy into a layout whose blobs/sha256 links outside writes the blobs there",
    ),
    (
        "layout/bundle-config-symlink",
        "#3: bundle overwrites the target of DIR/config.json (a sentinel)",
    ),
    (
        "layout/bundle-etc-symlink",
        "#3: bundle writes hosts, hostname, resolv.conf through DIR/etc",
    ),
    (
        "config/uid-4294967295-flag/native",
        "#2: `run -u 4294967295` runs as uid 0",
    ),
    (
        "config/gid-4294967295-flag/native",
        "#2: `run -u 0:4294967295` runs as gid 0",
    ),
    (
        "config/uid-4294967295-image/native",
        "#2: image User 4294967295 runs as uid 0",
    ),
    (
        "config/uid-4294967295-flag/crun",
        "#2: `run -u 4294967295` runs as uid 0 under crun",
    ),
    (
        "config/gid-4294967295-flag/crun",
        "#2: `run -u 0:4294967295` runs as gid 0 under crun",
    ),
    (
        "config/uid-4294967295-image/crun",
        "#2: image User 4294967295 runs as uid 0 under crun",
    ),
    (
        "config/huge-env",
        "#9: a config of 100,000 Env entries: run killed after 30 s (and the kill leaves its mount, #13)",
    ),
    (
        "config/proc-symlink/native",
        "#4: the native backend mounts /proc through the image's `/proc -> /tmp`",
    ),
    (
        "config/workdir-proc",
        "#13: native `run --rm` failing at start (WORKDIR /proc/self/root/...) leaves the rootfs mounted",
    ),
    (
        "config/start-fails-etc-hosts-dir/native",
        "#13: native `run --rm` failing at start leaves the rootfs mounted",
    ),
    (
        "config/start-fails-proc-file/native",
        "#13: native `run --rm` failing at start leaves the rootfs mounted",
    ),
    (
        "config/start-fails-dev-file/native",
        "#13: native `run --rm` failing at start leaves the rootfs mounted",
    ),
    (
        "config/start-fails-hostname-300/native",
        "#13: native `run --rm` failing at start leaves the rootfs mounted",
    ),
    (
        "config/workdir-long",
        "NEW, not in issue 18 and not assigned: a WORKDIR of 3,000 components (6 KB) takes 5-13 s per run (debug build) to fail with ENAMETOOLONG, and the error prints the whole path; three backends and a bundle exceed the case's 30 s",
    ),
    (
        "kill/load/no-ingest-after-gc",
        "#14: a load killed with SIGKILL leaves its ingests; `gc --grace 0` removes none",
    ),
    (
        "kill/unpack/no-ingest-after-gc",
        "#14: the ingests the killed loads left before are still there",
    ),
    (
        "kill/run/no-ingest-after-gc",
        "#14: the ingests the killed loads left before are still there",
    ),
    (
        "kill/commit/no-ingest-after-gc",
        "#14: a commit killed with SIGKILL leaves its ingests; `gc --grace 0` removes none",
    ),
    (
        "fuzz:layout/blob-dev-zero.tar",
        "#10: not run before the fix: a blob linked to /dev/zero is read without end",
    ),
    (
        "fuzz:layout/index-dev-zero.tar",
        "#10: not run before the fix: index.json linked to /dev/zero is read without end",
    ),
    (
        "fuzz:archive/docker-save-digest-tag.tar",
        "#1: a RepoTag with a digest is set as a tag",
    ),
    (
        "fuzz:archive/oci-archive-digest-ref.tar",
        "#1: a ref.name with a digest is set as a tag",
    ),
    (
        "fuzz:archive/oci-archive-dag-40.tar",
        "#6: the DAG of 40 indexes is still being walked after 60 s",
    ),
    (
        "fuzz:layout/blob-fifo.tar",
        "#10: copy blocks forever opening a FIFO blob",
    ),
    (
        "fuzz:layout/blob-symlink.tar",
        "#3: copy reads a blob through a symlink",
    ),
    (
        "fuzz:layout/index-symlink.tar",
        "#3: copy reads index.json through a symlink",
    ),
    (
        "fuzz:layout/oci-layout-symlink.tar",
        "#3: copy reads oci-layout through a symlink",
    ),
    (
        "fuzz:layout/no-oci-layout.tar",
        "smaller (layout version): a layout without oci-layout is copied from",
    ),
    (
        "fuzz:spec/gid-max.json",
        "#2: the spec names a uid or gid above 2^31-1",
    ),
    (
        "fuzz:spec/group-add-max.json",
        "#2: the spec names a uid or gid above 2^31-1",
    ),
    (
        "fuzz:spec/group-member-max.json",
        "#2: the spec names a uid or gid above 2^31-1",
    ),
    (
        "fuzz:spec/passwd-uid-max.json",
        "#2: the spec names a uid or gid above 2^31-1",
    ),
    (
        "fuzz:spec/uid-2-31.json",
        "#2: the spec names a uid or gid above 2^31-1",
    ),
    (
        "fuzz:spec/uid-max-flag.json",
        "#2: the spec names a uid or gid above 2^31-1",
    ),
    (
        "fuzz:spec/uid-max-image.json",
        "#2: the spec names a uid or gid above 2^31-1",
    ),
    (
        "config/start-fails-e2big/native",
        "#13: native `run --rm` failing at start (E2BIG) leaves the rootfs mounted",
    ),
    (
        "layout/encrypted-layer-run",
        "#5: an image with a `+encrypted` layer (copied in from a layout): unpack refuses it, run unpacks it as a plain tar and succeeds",
    ),
    (
        "concurrent/loads-beside-gc",
        "#15: with `gc --grace 0` looping, every load fails `not found: blob sha256:...`",
    ),
    (
        "kill/run/ps-not-running",
        "#16: after its `imagectl run` is killed, `ps` still shows the container as running",
    ),
    (
        "kill/run-owner/ps-not-running",
        "#16: after its `imagectl run` is killed, `ps` still shows the container as running",
    ),
    (
        "kill/run-owner/no-ingest-after-gc",
        "#14: the ingests the killed loads and commits left before are still there",
    ),
];

/// Why `case` is skipped, if it is awaiting a fix (`None` for every case
/// under `ADVERSARIAL_RUN_AWAITING=1`).
pub fn awaiting(case: &str) -> Option<&'static str> {
    if std::env::var("ADVERSARIAL_RUN_AWAITING").as_deref() == Ok("1") {
        return None;
    }
    AWAITING_FIX
        .iter()
        .find(|(name, _)| *name == case)
        .map(|(_, why)| *why)
}

/// Whether to skip `case`; prints a loud `SKIPPED (awaiting fix)` line
/// when it is. With `ADVERSARIAL_RUN_AWAITING=1` nothing is skipped (to
/// see which listed cases pass once a fix is merged).
pub fn skip(case: &str) -> bool {
    if std::env::var("ADVERSARIAL_RUN_AWAITING").as_deref() == Ok("1") {
        return false;
    }
    match awaiting(case) {
        Some(why) => {
            eprintln!("SKIPPED (awaiting fix, see AWAITING_FIX): {case}: {why}");
            true
        }
        None => false,
    }
}
