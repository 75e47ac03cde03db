//! `analysis`: the change list, dive's efficiency numbers and the secret
//! scan of real images in a store, checked against an independent
//! computation over layers unpacked by GNU tar.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use image_core::{Classify, ErrorKind, Platform};
use image_overlay::analysis::{analyze, AllowList, AnalysisError, AnalyzeOptions, SecretOptions};
use image_overlay::append::{append_source, AppendSource, ConfigChanges};
use image_store::image::{resolve_image, Image};
use image_store::OciDir;
use image_testsupport::codec::gzip;
use image_testsupport::tar::{Raw, TarBuf};
use image_testsupport::tools;

fn platform() -> Platform {
    "linux/amd64".parse().expect("platform")
}

/// Tags `name` as an image of these layers (plain tars, stored gzipped),
/// each made by the history entry `created_by[i]`, with these Env entries.
fn image_of(store: &OciDir, name: &str, layers: &[(Vec<u8>, &str)], env: &[&str]) -> Image {
    let mut base: Option<String> = None;
    for (i, (tar, created_by)) in layers.iter().enumerate() {
        let gz = gzip(tar);
        let mut changes = ConfigChanges::new();
        changes.created_by = Some((*created_by).to_owned());
        if i + 1 == layers.len() {
            for e in env {
                changes = changes.env(*e);
            }
        }
        let tag = format!("{name}-{i}");
        append_source(
            store,
            base.as_deref(),
            AppendSource::Tarball(&mut &gz[..]),
            &platform(),
            &changes,
            &tag,
        )
        .expect("append");
        base = Some(tag);
    }
    resolve_image(store, base.as_deref().expect("a layer"), Some(&platform())).expect("resolve")
}

fn with_mode(name: &str, typ: u8, mode: u32, size: u64) -> Raw {
    let mut r = Raw::new(name, typ).size(size);
    r.mode = mode;
    r
}

/// A seeded random image: files written, rewritten, chmod'ed, deleted one
/// by one and as directories, directories made opaque.
fn random_layers(seed: u64) -> Vec<(Vec<u8>, &'static str)> {
    let mut next = image_testsupport::xorshift(seed);
    let mut layers = Vec::new();
    for l in 0..5u64 {
        let mut t = TarBuf::new();
        let mut used = std::collections::BTreeSet::new();
        for d in 0..4 {
            t.dir(&format!("d{d}"));
            t.dir(&format!("d{d}/s"));
        }
        for _ in 0..30 {
            let d = next() % 4;
            let f = next() % 12;
            let path = if f < 6 {
                format!("d{d}/f{f}")
            } else {
                format!("d{d}/s/f{f}")
            };
            if !used.insert(path.clone()) {
                continue;
            }
            let r = next() % 10;
            if l > 0 && r == 0 {
                let (dir, base) = path.rsplit_once('/').expect("dir");
                t.file(&format!("{dir}/.wh.{base}"), b"");
            } else {
                let size = (next() % 5000) as usize;
                let data: Vec<u8> = (0..size).map(|i| (i as u64 * 31 + l) as u8).collect();
                let mode = if r == 1 { 0o600 } else { 0o644 };
                t.raw(&with_mode(&path, b'0', mode, data.len() as u64), &data);
            }
        }
        if l == 2 {
            t.file("d3/.wh.s", b"");
        }
        if l == 3 {
            t.file("d2/.wh..wh..opq", b"");
            t.file("d2/fresh", b"new\n");
        }
        layers.push((t.end(), "RUN step"));
    }
    layers
}

/// dive's efficiency over layers unpacked as directories (a whiteout is a
/// `.wh.` file there), with the lower layers stacked (whiteouts and opaque
/// directories applied): (wasted, total, user, score, per-path waste).
struct Independent {
    wasted: u64,
    total: u64,
    user: u64,
    score: f64,
    inefficient: BTreeMap<String, (u64, u64)>,
    final_fs: BTreeMap<String, (bool, u64)>,
}

fn walk(root: &Path, rel: &str, out: &mut Vec<(String, bool, u64, bool)>) {
    let mut names: Vec<_> = std::fs::read_dir(root.join(rel))
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    for n in names {
        let p = if rel.is_empty() {
            n.clone()
        } else {
            format!("{rel}/{n}")
        };
        let md = std::fs::symlink_metadata(root.join(&p)).expect("lstat");
        if md.is_dir() {
            let leaf = std::fs::read_dir(root.join(&p))
                .expect("read_dir")
                .next()
                .is_none();
            out.push((p.clone(), true, 0, leaf));
            walk(root, &p, out);
        } else {
            out.push((p, false, if md.is_file() { md.len() } else { 0 }, true));
        }
    }
}

fn independent(dirs: &[std::path::PathBuf]) -> Independent {
    let mut stacked: BTreeMap<String, (bool, u64)> = BTreeMap::new();
    let mut per_path: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    let mut sizes = Vec::new();
    for dir in dirs {
        let mut entries = Vec::new();
        walk(dir, "", &mut entries);
        sizes.push(entries.iter().map(|e| e.2).sum::<u64>());
        let under = |s: &BTreeMap<String, (bool, u64)>, p: &str| -> Vec<String> {
            s.keys()
                .filter(|k| k.starts_with(&format!("{p}/")))
                .cloned()
                .collect()
        };
        for (p, _, size, leaf) in &entries {
            if !leaf || p.ends_with(".wh..wh..opq") {
                continue;
            }
            let (dirpart, base) = p.rsplit_once('/').map_or(("", p.as_str()), |(d, b)| (d, b));
            let (path, size) = match base.strip_prefix(".wh.") {
                Some(target) => {
                    let t = if dirpart.is_empty() {
                        target.to_owned()
                    } else {
                        format!("{dirpart}/{target}")
                    };
                    let sz = match stacked.get(&t) {
                        Some((true, own)) => {
                            own + under(&stacked, &t)
                                .iter()
                                .map(|k| stacked[k].1)
                                .sum::<u64>()
                        }
                        _ => 0,
                    };
                    (t, sz)
                }
                None => (p.clone(), *size),
            };
            let d = per_path.entry(path).or_insert((0, u64::MAX, 0));
            d.0 += size;
            d.1 = d.1.min(size);
            d.2 += 1;
        }
        // Stack the layer: whiteouts against the lower layers, then the rest.
        for (p, _, _, _) in &entries {
            let (dirpart, base) = p.rsplit_once('/').map_or(("", p.as_str()), |(d, b)| (d, b));
            if base == ".wh..wh..opq" {
                for k in under(&stacked, dirpart) {
                    stacked.remove(&k);
                }
            } else if let Some(target) = base.strip_prefix(".wh.") {
                let t = if dirpart.is_empty() {
                    target.to_owned()
                } else {
                    format!("{dirpart}/{target}")
                };
                for k in under(&stacked, &t) {
                    stacked.remove(&k);
                }
                stacked.remove(&t);
            }
        }
        for (p, is_dir, size, _) in &entries {
            if !p.rsplit('/').next().expect("name").starts_with(".wh.") {
                stacked.insert(p.clone(), (*is_dir, *size));
            }
        }
    }
    let minimum: u64 = per_path.values().map(|d| d.1).sum();
    let discovered: u64 = per_path.values().map(|d| d.0).sum();
    let inefficient: BTreeMap<String, (u64, u64)> = per_path
        .iter()
        .filter(|(_, d)| d.2 >= 2)
        .map(|(p, d)| (format!("/{p}"), (d.2, d.0)))
        .collect();
    Independent {
        wasted: inefficient.values().map(|v| v.1).sum(),
        total: sizes.iter().sum(),
        user: sizes.iter().skip(1).sum(),
        score: if discovered == 0 {
            1.0
        } else {
            minimum as f64 / discovered as f64
        },
        inefficient,
        final_fs: stacked,
    }
}

/// The sizes, efficiency and final tree of the analysis are those computed
/// from the layers as GNU tar unpacks them, over seeded random images.
#[test]
fn numbers_match_an_independent_computation_over_gnu_tar_unpacks() {
    if !tools::have("tar") {
        return;
    }
    for seed in [1u64, 7, 42, 1234] {
        let work = tempfile::tempdir().expect("tempdir");
        let store = OciDir::open_or_create(work.path().join("layout")).expect("layout");
        let image = image_of(&store, "t/random", &random_layers(seed), &[]);
        let a = analyze(&store, &image, &AnalyzeOptions::default()).expect("analyze");
        let mut dirs = Vec::new();
        for (i, layer) in image.layers().iter().enumerate() {
            let blob = work
                .path()
                .join("layout/blobs/sha256")
                .join(layer.digest().digest());
            let dir = work.path().join(format!("l{i}"));
            std::fs::create_dir(&dir).expect("mkdir");
            let out = Command::new("tar")
                .args(["-xzf"])
                .arg(&blob)
                .arg("-C")
                .arg(&dir)
                .output()
                .expect("tar");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let plain = Command::new("sh")
                .arg("-c")
                .arg(format!("gzip -dc {} | wc -c", blob.display()))
                .output()
                .expect("gzip");
            let plain: u64 = String::from_utf8_lossy(&plain.stdout)
                .trim()
                .parse()
                .expect("count");
            assert_eq!(a.layers[i].compressed_size, layer.size());
            assert_eq!(
                a.layers[i].uncompressed_size, plain,
                "seed {seed} layer {i}"
            );
            dirs.push(dir);
        }
        let ind = independent(&dirs);
        let e = &a.efficiency;
        assert_eq!(e.total_bytes, ind.total, "seed {seed}");
        assert_eq!(e.user_bytes, ind.user, "seed {seed}");
        assert_eq!(e.wasted_bytes, ind.wasted, "seed {seed}");
        assert!((e.efficiency - ind.score).abs() < 1e-12, "seed {seed}");
        assert!(ind.wasted > 0, "seed {seed}: the generator makes waste");
        let ours: BTreeMap<String, (u64, u64)> = e
            .inefficiencies
            .iter()
            .map(|p| (p.path.clone(), (p.count, p.cumulative_size)))
            .collect();
        assert_eq!(ours, ind.inefficient, "seed {seed}");
        let final_fs: BTreeMap<String, (bool, u64)> = a
            .final_paths()
            .map(|p| {
                (
                    p.path.to_owned(),
                    (
                        p.file_type == image_overlay::analysis::FileType::Dir,
                        p.size,
                    ),
                )
            })
            .collect();
        assert_eq!(final_fs, ind.final_fs, "seed {seed}");
        let per_layer: u64 = a.layers.iter().map(|l| l.useful_bytes).sum();
        assert_eq!(per_layer, ind.final_fs.values().map(|v| v.1).sum::<u64>());
    }
}

/// Changes name their kind, type, mode and size, whiteouts and opaque
/// directories included, and each layer its history entry.
#[test]
fn changes_of_each_layer() {
    use image_overlay::analysis::ChangeKind::*;
    let work = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(work.path().join("layout")).expect("layout");
    let l0 = TarBuf::new()
        .dir("etc")
        .file("etc/a", b"12345")
        .file("etc/b", b"x")
        .dir("var")
        .file("var/old", b"gone")
        .end();
    let l1 = TarBuf::new()
        .raw(&with_mode("etc/a", b'0', 0o600, 2), b"ab")
        .file("etc/.wh.b", b"")
        .file("var/.wh..wh..opq", b"")
        .file("var/new", b"n")
        .end();
    let image = image_of(
        &store,
        "t/changes",
        &[(l0, "ADD base"), (l1, "RUN change")],
        &[],
    );
    let a = analyze(&store, &image, &AnalyzeOptions::default()).expect("analyze");
    assert_eq!(a.layers[1].created_by.as_deref(), Some("RUN change"));
    assert_eq!(a.layers[1].history, Some(1));
    let got: Vec<(String, image_overlay::analysis::ChangeKind, u64)> = a.layers[1]
        .changes
        .iter()
        .map(|c| (c.path.clone(), c.kind, c.size))
        .collect();
    assert_eq!(
        got,
        [
            ("/etc/b".to_owned(), Deleted, 1),
            ("/var".to_owned(), Opaque, 4),
            ("/etc/a".to_owned(), Modified, 2),
            ("/var/new".to_owned(), Added, 1),
        ]
    );
    let prev = a.layers[1].changes[2].previous.expect("previous");
    assert_eq!((prev.mode, prev.size, prev.layer), (0o644, 5, 0));
    assert_eq!(a.layers[1].changes[2].mode, 0o600);
    assert_eq!(
        (a.layers[0].useful_bytes, a.layers[0].wasted_bytes),
        (0, 10)
    );
}

/// The classic leak: a secret copied in one layer and deleted in the next
/// is still in the image, and is reported at the layer that holds it.
#[test]
fn a_secret_deleted_in_the_next_layer_is_found() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(work.path().join("layout")).expect("layout");
    let l0 = TarBuf::new()
        .dir("tmp")
        .file("tmp/readme", b"hello\n")
        .end();
    let l1 = TarBuf::new().file("tmp/pass", b"hunter2\n").end();
    let l2 = TarBuf::new().file("tmp/.wh.pass", b"").end();
    let image = image_of(
        &store,
        "t/leak",
        &[
            (l0, "ADD base"),
            (l1, "COPY pass /tmp/pass"),
            (l2, "RUN rm /tmp/pass"),
        ],
        &[],
    );
    let a = analyze(&store, &image, &AnalyzeOptions::default()).expect("analyze");
    let f = a
        .findings
        .iter()
        .find(|f| f.rule == "sensitive-file-deleted")
        .expect("the deleted secret is found");
    assert_eq!(f.path.as_deref(), Some("/tmp/pass"));
    let layer = f.layer.as_ref().expect("layer");
    assert_eq!(layer.index, 1);
    assert_eq!(
        &layer.digest,
        image.layers()[1]
            .digest()
            .to_string()
            .parse::<image_core::Digest>()
            .as_ref()
            .expect("digest")
    );
    let json = serde_json::to_string(&a.findings).expect("json");
    assert!(!json.contains("hunter2"), "{json}");
}

fn b64(n: usize, seed: u64) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut next = image_testsupport::xorshift(seed);
    (0..n).map(|_| A[(next() % 64) as usize] as char).collect()
}

fn alnum(n: usize, seed: u64) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut next = image_testsupport::xorshift(seed);
    (0..n).map(|_| A[(next() % 62) as usize] as char).collect()
}

/// A secret of every class the scan knows is found, by its rule, and no
/// report text holds any of them.
#[test]
fn a_planted_secret_of_each_class_is_found_and_never_shown() {
    let pem_body = b64(200, 1);
    let ssh_body = b64(200, 2);
    let aws_id = format!("AKIA{}", alnum(16, 3).to_ascii_uppercase());
    let aws_secret = b64(40, 4).replace('+', "x");
    let azure = format!("{}==", b64(86, 5));
    let docker_auth = b64(24, 6);
    let npm = alnum(36, 7);
    let pypi = alnum(20, 8);
    let netrc = alnum(14, 9);
    let ghp = format!("ghp_{}", alnum(36, 10));
    let glpat = format!("glpat-{}", alnum(20, 11));
    let slack = format!("xoxb-1234567890-{}", alnum(24, 12));
    let entropy = alnum(32, 13);
    let gcp_key = b64(120, 14);
    let history_pw = alnum(12, 15);
    let env_pw = alnum(12, 16);
    let secrets = [
        &pem_body,
        &ssh_body,
        &aws_id,
        &aws_secret,
        &azure,
        &docker_auth,
        &npm,
        &pypi,
        &netrc,
        &ghp,
        &glpat,
        &slack,
        &entropy,
        &gcp_key,
        &history_pw,
        &env_pw,
    ];
    let files: Vec<(&str, String)> = vec![
        ("root/.ssh/id_rsa", format!("-----BEGIN RSA PRIVATE KEY-----\n{pem_body}\n-----END RSA PRIVATE KEY-----\n")),
        ("root/.ssh/id_ed25519", format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{ssh_body}\n-----END OPENSSH PRIVATE KEY-----\n")),
        ("root/.aws/credentials", format!("[default]\naws_access_key_id = {aws_id}\naws_secret_access_key = {aws_secret}\n")),
        ("srv/gcp.json", format!("{{\"type\": \"service_account\", \"project_id\": \"p\", \"private_key\": \"-----BEGIN PRIVATE KEY-----\\n{gcp_key}\\n-----END PRIVATE KEY-----\\n\"}}\n")),
        ("srv/azure.cfg", format!("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={azure};EndpointSuffix=core.windows.net\n")),
        ("root/.docker/config.json", format!("{{\"auths\": {{\"registry.example.com\": {{\"auth\": \"{docker_auth}\"}}}}}}\n")),
        ("root/.npmrc", format!("//registry.npmjs.org/:_authToken={npm}\n")),
        ("root/.pypirc", format!("[pypi]\nusername = __token__\npassword = {pypi}\n")),
        ("root/.netrc", format!("machine example.com login me password {netrc}\n")),
        ("srv/github.txt", format!("token {ghp}\n")),
        ("srv/gitlab.txt", format!("GL={glpat}\n")),
        ("srv/slack.txt", format!("hook: {slack}\n")),
        ("srv/app.env", format!("SERVICE_API_TOKEN={entropy}\n")),
    ];
    let mut t = TarBuf::new();
    for (p, body) in &files {
        t.file(p, body.as_bytes());
    }
    // A binary file holding a token is skipped (NUL heuristic).
    t.file("srv/blob.bin", format!("\0\0{}", alnum(40, 99)).as_bytes());
    let work = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(work.path().join("layout")).expect("layout");
    let history = format!("RUN mysql -u root --password={history_pw} < init.sql");
    let env = format!("DB_PASSWORD={env_pw}");
    let image = image_of(
        &store,
        "t/classes",
        &[(t.end(), history.as_str())],
        &[env.as_str()],
    );
    let a = analyze(&store, &image, &AnalyzeOptions::default()).expect("analyze");
    let mut rules: Vec<(&str, Option<&str>)> = a
        .findings
        .iter()
        .map(|f| (f.rule, f.path.as_deref()))
        .collect();
    rules.sort();
    let mut want = vec![
        ("aws-access-key-id", Some("/root/.aws/credentials")),
        ("aws-secret-access-key", Some("/root/.aws/credentials")),
        ("azure-storage-key", Some("/srv/azure.cfg")),
        ("docker-config-auth", Some("/root/.docker/config.json")),
        ("gcp-service-account", Some("/srv/gcp.json")),
        ("github-token", Some("/srv/github.txt")),
        ("gitlab-token", Some("/srv/gitlab.txt")),
        ("high-entropy-assignment", Some("/srv/app.env")),
        ("netrc-password", Some("/root/.netrc")),
        ("npmrc-auth", Some("/root/.npmrc")),
        ("openssh-private-key", Some("/root/.ssh/id_ed25519")),
        ("password-flag", None),
        ("private-key", Some("/root/.ssh/id_rsa")),
        ("pypirc-password", Some("/root/.pypirc")),
        ("sensitive-assignment", None),
        ("slack-token", Some("/srv/slack.txt")),
    ];
    want.sort();
    assert_eq!(rules, want);
    let hist = a
        .findings
        .iter()
        .find(|f| f.rule == "password-flag")
        .expect("history");
    assert_eq!(hist.history, Some(0));
    assert_eq!(hist.layer.as_ref().map(|l| l.index), Some(0));
    let json = serde_json::to_string(&a.findings).expect("json");
    for s in secrets {
        assert!(!json.contains(s.as_str()), "{s} shown in {json}");
    }

    // Accepted findings are left out, by path glob or by fingerprint.
    let fp = a
        .findings
        .iter()
        .find(|f| f.rule == "slack-token")
        .expect("slack")
        .fingerprint
        .clone();
    let allow = AllowList::parse(&format!("/root/.ssh/*\nfingerprint:{fp}\n")).expect("allow");
    let options =
        AnalyzeOptions::default().with_secrets(SecretOptions::default().with_allow(allow));
    let b = analyze(&store, &image, &options).expect("analyze");
    assert_eq!(b.findings.len(), a.findings.len() - 3);
    assert!(b
        .findings
        .iter()
        .all(|f| f.rule != "slack-token" && !f.rule.contains("private-key")));
}

/// A clean busybox image reports no secret.
#[test]
fn a_busybox_image_reports_no_secret() {
    if !Path::new(tools::BUSYBOX).exists() {
        tools::skip_or_fail("busybox-static (/bin/busybox)");
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("root");
    image_testsupport::rootfs::container_rootfs(&root, &["sh", "ls", "cat"]);
    let store = OciDir::open_or_create(work.path().join("layout")).expect("layout");
    let pack = image_overlay::pack::PackOptions::new(image_core::Compression::Gzip);
    append_source(
        &store,
        None,
        AppendSource::Dir(&root, &pack),
        &platform(),
        &ConfigChanges::new()
            .env("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "t/busybox:1",
    )
    .expect("append");
    let image = resolve_image(&store, "t/busybox:1", Some(&platform())).expect("resolve");
    let a = analyze(&store, &image, &AnalyzeOptions::default()).expect("analyze");
    assert_eq!(a.findings, [], "busybox has no secret");
    assert_eq!(a.efficiency.wasted_bytes, 0);
}

/// A layer blob that is not the one its descriptor names is refused with
/// the digest mismatch, classified.
#[test]
fn a_tampered_layer_is_refused() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(work.path().join("layout")).expect("layout");
    let l0 = TarBuf::new().file("a", b"aaaa").end();
    let image = image_of(&store, "t/tamper", &[(l0, "ADD a")], &[]);
    let blob = work
        .path()
        .join("layout/blobs/sha256")
        .join(image.layers()[0].digest().digest());
    // Another gzip member of the same tar: the gzip header's MTIME field
    // (bytes 4..8) changed, which every decoder ignores.
    let mut bytes = std::fs::read(&blob).expect("read");
    bytes[4] ^= 0x5a;
    std::fs::write(&blob, &bytes).expect("write");
    let e = analyze(&store, &image, &AnalyzeOptions::default()).expect_err("tampered");
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(e, AnalysisError::Layer { index: 0, .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::DigestMismatch);
}

/// Only the first `max_scan_bytes` of a file are read for secrets: a token
/// past them is not seen, one inside them is; a NUL byte there marks the
/// file binary and skips it.
#[test]
fn the_scan_reads_only_the_start_of_each_file() {
    let token = format!("ghp_{}", alnum(36, 21));
    let mut far = vec![b'x'; 200_000];
    far.extend_from_slice(format!(" {token}\n").as_bytes());
    let near = format!("{token}\n{}", "y".repeat(200_000));
    let binary = format!("\0{token}\n");
    let l0 = TarBuf::new()
        .file("far.txt", &far)
        .file("near.txt", near.as_bytes())
        .file("bin.dat", binary.as_bytes())
        .end();
    let work = tempfile::tempdir().expect("tempdir");
    let store = OciDir::open_or_create(work.path().join("layout")).expect("layout");
    let image = image_of(&store, "t/bounded", &[(l0, "ADD files")], &[]);
    let a = analyze(&store, &image, &AnalyzeOptions::default()).expect("analyze");
    let paths: Vec<Option<&str>> = a.findings.iter().map(|f| f.path.as_deref()).collect();
    assert_eq!(paths, [Some("/near.txt")]);
}
