//! `flatten_image` reads each layer blob once and hashes it once: the
//! unpack checks the digest and size itself, so the store's verifying
//! reader (a second SHA-256 of every compressed byte, on the caller's
//! thread) is not used; a blob that is not what its descriptor says is
//! still refused with a typed error.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};

use image_core::{Classify, Descriptor, DescriptorExt, Digest, ErrorKind, Platform};
use image_overlay::append::{append_dir, ConfigChanges};
use image_overlay::flatten::flatten_image;
use image_overlay::unpack::UnpackOptions;
use image_store::image::resolve_image;
use image_store::{ContentError, Info, OciDir, Provider};

use crate::common::{assert_same_tree, make_tree};

/// A provider that counts the blobs read through each way in.
struct Counting<'a> {
    inner: &'a OciDir,
    verified: AtomicUsize,
    unverified: AtomicUsize,
}

impl Provider for Counting<'_> {
    fn reader(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, ContentError> {
        self.verified.fetch_add(1, Ordering::SeqCst);
        self.inner.reader(digest)
    }
    fn try_info(&self, digest: &Digest) -> Result<Option<Info>, ContentError> {
        self.inner.try_info(digest)
    }
    fn reader_for_unverified(
        &self,
        descriptor: &Descriptor,
    ) -> Result<Box<dyn Read + Send>, ContentError> {
        self.unverified.fetch_add(1, Ordering::SeqCst);
        self.inner.reader_for_unverified(descriptor)
    }
}

fn two_layer_image(work: &std::path::Path) -> (OciDir, std::path::PathBuf) {
    let store = OciDir::open_or_create(work.join("layout")).expect("layout");
    let base = work.join("base");
    make_tree(&base);
    let added = work.join("added");
    std::fs::create_dir_all(added.join("opt")).expect("mkdir");
    std::fs::write(added.join("opt/added"), vec![7u8; 300_000]).expect("write");
    let platform: Platform = "linux/amd64".parse().expect("platform");
    let changes = ConfigChanges::default();
    append_dir(&store, None, &base, &platform, &changes, "t/base:1").expect("base");
    append_dir(
        &store,
        Some("t/base:1"),
        &added,
        &platform,
        &changes,
        "t/app:1",
    )
    .expect("app");
    (store, base)
}

/// Each layer is opened once, unverified (the unpack hashes it), and
/// never through the verifying reader: before, every compressed byte was
/// hashed twice (a third of the CPU of a flatten).
#[test]
fn flatten_hashes_each_blob_once() {
    let work = tempfile::tempdir().expect("tempdir");
    let (store, base) = two_layer_image(work.path());
    let image = resolve_image(&store, "t/app:1", None).expect("resolve");
    let counting = Counting {
        inner: &store,
        verified: AtomicUsize::new(0),
        unverified: AtomicUsize::new(0),
    };
    let out = work.path().join("out");
    flatten_image(&counting, &image, &out, &UnpackOptions::default()).expect("flatten");
    assert_eq!(counting.verified.load(Ordering::SeqCst), 0);
    assert_eq!(counting.unverified.load(Ordering::SeqCst), 2);
    assert_eq!(
        std::fs::read(out.join("opt/added")).expect("read").len(),
        300_000
    );
    std::fs::remove_dir_all(out.join("opt")).expect("rm");
    assert_same_tree(&base, &out, false);
}

/// A layer blob changed on disk (same size, one byte flipped) fails the
/// flatten with the digest-mismatch class, read unverified or not.
#[test]
fn flatten_refuses_a_changed_blob() {
    let work = tempfile::tempdir().expect("tempdir");
    let (store, _) = two_layer_image(work.path());
    let image = resolve_image(&store, "t/app:1", None).expect("resolve");
    let layer = &image.layers()[1];
    let digest = layer.checked_digest().expect("digest");
    let path = work
        .path()
        .join("layout/blobs")
        .join(digest.algorithm().as_str())
        .join(digest.hex());
    let mut bytes = std::fs::read(&path).expect("read blob");
    // A byte in the middle of the deflate stream: the gzip CRC or the
    // digest, whichever is checked first, catches it.
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, &bytes).expect("write blob");
    let e = flatten_image(
        &store,
        &image,
        &work.path().join("out"),
        &UnpackOptions::default(),
    )
    .expect_err("a changed blob flattens");
    assert_eq!(e.kind(), ErrorKind::DigestMismatch, "{e:?}");
}
