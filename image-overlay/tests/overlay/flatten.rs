//! `flatten_image` reads each layer blob once and hashes it once: the
//! unpack checks the digest and size itself, so the store's verifying
//! reader (a second SHA-256 of every compressed byte, on the caller's
//! thread) is not used; a blob that is not what its descriptor says is
//! still refused with a typed error.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};

use image_core::{
    Classify, Compression, Descriptor, DescriptorExt, Digest, ErrorKind, MediaType, Platform,
};
use image_overlay::append::{append_dir, ConfigChanges};
use image_overlay::flatten::{flatten_image, FlattenError};
use image_overlay::image_unpack::{unpack_image, ImageUnpackOptions};
use image_overlay::snapshot::{CopySnapshotter, Kind, OverlaySnapshotter, Snapshotter};
use image_overlay::unpack::{UnpackError, UnpackOptions};
use image_store::image::{resolve_image, Image};
use image_store::mutate::NewLayer;
use image_store::{ContentError, Info, Ingester, OciDir, Provider};

use crate::common::{assert_same_tree, compress, make_tree, TarBuf};
use crate::umoci::{build_image, layer_from_tar};

/// A provider that counts the blobs read through each way in; the
/// unverified reads of the blob `hang` names, if any, hang at its gate
/// until the test opens it.
struct Counting<'a> {
    inner: &'a OciDir,
    verified: AtomicUsize,
    unverified: AtomicUsize,
    hang: Option<(Digest, std::sync::Arc<Gate>)>,
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
        let inner = self.inner.reader_for_unverified(descriptor)?;
        match &self.hang {
            Some((blob, gate)) if descriptor.digest().to_string() == blob.to_string() => {
                Ok(Box::new(GatedReader {
                    inner,
                    gate: std::sync::Arc::clone(gate),
                    waited: false,
                }))
            }
            _ => Ok(inner),
        }
    }
    fn verified_at_ingest(&self) -> bool {
        self.inner.verified_at_ingest()
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

/// Each layer is opened once, unverified (the unpack checks its diff ID),
/// and never through the verifying reader: before, every compressed byte
/// was hashed twice (a third of the CPU of a flatten).
#[test]
fn flatten_hashes_each_blob_once() {
    let work = tempfile::tempdir().expect("tempdir");
    let (store, base) = two_layer_image(work.path());
    let image = resolve_image(&store, "t/app:1", None).expect("resolve");
    let counting = Counting {
        inner: &store,
        verified: AtomicUsize::new(0),
        unverified: AtomicUsize::new(0),
        hang: None,
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
    image_testsupport::chain::assert_said_once(&e);
    assert_eq!(e.kind(), ErrorKind::DigestMismatch, "{e:?}");
}

/// The two-layer image in `work`, flattened onto `work/want`, and where
/// the store keeps its second layer's blob.
fn flattened_app(
    work: &std::path::Path,
) -> (OciDir, Image, std::path::PathBuf, std::path::PathBuf) {
    let (store, _) = two_layer_image(work);
    let image = resolve_image(&store, "t/app:1", None).expect("resolve");
    let want = work.join("want");
    flatten_image(&store, &image, &want, &UnpackOptions::default()).expect("flatten");
    let digest = image.layers()[1].checked_digest().expect("digest");
    let blob = work
        .join("layout/blobs")
        .join(digest.algorithm().as_str())
        .join(digest.hex());
    (store, image, want, blob)
}

/// A layer blob changed in the store after its ingest, one byte at a
/// time at every position, never unpacks to anything but the tree its
/// diff ID names: the flatten and the snapshot unpack (both drivers)
/// either refuse it with the digest-mismatch class (the unpack finds a
/// corrupt stream or another diff ID; the store's verifying reader then
/// names the blob as the cause; a changed magic number is a compression
/// mismatch), keeping no snapshot of it, or, where the
/// change decodes to the same tar (the gzip header's time field; a match
/// at another distance inside a run of one byte), unpack the same tree as
/// the blob before the change. A change to the trailer (CRC-32, size) is
/// always refused. Holds whether the unpack hashes the compressed bytes or
/// not.
#[test]
fn a_blob_changed_in_the_store_unpacks_nothing_else() {
    let work = tempfile::tempdir().expect("tempdir");
    let (store, image, want, path) = flattened_app(work.path());
    let good = std::fs::read(&path).expect("read blob");
    let n = good.len();
    let chains = image_core::chain_ids(image.diff_ids());
    // The class of the refusal of a change at `pos`: the magic number
    // changed is not gzip, as the media type says.
    let class = |pos: usize| {
        if pos < 2 {
            ErrorKind::InvalidInput
        } else {
            ErrorKind::DigestMismatch
        }
    };
    let mut refused = 0;
    for pos in 0..n {
        let mut bad = good.clone();
        bad[pos] ^= 0x55;
        std::fs::write(&path, &bad).expect("damage");
        let out = work.path().join("out");
        let flattened = match flatten_image(&store, &image, &out, &UnpackOptions::default()) {
            Ok(_) => {
                assert!(pos < n - 8, "byte {pos} of the trailer changed: flattened");
                assert_same_tree(&want, &out, false);
                true
            }
            Err(e) => {
                assert_eq!(e.kind(), class(pos), "byte {pos}: {e:?}");
                refused += 1;
                false
            }
        };
        std::fs::remove_dir_all(&out).expect("clean");
        // The snapshot unpack at a sample of the positions (it reads the
        // bytes the flatten read, with the same checks).
        if pos % 64 != 0 && pos < n - 8 {
            continue;
        }
        for driver in ["copy", "overlay"] {
            let dir = work.path().join(format!("{driver}-{pos}"));
            let sn: Box<dyn Snapshotter> = if driver == "overlay" {
                Box::new(OverlaySnapshotter::open(&dir).expect("open"))
            } else {
                Box::new(CopySnapshotter::open(&dir).expect("open"))
            };
            let unpacked = unpack_image(&store, &image, &sn, &ImageUnpackOptions::default());
            let kept: Vec<_> = sn
                .list()
                .expect("list")
                .into_iter()
                .map(|i| (i.name, i.kind))
                .collect();
            match unpacked {
                Ok(_) => assert!(flattened, "{driver}, byte {pos}: unpacked, not flattened"),
                Err(e) => {
                    assert!(
                        !flattened,
                        "{driver}, byte {pos}: flattened, not unpacked: {e}"
                    );
                    assert_eq!(e.kind(), class(pos), "{driver}, byte {pos}: {e}");
                    assert_eq!(
                        kept,
                        vec![(chains[0].to_string(), Kind::Committed)],
                        "{driver}, byte {pos}: only the layer below is kept"
                    );
                }
            }
            drop(sn);
            std::fs::remove_dir_all(&dir).expect("clean");
        }
    }
    std::fs::write(&path, &good).expect("restore");
    assert!(refused > n / 2, "{refused} of {n} changes refused");
}

/// A change to a stored blob that decompresses to the same tar (the time
/// field of the gzip header, bytes 4 to 7) flattens and unpacks the tree
/// its diff ID names: the compressed bytes of a blob the store checked at
/// ingest are not hashed again (the store's fsck finds such a change).
/// Before, every unpack hashed them, and this was a digest mismatch.
#[test]
fn a_stored_blob_is_not_hashed_again() {
    let work = tempfile::tempdir().expect("tempdir");
    let (store, image, want, path) = flattened_app(work.path());
    let mut bytes = std::fs::read(&path).expect("read blob");
    assert_eq!(&bytes[..3], &[0x1f, 0x8b, 8], "a gzip member");
    bytes[5] ^= 0x55;
    std::fs::write(&path, &bytes).expect("change the header's time");
    let got = work.path().join("got");
    let reports = flatten_image(&store, &image, &got, &UnpackOptions::default())
        .expect("the same tar flattens");
    assert_eq!(
        reports[1].digest,
        image.layers()[1].checked_digest().expect("digest")
    );
    assert_same_tree(&want, &got, false);
    let sn = CopySnapshotter::open(work.path().join("copy")).expect("open");
    unpack_image(&store, &image, &sn, &ImageUnpackOptions::default())
        .expect("the same tar unpacks");
}

/// A provider that returns a store's bytes but does not vouch for them
/// (as a registry source, analyze's `Remote`, does not): its
/// `verified_at_ingest` is the trait's default, false.
struct Unvouched<'a>(&'a OciDir);

impl Provider for Unvouched<'_> {
    fn reader(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, ContentError> {
        self.0.reader(digest)
    }
    fn try_info(&self, digest: &Digest) -> Result<Option<Info>, ContentError> {
        self.0.try_info(digest)
    }
    fn reader_for_unverified(
        &self,
        descriptor: &Descriptor,
    ) -> Result<Box<dyn Read + Send>, ContentError> {
        self.0.reader_for_unverified(descriptor)
    }
}

/// The change of `a_stored_blob_is_not_hashed_again` (the gzip header's
/// time field), read through a provider that is not verified at ingest:
/// its blob is hashed, so the flatten and the snapshot unpack refuse it as
/// a digest mismatch. Before, every provider's digest was taken as given,
/// and this flattened.
#[test]
fn a_blob_no_store_vouches_for_is_hashed() {
    let work = tempfile::tempdir().expect("tempdir");
    let (store, image, _, path) = flattened_app(work.path());
    assert!(store.verified_at_ingest() && Provider::verified_at_ingest(&&store));
    let source = Unvouched(&store);
    assert!(!source.verified_at_ingest());
    let mut bytes = std::fs::read(&path).expect("read blob");
    bytes[5] ^= 0x55;
    std::fs::write(&path, &bytes).expect("change the header's time");
    let e = flatten_image(
        &source,
        &image,
        &work.path().join("got"),
        &UnpackOptions::default(),
    )
    .expect_err("an unvouched changed blob flattened");
    image_testsupport::chain::assert_said_once(&e);
    assert_eq!(e.kind(), ErrorKind::DigestMismatch, "{e:?}");
    let sn = CopySnapshotter::open(work.path().join("copy")).expect("open");
    let e = unpack_image(&source, &image, &sn, &ImageUnpackOptions::default())
        .expect_err("an unvouched changed blob unpacked");
    image_testsupport::chain::assert_said_once(&e);
    assert_eq!(e.kind(), ErrorKind::DigestMismatch, "{e}");
}

// ---- layers decoded ahead of the one applied ----------------------------------

/// A layer of 2000 small files under `prefix`: applying it takes long
/// enough that the layers above it are decoded ahead meanwhile.
fn many_files(prefix: &str) -> Vec<u8> {
    let mut t = TarBuf::new();
    t.dir(prefix);
    for i in 0..2000 {
        t.file(&format!("{prefix}/f{i}"), format!("file {i}").as_bytes());
    }
    t.end()
}

/// `tar` gzipped with its stream cut in the middle, stored as a blob of
/// its own (its descriptor is the cut blob's: only the unpack finds it).
fn cut_layer(store: &OciDir, tar: &[u8]) -> NewLayer {
    let full = compress(tar, Compression::Gzip);
    let cut = &full[..full.len() / 2];
    NewLayer {
        media_type: MediaType::oci_layer(Compression::Gzip),
        digest: store.write_blob(cut).expect("write blob"),
        size: cut.len() as u64,
        diff_id: Digest::sha256(tar),
        history: Default::default(),
    }
}

/// The error of a flatten of `image` onto `out` that must fail.
fn flatten_fails(store: &OciDir, image: &Image, out: &std::path::Path) -> FlattenError {
    match flatten_image(store, image, out, &UnpackOptions::default()) {
        Ok(_) => panic!("{} flattened", image.name),
        Err(e) => e,
    }
}

/// The layers of a flatten are decoded ahead of the one applied, yet each
/// fails as itself and in its turn: a layer whose diff ID is wrong (found
/// once all of it is applied) is the error, naming its position, while
/// the layer above it, cut short, has failed ahead already; with that
/// layer sound, the cut layer above is the error, as itself, with the
/// layers below it applied. A blob missing from the store above a layer
/// that fails is found when it is opened, ahead, and reported in its turn
/// too.
#[test]
fn a_layer_fails_as_itself_before_the_layer_decoded_ahead() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(work.path().join("layout")).expect("layout");
    let base = layer_from_tar(&store, &many_files("base"), Compression::Gzip);
    let mid = layer_from_tar(&store, &many_files("mid"), Compression::Gzip);
    let mut wrong_mid = mid.clone();
    wrong_mid.diff_id = Digest::sha256(b"another tar");
    let cut = cut_layer(&store, &many_files("top"));
    let image = build_image(
        &store,
        &[base.clone(), wrong_mid.clone(), cut.clone()],
        "t/wrong:1",
    );
    let e = flatten_fails(&store, &image, &work.path().join("wrong"));
    match &e {
        FlattenError::Unpack {
            index: 1, source, ..
        } if matches!(**source, UnpackError::DiffIdMismatch { .. }) => {}
        other => panic!("not layer 1's diff ID: {other:?}"),
    }
    assert_eq!(e.kind(), ErrorKind::DigestMismatch);

    // The blob above it gone from the store: opened (and found missing)
    // before layer 1 is applied, and reported after it, in its turn.
    let gone = layer_from_tar(&store, &many_files("gone"), Compression::Gzip);
    let blob = store.root().join("blobs/sha256").join(gone.digest.hex());
    let image = build_image(&store, &[base.clone(), wrong_mid, gone], "t/gone:1");
    std::fs::remove_file(blob).expect("remove blob");
    match flatten_fails(&store, &image, &work.path().join("gone")) {
        FlattenError::Unpack {
            index: 1, source, ..
        } if matches!(*source, UnpackError::DiffIdMismatch { .. }) => {}
        other => panic!("not layer 1's diff ID: {other:?}"),
    }

    let image = build_image(&store, &[base, mid, cut], "t/cut:1");
    let out = work.path().join("cut");
    let e = flatten_fails(&store, &image, &out);
    match &e {
        FlattenError::Unpack {
            index: 2, source, ..
        } if matches!(**source, UnpackError::Truncated { .. }) => {}
        other => panic!("not layer 2's cut: {other:?}"),
    }
    for below in ["base/f1999", "mid/f1999"] {
        assert_eq!(
            std::fs::read(out.join(below)).expect("applied below"),
            b"file 1999"
        );
    }
}

/// A layer decoded ahead is applied only after the one below it, whole:
/// its whiteouts remove what that layer made (a file, the rest of an
/// opaque directory), its files replace that layer's, and a file the
/// layer above them whited out and made again is the later one.
#[test]
fn a_layer_decoded_ahead_applies_after_the_one_below() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(work.path().join("layout")).expect("layout");
    let mut t = TarBuf::new();
    t.dir("opaque")
        .file("opaque/x", b"x")
        .file("keep", b"first");
    let mut base = t.0;
    base.extend_from_slice(&many_files("base"));
    let mut t = TarBuf::new();
    t.file("base/.wh.f7", b"")
        .file("base/f8", b"replaced")
        .dir("opaque")
        .file("opaque/.wh..wh..opq", b"")
        .file("opaque/y", b"y")
        .file(".wh.keep", b"");
    let upper = t.end();
    let mut t = TarBuf::new();
    t.file("keep", b"again").file("base/f7", b"back");
    let top = t.end();
    let gzip = |tar: &[u8]| layer_from_tar(&store, tar, Compression::Gzip);
    let layers = [gzip(&base), gzip(&upper), gzip(&top)];
    let image = build_image(&store, &layers, "t/whiteouts:1");
    let out = work.path().join("out");
    flatten_image(&store, &image, &out, &UnpackOptions::default()).expect("flatten");
    let read = |p: &str| std::fs::read(out.join(p)).expect(p);
    assert_eq!(read("base/f7"), b"back");
    assert_eq!(read("base/f8"), b"replaced");
    assert_eq!(read("base/f9"), b"file 9");
    assert_eq!(read("keep"), b"again");
    let opaque: Vec<_> = std::fs::read_dir(out.join("opaque"))
        .expect("opaque")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(opaque, ["y"]);
}

/// A gate a test opens once: readers wait on it until then.
#[derive(Default)]
struct Gate {
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            open = self.opened.wait(open).unwrap_or_else(|p| p.into_inner());
        }
    }
    fn open(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.opened.notify_all();
    }
}

/// A blob reader whose first read waits at a gate (a network or FUSE
/// source that hangs), then reads the blob.
struct GatedReader {
    inner: Box<dyn Read + Send>,
    gate: std::sync::Arc<Gate>,
    waited: bool,
}

impl Read for GatedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.waited {
            self.waited = true;
            self.gate.wait();
        }
        self.inner.read(buf)
    }
}

/// A layer that fails returns its error while the source of the layer
/// above it, read ahead, hangs in a read: the flatten does not wait for a
/// read that may never return (a registry that stalls, a FUSE mount).
/// Before, dropping the layers ahead joined their thread, blocked in that
/// read, and the flatten returned only once the read did.
#[test]
fn a_failing_layer_does_not_wait_for_the_next_layers_hanging_read() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(work.path().join("layout")).expect("layout");
    let mut wrong = layer_from_tar(&store, &many_files("base"), Compression::Gzip);
    wrong.diff_id = Digest::sha256(b"another tar");
    let above = layer_from_tar(&store, &many_files("above"), Compression::Gzip);
    let image = build_image(&store, &[wrong, above.clone()], "t/hang:1");
    let gate = std::sync::Arc::new(Gate::default());
    let hanging = Counting {
        inner: &store,
        verified: AtomicUsize::new(0),
        unverified: AtomicUsize::new(0),
        hang: Some((above.digest.clone(), std::sync::Arc::clone(&gate))),
    };
    let out = work.path().join("out");
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let got = flatten_image(&hanging, &image, &out, &UnpackOptions::default());
            let _ = done.send(got.map(|_| ()));
        });
        // A bound on a hang, not a timing assertion.
        let got = finished.recv_timeout(std::time::Duration::from_secs(60));
        // Let the read return, whatever happened, so the thread ends.
        gate.open();
        let e = match got {
            Ok(Err(e)) => e,
            Ok(Ok(())) => panic!("a layer with a wrong diff ID flattened"),
            Err(_) => panic!("the flatten waited for the hanging read of the layer above"),
        };
        match &e {
            FlattenError::Unpack {
                index: 0, source, ..
            } if matches!(**source, UnpackError::DiffIdMismatch { .. }) => {}
            other => panic!("not layer 0's diff ID: {other:?}"),
        }
    });
}
