//! Hostile archives against `load`: generators (no checked-in files) for a
//! DAG of indexes; each test proves boundedness by counting what
//! load opens, or by where it stops, never by timing.
//!
//! `write_bench_archives` (ignored) writes the same archives at the sizes
//! of issue 18 into `$HOSTILE_OUT`, for measuring `imagectl load`.

mod archive_fixtures;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Mutex;

use archive_fixtures::*;
use image_core::{Algorithm, Classify, Descriptor, Digest, ErrorKind};
use image_store::archive::{load, ArchiveError, LoadOptions};
use image_store::content::{ContentWriter, Info, IngestStatus, Result as ContentResult};
use image_store::tags::Tagged;
use image_store::{Ingester, MemoryStore, Provider, TagError, TagStore};
use serde_json::json;

/// A real [`MemoryStore`] that counts how often each blob is opened for
/// reading (`reader` and `read_blob_to_vec`), to prove each is read a
/// bounded number of times whatever the number of references to it.
#[derive(Default)]
struct Counting {
    inner: MemoryStore,
    opens: Mutex<HashMap<Digest, usize>>,
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
        self.inner.writer_with(reference, algorithm)
    }
    fn abort(&self, reference: &str) -> ContentResult<()> {
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
    let mut docs = vec![Digest::sha256(&manifest)];
    let mut child = (MANIFEST, Digest::sha256(&manifest), manifest.len());
    blobs.push((blob_path(&child.1), manifest));
    for _ in 0..levels {
        let entry = json!({"mediaType": child.0, "digest": child.1.to_string(), "size": child.2});
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": INDEX,
            "manifests": vec![entry; fanout],
        }))
        .expect("json");
        let d = Digest::sha256(&index);
        docs.push(d.clone());
        child = (INDEX, d.clone(), index.len());
        blobs.push((blob_path(&d), index));
    }
    let index_json = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [{
        "mediaType": child.0, "digest": child.1.to_string(), "size": child.2,
        "annotations": {"org.opencontainers.image.ref.name": "bomb:1"}}]}))
    .expect("json");
    let mut files: Vec<(&str, &[u8])> = vec![("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)];
    files.extend(blobs.iter().map(|(p, b)| (p.as_str(), b.as_slice())));
    files.push(("index.json", &index_json));
    (archive_of(&files), docs)
}

// --------------------------------------------------------------------- tests

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

/// #6: the walk is bounded in depth, with a typed error.
#[test]
fn a_chain_of_indexes_deeper_than_the_limit_is_refused() {
    let (tarball, _) = dag_bomb(100, 1);
    let store = Counting::default();
    let err = load(&store, &tarball[..], &LoadOptions::default()).expect_err("too deep");
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
}
