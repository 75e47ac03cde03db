//! The build's periphery in imagectl: `images` hides the build cache's
//! records (images tagged in `image-build.local/cache`), `builder prune`
//! drops them so `gc` frees what only they kept, and `history REF` is
//! `inspect --history REF`.

mod common;

use common::{Cleanup, Cli};

/// Appends the image `tag` from a one-file tree whose content is `text`;
/// returns its manifest digest.
fn image(cli: &Cli, tag: &str, text: &str) -> String {
    let dir = cli
        .tmp
        .path()
        .join(format!("tree-{}", tag.replace([':', '/'], "-")));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("file"), text).unwrap();
    cli.ok(&["append", "--rootfs", dir.to_str().unwrap(), "--tag", tag]);
    let v: serde_json::Value = serde_json::from_str(&cli.ok(&["inspect", tag])).unwrap();
    v["manifestDigest"].as_str().unwrap().to_owned()
}

/// A cache record's name for key `n`.
fn record(n: u8) -> String {
    format!("image-build.local/cache:{}", format!("{n:02x}").repeat(32))
}

/// The names `images --json` lists.
fn listed(cli: &Cli) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&cli.ok(&["images", "--json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn images_hide_the_build_cache_and_builder_prune_drops_it() {
    let cli = Cli::new(Cleanup::Mounts);
    let app = image(&cli, "demo/app:1", "app");
    let cached = image(&cli, "t/cached:1", "only the cache keeps this");
    // Records as the cache writes them: images tagged in its repository;
    // one shares the app's blobs, one is all the store has of its own.
    cli.ok(&["tag", &format!("demo/app@{app}"), &record(1)]);
    cli.ok(&["tag", &format!("t/cached@{cached}"), &record(2)]);
    cli.ok(&["rmi", "t/cached:1"]);
    // A repository that only starts like the cache's is the user's.
    cli.ok(&["tag", "demo/app:1", "image-build.local/cache2:x"]);

    let names = listed(&cli);
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("image-build.local/cache:")),
        "{names:?}"
    );
    assert_eq!(names.len(), 2, "{names:?}");
    let table = cli.ok(&["images"]);
    assert!(!table.contains(&"01".repeat(32)), "{table}");
    assert!(table.contains("image-build.local/cache2"), "{table}");
    // Hidden from the list, still images of the store.
    cli.ok(&["inspect", &record(2)]);

    let out = cli.ok(&["builder", "prune"]);
    assert!(out.starts_with("removed 2 build cache records"), "{out}");
    cli.fails(&["inspect", &record(1)]);
    cli.fails(&["inspect", &record(2)]);
    assert_eq!(listed(&cli).len(), 2);
    let again: serde_json::Value =
        serde_json::from_str(&cli.ok(&["builder", "prune", "--json"])).unwrap();
    assert_eq!(again["removed"], 0);

    // What only a record kept is freed; the user's images are whole.
    let gc: serde_json::Value =
        serde_json::from_str(&cli.ok(&["gc", "--grace", "0", "--json"])).unwrap();
    let removed: Vec<&str> = gc["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(removed.contains(&cached.as_str()), "{removed:?}");
    assert!(!removed.contains(&app.as_str()), "{removed:?}");
    cli.ok(&["fsck"]);
    cli.ok(&[
        "unpack",
        "demo/app:1",
        cli.tmp.path().join("out").to_str().unwrap(),
    ]);
}

#[test]
fn history_is_inspect_history() {
    let cli = Cli::new(Cleanup::Mounts);
    image(&cli, "demo/app:1", "app");
    let history = cli.ok(&["history", "demo/app:1"]);
    assert_eq!(history, cli.ok(&["inspect", "--history", "demo/app:1"]));
    assert!(history.starts_with("IMAGE "), "{history}");
    assert_eq!(history.lines().count(), 2, "{history}");
    let platform = image_core::Platform::host().to_string();
    assert_eq!(
        cli.ok(&["history", "--platform", &platform, "demo/app:1"]),
        history
    );
    let err = cli.fails(&["history", "demo/nothing:1"]);
    assert!(err.starts_with("imagectl: not found: "), "{err}");
}
