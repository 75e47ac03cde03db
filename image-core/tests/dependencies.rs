//! image-core's own dependency list stays small (as gitoxide checks with
//! `cargo tree`): without the `codec` feature no compression library is
//! built, and oci-spec comes without its runtime types (image-runtime asks
//! for those itself).

use std::process::Command;

/// `cargo tree` of image-core's normal dependencies, one package per line
/// with its enabled features.
fn tree(features: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["tree", "--manifest-path", manifest, "-p", "image-core"])
        .args(["-e", "normal", "--prefix", "none", "-f", "{p} [{f}]"]);
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    let out = cmd.output().expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn has_package(tree: &str, name: &str) -> bool {
    tree.lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn a_digest_only_user_builds_no_codec() {
    let t = tree(&[]);
    for absent in ["flate2", "zstd", "zlib-rs"] {
        assert!(!has_package(&t, absent), "{absent} without codec:\n{t}");
    }
    let oci = t
        .lines()
        .find(|l| l.starts_with("oci-spec "))
        .expect("oci-spec is a dependency");
    assert!(!oci.contains("runtime"), "oci-spec features: {oci}");
}

#[test]
fn the_codec_feature_brings_flate2_and_zstd() {
    let t = tree(&["codec"]);
    for present in ["flate2", "zstd"] {
        assert!(has_package(&t, present), "{present} with codec:\n{t}");
    }
}
