//! The build cache: keys, records in a store (record, flush, reopen,
//! lookup), leases and gc, prune, concurrent builders, hostile records, and
//! the snapshots of cached layers on both snapshot drivers.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use image_build::cache::{
    chain_name, ensure_snapshots, ensure_snapshots_with, is_cache_reference, prune, Cache,
    CacheError, CacheKey, CachedLayer, CACHE_CONFIG_MEDIA_TYPE, CACHE_REPOSITORY,
    MAX_NOTE_CREATED_BY, RECORD_ANNOTATION,
};
use image_build::Layer;
use image_core::manifest::descriptor;
use image_core::{
    Classify, Descriptor, DescriptorExt, Digest, ErrorKind, Manifest, MediaType, Platform,
};
use image_overlay::image_unpack::ImageUnpackOptions;
use image_overlay::snapshot::{CopySnapshotter, Kind, OverlaySnapshotter, Snapshotter};
use image_store::fs::{Op, Target};
use image_store::{GcOptions, Ingester, Leases, Manager, OciDir, Provider, TagStore};
use image_testsupport::codec::gzip;
use image_testsupport::store::oci_dir;
use image_testsupport::tar::{archive, Entry};

mod recording;
use recording::{CountingReads, Recording};

fn amd64() -> Platform {
    Platform::new("linux", "amd64")
}

fn d(s: &str) -> Digest {
    Digest::sha256(s.as_bytes())
}

/// A gzip layer holding `files`, written to `store`.
fn layer<S: Ingester + ?Sized>(store: &S, files: &[(&str, &str)]) -> Layer {
    let entries: Vec<Entry> = files.iter().map(|(n, c)| Entry::file(n, c)).collect();
    let tar = archive(&entries);
    let blob = gzip(&tar);
    let digest = store.write_blob(&blob).expect("layer blob");
    Layer {
        descriptor: descriptor(&MediaType::OciLayerGzip, &digest, blob.len() as u64),
        diff_id: Digest::sha256(&tar),
    }
}

fn cached(layer: &Layer, created_by: &str) -> CachedLayer {
    CachedLayer {
        layer: layer.clone(),
        created_by: created_by.to_owned(),
        created: Some("2026-12-05T10:00:00Z".to_owned()),
    }
}

fn digest_of(desc: &Descriptor) -> Digest {
    desc.checked_digest().expect("digest")
}

// ---- keys ------------------------------------------------------------------

#[test]
fn keys_change_with_parent_text_and_each_input() {
    let base = CacheKey::base(Some(&d("busybox manifest")), &amd64());
    assert_ne!(base, CacheKey::base(None, &amd64()), "scratch differs");
    assert_ne!(
        base,
        CacheKey::base(
            Some(&d("busybox manifest")),
            &Platform::new("linux", "arm64")
        ),
        "the platform is in the key"
    );
    assert_eq!(
        CacheKey::base(None, &amd64()),
        CacheKey::base(None, &"linux/amd64".parse().expect("platform")),
        "the same base, the same key"
    );

    let other = CacheKey::base(Some(&d("alpine manifest")), &amd64());
    let (a, b, c) = (d("a"), d("b"), d("c"));
    let k = base.child("COPY a b /", &[a.clone(), b.clone()]);
    assert_eq!(k, base.child("COPY a b /", &[a.clone(), b.clone()]));
    assert_ne!(
        k,
        other.child("COPY a b /", &[a.clone(), b.clone()]),
        "parent"
    );
    assert_ne!(
        k,
        base.child("COPY a b /x", &[a.clone(), b.clone()]),
        "text"
    );
    assert_ne!(
        k,
        base.child("COPY a b /", &[c.clone(), b.clone()]),
        "input 0"
    );
    assert_ne!(
        k,
        base.child("COPY a b /", &[a.clone(), c.clone()]),
        "input 1"
    );
    assert_ne!(
        k,
        base.child("COPY a b /", &[b.clone(), a.clone()]),
        "order"
    );
    assert_ne!(
        k,
        base.child("COPY a b /", std::slice::from_ref(&a)),
        "count"
    );
    assert_ne!(k.digest(), base.digest());
    assert_eq!(
        k.reference(),
        format!("{CACHE_REPOSITORY}:{}", k.digest().hex())
    );
    assert!(is_cache_reference(&k.reference()));
}

/// Fields are length-prefixed: text that ends with what an input spells, or
/// a split moved between the text and an input, or between the parent and
/// the text, gives another key.
#[test]
fn keys_are_unambiguous() {
    let base = CacheKey::base(None, &amd64());
    let a = d("a");
    let ab = base.child(&format!("COPY {a}"), &[]);
    assert_ne!(ab, base.child("COPY ", std::slice::from_ref(&a)));
    assert_ne!(
        ab,
        base.child(&format!("COPY {}", &a.to_string()[..10]), &[])
    );
    // ("ab", "c") against ("a", "bc"), through two levels of the chain.
    let ab_c = base.child("ab", &[]).child("c", &[]);
    let a_bc = base.child("a", &[]).child("bc", &[]);
    assert_ne!(ab_c, a_bc);
    // A base for scratch is not a base for an image whose digest spells "scratch".
    assert_ne!(
        CacheKey::base(None, &amd64()),
        CacheKey::base(Some(&d("scratch")), &amd64())
    );
}

/// Property: over generated steps (texts from a small alphabet that holds
/// the inputs' spelling, so that many concatenate to the same bytes, and input lists of every length
/// and order), two steps have the same key exactly when they are the same
/// step.
#[test]
fn keys_are_injective_on_generated_steps() {
    let parents = [
        CacheKey::base(None, &amd64()),
        CacheKey::base(Some(&d("x")), &amd64()),
    ];
    let inputs = [d("1"), d("2"), d("3")];
    let spelled: Vec<String> = inputs.iter().map(ToString::to_string).collect();
    let mut next = image_testsupport::xorshift(0x1234_5678_9abc_def1);
    let mut seen = std::collections::HashMap::new();
    for _ in 0..5000 {
        let p = (next() % 2) as usize;
        // Pieces include the inputs' own spelling, so that a text can end
        // with what an input list would add.
        let pieces = ["a", "b", "ab", " ", &spelled[0], &spelled[1]];
        let text: String = (0..next() % 4)
            .map(|_| pieces[(next() % 6) as usize])
            .collect();
        let ins: Vec<usize> = (0..next() % 4).map(|_| (next() % 3) as usize).collect();
        let step = (p, text.clone(), ins.clone());
        let list: Vec<Digest> = ins.iter().map(|&i| inputs[i].clone()).collect();
        let key = parents[p].child(&text, &list);
        if let Some(prev) = seen.insert(key.clone(), step.clone()) {
            assert_eq!(prev, step, "two steps share key {key}");
        }
    }
    assert!(seen.len() > 500, "the generator made few distinct steps");
}

// ---- records -----------------------------------------------------------------

#[test]
fn a_record_is_found_before_and_after_flush_and_reopen() {
    let (_t, store) = oci_dir();
    let lease = store.begin_lease().expect("lease");
    let leased = lease.protect(&store);
    let base = CacheKey::base(None, &amd64());
    let k1 = base.child("COPY f /", &[d("f")]);
    let k2 = k1.child("RUN true", &[]);
    let l1 = layer(&leased, &[("f", "one")]);
    let l2 = layer(&leased, &[("g", "two")]);
    let long = "RUN ".to_owned() + &"x".repeat(MAX_NOTE_CREATED_BY + 10);

    let cache = Cache::open(&leased).expect("open");
    assert_eq!(cache.lookup(&k1).expect("lookup"), None);
    cache.record(&k1, &cached(&l1, "COPY f /")).expect("record");
    cache.record(&k2, &cached(&l2, &long)).expect("record");
    assert_eq!(
        cache.lookup(&k1).expect("lookup"),
        Some(cached(&l1, "COPY f /")),
        "found before the flush"
    );
    // Not tagged before the flush; one batch after it.
    assert!(store.tags().expect("tags").is_empty());
    cache.flush().expect("flush");
    let tags = store.tags().expect("tags");
    let names: Vec<&str> = tags.iter().map(|t| t.name.as_str()).collect();
    let mut want = vec![k1.reference(), k2.reference()];
    want.sort();
    assert_eq!(names, want);
    cache.flush().expect("flushing nothing");
    drop(cache);
    lease.release().expect("release");

    let cache = Cache::open(&store).expect("reopen");
    assert_eq!(cache.stats().records, 2);
    assert_eq!(
        cache.lookup(&k1).expect("lookup"),
        Some(cached(&l1, "COPY f /"))
    );
    assert_eq!(
        cache.lookup(&k2).expect("lookup"),
        Some(cached(&l2, &long)),
        "a long created_by comes from the config blob"
    );
    assert_eq!(cache.lookup(&base).expect("lookup"), None);
    let stats = cache.stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.foreign, stats.gone),
        (2, 1, 0, 0)
    );

    // The record is an OCI manifest of one layer, with our config.
    let desc = store.resolve_tag(&k1.reference()).expect("tag");
    let bytes = store
        .read_blob_to_vec(&digest_of(&desc), 1 << 20)
        .expect("manifest");
    let m = Manifest::from_bytes(bytes).expect("parse");
    assert_eq!(m.media_type(), &MediaType::OciManifest);
    assert_eq!(m.layers(), std::slice::from_ref(&l1.descriptor));
    assert_eq!(m.config().media_type().to_string(), CACHE_CONFIG_MEDIA_TYPE);
    assert_eq!(
        m.artifact_type().map(|t| t.to_string()).as_deref(),
        Some(CACHE_CONFIG_MEDIA_TYPE)
    );
    let config: serde_json::Value = serde_json::from_slice(
        &store
            .read_blob_to_vec(&m.config_digest(), 1 << 20)
            .expect("config"),
    )
    .expect("json");
    assert_eq!(config["key"], k1.digest().to_string());
    assert_eq!(config["diff_id"], l1.diff_id.to_string());
    assert_eq!(config["created_by"], "COPY f /");
    assert_eq!(config["created"], "2026-12-05T10:00:00Z");
    assert_eq!(config["media_type"], MediaType::OciLayerGzip.to_string());
}

/// A record of a layer the store does not hold is refused at once, so it
/// cannot fail the flush of the others.
#[test]
fn a_record_of_a_missing_layer_is_refused() {
    let (_t, store) = oci_dir();
    let base = CacheKey::base(None, &amd64());
    let good = layer(&store, &[("x", "x")]);
    let mut absent = good.clone();
    absent.descriptor = descriptor(&MediaType::OciLayerGzip, &d("no such blob"), 5);
    let mut resized = good.clone();
    resized.descriptor = descriptor(&MediaType::OciLayerGzip, &digest_of(&good.descriptor), 1);
    let cache = Cache::open(&store).expect("open");
    for (i, bad) in [absent, resized].iter().enumerate() {
        let err = cache
            .record(&base.child(&format!("bad {i}"), &[]), &cached(bad, "RUN"))
            .expect_err("a missing layer");
        image_testsupport::chain::assert_said_once(&err);
        assert!(matches!(err, CacheError::MissingLayer { .. }), "{err:?}");
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }
    let k = base.child("good", &[]);
    cache.record(&k, &cached(&good, "RUN")).expect("record");
    cache.flush().expect("flush");
    assert_eq!(store.tags().expect("tags").len(), 1);
}

#[test]
fn a_record_whose_layer_is_gone_is_a_miss() {
    let (_t, store) = oci_dir();
    let k = CacheKey::base(None, &amd64()).child("RUN x", &[]);
    let l = layer(&store, &[("x", "x")]);
    let cache = Cache::open(&store).expect("open");
    cache.record(&k, &cached(&l, "RUN x")).expect("record");
    cache.flush().expect("flush");

    store
        .delete(&digest_of(&l.descriptor))
        .expect("delete layer");
    let cache = Cache::open(&store).expect("reopen");
    assert_eq!(cache.lookup(&k).expect("lookup"), None);
    assert_eq!(cache.stats().gone, 1);
    assert_eq!(cache.stats().misses, 1);
}

/// Every blob reachable from `desc` in `store`.
fn closure(store: &OciDir, desc: &Descriptor) -> HashSet<Digest> {
    let mut out = HashSet::new();
    image_store::refs::walk(store, desc, &mut |digest, present| {
        assert!(present, "{digest} missing");
        out.insert(digest.clone());
    })
    .expect("walk");
    out
}

#[test]
fn prune_then_gc_leaves_no_record_and_keeps_what_images_need() {
    let (_t, store) = oci_dir();
    // A real image whose only layer a record shares.
    let shared = layer(&store, &[("shared", "s")]);
    let own = layer(&store, &[("own", "o")]);
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = store.write_blob(config).expect("config");
    let image = Manifest::build(
        &MediaType::OciManifest,
        descriptor(&MediaType::OciConfig, &config_digest, config.len() as u64),
        vec![shared.descriptor.clone()],
        None,
    )
    .expect("manifest");
    store.write_blob(image.raw()).expect("manifest blob");
    store
        .set_tag("example/app:1", &image.descriptor())
        .expect("tag");

    let base = CacheKey::base(None, &amd64());
    let (k1, k2) = (base.child("A", &[]), base.child("B", &[]));
    let cache = Cache::open(&store).expect("open");
    cache.record(&k1, &cached(&shared, "A")).expect("record");
    cache.record(&k2, &cached(&own, "B")).expect("record");
    cache.flush().expect("flush");
    // One foreign entry of the repository goes too.
    store
        .set_tag(
            &format!("{CACHE_REPOSITORY}:not-a-key"),
            &image.descriptor(),
        )
        .expect("foreign tag");
    let records: HashSet<Digest> = [&k1, &k2]
        .iter()
        .flat_map(|k| closure(&store, &store.resolve_tag(&k.reference()).expect("tag")))
        .collect();
    let needed = closure(&store, &image.descriptor());

    assert_eq!(prune(&store).expect("prune"), 3);
    assert_eq!(prune(&store).expect("again"), 0);
    let tags: Vec<String> = store
        .tags()
        .expect("tags")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(tags, ["docker.io/example/app:1"]);

    store
        .gc(&GcOptions::default().grace(Duration::ZERO))
        .expect("gc");
    let left: HashSet<Digest> = store
        .list()
        .expect("list")
        .into_iter()
        .map(|i| i.digest)
        .collect();
    for digest in &needed {
        assert!(
            left.contains(digest),
            "gc removed {digest}, which the image needs"
        );
    }
    for digest in records.difference(&needed) {
        assert!(
            !left.contains(digest),
            "record blob {digest} survived prune + gc"
        );
    }
    assert_eq!(left, needed);
    let cache = Cache::open(&store).expect("reopen");
    assert_eq!(cache.lookup(&k1).expect("lookup"), None);
}

/// The build's lease covers a record from its first blob to its tag: gc
/// with no grace period between `record` and `flush` removes nothing, and
/// the flush (which checks the closure) succeeds.
#[test]
fn gc_between_record_and_flush_removes_nothing() {
    let (_t, store) = oci_dir();
    let lease = store.begin_lease().expect("lease");
    let leased = lease.protect(&store);
    let cache = Cache::open(&leased).expect("open");
    let keys: Vec<CacheKey> = (0..3)
        .map(|i| CacheKey::base(None, &amd64()).child(&format!("RUN {i}"), &[]))
        .collect();
    let layers: Vec<Layer> = (0..3)
        .map(|i| layer(&leased, &[("f", &i.to_string())]))
        .collect();
    for (k, l) in keys.iter().zip(&layers) {
        cache.record(k, &cached(l, "RUN")).expect("record");
    }
    let before = store.list().expect("list").len();
    let report = store
        .gc(&GcOptions::default().grace(Duration::ZERO))
        .expect("gc");
    assert!(report.removed.is_empty(), "{:?}", report.removed);
    assert_eq!(store.list().expect("list").len(), before);
    cache.flush().expect("flush after gc");
    drop(cache);
    lease.release().expect("release");

    store
        .gc(&GcOptions::default().grace(Duration::ZERO))
        .expect("gc");
    let cache = Cache::open(&store).expect("reopen");
    for (k, l) in keys.iter().zip(&layers) {
        assert_eq!(cache.lookup(k).expect("lookup"), Some(cached(l, "RUN")));
    }
}

/// Two builders, each with its own cache handle and lease, record and
/// flush at the same time: both keep every record.
#[test]
fn concurrent_builders_both_keep_their_records() {
    let (_t, store) = oci_dir();
    let store = &store;
    let per = 20;
    let made: Vec<Vec<(CacheKey, Layer)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|b| {
                s.spawn(move || {
                    let lease = store.begin_lease().expect("lease");
                    let leased = lease.protect(store);
                    let cache = Cache::open(&leased).expect("open");
                    let mut out = Vec::new();
                    let mut key =
                        CacheKey::base(None, &amd64()).child(&format!("builder {b}"), &[]);
                    for i in 0..per {
                        key = key.child(&format!("RUN {i}"), &[]);
                        let l = layer(&leased, &[("f", &format!("{b}-{i}"))]);
                        cache.record(&key, &cached(&l, "RUN")).expect("record");
                        if i % 5 == 4 {
                            cache.flush().expect("flush");
                        }
                        out.push((key.clone(), l));
                    }
                    cache.flush().expect("flush");
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("builder"))
            .collect()
    });
    let cache = Cache::open(store).expect("reopen");
    assert_eq!(cache.stats().records, 2 * per);
    for (k, l) in made.iter().flatten() {
        assert_eq!(cache.lookup(k).expect("lookup"), Some(cached(l, "RUN")));
    }
}

/// A fully cached rebuild of ten steps (open, ten hits, a flush of
/// nothing) changes nothing in the store but the build's own lease: no
/// blob or `index.json` written, nothing synced or renamed; and the first
/// build tags its ten records with one `index.json` write.
#[test]
fn a_cached_rebuild_writes_and_syncs_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = Arc::new(Recording::default());
    let store = OciDir::open_or_create_with(dir.path().join("layout"), fs.clone()).expect("open");
    let keys: Vec<CacheKey> = (0..10)
        .scan(CacheKey::base(None, &amd64()), |k, i| {
            *k = k.child(&format!("RUN step {i}"), &[]);
            Some(k.clone())
        })
        .collect();
    let build = |first: bool| {
        let lease = store.begin_lease().expect("lease");
        let leased = lease.protect(&store);
        let layers: Vec<Layer> = if first {
            (0..10)
                .map(|i| layer(&leased, &[("f", &i.to_string())]))
                .collect()
        } else {
            Vec::new()
        };
        fs.take();
        let cache = Cache::open(&leased).expect("open");
        for (i, k) in keys.iter().enumerate() {
            match cache.lookup(k).expect("lookup") {
                Some(hit) => assert_eq!(hit.created_by, "RUN"),
                None => cache.record(k, &cached(&layers[i], "RUN")).expect("record"),
            }
        }
        cache.flush().expect("flush");
        (fs.take(), cache.stats())
    };
    let (first, stats) = build(true);
    assert_eq!(stats.misses, 10);
    let index_renames = first
        .iter()
        .filter(|c| **c == (Op::Rename, Target::Index))
        .count();
    assert_eq!(index_renames, 1, "one index.json write for ten records");

    let (again, stats) = build(false);
    assert_eq!(stats.hits, 10);
    let outside_lease: Vec<_> = again.iter().filter(|(_, t)| *t != Target::Lease).collect();
    assert!(outside_lease.is_empty(), "{outside_lease:?}");
    let synced: Vec<_> = again
        .iter()
        .filter(|(op, _)| matches!(op, Op::SyncFile | Op::SyncDir | Op::Rename))
        .collect();
    assert!(synced.is_empty(), "{synced:?}");
}

// ---- hostile records ---------------------------------------------------------

/// Tags `manifest` (written to the store) as the record of `key` with the
/// annotation `note`.
fn forge(store: &OciDir, key: &CacheKey, manifest: &Manifest, note: Option<String>) {
    store.write_blob(manifest.raw()).expect("manifest blob");
    let mut desc = manifest.descriptor();
    if let Some(note) = note {
        desc.set_annotations(Some([(RECORD_ANNOTATION.to_owned(), note)].into()));
    }
    store.set_tag(&key.reference(), &desc).expect("tag");
}

fn note_json(
    key: &CacheKey,
    layer: &Layer,
    config: &Descriptor,
    created_by: Option<&str>,
) -> String {
    let desc = |d: &Descriptor| {
        serde_json::json!({
            "media_type": d.media_type().to_string(),
            "digest": d.digest().to_string(),
            "size": d.size(),
        })
    };
    let mut note = serde_json::json!({
        "key": key.digest().to_string(),
        "layer": desc(&layer.descriptor),
        "diff_id": layer.diff_id.to_string(),
        "config": desc(config),
    });
    if let Some(c) = created_by {
        note["created_by"] = c.into();
    }
    note.to_string()
}

/// Records another tool or a damaged store left: a tag of the repository
/// on a manifest of 1,000 layers, on a config of 100 MiB (told truly or
/// with a false size), with a note too long or naming another key, and a
/// tag that is no key. Each is a miss, counted, and no lookup reads a
/// blob; `open` reads none either.
#[test]
fn hostile_records_are_misses_and_bounded() {
    let (_t, store) = oci_dir();
    let base = CacheKey::base(None, &amd64());
    let keys: Vec<CacheKey> = (0..6).map(|i| base.child(&format!("{i}"), &[])).collect();
    let l = layer(&store, &[("f", "x")]);
    let small = store.write_blob(b"{}").expect("config");
    let small_desc = descriptor(&MediaType::from(CACHE_CONFIG_MEDIA_TYPE), &small, 2);

    // 0: a manifest of 1,000 layers and no note.
    let many = Manifest::build(
        &MediaType::OciManifest,
        small_desc.clone(),
        vec![l.descriptor.clone(); 1000],
        None,
    )
    .expect("manifest");
    forge(&store, &keys[0], &many, None);

    // 1 and 2: a note without created_by pointing at a 100 MiB config,
    // told with its size and with a false one.
    let huge: Vec<u8> = vec![b' '; 100 << 20];
    let huge_digest = store.write_blob(&huge).expect("huge config");
    drop(huge);
    let huge_desc = descriptor(
        &MediaType::from(CACHE_CONFIG_MEDIA_TYPE),
        &huge_digest,
        100 << 20,
    );
    let lying = descriptor(&MediaType::from(CACHE_CONFIG_MEDIA_TYPE), &huge_digest, 100);
    let one = Manifest::build(
        &MediaType::OciManifest,
        huge_desc.clone(),
        vec![l.descriptor.clone()],
        None,
    )
    .expect("manifest");
    forge(
        &store,
        &keys[1],
        &one,
        Some(note_json(&keys[1], &l, &huge_desc, None)),
    );
    forge(
        &store,
        &keys[2],
        &one,
        Some(note_json(&keys[2], &l, &lying, None)),
    );

    // 3: a note naming another key; 4: a note too long to be ours.
    let fine = Manifest::build(
        &MediaType::OciManifest,
        small_desc.clone(),
        vec![l.descriptor.clone()],
        None,
    )
    .expect("manifest");
    forge(
        &store,
        &keys[3],
        &fine,
        Some(note_json(&keys[0], &l, &small_desc, Some("RUN"))),
    );
    let long = "y".repeat(1 << 20);
    forge(
        &store,
        &keys[4],
        &fine,
        Some(note_json(&keys[4], &l, &small_desc, Some(&long))),
    );
    // 5: the one good record among them.
    forge(
        &store,
        &keys[5],
        &fine,
        Some(note_json(&keys[5], &l, &small_desc, Some("RUN ok"))),
    );
    // A tag of the repository that is no key.
    store
        .set_tag(&format!("{CACHE_REPOSITORY}:latest"), &fine.descriptor())
        .expect("tag");

    let counting = CountingReads::new(&store);
    let cache = Cache::open(&counting).expect("open");
    for k in &keys[..5] {
        assert_eq!(cache.lookup(k).expect("lookup"), None, "{k}");
    }
    assert_eq!(
        cache.lookup(&keys[5]).expect("lookup"),
        // A note without a time (as the first records had) gives none.
        Some(CachedLayer {
            created: None,
            ..cached(&l, "RUN ok")
        })
    );
    assert_eq!(
        counting.reads().values().sum::<usize>(),
        0,
        "a blob was read"
    );
    let stats = cache.stats();
    assert_eq!(stats.records, 3, "{stats:?}");
    assert_eq!(stats.foreign, 4, "{stats:?}");
    assert_eq!(
        (stats.hits, stats.misses, stats.gone),
        (1, 5, 2),
        "{stats:?}"
    );
}

// ---- snapshots ---------------------------------------------------------------

fn snapshots_of<S: Snapshotter>(sn: &S) {
    let (_t, store) = oci_dir();
    let layers: Vec<Layer> = (0..3)
        .map(|i| layer(&store, &[(&format!("f{i}"), &format!("{i}"))]))
        .collect();
    let chains =
        image_core::chain_ids(&layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>());
    assert_eq!(chain_name(&[]), None);
    assert_eq!(chain_name(&layers), Some(chains[2].to_string()));

    let top = ensure_snapshots(&store, sn, &layers[..1], None).expect("first layer");
    assert_eq!(top, Some(chains[0].to_string()));

    // Only the missing tail is unpacked, and the report says so.
    let report = ensure_snapshots_with(&store, sn, &layers, &ImageUnpackOptions::default())
        .expect("all layers");
    assert_eq!(report.reused, chains[..1]);
    assert_eq!(report.unpacked, chains[1..]);
    assert_eq!(report.top(), chain_name(&layers));
    for c in &chains {
        let info = sn.stat(&c.to_string()).expect("stat");
        assert_eq!(info.kind, Kind::Committed);
    }
    let again =
        ensure_snapshots_with(&store, sn, &layers, &ImageUnpackOptions::default()).expect("again");
    assert!(again.unpacked.is_empty());
    assert_eq!(again.reused, chains);
    assert_eq!(ensure_snapshots(&store, sn, &[], None).expect("none"), None);

    // The top holds every layer's file (through a view: the copy driver's
    // is a plain directory, overlay's is mounted).
    let mounts = sn
        .view("check", Some(&chains[2].to_string()))
        .expect("view");
    image_overlay::testsuite::with_mounted(&mounts, |root| {
        for i in 0..3 {
            let got = std::fs::read_to_string(root.join(format!("f{i}"))).expect("file");
            assert_eq!(got, i.to_string());
        }
    });
    sn.remove("check").expect("remove view");

    // A layer that is not what its record says is refused, nothing left.
    let mut bad = layers.clone();
    bad.push(Layer {
        descriptor: layers[0].descriptor.clone(),
        diff_id: d("not the diff id"),
    });
    assert!(ensure_snapshots(&store, sn, &bad, None).is_err());
    let mut names = Vec::new();
    sn.walk(&mut |i| names.push(i.name.clone())).expect("walk");
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn ensure_snapshots_overlay() {
    if !image_overlay::testsuite::mounts_permitted("ensure_snapshots_overlay") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    snapshots_of(&OverlaySnapshotter::open(dir.path()).expect("open overlay"));
}

#[test]
fn ensure_snapshots_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    snapshots_of(&CopySnapshotter::open(dir.path()).expect("open copy"));
}
