//! The fixture of the build engine's end-to-end tests (`build.rs`,
//! `mounts.rs`): a store holding a busybox-static base image made in the
//! test, a runtime with snapshots beside it, a context directory.
#![allow(dead_code)]

use std::path::PathBuf;

use image_build::build::{BuildError, BuildEvent, BuildOptions, BuildResult, Builder};
use image_core::Platform;
use image_overlay::ConfigChanges;
use image_runtime::Runtime;

#[path = "../common/mod.rs"]
mod common;
use image_store::{Manager, OciDir};

pub const BASE: &str = "test.local/busybox:1";
/// The applets of the base image.
pub const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "ls", "mkdir", "rm", "touch", "test", "true", "false", "env", "id", "dd",
    "sleep", "grep", "wc", "readlink", "mount", "umount",
];

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

    /// Builds `dockerfile` with the context directory, recording events.
    pub fn build(
        &self,
        dockerfile: &str,
        change: impl FnOnce(&mut BuildOptions),
    ) -> (Result<BuildResult, BuildError>, Vec<BuildEvent>) {
        let mut options = BuildOptions::new(self.context());
        options.dockerfile_text = Some(dockerfile.to_owned());
        change(&mut options);
        let mut events = Vec::new();
        let r = self
            .builder()
            .build(&options, &mut |e: &BuildEvent| events.push(e.clone()));
        (r, events)
    }

    pub fn blobs(&self) -> usize {
        self.store.list().expect("list").len()
    }
}

/// Nothing outlives a test: snapshots and mounts.
impl Drop for Fixture {
    fn drop(&mut self) {
        common::clean_up(self.tmp.path(), &self.runtime);
    }
}

/// A store holding BASE (busybox-static, PATH set, CMD sh), a runtime with
/// snapshots beside it, and an empty context directory; `None` (after a
/// loud skip) when the test cannot run here.
pub fn fixture() -> Option<Fixture> {
    if !image_testsupport::tools::ready(&[]) {
        return None;
    }
    // Every time in an image is this one, so that a rebuild from the cache
    // gives the same image (without it, only the config and manifest are
    // new). Set once, before any build of any test reads it: every test
    // starts here and waits for the one writer.
    static EPOCH: std::sync::Once = std::sync::Once::new();
    EPOCH.call_once(|| std::env::set_var("SOURCE_DATE_EPOCH", "1700000000"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(tmp.path().join("store")).expect("store");
    let rootfs = tmp.path().join("rootfs");
    image_testsupport::rootfs::container_rootfs(&rootfs, APPLETS);
    image_overlay::append_dir(
        &store,
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
    std::fs::create_dir(tmp.path().join("context")).expect("context");
    let runtime = common::runtime(tmp.path());
    Some(Fixture {
        tmp,
        store,
        runtime,
    })
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
