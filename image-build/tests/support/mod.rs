//! The fixture of the build engine's end-to-end tests (`build.rs`,
//! `mounts.rs`, `platforms.rs`, `stages.rs`): a store holding a
//! busybox-static base image made in the test, a runtime with snapshots
//! beside it, a context directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use image_build::build::{BuildError, BuildEvent, BuildOptions, BuildResult, Builder};
use image_build::builder::ImageBuilder;
use image_core::config::History;
use image_core::progress::Interrupt;
use image_core::{Platform, Tracker};
use image_overlay::ConfigChanges;
use image_runtime::Runtime;

#[path = "../common/mod.rs"]
mod common;
use image_store::{Manager, OciDir};

pub const BASE: &str = "test.local/busybox:1";
/// The applets of the base image.
pub const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "ls", "mkdir", "rm", "touch", "test", "true", "false", "env", "id", "dd",
    "sleep", "grep", "wc", "readlink", "mount", "umount", "nc",
];
/// The time the base image is stamped with, so that it is the same image
/// in every store.
pub const BASE_EPOCH: i64 = 1_600_000_000;

/// What a test binary's builds see of the environment variable
/// `SOURCE_DATE_EPOCH` (the one difference between the binaries that use
/// this fixture).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochEnv {
    /// Set to 1700000000: every time in an image is this one, so that a
    /// rebuild from the cache gives the same image (without it, only the
    /// config and manifest are new).
    Set,
    /// Removed: each build says itself whether it is reproducible.
    Removed,
}

/// A store, a runtime with snapshots and a context, under one directory.
pub struct Fixture {
    /// Everything of the test is under it.
    pub tmp: tempfile::TempDir,
    /// The store.
    pub store: OciDir,
    /// The runtime, with snapshots.
    pub runtime: Runtime,
}

impl Fixture {
    pub fn context(&self) -> PathBuf {
        self.tmp.path().join("context")
    }

    pub fn builder(&self) -> Builder<'_, OciDir> {
        Builder::new(&self.store, &self.runtime)
    }

    /// The options of a build of `dockerfile` with the context directory.
    fn options(&self, dockerfile: &str) -> BuildOptions {
        let mut options = BuildOptions::new(self.context());
        options.dockerfile_text = Some(dockerfile.to_owned());
        options
    }

    /// Builds as `options` say, recording events.
    fn build_with(
        &self,
        options: &BuildOptions,
    ) -> (Result<BuildResult, BuildError>, Vec<BuildEvent>) {
        let mut events = Vec::new();
        let r = self
            .builder()
            .build(options, &mut |e: &BuildEvent| events.push(e.clone()));
        (r, events)
    }

    /// Builds `dockerfile` with the context directory, recording events.
    pub fn build(
        &self,
        dockerfile: &str,
        change: impl FnOnce(&mut BuildOptions),
    ) -> (Result<BuildResult, BuildError>, Vec<BuildEvent>) {
        let mut options = self.options(dockerfile);
        change(&mut options);
        self.build_with(&options)
    }

    /// Builds `dockerfile` with the context on another thread, recording
    /// events, and waits at most `secs` for it: a build that deadlocks (or
    /// waits for a sibling it should have stopped) fails the test, after
    /// its interrupt is set so that its containers go.
    pub fn build_within(
        &self,
        dockerfile: &str,
        secs: u64,
        change: impl FnOnce(&mut BuildOptions),
    ) -> (Result<BuildResult, BuildError>, Vec<BuildEvent>) {
        let mut options = self.options(dockerfile);
        let interrupt = Interrupt::new();
        options.tracker = Some(Tracker::default().with_interrupt(interrupt.clone()));
        change(&mut options);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _ = tx.send(self.build_with(&options));
            });
            match rx.recv_timeout(Duration::from_secs(secs)) {
                Ok(done) => done,
                Err(_) => {
                    interrupt.set();
                    panic!("the build did not finish in {secs} s");
                }
            }
        })
    }

    pub fn blobs(&self) -> usize {
        self.store.list().expect("list").len()
    }

    /// Neither a container, an active snapshot, a mount nor a lease is
    /// left.
    pub fn assert_clean(&self) {
        let containers = self.runtime.list().expect("containers");
        assert!(containers.is_empty(), "{containers:?}");
        let snapshots = self
            .runtime
            .snapshots()
            .unwrap()
            .snapshotter()
            .list()
            .unwrap();
        assert!(
            snapshots
                .iter()
                .all(|i| i.kind != image_overlay::snapshot::Kind::Active),
            "{snapshots:?}"
        );
        let mounts = image_runtime::mountinfo::mounts_under(self.tmp.path()).unwrap();
        assert!(mounts.is_empty(), "{mounts:?}");
        let leases = self.store.held_leases().expect("leases");
        assert!(leases.is_empty(), "{leases:?}");
    }
}

/// Nothing outlives a test: snapshots and mounts.
impl Drop for Fixture {
    fn drop(&mut self) {
        common::clean_up(self.tmp.path(), &self.runtime);
    }
}

/// [`fixture_with`] the environment's epoch [`EpochEnv::Set`].
pub fn fixture() -> Option<Fixture> {
    fixture_with(EpochEnv::Set)
}

/// A store holding BASE, a runtime with snapshots beside it, and an empty
/// context directory, the environment's `SOURCE_DATE_EPOCH` as `env` says
/// (set: BASE appended with that time; removed: BASE made by [`make_base`],
/// stamped with [`BASE_EPOCH`]); `None` (after a loud skip) when the test
/// cannot run here.
pub fn fixture_with(env: EpochEnv) -> Option<Fixture> {
    if !image_testsupport::tools::ready(&[]) {
        return None;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(tmp.path().join("store")).expect("store");
    match env {
        EpochEnv::Set => {
            // Set once, before any build of any test reads it: every test
            // starts here and waits for the one writer.
            static EPOCH: std::sync::Once = std::sync::Once::new();
            EPOCH.call_once(|| std::env::set_var("SOURCE_DATE_EPOCH", "1700000000"));
            append_base(&store, tmp.path());
        }
        EpochEnv::Removed => {
            // None of the binary's builds reads the environment's epoch.
            std::env::remove_var("SOURCE_DATE_EPOCH");
            make_base(&store, tmp.path(), &[]);
        }
    }
    std::fs::create_dir(tmp.path().join("context")).expect("context");
    let runtime = common::runtime(tmp.path());
    Some(Fixture {
        tmp,
        store,
        runtime,
    })
}

/// Tags as BASE an image of busybox-static ([`APPLETS`]), PATH set, CMD
/// sh, appended as `imagectl append` does (its times from the
/// environment's epoch).
fn append_base(store: &OciDir, tmp: &Path) {
    let rootfs = tmp.join("rootfs");
    image_testsupport::rootfs::container_rootfs(&rootfs, APPLETS);
    image_overlay::append_dir(
        store,
        None,
        &rootfs,
        &Platform::host(),
        &ConfigChanges::new()
            .cmd(["sh"])
            .env("PATH=/usr/local/bin:/usr/bin:/bin"),
        BASE,
    )
    .expect("base image");
    std::fs::remove_dir_all(&rootfs).expect("rm rootfs");
}

/// Tags as BASE an image of busybox-static ([`APPLETS`]) with `extra` files
/// (name, content) at its root, PATH set, CMD sh, stamped with
/// [`BASE_EPOCH`] (the same image in every store).
pub fn make_base(store: &OciDir, tmp: &Path, extra: &[(&str, &str)]) {
    let rootfs = tmp.join("rootfs");
    image_testsupport::rootfs::container_rootfs(&rootfs, APPLETS);
    for (name, data) in extra {
        std::fs::write(rootfs.join(name), data).expect("extra file");
    }
    let mut base = ImageBuilder::scratch(store, &Platform::host()).expect("scratch");
    base.source_date_epoch(BASE_EPOCH);
    base.add_dir(&rootfs, History::default())
        .expect("base layer");
    let rc = base
        .config_mut()
        .config
        .get_or_insert_with(Default::default);
    rc.env = Some(vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()]);
    rc.cmd = Some(vec!["sh".into()]);
    base.commit(&[BASE]).expect("base image");
    std::fs::remove_dir_all(&rootfs).expect("rm rootfs");
}

/// BASE again, as a Docker v2 schema 2 image (its layers and config given
/// Docker's media types), tagged `name`.
pub fn docker_format_base(f: &Fixture, name: &str) {
    use image_core::manifest::{descriptor_media_type, Descriptor, Manifest};
    use image_core::MediaType;
    use image_store::{Ingester, TagStore};
    let oci = image_store::resolve_image(&f.store, BASE, None).expect("base");
    let docker = |d: &Descriptor| {
        let mut d = d.clone();
        let t = descriptor_media_type(&d)
            .to_docker()
            .expect("a Docker type");
        d.set_media_type((&t).into());
        d
    };
    let manifest = Manifest::build(
        &MediaType::DockerManifest,
        docker(oci.manifest.config()),
        oci.manifest.layers().iter().map(docker).collect(),
        None,
    )
    .expect("manifest");
    f.store.write_blob(manifest.raw()).expect("manifest blob");
    f.store.set_tag(name, &manifest.descriptor()).expect("tag");
}

/// A platform the host cannot run: arm64, or amd64 on an arm64 host.
pub fn foreign_platform() -> Platform {
    let arch = if Platform::host().architecture == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    Platform::new("linux", arch)
}

/// An OCI index tagged `name` of two images: BASE for the host, and for
/// [`foreign_platform`] an image whose one layer holds `/payload` saying
/// its architecture (a file, never run).
pub fn two_platform_base(f: &Fixture, name: &str) {
    use image_build::builder::{File, ImageBuilder};
    use image_core::oci_spec::image::{ImageIndexBuilder, MediaType};
    use image_store::{Ingester, TagStore};
    let foreign = foreign_platform();
    let mut b = ImageBuilder::scratch(&f.store, &foreign).expect("scratch");
    let payload = format!("{} payload\n", foreign.architecture).into_bytes();
    b.add_files(
        &[File::regular("payload", payload, 0o644)],
        image_core::config::History::default(),
    )
    .expect("payload layer");
    let other = b.commit(&[]).expect("foreign image");
    let host = image_store::resolve_image(&f.store, BASE, None).expect("base");
    let entry = |mut d: image_core::Descriptor, p: &Platform| {
        d.set_platform(Some(p.into()));
        d
    };
    let inner = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![
            entry(host.manifest.descriptor(), &Platform::host()),
            entry(other.manifest.descriptor(), &foreign),
        ])
        .build()
        .expect("index");
    let index = image_core::Index::new(inner).expect("index");
    f.store.write_blob(index.raw()).expect("index blob");
    f.store.set_tag(name, &index.descriptor()).expect("tag");
}

/// How many of `events` `kind` holds for.
pub fn count_events(events: &[BuildEvent], kind: impl Fn(&BuildEvent) -> bool) -> usize {
    events.iter().filter(|e| kind(e)).count()
}

/// `e` and its sources, joined by `: ` (what a user reads).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let chain: Vec<String> = std::iter::successors(Some(e), |e| e.source())
        .map(ToString::to_string)
        .collect();
    chain.join(": ")
}
