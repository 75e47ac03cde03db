//! Replays every fuzz target's seed corpus (fuzz/corpus/<target>/) through
//! the same target functions cargo-fuzz runs, on stable, so CI exercises
//! them without nightly. A crash found by fuzzing is added to the corpus
//! and stays a regression test here.
//!
//! Each input runs on a thread of its own with a time limit, so a hang
//! fails its test instead of stalling the suite. Inputs that fail today
//! because of a finding being fixed elsewhere are listed in
//! `common/hostile/awaiting.rs` as `fuzz:<target>/<file>` and skipped
//! loudly. The seeds of the `archive`, `layout` and `spec` targets are
//! written by the ignored test `write_seeds` from the generators of the
//! adversarial suite (`cargo test -p imagectl --test fuzz_corpus --
//! --ignored write_seeds`).

#[path = "../../fuzz/src/targets.rs"]
#[allow(dead_code, clippy::unwrap_used)]
mod targets;

#[path = "common/hostile/mod.rs"]
mod hostile;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one input may take.
const INPUT_LIMIT: Duration = Duration::from_secs(60);

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

fn replay(target: &str, f: fn(&[u8])) {
    let dir = corpus(target);
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    let mut failures = Vec::new();
    for path in entries {
        let file = path.file_name().expect("name").to_string_lossy();
        if hostile::awaiting::skip(&format!("fuzz:{target}/{file}")) {
            continue;
        }
        let data = std::fs::read(&path).expect("read corpus file");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(|| f(&data));
            let _ = tx.send(outcome.is_ok());
        });
        match rx.recv_timeout(INPUT_LIMIT) {
            Ok(true) => {}
            Ok(false) => failures.push(format!("{}: panicked", path.display())),
            // The thread is left behind; the test fails.
            Err(_) => failures.push(format!(
                "{}: still running after {INPUT_LIMIT:?}",
                path.display()
            )),
        }
        n += 1;
    }
    assert!(
        failures.is_empty(),
        "fuzz target {target} failed on:\n{}",
        failures.join("\n")
    );
    assert!(n > 0, "the corpus of {target} is empty");
    eprintln!("{target}: replayed {n} inputs");
}

macro_rules! corpus_tests {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            replay(stringify!($name), targets::$name);
        }
    )*};
}

corpus_tests!(
    digest, reference, platform, document, config, unpack, archive, layout, spec, dockerfile,
    seccomp,
);

/// Writes the seeds of the `archive`, `layout` and `spec` targets (small
/// files, each under 64 KiB) from the adversarial generators.
#[test]
#[ignore = "writes fuzz/corpus; run by hand when the generators change"]
fn write_seeds() {
    use hostile::{Entry, Kind, Layer, SavedImage};
    use image_core::Digest;
    use serde_json::json;

    let write = |target: &str, name: &str, data: &[u8]| {
        assert!(
            data.len() < 64 << 10,
            "{target}/{name}: {} bytes",
            data.len()
        );
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(name), data).expect("write seed");
    };
    let small = Layer::tar(&[Entry::file("hello", "hello"), Entry::dir("etc/")]);
    let config = hostile::config(json!({"Cmd": ["true"]}), std::slice::from_ref(&small));
    let (blobs, desc) = hostile::oci_image(&config, std::slice::from_ref(&small));
    let saved = |tags: Vec<String>, layers: Vec<Layer>| SavedImage {
        config: hostile::config(json!({"Cmd": ["true"]}), &layers),
        layers,
        repo_tags: tags,
    };
    let spoof = format!("test/bb@{}", Digest::sha256(b"spoofed"));
    let plus = |mut archive: Vec<u8>, extra: &[Entry]| {
        archive.truncate(archive.len() - 1024);
        for e in extra {
            hostile::tar::append(&mut archive, e);
        }
        archive.resize(archive.len() + 1024, 0);
        archive
    };

    // archive: docker save and OCI archives.
    let docker = hostile::docker_save(&[saved(vec!["t/a:1".into()], vec![small.clone()])], &[]);
    write("archive", "docker-save.tar", &docker);
    write(
        "archive",
        "docker-save-gzip-layer.tar",
        &hostile::docker_save(
            &[saved(
                vec!["t/gz:1".into()],
                vec![Layer::gzip(&[Entry::file("a", "a")])],
            )],
            &[],
        ),
    );
    let raw = hostile::tar::archive(&[Entry::file("z", "zstd")]);
    let zstd = Layer {
        blob: hostile::zstd_bomb(&raw, 0),
        media_type: hostile::OCI_LAYER_ZSTD,
        diff_id: Digest::sha256(&raw),
    };
    write(
        "archive",
        "docker-save-zstd-layer.tar",
        &hostile::docker_save(&[saved(vec!["t/zst:1".into()], vec![zstd])], &[]),
    );
    let bomb = hostile::big_file_header("zeros", 64 << 20);
    let bomb = Layer {
        blob: hostile::zstd_bomb(&bomb, 64 << 20),
        media_type: hostile::OCI_LAYER_ZSTD,
        diff_id: Digest::sha256(b"unknown"),
    };
    assert!(bomb.blob.len() < 40 << 10);
    write(
        "archive",
        "docker-save-zstd-bomb-64MiB.tar",
        &hostile::docker_save(&[saved(vec!["t/bomb:1".into()], vec![bomb])], &[]),
    );
    write(
        "archive",
        "docker-save-digest-tag.tar",
        &hostile::docker_save(&[saved(vec![spoof.clone()], vec![small.clone()])], &[]),
    );
    write(
        "archive",
        "docker-save-two-images.tar",
        &hostile::docker_save(
            &[
                saved(vec!["t/a:1".into(), "t/a:2".into()], vec![small.clone()]),
                saved(
                    vec!["t/b:1".into()],
                    vec![small.clone(), Layer::tar(&[Entry::file(".wh.hello", "")])],
                ),
            ],
            &[],
        ),
    );
    write(
        "archive",
        "docker-save-traversal.tar",
        &plus(
            docker.clone(),
            &[
                Entry::file("../../../pwned", "x"),
                Entry::file("/pwned", "x"),
                Entry::symlink("blobs/sha256/link", "/etc/passwd"),
                Entry::hardlink("hard", "/etc/passwd"),
                Entry::special("fifo", Kind::Fifo),
                Entry::special("zero", Kind::Char(1, 5)),
            ],
        ),
    );
    let manifest = json!([{"Config": "../../etc/passwd", "RepoTags": ["t/e:1"], "Layers": ["link/layer.tar"]}]);
    write(
        "archive",
        "docker-save-manifest-escape.tar",
        &hostile::tar::archive(&[
            Entry::symlink("link/layer.tar", "/etc/passwd"),
            Entry::file(
                "manifest.json",
                serde_json::to_vec(&manifest).expect("json"),
            ),
        ]),
    );
    write(
        "archive",
        "docker-save-gzip-wrapped.tar.gz",
        &hostile::gzip(&docker),
    );
    write(
        "archive",
        "docker-save-truncated.tar",
        &docker[..docker.len() / 2],
    );
    let oci = hostile::oci_archive(
        &blobs,
        &hostile::index(vec![hostile::named(desc.clone(), "t/oci:1")]),
        &[],
    );
    write("archive", "oci-archive.tar", &oci);
    write(
        "archive",
        "oci-archive-digest-ref.tar",
        &hostile::oci_archive(
            &blobs,
            &hostile::index(vec![hostile::named(desc.clone(), &spoof)]),
            &[],
        ),
    );
    write(
        "archive",
        "oci-archive-bare-tag.tar",
        &hostile::oci_archive(
            &blobs,
            &hostile::index(vec![hostile::named(desc.clone(), "latest")]),
            &[],
        ),
    );
    let names: Vec<_> = (0..100)
        .map(|i| hostile::named(desc.clone(), &format!("t/many:{i}")))
        .collect();
    write(
        "archive",
        "oci-archive-100-ref-names.tar",
        &hostile::oci_archive(&blobs, &hostile::index(names), &[]),
    );
    let (mut dag_blobs, mut top) = (blobs.clone(), desc.clone());
    for _ in 0..40 {
        let idx = hostile::index(vec![top.clone(), top.clone()]);
        top = hostile::descriptor(hostile::OCI_INDEX, &idx);
        dag_blobs.push(idx);
    }
    write(
        "archive",
        "oci-archive-dag-40.tar",
        &hostile::oci_archive(
            &dag_blobs,
            &hostile::index(vec![hostile::named(top, "t/dag:1")]),
            &[],
        ),
    );
    let lie = |delta: i64, layer_type: &str| {
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": hostile::OCI_MANIFEST,
            "config": hostile::descriptor(hostile::OCI_CONFIG, &config),
            "layers": [{"mediaType": layer_type, "digest": small.digest().to_string(), "size": small.blob.len() as i64 + delta}],
        })).expect("json");
        let d = hostile::named(
            hostile::descriptor(hostile::OCI_MANIFEST, &manifest),
            "t/lie:1",
        );
        hostile::oci_archive(
            &[config.clone(), small.blob.clone(), manifest],
            &hostile::index(vec![d]),
            &[],
        )
    };
    write(
        "archive",
        "oci-archive-size-short.tar",
        &lie(-1, hostile::OCI_LAYER),
    );
    write(
        "archive",
        "oci-archive-size-long.tar",
        &lie(100, hostile::OCI_LAYER),
    );
    write(
        "archive",
        "oci-archive-encrypted.tar",
        &lie(0, "application/vnd.oci.image.layer.v1.tar+encrypted"),
    );
    write(
        "archive",
        "oci-archive-unknown-type.tar",
        &lie(0, "application/x-evil"),
    );

    // layout: a tar of the layout directory.
    let layout = hostile::layout_entries(
        &blobs,
        &hostile::index(vec![hostile::named(desc.clone(), "t/l:1")]),
    );
    write("layout", "layout.tar", &hostile::tar::archive(&layout));
    let layer_path = format!("blobs/sha256/{}", small.digest().hex());
    let relinked = |rel: &str, target: &str| -> Vec<u8> {
        let mut entries: Vec<Entry> = Vec::new();
        for e in &layout {
            if e.name == rel.as_bytes() {
                let mut moved = e.clone();
                moved.name = format!("stash/{}", rel.replace('/', "_")).into_bytes();
                entries.insert(0, Entry::dir("stash/"));
                entries.push(moved);
                entries.push(Entry::symlink(rel, target));
            } else {
                entries.push(e.clone());
            }
        }
        hostile::tar::archive(&entries)
    };
    let up = |rel: &str| "../".repeat(rel.matches('/').count());
    write(
        "layout",
        "blob-symlink.tar",
        &relinked(
            &layer_path,
            &format!("{}stash/{}", up(&layer_path), layer_path.replace('/', "_")),
        ),
    );
    write(
        "layout",
        "index-symlink.tar",
        &relinked("index.json", "stash/index.json"),
    );
    write(
        "layout",
        "oci-layout-symlink.tar",
        &relinked("oci-layout", "stash/oci-layout"),
    );
    write(
        "layout",
        "blob-symlink-outside.tar",
        &relinked(&layer_path, &format!("{}../secret", up(&layer_path))),
    );
    write(
        "layout",
        "blob-dev-zero.tar",
        &relinked(&layer_path, "/dev/zero"),
    );
    write(
        "layout",
        "index-dev-zero.tar",
        &relinked("index.json", "/dev/zero"),
    );
    let fifo: Vec<Entry> = layout
        .iter()
        .map(|e| {
            if e.name == layer_path.as_bytes() {
                Entry::special(&layer_path, Kind::Fifo)
            } else {
                e.clone()
            }
        })
        .collect();
    write("layout", "blob-fifo.tar", &hostile::tar::archive(&fifo));
    let with = |name: &str, content: &[u8]| -> Vec<u8> {
        let entries: Vec<Entry> = layout
            .iter()
            .filter(|e| e.name != b"oci-layout")
            .cloned()
            .chain(std::iter::once(Entry::file(name, content)))
            .collect();
        hostile::tar::archive(&entries)
    };
    write(
        "layout",
        "version-9.tar",
        &with("oci-layout", br#"{"imageLayoutVersion":"9.9.9"}"#),
    );
    write("layout", "no-oci-layout.tar", &with("unrelated", b""));
    let hard: Vec<Entry> = layout
        .iter()
        .cloned()
        .chain([Entry::hardlink("index2", "index.json")])
        .collect();
    write("layout", "hardlinked.tar", &hostile::tar::archive(&hard));

    // spec: image config + run options + passwd/group.
    let image = |run: serde_json::Value| json!({"architecture": "amd64", "os": "linux", "config": run, "rootfs": {"type": "layers", "diff_ids": []}});
    let spec = |name: &str, v: serde_json::Value| {
        write("spec", name, &serde_json::to_vec_pretty(&v).expect("json"))
    };
    let passwd = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:alice:/home/alice:/bin/sh\nevil:x:4294967295:4294967295::/:/bin/sh\n";
    let group = "root:x:0:\nalice:x:1000:\nbig:x:4294967295:alice\nstaff:x:50:alice,root\n";
    spec(
        "minimal.json",
        json!({"image": image(json!({"Cmd": ["sh"]})), "run": {}}),
    );
    spec(
        "everything.json",
        json!({
            "image": image(json!({"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "Env": ["PATH=/bin", "A=1"], "User": "alice", "WorkingDir": "/work", "ExposedPorts": {"80/tcp": {}}, "Volumes": {"/data": {}}})),
            "run": {"env": ["A=2", "B"], "workdir": "/w/../x", "hostname": "h", "tty": true, "readOnly": true, "volumes": ["/tmp:/mnt:ro"], "cmd": ["ls"]},
            "passwd": passwd, "group": "root:x:0:\nalice:x:1000:\nstaff:x:50:alice,root\n",
        }),
    );
    spec(
        "uid-max-flag.json",
        json!({"image": image(json!({"Cmd": ["id"]})), "run": {"user": "4294967295"}}),
    );
    spec(
        "uid-2-31.json",
        json!({"image": image(json!({"Cmd": ["id"]})), "run": {"user": "2147483648"}}),
    );
    spec(
        "uid-max-image.json",
        json!({"image": image(json!({"Cmd": ["id"], "User": "4294967295"})), "run": {}}),
    );
    spec(
        "gid-max.json",
        json!({"image": image(json!({"Cmd": ["id"]})), "run": {"user": "0:4294967295"}}),
    );
    spec(
        "group-add-max.json",
        json!({"image": image(json!({"Cmd": ["id"]})), "run": {"groupAdd": [4294967295u64]}}),
    );
    spec(
        "passwd-uid-max.json",
        json!({"image": image(json!({"Cmd": ["id"], "User": "evil"})), "run": {}, "passwd": passwd, "group": group}),
    );
    spec(
        "group-member-max.json",
        json!({"image": image(json!({"Cmd": ["id"], "User": "alice"})), "run": {}, "passwd": passwd, "group": group}),
    );
    spec(
        "bad-users.json",
        json!({"image": image(json!({"Cmd": ["id"], "User": "a:b:c"})), "run": {"user": "root:"}}),
    );
    spec(
        "workdir-relative.json",
        json!({"image": image(json!({"Cmd": ["pwd"], "WorkingDir": "rel/../../x"})), "run": {}}),
    );
    spec(
        "workdir-proc.json",
        json!({"image": image(json!({"Cmd": ["pwd"], "WorkingDir": "/proc/self/root/.."})), "run": {}}),
    );
    spec(
        "no-command.json",
        json!({"image": image(json!({})), "run": {"entrypoint": []}}),
    );
    spec(
        "empty-entrypoint.json",
        json!({"image": image(json!({"Entrypoint": [""], "Cmd": []})), "run": {"entrypoint": [""]}}),
    );
    let env: Vec<String> = (0..1000).map(|i| format!("V{}=x", i % 500)).collect();
    spec(
        "env-1000-dups.json",
        json!({"image": image(json!({"Cmd": ["env"], "Env": env})), "run": {"env": ["V1=y", "V2"]}}),
    );
    spec(
        "long-hostname.json",
        json!({"image": image(json!({"Cmd": ["hostname"]})), "run": {"hostname": "h".repeat(300)}}),
    );
}
