//! The crate family's dependencies point only downward:
//! core <- store <- overlay <- runtime <- build, and registry <- {core, store}.
//! image-testsupport (the shared test fixtures and conformance suites) sits
//! beside them: it may use the libraries, and they may use it only as a
//! dev-dependency, so it is never part of what a user of the family builds.
//! This reads `cargo metadata` so a new edge that breaks the tiers fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// What each crate of the family may depend on (directly, any dependency kind).
fn allowed() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let family: [(&str, &[&str]); 8] = [
        ("image-core", &[]),
        ("image-store", &["image-core"]),
        ("image-overlay", &["image-core", "image-store"]),
        (
            "image-runtime",
            &["image-core", "image-store", "image-overlay"],
        ),
        (
            "image-build",
            &[
                "image-core",
                "image-store",
                "image-overlay",
                "image-runtime",
            ],
        ),
        ("image-registry", &["image-core", "image-store"]),
        (
            "image-testsupport",
            &[
                "image-core",
                "image-store",
                "image-overlay",
                "image-runtime",
            ],
        ),
        (
            "imagectl",
            &[
                "image-core",
                "image-store",
                "image-overlay",
                "image-runtime",
                "image-build",
                "image-registry",
            ],
        ),
    ];
    family
        .into_iter()
        .map(|(k, v)| (k, v.iter().copied().collect()))
        .collect()
}

/// The crates that any member may use, but only as a dev-dependency.
const DEV_ONLY: &[&str] = &["image-testsupport"];

/// Returns the edges between workspace members that are not allowed.
fn violations(metadata: &serde_json::Value) -> Vec<String> {
    let allowed = allowed();
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    let members: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    let mut bad = Vec::new();
    for p in &packages {
        let name = p["name"].as_str().unwrap_or_default();
        let Some(ok) = allowed.get(name) else {
            bad.push(format!(
                "{name} is a workspace member missing from the tier table"
            ));
            continue;
        };
        for dep in p["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            if !members.contains(dep_name) {
                continue;
            }
            // A crate's tests may enable its own features (`testing`, `tokio`)
            // through a dev-dependency on itself: no edge between tiers.
            if dep_name == name && dep["kind"].as_str() == Some("dev") {
                continue;
            }
            if DEV_ONLY.contains(&dep_name) {
                if dep["kind"].as_str() != Some("dev") {
                    bad.push(format!(
                        "{name} depends on {dep_name} other than as a dev-dependency"
                    ));
                }
            } else if !ok.contains(dep_name) {
                bad.push(format!("{name} depends on {dep_name}"));
            }
        }
    }
    bad
}

#[test]
fn dependencies_point_only_downward() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let names: BTreeSet<&str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names.len(), 8, "the family has eight packages: {names:?}");
    let bad = violations(&metadata);
    assert!(bad.is_empty(), "dependency direction broken: {bad:?}");
}

#[test]
fn a_dev_dependency_on_itself_is_no_edge_but_a_normal_one_is() {
    let metadata = serde_json::json!({"packages": [
        {"name": "image-store", "dependencies": [{"name": "image-store", "kind": "dev"}]},
        {"name": "image-overlay", "dependencies": [{"name": "image-overlay", "kind": null}]},
    ]});
    assert_eq!(
        violations(&metadata),
        ["image-overlay depends on image-overlay"]
    );
}

#[test]
fn an_upward_edge_is_caught() {
    let metadata = serde_json::json!({"packages": [
        {"name": "image-core", "dependencies": [{"name": "image-store"}, {"name": "serde"}]},
        {"name": "image-store", "dependencies": [{"name": "image-core"}]},
        {"name": "image-registry", "dependencies": [{"name": "image-overlay"}]},
        {"name": "image-overlay", "dependencies": [{"name": "image-overlay", "kind": "dev"}]},
        {"name": "image-testsupport", "dependencies": [{"name": "image-store"}]},
        {"name": "image-runtime", "dependencies": [
            {"name": "image-testsupport", "kind": "dev"},
            {"name": "image-runtime", "kind": null},
        ]},
        {"name": "imagectl", "dependencies": [
            {"name": "image-testsupport", "kind": null},
        ]},
    ]});
    assert_eq!(
        violations(&metadata),
        vec![
            "image-core depends on image-store".to_string(),
            "image-registry depends on image-overlay".to_string(),
            "image-runtime depends on image-runtime".to_string(),
            "imagectl depends on image-testsupport other than as a dev-dependency".to_string(),
        ]
    );
}
