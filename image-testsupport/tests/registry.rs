//! The registry fixtures against the real distribution server and skopeo:
//! each auth mode and TLS answer `/v2/` as they should and take a skopeo
//! push; a restart keeps storage, port and upload sessions; each fault of
//! the proxy is seen by a raw client.

use std::path::Path;

use image_core::Digest;
use image_testsupport::process::{run_bounded, run_checked};
use image_testsupport::registry::http::{request, Response};
use image_testsupport::registry::{
    blob_data_path, Fault, FaultKind, FaultProxy, Faults, Registry, RegistryOptions, SERVICE,
};
use image_testsupport::tar::TarBuf;
use image_testsupport::tools;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A one-layer image in an OCI layout, tagged `1`.
struct Image {
    dir: tempfile::TempDir,
    manifest: Digest,
    layer: Vec<u8>,
    layer_digest: Digest,
}

impl Image {
    /// The path of its layer in repository `name`.
    fn blob(&self, name: &str) -> String {
        format!("/v2/{name}/blobs/{}", self.layer_digest)
    }

    /// The layout as a skopeo source.
    fn source(&self) -> String {
        format!("oci:{}:1", self.dir.path().display())
    }
}

fn write_blob(dir: &Path, data: &[u8]) -> Digest {
    let d = Digest::sha256(data);
    std::fs::write(dir.join("blobs/sha256").join(d.hex()), data).unwrap();
    d
}

/// An image whose layer holds a 300 KiB file of bytes that compress little.
fn image() -> Image {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let data: Vec<u8> = (0..300 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect();
    // gzip: skopeo would compress an uncompressed layer for a registry.
    let tar = TarBuf::new().file("data", &data).end();
    let diff_id = Digest::sha256(&tar);
    let layer = image_testsupport::codec::gzip(&tar);
    let layer_digest = write_blob(root, &layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    );
    let config_digest = write_blob(root, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let manifest_digest = write_blob(root, manifest.as_bytes());
    std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        root.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{MANIFEST}","digest":"{manifest_digest}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"1"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
    Image {
        dir,
        manifest: manifest_digest,
        layer,
        layer_digest,
    }
}

/// `skopeo copy` of `image` to `dest` (`host:port/name:tag`) with `flags`.
fn skopeo_push(image: &Image, dest: &str, flags: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "--retry-times", "0"])
        .args(flags)
        .arg(image.source())
        .arg(format!("docker://{dest}"));
    run_bounded(cmd)
}

fn assert_ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn get(addr: std::net::SocketAddr, target: &str, headers: &[(&str, &str)]) -> Response {
    request(addr, "GET", target, headers, b"").unwrap()
}

/// The manifest `name:1` as the registry at `addr` serves it with `auth`.
fn manifest_digest(addr: std::net::SocketAddr, name: &str, auth: &[(&str, &str)]) -> Digest {
    let mut headers = vec![("Accept", MANIFEST)];
    headers.extend_from_slice(auth);
    let r = get(addr, &format!("/v2/{name}/manifests/1"), &headers);
    assert_eq!(r.status(), 200, "{:?}", String::from_utf8_lossy(&r.body));
    Digest::sha256(&r.body)
}

fn ready() -> bool {
    image_testsupport::registry::available() && tools::have("skopeo")
}

#[test]
fn a_plain_registry_answers_v2_and_serves_what_skopeo_pushed() {
    if !ready() {
        return;
    }
    let registry = Registry::start(RegistryOptions::plain());
    assert!(registry.url().starts_with("http://127.0.0.1:"));
    assert_eq!(registry.credentials(), None);
    let r = get(registry.addr(), "/v2/", &[]);
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    let img = image();
    let out = skopeo_push(
        &img,
        &format!("{}/plain:1", registry.host_port()),
        &["--dest-tls-verify=false"],
    );
    assert_ok(&out, "skopeo push");
    assert_eq!(manifest_digest(registry.addr(), "plain", &[]), img.manifest);
    let blob = get(registry.addr(), &img.blob("plain"), &[]);
    assert_eq!(blob.body, img.layer);
    assert!(
        blob_data_path(&registry.storage(), img.layer_digest.hex()).is_file(),
        "the blob is in the registry's storage directory"
    );
}

#[test]
fn basic_auth_challenges_and_admits_only_its_user() {
    if !ready() {
        return;
    }
    let registry = Registry::start(RegistryOptions::basic());
    let creds = registry.credentials().unwrap().clone();
    assert!(!format!("{creds:?}").contains(&creds.password));
    let r = get(registry.addr(), "/v2/", &[]);
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Basic realm="image-testsupport""#)
    );
    let good = creds.basic_header();
    let r = get(registry.addr(), "/v2/", &[("Authorization", &good)]);
    assert_eq!(r.status(), 200);
    let wrong = image_testsupport::registry::Credentials::new(&creds.user, "not-it");
    let r = get(
        registry.addr(),
        "/v2/",
        &[("Authorization", &wrong.basic_header())],
    );
    assert_eq!(r.status(), 401);

    let img = image();
    let dest = format!("{}/basic:1", registry.host_port());
    let out = skopeo_push(&img, &dest, &["--dest-tls-verify=false"]);
    assert!(!out.status.success(), "a push without credentials fails");
    let creds_flag = format!("--dest-creds={}", creds.colon());
    let out = skopeo_push(&img, &dest, &["--dest-tls-verify=false", &creds_flag]);
    assert_ok(&out, "skopeo push with --dest-creds");
    assert_eq!(
        manifest_digest(registry.addr(), "basic", &[("Authorization", &good)]),
        img.manifest
    );
}

#[test]
fn token_auth_challenges_with_its_realm_and_only_its_tokens_let_requests_in() {
    if !ready() {
        return;
    }
    let registry = Registry::start(RegistryOptions::token());
    let server = registry.token_server().unwrap();
    let creds = registry.credentials().unwrap().clone();
    let r = get(registry.addr(), "/v2/tok/tags/list", &[]);
    assert_eq!(r.status(), 401);
    let challenge = format!(
        r#"Bearer realm="{}",service="{SERVICE}",scope="repository:tok:pull""#,
        server.realm()
    );
    assert_eq!(r.header("www-authenticate"), Some(challenge.as_str()));

    // The token endpoint, as a client finds it in the challenge.
    let realm = server.realm();
    let (host, path) = realm
        .strip_prefix("http://")
        .unwrap()
        .split_once('/')
        .unwrap();
    let token_addr = host.parse().unwrap();
    let query = format!("/{path}?service={SERVICE}&scope=repository%3Atok%3Apull");
    let refused = get(token_addr, &query, &[]);
    assert_eq!(refused.status(), 401, "no token without credentials");
    let r = get(
        token_addr,
        &query,
        &[("Authorization", &creds.basic_header())],
    );
    assert_eq!(r.status(), 200);
    let answer: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let token = answer["token"].as_str().unwrap();
    assert_eq!(answer["access_token"], answer["token"]);
    assert_eq!(answer["expires_in"], 300);
    let bearer = format!("Bearer {token}");
    let r = get(registry.addr(), "/v2/", &[("Authorization", &bearer)]);
    assert_eq!(r.status(), 200, "{}", registry.log());
    // Its scope is pull of `tok` only: another repository is refused.
    let r = get(
        registry.addr(),
        "/v2/other/tags/list",
        &[("Authorization", &bearer)],
    );
    assert_eq!(r.status(), 401);
    let requests = registry.token_requests();
    assert_eq!(requests.len(), 2);
    assert!(!requests[0].granted && requests[0].account.is_none());
    assert!(requests[1].granted);
    assert_eq!(requests[1].account.as_deref(), Some(creds.user.as_str()));
    assert_eq!(requests[1].scopes, ["repository:tok:pull"]);
    assert_eq!(requests[1].service.as_deref(), Some(SERVICE));

    // The OAuth2 form, and its refresh token.
    let form = format!(
        "grant_type=password&username={}&password={}&service={SERVICE}&scope=repository%3Atok%3Apull+repository%3Aother%3Apull&client_id=t",
        creds.user, creds.password
    );
    let r = request(
        token_addr,
        "POST",
        &format!("/{path}"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status(), 200);
    let answer: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let bearer = format!("Bearer {}", answer["access_token"].as_str().unwrap());
    let r = get(
        registry.addr(),
        "/v2/other/tags/list",
        &[("Authorization", &bearer)],
    );
    assert_eq!(r.status(), 404, "in with both scopes: `other` is unknown");
    let refresh = format!(
        "grant_type=refresh_token&refresh_token={}&service={SERVICE}&scope=repository%3Atok%3Apull",
        answer["refresh_token"].as_str().unwrap()
    );
    let r = request(
        token_addr,
        "POST",
        &format!("/{path}"),
        &[],
        refresh.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status(), 200);
    let last = registry.token_requests().pop().unwrap();
    assert_eq!(last.grant_type.as_deref(), Some("refresh_token"));
    assert!(last.granted);

    // skopeo gets its own tokens, push scope included.
    let img = image();
    let creds_flag = format!("--dest-creds={}", creds.colon());
    let out = skopeo_push(
        &img,
        &format!("{}/tok:1", registry.host_port()),
        &["--dest-tls-verify=false", &creds_flag],
    );
    assert_ok(&out, "skopeo push with token auth");
    assert!(registry.token_requests().iter().any(|t| t.granted
        && t.scopes
            .iter()
            .any(|s| s.contains("tok:pull,push") || s.contains("tok:push,pull"))));
    let pull = server.issue(&["repository:tok:pull"]);
    assert_eq!(
        manifest_digest(
            registry.addr(),
            "tok",
            &[("Authorization", &format!("Bearer {pull}"))]
        ),
        img.manifest
    );
}

#[test]
fn a_token_signed_by_a_key_the_registry_does_not_trust_is_refused() {
    if !image_testsupport::registry::available() {
        return;
    }
    let a = Registry::start(RegistryOptions::token());
    let b = Registry::start(RegistryOptions::token());
    let from_b = b.token_server().unwrap().issue(&["repository:x:pull"]);
    let r = get(
        a.addr(),
        "/v2/",
        &[("Authorization", &format!("Bearer {from_b}"))],
    );
    assert_eq!(r.status(), 401);
    let from_a = a.token_server().unwrap().issue(&[]);
    let r = get(
        a.addr(),
        "/v2/",
        &[("Authorization", &format!("Bearer {from_a}"))],
    );
    assert_eq!(r.status(), 200, "{}", a.log());
}

#[test]
fn a_tls_registry_serves_https_with_a_certificate_of_the_test_ca() {
    if !ready() || !tools::have("curl") {
        return;
    }
    let registry = Registry::start(RegistryOptions::plain().with_tls());
    assert!(registry.url().starts_with("https://127.0.0.1:"));
    let ca = registry.ca_pem().unwrap();
    assert!(std::fs::read_to_string(&ca)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    let url = format!("{}/v2/", registry.url());
    let out = run_checked(
        60,
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            ca.to_str().unwrap(),
            &url,
        ],
    );
    assert_eq!(out.stdout, b"200");
    let mut untrusted = std::process::Command::new("curl");
    untrusted.args(["-sS", "-o", "/dev/null", &url]);
    let out = run_bounded(untrusted);
    assert_eq!(
        out.status.code(),
        Some(60),
        "without the CA, curl cannot verify the server"
    );
    let img = image();
    let dest = format!("{}/secure:1", registry.host_port());
    let cert_dir = registry.cert_dir().unwrap();
    let out = skopeo_push(
        &img,
        &dest,
        &[&format!("--dest-cert-dir={}", cert_dir.display())],
    );
    assert_ok(&out, "skopeo push with --dest-cert-dir");
    let out = run_checked(
        60,
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("--cert-dir={}", cert_dir.display()),
            &format!("docker://{dest}"),
        ],
    );
    assert_eq!(Digest::sha256(&out.stdout), img.manifest);
}

#[test]
fn kill_and_restart_keep_the_port_the_storage_and_an_upload_session() {
    if !ready() {
        return;
    }
    let mut registry = Registry::start(RegistryOptions::plain());
    let img = image();
    let out = skopeo_push(
        &img,
        &format!("{}/kept:1", registry.host_port()),
        &["--dest-tls-verify=false"],
    );
    assert_ok(&out, "skopeo push");
    let started = request(registry.addr(), "POST", "/v2/kept/blobs/uploads/", &[], b"").unwrap();
    assert_eq!(started.status(), 202);
    let location = started.header("location").unwrap().to_owned();
    let upload = location
        .strip_prefix(&registry.url())
        .unwrap_or(&location)
        .to_owned();

    let port = registry.addr().port();
    registry.kill();
    assert!(!registry.is_running());
    assert!(
        request(registry.addr(), "GET", "/v2/", &[], b"").is_err(),
        "nothing answers after a kill"
    );
    registry.restart();
    assert!(registry.is_running());
    assert_eq!(registry.addr().port(), port);
    assert_eq!(manifest_digest(registry.addr(), "kept", &[]), img.manifest);
    // The upload URL's state is signed with http.secret, kept across
    // restarts: the session goes on.
    let r = request(
        registry.addr(),
        "PATCH",
        &upload,
        &[("Content-Type", "application/octet-stream")],
        b"more",
    )
    .unwrap();
    assert_eq!(r.status(), 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("range"), Some("0-3"));

    registry.stop();
    assert!(!registry.is_running());
    registry.restart();
    assert_eq!(manifest_digest(registry.addr(), "kept", &[]), img.manifest);
}

/// A plain registry holding `img` as `p:1`, and a proxy to it.
fn proxied(faults: Faults) -> Option<(Registry, Image, FaultProxy)> {
    if !ready() {
        return None;
    }
    let registry = Registry::start(RegistryOptions::plain());
    let img = image();
    let out = skopeo_push(
        &img,
        &format!("{}/p:1", registry.host_port()),
        &["--dest-tls-verify=false"],
    );
    assert_ok(&out, "skopeo push");
    let proxy = FaultProxy::start(registry.addr(), faults);
    Some((registry, img, proxy))
}

#[test]
fn the_proxy_forwards_a_skopeo_push_and_counts_body_bytes_per_path() {
    let Some((_registry, img, proxy)) = proxied(Faults::none()) else {
        return;
    };
    let out = skopeo_push(
        &img,
        &format!("{}/again:1", proxy.host_port()),
        &["--dest-tls-verify=false"],
    );
    assert_ok(&out, "skopeo push through the proxy");
    assert_eq!(manifest_digest(proxy.addr(), "again", &[]), img.manifest);
    let blob = img.blob("again");
    let r = get(proxy.addr(), &blob, &[]);
    assert_eq!(r.body, img.layer);
    assert_eq!(proxy.bytes_forwarded(&blob), img.layer.len() as u64);
    let methods: Vec<String> = proxy.exchanges().into_iter().map(|e| e.method).collect();
    assert!(methods.iter().any(|m| m == "PUT") && methods.iter().any(|m| m == "POST"));
}

#[test]
fn the_proxy_cuts_a_body_after_n_bytes_once_and_a_range_fetches_the_rest() {
    let Some((_registry, img, proxy)) =
        proxied(Faults::none().with(Fault::cut_after(100_000).on("/blobs/sha256:")))
    else {
        return;
    };
    let blob = img.blob("p");
    let cut = get(proxy.addr(), &blob, &[]);
    assert_eq!(cut.status(), 200);
    assert!(!cut.complete);
    assert_eq!(cut.body, img.layer[..100_000]);
    let whole = img.layer.len().to_string();
    assert_eq!(cut.header("content-length"), Some(whole.as_str()));
    let rest = get(proxy.addr(), &blob, &[("Range", "bytes=100000-")]);
    assert_eq!(rest.status(), 206);
    assert!(rest.complete);
    assert_eq!(rest.body, img.layer[100_000..]);
    assert_eq!(proxy.bytes_forwarded(&blob), img.layer.len() as u64);
    let ex = proxy.exchanges();
    assert_eq!(ex[0].fault, Some(FaultKind::CutAfter(100_000)));
    assert_eq!(ex[1].range.as_deref(), Some("bytes=100000-"));
    assert_eq!(ex[1].fault, None, "once only");
}

#[test]
fn the_proxy_answers_429_and_500_the_first_k_times() {
    let Some((_registry, img, proxy)) = proxied(
        Faults::none()
            .with(Fault::status(429).retry_after(3).on("/manifests/").times(2))
            .with(Fault::status(500).on("/blobs/").method("GET")),
    ) else {
        return;
    };
    for _ in 0..2 {
        let r = get(proxy.addr(), "/v2/p/manifests/1", &[("Accept", MANIFEST)]);
        assert_eq!((r.status(), r.header("retry-after")), (429, Some("3")));
    }
    assert_eq!(manifest_digest(proxy.addr(), "p", &[]), img.manifest);
    let blob = img.blob("p");
    let head = request(proxy.addr(), "HEAD", &blob, &[], b"").unwrap();
    assert_eq!(head.status(), 200, "a HEAD is not a GET");
    assert_eq!(get(proxy.addr(), &blob, &[]).status(), 500);
    assert_eq!(get(proxy.addr(), &blob, &[]).body, img.layer);
    assert!(proxy.faults().iter().all(|f| f.times == 0));
    let ex = proxy.exchanges();
    assert!(ex.windows(2).all(|w| w[0].started <= w[1].started));
}

#[test]
fn the_proxy_flips_one_byte_of_a_blob() {
    let Some((_registry, img, proxy)) =
        proxied(Faults::none().with(Fault::flip_byte(70_000).on("/blobs/")))
    else {
        return;
    };
    let blob = img.blob("p");
    let bad = get(proxy.addr(), &blob, &[]);
    assert!(bad.complete);
    assert_eq!(bad.body.len(), img.layer.len());
    let differ: Vec<usize> = (0..img.layer.len())
        .filter(|&i| bad.body[i] != img.layer[i])
        .collect();
    assert_eq!(differ, [70_000]);
    assert_ne!(Digest::sha256(&bad.body), img.layer_digest);
    assert_eq!(get(proxy.addr(), &blob, &[]).body, img.layer);
}

#[test]
fn the_proxy_redirects_a_blob_get_to_another_host_that_records_authorization() {
    let Some((_registry, img, proxy)) =
        proxied(Faults::none().with(Fault::redirect().on("/blobs/").times(2)))
    else {
        return;
    };
    let blob = img.blob("p");
    let r = get(proxy.addr(), &blob, &[("Authorization", "Bearer secret")]);
    assert_eq!(r.status(), 307);
    let location = r.header("location").unwrap().to_owned();
    let other = proxy.redirect_addr();
    assert_ne!(other.ip(), proxy.addr().ip(), "another host");
    let target = location
        .strip_prefix(&format!("http://{other}"))
        .unwrap()
        .to_owned();
    let served = get(other, &target, &[]);
    assert_eq!(served.body, img.layer);
    let part = get(
        other,
        &target,
        &[("Range", "bytes=10-19"), ("Authorization", "Bearer leaked")],
    );
    assert_eq!(part.status(), 206);
    assert_eq!(part.body, img.layer[10..20]);
    let hits = proxy.redirect_hits();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].authorization, None);
    assert_eq!(hits[1].authorization.as_deref(), Some("Bearer leaked"));
    assert_eq!(hits[0].body_bytes, img.layer.len() as u64);
    // curl follows it, and drops the credentials on the way to another host.
    if tools::have("curl") {
        let url = format!("{}{blob}", proxy.url());
        let out = run_checked(
            60,
            "curl",
            &[
                "-sS",
                "-L",
                "-H",
                "Authorization: Bearer secret",
                "-o",
                "/dev/null",
                &url,
            ],
        );
        assert!(out.status.success());
        let last = proxy.redirect_hits().pop().unwrap();
        assert_eq!((last.authorization, last.status), (None, 200));
    }
}

#[test]
fn the_proxy_cuts_an_upload_after_n_bytes_which_ends_the_upload_session() {
    let Some((_registry, _img, proxy)) = proxied(
        Faults::none().with(
            Fault::cut_request_after(300)
                .on("/blobs/uploads/")
                .method("PATCH"),
        ),
    ) else {
        return;
    };
    let started = request(proxy.addr(), "POST", "/v2/p/blobs/uploads/", &[], b"").unwrap();
    assert_eq!(started.status(), 202);
    let location = started.header("location").unwrap().to_owned();
    let upload = location.strip_prefix(&proxy.url()).unwrap().to_owned();
    let chunk = vec![7u8; 1000];
    let cut = request(proxy.addr(), "PATCH", &upload, &[], &chunk);
    assert!(cut.is_err(), "no answer to a cut upload: {cut:?}");
    let ex = proxy.exchanges();
    assert_eq!(ex[1].fault, Some(FaultKind::CutRequestAfter(300)));
    assert_eq!((ex[1].request_bytes, ex[1].status), (300, 0));
    assert_eq!(proxy.bytes_uploaded("/blobs/uploads/"), 300);
    // Once the registry has taken the 300 bytes, the session's URL (its
    // state signed with offset 0) is no longer valid: distribution 2.8
    // answers 404 BLOB_UPLOAD_INVALID, and a client starts again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        let status = get(proxy.addr(), &upload, &[]);
        if status.status() != 204 || std::time::Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.status(), 404);
    assert!(String::from_utf8_lossy(&status.body).contains("BLOB_UPLOAD_INVALID"));
    let again = request(proxy.addr(), "POST", "/v2/p/blobs/uploads/", &[], b"").unwrap();
    let upload = again.header("location").unwrap();
    let upload = upload.strip_prefix(&proxy.url()).unwrap();
    let r = request(proxy.addr(), "PATCH", upload, &[], &chunk).unwrap();
    assert_eq!((r.status(), r.header("range")), (202, Some("0-999")));
}

#[test]
fn the_proxy_holds_a_request_while_the_test_kills_the_registry() {
    let Some((mut registry, img, proxy)) =
        proxied(Faults::none().with(Fault::hold().on("/manifests/")))
    else {
        return;
    };
    let addr = proxy.addr();
    let held = std::thread::spawn(move || {
        request(
            addr,
            "GET",
            "/v2/p/manifests/1",
            &[("Accept", MANIFEST)],
            b"",
        )
    });
    assert!(proxy.wait_held(1, std::time::Duration::from_secs(60)));
    assert!(proxy.exchanges()[0].status == 0, "nothing answered yet");
    registry.kill();
    proxy.release();
    let answer = held.join().unwrap();
    assert!(answer.is_err(), "the registry was down: {answer:?}");
    registry.restart();
    assert_eq!(manifest_digest(proxy.addr(), "p", &[]), img.manifest);
    assert!(!proxy.wait_held(2, std::time::Duration::ZERO), "held once");
}
