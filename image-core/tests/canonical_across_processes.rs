//! The same value serialises to the same bytes in every process.
//!
//! oci-spec keeps annotations in a `HashMap`, whose iteration order is
//! seeded per process. This test runs itself as child processes, each
//! building the same manifest, and compares the bytes they write: the
//! canonical writer's must be identical, while serde_json's plain output
//! of the same value is shown to vary (so the check has teeth).

use std::collections::HashMap;
use std::process::Command;

use image_core::oci_spec::image::{ImageManifestBuilder, MediaType as OciMediaType};
use image_core::{manifest, Digest, Manifest, MediaType};

const CHILD: &str = "IMAGE_CORE_CANONICAL_CHILD";

fn build() -> image_core::oci_spec::image::ImageManifest {
    let d = Digest::sha256(b"config");
    let annotations: HashMap<String, String> = (0..64)
        .map(|i| (format!("org.example.key{i:02}"), format!("value {i}")))
        .collect();
    ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(OciMediaType::ImageManifest)
        .config(manifest::descriptor(&MediaType::OciConfig, &d, 6))
        .layers(vec![])
        .annotations(annotations)
        .build()
        .expect("a valid manifest")
}

/// Run as a child: print both serialisations.
#[test]
fn child_prints_serialisations() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let inner = build();
    let canonical = Manifest::new(inner.clone()).expect("canonical");
    let naive = serde_json::to_vec(&inner).expect("naive");
    println!("CANONICAL {}", String::from_utf8_lossy(canonical.raw()));
    println!("NAIVE {}", String::from_utf8_lossy(&naive));
}

#[test]
fn canonical_bytes_are_identical_across_processes() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let mut canonical = Vec::new();
    let mut naive = Vec::new();
    for _ in 0..4 {
        let out = Command::new(&exe)
            .args([
                "--exact",
                "child_prints_serialisations",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .expect("child runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf8");
        for line in text.lines() {
            // libtest prints "test NAME ... " before the test's own output.
            if let Some((_, c)) = line.split_once("CANONICAL ") {
                canonical.push(c.to_owned());
            } else if let Some((_, n)) = line.split_once("NAIVE ") {
                naive.push(n.to_owned());
            }
        }
    }
    assert_eq!(canonical.len(), 4, "every child printed");
    assert!(
        canonical.windows(2).all(|w| w[0] == w[1]),
        "canonical output differs between processes"
    );
    let ours = Manifest::new(build()).expect("here");
    assert_eq!(
        canonical[0].as_bytes(),
        ours.raw(),
        "and equals this process's"
    );
    assert!(
        naive.windows(2).any(|w| w[0] != w[1]),
        "plain serde_json output of a HashMap should vary between processes"
    );
}
