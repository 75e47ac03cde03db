//! Containers from images in a store, through real snapshots (overlay and
//! copy), real mounts and the real runc, as root; and commit. Images are
//! made in the test from Debian's busybox-static. A missing tool or
//! privilege skips a test loudly (eprintln) unless CI=true, where it fails.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use image_core::config::History;
use image_core::{Classify, Compression, ErrorKind, Platform};
use image_overlay::snapshot::{Kind, Snapshotter};
use image_overlay::{diff_dirs, pack_dir, PackOptions};
use image_runtime::snapshots::{Driver, Snapshots};
use image_runtime::state::ContainerStatus;
use image_runtime::CommitOptions;
use image_runtime::{
    CommitError, Container, ContainerError, Exit, RunOptions, Runtime, RuntimeKind, Stdio,
};
use image_store::mutate::{append, NewLayer};
use image_store::{Ingester, OciDir, TagStore};

use common::{assert_unmounted, mount_count, pretend_owner_died, TIMEOUT};

const APPLETS: &[&str] = &[
    "sh", "id", "env", "hostname", "ls", "cat", "pwd", "echo", "mkdir", "rm", "touch", "test",
    "true", "false", "sleep",
];

/// Whether the test can run: root, runc, busybox-static.
fn ready() -> bool {
    common::ready(&["runc"])
}

/// The shared busybox root filesystem plus `data/keep`.
fn busybox_rootfs(dir: &Path) {
    common::busybox_rootfs(dir, APPLETS);
    std::fs::write(dir.join("data/keep"), "kept\n").unwrap();
}

fn history(by: &str) -> History {
    History {
        created_by: Some(by.to_owned()),
        ..History::default()
    }
}

/// Packs `write` (a layer written by pack_dir or diff_dirs) into the store.
fn store_layer(
    store: &OciDir,
    by: &str,
    write: impl FnOnce(&mut dyn std::io::Write) -> image_overlay::PackReport,
) -> NewLayer {
    let mut w = store
        .writer(&image_store::content::unique_reference())
        .unwrap();
    let r = write(&mut w);
    w.commit(Some(r.size), Some(&r.digest)).unwrap();
    NewLayer {
        media_type: r.media_type,
        digest: r.digest,
        size: r.size,
        diff_id: r.diff_id,
        history: history(by),
    }
}

const SINGLE: &str = "test.local/busybox:1";
const MULTI: &str = "test.local/multi:1";

struct Fixture {
    tmp: tempfile::TempDir,
    store: OciDir,
}

impl Fixture {
    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    fn snapshots_root(&self, driver: Driver) -> PathBuf {
        self.tmp
            .path()
            .join(format!("snapshots-{}", driver.as_str()))
    }

    fn runtime(&self, driver: Driver) -> Runtime {
        let snapshots = Snapshots::open(&self.snapshots_root(driver), driver).unwrap();
        Runtime::oci(&self.state(), RuntimeKind::Runc)
            .unwrap()
            .with_snapshots(snapshots)
            .unwrap()
    }
}

/// Everything goes, even when a test fails: containers, snapshots, mounts.
impl Drop for Fixture {
    fn drop(&mut self) {
        for driver in [Driver::Overlay, Driver::Copy] {
            if !self.snapshots_root(driver).exists() {
                continue;
            }
            let rt = self.runtime(driver);
            for r in rt.list().unwrap_or_default() {
                let _ = rt.delete(&r.id);
            }
            remove_all_snapshots(rt.snapshots().unwrap().snapshotter());
        }
        if let Ok(mounts) = image_runtime::mountinfo::mounts_under(self.tmp.path()) {
            for m in mounts.iter().rev() {
                let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
}

/// Removes every snapshot, children first.
fn remove_all_snapshots(sn: &dyn Snapshotter) {
    for _ in 0..64 {
        let all = sn.list().unwrap_or_default();
        if all.is_empty() {
            return;
        }
        for i in all {
            let _ = sn.remove(&i.name);
        }
    }
}

/// A store with two images: SINGLE (one busybox layer; Env, WorkingDir,
/// User set) and MULTI (SINGLE plus a layer that deletes /data/readme and
/// adds /data/second, plus a layer adding /opt/app; Env, WorkingDir and
/// User changed).
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let store = OciDir::open_or_create(tmp.path().join("store")).unwrap();
    let src = tmp.path().join("src");
    let base = src.join("base");
    busybox_rootfs(&base);
    let gz = PackOptions::new(Compression::Gzip);
    let l1 = store_layer(&store, "busybox", |w| pack_dir(&base, w, &gz).unwrap());
    let single = append(&store, None, &Platform::new("linux", "amd64"), &[l1], |c| {
        let rc = c.config.get_or_insert_with(Default::default);
        rc.env = Some(vec!["PATH=/bin".into(), "FOO=from-image".into()]);
        rc.cmd = Some(vec!["sh".into()]);
        rc.working_dir = Some("/work/dir".into());
        rc.user = Some("app".into());
    })
    .unwrap();
    store
        .set_tag(SINGLE, &single.manifest.descriptor())
        .unwrap();

    // Layer 2: a deletion (whiteout) and an addition, made by diffing trees.
    let second = src.join("second");
    busybox_rootfs(&second);
    std::fs::remove_file(second.join("data/readme")).unwrap();
    std::fs::write(second.join("data/second"), "layer two\n").unwrap();
    let l2 = store_layer(&store, "second", |w| {
        diff_dirs(&base, &second, w, &PackOptions::new(Compression::Zstd)).unwrap()
    });
    // Layer 3: a directory of its own.
    let third = src.join("third");
    std::fs::create_dir_all(third.join("opt/app")).unwrap();
    std::fs::write(third.join("opt/app/run.sh"), "echo run\n").unwrap();
    let l3 = store_layer(&store, "third", |w| pack_dir(&third, w, &gz).unwrap());
    let base_image = image_store::resolve_image(&store, SINGLE, None).unwrap();
    let multi = append(
        &store,
        Some(&base_image),
        &Platform::new("linux", "amd64"),
        &[l2, l3],
        |c| {
            let rc = c.config.get_or_insert_with(Default::default);
            rc.env = Some(vec![
                "PATH=/bin".into(),
                "FOO=from-multi".into(),
                "BAR=3".into(),
            ]);
            rc.working_dir = Some("/opt/app".into());
            rc.user = Some("1000:50".into());
        },
    )
    .unwrap();
    store.set_tag(MULTI, &multi.manifest.descriptor()).unwrap();
    std::fs::remove_dir_all(&src).unwrap();
    Fixture { tmp, store }
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// A container of `MULTI` that ran `script` as root and exited 0.
fn ran_as_root(rt: &Runtime, f: &Fixture, script: &str) -> Container {
    let c = rt
        .container_from_image(&f.store, MULTI)
        .unwrap()
        .user("0")
        .cmd(sh(script))
        .create()
        .unwrap();
    let (c, exit) = c.run(Stdio::capture(), TIMEOUT).unwrap();
    assert!(exit.unwrap().status.success());
    c
}

/// Creates a container from `image` running `cmd`, runs it, checks it
/// stopped; returns it (not deleted) and its exit.
fn run(
    rt: &Runtime,
    store: &OciDir,
    image: &str,
    cmd: Vec<String>,
) -> (image_runtime::Container, Exit) {
    let c = rt
        .container_from_image(store, image)
        .unwrap()
        .cmd(cmd)
        .create()
        .unwrap();
    let (c, exit) = c.run(Stdio::capture(), TIMEOUT).unwrap();
    let exit = exit.expect("container finished in time");
    assert_eq!(c.status(), ContainerStatus::Stopped);
    (c, exit)
}

/// Deletes `c` and checks that nothing of it is left: mounts, state, its
/// snapshot.
fn delete_clean(rt: &Runtime, c: image_runtime::Container) {
    let id = c.id().to_owned();
    let dir = rt.root().join("containers").join(&id);
    c.delete().unwrap();
    assert_unmounted(&dir);
    assert!(!dir.exists());
    let sn = rt.snapshots().unwrap().snapshotter();
    assert!(sn.try_stat(&id).unwrap().is_none(), "snapshot {id} left");
}

/// Nothing is mounted under the runtime's state and only the committed
/// layer snapshots remain.
fn all_clean(rt: &Runtime) {
    assert_unmounted(rt.root());
    assert!(rt.list().unwrap().is_empty());
    for i in rt.snapshots().unwrap().snapshotter().list().unwrap() {
        assert_eq!(i.kind, Kind::Committed, "left: {i:?}");
    }
}

fn sees_image_settings(driver: Driver) {
    if !ready() {
        return;
    }
    let f = fixture();
    let rt = f.runtime(driver);
    let probe = sh("id; pwd; echo FOO=$FOO BAR=$BAR; echo pid=$$; hostname; ls /data; ls /opt/app");
    let (c, exit) = run(&rt, &f.store, SINGLE, probe.clone());
    let id = c.id().to_owned();
    let out = exit.stdout_str();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 7, "{out} {}", exit.stderr_str());
    assert!(lines[0].starts_with("uid=1000(app) gid=1000(app)"), "{out}");
    assert_eq!(lines[1], "/work/dir");
    assert_eq!(lines[2], "FOO=from-image BAR=");
    assert_eq!(lines[3], "pid=1");
    assert_eq!(lines[4], &id[..12]);
    assert_eq!(lines[5..7], ["keep", "readme"], "{out}");
    assert_eq!(
        exit.status.code(),
        1,
        "no /opt/app in the single-layer image"
    );
    delete_clean(&rt, c);

    // The multi-layer image: settings changed, a layer's deletion applied.
    let (c, exit) = run(&rt, &f.store, MULTI, probe);
    let out = exit.stdout_str();
    assert!(exit.status.success(), "{out} {}", exit.stderr_str());
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("uid=1000(app) gid=50(staff)"), "{out}");
    assert_eq!(lines[1], "/opt/app");
    assert_eq!(lines[2], "FOO=from-multi BAR=3");
    assert_eq!(lines[3], "pid=1");
    assert_eq!(lines[4], &c.id()[..12]);
    assert_eq!(lines[5..], ["keep", "second", "run.sh"], "{out}");
    delete_clean(&rt, c);
    all_clean(&rt);
}

#[test]
fn overlay_container_from_image_sees_env_workdir_user_pid1_hostname() {
    sees_image_settings(Driver::Overlay);
}

#[test]
fn copy_container_from_image_sees_env_workdir_user_pid1_hostname() {
    sees_image_settings(Driver::Copy);
}

#[test]
fn layers_are_unpacked_once_and_reused() {
    if !ready() {
        return;
    }
    let f = fixture();
    let rt = f.runtime(Driver::Overlay);
    let (c1, _) = run(&rt, &f.store, MULTI, vec!["true".into()]);
    let sn = rt.snapshots().unwrap().snapshotter();
    // Layer snapshots: committed and not a container's init snapshot.
    let committed = |sn: &dyn Snapshotter| {
        sn.list()
            .unwrap()
            .into_iter()
            .filter(|i| {
                i.kind == Kind::Committed
                    && !i
                        .labels
                        .contains_key(image_runtime::snapshots::LABEL_CONTAINER)
            })
            .count()
    };
    assert_eq!(committed(sn), 3);
    // SINGLE is MULTI's bottom layer: nothing new to unpack.
    let (c2, _) = run(&rt, &f.store, SINGLE, vec!["true".into()]);
    assert_eq!(committed(sn), 3);
    // The container's snapshot sits on its init snapshot, on the image's top layer.
    let sref = c2.record().snapshot.clone().unwrap();
    let init = sref.init.clone().unwrap();
    assert_eq!(sref.parent.as_ref(), Some(&init));
    assert_eq!(sn.stat(c2.id()).unwrap().parent, Some(init.clone()));
    let image = image_store::resolve_image(&f.store, SINGLE, None).unwrap();
    assert_eq!(
        sn.stat(&init).unwrap().parent,
        Some(image_core::chain_ids(image.diff_ids())[0].to_string())
    );
    delete_clean(&rt, c1);
    delete_clean(&rt, c2);
    all_clean(&rt);
}

/// Run's image preparation reports each layer it unpacks and stops on its
/// interrupt: an interrupt already set stops it with `Cancelled`, makes no
/// container and leaves no snapshot; a tracked preparation reports every
/// layer of the image, started, grown to its size and finished.
#[test]
fn image_preparation_reports_progress_and_stops_on_its_interrupt() {
    if !ready() {
        return;
    }
    use image_core::progress::{Interrupt, Recorder, Tracker};
    use image_overlay::ImageUnpackOptions;
    let f = fixture();
    let rt = f.runtime(Driver::Overlay);
    let sn = rt.snapshots().unwrap().snapshotter();

    let stop = Interrupt::new();
    stop.set();
    let options =
        ImageUnpackOptions::default().with_tracker(Tracker::default().with_interrupt(stop));
    let e = rt
        .container_from_image_with(&f.store, MULTI, None, &options)
        .map(|_| ())
        .unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    assert!(sn.list().unwrap().is_empty(), "{:?}", sn.list());
    assert!(rt.list().unwrap().is_empty());

    let rec = std::sync::Arc::new(Recorder::default());
    let tracker = Tracker::new(rec.clone(), Interrupt::new());
    let options = ImageUnpackOptions::default().with_tracker(tracker);
    let c = rt
        .container_from_image_with(&f.store, MULTI, None, &options)
        .unwrap()
        .create()
        .unwrap();
    assert!(rec.violations().is_empty(), "{:?}", rec.violations());
    let image = image_store::resolve_image(&f.store, MULTI, None).unwrap();
    let items = rec.items();
    assert_eq!(items.len(), image.layers().len());
    for layer in image.layers() {
        let r = &items[&layer.digest().to_string()];
        assert!(r.finished);
        assert_eq!((r.total, r.done), (Some(layer.size()), layer.size()));
    }
    delete_clean(&rt, c);
    all_clean(&rt);
}

#[test]
fn writes_land_in_the_upper_layer_only_and_containers_are_isolated() {
    if !ready() {
        return;
    }
    let f = fixture();
    let rt = f.runtime(Driver::Overlay);
    // Both exist at once, made from one image; each runs as root.
    let create = |script: &str| {
        rt.container_from_image(&f.store, MULTI)
            .unwrap()
            .user("0")
            .cmd(sh(script))
            .create()
            .unwrap()
    };
    let c1 =
        create("echo one > /data/mine; echo changed > /data/keep; rm /data/second; cat /data/keep");
    let c2 = create("ls /data; cat /data/keep");
    let (c1, exit) = c1.run(Stdio::capture(), TIMEOUT).unwrap();
    let exit = exit.unwrap();
    assert_eq!(exit.stdout_str(), "changed\n", "{}", exit.stderr_str());
    let (c2, exit) = c2.run(Stdio::capture(), TIMEOUT).unwrap();
    assert_eq!(exit.unwrap().stdout_str(), "keep\nsecond\nkept\n");

    // c1's changes are in its upper directory, whiteout included; the
    // layer snapshots below are untouched.
    let upper = c1.upper_dir().unwrap();
    assert_eq!(std::fs::read(upper.join("data/mine")).unwrap(), b"one\n");
    let wh = std::fs::symlink_metadata(upper.join("data/second")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    let spec = &c1.record().rootfs;
    let image_runtime::Rootfs::Mounts(mounts) = spec else {
        panic!("{spec:?}")
    };
    let lower = mounts[0]
        .options
        .iter()
        .find_map(|o| o.strip_prefix("lowerdir="))
        .unwrap();
    let lowers: Vec<&str> = lower.split(':').collect();
    assert_eq!(lowers.len(), 4, "init snapshot and 3 layers: {lowers:?}");
    for l in &lowers {
        assert!(!Path::new(l).join("data/mine").exists());
    }
    // (diff_dirs saw new mtimes: layer 2 carries /data/keep again.)
    let keep: Vec<String> = lowers
        .iter()
        .filter_map(|l| std::fs::read_to_string(Path::new(l).join("data/keep")).ok())
        .collect();
    assert!(
        !keep.is_empty() && keep.iter().all(|k| k == "kept\n"),
        "{keep:?}"
    );
    assert!(!c2.upper_dir().unwrap().join("data/mine").exists());
    delete_clean(&rt, c1);
    delete_clean(&rt, c2);
    all_clean(&rt);
}

#[test]
fn exit_codes_pass_through() {
    if !ready() {
        return;
    }
    let f = fixture();
    let rt = f.runtime(Driver::Overlay);
    for (script, code) in [
        ("exit 0", 0),
        ("exit 7", 7),
        ("false", 1),
        ("no-such-cmd", 127),
    ] {
        let (c, exit) = run(&rt, &f.store, SINGLE, sh(script));
        assert_eq!(exit.status.code(), code, "{script}");
        assert_eq!(c.record().exit_code, Some(code));
        delete_clean(&rt, c);
    }
    all_clean(&rt);
}

/// Every file under `root`: type, mode, owner, content or link target.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let what = if md.is_dir() {
                stack.push(p.clone());
                "dir".to_owned()
            } else if md.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if md.is_file() {
                let bytes = std::fs::read(&p).unwrap();
                format!("file {}", image_core::Digest::sha256(&bytes))
            } else {
                format!("special {:o} {}", md.mode() & 0o170000, md.rdev())
            };
            let rel = p.strip_prefix(root).unwrap().to_owned();
            out.insert(
                rel,
                format!("{what} {:o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid()),
            );
        }
    }
    out
}

fn changes_reproduce_the_view(driver: Driver) {
    if !ready() {
        return;
    }
    let f = fixture();
    let rt = f.runtime(driver);
    // A deletion, an opaque directory (removed and made again), a new
    // file, a changed file, a new directory with an owner.
    let script = "rm /data/keep; rm -rf /opt/app; mkdir /opt/app; echo new > /opt/app/new; \
                  echo x >> /etc/passwd; \
                  mkdir -p /srv/a/b; touch /srv/a/b/f";
    let (c, exit) = {
        let c = rt
            .container_from_image(&f.store, MULTI)
            .unwrap()
            .user("0")
            .cmd(sh(script))
            .create()
            .unwrap();
        let (c, exit) = c.run(Stdio::capture(), TIMEOUT).unwrap();
        (c, exit.unwrap())
    };
    assert!(exit.status.success(), "{}", exit.stderr_str());
    let mut layer = Vec::new();
    let packed = c
        .pack_changes(&mut layer, &PackOptions::new(Compression::Zstd))
        .unwrap();
    // The image's layers flattened, then the changes applied on top.
    let applied = f.tmp.path().join("applied");
    let image = image_store::resolve_image(&f.store, MULTI, None).unwrap();
    image_overlay::flatten_image(
        &f.store,
        &image,
        &applied,
        &image_overlay::UnpackOptions::default(),
    )
    .unwrap();
    // The mount points the runtime made in the init snapshot (absent from
    // the image) are in the view and, by design, not in the changes.
    let image_tree = tree(&applied);
    let init_only: Vec<PathBuf> = image_runtime::snapshots::INIT_PATHS
        .iter()
        .map(|(p, _)| PathBuf::from(&p[1..]))
        .filter(|p| !image_tree.contains_key(p))
        .collect();
    assert!(init_only.contains(&PathBuf::from("etc/hosts")));
    let opts = image_overlay::UnpackOptions::default()
        .with_digest(packed.digest.clone())
        .with_diff_id(packed.diff_id.clone());
    image_overlay::unpack(&layer[..], &applied, &opts).unwrap();
    // The container's view: its root filesystem, mounted while it exists.
    let mut view = tree(&c.bundle().join("rootfs"));
    for p in &init_only {
        assert!(view.remove(p).is_some(), "{} not in the view", p.display());
    }
    let got = tree(&applied);
    assert!(view.contains_key(Path::new("opt/app/new")));
    assert!(!view.contains_key(Path::new("data/keep")));
    assert!(!view.contains_key(Path::new("opt/app/run.sh")));
    assert_eq!(got, view);
    std::fs::remove_dir_all(&applied).unwrap();
    delete_clean(&rt, c);
    all_clean(&rt);
}

#[test]
fn overlay_packed_upper_applied_on_the_layers_reproduces_the_view() {
    changes_reproduce_the_view(Driver::Overlay);
}

#[test]
fn copy_diff_applied_on_the_layers_reproduces_the_view() {
    changes_reproduce_the_view(Driver::Copy);
}

fn commit_round_trip(driver: Driver) {
    if !ready() {
        return;
    }
    let f = fixture();
    let rt = f.runtime(driver);
    let c = rt
        .container_from_image(&f.store, MULTI)
        .unwrap()
        .user("0")
        .cmd(sh(
            "echo new > /data/new; rm /data/keep; mkdir -p /home/app/x; echo y > /home/app/x/y",
        ))
        .create()
        .unwrap();
    let (c, exit) = c.run(Stdio::capture(), TIMEOUT).unwrap();
    let exit = exit.unwrap();
    assert!(exit.status.success(), "{}", exit.stderr_str());
    let tag = "test.local/committed:1";
    let committed = c
        .commit_with(
            &f.store,
            &CommitOptions::new()
                .author("tester")
                .comment("round trip")
                .tag(tag),
            |cfg| {
                let rc = cfg.config.get_or_insert_with(Default::default);
                rc.env
                    .get_or_insert_with(Vec::new)
                    .push("COMMITTED=yes".into());
            },
        )
        .unwrap();
    delete_clean(&rt, c);
    // The layer holds the changes, not the mount points the runtime made
    // (those live in the init snapshot).
    let blob = image_store::Provider::reader(&f.store, &committed.layer.digest).unwrap();
    let layer_dir = f.tmp.path().join("layer");
    std::fs::create_dir(&layer_dir).unwrap();
    let mut o = image_overlay::UnpackOptions::default();
    o.whiteouts = image_overlay::WhiteoutMode::Overlay(image_overlay::OverlayXattrs::Trusted);
    image_overlay::unpack(blob, &layer_dir, &o).unwrap();
    let listing: Vec<(String, String)> = tree(&layer_dir)
        .into_iter()
        .map(|(p, what)| {
            let kind = what.split(' ').next().unwrap().to_owned();
            (p.to_string_lossy().into_owned(), kind)
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("data", "dir"),
        ("data/keep", "special"),
        ("data/new", "file"),
        ("home", "dir"),
        ("home/app", "dir"),
        ("home/app/x", "dir"),
        ("home/app/x/y", "file"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(listing, want);
    std::fs::remove_dir_all(&layer_dir).unwrap();
    let image = image_store::resolve_image(&f.store, tag, None).unwrap();
    assert_eq!(image.id(), committed.config.image_id());
    assert_eq!(image.layers().len(), 4);
    let h = image.history().last().unwrap();
    assert_eq!(h.author.as_deref(), Some("tester"));
    assert_eq!(h.comment.as_deref(), Some("round trip"));
    assert!(
        h.created_by
            .as_deref()
            .unwrap()
            .starts_with("sh -c echo new"),
        "{h:?}"
    );
    assert_eq!(image.config.file().author.as_deref(), Some("tester"));

    // Run the committed image: the changes are there, the deletion too,
    // and the image's own settings and the config change.
    let (c, exit) = run(
        &rt,
        &f.store,
        tag,
        sh("cat /data/new; ls /data; cat /home/app/x/y; echo $COMMITTED; pwd; id -u"),
    );
    assert!(exit.status.success(), "{}", exit.stderr_str());
    assert_eq!(
        exit.stdout_str(),
        "new\nnew\nsecond\ny\nyes\n/opt/app\n1000\n"
    );
    delete_clean(&rt, c);
    all_clean(&rt);
}

#[test]
fn overlay_commit_round_trip() {
    commit_round_trip(Driver::Overlay);
}

#[test]
fn copy_commit_round_trip() {
    commit_round_trip(Driver::Copy);
}

/// Commits beside a gc with a grace period of zero running in a loop: each
/// commit holds a lease from its layer until its tag, so none fails and
/// every committed image is whole.
#[test]
fn commits_beside_gc_with_zero_grace_all_succeed() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    if !ready() {
        return;
    }
    let f = fixture();
    let rt = f.runtime(Driver::Overlay);
    let c = ran_as_root(&rt, &f, "head -c 300000 /dev/urandom > /data/noise");
    let stop = Arc::new(AtomicBool::new(false));
    let removed = Arc::new(AtomicUsize::new(0));
    let gc = {
        let (store, stop, removed) = (f.store.clone(), stop.clone(), removed.clone());
        std::thread::spawn(move || {
            let mut runs = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let r = store
                    .gc(&image_store::GcOptions::default().grace(std::time::Duration::ZERO))
                    .unwrap();
                removed.fetch_add(r.removed.len(), Ordering::Relaxed);
                runs += 1;
            }
            runs
        })
    };
    let mut failures = Vec::new();
    for round in 0..8 {
        let tag = format!("test.local/gc-commit:{round}");
        match c.commit(&f.store, &CommitOptions::new().tag(&tag)) {
            Ok(committed) => {
                let image = image_store::resolve_image(&f.store, &tag, None).unwrap();
                assert_eq!(image.id(), committed.config.image_id());
                // Untagged, so the next gc frees this commit's blobs and
                // the next commit writes its layer anew.
                f.store.remove_tag(&tag).unwrap();
            }
            Err(e) => failures.push(format!("round {round}: {e}")),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let runs = gc.join().unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(runs > 0);
    assert!(
        removed.load(Ordering::Relaxed) > 0,
        "gc never freed a commit"
    );
    let report = f.store.fsck(&image_store::FsckOptions::default()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(report.stale_ingests.is_empty() && report.stale_leases.is_empty());
    delete_clean(&rt, c);
    all_clean(&rt);
}

/// A commit whose tag is refused (a name with a digest, a name that is
/// not a reference) fails before it writes anything: no blob, no ingest,
/// no lease, the store as it was.
#[test]
fn commit_with_a_refused_tag_writes_nothing() {
    if !ready() {
        return;
    }
    let f = fixture();
    let rt = f.runtime(Driver::Overlay);
    let c = ran_as_root(&rt, &f, "echo changed > /data/changed");
    let store_dir = f.tmp.path().join("store");
    let before = tree(&store_dir);
    let digest = image_store::resolve_image(&f.store, MULTI, None)
        .unwrap()
        .manifest
        .digest()
        .to_string();
    for name in [
        format!("test.local/multi@{digest}"),
        "Not A Name".to_owned(),
    ] {
        let e = c
            .commit(&f.store, &CommitOptions::new().tag(&name))
            .expect_err("a refused tag");
        image_testsupport::chain::assert_said_once(&e);
        assert!(
            matches!(&e, CommitError::Tag { name: n, .. } if *n == name),
            "{e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert_eq!(tree(&store_dir), before, "{name}: the store changed");
    }
    // The same commit with a good name goes through.
    c.commit(&f.store, &CommitOptions::new().tag("test.local/ok:1"))
        .unwrap();
    delete_clean(&rt, c);
    all_clean(&rt);
}

#[test]
fn typed_errors() {
    if !ready() {
        return;
    }
    let f = fixture();
    let rt = f.runtime(Driver::Overlay);
    let e = rt
        .container_from_image(&f.store, "test.local/nope:1")
        .unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(&e, ContainerError::NoSuchImage { name } if name == "test.local/nope:1"),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(e.to_string(), "no such image: test.local/nope:1");

    let bare = Runtime::oci(&f.state(), RuntimeKind::Runc).unwrap();
    let e = bare.container_from_image(&f.store, SINGLE).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, ContainerError::NoSnapshots), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);

    // A failed create (no such program) leaves no snapshot behind.
    let e = rt
        .container_from_image(&f.store, SINGLE)
        .unwrap()
        .cmd(["/no/such/program"])
        .create()
        .unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(rt.list().unwrap().is_empty());
    let sn = rt.snapshots().unwrap().snapshotter();
    assert!(sn.list().unwrap().iter().all(|i| i.kind == Kind::Committed));
    assert!(image_runtime::mountinfo::mounts_under(rt.root())
        .unwrap()
        .is_empty());

    // A container from a plain directory has nothing to commit against.
    let dir = f.tmp.path().join("plain");
    busybox_rootfs(&dir);
    let c = rt
        .container(image_runtime::Rootfs::Directory(dir))
        .cmd(["true"])
        .create()
        .unwrap();
    let e = c.commit(&f.store, &CommitOptions::new()).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, CommitError::NotCommittable { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    c.delete().unwrap();
}

#[test]
fn gc_removes_the_snapshot_of_a_crashed_container() {
    if !ready() {
        return;
    }
    let f = fixture();
    let rt = f.runtime(Driver::Overlay);
    let c = rt
        .container_from_image(&f.store, SINGLE)
        .unwrap()
        .cmd(["true"])
        .create()
        .unwrap();
    let id = c.id().to_owned();
    let sn = rt.snapshots().unwrap().snapshotter();
    assert_eq!(sn.stat(&id).unwrap().kind, Kind::Active);
    assert_eq!(mount_count(rt.root()), 1);
    pretend_owner_died(&c);
    drop(c);
    // An orphan too: a snapshot of this runtime whose container is gone.
    let mut labels = image_overlay::snapshot::Labels::new();
    labels.insert(
        image_runtime::snapshots::LABEL_CONTAINER.into(),
        "orphan".into(),
    );
    labels.insert(
        image_runtime::snapshots::LABEL_STATE.into(),
        rt.root().to_string_lossy().into_owned(),
    );
    sn.prepare_with("orphan", None, labels).unwrap();
    // ...and a snapshot of someone else, which stays.
    sn.prepare("someone-else", None).unwrap();

    let rt2 = f.runtime(Driver::Overlay);
    assert!(rt2.list().unwrap().is_empty());
    let sn2 = rt2.snapshots().unwrap().snapshotter();
    assert!(sn2.try_stat(&id).unwrap().is_none());
    assert!(sn2.try_stat("orphan").unwrap().is_none());
    assert!(sn2.try_stat("someone-else").unwrap().is_some());
    sn2.remove("someone-else").unwrap();
    assert!(image_runtime::mountinfo::mounts_under(rt2.root())
        .unwrap()
        .is_empty());
    assert!(!rt2.root().join("containers").join(&id).exists());
}

/// `bundle IMAGE DIR` into a directory an operator named, holding
/// symlinks: `config.json` and the `/etc` files replace links instead of
/// writing through them, a symlinked `etc` or `rootfs` is refused, and a
/// refused bundle leaves no rootfs behind.
#[test]
fn bundle_export_never_follows_symlinks_in_the_directory() {
    if !ready() {
        return;
    }
    let f = fixture();
    let outside = f.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim"), "precious").unwrap();
    let untouched = |outside: &Path| {
        assert_eq!(
            std::fs::read_to_string(outside.join("victim")).unwrap(),
            "precious"
        );
        let names: Vec<_> = std::fs::read_dir(outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("victim")]);
    };
    let opts = RunOptions::new();

    // config.json and etc/hosts are links to a file outside.
    let b1 = f.tmp.path().join("b1");
    std::fs::create_dir_all(b1.join("etc")).unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), b1.join("config.json")).unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), b1.join("etc/hosts")).unwrap();
    image_runtime::bundle::export_image(&f.store, SINGLE, &b1, &opts).unwrap();
    untouched(&outside);
    for p in ["config.json", "etc/hosts"] {
        let md = std::fs::symlink_metadata(b1.join(p)).unwrap();
        assert!(md.is_file(), "{p} replaced by a regular file");
    }
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b1.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["root"]["path"], "rootfs");

    // etc is a link to a directory outside: refused, no rootfs left.
    let b2 = f.tmp.path().join("b2");
    std::fs::create_dir(&b2).unwrap();
    std::os::unix::fs::symlink(&outside, b2.join("etc")).unwrap();
    let e = image_runtime::bundle::export_image(&f.store, SINGLE, &b2, &opts).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, ContainerError::Bundle { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Unsafe, "{e}");
    untouched(&outside);
    assert!(!b2.join("rootfs").exists());
    assert!(!b2.join("config.json").exists());

    // rootfs is a link: refused (export_image makes its own and will not
    // use an existing one; export opens it without following).
    let b3 = f.tmp.path().join("b3");
    std::fs::create_dir(&b3).unwrap();
    std::os::unix::fs::symlink(&outside, b3.join("rootfs")).unwrap();
    assert!(image_runtime::bundle::export_image(&f.store, SINGLE, &b3, &opts).is_err());
    let e = image_runtime::bundle::export(&b3, &image_config_of(&f), &opts).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, ContainerError::Rootfs(_)), "{e:?}");
    untouched(&outside);
    assert!(!b3.join("config.json").exists());
}

fn image_config_of(f: &Fixture) -> image_core::config::RunConfig {
    let image = image_store::resolve_image(&f.store, SINGLE, None).unwrap();
    image.config.file().config.clone().unwrap_or_default()
}

/// A `run --rm` killed between create and start leaves a created container
/// whose owner is gone: gc collects it (mount, snapshot, state), while a
/// created container that is not auto-removed waits for its start.
#[test]
fn gc_reclaims_a_created_auto_removed_container_whose_owner_died() {
    if !ready() {
        return;
    }
    let f = fixture();
    let rt = f.runtime(Driver::Overlay);
    let create = |auto_remove: bool| {
        let c = rt
            .container_from_image(&f.store, SINGLE)
            .unwrap()
            .cmd(["true"])
            .auto_remove(auto_remove)
            .create()
            .unwrap();
        let mut record = c.record().clone();
        assert_eq!(record.status, ContainerStatus::Created);
        assert_eq!(record.auto_remove, auto_remove);
        record.owner = Some(image_runtime::state::Owner {
            pid: u32::MAX - 7,
            start_time: 1,
        });
        std::fs::write(
            c.bundle().join("container.json"),
            serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
        c.id().to_owned()
    };
    let removed = create(true);
    let kept = create(false);
    assert_eq!(mount_count(rt.root()), 2);

    let rt2 = f.runtime(Driver::Overlay);
    let ids: Vec<String> = rt2.list().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, std::slice::from_ref(&kept));
    let sn = rt2.snapshots().unwrap().snapshotter();
    assert!(sn.try_stat(&removed).unwrap().is_none());
    assert!(sn.try_stat(&kept).unwrap().is_some());
    assert!(!rt2.root().join("containers").join(&removed).exists());
    assert_eq!(mount_count(rt2.root()), 1);
    rt2.delete(&kept).unwrap();
    all_clean(&rt2);
}

/// Runtimes on `f`'s state and `driver`'s snapshots with every backend
/// installed: native, runc, and crun when present.
fn every_backend(f: &Fixture, driver: Driver) -> Vec<Runtime> {
    let mut runtimes = vec![
        Runtime::native(&f.state(), image_runtime::NativeOptions::default()).unwrap(),
        Runtime::oci(&f.state(), RuntimeKind::Runc).unwrap(),
    ];
    if common::ready(&["crun"]) {
        runtimes.push(Runtime::oci(&f.state(), RuntimeKind::Crun).unwrap());
    }
    runtimes
        .into_iter()
        .map(|rt| {
            let sn = Snapshots::open(&f.snapshots_root(driver), driver).unwrap();
            rt.with_snapshots(sn).unwrap()
        })
        .collect()
}

/// A failed start of an auto-removed container deletes it, through the
/// library alone (no CLI), under native, runc and crun: nothing mounted,
/// no state, no snapshot, no cgroup. Without auto-remove the container
/// stays (created for native, whose start fails; stopped for runc and crun,
/// which fail in their foreground run) until deleted.
#[test]
fn a_failed_start_deletes_an_auto_removed_container() {
    if !ready() {
        return;
    }
    let f = fixture();
    for rt in every_backend(&f, Driver::Overlay) {
        let backend = rt.backend().name().to_owned();
        for auto_remove in [true, false] {
            let c = rt
                .container_from_image(&f.store, SINGLE)
                .unwrap()
                .cmd(["true"])
                .hostname("h".repeat(300))
                .auto_remove(auto_remove)
                .create()
                .unwrap();
            let id = c.id().to_owned();
            let err = match c.run(Stdio::capture(), TIMEOUT) {
                Err(e) => e,
                Ok((_, exit)) => panic!("{backend}: a 300-byte hostname ran: {exit:?}"),
            };
            assert!(
                !matches!(err, ContainerError::Cleanup { .. }),
                "{backend}: cleanup failed: {err}"
            );
            common::assert_no_cgroups(&id);
            if !auto_remove {
                let status = rt.load(&id).unwrap().status();
                let expected = if backend == "native" {
                    ContainerStatus::Created
                } else {
                    ContainerStatus::Stopped
                };
                assert_eq!(status, expected, "{backend}");
                assert_eq!(mount_count(rt.root()), 1, "{backend}");
                rt.delete(&id).unwrap();
            }
            all_clean(&rt);
        }
    }
}

/// A runtime deletes (and collects) only its own backend's containers:
/// another backend's process would outlive the state (runc's foreground
/// run outlives its killed owner).
#[test]
fn a_runtime_leaves_other_backends_containers_alone() {
    if !ready() {
        return;
    }
    let f = fixture();
    let snapshots =
        || Snapshots::open(&f.snapshots_root(Driver::Overlay), Driver::Overlay).unwrap();
    let runc = f.runtime(Driver::Overlay);
    let c = runc
        .container_from_image(&f.store, SINGLE)
        .unwrap()
        .cmd(["true"])
        .create()
        .unwrap();
    let id = c.id().to_owned();
    pretend_owner_died(&c);
    let native = Runtime::native(&f.state(), image_runtime::NativeOptions::default())
        .unwrap()
        .with_snapshots(snapshots())
        .unwrap();
    assert_eq!(native.list().unwrap().len(), 1, "collected by native's gc");
    let e = native.delete(&id).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(
        matches!(&e, ContainerError::OtherBackend { backend, .. } if backend == "runc"),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert_eq!(mount_count(native.root()), 1);
    // runc's own runtime collects it.
    let runc = f.runtime(Driver::Overlay);
    all_clean(&runc);
}

/// overlayfs stacks at most 500 lower directories and a container adds
/// its init snapshot below its own: an image of 499 layers runs under
/// every backend, one of 500 is refused before anything is mounted, with
/// the typed error (`Unsupported`, naming the count and the limit) rather
/// than the kernel's bare `EINVAL`, and leaves nothing behind.
#[test]
fn an_image_deeper_than_overlayfs_stacks_is_refused_with_a_typed_error() {
    use image_overlay::mount::{MountError, MAX_OVERLAY_LOWERS};
    use image_runtime::rootfs::RootfsError;
    if !ready() {
        return;
    }
    let f = fixture();
    let src = f.tmp.path().join("deep");
    busybox_rootfs(&src.join("0"));
    let plain = PackOptions::new(Compression::None);
    let mut layers = vec![store_layer(&f.store, "busybox", |w| {
        pack_dir(&src.join("0"), w, &plain).unwrap()
    })];
    for i in 1..MAX_OVERLAY_LOWERS {
        let dir = src.join(i.to_string());
        std::fs::create_dir_all(dir.join("deep")).unwrap();
        std::fs::write(dir.join("deep").join(i.to_string()), format!("{i}\n")).unwrap();
        layers.push(store_layer(&f.store, "tiny", |w| {
            pack_dir(&dir, w, &plain).unwrap()
        }));
    }
    std::fs::remove_dir_all(&src).unwrap();
    let tag = |name: &str, n: usize| {
        let image = append(
            &f.store,
            None,
            &Platform::new("linux", "amd64"),
            &layers[..n],
            |c| {
                let rc = c.config.get_or_insert_with(Default::default);
                rc.env = Some(vec!["PATH=/bin".into()]);
            },
        )
        .unwrap();
        f.store.set_tag(name, &image.manifest.descriptor()).unwrap();
    };
    // The init snapshot is one more lower: 499 + 1 fits, 500 + 1 does not.
    tag("test.local/deep:499", MAX_OVERLAY_LOWERS - 1);
    tag("test.local/deep:500", MAX_OVERLAY_LOWERS);
    for rt in every_backend(&f, Driver::Overlay) {
        let backend = rt.backend().name().to_owned();
        let (c, exit) = run(
            &rt,
            &f.store,
            "test.local/deep:499",
            sh("cat /deep/1 /deep/498; ls /deep | wc -l"),
        );
        assert_eq!(
            exit.stdout_str(),
            "1\n498\n498\n",
            "{backend}: {}",
            exit.stderr_str()
        );
        delete_clean(&rt, c);
        let e = rt
            .container_from_image(&f.store, "test.local/deep:500")
            .unwrap()
            .cmd(["true"])
            .create()
            .unwrap_err();
        image_testsupport::chain::assert_said_once(&e);
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{backend}: {e}");
        assert!(
            matches!(
                &e,
                ContainerError::Rootfs(RootfsError::Overlay(MountError::TooManyLayers {
                    lowers, max, ..
                })) if *lowers == MAX_OVERLAY_LOWERS + 1 && *max == MAX_OVERLAY_LOWERS
            ),
            "{backend}: {e:?}"
        );
        all_clean(&rt);
    }
    // Nothing is mounted: drop the 500 layers at once rather than one
    // snapshot removal (and metadata rewrite) at a time.
    std::fs::remove_dir_all(f.snapshots_root(Driver::Overlay)).unwrap();
}

/// An image made by `append_dir` on SINGLE (a directory of its own, with
/// config changes) runs: the container sees the base's files and the
/// directory's, and the changed environment and working directory.
#[test]
fn an_image_appended_from_a_directory_runs() {
    if !ready() {
        return;
    }
    let f = fixture();
    let dir = f.tmp.path().join("appended");
    std::fs::create_dir_all(dir.join("srv/site")).unwrap();
    std::fs::write(dir.join("srv/site/index.html"), "appended\n").unwrap();
    let changes = image_overlay::ConfigChanges::new()
        .env("FOO=appended")
        .working_dir("/srv/site")
        .user("0");
    let platform: image_core::Platform = "linux/amd64".parse().unwrap();
    image_overlay::append_dir(
        &f.store,
        Some(SINGLE),
        &dir,
        &platform,
        &changes,
        "test.local/appended:1",
    )
    .unwrap();
    let rt = f.runtime(Driver::Overlay);
    let (c, exit) = run(
        &rt,
        &f.store,
        "test.local/appended:1",
        sh("pwd; echo FOO=$FOO; cat index.html /data/keep"),
    );
    let out = exit.stdout_str();
    assert!(exit.status.success(), "{out} {}", exit.stderr_str());
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["/srv/site", "FOO=appended", "appended", "kept"],
        "{out}"
    );
    delete_clean(&rt, c);
    all_clean(&rt);
}

/// Where overlay cannot work (here: a root inside an overlay mount, which
/// overlayfs refuses as an upper layer), `open_default` says so with the
/// probe's failure instead of opening the copy driver; the caller opens
/// copy explicitly. A root where overlay works gets overlay.
#[test]
fn open_default_refuses_a_root_where_overlay_is_unavailable() {
    use image_overlay::mount::{Mount, Mounter, SysMounter};
    use image_overlay::snapshot::SnapshotError;
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dirs = ["lower", "upper", "work", "merged"].map(|d| tmp.path().join(d));
    for d in &dirs {
        std::fs::create_dir(d).unwrap();
    }
    let opt = |k: &str, p: &Path| format!("{k}={}", p.display());
    let mount = Mount {
        fs_type: "overlay".into(),
        source: "overlay".into(),
        target: None,
        options: vec![
            opt("lowerdir", &dirs[0]),
            opt("upperdir", &dirs[1]),
            opt("workdir", &dirs[2]),
        ],
    };
    SysMounter.mount(&[mount], &dirs[3]).unwrap();
    let root = dirs[3].join("snapshots");
    let result = Snapshots::open_default(&root);
    let copy = Snapshots::open(&root, Driver::Copy).map(|s| s.driver());
    SysMounter.unmount(&dirs[3], true).unwrap();
    match result {
        Err(e @ SnapshotError::OverlayUnavailable { .. }) => {
            assert_eq!(e.kind(), ErrorKind::Unsupported);
            assert!(e.to_string().contains("overlayfs is unavailable at"), "{e}");
        }
        other => panic!("expected OverlayUnavailable, got {other:?}"),
    }
    assert_eq!(copy.unwrap(), Driver::Copy);

    let fine = Snapshots::open_default(&tmp.path().join("fine")).unwrap();
    assert_eq!(fine.driver(), Driver::Overlay);
}
