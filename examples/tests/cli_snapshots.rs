//! `imagectl mount`/`umount`, `snapshots` and `unpack --driver` end to
//! end, as root, on an image appended in the test from a busybox-static
//! root filesystem. A missing privilege or tool skips the test loudly
//! unless CI=true. Every mount made is undone, whatever happens.

mod common;

use std::path::Path;

use common::{ready, Cleanup, Cli};

const IMAGE: &str = "test.local/cli-snapshots:1";
const LAYERED: &str = "test.local/cli-snapshots:2";

/// The root filesystem of IMAGE: busybox-static and `etc/hello`.
fn image_rootfs(dir: &Path) {
    common::busybox_rootfs(dir, &["sh", "cat", "ls"]);
    std::fs::write(dir.join("etc/hello"), "hello from the image\n").expect("write");
}

fn chain_ids(unpack_out: &str) -> Vec<String> {
    unpack_out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn imagectl_mounts_lists_and_unpacks_snapshots() {
    if !ready(&[]) {
        return;
    }
    // A store and snapshots in a temporary directory. On drop, everything
    // still mounted below it is unmounted (lazily if busy), then checked.
    let cli = Cli::new(Cleanup::Mounts);
    let rootfs = cli.tmp.path().join("rootfs");
    image_rootfs(&rootfs);
    cli.ok(&[
        "append",
        "--rootfs",
        rootfs.to_str().expect("utf8"),
        "--tag",
        IMAGE,
    ]);
    // A second layer on top, so that the image's root is a real overlay.
    let layer2 = cli.tmp.path().join("layer2");
    std::fs::create_dir_all(layer2.join("etc")).expect("mkdir");
    std::fs::write(layer2.join("etc/second"), "second layer\n").expect("write");
    cli.ok(&[
        "append",
        "--base",
        IMAGE,
        "--rootfs",
        layer2.to_str().expect("utf8"),
        "--tag",
        LAYERED,
    ]);

    // Read-only: the files are there, writes fail.
    let mnt = cli.tmp.path().join("mnt");
    let m = mnt.to_str().expect("utf8");
    cli.ok(&["mount", LAYERED, m]);
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/hello")).expect("read"),
        "hello from the image\n"
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/second")).expect("read"),
        "second layer\n"
    );
    assert!(mnt.join("bin/busybox").is_file());
    assert!(
        std::fs::write(mnt.join("etc/new"), "x").is_err(),
        "a view is read-only"
    );
    // Mounting twice on the same directory is refused.
    let again = cli.imagectl(&["mount", LAYERED, m]);
    assert!(!again.status.success());
    // snapshots --json: the committed chain IDs and the view.
    let list: serde_json::Value =
        serde_json::from_str(&cli.ok(&["snapshots", "--json"])).expect("json");
    let list = list.as_array().expect("array");
    let committed: Vec<&str> = list
        .iter()
        .filter(|s| s["kind"] == "committed")
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(committed.len(), 2, "{list:?}");
    let views: Vec<&serde_json::Value> = list.iter().filter(|s| s["kind"] == "view").collect();
    assert_eq!(views.len(), 1, "{list:?}");
    assert!(views[0]["name"]
        .as_str()
        .is_some_and(|k| k.ends_with("/mnt")));
    assert!(list.iter().all(|s| s["size"].is_u64()), "{list:?}");
    let table = cli.ok(&["snapshots"]);
    assert!(
        table.contains("committed") && table.contains("view"),
        "{table}"
    );
    cli.ok(&["umount", m]);
    assert!(cli.mounted().is_empty());
    assert!(!mnt.join("etc/hello").exists());

    // Read-write: a write lands in the writable layer, and goes with it.
    cli.ok(&["mount", "--rw", LAYERED, m]);
    std::fs::write(mnt.join("etc/written"), "mine\n").expect("write in rw mount");
    std::fs::remove_file(mnt.join("etc/hello")).expect("delete a lower file");
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/written")).expect("read"),
        "mine\n"
    );
    let list: serde_json::Value =
        serde_json::from_str(&cli.ok(&["snapshots", "--json"])).expect("json");
    let active: Vec<&serde_json::Value> = list
        .as_array()
        .expect("array")
        .iter()
        .filter(|s| s["kind"] == "active")
        .collect();
    assert_eq!(active.len(), 1, "{list}");
    // On the top layer: the committed snapshot that has a parent.
    let top = list
        .as_array()
        .expect("array")
        .iter()
        .find(|s| s["kind"] == "committed" && s["parent"].is_string())
        .and_then(|s| s["name"].as_str())
        .expect("top layer");
    assert_eq!(active[0]["parent"].as_str(), Some(top), "{list}");
    cli.ok(&["umount", m]);
    assert!(cli.mounted().is_empty());
    // The lower layers are unchanged: a fresh view shows the file again.
    cli.ok(&["mount", LAYERED, m]);
    assert!(mnt.join("etc/hello").is_file());
    assert!(!mnt.join("etc/written").exists());
    cli.ok(&["umount", m]);
    let list: serde_json::Value =
        serde_json::from_str(&cli.ok(&["snapshots", "--json"])).expect("json");
    assert_eq!(list.as_array().expect("array").len(), 2, "only the layers");
    // umount of something not mounted by imagectl fails.
    assert!(!cli.imagectl(&["umount", m]).status.success());

    // unpack --driver: chain IDs printed, snapshots rooted at DIR.
    let mut outputs = Vec::new();
    for driver in ["overlay", "copy"] {
        let dir = cli.tmp.path().join(format!("unpacked-{driver}"));
        let d = dir.to_str().expect("utf8");
        let out = cli.ok(&["unpack", LAYERED, d, "--driver", driver]);
        let chains = chain_ids(&out);
        assert_eq!(chains.len(), 2, "{out}");
        assert!(out.lines().all(|l| l.ends_with(" unpacked")), "{out}");
        assert!(dir.join("metadata.json").is_file());
        // Again: everything reused.
        let again = cli.ok(&["unpack", LAYERED, d, "--driver", driver]);
        assert!(again.lines().all(|l| l.ends_with(" reused")), "{again}");
        let listed: serde_json::Value =
            serde_json::from_str(&cli.ok(&["snapshots", "--json", "--snapshots", d]))
                .expect("json");
        let names: Vec<String> = listed
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|s| s["name"].as_str().map(str::to_owned))
            .collect();
        let mut want = chains.clone();
        want.sort();
        assert_eq!(names, want, "{driver}");
        outputs.push(chains);
    }
    let mut sorted = outputs[0].clone();
    sorted.sort();
    assert_eq!(sorted, committed, "the same chain IDs everywhere");
    assert_eq!(outputs[0], outputs[1]);
    // Without --driver it is still the flattened unpack.
    let flat = cli.tmp.path().join("flat");
    cli.ok(&["unpack", LAYERED, flat.to_str().expect("utf8")]);
    assert!(flat.join("etc/second").is_file() && flat.join("bin/busybox").is_file());
}
