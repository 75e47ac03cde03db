//! `imagectl build --cache-to/--cache-from`: a build on store A exports
//! its cache (an OCI layout, and a repository of the real distribution
//! registry); a fresh store B (another directory, another context path)
//! imports it and rebuilds with every step cached, to the same image. And
//! what a build says about its result: manifest annotations and the
//! provenance referrer `inspect --referrers` lists. As root; a missing
//! tool skips loudly unless CI=true.

mod common;

use common::{container_rootfs, ready, Cleanup, Cli};
use image_store::{copy_tag, OciDir, TagStore};
use image_testsupport::registry::{Registry, RegistryOptions};

const BASE: &str = "test.local/cache-base:1";
const DOCKERFILE: &str = r#"FROM test.local/cache-base:1 AS builder
COPY greeting.txt /src/
RUN echo "built from $(cat /src/greeting.txt)" > /artifact
FROM test.local/cache-base:1
COPY --from=builder /artifact /app/artifact
RUN cat /app/artifact > /app/out
"#;

/// A store holding BASE.
fn machine() -> Cli {
    let cli = Cli::new(Cleanup::Mounts);
    let rootfs = cli.tmp.path().join("rootfs");
    container_rootfs(&rootfs, &["sh", "echo", "cat"]);
    cli.append_shell_image(&rootfs, BASE);
    cli
}

/// A fresh store with A's BASE (as a pull would give it) and nothing else.
fn fresh_from(a: &Cli) -> Cli {
    let b = Cli::new(Cleanup::Mounts);
    let src = OciDir::open(a.store()).unwrap();
    let dst = OciDir::open_or_create(b.store()).unwrap();
    copy_tag(&src, BASE, &dst, None).unwrap();
    assert_eq!(dst.tags().unwrap().len(), 1);
    b
}

fn context(cli: &Cli, name: &str) -> String {
    let ctx = cli.tmp.path().join(name);
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(ctx.join("greeting.txt"), "hello\n").unwrap();
    ctx.to_str().unwrap().to_owned()
}

/// Builds; returns (image ID, stderr).
fn build(cli: &Cli, ctx: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["build", "--progress", "plain"];
    args.extend_from_slice(extra);
    args.push(ctx);
    let out = cli.imagectl(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        stderr,
    )
}

#[test]
fn a_local_cache_export_makes_a_fresh_store_start_warm_and_min_leaves_the_builder() {
    if !ready(&[]) {
        return;
    }
    let a = machine();
    // A cache mount A's RUN steps filled (`RUN --mount=type=cache`): its
    // directory under the runtime's state, as image-build keeps it.
    let apt = a.tmp.path().join("containers/cache-mounts/apt");
    std::fs::create_dir_all(&apt).unwrap();
    std::fs::write(apt.join("pkg.deb"), b"package").unwrap();
    let max = a.tmp.path().join("cache-max");
    let min = a.tmp.path().join("cache-min");
    let archive = a.tmp.path().join("cache.tar");
    let (id, stderr) = build(
        &a,
        &context(&a, "ctx"),
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", max.display()),
            "--cache-to",
            &format!("type=local,dest={}", min.display()),
            "--cache-to",
            &format!("type=oci-archive,dest={}", archive.display()),
        ],
    );
    assert!(stderr.contains(": 4 steps, 0 cached"), "{stderr}");
    assert!(
        stderr.contains("exported 4 build cache records and 1 cache mounts"),
        "{stderr}"
    );
    assert!(
        stderr.contains("exported 2 build cache records"),
        "{stderr}"
    );

    // mode=max: every step cached on a fresh store, the same image.
    let b = fresh_from(&a);
    let (id_b, stderr) = build(
        &b,
        &context(&b, "elsewhere/ctx"),
        &[
            "--cache-from",
            "type=local,src=/nonexistent/cache",
            "--cache-from",
            &format!("type=local,src={}", max.display()),
        ],
    );
    assert!(
        stderr.contains("WARNING: importing the build cache from /nonexistent/cache"),
        "{stderr}"
    );
    assert!(stderr.contains(": 4 steps, 4 cached"), "{stderr}");
    assert_eq!(id_b, id);
    // B starts with A's cache mount.
    assert_eq!(
        std::fs::read(b.tmp.path().join("containers/cache-mounts/apt/pkg.deb")).unwrap(),
        b"package"
    );

    // mode=min: the builder's steps run again, the final stage's are cached.
    let c = fresh_from(&a);
    let (id_c, stderr) = build(
        &c,
        &context(&c, "ctx"),
        &["--cache-from", &format!("type=local,src={}", min.display())],
    );
    assert!(stderr.contains(": 4 steps, 2 cached"), "{stderr}");
    assert_eq!(id_c, id);

    // An OCI archive (mode=min by default): as the min layout.
    let d = fresh_from(&a);
    let (id_d, stderr) = build(
        &d,
        &context(&d, "ctx"),
        &[
            "--cache-from",
            &format!("type=oci-archive,src={}", archive.display()),
        ],
    );
    assert!(stderr.contains(": 4 steps, 2 cached"), "{stderr}");
    assert_eq!(id_d, id);
}

/// The plain progress of a build: each step's title (`[STAGE N/M] TEXT`)
/// and whether it came from the cache.
fn step_reports(stderr: &str) -> Vec<(String, bool)> {
    let mut titles = std::collections::BTreeMap::new();
    let mut cached = std::collections::BTreeSet::new();
    for line in stderr.lines() {
        let Some((step, rest)) = line.strip_prefix('#').and_then(|l| l.split_once(' ')) else {
            continue;
        };
        let Ok(step) = step.parse::<usize>() else {
            continue;
        };
        if rest == "CACHED" {
            cached.insert(step);
        } else if rest.starts_with('[') {
            titles.insert(step, rest.to_owned());
        }
    }
    titles
        .into_iter()
        .map(|(step, title)| (title, cached.contains(&step)))
        .collect()
}

/// `--cache-to mode=min` of a two-platform build exports every platform's
/// final stage, as BuildKit does (it kept the first platform's only): a
/// fresh store building both platforms from it finds each platform's
/// final-stage steps in the cache, and makes the same index.
#[test]
fn a_min_cache_export_of_a_multi_platform_build_holds_every_platform() {
    if !ready(&[]) {
        return;
    }
    let (host, foreign) = common::host_and_foreign_platforms();
    let platforms = format!("{host},{foreign}");
    let dockerfile = format!(
        "FROM --platform=$BUILDPLATFORM {BASE} AS build\nARG TARGETARCH\nRUN mkdir /out && echo $TARGETARCH > /out/arch && echo $TARGETARCH > /built\nFROM scratch\nCOPY --from=build /out /out\nCOPY greeting.txt /greeting.txt\n"
    );
    let context = |cli: &Cli| {
        let ctx = context(cli, "ctx");
        std::fs::write(format!("{ctx}/Dockerfile"), &dockerfile).unwrap();
        ctx
    };
    let a = machine();
    let min = a.tmp.path().join("cache-min");
    let (id, stderr) = build(
        &a,
        &context(&a),
        &[
            "--platform",
            &platforms,
            "--cache-to",
            &format!("type=local,dest={},mode=min", min.display()),
        ],
    );
    assert!(
        stderr.contains("exported 4 build cache records"),
        "two final-stage steps of each platform: {stderr}"
    );

    let b = fresh_from(&a);
    let (id_b, stderr) = build(
        &b,
        &context(&b),
        &[
            "--platform",
            &platforms,
            "--cache-from",
            &format!("type=local,src={}", min.display()),
        ],
    );
    let reports = step_reports(&stderr);
    for platform in [host.as_str(), foreign] {
        let copies: Vec<&(String, bool)> = reports
            .iter()
            .filter(|(title, _)| {
                title.starts_with(&format!("[{platform} stage-1 ")) && title.contains("] COPY ")
            })
            .collect();
        assert_eq!(copies.len(), 2, "{platform}: {stderr}");
        assert!(
            copies.iter().all(|(_, cached)| *cached),
            "{platform}'s final stage is cached: {stderr}"
        );
    }
    assert!(stderr.contains(": 6 steps, 4 cached"), "{stderr}");
    assert_eq!(id_b, id);
}

#[test]
fn a_registry_cache_export_makes_a_fresh_store_start_warm() {
    let Some(registry) = Registry::start_or_skip(RegistryOptions::plain()) else {
        return;
    };
    if !ready(&[]) {
        return;
    }
    let cache = format!("{}/ci/app:buildcache", registry.host_port());
    let a = machine();
    let (id, stderr) = build(
        &a,
        &context(&a, "ctx"),
        &[
            "--insecure",
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
        ],
    );
    assert!(
        stderr.contains(&format!(
            "exported 4 build cache records and 0 cache mounts to {cache}"
        )),
        "{stderr}"
    );
    let b = fresh_from(&a);
    let (id_b, stderr) = build(
        &b,
        &context(&b, "other/ctx"),
        &[
            "--insecure",
            "--cache-from",
            &format!("type=registry,ref={cache}"),
        ],
    );
    assert!(
        stderr.contains("imported 4 build cache records"),
        "{stderr}"
    );
    assert!(stderr.contains(": 4 steps, 4 cached"), "{stderr}");
    assert_eq!(id_b, id);
}

#[test]
fn annotations_and_a_provenance_referrer_are_on_the_image() {
    if !ready(&[]) {
        return;
    }
    let a = machine();
    let ctx = context(&a, "ctx");
    let (id, _) = build(
        &a,
        &ctx,
        &[
            "-t",
            "test.local/app:1",
            "--annotation",
            "org.example.team=build",
            "--oci-annotations",
            "--label",
            "org.opencontainers.image.source=https://example.org/app.git",
            "--build-arg",
            "FLAVOUR=plain",
            "--provenance",
        ],
    );
    let store = OciDir::open(a.store()).unwrap();
    let base_digest = store.resolve_tag(BASE).unwrap().digest().to_string();
    let inspect: serde_json::Value =
        serde_json::from_str(&a.ok(&["inspect", "test.local/app:1"])).unwrap();
    assert_eq!(inspect["id"], id);
    let ann = &inspect["manifest"]["annotations"];
    assert_eq!(ann["org.example.team"], "build");
    assert_eq!(ann["org.opencontainers.image.base.name"], BASE);
    assert_eq!(ann["org.opencontainers.image.base.digest"], base_digest);
    assert_eq!(
        ann["org.opencontainers.image.source"],
        "https://example.org/app.git"
    );
    assert_eq!(
        ann["org.opencontainers.image.created"],
        inspect["config"]["created"]
    );
    let manifest_digest = inspect["manifestDigest"].as_str().unwrap().to_owned();

    // gc keeps the referrer; images does not list its list's tag.
    a.ok(&["gc", "--grace", "0"]);
    let images = a.ok(&["images"]);
    assert!(!images.contains("referrers"), "{images}");
    let referrers: serde_json::Value =
        serde_json::from_str(&a.ok(&["inspect", "--referrers", "test.local/app:1"])).unwrap();
    let list = referrers.as_array().unwrap();
    assert_eq!(list.len(), 1, "{referrers}");
    assert_eq!(list[0]["artifactType"], "application/vnd.in-toto+json");
    let referrer: image_core::Descriptor = serde_json::from_value(list[0].clone()).unwrap();
    let manifest = image_core::Manifest::from_bytes(
        image_store::Provider::read_descriptor_to_vec(&store, &referrer, 1 << 20).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest.subject().unwrap().digest().to_string(),
        manifest_digest
    );
    let statement: serde_json::Value = serde_json::from_slice(
        &image_store::Provider::read_descriptor_to_vec(&store, &manifest.layers()[0], 1 << 20)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        statement["predicateType"],
        "https://slsa.dev/provenance/v0.2"
    );
    assert_eq!(
        format!(
            "sha256:{}",
            statement["subject"][0]["digest"]["sha256"]
                .as_str()
                .unwrap()
        ),
        manifest_digest
    );
    let predicate = &statement["predicate"];
    assert_eq!(
        predicate["invocation"]["parameters"]["args"]["FLAVOUR"],
        "plain"
    );
    assert_eq!(
        predicate["invocation"]["parameters"]["frontend"],
        "dockerfile.v0"
    );
    let dockerfile = std::fs::read(format!("{ctx}/Dockerfile")).unwrap();
    assert_eq!(
        format!(
            "sha256:{}",
            predicate["invocation"]["configSource"]["digest"]["sha256"]
                .as_str()
                .unwrap()
        ),
        image_core::Digest::sha256(&dockerfile).to_string()
    );
    let materials = predicate["materials"].as_array().unwrap();
    assert_eq!(
        materials.len(),
        1,
        "both stages start from BASE: {predicate}"
    );
    assert_eq!(
        format!(
            "sha256:{}",
            materials[0]["digest"]["sha256"].as_str().unwrap()
        ),
        base_digest
    );

    // Without --provenance and --annotation: no referrer, no annotations.
    build(&a, &ctx, &["-t", "test.local/plain:1"]);
    let plain: serde_json::Value =
        serde_json::from_str(&a.ok(&["inspect", "test.local/plain:1"])).unwrap();
    assert!(plain["manifest"]["annotations"].is_null(), "{plain}");
    assert_eq!(
        a.ok(&["inspect", "--referrers", "test.local/plain:1"])
            .trim(),
        "[]"
    );
}
