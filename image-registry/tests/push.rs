//! Pushes from a store to the real distribution registry (Debian's
//! `docker-registry`), most through the fault proxy of image-testsupport
//! so that the requests can be counted and cut; what we pushed is pulled
//! back into a fresh store and copied by skopeo.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use image_core::config::ConfigFile;
use image_core::progress::Recorder;
use image_core::{
    Descriptor, Digest, ImageConfig, Interrupt, Manifest, MediaType, Platform, Reference, Tracker,
};
use image_registry::{blocking, Client, Credentials, PullOptions, PushOptions, RegistryConfig};
use image_registry::{PushReport, RetryPolicy};
use image_store::{Ingester, OciDir, Provider, TagStore};
use image_testsupport::registry::{Exchange, Fault, FaultProxy, Faults, Registry, RegistryOptions};
use image_testsupport::tools::{skip_or_fail, which};

/// An image in `store` whose layers hold `sizes` pseudo-random bytes
/// each (the first gzip-compressed, the others as they are), seeded by
/// `seed`; its manifest.
fn image(store: &OciDir, sizes: &[usize], seed: u64) -> Manifest {
    let mut next = image_testsupport::xorshift(seed);
    let mut layers = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let bytes: Vec<u8> = (0..size).map(|_| next() as u8).collect();
        let (bytes, media_type) = if i == 0 {
            (
                image_testsupport::codec::gzip(&bytes),
                MediaType::OciLayerGzip,
            )
        } else {
            (bytes, MediaType::OciLayer)
        };
        let digest = store.write_blob(&bytes).unwrap();
        layers.push(image_core::manifest::descriptor(
            &media_type,
            &digest,
            bytes.len() as u64,
        ));
    }
    let config = ImageConfig::new(ConfigFile::for_platform(&Platform::host())).unwrap();
    let config_digest = store.write_blob(config.raw()).unwrap();
    let m = image_store::archive::build_manifest(&config_digest, config.raw().len() as u64, layers)
        .unwrap();
    store.write_blob(m.raw()).unwrap();
    m
}

fn blobs(m: &Manifest) -> Vec<Digest> {
    std::iter::once(m.config())
        .chain(m.layers())
        .map(|d| d.digest().to_string().parse().unwrap())
        .collect()
}

fn client_with(builder: image_registry::ClientBuilder) -> blocking::Client {
    let retry = RetryPolicy {
        attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    };
    blocking::Client::from_builder(
        builder
            .config(RegistryConfig::new().with_loopback_http(true))
            .retry(retry),
    )
    .unwrap()
}

fn client() -> blocking::Client {
    client_with(Client::builder())
}

/// Pulls `reference` into a fresh store and checks that it has the
/// manifest `m` and every blob byte for byte as `src` has it.
fn pulled_back(c: &blocking::Client, reference: &Reference, src: &OciDir, m: &Manifest) {
    let (_d, dst) = image_testsupport::store::oci_dir();
    let report = c
        .pull(reference, &dst, &PullOptions::default())
        .expect("pull what was pushed");
    assert_eq!(report.descriptor.unwrap().digest(), m.descriptor().digest());
    let mut all = blobs(m);
    all.push(m.digest().clone());
    for digest in all {
        assert_eq!(
            dst.read_blob_to_vec(&digest, 1 << 30).unwrap(),
            src.read_blob_to_vec(&digest, 1 << 30).unwrap(),
            "{digest}"
        );
    }
}

fn upload_requests<'a>(exchanges: &'a [Exchange], repo: &str) -> Vec<&'a Exchange> {
    let prefix = format!("/v2/{repo}/blobs/uploads/");
    exchanges
        .iter()
        .filter(|e| e.target.starts_with(&prefix))
        .collect()
}

fn push(
    c: &blocking::Client,
    src: &OciDir,
    m: &Manifest,
    dest: &Reference,
    options: &PushOptions,
) -> Result<PushReport, image_registry::PushError> {
    c.push(src, &m.descriptor(), dest, options)
}

#[test]
fn a_pushed_image_pulls_back_identical_large_layers_go_in_chunks_and_a_second_push_skips_all() {
    let Some(registry) = Registry::start_or_skip(RegistryOptions::plain()) else {
        return;
    };
    let proxy = FaultProxy::start(registry.addr(), Faults::none());
    let (_s, src) = image_testsupport::store::oci_dir();
    let m = image(&src, &[40_000, 2_600_000], 1);
    let dest = Reference::parse_name(&format!("{}/team/pushed:1", proxy.host_port())).unwrap();
    let c = client();
    let recorder = Arc::new(Recorder::new());
    let options = PushOptions::default()
        .with_chunking(1024 * 1024, 512 * 1024)
        .with_tracker(Tracker::new(recorder.clone(), Interrupt::new()));
    let report = push(&c, &src, &m, &dest, &options).unwrap();
    assert_eq!(
        report.descriptor.as_ref().unwrap().digest(),
        m.descriptor().digest()
    );
    assert_eq!(report.tag.as_deref(), Some(dest.to_string().as_str()));
    assert_eq!(report.uploaded.len(), 3, "{report:?}");
    assert!(report.resumed.is_empty());
    assert!(
        recorder.violations().is_empty(),
        "{:?}",
        recorder.violations()
    );
    assert!(recorder.items().values().all(|i| i.finished));

    // The large layer went in PATCHes of at most a chunk, closed by an
    // empty PUT; the small blobs in one PUT each.
    let exchanges = proxy.exchanges();
    let uploads = upload_requests(&exchanges, "team/pushed");
    let patches: Vec<_> = uploads.iter().filter(|e| e.method == "PATCH").collect();
    assert_eq!(patches.len(), 5, "{uploads:#?}");
    assert!(patches.iter().all(|e| e.request_bytes <= 512 * 1024));
    assert_eq!(
        patches.iter().map(|e| e.request_bytes).sum::<u64>(),
        m.layers()[1].size()
    );
    let puts: Vec<_> = uploads.iter().filter(|e| e.method == "PUT").collect();
    assert_eq!(puts.len(), 3);
    // Manifests after blobs, the tag last.
    let last = exchanges
        .iter()
        .rposition(|e| e.target.contains("/blobs/"))
        .unwrap();
    let tag_put = exchanges
        .iter()
        .rposition(|e| e.method == "PUT" && e.target.ends_with("/manifests/1"))
        .unwrap();
    assert!(tag_put > last);

    // The registry's digest is ours, byte for byte.
    let head = c.head_manifest(&dest).unwrap().unwrap();
    assert_eq!(head.digest(), m.descriptor().digest());
    pulled_back(&c, &dest, &src, &m);

    // Again: every blob is there, nothing is uploaded.
    let before = proxy.exchanges().len();
    let again = push(&c, &src, &m, &dest, &PushOptions::default()).unwrap();
    assert_eq!(again.skipped.len(), 3);
    assert!(again.uploaded.is_empty() && again.documents.is_empty());
    assert!(proxy.exchanges()[before..]
        .iter()
        .all(|e| !e.target.contains("/blobs/uploads/")));

    // skopeo reads what we pushed.
    let Some(skopeo) = which("skopeo") else {
        skip_or_fail("skopeo");
        return;
    };
    let out_dir = tempfile::tempdir().unwrap();
    let layout = out_dir.path().join("layout");
    let mut cmd = Command::new(skopeo);
    cmd.args([
        "--insecure-policy",
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
    ])
    .arg(format!("docker://{dest}"))
    .arg(format!("oci:{}:copied", layout.display()));
    let out = image_testsupport::process::run_bounded(cmd);
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copied = OciDir::open(&layout).unwrap();
    assert_eq!(
        copied.resolve_tag("copied").unwrap().digest(),
        m.descriptor().digest()
    );
}

#[test]
fn a_blob_in_another_repository_is_mounted_not_uploaded() {
    let Some(registry) = Registry::start_or_skip(RegistryOptions::plain()) else {
        return;
    };
    let proxy = FaultProxy::start(registry.addr(), Faults::none());
    let (_s, src) = image_testsupport::store::oci_dir();
    let m = image(&src, &[30_000, 200_000], 2);
    let host = proxy.host_port();
    let c = client();
    let first = Reference::parse_name(&format!("{host}/base/app:1")).unwrap();
    push(&c, &src, &m, &first, &PushOptions::default()).unwrap();

    let before = proxy.exchanges().len();
    let second = Reference::parse_name(&format!("{host}/other/app:2")).unwrap();
    let options = PushOptions::default().with_mount_from("base/app");
    let report = push(&c, &src, &m, &second, &options).unwrap();
    assert_eq!(report.mounted.len(), 3, "{report:?}");
    assert!(report.uploaded.is_empty());
    let exchanges = proxy.exchanges()[before..].to_vec();
    let uploads = upload_requests(&exchanges, "other/app");
    assert_eq!(uploads.len(), 3, "{uploads:#?}");
    assert!(uploads
        .iter()
        .all(|e| e.method == "POST" && e.target.contains("mount=") && e.status == 201));
    pulled_back(&c, &second, &src, &m);
}

#[test]
fn a_patch_cut_mid_body_goes_on_in_a_new_upload_and_completes() {
    // The second PATCH is cut mid-body: distribution then refuses the old
    // upload URL, and the layer goes again in a new upload.
    let fault = Fault::cut_request_after(300_000)
        .on("/blobs/uploads/")
        .method("PATCH");
    let Some(run) = FaultedPush::run("cut/app", 3, fault) else {
        return;
    };
    assert!(
        run.report.resumed.contains(&(run.layer.clone(), 0)),
        "{:?}\n{:#?}",
        run.report,
        run.proxy.exchanges()
    );
    // The progress shown never went back to 0.
    let recorder = &run.faults.recorder;
    assert!(
        recorder.violations().is_empty(),
        "{:?}",
        recorder.violations()
    );
    assert!(recorder.items().values().all(|i| i.finished));
    run.pulled_back();
}

#[test]
fn a_push_cut_by_the_registry_dying_completes_when_retried_and_skips_what_arrived() {
    let Some(mut registry) = Registry::start_or_skip(RegistryOptions::plain()) else {
        return;
    };
    let (_s, src) = image_testsupport::store::oci_dir();
    let m = image(&src, &[20_000, 30_000, 40_000], 4);
    let all = blobs(&m);
    // Blobs go one at a time in manifest order: the last layer's PUT is
    // held while the registry is killed.
    let last = all.last().unwrap().clone();
    let faults = Faults::none().with(Fault::hold().on(last.hex()).method("PUT"));
    let proxy = FaultProxy::start(registry.addr(), faults);
    let dest = Reference::parse_name(&format!("{}/dies/app:1", proxy.host_port())).unwrap();
    let options = PushOptions::default().with_parallel(1);
    let failed = std::thread::scope(|s| {
        let pushing = s.spawn(|| push(&client(), &src, &m, &dest, &options));
        assert!(proxy.wait_held(1, Duration::from_secs(60)));
        registry.kill();
        proxy.release();
        pushing.join().unwrap()
    });
    assert!(failed.is_err());
    registry.restart();
    let c = client();
    let report = push(&c, &src, &m, &dest, &options).unwrap();
    assert_eq!(report.skipped, all[..3].to_vec(), "{report:?}");
    assert_eq!(report.uploaded, vec![last]);
    pulled_back(&c, &dest, &src, &m);
}

#[test]
fn push_with_basic_and_token_auth() {
    for (what, options) in [
        ("basic", RegistryOptions::basic()),
        ("token", RegistryOptions::token()),
    ] {
        let Some(registry) = Registry::start_or_skip(options) else {
            return;
        };
        let (_s, src) = image_testsupport::store::oci_dir();
        let m = image(&src, &[30_000], 5);
        let host = registry.host_port();
        let dest = Reference::parse_name(&format!("{host}/auth/app:1")).unwrap();
        let anonymous = client();
        let e = push(&anonymous, &src, &m, &dest, &PushOptions::default()).unwrap_err();
        image_testsupport::chain::assert_said_once(&e);
        assert_eq!(
            image_core::error::classify(&e, image_registry::kind_of),
            Some(image_core::ErrorKind::Unauthenticated),
            "{what}: {e:?}"
        );
        let creds = registry.credentials().unwrap().clone();
        let c = client_with(Client::builder().credentials(
            host.clone(),
            Credentials::basic(creds.user.clone(), creds.password.clone()),
        ));
        let report = push(&c, &src, &m, &dest, &PushOptions::default()).unwrap();
        assert_eq!(report.uploaded.len(), 2, "{what}");
        pulled_back(&c, &dest, &src, &m);
        if what == "token" {
            assert!(registry.token_requests().iter().any(|t| t
                .scopes
                .iter()
                .any(|s| s == "repository:auth/app:pull,push")));
        }
    }
}

/// Credentials from a credential helper, for a registry that asks for
/// Basic authentication on every request, and for one with a token
/// server: when the registry or its token server refuses what the helper
/// gave, the next push runs it again (the password may have changed: the
/// lookup is not kept); and with the right password the helper runs once
/// (twice when two lookups miss at once) for a push and the pull after it
/// (same repository), not once per request (Basic) or per token.
#[test]
fn a_credential_helper_runs_once_for_a_push_not_per_request() {
    for (what, options) in [
        ("basic", RegistryOptions::basic()),
        ("token", RegistryOptions::token()),
    ] {
        let Some(registry) = Registry::start_or_skip(options) else {
            return;
        };
        let creds = registry.credentials().unwrap().clone();
        let host = registry.host_port();
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        let helper = dir.path().join("docker-credential-pushonce");
        std::fs::write(
            &helper,
            format!(
                "#!/bin/sh\nread server\necho \"$server\" >> '{}'\necho '{{\"ServerURL\":\"'$server'\",\"Username\":\"{}\",\"Secret\":\"'$(cat '{}')'\"}}'\n",
                runs.display(),
                creds.user,
                dir.path().join("secret").display(),
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("secret"), "not-the-password").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cfg = dir.path().join("config.json");
        std::fs::write(
            &cfg,
            format!(r#"{{"credHelpers":{{"{host}":"pushonce"}}}}"#),
        )
        .unwrap();
        // The helper is found on PATH, as Docker finds it (other tests of this
        // process see one more directory there, holding only this helper).
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        std::env::set_var("PATH", path);
        let docker_config = image_registry::DockerConfig::load(&[cfg]).unwrap();
        let c = client_with(Client::builder().docker_config(docker_config));
        let (_s, src) = image_testsupport::store::oci_dir();
        let m = image(&src, &[30_000, 20_000, 10_000], 11);
        let dest = Reference::parse_name(&format!("{host}/helped/app:1")).unwrap();
        let ran = || std::fs::read_to_string(&runs).unwrap().lines().count();
        let e = push(&c, &src, &m, &dest, &PushOptions::default()).unwrap_err();
        assert_eq!(
            image_core::error::classify(&e, image_registry::kind_of),
            Some(image_core::ErrorKind::Unauthenticated),
            "{e:?}"
        );
        // Each refusal has them looked up again (each blob's first request
        // here): the helper ran at least once.
        let first = ran();
        assert!(first >= 1, "{what}");
        std::fs::write(dir.path().join("secret"), &creds.password).unwrap();
        let report = push(&c, &src, &m, &dest, &PushOptions::default()).unwrap();
        assert_eq!(report.uploaded.len(), 4);
        pulled_back(&c, &dest, &src, &m);
        let again = ran() - first;
        assert!(
            (1..=2).contains(&again),
            "{what}: the helper ran {again} times for a push and a pull"
        );
    }
}

/// A descriptor that is not in the store: a typed NotFound, nothing sent.
#[test]
fn a_descriptor_the_store_lacks_is_not_found() {
    let (_s, src) = image_testsupport::store::oci_dir();
    let missing: Descriptor =
        image_core::manifest::descriptor(&MediaType::OciManifest, &Digest::sha256(b"nothing"), 7);
    let dest = Reference::parse_name("127.0.0.1:9/none:1").unwrap();
    let e = client()
        .push(&src, &missing, &dest, &PushOptions::default())
        .unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert_eq!(
        image_core::error::classify(&e, image_registry::kind_of),
        Some(image_core::ErrorKind::NotFound),
        "{e:?}"
    );
}

/// Adds `fault` to the proxy once blob `item` has `at` bytes
/// acknowledged (a fault on the requests after the first chunk), and
/// records the progress.
struct FaultAt {
    proxy: Arc<FaultProxy>,
    item: String,
    at: u64,
    fault: std::sync::Mutex<Option<Fault>>,
    recorder: Recorder,
}

impl FaultAt {
    fn new(proxy: &Arc<FaultProxy>, item: &Digest, at: u64, fault: Fault) -> Arc<FaultAt> {
        Arc::new(FaultAt {
            proxy: proxy.clone(),
            item: item.to_string(),
            at,
            fault: std::sync::Mutex::new(Some(fault)),
            recorder: Recorder::new(),
        })
    }
}

impl image_core::Progress for FaultAt {
    fn item_started(&self, item: &str, total: Option<u64>) {
        self.recorder.item_started(item, total);
    }

    fn item_progress(&self, item: &str, done: u64) {
        self.recorder.item_progress(item, done);
        if item == self.item && done >= self.at {
            if let Some(f) = self.fault.lock().unwrap().take() {
                self.proxy.add(f);
            }
        }
    }

    fn item_finished(&self, item: &str) {
        self.recorder.item_finished(item);
    }
}

/// A push through the fault proxy of an image whose second layer (3 MB)
/// goes in 1 MiB chunks, `fault` added once its first chunk is
/// acknowledged.
struct FaultedPush {
    _registry: Registry,
    proxy: Arc<FaultProxy>,
    _src_dir: tempfile::TempDir,
    src: OciDir,
    m: Manifest,
    layer: Digest,
    faults: Arc<FaultAt>,
    client: blocking::Client,
    dest: Reference,
    report: PushReport,
}

impl FaultedPush {
    const CHUNK: u64 = 1024 * 1024;

    fn run(repository: &str, seed: u64, fault: Fault) -> Option<FaultedPush> {
        let registry = Registry::start_or_skip(RegistryOptions::plain())?;
        let proxy = Arc::new(FaultProxy::start(registry.addr(), Faults::none()));
        let (src_dir, src) = image_testsupport::store::oci_dir();
        let m = image(&src, &[10_000, 3_000_000], seed);
        let layer: Digest = m.layers()[1].digest().to_string().parse().unwrap();
        let faults = FaultAt::new(&proxy, &layer, Self::CHUNK, fault);
        let dest = Reference::parse_name(&format!("{}/{repository}:1", proxy.host_port())).unwrap();
        let options = PushOptions::default()
            .with_chunking(Self::CHUNK, Self::CHUNK)
            .with_tracker(Tracker::new(faults.clone(), Interrupt::new()));
        let client = client();
        let report = push(&client, &src, &m, &dest, &options).unwrap();
        Some(FaultedPush {
            _registry: registry,
            proxy,
            _src_dir: src_dir,
            src,
            m,
            layer,
            faults,
            client,
            dest,
            report,
        })
    }

    fn pulled_back(&self) {
        pulled_back(&self.client, &self.dest, &self.src, &self.m);
    }
}

#[test]
fn a_chunked_upload_failing_past_its_retries_goes_on_from_the_registrys_range() {
    // Every PATCH after the first chunk answers 500 as many times as the
    // client tries a request (3): the upload must ask where it stands.
    let fault = Fault::status(500)
        .on("/blobs/uploads/")
        .method("PATCH")
        .times(3);
    let Some(run) = FaultedPush::run("range/app", 6, fault) else {
        return;
    };
    assert_eq!(
        run.report.resumed,
        vec![(run.layer.clone(), FaultedPush::CHUNK)],
        "{:?}",
        run.report
    );
    assert!(run.faults.recorder.violations().is_empty());
    let exchanges = run.proxy.exchanges();
    assert!(exchanges
        .iter()
        .any(|e| e.method == "GET" && e.target.contains("/blobs/uploads/") && e.status == 204));
    // The acknowledged chunk was not sent again.
    let sent: u64 = upload_requests(&exchanges, "range/app")
        .iter()
        .filter(|e| e.method == "PATCH" && e.status == 202)
        .map(|e| e.request_bytes)
        .sum();
    assert_eq!(sent, run.m.layers()[1].size());
    run.pulled_back();
}

#[test]
fn an_interrupt_stops_the_push_between_chunks_and_sets_no_tag() {
    let Some(registry) = Registry::start_or_skip(RegistryOptions::plain()) else {
        return;
    };
    let (_s, src) = image_testsupport::store::oci_dir();
    interrupted_push(&src, &registry.host_port(), "stop/app", 7, 512 * 1024);
}

/// Pushes a one-layer image (3 MB, seeded by `seed`) from `src` to
/// `repository` on `host`, in PATCHes of `chunk` bytes, interrupted once
/// 512 KiB of the layer are sent; checks that the push is `Cancelled`
/// and set no tag.
fn interrupted_push(src: &OciDir, host: &str, repository: &str, seed: u64, chunk: u64) -> Manifest {
    let m = image(src, &[3_000_000], seed);
    let interrupt = Interrupt::new();
    let recorder = Arc::new(Recorder::stopping_at(interrupt.clone(), 512 * 1024));
    let options = PushOptions::default()
        .with_chunking(1024, chunk)
        .with_tracker(Tracker::new(recorder, interrupt));
    let dest = Reference::parse_name(&format!("{host}/{repository}:1")).unwrap();
    let c = client();
    let e = push(&c, src, &m, &dest, &options).unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert_eq!(
        image_core::error::classify(&e, image_registry::kind_of),
        Some(image_core::ErrorKind::Cancelled),
        "{e:?}"
    );
    assert!(c.head_manifest(&dest).unwrap().is_none());
    m
}

#[test]
fn a_digest_in_the_destination_must_be_the_images() {
    let Some(registry) = Registry::start_or_skip(RegistryOptions::plain()) else {
        return;
    };
    let (_s, src) = image_testsupport::store::oci_dir();
    let m = image(&src, &[1000], 11);
    let other = image(&src, &[1000], 12);
    let c = client();
    let host = registry.host_port();
    let wrong = Reference::parse_name(&format!("{host}/x@{}", other.digest())).unwrap();
    let e = push(&c, &src, &m, &wrong, &PushOptions::default()).unwrap_err();
    assert!(
        matches!(&e, image_registry::PushError::DestinationDigest { dest, source_digest }
            if dest == other.digest() && source_digest == m.digest()),
        "{e:?}"
    );
    assert_eq!(
        image_core::Classify::kind(&e),
        image_core::ErrorKind::InvalidInput
    );
    // Nothing was sent.
    assert_eq!(c.blob_size(&wrong, &blobs(&m)[1]).unwrap(), None);
    let right = Reference::parse_name(&format!("{host}/x@{}", m.digest())).unwrap();
    push(&c, &src, &m, &right, &PushOptions::default()).unwrap();
    assert_eq!(c.get_manifest(&right).unwrap().raw(), m.raw());
}

/// A registry behind a fault proxy without faults, and an empty store.
fn proxied() -> Option<(Registry, FaultProxy, tempfile::TempDir, OciDir)> {
    let registry = Registry::start_or_skip(RegistryOptions::plain())?;
    let proxy = FaultProxy::start(registry.addr(), Faults::none());
    let (dir, src) = image_testsupport::store::oci_dir();
    Some((registry, proxy, dir, src))
}

#[test]
fn a_large_blob_goes_in_one_streamed_patch_by_default() {
    // Above the monolithic limit (16 MiB) the default sends the whole
    // blob in one PATCH, as skopeo does: every PATCH costs distribution a
    // flush of the upload, so 8 MiB chunks made the push slower than
    // skopeo's.
    let Some((_registry, proxy, _s, src)) = proxied() else {
        return;
    };
    let large = 20 * 1024 * 1024 + 5;
    let m = image(&src, &[10_000, large], 8);
    let dest = Reference::parse_name(&format!("{}/one/patch:1", proxy.host_port())).unwrap();
    let c = client();
    let recorder = Arc::new(Recorder::new());
    let options =
        PushOptions::default().with_tracker(Tracker::new(recorder.clone(), Interrupt::new()));
    let report = push(&c, &src, &m, &dest, &options).unwrap();
    assert_eq!(report.uploaded.len(), 3, "{report:?}");
    assert_eq!(report.bytes_sent, blobs_size(&m));
    let exchanges = proxy.exchanges();
    let uploads = upload_requests(&exchanges, "one/patch");
    let patches: Vec<_> = uploads.iter().filter(|e| e.method == "PATCH").collect();
    assert_eq!(patches.len(), 1, "{uploads:#?}");
    assert_eq!(patches[0].request_bytes, large as u64);
    assert_eq!(uploads.iter().filter(|e| e.method == "PUT").count(), 3);
    assert!(
        recorder.violations().is_empty(),
        "{:?}",
        recorder.violations()
    );
    assert!(recorder.items().values().all(|i| i.finished));
    pulled_back(&c, &dest, &src, &m);
}

fn blobs_size(m: &Manifest) -> u64 {
    std::iter::once(m.config())
        .chain(m.layers())
        .map(Descriptor::size)
        .sum()
}

#[test]
fn a_blob_changed_in_the_store_fails_the_push_before_its_upload_closes() {
    let Some((_registry, proxy, _s, src)) = proxied() else {
        return;
    };
    let m = image(&src, &[3_000_000], 9);
    let layer: Digest = m.layers()[0].digest().to_string().parse().unwrap();
    // One byte in the middle of the stored layer changed behind the
    // store's back.
    let path = src.blob_path(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1_500_000] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let c = client();
    // In one PUT (below the monolithic limit), then in PATCHes.
    for (i, options) in [
        PushOptions::default(),
        PushOptions::default().with_chunking(1024 * 1024, 1024 * 1024),
    ]
    .into_iter()
    .enumerate()
    {
        let repo = format!("changed/app{i}");
        let dest = Reference::parse_name(&format!("{}/{repo}:1", proxy.host_port())).unwrap();
        let e = push(&c, &src, &m, &dest, &options).unwrap_err();
        match &e {
            image_registry::PushError::Read { digest, .. } => assert_eq!(digest, &layer),
            other => panic!("{repo}: {other:?}"),
        }
        // The upload of the changed blob was never closed, no tag set.
        let exchanges = proxy.exchanges();
        let closing = format!("digest={layer}");
        assert!(
            !upload_requests(&exchanges, &repo)
                .iter()
                .any(|e| e.method == "PUT" && e.target.contains(&closing)),
            "{exchanges:#?}"
        );
        assert!(c.head_manifest(&dest).unwrap().is_none());
    }
}

#[test]
fn an_interrupt_stops_the_push_in_the_middle_of_a_streamed_patch() {
    let Some((_registry, proxy, _s, src)) = proxied() else {
        return;
    };
    // One PATCH for the whole layer: the interrupt comes in its middle.
    let m = interrupted_push(&src, &proxy.host_port(), "midstop/app", 10, u64::MAX);
    let exchanges = proxy.exchanges();
    let uploads = upload_requests(&exchanges, "midstop/app");
    // The PATCH stopped short of the layer, and the layer's upload was not
    // closed (the config's may have been, in parallel).
    assert!(uploads
        .iter()
        .filter(|e| e.method == "PATCH")
        .all(|e| e.request_bytes < 3_000_000));
    let closing = format!("digest={}", m.layers()[0].digest());
    assert!(
        !uploads
            .iter()
            .any(|e| e.method == "PUT" && e.target.contains(&closing)),
        "{uploads:#?}"
    );
}

/// A registry (or `None` after a loud skip) and a store with an image of
/// a small layer and one of 2.5 MB (chunked by [`refused_push`]).
fn registry_and_image(seed: u64) -> Option<(Registry, tempfile::TempDir, OciDir, Manifest)> {
    let registry = Registry::start_or_skip(RegistryOptions::plain())?;
    let (dir, src) = image_testsupport::store::oci_dir();
    let m = image(&src, &[10_000, 2_500_000], seed);
    Some((registry, dir, src, m))
}

/// A registry's lie: header `name` set to `value` in every answer to a
/// `method` request whose target holds `on`.
fn lie(name: &str, value: &str, on: &str, method: &str) -> Fault {
    Fault::set_header(name, value)
        .on(on)
        .method(method)
        .always()
}

/// Pushes `m` from `src` to `repository:1` of `registry` through a fault
/// proxy injecting `fault` (blobs one at a time, mounted from
/// `mount_from` when given; above 1 MiB in 1 MiB PATCHes), which must
/// fail with `kind` and leave no tag; the upload requests the registry
/// saw.
fn refused_push(
    registry: &Registry,
    fault: Fault,
    (src, m): (&OciDir, &Manifest),
    (repository, mount_from): (&str, Option<&str>),
    kind: image_core::ErrorKind,
) -> Vec<Exchange> {
    let proxy = FaultProxy::start(registry.addr(), Faults::none().with(fault));
    let c = client();
    let dest = Reference::parse_name(&format!("{}/{repository}:1", proxy.host_port())).unwrap();
    let mut options = PushOptions::default()
        .with_parallel(1)
        .with_chunking(1024 * 1024, 1024 * 1024);
    if let Some(from) = mount_from {
        options = options.with_mount_from(from);
    }
    let e = push(&c, src, m, &dest, &options).unwrap_err();
    assert_eq!(
        image_core::error::classify(&e, image_registry::kind_of),
        Some(kind),
        "{e:?}"
    );
    assert_eq!(c.head_manifest(&dest).unwrap(), None, "no tag");
    upload_requests(&proxy.exchanges(), repository)
        .into_iter()
        .cloned()
        .collect()
}

#[test]
fn a_blob_put_answered_with_another_digest_fails_the_push_without_a_tag() {
    use image_core::ErrorKind::DigestMismatch;
    let Some((registry, _s, src, m)) = registry_and_image(31) else {
        return;
    };
    let other = Digest::sha256(b"not what was sent").to_string();
    let header = "Docker-Content-Digest";

    // The closing PUT of a monolithic upload (the config, first).
    let fault = lie(header, &other, "/blobs/uploads/", "PUT");
    let uploads = refused_push(
        &registry,
        fault,
        (&src, &m),
        ("lies/put", None),
        DigestMismatch,
    );
    // Refused at once, not uploaded again.
    let puts = uploads.iter().filter(|e| e.method == "PUT").count();
    assert_eq!(puts, 1, "{uploads:#?}");

    // The closing PUT after the PATCHes of a chunked upload.
    let layer = format!("digest={}", m.layers()[1].digest());
    let fault = lie(header, &other, &layer, "PUT");
    let uploads = refused_push(
        &registry,
        fault,
        (&src, &m),
        ("lies/chunked", None),
        DigestMismatch,
    );
    let patched: u64 = uploads
        .iter()
        .filter(|e| e.method == "PATCH")
        .map(|e| e.request_bytes)
        .sum();
    assert_eq!(patched, m.layers()[1].size(), "sent once: {uploads:#?}");

    // A mount answered 201 with another digest (the config, which the
    // registry got in lies/put above).
    let fault = lie(header, &other, "mount=", "POST");
    let to = ("lies/mount", Some("lies/put"));
    let uploads = refused_push(&registry, fault, (&src, &m), to, DigestMismatch);
    assert!(uploads.iter().all(|e| e.method == "POST"), "{uploads:#?}");
}

#[test]
fn an_upload_range_past_u64_or_going_back_is_refused_typed_after_bounded_tries() {
    let Some((registry, _s, src, m)) = registry_and_image(32) else {
        return;
    };
    for (repository, range) in [
        ("range/overflow", "0-18446744073709551615"),
        ("range/back", "0-99"),
    ] {
        let fault = lie("Range", range, "/blobs/uploads/", "PATCH");
        let uploads = refused_push(
            &registry,
            fault,
            (&src, &m),
            (repository, None),
            image_core::ErrorKind::InvalidInput,
        );
        // One PATCH per attempt (3), each from where the registry stands.
        let patches = uploads.iter().filter(|e| e.method == "PATCH").count();
        assert!(patches <= 3, "{range}: {uploads:#?}");
    }
}

/// A registry that refuses an upload (403 to its `PATCH`: the repository
/// is read-only to these credentials) fails the push at once, typed, with
/// no tag: the upload is not started again and again, as a failure of the
/// network would be (Docker's pusher gives up on the same refusals).
#[test]
fn an_upload_the_registry_refuses_is_not_restarted() {
    let Some((registry, _s, src, m)) = registry_and_image(33) else {
        return;
    };
    let fault = Fault::status(403)
        .on("/blobs/uploads/")
        .method("PATCH")
        .always();
    let uploads = refused_push(
        &registry,
        fault,
        (&src, &m),
        ("refused/app", None),
        image_core::ErrorKind::Unauthenticated,
    );
    // The small blobs go in one PUT each; the large one's first PATCH is
    // refused, tried once more after the client's round of
    // authentication, and no upload is started after it.
    let first_patch = uploads
        .iter()
        .position(|e| e.method == "PATCH")
        .expect("a PATCH");
    let after = &uploads[first_patch..];
    let patches = after.iter().filter(|e| e.method == "PATCH").count();
    let starts = after.iter().filter(|e| e.method == "POST").count();
    assert!(patches <= 2, "{uploads:#?}");
    assert_eq!(starts, 0, "{uploads:#?}");
}
