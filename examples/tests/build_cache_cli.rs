//! `imagectl build --cache-to/--cache-from`: a build on store A exports
//! its cache (an OCI layout, and a repository of the real distribution
//! registry); a fresh store B (another directory, another context path)
//! imports it and rebuilds with every step cached, to the same image. As
//! root; a missing tool skips loudly unless CI=true.

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
    let max = a.tmp.path().join("cache-max");
    let min = a.tmp.path().join("cache-min");
    let (id, stderr) = build(
        &a,
        &context(&a, "ctx"),
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", max.display()),
            "--cache-to",
            &format!("type=local,dest={}", min.display()),
        ],
    );
    assert!(stderr.contains(": 4 steps, 0 cached"), "{stderr}");
    assert!(
        stderr.contains("exported 4 build cache records"),
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

    // mode=min: the builder's steps run again, the final stage's are cached.
    let c = fresh_from(&a);
    let (id_c, stderr) = build(
        &c,
        &context(&c, "ctx"),
        &["--cache-from", &format!("type=local,src={}", min.display())],
    );
    assert!(stderr.contains(": 4 steps, 2 cached"), "{stderr}");
    assert_eq!(id_c, id);
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
        stderr.contains(&format!("exported 4 build cache records to {cache}")),
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
