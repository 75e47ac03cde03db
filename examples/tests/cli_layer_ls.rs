//! `imagectl layer ls` reads a layer as unpack does: the stream may end at
//! an entry boundary without the end-of-archive marker, or right after
//! the last entry's data (what `umoci insert` writes), plain, gzip or zstd;
//! a cut header is refused.

mod common;

use std::path::Path;
use std::process::Command;

use common::{ready, run_bounded, Cleanup, Cli};

/// A tar of `d/`, `d/a` (5 bytes) and `b` (2 bytes), padded, no marker.
fn two_files() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], kind: tar::EntryType| {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).expect("path");
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, data).expect("append");
    };
    add("d/", b"", tar::EntryType::Directory);
    add("d/a", b"hello", tar::EntryType::Regular);
    add("b", b"x\n", tar::EntryType::Regular);
    let mut tar = b.into_inner().expect("tar");
    // The builder wrote the two zero blocks: drop them.
    tar.truncate(tar.len() - 1024);
    tar
}

/// Writes `tar` to `path` compressed with the tool `compressor` (or as is).
fn write_layer(path: &Path, tar: &[u8], compressor: Option<&str>) {
    std::fs::write(path, tar).expect("write");
    if let Some(tool) = compressor {
        let mut cmd = Command::new(tool);
        cmd.args(["-f", "-q"]).arg(path);
        let out = run_bounded(cmd);
        assert!(out.status.success(), "{tool}: {out:?}");
        let ext = if tool == "gzip" { "gz" } else { "zst" };
        std::fs::rename(path.with_extension(ext), path).expect("rename");
    }
}

#[test]
fn layer_ls_accepts_the_endings_go_accepts() {
    if !ready(&["gzip", "zstd"]) {
        return;
    }
    let cli = Cli::new(Cleanup::Mounts);
    let full = two_files();
    let mut one_zero = full.clone();
    one_zero.extend_from_slice(&[0u8; 512]);
    let mut no_padding = full.clone();
    no_padding.truncate(no_padding.len() - 510);
    for (what, tar) in [
        ("no marker", &full),
        ("one zero block", &one_zero),
        ("no padding", &no_padding),
    ] {
        for tool in [None, Some("gzip"), Some("zstd")] {
            let file = cli.tmp.path().join("layer");
            write_layer(&file, tar, tool);
            let out = cli.ok(&["layer", "ls", file.to_str().expect("utf-8")]);
            let names: Vec<&str> = out
                .lines()
                .filter_map(|l| l.split_whitespace().last())
                .collect();
            assert_eq!(names, ["d/", "d/a", "b"], "{what}, {tool:?}: {out}");
        }
    }
    let mut cut = full.clone();
    cut.extend_from_slice(&full[..100]);
    for tool in [None, Some("gzip"), Some("zstd")] {
        let file = cli.tmp.path().join("layer");
        write_layer(&file, &cut, tool);
        let err = cli.fails(&["layer", "ls", file.to_str().expect("utf-8")]);
        assert!(
            err.contains("layer ends inside an entry"),
            "{tool:?}: {err}"
        );
    }
}

/// The regression: the layers of an image made with `umoci insert`.
#[test]
fn layer_ls_lists_umoci_insert_layers() {
    if !ready(&["umoci"]) {
        return;
    }
    let cli = Cli::new(Cleanup::Mounts);
    let work = cli.tmp.path();
    let layout = work.join("layout");
    let image = format!("{}:t", layout.display());
    std::fs::create_dir_all(work.join("src/dir")).expect("mkdir");
    std::fs::write(work.join("src/dir/f"), b"hello\n").expect("write");
    std::fs::write(work.join("src/top"), b"x\n").expect("write");
    let umoci = |args: &[&str]| {
        let mut cmd = Command::new("umoci");
        cmd.args(args);
        let out = run_bounded(cmd);
        assert!(out.status.success(), "umoci {args:?}: {out:?}");
    };
    umoci(&["init", "--layout", layout.to_str().expect("utf-8")]);
    umoci(&["new", "--image", &image]);
    let src = |p: &str| work.join("src").join(p).display().to_string();
    umoci(&["insert", "--image", &image, &src("dir"), "/dir"]);
    umoci(&["insert", "--image", &image, &src("top"), "/top"]);
    umoci(&["insert", "--image", &image, "--whiteout", "/dir/f"]);
    let blobs = layout.join("blobs/sha256");
    let mut seen = Vec::new();
    for blob in std::fs::read_dir(&blobs).expect("blobs") {
        let path = blob.expect("entry").path();
        let bytes = std::fs::read(&path).expect("blob");
        if !bytes.starts_with(&[0x1f, 0x8b]) {
            continue; // a manifest or config
        }
        seen.push(cli.ok(&["layer", "ls", path.to_str().expect("utf-8")]));
    }
    assert_eq!(seen.len(), 3, "three layers: {seen:?}");
    let all = seen.concat();
    for name in ["dir/f", "top", "dir/.wh.f"] {
        assert!(all.lines().any(|l| l.ends_with(name)), "{name}: {all}");
    }
}
