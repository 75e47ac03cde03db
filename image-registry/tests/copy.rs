//! Copies between the real distribution registry (Debian's
//! `docker-registry`), stores and OCI layouts: digests kept byte for
//! byte, blobs mounted within one registry, referrers on request, and the
//! bounds on hostile referrers.

use std::process::Command;
use std::time::Duration;

use image_core::config::ConfigFile;
use image_core::{
    Descriptor, Digest, ErrorKind, ImageConfig, Index, Manifest, MediaType, Platform, Reference,
};
use image_registry::{
    blocking, Client, CopyError, CopyOptions, Location, PullOptions, PushOptions, RegistryConfig,
    RetryPolicy,
};
use image_store::{Ingester, OciDir, Provider, TagStore};
use image_testsupport::registry::{Fault, FaultProxy, Faults, Registry, RegistryOptions};
use image_testsupport::tools::{skip_or_fail, which};

fn client() -> blocking::Client {
    let retry = RetryPolicy {
        attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    };
    blocking::Client::from_builder(
        Client::builder()
            .config(RegistryConfig::new().with_loopback_http(true))
            .retry(retry),
    )
    .unwrap()
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// An image in `store`: a config for `platform` and two layers (one
/// gzip) of random bytes.
fn make_image(store: &OciDir, platform: &Platform, seed: u64) -> Manifest {
    let gz = image_testsupport::codec::gzip(&random(40_000, seed));
    let plain = random(10_000, seed + 1000);
    let mut layers = Vec::new();
    for (bytes, media_type) in [(gz, MediaType::OciLayerGzip), (plain, MediaType::OciLayer)] {
        let digest = store.write_blob(&bytes).unwrap();
        layers.push(image_core::manifest::descriptor(
            &media_type,
            &digest,
            bytes.len() as u64,
        ));
    }
    let config = ImageConfig::new(ConfigFile::new(&platform.os, &platform.architecture)).unwrap();
    let config_digest = store.write_blob(config.raw()).unwrap();
    let m = image_store::archive::build_manifest(&config_digest, config.raw().len() as u64, layers)
        .unwrap();
    store.write_blob(m.raw()).unwrap();
    m
}

/// An index of an amd64 and an arm64 image in `store`.
fn make_index(store: &OciDir) -> (Index, Manifest, Manifest) {
    let amd = Platform::new("linux", "amd64");
    let arm = Platform::new("linux", "arm64").with_variant("v8");
    let m_amd = make_image(store, &amd, 1);
    let m_arm = make_image(store, &arm, 2);
    let index = image_testsupport::store::write_index(store, &[(&m_amd, &amd), (&m_arm, &arm)]);
    (index, m_amd, m_arm)
}

/// An artifact (OCI 1.1: empty config, one layer) in `store` whose
/// `subject` is `subject`.
fn artifact(store: &OciDir, subject: &Descriptor, payload: &[u8], kind: &str) -> Manifest {
    let empty = store.write_blob(b"{}").unwrap();
    let layer = store.write_blob(payload).unwrap();
    let json = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": kind,
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": empty.to_string(),
            "size": 2,
        },
        "layers": [{
            "mediaType": "application/octet-stream",
            "digest": layer.to_string(),
            "size": payload.len(),
        }],
        "subject": serde_json::to_value(subject).unwrap(),
        "annotations": { "org.example.kind": kind },
    });
    let m = Manifest::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap();
    store.write_blob(m.raw()).unwrap();
    m
}

/// A signature-like artifact of `subject` in `store`.
fn signature(store: &OciDir, subject: &Descriptor, payload: &[u8]) -> Manifest {
    artifact(store, subject, payload, "application/vnd.example.sig")
}

/// The entry a list of referrers gives `m`.
fn entry(m: &Manifest) -> Descriptor {
    image_store::referrers::entry(&image_core::Document::from_bytes(m.raw(), None).unwrap())
}

fn at(s: &str) -> Location<'static, OciDir> {
    Location::Registry(Reference::parse_name(s).unwrap())
}

fn in_store<'a>(store: &'a OciDir, name: &str) -> Location<'a, OciDir> {
    Location::Store {
        store,
        name: name.to_owned(),
    }
}

/// Every blob and document under `top` in `store`, read back (each
/// verified by the store's reader).
fn all_digests(store: &OciDir, top: &Descriptor) -> Vec<Digest> {
    let mut out = Vec::new();
    let mut pending = vec![top.clone()];
    while let Some(d) = pending.pop() {
        let digest: Digest = d.digest().to_string().parse().unwrap();
        let raw = store.read_blob_to_vec(&digest, 1 << 30).unwrap();
        out.push(digest);
        match image_core::manifest::descriptor_media_type(&d) {
            m if m.is_index() => {
                pending.extend(Index::from_bytes(raw).unwrap().manifests().iter().cloned())
            }
            m if m.is_manifest() => {
                let m = Manifest::from_bytes(raw).unwrap();
                for b in std::iter::once(m.config()).chain(m.layers()) {
                    let b: Digest = b.digest().to_string().parse().unwrap();
                    store.read_blob_to_vec(&b, 1 << 30).unwrap();
                    out.push(b);
                }
            }
            _ => {}
        }
    }
    out.sort_by_key(|d| d.to_string());
    out
}

/// `skopeo inspect --raw` of `reference`, `None` (after a loud skip)
/// without skopeo.
fn skopeo_raw(reference: &str) -> Option<Vec<u8>> {
    skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ])
}

/// skopeo's output for `args`, which must succeed; `None` (after a loud
/// skip) without skopeo.
fn skopeo(args: &[&str]) -> Option<Vec<u8>> {
    let Some(skopeo) = which("skopeo") else {
        skip_or_fail("skopeo");
        return None;
    };
    let mut cmd = Command::new(skopeo);
    cmd.args(args);
    let out = image_testsupport::process::run_bounded(cmd);
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout)
}

/// Two registries, a client and an empty store; `None` after a loud skip.
fn two_registries() -> Option<(
    Registry,
    Registry,
    blocking::Client,
    tempfile::TempDir,
    OciDir,
)> {
    let r1 = Registry::start_or_skip(RegistryOptions::plain())?;
    let r2 = Registry::start_or_skip(RegistryOptions::plain())?;
    let (dir, src) = image_testsupport::store::oci_dir();
    Some((r1, r2, client(), dir, src))
}

#[test]
fn an_index_goes_store_registry_layout_store_and_registry_to_registry_with_identical_digests() {
    let Some((r1, r2, c, _s, src)) = two_registries() else {
        return;
    };
    let (index, m_amd, m_arm) = make_index(&src);
    src.set_tag("multi:1", &index.descriptor()).unwrap();
    let want = all_digests(&src, &index.descriptor());
    assert_eq!(want.len(), 9, "an index, 2 manifests, 2 configs, 4 layers");

    // Store -> registry: every platform.
    let on_r1 = format!("{}/multi/app:1", r1.host_port());
    let report = c
        .copy(
            &in_store(&src, "multi:1"),
            &at(&on_r1),
            &CopyOptions::default(),
        )
        .unwrap();
    assert_eq!(
        report.descriptor.as_ref().unwrap().digest(),
        index.descriptor().digest()
    );
    assert_eq!(report.copied, 6, "{report:?}");
    let Some(raw) = skopeo_raw(&on_r1) else {
        return;
    };
    assert_eq!(raw, index.raw(), "skopeo reads the index byte for byte");

    // A pull of the pushed index chooses the platform asked for.
    let (_p, pulled) = image_testsupport::store::oci_dir();
    let arm = Platform::new("linux", "arm64").with_variant("v8");
    let r = c
        .pull(
            &Reference::parse_name(&on_r1).unwrap(),
            &pulled,
            &PullOptions::default().with_platform(arm.clone()),
        )
        .unwrap();
    assert_eq!(r.descriptor.unwrap().digest(), m_arm.descriptor().digest());

    // Registry -> layout (every platform), then layout -> store.
    let (_l, layout) = image_testsupport::store::oci_dir();
    let report = c
        .copy(
            &at(&on_r1),
            &in_store(&layout, "copied:1"),
            &CopyOptions::default(),
        )
        .unwrap();
    assert_eq!(report.tag.as_deref(), Some("copied:1"));
    let tagged = layout.resolve_tag("copied:1").unwrap();
    assert_eq!(tagged.digest(), index.descriptor().digest());
    assert_eq!(all_digests(&layout, &tagged), want);
    let (_b, back) = image_testsupport::store::oci_dir();
    c.copy(
        &in_store(&layout, "copied:1"),
        &in_store(&back, "back:1"),
        &CopyOptions::default(),
    )
    .unwrap();
    let tagged = back.resolve_tag("back:1").unwrap();
    assert_eq!(tagged.digest(), index.descriptor().digest());
    assert_eq!(all_digests(&back, &tagged), want);
    // One platform on request, between stores.
    let (_o, one) = image_testsupport::store::oci_dir();
    c.copy(
        &in_store(&back, "back:1"),
        &in_store(&one, "amd:1"),
        &CopyOptions::default().with_platform(Platform::new("linux", "amd64")),
    )
    .unwrap();
    assert_eq!(
        one.resolve_tag("amd:1").unwrap().digest(),
        m_amd.descriptor().digest()
    );
    assert!(!one.exists(index.digest()).unwrap());

    // Registry -> another registry: every platform, every digest kept.
    let on_r2 = format!("{}/mirror/app:2", r2.host_port());
    let report = c
        .copy(&at(&on_r1), &at(&on_r2), &CopyOptions::default())
        .unwrap();
    assert_eq!(report.copied, 6, "{report:?}");
    assert_eq!(report.mounted, 0);
    let Some(raw) = skopeo_raw(&on_r2) else {
        return;
    };
    assert_eq!(raw, index.raw());
    let (_f, fresh) = image_testsupport::store::oci_dir();
    c.copy(
        &at(&on_r2),
        &in_store(&fresh, "fresh:1"),
        &CopyOptions::default(),
    )
    .unwrap();
    assert_eq!(
        all_digests(&fresh, &fresh.resolve_tag("fresh:1").unwrap()),
        want
    );
    // Again: every blob present, skipped.
    let again = c
        .copy(&at(&on_r1), &at(&on_r2), &CopyOptions::default())
        .unwrap();
    assert_eq!((again.copied, again.skipped), (0, 6), "{again:?}");

    // One platform, registry to registry: that manifest, tagged.
    let on_r2_arm = format!("{}/mirror/arm:1", r2.host_port());
    c.copy(
        &at(&on_r1),
        &at(&on_r2_arm),
        &CopyOptions::default().with_platform(arm),
    )
    .unwrap();
    let got = c
        .get_manifest(&Reference::parse_name(&on_r2_arm).unwrap())
        .unwrap();
    assert_eq!(got.raw(), m_arm.raw());

    // A digest in the destination must be the source's.
    let wrong = format!("{}/mirror/app@{}", r2.host_port(), m_amd.digest());
    let e = c
        .copy(&at(&on_r1), &at(&wrong), &CopyOptions::default())
        .unwrap_err();
    assert_eq!(
        image_core::Classify::kind(&e),
        ErrorKind::InvalidInput,
        "{e:?}"
    );
}

#[test]
fn between_repositories_of_one_registry_every_blob_is_mounted() {
    let Some(registry) = Registry::start_or_skip(RegistryOptions::plain()) else {
        return;
    };
    let proxy = FaultProxy::start(registry.addr(), Faults::none());
    let host = proxy.host_port();
    let c = client();
    let (_s, src) = image_testsupport::store::oci_dir();
    let (index, _, _) = make_index(&src);
    src.set_tag("multi:1", &index.descriptor()).unwrap();
    let from = format!("{host}/base/app:1");
    c.copy(
        &in_store(&src, "multi:1"),
        &at(&from),
        &CopyOptions::default(),
    )
    .unwrap();

    let before = proxy.exchanges().len();
    let to = format!("{host}/other/app:1");
    let report = c
        .copy(&at(&from), &at(&to), &CopyOptions::default())
        .unwrap();
    assert_eq!((report.mounted, report.copied), (6, 0), "{report:?}");
    let exchanges = proxy.exchanges()[before..].to_vec();
    let uploads: Vec<_> = exchanges
        .iter()
        .filter(|e| e.target.starts_with("/v2/other/app/blobs/uploads/"))
        .collect();
    assert_eq!(uploads.len(), 6, "{uploads:#?}");
    assert!(uploads
        .iter()
        .all(|e| e.method == "POST" && e.target.contains("mount=") && e.status == 201));
    // No blob was read from the source: mounting needs none.
    assert!(
        !exchanges
            .iter()
            .any(|e| e.method == "GET" && e.target.starts_with("/v2/base/app/blobs/")),
        "{exchanges:#?}"
    );
    let got = c
        .get_manifest(&Reference::parse_name(&to).unwrap())
        .unwrap();
    assert_eq!(got.raw(), index.raw());
}

/// A registry with `app:1` (one image) and an artifact referring to it,
/// and one referring to the artifact, pushed by our push (which keeps the
/// tag-schema index up to date on a registry without the referrers API).
struct WithReferrers {
    registry: Registry,
    image: Manifest,
    sig: Manifest,
    sig_of_sig: Manifest,
    src: OciDir,
    _dir: tempfile::TempDir,
}

impl WithReferrers {
    /// Copies `src/app:1` to `dest` with its referrers: both artifacts,
    /// the signature first, then the tag.
    fn copied_with_both(&self, c: &blocking::Client, dest: &str) {
        let src = format!("{}/src/app:1", self.registry.host_port());
        let report = c
            .copy(
                &at(&src),
                &at(dest),
                &CopyOptions::default().with_referrers(true),
            )
            .unwrap();
        assert_eq!(
            report.referrers,
            vec![self.sig.digest().clone(), self.sig_of_sig.digest().clone()]
        );
        assert_eq!(report.tag.as_deref(), Some(dest));
    }
}

/// An image (of `seed`) in a new store as `app:1`, copied to `repo:1` on
/// `registry` (`repo` a path there).
fn pushed_image(
    registry: &Registry,
    c: &blocking::Client,
    seed: u64,
    repo: &str,
) -> (tempfile::TempDir, OciDir, Manifest, String) {
    let (dir, src) = image_testsupport::store::oci_dir();
    let image = make_image(&src, &Platform::host(), seed);
    src.set_tag("app:1", &image.descriptor()).unwrap();
    let repo = format!("{}/{repo}", registry.host_port());
    c.copy(
        &in_store(&src, "app:1"),
        &at(&format!("{repo}:1")),
        &CopyOptions::default(),
    )
    .unwrap();
    (dir, src, image, repo)
}

fn with_referrers() -> Option<WithReferrers> {
    let registry = Registry::start_or_skip(RegistryOptions::plain())?;
    let c = client();
    let (dir, src, image, repo) = pushed_image(&registry, &c, 7, "src/app");
    let sig = artifact(
        &src,
        &image.descriptor(),
        b"signature",
        "application/vnd.example.sig",
    );
    let sig_of_sig = artifact(
        &src,
        &sig.descriptor(),
        b"counter",
        "application/vnd.example.sig",
    );
    let untagged = Reference::parse_name(&repo).unwrap();
    for m in [&sig, &sig_of_sig] {
        c.push(&src, &m.descriptor(), &untagged, &PushOptions::default())
            .unwrap();
    }
    Some(WithReferrers {
        registry,
        image,
        sig,
        sig_of_sig,
        src,
        _dir: dir,
    })
}

fn referrers(c: &blocking::Client, repo: &str, digest: &Digest) -> Vec<String> {
    sorted_digests(
        c.referrers(&Reference::parse_name(repo).unwrap(), digest, None)
            .unwrap(),
    )
}

/// The digests of `listed`, sorted.
fn sorted_digests(listed: Vec<Descriptor>) -> Vec<String> {
    let mut found: Vec<String> = listed.iter().map(|d| d.digest().to_string()).collect();
    found.sort();
    found
}

#[test]
fn referrers_are_copied_on_request_recursively_and_absent_without() {
    let Some(w) = with_referrers() else {
        return;
    };
    let c = client();
    let host = w.registry.host_port();
    let src = format!("{host}/src/app");
    // Our push kept the tag-schema index: the source lists them.
    assert_eq!(
        referrers(&c, &src, w.image.digest()),
        vec![w.sig.digest().to_string()]
    );
    // Its entry carries the artifact type and annotations, as the spec asks.
    let listed = c
        .referrers(
            &Reference::parse_name(&src).unwrap(),
            w.image.digest(),
            Some("application/vnd.example.sig"),
        )
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0]
            .annotations()
            .as_ref()
            .and_then(|a| a.get("org.example.kind"))
            .map(String::as_str),
        Some("application/vnd.example.sig")
    );

    let plain = format!("{host}/plain/app");
    c.copy(
        &at(&format!("{src}:1")),
        &at(&format!("{plain}:1")),
        &CopyOptions::default(),
    )
    .unwrap();
    assert!(referrers(&c, &plain, w.image.digest()).is_empty());

    let with = format!("{host}/with/app");
    w.copied_with_both(&c, &format!("{with}:1"));
    assert_eq!(
        referrers(&c, &with, w.image.digest()),
        vec![w.sig.digest().to_string()]
    );
    assert_eq!(
        referrers(&c, &with, w.sig.digest()),
        vec![w.sig_of_sig.digest().to_string()]
    );
    for m in [&w.sig, &w.sig_of_sig] {
        let by_digest = Reference::parse_name(&with)
            .unwrap()
            .with_digest(m.digest().clone());
        assert_eq!(c.get_manifest(&by_digest).unwrap().raw(), m.raw());
    }
    // skopeo reads the copied artifact too.
    if let Some(raw) = skopeo_raw(&format!("{with}@{}", w.sig.digest())) {
        assert_eq!(raw, w.sig.raw());
    }
    // Into an archive, referrers are untagged entries of its index.json
    // (oras's form), and the scratch store is gone.
    let work = tempfile::tempdir().unwrap();
    let report = c
        .copy(
            &at(&format!("{src}:1")),
            &archive(&work.path().join("a.tar"), None),
            &CopyOptions::default().with_referrers(true),
        )
        .unwrap();
    assert_eq!(
        report.referrers,
        vec![w.sig.digest().clone(), w.sig_of_sig.digest().clone()]
    );
    assert_eq!(leftovers(work.path(), &["a.tar"]), Vec::<String>::new());
    let a = image_store::archive::OciArchive::open(work.path().join("a.tar")).unwrap();
    let found = image_store::referrers::in_index(&a).unwrap();
    assert_eq!(
        sorted_digests(found[w.image.digest()].clone()),
        vec![w.sig.digest().to_string()]
    );
}

/// The untagged entries of a layout's or an archive's index.json.
fn untagged(entries: Vec<Descriptor>) -> Vec<String> {
    sorted_digests(
        entries
            .into_iter()
            .filter(|d| image_store::tags::ref_name(d).is_none())
            .collect(),
    )
}

/// What a store, layout or archive lists as referrers of `digest`, in
/// both forms (lists, and untagged index entries found by subject).
fn listed_anywhere<S: Provider + TagStore>(store: &S, digest: &Digest) -> Vec<String> {
    let mut all = image_store::referrers::referrers(store, digest).unwrap();
    let by_subject = image_store::referrers::in_index(store).unwrap();
    all.extend(by_subject.get(digest).cloned().unwrap_or_default());
    let mut found = sorted_digests(all);
    found.dedup();
    found
}

/// Referrers through OCI layouts and archives (issue 14): a signature and
/// an SBOM of each platform manifest of an index, and a signature of each
/// SBOM, go store -> `oci:` layout -> fresh store -> registry ->
/// `oci-archive:` -> fresh store, every one kept by digest at each hop.
/// The layout and the archive list them as untagged entries of their
/// index.json (oras's form; no list tags); the stores in their lists. A
/// loop in the source's lists (an SBOM listed as a referrer of its own
/// signature) is followed once, and a bound below the count is refused,
/// typed.
#[test]
fn referrers_go_through_layouts_and_archives_and_keep_their_digests() {
    let Some(registry) = Registry::start_or_skip(RegistryOptions::plain()) else {
        return;
    };
    let c = client();
    let with = CopyOptions::default().with_referrers(true);
    let (_d, src) = image_testsupport::store::oci_dir();
    let (index, amd, arm) = make_index(&src);
    src.set_tag("app:1", &index.descriptor()).unwrap();
    // subject -> its referrers; and every referrer with its own blobs.
    let mut want: Vec<(Digest, Vec<String>)> = Vec::new();
    let mut artifacts: Vec<Manifest> = Vec::new();
    for m in [&amd, &arm] {
        let payload = |what: &str| format!("{what} of {}", m.digest()).into_bytes();
        let sig = artifact(
            &src,
            &m.descriptor(),
            &payload("signature"),
            "application/vnd.example.sig",
        );
        let sbom = artifact(
            &src,
            &m.descriptor(),
            &payload("sbom"),
            "application/spdx+json",
        );
        let sbom_sig = artifact(
            &src,
            &sbom.descriptor(),
            &payload("sbom signature"),
            "application/vnd.example.sig",
        );
        for (subject, r) in [(m, &sig), (m, &sbom), (&sbom, &sbom_sig)] {
            image_store::referrers::add(&src, subject.digest(), &entry(r)).unwrap();
        }
        // A loop: the SBOM listed again as a referrer of its signature.
        image_store::referrers::add(&src, sbom_sig.digest(), &entry(&sbom)).unwrap();
        let mut of_m = vec![sig.digest().to_string(), sbom.digest().to_string()];
        of_m.sort();
        want.push((m.digest().clone(), of_m));
        want.push((sbom.digest().clone(), vec![sbom_sig.digest().to_string()]));
        artifacts.extend([sig, sbom, sbom_sig]);
    }
    let mut all: Vec<String> = artifacts.iter().map(|a| a.digest().to_string()).collect();
    all.sort();
    let check = |what: &str, report: image_registry::CopyReport| {
        let mut got: Vec<String> = report.referrers.iter().map(Digest::to_string).collect();
        got.sort();
        assert_eq!(got, all, "{what}: each referrer copied once");
    };
    let check_store = |what: &str, store: &dyn Fn(&Digest) -> Vec<String>| {
        for (subject, referrers) in &want {
            let mut got = store(subject);
            got.retain(|d| referrers.contains(d));
            assert_eq!(&got, referrers, "{what}: referrers of {subject}");
        }
    };

    // store -> layout: untagged entries of index.json, no list tags.
    let work = tempfile::tempdir().unwrap();
    let layout = OciDir::open_or_create(work.path().join("layout")).unwrap();
    let to_layout = Location::Layout {
        store: &layout,
        name: "app:1".to_owned(),
    };
    check(
        "store to layout",
        c.copy(&in_store(&src, "app:1"), &to_layout, &with).unwrap(),
    );
    assert_eq!(untagged(layout.index_entries().unwrap()), all);
    assert!(layout
        .tags()
        .unwrap()
        .iter()
        .all(|t| !image_store::referrers::is_referrers_reference(&t.name)));
    let by_subject = image_store::referrers::in_index(&layout).unwrap();
    check_store("layout", &|d| {
        sorted_digests(by_subject.get(d).cloned().unwrap_or_default())
    });

    // layout -> fresh store: the store's lists.
    let (_e, second) = image_testsupport::store::oci_dir();
    let from_layout = Location::Layout {
        store: &layout,
        name: "app:1".to_owned(),
    };
    check(
        "layout to store",
        c.copy(&from_layout, &in_store(&second, "app:1"), &with)
            .unwrap(),
    );
    check_store("second store", &|d| in_store_referrers(&second, d));

    // store -> registry.
    let repo = format!("{}/through/app", registry.host_port());
    check(
        "store to registry",
        c.copy(
            &in_store(&second, "app:1"),
            &at(&format!("{repo}:1")),
            &with,
        )
        .unwrap(),
    );
    check_store("registry", &|d| referrers(&c, &repo, d));

    // registry -> archive: untagged entries of its index.json.
    let tar = work.path().join("app.tar");
    check(
        "registry to archive",
        c.copy(
            &at(&format!("{repo}:1")),
            &archive(&tar, Some("app:1")),
            &with,
        )
        .unwrap(),
    );
    assert_eq!(
        leftovers(work.path(), &["layout", "app.tar"]),
        Vec::<String>::new()
    );
    let a = image_store::archive::OciArchive::open(&tar).unwrap();
    assert_eq!(untagged(a.index_entries().unwrap()), all);
    check_store("archive", &|d| listed_anywhere(&a, d));

    // archive -> fresh store, every blob as the source's.
    let (_f, third) = image_testsupport::store::oci_dir();
    check(
        "archive to store",
        c.copy(
            &archive(&tar, Some("app:1")),
            &in_store(&third, "app:1"),
            &with,
        )
        .unwrap(),
    );
    check_store("third store", &|d| in_store_referrers(&third, d));
    for m in &artifacts {
        assert_eq!(
            all_digests(&third, &m.descriptor()),
            all_digests(&src, &m.descriptor())
        );
    }
    assert_eq!(
        third.resolve_tag("app:1").unwrap().digest(),
        index.descriptor().digest()
    );

    // Counts bounded: an archive source with more referrers than taken.
    let (_g, bounded) = image_testsupport::store::oci_dir();
    let e = c
        .copy(
            &archive(&tar, Some("app:1")),
            &in_store(&bounded, "app:1"),
            &CopyOptions::default()
                .with_referrers(true)
                .with_max_referrers(3),
        )
        .unwrap_err();
    assert!(matches!(e, CopyError::TooManyReferrers { .. }), "{e:?}");
    assert_eq!(image_core::Classify::kind(&e), ErrorKind::Unsafe);
}

/// The referrers a store lists (`image_store::referrers`), sorted.
fn in_store_referrers(store: &OciDir, digest: &Digest) -> Vec<String> {
    sorted_digests(image_store::referrers::referrers(store, digest).unwrap())
}

/// Referrers go registry -> store -> store -> registry: the store lists
/// them (with their artifact type and annotations), keeps them through gc
/// while the image is tagged, and gives them back to a registry.
#[test]
fn referrers_go_registry_store_store_registry_and_the_store_lists_them() {
    let Some(w) = with_referrers() else {
        return;
    };
    let (c, host) = (client(), w.registry.host_port());
    let with = CopyOptions::default().with_referrers(true);
    let (sig, sig_of_sig) = (w.sig.digest(), w.sig_of_sig.digest());
    let both = vec![sig.clone(), sig_of_sig.clone()];

    let (_d, first) = image_testsupport::store::oci_dir();
    let report = c
        .copy(
            &at(&format!("{host}/src/app:1")),
            &in_store(&first, "app:1"),
            &with,
        )
        .unwrap();
    assert_eq!(report.referrers, both);
    let (_e, second) = image_testsupport::store::oci_dir();
    let report = c
        .copy(
            &in_store(&first, "app:1"),
            &in_store(&second, "app:1"),
            &with,
        )
        .unwrap();
    assert_eq!(report.referrers, both);
    for store in [&first, &second] {
        store
            .gc(&image_store::GcOptions::default().grace(Duration::ZERO))
            .unwrap();
        assert_eq!(
            in_store_referrers(store, w.image.digest()),
            vec![sig.to_string()]
        );
        assert_eq!(in_store_referrers(store, sig), vec![sig_of_sig.to_string()]);
        let listed = image_store::referrers::referrers(store, w.image.digest()).unwrap();
        assert_eq!(
            listed[0]
                .artifact_type()
                .as_ref()
                .map(|a| a.to_string())
                .as_deref(),
            Some("application/vnd.example.sig")
        );
        for m in [&w.sig, &w.sig_of_sig] {
            assert_eq!(
                store.read_blob_to_vec(m.digest(), 1 << 20).unwrap(),
                m.raw()
            );
        }
        assert_eq!(
            all_digests(store, &w.sig.descriptor()),
            all_digests(&w.src, &w.sig.descriptor())
        );
    }

    let back = format!("{host}/back/app");
    let report = c
        .copy(
            &in_store(&second, "app:1"),
            &at(&format!("{back}:1")),
            &with,
        )
        .unwrap();
    assert_eq!(report.referrers, both);
    assert_eq!(
        referrers(&c, &back, w.image.digest()),
        vec![sig.to_string()]
    );
    assert_eq!(referrers(&c, &back, sig), vec![sig_of_sig.to_string()]);

    // Without the option, a store gets none.
    let (_f, plain) = image_testsupport::store::oci_dir();
    c.copy(
        &at(&format!("{host}/src/app:1")),
        &in_store(&plain, "app:1"),
        &CopyOptions::default(),
    )
    .unwrap();
    assert!(in_store_referrers(&plain, w.image.digest()).is_empty());
}

#[test]
fn a_loop_of_referrers_ends_and_a_list_past_the_bound_is_refused_without_a_tag() {
    let Some(w) = with_referrers() else {
        return;
    };
    let c = client();
    let host = w.registry.host_port();
    let src = format!("{host}/src/app");
    // The artifact's tag-schema index lists the image besides its own
    // referrer: image -> sig -> image, a loop (content addressing cannot
    // make one; the tag schema can).
    let loop_index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            serde_json::to_value(w.sig_of_sig.descriptor()).unwrap(),
            serde_json::to_value(w.image.descriptor()).unwrap(),
        ],
    });
    let loop_index = Index::from_bytes(serde_json::to_vec(&loop_index).unwrap()).unwrap();
    w.src.write_blob(loop_index.raw()).unwrap();
    let tag = format!("{src}:sha256-{}", w.sig.digest().hex());
    c.push(
        &w.src,
        &loop_index.descriptor(),
        &Reference::parse_name(&tag).unwrap(),
        &PushOptions::default(),
    )
    .unwrap();
    assert!(referrers(&c, &src, w.sig.digest()).contains(&w.image.digest().to_string()));

    w.copied_with_both(&c, &format!("{host}/looped/app:1"));

    // Two referrers of the image where the copy takes one: refused, typed,
    // no tag set.
    let second = artifact(
        &w.src,
        &w.image.descriptor(),
        b"sbom",
        "application/vnd.example.sbom",
    );
    c.push(
        &w.src,
        &second.descriptor(),
        &Reference::parse_name(&src).unwrap(),
        &PushOptions::default(),
    )
    .unwrap();
    let bounded = format!("{host}/bounded/app");
    let e = c
        .copy(
            &at(&format!("{src}:1")),
            &at(&format!("{bounded}:1")),
            &CopyOptions::default()
                .with_referrers(true)
                .with_max_referrers(1),
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            CopyError::TooManyReferrers {
                found: 2,
                limit: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(image_core::Classify::kind(&e), ErrorKind::Unsafe);
    assert!(c
        .head_manifest(&Reference::parse_name(&format!("{bounded}:1")).unwrap())
        .unwrap()
        .is_none());
    assert!(referrers(&c, &bounded, w.image.digest()).is_empty());
}

#[test]
fn a_blob_changed_on_its_way_from_the_source_registry_is_refused_before_its_upload_closes() {
    let Some((r1, r2, c, _s, src)) = two_registries() else {
        return;
    };
    let m = make_image(&src, &Platform::host(), 9);
    src.set_tag("app:1", &m.descriptor()).unwrap();
    let on_r1 = format!("{}/src/app:1", r1.host_port());
    c.copy(
        &in_store(&src, "app:1"),
        &at(&on_r1),
        &CopyOptions::default(),
    )
    .unwrap();
    let layer = m.layers()[0].digest().to_string();
    let proxy = FaultProxy::start(
        r1.addr(),
        Faults::none().with(
            Fault::flip_byte(100)
                .on(format!("/blobs/{layer}"))
                .method("GET")
                .always(),
        ),
    );
    let through = format!("{}/src/app:1", proxy.host_port());
    let on_r2 = format!("{}/dst/app:1", r2.host_port());
    let e = c
        .copy(&at(&through), &at(&on_r2), &CopyOptions::default())
        .unwrap_err();
    let CopyError::Push { source, .. } = &e else {
        panic!("{e:?}");
    };
    assert!(
        matches!(**source, image_registry::PushError::SourceDigest { .. }),
        "{e:?}"
    );
    assert_eq!(image_core::Classify::kind(&e), ErrorKind::DigestMismatch);
    let dst = Reference::parse_name(&on_r2).unwrap();
    let layer: Digest = layer.parse().unwrap();
    assert_eq!(c.blob_size(&dst, &layer).unwrap(), None);
    assert!(c.head_manifest(&dst).unwrap().is_none());
}

#[test]
fn a_copy_reports_each_blob_and_an_interrupt_stops_it_without_a_tag() {
    use image_core::progress::Recorder;
    use image_core::{Interrupt, Tracker};
    use std::sync::Arc;
    let Some((r1, r2, c, _s, src)) = two_registries() else {
        return;
    };
    let (index, _, _) = make_index(&src);
    src.set_tag("multi:1", &index.descriptor()).unwrap();
    let on_r1 = format!("{}/src/app:1", r1.host_port());
    c.copy(
        &in_store(&src, "multi:1"),
        &at(&on_r1),
        &CopyOptions::default(),
    )
    .unwrap();

    // Stopped once the first blob has moved: Cancelled, no tag.
    let interrupt = Interrupt::new();
    let stopping = Arc::new(Recorder::stopping_at(interrupt.clone(), 1));
    let stopped = format!("{}/stopped/app:1", r2.host_port());
    let e = c
        .copy(
            &at(&on_r1),
            &at(&stopped),
            &CopyOptions::default().with_tracker(Tracker::new(stopping, interrupt)),
        )
        .unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert_eq!(
        image_core::error::classify(&e, image_registry::kind_of),
        Some(ErrorKind::Cancelled),
        "{e:?}"
    );
    assert!(c
        .head_manifest(&Reference::parse_name(&stopped).unwrap())
        .unwrap()
        .is_none());

    // Each blob an item, finished at its size.
    let recorder = Arc::new(Recorder::new());
    let to = format!("{}/dst/app:1", r2.host_port());
    c.copy(
        &at(&on_r1),
        &at(&to),
        &CopyOptions::default().with_tracker(Tracker::new(recorder.clone(), Interrupt::new())),
    )
    .unwrap();
    let items = recorder.items();
    assert_eq!(items.len(), 6, "{items:#?}");
    assert!(items
        .values()
        .all(|i| i.finished && Some(i.done) == i.total));
    assert!(
        recorder.violations().is_empty(),
        "{:?}",
        recorder.violations()
    );
}

/// Generated referrer graphs: the tag-schema lists of an image and of
/// artifacts are random subsets of them all (loops, self-references and
/// shared referrers among them); a copy with referrers takes exactly what
/// is reachable from the image, each once, and ends.
#[test]
fn generated_referrer_graphs_copy_exactly_what_is_reachable() {
    let Some(registry) = Registry::start_or_skip(RegistryOptions::plain()) else {
        return;
    };
    let c = client();
    let (_d, src) = image_testsupport::store::oci_dir();
    let host = registry.host_port();
    let repo = format!("{host}/graph/app");
    let untagged = Reference::parse_name(&repo).unwrap();
    let image = make_image(&src, &Platform::host(), 21);
    let other = make_image(&src, &Platform::host(), 22);
    for m in [&image, &other] {
        c.push(&src, &m.descriptor(), &untagged, &PushOptions::default())
            .unwrap();
    }
    src.set_tag("app:1", &image.descriptor()).unwrap();
    c.push(
        &src,
        &image.descriptor(),
        &Reference::parse_name(&format!("{repo}:1")).unwrap(),
        &PushOptions::default(),
    )
    .unwrap();
    // Artifacts whose subject is `other`: their listing under the image
    // comes only from the generated lists below.
    let artifacts: Vec<Manifest> = (0..5)
        .map(|i| {
            let a = artifact(
                &src,
                &other.descriptor(),
                format!("payload {i}").as_bytes(),
                "application/vnd.example.gen",
            );
            c.push(&src, &a.descriptor(), &untagged, &PushOptions::default())
                .unwrap();
            a
        })
        .collect();
    let nodes: Vec<&Manifest> = std::iter::once(&image).chain(&artifacts).collect();
    for seed in 0..4u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut lists: Vec<Vec<usize>> = Vec::new();
        for node in &nodes {
            let list: Vec<usize> = (0..nodes.len()).filter(|_| rng.u8(..) < 90).collect();
            let entries: Vec<serde_json::Value> = list
                .iter()
                .map(|&i| serde_json::to_value(nodes[i].descriptor()).unwrap())
                .collect();
            let index = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": entries,
            });
            let index = Index::from_bytes(serde_json::to_vec(&index).unwrap()).unwrap();
            src.write_blob(index.raw()).unwrap();
            let tag = format!("{repo}:sha256-{}", node.digest().hex());
            c.push(
                &src,
                &index.descriptor(),
                &Reference::parse_name(&tag).unwrap(),
                &PushOptions::default(),
            )
            .unwrap();
            lists.push(list);
        }
        // What a walk from the image reaches, the image itself aside.
        let mut reached = vec![false; nodes.len()];
        reached[0] = true;
        let mut pending = vec![0usize];
        while let Some(n) = pending.pop() {
            for &m in &lists[n] {
                if !reached[m] {
                    reached[m] = true;
                    pending.push(m);
                }
            }
        }
        let mut want: Vec<String> = (1..nodes.len())
            .filter(|&i| reached[i])
            .map(|i| nodes[i].digest().to_string())
            .collect();
        want.sort();
        let dest = format!("{host}/gen{seed}/app");
        let report = c
            .copy(
                &at(&format!("{repo}:1")),
                &at(&format!("{dest}:1")),
                &CopyOptions::default().with_referrers(true),
            )
            .unwrap();
        let mut got: Vec<String> = report.referrers.iter().map(|d| d.to_string()).collect();
        got.sort();
        assert_eq!(got, want, "seed {seed}: {lists:?}");
        for d in &report.referrers {
            let by_digest = Reference::parse_name(&dest).unwrap().with_digest(d.clone());
            c.head_manifest(&by_digest).unwrap().expect("copied");
        }
    }
}

/// Pushes racing on one tag-schema referrers index (distribution 2.8 has
/// no referrers API and no conditional PUT): each pusher re-reads the
/// index after its PUT and merges again when its entry was lost, so every
/// referrer ends up listed.
#[test]
fn racing_referrer_pushes_on_the_tag_schema_index_all_end_up_listed() {
    let Some(registry) = Registry::start_or_skip(RegistryOptions::plain()) else {
        return;
    };
    const PUSHERS: usize = 12;
    let c = client();
    let (_dir, src, image, repo) = pushed_image(&registry, &c, 11, "race/app");
    let sigs: Vec<Manifest> = (0..PUSHERS)
        .map(|i| {
            artifact(
                &src,
                &image.descriptor(),
                format!("signature {i}").as_bytes(),
                "application/vnd.example.sig",
            )
        })
        .collect();
    let untagged = Reference::parse_name(&repo).unwrap();
    // The first starts the index and uploads the blobs the artifacts share
    // (distribution refuses a manifest while the same blob is committed by
    // several uploads at once, a race of its own not at stake here).
    c.push(
        &src,
        &sigs[0].descriptor(),
        &untagged,
        &PushOptions::default(),
    )
    .unwrap();
    // The others start at once, each on its own client.
    let start = std::sync::Barrier::new(PUSHERS - 1);
    std::thread::scope(|s| {
        for m in &sigs[1..] {
            let (start, src, untagged) = (&start, &src, &untagged);
            s.spawn(move || {
                let c = client();
                start.wait();
                c.push(src, &m.descriptor(), untagged, &PushOptions::default())
                    .unwrap();
            });
        }
    });
    let mut want: Vec<String> = sigs.iter().map(|m| m.digest().to_string()).collect();
    want.sort();
    assert_eq!(referrers(&c, &repo, image.digest()), want);
}

fn archive(path: &std::path::Path, name: Option<&str>) -> Location<'static, OciDir> {
    Location::Archive {
        path: path.to_owned(),
        name: name.map(str::to_owned),
    }
}

/// `skopeo copy --all --preserve-digests SRC DEST`; `None` (after a loud
/// skip) without it.
fn skopeo_copy(src: &str, dest: &str) -> Option<()> {
    skopeo(&["copy", "--all", "--preserve-digests", src, dest]).map(drop)
}

/// The names in `dir` besides `keep`: what a copy left behind.
fn leftovers(dir: &std::path::Path, keep: &[&str]) -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect();
    left.sort();
    left
}

/// A registry, a client and a store holding [`make_index`]'s index as
/// `multi:1` (and its amd64 manifest); `None` after a loud skip.
fn registry_and_index() -> Option<(
    Registry,
    blocking::Client,
    tempfile::TempDir,
    OciDir,
    Index,
    Manifest,
)> {
    let registry = Registry::start_or_skip(RegistryOptions::plain())?;
    let (dir, src) = image_testsupport::store::oci_dir();
    let (index, m_amd, _) = make_index(&src);
    src.set_tag("multi:1", &index.descriptor()).unwrap();
    Some((registry, client(), dir, src, index, m_amd))
}

/// skopeo's `oci-archive:` both ways: an index skopeo archived goes from
/// the archive (read in place) to the registry and to a store with every
/// digest kept; our archives, from the registry and from a store, are read
/// by skopeo byte for byte; a failed write leaves the old archive whole.
#[test]
fn oci_archives_go_both_ways_with_skopeo_with_identical_digests() {
    let Some((registry, c, dir, src, index, _)) = registry_and_index() else {
        return;
    };
    let want = all_digests(&src, &index.descriptor());
    let stored = src.tags().unwrap()[0].name.clone();
    let work = tempfile::tempdir().unwrap();
    let theirs = work.path().join("theirs.tar");
    let Some(()) = skopeo_copy(
        &format!("oci:{}:{stored}", dir.path().join("layout").display()),
        &format!("oci-archive:{}:app:1", theirs.display()),
    ) else {
        return;
    };

    // skopeo's archive -> registry, read in place.
    let on_registry = format!("{}/arch/app:1", registry.host_port());
    let report = c
        .copy(
            &archive(&theirs, Some("app:1")),
            &at(&on_registry),
            &CopyOptions::default(),
        )
        .unwrap();
    assert_eq!(
        report.descriptor.unwrap().digest(),
        index.descriptor().digest()
    );
    assert_eq!(
        c.get_manifest(&Reference::parse_name(&on_registry).unwrap())
            .unwrap()
            .raw(),
        index.raw()
    );
    // skopeo's archive -> store (its only image, unnamed).
    let (_d, dst) = image_testsupport::store::oci_dir();
    c.copy(
        &archive(&theirs, None),
        &in_store(&dst, "x:1"),
        &CopyOptions::default(),
    )
    .unwrap();
    let top = dst.resolve_tag("x:1").unwrap();
    assert_eq!(top.digest(), index.descriptor().digest());
    assert_eq!(all_digests(&dst, &top), want);

    // Ours, from the registry and from a store: skopeo reads them.
    let ours_from_registry = work.path().join("from-registry.tar");
    let ours_from_store = work.path().join("from-store.tar");
    c.copy(
        &at(&on_registry),
        &archive(&ours_from_registry, Some("v1")),
        &CopyOptions::default(),
    )
    .unwrap();
    c.copy(
        &in_store(&src, "multi:1"),
        &archive(&ours_from_store, Some("v1")),
        &CopyOptions::default(),
    )
    .unwrap();
    for ours in [&ours_from_registry, &ours_from_store] {
        let in_archive = format!("oci-archive:{}:v1", ours.display());
        let raw = skopeo(&["inspect", "--raw", &in_archive]).unwrap();
        assert_eq!(raw, index.raw(), "skopeo reads {}", ours.display());
        let layout = tempfile::tempdir().unwrap();
        skopeo_copy(&in_archive, &format!("oci:{}:v1", layout.path().display())).unwrap();
        let read_back = OciDir::open(layout.path()).unwrap();
        let top = image_store::resolve_reference(&read_back, "v1").unwrap();
        assert_eq!(all_digests(&read_back, &top), want);
    }
    // The scratch store and the temporary files are gone.
    assert_eq!(
        leftovers(
            work.path(),
            &["theirs.tar", "from-registry.tar", "from-store.tar"]
        ),
        Vec::<String>::new()
    );

    // A copy stopped while it writes leaves the archive as it was.
    use image_core::progress::Recorder;
    use image_core::{Interrupt, Tracker};
    let before = std::fs::read(&ours_from_store).unwrap();
    let interrupt = Interrupt::new();
    let stopping = std::sync::Arc::new(Recorder::stopping_at(interrupt.clone(), 1));
    let e = c
        .copy(
            &at(&on_registry),
            &archive(&ours_from_store, Some("v2")),
            &CopyOptions::default().with_tracker(Tracker::new(stopping, interrupt)),
        )
        .unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert_eq!(
        image_core::error::classify(&e, image_registry::kind_of),
        Some(ErrorKind::Cancelled),
        "{e:?}"
    );
    assert_eq!(std::fs::read(&ours_from_store).unwrap(), before);
    assert_eq!(
        leftovers(
            work.path(),
            &["theirs.tar", "from-registry.tar", "from-store.tar"]
        ),
        Vec::<String>::new()
    );
}

/// An archive that cannot be read in place is refused, typed: compressed
/// (load reads those), several images and none named, a name it lacks.
#[test]
fn archives_that_cannot_be_read_in_place_are_refused_typed() {
    let c = client();
    let (_d, src) = image_testsupport::store::oci_dir();
    let (index, m_amd, _) = make_index(&src);
    src.set_tag("multi:1", &index.descriptor()).unwrap();
    src.set_tag("amd:1", &m_amd.descriptor()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let two = work.path().join("two.tar");
    let mut tar = Vec::new();
    let images =
        ["multi:1", "amd:1"].map(|n| image_store::archive::SaveImage::from_tag(&src, n).unwrap());
    image_store::archive::save_oci(&src, &images, &mut tar).unwrap();
    std::fs::write(&two, &tar).unwrap();
    let (_e, dst) = image_testsupport::store::oci_dir();
    let kind = |e: &CopyError| {
        image_testsupport::chain::assert_said_once(e);
        image_core::error::classify(e, image_registry::kind_of)
    };
    let from = |path: &std::path::Path, name: Option<&str>, tag: &str| {
        c.copy(
            &archive(path, name),
            &in_store(&dst, tag),
            &CopyOptions::default(),
        )
    };

    let e = from(&two, None, "x:1").unwrap_err();
    assert!(
        matches!(e, CopyError::ArchiveImage { images: 2, .. }),
        "{e:?}"
    );
    let e = from(&two, Some("nope:1"), "x:1").unwrap_err();
    assert_eq!(kind(&e), Some(ErrorKind::NotFound), "{e:?}");
    // Named, it copies.
    from(&two, Some("amd:1"), "x:1").unwrap();
    assert_eq!(
        dst.resolve_tag("x:1").unwrap().digest(),
        m_amd.descriptor().digest()
    );

    let gz = work.path().join("two.tar.gz");
    std::fs::write(&gz, image_testsupport::codec::gzip(&tar)).unwrap();
    let e = from(&gz, Some("amd:1"), "y:1").unwrap_err();
    assert_eq!(kind(&e), Some(ErrorKind::Unsupported), "{e:?}");
    // A cut archive: refused when opened, nothing tagged.
    let cut = work.path().join("cut.tar");
    std::fs::write(&cut, &tar[..tar.len() / 2]).unwrap();
    let e = from(&cut, Some("amd:1"), "y:1").unwrap_err();
    assert!(matches!(e, CopyError::Archive { .. }), "{e:?}");
    assert!(dst.resolve_tag("y:1").is_err());
}

/// A layout or an archive named without a reference means its one image:
/// the untagged entries a copy with referrers writes beside it (oras's
/// form: each a manifest whose `subject` the layout holds) are no
/// candidates, whether the image itself is named or not. With
/// `--referrers` they come along; without, they stay behind. Two images
/// and no reference are still refused, typed, referrers or not.
#[test]
fn a_reference_less_layout_or_archive_means_its_image_not_its_referrers() {
    let c = client();
    let with = CopyOptions::default().with_referrers(true);
    let (_d, src) = image_testsupport::store::oci_dir();
    let (index, amd, _arm) = make_index(&src);
    src.set_tag("app:1", &index.descriptor()).unwrap();
    // A signature of the index, one of a platform manifest (a subject that
    // is no entry of index.json) and one of that signature.
    let sig = signature(&src, &index.descriptor(), b"sig");
    let amd_sig = signature(&src, &amd.descriptor(), b"amd");
    let sig_sig = signature(&src, &amd_sig.descriptor(), b"2");
    for (subject, r) in [
        (index.digest(), &sig),
        (amd.digest(), &amd_sig),
        (amd_sig.digest(), &sig_sig),
    ] {
        image_store::referrers::add(&src, subject, &entry(r)).unwrap();
    }
    let mut all: Vec<String> = [&sig, &amd_sig, &sig_sig]
        .iter()
        .map(|m| m.digest().to_string())
        .collect();
    all.sort();
    let sorted = |report: &image_registry::CopyReport| {
        let mut got: Vec<String> = report.referrers.iter().map(Digest::to_string).collect();
        got.sort();
        got
    };

    let work = tempfile::tempdir().unwrap();
    let layout = OciDir::open_or_create(work.path().join("layout")).unwrap();
    let layout_at = |name: &str| Location::Layout {
        store: &layout,
        name: name.to_owned(),
    };
    let named_tar = work.path().join("named.tar");
    let unnamed_tar = work.path().join("unnamed.tar");
    for to in [
        layout_at("app:1"),
        archive(&named_tar, Some("app:1")),
        archive(&unnamed_tar, None),
    ] {
        let report = c.copy(&in_store(&src, "app:1"), &to, &with).unwrap();
        assert_eq!(sorted(&report), all, "to {to:?}");
    }
    assert_eq!(untagged(layout.index_entries().unwrap()).len(), 3);

    // Back without a reference, with and without the referrers.
    for from in [
        archive(&named_tar, None),
        archive(&unnamed_tar, None),
        Location::OnlyImage { store: &layout },
    ] {
        let (_e, back) = image_testsupport::store::oci_dir();
        let report = c
            .copy(&from, &in_store(&back, "back:1"), &with)
            .unwrap_or_else(|e| panic!("from {from:?}: {e:?}"));
        assert_eq!(report.descriptor.as_ref(), Some(&index.descriptor()));
        assert_eq!(sorted(&report), all, "from {from:?}");
        assert_eq!(
            back.resolve_tag("back:1").unwrap().digest(),
            index.descriptor().digest()
        );
        assert_eq!(
            in_store_referrers(&back, amd_sig.digest()),
            vec![sig_sig.digest().to_string()]
        );
        let (_f, bare) = image_testsupport::store::oci_dir();
        let report = c
            .copy(&from, &in_store(&bare, "bare:1"), &CopyOptions::default())
            .unwrap_or_else(|e| panic!("from {from:?}: {e:?}"));
        assert!(report.referrers.is_empty(), "from {from:?}");
        assert_eq!(
            bare.resolve_tag("bare:1").unwrap().digest(),
            index.descriptor().digest()
        );
        assert!(!bare.exists(sig.digest()).unwrap());
    }

    // A second image in each: no reference is ambiguous again, typed.
    let other = make_image(&src, &Platform::host(), 99);
    src.set_tag("other:1", &other.descriptor()).unwrap();
    let two_tar = work.path().join("two.tar");
    for (tag, to) in [
        ("app:1", archive(&two_tar, Some("app:1"))),
        ("other:1", layout_at("other:1")),
    ] {
        c.copy(&in_store(&src, tag), &to, &with).unwrap();
    }
    let mut tar_images = Vec::new();
    image_store::archive::save_oci(
        &src,
        &[
            image_store::archive::SaveImage::from_tag(&src, "app:1").unwrap(),
            image_store::archive::SaveImage::from_tag(&src, "other:1").unwrap(),
            image_store::archive::SaveImage::new(entry(&sig), Vec::new()),
        ],
        &mut tar_images,
    )
    .unwrap();
    std::fs::write(&two_tar, &tar_images).unwrap();
    let (_g, none) = image_testsupport::store::oci_dir();
    let e = c
        .copy(&archive(&two_tar, None), &in_store(&none, "x:1"), &with)
        .unwrap_err();
    assert!(
        matches!(e, CopyError::ArchiveImage { images: 2, .. }),
        "{e:?}"
    );
    let e = c
        .copy(
            &Location::OnlyImage { store: &layout },
            &in_store(&none, "x:1"),
            &with,
        )
        .unwrap_err();
    let kind = |e: &CopyError| {
        image_testsupport::chain::assert_said_once(e);
        image_core::error::classify(e, image_registry::kind_of)
    };
    assert_eq!(kind(&e), Some(ErrorKind::InvalidInput), "{e:?}");
    assert!(none.tags().unwrap().is_empty());
}

/// "The only image" is asked for explicitly ([`Location::OnlyImage`]):
/// an empty name, of a store or a layout holding one image, stays an
/// error naming it, and "the only image" names no destination.
#[test]
fn an_empty_name_is_an_error_not_the_only_image() {
    let c = client();
    let (_d, src) = image_testsupport::store::oci_dir();
    let image = make_image(&src, &Platform::host(), 7);
    src.set_tag("app:1", &image.descriptor()).unwrap();
    let (_e, to) = image_testsupport::store::oci_dir();
    let with = CopyOptions::default();
    for from in [
        in_store(&src, ""),
        Location::Layout {
            store: &src,
            name: String::new(),
        },
    ] {
        let e = c
            .copy(&from, &in_store(&to, "x:1"), &with)
            .expect_err("an empty name picked an image");
        assert!(matches!(e, CopyError::Name { .. }), "{e:?}");
    }
    assert!(to.tags().unwrap().is_empty());
    let e = c
        .copy(
            &in_store(&src, "app:1"),
            &Location::OnlyImage { store: &to },
            &with,
        )
        .unwrap_err();
    assert!(matches!(e, CopyError::UnnamedDestination), "{e:?}");
    image_testsupport::chain::assert_said_once(&e);
    assert_eq!(
        image_core::error::classify(&e, image_registry::kind_of),
        Some(ErrorKind::InvalidInput)
    );
    // Asked for, the store's only image is copied.
    c.copy(
        &Location::OnlyImage { store: &src },
        &in_store(&to, "x:1"),
        &with,
    )
    .unwrap();
    assert_eq!(
        to.resolve_tag("x:1").unwrap().digest(),
        image.descriptor().digest()
    );
}

/// A layout named without a reference at a destination
/// ([`Location::Untagged`], skopeo's `oci:DIR`) lists the image in its
/// `index.json` without a name, as skopeo 1.9 writes it: once however
/// often it is copied there, beside a named entry of the same digest;
/// skopeo reads it, and read back without a reference it is the same
/// image. From a registry, one platform of an index is listed (its
/// manifest, the index not stored). With two images there, reading
/// without a reference is refused, typed, naming the choice.
#[test]
fn a_layout_without_a_reference_gets_the_image_unnamed_as_skopeo_writes_it() {
    let Some((registry, c, _d, src, index, m_amd)) = registry_and_index() else {
        return;
    };
    let image = make_image(&src, &Platform::host(), 5);
    src.set_tag("app:1", &image.descriptor()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layout");
    let layout = OciDir::open_or_create(&dir).unwrap();
    let unnamed = Location::Untagged { store: &layout };
    let with = CopyOptions::default();

    let report = c.copy(&in_store(&src, "app:1"), &unnamed, &with).unwrap();
    assert_eq!(report.descriptor, Some(image.descriptor()));
    assert_eq!(report.tag, None);
    let entries = || layout.index_entries().unwrap();
    assert_eq!(entries(), vec![image.descriptor()]);
    if let Some(raw) = skopeo(&["inspect", "--raw", &format!("oci:{}", dir.display())]) {
        assert_eq!(Digest::sha256(&raw), *image.digest());
    }
    let (_e, back) = image_testsupport::store::oci_dir();
    let only = Location::OnlyImage { store: &layout };
    c.copy(&only, &in_store(&back, "back:1"), &with).unwrap();
    assert_eq!(
        back.resolve_tag("back:1").unwrap().digest(),
        image.descriptor().digest()
    );
    // Again, then beside a name of the same image: one unnamed entry.
    c.copy(&in_store(&src, "app:1"), &unnamed, &with).unwrap();
    assert_eq!(entries().len(), 1);
    let named = Location::Layout {
        store: &layout,
        name: "app:1".to_owned(),
    };
    c.copy(&in_store(&src, "app:1"), &named, &with).unwrap();
    c.copy(&in_store(&src, "app:1"), &unnamed, &with).unwrap();
    assert_eq!(entries().len(), 2, "{:?}", entries());
    assert_eq!(untagged(entries()), vec![image.digest().to_string()]);

    // From a registry, for one platform: its manifest, unnamed.
    let multi = format!("{}/multi/app:1", registry.host_port());
    c.copy(&in_store(&src, "multi:1"), &at(&multi), &with)
        .unwrap();
    let amd = CopyOptions::default().with_platform(Platform::new("linux", "amd64"));
    let report = c.copy(&at(&multi), &unnamed, &amd).unwrap();
    assert_eq!(
        report.descriptor.as_ref().map(Descriptor::digest),
        Some(m_amd.descriptor().digest())
    );
    assert_eq!(report.tag, None);
    let mut want = vec![image.digest().to_string(), m_amd.digest().to_string()];
    want.sort();
    assert_eq!(untagged(entries()), want);
    assert!(!layout.exists(index.digest()).unwrap());
    assert_eq!(
        all_digests(&layout, &m_amd.descriptor()),
        all_digests(&src, &m_amd.descriptor())
    );

    // Two images: no reference names one.
    let e = c
        .copy(&only, &in_store(&back, "x:1"), &with)
        .expect_err("two images, none named");
    assert!(
        matches!(&e, CopyError::OnlyImage { source, .. }
            if matches!(**source, image_store::referrers::OnlyImageError::Several { images: 2 })),
        "{e:?}"
    );
    image_testsupport::chain::assert_said_once(&e);
    assert_eq!(
        image_core::error::classify(&e, image_registry::kind_of),
        Some(ErrorKind::InvalidInput)
    );
    assert!(back.resolve_tag("x:1").is_err());
}

/// The real file system, running `hook` once right after the first held
/// lease is released (its file removed) once a blob whose path ends with
/// `after` is in place: the moment a pull's own lease ends.
struct AfterLeaseRelease {
    after: String,
    stored: std::sync::atomic::AtomicBool,
    hook: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for AfterLeaseRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfterLeaseRelease")
            .field("after", &self.after)
            .finish()
    }
}

mod seam {
    use super::AfterLeaseRelease;
    use image_store::fs::{Fs, RealFs, Root, Target};
    use std::fs::File;
    use std::io;
    use std::path::Path;
    use std::sync::atomic::Ordering;

    impl Fs for AfterLeaseRelease {
        fn create_dir_all(&self, t: Target, r: &Root, p: &Path) -> io::Result<()> {
            RealFs.create_dir_all(t, r, p)
        }
        fn open_temp(&self, t: Target, r: &Root, p: &Path, truncate: bool) -> io::Result<File> {
            RealFs.open_temp(t, r, p, truncate)
        }
        fn write(&self, t: Target, f: &mut File, buf: &[u8]) -> io::Result<usize> {
            RealFs.write(t, f, buf)
        }
        fn set_len(&self, t: Target, f: &File, len: u64) -> io::Result<()> {
            RealFs.set_len(t, f, len)
        }
        fn sync_file(&self, t: Target, f: &File) -> io::Result<()> {
            RealFs.sync_file(t, f)
        }
        fn rename(&self, t: Target, r: &Root, from: &Path, to: &Path) -> io::Result<()> {
            RealFs.rename(t, r, from, to)?;
            if t == Target::Blob && to.to_string_lossy().ends_with(&self.after) {
                self.stored.store(true, Ordering::SeqCst);
            }
            Ok(())
        }
        fn sync_dir(&self, t: Target, r: &Root, d: &Path) -> io::Result<()> {
            RealFs.sync_dir(t, r, d)
        }
        fn remove_file(&self, t: Target, r: &Root, p: &Path) -> io::Result<()> {
            RealFs.remove_file(t, r, p)?;
            let held = p.extension().is_some_and(|e| e == "held");
            if t == Target::Lease && held && self.stored.load(Ordering::SeqCst) {
                if let Some(hook) = self.hook.lock().unwrap().take() {
                    hook();
                }
            }
            Ok(())
        }
        fn remove_dir_all(&self, t: Target, r: &Root, p: &Path) -> io::Result<()> {
            RealFs.remove_dir_all(t, r, p)
        }
        fn remove_dir(&self, t: Target, r: &Root, p: &Path) -> io::Result<()> {
            RealFs.remove_dir(t, r, p)
        }
    }
}

/// A referrer pulled from a registry is held from before its pull until
/// it is listed: its pull's own lease ends with the pull, and an
/// unlisted manifest is gc's once nothing keeps its subject. The store's
/// file-system seam runs gc (grace 0, from another handle) right after
/// the signature's pull released its lease, with the image's tag just
/// removed (a concurrent `rmi`, so gc's back link from a kept subject
/// does not keep it either): the signature survives, the copy completes,
/// and the signature is listed and kept by its list.
#[test]
fn a_pulled_referrer_is_held_between_its_pull_and_its_listing() {
    let Some(w) = with_referrers() else {
        return;
    };
    let c = client();
    let src = format!("{}/src/app:1", w.registry.host_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    // A blob nothing holds: what proves the collection effective.
    let canary = OciDir::open_or_create(&path)
        .unwrap()
        .write_blob(b"canary")
        .unwrap();
    let collector = OciDir::open(&path).unwrap();
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let report = std::sync::Arc::new(std::sync::Mutex::new(None));
    let hook = {
        let (ran, report) = (ran.clone(), report.clone());
        move || {
            collector.remove_tag("app:1").unwrap();
            let gc = collector
                .gc(&image_store::GcOptions::default().grace(Duration::ZERO))
                .unwrap();
            *report.lock().unwrap() = Some(gc);
            ran.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    };
    let fs = AfterLeaseRelease {
        after: w.sig.digest().hex().to_owned(),
        stored: Default::default(),
        hook: std::sync::Mutex::new(Some(Box::new(hook))),
    };
    let store = OciDir::open_with(&path, std::sync::Arc::new(fs)).unwrap();
    let copied = c
        .copy(
            &at(&src),
            &in_store(&store, "app:1"),
            &CopyOptions::default().with_referrers(true),
        )
        .unwrap();
    assert!(
        ran.load(std::sync::atomic::Ordering::SeqCst),
        "the hook ran"
    );
    let gc = report.lock().unwrap().take().unwrap();
    assert_eq!(gc.removed, vec![canary], "gc collected what nothing held");
    assert!(!gc.removed.contains(w.sig.digest()), "{gc:?}");
    assert_eq!(
        copied.referrers,
        vec![w.sig.digest().clone(), w.sig_of_sig.digest().clone()]
    );
    assert_eq!(
        in_store_referrers(&store, w.image.digest()),
        vec![w.sig.digest().to_string()]
    );
    // Kept by its list from now on, and its subject through it.
    store
        .gc(&image_store::GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    for m in [&w.sig, &w.sig_of_sig, &w.image] {
        assert_eq!(
            all_digests(&store, &m.descriptor()),
            all_digests(&w.src, &m.descriptor())
        );
    }
}

/// What the requests for a tag-schema referrers index hold in their path.
const TAG_SCHEMA: &str = "manifests/sha256-";

/// `repo` (`host/path`) reached through `proxy`.
fn through(proxy: &FaultProxy, repo: &str) -> Reference {
    let path = repo.split_once('/').unwrap().1;
    Reference::parse_name(&format!("{}/{path}", proxy.host_port())).unwrap()
}

/// Two pushers of different referrers of one subject, interleaved by two
/// fault proxies into the lost update the tag-schema index allows
/// (distribution 2.8: no referrers API, no conditional PUT): both read
/// the index; A's PUT lands; B's PUT, held until then, lands after it and
/// drops A's entry; A's re-read, held until B is done, finds its entry
/// gone, merges into B's index and puts it back. Both end up listed.
#[test]
fn a_referrer_lost_to_a_later_put_on_the_tag_schema_index_is_merged_back() {
    let Some(registry) = Registry::start_or_skip(RegistryOptions::plain()) else {
        return;
    };
    let c = client();
    let (_dir, src, image, repo) = pushed_image(&registry, &c, 12, "two/app");
    let sig = |what: &str| signature(&src, &image.descriptor(), what.as_bytes());
    let (first, a, b) = (sig("first"), sig("a"), sig("b"));
    // The index starts with a first referrer (and the blobs all share).
    let direct = Reference::parse_name(&repo).unwrap();
    c.push(&src, &first.descriptor(), &direct, &PushOptions::default())
        .unwrap();
    // B's PUT of the index is held; A's first read passes (the whole
    // answer, then the connection closed) and its second, the re-read
    // after its PUT, is held.
    let proxy_b = FaultProxy::start(
        registry.addr(),
        Faults::none().with(Fault::hold().on(TAG_SCHEMA).method("PUT")),
    );
    let proxy_a = FaultProxy::start(
        registry.addr(),
        Faults::none()
            .with(Fault::cut_after(u64::MAX).on(TAG_SCHEMA).method("GET"))
            .with(Fault::hold().on(TAG_SCHEMA).method("GET")),
    );
    let wait = Duration::from_secs(60);
    std::thread::scope(|s| {
        let (to_b, to_a) = (through(&proxy_b, &repo), through(&proxy_a, &repo));
        let (src, a, b) = (&src, &a, &b);
        let pusher_b =
            s.spawn(move || client().push(src, &b.descriptor(), &to_b, &PushOptions::default()));
        assert!(proxy_b.wait_held(1, wait), "B read the index and put");
        let pusher_a =
            s.spawn(move || client().push(src, &a.descriptor(), &to_a, &PushOptions::default()));
        // A's PUT landed; its re-read waits (a pusher that does not
        // re-read is done instead).
        let started = std::time::Instant::now();
        while !proxy_a.wait_held(1, Duration::from_millis(50)) && !pusher_a.is_finished() {
            assert!(started.elapsed() < wait, "A neither re-read nor ended");
        }
        proxy_b.release();
        pusher_b.join().unwrap().unwrap();
        proxy_a.release();
        pusher_a.join().unwrap().unwrap();
    });
    let mut want: Vec<String> = [&first, &a, &b]
        .iter()
        .map(|m| m.digest().to_string())
        .collect();
    want.sort();
    assert_eq!(referrers(&c, &repo, image.digest()), want);
    // The interleaving happened as planned: B's held PUT came after A's.
    let puts = |p: &FaultProxy| {
        p.exchanges()
            .iter()
            .filter(|e| e.method == "PUT" && e.target.contains(TAG_SCHEMA))
            .count()
    };
    assert_eq!(puts(&proxy_b), 1);
    assert_eq!(puts(&proxy_a), 2, "A put, lost its entry, put again");
}

/// A registry that honours `If-Match` answers 412 to a PUT of the
/// tag-schema index another writer moved since it was read (here the
/// proxy answers so, as such a registry would): the pusher reads the
/// index again, merges and puts it, and its referrer is listed.
#[test]
fn a_412_on_the_tag_schema_index_is_read_again_merged_and_put() {
    let Some(registry) = Registry::start_or_skip(RegistryOptions::plain()) else {
        return;
    };
    let c = client();
    let (_dir, src, image, repo) = pushed_image(&registry, &c, 13, "cas/app");
    let sig = signature(&src, &image.descriptor(), b"conditional");
    let proxy = FaultProxy::start(
        registry.addr(),
        Faults::none().with(Fault::status(412).on(TAG_SCHEMA).method("PUT")),
    );
    c.push(
        &src,
        &sig.descriptor(),
        &through(&proxy, &repo),
        &PushOptions::default(),
    )
    .unwrap();
    assert_eq!(
        referrers(&c, &repo, image.digest()),
        vec![sig.digest().to_string()]
    );
    let statuses: Vec<u16> = proxy
        .exchanges()
        .iter()
        .filter(|e| e.method == "PUT" && e.target.contains(TAG_SCHEMA))
        .map(|e| e.status)
        .collect();
    assert_eq!(statuses, vec![412, 201]);
}

/// Stores `bytes` in `store` under their sha512 digest.
fn put_sha512(store: &OciDir, bytes: &[u8]) -> Digest {
    let digest = Digest::of_bytes(image_core::Algorithm::Sha512, bytes);
    store
        .ingest_reader(&mut &bytes[..], Some(bytes.len() as u64), Some(&digest))
        .unwrap()
}

/// An image in `store` whose config and two layers are named by sha512
/// digests; the manifest itself is returned unstored.
fn sha512_manifest(store: &OciDir, seed: u64) -> Manifest {
    let gz = image_testsupport::codec::gzip(&random(30_000, seed));
    let plain = random(5_000, seed + 1);
    let mut layers = Vec::new();
    for (bytes, media_type) in [(gz, MediaType::OciLayerGzip), (plain, MediaType::OciLayer)] {
        let digest = put_sha512(store, &bytes);
        layers.push(image_core::manifest::descriptor(
            &media_type,
            &digest,
            bytes.len() as u64,
        ));
    }
    let config = ImageConfig::new(ConfigFile::new("linux", "amd64")).unwrap();
    let config_digest = put_sha512(store, config.raw());
    image_store::archive::build_manifest(&config_digest, config.raw().len() as u64, layers).unwrap()
}

/// Every blob under `top` in `store`, with its bytes, by digest.
fn all_blobs(store: &OciDir, top: &Descriptor) -> Vec<(Digest, Vec<u8>)> {
    all_digests(store, top)
        .into_iter()
        .map(|d| {
            let bytes = store.read_blob_to_vec(&d, 1 << 30).unwrap();
            (d, bytes)
        })
        .collect()
}

/// The store is clean after fsck, and a gc with no grace keeps every blob
/// of the image tagged `name`.
fn fsck_and_gc_keep(store: &OciDir, name: &str, want: &[(Digest, Vec<u8>)]) {
    let report = store.fsck(&image_store::FsckOptions::default()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(report.missing.is_empty(), "{report:?}");
    let gc = store
        .gc(&image_store::GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    assert!(gc.removed.is_empty(), "gc removed {:?}", gc.removed);
    let top = store.resolve_tag(name).unwrap();
    assert_eq!(all_blobs(store, &top), want);
}

/// A manifest whose config and layers are named by sha512 digests goes
/// store -> registry -> store -> registry: each is stored and verified under
/// the digest its descriptor names (not under a sha256 of it), the pulled
/// store is clean and gc keeps it, and the manifest and blobs come back
/// byte for byte. (The distribution server takes sha512 blobs but keys
/// manifests by sha256; a sha512 child manifest is in the next test.)
#[test]
fn sha512_config_and_layers_go_store_registry_store_and_back_byte_for_byte() {
    let Some(registry) = Registry::start_or_skip(RegistryOptions::plain()) else {
        return;
    };
    let c = client();
    let (dir, src) = image_testsupport::store::oci_dir();
    let m = sha512_manifest(&src, 51);
    src.write_blob(m.raw()).unwrap();
    src.set_tag("s512:1", &m.descriptor()).unwrap();
    let want = all_blobs(&src, &m.descriptor());
    assert_eq!(want.len(), 4);
    assert_eq!(
        want.iter()
            .filter(|(d, _)| d.algorithm() == image_core::Algorithm::Sha512)
            .count(),
        3
    );

    let on_r = format!("{}/s512/app:1", registry.host_port());
    c.copy(
        &in_store(&src, "s512:1"),
        &at(&on_r),
        &CopyOptions::default(),
    )
    .unwrap();
    assert_eq!(
        c.get_manifest(&Reference::parse_name(&on_r).unwrap())
            .unwrap()
            .raw(),
        m.raw()
    );

    // Pull, and copy, into fresh stores.
    let (_p, pulled) = image_testsupport::store::oci_dir();
    let r = c
        .pull(
            &Reference::parse_name(&on_r).unwrap(),
            &pulled,
            &PullOptions::default().with_tag("pulled:1"),
        )
        .unwrap();
    assert_eq!(r.descriptor.unwrap().digest(), m.descriptor().digest());
    fsck_and_gc_keep(&pulled, "pulled:1", &want);
    let (_f, copied) = image_testsupport::store::oci_dir();
    c.copy(
        &at(&on_r),
        &in_store(&copied, "copied:1"),
        &CopyOptions::default(),
    )
    .unwrap();
    fsck_and_gc_keep(&copied, "copied:1", &want);

    // And back, from the pulled store, to another repository.
    let back = format!("{}/s512/back:1", registry.host_port());
    c.push(
        &pulled,
        &pulled.resolve_tag("pulled:1").unwrap(),
        &Reference::parse_name(&back).unwrap(),
        &PushOptions::default(),
    )
    .unwrap();
    let (_a, again) = image_testsupport::store::oci_dir();
    c.copy(
        &at(&back),
        &in_store(&again, "again:1"),
        &CopyOptions::default(),
    )
    .unwrap();
    fsck_and_gc_keep(&again, "again:1", &want);

    // Our OCI archive of it holds each blob at `blobs/sha512/<128 hex>`
    // (in PAX headers), as GNU tar reads it. (skopeo 1.9 finds such a blob
    // but verifies with sha256 only, so it reads none of these images.)
    let tar = dir.path().join("s512.tar");
    c.copy(
        &in_store(&again, "again:1"),
        &archive(&tar, Some("s512:1")),
        &CopyOptions::default(),
    )
    .unwrap();
    let Some(gnu_tar) = which("tar") else {
        skip_or_fail("tar");
        return;
    };
    let mut list = Command::new(gnu_tar);
    list.arg("-tf").arg(&tar);
    let out = image_testsupport::process::run_bounded(list);
    assert!(out.status.success(), "{out:?}");
    let names = String::from_utf8(out.stdout).unwrap();
    for (digest, _) in &want {
        let path = format!("blobs/{}/{}", digest.algorithm(), digest.hex());
        assert!(names.lines().any(|l| l == path), "{path} not in {names}");
    }
}

/// An index naming its manifest by sha512, whose config and layers are
/// named by sha512 too, goes store -> OCI archive -> store -> layout ->
/// store byte for byte, each store clean and kept whole by gc. The
/// distribution server refuses a manifest put by a sha512 digest: the push
/// of that index fails typed and sets no tag. From a registry that serves
/// the index and its sha512 manifest, a pull and a copy store it whole;
/// from one that lacks that manifest, they fail NotFound naming it.
#[test]
fn an_index_naming_a_sha512_manifest_goes_through_archives_and_layouts_byte_for_byte() {
    let (dir, src) = image_testsupport::store::oci_dir();
    let m = sha512_manifest(&src, 52);
    let m_digest = put_sha512(&src, m.raw());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": m_digest.to_string(),
            "size": m.raw().len(),
            "platform": { "os": "linux", "architecture": "amd64" },
        }],
    });
    let index = Index::from_bytes(serde_json::to_vec(&index).unwrap()).unwrap();
    src.write_blob(index.raw()).unwrap();
    src.set_tag("i512:1", &index.descriptor()).unwrap();
    let want = all_blobs(&src, &index.descriptor());
    assert_eq!(want.len(), 5, "an index, a manifest, a config, 2 layers");
    fsck_and_gc_keep(&src, "i512:1", &want);

    let c = client();
    let tar = dir.path().join("i512.tar");
    c.copy(
        &in_store(&src, "i512:1"),
        &archive(&tar, Some("i512:1")),
        &CopyOptions::default(),
    )
    .unwrap();
    let (_a, from_archive) = image_testsupport::store::oci_dir();
    c.copy(
        &archive(&tar, Some("i512:1")),
        &in_store(&from_archive, "a:1"),
        &CopyOptions::default(),
    )
    .unwrap();
    fsck_and_gc_keep(&from_archive, "a:1", &want);
    let (_l, layout) = image_testsupport::store::oci_dir();
    c.copy(
        &in_store(&from_archive, "a:1"),
        &Location::Layout {
            store: &layout,
            name: "l:1".into(),
        },
        &CopyOptions::default(),
    )
    .unwrap();
    let (_b, back) = image_testsupport::store::oci_dir();
    c.copy(
        &Location::Layout {
            store: &layout,
            name: "l:1".into(),
        },
        &in_store(&back, "b:1"),
        &CopyOptions::default(),
    )
    .unwrap();
    fsck_and_gc_keep(&back, "b:1", &want);

    let Some(registry) = Registry::start_or_skip(RegistryOptions::plain()) else {
        return;
    };
    let on_r = format!("{}/i512/app:1", registry.host_port());
    let e = c
        .copy(&in_store(&back, "b:1"), &at(&on_r), &CopyOptions::default())
        .unwrap_err();
    let shown = format!("{e:?}");
    assert!(shown.contains(&m_digest.to_string()), "{shown}");
    assert_eq!(
        image_core::Classify::kind(&e),
        ErrorKind::InvalidInput,
        "{e:?}"
    );
    let e = c
        .get_manifest(&Reference::parse_name(&on_r).unwrap())
        .unwrap_err();
    assert_eq!(image_core::Classify::kind(&e), ErrorKind::NotFound, "{e:?}");

    // The registry takes the index itself (by tag) once the manifest's
    // bytes are there as a sha512 blob, and then serves them as the
    // manifest by that digest: a pull or copy of the index from it stores
    // every document and blob under its own digest.
    use image_testsupport::registry::http;
    let start = http::request(
        registry.addr(),
        "POST",
        "/v2/i512/app/blobs/uploads/",
        &[],
        b"",
    )
    .unwrap();
    let location = start.head.header("Location").unwrap().to_owned();
    let location = location
        .strip_prefix(&format!("http://{}", registry.host_port()))
        .unwrap_or(&location)
        .to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = http::request(
        registry.addr(),
        "PUT",
        &format!("{location}{sep}digest={m_digest}"),
        &[("Content-Type", "application/octet-stream")],
        m.raw(),
    )
    .unwrap();
    assert_eq!(put.status(), 201, "{put:?}");
    let put = http::request(
        registry.addr(),
        "PUT",
        "/v2/i512/app/manifests/raw",
        &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
        index.raw(),
    )
    .unwrap();
    assert_eq!(put.status(), 201, "{put:?}");
    let raw = format!("{}/i512/app:raw", registry.host_port());
    let (_p, pulled) = image_testsupport::store::oci_dir();
    c.pull(
        &Reference::parse_name(&raw).unwrap(),
        &pulled,
        &PullOptions::default()
            .with_all_platforms(true)
            .with_tag("pulled:1"),
    )
    .unwrap();
    fsck_and_gc_keep(&pulled, "pulled:1", &want);
    let (_c, copied) = image_testsupport::store::oci_dir();
    c.copy(
        &at(&raw),
        &in_store(&copied, "copied:1"),
        &CopyOptions::default(),
    )
    .unwrap();
    fsck_and_gc_keep(&copied, "copied:1", &want);

    // A registry that lacks the sha512 child: it is looked for by that
    // digest only, and the pull and the copy fail NotFound naming it,
    // with nothing tagged.
    let proxy = FaultProxy::start(
        registry.addr(),
        Faults::none().with(
            Fault::status(404)
                .on(format!("manifests/{m_digest}"))
                .always(),
        ),
    );
    let lacking = through(&proxy, &raw);
    let (_e, empty) = image_testsupport::store::oci_dir();
    for e in [
        c.pull(
            &lacking,
            &empty,
            &PullOptions::default().with_all_platforms(true),
        )
        .map(drop)
        .map_err(|e| (image_core::Classify::kind(&e), format!("{e:?}"))),
        c.copy(
            &Location::<OciDir>::Registry(lacking.clone()),
            &in_store(&empty, "lacking:1"),
            &CopyOptions::default(),
        )
        .map(drop)
        .map_err(|e| (image_core::Classify::kind(&e), format!("{e:?}"))),
    ] {
        let (kind, shown) = e.unwrap_err();
        assert_eq!(kind, ErrorKind::NotFound, "{shown}");
        assert!(shown.contains(&m_digest.to_string()), "{shown}");
    }
    assert!(empty.tags().unwrap().is_empty());
}
