//! `imagectl copy` with a registry at one end or both (the real
//! distribution registry of image-testsupport): store -> registry ->
//! registry (mounted) -> layout -> store with one digest throughout,
//! skopeo reading what we copied, `--insecure` named when missing, and
//! `--referrers` refused with a store at one end.

mod common;

use std::process::Command;

use common::{Cleanup, Cli};
use image_core::Reference;
use image_store::{OciDir, TagStore};
use image_testsupport::registry::{Registry, RegistryOptions};

fn digest_in(store: &std::path::Path, tag: &str) -> String {
    OciDir::open(store)
        .unwrap()
        .resolve_tag(tag)
        .unwrap()
        .digest()
        .to_string()
}

#[test]
fn copy_between_store_registries_and_layouts_keeps_the_digest() {
    let Some(registry) = Registry::start_or_skip(RegistryOptions::plain()) else {
        return;
    };
    let cli = Cli::new(Cleanup::Containers);
    let rootfs = cli.tmp.path().join("rootfs");
    image_testsupport::rootfs::container_rootfs(&rootfs, &["sh", "echo"]);
    cli.append_shell_image(&rootfs, "app:1");
    let local = Reference::parse_name("app:1").unwrap().to_string();
    let digest = digest_in(&cli.store(), &local);
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
        let mut cmd = Command::new(skopeo);
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
    assert_eq!(digest_in(&layout, "copied"), digest);
    cli.ok(&["copy", &in_layout, "store:back:1", "--quiet"]);
    let back = Reference::parse_name("back:1").unwrap().to_string();
    assert_eq!(digest_in(&cli.store(), &back), digest);

    // Referrers need a registry at both ends.
    let err = cli.fails(&["copy", &second, "store:x:1", "--referrers", "--insecure"]);
    assert!(err.contains("referrers"), "{err}");
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
