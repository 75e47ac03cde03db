//! `pull --unpack` (a pull that unpacks each layer into its snapshot while
//! it downloads) against the real distribution registry: the same
//! snapshots as a pull then an unpack, through a cut and resumed layer; a
//! flipped byte leaves neither the blob nor a snapshot; a pull cancelled
//! in the middle of a layer leaves no active snapshot, and the pull that
//! resumes it gives the right snapshot.

mod common;
#[path = "parity_support/image.rs"]
#[allow(dead_code)]
mod tree;
#[path = "../src/cmd/unpack_sink.rs"]
mod unpack_sink;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::{Cleanup, Cli};
use image_core::error::classify;
use image_core::progress::Recorder;
use image_core::{DescriptorExt, Digest, ErrorKind, Interrupt, Reference, Tracker};
use image_overlay::{unpack_image, ImageUnpackOptions, SnapshotKind, StreamUnpacker};
use image_registry::{blocking, Client, PullOptions, RegistryConfig};
use image_runtime::snapshots::{Driver, Snapshots};
use image_store::{Ingester, OciDir, Provider, TagStore};
use image_testsupport::registry::{Fault, FaultProxy, Faults, Registry, RegistryOptions};
use tree::{tree_differences, Tree};
use unpack_sink::SnapshotSink;

/// Bytes of random content in the top layer (so it is the big one).
const BIG: usize = 3 * 1024 * 1024;

/// A registry with `cli/app:3` pushed by imagectl: three layers, busybox;
/// a layer with a hardlink to busybox (in the layer below), a whiteout and
/// a file; a layer of [`BIG`] random bytes. The registry, the pushing
/// Cli, the reference and the digest of the big layer.
fn pushed() -> Option<(Registry, Cli, String, Digest)> {
    let registry = Registry::start_or_skip(RegistryOptions::plain())?;
    let cli = Cli::new(Cleanup::Containers);
    let tmp = cli.tmp.path();
    let rootfs = tmp.join("rootfs");
    image_testsupport::rootfs::container_rootfs(&rootfs, &["sh", "echo", "ls"]);
    cli.append_shell_image(&rootfs, "app:1");
    let tar = image_testsupport::tar::TarBuf::new()
        .dir("bin/")
        .hardlink("bin/hl", "bin/busybox")
        .file("bin/.wh.echo", b"")
        .file("etc/motd", b"one pass\n")
        .end();
    let layer = tmp.join("layer2.tar.gz");
    std::fs::write(&layer, image_testsupport::codec::gzip(&tar)).unwrap();
    let layer = layer.to_str().unwrap();
    cli.ok(&[
        "append", "--base", "app:1", "--layer", layer, "--tag", "app:2",
    ]);
    let big = tmp.join("big");
    std::fs::create_dir_all(big.join("data")).unwrap();
    let mut next = image_testsupport::xorshift(7);
    let bytes: Vec<u8> = (0..BIG).map(|_| next() as u8).collect();
    std::fs::write(big.join("data/random"), bytes).unwrap();
    let big = big.to_str().unwrap();
    cli.ok(&[
        "append", "--base", "app:2", "--rootfs", big, "--tag", "app:3",
    ]);
    let dest = format!("{}/cli/app:3", registry.host_port());
    cli.ok(&["push", "app:3", &dest, "--insecure", "--quiet"]);
    let store = OciDir::open(cli.store()).unwrap();
    let image = image_store::image::resolve_image(&store, "app:3", None).unwrap();
    let top = image.layers().last().unwrap().digest().to_string();
    Some((registry, cli, dest, top.parse().unwrap()))
}

/// [`pushed`], reached through a fault proxy with one fault (made for
/// the big layer's digest).
struct Proxied {
    _registry: Registry,
    _pusher: Cli,
    dest: String,
    big: Digest,
    proxy: FaultProxy,
    /// `dest` through the proxy.
    through: String,
}

fn proxied(fault: impl FnOnce(&Digest) -> Fault) -> Option<Proxied> {
    let (registry, pusher, dest, big) = pushed()?;
    let proxy = FaultProxy::start(registry.addr(), Faults::none().with(fault(&big)));
    let through = dest.replace(&registry.host_port(), &proxy.host_port());
    Some(Proxied {
        _registry: registry,
        _pusher: pusher,
        dest,
        big,
        proxy,
        through,
    })
}

/// The layer directories of the snapshot chain ending at `top` in the
/// overlay snapshots at `dir`, bottom first.
fn layer_dirs(dir: &Path, top: &str) -> Vec<Tree> {
    let snaps = Snapshots::open(dir, Driver::Overlay).unwrap();
    let sn = snaps.snapshotter();
    let key = "test-view";
    let mounts = sn.view(key, Some(top)).unwrap();
    let mut dirs: Vec<Tree> = match mounts.as_slice() {
        [m] if m.fs_type == "overlay" => m
            .lowerdirs()
            .iter()
            .map(|d| Tree::from_dir(Path::new(d)))
            .collect(),
        [m] if m.fs_type == "bind" => vec![Tree::from_dir(Path::new(&m.source))],
        other => panic!("unexpected mounts {other:?}"),
    };
    sn.remove(key).unwrap();
    dirs.reverse();
    dirs
}

fn same_layers(a: &[Tree], b: &[Tree]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let diff = tree_differences("one pass", x, "pull then unpack", y);
        assert!(diff.is_empty(), "layer {i}: {diff:#?}");
    }
}

/// What a pull of `dest` by the library needs: its reference, a client
/// (plain HTTP on loopback), and a directory with a store and overlay
/// snapshots (`store`, `snapshots`).
fn pulling(
    dest: &str,
) -> (
    Reference,
    blocking::Client,
    tempfile::TempDir,
    OciDir,
    Snapshots,
) {
    let reference = Reference::parse_name(dest).unwrap();
    let client = blocking::Client::from_builder(
        Client::builder().config(RegistryConfig::new().with_loopback_http(true)),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = OciDir::open_or_create(dir.path().join("store")).unwrap();
    let snaps = Snapshots::open(&dir.path().join("snapshots"), Driver::Overlay).unwrap();
    (reference, client, dir, store, snaps)
}

/// `ours`, a one pass into the overlay snapshots at `dir/snapshots`, has
/// the chain IDs and layer trees of a plain unpack of `image` (made into
/// `dir/reference`).
fn same_as_a_plain_unpack(
    dir: &Path,
    store: &OciDir,
    image: &image_store::Image,
    ours: &image_overlay::ImageUnpackReport,
    options: &ImageUnpackOptions,
) {
    let other = Snapshots::open(&dir.join("reference"), Driver::Overlay).unwrap();
    let theirs = unpack_image(store, image, other.snapshotter(), options).unwrap();
    assert_eq!(ours.chain_ids, theirs.chain_ids);
    let top = ours.top().unwrap();
    same_layers(
        &layer_dirs(&dir.join("snapshots"), &top),
        &layer_dirs(&dir.join("reference"), &top),
    );
}

/// The chain IDs `imagectl unpack --driver overlay` prints, with how.
fn unpack_lines(cli: &Cli, reference: &str, dir: &Path) -> Vec<(String, String)> {
    let out = cli.ok(&[
        "unpack",
        reference,
        dir.to_str().unwrap(),
        "--driver",
        "overlay",
        "--quiet",
    ]);
    out.lines()
        .map(|l| {
            let (c, how) = l.split_once(' ').unwrap();
            (c.to_owned(), how.to_owned())
        })
        .collect()
}

#[test]
fn pull_unpack_gives_the_snapshots_of_pull_then_unpack_through_a_cut_layer() {
    let Some(p) = proxied(|big| Fault::cut_after(1_000_000).on(big.hex()).method("GET")) else {
        return;
    };
    let (dest, big, through) = (p.dest.as_str(), &p.big, p.through.as_str());

    let one = Cli::new(Cleanup::Containers);
    let out = one.ok(&["pull", through, "--unpack", "--insecure", "--quiet"]);
    // busybox and the big layer in one pass; the hardlink to a lower
    // layer needs that layer committed, so it is unpacked from the store.
    assert!(out.contains("3 layers unpacked (2 in one pass)"), "{out}");
    let ranged = p
        .proxy
        .exchanges()
        .iter()
        .filter(|e| e.range.is_some() && e.target.contains(big.hex()))
        .count();
    assert!(ranged >= 1, "no Range request: {:?}", p.proxy.exchanges());

    let two = Cli::new(Cleanup::Containers);
    two.ok(&["pull", dest, "--insecure", "--quiet"]);
    let two_dir = two.tmp.path().join("snapshots");
    let expected = unpack_lines(&two, dest, &two_dir);
    assert!(expected.iter().all(|(_, how)| how == "unpacked"));

    // What `run` and `unpack --driver` find: every snapshot there already.
    let one_dir = one.tmp.path().join("snapshots");
    let again = unpack_lines(&one, through, &one_dir);
    assert_eq!(
        again.iter().map(|(c, _)| c).collect::<Vec<_>>(),
        expected.iter().map(|(c, _)| c).collect::<Vec<_>>()
    );
    assert!(again.iter().all(|(_, how)| how == "reused"), "{again:?}");

    let top = &expected.last().unwrap().0;
    let ours = layer_dirs(&one_dir, top);
    let theirs = layer_dirs(&two_dir, top);
    assert_eq!(ours.len(), 3);
    assert!(ours[1].get("bin/hl").is_some());
    assert!(ours[2].get("data/random").is_some());
    same_layers(&ours, &theirs);
}

#[test]
fn a_flipped_byte_leaves_neither_the_blob_nor_a_snapshot() {
    let Some(p) = proxied(|big| Fault::flip_byte(1000).on(big.hex()).method("GET")) else {
        return;
    };
    let (big, through) = (&p.big, p.through.as_str());

    let cli = Cli::new(Cleanup::Containers);
    let err = cli.fails(&["pull", through, "--unpack", "--insecure", "--quiet"]);
    assert!(err.contains("digest"), "{err}");
    let snaps = Snapshots::open(&cli.tmp.path().join("snapshots"), Driver::Overlay).unwrap();
    let left = snaps.snapshotter().list().unwrap();
    assert!(left.is_empty(), "{left:?}");
    let store = OciDir::open(cli.store()).unwrap();
    assert!(!store.exists(big).unwrap());
    assert!(store.ingests().unwrap().is_empty());
    assert!(store.tags().unwrap().is_empty());
    cli.ok(&["fsck"]);
}

#[test]
fn a_pull_cancelled_mid_layer_leaves_no_active_snapshot_and_its_resume_unpacks_right() {
    let Some((_registry, _pusher, dest, big)) = pushed() else {
        return;
    };
    let (reference, client, tmp, store, snaps) = pulling(&dest);
    let options = ImageUnpackOptions::default();

    let unpacker = Arc::new(StreamUnpacker::new(snaps.shared(), &options));
    let interrupt = Interrupt::new();
    let stop_at = 2 * 1024 * 1024;
    let recorder = Arc::new(Recorder::stopping_at(interrupt.clone(), stop_at));
    let pull = PullOptions::default()
        .with_parallel(1)
        .with_tracker(Tracker::new(recorder.clone(), interrupt))
        .with_layer_sink(Arc::new(SnapshotSink(unpacker.clone())));
    let e = client.pull(&reference, &store, &pull).unwrap_err();
    assert_eq!(
        classify(&e, image_registry::kind_of),
        Some(ErrorKind::Cancelled),
        "{e:?}"
    );
    let done = recorder.items()[&big.to_string()].done;
    assert!(done >= stop_at && done < BIG as u64, "{done}");
    // When the pull returns, the cancelled layer's snapshot is gone; the
    // layers verified before it wait in the unpacker for a commit that
    // will not come, and go with it.
    let left = snaps.snapshotter().list().unwrap();
    assert!(
        left.iter()
            .all(|i| i.kind == SnapshotKind::Active && !i.name.ends_with(&big.to_string())),
        "{left:?}"
    );
    drop((pull, unpacker));
    let left = snaps.snapshotter().list().unwrap();
    assert!(left.is_empty(), "{left:?}");

    // Resumed from the ingest with Range: the resumed layer is unpacked
    // from the store, the others while they stream.
    let unpacker = Arc::new(StreamUnpacker::new(snaps.shared(), &options));
    let pull = PullOptions::default().with_layer_sink(Arc::new(SnapshotSink(unpacker.clone())));
    let report = client.pull(&reference, &store, &pull).unwrap();
    assert_eq!(report.resumed.len(), 1, "{report:?}");
    assert_eq!(report.resumed[0].0, big);
    let image = image_store::image::resolve_image(&store, &dest, None).unwrap();
    let ours = unpacker.finish(&store, &image, &options).unwrap();
    drop((pull, unpacker));
    assert_eq!(ours.unpacked.len(), 3);

    same_as_a_plain_unpack(tmp.path(), &store, &image, &ours, &options);
    // Only the committed layers are left.
    let left = snaps.snapshotter().list().unwrap();
    assert_eq!(left.len(), 3, "{left:?}");
}

/// Bytes of random content in each layer of [`one_slot_streams_one_layer_at_a_time_without_holding_a_download_back`]:
/// above the size that streams without a slot.
const SLOTTED: usize = image_overlay::stream_unpack::SLOTLESS_BELOW as usize + 512 * 1024;

/// A registry with `cli/four:N` pushed by imagectl: one layer per size in
/// `sizes`, bottom first, each a file of that many random bytes (so its
/// blob is about as large). The registry, the pushing Cli, the reference
/// and the layers' digests.
fn pushed_random(sizes: &[usize]) -> Option<(Registry, Cli, String, Vec<Digest>)> {
    let registry = Registry::start_or_skip(RegistryOptions::plain())?;
    let cli = Cli::new(Cleanup::Containers);
    let tmp = cli.tmp.path();
    let mut next = image_testsupport::xorshift(11);
    let mut base: Option<String> = None;
    for (i, size) in sizes.iter().enumerate() {
        let dir = tmp.join(format!("layer{i}"));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let bytes: Vec<u8> = (0..*size).map(|_| next() as u8).collect();
        std::fs::write(dir.join(format!("data/{i}")), bytes).unwrap();
        let tag = format!("four:{i}");
        let mut args = vec!["append", "--rootfs", dir.to_str().unwrap(), "--tag", &tag];
        if let Some(b) = &base {
            args.extend(["--base", b.as_str()]);
        }
        cli.ok(&args);
        base = Some(tag);
    }
    let top = base.expect("at least one layer");
    let dest = format!("{}/cli/{top}", registry.host_port());
    cli.ok(&["push", &top, &dest, "--insecure", "--quiet"]);
    let pushed = OciDir::open(cli.store()).unwrap();
    let layers: Vec<Digest> = image_store::image::resolve_image(&pushed, &top, None)
        .unwrap()
        .layers()
        .iter()
        .map(|d| d.checked_digest().unwrap())
        .collect();
    assert_eq!(layers.len(), sizes.len());
    Some((registry, cli, dest, layers))
}

/// A sink that counts the feeds open at once and holds the first one's
/// bytes until every other layer's blob is in the store.
#[derive(Debug)]
struct Held {
    inner: SnapshotSink,
    store: std::path::PathBuf,
    /// The layers the held one waits for (all but the first begun).
    layers: Vec<Digest>,
    live: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    first: AtomicBool,
    /// Whether the other blobs all arrived while the first was held.
    arrived: Arc<AtomicBool>,
}

struct HeldFeed {
    inner: Option<Box<dyn image_registry::LayerFeed>>,
    /// (the store, the other layers) for the first feed, until its first
    /// write.
    hold: Option<(std::path::PathBuf, Vec<Digest>)>,
    live: Arc<AtomicUsize>,
    arrived: Arc<AtomicBool>,
}

impl image_registry::LayerSink for Held {
    fn begin(&self, blob: &image_core::Descriptor) -> Option<Box<dyn image_registry::LayerFeed>> {
        let inner = image_registry::LayerSink::begin(&self.inner, blob)?;
        let n = self.live.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        let hold = self.first.swap(false, Ordering::SeqCst).then(|| {
            let this = blob.checked_digest().ok();
            let others = self.layers.iter().filter(|d| Some(*d) != this.as_ref());
            (self.store.clone(), others.cloned().collect())
        });
        Some(Box::new(HeldFeed {
            inner: Some(inner),
            hold,
            live: self.live.clone(),
            arrived: self.arrived.clone(),
        }))
    }
}

impl image_registry::LayerFeed for HeldFeed {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if let Some((store, others)) = self.hold.take() {
            // Generous: the downloads are on loopback.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            let store = OciDir::open(store).unwrap();
            while std::time::Instant::now() < deadline {
                if others.iter().all(|d| store.exists(d).unwrap()) {
                    self.arrived.store(true, Ordering::SeqCst);
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        self.inner.as_mut().unwrap().write(bytes)
    }

    fn verified(mut self: Box<Self>, blob: &image_store::VerifiedBlob) {
        self.inner.take().unwrap().verified(blob);
    }
}

impl Drop for HeldFeed {
    fn drop(&mut self) {
        // After `verified` (its unpack joined) or the feed's own drop.
        drop(self.inner.take());
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// With one slot, four layers above the slotless size stream one at a
/// time, and no download waits for the slot: while the first layer's
/// feed is held, the three others are downloaded whole into the store
/// (they get no feed); `finish` unpacks them from the store, and the
/// snapshots are those of a plain unpack.
#[test]
fn one_slot_streams_one_layer_at_a_time_without_holding_a_download_back() {
    let Some((_registry, _cli, dest, layers)) = pushed_random(&[SLOTTED; 4]) else {
        return;
    };

    let (reference, client, work, store, snaps) = pulling(&dest);
    let options = ImageUnpackOptions::default().with_parallelism(1);
    let unpacker = Arc::new(StreamUnpacker::bounded(snaps.shared(), &options));
    let (peak, arrived) = (Arc::default(), Arc::default());
    let sink = Held {
        inner: SnapshotSink(unpacker.clone()),
        store: work.path().join("store"),
        layers,
        live: Arc::default(),
        peak: Arc::clone(&peak),
        first: AtomicBool::new(true),
        arrived: Arc::clone(&arrived),
    };
    let pull = PullOptions::default().with_layer_sink(Arc::new(sink));
    client.pull(&reference, &store, &pull).unwrap();
    let peak = peak.load(Ordering::SeqCst);
    assert_eq!(peak, 1, "{peak} layers streamed at once with one slot");
    assert!(
        arrived.load(Ordering::SeqCst),
        "the other downloads waited for the held layer"
    );
    let image = image_store::image::resolve_image(&store, &dest, None).unwrap();
    let ours = unpacker.finish(&store, &image, &options).unwrap();
    assert_eq!(ours.unpacked.len(), 4);
    assert_eq!(unpacker.streamed().len(), 1);
    drop((pull, unpacker));

    same_as_a_plain_unpack(work.path(), &store, &image, &ours, &options);
    // Only the committed layers are left.
    let left = snaps.snapshotter().list().unwrap();
    assert_eq!(left.len(), 4, "{left:?}");
}

/// With one slot and the store given, a layer declined for want of the
/// slot is unpacked from the store as soon as its blob is stored and the
/// slot is free, not when `finish` is called: the last layer's download
/// (a small layer, which needs no slot) is held until each of the three
/// large layers below it has its snapshot, so at least two of them were
/// unpacked from the store before the pull could end. The snapshots are
/// those of a plain unpack.
#[test]
fn a_declined_layer_is_unpacked_from_the_store_before_the_pull_ends() {
    let Some((_registry, _cli, dest, layers)) = pushed_random(&[SLOTTED, SLOTTED, SLOTTED, 1000])
    else {
        return;
    };
    let (reference, client, work, store, snaps) = pulling(&dest);
    let (options, unpacker) = one_slot_with_store(&snaps, &store);
    let seen = Arc::new(AtomicBool::new(false));
    let sink = HoldLast {
        inner: SnapshotSink(unpacker.clone()),
        snapshots: snaps.shared(),
        last: layers[3].clone(),
        below: layers[..3].to_vec(),
        seen: seen.clone(),
    };
    let pull = PullOptions::default().with_layer_sink(Arc::new(sink));
    client.pull(&reference, &store, &pull).unwrap();
    assert!(
        seen.load(Ordering::SeqCst),
        "the large layers were not all unpacked while the last download was held"
    );
    let image = image_store::image::resolve_image(&store, &dest, None).unwrap();
    let ours = unpacker.finish(&store, &image, &options).unwrap();
    assert_eq!(ours.unpacked.len(), 4);
    // One large layer and the small one streamed; the two others came
    // from the store.
    assert_eq!(unpacker.streamed().len(), 2, "{:?}", unpacker.streamed());
    drop((pull, unpacker));

    same_as_a_plain_unpack(work.path(), &store, &image, &ours, &options);
    let left = snaps.snapshotter().list().unwrap();
    assert_eq!(left.len(), 4, "{left:?}");
}

/// A sink that holds the first bytes of the `last` layer until every
/// layer `below` has a snapshot (streamed or unpacked from the store).
struct HoldLast {
    inner: SnapshotSink,
    snapshots: Arc<dyn image_overlay::Snapshotter>,
    last: Digest,
    below: Vec<Digest>,
    /// Whether they all had one while the last layer was held.
    seen: Arc<AtomicBool>,
}

impl std::fmt::Debug for HoldLast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoldLast")
            .field("last", &self.last)
            .finish()
    }
}

struct HoldLastFeed {
    inner: Box<dyn image_registry::LayerFeed>,
    /// For the last layer's feed, until its first write.
    hold: Option<(Arc<dyn image_overlay::Snapshotter>, Vec<Digest>)>,
    seen: Arc<AtomicBool>,
}

impl image_registry::LayerSink for HoldLast {
    fn begin(&self, blob: &image_core::Descriptor) -> Option<Box<dyn image_registry::LayerFeed>> {
        let inner = image_registry::LayerSink::begin(&self.inner, blob)?;
        let hold = (blob.checked_digest().ok().as_ref() == Some(&self.last))
            .then(|| (self.snapshots.clone(), self.below.clone()));
        Some(Box::new(HoldLastFeed {
            inner,
            hold,
            seen: self.seen.clone(),
        }))
    }
}

impl image_registry::LayerFeed for HoldLastFeed {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if let Some((snapshots, below)) = self.hold.take() {
            // Generous: the downloads are on loopback.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while std::time::Instant::now() < deadline {
                let names: Vec<String> = snapshots
                    .list()
                    .unwrap()
                    .into_iter()
                    .map(|i| i.name)
                    .collect();
                let has = |d: &Digest| names.iter().any(|n| n.ends_with(&d.to_string()));
                if below.iter().all(has) {
                    self.seen.store(true, Ordering::SeqCst);
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        self.inner.write(bytes)
    }

    fn verified(self: Box<Self>, blob: &image_store::VerifiedBlob) {
        self.inner.verified(blob);
    }
}

/// The discarding feed the sink gives a layer the unpacker declined does
/// not keep the unpacker (whose last reference, dropped, joins its unpacks
/// from the store: not on a download's thread): only the caller and the
/// sink hold it; once both let go, the unpacker is gone and the feed's
/// `verified` unpacks nothing.
#[test]
fn a_declined_layers_feed_does_not_keep_the_unpacker() {
    let dir = tempfile::tempdir().unwrap();
    let store = OciDir::open_or_create(dir.path().join("store")).unwrap();
    let snaps = Snapshots::open(&dir.path().join("snapshots"), Driver::Overlay).unwrap();
    let (_, unpacker) = one_slot_with_store(&snaps, &store);
    let sink = SnapshotSink(unpacker.clone());
    let blobs: Vec<Vec<u8>> = (0..2u8)
        .map(|i| vec![i; image_overlay::stream_unpack::SLOTLESS_BELOW as usize + 1])
        .collect();
    let layer = |bytes: &[u8]| {
        image_core::manifest::descriptor(
            &image_core::MediaType::OciLayer,
            &Digest::sha256(bytes),
            bytes.len() as u64,
        )
    };
    let first = image_registry::LayerSink::begin(&sink, &layer(&blobs[0])).expect("the slot");
    let second = image_registry::LayerSink::begin(&sink, &layer(&blobs[1])).expect("declined");
    assert!(!unpacker.declined(&layer(&blobs[0])));
    assert_eq!(
        Arc::strong_count(&unpacker),
        2,
        "the caller's and the sink's"
    );

    drop((sink, unpacker));
    let mut w = store.writer("second").unwrap();
    std::io::Write::write_all(&mut w, &blobs[1]).unwrap();
    let proof = w
        .commit_verified(blobs[1].len() as u64, &Digest::sha256(&blobs[1]))
        .unwrap();
    second.verified(&proof);
    // Only the first layer's snapshot, which its feed removes.
    assert_eq!(snaps.snapshotter().list().unwrap().len(), 1);
    drop(first);
    assert!(snaps.snapshotter().list().unwrap().is_empty());
}

/// Options of one slot and an unpacker made with them that unpacks a
/// declined layer from `store` into `snaps`.
fn one_slot_with_store(
    snaps: &Snapshots,
    store: &OciDir,
) -> (ImageUnpackOptions, Arc<StreamUnpacker>) {
    let options = ImageUnpackOptions::default().with_parallelism(1);
    let provider: Arc<dyn Provider + Send + Sync> = Arc::new(store.clone());
    let unpacker = StreamUnpacker::bounded_with_store(snaps.shared(), provider, &options);
    (options, Arc::new(unpacker))
}
