//! The async wrappers (`nonblocking`, feature `tokio`) against real
//! snapshots, as root: a whole lifecycle through them, and a dropped image
//! preparation that stops and leaves nothing. A missing tool or privilege
//! skips a test loudly (eprintln) unless CI=true, where it fails.

mod common;

use std::future::Future;
use std::io::Read;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image_core::progress::{Interrupt, Progress, Tracker};
use image_core::Platform;
use image_overlay::{append_dir, ConfigChanges, ImageUnpackOptions};
use image_runtime::snapshots::{Driver, Snapshots};
use image_runtime::{
    nonblocking, CommitOptions, Container, ContainerBuilder, ContainerError, ContainerStatus,
    NativeOptions, Runtime,
};
use image_store::{OciDir, TagStore};

const BIG: &str = "test.local/big:1";

struct Fixture {
    tmp: tempfile::TempDir,
    store: OciDir,
}

impl Fixture {
    /// The fixture, its runtime and a tokio runtime, when the test can run
    /// (root, busybox-static).
    fn ready() -> Option<(Fixture, Runtime, tokio::runtime::Runtime)> {
        if !common::ready(&[]) {
            return None;
        }
        let f = Fixture::new();
        let runtime = f.runtime();
        let tokio = tokio::runtime::Builder::new_multi_thread().build().unwrap();
        Some((f, runtime, tokio))
    }

    /// BIG prepared by `runtime` through the wrapper, with `options`.
    fn prepare(
        &self,
        runtime: &Runtime,
        options: ImageUnpackOptions,
    ) -> impl Future<Output = Result<ContainerBuilder, ContainerError>> + use<> {
        nonblocking::container_from_image_with(
            runtime.clone(),
            self.store.clone(),
            BIG.to_owned(),
            None,
            options,
        )
    }

    /// A container of BIG running `/busybox true`, prepared and created
    /// through the wrappers.
    async fn create(&self, runtime: &Runtime) -> Container {
        let builder = self
            .prepare(runtime, ImageUnpackOptions::default())
            .await
            .unwrap();
        nonblocking::create(builder.cmd(["/busybox", "true"]))
            .await
            .unwrap()
    }

    /// A store holding BIG: one layer of 8 MiB of noise and busybox-static.
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let store = OciDir::open_or_create(tmp.path().join("store")).unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        // Bytes gzip cannot shrink.
        let mut noise = Vec::new();
        let urandom = std::fs::File::open("/dev/urandom").unwrap();
        urandom.take(8 << 20).read_to_end(&mut noise).unwrap();
        std::fs::write(src.join("noise"), noise).unwrap();
        std::fs::copy("/bin/busybox", src.join("busybox")).unwrap();
        let host = Platform::host();
        append_dir(&store, None, &src, &host, &ConfigChanges::default(), BIG).unwrap();
        std::fs::remove_dir_all(&src).unwrap();
        Fixture { tmp, store }
    }

    fn runtime(&self) -> Runtime {
        let snapshots = Snapshots::open(&self.tmp.path().join("snapshots"), Driver::Copy).unwrap();
        Runtime::native(&self.tmp.path().join("state"), NativeOptions::default())
            .unwrap()
            .with_snapshots(snapshots)
            .unwrap()
    }
}

/// A progress sink that, once some bytes of an item are done, tells the
/// test and then holds the unpack until the interrupt is set (at most a
/// minute, so a wrapper that never sets it lets the unpack finish, and the
/// test sees what it left); it records the items finished.
struct Gate {
    reached: Mutex<Option<mpsc::Sender<()>>>,
    interrupt: Interrupt,
    finished: Mutex<Vec<String>>,
}

impl Progress for Gate {
    fn item_progress(&self, _item: &str, done: u64) {
        if done == 0 {
            return;
        }
        let Some(tx) = self.reached.lock().unwrap().take() else {
            return;
        };
        let _ = tx.send(());
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.interrupt.is_set() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn item_finished(&self, item: &str) {
        self.finished.lock().unwrap().push(item.to_owned());
    }
}

/// Polls `future` on `tokio` until the gate behind `reached` holds its
/// operation, then drops it (the operation must not have finished).
fn drop_when_reached<F: Future>(
    tokio: &tokio::runtime::Runtime,
    future: F,
    reached: &mpsc::Receiver<()>,
) {
    tokio.block_on(async move {
        let mut future = Box::pin(future);
        loop {
            let finished = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(Future::poll(future.as_mut(), cx).is_ready())
            })
            .await;
            assert!(!finished, "the operation finished before it was dropped");
            if reached.try_recv().is_ok() {
                break;
            }
            tokio::task::yield_now().await;
        }
        // `future` is dropped here, with its operation held by the gate.
    });
}

impl Gate {
    /// A gate on `interrupt`, and the receiver it signals.
    fn new(interrupt: &Interrupt) -> (Arc<Gate>, mpsc::Receiver<()>) {
        let (tx, reached) = mpsc::channel();
        let gate = Arc::new(Gate {
            reached: Mutex::new(Some(tx)),
            interrupt: interrupt.clone(),
            finished: Mutex::new(Vec::new()),
        });
        (gate, reached)
    }
}

/// Dropping the future of an image preparation sets its interrupt; the
/// unpack stops at its next chunk, leaves no snapshot, finishes no layer
/// and makes no container.
#[test]
fn dropping_an_image_preparation_future_stops_it_and_leaves_nothing() {
    let Some((f, runtime, tokio)) = Fixture::ready() else {
        return;
    };
    let interrupt = Interrupt::new();
    let (gate, reached) = Gate::new(&interrupt);
    let options = ImageUnpackOptions::default()
        .with_parallelism(1)
        .with_tracker(Tracker::new(gate.clone(), interrupt.clone()));
    let prepare = f.prepare(&runtime, options);
    drop_when_reached(&tokio, prepare, &reached);
    assert!(interrupt.is_set(), "dropping the future sets the interrupt");
    // Dropping the tokio runtime waits for its blocking tasks.
    drop(tokio);
    let finished = gate.finished.lock().unwrap().clone();
    assert!(finished.is_empty(), "{finished:?}");
    let sn = runtime.snapshots().unwrap().snapshotter();
    assert!(sn.list().unwrap().is_empty(), "{:?}", sn.list());
    assert!(runtime.list().unwrap().is_empty());
}

/// A container's life through the wrappers: prepared, created, committed
/// (the container comes back), deleted, and gc finds nothing left.
#[test]
fn a_container_prepared_created_and_committed_through_the_wrappers() {
    let Some((f, runtime, tokio)) = Fixture::ready() else {
        return;
    };
    let (committed, container) = tokio.block_on(async {
        let container = f.create(&runtime).await;
        let options = CommitOptions::new().tag("test.local/committed:1");
        nonblocking::commit(container, f.store.clone(), options)
            .await
            .unwrap()
    });
    assert_eq!(runtime.list().unwrap().len(), 1);
    let tagged = f.store.resolve_tag("test.local/committed:1").unwrap();
    assert_eq!(tagged.digest(), committed.manifest.descriptor().digest());
    container.delete().unwrap();
    assert!(tokio
        .block_on(nonblocking::gc(runtime.clone()))
        .unwrap()
        .is_empty());
    assert!(runtime.list().unwrap().is_empty());
}

/// Dropping the future of a commit sets its pack tracker's interrupt: the
/// layer stops being written, no tag is set, and the container is still
/// there, created.
#[test]
fn dropping_a_commit_future_stops_it_and_tags_nothing() {
    let Some((f, runtime, tokio)) = Fixture::ready() else {
        return;
    };
    let container = tokio.block_on(f.create(&runtime));
    // Changes worth packing: the noise again, in the container's own
    // snapshot (a copy snapshot is one directory, bound as the root).
    let key = &container.record().snapshot.as_ref().unwrap().key;
    let mounts = runtime
        .snapshots()
        .unwrap()
        .snapshotter()
        .mounts(key)
        .unwrap();
    let upper = std::path::PathBuf::from(&mounts[0].source);
    std::fs::copy(upper.join("noise"), upper.join("changed")).unwrap();
    let id = container.id().to_owned();

    let interrupt = Interrupt::new();
    let (gate, reached) = Gate::new(&interrupt);
    let options = CommitOptions::new()
        .tag("test.local/never:1")
        .with_tracker(Tracker::new(gate.clone(), interrupt.clone()));
    let commit = nonblocking::commit(container, f.store.clone(), options);
    drop_when_reached(&tokio, commit, &reached);
    assert!(interrupt.is_set(), "dropping the future sets the interrupt");
    drop(tokio);
    let finished = gate.finished.lock().unwrap().clone();
    assert!(finished.is_empty(), "{finished:?}");
    assert!(f.store.resolve_tag("test.local/never:1").is_err());
    let container = runtime.load(&id).unwrap();
    assert_eq!(container.status(), ContainerStatus::Created);
    container.delete().unwrap();
}
