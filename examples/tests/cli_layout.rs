//! `imagectl copy` between the store and OCI layouts that a hostile party
//! prepared: a source without `oci-layout` is refused and left untouched,
//! a FIFO blob fails at once instead of hanging, a destination whose
//! `blobs/sha256` is a symlink is not written through. Every run is
//! bounded by the helpers' time limit.

mod common;

use std::path::Path;

use common::{Cleanup, Cli};

/// A store holding `app:1` (one small layer) and an OCI layout at
/// `<tmp>/src` with the same image, made by `copy`.
fn with_source() -> Cli {
    let cli = Cli::new(Cleanup::Containers);
    let rootfs = cli.tmp.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).expect("mkdir");
    std::fs::write(rootfs.join("etc/hello"), "hello\n").expect("write");
    cli.ok(&[
        "append",
        "--rootfs",
        rootfs.to_str().expect("utf8"),
        "--tag",
        "app:1",
    ]);
    let src = format!("oci:{}:app:1", cli.tmp.path().join("src").display());
    cli.ok(&["copy", "app:1", &src]);
    cli
}

fn src_spec(cli: &Cli) -> String {
    format!("oci:{}:app:1", cli.tmp.path().join("src").display())
}

/// The layer blob of a layout (the only gzip-compressed blob).
fn layer_blob(layout: &Path) -> std::path::PathBuf {
    std::fs::read_dir(layout.join("blobs/sha256"))
        .expect("read")
        .map(|e| e.expect("entry").path())
        .find(|p| std::fs::read(p).expect("read").starts_with(&[0x1f, 0x8b]))
        .expect("a gzip layer")
}

#[test]
fn copy_refuses_a_source_without_oci_layout_and_leaves_it_untouched() {
    let cli = with_source();
    let src = cli.tmp.path().join("src");
    std::fs::remove_file(src.join("oci-layout")).expect("rm");
    let before = names(&src);
    let err = cli.fails(&["copy", &src_spec(&cli), "copied:1"]);
    assert!(err.contains("no oci-layout"), "{err}");
    assert_eq!(names(&src), before, "the source was written to");
}

#[test]
fn copy_refuses_an_unknown_major_layout_version() {
    let cli = with_source();
    let src = cli.tmp.path().join("src");
    std::fs::write(src.join("oci-layout"), r#"{"imageLayoutVersion":"9.9.9"}"#).expect("write");
    let err = cli.fails(&["copy", &src_spec(&cli), "copied:1"]);
    assert!(
        err.contains("unsupported imageLayoutVersion \"9.9.9\""),
        "{err}"
    );
}

#[test]
fn copy_from_a_layout_with_a_fifo_blob_fails_instead_of_hanging() {
    let cli = with_source();
    let blob = layer_blob(&cli.tmp.path().join("src"));
    std::fs::remove_file(&blob).expect("rm");
    let made = std::process::Command::new("mkfifo")
        .arg(&blob)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo failed");
    // Into a fresh layout, so that the layer must be read.
    let dst = format!("oci:{}:app:1", cli.tmp.path().join("fresh").display());
    let err = cli.fails(&["copy", &src_spec(&cli), &dst]);
    assert!(err.contains("FIFO, not a regular file"), "{err}");
}

#[test]
fn copy_into_a_layout_whose_blobs_directory_is_a_symlink_writes_nothing_through_it() {
    let cli = with_source();
    let dst = cli.tmp.path().join("dst");
    let elsewhere = cli.tmp.path().join("elsewhere");
    std::fs::create_dir_all(dst.join("blobs")).expect("mkdir");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    std::os::unix::fs::symlink(&elsewhere, dst.join("blobs/sha256")).expect("symlink");
    let spec = format!("oci:{}:app:1", dst.display());
    let err = cli.fails(&["copy", "app:1", &spec]);
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(
        std::fs::read_dir(&elsewhere).expect("read").count(),
        0,
        "blobs were written through the link"
    );
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("read")
        .map(|e| e.expect("entry").file_name())
        .collect();
    v.sort();
    v
}
