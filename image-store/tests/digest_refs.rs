//! Digest references (`name@sha256:...`) resolve by content and are never
//! tags: the spoofing attack through docker-save `RepoTags`, OCI
//! `ref.name`, copy and tag, and resolution of a digest that is present.
//! Also batch tagging: one `index.json` write for any number of names.

mod archive_fixtures;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use archive_fixtures::*;
use image_core::{Classify, Compression, Descriptor, Digest, ErrorKind};
use image_store::archive::{load, save_docker, ArchiveError, LoadOptions, SaveImage, SaveOptions};
use image_store::fs::{Fs, RealFs, Root, Target};
use image_store::image::ImageError;
use image_store::{
    copy_tag, resolve_image, resolve_reference, CopyError, MemoryStore, OciDir, Provider, TagError,
    TagStore,
};
use serde_json::json;

/// The image the victim trusts, tagged `test/bb:latest`.
fn real_image<S: image_store::archive::BlobStore + TagStore>(store: &S) -> TestImage {
    let img = make_image(
        store,
        &[(file_layer("etc/who", b"real"), Compression::Gzip)],
        "amd64",
    );
    store.set_tag("test/bb:latest", &img.manifest).expect("tag");
    img
}

fn digest_of(d: &Descriptor) -> Digest {
    Digest::try_from(d.digest().as_ref()).expect("digest")
}

/// `test/bb@<the real image's manifest digest>`.
fn pinned(real: &TestImage) -> String {
    format!("test/bb@{}", real.manifest.digest())
}

/// A docker-save archive of other content whose `RepoTags` is `tags`.
fn docker_archive_named(tags: &[&str]) -> Vec<u8> {
    let layer = file_layer("etc/who", b"evil");
    let config = config_for(std::slice::from_ref(&layer), "amd64");
    let cfg = format!("{}.json", config.digest().hex());
    let mj = serde_json::to_vec(&json!([{
        "Config": cfg, "RepoTags": tags, "Layers": ["l/layer.tar"],
    }]))
    .expect("json");
    archive_of(&[
        ("l/layer.tar", &layer),
        (&cfg, config.raw()),
        ("manifest.json", &mj),
    ])
}

/// The blobs of `img` in `store`, as archive entries.
fn blob_files(store: &OciDir, img: &TestImage) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut digests = vec![img.config.digest().clone(), digest_of(&img.manifest)];
    digests.extend(img.layers.iter().map(digest_of));
    for d in digests {
        out.push((
            format!("blobs/sha256/{}", d.hex()),
            store.read_blob_to_vec(&d, 1 << 30).expect("blob"),
        ));
    }
    out
}

/// An OCI index listing `manifest` once per name.
fn index_naming(manifest: &Descriptor, names: &[String]) -> Vec<u8> {
    let entries: Vec<_> = names
        .iter()
        .map(|n| {
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "digest": manifest.digest().to_string(), "size": manifest.size(),
                   "annotations": {"org.opencontainers.image.ref.name": n}})
        })
        .collect();
    serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": entries})).expect("json")
}

/// An OCI archive of the evil image in `src`, naming it `names`.
fn oci_archive_naming(src: &OciDir, evil: &TestImage, names: &[String]) -> Vec<u8> {
    let mut files = blob_files(src, evil);
    files.push((
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    ));
    files.push(("index.json".into(), index_naming(&evil.manifest, names)));
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    archive_of(&refs)
}

fn evil_image(store: &OciDir) -> TestImage {
    make_image(
        store,
        &[(file_layer("etc/who", b"evil"), Compression::Gzip)],
        "amd64",
    )
}

fn assert_digest_in_name(e: &TagError) {
    assert!(matches!(e, TagError::DigestInName { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

/// The attack: a docker-save archive claiming `test/bb@<real digest>` for
/// other content. The load is refused whole (nothing tagged), and the
/// digest reference keeps naming the real image.
#[test]
fn docker_save_repo_tag_with_a_digest_is_refused() {
    let (_d, store) = oci_dir();
    let real = real_image(&store);
    let before = store.tags().expect("tags");
    let tarball = docker_archive_named(&[&pinned(&real), "evil:1"]);
    let err = load(&store, &tarball[..], &LoadOptions::default()).expect_err("refused");
    match &err {
        ArchiveError::Tag(e) => assert_digest_in_name(e),
        e => panic!("not a tag error: {e:?}"),
    }
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(store.tags().expect("tags"), before, "nothing tagged");
    let image = resolve_image(&store, &pinned(&real), None).expect("resolve");
    assert_eq!(
        image.id(),
        real.config.digest(),
        "the real image, by content"
    );
}

/// The same through an OCI archive's `org.opencontainers.image.ref.name`,
/// into a store that does not even have the real image.
#[test]
fn oci_ref_name_with_a_digest_is_refused() {
    let (_s, src) = oci_dir();
    let real = real_image(&src);
    let evil = evil_image(&src);
    let tarball = oci_archive_naming(&src, &evil, &[pinned(&real)]);
    let (_d, dst) = oci_dir();
    let err = load(&dst, &tarball[..], &LoadOptions::default()).expect_err("refused");
    assert!(
        matches!(&err, ArchiveError::Tag(TagError::DigestInName { .. })),
        "{err:?}"
    );
    assert!(dst.tags().expect("tags").is_empty());
    let err = resolve_image(&dst, &pinned(&real), None).expect_err("not present");
    assert!(
        matches!(err, ImageError::Tag(TagError::DigestNotFound { .. })),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // A memory store refuses it the same way.
    let mem = MemoryStore::new();
    let err = load(&mem, &tarball[..], &LoadOptions::default()).expect_err("refused");
    assert!(
        matches!(&err, ArchiveError::Tag(TagError::DigestInName { .. })),
        "{err:?}"
    );
}

/// A layout whose `index.json` already holds a name with a digest (written
/// by another tool, or by an older version of this one): the entry is no
/// tag. It is not listed, a digest reference does not match it as a
/// string, copying from it resolves by content, and `remove_tag` of its
/// exact name removes it.
#[test]
fn a_stored_name_with_a_digest_is_no_tag() {
    let (_s, src) = oci_dir();
    let real = real_image(&src);
    let (dir, layout) = oci_dir();
    let evil = evil_image(&layout);
    layout.set_tag("evil:1", &evil.manifest).expect("tag");
    let poisoned = format!("docker.io/{}", pinned(&real));
    let mut entry = evil.manifest.clone();
    entry.set_annotations(Some(
        [(image_store::tags::REF_NAME.to_owned(), poisoned.clone())].into(),
    ));
    layout
        .update_index(|m| {
            m.push(entry);
            Ok(true)
        })
        .expect("write a poisoned entry");
    let names: Vec<String> = layout
        .tags()
        .expect("tags")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["docker.io/library/evil:1"]);
    for name in [pinned(&real), poisoned.clone()] {
        let err = resolve_reference(&layout, &name).expect_err("no such content");
        assert!(matches!(err, TagError::DigestNotFound { .. }), "{err:?}");
        let err = layout.resolve_tag(&name).expect_err("not a tag");
        assert_digest_in_name(&err);
    }
    let (_d2, dst) = oci_dir();
    let err = copy_tag(&layout, &pinned(&real), &dst, Some("copied:1")).expect_err("refused");
    assert!(
        matches!(err, CopyError::Tag(TagError::DigestNotFound { .. })),
        "{err:?}"
    );
    assert!(image_store::Manager::list(&dst).expect("list").is_empty());

    assert!(layout.remove_tag(&poisoned).expect("remove"));
    let index = std::fs::read_to_string(dir.path().join("layout/index.json")).expect("read");
    assert!(!index.contains('@'), "{index}");
    assert!(!layout.remove_tag(&poisoned).expect("remove again"));
}

/// Every way to make a tag refuses a name with a digest: `set_tag` on both
/// stores, `set_tags`, and `copy_tag`'s destination (before any blob is
/// copied).
#[test]
fn no_tag_can_hold_a_digest() {
    let (_d, store) = oci_dir();
    let real = real_image(&store);
    let mem = MemoryStore::new();
    real_image(&mem);
    let name = format!("evil/y@{}", real.manifest.digest());
    let tagged = format!("evil/y:1@{}", real.manifest.digest());
    for n in [&name, &tagged] {
        assert_digest_in_name(&store.set_tag(n, &real.manifest).expect_err("refused"));
        assert_digest_in_name(&mem.set_tag(n, &real.manifest).expect_err("refused"));
        assert_digest_in_name(
            &store
                .set_tags(&[("fine:1", &real.manifest), (n, &real.manifest)])
                .expect_err("refused"),
        );
        assert_digest_in_name(
            &mem.set_tags(&[("fine:1", &real.manifest), (n, &real.manifest)])
                .expect_err("refused"),
        );
    }
    let names = |s: &dyn TagStore| -> Vec<String> {
        s.tags()
            .expect("tags")
            .into_iter()
            .map(|t| t.name)
            .collect()
    };
    assert_eq!(
        names(&store),
        ["docker.io/test/bb:latest"],
        "the batch set none"
    );
    assert_eq!(names(&mem), ["docker.io/test/bb:latest"]);
    let (_d2, dst) = oci_dir();
    let err = copy_tag(&store, "test/bb", &dst, Some(&name)).expect_err("refused");
    assert!(
        matches!(err, CopyError::Tag(TagError::DigestInName { .. })),
        "{err:?}"
    );
    assert!(image_store::Manager::list(&dst).expect("list").is_empty());
}

/// A digest reference names the image with that manifest (or index)
/// digest among the tags of its repository, the tag part ignored; a
/// platform's manifest inside a tagged index is found too. Another
/// repository does not name it (as in Docker's containerd store).
#[test]
fn a_digest_reference_resolves_by_content() {
    let (_d, store) = oci_dir();
    let real = real_image(&store);
    for name in [
        pinned(&real),
        format!("docker.io/test/bb:other@{}", real.manifest.digest()),
    ] {
        let image = resolve_image(&store, &name, None).expect("resolve");
        assert_eq!(image.id(), real.config.digest(), "{name}");
        assert_eq!(image.root.digest(), real.manifest.digest());
        assert_eq!(
            resolve_reference(&store, &name).expect("resolve").digest(),
            real.manifest.digest()
        );
    }
    let err = resolve_image(&store, &format!("other/x@{}", real.manifest.digest()), None)
        .expect_err("other repository");
    assert!(
        matches!(err, ImageError::Tag(TagError::DigestNotFound { .. })),
        "{err:?}"
    );
    let absent = format!("test/bb@{}", Digest::sha256(b"absent"));
    let err = resolve_image(&store, &absent, None).expect_err("absent");
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // An index: the index itself and each platform's manifest.
    let amd = make_image(&store, &[(busybox_layer(), Compression::Gzip)], "amd64");
    let arm = make_image(
        &store,
        &[(file_layer("etc/arch", b"arm64"), Compression::Zstd)],
        "arm64",
    );
    let index = make_index(&store, &[(&amd, "amd64"), (&arm, "arm64")]);
    store.set_tag("quay.io/team/multi:1", &index).expect("tag");
    let by_index = resolve_reference(&store, &format!("quay.io/team/multi@{}", index.digest()))
        .expect("index");
    assert_eq!(by_index.digest(), index.digest());
    let arm_ref = format!("quay.io/team/multi@{}", arm.manifest.digest());
    let image = resolve_image(&store, &arm_ref, None).expect("arm manifest");
    assert_eq!(image.id(), arm.config.digest());
    assert!(image.indexes.is_empty(), "resolved to the manifest itself");

    // Saving by digest writes no name with a digest, and loads back.
    let saved = SaveImage::from_tag(&store, &pinned(&real)).expect("save image");
    assert!(saved.names.is_empty(), "{:?}", saved.names);
    let mut tarball = Vec::new();
    save_docker(&store, &[saved], &mut tarball, &SaveOptions::default()).expect("save");
    let (_d2, dst) = oci_dir();
    load(&dst, &tarball[..], &LoadOptions::default()).expect("load");
}

// ------------------------------------------------------------ many names

/// A seam that counts the renames of `index.json` and the bytes written to it.
#[derive(Debug)]
struct CountingFs {
    inner: RealFs,
    index_renames: AtomicUsize,
    index_bytes: AtomicUsize,
}

impl Fs for CountingFs {
    fn create_dir_all(&self, t: Target, r: &Root, p: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(t, r, p)
    }
    fn open_temp(
        &self,
        t: Target,
        r: &Root,
        p: &Path,
        truncate: bool,
    ) -> std::io::Result<std::fs::File> {
        self.inner.open_temp(t, r, p, truncate)
    }
    fn write(&self, t: Target, f: &mut std::fs::File, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(t, f, buf)?;
        if t == Target::Index {
            self.index_bytes.fetch_add(n, Ordering::SeqCst);
        }
        Ok(n)
    }
    fn set_len(&self, t: Target, f: &std::fs::File, len: u64) -> std::io::Result<()> {
        self.inner.set_len(t, f, len)
    }
    fn sync_file(&self, t: Target, f: &std::fs::File) -> std::io::Result<()> {
        self.inner.sync_file(t, f)
    }
    fn rename(&self, t: Target, r: &Root, from: &Path, to: &Path) -> std::io::Result<()> {
        if t == Target::Index {
            self.index_renames.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.rename(t, r, from, to)
    }
    fn sync_dir(&self, t: Target, r: &Root, d: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(t, r, d)
    }
    fn remove_file(&self, t: Target, r: &Root, p: &Path) -> std::io::Result<()> {
        self.inner.remove_file(t, r, p)
    }
    fn remove_dir_all(&self, t: Target, r: &Root, p: &Path) -> std::io::Result<()> {
        self.inner.remove_dir_all(t, r, p)
    }
    fn remove_dir(&self, t: Target, r: &Root, p: &Path) -> std::io::Result<()> {
        self.inner.remove_dir(t, r, p)
    }
}

/// A store in a temporary directory (`<dir>/layout`) whose seam counts.
fn counting_store() -> (tempfile::TempDir, OciDir, Arc<CountingFs>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = Arc::new(CountingFs {
        inner: RealFs,
        index_renames: AtomicUsize::new(0),
        index_bytes: AtomicUsize::new(0),
    });
    let store = OciDir::open_or_create_with(dir.path().join("layout"), fs.clone()).expect("open");
    (dir, store, fs)
}

/// Loading an OCI archive whose index names one manifest 5,000 times
/// writes `index.json` once: the bytes written are the final file's size,
/// not the sum of 5,000 growing rewrites (which took minutes at 20,000).
#[test]
fn loading_many_names_writes_the_index_once() {
    const N: usize = 5000;
    let (_s, src) = oci_dir();
    let img = evil_image(&src);
    let names: Vec<String> = (0..N).map(|i| format!("example/many:t{i}")).collect();
    let tarball = oci_archive_naming(&src, &img, &names);

    let (dir, store, fs) = counting_store();
    let renames_before = fs.index_renames.load(Ordering::SeqCst);
    let bytes_before = fs.index_bytes.load(Ordering::SeqCst);
    let report = load(&store, &tarball[..], &LoadOptions::default()).expect("load");
    assert_eq!(report.images.len(), 1);
    assert_eq!(report.images[0].tags.len(), N);
    assert_eq!(fs.index_renames.load(Ordering::SeqCst) - renames_before, 1);
    let size = std::fs::metadata(dir.path().join("layout/index.json"))
        .expect("stat")
        .len() as usize;
    assert_eq!(fs.index_bytes.load(Ordering::SeqCst) - bytes_before, size);
    let tags = store.tags().expect("tags");
    assert_eq!(tags.len(), N);
    assert_eq!(
        resolve_reference(&store, "example/many:t4999")
            .expect("tag")
            .digest(),
        img.manifest.digest()
    );
}

/// Property: a batch gives the same tags as setting each name in turn,
/// on generated sequences of names (duplicates, short and full spellings
/// of the same reference, several images), over a store that already has
/// some of them, and equal on both stores.
#[test]
fn a_batch_equals_one_tag_at_a_time() {
    let (_s, src) = oci_dir();
    let images: Vec<Descriptor> = (0..3)
        .map(|i| {
            make_image(
                &src,
                &[(file_layer("etc/n", &[i]), Compression::None)],
                "amd64",
            )
            .manifest
        })
        .collect();
    let spellings = |i: u64| -> String {
        let repo = ["a", "b/c", "quay.io/x/y"][(i % 3) as usize];
        let tag = ["latest", "1", "2"][((i / 3) % 3) as usize];
        match (i / 9) % 3 {
            0 => format!("{repo}:{tag}"),
            1 if repo == "a" => format!("docker.io/library/a:{tag}"),
            1 if repo == "b/c" => format!("index.docker.io/b/c:{tag}"),
            _ if tag == "latest" => repo.to_owned(),
            _ => format!("{repo}:{tag}"),
        }
    };
    let mut next = image_testsupport::xorshift(0x2545_f491_4f6c_dd1d);
    for round in 0..40 {
        let (_d1, one) = oci_dir();
        let (_d2, batch) = oci_dir();
        let mem = MemoryStore::new();
        for s in [&one, &batch] {
            for d in &images {
                image_store::copy_image(&src, s, d).expect("copy");
            }
        }
        for d in &images {
            image_store::copy_image(&src, &mem, d).expect("copy");
        }
        let mut seq: Vec<(String, Descriptor)> = Vec::new();
        for _ in 0..(next() % 20) {
            let name = spellings(next() % 27);
            let d = images[(next() % 3) as usize].clone();
            seq.push((name, d));
        }
        // Some names are there before.
        let pre = (next() % 4) as usize;
        for (name, d) in seq.iter().take(pre) {
            for s in [&one as &dyn TagStore, &batch, &mem] {
                s.set_tag(
                    name,
                    &images[(images.iter().position(|x| x == d).unwrap() + 1) % 3],
                )
                .expect("pre-tag");
            }
        }
        for (name, d) in &seq {
            one.set_tag(name, d).expect("tag");
        }
        let refs: Vec<(&str, &Descriptor)> = seq.iter().map(|(n, d)| (n.as_str(), d)).collect();
        batch.set_tags(&refs).expect("batch");
        mem.set_tags(&refs).expect("batch");
        let view = |s: &dyn TagStore| -> Vec<(String, String)> {
            s.tags()
                .expect("tags")
                .into_iter()
                .map(|t| (t.name, t.descriptor.digest().to_string()))
                .collect()
        };
        assert_eq!(view(&one), view(&batch), "round {round}: {seq:?}");
        assert_eq!(view(&one), view(&mem), "round {round}: {seq:?}");
    }
}

/// A batch of tags set or removed through a lease's view of the store
/// ([`image_store::Leased`], as every writer tags) writes `index.json`
/// once, as the store's own batch does; a removal of names that are no
/// tags writes nothing.
#[test]
fn batches_through_a_lease_write_the_index_once() {
    use image_store::Leases;
    const N: usize = 50;
    let (_dir, store, fs) = counting_store();
    let img = evil_image(&store);
    let names: Vec<String> = (0..N).map(|i| format!("example/batch:t{i}")).collect();
    let lease = store.begin_lease().expect("lease");
    let leased = lease.protect(&store);
    let renames = || fs.index_renames.load(Ordering::SeqCst);

    let before = renames();
    let refs: Vec<(&str, &Descriptor)> =
        names.iter().map(|n| (n.as_str(), &img.manifest)).collect();
    leased.set_tags(&refs).expect("set");
    assert_eq!(renames() - before, 1);
    assert_eq!(store.tags().expect("tags").len(), N);

    let before = renames();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(leased.remove_tags(&names).expect("remove"), N);
    assert_eq!(renames() - before, 1);
    assert!(store.tags().expect("tags").is_empty());

    let before = renames();
    assert_eq!(leased.remove_tags(&names).expect("again"), 0);
    assert_eq!(renames(), before, "nothing to remove, nothing written");
}

/// Property: removing a batch of names gives the same tags and the same
/// count as removing each in turn, on generated sequences of names
/// (duplicates, short and full spellings of one reference, absent names),
/// on both stores; one bad name removes nothing.
#[test]
fn a_batch_removal_equals_one_removal_at_a_time() {
    let (_s, src) = oci_dir();
    let img = make_image(
        &src,
        &[(file_layer("etc/n", b"x"), Compression::None)],
        "amd64",
    )
    .manifest;
    let spellings = [
        "a",
        "a:latest",
        "docker.io/library/a:latest",
        "a:1",
        "b/c:2",
        "index.docker.io/b/c:2",
        "quay.io/x/y",
        "quay.io/x/y:3",
        "absent:9",
    ];
    let mut next = image_testsupport::xorshift(0x9e37_79b9_7f4a_7c15);
    for round in 0..40 {
        let (_d1, one) = oci_dir();
        let (_d2, batch) = oci_dir();
        let mem = MemoryStore::new();
        for s in [&one, &batch] {
            image_store::copy_image(&src, s, &img).expect("copy");
        }
        image_store::copy_image(&src, &mem, &img).expect("copy");
        for name in &spellings[..8] {
            if next() % 2 == 0 {
                for s in [&one as &dyn TagStore, &batch, &mem] {
                    s.set_tag(name, &img).expect("tag");
                }
            }
        }
        let seq: Vec<&str> = (0..next() % 8)
            .map(|_| spellings[(next() % 9) as usize])
            .collect();
        let mut removed = 0;
        for name in &seq {
            removed += usize::from(one.remove_tag(name).expect("remove"));
        }
        let view = |s: &dyn TagStore| -> Vec<String> {
            s.tags()
                .expect("tags")
                .into_iter()
                .map(|t| t.name)
                .collect()
        };
        let mem_before = view(&mem);
        assert!(mem.remove_tags(&["ok", "bad@sha256:00"]).is_err());
        assert!(batch.remove_tags(&["a", "Not A Name"]).is_err());
        assert_eq!(
            view(&mem),
            mem_before,
            "round {round}: a bad name removes none"
        );
        assert_eq!(
            batch.remove_tags(&seq).expect("batch"),
            removed,
            "round {round}: {seq:?}"
        );
        assert_eq!(
            mem.remove_tags(&seq).expect("batch"),
            removed,
            "round {round}: {seq:?}"
        );
        assert_eq!(view(&one), view(&batch), "round {round}: {seq:?}");
        assert_eq!(view(&one), view(&mem), "round {round}: {seq:?}");
    }
}

/// An image whose index names its manifest, and whose manifest its config
/// and layer, by sha512 digests resolves keyed by those digests: its
/// manifest digest and ID are the sha512 ones, and its blobs (what a
/// builder leases, what its size on disk counts) are the ones the store
/// holds, not the sha256 of their bytes.
#[test]
fn an_image_named_by_sha512_digests_resolves_to_the_blobs_the_store_holds() {
    use image_core::Algorithm;
    use image_store::Ingester;
    let store = MemoryStore::new();
    let put = |bytes: &[u8]| {
        let d = Digest::of_bytes(Algorithm::Sha512, bytes);
        store
            .ingest_reader(&mut &bytes[..], Some(bytes.len() as u64), Some(&d))
            .expect("ingest")
    };
    let layer = file_layer("etc/who", b"sha512");
    let ld = put(&layer);
    let host = image_core::Platform::host();
    let config = serde_json::to_vec(&json!({
        "architecture": host.architecture, "os": host.os,
        "rootfs": {"type": "layers", "diff_ids": [Digest::sha256(&layer).to_string()]},
    }))
    .expect("json");
    let cd = put(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld.to_string(), "size": layer.len()}],
    }))
    .expect("json");
    let md = put(&manifest);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md.to_string(), "size": manifest.len(),
            "platform": {"architecture": host.architecture, "os": host.os},
        }],
    }))
    .expect("json");
    let xd = store.write_blob(&index).expect("index");
    let top =
        image_core::manifest::descriptor(&image_core::MediaType::OciIndex, &xd, index.len() as u64);
    store.set_tag("s512:1", &top).expect("tag");

    let image = resolve_image(&store, "s512:1", None).expect("resolve");
    assert_eq!(image.manifest_digest(), &md);
    assert_eq!(image.id(), &cd);
    let blobs = image.blobs();
    assert_eq!(
        blobs,
        vec![
            (xd, index.len() as u64),
            (md, manifest.len() as u64),
            (cd, config.len() as u64),
            (ld, layer.len() as u64),
        ]
    );
    for (d, size) in &blobs {
        assert_eq!(store.info(d).expect("held").size, *size, "{d}");
    }
    let total = (index.len() + manifest.len() + config.len() + layer.len()) as u64;
    assert_eq!(image.size_on_disk(&store).expect("size"), total);

    // docker save checks each layer against its diff ID in the diff ID's
    // algorithm (the layer is named by sha512, its diff ID is sha256), and
    // the archive loads back to the same layers (keyed by sha256 there: a
    // docker-save archive has no descriptors to keep).
    let saved = SaveImage::from_tag(&store, "s512:1").expect("save image");
    let mut tarball = Vec::new();
    save_docker(&store, &[saved], &mut tarball, &SaveOptions::default()).expect("save");
    let dst = MemoryStore::new();
    load(&dst, &tarball[..], &LoadOptions::default()).expect("load");
    let loaded = resolve_image(&dst, "s512:1", None).expect("loaded");
    assert_eq!(loaded.diff_ids(), image.diff_ids());
    let layer_digest = Digest::try_from(loaded.layers()[0].digest().as_ref()).expect("digest");
    assert_eq!(
        dst.read_blob_to_vec(&layer_digest, 1 << 20).expect("layer"),
        layer
    );
}

/// A docker-save archive whose layer entry is named by its sha512 digest
/// (`blobs/sha512/<hex>`, the OCI form Docker 25 writes) while the config
/// gives its sha256 diff ID loads: the layer is checked in the diff ID's
/// algorithm and kept under the digest its name gives.
#[test]
fn a_docker_archive_layer_named_by_sha512_is_checked_against_its_sha256_diff_id() {
    use image_core::Algorithm;
    let layer = file_layer("etc/who", b"sha512 entry");
    let ld = Digest::of_bytes(Algorithm::Sha512, &layer);
    let layer_path = format!("blobs/sha512/{}", ld.hex());
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [Digest::sha256(&layer).to_string()]},
    }))
    .expect("json");
    let manifest = serde_json::to_vec(&json!([{
        "Config": "config.json", "RepoTags": ["l512:1"], "Layers": [layer_path],
    }]))
    .expect("json");
    let tarball = archive_of(&[
        (layer_path.as_str(), &layer),
        ("config.json", &config),
        ("manifest.json", &manifest),
    ]);
    let store = MemoryStore::new();
    load(&store, &tarball[..], &LoadOptions::default()).expect("load");
    let image = resolve_image(
        &store,
        "l512:1",
        Some(&image_core::Platform::new("linux", "amd64")),
    )
    .expect("loaded");
    assert_eq!(image.layers()[0].digest().to_string(), ld.to_string());
    assert_eq!(image.diff_ids(), [Digest::sha256(&layer)]);
}
