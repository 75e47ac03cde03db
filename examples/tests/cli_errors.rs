//! How `imagectl` reports a failure: `imagectl: <class>: <chain>`, where
//! the chain is each error's message followed by its sources' and every
//! link names only its own context, so nothing is said twice; the class
//! comes from the library's typed error however deep it is (a store's
//! verification failure under an unpack is a mismatch, an invalid name is
//! invalid input, not "not found"). Run as root with busybox-static
//! installed, or skipped loudly unless CI=true.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use common::{ready, Cleanup, Cli};

/// The one-line report of a failed `imagectl args`, split into its class
/// and the links of its chain; fails the test when a fragment of the
/// message appears twice (a link that repeats its source, or names a
/// digest its cause names too).
fn failure(cli: &Cli, args: &[&str]) -> (String, String) {
    let out = cli.imagectl(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "imagectl {args:?}: {stderr}");
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("imagectl: "))
        .unwrap_or_else(|| panic!("imagectl {args:?}: no report in {stderr:?}"));
    let (class, chain) = line
        .split_once(": ")
        .unwrap_or_else(|| panic!("imagectl {args:?}: no class in {line:?}"));
    assert_said_once(chain);
    (class.to_owned(), chain.to_owned())
}

/// Fails when a fragment of `chain` appears twice: a link (the text
/// between `": "` separators) of more than a few characters, or a digest.
fn assert_said_once(chain: &str) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for fragment in chain.split(": ").filter(|f| f.len() > 6) {
        *seen.entry(fragment).or_default() += 1;
    }
    for word in chain.split(|c: char| !(c.is_ascii_alphanumeric() || c == ':')) {
        if word.starts_with("sha256:") && word.len() == 71 {
            *seen.entry(word).or_default() += 1;
        }
    }
    let twice: Vec<_> = seen.into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(
        twice.is_empty(),
        "said more than once {twice:?} in {chain:?}"
    );
}

#[test]
fn the_repetition_check_catches_a_repeated_cause() {
    let d = format!("sha256:{}", "a".repeat(64));
    let repeated = format!("layer 0 ({d}): digest mismatch: expected {d}, found x");
    assert!(std::panic::catch_unwind(|| assert_said_once(&repeated)).is_err());
    let twice = "reading the layer: truncated layer: truncated layer";
    assert!(std::panic::catch_unwind(|| assert_said_once(twice)).is_err());
    assert_said_once(&format!("layer 0: digest mismatch: expected {d}, found x"));
}

/// A store holding `test.local/a:1`, one busybox layer; returns the path of
/// that layer's blob.
fn store_with_image(cli: &Cli) -> PathBuf {
    let rootfs = cli.tmp.path().join("rootfs");
    common::busybox_rootfs(&rootfs, &["true"]);
    cli.ok(&[
        "append",
        "--rootfs",
        rootfs.to_str().expect("utf8"),
        "--tag",
        "test.local/a:1",
    ]);
    let inspect = cli.ok(&["inspect", "test.local/a:1"]);
    let v: serde_json::Value = serde_json::from_str(&inspect).expect("inspect prints JSON");
    let layer = v["manifest"]["layers"][0]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no layer digest in {inspect}"));
    let hex = layer.strip_prefix("sha256:").expect("sha256");
    cli.store().join("blobs/sha256").join(hex)
}

fn target(cli: &Cli, name: &str) -> String {
    cli.tmp.path().join(name).to_str().expect("utf8").to_owned()
}

#[test]
fn names_digests_and_missing_tags_are_classified_and_said_once() {
    if !ready(&[]) {
        return;
    }
    let cli = Cli::new(Cleanup::Mounts);
    store_with_image(&cli);

    let (class, chain) = failure(&cli, &["inspect", "test.local/absent:1"]);
    assert_eq!(class, "not found", "{chain}");

    // A malformed digest in a reference.
    let (class, chain) = failure(&cli, &["inspect", "test.local/a@sha256:abc"]);
    assert_eq!(class, "invalid input", "{chain}");
    assert!(
        chain.contains("sha256:abc") && chain.contains("64"),
        "{chain}"
    );

    // An invalid name is invalid input, for every command taking one, never
    // "tag not found".
    for args in [
        &["inspect", "Bad Name"][..],
        &["tag", "Bad Name", "test.local/b:1"],
        &["tag", "test.local/a:1", "Bad Name"],
        &["rmi", "Bad Name"],
        &["unpack", "Bad Name", "/nonexistent/x"],
    ] {
        let (class, chain) = failure(&cli, args);
        assert_eq!(class, "invalid input", "{args:?}: {chain}");
        assert!(chain.contains("Bad Name"), "{args:?}: {chain}");
    }
}

#[test]
fn a_damaged_layer_blob_is_a_mismatch_said_once() {
    if !ready(&[]) {
        return;
    }
    let cli = Cli::new(Cleanup::Mounts);
    let blob = store_with_image(&cli);
    let good = std::fs::read(&blob).expect("read blob");

    // Truncated: the store's verifying reader finds the blob is not what
    // its name says, and the unpack reports its own mismatch variant with
    // the layer's values, not a read error.
    std::fs::write(&blob, &good[..good.len() / 2]).expect("truncate");
    let (class, chain) = failure(&cli, &["unpack", "test.local/a:1", &target(&cli, "t1")]);
    assert!(
        (class == "size mismatch" && chain.contains("layer size mismatch"))
            || (class == "digest mismatch" && chain.contains("layer digest mismatch")),
        "{class}: {chain}"
    );
    assert!(!chain.contains("reading the layer"), "{chain}");

    // One byte flipped in the gzip trailer: the decoder trips on it first,
    // but the blob is not what its digest says, and that is the failure.
    let mut corrupt = good.clone();
    *corrupt.last_mut().expect("non-empty") ^= 0xff;
    std::fs::write(&blob, &corrupt).expect("corrupt");
    let (class, chain) = failure(&cli, &["unpack", "test.local/a:1", &target(&cli, "t2")]);
    assert_eq!(class, "digest mismatch", "{chain}");
    assert!(chain.contains("layer digest mismatch"), "{chain}");

    // A truncated layer file given to `layer ls`.
    let cut = cli.tmp.path().join("cut.tar.gz");
    std::fs::write(&cut, &good[..good.len() / 2]).expect("write");
    let (class, chain) = failure(&cli, &["layer", "ls", cut.to_str().expect("utf8")]);
    assert_eq!(class, "invalid input", "{chain}");
    std::fs::write(&blob, &good).expect("restore");

    // A truncated archive.
    let archive = cli.tmp.path().join("a.tar");
    cli.ok(&[
        "save",
        "-o",
        archive.to_str().expect("utf8"),
        "test.local/a:1",
    ]);
    let bytes = std::fs::read(&archive).expect("read archive");
    let cut = cli.tmp.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    failure(&cli, &["load", cut.to_str().expect("utf8")]);
}

/// `--help` documents the exit statuses of the classes a script branches on.
#[test]
fn help_documents_the_exit_statuses() {
    let cli = Cli::new(Cleanup::Mounts);
    let help = cli.ok(&["--help"]);
    for status in ["75", "77", "130"] {
        assert!(help.contains(status), "{status} not in {help}");
    }
}
