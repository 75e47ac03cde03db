//! `imagectl analyze`, `secrets` and `layers`: the documented JSON shapes,
//! the CI thresholds, the sources (store, OCI layout, archive) and the
//! HTML report as headless chromium renders it.

mod common;

use std::path::Path;
use std::process::Command;

use common::{busybox_rootfs, ready, run_bounded, Cleanup, Cli};
use serde_json::Value;

/// `t:1` busybox; `t:2` adds `/tmp/big` (50000 bytes) and `/tmp/pass`;
/// `t:3` rewrites `/tmp/big` and deletes `/tmp/pass`.
fn leaky_image(cli: &Cli) {
    let tmp = cli.tmp.path();
    let append = |dir: &Path, base: Option<&str>, tag: &str| {
        let mut args = vec![
            "append",
            "--rootfs",
            dir.to_str().expect("utf8"),
            "--tag",
            tag,
        ];
        if let Some(b) = base {
            args.extend(["--base", b]);
        }
        cli.ok(&args);
    };
    let r1 = tmp.join("r1");
    busybox_rootfs(&r1, &["sh"]);
    append(&r1, None, "t:1");
    let r2 = tmp.join("r2");
    std::fs::create_dir_all(r2.join("tmp")).expect("mkdir");
    std::fs::write(r2.join("tmp/big"), vec![7u8; 50_000]).expect("write");
    std::fs::write(r2.join("tmp/pass"), b"hunter2\n").expect("write");
    append(&r2, Some("t:1"), "t:2");
    let r3 = tmp.join("r3");
    std::fs::create_dir_all(r3.join("tmp")).expect("mkdir");
    std::fs::write(r3.join("tmp/big"), vec![8u8; 50_000]).expect("write");
    std::fs::write(r3.join("tmp/.wh.pass"), b"").expect("write");
    append(&r3, Some("t:2"), "t:3");
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn busybox_ready() -> bool {
    if !Path::new(image_testsupport::tools::BUSYBOX).exists() {
        image_testsupport::tools::skip_or_fail("busybox-static (/bin/busybox)");
        return false;
    }
    true
}

/// `analyze --json` prints dive's numbers; each threshold not met exits 1
/// with one line naming it; a met one passes.
#[test]
fn analyze_json_and_thresholds() {
    if !busybox_ready() {
        return;
    }
    let cli = Cli::new(Cleanup::Mounts);
    leaky_image(&cli);
    let v = json(&cli.ok(&["analyze", "t:3", "--json"]));
    let layers = v["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 3);
    // /tmp/big twice (100000) and /tmp/pass twice (8 + 0), as dive counts.
    assert_eq!(v["wastedBytes"], 100_008);
    let total = v["totalBytes"].as_u64().expect("total");
    assert_eq!(
        total,
        layers
            .iter()
            .map(|l| l["bytes"].as_u64().expect("bytes"))
            .sum::<u64>()
    );
    let eff = v["efficiency"].as_f64().expect("efficiency");
    assert!((0.0..=1.0).contains(&eff));
    let minimum = total - 50_000 - 8;
    assert!((eff - minimum as f64 / total as f64).abs() < 1e-9, "{eff}");
    assert_eq!(layers[1]["wastedBytes"], 50_008);
    assert_eq!(
        layers[1]["createdBy"]
            .as_str()
            .map(|s| s.starts_with("imagectl append")),
        Some(true)
    );
    assert_eq!(v["inefficiencies"][0]["path"], "/tmp/big");

    let err = cli.fails(&["analyze", "t:3", "--max-wasted-bytes", "100000"]);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("too many bytes wasted: 100008 > 100000"),
        "{err}"
    );
    let err = cli.fails(&["analyze", "t:3", "--min-efficiency", "0.999"]);
    assert!(err.contains("efficiency too low"), "{err}");
    let err = cli.fails(&["analyze", "t:3", "--max-wasted-percent", "50"]);
    assert!(
        err.contains("relative to the bytes added above the base"),
        "{err}"
    );
    cli.ok(&[
        "analyze",
        "t:3",
        "--max-wasted-bytes",
        "100008",
        "--max-wasted-percent",
        "100",
        "--min-efficiency",
        "0.5",
    ]);
    // The change tree of each layer.
    let out = cli.ok(&["layers", "t:3"]);
    assert!(out.contains("D            8 0000 /tmp/pass"), "{out}");
    assert!(out.contains("M        50000 0644 /tmp/big"), "{out}");
}

/// `secrets --json` prints `{"findings": []}` for a clean image, and for a
/// leaky one each finding with its rule, layer, path, history, redacted
/// excerpt and hint; an allow list leaves accepted ones out.
#[test]
fn secrets_json_shape_and_allow_list() {
    if !busybox_ready() {
        return;
    }
    let cli = Cli::new(Cleanup::Mounts);
    leaky_image(&cli);
    let clean = json(&cli.ok(&["secrets", "t:1", "--json"]));
    assert_eq!(clean, serde_json::json!({"findings": []}));

    let v = json(&cli.ok(&["secrets", "t:3", "--json"]));
    let findings = v["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{v}");
    let f = &findings[0];
    assert_eq!(f["rule"], "sensitive-file-deleted");
    assert_eq!(f["layer"]["index"], 1);
    assert!(f["layer"]["digest"]
        .as_str()
        .is_some_and(|d| d.starts_with("sha256:")));
    assert_eq!(f["path"], "/tmp/pass");
    assert_eq!(f["history"], Value::Null);
    assert!(f["hint"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(!v.to_string().contains("hunter2"));

    let allow = cli.tmp.path().join("allow");
    std::fs::write(&allow, "# accepted\n/tmp/*\n").expect("write");
    let v = json(&cli.ok(&[
        "secrets",
        "t:3",
        "--json",
        "--allow",
        allow.to_str().expect("utf8"),
    ]));
    assert_eq!(v, serde_json::json!({"findings": []}));
}

/// The same image read from the store, an OCI layout and a docker-save
/// archive gives the same report.
#[test]
fn every_source_gives_the_same_numbers() {
    if !busybox_ready() {
        return;
    }
    let cli = Cli::new(Cleanup::Mounts);
    leaky_image(&cli);
    let archive = cli.tmp.path().join("t3.tar");
    cli.ok(&["save", "t:3", "-o", archive.to_str().expect("utf8")]);
    let layout = cli.tmp.path().join("layout");
    cli.ok(&["copy", "t:3", &format!("oci:{}:t3", layout.display())]);
    let pick = |v: Value| {
        (
            v["wastedBytes"].clone(),
            v["totalBytes"].clone(),
            v["efficiency"].clone(),
        )
    };
    let store = pick(json(&cli.ok(&["analyze", "t:3", "--json"])));
    let from_archive = pick(json(&cli.ok(&[
        "analyze",
        &format!("archive:{}", archive.display()),
        "--json",
    ])));
    let from_layout = pick(json(&cli.ok(&[
        "analyze",
        &format!("oci:{}:t3", layout.display()),
        "--json",
    ])));
    assert_eq!(store, from_archive);
    assert_eq!(store, from_layout);
}

/// Reads `id="NAME">VALUE<` from the DOM.
fn dom_value<'a>(dom: &'a str, id: &str) -> &'a str {
    let key = format!("id=\"{id}\">");
    let start = dom.find(&key).unwrap_or_else(|| panic!("{id} in the DOM")) + key.len();
    let end = start + dom[start..].find('<').expect("end");
    &dom[start..end]
}

/// Every value of `attr="..."` in the DOM, in order.
fn attrs<'a>(dom: &'a str, attr: &str) -> Vec<&'a str> {
    let key = format!("{attr}=\"");
    dom.match_indices(&key)
        .map(|(i, _)| {
            let s = &dom[i + key.len()..];
            &s[..s.find('"').expect("quote")]
        })
        .collect()
}

/// The HTML report loads in headless chromium (its script lays out the
/// treemap: one cell per file drawn), shows every layer, and its numbers
/// are the JSON report's.
#[test]
fn html_report_renders_in_chromium_with_the_json_numbers() {
    if !busybox_ready() || !ready(&["chromium"]) {
        return;
    }
    let cli = Cli::new(Cleanup::Mounts);
    leaky_image(&cli);
    let page = cli.tmp.path().join("report.html");
    let v = json(&cli.ok(&[
        "analyze",
        "t:3",
        "--json",
        "--html",
        page.to_str().expect("utf8"),
    ]));
    let html = std::fs::read_to_string(&page).expect("read");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no network"
    );
    let mut cmd = Command::new("chromium");
    cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .env("HOME", cli.tmp.path());
    let out = run_bounded(cmd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        dom_value(&dom, "wasted-bytes"),
        v["wastedBytes"].to_string()
    );
    assert_eq!(dom_value(&dom, "total-bytes"), v["totalBytes"].to_string());
    assert_eq!(dom_value(&dom, "user-bytes"), v["userBytes"].to_string());
    let eff: f64 = dom_value(&dom, "efficiency").parse().expect("number");
    // serde_json's default float parser may be one ulp off.
    assert!((eff - v["efficiency"].as_f64().expect("efficiency")).abs() < 1e-12);
    let layers = v["layers"].as_array().expect("layers");
    let field = |k: &str| -> Vec<String> { layers.iter().map(|l| l[k].to_string()).collect() };
    assert_eq!(attrs(&dom, "data-useful"), field("usefulBytes"));
    assert_eq!(attrs(&dom, "data-wasted"), field("wastedBytes"));
    assert_eq!(attrs(&dom, "data-bytes"), field("bytes"));
    // The script ran: the cells it made, the busybox binary among them.
    let cells: usize = dom_value_attr(&dom, "data-cells").parse().expect("cells");
    assert!(cells >= 2, "{cells}");
    assert_eq!(dom.matches("class=\"cell\"").count(), cells);
    let paths = attrs(&dom, "data-path");
    assert!(paths.contains(&"/bin/busybox"), "{paths:?}");
    assert!(paths.contains(&"/tmp/big"), "{paths:?}");
}

fn dom_value_attr<'a>(dom: &'a str, attr: &str) -> &'a str {
    attrs(dom, attr)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{attr} in the DOM"))
}

/// `t:3` of [`leaky_image`] pushed to `repo_tag` on a registry started
/// for the test; `None` (skipped) without busybox or the registry.
fn leaky_image_pushed(
    repo_tag: &str,
) -> Option<(image_testsupport::registry::Registry, Cli, String)> {
    use image_testsupport::registry::{Registry, RegistryOptions};
    if !busybox_ready() {
        return None;
    }
    let registry = Registry::start_or_skip(RegistryOptions::plain())?;
    let cli = Cli::new(Cleanup::Mounts);
    leaky_image(&cli);
    let dest = format!("{}/{repo_tag}", registry.host_port());
    cli.ok(&["push", "t:3", &dest, "--insecure", "--quiet"]);
    Some((registry, cli, dest))
}

/// `docker://REF` reads the image from a registry (the real distribution
/// server): the same numbers as from the store it was pushed from.
#[test]
fn a_registry_source_gives_the_same_numbers() {
    let Some((_registry, cli, dest)) = leaky_image_pushed("analyze/leaky:3") else {
        return;
    };
    let pick = |v: Value| {
        (
            v["wastedBytes"].clone(),
            v["totalBytes"].clone(),
            v["efficiency"].clone(),
        )
    };
    let store = pick(json(&cli.ok(&["analyze", "t:3", "--json"])));
    let remote = json(&cli.ok(&[
        "analyze",
        &format!("docker://{dest}"),
        "--insecure",
        "--json",
    ]));
    assert_eq!(store, pick(remote));
    let v = json(&cli.ok(&[
        "secrets",
        &format!("docker://{dest}"),
        "--insecure",
        "--json",
    ]));
    assert_eq!(v["findings"][0]["path"], "/tmp/pass");
}

/// `docker://REF` streams each layer from its blob GET: the whole analysis
/// (every number, the change lists, the findings) is the one of the store
/// the image was pushed from; no temporary store is made (imagectl runs
/// with `TMPDIR` naming a file, where no temporary directory can be
/// created); a layer blob changed in the registry's storage fails the
/// analysis, naming the digest, and prints no report.
#[test]
fn a_registry_source_streams_layers_and_writes_nothing() {
    use image_testsupport::registry::blob_data_path;
    let Some((registry, cli, dest)) = leaky_image_pushed("analyze/stream:3") else {
        return;
    };
    let no_tmp = cli.tmp.path().join("not-a-directory");
    std::fs::write(&no_tmp, b"").expect("write");
    let remote = |args: &[&str]| {
        let mut cmd = cli.command(args);
        cmd.env("TMPDIR", &no_tmp);
        run_bounded(cmd)
    };
    let source = format!("docker://{dest}");
    for verb in ["analyze", "layers", "secrets"] {
        let mut local = json(&cli.ok(&[verb, "t:3", "--json"]));
        let out = remote(&[verb, &source, "--insecure", "--json"]);
        assert!(
            out.status.success(),
            "{verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut streamed = json(&String::from_utf8_lossy(&out.stdout));
        // The name the image was read by is the one thing that differs.
        for v in [&mut local, &mut streamed] {
            if let Some(o) = v.as_object_mut() {
                o.remove("image");
            }
        }
        assert_eq!(local, streamed, "{verb}");
    }
    assert_eq!(std::fs::read(&no_tmp).expect("read"), b"", "TMPDIR touched");

    // A layer's bytes changed in the registry (the gzip header's time
    // field: the stream still decompresses, only the digest tells).
    let local = json(&cli.ok(&["analyze", "t:3", "--json"]));
    let digest = local["layers"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(|l| l["digest"].as_str())
        .expect("the top layer's digest")
        .to_owned();
    let hex = digest.strip_prefix("sha256:").expect("sha256");
    let data = blob_data_path(&registry.storage(), hex);
    let mut bytes = std::fs::read(&data).expect("blob");
    bytes[4] ^= 0x5a;
    std::fs::write(&data, &bytes).expect("write");
    let out = remote(&["analyze", &source, "--insecure", "--json"]);
    assert!(!out.status.success(), "a changed blob was analysed");
    assert!(out.stdout.is_empty(), "a report was printed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(hex) && err.contains("digest"), "{err}");
}

/// A Debian image (made offline from this machine's own packages, as the
/// parity tests make their Debian base) reports no secret.
#[test]
fn a_debian_image_reports_no_secret() {
    if image_testsupport::tools::which("dpkg-query").is_none() {
        image_testsupport::tools::skip_or_fail(
            "dpkg-query (a Debian machine to make a Debian root from)",
        );
        return;
    }
    let cli = Cli::new(Cleanup::Mounts);
    let root = cli.tmp.path().join("debian");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity_support/debian-root.sh");
    let mut cmd = Command::new("sh");
    cmd.arg(script).arg(&root);
    let out = run_bounded(cmd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cli.ok(&[
        "append",
        "--rootfs",
        root.to_str().expect("utf8"),
        "--tag",
        "debian:1",
    ]);
    let v = json(&cli.ok(&["secrets", "debian:1", "--json"]));
    assert_eq!(v, serde_json::json!({"findings": []}));
}
