//! Copying from and into OCI layouts that a hostile party prepared:
//! symlinks inside the layout, FIFOs, links to `/dev/zero`, oversized
//! documents and blobs, unknown layout versions. Every case runs under a
//! time limit, so a hang fails the test instead of the suite.

mod archive_fixtures;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use archive_fixtures::*;
use image_core::error::Chain;
use image_core::{Classify, Compression, ErrorKind};
use image_store::{copy_tag, Ingester, OciDir, TagStore};

/// Runs `f` on a thread and waits at most `secs` for it: a case that hangs
/// (a FIFO opened for reading, a read without end) fails here.
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: still running after {secs} s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the case panicked"),
    }
}

/// A source layout at `dir/src` holding one tagged image of two layers;
/// returns its path and the image.
fn source(dir: &Path) -> (PathBuf, TestImage) {
    let path = dir.join("src");
    let store = OciDir::open_or_create(&path).expect("create source");
    let image = make_image(
        &store,
        &[
            (file_layer("etc/a", b"first layer"), Compression::Gzip),
            (file_layer("etc/b", &[7u8; 100_000]), Compression::None),
        ],
        "amd64",
    );
    store.set_tag("app:1", &image.manifest).expect("tag");
    (path, image)
}

fn blob_file(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').expect("digest");
    layout.join("blobs").join(alg).join(hex)
}

/// Replaces a file of the layout with a symlink to a copy of it outside
/// the layout (same bytes, so only the link is wrong).
fn move_out_and_link(file: &Path, outside: &Path) {
    std::fs::rename(file, outside).expect("move out");
    symlink(outside, file).expect("symlink");
}

/// Copies `app:1` from the layout at `src` into a fresh layout at `dst`.
fn copy_from(src: PathBuf, dst: PathBuf) -> Result<(), (ErrorKind, String)> {
    // The message is the whole chain, as imagectl prints it: each link
    // names only its own context, which every failure here is checked for.
    let s = OciDir::open(&src).map_err(|e| failure(&e))?;
    let d = OciDir::open_or_create(&dst).map_err(|e| failure(&e))?;
    copy_tag(&s, "app:1", &d, None)
        .map(|_| ())
        .map_err(|e| failure(&e))
}

/// The class and whole chain of `e`, which must say nothing twice.
fn failure<E: Classify + std::error::Error + 'static>(e: &E) -> (ErrorKind, String) {
    image_testsupport::chain::assert_said_once(e);
    (e.kind(), Chain(e).to_string())
}

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
}

/// A new layout `dir/name` whose `blobs/sha256` is a link to the empty
/// directory `dir/elsewhere`; returns both paths.
fn destination_with_linked_blobs(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let dst = dir.join(name);
    OciDir::open_or_create(&dst).expect("create destination");
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    std::fs::remove_dir(dst.join("blobs/sha256")).expect("rmdir");
    symlink(&elsewhere, dst.join("blobs/sha256")).expect("symlink");
    (dst, elsewhere)
}

#[test]
fn a_destination_whose_blobs_directory_is_a_symlink_is_not_written_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, _) = source(dir.path());
    let (dst, elsewhere) = destination_with_linked_blobs(dir.path(), "dst");

    let r = within(60, "copy", move || copy_from(src, dst));
    let (kind, msg) = r.expect_err("a symlinked blobs/sha256 must be refused");
    assert_eq!(kind, ErrorKind::Unsafe, "{msg}");
    assert!(msg.contains("symbolic link"), "{msg}");
    let written: Vec<_> = std::fs::read_dir(&elsewhere).expect("read").collect();
    assert!(
        written.is_empty(),
        "blobs written through the link: {written:?}"
    );
}

#[test]
fn a_destination_whose_blobs_directory_is_missing_and_linked_above_is_not_written_through() {
    // The link one level up: blobs -> elsewhere, so blobs/sha256 would be
    // created (and written) outside the layout.
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, _) = source(dir.path());
    let dst = dir.path().join("dst");
    OciDir::open_or_create(&dst).expect("create destination");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    std::fs::remove_dir_all(dst.join("blobs")).expect("rm");
    symlink(&elsewhere, dst.join("blobs")).expect("symlink");

    let (kind, msg) = within(60, "copy", move || copy_from(src, dst)).expect_err("refused");
    assert_eq!(kind, ErrorKind::Unsafe, "{msg}");
    let written: Vec<_> = std::fs::read_dir(&elsewhere).expect("read").collect();
    assert!(written.is_empty(), "written through the link: {written:?}");
}

#[test]
fn a_source_blob_that_is_a_symlink_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, image) = source(dir.path());
    let layer = blob_file(&src, image.layers[1].digest().as_ref());
    move_out_and_link(&layer, &dir.path().join("outside-layer"));

    let dst = dir.path().join("dst");
    let (kind, msg) = within(60, "copy", move || copy_from(src, dst)).expect_err("refused");
    assert_eq!(kind, ErrorKind::Unsafe, "{msg}");
    assert!(msg.contains("symbolic link"), "{msg}");
}

#[test]
fn a_source_blobs_directory_that_is_a_symlink_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, _) = source(dir.path());
    move_out_and_link(&src.join("blobs"), &dir.path().join("outside-blobs"));

    let dst = dir.path().join("dst");
    let (kind, msg) = within(60, "copy", move || copy_from(src, dst)).expect_err("refused");
    assert_eq!(kind, ErrorKind::Unsafe, "{msg}");
}

#[test]
fn a_source_index_json_that_is_a_symlink_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, _) = source(dir.path());
    move_out_and_link(&src.join("index.json"), &dir.path().join("outside-index"));

    let dst = dir.path().join("dst");
    let (kind, msg) = within(60, "copy", move || copy_from(src, dst)).expect_err("refused");
    assert_eq!(kind, ErrorKind::Unsafe, "{msg}");
    assert!(msg.contains("index.json"), "{msg}");
}

#[test]
fn a_source_oci_layout_that_is_a_symlink_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, _) = source(dir.path());
    move_out_and_link(&src.join("oci-layout"), &dir.path().join("outside-layout"));

    let e = within(60, "open", move || OciDir::open(&src).map(|_| ()))
        .expect_err("a symlinked oci-layout must be refused");
    assert_eq!(e.kind(), ErrorKind::Unsafe, "{e}");
    assert!(e.to_string().contains("oci-layout"), "{e}");
}

#[test]
fn a_source_blob_that_is_a_fifo_is_refused_without_waiting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, image) = source(dir.path());
    let layer = blob_file(&src, image.layers[0].digest().as_ref());
    std::fs::remove_file(&layer).expect("rm");
    mkfifo(&layer);

    let dst = dir.path().join("dst");
    let (kind, msg) = within(30, "copy", move || copy_from(src, dst)).expect_err("refused");
    assert_eq!(kind, ErrorKind::Unsafe, "{msg}");
    assert!(msg.contains("FIFO"), "{msg}");
}

#[test]
fn a_source_blob_linked_to_dev_zero_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, image) = source(dir.path());
    let layer = blob_file(&src, image.layers[0].digest().as_ref());
    std::fs::remove_file(&layer).expect("rm");
    symlink("/dev/zero", &layer).expect("symlink");

    // The destination is small, so that reading on without end stops at
    // ENOSPC instead of filling the disk.
    let scratch = Scratch::new(64);
    let dst = scratch.path().join("dst");
    let (kind, msg) = within(30, "copy", move || copy_from(src, dst)).expect_err("refused");
    assert_eq!(kind, ErrorKind::Unsafe, "{msg}");
}

#[test]
fn a_source_blob_that_is_a_device_node_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, image) = source(dir.path());
    let layer = blob_file(&src, image.layers[0].digest().as_ref());
    std::fs::remove_file(&layer).expect("rm");
    // /dev/zero's numbers (1, 5), as a node inside the layout.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &layer,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o644),
        rustix::fs::makedev(1, 5),
    )
    .expect("mknod");

    let scratch = Scratch::new(64);
    let dst = scratch.path().join("dst");
    let (kind, msg) = within(30, "copy", move || copy_from(src, dst)).expect_err("refused");
    assert_eq!(kind, ErrorKind::Unsafe, "{msg}");
    assert!(msg.contains("character device"), "{msg}");
}

/// Watches a file for being opened (inotify `IN_OPEN`, which an `O_PATH`
/// look at it does not raise): opening a device node can act (a watchdog
/// starts, a tape rewinds, a terminal becomes the controlling one), so the
/// store must refuse one without ever opening it.
struct OpenWatch(std::os::fd::OwnedFd);

impl OpenWatch {
    fn new(path: &Path) -> OpenWatch {
        use rustix::fs::inotify;
        let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)
            .expect("inotify");
        inotify::add_watch(&fd, path, inotify::WatchFlags::OPEN).expect("watch");
        OpenWatch(fd)
    }

    /// Whether the file was opened since the watch began.
    fn opened(&self) -> bool {
        let mut buf = [std::mem::MaybeUninit::uninit(); 1024];
        let mut reader = rustix::fs::inotify::Reader::new(&self.0, &mut buf);
        loop {
            match reader.next() {
                // `IN_IGNORED` comes too, when the file is removed.
                Ok(e) if e.events().contains(rustix::fs::inotify::ReadFlags::OPEN) => return true,
                Ok(_) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => return false,
                Err(e) => panic!("inotify: {e}"),
            }
        }
    }
}

fn mknod_dev_zero(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o644),
        rustix::fs::makedev(1, 5),
    )
    .expect("mknod");
}

#[test]
fn a_device_node_in_a_layout_is_refused_without_being_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Read: a blob of a source layout.
    let (src, image) = source(dir.path());
    let layer = blob_file(&src, image.layers[0].digest().as_ref());
    std::fs::remove_file(&layer).expect("rm");
    mknod_dev_zero(&layer);
    let watch = OpenWatch::new(&layer);
    let dst = dir.path().join("dst");
    let (kind, msg) = within(30, "copy", move || copy_from(src.clone(), dst)).expect_err("refused");
    assert_eq!(kind, ErrorKind::Unsafe, "{msg}");
    assert!(!watch.opened(), "copy opened the device node of a blob");

    // Written: the data file of an ingest a writer resumes, and gc's look
    // at it.
    let store = OciDir::open_or_create(dir.path().join("store")).expect("store");
    drop(store.writer("r").expect("writer"));
    let data = dir
        .path()
        .join("store/ingest")
        .join(image_core::Digest::sha256(b"r").hex())
        .join("data");
    std::fs::remove_file(&data).expect("rm");
    mknod_dev_zero(&data);
    let watch = OpenWatch::new(&data);
    let err = store.writer("r").map(|_| ()).expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Unsafe, "{err}");
    assert!(
        !watch.opened(),
        "a writer opened the device node of an ingest"
    );
    let gc = store
        .gc(&image_store::GcOptions::default().grace(Duration::ZERO))
        .expect("gc");
    assert_eq!(gc.ingests_removed, 1, "{gc:?}");
    assert!(!watch.opened(), "gc opened the device node of an ingest");

    // The index lock every tag and gc takes.
    let lock = dir.path().join("store/index.json.lock");
    let _ = std::fs::remove_file(&lock);
    mknod_dev_zero(&lock);
    let watch = OpenWatch::new(&lock);
    let err = store
        .gc(&image_store::GcOptions::default())
        .map(|_| ())
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Unsafe, "{err}");
    assert!(!watch.opened(), "the index lock's device node was opened");
}

#[test]
fn a_source_index_json_linked_to_dev_zero_or_a_fifo_is_refused() {
    for fifo in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, _) = source(dir.path());
        std::fs::remove_file(src.join("index.json")).expect("rm");
        if fifo {
            mkfifo(&src.join("index.json"));
        } else {
            symlink("/dev/zero", src.join("index.json")).expect("symlink");
        }
        let dst = dir.path().join("dst");
        let (kind, msg) = within(30, "copy", move || copy_from(src, dst)).expect_err("refused");
        assert_eq!(kind, ErrorKind::Unsafe, "fifo {fifo}: {msg}");
    }
}

#[test]
fn an_index_json_larger_than_the_document_limit_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, _) = source(dir.path());
    // A valid start and 9 MiB of padding: over the 8 MiB document limit.
    let mut big = br#"{"schemaVersion":2,"manifests":[],"x":""#.to_vec();
    big.extend(vec![b'a'; 9 << 20]);
    big.extend_from_slice(br#""}"#);
    std::fs::write(src.join("index.json"), &big).expect("write");

    let dst = dir.path().join("dst");
    let (kind, msg) = within(60, "copy", move || copy_from(src, dst)).expect_err("refused");
    assert_eq!(kind, ErrorKind::FailedPrecondition, "{msg}");
    assert!(msg.contains("limit of 8388608 bytes"), "{msg}");
}

#[test]
fn a_source_blob_larger_than_its_descriptor_is_read_no_further_than_its_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, image) = source(dir.path());
    let d = &image.layers[1];
    let layer = blob_file(&src, d.digest().as_ref());
    // The right bytes, then 32 MiB more.
    let mut bytes = std::fs::read(&layer).expect("read");
    bytes.resize(bytes.len() + (32 << 20), 0);
    std::fs::write(&layer, &bytes).expect("write");

    let dst = dir.path().join("dst");
    let dst2 = dst.clone();
    let (kind, msg) = within(60, "copy", move || copy_from(src, dst2)).expect_err("refused");
    assert_eq!(kind, ErrorKind::SizeMismatch, "{msg}");
    // What reached the destination's ingest is at most the descriptor's size.
    let store = OciDir::open(&dst).expect("destination");
    for ingest in store.ingests().expect("ingests") {
        assert!(
            ingest.offset <= d.size(),
            "ingest {} holds {} bytes, the descriptor {}",
            ingest.reference,
            ingest.offset,
            d.size()
        );
    }
}

#[test]
fn an_unknown_major_layout_version_is_refused() {
    for (version, ok) in [
        ("9.9.9", false),
        ("2.0.0", false),
        ("10.0.0", false),
        ("1.0.0", true),
        ("1.1.0", true),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, _) = source(dir.path());
        std::fs::write(
            src.join("oci-layout"),
            format!(r#"{{"imageLayoutVersion":"{version}"}}"#),
        )
        .expect("write");
        match OciDir::open(&src) {
            Ok(_) => assert!(ok, "{version} accepted"),
            Err(e) => {
                assert!(!ok, "{version}: {e}");
                assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
                assert!(e.to_string().contains(version), "{e}");
            }
        }
        // Creating over it refuses it too, and leaves it as it was.
        let r = OciDir::open_or_create(&src);
        assert_eq!(r.is_ok(), ok, "{version}");
        let after = std::fs::read_to_string(src.join("oci-layout")).expect("read");
        assert!(after.contains(version), "{after}");
    }
}

#[test]
fn a_source_without_oci_layout_is_not_a_layout_and_is_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, _) = source(dir.path());
    std::fs::remove_file(src.join("oci-layout")).expect("rm");
    let before = listing(&src);

    let e = OciDir::open(&src).expect_err("no oci-layout");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("no oci-layout"), "{e}");
    assert_eq!(listing(&src), before, "opening changed the directory");
}

#[test]
fn fifos_and_dev_zero_links_among_ingests_and_leases_neither_hang_nor_are_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = source(dir.path());
    let store = OciDir::open(&path).expect("open");
    store.create_lease("l1", &[], None).expect("lease");
    let mut w = store.writer("partial").expect("writer");
    std::io::Write::write_all(&mut w, b"some bytes").expect("write");
    drop(w);
    let ingest = std::fs::read_dir(path.join("ingest"))
        .expect("ingest dir")
        .next()
        .expect("one ingest")
        .expect("entry")
        .path();
    std::fs::remove_file(ingest.join("ref")).expect("rm");
    mkfifo(&ingest.join("ref"));
    std::fs::remove_file(ingest.join("data")).expect("rm");
    mkfifo(&ingest.join("data"));
    std::fs::remove_file(path.join("leases/l1.json")).expect("rm");
    symlink("/dev/zero", path.join("leases/l1.json")).expect("symlink");

    let s = store.clone();
    let ingests = within(30, "ingests", move || s.ingests().map(|v| v.len()));
    assert_eq!(
        ingests.expect("ingests"),
        0,
        "an unreadable ingest is not listed"
    );
    let s = store.clone();
    let leases = within(30, "leases", move || s.leases().map(|v| v.len()));
    assert_eq!(
        leases.expect("leases"),
        0,
        "an unreadable lease is not listed"
    );
    let s = store.clone();
    let fsck = within(30, "fsck", move || {
        s.fsck(&image_store::fsck::FsckOptions::default())
            .map(|r| r.stale_ingests.len())
            .map_err(|e| e.to_string())
    });
    assert_eq!(fsck, Ok(1), "fsck reports the ingest of FIFOs as stale");
    let s = store.clone();
    let options = image_store::GcOptions::default().grace(Duration::ZERO);
    let gc = within(30, "gc", move || {
        s.gc(&options)
            .map(|r| r.ingests_removed)
            .map_err(|e| e.to_string())
    });
    assert_eq!(gc, Ok(1), "gc removes the ingest of FIFOs, no writer's");
    assert!(!ingest.exists(), "the ingest of FIFOs is gone");
    assert!(
        path.join("leases/l1.json").symlink_metadata().is_ok(),
        "a foreign file among the leases is left alone"
    );
}

/// Junk in `ingest/` (what no writer of the store makes: an entry that is
/// a link or a file, a `data` or `ref` of any hostile kind) is garbage, as
/// containerd's gc aborts every ingest no one holds: fsck reports it and
/// gc removes it, never following a link or opening a FIFO, and never
/// stops on it; an ingest a writer holds stays.
#[test]
fn every_kind_of_junk_in_the_ingest_directory_is_collected_without_following_it() {
    let kinds = [
        "entry-link",
        "entry-file",
        "entry-fifo",
        "data-link-outside",
        "data-link-dev-zero",
        "data-fifo",
        "data-directory",
        "data-device",
        "ref-fifo",
        "ref-link-dev-zero",
    ];
    for kind in kinds {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _) = source(dir.path());
        let store = OciDir::open(&path).expect("open");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        std::fs::write(outside.join("data"), b"outside").expect("write");
        let mut held = store.writer("held").expect("writer");
        std::io::Write::write_all(&mut held, b"held bytes").expect("write");
        let mut w = store.writer("junk").expect("writer");
        std::io::Write::write_all(&mut w, b"junk bytes").expect("write");
        drop(w);
        let ingest = path
            .join("ingest")
            .join(image_core::Digest::sha256(b"junk").hex());
        assert!(ingest.join("data").exists(), "{kind}: the ingest layout");
        let (what, with) = kind.split_once('-').expect("kind");
        match what {
            "entry" => {
                std::fs::remove_dir_all(&ingest).expect("rm -r");
                match with {
                    "link" => symlink(&outside, &ingest).expect("symlink"),
                    "file" => std::fs::write(&ingest, b"a file").expect("write"),
                    _ => mkfifo(&ingest),
                }
            }
            file => {
                let file = ingest.join(file);
                match with {
                    "link-outside" => {
                        std::fs::remove_file(&file).expect("rm");
                        symlink(outside.join("data"), &file).expect("symlink");
                    }
                    "link-dev-zero" => replace(&file, Hostile::LinkToDevZero, &outside),
                    "fifo" => replace(&file, Hostile::Fifo, &outside),
                    "directory" => replace(&file, Hostile::Directory, &outside),
                    _ => replace(&file, Hostile::Device, &outside),
                }
            }
        }

        let s = store.clone();
        let fsck = within(30, kind, move || {
            s.fsck(&image_store::fsck::FsckOptions::default())
                .map(|r| r.stale_ingests.len())
                .map_err(|e| e.to_string())
        });
        assert_eq!(
            fsck,
            Ok(1),
            "{kind}: fsck reports the junk, not the held one"
        );
        let s = store.clone();
        let gc = within(30, kind, move || {
            s.gc(&image_store::GcOptions::default().grace(Duration::ZERO))
                .map(|r| r.ingests_removed)
                .map_err(|e| e.to_string())
        });
        assert_eq!(gc, Ok(1), "{kind}: gc removes the junk, not the held one");
        assert!(ingest.symlink_metadata().is_err(), "{kind}: junk left");
        assert_eq!(
            std::fs::read(outside.join("data")).expect("outside"),
            b"outside",
            "{kind}: a file outside was touched"
        );
        let s = store.clone();
        let ingests = within(30, kind, move || s.ingests().expect("ingests"));
        assert_eq!(ingests.len(), 1, "{kind}: {ingests:?}");
        assert_eq!(ingests[0].reference, "held", "{kind}");
        std::io::Write::write_all(&mut held, b" and more").expect("write");
        held.commit(None, None).expect("the held ingest commits");
    }
}

/// A store whose `ingest` or `leases` directory is a symlink is refused
/// (as a symlinked `blobs/sha256` is): fsck and gc neither list, lock nor
/// remove what is behind it.
#[test]
fn an_ingest_or_leases_directory_that_is_a_symlink_is_not_listed_through() {
    for name in ["ingest", "leases"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _) = source(dir.path());
        let store = OciDir::open(&path).expect("open");
        let outside = dir.path().join("outside");
        // What an unheld ingest and a stale held lease look like.
        std::fs::create_dir_all(outside.join("abc")).expect("mkdir");
        std::fs::write(outside.join("abc/ref"), b"r").expect("write");
        std::fs::write(outside.join("abc/data"), b"outside").expect("write");
        std::fs::write(outside.join("held-1.held"), b"").expect("write");
        let _ = std::fs::remove_dir_all(path.join(name));
        symlink(&outside, path.join(name)).expect("symlink");
        let before = snapshot(&outside);

        let fsck = store.fsck(&image_store::fsck::FsckOptions::default());
        assert_eq!(
            fsck.as_ref().map_err(|e| e.kind()).err(),
            Some(ErrorKind::Unsafe),
            "{name}: fsck {fsck:?}"
        );
        let gc = store.gc(&image_store::GcOptions::default().grace(Duration::ZERO));
        assert_eq!(
            gc.as_ref().map_err(|e| e.kind()).err(),
            Some(ErrorKind::Unsafe),
            "{name}: gc {gc:?}"
        );
        assert_eq!(snapshot(&outside), before, "{name}: outside changed");
        assert!(
            std::fs::symlink_metadata(path.join(name))
                .expect("link")
                .file_type()
                .is_symlink(),
            "{name}"
        );
    }
}

/// What a file or directory of a layout is replaced with.
#[derive(Debug, Clone, Copy)]
enum Hostile {
    /// A symlink to an identical copy outside the layout.
    LinkToCopy,
    LinkToDevZero,
    Fifo,
    Directory,
    /// A character device with /dev/zero's numbers.
    Device,
}

const HOSTILE: [Hostile; 5] = [
    Hostile::LinkToCopy,
    Hostile::LinkToDevZero,
    Hostile::Fifo,
    Hostile::Directory,
    Hostile::Device,
];

fn replace(path: &Path, with: Hostile, outside: &Path) {
    let is_dir = path.is_dir();
    match with {
        Hostile::LinkToCopy => return move_out_and_link(path, outside),
        _ if is_dir => std::fs::remove_dir_all(path).expect("rm -r"),
        _ => std::fs::remove_file(path).expect("rm"),
    }
    match with {
        Hostile::LinkToCopy => unreachable!(),
        Hostile::LinkToDevZero => symlink("/dev/zero", path).expect("symlink"),
        Hostile::Fifo => mkfifo(path),
        Hostile::Directory => std::fs::create_dir(path).expect("mkdir"),
        Hostile::Device => rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o644),
            rustix::fs::makedev(1, 5),
        )
        .expect("mknod"),
    }
}

/// Every file and directory of a source layout, each replaced in turn by
/// every hostile kind: the copy ends, within its time limit, refusing it
/// as unsafe.
#[test]
fn every_file_of_a_source_layout_replaced_by_anything_hostile_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (template, _) = source(&dir.path().join("template"));
    let mut targets: Vec<PathBuf> = listing(&template)
        .into_iter()
        .filter_map(|p| p.strip_prefix(&template).ok().map(Path::to_path_buf))
        // Not read by a copy from the layout: the lock and the store's own
        // working directories.
        .filter(|p| {
            !["index.json.lock", "ingest", "leases"]
                .iter()
                .any(|n| p.starts_with(n))
        })
        .collect();
    targets.sort();
    let mut cases = 0;
    for (i, target) in targets.iter().enumerate() {
        for (j, with) in HOSTILE.into_iter().enumerate() {
            let case = dir.path().join(format!("case-{i}-{j}"));
            let src = case.join("src");
            // An empty directory in place of a directory is no attack:
            // the blobs are just missing.
            let expected = if matches!(with, Hostile::Directory) && template.join(target).is_dir() {
                ErrorKind::NotFound
            } else {
                ErrorKind::Unsafe
            };
            copy_tree(&template, &src);
            replace(&src.join(target), with, &case.join("outside"));
            let scratch = Scratch::new(64);
            let dst = scratch.path().join("dst");
            let what = format!("{} as {with:?}", target.display());
            let r = within(30, &what, move || copy_from(src, dst));
            let (kind, msg) = r.expect_err(&what);
            assert_eq!(kind, expected, "{what}: {msg}");
            cases += 1;
        }
    }
    assert!(cases >= 30, "only {cases} cases");
}

/// Every directory and file a copy writes or locks in a destination
/// layout, replaced by a symlink to a copy outside it: the copy fails as
/// unsafe and nothing outside changes.
#[test]
fn every_path_of_a_destination_layout_linked_outside_is_not_written_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, _) = source(dir.path());
    for target in [
        "blobs",
        "blobs/sha256",
        "ingest",
        "index.json",
        "index.json.lock",
        "oci-layout",
    ] {
        let case = dir
            .path()
            .join(format!("case-{}", target.replace('/', "-")));
        let dst = case.join("dst");
        OciDir::open_or_create(&dst).expect("create destination");
        std::fs::create_dir_all(dst.join("ingest")).expect("mkdir");
        OciDir::open(&dst)
            .expect("open")
            .lock_index()
            .expect("lock file");
        let outside = case.join("outside");
        move_out_and_link(&dst.join(target), &outside);
        let before = snapshot(&case.join("outside"));

        let (s, d) = (src.clone(), dst.clone());
        let r = within(60, target, move || copy_from(s, d));
        let (kind, msg) = r.expect_err(target);
        assert_eq!(kind, ErrorKind::Unsafe, "{target}: {msg}");
        assert_eq!(
            snapshot(&outside),
            before,
            "{target}: written through the link"
        );
    }
}

/// Paths and contents of everything under `path` (a file or a tree).
fn snapshot(path: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    if path.is_file() {
        return vec![(path.to_path_buf(), std::fs::read(path).expect("read"))];
    }
    listing(path)
        .into_iter()
        .map(|p| {
            let bytes = if p.is_file() {
                std::fs::read(&p).expect("read")
            } else {
                Vec::new()
            };
            (p, bytes)
        })
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

/// Every path under `dir`, sorted.
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

use image_testsupport::scratch::Scratch;

/// Junk in `ingest/` deeper than gc descends (no writer makes a tree
/// deeper than two) cannot stop gc: it collects the rest, every time, and
/// leaves that tree to the operator; nothing outside is touched.
#[test]
fn a_junk_tree_too_deep_to_remove_does_not_stop_gc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = source(dir.path());
    let store = OciDir::open(&path).expect("open");
    let mut deep = path.join("ingest/deep/data");
    for _ in 0..40 {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).expect("mkdir -p");
    for round in 0..2 {
        let mut w = store.writer(&format!("dropped-{round}")).expect("writer");
        std::io::Write::write_all(&mut w, b"bytes").expect("write");
        drop(w);
        let gc = store
            .gc(&image_store::GcOptions::default())
            .map_err(|e| e.to_string());
        assert_eq!(
            gc.map(|r| r.ingests_removed),
            Ok(1),
            "round {round}: gc removes the dropped ingest beside the deep junk"
        );
    }
}

/// The unverified reader (for a caller that hashes what it reads, as an
/// unpack does) keeps every check made before a byte is read: it returns
/// the blob's bytes, at most the descriptor's size; refuses a stored size
/// that is not the descriptor's, a missing blob, a blob that is a symlink
/// or a FIFO (without hanging), each with its class.
#[test]
fn the_unverified_reader_keeps_the_checks_before_reading() {
    use std::io::Read;

    use image_core::{Descriptor, Digest, MediaType};
    use image_store::Provider;

    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("layout");
    let store = OciDir::open_or_create(&layout).expect("layout");
    let data = b"the bytes of a blob".to_vec();
    let digest = store.write_blob(&data).expect("write");
    let desc =
        |d: &Digest, size: u64| Descriptor::new((&MediaType::OciLayerGzip).into(), size, d.clone());
    let read = |d: &Descriptor| -> Result<Vec<u8>, ErrorKind> {
        let mut r = store.reader_for_unverified(d).map_err(|e| e.kind())?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("read");
        Ok(out)
    };
    assert_eq!(read(&desc(&digest, data.len() as u64)), Ok(data.clone()));
    // The same refusals, of the same class, as the verified reader's.
    let missing = Digest::sha256(b"not stored");
    for d in [desc(&digest, 3), desc(&missing, 10)] {
        let verified = store.reader_for(&d).map(|_| ()).map_err(|e| e.kind());
        assert!(verified.is_err());
        assert_eq!(read(&d).map(|_| ()), verified);
    }
    assert_eq!(read(&desc(&missing, 10)), Err(ErrorKind::NotFound));

    let path = blob_file(&layout, &digest.to_string());
    let outside = work.path().join("outside");
    move_out_and_link(&path, &outside);
    assert!(
        read(&desc(&digest, data.len() as u64)).is_err(),
        "a linked blob is read"
    );
    std::fs::remove_file(&path).expect("rm link");
    mkfifo(&path);
    let d = desc(&digest, data.len() as u64);
    let kind = within(10, "a FIFO blob", move || {
        store
            .reader_for_unverified(&d)
            .map(|_| ())
            .map_err(|e| e.kind())
    });
    assert!(kind.is_err(), "a FIFO blob is opened");
}

/// Where a seccomp filter refuses `openat2` (with `EPERM`, as older Docker
/// profiles answer a call they do not know, or `ENOSYS`, as newer ones
/// do), the store walks its paths one component at a time instead: a
/// copy between two layouts works as it does elsewhere, and a blob or a
/// blobs directory linked out of a layout is still refused, not followed.
/// Each errno in a child process of its own, as the fallback, once taken,
/// is remembered for the process.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[test]
fn where_a_seccomp_filter_refuses_openat2_the_store_walks_and_still_refuses_links() {
    image_testsupport::process::with_openat2_refused(
        "where_a_seccomp_filter_refuses_openat2_the_store_walks_and_still_refuses_links",
        refused_openat2_child,
    );
}

/// The child of the test above, under the filter (on this thread and the
/// threads it starts): the copies.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn refused_openat2_child() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, image) = source(dir.path());
    copy_from(src.clone(), dir.path().join("dst")).expect("copy without openat2");
    let copied = OciDir::open(dir.path().join("dst")).expect("open the copy");
    assert!(copied.resolve_tag("app:1").is_ok(), "the copy is tagged");

    let layer = blob_file(&src, image.layers[1].digest().as_ref());
    move_out_and_link(&layer, &dir.path().join("outside-layer"));
    let (kind, msg) = copy_from(src, dir.path().join("dst2")).expect_err("refused");
    assert_eq!(kind, ErrorKind::Unsafe, "{msg}");
    assert!(msg.contains("symbolic link"), "{msg}");

    std::fs::create_dir(dir.path().join("third")).expect("mkdir");
    let (src3, _) = source(&dir.path().join("third"));
    let (dst3, elsewhere) = destination_with_linked_blobs(dir.path(), "dst3");
    let (kind, msg) = copy_from(src3, dst3).expect_err("refused");
    assert_eq!(kind, ErrorKind::Unsafe, "{msg}");
    let written: Vec<_> = std::fs::read_dir(&elsewhere).expect("read").collect();
    assert!(written.is_empty(), "written through the link: {written:?}");
}
