//! The build cache beyond one machine: keys that do not depend on the
//! machine, export to an OCI layout and import into another store (another
//! directory standing for another machine, with another context path),
//! `mode=min` against `mode=max`, and hostile indexes. As root, on real
//! stores, snapshots and mounts; the base image is made from Debian's
//! busybox-static (no network). A missing tool or privilege skips loudly
//! unless CI=true, where it fails.

use std::collections::HashMap;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image_build::build::{BuildEvent, BuildOptions, BuildResult, Builder};
use image_build::cache::export::{
    export, import, select, CacheMode, ImportError, CACHE_INDEX_ARTIFACT_TYPE, DEFAULT_NAME,
    KEY_ANNOTATION,
};
use image_build::cache::{Cache, CacheKey, CachedLayer};
use image_build::ImageBuilder;
use image_core::config::History;
use image_core::oci_spec::image::{ImageIndexBuilder, MediaType as OciMediaType};
use image_core::{Classify, Digest, ErrorKind, Index, Platform};
use image_runtime::snapshots::Snapshots;
use image_runtime::{NativeOptions, Runtime};
use image_store::fs::{Op, Target};
use image_store::{copy_tag, Ingester, OciDir, Provider, TagStore};

mod recording;
use recording::{CountingReads, Recording};

const BASE: &str = "test.local/busybox:1";
const APPLETS: &[&str] = &["sh", "cat", "echo", "rm"];

/// A store and a runtime with snapshots in their own directory: a machine.
struct Machine {
    dir: PathBuf,
    store: OciDir,
    runtime: Runtime,
}

impl Machine {
    fn new(dir: &Path) -> Machine {
        let store = OciDir::open_or_create(dir.join("store")).expect("store");
        Machine::with_store(dir, store)
    }

    /// A machine at `dir` whose store is `store`.
    fn with_store(dir: &Path, store: OciDir) -> Machine {
        let snapshots = Snapshots::open_default(&dir.join("snapshots")).expect("snapshots");
        let runtime = Runtime::native(&dir.join("state"), NativeOptions::default())
            .expect("runtime")
            .with_snapshots(snapshots)
            .expect("with snapshots");
        Machine {
            dir: dir.to_owned(),
            store,
            runtime,
        }
    }

    /// Builds `dockerfile` with `context`, recording events.
    fn build(
        &self,
        dockerfile: &str,
        context: &Path,
        change: impl FnOnce(&mut BuildOptions),
    ) -> (BuildResult, Vec<BuildEvent>) {
        let mut options = BuildOptions::new(context);
        options.dockerfile_text = Some(dockerfile.to_owned());
        change(&mut options);
        let mut events = Vec::new();
        let r = Builder::new(&self.store, &self.runtime)
            .build(&options, &mut |e: &BuildEvent| events.push(e.clone()))
            .expect("build");
        (r, events)
    }
}

/// No mount outlives a test (the snapshots go with its directory).
impl Drop for Machine {
    fn drop(&mut self) {
        let mounts = image_runtime::mountinfo::mounts_under(&self.dir).unwrap_or_default();
        for m in mounts.iter().rev() {
            let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// Two machines: A holding BASE, B holding the same BASE (copied, as a
/// pull would give it) and nothing else; `None` after a loud skip.
fn machines(tmp: &Path) -> Option<(Machine, Machine)> {
    if !image_testsupport::tools::ready(&[]) {
        return None;
    }
    // Every time of an image is this one (as in tests/build.rs).
    static EPOCH: std::sync::Once = std::sync::Once::new();
    EPOCH.call_once(|| std::env::set_var("SOURCE_DATE_EPOCH", "1700000000"));
    let a = Machine::new(&tmp.join("machine-a"));
    let rootfs = tmp.join("rootfs");
    image_testsupport::rootfs::container_rootfs(&rootfs, APPLETS);
    // Made through the builder API: a layer of the root filesystem, a
    // shell as the command.
    let mut base = ImageBuilder::scratch(&a.store, &Platform::host()).expect("builder");
    base.add_dir(&rootfs, History::default())
        .expect("rootfs layer");
    let run = base
        .config_mut()
        .config
        .get_or_insert_with(Default::default);
    run.cmd = Some(vec!["sh".into()]);
    run.env = Some(vec!["PATH=/bin".into()]);
    base.commit(&[BASE]).expect("base image");
    let b = Machine::new(&tmp.join("elsewhere/machine-b"));
    copy_tag(&a.store, BASE, &b.store, None).expect("base on B");
    Some((a, b))
}

/// A context directory at `dir` whose files belong to `uid` and were
/// changed at `mtime`.
fn context(dir: &Path, uid: u32, mtime: i64) -> PathBuf {
    std::fs::create_dir_all(dir.join("src")).expect("context");
    std::fs::write(dir.join("greeting.txt"), "hello\n").expect("file");
    std::fs::write(dir.join("src/main.txt"), "main\n").expect("file");
    for p in ["greeting.txt", "src/main.txt", "src", ""] {
        let path = dir.join(p);
        chown(&path, Some(uid), Some(uid)).expect("chown");
        let t = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: mtime,
                tv_nsec: 0,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: mtime,
                tv_nsec: 0,
            },
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            &path,
            &t,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .expect("utimes");
    }
    dir.to_owned()
}

const MULTI: &str = r#"FROM test.local/busybox:1 AS builder
WORKDIR /src
COPY . .
RUN echo "built from $(cat greeting.txt)" > /artifact && echo junk > /junk
FROM test.local/busybox:1
COPY --from=builder /artifact /app/artifact
COPY src/ /app/src/
RUN cat /app/artifact /app/src/main.txt > /app/out
CMD ["cat", "/app/out"]
"#;

fn read_index(store: &OciDir, d: &image_core::Descriptor) -> Index {
    Index::from_bytes(
        store
            .read_descriptor_to_vec(d, 1 << 20)
            .expect("index blob"),
    )
    .expect("index")
}

fn keys(r: &BuildResult) -> Vec<Digest> {
    r.cache_records
        .iter()
        .map(|c| c.key.digest().clone())
        .collect()
}

fn runs_executed(events: &[BuildEvent]) -> usize {
    let mut run_steps = Vec::new();
    let mut cached = std::collections::HashSet::new();
    for e in events {
        match e {
            BuildEvent::StepStarted { step, text, .. } if text.starts_with("RUN ") => {
                run_steps.push(*step);
            }
            BuildEvent::StepCached { step } => {
                cached.insert(*step);
            }
            _ => {}
        }
    }
    run_steps.iter().filter(|s| !cached.contains(s)).count()
}

#[test]
fn keys_do_not_depend_on_the_context_path_owner_mtime_or_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some((a, b)) = machines(tmp.path()) else {
        return;
    };
    let ctx_a = context(&tmp.path().join("checkout-a"), 1000, 1_800_000_000);
    let ctx_b = context(
        &tmp.path().join("ci/runner/checkout-b"),
        2345,
        1_900_000_000,
    );
    let (ra, _) = a.build(MULTI, &ctx_a, |_| {});
    let (rb, _) = b.build(MULTI, &ctx_b, |_| {});
    assert_eq!(ra.steps, 5);
    assert_eq!(keys(&ra).len(), 5, "every layer step has a record");
    assert_eq!(
        keys(&ra),
        keys(&rb),
        "the same project gives the same keys on another machine"
    );
    assert_eq!(ra.manifest.digest(), rb.manifest.digest());
}

/// Generated trees checked out by many "machines": random owners,
/// modes kept, random mtimes and paths of the checkout. A copy from the
/// context plans to the same digest on each (so its key is the same);
/// a change of content or mode gives another.
#[test]
fn context_copy_digests_ignore_the_machine_on_generated_trees() {
    use image_build::context::Context;
    use image_build::copy::{plan, CopySource, CopySpec};
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let spec = CopySpec::new(vec![".".into()], "/app/", "/");
    for round in 0..24u64 {
        let mut next = image_testsupport::xorshift(0x9e37_79b9_7f4a_7c15 ^ (round + 1));
        let files: Vec<(String, Vec<u8>, u32)> = (0..1 + next() % 12)
            .map(|i| {
                let dir = ["", "a/", "a/b/", "c/"][(next() % 4) as usize];
                let body = (0..next() % 64).map(|_| next() as u8).collect();
                let mode = [0o644, 0o755, 0o600][(next() % 3) as usize];
                (format!("{dir}f{i}"), body, mode)
            })
            .collect();
        let mut digests = Vec::new();
        for machine in 0..3 {
            let root = tmp.path().join(format!("r{round}/m{machine}/checkout"));
            for (path, body, mode) in &files {
                let p = root.join(path);
                std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
                std::fs::write(&p, body).expect("file");
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).expect("mode");
            }
            let uid = (next() % 60000) as u32;
            let mtime = 1_700_000_000 + (next() % 100_000_000) as i64;
            let paths: Vec<String> = std::iter::once(String::new())
                .chain(files.iter().map(|(p, _, _)| p.clone()))
                .collect();
            for p in paths {
                let p = root.join(p);
                chown(&p, Some(uid), Some(uid)).expect("chown");
                let t = rustix::fs::Timespec {
                    tv_sec: mtime,
                    tv_nsec: 0,
                };
                let times = rustix::fs::Timestamps {
                    last_access: t,
                    last_modification: t,
                };
                rustix::fs::utimensat(rustix::fs::CWD, &p, &times, rustix::fs::AtFlags::empty())
                    .expect("utimes");
            }
            let context = Context::open(&root, None).expect("context");
            digests.push(
                plan(&CopySource::Context(&context), &spec)
                    .expect("plan")
                    .digest,
            );
        }
        assert!(
            digests.windows(2).all(|w| w[0] == w[1]),
            "round {round}: {digests:?}"
        );
        // Content and mode still count.
        let root = tmp.path().join(format!("r{round}/m0/checkout"));
        let (first, _, _) = &files[0];
        std::fs::set_permissions(root.join(first), std::fs::Permissions::from_mode(0o700))
            .expect("mode");
        let context = Context::open(&root, None).expect("context");
        let changed = plan(&CopySource::Context(&context), &spec)
            .expect("plan")
            .digest;
        assert_ne!(changed, digests[0], "round {round}: a mode counts");
    }
}

#[test]
fn an_imported_cache_rebuilds_every_step_on_a_fresh_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some((a, b)) = machines(tmp.path()) else {
        return;
    };
    let ctx_a = context(&tmp.path().join("checkout-a"), 0, 1_800_000_000);
    let ctx_b = context(&tmp.path().join("other/checkout-b"), 0, 1_800_000_000);
    let (built, events) = a.build(MULTI, &ctx_a, |_| {});
    assert_eq!(runs_executed(&events), 2);

    let layout = OciDir::open_or_create(tmp.path().join("cache-max")).expect("layout");
    let records = select(&built.cache_records, CacheMode::Max, &built.manifest);
    let report = export(&a.store, &records, None, &layout, DEFAULT_NAME).expect("export");
    assert_eq!(report.records, 5);
    // The export is an index of our type, each entry keyed.
    let index = read_index(&layout, &report.descriptor);
    assert_eq!(
        index
            .inner()
            .artifact_type()
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some(CACHE_INDEX_ARTIFACT_TYPE)
    );
    assert!(index.manifests().iter().all(|m| m
        .annotations()
        .as_ref()
        .is_some_and(|a| a.contains_key(KEY_ANNOTATION))));

    let imported = import(&layout, DEFAULT_NAME, &b.store, None).expect("import");
    assert_eq!((imported.records, imported.foreign), (5, 0));
    let (rebuilt, events) = b.build(MULTI, &ctx_b, |_| {});
    assert_eq!(runs_executed(&events), 0, "no RUN executes on B");
    assert_eq!((rebuilt.steps, rebuilt.cached), (5, 5));
    assert_eq!(rebuilt.manifest.digest(), built.manifest.digest());
    assert_eq!(rebuilt.image_id, built.image_id);
}

#[test]
fn mode_min_covers_the_final_image_and_max_every_stage() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some((a, b)) = machines(tmp.path()) else {
        return;
    };
    let ctx = context(&tmp.path().join("checkout"), 0, 1_800_000_000);
    let (built, _) = a.build(MULTI, &ctx, |_| {});
    let min = select(&built.cache_records, CacheMode::Min, &built.manifest);
    // The final stage's three layer steps; not the builder's COPY and RUN.
    assert_eq!(min.len(), 3);
    let layout = OciDir::open_or_create(tmp.path().join("cache-min")).expect("layout");
    export(&a.store, &min, None, &layout, DEFAULT_NAME).expect("export");
    import(&layout, DEFAULT_NAME, &b.store, None).expect("import");
    let (rebuilt, events) = b.build(MULTI, &ctx, |_| {});
    // The builder stage's RUN runs again (its record was not exported);
    // it makes the same artifact, so the final stage is all cached.
    assert_eq!(runs_executed(&events), 1);
    assert_eq!((rebuilt.steps, rebuilt.cached), (5, 3));
    assert_eq!(rebuilt.manifest.digest(), built.manifest.digest());
}

#[test]
fn hostile_indexes_are_refused_or_skipped_and_tag_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = OciDir::open_or_create(tmp.path().join("src")).expect("src");
    let dst = OciDir::open_or_create(tmp.path().join("dst")).expect("dst");

    // Not a cache: an index of another artifact type.
    let other = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(OciMediaType::ImageIndex)
        .manifests(vec![])
        .build()
        .expect("index");
    let other = Index::new(other).expect("index");
    src.write_blob(other.raw()).expect("blob");
    src.set_tag("test.local/other:1", &other.descriptor())
        .expect("tag");
    let e = import(&src, "test.local/other:1", &dst, None).expect_err("not a cache");
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, ImportError::NotCache { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);

    // A real record beside forged entries: one under another key, one with
    // a key that is no digest, one without a key.
    let (key, out, report) = one_record_exported(&src, &tmp.path().join("out"));
    let index = read_index(&out, &report.descriptor);
    let real = index.manifests()[0].clone();
    let forged = |k: Option<&str>| {
        let mut d = real.clone();
        d.set_annotations(k.map(|k| HashMap::from([(KEY_ANNOTATION.to_owned(), k.to_owned())])));
        d
    };
    let wrong_key = Digest::sha256(b"another step").to_string();
    let hostile = index
        .modify(|i| {
            i.set_manifests(vec![
                forged(Some(&wrong_key)),
                forged(Some("sha256:../../etc")),
                forged(None),
                real.clone(),
            ]);
        })
        .expect("modify");
    out.write_blob(hostile.raw()).expect("blob");
    out.set_tag("test.local/hostile:1", &hostile.descriptor())
        .expect("tag");
    let r = import(&out, "test.local/hostile:1", &dst, None).expect("import");
    assert_eq!((r.records, r.foreign), (1, 3));
    let found = Cache::open(&dst).expect("cache");
    assert!(found.lookup(&key).expect("lookup").is_some());
    assert_eq!(found.stats().records, 1, "only the real record is tagged");
}

/// A record of one made-up layer in `src`'s cache, exported into a new
/// layout at `dir`: its key, the layout and the export's report.
fn one_record_exported(
    src: &OciDir,
    dir: &Path,
) -> (CacheKey, OciDir, image_build::cache::export::ExportReport) {
    let (mut keys, out, report) = records_exported(src, dir, 1);
    (keys.remove(0), out, report)
}

/// `n` records of made-up layers in `src`'s cache, exported into a new
/// layout at `dir`: their keys, the layout and the export's report.
fn records_exported(
    src: &OciDir,
    dir: &Path,
    n: usize,
) -> (
    Vec<CacheKey>,
    OciDir,
    image_build::cache::export::ExportReport,
) {
    let store_cache = Cache::open(src).expect("cache");
    let mut keys = Vec::new();
    for i in 0..n {
        let blob = format!("not really a layer {i}").into_bytes();
        let digest = src.write_blob(&blob).expect("layer");
        let layer = image_build::Layer {
            descriptor: image_core::manifest::descriptor(
                &image_core::MediaType::OciLayerGzip,
                &digest,
                blob.len() as u64,
            ),
            diff_id: Digest::sha256(&blob),
        };
        let by = if i == 0 {
            "RUN x".to_owned()
        } else {
            format!("RUN x{i}")
        };
        let key = CacheKey::base(None, &Platform::new("linux", "amd64")).child(&by, &[]);
        store_cache
            .record(
                &key,
                &CachedLayer {
                    layer,
                    created_by: by,
                    created: None,
                },
            )
            .expect("record");
        keys.push(key);
    }
    store_cache.flush().expect("flush");
    let used = store_cache.used();
    assert_eq!(used.len(), n);
    let out = OciDir::open_or_create(dir).expect("out");
    let report = export(src, &used, None, &out, DEFAULT_NAME).expect("export");
    (keys, out, report)
}

/// A source that notes, each time a record's manifest is read, how many
/// blobs the destination holds.
struct Watched<'a> {
    store: &'a OciDir,
    dst: &'a OciDir,
    manifests: Vec<Digest>,
    seen: std::sync::Mutex<Vec<usize>>,
}

impl image_store::Provider for Watched<'_> {
    fn reader(
        &self,
        digest: &Digest,
    ) -> Result<Box<dyn std::io::Read + Send>, image_store::ContentError> {
        if self.manifests.contains(digest) {
            let held = image_store::Manager::list(self.dst).expect("list").len();
            self.seen.lock().expect("seen").push(held);
        }
        self.store.reader(digest)
    }
    fn try_info(
        &self,
        digest: &Digest,
    ) -> Result<Option<image_store::content::Info>, image_store::ContentError> {
        self.store.try_info(digest)
    }
}

impl TagStore for Watched<'_> {
    fn tags(&self) -> Result<Vec<image_store::Tagged>, image_store::TagError> {
        self.store.tags()
    }
    fn set_tag(
        &self,
        name: &str,
        descriptor: &image_core::Descriptor,
    ) -> Result<(), image_store::TagError> {
        self.store.set_tag(name, descriptor)
    }
    fn remove_tag(&self, name: &str) -> Result<bool, image_store::TagError> {
        self.store.remove_tag(name)
    }
}

/// An import copies each record as soon as it has checked it, so it holds
/// one record's documents at a time: it read every record's manifest and
/// config first and kept them all (up to `MAX_RECORDS` of 8 MiB manifests
/// and 1 MiB configs: gigabytes, from a hostile cache) until it copied.
/// Each record's manifest is read once the records before it are in the
/// store.
#[test]
fn an_import_copies_each_record_before_it_reads_the_next() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = OciDir::open_or_create(tmp.path().join("src")).expect("src");
    let (keys, out, report) = records_exported(&src, &tmp.path().join("out"), 3);
    let manifests = read_index(&out, &report.descriptor)
        .manifests()
        .iter()
        .map(|d| d.digest().as_ref().parse().expect("digest"))
        .collect();
    let dst = OciDir::open_or_create(tmp.path().join("dst")).expect("dst");
    let watched = Watched {
        store: &out,
        dst: &dst,
        manifests,
        seen: std::sync::Mutex::new(Vec::new()),
    };
    let r = import(&watched, DEFAULT_NAME, &dst, None).expect("import");
    assert_eq!((r.records, r.copied), (3, 9));
    let seen = watched.seen.into_inner().expect("seen");
    assert_eq!(seen, [0, 3, 6], "blobs in the store at each manifest read");
    let found = Cache::open(&dst).expect("cache");
    for key in &keys {
        assert!(found.lookup(key).expect("lookup").is_some());
    }
}

/// An import reads each blob of the source once: a record's manifest and
/// config are checked, then written into the store from the bytes read
/// (not read, verified and parsed again), its layer copied once.
#[test]
fn an_import_reads_each_blob_of_the_source_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = OciDir::open_or_create(tmp.path().join("src")).expect("src");
    let (key, out, _) = one_record_exported(&src, &tmp.path().join("out"));
    let counting = CountingReads::new(&out);
    let dst = OciDir::open_or_create(tmp.path().join("dst")).expect("dst");
    let r = import(&counting, DEFAULT_NAME, &dst, None).expect("import");
    assert_eq!((r.records, r.foreign, r.copied), (1, 0, 3));
    let reads = counting.reads();
    assert_eq!(
        reads.len(),
        4,
        "the index and the record's three blobs: {reads:?}"
    );
    assert!(reads.values().all(|&n| n == 1), "{reads:?}");
    // What was written is the record, whole and verified.
    let found = Cache::open(&dst).expect("cache");
    assert!(found.lookup(&key).expect("lookup").is_some());
    let index = out.resolve_tag(DEFAULT_NAME).expect("index");
    for digest in reads
        .keys()
        .filter(|d| d.to_string() != index.digest().to_string())
    {
        dst.read_blob_to_vec(digest, 1 << 20)
            .expect("copied and verified");
    }
    // A second import finds every blob present: it writes none, and still
    // reads each once at most (to check the records).
    let again = import(&out, DEFAULT_NAME, &dst, None).expect("again");
    assert_eq!((again.records, again.copied), (1, 0));
}

/// What `imagectl build --cache-from` does, on a store whose seam records
/// every call: the import and the build go through one deferring handle
/// (`image_store::durability`). Neither syncs a blob as it writes it;
/// before each `index.json` write (the import's records, then the image's
/// tag) every blob renamed into the store since the last one is synced,
/// after its rename, and then its directory, once; when the build returns
/// no blob waits unsynced. So no tag reaches a blob a power loss could
/// take back, with one pass per tag instead of two syncs per blob.
#[test]
fn an_imported_build_syncs_its_blobs_in_one_pass_before_each_tag() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some((a, _)) = machines(tmp.path()) else {
        return;
    };
    let ctx = context(&tmp.path().join("checkout"), 0, 1_800_000_000);
    let (built, _) = a.build(MULTI, &ctx, |_| {});
    let layout = OciDir::open_or_create(tmp.path().join("cache")).expect("layout");
    let records = select(&built.cache_records, CacheMode::Max, &built.manifest);
    export(&a.store, &records, None, &layout, DEFAULT_NAME).expect("export");

    let fs = Arc::new(Recording::default());
    let dir = tmp.path().join("machine-c");
    let store = OciDir::open_or_create_with(dir.join("store"), fs.clone()).expect("store");
    copy_tag(&a.store, BASE, &store, None).expect("base on C");
    let c = Machine::with_store(&dir, store.deferring_sync());
    fs.take();
    import(&layout, DEFAULT_NAME, &c.store, None).expect("import");
    let (rebuilt, events) = c.build(MULTI, &ctx, |o| o.tags = vec!["test.local/c:1".into()]);
    assert_eq!(runs_executed(&events), 0);
    assert_eq!(rebuilt.manifest.digest(), built.manifest.digest());
    // What imagectl does last: nothing is left to sync.
    let calls = fs.take();
    c.store.sync_deferred().expect("sync");
    assert_eq!(fs.take(), [], "nothing pending after the tag");

    let blob = |op: Op| move |c: &&(Op, Target)| **c == (op, Target::Blob);
    let mut tags = 0;
    for part in calls.split_inclusive(|c| *c == (Op::Rename, Target::Index)) {
        let renamed = part.iter().filter(blob(Op::Rename)).count();
        if part.last() != Some(&(Op::Rename, Target::Index)) {
            assert_eq!(
                renamed, 0,
                "a blob left unsynced after the last tag: {part:?}"
            );
            continue;
        }
        tags += 1;
        assert!(renamed > 0, "each tag follows its blobs: {part:?}");
        let synced = part.iter().filter(blob(Op::SyncFile)).count();
        assert!(
            synced >= renamed,
            "every blob synced before the tag: {part:?}"
        );
        let last_rename = part.iter().rposition(|c| *c == (Op::Rename, Target::Blob));
        let first_sync = part
            .iter()
            .position(|c| matches!(c, (Op::SyncFile | Op::SyncDir, Target::Blob)));
        assert!(
            first_sync > last_rename,
            "no sync as blobs are written: {part:?}"
        );
        let dirs: Vec<usize> = (0..part.len())
            .filter(|&i| part[i] == (Op::SyncDir, Target::Blob))
            .collect();
        let last_file = part
            .iter()
            .rposition(|c| *c == (Op::SyncFile, Target::Blob));
        assert!(
            !dirs.is_empty() && dirs.len() <= 2 && dirs.iter().all(|&d| Some(d) > last_file),
            "the directories once, after the files: {part:?}"
        );
    }
    assert_eq!(tags, 2, "the import's records, then the image: {calls:?}");
}

// ---- cache mounts ------------------------------------------------------

/// Every file under `dir` (relative path, mode, content), links as targets.
fn tree(dir: &Path) -> Vec<(String, u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let rel = p.strip_prefix(dir).expect("below").display().to_string();
            let body = if m.is_symlink() {
                std::fs::read_link(&p)
                    .expect("link")
                    .into_os_string()
                    .into_vec()
            } else if m.is_dir() {
                stack.push(p.clone());
                Vec::new()
            } else {
                std::fs::read(&p).expect("read")
            };
            out.push((rel, m.permissions().mode(), body));
        }
    }
    out.sort();
    out
}

use std::os::unix::ffi::OsStringExt;

#[test]
fn cache_mounts_travel_with_the_cache_and_start_a_fresh_machine_warm() {
    use image_build::cache::mounts::MOUNT_ANNOTATION;
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(tmp.path().join("store")).expect("store");
    let root = tmp.path().join("machine-a/cache-mounts");
    std::fs::create_dir_all(root.join("apt/archives/partial")).expect("apt");
    std::fs::write(root.join("apt/archives/pkg.deb"), vec![7u8; 100_000]).expect("deb");
    std::os::unix::fs::symlink("pkg.deb", root.join("apt/archives/latest")).expect("link");
    std::fs::create_dir_all(root.join("%2Froot%2F%2Ecache%2Fgo-build/ab")).expect("go");
    std::fs::write(root.join("%2Froot%2F%2Ecache%2Fgo-build/ab/cd"), b"object").expect("obj");
    // Not mounts: a lock file, a directory being made, a link named like
    // a mount (to a directory outside, never read).
    std::fs::write(root.join("apt.lock"), b"").expect("lock");
    std::fs::create_dir(root.join(".new-123")).expect("new");
    std::fs::write(root.join(".new-123/half"), b"half").expect("half");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).expect("outside");
    std::fs::write(outside.join("secret"), b"SECRET").expect("secret");
    std::os::unix::fs::symlink(&outside, root.join("evil")).expect("evil");

    let layout = OciDir::open_or_create(tmp.path().join("cache")).expect("layout");
    let report = export(&store, &[], Some(&root), &layout, DEFAULT_NAME).expect("export");
    assert_eq!((report.records, report.mounts), (0, 2));
    let index = read_index(&layout, &report.descriptor);
    let names: Vec<&str> = index
        .manifests()
        .iter()
        .filter_map(|d| {
            d.annotations()
                .as_ref()?
                .get(MOUNT_ANNOTATION)
                .map(String::as_str)
        })
        .collect();
    assert_eq!(names, ["%2Froot%2F%2Ecache%2Fgo-build", "apt"]);
    // Deterministic: the same tree exports to the same index.
    let again = OciDir::open_or_create(tmp.path().join("cache2")).expect("layout");
    let second = export(&store, &[], Some(&root), &again, DEFAULT_NAME).expect("export");
    assert_eq!(second.descriptor, report.descriptor);

    // A fresh machine: its store and mount root are empty.
    let b_store = OciDir::open_or_create(tmp.path().join("machine-b/store")).expect("store");
    let b_root = tmp.path().join("machine-b/state/cache-mounts");
    let r = import(&layout, DEFAULT_NAME, &b_store, Some(&b_root)).expect("import");
    assert_eq!(
        (r.mounts.imported, r.mounts.kept, r.mounts.foreign),
        (2, 0, 0)
    );
    for name in ["apt", "%2Froot%2F%2Ecache%2Fgo-build"] {
        assert_eq!(tree(&b_root.join(name)), tree(&root.join(name)), "{name}");
    }
    let made: Vec<String> = std::fs::read_dir(&b_root)
        .expect("root")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        made.len(),
        2,
        "no lock, no half-made directory, no link: {made:?}"
    );

    // A mount the machine has is kept; a forged name is skipped.
    std::fs::write(b_root.join("apt/archives/pkg.deb"), b"local").expect("local");
    let hostile = index
        .modify(|i| {
            let mut m = i.manifests().clone();
            let mut forged = m[1].clone();
            forged.set_annotations(Some(HashMap::from([(
                MOUNT_ANNOTATION.to_owned(),
                "../../escape".to_owned(),
            )])));
            m.push(forged);
            i.set_manifests(m);
        })
        .expect("modify");
    layout.write_blob(hostile.raw()).expect("blob");
    layout
        .set_tag("test.local/hostile:1", &hostile.descriptor())
        .expect("tag");
    let r = import(&layout, "test.local/hostile:1", &b_store, Some(&b_root)).expect("import");
    assert_eq!(
        (r.mounts.imported, r.mounts.kept, r.mounts.foreign),
        (0, 2, 1)
    );
    assert_eq!(
        std::fs::read(b_root.join("apt/archives/pkg.deb")).expect("read"),
        b"local"
    );
    assert!(!tmp.path().join("machine-b/escape").exists());
}

/// What a killed build or import left in a cache mount root (a cache
/// directory being made, `.new-*`, or a mount being imported,
/// `.import-*`) was never removed: no export or import reads such a name,
/// and a package cache seeded or unpacked half-way can be large. The next
/// import removes each one no process holds (its maker's flock, which the
/// kernel releases when the maker dies); one being made now is left
/// alone, and so is everything else in the root.
#[test]
fn half_made_mount_directories_of_a_killed_maker_are_swept_by_the_next_import() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(tmp.path().join("store")).expect("store");
    let root = tmp.path().join("cache-mounts");
    for dir in [".new-apt-4242-0", ".import-x1y2z3", ".new-held-1-0", "apt"] {
        std::fs::create_dir_all(root.join(dir).join("sub")).expect("dir");
        std::fs::write(root.join(dir).join("sub/half"), vec![1u8; 1000]).expect("half");
    }
    std::fs::write(root.join("apt.lock"), b"").expect("lock");
    // Another process's, being made now: it holds the directory's flock.
    let held = std::fs::File::open(root.join(".new-held-1-0")).expect("open");
    rustix::fs::flock(&held, rustix::fs::FlockOperation::NonBlockingLockExclusive).expect("flock");

    let layout = OciDir::open_or_create(tmp.path().join("cache")).expect("layout");
    let none = tmp.path().join("no-mounts");
    export(&store, &[], Some(&none), &layout, DEFAULT_NAME).expect("export");
    import(&layout, DEFAULT_NAME, &store, Some(&root)).expect("import");
    let mut left: Vec<String> = std::fs::read_dir(&root)
        .expect("root")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".new-held-1-0", "apt", "apt.lock"]);
    assert!(root.join("apt/sub/half").exists());
}

/// A half-made directory the import's sweep cannot remove (here an empty
/// tmpfs left mounted inside it: `rmdir` is `EBUSY`) is skipped and
/// reported; before, the sweep's error failed this import and every later
/// one into that root, for good.
#[test]
fn a_half_made_mount_directory_that_cannot_be_removed_is_skipped_and_reported() {
    use image_overlay::mount::{Mount, Mounter, SysMounter};
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(tmp.path().join("store")).expect("store");
    let root = tmp.path().join("cache-mounts");
    let stuck = root.join(".import-stuck");
    std::fs::create_dir_all(stuck.join("m")).expect("dir");
    let tmpfs = Mount {
        fs_type: "tmpfs".into(),
        source: "tmpfs".into(),
        target: None,
        options: vec!["ro".into()],
    };
    if SysMounter.mount(&[tmpfs], &stuck.join("m")).is_err() {
        eprintln!("skipped: mounting a tmpfs needs CAP_SYS_ADMIN");
        return;
    }
    let layout = OciDir::open_or_create(tmp.path().join("cache")).expect("layout");
    let none = tmp.path().join("no-mounts");
    export(&store, &[], Some(&none), &layout, DEFAULT_NAME).expect("export");
    let r = import(&layout, DEFAULT_NAME, &store, Some(&root));
    SysMounter
        .unmount(&stuck.join("m"), false)
        .expect("unmount");
    let r = r.expect("import");
    assert_eq!(r.mounts.left, std::slice::from_ref(&stuck));
    assert!(stuck.is_dir());
}
