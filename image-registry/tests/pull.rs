//! Pulls against the real distribution registry (Debian's
//! `docker-registry`, images pushed by skopeo) and against tiny HTTP
//! servers made here for what a real registry will not do (redirect to
//! another host, a schema 1 manifest, hostile answers).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use image_core::config::ConfigFile;
use image_core::error::classify;
use image_core::progress::Recorder;
use image_core::{
    Digest, ErrorKind, ImageConfig, Interrupt, Manifest, MediaType, Platform, Reference, Tracker,
};
use image_registry::{blocking, Client, Credentials, PullOptions, RegistryConfig, RetryPolicy};
use image_store::{Ingester, OciDir, Provider, TagStore};
use image_testsupport::registry::{Registry, RegistryOptions};
use image_testsupport::tools::{skip_or_fail, which};

/// A registry started with `options` and one image (a layer of
/// `layer_size` random bytes) pushed to it by skopeo as `name`.
struct Pushed {
    registry: Registry,
    src: OciDir,
    _src_dir: tempfile::TempDir,
    manifest: Manifest,
    reference: Reference,
}

/// [`Pushed`], or `None` after a loud skip.
fn pushed(options: RegistryOptions, name: &str, layer_size: usize, seed: u64) -> Option<Pushed> {
    let registry = Registry::start_or_skip(options)?;
    let (src_dir, src) = image_testsupport::store::oci_dir();
    let manifest = make_image(&src, &Platform::host(), layer_size, seed);
    let creds = registry.credentials().map(|c| c.colon());
    let reference = push_as(
        &src_dir,
        &src,
        &manifest.descriptor(),
        &registry.host_port(),
        name,
        false,
        creds.as_deref(),
    )?;
    Some(Pushed {
        registry,
        src,
        _src_dir: src_dir,
        manifest,
        reference,
    })
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// An image in `store`: a config for `platform` and one gzip layer of
/// `layer_size` random bytes. Returns its manifest.
fn make_image(store: &OciDir, platform: &Platform, layer_size: usize, seed: u64) -> Manifest {
    let layer = image_testsupport::codec::gzip(&random(layer_size, seed));
    let layer_digest = store.write_blob(&layer).unwrap();
    let config = ImageConfig::new(ConfigFile::new(&platform.os, &platform.architecture)).unwrap();
    let config_digest = store.write_blob(config.raw()).unwrap();
    let m = image_store::archive::build_manifest(
        &config_digest,
        config.raw().len() as u64,
        vec![image_core::manifest::descriptor(
            &MediaType::OciLayerGzip,
            &layer_digest,
            layer.len() as u64,
        )],
    )
    .unwrap();
    store.write_blob(m.raw()).unwrap();
    m
}

/// Tags `descriptor` in the layout `src` (at `dir/layout`) as `name` and
/// pushes it with `skopeo copy` (`--all` when asked; with `user:password`
/// credentials when given) to `host/name`; the reference it has there,
/// `None` when skopeo is missing.
fn push_as(
    dir: &tempfile::TempDir,
    src: &OciDir,
    descriptor: &image_core::Descriptor,
    host: &str,
    name: &str,
    all: bool,
    creds: Option<&str>,
) -> Option<Reference> {
    src.set_tag(name, descriptor).unwrap();
    let Some(skopeo) = which("skopeo") else {
        skip_or_fail("skopeo");
        return None;
    };
    let dest = format!("{host}/{name}");
    let mut cmd = Command::new(skopeo);
    cmd.args(["--insecure-policy", "copy", "--dest-tls-verify=false"]);
    if all {
        cmd.arg("--all");
    }
    if let Some(creds) = creds {
        cmd.arg(format!("--dest-creds={creds}"));
    }
    let layout = dir.path().join("layout");
    let stored = Reference::parse_name(name).unwrap().to_string();
    cmd.arg(format!("oci:{}:{stored}", layout.display()))
        .arg(format!("docker://{dest}"));
    let out = image_testsupport::process::run_bounded(cmd);
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(Reference::parse_name(&dest).unwrap())
}

/// A fake registry's answer with a manifest.
fn manifest_answer(raw: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let ct = (
        "Content-Type".to_owned(),
        "application/vnd.oci.image.manifest.v1+json".to_owned(),
    );
    (200, vec![ct], raw.to_vec())
}

/// Pulls `reference` into a fresh store, which must fail with `kind` and
/// set no tag; the store and the error.
fn failed_pull(
    c: &blocking::Client,
    reference: &Reference,
    kind: ErrorKind,
) -> (tempfile::TempDir, OciDir, image_registry::PullError) {
    failed_pull_with(c, reference, &PullOptions::default(), kind)
}

/// [`failed_pull`] with `options`.
fn failed_pull_with(
    c: &blocking::Client,
    reference: &Reference,
    options: &PullOptions,
    kind: ErrorKind,
) -> (tempfile::TempDir, OciDir, image_registry::PullError) {
    let (dir, store) = image_testsupport::store::oci_dir();
    let e = c.pull(reference, &store, options).unwrap_err();
    assert_eq!(classify(&e, image_registry::kind_of), Some(kind), "{e:?}");
    image_testsupport::chain::assert_said_once(&e);
    assert!(store.tags().unwrap().is_empty());
    (dir, store, e)
}

/// Three attempts, short waits: the tests retry quickly.
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    }
}

fn client(config: RegistryConfig) -> blocking::Client {
    blocking::Client::from_builder(Client::builder().config(config).retry(fast_retry())).unwrap()
}

fn blob_total(store: &OciDir, m: &Manifest) -> u64 {
    let _ = store;
    m.raw().len() as u64 + m.config().size() + m.layers().iter().map(|l| l.size()).sum::<u64>()
}

#[test]
fn an_image_pushed_by_skopeo_pulls_with_identical_digests_and_present_blobs_are_skipped() {
    let Some(Pushed {
        registry,
        src,
        manifest: m,
        reference,
        _src_dir,
    }) = pushed(RegistryOptions::plain(), "team/x:1", 300_000, 1)
    else {
        return;
    };
    let dest = reference.to_string();

    // Plain HTTP to loopback only when asked.
    let refused = client(RegistryConfig::new());
    let (_d, dst) = image_testsupport::store::oci_dir();
    assert!(refused
        .pull(&reference, &dst, &PullOptions::default())
        .is_err());
    assert!(dst.tags().unwrap().is_empty());

    let c = client(RegistryConfig::new().with_loopback_http(true));
    let recorder = Arc::new(Recorder::new());
    let options =
        PullOptions::default().with_tracker(Tracker::new(recorder.clone(), Interrupt::new()));
    let report = c.pull(&reference, &dst, &options).unwrap();
    assert_eq!(
        report.descriptor.as_ref().unwrap().digest(),
        m.descriptor().digest()
    );
    assert_eq!(report.tag.as_deref(), Some(dest.as_str()));
    assert_eq!(
        dst.resolve_tag(&dest).unwrap().digest(),
        m.descriptor().digest()
    );
    for d in std::iter::once(m.config()).chain(m.layers()) {
        let digest: Digest = d.digest().to_string().parse().unwrap();
        assert_eq!(
            dst.read_blob_to_vec(&digest, 1 << 30).unwrap(),
            src.read_blob_to_vec(&digest, 1 << 30).unwrap()
        );
    }
    assert_eq!(report.fetched.len(), 2);
    assert!(
        recorder.violations().is_empty(),
        "{:?}",
        recorder.violations()
    );
    assert!(recorder.items().values().all(|i| i.finished));
    assert!(dst.ingests().unwrap().is_empty());

    // Again into the same store: every blob is skipped.
    let again = c.pull(&reference, &dst, &PullOptions::default()).unwrap();
    assert!(again.fetched.is_empty());
    assert_eq!(again.skipped.len(), 2);

    // The other calls on the same registry.
    assert_eq!(c.tags(&reference).unwrap(), vec!["1".to_owned()]);
    assert!(c
        .catalog(&registry.host_port())
        .unwrap()
        .contains(&"team/x".to_owned()));
    let head = c.head_manifest(&reference).unwrap().unwrap();
    assert_eq!(head.digest(), m.descriptor().digest());
    let missing = reference.with_tag("nope").unwrap();
    assert!(c.head_manifest(&missing).unwrap().is_none());
    let e = c.get_manifest(&missing).unwrap_err();
    assert_eq!(
        classify(&e, image_registry::kind_of),
        Some(ErrorKind::NotFound)
    );
    // Docker distribution 2.8 has no referrers API: the tag fallback
    // finds nothing.
    assert!(c
        .referrers(&reference, m.digest(), None)
        .unwrap()
        .is_empty());
    c.delete_manifest(&reference, m.digest()).unwrap();
    assert!(c.head_manifest(&reference).unwrap().is_none());
}

#[test]
fn an_interrupted_pull_resumes_with_a_range_request() {
    let Some(Pushed {
        registry: _registry,
        src,
        manifest: m,
        reference,
        _src_dir,
    }) = pushed(RegistryOptions::plain(), "big:1", 6 * 1024 * 1024, 2)
    else {
        return;
    };
    let dest = reference.to_string();
    let c = client(RegistryConfig::new().with_loopback_http(true));
    let (_d, dst) = image_testsupport::store::oci_dir();
    let interrupt = Interrupt::new();
    let stop_at = 2 * 1024 * 1024;
    let recorder = Arc::new(Recorder::stopping_at(interrupt.clone(), stop_at));
    let options = PullOptions::default().with_tracker(Tracker::new(recorder.clone(), interrupt));
    let e = c.pull(&reference, &dst, &options).unwrap_err();
    assert_eq!(
        classify(&e, image_registry::kind_of),
        Some(ErrorKind::Cancelled),
        "{e:?}"
    );
    assert!(dst.tags().unwrap().is_empty());
    let layer: Digest = m.layers()[0].digest().to_string().parse().unwrap();
    assert!(!dst.exists(&layer).unwrap());
    let first = recorder.items()[&layer.to_string()].done;
    assert!(first >= stop_at && first < m.layers()[0].size());

    let report = c.pull(&reference, &dst, &PullOptions::default()).unwrap();
    assert_eq!(report.resumed, vec![(layer.clone(), first)]);
    assert!(dst.exists(&layer).unwrap());
    let total = blob_total(&src, &m);
    let fetched = first + report.bytes_received;
    assert!(
        (fetched as f64) < 1.2 * total as f64,
        "fetched {fetched} for an image of {total}"
    );
    assert_eq!(
        dst.resolve_tag(&dest).unwrap().digest(),
        m.descriptor().digest()
    );
}

#[test]
fn a_multi_platform_index_gives_the_platform_asked_for_or_all() {
    let Some(registry) = Registry::start_or_skip(RegistryOptions::plain()) else {
        return;
    };
    let (src_dir, src) = image_testsupport::store::oci_dir();
    let amd = Platform::new("linux", "amd64");
    let arm = Platform::new("linux", "arm64").with_variant("v8");
    let m_amd = make_image(&src, &amd, 1000, 3);
    let m_arm = make_image(&src, &arm, 1000, 4);
    let mut entries = Vec::new();
    for (m, p) in [(&m_amd, &amd), (&m_arm, &arm)] {
        let mut d = m.descriptor();
        d.set_platform(Some(p.into()));
        entries.push(serde_json::to_value(&d).unwrap());
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    let index = image_core::Index::from_bytes(serde_json::to_vec(&index).unwrap()).unwrap();
    src.write_blob(index.raw()).unwrap();
    let Some(reference) = push_as(
        &src_dir,
        &src,
        &index.descriptor(),
        &registry.host_port(),
        "multi:1",
        true,
        None,
    ) else {
        return;
    };
    let c = client(RegistryConfig::new().with_loopback_http(true));

    let (_d, dst) = image_testsupport::store::oci_dir();
    let report = c
        .pull(
            &reference,
            &dst,
            &PullOptions::default().with_platform(arm.clone()),
        )
        .unwrap();
    assert_eq!(
        report.descriptor.unwrap().digest(),
        m_arm.descriptor().digest()
    );
    assert!(!dst.exists(m_amd.digest()).unwrap());

    let (_d2, all) = image_testsupport::store::oci_dir();
    let report = c
        .pull(
            &reference,
            &all,
            &PullOptions::default().with_all_platforms(true),
        )
        .unwrap();
    assert_eq!(
        report.descriptor.unwrap().digest(),
        index.descriptor().digest()
    );
    assert!(all.exists(m_amd.digest()).unwrap() && all.exists(m_arm.digest()).unwrap());
    assert_eq!(report.fetched.len(), 4);
}

/// A request as the fake server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: BTreeMap<String, String>,
}

type Handler = dyn Fn(&Seen) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + Sync;

/// A one-request-per-connection HTTP/1.1 server on 127.0.0.1, recording
/// what it was asked.
struct Fake {
    host: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    fn start(handler: Arc<Handler>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let _ = serve(stream, &*handler, &log);
            }
        });
        Fake { host, seen }
    }

    /// A client for this server (plain HTTP allowed), with `credentials`.
    fn client(&self, credentials: Option<Credentials>) -> blocking::Client {
        let mut builder = Client::builder()
            .config(RegistryConfig::new().with_insecure(self.host.clone()))
            .retry(fast_retry());
        if let Some(c) = credentials {
            builder = builder.credentials(self.host.clone(), c);
        }
        blocking::Client::from_builder(builder).unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, handler: &Handler, log: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let seen = Seen { path, headers };
    log.lock().unwrap().push(seen.clone());
    let (status, extra, body) = handler(&seen);
    let mut out = stream;
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(&body)?;
    let _ = reader.read(&mut [0u8; 1]);
    Ok(())
}

/// A manifest with one layer, for the fake registries.
fn fake_image(layer: &[u8]) -> (Manifest, Vec<u8>) {
    let config = ImageConfig::new(ConfigFile::new("linux", "amd64")).unwrap();
    let m = image_store::archive::build_manifest(
        &Digest::sha256(config.raw()),
        config.raw().len() as u64,
        vec![image_core::manifest::descriptor(
            &MediaType::OciLayerGzip,
            &Digest::sha256(layer),
            layer.len() as u64,
        )],
    )
    .unwrap();
    (m, config.raw().to_vec())
}

/// A fake registry asking for Basic credentials that serves the image
/// of `layer` (its manifest and config from [`fake_image`]) and answers
/// the layer with a redirect to `to`.
fn redirecting_registry(layer: &[u8], to: String) -> Fake {
    let (m, config) = fake_image(layer);
    let raw = m.raw().to_vec();
    let layer_path = format!("/v2/app/blobs/{}", Digest::sha256(layer));
    Fake::start(Arc::new(move |s: &Seen| {
        if !s.headers.contains_key("authorization") {
            return (
                401,
                vec![("WWW-Authenticate".into(), "Basic realm=\"fake\"".into())],
                vec![],
            );
        }
        if s.path == layer_path {
            return (307, vec![("Location".into(), to.clone())], vec![]);
        }
        if s.path.contains("/manifests/") {
            return manifest_answer(&raw);
        }
        if s.path.contains("/blobs/") {
            return (200, vec![], config.clone());
        }
        (404, vec![], vec![])
    }))
}

#[test]
fn a_redirect_to_another_host_is_followed_without_the_authorization_header() {
    let layer = random(50_000, 5);
    let blob_store = {
        let layer = layer.clone();
        Fake::start(Arc::new(move |_s: &Seen| (200, vec![], layer.clone())))
    };
    let to = format!("http://{}/storage/layer?X-Signature=abc", blob_store.host);
    let registry = redirecting_registry(&layer, to);
    let c = registry.client(Some(Credentials::basic("alice", "s3cret-pw")));
    let (_d, dst) = image_testsupport::store::oci_dir();
    let reference = Reference::parse_name(&format!("{}/app:1", registry.host)).unwrap();
    c.pull(&reference, &dst, &PullOptions::default()).unwrap();
    assert!(dst.exists(&Digest::sha256(&layer)).unwrap());
    let to_blob_store = blob_store.seen();
    assert_eq!(to_blob_store.len(), 1);
    assert!(
        !to_blob_store[0].headers.contains_key("authorization"),
        "{to_blob_store:?}"
    );
    assert!(registry.seen().iter().any(|s| s
        .headers
        .get("authorization")
        .is_some_and(|a| a.starts_with("Basic "))));
    assert!(!format!("{c:?}").contains("s3cret-pw"));
}

#[test]
fn schema1_is_refused_and_basic_credentials_stay_out_of_errors() {
    let registry = Fake::start(Arc::new(|s: &Seen| {
        if !s.headers.contains_key("authorization") {
            return (
                401,
                vec![("WWW-Authenticate".into(), "Basic realm=\"r\"".into())],
                vec![],
            );
        }
        if s.path.contains("/nope/") {
            return (
                401,
                vec![("WWW-Authenticate".into(), "Basic realm=\"r\"".into())],
                vec![],
            );
        }
        let ct = (
            "Content-Type".into(),
            "application/vnd.docker.distribution.manifest.v1+prettyjws".into(),
        );
        (
            200,
            vec![ct],
            br#"{"schemaVersion":1,"name":"a","tag":"1","fsLayers":[]}"#.to_vec(),
        )
    }));
    let c = registry.client(Some(Credentials::basic("bob", "pa55-word")));
    let reference = Reference::parse_name(&format!("{}/app:1", registry.host)).unwrap();
    let e = c.get_manifest(&reference).unwrap_err();
    assert_eq!(
        classify(&e, image_registry::kind_of),
        Some(ErrorKind::Unsupported),
        "{e:?}"
    );
    let denied = Reference::parse_name(&format!("{}/nope/app:1", registry.host)).unwrap();
    let e = c.get_manifest(&denied).unwrap_err();
    assert_eq!(
        classify(&e, image_registry::kind_of),
        Some(ErrorKind::Unauthenticated),
        "{e:?}"
    );
    let text = format!("{e} {e:?}");
    assert!(!text.contains("pa55-word"), "{text}");
}

/// A blob the registry does not have, and a blob store behind a redirect
/// that refuses connections: each failure keeps its class, its chain says
/// nothing twice (the digest, the URL), and the redirect's query (a
/// signature) is in no message and no Debug form.
#[test]
fn a_missing_blob_and_a_refused_connection_are_classified_and_said_once() {
    let layer = random(1_000, 12);
    let (m, config) = fake_image(&layer);
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let raw = m.raw().to_vec();
    let layer_path = format!("/v2/moved/blobs/{}", Digest::sha256(&layer));
    let missing_layer = format!("/v2/gone/blobs/{}", Digest::sha256(&layer));
    let registry = Fake::start(Arc::new(move |s: &Seen| {
        if s.path == layer_path {
            let to = format!("http://{closed}/storage/layer?X-Signature=s3cret-sig");
            return (307, vec![("Location".into(), to)], vec![]);
        }
        if s.path.contains("/manifests/") {
            return manifest_answer(&raw);
        }
        if s.path == missing_layer {
            return (404, vec![], vec![]);
        }
        if s.path.contains("/blobs/") {
            return (200, vec![], config.clone());
        }
        (404, vec![], vec![])
    }));
    let c = registry.client(None);
    let gone = Reference::parse_name(&format!("{}/gone:1", registry.host)).unwrap();
    failed_pull(&c, &gone, ErrorKind::NotFound);
    let moved = Reference::parse_name(&format!("{}/moved:1", registry.host)).unwrap();
    let (_d, _s, e) = failed_pull(&c, &moved, ErrorKind::Unavailable);
    let text = format!("{} {e:?}", image_core::error::Chain(&e));
    assert!(text.contains(&closed.to_string()), "{text}");
    assert!(!text.contains("s3cret-sig"), "{text}");
}

#[test]
fn bearer_tokens_are_fetched_once_per_scope_and_reused_and_5xx_429_are_retried() {
    let layer = random(10_000, 7);
    let (m, config) = fake_image(&layer);
    let raw = m.raw().to_vec();
    let token_requests = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let log = token_requests.clone();
    let token_server = Fake::start(Arc::new(move |s: &Seen| {
        log.lock().unwrap().push(s.clone());
        (
            200,
            vec![],
            br#"{"token":"tok-123","expires_in":300}"#.to_vec(),
        )
    }));
    let realm = format!("http://{}/token", token_server.host);
    let failures = Arc::new(Mutex::new(0u32));
    let failed = failures.clone();
    let config_digest = Digest::sha256(&config);
    let registry = Fake::start(Arc::new(move |s: &Seen| {
        if s.headers.get("authorization").map(String::as_str) != Some("Bearer tok-123") {
            let challenge =
                format!(r#"Bearer realm="{realm}",service="fake",scope="repository:app:pull""#);
            return (401, vec![("WWW-Authenticate".into(), challenge)], vec![]);
        }
        if s.path.contains("/manifests/") {
            let mut n = failed.lock().unwrap();
            *n += 1;
            match *n {
                1 => return (503, vec![], vec![]),
                2 => return (429, vec![("Retry-After".into(), "0".into())], vec![]),
                _ => {}
            }
            return manifest_answer(&raw);
        }
        if s.path.ends_with(&config_digest.to_string()) {
            return (200, vec![], config.clone());
        }
        (200, vec![], layer.clone())
    }));
    let c = registry.client(Some(Credentials::basic("carol", "tok-pw")));
    let (_d, dst) = image_testsupport::store::oci_dir();
    let reference = Reference::parse_name(&format!("{}/app:1", registry.host)).unwrap();
    let report = c.pull(&reference, &dst, &PullOptions::default()).unwrap();
    assert_eq!(report.fetched.len(), 2);
    assert_eq!(*failures.lock().unwrap(), 3, "503 and 429 retried");
    let tokens = token_requests.lock().unwrap().clone();
    assert_eq!(
        tokens.len(),
        1,
        "one token for the scope, reused: {tokens:?}"
    );
    assert!(
        tokens[0].path.contains("scope=repository%3Aapp%3Apull"),
        "{:?}",
        tokens[0].path
    );
    assert!(tokens[0].path.contains("service=fake"));
    assert!(tokens[0].headers["authorization"].starts_with("Basic "));
}

/// An untrusted certificate is refused as unsafe, not retried as a
/// transport failure; with the CA given, the pull works.
#[test]
fn a_tls_registry_is_trusted_through_a_given_ca_only() {
    let Some(Pushed {
        registry,
        manifest: m,
        reference,
        ..
    }) = pushed(RegistryOptions::plain().with_tls(), "tls:1", 20_000, 8)
    else {
        return;
    };
    let ca = std::fs::read(registry.ca_pem().unwrap()).unwrap();

    // Without the CA the certificate is refused.
    let (_d0, none) = image_testsupport::store::oci_dir();
    let e = client(RegistryConfig::new())
        .pull(&reference, &none, &PullOptions::default())
        .unwrap_err();
    assert!(none.tags().unwrap().is_empty(), "{e:?}");
    // Not a failure a retry cures: the same certificate comes back.
    assert_eq!(
        classify(&e, image_registry::kind_of),
        Some(ErrorKind::Unsafe),
        "{e:?}"
    );
    image_testsupport::chain::assert_said_once(&e);

    let (_d, dst) = image_testsupport::store::oci_dir();
    let c = client(RegistryConfig::new().with_ca_certificate(ca));
    c.ping(&registry.host_port()).unwrap();
    let report = c.pull(&reference, &dst, &PullOptions::default()).unwrap();
    assert_eq!(report.descriptor.unwrap().digest(), m.descriptor().digest());
}

#[test]
fn hostile_answers_are_bounded_and_pagination_stays_on_its_origin() {
    let layer = random(30_000, 9);
    let layer_copy = layer.clone();
    let (m, config) = fake_image(&layer);
    let raw = m.raw().to_vec();
    let config_digest = Digest::sha256(&config);
    let registry = Fake::start(Arc::new(move |s: &Seen| {
        let p = s.path.as_str();
        if p.starts_with("/v2/big/manifests/") {
            // Larger than any document read.
            return (200, vec![], vec![b' '; 9 * 1024 * 1024]);
        }
        if p.starts_with("/v2/loop/") {
            return (302, vec![("Location".into(), p.to_owned())], vec![]);
        }
        if p.starts_with("/v2/paged/tags/list") {
            let (body, link) = if p.contains("last=b") {
                (r#"{"tags":["c"]}"#, None)
            } else if p.contains("last=a") {
                (
                    r#"{"tags":["b"]}"#,
                    Some("</v2/paged/tags/list?n=1&last=b>; rel=\"next\""),
                )
            } else {
                (
                    r#"{"tags":["a"]}"#,
                    Some("</v2/paged/tags/list?n=1&last=a>; rel=\"next\""),
                )
            };
            let headers = link
                .map(|l| ("Link".to_owned(), l.to_owned()))
                .into_iter()
                .collect();
            return (200, headers, body.as_bytes().to_vec());
        }
        if p.starts_with("/v2/away/tags/list") {
            let link = "<http://other.example/v2/away/tags/list?last=a>; rel=\"next\"";
            return (
                200,
                vec![("Link".into(), link.into())],
                br#"{"tags":["a"]}"#.to_vec(),
            );
        }
        if p.contains("/manifests/") {
            return manifest_answer(&raw);
        }
        if p.ends_with(&config_digest.to_string()) {
            return (200, vec![], config.clone());
        }
        // The layer with bytes past its descriptor's size.
        let mut long = layer.clone();
        long.extend_from_slice(b"trailing");
        (200, vec![], long)
    }));
    let c = registry.client(None);
    let at = |repo: &str| Reference::parse_name(&format!("{}/{repo}", registry.host)).unwrap();
    let kind = |e: &(dyn std::error::Error + 'static)| classify(e, image_registry::kind_of);

    let e = c.get_manifest(&at("big:1")).unwrap_err();
    assert_eq!(kind(&e), Some(ErrorKind::Unsafe), "{e:?}");
    let e = c.get_manifest(&at("loop:1")).unwrap_err();
    assert_eq!(kind(&e), Some(ErrorKind::Unsafe), "{e:?}");
    assert_eq!(c.tags(&at("paged")).unwrap(), vec!["a", "b", "c"]);
    let e = c.tags(&at("away")).unwrap_err();
    assert_eq!(kind(&e), Some(ErrorKind::Unsafe), "{e:?}");

    let (_d, dst) = image_testsupport::store::oci_dir();
    let e = c
        .pull(&at("app:1"), &dst, &PullOptions::default())
        .unwrap_err();
    assert_eq!(kind(&e), Some(ErrorKind::Unsafe), "{e:?}");
    assert!(!dst.exists(&Digest::sha256(&layer_copy)).unwrap());
    assert!(dst.tags().unwrap().is_empty());
    let loops = registry
        .seen()
        .iter()
        .filter(|s| s.path.starts_with("/v2/loop/"))
        .count();
    assert!(loops <= 11 * 3, "redirects followed: {loops}");
}

#[test]
fn basic_and_token_auth_against_the_real_registry() {
    for (what, options) in [
        ("basic", RegistryOptions::basic()),
        ("token", RegistryOptions::token()),
    ] {
        let Some(Pushed {
            registry,
            manifest: m,
            reference,
            ..
        }) = pushed(options, "auth/x:1", 50_000, 10)
        else {
            return;
        };
        let creds = registry.credentials().unwrap().clone();
        let host = registry.host_port();
        let config = RegistryConfig::new().with_loopback_http(true);
        let tokens_before = registry.token_requests().len();
        let c =
            blocking::Client::from_builder(Client::builder().config(config.clone()).credentials(
                host.clone(),
                Credentials::basic(creds.user.clone(), creds.password.clone()),
            ))
            .unwrap();
        let (_d, dst) = image_testsupport::store::oci_dir();
        let report = c.pull(&reference, &dst, &PullOptions::default()).unwrap();
        assert_eq!(
            report.descriptor.unwrap().digest(),
            m.descriptor().digest(),
            "{what}"
        );
        assert_eq!(report.fetched.len(), 2);
        if what == "token" {
            // Manifest, config and layer under one scope: one token.
            assert_eq!(registry.token_requests().len() - tokens_before, 1, "{what}");
        }

        let (_d2, _none, e) = failed_pull(&client(config), &reference, ErrorKind::Unauthenticated);
        let text = format!("{e} {e:?} {c:?}");
        assert!(!text.contains(&creds.password), "{what}: {text}");
    }
}

#[test]
fn through_the_fault_proxy_a_cut_layer_resumes_errors_are_retried_and_flipped_bytes_refused() {
    use image_testsupport::registry::{Fault, FaultProxy, Faults};
    let Some(Pushed {
        registry,
        src,
        manifest: m,
        _src_dir,
        ..
    }) = pushed(RegistryOptions::plain(), "faults:1", 4 * 1024 * 1024, 11)
    else {
        return;
    };
    let layer: Digest = m.layers()[0].digest().to_string().parse().unwrap();
    let faults = Faults::none()
        .with(Fault::status(500).on("/manifests/"))
        .with(Fault::status(429).retry_after(0).on("/manifests/"))
        .with(Fault::cut_after(1_500_000).on(layer.hex()).method("GET"));
    let proxy = FaultProxy::start(registry.addr(), faults);
    let reference = Reference::parse_name(&format!("{}/faults:1", proxy.host_port())).unwrap();
    let c = client(RegistryConfig::new().with_loopback_http(true));
    let (_d, dst) = image_testsupport::store::oci_dir();
    let report = c.pull(&reference, &dst, &PullOptions::default()).unwrap();
    assert_eq!(report.descriptor.unwrap().digest(), m.descriptor().digest());
    assert!(dst.exists(&layer).unwrap());
    let fetched = proxy.bytes_forwarded("/blobs/");
    let total = blob_total(&src, &m);
    assert!(
        (fetched as f64) < 1.2 * total as f64,
        "fetched {fetched} for an image of {total}"
    );
    let ranged = proxy
        .exchanges()
        .iter()
        .filter(|e| e.range.is_some() && e.target.contains(layer.hex()))
        .count();
    assert!(ranged >= 1, "no Range request: {:?}", proxy.exchanges());

    // A flipped byte in the layer: refused, the fresh store unchanged.
    proxy.add(Fault::flip_byte(1000).on(layer.hex()).method("GET"));
    let (_d2, fresh, _) = failed_pull(&c, &reference, ErrorKind::DigestMismatch);
    assert!(!fresh.exists(&layer).unwrap());
    assert!(fresh.ingests().unwrap().is_empty());
}

#[test]
fn reads_try_the_mirrors_first_then_the_registry() {
    let (m, _config) = fake_image(b"layer");
    let raw = m.raw().to_vec();
    let mirror = Fake::start(Arc::new(|_s: &Seen| (404, vec![], vec![])));
    let origin = Fake::start(Arc::new(move |s: &Seen| {
        if s.path.contains("/manifests/") {
            return manifest_answer(&raw);
        }
        (404, vec![], vec![])
    }));
    let config = RegistryConfig::new().with_host(
        origin.host.clone(),
        image_registry::HostConfig {
            insecure: true,
            mirrors: vec![image_registry::Mirror {
                location: format!("{}/cache", mirror.host),
                insecure: true,
            }],
        },
    );
    let c = client(config);
    let reference = Reference::parse_name(&format!("{}/app:1", origin.host)).unwrap();
    let doc = c.get_manifest(&reference).unwrap();
    assert_eq!(doc.digest(), m.digest());
    assert!(
        mirror
            .seen()
            .iter()
            .any(|s| s.path == "/v2/cache/app/manifests/1"),
        "{:?}",
        mirror.seen()
    );
    assert!(origin
        .seen()
        .iter()
        .any(|s| s.path == "/v2/app/manifests/1"));
}

/// The blocking facade's blob stream: a blob's bytes, verified at the end;
/// a blob changed in the registry's storage fails the read that reaches
/// the end (`InvalidData` wrapping the `VerifyError`), while the unverified
/// stream hands the same number of bytes on for the caller to check.
#[test]
fn a_blob_reader_streams_a_blob_and_refuses_a_changed_one() {
    use image_testsupport::registry::blob_data_path;
    let Some(p) = pushed(RegistryOptions::plain(), "stream/blob:1", 300_000, 21) else {
        return;
    };
    let c = client(RegistryConfig::new().with_loopback_http(true));
    let layer = &p.manifest.layers()[0];
    let digest = image_core::DescriptorExt::checked_digest(layer).unwrap();
    let mut want = Vec::new();
    p.src
        .reader(&digest)
        .unwrap()
        .read_to_end(&mut want)
        .unwrap();

    let mut r = c.blob_reader(&p.reference, layer).unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert_eq!(got, want);
    assert!(r.is_verified());

    let data = blob_data_path(&p.registry.storage(), digest.hex());
    let mut changed = std::fs::read(&data).unwrap();
    changed[4] ^= 0x5a;
    std::fs::write(&data, &changed).unwrap();
    let mut r = c.blob_reader(&p.reference, layer).unwrap();
    let e = r.read_to_end(&mut Vec::new()).expect_err("a changed blob");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    assert!(
        e.get_ref()
            .and_then(|s| s.downcast_ref::<image_core::VerifyError>())
            .is_some(),
        "{e:?}"
    );
    assert!(!r.is_verified());

    let mut r = c.blob_reader_unverified(&p.reference, layer).unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert_eq!(got, changed);
}

#[test]
fn a_document_of_another_kind_than_its_content_type_or_descriptor_says_is_refused() {
    const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    let layer = random(5_000, 11);
    let (m, config) = fake_image(&layer);
    let index = |media_type: &str, digest: &Digest, size: usize| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{INDEX}","manifests":[{{"mediaType":"{media_type}","digest":"{digest}","size":{size},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        )
        .into_bytes()
    };
    // An honest index of the manifest, and one listing that index as if
    // it were a manifest.
    let inner = index(MANIFEST, m.digest(), m.raw().len());
    let inner_digest = Digest::sha256(&inner);
    let outer = index(MANIFEST, &inner_digest, inner.len());
    let raw = m.raw().to_vec();
    let (config_digest, m_digest) = (Digest::sha256(&config), m.digest().clone());
    // Both an index's and a manifest's fields, no mediaType: an index to
    // one reader, a manifest to another.
    let both = {
        let mut doc: serde_json::Value = serde_json::from_slice(&inner).unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(m.raw()).unwrap();
        doc.as_object_mut().unwrap().remove("mediaType");
        doc["config"] = manifest["config"].clone();
        doc["layers"] = manifest["layers"].clone();
        serde_json::to_vec(&doc).unwrap()
    };
    let honest = inner_digest.clone();
    let outer_digest = Digest::sha256(&outer).to_string();
    let registry = Fake::start(Arc::new(move |s: &Seen| {
        let answer =
            |ct: &str, body: &[u8]| (200, vec![("Content-Type".into(), ct.into())], body.to_vec());
        match s.path.rsplit_once("/manifests/").map(|(_, r)| r) {
            Some("disguised") => answer(INDEX, &raw),
            Some("docker-typed") => answer(DOCKER_MANIFEST, &raw),
            Some("both") => answer(INDEX, &both),
            Some(r) if r == "nested" || r == outer_digest => answer(INDEX, &outer),
            Some("honest") => answer(INDEX, &inner),
            Some(d) if d == inner_digest.to_string() => answer(INDEX, &inner),
            Some(d) if d == m_digest.to_string() => answer(MANIFEST, &raw),
            Some(_) => (404, vec![], vec![]),
            None if s.path.ends_with(&config_digest.to_string()) => (200, vec![], config.clone()),
            None => (200, vec![], layer.clone()),
        }
    }));
    let c = registry.client(None);
    let at = |tag: &str| Reference::parse_name(&format!("{}/app:{tag}", registry.host)).unwrap();

    // A manifest answered as an index: refused, as containerd and Docker
    // refuse it (CVE-2021-41190's confusion of kinds).
    let e = c.get_manifest(&at("disguised")).unwrap_err();
    assert_eq!(
        classify(&e, image_registry::kind_of),
        Some(ErrorKind::InvalidInput),
        "{e:?}"
    );
    let e = c.get_manifest(&at("both")).unwrap_err();
    assert_eq!(
        classify(&e, image_registry::kind_of),
        Some(ErrorKind::InvalidInput),
        "{e:?}"
    );
    // Another media type of the same kind is taken, as containerd takes it.
    assert_eq!(
        c.get_manifest(&at("docker-typed")).unwrap().digest(),
        m.digest()
    );

    // An index listed as a manifest: the pull fails, nothing is tagged and
    // the index is not stored.
    let all = PullOptions::default().with_all_platforms(true);
    let (_d, dst, _) = failed_pull_with(&c, &at("nested"), &all, ErrorKind::InvalidInput);
    assert!(!dst.exists(&honest).unwrap());
    // A copy between registries walks the index the same way: refused
    // before anything is sent to the destination.
    refused_copy(&registry, "app:nested", ErrorKind::InvalidInput);

    // The same documents, each as its parent and Content-Type say.
    let report = c.pull(&at("honest"), &dst, &all).unwrap();
    assert_eq!(
        report.descriptor.unwrap().digest().to_string(),
        honest.to_string()
    );
    assert!(dst.exists(&honest).unwrap());
}

#[test]
fn a_challenge_from_a_redirect_target_is_not_taken_for_the_registrys() {
    let layer = random(20_000, 13);
    // A token server of the blob store's choosing, recording who asks.
    let foreign = Fake::start(Arc::new(|_s: &Seen| {
        (200, vec![], br#"{"token":"foreign"}"#.to_vec())
    }));
    let realm = format!("http://{}/token", foreign.host);
    let blob_store = Fake::start(Arc::new(move |_s: &Seen| {
        let challenge = format!(r#"Bearer realm="{realm}",service="blobs""#);
        (401, vec![("WWW-Authenticate".into(), challenge)], vec![])
    }));
    let registry =
        redirecting_registry(&layer, format!("http://{}/storage/layer", blob_store.host));
    let c = registry.client(Some(Credentials::basic("alice", "s3cret-pw")));
    let reference = Reference::parse_name(&format!("{}/app:1", registry.host)).unwrap();
    let (_d, _store, e) = failed_pull(&c, &reference, ErrorKind::Unauthenticated);
    assert!(!format!("{e:?}").contains("s3cret-pw"));
    // The registry's credentials went to the registry only.
    assert!(foreign.seen().is_empty(), "{:?}", foreign.seen());
    assert!(blob_store
        .seen()
        .iter()
        .all(|s| !s.headers.contains_key("authorization")));
}

#[test]
fn a_tags_list_or_catalog_entry_outside_the_name_grammar_is_refused() {
    let registry = Fake::start(Arc::new(|s: &Seen| {
        let body: &[u8] = match s.path.split('?').next().unwrap_or("") {
            "/v2/fine/tags/list" => br#"{"tags":["1.0","latest","sha256-abc"]}"#,
            // A terminal's escape sequence, as a tag.
            "/v2/app/tags/list" => br#"{"tags":["1.0","\u001b]0;owned\u0007"]}"#,
            "/v2/_catalog" if s.path.contains("last=") => br#"{"repositories":["../../etc"]}"#,
            "/v2/_catalog" => {
                let link = "</v2/_catalog?n=1&last=a>; rel=\"next\"";
                return (
                    200,
                    vec![("Link".into(), link.into())],
                    br#"{"repositories":["a/b"]}"#.to_vec(),
                );
            }
            _ => return (404, vec![], vec![]),
        };
        (200, vec![], body.to_vec())
    }));
    let c = registry.client(None);
    let at = |repo: &str| Reference::parse_name(&format!("{}/{repo}", registry.host)).unwrap();
    let kind = |e: &(dyn std::error::Error + 'static)| classify(e, image_registry::kind_of);
    assert_eq!(
        c.tags(&at("fine")).unwrap(),
        vec!["1.0", "latest", "sha256-abc"]
    );
    let e = c.tags(&at("app")).unwrap_err();
    assert_eq!(kind(&e), Some(ErrorKind::InvalidInput), "{e:?}");
    assert!(!format!("{e}").contains('\u{1b}'), "{e}");
    let e = c.catalog(&registry.host).unwrap_err();
    assert_eq!(kind(&e), Some(ErrorKind::InvalidInput), "{e:?}");
}

#[test]
fn the_documents_of_one_image_are_bounded_in_all_not_only_each() {
    // An index of 70 distinct manifests of 1 MiB each (padded in an
    // annotation), each under the 8 MiB bound of one document: 70 MiB
    // of documents a walk would hold.
    let layer = random(1_000, 17);
    let (m, config) = fake_image(&layer);
    let base: serde_json::Value = serde_json::from_slice(m.raw()).unwrap();
    let mut by_digest = std::collections::HashMap::new();
    let mut entries = Vec::new();
    for i in 0..70 {
        let mut doc = base.clone();
        doc["annotations"] = serde_json::json!({ "pad": "x".repeat(1 << 20), "i": i.to_string() });
        let raw = serde_json::to_vec(&doc).unwrap();
        let digest = Digest::sha256(&raw);
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest.to_string(),
            "size": raw.len(),
            "platform": { "architecture": "amd64", "os": "linux", "variant": format!("v{i}") },
        }));
        by_digest.insert(digest.to_string(), raw);
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))
    .unwrap();
    let index_digest = Digest::sha256(&index).to_string();
    let config_digest = Digest::sha256(&config).to_string();
    let registry = Fake::start(Arc::new(move |s: &Seen| {
        let ct = |t: &str| vec![("Content-Type".to_owned(), t.to_owned())];
        match s.path.rsplit_once("/manifests/").map(|(_, r)| r) {
            Some(r) if r == "1" || r == index_digest => (
                200,
                ct("application/vnd.oci.image.index.v1+json"),
                index.clone(),
            ),
            Some(r) => match by_digest.get(r) {
                Some(raw) => (
                    200,
                    ct("application/vnd.oci.image.manifest.v1+json"),
                    raw.clone(),
                ),
                None => (404, vec![], vec![]),
            },
            None if s.path.ends_with(&config_digest) => (200, vec![], config.clone()),
            None => (200, vec![], layer.clone()),
        }
    }));
    let c = registry.client(None);
    let at = |r: &str| Reference::parse_name(&format!("{}/{r}", registry.host)).unwrap();
    let fetched = || {
        registry
            .seen()
            .iter()
            .filter(|s| s.path.contains("/manifests/sha256:"))
            .count()
    };

    let all = PullOptions::default().with_all_platforms(true);
    failed_pull_with(&c, &at("app:1"), &all, ErrorKind::Unsafe);
    let limit = image_registry::client::MAX_IMAGE_DOCUMENTS;
    assert!(
        fetched() as u64 <= limit / (1 << 20),
        "fetched {}",
        fetched()
    );

    // A copy between registries walks it with the same bound, before
    // anything goes to the destination.
    let before = fetched();
    refused_copy(&registry, "app:1", ErrorKind::Unsafe);
    // The index by its digest, then the manifests up to the one that
    // crossed the bound.
    let walked = (fetched() - before) as u64;
    assert!(walked <= limit / (1 << 20) + 1, "walked {walked}");
}

/// Copies `from` on the fake `registry` to its `copy:1`, which must fail
/// with `kind` before anything is sent to `copy`.
fn refused_copy(registry: &Fake, from: &str, kind: ErrorKind) {
    let at = |r: &str| Reference::parse_name(&format!("{}/{r}", registry.host)).unwrap();
    let e = registry
        .client(None)
        .copy(
            &image_registry::Location::<OciDir>::Registry(at(from)),
            &image_registry::Location::<OciDir>::Registry(at("copy:1")),
            &image_registry::CopyOptions::default(),
        )
        .unwrap_err();
    assert_eq!(classify(&e, image_registry::kind_of), Some(kind), "{e:?}");
    assert!(registry
        .seen()
        .iter()
        .all(|s| !s.path.starts_with("/v2/copy/")));
}

#[test]
fn a_token_lifetime_below_a_minute_or_negative_is_taken_as_a_minute() {
    // Docker's client does the same (the token spec: never less than 60 s
    // to live); the token is reused, and a 401 would fetch a new one.
    for expires_in in ["-1", "0", "1"] {
        let layer = random(10_000, 19);
        let (m, config) = fake_image(&layer);
        let raw = m.raw().to_vec();
        let answer = format!(r#"{{"token":"tok","expires_in":{expires_in}}}"#).into_bytes();
        let token_server = Fake::start(Arc::new(move |_s: &Seen| (200, vec![], answer.clone())));
        let realm = format!("http://{}/token", token_server.host);
        let config_digest = Digest::sha256(&config);
        let registry = Fake::start(Arc::new(move |s: &Seen| {
            if s.headers.get("authorization").map(String::as_str) != Some("Bearer tok") {
                let challenge = format!(r#"Bearer realm="{realm}",service="fake""#);
                return (401, vec![("WWW-Authenticate".into(), challenge)], vec![]);
            }
            if s.path.contains("/manifests/") {
                return manifest_answer(&raw);
            }
            if s.path.ends_with(&config_digest.to_string()) {
                return (200, vec![], config.clone());
            }
            (200, vec![], layer.clone())
        }));
        let c = registry.client(None);
        let (_d, dst) = image_testsupport::store::oci_dir();
        let reference = Reference::parse_name(&format!("{}/app:1", registry.host)).unwrap();
        c.pull(&reference, &dst, &PullOptions::default())
            .unwrap_or_else(|e| panic!("expires_in {expires_in}: {e:?}"));
        assert_eq!(token_server.seen().len(), 1, "expires_in {expires_in}");
    }
}

/// A blob read cut short, taken into a store: the store's error wraps an
/// `io::Error` carrying the registry's, and the class found through the
/// registry's `kind_of` is the registry's (`Unavailable`: a retry may
/// work), not the store's catch-all `Io`.
#[test]
fn a_cut_blob_read_into_a_store_keeps_the_registrys_class() {
    use image_testsupport::registry::{Fault, FaultProxy, Faults};
    let Some(p) = pushed(RegistryOptions::plain(), "cut/blob:1", 2_000_000, 23) else {
        return;
    };
    let layer = &p.manifest.layers()[0];
    let digest = image_core::DescriptorExt::checked_digest(layer).unwrap();
    let faults = Faults::none().with(Fault::cut_after(500_000).on(digest.hex()).method("GET"));
    let proxy = FaultProxy::start(p.registry.addr(), faults);
    let reference = Reference::parse_name(&format!("{}/cut/blob:1", proxy.host_port())).unwrap();
    let c = client(RegistryConfig::new().with_loopback_http(true));
    let mut r = c.blob_reader(&reference, layer).unwrap();
    let (_d, dst) = image_testsupport::store::oci_dir();
    let e = dst
        .ingest_reader(&mut r, Some(layer.size()), Some(&digest))
        .unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert_eq!(
        classify(&e, image_registry::kind_of),
        Some(ErrorKind::Unavailable),
        "{e:?}"
    );
    assert!(!dst.exists(&digest).unwrap());
}
