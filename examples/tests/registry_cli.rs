//! `imagectl push`, `pull`, `tags`, `manifest`, `login` and `logout`
//! against the real distribution registry (image-testsupport's fixture):
//! a round trip with `--insecure`, the refusal without it naming the
//! flag, and a login whose config file a later pull uses; `imagectl
//! copy` with a registry at one end or both.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use common::{Cleanup, Cli};
use image_core::{Digest, Reference};
use image_store::{OciDir, TagStore};
use image_testsupport::registry::{Registry, RegistryOptions};

/// A store with the busybox image `app:1` in it.
fn cli_with_image() -> Cli {
    let cli = Cli::new(Cleanup::Containers);
    let rootfs = cli.tmp.path().join("rootfs");
    image_testsupport::rootfs::container_rootfs(&rootfs, &["sh", "echo"]);
    cli.append_shell_image(&rootfs, "app:1");
    cli
}

fn stored_digest(store: &std::path::Path, tag: &str) -> String {
    OciDir::open(store)
        .unwrap()
        .resolve_tag(tag)
        .unwrap()
        .digest()
        .to_string()
}

/// Attaches a signature (a referrer) to the image `local` of `cli`'s store.
fn sign(cli: &Cli, local: &str) {
    let store = OciDir::open(cli.store()).unwrap();
    let subject = store.resolve_tag(local).unwrap();
    image_build::provenance::attach(
        &store,
        &subject,
        "application/vnd.example.sig",
        b"signed",
        Default::default(),
    )
    .unwrap();
}

#[test]
fn push_pull_tags_and_manifest_round_trip_with_insecure_and_are_refused_without_it() {
    let Some(registry) = Registry::start_or_skip(RegistryOptions::plain()) else {
        return;
    };
    let cli = cli_with_image();
    let local = Reference::parse_name("app:1").unwrap().to_string();
    let digest = stored_digest(&cli.store(), &local);
    let dest = format!("{}/cli/app:1", registry.host_port());

    // A plain-HTTP registry without --insecure: refused, naming the flag.
    let err = cli.fails(&["push", "app:1", &dest]);
    assert!(err.contains("--insecure"), "{err}");

    let out = cli.ok(&["push", "app:1", &dest, "--insecure", "--quiet"]);
    assert!(out.contains(&digest), "{out}");
    let tags = cli.ok(&[
        "tags",
        &format!("{}/cli/app", registry.host_port()),
        "--insecure",
    ]);
    assert_eq!(tags.trim(), "1");
    let raw = cli
        .command(&["manifest", &dest, "--raw", "--insecure"])
        .output()
        .unwrap();
    assert!(raw.status.success());
    assert_eq!(Digest::sha256(&raw.stdout).to_string(), digest);

    // Into a fresh store: the same digest, named by the pulled reference.
    let other = Cli::new(Cleanup::Containers);
    let err = other.fails(&["pull", &dest]);
    assert!(err.contains("--insecure"), "{err}");
    other.ok(&["pull", &dest, "--insecure", "--quiet"]);
    let full = Reference::parse_name(&dest).unwrap().to_string();
    assert_eq!(full, dest);
    assert_eq!(stored_digest(&other.store(), &dest), digest);

    // podman pulls what we pushed (a private store under the test's
    // directory), finds our digest and runs it.
    let Some(podman) = image_testsupport::tools::which("podman") else {
        image_testsupport::tools::skip_or_fail("podman");
        return;
    };
    let dir = cli.tmp.path();
    let podman = |args: &[&str]| {
        let mut cmd = std::process::Command::new(&podman);
        cmd.arg("--root")
            .arg(dir.join("podman-root"))
            .arg("--runroot")
            .arg(dir.join("podman-run"))
            .args(["--storage-driver", "vfs", "--events-backend", "file"])
            .args(args);
        let out = image_testsupport::process::run_bounded(cmd);
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    podman(&["pull", "--tls-verify=false", &dest]);
    assert_eq!(
        podman(&["image", "inspect", "--format", "{{.Digest}}", &dest]),
        digest
    );
    // (runc when installed: crun 1.x refuses this machine's hybrid cgroups
    // through containers/common; podman raises the container's rlimits to
    // its own defaults, which a test machine's limits may forbid: these fit
    // under any.)
    let runtime = if image_testsupport::tools::which("runc").is_some() {
        "runc"
    } else {
        "crun"
    };
    let ran = podman(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--runtime",
        runtime,
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        &dest,
        "echo",
        "pushed-and-run",
    ]);
    assert_eq!(ran, "pushed-and-run");
}

#[test]
fn login_writes_the_config_file_a_pull_then_uses_and_logout_removes_it() {
    let Some(registry) = Registry::start_or_skip(RegistryOptions::basic()) else {
        return;
    };
    let creds = registry.credentials().unwrap().clone();
    let host = registry.host_port();
    let cli = cli_with_image();
    let docker_config = cli.tmp.path().join("docker");
    let dest = format!("{host}/private/app:1");
    let run = |args: &[&str], stdin: &str| {
        let mut cmd = cli.command(args);
        cmd.env("DOCKER_CONFIG", &docker_config)
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };

    // Anonymous: refused with the credentials' exit status.
    let out = run(&["push", "app:1", &dest, "--insecure"], "");
    assert_eq!(out.status.code(), Some(77), "{out:?}");

    let login = |password: &str| {
        let args = ["login", &host, "-u", &creds.user, "--password-stdin"];
        run(
            &[&args[..], &["--insecure"]].concat(),
            &format!("{password}\n"),
        )
    };
    // A wrong password is not kept.
    assert!(!login("wrong").status.success());
    assert!(!docker_config.join("config.json").exists());

    let out = login(&creds.password);
    assert!(out.status.success(), "{out:?}");
    let file = docker_config.join("config.json");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(json["auths"][&host]["auth"].is_string(), "{json}");

    let out = run(&["push", "app:1", &dest, "--insecure", "--quiet"], "");
    assert!(out.status.success(), "{out:?}");
    let out = run(&["pull", &dest, "--insecure", "--quiet"], "");
    assert!(out.status.success(), "{out:?}");

    let out = run(&["logout", &host], "");
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(json["auths"].get(&host).is_none(), "{json}");
    let out = run(&["pull", &dest, "--insecure", "--quiet"], "");
    assert_eq!(out.status.code(), Some(77), "{out:?}");
}

#[test]
fn copy_between_store_registries_and_layouts_keeps_the_digest() {
    let Some(registry) = Registry::start_or_skip(RegistryOptions::plain()) else {
        return;
    };
    let cli = cli_with_image();
    let local = Reference::parse_name("app:1").unwrap().to_string();
    let digest = stored_digest(&cli.store(), &local);
    let host = registry.host_port();
    let first = format!("docker://{host}/cli/app:1");

    let err = cli.fails(&["copy", "app:1", &first]);
    assert!(err.contains("--insecure"), "{err}");
    let out = cli.ok(&["copy", "app:1", &first, "--insecure", "--quiet"]);
    assert!(out.contains(&digest), "{out}");

    // Registry to registry on one host: every blob mounted.
    let second = format!("docker://{host}/other/app:2");
    let out = cli.ok(&["copy", &first, &second, "--insecure", "--quiet"]);
    assert!(out.contains("0 blobs copied"), "{out}");
    assert!(!out.contains(" 0 mounted"), "{out}");

    // skopeo reads it with our digest.
    if let Some(skopeo) = image_testsupport::tools::which("skopeo") {
        let mut cmd = std::process::Command::new(skopeo);
        cmd.args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{host}/other/app:2"));
        let out = image_testsupport::process::run_bounded(cmd);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(image_core::Digest::sha256(&out.stdout).to_string(), digest);
    } else {
        image_testsupport::tools::skip_or_fail("skopeo");
    }

    // Registry -> layout -> the store under another name.
    let layout = cli.tmp.path().join("layout");
    let in_layout = format!("oci:{}:copied", layout.display());
    cli.ok(&["copy", &second, &in_layout, "--insecure", "--quiet"]);
    assert_eq!(stored_digest(&layout, "copied"), digest);
    cli.ok(&["copy", &in_layout, "store:back:1", "--quiet"]);
    let back = Reference::parse_name("back:1").unwrap().to_string();
    assert_eq!(stored_digest(&cli.store(), &back), digest);

    // Registry -> OCI archive -> the store, and skopeo's transport name.
    let archive = format!("oci-archive:{}:v1", cli.tmp.path().join("a.tar").display());
    cli.ok(&["copy", &second, &archive, "--insecure", "--quiet"]);
    cli.ok(&["copy", &archive, "store:from-archive:1", "--quiet"]);
    let from_archive = Reference::parse_name("from-archive:1").unwrap().to_string();
    assert_eq!(stored_digest(&cli.store(), &from_archive), digest);

    // Referrers: store -> registry -> another store, listed by inspect
    // there.
    sign(&cli, &local);
    let signed = format!("docker://{host}/signed/app:1");
    let out = cli.ok(&[
        "copy",
        "app:1",
        &signed,
        "--referrers",
        "--insecure",
        "--quiet",
    ]);
    assert!(out.contains("1 referrers"), "{out}");
    let other = Cli::new(Cleanup::Containers);
    let out = other.ok(&[
        "copy",
        &signed,
        "store:y:1",
        "--referrers",
        "--insecure",
        "--quiet",
    ]);
    assert!(out.contains("1 referrers"), "{out}");
    let listed: serde_json::Value =
        serde_json::from_str(&other.ok(&["inspect", "--referrers", "y:1"])).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["artifactType"], "application/vnd.example.sig");
    // ...and store -> layout -> archive -> another store: the layout and
    // the archive list the signature as an untagged index.json entry.
    let signed_layout = format!("oci:{}:signed", cli.tmp.path().join("signed").display());
    let signed_archive = format!(
        "oci-archive:{}:signed",
        cli.tmp.path().join("signed.tar").display()
    );
    for (from, to) in [("app:1", &signed_layout), (&signed_layout, &signed_archive)] {
        let out = cli.ok(&["copy", from, to, "--referrers", "--quiet"]);
        assert!(out.contains("1 referrers"), "{from} -> {to}: {out}");
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cli.tmp.path().join("signed/index.json")).unwrap())
            .unwrap();
    let untagged = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["annotations"]["org.opencontainers.image.ref.name"].is_null())
        .count();
    assert_eq!(untagged, 1, "{index}");
    let out = other.ok(&[
        "copy",
        &signed_archive,
        "store:z:1",
        "--referrers",
        "--quiet",
    ]);
    assert!(out.contains("1 referrers"), "{out}");
    let listed: serde_json::Value =
        serde_json::from_str(&other.ok(&["inspect", "--referrers", "z:1"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed:?}");
    // With --referrers between registries: the image (it has none).
    let out = cli.ok(&[
        "copy",
        &second,
        &format!("docker://{host}/third/app:3"),
        "--referrers",
        "--insecure",
        "--quiet",
    ]);
    assert!(out.contains("0 referrers"), "{out}");
}

/// `oci:DIR` and `oci-archive:PATH` without a reference (skopeo's forms)
/// mean the one image there, also when a copy with `--referrers` listed
/// its referrers beside it as untagged entries (oras's form): copied
/// back, the image comes with its referrer when asked and alone when
/// not. A second image in the layout makes `oci:DIR` ambiguous again,
/// refused.
#[test]
fn copy_from_a_layout_or_archive_without_a_reference_takes_its_image() {
    let cli = cli_with_image();
    let local = Reference::parse_name("app:1").unwrap().to_string();
    let digest = stored_digest(&cli.store(), &local);
    sign(&cli, &local);
    let dir = cli.tmp.path().join("layout");
    let layout = format!("oci:{}", dir.display());
    let archive = format!("oci-archive:{}", cli.tmp.path().join("a.tar").display());
    for to in [format!("{layout}:app"), archive.clone()] {
        let out = cli.ok(&["copy", "app:1", &to, "--referrers", "--quiet"]);
        assert!(out.contains("1 referrers"), "{to}: {out}");
    }
    for (n, from) in [&layout, &archive].into_iter().enumerate() {
        let with = format!("store:with{n}:1");
        let out = cli.ok(&["copy", from, &with, "--referrers", "--quiet"]);
        assert!(out.contains("1 referrers"), "{from}: {out}");
        let name = Reference::parse_name(&format!("with{n}:1")).unwrap();
        assert_eq!(stored_digest(&cli.store(), &name.to_string()), digest);
        let listed: serde_json::Value =
            serde_json::from_str(&cli.ok(&["inspect", "--referrers", &format!("with{n}:1")]))
                .unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 1, "{from}: {listed:?}");
        let without = format!("store:without{n}:1");
        let out = cli.ok(&["copy", from, &without, "--quiet"]);
        assert!(out.contains("0 referrers"), "{from}: {out}");
        let name = Reference::parse_name(&format!("without{n}:1")).unwrap();
        assert_eq!(stored_digest(&cli.store(), &name.to_string()), digest);
    }
    // A second name of the image is the same image.
    cli.ok(&["copy", "app:1", &format!("{layout}:again"), "--quiet"]);
    cli.ok(&["copy", &layout, "store:again:1", "--quiet"]);
    let rootfs = cli.tmp.path().join("rootfs");
    std::fs::write(rootfs.join("other"), b"another image").unwrap();
    cli.append_shell_image(&rootfs, "other:1");
    cli.ok(&["copy", "other:1", &format!("{layout}:other"), "--quiet"]);
    let err = cli.fails(&["copy", &layout, "store:x:1", "--quiet"]);
    assert!(err.contains("2 images"), "{err}");
}

/// `oci:DIR` without a reference at a destination (skopeo's form): the
/// image is an entry of `index.json` without a name, which skopeo reads
/// and which copies back out (`oci:DIR` at a source) with its digest; the
/// same image copied there again adds nothing, another image adds a
/// second unnamed entry (as skopeo does), and the layout then names no
/// one image: refused, saying so.
#[test]
fn copy_into_a_layout_without_a_reference_lists_the_image_unnamed() {
    let cli = cli_with_image();
    let local = Reference::parse_name("app:1").unwrap().to_string();
    let digest = stored_digest(&cli.store(), &local);
    let dir = cli.tmp.path().join("layout");
    let layout = format!("oci:{}", dir.display());
    let entries = || -> Vec<serde_json::Value> {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        index["manifests"].as_array().unwrap().clone()
    };
    let out = cli.ok(&["copy", "app:1", &layout, "--quiet"]);
    assert!(out.contains(&digest), "{out}");
    let listed = entries();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["digest"], digest.as_str());
    assert!(listed[0].get("annotations").is_none(), "{listed:?}");
    if let Some(skopeo) = image_testsupport::tools::which("skopeo") {
        let mut cmd = std::process::Command::new(skopeo);
        cmd.args(["inspect", "--raw", &layout]);
        let out = image_testsupport::process::run_bounded(cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(Digest::sha256(&out.stdout).to_string(), digest);
    } else {
        image_testsupport::tools::skip_or_fail("skopeo");
    }
    cli.ok(&["copy", &layout, "store:back:1", "--quiet"]);
    let back = Reference::parse_name("back:1").unwrap().to_string();
    assert_eq!(stored_digest(&cli.store(), &back), digest);

    cli.ok(&["copy", "app:1", &layout, "--quiet"]);
    assert_eq!(entries().len(), 1, "{:?}", entries());
    let rootfs = cli.tmp.path().join("rootfs");
    std::fs::write(rootfs.join("other"), b"another image").unwrap();
    cli.append_shell_image(&rootfs, "other:1");
    cli.ok(&["copy", "other:1", &layout, "--quiet"]);
    let listed = entries();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|m| m.get("annotations").is_none()));
    let err = cli.fails(&["copy", &layout, "store:x:1", "--quiet"]);
    assert!(
        err.contains("2 images and no reference naming one"),
        "{err}"
    );
}
