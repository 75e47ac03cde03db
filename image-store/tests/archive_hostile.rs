//! Hostile archives against `load`: generators (no checked-in files) for a
//! DAG of indexes, a manifest.json naming one layer many times, a zstd bomb,
//! and compressed archives; each test proves boundedness by counting what
//! load opens, or by where it stops, never by timing.
//!
//! `write_bench_archives` (ignored) writes the same archives at the sizes
//! of issue 18 into `$HOSTILE_OUT`, for measuring `imagectl load`.

mod archive_fixtures;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use archive_fixtures::*;
use image_core::{Algorithm, Classify, Compression, Descriptor, Digest, ErrorKind};
use image_store::archive::{load, ArchiveError, LoadOptions};
use image_store::content::{ContentWriter, Info, IngestStatus, Result as ContentResult};
use image_store::tags::Tagged;
use image_store::{
    Ingester, LeaseError, LeaseGuard, Leases, MemoryStore, Provider, TagError, TagStore,
};
use serde_json::json;

/// A real [`MemoryStore`] that counts how often each blob is opened for
/// reading (`reader` and `read_blob_to_vec`), to prove each is read a
/// bounded number of times whatever the number of references to it.
#[derive(Default)]
struct Counting {
    inner: MemoryStore,
    opens: Mutex<HashMap<Digest, usize>>,
    /// Ingest writers opened, and ingests aborted: those not aborted
    /// were committed (the load aborts or commits each writer).
    writers: AtomicUsize,
    aborts: AtomicUsize,
}

impl Counting {
    fn count(&self, digest: &Digest) {
        *self
            .opens
            .lock()
            .expect("lock")
            .entry(digest.clone())
            .or_default() += 1;
    }

    fn opens(&self, digest: &Digest) -> usize {
        self.opens
            .lock()
            .expect("lock")
            .get(digest)
            .copied()
            .unwrap_or(0)
    }

    fn total_opens(&self) -> usize {
        self.opens.lock().expect("lock").values().sum()
    }

    fn writers(&self) -> usize {
        self.writers.load(Ordering::Relaxed)
    }

    /// Ingests committed: writers opened and not aborted.
    fn commits(&self) -> usize {
        self.writers.load(Ordering::Relaxed) - self.aborts.load(Ordering::Relaxed)
    }
}

impl Provider for Counting {
    fn reader(&self, digest: &Digest) -> ContentResult<Box<dyn Read + Send>> {
        self.count(digest);
        self.inner.reader(digest)
    }
    fn try_info(&self, digest: &Digest) -> ContentResult<Option<Info>> {
        self.inner.try_info(digest)
    }
    fn read_blob_to_vec(&self, digest: &Digest, limit: u64) -> ContentResult<Vec<u8>> {
        self.count(digest);
        self.inner.read_blob_to_vec(digest, limit)
    }
}

impl Ingester for Counting {
    fn writer_with(
        &self,
        reference: &str,
        algorithm: Algorithm,
    ) -> ContentResult<Box<dyn ContentWriter>> {
        self.writers.fetch_add(1, Ordering::Relaxed);
        self.inner.writer_with(reference, algorithm)
    }
    fn abort(&self, reference: &str) -> ContentResult<()> {
        self.aborts.fetch_add(1, Ordering::Relaxed);
        self.inner.abort(reference)
    }
    fn ingests(&self) -> ContentResult<Vec<IngestStatus>> {
        self.inner.ingests()
    }
}

impl TagStore for Counting {
    fn tags(&self) -> Result<Vec<Tagged>, TagError> {
        self.inner.tags()
    }
    fn set_tag(&self, name: &str, descriptor: &Descriptor) -> Result<(), TagError> {
        self.inner.set_tag(name, descriptor)
    }
    fn remove_tag(&self, name: &str) -> Result<bool, TagError> {
        self.inner.remove_tag(name)
    }
}

impl Leases for Counting {
    fn begin_lease(&self) -> Result<LeaseGuard, LeaseError> {
        self.inner.begin_lease()
    }
    fn leased_digests(&self) -> Result<std::collections::BTreeSet<Digest>, LeaseError> {
        self.inner.leased_digests()
    }
}

// ---------------------------------------------------------------- generators

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// An OCI archive whose `index.json` names the top of a chain of `levels`
/// indexes, each listing the next one `fanout` times; the last lists one
/// image manifest. Without a visited set a walk visits `fanout^levels`
/// paths. Returns the archive and the digests of every document in it.
fn dag_bomb(levels: usize, fanout: usize) -> (Vec<u8>, Vec<Digest>) {
    let mut children = vec![Vec::new()];
    children.extend((0..levels).map(|i| vec![i; fanout]));
    index_graph(&children, &[levels])
}

/// An OCI archive of a graph of documents: node 0 is an image manifest,
/// node `i > 0` an index listing the nodes `children[i]` (all below `i`,
/// repeats allowed); `index.json` lists the nodes `roots`, the first one
/// tagged `bomb:1`. Returns the archive and the digests of the nodes.
fn index_graph(children: &[Vec<usize>], roots: &[usize]) -> (Vec<u8>, Vec<Digest>) {
    let layer = file_layer("etc/x", b"x\n");
    let config = config_for(std::slice::from_ref(&layer), "amd64");
    let layer_d = Digest::sha256(&layer);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config.digest().to_string(), "size": config.raw().len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_d.to_string(), "size": layer.len()}],
    }))
    .expect("json");
    let mut blobs: Vec<(String, Vec<u8>)> = vec![
        (blob_path(&layer_d), layer.clone()),
        (blob_path(config.digest()), config.raw().to_vec()),
    ];
    // (media type, digest, size) of each node.
    let mut nodes = vec![(MANIFEST, Digest::sha256(&manifest), manifest.len())];
    blobs.push((blob_path(&nodes[0].1), manifest));
    let entry = |n: &(&str, Digest, usize)| json!({"mediaType": n.0, "digest": n.1.to_string(), "size": n.2});
    for list in &children[1..] {
        let manifests: Vec<_> = list.iter().map(|c| entry(&nodes[*c])).collect();
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": INDEX, "manifests": manifests,
        }))
        .expect("json");
        let d = Digest::sha256(&index);
        nodes.push((INDEX, d.clone(), index.len()));
        blobs.push((blob_path(&d), index));
    }
    let mut top: Vec<_> = roots.iter().map(|r| entry(&nodes[*r])).collect();
    top[0]["annotations"] = json!({"org.opencontainers.image.ref.name": "bomb:1"});
    let index_json =
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": top})).expect("json");
    let mut files: Vec<(&str, &[u8])> = vec![("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)];
    files.extend(blobs.iter().map(|(p, b)| (p.as_str(), b.as_slice())));
    files.push(("index.json", &index_json));
    (archive_of(&files), nodes.into_iter().map(|n| n.1).collect())
}

/// A small deterministic generator (xorshift64*) for the generated tests.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

/// A docker-save archive whose `manifest.json` has `entries` entries, all
/// naming the same config and the same compressed `layer` (whose diff ID
/// is `diff_id`).
fn amplified_docker(entries: usize, layer: &[u8], diff_id: &Digest) -> Vec<u8> {
    let config = config_with_diff_ids(std::slice::from_ref(diff_id));
    let cfg = format!("{}.json", config.digest().hex());
    let entry = json!({"Config": cfg, "RepoTags": null, "Layers": ["l/layer.tar"]});
    let mj = serde_json::to_vec(&vec![entry; entries]).expect("json");
    archive_of(&[
        ("l/layer.tar", layer),
        (&cfg, config.raw()),
        ("manifest.json", &mj),
    ])
}

/// A docker-save archive as a naive writer makes it: each of its
/// `images` carries its config entry again (named `names[i]`, holding
/// `configs[i]`), then comes the one `layer` every config's image names.
fn config_per_image(names: &[String], configs: &[&[u8]], images: &[&str], layer: &[u8]) -> Vec<u8> {
    let manifest: Vec<_> = images
        .iter()
        .map(|cfg| json!({"Config": cfg, "RepoTags": null, "Layers": ["l/layer.tar"]}))
        .collect();
    let mj = serde_json::to_vec(&manifest).expect("json");
    let mut files: Vec<(&str, &[u8])> = names
        .iter()
        .map(String::as_str)
        .zip(configs.iter().copied())
        .collect();
    files.push(("l/layer.tar", layer));
    files.push(("manifest.json", &mj));
    archive_of(&files)
}

/// A config declaring these diff IDs.
fn config_with_diff_ids(diff_ids: &[Digest]) -> image_core::ImageConfig {
    let ids: Vec<String> = diff_ids.iter().map(ToString::to_string).collect();
    let v = json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": ids},
    });
    image_core::ImageConfig::from_bytes(image_core::json::to_canonical_vec(&v).expect("json"))
        .expect("config")
}

/// A zstd frame of `len` zero bytes written as RLE blocks (4 bytes per
/// 128 KiB, so 100 GiB fit in 3.3 MB). With `corrupt_tail` the frame goes
/// on with a block of the reserved type, which a decoder only reports once
/// it has expanded everything before it.
fn zstd_zeros(len: u64, corrupt_tail: bool) -> Vec<u8> {
    const BLOCK: u64 = 128 * 1024;
    // Magic, frame header (no content size, no checksum), window 128 KiB.
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38];
    let mut left = len;
    while left > 0 {
        let n = left.min(BLOCK);
        left -= n;
        let last = u32::from(left == 0 && !corrupt_tail);
        let header = (u32::try_from(n).expect("block") << 3) | (1 << 1) | last;
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.push(0);
    }
    if corrupt_tail {
        let header: u32 = (3 << 1) | 1;
        out.extend_from_slice(&header.to_le_bytes()[..3]);
    }
    out
}

/// A gzip stream of `len` zero bytes, and the sha256 of those bytes.
fn gzip_zeros(len: usize) -> (Vec<u8>, Digest) {
    let zeros = vec![0u8; len];
    (compress(&zeros, Compression::Gzip), Digest::sha256(&zeros))
}

// --------------------------------------------------------------------- tests

#[test]
fn the_zstd_generator_writes_what_zstd_reads() {
    let frame = zstd_zeros(300 * 1024 + 5, false);
    let plain = zstd::decode_all(&frame[..]).expect("valid zstd");
    assert_eq!(plain.len(), 300 * 1024 + 5);
    assert!(plain.iter().all(|b| *b == 0));
    assert!(zstd::decode_all(&zstd_zeros(1024, true)[..]).is_err());
}

/// #6: 18 levels of indexes each listing the next twice: 262,144 paths,
/// 19 documents. Each document must be read a bounded number of times
/// (the check, then the tag's closure check), not once per path.
#[test]
fn a_dag_of_indexes_is_walked_once_per_document() {
    let (tarball, docs) = dag_bomb(18, 2);
    let store = Counting::default();
    let report = load(&store, &tarball[..], &LoadOptions::default()).expect("load");
    assert_eq!(report.images[0].tags, ["docker.io/library/bomb:1"]);
    for d in &docs {
        assert!(
            store.opens(d) <= 3,
            "document {d} opened {} times",
            store.opens(d)
        );
    }
    assert!(store.total_opens() <= 3 * (docs.len() + 2));
}

/// #6, generated: random graphs of indexes sharing children (repeats
/// included) and several `index.json` entries naming shared nodes: every
/// document is read a bounded number of times, and the graph loads.
#[test]
fn random_index_graphs_read_each_document_a_bounded_number_of_times() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..40 {
        let n = 2 + rng.below(24);
        let mut children = vec![Vec::new()];
        for i in 1..n {
            let k = 1 + rng.below(6);
            children.push((0..k).map(|_| rng.below(i)).collect());
        }
        let roots: Vec<usize> = (0..1 + rng.below(5)).map(|_| rng.below(n)).collect();
        let (tarball, docs) = index_graph(&children, &roots);
        let store = Counting::default();
        let report = load(&store, &tarball[..], &LoadOptions::default())
            .unwrap_or_else(|e| panic!("case {case}: {e}"));
        assert_eq!(report.images[0].tags, ["docker.io/library/bomb:1"]);
        for d in &docs {
            assert!(
                store.opens(d) <= 3,
                "case {case}: {d} opened {} times",
                store.opens(d)
            );
        }
    }
}

/// #6: the walk is bounded in depth, with a typed error.
#[test]
fn a_chain_of_indexes_deeper_than_the_limit_is_refused() {
    let (tarball, _) = dag_bomb(100, 1);
    let store = Counting::default();
    let err = load(&store, &tarball[..], &LoadOptions::default()).expect_err("too deep");
    image_testsupport::chain::assert_said_once(&err);
    assert!(
        matches!(err, ArchiveError::TooDeep { limit: 32, .. }),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(store.tags().expect("tags").is_empty());
    // A chain within the limit loads.
    let (tarball, _) = dag_bomb(30, 1);
    load(&Counting::default(), &tarball[..], &LoadOptions::default()).expect("30 levels load");
}

/// #8: 2,000 manifest entries naming the same layer: its diff ID is
/// computed once (one open of the layer blob), the config read once.
#[test]
fn a_layer_named_by_many_entries_is_verified_once() {
    let (layer, diff_id) = gzip_zeros(1 << 20);
    let tarball = amplified_docker(2000, &layer, &diff_id);
    let store = Counting::default();
    let report = load(&store, &tarball[..], &LoadOptions::default()).expect("load");
    assert_eq!(report.images.len(), 2000);
    let layer_d = Digest::sha256(&layer);
    assert_eq!(store.opens(&layer_d), 1, "the layer is decompressed once");
    let config = config_with_diff_ids(&[diff_id]);
    assert_eq!(store.opens(config.digest()), 1, "the config is read once");
    assert!(store.total_opens() <= 3);
}

/// A config entry repeated once per image in the stream is committed
/// once: one commit per distinct blob (layer, config, manifest), not one
/// per entry (each was a commit with three fsyncs into `OciDir`).
#[test]
fn a_config_repeated_per_image_is_committed_once() {
    let (layer, diff_id) = gzip_zeros(4096);
    let config = config_with_diff_ids(std::slice::from_ref(&diff_id));
    let name = format!("{}.json", config.digest().hex());
    for n in [1, 2, 2000] {
        let tarball = config_per_image(
            &vec![name.clone(); n],
            &vec![config.raw(); n],
            &vec![name.as_str(); n],
            &layer,
        );
        let store = Counting::default();
        let report = load(&store, &tarball[..], &LoadOptions::default()).expect("load");
        assert_eq!(report.images.len(), n);
        assert_eq!(report.blobs, n + 1, "every entry is counted as streamed");
        assert_eq!(store.commits(), 3, "{n} copies: layer, config, manifest");
        assert_eq!(
            store.writers(),
            3,
            "{n} copies: a repeated config opens no ingest"
        );
        assert!(store.exists(config.digest()).expect("exists"));
    }
}

/// Generated streams of config entries, names and contents drawn from
/// small pools (so both repeat, and a name is reused for other bytes):
/// each distinct content is committed once, and every image gets the
/// content its config's name held last in the stream, as before; with
/// configs named `.json` (read whole first) and otherwise (streamed into
/// an ingest, a repeat aborted).
#[test]
fn generated_repeated_entries_commit_each_content_once_and_keep_the_last_name() {
    let (layer, diff_id) = gzip_zeros(512);
    let pool: Vec<image_core::ImageConfig> = (0..4)
        .map(|i| {
            let v = json!({
                "architecture": "amd64", "os": "linux",
                "config": {"Labels": {"n": i.to_string()}},
                "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
            });
            image_core::ImageConfig::from_bytes(
                image_core::json::to_canonical_vec(&v).expect("json"),
            )
            .expect("config")
        })
        .collect();
    let mut rng = Rng(0x5eed_f1a7);
    for (case, suffix) in (0..100).map(|c| (c, if c % 2 == 0 { "json" } else { "cfg" })) {
        let entries = 1 + rng.below(40);
        let mut names = Vec::new();
        let mut configs: Vec<&[u8]> = Vec::new();
        let mut last: HashMap<String, Digest> = HashMap::new();
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..entries {
            let name = format!("c{}.{suffix}", rng.below(3));
            let config = &pool[rng.below(pool.len())];
            last.insert(name.clone(), config.digest().clone());
            distinct.insert(config.digest().clone());
            names.push(name);
            configs.push(config.raw());
        }
        let named: Vec<&str> = (0..1 + rng.below(10))
            .map(|_| names[rng.below(names.len())].as_str())
            .collect();
        let tarball = config_per_image(&names, &configs, &named, &layer);
        let store = Counting::default();
        let report = load(&store, &tarball[..], &LoadOptions::default())
            .unwrap_or_else(|e| panic!("case {case}: {e:?}"));
        let got: Vec<Digest> = report
            .images
            .iter()
            .map(|i| i.config.clone().expect("config"))
            .collect();
        let want: Vec<Digest> = named.iter().map(|n| last[*n].clone()).collect();
        assert_eq!(
            got, want,
            "case {case}: each image has its name's last config"
        );
        let manifests: std::collections::HashSet<_> = want.iter().collect();
        assert_eq!(
            store.commits(),
            distinct.len() + 1 + manifests.len(),
            "case {case}: one commit per distinct config, the layer and each manifest"
        );
    }
}

/// #8: a mismatching layer named many times still fails, on its first use.
#[test]
fn a_shared_layer_that_does_not_match_fails_once() {
    let (layer, _) = gzip_zeros(4096);
    let wrong = Digest::sha256(b"not the layer");
    let tarball = amplified_docker(50, &layer, &wrong);
    let store = Counting::default();
    let err = load(&store, &tarball[..], &LoadOptions::default()).expect_err("mismatch");
    image_testsupport::chain::assert_said_once(&err);
    assert!(matches!(err, ArchiveError::LayerMismatch { .. }), "{err:?}");
    assert_eq!(store.opens(&Digest::sha256(&layer)), 1);
}

/// #11: a zstd layer that expands past the limit fails with a typed error,
/// and the decoder stops there: the layer's corrupt tail, which a full
/// decompression would reach and report, is never read.
#[test]
fn a_zstd_bomb_stops_at_the_expanded_size_limit() {
    let bomb = zstd_zeros(256 << 20, true);
    let tarball = amplified_docker(1, &bomb, &Digest::sha256(b"whatever"));
    let store = Counting::default();
    let options = LoadOptions::default().max_expanded_bytes(4 << 20);
    let err = load(&store, &tarball[..], &options).expect_err("bomb");
    image_testsupport::chain::assert_said_once(&err);
    match &err {
        ArchiveError::LayerTooLarge { digest, limit } => {
            assert_eq!(*limit, 4 << 20);
            assert_eq!(*digest, Digest::sha256(&bomb));
        }
        other => panic!("expected LayerTooLarge, got {other:?}"),
    }
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(store.tags().expect("tags").is_empty());
}

/// #11: the default limit is unpack's (64 GiB), and a layer exactly at
/// the limit is accepted.
#[test]
fn the_expanded_size_limit_is_inclusive_and_defaults_to_unpacks() {
    assert_eq!(LoadOptions::default().max_expanded_bytes, 64 << 30);
    let layer = zstd_zeros(1 << 20, false);
    let diff_id = Digest::sha256(&vec![0u8; 1 << 20]);
    let tarball = amplified_docker(1, &layer, &diff_id);
    let options = LoadOptions::default().max_expanded_bytes(1 << 20);
    load(&MemoryStore::new(), &tarball[..], &options).expect("at the limit");
    let options = LoadOptions::default().max_expanded_bytes((1 << 20) - 1);
    let err = load(&MemoryStore::new(), &tarball[..], &options).expect_err("one byte over");
    image_testsupport::chain::assert_said_once(&err);
    assert!(matches!(err, ArchiveError::LayerTooLarge { .. }), "{err:?}");
}

/// #11: an uncompressed layer over the limit is refused too (unpack would).
#[test]
fn an_uncompressed_layer_over_the_limit_is_refused() {
    let layer = file_layer("etc/data", &[7u8; 5000]);
    let tarball = amplified_docker(1, &layer, &Digest::sha256(&layer));
    let limit = layer.len() as u64 - 1;
    let options = LoadOptions::default().max_expanded_bytes(limit);
    let err = load(&MemoryStore::new(), &tarball[..], &options).expect_err("over");
    image_testsupport::chain::assert_said_once(&err);
    assert!(
        matches!(err, ArchiveError::LayerTooLarge { limit: l, .. } if l == limit),
        "{err:?}"
    );
    let options = LoadOptions::default().max_expanded_bytes(limit + 1);
    load(&MemoryStore::new(), &tarball[..], &options).expect("at the limit");
}

/// Smaller point: gzip- and zstd-compressed archives load as plain ones
/// (docker load accepts them), sniffed by their magic.
#[test]
fn compressed_archives_load() {
    let (layer, diff_id) = gzip_zeros(10_000);
    let tarball = amplified_docker(1, &layer, &diff_id);
    for c in [Compression::Gzip, Compression::Zstd] {
        let packed = compress(&tarball, c);
        let report = load(&MemoryStore::new(), &packed[..], &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{c:?}: {e}"));
        assert_eq!(report.images.len(), 1);
    }
}

/// A truncated compressed archive is a typed truncation, not a tar error.
#[test]
fn truncated_compressed_archives_are_truncated() {
    let (layer, diff_id) = gzip_zeros(10_000);
    let tarball = amplified_docker(1, &layer, &diff_id);
    for c in [Compression::Gzip, Compression::Zstd] {
        let packed = compress(&tarball, c);
        for cut in [packed.len() / 3, packed.len() - 9] {
            let store = MemoryStore::new();
            let err = load(&store, &packed[..cut], &LoadOptions::default()).expect_err("truncated");
            image_testsupport::chain::assert_said_once(&err);
            assert!(
                matches!(err, ArchiveError::Truncated { .. }),
                "{c:?} cut at {cut}: {err:?}"
            );
            assert!(store.tags().expect("tags").is_empty());
        }
    }
}

/// The compressed stream is read to its end: a gzip archive whose
/// checksum does not match is refused, though its tar is complete.
#[test]
fn a_gzip_archive_with_a_bad_checksum_is_refused() {
    let (layer, diff_id) = gzip_zeros(10_000);
    let mut packed = compress(&amplified_docker(1, &layer, &diff_id), Compression::Gzip);
    let crc = packed.len() - 8;
    packed[crc] ^= 0xff;
    let store = MemoryStore::new();
    let err = load(&store, &packed[..], &LoadOptions::default()).expect_err("bad crc");
    image_testsupport::chain::assert_said_once(&err);
    assert!(matches!(err, ArchiveError::Tar { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(store.tags().expect("tags").is_empty());
}

/// Formats load does not decode are named, with what to do.
#[test]
fn xz_and_bzip2_archives_are_named() {
    for (head, name) in [
        (&[0xfd, b'7', b'z', b'X', b'Z', 0x00][..], "xz"),
        (&b"BZh91AY&SY"[..], "bzip2"),
    ] {
        let mut data = head.to_vec();
        data.extend_from_slice(&[0u8; 600]);
        let err = load(&MemoryStore::new(), &data[..], &LoadOptions::default()).expect_err(name);
        image_testsupport::chain::assert_said_once(&err);
        assert!(
            matches!(&err, ArchiveError::CompressedArchive { compression } if *compression == name),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("compressed archive ({name}): decompress it first")
        );
        assert_eq!(err.kind(), ErrorKind::Unsupported);
    }
}

/// Writes the hostile archives of issue 18 at full size into
/// `$HOSTILE_OUT` (for measuring `imagectl load`).
#[test]
#[ignore = "writes large files; run by hand for measurements"]
fn write_bench_archives() {
    let Ok(out) = std::env::var("HOSTILE_OUT") else {
        panic!("set HOSTILE_OUT to a directory");
    };
    let out = std::path::Path::new(&out);
    let write = |name: &str, data: &[u8]| {
        let mut f = std::fs::File::create(out.join(name)).expect("create");
        f.write_all(data).expect("write");
    };
    // #6: 40 indexes each listing the next twice.
    write("dag-40x2.tar", &dag_bomb(40, 2).0);
    // The same within the depth limit, which loads.
    write("dag-30x2.tar", &dag_bomb(30, 2).0);
    // Small enough for the exponential walk to finish (2^20 paths).
    write("dag-20x2.tar", &dag_bomb(20, 2).0);
    // #8: 10,000 entries naming one layer (zstd, so its diff ID is known
    // without hashing it here: `HOSTILE_LAYER_MIB` MiB of zeros).
    let mib: u64 = std::env::var("HOSTILE_LAYER_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let layer = zstd_zeros(mib << 20, false);
    let diff_id: Digest = std::env::var("HOSTILE_LAYER_DIFF_ID")
        .expect("HOSTILE_LAYER_DIFF_ID: sha256 of the zeros (head -c N /dev/zero | sha256sum)")
        .parse()
        .expect("digest");
    let entries: usize = std::env::var("HOSTILE_ENTRIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    write(
        "amplified.tar",
        &amplified_docker(entries, &layer, &diff_id),
    );
    // #11: 100 GiB of zeros in a 3.3 MB zstd layer.
    write(
        "zstd-bomb.tar",
        &amplified_docker(1, &zstd_zeros(100 << 30, false), &Digest::sha256(b"x")),
    );
}
