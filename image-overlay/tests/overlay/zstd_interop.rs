//! zstd layers with skopeo and podman (umoci 0.4.7 and oci-image-tool
//! reject zstd): what we write they read, and what skopeo writes we unpack
//! with both digests verified.

use std::path::Path;
use std::process::Command;

use image_core::{Compression, MediaType};
use image_overlay::flatten::flatten_image;
use image_overlay::unpack::{unpack, UnpackOptions};
use image_store::image::resolve_image;
use image_store::mutate::NewLayer;
use image_store::tags::normalize_name;
use image_store::{OciDir, Provider};

use crate::common::{assert_same_tree, make_tree, set_all_mtimes};
use crate::umoci::{build_image, hardlink_groups, layer_from_dir, run};

/// Debian's busybox-static with a few applets, and a file to read back.
fn small_rootfs(root: &Path) {
    std::fs::create_dir_all(root.join("bin")).expect("mkdir");
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "cat", "ls"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
    }
    std::fs::create_dir_all(root.join("srv")).expect("mkdir");
    std::fs::write(root.join("srv/hello"), b"hello from a zstd layer\n").expect("write");
    set_all_mtimes(root);
}

/// `oci:LAYOUT:NAME` for skopeo and podman, with the name as our store
/// writes it in the ref annotation.
fn oci_ref(layout: &Path, tag: &str) -> String {
    format!(
        "oci:{}:{}",
        layout.display(),
        normalize_name(tag).expect("name")
    )
}

fn layer_digests(json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json).expect("skopeo inspect JSON");
    v["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .map(|d| d.as_str().expect("digest").to_owned())
        .collect()
}

/// A temp directory whose path is a valid lowercase repository name
/// (podman 4.3 names an image pulled from an OCI layout after the layout's
/// path, not its ref name); removed with the value.
struct LowerDir(std::path::PathBuf);

impl LowerDir {
    fn new(prefix: &str) -> LowerDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = std::env::temp_dir().join(format!(
            "{prefix}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&p).expect("mkdir");
        LowerDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for LowerDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A private podman store (vfs), its images removed with the value.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        Podman {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("runroot"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "none"]);
        c
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Unmount whatever podman left mounted, then remove the images so
        // the vfs layers go with the temp dir.
        let _ = self.cmd().args(["image", "unmount", "--all"]).output();
        let _ = self.cmd().args(["rmi", "--all", "--force"]).output();
    }
}

fn tools(names: &[&str]) -> bool {
    crate::common::ready(names)
}

#[test]
fn our_zstd_image_is_read_by_skopeo_and_podman() {
    if !tools(&["skopeo", "podman"]) {
        return;
    }
    let work = LowerDir::new("zstd-interop");
    let rootfs = work.path().join("rootfs");
    let extra = work.path().join("extra");
    std::fs::create_dir(&rootfs).expect("mkdir");
    std::fs::create_dir(&extra).expect("mkdir");
    small_rootfs(&rootfs);
    make_tree(&extra);
    let layout = work.path().join("a");
    let store = OciDir::open_or_create(&layout).expect("layout");
    let layers: Vec<NewLayer> = vec![
        layer_from_dir(&store, &rootfs, Compression::Zstd),
        layer_from_dir(&store, &extra, Compression::Zstd),
    ];
    for l in &layers {
        assert_eq!(l.media_type, MediaType::OciLayerZstd);
    }
    build_image(&store, &layers, "zstd:1");
    let ours: Vec<String> = layers.iter().map(|l| l.digest.to_string()).collect();

    // skopeo inspects it and copies it; the copy keeps our blobs as they are.
    let src = oci_ref(&layout, "zstd:1");
    let inspected = run(Command::new("skopeo").args(["inspect", &src]));
    assert_eq!(layer_digests(&inspected), ours);
    let copy = work.path().join("b");
    let dst = oci_ref(&copy, "zstd:1");
    run(Command::new("skopeo").args(["copy", "--quiet", &src, &dst]));
    assert_eq!(
        layer_digests(&run(Command::new("skopeo").args(["inspect", &dst]))),
        ours
    );
    // And we read skopeo's copy back: same tree as the original.
    let copied = OciDir::open(&copy).expect("open copy");
    let image = resolve_image(&copied, "zstd:1", None).expect("resolve copy");
    let flat_copy = work.path().join("flat-copy");
    flatten_image(&copied, &image, &flat_copy, &UnpackOptions::default()).expect("flatten copy");
    let flat = work.path().join("flat");
    let original = resolve_image(&store, "zstd:1", None).expect("resolve");
    flatten_image(&store, &original, &flat, &UnpackOptions::default()).expect("flatten");
    assert_same_tree(&flat, &flat_copy, true);

    // podman pulls it into a private store and runs busybox from it.
    // podman 4.3 names an image pulled from an OCI layout after the
    // layout's path (not its ref name), so the layout sits at a path that
    // is a valid lowercase repository name.
    let podman = Podman::new();
    let name = format!("localhost{}:latest", layout.display());
    run(podman.cmd().args(["pull", "--quiet", &src]));
    let out = podman
        .cmd()
        .args(["run", "--rm", "--runtime", "runc", "--network", "none"])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .args([&name, "/bin/busybox", "cat", "/srv/hello"])
        .output()
        .expect("podman run");
    if out.status.success() {
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello from a zstd layer\n"
        );
    } else {
        // Running containers may be impossible here; the image content
        // is still checked through a mount of the pulled image.
        eprintln!(
            "podman run failed ({}), checking through podman image mount: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mnt = run(podman.cmd().args(["image", "mount", &name]));
    let mnt = Path::new(mnt.trim());
    assert_eq!(
        std::fs::read(mnt.join("srv/hello")).expect("read through mount"),
        b"hello from a zstd layer\n"
    );
    // podman's unpack of our zstd layers gives our tree (podman's root
    // directory and its own /etc additions aside, which it makes only at run).
    let mut ours_only = crate::common::snapshot(&flat, true);
    let theirs = crate::common::snapshot(mnt, true);
    ours_only.retain(|k, f| theirs.get(k) != Some(&*f));
    assert!(
        ours_only.is_empty(),
        "podman's tree differs at {:?}",
        ours_only.keys().take(5).collect::<Vec<_>>()
    );
    assert_eq!(hardlink_groups(&flat), hardlink_groups(mnt));
    run(podman.cmd().args(["image", "unmount", &name]));
}

#[test]
fn skopeo_zstd_layer_unpacks_with_us_digests_verified() {
    if !tools(&["skopeo"]) {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir(&rootfs).expect("mkdir");
    small_rootfs(&rootfs);
    make_tree(&rootfs.join("gen"));
    let layout = work.path().join("a");
    let store = OciDir::open_or_create(&layout).expect("layout");
    let gz = layer_from_dir(&store, &rootfs, Compression::Gzip);
    build_image(&store, std::slice::from_ref(&gz), "gz:1");

    let converted = work.path().join("b");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--dest-compress-format",
        "zstd",
        &oci_ref(&layout, "gz:1"),
        &oci_ref(&converted, "gz:1"),
    ]));
    let theirs = OciDir::open(&converted).expect("open");
    let image = resolve_image(&theirs, "gz:1", None).expect("resolve");
    let layer = &image.layers()[0];
    assert_eq!(
        layer.media_type().to_string(),
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let digest: image_core::Digest = layer.digest().to_string().parse().expect("digest");
    assert_ne!(digest, gz.digest, "skopeo recompressed the layer");
    // Same tar, so the same diff ID.
    assert_eq!(image.diff_ids(), std::slice::from_ref(&gz.diff_id));

    // One layer, both digests checked.
    let dst = work.path().join("unpacked");
    std::fs::create_dir(&dst).expect("mkdir");
    let options = UnpackOptions::default()
        .with_compression(Compression::Zstd)
        .with_digest(digest.clone())
        .with_diff_id(gz.diff_id.clone());
    let report = unpack(theirs.reader(&digest).expect("blob"), &dst, &options)
        .expect("unpack skopeo's zstd layer");
    assert_eq!(report.compression, Compression::Zstd);
    assert_eq!(report.digest, digest);
    assert_eq!(report.diff_id, gz.diff_id);
    assert_same_tree(&rootfs, &dst, false);
    assert_eq!(hardlink_groups(&rootfs), hardlink_groups(&dst));

    // A wrong diff ID is caught.
    let wrong = tempfile::tempdir().expect("tempdir");
    let err = unpack(
        theirs.reader(&digest).expect("blob"),
        wrong.path(),
        &UnpackOptions::default()
            .with_digest(digest.clone())
            .with_diff_id(gz.digest.clone()),
    )
    .expect_err("wrong diff ID");
    assert!(
        matches!(err, image_overlay::UnpackError::DiffIdMismatch { .. }),
        "{err}"
    );

    // The whole image flattened by us, digests from the manifest and config.
    let flat = work.path().join("flat");
    flatten_image(&theirs, &image, &flat, &UnpackOptions::default()).expect("flatten");
    assert_same_tree(&rootfs, &flat, false);
}
